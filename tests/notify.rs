//! Notifications end to end against a local HTTP sink and an in-memory Graph: once-only delivery,
//! realert, incident grouping, retries, escaping, signatures, status updates, secrets.

mod notify_common;

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use notify_common::*;
use secmon::alert::Alert;
use secmon::respond::RespondError;
use serde_json::{Value, json};

const ALL: &str = r#"
routes:
  - name: soc
    receivers: [soc-teams, soc-email, tickets]
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}" } }
  soc-email: { email: { from: secmon@contoso.com, to: [soc@contoso.com], cc: [lead@contoso.com] } }
  tickets: { webhook: { url: "${HOOK_URL}", secret: "${HOOK_KEY}" } }
"#;

const TEAMS_PATH: &str = "/workflows/soc/triggers/manual/paths/invoke";

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn alert(raw: &Value) -> Alert {
    Alert::from_value(raw.clone()).unwrap()
}

#[tokio::test]
async fn each_receiver_is_told_once_even_when_the_message_is_redelivered() {
    let w = world(ALL).await;
    let raw = sample(json!({"severity": "high"}));
    let receivers = names(&["soc-teams", "soc-email", "tickets"]);
    let first = deliver(&w.app, &alert(&raw), &receivers).await.unwrap();
    assert_eq!(first.sent, receivers);
    let again = deliver(&w.app, &alert(&raw), &receivers).await.unwrap();
    assert_eq!(again.already, receivers);
    assert!(again.sent.is_empty());
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 1);
    assert_eq!(w.sink.hits("/hook").len(), 1);
    assert_eq!(w.graph.mails().len(), 1);

    let message = w.sink.hits(TEAMS_PATH)[0].json();
    assert_eq!(message["type"], "message");
    let att = &message["attachments"][0];
    assert_eq!(att["contentType"], "application/vnd.microsoft.card.adaptive");
    assert!(att["contentUrl"].is_null());
    let card = &att["content"];
    assert_eq!(card["version"], "1.4");
    let actions = card["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0]["type"], "Action.OpenUrl");
    assert_eq!(actions[0]["url"], raw["alertWebUrl"]);
    assert_eq!(actions[1]["url"], raw["incidentWebUrl"]);
    let text = card.to_string();
    for fact in ["High", "microsoftDefenderForEndpoint", "T1564.001", "yonif-lap3"] {
        assert!(text.contains(fact), "{fact} missing from {text}");
    }
    keep_card("sample-high", &message);

    let records = audit(&w.store).await;
    let sends: Vec<_> = records.iter().filter(|r| r["action"] == "notify").collect();
    assert_eq!(sends.len(), 3, "{records:?}");
    assert!(sends.iter().all(|r| r["alert_version"] == raw["lastUpdateDateTime"]));
}

#[tokio::test]
async fn sendmail_body_has_graphs_shape_and_escapes_hostile_alert_text() {
    let w = world(ALL).await;
    let hostile = "<script>alert(\"x\")</script> Zoë's 'quoted' & <b>bold</b> — 東京";
    let raw = sample(json!({
        "severity": "high",
        "title": hostile,
        "description": format!("{hostile}\nsecond line"),
        "evidence": [
            {"@odata.type": "#microsoft.graph.security.urlEvidence", "url": "https://evil.example/<script>?q=\"x\""},
            {"@odata.type": "#microsoft.graph.security.userEvidence", "userAccount": {"userPrincipalName": "zoë@contoso.com", "displayName": hostile}},
            {"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": "203.0.113.7"}
        ]
    }));
    deliver(&w.app, &alert(&raw), &names(&["soc-email", "soc-teams"])).await.unwrap();
    let mails = w.graph.mails();
    let (tenant, sender, body) = &mails[0];
    assert_eq!((tenant.as_str(), sender.as_str()), ("contoso", "secmon@contoso.com"));
    assert_eq!(body["saveToSentItems"], json!(false));
    assert_eq!(body.as_object().unwrap().len(), 2);
    let m = &body["message"];
    assert_eq!(m["subject"], format!("[secmon][contoso][High] {hostile}"));
    assert_eq!(m["body"]["contentType"], "HTML");
    assert_eq!(m["toRecipients"], json!([{"emailAddress": {"address": "soc@contoso.com"}}]));
    assert_eq!(m["ccRecipients"], json!([{"emailAddress": {"address": "lead@contoso.com"}}]));
    let html = m["body"]["content"].as_str().unwrap();
    assert!(!html.contains("<script"), "unescaped script tag");
    assert!(!html.contains("<b>bold"), "unescaped markup");
    assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2f;script&gt;"), "{html}");
    assert!(html.contains("Zoë&#x27;s") && html.contains("東京") && html.contains("zoë@contoso.com"));
    assert!(html.contains("https:&#x2f;&#x2f;evil.example&#x2f;&lt;script&gt;"));
    assert!(!html.contains("<img") && !html.contains("src=") && !html.contains("<style"));
    std::fs::create_dir_all(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cards")).unwrap();
    std::fs::write(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cards/hostile-email.html"), html).unwrap();

    let message = w.sink.hits(TEAMS_PATH)[0].json();
    let card = &message["attachments"][0]["content"];
    let title = card["body"][0]["items"][1]["text"].as_str().unwrap();
    assert_eq!(
        title,
        "<\u{200B}script>alert\\(\"x\"\\)<\u{200B}/script> Zoë's 'quoted' & <\u{200B}b>bold<\u{200B}/b> — 東京"
    );
    keep_card("hostile", &message);
}

#[tokio::test(start_paused = true)]
async fn teams_429_is_retried_after_the_advised_delay() {
    let w = world(ALL).await;
    w.sink.script(
        TEAMS_PATH,
        1,
        429,
        Some(7),
        r#"{"error":{"code":"TooManyRequests","message":"Rate limit is exceeded."}}"#,
    );
    let raw = sample(json!({}));
    let started = tokio::time::Instant::now();
    let done = deliver(&w.app, &alert(&raw), &names(&["soc-teams"])).await.unwrap();
    assert_eq!(done.sent, names(&["soc-teams"]));
    let hits = w.sink.hits(TEAMS_PATH);
    assert_eq!(hits.len(), 2);
    assert!(hits[1].at - hits[0].at >= Duration::from_secs(7), "{:?}", hits[1].at - hits[0].at);
    assert!(started.elapsed() >= Duration::from_secs(7));
}

#[tokio::test]
async fn graph_429_on_sendmail_is_retried_by_the_queue_and_sent_once() {
    let w = world(ALL).await;
    w.graph.push_error("send_mail", throttled());
    let raw = sample(json!({}));
    let err = deliver(&w.app, &alert(&raw), &names(&["soc-email"])).await.unwrap_err();
    assert!(matches!(err, RespondError::Retry(ref m) if m.contains("HTTP 429")), "{err}");
    assert!(w.graph.mails().is_empty());
    let done = deliver(&w.app, &alert(&raw), &names(&["soc-email"])).await.unwrap();
    assert_eq!(done.sent, names(&["soc-email"]));
    assert_eq!(w.graph.mails().len(), 1);
    let failed: Vec<_> = audit(&w.store).await.into_iter().filter(|r| r["action"] == "notify_failed").collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["detail"].as_str().unwrap().contains("\"retryable\":true"), "{}", failed[0]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_receiver_does_not_block_the_others_and_is_retried_alone() {
    let w = world(ALL).await;
    // The ticketing system is down for all three in-process attempts.
    w.sink.script("/hook", 3, 503, None, "maintenance");
    let raw = sample(json!({}));
    let receivers = names(&["tickets", "soc-teams", "soc-email"]);
    let err = deliver(&w.app, &alert(&raw), &receivers).await.unwrap_err();
    assert!(matches!(err, RespondError::Retry(ref m) if m.contains("tickets") && m.contains("503")), "{err}");
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 1);
    assert_eq!(w.graph.mails().len(), 1);
    assert_eq!(w.sink.hits("/hook").len(), 3);
    // The queue redelivers: only the webhook is sent now.
    let done = deliver(&w.app, &alert(&raw), &receivers).await.unwrap();
    assert_eq!(done.sent, names(&["tickets"]));
    assert_eq!(done.already, names(&["soc-teams", "soc-email"]));
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 1);
    assert_eq!(w.sink.hits("/hook").len(), 4);
}

#[tokio::test]
async fn a_permanent_failure_sets_the_message_aside_without_leaking_the_signature() {
    let w = world(ALL).await;
    w.sink.script(
        TEAMS_PATH,
        1,
        401,
        None,
        r#"{"error":{"code":"DirectApiInvalidAuthorizationSignature","message":"The provided authorization signature is not valid for sig=SIGsecret0123456789."}}"#,
    );
    let raw = sample(json!({}));
    let err = deliver(&w.app, &alert(&raw), &names(&["soc-teams"])).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RespondError::Malformed(_)), "{text}");
    assert!(text.contains("DirectApiInvalidAuthorizationSignature"), "{text}");
    assert!(!text.contains("SIGsecret0123456789"), "{text}");
    let records = audit(&w.store).await;
    assert!(!serde_json::to_string(&records).unwrap().contains("SIGsecret0123456789"));
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 1, "a 401 is not retried in-process");
}

