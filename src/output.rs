//! One shape for every command's machine output: JSON lines, one object per line, each with a `kind`
//! first that says what the line is (`poll`, `check`, `summary`, `queue_stats`, `audit_record`, …).
//!
//! A script reads a command's stdout line by line and dispatches on `kind`; a new field never breaks
//! it, and a command that prints several kinds of line (a line per item, then a summary) needs no
//! wrapper object. Human text (progress bars, logs, hints) goes to stderr.

use serde::Serialize;
use serde_json::{Map, Value};

/// `value` as one JSON line with `"kind": kind` first; a value that is not an object is put under
/// `value`.
pub fn line<T: Serialize + ?Sized>(kind: &str, value: &T) -> String {
    let mut out = Map::new();
    out.insert("kind".into(), Value::String(kind.into()));
    match serde_json::to_value(value).expect("command outputs serialize") {
        Value::Object(fields) => {
            for (k, v) in fields {
                if k != "kind" {
                    out.insert(k, v);
                }
            }
        }
        other => {
            out.insert("value".into(), other);
        }
    }
    Value::Object(out).to_string()
}

/// Prints [`line`] on stdout.
pub fn print<T: Serialize + ?Sized>(kind: &str, value: &T) {
    println!("{}", line(kind, value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_comes_first_and_wins() {
        let l = line("poll", &serde_json::json!({"tenant": "contoso", "kind": "other", "queued": 2}));
        assert_eq!(l, r#"{"kind":"poll","tenant":"contoso","queued":2}"#);
        assert_eq!(line("count", &3), r#"{"kind":"count","value":3}"#);
        assert!(!line("x", &serde_json::json!({"a": "b\nc"})).contains('\n'), "one line");
    }
}
