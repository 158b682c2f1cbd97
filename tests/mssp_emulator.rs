//! The MSSP layout against the Graph emulator (tokens, roles, sendMail as Graph checks them): three
//! customer tenants and the SOC's own tenant, whose mailbox sends every e-mail. Every mail goes out
//! with the SOC tenant's token, and when a customer's credential fails (the emulator refuses its
//! secret) the "no successful poll" alarm about that customer still reaches the SOC by e-mail.

mod poll_support;

use std::path::Path;

use poll_support::*;
use serde_json::{Value, json};

const CUSTOMERS: [&str; 3] = ["contoso", "fabrikam", "northwind"];

fn config_yaml() -> String {
    let mut yaml = String::from("graph_url: \"${GRAPH}\"\nauthority_url: \"${AUTHORITY}\"\ntenants:\n");
    for name in CUSTOMERS.iter().chain(["soc"].iter()) {
        yaml.push_str(&format!(
            "  - {{ id: {}, name: {name}, credential: {{ client_id: {CLIENT_ID}, client_secret: \"${{SECRET_{}}}\" }} }}\n",
            tenant_id(name),
            name.to_uppercase()
        ));
    }
    yaml.push_str(
        "poll: { stale_after: 30m }
mail: { tenant: soc }
routes:
  - { receivers: [soc-email] }
receivers:
  soc-email: { email: { from: alerts@soc.example.net, to: [analysts@soc.example.net] } }
",
    );
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mail_goes_through_the_sending_tenant_and_a_failing_customers_alarm_reaches_the_soc() {
    let now = t("2026-11-26T10:00:00Z");
    let emu = emulator(50).await;
    for name in CUSTOMERS {
        emu.add_client(&tenant_id(name), CLIENT_ID, SECRET);
        // Customers grant alert access only: a mail sent with their token would be refused.
        emu.set_client_roles(&tenant_id(name), CLIENT_ID, &["SecurityAlert.ReadWrite.All"]);
        let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        emu.seed_alerts(
            &tenant_id(name),
            vec![
                json!({"id": format!("{name}-1"), "title": format!("Suspicious sign-in at {name}"), "severity": "high",
                "status": "new", "createdDateTime": stamp, "lastUpdateDateTime": stamp}),
            ],
        );
    }
    emu.add_client(&tenant_id("soc"), CLIENT_ID, SECRET);
    let (graph, authority) = (emu.graph_url(), emu.authority_url());
    let env = move |k: &str| match k {
        "GRAPH" => Some(graph.clone()),
        "AUTHORITY" => Some(authority.clone()),
        // fabrikam's secret expired: the emulator refuses it.
        "SECRET_FABRIKAM" => Some("an-expired-secret".to_string()),
        k if k.starts_with("SECRET_") => Some(SECRET.to_string()),
        _ => None,
    };
    let loaded = secmon::setup::load_str(&config_yaml(), Path::new("mssp.yaml"), &env, now).unwrap();
    assert!(loaded.warnings.is_empty(), "the MSSP layout is what check-config wants: {:?}", loaded.warnings);
    let r = rig_with(emu, loaded.config, now);

    // The first poll: contoso and northwind alerts are mailed; fabrikam cannot be polled.
    let outcomes = secmon::intake::poll::poll_all(&r.app, now).await;
    let failed: Vec<&str> = outcomes.iter().filter(|o| o.error.is_some()).map(|o| o.tenant.as_str()).collect();
    assert_eq!(failed, ["fabrikam"], "{outcomes:?}");
    secmon::host::standalone::drain(&r.app, 100).await;

    // Half an hour later fabrikam is still blind: the poll cycle raises the alarm, the SOC gets it by mail.
    let later = now + chrono::Duration::minutes(31);
    r.clock.set(later);
    secmon::intake::poll::poll_all(&r.app, later).await;
    let results = secmon::host::standalone::drain(&r.app, 100).await;
    assert!(results.iter().all(|w| matches!(w, secmon::host::standalone::WorkResult::Done(_))), "{results:?}");

    let mails = r.emu.mails();
    let subjects: Vec<&str> = mails.iter().map(|(_, _, b)| b["message"]["subject"].as_str().unwrap()).collect();
    assert_eq!(mails.len(), 3, "{subjects:?}");
    for (token_tenant, sender, _) in &mails {
        assert_eq!(token_tenant, &tenant_id("soc"), "sent with the sending tenant's token");
        assert_eq!(sender, "alerts@soc.example.net");
    }
    assert!(subjects.contains(&"[secmon][contoso][High] Suspicious sign-in at contoso"), "{subjects:?}");
    assert!(subjects.contains(&"[secmon][northwind][High] Suspicious sign-in at northwind"), "{subjects:?}");
    let alarm = subjects.iter().find(|s| s.starts_with("[secmon][fabrikam][High] ")).expect("fabrikam's alarm");
    assert!(alarm.contains("fabrikam"), "{alarm}");
    let body = &mails.iter().find(|(_, _, b)| b["message"]["subject"] == *alarm).unwrap().2;
    let html = body["message"]["body"]["content"].as_str().unwrap_or_default();
    assert!(html.contains("fabrikam"), "the alarm says which tenant is blind");
    // Nothing was ever sent through a customer tenant.
    let through_customers: Vec<Value> = r
        .emu
        .requests()
        .iter()
        .filter(|q| q.path.contains("/sendMail") && !q.path.contains("alerts@soc.example.net"))
        .map(|q| json!(q.path))
        .collect();
    assert!(through_customers.is_empty(), "{through_customers:?}");
}
