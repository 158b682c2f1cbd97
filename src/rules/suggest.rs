//! `secmon rules suggest`: what analysts keep resolving as benign, with a draft close rule for each.
//! Pure: alerts come in one at a time ([`Suggester::observe`]), suggestions go out.
//!
//! Alerts are grouped by detector: `serviceSource` plus `detectorId` (the analytic that raised them), or
//! plus the title when Graph gives no detector. A group is worth a rule when analysts resolved at least
//! `min_benign` of its alerts as `falsePositive` / `informationalExpectedActivity`.
//!
//! **Narrowed by evidence.** When every benign alert of a group carries evidence of one kind (IP, device,
//! user, file, URL) and all of it takes few values (at most [`MAX_VALUES`]), the draft also says that
//! *all* evidence of that kind is among those values (`allEvidence`, the safe form), so the rule does not
//! close the same detector firing on another machine. A group with a `truePositive` gets a draft only
//! when that narrowing leaves every true positive out — checked with the real engine on the alerts as they
//! arrived; otherwise it names the alerts and leaves narrowing to a person.
//!
//! Drafts use only the safe forms of `docs/rules.md` (exact `==` on `serviceSource`, `detectorId`,
//! `title`, `allEvidence` with exact values or `hashIn`: no `matches`, no `exists` over evidence), run in
//! `mode: shadow`, expire in
//! [`DRAFT_LIFETIME_DAYS`], cap the severity at the highest one analysts resolved as benign (never above
//! medium), take the analysts' most common classification and determination, and need an owner.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::replay::{Verdict, verdict};
use crate::alert::Severity;

/// How long a draft rule applies before it must be renewed.
pub const DRAFT_LIFETIME_DAYS: i64 = 90;
/// The owner a draft carries until a person puts theirs.
pub const DRAFT_OWNER: &str = "CHANGE-ME";
/// The most distinct values of one evidence kind a draft lists.
pub const MAX_VALUES: usize = 8;
/// True positives kept per group to check a narrowed draft against.
const MAX_KEPT: usize = 50;

/// The evidence kinds a draft narrows by: the kind as `allEvidence` names it, the field path in an item,
/// and whether the values are hashes (compared with `hashIn`).
const NARROWING: &[(&str, &[&str], bool)] = &[
    ("ip", &["ipAddress"], false),
    ("device", &["deviceDnsName"], false),
    ("user", &["userAccount", "accountName"], false),
    ("file", &["fileDetails", "sha256"], true),
    ("url", &["url"], false),
];

/// Per evidence kind of one benign alert: every item's value, or `None` when an item lacks the field.
fn evidence_values(raw: &Value) -> BTreeMap<&'static str, Option<BTreeSet<String>>> {
    let mut out: BTreeMap<&'static str, Option<BTreeSet<String>>> = BTreeMap::new();
    for item in raw["evidence"].as_array().into_iter().flatten() {
        let kind = item["@odata.type"].as_str().unwrap_or("");
        let kind = kind.trim_start_matches('#').trim_start_matches("microsoft.graph.security.");
        let kind = kind.strip_suffix("Evidence").unwrap_or(kind);
        let Some((name, path, _)) = NARROWING.iter().find(|(k, _, _)| k.eq_ignore_ascii_case(kind)) else {
            continue;
        };
        let value = path.iter().try_fold(item, |v, p| v.get(*p)).and_then(Value::as_str).filter(|v| !v.is_empty());
        let entry = out.entry(name).or_insert_with(|| Some(BTreeSet::new()));
        match (entry.as_mut(), value) {
            (Some(set), Some(v)) => {
                set.insert(v.to_string());
            }
            _ => *entry = None,
        }
    }
    out
}

#[derive(Default)]
struct Group {
    service_source: String,
    detector_id: Option<String>,
    titles: BTreeMap<String, usize>,
    benign: usize,
    true_positive: usize,
    unresolved: usize,
    verdicts: BTreeMap<(String, String), usize>,
    max_benign_severity: Option<Severity>,
    true_positive_alerts: Vec<String>,
    /// The true positives as Graph returned them (at most [`MAX_KEPT`]), to check a draft against.
    true_positive_raw: Vec<Value>,
    /// Per evidence kind: how many benign alerts carry it with a value on every item, and the values.
    evidence: BTreeMap<&'static str, (usize, BTreeSet<String>)>,
    first: Option<String>,
    last: Option<String>,
}

