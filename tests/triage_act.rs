//! A card click on the worker, against the Graph emulator and its Bot Connector stand-in (over TLS, with
//! the real Graph client): each action end to end (PATCH, comment, `action_by_user` audit record, the card
//! updated in place), a double click acting once, and an alert that changed meanwhile left alone; and the
//! messaging endpoint's check in front of it: tokens the stand-in signed (or forged), other activities.
//! Who may act, and the endpoint over HTTP with the worker behind it: tests/bot_messages.rs.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::audit::{self, Action, Record};
use secmon::clock::ManualClock;
use secmon::intake::http::HttpRequest;
use secmon::respond::RespondError;
use secmon::store::sqlite::SqliteStore;
use secmon::triage::act::{Acted, Actor, BotClient, CardRef, Click, TriageAction, act};
use secmon::triage::botauth::{BotAuth, BotAuthSettings};
use secmon::triage::inbound::{Inbound, handle};
use secmon_emulator::{Emulator, Options};
use serde_json::{Value, json};

const TENANT_ID: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
const CLIENT_ID: &str = "0c5bd3d2-6b6e-4c47-9a0c-2b1f7f8d9e10";
const SECRET: &str = "triage-tests~secret";
const BOT_APP: &str = "7d1e3b5a-1111-4222-8333-444455556666";
const BOT_SECRET: &str = "bot-tests~secret";
const HIDDEN_FILE: &str = "da637551227677560813_-961444813";
const CONVERSATION: &str = "19:secops@thread.tacv2";

struct Harness {
    emu: Emulator,
    app: App,
    store: Arc<SqliteStore>,
    bot: BotClient,
    card_id: String,
}

fn now() -> DateTime<Utc> {
    "2026-12-01T10:42:00Z".parse().unwrap()
}

