//! The `close_rules` and `routes` sections, their structural checks (ids, owners, expiry, the values
//! Graph accepts, receivers that exist), and the `SECMON_CLOSE` kill switch. The CEL expressions are
//! compiled and linted by the rules engine when the state is built.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Issue, ValidationContext};
use crate::alert::{Classification, Determination, Severity};

/// Shadow records "would close" and changes nothing; enforce closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Record only (the default).
    #[default]
    Shadow,
    /// Close the alert in Graph.
    Enforce,
}

/// `SECMON_CLOSE` values that leave each close rule its own `mode`.
pub const CLOSE_ON: &[&str] = &["on", "true", "1", "yes", "y", "enabled", "enable", "enforce"];
/// `SECMON_CLOSE` values that force every close rule into shadow mode (the kill switch).
pub const CLOSE_OFF: &[&str] = &["off", "false", "0", "no", "n", "disabled", "disable", "shadow"];

/// Reads the kill switch `SECMON_CLOSE`: `Ok(true)` when closing is disabled (every rule in shadow
/// mode), `Ok(false)` when it is unset or one of [`CLOSE_ON`]. Case and surrounding spaces are ignored.
/// Anything else, the empty string included, is an error (for the `SECMON_CLOSE` field) naming the
/// accepted values: a misspelt "off" must stop secmon from starting, never leave closing on.
pub fn closing_disabled(value: Option<&str>) -> Result<bool, String> {
    let Some(raw) = value else { return Ok(false) };
    let v = raw.trim().to_ascii_lowercase();
    if CLOSE_OFF.contains(&v.as_str()) {
        Ok(true)
    } else if CLOSE_ON.contains(&v.as_str()) {
        Ok(false)
    } else {
        Err(format!(
            "{raw:?} is not understood; use one of {} (every close rule in shadow mode) or {} (each rule's own \
             mode), or leave it unset",
            CLOSE_OFF.join(", "),
            CLOSE_ON.join(", ")
        ))
    }
}

/// A known-benign rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRuleConfig {
    /// Unique id, quoted in the Defender comment and the audit trail.
    pub id: String,
    /// Why the rule exists.
    #[serde(default)]
    pub description: Option<String>,
    /// Who answers for it (required).
    #[serde(default)]
    pub owner: Option<String>,
    /// The last day it applies (required); after it the rule is inactive.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub expires: Option<NaiveDate>,
    /// `shadow` (default) or `enforce`.
    #[serde(default)]
    pub mode: Mode,
    /// CEL expression over the alert as Graph returns it (`alert.severity == "low"`).
    pub when: String,
    /// Classification to set (Graph wire value), e.g. `informationalExpectedActivity`.
    pub classification: String,
    /// Determination to set (Graph wire value), e.g. `securityTesting`.
    pub determination: String,
    /// Comment added to the alert in Defender.
    #[serde(default)]
    pub comment: Option<String>,
    /// Never close an alert above this severity (default `medium`).
    #[serde(default)]
    pub max_severity: Option<String>,
    /// Circuit breaker: at most this many closes per hour (default 50).
    #[serde(default)]
    pub max_per_hour: Option<u32>,
}

/// A notification route.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Optional name for logs and `rules test`.
    #[serde(default)]
    pub name: Option<String>,
    /// CEL expression; a route without `when` matches every alert.
    #[serde(default)]
    pub when: Option<String>,
    /// Receivers to notify.
    pub receivers: Vec<String>,
    /// Keep evaluating later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Do not notify again about the same alert within this interval unless its severity rose or it was
    /// reopened.
    #[serde(default, with = "super::duration::option")]
    #[schemars(with = "Option<String>")]
    pub realert: Option<Duration>,
    /// Tell alerts of the same Defender incident that arrive within this window in one message.
    #[serde(default, with = "super::duration::option")]
    #[schemars(with = "Option<String>")]
    pub group_by_incident: Option<Duration>,
    /// Update the alert in Defender after notifying (`{status: inProgress, assigned_to: …}`).
    #[serde(default)]
    pub set: Option<super::receivers::StatusUpdate>,
    /// Names of `time_intervals` during which this route's receivers are not told (a muted alert is
    /// audited `notify_silenced`).
    #[serde(default)]
    pub mute_during: Vec<String>,
    /// Names of `time_intervals` outside which this route's receivers are not told.
    #[serde(default)]
    pub active_during: Vec<String>,
    /// Collect what this route sends and send it as one scheduled digest per receiver.
    #[serde(default)]
    pub digest: Option<super::silence::DigestConfig>,
}

