//! `secmon demo`: the whole flow on this machine, with no Azure and no credentials.
//!
//! It starts the Graph emulator (over TLS, so the real client-secret credential runs), seeds it with
//! Microsoft's documented sample alerts and a few crafted ones, loads `examples/demo.yaml` pointed at the
//! emulator, polls once, works the queue dry, and then reads back from the emulator what Graph, Teams
//! and Exchange actually received. The numbers in the summary come from those records, not from what
//! secmon believes it did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use secmon_emulator::{Emulator, Options};
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::clock::SystemClock;
use crate::graph::client::GraphClient;
use crate::host::standalone::{WorkResult, drain};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// The demo config, with `${SECMON_DEMO_*}` placeholders for the emulator's URLs.
pub const CONFIG: &str = include_str!("../examples/demo.yaml");

/// The tenant of the documented sample alerts, which the demo config watches.
pub const TENANT_ID: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
const CLIENT_ID: &str = "5f4b3c2a-0000-4000-8000-00000000d3e0";
/// The name of the emulator's Teams Workflows sink the demo config posts to.
pub const TEAMS_SINK: &str = "soc";

/// What the demo did, counted from the emulator's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Alert versions the poll put on the queue.
    pub pulled: usize,
    /// Alerts resolved in Graph by a rule (PATCH with `status: resolved`).
    pub closed: usize,
    /// Alerts told to at least one receiver.
    pub notified: usize,
    /// Messages the Teams Workflows sink received.
    pub teams_messages: usize,
    /// Mails Graph `sendMail` accepted.
    pub emails: usize,
}

/// One alert's fate, for the printed table.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Alert id.
    pub id: String,
    /// Severity.
    pub severity: String,
    /// Title.
    pub title: String,
    /// What happened, in words.
    pub outcome: String,
}

/// Everything the demo produced.
#[derive(Debug)]
pub struct Report {
    /// The counts.
    pub summary: Summary,
    /// One line per alert.
    pub lines: Vec<Line>,
    /// The Teams payloads, as received.
    pub teams: Vec<Value>,
    /// The sendMail bodies, as received.
    pub mails: Vec<Value>,
    /// The audit records, as stored.
    pub audit: Vec<Value>,
    /// The PATCH bodies Graph received, by alert id.
    pub patches: Vec<(String, Value)>,
    /// The comments Graph received, by alert id.
    pub comments: Vec<(String, String)>,
    /// Queue results that were not a clean success (should be empty).
    pub problems: Vec<String>,
}

/// The crafted alerts that show each path: closed by a rule, blocked by a guardrail, notified,
/// would-close in shadow mode.
pub fn crafted_alerts(now: DateTime<Utc>) -> Vec<Value> {
    let t = |minutes: i64| (now - Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let base = |id: &str, minutes: i64, source: &str, severity: &str, title: &str, evidence: Value| {
        json!({
            "@odata.type": "#microsoft.graph.security.alert",
            "id": id, "providerAlertId": id, "incidentId": format!("inc-{id}"),
            "status": "new", "severity": severity, "classification": null, "determination": null,
            "serviceSource": source, "detectionSource": "microsoftDefenderForEndpoint",
            "tenantId": TENANT_ID, "title": title,
            "description": format!("{title}. Crafted by secmon demo."),
            "category": "Discovery",
            "alertWebUrl": format!("https://security.microsoft.com/alerts/{id}?tid={TENANT_ID}"),
            "incidentWebUrl": format!("https://security.microsoft.com/incidents/inc-{id}?tid={TENANT_ID}"),
            "mitreTechniques": ["T1046"],
            "createdDateTime": t(minutes + 1), "lastUpdateDateTime": t(minutes),
            "firstActivityDateTime": t(minutes + 2), "lastActivityDateTime": t(minutes + 1),
            "comments": [], "systemTags": [], "evidence": evidence,
        })
    };
    let ip = |addr: &str| {
        json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "createdDateTime": t(30),
               "verdict": "suspicious", "remediationStatus": "none", "roles": ["attacker"],
               "ipAddress": addr, "countryLetterCode": "US"})
    };
    let device = json!({"@odata.type": "#microsoft.graph.security.deviceEvidence", "createdDateTime": t(30),
        "verdict": "unknown", "remediationStatus": "none", "roles": ["compromised"],
        "deviceDnsName": "fin-ws-042.contoso.com", "hostName": "fin-ws-042", "osPlatform": "Windows11"});
    let user = |upn: &str| {
        json!({"@odata.type": "#microsoft.graph.security.userEvidence", "createdDateTime": t(30),
               "verdict": "suspicious", "remediationStatus": "none", "roles": ["compromised"],
               "userAccount": {"accountName": upn.split('@').next(), "domainName": "contoso.com",
                               "userPrincipalName": upn, "displayName": "Adele Vance"}})
    };
    let mdatp = "microsoftDefenderForEndpoint";
    vec![
        base(
            "demo-pentest-scan",
            20,
            mdatp,
            "low",
            "Network scan from 203.0.113.10",
            json!([ip("203.0.113.10"), device.clone()]),
        ),
        base(
            "demo-pentest-creds",
            18,
            mdatp,
            "medium",
            "Credential dumping attempt by 203.0.113.77",
            json!([ip("203.0.113.77"), device.clone()]),
        ),
        base(
            "demo-pentest-high",
            16,
            mdatp,
            "high",
            "Ransomware-like file encryption from 203.0.113.5",
            json!([ip("203.0.113.5"), device.clone()]),
        ),
        base(
            "demo-phish",
            14,
            "microsoftDefenderForOffice365",
            "high",
            "Email messages containing malicious URL removed after delivery",
            json!([user("adelev@contoso.com"), {"@odata.type": "#microsoft.graph.security.urlEvidence", "createdDateTime": t(30),
                  "verdict": "malicious", "remediationStatus": "remediated", "roles": [], "url": "http://login-contoso.example/<script>"}]),
        ),
        base(
            "demo-idp",
            12,
            "azureAdIdentityProtection",
            "medium",
            "Unfamiliar sign-in properties",
            json!([user("adelev@contoso.com"), ip("198.51.100.23")]),
        ),
        base(
            "demo-dlp-backup",
            10,
            "dataLossPrevention",
            "low",
            "DLP policy match: HR files copied by backup agent",
            json!([device]),
        ),
    ]
}

