//! Breaker: a receiver that keeps failing is paused, so its deliveries wait on the queue instead of each
//! spending its timeout on it, then probed with one delivery; the probe's success lets the rest flow.
//!
//! The state lives in the store under `receiver-breaker/{receiver}` and changes by compare-and-swap, so
//! every worker (every Functions instance) sees the same breaker. A receiver that never failed has no
//! record, and its deliveries write none.
//!
//! Each process keeps what it last read of a breaker for [`FRESH_FOR`] ([`Seen`]), so a burst of
//! deliveries to a healthy receiver reads its key about once a second instead of once per delivery. A
//! change this process makes is seen by its next delivery at once (it forgets what it read); one made
//! by another instance is seen within [`FRESH_FOR`], which only means a few more deliveries try a
//! receiver that has just been paused elsewhere, as they would have if they had started a moment sooner.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::receivers::BreakerConfig;
use crate::store::{Change, Store, StoreError, keys};

/// How long a probe may take before another delivery may probe instead (its worker died).
const PROBE_LEASE: Duration = Duration::from_secs(120);
/// While a probe is in flight, the others ask again this soon: a probe that succeeds in a second must
/// not hold them for the whole lease.
const PROBE_RECHECK: Duration = Duration::from_secs(5);

/// One receiver's breaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// Deliveries in a row that failed in a way a retry may fix.
    failures: u32,
    /// Paused until then (the breaker is open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paused_until: Option<DateTime<Utc>>,
    /// A probe is in flight until then (the breaker is half-open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probe_until: Option<DateTime<Utc>>,
}

/// Whether a delivery may go to its receiver now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Send; `clean` when the receiver has no failures on record (a success then writes nothing).
    Go {
        /// No failure on record.
        clean: bool,
    },
    /// Send as the one probe of a paused receiver.
    Probe,
    /// Paused: put the delivery back on the queue until then.
    Wait(DateTime<Utc>),
}

/// What a delivery's result did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It opened (or opened again after a failed probe): `failures` in a row, paused until `until`.
    Opened {
        /// Failures in a row.
        failures: u32,
        /// The end of the pause.
        until: DateTime<Utc>,
    },
    /// It closed: the receiver answered after a pause.
    Closed,
}

/// How long a breaker's state read from the store is used without reading it again.
pub const FRESH_FOR: chrono::Duration = chrono::Duration::seconds(1);

/// This process's recent reads of the breakers, by receiver; held in the [`App`](crate::app::App), one
/// per store.
#[derive(Debug, Default)]
pub struct Seen {
    read: Mutex<HashMap<String, (DateTime<Utc>, State)>>,
}

impl Seen {
    fn fresh(&self, receiver: &str, now: DateTime<Utc>) -> Option<State> {
        let read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        // A clock that went back makes the read stale too.
        read.get(receiver).filter(|(at, _)| *at <= now && now < *at + FRESH_FOR).map(|(_, s)| s.clone())
    }

    fn remember(&self, receiver: &str, now: DateTime<Utc>, state: &State) {
        self.read.lock().unwrap_or_else(|p| p.into_inner()).insert(receiver.to_string(), (now, state.clone()));
    }

    /// Forgets what was read of `receiver`'s breaker: this process just changed it.
    fn forget(&self, receiver: &str) {
        self.read.lock().unwrap_or_else(|p| p.into_inner()).remove(receiver);
    }
}

async fn read(store: &dyn Store, key: &str) -> Result<State, StoreError> {
    Ok(store.get(key).await?.and_then(|v| serde_json::from_slice(&v.value).ok()).unwrap_or_default())
}

fn put(state: &State) -> Vec<u8> {
    serde_json::to_vec(state).expect("breaker state serializes")
}

/// Asks the breaker of `receiver` whether a delivery may go now.
pub async fn admit(store: &dyn Store, seen: &Seen, receiver: &str, now: DateTime<Utc>) -> Result<Admit, StoreError> {
    let key = keys::receiver_breaker(receiver);
    let state = match seen.fresh(receiver, now) {
        Some(state) => state,
        None => {
            let state = read(store, &key).await?;
            seen.remember(receiver, now, &state);
            state
        }
    };
    let Some(paused_until) = state.paused_until else { return Ok(Admit::Go { clean: state.failures == 0 }) };
    if now < paused_until {
        return Ok(Admit::Wait(paused_until));
    }
    // The cool-down is over: one delivery probes, the others wait for its answer.
    let admitted = crate::store::update(store, &key, |current| {
        let mut s: State = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        match (s.paused_until, s.probe_until) {
            (None, _) => Change::Keep(Admit::Go { clean: s.failures == 0 }),
            (Some(until), _) if now < until => Change::Keep(Admit::Wait(until)),
            (Some(_), Some(probe)) if now < probe => {
                let recheck = now + chrono::Duration::from_std(PROBE_RECHECK).expect("short");
                Change::Keep(Admit::Wait(probe.min(recheck)))
            }
            (Some(_), _) => {
                s.probe_until = Some(now + chrono::Duration::from_std(PROBE_LEASE).expect("short"));
                crate::metrics::receiver_breaker(receiver, "half_open");
                Change::Put(put(&s), Admit::Probe)
            }
        }
    })
    .await;
    seen.forget(receiver);
    admitted
}

