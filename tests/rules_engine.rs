//! Table-driven tests of rule and route evaluation: pure, no I/O beyond reading the documented samples.

use std::path::Path;

use chrono::{DateTime, Utc};
use secmon::alert::Alert;
use secmon::config::{Config, ConfigError, Level};
use secmon::rules::{Blocked, Decision, Engine, Mode, Outcome};
use secmon::setup::load_str;
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    "2026-11-26T12:00:00Z".parse().unwrap()
}

fn samples() -> Vec<Value> {
    let mut out = Vec::new();
    for text in [
        include_str!("fixtures/samples/alerts_v2-list-response.json"),
        include_str!("fixtures/samples/alerts_v2-list-sentinel-response.json"),
    ] {
        let doc: Value = serde_json::from_str(text).unwrap();
        out.extend(doc["value"].as_array().unwrap().iter().cloned());
    }
    out
}

fn sample(id_prefix: &str) -> Value {
    samples().into_iter().find(|a| a["id"].as_str().unwrap().starts_with(id_prefix)).unwrap()
}

const HEADER: &str = "tenants:\n  - { id: 11111111-2222-3333-4444-555555555555, name: contoso }\nreceivers:\n  soc: { email: { from: a@contoso.com, to: [soc@contoso.com] } }\n  digest: { email: { from: a@contoso.com, to: [digest@contoso.com] } }\n  tickets: { email: { from: a@contoso.com, to: [tickets@contoso.com] } }\n";

fn config(body: &str) -> Config {
    load_str(&format!("{HEADER}{body}"), Path::new("t.yaml"), &|_| None, now()).unwrap_or_else(|e| panic!("{e}")).config
}

fn rule(id: &str, when: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    owner: secops@contoso.com\n    expires: 2027-01-31\n    when: '{when}'\n    classification: informationalExpectedActivity\n    determination: securityTesting\n{extra}"
    )
}

/// (case, alert, expected outcome, matched rule, its mode)
type Row = (&'static str, Value, Outcome, Option<&'static str>, Option<Mode>);

fn decide(engine: &Engine, raw: &Value) -> Decision {
    let alert = Alert::from_value(raw.clone()).unwrap();
    engine.decide(&alert, "contoso", now())
}

#[test]
fn close_rules_over_the_real_samples() {
    let cfg = config(&format!(
        "close_rules:\n{}{}{}",
        rule(
            "by-ip",
            r#"alert.evidence.exists(e, has(e.ipInterfaces) && e.ipInterfaces.exists(i, i.inCidr("1.1.1.0/24")))"#,
            "    mode: enforce\n"
        ),
        rule(
            "by-process",
            r#"alert.evidence.exists(e, has(e.imageFile) && e.imageFile.fileName.equalsIgnoreCase("MSSENSE.EXE"))"#,
            ""
        ),
        rule(
            "sentinel",
            r#"alert.serviceSource == "microsoftSentinel" && alert.title.startsWith("Suspicious sign-in")"#,
            "    mode: enforce\n"
        ),
    ));
    let engine = Engine::compile(&cfg).unwrap();
    let all = samples();
    let mde = sample("da637551227677560813");
    let sentinel = sample("da637878227677560813");
    let mut not_lab = mde.clone();
    not_lab["evidence"][0]["ipInterfaces"] = json!(["10.0.0.1"]);
    let table: Vec<Row> = vec![
        ("MDE sample, device IP in range", mde.clone(), Outcome::Close, Some("by-ip"), Some(Mode::Enforce)),
        (
            "MDE sample, IP out of range: the process rule (shadow)",
            not_lab,
            Outcome::Close,
            Some("by-process"),
            Some(Mode::Shadow),
        ),
        (
            "Sentinel sample is high: matched but above max_severity",
            sentinel.clone(),
            Outcome::None,
            Some("sentinel"),
            Some(Mode::Enforce),
        ),
    ];
    for (prefix, raw, outcome, rule_id, mode) in &table {
        let d = decide(&engine, raw);
        assert_eq!(d.outcome, *outcome, "{prefix}: {}", d.reason);
        assert_eq!(d.close.as_ref().map(|m| m.rule_id.as_str()), *rule_id, "{prefix}");
        assert_eq!(d.close.as_ref().map(|m| m.mode), *mode, "{prefix}");
    }
    // Every sample gets a decision with a reason, and the first sample's matched close carries what
    // the PATCH and the comment need.
    for raw in &all {
        assert!(!decide(&engine, raw).reason.is_empty());
    }
    let d = decide(&engine, &all[0]);
    let m = d.close.unwrap();
    assert_eq!(
        (m.classification.as_str(), m.determination.as_str()),
        ("informationalExpectedActivity", "securityTesting")
    );
    assert!(m.comment.contains("by-ip") && m.comment.contains("secops@contoso.com"), "{}", m.comment);
    assert_eq!(m.rule_hash, cfg.close_rules[0].hash());
}

