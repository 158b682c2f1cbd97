//! The timer path: list alerts updated since the watermark, queue each new version, then advance the
//! watermark with compare-and-swap.
//!
//! Graph has no change notifications for `alerts_v2`, so this poll is secmon's backbone. Per tenant:
//! 1. read the watermark; the walk covers `lastUpdateDateTime ≥ watermark − overlap`;
//! 2. list that range as **windows that each fit in one page** (below), oldest window first;
//! 3. for every window, claim its versions in the seen window (compare-and-swap), queue the ones this
//!    poll claimed, and mark them queued (compare-and-swap again, together with the next window's
//!    claims, or at the end of the walk: one write of the window a page, from the copy the walk
//!    wrote last, read again only when another poll changed it);
//! 4. only then advance the watermark (compare-and-swap, forward only, never past `now`).
//!
//! **Why windows.** Offset paging over a set that changes between pages skips items (an update moves an
//! alert, every later item shifts by one; `../shared` research notes, "Paging under change"), and the
//! docs promise no order. One response without `@odata.nextLink` is a consistent snapshot whatever the
//! order, so a window counts as listed only when one page covered it. A window that does not fit is
//! split and its halves are listed again; the page that did not fit only chooses the split point:
//! sorted ascending (we ask `$orderby=lastUpdateDateTime asc`), everything before its last second fits;
//! sorted descending (Graph's documented default), everything after its first second fits; in any other
//! order, the middle. A server that refuses `$orderby` (400) is asked again without it, and the refusal
//! is remembered in `paging/{tenant}` for [`ORDERBY_RETRY_AFTER`]. Only a window one second wide
//! with more alerts than a page is walked by `nextLink` (each next page read while the one before it is
//! queued), then listed again until a pass finds nothing new; reconciliation (below) covers what that
//! could still miss.
//!
//! **Why claims in the seen window.** Two polls of one tenant (a timer and a doorbell, two instances)
//! must not both queue a version: each window's versions are claimed in `seen/{tenant}/window` under a
//! lease before they are sent, so the second poll skips them; a claim whose poll died expires and is
//! taken again (work repeated, never skipped). A poll never moves the watermark past a version another
//! poll still holds.
//!
//! **Why a cap.** A poll queues at most `poll.max_versions_per_poll` new versions; with more to do it
//! stops at a window boundary, moves the watermark there and asks for a follow-up poll, which queues
//! behind everything already queued, so one tenant's backfill cannot hold another tenant's alerts back
//! by more than that many messages.
//!
//! **Reconciliation** ([`reconcile_tenant`], the `reconcile-alerts` timer) lists `poll.reconcile.window`
//! back from now with the same walk and queues every version the seen window does not hold: alerts
//! Graph made visible after the overlap had passed them. It counts them in the health record; a
//! non-zero count means the overlap is too small.
//!
//! A crash anywhere before step 4 leaves the old watermark, so the next poll lists the same alerts
//! again: work is repeated, never skipped. The watermark is the newest `lastUpdateDateTime` listed,
//! never later than our `now` (a version written during the walk carries a later time, so the
//! watermark never passes a version that was not listed) and never moving backwards.
//!
//! Store keys:
//! - `watermark/{tenant}`: `{"watermark": RFC 3339, "updated": RFC 3339}`;
//! - `seen/{tenant}/window`: `{"versions": {"{id}\u001f{lastUpdateDateTime}": instant}, "queueing": {…}}`,
//!   the versions queued whose instant is within the overlap or the reconciliation window, whichever
//!   is longer, before the watermark (older ones can no longer be listed), and the claims of versions
//!   being queued;
//! - `paging/{tenant}`: `{"orderby_refused_until": RFC 3339}`;
//! - `health/{tenant}`: see [`super::health`].

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::app::App;
use crate::graph::{AlertPage, AlertQuery, GraphError, Retry};
use crate::intake::Message;
use crate::store::{self, Change, Etag, Precondition, StoreError, Versioned, keys};

pub use crate::config::intake::{PollConfig, ReconcileConfig};

/// How long a refused `$orderby` is not sent again to that tenant.
pub const ORDERBY_RETRY_AFTER: Duration = Duration::hours(6);
/// How long a poll holds its claim on the versions it is queueing.
pub const QUEUEING_LEASE: Duration = Duration::minutes(5);
/// The order asked for: a hint for splitting windows, never trusted for completeness.
pub const ORDERBY: &str = "lastUpdateDateTime asc";
/// How many more times a one-second window that needs `nextLink` is listed, until a pass finds nothing new.
const DENSE_PASSES: usize = 3;

/// What one poll of one tenant did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PollReport {
    /// Tenant name.
    pub tenant: String,
    /// Pages read.
    pub pages: usize,
    /// Windows listed whole (each by one page, or by a dense walk).
    pub windows: usize,
    /// Windows that did not fit in one page and were split.
    pub splits: usize,
    /// Alert versions listed by Graph in the windows (repeats included).
    pub alerts_seen: usize,
    /// New alert versions queued.
    pub queued: usize,
    /// Versions skipped because they were queued before (or are being queued by another poll).
    pub already_queued: usize,
    /// The poll stopped at `poll.max_versions_per_poll` and asked for a follow-up poll.
    pub more: bool,
    /// Whether `$orderby` was sent (false when the tenant's Graph refused it).
    pub orderby: bool,
    /// The `$filter` lower bound used.
    pub since: String,
    /// Watermark before the poll (`None` on a tenant's first poll).
    pub watermark_before: Option<String>,
    /// Watermark after the poll.
    pub watermark_after: Option<String>,
    /// Graph requests made.
    pub requests: u64,
    /// Attempts retried (throttling, 5xx, dropped connections, malformed pages).
    pub retries: u64,
    /// Waits Graph asked for with `Retry-After`.
    pub throttled_waits: u64,
    /// Their total, in milliseconds.
    pub throttled_wait_ms: u64,
    /// Waits secmon imposed on itself to stay within the request budget.
    pub budget_waits: u64,
}

