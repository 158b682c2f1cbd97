//! `secmon rules suggest`: what analysts keep resolving as benign, with a draft close rule for each.
//! Pure: alerts come in one at a time ([`Suggester::observe`]), suggestions go out.
//!
//! Alerts are grouped by detector: `serviceSource` plus `detectorId` (the analytic that raised them), or
//! plus the title when Graph gives no detector. A group is worth a rule when analysts resolved at least
//! `min_benign` of its alerts as `falsePositive` / `informationalExpectedActivity`. A group with a single
//! `truePositive` gets no draft: a rule on the detector alone would have hidden that attack, so it names
//! the alerts instead and leaves narrowing to a person.
//!
//! Drafts use only the safe forms of `docs/rules.md` (exact `==` on `serviceSource`, `detectorId`,
//! `title`: no `matches`, no `exists` over evidence), run in `mode: shadow`, expire in
//! [`DRAFT_LIFETIME_DAYS`], cap the severity at the highest one analysts resolved as benign (never above
//! medium), take the analysts' most common classification and determination, and need an owner.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::replay::{Verdict, verdict};
use crate::alert::Severity;

/// How long a draft rule applies before it must be renewed.
pub const DRAFT_LIFETIME_DAYS: i64 = 90;
/// The owner a draft carries until a person puts theirs.
pub const DRAFT_OWNER: &str = "CHANGE-ME";

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
                let (draft, yaml, no_draft) = if g.true_positive > 0 {
                    let why = format!(
                        "analysts also resolved {} alert(s) of this detector as truePositive ({}): a rule on the detector \
                         alone would have hidden them; narrow it by evidence before writing one",
                        g.true_positive,
                        g.true_positive_alerts.join(", ")
                    );
                    (None, None, Some(why))
                } else {
                    let mut id = format!("suggested-{}", slug(&title));
                    let mut n = 2;
                    while !used_ids.insert(id.clone()) {
                        id = format!("suggested-{}-{n}", slug(&title));
                        n += 1;
                    }
                    let (draft, yaml) = draft(&g, &id, &title, alerts, now);
                    (Some(draft), Some(yaml), None)
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

fn draft(g: &Group, id: &str, title: &str, alerts: usize, now: DateTime<Utc>) -> (Value, String) {
    let mut when = vec![format!("alert.serviceSource == {}", cel_string(&g.service_source))];
    match &g.detector_id {
        Some(d) => when.push(format!("alert.detectorId == {}", cel_string(d))),
        None => when.push(format!("alert.title == {}", cel_string(title))),
    }
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
