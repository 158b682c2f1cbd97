//! One tenant: the credential and why, the token and its claims, `alerts_v2`, the clock, recent alerts.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::environment::cloud_name;
use super::{
    Check, GRAPH_APP_ID, MAIL_SEND, READ_ALL, READ_WRITE_ALL, RECENT_DAYS, SKEW_FAILURE, SKEW_WARNING, Status,
};
use crate::app::App;
use crate::config::{Config, Mode, ReceiverConfig, TenantConfig};
use crate::graph::Graph;
use crate::graph::auth::{self, Auth, Choice, Env};
use crate::graph::client::{GraphClient, PREFER, versioned_base};

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
        let query =
            crate::graph::AlertQuery { filter: format!("lastUpdateDateTime ge {since}"), orderby: None, top: Some(1) };
        match graph.list_alerts(&t.name, &query).await {
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
