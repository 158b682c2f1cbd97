//! `secmon demo` end to end: the numbers it prints are what the emulator received, and they are the
//! numbers the demo config and its alerts call for.

use std::collections::BTreeSet;

use serde_json::Value;

#[tokio::test]
async fn the_demo_closes_notifies_and_reports_what_graph_teams_and_exchange_received() {
    let dir = tempfile::tempdir().unwrap();
    let report = secmon::demo::run(Some(dir.path())).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let s = &report.summary;

    // Eight versions: two documented samples and six crafted alerts, each pulled once.
    assert_eq!(s.pulled, 8);

    // The enforce rule closes Defender for Endpoint alerts with evidence in 203.0.113.0/24 up to medium:
    // the low and the medium one; the high one is above the rule's cap.
    let patched: BTreeSet<&str> = report.patches.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(patched, BTreeSet::from(["demo-pentest-creds", "demo-pentest-scan"]));
    for (_, body) in &report.patches {
        assert_eq!(
            body,
            &serde_json::json!({"status": "resolved", "classification": "informationalExpectedActivity", "determination": "securityTesting"})
        );
    }
    assert_eq!(s.closed, 2);
    let commented: BTreeSet<&str> = report.comments.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(commented, patched, "each closed alert gets the rule's comment");
    assert!(report.comments.iter().all(|(_, text)| text.contains("pentest-2026q4") && text.contains("SEC-1234")));

    // Everything else is told: six alerts reach Teams, the three high ones also e-mail.
    assert_eq!(s.notified, 6);
    assert_eq!(s.teams_messages, report.teams.len());
    assert_eq!(s.teams_messages, 6);
    assert_eq!(s.emails, report.mails.len());
    assert_eq!(s.emails, 3);
    let subjects: Vec<&str> = report.mails.iter().filter_map(|m| m["message"]["subject"].as_str()).collect();
    assert!(subjects.iter().all(|s| s.starts_with("[secmon][contoso][High] ")), "{subjects:?}");

    // Shadow mode records "would close" and changes nothing.
    assert!(report.audit.iter().any(|r| r["action"] == "would_close" && r["alert_id"] == "demo-dlp-backup"));
    assert!(!patched.contains("demo-dlp-backup"));

    // The files say the same.
    let written: Value = serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(written, serde_json::to_value(s).unwrap());
    assert_eq!(std::fs::read_dir(dir.path().join("teams")).unwrap().count(), 6);
    assert_eq!(std::fs::read_dir(dir.path().join("emails")).unwrap().count(), 3);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), report.audit.len());
    let page = std::fs::read_to_string(dir.path().join("emails/01.html")).unwrap();
    assert!(!page.contains("<script>"), "alert text is escaped in e-mail");
}

#[tokio::test]
async fn the_demo_audit_trail_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let report = secmon::demo::run(Some(dir.path())).await.unwrap();
    let store = secmon::store::sqlite::SqliteStore::open(dir.path().join("secmon.db")).unwrap();
    let streams = secmon::audit::verify(&store, None).await.unwrap();
    assert!(!streams.is_empty());
    assert!(streams.iter().all(|s| s.ok()), "{streams:?}");
    assert_eq!(streams.iter().map(|s| s.records).sum::<usize>(), report.audit.len());
}
