//! The audit trail: one append-only record per decision that changed, or would have changed, something.
//!
//! Records of a tenant's UTC day (the day of the decision) form one hash chain named
//! `audit/{tenant}/{YYYY-MM-DD}`. Each record carries its sequence number in the day (from 1), the hash
//! of the record before it (the first one: the hash of the day's name, so a record cannot be moved to
//! another day or tenant) and its own hash: SHA-256 over the record's canonical JSON with `hash` empty.
//!
//! The chain is stored in **segments**, streams `audit/{tenant}/{YYYY-MM-DD}/{NNNNNN}` (from `000001`),
//! each holding at most [`SEGMENT_RECORDS`] records (10,000; Azure's append blob takes 50,000 blocks):
//! record `first + i` of the day is record `i + 1` of its segment. The chain runs across segments
//! unbroken (the first record of a segment follows the last of the one before). The head key
//! `audit-head/{tenant}/{day}` holds the last sequence number and hash, the record being written, the open
//! segment and the sequence number of its first record, so a writer — and the repair of a writer that
//! died — touches only the head and the open segment, however long the day. Days written before segments
//! (records in `audit/{tenant}/{day}` itself, a head without a segment) verify as segment 0 and continue
//! in segment 1. [`verify`] walks every day's chain across its segments and says which record was
//! changed, removed or reordered; the head also catches records (or whole segments) cut off the end.
//!
//! Writers take no lock (a lock's lease can run out under a slow writer and be stolen). The head is
//! advanced with compare-and-swap and carries the next record as `pending`: only the writer whose swap
//! from "ends at `n`" to "`n + 1` is pending" wins may announce record `n + 1`, so the chain cannot
//! fork; the same swap decides the record's segment (a rollover is part of the announcement, so two
//! writers never disagree on where record `n + 1` goes). The record is then written at its place in
//! that segment with one conditional write ([`Store::append`]), which fails for everyone but the
//! first, so it cannot be written twice — by a writer that stalled, or by the next writer, which
//! finishes a pending record it finds before it announces its own. An announcement of several records
//! writes them in one call ([`Store::append_new`]: one job on SQLite, in turn elsewhere), each number
//! taken only where it is free. A writer that dies at any point leaves either nothing or a pending
//! record that the next one finishes. Streams written before this scheme (under the old `audit-lock/…` claim) keep
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

mod writer;
pub use writer::Writer;

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
    /// A silence was made (`secmon silence add`; the record's alert id is `silence-{id}`).
    SilenceCreated,
    /// A silence ended: its time ran out or `secmon silence expire` ended it (alert id `silence-{id}`).
    SilenceExpired,
    /// A receiver was not told about an alert version: a silence or a route's window muted it.
    NotifySilenced,
    /// The alert was already resolved when secmon first saw it: not announced as new (see
    /// `docs/notifications.md`, "Alerts first seen resolved").
    FirstSeenResolved,
    /// A message was deleted from a poison queue by `secmon queue poison purge` (its detail says what
    /// it carried; the alert id is the message's alert, or its message id).
    PoisonPurged,
    /// A person acted on the alert from a card (acknowledge, resolve, true positive): who, the alert
    /// version before and after, and Graph's answer are in the record (`detail` names the person).
    ActionByUser,
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
#[derive(Debug, Clone, thiserror::Error)]
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

/// Records per segment: a fifth of an Azure append blob's 50,000 blocks, so a segment is far from
/// any backend's limit and cheap to read whole.
pub const SEGMENT_RECORDS: u64 = 10_000;

/// How a tenant-day's chain is cut into segments. [`append`] uses the default ([`SEGMENT_RECORDS`]);
/// tests cut smaller to reach a rollover with few records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// The most records one segment holds.
    pub records: u64,
}

impl Default for Segments {
    fn default() -> Self {
        Segments { records: SEGMENT_RECORDS }
    }
}

