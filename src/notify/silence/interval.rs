//! Recurring windows (`time_intervals`), compiled once, with Alertmanager's semantics: a window holds
//! at a moment when any of its parts does; a part holds when every field it gives holds (times of day,
//! weekdays, days of the month, months, years), each read in the part's `location`; an absent field
//! always holds. Times of day run from `start_time` (inclusive) to `end_time` (exclusive), so a window
//! across midnight is two ranges, and each range is read on the local calendar: across a daylight
//! saving change "09:00–17:00 Europe/Berlin" stays 09:00–17:00 on the wall clock.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::config::Issue;
use crate::config::silence::{TimeIntervalConfig, TimeRangeConfig};

/// One compiled part of a window.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    /// Minutes of the day, `[start, end)`.
    times: Vec<(u32, u32)>,
    /// Weekday ranges, Monday = 0.
    weekdays: Vec<(u32, u32)>,
    /// Day-of-month ranges, negative from the end.
    days: Vec<(i32, i32)>,
    /// Month ranges, 1 = January.
    months: Vec<(u32, u32)>,
    /// Year ranges.
    years: Vec<(i32, i32)>,
    zone: Tz,
}

/// A named window, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    parts: Vec<Part>,
}

impl Interval {
    /// Compiles a window; each problem located under `path` (`time_intervals[0]`).
    pub fn compile(config: &TimeIntervalConfig, path: &str) -> Result<Interval, Vec<Issue>> {
        let mut issues = Vec::new();
        let mut parts = Vec::new();
        for (i, p) in config.time_intervals.iter().enumerate() {
            match Part::compile(p, &format!("{path}.time_intervals[{i}]")) {
                Ok(part) => parts.push(part),
                Err(mut e) => issues.append(&mut e),
            }
        }
        if issues.is_empty() { Ok(Interval { parts }) } else { Err(issues) }
    }

    /// Whether the window holds at `now`.
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.parts.iter().any(|p| p.contains(now))
    }

    /// True when some part holds at every moment (no field restricts it): the window mutes always.
    pub fn always(&self) -> bool {
        self.parts.iter().any(|p| {
            p.times.iter().any(|&(s, e)| s == 0 && e == 24 * 60)
                || p.times.is_empty()
                    && p.weekdays.is_empty()
                    && p.days.is_empty()
                    && p.months.is_empty()
                    && p.years.is_empty()
        })
    }
}

impl Part {
    fn compile(c: &TimeRangeConfig, path: &str) -> Result<Part, Vec<Issue>> {
        let mut issues = Vec::new();
        let mut field = |name: &str, i: usize, r: Result<(), String>| {
            if let Err(e) = r {
                issues.push(Issue::error(format!("{path}.{name}[{i}]"), e));
            }
        };
        let mut times = Vec::new();
        for (i, t) in c.times.iter().enumerate() {
            let r = (|| {
                let (s, e) = (minute_of_day(&t.start_time)?, minute_of_day(&t.end_time)?);
                if s >= e {
                    return Err(format!(
                        "start_time {} is not before end_time {}; a window across midnight is two ranges \
                         ({}–24:00 and 00:00–{})",
                        t.start_time, t.end_time, t.start_time, t.end_time
                    ));
                }
                times.push((s, e));
                Ok(())
            })();
            field("times", i, r);
        }
        let mut weekdays = Vec::new();
        for (i, w) in c.weekdays.iter().enumerate() {
            field("weekdays", i, range(w, weekday).map(|r| weekdays.push(r)));
        }
        let mut days = Vec::new();
        for (i, d) in c.days_of_month.iter().enumerate() {
            let r = range(d, |s| {
                let n: i32 = s.trim().parse().map_err(|_| format!("{s:?} is not a day of the month"))?;
                if n == 0 || !(-31..=31).contains(&n) {
                    return Err(format!("day {n}: use 1 to 31, or -1 to -31 from the end of the month"));
                }
                Ok(n)
            })
            .and_then(|(a, b)| {
                if (a > 0) == (b > 0) && a > b {
                    return Err(format!("{d:?}: the range runs backwards"));
                }
                days.push((a, b));
                Ok(())
            });
            field("days_of_month", i, r);
        }
        let mut months = Vec::new();
        for (i, m) in c.months.iter().enumerate() {
            let r = range(m, month).and_then(|(a, b)| {
                if a > b {
                    return Err(format!("{m:?}: the range runs backwards"));
                }
                months.push((a, b));
                Ok(())
            });
            field("months", i, r);
        }
        let mut years = Vec::new();
        for (i, y) in c.years.iter().enumerate() {
            let r =
                range(y, |s| s.trim().parse::<i32>().map_err(|_| format!("{s:?} is not a year"))).and_then(|(a, b)| {
                    if a > b {
                        return Err(format!("{y:?}: the range runs backwards"));
                    }
                    years.push((a, b));
                    Ok(())
                });
            field("years", i, r);
        }
        let zone = match c.location.as_deref() {
            None => Tz::UTC,
            Some(name) => zone(name).unwrap_or_else(|e| {
                issues.push(Issue::error(format!("{path}.location"), e));
                Tz::UTC
            }),
        };
        if issues.is_empty() { Ok(Part { times, weekdays, days, months, years, zone }) } else { Err(issues) }
    }

    fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.zone);
        let minute = local.hour() * 60 + local.minute();
        let weekday = local.weekday().num_days_from_monday();
        let (day, month, year) = (local.day() as i32, local.month(), local.year());
        let last = days_in_month(year, month) as i32;
        let absolute = |d: i32| if d < 0 { last + 1 + d } else { d };
        (self.times.is_empty() || self.times.iter().any(|&(s, e)| s <= minute && minute < e))
            && (self.weekdays.is_empty() || self.weekdays.iter().any(|&(a, b)| within(weekday, a, b)))
            && (self.days.is_empty() || self.days.iter().any(|&(a, b)| absolute(a) <= day && day <= absolute(b)))
            && (self.months.is_empty() || self.months.iter().any(|&(a, b)| a <= month && month <= b))
            && (self.years.is_empty() || self.years.iter().any(|&(a, b)| a <= year && year <= b))
    }
}

/// A weekday range may wrap (`saturday:monday`).
fn within(x: u32, a: u32, b: u32) -> bool {
    if a <= b { a <= x && x <= b } else { x >= a || x <= b }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (y, m) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).and_then(|d| d.pred_opt()).map(|d| d.day()).unwrap_or(31)
}

/// `a` or `a:b`, each end parsed by `one`.
fn range<T: Copy>(s: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<(T, T), String> {
    match s.split_once(':') {
        Some((a, b)) => Ok((one(a)?, one(b)?)),
        None => {
            let v = one(s)?;
            Ok((v, v))
        }
    }
}

/// `HH:MM` as minutes of the day; `24:00` is the end of the day.
fn minute_of_day(s: &str) -> Result<u32, String> {
    let bad = || format!("{s:?} is not a time of day (HH:MM, 00:00 to 24:00)");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) || s.trim().len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn weekday(s: &str) -> Result<u32, String> {
    const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    let s = s.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| *d == s)
        .map(|p| p as u32)
        .ok_or_else(|| format!("{s:?} is not a weekday (monday … sunday)"))
}

fn month(s: &str) -> Result<u32, String> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let s = s.trim().to_ascii_lowercase();
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=12).contains(&n) { Ok(n) } else { Err(format!("month {n}: use 1 to 12")) };
    }
    MONTHS.iter().position(|m| *m == s).map(|p| p as u32 + 1).ok_or_else(|| format!("{s:?} is not a month"))
}

/// An IANA time zone by name.
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| format!("{name:?} is not an IANA time zone (like Europe/Berlin or UTC)"))
}

/// Every window of a config, by name.
#[derive(Debug, Clone, Default)]
pub struct Intervals {
    by_name: BTreeMap<String, Interval>,
}

impl Intervals {
    /// Compiles every `time_intervals` entry; problems located at their fields.
    pub fn compile(config: &[TimeIntervalConfig]) -> Result<Intervals, Vec<Issue>> {
        let mut by_name = BTreeMap::new();
        let mut issues = Vec::new();
        for (i, t) in config.iter().enumerate() {
            match Interval::compile(t, &format!("time_intervals[{i}]")) {
                Ok(c) => {
                    by_name.insert(t.name.clone(), c);
                }
                Err(mut e) => issues.append(&mut e),
            }
        }
        if issues.is_empty() { Ok(Intervals { by_name }) } else { Err(issues) }
    }

