//! The subscription manager against an in-memory Graph: create what the config asks for, renew at half
//! life, re-create what vanished, delete what is no longer configured or orphaned, and keep going when
//! one tenant fails.

mod webhook_support;

use secmon::intake::subscriptions::{self, SubscriptionRecord, load_records, max_lifetime};
use serde_json::json;
use webhook_support::*;

const MAILBOX: &str = "users/alerts@contoso.com/mailFolders('inbox')/messages";

fn harness() -> Harness {
    Harness::new(load_config(&config_yaml("https://secmon.example.net")))
}

async fn records(h: &Harness, tenant: &str) -> Vec<SubscriptionRecord> {
    load_records(h.app.store.as_ref(), Some(tenant)).await.unwrap()
}

#[tokio::test]
async fn sync_creates_each_configured_subscription_once() {
    let h = harness();
    let report = subscriptions::sync(&h.app, t0()).await;
    assert_eq!(report.count("created"), 2, "{report:?}");
    assert!(!report.has_failures());
    let contoso = records(&h, "contoso").await;
    assert_eq!(contoso.len(), 1);
    let r = &contoso[0];
    assert_eq!(r.resource, MAILBOX);
    assert!(r.client_state.len() >= 43);
    assert_eq!(r.notification_url, "https://secmon.example.net/api/graph-webhook", "no function key in the record");
    let sent = h.graph.sub(&r.id).unwrap();
    assert_eq!(sent["notificationUrl"], "https://secmon.example.net/api/graph-webhook?code=FUNCTIONKEY-abc123==");
    assert_eq!(
        sent["lifecycleNotificationUrl"],
        "https://secmon.example.net/api/graph-lifecycle?code=FUNCTIONKEY-abc123=="
    );
    assert_eq!(sent["clientState"], r.client_state.as_str());
    assert_eq!(sent["changeType"], "created");
    let expiry = chrono::DateTime::parse_from_rfc3339(sent["expirationDateTime"].as_str().unwrap()).unwrap();
    assert!(expiry <= t0() + max_lifetime(MAILBOX), "Graph answers 400 beyond the maximum lifetime");
    assert!(expiry > t0() + chrono::Duration::days(6));
    let fabrikam = records(&h, "fabrikam").await;
    assert_ne!(fabrikam[0].client_state, r.client_state, "one secret per subscription");
    // No pending records are left behind.
    assert_eq!(h.app.store.list("subscriptions/contoso/pending-").await.unwrap().len(), 0);

    let again = subscriptions::sync(&h.app, t0() + chrono::Duration::hours(6)).await;
    assert_eq!(again.count("kept"), 2, "{again:?}");
    assert_eq!(h.graph.ids("contoso").len(), 1);
}

#[tokio::test]
async fn sync_renews_well_before_expiry() {
    let h = harness();
    subscriptions::sync(&h.app, t0()).await;
    let before = records(&h, "contoso").await[0].clone();
    let later = t0() + chrono::Duration::days(4);
    let report = subscriptions::sync(&h.app, later).await;
    assert_eq!(report.count("renewed"), 2, "{report:?}");
    let after = records(&h, "contoso").await[0].clone();
    assert_eq!(after.id, before.id);
    assert_eq!(after.client_state, before.client_state);
    assert!(after.expiration > before.expiration);
    assert!(after.expiration <= later + max_lifetime(MAILBOX));
}

#[tokio::test]
async fn a_refused_expiry_is_retried_with_half_the_lifetime() {
    // Graph answers 400 to an expiry it finds too far out (a clock of ours running ahead of Graph's).
    let h = harness();
    h.graph.fail_once("create", 400);
    let report = subscriptions::sync(&h.app, t0()).await;
    assert_eq!(report.count("created"), 2, "{report:?}");
    let ids = h.graph.ids("contoso");
    let half = t0() + max_lifetime(MAILBOX) / 2;
    let first = h.graph.expiry_of(&ids[0]);
    assert_eq!(first, half, "the retried creation asked for half the lifetime");

    h.graph.fail_once("renew", 400);
    let later = t0() + chrono::Duration::days(3);
    let report = subscriptions::sync(&h.app, later).await;
    // Only the short-lived one is due; its renewal is refused once, then granted.
    assert_eq!(report.count("renewed"), 1, "{report:?}");
    assert!(!report.has_failures());

    // A 400 that persists is reported, not hidden (both are due again by now).
    h.graph.fail("renew", 400);
    let report = subscriptions::sync(&h.app, later + chrono::Duration::days(3)).await;
    assert_eq!(report.count("failed"), 2, "{report:?}");
    assert!(report.actions.iter().all(|a| a.action == "failed" && a.detail.as_deref().unwrap().starts_with("renew")));
}

