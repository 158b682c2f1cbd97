//! `secmon doctor`: the preflight of a real deployment. It talks to the real services (Entra ID, Graph,
//! the public webhook URL, the receivers) and says, one line per check, what is wrong and how to fix it.
//!
//! Read-only unless asked to send a test message to every receiver. Each check is a plain function
//! returning [`Check`]s; [`run`] performs them in order: configuration and environment, then per tenant
//! the credential, the token and its claims, `alerts_v2` and the clock, then subscriptions, receivers,
//! and the test messages. The CLI (`secmon doctor`) adds [`variables`] on the config file's text, which
//! it can read before the config loads; the HTTP function (`/api/doctor`) runs [`run`] on the loaded app.
//!
//! - `environment.rs`: the config's variables, Key Vault references, one cloud;
//! - `tenant.rs`: per tenant, the credential, token, claims, `alerts_v2`, clock, recent alerts;
//! - `endpoints.rs`: the webhook URL's handshake, the receivers' settings, the test messages.
//!
//! Every detail and fix is redacted ([`crate::redact`]): no token, secret, `sig=` or `code=` reaches
//! the output.

mod endpoints;
mod environment;
mod tenant;

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::config::TenantConfig;
use crate::graph::auth::{Auth, Env};
use crate::graph::client::GraphClient;

pub use endpoints::{receivers, send_tests, subscriptions, test_alert};
pub use environment::{cloud, loaded, unresolved_references, variables};
pub use tenant::{
    Needs, alerts_answer, claims, clock, consent_url, credential, needs, no_recent_alerts, tenant, token_claims,
    token_failure,
};

/// The text App Service leaves in an app setting whose Key Vault reference it could not resolve.
pub const KEY_VAULT_REFERENCE: &str = "@Microsoft.KeyVault(";
/// Microsoft Graph's application id, which may stand in a token's `aud` instead of its URL.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// A clock this far from Graph's is a failure: tokens, doorbell timestamps and watermarks go wrong.
pub const SKEW_FAILURE: chrono::Duration = chrono::Duration::minutes(5);
/// A clock this far from Graph's is a warning.
pub const SKEW_WARNING: chrono::Duration = chrono::Duration::seconds(60);
/// How far back an alert is looked for before "no alerts" is a warning.
pub const RECENT_DAYS: i64 = 30;

pub(crate) const READ_ALL: &str = "SecurityAlert.Read.All";
pub(crate) const READ_WRITE_ALL: &str = "SecurityAlert.ReadWrite.All";
pub(crate) const MAIL_SEND: &str = "Mail.Send";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but probably not as meant.
    Warning,
    /// Will not work until fixed.
    Failure,
}

/// One check: what was checked, how it came out, what was seen, and what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `contoso: roles`.
    pub name: String,
    /// Ok, warning or failure.
    pub status: Status,
    /// What was seen (redacted).
    pub detail: String,
    /// What to do (redacted); none when ok.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, status: Status, detail: impl AsRef<str>, fix: Option<String>) -> Check {
        Check {
            name: name.into(),
            status,
            detail: crate::redact::redact(detail.as_ref()),
            fix: fix.map(|f| crate::redact::redact(&f)),
        }
    }

    /// A check that passed.
    pub fn ok(name: impl Into<String>, detail: impl AsRef<str>) -> Check {
        Check::new(name, Status::Ok, detail, None)
    }

    /// A warning, with what to do.
    pub fn warning(name: impl Into<String>, detail: impl AsRef<str>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Warning, detail, Some(fix.into()))
    }

    /// A failure, with what to do.
    pub fn failure(name: impl Into<String>, detail: impl AsRef<str>, fix: impl Into<String>) -> Check {
        Check::new(name, Status::Failure, detail, Some(fix.into()))
    }

    /// One line: `failure  contoso: roles: … (fix: …)`.
    pub fn line(&self) -> String {
        let status = match self.status {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Failure => "failure",
        };
        let fix = self.fix.as_deref().map(|f| format!(" (fix: {f})")).unwrap_or_default();
        format!("{status:<8} {}: {}{fix}", self.name, self.detail)
    }

    /// The JSON line: `{"kind":"check","check":…,"status":…,"detail":…,"fix":…}`.
    pub fn json(&self) -> Value {
        json!({"kind": "check", "check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix})
    }
}

/// True when any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Failure)
}

/// The closing JSON line: `{"kind":"summary","ok":…,"warnings":…,"failures":…}`.
pub fn summary(checks: &[Check]) -> Value {
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    let (ok, warnings, failures) = (count(Status::Ok), count(Status::Warning), count(Status::Failure));
    json!({"kind": "summary", "ok": ok, "warnings": warnings, "failures": failures})
}

/// The whole report: one line per check and a count, or (with `json`) JSON lines ending in the summary.
pub fn render(checks: &[Check], json: bool) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&if json { c.json().to_string() } else { c.line() });
        out.push('\n');
    }
    let s = summary(checks);
    if json {
        out.push_str(&format!("{s}\n"));
    } else {
        out.push_str(&format!("{} ok, {} warnings, {} failures\n", s["ok"], s["warnings"], s["failures"]));
    }
    out
}

/// What to do besides the read-only checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this tenant (by name).
    pub tenant: Option<String>,
    /// Send one test message to every receiver.
    pub send_test: bool,
}

