//! What `secmon run` (and `secmon serve`) says when it starts: one screen that tells the person who
//! started it what this process is about to do, before it does anything. Nothing secret: tenants by
//! name and id, receivers by name and kind (never a webhook URL or a key), the store by kind and path.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::config::ReceiverConfig;
use crate::rules::Mode;

/// Where the state lives, as the environment selects it (see [`crate::setup::stores_from_env`]).
pub fn store_label(app: &App) -> String {
    match std::env::var("SECMON_STORE").ok().as_deref().map(str::trim) {
        Some("azure") => format!(
            "Azure Storage (blobs {}, queues {})",
            std::env::var("SECMON_BLOB_URL").unwrap_or_default(),
            std::env::var("SECMON_QUEUE_URL").unwrap_or_default()
        ),
        Some("aws") => format!("S3 bucket {} and SQS", std::env::var("SECMON_S3_BUCKET").unwrap_or_default()),
        _ => format!("SQLite {}", app.config.store.sqlite.display()),
    }
}

fn next(schedule: &str, now: DateTime<Utc>) -> String {
    crate::config::ncrontab::parse(schedule)
        .ok()
        .and_then(|s| s.after(&now).next())
        .map_or_else(|| "never".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// The lines of the start-up summary, redacted; the host adds where it listens ([`listening`]).
pub fn summary(app: &App, store: &str, now: DateTime<Utc>) -> Vec<String> {
    let c = &app.config;
    let mut lines = vec![format!("secmon {} starting", env!("CARGO_PKG_VERSION")), format!("store: {store}")];
    let tenants: Vec<String> = c
        .tenants
        .iter()
        .map(|t| {
            let credential = match &t.credential {
                Some(cr) if cr.kind.is_some() => format!("{:?}", cr.kind.expect("checked")),
                Some(cr) if cr.certificate.is_some() => "client certificate".into(),
                Some(cr) if cr.client_secret.is_some() => "client secret".into(),
                _ => "credential from the environment".into(),
            };
            format!("{} ({}, {credential})", t.name, t.id)
        })
        .collect();
    lines.push(format!("tenants ({}): {}", c.tenants.len(), list(&tenants)));
    lines.push(format!(
        "poll: on \"{}\" (next {}), overlap {}, first lookback {}; reconcile on \"{}\" (next {})",
        c.poll.schedule,
        next(&c.poll.schedule, now),
        humantime::format_duration(c.poll.overlap),
        humantime::format_duration(c.poll.first_lookback),
        c.poll.reconcile.schedule,
        next(&c.poll.reconcile.schedule, now),
    ));
    let (mut enforce, mut shadow, mut expired) = (Vec::new(), Vec::new(), Vec::new());
    for r in &c.close_rules {
        if r.expires.is_some_and(|d| now.date_naive() > d) {
            expired.push(r.id.clone());
        } else if r.mode == Mode::Enforce && !c.closing_disabled {
            enforce.push(r.id.clone());
        } else {
            shadow.push(r.id.clone());
        }
    }
    let mut rules =
        format!("close rules ({}): enforce: {}; shadow: {}", c.close_rules.len(), list(&enforce), list(&shadow));
    if !expired.is_empty() {
        rules.push_str(&format!("; expired (not applied): {}", list(&expired)));
    }
    lines.push(rules);
    lines.push(if c.closing_disabled {
        "SECMON_CLOSE=off: closing is OFF, every close rule runs in shadow mode (nothing is closed)".into()
    } else {
        "SECMON_CLOSE not set: enforce rules close alerts".into()
    });
    let routes: Vec<String> = c
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = r.name.clone().unwrap_or_else(|| format!("routes[{i}]"));
            format!("{name} → {}", r.receivers.join(", "))
        })
        .collect();
    lines.push(format!(
        "routes ({}): {}",
        c.routes.len(),
        if routes.is_empty() { "none".into() } else { routes.join("; ") }
    ));
    let receivers: Vec<String> = c
        .receivers
        .iter()
        .map(|(name, r)| match r {
            ReceiverConfig::Teams(_) => format!("{name} (Teams)"),
            ReceiverConfig::Email(e) => {
                let sender = e.tenant.clone().or_else(|| c.mail.tenant.clone());
                let via = sender.map_or_else(|| "the alert's tenant".to_string(), |t| format!("tenant {t}"));
                format!("{name} (e-mail from {} to {} via {via})", e.from, e.to.join(", "))
            }
            ReceiverConfig::Webhook(_) => format!("{name} (signed webhook)"),
        })
        .collect();
    lines.push(format!("receivers ({}): {}", c.receivers.len(), list(&receivers)));
    let first = if c.worker.first_try {
        "each delivery tried at once by the worker that decided it (worker.first_try)"
    } else {
        "every delivery queued as a job (worker.first_try: false)"
    };
    lines.push(format!(
        "workers: {} over the alerts and deliveries queues (worker.concurrency), fair between tenants; {first}",
        c.worker.concurrency
    ));
    if !c.subscriptions.is_empty() {
        lines.push(format!("subscriptions: {} doorbells, synced now and every 6 h", c.subscriptions.len()));
    }
    lines.into_iter().map(|l| crate::redact::redact(&l)).collect()
}

