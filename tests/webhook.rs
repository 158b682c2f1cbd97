//! The webhook handler driven with the documented payloads: the validation handshake, batches of
//! notifications with good and forged `clientState`, duplicates, lifecycle events, the signed doorbell,
//! health, and every way a request can be wrong. Each answer's status is checked, and so is the queue.

mod webhook_support;

use std::time::Duration;

use secmon::intake::Message;
use secmon::intake::http::HttpRequest;
use secmon::intake::subscriptions::{Needs, SubscriptionRecord};
use secmon::intake::webhook::sign_doorbell;
use secmon::store::keys;
use serde_json::{Value, json};
use webhook_support::*;

const MAILBOX: &str = "users/alerts@contoso.com/mailFolders('inbox')/messages";
const CONTOSO_ID: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";

fn harness() -> Harness {
    Harness::new(load_config(&config_yaml("https://secmon.example.net")))
}

async fn seed(h: &Harness, tenant: &str, id: &str, resource: &str, client_state: &str) -> SubscriptionRecord {
    let record = SubscriptionRecord {
        id: id.into(),
        tenant: tenant.into(),
        resource: resource.into(),
        change_type: "created".into(),
        expiration: t0() + chrono::Duration::days(6),
        client_state: client_state.into(),
        notification_url: "https://secmon.example.net/api/graph-webhook".into(),
        created: t0(),
        needs: None,
    };
    h.app.store.put(&keys::subscription(tenant, id), &serde_json::to_vec(&record).unwrap()).await.unwrap();
    record
}

fn item(sub: &str, client_state: Option<&str>, tenant_id: &str) -> Value {
    let mut v = json!({
        "subscriptionId": sub,
        "subscriptionExpirationDateTime": "2026-12-01T12:00:00Z",
        "changeType": "created",
        "resource": "Users/1a2b/Messages/AAMkAD",
        "tenantId": tenant_id,
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": "AAMkAD"}
    });
    if let Some(cs) = client_state {
        v["clientState"] = json!(cs);
    }
    v
}

#[tokio::test]
async fn validation_handshake_echoes_the_token_as_plain_text_on_both_routes() {
    let h = harness();
    for function in ["graph-webhook", "graph-lifecycle"] {
        let token = "Validation: Testing client application reachability <script>alert(1)</script> +&=/%?";
        let req = post(Some("text/plain; charset=utf-8"), &[("validationToken", token), ("code", "K")], "");
        let resp = h.handle(function, req).await;
        assert_eq!(resp.status, 200, "{function}");
        assert_eq!(resp.content_type, "text/plain");
        assert_eq!(resp.body, token, "echoed exactly, never escaped into HTML");
        assert_eq!(header(&resp, "X-Content-Type-Options"), Some("nosniff"));
    }
    // A body on the handshake is ignored; an oversize token is refused.
    let req = post(Some("application/json"), &[("validationToken", "abc")], "not json at all");
    assert_eq!(h.handle("graph-webhook", req).await.body, "abc");
    let long = "x".repeat(1025);
    let resp = h.handle("graph-webhook", post(None, &[("validationToken", &long)], "")).await;
    assert_eq!(resp.status, 400);
    assert!(h.queued().await.is_empty());
}

#[tokio::test]
async fn the_documented_notification_queues_one_poll_of_its_tenant() {
    let h = harness();
    seed(&h, "contoso", "{subscription_guid}", MAILBOX, "secretClientValue").await;
    let body = sample("change-notification-webhook.json");
    let resp = h.handle("graph-webhook", post(Some("application/json"), &[], body)).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert_eq!(h.queued().await, vec![Message::Poll { tenant: "contoso".into(), reason: MAILBOX.into() }]);
}

