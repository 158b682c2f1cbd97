//! The respond pipeline's close path against the Graph emulator (over TLS, with the real Graph client
//! and client-secret credential): exact PATCH bodies, comments in both body shapes, shadow mode,
//! redelivery, the circuit breaker, Graph errors as the retry policy classifies them, and the audit trail.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::audit::{self, Action, Record};
use secmon::clock::ManualClock;
use secmon::respond::{RespondError, process_alert};
use secmon::store::sqlite::SqliteStore;
use secmon::store::{ALERTS_QUEUE, Queue, Store};
use secmon_emulator::{CommentShape, Emulator, Fault, Options};
use serde_json::{Value, json};

const TENANT_ID: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
const CLIENT_ID: &str = "0c5bd3d2-6b6e-4c47-9a0c-2b1f7f8d9e10";
const SECRET: &str = "close-tests~secret";
const HIDDEN_FILE: &str = "da637551227677560813_-961444813";

struct Harness {
    emu: Emulator,
    app: App,
    store: Arc<SqliteStore>,
}

fn now() -> DateTime<Utc> {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

/// A config with one close rule for the "hidden file" sample, `rule_extra` added to the rule, and
/// `tail` (routes, receivers) after it.
fn config(emu: &Emulator, rule_extra: &str, tail: &str, close_env: Option<&str>) -> secmon::config::Config {
    let (graph, authority) = (emu.graph_url(), emu.authority_url());
    let text = format!(
        "graph_url: {graph}\nauthority_url: {authority}\ntenants:\n  - {{ id: {TENANT_ID}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }} }}\nclose_rules:\n  - id: lab-hidden-file\n    owner: secops@contoso.com\n    expires: 2027-01-31\n    when: 'alert.serviceSource == \"microsoftDefenderForEndpoint\" && alert.title.containsIgnoreCase(\"hidden file\")'\n    classification: informationalExpectedActivity\n    determination: securityTesting\n    comment: Lab machine, ticket SEC-1234\n{rule_extra}{tail}"
    );
    let env = |k: &str| if k == "SECMON_CLOSE" { close_env.map(str::to_string) } else { None };
    secmon::setup::load_str(&text, std::path::Path::new("test.yaml"), &env, now()).unwrap().config
}

/// The rig without routes: nothing is handed to delivery.
async fn harness(rule_extra: &str, close_enabled: bool, shape: CommentShape) -> Harness {
    harness_with(rule_extra, "", close_enabled, shape).await
}

async fn harness_with(rule_extra: &str, tail: &str, close_enabled: bool, shape: CommentShape) -> Harness {
    let emu = Emulator::start(Options { tls: true, comment_shape: shape, ..Options::default() }).await.unwrap();
    emu.seed_samples(TENANT_ID);
    emu.add_client(TENANT_ID, CLIENT_ID, SECRET);
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let http = common::rig::tls_client(&emu);
    let config = config(&emu, rule_extra, tail, (!close_enabled).then_some("off"));
    let app = common::rig::app(config, store.clone(), http.clone(), clock.clone());
    Harness { emu, app, store }
}

impl Harness {
    fn alert(&self, id: &str) -> Value {
        self.emu.alert(TENANT_ID, id).expect("seeded")
    }

    async fn audit(&self) -> Vec<Record> {
        let mut out = Vec::new();
        for stream in self.store.list_streams("audit/").await.unwrap() {
            for r in self.store.read_stream(&stream).await.unwrap() {
                out.push(serde_json::from_slice(&r).unwrap());
            }
        }
        out
    }

    async fn verified(&self) -> bool {
        audit::verify(self.store.as_ref(), None).await.unwrap().iter().all(|r| r.ok())
    }
}

/// A copy of the hidden-file sample with another id (and, optionally, severity).
fn variant(base: &Value, id: &str, severity: &str) -> Value {
    let mut a = base.clone();
    a["id"] = json!(id);
    a["severity"] = json!(severity);
    a
}

#[tokio::test]
async fn enforce_closes_with_the_exact_patch_body_and_a_comment_and_audits_it() {
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    let summary = process_alert(&h.app, "contoso", h.alert(HIDDEN_FILE)).await.unwrap();
    assert!(summary.contains("lab-hidden-file"), "{summary}");

    let patches = h.emu.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].1, HIDDEN_FILE);
    assert_eq!(
        patches[0].2,
        json!({"status": "resolved", "classification": "informationalExpectedActivity", "determination": "securityTesting"})
    );
    let comments = h.emu.comments();
    assert_eq!(comments.len(), 1);
    assert!(comments[0].2.contains("lab-hidden-file") && comments[0].2.contains("SEC-1234"), "{}", comments[0].2);
    // The documented object shape was accepted at the first try.
    let posts: Vec<_> = h.emu.requests().into_iter().filter(|r| r.path.ends_with("/comments")).collect();
    assert_eq!(posts.len(), 1);
    assert!(serde_json::from_slice::<Value>(&posts[0].body).unwrap().is_object());
    assert_eq!(h.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap()["status"], "resolved");

    let records = h.audit().await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.action, Action::Close);
    assert_eq!((r.alert_id.as_str(), r.alert_version.as_str()), (HIDDEN_FILE, "2021-05-02T14:19:01.3266667Z"));
    assert_eq!(r.rule_id.as_deref(), Some("lab-hidden-file"));
    assert_eq!(r.rule_hash.as_deref(), Some(h.app.config.close_rules[0].hash().as_str()));
    assert_eq!((r.status_before.as_deref(), r.status_after.as_deref()), (Some("new"), Some("resolved")));
    assert_eq!(r.graph_status, Some(200));
    assert!(h.verified().await);
}

