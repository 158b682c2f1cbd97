//! What an operator does to a queue by hand, next to what the pipeline does ([`super::Queue`]): look at
//! its messages without taking them, move one from a poison queue back to its queue (redrive), delete
//! one for good, and make visible again what a dead process held.
//!
//! These are their own trait, not part of [`super::Queue`], so that the pipeline's contract stays small
//! and each backend's implementation sits in one block at the end of its file. They work on any queue
//! name (`alerts`, a delivery queue, their `-poison` queues). How each backend looks without taking:
//! - SQLite reads the table: every message, visible or not, nothing changes;
//! - Azure Storage Queues peek at the first 32 visible messages (the service shows no more without
//!   receiving); moving or deleting one by id receives the queue's messages for a moment and gives back
//!   the ones it did not want at once;
//! - SQS cannot look without receiving: it receives (hiding the messages for a moment, which counts
//!   towards their receive count) and gives them back at once, so it is only asked to on poison queues.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{StoreResult, poison_name};

/// One message as an operator sees it: not received, not changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Message id (stable while the message stays on its queue).
    pub id: String,
    /// The body.
    pub body: Vec<u8>,
    /// When it was put on the queue, when the backend says.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// How many times it has been received.
    pub dequeue_count: u32,
}

/// The operator's side of a queue; see the module docs.
#[async_trait]
pub trait QueueAdmin: Send + Sync {
    /// Up to `max` messages of `queue`, oldest first, without receiving them. `complete` is false when
    /// the backend could not show them all (Azure shows the first 32).
    async fn peek(&self, queue: &str, max: usize) -> StoreResult<Peeked>;
    /// Moves message `id` from `from` to the end of `to`, counted as never received; `false` when
    /// `from` holds no such message. A crash in between leaves it on both, never on neither.
    async fn move_message(&self, from: &str, id: &str, to: &str) -> StoreResult<bool>;
    /// Deletes message `id` of `queue` for good; `false` when there is none.
    async fn remove(&self, queue: &str, id: &str) -> StoreResult<bool>;
    /// Whether [`QueueAdmin::peek`] leaves a queue's messages exactly as they were (SQS's does not: it
    /// receives them for a moment, so it must not be used on a queue a worker reads).
    fn peek_is_free(&self) -> bool {
        true
    }
    /// Makes the messages held by processes that are gone visible again at once, instead of after their
    /// visibility timeout; returns how many. Only a backend that knows who holds a message (SQLite,
    /// where every process records itself) can; the others return 0 and the timeout applies.
    async fn recover_dead_leases(&self) -> StoreResult<usize> {
        Ok(0)
    }
}

/// What [`QueueAdmin::peek`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peeked {
    /// The messages, oldest first.
    pub messages: Vec<Listed>,
    /// Whether these are all the messages of the queue.
    pub complete: bool,
}

/// The tenant a message names (`{"tenant": …}` at its top level), if it is JSON that does.
pub fn tenant_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("tenant")?.as_str().map(str::to_string)
}

/// Depth, age and poison count of one queue, and the same per tenant.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Messages on it, visible or not.
    pub depth: usize,
    /// Age of the oldest message looked at, in seconds.
    pub oldest_age_secs: Option<i64>,
    /// Messages on `<queue>-poison`.
    pub poison: usize,
    /// Per tenant (from the messages that name one): messages and poison messages.
    pub tenants: std::collections::BTreeMap<String, TenantCounts>,
    /// Whether the per-tenant counts and the age cover every message (see [`QueueAdmin::peek`]).
    pub complete: bool,
}

/// One tenant's share of a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantCounts {
    /// Messages on the queue.
    pub depth: usize,
    /// Messages on its poison queue.
    pub poison: usize,
}

/// How many messages [`stats`] looks at per queue.
pub const STATS_SAMPLE: usize = 10_000;

/// The [`QueueStats`] of `queue` at `now`.
pub async fn stats(
    queue: &dyn super::Queue,
    admin: &dyn QueueAdmin,
    name: &str,
    now: DateTime<Utc>,
) -> StoreResult<QueueStats> {
    let poison = poison_name(name);
    let mut out = QueueStats {
        queue: name.to_string(),
        depth: queue.len(name).await?,
        poison: queue.len(&poison).await?,
        complete: true,
        ..Default::default()
    };
    let main = if admin.peek_is_free() {
        admin.peek(name, STATS_SAMPLE).await?
    } else {
        Peeked { messages: Vec::new(), complete: out.depth == 0 }
    };
    let dead = admin.peek(&poison, STATS_SAMPLE).await?;
    out.complete = main.complete && dead.complete;
    out.oldest_age_secs =
        main.messages.iter().filter_map(|m| m.enqueued_at).min().map(|t| (now - t).num_seconds().max(0));
    for m in &main.messages {
        if let Some(t) = tenant_of(&m.body) {
            out.tenants.entry(t).or_default().depth += 1;
        }
    }
    for m in &dead.messages {
        if let Some(t) = tenant_of(&m.body) {
            out.tenants.entry(t).or_default().poison += 1;
        }
    }
    Ok(out)
}

/// What the `/metrics` page shows of one queue beyond its depth, from the messages looked at
/// ([`STATS_SAMPLE`] at most; `complete` says whether that was all of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Per tenant (from the messages that name one): messages, and the age of the oldest in seconds.
    pub tenants: std::collections::BTreeMap<String, (usize, Option<i64>)>,
    /// Per receiver: delivery jobs that tell it (`task.kind = "notify"`), waiting or in work.
    pub receivers: std::collections::BTreeMap<String, usize>,
    /// Whether every message was looked at.
    pub complete: bool,
}

/// The [`Gauges`] of `queue` at `now`.
pub async fn gauges(admin: &dyn QueueAdmin, queue: &str, now: DateTime<Utc>) -> StoreResult<Gauges> {
    #[derive(serde::Deserialize)]
    struct Named {
        tenant: Option<String>,
        task: Option<Task>,
    }
    #[derive(serde::Deserialize)]
    struct Task {
        kind: Option<String>,
        receiver: Option<String>,
    }
    let peeked = admin.peek(queue, STATS_SAMPLE).await?;
    let mut out = Gauges { complete: peeked.complete, ..Gauges::default() };
    for m in &peeked.messages {
        let Ok(named) = serde_json::from_slice::<Named>(&m.body) else { continue };
        if let Some(tenant) = named.tenant {
            let age = m.enqueued_at.map(|t| (now - t).num_seconds().max(0));
            let entry = out.tenants.entry(tenant).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(age);
        }
        if let Some(Task { kind: Some(kind), receiver: Some(receiver) }) = named.task
            && kind == "notify"
        {
            *out.receivers.entry(receiver).or_default() += 1;
        }
    }
    Ok(out)
}

/// How long a backend that must receive to look hides what it looked at, at most (it gives them back
/// at once when done).
pub const SCAN_VISIBILITY: Duration = Duration::from_secs(30);