#[tokio::test]
async fn realert_tells_again_only_when_severity_rises_or_the_interval_passes() {
    let w = world(
        r#"
routes:
  - { receivers: [soc-teams], realert: 1h }
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}" } }
"#,
    )
    .await;
    let r = names(&["soc-teams"]);
    let v1 = sample(json!({"severity": "medium", "lastUpdateDateTime": "2026-11-26T10:00:00Z"}));
    assert_eq!(deliver(&w.app, &alert(&v1), &r).await.unwrap().sent, r);
    // A comment made a new version, nothing rose: not told again.
    w.clock.advance(chrono::Duration::minutes(10));
    let v2 = sample(json!({"severity": "medium", "lastUpdateDateTime": "2026-11-26T10:10:00Z"}));
    assert_eq!(deliver(&w.app, &alert(&v2), &r).await.unwrap().suppressed, r);
    // Severity rose: told, and the card says why.
    let v3 = sample(json!({"severity": "high", "lastUpdateDateTime": "2026-11-26T10:11:00Z"}));
    assert_eq!(deliver(&w.app, &alert(&v3), &r).await.unwrap().sent, r);
    assert!(w.sink.hits(TEAMS_PATH)[1].json().to_string().contains("severity rose"));
    // Another version within the hour: quiet; after the hour: a reminder.
    w.clock.advance(chrono::Duration::minutes(30));
    let v4 = sample(json!({"severity": "high", "lastUpdateDateTime": "2026-11-26T10:41:00Z"}));
    assert_eq!(deliver(&w.app, &alert(&v4), &r).await.unwrap().suppressed, r);
    w.clock.advance(chrono::Duration::minutes(31));
    let v5 = sample(json!({"severity": "high", "lastUpdateDateTime": "2026-11-26T11:12:00Z"}));
    assert_eq!(deliver(&w.app, &alert(&v5), &r).await.unwrap().sent, r);
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 3);
    assert!(audit(&w.store).await.iter().any(|a| a["action"] == "notify_suppressed"));
}

