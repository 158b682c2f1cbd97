//! `secmon doctor`: the preflight of a real deployment. It talks to the real services (Entra ID, Graph,
//! the public webhook URL, the receivers) and says, one line per check, what is wrong and how to fix it.
//!
//! Read-only unless asked to send a test message to every receiver. Each check is a plain function
//! returning [`Check`]s; [`run`] performs them in order: configuration and environment, then per tenant
//! the credential, the token and its claims, `alerts_v2` and the clock, then subscriptions, receivers,
//! and the test messages. The CLI (`secmon doctor`) adds [`variables`] on the config file's text, which
//! it can read before the config loads; the HTTP function (`/api/doctor`) runs [`run`] on the loaded app.
//!
//! Every detail and fix is redacted ([`crate::redact`]): no token, secret, `sig=` or `code=` reaches
//! the output.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::config::{Cloud, Config, Mode, ReceiverConfig, TenantConfig};
use crate::graph::Graph;
use crate::graph::auth::{self, Auth, Choice, Env};
use crate::graph::client::{GraphClient, PREFER, versioned_base};

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

const READ_ALL: &str = "SecurityAlert.Read.All";
const READ_WRITE_ALL: &str = "SecurityAlert.ReadWrite.All";
const MAIL_SEND: &str = "Mail.Send";

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

/// What loading the config said: each problem a check (an unset variable is left to [`variables`]),
/// its warnings, or that it loads.
pub fn loaded(result: &Result<crate::config::Loaded, crate::config::ConfigError>) -> Vec<Check> {
    use crate::config::{ConfigError, Level};
    let fix = "fix it there (`secmon check-config` lists every problem)";
    match result {
        Ok(loaded) => {
            let mut out: Vec<Check> =
                loaded.warnings.iter().map(|w| Check::warning("config", loaded.render(w), fix)).collect();
            out.push(Check::ok("config", format!("{} loads and validates", loaded.file.display())));
            out
        }
        Err(ConfigError::Invalid { lines, issues }) => lines
            .iter()
            .zip(issues)
            .filter(|(_, issue)| !issue.message.ends_with("is not set"))
            .map(|(line, issue)| match issue.level {
                Level::Error => Check::failure("config", line, fix),
                Level::Warning => Check::warning("config", line, fix),
            })
            .collect(),
        Err(e) => vec![Check::failure("config", e.to_string(), "pass -c FILE or set SECMON_CONFIG")],
    }
}

/// What to do besides the read-only checks.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this tenant (by name).
    pub tenant: Option<String>,
    /// Send one test message to every receiver.
    pub send_test: bool,
}

/// The fix for a Key Vault reference App Service did not resolve.
fn key_vault_fix(name: &str) -> String {
    format!(
        "App Service could not read the secret behind {name}: give the app's identity the Key Vault Secrets User \
         role on the vault (for a user-assigned identity also set the site's keyVaultReferenceIdentity), check the \
         vault and secret names in the reference, then restart the app; the portal's Environment variables blade \
         shows each reference's status"
    )
}

