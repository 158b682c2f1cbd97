//! CEL expressions for rules and routes: compiled once, capped, with a few domain helpers.
//!
//! The `cel` crate has no cost budget, so a rule could be written that takes seconds per alert (nested
//! comprehensions over 1,000 evidence items). Expressions are therefore capped at compile time: length,
//! nesting depth and comprehension nesting. Bracket depth is checked on the text *before* parsing, so a
//! pathological expression cannot exhaust the parser's stack either.
//!
//! Variables: `alert` (the alert exactly as Graph returned it), `tenant` (the tenant's name in the
//! config), `now` (a timestamp). Helpers, callable as methods or functions:
//! - `ip.inCidr("203.0.113.0/24")` or `ip.inCidr(["10.0.0.0/8", "2001:db8::/32"])`: IPv4/IPv6 prefix match;
//!   text that is not an IP address is not in any range;
//! - `alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))` (a macro): true when the alert has
//!   at least one evidence item of that kind *and* every one of them satisfies the predicate; an error
//!   on any item makes the whole rule fail (no match). `alert.evidenceOf("ip")` is the list it ranges
//!   over: the evidence whose `@odata.type` is `#microsoft.graph.security.ipEvidence`;
//! - `path.pathUnder("C:\\Program Files\\Backup\\")` or a list of folders: strictly below the folder,
//!   segment by segment (`\` and `/` separate and ASCII case is ignored for Windows paths, `/` only and
//!   exact for POSIX ones; `.` and `..` never match);
//! - `hash.hashIn(["<sha256>", …])`: an MD5, SHA-1 or SHA-256 in hex, compared ignoring ASCII case;
//! - `s.fullMatch("re")`: the whole string matches the regular expression (unlike `matches`, which
//!   finds it anywhere);
//! - `s.equalsIgnoreCase("x")`, `s.containsIgnoreCase("x")`: ASCII case-insensitive comparison; other
//!   characters must be equal (no Unicode folding: the Kelvin sign `K` is not `k`);
//! - `now.timeOfDayIn("22:00", "06:00")` (end exclusive, may wrap past midnight) and
//!   `now.weekdayIn(["Sat", "Sun"])`, both in UTC or, with a last argument such as `"+02:00"`, at that
//!   fixed offset.

use std::net::IpAddr;
use std::sync::Arc;

use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, LiteralValue, operators};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp, CelUInt,
};
use cel::common::value::Val;
use cel::extractors::This;
use cel::parser::{Macro, MacroExprHelper};
use cel::{Context, Env, ExecutionError, FunctionContext, IdedExpr, ParseError, Program, Value};
use chrono::{DateTime, Datelike, FixedOffset, NaiveTime, Timelike, Utc, Weekday};

/// Longest expression accepted, in bytes.
pub const MAX_LENGTH: usize = 4096;
/// Deepest nesting of brackets and sub-expressions accepted.
pub const MAX_DEPTH: usize = 32;
/// Most comprehensions (`exists`, `all`, `map`, `filter`, `allEvidence`, …) nested inside each other: two allow
/// "any evidence with any IP in a range"; three would allow a billion steps over 1,000-item lists.
pub const MAX_COMPREHENSION_NESTING: usize = 2;

/// A compiled expression and its source.
#[derive(Debug)]
pub struct Expression {
    program: Program,
    source: String,
}

/// The environment every expression is compiled and run in: the CEL standard library, the strings
/// extension (`lowerAscii`, `split`, …) and the `allEvidence` macro.
pub fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings).expect("the strings extension registers once");
    for m in [Macro::receiver(ALL_EVIDENCE, 3, all_evidence), Macro::global(ALL_EVIDENCE, 4, all_evidence)] {
        env.add_macro(m).expect("allEvidence is no standard macro");
    }
    Arc::new(env)
}

/// The macro that says what a close rule over evidence means: "there is evidence of this kind, and all of
/// it is benign".
pub const ALL_EVIDENCE: &str = "allEvidence";
/// The accumulator of an `allEvidence` expansion: how many items matched, or -1 once one did not.
pub(crate) const ALL_EVIDENCE_ACCU: &str = "@allEvidence";