#[test]
fn crafted_alerts_never_break_evaluation() {
    let cfg = config(&format!(
        "close_rules:\n{}{}routes:\n  - {{ when: 'alert.severity == \"high\"', receivers: [soc] }}\n  - {{ receivers: [digest] }}\n",
        rule(
            "lab-ip",
            r#"alert.evidence.exists(e, has(e.ipAddress) && e.ipAddress.inCidr("203.0.113.0/24"))"#,
            "    mode: enforce\n"
        ),
        rule("title", r#"alert.title.containsIgnoreCase("TÉST ÜBUNG")"#, "    mode: enforce\n"),
    ));
    let engine = Engine::compile(&cfg).unwrap();
    let mut many =
        vec![json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "198.51.100.1"}); 999];
    many.push(json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.9"}));
    // (case, alert, outcome, rule, number of evaluation errors)
    let table: Vec<(&str, Value, Outcome, Option<&str>, usize)> = vec![
        ("only an id", json!({"id": "a1"}), Outcome::Notify, None, 3),
        (
            "null evidence",
            json!({"id": "a2", "title": "x", "evidence": null, "severity": "low"}),
            Outcome::Notify,
            None,
            1,
        ),
        (
            "evidence of wrong type",
            json!({"id": "a3", "title": "x", "evidence": "nope", "severity": "low"}),
            Outcome::Notify,
            None,
            1,
        ),
        (
            "unknown enums",
            json!({"id": "a4", "title": "x", "severity": "catastrophic", "status": "brandNew", "evidence": []}),
            Outcome::Notify,
            None,
            0,
        ),
        (
            "1,000 evidence items",
            json!({"id": "a5", "title": "x", "severity": "low", "status": "new", "evidence": many}),
            Outcome::Close,
            Some("lab-ip"),
            0,
        ),
        (
            "non-ASCII title",
            json!({"id": "a6", "title": "Geplante test ubung — 東京", "severity": "low", "status": "new", "evidence": []}),
            Outcome::Notify,
            None,
            0,
        ),
        (
            "non-ASCII match",
            json!({"id": "a7", "title": "Geplante TÉST ÜBUNG", "severity": "informational", "status": "new", "evidence": []}),
            Outcome::Close,
            Some("title"),
            0,
        ),
        (
            "unknown evidence type",
            json!({"id": "a8", "title": "x", "severity": "low", "status": "new", "evidence": [{"@odata.type": "#microsoft.graph.security.quantumEvidence", "ipAddress": "203.0.113.1"}]}),
            Outcome::Close,
            Some("lab-ip"),
            0,
        ),
        (
            "ip not an address",
            json!({"id": "a9", "title": "x", "severity": "low", "status": "new", "evidence": [{"ipAddress": "bogus"}]}),
            Outcome::Notify,
            None,
            0,
        ),
    ];
    for (case, raw, outcome, rule_id, errors) in table {
        let d = decide(&engine, &raw);
        assert_eq!(d.outcome, outcome, "{case}: {}", d.reason);
        assert_eq!(d.close.as_ref().map(|m| m.rule_id.as_str()), rule_id, "{case}");
        assert_eq!(d.errors.len(), errors, "{case}: {:?}", d.errors);
        if errors > 0 {
            assert!(d.reason.contains("counts as no match"), "{case}: {}", d.reason);
        }
        if outcome == Outcome::Notify {
            assert_eq!(d.notify(), ["digest"], "{case}: the catch-all route still notifies");
        }
    }
}

