//! Receivers: Teams (Workflows webhook with an Adaptive Card), e-mail (Graph sendMail), signed webhook,
//! and the delivery of one alert to them.
//!
//! Each receiver kind has a config type with `validate`, a constructor, and the one [`Notifier`] shape:
//! `render` an alert into its payload, `send` the payload ([`teams`], [`email`], [`webhook`]);
//! [`Receivers::build`] builds them all from the config, with their templates compiled ([`template`])
//! and rendered once with a sample alert, so a broken template is a config error at its path. What a
//! notification says comes from [`view::View`]. [`deliver`] tells the receivers of a decision about one
//! alert version: claim, realert, group, render, send, record, each step in its own file.
//!
//! Secrets: a Workflows URL carries a signature (`sig=`) and a webhook has an HMAC key. Both must come
//! from the environment (`${NAME}`, which in Azure may be a Key Vault reference in the app settings):
//! the loader registers every substituted value with [`crate::redact`], and validation rejects a
//! signature or key that was not substituted, i.e. one written in the file in clear.

pub mod deliver;
pub mod email;
pub mod http;
pub mod teams;
pub mod template;
pub mod view;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::alert::Alert;
use crate::config::{Config, Issue, Level, ValidationContext};
use crate::graph::{Graph, Retry};
use crate::rules::RouteConfig;
use crate::store::Store;
use template::Templates;
use view::View;

pub use email::EmailConfig;
pub use teams::TeamsConfig;
pub use webhook::WebhookReceiverConfig;

/// One receiver; exactly one kind.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ReceiverConfig {
    /// A Teams channel through a Workflows webhook.
    Teams(TeamsConfig),
    /// E-mail through Graph sendMail.
    Email(EmailConfig),
    /// A generic JSON webhook signed with HMAC-SHA256.
    Webhook(WebhookReceiverConfig),
}

impl ReceiverConfig {
    /// Checks the receiver's settings and compiles and test-renders its templates.
    pub fn validate(&self, path: &str, _cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
        self.check(path, out);
        let name = path.rsplit('.').next().unwrap_or(path);
        let mut templates = Templates::new();
        if let Err(issue) = build(name, path, self, &mut templates) {
            out.push(issue);
        }
    }

    /// The kind's own checks of its settings.
    fn check(&self, path: &str, out: &mut Vec<Issue>) {
        match self {
            ReceiverConfig::Teams(t) => t.validate(&format!("{path}.teams"), out),
            ReceiverConfig::Email(e) => e.validate(&format!("{path}.email"), out),
            ReceiverConfig::Webhook(w) => w.validate(&format!("{path}.webhook"), out),
        }
    }
}

/// The status update a route may apply after notifying (`set:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusUpdate {
    /// New status: `new` or `inProgress` (closing is for close rules).
    #[serde(default)]
    pub status: Option<String>,
    /// New owner (a user principal name).
    #[serde(default)]
    pub assigned_to: Option<String>,
}

/// The longest incident grouping window: the first alert's delivery waits this long for the others.
pub const MAX_GROUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// Checks the notification options of the routes (`realert`, `group_by_incident`, `set`).
pub fn validate_routes(routes: &[RouteConfig], _cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
    for (i, r) in routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some(w) = r.group_by_incident
            && (w.is_zero() || w > MAX_GROUP_WINDOW)
        {
            out.push(Issue::error(
                format!("{path}.group_by_incident"),
                "the grouping window must be between 1s and 10m (the first alert's delivery waits that long)",
            ));
        }
        if let Some(d) = r.realert
            && d.is_zero()
        {
            out.push(Issue::error(format!("{path}.realert"), "realert must be longer than 0s"));
        }
        if let Some(set) = &r.set {
            if set.status.is_none() && set.assigned_to.is_none() {
                out.push(Issue::error(format!("{path}.set"), "set needs status and/or assigned_to"));
            }
            if let Some(s) = &set.status
                && !matches!(s.as_str(), "new" | "inProgress")
            {
                out.push(Issue::error(
                    format!("{path}.set.status"),
                    format!("status {s:?}: a route may set new or inProgress; resolving is for close_rules"),
                ));
            }
            if let Some(a) = &set.assigned_to
                && a.trim().is_empty()
            {
                out.push(Issue::error(format!("{path}.set.assigned_to"), "assigned_to is empty"));
            }
        }
    }
}

/// Why a notification was not sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{receiver}: {message}")]
pub struct NotifyError {
    /// The receiver.
    pub receiver: String,
    /// What happened (redacted).
    pub message: String,
    /// Whether a retry helps.
    pub retry: Retry,
}

impl NotifyError {
    /// An error of `receiver`; the message is redacted here, so no caller can forget.
    pub fn new(receiver: &str, message: impl AsRef<str>, retry: Retry) -> Self {
        Self { receiver: receiver.to_string(), message: crate::redact::redact(message.as_ref()), retry }
    }
}

/// What a send may use besides its payload.
#[derive(Clone, Copy)]
pub struct SendContext<'a> {
    /// The HTTP client for receivers that are not Graph.
    pub http: &'a reqwest::Client,
    /// Microsoft Graph (mail).
    pub graph: &'a dyn Graph,
    /// The store (sending budgets shared by every instance).
    pub store: &'a dyn Store,
    /// The tenant the alert is from.
    pub tenant: &'a str,
    /// Now.
    pub now: DateTime<Utc>,
    /// Identifies this delivery across its retries (`X-Secmon-Delivery`).
    pub delivery: &'a str,
}

