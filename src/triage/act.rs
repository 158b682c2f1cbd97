//! What a card click does, on the worker: read → compare → PATCH → comment → audit → card updated.
//!
//! A [`Click`] is what the inbound endpoint accepted: the alert, the version the card showed, the action
//! and the person (Entra object id, UPN, display name from the activity), and where the card is (the
//! conversation and the card's activity id). [`act`] then:
//! 1. claims `triage/{tenant}/{alert}/{version}/{action}/{user}` ([`crate::store::once`]): a double
//!    click, or a redelivered message, acts once;
//! 2. reads the alert from Graph; when it is no longer the version the card showed (someone resolved
//!    it meanwhile, its severity changed), nothing is changed: the card says so (unless it is exactly
//!    as this click would leave it: a retry whose PATCH had reached Graph finishes without a second one);
//! 3. PATCHes status, classification, determination and assignedTo, then comments "Resolved as benign by
//!    dana@contoso.com via secmon";
//! 4. appends an `action_by_user` audit record: the person, the version before and after, Graph's status;
//! 5. updates the card in place through the bot ("Resolved as benign by Dana Lee, 10:42").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::alert::{Alert, AlertStatus};
use crate::app::App;
use crate::audit::{Action, Record};
use crate::graph::{AlertUpdate, Retry};
use crate::respond::RespondError;
use crate::store::{Once, keys, once};

/// How long one worker may take over a click before another may try it again.
const LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// A button of the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum TriageAction {
    /// Assign to the person who clicked, status `inProgress`.
    Acknowledge,
    /// Resolve as benign with the classification and determination chosen on the card.
    ResolveBenign {
        /// `informationalExpectedActivity` or `falsePositive`.
        classification: String,
        /// A determination that goes with it (`securityTesting`, `notMalicious`, …).
        determination: String,
    },
    /// A true positive: classified, assigned to the person, left open (`inProgress`) for the response.
    TruePositive {
        /// The determination chosen on the card (`malware`, `phishing`, …).
        determination: String,
    },
    /// A silence of this alert's detector on its devices and users for 24 hours, made by the person
    /// (`super::silence`); nothing changes in Defender.
    Silence,
}

/// Classifications a person may choose for "Resolve as benign".
pub const BENIGN_CLASSIFICATIONS: [&str; 2] = ["informationalExpectedActivity", "falsePositive"];

impl TriageAction {
    /// The action's name in keys and audit records.
    pub fn name(&self) -> &'static str {
        match self {
            TriageAction::Acknowledge => "acknowledge",
            TriageAction::ResolveBenign { .. } => "resolve-benign",
            TriageAction::TruePositive { .. } => "true-positive",
            TriageAction::Silence => "silence",
        }
    }

    /// The past tense for comments and cards ("Resolved as benign").
    pub fn done(&self) -> &'static str {
        match self {
            TriageAction::Acknowledge => "Acknowledged",
            TriageAction::ResolveBenign { .. } => "Resolved as benign",
            TriageAction::TruePositive { .. } => "Marked as a true positive",
            TriageAction::Silence => "Silenced for 24 h",
        }
    }

    /// The PATCH, with the alert assigned to `upn`.
    fn update(&self, upn: &str) -> AlertUpdate {
        let (status, classification, determination) = match self {
            TriageAction::Acknowledge => ("inProgress", None, None),
            TriageAction::ResolveBenign { classification, determination } => {
                ("resolved", Some(classification.clone()), Some(determination.clone()))
            }
            TriageAction::TruePositive { determination } => {
                ("inProgress", Some("truePositive".to_string()), Some(determination.clone()))
            }
            // Never sent: a silence changes nothing in Defender.
            TriageAction::Silence => return AlertUpdate::default(),
        };
        AlertUpdate { status: Some(status.into()), classification, determination, assigned_to: Some(upn.into()) }
    }

    /// Whether the choice on the card is one Graph accepts for this button.
    pub fn check(&self) -> Result<(), String> {
        match self {
            TriageAction::ResolveBenign { classification, .. }
                if !BENIGN_CLASSIFICATIONS.contains(&classification.as_str()) =>
            {
                Err(format!("{classification:?} is not a benign classification"))
            }
            _ => Ok(()),
        }
    }
}

/// The person who clicked, as the activity names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// Entra object id (`from.aadObjectId`).
    pub aad_object_id: String,
    /// User principal name, when the activity carries it.
    #[serde(default)]
    pub upn: Option<String>,
    /// Display name (`from.name`).
    #[serde(default)]
    pub name: String,
}

