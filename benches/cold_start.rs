//! Benchmark (not a test): cold start of `secmon serve`, from process start to the first answer on `/` (the
//! Functions host's readiness probe), median of many runs, next to the same for `/bin/true` as the floor
//! of starting any process here. Prints a table and writes `target/bench/cold_start.json`.
//!
//!   cargo bench --bench cold_start                   (BENCH_RUNS=50 by default)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `GET /` answered with 200, or `None` while nothing listens.
fn ready(addr: SocketAddr) -> Option<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    buf.starts_with(b"HTTP/1.1 200").then_some(())
}

fn serve_once(config: &Path) -> Duration {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .args(["serve", "--config"])
        .arg(config)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("secmon serve starts");
    loop {
        if ready(addr).is_some() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("secmon serve exited with {status} before answering");
        }
        if start.elapsed() > Duration::from_secs(30) {
            panic!("secmon serve did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = start.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    took
}

fn true_once() -> Duration {
    let start = Instant::now();
    Command::new("/bin/true").status().unwrap();
    start.elapsed()
}

fn stats(mut runs: Vec<Duration>) -> serde_json::Value {
    runs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    json!({"runs": runs.len(), "median_ms": ms(runs[runs.len() / 2]), "min_ms": ms(runs[0]),
           "p90_ms": ms(runs[runs.len() * 9 / 10]), "max_ms": ms(runs[runs.len() - 1])})
}

fn main() {
    let n: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("secmon.yaml");
    // The smallest valid config: one tenant (its credential comes from the environment, unused here).
    std::fs::write(
        &config,
        format!(
            "store: {{ sqlite: \"{}\" }}\ntenants:\n  - {{ id: 11111111-2222-3333-4444-555555555555, name: contoso }}\n",
            dir.path().join("secmon.db").display()
        ),
    )
    .unwrap();
    serve_once(&config); // creates the SQLite file; later runs open it, as a warm instance would
    let secmon: Vec<Duration> = (0..n).map(|_| serve_once(&config)).collect();
    let floor: Vec<Duration> = (0..n).map(|_| true_once()).collect();
    let profile = if cfg!(debug_assertions) { "debug" } else { "optimized" };
    let (s, f) = (stats(secmon), stats(floor));
    println!("cold start ({profile} build, {n} runs each)");
    println!("{:<34} {:>10} {:>10} {:>10}", "", "median ms", "min ms", "p90 ms");
    for (name, v) in [("secmon serve → first answer on /", &s), ("/bin/true (floor)", &f)] {
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!("{name:<34} {:>10.2} {:>10.2} {:>10.2}", f("median_ms"), f("min_ms"), f("p90_ms"));
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let json = json!({"bench": "cold_start", "profile": profile, "secmon_serve": s, "bin_true": f});
    std::fs::write(out.join("cold_start.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
}
