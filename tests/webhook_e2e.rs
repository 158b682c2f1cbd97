//! End to end against the Graph emulator, over loopback: `sync` creates a subscription, the emulator
//! performs Graph's validation handshake against secmon's own HTTP routes, an e-mail arrives in the
//! emulated mailbox, the emulator sends the change notification, and secmon queues "poll contoso now".
//! Lifecycle events take the same road back.
//!
//! Both run the real Graph client (client-secret credential over TLS): the first through the
//! lifecycle and renewal paths, the second through to the poll that queues the new alerts.
#![cfg(feature = "demo")]

mod webhook_support;

use std::sync::Arc;

use secmon::graph::client::GraphClient;
use secmon::intake::Message;
use secmon::intake::subscriptions::{self, load_records};
use secmon_emulator::{Emulator, Options};
use webhook_support::*;

const TENANT_ID: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
const MAILBOX: &str = "users/alerts@contoso.com/mailFolders('inbox')/messages";

const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const CLIENT_SECRET: &str = "s3cr3t~value-for-tests";

/// A TLS emulator with secmon's app registered, and the config (public URL `public`, one tenant) and
/// HTTP client the real Graph client needs to reach it.
async fn emulated_graph(public: &str) -> (Emulator, secmon::config::Config, reqwest::Client) {
    let emulator = Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    emulator.add_client(TENANT_ID, CLIENT_ID, CLIENT_SECRET);
    let mut config = load_config(
        &config_yaml(public).replace("  - { tenant: fabrikam, resource: \"users/soc@fabrikam.com/messages\" }\n", ""),
    );
    config.graph_url = Some(emulator.graph_url());
    config.authority_url = Some(emulator.authority_url());
    config.tenants[0].credential = Some(secmon::graph::CredentialConfig {
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(CLIENT_SECRET.into()),
        ..Default::default()
    });
    let ca = reqwest::Certificate::from_pem(emulator.ca_pem().unwrap().as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    (emulator, config, http)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_mail_notification_poll() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let (emulator, config, http) = emulated_graph(&public).await;
    let graph = Arc::new(GraphClient::new(&config, http.clone()).unwrap());
    let h = Harness::new(config.clone());
    // The emulator's clock is the wall clock: so is this app's.
    h.clock.set(emulator.now());
    let app = h.app.with_graph(graph);
    let router = secmon::functions::router(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // 1. Created: the emulator validated both URLs against the running handler before answering 201.
    let report = subscriptions::sync(&app, app.clock.now()).await;
    assert_eq!(report.count("created"), 1, "{report:?}");
    let record = load_records(app.store.as_ref(), Some("contoso")).await.unwrap().remove(0);
    let handshakes: Vec<_> =
        emulator.requests().into_iter().filter(|r| r.method == "POST" && r.path == "/v1.0/subscriptions").collect();
    assert_eq!(handshakes.iter().map(|r| r.status).collect::<Vec<_>>(), vec![Some(201)]);
    // Once created, nobody else gets a handshake answered: 403, nothing echoed.
    let probe = reqwest::Client::new()
        .post(format!("{public}/api/graph-webhook?validationToken=reflect-me"))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status().as_u16(), 403);
    assert!(!probe.text().await.unwrap().contains("reflect-me"));

    // 2. Mail arrives → Graph notifies → 202 → one poll of contoso queued.
    let deliveries = emulator.deliver_mail(TENANT_ID, "alerts@contoso.com", "Defender: suspicious sign-in").await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, Some(202));
    assert_eq!(h.queued().await, vec![Message::Poll { tenant: "contoso".into(), reason: MAILBOX.into() }]);

    // 3. Lifecycle: missed → a catch-up poll, which the poll still pending answers (one pending poll
    // per tenant, `intake::coalesce`); reauthorizationRequired → a reauthorize call at Graph.
    let d = emulator.send_lifecycle(&record.id, "missed").await.unwrap();
    assert_eq!(d.status, Some(202));
    assert_eq!(h.queued().await, vec![Message::Poll { tenant: "contoso".into(), reason: MAILBOX.into() }]);
    assert_eq!(secmon::intake::coalesce::load(&app, "contoso").await.unwrap().coalesced, 1);
    let d = emulator.send_lifecycle(&record.id, "reauthorizationRequired").await.unwrap();
    assert_eq!(d.status, Some(202));
    let reauthorized = emulator.requests().iter().filter(|r| r.path.ends_with("/reauthorize")).count();
    assert_eq!(reauthorized, 1);

    // 4. A renewal the emulator accepts: within its lifetime limit.
    let later = app.clock.now() + chrono::Duration::days(4);
    emulator.set_now(Some(later));
    // A token from before the jump has expired by the emulator's clock, while the client's cache judges
    // by the wall clock: a new client takes a fresh one, as a process four days later would.
    let graph = Arc::new(GraphClient::new(&config, http).unwrap());
    let app = app.with_graph(graph);
    let report = subscriptions::sync(&app, later).await;
    assert_eq!(report.count("renewed"), 1, "{report:?}");
}

/// The whole road with the real Graph client (client-secret credential, TLS): subscription created →
/// e-mail arrives → notification → `Poll` queued → `functions::respond` polls → the new alerts are queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_notification_polls_and_queues_the_new_alerts_with_the_real_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let (emulator, config, http) = emulated_graph(&public).await;
    let graph = GraphClient::new(&config, http).unwrap();
    let h = Harness::new(config);
    h.clock.set(emulator.now());
    let app = h.app.with_graph(Arc::new(graph));
    let router = secmon::functions::router(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let report = subscriptions::sync(&app, app.clock.now()).await;
    assert_eq!(report.count("created"), 1, "{report:?}");

    // Defender raises three alerts and mails the mailbox about them.
    emulator.generate_alerts(TENANT_ID, 3, 11, app.clock.now() - chrono::Duration::hours(1));
    let deliveries = emulator.deliver_mail(TENANT_ID, "alerts@contoso.com", "Defender XDR: 3 new alerts").await;
    assert_eq!(deliveries.iter().map(|d| d.status).collect::<Vec<_>>(), vec![Some(202)]);
    let poll = Message::Poll { tenant: "contoso".into(), reason: MAILBOX.into() };
    assert_eq!(h.queued().await, vec![poll.clone()]);

    // The queue worker takes the doorbell and polls at once.
    let body = serde_json::to_vec(&poll).unwrap();
    let outcome = secmon::functions::respond(&app, &body, app.clock.now()).await;
    let secmon::functions::Outcome::Done { logs, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(logs[0].contains("polled contoso"), "{logs:?}");
    let queued = h.queued().await;
    let alerts: Vec<&str> = queued
        .iter()
        .filter_map(|m| match m {
            Message::Alert { alert, .. } => alert["id"].as_str(),
            _ => None,
        })
        .collect();
    let mut want: Vec<String> =
        emulator.alerts(TENANT_ID).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    want.sort();
    assert_eq!(want.len(), 3);
    let mut got: Vec<String> = alerts.iter().map(|s| s.to_string()).collect();
    got.sort();
    assert_eq!(got, want, "every new alert is on its way to respond");
}
