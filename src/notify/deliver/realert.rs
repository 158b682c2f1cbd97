//! Realert: whether a receiver is told about a new version of an alert it was already told about.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertStatus};
use crate::store::{Put, Versioned};

/// What secmon last told a receiver about an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Last {
    /// When.
    pub at: DateTime<Utc>,
    /// The severity rank then.
    pub severity: u8,
    /// The status then.
    pub status: String,
}

/// Why an alert is told (again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Never told before.
    New,
    /// Its severity rose since.
    SeverityRose,
    /// It was resolved and is open again.
    Reopened,
    /// The route's `realert` interval passed.
    Reminder,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::New => "new",
            Why::SeverityRose => "severity rose",
            Why::Reopened => "reopened",
            Why::Reminder => "reminder",
        })
    }
}

/// Whether to tell a receiver about this alert version, given what it was last told: yes when it is
/// new, its severity rose, it was reopened, or `interval` has passed; otherwise the reason not to.
pub fn realert(
    last: Option<&Last>,
    alert: &Alert,
    now: DateTime<Utc>,
    interval: Option<Duration>,
) -> Result<Why, String> {
    let Some(last) = last else { return Ok(Why::New) };
    if alert.severity().rank() > last.severity {
        return Ok(Why::SeverityRose);
    }
    if last.status == AlertStatus::Resolved.as_str() && alert.status() != AlertStatus::Resolved {
        return Ok(Why::Reopened);
    }
    if let Some(interval) = interval
        && now - last.at >= chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX)
    {
        return Ok(Why::Reminder);
    }
    Err(format!(
        "told at {} and nothing rose since{}",
        last.at.to_rfc3339(),
        interval.map(|i| format!(" (realert after {})", humantime::format_duration(i))).unwrap_or_default()
    ))
}

/// What the receiver was last told about the alert, from its record (nothing when unreadable).
pub(super) fn last(record: Option<Versioned>) -> Option<Last> {
    record.and_then(|v| serde_json::from_slice(&v.value).ok())
}

/// The record of what the receiver is told now, for the next version's [`realert`]: written at
/// `last_key` with the claim's completion ([`crate::store::once_reading`]). Losing it only means the
/// next version may be told once more.
pub(super) fn told(last_key: &str, alert: &Alert, now: DateTime<Utc>) -> Put {
    let last = Last { at: now, severity: alert.severity().rank(), status: alert.status().as_str().to_string() };
    (last_key.to_string(), serde_json::to_vec(&last).expect("JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(severity: &str, status: &str) -> Alert {
        Alert::from_value(json!({"id": "a", "severity": severity, "status": status})).unwrap()
    }

    #[test]
    fn realert_tells_new_risen_reopened_and_reminders_only() {
        let t0: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        let last = Last { at: t0, severity: 3, status: "new".into() };
        let hour = Some(Duration::from_secs(3600));
        let later = t0 + chrono::Duration::minutes(30);
        assert_eq!(realert(None, &alert("low", "new"), t0, None), Ok(Why::New));
        assert!(realert(Some(&last), &alert("medium", "inProgress"), later, hour).is_err());
        assert!(realert(Some(&last), &alert("low", "new"), later, None).is_err());
        assert_eq!(realert(Some(&last), &alert("high", "new"), later, None), Ok(Why::SeverityRose));
        let resolved = Last { status: "resolved".into(), ..last.clone() };
        assert_eq!(realert(Some(&resolved), &alert("medium", "new"), later, None), Ok(Why::Reopened));
        assert!(realert(Some(&resolved), &alert("medium", "resolved"), later, None).is_err());
        let much_later = t0 + chrono::Duration::minutes(61);
        assert_eq!(realert(Some(&last), &alert("medium", "new"), much_later, hour), Ok(Why::Reminder));
        assert!(realert(Some(&last), &alert("medium", "new"), much_later, None).is_err());
    }
}
