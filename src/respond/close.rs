//! Closing an alert in Graph for a known-benign rule: claim → circuit breaker → PATCH → comment.
//!
//! Each effect has its own idempotency claim, so a redelivered message never PATCHes or comments twice:
//! - `close/{tenant}/{alert id}/{version}`: the PATCH (`status: resolved`, classification,
//!   determination); completed as soon as Graph accepted it;
//! - `comment/{tenant}/{alert id}/{version}`: the comment saying which rule closed the alert and why.
//!
//! A retry after a crash between the two finds the PATCH done and adds only the comment. A PATCH Graph
//! refused for good is remembered (`close-outcome/{tenant}/{alert id}/{version}`), so a redelivery
//! neither retries it nor comments on an alert that is still open. The circuit
//! breaker counts closes per rule and UTC hour in the store (`breaker/{rule}/{YYYY-MM-DDTHH}`, updated by
//! compare-and-swap); a close takes its slot before the PATCH, so concurrent workers cannot exceed the
//! limit, and a slot taken by a PATCH that then failed stays taken (the breaker errs towards closing less).
//!
//! The comment's body shape is in doubt (the docs show one object, the Go SDK sends an array): the
//! [`Graph`](crate::graph::Graph) client owns the wire format and sends the documented object, then the
//! array once on a 400; `tests/close_emulator.rs` exercises both against the emulator.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::RespondError;
use crate::alert::Alert;
use crate::app::App;
use crate::audit::{Action, Record};
use crate::graph::{AlertUpdate, GraphError, Retry};
use crate::rules::{Blocked, CloseMatch, Decision, Mode, Outcome};
use crate::store::{Change, Once, Store, StoreError, keys, once};

/// How long a worker may take over one PATCH or comment before another may try again.
const LEASE: Duration = Duration::from_secs(300);

/// What closing did.
#[derive(Debug, Clone, PartialEq)]
pub enum Closed {
    /// Graph resolved the alert.
    Closed {
        /// HTTP status of the PATCH (Graph answers 200 with the updated alert).
        graph_status: u16,
        /// The status Graph reported afterwards.
        status_after: Option<String>,
        /// Why the comment could not be added, if it could not (the alert stays closed).
        comment_error: Option<String>,
    },
    /// An earlier delivery of this alert version already closed it (and commented).
    AlreadyDone,
    /// The rule's circuit breaker is open: nothing was sent to Graph.
    BreakerOpen {
        /// Closes counted this hour.
        count: u32,
    },
    /// Graph refused the close and a retry will not help.
    Failed {
        /// HTTP status, when Graph answered.
        graph_status: Option<u16>,
        /// What Graph said (redacted).
        message: String,
    },
}

/// What a matched close rule came to for one alert version: what to record and what follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    /// The audit record of it; none when the rule matched an alert that is already resolved.
    pub record: Option<Record>,
    /// The alert stays open after all (breaker open, Graph refused): tell the routed receivers instead.
    pub routed: bool,
    /// The rule's breaker is open with this many closes this hour: tell the rule's owner.
    pub breaker_open: Option<u32>,
}

/// Settles the close rule `m` that `decision` matched: records a shadow or blocked match, or closes the
/// alert in Graph ([`close`]) and records how that went. `summary` (the alert's summary line) says what
/// happened when it differs from the decision's reason.
pub async fn settle(
    app: &App,
    tenant: &str,
    alert: &Alert,
    decision: &Decision,
    m: &CloseMatch,
    now: DateTime<Utc>,
    summary: &mut String,
) -> Result<Settled, RespondError> {
    let status = alert.status().as_str().to_string();
    let entry = |action: Action| Record {
        rule_id: Some(m.rule_id.clone()),
        rule_hash: Some(m.rule_hash.clone()),
        mode: Some(m.mode),
        status_before: Some(status.clone()),
        status_after: Some(status.clone()),
        detail: decision.reason.clone(),
        ..Record::new(&alert.id, alert.version(), action)
    };
    let settled = |record: Record| Settled { record: Some(record), routed: false, breaker_open: None };
    let record = match (decision.outcome, &decision.blocked) {
        (Outcome::Close, _) if m.mode == Mode::Shadow => entry(Action::WouldClose),
        (Outcome::Close, _) => match close(app, tenant, alert, m, now).await? {
            Closed::Closed { graph_status, status_after, comment_error } => {
                crate::metrics::count(crate::metrics::Counter::AlertsClosed, tenant, 1);
                let mut e = Record { graph_status: Some(graph_status), status_after, ..entry(Action::Close) };
                if let Some(c) = &comment_error {
                    e.detail = format!("{}; the comment was refused: {c}", e.detail);
                    summary.push_str(&format!("; the comment was refused: {c}"));
                }
                e
            }
            Closed::AlreadyDone => {
                let e = entry(Action::Close);
                summary.push_str(" (already closed by an earlier delivery)");
                Record {
                    status_after: Some("resolved".into()),
                    detail: format!("{} (closed by an earlier delivery of this alert version)", e.detail),
                    ..e
                }
            }
            Closed::BreakerOpen { count } => {
                let detail = format!(
                    "circuit breaker open: {count} closes by rule {:?} this hour (limit {}); not closed, routed instead",
                    m.rule_id, m.max_per_hour
                );
                *summary = format!("{}: {detail}", alert.id);
                tracing::warn!(tenant, alert = %alert.id, rule = %m.rule_id, "close blocked: {detail}");
                let record = Record { detail, ..entry(Action::BreakerOpen) };
                return Ok(Settled { record: Some(record), routed: true, breaker_open: Some(count) });
            }
            Closed::Failed { graph_status, message } => {
                let detail = format!("Graph refused the close: {message}; routed instead");
                *summary = format!("{}: {detail}", alert.id);
                tracing::warn!(tenant, alert = %alert.id, rule = %m.rule_id, "close failed: {detail}");
                let record = Record { graph_status, detail, ..entry(Action::CloseFailed) };
                return Ok(Settled { record: Some(record), routed: true, breaker_open: None });
            }
        },
        (_, Some(Blocked::Resolved)) | (_, None) => {
            return Ok(Settled { record: None, routed: false, breaker_open: None });
        }
        (_, Some(_)) => entry(Action::CloseBlocked),
    };
    Ok(settled(record))
}