#[tokio::test]
async fn alerts_of_one_incident_within_the_window_share_one_message() {
    let w = world(
        r#"
routes:
  - { receivers: [soc-teams], group_by_incident: 2s }
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}" } }
"#,
    )
    .await;
    let r = names(&["soc-teams"]);
    let a = sample(json!({"id": "alert-a", "incidentId": "77", "title": "First of incident 77"}));
    let b = sample(json!({"id": "alert-b", "incidentId": "77", "title": "Second of incident 77", "severity": "high"}));
    let other = sample(json!({"id": "alert-c", "incidentId": "78", "title": "Incident 78"}));
    // The first alert of each incident leads its group: it waits for the 2 s window, on the queue.
    let leader = deliver(&w.app, &alert(&a), &r).await.unwrap();
    assert_eq!(leader.waiting, r);
    assert_eq!(leader.until, Some(now() + chrono::Duration::seconds(2)));
    let joined = deliver(&w.app, &alert(&b), &r).await.unwrap();
    assert_eq!(joined.grouped, r);
    let other_leader = deliver(&w.app, &alert(&other), &r).await.unwrap();
    assert_eq!(other_leader.waiting, r);
    assert!(w.sink.hits(TEAMS_PATH).is_empty(), "nothing is sent while the windows are open");
    // The window closes: each leader sends its incident's message.
    w.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(deliver(&w.app, &alert(&a), &r).await.unwrap().sent, r);
    assert_eq!(deliver(&w.app, &alert(&other), &r).await.unwrap().sent, r);
    assert_eq!(deliver(&w.app, &alert(&b), &r).await.unwrap().already, r, "b was told in a's message");
    let hits = w.sink.hits(TEAMS_PATH);
    assert_eq!(hits.len(), 2, "one message for incident 77, one for 78");
    let grouped = hits.iter().map(|h| h.json()).find(|m| m.to_string().contains("First of incident 77")).unwrap();
    assert!(grouped.to_string().contains("Second of incident 77"));
    assert!(grouped.to_string().contains("Second of incident 77 · alert alert-b"), "each grouped alert names its id");
    keep_card("grouped", &grouped);
    // After the window a new alert of the incident starts a new message.
    w.clock.advance(chrono::Duration::seconds(5));
    let late = sample(json!({"id": "alert-d", "incidentId": "77", "title": "Late"}));
    assert_eq!(deliver(&w.app, &alert(&late), &r).await.unwrap().waiting, r);
    w.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(deliver(&w.app, &alert(&late), &r).await.unwrap().sent, r);
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 3);
}

#[tokio::test]
async fn webhook_is_signed_over_timestamp_and_body() {
    let w = world(ALL).await;
    let raw = sample(json!({}));
    deliver(&w.app, &alert(&raw), &names(&["tickets"])).await.unwrap();
    let hit = &w.sink.hits("/hook")[0];
    let ts = &hit.headers["x-secmon-timestamp"];
    assert_eq!(ts, &now().timestamp().to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_KEY.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&hit.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(hit.headers["x-secmon-signature"], expected);
    assert_eq!(hit.headers["x-secmon-delivery"].len(), 32);
    let body = hit.json();
    assert_eq!(body["alert"], raw, "the alert as Graph returned it");
    assert_eq!(body["decision"]["action"], "notify");
    assert_eq!(body["decision"]["routes"], json!(["soc"]));
    assert!(!String::from_utf8_lossy(&hit.body).contains(WEBHOOK_KEY));
}

#[tokio::test]
async fn a_long_evidence_list_is_cut_to_fit_teams() {
    let w = world(ALL).await;
    let evidence: Vec<Value> = (0..400)
        .map(|i| json!({"@odata.type": "#microsoft.graph.security.urlEvidence", "url": format!("https://phish.example/{i}/{}", "x".repeat(150))}))
        .collect();
    let raw = sample(json!({"evidence": evidence, "description": "d".repeat(5000)}));
    deliver(&w.app, &alert(&raw), &names(&["soc-teams"])).await.unwrap();
    let hit = &w.sink.hits(TEAMS_PATH)[0];
    assert!(hit.body.len() <= 28_000, "{} bytes", hit.body.len());
    let text = String::from_utf8_lossy(&hit.body);
    assert!(text.contains(" more\""), "no \"and N more\"");
    keep_card("long-evidence", &hit.json());
}

#[tokio::test]
async fn internal_alerts_are_notified_without_portal_links() {
    let w = world(ALL).await;
    let raw = json!({"id": "secmon-deadman-contoso", "title": "No alerts polled for 2 h", "severity": "high", "status": "new",
                     "lastUpdateDateTime": "2026-11-26T10:00:00Z"});
    deliver(&w.app, &alert(&raw), &names(&["soc-teams"])).await.unwrap();
    let message = w.sink.hits(TEAMS_PATH)[0].json();
    assert_eq!(message["attachments"][0]["content"]["actions"], json!([]));
    keep_card("internal", &message);
}

const SET: &str = r#"
routes:
  - name: triage
    when: 'true'
    receivers: [soc-teams]
    set: { status: inProgress, assigned_to: soc-oncall@contoso.com }
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}" } }
"#;

#[tokio::test]
async fn a_route_sets_status_once_and_never_over_a_persons_change() {
    let w = world(SET).await;
    let raw = sample(json!({}));
    w.graph.put_alert(raw.clone());
    let done = deliver_routes(&w.app, &alert(&raw)).await.unwrap();
    assert_eq!(done.updated, names(&["triage"]));
    let again = deliver_routes(&w.app, &alert(&raw)).await.unwrap();
    assert!(again.updated.is_empty());
    let updates = w.graph.updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].1.status.as_deref(), Some("inProgress"));
    assert_eq!(updates[0].1.assigned_to.as_deref(), Some("soc-oncall@contoso.com"));

    // Someone changed the alert after secmon read this version: hands off.
    let read = sample(json!({"id": "alert-2", "lastUpdateDateTime": "2026-11-26T09:00:00Z"}));
    let changed = sample(
        json!({"id": "alert-2", "lastUpdateDateTime": "2026-11-26T09:05:00Z", "assignedTo": "alice@contoso.com"}),
    );
    w.graph.put_alert(changed);
    let done = deliver_routes(&w.app, &alert(&read)).await.unwrap();
    assert!(done.updated.is_empty());
    assert_eq!(w.graph.updates().len(), 1);
    let skipped: Vec<_> = audit(&w.store).await.into_iter().filter(|r| r["action"] == "update_skipped").collect();
    assert!(
        skipped.iter().any(|r| r["detail"].as_str().unwrap().contains("changed since secmon read it")),
        "{skipped:?}"
    );
}

