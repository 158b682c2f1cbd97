//! The triage page (`/api/triage/…`), host-neutral: signed, expiring, single-use links from e-mail and
//! Workflows notifications to a small page that shows the alert and the same actions as the bot's card.
//!
//! - A link is `{base_url}/api/triage/{token}`; the token names the tenant, the alert, the version the
//!   notification showed, a random nonce and when it expires, and is signed with HMAC-SHA256 under
//!   `triage.page.link_key` (compared in constant time). A tampered token is refused (403), an expired
//!   one too (410). A link is single-use: the action claims `triage-link/{nonce}`, after which the link
//!   is refused (410) whatever its expiry.
//! - Nothing changes on a `GET`: it signs the person in (or sends them to sign in) and shows the alert
//!   with the forms. A `POST` carries a CSRF token bound to the session and the link; the person must be
//!   on the allow-list; then the link is consumed and a `Message::Triage` click (without a card) is
//!   queued for the worker ([`super::act`]), and the page confirms.
//! - Sign-in: in Azure ([`SignIn::AppService`]) App Service Authentication signs the person in and
//!   passes them in `X-MS-CLIENT-PRINCIPAL` (the platform strips client-sent copies), so those headers
//!   are read only there. Elsewhere ([`SignIn::Oidc`]) the page runs the OpenID Connect authorization code
//!   flow with PKCE (S256), state and nonce against `triage.page.oidc`, checks the RS256 `id_token`
//!   (signature by the provider's JWKS, `iss`, `aud`, `exp`, `nonce`) and keeps the person in a signed
//!   session cookie (HttpOnly, Secure, SameSite=Lax, [`SESSION_LIFETIME`]).
//!
//! The link is a capability: the page answers with `Referrer-Policy: no-referrer`, and
//! [`crate::redact`] masks `/api/triage/<token>` in logs.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::act::{
    Actor, BENIGN_CLASSIFICATIONS, BENIGN_DETERMINATIONS, Click, TRUE_POSITIVE_DETERMINATIONS, TriageAction,
};
use super::inbound::AllowList;
use crate::alert::Alert;
use crate::app::App;
use crate::config::triage::TriagePageConfig;
use crate::intake::Message;
use crate::intake::http::{HttpRequest, HttpResponse};
use crate::rules::report::esc;
use crate::store::{Precondition, StoreError, keys};

/// How long a page session lasts after sign-in.
pub const SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long a sign-in may take (the login cookie's lifetime).
const LOGIN_LIFETIME: i64 = 600;
/// How far an `id_token`'s `exp`/`nbf` may be off.
const CLOCK_SKEW: i64 = 300;
/// The session cookie.
pub const SESSION_COOKIE: &str = "secmon_triage";
/// The cookie that carries a sign-in in progress (state, nonce, PKCE verifier, the link).
pub const LOGIN_COOKIE: &str = "secmon_triage_login";
/// The path after `/api/triage/` of the OpenID Connect redirect URI.
pub const SIGNIN_PATH: &str = "signin";
/// App Service Authentication's claim of the Entra object id.
const OID_CLAIM: &str = "http://schemas.microsoft.com/identity/claims/objectidentifier";
const UPN_CLAIM: &str = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn";

/// How the person is signed in: the host decides, never the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// Azure App Service Authentication: the platform's `X-MS-CLIENT-PRINCIPAL` headers are trusted.
    AppService,
    /// OpenID Connect with PKCE against `triage.page.oidc`, then a signed session cookie.
    Oidc,
}

/// What a link names. Short field names keep the link short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Tenant (by name).
    #[serde(rename = "t")]
    pub tenant: String,
    /// Alert id.
    #[serde(rename = "a")]
    pub alert_id: String,
    /// The alert version the notification showed.
    #[serde(rename = "v")]
    pub version: String,
    /// Random: what makes the link single-use (`triage-link/{nonce}`).
    #[serde(rename = "n")]
    pub nonce: String,
    /// Expiry, Unix seconds.
    #[serde(rename = "e")]
    pub expires: i64,
    /// The alert as the notification told it: what the page shows. The page never reads Graph (the
    /// edge app that serves it in Azure holds no Graph role); the worker compares versions before acting.
    #[serde(rename = "d", default)]
    pub shown: Shown,
}

