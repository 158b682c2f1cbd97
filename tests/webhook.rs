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
        url_fingerprint: None,
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
    let marker = secmon::intake::subscriptions::mark_creating(h.app.store.as_ref(), "contoso", t0()).await.unwrap();
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
    secmon::intake::subscriptions::unmark_creating(h.app.store.as_ref(), "contoso", &marker).await;
}

#[tokio::test]
async fn validation_is_answered_only_while_a_subscription_is_being_created() {
    let h = harness();
    let token = "Validation: Testing client application reachability";
    let handshake = |function: &'static str| {
        let req = post(Some("text/plain; charset=utf-8"), &[("validationToken", token)], "");
        let h = &h;
        async move { h.handle(function, req).await }
    };
    // Nobody is creating: refused, nothing echoed.
    for function in ["graph-webhook", "graph-lifecycle"] {
        let resp = handshake(function).await;
        assert_eq!(resp.status, 403, "{function}");
        assert!(!resp.body.contains("Validation"), "{}", resp.body);
    }
    // Another instance (the worker) marks a creation in the shared store: answered on both URLs.
    let worker = h.app.with_config((*h.app.config).clone()).unwrap();
    let marker = secmon::intake::subscriptions::mark_creating(worker.store.as_ref(), "fabrikam", t0()).await.unwrap();
    assert!(marker.starts_with("subscription-creating/fabrikam/"), "{marker}");
    for function in ["graph-webhook", "graph-lifecycle"] {
        let resp = handshake(function).await;
        assert_eq!((resp.status, resp.body.as_str()), (200, token), "{function}");
    }
    // Graph validates within 10 s; a marker left behind by a crash stops counting after its window.
    h.clock.advance(chrono::Duration::seconds(secmon::intake::subscriptions::CREATING_WINDOW_SECONDS));
    assert_eq!(handshake("graph-webhook").await.status, 403);
    h.clock.set(t0());
    secmon::intake::subscriptions::unmark_creating(worker.store.as_ref(), "fabrikam", &marker).await;
    assert_eq!(handshake("graph-webhook").await.status, 403, "removed when the create is answered");

    // A whole sync leaves no marker behind, and a stale one is removed by the next sync.
    let stale = secmon::intake::subscriptions::mark_creating(
        h.app.store.as_ref(),
        "contoso",
        t0() - chrono::Duration::minutes(10),
    )
    .await
    .unwrap();
    secmon::intake::subscriptions::sync(&h.app, t0()).await;
    assert_eq!(h.app.store.list(keys::SUBSCRIPTION_CREATING).await.unwrap(), Vec::<String>::new(), "{stale}");
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

const FABRIKAM_KEY: &str = "fabrikam-own-doorbell-key-0123";

