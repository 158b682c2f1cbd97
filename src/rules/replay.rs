//! `secmon rules replay`, the judging part: every close rule evaluated on every alert of a tenant's
//! history **as it was when it arrived**, with the analysts' verdicts as the ground truth. Pure: the
//! history comes in one alert at a time ([`Replay::observe`]), the report goes out ([`Replay::finish`]);
//! listing Graph and storing the result is `secmon::replay`'s work.
//!
//! **As it arrived.** Graph returns an alert's current state only. Replay undoes what people and
//! automation change after an alert arrives: status back to `new`; classification and determination
//! `unknown`; no `assignedTo`, no comments, no `resolvedDateTime`; `lastUpdateDateTime` =
//! `createdDateTime`; and `now` is the alert's `createdDateTime` (so `now.timeOfDayIn(…)` sees the hour
//! it arrived). Everything else (evidence, `systemTags`, `investigationState`) is as Graph has it now:
//! Graph keeps no history of those. The analyst's verdict is kept aside:
//! - `truePositive`: the rule would have hidden a real attack;
//! - `falsePositive` or `informationalExpectedActivity`: the analyst agrees;
//! - anything else, or an alert secmon itself closed (its comment says so; an automated verdict is no
//!   ground truth), counts as unresolved.
//!
//! **Each rule on its own.** Production takes the first matching rule; replay evaluates every rule with
//! an engine compiled from that rule alone — the real [`Engine`] with its guardrails, so "blocked, and
//! why" is what production would do — and reports the alerts two rules both match as overlaps (in
//! production the earlier rule in the file takes them).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::engine::COMMENT_PREFIX;
use super::{Blocked, CloseRuleConfig, Engine, Mode};
use crate::alert::Alert;
use crate::config::{Config, Issue};

/// The hash a replay is stored with: the rule's canonical JSON hash ([`CloseRuleConfig::hash`]) with
/// `mode` set to shadow. Switching a replayed rule to enforce is the point of replaying it, so the mode
/// does not count as a change; every other field does.
pub fn rule_hash(rule: &CloseRuleConfig) -> String {
    CloseRuleConfig { mode: Mode::Shadow, ..rule.clone() }.hash()
}

/// What the analysts said about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Classified `truePositive`.
    TruePositive,
    /// Classified `falsePositive` or `informationalExpectedActivity`.
    Benign,
    /// Not classified (open, or resolved without a classification), or classified by secmon itself.
    Unresolved,
}

/// The verdict an alert carries now, and whether secmon closed it (then its benign classification is
/// secmon's, not an analyst's).
pub fn verdict(raw: &Value) -> (Verdict, bool) {
    let secmon_closed = raw["comments"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["comment"].as_str().is_some_and(|t| t.starts_with(COMMENT_PREFIX))));
    let v = match raw["classification"].as_str() {
        Some("truePositive") => Verdict::TruePositive,
        Some("falsePositive" | "informationalExpectedActivity") if !secmon_closed => Verdict::Benign,
        _ => Verdict::Unresolved,
    };
    (v, secmon_closed)
}

/// The alert as it was when it arrived (see the module docs), and its arrival time; `None` without a
/// readable `createdDateTime`.
pub fn as_arrived(raw: &Value) -> Option<(Value, DateTime<Utc>)> {
    let created = raw["createdDateTime"].as_str()?;
    let at = DateTime::parse_from_rfc3339(created).ok()?.with_timezone(&Utc);
    let mut alert = raw.clone();
    let fields = alert.as_object_mut()?;
    fields.insert("status".into(), json!("new"));
    fields.insert("classification".into(), json!("unknown"));
    fields.insert("determination".into(), json!("unknown"));
    fields.insert("assignedTo".into(), Value::Null);
    fields.insert("comments".into(), json!([]));
    fields.insert("resolvedDateTime".into(), Value::Null);
    fields.insert("lastUpdateDateTime".into(), json!(created));
    Some((alert, at))
}

