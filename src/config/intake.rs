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
    /// Page size (`$top`), 2000 when absent (the largest page production pollers ask for).
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Graph's documented budget for security APIs: requests per minute per app per tenant.
    #[serde(default = "default_rpm")]
    pub max_requests_per_minute: u32,
    /// How many tenants `poll-alerts` polls at once.
    #[serde(default = "default_parallel_tenants")]
    pub parallel_tenants: usize,
    /// The most new alert versions one poll of a tenant queues. A poll that has more to do stops at a
    /// window boundary, moves the watermark there and queues a follow-up poll behind what is already
    /// queued, so one tenant's backlog delays another tenant's alerts by at most this many messages.
    #[serde(default = "default_max_versions_per_poll")]
    pub max_versions_per_poll: usize,
    /// Reconciliation: a longer re-listing on its own schedule that catches alerts Graph made visible
    /// after the overlap had passed them.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
}

/// `poll.reconcile`: re-list a longer window now and then and queue what the polls missed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// NCRONTAB schedule with seconds, UTC (the `reconcile-alerts` timer); four times a day by default.
    #[serde(default = "default_reconcile_schedule")]
    pub schedule: String,
    /// How far back each reconciliation lists.
    #[serde(default = "default_reconcile_window", with = "super::duration")]
    #[schemars(with = "String")]
    pub window: Duration,
}

fn default_reconcile_schedule() -> String {
    "0 17 */6 * * *".into()
}
fn default_reconcile_window() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self { schedule: default_reconcile_schedule(), window: default_reconcile_window() }
    }
}

/// The page size used when `poll.page_size` is not set.
pub const DEFAULT_PAGE_SIZE: u32 = 2000;

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
fn default_parallel_tenants() -> usize {
    4
}
fn default_max_versions_per_poll() -> usize {
    5000
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
            parallel_tenants: default_parallel_tenants(),
            max_versions_per_poll: default_max_versions_per_poll(),
            reconcile: ReconcileConfig::default(),
        }
    }
}

impl PollConfig {
    /// The page size (`$top`) of every list request.
    pub fn page_size(&self) -> u32 {
        self.page_size.unwrap_or(DEFAULT_PAGE_SIZE)
    }

    /// Checks the schedule parses and the numbers make sense.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        if let Err(e) = super::ncrontab::parse(&self.schedule) {
            out.push(Issue::error(
                format!("{path}.schedule"),
                format!("not a 6-field NCRONTAB schedule (sec min hour day month weekday): {e}"),
            ));
        }
        if self.max_requests_per_minute == 0 {
            out.push(Issue::error(format!("{path}.max_requests_per_minute"), "must be at least 1"));
        }
        match self.page_size {
            Some(0) => out.push(Issue::error(format!("{path}.page_size"), "must be at least 1")),
            Some(n) if n > DEFAULT_PAGE_SIZE => out.push(Issue::warning(
                format!("{path}.page_size"),
                "Graph's largest page is undocumented; 2000 is the most production pollers ask for",
            )),
            _ => {}
        }
        if self.parallel_tenants == 0 {
            out.push(Issue::error(format!("{path}.parallel_tenants"), "must be at least 1"));
        }
        if self.max_versions_per_poll < self.page_size() as usize {
            out.push(Issue::error(
                format!("{path}.max_versions_per_poll"),
                "must be at least the page size, so that every poll makes progress",
            ));
        }
        if let Err(e) = super::ncrontab::parse(&self.reconcile.schedule) {
            out.push(Issue::error(
                format!("{path}.reconcile.schedule"),
                format!("not a 6-field NCRONTAB schedule (sec min hour day month weekday): {e}"),
            ));
        }
        if self.reconcile.window <= self.overlap {
            out.push(Issue::error(
                format!("{path}.reconcile.window"),
                "must be longer than poll.overlap, or reconciliation finds nothing the polls would not",
            ));
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
    /// Per-tenant doorbell keys, by tenant name: a doorbell naming such a tenant must be signed with its
    /// own key (the shared `doorbell_secret` is refused for it), so one customer's key rings only that
    /// customer. Tenants not listed use `doorbell_secret`. Write `${NAME}`; every value is a secret.
    #[serde(default)]
    pub doorbell_secrets: std::collections::BTreeMap<String, String>,
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
    /// Limits of the standalone HTTP server (`secmon run --listen`); the Functions host and Lambda's
    /// Function URL keep their own.
    #[serde(default)]
    pub server: ServerLimits,
}

