//! The one retry and throttle policy every HTTP edge goes through: Graph and token calls, and the
//! receivers that are not Graph (Teams Workflows, webhooks; [`crate::notify::http`]).
//!
//! - 429 and 503 honour `Retry-After` (seconds or an HTTP date); without it they back off like 5xx.
//! - Other 5xx, 408, timeouts and dropped connections back off exponentially with full jitter.
//! - Any other 4xx is permanent: retrying the same request cannot help.
//! - A per-tenant token bucket keeps each tenant under Graph's documented security budget
//!   (150 requests per minute per app per tenant), so secmon throttles itself before Graph has to.
//!
//! Waiting goes through a [`Sleeper`], so tests can record waits instead of spending them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use super::Retry;

/// Where waiting happens: the real clock, or a test's virtual one.
#[async_trait]
pub trait Sleeper: Send + Sync {
    /// Monotonic time since an arbitrary origin.
    fn elapsed(&self) -> Duration;
    /// Waits `d`.
    async fn sleep(&self, d: Duration);
}

/// Tokio's clock (pausable in tests with `tokio::time::pause`).
#[derive(Debug)]
pub struct TokioSleeper {
    origin: tokio::time::Instant,
}

impl Default for TokioSleeper {
    fn default() -> Self {
        Self { origin: tokio::time::Instant::now() }
    }
}

#[async_trait]
impl Sleeper for TokioSleeper {
    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

/// A virtual clock that only moves when slept on, and remembers every wait; for tests.
#[derive(Debug, Default)]
pub struct RecordingSleeper {
    state: Mutex<(Duration, Vec<Duration>)>,
}

impl RecordingSleeper {
    /// Every wait requested so far, in order.
    pub fn waits(&self) -> Vec<Duration> {
        self.state.lock().expect("sleeper lock").1.clone()
    }
}

#[async_trait]
impl Sleeper for RecordingSleeper {
    fn elapsed(&self) -> Duration {
        self.state.lock().expect("sleeper lock").0
    }
    async fn sleep(&self, d: Duration) {
        let mut s = self.state.lock().expect("sleeper lock");
        s.0 += d;
        s.1.push(d);
    }
}

/// How many times and how long to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// First back-off step; doubles on each retry.
    pub base_delay: Duration,
    /// Longest single back-off.
    pub max_delay: Duration,
    /// The longest `Retry-After` waited for within one call; a longer one fails the call as
    /// retryable, and the next poll tries again (a Functions invocation must not hang for hours).
    pub max_retry_after: Duration,
    /// Timeout of one HTTP attempt.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then try again; `throttled` when the server asked for the wait.
    RetryAfter {
        /// How long.
        wait: Duration,
        /// Graph said so (429/503 with `Retry-After`).
        throttled: bool,
    },
    /// Give up.
    GiveUp,
}

impl RetryPolicy {
    /// The policy of a receiver that is not Graph: the queue retries the whole delivery, so one delivery
    /// tries three times and waits at most a minute for a `Retry-After`.
    pub fn receivers() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
            ..Self::default()
        }
    }

    /// Whether an HTTP status is worth retrying.
    pub fn classify(status: u16) -> Retry {
        match status {
            408 | 429 => Retry::Retryable,
            500..=599 => Retry::Retryable,
            _ => Retry::Permanent,
        }
    }

    /// Exponential back-off with full jitter for retry number `retry` (1 for the first retry);
    /// `unit` in `[0, 1)` is the random draw.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let cap = exp.min(self.max_delay);
        // Never zero: an immediate retry of a throttled call still counts against the budget.
        cap.mul_f64(unit.clamp(0.0, 1.0)).max(self.base_delay / 4)
    }

    /// Decides what follows attempt number `attempt` (1-based) that failed with `retry`, given the
    /// server's `Retry-After`, if any.
    pub fn next(&self, attempt: u32, retry: Retry, retry_after: Option<Duration>, unit: f64) -> Next {
        if retry == Retry::Permanent || attempt >= self.max_attempts {
            return Next::GiveUp;
        }
        match retry_after {
            Some(wait) if wait > self.max_retry_after => Next::GiveUp,
            Some(wait) => Next::RetryAfter { wait, throttled: true },
            None => Next::RetryAfter { wait: self.backoff(attempt, unit), throttled: false },
        }
    }
}

