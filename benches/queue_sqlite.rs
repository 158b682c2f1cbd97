//! Benchmark (not a test): the SQLite queue's own cost, on a file as `secmon run` keeps it. 10,000
//! messages of 4 KB (the size of an alert's JSON) are sent one by one, then received 16 at a time, each
//! deleted after its receive, the way the worker does. Reported per phase: seconds, microseconds per
//! message, and the bytes this process wrote (`wchar` of `/proc/self/io`: the WAL pages of the commits
//! and the checkpoints). Prints a table and writes `target/bench/queue_sqlite.json`.
//!
//! Run: `cargo bench --bench queue_sqlite` (`BENCH_MESSAGES` and `BENCH_BODY` change the defaults).

use std::time::{Duration, Instant};

use secmon::store::Queue;
use secmon::store::sqlite::SqliteStore;
use serde_json::json;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Bytes this process has written so far (any file), 0 where `/proc` is not there.
fn written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

struct Phase {
    name: &'static str,
    seconds: f64,
    bytes: u64,
}

async fn measure<F: std::future::Future<Output = ()>>(name: &'static str, work: F) -> Phase {
    let (start, before) = (Instant::now(), written());
    work.await;
    Phase { name, seconds: start.elapsed().as_secs_f64(), bytes: written() - before }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (n, size) = (env("BENCH_MESSAGES", 10_000), env("BENCH_BODY", 4096));
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("secmon.db")).unwrap();
    // A body like an alert's JSON: text, not all one byte (SQLite does not compress, but be fair).
    let body = |i: usize| {
        let mut b = format!("{{\"id\":\"alert-{i:08}\",\"description\":\"").into_bytes();
        b.extend((0..size).map(|j| b'a' + ((i + j) % 26) as u8));
        b.truncate(size);
        b
    };
    let send = measure("send", async {
        for i in 0..n {
            store.send("alerts", &body(i)).await.unwrap();
        }
    })
    .await;
    let receive_delete = measure("receive + delete", async {
        let mut got = 0;
        while got < n {
            let batch = store.receive("alerts", 16, Duration::from_secs(300)).await.unwrap();
            assert!(!batch.is_empty(), "{got} of {n} received, then none");
            for msg in &batch {
                store.delete("alerts", msg).await.unwrap();
            }
            got += batch.len();
        }
    })
    .await;
    assert_eq!(store.len("alerts").await.unwrap(), 0);
    let phases = [send, receive_delete];
    println!("SQLite queue, {n} messages of {size} bytes, on a file");
    println!("{:<18} {:>9} {:>12} {:>14}", "phase", "seconds", "µs/message", "KB written/msg");
    for p in &phases {
        println!(
            "{:<18} {:>9.3} {:>12.1} {:>14.1}",
            p.name,
            p.seconds,
            p.seconds * 1e6 / n as f64,
            p.bytes as f64 / 1024.0 / n as f64
        );
    }
    let out = json!({
        "messages": n,
        "body_bytes": size,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "phases": phases.iter().map(|p| json!({
            "phase": p.name, "seconds": p.seconds, "bytes_written": p.bytes,
        })).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write("target/bench/queue_sqlite.json", serde_json::to_vec_pretty(&out).unwrap()).unwrap();
}