/// What the page shows of the alert, as notified (signed with the rest of the link).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// Title, cut to [`TITLE_CHARS`].
    #[serde(rename = "t", default)]
    pub title: String,
    /// Severity wire value.
    #[serde(rename = "s", default)]
    pub severity: String,
    /// Status wire value.
    #[serde(rename = "st", default)]
    pub status: String,
    /// `createdDateTime` as Graph wrote it.
    #[serde(rename = "c", default)]
    pub created: String,
    /// `assignedTo`.
    #[serde(rename = "as", default, skip_serializing_if = "String::is_empty")]
    pub assigned_to: String,
    /// The alert in the Defender portal (`https://` only).
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub defender_url: Option<String>,
}

/// The longest title a link carries (links stay well under 2 KB).
pub const TITLE_CHARS: usize = 160;

impl Shown {
    /// The facts of `alert` the page shows.
    pub fn of(alert: &Alert) -> Shown {
        let raw = alert.raw();
        let field = |f: &str| raw.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        Shown {
            title: alert.title_or_id().chars().take(TITLE_CHARS).collect(),
            severity: alert.severity().as_str().to_string(),
            status: alert.status().as_str().to_string(),
            created: field("createdDateTime"),
            assigned_to: field("assignedTo"),
            defender_url: raw
                .get("alertWebUrl")
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("https://") && u.len() <= 512)
                .map(str::to_string),
        }
    }
}

/// Why a link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Not a token secmon signed with this key (403).
    Tampered,
    /// Past its expiry (410).
    Expired,
}

fn mac(key: &[u8], domain: &str, data: &[u8]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(domain.as_bytes());
    m.update(&[0]);
    m.update(data);
    m
}

/// `value` as `base64url(json).base64url(hmac)`, the MAC under `key` for `domain` (links, sessions and
/// sign-ins never pass for one another).
fn seal<T: Serialize>(key: &[u8], domain: &str, value: &T) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("serializes"));
    let tag = URL_SAFE_NO_PAD.encode(mac(key, domain, body.as_bytes()).finalize().into_bytes());
    format!("{body}.{tag}")
}

/// The value of a [`seal`]ed token, if its MAC holds (checked in constant time).
fn open<T: DeserializeOwned>(key: &[u8], domain: &str, token: &str) -> Option<T> {
    let (body, tag) = token.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(key, domain, body.as_bytes()).verify_slice(&tag).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

fn random(bytes: usize) -> String {
    let buf: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(buf)
}

/// A signed link token for `alert` at its version, good for `triage.page.link_ttl` from `now`.
pub fn sign_link(page: &TriagePageConfig, tenant: &str, alert: &Alert, now: DateTime<Utc>) -> String {
    let ttl = chrono::Duration::from_std(page.link_ttl).unwrap_or(chrono::Duration::hours(72));
    let link = Link {
        tenant: tenant.to_string(),
        alert_id: alert.id.clone(),
        version: alert.version().to_string(),
        nonce: random(16),
        expires: (now + ttl).timestamp(),
        shown: Shown::of(alert),
    };
    seal(page.link_key.as_bytes(), "link", &link)
}

/// The URL of a fresh link: `{base_url}/api/triage/{token}`.
pub fn link_url(page: &TriagePageConfig, tenant: &str, alert: &Alert, now: DateTime<Utc>) -> String {
    format!("{}/api/triage/{}", page.base_url.trim_end_matches('/'), sign_link(page, tenant, alert, now))
}

/// Reads a link token: its MAC, then its expiry.
pub fn read_link(page: &TriagePageConfig, token: &str, now: DateTime<Utc>) -> Result<Link, LinkError> {
    let link: Link = open(page.link_key.as_bytes(), "link", token).ok_or(LinkError::Tampered)?;
    if link.expires <= now.timestamp() {
        return Err(LinkError::Expired);
    }
    Ok(link)
}

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// Random per sign-in: what the CSRF tokens are bound to.
    sid: String,
    oid: String,
    #[serde(default)]
    upn: Option<String>,
    #[serde(default)]
    name: String,
    /// Expiry, Unix seconds.
    e: i64,
}