/// `webhook.server`: what one client may hold of the standalone HTTP server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerLimits {
    /// How long a client may take to send a request's headers (and, on a new connection, to start).
    #[serde(default = "default_header_timeout", with = "super::duration")]
    #[schemars(with = "String")]
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    #[serde(default = "default_body_timeout", with = "super::duration")]
    #[schemars(with = "String")]
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(default = "default_idle_timeout", with = "super::duration")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// The most connections open at once. At the cap a new connection closes the longest-idle one; when
    /// none is idle, the new one is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The Prometheus endpoint `/metrics` on the same listen address (off by default).
    #[serde(default)]
    pub metrics: MetricsEndpoint,
}

/// `webhook.server.metrics`: the standalone server's Prometheus endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsEndpoint {
    /// Serve `/metrics` (Prometheus text format) on the listen address; without it `/metrics` is 404.
    #[serde(default)]
    pub enabled: bool,
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_connections() -> usize {
    256
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            metrics: MetricsEndpoint::default(),
        }
    }
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
            doorbell_secrets: Default::default(),
            replay_window: default_replay_window(),
            max_body_bytes: default_max_body(),
            time_limit: default_time_limit(),
            server: ServerLimits::default(),
        }
    }
}

impl WebhookConfig {
    /// The key a doorbell for `tenant` (by name) must be signed with: its own, else the shared one.
    pub fn doorbell_key(&self, tenant: Option<&str>) -> Option<&str> {
        match tenant.and_then(|t| self.doorbell_secrets.get(t)) {
            Some(own) => Some(own),
            None => self.doorbell_secret.as_deref(),
        }
    }

    /// Whether any doorbell key is configured (else `/api/doorbell` answers 404).
    pub fn doorbell_enabled(&self) -> bool {
        self.doorbell_secret.is_some() || !self.doorbell_secrets.is_empty()
    }

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
        let mut seen: Vec<(&str, &str)> =
            self.doorbell_secret.iter().map(|s| ("doorbell_secret", s.as_str())).collect();
        for (tenant, key) in &self.doorbell_secrets {
            let at = format!("{path}.doorbell_secrets.{tenant}");
            if cx.config.tenants.iter().all(|t| &t.name != tenant) {
                out.push(Issue::error(&at, format!("{tenant:?} is not a configured tenant (by name)")));
            }
            if key.len() < 16 {
                out.push(Issue::error(&at, "use at least 16 characters"));
            }
            if let Some((other, _)) = seen.iter().find(|(_, k)| k == key) {
                out.push(Issue::error(
                    &at,
                    format!(
                        "the same key as {other}: a doorbell signed for one would ring the other; use a key per tenant"
                    ),
                ));
            }
            seen.push((tenant.as_str(), key.as_str()));
        }
        if self.replay_window < Duration::from_secs(10) || self.replay_window > Duration::from_secs(3600) {
            out.push(Issue::error(format!("{path}.replay_window"), "use between 10s and 1h"));
        }
        if self.max_body_bytes < 4096 || self.max_body_bytes > 16 * 1024 * 1024 {
            out.push(Issue::error(format!("{path}.max_body_bytes"), "use between 4096 and 16777216 bytes"));
        }
        let server = &self.server;
        for (name, value) in [
            ("header_timeout", server.header_timeout),
            ("body_timeout", server.body_timeout),
            ("idle_timeout", server.idle_timeout),
        ] {
            if value < Duration::from_millis(100) {
                out.push(Issue::error(format!("{path}.server.{name}"), "use at least 100ms"));
            }
        }
        if server.max_connections == 0 {
            out.push(Issue::error(format!("{path}.server.max_connections"), "must be at least 1"));
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
