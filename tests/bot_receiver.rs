//! The Teams bot receiver (`teams: { bot: … }`) against the emulator's Bot Connector stand-in, over TLS
//! through the whole pipeline (`respond::process_alert`, then the `deliver` jobs): one card posted
//! proactively with the triage buttons, once even when the job is redelivered; later versions of the
//! alert (resolved in Defender, severity raised, grouped into an incident) update that card in place;
//! a *Silence 24 h* click makes the silence that mutes the next alert of the detector; config errors.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::audit::{Action, Record};
use secmon::clock::ManualClock;
use secmon::config::{ConfigError, Issue};
use secmon::graph::client::GraphClient;
use secmon::host::standalone::{self, WorkResult};
use secmon::store::Store;
use secmon::store::sqlite::SqliteStore;
use secmon::triage::act::{Actor, CardRef, Click, TriageAction};
use secmon_emulator::{BotCall, Emulator, Options};
use serde_json::{Value, json};

const TENANT_ID: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
const CLIENT_ID: &str = "0c5bd3d2-6b6e-4c47-9a0c-2b1f7f8d9e10";
const SECRET: &str = "bot-receiver-tests~secret";
const BOT_APP: &str = "7d1e3b5a-1111-4222-8333-444455556666";
const BOT_SECRET: &str = "bot-receiver-tests~bot-secret";
const ALERT: &str = "da637551227677560813_-961444813";
const CONVERSATION: &str = "19:secops@thread.tacv2";

fn now() -> DateTime<Utc> {
    "2026-12-01T10:42:00Z".parse().unwrap()
}

struct Harness {
    emu: Emulator,
    app: App,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
}

fn config_text(emu: &Emulator, receiver: &str) -> String {
    config_with_secret(emu, receiver, BOT_SECRET)
}

fn config_with_secret(emu: &Emulator, receiver: &str, bot_secret: &str) -> String {
    format!(
        "graph_url: {graph}\nauthority_url: {authority}\n\
         tenants:\n  - {{ id: {TENANT_ID}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }} }}\n\
         triage:\n  bots:\n    soc: {{ app_id: {BOT_APP}, app_secret: {bot_secret}, tenant_id: {TENANT_ID} }}\n  \
         allowed: {{ users: [dana@contoso.com] }}\n\
         routes:\n  - {{ receivers: [soc-bot] }}\n\
         receivers:\n  soc-bot:\n    teams:\n{receiver}",
        graph = emu.graph_url(),
        authority = emu.authority_url(),
    )
}

async fn harness() -> Harness {
    harness_with_secret(BOT_SECRET).await
}

async fn harness_with_secret(bot_secret: &str) -> Harness {
    harness_with(bot_secret, "").await
}

/// A harness whose bot has `bot_secret` and whose receiver has the `extra` lines (under `teams:`).
async fn harness_with(bot_secret: &str, extra: &str) -> Harness {
    let emu = Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    emu.seed_samples(TENANT_ID);
    emu.add_client(TENANT_ID, CLIENT_ID, SECRET);
    emu.add_client(TENANT_ID, BOT_APP, BOT_SECRET);
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let http = common::rig::tls_client(&emu);
    let receiver = format!(
        "      bot: {{ name: soc, service_url: \"{}\", conversation_id: \"{CONVERSATION}\" }}\n{extra}",
        emu.bot_service_url()
    );
    let text = config_with_secret(&emu, &receiver, bot_secret);
    let config =
        secmon::setup::load_str(&text, std::path::Path::new("test.yaml"), &|_: &str| None, now()).unwrap().config;
    let graph = GraphClient::new(&config, http.clone()).unwrap();
    let app = App::builder(config)
        .backend(store.clone())
        .graph(Arc::new(graph))
        .http(http)
        .clock(clock.clone())
        .build()
        .unwrap();
    Harness { emu, app, store, clock }
}

impl Harness {
    fn alert(&self) -> Value {
        self.emu.alert(TENANT_ID, ALERT).unwrap()
    }

