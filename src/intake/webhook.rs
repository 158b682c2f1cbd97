//! The HTTP path: Graph change notifications (validation handshake, clientState, lifecycle events)
//! and the signed generic doorbell. A notification is a doorbell: it queues "poll tenant X now".
//!
//! One entry point, [`handle`], serves the four HTTP functions; every host reaches it through the one
//! router (`functions::router`, the layer above):
//!
//! | function | method | what |
//! |---|---|---|
//! | `graph-webhook` | POST | `?validationToken=` handshake, or a `value[]` batch of change notifications |
//! | `graph-lifecycle` | POST | the same handshake, or a batch of lifecycle notifications |
//! | `doorbell` | POST | `{"tenant", "alert_id"?}` signed with HMAC-SHA256 over `"{timestamp}.{body}"` |
//! | `health` | GET | `{"status": "up" \| "starting" \| "down"}` only; 503 when down (details: `functions::health_details`) |
//!
//! A batch is answered 202 only after every valid item is on the queue, and 503 when queuing failed, so
//! Graph retries (a second poll of a tenant is harmless). Items whose `clientState` does not match their
//! subscription's stored secret are dropped and counted. Every request runs under a time limit inside
//! Graph's 3-second budget; bodies are capped (413) and typed (415). Query strings, which carry the
//! function key (`code=`), are never logged.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::app::App;
use crate::intake::Message;
use crate::intake::http::{HttpRequest, HttpResponse};
use crate::intake::subscriptions::{self, LifecycleEvent, PendingRecord, SubscriptionRecord};
use crate::store::{Once, StoreError, keys, once};

pub use crate::config::intake::WebhookConfig;

/// The longest validation token echoed (Graph's are about 100 characters).
pub const MAX_VALIDATION_TOKEN: usize = 1024;
/// The largest doorbell body accepted.
pub const MAX_DOORBELL_BODY: usize = 16 * 1024;
/// Longest accepted `subscriptionId`, `clientState`, `tenantId`, `resource` or `lifecycleEvent`.
const MAX_FIELD: usize = 2048;

/// One item of a notification batch, as far as secmon reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The subscription that fired.
    pub subscription_id: String,
    /// The secret Graph echoes back; absent means forged.
    pub client_state: Option<String>,
    /// The tenant (GUID) Graph says it is from.
    pub tenant_id: Option<String>,
    /// What changed (e.g. `Users/{id}/Messages/{id}`).
    pub resource: Option<String>,
    /// `created`, `updated`, `deleted`.
    pub change_type: Option<String>,
    /// Set on lifecycle notifications.
    pub lifecycle_event: Option<String>,
}

/// Why a whole notification body was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body is not UTF-8.
    #[error("the body is not UTF-8 (at byte {0})")]
    NotUtf8(usize),
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// The body has no `value` array.
    #[error("the body is not a notification batch: no \"value\" array")]
    NoValue,
}

/// Parses a notification batch. A malformed item does not spoil the batch: it comes back as an `Err`
/// with the reason, to be dropped and counted; the valid ones are still processed.
pub fn parse_notifications(body: &[u8]) -> Result<Vec<Result<Notification, String>>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|e| BodyError::NotUtf8(e.valid_up_to()))?;
    let value: Value = serde_json::from_str(text).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let Some(items) = value.get("value").and_then(Value::as_array) else {
        return Err(BodyError::NoValue);
    };
    Ok(items.iter().enumerate().map(|(i, item)| parse_item(item).map_err(|e| format!("value[{i}]: {e}"))).collect())
}

fn parse_item(item: &Value) -> Result<Notification, String> {
    let obj = item.as_object().ok_or("not an object")?;
    let field = |name: &str| -> Result<Option<String>, String> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_FIELD => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(format!("{name} is longer than {MAX_FIELD} bytes")),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let subscription_id = field("subscriptionId")?.filter(|s| !s.is_empty()).ok_or("no subscriptionId")?;
    Ok(Notification {
        subscription_id,
        client_state: field("clientState")?,
        tenant_id: field("tenantId")?,
        resource: field("resource")?,
        change_type: field("changeType")?,
        lifecycle_event: field("lifecycleEvent")?,
    })
}

