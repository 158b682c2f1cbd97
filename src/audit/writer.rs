//! Group commit of audit appends in one process: concurrent records of a tenant-day share one head
//! round-trip.
//!
//! Appended one by one, every record costs four store operations (read the head, announce, write,
//! settle), and the workers of one process that record at once for the same tenant-day race for its one
//! head: each lost swap is a read and a swap more. A [`Writer`] queues each record with its tenant-day
//! and hands it to that day's flush: when none is running the record starts one (a task of its own, so a
//! caller that gives up waiting never strands the others), which takes every record waiting for the day
//! and appends them with [`super::append_all`]'s announcement of up to 64 at once, then takes what came
//! meanwhile, until none is left. Each caller waits for its own record as stored, so nothing is
//! acknowledged before it is in the chain.
//!
//! The chain protocol between processes is untouched: a flush is an ordinary writer, compare-and-swap
//! on the head and pending records finished by whoever comes next.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::oneshot;

use super::{AuditError, Record, Segments, StoreError, append_timed};
use crate::store::Store;

/// A tenant and a UTC day: one chain, one head.
type Day = (String, NaiveDate);

/// A record waiting for its day's flush, with where its answer goes.
struct Waiting {
    now: DateTime<Utc>,
    record: Record,
    answer: oneshot::Sender<Result<Record, AuditError>>,
}

/// This process's audit appends, batched per tenant-day; held in the [`App`](crate::app::App).
pub struct Writer {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    segments: Segments,
    /// The records waiting, per tenant-day whose flush is running: a day is here exactly while its
    /// flush runs.
    days: Mutex<HashMap<Day, Vec<Waiting>>>,
}

impl Shared {
    fn days(&self) -> MutexGuard<'_, HashMap<Day, Vec<Waiting>>> {
        // Only pushes and takes happen under the lock: a panic cannot leave the map half-changed.
        self.days.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("days", &self.shared.days().len()).finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer appending to `store`'s audit trail.
    pub fn new(store: Arc<dyn Store>) -> Writer {
        Writer::with_segments(store, Segments::default())
    }

    /// A writer cutting days into segments of `segments.records` (tests reach a rollover with few).
    pub fn with_segments(store: Arc<dyn Store>, segments: Segments) -> Writer {
        Writer { shared: Arc::new(Shared { store, segments, days: Mutex::default() }) }
    }

    /// Appends `record` to the tenant's stream of the day of `now`, as [`super::append`] does, together
    /// with whatever else this process is recording for that tenant-day; returns it as stored. When the
    /// store fails, every record of the batch gets the error (those of it already in the chain excepted).
    ///
    /// Must be called within a Tokio runtime: the flush is a task of its own.
    pub async fn append(&self, tenant: &str, now: DateTime<Utc>, record: Record) -> Result<Record, AuditError> {
        let (answer, stored) = oneshot::channel();
        let day = (tenant.to_string(), now.date_naive());
        let waiting = Waiting { now, record, answer };
        let start = match self.shared.days().entry(day.clone()) {
            Entry::Occupied(mut running) => {
                running.get_mut().push(waiting);
                false
            }
            Entry::Vacant(idle) => {
                idle.insert(vec![waiting]);
                true
            }
        };
        if start {
            tokio::spawn(flush(self.shared.clone(), day));
        }
        stored.await.unwrap_or_else(|_| Err(StoreError::Backend("the audit writer's flush stopped".into()).into()))
    }
}

/// Appends the waiting records of `day` until none is left, then marks the day idle.
async fn flush(shared: Arc<Shared>, day: Day) {
    let mut running = Running { shared: &shared, day: &day, done: false };
    loop {
        let batch = {
            let mut days = shared.days();
            let waiting = days.get_mut(&day).map(std::mem::take).unwrap_or_default();
            if waiting.is_empty() {
                days.remove(&day);
                running.done = true;
                return;
            }
            waiting
        };
        let (records, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| ((w.now, w.record), w.answer)).unzip();
        let mut stored = Vec::with_capacity(records.len());
        let result = append_timed(shared.store.as_ref(), shared.segments, &day.0, day.1, records, &mut stored).await;
        let mut stored = stored.into_iter();
        for answer in answers {
            // A caller that stopped waiting is not told.
            let _ = answer.send(
                stored.next().ok_or_else(|| result.clone().expect_err("append_timed stores every record or fails")),
            );
        }
    }
}