    /// Changes the alert in Defender (the emulator): `change` applied, a new `lastUpdateDateTime`.
    fn change(&self, at: &str, change: Value) -> Value {
        let mut alert = self.alert();
        for (k, v) in change.as_object().unwrap() {
            alert[k] = v.clone();
        }
        alert["lastUpdateDateTime"] = json!(at);
        self.emu.seed_alerts(TENANT_ID, vec![alert.clone()]);
        alert
    }

    /// Decides the alert and runs every job it queues.
    async fn process(&self, alert: Value) -> Vec<WorkResult> {
        secmon::respond::process_alert(&self.app, "contoso", alert).await.unwrap();
        standalone::drain(&self.app, 50).await
    }

    fn calls(&self, method: &str) -> Vec<BotCall> {
        self.emu.bot_calls().into_iter().filter(|c| c.method == method).collect()
    }

    async fn audit(&self) -> Vec<Record> {
        common::rig::audit_records(self.store.as_ref()).await
    }

    async fn card_record(&self, alert: &str) -> secmon::notify::cards::BotCard {
        secmon::notify::cards::read(self.store.as_ref(), "contoso", alert, "soc-bot").await.unwrap().expect("a card")
    }
}

fn content(call: &BotCall) -> &Value {
    &call.activity["attachments"][0]["content"]
}

fn titles(card: &Value) -> Vec<String> {
    let actions = card["actions"].as_array().cloned().unwrap_or_default();
    actions.iter().map(|a| a["title"].as_str().unwrap().to_string()).collect()
}

fn texts(card: &Value) -> Vec<String> {
    card["body"].as_array().unwrap().iter().filter_map(|b| b["text"].as_str().map(str::to_string)).collect()
}

/// Writes a card for scripts/check-cards.sh (the Adaptive Cards parser, 1.4).
fn save_card(name: &str, card: &Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cards");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(card).unwrap()).unwrap();
}

fn done(results: &[WorkResult]) {
    for r in results {
        assert!(matches!(r, WorkResult::Done(_)), "{r:?}");
    }
}

#[tokio::test]
async fn a_routed_alert_posts_one_card_with_the_buttons_even_when_redelivered() {
    let h = harness().await;
    let alert = h.alert();
    done(&h.process(alert.clone()).await);
    let posts = h.calls("POST");
    assert_eq!(posts.len(), 1, "{posts:?}");
    let post = &posts[0];
    assert_eq!(post.conversation, CONVERSATION);
    assert_eq!(post.client_id, BOT_APP, "posted with the bot's own token");
    let card = content(post);
    assert_eq!(card["version"], "1.4");
    assert_eq!(titles(card), ["Acknowledge", "Resolve as benign", "True positive", "Silence 24 h", "Open in Defender"]);
    assert_eq!(card["actions"][0]["data"]["version"], alert["lastUpdateDateTime"]);
    assert!(texts(card)[1].contains("Severity low, status new"), "{:?}", texts(card));
    save_card("bot-receiver-posted", card);
    // Where the card is, kept for later versions.
    let record = h.card_record(ALERT).await;
    assert_eq!(
        record.card,
        Some(CardRef {
            service_url: h.emu.bot_service_url(),
            conversation_id: CONVERSATION.into(),
            activity_id: post.activity_id.clone()
        })
    );
    assert_eq!(record.version, alert["lastUpdateDateTime"].as_str().unwrap());
    assert!(record.posting_since.is_none());
    // The same version again (a redelivered message, its jobs queued again): no second post, no update.
    done(&h.process(alert.clone()).await);
    assert_eq!(h.emu.bot_calls().len(), 1, "{:?}", h.emu.bot_calls());
    let sent = h.audit().await.into_iter().filter(|r| r.action == Action::Notify).count();
    assert_eq!(sent, 1);
}

