//! The emulator's shared state and the small helpers every route uses (errors, time, tokens).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Value, json};

use crate::faults::Faults;

/// One request as the emulator saw it, with secrets redacted.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method (`GET`, `POST`, …).
    pub method: String,
    /// Request path without the query (`/v1.0/security/alerts_v2`).
    pub path: String,
    /// Raw query string, with any `sig=` value redacted.
    pub query: Option<String>,
    /// Request headers (lower-case names); `authorization` and `x-identity-header` values are redacted.
    pub headers: BTreeMap<String, String>,
    /// Request body; `client_secret` and `client_assertion` form fields are redacted.
    pub body: Vec<u8>,
    /// Status returned, or `None` when an injected fault dropped the connection.
    pub status: Option<u16>,
    /// Whether an injected fault hit this request.
    pub faulted: bool,
    /// When the request arrived (Tokio clock, so it follows paused test time).
    pub at: tokio::time::Instant,
}

/// Which body shapes `POST /security/alerts_v2/{id}/comments` accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommentShape {
    /// Both the documented single object and an array of alertComment objects.
    #[default]
    Both,
    /// Only the documented single object `{"@odata.type":…,"comment":…}`.
    ObjectOnly,
    /// Only an array of alertComment objects (what the generated Go SDK sends).
    ArrayOnly,
}

/// The order the server lists alerts in when `$orderby` is absent or ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServerOrder {
    /// Most recent `lastUpdateDateTime` first, as the docs say results come.
    #[default]
    RecentFirst,
    /// Oldest first.
    OldestFirst,
    /// By id: unrelated to time.
    ById,
}

/// What the server does with `$orderby`, which alerts_v2 does not document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OrderBy {
    /// `$orderby=lastUpdateDateTime|createdDateTime [asc|desc]` is honoured (what production pollers see).
    #[default]
    Honoured,
    /// Accepted and ignored: the [`ServerOrder`] applies.
    Ignored,
    /// Answered 400, as an unsupported query option.
    Refused,
}

/// How `@odata.nextLink` pages a listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paging {
    /// The first page snapshots the matching ids; later pages return their current state.
    #[default]
    Snapshot,
    /// `$skip`-style: each page runs the query again on the current alerts and skips what earlier
    /// pages returned, so an update between pages can repeat or skip an alert.
    Offset,
}

/// How the alert list behaves: order, `$orderby` and paging.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The server's own order.
    pub order: ServerOrder,
    /// What `$orderby` does.
    pub orderby: OrderBy,
    /// How pages follow each other.
    pub paging: Paging,
}

/// One delivery to a webhook sink: headers (lower-case names) and the raw body.
pub(crate) type SinkDelivery = (HashMap<String, String>, Vec<u8>);

/// What an access token stands for.
#[derive(Clone, Debug)]
pub(crate) struct TokenInfo {
    pub tenant: String,
    pub client_id: String,
    pub expires_at: DateTime<Utc>,
    /// The application roles granted (the token's `roles` claim).
    pub roles: Vec<String>,
}

/// The application roles a client or managed identity has unless a test says otherwise: what secmon
/// needs to read and close alerts and to send mail.
pub(crate) const DEFAULT_ROLES: [&str; 2] = ["SecurityAlert.ReadWrite.All", "Mail.Send"];

/// Roles that allow reading alerts (`GET /security/alerts_v2`).
pub(crate) const ALERT_READ_ROLES: [&str; 2] = ["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"];
/// Roles that allow updating alerts and adding comments.
pub(crate) const ALERT_WRITE_ROLES: [&str; 1] = ["SecurityAlert.ReadWrite.All"];
/// Roles that allow `checkMemberGroups` with an application token.
pub(crate) const GROUP_READ_ROLES: [&str; 3] = ["GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"];
/// Roles that allow `sendMail`.
pub(crate) const MAIL_SEND_ROLES: [&str; 1] = ["Mail.Send"];

