//! Every command with machine output prints JSON lines of objects with a `kind` first
//! (docs/operations.md, "Command output"); the queue tools end to end on a SQLite store.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use secmon::store::sqlite::SqliteStore;
use secmon::store::{Queue, QueueAdmin};
use serde_json::Value;

const CONFIG: &str = r#"
store: { sqlite: "STORE" }
tenants:
  - { id: 11111111-2222-3333-4444-555555555555, name: contoso, credential: { client_id: 00000000-0000-0000-0000-000000000001, client_secret: "${CLI_SECRET}" } }
routes:
  - { name: all, receivers: [soc-teams] }
receivers:
  soc-teams: { teams: { webhook_url: "${CLI_TEAMS_URL}" } }
"#;

fn secmon(dir: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_secmon"))
        .args(args)
        .arg("--config")
        .arg(dir.join("secmon.yaml"))
        .env("CLI_SECRET", "s3cret-value")
        .env("CLI_TEAMS_URL", "https://example.invalid/workflows?sig=abc")
        .env_remove("SECMON_STORE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: not a JSON line ({e}): {l}")))
        .collect();
    (out.status.code().unwrap_or(-1), lines, String::from_utf8_lossy(&out.stderr).to_string())
}

fn kinds(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["kind"].as_str().expect("every line has a kind")).collect()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secmon.db");
    std::fs::write(dir.path().join("secmon.yaml"), CONFIG.replace("STORE", &db.display().to_string())).unwrap();
    (dir, db)
}

#[tokio::test]
async fn queue_tools_list_redrive_and_purge_with_an_audit_record() {
    let (dir, db) = setup();
    let store = SqliteStore::open(&db).unwrap();
    let alert =
        r#"{"kind":"alert","tenant":"contoso","alert":{"id":"da1","lastUpdateDateTime":"2026-11-26T10:00:00Z"}}"#;
    for body in [alert, "not a message", r#"{"kind":"poll","tenant":"contoso","reason":"doorbell"}"#] {
        store.send("alerts", body.as_bytes()).await.unwrap();
    }
    for m in store.receive("alerts", 10, Duration::from_secs(30)).await.unwrap() {
        store.poison("alerts", &m).await.unwrap();
    }

    let (code, lines, _) = secmon(dir.path(), &["queue", "stats"]);
    assert_eq!(code, 0);
    assert_eq!(kinds(&lines), ["queue_stats"]);
    assert_eq!(
        (lines[0]["queue"].as_str(), lines[0]["depth"].as_u64(), lines[0]["poison"].as_u64()),
        (Some("alerts"), Some(0), Some(3))
    );
    assert_eq!(lines[0]["tenants"]["contoso"]["poison"], 2);

    let (code, lines, _) = secmon(dir.path(), &["queue", "poison", "list"]);
    assert_eq!(code, 0);
    assert_eq!(kinds(&lines), ["poison_message", "poison_message", "poison_message", "summary"]);
    assert_eq!(lines[0]["alert_id"], "da1");
    let (garbage, poll) = (lines[1]["id"].as_str().unwrap().to_string(), lines[2]["id"].as_str().unwrap().to_string());

    let (code, lines, _) = secmon(dir.path(), &["queue", "poison", "show", &garbage]);
    assert_eq!((code, kinds(&lines)), (0, vec!["poison_message"]));
    assert_eq!(lines[0]["body"], "not a message");

    let (code, _, err) = secmon(dir.path(), &["queue", "poison", "redrive"]);
    assert_eq!(code, 2, "redrive needs ids or --all: {err}");
    let (code, lines, _) = secmon(dir.path(), &["queue", "poison", "redrive", &poll]);
    assert_eq!(code, 0);
    assert_eq!(kinds(&lines), ["poison_action", "summary"]);
    assert_eq!(lines[0]["outcome"], "redriven");
    assert_eq!(store.len("alerts").await.unwrap(), 1);

    let (code, _, err) = secmon(dir.path(), &["queue", "poison", "purge"]);
    assert_eq!(code, 2);
    assert!(err.contains("would purge 2 messages"), "{err}");
    assert_eq!(store.len("alerts-poison").await.unwrap(), 2, "nothing purged without --yes");
    let (code, lines, _) = secmon(dir.path(), &["queue", "poison", "purge", "--older-than", "1h", "--yes"]);
    assert_eq!((code, lines.len()), (0, 1), "nothing is an hour old: {lines:?}");
    let (code, lines, _) = secmon(dir.path(), &["queue", "poison", "purge", "--yes"]);
    assert_eq!(code, 0);
    assert_eq!(kinds(&lines), ["poison_action", "poison_action", "summary"]);
    assert_eq!(store.len("alerts-poison").await.unwrap(), 0);

    // The purge is in the audit trail, which still verifies.
    let (code, lines, _) = secmon(dir.path(), &["audit", "export", "--since", "2000-01-01"]);
    assert_eq!(code, 0);
    assert!(kinds(&lines).iter().all(|k| *k == "audit_record"));
    let purged: Vec<&Value> = lines.iter().filter(|l| l["action"] == "poison_purged").collect();
    assert_eq!(purged.len(), 2, "{lines:?}");
    assert!(purged.iter().any(|r| r["alert_id"] == "da1" && r["tenant"] == "contoso"));
    let (code, lines, _) = secmon(dir.path(), &["audit", "verify"]);
    assert_eq!(code, 0);
    assert!(kinds(&lines).iter().all(|k| *k == "audit_stream") && !lines.is_empty());
    assert!(store.peek("alerts-poison", 10).await.unwrap().messages.is_empty());
}