#[tokio::test]
async fn later_versions_update_the_card_in_place_and_never_post_again() {
    let h = harness().await;
    done(&h.process(h.alert()).await);
    let posted = h.calls("POST")[0].activity_id.clone();
    // Assigned and grouped into another incident in Defender: not "new" for realert (severity did not
    // rise, not reopened), yet the card follows.
    let moved = h.change("2026-12-01T11:00:00Z", json!({"assignedTo": "sam@contoso.com", "incidentId": "99001"}));
    done(&h.process(moved).await);
    // Severity raised.
    let raised = h.change("2026-12-01T11:05:00Z", json!({"severity": "high"}));
    done(&h.process(raised).await);
    // Resolved in Defender.
    let resolved = h.change("2026-12-01T11:10:00Z", json!({"status": "resolved", "classification": "falsePositive"}));
    done(&h.process(resolved.clone()).await);
    assert_eq!(h.calls("POST").len(), 1, "never a second card");
    let puts = h.calls("PUT");
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert!(puts.iter().all(|p| p.activity_id == posted && p.conversation == CONVERSATION && p.client_id == BOT_APP));
    let lines: Vec<String> = puts.iter().map(|p| texts(content(p))[1].clone()).collect();
    assert_eq!(
        lines,
        [
            "Severity low, status new, assigned to sam@contoso.com, incident 99001",
            "Severity high, status new, assigned to sam@contoso.com, incident 99001",
            "Severity high, status resolved, assigned to sam@contoso.com, incident 99001",
        ]
    );
    // Open: the buttons carry the version Defender has now; resolved: no triage buttons.
    assert_eq!(content(&puts[1])["actions"][0]["data"]["version"], "2026-12-01T11:05:00Z");
    assert_eq!(titles(content(&puts[2])), ["Open in Defender"]);
    save_card("bot-receiver-updated-resolved", content(&puts[2]));
    assert_eq!(h.card_record(ALERT).await.version, "2026-12-01T11:10:00Z");
    // An older version arriving late does not take the card back.
    let mut old = resolved.clone();
    old["lastUpdateDateTime"] = json!("2026-12-01T10:59:00Z");
    old["status"] = json!("new");
    h.emu.seed_alerts(TENANT_ID, vec![resolved]);
    secmon::respond::process_alert(&h.app, "contoso", old).await.unwrap();
    standalone::drain(&h.app, 50).await;
    assert_eq!(h.calls("PUT").len(), 3);
    let updated = h.audit().await.into_iter().filter(|r| r.detail.contains("card updated in place")).count();
    assert_eq!(updated, 3);
}

fn dana_click(h: &Harness, action: TriageAction) -> Click {
    let record_card = h.calls("POST")[0].activity_id.clone();
    Click {
        tenant: "contoso".into(),
        alert_id: ALERT.into(),
        version: h.alert()["lastUpdateDateTime"].as_str().unwrap().into(),
        action,
        actor: Actor {
            aad_object_id: "0b6c8e2a-dana-4c1e-9f00-000000000042".into(),
            upn: Some("dana@contoso.com".into()),
            name: "Dana Lee".into(),
        },
        card: Some(CardRef {
            service_url: h.emu.bot_service_url(),
            conversation_id: CONVERSATION.into(),
            activity_id: record_card,
        }),
        bot: Some("soc".into()),
    }
}