/// Gives back a probe that sent nothing (its delivery was already done, grouped, held, …), so the next
/// delivery may probe.
pub async fn unprobed(store: &dyn Store, seen: &Seen, receiver: &str) -> Result<(), StoreError> {
    let key = keys::receiver_breaker(receiver);
    let given_back = crate::store::update(store, &key, |current| {
        let mut s: State = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        if s.probe_until.is_none() {
            return Change::Keep(());
        }
        s.probe_until = None;
        Change::Put(put(&s), ())
    })
    .await;
    seen.forget(receiver);
    given_back
}

/// Records that a delivery to `receiver` was answered; closes the breaker if it was open.
pub async fn succeeded(
    store: &dyn Store,
    seen: &Seen,
    receiver: &str,
    admitted: Admit,
) -> Result<Option<Transition>, StoreError> {
    if admitted == (Admit::Go { clean: true }) {
        return Ok(None);
    }
    let key = keys::receiver_breaker(receiver);
    let closed = crate::store::update(store, &key, |current| {
        let s: State = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        if s == State::default() {
            return Change::Keep(false);
        }
        Change::Put(put(&State::default()), s.paused_until.is_some())
    })
    .await;
    seen.forget(receiver);
    let closed = closed?;
    if closed {
        crate::metrics::receiver_breaker(receiver, "closed");
    }
    Ok(closed.then_some(Transition::Closed))
}

