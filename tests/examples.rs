//! The configs shipped in `examples/` stay valid as the code changes.

use std::path::Path;

#[test]
fn the_example_config_validates() {
    let env = |name: &str| match name {
        "FABRIKAM_CLIENT_SECRET" => Some("example-secret-value".to_string()),
        "SECMON_TEAMS_URL" => Some(
            "https://prod-01.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=EXAMPLE".into(),
        ),
        _ => None,
    };
    let text = std::fs::read_to_string("examples/secmon.yaml").unwrap();
    let loaded = secmon::setup::load_str(&text, Path::new("examples/secmon.yaml"), &env, chrono::Utc::now())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.tenants.len(), 2);
    assert_eq!(loaded.config.close_rules[0].mode, secmon::rules::Mode::Shadow, "the example starts in shadow mode");
}

#[test]
fn the_example_config_names_every_variable_it_needs() {
    let text = std::fs::read_to_string("examples/secmon.yaml").unwrap();
    let err = secmon::setup::load_str(&text, Path::new("examples/secmon.yaml"), &|_| None, chrono::Utc::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("FABRIKAM_CLIENT_SECRET is not set"), "{err}");
    assert!(err.contains("examples/secmon.yaml:"), "{err}");
}

#[test]
fn the_packaged_azure_config_validates_with_the_deployments_settings() {
    let env = |name: &str| match name {
        "SECMON_TENANTS" => Some("11111111-2222-3333-4444-555555555555".to_string()),
        "SECMON_TEAMS_URL" => Some(
            "https://prod-01.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=EXAMPLE".into(),
        ),
        _ => None,
    };
    let text = std::fs::read_to_string("examples/secmon.azure.yaml").unwrap();
    let loaded = secmon::setup::load_str(&text, Path::new("examples/secmon.azure.yaml"), &env, chrono::Utc::now())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.tenants[0].id, "11111111-2222-3333-4444-555555555555");
}