/// Expands `alert.allEvidence(kind, e, p)` (or `allEvidence(alert, kind, e, p)`) into a comprehension over
/// `alert.evidenceOf(kind)` that counts the items satisfying `p`, stops at the first that does not, and
/// is true only for a count above zero. The step is a conditional rather than CEL's `&&`, so an error on
/// any item is the result (no match) instead of being absorbed by a later `false`.
fn all_evidence(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<Option<IdedExpr>, ParseError> {
    let alert = match target.take() {
        Some(t) => t,
        None => args.remove(0),
    };
    let (Some(pred), Some(var), Some(kind)) = (args.pop(), args.pop(), args.pop()) else {
        return Err(helper.new_error(alert.id, "allEvidence expects (kind, name, predicate)"));
    };
    let Expr::Ident(var) = var.expr else {
        return Err(helper.new_error(
            var.id,
            "allEvidence: the second argument must be a simple name, as in alert.allEvidence(\"ip\", e, …)",
        ));
    };
    let mut node = |e: Expr| helper.next_expr(e);
    let int = |n: i64| Expr::Literal(LiteralValue::Int(CelInt::from(n)));
    let accu = || Expr::Ident(ALL_EVIDENCE_ACCU.to_string());
    let call = |f: &str, args: Vec<IdedExpr>| Expr::Call(CallExpr { func_name: f.to_string(), target: None, args });
    let range =
        node(Expr::Call(CallExpr { func_name: "evidenceOf".into(), target: Some(Box::new(alert)), args: vec![kind] }));
    let (a, zero) = (node(accu()), node(int(0)));
    let loop_cond = node(call(operators::GREATER_EQUALS, vec![a, zero]));
    let (a, one) = (node(accu()), node(int(1)));
    let plus_one = node(call(operators::ADD, vec![a, one]));
    let failed = node(int(-1));
    let loop_step = node(call(operators::CONDITIONAL, vec![pred, plus_one, failed]));
    let (a, zero) = (node(accu()), node(int(0)));
    let result = node(call(operators::GREATER, vec![a, zero]));
    let accu_init = node(int(0));
    Ok(Some(node(Expr::Comprehension(Box::new(ComprehensionExpr {
        iter_range: range,
        iter_var: var,
        iter_var2: None,
        accu_var: ALL_EVIDENCE_ACCU.to_string(),
        accu_init,
        loop_cond,
        loop_step,
        result,
    })))))
}

impl Expression {
    /// Compiles `source`, enforcing the caps and checking literal helper arguments (CIDRs, times,
    /// weekdays, offsets), so that a typo is a config error rather than a rule that never matches.
    pub fn compile(env: &Env, source: &str) -> Result<Expression, String> {
        if source.trim().is_empty() {
            return Err("empty expression".into());
        }
        if source.len() > MAX_LENGTH {
            return Err(format!("expression is {} bytes long; the limit is {MAX_LENGTH}", source.len()));
        }
        let depth = bracket_depth(source);
        if depth > MAX_DEPTH {
            return Err(format!("brackets nest {depth} deep; the limit is {MAX_DEPTH}"));
        }
        let program = env.compile(source).map_err(|e| format!("CEL syntax: {}", one_line(&e.to_string())))?;
        let mut walk = Walk::default();
        walk.visit(program.expression(), 1, 0);
        if let Some(problem) = walk.problems.into_iter().next() {
            return Err(problem);
        }
        if walk.max_depth > MAX_DEPTH {
            return Err(format!("the expression nests {} deep; the limit is {MAX_DEPTH}", walk.max_depth));
        }
        if walk.max_comprehensions > MAX_COMPREHENSION_NESTING {
            return Err(format!(
                "comprehensions (exists/all/map/filter) nest {} deep; the limit is {MAX_COMPREHENSION_NESTING}",
                walk.max_comprehensions
            ));
        }
        Ok(Expression { program, source: source.to_string() })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed expression, macros expanded (for [`super::lint`]).
    pub fn ast(&self) -> &IdedExpr {
        self.program.expression()
    }

    /// Evaluates to a boolean; anything else (a missing field, a wrong type, a non-bool result) is an
    /// error in words.
    pub fn matches(&self, cx: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(cx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the expression returned {} instead of true or false", type_name(&other))),
            Err(e) => Err(one_line(&e.to_string())),
        }
    }
}

/// The helpers, registered once in a root context. Each alert is evaluated in a child scope of it that
/// binds `alert`, `tenant` and `now` ([`Helpers::scope`]), so an alert pays neither for registering the
/// helpers nor for more than one conversion of its JSON.
pub struct Helpers {
    root: Context<'static, 'static>,
}

impl std::fmt::Debug for Helpers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helpers").finish_non_exhaustive()
    }
}

impl Helpers {
    /// Registers every helper in a root context of `env`.
    pub fn new(env: Arc<Env>) -> Helpers {
        let mut cx = Context::with_env(env);
        for (name, result) in [
            ("inCidr", cx.add_function("inCidr", in_cidr)),
            ("evidenceOf", cx.add_function("evidenceOf", evidence_of)),
            ("pathUnder", cx.add_function("pathUnder", path_under)),
            ("hashIn", cx.add_function("hashIn", hash_in)),
            ("fullMatch", cx.add_function("fullMatch", full_match)),
            ("equalsIgnoreCase", cx.add_function("equalsIgnoreCase", equals_ignore_case)),
            ("containsIgnoreCase", cx.add_function("containsIgnoreCase", contains_ignore_case)),
            ("timeOfDayIn", cx.add_function("timeOfDayIn", time_of_day_in)),
            ("weekdayIn", cx.add_function("weekdayIn", weekday_in)),
        ] {
            // Only a clash with a standard overload can fail, and these names have none.
            result.unwrap_or_else(|e| panic!("helper {name} clashes with the CEL standard library: {e}"));
        }
        Helpers { root: cx }
    }

    /// The evaluation context for one alert: its variables bound once, in a scope that borrows the
    /// alert's JSON (strings are not copied); every rule and route is then evaluated against it.
    pub fn scope<'b, 'v>(&'b self, raw: &'v serde_json::Value, tenant: &'v str, now: DateTime<Utc>) -> Context<'b, 'v> {
        let mut cx = self.root.new_inner_scope();
        cx.add_variable_as_val("alert", json_val(raw));
        cx.add_variable_as_val("tenant", Box::new(CelString::from(tenant)));
        cx.add_variable_as_val("now", Box::new(CelTimestamp::from(now.fixed_offset())));
        cx
    }
}

