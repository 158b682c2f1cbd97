//! The claim protocol, written once: claim → act → complete, or release when the act fails.
//!
//! Every side effect secmon performs (a close, a comment, a notification, an audit record, a queued
//! doorbell) runs through [`once`], so that a redelivered message never performs it twice and a crash
//! between claim and complete repeats it once the lease runs out rather than skipping it. The act is a
//! closure, so the claim's bookkeeping (the lease, the holder's [`Token`]) stays inside this module and
//! call sites never handle it.
//!
//! **Fencing.** While the act runs, [`once`] renews the lease every third of it, so an act may wait
//! (Graph's `Retry-After`, a mailbox's sending slot, a group's window) as long as its worker is alive
//! and the store answers. When a renewal finds the claim taken (the worker stalled past its lease and
//! another one claimed the key), or no renewal has succeeded for a whole lease, the act is dropped at
//! its next await point and never completes: its outcome is [`Once::Held`], as for any worker that
//! finds someone else holding the claim. So nothing waits inside a lease that has run out, and a stale
//! holder can neither complete nor release the new holder's claim (the store refuses its token).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::{Claim, Store, StoreError, StoreResult, Token, Versioned};

/// What [`once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Once<T, E> {
    /// The act ran now and succeeded; the claim is complete, so it never runs again.
    Done(T),
    /// An earlier run completed the claim: the act was skipped.
    AlreadyDone,
    /// Another worker holds an unexpired claim and may be acting now: skipped (or, when this worker's
    /// lease was lost while acting, abandoned before it completed); try again later.
    Held,
    /// The act failed; the claim was given back so that a retry can act at once.
    Failed(E),
}

/// Runs `act` at most once for `key`: claims it with `lease`, runs `act` while renewing the lease, then
/// completes the claim when `act` returns `Ok` or releases it when `act` returns `Err`.
///
/// `Err(StoreError)` only when the claim itself could not be taken (nothing ran). A claim lost while
/// acting is [`Once::Held`] (the act is dropped unfinished); a claim lost at the very end (the store
/// refuses to complete it) is [`Once::Held`] too, because the new holder decides what happens. A
/// claim that cannot be released after the act failed is logged and left to its lease.
pub async fn once<T, E, F, Fut>(store: &dyn Store, key: &str, lease: Duration, act: F) -> StoreResult<Once<T, E>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let act = move |_: Option<Versioned>| async move { act().await.map(|t| (t, Vec::new())) };
    run(store, key, lease, None, act).await
}

/// A record an act leaves, written with its claim's completion: a key and its new value.
pub type Put = (String, Vec<u8>);

/// [`once`] for an act that depends on the value at `read` and leaves records behind: the claim is
/// taken together with a read of `read` ([`Store::claim_reading`]), the act gets that value, and the
/// records it returns with its outcome are written together with the claim's completion
/// ([`Store::complete_with`]). On a backend that batches, that is two round trips where a claim, a
/// read, a put and a completion were four.
pub async fn once_reading<T, E, F, Fut>(
    store: &dyn Store,
    key: &str,
    lease: Duration,
    read: &str,
    act: F,
) -> StoreResult<Once<T, E>>
where
    F: FnOnce(Option<Versioned>) -> Fut,
    Fut: Future<Output = Result<(T, Vec<Put>), E>>,
{
    run(store, key, lease, Some(read), act).await
}

async fn run<T, E, F, Fut>(
    store: &dyn Store,
    key: &str,
    lease: Duration,
    read: Option<&str>,
    act: F,
) -> StoreResult<Once<T, E>>
where
    F: FnOnce(Option<Versioned>) -> Fut,
    Fut: Future<Output = Result<(T, Vec<Put>), E>>,
{
    let (claim, value) = match read {
        Some(read) => store.claim_reading(key, lease, read).await?,
        None => (store.claim(key, lease).await?, None),
    };
    let mut token = match claim {
        Claim::Done => return Ok(Once::AlreadyDone),
        Claim::Held => return Ok(Once::Held),
        Claim::Acquired(token) => token,
    };
    let Some(outcome) = run_renewing(store, key, lease, &mut token, act(value)).await else {
        return Ok(Once::Held);
    };
    match outcome {
        Ok((t, puts)) => {
            let completed = if puts.is_empty() {
                store.complete(key, &token).await
            } else {
                store.complete_with(key, &token, &puts).await
            };
            match completed {
                Ok(()) => Ok(Once::Done(t)),
                Err(StoreError::NotHolder { .. }) => {
                    tracing::warn!("{key}: the lease ran out as the act finished and another worker holds it now");
                    Ok(Once::Held)
                }
                Err(e) => {
                    // The effect happened; until the lease runs out the claim still keeps others from it.
                    tracing::warn!("could not complete the claim {key}: {e}");
                    Ok(Once::Done(t))
                }
            }
        }
        Err(e) => {
            if let Err(release) = store.release(key, &token).await {
                tracing::warn!("could not release the claim {key}: {release}; it frees itself when its lease runs out");
            }
            Ok(Once::Failed(e))
        }
    }
}