fn config_errors(receivers: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let text = format!("tenants:\n  - {{id: t, name: contoso}}\nreceivers:\n{receivers}");
    match secmon::setup::load_str(&text, Path::new("secmon.yaml"), env, now()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn secrets_must_come_from_the_environment_and_templates_must_work_at_load() {
    let env = |k: &str| match k {
        "T_URL" => Some(
            "https://prod.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=EnvSig0123456789"
                .into(),
        ),
        "H_KEY" => Some("env-hmac-key-0123456789".into()),
        _ => None,
    };
    assert_eq!(config_errors("  t: { teams: { webhook_url: \"${T_URL}\" } }\n", &env), "");
    let literal = config_errors(
        "  t: { teams: { webhook_url: \"https://prod.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=InFileSig0123456789\" } }\n",
        &env,
    );
    assert!(literal.contains("secmon.yaml:4:") && literal.contains("receivers.t.teams.webhook_url"), "{literal}");
    assert!(literal.contains("${NAME}") && !literal.contains("InFileSig0123456789"), "{literal}");
    let key =
        config_errors("  h: { webhook: { url: \"https://t.example/x\", secret: \"in-file-hmac-key-0123\" } }\n", &env);
    assert!(key.contains("receivers.h.webhook.secret") && !key.contains("in-file-hmac-key-0123"), "{key}");
    assert_eq!(config_errors("  h: { webhook: { url: \"https://t.example/x\", secret: \"${H_KEY}\" } }\n", &env), "");

    let broken = config_errors(
        "  t:\n    teams:\n      webhook_url: \"${T_URL}\"\n      template: |\n        {\"type\": \"AdaptiveCard\",\n         \"body\": [ {% for x in %} ]}\n",
        &env,
    );
    assert!(broken.contains("receivers.t.teams.template") && broken.contains("line 2"), "{broken}");
    let too_new = config_errors(
        "  t:\n    teams:\n      webhook_url: \"${T_URL}\"\n      template: '{\"type\": \"AdaptiveCard\", \"version\": \"1.5\", \"body\": []}'\n",
        &env,
    );
    assert!(too_new.contains("up to 1.4"), "{too_new}");
    let bad_json = config_errors(
        "  h:\n    webhook:\n      url: https://t.example/x\n      secret: \"${H_KEY}\"\n      template: '{\"title\": {{ title|safe }} }'\n",
        &env,
    );
    assert!(bad_json.contains("receivers.h.webhook.template") && bad_json.contains("JSON"), "{bad_json}");
}

#[test]
fn route_options_are_checked() {
    let env = |_: &str| None;
    let text = "tenants:\n  - {id: t, name: contoso}\nreceivers:\n  e: { email: { from: a@contoso.com, to: [b@contoso.com] } }\nroutes:\n  - { receivers: [e], group_by_incident: 1h, set: { status: resolved } }\n";
    let err = secmon::setup::load_str(text, Path::new("c.yaml"), &env, now()).unwrap_err().to_string();
    assert!(err.contains("routes[0].group_by_incident"), "{err}");
    assert!(err.contains("routes[0].set.status") && err.contains("close_rules"), "{err}");
}

/// An MSSP: customers contoso and fabrikam, and the SOC's own tenant, whose mailbox sends everything.
const MSSP: &str = "  - {id: 22222222-3333-4444-5555-666666666666, name: fabrikam}
  - {id: 33333333-4444-5555-6666-777777777777, name: soc}
mail: { tenant: soc }
routes:
  - { receivers: [soc-email] }
receivers:
  soc-email: { email: { from: alerts@soc.example.net, to: [analysts@soc.example.net] } }
";

#[tokio::test]
async fn an_mssp_sends_every_mail_through_the_sending_tenant() {
    let w = world(MSSP).await;
    // fabrikam's credential fails: anything sent with it is refused.
    w.graph.fail("send_mail:fabrikam", 401);
    for tenant in ["contoso", "fabrikam"] {
        let raw = sample(json!({"id": format!("alert-{tenant}")}));
        secmon::respond::process_alert(&w.app, tenant, raw).await.unwrap();
    }
    let drained = secmon::host::standalone::drain(&w.app, 100).await;
    assert!(drained.iter().all(|r| matches!(r, secmon::host::standalone::WorkResult::Done(_))), "{drained:?}");
    // secmon's own alarm about fabrikam (its polls fail) still reaches the SOC.
    let alarm = json!({"id": "secmon-health-fabrikam-2026112610", "title": "secmon: no successful poll of fabrikam",
        "severity": "high", "status": "new", "createdDateTime": "2026-11-26T10:00:00Z",
        "lastUpdateDateTime": "2026-11-26T10:00:00Z"});
    let summary = secmon::respond::process_alert(&w.app, "fabrikam", alarm).await.unwrap();
    assert!(summary.contains("delivering to soc-email"), "{summary}");
    let drained = secmon::host::standalone::drain(&w.app, 100).await;
    assert!(
        drained
            .iter()
            .any(|r| matches!(r, secmon::host::standalone::WorkResult::Done(l) if l.contains("notified soc-email"))),
        "{drained:?}"
    );
    let mails = w.graph.mails();
    assert_eq!(mails.len(), 3);
    assert!(mails.iter().all(|(tenant, from, _)| tenant == "soc" && from == "alerts@soc.example.net"), "{mails:?}");
    assert!(
        w.graph.calls().iter().all(|c| !c.starts_with("send_mail ") || c == "send_mail soc"),
        "{:?}",
        w.graph.calls()
    );
}

/// An alert first seen already resolved is not announced as new (with or without a matching rule):
/// it is audited once as `first_seen_resolved`. One that was told about and is resolved later is not
/// "first seen", and a version secmon closed itself stays quiet as before.
#[tokio::test]
async fn an_alert_first_seen_resolved_is_recorded_not_announced() {
    let w = world(ALL).await;
    let resolved = sample(json!({"id": "resolved-before", "status": "resolved"}));
    let summary = secmon::respond::process_alert(&w.app, "contoso", resolved.clone()).await.unwrap();
    assert!(summary.contains("already resolved when secmon first saw it; not announced to soc-teams"), "{summary}");
    secmon::respond::process_alert(&w.app, "contoso", resolved).await.unwrap();
    assert!(w.sink.hits(TEAMS_PATH).is_empty() && w.graph.mails().is_empty() && w.sink.hits("/hook").is_empty());
    let records = audit(&w.store).await;
    let first: Vec<&Value> = records.iter().filter(|r| r["action"] == "first_seen_resolved").collect();
    assert_eq!(first.len(), 1, "once per version, even when redelivered: {records:?}");
    assert_eq!(first[0]["alert_id"], "resolved-before");

    // Told as new, resolved later: the resolved version is no first sighting (realert decides).
    let open = sample(json!({"id": "told-before", "status": "new", "lastUpdateDateTime": "2026-11-26T10:00:00Z"}));
    secmon::respond::process_alert(&w.app, "contoso", open).await.unwrap();
    secmon::host::standalone::drain(&w.app, 100).await;
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 1);
    let later =
        sample(json!({"id": "told-before", "status": "resolved", "lastUpdateDateTime": "2026-11-26T11:00:00Z"}));
    let summary = secmon::respond::process_alert(&w.app, "contoso", later).await.unwrap();
    assert!(!summary.contains("first saw it"), "{summary}");
    assert_eq!(audit(&w.store).await.iter().filter(|r| r["action"] == "first_seen_resolved").count(), 1);

    // Resolved by secmon's own close (its comment): not a first sighting either.
    let ours = sample(json!({"id": "closed-by-us", "status": "resolved",
        "comments": [{"comment": "Closed by secmon rule lab (x).", "createdByDisplayName": "secmon"}]}));
    let summary = secmon::respond::process_alert(&w.app, "contoso", ours).await.unwrap();
    assert!(!summary.contains("first saw it"), "{summary}");
}

#[tokio::test]
async fn check_config_warns_when_mail_would_go_out_through_each_customer() {
    let text = "tenants:\n  - {id: 11111111-2222-3333-4444-555555555555, name: contoso}\n  - {id: 22222222-3333-4444-5555-666666666666, name: fabrikam}\nroutes:\n  - { receivers: [m] }\nreceivers:\n  m: { email: { from: a@contoso.com, to: [b@contoso.com] } }\n";
    let loaded = secmon::setup::load_str(text, std::path::Path::new("c.yaml"), &|_| None, now()).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| loaded.render(w)).collect();
    assert!(
        warnings.iter().any(|w| w.contains("receivers.m.email.tenant") && w.contains("mail.tenant")),
        "{warnings:?}"
    );
    let err = secmon::setup::load_str(
        &format!("{text}mail: {{ tenant: initech }}\n"),
        std::path::Path::new("c.yaml"),
        &|_| None,
        now(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("mail.tenant: unknown tenant \"initech\""), "{err}");
}

const STORM: &str = r#"
routes:
  - { receivers: [soc-teams] }
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}" } }
"#;