/// A server-side snapshot of the alert ids matching a list query, walked by `$skiptoken`.
pub(crate) struct Cursor {
    pub tenant: String,
    pub ids: Vec<String>,
    pub page: usize,
    pub created: std::time::Instant,
    /// Offset paging: `ids` is empty and each page runs `filter` / `orderby` again.
    pub offset_paging: bool,
    pub filter: String,
    pub orderby: Option<String>,
}

/// A Teams Workflows trigger: its signature and the messages it accepted.
pub(crate) struct Workflow {
    pub sig: String,
    pub messages: Vec<Value>,
}

/// A change-notification subscription and the tenant that owns it.
pub(crate) struct Subscription {
    pub tenant: String,
    pub body: Value,
}

/// Everything mutable, behind one lock that is never held across an await.
#[derive(Default)]
pub(crate) struct Inner {
    pub now: Option<DateTime<Utc>>,
    pub comment_shape: CommentShape,
    pub clients: HashMap<(String, String), String>,
    /// Roles per (tenant, client id) that differ from [`DEFAULT_ROLES`].
    pub client_roles: HashMap<(String, String), Vec<String>>,
    /// Clients whose token requests fail with AADSTS65001 (no admin consent in the tenant).
    pub consent_missing: std::collections::HashSet<(String, String)>,
    /// Roles of the managed identity, when they differ from [`DEFAULT_ROLES`].
    pub mi_roles: Option<Vec<String>>,
    /// How far the `Date` header of Graph's answers is from the emulator's clock.
    pub date_skew: Option<chrono::Duration>,
    pub tokens: HashMap<String, TokenInfo>,
    pub alerts: HashMap<String, HashMap<String, Value>>,
    pub cursors: HashMap<String, Cursor>,
    pub requests: Vec<Recorded>,
    pub patches: Vec<(String, String, Value)>,
    pub comments: Vec<(String, String, String)>,
    pub mails: Vec<(String, String, Value)>,
    pub workflows: HashMap<String, Workflow>,
    pub sinks: HashMap<String, Vec<SinkDelivery>>,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub mailboxes: HashMap<(String, String), Vec<Value>>,
    pub listing: Listing,
    /// Per tenant: alerts upserted after each list page served (one batch per page).
    pub between_pages: HashMap<String, std::collections::VecDeque<Vec<Value>>>,
    /// Calls bots made to the Bot Connector stand-in.
    pub bot_calls: Vec<crate::botconnector::BotCall>,
    /// (tenant id, user object id or UPN, lower case) → the groups the user is a member of (transitively).
    pub members: HashMap<(String, String), Vec<String>>,
    /// The OpenID provider stand-in's signed-in user (default: [`crate::oidc::OidcUser::default`]).
    pub oidc_user: Option<crate::oidc::OidcUser>,
    /// Codes the OpenID provider stand-in handed out and that are not redeemed yet.
    pub oidc_grants: HashMap<String, crate::oidc::Grant>,
}

/// State shared by the server task and the `Emulator` handle.
pub(crate) struct Shared {
    pub base_url: String,
    pub identity_header: String,
    pub mi_client_id: String,
    pub default_tenant: String,
    pub page_size: usize,
    pub faults: Faults,
    pub http: reqwest::Client,
    /// The Bot Connector stand-in's signing key (made on first use).
    pub bot_key: std::sync::OnceLock<crate::botconnector::SigningKey>,
    pub inner: Mutex<Inner>,
}

pub(crate) type AppState = Arc<Shared>;

