//! `secmon doctor` against the Graph emulator: each failure a first deployment meets (a token without
//! the role, Graph's 403, consent never granted, an unresolved Key Vault reference, a skewed clock, a
//! Workflows URL without its `sig`, an http public URL) gives its failure and its fix; a healthy config
//! passes; `--send-test` reaches every receiver once; `/api/doctor` is never open; no secret reaches
//! the output.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use secmon::app::App;
use secmon::doctor::{Check, Options, Status};
use secmon::graph::auth::Env;
use secmon::graph::client::GraphClient;
use secmon::store::sqlite::SqliteStore;
use secmon_emulator::{Emulator, Options as EmulatorOptions};

const TENANT: &str = "7c1f2e3d-4b5a-4c6d-8e9f-0a1b2c3d4e5f";
const CLIENT_ID: &str = "3e0b8f7a-2c4d-4e6f-9a1b-5c7d9e1f3a2b";
const SECRET: &str = "Doctor-Client-Secret-k3Jq9v";
const HOOK_KEY: &str = "Doctor-Hmac-Key-4fQ8zT1mW6xR2nB9cV5y";

struct Rig {
    emu: Emulator,
    env: HashMap<String, String>,
    /// The Workflows URL's signature.
    sig: String,
}

impl Rig {
    /// A tenant with three alerts updated in the last two days.
    async fn start() -> Rig {
        let rig = Rig::quiet().await;
        rig.emu.generate_alerts(TENANT, 3, 7, chrono::Utc::now() - chrono::Duration::days(2));
        rig
    }

    /// A tenant whose only alerts are Graph's documented samples, years old.
    async fn quiet() -> Rig {
        let emu = Emulator::start(EmulatorOptions { tls: true, ..EmulatorOptions::default() }).await.unwrap();
        emu.add_client(TENANT, CLIENT_ID, SECRET);
        emu.seed_samples(TENANT);
        let teams = emu.teams_webhook_url("soc");
        let sig = url::Url::parse(&teams).unwrap().query_pairs().find(|(k, _)| k == "sig").unwrap().1.into_owned();
        let env = HashMap::from([
            ("DOC_CLIENT_SECRET".to_string(), SECRET.to_string()),
            ("DOC_TEAMS_URL".to_string(), teams),
            ("DOC_HOOK_KEY".to_string(), HOOK_KEY.to_string()),
            ("DOC_TOKEN".to_string(), "Doctor-Http-Token-p2Lx7s".to_string()),
        ]);
        Rig { emu, env, sig }
    }

    /// A config: one tenant with a client secret, an enforcing close rule, a route to Teams, a signed
    /// webhook and e-mail; `extra` is appended.
    fn yaml(&self, extra: &str) -> String {
        format!(
            r#"graph_url: {graph}
authority_url: {authority}
tenants:
  - {{ id: {TENANT}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: "${{DOC_CLIENT_SECRET}}" }} }}
close_rules:
  - id: test-devices
    owner: soc@contoso.com
    expires: 2099-01-01
    mode: enforce
    when: 'alert.title == "never matches"'
    classification: informationalExpectedActivity
    determination: securityTesting
routes:
  - receivers: [soc, tickets, mail]
receivers:
  soc: {{ teams: {{ webhook_url: "${{DOC_TEAMS_URL}}" }} }}
  tickets: {{ webhook: {{ url: "{sink}", secret: "${{DOC_HOOK_KEY}}" }} }}
  mail: {{ email: {{ from: secmon@contoso.com, to: [soc@contoso.com] }} }}
doctor: {{ token: "${{DOC_TOKEN}}" }}
{extra}"#,
            graph = self.emu.graph_url(),
            authority = self.emu.authority_url(),
            sink = self.emu.webhook_sink_url("tickets"),
        )
    }

    fn env(&self) -> Env {
        let env = self.env.clone();
        Arc::new(move |k: &str| env.get(k).cloned())
    }

    fn app(&self, yaml: &str) -> App {
        let env = self.env.clone();
        let loaded =
            secmon::setup::load_str(yaml, Path::new("doctor.yaml"), &|k| env.get(k).cloned(), chrono::Utc::now())
                .unwrap_or_else(|e| panic!("{e}"));
        let pem = self.emu.ca_pem().unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
            .build()
            .unwrap();
        let graph = GraphClient::new(&loaded.config, http.clone()).unwrap();
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        App::builder(loaded.config).backend(store).graph(Arc::new(graph)).http(http).build().unwrap()
    }

    async fn run(&self, yaml: &str, send_test: bool) -> Vec<Check> {
        let checks = secmon::doctor::run(&self.app(yaml), self.env(), &Options { tenant: None, send_test }).await;
        self.assert_no_secret(&checks);
        checks
    }

    /// No secret, signature or token in any line.
    fn assert_no_secret(&self, checks: &[Check]) {
        for c in checks {
            let text = format!("{}\n{}", c.line(), c.json());
            for secret in [SECRET, HOOK_KEY, &self.sig, "Doctor-Http-Token", "eyJ"] {
                assert!(!text.contains(secret), "a secret ({secret:.6}…) in {text}");
            }
        }
    }
}

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name:?} in\n{}", lines(checks)))
}

