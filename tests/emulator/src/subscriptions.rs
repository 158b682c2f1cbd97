//! `/v1.0/subscriptions` with Graph's validation handshake, plus outgoing change and lifecycle notifications.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::state::{AppState, Shared, Subscription, fmt_time, graph_error, json_response, parse_time, random_string};

/// Graph waits this long for the validation answer.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum lifetime of an Outlook message subscription, in minutes.
const MAX_MINUTES_MESSAGES: i64 = 10_080;
/// Maximum lifetime used for every other resource, in minutes.
const MAX_MINUTES_OTHER: i64 = 4230;
const MAX_CLIENT_STATE: usize = 128;

/// The outcome of one notification POST made by the emulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The subscription the notification was for.
    pub subscription_id: String,
    /// Where it was posted.
    pub url: String,
    /// The receiver's status, or `None` when the request failed (connection error, timeout).
    pub status: Option<u16>,
}

fn invalid(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

/// Notification URLs must be https; plain http is allowed for loopback receivers in tests.
fn check_url(field: &str, raw: &str) -> Result<(), Response> {
    let url = url::Url::parse(raw).map_err(|_| invalid(&format!("'{field}' must be an absolute URL.")))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
        Ok(())
    } else {
        Err(invalid(&format!("'{field}' must use https.")))
    }
}

/// Whether a resource is an Outlook message collection (which allows the longer lifetime).
fn is_messages_resource(resource: &str) -> bool {
    let r = resource.trim_start_matches('/').to_ascii_lowercase();
    (r.starts_with("users/") || r.starts_with("me/")) && r.ends_with("/messages")
}

/// Checks an expiration time against now and the resource's maximum lifetime.
fn check_expiry(raw: Option<&Value>, resource: &str, now: DateTime<Utc>) -> Result<String, Response> {
    let at = raw
        .and_then(Value::as_str)
        .and_then(parse_time)
        .ok_or_else(|| invalid("'expirationDateTime' is required and must be an ISO 8601 date-time."))?;
    let max = if is_messages_resource(resource) { MAX_MINUTES_MESSAGES } else { MAX_MINUTES_OTHER };
    if at <= now {
        return Err(invalid("Subscription expiration can only be in the future."));
    }
    if at > now + chrono::Duration::minutes(max) {
        return Err(invalid(&format!("Subscription expiration can only be {max} minutes in the future.")));
    }
    Ok(fmt_time(at))
}

/// Graph's handshake: POST `{url}?validationToken=…` and expect the decoded token back as text/plain.
async fn validate_endpoint(state: &Shared, url: &str) -> Result<(), String> {
    // Real tokens read like this one; the symbols make a wrongly decoded token fail.
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {} +&=/%?",
        uuid::Uuid::new_v4()
    );
    let mut target = url::Url::parse(url).map_err(|e| e.to_string())?;
    target.query_pairs_mut().append_pair("validationToken", &token);
    let resp = state
        .http
        .post(target)
        .header("content-type", "text/plain; charset=utf-8")
        .timeout(VALIDATION_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("the validation request failed: {e}"))?;
    let status = resp.status().as_u16();
    let content_type =
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("the endpoint answered {status}, not 200"));
    }
    if !content_type.starts_with("text/plain") {
        return Err(format!("the endpoint answered Content-Type '{content_type}', not text/plain"));
    }
    if body != token {
        return Err("the endpoint did not echo the decoded validationToken".into());
    }
    Ok(())
}

