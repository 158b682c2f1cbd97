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
//!
//! The same counts, with labels, are kept in memory for the standalone server's Prometheus endpoint
//! (`/metrics`, opt-in: `webhook.server.metrics.enabled`), together with the engine's own: per
//! receiver sent and failed (by [`FailReason`]) and its breaker state ([`receiver_sent`],
//! [`receiver_failed`], [`set_breaker`]), and the queues' depth and age ([`set_queue`]).
//! [`Metrics::render`] writes them in the Prometheus text format; `docs/operations.md` lists them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

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

    /// The Prometheus series name (labelled by `tenant`).
    fn series(self) -> &'static str {
        match self {
            Counter::AlertsPulled => "secmon_alerts_pulled_total",
            Counter::AlertsClosed => "secmon_alerts_closed_total",
            Counter::AlertsNotified => "secmon_alerts_notified_total",
            Counter::AlertsFailed => "secmon_alerts_failed_total",
        }
    }

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
    let gauge = match state {
        "closed" => Breaker::Closed,
        "half_open" => Breaker::HalfOpen,
        _ => Breaker::Open,
    };
    set_breaker(receiver, gauge);
    tracing::info!(target: "secmon::metrics", metric = "receiver_breaker", value, receiver, state, "metric receiver_breaker {receiver} {state}");
}

/// Why a send to a receiver failed: the `reason` label of `secmon_receiver_failed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No answer in time.
    Timeout,
    /// No connection (refused, reset, DNS, TLS).
    Connect,
    /// The receiver answered 4xx.
    Http4xx,
    /// The receiver answered 5xx.
    Http5xx,
    /// The message could not be rendered (a template error): nothing was sent.
    Render,
    /// Anything else (the store, a spent budget, an answer outside 4xx/5xx).
    Other,
}

impl FailReason {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::Connect => "connect",
            FailReason::Http4xx => "http_4xx",
            FailReason::Http5xx => "http_5xx",
            FailReason::Render => "render",
            FailReason::Other => "other",
        }
    }

    /// The reason a receiver's error message gives: the words every receiver writes (`HTTP 503`,
    /// `body template: …`, `request failed: … timed out`, `… connection refused`).
    pub fn of(message: &str) -> FailReason {
        let m = message.to_ascii_lowercase();
        let status = m.find("http ").and_then(|i| m[i + 5..].chars().next());
        if m.contains("template") || m.contains("render") {
            FailReason::Render
        } else if m.contains("timed out") || m.contains("timeout") {
            FailReason::Timeout
        } else if status == Some('4') {
            FailReason::Http4xx
        } else if status == Some('5') {
            FailReason::Http5xx
        } else if m.contains("connect") || m.contains("request failed") || m.contains("error sending request") {
            FailReason::Connect
        } else {
            FailReason::Other
        }
    }
}

/// A receiver's circuit breaker, as the gauge `secmon_receiver_breaker_state` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Sending (0).
    Closed,
    /// Paused, one probe allowed (1).
    HalfOpen,
    /// Paused (2).
    Open,
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Every metric the endpoint shows: name, kind, help (in this order on the page).
const FAMILIES: &[(&str, Kind, &str)] = &[
    ("secmon_alerts_pulled_total", Kind::Counter, "Alert versions read from Graph and queued, per tenant."),
    ("secmon_alerts_closed_total", Kind::Counter, "Alerts closed by a rule, per tenant."),
    ("secmon_alerts_notified_total", Kind::Counter, "Alert versions sent to at least one receiver, per tenant."),
    (
        "secmon_alerts_failed_total",
        Kind::Counter,
        "Alert messages whose processing failed (retried or poisoned), per tenant.",
    ),
    ("secmon_receiver_sent_total", Kind::Counter, "Messages a receiver accepted (notifications and digests)."),
    ("secmon_receiver_failed_total", Kind::Counter, "Sends to a receiver that failed, by reason."),
    ("secmon_receiver_breaker_state", Kind::Gauge, "A receiver's circuit breaker: 0 closed, 1 half-open, 2 open."),
    ("secmon_queue_depth", Kind::Gauge, "Messages on a queue, visible or not, when last looked at."),
    ("secmon_queue_oldest_age_seconds", Kind::Gauge, "Age of the oldest message on a queue, when last looked at."),
    (
        "secmon_receiver_queued",
        Kind::Gauge,
        "Delivery jobs of a receiver on the deliveries queue (waiting or in work), when last looked at.",
    ),
    ("secmon_tenant_queue_depth", Kind::Gauge, "A tenant's messages on a queue, when last looked at."),
    (
        "secmon_tenant_queue_oldest_age_seconds",
        Kind::Gauge,
        "Age of a tenant's oldest message on a queue, when last looked at.",
    ),
];

