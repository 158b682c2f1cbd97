//! NCRONTAB schedules (`{second} {minute} {hour} {day} {month} {day-of-week}`), as Azure Functions timers
//! read them, for every schedule in the config: `poll.schedule`, `poll.reconcile.schedule`, digests.
//!
//! The `cron` crate parses six fields with seconds and computes fire times in any `chrono` time zone. It
//! numbers the days of the week 1–7 from Sunday, where NCRONTAB numbers them 0–6 from Sunday, so a numeric
//! day-of-week field is translated to names first: `1-5` is Monday to Friday standalone as in Azure.

use std::str::FromStr;

/// Parses a six-field NCRONTAB schedule; the error says what is wrong in words.
pub fn parse(text: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "{text:?} has {} fields; NCRONTAB takes six: second minute hour day month day-of-week (\"0 */5 * * * *\")",
            fields.len()
        ));
    }
    let weekday = weekday_names(fields[5])?;
    let translated = format!("{} {}", fields[..5].join(" "), weekday);
    cron::Schedule::from_str(&translated).map_err(|e| format!("{text:?}: {e}"))
}

/// NCRONTAB's numeric days of the week (0 or 7 Sunday, 1 Monday … 6 Saturday) as names, which the
/// `cron` crate reads the same way; names, `*` and `?` pass through.
pub fn weekday_names(field: &str) -> Result<String, String> {
    const NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| -> Result<(), String> {
        if digits.is_empty() {
            return Ok(());
        }
        let n: usize = digits.parse().map_err(|_| format!("day of week {digits:?}"))?;
        let name = NAMES.get(n).ok_or_else(|| format!("day of week {n}: use 0 (Sunday) to 6 (Saturday)"))?;
        out.push_str(name);
        digits.clear();
        Ok(())
    };
    let mut after_slash = false;
    for c in field.chars() {
        if c.is_ascii_digit() && !after_slash {
            digits.push(c);
            continue;
        }
        flush(&mut digits, &mut out)?;
        if c == '/' {
            after_slash = true;
        } else if c == ',' {
            after_slash = false;
        }
        out.push(c);
    }
    flush(&mut digits, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_days_of_week_are_read_as_azure_reads_them() {
        assert_eq!(weekday_names("1-5").unwrap(), "MON-FRI");
        assert_eq!(weekday_names("0,6").unwrap(), "SUN,SAT");
        assert_eq!(weekday_names("*/2").unwrap(), "*/2");
        assert_eq!(weekday_names("Mon-Fri").unwrap(), "Mon-Fri");
        assert!(weekday_names("8").is_err());
    }

    #[test]
    fn a_poll_schedule_on_weekdays_skips_the_weekend() {
        use chrono::{DateTime, Utc};
        let s = parse("0 0 8 * * 1-5").unwrap();
        // Friday 27 November 2026 08:00 UTC, then Monday 30 November (not Sunday, as `1-5` is to the crate).
        let friday: DateTime<Utc> = "2026-11-27T08:00:00Z".parse().unwrap();
        assert_eq!(s.after(&friday).next(), Some("2026-11-30T08:00:00Z".parse().unwrap()));
        assert!(parse("0 */5 * * *").unwrap_err().contains("has 5 fields"));
    }
}