/// The severity a close rule may close at most when the rule does not say.
pub const DEFAULT_MAX_SEVERITY: Severity = Severity::Medium;
/// Closes per rule and hour before the circuit breaker opens, when the rule does not say.
pub const DEFAULT_MAX_PER_HOUR: u32 = 50;
/// Rules expiring within this many days are warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// Determination names from older docs that Graph's metadata replaced, with the wire value to use.
const STALE_DETERMINATIONS: &[(&str, &str)] = &[
    ("compromisedUser", "compromisedAccount"),
    ("clean", "notMalicious"),
    ("insufficientData", "notEnoughDataToValidate"),
    ("confirmedUserActivity", "confirmedActivity"),
];

impl CloseRuleConfig {
    /// The highest severity this rule may close (`max_severity`, default medium).
    pub fn max_severity(&self) -> Severity {
        self.max_severity.as_deref().and_then(settable_severity).unwrap_or(DEFAULT_MAX_SEVERITY)
    }

    /// The circuit breaker's limit (`max_per_hour`, default 50).
    pub fn max_per_hour(&self) -> u32 {
        self.max_per_hour.unwrap_or(DEFAULT_MAX_PER_HOUR)
    }

    /// True while the rule applies: up to and including its `expires` day (UTC). A rule without an
    /// expiry never loads (validation rejects it), so it counts as inactive here.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|d| now.date_naive() <= d)
    }

    /// SHA-256 (hex) of the rule as canonical JSON: which text of the rule made a decision, for the audit
    /// trail. Any change to any field changes it.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let text = serde_json::to_vec(self).expect("a rule serializes");
        hex::encode(sha2::Sha256::digest(&text))
    }
}

/// The severities a `max_severity` may name.
fn settable_severity(s: &str) -> Option<Severity> {
    match s {
        "informational" => Some(Severity::Informational),
        "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        _ => None,
    }
}

/// The wire values Graph accepts in a PATCH: the known ones minus the placeholders.
fn settable(known: &'static [&'static str]) -> impl Iterator<Item = &'static str> {
    known.iter().copied().filter(|v| !matches!(*v, "unknown" | "unknownFutureValue"))
}

fn check_classification(value: &str) -> Result<(), String> {
    if settable(Classification::KNOWN).any(|v| v == value) {
        return Ok(());
    }
    if value == "benignPositive" {
        return Err("benignPositive is not a Graph alerts_v2 classification (the service rejects it with \
                    InvalidRequestBody); use informationalExpectedActivity"
            .into());
    }
    Err(format!(
        "{value:?} is not a classification Graph accepts; use one of {}",
        list(settable(Classification::KNOWN))
    ))
}

fn check_determination(value: &str) -> Result<(), String> {
    if settable(Determination::KNOWN).any(|v| v == value) {
        return Ok(());
    }
    if let Some((_, now)) = STALE_DETERMINATIONS.iter().find(|(old, _)| *old == value) {
        return Err(format!("{value:?} is a stale name from older docs; Graph's wire value is {now:?}"));
    }
    Err(format!("{value:?} is not a determination Graph accepts; use one of {}", list(settable(Determination::KNOWN))))
}

fn list(values: impl Iterator<Item = &'static str>) -> String {
    values.collect::<Vec<_>>().join(", ")
}

/// Validates the close rules section: ids, owners, expiry, the values Graph accepts for classification
/// and determination, and the guardrail settings (the `when` is compiled by the rules engine). Expired rules and rules expiring soon
/// are warnings.
pub fn validate_close_rules(rules: &[CloseRuleConfig], cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
    let mut ids = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let path = format!("close_rules[{i}]");
        if !super::is_name(&r.id) {
            out.push(Issue::error(
                format!("{path}.id"),
                "a rule id uses letters, digits, '-' and '_' only (it becomes part of storage keys)",
            ));
        }
        if !ids.insert(r.id.as_str()) {
            out.push(Issue::error(format!("{path}.id"), format!("duplicate rule id {:?}", r.id)));
        }
        if r.owner.as_deref().is_none_or(|o| o.trim().is_empty()) {
            out.push(Issue::error(format!("{path}.owner"), "every close rule needs an owner"));
        }
        match r.expires {
            None => {
                out.push(Issue::error(format!("{path}.expires"), "every close rule needs an expiry date (YYYY-MM-DD)"))
            }
            Some(d) => {
                let today = cx.now.date_naive();
                let days = (d - today).num_days();
                if days < 0 {
                    out.push(Issue::warning(
                        format!("{path}.expires"),
                        format!("rule {:?} expired on {d}; it is inactive and closes nothing", r.id),
                    ));
                } else if days <= EXPIRY_WARNING_DAYS {
                    out.push(Issue::warning(
                        format!("{path}.expires"),
                        format!("rule {:?} expires on {d}, in {days} days; renew or remove it", r.id),
                    ));
                }
            }
        }
        if let Err(e) = check_classification(&r.classification) {
            out.push(Issue::error(format!("{path}.classification"), e));
        }
        if let Err(e) = check_determination(&r.determination) {
            out.push(Issue::error(format!("{path}.determination"), e));
        }
        if let Some(s) = &r.max_severity
            && settable_severity(s).is_none()
        {
            out.push(Issue::error(
                format!("{path}.max_severity"),
                format!("{s:?} is not a severity; use informational, low, medium or high"),
            ));
        }
        if r.max_per_hour == Some(0) {
            out.push(Issue::error(
                format!("{path}.max_per_hour"),
                "must be at least 1 (use mode: shadow to stop closing)",
            ));
        }
        if r.comment.as_deref().is_some_and(|c| c.trim().is_empty()) {
            out.push(Issue::error(format!("{path}.comment"), "an empty comment; remove it or say why"));
        }
    }
}