/// One detector analysts resolved as benign, with a draft rule: one JSON line, `kind: "rule_suggestion"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// Always `rule_suggestion`.
    pub kind: &'static str,
    /// Tenant name.
    pub tenant: String,
    /// The alerts' `serviceSource`.
    pub service_source: String,
    /// The alerts' `detectorId`, when Graph gave one.
    pub detector_id: Option<String>,
    /// The most common title.
    pub title: String,
    /// Every title seen, most common first (at most 5).
    pub titles: Vec<String>,
    /// Alerts in the window.
    pub alerts: usize,
    /// Resolved as benign by analysts.
    pub benign: usize,
    /// Resolved as `truePositive`.
    pub true_positive: usize,
    /// Not resolved by an analyst.
    pub unresolved: usize,
    /// `classification/determination` → count, among the benign.
    pub verdicts: BTreeMap<String, usize>,
    /// The true positives' ids (then there is no draft).
    pub true_positive_alerts: Vec<String>,
    /// The draft rule as config JSON, in shadow mode.
    pub draft: Option<Value>,
    /// The same as YAML to paste under `close_rules:`.
    pub yaml: Option<String>,
    /// Why there is no draft.
    pub no_draft: Option<String>,
}

/// Suggestions in progress.
pub struct Suggester {
    tenant: String,
    groups: BTreeMap<(String, String), Group>,
}

fn key_of(raw: &Value) -> (String, Option<String>, String) {
    let source = raw["serviceSource"].as_str().unwrap_or("unknown").to_string();
    let detector = raw["detectorId"].as_str().filter(|d| !d.trim().is_empty()).map(str::to_string);
    let title = raw["title"].as_str().unwrap_or("").to_string();
    (source, detector, title)
}

impl Suggester {
    /// An empty suggester for `tenant`.
    pub fn new(tenant: &str) -> Self {
        Self { tenant: tenant.to_string(), groups: BTreeMap::new() }
    }

    /// Counts one alert of the history, as Graph returns it now.
    pub fn observe(&mut self, raw: &Value) {
        let (source, detector, title) = key_of(raw);
        let group_key =
            (source.clone(), detector.clone().map_or_else(|| format!("title:{title}"), |d| format!("id:{d}")));
        let g = self.groups.entry(group_key).or_insert_with(|| Group {
            service_source: source,
            detector_id: detector,
            ..Group::default()
        });
        *g.titles.entry(title).or_default() += 1;
        let created = raw["createdDateTime"].as_str().map(str::to_string);
        if created < g.first || g.first.is_none() {
            g.first = created.clone();
        }
        if created > g.last {
            g.last = created;
        }
        match verdict(raw).0 {
            Verdict::Benign => {
                g.benign += 1;
                let pair = (
                    raw["classification"].as_str().unwrap_or_default().to_string(),
                    raw["determination"].as_str().unwrap_or("notMalicious").to_string(),
                );
                *g.verdicts.entry(pair).or_default() += 1;
                for (kind, values) in evidence_values(raw) {
                    if let Some(values) = values {
                        let (n, all) = g.evidence.entry(kind).or_default();
                        *n += 1;
                        all.extend(values);
                    }
                }
                let severity: Severity = raw["severity"].as_str().unwrap_or("unknown").parse().expect("infallible");
                if g.max_benign_severity.as_ref().is_none_or(|m| severity.rank() > m.rank()) {
                    g.max_benign_severity = Some(severity);
                }
            }
            Verdict::TruePositive => {
                g.true_positive += 1;
                if let Some(id) = raw["id"].as_str() {
                    g.true_positive_alerts.push(id.to_string());
                }
                if g.true_positive_raw.len() < MAX_KEPT {
                    g.true_positive_raw.push(raw.clone());
                }
            }
            Verdict::Unresolved => g.unresolved += 1,
        }
    }

