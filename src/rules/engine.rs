//! The compiled rules and routes, and the one pure function that decides about an alert.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::expr::{self, Expression};
use super::{CloseRuleConfig, Mode};
use crate::alert::{Alert, AlertStatus, Severity};
use crate::config::{Config, Issue};
use crate::notify::StatusUpdate;

/// Every close rule and route of a config, compiled once.
pub struct Engine {
    helpers: expr::Helpers,
    rules: Vec<Rule>,
    routes: Vec<Route>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("rules", &self.rules.len()).field("routes", &self.routes.len()).finish()
    }
}

struct Rule {
    config: CloseRuleConfig,
    when: Expression,
    hash: String,
}

struct Route {
    index: usize,
    name: Option<String>,
    when: Option<Expression>,
    receivers: Vec<String>,
    continue_: bool,
    realert: Option<Duration>,
    group_by_incident: Option<Duration>,
    set: Option<StatusUpdate>,
}

/// A close rule that matched an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloseMatch {
    /// The rule's id.
    pub rule_id: String,
    /// Shadow (record only) or enforce (close in Graph).
    pub mode: Mode,
    /// The classification to set (a Graph wire value).
    pub classification: String,
    /// The determination to set (a Graph wire value).
    pub determination: String,
    /// The comment to add in Defender: which rule closed the alert and why.
    pub comment: String,
    /// SHA-256 of the rule's canonical JSON ([`CloseRuleConfig::hash`]).
    pub rule_hash: String,
    /// Who answers for the rule.
    pub owner: String,
    /// The rule's circuit breaker limit per hour.
    pub max_per_hour: u32,
}

/// One route that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteMatch {
    /// Position in `routes` (from 0).
    pub index: usize,
    /// The route's name, when it has one.
    pub name: Option<String>,
}

/// One receiver to tell, with the options of the first matched route that names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The receiver's name.
    pub receiver: String,
    /// Tell again after this long, even when nothing rose (`realert`).
    pub realert: Option<Duration>,
    /// Group alerts of one incident arriving within this window (`group_by_incident`).
    pub group: Option<Duration>,
    /// The matched routes that name this receiver (a route's name, else `routes[i]`), for the message
    /// and the audit trail.
    pub routes: Vec<String>,
}

/// The `set:` of a matched route, applied once every receiver was told.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Update {
    /// The route (its name, else `routes[i]`).
    pub route: String,
    /// What it sets.
    pub set: StatusUpdate,
}

/// An expression that failed on this alert (and so did not match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvalError {
    /// `close_rules[2] (pentest)` or `routes[0]`.
    pub at: String,
    /// What went wrong.
    pub message: String,
}

/// What the pipeline should do with the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A close rule proves it benign: close it (enforce) or record that it would be closed (shadow).
    Close,
    /// Notify the routed receivers.
    Notify,
    /// Nothing to do.
    None,
}

/// The decision about one alert version, with the reason for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// The close rule that matched, if one did (also when a guardrail stops it from closing).
    pub close: Option<CloseMatch>,
    /// Why the matched close rule may not close the alert, if a guardrail stops it.
    pub blocked: Option<Blocked>,
    /// Routes that matched, in order.
    pub routes: Vec<RouteMatch>,
    /// The routed receivers, deduplicated, in order, each with its route's options. They are notified
    /// unless the alert is closed in enforce mode (a closed alert is not notified: the Defender comment
    /// and the audit trail record it) or the decision is [`Outcome::None`].
    pub deliveries: Vec<Delivery>,
    /// The matched routes' `set:` updates, in order; applied when the receivers are notified.
    pub updates: Vec<Update>,
    /// The decision in words.
    pub reason: String,
    /// Rules and routes that failed on this alert.
    pub errors: Vec<EvalError>,
}

impl Decision {
    /// The routed receivers, whether or not this decision notifies them.
    pub fn receivers(&self) -> Vec<&str> {
        self.deliveries.iter().map(|d| d.receiver.as_str()).collect()
    }

    /// The receivers to notify for this decision as it stands.
    pub fn notify(&self) -> Vec<&str> {
        match (&self.outcome, &self.close) {
            (Outcome::Close, Some(m)) if m.mode == Mode::Enforce => Vec::new(),
            (Outcome::None, _) => Vec::new(),
            _ => self.receivers(),
        }
    }