#[test]
fn guardrails_in_the_decision() {
    let cfg = config(&format!(
        "close_rules:\n{}routes:\n  - {{ receivers: [soc] }}\n",
        rule("any", "true", "    mode: enforce\n"),
    ));
    let engine = Engine::compile(&cfg).unwrap();
    let table: Vec<(Value, Outcome, Option<Blocked>, &[&str])> = vec![
        (json!({"id": "g1", "severity": "medium", "status": "new"}), Outcome::Close, None, &[]),
        (
            json!({"id": "g2", "severity": "high", "status": "new"}),
            Outcome::Notify,
            Some(Blocked::Severity(secmon::alert::Severity::High, secmon::alert::Severity::Medium)),
            &["soc"],
        ),
        (
            json!({"id": "g3", "status": "new"}),
            Outcome::Notify,
            Some(Blocked::Severity(secmon::alert::Severity::Unknown, secmon::alert::Severity::Medium)),
            &["soc"],
        ),
        (json!({"id": "g4", "severity": "low", "status": "resolved"}), Outcome::None, Some(Blocked::Resolved), &[]),
        (
            json!({"id": "secmon-stale-contoso", "severity": "low", "status": "new"}),
            Outcome::Notify,
            Some(Blocked::Internal),
            &["soc"],
        ),
        (
            json!({"id": "g5", "severity": "low", "status": "inProgress"}),
            Outcome::Notify,
            Some(Blocked::Touched("status inProgress".into())),
            &["soc"],
        ),
        (
            json!({"id": "g6", "severity": "low", "status": "new", "assignedTo": "dana@contoso.com"}),
            Outcome::Notify,
            Some(Blocked::Touched("assigned to dana@contoso.com".into())),
            &["soc"],
        ),
        (
            json!({"id": "g7", "severity": "low", "status": "new", "classification": "truePositive", "determination": null}),
            Outcome::Notify,
            Some(Blocked::Touched("classified truePositive".into())),
            &["soc"],
        ),
        (
            json!({"id": "g8", "severity": "low", "status": "new", "classification": "unknown", "determination": "unknown"}),
            Outcome::Close,
            None,
            &[],
        ),
        (
            json!({"id": "g9", "severity": "low", "status": "new", "systemTags": ["agent"]}),
            Outcome::Notify,
            Some(Blocked::Agent("tagged Agent".into())),
            &["soc"],
        ),
        (
            json!({"id": "g10", "severity": "low", "status": "new", "systemTags": ["Attack Disruption", "Agent"]}),
            Outcome::Notify,
            Some(Blocked::AttackDisruption),
            &["soc"],
        ),
        (
            json!({"id": "g11", "severity": "low", "status": "new",
                   "comments": [{"comment": "Confirmed malicious", "createdByDisplayName": "Dana Lee"}]}),
            Outcome::Notify,
            Some(Blocked::Touched("commented by Dana Lee".into())),
            &["soc"],
        ),
    ];
    for (raw, outcome, blocked, notify) in table {
        let d = decide(&engine, &raw);
        assert_eq!((d.outcome, &d.blocked), (outcome, &blocked), "{raw}: {}", d.reason);
        assert_eq!(d.notify(), notify, "{raw}");
    }
}

#[test]
fn first_matching_rule_wins_expired_rules_are_inactive_and_shadow_also_notifies() {
    let cfg = config(&format!(
        "close_rules:\n{}{}{}routes:\n  - {{ receivers: [soc] }}\n",
        rule("expired", "true", "    mode: enforce\n").replace("2027-01-31", "2026-11-25"),
        rule("first", r#"alert.severity == "low""#, ""),
        rule("second", "true", "    mode: enforce\n"),
    ));
    let engine = Engine::compile(&cfg).unwrap();
    let d = decide(&engine, &json!({"id": "f1", "severity": "low", "status": "new"}));
    assert_eq!(d.close.as_ref().unwrap().rule_id, "first");
    assert_eq!(d.close.as_ref().unwrap().mode, Mode::Shadow, "shadow is the default");
    assert_eq!(d.notify(), ["soc"], "a shadow close is notified as usual");
    assert!(d.reason.contains("would close"), "{}", d.reason);
    let d = decide(&engine, &json!({"id": "f2", "severity": "informational", "status": "new"}));
    assert_eq!(d.close.as_ref().unwrap().rule_id, "second");
    assert!(d.notify().is_empty(), "an enforced close is not notified");
    let forced = d.into_shadow("SECMON_CLOSE=off");
    assert_eq!(forced.close.as_ref().unwrap().mode, Mode::Shadow);
    assert_eq!(forced.notify(), ["soc"]);
    // On the expiry day itself the rule still applies.
    let alert = json!({"id": "f3", "severity": "informational", "status": "new"});
    let d = engine.decide(&Alert::from_value(alert).unwrap(), "contoso", "2026-11-25T23:59:59Z".parse().unwrap());
    assert_eq!(d.close.unwrap().rule_id, "expired");
}

#[test]
fn routes_first_match_wins_unless_continue() {
    let cfg = config(
        "routes:\n  - { name: high, when: 'alert.severity == \"high\"', receivers: [soc, tickets], continue: true }\n  - { name: tenant, when: 'tenant == \"contoso\"', receivers: [soc] }\n  - { name: never-reached, receivers: [digest] }\n",
    );
    let engine = Engine::compile(&cfg).unwrap();
    let d = decide(&engine, &json!({"id": "r1", "severity": "high"}));
    assert_eq!(d.receivers(), ["soc", "tickets"], "deduplicated, in order");
    assert_eq!(d.routes.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1]);
    let d = decide(&engine, &json!({"id": "r2", "severity": "low"}));
    assert_eq!(d.receivers(), ["soc"]);
    assert_eq!(d.routes[0].name.as_deref(), Some("tenant"));
    let none =
        Engine::compile(&config("routes:\n  - { when: 'alert.severity == \"high\"', receivers: [soc] }\n")).unwrap();
    let d = decide(&none, &json!({"id": "r3", "severity": "low"}));
    assert_eq!((d.outcome, d.reason.as_str()), (Outcome::None, "no close rule matched; no route matched"));
}