/// Every `${NAME}` in the config text is set, and none holds an unresolved Key Vault reference.
pub fn variables(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<Check> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'$';
        let after = &rest[pos + 2..];
        match after.find('}') {
            Some(end) if !escaped => {
                names.insert(after[..end].to_string());
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    let mut out = Vec::new();
    for name in &names {
        match env(name) {
            None => out.push(Check::failure(
                format!("environment: {name}"),
                format!("the config names ${{{name}}} but {name} is not set"),
                format!("set {name} (an app setting in Azure, an environment variable standalone)"),
            )),
            Some(v) if v.contains(KEY_VAULT_REFERENCE) => out.push(Check::failure(
                format!("environment: {name}"),
                format!("{name} holds the unresolved reference text {KEY_VAULT_REFERENCE}...), not the secret"),
                key_vault_fix(name),
            )),
            Some(v) if v.trim().is_empty() => out.push(Check::warning(
                format!("environment: {name}"),
                format!("{name} is set but empty"),
                format!("give {name} its value"),
            )),
            Some(_) => {}
        }
    }
    if out.is_empty() {
        out.push(Check::ok("environment", format!("all {} variables the config names are set", names.len())));
    }
    out
}

/// The environment variables secmon reads itself, besides those the config names.
const READ_FROM_ENV: [&str; 6] = [
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "SECMON_GRAPH_URL",
    "SECMON_AUTHORITY_URL",
];

/// No value of the loaded config, nor a variable secmon reads, is an unresolved Key Vault reference.
pub fn unresolved_references(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Check> {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.contains(KEY_VAULT_REFERENCE) => out.push(path.to_string()),
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, x)| walk(x, &crate::config::yaml::join_index(path, i), out))
            }
            Value::Object(map) => map.iter().for_each(|(k, x)| walk(x, &crate::config::yaml::join_key(path, k), out)),
            _ => {}
        }
    }
    let mut paths = Vec::new();
    walk(&serde_json::to_value(config).expect("the config serializes"), "", &mut paths);
    let mut out: Vec<Check> = paths
        .iter()
        .map(|p| {
            Check::failure(
                format!("key-vault: {p}"),
                format!("{p} is the text of a Key Vault reference ({KEY_VAULT_REFERENCE}...)), not its secret"),
                key_vault_fix("the app setting this value comes from"),
            )
        })
        .collect();
    for name in READ_FROM_ENV {
        if env(name).is_some_and(|v| v.contains(KEY_VAULT_REFERENCE)) {
            out.push(Check::failure(
                format!("key-vault: {name}"),
                format!("{name} holds the unresolved reference text {KEY_VAULT_REFERENCE}...)"),
                key_vault_fix(name),
            ));
        }
    }
    if out.is_empty() {
        out.push(Check::ok("key-vault", "no value is an unresolved Key Vault reference"));
    }
    out
}

/// The cloud a Graph or login host belongs to, when it is a Microsoft one.
fn cloud_of_host(host: &str) -> Option<&'static [Cloud]> {
    match host {
        "graph.microsoft.com" | "login.microsoftonline.com" => Some(&[Cloud::Global]),
        "graph.microsoft.us" => Some(&[Cloud::Usgov]),
        "dod-graph.microsoft.us" => Some(&[Cloud::Usgovdod]),
        "login.microsoftonline.us" => Some(&[Cloud::Usgov, Cloud::Usgovdod]),
        "microsoftgraph.chinacloudapi.cn" | "login.chinacloudapi.cn" => Some(&[Cloud::China]),
        _ => None,
    }
}

fn cloud_name(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Global => "global",
        Cloud::Usgov => "usgov",
        Cloud::Usgovdod => "usgovdod",
        Cloud::China => "china",
    }
}

/// The Graph URL and the login authority belong to the configured cloud (tokens of one cloud are
/// worthless in another).
pub fn cloud(config: &Config) -> Vec<Check> {
    let name = cloud_name(config.cloud);
    let mut out = Vec::new();
    for (what, field, url, expected) in [
        ("Graph", "graph_url", config.graph_base(), config.cloud.graph_url()),
        ("login authority", "authority_url", config.authority(), config.cloud.authority_url()),
    ] {
        let check = format!("cloud: {field}");
        let host = url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        match cloud_of_host(&host) {
            Some(clouds) if clouds.contains(&config.cloud) => {
                out.push(Check::ok(check, format!("{what} {url} is the {name} cloud's")))
            }
            Some(clouds) => out.push(Check::failure(
                check,
                format!("cloud is {name} but the {what} {url} is the {} cloud's", cloud_name(clouds[0])),
                format!("set {field} to {expected} (or remove it), or set cloud to the one the tenant lives in"),
            )),
            None => out.push(Check::warning(
                check,
                format!("the {what} {url} is no Microsoft cloud's (an emulator or a proxy?)"),
                format!("for a real tenant in the {name} cloud remove {field} (default {expected})"),
            )),
        }
    }
    out
}

/// What the config needs Graph to let it do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Why writing alerts is needed (an enforcing close rule, a route's `set:`), if it is.
    pub write: Option<String>,
    /// Why writing will be needed once `SECMON_CLOSE` stops holding the enforcing rules in shadow mode.
    pub write_when_closing: Option<String>,
    /// The e-mail receivers, which send through each tenant's Graph.
    pub mail: Vec<String>,
}

