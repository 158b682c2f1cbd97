//! A poll rig: the Graph emulator over TLS, the real client-secret credential, a SQLite store, a
//! manual clock and a sleeper that records waits instead of spending them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::clock::ManualClock;
use secmon::config::{Config, TenantConfig};
use secmon::graph::CredentialConfig;
use secmon::graph::client::GraphClient;
use secmon::graph::retry::{RecordingSleeper, RetryPolicy};
use secmon::intake::Message;
use secmon::store::hooked::{Hook, Hooked, Op};
use secmon::store::sqlite::SqliteStore;
use secmon::store::{StoreError, StoreResult};
use secmon_emulator::{Emulator, Options};
use serde_json::Value;

pub const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
pub const SECRET: &str = "s3cr3t~value-for-tests";

/// Tenant name → tenant id.
pub fn tenant_id(name: &str) -> String {
    let n = name.bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    format!("{n:08x}-0000-4000-8000-000000000001")
}

pub fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// Fails the watermark write on demand, as a crash between enqueue and watermark would; counts the
/// reads and writes of the seen windows, and can play another poll writing a tenant's seen window just
/// before one of this rig's writes.
pub struct CrashOnWatermark {
    pub crash_on_watermark: AtomicBool,
    /// Reads of any `seen/…` key.
    pub seen_reads: AtomicUsize,
    /// Compare-and-swap writes of any `seen/…` key.
    pub seen_writes: AtomicUsize,
    /// When non-zero: just before the seen window's write with this number (1 = the first), another
    /// writer adds [`INTERLOPER`] to that window's `versions`, directly in the store beneath.
    pub interlope_before_write: AtomicUsize,
    /// The store beneath, for the interloper.
    pub inner: Arc<SqliteStore>,
}

/// The version key another poll adds to a seen window (see [`CrashOnWatermark::interlope_before_write`]).
pub const INTERLOPER: &str = "interloper\u{1f}2026-11-26T11:59:00Z";

/// The rig's store: SQLite, with [`CrashOnWatermark`].
pub type CrashingStore = Hooked<CrashOnWatermark>;

