//! Triage from where the alert is told (issue 22): the Teams bot's inbound side.
//!
//! - [`botauth`]: the Bot Connector token check every inbound activity passes first.
//! - [`inbound`]: the messaging endpoint: token, the click for the queue.
//! - [`bot_messages`]: the `bot-messages` function (edge): picks the bot by the token's audience, checks
//!   the activity ([`inbound`]) and the bot's tenants, queues the click.
//! - [`on_click`] (worker): the queue message: who may act ([`allowed`]), then [`act`].
//! - [`act`]: what a card click does on the worker: read, compare, PATCH, comment, audit, card updated.
//! - [`silence`]: the *Silence 24 h* button: a silence of the alert's detector on its devices and users.

pub mod act;
pub mod allowed;
pub mod botauth;
pub mod inbound;
pub mod silence;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
pub mod page;

use chrono::{DateTime, Utc};
use serde_json::Value;

use self::act::Cards;
use self::botauth::{BotAuth, BotAuthSettings};
use crate::app::App;
use crate::audit::{Action, Record};
use crate::config::Config;
use crate::config::graph::Cloud;
use crate::config::triage::BotConfig;
use crate::intake::Message;
use crate::intake::http::{HttpRequest, HttpResponse};
use crate::respond::RespondError;

/// What the triage side keeps in the process: each bot's token check (with its cached signing keys) and
/// the group checks' answers. Built empty with the [`App`]; filled on first use.
#[derive(Debug, Default)]
pub struct Triage {
    auths: Mutex<HashMap<String, Arc<BotAuth>>>,
    /// The answers of `checkMemberGroups`, reused for [`allowed::MEMBERSHIP_TTL`].
    pub memberships: allowed::Memberships,
}

impl Triage {
    /// The token check of the bot `name`, made on first use with `http` and kept (its keys are cached
    /// inside it).
    pub fn auth(&self, config: &Config, name: &str, bot: &BotConfig, http: &reqwest::Client) -> Arc<BotAuth> {
        let mut auths = self.auths.lock().expect("bot auth cache lock");
        auths
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(BotAuth::new(settings(config, bot), http.clone())))
            .clone()
    }
}

/// The token check's settings for `bot`: its audience, and the OpenID metadata of its cloud unless the
/// bot names one.
pub fn settings(config: &Config, bot: &BotConfig) -> BotAuthSettings {
    let metadata = match config.cloud {
        Cloud::Usgov | Cloud::Usgovdod => botauth::OPENID_METADATA_US_GOV,
        Cloud::Global | Cloud::China => botauth::OPENID_METADATA,
    };
    BotAuthSettings {
        openid_metadata: bot.openid_metadata.clone().unwrap_or_else(|| metadata.to_string()),
        ..BotAuthSettings::global(&bot.app_id)
    }
}

/// The HTTP function `bot-messages` (edge): the Bot Connector delivers each activity here. The token's
/// audience picks the bot (`triage.bots.*.app_id`), whose check verifies it ([`inbound::handle`]); a card
/// action through a bot that does not serve its tenant is 403; an accepted click is queued as
/// [`Message::Triage`] and answered 200 at once (Teams waits 5 s at most). Nothing here calls Graph: who
/// may act is checked by the worker ([`on_click`]). Without any bot configured every request is 404.
pub async fn bot_messages(app: &App, req: HttpRequest) -> HttpResponse {
    let limit = app.config.webhook.time_limit;
    let resp = match tokio::time::timeout(limit, bot_messages_within(app, &req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!("bot-messages: not done within {limit:?}");
            HttpResponse::text(503, "retry").with_header("Retry-After", "1")
        }
    };
    resp.with_header("X-Content-Type-Options", "nosniff").with_header("Cache-Control", "no-store")
}

