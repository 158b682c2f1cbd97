//! The timer path: list alerts updated since the watermark, queue each new version, then advance the
//! watermark with compare-and-swap.
//!
//! Graph has no change notifications for `alerts_v2`, so this poll is secmon's backbone. Per tenant:
//! 1. read the watermark and the window of versions already queued;
//! 2. `GET /security/alerts_v2?$filter=lastUpdateDateTime ge {watermark − overlap}` and follow
//!    `@odata.nextLink`, one page in memory at a time;
//! 3. queue every alert version (`id` + `lastUpdateDateTime` as Graph wrote it) not queued before;
//! 4. only then save the window and advance the watermark (compare-and-swap).
//!
//! A crash anywhere before step 4 leaves the old watermark, so the next poll lists the same alerts
//! again: work is repeated, never skipped. The overlap re-reads alerts whose `lastUpdateDateTime`
//! lands late (Graph's clock and indexing are not ours); the window keeps those repeats off the queue.
//! The watermark is the newest `lastUpdateDateTime` seen, never later than our `now` (a future
//! timestamp must not make us skip) and never moving backwards.
//!
//! Store keys:
//! - `watermark/{tenant}`: `{"watermark": RFC 3339, "updated": RFC 3339}`;
//! - `seen/{tenant}/window`: `{"versions": {"{id}\u001f{lastUpdateDateTime}": instant}}`, the
//!   versions queued whose instant is at or after `watermark − overlap` (older ones can no longer be
//!   listed, so forgetting them costs nothing);
//! - `health/{tenant}`: see [`super::health`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::App;
use crate::graph::Retry;
use crate::intake::Message;
use crate::store::{self, Change, StoreError, Versioned, keys};

pub use crate::config::intake::PollConfig;

/// What one poll of one tenant did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PollReport {
    /// Tenant name.
    pub tenant: String,
    /// Pages read.
    pub pages: usize,
    /// Alert versions listed by Graph (repeats included).
    pub alerts_seen: usize,
    /// New alert versions queued.
    pub queued: usize,
    /// Versions skipped because they were queued before.
    pub already_queued: usize,
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
    /// The oldest `lastUpdateDateTime` seen so far (pages come most recent first).
    pub oldest: Option<DateTime<Utc>>,
}

/// The stored watermark of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Watermark {
    /// Every alert version updated before `watermark − overlap` has been queued.
    pub watermark: DateTime<Utc>,
    /// When it was written.
    pub updated: DateTime<Utc>,
}

/// The versions queued recently, keyed `{id}\u{1f}{lastUpdateDateTime as written}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SeenWindow {
    /// Version key → the instant used to forget it.
    pub versions: BTreeMap<String, DateTime<Utc>>,
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

/// The `$filter` for alerts updated at or after `since` (floored to the second: Graph's filter is
/// compared against times with more precision, and a lower bound may only err early).
pub fn filter_since(since: DateTime<Utc>) -> String {
    format!("lastUpdateDateTime ge {}", since.format("%Y-%m-%dT%H:%M:%SZ"))
}

fn overlap(app: &App) -> chrono::Duration {
    chrono::Duration::from_std(app.config.poll.overlap).unwrap_or(chrono::Duration::zero())
}

/// Polls one tenant and records the outcome in its health record.
pub async fn poll_tenant(app: &App, tenant: &str, now: DateTime<Utc>) -> Result<PollReport, PollError> {
    let result = walk(app, tenant, None, now, &|_| {}).await;
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
    let result = walk(app, tenant, Some(since), now, progress).await;
    super::health::record(app, tenant, now, &result).await;
    result
}

