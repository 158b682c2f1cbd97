//! The bot's messaging endpoint, host-neutral: one inbound activity (a card's `Action.Submit`) checked
//! and turned into a [`Click`] for the queue.
//!
//! In order, and nothing of the activity is trusted before the token is:
//! 1. `POST` only, at most [`MAX_ACTIVITY_BYTES`], a JSON activity with `serviceUrl` and `channelId`;
//! 2. the Bot Connector token ([`BotAuth::verify`] of the bot the token is for; none: 401): 401 or 403
//!    with a bare status text, nothing echoed;
//! 3. a message that is not a secmon card action (a chat message to the bot, a conversation update) is
//!    answered 200 and ignored;
//! 4. [`Inbound::Accepted`] with the click: the caller queues it and answers 200 at once (Teams waits a
//!    few seconds at most; the Graph work is the worker's, [`super::act`]).
//!
//! Who may act ([`AllowList`], then the Entra groups) is checked by the worker ([`super::allowed`]):
//! a refusal is replied with the bot's credential and audited, and the edge holds neither that
//! credential nor the right to write the audit trail.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::act::{Actor, CardRef, Click, TriageAction};
use super::botauth::{BotAuth, Refusal};
use crate::intake::http::{HttpRequest, HttpResponse};

/// The largest activity accepted (a card action is about 2 KB).
pub const MAX_ACTIVITY_BYTES: usize = 64 * 1024;

/// What a refused person is told.
pub const REFUSAL: &str = "You are not allowed to act on secmon alerts.";

/// Who may act: Entra object ids or user principal names, compared without case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<String>);

impl AllowList {
    /// Whether `actor` is on the list (by object id, or by UPN when the activity carried one).
    pub fn allows(&self, actor: &Actor) -> bool {
        self.0.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(&actor.aad_object_id)
                || actor.upn.as_deref().is_some_and(|u| allowed.eq_ignore_ascii_case(u))
        })
    }
}

/// What became of one inbound request.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Answer this and do nothing else (refused token, bad request, not a secmon action).
    Answer(HttpResponse),
    /// Queue this click and answer 200.
    Accepted(Box<Click>),
}

/// Checks one request to the messaging endpoint; `auth` is the check of the bot the token is for (`None`:
/// the token names no configured bot, 401). See the module doc.
pub async fn handle(auth: Option<&BotAuth>, req: &HttpRequest, now: DateTime<Utc>) -> Inbound {
    let answer = |status: u16, text: &str| Inbound::Answer(HttpResponse::text(status, text));
    if req.method != "POST" {
        return Inbound::Answer(HttpResponse::text(405, "POST only").with_header("Allow", "POST"));
    }
    if req.body.len() > MAX_ACTIVITY_BYTES {
        return answer(413, "activity too large");
    }
    let Ok(activity) = serde_json::from_slice::<Value>(&req.body) else {
        return answer(400, "the body is not a JSON activity");
    };
    let text = |field: &str| activity.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
    let (service_url, channel) = (text("serviceUrl"), text("channelId"));
    if service_url.is_empty() || channel.is_empty() {
        return answer(400, "the activity has no serviceUrl or channelId");
    }
    let verified = match auth {
        Some(auth) => auth.verify(req.header("authorization"), &service_url, &channel, now).await,
        None => Err(Refusal::Unauthorized("the token is for no configured bot (triage.bots.*.app_id)".into())),
    };
    if let Err(refusal) = verified {
        tracing::warn!(status = refusal.status(), "bot activity refused: {refusal}");
        let status = refusal.status();
        let text = match status {
            401 => "unauthorized",
            403 => "forbidden",
            _ => "cannot check the token now",
        };
        return answer(status, text);
    }
    // From here the activity is the Bot Connector's.
    let value = activity.get("value").cloned().unwrap_or(Value::Null);
    if text("type") != "message" || value.get("secmon").is_none() {
        return answer(200, "ignored: not a secmon card action");
    }
    let from = activity.get("from").cloned().unwrap_or(Value::Null);
    let field = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
    let Some(aad_object_id) = field(&from, "aadObjectId") else {
        return answer(400, "the activity names no Entra user (from.aadObjectId)");
    };
    let actor =
        Actor { aad_object_id, upn: field(&from, "userPrincipalName"), name: field(&from, "name").unwrap_or_default() };
    let conversation = activity.get("conversation").and_then(|c| field(c, "id"));
    let (Some(conversation_id), Some(activity_id)) = (conversation, field(&activity, "replyToId")) else {
        return answer(400, "the activity has no conversation.id or replyToId");
    };
    let card = CardRef { service_url, conversation_id, activity_id };
    match click(&value, actor, card) {
        Ok(click) => Inbound::Accepted(Box::new(click)),
        Err(why) => answer(400, &why),
    }
}

/// The click the card's `Action.Submit` data names: `{"secmon": "acknowledge" | "resolve-benign" |
/// "true-positive" | "silence", "tenant", "alert", "version"}` with the card's choices: `classification`
/// and `determination` (resolve as benign) or `tpDetermination` (true positive).
fn click(value: &Value, actor: Actor, card: CardRef) -> Result<Click, String> {
    let field = |f: &str| value.get(f).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let need = |f: &str| field(f).ok_or_else(|| format!("the card action has no {f}"));
    let action = match need("secmon")?.as_str() {
        "acknowledge" => TriageAction::Acknowledge,
        "resolve-benign" => TriageAction::ResolveBenign {
            classification: need("classification")?,
            determination: need("determination")?,
        },
        "true-positive" => TriageAction::TruePositive { determination: need("tpDetermination")? },
        "silence" => TriageAction::Silence,
        other => return Err(format!("unknown card action {other:?}")),
    };
    action.check()?;
    Ok(Click {
        tenant: need("tenant")?,
        alert_id: need("alert")?,
        version: need("version")?,
        action,
        actor,
        card: Some(card),
        bot: None,
    })
}