async fn bot_messages_within(app: &App, req: &HttpRequest) -> HttpResponse {
    let triage = &app.config.triage;
    if triage.bots.is_empty() {
        tracing::warn!("bot-messages: a request arrived but no bot is configured (triage.bots); answered 404");
        return HttpResponse::text(404, "no bot is configured");
    }
    let now = app.clock.now();
    let audiences = botauth::audiences(req.header("authorization"));
    let bot = audiences.iter().find_map(|aud| triage.bot_by_app_id(aud));
    let auth = bot.map(|(name, config)| app.triage.auth(&app.config, name, config, &app.http));
    let mut click = match inbound::handle(auth.as_deref(), req, now).await {
        inbound::Inbound::Answer(resp) => return resp,
        inbound::Inbound::Accepted(click) => *click,
    };
    let Some((name, config)) = bot else {
        return HttpResponse::text(401, "unauthorized");
    };
    if app.config.tenant(&click.tenant).is_none() || !config.serves(&click.tenant) {
        tracing::warn!(
            bot = name,
            tenant = %click.tenant,
            user = %click.actor.aad_object_id,
            "bot-messages: a card action for a tenant this bot does not serve (triage.bots.{name}.tenants) was refused"
        );
        return HttpResponse::text(403, "forbidden");
    }
    click.bot = Some(name.to_string());
    let message = Message::Triage {
        tenant: click.tenant.clone(),
        click: serde_json::to_value(&click).expect("clicks serialize"),
    };
    if let Err(e) = message.send(app.store.as_ref(), app.queue.as_ref()).await {
        tracing::error!("bot-messages: the click could not be queued: {}", crate::redact::redact(&e.to_string()));
        return HttpResponse::text(503, "retry").with_header("Retry-After", "1");
    }
    tracing::info!(bot = name, tenant = %click.tenant, alert = %click.alert_id, action = click.action.name(), "click queued");
    HttpResponse::text(200, "")
}

/// Works one `triage` queue message: checks the click, checks that its person may act ([`allowed`]),
/// acts on it ([`act::act`]) and updates its card with the identity of the bot it came through. A click
/// that cannot be read, is for another tenant than its message, names no configured bot, or came through
/// a bot that does not serve its tenant is unprocessable (poison), never dropped. A person who may not
/// act gets [`inbound::REFUSAL`] in the card's thread, the refusal is audited, and nothing changes.
pub async fn on_click(app: &App, tenant: &str, click: Value, now: DateTime<Utc>) -> Result<String, RespondError> {
    let click: act::Click =
        serde_json::from_value(click).map_err(|e| RespondError::Malformed(format!("triage click: {e}")))?;
    if click.tenant != tenant {
        return Err(RespondError::Malformed(format!(
            "triage click for tenant {} on a message for tenant {tenant}",
            click.tenant
        )));
    }
    // --- triage page (issue 22): a click from the triage page has no card and came through no bot.
    if click.card.is_none() {
        return on_page_click(app, &click, now).await;
    }
    let bots = &app.config.triage.bots;
    let name = match (&click.bot, bots.len()) {
        (Some(name), _) => name.clone(),
        (None, 1) => bots.keys().next().cloned().unwrap_or_default(),
        (None, _) => return Err(RespondError::Malformed("a triage click names no bot".into())),
    };
    let Some(config) = bots.get(&name) else {
        return Err(RespondError::Malformed(format!(
            "a triage click came through bot {name}, which is not configured"
        )));
    };
    if !config.serves(tenant) {
        return Err(RespondError::Malformed(format!(
            "bot {name} does not serve tenant {tenant} (triage.bots.{name}.tenants)"
        )));
    }
    let bot = bot_client(app, config);
    let Some(allowed) = allowed::check(app, app.config.triage.allowed_for(config), tenant, &click.actor, now).await?
    else {
        return refuse(app, &bot, &click, now).await;
    };
    tracing::debug!(user = %click.actor.aad_object_id, "allowed: {allowed:?}");
    let acted = act::act(app, &bot, &click, now).await?;
    Ok(format!("{} on {} by {}: {acted:?}", click.action.name(), click.alert_id, click.actor.principal()))
}