impl Shared {
    /// Locks the mutable state.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("emulator state lock")
    }

    /// The emulator's notion of now: a fixed time set by the test, else the wall clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.lock().now.unwrap_or_else(Utc::now)
    }

    /// The Graph root, `{base}/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }

    /// Issues an access token for a tenant and app, valid for `lifetime` seconds, for the resource
    /// `audience`, carrying `roles`. It is JWT-shaped, with the claims Entra puts in app-only tokens
    /// (`aud`, `iss`, `iat`, `nbf`, `exp`, `tid`, `appid`, `roles`, `oid`, `idtyp`), so clients can read
    /// them; the signature segment is random bytes: the emulator recognises its tokens by lookup.
    pub fn issue_token(
        &self,
        tenant: &str,
        client_id: &str,
        audience: &str,
        roles: Vec<String>,
        lifetime: i64,
    ) -> (String, DateTime<Utc>) {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = self.now();
        let expires_at = now + chrono::Duration::seconds(lifetime);
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": "emulator"});
        let mut claims = json!({
            "aud": audience,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": now.timestamp(),
            "nbf": now.timestamp(),
            "exp": expires_at.timestamp(),
            "appid": client_id,
            "idtyp": "app",
            "oid": uuid::Uuid::new_v4().to_string(),
            "tid": tenant,
        });
        // Entra leaves the claim out when no role is granted.
        if !roles.is_empty() {
            claims["roles"] = json!(roles);
        }
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            random_string(43)
        );
        self.lock().tokens.insert(
            token.clone(),
            TokenInfo { tenant: tenant.to_string(), client_id: client_id.to_string(), expires_at, roles },
        );
        (token, expires_at)
    }

    /// The roles a client of a tenant is granted.
    pub fn client_roles(&self, tenant: &str, client_id: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .client_roles
            .get(&(tenant.to_string(), client_id.to_string()))
            .cloned()
            .unwrap_or_else(|| DEFAULT_ROLES.iter().map(|r| r.to_string()).collect())
    }

    /// Checks `Authorization: Bearer …` the way Graph does and returns what the token stands for.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<TokenInfo, Response> {
        let unauthorized = |message: &str| graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", message);
        let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        if value.is_empty() {
            return Err(unauthorized("Access token is empty."));
        }
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| unauthorized("Access token validation failure. Invalid audience."))?;
        let now = self.now();
        let info = self
            .lock()
            .tokens
            .get(token.trim())
            .cloned()
            .ok_or_else(|| unauthorized("IDX14100: JWT is not well formed, there are no dots (.)."))?;
        if info.expires_at <= now {
            return Err(unauthorized("Lifetime validation failed, the token is expired."));
        }
        Ok(info)
    }

    /// [`Shared::authenticate`], then checks the token holds one of `required` roles. Without one,
    /// Graph answers 403 with the body it really sends (as recorded in wazuh/wazuh-documentation#7300):
    /// `{"error":{"code":"Forbidden","message":"Missing application roles. API required roles: …,
    /// application roles: ….","innerError":{…}}}`.
    pub fn authorize(&self, headers: &HeaderMap, required: &[&str]) -> Result<TokenInfo, Response> {
        let info = self.authenticate(headers)?;
        if info.roles.iter().any(|r| required.contains(&r.as_str())) {
            return Ok(info);
        }
        Err(graph_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "Missing application roles. API required roles: {}, application roles: {}.",
                required.join(","),
                info.roles.join(",")
            ),
        ))
    }
}

/// A Graph error response: `{"error":{"code","message","innerError":{…}}}`.
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": fmt_seconds(Utc::now()),
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }
    });
    json_response(status, &body)
}

/// A JSON response with the content type Graph uses.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    json_text_response(status, body.to_string())
}

/// A response of JSON already serialized, with Graph's content type.
pub(crate) fn json_text_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8",
        ),
    );
    resp
}

/// Formats a time the way Graph does for alerts: UTC with seven fractional digits.
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), t.timestamp_subsec_nanos() / 100)
}

/// Formats a time with whole seconds (`2026-11-26T10:00:00Z`).
pub(crate) fn fmt_seconds(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parses an ISO 8601 / RFC 3339 time.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// The time stored in an alert field, if present and well formed.
pub(crate) fn alert_time(alert: &Value, field: &str) -> Option<DateTime<Utc>> {
    alert.get(field).and_then(Value::as_str).and_then(parse_time)
}

/// A random URL-safe string.
pub(crate) fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}
