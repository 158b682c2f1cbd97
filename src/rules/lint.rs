//! Warnings about close rules that are valid CEL but fail open: each idiom closes alerts its author did
//! not mean to close. `check-config` prints them with the rule's line and a rewrite in the safe form
//! (`docs/rules.md`, "Traps"); they do not fail the config.
//!
//! - `exists` over evidence: one benign item is enough, whatever else the alert carries;
//! - `all` without a non-empty guard: true when there is no such item at all;
//! - `matches` not anchored at both ends: the pattern may match anywhere in the text;
//! - `startsWith` on a path without a trailing separator: `C:\Program Files\Backup` also matches
//!   `C:\Program Files\BackupEvil\`.
//!
//! Only what makes a close rule match is judged: under a `!` the same idioms are the strict side (no
//! evidence is malicious, the path is not under a folder), so they are left alone there.

use cel::IdedExpr;
use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, LiteralValue, operators};

use super::expr::{ALL_EVIDENCE, ALL_EVIDENCE_ACCU, Expression};

/// One unsafe idiom in an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong and why it fails open.
    pub message: String,
    /// The same test in the safe form.
    pub rewrite: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; rewrite as: {}", self.message, self.rewrite)
    }
}

/// The unsafe idioms in a close rule's compiled `when`, in source order.
pub fn close_rule(when: &Expression) -> Vec<Finding> {
    let mut lint = Lint::default();
    lint.visit(when.ast(), true, &[]);
    lint.findings
}

#[derive(Default)]
struct Lint {
    findings: Vec<Finding>,
    /// `exists` loops that guard an `all` over the same range in their `&&` chain ("some, and all"):
    /// the safe form spelled out, not flagged.
    paired: Vec<u64>,
}