/// Alert `i` of a storm: one in ten high, four medium, five low; each with its own portal link.
fn storm_alert(i: usize) -> Value {
    let severity = match i % 10 {
        0 => "high",
        1..=4 => "medium",
        _ => "low",
    };
    sample(json!({
        "id": format!("storm-{i:03}"),
        "title": format!("Suspicious PowerShell command line on ws-{i:03}.corp.contoso.com (storm)"),
        "severity": severity,
        "incidentId": format!("{}", 9000 + i),
        "alertWebUrl": format!("https://security.microsoft.com/alerts/storm-{i:03}?tid=t"),
    }))
}

/// The storm alerts a posted message tells, by their portal links.
fn storm_ids(message: &Value) -> Vec<usize> {
    let text = message.to_string();
    text.match_indices("alerts/storm-")
        .map(|(at, _)| text[at + 13..at + 16].parse().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Every message the sink accepted, with the (manual) time it was posted at.
struct Posts {
    seen: usize,
    accepted: Vec<(chrono::DateTime<chrono::Utc>, Value)>,
}

impl Posts {
    fn collect(&mut self, w: &World) {
        let hits = w.sink.hits(TEAMS_PATH);
        for h in &hits[self.seen..] {
            if h.status == 202 {
                self.accepted.push((secmon::clock::Clock::now(w.clock.as_ref()), h.json()));
            }
        }
        self.seen = hits.len();
    }

    /// The most posts in any window of `per` that starts at a post.
    fn busiest(&self, per: chrono::Duration) -> usize {
        self.accepted
            .iter()
            .map(|(t, _)| self.accepted.iter().filter(|(u, _)| *u >= *t && *u < *t + per).count())
            .max()
            .unwrap_or(0)
    }
}

/// 200 alerts to one Teams receiver in 200 s, then the poll timer every minute and the queue
/// redelivering what failed, until every alert was told.
async fn storm(w: &World) -> Posts {
    let mut posts = Posts { seen: 0, accepted: Vec::new() };
    let mut redeliver = Vec::new();
    for i in 0..200 {
        let raw = storm_alert(i);
        if deliver_routes(&w.app, &alert(&raw)).await.is_err() {
            redeliver.push(raw);
        }
        posts.collect(w);
        w.clock.advance(chrono::Duration::seconds(1));
    }
    for _ in 0..180 {
        w.clock.advance(chrono::Duration::minutes(1));
        for raw in std::mem::take(&mut redeliver) {
            if deliver_routes(&w.app, &alert(&raw)).await.is_err() {
                redeliver.push(raw);
            }
        }
        secmon::notify::deliver::flush(&w.app).await;
        posts.collect(w);
        let told: usize = posts.accepted.iter().map(|(_, m)| storm_ids(m).len()).sum();
        if told >= 200 && redeliver.is_empty() {
            break;
        }
    }
    posts
}

fn assert_each_alert_told_once(posts: &Posts) {
    let mut times = vec![0; 200];
    for (_, m) in &posts.accepted {
        for i in storm_ids(m) {
            times[i] += 1;
        }
    }
    let wrong: Vec<_> = times.iter().enumerate().filter(|(_, n)| **n != 1).collect();
    assert!(wrong.is_empty(), "alerts not told exactly once (id, times): {wrong:?}");
}

#[tokio::test(start_paused = true)]
async fn a_storm_of_200_alerts_stays_in_the_budget_and_tells_each_alert_once() {
    let w = world(STORM).await;
    let posts = storm(&w).await;
    assert_each_alert_told_once(&posts);
    let busiest = posts.busiest(chrono::Duration::minutes(5));
    assert!(busiest <= 20, "{busiest} posts in 5 minutes");
    assert!(posts.accepted.len() < 40, "{} posts: alerts were not coalesced", posts.accepted.len());

    // The first digest: every waiting alert it could fit, highest severity first, "and N more".
    let digest = posts.accepted.iter().map(|(_, m)| m).find(|m| storm_ids(m).len() > 1).unwrap().clone();
    let card = &digest["attachments"][0]["content"];
    assert_eq!(card["version"], "1.4");
    let labels: Vec<&str> = card["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str()?.strip_prefix("**")?.split("**").next())
        .collect();
    let rank = |l: &str| ["Low", "Medium", "High"].iter().position(|x| *x == l).unwrap();
    assert!(labels.windows(2).all(|p| rank(p[0]) >= rank(p[1])), "{labels:?}");
    assert_eq!(labels[0], "High");
    let lines: Vec<&str> = card["body"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str().filter(|t| t.starts_with("**")))
        .collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.contains(" · alert ")),
        "every digest line names its alert id: {lines:?}"
    );
    assert!(serde_json::to_vec(&digest).unwrap().len() <= 28_000);
    assert!(digest.to_string().contains(" more, in the next message"), "the first digest cannot hold all 180");
    keep_card("digest", &digest);

    // Audited like a notification: one `notify` per alert, one `notify_digest` per digest listing them.
    let records = audit(&w.store).await;
    let notified: Vec<_> = records.iter().filter(|r| r["action"] == "notify").collect();
    assert_eq!(notified.len(), 200);
    let digests: Vec<_> = records.iter().filter(|r| r["action"] == "notify_digest").collect();
    assert_eq!(digests.len(), posts.accepted.iter().filter(|(_, m)| storm_ids(m).len() > 1).count());
    let listed: u64 = digests
        .iter()
        .map(|r| serde_json::from_str::<Value>(r["detail"].as_str().unwrap()).unwrap()["count"].as_u64().unwrap())
        .sum();
    assert_eq!(listed as usize + (posts.accepted.len() - digests.len()), 200);
    assert_eq!(records.iter().filter(|r| r["action"] == "notify_deferred").count(), 200 - 20);
}

#[tokio::test(start_paused = true)]
async fn a_storm_against_a_failing_teams_still_tells_each_alert_once_within_the_budget() {
    let w = world(STORM).await;
    // Down for a while: 45 requests (15 sends of 3 attempts each) fail.
    w.sink.script(TEAMS_PATH, 45, 503, None, "flow unavailable");
    let posts = storm(&w).await;
    assert_each_alert_told_once(&posts);
    let busiest = posts.busiest(chrono::Duration::minutes(5));
    assert!(busiest <= 20, "{busiest} posts in 5 minutes");
    let failed = w.sink.hits(TEAMS_PATH).iter().filter(|h| h.status == 503).count();
    assert_eq!(failed, 45);
    assert!(audit(&w.store).await.iter().any(|r| r["action"] == "notify_failed"));
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_digest_repeats_only_that_digest() {
    let w = world(
        r#"
routes:
  - { receivers: [soc-teams] }
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}", budget: { posts: 2, per: 5m } } }
"#,
    )
    .await;
    for i in 0..12 {
        deliver_routes(&w.app, &alert(&storm_alert(i))).await.unwrap();
    }
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 2, "two alone, ten waiting");
    w.clock.advance(chrono::Duration::minutes(5));
    // The flow takes the digest, and secmon is killed before it records that.
    w.sink.delay(Some(Duration::from_secs(30)));
    let app = w.app.clone();
    let worker = tokio::spawn(async move { secmon::notify::deliver::flush(&app).await });
    while w.sink.hits(TEAMS_PATH).len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.abort();
    let _ = worker.await;
    w.sink.delay(None);
    // Its claim's lease runs: nobody sends it meanwhile.
    secmon::notify::deliver::flush(&w.app).await;
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 3);
    // After the lease, the same digest goes out again, once; then nothing waits.
    w.clock.advance(chrono::Duration::minutes(6));
    secmon::notify::deliver::flush(&w.app).await;
    w.clock.advance(chrono::Duration::minutes(10));
    secmon::notify::deliver::flush(&w.app).await;
    let hits = w.sink.hits(TEAMS_PATH);
    assert_eq!(hits.len(), 4, "{:?}", hits.iter().map(|h| storm_ids(&h.json())).collect::<Vec<_>>());
    assert_eq!(storm_ids(&hits[2].json()), (2..12).collect::<Vec<_>>());
    assert_eq!(storm_ids(&hits[3].json()), storm_ids(&hits[2].json()));
    assert_eq!(audit(&w.store).await.iter().filter(|r| r["action"] == "notify_digest").count(), 1);
}

