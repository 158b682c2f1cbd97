//! Benchmark (not a test): end to end, side by side with Prometheus Alertmanager. The same N alerts go in,
//! and the clock runs until every notification has reached a local webhook sink (the Graph emulator's
//! `/sink/…`, in this process, for both). Reported for each: seconds, notifications per second, CPU
//! seconds (user + system, from `/proc/<pid>/stat`, over the measured window), peak resident memory
//! (`VmHWM` of the whole process life) and bytes written (`wchar` of `/proc/<pid>/io` over the window:
//! files and sockets); then the ratios secmon / Alertmanager.
//!
//! - **Alertmanager** (`prometheus-alertmanager`, started here on loopback with a generated config:
//!   grouping off — `group_by: ['...']`, `group_wait: 0s`, `group_interval: 1s` — and one webhook
//!   receiver): the alerts are POSTed to `/api/v2/alerts` in batches of 100; the clock starts before the
//!   first POST.
//! - **secmon** (`secmon run --listen`, the standalone pipeline with its SQLite store and the default
//!   five-minute poll schedule): the alerts appear in the emulator's Graph at once and the clock starts;
//!   then a signed doorbell (`POST /api/doorbell`) tells secmon to poll, as a push source would. secmon
//!   lists them, queues each, evaluates the rules and routes, claims, sends a signed webhook, completes
//!   the claim and audits it. With `BENCH_SECMON_POLL=1` a second secmon side polls every second and
//!   rings no doorbell (up to one second of its figure is the wait for the next poll).
//!
//! Each side prints when its first, 10 %, 50 % and 90 % notifications arrived. `BENCH_KEEP=1` keeps the
//! run's directory (secmon's stores, configs and logs; `BENCH_SECMON_LOG=info` for a full log);
//! `BENCH_SECMON_WORKERS=n` sets secmon's `worker.concurrency`.
//!
//! The two do different work per alert (Alertmanager keeps alerts in memory; secmon makes every effect
//! durable before and after it), which is the point of showing the cost side by side.
//!
//!   cargo bench --bench vs_alertmanager             (BENCH_ALERTS=1000; ALERTMANAGER=path to the binary)
//!
//! Prints a table and writes `target/bench/vs_alertmanager.json`. Without an Alertmanager binary it
//! measures secmon alone and says so.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secmon::intake::webhook::sign_doorbell;
use secmon_emulator::{Emulator, Options};
use serde_json::{Value, json};

/// This process is the stand-in for Graph and the sink, and shares the two sides' cores, which the
/// real Graph does not: it allocates with mimalloc, as `secmon` does, so that its own malloc cost
/// (a tenth of its CPU with glibc's) weighs less on either side's figure.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANT_ID: &str = "4a1c9a57-7b5e-4d63-8a0e-2b1f9d3c6e10";
const CLIENT_SECRET: &str = "bench-client-secret-6a2f";
const DOORBELL_KEY: &str = "bench-doorbell-key-5c1e";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

/// User + system CPU seconds of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / clock_ticks()
}

/// Peak resident set (`VmHWM`) in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes a process has handed to `write` and its kin so far (`wchar` of `/proc/<pid>/io`: the
/// store's WAL and checkpoints for secmon, its snapshots for Alertmanager; sockets included).
fn written_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// One side's figures.
struct Side {
    name: &'static str,
    alerts: usize,
    seconds: f64,
    cpu_seconds: f64,
    peak_kib: u64,
    written: u64,
    /// CPU seconds of this process over the same window: the emulator (Graph, the sink) and, for
    /// Alertmanager, the loop that POSTs the alerts.
    bench_cpu: f64,
}

/// A process's counters when the clock starts, and this process's CPU.
struct Start {
    pid: u32,
    cpu: f64,
    written: u64,
    bench_cpu: f64,
}

impl Start {
    fn now(pid: u32) -> Start {
        Start { pid, cpu: cpu_seconds(pid), written: written_bytes(pid), bench_cpu: cpu_seconds(std::process::id()) }
    }

