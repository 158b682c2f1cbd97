//! The delivery engine: each delivery its own unit of work on the `deliveries` queue. A receiver that
//! hangs delays only its own deliveries (per-receiver timeout, circuit breaker), a grouping window waits
//! on the queue and never in a worker, and a bad job is poisoned with the reason. Tokio's clock is paused
//! and the app's clock is a `ManualClock`: every bound below is in controlled time, never wall-clock.

mod notify_common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify_common::*;
use secmon::app::App;
use secmon::clock::ManualClock;
use secmon::functions::Outcome;
use secmon::host::standalone::{self, WorkResult};
use secmon::store::sqlite::SqliteStore;
use secmon::store::{DELIVERIES_QUEUE, poison_name};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A receiver that accepts every connection and, while `hung`, never answers (what a broken proxy or an
/// overloaded flow looks like); once recovered it answers 202 and records each request body.
#[derive(Clone)]
struct Stuck {
    hung: Arc<AtomicBool>,
    bodies: Arc<Mutex<Vec<Value>>>,
    url: String,
}

impl Stuck {
    async fn start() -> Stuck {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/stuck?sig=HUNGsecret0123456789", listener.local_addr().unwrap());
        let stuck = Stuck { hung: Arc::new(AtomicBool::new(true)), bodies: Arc::default(), url };
        let s = stuck.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                if s.hung.load(Ordering::SeqCst) {
                    // Accepted, never read, never answered.
                    held.push(socket);
                    continue;
                }
                let bodies = s.bodies.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some(end) = text.find("\r\n\r\n") else { continue };
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            let body = serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                            bodies.lock().unwrap().push(body);
                            let _ = socket
                                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                });
            }
        });
        stuck
    }

    fn told(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().map(|b| b["alert"]["id"].as_str().unwrap_or_default().to_string()).collect()
    }
}

struct Engine {
    app: App,
    clock: Arc<ManualClock>,
    store: Arc<SqliteStore>,
    sink: Sink,
}

async fn engine(routes_and_receivers: &str, stuck_url: &str) -> Engine {
    let sink = Sink::start().await;
    let hook = format!("{}/hook", sink.base);
    let stuck = stuck_url.to_string();
    let env = move |k: &str| match k {
        "HOOK_URL" => Some(hook.clone()),
        "STUCK_URL" => Some(stuck.clone()),
        "HOOK_KEY" => Some(WEBHOOK_KEY.to_string()),
        _ => None,
    };
    let text =
        format!("tenants:\n  - {{id: 11111111-2222-3333-4444-555555555555, name: contoso}}\n{routes_and_receivers}");
    let loaded =
        secmon::setup::load_str(&text, Path::new("secmon.yaml"), &env, now()).unwrap_or_else(|e| panic!("{e}"));
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let graph = Arc::new(FakeGraph::default());
    let app = App::builder(loaded.config).backend(store.clone()).graph(graph).clock(clock.clone()).build().unwrap();
    Engine { app, clock, store, sink }
}

fn alert_n(i: usize, severity: &str, incident: &str) -> Value {
    sample(json!({"id": format!("alert-{i}"), "severity": severity, "incidentId": incident,
        "title": format!("Alert {i}"), "lastUpdateDateTime": "2026-11-26T09:00:00Z"}))
}

fn hook_ids(sink: &Sink) -> Vec<String> {
    sink.hits("/hook").iter().map(|h| h.json()["alert"]["id"].as_str().unwrap_or_default().to_string()).collect()
}

fn each_once(mut ids: Vec<String>, n: usize) {
    ids.sort();
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..n).map(|i| format!("alert-{i}")).collect();
        w.sort();
        w
    };
    assert_eq!(ids, want, "every alert told exactly once");
}

const HUNG: &str = r#"
routes:
  - { receivers: [tickets, stuck] }
receivers:
  tickets: { webhook: { url: "${HOOK_URL}", secret: "${HOOK_KEY}" } }
  stuck: { webhook: { url: "${STUCK_URL}", secret: "${HOOK_KEY}", timeout: 1s, breaker: { failures: 3, cool_down: 1m } } }