#[tokio::test]
async fn an_authenticated_trigger_gets_a_bearer_token_that_never_shows() {
    let w = world(
        r#"
routes:
  - { receivers: [soc-teams] }
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}", auth: { tenant: contoso } } }
"#,
    )
    .await;
    deliver_routes(&w.app, &alert(&sample(json!({})))).await.unwrap();
    let scope = "https://service.flow.microsoft.com//.default";
    assert_eq!(w.graph.scopes(), vec![("contoso".to_string(), scope.to_string())]);
    let token = fake_token("contoso", scope);
    assert_eq!(w.sink.hits(TEAMS_PATH)[0].headers["authorization"], format!("Bearer {token}"));

    // A trigger that refuses it and echoes it back: the error and the audit trail do not repeat it.
    w.sink.script(TEAMS_PATH, 1, 401, None, &format!(r#"{{"error":{{"message":"bad token {token}"}}}}"#));
    let err = deliver_routes(&w.app, &alert(&sample(json!({"id": "other"})))).await.unwrap_err().to_string();
    assert!(err.contains("401") && !err.contains(&token), "{err}");
    assert!(!serde_json::to_string(&audit(&w.store).await).unwrap().contains(&token));
}

#[test]
fn check_config_says_what_teams_cannot_do() {
    let env = |k: &str| match k {
        "HIGH" => Some(
            "https://prod-00.usgovtexas.logic.azure.us/workflows/x/triggers/manual/paths/invoke?sig=S0123456789".into(),
        ),
        "DOD" => {
            Some("https://x.usgovdod.environment.api.powerplatform.appsplatform.us/workflows/x?sig=S0123456789".into())
        }
        "GCC" => Some("https://x.gov.environment.api.powerplatform.us/workflows/x?sig=S0123456789".into()),
        "PUB" => Some("https://x.environment.api.powerplatform.com/workflows/x?sig=S0123456789".into()),
        _ => None,
    };
    let warnings = |receivers: &str| -> Vec<String> {
        let text = format!("tenants:\n  - {{id: t, name: contoso}}\nreceivers:\n{receivers}");
        let loaded = secmon::setup::load_str(&text, Path::new("secmon.yaml"), &env, now()).unwrap();
        loaded.warnings.iter().map(|w| loaded.render(w)).collect()
    };
    let high = warnings("  t: { teams: { webhook_url: \"${HIGH}\" } }\n");
    assert!(high.iter().any(|w| w.contains("receivers.t.teams.webhook_url") && w.contains("GCC High")), "{high:?}");
    let dod = warnings("  t: { teams: { webhook_url: \"${DOD}\" } }\n");
    assert!(dod.iter().any(|w| w.contains("DoD")), "{dod:?}");
    assert_eq!(warnings("  t: { teams: { webhook_url: \"${GCC}\" } }\n"), Vec::<String>::new());
    assert_eq!(warnings("  t: { teams: { webhook_url: \"${PUB}\" } }\n"), Vec::<String>::new());
    let fast = warnings("  t: { teams: { webhook_url: \"${PUB}\", budget: { posts: 60, per: 5m } } }\n");
    assert!(fast.iter().any(|w| w.contains("receivers.t.teams.budget") && w.contains("Flow bot")), "{fast:?}");
    assert_eq!(
        warnings("  t: { teams: { webhook_url: \"${PUB}\", budget: { posts: 25, per: 5m } } }\n"),
        Vec::<String>::new()
    );

    let errors = |receivers: &str| config_errors(receivers, &env);
    let unknown = errors("  t: { teams: { webhook_url: \"${PUB}\", auth: { tenant: fabrikam } } }\n");
    assert!(unknown.contains("receivers.t.teams.auth.tenant") && unknown.contains("fabrikam"), "{unknown}");
    let zero = errors("  t: { teams: { webhook_url: \"${PUB}\", budget: { posts: 0, per: 5m } } }\n");
    assert!(zero.contains("receivers.t.teams.budget"), "{zero}");
    assert_eq!(errors("  t: { teams: { webhook_url: \"${PUB}\", auth: { tenant: contoso } } }\n"), "");
}

#[tokio::test]
async fn mail_beyond_the_mailboxs_budget_goes_out_as_one_digest_mail() {
    let w = world(
        r#"
routes:
  - { receivers: [soc-email, lead-email] }
receivers:
  soc-email: { email: { from: secmon@contoso.com, to: [soc@contoso.com], budget: { posts: 3, per: 1m } } }
  lead-email: { email: { from: SECMON@contoso.com, to: [lead@contoso.com], budget: { posts: 3, per: 1m } } }
"#,
    )
    .await;
    for i in [0, 1, 2, 10] {
        let done = deliver_routes(&w.app, &alert(&storm_alert(i))).await.unwrap();
        // Both receivers send from one mailbox: they share its three mails a minute.
        let expected = match i {
            0 => (2, 0),
            1 => (1, 1),
            _ => (0, 2),
        };
        assert_eq!((done.sent.len(), done.deferred.len()), expected, "alert {i}: {done:?}");
    }
    assert_eq!(w.graph.mails().len(), 3);
    w.clock.advance(chrono::Duration::minutes(1));
    secmon::notify::deliver::flush(&w.app).await;
    let mails = w.graph.mails();
    assert_eq!(mails.len(), 5, "one digest per receiver");
    let lead = &mails
        .iter()
        .find(|(_, _, m)| m.to_string().contains("lead@contoso.com") && m.to_string().contains("alerts:"))
        .unwrap()
        .2;
    assert_eq!(lead["message"]["subject"], "[secmon][contoso] 3 alerts: 1 High, 2 Medium");
    let html = lead["message"]["body"]["content"].as_str().unwrap();
    for i in [1, 2, 10] {
        assert!(html.contains(&format!("storm-{i:03}")), "storm-{i:03} missing from {html}");
    }
    assert!(!html.contains("storm-000"), "alert 0 was mailed on its own");
    assert!(html.find("storm-010") < html.find("storm-001"), "the high one first");
}

#[tokio::test]
async fn the_poll_timer_sends_what_waits_when_no_other_alert_comes() {
    let w = world(
        r#"
routes:
  - { receivers: [soc-teams] }
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}", budget: { posts: 1, per: 5m } } }
"#,
    )
    .await;
    for i in 0..3 {
        deliver_routes(&w.app, &alert(&storm_alert(i))).await.unwrap();
    }
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 1);
    let timer = secmon::functions::Timer::default();
    // Within the window the timer has nothing to send.
    secmon::functions::poll_alerts(&w.app, timer, now()).await;
    assert_eq!(w.sink.hits(TEAMS_PATH).len(), 1);
    w.clock.advance(chrono::Duration::minutes(5));
    let outcome = secmon::functions::poll_alerts(&w.app, timer, now()).await;
    assert!(
        outcome.summary().contains("contoso/soc-teams: 1 digests with 2 alerts sent, 0 waiting"),
        "{}",
        outcome.summary()
    );
    let hits = w.sink.hits(TEAMS_PATH);
    assert_eq!(hits.len(), 2);
    assert_eq!(storm_ids(&hits[1].json()), vec![1, 2]);
}