/// What a comprehension is, recognised from the shape the macros expand to.
enum Loop<'a> {
    Exists(&'a IdedExpr),
    All(&'a IdedExpr),
    AllEvidence(&'a IdedExpr),
    Other,
}

fn classify(c: &ComprehensionExpr) -> Loop<'_> {
    if c.accu_var == ALL_EVIDENCE_ACCU {
        return match &c.loop_step.expr {
            Expr::Call(step) if step.func_name == operators::CONDITIONAL => Loop::AllEvidence(&step.args[0]),
            _ => Loop::Other,
        };
    }
    let folds = |op: &str| match &c.loop_step.expr {
        Expr::Call(step)
            if step.func_name == op
                && step.args.len() == 2
                && matches!(&step.args[0].expr, Expr::Ident(a) if *a == c.accu_var) =>
        {
            Some(&step.args[1])
        }
        _ => None,
    };
    let init = |b: bool| matches!(&c.accu_init.expr, Expr::Literal(LiteralValue::Boolean(x)) if *x.inner() == b);
    match (folds(operators::LOGICAL_OR), folds(operators::LOGICAL_AND)) {
        (Some(p), _) if init(false) => Loop::Exists(p),
        (_, Some(p)) if init(true) => Loop::All(p),
        _ => Loop::Other,
    }
}

impl Lint {
    /// Visits `e`; `positive` is false under an odd number of `!`; `guards` are the ranges (rendered)
    /// that an enclosing `&&` chain requires to be non-empty.
    fn visit(&mut self, e: &IdedExpr, positive: bool, guards: &[String]) {
        match &e.expr {
            Expr::Call(call) if call.func_name == operators::LOGICAL_NOT => {
                call.args.iter().for_each(|a| self.visit(a, !positive, guards))
            }
            Expr::Call(call) if call.func_name == operators::LOGICAL_AND => {
                let mut conjuncts = Vec::new();
                flatten(e, &mut conjuncts);
                let mut inner = guards.to_vec();
                if positive {
                    inner.extend(conjuncts.iter().filter_map(|c| guarded_range(c)));
                    let alls: Vec<String> = conjuncts
                        .iter()
                        .filter_map(|c| match &c.expr {
                            Expr::Comprehension(x) if matches!(classify(x), Loop::All(_)) => {
                                Some(render(&x.iter_range))
                            }
                            _ => None,
                        })
                        .collect();
                    for c in &conjuncts {
                        if let Expr::Comprehension(x) = &c.expr
                            && matches!(classify(x), Loop::Exists(_))
                            && alls.contains(&render(&x.iter_range))
                        {
                            self.paired.push(c.id);
                        }
                    }
                }
                conjuncts.iter().for_each(|c| self.visit(c, positive, &inner));
            }
            Expr::Call(call) => {
                if positive {
                    self.check_call(call);
                }
                if let Some(t) = &call.target {
                    self.visit(t, positive, guards);
                }
                call.args.iter().for_each(|a| self.visit(a, positive, guards));
            }
            Expr::Comprehension(c) => {
                match classify(c) {
                    Loop::Exists(p) if positive && mentions_evidence(&c.iter_range) && !self.paired.contains(&e.id) => {
                        self.findings.push(Finding {
                            message: format!(
                                "{} closes the alert when one evidence item matches, whatever else the alert carries \
                             (one pentest IP next to an attacker IP)",
                                render(e)
                            ),
                            rewrite: evidence_rewrite(&c.iter_range, &c.iter_var, p),
                        })
                    }
                    Loop::All(p) if positive && !guards.contains(&render(&c.iter_range)) => {
                        let rewrite = if mentions_evidence(&c.iter_range) {
                            evidence_rewrite(&c.iter_range, &c.iter_var, p)
                        } else {
                            let range = render(&c.iter_range);
                            format!("size({range}) > 0 && {}", render(e))
                        };
                        self.findings.push(Finding {
                            message: format!(
                                "{} is true when the list is empty: the rule then matches anyway",
                                render(e)
                            ),
                            rewrite,
                        })
                    }
                    _ => {}
                }
                self.visit(&c.iter_range, positive, guards);
                for part in [&c.loop_step, &c.result] {
                    self.visit(part, positive, guards);
                }
            }
            Expr::List(l) => l.elements.iter().for_each(|x| self.visit(x, positive, guards)),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.visit(&me.value, positive, guards);
                    }
                }
            }
            Expr::Select(s) => self.visit(&s.operand, positive, guards),
            _ => {}
        }
    }

    fn check_call(&mut self, call: &CallExpr) {
        // Called as a function, the first argument plays the target's part.
        let (target, arg) = match (&call.target, call.args.as_slice()) {
            (Some(t), [a]) => (&**t, a),
            (None, [t, a]) => (t, a),
            _ => return,
        };
        match call.func_name.as_str() {
            "matches" => {
                let pattern = string(arg);
                if pattern.is_some_and(anchored) {
                    return;
                }
                let example = "\"backup\\\\.exe\" also matches \"evil.exe /c copy backup.exe\"";
                let what = match pattern {
                    Some(_) => "is not anchored at both ends",
                    None => "takes a computed pattern, which may not be anchored",
                };
                let pattern = pattern.map(|p| quote(strip_anchors(p))).unwrap_or_else(|| render(arg));
                self.findings.push(Finding {
                    message: format!("{} {what}: matches finds the pattern anywhere ({example})", render_call(call)),
                    rewrite: format!("{}.fullMatch({pattern})", render_operand(target)),
                });
            }
            "startsWith" => {
                let prefix = string(arg);
                let path_like = prefix.is_some_and(looks_like_path) || names_a_path(target);
                if !path_like || prefix.is_some_and(|p| p.ends_with(['\\', '/'])) {
                    return;
                }
                self.findings.push(Finding {
                    message: format!(
                        "{} on a path without a trailing separator also matches sibling folders \
                         (C:\\Program Files\\BackupEvil\\ for C:\\Program Files\\Backup)",
                        render_call(call)
                    ),
                    rewrite: format!("{}.pathUnder({})", render_operand(target), render(arg)),
                });
            }
            _ => {}
        }
    }
}