#[tokio::test]
async fn a_redelivered_message_does_not_close_or_comment_twice() {
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    let raw = h.alert(HIDDEN_FILE);
    process_alert(&h.app, "contoso", raw.clone()).await.unwrap();
    let again = process_alert(&h.app, "contoso", raw).await.unwrap();
    assert!(again.contains("already closed"), "{again}");
    assert_eq!(h.emu.patches().len(), 1);
    assert_eq!(h.emu.comments().len(), 1);
    assert_eq!(h.audit().await.len(), 1, "one decision, one record");
}

#[tokio::test]
async fn secmons_own_close_comes_back_resolved_and_stays_quiet() {
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    process_alert(&h.app, "contoso", h.alert(HIDDEN_FILE)).await.unwrap();
    // The PATCH and the comment made a new version; the poller would queue it.
    let after = h.alert(HIDDEN_FILE);
    assert_ne!(after["lastUpdateDateTime"], "2021-05-02T14:19:01.3266667Z");
    let summary = process_alert(&h.app, "contoso", after).await.unwrap();
    assert!(summary.contains("already resolved"), "{summary}");
    assert_eq!(h.emu.patches().len(), 1);
    assert_eq!(h.audit().await.len(), 1);
}

#[tokio::test]
async fn shadow_changes_nothing_but_is_audited() {
    for (extra, enabled) in [("", true), ("    mode: shadow\n", true), ("    mode: enforce\n", false)] {
        let h = harness(extra, enabled, CommentShape::Both).await;
        let summary = process_alert(&h.app, "contoso", h.alert(HIDDEN_FILE)).await.unwrap();
        assert!(summary.contains("would close") || summary.contains("forced to shadow"), "{summary}");
        assert!(h.emu.patches().is_empty() && h.emu.comments().is_empty(), "{extra} {enabled}");
        assert_eq!(h.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap()["status"], "new");
        let records = h.audit().await;
        assert_eq!(records.len(), 1, "{extra} {enabled}");
        assert_eq!(records[0].action, Action::WouldClose);
        assert_eq!(records[0].mode, Some(secmon::rules::Mode::Shadow));
        assert_eq!(records[0].status_after.as_deref(), Some("new"));
        // A redelivery records nothing new.
        process_alert(&h.app, "contoso", h.alert(HIDDEN_FILE)).await.unwrap();
        assert_eq!(h.audit().await.len(), 1);
    }
}

#[tokio::test]
async fn both_comment_shapes_work_against_the_emulator() {
    let h = harness("    mode: enforce\n", true, CommentShape::ObjectOnly).await;
    process_alert(&h.app, "contoso", h.alert(HIDDEN_FILE)).await.unwrap();
    assert_eq!(h.emu.comments().len(), 1);

    let h = harness("    mode: enforce\n", true, CommentShape::ArrayOnly).await;
    process_alert(&h.app, "contoso", h.alert(HIDDEN_FILE)).await.unwrap();
    assert_eq!(h.emu.comments().len(), 1);
    let posts: Vec<_> = h.emu.requests().into_iter().filter(|r| r.path.ends_with("/comments")).collect();
    assert_eq!(posts.iter().map(|p| p.status).collect::<Vec<_>>(), [Some(400), Some(200)]);
    assert!(serde_json::from_slice::<Value>(&posts[1].body).unwrap().is_array());
}

