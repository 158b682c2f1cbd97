//! Benchmark (not a test): alerts evaluated per second against 10, 100 and 1,000 close rules.
//!
//! Each rule is a realistic "known benign" shape (a product, an IP range in the evidence, a title word),
//! none of which matches, so every alert is evaluated against every rule: the worst case. A second row
//! per size lets the first rule match (the best case). Prints a table and writes
//! `target/bench/rules_eval.json`.
//!
//! Run: `cargo bench --bench rules_eval` (or any profile; the JSON records which).
//!
//! On a busy machine wall-clock figures vary by tens of percent; instruction counts do not. With
//! `-- --rounds N` every row evaluates each alert exactly N times instead of for about two seconds, and
//! `--rules N` / `--case no|first` pick rows, so that `valgrind --tool=callgrind` of one row at two
//! round counts gives the instructions per alert (the difference over the extra alerts).

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use secmon::alert::Alert;
use secmon::config::Config;
use secmon::rules::{CloseRuleConfig, Engine, Mode, RouteConfig};
use serde_json::{Value, json};

fn rules(n: usize, first_matches: bool) -> Vec<CloseRuleConfig> {
    (0..n)
        .map(|i| {
            let when = if i == 0 && first_matches {
                r#"alert.serviceSource == "microsoftDefenderForEndpoint""#.to_string()
            } else {
                format!(
                    r#"alert.serviceSource == "microsoftDefenderForEndpoint" && alert.title.containsIgnoreCase("lab-{i}") && alert.evidence.exists(e, has(e.ipAddress) && e.ipAddress.inCidr("10.{}.{}.0/24"))"#,
                    i / 256,
                    i % 256
                )
            };
            CloseRuleConfig {
                id: format!("rule-{i}"),
                description: None,
                owner: Some("secops@contoso.com".into()),
                expires: NaiveDate::from_ymd_opt(2027, 1, 31),
                mode: Mode::Enforce,
                when,
                classification: "informationalExpectedActivity".into(),
                determination: "securityTesting".into(),
                comment: None,
                max_severity: None,
                max_per_hour: None,
            }
        })
        .collect()
}

fn alerts() -> Vec<Value> {
    let doc: Value =
        serde_json::from_str(include_str!("../tests/fixtures/samples/alerts_v2-list-response.json")).unwrap();
    let base = doc["value"][0].clone();
    (0..20)
        .map(|i| {
            let mut a = base.clone();
            a["id"] = json!(format!("bench-{i}"));
            let ev = a["evidence"].as_array_mut().unwrap();
            for j in 0..5 {
                ev.push(json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": format!("198.51.{i}.{j}")}));
            }
            a
        })
        .collect()
}

/// The value after `flag` on the command line.
fn arg(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let rounds: Option<usize> = arg("--rounds").map(|r| r.parse().expect("--rounds takes a number"));
    let only_rules: Option<usize> = arg("--rules").map(|r| r.parse().expect("--rules takes a number"));
    let only_case = arg("--case");
    let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
    let alerts: Vec<Alert> = alerts().into_iter().map(|v| Alert::from_value(v).unwrap()).collect();
    // Built from JSON, as the config file would be, so new route options need no change here.
    let routes: Vec<RouteConfig> =
        serde_json::from_value(json!([{"when": "alert.severity == \"high\"", "receivers": []}, {"receivers": []}]))
            .unwrap();
    let profile = if cfg!(debug_assertions) { "debug" } else { "optimized" };
    let mut rows = Vec::new();
    println!("{:>6}  {:<12}  {:>14}  {:>14}  {:>10}", "rules", "case", "alerts/s", "µs/alert", "compile ms");
    for n in [10usize, 100, 1000] {
        for first in [false, true] {
            let case = if first { "first match" } else { "no match" };
            if only_rules.is_some_and(|r| r != n) || only_case.as_deref().is_some_and(|c| !case.starts_with(c)) {
                continue;
            }
            let config = Config { close_rules: rules(n, first), routes: routes.clone(), ..Config::default() };
            let t = Instant::now();
            let engine = Engine::compile(&config).unwrap();
            let compile_ms = t.elapsed().as_secs_f64() * 1e3;
            // Warm up, then run for about two seconds.
            for a in &alerts {
                std::hint::black_box(engine.decide(a, "contoso", now));
            }
            let (mut done, t) = (0usize, Instant::now());
            while rounds.map_or(t.elapsed() < Duration::from_secs(2), |r| done < r * alerts.len()) {
                for a in &alerts {
                    std::hint::black_box(engine.decide(a, "contoso", now));
                }
                done += alerts.len();
            }
            let secs = t.elapsed().as_secs_f64();
            let per_sec = done as f64 / secs;
            println!("{n:>6}  {case:<12}  {per_sec:>14.0}  {:>14.1}  {compile_ms:>10.1}", 1e6 / per_sec);
            rows.push(json!({"rules": n, "case": case, "alerts_per_second": per_sec, "us_per_alert": 1e6 / per_sec,
                "compile_ms": compile_ms, "alerts_evaluated": done}));
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let out = json!({"bench": "rules_eval", "profile": profile, "results": rows});
    std::fs::write(dir.join("rules_eval.json"), serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("wrote {}", dir.join("rules_eval.json").display());
}
