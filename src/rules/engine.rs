//! The compiled rules and routes, and the one pure function that decides about an alert.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::expr::{self, Expression};
use super::prefilter::{Clauses, Plan};
use super::{CloseRuleConfig, Mode};
use crate::alert::{Alert, AlertStatus, Severity};
use crate::config::{Config, Issue};
use crate::notify::StatusUpdate;

/// Every close rule and route of a config, compiled once.
pub struct Engine {
    helpers: expr::Helpers,
    /// The literal conjuncts of every rule and route, decided once per alert before CEL runs.
    clauses: Clauses,
    rules: Vec<Rule>,
    routes: Vec<Route>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("rules", &self.rules.len())
            .field("routes", &self.routes.len())
            .field("clauses", &self.clauses.len())
            .finish()
    }
}

struct Rule {
    config: CloseRuleConfig,
    when: Expression,
    plan: Plan,
    hash: String,
}

struct Route {
    index: usize,
    name: Option<String>,
    when: Option<(Expression, Plan)>,
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
        let mut clauses = Clauses::default();
        let mut issues = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in config.close_rules.iter().enumerate() {
            match Expression::compile(&env, &r.when) {
                Ok(when) => {
                    rules.push(Rule { hash: r.hash(), config: r.clone(), plan: clauses.plan(when.ast()), when })
                }
                Err(e) => issues.push(Issue::error(format!("close_rules[{i}].when"), e)),
            }
        }
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let when = match r.when.as_deref().map(|w| Expression::compile(&env, w)).transpose() {
                Ok(w) => w.map(|w| {
                    let plan = clauses.plan(w.ast());
                    (w, plan)
                }),
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
        if issues.is_empty() {
            Ok(Engine { helpers: expr::Helpers::new(env), clauses, rules, routes })
        } else {
            Err(issues)
        }
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
        self.decide_with(alert, tenant, now, true)
    }