/// What the config needs: writes when a close rule enforces (and `SECMON_CLOSE` lets it) or a route
/// sets a status; `Mail.Send` when an e-mail receiver exists (mail is sent through the tenant the alert
/// came from).
pub fn needs(config: &Config) -> Needs {
    let enforcing =
        config.close_rules.iter().find(|r| r.mode == Mode::Enforce).map(|r| format!("close rule {:?} enforces", r.id));
    let setting = config.routes.iter().enumerate().find(|(_, r)| r.set.is_some()).map(|(i, r)| match &r.name {
        Some(n) => format!("route {n:?} sets a status"),
        None => format!("routes[{i}] sets a status"),
    });
    let mail = config
        .receivers
        .iter()
        .filter(|(_, r)| matches!(r, ReceiverConfig::Email(_)))
        .map(|(n, _)| n.clone())
        .collect();
    let (enforcing, held) = if config.closing_disabled {
        (None, enforcing.map(|e| format!("{e} once SECMON_CLOSE allows closing")))
    } else {
        (enforcing, None)
    };
    Needs { write: enforcing.or(setting), write_when_closing: held, mail }
}

/// The claims of a JWT access token, read and not trusted: the payload is base64url-decoded and the
/// signature is not checked, as this only explains what Entra granted; Graph does the checking.
pub fn claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok().filter(Value::is_object)
}

/// Where an admin grants consent to `app` in `tenant`, at the cloud's authority.
pub fn consent_url(config: &Config, tenant: &TenantConfig, app: &str) -> String {
    format!("{}/{}/adminconsent?client_id={app}", config.authority(), tenant.id)
}

/// The app a token was asked for: the configured client id, else the token's `appid`/`azp`.
fn app_id(choice: Option<&Choice>, claims: Option<&Value>) -> Option<String> {
    let configured = match choice {
        Some(Choice::ClientSecret { client_id, .. })
        | Some(Choice::ClientCertificate { client_id, .. })
        | Some(Choice::WorkloadIdentity { client_id, .. }) => Some(client_id.clone()),
        Some(Choice::ManagedIdentity { client_id }) => client_id.clone(),
        _ => None,
    };
    configured.or_else(|| {
        let c = claims?;
        c["appid"].as_str().or(c["azp"].as_str()).map(str::to_string)
    })
}

/// How to grant `role` to what the tenant's credential is.
fn grant_fix(config: &Config, tenant: &TenantConfig, choice: Option<&Choice>, app: Option<&str>, role: &str) -> String {
    match choice {
        Some(Choice::ManagedIdentity { .. }) => format!(
            "assign the Microsoft Graph app role {role} to the managed identity's service principal \
             (infra/app/graph-permissions.bicep does it on `azd provision`; or New-MgServicePrincipalAppRoleAssignment \
             as a Privileged Role Administrator); there is no consent page for a managed identity, and the role \
             shows in tokens issued after the assignment"
        ),
        Some(Choice::AzureCli) => format!(
            "the signed-in user's delegated token is used: Graph wants {role} consented for the Azure CLI and a \
             Security Reader (or higher) role for the user; to check the identity secmon runs as, use /api/doctor \
             or the app's own credential"
        ),
        _ => {
            let app = app.unwrap_or("<app id>");
            format!(
                "add the Microsoft Graph application permission {role} to app {app} (Entra ID > App registrations > \
                 API permissions), then have an admin grant consent at {}",
                consent_url(config, tenant, app)
            )
        }
    }
}

/// Which credential a tenant uses, and why.
pub fn credential(tenant: &TenantConfig, env: &dyn Fn(&str) -> Option<String>) -> (Option<Choice>, Check) {
    let name = format!("{}: credential", tenant.name);
    match auth::choose(tenant, env) {
        Ok(choice) => {
            let why = auth::reason(tenant, env);
            let check = Check::ok(name, format!("{}, because {why}", choice.describe()));
            (Some(choice), check)
        }
        Err(e) => (
            None,
            Check::failure(
                name,
                e.message,
                "complete the tenant's credential: in the config or the variables it names (see docs/configuration.md)",
            ),
        ),
    }
}