#[test]
fn rules_test_prints_one_decision_line_per_alert() {
    let (dir, _) = setup();
    let alert = dir.path().join("alert.json");
    std::fs::write(
        &alert,
        r#"{"id":"a1","title":"t","severity":"low","status":"new","lastUpdateDateTime":"2026-11-26T10:00:00Z"}"#,
    )
    .unwrap();
    let (code, lines, _) = secmon(dir.path(), &["rules", "test", alert.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(kinds(&lines), ["decision"]);
    assert_eq!(lines[0]["receivers"], serde_json::json!(["soc-teams"]));
}

/// `work --once` on an empty queue: one summary line, exit 0.
#[test]
fn work_once_drains_and_says_so() {
    let (dir, _) = setup();
    let (code, lines, err) = secmon(dir.path(), &["work", "--once"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(kinds(&lines), ["work"]);
    assert_eq!(
        (lines[0]["done"].as_u64(), lines[0]["poisoned"].as_u64(), lines[0]["retry"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
}

/// A message `work --once` cannot process goes to the poison queue, and the exit code says so.
#[tokio::test]
async fn work_once_fails_when_a_message_is_poisoned() {
    let (dir, db) = setup();
    let store = SqliteStore::open(&db).unwrap();
    store.send("alerts", b"not a message").await.unwrap();
    let (code, lines, err) = secmon(dir.path(), &["work", "--once"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(lines[0]["poisoned"], 1);
    assert_eq!(store.len("alerts-poison").await.unwrap(), 1);
}

/// Dead-lease recovery: a process died holding a message (received, never deleted); the next
/// `work --once` gets it at once instead of after its 5-minute visibility timeout.
#[tokio::test]
async fn work_once_after_a_crash_redelivers_what_was_in_flight() {
    use secmon::store::sqlite::Instance;
    let (dir, db) = setup();
    let gone = {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let crashed =
        SqliteStore::open(&db).unwrap().as_instance(Instance { pid: gone, ..Instance::this_process() }).unwrap();
    crashed.send("alerts", b"not a message").await.unwrap();
    assert_eq!(crashed.receive("alerts", 10, Duration::from_secs(300)).await.unwrap().len(), 1);
    drop(crashed);
    let (code, lines, err) = secmon(dir.path(), &["work", "--once"]);
    assert_eq!(lines[0]["poisoned"], 1, "the message in flight was worked at once: {lines:?} {err}");
    assert_eq!(code, 1);
}
