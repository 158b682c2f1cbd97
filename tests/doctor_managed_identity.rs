//! `secmon doctor` with the managed identity of App Service / Functions (the emulator's identity
//! endpoint): the fix for a missing role is an app-role assignment, not a consent page, and a tenant
//! other than the identity's home tenant is named. Its own test binary, because the credential reads
//! `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` from the process environment.

#[path = "poll_support/mod.rs"]
mod support;

use std::sync::Arc;

use secmon::app::App;
use secmon::config::TenantConfig;
use secmon::doctor::{Options, Status};
use secmon::graph::auth::Env;
use secmon::graph::client::GraphClient;
use secmon::store::sqlite::SqliteStore;

#[tokio::test]
async fn a_managed_identity_gets_the_role_assignment_fix_and_its_home_tenant_only() {
    let emu = secmon_emulator::Emulator::start(secmon_emulator::Options::default()).await.unwrap();
    // SAFETY: this binary has a single test, so no other thread reads the environment meanwhile.
    unsafe { support::use_managed_identity(&emu) };
    emu.set_managed_identity_roles(&["SecurityAlert.Read.All"]);
    let home = secmon_emulator::Options::default().default_tenant;
    let mut config = secmon::config::Config {
        graph_url: Some(emu.graph_url()),
        authority_url: Some(emu.authority_url()),
        routes: vec![
            serde_json::from_value(serde_json::json!({"receivers": [], "set": {"status": "inProgress"}})).unwrap(),
        ],
        ..Default::default()
    };
    config.tenants.push(TenantConfig { id: home.clone(), name: "home".into(), credential: None });
    config.tenants.push(TenantConfig {
        id: "5b1d2c3e-0000-4000-8000-00000000fab1".into(),
        name: "fabrikam".into(),
        credential: None,
    });
    let graph = GraphClient::new(&config, reqwest::Client::new()).unwrap();
    let app = App::builder(config)
        .backend(Arc::new(SqliteStore::in_memory().unwrap()))
        .graph(Arc::new(graph))
        .build()
        .unwrap();
    let env: Env = Arc::new(|k: &str| std::env::var(k).ok());
    let checks = secmon::doctor::run(&app, env, &Options::default()).await;
    let all = checks.iter().map(|c| c.line()).collect::<Vec<_>>().join("\n");
    let find = |name: &str| checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no {name} in\n{all}"));

    let credential = find("home: credential");
    assert!(credential.detail.contains("managed identity") && credential.detail.contains("IDENTITY_ENDPOINT"), "{all}");
    let roles = find("home: roles");
    assert_eq!(roles.status, Status::Failure, "{all}");
    assert!(roles.detail.contains("routes[0] sets a status"), "{}", roles.line());
    let fix = roles.fix.as_deref().unwrap();
    assert!(fix.contains("graph-permissions.bicep") && fix.contains("no consent page"), "{fix}");
    assert!(!fix.contains("adminconsent"), "{fix}");
    // The identity's token is for its home tenant, whatever tenant it is used for.
    let tid = find("fabrikam: tid");
    assert_eq!(tid.status, Status::Failure, "{all}");
    assert!(tid.fix.as_deref().unwrap().contains("home tenant"), "{}", tid.line());
    assert_eq!(find("home: tid").status, Status::Ok);
}