fn lines(checks: &[Check]) -> String {
    checks.iter().map(Check::line).collect::<Vec<_>>().join("\n")
}

fn failures(checks: &[Check]) -> Vec<&str> {
    checks.iter().filter(|c| c.status == Status::Failure).map(|c| c.name.as_str()).collect()
}

fn consent_url() -> String {
    format!("/{TENANT}/adminconsent?client_id={CLIENT_ID}")
}

#[tokio::test]
async fn a_healthy_config_has_no_failure() {
    let rig = Rig::start().await;
    let checks = rig.run(&rig.yaml(""), false).await;
    assert!(!secmon::doctor::failed(&checks), "{}", lines(&checks));
    for name in [
        "contoso: credential",
        "contoso: token",
        "contoso: tid",
        "contoso: aud",
        "contoso: roles",
        "contoso: Mail.Send",
        "contoso: alerts_v2",
        "contoso: clock",
        "contoso: recent alerts",
        "receiver tickets",
    ] {
        assert_eq!(find(&checks, name).status, Status::Ok, "{}", lines(&checks));
    }
    // The emulator's Workflows trigger is on loopback: a warning, not a failure.
    assert_eq!(find(&checks, "receiver soc").status, Status::Warning);
    assert!(find(&checks, "contoso: credential").detail.contains("client_secret in the config"));
    // Read-only: nothing was sent, patched or mailed.
    assert!(rig.emu.teams_messages("soc").is_empty() && rig.emu.webhook_deliveries("tickets").is_empty());
    assert!(rig.emu.mails().is_empty() && rig.emu.patches().is_empty());
}

#[tokio::test]
async fn no_alert_in_30_days_is_a_warning_with_the_usual_causes() {
    let rig = Rig::quiet().await;
    let checks = rig.run(&rig.yaml(""), false).await;
    let recent = find(&checks, "contoso: recent alerts");
    assert_eq!(recent.status, Status::Warning, "{}", lines(&checks));
    let fix = recent.fix.as_deref().unwrap();
    for cause in ["licence", "connected", "tuning", "high-risk"] {
        assert!(fix.contains(cause), "{cause}: {fix}");
    }
    assert!(!secmon::doctor::failed(&checks), "{}", lines(&checks));
}

#[tokio::test]
async fn a_token_without_the_write_role_fails_when_a_rule_enforces() {
    let rig = Rig::start().await;
    rig.emu.set_client_roles(TENANT, CLIENT_ID, &["SecurityAlert.Read.All"]);
    let checks = rig.run(&rig.yaml(""), false).await;
    let roles = find(&checks, "contoso: roles");
    assert_eq!(roles.status, Status::Failure, "{}", lines(&checks));
    assert!(roles.detail.contains("SecurityAlert.Read.All reads but cannot close"), "{}", roles.line());
    assert!(roles.detail.contains("close rule \"test-devices\" enforces"), "{}", roles.line());
    let fix = roles.fix.as_deref().unwrap();
    assert!(fix.contains("SecurityAlert.ReadWrite.All") && fix.contains(&consent_url()), "{fix}");
    let mail = find(&checks, "contoso: Mail.Send");
    assert_eq!(mail.status, Status::Failure);
    assert!(mail.fix.as_deref().unwrap().contains("Mail.Send"), "{}", mail.line());
    // Reading still works, so alerts_v2 answers.
    assert_eq!(find(&checks, "contoso: alerts_v2").status, Status::Ok);
}

