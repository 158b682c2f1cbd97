//! The audit trail: one append-only record per decision that changed, or would have changed, something.
//!
//! Records live in store streams `audit/{tenant}/{YYYY-MM-DD}` (UTC day of the decision). Each record
//! carries its sequence number, the hash of the record before it (the first one: the hash of the stream
//! name, so a record cannot be moved to another stream) and its own hash: SHA-256 over the record's
//! canonical JSON with `hash` empty. [`verify`] walks every chain and says which record was changed,
//! removed or reordered; the head key `audit-head/{tenant}/{day}` (last sequence number and hash) also
//! catches records cut off the end.
//!
//! Writers take no lock (a lock's lease can run out under a slow writer and be stolen). The head is
//! advanced with compare-and-swap and carries the next record as `pending`: only the writer whose swap
//! from "ends at `n`" to "`n + 1` is pending" wins may announce record `n + 1`, so the chain cannot
//! fork. The record is then written as number `n + 1` of the stream with one conditional write
//! ([`Store::append`]), which fails for everyone but the first, so it cannot be written twice — by a
//! writer that stalled, or by the next writer, which finishes a pending record it finds before it
//! announces its own. A writer that dies at any point leaves either nothing or a pending record that the
//! next one finishes. Streams written before this scheme (under the old `audit-lock/…` claim) keep
//! their layout and verify as before.
//!
//! The chain makes edits *evident*, not impossible: someone who can write the store can also rewrite the
//! whole chain and the head. Anchor it by exporting the daily head hash somewhere else (`audit export`
//! prints every hash).

use std::io::Write;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::rules::Mode;
use crate::store::{Precondition, Store, StoreError, keys};

/// How many times a writer reads the head again after another writer moved it, before it gives up
/// (the caller retries the message). Every lost round means another record was appended.
const APPEND_ROUNDS: usize = 64;

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The alert was resolved in Graph by a rule.
    Close,
    /// A rule in shadow mode (or with closing switched off) would have closed the alert.
    WouldClose,
    /// A rule matched but a guardrail stopped it (severity above the rule's limit, a secmon alert).
    CloseBlocked,
    /// Graph refused the close for good; the alert was routed instead.
    CloseFailed,
    /// The rule's circuit breaker was open; the alert was routed instead.
    BreakerOpen,
    /// A receiver was notified.
    Notify,
    /// A receiver could not be notified.
    NotifyFailed,
    /// A notification was held back (realert interval).
    NotifySuppressed,
    /// A notification was folded into its incident's group.
    NotifyGrouped,
    /// The receiver's posting budget was spent: the alert waits for the next digest.
    NotifyDeferred,
    /// A digest was sent: the alerts that waited for the receiver's budget, in one message (the
    /// record's alert id is the digest's, `digest-…`; its detail lists the alerts).
    NotifyDigest,
    /// A route's `set:` updated the alert in Graph.
    Update,
    /// A route's update was refused.
    UpdateFailed,
    /// A route's update was not applied (the alert changed since it was read).
    UpdateSkipped,
    /// A receiver's circuit breaker opened: it failed too often in a row and is paused for its
    /// cool-down (its deliveries wait on the queue). The record is about the delivery that opened it.
    ReceiverPaused,
    /// A receiver's probe succeeded after a pause: its breaker closed and its deliveries flow again.
    ReceiverResumed,
}

impl std::fmt::Display for Action {
    /// The name as stored (`close`, `notify_failed`, …).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = serde_json::to_value(self).expect("actions serialize");
        f.write_str(name.as_str().expect("actions serialize as strings"))
    }
}

