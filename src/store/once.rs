//! The claim protocol, written once: claim → act → complete, or release when the act fails.
//!
//! Every side effect secmon performs (a close, a comment, a notification, an audit record, a queued
//! doorbell) runs through [`once`], so that a redelivered message never performs it twice and a crash
//! between claim and complete repeats it once the lease runs out rather than skipping it. The act is a
//! closure, so the claim's bookkeeping (today a lease; a holder token once claims are fenced) stays
//! inside this module and call sites never handle it.

use std::future::Future;
use std::time::Duration;

use super::{Claim, Store, StoreResult};

/// What [`once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Once<T, E> {
    /// The act ran now and succeeded; the claim is complete, so it never runs again.
    Done(T),
    /// An earlier run completed the claim: the act was skipped.
    AlreadyDone,
    /// Another worker holds an unexpired claim and may be acting now: skipped; try again later.
    Held,
    /// The act failed; the claim was given back so that a retry can act at once.
    Failed(E),
}

/// Runs `act` at most once for `key`: claims it with `lease`, runs `act`, then completes the claim
/// when `act` returns `Ok` or releases it when `act` returns `Err`.
///
/// `Err(StoreError)` only when the claim itself could not be taken (nothing ran). A claim that cannot
/// be completed after the act succeeded, or released after it failed, is logged and left to its lease:
/// the act's own outcome is what the caller needs (the effect happened, or it did not).
pub async fn once<T, E, F, Fut>(store: &dyn Store, key: &str, lease: Duration, act: F) -> StoreResult<Once<T, E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    match store.claim(key, lease).await? {
        Claim::Done => return Ok(Once::AlreadyDone),
        Claim::Held => return Ok(Once::Held),
        Claim::Acquired => {}
    }
    match act().await {
        Ok(t) => {
            if let Err(e) = store.complete(key).await {
                // The effect happened; until the lease runs out the claim still keeps others from it.
                tracing::warn!("could not complete the claim {key}: {e}");
            }
            Ok(Once::Done(t))
        }
        Err(e) => {
            if let Err(release) = store.release(key).await {
                tracing::warn!("could not release the claim {key}: {release}; it frees itself when its lease runs out");
            }
            Ok(Once::Failed(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    const LEASE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn acts_once_and_again_only_after_a_failure() {
        let s = SqliteStore::in_memory().unwrap();
        let failed: Once<(), &str> = once(&s, "k/a", LEASE, || async { Err("boom") }).await.unwrap();
        assert_eq!(failed, Once::Failed("boom"));
        let done: Once<u8, ()> = once(&s, "k/a", LEASE, || async { Ok(7) }).await.unwrap();
        assert_eq!(done, Once::Done(7), "a failed act gives its claim back");
        let again: Once<u8, ()> = once(&s, "k/a", LEASE, || async { unreachable!("done already") }).await.unwrap();
        assert_eq!(again, Once::AlreadyDone);
    }

    #[tokio::test]
    async fn a_held_claim_skips_the_act() {
        let s = SqliteStore::in_memory().unwrap();
        assert_eq!(s.claim("k/b", LEASE).await.unwrap(), Claim::Acquired);
        let held: Once<(), ()> = once(&s, "k/b", LEASE, || async { unreachable!("held") }).await.unwrap();
        assert_eq!(held, Once::Held);
    }
}