#[tokio::test]
async fn graphs_403_names_the_missing_role_and_the_consent_step() {
    let rig = Rig::start().await;
    rig.emu.set_client_roles(TENANT, CLIENT_ID, &[]);
    let checks = rig.run(&rig.yaml(""), false).await;
    let alerts = find(&checks, "contoso: alerts_v2");
    assert_eq!(alerts.status, Status::Failure, "{}", lines(&checks));
    assert!(alerts.detail.contains("answered 403 Forbidden: Missing application roles"), "{}", alerts.line());
    let fix = alerts.fix.as_deref().unwrap();
    assert!(fix.contains("SecurityAlert.ReadWrite.All") && fix.contains("admin grant consent"), "{fix}");
    assert!(fix.contains(&format!("{}{}", rig.emu.authority_url(), consent_url())), "{fix}");
    assert!(find(&checks, "contoso: roles").detail.contains("no roles"));
}

#[tokio::test]
async fn missing_consent_aadsts65001_gives_the_consent_url() {
    let rig = Rig::start().await;
    rig.emu.set_consent_missing(TENANT, CLIENT_ID);
    let checks = rig.run(&rig.yaml(""), false).await;
    let token = find(&checks, "contoso: token");
    assert_eq!(token.status, Status::Failure, "{}", lines(&checks));
    assert!(token.detail.contains("AADSTS65001"), "{}", token.line());
    assert!(token.fix.as_deref().unwrap().contains(&consent_url()), "{}", token.line());
}

#[tokio::test]
async fn a_skewed_clock_fails() {
    let rig = Rig::start().await;
    rig.emu.set_date_skew(Some(chrono::Duration::minutes(-12)));
    let checks = rig.run(&rig.yaml(""), false).await;
    let clock = find(&checks, "contoso: clock");
    assert_eq!(clock.status, Status::Failure, "{}", lines(&checks));
    assert!(clock.detail.contains("ahead of Graph's"), "{}", clock.line());
    assert!(clock.fix.as_deref().unwrap().contains("NTP"));
    assert_eq!(failures(&checks), ["contoso: clock"]);
}

#[tokio::test]
async fn a_workflows_url_without_sig_fails() {
    let mut rig = Rig::start().await;
    let url = rig.env["DOC_TEAMS_URL"].clone();
    let without = url.split("&sig=").next().unwrap().to_string();
    rig.env.insert("DOC_TEAMS_URL".into(), without);
    let checks = rig.run(&rig.yaml(""), false).await;
    let soc = find(&checks, "receiver soc");
    assert_eq!(soc.status, Status::Failure, "{}", lines(&checks));
    assert!(soc.detail.contains("no sig query parameter"), "{}", soc.line());
    assert!(soc.fix.as_deref().unwrap().contains("When a Teams webhook request is received"));
}

#[tokio::test]
async fn an_http_public_url_fails_though_the_handshake_answers() {
    let rig = Rig::start().await;
    // secmon's own router answers the handshake on loopback, over plain http.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let extra = format!(
        "subscriptions:\n  - {{ tenant: contoso, \
         resource: \"users/alerts@contoso.com/mailFolders('inbox')/messages\" }}\n\
         webhook: {{ public_url: http://127.0.0.1:{port} }}\n"
    );
    let yaml = rig.yaml(&extra);
    // The doctor and the webhook share the store (the worker's /api/doctor and the edge in Azure; one
    // process standalone): the doctor's "creating" marker lets the webhook answer its handshake.
    let app = rig.app(&yaml);
    let served = secmon::functions::router(app.clone());
    tokio::spawn(async move { axum::serve(listener, served).await });
    // A doctor with a store of its own (a laptop against the deployment): refused, and told why.
    let apart = rig.run(&yaml, false).await;
    let refused = find(&apart, "subscriptions: graph-webhook handshake");
    assert_eq!(refused.status, Status::Warning, "{}", lines(&apart));
    assert!(refused.detail.contains("403"), "{}", refused.line());
    let checks = secmon::doctor::run(&app, rig.env(), &Options { tenant: None, send_test: false }).await;
    let public = find(&checks, "subscriptions: public_url");
    assert_eq!(public.status, Status::Failure, "{}", lines(&checks));
    assert!(public.detail.contains("not https"), "{}", public.line());
    assert!(public.fix.as_deref().unwrap().contains("https://<app>.azurewebsites.net"));
    assert_eq!(find(&checks, "subscriptions: graph-webhook handshake").status, Status::Ok, "{}", lines(&checks));
    assert_eq!(find(&checks, "subscriptions: graph-lifecycle handshake").status, Status::Ok);
    assert_eq!(failures(&checks), ["subscriptions: public_url"]);
}

