//! At most one pending poll per tenant, whatever asks for it: a Graph change notification, a signed
//! doorbell, a lifecycle event, a timer, a capped poll's follow-up.
//!
//! Every doorbell is a request for "a poll of tenant X that starts after now". One poll that has not
//! started yet answers every such request, so the slot `poll-slot/{tenant}` (JSON [`Slot`], changed only
//! with compare-and-swap) records whether a `Message::Poll` is on the queue; while it is, a new request
//! only counts itself as coalesced. A queued poll clears the mark when it starts ([`begin`]), so a
//! doorbell that rings during a poll queues exactly one follow-up, and every later one coalesces into
//! that. A timer finding a poll pending coalesces too; finding one running, it asks for the follow-up.
//!
//! A mark older than [`STALE_AFTER`] is ignored (its message may have been poisoned or lost with a
//! queue), so a slot can never block polls for good.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::Message;
use super::poll::{PollError, PollReport};
use crate::app::App;
use crate::store::{self, Change, StoreError, keys};

/// A pending or running mark older than this is ignored.
pub const STALE_AFTER: Duration = Duration::minutes(15);

/// The poll slot of one tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Slot {
    /// When the `Message::Poll` now on the queue was sent (`None`: none is).
    pub pending_since: Option<DateTime<Utc>>,
    /// When the poll now running started (`None`: none is).
    pub running_since: Option<DateTime<Utc>>,
    /// Requests answered by a poll already pending, since the slot was created.
    pub coalesced: u64,
    /// The last one.
    pub last_coalesced: Option<DateTime<Utc>>,
}

impl Slot {
    fn pending(&self, now: DateTime<Utc>) -> bool {
        self.pending_since.is_some_and(|t| now - t < STALE_AFTER)
    }

    fn running(&self, now: DateTime<Utc>) -> bool {
        self.running_since.is_some_and(|t| now - t < STALE_AFTER)
    }

    fn coalesce(&mut self, now: DateTime<Utc>) {
        self.coalesced += 1;
        self.last_coalesced = Some(now);
    }
}

/// What became of a request for a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// A `Message::Poll` was queued.
    Queued,
    /// A poll was already pending; it answers this request too.
    Coalesced,
}

fn parse(tenant: &str, bytes: Option<&[u8]>) -> Slot {
    bytes.and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_else(|| {
        if bytes.is_some() {
            tracing::warn!(tenant, "poll slot unreadable; starting a new one");
        }
        Slot::default()
    })
}

async fn change<R>(app: &App, tenant: &str, mut step: impl FnMut(&mut Slot) -> R) -> Result<R, StoreError> {
    store::update(app.store.as_ref(), &keys::poll_slot(tenant), |current| {
        let mut slot = parse(tenant, current);
        let answer = step(&mut slot);
        Change::Put(serde_json::to_vec(&slot).expect("slots serialize"), answer)
    })
    .await
}

/// Reads a tenant's slot (absent: default).
pub async fn load(app: &App, tenant: &str) -> Result<Slot, StoreError> {
    Ok(parse(tenant, app.store.get(&keys::poll_slot(tenant)).await?.as_ref().map(|v| v.value.as_slice())))
}

/// Asks for a poll of `tenant`: queues a `Message::Poll` unless one is pending already.
pub async fn request(app: &App, tenant: &str, reason: &str, now: DateTime<Utc>) -> Result<Requested, StoreError> {
    let queue_it = change(app, tenant, |slot| {
        if slot.pending(now) {
            slot.coalesce(now);
            false
        } else {
            slot.pending_since = Some(now);
            true
        }
    })
    .await?;
    if !queue_it {
        tracing::debug!(tenant, reason, "poll request coalesced into the pending poll");
        return Ok(Requested::Coalesced);
    }
    let message = Message::Poll { tenant: tenant.to_string(), reason: reason.to_string() };
    if let Err(e) = message.send(app.store.as_ref(), app.queue.as_ref()).await {
        // Nothing is pending after all; the caller's retry asks again.
        if let Err(undo) = change(app, tenant, |slot| slot.pending_since = None).await {
            tracing::warn!(tenant, "could not clear the pending mark ({undo}); it lapses after {STALE_AFTER}");
        }
        return Err(e);
    }
    Ok(Requested::Queued)
}

