//! Teams through a Workflows webhook ("When a Teams webhook request is received"): one message with one
//! Adaptive Card, version 1.4 at most (cards declaring 1.5 do not render when a Workflows flow posts
//! them), never over Teams' message limit of 28,672 bytes.

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::budget::Budgeted;
use super::cards::{self, Before};
use super::http::post;
use super::template::Templates;
use super::view::{Digest, View};
use super::{Notifier, NotifyError, Payload, SendContext};
use crate::alert::Alert;
use crate::config::{Cloud, Issue};
use crate::graph::Retry;
use crate::graph::retry::RetryPolicy;
use crate::triage::act::{BotClient, BotError, CardRef};

/// Teams refuses messages over 28,672 bytes (`MessageSizeExceeded`).
pub const TEAMS_MESSAGE_LIMIT: usize = 28_672;
/// What secmon sends at most: a margin under [`TEAMS_MESSAGE_LIMIT`] for what the flow adds around it.
pub const MAX_MESSAGE_BYTES: usize = 28_000;
/// The newest Adaptive Card version a Workflows post renders: 1.5 shows "We're sorry, this card
/// couldn't be displayed".
pub const MAX_CARD_VERSION: (u32, u32) = (1, 4);

/// How many evidence entries per list a card tries first, then fewer until it fits.
const CUTS: [usize; 7] = [25, 10, 5, 3, 2, 1, 0];

pub use crate::config::receivers::TeamsConfig;

/// A built Teams receiver.
#[derive(Debug, Clone)]
pub struct Teams {
    name: String,
    url: String,
    template: String,
    budget: Budgeted,
    /// For an authenticated trigger: the tenant whose credential gets the token, and the token's scope.
    auth: Option<(String, String)>,
    /// How hard a send tries before the queue takes over.
    pub retry: RetryPolicy,
    /// Set for a `teams: { bot: … }` receiver: it posts through the bot instead of the webhook.
    bot: Option<BotTarget>,
}

/// Where and as whom a Teams bot receiver posts: the bot's registration and the conversation.
#[derive(Clone)]
pub struct BotTarget {
    /// The bot's name in `triage.bots`.
    pub bot: String,
    /// The bot's app id.
    app_id: String,
    /// The bot's client secret.
    app_secret: String,
    /// The bot's token endpoint.
    token_url: String,
    /// The Bot Connector service URL.
    pub service_url: String,
    /// The channel or chat id.
    pub conversation_id: String,
    /// How long one call may take (the receiver's `timeout`).
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for BotTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("BotTarget")
            .field("bot", &self.bot)
            .field("service_url", &self.service_url)
            .field("conversation_id", &self.conversation_id)
            .finish_non_exhaustive()
    }
}

impl BotTarget {
    /// The target of the receiver at `path` (its `bot` settings), with its bot from `triage.bots`.
    pub fn new(config: &crate::config::Config, teams: &TeamsConfig, path: &str) -> Result<Option<BotTarget>, Issue> {
        let Some(settings) = &teams.bot else { return Ok(None) };
        let bot = config.triage.bots.get(&settings.name).ok_or_else(|| {
            Issue::error(
                format!("{path}.teams.bot.name"),
                format!("no bot is named {:?} in triage.bots", settings.name),
            )
        })?;
        Ok(Some(BotTarget {
            bot: settings.name.clone(),
            app_id: bot.app_id.clone(),
            app_secret: bot.app_secret.clone(),
            token_url: format!("{}/{}/oauth2/v2.0/token", config.authority(), bot.tenant_id),
            service_url: settings.service_url.clone(),
            conversation_id: settings.conversation_id.clone(),
            timeout: teams.timeout,
        }))
    }

    /// The bot's outbound client over `http`.
    pub fn client(&self, http: &reqwest::Client) -> BotClient {
        BotClient {
            http: http.clone(),
            token_url: self.token_url.clone(),
            app_id: self.app_id.clone(),
            app_secret: self.app_secret.clone(),
        }
    }

