//! The timer path: list alerts updated since the watermark, queue each new version, then advance the
//! watermark with compare-and-swap.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Issue;

/// Polling settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// NCRONTAB schedule with seconds (`0 */5 * * * *`), as the Functions timer uses; UTC.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// How far before the watermark each poll looks again, to catch alerts whose
    /// `lastUpdateDateTime` lands late (Graph's clock and indexing are not ours).
    #[serde(default = "default_overlap", with = "crate::config::duration")]
    #[schemars(with = "String")]
    pub overlap: Duration,
    /// How far back the first poll of a tenant looks.
    #[serde(default = "default_first_lookback", with = "crate::config::duration")]
    #[schemars(with = "String")]
    pub first_lookback: Duration,
    /// A tenant whose last successful poll is older than this is reported unhealthy and raised as a
    /// notification (dead man's switch).
    #[serde(default = "default_stale_after", with = "crate::config::duration")]
    #[schemars(with = "String")]
    pub stale_after: Duration,
    /// Page size (`$top`); Graph's default applies when absent.
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Graph's documented budget for security APIs: requests per minute per app per tenant.
    #[serde(default = "default_rpm")]
    pub max_requests_per_minute: u32,
}

fn default_schedule() -> String {
    "0 */5 * * * *".into()
}
fn default_overlap() -> Duration {
    Duration::from_secs(600)
}
fn default_first_lookback() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_stale_after() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_rpm() -> u32 {
    150
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            overlap: default_overlap(),
            first_lookback: default_first_lookback(),
            stale_after: default_stale_after(),
            page_size: None,
            max_requests_per_minute: default_rpm(),
        }
    }
}

impl PollConfig {
    /// Checks the schedule parses and the numbers make sense.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        if let Err(e) = self.schedule.parse::<cron::Schedule>() {
            out.push(Issue::error(
                format!("{path}.schedule"),
                format!("not a 6-field NCRONTAB schedule (sec min hour day month weekday): {e}"),
            ));
        }
        if self.max_requests_per_minute == 0 {
            out.push(Issue::error(format!("{path}.max_requests_per_minute"), "must be at least 1"));
        }
        if let Some(0) = self.page_size {
            out.push(Issue::error(format!("{path}.page_size"), "must be at least 1"));
        }
    }
}

/// What one poll of one tenant did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollReport {
    /// Tenant name.
    pub tenant: String,
    /// New alert versions queued.
    pub queued: usize,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
#[error("poll {tenant}: {message}")]
pub struct PollError {
    /// Tenant name.
    pub tenant: String,
    /// What happened.
    pub message: String,
}

/// Polls one tenant.
pub async fn poll_tenant(
    app: &crate::app::App,
    tenant: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PollReport, PollError> {
    let _ = (app, now);
    Err(PollError { tenant: tenant.into(), message: "polling is not built yet".into() })
}

/// The timer function `poll-alerts`.
pub async fn on_timer(
    app: &crate::app::App,
    inv: crate::host::azure::Invocation<crate::host::azure::TimerInfo>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::host::azure::Outcome, crate::host::azure::Failure> {
    let _ = (app, inv, now);
    Err(crate::host::azure::Failure::Failed("polling is not built yet".into()))
}
