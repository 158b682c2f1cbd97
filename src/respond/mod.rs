//! The pipeline for one queue message: decide → claim → act → record.
//!
//! A message is an alert version (decide with the rules, close and/or notify), a doorbell (poll the
//! tenant now), or a lookup (fetch one alert, then as an alert version). Every effect is claimed in the
//! store before it is performed, so a redelivered message never closes or notifies twice, and audited
//! after it.

pub mod audit;
pub mod close;
pub mod deliver;

use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};

use self::audit::Action;
use self::close::Closed;
use crate::alert::Alert;
use crate::app::App;
use crate::config::Config;
use crate::host::azure::{Failure, Invocation, Outcome};
use crate::intake::{Message, MessageError};
use crate::rules::{Blocked, CloseMatch, Engine, Mode, Outcome as Decided};
use crate::store::{ALERTS_QUEUE, Once, keys, once, poison_name};

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

impl From<MessageError> for RespondError {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::Malformed(m) => RespondError::Malformed(m),
            MessageError::Store(s) => RespondError::Retry(s.to_string()),
        }
    }
}

/// The queue-trigger function: handles one message body.
pub async fn on_queue(app: &App, inv: Invocation<Vec<u8>>) -> Result<Outcome, Failure> {
    match handle_body(app, &inv.data).await {
        Ok(summary) => Ok(Outcome { logs: vec![summary], ..Default::default() }),
        Err(RespondError::Malformed(reason)) => {
            // Retrying cannot help; the host would retry five times and then poison it anyway.
            // Set it aside now, and succeed so the host deletes the original.
            app.queue
                .send(&poison_name(ALERTS_QUEUE), &inv.data)
                .await
                .map_err(|e| Failure::Failed(format!("could not poison an unreadable message: {e}")))?;
            tracing::error!("message moved to {}: {reason}", poison_name(ALERTS_QUEUE));
            Ok(Outcome {
                logs: vec![format!("unreadable message moved to the poison queue: {reason}")],
                ..Default::default()
            })
        }
        Err(RespondError::Retry(reason)) => Err(Failure::Failed(reason)),
    }
}

/// Parses and processes one queue body; returns a one-line summary.
pub async fn handle_body(app: &App, body: &[u8]) -> Result<String, RespondError> {
    let message = Message::parse(body)?.resolve(app.store.as_ref()).await?;
    let tenant = message.tenant().to_string();
    let result = process(app, message).await;
    if result.is_err() {
        crate::metrics::count(crate::metrics::Counter::AlertsFailed, &tenant, 1);
    }
    result
}

/// Processes one message.
pub async fn process(app: &App, message: Message) -> Result<String, RespondError> {
    let now = app.clock.now();
    match message {
        Message::Poll { tenant, reason } => {
            let report = crate::intake::poll::poll_tenant(app, &tenant, now)
                .await
                .map_err(|e| RespondError::Retry(e.to_string()))?;
            Ok(format!("polled {tenant} ({reason}): {} new alert versions", report.queued))
        }
        Message::Lookup { tenant, alert_id } => {
            let alert = app.graph.get_alert(&tenant, &alert_id).await.map_err(|e| match e.retry {
                crate::graph::Retry::Retryable => RespondError::Retry(e.to_string()),
                crate::graph::Retry::Permanent => RespondError::Malformed(e.to_string()),
            })?;
            process_alert(app, &tenant, alert).await
        }
        Message::Alert { tenant, alert } => process_alert(app, &tenant, alert).await,
        Message::AlertRef { key, .. } => Err(RespondError::Malformed(format!("unresolved alert reference {key}"))),
    }
}