    /// The groups with at least `min_benign` benign verdicts, most benign first, at most `top`; drafts
    /// expire [`DRAFT_LIFETIME_DAYS`] after `now`.
    pub fn finish(self, min_benign: usize, top: usize, now: DateTime<Utc>) -> Vec<Suggestion> {
        let mut groups: Vec<Group> = self.groups.into_values().filter(|g| g.benign >= min_benign.max(1)).collect();
        groups.sort_by(|a, b| b.benign.cmp(&a.benign).then_with(|| a.service_source.cmp(&b.service_source)));
        let mut used_ids = std::collections::HashSet::new();
        groups
            .into_iter()
            .take(top)
            .map(|g| {
                let mut titles: Vec<(String, usize)> = g.titles.clone().into_iter().collect();
                titles.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let title = titles.first().map(|t| t.0.clone()).unwrap_or_default();
                let alerts = g.benign + g.true_positive + g.unresolved;
                let mut id = format!("suggested-{}", slug(&title));
                let mut n = 2;
                while used_ids.contains(&id) {
                    id = format!("suggested-{}-{n}", slug(&title));
                    n += 1;
                }
                let (value, text) = draft(&g, &id, &title, alerts, now);
                let hidden = hides(&value, &g.true_positive_raw, &self.tenant);
                let (draft, yaml, no_draft) = if g.true_positive > 0 && (narrowing(&g).is_empty() || !hidden.is_empty())
                {
                    let why = format!(
                        "analysts also resolved {} alert(s) of this detector as truePositive ({}): {}; narrow it by \
                         evidence before writing one",
                        g.true_positive,
                        g.true_positive_alerts.join(", "),
                        if narrowing(&g).is_empty() {
                            "a rule on the detector alone would have hidden them".to_string()
                        } else {
                            format!(
                                "even narrowed by the benign alerts' evidence a rule would hide {}",
                                hidden.join(", ")
                            )
                        }
                    );
                    (None, None, Some(why))
                } else {
                    used_ids.insert(id);
                    (Some(value), Some(text), None)
                };
                Suggestion {
                    kind: "rule_suggestion",
                    tenant: self.tenant.clone(),
                    service_source: g.service_source.clone(),
                    detector_id: g.detector_id.clone(),
                    title,
                    titles: titles.into_iter().take(5).map(|t| t.0).collect(),
                    alerts,
                    benign: g.benign,
                    true_positive: g.true_positive,
                    unresolved: g.unresolved,
                    verdicts: g.verdicts.iter().map(|((c, d), n)| (format!("{c}/{d}"), *n)).collect(),
                    true_positive_alerts: g.true_positive_alerts.clone(),
                    draft,
                    yaml,
                    no_draft,
                }
            })
            .collect()
    }
}

/// The suggestions as YAML to paste under `close_rules:`: each draft preceded by comment lines that
/// say what analysts decided; a detector without a draft appears as comments only.
pub fn render_yaml(tenant: &str, since: DateTime<Utc>, until: DateTime<Utc>, suggestions: &[Suggestion]) -> String {
    let mut out = format!(
        "# secmon rules suggest: tenant {tenant}, alerts created {} to {}\n",
        since.format("%Y-%m-%d"),
        until.format("%Y-%m-%d")
    );
    if suggestions.is_empty() {
        out.push_str("# no detector was resolved as benign often enough to suggest a rule\n");
        return out;
    }
    out.push_str("# Drafts run in shadow mode: set the owner, `secmon rules replay --rule ID`, then enforce.\n");
    for s in suggestions {
        let verdicts: Vec<String> = s.verdicts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out.push_str(&format!(
            "\n# {} alert(s) from {} detector {}: {} benign ({}), {} true positive, {} unresolved\n",
            s.alerts,
            s.service_source,
            s.detector_id
                .as_deref()
                .map_or_else(|| format!("titled {:?}", s.title), |d| format!("{d} ({:?})", s.title)),
            s.benign,
            verdicts.join(", "),
            s.true_positive,
            s.unresolved
        ));
        match (&s.yaml, &s.no_draft) {
            (Some(yaml), _) => out.push_str(yaml),
            (None, Some(why)) => out.push_str(&format!("# no draft: {why}\n")),
            (None, None) => {}
        }
    }
    out
}