impl Actor {
    /// Who, for comments and `assignedTo`: the UPN, else the object id.
    pub fn principal(&self) -> &str {
        self.upn.as_deref().unwrap_or(&self.aad_object_id)
    }
}

/// Where the card is: the conversation and the card's own activity id (the click's `replyToId`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CardRef {
    /// The Bot Connector service URL the activity came from.
    pub service_url: String,
    /// The conversation (channel thread or chat) id.
    pub conversation_id: String,
    /// The card's activity id.
    pub activity_id: String,
}

/// One accepted click, as queued for the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Click {
    /// The configured tenant (by name).
    pub tenant: String,
    /// The alert.
    pub alert_id: String,
    /// The alert version the card showed (`lastUpdateDateTime`).
    pub version: String,
    /// What was clicked.
    #[serde(flatten)]
    pub action: TriageAction,
    /// Who clicked.
    pub actor: Actor,
    /// The card; `None` for a click on the triage page ([`super::page`]), which has no card to update.
    #[serde(default)]
    pub card: Option<CardRef>,
    /// The bot (its name in `triage.bots`) the click came through: the one whose token it carried.
    #[serde(default)]
    pub bot: Option<String>,
}

/// What a click came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acted {
    /// The alert was changed in Graph.
    Changed {
        /// The version after the PATCH.
        version_after: String,
    },
    /// The alert changed in Defender since the card was posted: nothing was changed.
    Stale {
        /// The current version.
        current_version: String,
    },
    /// The same person's same action on the same version already ran (a double click).
    AlreadyDone,
    /// A silence was made (*Silence 24 h*); Defender was not changed.
    Silenced {
        /// The silence's id.
        silence: String,
    },
}

/// Updates a card in place: the bot's side of [`act`].
#[async_trait::async_trait]
pub trait Cards: Send + Sync {
    /// Replaces the card at `card` with `content` (an Adaptive Card).
    async fn update(&self, card: &CardRef, content: &Value) -> Result<(), String>;

    /// Replies `text` to the card in its conversation.
    async fn reply(&self, card: &CardRef, text: &str) -> Result<(), String>;
}

/// No cards: a click from the triage page has none to update.
pub struct NoCards;

#[async_trait::async_trait]
impl Cards for NoCards {
    async fn update(&self, _card: &CardRef, _content: &Value) -> Result<(), String> {
        Ok(())
    }