    /// Window `name`.
    pub fn get(&self, name: &str) -> Option<&Interval> {
        self.by_name.get(name)
    }

    /// Whether `mute_during` / `active_during` mute at `now`: inside any `mute` window, or outside
    /// every `active` window (when there are any). An unknown name never mutes (the config check
    /// rejects it; a silence naming a window that was removed since mutes nothing).
    pub fn muted(&self, mute: &[String], active: &[String], now: DateTime<Utc>) -> Option<String> {
        if let Some(name) = mute.iter().find(|n| self.get(n).is_some_and(|i| i.contains(now))) {
            return Some(format!("inside time interval {name:?}"));
        }
        let known: Vec<&String> = active.iter().filter(|n| self.get(n).is_some()).collect();
        if !known.is_empty() && !known.iter().any(|n| self.get(n).is_some_and(|i| i.contains(now))) {
            let names: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
            return Some(format!("outside time intervals {}", names.join(", ")));
        }
        None
    }
}

/// The local time `date time` in `zone`, for tests and docs (the earliest, in a repeated hour).
pub fn local(zone: Tz, date: &str, time: &str) -> DateTime<Utc> {
    let naive = chrono::NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M").expect("a time");
    zone.from_local_datetime(&naive).earliest().expect("a local time that exists").with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::silence::TimesConfig;

    fn window(parts: Vec<TimeRangeConfig>) -> Interval {
        Interval::compile(&TimeIntervalConfig { name: "w".into(), time_intervals: parts }, "time_intervals[0]").unwrap()
    }

    fn times(s: &str, e: &str) -> TimesConfig {
        TimesConfig { start_time: s.into(), end_time: e.into() }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Night shift in Tokyo, 22:00–06:00 local on weeknights, written as Alertmanager writes it: two
    /// ranges. In UTC it runs 13:00–21:00, so it crosses neither local nor UTC midnight the same way.
    #[test]
    fn a_window_across_midnight_in_another_time_zone() {
        let night = window(vec![TimeRangeConfig {
            times: vec![times("22:00", "24:00"), times("00:00", "06:00")],
            weekdays: vec!["monday:friday".into()],
            location: Some("Asia/Tokyo".into()),
            ..Default::default()
        }]);
        // Wednesday 2026-11-25, 23:30 Tokyo = 14:30 UTC: inside.
        assert!(night.contains(at("2026-11-25T14:30:00Z")));
        // Thursday 00:10 Tokyo = Wednesday 15:10 UTC: inside (local Thursday).
        assert!(night.contains(at("2026-11-25T15:10:00Z")));
        // 05:59 Tokyo inside, 06:00 Tokyo (21:00 UTC) outside: the end is exclusive.
        assert!(night.contains(at("2026-11-25T20:59:00Z")));
        assert!(!night.contains(at("2026-11-25T21:00:00Z")));
        // 21:59 Tokyo outside, 22:00 inside.
        assert!(!night.contains(at("2026-11-25T12:59:00Z")));
        assert!(night.contains(at("2026-11-25T13:00:00Z")));
        // Saturday 00:30 Tokyo (Friday 15:30 UTC): a weekend day locally, so outside, although it is
        // Friday in UTC.
        assert!(!night.contains(at("2026-11-27T15:30:00Z")));
        // Across UTC midnight: New York 18:00–24:00 is 23:00–05:00 UTC in winter.
        let evening = window(vec![TimeRangeConfig {
            times: vec![times("18:00", "24:00")],
            location: Some("America/New_York".into()),
            ..Default::default()
        }]);
        assert!(evening.contains(at("2026-11-25T23:30:00Z")));
        assert!(evening.contains(at("2026-11-26T04:59:00Z")));
        assert!(!evening.contains(at("2026-11-26T05:00:00Z")));
        assert!(!evening.contains(at("2026-11-25T22:59:00Z")));
    }

    /// Office hours in Berlin follow the wall clock across a daylight saving change: 09:00 local is
    /// 08:00 UTC before 29 March 2026 and 07:00 UTC after it.
    #[test]
    fn a_window_keeps_local_time_across_a_dst_change() {
        let office = window(vec![TimeRangeConfig {
            times: vec![times("09:00", "17:00")],
            location: Some("Europe/Berlin".into()),
            ..Default::default()
        }]);
        // Friday 27 March (CET, UTC+1).
        assert!(!office.contains(at("2026-03-27T07:30:00Z")));
        assert!(office.contains(at("2026-03-27T08:00:00Z")));
        assert!(office.contains(at("2026-03-27T15:59:00Z")));
        assert!(!office.contains(at("2026-03-27T16:00:00Z")));
        // Monday 30 March (CEST, UTC+2).
        assert!(office.contains(at("2026-03-30T07:30:00Z")));
        assert!(!office.contains(at("2026-03-30T06:59:00Z")));
        assert!(!office.contains(at("2026-03-30T15:00:00Z")));
        // The night of the change itself: 02:00–03:00 does not exist in Berlin on 29 March. A window of
        // 01:00–04:00 local is two hours long that night (00:00–02:00 UTC).
        let night = window(vec![TimeRangeConfig {
            times: vec![times("01:00", "04:00")],
            location: Some("Europe/Berlin".into()),
            ..Default::default()
        }]);
        assert!(night.contains(at("2026-03-29T00:00:00Z")));
        assert!(night.contains(at("2026-03-29T01:59:00Z")));
        assert!(!night.contains(at("2026-03-29T02:00:00Z")));
        assert_eq!(local(Tz::Europe__Berlin, "2026-03-29", "04:00"), at("2026-03-29T02:00:00Z"));
        // And in autumn the repeated hour (02:00–03:00 twice on 25 October) is inside both times.
        assert!(night.contains(at("2026-10-25T00:30:00Z")));
        assert!(night.contains(at("2026-10-25T01:30:00Z")));
        assert!(!night.contains(at("2026-10-25T03:00:00Z")));
    }

    #[test]
    fn days_months_years_and_their_ranges() {
        let end_of_month = window(vec![TimeRangeConfig {
            days_of_month: vec!["-2:-1".into()],
            months: vec!["february".into(), "11:12".into()],
            years: vec!["2026:2027".into()],
            ..Default::default()
        }]);
        assert!(end_of_month.contains(at("2026-02-27T12:00:00Z")));
        assert!(end_of_month.contains(at("2026-11-30T12:00:00Z")));
        assert!(!end_of_month.contains(at("2026-11-28T12:00:00Z")));
        assert!(!end_of_month.contains(at("2026-03-31T12:00:00Z")));
        assert!(!end_of_month.contains(at("2028-02-28T12:00:00Z")));
        let weekend = window(vec![TimeRangeConfig { weekdays: vec!["saturday:sunday".into()], ..Default::default() }]);
        assert!(weekend.contains(at("2026-11-28T00:00:00Z")) && !weekend.contains(at("2026-11-27T23:59:00Z")));
        assert!(!weekend.always() && window(vec![TimeRangeConfig::default()]).always());
    }

    #[test]
    fn bad_fields_are_located_errors() {
        let bad = TimeRangeConfig {
            times: vec![times("22:00", "06:00"), times("9:00", "25:00")],
            weekdays: vec!["funday".into()],
            days_of_month: vec!["0".into()],
            months: vec!["march:january".into()],
            location: Some("Mars/Olympus".into()),
            ..Default::default()
        };
        let issues = Interval::compile(&TimeIntervalConfig { name: "w".into(), time_intervals: vec![bad] }, "ti[0]")
            .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "ti[0].time_intervals[0].times[0]",
                "ti[0].time_intervals[0].times[1]",
                "ti[0].time_intervals[0].weekdays[0]",
                "ti[0].time_intervals[0].days_of_month[0]",
                "ti[0].time_intervals[0].months[0]",
                "ti[0].time_intervals[0].location",
            ]
        );
        assert!(issues[0].message.contains("two ranges"), "{}", issues[0].message);
    }
}