#[tokio::test]
async fn the_circuit_breaker_opens_at_the_limit_and_tells_the_owner_once() {
    let h = harness("    mode: enforce\n    max_per_hour: 2\n", true, CommentShape::Both).await;
    let base = h.alert(HIDDEN_FILE);
    let ids = ["x-1", "x-2", "x-3", "x-4"];
    h.emu.seed_alerts(TENANT_ID, ids.iter().map(|id| variant(&base, id, "low")).collect());
    for id in ids {
        process_alert(&h.app, "contoso", h.alert(id)).await.unwrap();
    }
    assert_eq!(h.emu.patches().iter().map(|p| p.1.as_str()).collect::<Vec<_>>(), ["x-1", "x-2"]);
    let actions: Vec<Action> = h.audit().await.iter().map(|r| r.action).collect();
    assert_eq!(actions, [Action::Close, Action::Close, Action::BreakerOpen, Action::BreakerOpen]);
    // One notice for the owner, however many alerts hit the open breaker.
    let queued = h.store.receive(ALERTS_QUEUE, 10, std::time::Duration::from_secs(30)).await.unwrap();
    assert_eq!(queued.len(), 1);
    let notice: Value = serde_json::from_slice(&queued[0].body).unwrap();
    assert!(notice["alert"]["id"].as_str().unwrap().starts_with("secmon-breaker-lab-hidden-file"));
    assert!(notice["alert"]["description"].as_str().unwrap().contains("secops@contoso.com"));
    assert!(notice["alert"]["title"].as_str().unwrap().contains("in tenant contoso"), "the notice names the tenant");
    // The notice travels like any alert, and is never closed in Graph.
    process_alert(&h.app, "contoso", notice["alert"].clone()).await.unwrap();
    assert_eq!(h.emu.patches().len(), 2);
    assert!(h.verified().await);
}

#[tokio::test]
async fn graph_errors_are_retried_or_reported_as_the_policy_says() {
    // 503 on the PATCH: the message is retried, and the retry closes once.
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    h.emu.faults().push(Fault::status("/security/alerts_v2/", 503, None).method("PATCH").times(2));
    let err = process_alert(&h.app, "contoso", h.alert(HIDDEN_FILE)).await.unwrap_err();
    assert!(matches!(err, RespondError::Retry(ref m) if m.contains("HTTP 503")), "{err:?}");
    assert!(h.emu.patches().is_empty());
    assert!(h.audit().await.is_empty(), "nothing changed, nothing recorded yet");
    process_alert(&h.app, "contoso", h.alert(HIDDEN_FILE)).await.unwrap();
    assert_eq!(h.emu.patches().len(), 1);
    assert_eq!(h.audit().await.len(), 1);

    // 429 with a Retry-After longer than the client waits, on the comment after a successful PATCH: the
    // message is retried, and the retry comments without patching again.
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    h.emu.faults().push(Fault::status("/comments", 429, Some(30)));
    let raw = h.alert(HIDDEN_FILE);
    assert!(matches!(process_alert(&h.app, "contoso", raw.clone()).await, Err(RespondError::Retry(_))));
    process_alert(&h.app, "contoso", raw).await.unwrap();
    assert_eq!((h.emu.patches().len(), h.emu.comments().len()), (1, 1));

    // 409 and 412 are permanent: audited as close_failed with Graph's status, not retried.
    for status in [409u16, 412] {
        let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
        h.emu.faults().push(Fault::status("/security/alerts_v2/", status, None).method("PATCH"));
        let raw = h.alert(HIDDEN_FILE);
        let summary = process_alert(&h.app, "contoso", raw.clone()).await.unwrap();
        assert!(summary.contains("Graph refused the close"), "{summary}");
        process_alert(&h.app, "contoso", raw).await.unwrap();
        let records = h.audit().await;
        assert_eq!(records.len(), 1, "{status}");
        assert_eq!((records[0].action, records[0].graph_status), (Action::CloseFailed, Some(status)));
        assert!(h.emu.comments().is_empty());
        assert_eq!(h.emu.requests().iter().filter(|r| r.method == "PATCH").count(), 1, "never retried");
    }
}