/// The one shape of every receiver kind: render an alert into a payload, then send it.
#[async_trait]
pub trait Notifier: std::fmt::Debug + Send + Sync {
    /// The kind, for audit records and config paths: `teams`, `email` or `webhook`.
    fn kind(&self) -> &'static str;

    /// The payload for one alert (what the template sees is `view`; the webhook adds the raw alert).
    fn render(&self, templates: &Templates, view: &View, alert: &Alert) -> Result<Value, NotifyError>;

    /// Sends a rendered payload; returns the receiver's HTTP status (202 for mail Graph accepted).
    async fn send(&self, cx: &SendContext<'_>, payload: &Value) -> Result<u16, NotifyError>;
}

/// Builds receiver `name` (config at `path`), adding its templates to `templates` and rendering each once
/// with the sample alert.
fn build(
    name: &str,
    path: &str,
    config: &ReceiverConfig,
    templates: &mut Templates,
) -> Result<Box<dyn Notifier>, Issue> {
    let receiver: Box<dyn Notifier> = match config {
        ReceiverConfig::Teams(c) => Box::new(teams::Teams::new(name, c, templates, path)?),
        ReceiverConfig::Email(c) => Box::new(email::Email::new(name, c, templates, path)?),
        ReceiverConfig::Webhook(c) => Box::new(webhook::Webhook::new(name, c, templates, path)?),
    };
    let sample = serde_json::from_str::<Value>(template::SAMPLE_ALERT).expect("sample alert is JSON");
    let alert = Alert::from_value(sample).expect("sample alert reads");
    let view = View::new("contoso", name, &alert);
    receiver.render(templates, &view, &alert).map_err(|e| {
        Issue::error(
            format!("{path}.{}.template", receiver.kind()),
            format!("fails with the sample alert: {}", e.message),
        )
    })?;
    Ok(receiver)
}

/// Every receiver of a config, with the templates they render with.
#[derive(Debug)]
pub struct Receivers {
    /// The compiled templates.
    pub templates: Templates,
    /// Receivers by name.
    pub by_name: BTreeMap<String, Box<dyn Notifier>>,
}

impl Receivers {
    /// Builds every receiver of `config`; the errors name each receiver's path.
    pub fn build(config: &Config) -> Result<Receivers, Vec<Issue>> {
        let mut templates = Templates::new();
        let mut by_name = BTreeMap::new();
        let mut issues = Vec::new();
        for (name, rc) in &config.receivers {
            let path = format!("receivers.{name}");
            let mut own = Vec::new();
            rc.check(&path, &mut own);
            issues.extend(own.into_iter().filter(|i| i.level == Level::Error));
            match build(name, &path, rc, &mut templates) {
                Ok(r) => {
                    by_name.insert(name.clone(), r);
                }
                Err(issue) => issues.push(issue),
            }
        }
        if issues.is_empty() { Ok(Receivers { templates, by_name }) } else { Err(issues) }
    }

    /// The receivers of `config`, built once per distinct receivers section and then shared: the
    /// respond function runs per alert, and templates compile once.
    pub fn for_config(config: &Config) -> Result<Arc<Receivers>, Vec<Issue>> {
        static CACHE: OnceLock<Mutex<BTreeMap<Vec<u8>, Arc<Receivers>>>> = OnceLock::new();
        let fingerprint = Sha256::digest(serde_json::to_vec(&config.receivers).expect("config serializes")).to_vec();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(r) = cache.lock().expect("receivers cache").get(&fingerprint) {
            return Ok(r.clone());
        }
        let built = Arc::new(Receivers::build(config)?);
        cache.lock().expect("receivers cache").insert(fingerprint, built.clone());
        Ok(built)
    }

    /// Receiver `name`.
    pub fn get(&self, name: &str) -> Result<&dyn Notifier, NotifyError> {
        self.by_name
            .get(name)
            .map(|r| r.as_ref())
            .ok_or_else(|| NotifyError::new(name, "no such receiver in the config", Retry::Permanent))
    }

    /// Renders the payload of receiver `name` for one alert.
    pub fn render(&self, name: &str, view: &View, alert: &Alert) -> Result<Value, NotifyError> {
        self.get(name)?.render(&self.templates, view, alert)
    }
}

/// True when `value` is — or contains — a value the config loader took from the environment.
pub(crate) fn from_environment(value: &str) -> bool {
    crate::redact::global().mask(value) != value
}

/// True for `http://` URLs that may stay plain: loopback only (tests, local sinks).
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
}

/// Checks a receiver URL: absolute, https (http only on loopback). Pushes an issue at `path`.
pub(crate) fn check_url(path: &str, value: &str, out: &mut Vec<Issue>) -> Option<url::Url> {
    match url::Url::parse(value) {
        Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && is_loopback(&u)) => Some(u),
        Ok(_) => {
            out.push(Issue::error(path, "must be an https URL (plain http only to 127.0.0.1 or localhost)"));
            None
        }
        Err(e) => {
            out.push(Issue::error(path, format!("not a URL: {e}")));
            None
        }
    }
}
