//! The prefilter: a rule's (or route's) top-level `&&` conjuncts of a few literal shapes, decided in
//! Rust on the alert's JSON, each shared by every expression that repeats it and computed at most once
//! per decision.
//!
//! Recognised conjuncts ([`Clause`]), where `x` is `alert.a.b…` (field selections from `alert`) or
//! `tenant`, and every argument is a string literal: `x == "s"` (either side), `x != "s"`,
//! `x in ["s", …]`, `x.containsIgnoreCase("s")`, `x.equalsIgnoreCase("s")`, `x.contains("s")`,
//! `x.startsWith("s")`, `x.endsWith("s")`, `has(alert.a.b)`, and `!` of any of them.
//!
//! A clause is decided only when CEL's answer is certain: `x` is there and is a string (for `has`, its
//! parent is a map); otherwise it is unknown and the expression is evaluated by CEL as before, so a
//! missing field or a wrong type is still the error it always was. An expression is decided without
//! CEL when one of its clauses is false: CEL's `&&` is false as soon as either side is false, whatever
//! the other side is (an error, a non-boolean), so no conjunct elsewhere in the chain can change that
//! answer; or when every conjunct is a clause and all are true.

use std::collections::HashMap;

use cel::IdedExpr;
use cel::common::ast::{Expr, LiteralValue, operators};
use serde_json::Value as Json;

/// What a clause reads: a path of fields from the alert, or the tenant's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Operand {
    Alert(Vec<String>),
    Tenant,
}

/// What a clause asks of its operand's string (or, for `has`, of the map it names).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Test {
    Eq(String),
    /// Sorted and deduplicated.
    In(Vec<String>),
    /// The literal in ASCII lower case, looked for in the operand's ASCII lower case (computed once per
    /// decision): the same answer as comparing byte windows ignoring ASCII case, found faster.
    ContainsIgnoreCase(String),
    EqualsIgnoreCase(String),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    /// `has(x.field)`: the operand is `x`.
    Has(String),
}

/// One recognised conjunct.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Clause {
    operand: usize,
    test: Test,
    negated: bool,
}

/// Every distinct operand and clause of an engine's expressions.
#[derive(Debug, Default)]
pub(crate) struct Clauses {
    operands: Vec<Operand>,
    clauses: Vec<Clause>,
    operand_ids: HashMap<Operand, usize>,
    clause_ids: HashMap<Clause, usize>,
}

/// How one expression is prefiltered: the clauses among its conjuncts, and whether they are all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    clauses: Vec<usize>,
    complete: bool,
}

impl Plan {
    /// The expression's value when the clauses decide it, else `None` (evaluate it with CEL).
    pub(crate) fn decide(&self, memo: &mut Memo<'_>) -> Option<bool> {
        let mut all_true = self.complete;
        for &c in &self.clauses {
            match memo.clause(c) {
                Some(false) => return Some(false),
                Some(true) => {}
                None => all_true = false,
            }
        }
        all_true.then_some(true)
    }

    /// How many of the expression's conjuncts are clauses (for tests and lint).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clauses.len()
    }

    /// True when every conjunct is a clause.
    #[cfg(test)]
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }
}

impl Clauses {
    /// The plan of one compiled expression, its clauses added to the shared set.
    pub(crate) fn plan(&mut self, ast: &IdedExpr) -> Plan {
        let mut conjuncts = Vec::new();
        flatten_and(ast, &mut conjuncts);
        let mut plan = Plan { clauses: Vec::new(), complete: true };
        for c in conjuncts {
            match recognise(c) {
                Some((operand, test, negated)) => {
                    let operand = self.operand_id(operand);
                    let id = self.clause_id(Clause { operand, test, negated });
                    if !plan.clauses.contains(&id) {
                        plan.clauses.push(id);
                    }
                }
                None => plan.complete = false,
            }
        }
        plan
    }

    fn operand_id(&mut self, operand: Operand) -> usize {
        if let Some(&id) = self.operand_ids.get(&operand) {
            return id;
        }
        self.operands.push(operand.clone());
        self.operand_ids.insert(operand, self.operands.len() - 1);
        self.operands.len() - 1
    }

    fn clause_id(&mut self, clause: Clause) -> usize {
        if let Some(&id) = self.clause_ids.get(&clause) {
            return id;
        }
        self.clauses.push(clause.clone());
        self.clause_ids.insert(clause, self.clauses.len() - 1);
        self.clauses.len() - 1
    }

    /// How many distinct clauses the expressions share.
    pub(crate) fn len(&self) -> usize {
        self.clauses.len()
    }