/// The checks of a token's claims: `tid` is the tenant, `aud` is the cloud's Graph, `roles` hold what
/// the config needs.
pub fn token_claims(
    config: &Config,
    tenant: &TenantConfig,
    choice: Option<&Choice>,
    claims: &Value,
    needs: &Needs,
) -> Vec<Check> {
    let t = &tenant.name;
    let mut out = Vec::new();
    match claims["tid"].as_str() {
        Some(tid) if tid.eq_ignore_ascii_case(&tenant.id) => {
            out.push(Check::ok(format!("{t}: tid"), format!("the token is for tenant {tid}")))
        }
        Some(tid) if !tenant.id.contains('-') => out.push(Check::warning(
            format!("{t}: tid"),
            format!("the tenant is configured by domain ({}); the token is for tenant {tid}", tenant.id),
            format!("write the tenant's id as its GUID ({tid}) so a token for another tenant cannot pass unnoticed"),
        )),
        Some(tid) => out.push(Check::failure(
            format!("{t}: tid"),
            format!("the token is for tenant {tid}, not {}", tenant.id),
            "a managed identity only gets tokens for its home tenant: give this tenant its own credential: \
             (an app registration, multi-tenant or per tenant) in the config",
        )),
        None => out.push(Check::warning(
            format!("{t}: tid"),
            "the token has no tid claim",
            "check the credential issues Entra ID tokens",
        )),
    }
    let graph = config.cloud.graph_url();
    match claims["aud"].as_str() {
        Some(aud) if aud.trim_end_matches('/') == graph || aud == GRAPH_APP_ID => {
            out.push(Check::ok(format!("{t}: aud"), format!("the token is for Microsoft Graph ({aud})")))
        }
        Some(aud) => out.push(Check::failure(
            format!("{t}: aud"),
            format!("the token is for {aud}, not {graph}"),
            format!(
                "the cloud setting decides the token's resource: set cloud to the tenant's cloud (now {})",
                cloud_name(config.cloud)
            ),
        )),
        None => out.push(Check::warning(
            format!("{t}: aud"),
            "the token has no aud claim",
            "check the credential issues Entra ID tokens",
        )),
    }
    if let (Some(scp), None) = (claims["scp"].as_str(), claims.get("roles")) {
        out.push(Check::warning(
            format!("{t}: roles"),
            format!(
                "a signed-in user's delegated token (scp {scp}): it shows the user's scopes, not the application \
                 roles of the identity secmon runs as"
            ),
            "check the deployed identity from inside Azure: GET /api/doctor (function key and doctor.token), or run \
             secmon doctor with the app's own credential",
        ));
        return out;
    }
    let roles: Vec<&str> =
        claims["roles"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let shown = if roles.is_empty() { "no roles".to_string() } else { format!("roles {}", roles.join(", ")) };
    let app = app_id(choice, Some(claims));
    let fix = |role: &str| grant_fix(config, tenant, choice, app.as_deref(), role);
    let has = |r: &str| roles.contains(&r);
    let check = format!("{t}: roles");
    if let Some(why) = &needs.write {
        if has(READ_WRITE_ALL) {
            out.push(Check::ok(check.clone(), format!("{shown}: can read and close alerts ({why})")));
        } else if has(READ_ALL) {
            out.push(Check::failure(
                check.clone(),
                format!("{shown}: {READ_ALL} reads but cannot close or update alerts, and {why}"),
                fix(READ_WRITE_ALL),
            ));
        } else {
            out.push(Check::failure(
                check.clone(),
                format!("{shown}: {READ_WRITE_ALL} is missing ({why})"),
                fix(READ_WRITE_ALL),
            ));
        }
    } else if let (Some(why), false, true) = (&needs.write_when_closing, has(READ_WRITE_ALL), has(READ_ALL)) {
        out.push(Check::warning(
            check.clone(),
            format!("{shown}: can read alerts, but {READ_ALL} cannot close them: {why}"),
            fix(READ_WRITE_ALL),
        ));
    } else if has(READ_ALL) || has(READ_WRITE_ALL) {
        out.push(Check::ok(check.clone(), format!("{shown}: can read alerts")));
    } else {
        out.push(Check::failure(check.clone(), format!("{shown}: {READ_ALL} is missing"), fix(READ_ALL)));
    }
    if !needs.mail.is_empty() {
        let receivers = needs.mail.join(", ");
        if has(MAIL_SEND) {
            out.push(Check::ok(
                format!("{t}: Mail.Send"),
                format!("e-mail receivers ({receivers}) can send through this tenant"),
            ));
        } else {
            out.push(Check::failure(
                format!("{t}: Mail.Send"),
                format!(
                    "e-mail receivers ({receivers}) send through this tenant's Graph, and the token has no {MAIL_SEND}"
                ),
                format!("{}; then scope it to the sending mailbox with Exchange RBAC for Applications", fix(MAIL_SEND)),
            ));
        }
    }
    out
}

/// What a failed token request means, and the fix.
pub fn token_failure(
    config: &Config,
    tenant: &TenantConfig,
    choice: Option<&Choice>,
    error: &crate::graph::GraphError,
) -> Check {
    let name = format!("{}: token", tenant.name);
    let app = app_id(choice, None);
    let text = format!("{} {}", error.code.as_deref().unwrap_or(""), error.message);
    if text.contains("AADSTS65001") || text.contains("consent_required") {
        let app = app.as_deref().unwrap_or("<app id>");
        return Check::failure(
            name,
            format!("Entra ID refused the token: no admin consent for app {app} in this tenant (AADSTS65001)"),
            format!(
                "have a Global Administrator or Privileged Role Administrator of the tenant open {} and accept; \
                 consent must be granted again whenever the app's permissions change",
                consent_url(config, tenant, app)
            ),
        );
    }
    let fix = if text.contains("AADSTS700016") {
        format!(
            "the app is not in this tenant: register it or grant it consent at {}",
            consent_url(config, tenant, app.as_deref().unwrap_or("<app id>"))
        )
    } else if text.contains("AADSTS7000215") || text.contains("AADSTS7000222") {
        "the client secret is wrong or expired: create a new one and update the variable it comes from".to_string()
    } else {
        "check the credential's settings (see the credential check) and that the login authority is reachable"
            .to_string()
    };
    let status = error.status.map(|s| format!("HTTP {s}: ")).unwrap_or_default();
    Check::failure(name, format!("no token: {status}{}", error.message), fix)
}

/// How far Graph's clock (its `Date` header) is from ours.
pub fn clock(tenant: &str, date: Option<&str>, now: DateTime<Utc>) -> Check {
    let name = format!("{tenant}: clock");
    let Some(graph) = date.and_then(|d| DateTime::parse_from_rfc2822(d).ok()).map(|d| d.with_timezone(&Utc)) else {
        return Check::warning(
            name,
            "Graph's answer had no readable Date header",
            "none needed unless other checks fail",
        );
    };
    let skew = now - graph;
    let secs = skew.num_seconds();
    let detail = format!(
        "this clock is {}s {} Graph's ({})",
        secs.abs(),
        if secs >= 0 { "ahead of" } else { "behind" },
        graph.to_rfc3339()
    );
    let fix = "synchronise this machine's clock (NTP; `timedatectl set-ntp true`): tokens, doorbell signatures and \
               poll watermarks depend on it";
    if skew.abs() >= SKEW_FAILURE {
        Check::failure(name, detail, fix)
    } else if skew.abs() >= SKEW_WARNING {
        Check::warning(name, detail, fix)
    } else {
        Check::ok(name, detail)
    }
}

/// What an answer of `GET /security/alerts_v2?$top=1` says.
pub fn alerts_answer(
    config: &Config,
    tenant: &TenantConfig,
    choice: Option<&Choice>,
    claims: Option<&Value>,
    needs: &Needs,
    status: u16,
    body: &[u8],
) -> Check {
    let name = format!("{}: alerts_v2", tenant.name);
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        let n = v["value"].as_array().map_or(0, Vec::len);
        return Check::ok(name, format!("GET /security/alerts_v2?$top=1 answered {status} ({n} on the page)"));
    }
    let code = v["error"]["code"].as_str().unwrap_or("");
    let message = v["error"]["message"].as_str().unwrap_or("");
    let detail = format!("GET /security/alerts_v2?$top=1 answered {status} {code}: {message}");
    let role = if needs.write.is_some() { READ_WRITE_ALL } else { READ_ALL };
    let app = app_id(choice, claims);
    match status {
        401 | 403 => Check::failure(
            name,
            detail,
            format!("the token lacks {role}: {}", grant_fix(config, tenant, choice, app.as_deref(), role)),
        ),
        _ => Check::failure(name, detail, "retry later; if it persists, check Graph's service health for the tenant"),
    }
}