/// Validates the routes section: receivers that exist, unique names (the `when` is compiled by the
/// rules engine).
pub fn validate_routes(routes: &[RouteConfig], cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
    let mut names = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some(name) = &r.name
            && !names.insert(name.as_str())
        {
            out.push(Issue::error(format!("{path}.name"), format!("duplicate route name {name:?}")));
        }
        if r.receivers.is_empty() {
            out.push(Issue::warning(
                format!("{path}.receivers"),
                "no receivers: alerts this route matches are not notified (and, without continue, not by later routes)",
            ));
        }
        for (j, name) in r.receivers.iter().enumerate() {
            if !cx.config.receivers.contains_key(name) {
                out.push(Issue::error(format!("{path}.receivers[{j}]"), format!("unknown receiver {name:?}")));
            }
        }
    }
}

/// Checks the notification options of the routes (`realert`, `group_by_incident`, `set`).
pub fn validate_route_notifications(routes: &[RouteConfig], out: &mut Vec<Issue>) {
    for (i, r) in routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some(w) = r.group_by_incident
            && (w.is_zero() || w > super::receivers::MAX_GROUP_WINDOW)
        {
            out.push(Issue::error(
                format!("{path}.group_by_incident"),
                "the grouping window must be between 1s and 10m (the first alert's delivery waits that long)",
            ));
        }
        if let Some(d) = r.realert
            && d.is_zero()
        {
            out.push(Issue::error(format!("{path}.realert"), "realert must be longer than 0s"));
        }
        if let Some(set) = &r.set {
            if set.status.is_none() && set.assigned_to.is_none() {
                out.push(Issue::error(format!("{path}.set"), "set needs status and/or assigned_to"));
            }
            if let Some(s) = &set.status
                && !matches!(s.as_str(), "new" | "inProgress")
            {
                out.push(Issue::error(
                    format!("{path}.set.status"),
                    format!("status {s:?}: a route may set new or inProgress; resolving is for close_rules"),
                ));
            }
            if let Some(a) = &set.assigned_to
                && a.trim().is_empty()
            {
                out.push(Issue::error(format!("{path}.set.assigned_to"), "assigned_to is empty"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_switch_accepts_its_documented_values_and_nothing_else() {
        assert_eq!(closing_disabled(None), Ok(false), "unset: each rule's own mode");
        for v in CLOSE_OFF {
            for spelled in [v.to_string(), v.to_ascii_uppercase(), format!(" {v}\n")] {
                assert_eq!(closing_disabled(Some(&spelled)), Ok(true), "{spelled:?}");
            }
        }
        for v in CLOSE_ON {
            for spelled in [v.to_string(), v.to_ascii_uppercase(), format!(" {v} ")] {
                assert_eq!(closing_disabled(Some(&spelled)), Ok(false), "{spelled:?}");
            }
        }
        for v in ["disabled", "disable", "n", "DISABLED", "shadow"] {
            assert_eq!(closing_disabled(Some(v)), Ok(true), "{v} turns closing off");
        }
        for garbage in ["", " ", "of", "offf", "disabled2", "nein", "enforced", "on!", "-1", "2", "o n"] {
            let err = closing_disabled(Some(garbage)).unwrap_err();
            assert!(err.contains("not understood") && err.contains("off, false") && err.contains("on, true"), "{err}");
        }
    }
}
