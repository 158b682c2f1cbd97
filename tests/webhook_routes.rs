//! The same handler behind both hosts: the Functions custom-handler route (`POST /graph-webhook` with a
//! `{"Data": {"req": ...}}` envelope) and the standalone axum routes (`POST /api/graph-webhook`) over
//! loopback; and the function key in `?code=` never reaching the logs.

mod webhook_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use secmon::intake::Message;
use secmon::intake::subscriptions::SubscriptionRecord;
use secmon::store::keys;
use serde_json::{Value, json};
use webhook_support::*;

const MAILBOX: &str = "users/alerts@contoso.com/mailFolders('inbox')/messages";

async fn seeded() -> Harness {
    let h = Harness::new(load_config(&config_yaml("https://secmon.example.net")));
    let record = SubscriptionRecord {
        id: "{subscription_guid}".into(),
        tenant: "contoso".into(),
        resource: MAILBOX.into(),
        change_type: "created".into(),
        expiration: t0() + chrono::Duration::days(6),
        client_state: "secretClientValue".into(),
        notification_url: "https://secmon.example.net/api/graph-webhook".into(),
        url_fingerprint: None,
        created: t0(),
        needs: None,
    };
    h.app.store.put(&keys::subscription("contoso", &record.id), &serde_json::to_vec(&record).unwrap()).await.unwrap();
    // A subscription is being created, so the handshakes below are answered.
    secmon::intake::subscriptions::mark_creating(h.app.store.as_ref(), "contoso", t0()).await.unwrap();
    h
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_custom_handler_route_answers_the_handshake_and_notifications() {
    let h = seeded().await;
    let base = serve(secmon::host::azure::router(h.app.clone())).await;
    let client = reqwest::Client::new();
    // The host's default HTTP mode: the request inside Data.req, Query as a map, header values as arrays.
    let handshake = json!({"Data": {"req": {
        "Url": "https://secmon.example.net/api/graph-webhook?validationToken=Validation%3a+Testing+%3Cscript%3E&code=KEY-123456",
        "Method": "POST",
        "Query": {"validationToken": "Validation: Testing <script>", "code": "KEY-123456"},
        "Headers": {"Content-Type": ["text/plain; charset=utf-8"]},
        "Body": ""
    }}, "Metadata": {}});
    let out: Value =
        client.post(format!("{base}/graph-webhook")).json(&handshake).send().await.unwrap().json().await.unwrap();
    let res = &out["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200);
    assert_eq!(res["body"], "Validation: Testing <script>");
    assert_eq!(res["headers"]["Content-Type"], "text/plain");
    assert_eq!(res["headers"]["X-Content-Type-Options"], "nosniff");

    let body = String::from_utf8(sample("change-notification-webhook.json")).unwrap();
    let notification = json!({"Data": {"req": {
        "Url": "https://secmon.example.net/api/graph-webhook?code=KEY-123456",
        "Method": "POST",
        "Query": "{\"code\":\"KEY-123456\"}",
        "Headers": {"Content-Type": ["application/json; charset=utf-8"]},
        "Body": body
    }}, "Metadata": {}});
    let out: Value =
        client.post(format!("{base}/graph-webhook")).json(&notification).send().await.unwrap().json().await.unwrap();
    assert_eq!(out["Outputs"]["res"]["statusCode"], 202, "{out}");
    assert_eq!(h.queued().await, vec![Message::Poll { tenant: "contoso".into(), reason: MAILBOX.into() }]);

    // health-details is authLevel function: the host invokes it only with a valid key, so it answers
    // with the details; the anonymous health says one word.
    let get = |name: &str| {
        json!({"Data": {"req": {
        "Url": format!("https://secmon.example.net/api/{name}"), "Method": "GET", "Query": {}, "Headers": {}, "Body": ""
    }}, "Metadata": {}})
    };
    let out: Value = client
        .post(format!("{base}/health-details"))
        .json(&get("health-details"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let details: Value = serde_json::from_str(out["Outputs"]["res"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(details["tenants"][0]["tenant"], "contoso", "{out}");
    let out: Value =
        client.post(format!("{base}/health")).json(&get("health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(out["Outputs"]["res"]["body"], r#"{"status":"starting"}"#, "{out}");
}

#[tokio::test]
async fn the_standalone_routes_answer_over_loopback() {
    let h = seeded().await;
    let base = serve(secmon::functions::router(h.app.clone())).await;
    let client = reqwest::Client::new();
    // Nobody vouches for a caller here: without health.token the details do not exist.
    let resp = client.get(format!("{base}/api/health-details")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .post(format!("{base}/api/graph-webhook?validationToken=a%3Cb%3E+c%2B&code=KEY"))
        .header("content-type", "text/plain; charset=utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.text().await.unwrap(), "a<b> c+");

    let resp = client
        .post(format!("{base}/api/graph-webhook?code=KEY"))
        .header("content-type", "application/json")
        .body(sample("change-notification-webhook.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(h.queued().await.len(), 1);

    // Past the configured cap: 413 from the handler, not a dropped connection.
    let big = vec![b' '; 1024 * 1024 + 10];
    let resp = client
        .post(format!("{base}/api/graph-webhook"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = client.get(format!("{base}/api/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "just started, nothing failed: starting");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), r#"{"status":"starting"}"#);
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_function_key_never_reaches_the_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let key = "FUNCTIONKEY-abc123==";
    // Every path that logs: accepted, rejected, refused body, failed queue, refused doorbell, subscription sync.
    let h = seeded().await;
    let base = serve(secmon::functions::router(h.app.clone())).await;
    let client = reqwest::Client::new();
    let forged = json!({"value": [{"subscriptionId": "{subscription_guid}", "clientState": key}]});
    for body in [String::from_utf8(sample("change-notification-webhook.json")).unwrap(), forged.to_string(), "{".into()]
    {
        client
            .post(format!("{base}/api/graph-webhook?code={key}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    client
        .post(format!("{base}/api/doorbell?code={key}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let broken = Harness::with_broken_queue(load_config(&config_yaml("https://secmon.example.net")), None);
    let base = serve(secmon::functions::router(broken.app.clone())).await;
    let doorbell = r#"{"tenant":"contoso"}"#;
    let ts = t0().timestamp();
    client
        .post(format!("{base}/api/doorbell?code={key}"))
        .header("content-type", "application/json")
        .header("x-secmon-timestamp", ts.to_string())
        .header(
            "x-secmon-signature",
            secmon::intake::webhook::sign_doorbell(DOORBELL_SECRET.as_bytes(), ts, doorbell.as_bytes()),
        )
        .body(doorbell)
        .send()
        .await
        .unwrap();
    broken.graph.fail("create", 500);
    secmon::intake::subscriptions::sync(&broken.app, t0()).await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("dropped notifications"), "the paths above did log: {text}");
    assert!(text.contains("answering 503"), "{text}");
    assert!(!text.contains(key), "the function key leaked: {text}");
    assert!(!text.contains("secretClientValue"), "a clientState leaked: {text}");
    assert!(!text.contains(DOORBELL_SECRET), "the doorbell secret leaked: {text}");
}