    async fn reply(&self, _card: &CardRef, _text: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Acts on one click: once per person, action and alert version. See the module doc.
pub async fn act(app: &App, cards: &dyn Cards, click: &Click, now: DateTime<Utc>) -> Result<Acted, RespondError> {
    click.action.check().map_err(RespondError::Malformed)?;
    let key =
        keys::triage(&click.tenant, &click.alert_id, &click.version, click.action.name(), &click.actor.aad_object_id);
    let store = app.store.as_ref();
    let acted = once(store, &key, LEASE, || act_once(app, click, now))
        .await
        .map_err(|e| RespondError::Retry(format!("store: {e}")))?;
    let (acted, card, outcome) = match acted {
        Once::Done(done) => done,
        Once::AlreadyDone => return Ok(Acted::AlreadyDone),
        Once::Held => return Err(RespondError::Retry(format!("{key} is being acted on by another worker"))),
        Once::Failed(e) => return Err(e),
    };
    // The change is made and recorded; a card Teams does not take now is logged, not retried, so that a
    // retry never acts twice.
    if let Some(at) = &click.card {
        if let Err(why) = cards.update(at, &card).await {
            tracing::warn!(alert = %click.alert_id, "the card was not updated: {}", crate::redact::redact(&why));
        }
        // The outcome stays on the card when a later version of the alert updates it (`notify::cards`).
        crate::notify::cards::note_outcome(store, &click.tenant, &click.alert_id, at, &outcome).await;
    }
    Ok(acted)
}

async fn act_once(app: &App, click: &Click, now: DateTime<Utc>) -> Result<(Acted, Value, String), RespondError> {
    if click.action == TriageAction::Silence {
        return super::silence::silence_once(app, click, now).await;
    }
    let graph_retry = |what: &str, e: crate::graph::GraphError| {
        let text = format!("{what} {}: {}", click.alert_id, crate::redact::redact(&e.to_string()));
        match e.retry {
            Retry::Retryable => RespondError::Retry(text),
            Retry::Permanent => RespondError::Malformed(text),
        }
    };
    let current = app.graph.get_alert(&click.tenant, &click.alert_id).await.map_err(|e| graph_retry("reading", e))?;
    let current = Alert::from_value(current).map_err(|e| RespondError::Malformed(e.to_string()))?;
    let update = click.action.update(click.actor.principal());
    // A retry of this click whose PATCH reached Graph (the worker died, or the audit failed, after it)
    // finds the alert as this click left it: it finishes (comment, record, card) without a second PATCH.
    let resumed = current.version() != click.version && applied(&update, &current);
    if current.version() != click.version && !resumed {
        let status = current.status().as_str().to_string();
        let assigned = current.raw().get("assignedTo").and_then(Value::as_str).unwrap_or("nobody").to_string();
        let outcome = format!(
            "Not changed: the alert changed in Defender since this card (now {status}, assigned to {assigned})"
        );
        let record = Record {
            status_before: Some(status.clone()),
            status_after: Some(status),
            detail: format!(
                "{} by {} refused: the card showed version {}, Defender has {}",
                click.action.name(),
                click.actor.principal(),
                click.version,
                current.version()
            ),
            ..Record::new(&click.alert_id, current.version(), Action::ActionByUser)
        };
        app.audit.append(&click.tenant, now, record).await.map_err(|e| RespondError::Retry(e.to_string()))?;
        let card = card(&current, &outcome);
        return Ok((Acted::Stale { current_version: current.version().to_string() }, card, outcome));
    }

    let after = if resumed {
        current.clone()
    } else {
        let updated = app
            .graph
            .update_alert(&click.tenant, &click.alert_id, &update)
            .await
            .map_err(|e| graph_retry("updating", e))?;
        Alert::from_value(updated).map_err(|e| RespondError::Malformed(e.to_string()))?
    };
    let comment = format!("{} by {} via secmon", click.action.done(), click.actor.principal());
    let comment_error = app.graph.add_comment(&click.tenant, &click.alert_id, &comment).await.err();
    let mut detail = format!(
        "{} by {} (object id {}): version {} -> {}; Graph answered 200 ({}){}",
        click.action.done(),
        click.actor.principal(),
        click.actor.aad_object_id,
        click.version,
        after.version(),
        serde_json::to_string(&update).expect("updates serialize"),
        if resumed { "; finished by a retry, the PATCH had reached Graph" } else { "" }
    );
    if let Some(e) = &comment_error {
        detail.push_str(&format!("; the comment was refused: {}", crate::redact::redact(&e.to_string())));
    }
    let record = Record {
        status_before: Some(current.status().as_str().to_string()),
        status_after: Some(after.status().as_str().to_string()),
        graph_status: Some(200),
        detail,
        ..Record::new(&click.alert_id, &click.version, Action::ActionByUser)
    };
    app.audit.append(&click.tenant, now, record).await.map_err(|e| RespondError::Retry(e.to_string()))?;
    let who = if click.actor.name.is_empty() { click.actor.principal() } else { &click.actor.name };
    let outcome = format!("{} by {who}, {}", click.action.done(), now.format("%H:%M UTC"));
    let resolved = after.status() == AlertStatus::Resolved;
    tracing::info!(alert = %click.alert_id, resolved, "{outcome}");
    let card = card(&after, &outcome);
    Ok((Acted::Changed { version_after: after.version().to_string() }, card, outcome))
}

/// Determinations offered with "Resolve as benign" (the wire names of the v1.0 metadata).
pub const BENIGN_DETERMINATIONS: [&str; 5] =
    ["securityTesting", "lineOfBusinessApplication", "confirmedActivity", "notMalicious", "notEnoughDataToValidate"];
/// Determinations offered with "True positive".
pub const TRUE_POSITIVE_DETERMINATIONS: [&str; 7] = [
    "malware",
    "phishing",
    "compromisedAccount",
    "maliciousUserActivity",
    "unwantedSoftware",
    "multiStagedAttack",
    "other",
];

/// Whether `alert` already is as `update` leaves it (every field the update sets has that value).
fn applied(update: &AlertUpdate, alert: &Alert) -> bool {
    let is = |field: &str, want: &Option<String>| {
        want.as_deref().is_none_or(|w| alert.raw().get(field).and_then(Value::as_str) == Some(w))
    };
    is("status", &update.status)
        && is("classification", &update.classification)
        && is("determination", &update.determination)
        && is("assignedTo", &update.assigned_to)
}

/// The bot's card for an alert, before any click (Adaptive Card 1.4): the title, severity and status,
/// and the buttons. Each `Action.Submit` carries `{"secmon": action, "tenant", "alert", "version"}`, and
/// the choice sets add `classification` and `determination` (resolve) or `tpDetermination` (true
/// positive: input ids are unique across a card and its show-cards); [`super::inbound`] reads exactly that.
/// "Silence 24 h" submits `{"secmon": "silence", …}`.
pub fn action_card(tenant: &str, alert: &Alert) -> Value {
    let data =
        |action: &str| json!({"secmon": action, "tenant": tenant, "alert": alert.id, "version": alert.version()});
    let choices = |values: &[&str]| values.iter().map(|v| json!({"title": v, "value": v})).collect::<Vec<_>>();
    let actions = vec![
        json!({"type": "Action.Submit", "title": "Acknowledge", "data": data("acknowledge")}),
        json!({"type": "Action.ShowCard", "title": "Resolve as benign", "card": {
            "type": "AdaptiveCard",
            "body": [
                {"type": "Input.ChoiceSet", "id": "classification", "label": "Classification", "isRequired": true,
                 "errorMessage": "Choose a classification", "value": BENIGN_CLASSIFICATIONS[0],
                 "choices": choices(&BENIGN_CLASSIFICATIONS)},
                {"type": "Input.ChoiceSet", "id": "determination", "label": "Determination", "isRequired": true,
                 "errorMessage": "Choose a determination", "value": BENIGN_DETERMINATIONS[0],
                 "choices": choices(&BENIGN_DETERMINATIONS)},
            ],
            "actions": [{"type": "Action.Submit", "title": "Resolve", "data": data("resolve-benign")}],
        }}),
        json!({"type": "Action.ShowCard", "title": "True positive", "card": {
            "type": "AdaptiveCard",
            "body": [
                {"type": "Input.ChoiceSet", "id": "tpDetermination", "label": "Determination", "isRequired": true,
                 "errorMessage": "Choose a determination", "value": TRUE_POSITIVE_DETERMINATIONS[0],
                 "choices": choices(&TRUE_POSITIVE_DETERMINATIONS)},
            ],
            "actions": [{"type": "Action.Submit", "title": "Confirm", "data": data("true-positive")}],
        }}),
        json!({"type": "Action.Submit", "title": "Silence 24 h", "data": data("silence")}),
    ];
    alert_card(alert, facts_line(alert), actions)
}

/// The line under a card's title: severity, status, assignment and incident, as Defender has them now.
pub fn facts_line(alert: &Alert) -> Value {
    let field = |name: &str| alert.raw().get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    let mut text = format!("Severity {}, status {}", field("severity").unwrap_or("unknown"), alert.status().as_str());
    if let Some(who) = field("assignedTo") {
        text.push_str(&format!(", assigned to {who}"));
    }
    match alert.raw().get("incidentId") {
        Some(Value::String(id)) if !id.is_empty() => text.push_str(&format!(", incident {id}")),
        Some(Value::Number(id)) => text.push_str(&format!(", incident {id}")),
        _ => {}
    }
    json!({"type": "TextBlock", "text": text, "wrap": true, "isSubtle": true})
}

/// The card of an alert as Defender has it now, for the bot's in-place update after a later version:
/// the buttons (carrying this version) while it is open, none once resolved; `outcome` is the last
/// click's ("Resolved as benign by Dana Lee, 10:42 UTC"), kept under the facts.
pub fn live_card(tenant: &str, alert: &Alert, outcome: Option<&str>) -> Value {
    let mut card = if alert.status() == AlertStatus::Resolved {
        alert_card(alert, facts_line(alert), Vec::new())
    } else {
        action_card(tenant, alert)
    };
    if let Some(outcome) = outcome
        && let Some(body) = card.get_mut("body").and_then(Value::as_array_mut)
    {
        body.push(json!({"type": "TextBlock", "text": outcome, "wrap": true}));
    }
    card
}

/// The card after a click: the alert's title, the outcome, and the link to Defender (Adaptive Card 1.4).
pub fn card(alert: &Alert, outcome: &str) -> Value {
    alert_card(alert, json!({"type": "TextBlock", "text": outcome, "wrap": true}), Vec::new())
}

/// A 1.4 card of one alert: its title, one line under it, `actions`, then the link to Defender.
fn alert_card(alert: &Alert, line: Value, mut actions: Vec<Value>) -> Value {
    if let Some(url) = alert.raw().get("alertWebUrl").and_then(Value::as_str) {
        actions.push(json!({"type": "Action.OpenUrl", "title": "Open in Defender", "url": url}));
    }
    json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "text": alert.title_or_id(), "weight": "Bolder", "size": "Medium", "wrap": true},
            line,
        ],
        "actions": actions,
    })
}