/// A rule id part from a title: lower-case ASCII letters and digits joined by `-`, at most 40 characters.
fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let mut out: String = out.trim_end_matches('-').chars().take(40).collect();
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { "detector".into() } else { out }
}

/// A CEL string literal (a JSON string literal is one).
fn cel_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The `allEvidence` clauses a group's benign alerts support: kinds every benign alert carries, with few
/// values.
fn narrowing(g: &Group) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, path, hashes) in NARROWING {
        let Some((n, values)) = g.evidence.get(kind) else { continue };
        if *n < g.benign || values.is_empty() || values.len() > MAX_VALUES {
            continue;
        }
        let list = values.iter().map(|v| cel_string(v)).collect::<Vec<_>>().join(", ");
        let field = format!("e.{}", path.join("."));
        let test = if *hashes { format!("{field}.hashIn([{list}])") } else { format!("{field} in [{list}]") };
        out.push(format!("alert.allEvidence({}, e, {test})", cel_string(kind)));
    }
    out
}

/// The ids of the true positives `draft` would match (before guardrails), judged as they arrived with
/// the real engine.
fn hides(draft: &Value, true_positives: &[Value], tenant: &str) -> Vec<String> {
    let Ok(rule) = serde_json::from_value::<super::CloseRuleConfig>(draft.clone()) else {
        return vec!["(the draft does not parse)".into()];
    };
    let config = crate::config::Config { close_rules: vec![rule], ..Default::default() };
    let Ok(engine) = super::Engine::compile(&config) else {
        return vec!["(the draft does not compile)".into()];
    };
    true_positives
        .iter()
        .filter_map(|raw| {
            let (arrived, at) = super::replay::as_arrived(raw)?;
            let alert = crate::alert::Alert::from_value(arrived).ok()?;
            engine.decide(&alert, tenant, at).close.is_some().then(|| alert.id.clone())
        })
        .collect()
}