/// One labelled series: its family and its label pairs, in order.
type Series = (&'static str, Vec<(&'static str, String)>);

/// Process-wide totals, also written as log lines as they change, and the labelled series of the
/// Prometheus endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    totals: [AtomicU64; 4],
    series: Mutex<BTreeMap<Series, f64>>,
}

impl Metrics {
    fn series(&self) -> std::sync::MutexGuard<'_, BTreeMap<Series, f64>> {
        // A panic while holding the lock leaves at worst one count missing.
        self.series.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn inc(&self, family: &'static str, labels: Vec<(&'static str, String)>, n: f64) {
        *self.series().entry((family, labels)).or_default() += n;
    }

    fn set(&self, family: &'static str, labels: Vec<(&'static str, String)>, v: f64) {
        self.series().insert((family, labels), v);
    }

    /// Counts one message `receiver` accepted.
    pub fn receiver_sent(&self, receiver: &str) {
        self.inc("secmon_receiver_sent_total", vec![("receiver", receiver.to_string())], 1.0);
    }

    /// Counts one failed send to `receiver`.
    pub fn receiver_failed(&self, receiver: &str, reason: FailReason) {
        let labels = vec![("receiver", receiver.to_string()), ("reason", reason.label().to_string())];
        self.inc("secmon_receiver_failed_total", labels, 1.0);
    }

    /// Sets the breaker state of `receiver`.
    pub fn set_breaker(&self, receiver: &str, state: Breaker) {
        let v = match state {
            Breaker::Closed => 0.0,
            Breaker::HalfOpen => 1.0,
            Breaker::Open => 2.0,
        };
        self.set("secmon_receiver_breaker_state", vec![("receiver", receiver.to_string())], v);
    }

    /// Sets what was last seen of `queue`: its depth and, when the backend says, its oldest message's age.
    pub fn set_queue(&self, queue: &str, depth: usize, oldest_age_secs: Option<f64>) {
        let labels = vec![("queue", queue.to_string())];
        self.set("secmon_queue_depth", labels.clone(), depth as f64);
        if let Some(age) = oldest_age_secs {
            self.set("secmon_queue_oldest_age_seconds", labels, age);
        }
    }

    /// Sets what was last seen of `queue` per tenant (messages, oldest age) and, for the deliveries
    /// queue, per receiver (`receivers`, every configured one, zero included): the series of an earlier
    /// look that this one no longer has are dropped, so a tenant whose messages are gone disappears.
    pub fn set_queue_shares(
        &self,
        queue: &str,
        tenants: &BTreeMap<String, (usize, Option<i64>)>,
        receivers: Option<&BTreeMap<String, usize>>,
    ) {
        let mut series = self.series();
        let of_queue = |labels: &[(&'static str, String)]| labels.iter().any(|(k, v)| *k == "queue" && v == queue);
        series.retain(|(family, labels), _| {
            let per_tenant =
                *family == "secmon_tenant_queue_depth" || *family == "secmon_tenant_queue_oldest_age_seconds";
            !(per_tenant && of_queue(labels) || receivers.is_some() && *family == "secmon_receiver_queued")
        });
        for (tenant, (depth, age)) in tenants {
            let labels = vec![("queue", queue.to_string()), ("tenant", tenant.clone())];
            series.insert(("secmon_tenant_queue_depth", labels.clone()), *depth as f64);
            if let Some(age) = age {
                series.insert(("secmon_tenant_queue_oldest_age_seconds", labels), *age as f64);
            }
        }
        for (receiver, n) in receivers.into_iter().flatten() {
            series.insert(("secmon_receiver_queued", vec![("receiver", receiver.clone())]), *n as f64);
        }
    }

    /// Every series in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let series = self.series();
        let mut out = String::new();
        for (family, kind, help) in FAMILIES {
            let kind = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
            for ((_, labels), value) in series.range((*family, Vec::new())..).take_while(|((f, _), _)| f == family) {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                let labels = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
                let _ = writeln!(out, "{family}{labels} {value}");
            }
        }
        out
    }

    /// Adds `n` to `counter` for `tenant` and logs it.
    pub fn add(&self, counter: Counter, tenant: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.totals[counter.index()].fetch_add(n, Ordering::Relaxed);
        self.inc(counter.series(), vec![("tenant", tenant.to_string())], n as f64);
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

/// A label value as the text format writes it: backslash, double quote and line feed escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Counts one message `receiver` accepted, on the process's metrics.
pub fn receiver_sent(receiver: &str) {
    global().receiver_sent(receiver);
}

/// Counts one failed send to `receiver`, its reason read from the receiver's error message.
pub fn receiver_failed(receiver: &str, message: &str) {
    global().receiver_failed(receiver, FailReason::of(message));
}

/// Sets the breaker state of `receiver`, on the process's metrics.
pub fn set_breaker(receiver: &str, state: Breaker) {
    global().set_breaker(receiver, state);
}

/// Sets what was last seen of `queue`, on the process's metrics.
pub fn set_queue(queue: &str, depth: usize, oldest_age_secs: Option<f64>) {
    global().set_queue(queue, depth, oldest_age_secs);
}

/// Sets what was last seen of `queue` per tenant and per receiver, on the process's metrics
/// ([`Metrics::set_queue_shares`]).
pub fn set_queue_shares(
    queue: &str,
    tenants: &BTreeMap<String, (usize, Option<i64>)>,
    receivers: Option<&BTreeMap<String, usize>>,
) {
    global().set_queue_shares(queue, tenants, receivers);
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
    fn failures_are_told_apart_by_what_the_receivers_say() {
        for (message, reason) in [
            ("HTTP 503: ServiceUnavailable: try later", FailReason::Http5xx),
            ("HTTP 429 (throttled)", FailReason::Http4xx),
            ("HTTP 404", FailReason::Http4xx),
            ("request failed: error sending request", FailReason::Connect),
            ("request failed: operation timed out", FailReason::Timeout),
            ("timed out after 10 s", FailReason::Timeout),
            ("connection refused", FailReason::Connect),
            ("body template: undefined value", FailReason::Render),
            ("store: backend down", FailReason::Other),
        ] {
            assert_eq!(FailReason::of(message), reason, "{message}");
        }
    }

    #[test]
    fn the_page_has_every_family_once_and_escapes_label_values() {
        let m = Metrics::default();
        m.add(Counter::AlertsPulled, "con\"to\\so\n", 2);
        m.receiver_failed("soc", FailReason::Timeout);
        m.receiver_failed("soc", FailReason::Timeout);
        m.set_breaker("soc", Breaker::Open);
        m.set_queue("alerts", 3, Some(1.5));
        let page = m.render();
        for (family, _, _) in FAMILIES {
            assert_eq!(page.matches(&format!("# TYPE {family} ")).count(), 1, "{family}: {page}");
        }
        assert!(page.contains("secmon_alerts_pulled_total{tenant=\"con\\\"to\\\\so\\n\"} 2\n"), "{page}");
        assert!(page.contains("secmon_receiver_failed_total{receiver=\"soc\",reason=\"timeout\"} 2\n"), "{page}");
        assert!(page.contains("secmon_receiver_breaker_state{receiver=\"soc\"} 2\n"), "{page}");
        assert!(page.contains("secmon_queue_oldest_age_seconds{queue=\"alerts\"} 1.5\n"), "{page}");
    }

    #[test]
    fn a_queues_shares_replace_the_last_look() {
        let m = Metrics::default();
        let tenants = BTreeMap::from([("contoso".to_string(), (3, Some(12))), ("fabrikam".to_string(), (1, None))]);
        let receivers = BTreeMap::from([("soc".to_string(), 2), ("tickets".to_string(), 0)]);
        m.set_queue_shares("deliveries", &tenants, Some(&receivers));
        m.set_queue_shares("alerts", &BTreeMap::from([("contoso".to_string(), (5, Some(1)))]), None);
        let page = m.render();
        assert!(page.contains("secmon_tenant_queue_depth{queue=\"deliveries\",tenant=\"contoso\"} 3\n"), "{page}");
        assert!(page.contains("secmon_tenant_queue_oldest_age_seconds{queue=\"deliveries\",tenant=\"contoso\"} 12\n"));
        assert!(page.contains("secmon_tenant_queue_depth{queue=\"alerts\",tenant=\"contoso\"} 5\n"), "{page}");
        assert!(page.contains("secmon_receiver_queued{receiver=\"tickets\"} 0\n"), "{page}");
        // The next look finds fabrikam's messages gone and soc's jobs done.
        let tenants = BTreeMap::from([("contoso".to_string(), (1, Some(2)))]);
        m.set_queue_shares("deliveries", &tenants, Some(&BTreeMap::from([("soc".to_string(), 0)])));
        let page = m.render();
        assert!(!page.contains("tenant=\"fabrikam\""), "{page}");
        assert!(page.contains("secmon_receiver_queued{receiver=\"soc\"} 0\n"), "{page}");
        assert!(!page.contains("receiver=\"tickets\""), "{page}");
        assert!(
            page.contains("secmon_tenant_queue_depth{queue=\"alerts\",tenant=\"contoso\"} 5\n"),
            "another queue's stay"
        );
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