async fn walk(
    app: &App,
    tenant: &str,
    since: Option<DateTime<Utc>>,
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
            Some(wm.watermark)
        }
    };
    let seen_key = keys::seen(tenant);
    let old_seen: SeenWindow =
        match store.get(&seen_key).await.map_err(|e| PollError::store(tenant, "read the seen window", e))? {
            None => SeenWindow::default(),
            Some(v) => serde_json::from_slice(&v.value).unwrap_or_else(|e| {
                // Forgetting what was queued only repeats work; it never skips an alert.
                tracing::warn!(tenant, "seen window unreadable ({e}); alerts in the overlap may be queued again");
                SeenWindow::default()
            }),
        };

    let first_lookback =
        chrono::Duration::from_std(app.config.poll.first_lookback).unwrap_or(chrono::Duration::days(1));
    let lower = match (since, old) {
        (Some(s), _) => s,
        (None, Some(wm)) => wm - overlap,
        (None, None) => now - first_lookback,
    };
    let mut report = PollReport {
        tenant: tenant.to_string(),
        since: lower.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        watermark_before: old.map(|w| w.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        ..Default::default()
    };

    let mut fresh: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut newest: Option<DateTime<Utc>> = None;
    let mut prune_at = 1024;
    let mut prog = Progress::default();
    let graph_err = |e: crate::graph::GraphError| PollError::new(tenant, e.to_string(), e.retry);
    let mut page = app.graph.list_alerts(tenant, &filter_since(lower)).await.map_err(graph_err)?;
    loop {
        report.pages += 1;
        for alert in std::mem::take(&mut page.alerts) {
            report.alerts_seen += 1;
            let (key, instant) = version_key(&alert);
            if let Some(t) = instant {
                newest = newest.max(Some(t));
                prog.oldest = Some(prog.oldest.map_or(t, |o| o.min(t)));
            }
            if old_seen.versions.contains_key(&key) || fresh.contains_key(&key) {
                report.already_queued += 1;
                continue;
            }
            if instant.is_none() {
                tracing::error!(tenant, key, "alert without a readable id or lastUpdateDateTime; queued as is");
            }
            Message::Alert { tenant: tenant.to_string(), alert }
                .send(store, app.queue.as_ref())
                .await
                .map_err(|e| PollError::store(tenant, "queue an alert", e))?;
            report.queued += 1;
            fresh.insert(key, instant.unwrap_or(now));
        }
        // Keep memory flat on long walks: versions older than the newest seen minus the overlap
        // will be below the next poll's lower bound, so they need not be remembered.
        if fresh.len() > prune_at
            && let Some(n) = newest
        {
            fresh.retain(|_, t| *t >= n.min(now) - overlap);
            prune_at = (fresh.len() * 2).max(1024);
        }
        prog.pages = report.pages;
        prog.alerts_seen = report.alerts_seen;
        prog.queued = report.queued;
        progress(&prog);
        let Some(next) = page.next_link.take() else { break };
        page = app.graph.next_alerts(tenant, &next).await.map_err(graph_err)?;
    }

    // Everything listed is queued: now the watermark may move (forward only, never past `now`).
    let candidate = newest.map(|n| n.min(now));
    let new_wm = match (old, candidate) {
        (Some(o), Some(c)) => o.max(c),
        (Some(o), None) => o,
        (None, Some(c)) => c,
        (None, None) => lower,
    };
    let cutoff = new_wm - overlap;
    let mut window = old_seen;
    window.versions.extend(fresh);
    window.versions.retain(|_, t| *t >= cutoff);
    let bytes = serde_json::to_vec(&window).expect("windows serialize");
    store.put(&seen_key, &bytes).await.map_err(|e| PollError::store(tenant, "save the seen window", e))?;
    let written = advance(app, tenant, stored, new_wm, now).await?;
    report.watermark_after = Some(written.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));

    let stats = app.graph.call_stats(tenant);
    report.requests = stats.requests - stats_before.requests;
    report.retries = stats.retries - stats_before.retries;
    report.throttled_waits = stats.throttled_waits - stats_before.throttled_waits;
    report.throttled_wait_ms = (stats.throttled_wait.saturating_sub(stats_before.throttled_wait)).as_millis() as u64;
    report.budget_waits = stats.budget_waits - stats_before.budget_waits;
    Ok(report)
}

/// Compare-and-swap the watermark to `new_wm`. When another poll moved it meanwhile, the later of
/// the two wins; the loser's alerts are queued already, so nothing is lost.
async fn advance(
    app: &App,
    tenant: &str,
    read: Option<Versioned>,
    new_wm: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, PollError> {
    let value = serde_json::to_vec(&Watermark { watermark: new_wm, updated: now }).expect("serializes");
    let written = store::update_from(app.store.as_ref(), &keys::watermark(tenant), read, |current| {
        match current.map(serde_json::from_slice::<Watermark>) {
            Some(Ok(w)) if w.watermark > new_wm => Change::Keep(w.watermark),
            _ => Change::Put(value.clone(), new_wm),
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

/// The outcome of one tenant in [`poll_all`].
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
    /// The id of the dead man's switch alert raised for the tenant, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_alarm: Option<String>,
}

/// At most this many tenants are polled at once.
const PARALLEL_TENANTS: usize = 4;

/// Polls every configured tenant, a few at a time; one tenant's failure never stops the others.
/// Afterwards each tenant's dead man's switch is checked.
pub async fn poll_all(app: &App, now: DateTime<Utc>) -> Vec<TenantOutcome> {
    let names: Vec<String> = app.config.tenants.iter().map(|t| t.name.clone()).collect();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL_TENANTS));
    let mut set = tokio::task::JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    for name in &names {
        let (app, tenant, sem) = (app.clone(), name.clone(), sem.clone());
        let handle = set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore open");
            poll_tenant(&app, &tenant, now).await
        });
        ids.insert(handle.id(), name.clone());
    }
    let mut results: std::collections::HashMap<String, Result<PollReport, String>> = std::collections::HashMap::new();
    while let Some(joined) = set.join_next_with_id().await {
        match joined {
            Ok((id, r)) => {
                results.insert(ids[&id].clone(), r.map_err(|e| e.to_string()));
            }
            Err(e) => {
                let name = ids[&e.id()].clone();
                tracing::error!(tenant = name, "poll task failed: {e}");
                results.insert(name, Err(format!("poll task failed: {e}")));
            }
        }
    }
    let mut out = Vec::new();
    for name in names {
        let result = results.remove(&name).unwrap_or_else(|| Err("poll did not run".into()));
        if let Err(e) = &result {
            tracing::error!(tenant = name, "{e}");
        }
        let stale_alarm = match super::health::check_stale(app, &name, now).await {
            Ok(alarm) => alarm,
            Err(e) => {
                tracing::error!(tenant = name, "dead man's switch check failed: {e}");
                None
            }
        };
        let (report, error) = match result {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(e)),
        };
        out.push(TenantOutcome { tenant: name, report, error, stale_alarm });
    }
    out
}
