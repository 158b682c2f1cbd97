//! Known-benign close rules and notification routes: parse, validate, evaluate. Pure: no I/O, and time
//! is an argument.
//!
//! - [`CloseRuleConfig`] / [`RouteConfig`]: the config sections, checked by [`validate_close_rules`] and
//!   [`validate_routes`] (every expression is compiled, every error located at its field);
//! - [`expr`]: CEL compiled once with length and nesting caps, plus the domain helpers;
//! - [`Engine`]: the compiled rules and routes; [`Engine::decide`] turns one alert into a [`Decision`];
//! - [`dry_run`]: `secmon rules test`, the offline evaluation of alert files.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::alert::{Classification, Determination, Severity};
use crate::config::{Issue, ValidationContext};

pub mod dry_run;
mod engine;
pub mod expr;

pub use engine::{Blocked, CloseMatch, Decision, Delivery, Engine, EvalError, Outcome, RouteMatch, Update};

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
    #[serde(default, with = "crate::config::duration::option")]
    #[schemars(with = "Option<String>")]
    pub realert: Option<Duration>,
    /// Tell alerts of the same Defender incident that arrive within this window in one message.
    #[serde(default, with = "crate::config::duration::option")]
    #[schemars(with = "Option<String>")]
    pub group_by_incident: Option<Duration>,
    /// Update the alert in Defender after notifying (`{status: inProgress, assigned_to: …}`).
    #[serde(default)]
    pub set: Option<crate::notify::StatusUpdate>,
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

/// Validates the close rules section: ids, owners, expiry, the CEL `when`, the values Graph accepts for
/// classification and determination, and the guardrail settings. Expired rules and rules expiring soon
/// are warnings.
pub fn validate_close_rules(rules: &[CloseRuleConfig], cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
    let env = expr::env();
    let mut ids = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let path = format!("close_rules[{i}]");
        if !crate::config::is_name(&r.id) {
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
        if let Err(e) = expr::Expression::compile(&env, &r.when) {
            out.push(Issue::error(format!("{path}.when"), e));
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

/// Validates the routes section: the CEL `when`, receivers that exist, unique names.
pub fn validate_routes(routes: &[RouteConfig], cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
    let env = expr::env();
    let mut names = std::collections::HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        if let Some(name) = &r.name
            && !names.insert(name.as_str())
        {
            out.push(Issue::error(format!("{path}.name"), format!("duplicate route name {name:?}")));
        }
        if let Some(when) = &r.when
            && let Err(e) = expr::Expression::compile(&env, when)
        {
            out.push(Issue::error(format!("{path}.when"), e));
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
