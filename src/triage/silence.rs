//! *Silence 24 h*: a card click that mutes this alert's kind of noise for a day without touching
//! Defender.
//!
//! The silence ([`crate::notify::silence`], as `secmon silence add` makes it) matches the alert's
//! detector (`detectorId`) on its devices and users: every device (`deviceDnsName`) and user
//! (`userPrincipalName`) in the alert's evidence must be in the next alert's evidence too (at most
//! [`MAX_ENTITIES`] of them, the first in the alert's order). An alert without a `detectorId` is
//! silenced by its own id. The silence is for the alert's tenant and every receiver, lasts 24 hours (or
//! `silences.max_duration` when that is shorter), is made by the person (UPN, else object id) with a
//! comment naming the alert, and the click is audited `action_by_user`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::act::{Acted, Click, live_card};
use crate::alert::{Alert, Evidence};
use crate::app::App;
use crate::audit::{Action, Record};
use crate::graph::Retry;
use crate::notify::silence::cli::{NewSilence, add};
use crate::respond::RespondError;

/// How long the button silences.
pub const SILENCE_FOR: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Most entities a silence names (a matcher stays short and cheap).
pub const MAX_ENTITIES: usize = 4;

/// A CEL string literal of `s`: JSON's escaping is a subset of CEL's.
fn literal(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The silence's matcher for `alert`: its detector on its devices and users, else its id.
pub fn matcher(alert: &Alert) -> String {
    let Some(detector) = alert.detector_id.as_deref().filter(|d| !d.is_empty()) else {
        return format!("alert.id == {}", literal(&alert.id));
    };
    let mut parts = vec![format!("alert.detectorId == {}", literal(detector))];
    let mut seen = std::collections::BTreeSet::new();
    for evidence in alert.evidence() {
        let entity = match evidence {
            Evidence::Device(e) => e
                .device_dns_name
                .as_deref()
                .map(|name| format!("alert.evidenceOf(\"device\").exists(e, e.deviceDnsName == {})", literal(name))),
            Evidence::User(e) => e.user_account.as_ref().and_then(|u| u.user_principal_name.as_deref()).map(|upn| {
                format!("alert.evidenceOf(\"user\").exists(e, e.userAccount.userPrincipalName == {})", literal(upn))
            }),
            _ => None,
        };
        if let Some(entity) = entity
            && seen.len() < MAX_ENTITIES
            && seen.insert(entity.clone())
        {
            parts.push(entity);
        }
    }
    parts.join(" && ")
}

/// Makes the click's silence and records it; the card says "Silenced for 24 h by Dana Lee, 10:42 UTC".
/// Claimed by the caller ([`super::act::act`]), so a double click makes one silence.
pub(super) async fn silence_once(
    app: &App,
    click: &Click,
    now: DateTime<Utc>,
) -> Result<(Acted, Value, String), RespondError> {
    let current = app.graph.get_alert(&click.tenant, &click.alert_id).await.map_err(|e| {
        let text = format!("reading {}: {}", click.alert_id, crate::redact::redact(&e.to_string()));
        match e.retry {
            Retry::Retryable => RespondError::Retry(text),
            Retry::Permanent => RespondError::Malformed(text),
        }
    })?;
    let current = Alert::from_value(current).map_err(|e| RespondError::Malformed(e.to_string()))?;
    let duration = SILENCE_FOR.min(app.config.silences.max_duration);
    let hours =
        if duration == SILENCE_FOR { "24 h".to_string() } else { humantime::format_duration(duration).to_string() };
    let when = matcher(&current);
    let new = NewSilence {
        when: when.clone(),
        duration,
        starts_at: None,
        comment: format!(
            "Silenced from Teams by {} ({}): {}",
            click.actor.principal(),
            click.alert_id,
            current.title_or_id()
        ),
        created_by: click.actor.principal().to_string(),
        receivers: Vec::new(),
        tenant: Some(click.tenant.clone()),
        active_during: Vec::new(),
    };
    // A matcher or a duration the silences refuse can never be made: unprocessable, not retried.
    let (silence, _warnings) =
        add(app, new, now).await.map_err(|e| RespondError::Malformed(format!("silence: {e}")))?;
    let status = current.status().as_str().to_string();
    let record = Record {
        status_before: Some(status.clone()),
        status_after: Some(status),
        detail: format!(
            "Silenced for {hours} by {} (object id {}): silence {} matching {when}; Defender not changed",
            click.actor.principal(),
            click.actor.aad_object_id,
            silence.id
        ),
        ..Record::new(&click.alert_id, &click.version, Action::ActionByUser)
    };
    app.audit.append(&click.tenant, now, record).await.map_err(|e| RespondError::Retry(e.to_string()))?;
    let who = if click.actor.name.is_empty() { click.actor.principal() } else { &click.actor.name };
    let outcome = format!("Silenced for {hours} by {who}, {}", now.format("%H:%M UTC"));
    tracing::info!(alert = %click.alert_id, silence = %silence.id, "{outcome}");
    // The alert still wants triage: the buttons stay, with the outcome under them.
    let card = live_card(&click.tenant, &current, Some(&outcome));
    Ok((Acted::Silenced { silence: silence.id }, card, outcome))
}