/// Handles one HTTP function (`graph-webhook`, `graph-lifecycle`, `doorbell`, `health`).
pub async fn handle(app: &App, function: &str, req: HttpRequest) -> HttpResponse {
    let limit = app.config.webhook.time_limit;
    let resp = match tokio::time::timeout(limit, route(app, function, &req)).await {
        Ok(resp) => resp,
        Err(_) => {
            // Whatever was queued stays queued; the retry queues it again, and a second poll is harmless.
            tracing::warn!(function, "request exceeded the {limit:?} limit");
            HttpResponse::text(503, format!("not done within {limit:?}; retry")).with_header("Retry-After", "1")
        }
    };
    resp.with_header("X-Content-Type-Options", "nosniff").with_header("Cache-Control", "no-store")
}

async fn route(app: &App, function: &str, req: &HttpRequest) -> HttpResponse {
    let now = app.clock.now();
    match function {
        "graph-webhook" | "graph-lifecycle" => {
            if let Some(resp) = require_method(req, "POST") {
                return resp;
            }
            if let Some(token) = req.query_param("validationToken") {
                return validation(app, token, now).await;
            }
            if let Some(resp) = check_body(req, app.config.webhook.max_body_bytes, "application/json") {
                return resp;
            }
            notifications(app, function, &req.body, now).await
        }
        "doorbell" => {
            if let Some(resp) = require_method(req, "POST") {
                return resp;
            }
            if let Some(resp) =
                check_body(req, MAX_DOORBELL_BODY.min(app.config.webhook.max_body_bytes), "application/json")
            {
                return resp;
            }
            doorbell(app, req, now).await
        }
        "health" => {
            if req.method != "GET" && req.method != "HEAD" {
                return HttpResponse::text(405, "use GET").with_header("Allow", "GET");
            }
            crate::intake::health::http(app, now).await
        }
        other => HttpResponse::text(404, format!("no HTTP function {other:?}")),
    }
}

fn require_method(req: &HttpRequest, method: &'static str) -> Option<HttpResponse> {
    (req.method != method).then(|| HttpResponse::text(405, format!("use {method}")).with_header("Allow", method))
}

fn check_body(req: &HttpRequest, max: usize, content_type: &str) -> Option<HttpResponse> {
    if req.body.len() > max {
        return Some(HttpResponse::text(413, format!("the body is {} bytes; the limit is {max}", req.body.len())));
    }
    let given = req.header("content-type").unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(content_type) {
        let shown: String = essence.chars().take(80).collect();
        return Some(HttpResponse::text(415, format!("Content-Type must be {content_type}, not {shown:?}")));
    }
    None
}

/// The validation handshake, answered only while a subscription of ours is being created (a
/// `subscription-creating` marker, written by whichever instance creates it, exists); otherwise 403
/// with nothing echoed, so the endpoint cannot be used to reflect text or to probe it.
async fn validation(app: &App, token: &str, now: DateTime<Utc>) -> HttpResponse {
    match subscriptions::creating(app.store.as_ref(), now).await {
        Ok(true) => validation_answer(token),
        Ok(false) => {
            tracing::warn!("refused a validation handshake: no subscription of ours is being created");
            HttpResponse::text(403, "no subscription is being created")
        }
        Err(e) => {
            // Graph's create fails and the next sync tries again; the caller learns nothing of the store.
            tracing::error!(
                "validation handshake: reading subscription-creating markers: {}",
                crate::redact::redact(&e.to_string())
            );
            HttpResponse::text(503, "retry").with_header("Retry-After", "5")
        }
    }
}

/// Graph's validation handshake: the decoded token, as plain text, never interpreted as markup.
pub fn validation_answer(token: &str) -> HttpResponse {
    if token.len() > MAX_VALIDATION_TOKEN {
        return HttpResponse::text(400, format!("validationToken longer than {MAX_VALIDATION_TOKEN} bytes"));
    }
    HttpResponse { status: 200, content_type: "text/plain", body: token.to_string(), headers: Vec::new() }
}

/// The subscriptions a batch refers to, read from the store with one listing.
struct Directory {
    records: HashMap<String, SubscriptionRecord>,
    pending: Vec<PendingRecord>,
}