#[tokio::test]
async fn silence_24_h_makes_a_silence_of_the_detector_and_the_next_alert_of_it_is_muted() {
    let h = harness().await;
    done(&h.process(h.alert()).await);
    let click = dana_click(&h, TriageAction::Silence);
    let said = secmon::triage::on_click(&h.app, "contoso", serde_json::to_value(&click).unwrap(), now()).await.unwrap();
    assert!(said.contains("Silenced"), "{said}");
    // A double click makes no second silence.
    secmon::triage::on_click(&h.app, "contoso", serde_json::to_value(&click).unwrap(), now()).await.unwrap();
    let silences = secmon::notify::silence::read_all(h.store.as_ref()).await.unwrap();
    assert_eq!(silences.len(), 1, "{silences:?}");
    let s = &silences[0];
    assert_eq!(s.created_by, "dana@contoso.com");
    assert_eq!(s.tenant.as_deref(), Some("contoso"));
    assert_eq!(s.ends_at - s.starts_at, chrono::Duration::hours(24));
    assert!(s.when.contains("alert.detectorId == \"e0da400f-affd-43ef-b1d5-afc2eb6f2756\""), "{}", s.when);
    assert!(s.when.contains("yonif-lap3.middleeast.corp.microsoft.com"), "{}", s.when);
    assert!(s.comment.contains(ALERT) && s.comment.contains("dana@contoso.com"), "{}", s.comment);
    assert!(h.emu.patches().is_empty(), "nothing changes in Defender");
    let audit = h.audit().await;
    let acted: Vec<&Record> = audit.iter().filter(|r| r.action == Action::ActionByUser).collect();
    assert_eq!(acted.len(), 1);
    assert!(acted[0].detail.contains(&s.id) && acted[0].detail.contains("dana@contoso.com"), "{}", acted[0].detail);
    // The card says so, keeps its buttons; and a later version of the alert keeps saying so.
    let puts = h.calls("PUT");
    assert_eq!(puts.len(), 1);
    assert_eq!(texts(content(&puts[0]))[2], "Silenced for 24 h by Dana Lee, 10:42 UTC");
    save_card("bot-receiver-silenced", content(&puts[0]));
    let assigned = h.change("2026-12-01T11:00:00Z", json!({"assignedTo": "sam@contoso.com"}));
    done(&h.process(assigned).await);
    let puts = h.calls("PUT");
    assert_eq!(puts.len(), 2, "the alert's own card still follows Defender");
    assert_eq!(texts(content(&puts[1]))[2], "Silenced for 24 h by Dana Lee, 10:42 UTC");
    // Another alert of the same detector on the same device: muted, no card.
    let mut next = h.alert();
    next["id"] = json!("da637551227677560813_-000000001");
    next["lastUpdateDateTime"] = json!("2026-12-01T11:30:00Z");
    h.emu.seed_alerts(TENANT_ID, vec![next.clone()]);
    done(&h.process(next).await);
    assert_eq!(h.calls("POST").len(), 1, "silenced: no second card");
    let muted = h.audit().await.into_iter().filter(|r| r.action == Action::NotifySilenced).count();
    assert_eq!(muted, 1);
    // Another detector is not muted.
    let mut other = h.alert();
    other["id"] = json!("da637551227677560813_-000000002");
    other["detectorId"] = json!("another-detector");
    h.emu.seed_alerts(TENANT_ID, vec![other.clone()]);
    done(&h.process(other).await);
    assert_eq!(h.calls("POST").len(), 2);
}

#[tokio::test]
async fn a_click_outcome_stays_on_the_card_when_the_clicks_own_change_comes_back() {
    let h = harness().await;
    done(&h.process(h.alert()).await);
    let click = dana_click(&h, TriageAction::Acknowledge);
    secmon::triage::on_click(&h.app, "contoso", serde_json::to_value(&click).unwrap(), now()).await.unwrap();
    // The click's PATCH made a new version; the poll brings it to the receiver.
    let after = h.alert();
    assert_ne!(after["lastUpdateDateTime"].as_str().unwrap(), click.version);
    done(&h.process(after.clone()).await);
    let puts = h.calls("PUT");
    assert_eq!(puts.len(), 2, "the click's update, then the version's");
    assert_eq!(texts(content(&puts[0]))[1], "Acknowledged by Dana Lee, 10:42 UTC");
    let last = content(&puts[1]);
    let lines = texts(last);
    assert_eq!(lines[1], "Severity low, status inProgress, assigned to dana@contoso.com, incident 28282");
    assert_eq!(lines[2], "Acknowledged by Dana Lee, 10:42 UTC");
    assert_eq!(last["actions"][0]["data"]["version"], after["lastUpdateDateTime"], "buttons for the current version");
    assert_eq!(h.calls("POST").len(), 1);
}

