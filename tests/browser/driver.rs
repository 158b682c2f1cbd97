//! The browser test's server side (scripts/check-triage-page.sh, tests/browser/triage.spec.js): the Graph
//! emulator with its OpenID provider stand-in, and secmon's HTTP router and queue worker in one process,
//! configured with `triage.page` (sign-in by OpenID Connect). It prints one JSON line — a fresh link to a
//! new sample alert, an expired link, the alert's title — then answers each `report` line on stdin with
//! what Graph was asked (PATCHes and comments), and stops at the end of stdin.

use std::io::BufRead;
use std::sync::Arc;

use secmon::app::App;
use secmon::host::standalone;
use secmon::store::sqlite::SqliteStore;
use secmon_emulator::{Emulator, Options};
use serde_json::json;

const TENANT_ID: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
const CLIENT_ID: &str = "0c5bd3d2-6b6e-4c47-9a0c-2b1f7f8d9e10";
const SECRET: &str = "browser-test~secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let emu = Emulator::start(Options { tls: true, ..Options::default() }).await?;
    emu.seed_samples(TENANT_ID);
    emu.add_client(TENANT_ID, CLIENT_ID, SECRET);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (graph, authority, issuer) = (emu.graph_url(), emu.authority_url(), emu.oidc_issuer());
    let key: String = (0..48).map(|_| char::from(b'a' + rand::random::<u8>() % 26)).collect();
    let text = format!(
        "graph_url: {graph}\nauthority_url: {authority}\n\
         tenants:\n  - {{ id: {TENANT_ID}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }} }}\n\
         triage:\n  allowed: {{ users: [dana@contoso.com] }}\n  \
         page: {{ base_url: '{base}', link_key: {key}, link_ttl: 1h, oidc: {{ issuer: '{issuer}', client_id: secmon-triage }} }}\n"
    );
    let now = chrono::Utc::now();
    let config = secmon::setup::load_str(&text, std::path::Path::new("browser.yaml"), &|_| None, now)?.config;
    let pem = emu.ca_pem().expect("tls");
    let http = reqwest::Client::builder().tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes())?]).build()?;
    let graph = secmon::graph::client::GraphClient::new(&config, http.clone()).map_err(anyhow::Error::msg)?;
    let store = Arc::new(SqliteStore::in_memory()?);
    let app = App::builder(config).backend(store).graph(Arc::new(graph)).http(http).build()?;
    let (app, wake) = standalone::Waking::wrap(&app);
    let router = standalone::router(&app);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(standalone::worker(app.clone(), wake, stop_rx));

    let mut alerts = emu.alerts(TENANT_ID);
    alerts.sort_by_key(|a| a["id"].as_str().unwrap_or_default().to_string());
    let alert = alerts.into_iter().find(|a| a["status"] == "new").expect("a new sample alert");
    let id = alert["id"].as_str().unwrap_or_default();
    let page = app.config.triage.page.as_ref().expect("triage.page");
    let parsed = secmon::alert::Alert::from_value(alert.clone())?;
    let link = secmon::triage::page::link_url(page, "contoso", &parsed, now);
    let expired = secmon::triage::page::link_url(page, "contoso", &parsed, now - chrono::Duration::hours(2));
    println!("{}", json!({"link": link, "expired": expired, "title": alert["title"], "alert": id, "base": base}));

    // Answer reports as they come: stdin is read line by line on a thread of its own.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        if line.trim() == "report" {
            let patches: Vec<_> =
                emu.patches().into_iter().map(|(_, id, body)| json!({"alert": id, "body": body})).collect();
            let comments: Vec<_> =
                emu.comments().into_iter().map(|(_, id, text)| json!({"alert": id, "text": text})).collect();
            println!("{}", json!({"patches": patches, "comments": comments}));
        }
    }
    Ok(())
}
