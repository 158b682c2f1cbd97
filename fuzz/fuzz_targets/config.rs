//! Fuzzes the config loader: any text must give a config or located errors, never a panic, and an
//! environment reference must never put the variable's value into an error message.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-value-8c1f";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |name: &str| (name == "S").then(|| SECRET.to_string());
    let now = "2026-11-26T12:00:00Z".parse().expect("a time");
    match secmon::config::load_str(text, Path::new("fuzz.yaml"), &env, now) {
        Ok(loaded) => {
            assert!(!loaded.config.tenants.is_empty(), "validation requires a tenant");
            for w in &loaded.warnings {
                assert!(!loaded.render(w).contains(SECRET));
            }
        }
        Err(e) => assert!(!e.to_string().contains(SECRET), "a secret leaked into: {e}"),
    }
});