    /// True when this decision closes the alert in Graph: a close rule matched in enforce mode and no
    /// guardrail stopped it.
    pub fn closes(&self) -> bool {
        matches!((&self.outcome, &self.close), (Outcome::Close, Some(m)) if m.mode == Mode::Enforce)
    }

    /// The same decision with its close stopped because `blocked` (a guardrail found outside the
    /// engine, such as Graph's current copy being unreadable): the routed receivers are told instead.
    pub fn blocked_by(mut self, blocked: Blocked) -> Decision {
        if let (Outcome::Close, Some(m)) = (self.outcome, &self.close) {
            self.outcome = if self.deliveries.is_empty() { Outcome::None } else { Outcome::Notify };
            self.reason = format!("rule {:?} matches but {}; not closed", m.rule_id, blocked.words());
            self.blocked = Some(blocked);
        }
        self
    }

    /// The same decision with a matched close rule forced into shadow mode (`SECMON_CLOSE=off`).
    pub fn into_shadow(mut self, why: &str) -> Decision {
        if let (Outcome::Close, Some(m)) = (self.outcome, self.close.as_mut())
            && m.mode == Mode::Enforce
        {
            m.mode = Mode::Shadow;
            self.reason = format!("{} [forced to shadow: {why}]", self.reason);
        }
        self
    }

    /// The line `secmon rules test` prints for this decision.
    pub fn test_line(&self, alert_id: &str) -> Value {
        let decision = match self.outcome {
            Outcome::Close => "close",
            Outcome::Notify => "notify",
            Outcome::None => "none",
        };
        let mode = match (self.outcome, &self.close) {
            (Outcome::Close, Some(m)) => serde_json::to_value(m.mode).expect("mode serializes"),
            _ => Value::Null,
        };
        serde_json::json!({
            "kind": "decision",
            "alert": alert_id,
            "decision": decision,
            "rule": self.close.as_ref().map(|m| m.rule_id.as_str()),
            "mode": mode,
            "receivers": self.notify(),
            "reason": self.reason,
        })
    }
}