/// One audit record: what a caller records ([`Record::new`] and the fields it knows), and what
/// [`append`] stores once it has added the time, the tenant, the place in the chain and the hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the stream, from 1.
    pub seq: u64,
    /// When the decision was made (RFC 3339, UTC).
    pub time: String,
    /// Tenant name.
    pub tenant: String,
    /// Alert id.
    pub alert_id: String,
    /// Alert version.
    pub alert_version: String,
    /// Rule id.
    pub rule_id: Option<String>,
    /// SHA-256 of the rule's text.
    pub rule_hash: Option<String>,
    /// Rule mode.
    pub mode: Option<Mode>,
    /// What was done.
    pub action: Action,
    /// Status before.
    pub status_before: Option<String>,
    /// Status after.
    pub status_after: Option<String>,
    /// Graph's HTTP status.
    pub graph_status: Option<u16>,
    /// Receiver, for notifications.
    pub receiver: Option<String>,
    /// Why.
    pub detail: String,
    /// Hash of the previous record (or of the stream name, for the first).
    pub prev_hash: String,
    /// SHA-256 of this record's canonical JSON with `hash` empty.
    pub hash: String,
}

impl Record {
    /// A record about an alert version with nothing else filled in, not yet in a chain.
    pub fn new(alert_id: &str, alert_version: &str, action: Action) -> Record {
        Record {
            seq: 0,
            time: String::new(),
            tenant: String::new(),
            alert_id: alert_id.to_string(),
            alert_version: alert_version.to_string(),
            rule_id: None,
            rule_hash: None,
            mode: None,
            action,
            status_before: None,
            status_after: None,
            graph_status: None,
            receiver: None,
            detail: String::new(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The hash this record should carry.
    pub fn compute_hash(&self) -> String {
        let mut body = self.clone();
        body.hash = String::new();
        hex::encode(sha2::Sha256::digest(serde_json::to_vec(&body).expect("records serialize")))
    }
}

/// Why a record could not be appended. Every variant is worth a retry: the message stays on the queue.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    /// Other writers kept moving the stream's head.
    #[error("audit stream {0} is busy")]
    Busy(String),
    /// The head record is unreadable (someone edited the store).
    #[error("audit head {0} is unreadable: {1}")]
    Head(String, String),
}

/// The `prev_hash` of a stream's first record.
pub fn genesis(stream: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("secmon-audit:{stream}").as_bytes()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    #[serde(default)]
    pending: Option<Record>,
}

/// Appends `record` to the tenant's stream of the day of `now`, chained to the one before; returns it as
/// stored (its time, tenant, sequence number and hashes set here, its detail redacted).
///
/// Uncontended this is four store operations: read the head, announce (compare-and-swap), write the
/// record at its number, settle the head (compare-and-swap).
pub async fn append(store: &dyn Store, tenant: &str, now: DateTime<Utc>, record: Record) -> Result<Record, AuditError> {
    let stream = keys::audit_stream(tenant, now.date_naive());
    let key = keys::audit_head(&stream);
    for _ in 0..APPEND_ROUNDS {
        let (head, cond) = match store.get(&key).await? {
            Some(v) => (
                serde_json::from_slice::<Head>(&v.value).map_err(|e| AuditError::Head(key.clone(), e.to_string()))?,
                Precondition::Matches(v.etag),
            ),
            None => (Head { seq: 0, hash: genesis(&stream), pending: None }, Precondition::Absent),
        };
        if let Some(pending) = head.pending {
            // Another writer announced a record and may have stalled or died: finish it for them.
            finish(store, &stream, &key, &pending, cond).await?;
            continue;
        }
        let mut stored = Record {
            seq: head.seq + 1,
            time: now.to_rfc3339_opts(SecondsFormat::Millis, true),
            tenant: tenant.to_string(),
            detail: crate::redact::redact(&record.detail),
            prev_hash: head.hash.clone(),
            hash: String::new(),
            ..record.clone()
        };
        stored.hash = stored.compute_hash();
        let announce = Head { seq: head.seq, hash: head.hash, pending: Some(stored.clone()) };
        let etag = match store.put_if(&key, &serde_json::to_vec(&announce).expect("heads serialize"), cond).await {
            Ok(etag) => etag,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        finish(store, &stream, &key, &stored, Precondition::Matches(etag)).await?;
        return Ok(stored);
    }
    Err(AuditError::Busy(stream))
}

/// Writes the announced record at its number (unless someone already did) and moves the head past it
/// (unless someone already did: a lost swap means the head moved on without us).
async fn finish(
    store: &dyn Store,
    stream: &str,
    key: &str,
    pending: &Record,
    cond: Precondition,
) -> Result<(), AuditError> {
    let bytes = serde_json::to_vec(pending).expect("records serialize");
    match store.append(stream, pending.seq, &bytes).await {
        // Conflict: the number is taken, and only this announced record is ever written at it.
        Ok(()) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let done = Head { seq: pending.seq, hash: pending.hash.clone(), pending: None };
    match store.put_if(key, &serde_json::to_vec(&done).expect("heads serialize"), cond).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The result of verifying one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    /// The stream, `audit/{tenant}/{day}`.
    pub stream: String,
    /// Records read.
    pub records: usize,
    /// What is wrong, in words, each naming the record; empty when the chain is intact.
    pub problems: Vec<String>,
}

impl StreamReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies every stream whose tenant is `tenant` (all tenants when `None`).
pub async fn verify(store: &dyn Store, tenant: Option<&str>) -> Result<Vec<StreamReport>, StoreError> {
    let prefix = keys::audit_streams(tenant);
    let mut reports = Vec::new();
    for stream in store.list_streams(&prefix).await? {
        let records = store.read_stream(&stream).await?;
        let head = store.get(&keys::audit_head(&stream)).await?.map(|v| serde_json::from_slice::<Head>(&v.value));
        reports.push(verify_stream(&stream, &records, head));
    }
    Ok(reports)
}

fn verify_stream(stream: &str, raw: &[Vec<u8>], head: Option<Result<Head, serde_json::Error>>) -> StreamReport {
    let mut problems = Vec::new();
    let tenant = stream.split('/').nth(1).unwrap_or_default();
    let parsed: Vec<Option<Record>> = raw.iter().map(|r| serde_json::from_slice::<Record>(r).ok()).collect();
    let seqs: std::collections::HashSet<u64> = parsed.iter().flatten().map(|r| r.seq).collect();
    let mut expected_prev = genesis(stream);
    let mut expected_seq = 1u64;
    for (pos, record) in parsed.iter().enumerate() {
        let at = pos + 1;
        let Some(r) = record else {
            problems.push(format!("record at position {at} is not a valid audit record: changed"));
            expected_seq += 1;
            continue;
        };
        if r.compute_hash() != r.hash {
            problems.push(format!("record {} (position {at}) was changed: its content does not match its hash", r.seq));
        }
        if r.tenant != tenant {
            problems
                .push(format!("record {} (position {at}) belongs to tenant {:?}, not this stream", r.seq, r.tenant));
        }
        if r.prev_hash != expected_prev || r.seq != expected_seq {
            if r.seq > expected_seq && !(expected_seq..r.seq).any(|s| seqs.contains(&s)) {
                problems.push(format!(
                    "records {expected_seq} to {} are missing before record {} (position {at}): removed",
                    r.seq - 1,
                    r.seq
                ));
            } else if r.seq != expected_seq {
                problems.push(format!(
                    "record {} is at position {at}, where record {expected_seq} belongs: reordered",
                    r.seq
                ));
            } else {
                problems.push(format!(
                    "record {} (position {at}) does not follow the record before it: the chain was changed",
                    r.seq
                ));
            }
        }
        expected_prev = r.hash.clone();
        expected_seq = r.seq + 1;
    }
    let last = parsed.iter().flatten().map(|r| (r.seq, r.hash.clone())).next_back();
    match head {
        None if !raw.is_empty() => problems.push("the stream has no head record: its end cannot be checked".into()),
        None => {}
        Some(Err(e)) => problems.push(format!("the head record is unreadable: {e}")),
        Some(Ok(h)) => {
            // A writer may have died after announcing a record: the stream may hold it or not yet.
            let mut ends = vec![(h.seq, h.hash.clone())];
            if let Some(p) = &h.pending {
                ends.push((p.seq, p.hash.clone()));
            }
            let at_end = match &last {
                Some(l) => ends.contains(l),
                None => h.seq == 0,
            };
            if !at_end {
                let have = last.as_ref().map(|l| l.0).unwrap_or(0);
                if have < h.seq {
                    problems.push(format!(
                        "the stream ends at record {have} but the head says {}: records were removed from the end",
                        h.seq
                    ));
                } else {
                    problems
                        .push(format!("the stream's last record {have} does not match the head (record {})", h.seq));
                }
            }
        }
    }
    StreamReport { stream: stream.to_string(), records: raw.len(), problems }
}

/// Writes every record at or after `since` as JSON lines (tenant and day order); returns how many.
pub async fn export(
    store: &dyn Store,
    since: DateTime<Utc>,
    tenant: Option<&str>,
    out: &mut dyn Write,
) -> Result<usize, ExportError> {
    let prefix = keys::audit_streams(tenant);
    let since_day = since.date_naive();
    let mut n = 0;
    for stream in store.list_streams(&prefix).await? {
        let day = stream.rsplit('/').next().and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        if day.is_some_and(|d| d < since_day) {
            continue;
        }
        for raw in store.read_stream(&stream).await? {
            let keep = match serde_json::from_slice::<Record>(&raw) {
                Ok(r) => DateTime::parse_from_rfc3339(&r.time).map(|t| t >= since).unwrap_or(true),
                // Export what is there, even a damaged record; `audit verify` says what is wrong with it.
                Err(_) => true,
            };
            if keep {
                out.write_all(&raw)?;
                out.write_all(b"\n")?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Parses an `--since` value: RFC 3339 (`2026-11-26T08:00:00Z`) or a UTC day (`2026-11-26`).
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| format!("--since {s:?}: expected a date (2026-11-26) or an RFC 3339 time (2026-11-26T08:00:00Z)"))
}

/// `secmon audit verify`: one JSON line per stream (`{"stream","records","ok","problems"}`); returns
/// true when every chain is intact.
pub async fn verify_command(store: &dyn Store, tenant: Option<&str>, out: &mut dyn Write) -> Result<bool, ExportError> {
    let reports = verify(store, tenant).await?;
    let mut all_ok = true;
    for r in &reports {
        all_ok &= r.ok();
        let line = serde_json::json!({"stream": r.stream, "records": r.records, "ok": r.ok(), "problems": r.problems});
        writeln!(out, "{line}")?;
    }
    Ok(all_ok)
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    /// The output could not be written.
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn entry(id: &str) -> Record {
        Record {
            rule_id: Some("r1".into()),
            rule_hash: Some("ab".into()),
            mode: Some(Mode::Enforce),
            status_before: Some("new".into()),
            status_after: Some("resolved".into()),
            graph_status: Some(200),
            detail: "matched".into(),
            ..Record::new(id, "2026-11-26T10:00:00Z", Action::Close)
        }
    }

    async fn filled(n: usize) -> SqliteStore {
        let s = SqliteStore::in_memory().unwrap();
        for i in 0..n {
            append(&s, "contoso", at("2026-11-26T10:00:00Z"), entry(&format!("a{i}"))).await.unwrap();
        }
        s
    }

    const STREAM: &str = "audit/contoso/2026-11-26";

    /// Rewrites the stream with `f` applied to its records (the store has no edit operation, which is
    /// the point; tests reach under it).
    async fn tamper(s: &SqliteStore, f: impl FnOnce(&mut Vec<Vec<u8>>)) -> SqliteStore {
        let mut records = s.read_stream(STREAM).await.unwrap();
        f(&mut records);
        let fresh = SqliteStore::in_memory().unwrap();
        for (seq, r) in records.iter().enumerate() {
            fresh.append(STREAM, seq as u64 + 1, r).await.unwrap();
        }
        let head = s.get(&keys::audit_head(STREAM)).await.unwrap().unwrap();
        fresh.put(&keys::audit_head(STREAM), &head.value).await.unwrap();
        fresh
    }

    #[tokio::test]
    async fn an_intact_chain_verifies() {
        let s = filled(4).await;
        let reports = verify(&s, None).await.unwrap();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].ok(), "{:?}", reports[0]);
        assert_eq!(reports[0].records, 4);
    }

    #[tokio::test]
    async fn changed_removed_reordered_and_truncated_records_are_detected() {
        let s = filled(4).await;
        let changed = tamper(&s, |r| {
            let text = String::from_utf8(r[1].clone()).unwrap().replace("\"a1\"", "\"zz\"");
            r[1] = text.into_bytes();
        })
        .await;
        let p = &verify(&changed, None).await.unwrap()[0].problems;
        assert!(p.len() == 1 && p[0].contains("record 2") && p[0].contains("changed"), "{p:?}");

        let removed = tamper(&s, |r| {
            r.remove(1);
        })
        .await;
        let p = &verify(&removed, None).await.unwrap()[0].problems;
        assert!(p.iter().any(|x| x.contains("records 2 to 2 are missing") && x.contains("removed")), "{p:?}");

        let reordered = tamper(&s, |r| r.swap(1, 2)).await;
        let p = &verify(&reordered, None).await.unwrap()[0].problems;
        assert!(!p.is_empty() && p.iter().all(|x| x.contains("reordered")), "{p:?}");

        let truncated = tamper(&s, |r| {
            r.pop();
        })
        .await;
        let p = &verify(&truncated, None).await.unwrap()[0].problems;
        assert!(p.len() == 1 && p[0].contains("removed from the end"), "{p:?}");
    }

    #[tokio::test]
    async fn a_writer_that_died_mid_append_is_repaired_by_the_next() {
        let s = filled(2).await;
        // Simulate a crash after the head announced record 3 but before the append.
        let head: Head =
            serde_json::from_slice(&s.get(&keys::audit_head(STREAM)).await.unwrap().unwrap().value).unwrap();
        let mut pending = Record {
            seq: 3,
            time: "2026-11-26T10:00:00.000Z".into(),
            tenant: "contoso".into(),
            alert_id: "lost".into(),
            alert_version: "v".into(),
            rule_id: None,
            rule_hash: None,
            mode: None,
            action: Action::WouldClose,
            status_before: None,
            status_after: None,
            graph_status: None,
            receiver: None,
            detail: String::new(),
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        pending.hash = pending.compute_hash();
        let announce = Head { seq: head.seq, hash: head.hash, pending: Some(pending) };
        s.put(&keys::audit_head(STREAM), &serde_json::to_vec(&announce).unwrap()).await.unwrap();
        // The head with a pending record still verifies (the writer may simply not be done).
        assert!(verify(&s, None).await.unwrap()[0].ok());
        let next = append(&s, "contoso", at("2026-11-26T11:00:00Z"), entry("after")).await.unwrap();
        assert_eq!(next.seq, 4);
        let report = &verify(&s, None).await.unwrap()[0];
        assert!(report.ok() && report.records == 4, "{report:?}");
    }

    #[tokio::test]
    async fn concurrent_writers_keep_one_chain() {
        let s = std::sync::Arc::new(SqliteStore::in_memory().unwrap());
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                append(s.as_ref(), "contoso", at("2026-11-26T10:00:00Z"), entry(&format!("c{i}"))).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let report = &verify(s.as_ref(), None).await.unwrap()[0];
        assert!(report.ok() && report.records == 16, "{report:?}");
    }

    /// Two store handles on one SQLite file (two `secmon run` processes) append at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_on_two_handles_of_one_file_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let a = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        let b = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                for j in 0..4 {
                    append(s.as_ref(), "contoso", at("2026-11-26T10:00:00Z"), entry(&format!("c{i}-{j}")))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let report = &verify(a.as_ref(), None).await.unwrap()[0];
        assert!(report.ok() && report.records == 32, "{report:?}");
        let ids: std::collections::HashSet<String> = a
            .read_stream(STREAM)
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice::<Record>(r).unwrap().alert_id)
            .collect();
        assert_eq!(ids.len(), 32, "no record is written twice");
    }

    /// A writer that stalls after announcing its record, while the next writer finishes it and appends
    /// its own, cannot write its record a second time when it wakes up.
    #[tokio::test]
    async fn a_stalled_writer_cannot_append_its_record_twice() {
        let s = filled(1).await;
        let key = keys::audit_head(STREAM);
        let v = s.get(&key).await.unwrap().unwrap();
        let head: Head = serde_json::from_slice(&v.value).unwrap();
        let mut stalled = Record {
            seq: 2,
            time: "2026-11-26T10:00:00.000Z".into(),
            tenant: "contoso".into(),
            prev_hash: head.hash.clone(),
            ..entry("stalled")
        };
        stalled.hash = stalled.compute_hash();
        let announce = Head { seq: head.seq, hash: head.hash, pending: Some(stalled.clone()) };
        let etag =
            s.put_if(&key, &serde_json::to_vec(&announce).unwrap(), Precondition::Matches(v.etag)).await.unwrap();
        // The next writer finds the pending record, finishes it, then appends its own.
        let next = append(&s, "contoso", at("2026-11-26T11:00:00Z"), entry("next")).await.unwrap();
        assert_eq!(next.seq, 3);
        // The stalled writer wakes up and carries on where it stopped.
        finish(&s, STREAM, &key, &stalled, Precondition::Matches(etag)).await.unwrap();
        let report = &verify(&s, None).await.unwrap()[0];
        assert!(report.ok() && report.records == 3, "{report:?}");
    }

    #[tokio::test]
    async fn days_and_tenants_have_their_own_chains_and_export_filters_by_time() {
        let s = SqliteStore::in_memory().unwrap();
        append(&s, "contoso", at("2026-11-25T23:59:00Z"), entry("old")).await.unwrap();
        append(&s, "contoso", at("2026-11-26T00:01:00Z"), entry("new")).await.unwrap();
        append(&s, "fabrikam", at("2026-11-26T08:00:00Z"), entry("other")).await.unwrap();
        let reports = verify(&s, None).await.unwrap();
        assert_eq!(
            reports.iter().map(|r| r.stream.as_str()).collect::<Vec<_>>(),
            ["audit/contoso/2026-11-25", "audit/contoso/2026-11-26", "audit/fabrikam/2026-11-26"]
        );
        assert!(reports.iter().all(StreamReport::ok));
        let mut out = Vec::new();
        let n = export(&s, at("2026-11-26T00:00:00Z"), None, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(n, 2);
        assert!(text.contains("\"new\"") && text.contains("\"other\"") && !text.contains("\"old\""), "{text}");
        let mut out = Vec::new();
        assert_eq!(export(&s, at("2026-01-01T00:00:00Z"), Some("fabrikam"), &mut out).await.unwrap(), 1);
    }

    #[test]
    fn an_unknown_action_is_an_error_not_another_action() {
        assert_eq!(Action::NotifyFailed.to_string(), "notify_failed");
        assert_eq!(serde_json::from_str::<Action>("\"notify_failed\"").unwrap(), Action::NotifyFailed);
        assert!(serde_json::from_str::<Action>("\"notify_sent\"").is_err());
        let mut stored = serde_json::to_value(entry("x")).unwrap();
        stored["action"] = "notify_sent".into();
        assert!(serde_json::from_value::<Record>(stored).is_err());
    }

    #[test]
    fn since_takes_a_day_or_a_time() {
        assert_eq!(parse_since("2026-11-26").unwrap(), at("2026-11-26T00:00:00Z"));
        assert_eq!(parse_since("2026-11-26T08:30:00+01:00").unwrap(), at("2026-11-26T07:30:00Z"));
        assert!(parse_since("yesterday").unwrap_err().contains("--since"));
    }

    #[tokio::test]
    async fn verify_command_prints_one_line_per_stream_and_fails_on_damage() {
        let s = filled(2).await;
        let mut out = Vec::new();
        assert!(verify_command(&s, None, &mut out).await.unwrap());
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["ok"], true);
        assert_eq!(line["records"], 2);
        let damaged = tamper(&s, |r| {
            r.remove(0);
        })
        .await;
        let mut out = Vec::new();
        assert!(!verify_command(&damaged, None, &mut out).await.unwrap());
    }

    #[tokio::test]
    async fn secrets_in_details_are_redacted() {
        let s = SqliteStore::in_memory().unwrap();
        let mut e = entry("x");
        e.detail = "POST https://prod.example/workflows/x?sig=SUPERSECRET failed".into();
        let r = append(&s, "contoso", at("2026-11-26T10:00:00Z"), e).await.unwrap();
        assert!(!r.detail.contains("SUPERSECRET"), "{}", r.detail);
        let stored = s.read_stream(STREAM).await.unwrap();
        assert!(!String::from_utf8_lossy(&stored[0]).contains("SUPERSECRET"));
    }
}