    /// Posts `message` (an activity; with the `secmon` facts of the alert when it is one alert's card,
    /// without for a digest) and, for an alert's card, keeps where it is ([`cards`]).
    async fn send(&self, cx: &SendContext<'_>, receiver: &str, message: &Value) -> Result<u16, NotifyError> {
        let content = &message["attachments"][0]["content"];
        let err = |e: BotError| NotifyError::new(receiver, format!("bot {}: {}", self.bot, e.message), e.retry);
        let store_err =
            |e: crate::store::StoreError| NotifyError::new(receiver, format!("store: {e}"), Retry::Retryable);
        let client = self.client(cx.http);
        let facts = message.get("secmon");
        let (Some(alert), Some(version)) = (
            facts.and_then(|f| f.get("alert")).and_then(Value::as_str),
            facts.and_then(|f| f.get("version")).and_then(Value::as_str),
        ) else {
            // A digest: no buttons, nothing to update later.
            client.post(&self.service_url, &self.conversation_id, content, self.timeout).await.map_err(err)?;
            return Ok(201);
        };
        match cards::begin(cx.store, cx.tenant, alert, receiver, version, cx.now).await.map_err(store_err)? {
            Before::Posting => Err(NotifyError::new(
                receiver,
                format!("the card of {alert} is being posted by another worker"),
                Retry::Retryable,
            )),
            // Posted by another worker since this delivery looked: update that card instead.
            Before::Card(card) => {
                let at = card.card.expect("a card");
                client.put(&at, content, self.timeout).await.map_err(err)?;
                cards::shown(cx.store, cx.tenant, alert, receiver, version).await.map_err(store_err)?;
                Ok(200)
            }
            Before::Post { maybe_duplicate } => {
                if maybe_duplicate {
                    tracing::warn!(
                        receiver,
                        alert,
                        "an earlier post of this card was cut short (the worker stopped): posting again, Teams may show it twice"
                    );
                }
                let posted = client.post(&self.service_url, &self.conversation_id, content, self.timeout).await;
                let id = match posted {
                    Ok(id) => id,
                    Err(e) => {
                        // Nothing was posted (or the answer never came): the retry posts.
                        if let Err(s) = cards::abandoned(cx.store, cx.tenant, alert, receiver).await {
                            tracing::warn!(receiver, alert, "posting mark not cleared: {s}");
                        }
                        return Err(err(e));
                    }
                };
                let at = CardRef {
                    service_url: self.service_url.clone(),
                    conversation_id: self.conversation_id.clone(),
                    activity_id: id,
                };
                // The card is in Teams: a record that cannot be written is logged, never a reason to post
                // again (its mark then stands, and a later version posts a new card after POSTING_STALE).
                if let Err(e) = cards::posted(cx.store, cx.tenant, alert, receiver, at, version).await {
                    tracing::error!(receiver, alert, "the card was posted but where it is was not kept: {e}");
                }
                Ok(201)
            }
        }
    }

    /// Replaces the card at `at` with `content`; returns 200.
    pub async fn update(
        &self,
        http: &reqwest::Client,
        receiver: &str,
        at: &CardRef,
        content: &Value,
    ) -> Result<u16, NotifyError> {
        self.client(http).put(at, content, self.timeout).await.map_err(|e| {
            NotifyError::new(receiver, format!("bot {}: updating the card: {}", self.bot, e.message), e.retry)
        })?;
        Ok(200)
    }
}

impl Teams {
    /// Builds the receiver `name` in `cloud`, compiling its template override (errors at `path`).
    pub fn new(
        name: &str,
        config: &TeamsConfig,
        cloud: Cloud,
        templates: &mut Templates,
        path: &str,
    ) -> Result<Teams, Issue> {
        let template = match &config.template {
            Some(source) => {
                let tname = format!("{name}/card.json");
                templates
                    .add(&tname, source)
                    .map_err(|e| Issue::error(format!("{path}.teams.template"), format!("does not compile: {e}")))?;
                tname
            }
            None => "builtin/card.json".to_string(),
        };
        Ok(Teams {
            name: name.to_string(),
            url: config.webhook_url.clone().unwrap_or_default(),
            template,
            budget: Budgeted { name: format!("teams/{name}"), budget: config.budget() },
            auth: config.auth.as_ref().map(|a| {
                let audience = a.audience.as_deref().unwrap_or(cloud.flow_audience());
                // The audience as written, trailing slash included, is what the token's `aud` carries.
                (a.tenant.clone(), format!("{audience}/.default"))
            }),
            retry: RetryPolicy { timeout: config.timeout, ..RetryPolicy::receivers() },
            bot: None,
        })
    }

    /// Makes this receiver post through `bot` (a `teams: { bot: … }` receiver).
    pub fn with_bot(mut self, bot: Option<BotTarget>) -> Teams {
        self.bot = bot;
        self
    }

    fn card(&self, templates: &Templates, view: &View) -> Result<Value, NotifyError> {
        self.render_card(templates, &self.template, view)
    }

    fn render_card<C: serde::Serialize>(
        &self,
        templates: &Templates,
        name: &str,
        cx: &C,
    ) -> Result<Value, NotifyError> {
        let text = templates
            .render(name, cx)
            .map_err(|e| NotifyError::new(&self.name, format!("card template: {e}"), Retry::Permanent))?;
        let card: Value = serde_json::from_str(&text).map_err(|e| {
            NotifyError::new(&self.name, format!("card template did not produce JSON: {e}"), Retry::Permanent)
        })?;
        check_card(&card).map_err(|e| NotifyError::new(&self.name, e, Retry::Permanent))?;
        Ok(card)
    }
}

