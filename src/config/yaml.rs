//! YAML to JSON with a line and column for every node, so that every config error can name its line.
//!
//! serde's YAML deserializers report a location only for syntax errors, not for a value that fails a
//! later check (an unknown receiver, a bad CEL expression). So the file is read once into a JSON value
//! plus a map from each node's path (`routes[1].receivers[0]`) to where it starts in the file.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::yaml::Yaml;

/// Where a node starts: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// A YAML document as JSON, with locations by path.
#[derive(Debug, Clone)]
pub struct Located {
    /// The document.
    pub value: Value,
    /// Path → location of the node (for a mapping key's value, the value's start).
    pub locations: HashMap<String, Location>,
    /// Path → location of the key that introduces it (for "unknown field" errors).
    pub key_locations: HashMap<String, Location>,
}

impl Located {
    /// The best location for `path`: the node's value, else its key, else the nearest ancestor.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut p = path.to_string();
        loop {
            if let Some(l) = self.locations.get(&p).or_else(|| self.key_locations.get(&p)) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }
}

/// A syntax error with its place.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// What is wrong.
    pub message: String,
    /// Where.
    pub location: Location,
}

/// Joins a path and a map key the way errors print paths.
pub fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Joins a path and a sequence index.
pub fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

enum Frame {
    Seq { path: String, items: Vec<Value>, anchor: usize },
    Map { path: String, map: Map<String, Value>, pending_key: Option<(String, Location)>, anchor: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Value>,
    anchors: HashMap<usize, Value>,
    locations: HashMap<String, Location>,
    key_locations: HashMap<String, Location>,
    error: Option<SyntaxError>,
}

fn loc(mark: Marker) -> Location {
    Location { line: mark.line(), column: mark.col() + 1 }
}

fn scalar_value(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => {
            r.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number).unwrap_or(Value::String(r))
        }
        _ => Value::String(text),
    }
}

impl Builder {
    /// The path the next node gets, and whether it is a key (a map waiting for its key).
    fn next_path(&self) -> (String, bool) {
        match self.stack.last() {
            None => (String::new(), false),
            Some(Frame::Seq { path, items, .. }) => (join_index(path, items.len()), false),
            Some(Frame::Map { path, pending_key: Some((k, _)), .. }) => (join_key(path, k), false),
            Some(Frame::Map { pending_key: None, .. }) => (String::new(), true),
        }
    }

    fn fail(&mut self, message: String, at: Marker) {
        if self.error.is_none() {
            self.error = Some(SyntaxError { message, location: loc(at) });
        }
    }

    fn push_value(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, pending_key, path, .. }) => {
                if let Some((k, _)) = pending_key.take() {
                    map.insert(k, value);
                } else {
                    // A non-scalar key; reported by the caller.
                    let _ = path;
                }
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let (path, is_key) = self.next_path();
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                if is_key {
                    let key_path = match self.stack.last() {
                        Some(Frame::Map { path, .. }) => join_key(path, &text),
                        _ => text.clone(),
                    };
                    if let Some(Frame::Map { map, pending_key, .. }) = self.stack.last_mut() {
                        if map.contains_key(&text) {
                            self.fail(format!("duplicate key `{text}`"), mark);
                            return;
                        }
                        *pending_key = Some((text, loc(mark)));
                    }
                    self.key_locations.insert(key_path, loc(mark));
                } else {
                    self.locations.insert(path, loc(mark));
                    self.push_value(scalar_value(text, style), anchor);
                }
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) if is_key => {
                let _ = anchor;
                self.fail("a mapping key must be a plain value".into(), mark);
            }
            Event::SequenceStart(anchor, _) => {
                self.locations.insert(path.clone(), loc(mark));
                self.stack.push(Frame::Seq { path, items: Vec::new(), anchor });
            }
            Event::MappingStart(anchor, _) => {
                self.locations.insert(path.clone(), loc(mark));
                self.stack.push(Frame::Map { path, map: Map::new(), pending_key: None, anchor });
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq { items, anchor, .. }) = self.stack.pop() {
                    self.push_value(Value::Array(items), anchor);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map { map, anchor, .. }) = self.stack.pop() {
                    self.push_value(Value::Object(map), anchor);
                }
            }
            Event::Alias(id) => {
                if is_key {
                    self.fail("an alias cannot be a mapping key".into(), mark);
                    return;
                }
                match self.anchors.get(&id).cloned() {
                    Some(v) => {
                        self.locations.insert(path, loc(mark));
                        self.push_value(v, 0);
                    }
                    None => self.fail("unknown alias".into(), mark),
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart | Event::DocumentEnd => {}
        }
    }
}

/// Parses one YAML document; an empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Located, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(SyntaxError {
            message: e.info().to_string(),
            location: Location { line: m.line(), column: m.col() + 1 },
        });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    let value = match builder.root {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v) => v,
    };
    Ok(Located { value, locations: builder.locations, key_locations: builder.key_locations })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_and_locates() {
        let text = "a: 1\nb:\n  - x\n  - {c: true, d: \"2\"}\nempty:\nf: 1.5\n";
        let doc = parse(text).unwrap();
        assert_eq!(doc.value, json!({"a": 1, "b": ["x", {"c": true, "d": "2"}], "empty": null, "f": 1.5}));
        assert_eq!(doc.locate("b[1].d"), Some(Location { line: 4, column: 18 }));
        assert_eq!(doc.locate("b[0]").unwrap().line, 3);
        assert_eq!(doc.key_locations["b"].line, 2);
        // A missing child falls back to its parent.
        assert_eq!(doc.locate("b[1].zzz").unwrap().line, 4);
    }

    #[test]
    fn quoted_scalars_stay_strings_and_aliases_resolve() {
        let doc = parse("x: &a {k: 'true'}\ny: *a\nz: '10'\n").unwrap();
        assert_eq!(doc.value, json!({"x": {"k": "true"}, "y": {"k": "true"}, "z": "10"}));
    }

    #[test]
    fn syntax_errors_and_duplicates_have_lines() {
        let e = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(e.location.line >= 2, "{e:?}");
        let d = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(d.location.line, 3);
        assert!(d.message.contains("duplicate"));
        assert_eq!(parse("").unwrap().value, json!({}));
    }
}