/// The warning when no alert was updated in the last [`RECENT_DAYS`] days.
pub fn no_recent_alerts(tenant: &str) -> Check {
    Check::warning(
        format!("{tenant}: recent alerts"),
        format!("no alert was created or updated in the last {RECENT_DAYS} days"),
        "usual causes: the tenant has no Defender / Entra ID P2 licence that raises alerts; a product is not \
         connected to Defender XDR (Defender for Endpoint onboarding, Defender for Cloud Apps or Identity \
         connectors); alerts hidden by tuning or suppression rules are not returned by the API; Entra ID \
         Protection sends only high-risk detections to Defender XDR by default. Raise a test alert (e.g. the \
         Defender for Endpoint detection test) to prove the path",
    )
}

/// The checks of one tenant: credential, token, claims, `alerts_v2`, clock, recent alerts.
pub async fn tenant(
    app: &App,
    auth: &Arc<Auth>,
    graph: &GraphClient,
    env: &Env,
    t: &TenantConfig,
    now: DateTime<Utc>,
) -> Vec<Check> {
    let config = &app.config;
    let needs = needs(config);
    let (choice, first) = credential(t, &**env);
    let mut out = vec![first];
    if choice.is_none() {
        return out;
    }
    let token = match auth.token(&t.name).await {
        Ok(token) => token,
        Err(e) => {
            out.push(token_failure(config, t, choice.as_ref(), &e));
            return out;
        }
    };
    out.push(Check::ok(format!("{}: token", t.name), "Entra ID issued a Graph token"));
    let claims = claims(&token);
    match &claims {
        Some(c) => out.extend(token_claims(config, t, choice.as_ref(), c, &needs)),
        None => out.push(Check::warning(
            format!("{}: claims", t.name),
            "the token is not a JWT, so its tenant and roles cannot be read",
            "none needed if the alerts_v2 check passes",
        )),
    }
    // One plain request, no retries: the doctor reports what Graph answers, status and Date header.
    let url = match versioned_base(&config.graph_base()) {
        Ok(base) => format!("{base}/security/alerts_v2?$top=1"),
        Err(e) => {
            out.push(Check::failure(format!("{}: alerts_v2", t.name), e, "fix graph_url"));
            return out;
        }
    };
    let sent = app
        .http
        .get(&url)
        .bearer_auth(&token)
        .header("Prefer", PREFER)
        .header("Accept", "application/json")
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            out.push(Check::failure(
                format!("{}: alerts_v2", t.name),
                format!("Graph did not answer: {}", e.without_url()),
                "check the network path to Graph (proxy, firewall, DNS) and graph_url",
            ));
            return out;
        }
    };
    let status = resp.status().as_u16();
    let date = resp.headers().get(reqwest::header::DATE).and_then(|d| d.to_str().ok()).map(str::to_string);
    let body = resp.bytes().await.unwrap_or_default();
    let answer = alerts_answer(config, t, choice.as_ref(), claims.as_ref(), &needs, status, &body);
    let readable = answer.status == Status::Ok;
    out.push(answer);
    out.push(clock(&t.name, date.as_deref(), now));
    if readable {
        let since = (now - chrono::Duration::days(RECENT_DAYS)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match graph.list_alerts(&t.name, &format!("lastUpdateDateTime ge {since}")).await {
            Ok(page) if page.alerts.is_empty() => out.push(no_recent_alerts(&t.name)),
            Ok(_) => out.push(Check::ok(
                format!("{}: recent alerts", t.name),
                format!("alerts were updated in the last {RECENT_DAYS} days"),
            )),
            Err(e) => out.push(Check::warning(
                format!("{}: recent alerts", t.name),
                format!("could not list recent alerts: {}", e.message),
                "see the alerts_v2 check",
            )),
        }
    }
    out
}