#[tokio::test]
async fn sync_recreates_what_vanished_and_what_renewal_finds_gone() {
    let h = harness();
    subscriptions::sync(&h.app, t0()).await;
    let old = records(&h, "contoso").await[0].clone();
    h.graph.vanish(&old.id);
    let report = subscriptions::sync(&h.app, t0() + chrono::Duration::hours(6)).await;
    assert_eq!(report.count("recreated"), 1, "{report:?}");
    let new = records(&h, "contoso").await;
    assert_eq!(new.len(), 1);
    assert_ne!(new[0].id, old.id);
    assert_ne!(new[0].client_state, old.client_state);

    // Vanishing between the listing and the renewal: the 404 leads to a re-creation too.
    let h = harness();
    subscriptions::sync(&h.app, t0()).await;
    h.graph.fail("renew", 404);
    let report = subscriptions::sync(&h.app, t0() + chrono::Duration::days(4)).await;
    assert_eq!(report.count("recreated"), 2, "{report:?}");
    assert!(!report.has_failures());
}

#[tokio::test]
async fn sync_deletes_unconfigured_and_orphaned_subscriptions_only() {
    let h = harness();
    subscriptions::sync(&h.app, t0()).await;
    let fabrikam_id = records(&h, "fabrikam").await[0].id.clone();
    // A crash after Graph created one but before it was stored, and another app's subscription.
    h.graph.insert(
        "contoso",
        json!({"id": "orphan-1", "resource": MAILBOX, "notificationUrl": "https://secmon.example.net/api/graph-webhook?code=old"}),
    );
    h.graph.insert(
        "contoso",
        json!({"id": "foreign-1", "resource": MAILBOX, "notificationUrl": "https://elsewhere.example.com/hook"}),
    );
    // fabrikam's subscription leaves the config.
    let mut config = load_config(&config_yaml("https://secmon.example.net"));
    config.subscriptions.retain(|s| s.tenant == "contoso");
    let h2 = Harness { app: h.app.with_config(config).unwrap(), ..h };
    let report = subscriptions::sync(&h2.app, t0() + chrono::Duration::hours(6)).await;
    assert_eq!(report.count("deleted"), 1, "{report:?}");
    assert_eq!(report.count("deleted-orphan"), 1, "{report:?}");
    assert!(h2.graph.sub(&fabrikam_id).is_none());
    assert!(records(&h2, "fabrikam").await.is_empty());
    assert!(h2.graph.sub("orphan-1").is_none());
    assert!(h2.graph.sub("foreign-1").is_some(), "another endpoint's subscription is not ours to delete");
    assert_eq!(records(&h2, "contoso").await.len(), 1);
}

#[tokio::test]
async fn one_failing_tenant_does_not_stop_the_others_and_the_timer_reports_it() {
    let h = harness();
    h.graph.fail("create", 403);
    let report = subscriptions::sync(&h.app, t0()).await;
    assert_eq!(report.count("failed"), 2);
    assert!(report.actions.iter().all(|a| a.detail.as_deref().is_some_and(|d| !d.contains("FUNCTIONKEY"))));
    h.graph.heal();
    let body = String::from_utf8(sample("functions-timer-request.json")).unwrap();
    let (data, _) = secmon::host::azure::parse_envelope(body.as_bytes()).unwrap();
    let outcome = secmon::host::azure::dispatch(&h.app, "graph-subscriptions", data).await;
    let outcome = outcome.map_err(|e| format!("{e:?}")).unwrap();
    assert!(outcome.logs[0].contains("created 2"), "{:?}", outcome.logs);
    assert_eq!(records(&h, "contoso").await.len(), 1);
    assert_eq!(records(&h, "fabrikam").await.len(), 1);
}

#[tokio::test]
async fn without_a_public_url_sync_says_why_it_cannot_subscribe() {
    let mut config = load_config(&config_yaml("https://secmon.example.net"));
    config.webhook.public_url = None;
    let h = Harness::new(config);
    let report = subscriptions::sync(&h.app, t0()).await;
    assert_eq!(report.count("failed"), 2);
    assert!(report.actions[0].detail.as_deref().unwrap().contains("public_url"));
    assert!(h.graph.ids("contoso").is_empty());
}

#[tokio::test]
async fn the_list_shows_records_without_their_secrets() {
    let h = harness();
    subscriptions::sync(&h.app, t0()).await;
    let secret = records(&h, "contoso").await[0].client_state.clone();
    let listed = subscriptions::list(&h.app, t0()).await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&secret));
    assert_eq!(listed[0]["renew_due"], false);
}

#[test]
fn config_without_a_public_url_is_refused_when_subscriptions_exist() {
    let yaml = config_yaml("https://secmon.example.net").replace("  public_url: https://secmon.example.net\n", "");
    // A value for every variable the file names, and nothing else: settings read straight from the
    // environment (SECMON_AUDIT_RETENTION_DAYS) stay unset.
    let named: Vec<String> = yaml.split("${").skip(1).filter_map(|r| r.split('}').next()).map(str::to_string).collect();
    let env = move |name: &str| named.iter().any(|n| n == name).then(|| "x".repeat(20));
    let err = secmon::setup::load_str(&yaml, std::path::Path::new("t.yaml"), &env, t0()).unwrap_err().to_string();
    assert!(err.contains("webhook.public_url"), "{err}");
    let yaml = config_yaml("http://secmon.example.net");
    let err = secmon::setup::load_str(&yaml, std::path::Path::new("t.yaml"), &env, t0()).unwrap_err().to_string();
    assert!(err.contains("https"), "{err}");
}