#[async_trait]
impl Hook for CrashOnWatermark {
    async fn before(&self, op: &Op<'_>) -> StoreResult<()> {
        if matches!(op, Op::PutIf(key) if key.starts_with("watermark/"))
            && self.crash_on_watermark.load(Ordering::SeqCst)
        {
            return Err(StoreError::Backend("injected crash before the watermark write".into()));
        }
        match op {
            Op::Get(key) if key.starts_with("seen/") => {
                self.seen_reads.fetch_add(1, Ordering::SeqCst);
            }
            Op::PutIf(key) if key.starts_with("seen/") => {
                let n = self.seen_writes.fetch_add(1, Ordering::SeqCst) + 1;
                if n == self.interlope_before_write.load(Ordering::SeqCst) {
                    let at: DateTime<Utc> = "2026-11-26T11:59:00Z".parse().unwrap();
                    secmon::store::update(self.inner.as_ref(), key, |current| {
                        let mut w: secmon::intake::poll::SeenWindow =
                            current.map(|b| serde_json::from_slice(b).unwrap()).unwrap_or_default();
                        w.versions.insert(INTERLOPER.to_string(), at);
                        secmon::store::Change::Put(serde_json::to_vec(&w).unwrap(), ())
                    })
                    .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

pub struct Rig {
    pub emu: Emulator,
    pub app: App,
    pub sleeper: Arc<RecordingSleeper>,
    pub sqlite: Arc<SqliteStore>,
    pub store: Arc<CrashingStore>,
    pub clock: Arc<ManualClock>,
}

/// An HTTP client that trusts the emulator's test CA.
pub fn http_for(emu: &Emulator) -> reqwest::Client {
    let mut b = reqwest::Client::builder();
    if let Some(pem) = emu.ca_pem() {
        b = b.tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()]);
    }
    b.build().unwrap()
}

/// Points the process environment at the emulator's managed-identity endpoint, as App Service does, and
/// clears what would select another credential.
///
/// # Safety
/// Only for a test binary with a single test: no other thread may read the environment meanwhile.
pub unsafe fn use_managed_identity(emu: &Emulator) {
    // SAFETY: the caller guarantees no other thread reads the environment.
    unsafe {
        std::env::set_var("IDENTITY_ENDPOINT", emu.identity_endpoint());
        std::env::set_var("IDENTITY_HEADER", emu.identity_header());
        std::env::remove_var("AZURE_CLIENT_ID");
        std::env::remove_var("AZURE_CLIENT_SECRET");
        std::env::remove_var("AZURE_FEDERATED_TOKEN_FILE");
    }
}

pub async fn emulator(page_size: usize) -> Emulator {
    Emulator::start(Options { tls: true, page_size, ..Options::default() }).await.unwrap()
}

/// A config for `tenants` (names), each with the client-secret credential registered in the emulator.
pub fn config_for(emu: &Emulator, tenants: &[&str]) -> Config {
    let mut config =
        Config { graph_url: Some(emu.graph_url()), authority_url: Some(emu.authority_url()), ..Default::default() };
    for name in tenants {
        emu.add_client(&tenant_id(name), CLIENT_ID, SECRET);
        config.tenants.push(TenantConfig {
            id: tenant_id(name),
            name: name.to_string(),
            credential: Some(CredentialConfig {
                client_id: Some(CLIENT_ID.into()),
                client_secret: Some(SECRET.into()),
                ..Default::default()
            }),
        });
    }
    config
}

pub fn rig_with(emu: Emulator, config: Config, now: DateTime<Utc>) -> Rig {
    let sleeper = Arc::new(RecordingSleeper::default());
    let http = http_for(&emu);
    let graph = GraphClient::new(&config, http.clone())
        .unwrap()
        .with_sleeper(sleeper.clone())
        .with_policy(RetryPolicy { timeout: Duration::from_secs(10), ..RetryPolicy::default() });
    let sqlite = Arc::new(SqliteStore::in_memory().unwrap());
    let hook = CrashOnWatermark {
        crash_on_watermark: AtomicBool::new(false),
        seen_reads: AtomicUsize::new(0),
        seen_writes: AtomicUsize::new(0),
        interlope_before_write: AtomicUsize::new(0),
        inner: sqlite.clone(),
    };
    let store = Arc::new(Hooked::new(sqlite.clone(), hook));
    let clock = Arc::new(ManualClock::new(now));
    let app = App::builder(config)
        .store(store.clone())
        .queue(sqlite.clone())
        .graph(Arc::new(graph))
        .http(http)
        .clock(clock.clone())
        .build()
        .unwrap();
    Rig { emu, app, sleeper, sqlite, store, clock }
}

/// A rig whose emulator pages by `page_size` and whose polls ask for pages of that size (`$top`).
pub async fn rig(tenants: &[&str], page_size: usize, now: DateTime<Utc>, tweak: impl FnOnce(&mut Config)) -> Rig {
    let emu = emulator(page_size).await;
    let mut config = config_for(&emu, tenants);
    config.poll.page_size = Some(page_size as u32);
    tweak(&mut config);
    rig_with(emu, config, now)
}

/// Takes every message off the alerts queue: (tenant, alert JSON).
pub async fn drain(rig: &Rig) -> Vec<(String, Value)> {
    use secmon::store::Queue;
    let mut out = Vec::new();
    loop {
        let got = rig.sqlite.receive(secmon::store::ALERTS_QUEUE, 500, Duration::from_secs(300)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        for m in got {
            let msg = Message::parse(&m.body).unwrap().resolve(rig.sqlite.as_ref()).await.unwrap();
            let Message::Alert { tenant, alert } = msg else { panic!("unexpected message {msg:?}") };
            out.push((tenant, alert));
            Queue::delete(rig.sqlite.as_ref(), secmon::store::ALERTS_QUEUE, &m).await.unwrap();
        }
    }
}

/// Version key of a queued or seeded alert.
pub fn version(alert: &Value) -> (String, String) {
    (alert["id"].as_str().unwrap_or("").to_string(), alert["lastUpdateDateTime"].as_str().unwrap_or("").to_string())
}

/// How many times each version was queued.
pub fn counts(queued: &[(String, Value)]) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for (_, a) in queued {
        *m.entry(version(a)).or_insert(0) += 1;
    }
    m
}
