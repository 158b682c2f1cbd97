//! What an expression refers to, checked before it ever runs: every variable is bound, every function
//! exists, and every property read straight off `alert` is one alerts_v2 has.
//!
//! CEL here is evaluated dynamically: a misspelt variable, function or property is no syntax error, it
//! fails on every alert at run time, counts as "no match", and a close rule silently stops closing or a
//! route silently stops routing. These checks make such an expression a config error instead, located
//! at its field with the column of the name.
//!
//! What is not checked: the fields of evidence items, comments and dictionaries (they differ by
//! evidence type and are open by design; use `has()` for those), and the types of arguments.

use cel::common::ast::{EntryExpr, Expr, operators};

use super::expr::{ALL_EVIDENCE_ACCU, Expression};

/// The variables every expression may use.
pub const VARIABLES: &[&str] = &["alert", "tenant", "now"];

/// The functions of the CEL standard library and the strings extension that secmon's environment
/// registers, and secmon's own helpers (see `docs/rules.md`).
pub const FUNCTIONS: &[&str] = &[
    // Standard library.
    "size",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "string",
    "int",
    "uint",
    "double",
    "bytes",
    "bool",
    "dyn",
    "type",
    "duration",
    "timestamp",
    "getFullYear",
    "getMonth",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getDayOfYear",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    "hasValue",
    "value",
    "orValue",
    "or",
    "optional.of",
    "optional.none",
    "optional.ofNonZeroValue",
    // The strings extension.
    "charAt",
    "format",
    "indexOf",
    "join",
    "lastIndexOf",
    "lowerAscii",
    "upperAscii",
    "replace",
    "split",
    "substring",
    "trim",
    "reverse",
    "strings.quote",
    // secmon's helpers.
    "inCidr",
    "evidenceOf",
    "pathUnder",
    "hashIn",
    "fullMatch",
    "equalsIgnoreCase",
    "containsIgnoreCase",
    "timeOfDayIn",
    "weekdayIn",
];

/// The properties of an alerts_v2 alert (`microsoft.graph.security.alert`, v1.0), as Graph spells them.
pub const ALERT_PROPERTIES: &[&str] = &[
    "id",
    "providerAlertId",
    "incidentId",
    "status",
    "severity",
    "classification",
    "determination",
    "serviceSource",
    "detectionSource",
    "detectorId",
    "tenantId",
    "alertPolicyId",
    "title",
    "description",
    "recommendedActions",
    "category",
    "assignedTo",
    "alertWebUrl",
    "incidentWebUrl",
    "actorDisplayName",
    "threatDisplayName",
    "threatFamilyName",
    "productName",
    "mitreTechniques",
    "systemTags",
    "categories",
    "createdDateTime",
    "lastUpdateDateTime",
    "resolvedDateTime",
    "firstActivityDateTime",
    "lastActivityDateTime",
    "comments",
    "evidence",
    "additionalData",
    "customDetails",
];

/// Every problem of `expr`: `unknown variable "alrt" at column 1`, …; empty when it is sound.
pub fn references(expr: &Expression) -> Vec<String> {
    let mut walk = Walk { source: expr.source(), bound: Vec::new(), problems: Vec::new() };
    walk.visit(&expr.ast().expr);
    walk.problems
}

struct Walk<'a> {
    source: &'a str,
    /// Names bound by the comprehensions around the current node (`e` in `exists(e, …)`).
    bound: Vec<String>,
    problems: Vec<String>,
}

impl Walk<'_> {
    /// "at column N" for the first place `name` is written, when it can be found in the source.
    fn at(&self, name: &str) -> String {
        match self.source.find(name) {
            Some(i) => format!(" at column {}", self.source[..i].chars().count() + 1),
            None => String::new(),
        }
    }

    fn problem(&mut self, text: String) {
        if !self.problems.contains(&text) {
            self.problems.push(text);
        }
    }

    fn visit(&mut self, e: &Expr) {
        match e {
            Expr::Ident(name) => {
                let known = VARIABLES.contains(&name.as_str())
                    || self.bound.iter().any(|b| b == name)
                    || name == ALL_EVIDENCE_ACCU
                    || name.starts_with('@');
                if !known {
                    let at = self.at(name);
                    self.problem(format!(
                        "unknown variable {name:?}{at}; an expression can use {} (and the names its \
                         comprehensions bind)",
                        VARIABLES.join(", ")
                    ));
                }
            }
            Expr::Call(call) => {
                let operator = call.func_name.starts_with('_')
                    || call.func_name.starts_with('@')
                    || call.func_name.starts_with('!')
                    || call.func_name == operators::CONDITIONAL
                    || call.func_name == operators::INDEX;
                if !operator && !FUNCTIONS.contains(&call.func_name.as_str()) {
                    let at = self.at(&call.func_name);
                    self.problem(format!(
                        "unknown function {:?}{at}; see docs/rules.md for the functions and helpers secmon \
                         has",
                        call.func_name
                    ));
                }
                if let Some(t) = &call.target {
                    self.visit(&t.expr);
                }
                for a in &call.args {
                    self.visit(&a.expr);
                }
            }
            Expr::Select(s) => {
                if let Expr::Ident(var) = &s.operand.expr
                    && var == "alert"
                    && !self.bound.iter().any(|b| b == "alert")
                    && !ALERT_PROPERTIES.contains(&s.field.as_str())
                {
                    let at = self.at(&s.field);
                    let suggestion = closest(&s.field)
                        .map(|c| format!("; did you mean {c:?}?"))
                        .unwrap_or_else(|| "; alerts_v2 has no such property".to_string());
                    self.problem(format!("unknown alert property {:?}{at}{suggestion}", s.field));
                }
                self.visit(&s.operand.expr);
            }
            Expr::Comprehension(c) => {
                self.visit(&c.iter_range.expr);
                self.visit(&c.accu_init.expr);
                self.bound.push(c.iter_var.clone());
                self.bound.push(c.accu_var.clone());
                self.visit(&c.loop_cond.expr);
                self.visit(&c.loop_step.expr);
                self.visit(&c.result.expr);
                self.bound.truncate(self.bound.len() - 2);
            }
            Expr::List(l) => l.elements.iter().for_each(|x| self.visit(&x.expr)),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.visit(&me.key.expr);
                        self.visit(&me.value.expr);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.visit(&f.value.expr);
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
}

/// The alert property `field` is most likely a misspelling of (case or one or two letters off).
fn closest(field: &str) -> Option<&'static str> {
    if let Some(p) = ALERT_PROPERTIES.iter().find(|p| p.eq_ignore_ascii_case(field)) {
        return Some(p);
    }
    ALERT_PROPERTIES
        .iter()
        .map(|p| (distance(&p.to_ascii_lowercase(), &field.to_ascii_lowercase()), *p))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, p)| p)
}

