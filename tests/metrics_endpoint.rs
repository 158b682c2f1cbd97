//! The standalone server's Prometheus page `/metrics`: off by default (404); when enabled, it is in the
//! text exposition format, and the receivers' counters move as real deliveries succeed and fail.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use secmon::app::App;
use tower::ServiceExt;

const TENANT: &str = "11111111-2222-3333-4444-555555555555";

/// The metrics are the process's: the tests that read queue gauges take turns.
static QUEUE_GAUGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A webhook sink on loopback: `/ok` accepts, `/gone` answers 404 (permanent: no retry, no wait).
async fn sink() -> SocketAddr {
    let router = axum::Router::new()
        .route("/ok", axum::routing::post(|| async { StatusCode::OK }))
        .route("/gone", axum::routing::post(|| async { StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn app(yaml: &str) -> App {
    let now = chrono::Utc::now();
    let loaded = secmon::setup::load_str(yaml, Path::new("secmon.yaml"), &|_| None, now).unwrap();
    let store = Arc::new(secmon::store::sqlite::SqliteStore::in_memory().unwrap());
    App::builder(loaded.config).backend(store).graph(Arc::new(secmon::graph::fake::FakeGraph::new())).build().unwrap()
}

async fn get(app: &App, path: &str) -> (StatusCode, Option<String>, String) {
    let req = Request::get(path).body(Body::empty()).unwrap();
    let resp = secmon::host::standalone::router(app).oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8(body.to_vec()).unwrap())
}

/// Parses the Prometheus text exposition format strictly enough to catch a malformed page: every line is
/// a `# HELP` / `# TYPE` comment or a sample `name{label="value",…} number` of a family whose `# TYPE`
/// came first. Returns each sample by its name and labels as written.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, tail) = (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next());
            assert!(name_ok(name), "bad metric name in {line:?}");
            match keyword {
                "HELP" => assert!(tail.is_some_and(|h| !h.is_empty()), "empty help: {line:?}"),
                "TYPE" => {
                    let kind = tail.unwrap_or("");
                    assert!(["counter", "gauge"].contains(&kind), "unknown type: {line:?}");
                    assert!(typed.insert(name.to_string(), kind.to_string()).is_none(), "typed twice: {line:?}");
                }
                other => panic!("unknown comment {other:?}: {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}")))),
            None => (series, None),
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        assert!(typed.contains_key(name), "a sample before its # TYPE: {line:?}");
        if let Some(labels) = labels {
            // label="value" pairs, the value with \\, \" and \n escaped.
            let mut rest = labels;
            while !rest.is_empty() {
                let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(name_ok(label) && !label.contains(':'), "bad label name in {line:?}");
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => assert!(matches!(chars.next(), Some((_, '\\' | '"' | 'n'))), "{line:?}"),
                        Some((i, '"')) => break i,
                        Some(_) => {}
                        None => panic!("unterminated label value in {line:?}"),
                    }
                };
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        assert!(samples.insert(series.to_string(), value).is_none(), "a series twice: {line:?}");
    }
    samples
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let app = app(&format!("tenants:\n  - {{id: {TENANT}, name: contoso}}\n"));
    let (status, _, _) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The functions' routes are served as before.
    let (status, _, _) = get(&app, "/api/health").await;
    assert_ne!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_page_parses_and_the_receivers_counters_move() {
    let _turn = QUEUE_GAUGES.lock().await;
    let sink = sink().await;
    let yaml = format!(
        "tenants:\n  - {{id: {TENANT}, name: contoso}}\n\
         routes:\n  - {{ receivers: [metrics-ok, metrics-gone] }}\n\
         receivers:\n  metrics-ok: {{ webhook: {{ url: \"http://{sink}/ok\" }} }}\n  \
         metrics-gone: {{ webhook: {{ url: \"http://{sink}/gone\" }} }}\n\
         webhook: {{ server: {{ metrics: {{ enabled: true }} }} }}\n"
    );
    let app = app(&yaml);
    let (status, content_type, before) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    let before = parse_exposition(&before);
    assert_eq!(before.get(r#"secmon_queue_depth{queue="alerts"}"#), Some(&0.0), "{before:?}");
    assert_eq!(before.get(r#"secmon_receiver_sent_total{receiver="metrics-ok"}"#), None);

    let doc: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/samples/alerts_v2-list-response.json")).unwrap();
    for i in 0..2 {
        let mut alert = doc["value"][0].clone();
        alert["id"] = serde_json::json!(format!("metrics-{i}"));
        alert["status"] = serde_json::json!("new");
        // The receiver that answers 404 fails the message for good; the other one was told.
        let _ = secmon::respond::process_alert(&app, "contoso", alert).await;
        secmon::host::standalone::drain(&app, 10_000).await;
    }
    secmon::intake::Message::Poll { tenant: "contoso".into(), reason: "test".into() }
        .send(app.store.as_ref(), app.queue.as_ref())
        .await
        .unwrap();

    let (_, _, after) = get(&app, "/metrics").await;
    let after = parse_exposition(&after);
    assert_eq!(after.get(r#"secmon_receiver_sent_total{receiver="metrics-ok"}"#), Some(&2.0), "{after:?}");
    assert_eq!(
        after.get(r#"secmon_receiver_failed_total{receiver="metrics-gone",reason="http_4xx"}"#),
        Some(&2.0),
        "{after:?}"
    );
    assert_eq!(after.get(r#"secmon_receiver_sent_total{receiver="metrics-gone"}"#), None);
    assert_eq!(after.get(r#"secmon_queue_depth{queue="alerts"}"#), Some(&1.0), "{after:?}");
    assert_eq!(after.get(r#"secmon_queue_depth{queue="alerts-poison"}"#), Some(&0.0), "{after:?}");
}

/// What waits on the queues, per receiver and per tenant: the delivery jobs of two decided alerts count
/// for both receivers and for the tenant, with the age of its oldest message; once delivered, the
/// receivers show zero and the tenant's series are gone.
#[tokio::test]
async fn the_page_shows_what_waits_per_receiver_and_per_tenant() {
    let _turn = QUEUE_GAUGES.lock().await;
    let sink = sink().await;
    let yaml = format!(
        "tenants:\n  - {{id: {TENANT}, name: queued-tenant}}\n\
         routes:\n  - {{ receivers: [queued-a, queued-b] }}\n\
         receivers:\n  queued-a: {{ webhook: {{ url: \"http://{sink}/ok\" }} }}\n  \
         queued-b: {{ webhook: {{ url: \"http://{sink}/ok\" }} }}\n\
         webhook: {{ server: {{ metrics: {{ enabled: true }} }} }}\n"
    );
    let app = app(&yaml);
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/samples/alerts_v2-list-response.json")).unwrap();
    for i in 0..2 {
        let mut alert = doc["value"][0].clone();
        alert["id"] = serde_json::json!(format!("queued-{i}"));
        alert["status"] = serde_json::json!("new");
        secmon::respond::process_alert(&app, "queued-tenant", alert).await.unwrap();
    }
    let (_, _, page) = get(&app, "/metrics").await;
    let page = parse_exposition(&page);
    assert_eq!(page.get(r#"secmon_receiver_queued{receiver="queued-a"}"#), Some(&2.0), "{page:?}");
    assert_eq!(page.get(r#"secmon_receiver_queued{receiver="queued-b"}"#), Some(&2.0), "{page:?}");
    let depth = r#"secmon_tenant_queue_depth{queue="deliveries",tenant="queued-tenant"}"#;
    assert_eq!(page.get(depth), Some(&4.0), "{page:?}");
    let age = r#"secmon_tenant_queue_oldest_age_seconds{queue="deliveries",tenant="queued-tenant"}"#;
    assert!(page.get(age).is_some_and(|a| *a >= 0.0), "{page:?}");
    assert_eq!(page.get(r#"secmon_tenant_queue_depth{queue="alerts",tenant="queued-tenant"}"#), None);

    secmon::host::standalone::drain(&app, 10_000).await;
    let (_, _, page) = get(&app, "/metrics").await;
    let page = parse_exposition(&page);
    assert_eq!(page.get(r#"secmon_receiver_queued{receiver="queued-a"}"#), Some(&0.0), "{page:?}");
    assert_eq!(page.get(r#"secmon_receiver_queued{receiver="queued-b"}"#), Some(&0.0), "{page:?}");
    assert_eq!(page.get(depth), None, "{page:?}");
    assert_eq!(page.get(r#"secmon_receiver_sent_total{receiver="queued-a"}"#), Some(&2.0), "{page:?}");
}