/// Words for a guardrail, as the report counts them.
pub fn blocked_reason(b: &Blocked) -> String {
    match b {
        Blocked::Internal => "secmon alert".into(),
        Blocked::Resolved => "already resolved".into(),
        Blocked::Severity(s, max) => format!("severity {s} above max_severity {max}"),
        Blocked::Touched(what) => format!("touched ({what})"),
        Blocked::Agent(what) => format!("held by a Microsoft agent ({what})"),
        Blocked::AttackDisruption => "attack disruption".into(),
        Blocked::Unverified(why) => format!("unverified ({why})"),
    }
}

/// An alert the rule would have closed that analysts resolved as `truePositive`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Alert id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// When it arrived.
    pub created: String,
    /// Its severity.
    pub severity: String,
    /// The analysts' determination.
    pub determination: String,
    /// The Defender portal link, when Graph gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A match a guardrail stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BlockedAlert {
    /// Alert id.
    pub id: String,
    /// Why it would not have been closed.
    pub reason: String,
}

/// What replay found for one rule in one tenant: one JSON line, `kind: "replay_rule"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleSummary {
    /// Always `replay_rule`.
    pub kind: &'static str,
    /// Tenant name.
    pub tenant: String,
    /// Rule id.
    pub rule: String,
    /// The rule's mode in the config.
    pub mode: Mode,
    /// [`rule_hash`] of the rule replayed.
    pub hash: String,
    /// Alerts the rule would have closed (matched, no guardrail in the way).
    pub would_close: usize,
    /// Of those, by severity.
    pub by_severity: BTreeMap<String, usize>,
    /// Of those, by `serviceSource`.
    pub by_source: BTreeMap<String, usize>,
    /// Of those, resolved by analysts as `truePositive`: real attacks the rule would have hidden.
    pub analyst_true_positive: usize,
    /// Of those, resolved by analysts as `falsePositive` / `informationalExpectedActivity`.
    pub analyst_benign: usize,
    /// Of those, without an analyst's verdict.
    pub unresolved: usize,
    /// Of the unresolved, alerts secmon itself had closed (no ground truth).
    pub closed_by_secmon: usize,
    /// Matches a guardrail stopped.
    pub blocked: usize,
    /// Those, counted by reason.
    pub blocked_reasons: BTreeMap<String, usize>,
    /// The ids of the true-positive hits.
    pub true_positive_alerts: Vec<String>,
    /// The true-positive hits in detail.
    pub true_positive_hits: Vec<Hit>,
    /// Every blocked match.
    pub blocked_alerts: Vec<BlockedAlert>,
    /// Would-close count per UTC day of arrival (`YYYY-MM-DD`).
    pub per_day: BTreeMap<String, usize>,
    /// Alerts the rule's expression failed on (counted as no match).
    pub errors: usize,
}

/// Alerts two rules both match (before guardrails): one JSON line, `kind: "replay_overlap"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overlap {
    /// Always `replay_overlap`.
    pub kind: &'static str,
    /// Tenant name.
    pub tenant: String,
    /// The two rules, in file order.
    pub rules: [String; 2],
    /// How many alerts both match.
    pub alerts: usize,
    /// Their ids.
    pub alert_ids: Vec<String>,
    /// The rule production applies to them (first in the file).
    pub first_match: String,
}

/// The whole replay of one tenant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// Always `replay_summary`.
    pub kind: &'static str,
    /// Tenant name.
    pub tenant: String,
    /// Start of the history (inclusive).
    pub since: DateTime<Utc>,
    /// End of the history (exclusive).
    pub until: DateTime<Utc>,
    /// Alerts evaluated.
    pub alerts: usize,
    /// Alerts skipped: unreadable, or without a `createdDateTime`.
    pub skipped: usize,
    /// The analysts' verdicts over the whole history.
    pub verdicts: BTreeMap<String, usize>,
    /// Alerts per UTC day of arrival.
    pub per_day: BTreeMap<String, usize>,
    /// One summary per rule, in file order.
    #[serde(skip)]
    pub rules: Vec<RuleSummary>,
    /// Pairs of rules that match the same alerts.
    #[serde(skip)]
    pub overlaps: Vec<Overlap>,
}

