//! Operational counters (alerts pulled, closed, notified, failed) and the "poll succeeded" heartbeat.
//!
//! Each count is written as a structured log line, `customMetrics`-style: target `secmon::metrics`,
//! fields `metric`, `value`, `tenant`. In Azure those lines reach Application Insights through
//! stdout like every other line, where a query sums them:
//!
//! ```text
//! traces | extend j = parse_json(message) | where j.target == "secmon::metrics"
//!        | summarize sum(toint(j.value)) by tostring(j.metric), bin(timestamp, 1h)
//! ```
//!
//! Why not an OpenTelemetry exporter: Application Insights here accepts only Entra-authenticated
//! ingestion (local auth disabled), which the Rust exporters do not do offline-testably, and the
//! exporter crates are heavy for a binary that lives a few seconds per invocation. Log lines cost
//! nothing, survive a process that exits right after, and are already collected.
//!
//! The alert rule that fires when secmon goes quiet looks for the exact phrase [`POLL_SUCCEEDED`]:
//! the poll calls [`poll_succeeded`] once per tenant and successful poll.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The phrase the "no poll succeeded" alert rule searches for in traces; never change it alone.
pub const POLL_SUCCEEDED: &str = "poll succeeded";

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    /// Alert versions read from Graph.
    AlertsPulled,
    /// Alerts closed by a rule.
    AlertsClosed,
    /// Notifications delivered (one per receiver).
    AlertsNotified,
    /// Alerts whose processing failed (will be retried or poisoned).
    AlertsFailed,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 4] =
        [Counter::AlertsPulled, Counter::AlertsClosed, Counter::AlertsNotified, Counter::AlertsFailed];

    /// The metric name in logs and queries.
    pub fn name(self) -> &'static str {
        match self {
            Counter::AlertsPulled => "alerts_pulled",
            Counter::AlertsClosed => "alerts_closed",
            Counter::AlertsNotified => "alerts_notified",
            Counter::AlertsFailed => "alerts_failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Logs a receiver's circuit-breaker state as it changes (`open`, `half_open`, `closed`), as a metric
/// line like the counters': target `secmon::metrics`, `metric = "receiver_breaker"`, `value` 1 while
/// open or probing and 0 once closed, with the receiver's name and the state.
pub fn receiver_breaker(receiver: &str, state: &str) {
    let value = u8::from(state != "closed");
    tracing::info!(target: "secmon::metrics", metric = "receiver_breaker", value, receiver, state, "metric receiver_breaker {receiver} {state}");
}

/// Process-wide totals, also written as log lines as they change.
#[derive(Debug, Default)]
pub struct Metrics {
    totals: [AtomicU64; 4],
}

impl Metrics {
    /// Adds `n` to `counter` for `tenant` and logs it.
    pub fn add(&self, counter: Counter, tenant: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.totals[counter.index()].fetch_add(n, Ordering::Relaxed);
        tracing::info!(target: "secmon::metrics", metric = counter.name(), value = n, tenant, "metric {} +{n}", counter.name());
    }

    /// The totals since the process started, by metric name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        Counter::ALL.iter().map(|c| (c.name(), self.totals[c.index()].load(Ordering::Relaxed))).collect()
    }
}

/// The process's counters.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

/// Adds `n` to `counter` for `tenant` on the process's counters.
pub fn count(counter: Counter, tenant: &str, n: u64) {
    global().add(counter, tenant, n);
}

/// Logs the heartbeat of one successful poll of `tenant` that queued `queued` new alert versions.
/// The Azure Monitor alert rule "no poll succeeded for N minutes" counts these lines.
pub fn poll_succeeded(tenant: &str, queued: usize) {
    tracing::info!(target: "secmon::metrics", tenant, queued, "{POLL_SUCCEEDED}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::Buffer;
    use crate::logging::{Format, Redacting, subscriber};

    fn lines(buf: &Buffer) -> Vec<serde_json::Value> {
        buf.lines()
    }

    #[test]
    fn counters_add_up_and_log_one_line_each() {
        let buf = Buffer::default();
        let _g = tracing::subscriber::set_default(subscriber(Format::Json, Redacting(buf.clone())));
        let m = Metrics::default();
        m.add(Counter::AlertsPulled, "contoso", 3);
        m.add(Counter::AlertsPulled, "fabrikam", 2);
        m.add(Counter::AlertsClosed, "contoso", 1);
        m.add(Counter::AlertsFailed, "contoso", 0);
        let s = m.snapshot();
        assert_eq!(s["alerts_pulled"], 5);
        assert_eq!(s["alerts_closed"], 1);
        assert_eq!(s["alerts_notified"], 0);
        assert_eq!(s["alerts_failed"], 0);
        let logged = lines(&buf);
        assert_eq!(logged.len(), 3, "a zero adds no line: {logged:?}");
        assert_eq!(logged[0]["target"], "secmon::metrics");
        assert_eq!(logged[0]["metric"], "alerts_pulled");
        assert_eq!(logged[0]["value"], 3);
        assert_eq!(logged[1]["tenant"], "fabrikam");
    }

    #[test]
    fn a_successful_poll_logs_the_exact_phrase_the_alert_rule_looks_for() {
        let buf = Buffer::default();
        let _g = tracing::subscriber::set_default(subscriber(Format::Json, Redacting(buf.clone())));
        poll_succeeded("contoso", 7);
        let logged = lines(&buf);
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0]["message"], "poll succeeded");
        assert_eq!(logged[0]["tenant"], "contoso");
        assert_eq!(logged[0]["queued"], 7);
        assert_eq!(logged[0]["level"], "INFO");
    }
}