#[tokio::test]
async fn a_mixed_batch_queues_only_what_its_secret_proves() {
    let h = harness();
    seed(&h, "contoso", "sub-c", MAILBOX, "contoso-secret-0123456789abcdefghijklmnopq").await;
    seed(&h, "fabrikam", "sub-f", "users/soc@fabrikam.com/messages", "fabrikam-secret-0123456789abcdefghijklmnop")
        .await;
    let body = json!({"value": [
        item("sub-c", Some("forged"), CONTOSO_ID),
        item("sub-c", None, CONTOSO_ID),
        item("sub-c", Some("contoso-secret-0123456789abcdefghijklmnopq"), "00000000-0000-0000-0000-00000000bad0"),
        item("unknown-sub", Some("contoso-secret-0123456789abcdefghijklmnopq"), CONTOSO_ID),
        item("sub-f", Some("contoso-secret-0123456789abcdefghijklmnopq"), "anything"),
        json!("not an object"),
        item("sub-f", Some("fabrikam-secret-0123456789abcdefghijklmnop"), "any-tenant-id"),
    ]});
    let resp = h.handle("graph-webhook", json_post(&body)).await;
    assert_eq!(resp.status, 202);
    let counts: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(counts["received"], 7);
    assert_eq!(counts["accepted"], 1);
    assert_eq!(counts["rejected"], 6, "forged, missing, wrong tenant, unknown, another's secret, malformed");
    let queued = h.queued().await;
    assert_eq!(
        queued,
        vec![Message::Poll { tenant: "fabrikam".into(), reason: "users/soc@fabrikam.com/messages".into() }]
    );
}