/// What is stored after a replay, per tenant and rule (`store::keys::replay`); `check-config` reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayRecord {
    /// Rule id.
    pub rule: String,
    /// [`rule_hash`] of the rule replayed.
    pub hash: String,
    /// When the replay ran.
    pub replayed_at: DateTime<Utc>,
    /// The history's start.
    pub since: DateTime<Utc>,
    /// The history's end.
    pub until: DateTime<Utc>,
    /// Alerts evaluated.
    pub alerts: usize,
    /// Alerts the rule would have closed.
    pub would_close: usize,
    /// Of those, true positives.
    pub analyst_true_positive: usize,
    /// Their ids.
    pub true_positive_alerts: Vec<String>,
}

/// The error of a replay that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// `--rule` names no close rule.
    #[error("no close rule with id {0:?} in the config")]
    UnknownRule(String),
    /// A rule does not compile (the config did not pass check-config).
    #[error("close rule {rule:?} does not compile: {message}")]
    Compile {
        /// Rule id.
        rule: String,
        /// The compiler's findings.
        message: String,
    },
}

struct One {
    engine: Engine,
    summary: RuleSummary,
}

/// A replay in progress: the rules compiled one by one, the tallies so far.
pub struct Replay {
    tenant: String,
    rules: Vec<One>,
    pairs: BTreeMap<(usize, usize), Vec<String>>,
    report: ReplayReport,
}

impl Replay {
    /// Compiles every close rule of `config` (or only `only`), each into an engine of its own.
    pub fn new(
        config: &Config,
        only: Option<&str>,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Replay, ReplayError> {
        if let Some(id) = only
            && !config.close_rules.iter().any(|r| r.id == id)
        {
            return Err(ReplayError::UnknownRule(id.to_string()));
        }
        let mut rules = Vec::new();
        for rule in config.close_rules.iter().filter(|r| only.is_none_or(|id| r.id == id)) {
            let alone = Config { close_rules: vec![rule.clone()], ..Config::default() };
            let engine = Engine::compile(&alone).map_err(|issues| ReplayError::Compile {
                rule: rule.id.clone(),
                message: issues.iter().map(|i| i.message.clone()).collect::<Vec<_>>().join("; "),
            })?;
            let summary = RuleSummary {
                kind: "replay_rule",
                tenant: tenant.to_string(),
                rule: rule.id.clone(),
                mode: rule.mode,
                hash: rule_hash(rule),
                would_close: 0,
                by_severity: BTreeMap::new(),
                by_source: BTreeMap::new(),
                analyst_true_positive: 0,
                analyst_benign: 0,
                unresolved: 0,
                closed_by_secmon: 0,
                blocked: 0,
                blocked_reasons: BTreeMap::new(),
                true_positive_alerts: Vec::new(),
                true_positive_hits: Vec::new(),
                blocked_alerts: Vec::new(),
                per_day: BTreeMap::new(),
                errors: 0,
            };
            rules.push(One { engine, summary });
        }
        Ok(Replay {
            tenant: tenant.to_string(),
            rules,
            pairs: BTreeMap::new(),
            report: ReplayReport {
                kind: "replay_summary",
                tenant: tenant.to_string(),
                since,
                until,
                alerts: 0,
                skipped: 0,
                verdicts: BTreeMap::new(),
                per_day: BTreeMap::new(),
                rules: Vec::new(),
                overlaps: Vec::new(),
            },
        })
    }

    /// Judges one alert of the history, as Graph returns it now.
    pub fn observe(&mut self, raw: &Value) {
        let Some((arrived, at)) = as_arrived(raw) else {
            self.report.skipped += 1;
            return;
        };
        let Ok(alert) = Alert::from_value(arrived) else {
            self.report.skipped += 1;
            return;
        };
        let (verdict, secmon_closed) = verdict(raw);
        let day = at.format("%Y-%m-%d").to_string();
        self.report.alerts += 1;
        *self.report.verdicts.entry(verdict_name(verdict).into()).or_default() += 1;
        *self.report.per_day.entry(day.clone()).or_default() += 1;
        let mut matched = Vec::new();
        for (i, one) in self.rules.iter_mut().enumerate() {
            let decision = one.engine.decide(&alert, &self.tenant, at);
            let s = &mut one.summary;
            s.errors += decision.errors.len().min(1);
            if decision.close.is_none() {
                continue;
            }
            matched.push(i);
            if let Some(b) = &decision.blocked {
                let reason = blocked_reason(b);
                s.blocked += 1;
                *s.blocked_reasons.entry(reason.clone()).or_default() += 1;
                s.blocked_alerts.push(BlockedAlert { id: alert.id.clone(), reason });
                continue;
            }
            s.would_close += 1;
            *s.by_severity.entry(alert.severity().as_str().to_string()).or_default() += 1;
            let source = alert.service_source.as_ref().map_or("unknown", |x| x.as_str()).to_string();
            *s.by_source.entry(source).or_default() += 1;
            *s.per_day.entry(day.clone()).or_default() += 1;
            match verdict {
                Verdict::TruePositive => {
                    s.analyst_true_positive += 1;
                    s.true_positive_alerts.push(alert.id.clone());
                    s.true_positive_hits.push(Hit {
                        id: alert.id.clone(),
                        title: alert.title_or_id().to_string(),
                        created: raw["createdDateTime"].as_str().unwrap_or_default().to_string(),
                        severity: alert.severity().as_str().to_string(),
                        determination: raw["determination"].as_str().unwrap_or("unknown").to_string(),
                        url: alert.alert_web_url.clone(),
                    });
                }
                Verdict::Benign => s.analyst_benign += 1,
                Verdict::Unresolved => {
                    s.unresolved += 1;
                    s.closed_by_secmon += usize::from(secmon_closed);
                }
            }
        }
        for (n, a) in matched.iter().enumerate() {
            for b in &matched[n + 1..] {
                self.pairs.entry((*a, *b)).or_default().push(alert.id.clone());
            }
        }
    }

    /// The report: a summary per rule in file order, and the overlaps.
    pub fn finish(self) -> ReplayReport {
        let Replay { tenant, rules, pairs, mut report } = self;
        let ids: Vec<String> = rules.iter().map(|r| r.summary.rule.clone()).collect();
        report.rules = rules.into_iter().map(|r| r.summary).collect();
        report.overlaps = pairs
            .into_iter()
            .map(|((a, b), alert_ids)| Overlap {
                kind: "replay_overlap",
                tenant: tenant.clone(),
                rules: [ids[a].clone(), ids[b].clone()],
                alerts: alert_ids.len(),
                alert_ids,
                first_match: ids[a].clone(),
            })
            .collect();
        report
    }
}

/// The name of a verdict in reports.
pub fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::TruePositive => "true_positive",
        Verdict::Benign => "benign",
        Verdict::Unresolved => "unresolved",
    }
}