/// A JSON value as CEL sees it, borrowing its strings: the same types `cel::to_value` gives (a positive
/// integer is a `uint`, a negative one an `int`, any other number a `double`), in one pass.
fn json_val(v: &serde_json::Value) -> Box<dyn Val + '_> {
    use serde_json::Value as Json;
    match v {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Box::new(CelUInt::from(u)),
            (None, Some(i)) => Box::new(CelInt::from(i)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(CelList::from(items.iter().map(json_val).collect::<Vec<_>>())),
        Json::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json_val(v)))
                .collect::<std::collections::HashMap<_, _>>(),
        )),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => "a number",
        Value::String(_) => "a string",
        Value::Null => "null",
        Value::Timestamp(_) => "a timestamp",
        Value::Duration(_) => "a duration",
        _ => "a non-boolean value",
    }
}

/// The deepest bracket nesting in `source`, outside string literals.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Checks one literal argument of a helper.
type LiteralCheck = fn(&str) -> Result<(), String>;

#[derive(Default)]
struct Walk {
    max_depth: usize,
    max_comprehensions: usize,
    problems: Vec<String>,
}

impl Walk {
    fn visit(&mut self, e: &IdedExpr, depth: usize, comprehensions: usize) {
        self.max_depth = self.max_depth.max(depth);
        self.max_comprehensions = self.max_comprehensions.max(comprehensions);
        if depth > MAX_DEPTH * 2 {
            return;
        }
        match &e.expr {
            Expr::Call(call) => {
                self.check_literals(&call.func_name, call.target.as_deref(), &call.args);
                if let Some(t) = &call.target {
                    self.visit(t, depth + 1, comprehensions);
                }
                for a in &call.args {
                    self.visit(a, depth + 1, comprehensions);
                }
            }
            Expr::Comprehension(c) => {
                self.visit(&c.iter_range, depth + 1, comprehensions);
                for part in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    self.visit(part, depth + 1, comprehensions + 1);
                }
            }
            Expr::List(l) => l.elements.iter().for_each(|x| self.visit(x, depth + 1, comprehensions)),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.visit(&me.key, depth + 1, comprehensions);
                        self.visit(&me.value, depth + 1, comprehensions);
                    }
                }
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.visit(&f.value, depth + 1, comprehensions);
                    }
                }
            }
            Expr::Select(s) => self.visit(&s.operand, depth + 1, comprehensions),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    /// Checks the literal arguments of helper calls, e.g. the CIDR in `ip.inCidr("10.0.0.0/33")`.
    fn check_literals(&mut self, func: &str, target: Option<&IdedExpr>, args: &[IdedExpr]) {
        // Called as a function, the first argument plays the target's part.
        let args: Vec<&IdedExpr> = if target.is_some() { args.iter().collect() } else { args.iter().skip(1).collect() };
        let strings = |e: &IdedExpr| -> Vec<String> {
            match &e.expr {
                Expr::Literal(LiteralValue::String(s)) => vec![s.inner().to_string()],
                Expr::List(l) => l
                    .elements
                    .iter()
                    .filter_map(|x| match &x.expr {
                        Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => vec![],
            }
        };
        let mut check = |r: Result<(), String>| {
            if let Err(e) = r {
                self.problems.push(format!("{func}: {e}"));
            }
        };
        // Helpers whose first argument is a literal (or a list of them) checked the same way.
        let first: Option<LiteralCheck> = match func {
            "inCidr" => Some(|s| Cidr::parse(s).map(|_| ())),
            "evidenceOf" => Some(|s| evidence_type(s).map(|_| ())),
            "pathUnder" => Some(|s| Folder::parse(s).map(|_| ())),
            "hashIn" => Some(|s| parse_hash(s).map(|_| ())),
            "fullMatch" => Some(|s| anchored(s).map(|_| ())),
            _ => None,
        };
        if let Some(parse) = first {
            for s in args.first().map(|a| strings(a)).unwrap_or_default() {
                check(parse(&s));
            }
            return;
        }
        match func {
            "timeOfDayIn" => {
                for (i, a) in args.iter().enumerate() {
                    for s in strings(a) {
                        check(if i < 2 { parse_time(&s).map(|_| ()) } else { parse_offset(&s).map(|_| ()) });
                    }
                }
            }
            "weekdayIn" => {
                for (i, a) in args.iter().enumerate() {
                    for s in strings(a) {
                        check(if i == 0 { parse_weekday(&s).map(|_| ()) } else { parse_offset(&s).map(|_| ()) });
                    }
                }
            }
            _ => {}
        }
    }
}

/// An IP prefix such as `203.0.113.0/24` or `2001:db8::/32`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| format!("{s:?} is not an IP range (a.b.c.d/n)"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { network, prefix })
    }

    /// True when `ip` lies in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