/// The head of a tenant-day's chain: the last record (sequence number and hash), the record being
/// written (if any), and where it goes: the open segment and the sequence number of its first record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
    #[serde(default)]
    pending: Option<Record>,
    /// Records announced together with `pending`, in order, all in the same segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    more: Vec<Record>,
    /// The open segment; 0 in a head written before segments (its records are in the day's stream).
    #[serde(default)]
    segment: u32,
    /// The sequence number of the open segment's first record.
    #[serde(default = "first_seq")]
    first: u64,
}

/// The most records one announcement carries ([`append_all`]): the head stays a small blob.
const MOST_ANNOUNCED: usize = 64;

fn first_seq() -> u64 {
    1
}

impl Head {
    /// Where record `seq` (the next one) goes: the open segment, or a new one when the open one is full
    /// (or is the unsegmented stream of before segments, which is never written again).
    fn place(&self, seq: u64, segments: Segments) -> (u32, u64) {
        if self.segment == 0 || seq - self.first >= segments.records.max(1) {
            (self.segment + 1, seq)
        } else {
            (self.segment, self.first)
        }
    }
}

/// Appends `record` to the tenant's stream of the day of `now`, chained to the one before; returns it as
/// stored (its time, tenant, sequence number and hashes set here, its detail redacted).
///
/// Uncontended this is four store operations: read the head, announce (compare-and-swap), write the
/// record at its number in the open segment, settle the head (compare-and-swap). Nothing else of the
/// day is read: the head says which segment is open and where its records start. Several records at
/// once: [`append_all`]; the records of concurrent callers in one process, batched: [`Writer`].
pub async fn append(store: &dyn Store, tenant: &str, now: DateTime<Utc>, record: Record) -> Result<Record, AuditError> {
    append_in(store, Segments::default(), tenant, now, record).await
}

/// [`append`] with segments of `segments.records`.
pub async fn append_in(
    store: &dyn Store,
    segments: Segments,
    tenant: &str,
    now: DateTime<Utc>,
    record: Record,
) -> Result<Record, AuditError> {
    let mut stored = append_all(store, segments, tenant, now, vec![record]).await?;
    Ok(stored.pop().expect("one record in, one out"))
}

/// Appends `records` in order to the tenant's stream of the day of `now`, as [`append`] would one after
/// the other, but announcing up to 64 of them (never across a segment's end) in one swap of the head:
/// the same chain, written with one head round-trip per announcement instead of per record. A writer
/// that dies half-way leaves the announced records pending, and the next writer finishes them all.
pub async fn append_all(
    store: &dyn Store,
    segments: Segments,
    tenant: &str,
    now: DateTime<Utc>,
    records: Vec<Record>,
) -> Result<Vec<Record>, AuditError> {
    let mut out = Vec::with_capacity(records.len());
    let timed = records.into_iter().map(|r| (now, r)).collect();
    append_timed(store, segments, tenant, now.date_naive(), timed, &mut out).await?;
    Ok(out)
}

