//! Receivers: Teams (Workflows webhook with an Adaptive Card), e-mail (Graph sendMail), signed webhook.
//!
//! Each receiver kind has a config type with `validate`, a constructor and `send` ([`teams`], [`email`],
//! [`webhook`]); [`Receivers::build`] builds them all from the config, with their templates compiled
//! ([`template`]) and rendered once with a sample alert, so a broken template is a config error at its
//! path. What a notification says comes from [`view::View`].
//!
//! Secrets: a Workflows URL carries a signature (`sig=`) and a webhook has an HMAC key. Both must come
//! from the environment (`${NAME}`, which in Azure may be a Key Vault reference in the app settings):
//! the loader registers every substituted value with [`crate::redact`], and validation rejects a
//! signature or key that was not substituted, i.e. one written in the file in clear.

pub mod email;
pub mod http;
pub mod teams;
pub mod template;
pub mod view;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::alert::Alert;
use crate::config::{Config, Issue, Level, ValidationContext};
use crate::graph::Retry;
use crate::rules::RouteConfig;
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
        match self {
            ReceiverConfig::Teams(t) => t.validate(&format!("{path}.teams"), out),
            ReceiverConfig::Email(e) => e.validate(&format!("{path}.email"), out),
            ReceiverConfig::Webhook(w) => w.validate(&format!("{path}.webhook"), out),
        }
        let name = path.rsplit('.').next().unwrap_or(path);
        let mut templates = Templates::new();
        if let Err(issue) = Receiver::build(name, path, self, &mut templates) {
            out.push(issue);
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

/// What one receiver sends: rendered and ready.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The Workflows message (`{"type":"message","attachments":[…]}`).
    Teams(Value),
    /// The sendMail body (`{"message":{…},"saveToSentItems":false}`).
    Email(Value),
    /// The webhook body as bytes (signed as sent).
    Webhook(Vec<u8>),
}

/// A receiver, built and ready to render and send.
#[derive(Debug, Clone)]
pub enum Receiver {
    /// Teams.
    Teams(teams::Teams),
    /// E-mail.
    Email(email::Email),
    /// Webhook.
    Webhook(webhook::Webhook),
}

impl Receiver {
    /// Builds receiver `name` (config at `path`), adding its templates to `templates` and rendering each
    /// once with the sample alert.
    fn build(name: &str, path: &str, config: &ReceiverConfig, templates: &mut Templates) -> Result<Receiver, Issue> {
        let receiver = match config {
            ReceiverConfig::Teams(c) => Receiver::Teams(teams::Teams::new(name, c, templates, path)?),
            ReceiverConfig::Email(c) => Receiver::Email(email::Email::new(name, c, templates, path)?),
            ReceiverConfig::Webhook(c) => Receiver::Webhook(webhook::Webhook::new(name, c, templates, path)?),
        };
        let sample = serde_json::from_str::<Value>(template::SAMPLE_ALERT).expect("sample alert is JSON");
        let alert = Alert::from_value(sample.clone()).expect("sample alert reads");
        let view = View::new("contoso", name, &alert);
        receiver.render(templates, &view, &sample).map_err(|e| {
            let field = match receiver {
                Receiver::Teams(_) => "teams.template",
                Receiver::Email(_) => "email.template",
                Receiver::Webhook(_) => "webhook.template",
            };
            Issue::error(format!("{path}.{field}"), format!("fails with the sample alert: {}", e.message))
        })?;
        Ok(receiver)
    }

    /// Renders the payload for one alert.
    pub fn render(&self, templates: &Templates, view: &View, raw: &Value) -> Result<Payload, NotifyError> {
        match self {
            Receiver::Teams(t) => t.render(templates, view).map(Payload::Teams),
            Receiver::Email(e) => e.render(templates, view).map(Payload::Email),
            Receiver::Webhook(w) => w.render(templates, view, raw).map(Payload::Webhook),
        }
    }

    /// The kind, for audit records: `teams`, `email` or `webhook`.
    pub fn kind(&self) -> &'static str {
        match self {
            Receiver::Teams(_) => "teams",
            Receiver::Email(_) => "email",
            Receiver::Webhook(_) => "webhook",
        }
    }
}

/// Every receiver of a config, with the templates they render with.
#[derive(Debug)]
pub struct Receivers {
    /// The compiled templates.
    pub templates: Templates,
    /// Receivers by name.
    pub by_name: BTreeMap<String, Receiver>,
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
            match rc {
                ReceiverConfig::Teams(t) => t.validate(&format!("{path}.teams"), &mut own),
                ReceiverConfig::Email(e) => e.validate(&format!("{path}.email"), &mut own),
                ReceiverConfig::Webhook(w) => w.validate(&format!("{path}.webhook"), &mut own),
            }
            issues.extend(own.into_iter().filter(|i| i.level == Level::Error));
            match Receiver::build(name, &path, rc, &mut templates) {
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

    /// Renders the payload of receiver `name` for one alert.
    pub fn render(&self, name: &str, view: &View, raw: &Value) -> Result<Payload, NotifyError> {
        let r = self
            .by_name
            .get(name)
            .ok_or_else(|| NotifyError::new(name, "no such receiver in the config", Retry::Permanent))?;
        r.render(&self.templates, view, raw)
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
