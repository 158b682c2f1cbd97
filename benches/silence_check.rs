//! Benchmark (not a test): what asking "is this delivery muted?" costs per delivery, with 0, 10, 100 and
//! 1,000 active silences (none of which matches, so every matcher is evaluated: the worst case), from
//! the per-process cache and with the cache cold (every check reads the store's list of silences).
//! Prints a table and writes `target/bench/silence_check.json`.
//!
//! Run: `cargo bench --bench silence_check` (or any profile; the JSON records which).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secmon::alert::Alert;
use secmon::app::App;
use secmon::clock::ManualClock;
use secmon::graph::fake::FakeGraph;
use secmon::notify::silence::{Silence, muting};
use secmon::rules::Delivery;
use secmon::store::Store;
use secmon::store::sqlite::SqliteStore;
use serde_json::{Value, json};

const CONFIG: &str = "tenants:\n  - { id: 11111111-2222-3333-4444-555555555555, name: contoso }\nsilences: { cache: 30s }\nroutes:\n  - { receivers: [soc] }\nreceivers:\n  soc: { webhook: { url: \"https://hooks.example.net/x\" } }\n";

fn now() -> DateTime<Utc> {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

async fn app(silences: usize) -> App {
    let config = secmon::setup::load_str(CONFIG, Path::new("bench.yaml"), &|_| None, now()).unwrap().config;
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    for i in 0..silences {
        let s = Silence {
            id: format!("bench{i:05}"),
            when: format!(r#"alert.title.contains("host-{i}") && alert.severity == "low""#),
            starts_at: now(),
            ends_at: now() + chrono::Duration::days(1),
            created_by: "bench".into(),
            comment: "bench".into(),
            created_at: now(),
            receivers: Vec::new(),
            tenant: None,
            active_during: Vec::new(),
            expired_by: None,
            settled: false,
        };
        store.put(&format!("silences/{}", s.id), &serde_json::to_vec(&s).unwrap()).await.unwrap();
    }
    App::builder(config).backend(store).graph(Arc::new(FakeGraph::default())).clock(clock).build().unwrap()
}

fn alert() -> Alert {
    let doc: Value =
        serde_json::from_str(include_str!("../tests/fixtures/samples/alerts_v2-list-response.json")).unwrap();
    Alert::from_value(doc["value"][0].clone()).unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let alert = alert();
    let target = Delivery { receiver: "soc".into(), realert: None, group: None, routes: vec!["routes[0]".into()] };
    let mut rows = Vec::new();
    println!("{:>9} {:>14} {:>14}", "silences", "cached µs", "cold µs");
    for n in [0usize, 10, 100, 1000] {
        let app = app(n).await;
        let checks = if n >= 1000 { 200 } else { 2000 };
        muting(&app, "contoso", &alert, &target, now()).await.unwrap();
        let t = Instant::now();
        for _ in 0..checks {
            assert!(muting(&app, "contoso", &alert, &target, now()).await.unwrap().is_none());
        }
        let cached = t.elapsed() / checks as u32;
        let cold_checks = if n >= 1000 { 5 } else { 50 };
        let t = Instant::now();
        for _ in 0..cold_checks {
            app.mute.forget();
            assert!(muting(&app, "contoso", &alert, &target, now()).await.unwrap().is_none());
        }
        let cold = t.elapsed() / cold_checks as u32;
        println!("{n:>9} {:>14.1} {:>14.1}", micros(cached), micros(cold));
        rows.push(json!({"silences": n, "cached_us": micros(cached), "cold_us": micros(cold)}));
    }
    let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
    let out = json!({"bench": "silence_check", "profile": profile, "rows": rows});
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write("target/bench/silence_check.json", serde_json::to_vec_pretty(&out).unwrap()).unwrap();
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