/// Every check on a loaded app, in order; `env` is the environment the credentials are chosen from.
pub async fn run(app: &App, env: Env, options: &Options) -> Vec<Check> {
    let now = app.clock.now();
    let config = app.config.as_ref();
    let mut out = unresolved_references(config, &*env);
    out.extend(cloud(config));
    let tenants: Vec<&TenantConfig> = match &options.tenant {
        Some(name) => match config.tenant(name) {
            Some(t) => vec![t],
            None => {
                out.push(Check::failure(
                    "tenant",
                    format!("no tenant named {name:?} in the config"),
                    "use a tenants[].name",
                ));
                Vec::new()
            }
        },
        None => config.tenants.iter().collect(),
    };
    let auth = Arc::new(Auth::with_env(config, app.http.clone(), env.clone()));
    let mut probe = config.clone();
    probe.poll.page_size = Some(1);
    match GraphClient::with_auth(&probe, app.http.clone(), auth.clone()) {
        Ok(graph) => {
            for t in &tenants {
                out.extend(tenant(app, &auth, &graph, &env, t, now).await);
            }
        }
        Err(e) => out.push(Check::failure("graph", e, "fix cloud and graph_url")),
    }
    out.extend(subscriptions(app).await);
    out.extend(receivers(config));
    if options.send_test {
        match tenants.first() {
            Some(t) => out.extend(send_tests(app, &t.name, now).await),
            None => out.push(Check::failure("send-test", "no tenant to send through", "name a configured tenant")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::config::{Cloud, Config, Mode};
    use crate::graph::auth::Choice;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn variables_are_found_and_checked() {
        let text = "a: ${ONE}\nb: \"x${TWO}y\"\nc: $${NOT_ONE}\nd: ${THREE}\n";
        let env = env_of(&[("ONE", "1"), ("THREE", "@Microsoft.KeyVault(VaultName=v;SecretName=s)")]);
        let checks = variables(text, &env);
        let names: Vec<_> = checks.iter().map(|c| (c.name.as_str(), c.status)).collect();
        assert_eq!(names, [("environment: THREE", Status::Failure), ("environment: TWO", Status::Failure)]);
        assert!(checks[0].fix.as_deref().unwrap().contains("Key Vault Secrets User"));
        assert_eq!(variables("a: ${ONE}", &env)[0].status, Status::Ok);
    }

    #[test]
    fn claims_are_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"tid":"t","roles":["A"]}"#);
        assert_eq!(claims(&format!("h.{payload}.s")).unwrap()["tid"], "t");
        assert!(claims("opaque").is_none());
        assert!(claims("a.!!.c").is_none());
    }

    #[test]
    fn a_national_authority_with_the_global_graph_fails() {
        let config = Config { authority_url: Some("https://login.microsoftonline.us".into()), ..Default::default() };
        let checks = cloud(&config);
        assert_eq!(checks[0].status, Status::Ok, "{checks:?}");
        assert_eq!(checks[1].status, Status::Failure, "{checks:?}");
        let gov = Config { cloud: Cloud::Usgov, ..Default::default() };
        assert!(cloud(&gov).iter().all(|c| c.status == Status::Ok));
    }

    #[test]
    fn a_users_delegated_token_is_not_judged_by_app_roles() {
        let config = Config::default();
        let tenant = TenantConfig { id: "t".into(), name: "c".into(), credential: None };
        let user = json!({"tid": "t", "aud": GRAPH_APP_ID, "scp": "User.Read", "idtyp": "user"});
        let checks = token_claims(&config, &tenant, Some(&Choice::AzureCli), &user, &needs(&config));
        let roles = checks.iter().find(|c| c.name == "c: roles").unwrap();
        assert_eq!(roles.status, Status::Warning);
        assert!(roles.fix.as_deref().unwrap().contains("/api/doctor"));
        let app = json!({"tid": "t", "aud": GRAPH_APP_ID});
        let checks = token_claims(&config, &tenant, Some(&Choice::AzureCli), &app, &needs(&config));
        assert_eq!(checks.iter().find(|c| c.name == "c: roles").unwrap().status, Status::Failure);
    }

    #[test]
    fn the_kill_switch_turns_the_write_role_into_a_warning() {
        let rule = crate::config::CloseRuleConfig {
            mode: Mode::Enforce,
            ..serde_json::from_value(json!({"id": "r", "when": "true", "classification": "c", "determination": "d"}))
                .unwrap()
        };
        let mut config = Config { close_rules: vec![rule], ..Default::default() };
        assert!(needs(&config).write.is_some());
        config.closing_disabled = true;
        let n = needs(&config);
        assert_eq!(n.write, None);
        let tenant = TenantConfig { id: "t".into(), name: "c".into(), credential: None };
        let read = json!({"tid": "t", "aud": GRAPH_APP_ID, "roles": [READ_ALL]});
        let checks = token_claims(&config, &tenant, None, &read, &n);
        let roles = checks.iter().find(|c| c.name == "c: roles").unwrap();
        assert_eq!(roles.status, Status::Warning, "{roles:?}");
        assert!(roles.detail.contains("once SECMON_CLOSE allows closing"), "{}", roles.detail);
    }

    #[test]
    fn clock_skew_is_graded() {
        let now: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        assert_eq!(clock("c", Some("Tue, 01 Dec 2026 10:00:03 GMT"), now).status, Status::Ok);
        assert_eq!(clock("c", Some("Tue, 01 Dec 2026 09:58:00 GMT"), now).status, Status::Warning);
        let far = clock("c", Some("Tue, 01 Dec 2026 09:50:00 GMT"), now);
        assert_eq!(far.status, Status::Failure);
        assert!(far.detail.contains("600s ahead"), "{}", far.detail);
    }

    #[test]
    fn lines_and_json_carry_the_fix() {
        let c = Check::failure("x", "broken https://h/p?sig=abc123456", "do it");
        assert_eq!(c.line(), "failure  x: broken https://h/p?sig=*** (fix: do it)");
        assert_eq!(c.json()["kind"], "check");
        assert_eq!(c.json()["status"], "failure");
    }
}