/// Why a poll failed. The watermark did not move, so the next poll repeats the work.
#[derive(Debug, thiserror::Error)]
#[error("poll {tenant}: {message}")]
pub struct PollError {
    /// Tenant name.
    pub tenant: String,
    /// What happened (redacted).
    pub message: String,
    /// Whether the next poll can succeed without a change of configuration.
    pub retry: Retry,
}

impl PollError {
    fn new(tenant: &str, message: impl AsRef<str>, retry: Retry) -> Self {
        Self { tenant: tenant.into(), message: crate::redact::redact(message.as_ref()), retry }
    }

    fn store(tenant: &str, what: &str, e: StoreError) -> Self {
        Self::new(tenant, format!("{what}: {e}"), Retry::Retryable)
    }

    fn graph(tenant: &str, e: GraphError) -> Self {
        Self::new(tenant, e.to_string(), e.retry)
    }
}

/// How far a poll or backfill has come, for a progress bar.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Pages read so far.
    pub pages: usize,
    /// Versions listed so far.
    pub alerts_seen: usize,
    /// Versions queued so far.
    pub queued: usize,
    /// The newest `lastUpdateDateTime` listed so far (windows are listed oldest first).
    pub newest: Option<DateTime<Utc>>,
}

/// The stored watermark of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Watermark {
    /// Every alert version updated before `watermark − overlap` has been queued.
    pub watermark: DateTime<Utc>,
    /// When it was written.
    pub updated: DateTime<Utc>,
    /// Every version updated from here up to `watermark − overlap` has been queued: the lower bound of
    /// the tenant's first poll, or of a backfill that reached further back. A backfill skips what lies
    /// in between, so running it twice queues each version once. Absent in records written before it
    /// existed (a backfill then relies on the seen window and sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covered_since: Option<DateTime<Utc>>,
}

/// The versions queued recently, keyed `{id}\u{1f}{lastUpdateDateTime as written}`, and the claims of
/// versions being queued.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SeenWindow {
    /// Version key → the instant used to forget it.
    pub versions: BTreeMap<String, DateTime<Utc>>,
    /// Version key → the poll queueing it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub queueing: BTreeMap<String, Queueing>,
    /// Every version queued with an instant at or after this is in `versions` (absent in windows
    /// written before reconciliation existed; they held the overlap only). Reconciliation starts here,
    /// so it never counts as missing what was queued before the window remembered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// A poll's claim on a version it is queueing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Queueing {
    /// The poll (a random token per walk).
    pub by: String,
    /// When the claim lapses if the poll never marks the version queued.
    pub until: DateTime<Utc>,
    /// The version's instant.
    pub at: DateTime<Utc>,
}

/// What the tenant's Graph accepts in a list request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Paging {
    /// `$orderby` answered 400; not sent again before this time.
    pub orderby_refused_until: Option<DateTime<Utc>>,
}

/// An alert version's dedupe key and its instant, if `lastUpdateDateTime` parses.
///
/// An alert without a usable `id` (never seen from Graph, but nothing is dropped) is keyed by a hash
/// of its JSON, so it is queued once (the respond stage sends it to the poison queue) rather than
/// on every poll.
pub fn version_key(alert: &Value) -> (String, Option<DateTime<Utc>>) {
    let ts = alert.get("lastUpdateDateTime").and_then(Value::as_str);
    let instant = ts.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
    let key = match alert.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) {
        Some(id) => format!("{id}\u{1f}{}", ts.unwrap_or("")),
        None => {
            use sha2::Digest;
            let bytes = serde_json::to_vec(alert).expect("JSON values serialize");
            format!("#{}", hex::encode(sha2::Sha256::digest(&bytes)))
        }
    };
    (key, instant)
}

/// [`version_key`] of an alert's JSON text, reading only its `id` and `lastUpdateDateTime` (the same key
/// and instant; anything unusual, such as an alert without an id, is parsed and keyed as a whole).
pub fn version_key_raw(alert: &RawValue) -> (String, Option<DateTime<Utc>>) {
    #[derive(Deserialize)]
    struct Stamp<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        #[serde(rename = "lastUpdateDateTime", borrow, default)]
        ts: Option<&'a RawValue>,
    }
    let text = |raw: Option<&RawValue>| -> Option<std::borrow::Cow<'_, str>> {
        raw.filter(|r| r.get().starts_with('"')).and_then(|r| serde_json::from_str(r.get()).ok())
    };
    if let Ok(stamp) = serde_json::from_str::<Stamp>(alert.get())
        && let Some(id) = text(stamp.id).filter(|id| !id.is_empty())
    {
        let ts = text(stamp.ts);
        let instant = ts.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
        return (format!("{id}\u{1f}{}", ts.as_deref().unwrap_or("")), instant);
    }
    version_key(&serde_json::from_str(alert.get()).expect("a raw value is JSON"))
}

fn fmt_filter_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The `$filter` for alerts updated at or after `since` (floored to the second: Graph's filter is
/// compared against times with more precision, and a lower bound may only err early).
pub fn filter_since(since: DateTime<Utc>) -> String {
    format!("lastUpdateDateTime ge {}", fmt_filter_time(since))
}

fn floor_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::seconds(1)).unwrap_or(t)
}

/// One window of the walk: `lo ≤ lastUpdateDateTime < hi`, whole seconds, open above when `hi` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Lower bound, inclusive.
    pub lo: DateTime<Utc>,
    /// Upper bound, exclusive.
    pub hi: Option<DateTime<Utc>>,
}

impl Window {
    /// The window's `$filter`.
    pub fn filter(&self) -> String {
        match self.hi {
            None => filter_since(self.lo),
            Some(hi) => format!("{} and lastUpdateDateTime lt {}", filter_since(self.lo), fmt_filter_time(hi)),
        }
    }