    /// The side's figures since then, `seconds` after the clock started.
    fn side(self, name: &'static str, alerts: usize, seconds: f64) -> Side {
        Side {
            name,
            alerts,
            seconds,
            cpu_seconds: cpu_seconds(self.pid) - self.cpu,
            peak_kib: peak_kib(self.pid),
            written: written_bytes(self.pid) - self.written,
            bench_cpu: cpu_seconds(std::process::id()) - self.bench_cpu,
        }
    }
}

impl Side {
    fn json(&self) -> Value {
        json!({"name": self.name, "alerts": self.alerts, "seconds": self.seconds,
               "notifications_per_second": self.alerts as f64 / self.seconds,
               "cpu_seconds": self.cpu_seconds, "peak_rss_kib": self.peak_kib, "written_bytes": self.written,
               "bench_cpu_seconds": self.bench_cpu})
    }
}

/// Waits until the sink holds `n` notified alerts (counted by `count`), or panics after `limit`. Each
/// look reads only the deliveries that are new since the last one: copying and parsing every delivery
/// every 5 ms (as an earlier version did) cost this process more CPU than either side, on the same
/// two cores, and held the emulator's lock against the sink.
async fn wait_for(
    emu: &Emulator,
    sink: &str,
    n: usize,
    start: Instant,
    limit: Duration,
    count: impl Fn(&[u8]) -> usize,
) {
    let (mut seen, mut got) = (0, 0);
    let mut marks = vec![1, n / 10, n / 2, n * 9 / 10];
    loop {
        let new = emu.webhook_deliveries_from(sink, seen);
        seen += new.len();
        got += new.iter().map(|(_, body)| count(body)).sum::<usize>();
        while marks.first().is_some_and(|m| got >= *m) {
            eprintln!("{sink}: {} notifications after {:.2} s", marks.remove(0), start.elapsed().as_secs_f64());
        }
        if got >= n {
            return;
        }
        assert!(start.elapsed() < limit, "{sink}: only {got} of {n} notifications after {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `url` answers 2xx, or panics after 30 s.
async fn ready(http: &reqwest::Client, url: &str, what: &str) {
    let up = Instant::now();
    while !http.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(up.elapsed() < Duration::from_secs(30), "{what} did not get ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alertmanager_binary() -> Option<String> {
    let candidates = [std::env::var("ALERTMANAGER").ok(), Some("/usr/bin/prometheus-alertmanager".into())];
    candidates.into_iter().flatten().find(|p| Path::new(p).exists())
}

async fn alertmanager(emu: &Emulator, bin: &str, n: usize, dir: &Path) -> Side {
    let port = free_port();
    let config = format!(
        "route:\n  receiver: sink\n  group_by: ['...']\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 24h\n\
         receivers:\n  - name: sink\n    webhook_configs:\n      - url: {}\n        send_resolved: false\n",
        emu.webhook_sink_url("alertmanager")
    );
    std::fs::write(dir.join("alertmanager.yml"), config).unwrap();
    std::fs::write(dir.join("ca.pem"), emu.ca_pem().unwrap()).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        // The sink speaks TLS with the emulator's test CA, for both sides alike.
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("alertmanager.log")).unwrap())
        .spawn()
        .expect("alertmanager starts");
    let child = Stopped(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    ready(&http, &format!("{base}/-/ready"), "alertmanager").await;
    let pid = child.0.id();
    let counters = Start::now(pid);
    let now = chrono::Utc::now().to_rfc3339();
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"labels": {"alertname": "DefenderAlert", "alert_id": format!("bench-{i}"), "severity": "high"},
                       "annotations": {"title": format!("Suspicious activity {i}")}, "startsAt": now})
            })
            .collect();
        let r = http.post(format!("{base}/api/v2/alerts")).json(&batch).send().await.unwrap();
        assert!(r.status().is_success(), "alertmanager refused alerts: {}", r.status());
    }
    wait_for(emu, "alertmanager", n, start, Duration::from_secs(600), |body| {
        serde_json::from_slice::<Value>(body).ok().and_then(|v| v["alerts"].as_array().map(Vec::len)).unwrap_or(0)
    })
    .await;
    let side = counters.side("alertmanager", n, start.elapsed().as_secs_f64());
    drop(child);
    side
}

