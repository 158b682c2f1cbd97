//! `secmon rules replay` and `secmon rules suggest` against the Graph emulator, seeded with a tenant's
//! history that carries analysts' verdicts: exact counts per rule, the true positives named, an overlap,
//! the request budget and `Retry-After` over a long replay (on a virtual clock), the `check-config`
//! findings, and the HTML report rendered in headless Chromium.

#[path = "poll_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::clock::ManualClock;
use secmon::config::{CloseRuleConfig, Config, Level, Mode};
use secmon::graph::client::GraphClient;
use secmon::graph::retry::{RetryPolicy, Sleeper};
use secmon::rules::replay::{ReplayRecord, RuleSummary};
use secmon::store::sqlite::SqliteStore;
use secmon::store::{Store, keys};
use secmon_emulator::{Emulator, Fault};
use serde_json::{Value, json};
use support::*;

const NOW: &str = "2026-11-30T12:00:00Z";
const MDE: &str = "microsoftDefenderForEndpoint";

fn ip(a: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": a, "verdict": "unknown"})
}

fn device(name: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.security.deviceEvidence", "deviceDnsName": name, "verdict": "unknown"})
}

/// An alert created `days_ago` days before NOW (plus `minute` minutes), as Graph returns it today.
fn alert(id: &str, days_ago: i64, minute: i64, title: &str, severity: &str, evidence: Vec<Value>) -> Value {
    let created = t(NOW) - chrono::Duration::days(days_ago) + chrono::Duration::minutes(minute);
    let stamp = created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "id": id, "title": title, "severity": severity, "status": "new", "serviceSource": MDE,
        "detectorId": format!("det-{}", title.to_ascii_lowercase().replace(' ', "-")),
        "classification": null, "determination": null, "assignedTo": null, "comments": [],
        "createdDateTime": stamp, "lastUpdateDateTime": stamp, "resolvedDateTime": null,
        "alertWebUrl": format!("https://security.microsoft.com/alerts/{id}"),
        "evidence": evidence,
    })
}

/// The alert as an analyst left it: resolved, classified, assigned and commented.
fn resolved(mut a: Value, classification: &str, determination: &str) -> Value {
    a["status"] = json!("resolved");
    a["classification"] = json!(classification);
    a["determination"] = json!(determination);
    a["assignedTo"] = json!("dana@contoso.com");
    a["comments"] = json!([{"comment": "checked with the red team", "createdByDisplayName": "Dana Lee"}]);
    a["lastUpdateDateTime"] = json!("2026-11-30T09:00:00.000Z");
    a["resolvedDateTime"] = json!("2026-11-30T09:00:00.000Z");
    a
}

fn benign(a: Value) -> Value {
    resolved(a, "informationalExpectedActivity", "securityTesting")
}

fn rule(id: &str, mode: &str, when: &str, max_severity: &str) -> CloseRuleConfig {
    serde_json::from_value(json!({
        "id": id, "owner": "secops@contoso.com", "expires": "2027-06-30", "mode": mode, "when": when,
        "classification": "informationalExpectedActivity", "determination": "securityTesting",
        "max_severity": max_severity,
    }))
    .unwrap()
}