"#;

#[tokio::test(start_paused = true)]
async fn a_hung_receiver_delays_only_its_own_deliveries_and_gets_them_all_once_it_recovers() {
    let stuck = Stuck::start().await;
    let e = engine(HUNG, &stuck.url).await;
    const N: usize = 10;
    for i in 0..N {
        let summary = secmon::respond::process_alert(&e.app, "contoso", alert_n(i, "medium", "")).await.unwrap();
        assert!(summary.contains("delivering to tickets, stuck"), "{summary}");
    }
    assert_eq!(e.app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 2 * N, "one job per receiver");

    // One pass over the queue, before the app's clock moves at all. The bound, in paused tokio time:
    // only the first `failures` (3) deliveries to the hung receiver spend its timeout (3 attempts of
    // 1 s, with 1 s + 2 s of back-off: 6 s each); then its breaker opens and its other jobs are put
    // back on the queue without trying. So every alert reaches the working receiver within 3 × 6 s.
    let start = tokio::time::Instant::now();
    let results = standalone::drain(&e.app, 1000).await;
    let bound = Duration::from_secs(3 * 6);
    each_once(hook_ids(&e.sink), N);
    for hit in e.sink.hits("/hook") {
        assert!(hit.at - start <= bound, "a working delivery waited {:?} for the hung receiver", hit.at - start);
    }
    assert!(stuck.told().is_empty());
    let retried = results.iter().filter(|r| matches!(r, WorkResult::Retry(_))).count();
    assert_eq!(retried, 3, "three deliveries failed, then the breaker opened: {results:?}");
    let paused =
        results.iter().filter(|r| matches!(r, WorkResult::Done(l) if l.contains("paused by its breaker"))).count();
    assert_eq!(paused, N - 3, "the rest wait on the queue: {results:?}");
    // The error says what happened, and never the URL's secret.
    let failed: Vec<String> =
        results.iter().filter_map(|r| if let WorkResult::Retry(m) = r { Some(m.clone()) } else { None }).collect();
    assert!(failed.iter().all(|m| m.contains("stuck: timed out after 1s")), "{failed:?}");
    let records = audit(&e.store).await;
    let text = serde_json::to_string(&records).unwrap() + &failed.join(" ");
    assert!(!text.contains("HUNGsecret0123456789"), "the signature leaked");
    assert_eq!(records.iter().filter(|r| r["action"] == "receiver_paused").count(), 1);

    // Nothing is lost: every job of the hung receiver is still on the queue, none poisoned.
    assert_eq!(e.app.queue.len(DELIVERIES_QUEUE).await.unwrap(), N);
    assert_eq!(e.app.queue.len(&poison_name(DELIVERIES_QUEUE)).await.unwrap(), 0);

    // It recovers; after the cool-down (and the failed ones' visibility timeout) one probe goes, its
    // success closes the breaker, and every alert reaches it exactly once.
    stuck.hung.store(false, Ordering::SeqCst);
    e.clock.advance(chrono::Duration::from_std(standalone::VISIBILITY).unwrap() + chrono::Duration::seconds(1));
    let results = standalone::drain(&e.app, 1000).await;
    assert!(results.iter().all(|r| matches!(r, WorkResult::Done(_))), "{results:?}");
    each_once(stuck.told(), N);
    each_once(hook_ids(&e.sink), N);
    assert_eq!(e.app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
    assert_eq!(e.app.queue.len(&poison_name(DELIVERIES_QUEUE)).await.unwrap(), 0);
    let records = audit(&e.store).await;
    assert_eq!(records.iter().filter(|r| r["action"] == "receiver_resumed").count(), 1);

    // A redelivered job never tells twice.
    for i in 0..N {
        secmon::respond::process_alert(&e.app, "contoso", alert_n(i, "medium", "")).await.unwrap();
    }
    standalone::drain(&e.app, 1000).await;
    each_once(stuck.told(), N);
    each_once(hook_ids(&e.sink), N);
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_says_so() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/nobody", closed.local_addr().unwrap());
    drop(closed);
    let e = engine(HUNG, &url).await;
    secmon::respond::process_alert(&e.app, "contoso", alert_n(0, "medium", "")).await.unwrap();
    let results = standalone::drain(&e.app, 100).await;
    let refused = results.iter().find_map(|r| if let WorkResult::Retry(m) = r { Some(m.clone()) } else { None });
    let refused = refused.expect("the delivery to the closed port failed");
    assert!(refused.contains("stuck: connection refused"), "{refused}");
    each_once(hook_ids(&e.sink), 1);
}

const GROUPED: &str = r#"
routes:
  - { when: 'alert.severity == "low"', receivers: [tickets], group_by_incident: 20s }
  - { receivers: [tickets] }
receivers:
  tickets: { webhook: { url: "${HOOK_URL}", secret: "${HOOK_KEY}" } }
"#;

#[tokio::test(start_paused = true)]
async fn grouping_waits_on_the_queue_so_a_critical_alert_is_not_delayed_by_other_incidents() {
    let e = engine(GROUPED, "http://127.0.0.1:9/unused").await;
    // Three low-severity alerts, each the first of its own incident, then a high one.
    for i in 0..3 {
        secmon::respond::process_alert(&e.app, "contoso", alert_n(i, "low", &format!("inc-{i}"))).await.unwrap();
    }
    secmon::respond::process_alert(&e.app, "contoso", alert_n(3, "high", "inc-9")).await.unwrap();
    let results = standalone::drain(&e.app, 100).await;
    // Without the app's clock moving: the high alert is told, the three group leaders wait on the queue.
    assert_eq!(hook_ids(&e.sink), ["alert-3"]);
    let leading =
        results.iter().filter(|r| matches!(r, WorkResult::Done(l) if l.contains("leads its incident's group"))).count();
    assert_eq!(leading, 3, "{results:?}");
    assert_eq!(e.app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 3, "the leaders wait as delayed messages");
    // The window closes: each leader sends its incident's message.
    e.clock.advance(chrono::Duration::seconds(20));
    standalone::drain(&e.app, 100).await;
    each_once(hook_ids(&e.sink), 4);
    assert_eq!(e.app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
}

#[tokio::test]
async fn a_bad_delivery_job_is_poisoned_with_the_reason() {
    let e = engine(GROUPED, "http://127.0.0.1:9/unused").await;
    let now = e.app.clock.now();
    let out = secmon::functions::deliver(&e.app, b"{\"kind\":\"launch\"}", now).await;
    assert!(matches!(&out, Outcome::Poison(m) if m.contains("not a delivery job")), "{out:?}");
    let job = json!({"tenant": "contoso", "alert": {"id": "a1"},
        "task": {"kind": "notify", "receiver": "nobody", "routes": []}});
    let out = secmon::functions::deliver(&e.app, job.to_string().as_bytes(), now).await;
    assert!(matches!(&out, Outcome::Poison(m) if m.contains("receiver \"nobody\" is not in the config")), "{out:?}");
    // The standalone worker moves it to the poison queue: set aside, never dropped.
    e.app.queue.send(DELIVERIES_QUEUE, job.to_string().as_bytes()).await.unwrap();
    let results = standalone::drain(&e.app, 10).await;
    assert!(matches!(&results[..], [WorkResult::Poisoned(_)]), "{results:?}");
    assert_eq!(e.app.queue.len(&poison_name(DELIVERIES_QUEUE)).await.unwrap(), 1);
}

const SET: &str = r#"
routes:
  - name: triage
    receivers: [tickets]
    set: { status: inProgress }
receivers:
  tickets: { webhook: { url: "${HOOK_URL}", secret: "${HOOK_KEY}" } }
"#;

#[tokio::test(start_paused = true)]
async fn a_route_update_is_its_own_job_and_waits_until_every_receiver_was_told() {
    let e = engine(SET, "http://127.0.0.1:9/unused").await;
    let graph = Arc::new(FakeGraph::default());
    let mut app = e.app.clone();
    app.graph = graph.clone();
    let raw = alert_n(0, "medium", "");
    graph.put_alert(raw.clone());
    // The receiver is down at first: the update must not run before it was told.
    e.sink.script("/hook", 3, 503, None, "maintenance");
    secmon::respond::process_alert(&app, "contoso", raw).await.unwrap();
    let results = standalone::drain(&app, 100).await;
    assert!(
        results.iter().any(|r| matches!(r, WorkResult::Done(l) if l.contains("update by triage waits for tickets"))),
        "{results:?}"
    );
    assert!(graph.updates().is_empty(), "no update before the receiver was told");
    // The delivery is retried after its visibility timeout and succeeds; then the update applies, once.
    e.clock.advance(chrono::Duration::from_std(standalone::VISIBILITY).unwrap() + chrono::Duration::seconds(1));
    standalone::drain(&app, 100).await;
    let accepted = e.sink.hits("/hook").iter().filter(|h| h.status == 202).count();
    assert_eq!(accepted, 1, "told once, after three refused attempts");
    e.clock.advance(chrono::Duration::seconds(11));
    standalone::drain(&app, 100).await;
    let updates = graph.updates();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0].1.status.as_deref(), Some("inProgress"));
    assert_eq!(e.app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
}

// --- First try (`worker.first_try`, what `secmon run` does): the worker that decides an alert tries its
// deliveries at once, and only the ones that do not finish become jobs.

#[tokio::test(start_paused = true)]
async fn with_a_first_try_a_hung_receiver_still_delays_only_its_own_deliveries() {
    let stuck = Stuck::start().await;
    // The hung receiver named first: a first try that took the receivers in turn would make the working
    // one wait for it.
    let hung_first = HUNG.replace("[tickets, stuck]", "[stuck, tickets]");
    assert_ne!(hung_first, HUNG);
    let e = engine(&hung_first, &stuck.url).await;
    let app = e.app.with_first_try(true);
    const N: usize = 10;
    // The bound, in paused tokio time: each alert's two receivers are tried together, so the working one
    // is told at once; the hung one costs its timeout (3 attempts of 1 s, 1 s + 2 s of back-off: 6 s)
    // for the first `failures` (3) alerts only, then its breaker is open and it is not tried.
    let start = tokio::time::Instant::now();
    for i in 0..N {
        let before = tokio::time::Instant::now();
        let summary = secmon::respond::process_alert(&app, "contoso", alert_n(i, "medium", "")).await.unwrap();
        assert!(summary.contains("notified tickets"), "{summary}");
        let hit = e.sink.hits("/hook").last().map(|h| h.at).expect("told");
        assert!(hit - before <= Duration::from_secs(1), "alert-{i} waited {:?} for the hung receiver", hit - before);
        if i < 3 {
            assert!(summary.contains("stuck failed, queued to try again: stuck: timed out after 1s"), "{summary}");
        } else {
            assert!(summary.contains("stuck is paused by its breaker until"), "{summary}");
        }
        assert!(!summary.contains("HUNGsecret0123456789"), "the signature leaked: {summary}");
    }
    assert!(tokio::time::Instant::now() - start <= Duration::from_secs(3 * 6 + 1));
    each_once(hook_ids(&e.sink), N);
    assert!(stuck.told().is_empty());
    // Only the hung receiver's deliveries are jobs, all of them waiting (none due yet), none poisoned.
    assert_eq!(app.queue.len(DELIVERIES_QUEUE).await.unwrap(), N, "one job per unfinished delivery");
    assert!(standalone::drain(&app, 100).await.is_empty(), "nothing is due before the retry and the cool-down");
    assert_eq!(app.queue.len(&poison_name(DELIVERIES_QUEUE)).await.unwrap(), 0);
    let records = audit(&e.store).await;
    assert_eq!(records.iter().filter(|r| r["action"] == "receiver_paused").count(), 1);

    // It recovers: after the cool-down the jobs run, a probe closes the breaker, and every alert reaches
    // it exactly once.
    stuck.hung.store(false, Ordering::SeqCst);
    e.clock.advance(chrono::Duration::minutes(2));
    let results = standalone::drain(&app, 1000).await;
    assert!(results.iter().all(|r| matches!(r, WorkResult::Done(_))), "{results:?}");
    each_once(stuck.told(), N);
    assert_eq!(app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);

    // A redelivered alert message tries again and tells nobody twice.
    for i in 0..N {
        let summary = secmon::respond::process_alert(&app, "contoso", alert_n(i, "medium", "")).await.unwrap();
        assert!(
            summary.contains("tickets was already told") && summary.contains("stuck was already told"),
            "{summary}"
        );
    }
    assert_eq!(app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
    each_once(stuck.told(), N);
    each_once(hook_ids(&e.sink), N);
}

#[tokio::test(start_paused = true)]
async fn with_a_first_try_a_delivery_no_retry_can_fix_is_poisoned_at_once() {
    let e = engine(GROUPED, "http://127.0.0.1:9/unused").await;
    let app = e.app.with_first_try(true);
    e.sink.script("/hook", 1, 400, None, "bad payload");
    let summary = secmon::respond::process_alert(&app, "contoso", alert_n(0, "medium", "")).await.unwrap();
    assert!(summary.contains("tickets failed for good, poisoned"), "{summary}");
    assert_eq!(app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
    // Set aside with the job it would have been, never dropped: an operator can redrive it.
    let poisoned = app.queue.receive(&poison_name(DELIVERIES_QUEUE), 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(poisoned.len(), 1);
    let job = secmon::notify::deliver::Job::parse(&poisoned[0].body).unwrap();
    assert_eq!((job.target(), job.alert.as_ref().unwrap()["id"].as_str()), ("tickets", Some("alert-0")));
    let records = audit(&e.store).await;
    assert_eq!(records.iter().filter(|r| r["action"] == "notify_failed").count(), 1, "{records:?}");
}

#[tokio::test(start_paused = true)]
async fn with_a_first_try_grouping_still_waits_on_the_queue() {
    let e = engine(GROUPED, "http://127.0.0.1:9/unused").await;
    let app = e.app.with_first_try(true);
    for i in 0..3 {
        let summary =
            secmon::respond::process_alert(&app, "contoso", alert_n(i, "low", &format!("inc-{i}"))).await.unwrap();
        assert!(summary.contains("leads its incident's group until") && summary.contains("(queued)"), "{summary}");
    }
    let summary = secmon::respond::process_alert(&app, "contoso", alert_n(3, "high", "inc-9")).await.unwrap();
    assert!(summary.contains("notified tickets"), "{summary}");
    assert_eq!(hook_ids(&e.sink), ["alert-3"], "the critical alert is told at once");
    assert_eq!(app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 3, "the leaders wait as delayed jobs");
    assert!(standalone::drain(&app, 100).await.is_empty(), "not before their window closes");
    e.clock.advance(chrono::Duration::seconds(20));
    standalone::drain(&app, 100).await;
    each_once(hook_ids(&e.sink), 4);
    assert_eq!(app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn with_a_first_try_a_route_update_is_still_a_job_applied_once_the_receiver_was_told() {
    let e = engine(SET, "http://127.0.0.1:9/unused").await;
    let graph = Arc::new(FakeGraph::default());
    let mut app = e.app.with_first_try(true);
    app.graph = graph.clone();
    let raw = alert_n(0, "medium", "");
    graph.put_alert(raw.clone());
    let summary = secmon::respond::process_alert(&app, "contoso", raw).await.unwrap();
    assert!(summary.contains("notified tickets"), "{summary}");
    assert!(graph.updates().is_empty(), "the update is a job");
    assert_eq!(app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 1);
    standalone::drain(&app, 100).await;
    let updates = graph.updates();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0].1.status.as_deref(), Some("inProgress"));
    assert_eq!(app.queue.len(DELIVERIES_QUEUE).await.unwrap(), 0);
}