/// `webhook.public_url` is https and both notification URLs answer Graph's validation handshake.
pub async fn subscriptions(app: &App) -> Vec<Check> {
    let config = &app.config;
    let Some(endpoints) = crate::intake::subscriptions::Endpoints::from_config(config) else {
        return if config.subscriptions.is_empty() {
            Vec::new()
        } else {
            vec![Check::failure(
                "subscriptions: public_url",
                "subscriptions are configured but webhook.public_url is not set",
                "set webhook.public_url to the app's https base URL",
            )]
        };
    };
    let public = config.webhook.public_url.clone().unwrap_or_default();
    let mut out = Vec::new();
    match url::Url::parse(&public) {
        Ok(u) if u.scheme() == "https" => {
            out.push(Check::ok("subscriptions: public_url", format!("{public} is https")))
        }
        _ => out.push(Check::failure(
            "subscriptions: public_url",
            format!("{public} is not https: Graph only sends notifications to https URLs"),
            "set webhook.public_url to the app's https URL (https://<app>.azurewebsites.net, or the TLS proxy in \
             front of `secmon run`)",
        )),
    }
    for (function, target) in
        [("graph-webhook", &endpoints.notification_url), ("graph-lifecycle", &endpoints.lifecycle_url)]
    {
        out.push(handshake(&app.http, function, target).await);
    }
    out
}