/// The summary's last line in standalone mode: where the HTTP routes are served, if anywhere.
pub fn listening(listen: Option<SocketAddr>) -> String {
    match listen {
        Some(addr) => {
            format!(
                "listening on http://{addr} (/api/health, /api/graph-webhook, /api/graph-lifecycle, /api/doorbell, /api/bot-messages)"
            )
        }
        None => "no HTTP routes (pass --listen ADDR for the webhook, doorbell and /api/health)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_summary_names_what_runs_and_hides_what_is_secret() {
        let yaml = r#"
tenants:
  - { id: 11111111-2222-3333-4444-555555555555, name: contoso, credential: { client_id: 00000000-0000-0000-0000-000000000001, client_secret: "${SECRET}" } }
close_rules:
  - { id: pentest, owner: a@contoso.com, expires: 2099-01-01, mode: enforce, when: 'alert.severity == "low"', classification: informationalExpectedActivity, determination: securityTesting }
  - { id: backup, owner: a@contoso.com, expires: 2099-01-01, when: 'alert.severity == "low"', classification: informationalExpectedActivity, determination: securityTesting }
routes:
  - { name: all, receivers: [soc-teams] }
receivers:
  soc-teams: { teams: { webhook_url: "${TEAMS_URL}" } }
"#;
        let env = |k: &str| match k {
            "SECRET" => Some("very-secret-value".to_string()),
            "TEAMS_URL" => Some("https://example.invalid/workflows?sig=c2VjcmV0c2lnbmF0dXJl".to_string()),
            _ => None,
        };
        let now = "2026-11-26T10:02:30Z".parse().unwrap();
        let loaded = crate::setup::load_str(yaml, std::path::Path::new("t.yaml"), &env, now).unwrap();
        let store = crate::store::sqlite::SqliteStore::in_memory().unwrap();
        let app = App::builder(loaded.config)
            .backend(std::sync::Arc::new(store))
            .graph(std::sync::Arc::new(crate::graph::fake::FakeGraph::new()))
            .build()
            .unwrap();
        let lines = summary(&app, "SQLite ./secmon.db", now);
        let text = format!("{}\n{}", lines.join("\n"), listening(Some("127.0.0.1:7071".parse().unwrap())));
        assert!(text.contains("contoso (11111111-2222-3333-4444-555555555555, client secret)"), "{text}");
        assert!(text.contains("enforce: pentest; shadow: backup"), "{text}");
        assert!(text.contains("next 2026-11-26T10:05:00Z"), "{text}");
        assert!(text.contains("all → soc-teams") && text.contains("soc-teams (Teams)"), "{text}");
        assert!(text.contains("listening on http://127.0.0.1:7071"), "{text}");
        assert!(text.contains("workers: 256 over the alerts and deliveries queues"), "{text}");
        assert!(text.contains("SECMON_CLOSE not set"), "{text}");
        assert!(!text.contains("very-secret") && !text.contains("c2VjcmV0"), "{text}");
        assert!(lines.len() <= 20, "one screen");

        let off = App {
            config: std::sync::Arc::new(crate::config::Config { closing_disabled: true, ..(*app.config).clone() }),
            ..app
        };
        let text = summary(&off, "SQLite", now).join("\n");
        assert!(text.contains("enforce: none; shadow: pentest, backup") && text.contains("closing is OFF"), "{text}");
    }
}
