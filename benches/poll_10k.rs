//! Benchmark: polling a backlog of 1,000 and of 10,000 alerts (`BENCH_POLL_SIZES`) against the Graph
//! emulator (TLS, client secret, file-backed SQLite queue or a counting one) with the windowed walk at
//! the default page size (2000) and the default cap per poll, so a backlog takes several polls, each
//! queueing behind the last. Reports alerts per second, Graph requests per alert, and the peak heap
//! above the starting point (a counting allocator), plus the process's VmHWM; the last row repeats the
//! largest size against a Graph that refuses `$orderby` (the fallback split). The walk holds one page
//! at a time, so the peak must not grow with the number of alerts. Prints a table and writes
//! `target/bench/poll.json`.
//!
//! Run: `cargo bench --bench poll_10k` (or `--profile dev` on a busy machine; the numbers say which).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secmon::app::App;
use secmon::clock::ManualClock;
use secmon::config::{Config, TenantConfig};
use secmon::graph::CredentialConfig;
use secmon::graph::client::GraphClient;
use secmon::store::sqlite::SqliteStore;
use secmon_emulator::{Emulator, Options};

struct Counting;
static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    // Set on the emulator's threads: the emulator keeps every alert and snapshots each listing, and
    // that is Graph's memory, not secmon's. Client and server share no allocations (they talk TCP).
    static EMULATOR_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    !EMULATOR_THREAD.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: delegates to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            let now = CURRENT.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            CURRENT.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }
}

/// Starts the emulator on a runtime of its own, on threads the allocator does not count.
fn start_emulator() -> (Emulator, std::sync::mpsc::Sender<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        EMULATOR_THREAD.set(true);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(|| EMULATOR_THREAD.set(true))
            .enable_all()
            .build()
            .unwrap();
        let emu = rt.block_on(Emulator::start(Options { tls: true, ..Options::default() })).unwrap();
        tx.send(emu).unwrap();
        // Keep the runtime (and so the server) alive until the benchmark is done with it.
        let _ = stop_rx.recv();
    });
    (rx.recv().unwrap(), stop_tx)
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// A queue that only counts, to separate the poller's own cost from the store's.
struct CountingQueue(AtomicUsize);

#[async_trait::async_trait]
impl secmon::store::Queue for CountingQueue {
    async fn send(&self, _: &str, _: &[u8]) -> secmon::store::StoreResult<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn send_after(&self, _: &str, _: &[u8], _: Duration) -> secmon::store::StoreResult<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn receive(
        &self,
        _: &str,
        _: usize,
        _: Duration,
    ) -> secmon::store::StoreResult<Vec<secmon::store::Received>> {
        Ok(Vec::new())
    }
    async fn delete(&self, _: &str, _: &secmon::store::Received) -> secmon::store::StoreResult<()> {
        Ok(())
    }
    async fn poison(&self, _: &str, _: &secmon::store::Received) -> secmon::store::StoreResult<()> {
        Ok(())
    }
    async fn len(&self, _: &str) -> secmon::store::StoreResult<usize> {
        Ok(self.0.load(Ordering::Relaxed))
    }
    fn max_dequeue(&self) -> u32 {
        5
    }
    fn max_body(&self) -> usize {
        secmon::store::azure::MAX_BODY
    }
}

struct Run {
    queue: &'static str,
    orderby: &'static str,
    alerts: usize,
    polls: usize,
    pages: usize,
    requests: u64,
    seconds: f64,
    peak_extra_bytes: usize,
}

