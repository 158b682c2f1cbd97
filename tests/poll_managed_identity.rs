//! The real `ManagedIdentityCredential` (App Service protocol) against the emulator's identity
//! endpoint, chosen from the environment as in Azure Functions. Its own test binary, because the
//! credential reads `IDENTITY_ENDPOINT` / `IDENTITY_HEADER` from the process environment.

#[path = "poll_support/mod.rs"]
mod support;

use secmon::config::TenantConfig;
use secmon::intake::poll;
use serde_json::json;
use support::*;

#[tokio::test]
async fn managed_identity_from_the_environment_polls_its_tenant() {
    // The emulator's identity endpoint is plain http on loopback, as the crate allows.
    let emu = secmon_emulator::Emulator::start(secmon_emulator::Options::default()).await.unwrap();
    // SAFETY: this binary has a single test, so no other thread reads the environment meanwhile.
    unsafe { use_managed_identity(&emu) };
    let home = secmon_emulator::Options::default().default_tenant;
    let mut config = secmon::config::Config {
        graph_url: Some(emu.graph_url()),
        authority_url: Some(emu.authority_url()),
        ..Default::default()
    };
    config.tenants.push(TenantConfig { id: home.clone(), name: "home".into(), credential: None });
    let now = t("2026-11-26T12:00:00Z");
    emu.seed_alerts(&home, vec![json!({"id": "mi-1", "lastUpdateDateTime": "2026-11-26T11:00:00Z"})]);
    let r = rig_with(emu, config, now);

    let report = poll::poll_tenant(&r.app, "home", now).await.unwrap();
    assert_eq!(report.queued, 1);
    let mi_calls: Vec<_> = r.emu.requests().into_iter().filter(|q| q.path == "/msi/token").collect();
    assert_eq!(mi_calls.len(), 1, "one token, cached for the next calls");
    let q = mi_calls[0].query.as_deref().unwrap_or("");
    assert!(q.contains("api-version=2019-08-01") && q.contains("resource=https%3A%2F%2Fgraph.microsoft.com"), "{q}");
    // A second poll reuses the cached token.
    poll::poll_tenant(&r.app, "home", now).await.unwrap();
    assert_eq!(r.emu.requests().iter().filter(|q| q.path == "/msi/token").count(), 1);
}