#[tokio::test]
async fn rotating_the_function_key_replaces_every_subscription_first_then_deletes_the_old() {
    let h = harness();
    subscriptions::sync(&h.app, t0()).await;
    let old = records(&h, "contoso").await[0].clone();
    let fingerprint = old.url_fingerprint.clone().expect("new records carry a fingerprint");
    let stored = String::from_utf8(
        h.app.store.get(&secmon::store::keys::subscription("contoso", &old.id)).await.unwrap().unwrap().value,
    )
    .unwrap();
    assert!(!stored.contains("FUNCTIONKEY"), "the record holds a hash, never the key: {stored}");

    // Same key: nothing to do.
    let report = subscriptions::sync(&h.app, t0() + chrono::Duration::hours(6)).await;
    assert_eq!(report.count("kept"), 2, "{report:?}");

    // The key is rotated: the config's notification query changes, the base URL does not.
    let mut config = (*h.app.config).clone();
    config.webhook.notification_query = Some("code=ROTATED-key-456==".into());
    let app = h.app.with_config(config).unwrap();
    let before = h.graph.calls().len();
    let report = subscriptions::sync(&app, t0() + chrono::Duration::hours(12)).await;
    assert_eq!(report.count("recreated"), 2, "{report:?}");
    assert!(!report.has_failures(), "{report:?}");
    let detail = report.actions.iter().find(|a| a.tenant == "contoso").unwrap().detail.clone().unwrap();
    assert!(detail.contains("function key") && !detail.contains("ROTATED"), "{detail}");
    let new = records(&h, "contoso").await;
    assert_eq!(new.len(), 1);
    assert_ne!(new[0].id, old.id);
    assert_ne!(new[0].url_fingerprint.as_deref(), Some(fingerprint.as_str()));
    let sent = h.graph.sub(&new[0].id).unwrap();
    assert_eq!(sent["notificationUrl"], "https://secmon.example.net/api/graph-webhook?code=ROTATED-key-456==");
    assert_eq!(
        sent["lifecycleNotificationUrl"],
        "https://secmon.example.net/api/graph-lifecycle?code=ROTATED-key-456=="
    );
    assert!(h.graph.sub(&old.id).is_none(), "the old subscription is deleted at Graph");
    // No gap: for each tenant the replacement was created before the old one was deleted.
    let calls: Vec<String> = h.graph.calls()[before..].to_vec();
    let create = calls.iter().position(|c| c == "create contoso").expect("created");
    let delete = calls.iter().position(|c| c == "delete contoso").expect("deleted");
    assert!(create < delete, "{calls:?}");

    // Nothing missed: a notification for the new subscription rings the bell (and one for the old id,
    // which Graph no longer sends, would be refused).
    let notify = |id: &str, secret: &str| {
        json_post(&json!({"value": [{"subscriptionId": id, "clientState": secret, "changeType": "created",
            "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95", "resource": "Users/x/Messages/y"}]}))
    };
    let resp = secmon::intake::webhook::handle(&app, "graph-webhook", notify(&new[0].id, &new[0].client_state)).await;
    assert_eq!(resp.status, 202, "{}", resp.body);
    assert!(resp.body.contains("\"queued\":1"), "{}", resp.body);
    let resp = secmon::intake::webhook::handle(&app, "graph-webhook", notify(&old.id, &old.client_state)).await;
    assert!(resp.body.contains("\"rejected\":1"), "{}", resp.body);
    let report = subscriptions::sync(&app, t0() + chrono::Duration::hours(18)).await;
    assert_eq!(report.count("kept"), 2, "{report:?}");
}

#[tokio::test]
async fn a_record_without_a_fingerprint_is_replaced_once() {
    let h = harness();
    subscriptions::sync(&h.app, t0()).await;
    let mut old = records(&h, "contoso").await[0].clone();
    old.url_fingerprint = None;
    h.app
        .store
        .put(&secmon::store::keys::subscription("contoso", &old.id), &serde_json::to_vec(&old).unwrap())
        .await
        .unwrap();
    let report = subscriptions::sync(&h.app, t0() + chrono::Duration::hours(6)).await;
    assert_eq!(report.count("recreated"), 1, "{report:?}");
    assert_eq!(report.count("kept"), 1, "{report:?}");
    let report = subscriptions::sync(&h.app, t0() + chrono::Duration::hours(12)).await;
    assert_eq!(report.count("kept"), 2, "{report:?}");
}