fn draft(g: &Group, id: &str, title: &str, alerts: usize, now: DateTime<Utc>) -> (Value, String) {
    let mut when = vec![format!("alert.serviceSource == {}", cel_string(&g.service_source))];
    match &g.detector_id {
        Some(d) => when.push(format!("alert.detectorId == {}", cel_string(d))),
        None => when.push(format!("alert.title == {}", cel_string(title))),
    }
    when.extend(narrowing(g));
    let when = when.join(" && ");
    let ((classification, determination), _) =
        g.verdicts.iter().max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0))).expect("a benign group has verdicts");
    let max_severity = match g.max_benign_severity.as_ref().map(Severity::rank) {
        Some(1) => "informational",
        Some(2) => "low",
        _ => "medium",
    };
    let span = match (&g.first, &g.last) {
        (Some(a), Some(b)) => format!(" between {} and {}", &a[..10.min(a.len())], &b[..10.min(b.len())]),
        _ => String::new(),
    };
    let description = format!(
        "Analysts resolved {} of {alerts} alerts of {title:?} as benign{span} (drafted by secmon rules suggest)",
        g.benign
    );
    let expires = (now + Duration::days(DRAFT_LIFETIME_DAYS)).format("%Y-%m-%d").to_string();
    let comment = format!("Known benign: {title}");
    let value = json!({
        "id": id,
        "description": description,
        "owner": DRAFT_OWNER,
        "expires": expires,
        "mode": "shadow",
        "when": when,
        "classification": classification,
        "determination": determination,
        "comment": comment,
        "max_severity": max_severity,
    });
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let yaml = format!(
        "  - id: {id}\n    description: {}\n    owner: {DRAFT_OWNER}            # who answers for it: put yours\n    \
         expires: {expires}\n    mode: shadow                 # replay it, then switch to enforce\n    when: '{}'\n    \
         classification: {classification}\n    determination: {determination}\n    comment: {}\n    max_severity: {max_severity}\n",
        q(&description),
        when.replace('\'', "''"),
        q(&comment),
    );
    (value, yaml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_is_narrowed_by_the_benign_alerts_evidence_and_so_leaves_the_true_positive_out() {
        let now: DateTime<Utc> = "2026-11-30T00:00:00Z".parse().unwrap();
        let ip = |a: &str| json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": a});
        let alert = |id: &str, ips: Vec<Value>, classification: &str| {
            json!({"id": id, "serviceSource": "microsoftDefenderForIdentity", "detectorId": "travel",
                "title": "Impossible travel", "severity": "medium", "classification": classification,
                "determination": "confirmedActivity", "createdDateTime": "2026-11-20T10:00:00Z", "evidence": ips})
        };
        let mut s = Suggester::new("contoso");
        for (i, a) in ["192.0.2.1", "192.0.2.2", "192.0.2.1"].iter().enumerate() {
            s.observe(&alert(&format!("b{i}"), vec![ip(a)], "informationalExpectedActivity"));
        }
        s.observe(&alert("tp", vec![ip("192.0.2.1"), ip("198.51.100.9")], "truePositive"));
        let got = s.finish(3, 10, now);
        let draft = got[0].draft.as_ref().unwrap_or_else(|| panic!("{:?}", got[0].no_draft));
        assert_eq!(
            draft["when"],
            r#"alert.serviceSource == "microsoftDefenderForIdentity" && alert.detectorId == "travel" && alert.allEvidence("ip", e, e.ipAddress in ["192.0.2.1", "192.0.2.2"])"#
        );
        assert_eq!(got[0].true_positive, 1, "the true positive is still counted");

        // When the attack came from a benign alert's address too, narrowing cannot separate it: no draft.
        let mut s = Suggester::new("contoso");
        for i in 0..3 {
            s.observe(&alert(&format!("b{i}"), vec![ip("192.0.2.1")], "falsePositive"));
        }
        s.observe(&alert("tp", vec![ip("192.0.2.1")], "truePositive"));
        let got = s.finish(3, 10, now);
        assert!(got[0].draft.is_none());
        assert!(got[0].no_draft.as_deref().unwrap().contains("would hide tp"), "{:?}", got[0].no_draft);
    }

    #[test]
    fn slugs_are_rule_ids() {
        assert_eq!(slug("Suspicious sign-in from 'Tor' (IP 1.2.3.4)"), "suspicious-sign-in-from-tor-ip-1-2-3-4");
        assert_eq!(slug("   "), "detector");
        assert!(crate::config::is_name(&format!("suggested-{}", slug(&"x ".repeat(80)))));
    }

    #[test]
    fn a_detector_with_a_true_positive_gets_no_draft() {
        let now: DateTime<Utc> = "2026-11-30T00:00:00Z".parse().unwrap();
        let mut s = Suggester::new("contoso");
        for i in 0..4 {
            s.observe(
                &json!({"id": format!("b{i}"), "serviceSource": "microsoftDefenderForEndpoint", "detectorId": "d1",
                "title": "Noisy \"tool\"", "severity": "low", "classification": "falsePositive",
                "determination": "notMalicious", "createdDateTime": format!("2026-11-0{}T00:00:00Z", i + 1)}),
            );
        }
        let mut with_tp = Suggester::new("contoso");
        with_tp.observe(&json!({"id": "t1", "serviceSource": "x", "title": "T", "classification": "truePositive"}));
        for i in 0..3 {
            with_tp.observe(&json!({"id": format!("c{i}"), "serviceSource": "x", "title": "T",
                "classification": "informationalExpectedActivity", "determination": "confirmedActivity"}));
        }
        let got = s.finish(3, 10, now);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].benign, 4);
        let draft = got[0].draft.as_ref().unwrap();
        assert_eq!(
            draft["when"],
            r#"alert.serviceSource == "microsoftDefenderForEndpoint" && alert.detectorId == "d1""#
        );
        assert_eq!(draft["max_severity"], "low");
        assert_eq!(draft["mode"], "shadow");
        assert!(got[0].yaml.as_ref().unwrap().contains("mode: shadow"));
        let got = with_tp.finish(3, 10, now);
        assert!(got[0].draft.is_none());
        assert!(got[0].no_draft.as_ref().unwrap().contains("t1"), "{:?}", got[0].no_draft);
    }
}