#[tokio::test]
async fn guardrails_block_high_severity_and_are_audited() {
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    let base = h.alert(HIDDEN_FILE);
    h.emu.seed_alerts(TENANT_ID, vec![variant(&base, "hi-1", "high"), variant(&base, "unk-1", "somethingNew")]);
    for id in ["hi-1", "unk-1"] {
        let summary = process_alert(&h.app, "contoso", h.alert(id)).await.unwrap();
        assert!(summary.contains("above the rule's max_severity"), "{summary}");
    }
    assert!(h.emu.patches().is_empty());
    let actions: Vec<Action> = h.audit().await.iter().map(|r| r.action).collect();
    assert_eq!(actions, [Action::CloseBlocked, Action::CloseBlocked]);
}

/// How many sendMail calls the emulator received (accepted or not: what matters here is whether the
/// pipeline handed the alert to delivery).
fn mail_attempts(emu: &Emulator) -> usize {
    emu.requests().iter().filter(|r| r.path.ends_with("/sendMail")).count()
}

/// Decides one alert version, then works the deliveries it queued.
async fn respond_and_deliver(app: &secmon::app::App, alert: serde_json::Value) -> Result<String, RespondError> {
    let summary = process_alert(app, "contoso", alert).await;
    secmon::host::standalone::drain(app, 100).await;
    summary
}

#[tokio::test]
async fn alerts_not_closed_are_handed_to_delivery_and_closed_ones_are_not() {
    let tail = "routes:\n  - { receivers: [soc] }\nreceivers:\n  soc: { email: { from: secmon@contoso.com, to: [soc@contoso.com] } }\n";
    // Shadow: nothing changes in Graph, and the SOC is told as usual.
    let h = harness_with("", tail, true, CommentShape::Both).await;
    let _ = respond_and_deliver(&h.app, h.alert(HIDDEN_FILE)).await;
    assert!(h.emu.patches().is_empty());
    assert_eq!(mail_attempts(&h.emu), 1);
    // Enforce: closed, and nobody is mailed.
    let h = harness_with("    mode: enforce\n", tail, true, CommentShape::Both).await;
    respond_and_deliver(&h.app, h.alert(HIDDEN_FILE)).await.unwrap();
    assert_eq!(h.emu.patches().len(), 1);
    assert_eq!(mail_attempts(&h.emu), 0);
    // Enforce, but Graph refuses the close for good: the alert is mailed instead.
    let h = harness_with("    mode: enforce\n", tail, true, CommentShape::Both).await;
    h.emu.faults().push(Fault::status("/security/alerts_v2/", 403, None).method("PATCH"));
    let _ = respond_and_deliver(&h.app, h.alert(HIDDEN_FILE)).await;
    assert_eq!(h.audit().await[0].action, Action::CloseFailed);
    assert_eq!(mail_attempts(&h.emu), 1);
}

#[tokio::test]
async fn unreadable_alerts_and_unknown_tenants_go_to_poison() {
    let h = harness("", true, CommentShape::Both).await;
    assert!(matches!(process_alert(&h.app, "contoso", json!({"no": "id"})).await, Err(RespondError::Malformed(_))));
    assert!(matches!(process_alert(&h.app, "nobody", h.alert(HIDDEN_FILE)).await, Err(RespondError::Malformed(_))));
    assert!(h.store.len(ALERTS_QUEUE).await.unwrap() == 0);
}

/// The sample as Graph holds it now, changed by `change`, with a newer `lastUpdateDateTime`.
fn changed_in_graph(h: &Harness, change: impl FnOnce(&mut Value)) {
    let mut current = h.alert(HIDDEN_FILE);
    change(&mut current);
    current["lastUpdateDateTime"] = json!("2026-11-26T09:59:00Z");
    h.emu.seed_alerts(TENANT_ID, vec![current]);
}

#[tokio::test]
async fn a_close_is_decided_again_on_graphs_current_copy() {
    // Queued while benign; since then the severity was raised in Defender: not closed.
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    let queued = h.alert(HIDDEN_FILE);
    changed_in_graph(&h, |a| a["severity"] = json!("high"));
    let summary = process_alert(&h.app, "contoso", queued).await.unwrap();
    assert!(summary.contains("above the rule's max_severity"), "{summary}");
    assert!(h.emu.patches().is_empty() && h.emu.comments().is_empty());
    let records = h.audit().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].action, Action::CloseBlocked);
    assert_eq!(records[0].alert_version, "2026-11-26T09:59:00Z", "the record names the version decided on");

    // Changed, but still benign: closed once, on the current version.
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    let queued = h.alert(HIDDEN_FILE);
    changed_in_graph(&h, |a| a["description"] = json!("the same lab machine, one more run"));
    process_alert(&h.app, "contoso", queued.clone()).await.unwrap();
    process_alert(&h.app, "contoso", queued).await.unwrap();
    assert_eq!((h.emu.patches().len(), h.emu.comments().len()), (1, 1));
    let records = h.audit().await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!((records[0].action, records[0].alert_version.as_str()), (Action::Close, "2026-11-26T09:59:00Z"));
    assert_eq!(records[0].status_after.as_deref(), Some("resolved"), "Graph's answer to the PATCH");
    assert!(h.verified().await);
}