/// Decides and acts on one alert version: decide → (close: claim → PATCH → comment → audit) and/or
/// (notify: the matched routes' receivers, each claimed once by [`deliver::deliver_routes`]).
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
pub async fn process_alert(app: &App, tenant: &str, alert: serde_json::Value) -> Result<String, RespondError> {
    let raw = alert;
    if app.config.tenant(tenant).is_none() {
        return Err(RespondError::Malformed(format!("tenant {tenant:?} is not in the config")));
    }
    let alert =
        Alert::from_value(raw.clone()).map_err(|e| RespondError::Malformed(format!("alert for {tenant}: {e}")))?;
    let engine = engine_for(&app.config)?;
    let now = app.clock.now();
    let mut decision = engine.decide(&alert, &raw, tenant, now);
    for e in &decision.errors {
        tracing::warn!(alert = %alert.id, "{}: {}", e.at, crate::redact::redact(&e.message));
    }
    if app.config.closing_disabled {
        decision = decision.into_shadow("SECMON_CLOSE=off");
    }
    // Whether the matched routes are told; their own options (realert, grouping, `set`) apply.
    let mut notify = !decision.notify().is_empty();
    let mut summary = format!("{}: {}", alert.id, decision.reason);
    let status = alert.status().as_str().to_string();

    if let Some(m) = &decision.close {
        let entry = |action: Action| audit::Entry {
            rule_id: Some(m.rule_id.clone()),
            rule_hash: Some(m.rule_hash.clone()),
            mode: Some(m.mode),
            status_before: Some(status.clone()),
            status_after: Some(status.clone()),
            detail: decision.reason.clone(),
            ..audit::Entry::new(&alert.id, alert.version(), action)
        };
        match (decision.outcome, &decision.blocked) {
            (Decided::Close, _) if m.mode == Mode::Shadow => {
                record_once(app, tenant, now, entry(Action::WouldClose)).await?;
            }
            (Decided::Close, _) => match close::close(app, tenant, &alert, m, now).await? {
                Closed::Closed { graph_status, status_after, comment_error } => {
                    crate::metrics::count(crate::metrics::Counter::AlertsClosed, tenant, 1);
                    let mut e = entry(Action::Close);
                    e.graph_status = Some(graph_status);
                    e.status_after = status_after;
                    if let Some(c) = &comment_error {
                        e.detail = format!("{}; the comment was refused: {c}", e.detail);
                        summary = format!("{summary}; the comment was refused: {c}");
                    }
                    record_once(app, tenant, now, e).await?;
                }
                Closed::AlreadyDone => {
                    let mut e = entry(Action::Close);
                    e.status_after = Some("resolved".into());
                    e.detail = format!("{} (closed by an earlier delivery of this alert version)", e.detail);
                    record_once(app, tenant, now, e).await?;
                    summary = format!("{summary} (already closed by an earlier delivery)");
                }
                Closed::BreakerOpen { count } => {
                    let mut e = entry(Action::BreakerOpen);
                    e.detail = format!(
                        "circuit breaker open: {count} closes by rule {:?} this hour (limit {}); not closed, routed instead",
                        m.rule_id, m.max_per_hour
                    );
                    summary = format!("{}: {}", alert.id, e.detail);
                    record_once(app, tenant, now, e).await?;
                    tell_owner_breaker_open(app, tenant, m, count, now).await?;
                    notify = !decision.receivers.is_empty();
                }
                Closed::Failed { graph_status, message } => {
                    let mut e = entry(Action::CloseFailed);
                    e.graph_status = graph_status;
                    e.detail = format!("Graph refused the close: {message}; routed instead");
                    summary = format!("{}: {}", alert.id, e.detail);
                    record_once(app, tenant, now, e).await?;
                    notify = !decision.receivers.is_empty();
                }
            },
            (_, Some(Blocked::Resolved)) | (_, None) => {}
            (_, Some(_)) => record_once(app, tenant, now, entry(Action::CloseBlocked)).await?,
        }
    }

    if notify {
        let routes: Vec<usize> = decision.routes.iter().map(|r| r.index).collect();
        let delivered = deliver::deliver_routes(app, tenant, &alert, &raw, &routes).await?;
        if !delivered.sent.is_empty() {
            crate::metrics::count(crate::metrics::Counter::AlertsNotified, tenant, 1);
            summary = format!("{summary}; notified {}", delivered.sent.join(", "));
        }
    }
    Ok(summary)
}

/// Appends an audit record once per alert version and action, even when the message is redelivered.
async fn record_once(app: &App, tenant: &str, now: DateTime<Utc>, entry: audit::Entry) -> Result<(), RespondError> {
    let action = serde_json::to_value(entry.action).expect("actions serialize");
    let key = keys::audited(tenant, &entry.alert_id, &entry.alert_version, action.as_str().unwrap_or("action"));
    let store = app.store.as_ref();
    match once(store, &key, std::time::Duration::from_secs(60), || audit::append(store, tenant, now, entry))
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
    let key = keys::breaker_notice(&m.rule_id, now);
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let alert = serde_json::json!({
        "id": format!("secmon-breaker-{}-{}", m.rule_id, hour.replace(':', "")),
        "title": format!("secmon: close rule {} stopped closing (circuit breaker open)", m.rule_id),
        "description": format!(
            "Close rule {} matched more than its limit of {} alerts in the hour starting {hour}:00Z ({count} closed). \
             Further matches this hour are not closed but notified as usual. Rule owner: {}. \
             Check whether the rule is too broad, or raise max_per_hour.",
            m.rule_id, m.max_per_hour, m.owner
        ),
        "severity": "medium",
        "status": "new",
        "serviceSource": "secmon",
        "category": "secmon",
        "createdDateTime": stamp,
        "lastUpdateDateTime": stamp,
        "secmon": {"kind": "breaker_open", "rule": m.rule_id, "owner": m.owner, "count": count, "limit": m.max_per_hour},
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

/// The engine compiled from `config`, compiled once per config and shared.
///
/// A cache keyed by the config's allocation (held weakly, so the address cannot be reused while the
/// entry exists) keeps `App` unchanged for everyone who builds one.
pub fn engine_for(config: &Arc<Config>) -> Result<Arc<Engine>, RespondError> {
    static CACHE: Mutex<Option<(Weak<Config>, Arc<Engine>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((weak, engine)) = cache.as_ref()
        && weak.upgrade().is_some_and(|c| Arc::ptr_eq(&c, config))
    {
        return Ok(engine.clone());
    }
    let engine = Arc::new(Engine::compile(config).map_err(|issues| {
        // The config was validated at load, so this means it was built without validation; a fixed
        // config (and a retry) is the cure.
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        RespondError::Retry(format!("the rules do not compile: {}", text.join("; ")))
    })?);
    *cache = Some((Arc::downgrade(config), engine.clone()));
    Ok(engine)
}
