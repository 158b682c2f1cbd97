//! Retention over a long simulated run: many days of alerts go through the whole pipeline (poll →
//! respond → close / notify → audit) on the FakeGraph with a manual clock, the `sweep` timer runs
//! every six hours, and the store's size stops growing once the longest lifetime has passed, while
//! what has not expired (yesterday's claims, the audit days inside the retention) is all still there.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::audit;
use secmon::clock::{Clock, ManualClock};
use secmon::functions::{self, Outcome, Timer};
use secmon::graph::fake::FakeGraph;
use secmon::host::standalone::{self, WorkResult};
use secmon::store::{Claim, Space, Store, keys};

const CONFIG: &str = r#"
tenants:
  - { id: 11111111-2222-3333-4444-555555555555, name: contoso }
poll: { stale_after: 72h }
close_rules:
  - id: lab-hidden-file
    owner: secops@contoso.com
    expires: 2099-01-31
    mode: enforce
    when: 'alert.title.containsIgnoreCase("hidden file")'
    classification: informationalExpectedActivity
    determination: securityTesting
    comment: Lab machine
routes:
  - { receivers: [soc] }
receivers:
  soc: { email: { from: secmon@contoso.com, to: [soc@contoso.com] } }
retention:
  claims: 15d
  counters: 1d
  large_alerts: 2d
  audit_days: 20
  batch: 700
"#;

/// Alerts a day: half closed by the rule, half notified; one of them too large for a queue message.
const PER_DAY: usize = 12;

fn alert(id: &str, title: &str, at: DateTime<Utc>, description: String) -> serde_json::Value {
    let t = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    serde_json::json!({
        "id": id, "providerAlertId": id, "incidentId": "1", "status": "new", "severity": "low",
        "classification": null, "determination": null, "serviceSource": "microsoftDefenderForEndpoint",
        "detectionSource": "antivirus", "title": title, "description": description,
        "tenantId": "11111111-2222-3333-4444-555555555555",
        "createdDateTime": t, "lastUpdateDateTime": t, "firstActivityDateTime": t, "lastActivityDateTime": t,
        "comments": [], "evidence": [], "systemTags": []
    })
}

/// Every key, claim and audit record in the store: what "store size" means here.
async fn size(store: &dyn Store) -> usize {
    let values = store.scan(Space::Values, "", None, usize::MAX).await.unwrap().len();
    let claims = store.scan(Space::Claims, "", None, usize::MAX).await.unwrap().len();
    let mut records = 0;
    for day in audit::days(store, None).await.unwrap() {
        records += day.records(store).await.unwrap().len();
    }
    values + claims + records
}

/// One simulated day at 10:00: a fresh batch of alerts is polled and worked off the queue.
async fn day(app: &App, clock: &ManualClock, n: usize) {
    let now = clock.now();
    let graph = Arc::new(FakeGraph::new());
    for i in 0..PER_DAY {
        let title = if i % 2 == 0 { "Suspicious execution of hidden file" } else { "Unusual sign-in" };
        // One alert a day is too large for a queue message and travels through the store.
        let description = if i == 1 { "x".repeat(60_000) } else { format!("day {n} alert {i}") };
        graph.put_alert(alert(&format!("d{n}-a{i}"), title, now - chrono::Duration::minutes(2), description));
    }
    let app = app.with_graph(graph.clone());
    let polled = functions::poll_alerts(&app, Timer::default(), now).await;
    assert!(matches!(polled, Outcome::Done { .. }), "day {n}: {polled:?}");
    let results = standalone::drain(&app, 1000).await;
    // Each alert is one `respond` message, then one `deliver` job per receiver it is routed to.
    assert!(results.len() >= PER_DAY, "day {n}: {results:?}");
    assert!(results.iter().all(|r| matches!(r, WorkResult::Done(_))), "day {n}: {results:?}");
    assert_eq!(graph.updates().len(), PER_DAY / 2, "day {n}: half the alerts are closed");
}

#[tokio::test]
async fn store_size_stays_flat_after_the_longest_lifetime_and_nothing_unexpired_goes() {
    let start: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let store = Arc::new(secmon::store::sqlite::SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let config = secmon::setup::load_str(CONFIG, std::path::Path::new("test.yaml"), &|_| None, start).unwrap().config;
    let app = App::builder(config)
        .backend(store.clone())
        .graph(Arc::new(FakeGraph::new()))
        .clock(clock.clone())
        .build()
        .unwrap();
    let days = 45;
    let mut sizes = Vec::new();
    for n in 0..days {
        clock.set(start + chrono::Duration::days(n));
        day(&app, &clock, n as usize).await;
        // The sweep every three hours over the rest of the day (10:00 + 3h … 22:00).
        for h in [3, 6, 9, 12] {
            clock.set(start + chrono::Duration::days(n) + chrono::Duration::hours(h));
            let swept = functions::sweep(&app, Timer::default(), clock.now()).await;
            assert!(matches!(swept, Outcome::Done { .. }), "{swept:?}");
        }
        sizes.push(size(store.as_ref()).await);
    }
    // The longest lifetime is the audit's: 20 days, a day of margin and the day itself.
    let settled = &sizes[25..];
    let (low, high) = (settled.iter().min().unwrap(), settled.iter().max().unwrap());
    assert_eq!(low, high, "the store keeps growing: {sizes:?}");
    eprintln!("store size (keys, claims and audit records) at the end of each day: {sizes:?}");
    assert!(sizes[24] > sizes[5] * 2, "it grew before the lifetimes ran out: {sizes:?}");

    // Nothing unexpired went: yesterday's and the last 15 days' claims are done, older ones gone.
    let lease = Duration::from_secs(60);
    let version = |n: i64| {
        (start + chrono::Duration::days(n) - chrono::Duration::minutes(2))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    for n in [days - 1, days - 14] {
        let key = keys::close("contoso", &format!("d{n}-a0"), &version(n));
        assert_eq!(store.claim(&key, lease).await.unwrap(), Claim::Done, "{key}");
    }
    let old = keys::close("contoso", &format!("d{}-a0", days - 20), &version(days - 20));
    assert!(matches!(store.claim(&old, lease).await.unwrap(), Claim::Acquired(_)), "{old} expired");
    // The audit keeps exactly the days inside its retention, and they verify.
    let kept = audit::days(store.as_ref(), None).await.unwrap();
    let today = clock.now().date_naive();
    assert_eq!(kept.first().unwrap().date, today - chrono::Days::new(21), "{kept:?}");
    assert_eq!(kept.len(), 22, "{:?}", kept.iter().map(|d| d.date).collect::<Vec<_>>());
    assert!(audit::verify(store.as_ref(), None).await.unwrap().iter().all(|r| r.ok()));
}