impl Session {
    fn actor(&self) -> Actor {
        Actor { aad_object_id: self.oid.clone(), upn: self.upn.clone(), name: self.name.clone() }
    }
}

/// A sign-in in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Login {
    state: String,
    nonce: String,
    verifier: String,
    /// The link token to go back to.
    link: String,
    e: i64,
}

/// The CSRF token of the forms for `link` in `session`.
pub fn csrf_token(page: &TriagePageConfig, session_binding: &str, link_nonce: &str) -> String {
    let data = format!("{session_binding}|{link_nonce}");
    URL_SAFE_NO_PAD.encode(mac(page.link_key.as_bytes(), "csrf", data.as_bytes()).finalize().into_bytes())
}

fn csrf_ok(page: &TriagePageConfig, session_binding: &str, link_nonce: &str, given: &str) -> bool {
    let Ok(given) = URL_SAFE_NO_PAD.decode(given) else { return false };
    let data = format!("{session_binding}|{link_nonce}");
    mac(page.link_key.as_bytes(), "csrf", data.as_bytes()).verify_slice(&given).is_ok()
}

/// The person App Service Authentication signed in, from the headers the platform sets.
fn app_service_person(req: &HttpRequest) -> Option<Session> {
    let mut claims = std::collections::HashMap::new();
    if let Some(principal) = req.header("x-ms-client-principal")
        && let Ok(bytes) = STANDARD.decode(principal.trim())
        && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
    {
        for c in v.get("claims").and_then(Value::as_array).into_iter().flatten() {
            if let (Some(t), Some(val)) = (c.get("typ").and_then(Value::as_str), c.get("val").and_then(Value::as_str)) {
                claims.entry(t.to_string()).or_insert_with(|| val.to_string());
            }
        }
    }
    let claim = |names: &[&str]| names.iter().find_map(|n| claims.get(*n).cloned());
    let oid = claim(&[OID_CLAIM, "oid"]).or_else(|| req.header("x-ms-client-principal-id").map(str::to_string))?;
    let upn = claim(&["preferred_username", UPN_CLAIM, "upn"])
        .or_else(|| req.header("x-ms-client-principal-name").map(str::to_string));
    let name = claim(&["name"]).unwrap_or_default();
    Some(Session { sid: format!("appservice:{oid}"), oid, upn, name, e: i64::MAX })
}

fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.header("cookie")?.split(';').find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

fn set_cookie(page: &TriagePageConfig, name: &str, value: &str, max_age: i64) -> String {
    let base = page.base_url.as_str();
    let local = base.starts_with("http://127.0.0.1") || base.starts_with("http://localhost");
    let secure = if local { "" } else { "; Secure" };
    format!("{name}={value}; Path=/api/triage; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

fn signed_in(app: &App, page: &TriagePageConfig, req: &HttpRequest, how: SignIn) -> Option<Session> {
    match how {
        SignIn::AppService => app_service_person(req),
        SignIn::Oidc => {
            let session: Session = open(page.link_key.as_bytes(), "session", cookie(req, SESSION_COOKIE)?)?;
            (session.e > app.clock.now().timestamp()).then_some(session)
        }
    }
}

/// Answers one request to `/api/triage/{rest}`. See the module doc.
pub async fn handle(app: &App, rest: &str, req: &HttpRequest, how: SignIn) -> HttpResponse {
    let Some(page) = app.config.triage.page.as_ref() else {
        return html(404, "Not found", "<p>The triage page is not configured here.</p>");
    };
    let now = app.clock.now();
    if rest == SIGNIN_PATH {
        return match how {
            SignIn::Oidc if req.method == "GET" => signin_callback(app, page, req, now).await,
            _ => html(404, "Not found", "<p>No such page.</p>"),
        };
    }
    if req.method != "GET" && req.method != "POST" {
        return html(405, "Method not allowed", "<p>Use the link.</p>").with_header("Allow", "GET, POST");
    }
    let link = match read_link(page, rest, now) {
        Ok(link) => link,
        Err(LinkError::Tampered) => {
            return refusal(403, "This link is not valid", "It was not made by secmon, or it was changed.");
        }
        Err(LinkError::Expired) => {
            return refusal(410, "This link has expired", "Open the alert in Defender, or use a newer notification.");
        }
    };
    match app.store.get(&keys::triage_link(&link.nonce)).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return refusal(410, "This link was already used", "Each triage link acts once; nothing was changed now.");
        }
        Err(e) => return store_down(&e),
    }
    let Some(session) = signed_in(app, page, req, how) else {
        if req.method == "POST" {
            return refusal(401, "Sign in first", "Open the link again to sign in; nothing was changed.");
        }
        return match how {
            SignIn::AppService => {
                let back = format!("/api/triage/{rest}");
                let to = format!(
                    "/.auth/login/aad?post_login_redirect_uri={}",
                    url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
                );
                redirect(&to)
            }
            SignIn::Oidc => start_signin(app, page, rest, now).await,
        };
    };
    if req.method == "GET" { show(page, &link, &session) } else { act(app, page, &link, &session, req).await }
}

