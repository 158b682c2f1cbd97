//! Benchmark (not a test): notifications acknowledged per second and p50/p99 latency on loopback, for the
//! standalone route (`POST /api/graph-webhook`) and the custom-handler route (`POST /graph-webhook` with the
//! Functions envelope). Each request carries one valid notification, so each 202 includes a clientState
//! check and a durable send to the SQLite queue (a file, not memory).
//!
//!   cargo bench --bench webhook                      (BENCH_REQUESTS=4000 BENCH_CONCURRENCY=16 by default)
//!
//! Prints a table and writes `target/bench/webhook.json`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secmon::app::App;
use secmon::clock::SystemClock;
use secmon::graph::fake::FakeGraph;
use secmon::intake::subscriptions::SubscriptionRecord;
use secmon::store::Store;
use secmon::store::keys;
use secmon::store::sqlite::SqliteStore;
use serde_json::{Value, json};

const SUBSCRIPTIONS: usize = 8;
const SECRET: &str = "bench-client-state-0123456789abcdefghijklmno";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn app(dir: &std::path::Path) -> App {
    let yaml = r#"
tenants: [{ id: 84bd8158-6d4d-4958-8b9f-9d6445542f95, name: contoso }]
webhook: { public_url: "https://secmon.example.net" }
"#;
    let config = secmon::setup::load_str(yaml, std::path::Path::new("bench.yaml"), &|_| None, chrono::Utc::now())
        .expect("bench config")
        .config;
    let store = Arc::new(SqliteStore::open(dir.join("bench.db")).expect("sqlite"));
    let now = chrono::Utc::now();
    for i in 0..SUBSCRIPTIONS {
        let r = SubscriptionRecord {
            id: format!("sub-{i}"),
            tenant: "contoso".into(),
            resource: format!("users/alerts{i}@contoso.com/mailFolders('inbox')/messages"),
            change_type: "created".into(),
            expiration: now + chrono::Duration::days(6),
            client_state: SECRET.into(),
            notification_url: "https://secmon.example.net/api/graph-webhook".into(),
            url_fingerprint: None,
            created: now,
            needs: None,
        };
        store.put(&keys::subscription("contoso", &r.id), &serde_json::to_vec(&r).unwrap()).await.unwrap();
    }
    App::builder(config).backend(store).graph(Arc::new(FakeGraph::new())).clock(Arc::new(SystemClock)).build().unwrap()
}

fn notification(i: usize) -> Value {
    json!({"value": [{
        "id": format!("n{i}"),
        "subscriptionId": format!("sub-{}", i % SUBSCRIPTIONS),
        "subscriptionExpirationDateTime": "2026-12-01T12:00:00Z",
        "clientState": SECRET,
        "changeType": "created",
        "resource": "Users/1a2b/Messages/AAMkAD",
        "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": "Users/1a2b/Messages/AAMkAD", "id": "AAMkAD"}
    }]})
}

/// What one route achieved.
struct Run {
    route: &'static str,
    requests: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn load(route: &'static str, url: String, bodies: Arc<Vec<String>>, concurrency: usize) -> Run {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    // Warm up connections and SQLite.
    for b in bodies.iter().take(50) {
        let status =
            client.post(&url).header("content-type", "application/json").body(b.clone()).send().await.unwrap().status();
        assert!(status.is_success(), "{route}: {status}");
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, bodies, next) = (client.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let _ = resp.bytes().await;
                assert!(status.is_success(), "{status}");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1].as_secs_f64() * 1000.0;
    Run {
        route,
        requests: all.len(),
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all.last().unwrap().as_secs_f64() * 1000.0,
    }
}

async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn main() {
    let requests = env_usize("BENCH_REQUESTS", 4000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join(format!("secmon-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let app = app(&dir).await;
        let standalone = serve(secmon::functions::router(app.clone())).await;
        let handler = serve(secmon::host::azure::router(app.clone())).await;

        let plain: Arc<Vec<String>> = Arc::new((0..requests).map(|i| notification(i).to_string()).collect());
        // The custom-handler route receives the host's envelope: the request inside Data.req.
        let enveloped: Arc<Vec<String>> = Arc::new(
            plain
                .iter()
                .map(|b| {
                    json!({"Data": {"req": {
                        "Url": "https://secmon.example.net/api/graph-webhook?code=KEY", "Method": "POST",
                        "Query": {"code": "KEY"}, "Headers": {"Content-Type": ["application/json; charset=utf-8"]}, "Body": b
                    }}, "Metadata": {}})
                    .to_string()
                })
                .collect(),
        );
        let runs = vec![
            load("standalone POST /api/graph-webhook", format!("http://{standalone}/api/graph-webhook?code=KEY"), plain, concurrency).await,
            load("custom handler POST /graph-webhook", format!("http://{handler}/graph-webhook"), enveloped, concurrency).await,
        ];
        let queued = secmon::store::Queue::len(app.queue.as_ref(), secmon::store::ALERTS_QUEUE).await.unwrap();
        println!("\nwebhook benchmark: {requests} notifications per route, {concurrency} concurrent clients, loopback, SQLite file queue");
        println!("{:<38} {:>9} {:>12} {:>9} {:>9} {:>9}", "route", "requests", "acked/s", "p50 ms", "p99 ms", "max ms");
        for r in &runs {
            println!(
                "{:<38} {:>9} {:>12.0} {:>9.2} {:>9.2} {:>9.2}",
                r.route, r.requests, r.per_second, r.p50_ms, r.p99_ms, r.max_ms
            );
        }
        println!("messages queued: {queued}");
        let json = json!({
            "requests_per_route": requests,
            "concurrency": concurrency,
            "profile": if cfg!(debug_assertions) { "debug" } else { "optimized" },
            "queued": queued,
            "runs": runs.iter().map(|r| json!({"route": r.route, "requests": r.requests, "acked_per_second": r.per_second,
                "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "max_ms": r.max_ms})).collect::<Vec<_>>(),
        });
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("webhook.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
        println!("written: target/bench/webhook.json");
        let _ = std::fs::remove_dir_all(&dir);
    });
}