impl Directory {
    async fn load(app: &App, ids: &HashSet<&str>) -> Result<Directory, StoreError> {
        let keys = app.store.list(&keys::subscriptions(None)).await?;
        let mut records = HashMap::new();
        let mut unknown = ids.clone();
        for key in &keys {
            let Some(id) = key.rsplit('/').next() else { continue };
            if !ids.contains(id) {
                continue;
            }
            if let Some(v) = app.store.get(key).await?
                && let Ok(r) = serde_json::from_slice::<SubscriptionRecord>(&v.value)
            {
                unknown.remove(id);
                records.insert(r.id.clone(), r);
            }
        }
        // Only read pending records when a notification names a subscription not stored yet.
        let pending = if unknown.is_empty() {
            Vec::new()
        } else {
            subscriptions::load_pending(app.store.as_ref(), &keys).await?
        };
        Ok(Directory { records, pending })
    }

    /// The tenant and resource of the subscription whose secret matches, compared in constant time.
    fn authenticate(&self, app: &App, n: &Notification) -> Option<(String, String, Option<&SubscriptionRecord>)> {
        let given = n.client_state.as_deref()?.as_bytes();
        if let Some(r) = self.records.get(&n.subscription_id) {
            if !bool::from(r.client_state.as_bytes().ct_eq(given)) {
                return None;
            }
            if !tenant_matches(app, &r.tenant, n.tenant_id.as_deref()) {
                return None;
            }
            return Some((r.tenant.clone(), r.resource.clone(), Some(r)));
        }
        // A subscription being created: its secret is known before its id.
        let mut found = None;
        for p in &self.pending {
            if bool::from(p.client_state.as_bytes().ct_eq(given))
                && tenant_matches(app, &p.tenant, n.tenant_id.as_deref())
            {
                found = Some((p.tenant.clone(), p.resource.clone(), None));
            }
        }
        found
    }
}

/// When the config names a tenant by GUID, a notification claiming another tenant is refused.
fn tenant_matches(app: &App, tenant: &str, claimed: Option<&str>) -> bool {
    let (Some(configured), Some(claimed)) = (app.config.tenant(tenant), claimed) else { return true };
    if uuid::Uuid::parse_str(&configured.id).is_err() {
        return true;
    }
    configured.id.eq_ignore_ascii_case(claimed)
}

/// Counts of one notification batch.
#[derive(Debug, Default, Serialize)]
struct BatchOutcome {
    received: usize,
    accepted: usize,
    rejected: usize,
    queued: usize,
    lifecycle: usize,
}