/// The page of the alert with its forms (a `GET`: nothing changes). The alert is shown as the
/// notification told it; the worker refuses an action when Defender has a newer version.
fn show(page: &TriagePageConfig, link: &Link, session: &Session) -> HttpResponse {
    let csrf = csrf_token(page, &session.sid, &link.nonce);
    let shown = &link.shown;
    let title = if shown.title.is_empty() { link.alert_id.as_str() } else { shown.title.as_str() };
    let defender = match &shown.defender_url {
        Some(url) => format!("<a href=\"{}\" rel=\"noreferrer\" target=\"_blank\">Open in Defender</a>", esc(url)),
        None => String::new(),
    };
    let options =
        |values: &[&str]| values.iter().map(|v| format!("<option value=\"{v}\">{v}</option>")).collect::<String>();
    let who = session.upn.as_deref().unwrap_or(&session.oid);
    let form = |action: &str, inner: &str, label: &str, class: &str| {
        format!(
            "<form method=\"post\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"action\" value=\"{action}\">{inner}\
             <button type=\"submit\" class=\"{class}\" id=\"{action}\">{label}</button></form>"
        )
    };
    let body = format!(
        "<p class=\"sev sev-{sev}\">{sev} severity</p><h1>{title}</h1>\
         <table><tr><th>Status</th><td id=\"status\">{status}</td></tr>\
         <tr><th>Tenant</th><td>{tenant}</td></tr><tr><th>Created</th><td>{created}</td></tr>\
         <tr><th>Assigned to</th><td>{assigned}</td></tr></table>\
         <p>{defender}</p><p class=\"note\">As the notification told it. If the alert changed in Defender since, \
         an action is refused and Defender keeps the change.</p><h2>Act as {who}</h2>{ack}{benign}{tp}",
        sev = esc(&shown.severity),
        title = esc(title),
        status = esc(&shown.status),
        tenant = esc(&link.tenant),
        created = esc(&shown.created),
        assigned = esc(&shown.assigned_to),
        who = esc(who),
        ack = form("acknowledge", "", "Acknowledge (assign to me)", "secondary"),
        benign = form(
            "resolve-benign",
            &format!(
                "<label>Classification <select name=\"classification\">{}</select></label>\
                 <label>Determination <select name=\"determination\">{}</select></label>",
                options(&BENIGN_CLASSIFICATIONS),
                options(&BENIGN_DETERMINATIONS)
            ),
            "Resolve as benign",
            "primary"
        ),
        tp = form(
            "true-positive",
            &format!(
                "<label>Determination <select name=\"tp_determination\">{}</select></label>",
                options(&TRUE_POSITIVE_DETERMINATIONS)
            ),
            "True positive",
            "danger"
        ),
    );
    html(200, &format!("Triage: {title}"), &body)
}