fn store_error(e: StoreError) -> RespondError {
    RespondError::Retry(format!("store: {e}"))
}

fn graph_error(e: &GraphError) -> String {
    let status = e.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    crate::redact::redact(&format!("{e}{status}"))
}

/// Takes one close slot of the rule's breaker for the hour of `now`; `Err(count)` when it is open.
pub async fn reserve_slot(
    store: &dyn Store,
    tenant: &str,
    rule_id: &str,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Result<u32, u32>, StoreError> {
    let key = keys::breaker(tenant, rule_id, now);
    let reserved = crate::store::update(store, &key, |current| {
        let count = current.and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok()).unwrap_or(0);
        if count >= limit {
            return Change::Keep(Err(count));
        }
        Change::Put((count + 1).to_string().into_bytes(), Ok(count + 1))
    })
    .await;
    match reserved {
        // Too much contention: give up, and the message is retried.
        Err(StoreError::Conflict { .. }) => {
            Err(StoreError::Backend(format!("{key}: too much contention on the breaker counter")))
        }
        other => other,
    }
}

/// Whether a close of this version of `alert` was begun by an earlier delivery. When Graph's copy is
/// resolved since, the message is a retry (or redelivery) of that close, which finishes on the version
/// it was decided on (the comment, the audit record) instead of being decided again on a copy the close
/// itself resolved.
pub async fn started(app: &App, tenant: &str, alert: &Alert) -> Result<bool, RespondError> {
    let key = keys::close_started(tenant, &alert.id, alert.version());
    Ok(app.store.get(&key).await.map_err(store_error)?.is_some())
}

