//! The `bot-messages` function end to end over HTTP: the Bot Connector stand-in delivers a signed card
//! action to `/api/bot-messages` of the App's router (as `secmon serve` / standalone serve it), the
//! click is queued, and the standalone worker (`host::standalone::drain`) acts on it: Graph PATCH and
//! comment, the `action_by_user` record, the card updated. And what must not act: forged and expired
//! tokens, a person outside the allowed users and groups, a bot used for a tenant it does not serve,
//! a double click, no bot configured.

mod common;

use common::triage::{self, BOT_APP, BOT_B, DANA, HIDDEN_FILE, SOC_GROUP, TENANT_ID, Triage, now};
use secmon::audit::Action;
use secmon::host::standalone::{WorkResult, drain};
use secmon::store::{ALERTS_QUEUE, Queue, poison_name};
use serde_json::json;

const SAM: &str = "1c2d3e4f-sam0-4c1e-9f00-000000000077";
const MALLORY: &str = "9f9f9f9f-0000-4000-8000-00000000beef";
const ALLOWED: &str =
    "  allowed: { users: [0B6C8E2A-DANA-4C1E-9F00-000000000042], groups: [6f1b2c3d-0000-4000-8000-000000000001] }\n";

/// Serves the App's router on a loopback port; returns the endpoint's URL.
async fn serve(h: &Triage) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = secmon::functions::router(h.app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}/api/bot-messages")
}

/// Lets the worker read Entra group memberships (only then: least privilege).
fn grant_group_read(h: &Triage) {
    h.emu.set_client_roles(TENANT_ID, triage::CLIENT_ID, &["SecurityAlert.ReadWrite.All", "GroupMember.Read.All"]);
}

fn done(results: &[WorkResult]) -> Vec<&str> {
    results
        .iter()
        .map(|r| match r {
            WorkResult::Done(line) => line.as_str(),
            other => panic!("not done: {other:?}"),
        })
        .collect()
}

fn group_checks(h: &Triage) -> Vec<serde_json::Value> {
    h.emu
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/checkMemberGroups"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_signed_click_is_queued_answered_at_once_and_acted_on_by_the_worker_once() {
    let h = triage::start(ALLOWED).await;
    let url = serve(&h).await;
    let activity = h.activity("contoso", DANA);
    let (status, body) = h.emu.send_activity(&url, BOT_APP, &activity).await.unwrap();
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(h.queued().await, 1, "the click is on the alerts queue");
    assert!(h.emu.patches().is_empty(), "the edge changes nothing itself");

    let results = drain(&h.app, 10).await;
    let lines = done(&results);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("resolve-benign on") && lines[0].contains("Changed"), "{lines:?}");
    let patches = h.emu.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].2,
        json!({"status": "resolved", "classification": "informationalExpectedActivity",
               "determination": "securityTesting", "assignedTo": DANA})
    );
    let comments: Vec<String> = h.emu.comments().into_iter().map(|c| c.2).collect();
    assert_eq!(comments, [format!("Resolved as benign by {DANA} via secmon")]);
    let audit = h.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, Action::ActionByUser);
    assert_eq!(audit[0].graph_status, Some(200));
    assert_eq!(h.card_updates(), ["Resolved as benign by Dana Lee, 10:42 UTC"]);
    assert!(group_checks(&h).is_empty(), "a listed user needs no group check");
    let update = h.emu.bot_calls().into_iter().find(|c| c.method == "PUT").unwrap();
    assert_eq!(update.client_id, BOT_APP, "the card is updated as the bot the click came through");

    // The same click again (a double click, or the connector retrying): accepted, acted on once.
    let (status, _) = h.emu.send_activity(&url, BOT_APP, &activity).await.unwrap();
    assert_eq!(status, 200);
    let lines = drain(&h.app, 10).await;
    assert!(done(&lines)[0].contains("AlreadyDone"), "{lines:?}");
    assert_eq!(h.emu.patches().len(), 1);
    assert_eq!(h.emu.comments().len(), 1);
    assert_eq!(h.audit().await.len(), 1);
    assert_eq!(h.card_updates().len(), 1);
}

