//! Retention: the `sweep` timer removes what outlived its lifetime, a bounded batch per run.
//!
//! Every key family of [`crate::store::keys`] has a lifetime (`docs/operations.md` has the table). The
//! families that grow with the alerts — idempotency claims and the records beside them, counters,
//! large alerts, SQS receipts — are swept here by their last write time: a key is removed only when
//! its last write is older than its family's lifetime, and only at the version the scan listed
//! ([`Store::delete_if`]), so a key written meanwhile (a claim taken, renewed or completed again) is
//! never removed. A claim's lease is minutes and every lifetime is at least hours, so a live claim is
//! never old enough to be listed as expired. The families that do not grow (one key per tenant or
//! receiver: watermarks, seen windows, poll slots, health, budgets, pending digests) are kept; the
//! subscription records are kept and removed by `graph-subscriptions`.
//!
//! The audit trail is removed by whole UTC days: a tenant-day's segments and then its head, once
//! `retention.audit_days` full days (and one day of margin) have passed since the day ended, never
//! earlier. In Azure the audit container's immutability policy (the same number of days, one Bicep
//! parameter) refuses an earlier delete too; a refusal stops the audit part of the run, which tries
//! again next time.
//!
//! Each run looks at no more than `retention.batch` keys and remembers where it stopped in
//! `sweep/cursor` (written after each batch, before the next), so a long store is swept over several
//! runs and a crash repeats at most one batch, never skips one. The poison queue is never swept: each
//! run counts it, and a non-empty one is a warning in the run's log until someone looks at it.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::audit;
use crate::config::RetentionConfig;
use crate::store::{ALERTS_QUEUE, Queue, Space, Store, StoreError, keys, poison_name};

/// Which configured lifetime a family has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifetime {
    /// `retention.claims`.
    Claims,
    /// `retention.counters`.
    Counters,
    /// `retention.large_alerts`.
    LargeAlerts,
}

/// One swept key family: its prefix, its space and its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The key prefix (`close/`).
    pub prefix: &'static str,
    /// Values or claims.
    pub space: Space,
    /// Its lifetime.
    pub lifetime: Lifetime,
}

const fn family(prefix: &'static str, space: Space, lifetime: Lifetime) -> Family {
    Family { prefix, space, lifetime }
}

/// The families the sweep removes by age, in the order it walks them.
pub const FAMILIES: &[Family] = &[
    family("alerts/", Space::Values, Lifetime::LargeAlerts),
    family("audited/", Space::Claims, Lifetime::Claims),
    family("botcard/", Space::Values, Lifetime::Claims),
    family("breaker/", Space::Values, Lifetime::Counters),
    family("breaker-notice/", Space::Claims, Lifetime::Counters),
    family("close/", Space::Claims, Lifetime::Claims),
    family("close-outcome/", Space::Values, Lifetime::Claims),
    family("close-started/", Space::Values, Lifetime::Claims),
    family("comment/", Space::Claims, Lifetime::Claims),
    family("digest-member/", Space::Values, Lifetime::Claims),
    family("digest-send/", Space::Claims, Lifetime::Claims),
    family("doorbell/", Space::Claims, Lifetime::Counters),
    family("notify/", Space::Claims, Lifetime::Claims),
    family("notify-digest/", Space::Claims, Lifetime::Claims),
    family("notify-group/", Space::Values, Lifetime::Claims),
    family("notify-last/", Space::Values, Lifetime::Claims),
    family("queue-receipts/", Space::Values, Lifetime::Claims),
    family("ratelimit/", Space::Values, Lifetime::Counters),
    family("silence-ended/", Space::Claims, Lifetime::Claims),
    family("silence-renotify/", Space::Claims, Lifetime::Claims),
    family("triage-link/", Space::Values, Lifetime::Claims),
    family("triage/", Space::Claims, Lifetime::Claims),
    family("update/", Space::Claims, Lifetime::Claims),
];

/// The key of the sweep's own cursor.
pub const CURSOR: &str = "sweep/cursor";