/// A `POST`: CSRF, allow-list, consume the link, queue the click, confirm.
async fn act(app: &App, page: &TriagePageConfig, link: &Link, session: &Session, req: &HttpRequest) -> HttpResponse {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&req.body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let field = |f: &str| form.get(f).map(String::as_str).filter(|s| !s.is_empty());
    if !field("csrf").is_some_and(|c| csrf_ok(page, &session.sid, &link.nonce, c)) {
        return refusal(403, "This form is not valid", "Reload the link and try again; nothing was changed.");
    }
    let actor = session.actor();
    // Groups can only be checked on Graph, which the edge may not call: with groups configured the worker
    // decides (and audits a refusal); without, a person not listed is refused here.
    let allowed = page.allowed(&app.config.triage.allowed);
    if allowed.groups.is_empty() && !AllowList(allowed.users.clone()).allows(&actor) {
        tracing::warn!(user = %actor.aad_object_id, "a triage page action by a person not on the allow-list was refused");
        return refusal(403, "You are not allowed to act on secmon alerts", "Nothing was changed.");
    }
    let need = |f: &str| field(f).map(str::to_string).ok_or_else(|| format!("the form has no {f}"));
    let action = match field("action") {
        Some("acknowledge") => Ok(TriageAction::Acknowledge),
        Some("resolve-benign") => need("classification")
            .and_then(|c| Ok(TriageAction::ResolveBenign { classification: c, determination: need("determination")? })),
        Some("true-positive") => need("tp_determination").map(|d| TriageAction::TruePositive { determination: d }),
        _ => Err("unknown action".to_string()),
    }
    .and_then(|a| a.check().map(|()| a));
    let action = match action {
        Ok(a) => a,
        Err(why) => return refusal(400, "This form is not complete", &why),
    };
    let key = keys::triage_link(&link.nonce);
    let claim = json!({"by": actor.aad_object_id, "action": action.name(), "at": app.clock.now()});
    match app.store.put_if(&key, claim.to_string().as_bytes(), Precondition::Absent).await {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => {
            return refusal(410, "This link was already used", "Each triage link acts once; nothing was changed now.");
        }
        Err(e) => return store_down(&e),
    }
    let done = action.done();
    let click = Click {
        tenant: link.tenant.clone(),
        alert_id: link.alert_id.clone(),
        version: link.version.clone(),
        action,
        actor,
        card: None,
        bot: None,
    };
    let message =
        Message::Triage { tenant: link.tenant.clone(), click: serde_json::to_value(&click).expect("clicks serialize") };
    if let Err(e) = message.send(app.store.as_ref(), app.queue.as_ref()).await {
        // Not queued: the link is given back, so the person can try again.
        let _ = app.store.delete(&key).await;
        return store_down(&e);
    }
    tracing::info!(tenant = %link.tenant, alert = %link.alert_id, "triage page: {done} queued");
    html(
        200,
        "Done",
        &format!(
            "<h1 id=\"outcome\">{done}</h1><p>secmon is making the change in Defender now, with a comment naming you; \
             it shows there in a moment. This link is used up. You may close this page.</p>"
        ),
    )
}

/// Sends the person to the OpenID provider, with state, nonce and the PKCE challenge.
async fn start_signin(app: &App, page: &TriagePageConfig, token: &str, now: DateTime<Utc>) -> HttpResponse {
    let Some(oidc) = page.oidc.as_ref() else {
        return html(503, "Sign-in is not configured", "<p>triage.page.oidc is needed outside Azure.</p>");
    };
    let discovery = match discover(app, &oidc.issuer).await {
        Ok(d) => d,
        Err(why) => return sign_in_down(&why),
    };
    let login = Login {
        state: random(24),
        nonce: random(24),
        verifier: random(32),
        link: token.to_string(),
        e: now.timestamp() + LOGIN_LIFETIME,
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(login.verifier.as_bytes()));
    let mut to = match url::Url::parse(&discovery.authorization_endpoint) {
        Ok(u) => u,
        Err(_) => return sign_in_down("the authorization endpoint is not a URL"),
    };
    to.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.client_id)
        .append_pair("redirect_uri", &redirect_uri(page))
        .append_pair("scope", "openid profile email")
        .append_pair("response_mode", "query")
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let sealed = seal(page.link_key.as_bytes(), "login", &login);
    redirect(to.as_str()).with_header("Set-Cookie", set_cookie(page, LOGIN_COOKIE, &sealed, LOGIN_LIFETIME))
}