fn fail(function: &str, message: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

fn string_list(function: &str, v: &Value) -> Result<Vec<String>, ExecutionError> {
    match v {
        Value::String(s) => Ok(vec![s.to_string()]),
        Value::List(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.to_string()),
                _ => Err(fail(function, "expects a string or a list of strings")),
            })
            .collect(),
        _ => Err(fail(function, "expects a string or a list of strings")),
    }
}

fn in_cidr(This(ip): This<Arc<String>>, ranges: Value) -> Result<bool, ExecutionError> {
    let ranges = string_list("inCidr", &ranges)?;
    let Ok(ip) = ip.trim().parse::<IpAddr>() else {
        return Ok(false);
    };
    for r in ranges {
        if Cidr::parse(&r).map_err(|e| fail("inCidr", e))?.contains(ip) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// ASCII case-insensitive: `to_lowercase` would fold the Kelvin sign (U+212A) into `k` and other
/// look-alikes into letters, so that a name an attacker chose equals the one a rule allows.
fn equals_ignore_case(ftx: &FunctionContext<'_, '_>) -> Result<Value, ExecutionError> {
    let (a, b) = two_strings(ftx)?;
    Ok(Value::Bool(a.eq_ignore_ascii_case(b)))
}

fn contains_ignore_case(ftx: &FunctionContext<'_, '_>) -> Result<Value, ExecutionError> {
    let (a, b) = two_strings(ftx)?;
    let (hay, needle) = (a.as_bytes(), b.as_bytes());
    // Byte windows compared ASCII-case-insensitively: what lower-casing both and `contains` would say,
    // without copying either string (a match of valid UTF-8 in valid UTF-8 lies on character bounds).
    Ok(Value::Bool(needle.is_empty() || hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))))
}

/// The target and the argument of `a.f(b)` (or `f(a, b)`) as borrowed strings, with the errors the
/// typed extractors (`This<Arc<String>>`, `Arc<String>`) give: helpers called once per rule and alert
/// need not copy the alert's text.
fn two_strings<'a>(ftx: &'a FunctionContext<'_, '_>) -> Result<(&'a str, &'a str), ExecutionError> {
    fn string<'a>(v: &'a (dyn Val + '_)) -> Result<&'a str, ExecutionError> {
        v.downcast_ref::<CelString>()
            .map(|s| s.inner())
            .ok_or_else(|| ExecutionError::UnexpectedType { got: format!("{v:?}"), want: "Arc<String>".into() })
    }
    let (this, rest) = match (&ftx.this, ftx.args.split_first()) {
        (Some(this), _) => (this, ftx.args.as_slice()),
        (None, Some((first, rest))) => (first, rest),
        (None, None) => return Err(ExecutionError::missing_argument_or_target()),
    };
    let a = string(this.as_ref())?;
    let b = rest
        .first()
        .ok_or_else(|| ExecutionError::invalid_argument_count(ftx.args.len() - rest.len() + 1, ftx.args.len()))?;
    Ok((a, string(b.as_ref())?))
}

const EVIDENCE_PREFIX: &str = "#microsoft.graph.security.";

/// The `@odata.type` (ASCII lowercase) of an evidence kind: `ip`, `ipEvidence` or
/// `#microsoft.graph.security.ipEvidence` are all `#microsoft.graph.security.ipevidence`.
fn evidence_type(kind: &str) -> Result<String, String> {
    let k = kind.trim();
    let k = k.strip_prefix(EVIDENCE_PREFIX).unwrap_or(k);
    let k = match k.len().checked_sub("Evidence".len()) {
        Some(n) if k.is_char_boundary(n) && k[n..].eq_ignore_ascii_case("Evidence") => &k[..n],
        _ => k,
    };
    if !k.starts_with(|c: char| c.is_ascii_alphabetic()) || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("{kind:?} is not an evidence kind such as \"ip\", \"file\", \"process\" or \"user\""));
    }
    Ok(format!("{EVIDENCE_PREFIX}{k}evidence").to_ascii_lowercase())
}

/// The alert's evidence items of one kind, in order; no `evidence` (or null) is none. It reads the alert
/// where it lies and copies only the items of the kind: converting the whole alert to a [`Value`] first
/// would copy every evidence item for every rule.
fn evidence_of(ftx: &FunctionContext<'_, '_>) -> Result<Value, ExecutionError> {
    const F: &str = "evidenceOf";
    let (alert, kind) = match (&ftx.this, ftx.args.as_slice()) {
        (Some(alert), [kind]) => (alert, kind),
        (None, [alert, kind]) => (alert, kind),
        _ => return Err(fail(F, "expects (alert, kind)")),
    };
    let kind = kind.downcast_ref::<CelString>().ok_or_else(|| fail(F, "the kind must be a string"))?;
    let want = evidence_type(kind.inner()).map_err(|e| fail(F, e))?;
    let alert = alert.downcast_ref::<CelMap>().ok_or_else(|| fail(F, "expects the alert (a map)"))?;
    let items = match field(alert, "evidence") {
        None => return Ok(Value::List(Arc::new(Vec::new()))),
        Some(v) if v.downcast_ref::<CelNull>().is_some() => return Ok(Value::List(Arc::new(Vec::new()))),
        Some(v) => v.downcast_ref::<CelList>().ok_or_else(|| fail(F, "the alert's evidence is not a list"))?,
    };
    let mut out = Vec::new();
    for item in items.inner() {
        let of_kind = item
            .downcast_ref::<CelMap>()
            .and_then(|m| field(m, "@odata.type"))
            .and_then(|t| t.downcast_ref::<CelString>())
            .is_some_and(|t| {
                let t = t.inner().to_ascii_lowercase();
                t == want || format!("#{t}") == want
            });
        if of_kind {
            out.push(Value::try_from(item.as_ref())?);
        }
    }
    Ok(Value::List(Arc::new(out)))
}

