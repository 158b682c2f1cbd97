//! Card: a Teams bot receiver that already has a card of the alert is not told again, its card is
//! updated in place ([`crate::notify::cards`]): before silences, realert, grouping and budgets, because
//! an update is no new message. Every newer version updates it (status, severity, assignment,
//! incident), so the buttons always carry the version Defender has; an older version arriving late, or
//! the same one again, leaves the card alone.

use chrono::{DateTime, Utc};

use crate::alert::Alert;
use crate::app::App;
use crate::graph::Retry;
use crate::notify::NotifyError;
use crate::notify::cards;
use crate::notify::teams::BotTarget;
use crate::triage::act::{CardRef, live_card};

/// What a bot receiver's existing card means for this delivery.
pub(super) enum Existing {
    /// No card: tell the receiver as any other (the send posts the card).
    None,
    /// Another worker is posting the first card: look again shortly.
    Posting,
    /// The card was updated in place to this version.
    Updated(CardRef),
    /// The card shows this version or a newer one already.
    Current(String),
}

/// Updates the card of `alert` at `receiver` when it has one and this version is newer.
pub(super) async fn existing(
    app: &App,
    bot: &BotTarget,
    tenant: &str,
    alert: &Alert,
    receiver: &str,
    now: DateTime<Utc>,
) -> Result<Existing, NotifyError> {
    let store_err = |e: crate::store::StoreError| NotifyError::new(receiver, format!("store: {e}"), Retry::Retryable);
    let Some(record) = cards::read(app.store.as_ref(), tenant, &alert.id, receiver).await.map_err(store_err)? else {
        return Ok(Existing::None);
    };
    let stale = chrono::Duration::from_std(cards::POSTING_STALE).expect("short");
    let Some(at) = record.card else {
        return Ok(match record.posting_since {
            Some(since) if now - since < stale => Existing::Posting,
            _ => Existing::None,
        });
    };
    if !cards::newer(alert.version(), &record.version) {
        return Ok(Existing::Current(record.version));
    }
    let content = live_card(tenant, alert, record.outcome.as_deref());
    bot.update(&app.http, receiver, &at, &content).await?;
    cards::shown(app.store.as_ref(), tenant, &alert.id, receiver, alert.version()).await.map_err(store_err)?;
    Ok(Existing::Updated(at))
}