/// [`append_all`] of records each made at its own time, all on UTC day `date`: the stored records go
/// to `out` as they are settled, so after an error `out` holds those that are in the chain.
async fn append_timed(
    store: &dyn Store,
    segments: Segments,
    tenant: &str,
    date: NaiveDate,
    records: Vec<(DateTime<Utc>, Record)>,
    out: &mut Vec<Record>,
) -> Result<(), AuditError> {
    let day = keys::audit_stream(tenant, date);
    let key = keys::audit_head(&day);
    let done = out.len();
    let mut rounds = 0;
    while out.len() - done < records.len() {
        rounds += 1;
        if rounds > APPEND_ROUNDS + records.len() {
            return Err(AuditError::Busy(day));
        }
        let (head, cond) = match store.get(&key).await? {
            Some(v) => (
                serde_json::from_slice::<Head>(&v.value).map_err(|e| AuditError::Head(key.clone(), e.to_string()))?,
                Precondition::Matches(v.etag),
            ),
            None => (
                Head { seq: 0, hash: genesis(&day), pending: None, more: Vec::new(), segment: 0, first: 1 },
                Precondition::Absent,
            ),
        };
        if head.pending.is_some() {
            // Another writer announced records and may have stalled or died: finish them for them.
            finish(store, &day, &key, &head, cond).await?;
            continue;
        }
        let (segment, first) = head.place(head.seq + 1, segments);
        let room = (segments.records.max(1) - (head.seq + 1 - first)) as usize;
        let next = out.len() - done;
        let take = (records.len() - next).min(room).min(MOST_ANNOUNCED);
        let mut prev = head.hash.clone();
        let mut announced = Vec::with_capacity(take);
        for (i, (now, record)) in records[next..next + take].iter().enumerate() {
            let mut stored = Record {
                seq: head.seq + 1 + i as u64,
                time: now.to_rfc3339_opts(SecondsFormat::Millis, true),
                tenant: tenant.to_string(),
                detail: crate::redact::redact(&record.detail),
                prev_hash: prev,
                hash: String::new(),
                ..record.clone()
            };
            stored.hash = stored.compute_hash();
            prev = stored.hash.clone();
            announced.push(stored);
        }
        let mut rest = announced.clone();
        let pending = rest.remove(0);
        let announce = Head { pending: Some(pending), more: rest, segment, first, ..head };
        let etag = match store.put_if(&key, &serde_json::to_vec(&announce).expect("heads serialize"), cond).await {
            Ok(etag) => etag,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        finish(store, &day, &key, &announce, Precondition::Matches(etag)).await?;
        out.extend(announced);
    }
    Ok(())
}

/// Writes the announced records of `head` at their numbers in their segment (unless someone already
/// did) and moves the head past them (unless someone already did: a lost swap means the head moved on
/// without us).
async fn finish(store: &dyn Store, day: &str, key: &str, head: &Head, cond: Precondition) -> Result<(), AuditError> {
    let stream = keys::audit_segment(day, head.segment);
    let announced: Vec<&Record> = head.pending.iter().chain(&head.more).collect();
    let Some(last) = announced.last() else { return Ok(()) };
    let records: Vec<(u64, Vec<u8>)> =
        announced.iter().map(|r| (r.seq + 1 - head.first, serde_json::to_vec(r).expect("records serialize"))).collect();
    // A number already taken holds this very record: only the announced record is ever written at it.
    store.append_new(&stream, &records).await?;
    let done = Head { seq: last.seq, hash: last.hash.clone(), pending: None, more: Vec::new(), ..head.clone() };
    match store.put_if(key, &serde_json::to_vec(&done).expect("heads serialize"), cond).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The result of verifying one tenant-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    /// The day's stream, `audit/{tenant}/{day}` (its segments are `audit/{tenant}/{day}/{segment}`).
    pub stream: String,
    /// Records read.
    pub records: usize,
    /// Segments read (the unsegmented stream of before segments counts as one).
    pub segments: usize,
    /// What is wrong, in words, each naming the record; empty when the chain is intact.
    pub problems: Vec<String>,
}

impl StreamReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The audit days of `tenant` (all tenants when `None`) in tenant and day order, each with its
/// segments in order: `(day stream, UTC day, [(segment, stream)])`.
pub async fn days(store: &dyn Store, tenant: Option<&str>) -> Result<Vec<Day>, StoreError> {
    let mut out: Vec<Day> = Vec::new();
    let mut names: Vec<(String, NaiveDate, u32, String)> = store
        .list_streams(&keys::audit_streams(tenant))
        .await?
        .into_iter()
        .filter_map(|s| keys::audit_stream_parts(&s).map(|(day, date, seg)| (day, date, seg, s)))
        .collect();
    names.sort();
    for (stream, date, segment, name) in names {
        match out.last_mut() {
            Some(d) if d.stream == stream => d.segments.push((segment, name)),
            _ => out.push(Day { stream, date, segments: vec![(segment, name)] }),
        }
    }
    Ok(out)
}

/// One tenant-day of audit: its chain's name, its UTC day and its segments in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    /// `audit/{tenant}/{YYYY-MM-DD}`: the chain's name (its genesis) and the head's key.
    pub stream: String,
    /// The UTC day.
    pub date: NaiveDate,
    /// `(segment, stream name)`, in order; segment 0 is the unsegmented stream of before segments.
    pub segments: Vec<(u32, String)>,
}