/// Levenshtein distance (small strings only).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::expr::env;

    fn problems(source: &str) -> Vec<String> {
        references(&Expression::compile(&env(), source).unwrap())
    }

    #[test]
    fn sound_expressions_pass() {
        for ok in [
            r#"alert.severity == "low" && tenant == "contoso""#,
            r#"alert.evidence.exists(e, has(e.ipAddress) && e.ipAddress.inCidr("10.0.0.0/8"))"#,
            r#"alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))"#,
            r#"alert.title.lowerAscii().contains("scan") && alert.mitreTechniques.all(t, t.startsWith("T"))"#,
            r#"alert.evidenceOf("file").map(f, f.fileDetails.fileName).exists(n, n.fullMatch("a.*"))"#,
            r#"now.timeOfDayIn("08:00", "18:00", "+01:00") && size(alert.comments) == 0"#,
            r#"has(alert.customDetails) && alert.customDetails.owner == "lab""#,
            r#"alert.title.split(" ").size() > 1 && timestamp(alert.createdDateTime) < now"#,
        ] {
            assert_eq!(problems(ok), Vec::<String>::new(), "{ok}");
        }
    }

    #[test]
    fn misspelt_names_are_found_with_their_column() {
        let p = problems(r#"alrt.severity == "low""#);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("unknown variable \"alrt\" at column 1"), "{p:?}");
        let p = problems(r#"alert.severity == "low" && alert.title.inCIDR("10.0.0.0/8")"#);
        assert!(p[0].contains("unknown function \"inCIDR\" at column 40"), "{p:?}");
        let p = problems(r#"alert.serviceSoruce == "microsoftDefenderForEndpoint""#);
        assert!(
            p[0].contains("unknown alert property \"serviceSoruce\"") && p[0].contains("\"serviceSource\""),
            "{p:?}"
        );
        let p = problems(r#"alert.Severity == "low""#);
        assert!(p[0].contains("did you mean \"severity\""), "{p:?}");
        let p = problems(r#"alert.evidence.exists(e, x.verdict == "malicious")"#);
        assert!(p[0].contains("unknown variable \"x\""), "{p:?}");
        // A name a comprehension bound is not known outside it.
        let p = problems(r#"alert.evidence.exists(e, true) && e.verdict == "x""#);
        assert!(p.iter().any(|m| m.contains("unknown variable \"e\"")), "{p:?}");
    }

    #[test]
    fn every_listed_function_runs_in_the_environment() {
        // A listed name the environment does not have would pass check-config and fail every alert.
        let (helpers, alert) = (crate::rules::expr::Helpers::new(env()), serde_json::json!({"id": "a"}));
        let cx = helpers.scope(&alert, "t", chrono::Utc::now());
        for (source, want) in [
            (r#""abc".indexOf("b") == 1"#, true),
            (r#""a b".split(" ").join("-") == "a-b""#, true),
            (r#""ABC".lowerAscii() == "abc" && "abc".upperAscii() == "ABC""#, true),
            (r#"" x ".trim() == "x" && "abc".substring(1) == "bc" && "abc".charAt(0) == "a""#, true),
            (r#""aXa".replace("X", "b") == "aba" && "abc".lastIndexOf("c") == 2"#, true),
            (r#""abc".reverse() == "cba""#, true),
            (r#"int("3") == 3 && uint(3) == 3u && double(1) == 1.0 && string(1) == "1" && bool("true")"#, true),
            (r#"duration("1h") > duration("1m") && timestamp("2026-01-01T00:00:00Z").getFullYear() == 2026"#, true),
        ] {
            let e = Expression::compile(&env(), source).unwrap();
            assert_eq!(references(&e), Vec::<String>::new(), "{source}");
            assert_eq!(e.matches(&cx), Ok(want), "{source}");
        }
    }
}
