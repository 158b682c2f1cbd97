//! Receivers: Teams (Workflows webhook with an Adaptive Card), e-mail (Graph sendMail), signed webhook.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Issue, ValidationContext};

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

/// Teams receiver.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The Workflows "When a Teams webhook request is received" URL; it carries a `sig=`, so write
    /// `${NAME}` and keep it in the environment or Key Vault.
    pub webhook_url: String,
}

/// E-mail receiver.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The mailbox that sends (needs `Mail.Send`; scope it with Exchange RBAC for Applications).
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

/// Generic webhook receiver.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookReceiverConfig {
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key for the signature header; write `${NAME}`.
    #[serde(default)]
    pub secret: Option<String>,
}

impl ReceiverConfig {
    /// Checks the receiver's settings.
    pub fn validate(&self, path: &str, _cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
        match self {
            ReceiverConfig::Teams(t) if url::Url::parse(&t.webhook_url).is_err() => {
                out.push(Issue::error(format!("{path}.teams.webhook_url"), "not a URL"))
            }
            ReceiverConfig::Email(e) if e.to.is_empty() => {
                out.push(Issue::error(format!("{path}.email.to"), "at least one recipient"))
            }
            ReceiverConfig::Webhook(w) if url::Url::parse(&w.url).is_err() => {
                out.push(Issue::error(format!("{path}.webhook.url"), "not a URL"))
            }
            _ => {}
        }
    }
}