async fn notifications(app: &App, function: &str, body: &[u8], now: DateTime<Utc>) -> HttpResponse {
    let items = match parse_notifications(body) {
        Ok(items) => items,
        Err(e) => {
            tracing::warn!(function, "refused a notification body: {e}");
            return HttpResponse::text(400, e.to_string());
        }
    };
    let mut out = BatchOutcome { received: items.len(), ..Default::default() };
    let valid: Vec<Notification> = items
        .into_iter()
        .filter_map(|i| match i {
            Ok(n) => Some(n),
            Err(reason) => {
                tracing::debug!(function, "malformed notification item: {reason}");
                out.rejected += 1;
                None
            }
        })
        .collect();
    let ids: HashSet<&str> = valid.iter().map(|n| n.subscription_id.as_str()).collect();
    let directory = match Directory::load(app, &ids).await {
        Ok(d) => d,
        Err(e) => return retry_later(function, &format!("reading subscriptions: {e}")),
    };
    let mut polled: HashSet<String> = HashSet::new();
    let mut lifecycle_work = Vec::new();
    for n in &valid {
        let Some((tenant, resource, record)) = directory.authenticate(app, n) else {
            out.rejected += 1;
            continue;
        };
        out.accepted += 1;
        if let Some(event) = &n.lifecycle_event {
            out.lifecycle += 1;
            let Some(record) = record else {
                // A lifecycle event for a subscription still being created: catching up is all that is safe.
                if polled.insert(format!("{tenant}\n{resource}")) {
                    let reason = format!("lifecycle:{event}");
                    if let Err(e) = super::coalesce::request(app, &tenant, &reason, now).await {
                        return retry_later(function, &format!("queueing a poll: {e}"));
                    }
                    out.queued += 1;
                }
                continue;
            };
            let event = LifecycleEvent::parse(event);
            match subscriptions::record_lifecycle(app, record, &event).await {
                Ok(Some(needs)) => lifecycle_work.push((record.clone(), needs)),
                Ok(None) => {}
                Err(e) => return retry_later(function, &format!("recording {}: {e}", event.as_str())),
            }
            if !matches!(event, LifecycleEvent::ReauthorizationRequired) {
                out.queued += 1;
            }
            continue;
        }
        // Several notifications for one subscription in one batch ring the same bell once.
        if !polled.insert(format!("{tenant}\n{resource}")) {
            continue;
        }
        if let Err(e) = super::coalesce::request(app, &tenant, &resource, now).await {
            return retry_later(function, &format!("queueing a poll: {e}"));
        }
        out.queued += 1;
    }
    // Everything durable is done; what follows only saves the timer some work, so all of it together
    // gets one inline budget (each record's mark stays until its action succeeds).
    let inline = async {
        for (record, needs) in lifecycle_work {
            let done = subscriptions::act_on_lifecycle(app, &record, needs, now).await;
            tracing::info!(tenant = %record.tenant, id = %record.id, "lifecycle {needs:?}: {done}");
        }
    };
    if tokio::time::timeout(subscriptions::INLINE_BUDGET, inline).await.is_err() {
        tracing::info!(function, "lifecycle work left for the graph-subscriptions timer");
    }
    if out.rejected > 0 {
        tracing::warn!(
            function,
            rejected = out.rejected,
            received = out.received,
            "dropped notifications with a missing or wrong clientState, an unknown subscription, or a malformed item"
        );
    }
    tracing::info!(function, received = out.received, accepted = out.accepted, queued = out.queued, "notifications");
    HttpResponse::json(202, &serde_json::to_value(&out).expect("serializes"))
}

fn retry_later(function: &str, why: &str) -> HttpResponse {
    let why = crate::redact::redact(why);
    tracing::error!(function, "answering 503 so the sender retries: {why}");
    HttpResponse::text(503, format!("could not queue the work; retry ({why})")).with_header("Retry-After", "5")
}

/// The doorbell body: poll a tenant now, or look at one alert now.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DoorbellRequest {
    /// Tenant name or tenant id, as configured.
    pub tenant: String,
    /// An alert id to fetch and process, instead of a poll.
    #[serde(default)]
    pub alert_id: Option<String>,
}

/// Why a doorbell was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoorbellError {
    /// Header missing or malformed (401).
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The timestamp is outside the replay window (401).
    #[error("X-Secmon-Timestamp is {0}s away from now; the window is {1}s")]
    Stale(i64, u64),
}

/// Checks a doorbell's signature (`sha256=<hex>` of HMAC-SHA256 over `"{timestamp}.{body}"`, compared in
/// constant time) and its timestamp against the replay window. Returns the signature's hex, the replay key.
pub fn verify_doorbell(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
    window: Duration,
) -> Result<String, DoorbellError> {
    use hmac::Mac;
    let ts = timestamp.ok_or(DoorbellError::Unauthenticated("X-Secmon-Timestamp is missing"))?.trim();
    let seconds: i64 =
        ts.parse().map_err(|_| DoorbellError::Unauthenticated("X-Secmon-Timestamp is not unix seconds"))?;
    let sig = signature.ok_or(DoorbellError::Unauthenticated("X-Secmon-Signature is missing"))?.trim();
    let hex_sig =
        sig.strip_prefix("sha256=").ok_or(DoorbellError::Unauthenticated("X-Secmon-Signature must be sha256=<hex>"))?;
    let given = hex::decode(hex_sig).map_err(|_| DoorbellError::Unauthenticated("X-Secmon-Signature is not hex"))?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| DoorbellError::Unauthenticated("the signature does not match"))?;
    let skew = now.timestamp().saturating_sub(seconds);
    if skew.unsigned_abs() > window.as_secs() {
        return Err(DoorbellError::Stale(skew, window.as_secs()));
    }
    Ok(hex_sig.to_ascii_lowercase())
}