#[tokio::test]
async fn a_tenant_with_its_own_doorbell_key_rings_only_with_it() {
    let mut config = load_config(&config_yaml("https://secmon.example.net"));
    config.webhook.doorbell_secrets.insert("fabrikam".into(), FABRIKAM_KEY.into());
    let h = Harness::new(config);
    let ts = t0().timestamp();
    let fabrikam = r#"{"tenant":"fabrikam"}"#;
    let contoso = r#"{"tenant":"contoso"}"#;
    let cases = [
        ("fabrikam with the shared key", doorbell(fabrikam, ts, DOORBELL_SECRET), 401),
        ("contoso with fabrikam's key", doorbell(contoso, ts, FABRIKAM_KEY), 401),
        (
            "fabrikam by id with contoso's shared key",
            doorbell(r#"{"tenant":"FABRIKAM.onmicrosoft.com"}"#, ts, DOORBELL_SECRET),
            401,
        ),
        ("fabrikam with its own key", doorbell(fabrikam, ts, FABRIKAM_KEY), 202),
        ("contoso falls back to the shared key", doorbell(contoso, ts, DOORBELL_SECRET), 202),
        // The alert id is still validated behind a tenant's own key.
        ("dot-dot alert id", doorbell(r#"{"tenant":"fabrikam","alert_id":".."}"#, ts, FABRIKAM_KEY), 422),
    ];
    for (what, req, want) in cases {
        let resp = h.handle("doorbell", req).await;
        assert_eq!(resp.status, want, "{what}: {}", resp.body);
    }
    assert_eq!(
        h.queued().await,
        vec![
            Message::Poll { tenant: "fabrikam".into(), reason: "doorbell".into() },
            Message::Poll { tenant: "contoso".into(), reason: "doorbell".into() },
        ]
    );

    // Only per-tenant keys: a tenant without one, or a tenant that does not exist, is refused unsigned-alike
    // (401, never 422), so a caller without a key learns nothing about the tenants.
    let mut config = load_config(&config_yaml("https://secmon.example.net"));
    config.webhook.doorbell_secret = None;
    config.webhook.doorbell_secrets.insert("fabrikam".into(), FABRIKAM_KEY.into());
    let only = Harness::new(config);
    for (what, body, key) in [
        ("contoso has no key", contoso, DOORBELL_SECRET),
        ("unknown tenant", r#"{"tenant":"initech"}"#, FABRIKAM_KEY),
        ("not JSON", "tenant=fabrikam", FABRIKAM_KEY),
    ] {
        let resp = only.handle("doorbell", doorbell(body, ts, key)).await;
        assert_eq!(resp.status, 401, "{what}: {}", resp.body);
        assert!(!resp.body.contains("initech") && !resp.body.contains("tenant"), "{what}: {}", resp.body);
    }
    assert_eq!(only.handle("doorbell", doorbell(fabrikam, ts, FABRIKAM_KEY)).await.status, 202);
}

#[tokio::test]
async fn per_tenant_doorbell_keys_are_checked_at_load_and_masked() {
    let yaml = format!(
        "{}  doorbell_secrets:\n    fabrikam: \"${{DOORBELL}}\"\n    initech: short\n",
        config_yaml("https://secmon.example.net")
    );
    let env = |k: &str| match k {
        "FUNCTION_KEY" => Some("FUNCTIONKEY-abc123==".to_string()),
        "DOORBELL" => Some(DOORBELL_SECRET.to_string()),
        _ => None,
    };
    let err = secmon::setup::load_str(&yaml, std::path::Path::new("test.yaml"), &env, t0()).unwrap_err().to_string();
    assert!(
        err.contains("webhook.doorbell_secrets.fabrikam") && err.contains("the same key as doorbell_secret"),
        "{err}"
    );
    assert!(err.contains("webhook.doorbell_secrets.initech") && err.contains("not a configured tenant"), "{err}");
    assert!(err.contains("at least 16 characters"), "{err}");
    assert!(!err.contains(DOORBELL_SECRET), "{err}");
    let mut config = load_config(&config_yaml("https://secmon.example.net"));
    config.webhook.doorbell_secrets.insert("fabrikam".into(), FABRIKAM_KEY.into());
    let _h = Harness::new(config);
    assert_eq!(secmon::redact::redact(&format!("key {FABRIKAM_KEY}")), "key ***", "registered when the App is built");
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
    let status = |resp: &secmon::intake::http::HttpResponse| -> Value { serde_json::from_str(&resp.body).unwrap() };
    // Just started, never polled, nothing failed: starting, and 200 so a load balancer keeps the instance.
    let resp = h.handle("health", get()).await;
    assert_eq!((resp.status, status(&resp)), (200, json!({"status": "starting"})));
    let fresh = json!({"last_success": "2026-11-26T11:55:00Z"}).to_string();
    h.app.store.put("health/contoso", fresh.as_bytes()).await.unwrap();
    h.app.store.put("health/fabrikam", fresh.as_bytes()).await.unwrap();
    // The anonymous answer is cached for health.cache_for (10 s): the store is not read again yet.
    assert_eq!(status(&h.handle("health", get()).await), json!({"status": "starting"}));
    h.clock.advance(chrono::Duration::seconds(10));
    let resp = h.handle("health", get()).await;
    assert_eq!(
        (resp.status, status(&resp)),
        (200, json!({"status": "up"})),
        "only up or down, no tenant: {}",
        resp.body
    );
    h.clock.advance(chrono::Duration::minutes(31));
    let resp = h.handle("health", get()).await;
    assert_eq!((resp.status, status(&resp)), (503, json!({"status": "down"})));
    assert_eq!(h.handle("health", post(None, &[], "")).await.status, 405);
}

fn bearer(token: &str) -> HttpRequest {
    let mut req = HttpRequest { method: "GET".into(), ..Default::default() };
    req.headers.insert("authorization".into(), format!("Bearer {token}"));
    req
}

#[tokio::test]
async fn health_details_need_the_function_key_or_the_token_and_redact_errors() {
    use secmon::functions::{Gate, http_behind};
    const TOKEN: &str = "health-token-0123456789abcdef";
    let h = harness();
    let failing = json!({"last_attempt": "2026-11-26T11:59:00Z", "last_error": "401 from login: client secret FUNCTIONKEY-abc123== was refused",
        "consecutive_failures": 3, "first_attempt": "2026-11-26T11:00:00Z"}).to_string();
    h.app.store.put("health/contoso", failing.as_bytes()).await.unwrap();
    let anonymous = HttpRequest { method: "GET".into(), ..Default::default() };

    // Anonymous: one word, no tenant, no error (a failing tenant makes it down at once, starting or not).
    let resp = http_behind(&h.app, "health", anonymous.clone(), Gate::Open).await;
    assert_eq!((resp.status, resp.body.as_str()), (503, r#"{"status":"down"}"#));

    // Standalone / AWS without health.token: the details do not exist.
    assert_eq!(http_behind(&h.app, "health-details", anonymous.clone(), Gate::Open).await.status, 404);
    // Azure: the host checked the function key (authLevel function), so the details are given.
    let resp = http_behind(&h.app, "health-details", anonymous.clone(), Gate::FunctionKey).await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    let body: Value = serde_json::from_str(&resp.body).unwrap();
    assert_eq!(body["status"], "down");
    assert_eq!(
        (body["tenants"][0]["tenant"].as_str(), body["tenants"][0]["state"].as_str()),
        (Some("contoso"), Some("down"))
    );
    assert_eq!(body["tenants"][1]["state"], "starting", "fabrikam has not polled yet");
    assert!(body["tenants"][0]["last_error"].as_str().unwrap().contains("401 from login"));
    assert!(!resp.body.contains("FUNCTIONKEY-abc123=="), "errors are redacted: {}", resp.body);

    // With health.token: required everywhere, with or without the function key.
    let mut config = (*h.app.config).clone();
    config.health.token = Some(TOKEN.into());
    let app = h.app.with_config(config).unwrap();
    for gate in [Gate::Open, Gate::FunctionKey] {
        assert_eq!(http_behind(&app, "health-details", anonymous.clone(), gate).await.status, 401, "{gate:?}");
        assert_eq!(
            http_behind(&app, "health-details", bearer("health-token-0123456789abcdeX"), gate).await.status,
            401
        );
        let resp = http_behind(&app, "health-details", bearer(TOKEN), gate).await;
        assert_eq!(resp.status, 503, "{gate:?}: {}", resp.body);
        assert!(resp.body.contains("\"tenants\""), "{}", resp.body);
    }
    let resp = http_behind(&app, "health-details", bearer(TOKEN), Gate::Open).await;
    assert_eq!(header(&resp, "Cache-Control"), Some("no-store"), "details are never cached by a proxy");
}

#[tokio::test]
async fn after_the_start_grace_a_tenant_that_never_polled_is_down() {
    let h = harness();
    let get = HttpRequest { method: "GET".into(), ..Default::default() };
    assert_eq!(h.handle("health", get.clone()).await.status, 200);
    h.clock.advance(chrono::Duration::minutes(10));
    let resp = h.handle("health", get).await;
    assert_eq!((resp.status, resp.body.as_str()), (503, r#"{"status":"down"}"#));
    // A restart (a new App on the same store) starts a new grace: old records of a stopped secmon are not failures.
    let old = json!({"last_success": "2026-11-26T10:00:00Z", "last_attempt": "2026-11-26T10:00:00Z"}).to_string();
    h.app.store.put("health/contoso", old.as_bytes()).await.unwrap();
    h.app.store.put("health/fabrikam", old.as_bytes()).await.unwrap();
    let restarted = secmon::app::App::builder((*h.app.config).clone())
        .store(h.store.clone())
        .queue(h.store.clone())
        .graph(h.graph.clone())
        .clock(h.clock.clone())
        .build()
        .unwrap();
    let s = secmon::intake::health::status(&restarted, restarted.clock.now()).await.unwrap();
    assert_eq!(s.status, secmon::intake::health::State::Starting);
    assert!(!s.healthy, "`secmon status` stays strict: nobody is up yet");
}