/// `POST /v1.0/subscriptions`.
pub(crate) async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let token = match state.authenticate(&headers) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Unable to read JSON request payload.");
    };
    let text = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(change_type) = text("changeType") else {
        return invalid("'changeType' is required.");
    };
    if change_type.split(',').any(|c| !["created", "updated", "deleted"].contains(&c.trim())) {
        return invalid(&format!("'{change_type}' is not a valid changeType."));
    }
    let Some(notification_url) = text("notificationUrl") else {
        return invalid("'notificationUrl' is required.");
    };
    if let Err(e) = check_url("notificationUrl", &notification_url) {
        return e;
    }
    let lifecycle_url = text("lifecycleNotificationUrl");
    if let Some(Err(e)) = lifecycle_url.as_deref().map(|u| check_url("lifecycleNotificationUrl", u)) {
        return e;
    }
    let Some(resource) = text("resource").filter(|r| !r.is_empty()) else {
        return invalid("'resource' is required.");
    };
    if resource.starts_with("http://") || resource.starts_with("https://") {
        return invalid("'resource' must be relative to the service root (no base URL).");
    }
    let expiration = match check_expiry(req.get("expirationDateTime"), &resource, state.now()) {
        Ok(e) => e,
        Err(resp) => return resp,
    };
    let Some(client_state) = text("clientState") else {
        return invalid("'clientState' is required.");
    };
    if client_state.chars().count() > MAX_CLIENT_STATE {
        return invalid("'clientState' must be at most 128 characters.");
    }
    for url in std::iter::once(&notification_url).chain(lifecycle_url.iter()) {
        if let Err(why) = validate_endpoint(&state, url).await {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                &format!(
                    "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request. ({why})"
                ),
            );
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let subscription = json!({
        "id": id,
        "resource": resource,
        "applicationId": token.client_id,
        "changeType": change_type,
        "clientState": client_state,
        "notificationUrl": notification_url,
        "notificationQueryOptions": null,
        "lifecycleNotificationUrl": lifecycle_url,
        "expirationDateTime": expiration,
        "creatorId": uuid::Uuid::new_v4().to_string(),
        "includeResourceData": req.get("includeResourceData").cloned().unwrap_or(json!(false)),
        "latestSupportedTlsVersion": req.get("latestSupportedTlsVersion").cloned().unwrap_or(json!("v1_2")),
        "encryptionCertificate": req.get("encryptionCertificate").cloned().unwrap_or(Value::Null),
        "encryptionCertificateId": req.get("encryptionCertificateId").cloned().unwrap_or(Value::Null),
        "notificationUrlAppId": null,
    });
    state.lock().subscriptions.insert(id, Subscription { tenant: token.tenant, body: subscription.clone() });
    json_response(StatusCode::CREATED, &with_context(&state, subscription, "subscriptions/$entity"))
}

fn with_context(state: &Shared, v: Value, what: &str) -> Value {
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{}/$metadata#{what}", state.graph_url())));
    if let Value::Object(fields) = v {
        body.extend(fields);
    }
    Value::Object(body)
}

fn sub_not_found(id: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("The object was not found. Subscription '{id}' does not exist."),
    )
}

/// `GET /v1.0/subscriptions`.
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let token = match state.authenticate(&headers) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let value: Vec<Value> =
        state.lock().subscriptions.values().filter(|s| s.tenant == token.tenant).map(|s| s.body.clone()).collect();
    json_response(StatusCode::OK, &with_context(&state, json!({"value": value}), "subscriptions"))
}

/// `GET /v1.0/subscriptions/{id}`.
pub(crate) async fn get(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let token = match state.authenticate(&headers) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let found = state.lock().subscriptions.get(&id).filter(|s| s.tenant == token.tenant).map(|s| s.body.clone());
    match found {
        Some(body) => json_response(StatusCode::OK, &with_context(&state, body, "subscriptions/$entity")),
        None => sub_not_found(&id),
    }
}

/// `PATCH /v1.0/subscriptions/{id}`: renews (`expirationDateTime`).
pub(crate) async fn renew(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let token = match state.authenticate(&headers) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Unable to read JSON request payload.");
    };
    if let Some(key) = req.keys().find(|k| *k != "expirationDateTime") {
        return invalid(&format!("Property '{key}' cannot be updated; only expirationDateTime can."));
    }
    let now = state.now();
    let mut inner = state.lock();
    let Some(sub) = inner.subscriptions.get_mut(&id).filter(|s| s.tenant == token.tenant) else {
        drop(inner);
        return sub_not_found(&id);
    };
    let resource = sub.body["resource"].as_str().unwrap_or("").to_string();
    let expiration = match check_expiry(req.get("expirationDateTime"), &resource, now) {
        Ok(e) => e,
        Err(resp) => return resp,
    };
    sub.body["expirationDateTime"] = json!(expiration);
    let body = sub.body.clone();
    drop(inner);
    json_response(StatusCode::OK, &with_context(&state, body, "subscriptions/$entity"))
}

/// `DELETE /v1.0/subscriptions/{id}`.
pub(crate) async fn delete(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let token = match state.authenticate(&headers) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let mut inner = state.lock();
    if inner.subscriptions.get(&id).is_some_and(|s| s.tenant == token.tenant) {
        inner.subscriptions.remove(&id);
        StatusCode::NO_CONTENT.into_response()
    } else {
        drop(inner);
        sub_not_found(&id)
    }
}