fn rules() -> Vec<CloseRuleConfig> {
    vec![
        rule(
            "pentest",
            "enforce",
            r#"alert.serviceSource == "microsoftDefenderForEndpoint" && alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))"#,
            "medium",
        ),
        rule("backup-agent", "shadow", r#"alert.title == "Suspicious backup activity""#, "low"),
        rule(
            "lab-devices",
            "shadow",
            r#"alert.allEvidence("device", d, d.deviceDnsName.endsWith(".lab.contoso.com"))"#,
            "medium",
        ),
    ]
}

/// Backup alerts analysts resolved as benign, one to three a day: the noise a rule is written for.
fn backup_noise() -> Vec<Value> {
    (0..29)
        .flat_map(|day| {
            (0..1 + day % 3).map(move |k| {
                let a = alert(&format!("bk-{day}-{k}"), day + 1, 7 * k, "Suspicious backup activity", "low", vec![]);
                resolved(a, "falsePositive", "notMalicious")
            })
        })
        .collect()
}

/// The history: every case a replay must tell apart, spread over the last 30 days.
fn history() -> Vec<Value> {
    let pentest_ip = || vec![ip("203.0.113.7")];
    let mut out = vec![
        // Matched by pentest: four the analysts agree with, one real attack, one left open.
        benign(alert("p1", 2, 0, "Network scan", "medium", pentest_ip())),
        benign(alert("p2", 5, 0, "Network scan", "low", pentest_ip())),
        benign(alert("p3", 9, 0, "Port sweep", "low", pentest_ip())),
        benign(alert("p4", 14, 0, "Network scan", "medium", pentest_ip())),
        resolved(alert("p5", 20, 0, "Exploit attempt", "medium", pentest_ip()), "truePositive", "malware"),
        alert("p6", 3, 0, "Network scan", "low", pentest_ip()),
        // Matched, but above max_severity: blocked.
        benign(alert("p7", 6, 0, "Network scan", "high", pentest_ip())),
        // One outside IP next to the range: not matched.
        resolved(
            alert("p8", 7, 0, "Network scan", "medium", vec![ip("203.0.113.9"), ip("198.51.100.7")]),
            "truePositive",
            "compromisedAccount",
        ),
        // Pentest IP on a lab device: matched by pentest and by lab-devices.
        resolved(
            alert("p9", 11, 0, "Network scan", "low", vec![ip("203.0.113.20"), device("pc1.lab.contoso.com")]),
            "falsePositive",
            "notMalicious",
        ),
        resolved(
            alert("p10", 12, 0, "Network scan", "low", vec![ip("203.0.113.21"), device("pc2.lab.contoso.com")]),
            "falsePositive",
            "notMalicious",
        ),
        // Closed by secmon earlier: its classification is no analyst's verdict.
        {
            let mut a = benign(alert("s1", 4, 0, "Network scan", "low", pentest_ip()));
            a["comments"] = json!([{"comment": "Closed by secmon rule pentest (authorized pentest). …",
                "createdByDisplayName": "secmon"}]);
            a["assignedTo"] = Value::Null;
            a
        },
        // Part of an automatic attack disruption: blocked.
        {
            let mut a = alert("a1", 8, 0, "Network scan", "medium", pentest_ip());
            a["systemTags"] = json!(["Attack Disruption"]);
            a
        },
        // Backup: one above the rule's max_severity low, one real attack.
        resolved(alert("b4", 10, 30, "Suspicious backup activity", "medium", vec![]), "falsePositive", "notMalicious"),
        resolved(alert("b5", 15, 30, "Suspicious backup activity", "low", vec![]), "truePositive", "malware"),
        // Lab device only.
        resolved(
            alert("l1", 13, 0, "Lateral movement", "low", vec![device("pc3.lab.contoso.com")]),
            "falsePositive",
            "notMalicious",
        ),
        // Created before the window: not read at all.
        benign(alert("old", 35, 0, "Network scan", "low", pentest_ip())),
    ];
    // Forwarding rules analysts keep calling benign (a suggestion), and a detector with a real attack.
    for i in 0..5 {
        out.push(resolved(
            alert(&format!("fwd{i}"), 2 + i, 40, "Mailbox forwarding rule", "low", vec![]),
            "falsePositive",
            "notMalicious",
        ));
    }
    for i in 0..4 {
        out.push(resolved(
            alert(&format!("trv{i}"), 3 + i, 50, "Impossible travel", "medium", vec![]),
            "informationalExpectedActivity",
            "confirmedActivity",
        ));
    }
    out.push(resolved(
        alert("trv-tp", 9, 50, "Impossible travel", "medium", vec![]),
        "truePositive",
        "compromisedAccount",
    ));
    out.extend(backup_noise());
    out
}

fn by_rule(rules: &[RuleSummary]) -> BTreeMap<&str, &RuleSummary> {
    rules.iter().map(|r| (r.rule.as_str(), r)).collect()
}

async fn seeded_rig(page_size: usize) -> Rig {
    let r = rig(&["contoso"], page_size, t(NOW), |c| c.close_rules = rules()).await;
    r.emu.seed_alerts(&tenant_id("contoso"), history());
    r
}

#[tokio::test]
async fn replay_counts_every_rule_exactly_names_the_true_positives_and_finds_the_overlap() {
    let r = seeded_rig(3).await;
    let since = secmon::replay::parse_since("30d", t(NOW)).unwrap();
    let got = secmon::replay::replay_tenant(&r.app, "contoso", None, since, t(NOW), &|_| {}).await.unwrap();
    let report = &got.report;
    let noise = backup_noise().len();
    assert_eq!(report.alerts, history().len() - 1, "every alert of the window once, none from before it");
    assert_eq!(report.skipped, 0);

    let rules = by_rule(&report.rules);
    let pentest = rules["pentest"];
    assert_eq!(
        (pentest.would_close, pentest.analyst_true_positive, pentest.analyst_benign, pentest.unresolved),
        (9, 1, 6, 2),
        "p1-p6, p9, p10 and s1 would close; p5 was an attack; p6 and s1 have no analyst's verdict"
    );
    assert_eq!(pentest.true_positive_alerts, ["p5"]);
    assert_eq!(pentest.true_positive_hits[0].determination, "malware");
    assert_eq!(pentest.closed_by_secmon, 1);
    assert_eq!(pentest.blocked, 2);
    assert_eq!(
        pentest.blocked_reasons,
        BTreeMap::from([
            ("attack disruption".to_string(), 1),
            ("severity high above max_severity medium".to_string(), 1)
        ])
    );
    assert_eq!(pentest.by_severity, BTreeMap::from([("low".to_string(), 6), ("medium".to_string(), 3)]));
    assert_eq!(pentest.by_source, BTreeMap::from([(MDE.to_string(), 9)]));
    assert_eq!(pentest.mode, Mode::Enforce);

    let backup = rules["backup-agent"];
    assert_eq!(
        (backup.would_close, backup.analyst_true_positive, backup.analyst_benign, backup.unresolved, backup.blocked),
        (noise + 1, 1, noise, 0, 1)
    );
    assert_eq!(backup.true_positive_alerts, ["b5"]);
    assert_eq!(backup.blocked_alerts[0].id, "b4");
    assert_eq!(backup.per_day.values().sum::<usize>(), noise + 1);
    assert_eq!(backup.per_day.get("2026-11-29"), Some(&1), "one backup alert arrived the day before NOW");

    let lab = rules["lab-devices"];
    assert_eq!((lab.would_close, lab.analyst_true_positive, lab.analyst_benign, lab.blocked), (3, 0, 3, 0));
    assert!(lab.true_positive_alerts.is_empty());

    assert_eq!(report.overlaps.len(), 1, "{:?}", report.overlaps);
    let o = &report.overlaps[0];
    assert_eq!(o.rules, ["pentest".to_string(), "lab-devices".to_string()]);
    assert_eq!((o.alerts, o.first_match.as_str()), (2, "pentest"));
    let mut ids = o.alert_ids.clone();
    ids.sort();
    assert_eq!(ids, ["p10", "p9"]);

    // Read-only: every request a GET of the alerts list, nothing changed in Graph.
    let graph: Vec<_> = r.emu.requests().into_iter().filter(|q| q.path.starts_with("/v1.0/")).collect();
    assert!(graph.iter().all(|q| q.method == "GET" && q.path == "/v1.0/security/alerts_v2"), "{graph:?}");
    assert!(graph.iter().any(|q| q.query.as_deref().is_some_and(|s| s.contains("skiptoken"))), "pages followed");
    assert!(r.emu.patches().is_empty() && r.emu.comments().is_empty());
    assert_eq!(got.walked.requests as usize, graph.len());

    // Each rule's result is stored with the rule's hash.
    let stored = r.app.store.get(&keys::replay("contoso", "pentest")).await.unwrap().unwrap();
    let record: ReplayRecord = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!((record.would_close, record.analyst_true_positive), (9, 1));
    assert_eq!(record.true_positive_alerts, ["p5"]);
    assert_eq!(record.hash, secmon::rules::replay::rule_hash(&rules_config()[0]));

    // --rule: one rule only, and an unknown one is refused.
    let one =
        secmon::replay::replay_tenant(&r.app, "contoso", Some("lab-devices"), since, t(NOW), &|_| {}).await.unwrap();
    assert_eq!(one.report.rules.len(), 1);
    assert!(one.report.overlaps.is_empty());
    let err = secmon::replay::replay_tenant(&r.app, "contoso", Some("nope"), since, t(NOW), &|_| {}).await.unwrap_err();
    assert!(err.to_string().contains("no close rule with id \"nope\""), "{err}");
}

fn rules_config() -> Vec<CloseRuleConfig> {
    rules()
}

#[tokio::test]
async fn suggestions_draft_safe_shadow_rules_for_what_analysts_call_benign_and_none_where_they_found_an_attack() {
    let r = seeded_rig(50).await;
    let since = secmon::replay::parse_since("30d", t(NOW)).unwrap();
    let (got, _) = secmon::replay::suggest_tenant(&r.app, "contoso", since, t(NOW), 3, 10, &|_| {}).await.unwrap();
    let titles: Vec<(&str, usize, bool)> =
        got.iter().map(|s| (s.title.as_str(), s.benign, s.draft.is_some())).collect();
    assert_eq!(
        titles,
        [
            ("Suspicious backup activity", backup_noise().len() + 1, false),
            ("Network scan", 6, true),
            ("Mailbox forwarding rule", 5, true),
            ("Impossible travel", 4, false),
        ],
        "most benign first; a detector with a true positive gets no draft"
    );
    let scan = &got[1];
    assert_eq!(
        scan.draft.as_ref().unwrap()["when"],
        r#"alert.serviceSource == "microsoftDefenderForEndpoint" && alert.detectorId == "det-network-scan" && alert.allEvidence("ip", e, e.ipAddress in ["203.0.113.20", "203.0.113.21", "203.0.113.7"])"#,
        "narrowed by the benign alerts' IPs, which leaves p8 (an outside IP too) out"
    );
    assert_eq!(scan.true_positive_alerts, ["p8"]);
    let fwd = &got[2];
    assert_eq!(fwd.verdicts, BTreeMap::from([("falsePositive/notMalicious".to_string(), 5)]));
    let travel = &got[3];
    assert!(travel.no_draft.as_deref().unwrap().contains("trv-tp"), "{:?}", travel.no_draft);

    // The YAML loads as the config's close rules: no error, no lint warning, shadow mode.
    let yaml = secmon::rules::suggest::render_yaml("contoso", since, t(NOW), &got);
    let text = format!("tenants:\n  - {{ id: {}, name: contoso }}\nclose_rules:\n{yaml}", tenant_id("contoso"));
    let loaded = secmon::setup::load_str(&text, std::path::Path::new("s.yaml"), &|_| None, t(NOW))
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(loaded.config.close_rules.len(), 2, "{yaml}");
    assert!(loaded.config.close_rules.iter().all(|r| r.mode == Mode::Shadow));
    assert!(loaded.warnings.iter().all(|w| !w.path.starts_with("close_rules")), "{:?}", loaded.warnings);
    assert_eq!(
        loaded.config.close_rules[1].when,
        r#"alert.serviceSource == "microsoftDefenderForEndpoint" && alert.detectorId == "det-mailbox-forwarding-rule""#
    );

    // Replayed, the forwarding draft closes exactly the five alerts analysts resolved as benign.
    let mut config = (*r.app.config).clone();
    config.close_rules = loaded.config.close_rules.clone();
    let app = r.app.with_config(config).unwrap();
    let replayed = secmon::replay::replay_tenant(&app, "contoso", None, since, t(NOW), &|_| {}).await.unwrap();
    let fwd = by_rule(&replayed.report.rules)[fwd.draft.as_ref().unwrap()["id"].as_str().unwrap()].clone();
    assert_eq!((fwd.would_close, fwd.analyst_benign, fwd.analyst_true_positive), (5, 5, 0));
    // The network-scan draft hides no attack: p1, p2, p4, p9, p10 benign; p6 open and s1 closed by secmon;
    // p7 (high) and a1 (attack disruption) blocked.
    let scan = by_rule(&replayed.report.rules)[scan.draft.as_ref().unwrap()["id"].as_str().unwrap()].clone();
    assert_eq!(
        (scan.would_close, scan.analyst_benign, scan.unresolved, scan.analyst_true_positive, scan.blocked),
        (7, 5, 2, 0, 2)
    );
}

/// A virtual clock for the Graph client that remembers, for every wait, how many Graph requests the
/// emulator had answered before it: so each request's time on the virtual clock is known.
struct Timeline {
    emu: Arc<Emulator>,
    state: Mutex<(Duration, Vec<(usize, Duration)>)>,
}

impl Timeline {
    fn graph_requests(emu: &Emulator) -> Vec<secmon_emulator::Recorded> {
        emu.requests().into_iter().filter(|q| q.path.starts_with("/v1.0/")).collect()
    }

    /// The virtual time each Graph request was sent at.
    fn times(&self, n: usize) -> Vec<Duration> {
        let waits = self.state.lock().unwrap().1.clone();
        (0..n).map(|k| waits.iter().filter(|(before, _)| *before <= k).map(|(_, d)| *d).sum()).collect()
    }
}

#[async_trait]
impl Sleeper for Timeline {
    fn elapsed(&self) -> Duration {
        self.state.lock().unwrap().0
    }
    async fn sleep(&self, d: Duration) {
        let before = Timeline::graph_requests(&self.emu).len();
        let mut s = self.state.lock().unwrap();
        s.0 += d;
        s.1.push((before, d));
    }
}

#[tokio::test]
async fn a_long_replay_keeps_to_the_request_budget_and_waits_what_retry_after_says() {
    const BUDGET: u32 = 30;
    const DAYS: i64 = 90;
    const PER_DAY: i64 = 20;
    let emu = Arc::new(emulator(5).await);
    let mut config = config_for(&emu, &["contoso"]);
    config.poll.page_size = Some(5);
    config.poll.max_requests_per_minute = BUDGET;
    config.close_rules = rules();
    let tid = tenant_id("contoso");
    let mut seeded = Vec::new();
    for day in 0..DAYS {
        for k in 0..PER_DAY {
            seeded.push(alert(
                &format!("h-{day}-{k}"),
                day + 1,
                k * 30,
                "Network scan",
                "low",
                vec![ip("203.0.113.7")],
            ));
        }
    }
    emu.seed_alerts(&tid, seeded);
    // Graph throttles three days' first pages once each, asking for 7 s.
    let throttled_days = ["2026-10-01", "2026-10-20", "2026-11-11"];
    for day in throttled_days {
        emu.faults().push(Fault::status(format!("ge+{day}T00"), 429, Some(7)));
    }
    let timeline = Arc::new(Timeline { emu: emu.clone(), state: Mutex::new((Duration::ZERO, Vec::new())) });
    let http = http_for(&emu);
    let graph = GraphClient::new(&config, http.clone())
        .unwrap()
        .with_sleeper(timeline.clone())
        .with_policy(RetryPolicy { timeout: Duration::from_secs(10), ..RetryPolicy::default() });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let app = App::builder(config)
        .backend(store)
        .graph(Arc::new(graph))
        .http(http)
        .clock(Arc::new(ManualClock::new(t(NOW))))
        .build()
        .unwrap();

    let since = t(NOW) - chrono::Duration::days(DAYS);
    let pages_seen = Mutex::new(0usize);
    let progress = |p: &secmon::intake::history::Progress| *pages_seen.lock().unwrap() = p.pages;
    let got = secmon::replay::replay_tenant(&app, "contoso", None, since, t(NOW), &progress).await.unwrap();
    assert_eq!(got.report.alerts, (DAYS * PER_DAY) as usize, "nothing lost to throttling");
    assert_eq!(by_rule(&got.report.rules)["pentest"].would_close, (DAYS * PER_DAY) as usize);

    let requests = Timeline::graph_requests(&emu);
    // 91 day windows (the first and last are partial days), 4 pages per full day, plus three retries.
    let pages = *pages_seen.lock().unwrap();
    assert_eq!(pages, got.walked.pages);
    assert_eq!(requests.len(), pages + throttled_days.len());
    assert_eq!(got.walked.requests as usize, requests.len());
    assert_eq!((got.walked.retries, got.walked.throttled_waits), (3, 3));
    assert!(requests.len() > 300, "a long replay: {} requests", requests.len());

    let times = timeline.times(requests.len());
    // The budget: by virtual time t, at most BUDGET (the burst) + t × BUDGET/min requests were sent.
    for (k, at) in times.iter().enumerate() {
        let allowed = BUDGET as f64 + at.as_secs_f64() * BUDGET as f64 / 60.0;
        assert!((k + 1) as f64 <= allowed + 1e-6, "request {k} at {at:?}: {} sent, {allowed:.2} allowed", k + 1);
    }
    let minutes = times.last().unwrap().as_secs_f64() / 60.0;
    assert!(minutes >= (requests.len() as f64 - BUDGET as f64) / BUDGET as f64 - 1e-6, "{minutes} min");
    // Every 429 was answered by waiting at least its Retry-After before the next request.
    let faulted: Vec<usize> =
        requests.iter().enumerate().filter(|(_, q)| q.status == Some(429)).map(|(k, _)| k).collect();
    assert_eq!(faulted.len(), 3);
    for k in faulted {
        assert!(times[k + 1] - times[k] >= Duration::from_secs(7), "request {k}: {:?}", times[k + 1] - times[k]);
        assert_eq!(requests[k + 1].query, requests[k].query, "the same page asked again");
    }
}

fn summary_for(rule: &str, hash: String, tp: &[&str], alerts: usize) -> ReplayRecord {
    ReplayRecord {
        rule: rule.into(),
        hash,
        replayed_at: t("2026-11-29T08:00:00Z"),
        since: t("2026-10-30T08:00:00Z"),
        until: t("2026-11-29T08:00:00Z"),
        alerts,
        would_close: 10,
        analyst_true_positive: tp.len(),
        true_positive_alerts: tp.iter().map(|s| s.to_string()).collect(),
    }
}

#[tokio::test]
async fn enforce_rules_without_a_clean_replay_are_warned_about_and_require_replay_makes_it_an_error() {
    let mut config = Config { close_rules: rules(), ..Config::default() };
    config.tenants = config_for(&emulator(5).await, &["contoso", "fabrikam"]).tenants;
    config.close_rules[2].mode = Mode::Enforce; // lab-devices: replayed clean on contoso, on nothing on fabrikam
    let store = SqliteStore::in_memory().unwrap();
    let hash = |i: usize| secmon::rules::replay::rule_hash(&config.close_rules[i]);
    let put = |tenant: &str, record: ReplayRecord| {
        let store = &store;
        let key = keys::replay(tenant, &record.rule);
        async move { store.put(&key, &serde_json::to_vec(&record).unwrap()).await.unwrap() }
    };
    put("contoso", summary_for("lab-devices", hash(2), &[], 40)).await;
    put("fabrikam", summary_for("lab-devices", hash(2), &[], 0)).await;
    put("contoso", summary_for("pentest", hash(0), &["p5"], 40)).await;
    put("fabrikam", summary_for("pentest", "0".repeat(64), &[], 40)).await;

    let issues = secmon::replay::enforcement_issues(&config, &store).await;
    let text: Vec<String> = issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect();
    assert_eq!(issues.len(), 3, "{text:#?}");
    assert!(issues.iter().all(|i| i.level == Level::Warning), "{text:#?}");
    assert!(text[0].starts_with("close_rules[0].mode: ") && text[0].contains("tenant contoso"), "{}", text[0]);
    assert!(text[0].contains("truePositive: p5"), "the true positive is named: {}", text[0]);
    assert!(text[1].contains("changed since its last replay on tenant fabrikam"), "{}", text[1]);
    assert!(text[2].starts_with("close_rules[2].mode: ") && text[2].contains("had no alerts to judge"), "{}", text[2]);

    // Never replayed at all, and the backup rule is in shadow mode: only enforce rules are judged.
    let empty = SqliteStore::in_memory().unwrap();
    let never = secmon::replay::enforcement_issues(&config, &empty).await;
    assert_eq!(never.len(), 4, "two enforce rules × two tenants");
    assert!(never.iter().all(|i| i.message.contains("never replayed")));

    config.require_replay = true;
    let strict = secmon::replay::enforcement_issues(&config, &store).await;
    assert_eq!(strict.len(), 3);
    assert!(strict.iter().all(|i| i.level == Level::Error && i.message.contains("require_replay")));
}

/// `secmon check-config` itself: the warning at the rule's line, exit 0; with `require_replay: true`
/// an error and exit 1; a clean replay silences both.
#[tokio::test]
async fn check_config_reports_the_replay_findings_at_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secmon.db");
    let config = |require: bool| {
        format!(
            "store: {{ sqlite: {db:?} }}\n{}tenants:\n  - {{ id: 11111111-2222-3333-4444-555555555555, name: contoso }}\n\
             close_rules:\n  - id: pentest\n    owner: secops@contoso.com\n    expires: 2099-01-31\n    mode: enforce\n    \
             when: 'alert.allEvidence(\"ip\", e, e.ipAddress.inCidr(\"203.0.113.0/24\"))'\n    \
             classification: informationalExpectedActivity\n    determination: securityTesting\n",
            if require { "require_replay: true\n" } else { "" }
        )
    };
    let run = |text: String| {
        let file = dir.path().join("secmon.yaml");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_secmon"))
            .args(["check-config", "-c"])
            .arg(&file)
            .env_remove("SECMON_STORE")
            .env_remove("SECMON_CLOSE")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, stderr) = run(config(false));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("secmon.yaml:8:") && stderr.contains("warning: close_rules[0].mode"), "{stderr}");
    assert!(stderr.contains("never replayed on tenant contoso"), "{stderr}");
    assert!(!db.exists(), "check-config creates no store");

    let (code, stderr) = run(config(true));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("error: close_rules[0].mode") && stderr.contains("require_replay"), "{stderr}");

    let loaded = secmon::setup::load_str(&config(true), std::path::Path::new("c.yaml"), &|_| None, Utc::now()).unwrap();
    let hash = secmon::rules::replay::rule_hash(&loaded.config.close_rules[0]);
    let store = SqliteStore::open(&db).unwrap();
    let record = summary_for("pentest", hash, &[], 40);
    store.put(&keys::replay("contoso", "pentest"), &serde_json::to_vec(&record).unwrap()).await.unwrap();
    drop(store);
    let (code, stderr) = run(config(true));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("close_rules[0].mode"), "{stderr}");
}

