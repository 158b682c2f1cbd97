//! The intake sections: `poll`, `subscriptions` and `webhook`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Issue, ValidationContext};

/// Polling settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// NCRONTAB schedule with seconds (`0 */5 * * * *`), as the Functions timer uses; UTC.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// How far before the watermark each poll looks again, to catch alerts whose
    /// `lastUpdateDateTime` lands late (Graph's clock and indexing are not ours).
    #[serde(default = "default_overlap", with = "super::duration")]
    #[schemars(with = "String")]
    pub overlap: Duration,
    /// How far back the first poll of a tenant looks.
    #[serde(default = "default_first_lookback", with = "super::duration")]
    #[schemars(with = "String")]
    pub first_lookback: Duration,
    /// A tenant whose last successful poll is older than this is reported unhealthy and raised as a
    /// notification (dead man's switch).
    #[serde(default = "default_stale_after", with = "super::duration")]
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
        if self.resource.trim().is_empty() {
            out.push(Issue::error(format!("{path}.resource"), "the resource is empty"));
        }
        for ct in self.change_type.split(',') {
            if !matches!(ct.trim(), "created" | "updated" | "deleted") {
                out.push(Issue::error(format!("{path}.change_type"), format!("unknown change type {ct:?}")));
            }
        }
    }
}

/// Webhook and doorbell settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The public base URL Graph calls (`https://<app>.azurewebsites.net`), used to build each
    /// subscription's notificationUrl. Put a function key in `notification_query` (`code=...`), not here.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Extra query string appended to notification URLs (e.g. `code=${SECMON_FUNCTION_KEY}`).
    #[serde(default)]
    pub notification_query: Option<String>,
    /// HMAC-SHA256 key for the generic doorbell (`POST /api/doorbell`); write `${NAME}`. Without it the
    /// doorbell answers 404.
    #[serde(default)]
    pub doorbell_secret: Option<String>,
    /// How far a doorbell's `X-Secmon-Timestamp` may be from now, either way.
    #[serde(default = "default_replay_window", with = "super::duration")]
    #[schemars(with = "String")]
    pub replay_window: Duration,
    /// The largest request body accepted, in bytes (413 beyond).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long one request may take before it is answered 503 (Graph gives 3 s, and counts a publish over
    /// 2.9 s as slow).
    #[serde(default = "default_time_limit", with = "super::duration")]
    #[schemars(with = "String")]
    pub time_limit: Duration,
}

fn default_replay_window() -> Duration {
    Duration::from_secs(300)
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_time_limit() -> Duration {
    Duration::from_millis(2500)
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            notification_query: None,
            doorbell_secret: None,
            replay_window: default_replay_window(),
            max_body_bytes: default_max_body(),
            time_limit: default_time_limit(),
        }
    }
}

impl WebhookConfig {
    /// Checks URLs, secrets and limits.
    pub fn validate(&self, path: &str, cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
        if let Some(u) = &self.public_url {
            match url::Url::parse(u) {
                Ok(p) if p.query().is_some() => out.push(Issue::error(
                    format!("{path}.public_url"),
                    "put the query string (a function key) in webhook.notification_query",
                )),
                Ok(p)
                    if p.scheme() == "https"
                        || p.host_str() == Some("127.0.0.1")
                        || p.host_str() == Some("localhost") => {}
                _ => out.push(Issue::error(format!("{path}.public_url"), "Graph only calls https notification URLs")),
            }
        } else if !cx.config.subscriptions.is_empty() {
            out.push(Issue::error(
                format!("{path}.public_url"),
                "subscriptions are configured, so Graph needs the public base URL to send notifications to",
            ));
        }
        if let Some(s) = &self.doorbell_secret
            && s.len() < 16
        {
            out.push(Issue::error(format!("{path}.doorbell_secret"), "use at least 16 characters"));
        }
        if self.replay_window < Duration::from_secs(10) || self.replay_window > Duration::from_secs(3600) {
            out.push(Issue::error(format!("{path}.replay_window"), "use between 10s and 1h"));
        }
        if self.max_body_bytes < 4096 || self.max_body_bytes > 16 * 1024 * 1024 {
            out.push(Issue::error(format!("{path}.max_body_bytes"), "use between 4096 and 16777216 bytes"));
        }
        if self.time_limit < Duration::from_millis(100) {
            out.push(Issue::error(format!("{path}.time_limit"), "use at least 100ms"));
        } else if self.time_limit > Duration::from_millis(2900) {
            out.push(Issue::warning(
                format!("{path}.time_limit"),
                "Graph counts a notification answered after 2.9s as slow and throttles, then drops, slow endpoints",
            ));
        }
    }
}