/// The value of a string key of a CEL map, without copying the map.
fn field<'b, 'v>(map: &'b CelMap<'v>, name: &str) -> Option<&'b (dyn Val + 'v)> {
    map.inner().iter().find(|(k, _)| matches!(k, CelMapKey::String(s) if s.inner() == name)).map(|(_, v)| v.as_ref())
}

/// A folder that `pathUnder` compares paths against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// A Windows path (drive letter, UNC or backslashes): `\` and `/` separate, ASCII case is ignored.
    windows: bool,
    segments: Vec<String>,
}

impl Folder {
    /// Parses an absolute folder: `C:\Program Files\Backup\`, `\\server\share\dir` or `/opt/backup/`.
    pub fn parse(s: &str) -> Result<Folder, String> {
        let t = s.trim();
        let b = t.as_bytes();
        let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
        let unc = t.starts_with("\\\\");
        let windows = drive || unc || t.contains('\\');
        if !(drive || unc || (!windows && t.starts_with('/'))) {
            return Err(format!("{s:?} is not an absolute folder (C:\\…, \\\\server\\share\\… or /…)"));
        }
        if drive && b.get(2).is_some_and(|c| !matches!(c, b'\\' | b'/')) {
            return Err(format!("{s:?}: a drive-relative path; write {}\\{}", &t[..2], &t[2..]));
        }
        let mut segments = split_path(t, windows);
        while segments.len() > 1 && segments.last().is_some_and(String::is_empty) {
            segments.pop();
        }
        let first = segments.iter().position(|x| !x.is_empty()).unwrap_or(segments.len());
        if segments[first..].iter().any(|x| x.is_empty() || x == "." || x == "..") {
            return Err(format!("{s:?}: empty, . or .. segments are ambiguous; write the folder plainly"));
        }
        Ok(Folder { windows, segments })
    }

    /// True when `path` lies strictly below the folder. A path with `.` or `..` segments never does.
    pub fn contains(&self, path: &str) -> bool {
        let segs = split_path(path, self.windows);
        if segs.iter().any(|x| x == "." || x == "..") || segs.len() <= self.segments.len() {
            return false;
        }
        let same = |a: &String, b: &String| if self.windows { a.eq_ignore_ascii_case(b) } else { a == b };
        self.segments.iter().zip(&segs).all(|(a, b)| same(a, b))
            && segs[self.segments.len()..].iter().any(|x| !x.is_empty())
    }
}

fn split_path(p: &str, windows: bool) -> Vec<String> {
    if windows {
        p.split(['\\', '/']).map(str::to_string).collect()
    } else {
        p.split('/').map(str::to_string).collect()
    }
}

fn path_under(This(path): This<Arc<String>>, folders: Value) -> Result<bool, ExecutionError> {
    for f in string_list("pathUnder", &folders)? {
        if Folder::parse(&f).map_err(|e| fail("pathUnder", e))?.contains(&path) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A hash as a rule may list it: MD5, SHA-1 or SHA-256 in hex.
fn parse_hash(s: &str) -> Result<&str, String> {
    let t = s.trim();
    if matches!(t.len(), 32 | 40 | 64) && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t)
    } else {
        Err(format!("{s:?} is not an MD5, SHA-1 or SHA-256 hash in hex"))
    }
}

fn hash_in(This(hash): This<Arc<String>>, hashes: Value) -> Result<bool, ExecutionError> {
    let hashes = string_list("hashIn", &hashes)?;
    let valid = parse_hash(&hash).is_ok_and(|h| h.len() == hash.len());
    let mut found = false;
    for h in &hashes {
        let h = parse_hash(h).map_err(|e| fail("hashIn", e))?;
        found |= valid && h.eq_ignore_ascii_case(&hash);
    }
    Ok(found)
}

/// `re` anchored at both ends of the text. `re` is compiled alone first: a pattern such as `a)|(b`
/// that would close the wrapping group early is refused rather than left half-anchored.
fn anchored(re: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(re).map_err(|e| format!("{re:?} is not a regular expression: {}", one_line(&e.to_string())))?;
    regex::Regex::new(&format!(r"\A(?:{re})\z")).map_err(|e| one_line(&e.to_string()))
}

fn full_match(This(s): This<Arc<String>>, re: Arc<String>) -> Result<bool, ExecutionError> {
    Ok(anchored(&re).map_err(|e| fail("fullMatch", e))?.is_match(&s))
}

fn parse_time(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| format!("{s:?} is not a time of day (HH:MM, 24-hour)"))
}