#[tokio::test]
async fn duplicates_ring_once_per_tenant_while_a_poll_is_pending_and_again_once_it_runs() {
    let h = harness();
    let secret = "contoso-secret-0123456789abcdefghijklmnopq";
    seed(&h, "contoso", "sub-c", MAILBOX, secret).await;
    seed(&h, "contoso", "sub-c2", "users/other@contoso.com/messages", "second-secret-0123456789abcdefghijklmnopqr")
        .await;
    let body = json!({"value": [
        item("sub-c", Some(secret), CONTOSO_ID),
        item("sub-c", Some(secret), CONTOSO_ID),
        item("sub-c2", Some("second-secret-0123456789abcdefghijklmnopqr"), CONTOSO_ID),
        item("sub-c", Some(secret), CONTOSO_ID),
    ]});
    let resp = h.handle("graph-webhook", json_post(&body)).await;
    assert_eq!(resp.status, 202);
    assert_eq!(h.queued().await.len(), 1, "one pending poll per tenant, whatever the batch holds");
    // Graph retrying the same batch while that poll waits: it answers the retry too.
    assert_eq!(h.handle("graph-webhook", json_post(&body)).await.status, 202);
    assert_eq!(h.queued().await.len(), 1);
    // Once the poll has started, a ring needs a poll after it: exactly one follow-up.
    secmon::intake::coalesce::begin(&h.app, "contoso", h.app.clock.now()).await.unwrap();
    assert_eq!(h.handle("graph-webhook", json_post(&body)).await.status, 202);
    assert_eq!(h.handle("graph-webhook", json_post(&body)).await.status, 202);
    assert_eq!(h.queued().await.len(), 2);
    let slot = secmon::intake::coalesce::load(&h.app, "contoso").await.unwrap();
    assert_eq!(
        slot.coalesced, 6,
        "two rings a batch (one per subscription), all but the first of each pending poll coalesced"
    );
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_queue_nothing() {
    let h = harness();
    seed(&h, "contoso", "{subscription_guid}", MAILBOX, "secretClientValue").await;
    let good = sample("change-notification-webhook.json");
    let mut oversize = good.clone();
    oversize.extend(std::iter::repeat_n(b' ', 1024 * 1024));
    let cases: Vec<(&str, HttpRequest, u16)> = vec![
        ("oversize", post(Some("application/json"), &[], oversize), 413),
        ("invalid JSON", post(Some("application/json"), &[], "{\"value\": ["), 400),
        ("invalid UTF-8", post(Some("application/json"), &[], b"{\"value\": [\"\xff\xfe\"]}".to_vec()), 400),
        ("not a batch", post(Some("application/json"), &[], "{\"values\": []}"), 400),
        ("form content type", post(Some("application/x-www-form-urlencoded"), &[], good.clone()), 415),
        ("no content type", post(None, &[], good.clone()), 415),
        ("GET", HttpRequest { method: "GET".into(), ..Default::default() }, 405),
    ];
    for (what, req, want) in cases {
        let resp = h.handle("graph-webhook", req).await;
        assert_eq!(resp.status, want, "{what}: {}", resp.body);
        assert!(!resp.body.contains("<"), "{what}: nothing of the request is reflected as markup");
    }
    assert_eq!(h.handle("no-such-function", post(None, &[], "")).await.status, 404);
    assert!(h.queued().await.is_empty());
}

#[tokio::test]
async fn a_queue_failure_answers_503_so_graph_retries() {
    let h = Harness::with_broken_queue(load_config(&config_yaml("https://secmon.example.net")), None);
    seed(&h, "contoso", "{subscription_guid}", MAILBOX, "secretClientValue").await;
    let resp = h
        .handle("graph-webhook", post(Some("application/json"), &[], sample("change-notification-webhook.json")))
        .await;
    assert_eq!(resp.status, 503);
    assert!(header(&resp, "Retry-After").is_some());
}

#[tokio::test]
async fn a_request_past_the_time_limit_answers_503() {
    let mut config = load_config(&config_yaml("https://secmon.example.net"));
    config.webhook.time_limit = Duration::from_millis(200);
    let h = Harness::with_broken_queue(config, Some(Duration::from_secs(30)));
    seed(&h, "contoso", "{subscription_guid}", MAILBOX, "secretClientValue").await;
    let resp = h
        .handle("graph-webhook", post(Some("application/json"), &[], sample("change-notification-webhook.json")))
        .await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(resp.body.contains("200ms"), "{}", resp.body);
}

fn lifecycle(sub: &str, secret: &str, event: &str) -> Value {
    json!({"value": [{
        "subscriptionId": sub,
        "subscriptionExpirationDateTime": "2026-12-01T12:00:00Z",
        "tenantId": CONTOSO_ID,
        "clientState": secret,
        "lifecycleEvent": event
    }]})
}

async fn stored(h: &Harness, tenant: &str, id: &str) -> Option<SubscriptionRecord> {
    let v = h.app.store.get(&keys::subscription(tenant, id)).await.unwrap()?;
    Some(serde_json::from_slice(&v.value).unwrap())
}

#[tokio::test]
async fn lifecycle_missed_queues_a_catch_up_poll() {
    let h = harness();
    let secret = "contoso-secret-0123456789abcdefghijklmnopq";
    seed(&h, "contoso", "sub-c", MAILBOX, secret).await;
    let resp = h.handle("graph-lifecycle", json_post(&lifecycle("sub-c", secret, "missed"))).await;
    assert_eq!(resp.status, 202);
    assert_eq!(h.queued().await, vec![Message::Poll { tenant: "contoso".into(), reason: "lifecycle:missed".into() }]);
    assert!(h.graph.calls().is_empty(), "missed needs no Graph call");
}

#[tokio::test]
async fn lifecycle_reauthorization_reauthorizes_or_renews() {
    let h = harness();
    let secret = "contoso-secret-0123456789abcdefghijklmnopq";
    h.graph.insert("contoso", json!({"id": "sub-c", "resource": MAILBOX}));
    seed(&h, "contoso", "sub-c", MAILBOX, secret).await;
    let resp = h.handle("graph-lifecycle", json_post(&lifecycle("sub-c", secret, "reauthorizationRequired"))).await;
    assert_eq!(resp.status, 202);
    assert_eq!(h.graph.calls(), vec!["reauthorize contoso"]);
    assert_eq!(stored(&h, "contoso", "sub-c").await.unwrap().needs, None);
    assert!(h.queued().await.is_empty());

    // When reauthorize fails, a renewal does the same job.
    h.graph.fail("reauthorize", 400);
    let resp = h.handle("graph-lifecycle", json_post(&lifecycle("sub-c", secret, "reauthorizationRequired"))).await;
    assert_eq!(resp.status, 202);
    assert_eq!(h.graph.calls()[1..], ["reauthorize contoso", "renew contoso"]);
    assert_eq!(stored(&h, "contoso", "sub-c").await.unwrap().needs, None);

    // When Graph is down, the mark stays for the timer, and the answer is still 202.
    h.graph.fail("renew", 503);
    let resp = h.handle("graph-lifecycle", json_post(&lifecycle("sub-c", secret, "reauthorizationRequired"))).await;
    assert_eq!(resp.status, 202);
    assert_eq!(stored(&h, "contoso", "sub-c").await.unwrap().needs, Some(Needs::Reauthorize));
}

#[tokio::test]
async fn lifecycle_removal_recreates_the_subscription_and_polls() {
    let h = harness();
    let secret = "contoso-secret-0123456789abcdefghijklmnopq";
    seed(&h, "contoso", "sub-c", MAILBOX, secret).await;
    let resp = h.handle("graph-lifecycle", json_post(&lifecycle("sub-c", secret, "subscriptionRemoved"))).await;
    assert_eq!(resp.status, 202);
    assert_eq!(
        h.queued().await,
        vec![Message::Poll { tenant: "contoso".into(), reason: "lifecycle:subscriptionRemoved".into() }]
    );
    assert!(stored(&h, "contoso", "sub-c").await.is_none(), "the removed subscription's record is gone");
    let ids = h.graph.ids("contoso");
    assert_eq!(ids.len(), 1, "a replacement was created");
    let new = stored(&h, "contoso", &ids[0]).await.expect("and stored");
    assert_ne!(new.client_state, secret, "with a fresh secret");
    assert_eq!(new.resource, MAILBOX);
}

#[tokio::test]
async fn forged_lifecycle_events_do_nothing() {
    let h = harness();
    seed(&h, "contoso", "sub-c", MAILBOX, "contoso-secret-0123456789abcdefghijklmnopq").await;
    for event in ["subscriptionRemoved", "reauthorizationRequired", "missed"] {
        let resp = h.handle("graph-lifecycle", json_post(&lifecycle("sub-c", "guessed", event))).await;
        assert_eq!(resp.status, 202);
    }
    assert!(h.queued().await.is_empty());
    assert!(h.graph.calls().is_empty());
    assert_eq!(stored(&h, "contoso", "sub-c").await.unwrap().needs, None);
}

#[tokio::test]
async fn a_notification_during_creation_is_recognised_by_its_pending_secret() {
    let h = harness();
    let pending = json!({"tenant": "contoso", "resource": MAILBOX, "client_state": "pending-secret-0123456789abcdefghijklmno",
        "started": "2026-11-26T12:00:00Z"});
    h.app.store.put("subscriptions/contoso/pending-1", pending.to_string().as_bytes()).await.unwrap();
    let body = json!({"value": [item("brand-new-id", Some("pending-secret-0123456789abcdefghijklmno"), CONTOSO_ID)]});
    assert_eq!(h.handle("graph-webhook", json_post(&body)).await.status, 202);
    assert_eq!(h.queued().await, vec![Message::Poll { tenant: "contoso".into(), reason: MAILBOX.into() }]);
}

fn doorbell(body: &str, ts: i64, secret: &str) -> HttpRequest {
    let mut req = post(Some("application/json"), &[], body);
    req.headers.insert("x-secmon-timestamp".into(), ts.to_string());
    req.headers.insert("x-secmon-signature".into(), sign_doorbell(secret.as_bytes(), ts, body.as_bytes()));
    req
}

#[tokio::test]
async fn the_doorbell_queues_polls_and_lookups_once_per_signature() {
    let h = harness();
    let ts = t0().timestamp();
    let poll = doorbell(r#"{"tenant":"contoso"}"#, ts, DOORBELL_SECRET);
    assert_eq!(h.handle("doorbell", poll.clone()).await.status, 202);
    assert_eq!(h.handle("doorbell", poll).await.status, 409, "a replay inside the window");
    let lookup = doorbell(
        &format!(r#"{{"tenant":"{CONTOSO_ID}","alert_id":"da637551227677560813_-961444813"}}"#),
        ts,
        DOORBELL_SECRET,
    );
    assert_eq!(h.handle("doorbell", lookup).await.status, 202, "a tenant may be named by its id");
    assert_eq!(
        h.queued().await,
        vec![
            Message::Poll { tenant: "contoso".into(), reason: "doorbell".into() },
            Message::Lookup { tenant: "contoso".into(), alert_id: "da637551227677560813_-961444813".into() },
        ]
    );
}

#[tokio::test]
async fn the_doorbell_refuses_what_it_cannot_trust() {
    let h = harness();
    let ts = t0().timestamp();
    let body = r#"{"tenant":"contoso"}"#;
    let mut unsigned = post(Some("application/json"), &[], body);
    unsigned.headers.insert("x-secmon-timestamp".into(), ts.to_string());
    let mut tampered = doorbell(body, ts, DOORBELL_SECRET);
    tampered.body = br#"{"tenant":"fabrikam"}"#.to_vec();
    let mut text = doorbell(body, ts, DOORBELL_SECRET);
    text.headers.insert("content-type".into(), "text/plain".into());
    let cases: Vec<(&str, HttpRequest, u16)> = vec![
        ("unsigned", unsigned, 401),
        ("wrong key", doorbell(body, ts, "not-the-doorbell-secret"), 401),
        ("tampered body", tampered, 401),
        ("too old", doorbell(body, ts - 301, DOORBELL_SECRET), 401),
        ("from the future", doorbell(body, ts + 301, DOORBELL_SECRET), 401),
        ("unknown tenant", doorbell(r#"{"tenant":"initech"}"#, ts, DOORBELL_SECRET), 422),
        ("bad alert id", doorbell(r#"{"tenant":"contoso","alert_id":"../x"}"#, ts, DOORBELL_SECRET), 422),
        // `..` as a path segment would fetch the whole alert collection.
        ("dot-dot alert id", doorbell(r#"{"tenant":"contoso","alert_id":".."}"#, ts, DOORBELL_SECRET), 422),
        ("dot alert id", doorbell(r#"{"tenant":"contoso","alert_id":"."}"#, ts, DOORBELL_SECRET), 422),
        ("unknown field", doorbell(r#"{"tenant":"contoso","x":1}"#, ts, DOORBELL_SECRET), 400),
        ("not JSON", doorbell("tenant=contoso", ts, DOORBELL_SECRET), 400),
        ("text/plain", text, 415),
        ("oversize", doorbell(&format!(r#"{{"tenant":"{}"}}"#, "c".repeat(20_000)), ts, DOORBELL_SECRET), 413),
    ];
    for (what, req, want) in cases {
        let resp = h.handle("doorbell", req).await;
        assert_eq!(resp.status, want, "{what}: {}", resp.body);
    }
    assert!(h.queued().await.is_empty());

    let mut config = load_config(&config_yaml("https://secmon.example.net"));
    config.webhook.doorbell_secret = None;
    let off = Harness::new(config);
    assert_eq!(off.handle("doorbell", doorbell(body, ts, DOORBELL_SECRET)).await.status, 404);
}

#[tokio::test]
async fn a_doorbell_that_could_not_be_queued_can_be_retried_with_the_same_signature() {
    let h = Harness::with_broken_queue(load_config(&config_yaml("https://secmon.example.net")), None);
    let req = doorbell(r#"{"tenant":"contoso"}"#, t0().timestamp(), DOORBELL_SECRET);
    assert_eq!(h.handle("doorbell", req.clone()).await.status, 503);
    assert_eq!(h.handle("doorbell", req).await.status, 503, "not 409: the signature was given back");
}

#[tokio::test]
async fn health_reports_each_tenants_last_poll_and_503_when_stale() {
    let h = harness();
    let get = || HttpRequest { method: "GET".into(), ..Default::default() };
    let resp = h.handle("health", get()).await;
    assert_eq!(resp.status, 503, "never polled is not healthy");
    let fresh = json!({"last_success": "2026-11-26T11:55:00Z"}).to_string();
    h.app.store.put("health/contoso", fresh.as_bytes()).await.unwrap();
    h.app.store.put("health/fabrikam", fresh.as_bytes()).await.unwrap();
    let resp = h.handle("health", get()).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let body: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["tenants"][0]["seconds_since_success"], 300);
    h.clock.advance(chrono::Duration::minutes(31));
    let resp = h.handle("health", get()).await;
    assert_eq!(resp.status, 503);
    assert_eq!(h.handle("health", post(None, &[], "")).await.status, 405);
}