/// A queued poll starts: requests from now on need a poll after this one.
pub async fn begin(app: &App, tenant: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    change(app, tenant, |slot| {
        slot.pending_since = None;
        slot.running_since = Some(now);
    })
    .await
}

/// A poll ended. When it stopped at its cap, the follow-up is asked for (coalesced like any request).
pub async fn finish(app: &App, tenant: &str, now: DateTime<Utc>, report: Option<&PollReport>) -> Result<(), PollError> {
    let ended = change(app, tenant, |slot| slot.running_since = None).await;
    if let Err(e) = ended {
        tracing::warn!(tenant, "could not clear the running mark ({e}); it lapses after {STALE_AFTER}");
    }
    if report.is_some_and(|r| r.more) {
        request(app, tenant, "backlog", now).await.map_err(|e| PollError {
            tenant: tenant.to_string(),
            message: format!("queue the follow-up poll: {e}"),
            retry: crate::graph::Retry::Retryable,
        })?;
    }
    Ok(())
}

/// What a timer does for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerTurn {
    /// Poll now (the slot marks it running).
    Run,
    /// A poll is pending or running; this tick is answered by it or by its follow-up.
    Coalesced(String),
}

/// A timer's turn for `tenant`: poll now, or coalesce into the poll pending (or ask the running one
/// for its follow-up).
pub async fn timer(app: &App, tenant: &str, now: DateTime<Utc>) -> Result<TimerTurn, StoreError> {
    #[derive(Clone, Copy)]
    enum Step {
        Run,
        Pending,
        FollowUp,
    }
    let step = change(app, tenant, |slot| {
        if slot.pending(now) {
            slot.coalesce(now);
            Step::Pending
        } else if slot.running(now) {
            Step::FollowUp
        } else {
            slot.running_since = Some(now);
            Step::Run
        }
    })
    .await?;
    match step {
        Step::Run => Ok(TimerTurn::Run),
        Step::Pending => Ok(TimerTurn::Coalesced("a poll is already queued".into())),
        Step::FollowUp => {
            let r = request(app, tenant, "timer", now).await?;
            Ok(TimerTurn::Coalesced(match r {
                Requested::Queued => "a poll is running; queued its follow-up".into(),
                Requested::Coalesced => "a poll is running and its follow-up is queued".into(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        let s = std::sync::Arc::new(crate::store::sqlite::SqliteStore::in_memory().unwrap());
        let mut config = crate::config::Config::default();
        config.tenants.push(crate::config::TenantConfig { id: "t".into(), name: "t".into(), credential: None });
        App::builder(config)
            .backend(s)
            .graph(std::sync::Arc::new(crate::graph::fake::FakeGraph::new()))
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn one_pending_poll_and_one_follow_up() {
        let app = app();
        let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        assert_eq!(request(&app, "t", "a", now).await.unwrap(), Requested::Queued);
        for _ in 0..5 {
            assert_eq!(request(&app, "t", "b", now).await.unwrap(), Requested::Coalesced);
        }
        assert_eq!(app.queue.len(crate::store::ALERTS_QUEUE).await.unwrap(), 1);
        begin(&app, "t", now).await.unwrap();
        assert_eq!(request(&app, "t", "during", now).await.unwrap(), Requested::Queued);
        assert_eq!(request(&app, "t", "during", now).await.unwrap(), Requested::Coalesced);
        assert!(matches!(timer(&app, "t", now).await.unwrap(), TimerTurn::Coalesced(_)));
        assert_eq!(app.queue.len(crate::store::ALERTS_QUEUE).await.unwrap(), 2);
        assert_eq!(load(&app, "t").await.unwrap().coalesced, 7);
        // A mark nobody cleared lapses.
        let later = now + STALE_AFTER;
        assert_eq!(request(&app, "t", "late", later).await.unwrap(), Requested::Queued);
    }
}