/// Records that a delivery to `receiver` failed in a way a retry may fix; opens the breaker after
/// `config.failures` in a row, and at once when the failure was a probe's.
pub async fn failed(
    store: &dyn Store,
    seen: &Seen,
    receiver: &str,
    config: &BreakerConfig,
    admitted: Admit,
    now: DateTime<Utc>,
) -> Result<Option<Transition>, StoreError> {
    let key = keys::receiver_breaker(receiver);
    let cool_down = chrono::Duration::from_std(config.cool_down).unwrap_or(chrono::Duration::minutes(1));
    let opened = crate::store::update(store, &key, |current| {
        let mut s: State = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        s.failures = s.failures.saturating_add(1);
        let probe_failed = admitted == Admit::Probe;
        let already_paused = s.paused_until.is_some_and(|until| now < until);
        let opens = !already_paused && (probe_failed || s.failures >= config.failures);
        let mut transition = None;
        if opens {
            let until = now + cool_down;
            s.paused_until = Some(until);
            s.probe_until = None;
            transition = Some(Transition::Opened { failures: s.failures, until });
        }
        Change::Put(put(&s), transition)
    })
    .await;
    seen.forget(receiver);
    let opened = opened?;
    if opened.is_some() {
        crate::metrics::receiver_breaker(receiver, "open");
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn opens_after_failures_in_a_row_waits_then_lets_one_probe_whose_success_closes_it() {
        let store = SqliteStore::in_memory().unwrap();
        let seen = Seen::default();
        let config = BreakerConfig { failures: 3, cool_down: Duration::from_secs(60) };
        let t0: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        let go = admit(&store, &seen, "soc", t0).await.unwrap();
        assert_eq!(go, Admit::Go { clean: true });
        assert_eq!(succeeded(&store, &seen, "soc", go).await.unwrap(), None);
        assert!(store.get(&keys::receiver_breaker("soc")).await.unwrap().is_none(), "a clean success writes nothing");
        for _ in 0..2 {
            assert_eq!(failed(&store, &seen, "soc", &config, go, t0).await.unwrap(), None);
        }
        // A success in between starts the count again.
        let go = admit(&store, &seen, "soc", t0).await.unwrap();
        assert_eq!(go, Admit::Go { clean: false });
        assert_eq!(succeeded(&store, &seen, "soc", go).await.unwrap(), None);
        for _ in 0..2 {
            assert_eq!(failed(&store, &seen, "soc", &config, Admit::Go { clean: false }, t0).await.unwrap(), None);
        }
        let until = t0 + chrono::Duration::seconds(60);
        assert_eq!(
            failed(&store, &seen, "soc", &config, Admit::Go { clean: false }, t0).await.unwrap(),
            Some(Transition::Opened { failures: 3, until })
        );
        // Paused: every delivery waits for the end of the cool-down; other receivers flow.
        assert_eq!(admit(&store, &seen, "soc", t0 + chrono::Duration::seconds(59)).await.unwrap(), Admit::Wait(until));
        assert_eq!(admit(&store, &seen, "tickets", t0).await.unwrap(), Admit::Go { clean: true });
        // After it: one probe; the others wait for the probe.
        let t1 = until + chrono::Duration::seconds(1);
        assert_eq!(admit(&store, &seen, "soc", t1).await.unwrap(), Admit::Probe);
        // They ask again in seconds, not after the probe's whole lease.
        assert_eq!(admit(&store, &seen, "soc", t1).await.unwrap(), Admit::Wait(t1 + chrono::Duration::seconds(5)));
        // A probe that sent nothing is given back: the next delivery probes.
        unprobed(&store, &seen, "soc").await.unwrap();
        assert_eq!(admit(&store, &seen, "soc", t1).await.unwrap(), Admit::Probe);
        // The probe fails: paused again at once.
        let again = failed(&store, &seen, "soc", &config, Admit::Probe, t1).await.unwrap();
        assert_eq!(again, Some(Transition::Opened { failures: 4, until: t1 + chrono::Duration::seconds(60) }));
        // The next probe succeeds: closed, and the next delivery is clean.
        let t2 = t1 + chrono::Duration::seconds(61);
        assert_eq!(admit(&store, &seen, "soc", t2).await.unwrap(), Admit::Probe);
        assert!(
            matches!(admit(&store, &seen, "soc", t2).await.unwrap(), Admit::Wait(w) if w == t2 + chrono::Duration::seconds(5))
        );
        assert_eq!(succeeded(&store, &seen, "soc", Admit::Probe).await.unwrap(), Some(Transition::Closed));
        // Those that waited for it go at their next look, seconds later.
        assert_eq!(
            admit(&store, &seen, "soc", t2 + chrono::Duration::seconds(5)).await.unwrap(),
            Admit::Go { clean: true }
        );
    }

    /// Counts the reads of breaker keys.
    #[derive(Default)]
    struct Reads(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl crate::store::hooked::Hook for Reads {
        async fn before(&self, op: &crate::store::hooked::Op<'_>) -> crate::store::StoreResult<()> {
            if matches!(op, crate::store::hooked::Op::Get(k) if k.starts_with("receiver-breaker/")) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_process_reads_a_breaker_once_a_second_sees_its_own_changes_at_once_and_others_within_the_second() {
        let inner: std::sync::Arc<dyn Store> = std::sync::Arc::new(SqliteStore::in_memory().unwrap());
        let store = crate::store::hooked::Hooked::new(inner, Reads::default());
        let reads = || store.hook.0.load(std::sync::atomic::Ordering::SeqCst);
        let (here, elsewhere) = (Seen::default(), Seen::default());
        let config = BreakerConfig { failures: 1, cool_down: Duration::from_secs(60) };
        let t0: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        for ms in [0, 10, 500, 999] {
            let now = t0 + chrono::Duration::milliseconds(ms);
            assert_eq!(admit(&store, &here, "soc", now).await.unwrap(), Admit::Go { clean: true });
        }
        assert_eq!(reads(), 1, "a burst within the second reads the key once");
        let t1 = t0 + FRESH_FOR;
        assert_eq!(admit(&store, &here, "soc", t1).await.unwrap(), Admit::Go { clean: true });
        assert_eq!(reads(), 2, "read again once a second has passed");
        // A clock that went back does not trust what was read "later".
        assert_eq!(admit(&store, &here, "soc", t0).await.unwrap(), Admit::Go { clean: true });
        assert_eq!(reads(), 3);

        // Another instance pauses the receiver: this one goes on for what is left of its second ...
        let opened_at = t0 + chrono::Duration::milliseconds(200);
        let go = admit(&store, &elsewhere, "soc", opened_at).await.unwrap();
        assert!(matches!(
            failed(&store, &elsewhere, "soc", &config, go, opened_at).await.unwrap(),
            Some(Transition::Opened { .. })
        ));
        let soon = t0 + chrono::Duration::milliseconds(900);
        assert_eq!(admit(&store, &here, "soc", soon).await.unwrap(), Admit::Go { clean: true });
        // ... and waits from the next read on.
        assert_eq!(
            admit(&store, &here, "soc", t1).await.unwrap(),
            Admit::Wait(opened_at + chrono::Duration::seconds(60))
        );
        // What this instance changes itself it sees at once, without waiting for the second to pass.
        let t2 = opened_at + chrono::Duration::seconds(61);
        assert_eq!(admit(&store, &here, "soc", t2).await.unwrap(), Admit::Probe);
        assert_eq!(succeeded(&store, &here, "soc", Admit::Probe).await.unwrap(), Some(Transition::Closed));
        let before = reads();
        assert_eq!(admit(&store, &here, "soc", t2).await.unwrap(), Admit::Go { clean: true });
        assert_eq!(reads(), before + 1, "its own change made it read again");
    }
}