/// The bot's outbound side: updates a card with `PUT {serviceUrl}/v3/conversations/{id}/activities/{activityId}`,
/// authenticated with the bot's own client-credentials token (scope `https://api.botframework.com/.default`).
#[derive(Debug, Clone)]
pub struct BotClient {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The token endpoint (`{authority}/{tenant}/oauth2/v2.0/token`).
    pub token_url: String,
    /// The bot's app id.
    pub app_id: String,
    /// The bot's client secret.
    pub app_secret: String,
}

/// The scope of the bot's outbound token.
pub const BOT_SCOPE: &str = "https://api.botframework.com/.default";

impl BotClient {
    async fn token(&self) -> Result<String, String> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.app_id.as_str()),
            ("client_secret", self.app_secret.as_str()),
            ("scope", BOT_SCOPE),
        ];
        let resp = self.http.post(&self.token_url).form(&form).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("bot token: HTTP {}", resp.status()));
        }
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        body.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "bot token: no access_token".into())
    }
}

/// Why a post or an update through the Bot Connector failed, and whether a retry may help (a timeout,
/// a refused connection, 429, 5xx, a token endpoint that failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotError {
    /// What happened, without the token or the secret.
    pub message: String,
    /// Whether to try again.
    pub retry: Retry,
}

impl BotError {
    fn of_status(what: &str, status: reqwest::StatusCode) -> BotError {
        let retry = if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
            Retry::Retryable
        } else {
            Retry::Permanent
        };
        BotError { message: format!("{what}: HTTP {status}"), retry }
    }

    fn transport(what: &str, e: reqwest::Error) -> BotError {
        BotError { message: format!("{what}: {}", crate::redact::redact(&e.to_string())), retry: Retry::Retryable }
    }
}