    /// A fresh memo for one decision about `alert` (its JSON) in `tenant`.
    pub(crate) fn memo<'a>(&'a self, alert: &'a Json, tenant: &'a str) -> Memo<'a> {
        Memo {
            clauses: self,
            alert,
            tenant,
            operands: vec![None; self.operands.len()],
            lowered: vec![None; self.operands.len()],
            states: vec![State::Unset; self.clauses.len()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unset,
    False,
    True,
    Unknown,
}

/// An operand's value in one alert: a string, a JSON value that is not one, or not reachable (a
/// missing field, or a field of something that is not a map).
#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    Str(&'a str),
    Other(&'a Json),
    Unreachable,
}

/// The clauses' values for one alert, each computed when first asked for.
pub(crate) struct Memo<'a> {
    clauses: &'a Clauses,
    alert: &'a Json,
    tenant: &'a str,
    operands: Vec<Option<Found<'a>>>,
    /// Operands' strings in ASCII lower case, for `containsIgnoreCase`.
    lowered: Vec<Option<String>>,
    states: Vec<State>,
}

impl<'a> Memo<'a> {
    fn clause(&mut self, id: usize) -> Option<bool> {
        let state = match self.states[id] {
            State::Unset => {
                let clauses = self.clauses;
                let clause = &clauses.clauses[id];
                let found = self.operand(clause.operand);
                let state = match test(&clause.test, found, &mut self.lowered[clause.operand]) {
                    Some(b) if b != clause.negated => State::True,
                    Some(_) => State::False,
                    None => State::Unknown,
                };
                self.states[id] = state;
                state
            }
            state => state,
        };
        match state {
            State::True => Some(true),
            State::False => Some(false),
            State::Unknown | State::Unset => None,
        }
    }

    fn operand(&mut self, id: usize) -> Found<'a> {
        if let Some(found) = self.operands[id] {
            return found;
        }
        let found = match &self.clauses.operands[id] {
            Operand::Tenant => Found::Str(self.tenant),
            Operand::Alert(path) => {
                let mut v = self.alert;
                let mut reachable = true;
                for field in path {
                    match v.as_object().and_then(|m| m.get(field)) {
                        Some(next) => v = next,
                        None => {
                            reachable = false;
                            break;
                        }
                    }
                }
                match v {
                    _ if !reachable => Found::Unreachable,
                    Json::String(s) => Found::Str(s),
                    other => Found::Other(other),
                }
            }
        };
        self.operands[id] = Some(found);
        found
    }
}

/// A clause's value on `found`, when CEL's is certain; `lowered` keeps the operand's ASCII lower case
/// once a clause needed it.
fn test(test: &Test, found: Found<'_>, lowered: &mut Option<String>) -> Option<bool> {
    if let Test::Has(field) = test {
        return match found {
            Found::Other(Json::Object(m)) => Some(m.contains_key(field)),
            _ => None,
        };
    }
    let Found::Str(s) = found else {
        return None;
    };
    Some(match test {
        Test::Eq(lit) => s == lit,
        Test::In(lits) => lits.binary_search_by(|l| l.as_str().cmp(s)).is_ok(),
        Test::ContainsIgnoreCase(lit) => lowered.get_or_insert_with(|| s.to_ascii_lowercase()).contains(lit.as_str()),
        Test::EqualsIgnoreCase(lit) => s.eq_ignore_ascii_case(lit),
        Test::Contains(lit) => s.contains(lit.as_str()),
        Test::StartsWith(lit) => s.starts_with(lit.as_str()),
        Test::EndsWith(lit) => s.ends_with(lit.as_str()),
        Test::Has(_) => unreachable!("handled above"),
    })
}

/// The top-level conjuncts of `e`, in order: `a && (b && c)` is `[a, b, c]`.
fn flatten_and<'e>(e: &'e IdedExpr, out: &mut Vec<&'e IdedExpr>) {
    match &e.expr {
        Expr::Call(call)
            if call.func_name == operators::LOGICAL_AND && call.target.is_none() && call.args.len() == 2 =>
        {
            flatten_and(&call.args[0], out);
            flatten_and(&call.args[1], out);
        }
        _ => out.push(e),
    }
}