impl Engine {
    /// Compiles every close rule and route of `config`; each problem is an [`Issue`] at its field.
    pub fn compile(config: &Config) -> Result<Engine, Vec<Issue>> {
        let env = expr::env();
        let mut issues = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in config.close_rules.iter().enumerate() {
            match Expression::compile(&env, &r.when) {
                Ok(when) => rules.push(Rule { hash: r.hash(), config: r.clone(), when }),
                Err(e) => issues.push(Issue::error(format!("close_rules[{i}].when"), e)),
            }
        }
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let when = match r.when.as_deref().map(|w| Expression::compile(&env, w)).transpose() {
                Ok(w) => w,
                Err(e) => {
                    issues.push(Issue::error(format!("routes[{i}].when"), e));
                    continue;
                }
            };
            routes.push(Route {
                index: i,
                name: r.name.clone(),
                when,
                receivers: r.receivers.clone(),
                continue_: r.continue_,
                realert: r.realert,
                group_by_incident: r.group_by_incident,
                set: r.set.clone(),
            });
        }
        if issues.is_empty() { Ok(Engine { helpers: expr::Helpers::new(env), rules, routes }) } else { Err(issues) }
    }

    /// How many close rules and routes were compiled.
    pub fn len(&self) -> (usize, usize) {
        (self.rules.len(), self.routes.len())
    }

    /// True when there is neither a close rule nor a route.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.routes.is_empty()
    }

    /// Decides about one alert version: the first active close rule that matches (file order), then the
    /// routes (first match wins unless `continue: true`; a route without `when` matches everything).
    ///
    /// The expressions see the alert exactly as Graph sent it ([`Alert::raw`]); the guardrails read its
    /// typed fields. Pure: `now` is an argument.
    pub fn decide(&self, alert: &Alert, tenant: &str, now: DateTime<Utc>) -> Decision {
        // Bound on first use: a config whose routes have no `when` and no close rule never converts it.
        let scope = std::cell::OnceCell::new();
        let cx = || scope.get_or_init(|| self.helpers.scope(alert.raw(), tenant, now));
        let mut errors = Vec::new();

        let mut matched: Option<&Rule> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.config.is_active(now) {
                continue;
            }
            match rule.when.matches(cx()) {
                Ok(true) => {
                    matched = Some(rule);
                    break;
                }
                Ok(false) => {}
                Err(message) => {
                    errors.push(EvalError { at: format!("close_rules[{i}] ({})", rule.config.id), message })
                }
            }
        }

        let mut routes = Vec::new();
        let mut deliveries: Vec<Delivery> = Vec::new();
        let mut updates = Vec::new();
        for route in &self.routes {
            let hit = match &route.when {
                None => true,
                Some(w) => match w.matches(cx()) {
                    Ok(b) => b,
                    Err(message) => {
                        errors.push(EvalError { at: route_label(route), message });
                        false
                    }
                },
            };
            if hit {
                routes.push(RouteMatch { index: route.index, name: route.name.clone() });
                let label = route.name.clone().unwrap_or_else(|| format!("routes[{}]", route.index));
                for r in &route.receivers {
                    match deliveries.iter_mut().find(|d| &d.receiver == r) {
                        Some(d) => d.routes.push(label.clone()),
                        None => deliveries.push(Delivery {
                            receiver: r.clone(),
                            realert: route.realert,
                            group: route.group_by_incident,
                            routes: vec![label.clone()],
                        }),
                    }
                }
                if let Some(set) = &route.set {
                    updates.push(Update { route: label, set: set.clone() });
                }
                if !route.continue_ {
                    break;
                }
            }
        }

        let routed = if routes.is_empty() {
            "no route matched".to_string()
        } else {
            format!(
                "routed by {}",
                routes.iter().map(|r| route_name(r.index, r.name.as_deref())).collect::<Vec<_>>().join(", ")
            )
        };
        let blocked = matched.and_then(|rule| guardrail(alert, &rule.config));
        let (outcome, close, mut reason) = match matched {
            None => {
                let outcome = if deliveries.is_empty() { Outcome::None } else { Outcome::Notify };
                (outcome, None, format!("no close rule matched; {routed}"))
            }
            Some(rule) => {
                let m = close_match(rule, alert);
                let id = &rule.config.id;
                match &blocked {
                    Some(Blocked::Resolved) => (
                        // Our own close comes back as a new, resolved version: saying nothing is what
                        // keeps a closed alert from turning into a notification.
                        Outcome::None,
                        Some(m),
                        format!("rule {id:?} matches but the alert is already resolved; nothing to do"),
                    ),
                    Some(blocked) => {
                        let outcome = if deliveries.is_empty() { Outcome::None } else { Outcome::Notify };
                        (outcome, Some(m), format!("rule {id:?} matches but {}; not closed, {routed}", blocked.words()))
                    }
                    None => {
                        let why = rule.config.comment.as_deref().or(rule.config.description.as_deref()).unwrap_or("");
                        let verb = match m.mode {
                            Mode::Enforce => "close".to_string(),
                            Mode::Shadow => format!("shadow mode: would close; {routed}"),
                        };
                        let why = if why.is_empty() { String::new() } else { format!(" ({why})") };
                        (
                            Outcome::Close,
                            Some(m.clone()),
                            format!("rule {id:?} matched{why}: {verb} as {}/{}", m.classification, m.determination),
                        )
                    }
                }
            }
        };
        for e in &errors {
            reason.push_str(&format!("; {} failed on this alert and counts as no match: {}", e.at, e.message));
        }
        Decision { outcome, close, blocked, routes, deliveries, updates, reason, errors }
    }
}

fn route_label(route: &Route) -> String {
    route_name(route.index, route.name.as_deref())
}

fn route_name(index: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("routes[{index}] ({n})"),
        None => format!("routes[{index}]"),
    }
}

fn close_match(rule: &Rule, alert: &Alert) -> CloseMatch {
    let c = &rule.config;
    let why = c.comment.as_deref().or(c.description.as_deref()).unwrap_or("known-benign rule");
    let owner = c.owner.clone().unwrap_or_default();
    let comment = format!(
        "{COMMENT_PREFIX}{} ({why}). Classification {}, determination {}. Rule owner: {owner}. \
         Rule hash {}. Alert version {}.",
        c.id,
        c.classification,
        c.determination,
        &rule.hash[..12],
        if alert.version().is_empty() { "unknown" } else { alert.version() },
    );
    CloseMatch {
        rule_id: c.id.clone(),
        mode: c.mode,
        classification: c.classification.clone(),
        determination: c.determination.clone(),
        comment,
        rule_hash: rule.hash.clone(),
        owner,
        max_per_hour: c.max_per_hour(),
    }
}