#[test]
fn deliveries_take_the_options_of_the_first_matched_route_that_names_them() {
    let cfg = config(
        "routes:
  - { name: high, when: 'alert.severity == \"high\"', receivers: [soc], realert: 1h, group_by_incident: 30s, set: { status: inProgress }, continue: true }
  - { receivers: [soc, tickets], realert: 5m, set: { assigned_to: soc@contoso.com } }
",
    );
    let engine = Engine::compile(&cfg).unwrap();
    let d = decide(&engine, &json!({"id": "d1", "severity": "high"}));
    let hour = Some(std::time::Duration::from_secs(3600));
    let soc = &d.deliveries[0];
    assert_eq!(
        (soc.receiver.as_str(), soc.realert, soc.group),
        ("soc", hour, Some(std::time::Duration::from_secs(30)))
    );
    assert_eq!(soc.routes, ["high", "routes[1]"]);
    let tickets = &d.deliveries[1];
    assert_eq!(
        (tickets.receiver.as_str(), tickets.realert, tickets.group),
        ("tickets", Some(std::time::Duration::from_secs(300)), None)
    );
    assert_eq!(tickets.routes, ["routes[1]"]);
    let updates: Vec<(&str, Option<&str>, Option<&str>)> =
        d.updates.iter().map(|u| (u.route.as_str(), u.set.status.as_deref(), u.set.assigned_to.as_deref())).collect();
    assert_eq!(updates, [("high", Some("inProgress"), None), ("routes[1]", None, Some("soc@contoso.com"))]);
    let low = decide(&engine, &json!({"id": "d2", "severity": "low"}));
    assert_eq!(low.deliveries[0].realert, Some(std::time::Duration::from_secs(300)));
    assert_eq!(low.updates.len(), 1);
}