/// Calls `url` as Graph validates a notification URL: `POST ?validationToken=…`, `text/plain`; the
/// answer must be 200 with the token as `text/plain`.
async fn handshake(http: &reqwest::Client, function: &str, target: &str) -> Check {
    let name = format!("subscriptions: {function} handshake");
    let token = format!("secmon-doctor {}", uuid::Uuid::new_v4());
    let Ok(mut url) = url::Url::parse(target) else {
        return Check::failure(name, "the notification URL is not a URL", "fix webhook.public_url");
    };
    url.query_pairs_mut().append_pair("validationToken", &token);
    let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
    let fix = format!(
        "make {shown} reach secmon's {function} function: the app is running, the URL's host and path are right, and \
         webhook.notification_query carries the function key (code=...)"
    );
    let sent = http
        .post(url)
        .header("Content-Type", "text/plain; charset=utf-8")
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return Check::failure(name, format!("POST {shown} failed: {}", e.without_url()), fix),
    };
    let status = resp.status().as_u16();
    let text_plain = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let body = resp.text().await.unwrap_or_default();
    if status == 200 && body == token && text_plain {
        Check::ok(name, format!("{shown} echoed the validation token as text/plain"))
    } else if status == 200 && body == token {
        Check::failure(
            name,
            format!("{shown} echoed the token but not as text/plain"),
            "answer the handshake with Content-Type: text/plain",
        )
    } else {
        Check::failure(name, format!("POST {shown}?validationToken=... answered {status} without the token"), fix)
    }
}

/// Workflows trigger hosts per cloud: Logic Apps' and Power Platform's (the newer Workflows URLs).
/// The US Government hosts follow the same pattern on `.us`; not confirmed in a primary source.
fn workflows_clouds(host: &str) -> Option<&'static [Cloud]> {
    if host.ends_with(".logic.azure.com") || host.ends_with(".api.powerplatform.com") {
        Some(&[Cloud::Global])
    } else if host.ends_with(".logic.azure.us") || host.ends_with(".api.powerplatform.us") {
        Some(&[Cloud::Usgov, Cloud::Usgovdod])
    } else if host.ends_with(".logic.azure.cn") {
        Some(&[Cloud::China])
    } else {
        None
    }
}

