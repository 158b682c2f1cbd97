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
//! - `s.equalsIgnoreCase("x")`, `s.containsIgnoreCase("x")`: Unicode case-insensitive comparison;
//! - `now.timeOfDayIn("22:00", "06:00")` (end exclusive, may wrap past midnight) and
//!   `now.weekdayIn(["Sat", "Sun"])`, both in UTC or, with a last argument such as `"+02:00"`, at that
//!   fixed offset.

use std::net::IpAddr;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::extractors::This;
use cel::{Context, Env, ExecutionError, IdedExpr, Program, Value};
use chrono::{DateTime, Datelike, FixedOffset, NaiveTime, Timelike, Utc, Weekday};

/// Longest expression accepted, in bytes.
pub const MAX_LENGTH: usize = 4096;
/// Deepest nesting of brackets and sub-expressions accepted.
pub const MAX_DEPTH: usize = 32;
/// Most comprehensions (`exists`, `all`, `map`, `filter`, …) nested inside each other: two allow
/// "any evidence with any IP in a range"; three would allow a billion steps over 1,000-item lists.
pub const MAX_COMPREHENSION_NESTING: usize = 2;

/// A compiled expression and its source.
#[derive(Debug)]
pub struct Expression {
    program: Program,
    source: String,
}

/// The environment every expression is compiled and run in: the CEL standard library plus the strings
/// extension (`lowerAscii`, `split`, …).
pub fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings).expect("the strings extension registers once");
    Arc::new(env)
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

/// The evaluation context for one alert: variables bound once, helpers registered; every rule and route
/// is then evaluated against it.
pub fn context(env: Arc<Env>, raw: &serde_json::Value, tenant: &str, now: DateTime<Utc>) -> Context<'static, 'static> {
    let mut cx = Context::with_env(env);
    // A JSON value always converts; keep a null rather than fail should that ever change.
    cx.add_variable_from_value("alert", cel::to_value(raw).unwrap_or(Value::Null));
    cx.add_variable_from_value("tenant", tenant.to_string());
    cx.add_variable_from_value("now", Value::Timestamp(now.fixed_offset()));
    for (name, result) in [
        ("inCidr", cx.add_function("inCidr", in_cidr)),
        ("equalsIgnoreCase", cx.add_function("equalsIgnoreCase", equals_ignore_case)),
        ("containsIgnoreCase", cx.add_function("containsIgnoreCase", contains_ignore_case)),
        ("timeOfDayIn", cx.add_function("timeOfDayIn", time_of_day_in)),
        ("weekdayIn", cx.add_function("weekdayIn", weekday_in)),
    ] {
        // Only a clash with a standard overload can fail, and these names have none.
        result.unwrap_or_else(|e| panic!("helper {name} clashes with the CEL standard library: {e}"));
    }
    cx
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
        match func {
            "inCidr" => {
                for s in args.first().map(|a| strings(a)).unwrap_or_default() {
                    check(Cidr::parse(&s).map(|_| ()));
                }
            }
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

fn fold(s: &str) -> String {
    s.to_lowercase()
}

fn equals_ignore_case(This(a): This<Arc<String>>, b: Arc<String>) -> bool {
    a.as_str() == b.as_str() || fold(&a) == fold(&b)
}

fn contains_ignore_case(This(a): This<Arc<String>>, b: Arc<String>) -> bool {
    fold(&a).contains(&fold(&b))
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
        let cx = context(env, &alert, "contoso", now.parse().unwrap());
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
            (r#"alert.name.equalsIgnoreCase("ärger")"#, true),
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

    #[test]
    fn bad_literals_and_caps_are_compile_errors() {
        let env = env();
        let cases: &[(&str, &str)] = &[
            (r#"alert.ip.inCidr("10.0.0.0/33")"#, "prefix length"),
            (r#"alert.ip.inCidr(["10.0.0.0/8", "nope"])"#, "not an IP range"),
            (r#"now.timeOfDayIn("25:00", "06:00")"#, "not a time of day"),
            (r#"now.weekdayIn(["Caturday"])"#, "not a weekday"),
            (r#"now.weekdayIn(["Sat"], "CET")"#, "UTC offset"),
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