/// The conjuncts of a `&&` chain, left to right.
fn flatten<'a>(e: &'a IdedExpr, out: &mut Vec<&'a IdedExpr>) {
    match &e.expr {
        Expr::Call(c) if c.func_name == operators::LOGICAL_AND => c.args.iter().for_each(|a| flatten(a, out)),
        _ => out.push(e),
    }
}

/// The range a conjunct proves non-empty: `size(R) > 0` (or `>= 1`, `!= 0`, mirrored), `R.size() > 0`,
/// `R != []`, or `R.exists(…)`.
fn guarded_range(e: &IdedExpr) -> Option<String> {
    if let Expr::Comprehension(c) = &e.expr
        && matches!(classify(c), Loop::Exists(_))
    {
        return Some(render(&c.iter_range));
    }
    let Expr::Call(c) = &e.expr else { return None };
    let [a, b] = c.args.as_slice() else { return None };
    let int = |x: &IdedExpr| match &x.expr {
        Expr::Literal(LiteralValue::Int(n)) => Some(*n.inner()),
        _ => None,
    };
    let size_of = |x: &IdedExpr| match &x.expr {
        Expr::Call(s) if s.func_name == "size" => match (&s.target, s.args.as_slice()) {
            (Some(t), []) => Some(render(t)),
            (None, [r]) => Some(render(r)),
            _ => None,
        },
        _ => None,
    };
    let empty_list = |x: &IdedExpr| matches!(&x.expr, Expr::List(l) if l.elements.is_empty());
    let op = c.func_name.as_str();
    let (size, n, op) = match (size_of(a), size_of(b)) {
        (Some(s), _) => (s, int(b), op),
        (_, Some(s)) => (
            s,
            int(a),
            match op {
                operators::LESS => operators::GREATER,
                operators::LESS_EQUALS => operators::GREATER_EQUALS,
                other => other,
            },
        ),
        _ if op == operators::NOT_EQUALS && empty_list(b) => return Some(render(a)),
        _ => return None,
    };
    let nonempty = match (op, n?) {
        (operators::GREATER, n) => n >= 0,
        (operators::GREATER_EQUALS, n) => n >= 1,
        (operators::NOT_EQUALS, n) => n == 0,
        _ => false,
    };
    nonempty.then_some(size)
}

/// True when the range is the alert's evidence or drawn from it.
fn mentions_evidence(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Select(s) => s.field == "evidence" || mentions_evidence(&s.operand),
        Expr::Call(c) => {
            c.func_name == "evidenceOf"
                || c.target.as_deref().is_some_and(mentions_evidence)
                || c.args.iter().any(mentions_evidence)
        }
        Expr::Comprehension(c) => mentions_evidence(&c.iter_range),
        _ => false,
    }
}

/// `alert.allEvidence("kind", e, p)` for a loop over the evidence with predicate `p`, minus the
/// presence tests (`has(e.ipAddress)`) that the kind makes redundant.
fn evidence_rewrite(range: &IdedExpr, var: &str, pred: &IdedExpr) -> String {
    let (alert, kind) = match &range.expr {
        Expr::Call(c) if c.func_name == "evidenceOf" => match (&c.target, c.args.as_slice()) {
            (Some(t), [k]) => (render_operand(t), string(k).map(str::to_string)),
            (None, [t, k]) => (render_operand(t), string(k).map(str::to_string)),
            _ => ("alert".to_string(), None),
        },
        Expr::Select(s) if s.field == "evidence" => (render_operand(&s.operand), None),
        _ => ("alert".to_string(), None),
    };
    let kind = kind.or_else(|| infer_kind(pred, var).map(str::to_string));
    let mut conjuncts = Vec::new();
    flatten(pred, &mut conjuncts);
    let kept: Vec<String> = conjuncts
        .iter()
        .filter(|c| !(kind.is_some() && is_presence_test(c, var)))
        .map(|c| render_level(c, Level::And))
        .collect();
    let pred = if kept.is_empty() { "true".to_string() } else { kept.join(" && ") };
    let kind = kind.map(|k| quote(&k)).unwrap_or_else(|| "\"<kind: ip, file, process, user, …>\"".into());
    format!("{alert}.{ALL_EVIDENCE}({kind}, {var}, {pred})")
}

