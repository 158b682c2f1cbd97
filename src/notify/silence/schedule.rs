//! Digest schedules: NCRONTAB with seconds, as Azure Functions timers take it (`{second} {minute}
//! {hour} {day} {month} {day-of-week}`), read in a time zone.
//!
//! The `cron` crate (already used for the poll timer) parses six fields with seconds and computes fire
//! times in any `chrono` time zone, daylight saving included. It numbers the days of the week 1–7 from
//! Sunday, where NCRONTAB numbers them 0–6 from Sunday: the day-of-week field is translated to names
//! first, so `1-5` means Monday to Friday as it does in Azure.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::interval::zone;
use crate::config::ncrontab;
use crate::config::silence::DigestConfig;

/// A compiled digest schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: cron::Schedule,
    zone: Tz,
    /// The text as configured, for messages.
    pub text: String,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.zone == other.zone
    }
}

impl Schedule {
    /// Compiles a `digest:` setting; the error says what is wrong in words.
    pub fn compile(config: &DigestConfig) -> Result<Schedule, String> {
        let cron = ncrontab::parse(&config.schedule)?;
        let zone = match config.time_zone.as_deref() {
            Some(name) => zone(name)?,
            None => Tz::UTC,
        };
        let schedule = Schedule { cron, zone, text: config.schedule.clone() };
        if schedule.next_after("2026-01-01T00:00:00Z".parse().expect("a time")).is_none() {
            return Err(format!("{:?} never fires", config.schedule));
        }
        Ok(schedule)
    }

    /// The schedule as people read it in a message: `0 0 8 * * * Europe/Berlin`.
    pub fn words(&self) -> String {
        format!("{} {}", self.text, self.zone.name())
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t.with_timezone(&self.zone)).next().map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(s: &str, tz: Option<&str>) -> Schedule {
        Schedule::compile(&DigestConfig { schedule: s.into(), time_zone: tz.map(str::to_string) }).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn fires_at_local_time_across_dst() {
        let daily = schedule("0 0 8 * * *", Some("Europe/Berlin"));
        // 08:00 CET = 07:00 UTC before the change, 08:00 CEST = 06:00 UTC after it.
        assert_eq!(daily.next_after(at("2026-03-28T00:00:00Z")), Some(at("2026-03-28T07:00:00Z")));
        assert_eq!(daily.next_after(at("2026-03-28T07:00:00Z")), Some(at("2026-03-29T06:00:00Z")));
        let utc = schedule("0 30 7 * * *", None);
        assert_eq!(utc.next_after(at("2026-11-26T07:30:00Z")), Some(at("2026-11-27T07:30:00Z")));
    }

    #[test]
    fn bad_schedules_say_why() {
        let bad = |s: &str, tz: Option<&str>| {
            Schedule::compile(&DigestConfig { schedule: s.into(), time_zone: tz.map(str::to_string) }).unwrap_err()
        };
        assert!(bad("0 8 * * *", None).contains("six"));
        assert!(bad("0 0 8 * * 9", None).contains("0 (Sunday)"));
        assert!(bad("0 0 25 * * *", None).contains("0 0 25"));
        assert!(bad("0 0 8 * * *", Some("Europe/Nowhere")).contains("IANA"));
    }

    #[test]
    fn days_of_week_are_numbered_as_in_azure() {
        // 1-5 is Monday to Friday in NCRONTAB (Sunday is 0).
        let weekdays = schedule("0 0 8 * * 1-5", None);
        // Friday 27 November 2026 08:00, then Monday 30 November.
        assert_eq!(weekdays.next_after(at("2026-11-27T07:00:00Z")), Some(at("2026-11-27T08:00:00Z")));
        assert_eq!(weekdays.next_after(at("2026-11-27T08:00:00Z")), Some(at("2026-11-30T08:00:00Z")));
        let sunday = schedule("0 0 8 * * 0", None);
        assert_eq!(sunday.next_after(at("2026-11-27T08:00:00Z")), Some(at("2026-11-29T08:00:00Z")));
    }
}