fn redirect_uri(page: &TriagePageConfig) -> String {
    format!("{}/api/triage/{SIGNIN_PATH}", page.base_url.trim_end_matches('/'))
}

/// The provider's redirect back: check state, redeem the code with the verifier, check the `id_token`,
/// start the session and go back to the link.
async fn signin_callback(app: &App, page: &TriagePageConfig, req: &HttpRequest, now: DateTime<Utc>) -> HttpResponse {
    let Some(oidc) = page.oidc.as_ref() else {
        return html(404, "Not found", "<p>No such page.</p>");
    };
    if let Some(error) = req.query_param("error") {
        return refusal(403, "Sign-in failed", &format!("The sign-in provider answered {error}."));
    }
    let again = "Open the triage link again to sign in (cookies must be allowed).";
    let Some(login) = cookie(req, LOGIN_COOKIE).and_then(|c| open::<Login>(page.link_key.as_bytes(), "login", c))
    else {
        return refusal(400, "This sign-in is not valid", again);
    };
    let state_ok = req.query_param("state").is_some_and(|s| {
        use subtle::ConstantTimeEq;
        bool::from(s.as_bytes().ct_eq(login.state.as_bytes()))
    });
    if !state_ok || login.e <= now.timestamp() {
        return refusal(400, "This sign-in is not valid", again);
    }
    let Some(code) = req.query_param("code") else {
        return refusal(400, "This sign-in is not valid", again);
    };
    let discovery = match discover(app, &oidc.issuer).await {
        Ok(d) => d,
        Err(why) => return sign_in_down(&why),
    };
    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.to_string()),
        ("redirect_uri", redirect_uri(page)),
        ("client_id", oidc.client_id.clone()),
        ("code_verifier", login.verifier.clone()),
    ];
    if let Some(secret) = &oidc.client_secret {
        form.push(("client_secret", secret.clone()));
    }
    let answer = match app.http.post(&discovery.token_endpoint).form(&form).send().await {
        Ok(resp) if resp.status().is_success() => resp.json::<Value>().await.map_err(|e| e.to_string()),
        Ok(resp) => Err(format!("the token endpoint answered HTTP {}", resp.status())),
        Err(e) => Err(crate::redact::redact(&e.to_string())),
    };
    let id_token = match answer.as_ref().map(|a| a.get("id_token").and_then(Value::as_str)) {
        Ok(Some(t)) => t.to_string(),
        Ok(None) => return refusal(403, "Sign-in failed", "The provider sent no id_token."),
        Err(why) => {
            tracing::warn!("triage page sign-in: {why}");
            return refusal(403, "Sign-in failed", "The sign-in provider refused the code.");
        }
    };
    let claims =
        match verify_id_token(app, &discovery, &oidc.issuer, &oidc.client_id, &login.nonce, &id_token, now).await {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!("triage page sign-in: the id_token was refused: {why}");
                return refusal(403, "Sign-in failed", "The sign-in could not be verified.");
            }
        };
    let text = |f: &str| claims.get(f).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let Some(oid) = text("oid").or_else(|| text("sub")) else {
        return refusal(403, "Sign-in failed", "The sign-in names nobody.");
    };
    let session = Session {
        sid: random(24),
        oid,
        upn: text("preferred_username").or_else(|| text("upn")).or_else(|| text("email")),
        name: text("name").unwrap_or_default(),
        e: now.timestamp() + SESSION_LIFETIME.as_secs() as i64,
    };
    let sealed = seal(page.link_key.as_bytes(), "session", &session);
    let back = format!("{}/api/triage/{}", page.base_url.trim_end_matches('/'), login.link);
    redirect(&back)
        .with_header("Set-Cookie", set_cookie(page, SESSION_COOKIE, &sealed, SESSION_LIFETIME.as_secs() as i64))
}