/// The documented sample alert with its four evidence items (device, file, process, registry key)
/// repeated until there are `n`, each made different, as an alert on a worm outbreak looks.
fn evidence_storm(n: usize) -> Value {
    let base = sample(json!({}));
    let kinds = base["evidence"].as_array().unwrap().clone();
    let evidence: Vec<Value> = (0..n)
        .map(|i| {
            let mut e = kinds[i % kinds.len()].clone();
            for (pointer, value) in [
                ("/deviceDnsName", format!("host-{i:05}.middleeast.corp.contoso.com")),
                ("/fileDetails/fileName", format!("payload-{i:05}.exe")),
                ("/processCommandLine", format!("\"payload-{i:05}.exe\" --spread \\\\host-{i:05}\\c$")),
                ("/registryKey", format!("SYSTEM\\CONTROLSET001\\SERVICES\\WORM{i:05}")),
            ] {
                if let Some(slot) = e.pointer_mut(pointer) {
                    *slot = json!(value);
                }
            }
            e
        })
        .collect();
    sample(json!({"evidence": evidence}))
}

#[tokio::test]
async fn an_alert_with_thousands_of_evidence_items_is_mailed_cut_to_fit() {
    let w = world(ALL).await;
    let raw = evidence_storm(5000);
    assert!(raw.to_string().len() > 4_000_000, "the fixture is bigger than any limit");
    let outcome = deliver(&w.app, &alert(&raw), &names(&["soc-email"])).await.unwrap();
    assert_eq!(outcome.sent, names(&["soc-email"]), "told, not poisoned");
    let mails = w.graph.mails();
    let (_, _, body) = &mails[0];
    let size = serde_json::to_vec(body).unwrap().len();
    assert!(size <= secmon::notify::email::MAX_MAIL_BYTES, "{size} bytes");
    let html = body["message"]["body"]["content"].as_str().unwrap();
    // 1250 devices, files, processes and registry keys in three lists (files and processes share one):
    // 25 of each list shown, the rest counted.
    assert!(html.contains("host-00000.middleeast.corp.contoso.com"), "the first items are shown");
    assert!(!html.contains("host-04996"), "not every item");
    let shown = 25 * 3;
    assert!(html.contains(&format!("{} more evidence items not shown", 5000 - shown)), "no count of what was cut");
    assert!(html.contains("and 1225 more") && html.contains("and 2475 more"), "each list says how many it left out");
}

