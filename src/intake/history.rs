//! Reading a tenant's alert history, read-only: every alert **created** in `[since, until)`, one UTC day
//! at a time, for `secmon rules replay` and `secmon rules suggest`. Nothing is queued and no state is
//! written.
//!
//! **Why `createdDateTime` and day windows.** An alert's `createdDateTime` never changes, so a window
//! closed above (`lt until`) is a fixed set: analysts resolving alerts while the walk pages cannot move
//! an alert into or out of it, and alerts created during the walk fall after `until`. Paging a window by
//! `@odata.nextLink` can still repeat an item under offset paging, so ids are deduplicated over the
//! whole walk. A day per window keeps every listing small and the progress bar honest.
//!
//! Every request goes through the tenant's [`Graph`] client, so it spends the client's per-tenant
//! request budget and honours `Retry-After` like every other call.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::graph::{AlertQuery, Graph, GraphError};

/// How far a walk has come, for a progress bar.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Day windows listed completely.
    pub days_done: usize,
    /// Day windows in the walk.
    pub days: usize,
    /// Pages read so far.
    pub pages: usize,
    /// Distinct alerts read so far.
    pub alerts: usize,
}

/// What a walk read, and what it cost.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Walked {
    /// Day windows listed.
    pub days: usize,
    /// Pages read.
    pub pages: usize,
    /// Distinct alerts handed on.
    pub alerts: usize,
    /// Alerts listed again (offset paging) and skipped.
    pub repeated: usize,
    /// Graph requests sent for this walk.
    pub requests: u64,
    /// Attempts retried (throttling, 5xx, dropped connections).
    pub retries: u64,
    /// Waits Graph asked for with `Retry-After`.
    pub throttled_waits: u64,
    /// Their total, in milliseconds.
    pub throttled_wait_ms: u64,
    /// Waits secmon imposed on itself to stay within the request budget.
    pub budget_waits: u64,
    /// Their total, in milliseconds.
    pub budget_wait_ms: u64,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The `$filter` of one window: `createdDateTime ge {lo} and createdDateTime lt {hi}`.
pub fn filter(lo: DateTime<Utc>, hi: DateTime<Utc>) -> String {
    format!("createdDateTime ge {} and createdDateTime lt {}", stamp(lo), stamp(hi))
}

/// The windows of a walk: whole UTC days from `since`'s day, the first starting at `since` and the last
/// ending at `until`.
pub fn windows(since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut lo = since;
    while lo < until {
        let midnight = (lo.date_naive() + Duration::days(1)).and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
        let hi = midnight.min(until);
        out.push((lo, hi));
        lo = hi;
    }
    out
}

/// Lists every alert of `tenant` created in `[since, until)`, oldest day first, and hands each distinct
/// one to `each`, as Graph returns it now. `progress` is called after every page.
pub async fn walk(
    graph: &dyn Graph,
    tenant: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    page_size: u32,
    progress: &(dyn Fn(&Progress) + Send + Sync),
    each: &mut (dyn FnMut(Value) + Send),
) -> Result<Walked, GraphError> {
    let before = graph.call_stats(tenant);
    let days = windows(since, until);
    let mut seen = HashSet::new();
    let mut walked = Walked { days: days.len(), ..Walked::default() };
    let mut state = Progress { days: days.len(), ..Progress::default() };
    for (lo, hi) in days {
        let query = AlertQuery { filter: filter(lo, hi), orderby: None, top: Some(page_size) };
        let mut page = graph.list_alerts(tenant, &query).await?;
        loop {
            walked.pages += 1;
            for alert in page.values() {
                let id = alert.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
                if !id.is_empty() && !seen.insert(id) {
                    walked.repeated += 1;
                    continue;
                }
                walked.alerts += 1;
                each(alert);
            }
            state.pages = walked.pages;
            state.alerts = walked.alerts;
            progress(&state);
            match page.next_link.take() {
                Some(next) => page = graph.next_alerts(tenant, &next).await?,
                None => break,
            }
        }
        state.days_done += 1;
        progress(&state);
    }
    let after = graph.call_stats(tenant);
    walked.requests = after.requests - before.requests;
    walked.retries = after.retries - before.retries;
    walked.throttled_waits = after.throttled_waits - before.throttled_waits;
    walked.throttled_wait_ms = after.throttled_wait.saturating_sub(before.throttled_wait).as_millis() as u64;
    walked.budget_waits = after.budget_waits - before.budget_waits;
    walked.budget_wait_ms = after.budget_wait.saturating_sub(before.budget_wait).as_millis() as u64;
    Ok(walked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn windows_are_utc_days_from_since_to_until() {
        let w = windows(t("2026-11-01T10:30:00Z"), t("2026-11-03T08:00:00Z"));
        assert_eq!(
            w,
            [
                (t("2026-11-01T10:30:00Z"), t("2026-11-02T00:00:00Z")),
                (t("2026-11-02T00:00:00Z"), t("2026-11-03T00:00:00Z")),
                (t("2026-11-03T00:00:00Z"), t("2026-11-03T08:00:00Z")),
            ]
        );
        assert!(windows(t("2026-11-03T08:00:00Z"), t("2026-11-03T08:00:00Z")).is_empty());
        assert_eq!(
            filter(w[0].0, w[0].1),
            "createdDateTime ge 2026-11-01T10:30:00Z and createdDateTime lt 2026-11-02T00:00:00Z"
        );
    }
}