#[tokio::test]
async fn forged_expired_missing_and_unknown_audience_tokens_are_401_and_nothing_is_queued() {
    let h = triage::start(ALLOWED).await;
    let url = serve(&h).await;
    let activity = h.activity("contoso", DANA);
    let service_url = h.emu.bot_service_url();
    let claims = |aud: &str, exp: i64| {
        json!({"iss": "https://api.botframework.com", "aud": aud, "serviceUrl": service_url,
               "nbf": now().timestamp() - 60, "exp": exp})
    };
    let forged = h.emu.forged_bot_token(&claims(BOT_APP, now().timestamp() + 3600));
    let expired = h.emu.bot_token_with(&claims(BOT_APP, now().timestamp() - 3600));
    let unknown = h.emu.bot_token_with(&claims("0f0f0f0f-not-a-configured-bot", now().timestamp() + 3600));
    for (what, token) in
        [("forged", Some(&forged)), ("expired", Some(&expired)), ("audience", Some(&unknown)), ("none", None)]
    {
        let (status, body) = h.emu.post_activity_with(&url, token.map(String::as_str), &activity).await.unwrap();
        assert_eq!((status, body.as_str()), (401, "unauthorized"), "{what}: nothing of the token is echoed");
    }
    // A valid token for another service URL than the activity names.
    let mut elsewhere = activity.clone();
    elsewhere["serviceUrl"] = json!("https://smba.trafficmanager.net/evil/");
    let token = h.emu.bot_token(BOT_APP, &service_url, now() - chrono::Duration::minutes(1));
    let (status, body) = h.emu.post_activity_with(&url, Some(&token), &elsewhere).await.unwrap();
    assert_eq!((status, body.as_str()), (403, "forbidden"));
    assert_eq!(h.queued().await, 0, "nothing queued");
    assert!(h.emu.patches().is_empty());
}

#[tokio::test]
async fn a_person_neither_listed_nor_in_a_group_is_refused_politely_audited_and_nothing_changes() {
    let h = triage::start(ALLOWED).await;
    grant_group_read(&h);
    h.emu.add_member(TENANT_ID, MALLORY, &["0000aaaa-0000-4000-8000-000000000999"]);
    let url = serve(&h).await;
    let activity = h.activity("contoso", MALLORY);
    let (status, _) = h.emu.send_activity(&url, BOT_APP, &activity).await.unwrap();
    assert_eq!(status, 200, "the connector is answered; the worker refuses");
    let lines = drain(&h.app, 10).await;
    assert!(done(&lines)[0].contains("refused, not allowed"), "{lines:?}");
    // A double click is refused once.
    h.emu.send_activity(&url, BOT_APP, &activity).await.unwrap();
    let lines = drain(&h.app, 10).await;
    assert!(done(&lines)[0].contains("(already)"), "{lines:?}");
    assert_eq!(h.replies(), ["You are not allowed to act on secmon alerts."]);
    let reply = h.emu.bot_calls().into_iter().find(|c| c.activity.get("replyToId").is_some()).unwrap();
    assert_eq!(reply.activity["replyToId"], h.card_id, "in the card's thread");
    assert!(h.emu.patches().is_empty() && h.emu.comments().is_empty() && h.card_updates().is_empty());
    assert_eq!(group_checks(&h), [json!({"groupIds": [SOC_GROUP]})]);
    let audit = h.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, Action::ActionByUser);
    assert!(audit[0].detail.contains("refused") && audit[0].detail.contains(MALLORY), "{}", audit[0].detail);
    assert_eq!(audit[0].graph_status, None, "nothing was sent to Graph's alerts");
}

#[tokio::test]
async fn a_member_of_an_allowed_group_acts_and_the_membership_is_asked_once() {
    let h = triage::start(ALLOWED).await;
    grant_group_read(&h);
    h.emu.add_member(TENANT_ID, SAM, &[SOC_GROUP]);
    let url = serve(&h).await;
    let activity = h.activity("contoso", SAM);
    let (status, _) = h.emu.send_activity(&url, BOT_APP, &activity).await.unwrap();
    assert_eq!(status, 200);
    let lines = drain(&h.app, 10).await;
    assert!(done(&lines)[0].contains("Changed"), "{lines:?}");
    assert_eq!(h.emu.patches().len(), 1);
    assert_eq!(h.emu.alert(TENANT_ID, HIDDEN_FILE).unwrap()["status"], "resolved");
    assert!(h.replies().is_empty(), "no refusal");
    // A second click within the cache's lifetime does not ask Graph again.
    h.emu.send_activity(&url, BOT_APP, &activity).await.unwrap();
    drain(&h.app, 10).await;
    assert_eq!(group_checks(&h).len(), 1);
}

