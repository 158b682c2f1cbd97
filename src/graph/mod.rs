//! Microsoft Graph: the operations secmon uses, behind one trait, with one retry policy.
//!
//! [`Graph`] is the edge; the real implementation talks HTTP to Graph (or to the emulator in tests).
//! Every call carries `Prefer: include-unknown-enum-members`, so evolvable enum values arrive as
//! themselves rather than as `unknownFutureValue`.
//!
//! - [`client`]: [`client::GraphClient`], the real implementation over one reqwest client;
//! - [`auth`]: which credential each tenant uses, and cached tokens;
//! - [`fake`]: the one in-memory Graph the tests and benchmarks share;
//! - [`retry`]: the one retry policy (429/503 `Retry-After`, back-off with jitter) and the per-tenant
//!   request budget.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

pub mod auth;
mod certificate;
pub mod client;
pub mod fake;
pub mod retry;

pub use crate::config::graph::{Cloud, CredentialConfig, CredentialKind};

/// One page of `GET /security/alerts_v2`.
#[derive(Debug, Clone, Default)]
pub struct AlertPage {
    /// The alerts as Graph sent them, each its JSON text, unparsed: nothing is lost on the way to the
    /// queue, and a poll reads only the id and time of an alert it has queued before (each poll lists
    /// the whole overlap again). [`AlertPage::values`] parses them.
    pub alerts: Vec<Box<RawValue>>,
    /// The next page, as an opaque absolute URL.
    pub next_link: Option<String>,
}

impl AlertPage {
    /// A page of parsed alerts (the fake Graph, tests).
    pub fn of_values(alerts: Vec<Value>, next_link: Option<String>) -> Self {
        let alerts =
            alerts.iter().map(|a| serde_json::value::to_raw_value(a).expect("JSON values serialize")).collect();
        AlertPage { alerts, next_link }
    }

    /// The alerts, parsed.
    pub fn values(&self) -> Vec<Value> {
        self.alerts.iter().map(|a| serde_json::from_str(a.get()).expect("a raw value is JSON")).collect()
    }
}

/// One `GET /security/alerts_v2` request: the `$filter`, and optionally `$orderby` and `$top`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertQuery {
    /// The `$filter` expression.
    pub filter: String,
    /// The `$orderby` expression (undocumented for alerts_v2; a server may refuse it with 400).
    pub orderby: Option<String>,
    /// The page size (`$top`).
    pub top: Option<u32>,
}

/// The updatable properties of an alert (`PATCH /security/alerts_v2/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertUpdate {
    /// New status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// New classification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// New determination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub determination: Option<String>,
    /// New owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_to: Option<String>,
}

/// Whether retrying a failed call can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A retry may succeed (throttling, 5xx, timeouts, dropped connections).
    Retryable,
    /// It will not (4xx other than 408/429, bad payloads we sent).
    Permanent,
}

/// A failed Graph or token call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct GraphError {
    /// What was being done, e.g. `list alerts for contoso`.
    pub operation: String,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    /// Graph's error code, e.g. `InvalidRequestBody`.
    pub code: Option<String>,
    /// What happened (redacted).
    pub message: String,
    /// Whether a retry helps.
    pub retry: Retry,
}

/// What a client has done for one tenant since it was built: requests, retries and waits.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CallStats {
    /// HTTP requests sent to Graph (token calls not included).
    pub requests: u64,
    /// Attempts that were retried.
    pub retries: u64,
    /// Calls that failed for good.
    pub failures: u64,
    /// Waits Graph asked for (429/503 with `Retry-After`).
    pub throttled_waits: u64,
    /// Their total length.
    #[serde(with = "millis")]
    pub throttled_wait: std::time::Duration,
    /// Waits secmon imposed on itself to stay within the per-tenant request budget.
    pub budget_waits: u64,
    /// Their total length.
    #[serde(with = "millis")]
    pub budget_wait: std::time::Duration,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// The Microsoft Graph operations secmon performs, per tenant (by tenant name).
#[async_trait]
pub trait Graph: Send + Sync {
    /// First page of the alerts `query` selects; later pages come from [`Graph::next_alerts`].
    async fn list_alerts(&self, tenant: &str, query: &AlertQuery) -> Result<AlertPage, GraphError>;
    /// The page at an `@odata.nextLink`.
    async fn next_alerts(&self, tenant: &str, next_link: &str) -> Result<AlertPage, GraphError>;
    /// One alert.
    async fn get_alert(&self, tenant: &str, id: &str) -> Result<Value, GraphError>;
    /// Updates an alert; returns the updated alert.
    async fn update_alert(&self, tenant: &str, id: &str, update: &AlertUpdate) -> Result<Value, GraphError>;
    /// Adds a comment to an alert.
    async fn add_comment(&self, tenant: &str, id: &str, comment: &str) -> Result<(), GraphError>;
    /// Sends a mail as `sender` (`POST /users/{sender}/sendMail`); `body` is the whole documented request
    /// body, `{"message": {...}, "saveToSentItems": false}`, posted as is.
    async fn send_mail(&self, tenant: &str, sender: &str, body: &Value) -> Result<(), GraphError>;
    /// Creates a subscription (`POST /subscriptions`, body as documented); returns Graph's subscription.
    async fn create_subscription(&self, tenant: &str, body: &Value) -> Result<Value, GraphError>;
    /// Sets a subscription's new expiry (`PATCH /subscriptions/{id}`).
    async fn renew_subscription(&self, tenant: &str, id: &str, expiration: &str) -> Result<Value, GraphError>;
    /// Reauthorizes a subscription (`POST /subscriptions/{id}/reauthorize`).
    async fn reauthorize_subscription(&self, tenant: &str, id: &str) -> Result<(), GraphError>;
    /// Deletes a subscription (`DELETE /subscriptions/{id}`); an absent one is not an error.
    async fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), GraphError>;
    /// Lists the app's subscriptions in the tenant (`GET /subscriptions`).
    async fn list_subscriptions(&self, tenant: &str) -> Result<Vec<Value>, GraphError>;
    /// Which of `group_ids` the user `user` (object id or UPN) is a member of, directly or through
    /// nested groups (`POST /users/{user}/checkMemberGroups`; needs `GroupMember.Read.All`).
    async fn check_member_groups(
        &self,
        tenant: &str,
        user: &str,
        group_ids: &[String],
    ) -> Result<Vec<String>, GraphError>;
    /// An Entra access token for another resource than Graph (`scope`, e.g. a Power Automate trigger's
    /// `https://service.flow.microsoft.com//.default`), with `tenant`'s credential. The token is
    /// registered with [`crate::redact`], so it never shows in a log or error.
    async fn token_for(&self, tenant: &str, scope: &str) -> Result<String, GraphError> {
        let _ = scope;
        Err(GraphError {
            operation: format!("get a token for {tenant}"),
            status: None,
            code: None,
            message: "this Graph has no credentials".into(),
            retry: Retry::Permanent,
        })
    }
    /// Requests, retries and waits so far for `tenant` (zero for implementations that do not count).
    fn call_stats(&self, tenant: &str) -> CallStats {
        let _ = tenant;
        CallStats::default()
    }
}