#[tokio::test]
async fn an_alert_with_thousands_of_evidence_items_is_posted_to_a_webhook_cut_to_fit() {
    let w = world(ALL).await;
    let raw = evidence_storm(5000);
    let outcome = deliver(&w.app, &alert(&raw), &names(&["tickets"])).await.unwrap();
    assert_eq!(outcome.sent, names(&["tickets"]), "told, not poisoned");
    let hit = &w.sink.hits("/hook")[0];
    assert!(hit.body.len() <= secmon::notify::webhook::MAX_BODY_BYTES, "{} bytes", hit.body.len());
    let body = hit.json();
    let kept = body["alert"]["evidence"].as_array().unwrap().len();
    assert!((1..5000).contains(&kept), "{kept} evidence items kept");
    assert_eq!(body["evidence_not_shown"], 5000 - kept);
    assert_eq!(body["notice"], format!("{} more evidence items not shown", 5000 - kept));
    assert_eq!(body["alert"]["evidence"][0], raw["evidence"][0], "what is kept is as Graph sent it");
    assert_eq!(body["alert"]["id"], raw["id"]);

    // A small alert goes out whole, and says nothing was cut.
    let small = sample(json!({"id": "small-one"}));
    deliver(&w.app, &alert(&small), &names(&["tickets"])).await.unwrap();
    let body = w.sink.hits("/hook")[1].json();
    assert_eq!(body["alert"]["evidence"], small["evidence"]);
    assert_eq!(body["evidence_not_shown"], 0);
    assert!(body.get("notice").is_none());
}

#[tokio::test]
async fn a_template_that_loops_over_every_item_is_cut_until_it_renders_within_the_fuel() {
    // A receiver's own templates that walk every evidence entry several times: with all 5000 items they
    // run out of fuel; cut, they render.
    let receivers = r#"
routes:
  - name: soc
    receivers: [soc-email, tickets]
receivers:
  soc-email:
    email:
      from: secmon@contoso.com
      to: [soc@contoso.com]
      template: "{% for round in range(40) %}{% for i in evidence.devices.items %}{{ i }}{% endfor %}{% endfor %} {{ evidence_not_shown }} not shown"
  tickets:
    webhook:
      url: "${HOOK_URL}"
      secret: "${HOOK_KEY}"
      template: '{"n": {{ alert.evidence | length }}, "x": [{% for round in range(40) %}{% for e in alert.evidence %}{{ loop.index }},{% endfor %}{% endfor %}0], "cut": {{ evidence_not_shown }}}'
"#;
    let w = world(receivers).await;
    let raw = evidence_storm(5000);
    let outcome = deliver(&w.app, &alert(&raw), &names(&["soc-email", "tickets"])).await.unwrap();
    assert_eq!(outcome.sent.len(), 2, "{outcome:?}");
    let (_, _, mail) = &w.graph.mails()[0];
    let html = mail["message"]["body"]["content"].as_str().unwrap();
    assert!(html.ends_with(" not shown"), "{}", &html[html.len().saturating_sub(80)..]);
    let body = w.sink.hits("/hook")[0].json();
    let n = body["n"].as_u64().unwrap();
    assert!(n < 1000, "cut below what the fuel allows: {n}");
    assert_eq!(body["cut"].as_u64().unwrap(), 5000 - n);
}
