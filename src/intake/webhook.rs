//! The HTTP path: Graph change notifications (validation handshake, clientState, lifecycle events)
//! and the signed generic doorbell. A notification is a doorbell: it queues "poll tenant X now".

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Issue, ValidationContext};

/// Webhook and doorbell settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The public base URL Graph calls (`https://<app>.azurewebsites.net`), used to build each
    /// subscription's notificationUrl. Put a function key in `notification_query` (`code=...`), not here.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Extra query string appended to notification URLs (e.g. `code=${SECMON_FUNCTION_KEY}`).
    #[serde(default)]
    pub notification_query: Option<String>,
    /// HMAC-SHA256 key for the generic doorbell (`POST /api/doorbell`); write `${NAME}`.
    #[serde(default)]
    pub doorbell_secret: Option<String>,
}

impl WebhookConfig {
    /// Checks URLs and secrets.
    pub fn validate(&self, path: &str, _cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
        if let Some(u) = &self.public_url {
            match url::Url::parse(u) {
                Ok(p)
                    if p.scheme() == "https"
                        || p.host_str() == Some("127.0.0.1")
                        || p.host_str() == Some("localhost") => {}
                _ => out.push(Issue::error(format!("{path}.public_url"), "Graph only calls https notification URLs")),
            }
        }
        if let Some(s) = &self.doorbell_secret
            && s.len() < 16
        {
            out.push(Issue::error(format!("{path}.doorbell_secret"), "use at least 16 characters"));
        }
    }
}

/// Handles one HTTP function (`graph-webhook`, `graph-lifecycle`, `doorbell`, `health`).
pub async fn handle(app: &crate::app::App, function: &str, req: crate::host::HttpRequest) -> crate::host::HttpResponse {
    let _ = (app, req);
    crate::host::HttpResponse::text(501, format!("{function} is not built yet"))
}
