//! `secmon rules test`: evaluate the config's rules and routes against alert files, offline.
//!
//! No network, no store: the engine is built from the loaded config alone, and each alert's decision is
//! printed as one JSON line (see [`super::Decision::test_line`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::Engine;
use crate::alert::Alert;

/// Reads the alerts in one file: a single alert object, an array of them, or a Graph list response
/// (`{"value": [...]}`).
pub fn read_alerts(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    match doc {
        Value::Array(items) => Ok(items),
        Value::Object(ref map) if map.get("value").is_some_and(Value::is_array) && !map.contains_key("id") => {
            Ok(map["value"].as_array().expect("checked").clone())
        }
        Value::Object(_) => Ok(vec![doc]),
        _ => Err(format!("{}: expected an alert, an array of alerts or a Graph list response", path.display())),
    }
}

/// Evaluates every alert in `paths` and writes one decision line per alert to `out`; problems with the
/// input, and every expression that failed to evaluate on an alert (which counts as "no match"), go to
/// `problems`. Returns false when any input could not be read or any expression failed. With `closing_disabled`
/// (`SECMON_CLOSE=off`), enforce rules show as shadow, as they would run.
pub fn run(
    engine: &Engine,
    closing_disabled: bool,
    paths: &[PathBuf],
    tenant: &str,
    now: DateTime<Utc>,
    out: &mut dyn Write,
    problems: &mut dyn Write,
) -> std::io::Result<bool> {
    let mut ok = true;
    for path in paths {
        let alerts = match read_alerts(path) {
            Ok(a) => a,
            Err(e) => {
                writeln!(problems, "{e}")?;
                ok = false;
                continue;
            }
        };
        for (i, raw) in alerts.into_iter().enumerate() {
            match Alert::from_value(raw) {
                Ok(alert) => {
                    let mut decision = engine.decide(&alert, tenant, now);
                    if closing_disabled {
                        decision = decision.into_shadow("SECMON_CLOSE=off");
                    }
                    writeln!(out, "{}", decision.test_line(&alert.id))?;
                    // An expression that fails on an alert counts as "no match": say so, and fail the run.
                    for e in &decision.errors {
                        writeln!(problems, "{}: alert {}: {} failed: {}", path.display(), alert.id, e.at, e.message)?;
                        ok = false;
                    }
                }
                Err(e) => {
                    writeln!(problems, "{}: item {i}: not an alert: {e}", path.display())?;
                    ok = false;
                }
            }
        }
    }
    Ok(ok)
}