/// Each receiver's settings: a Workflows URL with its `sig` on a host of the right cloud; a webhook
/// secret that is hard to guess.
pub fn receivers(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, r) in &config.receivers {
        let check = format!("receiver {name}");
        match r {
            ReceiverConfig::Teams(t) => {
                let Ok(u) = url::Url::parse(&t.webhook_url) else {
                    out.push(Check::failure(
                        check,
                        "the Workflows URL is not a URL",
                        "paste the whole URL from the Workflows trigger",
                    ));
                    continue;
                };
                let host = u.host_str().unwrap_or("").to_string();
                if !u.query_pairs().any(|(k, v)| k.eq_ignore_ascii_case("sig") && !v.is_empty()) {
                    out.push(Check::failure(
                        check,
                        format!(
                            "the Workflows URL (host {host}) has no sig query parameter (the signature): the \
                             trigger will answer 401"
                        ),
                        "copy the whole HTTP URL from the Workflows trigger \"When a Teams webhook request is \
                         received\" (its last query parameter is the signature, sig), quoted, into the variable \
                         the config names",
                    ));
                    continue;
                }
                let cloud = config.cloud;
                match workflows_clouds(&host) {
                    Some(clouds) if clouds.contains(&cloud) => {
                        out.push(Check::ok(check, format!("Workflows URL on {host}, with sig")))
                    }
                    Some(clouds) => out.push(Check::failure(
                        check,
                        format!(
                            "the Workflows URL is on {host}, a {} cloud host, but cloud is {}",
                            cloud_name(clouds[0]),
                            cloud_name(cloud)
                        ),
                        "create the workflow in the tenant's own cloud and use its URL",
                    )),
                    None if crate::config::receivers::is_loopback(&u) => out.push(Check::warning(
                        check,
                        format!("Workflows URL on {host}, a local test sink"),
                        "use the real Workflows URL in production",
                    )),
                    None => out.push(Check::warning(
                        check,
                        format!("{host} is not a known Workflows host (*.logic.azure.com, *.api.powerplatform.com)"),
                        "check the URL is the Workflows trigger's",
                    )),
                }
            }
            ReceiverConfig::Webhook(w) => match &w.secret {
                None => out.push(Check::warning(
                    check,
                    "no secret: requests are not signed",
                    "set webhook.secret to 32+ random characters (openssl rand -hex 32) from the environment",
                )),
                Some(s) if s.len() < 32 || s.chars().collect::<BTreeSet<_>>().len() < 10 => out.push(Check::warning(
                    check,
                    format!(
                        "the HMAC key is weak ({} characters, {} distinct)",
                        s.len(),
                        s.chars().collect::<BTreeSet<_>>().len()
                    ),
                    "use 32+ random characters (openssl rand -hex 32)",
                )),
                Some(s) => out.push(Check::ok(check, format!("signed with a {}-character HMAC key", s.len()))),
            },
            ReceiverConfig::Email(e) => out
                .push(Check::ok(check, format!("sends as {} through Graph (Mail.Send is checked per tenant)", e.from))),
        }
    }
    out
}

/// The alert the test messages carry: the sample alert, marked as a test in its title and text.
pub fn test_alert(now: DateTime<Utc>) -> crate::alert::Alert {
    let mut v: Value = serde_json::from_str(crate::notify::template::SAMPLE_ALERT).expect("sample alert is JSON");
    v["id"] = json!(format!("secmon-doctor-test-{}", now.timestamp()));
    v["title"] = json!("secmon doctor: TEST MESSAGE, no action needed");
    v["description"] =
        json!("secmon doctor --send-test sent this message to check the receiver works. It is not an alert.");
    v["severity"] = json!("informational");
    crate::alert::Alert::from_value(v).expect("the sample alert reads")
}

/// One test message to every receiver, and what each answered.
pub async fn send_tests(app: &App, tenant: &str, now: DateTime<Utc>) -> Vec<Check> {
    let alert = test_alert(now);
    let mut out = Vec::new();
    for (name, receiver) in &app.receivers.by_name {
        let check = format!("send-test {name}");
        let view = crate::notify::view::View::new(tenant, name, &alert);
        let payload = match receiver.render(&app.receivers.templates, &view, &alert) {
            Ok(p) => p,
            Err(e) => {
                out.push(Check::failure(check, e.message, "fix the receiver's template"));
                continue;
            }
        };
        let delivery = format!("secmon-doctor-{}", uuid::Uuid::new_v4());
        let cx = crate::notify::SendContext {
            http: &app.http,
            graph: app.graph.as_ref(),
            store: app.store.as_ref(),
            tenant,
            now,
            delivery: &delivery,
        };
        match receiver.send(&cx, &payload).await {
            Ok(status) => out.push(Check::ok(
                check,
                format!("{} test message sent; the receiver answered {status}", receiver.kind()),
            )),
            Err(e) => out.push(Check::failure(
                check,
                format!("{} test message refused: {}", receiver.kind(), e.message),
                "see the receiver check; fix the URL, key or permission it names",
            )),
        }
    }
    out
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
    use super::*;

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