impl Day {
    /// Every record of the day, segment after segment.
    pub async fn records(&self, store: &dyn Store) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut all = Vec::new();
        for (_, name) in &self.segments {
            all.extend(store.read_stream(name).await?);
        }
        Ok(all)
    }
}

/// Verifies every tenant-day of `tenant` (all tenants when `None`), one report per day, reading one
/// day at a time.
pub async fn verify(store: &dyn Store, tenant: Option<&str>) -> Result<Vec<StreamReport>, StoreError> {
    let mut reports = Vec::new();
    for day in days(store, tenant).await? {
        reports.push(verify_day(store, &day).await?);
    }
    Ok(reports)
}

async fn verify_day(store: &dyn Store, day: &Day) -> Result<StreamReport, StoreError> {
    let mut raw = Vec::new();
    // Where each record was found: (segment, position in it from 1).
    let mut places = Vec::new();
    let mut problems = Vec::new();
    for (segment, name) in &day.segments {
        let records = store.read_stream(name).await?;
        places.extend((1..=records.len()).map(|p| (*segment, p)));
        raw.extend(records);
    }
    let head = store.get(&keys::audit_head(&day.stream)).await?.map(|v| serde_json::from_slice::<Head>(&v.value));
    if let Some(Ok(h)) = &head {
        // The head names the open segment: a later one is a stray, a missing one lost its records.
        let last = day.segments.last().map(|(s, _)| *s).unwrap_or(0);
        if last > h.segment {
            problems.push(format!("segment {last:06} is after the open segment {:06} the head names", h.segment));
        }
    }
    let mut report = verify_stream(&day.stream, &raw, head, &places);
    problems.append(&mut report.problems);
    report.problems = problems;
    report.segments = day.segments.len();
    Ok(report)
}