/// Reads `Retry-After`: delay-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

/// The wait a response advises: `Retry-After` on a 429 or 503 (other statuses do not carry advice).
pub fn retry_after(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    if !matches!(status, 429 | 503) {
        return None;
    }
    parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?, now)
}

/// A token bucket per tenant: `per_minute` requests, refilled continuously, bursting to the same.
#[derive(Debug)]
pub struct Buckets {
    per_minute: u32,
    state: Mutex<HashMap<String, (f64, Duration)>>,
}

impl Buckets {
    /// Buckets of `per_minute` tokens each.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute: per_minute.max(1), state: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `tenant` at time `now`; returns how long to wait first (zero if none).
    /// The token is spent either way, so concurrent callers queue up fairly.
    pub fn take(&self, tenant: &str, now: Duration) -> Duration {
        let cap = self.per_minute as f64;
        let rate = cap / 60.0;
        let mut state = self.state.lock().expect("bucket lock");
        let (tokens, at) = state.entry(tenant.to_string()).or_insert((cap, now));
        let refill = now.saturating_sub(*at).as_secs_f64() * rate;
        *tokens = (*tokens + refill).min(cap) - 1.0;
        *at = now;
        if *tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-*tokens / rate) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(RetryPolicy::classify(s), Retry::Retryable, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 412] {
            assert_eq!(RetryPolicy::classify(s), Retry::Permanent, "{s}");
        }
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let p = RetryPolicy::default();
        let seven = Duration::from_secs(7);
        assert_eq!(p.next(1, Retry::Retryable, Some(seven), 0.5), Next::RetryAfter { wait: seven, throttled: true });
        assert_eq!(p.next(1, Retry::Retryable, Some(Duration::from_secs(3600)), 0.5), Next::GiveUp);
        assert_eq!(p.next(1, Retry::Permanent, Some(seven), 0.5), Next::GiveUp);
        assert_eq!(p.next(p.max_attempts, Retry::Retryable, None, 0.5), Next::GiveUp);
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(500));
        assert_eq!(p.backoff(3, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(20, 1.0), p.max_delay);
        assert!(p.backoff(3, 0.5) < p.backoff(3, 1.0));
        assert!(p.backoff(3, 0.0) > Duration::ZERO, "never an immediate retry");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now: chrono::DateTime<chrono::Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after(" 12 ", now), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Thu, 26 Nov 2026 10:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn only_throttling_statuses_carry_advice() {
        let now: chrono::DateTime<chrono::Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(429, &headers, now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(503, &headers, now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(500, &headers, now), None);
        assert_eq!(retry_after(429, &reqwest::header::HeaderMap::new(), now), None);
    }

    #[test]
    fn receivers_try_less_and_wait_less_than_graph_calls() {
        let p = RetryPolicy::receivers();
        assert_eq!(p.next(3, Retry::Retryable, None, 0.5), Next::GiveUp);
        assert_eq!(p.next(1, Retry::Retryable, Some(Duration::from_secs(61)), 0.5), Next::GiveUp);
        assert!(matches!(p.next(2, Retry::Retryable, None, 1.0), Next::RetryAfter { throttled: false, .. }));
    }

    #[test]
    fn buckets_limit_each_tenant_separately() {
        let b = Buckets::new(60);
        let t0 = Duration::ZERO;
        for _ in 0..60 {
            assert_eq!(b.take("a", t0), Duration::ZERO);
        }
        // The 61st request in the same instant waits one token's time (1 s at 60/min).
        assert_eq!(b.take("a", t0), Duration::from_secs(1));
        assert_eq!(b.take("b", t0), Duration::ZERO, "another tenant has its own budget");
        // Refilled after waiting: at t=62 s two tokens came back beyond the debt.
        assert_eq!(b.take("a", Duration::from_secs(62)), Duration::ZERO);
    }
}
