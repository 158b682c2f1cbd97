//! The Azure backend against Azurite: the same contract suite as SQLite, plus what only this backend
//! has to prove: the queue text is what the Functions queue trigger decodes, claims survive a lost
//! lease race, and the SAS never shows in errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::azurite;
use secmon::intake::Message;
use secmon::store::{ALERTS_QUEUE, Claim, Queue, Store, contract};

#[tokio::test]
async fn passes_the_store_contract() {
    if !azurite::available("passes_the_store_contract") {
        return;
    }
    contract::store_contract(&azurite::store().await).await;
}

#[tokio::test]
async fn passes_the_retention_contract() {
    if !azurite::available("passes_the_retention_contract") {
        return;
    }
    contract::retention_contract(&azurite::store().await).await;
}

#[tokio::test]
async fn passes_the_fencing_contract() {
    if !azurite::available("passes_the_fencing_contract") {
        return;
    }
    contract::fencing_contract(&azurite::store().await).await;
}

/// Two store handles (two Functions instances) append to one audit stream at once: one whole chain.
#[tokio::test]
async fn concurrent_audit_appends_keep_one_chain() {
    if !azurite::available("concurrent_audit_appends_keep_one_chain") {
        return;
    }
    let (a, b) = (azurite::store().await, azurite::store().await);
    common::audit_race::concurrent_appends_keep_one_chain(Arc::new(a), Arc::new(b), 5).await;
}