/// A person who may not act: the refusal is audited, then replied in the card's thread (a reply Teams
/// does not take is logged: the record is what counts). Once per person, action and card version
/// (`triage/…/refused-{action}/{user}`): a double click is refused once.
async fn refuse(app: &App, bot: &dyn Cards, click: &act::Click, now: DateTime<Utc>) -> Result<String, RespondError> {
    let who = click.actor.principal();
    let line = format!("{} on {} by {who}: refused, not allowed", click.action.name(), click.alert_id);
    let action = format!("refused-{}", click.action.name());
    let key =
        crate::store::keys::triage(&click.tenant, &click.alert_id, &click.version, &action, &click.actor.aad_object_id);
    let record = Record {
        detail: format!(
            "{} by {who} (object id {}) refused: not allowed to act (triage allowed users and groups)",
            click.action.name(),
            click.actor.aad_object_id
        ),
        ..Record::new(&click.alert_id, &click.version, Action::ActionByUser)
    };
    let store = app.store.as_ref();
    let lease = std::time::Duration::from_secs(60);
    let appended = crate::store::once(store, &key, lease, || app.audit.append(&click.tenant, now, record))
        .await
        .map_err(|e| RespondError::Retry(format!("store: {e}")))?;
    match appended {
        crate::store::Once::Done(_) => {}
        crate::store::Once::AlreadyDone => return Ok(format!("{line} (already)")),
        crate::store::Once::Held => {
            return Err(RespondError::Retry(format!("{key} is being refused by another worker")));
        }
        crate::store::Once::Failed(e) => return Err(RespondError::Retry(e.to_string())),
    }
    tracing::warn!(user = %click.actor.aad_object_id, alert = %click.alert_id, "a card action by a person not allowed to act was refused");
    if let Some(card) = &click.card
        && let Err(why) = bot.reply(card, inbound::REFUSAL).await
    {
        tracing::warn!(alert = %click.alert_id, "the refusal was not replied: {}", crate::redact::redact(&why));
    }
    Ok(line)
}

/// A click from the triage page ([`page`]): the person is checked against the page's allow-list again
/// (the queue is not the page), then [`act::act`] runs with no card to update.
async fn on_page_click(app: &App, click: &act::Click, now: DateTime<Utc>) -> Result<String, RespondError> {
    let Some(page) = app.config.triage.page.as_ref() else {
        return Err(RespondError::Malformed("a triage page click, but triage.page is not configured".into()));
    };
    let allowed = page.allowed(&app.config.triage.allowed);
    if allowed::check(app, allowed, &click.tenant, &click.actor, now).await?.is_none() {
        return refuse(app, &act::NoCards, click, now).await;
    }
    let acted = act::act(app, &act::NoCards, click, now).await?;
    Ok(format!("{} on {} by {} (triage page): {acted:?}", click.action.name(), click.alert_id, click.actor.principal()))
}