/// A child process stopped with SIGTERM when dropped, also when the benchmark panics.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// How secmon learns of the alerts.
#[derive(Clone, Copy, PartialEq)]
enum Told {
    /// A signed doorbell (`POST /api/doorbell`) rung when the alerts appear, as a push source would (the
    /// counterpart of Alertmanager's push); the timer keeps its default schedule (every 5 minutes).
    Doorbell,
    /// The timer alone, every second: every poll lists the whole overlap (10 minutes) again.
    PollEverySecond,
}

async fn secmon(emu: &Emulator, n: usize, dir: &Path, told: Told) -> Side {
    let dir = dir.join(match told {
        Told::Doorbell => "secmon-doorbell",
        Told::PollEverySecond => "secmon-poll",
    });
    std::fs::create_dir_all(&dir).unwrap();
    emu.add_client(TENANT_ID, "bench-app", CLIENT_SECRET);
    emu.clear_alerts(TENANT_ID);
    std::fs::write(dir.join("ca.pem"), emu.ca_pem().unwrap()).unwrap();
    let sink = dir.file_name().unwrap().to_string_lossy().into_owned();
    let poll = match told {
        Told::Doorbell => r#"{ overlap: 10m, first_lookback: 24h, page_size: 1000, max_requests_per_minute: 6000 }"#,
        Told::PollEverySecond => {
            r#"{ schedule: "* * * * * *", overlap: 10m, first_lookback: 24h, page_size: 1000, max_requests_per_minute: 6000 }"#
        }
    };
    let config = format!(
        r#"graph_url: {graph}
authority_url: {authority}
store: {{ sqlite: "{db}" }}
tenants:
  - {{ id: {TENANT_ID}, name: bench, credential: {{ client_id: bench-app, client_secret: "${{BENCH_CLIENT_SECRET}}" }} }}
poll: {poll}
webhook: {{ doorbell_secret: "${{BENCH_DOORBELL_KEY}}" }}
{workers}routes:
  - receivers: [tickets]
receivers:
  tickets: {{ webhook: {{ url: "{sink}", secret: "${{BENCH_HOOK_KEY}}" }} }}
"#,
        graph = emu.graph_url(),
        authority = emu.authority_url(),
        db = dir.join("secmon.db").display(),
        sink = emu.webhook_sink_url(&sink),
        // BENCH_SECMON_WORKERS=n sets `worker.concurrency` (else secmon's default).
        workers = std::env::var("BENCH_SECMON_WORKERS")
            .map(|n| format!("worker: {{ concurrency: {n} }}\n"))
            .unwrap_or_default(),
    );
    std::fs::write(dir.join("secmon.yaml"), config).unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(dir.join("secmon.yaml"))
        .env("BENCH_CLIENT_SECRET", CLIENT_SECRET)
        .env("BENCH_HOOK_KEY", "bench-hmac-key-0123456789abcdef")
        .env("BENCH_DOORBELL_KEY", DOORBELL_KEY)
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .env("RUST_LOG", std::env::var("BENCH_SECMON_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("secmon.log")).unwrap())
        .spawn()
        .expect("secmon starts");
    let child = Stopped(child);
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    ready(&http, &format!("{base}/api/health"), "secmon").await;
    // Let it make its first (empty) poll, as a running instance would have.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // N alerts updated just now, all open, as Graph would show them.
    let now = chrono::Utc::now();
    emu.generate_alerts(TENANT_ID, n, 7, now - chrono::Duration::hours(1));
    let fresh: Vec<Value> = emu
        .alerts(TENANT_ID)
        .into_iter()
        .enumerate()
        .map(|(i, mut a)| {
            a["status"] = json!("new");
            let at = now + chrono::Duration::microseconds(i as i64);
            a["lastUpdateDateTime"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            a
        })
        .collect();
    let counters = Start::now(pid);
    let start = Instant::now();
    emu.seed_alerts(TENANT_ID, fresh);
    if told == Told::Doorbell {
        let body = br#"{"tenant": "bench"}"#;
        let ts = chrono::Utc::now().timestamp();
        let r = http
            .post(format!("{base}/api/doorbell"))
            .header("content-type", "application/json")
            .header("x-secmon-timestamp", ts.to_string())
            .header("x-secmon-signature", sign_doorbell(DOORBELL_KEY.as_bytes(), ts, body))
            .body(&body[..])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "the doorbell was refused: {}", r.text().await.unwrap_or_default());
    }
    wait_for(emu, &sink, n, start, Duration::from_secs(600), |_| 1).await;
    let seconds = start.elapsed().as_secs_f64();
    let name = match told {
        Told::Doorbell => "secmon",
        Told::PollEverySecond => "secmon (poll)",
    };
    let side = counters.side(name, n, seconds);
    drop(child);
    side
}

fn main() {
    let n: usize = std::env::var("BENCH_ALERTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // BENCH_KEEP=1 keeps the run's directory (secmon's store, config and log) and says where.
    let (dir, _cleanup) = if std::env::var("BENCH_KEEP").is_ok_and(|v| v == "1") {
        let kept = dir.keep();
        eprintln!("keeping {}", kept.display());
        (kept, None)
    } else {
        (dir.path().to_path_buf(), Some(dir))
    };
    let profile = if cfg!(debug_assertions) { "debug" } else { "optimized" };
    let sides: Vec<Side> = rt.block_on(async {
        let emu = Emulator::start(Options { tls: true, page_size: 1000, ..Options::default() }).await.unwrap();
        let mut sides = Vec::new();
        match alertmanager_binary() {
            Some(bin) => sides.push(alertmanager(&emu, &bin, n, &dir).await),
            None => eprintln!("no Alertmanager binary (install prometheus-alertmanager or set ALERTMANAGER)"),
        }
        sides.push(secmon(&emu, n, &dir, Told::Doorbell).await);
        if std::env::var("BENCH_SECMON_POLL").is_ok_and(|v| v != "0") {
            sides.push(secmon(&emu, n, &dir, Told::PollEverySecond).await);
        }
        sides
    });
    println!("end to end: {n} alerts in → every notification at a local webhook sink (secmon: {profile} build)");
    println!(
        "{:<14} {:>9} {:>11} {:>12} {:>14} {:>12} {:>13}",
        "", "seconds", "notif/s", "CPU seconds", "peak RSS MiB", "written MiB", "bench CPU"
    );
    for s in &sides {
        println!(
            "{:<14} {:>9.2} {:>11.0} {:>12.2} {:>14.1} {:>12.1} {:>13.2}",
            s.name,
            s.seconds,
            s.alerts as f64 / s.seconds,
            s.cpu_seconds,
            s.peak_kib as f64 / 1024.0,
            s.written as f64 / (1024.0 * 1024.0),
            s.bench_cpu
        );
    }
    let ratio = match sides.as_slice() {
        // Alertmanager against secmon told by the doorbell (a polling side, when asked for, is printed too).
        [am, sm, ..] if am.name == "alertmanager" => {
            let r = json!({"seconds": sm.seconds / am.seconds, "cpu_seconds": sm.cpu_seconds / am.cpu_seconds.max(0.01),
                           "peak_rss": sm.peak_kib as f64 / am.peak_kib.max(1) as f64});
            println!(
                "{:<14} {:>9.2} {:>11} {:>12.2} {:>14.2}   (secmon / alertmanager)",
                "ratio",
                r["seconds"].as_f64().unwrap(),
                "",
                r["cpu_seconds"].as_f64().unwrap(),
                r["peak_rss"].as_f64().unwrap()
            );
            r
        }
        _ => Value::Null,
    };
    let version = alertmanager_binary().and_then(|b| Command::new(b).arg("--version").output().ok()).map(|o| {
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        text.lines().next().unwrap_or_default().to_string()
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = json!({"bench": "vs_alertmanager", "profile": profile, "alerts": n, "alertmanager_version": version,
                      "sides": sides.iter().map(Side::json).collect::<Vec<_>>(), "ratio_secmon_over_alertmanager": ratio});
    std::fs::write(out.join("vs_alertmanager.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
}
