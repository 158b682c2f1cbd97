//! Fenced effects against the Graph emulator: two workers on one store process the same alert message
//! while Graph throttles the close with a `Retry-After` longer than the claim's lease. The first worker
//! keeps its claim by renewing it while it waits; the second finds it held and leaves the message for
//! later; when the message comes back the close is done. Exactly one PATCH, one comment, one audit
//! record, and the circuit breaker counts one close.
//!
//! Time is Tokio's paused clock, and the store's clock follows it, so leases, renewals and Graph's
//! `Retry-After` all run on one simulated time line. The emulator serves from a runtime of its own on
//! real time: a paused runtime that waits for a socket jumps to its next timer, which is harmless here
//! (the network is merely slow in simulated time; a heartbeat keeps each jump to a second) but would
//! stall a server living on it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::audit::{self, Action, Record};
use secmon::clock::Clock;
use secmon::graph::client::GraphClient;
use secmon::graph::retry::RetryPolicy;
use secmon::respond::{RespondError, process_alert};
use secmon::store::sqlite::SqliteStore;
use secmon_emulator::{Emulator, Fault, Options};

const TENANT_ID: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
const CLIENT_ID: &str = "0c5bd3d2-6b6e-4c47-9a0c-2b1f7f8d9e10";
const SECRET: &str = "fenced-tests~secret";
const HIDDEN_FILE: &str = "da637551227677560813_-961444813";
/// Longer than the close claim's lease (five minutes).
/// Far longer than the 300 s close lease, and than the simulated time a real-time request to the emulator
/// can let pass (see the heartbeat), so the second worker always comes while the first still waits.
const RETRY_AFTER_SECS: u64 = 3600;

/// Tokio's (paused) time as wall-clock time, so the store's leases move with the renewals' timers.
struct TokioClock {
    start: tokio::time::Instant,
    at: DateTime<Utc>,
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.at + chrono::Duration::from_std(self.start.elapsed()).unwrap()
    }
}

fn config(emu: &Emulator, at: DateTime<Utc>) -> secmon::config::Config {
    let (graph, authority) = (emu.graph_url(), emu.authority_url());
    let text = format!(
        "graph_url: {graph}\nauthority_url: {authority}\ntenants:\n  - {{ id: {TENANT_ID}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }} }}\nclose_rules:\n  - id: lab-hidden-file\n    owner: secops@contoso.com\n    expires: 2027-01-31\n    mode: enforce\n    when: 'alert.serviceSource == \"microsoftDefenderForEndpoint\" && alert.title.containsIgnoreCase(\"hidden file\")'\n    classification: informationalExpectedActivity\n    determination: securityTesting\n    comment: Lab machine, ticket SEC-1234\n"
    );
    secmon::setup::load_str(&text, std::path::Path::new("test.yaml"), &|_| None, at).unwrap().config
}

/// One worker: its own Graph client and App over a handle of its own on the shared store file.
fn worker(emu: &Emulator, path: &std::path::Path, clock: Arc<TokioClock>, at: DateTime<Utc>) -> App {
    let store = Arc::new(SqliteStore::open(path).unwrap().with_clock(clock.clone()));
    let http = common::rig::tls_client(emu);
    let config = config(emu, at);
    // Honour a long Retry-After; no request timeout shorter than the simulated waits.
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        max_retry_after: Duration::from_secs(3600),
        timeout: Duration::from_secs(86_400),
    };
    let graph = GraphClient::new(&config, http.clone()).unwrap().with_policy(policy);
    App::builder(config).backend(store).graph(Arc::new(graph)).http(http).clock(clock).build().unwrap()
}

fn emulator_on_its_own_runtime() -> Emulator {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            tx.send(Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap()).unwrap();
            std::future::pending::<()>().await
        })
    });
    rx.recv().unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_workers_and_a_retry_after_longer_than_the_lease_close_once() {
    let at: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
    let emu = emulator_on_its_own_runtime();
    emu.seed_samples(TENANT_ID);
    emu.add_client(TENANT_ID, CLIENT_ID, SECRET);
    emu.faults().push(Fault::status(HIDDEN_FILE, 429, Some(RETRY_AFTER_SECS)).method("PATCH"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let clock = Arc::new(TokioClock { start: tokio::time::Instant::now(), at });
    let (first, second) = (worker(&emu, &path, clock.clone(), at), worker(&emu, &path, clock, at));
    let alert = emu.alert(TENANT_ID, HIDDEN_FILE).unwrap();

    let slow = process_alert(&first, "contoso", alert.clone());
    let rival = async {
        // Graph throttles the first worker's PATCH; the message then reappears to a second worker
        // after the first worker's lease would have run out, while the first still waits.
        while !emu.requests().iter().any(|r| r.method == "PATCH" && r.status == Some(429)) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(400)).await;
        let held = process_alert(&second, "contoso", alert.clone()).await;
        // The queue hands the message back every minute until it is done.
        let mut later = Vec::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let outcome = process_alert(&second, "contoso", alert.clone()).await;
            let done = outcome.is_ok();
            later.push(outcome);
            if done {
                break;
            }
        }
        (held, later)
    };
    // A heartbeat, so that a wait for a socket moves simulated time in small steps (the emulator answers
    // in real time; without it paused time would jump straight to the next timer, the request timeout).
    let heartbeat = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (slow, (held, later)) = tokio::select! {
        both = async { tokio::join!(slow, rival) } => both,
        () = heartbeat => unreachable!("the heartbeat never ends"),
    };
    assert!(slow.unwrap().contains("lab-hidden-file"));
    assert!(matches!(held, Err(RespondError::Retry(ref m)) if m.contains("another worker")), "{held:?}");
    assert!(later.last().is_some_and(Result::is_ok), "{later:?}");
    assert!(
        later.iter().all(|o| matches!(o, Ok(_) | Err(RespondError::Retry(_)))),
        "the second worker only ever waits: {later:?}"
    );

    let patch_requests = emu.requests().into_iter().filter(|r| r.method == "PATCH").count();
    assert_eq!(patch_requests, 2, "the throttled PATCH and its one retry");
    assert_eq!(emu.patches().len(), 1);
    assert_eq!(emu.comments().len(), 1);
    let store = first.store.as_ref();
    let mut records = Vec::new();
    for stream in store.list_streams("audit/").await.unwrap() {
        for raw in store.read_stream(&stream).await.unwrap() {
            records.push(serde_json::from_slice::<Record>(&raw).unwrap());
        }
    }
    assert_eq!(records.iter().map(|r| r.action).collect::<Vec<_>>(), [Action::Close]);
    assert!(audit::verify(store, None).await.unwrap().iter().all(|r| r.ok()));
    let mut counted = 0;
    for key in store.list("breaker/").await.unwrap() {
        counted += String::from_utf8(store.get(&key).await.unwrap().unwrap().value).unwrap().parse::<u32>().unwrap();
    }
    assert_eq!(counted, 1, "the breaker counts the close once");
}