fn is_presence_test(e: &IdedExpr, var: &str) -> bool {
    matches!(&e.expr, Expr::Select(s) if s.test && matches!(&s.operand.expr, Expr::Ident(v) if v == var))
}

/// The evidence kind a predicate is about, from the fields it reads on the loop variable.
fn infer_kind(pred: &IdedExpr, var: &str) -> Option<&'static str> {
    const FIELDS: &[(&str, &str)] = &[
        ("ipAddress", "ip"),
        ("fileDetails", "file"),
        ("imageFile", "process"),
        ("processCommandLine", "process"),
        ("url", "url"),
        ("userAccount", "user"),
        ("deviceDnsName", "device"),
        ("ipInterfaces", "device"),
        ("mdeDeviceId", "device"),
        ("primaryAddress", "mailbox"),
        ("registryKey", "registryKey"),
        ("registryValue", "registryValue"),
        ("appId", "cloudApplication"),
    ];
    let mut fields = Vec::new();
    fields_of(pred, var, &mut fields);
    fields.iter().find_map(|f| FIELDS.iter().find(|(name, _)| name == f).map(|(_, kind)| *kind))
}

fn fields_of<'a>(e: &'a IdedExpr, var: &str, out: &mut Vec<&'a str>) {
    match &e.expr {
        Expr::Select(s) => {
            if matches!(&s.operand.expr, Expr::Ident(v) if v == var) {
                out.push(&s.field);
            }
            fields_of(&s.operand, var, out);
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                fields_of(t, var, out);
            }
            c.args.iter().for_each(|a| fields_of(a, var, out));
        }
        Expr::Comprehension(c) => {
            fields_of(&c.iter_range, var, out);
            fields_of(&c.loop_step, var, out);
        }
        Expr::List(l) => l.elements.iter().for_each(|x| fields_of(x, var, out)),
        _ => {}
    }
}