fn issues(body: &str) -> Vec<String> {
    match load_str(&format!("{HEADER}{body}"), Path::new("t.yaml"), &|_| None, now()) {
        Ok(loaded) => loaded.warnings.iter().map(|w| loaded.render(w)).collect(),
        Err(ConfigError::Invalid { lines, .. }) => lines,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn check_config_reports_every_problem_with_line_and_field() {
    let lines = issues(&format!(
        "close_rules:\n{}{}  - id: no-owner\n    expires: 2027-01-01\n    when: 'true'\n    classification: falsePositive\n    determination: notMalicious\n{}",
        rule("dup", "alert.title.startsWith(", ""),
        rule("dup", "true", "    max_per_hour: 0\n").replace("informationalExpectedActivity", "benignPositive"),
        "routes:\n  - { when: 'alert.evidence.exists(a, a.x.exists(b, b.y.exists(c, true)))', receivers: [soc, pager] }\n",
    ));
    let want = [
        ("t.yaml:11:11:", "close_rules[0].when: CEL syntax"),
        ("t.yaml:14:9:", "close_rules[1].id: duplicate rule id \"dup\""),
        ("t.yaml:18:21:", "close_rules[1].classification: benignPositive"),
        ("t.yaml:20:19:", "close_rules[1].max_per_hour: must be at least 1"),
        ("t.yaml:21:7:", "close_rules[2].owner: every close rule needs an owner"),
        ("t.yaml:27:13:", "routes[0].when: comprehensions"),
        ("t.yaml:27:", "routes[0].receivers[1]: unknown receiver \"pager\""),
    ];
    for (place, text) in want {
        assert!(
            lines.iter().any(|l| l.starts_with(place) && l.contains(text)),
            "{place} {text}:\n{}",
            lines.join("\n")
        );
    }
    assert!(lines.iter().all(|l| l.contains(": error: ")), "{lines:?}");
    let unknown = issues(&format!("close_rules:\n{}", rule("x", "true", "    mood: enforce\n")));
    assert!(
        unknown[0].starts_with("t.yaml:") && unknown[0].contains("close_rules[0].mood: unknown field"),
        "{unknown:?}"
    );
    let missing = issues(
        "close_rules:\n  - id: x\n    owner: a\n    when: 'true'\n    classification: falsePositive\n    determination: notMalicious\n",
    );
    assert!(
        missing.iter().any(|l| l.contains("close_rules[0].expires: every close rule needs an expiry")),
        "{missing:?}"
    );
    let stale =
        issues(&format!("close_rules:\n{}", rule("x", "true", "").replace("securityTesting", "compromisedUser")));
    assert!(stale[0].contains("\"compromisedAccount\""), "{stale:?}");
}

#[test]
fn expiry_warnings_do_not_fail_the_config() {
    let lines = issues(&format!(
        "close_rules:\n{}{}",
        rule("old", "true", "").replace("2027-01-31", "2026-10-01"),
        rule("soon", "true", "").replace("2027-01-31", "2026-12-05"),
    ));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("warning") && lines[0].contains("expired on 2026-10-01"), "{lines:?}");
    assert!(lines[1].contains("warning") && lines[1].contains("in 9 days"), "{lines:?}");
    let loaded = load_str(
        &format!("{HEADER}close_rules:\n{}", rule("old", "true", "").replace("2027-01-31", "2026-10-01")),
        Path::new("t.yaml"),
        &|_| None,
        now(),
    )
    .unwrap();
    assert!(loaded.warnings.iter().all(|w| w.level == Level::Warning));
}

#[test]
fn rules_test_prints_one_line_per_alert_from_every_file_shape() {
    let cfg = config(&format!(
        "close_rules:\n{}routes:\n  - {{ receivers: [soc] }}\n",
        rule("lab", "alert.id == \"one\"", "    mode: enforce\n")
    ));
    let engine = Engine::compile(&cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single.json");
    std::fs::write(&single, json!({"id": "one", "severity": "low", "status": "new"}).to_string()).unwrap();
    let array = dir.path().join("array.json");
    std::fs::write(&array, json!([{"id": "two"}, {"no": "id"}]).to_string()).unwrap();
    // The same guardrails offline: an analyst's alert is not closed by `rules test` either.
    let touched = dir.path().join("touched.json");
    std::fs::write(
        &touched,
        json!({"id": "one", "severity": "low", "status": "new", "assignedTo": "dana@contoso.com"}).to_string(),
    )
    .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    secmon::rules::dry_run::run(&engine, false, std::slice::from_ref(&touched), "contoso", now(), &mut out, &mut err)
        .unwrap();
    let line: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(line["decision"], "notify", "{line}");
    assert!(line["reason"].as_str().unwrap().contains("assigned to dana@contoso.com"), "{line}");
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samples/alerts_v2-list-response.json");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ok = secmon::rules::dry_run::run(
        &engine,
        false,
        &[single.clone(), array, list],
        "contoso",
        now(),
        &mut out,
        &mut err,
    )
    .unwrap();
    assert!(!ok, "an item without an id is a problem");
    assert!(String::from_utf8(err).unwrap().contains("item 1: not an alert"));
    let lines: Vec<Value> = String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "one, two, and the one alert of the list response");
    assert_eq!(lines[2]["alert"], "da637551227677560813_-961444813");
    assert_eq!(
        lines[0],
        json!({"kind": "decision", "alert": "one", "decision": "close", "rule": "lab", "mode": "enforce", "receivers": [], "reason": lines[0]["reason"]})
    );
    assert_eq!(
        (lines[1]["decision"].as_str(), &lines[1]["rule"], &lines[1]["receivers"]),
        (Some("notify"), &Value::Null, &json!(["soc"]))
    );
}

