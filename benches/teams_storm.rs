//! A storm of 200 alerts routed to one Teams receiver with the default posting budget (20 posts per
//! 5 minutes): how long secmon takes to tell all of them, and in how many posts. The alerts arrive one a
//! second (a manual clock), the poll timer drains what waits once a minute; a local sink on loopback
//! plays the Workflows webhook. Prints a table and writes `target/bench/teams_storm.json`. Not a test:
//! nothing is asserted (`tests/notify.rs` asserts the budget and once-only).
//!
//! Run: `cargo bench --bench teams_storm` (add `--profile dev` on a shared machine).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::clock::{Clock, ManualClock};
use secmon::graph::fake::FakeGraph;
use secmon::store::sqlite::SqliteStore;
use serde_json::{Value, json};

const ALERTS: usize = 200;

#[tokio::main]
async fn main() {
    let posts: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = posts.clone();
    let sink = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let text = String::from_utf8_lossy(&body);
                seen.lock().unwrap().push(text.matches("alerts/storm-").count());
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/workflows/x/triggers/manual/paths/invoke?sig=BenchSig0123456789",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, sink).await.unwrap() });

    let env = move |k: &str| (k == "T").then(|| url.clone());
    let text = "tenants: [{id: t, name: contoso}]\nroutes:\n  - { receivers: [soc] }\nreceivers:\n  soc: { teams: { webhook_url: \"${T}\" } }\n";
    let start_at: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
    let loaded = secmon::setup::load_str(text, Path::new("bench.yaml"), &env, start_at).expect("config");
    let clock = Arc::new(ManualClock::new(start_at));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let app = App::builder(loaded.config)
        .backend(store)
        .graph(Arc::new(FakeGraph::new()))
        .clock(clock.clone())
        .build()
        .unwrap();

    let list: Value =
        serde_json::from_str(include_str!("../tests/fixtures/samples/alerts_v2-list-response.json")).unwrap();
    let started = Instant::now();
    for i in 0..ALERTS {
        let mut a = list["value"][0].clone();
        a["id"] = json!(format!("storm-{i:03}"));
        a["title"] = json!(format!("Suspicious PowerShell command line on ws-{i:03}.corp.contoso.com"));
        a["severity"] = json!(["high", "medium", "medium", "low", "low"][i % 5]);
        a["alertWebUrl"] = json!(format!("https://security.microsoft.com/alerts/storm-{i:03}?tid=t"));
        secmon::respond::process_alert(&app, "contoso", a).await.expect("delivered");
        clock.advance(chrono::Duration::seconds(1));
    }
    let arrived = started.elapsed();
    let mut minutes = 0;
    while posts.lock().unwrap().iter().sum::<usize>() < ALERTS && minutes < 120 {
        clock.advance(chrono::Duration::minutes(1));
        secmon::notify::deliver::flush(&app).await;
        minutes += 1;
    }
    let elapsed = started.elapsed();
    let counts = posts.lock().unwrap().clone();
    let told: usize = counts.iter().sum();
    let digests = counts.iter().filter(|n| **n > 1).count();
    let last = (clock.now() - start_at).num_seconds();
    let row = json!({
        "alerts": ALERTS, "told": told, "posts": counts.len(), "digests": digests,
        "budget": "20 per 5 min", "wall_ms": elapsed.as_secs_f64() * 1e3, "arrival_ms": arrived.as_secs_f64() * 1e3,
        "last_told_after_s": last,
    });
    println!(
        "{:<8} {:>6} {:>6} {:>8} {:>10} {:>22}",
        "alerts", "told", "posts", "digests", "wall ms", "all told after (clock)"
    );
    println!(
        "{:<8} {:>6} {:>6} {:>8} {:>10.1} {:>20} s",
        ALERTS,
        told,
        counts.len(),
        digests,
        elapsed.as_secs_f64() * 1e3,
        last
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let profile = if cfg!(debug_assertions) { "dev (unoptimized)" } else { "optimized" };
    std::fs::write(
        out.join("teams_storm.json"),
        serde_json::to_vec_pretty(&json!({"profile": profile, "result": row})).unwrap(),
    )
    .unwrap();
}
