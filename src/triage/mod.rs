//! Triage from where the alert is told (issue 22): the Teams bot's inbound side.
//!
//! - [`botauth`]: the Bot Connector token check every inbound activity passes first.
//! - [`inbound`]: the messaging endpoint: token, allow-list, the click for the queue.
//! - [`act`]: what a card click does on the worker: read, compare, PATCH, comment, audit, card updated.

pub mod act;
pub mod botauth;
pub mod inbound;
pub mod page;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::app::App;
use crate::respond::RespondError;

/// Works one `triage` queue message: checks the click, acts on it ([`act::act`]) and updates its card
/// with the identity of the bot it came through. A click that cannot be read, is for another tenant than
/// its message, names no configured bot, or came through a bot that does not serve its tenant is
/// unprocessable (poison), never dropped.
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
    let acted = act::act(app, &bot, &click, now).await?;
    Ok(format!("{} on {} by {}: {acted:?}", click.action.name(), click.alert_id, click.actor.principal()))
}

/// A click from the triage page ([`page`]): the person is checked against the page's allow-list again
/// (the queue is not the page), then [`act::act`] runs with no card to update.
async fn on_page_click(app: &App, click: &act::Click, now: DateTime<Utc>) -> Result<String, RespondError> {
    let Some(page) = app.config.triage.page.as_ref() else {
        return Err(RespondError::Malformed("a triage page click, but triage.page is not configured".into()));
    };
    let allowed = inbound::AllowList(page.allowed(&app.config.triage.allowed).users.clone());
    if !allowed.allows(&click.actor) {
        return Err(RespondError::Malformed(format!(
            "triage page click by {}, who is not on the allow-list",
            click.actor.aad_object_id
        )));
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