/// One tenant-day past an append blob's 50,000 blocks (an alert storm): the chain rolls over into
/// segments, each far below the limit (Azurite enforces it: a 50,001st block is refused), and the day
/// verifies and exports whole.
///
/// Opt-in with `SECMON_AZURITE_STORM=1` as well: Azurite keeps every appended block as an extent in
/// memory, copies a blob's block list on each append and walks every extent in its periodic collection,
/// so 50,000 blocks slow a shared Azurite for everyone (on a loaded machine the first attempt stalled
/// it). Segments of 2,500 keep its per-append copy short; production segments are 10,000 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_day_beyond_fifty_thousand_records_rolls_over_and_verifies() {
    let name = "an_audit_day_beyond_fifty_thousand_records_rolls_over_and_verifies";
    if !azurite::available(name) {
        return;
    }
    if std::env::var_os("SECMON_AZURITE_STORM").is_none() {
        use std::io::Write;
        let line = format!("\n*** {name}: skipped: set SECMON_AZURITE_STORM=1 too (50,001 records, minutes) ***\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    }
    let store = azurite::store().await;
    let segments = secmon::audit::Segments { records: 2_500 };
    // 64 records an announcement: the same chain with a head round-trip per 64 records, not per record
    // (one record at a time it is four requests, about 15 ms on a shared Azurite).
    let count = common::audit_race::a_long_day_rolls_over_and_verifies(&store, segments, 50_001, 64).await;
    assert_eq!(count, 21);
}

#[tokio::test]
async fn passes_the_queue_contract() {
    if !azurite::available("passes_the_queue_contract") {
        return;
    }
    // Two tries keep the suite short; the poison path is the same for five.
    contract::queue_contract(&azurite::store().await.with_max_dequeue(2)).await;
}

#[tokio::test]
async fn passes_the_queue_admin_contract() {
    if !azurite::available("passes_the_queue_admin_contract") {
        return;
    }
    let store = azurite::store().await;
    contract::queue_admin_contract(&store, &store).await;
}

/// What the backend writes is base64 text; decoded the way the Functions host does with
/// `messageEncoding: base64`, it is the JSON that `Message::parse` reads.
#[tokio::test]
async fn queue_text_is_what_the_functions_trigger_decodes() {
    if !azurite::available("queue_text_is_what_the_functions_trigger_decodes") {
        return;
    }
    let store = azurite::store().await;
    let queue = format!("fidelity-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let message = Message::Poll { tenant: "contoso".into(), reason: "doorbell".into() };
    store.send(&queue, &serde_json::to_vec(&message).unwrap()).await.unwrap();

    // Read the raw text with the SDK, bypassing our decoding, as the host's queue listener would.
    let raw = raw_texts(&queue).await;
    assert_eq!(raw.len(), 1);
    let decoded = base64::engine::general_purpose::STANDARD.decode(&raw[0]).expect("the queue text is base64");
    assert!(serde_json::from_slice::<serde_json::Value>(&decoded).is_ok(), "decoded text is JSON");
    assert_eq!(Message::parse(&decoded).unwrap(), message);
    // And the default queue name is one Azure accepts.
    assert!(store.len(ALERTS_QUEUE).await.is_ok());
}

async fn raw_texts(queue: &str) -> Vec<String> {
    use azure_storage_queue::QueueServiceClient;
    use azure_storage_queue::models::QueueClientPeekMessagesOptions;
    let mut url = azure_core::http::Url::parse(azurite::QUEUE_URL).unwrap();
    url.set_query(Some(&azurite::account_sas()));
    let client = QueueServiceClient::new(url, None, None).unwrap().queue_client(queue).unwrap();
    let options = QueueClientPeekMessagesOptions { number_of_messages: Some(32), ..Default::default() };
    let peeked = client.peek_messages(Some(options)).await.unwrap().into_model().unwrap();
    peeked.items.unwrap_or_default().into_iter().filter_map(|m| m.message_text).collect()
}

/// Text that secmon did not write (not base64) is handed over as is, never dropped.
#[tokio::test]
async fn foreign_text_on_the_queue_is_not_dropped() {
    if !azurite::available("foreign_text_on_the_queue_is_not_dropped") {
        return;
    }
    use azure_storage_queue::QueueServiceClient;
    use azure_storage_queue::models::QueueMessage;
    let store = azurite::store().await;
    let queue = format!("foreign-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    store.send(&queue, b"creates the queue").await.unwrap();
    let mut url = azure_core::http::Url::parse(azurite::QUEUE_URL).unwrap();
    url.set_query(Some(&azurite::account_sas()));
    let client = QueueServiceClient::new(url, None, None).unwrap().queue_client(&queue).unwrap();
    let text = r#"{"kind":"poll","tenant":"contoso","reason":"manual"}"#;
    client.send_message(QueueMessage { message_text: Some(text.into()) }.try_into().unwrap(), None).await.unwrap();
    let got = store.receive(&queue, 10, Duration::from_secs(30)).await.unwrap();
    let bodies: Vec<_> = got.iter().map(|m| m.body.clone()).collect();
    assert!(bodies.contains(&b"creates the queue".to_vec()));
    assert!(bodies.contains(&text.as_bytes().to_vec()), "{bodies:?}");
}

/// Many takers of one expired lease: exactly one wins the takeover.
#[tokio::test]
async fn an_expired_lease_is_taken_over_once() {
    if !azurite::available("an_expired_lease_is_taken_over_once") {
        return;
    }
    let store = azurite::store().await;
    let key = format!("claim-race-{}/close", uuid::Uuid::new_v4().simple());
    assert!(matches!(store.claim(&key, Duration::from_secs(1)).await.unwrap(), Claim::Acquired(_)));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let lease = Duration::from_secs(60);
    let (a, b, c, d) = tokio::join!(
        store.claim(&key, lease),
        store.claim(&key, lease),
        store.claim(&key, lease),
        store.claim(&key, lease)
    );
    let results = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
    assert_eq!(results.iter().filter(|r| matches!(r, Claim::Acquired(_))).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Claim::Acquired(_) | Claim::Held)), "{results:?}");
}

/// A failing call's error names what failed and carries no SAS signature.
#[tokio::test]
async fn errors_do_not_leak_the_sas() {
    if !azurite::available("errors_do_not_leak_the_sas") {
        return;
    }
    let mut settings = azurite::settings();
    let secmon::store::azure::AzureAuth::Sas(sas) = &settings.auth else { unreachable!() };
    let sig = sas.split("sig=").nth(1).unwrap().to_string();
    secmon::redact::global().add(&sig);
    // A SAS for a different account fails authorization on every call.
    settings.blob_url = "http://127.0.0.1:10000/otheraccount".into();
    let err = secmon::store::azure::AzureStore::connect(&settings).await.unwrap_err().to_string();
    assert!(!err.contains(&sig), "{err}");
    assert!(err.contains("start-up"), "{err}");
}

/// The validation handshake's "creating" marker works across instances: written through one store
/// handle (the worker app), seen through another (the edge app), and no longer counted after its window.
#[tokio::test]
async fn a_creating_marker_is_seen_by_another_instance() {
    if !azurite::available("a_creating_marker_is_seen_by_another_instance") {
        return;
    }
    use secmon::intake::subscriptions::{CREATING_WINDOW_SECONDS, creating, mark_creating, unmark_creating};
    let (worker, edge) = (azurite::store().await, azurite::store().await);
    let tenant = format!("marker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let now = chrono::Utc::now();
    let key = mark_creating(&worker, &tenant, now).await.unwrap();
    assert!(creating(&edge, now).await.unwrap(), "the edge sees the worker's marker");
    let later = now + chrono::Duration::seconds(CREATING_WINDOW_SECONDS + 60);
    assert!(!creating(&edge, later).await.unwrap(), "no longer counted after its window");
    unmark_creating(&worker, &tenant, &key).await;
    assert!(edge.get(&key).await.unwrap().is_none(), "removed");
}

/// Retention on Azure Storage, in containers of its own (a sweep removes expired keys of every tenant):
/// the write times are the store's clock (blob metadata), so a simulated month passes in a moment;
/// expired claims, values and audit days go, fresh ones and a live claim stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_what_expired_and_nothing_else() {
    if !azurite::available("the_sweep_removes_what_expired_and_nothing_else") {
        return;
    }
    use secmon::clock::Clock;
    use secmon::store::keys;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let start: chrono::DateTime<chrono::Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
    let clock = Arc::new(secmon::clock::ManualClock::new(start));
    let store = secmon::store::azure::AzureStore::connect_in(
        &azurite::settings(),
        &format!("sweep-state-{id}"),
        &format!("sweep-audit-{id}"),
    )
    .await
    .unwrap()
    .with_clock(clock.clone());
    let lease = Duration::from_secs(60);
    let done = |c: Claim| match c {
        Claim::Acquired(t) => t,
        other => panic!("{other:?}"),
    };
    let old_claim = keys::close("contoso", "old", "v");
    let token = done(store.claim(&old_claim, lease).await.unwrap());
    store.complete(&old_claim, &token).await.unwrap();
    store.put(&keys::notify_last("contoso", "old", "soc"), b"{}").await.unwrap();
    let live = keys::notify("contoso", "live", "v", "soc");
    done(store.claim(&live, Duration::from_secs(90 * 24 * 3600)).await.unwrap());
    secmon::audit::append(
        &store,
        "contoso",
        start,
        secmon::audit::Record::new("a", "v", secmon::audit::Action::Notify),
    )
    .await
    .unwrap();
    clock.advance(chrono::Duration::days(31));
    let fresh_claim = keys::close("contoso", "fresh", "v");
    let token = done(store.claim(&fresh_claim, lease).await.unwrap());
    store.complete(&fresh_claim, &token).await.unwrap();
    store.put(&keys::notify_last("contoso", "fresh", "soc"), b"{}").await.unwrap();
    secmon::audit::append(
        &store,
        "contoso",
        clock.now(),
        secmon::audit::Record::new("b", "v", secmon::audit::Action::Notify),
    )
    .await
    .unwrap();
    let config = secmon::config::RetentionConfig { audit_days: 20, ..Default::default() };
    let report = secmon::retention::sweep(&store, &store, &config, clock.now()).await.unwrap();
    assert_eq!((report.removed, report.audit_days_removed), (2, 1), "{report:?}");
    assert!(matches!(store.claim(&old_claim, lease).await.unwrap(), Claim::Acquired(_)), "expired: removed");
    assert_eq!(store.claim(&fresh_claim, lease).await.unwrap(), Claim::Done, "fresh: kept");
    assert_eq!(store.claim(&live, lease).await.unwrap(), Claim::Held, "live: kept");
    assert!(store.get(&keys::notify_last("contoso", "old", "soc")).await.unwrap().is_none());
    assert!(store.get(&keys::notify_last("contoso", "fresh", "soc")).await.unwrap().is_some());
    let days = secmon::audit::days(&store, None).await.unwrap();
    assert_eq!(days.iter().map(|d| d.date).collect::<Vec<_>>(), [clock.now().date_naive()]);
}