/// Why a matched close rule may not close an alert: the guardrails that need no state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocked {
    /// A secmon alert (`secmon-` id), which is never closed in Graph.
    Internal,
    /// Already resolved: nothing to do.
    Resolved,
    /// The alert's severity is above the rule's `max_severity` (alert severity, limit).
    Severity(#[serde(serialize_with = "as_str")] Severity, #[serde(serialize_with = "as_str")] Severity),
    /// A person or another automation has touched the alert (what they did): a status other than
    /// `new`, an owner, a classification or determination, or a comment secmon did not write.
    Touched(String),
    /// One of Microsoft's own agents holds the alert (the Security Copilot triage agents assign alerts
    /// to themselves and tag them "Agent").
    Agent(String),
    /// The alert belongs to an automatic attack disruption ("Attack Disruption" tag).
    AttackDisruption,
    /// Graph's current copy of the alert could not be read (why), so nothing proves it is still the
    /// alert the rule matched.
    Unverified(String),
}

/// The words every comment secmon writes begins with; a comment without them is a person's (or
/// another tool's), and the alert is theirs.
pub const COMMENT_PREFIX: &str = "Closed by secmon rule ";

fn as_str<S: serde::Serializer>(s: &Severity, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

impl Blocked {
    fn words(&self) -> String {
        match self {
            Blocked::Internal => "it is a secmon alert (secmon- id), which is never closed in Graph".into(),
            Blocked::Resolved => "it is already resolved".into(),
            Blocked::Severity(s, max) => format!("severity {s} is above the rule's max_severity {max}"),
            Blocked::Touched(what) => format!("a person or another automation has touched it ({what})"),
            Blocked::Agent(what) => format!("one of Microsoft's agents holds it ({what})"),
            Blocked::AttackDisruption => "it belongs to an automatic attack disruption".into(),
            Blocked::Unverified(why) => format!("Graph's current copy could not be read ({why})"),
        }
    }
}

/// Whether anyone but secmon has a hand on the alert: Microsoft's agents and attack disruption first
/// (the most specific reason), then any sign of a person's triage. Fails safe: a status secmon does
/// not know (an evolvable value) counts as touched.
fn held_by_others(alert: &Alert) -> Option<Blocked> {
    let tags = alert.system_tags.as_deref().unwrap_or_default();
    let tagged = |name: &str| tags.iter().any(|t| t.trim().eq_ignore_ascii_case(name));
    if tagged("Attack Disruption") {
        return Some(Blocked::AttackDisruption);
    }
    let owner = alert.assigned_to.as_deref().map(str::trim).filter(|a| !a.is_empty());
    if tagged("Agent") {
        return Some(Blocked::Agent(format!(
            "tagged Agent{}",
            owner.map(|o| format!(", assigned to {o}")).unwrap_or_default()
        )));
    }
    if let Some(owner) = owner {
        if owner.to_ascii_lowercase().contains("agent") {
            return Some(Blocked::Agent(format!("assigned to {owner}")));
        }
        return Some(Blocked::Touched(format!("assigned to {owner}")));
    }
    match alert.status() {
        AlertStatus::New => {}
        other => return Some(Blocked::Touched(format!("status {}", other.as_str()))),
    }
    if let Some(c) = alert.classification.as_ref().filter(|c| c.as_str() != "unknown") {
        return Some(Blocked::Touched(format!("classified {}", c.as_str())));
    }
    if let Some(d) = alert.determination.as_ref().filter(|d| d.as_str() != "unknown") {
        return Some(Blocked::Touched(format!("determination {}", d.as_str())));
    }
    let comments = alert.comments.as_deref().unwrap_or_default();
    if let Some(c) = comments.iter().find(|c| !c.comment.as_deref().unwrap_or("").starts_with(COMMENT_PREFIX)) {
        let by = c.created_by_display_name.as_deref().unwrap_or("someone");
        return Some(Blocked::Touched(format!("commented by {by}")));
    }
    None
}

fn guardrail(alert: &Alert, rule: &CloseRuleConfig) -> Option<Blocked> {
    if alert.id.starts_with("secmon-") {
        return Some(Blocked::Internal);
    }
    if alert.status() == AlertStatus::Resolved {
        return Some(Blocked::Resolved);
    }
    if let Some(blocked) = held_by_others(alert) {
        return Some(blocked);
    }
    // An unknown severity ranks highest, so it never slips under a limit.
    let (severity, max) = (alert.severity(), rule.max_severity());
    if severity.rank() > max.rank() {
        return Some(Blocked::Severity(severity, max));
    }
    None
}