fn verify_stream(
    stream: &str,
    raw: &[Vec<u8>],
    head: Option<Result<Head, serde_json::Error>>,
    places: &[(u32, usize)],
) -> StreamReport {
    let mut problems = Vec::new();
    let tenant = stream.split('/').nth(1).unwrap_or_default();
    let place = |pos: usize| match places.get(pos) {
        Some((0, p)) => format!("position {p}"),
        Some((s, p)) => format!("segment {s:06}, position {p}"),
        None => format!("position {}", pos + 1),
    };
    let parsed: Vec<Option<Record>> = raw.iter().map(|r| serde_json::from_slice::<Record>(r).ok()).collect();
    let seqs: std::collections::HashSet<u64> = parsed.iter().flatten().map(|r| r.seq).collect();
    let mut expected_prev = genesis(stream);
    let mut expected_seq = 1u64;
    for (pos, record) in parsed.iter().enumerate() {
        let at = place(pos);
        let Some(r) = record else {
            problems.push(format!("record at {at} is not a valid audit record: changed"));
            expected_seq += 1;
            continue;
        };
        if r.compute_hash() != r.hash {
            problems.push(format!("record {} ({at}) was changed: its content does not match its hash", r.seq));
        }
        if r.tenant != tenant {
            problems.push(format!("record {} ({at}) belongs to tenant {:?}, not this stream", r.seq, r.tenant));
        }
        if r.prev_hash != expected_prev || r.seq != expected_seq {
            if r.seq > expected_seq && !(expected_seq..r.seq).any(|s| seqs.contains(&s)) {
                problems.push(format!(
                    "records {expected_seq} to {} are missing before record {} ({at}): removed",
                    r.seq - 1,
                    r.seq
                ));
            } else if r.seq != expected_seq {
                problems.push(format!("record {} is at {at}, where record {expected_seq} belongs: reordered", r.seq));
            } else {
                problems.push(format!(
                    "record {} ({at}) does not follow the record before it: the chain was changed",
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
            ends.extend(h.pending.iter().chain(&h.more).map(|p| (p.seq, p.hash.clone())));
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
    StreamReport { stream: stream.to_string(), records: raw.len(), segments: 0, problems }
}

/// Writes every record at or after `since` (and before `until`, when given) as JSON lines
/// (`{"kind":"audit_record",…}`), in tenant, day and chain order, reading one segment at a time; returns
/// how many. Days outside the range are not read at all, so a year of audit is exported with one listing
/// and one read per segment.
pub async fn export(
    store: &dyn Store,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    tenant: Option<&str>,
    out: &mut dyn Write,
) -> Result<usize, ExportError> {
    let mut n = 0;
    for day in days(store, tenant).await? {
        if day.date < since.date_naive() || until.is_some_and(|u| day.date > u.date_naive()) {
            continue;
        }
        for (_, segment) in &day.segments {
            for raw in store.read_stream(segment).await? {
                let keep = match serde_json::from_slice::<Record>(&raw) {
                    Ok(r) => DateTime::parse_from_rfc3339(&r.time)
                        .map(|t| t >= since && until.is_none_or(|u| t < u))
                        .unwrap_or(true),
                    // Export what is there, even a damaged record; `audit verify` says what is wrong with it.
                    Err(_) => true,
                };
                if keep {
                    // The record as stored with `"kind":"audit_record"` first (drop `kind` to check its
                    // hash); a record that is not JSON goes out as its text, so nothing is left out.
                    let line = match serde_json::from_slice::<serde_json::Value>(&raw) {
                        Ok(record) => crate::output::line("audit_record", &record),
                        Err(_) => crate::output::line(
                            "audit_record_unreadable",
                            &serde_json::json!({"stream": segment, "text": String::from_utf8_lossy(&raw)}),
                        ),
                    };
                    writeln!(out, "{line}")?;
                    n += 1;
                }
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

/// `secmon audit verify`: one JSON line per tenant-day
/// (`{"kind":"audit_stream","stream","records","segments","ok","problems"}`); returns
/// true when every chain is intact.
pub async fn verify_command(store: &dyn Store, tenant: Option<&str>, out: &mut dyn Write) -> Result<bool, ExportError> {
    let reports = verify(store, tenant).await?;
    let mut all_ok = true;
    for r in &reports {
        all_ok &= r.ok();
        let line = serde_json::json!({"kind": "audit_stream", "stream": r.stream, "records": r.records,
            "segments": r.segments, "ok": r.ok(), "problems": r.problems});
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

    /// An `audit export` line as the record it carries (the line is the record with `kind` in front).
    fn exported(line: &str) -> Record {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kind"], "audit_record", "{line}");
        v.as_object_mut().unwrap().remove("kind");
        serde_json::from_value(v).unwrap()
    }
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
    const SEGMENT: &str = "audit/contoso/2026-11-26/000001";

    /// Rewrites the stream with `f` applied to its records (the store has no edit operation, which is
    /// the point; tests reach under it).
    async fn tamper(s: &SqliteStore, f: impl FnOnce(&mut Vec<Vec<u8>>)) -> SqliteStore {
        let mut records = s.read_stream(SEGMENT).await.unwrap();
        f(&mut records);
        let fresh = SqliteStore::in_memory().unwrap();
        for (seq, r) in records.iter().enumerate() {
            fresh.append(SEGMENT, seq as u64 + 1, r).await.unwrap();
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
        let announce = Head { pending: Some(pending), ..head };
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
            .read_stream(SEGMENT)
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
        let announce = Head { pending: Some(stalled.clone()), ..head };
        let etag =
            s.put_if(&key, &serde_json::to_vec(&announce).unwrap(), Precondition::Matches(v.etag)).await.unwrap();
        // The next writer finds the pending record, finishes it, then appends its own.
        let next = append(&s, "contoso", at("2026-11-26T11:00:00Z"), entry("next")).await.unwrap();
        assert_eq!(next.seq, 3);
        // The stalled writer wakes up and carries on where it stopped.
        finish(&s, STREAM, &key, &announce, Precondition::Matches(etag)).await.unwrap();
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
        let n = export(&s, at("2026-11-26T00:00:00Z"), None, None, &mut out).await.unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(n, 2);
        assert!(text.contains("\"new\"") && text.contains("\"other\"") && !text.contains("\"old\""), "{text}");
        let mut out = Vec::new();
        assert_eq!(export(&s, at("2026-01-01T00:00:00Z"), None, Some("fabrikam"), &mut out).await.unwrap(), 1);
        let mut out = Vec::new();
        assert_eq!(
            export(&s, at("2026-01-01T00:00:00Z"), Some(at("2026-11-26T00:00:00Z")), None, &mut out).await.unwrap(),
            1
        );
        assert!(String::from_utf8(out).unwrap().contains("\"old\""));
    }

    async fn filled_in(n: usize, records: u64) -> SqliteStore {
        let s = SqliteStore::in_memory().unwrap();
        for i in 0..n {
            append_in(&s, Segments { records }, "contoso", at("2026-11-26T10:00:00Z"), entry(&format!("a{i}")))
                .await
                .unwrap();
        }
        s
    }

    #[tokio::test]
    async fn a_full_segment_rolls_over_and_the_chain_runs_on_across_segments() {
        let s = filled_in(10, 3).await;
        let streams = s.list_streams("audit/").await.unwrap();
        assert_eq!(streams, (1..=4).map(|n| format!("{STREAM}/{n:06}")).collect::<Vec<_>>());
        let sizes: Vec<usize> = futures::future::join_all(streams.iter().map(|n| s.read_stream(n)))
            .await
            .into_iter()
            .map(|r| r.unwrap().len())
            .collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        let first_of_second: Record = serde_json::from_slice(&s.read_stream(&streams[1]).await.unwrap()[0]).unwrap();
        let last_of_first: Record = serde_json::from_slice(&s.read_stream(&streams[0]).await.unwrap()[2]).unwrap();
        assert_eq!((first_of_second.seq, &first_of_second.prev_hash), (4, &last_of_first.hash));
        let reports = verify(&s, None).await.unwrap();
        assert_eq!(reports.len(), 1, "one report per tenant-day: {reports:?}");
        assert_eq!((reports[0].records, reports[0].segments), (10, 4));
        assert!(reports[0].ok(), "{reports:?}");
        let mut out = Vec::new();
        assert_eq!(export(&s, at("2026-11-26T00:00:00Z"), None, None, &mut out).await.unwrap(), 10);
        let seqs: Vec<u64> = String::from_utf8(out).unwrap().lines().map(|l| exported(l).seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn records_announced_together_make_the_same_chain_and_roll_over_alike() {
        let s = SqliteStore::in_memory().unwrap();
        let records: Vec<Record> = (0..10).map(|i| entry(&format!("a{i}"))).collect();
        let stored =
            append_all(&s, Segments { records: 3 }, "contoso", at("2026-11-26T10:00:00Z"), records).await.unwrap();
        assert_eq!(stored.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
        let one_by_one = filled_in(10, 3).await;
        for n in 1..=4 {
            let name = format!("{STREAM}/{n:06}");
            assert_eq!(s.read_stream(&name).await.unwrap(), one_by_one.read_stream(&name).await.unwrap(), "{name}");
        }
        assert!(verify(&s, None).await.unwrap()[0].ok());
    }

    /// A writer that announced three records and died after writing one: the next writer writes the
    /// other two, then its own.
    #[tokio::test]
    async fn records_announced_together_are_finished_by_the_next_writer() {
        let s = filled_in(1, 10).await;
        let key = keys::audit_head(STREAM);
        let head: Head = serde_json::from_slice(&s.get(&key).await.unwrap().unwrap().value).unwrap();
        let mut prev = head.hash.clone();
        let mut announced = Vec::new();
        for seq in 2..=4 {
            let mut r = Record {
                seq,
                time: "2026-11-26T10:00:00.000Z".into(),
                tenant: "contoso".into(),
                prev_hash: prev,
                ..entry(&format!("b{seq}"))
            };
            r.hash = r.compute_hash();
            prev = r.hash.clone();
            announced.push(r);
        }
        s.append(SEGMENT, 2, &serde_json::to_vec(&announced[0]).unwrap()).await.unwrap();
        let announce = Head { pending: Some(announced[0].clone()), more: announced[1..].to_vec(), ..head };
        s.put(&key, &serde_json::to_vec(&announce).unwrap()).await.unwrap();
        assert!(verify(&s, None).await.unwrap()[0].ok(), "a writer still at work is not damage");
        let next =
            append_in(&s, Segments { records: 10 }, "contoso", at("2026-11-26T11:00:00Z"), entry("c")).await.unwrap();
        assert_eq!(next.seq, 5);
        let report = &verify(&s, None).await.unwrap()[0];
        assert!(report.ok() && report.records == 5, "{report:?}");
    }

    /// A year of audit, two tenants, a record a day each and a storm day in segments: every day
    /// verifies, and an export of the year from one day to the same day a year later is every record
    /// of those 365 days, in tenant, day and chain order.
    #[tokio::test]
    async fn a_year_verifies_and_exports_across_days_and_segments() {
        let s = SqliteStore::in_memory().unwrap();
        let start = at("2025-12-01T09:00:00Z");
        let segments = Segments { records: 4 };
        for d in 0..366 {
            for tenant in ["contoso", "fabrikam"] {
                append_in(&s, segments, tenant, start + chrono::Duration::days(d), entry(&format!("{tenant}{d}")))
                    .await
                    .unwrap();
            }
        }
        let storm: Vec<Record> = (0..9).map(|i| entry(&format!("storm{i}"))).collect();
        append_all(&s, segments, "contoso", at("2026-06-01T12:00:00Z"), storm).await.unwrap();
        let reports = verify(&s, None).await.unwrap();
        assert_eq!(reports.len(), 2 * 366);
        assert!(reports.iter().all(StreamReport::ok));
        let storm_day = reports.iter().find(|r| r.stream == "audit/contoso/2026-06-01").unwrap();
        assert_eq!((storm_day.records, storm_day.segments), (10, 3));
        let mut out = Vec::new();
        let n = export(&s, at("2025-12-01T00:00:00Z"), Some(at("2026-12-01T00:00:00Z")), None, &mut out).await.unwrap();
        assert_eq!(n, 2 * 365 + 9);
        let text = String::from_utf8(out).unwrap();
        let ids: Vec<String> = text.lines().map(|l| exported(l).alert_id).collect();
        assert_eq!(ids.first().map(String::as_str), Some("contoso0"));
        assert_eq!(ids.last().map(String::as_str), Some("fabrikam364"));
        assert!(!ids.contains(&"contoso365".to_string()), "the day --until names is not in the export");
    }

    /// Copies `s` without the segments `drop` (the store has no way to remove a stream's records short
    /// of retention; tests reach under it).
    async fn without_segments(s: &SqliteStore, drop: &[u32]) -> SqliteStore {
        let fresh = SqliteStore::in_memory().unwrap();
        for name in s.list_streams("audit/").await.unwrap() {
            let (_, _, segment) = keys::audit_stream_parts(&name).unwrap();
            if drop.contains(&segment) {
                continue;
            }
            for (i, r) in s.read_stream(&name).await.unwrap().iter().enumerate() {
                fresh.append(&name, i as u64 + 1, r).await.unwrap();
            }
        }
        let head = s.get(&keys::audit_head(STREAM)).await.unwrap().unwrap();
        fresh.put(&keys::audit_head(STREAM), &head.value).await.unwrap();
        fresh
    }

    #[tokio::test]
    async fn a_missing_segment_is_detected_in_the_middle_and_at_the_end() {
        let s = filled_in(10, 3).await;
        let p = &verify(&without_segments(&s, &[2]).await, None).await.unwrap()[0].problems;
        assert!(p.iter().any(|x| x.contains("records 4 to 6 are missing") && x.contains("segment 000003")), "{p:?}");
        let p = &verify(&without_segments(&s, &[4]).await, None).await.unwrap()[0].problems;
        assert!(p.len() == 1 && p[0].contains("ends at record 9") && p[0].contains("removed from the end"), "{p:?}");
    }

    /// A day begun before segments (records in `audit/{tenant}/{day}`, a head without a segment) goes on
    /// in segment 1, and verifies as one chain.
    #[tokio::test]
    async fn a_day_written_before_segments_continues_in_segment_one() {
        let s = SqliteStore::in_memory().unwrap();
        let mut prev = genesis(STREAM);
        for seq in 1..=2u64 {
            let mut r = Record {
                seq,
                time: "2026-11-26T09:00:00.000Z".into(),
                tenant: "contoso".into(),
                prev_hash: prev.clone(),
                ..entry(&format!("old{seq}"))
            };
            r.hash = r.compute_hash();
            s.append(STREAM, seq, &serde_json::to_vec(&r).unwrap()).await.unwrap();
            prev = r.hash;
        }
        let old_head = serde_json::json!({"seq": 2, "hash": prev, "pending": null});
        s.put(&keys::audit_head(STREAM), &serde_json::to_vec(&old_head).unwrap()).await.unwrap();
        let next = append(&s, "contoso", at("2026-11-26T10:00:00Z"), entry("new")).await.unwrap();
        assert_eq!(next.seq, 3);
        assert_eq!(s.read_stream(STREAM).await.unwrap().len(), 2, "the old stream is not written again");
        assert_eq!(s.read_stream(SEGMENT).await.unwrap().len(), 1);
        let report = &verify(&s, None).await.unwrap()[0];
        assert!(report.ok() && report.records == 3 && report.segments == 2, "{report:?}");
    }

    /// Remembers which streams were read, listed, appended to and deleted.
    #[derive(Default)]
    struct Watched(std::sync::Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl crate::store::hooked::Hook for Watched {
        async fn before(&self, op: &crate::store::hooked::Op<'_>) -> crate::store::StoreResult<()> {
            use crate::store::hooked::Op;
            let what = match *op {
                Op::List(p) => format!("list {p}"),
                Op::Append(stream, seq) => format!("append {stream}#{seq}"),
                Op::ReadStream(stream) => format!("read {stream}"),
                Op::ListStreams(p) => format!("list streams {p}"),
                Op::Scan(p) => format!("scan {p}"),
                Op::DeleteStream(stream) => format!("delete {stream}"),
                _ => return Ok(()),
            };
            self.0.lock().unwrap().push(what);
            Ok(())
        }
    }

    /// The repair of a writer that died mid-append, deep into a day, touches the open segment only: no
    /// stream is read or listed, and the record lands at its place in the open segment.
    #[tokio::test]
    async fn repair_after_a_crash_touches_only_the_open_segment() {
        let segments = Segments { records: 3 };
        let inner = std::sync::Arc::new(filled_in(7, 3).await);
        let s = crate::store::hooked::Hooked::new(inner.clone(), Watched::default());
        let key = keys::audit_head(STREAM);
        let head: Head = serde_json::from_slice(&s.get(&key).await.unwrap().unwrap().value).unwrap();
        assert_eq!((head.seq, head.segment, head.first), (7, 3, 7));
        // A writer announced record 8 and died before writing it.
        let mut pending = Record {
            seq: 8,
            time: "2026-11-26T10:00:00.000Z".into(),
            tenant: "contoso".into(),
            prev_hash: head.hash.clone(),
            ..entry("died")
        };
        pending.hash = pending.compute_hash();
        let (segment, first) = head.place(8, segments);
        let announce = Head { pending: Some(pending), segment, first, ..head };
        s.put(&key, &serde_json::to_vec(&announce).unwrap()).await.unwrap();
        let next = append_in(&s, segments, "contoso", at("2026-11-26T11:00:00Z"), entry("next")).await.unwrap();
        assert_eq!(next.seq, 9);
        let seen = s.hook.0.lock().unwrap().clone();
        assert_eq!(seen, [format!("append {STREAM}/000003#2"), format!("append {STREAM}/000003#3")]);
        let report = &verify(inner.as_ref(), None).await.unwrap()[0];
        assert!(report.ok() && report.records == 9, "{report:?}");
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
        let stored = s.read_stream(SEGMENT).await.unwrap();
        assert!(!String::from_utf8_lossy(&stored[0]).contains("SUPERSECRET"));
    }
}
