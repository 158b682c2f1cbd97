//! The pipeline for one alert version: decide → claim → act → record.
//!
//! The `respond` function (the layer above) hands over one alert version (from the queue, or fetched for
//! a lookup); this decides with the rules, then closes and/or notifies. Every effect is claimed in the
//! store before it is performed, so a redelivered message never closes or notifies twice, and audited
//! after it.

pub mod close;

/// The audit trail, at its old path for the `secmon audit` commands.
pub use crate::audit;

use chrono::{DateTime, Utc};

use crate::alert::{Alert, AlertStatus};
use crate::app::App;
use crate::audit::Record;
use crate::graph::Retry;
use crate::intake::Message;
use crate::notify::deliver::{DeliverError, enqueue, first_try};
use crate::rules::{Blocked, CloseMatch, Decision};
use crate::store::{Once, keys, once};

/// Why a message was not processed.
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// The message can never be processed: it is set aside on the poison queue.
    #[error("unprocessable: {0}")]
    Malformed(String),
    /// Processing failed in a way a retry may fix: leave the message on the queue.
    #[error("retry: {0}")]
    Retry(String),
}

impl From<DeliverError> for RespondError {
    fn from(e: DeliverError) -> Self {
        match e.retry {
            Retry::Retryable => RespondError::Retry(e.message),
            Retry::Permanent => RespondError::Malformed(e.message),
        }
    }
}

/// Decides and acts on one alert version: decide → close? ([`close::settle`]: claim → PATCH → comment)
/// → record → notify: one job per matched receiver (and per route `set:`) on the `deliveries` queue
/// ([`enqueue`]), each delivered, retried and poisoned on its own by the `deliver` function; with
/// [`App::first_try`] each receiver is tried at once and only a delivery that does not finish becomes
/// a job ([`first_try`]).
///
/// - A close rule in enforce mode closes the alert, and a closed alert is not notified (the Defender
///   comment and the audit trail say what happened).
/// - In shadow mode (the rule's own, or every rule with `SECMON_CLOSE=off`) nothing changes in Graph:
///   a `would_close` record is audited and the alert is notified as if no rule had matched.
/// - A guardrail (severity above the rule's limit, a secmon alert), an open circuit breaker or a
///   permanent refusal from Graph leaves the alert open: it is audited and notified. When the breaker
///   opens, the rule's owner is told once per rule and hour by a synthetic `secmon-breaker-…` alert put
///   on the queue (routes deliver it; match `alert.id.startsWith("secmon-")` to reach the owner).
/// - A rule that matches an alert already resolved does nothing (that is also how secmon's own close,
///   which comes back as a new resolved version, stays quiet).
/// - An alert **first seen already resolved** (resolved, not closed by secmon, and no receiver it is routed
///   to was ever told about it) is not announced as new, whether or not a rule matches: it is recorded
///   once in the audit trail as `first_seen_resolved` and logged. A resolved version of an alert a
///   receiver was told about follows realert as before.
pub async fn process_alert(app: &App, tenant: &str, alert: serde_json::Value) -> Result<String, RespondError> {
    if app.config.tenant(tenant).is_none() {
        return Err(RespondError::Malformed(format!("tenant {tenant:?} is not in the config")));
    }
    let alert = Alert::from_value(alert).map_err(|e| RespondError::Malformed(format!("alert for {tenant}: {e}")))?;
    let now = app.clock.now();
    let mut decision = decide(app, tenant, &alert, now);
    let mut alert = alert;
    if decision.closes() {
        (alert, decision) = decide_on_current(app, tenant, alert, decision, now).await?;
    }
    if first_seen_resolved(app, tenant, &alert, &decision).await? {
        return record_first_seen_resolved(app, tenant, &alert, &decision, now).await;
    }
    let mut summary = format!("{}: {}", alert.id, decision.reason);
    // Whether the matched routes are told; their own options (realert, grouping, `set`) apply.
    let mut notify = !decision.notify().is_empty();

    if let Some(m) = &decision.close {
        let settled = close::settle(app, tenant, &alert, &decision, m, now, &mut summary).await?;
        if let Some(record) = settled.record {
            record_once(app, tenant, now, record).await?;
        }
        if let Some(count) = settled.breaker_open {
            tell_owner_breaker_open(app, tenant, m, count, now).await?;
        }
        notify |= settled.routed && !decision.deliveries.is_empty();
    }

    if notify {
        // A redelivered message queues the jobs again: each job's claim makes the copy harmless.
        let store = app.store.as_ref();
        let (deliveries, updates) = (&decision.deliveries, &decision.updates);
        if app.first_try {
            let said = first_try(app, tenant, &alert, deliveries, updates).await.map_err(retry)?;
            if !said.is_empty() {
                summary = format!("{summary}; {}", said.join("; "));
            }
        } else {
            let queued =
                enqueue(store, app.queue.as_ref(), tenant, &alert, deliveries, updates, now).await.map_err(retry)?;
            if !queued.is_empty() {
                summary = format!("{summary}; delivering to {}", queued.join(", "));
            }
        }
    }
    // One line per outcome, naming the alert and what happened to it, for the person following the logs.
    tracing::info!(tenant, alert = %alert.id, version = alert.version(), "{summary}");
    Ok(summary)
}