fn chromium() -> Option<String> {
    let name = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = std::process::Command::new(&name).arg("--version").output().is_ok_and(|o| o.status.success());
    found.then_some(name)
}

/// Runs headless Chromium on `page` with no network: `--dump-dom`, or a screenshot when `png` is given.
fn chromium_run(chromium: &str, page: &std::path::Path, png: Option<&std::path::Path>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        // Any network access would fail: the page must need none.
        "--proxy-server=127.0.0.1:9",
        "--virtual-time-budget=2000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match png {
        Some(png) => cmd.args(["--window-size=1100,1500".to_string(), format!("--screenshot={}", png.display())]),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(format!("file://{}", page.display())).output().unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn the_html_report_renders_in_headless_chromium_with_its_charts_and_rule_table() {
    let r = seeded_rig(50).await;
    let since = secmon::replay::parse_since("30d", t(NOW)).unwrap();
    let got = secmon::replay::replay_tenant(&r.app, "contoso", None, since, t(NOW), &|_| {}).await.unwrap();
    let html = secmon::rules::report::render(&got.report);
    // Self-contained: no script, no stylesheet or image to fetch.
    for banned in ["<script", "<link", " src=", "@import", "url("] {
        assert!(!html.contains(banned), "the report must load nothing ({banned})");
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("replay-contoso.html");
    std::fs::write(&page, &html).unwrap();

    let Some(chromium) = chromium() else {
        assert!(std::env::var_os("CI").is_none(), "chromium is required on CI (scripts/test.sh installs it)");
        eprintln!(
            "\n!!!!!!!! SKIPPED: chromium not found (set CHROMIUM or apt-get install chromium); the replay report \
             was NOT rendered !!!!!!!!\n"
        );
        return;
    };
    let dom = chromium_run(&chromium, &page, None);
    assert!(dom.contains(r#"<svg id="matches-per-day""#), "the per-day chart");
    assert_eq!(dom.matches(r#"<polyline class="series""#).count(), 3, "one line per rule");
    assert!(dom.contains(r#"<svg id="verdict-mix""#), "the verdict chart");
    assert!(dom.contains(r#"class="seg-tp" data-rule="pentest""#), "pentest's true positive shows in red");
    let table = &dom[dom.find(r#"<table id="rules""#).expect("the rule table")..];
    let table = &table[..table.find("</table>").unwrap()];
    for rule in ["pentest", "backup-agent", "lab-devices"] {
        assert!(table.contains(&format!(r#"<tr data-rule="{rule}""#)), "{rule} in the table");
    }
    let hits = &dom[dom.find(r#"<table id="hits""#).expect("the true-positive table")..];
    assert!(hits.contains("p5") && hits.contains("b5"), "the true-positive hits are named");
    let overlaps = &dom[dom.find(r#"<table id="overlaps""#).expect("the overlap table")..];
    assert!(overlaps.contains("<code>pentest</code> (first in the file)"), "production's first match is named");

    // The screenshot in docs/img is made from this page: SECMON_REPORT_SCREENSHOT=docs/img/replay-report.png.
    if let Some(png) = std::env::var_os("SECMON_REPORT_SCREENSHOT") {
        chromium_run(&chromium, &page, Some(std::path::Path::new(&png)));
    }
}

#[test]
fn since_reads_durations_dates_and_times() {
    let now: DateTime<Utc> = t(NOW);
    assert_eq!(secmon::replay::parse_since("30d", now).unwrap(), t("2026-10-31T12:00:00Z"));
    assert_eq!(secmon::replay::parse_since("2026-11-01", now).unwrap(), t("2026-11-01T00:00:00Z"));
    assert_eq!(secmon::replay::parse_since("2026-11-01T06:00:00Z", now).unwrap(), t("2026-11-01T06:00:00Z"));
    assert!(secmon::replay::parse_since("last month", now).unwrap_err().contains("neither a duration"));
}

/// The command itself, against the emulator: JSON lines of every kind on stdout, the report under
/// `--out`, each rule's result stored where `check-config` finds it.
#[tokio::test]
async fn the_replay_command_prints_json_lines_writes_the_report_and_stores_the_results() {
    let emu = Emulator::start(secmon_emulator::Options::default()).await.unwrap();
    let tenant = secmon_emulator::Options::default().default_tenant;
    emu.seed_alerts(&tenant, history());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secmon.db");
    let file = dir.path().join("secmon.yaml");
    let mut text = format!(
        "graph_url: {}\nauthority_url: {}\nstore: {{ sqlite: {db:?} }}\ntenants:\n  - {{ id: {tenant}, name: contoso }}\nclose_rules:\n",
        emu.graph_url(),
        emu.authority_url()
    );
    for r in rules() {
        text.push_str(&format!(
            "  - id: {}\n    owner: secops@contoso.com\n    expires: 2099-06-30\n    mode: {}\n    when: {}\n    \
             classification: informationalExpectedActivity\n    determination: securityTesting\n    max_severity: {}\n",
            r.id,
            if r.mode == Mode::Enforce { "enforce" } else { "shadow" },
            serde_json::to_string(&r.when).unwrap(),
            r.max_severity.as_deref().unwrap()
        ));
    }
    std::fs::write(&file, text).unwrap();
    let out_dir = dir.path().join("report");
    let secmon = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_secmon"));
        cmd.args(args)
            .arg("-c")
            .arg(&file)
            .env("IDENTITY_ENDPOINT", emu.identity_endpoint())
            .env("IDENTITY_HEADER", emu.identity_header());
        for var in
            ["SECMON_STORE", "SECMON_CLOSE", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE"]
        {
            cmd.env_remove(var);
        }
        cmd.output()
    };
    let since = (t(NOW) - chrono::Duration::days(30)).to_rfc3339();
    let out = secmon(&["rules", "replay", "--since", &since, "--out", out_dir.to_str().unwrap()]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["replay_rule", "replay_rule", "replay_rule", "replay_overlap", "replay_summary"]);
    assert_eq!(lines[0]["rule"], "pentest");
    assert_eq!(lines[0]["true_positive_alerts"], json!(["p5"]));
    for field in ["would_close", "analyst_true_positive", "analyst_benign", "unresolved", "blocked"] {
        assert!(lines[0][field].is_u64(), "{field} in {}", lines[0]);
    }
    assert_eq!(lines[3]["rules"], json!(["pentest", "lab-devices"]));
    let html = std::fs::read_to_string(out_dir.join("replay-contoso.html")).unwrap();
    assert!(html.contains(r#"<table id="rules">"#) && html.contains(r#"<svg id="matches-per-day""#));

    // The stored result of pentest names p5: check-config warns about the enforce rule.
    let out = secmon(&["check-config"]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("close_rules[0].mode") && stderr.contains("truePositive: p5"), "{stderr}");
}