fn parse_offset(s: &str) -> Result<FixedOffset, String> {
    let bad = || format!("{s:?} is not a UTC offset such as \"+02:00\" or \"-05:30\"");
    let t = s.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    let sign = match t.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let (h, m) = t[1..].split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

fn parse_weekday(s: &str) -> Result<Weekday, String> {
    s.trim().parse::<Weekday>().map_err(|_| format!("{s:?} is not a weekday (Mon … Sun)"))
}

fn local(
    function: &str,
    t: DateTime<FixedOffset>,
    offset: Option<&Value>,
) -> Result<DateTime<FixedOffset>, ExecutionError> {
    match offset {
        None => Ok(t.with_timezone(&FixedOffset::east_opt(0).expect("zero offset"))),
        Some(Value::String(s)) => Ok(t.with_timezone(&parse_offset(s).map_err(|e| fail(function, e))?)),
        Some(_) => Err(fail(function, "the offset must be a string such as \"+02:00\"")),
    }
}

fn time_of_day_in(
    This(t): This<DateTime<FixedOffset>>,
    cel::extractors::Arguments(args): cel::extractors::Arguments,
) -> Result<bool, ExecutionError> {
    const F: &str = "timeOfDayIn";
    let text = |i: usize| match args.get(i) {
        Some(Value::String(s)) => Ok(s.to_string()),
        _ => Err(fail(F, "expects (start \"HH:MM\", end \"HH:MM\"[, offset])")),
    };
    // Called as a method, `Arguments` holds only the explicit arguments; as a function, the timestamp too.
    let skip = usize::from(matches!(args.first(), Some(Value::Timestamp(_))));
    let start = parse_time(&text(skip)?).map_err(|e| fail(F, e))?;
    let end = parse_time(&text(skip + 1)?).map_err(|e| fail(F, e))?;
    let at = local(F, t, args.get(skip + 2))?;
    let now = NaiveTime::from_hms_opt(at.hour(), at.minute(), at.second()).expect("valid time");
    Ok(if start <= end { start <= now && now < end } else { now >= start || now < end })
}

fn weekday_in(
    This(t): This<DateTime<FixedOffset>>,
    cel::extractors::Arguments(args): cel::extractors::Arguments,
) -> Result<bool, ExecutionError> {
    const F: &str = "weekdayIn";
    let skip = usize::from(matches!(args.first(), Some(Value::Timestamp(_))));
    let days = args.get(skip).ok_or_else(|| fail(F, "expects a list of weekdays"))?;
    let days: Vec<Weekday> =
        string_list(F, days)?.iter().map(|d| parse_weekday(d).map_err(|e| fail(F, e))).collect::<Result<_, _>>()?;
    let at = local(F, t, args.get(skip + 1))?;
    Ok(days.contains(&at.weekday()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(source: &str, alert: serde_json::Value, now: &str) -> Result<bool, String> {
        let env = env();
        let e = Expression::compile(&env, source)?;
        let helpers = Helpers::new(env);
        let cx = helpers.scope(&alert, "contoso", now.parse().unwrap());
        e.matches(&cx)
    }

    const NOON: &str = "2026-11-26T12:00:00Z"; // a Thursday

    #[test]
    fn helpers_behave_as_documented() {
        let a = json!({"ip": "203.0.113.7", "v6": "2001:db8::1", "mapped": "::ffff:203.0.113.9", "name": "ÄRGER"});
        let cases: &[(&str, bool)] = &[
            (r#"alert.ip.inCidr("203.0.113.0/24")"#, true),
            (r#"alert.ip.inCidr("203.0.114.0/24")"#, false),
            (r#"inCidr(alert.ip, ["10.0.0.0/8", "203.0.113.0/25"])"#, true),
            (r#"alert.v6.inCidr("2001:db8::/32")"#, true),
            (r#"alert.v6.inCidr("203.0.113.0/24")"#, false),
            (r#"alert.mapped.inCidr("203.0.113.0/24")"#, true),
            (r#""not an ip".inCidr("0.0.0.0/0")"#, false),
            (r#"alert.ip.inCidr("0.0.0.0/0")"#, true),
            (r#"alert.name.equalsIgnoreCase("Ärger")"#, true),
            (r#"alert.name.equalsIgnoreCase("ärger")"#, false),
            (r#"alert.name.equalsIgnoreCase("arger")"#, false),
            (r#"alert.name.containsIgnoreCase("rge")"#, true),
            (r#"now.timeOfDayIn("09:00", "17:00")"#, true),
            (r#"now.timeOfDayIn("22:00", "06:00")"#, false),
            (r#"now.timeOfDayIn("22:00", "06:00", "+11:00")"#, true),
            (r#"now.weekdayIn(["Thu"])"#, true),
            (r#"now.weekdayIn(["Sat", "Sun"])"#, false),
            (r#"now.weekdayIn(["Fri"], "+13:00")"#, true),
            (r#"tenant == "contoso""#, true),
        ];
        for (source, want) in cases {
            assert_eq!(eval(source, a.clone(), NOON), Ok(*want), "{source}");
        }
        assert_eq!(eval(r#"now.timeOfDayIn("22:00", "06:00")"#, a.clone(), "2026-11-26T23:59:00Z"), Ok(true));
        assert_eq!(eval(r#"now.timeOfDayIn("22:00", "06:00")"#, a, "2026-11-26T06:00:00Z"), Ok(false));
    }

    fn ip(addr: &str) -> serde_json::Value {
        json!({"@odata.type": "#microsoft.graph.security.ipEvidence", "ipAddress": addr, "roles": ["attacker"]})
    }

    fn device() -> serde_json::Value {
        json!({"@odata.type": "#microsoft.graph.security.deviceEvidence", "hostName": "fin-ws-042"})
    }

    #[test]
    fn all_evidence_needs_at_least_one_item_and_every_item() {
        const RULE: &str = r#"alert.allEvidence("ip", e, e.ipAddress.inCidr("203.0.113.0/24"))"#;
        const EXISTS: &str = r#"alert.evidence.exists(e, has(e.ipAddress) && e.ipAddress.inCidr("203.0.113.0/24"))"#;
        const ALL: &str = r#"alert.evidence.all(e, has(e.ipAddress) && e.ipAddress.inCidr("203.0.113.0/24"))"#;
        let mimikatz = json!({"@odata.type": "#microsoft.graph.security.processEvidence",
            "imageFile": {"fileName": "mimikatz.exe"}, "processCommandLine": "mimikatz sekurlsa::logonpasswords"});
        // (evidence, allEvidence, what the unsafe exists idiom says, what a bare all says)
        type Case = (&'static str, serde_json::Value, Result<bool, ()>, bool, bool);
        let cases: Vec<Case> = vec![
            ("no evidence", json!([]), Ok(false), false, true),
            ("no ip evidence", json!([device()]), Ok(false), false, false),
            ("one pentest ip", json!([ip("203.0.113.7")]), Ok(true), true, true),
            ("pentest ip and a device", json!([ip("203.0.113.7"), device()]), Ok(true), true, false),
            ("two pentest ips", json!([ip("203.0.113.7"), ip("203.0.113.200")]), Ok(true), true, true),
            ("pentest ip and attacker ip", json!([ip("203.0.113.7"), ip("198.51.100.66")]), Ok(false), true, false),
            (
                "pentest ip, attacker ip, mimikatz",
                json!([ip("203.0.113.7"), ip("198.51.100.66"), mimikatz]),
                Ok(false),
                true,
                false,
            ),
            (
                "an ip evidence without an address",
                json!([ip("203.0.113.7"), {"@odata.type": "#microsoft.graph.security.ipEvidence"}]),
                Err(()),
                true,
                false,
            ),
        ];
        for (name, evidence, want, exists, all) in cases {
            let alert = json!({"evidence": evidence});
            assert_eq!(eval(RULE, alert.clone(), NOON).map_err(|_| ()), want, "allEvidence: {name}");
            assert_eq!(eval(EXISTS, alert.clone(), NOON), Ok(exists), "exists: {name}");
            assert_eq!(eval(ALL, alert, NOON), Ok(all), "all: {name}");
        }
        // No evidence field at all, the function form, and the kind spelled as the full type.
        assert_eq!(eval(RULE, json!({}), NOON), Ok(false));
        let alert = json!({"evidence": [ip("203.0.113.7"), device()]});
        let global = r#"allEvidence(alert, "ipEvidence", e, e.ipAddress.inCidr("203.0.113.0/24"))"#;
        assert_eq!(eval(global, alert.clone(), NOON), Ok(true));
        assert_eq!(
            eval(r##"size(alert.evidenceOf("#microsoft.graph.security.ipEvidence")) == 1"##, alert.clone(), NOON),
            Ok(true)
        );
        assert_eq!(eval(r#"size(evidenceOf(alert, "device")) == 1"#, alert.clone(), NOON), Ok(true));
        assert_eq!(eval(r#"alert.allEvidence("device", d, d.hostName == "fin-ws-042")"#, alert, NOON), Ok(true));
    }

    #[test]
    fn string_helpers_fail_safe() {
        let a = json!({
            "kelvin": "svc-bac\u{212A}up",
            "upper": "SVC-BACKUP",
            "image": "C:\\Program Files\\BackupEvil\\agent.exe",
            "good": "c:/program files/backup/bin/agent.exe",
            "dotdot": "C:\\Program Files\\Backup\\..\\Evil\\x.exe",
            "linux": "/opt/Backup/agent",
            "linuxbs": "/opt/backup\\evil",
            "hash": "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "title": "Evil.exe started by backup.exe",
        });
        let cases: &[(&str, bool)] = &[
            // The Kelvin sign is not k; ASCII case still folds.
            (r#"alert.kelvin.equalsIgnoreCase("svc-backup")"#, false),
            (r#"alert.kelvin.containsIgnoreCase("backup")"#, false),
            (r#"alert.upper.equalsIgnoreCase("svc-backup")"#, true),
            (r#"alert.upper == "svc-backup""#, false),
            // matches finds the pattern anywhere; fullMatch needs all of it.
            (r#"alert.title.matches("backup\\.exe")"#, true),
            (r#"alert.title.fullMatch("backup\\.exe")"#, false),
            (r#""backup.exe".fullMatch("backup\\.exe")"#, true),
            (r#""xb".matches("^a|b$")"#, true),
            (r#""xb".fullMatch("a|b")"#, false),
            (r#""evil\nbenign".fullMatch("(?m)^benign$")"#, false),
            // startsWith lets a sibling folder through; pathUnder does not.
            (r#"alert.image.startsWith("C:\\Program Files\\Backup")"#, true),
            (r#"alert.image.pathUnder("C:\\Program Files\\Backup")"#, false),
            (r#"alert.image.pathUnder("C:\\Program Files\\Backup\\")"#, false),
            (r#"alert.image.pathUnder(["D:\\Tools", "C:\\Program Files\\BackupEvil"])"#, true),
            (r#"alert.good.pathUnder("C:\\Program Files\\Backup\\")"#, true),
            (r#"alert.dotdot.pathUnder("C:\\Program Files\\Backup")"#, false),
            (r#""C:\\Program Files\\Backup\\".pathUnder("C:\\Program Files\\Backup")"#, false),
            (r#"pathUnder("\\\\fs01\\share\\x.txt", "\\\\fs01\\share")"#, true),
            (r#"pathUnder("\\fs01\\share\\x.txt", "\\\\fs01\\share")"#, false),
            // POSIX paths: exact case, and a backslash is part of a name.
            (r#"alert.linux.pathUnder("/opt/backup")"#, false),
            (r#"alert.linux.pathUnder("/opt/Backup/")"#, true),
            (r#"alert.linuxbs.pathUnder("/opt/backup")"#, false),
            // Hashes: hex case ignored, nothing else.
            (r#"alert.hash.hashIn(["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"])"#, true),
            (r#"alert.hash.hashIn(["d41d8cd98f00b204e9800998ecf8427e"])"#, false),
            (r#""".hashIn(["d41d8cd98f00b204e9800998ecf8427e"])"#, false),
            (r#""d41d8cd98f00b204e9800998ecf8427e ".hashIn(["d41d8cd98f00b204e9800998ecf8427e"])"#, false),
            (r#"hashIn("D41D8CD98F00B204E9800998ECF8427E", "d41d8cd98f00b204e9800998ecf8427e")"#, true),
        ];
        for (source, want) in cases {
            assert_eq!(eval(source, a.clone(), NOON), Ok(*want), "{source}");
        }
    }

    #[test]
    fn bad_literals_and_caps_are_compile_errors() {
        let env = env();
        let cases: &[(&str, &str)] = &[
            (r#"alert.ip.inCidr("10.0.0.0/33")"#, "prefix length"),
            (r#"alert.ip.inCidr(["10.0.0.0/8", "nope"])"#, "not an IP range"),
            (r#"now.timeOfDayIn("25:00", "06:00")"#, "not a time of day"),
            (r#"now.weekdayIn(["Caturday"])"#, "not a weekday"),
            (r#"now.weekdayIn(["Sat"], "CET")"#, "UTC offset"),
            (r#"alert.allEvidence("i p", e, true)"#, "not an evidence kind"),
            (r#"alert.allEvidence("ip", e.x, true)"#, "simple name"),
            (r#"alert.evidenceOf("")"#, "not an evidence kind"),
            (r#"alert.p.pathUnder("Program Files\\Backup")"#, "not an absolute folder"),
            (r#"alert.p.pathUnder("C:Backup")"#, "drive-relative"),
            (r#"alert.p.pathUnder(["/opt/../etc"])"#, "segments"),
            (r#"alert.h.hashIn(["abc"])"#, "not an MD5"),
            (r#"alert.t.fullMatch("(")"#, "not a regular expression"),
            (r#"alert.t.fullMatch("a)|(b")"#, "not a regular expression"),
            ("alert.severity == ", "CEL syntax"),
            ("", "empty"),
            ("   ", "empty"),
        ];
        for (source, want) in cases {
            let err = Expression::compile(&env, source).unwrap_err();
            assert!(err.contains(want), "{source}: {err}");
        }
        let long = format!("alert.title == \"{}\"", "x".repeat(MAX_LENGTH));
        assert!(Expression::compile(&env, &long).unwrap_err().contains("bytes long"));
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(Expression::compile(&env, &deep).unwrap_err().contains("nest"));
        // Brackets inside strings do not count.
        assert!(Expression::compile(&env, &format!("alert.title == \"{}\"", "(".repeat(100))).is_ok());
        let two = "alert.evidence.exists(e, e.ipInterfaces.exists(i, i.startsWith(\"10.\")))";
        assert!(Expression::compile(&env, two).is_ok());
        let three = "alert.evidence.exists(e, e.ipInterfaces.exists(i, alert.evidence.all(x, true)))";
        assert!(Expression::compile(&env, three).unwrap_err().contains("comprehensions"), "three levels");
    }

    #[test]
    fn runtime_errors_are_reported_not_panics() {
        let err = eval("alert.missing == 1", json!({}), NOON).unwrap_err();
        assert!(err.contains("missing"), "{err}");
        let err = eval("alert.n", json!({"n": 3}), NOON).unwrap_err();
        assert!(err.contains("instead of true or false"), "{err}");
        let err = eval("alert.n.inCidr(\"10.0.0.0/8\")", json!({"n": 3}), NOON).unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn cidr_edges() {
        let c = Cidr::parse("10.1.2.3").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.1.2.4".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/129").is_err());
    }
}