    /// Splits a window whose first page (`alerts`) did not hold it all, into two or three windows, oldest
    /// first. The page only chooses the points: all in one second, that second becomes its own window;
    /// sorted ascending, everything before its last second
    /// fitted; sorted descending (Graph's default), everything after its first second fitted, and the
    /// rest is halved (a walk goes oldest first, so peeling one page at a time off the top would cost a
    /// request per page for every poll of a backlog); in any other order, the middle (of `lo` and `now`,
    /// for the open window). `None` when the window is one second wide.
    pub fn split(&self, alerts: &[Value], now: DateTime<Utc>) -> Option<Vec<Window>> {
        let times: Vec<DateTime<Utc>> = alerts.iter().filter_map(|a| version_key(a).1).collect();
        self.split_at(&times, now)
    }

    /// [`Window::split`] given the page's `lastUpdateDateTime`s, in the page's order.
    pub fn split_at(&self, times: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<Vec<Window>> {
        let inside =
            |s: DateTime<Utc>, lo: DateTime<Utc>, hi: Option<DateTime<Utc>>| s > lo && hi.is_none_or(|h| s < h);
        let cut = |points: &[DateTime<Utc>]| {
            let mut bounds = vec![self.lo];
            bounds.extend_from_slice(points);
            let mut out: Vec<Window> = bounds.windows(2).map(|b| Window { lo: b[0], hi: Some(b[1]) }).collect();
            out.push(Window { lo: *bounds.last().expect("not empty"), hi: self.hi });
            out
        };
        let middle = |lo: DateTime<Utc>, hi: DateTime<Utc>| floor_second(lo + (hi - lo) / 2);
        if let (Some(min), Some(max)) = (times.iter().min(), times.iter().max()) {
            // The whole page lies in one second, so that second holds a page or more: it becomes a window
            // of its own at once (walked by `nextLink`), instead of being found by listing again what the
            // other cuts leave around it, a page of the same alerts each time.
            let second = floor_second(*min);
            if floor_second(*max) == second {
                let points: Vec<DateTime<Utc>> = [second, second + Duration::seconds(1)]
                    .into_iter()
                    .filter(|p| inside(*p, self.lo, self.hi))
                    .collect();
                if !points.is_empty() {
                    return Some(cut(&points));
                }
            }
            let ascending = times.windows(2).all(|p| p[0] <= p[1]);
            let descending = times.windows(2).all(|p| p[0] >= p[1]);
            let s = floor_second(*max);
            if ascending && inside(s, self.lo, self.hi) {
                return Some(cut(&[s]));
            }
            let s = floor_second(*min) + Duration::seconds(1);
            if descending && inside(s, self.lo, self.hi) {
                let mid = middle(self.lo, s);
                return Some(if inside(mid, self.lo, Some(s)) { cut(&[mid, s]) } else { cut(&[s]) });
            }
        }
        let top = times.iter().max().copied().unwrap_or(now).max(now);
        let hi = self.hi.unwrap_or(floor_second(top) + Duration::seconds(1));
        let mid = middle(self.lo, hi);
        inside(mid, self.lo, self.hi).then(|| cut(&[mid]))
    }
}

fn overlap(app: &App) -> Duration {
    Duration::from_std(app.config.poll.overlap).unwrap_or(Duration::zero())
}

/// How long queued versions are remembered: the overlap or the reconciliation window, the longer.
fn retention(app: &App) -> Duration {
    let reconcile = Duration::from_std(app.config.poll.reconcile.window).unwrap_or(Duration::days(1));
    overlap(app).max(reconcile)
}

/// Polls one tenant and records the outcome in its health record.
pub async fn poll_tenant(app: &App, tenant: &str, now: DateTime<Utc>) -> Result<PollReport, PollError> {
    let result = walk(app, tenant, Walk::Poll, now, &|_| {}).await;
    super::health::record(app, tenant, now, &result).await;
    if let Ok(r) = &result {
        crate::metrics::count(crate::metrics::Counter::AlertsPulled, tenant, r.queued as u64);
        crate::metrics::poll_succeeded(tenant, r.queued);
    }
    result
}

/// Walks history from `since` (a backfill), queueing every version not queued before; the watermark
/// only moves forward. `progress` is called after every page.
pub async fn backfill(
    app: &App,
    tenant: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<PollReport, PollError> {
    let result = walk(app, tenant, Walk::Backfill(since), now, progress).await;
    super::health::record(app, tenant, now, &result).await;
    result
}

/// Re-lists `poll.reconcile.window` back from `now` and queues every version not queued before; the
/// watermark does not move. Records when it ran and how many versions it found missing.
pub async fn reconcile_tenant(app: &App, tenant: &str, now: DateTime<Utc>) -> Result<PollReport, PollError> {
    let window = Duration::from_std(app.config.poll.reconcile.window).unwrap_or(Duration::days(1));
    let result = walk(app, tenant, Walk::Reconcile(now - window), now, &|_| {}).await;
    match &result {
        Ok(r) if r.queued > 0 => tracing::warn!(
            tenant,
            missing = r.queued,
            "reconciliation found alert versions the polls had missed; poll.overlap is too small for this tenant"
        ),
        Ok(r) => tracing::info!(tenant, listed = r.alerts_seen, "reconciliation found nothing missing"),
        Err(e) => tracing::error!(tenant, "reconciliation failed: {e}"),
    }
    super::health::record_reconcile(app, tenant, now, &result).await;
    result
}

/// What a walk is for.
#[derive(Debug, Clone, Copy)]
enum Walk {
    Poll,
    Backfill(DateTime<Utc>),
    Reconcile(DateTime<Utc>),
}

async fn walk(
    app: &App,
    tenant: &str,
    kind: Walk,
    now: DateTime<Utc>,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<PollReport, PollError> {
    if app.config.tenant(tenant).is_none() {
        return Err(PollError::new(tenant, "not a configured tenant", Retry::Permanent));
    }
    let store = app.store.as_ref();
    let stats_before = app.graph.call_stats(tenant);
    let overlap = overlap(app);

    let wm_key = keys::watermark(tenant);
    let stored = store.get(&wm_key).await.map_err(|e| PollError::store(tenant, "read the watermark", e))?;
    let mut covered_since = None;
    let old = match &stored {
        None => None,
        Some(v) => {
            let wm: Watermark = serde_json::from_slice(&v.value).map_err(|e| {
                // Guessing a watermark could skip alerts; stop and say so (the health alarm will fire).
                PollError::new(
                    tenant,
                    format!("stored watermark {wm_key} is unreadable ({e}); fix or delete it"),
                    Retry::Permanent,
                )
            })?;
            covered_since = wm.covered_since;
            Some(wm.watermark)
        }
    };
    let first_lookback = Duration::from_std(app.config.poll.first_lookback).unwrap_or(Duration::days(1));
    let remembered = match kind {
        Walk::Reconcile(_) => {
            let seen = store
                .get(&keys::seen(tenant))
                .await
                .map_err(|e| PollError::store(tenant, "read the seen window", e))?;
            // A window written before `since` existed held the overlap behind the watermark only.
            seen.map(|v| parse_window(tenant, Some(&v.value))).and_then(|w| w.since.or(old.map(|o| o - overlap)))
        }
        _ => None,
    };
    let lower = match (kind, old) {
        (Walk::Reconcile(s), _) => remembered.map_or(s, |r| r.max(s)),
        (Walk::Backfill(s), _) => s,
        (Walk::Poll, Some(wm)) => wm - overlap,
        (Walk::Poll, None) => now - first_lookback,
    };
    let cap = matches!(kind, Walk::Poll).then_some(app.config.poll.max_versions_per_poll.max(1));
    let mut lister = Lister {
        app,
        tenant,
        now,
        holder: uuid::Uuid::new_v4().to_string(),
        orderby: orderby_allowed(app, tenant, now).await?,
        floor_base: old,
        lower: floor_second(lower),
        retention: retention(app),
        report: PollReport {
            tenant: tenant.to_string(),
            since: floor_second(lower).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            watermark_before: old.map(|w| w.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            ..Default::default()
        },
        newest: None,
        held: None,
        known: std::collections::HashSet::new(),
        learned: false,
        seen: SeenState::default(),
        progress,
        // A backfill skips the versions the polls (or an earlier backfill) have queued for certain.
        covered: match (kind, covered_since, old) {
            (Walk::Backfill(_), Some(from), Some(wm)) if from < wm - overlap => Some((from, wm - overlap)),
            _ => None,
        },
    };
    let stopped_at = lister.list(floor_second(lower), cap).await?;
    let Lister { mut report, newest, held, .. } = lister;
    report.more = stopped_at.is_some();

    if !matches!(kind, Walk::Reconcile(_)) {
        // Everything listed is queued: now the watermark may move (forward only, never past `now`, never
        // past where a capped poll stopped, never past a version another poll is still queueing).
        let mut candidate = stopped_at.or(newest).map(|n| n.min(now));
        if let (Some(c), Some(h)) = (candidate, held) {
            candidate = Some(c.min(h));
        }
        let new_wm = match (old, candidate) {
            (Some(o), Some(c)) => o.max(c),
            (Some(o), None) => o,
            (None, Some(c)) => c,
            (None, None) => floor_second(lower),
        };
        // What this walk adds to the range known to be queued (see `Watermark::covered_since`).
        let covers = match (kind, old) {
            (Walk::Backfill(s), _) => Some(floor_second(s)),
            (Walk::Poll, None) => Some(floor_second(lower)),
            _ => None,
        };
        let written = advance(app, tenant, stored, new_wm, covers, now).await?;
        report.watermark_after = Some(written.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    } else {
        report.watermark_after = report.watermark_before.clone();
    }

    let stats = app.graph.call_stats(tenant);
    report.requests = stats.requests - stats_before.requests;
    report.retries = stats.retries - stats_before.retries;
    report.throttled_waits = stats.throttled_waits - stats_before.throttled_waits;
    report.throttled_wait_ms = (stats.throttled_wait.saturating_sub(stats_before.throttled_wait)).as_millis() as u64;
    report.budget_waits = stats.budget_waits - stats_before.budget_waits;
    Ok(report)
}

/// Whether `$orderby` may be sent to the tenant's Graph (it has not refused it lately).
async fn orderby_allowed(app: &App, tenant: &str, now: DateTime<Utc>) -> Result<bool, PollError> {
    let stored = app
        .store
        .get(&keys::paging(tenant))
        .await
        .map_err(|e| PollError::store(tenant, "read the paging record", e))?;
    let paging: Paging = stored.and_then(|v| serde_json::from_slice(&v.value).ok()).unwrap_or_default();
    Ok(paging.orderby_refused_until.is_none_or(|until| until <= now))
}

/// One walk over a range: the windows still to list, the claims, the counters.
struct Lister<'a> {
    app: &'a App,
    tenant: &'a str,
    now: DateTime<Utc>,
    holder: String,
    orderby: bool,
    floor_base: Option<DateTime<Utc>>,
    lower: DateTime<Utc>,
    retention: Duration,
    report: PollReport,
    newest: Option<DateTime<Utc>>,
    held: Option<DateTime<Utc>>,
    progress: &'a (dyn Fn(&Progress) + Send + Sync),
    /// Versions whose instant lies in `[from, to)` were queued before: a backfill skips them.
    covered: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Versions known to be queued: in the seen window when this walk read it, or queued by this walk.
    /// Each poll lists the whole overlap again, and a page whose versions are all known costs no store
    /// call (being in the window is never undone for a version that can still be listed).
    known: std::collections::HashSet<String>,
    /// Whether `known` holds the seen window's versions yet (read once per walk).
    learned: bool,
    /// The seen window as this walk last wrote it, and what it has yet to mark queued there.
    seen: SeenState,
}

/// Versions queued by a walk whose claims are still to be turned into entries of the seen window. The
/// walk does it in its next change of the window (the next page's claims) or at its end, so a page costs
/// one write of the window, not two. Until then the claims hold them: another poll skips them and does
/// not move the watermark past them, and a walk that dies leaves claims that lapse and are taken again.
#[derive(Debug, Default)]
struct Unsettled {
    /// Versions queued, with their instants.
    sent: Vec<(String, DateTime<Utc>)>,
    /// Versions claimed (queued or not): their claims are given back.
    claimed: Vec<String>,
}

impl Unsettled {
    fn is_empty(&self) -> bool {
        self.sent.is_empty() && self.claimed.is_empty()
    }

    /// Marks the versions queued and gives back `holder`'s claims on them in `w`; says whether `w` changed.
    fn apply(&self, w: &mut SeenWindow, holder: &str) -> bool {
        for key in &self.claimed {
            if w.queueing.get(key).is_some_and(|q| q.by == holder) {
                w.queueing.remove(key);
            }
        }
        for (key, at) in &self.sent {
            w.versions.insert(key.clone(), *at);
        }
        !self.is_empty()
    }
}

/// A walk's own state of the seen window between its writes.
#[derive(Debug, Default)]
struct SeenState {
    /// The window as this walk last wrote it, and the version that write carries.
    cached: Option<(Etag, SeenWindow)>,
    /// Versions this walk queued and has not yet marked queued.
    unsettled: Unsettled,
}

/// Changes a tenant's seen window with compare-and-swap, marking `seen.unsettled` queued in the same
/// write (and forgetting them once it is written). It starts from `seen.cached`, the window as this
/// walk last wrote it, without reading or parsing it again: the window holds every version of the
/// overlap (10,000 entries after a burst of 10,000 alerts) and a walk changes it once a page. A write
/// that finds the window changed by another poll reads it and tries again. `change` says whether it
/// changed the window; an unchanged one is not written. What `change` decides from a cached copy that
/// is out of date is safe when it leaves the window as it is: a version in `versions` stays there, and a
/// claim it sees only makes the walk hold back.
///
/// Written here rather than with [`store::update`], which hands its closure the stored bytes and
/// keeps no version between calls.
async fn change_seen<R>(
    app: &App,
    tenant: &str,
    holder: &str,
    seen: &mut SeenState,
    what: &str,
    mut change: impl FnMut(&mut SeenWindow) -> (bool, R),
) -> Result<R, PollError> {
    let store = app.store.as_ref();
    let key = keys::seen(tenant);
    let cached = &mut seen.cached;
    for _ in 0..store::CAS_ATTEMPTS {
        let (mut window, cond) = match cached.take() {
            Some((etag, window)) => (window, Precondition::Matches(etag)),
            None => match store.get(&key).await.map_err(|e| PollError::store(tenant, what, e))? {
                Some(v) => (parse_window(tenant, Some(&v.value)), Precondition::Matches(v.etag)),
                None => (SeenWindow::default(), Precondition::Absent),
            },
        };
        let settled = seen.unsettled.apply(&mut window, holder);
        let (changed, answer) = change(&mut window);
        if !changed && !settled {
            if let Precondition::Matches(etag) = cond {
                *cached = Some((etag, window));
            }
            return Ok(answer);
        }
        let bytes = serde_json::to_vec(&window).expect("windows serialize");
        match store.put_if(&key, &bytes, cond).await {
            Ok(etag) => {
                *cached = Some((etag, window));
                seen.unsettled = Unsettled::default();
                return Ok(answer);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(PollError::store(tenant, what, e)),
        }
    }
    Err(PollError::store(tenant, what, StoreError::Conflict { key }))
}

/// The `lastUpdateDateTime`s of a page, in its order.
fn times(alerts: &[Box<RawValue>]) -> Vec<DateTime<Utc>> {
    alerts.iter().filter_map(|a| version_key_raw(a).1).collect()
}

impl Lister<'_> {
    /// Lists `[lower, ∞)` window by window, oldest first. Returns where it stopped when `cap` new
    /// versions were queued with windows left (everything before that point is listed and queued).
    async fn list(&mut self, lower: DateTime<Utc>, cap: Option<usize>) -> Result<Option<DateTime<Utc>>, PollError> {
        let listed = self.list_windows(lower, cap).await;
        // What was queued is marked queued even when the walk failed after it.
        let settled = self.settle().await;
        let stopped = listed?;
        settled?;
        Ok(stopped)
    }

    async fn list_windows(
        &mut self,
        lower: DateTime<Utc>,
        cap: Option<usize>,
    ) -> Result<Option<DateTime<Utc>>, PollError> {
        let mut pending = VecDeque::from([Window { lo: lower, hi: None }]);
        while let Some(window) = pending.pop_front() {
            let page = self.first_page(&window).await?;
            if page.next_link.is_none() {
                self.take(page.alerts).await?;
                self.report.windows += 1;
            } else if let Some(parts) = window.split_at(&times(&page.alerts), self.now) {
                self.report.splits += 1;
                for part in parts.into_iter().rev() {
                    pending.push_front(part);
                }
                continue;
            } else {
                self.dense(&window, page).await?;
                self.report.windows += 1;
            }
            if let (Some(cap), Some(next)) = (cap, pending.front())
                && self.report.queued >= cap
            {
                return Ok(Some(next.lo));
            }
        }
        Ok(None)
    }

    /// The first page of a window, with `$orderby` unless the tenant's Graph refuses it.
    async fn first_page(&mut self, window: &Window) -> Result<AlertPage, PollError> {
        let top = Some(self.app.config.poll.page_size());
        let query =
            |orderby: bool| AlertQuery { filter: window.filter(), orderby: orderby.then(|| ORDERBY.to_string()), top };
        self.report.pages += 1;
        self.report.orderby = self.orderby;
        match self.app.graph.list_alerts(self.tenant, &query(self.orderby)).await {
            Err(e) if self.orderby && e.status == Some(400) => {
                let plain = self.app.graph.list_alerts(self.tenant, &query(false)).await;
                let page = plain.map_err(|e| PollError::graph(self.tenant, e))?;
                tracing::warn!(tenant = self.tenant, "Graph refused $orderby ({e}); listing without it");
                self.orderby = false;
                self.report.orderby = false;
                self.remember_refusal().await;
                Ok(page)
            }
            other => other.map_err(|e| PollError::graph(self.tenant, e)),
        }
    }

    async fn remember_refusal(&self) {
        let until = self.now + ORDERBY_RETRY_AFTER;
        let record = serde_json::to_vec(&Paging { orderby_refused_until: Some(until) }).expect("serializes");
        let written =
            store::update(self.app.store.as_ref(), &keys::paging(self.tenant), |_| Change::Put(record.clone(), ()))
                .await;
        if let Err(e) = written {
            // Only costs a refused request on the next poll.
            tracing::warn!(tenant = self.tenant, "could not remember the $orderby refusal: {e}");
        }
    }

    /// A one-second window with more alerts than a page: follow `nextLink`, then list it again until a
    /// pass finds nothing new.
    async fn dense(&mut self, window: &Window, first: AlertPage) -> Result<(), PollError> {
        tracing::warn!(
            tenant = self.tenant,
            filter = window.filter(),
            "more alerts in one second than fit in a page; walking it by nextLink"
        );
        let (app, tenant) = (self.app, self.tenant);
        let mut page = first;
        for pass in 0..=DENSE_PASSES {
            let mut found = 0;
            loop {
                // The next page is read while this one is taken, so Graph's time and the store's overlap.
                // A take that fails drops the read; a read that fails is reported after the take, whose
                // versions are queued and marked by then.
                let next = page.next_link.take();
                let read = async move {
                    match next {
                        Some(link) => Some(app.graph.next_alerts(tenant, &link).await),
                        None => None,
                    }
                };
                let (taken, read) = tokio::join!(self.take(std::mem::take(&mut page.alerts)), read);
                found += taken?;
                let Some(read) = read else { break };
                self.report.pages += 1;
                page = read.map_err(|e| PollError::graph(tenant, e))?;
            }
            if found == 0 || pass == DENSE_PASSES {
                if found > 0 {
                    tracing::warn!(
                        tenant = self.tenant,
                        "a dense window still changes; reconciliation will look again"
                    );
                }
                return Ok(());
            }
            page = self.first_page(window).await?;
        }
        Ok(())
    }

    /// Claims, queues and marks queued the versions of one listed page; returns how many it queued.
    async fn take(&mut self, alerts: Vec<Box<RawValue>>) -> Result<usize, PollError> {
        let (app, tenant, now) = (self.app, self.tenant, self.now);
        let mut candidates = Vec::with_capacity(alerts.len());
        for alert in alerts {
            let (key, instant) = version_key_raw(&alert);
            if let Some(t) = instant {
                self.newest = self.newest.max(Some(t));
            }
            if instant.is_none() {
                tracing::error!(tenant, key, "alert without a readable id or lastUpdateDateTime; queued as is");
            }
            let covered = instant.is_some_and(|t| self.covered.is_some_and(|(from, to)| from <= t && t < to));
            if covered || self.known.contains(&key) {
                self.report.already_queued += 1;
                self.report.alerts_seen += 1;
                continue;
            }
            candidates.push((key, instant.unwrap_or(now), alert));
        }
        self.report.alerts_seen += candidates.len();
        if candidates.is_empty() {
            self.report_progress();
            return Ok(0);
        }
        // Forget versions that no later listing can reach (memory and bytes stay flat on long walks).
        let newest = self.newest.unwrap_or(now).min(now);
        let floor = self.floor_base.map_or(newest, |o| o.min(newest)) - self.retention;
        let (holder, lower) = (self.holder.clone(), self.lower);
        let (known, learned) = (&mut self.known, &mut self.learned);
        let what = "claim versions in the seen window";
        let (take, held) = change_seen(app, tenant, &holder, &mut self.seen, what, |w| {
            if !*learned {
                known.extend(w.versions.keys().cloned());
                *learned = true;
            }
            let before = (w.versions.len(), w.queueing.len(), w.since);
            // A window without `since` holds what its polls queued from this walk's lower bound on.
            w.since = Some(w.since.unwrap_or(lower).max(floor));
            w.versions.retain(|_, t| *t >= floor);
            w.queueing.retain(|_, q| q.until > now);
            let mut take = Vec::new();
            let mut held: Option<DateTime<Utc>> = None;
            for (i, (key, at, _)) in candidates.iter().enumerate() {
                if w.versions.contains_key(key) {
                    continue;
                }
                match w.queueing.get(key) {
                    Some(q) if q.by != holder => held = Some(held.map_or(*at, |h| h.min(*at))),
                    _ => {
                        take.push(i);
                        let claim = Queueing { by: holder.clone(), until: now + QUEUEING_LEASE, at: *at };
                        w.queueing.insert(key.clone(), claim);
                    }
                }
            }
            let changed = !take.is_empty() || before != (w.versions.len(), w.queueing.len(), w.since);
            (changed, (take, held))
        })
        .await?;
        if let Some(h) = held {
            self.held = Some(self.held.map_or(h, |o| o.min(h)));
        }
        self.report.already_queued += candidates.len() - take.len();
        let (sent, failure) = send_page(app, tenant, take.iter().map(|i| &candidates[*i])).await;
        let queued = sent.len();
        self.report.queued += queued;
        self.known.extend(sent.iter().map(|(key, _)| key.clone()));
        self.seen.unsettled = Unsettled { sent, claimed: take.iter().map(|i| candidates[*i].0.clone()).collect() };
        self.report_progress();
        match failure {
            Some(e) => Err(PollError::store(tenant, "queue an alert", e)),
            None => Ok(queued),
        }
    }

    fn report_progress(&self) {
        let prog = Progress {
            pages: self.report.pages,
            alerts_seen: self.report.alerts_seen,
            queued: self.report.queued,
            newest: self.newest,
        };
        (self.progress)(&prog);
    }

    /// Marks the versions queued so far queued in the seen window, and gives back the claims of the rest.
    async fn settle(&mut self) -> Result<(), PollError> {
        if self.seen.unsettled.is_empty() {
            return Ok(());
        }
        let what = "mark versions queued in the seen window";
        change_seen(self.app, self.tenant, &self.holder, &mut self.seen, what, |_| (false, ())).await
    }
}

/// Queues the alerts of one page, the page's messages in one [`crate::store::Queue::send_many`] (an alert
/// too large for a message goes through the store first, on its own: [`Message::send`]). Returns the
/// versions queued and, if one failed, why (the versions after it are not queued).
async fn send_page<'a>(
    app: &App,
    tenant: &str,
    page: impl Iterator<Item = &'a (String, DateTime<Utc>, Box<RawValue>)>,
) -> (Vec<(String, DateTime<Utc>)>, Option<StoreError>) {
    let (queue, max_body) = (app.queue.as_ref(), app.queue.max_body());
    let mut sent = Vec::new();
    let mut batch: Vec<(&String, DateTime<Utc>, Vec<u8>)> = Vec::new();
    for (key, at, alert) in page {
        let body = super::alert_body(tenant, alert);
        if body.len() <= max_body {
            batch.push((key, *at, body));
            continue;
        }
        let alert = serde_json::from_str(alert.get()).expect("a raw value is JSON");
        match (Message::Alert { tenant: tenant.to_string(), alert }).send(app.store.as_ref(), queue).await {
            Ok(()) => sent.push((key.clone(), *at)),
            Err(e) => return (sent, Some(e)),
        }
    }
    let bodies: Vec<Vec<u8>> = batch.iter_mut().map(|(_, _, b)| std::mem::take(b)).collect();
    let result = queue.send_many(crate::store::ALERTS_QUEUE, &bodies).await;
    let went = result.as_ref().map_or_else(|p| p.sent, |()| bodies.len());
    sent.extend(batch[..went].iter().map(|(key, at, _)| ((*key).clone(), *at)));
    (sent, result.err().map(|p| p.error))
}

fn parse_window(tenant: &str, bytes: Option<&[u8]>) -> SeenWindow {
    bytes.map_or_else(SeenWindow::default, |b| {
        serde_json::from_slice(b).unwrap_or_else(|e| {
            // Forgetting what was queued only repeats work; it never skips an alert.
            tracing::warn!(tenant, "seen window unreadable ({e}); alerts in the overlap may be queued again");
            SeenWindow::default()
        })
    })
}

/// Compare-and-swap the watermark to `new_wm`. When another poll moved it meanwhile, the later of
/// the two wins; the loser's alerts are queued already, so nothing is lost.
async fn advance(
    app: &App,
    tenant: &str,
    read: Option<Versioned>,
    new_wm: DateTime<Utc>,
    covers: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, PollError> {
    let written = store::update_from(app.store.as_ref(), &keys::watermark(tenant), read, |current| {
        let current = current.map(serde_json::from_slice::<Watermark>);
        let known = match &current {
            Some(Ok(w)) => w.covered_since,
            _ => None,
        };
        let covered_since = match (known, covers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let put = |watermark| {
            let w = Watermark { watermark, updated: now, covered_since };
            Change::Put(serde_json::to_vec(&w).expect("serializes"), watermark)
        };
        match current {
            Some(Ok(w)) if w.watermark > new_wm && w.covered_since == covered_since => Change::Keep(w.watermark),
            Some(Ok(w)) if w.watermark > new_wm => put(w.watermark),
            _ => put(new_wm),
        }
    })
    .await;
    match written {
        Ok(wm) => Ok(wm),
        Err(StoreError::Conflict { .. }) => Err(PollError::new(
            tenant,
            "the watermark kept changing under concurrent polls; the next poll will retry",
            Retry::Retryable,
        )),
        Err(e) => Err(PollError::store(tenant, "advance the watermark", e)),
    }
}

/// The outcome of one tenant in [`poll_all`] or [`reconcile_all`].
#[derive(Debug, Clone, Serialize)]
pub struct TenantOutcome {
    /// Tenant name.
    pub tenant: String,
    /// The report, when the poll succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PollReport>,
    /// The error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Not polled now: a poll of the tenant was already pending or running, and this one was
    /// coalesced into it (see [`super::coalesce`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<String>,
    /// The id of the dead man's switch alert raised for the tenant, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_alarm: Option<String>,
}

/// What one tenant's turn of [`poll_all`] or [`reconcile_all`] came to.
enum Turn {
    Ran(Result<PollReport, String>),
    Coalesced(String),
}

/// Runs `each` for every configured tenant, `poll.parallel_tenants` at a time; one tenant's failure
/// never stops the others.
async fn for_tenants<F, Fut>(app: &App, each: F) -> Vec<(String, Turn)>
where
    F: Fn(App, String) -> Fut,
    Fut: std::future::Future<Output = Turn> + Send + 'static,
{
    let names: Vec<String> = app.config.tenants.iter().map(|t| t.name.clone()).collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(app.config.poll.parallel_tenants.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    for name in &names {
        let (sem, run) = (sem.clone(), each(app.clone(), name.clone()));
        let handle = set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            run.await
        });
        ids.insert(handle.id(), name.clone());
    }
    let mut results = std::collections::HashMap::new();
    while let Some(joined) = set.join_next_with_id().await {
        match joined {
            Ok((id, turn)) => {
                results.insert(ids[&id].clone(), turn);
            }
            Err(e) => {
                let name = ids[&e.id()].clone();
                tracing::error!(tenant = name, "poll task failed: {e}");
                results.insert(name, Turn::Ran(Err(format!("poll task failed: {e}"))));
            }
        }
    }
    names
        .into_iter()
        .map(|n| {
            let turn = results.remove(&n).unwrap_or_else(|| Turn::Ran(Err("poll did not run".into())));
            (n, turn)
        })
        .collect()
}

/// Polls every configured tenant, `poll.parallel_tenants` at a time; one tenant's failure never stops
/// the others. A tenant whose poll is already pending or running is not polled again now: the timer is
/// coalesced into that poll (or schedules its one follow-up). Afterwards each tenant's dead man's
/// switch is checked.
pub async fn poll_all(app: &App, now: DateTime<Utc>) -> Vec<TenantOutcome> {
    let turns = for_tenants(app, |app, tenant| async move {
        match super::coalesce::timer(&app, &tenant, now).await {
            Ok(super::coalesce::TimerTurn::Run) => {}
            Ok(super::coalesce::TimerTurn::Coalesced(why)) => return Turn::Coalesced(why),
            Err(e) => return Turn::Ran(Err(format!("poll slot: {e}"))),
        }
        let result = poll_tenant(&app, &tenant, now).await;
        Turn::Ran(
            super::coalesce::finish(&app, &tenant, now, result.as_ref().ok())
                .await
                .and(result)
                .map_err(|e| e.to_string()),
        )
    })
    .await;
    let mut out = Vec::new();
    for (name, turn) in turns {
        let (report, error, coalesced) = match turn {
            Turn::Ran(Ok(r)) => (Some(r), None, None),
            Turn::Ran(Err(e)) => {
                tracing::error!(tenant = name, "{e}");
                (None, Some(e), None)
            }
            Turn::Coalesced(why) => (None, None, Some(why)),
        };
        let stale_alarm = match super::health::check_stale(app, &name, now).await {
            Ok(alarm) => alarm,
            Err(e) => {
                tracing::error!(tenant = name, "dead man's switch check failed: {e}");
                None
            }
        };
        out.push(TenantOutcome { tenant: name, report, error, coalesced, stale_alarm });
    }
    out
}

/// Reconciles every configured tenant, `poll.parallel_tenants` at a time ([`reconcile_tenant`]).
pub async fn reconcile_all(app: &App, now: DateTime<Utc>) -> Vec<TenantOutcome> {
    let turns = for_tenants(app, |app, tenant| async move {
        Turn::Ran(reconcile_tenant(&app, &tenant, now).await.map_err(|e| e.to_string()))
    })
    .await;
    turns
        .into_iter()
        .map(|(tenant, turn)| {
            let (report, error) = match turn {
                Turn::Ran(Ok(r)) => (Some(r), None),
                Turn::Ran(Err(e)) => (None, Some(e)),
                Turn::Coalesced(_) => (None, None),
            };
            TenantOutcome { tenant, report, error, coalesced: None, stale_alarm: None }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn page(times: &[&str]) -> Vec<Value> {
        times.iter().enumerate().map(|(i, ts)| json!({"id": format!("a{i}"), "lastUpdateDateTime": ts})).collect()
    }

    #[test]
    fn a_window_is_split_where_the_page_says_or_in_the_middle() {
        let now = t("2026-11-26T12:00:00Z");
        let w = Window { lo: t("2026-11-26T10:00:00Z"), hi: None };
        let bounds = |parts: Vec<Window>| parts.iter().map(|p| p.hi).collect::<Vec<_>>();
        let asc = page(&["2026-11-26T10:00:01.5Z", "2026-11-26T10:30:00.2Z", "2026-11-26T11:00:07.9Z"]);
        assert_eq!(bounds(w.split(&asc, now).unwrap()), [Some(t("2026-11-26T11:00:07Z")), None]);
        let desc = page(&["2026-11-26T11:50:00Z", "2026-11-26T11:40:00.2Z", "2026-11-26T11:20:07.9Z"]);
        assert_eq!(
            bounds(w.split(&desc, now).unwrap()),
            [Some(t("2026-11-26T10:40:04Z")), Some(t("2026-11-26T11:20:08Z")), None],
            "the top page fits, the rest is halved"
        );
        let mixed = vec![asc[1].clone(), asc[0].clone(), asc[2].clone()];
        let parts = w.split(&mixed, now).unwrap();
        assert_eq!(bounds(parts.clone()), [Some(t("2026-11-26T11:00:00Z")), None], "the middle of lo and now");
        assert_eq!(
            parts[0].filter(),
            "lastUpdateDateTime ge 2026-11-26T10:00:00Z and lastUpdateDateTime lt 2026-11-26T11:00:00Z"
        );
        // A page all in one second, in any order: that second becomes a window of its own.
        let dense = page(&["2026-11-26T11:00:07.1Z", "2026-11-26T11:00:07.9Z", "2026-11-26T11:00:07.5Z"]);
        let (second, next) = (Some(t("2026-11-26T11:00:07Z")), Some(t("2026-11-26T11:00:08Z")));
        assert_eq!(bounds(w.split(&dense, now).unwrap()), [second, next, None]);
        let from_it = Window { lo: t("2026-11-26T11:00:07Z"), hi: None };
        assert_eq!(bounds(from_it.split(&dense, now).unwrap()), [next, None], "the window starts at that second");
        let to_it = Window { lo: w.lo, hi: next };
        assert_eq!(bounds(to_it.split(&dense, now).unwrap()), [second, next], "the window ends with it");
        let narrow = Window { lo: t("2026-11-26T10:00:00Z"), hi: Some(t("2026-11-26T10:00:01Z")) };
        assert_eq!(narrow.split(&page(&["2026-11-26T10:00:00.5Z"; 3]), now), None, "one second cannot be split");
    }

    #[test]
    fn old_seen_windows_still_read() {
        let w: SeenWindow =
            serde_json::from_str(r#"{"versions":{"a\u001f2026-11-26T10:00:00Z":"2026-11-26T10:00:00Z"}}"#).unwrap();
        assert_eq!(w.versions.len(), 1);
        assert!(w.queueing.is_empty());
    }
}
