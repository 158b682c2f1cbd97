//! Known-benign close rules and notification routes: parse, validate, evaluate. Pure: no I/O, and time
//! is an argument.

use std::time::Duration;

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Issue, ValidationContext};

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

/// Validates the close rules section.
pub fn validate_close_rules(rules: &[CloseRuleConfig], _cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
    let mut ids = std::collections::HashSet::new();
    for (i, r) in rules.iter().enumerate() {
        let path = format!("close_rules[{i}]");
        if !ids.insert(r.id.as_str()) {
            out.push(Issue::error(format!("{path}.id"), format!("duplicate rule id {:?}", r.id)));
        }
        if r.owner.is_none() {
            out.push(Issue::error(format!("{path}.owner"), "every close rule needs an owner"));
        }
        if r.expires.is_none() {
            out.push(Issue::error(format!("{path}.expires"), "every close rule needs an expiry date (YYYY-MM-DD)"));
        }
    }
}

/// Validates the routes section.
pub fn validate_routes(routes: &[RouteConfig], cx: &ValidationContext<'_>, out: &mut Vec<Issue>) {
    for (i, r) in routes.iter().enumerate() {
        for (j, name) in r.receivers.iter().enumerate() {
            if !cx.config.receivers.contains_key(name) {
                out.push(Issue::error(format!("routes[{i}].receivers[{j}]"), format!("unknown receiver {name:?}")));
            }
        }
    }
}