/// A close is decided on Graph's current copy: the queued alert is only a hint. A backlog or a retry can
/// be hours old, the alert may have gained evidence, a higher severity or an analyst since, and anyone
/// with data access can write a message to the queue. So right before a close the alert is read again
/// and decided again (the rule and every guardrail) on what Graph says now; what follows acts on that
/// copy and its version. Costs one GET per close. A copy that cannot be read (the alert is gone, access
/// was refused) stops the close; a transient failure retries the message. A retry of a close that
/// already reached Graph finds the alert resolved and finishes it (see `close::started`).
async fn decide_on_current(
    app: &App,
    tenant: &str,
    queued: Alert,
    decision: Decision,
    now: DateTime<Utc>,
) -> Result<(Alert, Decision), RespondError> {
    let current = match app.graph.get_alert(tenant, &queued.id).await {
        Ok(value) => Alert::from_value(value).map_err(|e| e.to_string()),
        Err(e) if e.retry == Retry::Retryable => {
            return Err(RespondError::Retry(format!(
                "reading {} before closing it: {}",
                queued.id,
                crate::redact::redact(&e.to_string())
            )));
        }
        Err(e) => Err(crate::redact::redact(&e.to_string())),
    };
    match current {
        // Resolved since a close of the queued version began: that close is being finished (the
        // comment, the audit record), on the version it was decided on.
        Ok(current) if current.status() == AlertStatus::Resolved && close::started(app, tenant, &queued).await? => {
            Ok((queued, decision))
        }
        Ok(current) => {
            if current.raw() != queued.raw() {
                tracing::info!(
                    alert = %queued.id,
                    queued_version = queued.version(),
                    current_version = current.version(),
                    "the queued copy differs from Graph's; deciding on Graph's"
                );
            }
            let decision = decide(app, tenant, &current, now);
            Ok((current, decision))
        }
        Err(why) => Ok((queued, decision.blocked_by(Blocked::Unverified(why)))),
    }
}

/// The rules' decision about one alert version; with `SECMON_CLOSE=off`, every close rule in shadow mode.
fn decide(app: &App, tenant: &str, alert: &Alert, now: DateTime<Utc>) -> Decision {
    let mut decision = app.engine.decide(alert, tenant, now);
    for e in &decision.errors {
        tracing::warn!(alert = %alert.id, "{}: {}", e.at, crate::redact::redact(&e.message));
    }
    if app.config.closing_disabled {
        decision = decision.into_shadow("SECMON_CLOSE=off");
    }
    decision
}

/// Appends an audit record once per alert version and action, even when the message is redelivered.
async fn record_once(app: &App, tenant: &str, now: DateTime<Utc>, entry: Record) -> Result<(), RespondError> {
    let key = keys::audited(tenant, &entry.alert_id, &entry.alert_version, &entry.action.to_string());
    let store = app.store.as_ref();
    match once(store, &key, std::time::Duration::from_secs(60), || app.audit.append(tenant, now, entry))
        .await
        .map_err(retry)?
    {
        Once::Done(_) | Once::AlreadyDone => Ok(()),
        Once::Held => Err(RespondError::Retry(format!("{key} is being recorded by another worker"))),
        Once::Failed(e) => Err(RespondError::Retry(e.to_string())),
    }
}

