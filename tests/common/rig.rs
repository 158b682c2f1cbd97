//! What every test against the Graph emulator builds the same way: an HTTP client that trusts the
//! emulator's test CA, retries that do not wait, and the `App` on a SQLite store with a manual clock.

use std::sync::Arc;
use std::time::Duration;

use secmon::app::App;
use secmon::audit::Record;
use secmon::clock::ManualClock;
use secmon::config::Config;
use secmon::graph::client::GraphClient;
use secmon::graph::retry::RetryPolicy;
use secmon::store::Store;
use secmon::store::sqlite::SqliteStore;
use secmon_emulator::Emulator;

/// A client that trusts the emulator's test CA (the emulator must run with `tls: true`).
pub fn tls_client(emu: &Emulator) -> reqwest::Client {
    let pem = emu.ca_pem().expect("the emulator runs with TLS");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

/// Two attempts per Graph call and no waiting: a fault pushed twice reaches the pipeline, and a test
/// never sleeps on a backoff.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        max_retry_after: Duration::ZERO,
        timeout: Duration::from_secs(10),
    }
}

/// The app of `config` on `store`, with the real Graph client over `http` ([`quick_retries`]) and
/// `clock`.
pub fn app(config: Config, store: Arc<SqliteStore>, http: reqwest::Client, clock: Arc<ManualClock>) -> App {
    let graph = GraphClient::new(&config, http.clone()).unwrap().with_policy(quick_retries());
    App::builder(config).backend(store).graph(Arc::new(graph)).http(http).clock(clock).build().unwrap()
}

/// Every audit record in `store`, stream by stream, in order.
pub async fn audit_records(store: &dyn Store) -> Vec<Record> {
    let mut out = Vec::new();
    for stream in store.list_streams("audit/").await.unwrap() {
        for r in store.read_stream(&stream).await.unwrap() {
            out.push(serde_json::from_slice(&r).unwrap());
        }
    }
    out
}