/// Drives `act` to its end while renewing the lease every `lease / 3`; `None` when the claim was lost
/// first (the act is dropped).
async fn run_renewing<R>(
    store: &dyn Store,
    key: &str,
    lease: Duration,
    token: &mut Token,
    act: impl Future<Output = R>,
) -> Option<R> {
    let every = (lease / 3).max(Duration::from_millis(1));
    let mut held_until = Instant::now() + lease;
    tokio::pin!(act);
    loop {
        tokio::select! {
            biased;
            out = &mut act => return Some(out),
            _ = tokio::time::sleep(every) => {}
        }
        // The act is not polled during this one store call; it resumes right after.
        match store.renew(key, token, lease).await {
            Ok(renewed) => {
                *token = renewed;
                held_until = Instant::now() + lease;
            }
            Err(StoreError::NotHolder { .. }) => {
                tracing::warn!("{key}: another worker took the claim while this one acted; abandoning the act");
                return None;
            }
            Err(e) if Instant::now() + every >= held_until => {
                tracing::warn!("{key}: the lease could not be renewed in time ({e}); abandoning the act");
                return None;
            }
            Err(e) => tracing::warn!("{key}: could not renew the lease ({e}); trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::clock::ManualClock;
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
    async fn an_act_reading_gets_the_value_and_its_records_are_written_only_when_it_succeeds() {
        let s = SqliteStore::in_memory().unwrap();
        s.put("last/a", b"1").await.unwrap();
        let put = || vec![("last/a".to_string(), b"2".to_vec())];
        let failed: Once<(), &str> = once_reading(&s, "k/r", LEASE, "last/a", |v| async move {
            assert_eq!(v.unwrap().value, b"1");
            Err("boom")
        })
        .await
        .unwrap();
        assert_eq!(failed, Once::Failed("boom"));
        assert_eq!(s.get("last/a").await.unwrap().unwrap().value, b"1", "a failed act writes nothing");
        let done: Once<u8, ()> = once_reading(&s, "k/r", LEASE, "last/a", |v| async move {
            assert_eq!(v.unwrap().value, b"1");
            Ok((7, put()))
        })
        .await
        .unwrap();
        assert_eq!(done, Once::Done(7));
        assert_eq!(s.get("last/a").await.unwrap().unwrap().value, b"2");
        assert!(matches!(s.claim("k/r", LEASE).await.unwrap(), Claim::Done));
        let again: Once<u8, ()> =
            once_reading(&s, "k/r", LEASE, "last/a", |_| async { unreachable!("done already") }).await.unwrap();
        assert_eq!(again, Once::AlreadyDone);
    }

    #[tokio::test]
    async fn a_held_claim_skips_the_act() {
        let s = SqliteStore::in_memory().unwrap();
        assert!(matches!(s.claim("k/b", LEASE).await.unwrap(), Claim::Acquired(_)));
        let held: Once<(), ()> = once(&s, "k/b", LEASE, || async { unreachable!("held") }).await.unwrap();
        assert_eq!(held, Once::Held);
    }

    fn manual() -> (SqliteStore, std::sync::Arc<ManualClock>) {
        let clock = std::sync::Arc::new(ManualClock::new("2026-11-26T10:00:00Z".parse().unwrap()));
        (SqliteStore::in_memory().unwrap().with_clock(clock.clone()), clock)
    }

    #[tokio::test(start_paused = true)]
    async fn an_act_longer_than_its_lease_keeps_the_claim_by_renewing_it() {
        let (s, clock) = manual();
        let lease = Duration::from_secs(30);
        let acts = AtomicUsize::new(0);
        // The act takes four leases; the store's clock moves with it, so an unrenewed lease would run out.
        let slow = once(&s, "k/slow", lease, || async {
            for _ in 0..8 {
                tokio::time::sleep(lease / 2).await;
                clock.advance(chrono::Duration::from_std(lease / 2).unwrap());
            }
            acts.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(())
        });
        let other = async {
            let mut seen = Vec::new();
            for _ in 0..6 {
                tokio::time::sleep(lease / 2 + Duration::from_secs(1)).await;
                seen.push(
                    once(&s, "k/slow", lease, || async {
                        acts.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ()>(())
                    })
                    .await
                    .unwrap(),
                );
            }
            seen
        };
        let (slow, seen) = tokio::join!(slow, other);
        assert_eq!(slow.unwrap(), Once::Done(()));
        assert!(seen.iter().all(|o| *o == Once::Held), "{seen:?}");
        assert_eq!(acts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_act_whose_claim_was_taken_is_abandoned_and_cannot_complete() {
        let (s, clock) = manual();
        let lease = Duration::from_secs(30);
        let acts = AtomicUsize::new(0);
        let (stalled_tx, stalled) = tokio::sync::oneshot::channel::<()>();
        let (_never_tx, never) = tokio::sync::oneshot::channel::<()>();
        let stale = once(&s, "k/stolen", lease, || async {
            let _ = stalled_tx.send(());
            // Stands for a worker that stops making progress (a paused VM, a stuck call).
            let _ = never.await;
            acts.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(())
        });
        let thief = async {
            stalled.await.unwrap();
            // The store's clock runs past the lease before the stale worker's first renewal.
            clock.advance(chrono::Duration::from_std(lease * 2).unwrap());
            let taken = once(&s, "k/stolen", lease, || async {
                acts.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
            assert_eq!(taken, Once::Done(()));
        };
        let (stale, ()) = tokio::join!(stale, thief);
        assert_eq!(stale.unwrap(), Once::Held, "the stale holder's act is abandoned");
        assert_eq!(acts.load(Ordering::SeqCst), 1);
        assert!(matches!(s.claim("k/stolen", lease).await.unwrap(), Claim::Done));
    }
}