    /// [`Engine::decide`], with or without the prefilter (without: every expression is evaluated by
    /// CEL, the reference the prefilter is tested against).
    fn decide_with(&self, alert: &Alert, tenant: &str, now: DateTime<Utc>, prefilter: bool) -> Decision {
        // Bound on first use: an alert whose expressions the prefilter decides is never converted.
        let scope = std::cell::OnceCell::new();
        let cx = || scope.get_or_init(|| self.helpers.scope(alert.raw(), tenant, now));
        let mut memo = self.clauses.memo(alert.raw(), tenant);
        let mut eval = |when: &Expression, plan: &Plan| match prefilter.then(|| plan.decide(&mut memo)).flatten() {
            Some(b) => Ok(b),
            None => when.matches(cx()),
        };
        let mut errors = Vec::new();

        let mut matched: Option<&Rule> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.config.is_active(now) {
                continue;
            }
            match eval(&rule.when, &rule.plan) {
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
                Some((w, plan)) => match eval(w, plan) {
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

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    use super::*;
    use crate::rules::RouteConfig;

    fn now() -> DateTime<Utc> {
        "2026-11-26T12:00:00Z".parse().unwrap()
    }

    fn rule(id: &str, when: &str) -> CloseRuleConfig {
        CloseRuleConfig {
            id: id.into(),
            description: None,
            owner: Some("secops@contoso.com".into()),
            expires: NaiveDate::from_ymd_opt(2027, 1, 31),
            mode: Mode::Enforce,
            when: when.into(),
            classification: "informationalExpectedActivity".into(),
            determination: "securityTesting".into(),
            comment: None,
            max_severity: None,
            max_per_hour: None,
        }
    }

    fn engine(rules: Vec<CloseRuleConfig>, routes: serde_json::Value) -> Engine {
        let routes: Vec<RouteConfig> = serde_json::from_value(routes).unwrap();
        Engine::compile(&Config { close_rules: rules, routes, ..Config::default() }).unwrap()
    }

    fn alert(v: serde_json::Value) -> Alert {
        Alert::from_value(v).unwrap()
    }

    #[test]
    fn a_rule_that_errs_is_reported_as_before_and_one_that_cel_finds_false_is_not() {
        let e = engine(
            vec![
                rule("errs", r#"alert.serviceSource == "mde" && alert.missing == "1""#),
                rule("false-anyway", r#"alert.missing == "1" && alert.serviceSource == "mdi""#),
                rule("matches", r#"alert.serviceSource == "mde""#),
            ],
            json!([{"when": "alert.severity == \"high\"", "receivers": ["soc"]}]),
        );
        let a = alert(json!({"id": "a1", "serviceSource": "mde", "severity": "high", "status": "new"}));
        let d = e.decide(&a, "contoso", now());
        assert_eq!(d, e.decide_with(&a, "contoso", now(), false));
        assert_eq!(d.close.as_ref().map(|m| m.rule_id.as_str()), Some("matches"));
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        assert_eq!(d.errors[0].at, "close_rules[0] (errs)");
        assert!(d.errors[0].message.contains("missing"), "{}", d.errors[0].message);
        assert_eq!(d.routes.len(), 1);
    }

    /// Conjuncts for generated rules: the prefilter's shapes, and others only CEL decides (some err on
    /// some alerts: a missing field, a non-boolean, evidence without an address).
    const CONJUNCTS: &[&str] = &[
        r#"alert.serviceSource == "mde""#,
        r#""mdi" == alert.serviceSource"#,
        r#"alert.serviceSource != "mde""#,
        r#"alert.title.containsIgnoreCase("lab")"#,
        r#"alert.title.containsIgnoreCase("LAB-1")"#,
        r#"alert.title.containsIgnoreCase("")"#,
        r#"alert.title.equalsIgnoreCase("prod")"#,
        r#"alert.title.startsWith("Lab")"#,
        r#"alert.title.endsWith("test")"#,
        r#"alert.title.contains("-1")"#,
        r#"alert.severity in ["high", "medium"]"#,
        r#"tenant == "contoso""#,
        r#"tenant != "contoso""#,
        "has(alert.a.b)",
        "has(alert.a)",
        r#"alert.a.b == "x""#,
        r#"!(alert.a.b == "y")"#,
        r#"alert.evidence.exists(e, e.ipAddress.inCidr("10.0.0.0/8"))"#,
        r#"alert.allEvidence("ip", e, e.ipAddress.inCidr("10.0.0.0/8"))"#,
        "size(alert.title) > 3",
        "alert.title",
        r#"alert.serviceSource == "mde" || alert.title == "PROD""#,
        r#"alert.missing == "1""#,
        "true",
        "false",
    ];

    fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
        &items[rng.random_range(0..items.len())]
    }

    /// A conjunction of one to four conjuncts, in a random grouping.
    fn expression(rng: &mut StdRng) -> String {
        let n = rng.random_range(1..=4);
        let mut e = pick(rng, CONJUNCTS).to_string();
        for _ in 1..n {
            let c = pick(rng, CONJUNCTS);
            e = match rng.random_range(0..3) {
                0 => format!("{e} && {c}"),
                1 => format!("{c} && ({e})"),
                _ => format!("({e}) && ({c})"),
            };
        }
        e
    }

    fn generated_alert(rng: &mut StdRng, i: usize) -> serde_json::Value {
        let mut a = serde_json::Map::new();
        let id = if rng.random_bool(0.1) { format!("secmon-{i}") } else { format!("a-{i}") };
        a.insert("id".into(), json!(id));
        let mut maybe =
            |a: &mut serde_json::Map<String, serde_json::Value>, key: &str, values: &[serde_json::Value]| {
                let v = pick(rng, values).clone();
                if v != json!("<absent>") {
                    a.insert(key.into(), v);
                }
            };
        maybe(&mut a, "serviceSource", &[json!("mde"), json!("mdi"), json!("<absent>"), json!(null), json!(7)]);
        maybe(
            &mut a,
            "title",
            &[json!("Lab run"), json!("lab-1 test"), json!("PROD"), json!(""), json!("<absent>"), json!(null)],
        );
        maybe(&mut a, "severity", &[json!("low"), json!("medium"), json!("high"), json!("<absent>")]);
        maybe(&mut a, "status", &[json!("new"), json!("new"), json!("resolved"), json!("<absent>")]);
        maybe(
            &mut a,
            "a",
            &[json!({"b": "x"}), json!({"b": "y"}), json!({"b": null}), json!({}), json!("text"), json!("<absent>")],
        );
        let ip = |addr: Option<&str>| {
            let mut e = json!({"@odata.type": "#microsoft.graph.security.ipEvidence"});
            if let Some(addr) = addr {
                e["ipAddress"] = json!(addr);
            }
            e
        };
        let evidence: Vec<serde_json::Value> = (0..rng.random_range(0..3))
            .map(|_| ip(*pick(rng, &[Some("10.1.2.3"), Some("198.51.100.1"), None])))
            .collect();
        if rng.random_bool(0.8) {
            a.insert("evidence".into(), json!(evidence));
        }
        serde_json::Value::Object(a)
    }

    #[test]
    fn the_prefilter_decides_exactly_as_cel_alone_over_generated_rules_and_alerts() {
        let mut rng = StdRng::seed_from_u64(17);
        let (mut decisions, mut with_errors, mut closes, mut decided_without_cel) = (0, 0, 0, 0);
        for case in 0..300 {
            let rules: Vec<CloseRuleConfig> = (0..rng.random_range(1..=8))
                .map(|i| {
                    let mut r = rule(&format!("r{i}"), &expression(&mut rng));
                    r.mode = if rng.random_bool(0.5) { Mode::Enforce } else { Mode::Shadow };
                    if rng.random_bool(0.15) {
                        r.expires = NaiveDate::from_ymd_opt(2026, 1, 31);
                    }
                    if rng.random_bool(0.2) {
                        r.max_severity = Some("low".into());
                    }
                    r
                })
                .collect();
            let routes: Vec<serde_json::Value> = (0..rng.random_range(0..=3))
                .map(|i| {
                    let mut r = json!({"receivers": [format!("rx{i}")], "continue": rng.random_bool(0.5)});
                    if rng.random_bool(0.8) {
                        r["when"] = json!(expression(&mut rng));
                    }
                    r
                })
                .collect();
            let e = engine(rules.clone(), json!(routes));
            for i in 0..10 {
                let raw = generated_alert(&mut rng, i);
                let a = alert(raw.clone());
                let tenant = if rng.random_bool(0.8) { "contoso" } else { "fabrikam" };
                let fast = e.decide_with(&a, tenant, now(), true);
                let naive = e.decide_with(&a, tenant, now(), false);
                assert_eq!(
                    fast,
                    naive,
                    "case {case}, alert {raw}, tenant {tenant}\nrules: {:#?}\nroutes: {routes:#?}",
                    rules.iter().map(|r| &r.when).collect::<Vec<_>>()
                );
                decisions += 1;
                with_errors += usize::from(!fast.errors.is_empty());
                closes += usize::from(fast.close.is_some());
                let mut memo = e.clauses.memo(a.raw(), tenant);
                let every = e
                    .rules
                    .iter()
                    .map(|r| &r.plan)
                    .chain(e.routes.iter().filter_map(|r| r.when.as_ref().map(|w| &w.1)));
                decided_without_cel += every.filter(|p| p.decide(&mut memo).is_some()).count();
            }
        }
        // The generator reaches what matters: errors, matches, and expressions the prefilter decides.
        assert!(with_errors > decisions / 10, "{with_errors} of {decisions} decisions had errors");
        assert!(closes > decisions / 10, "{closes} of {decisions} decisions matched a close rule");
        assert!(decided_without_cel > decisions, "{decided_without_cel} expressions decided without CEL");
    }
}
