//! Graph subscriptions that never lapse: create, renew, re-create, delete, reauthorize.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Issue, ValidationContext};

/// One wanted subscription (a doorbell).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Tenant name.
    pub tenant: String,
    /// Graph resource, e.g. `users/alerts@contoso.com/mailFolders('inbox')/messages`.
    pub resource: String,
    /// Change type, e.g. `created`.
    #[serde(default = "default_change_type")]
    pub change_type: String,
}

fn default_change_type() -> String {
    "created".into()
}

impl SubscriptionConfig {
    /// Checks the tenant exists and the resource is relative.
    pub fn validate(&self, path: &str, cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
        if cx.config.tenant(&self.tenant).is_none() {
            out.push(Issue::error(format!("{path}.tenant"), format!("unknown tenant {:?}", self.tenant)));
        }
        if self.resource.starts_with("http") {
            out.push(Issue::error(format!("{path}.resource"), "write the resource without the Graph base URL"));
        }
        for ct in self.change_type.split(',') {
            if !matches!(ct.trim(), "created" | "updated" | "deleted") {
                out.push(Issue::error(format!("{path}.change_type"), format!("unknown change type {ct:?}")));
            }
        }
    }
}

/// The timer function `graph-subscriptions`.
pub async fn on_timer(
    app: &crate::app::App,
    inv: crate::host::azure::Invocation<crate::host::azure::TimerInfo>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::host::azure::Outcome, crate::host::azure::Failure> {
    let _ = (app, inv, now);
    Err(crate::host::azure::Failure::Failed("subscriptions are not built yet".into()))
}