/// A day's flush in progress: if it ends without finishing (a panic, its runtime shutting down), the
/// day is marked idle again and its waiting callers are told (their answers dropped), so the next
/// record starts a new flush.
struct Running<'a> {
    shared: &'a Shared,
    day: &'a Day,
    done: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.days().remove(self.day);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::audit::{Action, verify};
    use crate::store::hooked::{Hook, Hooked, Op};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{StoreResult, keys};

    /// Counts the swaps of audit heads and, while `fail` is set, fails every write to an audit segment.
    #[derive(Default)]
    struct Heads {
        swaps: AtomicUsize,
        fail: AtomicBool,
    }

    #[async_trait::async_trait]
    impl Hook for Heads {
        async fn before(&self, op: &Op<'_>) -> StoreResult<()> {
            match *op {
                Op::PutIf(k) if k.starts_with("audit-head/") => {
                    self.swaps.fetch_add(1, Ordering::SeqCst);
                }
                Op::Append(s, _) if s.starts_with("audit/") && self.fail.load(Ordering::SeqCst) => {
                    return Err(StoreError::Backend("disk full".into()));
                }
                _ => {}
            }
            Ok(())
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-26T10:00:00Z".parse().unwrap()
    }

    fn hooked(inner: Arc<dyn Store>) -> Arc<Hooked<Heads>> {
        Arc::new(Hooked::new(inner, Heads::default()))
    }

    /// `n` appends from tasks of their own, `writers[i % writers.len()]` for task `i`, all at once; the
    /// records are about alerts `{prefix}{i}`.
    async fn at_once(writers: &[Arc<Writer>], prefix: &str, n: usize) -> Vec<Result<Record, AuditError>> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let writer = writers[i % writers.len()].clone();
                let record = Record::new(&format!("{prefix}{i}"), "v1", Action::Notify);
                let at = now() + chrono::Duration::milliseconds(i as i64);
                tokio::spawn(async move { writer.append("contoso", at, record).await })
            })
            .collect();
        futures::future::join_all(tasks).await.into_iter().map(|t| t.expect("no panic")).collect()
    }

    /// The records of `tenant`'s day as stored, by alert id.
    async fn stored_ids(store: &dyn Store, tenant: &str) -> Vec<String> {
        let day = crate::audit::days(store, Some(tenant)).await.unwrap().remove(0);
        let raw = day.records(store).await.unwrap();
        raw.iter().map(|r| serde_json::from_slice::<Record>(r).unwrap().alert_id).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_make_one_chain_with_few_head_swaps() {
        let store = hooked(Arc::new(SqliteStore::in_memory().unwrap()));
        let writer = Arc::new(Writer::new(store.clone()));
        let n = 300;
        let stored: Vec<Record> = at_once(&[writer], "a", n).await.into_iter().map(Result::unwrap).collect();
        let seqs: HashSet<u64> = stored.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=n as u64).collect(), "every caller has its own place in the chain");
        for (i, r) in stored.iter().enumerate() {
            assert_eq!(r.alert_id, format!("a{i}"), "each caller gets its own record back");
            assert_eq!(
                r.time,
                (now() + chrono::Duration::milliseconds(i as i64)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
        }
        let report = &verify(store.as_ref(), None).await.unwrap()[0];
        assert!(report.ok() && report.records == n, "{report:?}");
        let swaps = store.hook.swaps.load(Ordering::SeqCst);
        // One by one that is two swaps a record (more when they race); batched, two per announcement.
        assert!(swaps * 4 <= n, "{swaps} head swaps for {n} records");
        assert!(store.inner.get(&keys::audit_head("audit/contoso/2026-11-26")).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_caller_and_the_next_append_repairs_the_chain() {
        let store = hooked(Arc::new(SqliteStore::in_memory().unwrap()));
        let writer = Arc::new(Writer::new(store.clone()));
        store.hook.fail.store(true, Ordering::SeqCst);
        let failed = at_once(std::slice::from_ref(&writer), "a", 10).await;
        for r in &failed {
            assert!(matches!(r, Err(AuditError::Store(StoreError::Backend(m))) if m == "disk full"), "{r:?}");
        }
        store.hook.fail.store(false, Ordering::SeqCst);
        let next = writer.append("contoso", now(), Record::new("after", "v1", Action::Notify)).await.unwrap();
        // The failed batch was announced before its write failed: the next writer finished it.
        assert_eq!(next.seq, 11);
        let report = &verify(store.as_ref(), None).await.unwrap()[0];
        assert!(report.ok() && report.records == 11, "{report:?}");
        assert!(writer.shared.days().is_empty(), "no flush is left running");
    }

    /// Two processes on one SQLite file, each with its writer (two handles, two writers), appending to
    /// one tenant-day at once, plus a one-off [`crate::audit::append`]: one chain, every record once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_writers_on_one_store_interleave_into_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secmon.db");
        let a = hooked(Arc::new(SqliteStore::open(&path).unwrap()));
        let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
        let writers = [Arc::new(Writer::new(a.clone())), Arc::new(Writer::new(b.clone()))];
        let one_off = tokio::spawn({
            let b = b.clone();
            async move {
                for i in 0..20 {
                    crate::audit::append(
                        b.as_ref(),
                        "contoso",
                        now(),
                        Record::new(&format!("o{i}"), "v1", Action::Notify),
                    )
                    .await
                    .unwrap();
                }
            }
        });
        let mut stored = Vec::new();
        for round in 0..5 {
            stored.extend(at_once(&writers, &format!("r{round}-"), 40).await.into_iter().map(Result::unwrap));
        }
        one_off.await.unwrap();
        let seqs: HashSet<u64> = stored.iter().map(|r| r.seq).collect();
        assert_eq!(seqs.len(), stored.len(), "no two callers share a place in the chain");
        let report = &verify(a.as_ref(), None).await.unwrap()[0];
        assert!(report.ok() && report.records == 220, "{report:?}");
        let ids = stored_ids(b.as_ref(), "contoso").await;
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 220, "a record was written twice: {ids:?}");
    }

    #[tokio::test]
    async fn days_and_tenants_are_batched_apart() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let writer = Arc::new(Writer::new(store.clone()));
        let late = "2026-11-26T23:59:59.999Z".parse().unwrap();
        let (x, y, z) = tokio::join!(
            writer.append("contoso", late, Record::new("x", "v1", Action::Notify)),
            writer.append("contoso", late + chrono::Duration::milliseconds(1), Record::new("y", "v1", Action::Notify)),
            writer.append("fabrikam", late, Record::new("z", "v1", Action::Notify)),
        );
        assert_eq!([x.unwrap().seq, y.unwrap().seq, z.unwrap().seq], [1, 1, 1]);
        let streams: Vec<String> = verify(store.as_ref(), None).await.unwrap().into_iter().map(|r| r.stream).collect();
        assert_eq!(streams, ["audit/contoso/2026-11-26", "audit/contoso/2026-11-27", "audit/fabrikam/2026-11-26"]);
    }
}