/// The parts of an OpenID discovery document the page uses.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

async fn discover(app: &App, issuer: &str) -> Result<Discovery, String> {
    let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
    let resp = app.http.get(&url).send().await.map_err(|e| crate::redact::redact(&e.to_string()))?;
    if !resp.status().is_success() {
        return Err(format!("the discovery document answered HTTP {}", resp.status()));
    }
    resp.json().await.map_err(|e| format!("the discovery document: {e}"))
}

/// Checks an RS256 `id_token`: signature by a key of the provider's JWKS, `iss`, `aud`, `exp`/`nbf`
/// within [`CLOCK_SKEW`], `nonce`. Returns its claims.
async fn verify_id_token(
    app: &App,
    discovery: &Discovery,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else { return Err("not a JWT".into()) };
    let decode = |p: &str| -> Result<Value, String> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|_| "bad base64")?)
            .map_err(|_| "bad JSON".to_string())
    };
    let header = decode(header)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err("not RS256".into());
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let jwks: Value = app
        .http
        .get(&discovery.jwks_uri)
        .send()
        .await
        .map_err(|e| crate::redact::redact(&e.to_string()))?
        .json()
        .await
        .map_err(|e| format!("JWKS: {e}"))?;
    let keys = jwks.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
    let key = keys
        .iter()
        .find(|k| kid.is_none() || k.get("kid").and_then(Value::as_str) == kid)
        .ok_or("no JWKS key has the token's kid")?;
    let part = |f: &str| {
        key.get(f)
            .and_then(Value::as_str)
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or(format!("JWK without {f}"))
    };
    let (n, e) = (part("n")?, part("e")?);
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "bad signature encoding")?;
    aws_lc_rs::signature::RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{payload}", parts[0]).as_bytes(),
            &signature,
        )
        .map_err(|_| "the signature does not verify")?;
    let claims = decode(payload)?;
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or_default();
    let expected = issuer.trim_end_matches('/');
    if iss.trim_end_matches('/') != expected || discovery.issuer.trim_end_matches('/') != expected {
        return Err(format!("iss {iss:?} is not the configured issuer"));
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud is not the client id".into());
    }
    let t = now.timestamp();
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp + CLOCK_SKEW > t => {}
        _ => return Err("expired, or no exp".into()),
    }
    if claims.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| nbf - CLOCK_SKEW > t) {
        return Err("not valid yet".into());
    }
    let given = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), nonce.as_bytes())) {
        return Err("the nonce is not this sign-in's".into());
    }
    Ok(claims)
}

const STYLE: &str = "body{font-family:Segoe UI,Helvetica,Arial,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#242424}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}table{border-collapse:collapse}th{text-align:left;padding:.2rem 1rem .2rem 0;color:#616161;font-weight:normal}\
form{margin:.6rem 0;padding:.6rem;border:1px solid #e0e0e0;border-radius:4px}label{display:block;margin:.3rem 0}select{margin-left:.4rem}\
button{padding:.45rem .9rem;border:0;border-radius:4px;color:#fff;background:#616161;cursor:pointer}button.primary{background:#0f6cbd}button.danger{background:#c50f1f}\
.sev{font-weight:bold;text-transform:capitalize;margin:0}.sev-high{color:#c50f1f}.sev-medium{color:#bc4b09}.note{color:#616161;font-size:.85rem}";

/// A page of secmon's: no caching, no referrer (the URL is a capability), no framing, no scripts.
fn html(status: u16, title: &str, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        content_type: "text/html; charset=utf-8",
        body: format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
             <meta name=\"referrer\" content=\"no-referrer\"><title>{}</title><style>{STYLE}</style></head><body>{body}\
             <p style=\"color:#8a8a8a;font-size:.8rem\">secmon triage</p></body></html>",
            esc(title)
        ),
        headers: Vec::new(),
    }
    .with_header("Cache-Control", "no-store")
    .with_header("X-Content-Type-Options", "nosniff")
    .with_header("Referrer-Policy", "no-referrer")
    .with_header("X-Frame-Options", "DENY")
    .with_header(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
}