/// The clause a conjunct spells, if it is one of the recognised shapes.
fn recognise(e: &IdedExpr) -> Option<(Operand, Test, bool)> {
    let Expr::Call(call) = &e.expr else {
        // `has(alert.a.b)` is a test selection.
        if let Expr::Select(s) = &e.expr
            && s.test
        {
            return Some((alert_path(&s.operand)?, Test::Has(s.field.clone()), false));
        }
        return None;
    };
    match (call.func_name.as_str(), call.target.as_deref(), call.args.as_slice()) {
        (operators::LOGICAL_NOT, None, [inner]) => {
            let (operand, test, negated) = recognise(inner)?;
            Some((operand, test, !negated))
        }
        (operators::EQUALS | operators::NOT_EQUALS, None, [a, b]) => {
            let negated = call.func_name == operators::NOT_EQUALS;
            let (operand, lit) = match (operand(a), string(b)) {
                (Some(o), Some(l)) => (o, l),
                _ => (operand(b)?, string(a)?),
            };
            Some((operand, Test::Eq(lit), negated))
        }
        (operators::IN, None, [a, b]) => {
            let Expr::List(list) = &b.expr else { return None };
            if !list.optional_indices.is_empty() {
                return None;
            }
            let mut lits = list.elements.iter().map(string).collect::<Option<Vec<_>>>()?;
            lits.sort();
            lits.dedup();
            Some((operand(a)?, Test::In(lits), false))
        }
        (method, Some(target), [arg]) => {
            let lit = string(arg)?;
            let test = match method {
                "containsIgnoreCase" => Test::ContainsIgnoreCase(lit.to_ascii_lowercase()),
                "equalsIgnoreCase" => Test::EqualsIgnoreCase(lit),
                "contains" => Test::Contains(lit),
                "startsWith" => Test::StartsWith(lit),
                "endsWith" => Test::EndsWith(lit),
                _ => return None,
            };
            Some((operand(target)?, test, false))
        }
        _ => None,
    }
}

/// `alert.a.b…` or `tenant`.
fn operand(e: &IdedExpr) -> Option<Operand> {
    match &e.expr {
        Expr::Ident(name) if name == "tenant" => Some(Operand::Tenant),
        _ => alert_path(e),
    }
}

/// `alert` followed by zero or more field selections.
fn alert_path(e: &IdedExpr) -> Option<Operand> {
    let mut path = Vec::new();
    let mut e = e;
    loop {
        match &e.expr {
            Expr::Ident(name) if name == "alert" => break,
            Expr::Select(s) if !s.test => {
                path.push(s.field.clone());
                e = &s.operand;
            }
            _ => return None,
        }
    }
    path.reverse();
    Some(Operand::Alert(path))
}