impl ReplayReport {
    /// The record to store for each rule replayed.
    pub fn records(&self, replayed_at: DateTime<Utc>) -> Vec<ReplayRecord> {
        self.rules
            .iter()
            .map(|r| ReplayRecord {
                rule: r.rule.clone(),
                hash: r.hash.clone(),
                replayed_at,
                since: self.since,
                until: self.until,
                alerts: self.alerts,
                would_close: r.would_close,
                analyst_true_positive: r.analyst_true_positive,
                true_positive_alerts: r.true_positive_alerts.clone(),
            })
            .collect()
    }
}

/// What the store holds for one tenant and rule: nothing, a record, or something unreadable.
pub type Stored = Option<Result<ReplayRecord, String>>;

/// The findings about enforce rules that replay does not support: never replayed on a tenant, replayed
/// as another version of the rule, replayed on no alert, or last replay found a true positive. Warnings,
/// or errors with `require_replay: true`. `stored(tenant, rule)` is what the store holds.
pub fn enforcement_issues(config: &Config, stored: &dyn Fn(&str, &str) -> Stored) -> Vec<Issue> {
    let mut out = Vec::new();
    for (i, rule) in config.close_rules.iter().enumerate() {
        if rule.mode != Mode::Enforce {
            continue;
        }
        let hash = rule_hash(rule);
        let id = &rule.id;
        for tenant in &config.tenants {
            let t = &tenant.name;
            let fix = format!("run `secmon rules replay --since 30d --tenant {t} --rule {id}`");
            let problem = match stored(t, id) {
                None => Some(format!("rule {id:?} is in mode: enforce but was never replayed on tenant {t}; {fix}")),
                Some(Err(e)) => {
                    Some(format!("rule {id:?}: the stored replay for tenant {t} is unreadable ({e}); {fix}"))
                }
                Some(Ok(r)) if r.hash != hash => Some(format!(
                    "rule {id:?} changed since its last replay on tenant {t} (replayed {}, hash {} ≠ {}); {fix}",
                    r.replayed_at.format("%Y-%m-%d"),
                    &r.hash[..12.min(r.hash.len())],
                    &hash[..12]
                )),
                Some(Ok(r)) if r.alerts == 0 => Some(format!(
                    "rule {id:?}: its last replay on tenant {t} ({} to {}) had no alerts to judge; replay a longer window",
                    r.since.format("%Y-%m-%d"),
                    r.until.format("%Y-%m-%d")
                )),
                Some(Ok(r)) if r.analyst_true_positive > 0 => Some(format!(
                    "rule {id:?} is in mode: enforce but its last replay on tenant {t} ({} to {}) would have closed {} \
                     alert(s) analysts resolved as truePositive: {}; narrow the rule and replay it again",
                    r.since.format("%Y-%m-%d"),
                    r.until.format("%Y-%m-%d"),
                    r.analyst_true_positive,
                    r.true_positive_alerts.join(", ")
                )),
                Some(Ok(_)) => None,
            };
            if let Some(message) = problem {
                let path = format!("close_rules[{i}].mode");
                out.push(if config.require_replay {
                    Issue::error(path, format!("{message} (require_replay: true)"))
                } else {
                    Issue::warning(path, message)
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_is_judged_as_it_arrived_and_its_verdict_kept_aside() {
        let raw = json!({"id": "a1", "createdDateTime": "2026-11-02T08:00:00.1234567Z",
            "lastUpdateDateTime": "2026-11-03T10:00:00Z", "status": "resolved", "classification": "truePositive",
            "determination": "malware", "assignedTo": "dana@contoso.com", "resolvedDateTime": "2026-11-03T10:00:00Z",
            "comments": [{"comment": "confirmed"}]});
        let (arrived, at) = as_arrived(&raw).unwrap();
        assert_eq!(at, "2026-11-02T08:00:00.1234567Z".parse::<DateTime<Utc>>().unwrap());
        assert_eq!(arrived["status"], "new");
        assert_eq!(arrived["classification"], "unknown");
        assert_eq!(arrived["assignedTo"], Value::Null);
        assert_eq!(arrived["comments"], json!([]));
        assert_eq!(arrived["lastUpdateDateTime"], "2026-11-02T08:00:00.1234567Z");
        assert_eq!(verdict(&raw), (Verdict::TruePositive, false));
        assert!(as_arrived(&json!({"id": "x"})).is_none(), "no createdDateTime");
    }

    #[test]
    fn a_benign_classification_secmon_set_is_no_ground_truth() {
        let by_secmon = json!({"classification": "informationalExpectedActivity",
            "comments": [{"comment": format!("{COMMENT_PREFIX}pentest (…)")}]});
        assert_eq!(verdict(&by_secmon), (Verdict::Unresolved, true));
        let by_analyst = json!({"classification": "falsePositive", "comments": [{"comment": "noise"}]});
        assert_eq!(verdict(&by_analyst), (Verdict::Benign, false));
        assert_eq!(verdict(&json!({"classification": null})), (Verdict::Unresolved, false));
    }

    #[test]
    fn the_stored_hash_ignores_the_mode_only() {
        let rule: CloseRuleConfig = serde_json::from_value(json!({"id": "r", "owner": "o", "expires": "2027-01-01",
            "when": "true", "classification": "falsePositive", "determination": "notMalicious"}))
        .unwrap();
        let enforced = CloseRuleConfig { mode: Mode::Enforce, ..rule.clone() };
        assert_eq!(rule_hash(&rule), rule_hash(&enforced));
        let changed = CloseRuleConfig { when: "false".into(), ..rule.clone() };
        assert_ne!(rule_hash(&rule), rule_hash(&changed));
    }
}
