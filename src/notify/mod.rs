//! Receivers: Teams (Workflows webhook with an Adaptive Card), e-mail (Graph sendMail), signed webhook,
//! and the delivery of one alert to them.
//!
//! Each receiver kind has a config type with `validate`, a constructor, and the one [`Notifier`] shape:
//! `render` an alert into its payload, `send` the payload ([`teams`], [`email`], [`webhook`]);
//! [`Receivers::build`] builds them all from the config, with their templates compiled ([`template`])
//! and rendered once with a sample alert, so a broken template is a config error at its path. What a
//! notification says comes from [`view::View`]. [`deliver`] tells the receivers of a decision about one
//! alert version: claim, realert, group, render, send, record, each step in its own file. [`silence`]
//! mutes deliveries (silences, recurring windows) and collects scheduled digests.
//!
//! Secrets: a Workflows URL carries a signature (`sig=`) and a webhook has an HMAC key. Both must come
//! from the environment (`${NAME}`, which in Azure may be a Key Vault reference in the app settings):
//! the loader registers every substituted value with [`crate::redact`], and validation rejects a
//! signature or key that was not substituted, i.e. one written in the file in clear.

pub mod budget;
pub mod cards;
pub mod deliver;
pub mod email;
pub mod http;
pub mod silence;
pub mod teams;
pub mod template;
pub mod view;
pub mod webhook;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::alert::Alert;
use crate::config::{Config, Issue, Level};
use crate::graph::{Graph, Retry};
use crate::store::Store;
use budget::Budgeted;
use template::Templates;
use view::{Digest, View};

pub use email::EmailConfig;
pub use teams::TeamsConfig;
pub use webhook::WebhookReceiverConfig;

pub use crate::config::receivers::{MAX_GROUP_WINDOW, ReceiverConfig, StatusUpdate};

/// Compiles and test-renders every receiver's templates with the sample alert; each failure located
/// at its receiver. The receivers' settings are checked when the config loads.
pub fn check(config: &Config, out: &mut Vec<Issue>) {
    let mut templates = Templates::new();
    for (name, rc) in &config.receivers {
        if let Err(issue) = build(config, name, &format!("receivers.{name}"), rc, &mut templates)
            && !out.contains(&issue)
        {
            // (An unknown bot is found by the config's own checks too: said once.)
            out.push(issue);
        }
    }
    silence::check(config, out);
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

impl<'a> SendContext<'a> {
    /// The context of one send for `tenant` with `app`'s edges; `delivery` identifies it across retries.
    pub fn new(app: &'a crate::app::App, tenant: &'a str, now: DateTime<Utc>, delivery: &'a str) -> Self {
        SendContext { http: &app.http, graph: app.graph.as_ref(), store: app.store.as_ref(), tenant, now, delivery }
    }
}

/// What a receiver sends for one alert: JSON its kind wraps further (a Teams card, a Graph mail), or a
/// body already written to bytes, as sent (the webhook's built-in body, written straight from the
/// alert: copying the alert into a `Value` and writing that out again cost more than the writing).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// JSON.
    Json(Value),
    /// A JSON body, as sent.
    Body(Vec<u8>),
}

impl Payload {
    /// The payload as JSON (a body is read back: for tests and tools, not the delivery path).
    pub fn json(&self) -> std::borrow::Cow<'_, Value> {
        match self {
            Payload::Json(v) => std::borrow::Cow::Borrowed(v),
            Payload::Body(b) => std::borrow::Cow::Owned(serde_json::from_slice(b).expect("a body is JSON")),
        }
    }

    /// The payload as the bytes of its JSON.
    pub fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Payload::Json(v) => std::borrow::Cow::Owned(serde_json::to_vec(v).expect("JSON")),
            Payload::Body(b) => std::borrow::Cow::Borrowed(b),
        }
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Self {
        Payload::Json(v)
    }
}

/// The one shape of every receiver kind: render an alert into a payload, then send it.
#[async_trait]
pub trait Notifier: std::fmt::Debug + Send + Sync {
    /// The kind, for audit records and config paths: `teams`, `email` or `webhook`.
    fn kind(&self) -> &'static str;

    /// The payload for one alert (what the template sees is `view`; the webhook adds the raw alert).
    fn render(&self, templates: &Templates, view: &View, alert: &Alert) -> Result<Payload, NotifyError>;

    /// Sends a rendered payload (an alert's, or a digest's); returns the receiver's HTTP status (202 for
    /// mail Graph accepted).
    async fn send(&self, cx: &SendContext<'_>, payload: &Payload) -> Result<u16, NotifyError>;

    /// The posting budget this receiver sends under, if the service behind it throttles: what finds
    /// the budget spent waits, and goes out in one digest ([`Notifier::render_digest`]).
    fn budget(&self) -> Option<Budgeted> {
        None
    }

    /// The payload of a digest of alerts that waited for the budget. It may keep fewer lines
    /// ([`Digest::keep`]) to fit the service's size limit: those wait for the next digest.
    fn render_digest(&self, _templates: &Templates, _digest: &mut Digest) -> Result<Value, NotifyError> {
        Err(NotifyError::new(self.kind(), "this receiver kind has no digest", Retry::Permanent))
    }

    /// Whether its payload shows the view's evidence lists ([`View::evidence`]); a receiver that does
    /// not is given a view without them ([`View::without_evidence`]).
    fn shows_evidence(&self) -> bool {
        true
    }

    /// For a receiver that posts through a Teams bot: where and as whom. Its cards are updated in
    /// place by later versions of their alerts ([`cards`]).
    fn bot(&self) -> Option<&teams::BotTarget> {
        None
    }
}

/// Builds receiver `name` (config at `path`, in `cloud`), adding its templates to `templates` and
/// rendering each once with the sample alert.
fn build(
    config: &Config,
    name: &str,
    path: &str,
    receiver: &ReceiverConfig,
    templates: &mut Templates,
) -> Result<Box<dyn Notifier>, Issue> {
    let receiver: Box<dyn Notifier> = match receiver {
        ReceiverConfig::Teams(c) => Box::new(
            teams::Teams::new(name, c, config.cloud, templates, path)?
                .with_bot(teams::BotTarget::new(config, c, path)?),
        ),
        ReceiverConfig::Email(c) => {
            let sender = c.tenant.clone().or_else(|| config.mail.tenant.clone());
            Box::new(email::Email::new(name, c, sender, templates, path)?)
        }
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
            rc.validate(&path, &mut own);
            issues.extend(own.into_iter().filter(|i| i.level == Level::Error));
            match build(config, name, &path, rc, &mut templates) {
                Ok(r) => {
                    by_name.insert(name.clone(), r);
                }
                Err(issue) => issues.push(issue),
            }
        }
        if issues.is_empty() { Ok(Receivers { templates, by_name }) } else { Err(issues) }
    }

    /// Receiver `name`.
    pub fn get(&self, name: &str) -> Result<&dyn Notifier, NotifyError> {
        self.by_name
            .get(name)
            .map(|r| r.as_ref())
            .ok_or_else(|| NotifyError::new(name, "no such receiver in the config", Retry::Permanent))
    }

    /// Renders the payload of receiver `name` for one alert.
    pub fn render(&self, name: &str, view: &View, alert: &Alert) -> Result<Payload, NotifyError> {
        self.get(name)?.render(&self.templates, view, alert)
    }
}