fn string(e: &IdedExpr) -> Option<String> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::expr::{Expression, env};
    use serde_json::json;

    fn plan(clauses: &mut Clauses, source: &str) -> Plan {
        let e = Expression::compile(&env(), source).unwrap();
        clauses.plan(e.ast())
    }

    /// The plan's value for `alert` (tenant `contoso`).
    fn decide(source: &str, alert: serde_json::Value) -> Option<bool> {
        let mut clauses = Clauses::default();
        let p = plan(&mut clauses, source);
        let mut memo = clauses.memo(&alert, "contoso");
        p.decide(&mut memo)
    }

    #[test]
    fn conjuncts_of_the_literal_shapes_are_clauses_and_the_rest_is_left_to_cel() {
        let mut clauses = Clauses::default();
        let p = plan(
            &mut clauses,
            r#"alert.serviceSource == "mde" && alert.title.containsIgnoreCase("lab") && alert.evidence.exists(e, has(e.ipAddress))"#,
        );
        assert_eq!((p.len(), p.is_complete()), (2, false));
        let shapes = [
            r#""mde" == alert.serviceSource"#,
            r#"alert.a.b != "x""#,
            r#"alert.severity in ["high", "medium", "high"]"#,
            r#"tenant == "contoso""#,
            r#"alert.title.equalsIgnoreCase("x")"#,
            r#"alert.title.startsWith("x")"#,
            r#"alert.title.endsWith("x")"#,
            r#"alert.title.contains("x")"#,
            "has(alert.a.b)",
            "has(alert.a)",
            r#"!(alert.title == "x")"#,
        ];
        for source in shapes {
            let p = plan(&mut clauses, source);
            assert_eq!((p.len(), p.is_complete()), (1, true), "{source}");
        }
        // Not clauses: a non-literal argument, a variable that is not alert or tenant, `||`, a number.
        for source in [
            "alert.a == alert.b",
            r#"alert.severity in ["high", alert.x]"#,
            r#"now == "x""#,
            r#"alert.a == "x" || alert.b == "y""#,
            "alert.count == 3",
            r#"alert.title.matches("x")"#,
            r#"alert.evidence.exists(e, e.x == "y")"#,
        ] {
            let p = plan(&mut clauses, source);
            assert_eq!((p.len(), p.is_complete()), (0, false), "{source}");
        }
    }

    #[test]
    fn a_clause_repeated_by_many_expressions_is_one_clause_computed_once() {
        let mut clauses = Clauses::default();
        let a = plan(&mut clauses, r#"alert.serviceSource == "mde" && alert.title.containsIgnoreCase("a")"#);
        let b = plan(&mut clauses, r#"alert.serviceSource == "mde" && alert.title.containsIgnoreCase("b")"#);
        let c = plan(&mut clauses, r#"alert.severity in ["low", "high"] && alert.serviceSource == "mde""#);
        let d = plan(&mut clauses, r#"alert.severity in ["high", "low", "low"]"#);
        // serviceSource == "mde" once, two containsIgnoreCase, one `in` (the same set, however written).
        assert_eq!(clauses.len(), 4);
        assert_eq!(a.clauses[0], b.clauses[0]);
        assert_eq!(c.clauses[1], a.clauses[0]);
        assert_eq!(c.clauses[0], d.clauses[0]);
        // ASCII case does not matter to containsIgnoreCase, so it makes no second clause either.
        let upper = plan(&mut clauses, r#"alert.title.containsIgnoreCase("A")"#);
        assert_eq!((upper.clauses[0], clauses.len()), (a.clauses[1], 4));
        let alert = json!({"serviceSource": "mde", "title": "B", "severity": "high"});
        let mut memo = clauses.memo(&alert, "contoso");
        assert_eq!(a.decide(&mut memo), Some(false));
        assert_eq!(memo.states[a.clauses[0]], State::True);
        assert_eq!(b.decide(&mut memo), Some(true));
        assert_eq!(c.decide(&mut memo), Some(true));
        assert_eq!(d.decide(&mut memo), Some(true));
        // Three operands were read, each once: serviceSource, title and severity.
        assert_eq!(memo.operands.iter().filter(|o| o.is_some()).count(), 3);
    }

    #[test]
    fn only_a_certain_answer_decides() {
        let rule = r#"alert.serviceSource == "mde" && alert.title.containsIgnoreCase("lab")"#;
        let cases: Vec<(&str, serde_json::Value, Option<bool>)> = vec![
            ("both true", json!({"serviceSource": "mde", "title": "a LAB b"}), Some(true)),
            ("first false", json!({"serviceSource": "x", "title": "lab"}), Some(false)),
            ("second false", json!({"serviceSource": "mde", "title": "prod"}), Some(false)),
            // CEL says false too (false && error is false), whichever side errs.
            ("first missing, second false", json!({"title": "prod"}), Some(false)),
            ("first a number, second false", json!({"serviceSource": 3, "title": "prod"}), Some(false)),
            // CEL errs or answers something only it can tell: left to CEL.
            ("first missing, second true", json!({"title": "lab"}), None),
            ("second null", json!({"serviceSource": "mde", "title": null}), None),
            ("nothing", json!({}), None),
        ];
        for (name, alert, want) in cases {
            assert_eq!(decide(rule, alert), want, "{name}");
        }
        // A conjunct that is no clause leaves a true for CEL to finish, but not a false.
        let mixed = r#"alert.serviceSource == "mde" && alert.evidence.exists(e, e.x == "y")"#;
        assert_eq!(decide(mixed, json!({"serviceSource": "mde"})), None);
        assert_eq!(decide(mixed, json!({"serviceSource": "x"})), Some(false));
        // `has` needs a map to look in; through a missing or non-map parent it is CEL's call.
        assert_eq!(decide("has(alert.a.b)", json!({"a": {"b": null}})), Some(true));
        assert_eq!(decide("has(alert.a.b)", json!({"a": {}})), Some(false));
        assert_eq!(decide("has(alert.a.b)", json!({"a": "text"})), None);
        assert_eq!(decide("has(alert.a.b)", json!({})), None);
        assert_eq!(decide("has(alert.a)", json!({})), Some(false));
        // Negation, `!=`, `in`, the tenant.
        assert_eq!(decide(r#"!(alert.s == "x")"#, json!({"s": "x"})), Some(false));
        assert_eq!(decide(r#"alert.s != "x""#, json!({"s": "y"})), Some(true));
        assert_eq!(decide(r#"alert.s in ["a", "b"]"#, json!({"s": "b"})), Some(true));
        assert_eq!(decide(r#"alert.s in []"#, json!({"s": "b"})), Some(false));
        assert_eq!(decide(r#"tenant == "fabrikam""#, json!({})), Some(false));
        assert_eq!(decide(r#"alert.a.b == "x""#, json!({"a": {"b": "x"}})), Some(true));
    }
}