#[async_trait]
impl Notifier for Teams {
    fn kind(&self) -> &'static str {
        "teams"
    }

    /// The Workflows message for `view`: the card, with evidence cut ("and N more") until the whole
    /// message fits in [`MAX_MESSAGE_BYTES`].
    fn render(&self, templates: &Templates, view: &View, alert: &Alert) -> Result<Payload, NotifyError> {
        if self.bot.is_some() {
            // The triage card, and what the send keeps with the card's location.
            let mut message = message(crate::triage::act::action_card(&view.tenant, alert));
            message["secmon"] = json!({"alert": alert.id, "version": alert.version()});
            return Ok(Payload::Json(message));
        }
        let base = view.for_card();
        let mut last = 0;
        for max in CUTS {
            let mut v = base.clone();
            v.cut(max);
            v.group.truncate(max.max(1) * 4);
            let card = self.card(templates, &v)?;
            let message = message(card);
            last = serde_json::to_vec(&message).expect("JSON").len();
            if last <= MAX_MESSAGE_BYTES {
                return Ok(Payload::Json(message));
            }
        }
        Err(NotifyError::new(
            &self.name,
            format!(
                "the card is {last} bytes even without evidence; Teams takes {TEAMS_MESSAGE_LIMIT} and secmon sends at most {MAX_MESSAGE_BYTES}: shorten the template"
            ),
            Retry::Permanent,
        ))
    }

    fn budget(&self) -> Option<Budgeted> {
        Some(self.budget.clone())
    }

    fn bot(&self) -> Option<&BotTarget> {
        self.bot.as_ref()
    }

    /// The digest card: as many lines as fit in [`MAX_MESSAGE_BYTES`], the rest wait ("and N more").
    fn render_digest(&self, templates: &Templates, digest: &mut Digest) -> Result<Value, NotifyError> {
        loop {
            let message = message(self.render_card(templates, "builtin/digest.json", &digest.for_card())?);
            let size = serde_json::to_vec(&message).expect("JSON").len();
            if size <= MAX_MESSAGE_BYTES {
                return Ok(message);
            }
            if digest.lines.len() <= 1 {
                return Err(NotifyError::new(
                    &self.name,
                    format!("a digest of one alert is {size} bytes; Teams takes {TEAMS_MESSAGE_LIMIT}"),
                    Retry::Permanent,
                ));
            }
            // Lines are about the same size: keep the share that fits, and at least one fewer.
            let lines = digest.lines.len();
            digest.keep((lines * MAX_MESSAGE_BYTES / size).clamp(1, lines - 1));
        }
    }

    /// POSTs the message to the Workflows URL (with `Authorization: Bearer` when the receiver names a
    /// credential); 429 waits `Retry-After`, 5xx backs off.
    async fn send(&self, cx: &SendContext<'_>, message: &Payload) -> Result<u16, NotifyError> {
        if let Some(bot) = &self.bot {
            return bot.send(cx, &self.name, &message.json()).await;
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some((tenant, scope)) = &self.auth {
            let token = cx.graph.token_for(tenant, scope).await.map_err(|e| {
                NotifyError::new(&self.name, format!("token for the Workflows trigger: {}", e.message), e.retry)
            })?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| NotifyError::new(&self.name, "the token is not a header value", Retry::Permanent))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        post(cx.http, &self.name, &self.url, headers, message.bytes().into_owned(), &self.retry).await
    }
}

/// Wraps a card in the message a Workflows webhook takes.
pub fn message(card: Value) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

/// Checks what Teams insists on: an `AdaptiveCard` of version [`MAX_CARD_VERSION`] or lower, with a
/// body array.
pub fn check_card(card: &Value) -> Result<(), String> {
    if card.get("type").and_then(Value::as_str) != Some("AdaptiveCard") {
        return Err("the card's type must be \"AdaptiveCard\"".into());
    }
    let version = card.get("version").and_then(Value::as_str).unwrap_or("");
    let parsed = version.split_once('.').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some((major, minor)) if major == MAX_CARD_VERSION.0 && minor <= MAX_CARD_VERSION.1 => {}
        _ => {
            let (a, b) = MAX_CARD_VERSION;
            return Err(format!(
                "card version {version:?}: cards posted through Workflows render up to {a}.{b} (1.5 shows an error box)"
            ));
        }
    }
    if !card.get("body").is_some_and(Value::is_array) {
        return Err("the card needs a body array".into());
    }
    Ok(())
}