/// Signs a doorbell body the way [`verify_doorbell`] checks it: the `X-Secmon-Signature` value.
pub fn sign_doorbell(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// An alert id as Graph writes them (`da637551227677560813_-961444813`): it becomes a URL path segment,
/// so `.` and `..` (and anything else that is only dots) are refused, and it must start with a letter or
/// digit.
fn valid_alert_id(id: &str) -> bool {
    id.len() <= 256
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

async fn doorbell(app: &App, req: &HttpRequest, now: DateTime<Utc>) -> HttpResponse {
    let webhook = &app.config.webhook;
    if !webhook.doorbell_enabled() {
        return HttpResponse::text(404, "the doorbell is not configured (webhook.doorbell_secret)");
    }
    // The body names the tenant, and the tenant picks the key (its own, else the shared one). It is read
    // here only to choose the key: nothing about it is answered before the signature holds, so an
    // unsigned caller learns neither which tenants exist nor which have keys of their own.
    let named: Result<DoorbellRequest, _> = serde_json::from_slice(&req.body);
    let tenant = named
        .as_ref()
        .ok()
        .and_then(|r| app.config.tenants.iter().find(|t| t.name == r.tenant || t.id.eq_ignore_ascii_case(&r.tenant)));
    let Some(secret) = webhook.doorbell_key(tenant.map(|t| t.name.as_str())) else {
        tracing::warn!("refused a doorbell: no key applies to it");
        return HttpResponse::text(401, DoorbellError::Unauthenticated("the signature does not match").to_string());
    };
    let window = webhook.replay_window;
    let sig = match verify_doorbell(
        secret.as_bytes(),
        req.header("x-secmon-timestamp"),
        req.header("x-secmon-signature"),
        &req.body,
        now,
        window,
    ) {
        Ok(sig) => sig,
        Err(e) => {
            tracing::warn!("refused a doorbell: {e}");
            return HttpResponse::text(401, e.to_string());
        }
    };
    let parsed = match named {
        Ok(r) => r,
        Err(e) => {
            return HttpResponse::text(
                400,
                format!("doorbell body: {e}; expected {{\"tenant\": ..., \"alert_id\": ...}}"),
            );
        }
    };
    let Some(tenant) = tenant else {
        return HttpResponse::text(
            422,
            format!("unknown tenant {:?}", parsed.tenant.chars().take(80).collect::<String>()),
        );
    };
    if let Some(id) = &parsed.alert_id
        && !valid_alert_id(id)
    {
        return HttpResponse::text(422, "alert_id must be 1-256 characters of letters, digits, '-', '_', '.', ':'");
    }
    // A signature is good once: claimed for twice the window (a replay after that has a stale timestamp).
    let message = match parsed.alert_id {
        Some(alert_id) => Message::Lookup { tenant: tenant.name.clone(), alert_id },
        None => Message::Poll { tenant: tenant.name.clone(), reason: "doorbell".into() },
    };
    let queued = once(app.store.as_ref(), &keys::doorbell(&sig), window * 2, || async {
        match &message {
            // However many ring, at most one poll per tenant is pending (`coalesce`).
            Message::Poll { tenant, reason } => super::coalesce::request(app, tenant, reason, now).await.map(|_| ()),
            other => other.send(app.store.as_ref(), app.queue.as_ref()).await,
        }
    })
    .await;
    match queued {
        Ok(Once::Done(())) => {}
        Ok(Once::AlreadyDone | Once::Held) => return HttpResponse::text(409, "this signature was already used"),
        // The signature was given back, so the caller's retry of the same request works.
        Ok(Once::Failed(e)) => return retry_later("doorbell", &format!("queueing: {e}")),
        Err(e) => return retry_later("doorbell", &format!("claiming the signature: {e}")),
    }
    tracing::info!(tenant = %tenant.name, "doorbell rang");
    HttpResponse::json(202, &json!({"queued": serde_json::to_value(&message).expect("serializes")}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/samples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn the_documented_notification_parses() {
        let items = parse_notifications(&sample("change-notification-webhook.json")).unwrap();
        assert_eq!(items.len(), 1);
        let n = items[0].as_ref().unwrap();
        assert_eq!(n.subscription_id, "{subscription_guid}");
        assert_eq!(n.client_state.as_deref(), Some("secretClientValue"));
        assert_eq!(n.tenant_id.as_deref(), Some("84bd8158-6d4d-4958-8b9f-9d6445542f95"));
        assert_eq!(n.change_type.as_deref(), Some("created"));
        assert_eq!(n.lifecycle_event, None);
    }

    #[test]
    fn the_documented_lifecycle_notification_parses() {
        let items = parse_notifications(&sample("lifecycle-notification.json")).unwrap();
        let n = items[0].as_ref().unwrap();
        assert_eq!(n.subscription_id, "<subscription_guid>");
        assert!(n.lifecycle_event.as_deref().unwrap().contains("reauthorizationRequired"));
    }

    #[test]
    fn bad_bodies_and_items_say_what_is_wrong() {
        assert_eq!(parse_notifications(b"\xff\xfe"), Err(BodyError::NotUtf8(0)));
        assert!(matches!(parse_notifications(b"{"), Err(BodyError::NotJson(_))));
        assert_eq!(parse_notifications(b"{\"values\":[]}"), Err(BodyError::NoValue));
        assert_eq!(parse_notifications(b"[]"), Err(BodyError::NoValue));
        let items =
            parse_notifications(br#"{"value":[5,{"clientState":"x"},{"subscriptionId":7},{"subscriptionId":"a"}]}"#)
                .unwrap();
        assert_eq!(items[0], Err("value[0]: not an object".into()));
        assert_eq!(items[1], Err("value[1]: no subscriptionId".into()));
        assert_eq!(items[2], Err("value[2]: subscriptionId is not a string".into()));
        assert_eq!(items[3].as_ref().unwrap().client_state, None);
    }

    #[test]
    fn validation_echoes_plain_text_with_a_cap() {
        let r = validation_answer("<script>alert(1)</script>");
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "text/plain");
        assert_eq!(r.body, "<script>alert(1)</script>");
        assert_eq!(validation_answer(&"a".repeat(MAX_VALIDATION_TOKEN)).status, 200);
        assert_eq!(validation_answer(&"a".repeat(MAX_VALIDATION_TOKEN + 1)).status, 400);
    }

    #[test]
    fn doorbell_signatures_and_windows() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        let ts = now.timestamp();
        let body = br#"{"tenant":"contoso"}"#;
        let secret = b"0123456789abcdef-secret";
        let w = Duration::from_secs(300);
        let sig = sign_doorbell(secret, ts, body);
        let t = ts.to_string();
        assert_eq!(verify_doorbell(secret, Some(&t), Some(&sig), body, now, w).unwrap(), sig[7..]);
        // Another body, another key, another timestamp: each breaks the signature.
        assert!(verify_doorbell(secret, Some(&t), Some(&sig), br#"{"tenant":"fabrikam"}"#, now, w).is_err());
        assert!(verify_doorbell(b"another-secret-of-16", Some(&t), Some(&sig), body, now, w).is_err());
        assert!(verify_doorbell(secret, Some(&(ts + 1).to_string()), Some(&sig), body, now, w).is_err());
        assert!(verify_doorbell(secret, None, Some(&sig), body, now, w).is_err());
        assert!(verify_doorbell(secret, Some(&t), None, body, now, w).is_err());
        assert!(verify_doorbell(secret, Some(&t), Some(&sig[7..]), body, now, w).is_err(), "prefix required");
        // Signed correctly but too old or too far ahead.
        let old = ts - 301;
        let e = verify_doorbell(secret, Some(&old.to_string()), Some(&sign_doorbell(secret, old, body)), body, now, w);
        assert_eq!(e, Err(DoorbellError::Stale(301, 300)));
        let ahead = ts + 301;
        let e =
            verify_doorbell(secret, Some(&ahead.to_string()), Some(&sign_doorbell(secret, ahead, body)), body, now, w);
        assert_eq!(e, Err(DoorbellError::Stale(-301, 300)));
    }
}