/// The errors of loading a config with the receiver `receiver` (the lines under `teams:`).
fn load_errors(emu: &Emulator, receiver: &str) -> Vec<Issue> {
    let text = config_text(emu, receiver);
    match secmon::setup::load_str(&text, std::path::Path::new("t.yaml"), &|_: &str| None, now()) {
        Ok(loaded) => panic!("loaded: {:?}", loaded.warnings),
        Err(ConfigError::Invalid { issues, .. }) => issues,
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn config_errors_name_the_path() {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let cases = [
        ("      budget: { posts: 5, per: 12s }\n", "receivers.soc-bot.teams", "set webhook_url"),
        (
            "      webhook_url: https://x.logic.azure.com/w\n      bot: { name: soc, service_url: https://smba.trafficmanager.net/emea/, conversation_id: c }\n",
            "receivers.soc-bot.teams",
            "not both",
        ),
        (
            "      bot: { name: nobody, service_url: https://smba.trafficmanager.net/emea/, conversation_id: c }\n",
            "receivers.soc-bot.teams.bot.name",
            "no bot is named \"nobody\" in triage.bots",
        ),
        (
            "      bot: { name: soc, service_url: http://smba.trafficmanager.net/emea/, conversation_id: c }\n",
            "receivers.soc-bot.teams.bot.service_url",
            "https",
        ),
        (
            "      bot: { name: soc, service_url: https://smba.trafficmanager.net/emea/, conversation_id: '' }\n",
            "receivers.soc-bot.teams.bot.conversation_id",
            "chat id",
        ),
    ];
    for (receiver, path, says) in cases {
        let errors = load_errors(&emu, receiver);
        let found = errors.iter().filter(|i| i.path == path && i.message.contains(says)).count();
        assert_eq!(found, 1, "{path}: {errors:?}");
    }
    // A budget over the Bot Connector's limits is a warning.
    let text = config_text(
        &emu,
        "      bot: { name: soc, service_url: https://smba.trafficmanager.net/emea/, conversation_id: c }\n      budget: { posts: 50, per: 30s }\n",
    );
    let loaded = secmon::setup::load_str(&text, std::path::Path::new("t.yaml"), &|_: &str| None, now()).unwrap();
    let budget: Vec<&Issue> = loaded.warnings.iter().filter(|w| w.path == "receivers.soc-bot.teams.budget").collect();
    assert_eq!(budget.len(), 2, "{:?}", loaded.warnings);
}

/// Forgets every delivery claim, as if each worker had died after its send and before completing it.
async fn forget_claims(store: &SqliteStore) {
    for listed in store.scan(secmon::store::Space::Claims, "notify/", None, 100).await.unwrap() {
        assert!(store.delete_if(secmon::store::Space::Claims, &listed.key, &listed.etag).await.unwrap());
    }
}

#[tokio::test]
async fn a_worker_that_died_after_posting_leaves_no_second_card_and_one_that_died_mid_post_is_said() {
    let h = harness().await;
    let alert = h.alert();
    done(&h.process(alert.clone()).await);
    // Died after the post and its record, before the claim was completed: the retry finds the card.
    forget_claims(&h.store).await;
    done(&h.process(alert.clone()).await);
    assert_eq!(h.calls("POST").len(), 1, "no second card");
    assert!(h.calls("PUT").is_empty(), "the card shows this version already");
    let suppressed = h.audit().await.into_iter().filter(|r| r.action == Action::NotifySuppressed).count();
    assert_eq!(suppressed, 1);
    // Died between the Bot Connector taking the post and the record taking its id: the mark stands
    // (and nothing after the send ran: what the receiver was last told was not written either).
    h.store.delete(&secmon::store::keys::notify_last("contoso", ALERT, "soc-bot")).await.unwrap();
    let key = secmon::store::keys::botcard("contoso", ALERT, "soc-bot");
    let mark = secmon::notify::cards::BotCard {
        version: alert["lastUpdateDateTime"].as_str().unwrap().into(),
        posting_since: Some(now() - chrono::Duration::seconds(30)),
        ..Default::default()
    };
    h.store.put(&key, &serde_json::to_vec(&mark).unwrap()).await.unwrap();
    forget_claims(&h.store).await;
    // While it is fresh, the delivery waits (another worker may still be posting).
    secmon::respond::process_alert(&h.app, "contoso", alert.clone()).await.unwrap();
    let waited = standalone::drain(&h.app, 5).await;
    assert!(
        waited.iter().any(|r| matches!(r, WorkResult::Done(s) if s.contains("being told by another worker"))),
        "{waited:?}"
    );
    assert_eq!(h.calls("POST").len(), 1);
    // Once stale, it posts again, and says the card may be a second one.
    let stale = secmon::notify::cards::BotCard { posting_since: Some(now() - chrono::Duration::minutes(6)), ..mark };
    h.store.put(&key, &serde_json::to_vec(&stale).unwrap()).await.unwrap();
    forget_claims(&h.store).await;
    done(&h.process(alert).await);
    assert_eq!(h.calls("POST").len(), 2);
    let record = h.card_record(ALERT).await;
    assert!(record.maybe_duplicate && record.card.is_some() && record.posting_since.is_none(), "{record:?}");
}

#[tokio::test]
async fn a_bot_that_cannot_post_says_what_happened_without_its_secret_and_is_retried() {
    let wrong = "not-the-bots-secret~0123456789";
    let h = harness_with_secret(wrong).await;
    let results = h.process(h.alert()).await;
    assert!(results.iter().any(|r| matches!(r, WorkResult::Retry(_))), "{results:?}");
    assert!(h.emu.bot_calls().is_empty());
    let failed: Vec<Record> = h.audit().await.into_iter().filter(|r| r.action == Action::NotifyFailed).collect();
    assert_eq!(failed.len(), 1);
    let detail = &failed[0].detail;
    assert!(detail.contains("bot soc: bot token: HTTP 401"), "{detail}");
    assert!(detail.contains("\"retryable\":true"), "{detail}");
    for r in &results {
        assert!(!format!("{r:?}").contains(wrong), "{r:?}");
    }
    assert!(!detail.contains(wrong));
    // Nothing was posted, so the mark is cleared: the retry posts without suspecting a duplicate.
    let record = h.card_record(ALERT).await;
    assert!(record.posting_since.is_none() && record.card.is_none(), "{record:?}");
}

#[tokio::test]
async fn alerts_beyond_the_budget_go_out_in_one_digest_card_without_buttons() {
    let h = harness_with(BOT_SECRET, "      budget: { posts: 1, per: 1h }\n").await;
    done(&h.process(h.alert()).await);
    let mut second = h.alert();
    second["id"] = json!("da637551227677560813_-000000003");
    second["detectorId"] = json!("another-detector");
    h.emu.seed_alerts(TENANT_ID, vec![second.clone()]);
    done(&h.process(second).await);
    assert_eq!(h.calls("POST").len(), 1, "the budget is spent: the second alert waits");
    h.clock.advance(chrono::Duration::seconds(3601));
    secmon::notify::deliver::flush(&h.app).await;
    let posts = h.calls("POST");
    assert_eq!(posts.len(), 2, "{posts:?}");
    let digest = content(&posts[1]);
    assert!(!titles(digest).iter().any(|t| t == "Acknowledge"), "{digest}");
    assert!(digest.to_string().contains("the posting budget was spent"), "{digest}");
    assert!(digest.to_string().contains("000000003"), "{digest}");
    // Only the first alert has a card to update.
    assert!(h.card_record(ALERT).await.card.is_some());
    let none = secmon::notify::cards::read(h.store.as_ref(), "contoso", "da637551227677560813_-000000003", "soc-bot");
    assert!(none.await.unwrap().is_none());
}