fn string(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

/// True for a literal prefix that is a file path rather than, say, an IP prefix or a URL.
fn looks_like_path(s: &str) -> bool {
    let b = s.as_bytes();
    !s.contains("://") && (s.contains(['\\', '/']) || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'))
}

/// True when the expression reads a field named like a path (`filePath`, `folderPath`, `directory`).
fn names_a_path(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Select(s) => {
            let f = s.field.to_ascii_lowercase();
            ["path", "folder", "directory"].iter().any(|w| f.contains(w))
        }
        _ => false,
    }
}

/// True for a pattern anchored at both ends: `^` or `\A` first, `$` or `\z` last (not escaped), no
/// top-level `|` and no multi-line flag (under which `^` and `$` match at every line).
fn anchored(p: &str) -> bool {
    let starts = p.starts_with('^') || p.starts_with("\\A");
    let ends = (p.ends_with('$') && !escaped_at(p, p.len() - 1)) || (p.ends_with("\\z") && !escaped_at(p, p.len() - 2));
    starts && ends && !top_level_alternation(p) && !multi_line(p)
}

fn escaped_at(p: &str, i: usize) -> bool {
    p.as_bytes()[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

fn top_level_alternation(p: &str) -> bool {
    let (mut depth, mut class, mut escape) = (0usize, false, false);
    for c in p.chars() {
        match c {
            _ if escape => escape = false,
            '\\' => escape = true,
            '[' if !class => class = true,
            ']' if class => class = false,
            _ if class => {}
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '|' if depth == 0 => return true,
            _ => {}
        }
    }
    false
}

fn multi_line(p: &str) -> bool {
    // The flags of a group such as `(?m)`, `(?im:…)` or `(?i-m)`: letters up to a `-` turn flags on.
    p.match_indices("(?").any(|(i, _)| p[i + 2..].chars().take_while(char::is_ascii_alphabetic).any(|c| c == 'm'))
}

fn strip_anchors(p: &str) -> &str {
    let p = p.strip_prefix('^').or_else(|| p.strip_prefix("\\A")).unwrap_or(p);
    if p.ends_with('$') && !escaped_at(p, p.len() - 1) {
        &p[..p.len() - 1]
    } else if p.ends_with("\\z") && !escaped_at(p, p.len() - 2) {
        &p[..p.len() - 2]
    } else {
        p
    }
}

/// A CEL string literal for `s`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Operator precedence, loosest first, for parentheses in [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Conditional,
    Or,
    And,
    Relation,
    Sum,
    Product,
    Unary,
    Member,
}

fn binary(op: &str) -> Option<(&'static str, Level)> {
    Some(match op {
        operators::LOGICAL_OR => ("||", Level::Or),
        operators::LOGICAL_AND => ("&&", Level::And),
        operators::EQUALS => ("==", Level::Relation),
        operators::NOT_EQUALS => ("!=", Level::Relation),
        operators::LESS => ("<", Level::Relation),
        operators::LESS_EQUALS => ("<=", Level::Relation),
        operators::GREATER => (">", Level::Relation),
        operators::GREATER_EQUALS => (">=", Level::Relation),
        operators::IN => ("in", Level::Relation),
        operators::ADD => ("+", Level::Sum),
        operators::SUBSTRACT => ("-", Level::Sum),
        operators::MULTIPLY => ("*", Level::Product),
        operators::DIVIDE => ("/", Level::Product),
        operators::MODULO => ("%", Level::Product),
        _ => return None,
    })
}

fn level(e: &IdedExpr) -> Level {
    match &e.expr {
        Expr::Call(c) if c.func_name == operators::CONDITIONAL => Level::Conditional,
        Expr::Call(c) if c.func_name == operators::LOGICAL_NOT || c.func_name == operators::NEGATE => Level::Unary,
        Expr::Call(c) => binary(&c.func_name).map(|(_, l)| l).unwrap_or(Level::Member),
        _ => Level::Member,
    }
}

/// `e`, in parentheses when it binds more loosely than `at`.
fn render_level(e: &IdedExpr, at: Level) -> String {
    if level(e) < at { format!("({})", render(e)) } else { render(e) }
}

fn render_operand(e: &IdedExpr) -> String {
    render_level(e, Level::Member)
}

fn render_call(c: &CallExpr) -> String {
    render(&IdedExpr { id: 0, expr: Expr::Call(c.clone()) })
}

/// CEL source for a parsed expression, the standard macros and `allEvidence` folded back: close enough
/// to the author's text to quote in a warning and to paste as a rewrite.
fn render(e: &IdedExpr) -> String {
    let list = |xs: &[IdedExpr]| xs.iter().map(render).collect::<Vec<_>>().join(", ");
    match &e.expr {
        Expr::Ident(n) => n.clone(),
        Expr::Literal(l) => match l {
            LiteralValue::String(s) => quote(s.inner()),
            LiteralValue::Int(n) => n.inner().to_string(),
            LiteralValue::UInt(n) => format!("{}u", n.inner()),
            LiteralValue::Double(d) => format!("{:?}", d.inner()),
            LiteralValue::Boolean(b) => b.inner().to_string(),
            LiteralValue::Null => "null".into(),
            LiteralValue::Bytes(_) => "b\"…\"".into(),
        },
        Expr::Select(s) if s.test => format!("has({}.{})", render_operand(&s.operand), s.field),
        Expr::Select(s) => format!("{}.{}", render_operand(&s.operand), s.field),
        Expr::List(l) => format!("[{}]", list(&l.elements)),
        Expr::Map(m) => {
            let entries: Vec<String> = m
                .entries
                .iter()
                .filter_map(|x| match &x.expr {
                    EntryExpr::MapEntry(me) => Some(format!("{}: {}", render(&me.key), render(&me.value))),
                    EntryExpr::StructField(_) => None,
                })
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        Expr::Call(c) => {
            if let (Some((op, at)), [a, b]) = (binary(&c.func_name), c.args.as_slice()) {
                // Left-associative: a right operand at the same level needs parentheses, except in the
                // associative && and || chains.
                let right = if matches!(at, Level::And | Level::Or) { at } else { next(at) };
                return format!("{} {op} {}", render_level(a, at), render_level(b, right));
            }
            match (c.func_name.as_str(), c.args.as_slice()) {
                (operators::LOGICAL_NOT, [a]) => format!("!{}", render_level(a, Level::Unary)),
                (operators::NEGATE, [a]) => format!("-{}", render_level(a, Level::Unary)),
                (operators::CONDITIONAL, [a, b, x]) => format!(
                    "{} ? {} : {}",
                    render_level(a, Level::Or),
                    render_level(b, Level::Or),
                    render_level(x, Level::Conditional)
                ),
                (operators::INDEX, [a, i]) => format!("{}[{}]", render_operand(a), render(i)),
                (f, args) => match &c.target {
                    Some(t) => format!("{}.{f}({})", render_operand(t), list(args)),
                    None => format!("{f}({})", list(args)),
                },
            }
        }
        Expr::Comprehension(c) => {
            let (range, v) = (render_operand(&c.iter_range), &c.iter_var);
            match classify(c) {
                Loop::Exists(p) => format!("{range}.exists({v}, {})", render(p)),
                Loop::All(p) => format!("{range}.all({v}, {})", render(p)),
                Loop::AllEvidence(p) => match &c.iter_range.expr {
                    Expr::Call(of) if of.target.is_some() => format!(
                        "{}.{ALL_EVIDENCE}({}, {v}, {})",
                        render_operand(of.target.as_deref().expect("checked")),
                        list(&of.args),
                        render(p)
                    ),
                    _ => format!("{range}.{ALL_EVIDENCE}(…, {v}, {})", render(p)),
                },
                Loop::Other => render_map_or_filter(c, &range),
            }
        }
        Expr::Struct(_) | Expr::Unspecified => "…".into(),
    }
}

/// `map` and `filter` folded back from their expansions (`@result + [x]`, guarded by `p ? … : @result`
/// for `filter` and the three-argument `map`); any other comprehension with its step spelled out, so
/// that two different loops never render alike.
fn render_map_or_filter(c: &ComprehensionExpr, range: &str) -> String {
    let v = &c.iter_var;
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(a) if *a == c.accu_var);
    let appended = |e: &IdedExpr| match &e.expr {
        Expr::Call(add) if add.func_name == operators::ADD && add.args.len() == 2 && is_accu(&add.args[0]) => {
            match &add.args[1].expr {
                Expr::List(l) if l.elements.len() == 1 => Some(l.elements[0].clone()),
                _ => None,
            }
        }
        _ => None,
    };
    if let Some(x) = appended(&c.loop_step) {
        return format!("{range}.map({v}, {})", render(&x));
    }
    if let Expr::Call(step) = &c.loop_step.expr
        && step.func_name == operators::CONDITIONAL
        && let [p, then, otherwise] = step.args.as_slice()
        && is_accu(otherwise)
        && let Some(x) = appended(then)
    {
        return match &x.expr {
            Expr::Ident(name) if name == v => format!("{range}.filter({v}, {})", render(p)),
            _ => format!("{range}.map({v}, {}, {})", render(p), render(&x)),
        };
    }
    format!("{range}.comprehension({v}, {})", render(&c.loop_step))
}

fn next(l: Level) -> Level {
    match l {
        Level::Conditional => Level::Or,
        Level::Or => Level::And,
        Level::And => Level::Relation,
        Level::Relation => Level::Sum,
        Level::Sum => Level::Product,
        Level::Product => Level::Unary,
        Level::Unary | Level::Member => Level::Member,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(source: &str) -> Vec<Finding> {
        let env = super::super::expr::env();
        close_rule(&Expression::compile(&env, source).unwrap_or_else(|e| panic!("{source}: {e}")))
    }

    #[test]
    fn each_unsafe_idiom_is_found_with_its_rewrite() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"alert.serviceSource == "microsoftDefenderForEndpoint" && alert.evidence.exists(e, has(e.ipAddress) && e.ipAddress.inCidr("203.0.113.0/24"))"#,
                "whatever else the alert carries",
                r#"alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))"#,
            ),
            (
                r#"alert.evidenceOf("file").exists(f, f.fileDetails.sha256.hashIn(["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]))"#,
                "one evidence item matches",
                r#"alert.allEvidence("file", f, f.fileDetails.sha256.hashIn(["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]))"#,
            ),
            (
                r#"alert.evidence.exists(e, e.verdict == "noThreatsFound")"#,
                "one evidence item matches",
                r#"alert.allEvidence("<kind: ip, file, process, user, …>", e, e.verdict == "noThreatsFound")"#,
            ),
            (
                r#"alert.evidence.all(e, has(e.ipAddress) && e.ipAddress.inCidr("203.0.113.0/24"))"#,
                "true when the list is empty",
                r#"alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))"#,
            ),
            (
                r#"alert.mitreTechniques.all(t, t in ["T1046", "T1595"])"#,
                "true when the list is empty",
                r#"size(alert.mitreTechniques) > 0 && alert.mitreTechniques.all(t, t in ["T1046", "T1595"])"#,
            ),
            (
                r#"size(alert.systemTags) > 0 && alert.mitreTechniques.all(t, t == "T1046")"#,
                "true when the list is empty",
                r#"size(alert.mitreTechniques) > 0 && alert.mitreTechniques.all(t, t == "T1046")"#,
            ),
            (
                r#"size(alert.systemTags.filter(t, t == "a")) > 0 && alert.systemTags.filter(t, t == "b").all(t, t == "b")"#,
                "true when the list is empty",
                r#"size(alert.systemTags.filter(t, t == "b")) > 0 && alert.systemTags.filter(t, t == "b").all(t, t == "b")"#,
            ),
            (
                r#"(size(alert.mitreTechniques) > 0 || alert.severity == "low") && alert.mitreTechniques.all(t, t == "T1046")"#,
                "true when the list is empty",
                r#"size(alert.mitreTechniques) > 0 && alert.mitreTechniques.all(t, t == "T1046")"#,
            ),
            (r#"alert.title.matches("backup\\.exe")"#, "not anchored", r#"alert.title.fullMatch("backup\\.exe")"#),
            (r#"alert.title.matches("^backup\\.exe")"#, "not anchored", r#"alert.title.fullMatch("backup\\.exe")"#),
            (r#"alert.title.matches("^a|b$")"#, "not anchored", r#"alert.title.fullMatch("a|b")"#),
            (r#"alert.title.matches("(?m)^benign$")"#, "not anchored", r#"alert.title.fullMatch("(?m)^benign")"#),
            (r#"alert.title.matches("^x\\$")"#, "not anchored", r#"alert.title.fullMatch("x\\$")"#),
            (
                r#"matches(alert.title, alert.description)"#,
                "computed pattern",
                "alert.title.fullMatch(alert.description)",
            ),
            (
                r#"alert.evidenceOf("process").all(p, p.imageFile.filePath.startsWith("C:\\Program Files\\Backup")) && size(alert.evidenceOf("process")) > 0"#,
                "without a trailing separator",
                r#"p.imageFile.filePath.pathUnder("C:\\Program Files\\Backup")"#,
            ),
            (
                r#"alert.allEvidence("file", f, f.fileDetails.filePath.startsWith(alert.description))"#,
                "without a trailing separator",
                "f.fileDetails.filePath.pathUnder(alert.description)",
            ),
            (
                r#"alert.allEvidence("process", p, startsWith(p.imageFile.filePath, "/opt/backup"))"#,
                "sibling folders",
                r#"p.imageFile.filePath.pathUnder("/opt/backup")"#,
            ),
        ];
        for (source, message, rewrite) in cases {
            let found = lint(source);
            assert_eq!(found.len(), 1, "{source}: {found:?}");
            assert!(found[0].message.contains(message), "{source}: {}", found[0].message);
            assert_eq!(found[0].rewrite, *rewrite, "{source}");
        }
    }

    #[test]
    fn safe_forms_and_the_strict_side_pass() {
        for source in [
            r#"alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))"#,
            r#"alert.serviceSource == "microsoftDefenderForEndpoint" && allEvidence(alert, "ip", e, e.ipAddress.inCidr(["203.0.113.0/24"]))"#,
            r#"size(alert.mitreTechniques) > 0 && alert.mitreTechniques.all(t, t == "T1046")"#,
            r#"alert.mitreTechniques.size() >= 1 && alert.mitreTechniques.all(t, t == "T1046")"#,
            r#"0 < size(alert.mitreTechniques) && alert.mitreTechniques.all(t, t == "T1046")"#,
            r#"alert.mitreTechniques != [] && alert.mitreTechniques.all(t, t == "T1046")"#,
            r#"alert.mitreTechniques.exists(t, t == "T1046") && alert.mitreTechniques.all(t, t.startsWith("T10"))"#,
            r#"alert.evidence.exists(e, has(e.ipAddress)) && alert.evidence.all(e, !has(e.ipAddress) || e.ipAddress.inCidr("203.0.113.0/24"))"#,
            // Under a negation the idioms are the strict side.
            r#"!alert.evidence.exists(e, e.verdict == "malicious")"#,
            r#"!alert.title.matches("mimikatz")"#,
            r#"alert.allEvidence("process", p, !p.imageFile.filePath.startsWith("C:\\Temp"))"#,
            // Anchored patterns, paths with a trailing separator, prefixes that are not paths.
            r#"alert.title.matches("^Network scan from 203\\.0\\.113\\.[0-9]+$")"#,
            r#"alert.title.matches("\\Ascan\\z")"#,
            r#"alert.title.fullMatch("Network scan.*")"#,
            r#"alert.allEvidence("process", p, p.imageFile.filePath.startsWith("C:\\Program Files\\Backup\\"))"#,
            r#"alert.allEvidence("process", p, p.imageFile.filePath.pathUnder("C:\\Program Files\\Backup"))"#,
            r#"alert.title.startsWith("Network scan")"#,
            r#"alert.allEvidence("url", u, u.url.startsWith("https://contoso.sharepoint.com/"))"#,
            r#"alert.allEvidence("ip", e, e.ipAddress.startsWith("203.0.113."))"#,
            // exists over something that is not evidence is left alone.
            r#"alert.systemTags.exists(t, t == "Pentest")"#,
        ] {
            assert_eq!(lint(source), vec![], "{source}");
        }
    }

    #[test]
    fn render_round_trips_what_it_quotes() {
        let env = super::super::expr::env();
        for source in [
            r#"alert.allEvidence("ip", e, e.ipAddress.inCidr(["203.0.113.0/24", "2001:db8::/32"]))"#,
            r#"!(alert.severity == "high" || alert.severity == "medium") && alert.title.size() > 3"#,
            r#"(1 + 2) * 3 == 9 && 10 - (4 - 3) == 9 && (true ? "a" : "b") == "a""#,
            r#"alert.evidence.exists(e, has(e.ipAddress)) && alert.evidence.all(e, e.verdict != "malicious")"#,
            r#"alert.comments[0].comment == "a\"b\\c\n" && -alert.n < 0u && {"k": 1.5}["k"] > 1.0"#,
            r#"size(alert.evidence.filter(e, e.verdict == "malicious")) == 0 && alert.systemTags.map(t, t.lowerAscii()) == ["x"]"#,
            r#"alert.mitreTechniques.map(t, t.startsWith("T1"), t + "!") == []"#,
        ] {
            let e = Expression::compile(&env, source).unwrap();
            let again = render(e.ast());
            assert_eq!(again, source, "render");
            let e2 = Expression::compile(&env, &again).unwrap();
            assert_eq!(render(e2.ast()), again);
        }
    }
}