/// An alert from the pentest range that also carries an attacker's IP, mimikatz and a credential-dumping
/// command line: a real attack during the pentest window.
fn pentest_ip_next_to_an_attacker() -> Value {
    json!({
        "id": "da-mixed", "status": "new", "severity": "medium", "serviceSource": "microsoftDefenderForEndpoint",
        "title": "Credential dumping attempt", "lastUpdateDateTime": "2026-11-26T11:00:00Z",
        "evidence": [
            {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.77", "roles": ["attacker"]},
            {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "198.51.100.66", "roles": ["attacker"]},
            {"@odata.type": "#microsoft.graph.security.processEvidence", "verdict": "malicious",
             "imageFile": {"fileName": "mimikatz.exe", "filePath": "C:\\Users\\Public"},
             "processCommandLine": "mimikatz.exe \"privilege::debug\" \"sekurlsa::logonpasswords\" exit"},
            {"@odata.type": "#microsoft.graph.security.deviceEvidence", "hostName": "fin-ws-042"}
        ]
    })
}

/// The close rules of a shipped example config, loaded as `check-config` would.
fn example_rules(file: &str) -> Config {
    let env = |name: &str| {
        name.starts_with("SECMON_DEMO_").then(|| "https://localhost:1".to_string()).or_else(|| match name {
            "FABRIKAM_CLIENT_SECRET" => Some("example-secret-value".into()),
            "SECMON_TEAMS_URL" => Some(
                "https://prod-01.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=EXAMPLE"
                    .into(),
            ),
            _ => None,
        })
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let loaded =
        load_str(&std::fs::read_to_string(&path).unwrap(), &path, &env, now()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings, vec![], "{file} teaches the safe forms");
    loaded.config
}

#[test]
fn the_documented_pentest_rule_does_not_close_an_attack_that_carries_one_pentest_ip() {
    for file in ["examples/secmon.yaml", "examples/demo.yaml"] {
        let engine = Engine::compile(&example_rules(file)).unwrap();
        let d = decide(&engine, &pentest_ip_next_to_an_attacker());
        assert_ne!(d.outcome, Outcome::Close, "{file}: {}", d.reason);
        assert_eq!(d.close, None, "{file}: no rule matches at all");
        // The same rule still closes the pentest's own alert.
        let mut pentest = pentest_ip_next_to_an_attacker();
        pentest["evidence"] = json!([pentest["evidence"][0], pentest["evidence"][3]]);
        let d = decide(&engine, &pentest);
        assert_eq!((d.outcome, d.close.map(|m| m.rule_id)), (Outcome::Close, Some("pentest-2026q4".into())), "{file}");
    }
    // The idiom the docs used to teach closes it.
    let old = config(&format!(
        "close_rules:\n{}",
        rule("old", r#"alert.evidence.exists(e, has(e.ipAddress) && e.ipAddress.inCidr("203.0.113.0/24"))"#, "")
    ));
    assert_eq!(decide(&Engine::compile(&old).unwrap(), &pentest_ip_next_to_an_attacker()).outcome, Outcome::Close);
}

#[test]
fn check_config_warns_on_rules_that_fail_open_with_line_and_rewrite() {
    let lines = issues(&format!(
        "close_rules:\n{}{}{}{}",
        rule("a", r#"alert.evidence.exists(e, has(e.ipAddress) && e.ipAddress.inCidr("203.0.113.0/24"))"#, ""),
        rule("b", r#"alert.evidence.all(e, e.verdict == "noThreatsFound")"#, ""),
        rule("c", r#"alert.title.matches("Network scan")"#, ""),
        rule(
            "d",
            r#"alert.allEvidence("process", p, p.imageFile.filePath.startsWith("C:\\Program Files\\Backup"))"#,
            ""
        ),
    ));
    let want = [
        (
            "t.yaml:11:11: warning: close_rules[0].when:",
            r#"rewrite as: alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))"#,
        ),
        ("t.yaml:17:11: warning: close_rules[1].when:", "true when the list is empty"),
        ("t.yaml:23:11: warning: close_rules[2].when:", r#"rewrite as: alert.title.fullMatch("Network scan")"#),
        (
            "t.yaml:29:11: warning: close_rules[3].when:",
            r#"rewrite as: p.imageFile.filePath.pathUnder("C:\\Program Files\\Backup")"#,
        ),
    ];
    assert_eq!(lines.len(), want.len(), "{}", lines.join("\n"));
    for (place, text) in want {
        assert!(
            lines.iter().any(|l| l.starts_with(place) && l.contains(text)),
            "{place} {text}:\n{}",
            lines.join("\n")
        );
    }
    // The safe forms: no warning.
    let safe = issues(&format!(
        "close_rules:\n{}{}{}{}",
        rule("a", r#"alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))"#, ""),
        rule(
            "b",
            r#"alert.allEvidence("file", f, f.fileDetails.sha256.hashIn(["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]))"#,
            ""
        ),
        rule("c", r#"alert.title.fullMatch("Network scan from 203\\.0\\.113\\.[0-9]+")"#, ""),
        rule(
            "d",
            r#"alert.allEvidence("process", p, p.imageFile.filePath.pathUnder("C:\\Program Files\\Backup"))"#,
            ""
        ),
    ));
    assert_eq!(safe, Vec::<String>::new());
    // Routes are not judged: exists is how a route says "any".
    let routes =
        issues("routes:\n  - { when: 'alert.evidence.exists(e, e.verdict == \"malicious\")', receivers: [soc] }\n");
    assert_eq!(routes, Vec::<String>::new());
}

#[test]
fn secmon_close_is_read_strictly_at_load() {
    let text = format!("{HEADER}close_rules:\n{}", rule("x", "true", "    mode: enforce\n"));
    let load = |value: Option<&str>| {
        let env = |k: &str| if k == "SECMON_CLOSE" { value.map(str::to_string) } else { None };
        load_str(&text, Path::new("t.yaml"), &env, now())
    };
    assert!(!load(None).unwrap().config.closing_disabled);
    assert!(!load(Some("on")).unwrap().config.closing_disabled);
    for off in ["off", "disabled", "disable", "n", "No", "shadow"] {
        assert!(load(Some(off)).unwrap().config.closing_disabled, "{off}");
    }
    for garbage in ["", "disabled2", "of"] {
        let err = load(Some(garbage)).unwrap_err().to_string();
        assert!(err.starts_with("t.yaml: error: SECMON_CLOSE: "), "{err}");
        assert!(err.contains("use one of off, false, 0, no, n, disabled, disable, shadow"), "{err}");
    }
}

#[test]
fn names_that_do_not_exist_are_config_errors_and_failing_rules_fail_rules_test() {
    let body = format!(
        "close_rules:\n{}{}routes:\n  - {{ when: 'alert.severty == \"high\"', receivers: [soc] }}\n",
        rule("typo-fn", r#"alert.title.containsIgnorecase("scan")"#, ""),
        rule("typo-var", r#"alrt.severity == "low""#, ""),
    );
    let lines = match secmon::setup::load_str(&format!("{HEADER}{body}"), Path::new("t.yaml"), &|_| None, now()) {
        Ok(_) => panic!("a config with unknown names loaded"),
        Err(e) => e.to_string(),
    };
    assert!(lines.contains("close_rules[0].when: unknown function \"containsIgnorecase\""), "{lines}");
    assert!(lines.contains("close_rules[1].when: unknown variable \"alrt\" at column 1"), "{lines}");
    assert!(lines.contains("routes[0].when: unknown alert property \"severty\""), "{lines}");
    assert!(lines.contains("did you mean \"severity\""), "{lines}");

    // A rule that compiles and names real things can still fail on an alert: `rules test` says so and fails.
    let cfg = config(&format!(
        "close_rules:\n{}routes:\n  - {{ receivers: [soc] }}\n",
        rule("owner-lab", r#"alert.customDetails.owner == "lab""#, "")
    ));
    let engine = Engine::compile(&cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.json");
    std::fs::write(&file, json!({"id": "x1", "severity": "low", "status": "new"}).to_string()).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ok = secmon::rules::dry_run::run(&engine, false, &[file], "contoso", now(), &mut out, &mut err).unwrap();
    let err = String::from_utf8(err).unwrap();
    assert!(!ok, "a failing expression fails the run");
    assert!(err.contains("alert x1: close_rules[0]") && err.contains("failed"), "{err}");
}