#[tokio::test]
async fn a_queued_message_unlike_graphs_copy_is_decided_on_graphs() {
    // Someone with queue access wrote a message that makes a real alert look benign, at its real version.
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    let mut real = h.alert(HIDDEN_FILE);
    real["title"] = json!("Credential dumping with mimikatz");
    h.emu.seed_alerts(TENANT_ID, vec![real.clone()]);
    let mut forged = real.clone();
    forged["title"] = json!("Suspicious execution of hidden file");
    let summary = process_alert(&h.app, "contoso", forged).await.unwrap();
    assert!(summary.contains("no close rule matched"), "{summary}");
    assert!(h.emu.patches().is_empty());
    assert!(h.audit().await.is_empty(), "no rule matched Graph's copy: nothing to record");

    // An alert Graph does not have is never closed; the message is not lost either (it is routed).
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    let ghost = variant(&h.alert(HIDDEN_FILE), "ghost-1", "low");
    let summary = process_alert(&h.app, "contoso", ghost).await.unwrap();
    assert!(summary.contains("current copy could not be read"), "{summary}");
    assert!(h.emu.patches().is_empty());
    assert_eq!(h.audit().await[0].action, Action::CloseBlocked);
}

#[tokio::test]
async fn alerts_a_person_or_another_automation_touched_are_never_closed() {
    type Change = fn(&mut Value);
    let cases: &[(&str, Change, &str)] = &[
        ("in progress", |a| a["status"] = json!("inProgress"), "status inProgress"),
        ("assigned", |a| a["assignedTo"] = json!("dana@contoso.com"), "assigned to dana@contoso.com"),
        ("classified", |a| a["classification"] = json!("truePositive"), "classified truePositive"),
        ("determined", |a| a["determination"] = json!("malware"), "determination malware"),
        (
            "commented",
            |a| a["comments"] = json!([{"comment": "Confirmed malicious", "createdByDisplayName": "Dana Lee"}]),
            "commented by Dana Lee",
        ),
        (
            "triage agent",
            |a| {
                a["systemTags"] = json!(["Agent"]);
                a["assignedTo"] = json!("Phishing Triage Agent");
            },
            "Microsoft's agents",
        ),
        ("agent assigned", |a| a["assignedTo"] = json!("Security Copilot Agent"), "Microsoft's agents"),
        ("attack disruption", |a| a["systemTags"] = json!(["Attack Disruption"]), "attack disruption"),
        ("unknown status", |a| a["status"] = json!("awaitingSomething"), "status awaitingSomething"),
    ];
    for (name, change, reason) in cases {
        let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
        let mut touched = h.alert(HIDDEN_FILE);
        change(&mut touched);
        h.emu.seed_alerts(TENANT_ID, vec![touched.clone()]);
        let summary = process_alert(&h.app, "contoso", touched).await.unwrap();
        assert!(summary.contains(reason) && summary.contains("not closed"), "{name}: {summary}");
        assert!(h.emu.patches().is_empty(), "{name}");
        let records = h.audit().await;
        assert_eq!(records.len(), 1, "{name}");
        assert_eq!(records[0].action, Action::CloseBlocked, "{name}");
        assert!(records[0].detail.contains(reason), "{name}: {}", records[0].detail);
    }
    // secmon's own comment does not count as a person's.
    let h = harness("    mode: enforce\n", true, CommentShape::Both).await;
    let mut ours = h.alert(HIDDEN_FILE);
    ours["comments"] =
        json!([{"comment": "Closed by secmon rule lab-hidden-file (…)", "createdByDisplayName": "secmon"}]);
    h.emu.seed_alerts(TENANT_ID, vec![ours.clone()]);
    process_alert(&h.app, "contoso", ours).await.unwrap();
    assert_eq!(h.emu.patches().len(), 1);
}