async fn harness() -> Harness {
    let emu = Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    emu.seed_samples(TENANT_ID);
    emu.add_client(TENANT_ID, CLIENT_ID, SECRET);
    emu.add_client(TENANT_ID, BOT_APP, BOT_SECRET);
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let http = common::rig::tls_client(&emu);
    let (graph, authority) = (emu.graph_url(), emu.authority_url());
    let text = format!(
        "graph_url: {graph}\nauthority_url: {authority}\ntenants:\n  - {{ id: {TENANT_ID}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }} }}\n"
    );
    let config =
        secmon::setup::load_str(&text, std::path::Path::new("test.yaml"), &|_: &str| None, now()).unwrap().config;
    let app = common::rig::app(config, store.clone(), http.clone(), clock.clone());
    let bot = BotClient {
        http: http.clone(),
        token_url: format!("{authority}/{TENANT_ID}/oauth2/v2.0/token"),
        app_id: BOT_APP.into(),
        app_secret: BOT_SECRET.into(),
    };
    // The card the click comes from, posted proactively as the receiver does.
    let token = emu.issue_token(TENANT_ID, BOT_APP);
    let posted: Value = http
        .post(format!("{}v3/conversations/{CONVERSATION}/activities", emu.bot_service_url()))
        .bearer_auth(token)
        .json(&json!({"type": "message", "attachments": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let card_id = posted["id"].as_str().unwrap().to_string();
    Harness { emu, app, store, bot, card_id }
}

impl Harness {
    fn click(&self, action: TriageAction) -> Click {
        let alert = self.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap();
        Click {
            tenant: "contoso".into(),
            alert_id: HIDDEN_FILE.into(),
            version: alert["lastUpdateDateTime"].as_str().unwrap().into(),
            action,
            actor: Actor {
                aad_object_id: "0b6c8e2a-dana-4c1e-9f00-000000000042".into(),
                upn: Some("dana@contoso.com".into()),
                name: "Dana Lee".into(),
            },
            card: Some(CardRef {
                service_url: self.emu.bot_service_url(),
                conversation_id: CONVERSATION.into(),
                activity_id: self.card_id.clone(),
            }),
            bot: None,
        }
    }

    async fn audit(&self) -> Vec<Record> {
        common::rig::audit_records(self.store.as_ref()).await
    }

    /// The texts of the updated cards, in order.
    fn card_updates(&self) -> Vec<String> {
        self.emu
            .bot_calls()
            .iter()
            .filter(|c| c.method == "PUT")
            .map(|c| {
                assert_eq!(c.activity_id, self.card_id);
                assert_eq!(c.client_id, BOT_APP, "updated with the bot's own token");
                let card = &c.activity["attachments"][0]["content"];
                assert_eq!(card["version"], "1.4");
                card["body"][1]["text"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

async fn clicked(action: TriageAction, patch: Value, status: &str, comment: &str, card: &str) {
    let h = harness().await;
    let click = h.click(action);
    let acted = act(&h.app, &h.bot, &click, now()).await.unwrap();
    let Acted::Changed { version_after } = acted else { panic!("{acted:?}") };
    assert_ne!(version_after, click.version);
    let patches = h.emu.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].2, patch);
    assert_eq!(h.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap()["status"], status);
    let comments: Vec<String> = h.emu.comments().into_iter().map(|c| c.2).collect();
    assert_eq!(comments, [comment]);
    let audit = h.audit().await;
    assert_eq!(audit.len(), 1);
    let r = &audit[0];
    assert_eq!(r.action, Action::ActionByUser);
    assert_eq!(r.alert_version, click.version, "the version before");
    assert_eq!(r.graph_status, Some(200));
    assert_eq!(r.status_after.as_deref(), Some(status));
    assert!(r.detail.contains("dana@contoso.com") && r.detail.contains(&click.actor.aad_object_id), "{}", r.detail);
    assert!(r.detail.contains(&format!("{} -> {version_after}", click.version)), "{}", r.detail);
    assert!(audit::verify(h.store.as_ref(), None).await.unwrap().iter().all(|v| v.ok()));
    assert_eq!(h.card_updates(), [card]);
}

#[tokio::test]
async fn acknowledge_assigns_to_the_person_and_sets_in_progress() {
    clicked(
        TriageAction::Acknowledge,
        json!({"status": "inProgress", "assignedTo": "dana@contoso.com"}),
        "inProgress",
        "Acknowledged by dana@contoso.com via secmon",
        "Acknowledged by Dana Lee, 10:42 UTC",
    )
    .await;
}

#[tokio::test]
async fn resolve_as_benign_resolves_with_the_chosen_classification() {
    clicked(
        TriageAction::ResolveBenign {
            classification: "informationalExpectedActivity".into(),
            determination: "securityTesting".into(),
        },
        json!({"status": "resolved", "classification": "informationalExpectedActivity",
               "determination": "securityTesting", "assignedTo": "dana@contoso.com"}),
        "resolved",
        "Resolved as benign by dana@contoso.com via secmon",
        "Resolved as benign by Dana Lee, 10:42 UTC",
    )
    .await;
}

#[tokio::test]
async fn true_positive_classifies_and_keeps_the_alert_open_for_the_response() {
    clicked(
        TriageAction::TruePositive { determination: "malware".into() },
        json!({"status": "inProgress", "classification": "truePositive", "determination": "malware",
               "assignedTo": "dana@contoso.com"}),
        "inProgress",
        "Marked as a true positive by dana@contoso.com via secmon",
        "Marked as a true positive by Dana Lee, 10:42 UTC",
    )
    .await;
}

#[tokio::test]
async fn a_double_click_changes_the_alert_once() {
    let h = harness().await;
    let click = h.click(TriageAction::Acknowledge);
    assert!(matches!(act(&h.app, &h.bot, &click, now()).await.unwrap(), Acted::Changed { .. }));
    // The same person, action and card version again (a second activity, or a redelivered message).
    assert_eq!(act(&h.app, &h.bot, &click, now()).await.unwrap(), Acted::AlreadyDone);
    assert_eq!(h.emu.patches().len(), 1);
    assert_eq!(h.emu.comments().len(), 1);
    assert_eq!(h.audit().await.len(), 1);
    assert_eq!(h.card_updates().len(), 1);
}

#[tokio::test]
async fn an_alert_resolved_by_someone_else_meanwhile_is_not_overridden_and_the_card_says_so() {
    let h = harness().await;
    let click = h.click(TriageAction::TruePositive { determination: "malware".into() });
    // Someone resolves it in Defender after the card was posted.
    let graph = h.app.graph.clone();
    let by_someone = secmon::graph::AlertUpdate {
        status: Some("resolved".into()),
        classification: Some("falsePositive".into()),
        determination: Some("notMalicious".into()),
        assigned_to: Some("sam@contoso.com".into()),
    };
    graph.update_alert("contoso", HIDDEN_FILE, &by_someone).await.unwrap();
    let before = h.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap();

    let acted = act(&h.app, &h.bot, &click, now()).await.unwrap();
    assert!(matches!(acted, Acted::Stale { .. }), "{acted:?}");
    assert_eq!(h.emu.patches().len(), 1, "only the other person's change");
    assert!(h.emu.comments().is_empty());
    assert_eq!(h.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap(), before, "not overridden");
    assert_eq!(
        h.card_updates(),
        ["Not changed: the alert changed in Defender since this card (now resolved, assigned to sam@contoso.com)"]
    );
    let audit = h.audit().await;
    assert_eq!(audit.len(), 1);
    assert!(audit[0].detail.contains("refused"), "{}", audit[0].detail);
    assert_eq!(audit[0].graph_status, None, "nothing was sent to Graph");
}

#[tokio::test]
async fn a_classification_that_is_not_benign_is_unprocessable_and_changes_nothing() {
    let h = harness().await;
    let click =
        h.click(TriageAction::ResolveBenign { classification: "truePositive".into(), determination: "malware".into() });
    let err = act(&h.app, &h.bot, &click, now()).await.unwrap_err();
    assert!(matches!(err, RespondError::Malformed(_)), "{err}");
    assert!(h.emu.patches().is_empty());
    assert!(h.card_updates().is_empty());
}

const DANA: &str = "0b6c8e2a-dana-4c1e-9f00-000000000042";

impl Harness {
    fn auth(&self) -> BotAuth {
        let settings =
            BotAuthSettings { openid_metadata: self.emu.bot_openid_url(), ..BotAuthSettings::global(BOT_APP) };
        BotAuth::new(settings, self.app.http.clone())
    }

    /// The activity Teams sends when Dana clicks "Resolve as benign" on the card.
    fn activity(&self, service_url: &str, from: &str) -> Value {
        let alert = self.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap();
        json!({
            "type": "message", "id": "1701234567890", "channelId": "msteams", "serviceUrl": service_url,
            "from": {"id": "29:1abc", "name": "Dana Lee", "aadObjectId": from},
            "conversation": {"id": CONVERSATION, "conversationType": "channel"},
            "recipient": {"id": format!("28:{BOT_APP}")},
            "replyToId": self.card_id,
            "value": {"secmon": "resolve-benign", "tenant": "contoso", "alert": HIDDEN_FILE,
                      "version": alert["lastUpdateDateTime"], "classification": "informationalExpectedActivity",
                      "determination": "securityTesting"},
        })
    }

    fn request(&self, token: Option<&str>, activity: &Value) -> HttpRequest {
        let mut req =
            HttpRequest { method: "POST".into(), body: activity.to_string().into_bytes(), ..HttpRequest::default() };
        if let Some(t) = token {
            req.headers.insert("authorization".into(), format!("Bearer {t}"));
        }
        req
    }

    fn token(&self) -> String {
        self.emu.bot_token(BOT_APP, &self.emu.bot_service_url(), now() - chrono::Duration::minutes(1))
    }
}

fn status(inbound: &Inbound) -> u16 {
    match inbound {
        Inbound::Answer(r) => r.status,
        other => panic!("not an answer: {other:?}"),
    }
}

#[tokio::test]
async fn a_click_through_the_endpoint_is_queued_then_acted_on() {
    let h = harness().await;
    let auth = h.auth();
    let activity = h.activity(&h.emu.bot_service_url(), DANA);
    let Inbound::Accepted(click) = handle(Some(&auth), &h.request(Some(&h.token()), &activity), now()).await else {
        panic!("not accepted")
    };
    assert_eq!(
        click.action,
        TriageAction::ResolveBenign {
            classification: "informationalExpectedActivity".into(),
            determination: "securityTesting".into()
        }
    );
    assert_eq!(click.actor.name, "Dana Lee");
    assert_eq!(click.card.as_ref().unwrap().activity_id, h.card_id);
    assert!(h.emu.patches().is_empty(), "the endpoint changes nothing itself");
    // What the worker gets from the queue.
    let queued: Click = serde_json::from_str(&serde_json::to_string(&click).unwrap()).unwrap();
    assert_eq!(queued, *click);
    assert!(matches!(act(&h.app, &h.bot, &queued, now()).await.unwrap(), Acted::Changed { .. }));
    assert_eq!(h.emu.patches().len(), 1);
    assert_eq!(h.card_updates(), ["Resolved as benign by Dana Lee, 10:42 UTC"]);
}

#[tokio::test]
async fn forged_expired_wrong_audience_and_missing_tokens_are_401_and_a_wrong_service_url_403() {
    let h = harness().await;
    let auth = h.auth();
    let service_url = h.emu.bot_service_url();
    let activity = h.activity(&service_url, DANA);
    let claims = |aud: &str, exp: i64| {
        json!({"iss": "https://api.botframework.com", "aud": aud, "serviceUrl": service_url,
               "nbf": now().timestamp() - 60, "exp": exp})
    };
    let forged = h.emu.forged_bot_token(&claims(BOT_APP, now().timestamp() + 3600));
    let expired = h.emu.bot_token_with(&claims(BOT_APP, now().timestamp() - 3600));
    let other_bot = h.emu.bot_token_with(&claims("another-bot", now().timestamp() + 3600));
    for (what, token) in
        [("forged", Some(forged.as_str())), ("expired", Some(&expired)), ("audience", Some(&other_bot)), ("none", None)]
    {
        let inbound = handle(Some(&auth), &h.request(token, &activity), now()).await;
        assert_eq!(status(&inbound), 401, "{what}");
        let Inbound::Answer(r) = inbound else { unreachable!() };
        assert_eq!(r.body, "unauthorized", "{what}: nothing echoed");
    }
    // A valid token, but the activity names another service URL (where the bot would then post).
    let elsewhere = h.activity("https://smba.trafficmanager.net/evil/", DANA);
    assert_eq!(status(&handle(Some(&auth), &h.request(Some(&h.token()), &elsewhere), now()).await), 403);
    assert!(h.emu.patches().is_empty() && h.emu.bot_calls().len() == 1, "nothing happened but the card's post");
}

#[tokio::test]
async fn other_activities_and_bad_requests_change_nothing() {
    let h = harness().await;
    let auth = h.auth();
    let mut chat = h.activity(&h.emu.bot_service_url(), DANA);
    chat.as_object_mut().unwrap().remove("value");
    chat["text"] = json!("hello bot");
    assert_eq!(status(&handle(Some(&auth), &h.request(Some(&h.token()), &chat), now()).await), 200);
    let mut unknown = h.activity(&h.emu.bot_service_url(), DANA);
    unknown["value"]["secmon"] = json!("delete-everything");
    assert_eq!(status(&handle(Some(&auth), &h.request(Some(&h.token()), &unknown), now()).await), 400);
    let mut get = h.request(Some(&h.token()), &chat);
    get.method = "GET".into();
    assert_eq!(status(&handle(Some(&auth), &get, now()).await), 405);
    let garbage = HttpRequest { method: "POST".into(), body: b"{".to_vec(), ..HttpRequest::default() };
    assert_eq!(status(&handle(Some(&auth), &garbage, now()).await), 400);
}

/// Writes a card for scripts/check-cards.sh (the Adaptive Cards parser, 1.4, and the docs' screenshots).
fn save_card(name: &str, card: &Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cards");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(card).unwrap()).unwrap();
}

#[tokio::test]
async fn the_card_buttons_submit_what_the_endpoint_reads_and_the_cards_are_saved_for_checking() {
    let h = harness().await;
    let alert = secmon::alert::Alert::from_value(h.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap()).unwrap();
    let before = secmon::triage::act::action_card("contoso", &alert);
    assert_eq!(before["version"], "1.4");
    let titles: Vec<&str> =
        before["actions"].as_array().unwrap().iter().map(|a| a["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Acknowledge", "Resolve as benign", "True positive", "Silence 24 h", "Open in Defender"]);
    assert_eq!(before["actions"][3]["data"]["secmon"], "silence");
    assert!(before["actions"][4]["url"].as_str().unwrap().starts_with("https://security.microsoft.com/alerts/"));
    // What Teams submits for "Resolve": the button's data merged with the inputs' values.
    let resolve = &before["actions"][1]["card"];
    let mut value = resolve["actions"][0]["data"].clone();
    for input in resolve["body"].as_array().unwrap() {
        value[input["id"].as_str().unwrap()] = input["value"].clone();
    }
    let mut activity = h.activity(&h.emu.bot_service_url(), DANA);
    activity["value"] = value;
    let inbound = handle(Some(&h.auth()), &h.request(Some(&h.token()), &activity), now()).await;
    let Inbound::Accepted(click) = inbound else { panic!("{inbound:?}") };
    assert_eq!(click.version, alert.version());
    // And for "True positive".
    let tp = &before["actions"][2]["card"];
    let mut value = tp["actions"][0]["data"].clone();
    value["tpDetermination"] = tp["body"][0]["value"].clone();
    let mut tp_activity = h.activity(&h.emu.bot_service_url(), DANA);
    tp_activity["value"] = value;
    let inbound = handle(Some(&h.auth()), &h.request(Some(&h.token()), &tp_activity), now()).await;
    let Inbound::Accepted(tp_click) = inbound else { panic!("{inbound:?}") };
    assert_eq!(tp_click.action, TriageAction::TruePositive { determination: "malware".into() });
    // And for "Silence 24 h", which has no inputs.
    let mut silence_activity = h.activity(&h.emu.bot_service_url(), DANA);
    silence_activity["value"] = before["actions"][3]["data"].clone();
    let inbound = handle(Some(&h.auth()), &h.request(Some(&h.token()), &silence_activity), now()).await;
    let Inbound::Accepted(silence_click) = inbound else { panic!("{inbound:?}") };
    assert_eq!(silence_click.action, TriageAction::Silence);
    assert!(matches!(act(&h.app, &h.bot, &click, now()).await.unwrap(), Acted::Changed { .. }));
    let after = &h.emu.bot_calls().last().unwrap().activity["attachments"][0]["content"].clone();
    save_card("bot-before", &before);
    save_card("bot-after", after);
}

#[tokio::test]
async fn a_retry_whose_patch_reached_graph_finishes_without_a_second_patch() {
    let h = harness().await;
    let click = h.click(TriageAction::Acknowledge);
    // The first attempt's PATCH reached Graph, then the worker died before the comment and the record.
    let same = secmon::graph::AlertUpdate {
        status: Some("inProgress".into()),
        assigned_to: Some("dana@contoso.com".into()),
        ..Default::default()
    };
    h.app.graph.update_alert("contoso", HIDDEN_FILE, &same).await.unwrap();
    let acted = act(&h.app, &h.bot, &click, now()).await.unwrap();
    assert!(matches!(acted, Acted::Changed { .. }), "{acted:?}");
    assert_eq!(h.emu.patches().len(), 1, "no second PATCH");
    assert_eq!(h.emu.comments().len(), 1);
    let audit = h.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, Action::ActionByUser);
    assert!(audit[0].detail.contains("finished by a retry"), "{}", audit[0].detail);
    assert_eq!(h.card_updates(), ["Acknowledged by Dana Lee, 10:42 UTC"]);
}