impl BotClient {
    /// Posts a new message with the card `content` to the conversation, proactively
    /// (`POST {serviceUrl}/v3/conversations/{conversationId}/activities`); returns the new activity's id.
    pub async fn post(
        &self,
        service_url: &str,
        conversation_id: &str,
        content: &Value,
        timeout: std::time::Duration,
    ) -> Result<String, BotError> {
        let token = self.token().await.map_err(|message| BotError { message, retry: Retry::Retryable })?;
        let url = format!(
            "{}/v3/conversations/{}/activities",
            service_url.trim_end_matches('/'),
            crate::store::keys::part(conversation_id)
        );
        let activity = json!({
            "type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": content}],
        });
        let what = "POST activity";
        let request = self.http.post(&url).bearer_auth(token).json(&activity).timeout(timeout);
        let resp = request.send().await.map_err(|e| BotError::transport(what, e))?;
        if !resp.status().is_success() {
            return Err(BotError::of_status(what, resp.status()));
        }
        let body: Value = resp.json().await.map_err(|e| BotError::transport(what, e))?;
        body.get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .ok_or(BotError { message: format!("{what}: the answer has no activity id"), retry: Retry::Permanent })
    }

    /// Replaces the card at `card` with `content`
    /// (`PUT {serviceUrl}/v3/conversations/{conversationId}/activities/{activityId}`).
    pub async fn put(&self, card: &CardRef, content: &Value, timeout: std::time::Duration) -> Result<(), BotError> {
        let token = self.token().await.map_err(|message| BotError { message, retry: Retry::Retryable })?;
        let url = format!(
            "{}/v3/conversations/{}/activities/{}",
            card.service_url.trim_end_matches('/'),
            crate::store::keys::part(&card.conversation_id),
            crate::store::keys::part(&card.activity_id)
        );
        let activity = json!({
            "type": "message",
            "id": card.activity_id,
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": content}],
        });
        let what = "PUT activity";
        let request = self.http.put(&url).bearer_auth(token).json(&activity).timeout(timeout);
        let resp = request.send().await.map_err(|e| BotError::transport(what, e))?;
        if !resp.status().is_success() {
            return Err(BotError::of_status(what, resp.status()));
        }
        Ok(())
    }
}

/// How long one call of a click's card update may take.
const CARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[async_trait::async_trait]
impl Cards for BotClient {
    async fn update(&self, card: &CardRef, content: &Value) -> Result<(), String> {
        self.put(card, content, CARD_TIMEOUT).await.map_err(|e| e.message)
    }

    async fn reply(&self, card: &CardRef, text: &str) -> Result<(), String> {
        let token = self.token().await?;
        let url = format!(
            "{}/v3/conversations/{}/activities",
            card.service_url.trim_end_matches('/'),
            crate::store::keys::part(&card.conversation_id)
        );
        let activity = json!({"type": "message", "text": text, "replyToId": card.activity_id});
        let resp = self.http.post(&url).bearer_auth(token).json(&activity).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("POST activity: HTTP {}", resp.status()));
        }
        Ok(())
    }
}