/// `POST /v1.0/subscriptions/{id}/reauthorize`.
pub(crate) async fn reauthorize(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let token = match state.authenticate(&headers) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    if state.lock().subscriptions.get(&id).is_some_and(|s| s.tenant == token.tenant) {
        StatusCode::OK.into_response()
    } else {
        sub_not_found(&id)
    }
}

/// POSTs a JSON body the way Graph posts notifications and returns the receiver's status.
pub(crate) async fn post_json(state: &Shared, url: &str, body: &Value) -> Option<u16> {
    state
        .http
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_string())
        .timeout(VALIDATION_TIMEOUT)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// A stable GUID for a mailbox, as Graph names users by object id in notifications.
fn user_guid(mailbox: &str) -> uuid::Uuid {
    let seed = mailbox
        .to_ascii_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut bytes = [0u8; 16];
    rand::rngs::StdRng::seed_from_u64(seed).fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Stores a message in a mailbox and notifies every live subscription on that mailbox's messages.
pub(crate) async fn deliver_mail(state: &Shared, tenant: &str, mailbox: &str, subject: &str) -> Vec<Delivery> {
    let message_id = format!("AAMkAD{}", random_string(64));
    let now = state.now();
    let user = format!("{}@{}", user_guid(mailbox), tenant);
    let resource = format!("Users/{user}/Messages/{message_id}");
    let wanted = [
        format!("users/{}/mailfolders('inbox')/messages", mailbox.to_ascii_lowercase()),
        format!("users/{}/messages", mailbox.to_ascii_lowercase()),
    ];
    let targets: Vec<(String, String, Value)> = {
        let mut inner = state.lock();
        inner
            .mailboxes
            .entry((tenant.to_string(), mailbox.to_ascii_lowercase()))
            .or_default()
            .push(json!({"id": message_id, "subject": subject, "receivedDateTime": fmt_time(now)}));
        inner
            .subscriptions
            .iter()
            .filter(|(_, s)| {
                let resource = s.body["resource"].as_str().unwrap_or("").trim_start_matches('/').to_ascii_lowercase();
                let live = s.body["expirationDateTime"].as_str().and_then(parse_time).is_some_and(|t| t > now);
                let created = s.body["changeType"].as_str().unwrap_or("").split(',').any(|c| c.trim() == "created");
                s.tenant == tenant && live && created && wanted.contains(&resource)
            })
            .map(|(id, s)| {
                let body = json!({"value": [{
                    "id": random_string(13),
                    "subscriptionId": id,
                    "subscriptionExpirationDateTime": s.body["expirationDateTime"],
                    "clientState": s.body["clientState"],
                    "changeType": "created",
                    "resource": resource,
                    "tenantId": tenant,
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.Message",
                        "@odata.id": resource,
                        "@odata.etag": format!("W/\"{}\"", random_string(40)),
                        "id": message_id,
                    }
                }]});
                (id.clone(), s.body["notificationUrl"].as_str().unwrap_or("").to_string(), body)
            })
            .collect()
    };
    let mut deliveries = Vec::new();
    for (subscription_id, url, body) in targets {
        let status = post_json(state, &url, &body).await;
        deliveries.push(Delivery { subscription_id, url, status });
    }
    deliveries
}

/// Posts a lifecycle notification for a subscription to its lifecycleNotificationUrl.
pub(crate) async fn send_lifecycle(state: &Shared, subscription_id: &str, event: &str) -> anyhow::Result<Delivery> {
    let (url, body) = {
        let inner = state.lock();
        let sub = inner
            .subscriptions
            .get(subscription_id)
            .ok_or_else(|| anyhow::anyhow!("no subscription {subscription_id}"))?;
        let url = sub.body["lifecycleNotificationUrl"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("subscription {subscription_id} has no lifecycleNotificationUrl"))?
            .to_string();
        let body = json!({"value": [{
            "subscriptionId": subscription_id,
            "subscriptionExpirationDateTime": sub.body["expirationDateTime"],
            "tenantId": sub.tenant,
            "clientState": sub.body["clientState"],
            "lifecycleEvent": event,
        }]});
        (url, body)
    };
    let status = post_json(state, &url, &body).await;
    Ok(Delivery { subscription_id: subscription_id.to_string(), url, status })
}