#[tokio::test]
async fn unresolved_key_vault_references_are_failures_with_the_fix() {
    // In the config file's variables: the Teams URL never resolved (the config would not even load).
    let text = "receivers:\n  soc: { teams: { webhook_url: \"${SECMON_TEAMS_URL}\" } }\n";
    let env =
        |k: &str| (k == "SECMON_TEAMS_URL").then(|| "@Microsoft.KeyVault(VaultName=kv;SecretName=teams)".to_string());
    let checks = secmon::doctor::variables(text, &env);
    let teams = find(&checks, "environment: SECMON_TEAMS_URL");
    assert_eq!(teams.status, Status::Failure);
    assert!(teams.fix.as_deref().unwrap().contains("Key Vault Secrets User"), "{}", teams.line());
    // In a loaded config: a webhook key that is the reference text still passes validation.
    let mut rig = Rig::start().await;
    rig.env.insert("DOC_HOOK_KEY".into(), "@Microsoft.KeyVault(VaultName=kv;SecretName=hook)".into());
    let checks = rig.run(&rig.yaml(""), false).await;
    let hook = find(&checks, "key-vault: receivers.tickets.webhook.secret");
    assert_eq!(hook.status, Status::Failure, "{}", lines(&checks));
    assert!(hook.fix.as_deref().unwrap().contains("keyVaultReferenceIdentity"));
}

#[tokio::test]
async fn send_test_reaches_every_receiver_once() {
    let rig = Rig::start().await;
    let checks = rig.run(&rig.yaml(""), true).await;
    assert!(!secmon::doctor::failed(&checks), "{}", lines(&checks));
    for name in ["send-test soc", "send-test tickets", "send-test mail"] {
        assert_eq!(find(&checks, name).status, Status::Ok, "{}", lines(&checks));
    }
    let teams = rig.emu.teams_messages("soc");
    assert_eq!(teams.len(), 1);
    assert!(teams[0].to_string().contains("secmon doctor: TEST MESSAGE"), "{}", teams[0]);
    let hooks = rig.emu.webhook_deliveries("tickets");
    assert_eq!(hooks.len(), 1);
    let (headers, body) = &hooks[0];
    let expected = secmon::notify::webhook::sign(HOOK_KEY, &headers["x-secmon-timestamp"], body);
    assert_eq!(headers["x-secmon-signature"], expected, "the test webhook is signed");
    let mails = rig.emu.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].2["message"]["subject"].as_str().unwrap().contains("TEST MESSAGE"), "{:?}", mails[0]);
    // Test messages never touch an alert.
    assert!(rig.emu.patches().is_empty() && rig.emu.comments().is_empty());
}

