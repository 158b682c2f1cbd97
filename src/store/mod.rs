//! State and queue behind one small contract, so the pipeline runs the same on every backend.
//!
//! - [`Store::get`] / [`Store::put_if`]: versioned values with ETags (watermarks, subscription records);
//! - [`Store::claim`] / [`Store::renew`] / [`Store::complete`] / [`Store::release`]: the idempotency
//!   key of every side effect: claim first, act, then complete; a crash between claim and complete lets
//!   a retry claim again once the lease runs out, so work is repeated, never skipped. Claims are
//!   fenced: the claimer gets a [`Token`], and only the token of the current holder renews, completes
//!   or releases, so a worker whose lease ran out and was taken over cannot undo or finish the new
//!   holder's claim ([`StoreError::NotHolder`]);
//! - [`Store::append`]: append-only record streams (the audit trail), each record written at its
//!   number with one conditional write, so two writers never both write number `n`;
//! - [`Queue`]: at-least-once messages with a visibility timeout, a dequeue count, and a poison queue;
//! - [`QueueAdmin`]: the operator's side of a queue (look without taking, redrive, delete, recover what a
//!   dead process held), in its own trait ([`admin`]).
//! - [`Store::scan`] / [`Store::delete_if`] / [`Store::delete_stream`]: what retention needs: keys listed
//!   in bounded batches with their version and write time, removed only at the version listed, and
//!   whole audit streams removed once their retention ran out ([`crate::retention`]).
//!
//! Over the contract, the state layer every stage uses instead of writing it out again: [`keys`] (the
//! whole keyspace, one function per key family), [`once()`] (the claim protocol around one side effect)
//! and [`update()`] (compare-and-swap read-modify-write).
//!
//! Backends: [`sqlite`] (embedded, standalone mode); [`azure`] (Blob storage and Storage Queues);
//! `aws` (S3 and SQS, feature `aws`).
//! [`contract`] is the test suite every backend must pass; [`hooked`] wraps a store with a hook around
//! each operation, for tests that crash, kill or watch it at a chosen one.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub mod admin;
#[cfg(feature = "aws")]
pub mod aws;
pub mod azure;
mod cas;
pub mod contract;
pub mod hooked;
pub mod keys;
mod once;
pub mod sqlite;

pub use admin::QueueAdmin;
pub use cas::{CAS_ATTEMPTS, Change, update, update_from};
pub use once::{Once, Put, once, once_reading};

/// An opaque version tag of a stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etag(pub String);

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The bytes.
    pub value: Vec<u8>,
    /// The version they carry.
    pub etag: Etag,
}

/// The condition of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Only if the key has no value (create).
    Absent,
    /// Only if the current version is this one (compare-and-swap).
    Matches(Etag),
}

/// The proof that the caller holds a claim: whatever the backend needs to tell this holder from the
/// next one (a random value, an ETag). Opaque; [`Store::renew`] may hand out a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(pub String);

/// The answer to [`Store::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the key now: perform the effect, then [`Store::complete`] or [`Store::release`]
    /// with this token ([`Store::renew`] it while a long effect runs).
    Acquired(Token),
    /// The effect was already performed: skip it.
    Done,
    /// Someone else holds an unexpired lease: try again later (do not skip, do not act).
    Held,
}

/// What went wrong in a backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A conditional write lost: the value changed (or exists) since it was read.
    #[error("conflict: {key} changed since it was read")]
    Conflict {
        /// The key.
        key: String,
    },
    /// The caller's token is not the holder's: its lease ran out and someone else claimed the key, or
    /// the claim was completed or given back. The caller must not act on it any further.
    #[error("{key} is no longer held by this worker")]
    NotHolder {
        /// The key.
        key: String,
    },
    /// A key or stream name the backend cannot hold.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The backend failed; retrying may help.
    #[error("store backend: {0}")]
    Backend(String),
}

/// Which of a backend's two key spaces a key lives in: values ([`Store::get`]) or claims
/// ([`Store::claim`]). The same key may exist in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Versioned values.
    Values,
    /// Claims.
    Claims,
}

/// A key as [`Store::scan`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The key.
    pub key: String,
    /// Its current version, for [`Store::delete_if`].
    pub etag: Etag,
    /// When it was last written (a value put, a claim taken, renewed or completed), on the store's clock.
    pub written: DateTime<Utc>,
}

