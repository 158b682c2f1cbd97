//! Triage from where the alert is told (issue 22): the Teams bot's inbound side.
//!
//! - [`botauth`]: the Bot Connector token check every inbound activity passes first.
//! - [`inbound`]: the messaging endpoint: token, allow-list, the click for the queue.
//! - [`act`]: what a card click does on the worker: read, compare, PATCH, comment, audit, card updated.

pub mod act;
pub mod botauth;
pub mod inbound;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::app::App;
use crate::respond::RespondError;

/// Works one `triage` queue message: checks the click, acts on it ([`act::act`]) and updates its card
/// with the bot's own identity. A click that cannot be read, is for another tenant than its message, or
/// arrives when no bot is configured is unprocessable (poison), never dropped.
pub async fn on_click(app: &App, tenant: &str, click: Value, now: DateTime<Utc>) -> Result<String, RespondError> {
    let click: act::Click =
        serde_json::from_value(click).map_err(|e| RespondError::Malformed(format!("triage click: {e}")))?;
    if click.tenant != tenant {
        return Err(RespondError::Malformed(format!(
            "triage click for tenant {} on a message for tenant {tenant}",
            click.tenant
        )));
    }
    let bot = bot_client(app).ok_or_else(|| {
        RespondError::Malformed("a triage click arrived but no bot is configured (triage.bot)".into())
    })?;
    let acted = act::act(app, &bot, &click, now).await?;
    Ok(format!("{} on {} by {}: {acted:?}", click.action.name(), click.alert_id, click.actor.principal()))
}

/// The bot's outbound client, when `triage.bot` is configured.
pub fn bot_client(app: &App) -> Option<act::BotClient> {
    let bot = app.config.triage.bot.as_ref()?;
    Some(act::BotClient {
        http: app.http.clone(),
        token_url: format!("{}/{}/oauth2/v2.0/token", app.config.authority().trim_end_matches('/'), bot.tenant_id),
        app_id: bot.app_id.clone(),
        app_secret: bot.app_secret.clone(),
    })
}