async fn run(n: usize, sqlite_queue: bool, refused: bool, dir: &std::path::Path) -> Run {
    let (emu, _stop_emulator) = start_emulator();
    if refused {
        emu.set_listing(secmon_emulator::Listing {
            orderby: secmon_emulator::OrderBy::Refused,
            ..secmon_emulator::Listing::default()
        });
    }
    let tenant = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
    emu.add_client(tenant, "app", "bench-secret-value");
    let now = chrono::Utc::now();
    // The generator spaces versions 5 to 120 s apart: start far enough back that all are in the past.
    let span = chrono::Duration::seconds(125 * n as i64 + 3600);
    emu.generate_alerts(tenant, n, 42, now - span);
    let mut config =
        Config { graph_url: Some(emu.graph_url()), authority_url: Some(emu.authority_url()), ..Default::default() };
    config.poll.first_lookback = (span + chrono::Duration::days(1)).to_std().unwrap();
    config.tenants.push(TenantConfig {
        id: tenant.into(),
        name: "bench".into(),
        credential: Some(CredentialConfig {
            client_id: Some("app".into()),
            client_secret: Some("bench-secret-value".into()),
            ..Default::default()
        }),
    });
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let store = Arc::new(SqliteStore::open(dir.join(format!("bench-{n}-{sqlite_queue}-{refused}.db"))).unwrap());
    let queue: Arc<dyn secmon::store::Queue> =
        if sqlite_queue { store.clone() } else { Arc::new(CountingQueue(AtomicUsize::new(0))) };
    let graph = Arc::new(GraphClient::new(&config, http.clone()).unwrap());
    let app = App::builder(config)
        .store(store.clone())
        .queue(queue)
        .graph(graph)
        .http(http)
        .clock(Arc::new(ManualClock::new(now)))
        .build()
        .unwrap();
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    // A backlog larger than `poll.max_versions_per_poll` takes several polls (each a follow-up).
    let (mut polls, mut pages, mut requests, mut queued) = (0, 0, 0, 0);
    loop {
        let report = secmon::intake::poll::poll_tenant(&app, "bench", now).await.unwrap();
        polls += 1;
        pages += report.pages;
        requests += report.requests;
        queued += report.queued;
        if !report.more {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(queued, n);
    Run {
        queue: if sqlite_queue { "sqlite" } else { "counting" },
        orderby: if refused { "refused" } else { "honoured" },
        alerts: n,
        polls,
        pages,
        requests,
        seconds,
        peak_extra_bytes: (PEAK.load(Ordering::Relaxed) - base).max(0) as usize,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let profile = if cfg!(debug_assertions) { "debug" } else { "optimized" };
    // BENCH_POLL_SIZES=10000,100000 (scripts/bench.sh) measures larger polls.
    let sizes: Vec<usize> = std::env::var("BENCH_POLL_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    // BENCH_POLL_QUEUES=counting skips the SQLite-queue rows (the poller's own cost only).
    let queues: Vec<bool> = match std::env::var("BENCH_POLL_QUEUES").as_deref() {
        Ok("counting") => vec![false],
        Ok("sqlite") => vec![true],
        _ => vec![false, true],
    };
    let mut plan: Vec<(usize, bool, bool)> =
        queues.iter().flat_map(|sqlite| sizes.iter().map(move |n| (*n, *sqlite, false))).collect();
    if let Some(largest) = sizes.iter().max() {
        plan.push((*largest, false, true));
    }
    let runs: Vec<Run> =
        plan.into_iter().map(|(n, sqlite, refused)| rt.block_on(run(n, sqlite, refused, dir.path()))).collect();
    println!("poll benchmark ({profile} build; emulator in-process over TLS, its threads not counted)");
    println!(
        "{:>9} {:>9} {:>8} {:>6} {:>6} {:>9} {:>9} {:>12} {:>12} {:>16}",
        "queue",
        "$orderby",
        "alerts",
        "polls",
        "pages",
        "requests",
        "seconds",
        "alerts/s",
        "req/alert",
        "peak extra KiB"
    );
    for r in &runs {
        println!(
            "{:>9} {:>9} {:>8} {:>6} {:>6} {:>9} {:>9.2} {:>12.0} {:>12.5} {:>16}",
            r.queue,
            r.orderby,
            r.alerts,
            r.polls,
            r.pages,
            r.requests,
            r.seconds,
            r.alerts as f64 / r.seconds,
            r.requests as f64 / r.alerts as f64,
            r.peak_extra_bytes / 1024
        );
    }
    let hwm = vm_hwm_kib();
    println!("process VmHWM: {} KiB (includes the emulator holding every alert)", hwm.unwrap_or(0));
    let json = serde_json::json!({
        "profile": profile,
        "vm_hwm_kib": hwm,
        "runs": runs.iter().map(|r| serde_json::json!({
            "queue": r.queue, "orderby": r.orderby, "alerts": r.alerts, "polls": r.polls, "pages": r.pages,
            "requests": r.requests, "requests_per_alert": r.requests as f64 / r.alerts as f64, "seconds": r.seconds,
            "alerts_per_second": r.alerts as f64 / r.seconds, "peak_extra_bytes": r.peak_extra_bytes,
        })).collect::<Vec<_>>(),
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("poll.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
}
