//! The layering rules of `docs/architecture.md`, checked on the source: which module may import which.
//!
//! A path like `crate::host` anywhere in a file (a `use`, a qualified call, a doc link) counts as an
//! import: the rule is about what a module knows of, not only what it names in `use` lines.

use std::path::{Path, PathBuf};

/// The modules under `src/` that are stages of the pipeline.
const STAGES: &[&str] = &["intake", "rules", "respond", "notify", "doctor", "triage", "graph", "store", "retention"];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `crate::<module>` a file's code mentions, with the line number.
fn mentions(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // `super::` chains and `secmon_emulator::` do not count; `crate::` at a word boundary does.
            let boundary =
                at == 0 || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() && rest.as_bytes()[at - 1] != b'_';
            if boundary && !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

fn violations(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    // A module is a folder (`src/store/`) or one file (`src/retention.rs`).
    let root = src().join(dir);
    let files = if root.is_dir() { rust_files(&root) } else { vec![src().join(format!("{dir}.rs"))] };
    for file in files {
        for (line, module) in mentions(&file) {
            if forbidden.contains(&module.as_str()) {
                found.push(format!("{}:{line}: crate::{module}", file.strip_prefix(src()).unwrap().display()));
            }
        }
    }
    found
}

#[test]
fn config_is_a_leaf() {
    let mut forbidden: Vec<&str> = STAGES.to_vec();
    forbidden.extend(["functions", "host", "app", "setup", "demo"]);
    let found = violations("config", &forbidden);
    assert!(found.is_empty(), "src/config/ must import no stage, function or host module:\n{}", found.join("\n"));
}

#[test]
fn stages_never_import_a_host_or_the_function_layer() {
    let mut found = Vec::new();
    for stage in STAGES {
        found.extend(violations(stage, &["host", "functions", "demo", "setup"]));
    }
    assert!(found.is_empty(), "a stage imports a host or the function layer:\n{}", found.join("\n"));
}

#[test]
fn the_function_layer_never_imports_a_host() {
    let found = violations("functions", &["host", "demo", "setup"]);
    assert!(found.is_empty(), "src/functions/ imports a host:\n{}", found.join("\n"));
}

#[test]
fn one_router_serves_api_function() {
    let mut routers = Vec::new();
    for file in rust_files(&src()) {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("\"/api/{function}\"") {
            routers.push(file.strip_prefix(src()).unwrap().display().to_string());
        }
    }
    assert_eq!(routers, ["functions/http.rs"], "the /api/{{function}} route is defined in more than one place");
}

#[test]
fn no_process_global_cache_of_compiled_state() {
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("static ") && (l.contains("Engine") || l.contains("Receivers") || l.contains("CACHE")) {
                found.push(format!("{}:{}: {l}", file.strip_prefix(src()).unwrap().display(), n + 1));
            }
        }
    }
    assert!(found.is_empty(), "compiled rules and receivers live in the App, not in statics:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_an_import() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.rs");
    std::fs::write(&file, "use crate::host::azure;\nfn f() { mycrate::host(); super::crate_x(); }\n").unwrap();
    assert_eq!(mentions(&file), [(1, "host".to_string())]);
}