fn refusal(status: u16, title: &str, why: &str) -> HttpResponse {
    html(status, title, &format!("<h1 id=\"refusal\">{}</h1><p>{}</p>", esc(title), esc(why)))
}

fn store_down(e: &StoreError) -> HttpResponse {
    tracing::warn!("triage page: store: {}", crate::redact::redact(&e.to_string()));
    html(503, "Try again", "<p>secmon cannot record this now; nothing was changed. Try again in a minute.</p>")
        .with_header("Retry-After", "60")
}

fn sign_in_down(why: &str) -> HttpResponse {
    tracing::warn!("triage page sign-in: {why}");
    html(503, "Sign-in is unavailable", "<p>The sign-in provider cannot be reached now. Try again in a minute.</p>")
        .with_header("Retry-After", "60")
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse { status: 302, content_type: "text/plain; charset=utf-8", body: String::new(), headers: Vec::new() }
        .with_header("Location", to)
        .with_header("Cache-Control", "no-store")
        .with_header("Referrer-Policy", "no-referrer")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> TriagePageConfig {
        TriagePageConfig {
            base_url: "https://edge.example".into(),
            link_key: "k".repeat(32),
            link_ttl: std::time::Duration::from_secs(3600),
            oidc: None,
            allowed: None,
            app_service_auth: false,
        }
    }

    #[test]
    fn links_verify_expire_and_refuse_tampering() {
        let now: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().unwrap();
        let alert =
            Alert::from_value(json!({"id": "a1", "lastUpdateDateTime": "2026-12-01T09:00:00Z", "title": "T"})).unwrap();
        let token = sign_link(&page(), "contoso", &alert, now);
        let link = read_link(&page(), &token, now).unwrap();
        assert_eq!(
            (link.tenant.as_str(), link.alert_id.as_str(), link.version.as_str()),
            ("contoso", "a1", "2026-12-01T09:00:00Z")
        );
        assert_eq!(read_link(&page(), &token, now + chrono::Duration::hours(1)), Err(LinkError::Expired));
        let mut other = page();
        other.link_key = "x".repeat(32);
        assert_eq!(read_link(&other, &token, now), Err(LinkError::Tampered));
        let (body, tag) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD
            .encode(String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap().replace("a1", "a2").as_bytes());
        assert_eq!(read_link(&page(), &format!("{forged}.{tag}"), now), Err(LinkError::Tampered));
        // A session token is not a link, though both are sealed with the same key.
        let session = seal(page().link_key.as_bytes(), "session", &link);
        assert_eq!(read_link(&page(), &session, now), Err(LinkError::Tampered));
        assert_ne!(sign_link(&page(), "contoso", &alert, now), token, "every link has its own nonce");
    }

    #[test]
    fn csrf_tokens_are_bound_to_session_and_link() {
        let t = csrf_token(&page(), "s1", "n1");
        assert!(csrf_ok(&page(), "s1", "n1", &t));
        assert!(!csrf_ok(&page(), "s2", "n1", &t));
        assert!(!csrf_ok(&page(), "s1", "n2", &t));
        assert!(!csrf_ok(&page(), "s1", "n1", ""));
    }

    #[test]
    fn app_service_principal_names_the_person() {
        let principal = json!({"auth_typ": "aad", "claims": [
            {"typ": OID_CLAIM, "val": "oid-1"}, {"typ": "preferred_username", "val": "dana@contoso.com"},
            {"typ": "name", "val": "Dana Lee"}]});
        let mut req = HttpRequest { method: "GET".into(), query: vec![], headers: Default::default(), body: vec![] };
        req.headers.insert("x-ms-client-principal".into(), STANDARD.encode(principal.to_string()));
        let s = app_service_person(&req).unwrap();
        assert_eq!(
            (s.oid.as_str(), s.upn.as_deref(), s.name.as_str()),
            ("oid-1", Some("dana@contoso.com"), "Dana Lee")
        );
        req.headers.clear();
        assert!(app_service_person(&req).is_none());
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("<b a=\"1\">&'"), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;");
    }
}