#[tokio::test]
async fn the_http_function_needs_its_token_and_answers_json() {
    use tower::ServiceExt;
    let rig = Rig::start().await;
    let call = |app: App, method: &str, uri: &str, auth: Option<&str>| {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move {
            let resp =
                secmon::functions::router(app).oneshot(req.body(axum::body::Body::empty()).unwrap()).await.unwrap();
            let status = resp.status().as_u16();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let bearer = Some("Bearer Doctor-Http-Token-p2Lx7s");
    let app = rig.app(&rig.yaml(""));
    assert_eq!(call(app.clone(), "GET", "/api/doctor", None).await.0, 401);
    assert_eq!(call(app.clone(), "GET", "/api/doctor", Some("Bearer wrong-token-of-some-length")).await.0, 401);
    let (status, body) = call(app.clone(), "GET", "/api/doctor", bearer).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["summary"]["failures"], 0, "{body}");
    assert!(v["checks"].as_array().unwrap().iter().any(|c| c["check"] == "contoso: alerts_v2" && c["status"] == "ok"));
    assert!(!body.contains(SECRET) && !body.contains("eyJ"));
    assert!(rig.emu.teams_messages("soc").is_empty(), "GET is read-only");
    // POST ?send_test=true sends the test messages, through the same router.
    let (status, body) = call(app.clone(), "POST", "/api/doctor?send_test=true&tenant=contoso", bearer).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rig.emu.teams_messages("soc").len(), 1);
    assert_eq!(call(app.clone(), "DELETE", "/api/doctor", bearer).await.0, 405);
    // A failed check makes the answer 503, so `curl -f` and monitors see it.
    rig.emu.set_client_roles(TENANT, CLIENT_ID, &[]);
    let (status, body) = call(app.clone(), "GET", "/api/doctor?tenant=contoso", bearer).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Missing application roles"), "{body}");
    // Without doctor.token the function does not exist.
    let no_token = rig.yaml("").replace("doctor: { token: \"${DOC_TOKEN}\" }\n", "");
    assert_eq!(call(rig.app(&no_token), "GET", "/api/doctor", bearer).await.0, 404);
}

#[test]
fn the_doctor_function_is_never_anonymous() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("functions/doctor/function.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["bindings"][0]["type"], "httpTrigger");
    assert_eq!(json["bindings"][0]["authLevel"], "function");
}

/// `secmon doctor` as a command: the config file, the process environment, the exit status.
mod cli {
    use super::*;
    use std::process::Command;

    fn doctor(rig: &Rig, dir: &Path, yaml: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        std::fs::write(dir.join("ca.pem"), rig.emu.ca_pem().unwrap()).unwrap();
        let yaml = format!("store: {{ sqlite: \"{}\" }}\n{yaml}", dir.join("secmon.db").display());
        std::fs::write(dir.join("secmon.yaml"), yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_secmon"))
            .arg("doctor")
            .arg("-c")
            .arg(dir.join("secmon.yaml"))
            .args(args)
            .envs(&rig.env)
            .envs(env.iter().copied())
            .env("SSL_CERT_FILE", dir.join("ca.pem"))
            .env_remove("SECMON_STORE")
            .env_remove("IDENTITY_ENDPOINT")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        for secret in [SECRET, HOOK_KEY, &rig.sig, "eyJ"] {
            assert!(
                !stdout.contains(secret) && !stderr.contains(secret),
                "a secret in the output:\n{stdout}\n{stderr}"
            );
        }
        (out.status.code().unwrap(), stdout)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_healthy_config_exits_0_with_json_lines() {
        let rig = Rig::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let (code, out) = doctor(&rig, tmp.path(), &rig.yaml(""), &["--json"], &[]);
        assert_eq!(code, 0, "{out}");
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(lines[..lines.len() - 1].iter().all(|l| l["kind"] == "check" && l["status"].is_string()), "{out}");
        assert!(lines.iter().any(|l| l["check"] == "contoso: alerts_v2" && l["status"] == "ok"), "{out}");
        assert_eq!(lines.last().unwrap()["kind"], "summary");
        assert_eq!(lines.last().unwrap()["failures"], 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unresolved_key_vault_reference_exits_1_with_the_fix() {
        let rig = Rig::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let reference = "@Microsoft.KeyVault(VaultName=kv-secmon;SecretName=teams-webhook-url)";
        let (code, out) = doctor(&rig, tmp.path(), &rig.yaml(""), &[], &[("DOC_TEAMS_URL", reference)]);
        assert_eq!(code, 1, "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("failure  environment: DOC_TEAMS_URL"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("unresolved reference text") && line.contains("Key Vault Secrets User"), "{line}");
        assert!(out.lines().last().unwrap().ends_with("failures"), "{out}");
    }
}