/// Closes `alert` in Graph as the rule `m` says, at most once per alert version.
///
/// Retryable failures (store, Graph 429/5xx, a claim held by another worker) are
/// [`RespondError::Retry`]; a permanent refusal from Graph is [`Closed::Failed`], for the caller to audit
/// and route.
pub async fn close(
    app: &App,
    tenant: &str,
    alert: &Alert,
    m: &CloseMatch,
    now: DateTime<Utc>,
) -> Result<Closed, RespondError> {
    let version = alert.version();
    let close_key = keys::close(tenant, &alert.id, version);
    let comment_key = keys::comment(tenant, &alert.id, version);
    let store = app.store.as_ref();

    let outcome_key = keys::close_outcome(tenant, &alert.id, version);
    // The act's error is what `close` returns once the claim is given back: `Ok` when nothing was sent
    // (a later delivery decides afresh), `Err` when it failed.
    let started_key = keys::close_started(tenant, &alert.id, version);
    let closing = once(store, &close_key, LEASE, || async {
        // From here a retry resumes this close rather than deciding again on a copy that our own PATCH
        // may already have resolved (see [`started`]).
        store.put(&started_key, m.rule_id.as_bytes()).await.map_err(|e| Err(store_error(e)))?;
        match patch(app, tenant, alert, m, now).await {
            Ok(closed @ Closed::Closed { .. }) => Ok(closed),
            Ok(Closed::Failed { graph_status, message }) => {
                // Retrying cannot help; completing the claim keeps a redelivery from trying again, and
                // the outcome tells it what happened.
                let outcome = format!("failed {} {message}", graph_status.map(|s| s.to_string()).unwrap_or("-".into()));
                store.put(&outcome_key, outcome.as_bytes()).await.map_err(|e| Err(store_error(e)))?;
                Ok(Closed::Failed { graph_status, message })
            }
            Ok(other) => Err(Ok(other)),
            Err(e) => Err(Err(e)),
        }
    })
    .await
    .map_err(store_error)?;
    let mut result = match closing {
        Once::Held => return Err(RespondError::Retry(format!("{close_key} is being closed by another worker"))),
        Once::AlreadyDone => match store.get(&outcome_key).await.map_err(store_error)? {
            // An earlier delivery was refused for good: say so again (its audit record and
            // notifications are claimed once), and never comment on an alert that was not closed.
            Some(v) if v.value.starts_with(b"failed") => {
                let text = String::from_utf8_lossy(&v.value).into_owned();
                let mut parts = text.splitn(3, ' ');
                let _ = parts.next();
                let graph_status = parts.next().and_then(|s| s.parse().ok());
                let message = parts.next().unwrap_or_default().to_string();
                return Ok(Closed::Failed { graph_status, message });
            }
            _ => None,
        },
        Once::Done(failed @ Closed::Failed { .. }) => return Ok(failed),
        Once::Done(closed) => Some(closed),
        Once::Failed(not_closed) => return not_closed,
    };

    let commenting = once(store, &comment_key, LEASE, || async {
        match app.graph.add_comment(tenant, &alert.id, &m.comment).await {
            Ok(()) => Ok(None),
            Err(e) if e.retry == Retry::Retryable => Err(e),
            // The alert is closed; a comment Graph refuses for good is recorded, not retried forever.
            Err(e) => Ok(Some(graph_error(&e))),
        }
    })
    .await
    .map_err(store_error)?;
    match commenting {
        Once::Held => return Err(RespondError::Retry(format!("{comment_key} is being added by another worker"))),
        Once::AlreadyDone | Once::Done(None) => {}
        Once::Failed(e) => return Err(RespondError::Retry(format!("comment on {}: {}", alert.id, graph_error(&e)))),
        Once::Done(Some(why)) => {
            tracing::error!(alert = %alert.id, "closed, but the comment was refused: {why}");
            match &mut result {
                Some(Closed::Closed { comment_error, .. }) => *comment_error = Some(why),
                _ => {
                    result = Some(Closed::Closed {
                        graph_status: 200,
                        status_after: Some("resolved".into()),
                        comment_error: Some(why),
                    })
                }
            }
        }
    }
    Ok(result.unwrap_or(Closed::AlreadyDone))
}

/// The breaker, then the PATCH.
async fn patch(
    app: &App,
    tenant: &str,
    alert: &Alert,
    m: &CloseMatch,
    now: DateTime<Utc>,
) -> Result<Closed, RespondError> {
    if let Err(count) =
        reserve_slot(app.store.as_ref(), tenant, &m.rule_id, m.max_per_hour, now).await.map_err(store_error)?
    {
        return Ok(Closed::BreakerOpen { count });
    }
    let update = AlertUpdate {
        status: Some("resolved".into()),
        classification: Some(m.classification.clone()),
        determination: Some(m.determination.clone()),
        assigned_to: None,
    };
    match app.graph.update_alert(tenant, &alert.id, &update).await {
        Ok(updated) => Ok(Closed::Closed {
            graph_status: 200,
            status_after: updated.get("status").and_then(Value::as_str).map(str::to_string).or(Some("resolved".into())),
            comment_error: None,
        }),
        Err(e) if e.retry == Retry::Retryable => {
            Err(RespondError::Retry(format!("close {} in Graph: {}", alert.id, graph_error(&e))))
        }
        Err(e) => Ok(Closed::Failed { graph_status: e.status, message: graph_error(&e) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn the_breaker_counts_per_rule_and_hour() {
        let s = SqliteStore::in_memory().unwrap();
        let t0: DateTime<Utc> = "2026-11-26T10:05:00Z".parse().unwrap();
        assert_eq!(reserve_slot(&s, "contoso", "r", 2, t0).await.unwrap(), Ok(1));
        assert_eq!(reserve_slot(&s, "contoso", "r", 2, t0).await.unwrap(), Ok(2));
        assert_eq!(reserve_slot(&s, "contoso", "r", 2, t0).await.unwrap(), Err(2));
        assert_eq!(reserve_slot(&s, "contoso", "other", 2, t0).await.unwrap(), Ok(1));
        // One tenant's flood never pauses the rule for another tenant.
        assert_eq!(reserve_slot(&s, "fabrikam", "r", 2, t0).await.unwrap(), Ok(1));
        let next_hour = t0 + chrono::Duration::hours(1);
        assert_eq!(reserve_slot(&s, "contoso", "r", 2, next_hour).await.unwrap(), Ok(1));
    }
}