/// The outbound client of the bot `bot` (one of `triage.bots`).
pub fn bot_client(app: &App, bot: &crate::config::triage::BotConfig) -> act::BotClient {
    act::BotClient {
        http: app.http.clone(),
        token_url: format!("{}/{}/oauth2/v2.0/token", app.config.authority(), bot.tenant_id),
        app_id: bot.app_id.clone(),
        app_secret: bot.app_secret.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::config::triage::{AllowedConfig, BotConfig};
    use crate::graph::fake::FakeGraph;

    const NOW: &str = "2026-12-01T10:42:00Z";

    fn bot(app_id: &str, tenants: &[&str]) -> BotConfig {
        BotConfig {
            app_id: app_id.into(),
            app_secret: "s".into(),
            tenant_id: "t".into(),
            openid_metadata: None,
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
            allowed: None,
        }
    }

    fn app(bots: &[(&str, BotConfig)], graph: Arc<FakeGraph>) -> App {
        let store = Arc::new(crate::store::sqlite::SqliteStore::in_memory().unwrap());
        let mut config = Config::default();
        for name in ["contoso", "fabrikam"] {
            config.tenants.push(crate::config::TenantConfig { id: name.into(), name: name.into(), credential: None });
        }
        config.triage.bots = bots.iter().map(|(n, b)| (n.to_string(), b.clone())).collect();
        config.triage.allowed = AllowedConfig { users: vec!["dana@contoso.com".into()], groups: vec!["g-soc".into()] };
        App::builder(config).backend(store).graph(graph).build().unwrap()
    }

    fn click(tenant: &str, bot: Option<&str>) -> Value {
        json!({"tenant": tenant, "alertId": "a1", "version": "v1", "action": "acknowledge",
               "actor": {"aadObjectId": "oid-1", "upn": "dana@contoso.com", "name": "Dana"},
               "card": {"serviceUrl": "https://smba.example/", "conversationId": "c", "activityId": "x"},
               "bot": bot})
    }

    async fn malformed(app: &App, tenant: &str, click: Value) -> String {
        match on_click(app, tenant, click, NOW.parse().unwrap()).await {
            Err(RespondError::Malformed(why)) => why,
            other => panic!("not unprocessable: {other:?}"),
        }
    }

    #[tokio::test]
    async fn clicks_that_cannot_be_acted_on_are_unprocessable_with_the_reason() {
        let graph = Arc::new(FakeGraph::new());
        let two = app(&[("soc", bot("a", &["contoso"])), ("fab", bot("b", &["fabrikam"]))], graph.clone());
        let why = malformed(&two, "contoso", json!({"tenant": "contoso"})).await;
        assert!(why.starts_with("triage click:"), "{why}");
        let why = malformed(&two, "fabrikam", click("contoso", Some("soc"))).await;
        assert!(why.contains("for tenant contoso on a message for tenant fabrikam"), "{why}");
        let why = malformed(&two, "contoso", click("contoso", Some("gone"))).await;
        assert!(why.contains("bot gone, which is not configured"), "{why}");
        let why = malformed(&two, "contoso", click("contoso", None)).await;
        assert!(why.contains("names no bot"), "two bots: a click must say which: {why}");
        let why = malformed(&two, "fabrikam", click("fabrikam", Some("soc"))).await;
        assert!(why.contains("does not serve tenant fabrikam"), "{why}");
        assert!(graph.calls().is_empty(), "nothing reached Graph: {:?}", graph.calls());
    }

    #[tokio::test]
    async fn who_may_act_is_a_listed_user_or_a_group_member_and_group_answers_are_cached() {
        let graph = Arc::new(FakeGraph::new());
        let app = app(&[("soc", bot("a", &[]))], graph.clone());
        let allowed = app.config.triage.allowed.clone();
        let now: DateTime<Utc> = NOW.parse().unwrap();
        let actor = |oid: &str, upn: Option<&str>| act::Actor {
            aad_object_id: oid.into(),
            upn: upn.map(str::to_string),
            name: String::new(),
        };
        let listed = allowed::check(&app, &allowed, "contoso", &actor("x", Some("Dana@Contoso.com")), now).await;
        assert_eq!(listed.unwrap(), Some(allowed::Allowed::Listed));
        assert!(graph.calls().is_empty(), "a listed user needs no group check");
        graph.add_member("contoso", "oid-sam", &["g-soc"]);
        let sam = actor("oid-sam", None);
        assert_eq!(
            allowed::check(&app, &allowed, "contoso", &sam, now).await.unwrap(),
            Some(allowed::Allowed::Member("g-soc".into()))
        );
        assert_eq!(allowed::check(&app, &allowed, "contoso", &actor("oid-eve", None), now).await.unwrap(), None);
        assert_eq!(graph.calls().len(), 2);
        // Within the cache's lifetime Graph is not asked again; after it, it is.
        allowed::check(&app, &allowed, "contoso", &sam, now + chrono::Duration::minutes(4)).await.unwrap();
        assert_eq!(graph.calls().len(), 2);
        allowed::check(&app, &allowed, "contoso", &sam, now + chrono::Duration::minutes(6)).await.unwrap();
        assert_eq!(graph.calls().len(), 3);
        // Graph unavailable: retry; the permission missing: unprocessable, naming it.
        graph.fail_once("check_member_groups", 503);
        let err = allowed::check(&app, &allowed, "fabrikam", &sam, now).await.unwrap_err();
        assert!(matches!(err, RespondError::Retry(_)), "{err}");
        graph.fail_once("check_member_groups", 403);
        let err = allowed::check(&app, &allowed, "fabrikam", &sam, now).await.unwrap_err();
        assert!(matches!(&err, RespondError::Malformed(why) if why.contains("GroupMember.Read.All")), "{err}");
    }

    #[test]
    fn the_metadata_follows_the_cloud_unless_the_bot_names_one() {
        let mut config = Config::default();
        let mut b = bot("a", &[]);
        assert_eq!(settings(&config, &b).openid_metadata, botauth::OPENID_METADATA);
        config.cloud = Cloud::Usgov;
        assert_eq!(settings(&config, &b).openid_metadata, botauth::OPENID_METADATA_US_GOV);
        b.openid_metadata = Some("https://127.0.0.1:1/meta".into());
        assert_eq!(settings(&config, &b).openid_metadata, "https://127.0.0.1:1/meta");
        assert_eq!(settings(&config, &b).app_id, "a");
    }
}
