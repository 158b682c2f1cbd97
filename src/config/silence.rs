//! The noise-control sections: `silences` (the limits of silences made with `secmon silence add`),
//! `time_intervals` (named recurring windows with Alertmanager's semantics, referenced by routes and
//! silences as `mute_during` / `active_during`), and the `digest` schedule a route or a receiver may
//! have. The windows and schedules are compiled (time zones, times, NCRONTAB) by
//! `notify::silence::check`; the names they reference are checked here.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Config, Issue};

/// The longest a silence may last, unless `silences.max_duration` says otherwise.
pub const DEFAULT_MAX_SILENCE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long one process keeps the list of silences before reading it again.
pub const DEFAULT_SILENCE_CACHE: Duration = Duration::from_secs(30);

/// Limits of the silences stored with `secmon silence add`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SilencesConfig {
    /// The longest a silence may last (default 7 days): a forgotten silence ends by itself.
    #[serde(default = "default_max", with = "super::duration")]
    #[schemars(with = "String")]
    pub max_duration: Duration,
    /// How long each process keeps the list of silences before reading the store again (default 30s):
    /// a new or expired silence takes effect on every instance within this time.
    #[serde(default = "default_cache", with = "super::duration")]
    #[schemars(with = "String")]
    pub cache: Duration,
}

fn default_max() -> Duration {
    DEFAULT_MAX_SILENCE
}

fn default_cache() -> Duration {
    DEFAULT_SILENCE_CACHE
}

impl Default for SilencesConfig {
    fn default() -> Self {
        Self { max_duration: DEFAULT_MAX_SILENCE, cache: DEFAULT_SILENCE_CACHE }
    }
}

/// A named recurring window (Alertmanager's `time_intervals` entry): it holds at a moment when any of
/// its `time_intervals` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalConfig {
    /// The name routes and silences use in `mute_during` / `active_during`.
    pub name: String,
    /// The parts of the window; a moment is inside when it is inside any of them.
    pub time_intervals: Vec<TimeRangeConfig>,
}

/// One part of a window: every field given must hold (an absent field holds always), and within a
/// field any of its entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeConfig {
    /// Times of day, `start_time` inclusive to `end_time` exclusive (`"24:00"` is the end of the day);
    /// a window across midnight is two ranges (`22:00`–`24:00` and `00:00`–`06:00`).
    #[serde(default)]
    pub times: Vec<TimesConfig>,
    /// Days of the week or ranges of them: `monday`, `monday:friday`.
    #[serde(default)]
    pub weekdays: Vec<String>,
    /// Days of the month or ranges, from 1, or from the end with negative numbers: `1`, `1:5`, `-3:-1`.
    #[serde(default)]
    pub days_of_month: Vec<String>,
    /// Months by name or number, or ranges: `january`, `1:3`, `december`.
    #[serde(default)]
    pub months: Vec<String>,
    /// Years or ranges: `2026`, `2026:2027`.
    #[serde(default)]
    pub years: Vec<String>,
    /// The IANA time zone the window is read in (`Europe/Berlin`); default UTC.
    #[serde(default)]
    pub location: Option<String>,
}

/// A range of times of day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimesConfig {
    /// `HH:MM`, inclusive.
    pub start_time: String,
    /// `HH:MM`, exclusive; `24:00` for the end of the day.
    pub end_time: String,
}

/// A scheduled digest: what is routed to the receiver is collected and sent as one message at each
/// fire time of `schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestConfig {
    /// NCRONTAB with seconds, as Azure Functions timers take it: `{second} {minute} {hour} {day}
    /// {month} {day-of-week}`, e.g. `"0 0 8 * * *"` (08:00 every day) or `"0 0 8 * * 1-5"` (weekdays).
    pub schedule: String,
    /// The IANA time zone the schedule is read in (`Europe/Berlin`); default UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// Checks the names: intervals named once, with at least one part; every `mute_during` /
/// `active_during` of a route names a defined interval; a receiver gets digests from one schedule.
pub fn validate(config: &Config, out: &mut Vec<Issue>) {
    let mut names = std::collections::HashSet::new();
    for (i, t) in config.time_intervals.iter().enumerate() {
        let path = format!("time_intervals[{i}]");
        if !super::is_name(&t.name) {
            out.push(Issue::error(format!("{path}.name"), "an interval name uses letters, digits, '-' and '_' only"));
        }
        if !names.insert(t.name.as_str()) {
            out.push(Issue::error(format!("{path}.name"), format!("duplicate interval name {:?}", t.name)));
        }
        if t.time_intervals.is_empty() {
            out.push(Issue::error(format!("{path}.time_intervals"), "an interval needs at least one part"));
        }
    }
    let s = &config.silences;
    if s.max_duration < Duration::from_secs(60) {
        out.push(Issue::error("silences.max_duration", "at least 1m"));
    }
    if s.cache > Duration::from_secs(600) {
        out.push(Issue::error("silences.cache", "at most 10m: a new silence must take effect soon"));
    }
    for (i, r) in config.routes.iter().enumerate() {
        for (field, list) in [("mute_during", &r.mute_during), ("active_during", &r.active_during)] {
            for (j, name) in list.iter().enumerate() {
                if !names.contains(name.as_str()) {
                    out.push(Issue::error(
                        format!("routes[{i}].{field}[{j}]"),
                        format!("unknown time interval {name:?}; define it under time_intervals"),
                    ));
                }
            }
        }
    }
    // One receiver, one schedule: its own, or the same on every route that names it.
    for (name, rc) in &config.receivers {
        let own = rc.digest();
        if let (super::ReceiverConfig::Webhook(_), Some(_)) = (rc, own) {
            out.push(Issue::error(format!("receivers.{name}.webhook.digest"), "digests are for Teams and e-mail"));
        }
        let mut first: Option<(String, &DigestConfig)> =
            own.map(|d| (format!("receivers.{name}.{}.digest", rc.kind()), d));
        for (i, r) in config.routes.iter().enumerate() {
            let Some(d) = &r.digest else { continue };
            if !r.receivers.contains(name) {
                continue;
            }
            if matches!(rc, super::ReceiverConfig::Webhook(_)) {
                out.push(Issue::error(
                    format!("routes[{i}].digest"),
                    format!("receiver {name:?} is a webhook; digests are for Teams and e-mail"),
                ));
            }
            match &first {
                None => first = Some((format!("routes[{i}].digest"), d)),
                Some((at, other)) if *other != d => out.push(Issue::error(
                    format!("routes[{i}].digest"),
                    format!(
                        "receiver {name:?} already gets digests on another schedule ({at}); one schedule per receiver"
                    ),
                )),
                Some(_) => {}
            }
        }
    }
}