/// Puts a synthetic alert on the queue telling the rule's owner its breaker opened, once per rule and hour.
async fn tell_owner_breaker_open(
    app: &App,
    tenant: &str,
    m: &CloseMatch,
    count: u32,
    now: DateTime<Utc>,
) -> Result<(), RespondError> {
    let hour = keys::hour(now);
    let key = keys::breaker_notice(tenant, &m.rule_id, now);
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let alert = serde_json::json!({
        "id": format!("secmon-breaker-{}-{tenant}-{}", m.rule_id, hour.replace(':', "")),
        "title": format!("secmon: close rule {} stopped closing in tenant {tenant} (circuit breaker open)", m.rule_id),
        "description": format!(
            "Close rule {} matched more than its limit of {} alerts in tenant {tenant} in the hour starting \
             {hour}:00Z ({count} closed). Further matches in {tenant} this hour are not closed but notified as \
             usual; other tenants are not affected. Rule owner: {}. Check whether the rule is too broad, or \
             raise max_per_hour.",
            m.rule_id, m.max_per_hour, m.owner
        ),
        "severity": "medium",
        "status": "new",
        "serviceSource": "secmon",
        "category": "secmon",
        "createdDateTime": stamp,
        "lastUpdateDateTime": stamp,
        "secmon": {"kind": "breaker_open", "rule": m.rule_id, "tenant": tenant, "owner": m.owner, "count": count,
                   "limit": m.max_per_hour},
    });
    let message = Message::Alert { tenant: tenant.to_string(), alert };
    let send = || message.send(app.store.as_ref(), app.queue.as_ref());
    match once(app.store.as_ref(), &key, std::time::Duration::from_secs(60), send).await.map_err(retry)? {
        Once::Done(()) | Once::AlreadyDone => Ok(()),
        Once::Held => Err(RespondError::Retry(format!("{key} is being sent by another worker"))),
        Once::Failed(e) => Err(retry(e)),
    }
}

fn retry(e: crate::store::StoreError) -> RespondError {
    RespondError::Retry(format!("store: {e}"))
}

/// Whether `alert` is an alert first seen already resolved (see [`process_alert`]): resolved, not by a
/// secmon close (whose comment it carries), and none of the receivers it is routed to was told about
/// it. Costs one read per routed receiver, for resolved versions only.
async fn first_seen_resolved(
    app: &App,
    tenant: &str,
    alert: &Alert,
    decision: &Decision,
) -> Result<bool, RespondError> {
    if alert.status() != AlertStatus::Resolved || alert.id.starts_with("secmon-") {
        return Ok(false);
    }
    let comments = alert.comments.as_deref().unwrap_or_default();
    if comments.iter().any(|c| c.comment.as_deref().unwrap_or("").starts_with(crate::rules::COMMENT_PREFIX)) {
        return Ok(false);
    }
    // Resolved by secmon's own close of an earlier version, before its comment was added (a crash
    // between the PATCH and the comment): the marker set right before the PATCH says so.
    if !app.store.list(&keys::close_started_any(tenant, &alert.id)).await.map_err(retry)?.is_empty() {
        return Ok(false);
    }
    for d in &decision.deliveries {
        if app.store.get(&keys::notify_last(tenant, &alert.id, &d.receiver)).await.map_err(retry)?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Records an alert first seen resolved, once per version, instead of announcing it.
async fn record_first_seen_resolved(
    app: &App,
    tenant: &str,
    alert: &Alert,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<String, RespondError> {
    let mut record = Record::new(&alert.id, alert.version(), audit::Action::FirstSeenResolved);
    record.status_before = Some(alert.status().as_str().to_string());
    if let Some(m) = &decision.close {
        record.rule_id = Some(m.rule_id.clone());
        record.rule_hash = Some(m.rule_hash.clone());
        record.mode = Some(m.mode);
    }
    let routed = decision.receivers();
    record.detail = format!(
        "already resolved when secmon first saw it; not announced{}",
        if routed.is_empty() { String::new() } else { format!(" to {}", routed.join(", ")) }
    );
    let summary = format!("{}: {}", alert.id, record.detail);
    record_once(app, tenant, now, record).await?;
    tracing::info!(tenant, alert = %alert.id, version = alert.version(), "{summary}");
    Ok(summary)
}
