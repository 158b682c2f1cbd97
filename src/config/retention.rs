//! The `retention` section: how long secmon keeps what it writes, and when the `sweep` timer removes
//! what expired (`src/retention.rs`).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Issue;

/// `retention`: lifetimes of the store's key families and the sweep that enforces them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// NCRONTAB schedule with seconds, UTC, of the `sweep` timer (standalone; in Azure the app setting
    /// `SECMON_SWEEP_SCHEDULE` feeds the timer). Hourly by default.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// The most keys one run of the sweep looks at (it goes on where it stopped at the next run).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// How long an effect's idempotency claim and the per-version records beside it are kept after their
    /// last write (close, comment, notify, update, audited, digest claims; close outcomes; what a receiver
    /// was last told; incident groups). A message redelivered after this acts again.
    #[serde(default = "default_claims", with = "super::duration")]
    #[schemars(with = "String")]
    pub claims: Duration,
    /// How long short-lived counters and one-time tokens are kept after their last write: the circuit
    /// breaker's hourly counts and notices, the mail rate limit's minutes, used doorbell signatures.
    #[serde(default = "default_counters", with = "super::duration")]
    #[schemars(with = "String")]
    pub counters: Duration,
    /// How long an alert too large for a queue message is kept in the store after it was written. A
    /// message still referring to it later (one left on the poison queue) can no longer be processed.
    #[serde(default = "default_claims", with = "super::duration")]
    #[schemars(with = "String")]
    pub large_alerts: Duration,
    /// Whole UTC days the audit trail is kept after the day ended (one more day of margin is added
    /// before a day is removed). `SECMON_AUDIT_RETENTION_DAYS` wins; in Azure it is the audit
    /// container's immutability period, so the two always agree.
    #[serde(default = "default_audit_days")]
    pub audit_days: u32,
}

fn default_schedule() -> String {
    "0 37 * * * *".into()
}
fn default_batch() -> usize {
    5000
}
fn default_claims() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_counters() -> Duration {
    Duration::from_secs(2 * 24 * 3600)
}
fn default_audit_days() -> u32 {
    400
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            schedule: default_schedule(),
            batch: default_batch(),
            claims: default_claims(),
            counters: default_counters(),
            large_alerts: default_claims(),
            audit_days: default_audit_days(),
        }
    }
}

/// The shortest lifetimes accepted: a claim must outlive every retry of its message (SQS keeps a
/// message 14 days at most, the receipt register needs as long), a breaker counts per hour.
const MIN_CLAIMS: Duration = Duration::from_secs(14 * 24 * 3600);
const MIN_COUNTERS: Duration = Duration::from_secs(2 * 3600);
const MIN_LARGE_ALERTS: Duration = Duration::from_secs(24 * 3600);

impl RetentionConfig {
    /// Checks the schedule, the batch and the lifetimes' floors.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        if let Err(e) = super::ncrontab::parse(&self.schedule) {
            out.push(Issue::error(
                format!("{path}.schedule"),
                format!("{:?} is not an NCRONTAB schedule: {e}", self.schedule),
            ));
        }
        if self.batch == 0 {
            out.push(Issue::error(format!("{path}.batch"), "must be at least 1"));
        }
        for (field, value, floor, why) in [
            ("claims", self.claims, MIN_CLAIMS, "a redelivered message (SQS keeps one up to 14 days) would act twice"),
            ("counters", self.counters, MIN_COUNTERS, "the breaker counts per hour"),
            ("large_alerts", self.large_alerts, MIN_LARGE_ALERTS, "queued messages still refer to them"),
        ] {
            if value < floor {
                out.push(Issue::error(
                    format!("{path}.{field}"),
                    format!("at least {}: {why}", humantime::format_duration(floor)),
                ));
            }
        }
        if self.audit_days == 0 {
            out.push(Issue::error(format!("{path}.audit_days"), "at least 1 day"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const BASE: &str = "tenants:\n  - { id: 11111111-2222-3333-4444-555555555555, name: contoso }\n";

    fn load(extra: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<super::RetentionConfig, String> {
        let now = "2026-11-26T00:00:00Z".parse().unwrap();
        crate::config::load_str(&format!("{BASE}{extra}"), Path::new("t.yaml"), env, now)
            .map(|l| l.config.retention)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_the_file_and_the_environment() {
        let r = load("", &|_| None).unwrap();
        assert_eq!((r.audit_days, r.batch, r.schedule.as_str()), (400, 5000, "0 37 * * * *"));
        assert_eq!(r.claims, std::time::Duration::from_secs(30 * 24 * 3600));
        let r = load("retention: { audit_days: 90, counters: 6h }\n", &|_| None).unwrap();
        assert_eq!((r.audit_days, r.counters), (90, std::time::Duration::from_secs(6 * 3600)));
        // The Azure app setting (the audit container's immutability period) wins over the file.
        let env = |k: &str| (k == "SECMON_AUDIT_RETENTION_DAYS").then(|| "730".to_string());
        assert_eq!(load("retention: { audit_days: 90 }\n", &env).unwrap().audit_days, 730);
        assert_eq!(load("", &env).unwrap().audit_days, 730);
        let bad = |k: &str| (k == "SECMON_AUDIT_RETENTION_DAYS").then(|| "a year".to_string());
        let err = load("", &bad).unwrap_err();
        assert!(err.contains("SECMON_AUDIT_RETENTION_DAYS") && err.contains("a year"), "{err}");
    }

    #[test]
    fn lifetimes_below_their_floor_are_errors_naming_the_field() {
        let err = load("retention: { claims: 1d, counters: 10m, audit_days: 0, batch: 0 }\n", &|_| None).unwrap_err();
        for field in ["retention.claims", "retention.counters", "retention.audit_days", "retention.batch"] {
            assert!(err.contains(field), "{field}: {err}");
        }
        let err = load("retention: { schedule: every hour }\n", &|_| None).unwrap_err();
        assert!(err.contains("retention.schedule"), "{err}");
    }
}