#[tokio::test]
async fn a_group_check_graph_refuses_is_poisoned_with_the_permission_named_and_nothing_changes() {
    let h = triage::start(ALLOWED).await;
    // The Graph app registration was not granted GroupMember.Read.All.
    let url = serve(&h).await;
    h.emu.send_activity(&url, BOT_APP, &h.activity("contoso", SAM)).await.unwrap();
    let results = drain(&h.app, 10).await;
    let [WorkResult::Poisoned(why)] = results.as_slice() else { panic!("{results:?}") };
    assert!(why.contains("GroupMember.Read.All"), "{why}");
    assert_eq!(h.store.len(&poison_name(ALERTS_QUEUE)).await.unwrap(), 1, "kept, not dropped");
    assert!(h.emu.patches().is_empty() && h.replies().is_empty());
}

#[tokio::test]
async fn a_click_through_a_bot_for_a_tenant_it_does_not_serve_is_refused_and_not_queued() {
    let h = triage::start(ALLOWED).await;
    let url = serve(&h).await;
    // soc serves contoso only; fabrikam-bot serves fabrikam only.
    let (status, _) = h.emu.send_activity(&url, BOT_APP, &h.activity("fabrikam", DANA)).await.unwrap();
    assert_eq!(status, 403);
    let (status, _) = h.emu.send_activity(&url, BOT_B, &h.activity("contoso", DANA)).await.unwrap();
    assert_eq!(status, 403);
    let (status, _) = h.emu.send_activity(&url, BOT_APP, &h.activity("no-such-tenant", DANA)).await.unwrap();
    assert_eq!(status, 403);
    assert_eq!(h.queued().await, 0);
    // Through the bot that serves it, the same person's fabrikam click is queued, naming that bot.
    let (status, _) = h.emu.send_activity(&url, BOT_B, &h.activity("fabrikam", DANA)).await.unwrap();
    assert_eq!(status, 200);
    let msg = h.store.receive(ALERTS_QUEUE, 10, std::time::Duration::from_secs(30)).await.unwrap();
    let message: serde_json::Value = serde_json::from_slice(&msg[0].body).unwrap();
    assert_eq!(message["click"]["bot"], "fabrikam-bot", "{message}");
    assert_eq!(message["tenant"], "fabrikam");
}

#[tokio::test]
async fn without_a_bot_every_request_is_404() {
    let h = triage::start(ALLOWED).await;
    let mut config = (*h.app.config).clone();
    config.triage = Default::default();
    let app = h.app.with_config(config).unwrap();
    let resp = secmon::functions::http(
        &app,
        "bot-messages",
        secmon::intake::http::HttpRequest {
            method: "POST".into(),
            body: h.activity("contoso", DANA).to_string().into_bytes(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((resp.status, resp.body.as_str()), (404, "no bot is configured"));
    assert_eq!(h.queued().await, 0);
}

#[tokio::test]
async fn a_click_on_an_alert_that_changed_in_defender_meanwhile_changes_nothing_and_the_card_says_so() {
    let h = triage::start(ALLOWED).await;
    let url = serve(&h).await;
    let (status, _) = h.emu.send_activity(&url, BOT_APP, &h.activity("contoso", DANA)).await.unwrap();
    assert_eq!(status, 200);
    // Someone changes the alert in Defender while the click waits on the queue.
    assert!(h.emu.touch_alert(TENANT_ID, HIDDEN_FILE, now() + chrono::Duration::seconds(5)));
    let lines = drain(&h.app, 10).await;
    assert!(done(&lines)[0].contains("Stale"), "{lines:?}");
    assert!(h.emu.patches().is_empty() && h.emu.comments().is_empty());
    let updates = h.card_updates();
    assert_eq!(updates.len(), 1);
    assert!(updates[0].starts_with("Not changed: the alert changed in Defender since this card"), "{updates:?}");
}