/// Where the sweep goes on: the family (an index of [`FAMILIES`]; one past the end is the audit trail)
/// and the last key it looked at in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Index into [`FAMILIES`]; `FAMILIES.len()` is the audit trail.
    pub family: usize,
    /// The last key looked at in that family.
    pub after: Option<String>,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Keys looked at.
    pub examined: usize,
    /// Keys removed (expired, and unchanged since they were listed).
    pub removed: usize,
    /// Tenant-days of audit removed (each with all its segments and its head).
    pub audit_days_removed: usize,
    /// Why the audit part stopped early (a refused delete), if it did.
    pub audit_refused: Option<String>,
    /// Messages waiting on the poison queue (never swept).
    pub poison: usize,
    /// Where the next run goes on.
    pub cursor: Cursor,
}

/// The last UTC day whose audit may be removed at `now`: `audit_days` full days after the day ended,
/// plus one day of margin (clock skew between writers, a blob created just after midnight).
pub fn last_expired_audit_day(now: DateTime<Utc>, audit_days: u32) -> Option<NaiveDate> {
    now.date_naive().checked_sub_days(chrono::Days::new(u64::from(audit_days) + 2))
}

fn lifetime(config: &RetentionConfig, l: Lifetime) -> chrono::Duration {
    let d = match l {
        Lifetime::Claims => config.claims,
        Lifetime::Counters => config.counters,
        Lifetime::LargeAlerts => config.large_alerts,
    };
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// One run of the sweep at `now`: goes on from the stored cursor through the families and then the audit
/// trail, looking at no more than `config.batch` keys (or audit segments), and stores where it stopped.
pub async fn sweep(
    store: &dyn Store,
    queue: &dyn Queue,
    config: &RetentionConfig,
    now: DateTime<Utc>,
) -> Result<SweepReport, StoreError> {
    let mut cursor: Cursor = match store.get(CURSOR).await? {
        Some(v) => serde_json::from_slice(&v.value).unwrap_or_default(),
        None => Cursor::default(),
    };
    if cursor.family > FAMILIES.len() {
        cursor = Cursor::default();
    }
    let mut report = SweepReport::default();
    let mut budget = config.batch.max(1);
    // Each family at most once per run, so a store with little in it is not walked round and round.
    for _ in 0..=FAMILIES.len() {
        if budget == 0 {
            break;
        }
        let finished = match FAMILIES.get(cursor.family) {
            Some(f) => sweep_family(store, config, *f, now, &mut cursor, &mut budget, &mut report).await?,
            None => sweep_audit(store, config, now, &mut budget, &mut report).await?,
        };
        if finished {
            cursor = Cursor { family: (cursor.family + 1) % (FAMILIES.len() + 1), after: None };
        }
        store.put(CURSOR, &serde_json::to_vec(&cursor).expect("cursors serialize")).await?;
    }
    report.poison = queue.len(&poison_name(ALERTS_QUEUE)).await.unwrap_or(0);
    report.cursor = cursor;
    Ok(report)
}

/// Sweeps `family` from the cursor on in batches until the budget is spent (false) or the family's
/// end is reached (true); the cursor is stored after each batch.
async fn sweep_family(
    store: &dyn Store,
    config: &RetentionConfig,
    family: Family,
    now: DateTime<Utc>,
    cursor: &mut Cursor,
    budget: &mut usize,
    report: &mut SweepReport,
) -> Result<bool, StoreError> {
    let cutoff = now - lifetime(config, family.lifetime);
    while *budget > 0 {
        let ask = (*budget).min(1000);
        let listed = store.scan(family.space, family.prefix, cursor.after.as_deref(), ask).await?;
        *budget -= listed.len().min(*budget);
        report.examined += listed.len();
        for l in &listed {
            if l.written < cutoff && store.delete_if(family.space, &l.key, &l.etag).await? {
                report.removed += 1;
            }
        }
        if listed.len() < ask {
            return Ok(true);
        }
        cursor.after = listed.last().map(|l| l.key.clone());
        store.put(CURSOR, &serde_json::to_vec(&cursor).expect("cursors serialize")).await?;
    }
    Ok(false)
}

/// Removes the tenant-days of audit older than the retention: each day's head, then its segments (a
/// day interrupted half-way is still listed by its remaining segments, so the next run finishes it).
/// True when nothing expired is left, or a delete was refused (the next run tries again).
async fn sweep_audit(
    store: &dyn Store,
    config: &RetentionConfig,
    now: DateTime<Utc>,
    budget: &mut usize,
    report: &mut SweepReport,
) -> Result<bool, StoreError> {
    let Some(last) = last_expired_audit_day(now, config.audit_days) else { return Ok(true) };
    for day in audit::days(store, None).await?.into_iter().filter(|d| d.date <= last) {
        if *budget < day.segments.len() {
            return Ok(false);
        }
        store.delete(&keys::audit_head(&day.stream)).await?;
        for (_, segment) in &day.segments {
            *budget -= 1;
            report.examined += 1;
            if let Err(e) = store.delete_stream(segment).await {
                tracing::warn!("sweep: audit {segment} not removed: {e}");
                report.audit_refused = Some(e.to_string());
                return Ok(true);
            }
        }
        report.audit_days_removed += 1;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every swept prefix is the family of a key [`keys`] makes, so a renamed family cannot silently
    /// stop being swept.
    #[test]
    fn every_swept_prefix_is_a_family_of_the_keyspace() {
        let now: DateTime<Utc> = "2026-11-26T10:42:00Z".parse().unwrap();
        let made = [
            keys::large_alert("t", "d"),
            keys::audited("t", "a", "v", "close"),
            keys::botcard("t", "a", "r"),
            keys::breaker("t", "r", now),
            keys::breaker_notice("t", "r", now),
            keys::close("t", "a", "v"),
            keys::close_outcome("t", "a", "v"),
            keys::close_started("t", "a", "v"),
            keys::comment("t", "a", "v"),
            keys::digest_member("t", "a", "v", "r"),
            keys::digest_send("t", "r", now, 1),
            keys::doorbell("s"),
            keys::notify("t", "a", "v", "r"),
            keys::notify_digest("t", "r", "i"),
            keys::notify_group("t", "r", "i"),
            keys::notify_last("t", "a", "r"),
            keys::queue_receipt("q", "m"),
            keys::mail_slots("s@x", now),
            keys::silence_ended("s"),
            keys::silence_renotify("s", "t", "a", "r"),
            keys::triage_link("n"),
            keys::triage("t", "a", "v", "resolve", "u"),
            keys::update("t", "a", "v", "r"),
        ];
        assert_eq!(made.len(), FAMILIES.len());
        for (key, f) in made.iter().zip(FAMILIES) {
            assert!(key.starts_with(f.prefix), "{key} is not in {}", f.prefix);
            // The prefix is the whole family name: `notify/` does not also sweep `notify-last/`.
            assert_eq!(key.split('/').next().map(|n| format!("{n}/")).as_deref(), Some(f.prefix));
        }
    }

    use crate::clock::{Clock, ManualClock};
    use crate::store::sqlite::SqliteStore;
    use std::sync::Arc;

    fn config(batch: usize) -> RetentionConfig {
        RetentionConfig { batch, ..RetentionConfig::default() }
    }

    /// Ten expired close outcomes and ten fresh ones: small batches remove exactly the expired ten over
    /// several runs, each going on where the last stopped.
    #[tokio::test]
    async fn runs_go_on_where_the_last_stopped_and_leave_fresh_keys() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let s = SqliteStore::in_memory().unwrap().with_clock(clock.clone());
        for i in 0..10 {
            s.put(&keys::close_outcome("t", &format!("old{i}"), "v"), b"failed").await.unwrap();
        }
        clock.advance(chrono::Duration::days(29));
        for i in 0..10 {
            s.put(&keys::close_outcome("t", &format!("new{i}"), "v"), b"failed").await.unwrap();
        }
        clock.advance(chrono::Duration::days(2));
        let mut removed = Vec::new();
        for _ in 0..12 {
            removed.push(sweep(&s, &s, &config(4), clock.now()).await.unwrap().removed);
        }
        assert!(removed.iter().all(|n| *n <= 4), "bounded: {removed:?}");
        assert_eq!(removed.iter().sum::<usize>(), 10, "{removed:?}");
        let left = s.list("close-outcome/").await.unwrap();
        assert_eq!(left.len(), 10, "{left:?}");
        assert!(left.iter().all(|k| k.contains("new")), "{left:?}");
    }

    /// Fails a store's conditional deletes after `ok` of them: a crashed run.
    struct Crashing {
        ok: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl crate::store::hooked::Hook for Crashing {
        async fn before(&self, op: &crate::store::hooked::Op<'_>) -> crate::store::StoreResult<()> {
            use std::sync::atomic::Ordering;
            if !matches!(op, crate::store::hooked::Op::DeleteIf(_)) {
                return Ok(());
            }
            self.ok
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
                .map(|_| ())
                .map_err(|_| StoreError::Backend("injected crash".into()))
        }
    }

    /// A run that crashes half-way through a batch is repeated from the batch's start: nothing expired
    /// is skipped.
    #[tokio::test]
    async fn a_crashed_run_repeats_its_batch_and_skips_nothing() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let inner = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
        for i in 0..9 {
            inner.put(&keys::notify_last("t", &format!("a{i}"), "soc"), b"{}").await.unwrap();
        }
        clock.advance(chrono::Duration::days(31));
        let s = crate::store::hooked::Hooked::new(inner.clone(), Crashing { ok: 4.into() });
        assert_eq!(sweep(&s, inner.as_ref(), &config(3), clock.now()).await.unwrap().removed, 3);
        // The second run removes one more and crashes on the next: its batch is not remembered as done.
        assert!(sweep(&s, inner.as_ref(), &config(3), clock.now()).await.is_err(), "the injected crash");
        let cursor: Cursor = serde_json::from_slice(&inner.get(CURSOR).await.unwrap().unwrap().value).unwrap();
        assert_eq!(cursor.after.as_deref(), Some(keys::notify_last("t", "a2", "soc").as_str()), "{cursor:?}");
        s.hook.ok.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..4 {
            sweep(&s, inner.as_ref(), &config(3), clock.now()).await.unwrap();
        }
        assert!(inner.list("notify-last/").await.unwrap().is_empty());
    }

    /// A claim whose lease is running is not removed, however old its last write; an expired lease is.
    #[tokio::test]
    async fn a_live_claim_is_never_swept() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let s = SqliteStore::in_memory().unwrap().with_clock(clock.clone());
        let long = std::time::Duration::from_secs(90 * 24 * 3600);
        assert!(matches!(
            s.claim(&keys::close("t", "live", "v"), long).await.unwrap(),
            crate::store::Claim::Acquired(_)
        ));
        let short = std::time::Duration::from_secs(60);
        assert!(matches!(
            s.claim(&keys::close("t", "dead", "v"), short).await.unwrap(),
            crate::store::Claim::Acquired(_)
        ));
        clock.advance(chrono::Duration::days(40));
        sweep(&s, &s, &config(100), clock.now()).await.unwrap();
        let left: Vec<String> =
            s.scan(Space::Claims, "close/", None, 10).await.unwrap().into_iter().map(|l| l.key).collect();
        assert_eq!(left, [keys::close("t", "live", "v")]);
    }

    #[test]
    fn an_audit_day_is_kept_its_days_and_a_day_of_margin() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 10).unwrap();
        let at = |d: NaiveDate| d.and_hms_opt(23, 59, 0).unwrap().and_utc();
        // 400 full days after the 10th ended is the end of 2027-02-14; the day after that is margin.
        assert!(last_expired_audit_day(at(NaiveDate::from_ymd_opt(2027, 2, 15).unwrap()), 400).unwrap() < day);
        assert_eq!(last_expired_audit_day(at(NaiveDate::from_ymd_opt(2027, 2, 16).unwrap()), 400), Some(day));
    }
}
