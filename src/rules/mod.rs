//! Known-benign close rules and notification routes: parse, validate, evaluate. Pure: no I/O, and time
//! is an argument.
//!
//! - [`CloseRuleConfig`] / [`RouteConfig`]: the config sections (types in `config::rules`); [`check`]
//!   compiles every expression, every error located at its field;
//! - [`expr`]: CEL compiled once with length and nesting caps, plus the domain helpers;
//! - `prefilter`: the literal conjuncts of every rule and route (`alert.x == "y"`, …) decided in Rust,
//!   once per decision, so that CEL runs only for the expressions they do not decide;
//! - [`check`]: errors for names an expression uses that do not exist (variables, functions, alert
//!   properties);
//! - [`lint`]: warnings about close rules that compile but fail open (`exists` over evidence, …);
//! - [`Engine`]: the compiled rules and routes; [`Engine::decide`] turns one alert into a [`Decision`];
//! - [`dry_run`]: `secmon rules test`, the offline evaluation of alert files;
//! - [`replay`]: `secmon rules replay`, every close rule judged on a tenant's history as it arrived,
//!   analysts' verdicts as ground truth; [`report`] renders it as one self-contained HTML page;
//! - [`suggest`]: `secmon rules suggest`, draft shadow rules for what analysts keep resolving as benign.

use crate::config::{Config, Issue};

pub mod check;
pub mod dry_run;
mod engine;
pub mod expr;
pub mod lint;
mod prefilter;
pub mod replay;
pub mod report;
pub mod suggest;

pub use engine::{
    Blocked, COMMENT_PREFIX, CloseMatch, Decision, Delivery, Engine, EvalError, Outcome, RouteMatch, Update,
};

pub use crate::config::rules::{
    CLOSE_OFF, CLOSE_ON, CloseRuleConfig, DEFAULT_MAX_PER_HOUR, DEFAULT_MAX_SEVERITY, EXPIRY_WARNING_DAYS, Mode,
    RouteConfig, closing_disabled,
};

/// Compiles every close rule's and route's `when` (with the close-rule lints), each finding located at
/// its field. The rest of both sections is checked when the config loads.
pub fn check(config: &Config, out: &mut Vec<Issue>) {
    let env = expr::env();
    for (i, r) in config.close_rules.iter().enumerate() {
        let path = format!("close_rules[{i}].when");
        match expr::Expression::compile(&env, &r.when) {
            Err(e) => out.push(Issue::error(path, e)),
            Ok(when) => {
                for problem in check::references(&when) {
                    out.push(Issue::error(path.clone(), problem));
                }
                for finding in lint::close_rule(&when) {
                    out.push(Issue::warning(path.clone(), finding.to_string()));
                }
            }
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(when) = &r.when {
            match expr::Expression::compile(&env, when) {
                Err(e) => out.push(Issue::error(format!("routes[{i}].when"), e)),
                Ok(when) => {
                    for problem in check::references(&when) {
                        out.push(Issue::error(format!("routes[{i}].when"), problem));
                    }
                }
            }
        }
    }
}