/// The demo's moving parts: the emulator, seeded, and an [`App`] pointed at it.
pub struct World {
    /// The running Graph emulator.
    pub emulator: Emulator,
    /// secmon's state, with the SQLite store in the world's folder.
    pub app: App,
    /// The alerts the emulator holds at the start, most recent first.
    pub seeded: Vec<Value>,
}

/// Starts the emulator (TLS, so the real client-secret credential runs), seeds it, loads the demo config
/// pointed at it, and opens a fresh store `secmon.db` in `dir`.
pub async fn world(dir: &Path, now: DateTime<Utc>) -> anyhow::Result<World> {
    let emulator = Emulator::start(Options { tls: true, ..Options::default() }).await?;
    let secret = format!("demo-{}", uuid::Uuid::new_v4().simple());
    emulator.add_client(TENANT_ID, CLIENT_ID, &secret);
    emulator.seed_samples(TENANT_ID);
    emulator.seed_alerts(TENANT_ID, crafted_alerts(now));
    let seeded: Vec<Value> = emulator.alerts(TENANT_ID);

    let env = |name: &str| match name {
        "SECMON_DEMO_GRAPH_URL" => Some(emulator.graph_url()),
        "SECMON_DEMO_AUTHORITY_URL" => Some(emulator.authority_url()),
        "SECMON_DEMO_CLIENT_SECRET" => Some(secret.clone()),
        "SECMON_DEMO_TEAMS_URL" => Some(emulator.teams_webhook_url(TEAMS_SINK)),
        _ => None,
    };
    let loaded = crate::setup::load_str(CONFIG, Path::new("examples/demo.yaml"), &env, now)
        .map_err(|e| anyhow::anyhow!("the demo config is invalid:\n{e}"))?;

    let ca = emulator.ca_pem().ok_or_else(|| anyhow::anyhow!("the emulator did not start TLS"))?;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    std::fs::create_dir_all(dir)?;
    let db = dir.join("secmon.db");
    // A fresh store each run, so the summary describes this run only.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(PathBuf::from(format!("{}{suffix}", db.display())));
    }
    let store = Arc::new(SqliteStore::open(&db)?);
    let config = loaded.config;
    let graph = GraphClient::new(&config, http.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let app =
        App::builder(config).backend(store).graph(Arc::new(graph)).http(http).clock(Arc::new(SystemClock)).build()?;
    Ok(World { emulator, app, seeded })
}