/// Result type of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// Versioned state, claims and append-only streams.
#[async_trait]
pub trait Store: Send + Sync {
    /// The value and its version, or `None`.
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>>;
    /// Writes `value` if `cond` holds; returns the new version or [`StoreError::Conflict`].
    async fn put_if(&self, key: &str, value: &[u8], cond: Precondition) -> StoreResult<Etag>;
    /// Writes `value` unconditionally.
    async fn put(&self, key: &str, value: &[u8]) -> StoreResult<Etag>;
    /// Removes a key (no error if absent).
    async fn delete(&self, key: &str) -> StoreResult<()>;
    /// Keys that start with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>>;
    /// Claims `key` for one effect, with a lease of `lease` while the effect runs. An unexpired claim of
    /// someone else is [`Claim::Held`]; an expired one is taken over (its holder's token stops working).
    async fn claim(&self, key: &str, lease: Duration) -> StoreResult<Claim>;
    /// Extends the holder's lease to `lease` from now; returns the token to use from now on.
    /// [`StoreError::NotHolder`] when `token` no longer holds the claim.
    async fn renew(&self, key: &str, token: &Token, lease: Duration) -> StoreResult<Token>;
    /// Marks a claimed effect as performed, for good. [`StoreError::NotHolder`] when `token` no longer
    /// holds the claim (nothing is changed). Completing twice with the holder's token is harmless.
    async fn complete(&self, key: &str, token: &Token) -> StoreResult<()>;
    /// Gives a claim back after a failed effect, so that a retry can claim it at once.
    /// [`StoreError::NotHolder`] when `token` no longer holds it (the holder's claim is left alone); a
    /// completed claim is never undone.
    async fn release(&self, key: &str, token: &Token) -> StoreResult<()>;
    /// [`Store::claim`], and when the claim is acquired the value at `read` as well: what the effect
    /// depends on, read once the claim is held. A backend that can does both in one round trip (SQLite:
    /// one job); the default calls the two in turn.
    async fn claim_reading(&self, key: &str, lease: Duration, read: &str) -> StoreResult<(Claim, Option<Versioned>)> {
        let claim = self.claim(key, lease).await?;
        let value = match claim {
            Claim::Acquired(_) => self.get(read).await?,
            Claim::Done | Claim::Held => None,
        };
        Ok((claim, value))
    }
    /// Writes each of `puts` unconditionally, then [`Store::complete`]s the claim: the records an effect
    /// leaves, written with its completion. The puts stand even when the claim is no longer this
    /// holder's ([`StoreError::NotHolder`]), as they would written one by one before it. A backend that
    /// can does it all in one round trip (SQLite: one job, one commit); the default calls them in turn.
    async fn complete_with(&self, key: &str, token: &Token, puts: &[(String, Vec<u8>)]) -> StoreResult<()> {
        for (k, v) in puts {
            self.put(k, v).await?;
        }
        self.complete(key, token).await
    }
    /// Writes `record` as number `seq` (from 1) of `stream`. [`StoreError::Conflict`] when the stream
    /// already holds a record numbered `seq`: one conditional write decides between two writers of one
    /// number. Callers append in order (number `seq` after `seq - 1`).
    async fn append(&self, stream: &str, seq: u64, record: &[u8]) -> StoreResult<()>;
    /// Writes each `(seq, record)` of `records` to `stream` as [`Store::append`] would, in order, where
    /// the number is still free: a number already taken stands, so writing a batch again after a crash
    /// or a race is harmless (each number has only one record meant for it). Stops at the first other
    /// error, which may leave some of the records written (the default: those before it) or none
    /// (SQLite); writing the batch again finishes it. A backend that can does it in one round trip
    /// (SQLite: one job, one commit); the default appends them in turn.
    async fn append_new(&self, stream: &str, records: &[(u64, Vec<u8>)]) -> StoreResult<()> {
        for (seq, record) in records {
            match self.append(stream, *seq, record).await {
                Ok(()) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    /// Every record of a stream, in append order.
    async fn read_stream(&self, stream: &str) -> StoreResult<Vec<Vec<u8>>>;
    /// Stream names that start with `prefix`, sorted.
    async fn list_streams(&self, prefix: &str) -> StoreResult<Vec<String>>;
    /// Up to `limit` keys of `space` that start with `prefix` and sort after `after` (from the first when
    /// `None`), in key order, each with its version and when it was last written. Retention walks the
    /// keyspace with it, a bounded batch at a time.
    async fn scan(&self, space: Space, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Listed>>;
    /// Removes `key` from `space` only if it is still at version `etag` (as [`Store::scan`] listed it):
    /// true when removed, false when it was written since or is gone. A claim is removed only when it
    /// is completed or its lease has run out: a live claim is never removed, however old.
    async fn delete_if(&self, space: Space, key: &str, etag: &Etag) -> StoreResult<bool>;
    /// Removes a whole stream, every record of it (audit retention; nothing else removes a record).
    /// No error when there is no such stream.
    async fn delete_stream(&self, stream: &str) -> StoreResult<()>;
}

/// A message received from a [`Queue`]; delete it when done, or let it reappear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Message id.
    pub id: String,
    /// The token that proves this receiver holds it (changes on every receive).
    pub receipt: String,
    /// The body.
    pub body: Vec<u8>,
    /// How many times it has been received, this time included.
    pub dequeue_count: u32,
}

/// An at-least-once queue with visibility timeouts and a poison queue (`<name>-poison`).
#[async_trait]
pub trait Queue: Send + Sync {
    /// Puts a message on `queue`.
    async fn send(&self, queue: &str, body: &[u8]) -> StoreResult<()>;
    /// Puts a message on `queue` that stays invisible for `delay` first (a grouping window, a paused
    /// receiver). Backends round up to whole seconds where the service counts in seconds, and cap the
    /// delay at what the service allows ([`MAX_DELAY`] is the least of them), so a caller that needs
    /// longer checks the time again on receipt and sends the message back.
    async fn send_after(&self, queue: &str, body: &[u8], delay: Duration) -> StoreResult<()>;
    /// Puts `bodies` on `queue`, in order: a poll's page of alerts, a decision's delivery jobs. A backend
    /// that can batch writes them at once (SQLite: one transaction, all or none); the default sends them
    /// one by one (the Azure queue has no batch send), and on a failure [`Partial::sent`] says how many
    /// of the first ones are on the queue.
    async fn send_many(&self, queue: &str, bodies: &[Vec<u8>]) -> Result<(), Partial> {
        for (sent, body) in bodies.iter().enumerate() {
            self.send(queue, body).await.map_err(|error| Partial { sent, error })?;
        }
        Ok(())
    }
    /// Takes up to `max` visible messages, hiding each for `visibility`. A message already received
    /// [`Queue::max_dequeue`] times is moved to the poison queue instead of being returned.
    async fn receive(&self, queue: &str, max: usize, visibility: Duration) -> StoreResult<Vec<Received>>;
    /// Deletes a received message; a stale receipt is an error ([`StoreError::Conflict`]).
    async fn delete(&self, queue: &str, msg: &Received) -> StoreResult<()>;
    /// Moves a received message to `<queue>-poison` now (it cannot be processed).
    async fn poison(&self, queue: &str, msg: &Received) -> StoreResult<()>;
    /// Approximate number of messages on `queue`, visible or not.
    async fn len(&self, queue: &str) -> StoreResult<usize>;
    /// After this many receives a message is poison.
    fn max_dequeue(&self) -> u32;
    /// The largest body [`Queue::send`] carries; a larger message travels through the store and the
    /// queue carries a reference to it ([`crate::intake::Message::send`]).
    fn max_body(&self) -> usize;
    /// The operator's side of this queue, where the backend offers one cheaply to the process itself
    /// (the standalone `/metrics` page looks at the messages through it); `None` by default.
    fn admin(&self) -> Option<&dyn QueueAdmin> {
        None
    }
}

/// A [`Queue::send_many`] that failed part-way: the first `sent` bodies are on the queue, the rest are not.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after {sent} sent)")]
pub struct Partial {
    /// How many of the first bodies were sent.
    pub sent: usize,
    /// Why the next one was not.
    pub error: StoreError,
}

/// The name of the poison queue of `queue`.
pub fn poison_name(queue: &str) -> String {
    format!("{queue}-poison")
}

/// The queue every alert version and doorbell travels on.
pub const ALERTS_QUEUE: &str = "alerts";

/// The queue of deliveries: one message per receiver of a decided alert version, and one per route
/// update, each retried, backed off and poisoned on its own.
pub const DELIVERIES_QUEUE: &str = "deliveries";

/// The longest delay [`Queue::send_after`] holds on every backend (SQS's `DelaySeconds` limit).
pub const MAX_DELAY: Duration = Duration::from_secs(900);