/// Runs the demo; `out` receives the files when given.
pub async fn run(out: Option<&Path>) -> anyhow::Result<Report> {
    let dir = match out {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("secmon-demo-{}", uuid::Uuid::new_v4().simple())),
    };
    let World { emulator, app, seeded } = world(&dir, Utc::now()).await?;

    let polls = crate::intake::poll::poll_all(&app, app.clock.now()).await;
    let pulled = polls.iter().map(|p| p.report.as_ref().map_or(0, |r| r.queued)).sum();
    let mut problems: Vec<String> = polls.iter().filter_map(|p| p.error.clone()).collect();
    for result in drain(&app, 10_000).await {
        match result {
            WorkResult::Done(_) => {}
            WorkResult::Poisoned(why) => problems.push(format!("poisoned: {why}")),
            WorkResult::Retry(why) => problems.push(format!("retry: {why}")),
        }
    }

    let audit = read_audit(app.store.as_ref()).await?;
    let teams = emulator.teams_messages(TEAMS_SINK);
    let mails: Vec<Value> = emulator.mails().into_iter().map(|(_, _, body)| body).collect();
    let closed_ids: std::collections::BTreeSet<String> = emulator
        .patches()
        .into_iter()
        .filter(|(_, _, body)| body["status"] == "resolved")
        .map(|(_, id, _)| id)
        .collect();
    let notified_ids: std::collections::BTreeSet<String> = audit
        .iter()
        .filter(|r| r["action"] == "notify")
        .filter_map(|r| r["alert_id"].as_str().map(str::to_string))
        .collect();
    let summary = Summary {
        pulled,
        closed: closed_ids.len(),
        notified: notified_ids.len(),
        teams_messages: teams.len(),
        emails: mails.len(),
    };
    let lines = seeded.iter().map(|a| line(a, &closed_ids, &notified_ids, &audit)).collect();
    let patches = emulator.patches().into_iter().map(|(_, id, body)| (id, body)).collect();
    let comments = emulator.comments().into_iter().map(|(_, id, text)| (id, text)).collect();
    let report = Report { summary, lines, teams, mails, audit, patches, comments, problems };
    if out.is_some() {
        write_files(&dir, &report)?;
    }
    emulator.shutdown().await;
    if out.is_none() {
        drop(app);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

fn line(
    alert: &Value,
    closed: &std::collections::BTreeSet<String>,
    notified: &std::collections::BTreeSet<String>,
    audit: &[Value],
) -> Line {
    let id = alert["id"].as_str().unwrap_or_default().to_string();
    let actions: Vec<&Value> = audit.iter().filter(|r| r["alert_id"] == id.as_str()).collect();
    let rule = actions.iter().find_map(|r| r["rule_id"].as_str()).unwrap_or("");
    let has = |action: &str| actions.iter().any(|r| r["action"] == action);
    let receivers: Vec<&str> = actions
        .iter()
        .filter(|r| r["action"] == "notify")
        .filter_map(|r| r["receiver"].as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut outcome = if closed.contains(&id) {
        format!("closed by rule {rule}")
    } else if has("would_close") {
        format!("would close by rule {rule} (shadow mode)")
    } else if has("close_blocked") {
        format!("rule {rule} matched but the severity is above its cap")
    } else {
        String::new()
    };
    if notified.contains(&id) {
        let told = format!("notified {}", receivers.join(", "));
        outcome = if outcome.is_empty() { told } else { format!("{outcome}; {told}") };
    }
    if outcome.is_empty() {
        outcome = "no route matched".into();
    }
    Line {
        id,
        severity: alert["severity"].as_str().unwrap_or("?").to_string(),
        title: alert["title"].as_str().unwrap_or("").to_string(),
        outcome,
    }
}

async fn read_audit(store: &dyn Store) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for stream in store.list_streams(&crate::store::keys::audit_streams(None)).await? {
        for record in store.read_stream(&stream).await? {
            out.push(serde_json::from_slice(&record)?);
        }
    }
    Ok(out)
}

fn write_files(dir: &Path, report: &Report) -> anyhow::Result<()> {
    std::fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(&report.summary)?)?;
    let teams = dir.join("teams");
    std::fs::create_dir_all(&teams)?;
    for (i, message) in report.teams.iter().enumerate() {
        std::fs::write(teams.join(format!("{:02}.json", i + 1)), serde_json::to_vec_pretty(message)?)?;
    }
    let emails = dir.join("emails");
    std::fs::create_dir_all(&emails)?;
    for (i, mail) in report.mails.iter().enumerate() {
        let subject = mail["message"]["subject"].as_str().unwrap_or("");
        let body = mail["message"]["body"]["content"].as_str().unwrap_or("");
        // The subject is alert text: keep it out of the HTML as markup.
        let page = format!("<!-- Subject: {} -->\n{body}", subject.replace("--", "- -"));
        std::fs::write(emails.join(format!("{:02}.html", i + 1)), page)?;
    }
    let mut audit = String::new();
    for record in &report.audit {
        audit.push_str(&record.to_string());
        audit.push('\n');
    }
    std::fs::write(dir.join("audit.jsonl"), audit)?;
    Ok(())
}

/// The human summary `secmon demo` prints.
pub fn render(report: &Report, out: Option<&Path>) -> String {
    let s = &report.summary;
    let mut text = String::from("secmon demo: Graph emulator with Microsoft's sample alerts and crafted ones\n\n");
    for l in &report.lines {
        let title: String = l.title.chars().take(58).collect();
        text.push_str(&format!("  {:<32} {:<6} {:<58}  {}\n", l.id, l.severity, title, l.outcome));
    }
    text.push_str(&format!(
        "\npulled {} alert versions, closed {}, notified {} ({} Teams messages, {} e-mails)\n",
        s.pulled, s.closed, s.notified, s.teams_messages, s.emails
    ));
    for p in &report.problems {
        text.push_str(&format!("problem: {p}\n"));
    }
    if let Some(dir) = out {
        text.push_str(&format!(
            "wrote {0}/summary.json, {0}/teams/*.json, {0}/emails/*.html, {0}/audit.jsonl\n",
            dir.display()
        ));
    }
    text
}
