//! The triage page end to end, against the Graph emulator and its OpenID provider stand-in (over TLS,
//! with the real Graph client): a notified alert's e-mail and Workflows card carry a signed link; the
//! link signs the person in (authorization code + PKCE), shows the alert without changing anything, and
//! one POST (CSRF-checked) queues one triage click that the worker turns into the Graph PATCH; the same
//! link is then refused. Tampered, expired and foreign links, bad CSRF, a person not allowed, and the
//! App Service Authentication headers (trusted behind the Functions host only) are each checked.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secmon::app::App;
use secmon::audit::{Action, Record};
use secmon::clock::{Clock, ManualClock};
use secmon::functions::Gate;
use secmon::host::standalone;
use secmon::store::Store;
use secmon::store::sqlite::SqliteStore;
use secmon_emulator::{Emulator, OidcUser, Options};
use serde_json::{Value, json};
use tower::ServiceExt;

const TENANT_ID: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
const CLIENT_ID: &str = "0c5bd3d2-6b6e-4c47-9a0c-2b1f7f8d9e10";
const SECRET: &str = "triage-page-tests~secret";
const BASE: &str = "http://127.0.0.1:9";
const LINK_KEY: &str = "triage-page-tests-link-key-0123456789";

struct Harness {
    emu: Emulator,
    app: App,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    /// A client that follows no redirects: the test is the browser.
    browser: reqwest::Client,
}

fn now() -> DateTime<Utc> {
    "2026-12-01T10:42:00Z".parse().unwrap()
}

async fn harness() -> Harness {
    harness_with(true).await
}

/// The rig; `app_service_auth`: whether the app is told App Service Authentication is on
/// (`SECMON_TRIAGE_APP_SERVICE_AUTH`, set by the Bicep exactly when it is).
async fn harness_with(app_service_auth: bool) -> Harness {
    let emu = Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    emu.set_now(Some(now()));
    emu.seed_samples(TENANT_ID);
    emu.add_client(TENANT_ID, CLIENT_ID, SECRET);
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let pem = emu.ca_pem().expect("tls");
    let cert = reqwest::Certificate::from_pem(pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([cert.clone()]).build().unwrap();
    let browser =
        reqwest::Client::builder().tls_certs_only([cert]).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let (graph, authority, issuer) = (emu.graph_url(), emu.authority_url(), emu.oidc_issuer());
    let teams = emu.teams_webhook_url("soc");
    let text = format!(
        "graph_url: {graph}\nauthority_url: {authority}\n\
         tenants:\n  - {{ id: {TENANT_ID}, name: contoso, credential: {{ client_id: {CLIENT_ID}, client_secret: {SECRET} }} }}\n\
         routes:\n  - {{ receivers: [soc-teams, soc-email] }}\n\
         receivers:\n  soc-teams: {{ teams: {{ webhook_url: \"${{TEAMS_URL}}\" }} }}\n  \
         soc-email: {{ email: {{ from: secmon@contoso.com, to: [soc@contoso.com] }} }}\n\
         triage:\n  allowed: {{ users: [dana@contoso.com] }}\n  \
         page: {{ base_url: '{BASE}', link_key: '${{LINK_KEY}}', link_ttl: 1h, oidc: {{ issuer: '{issuer}', client_id: secmon-triage }} }}\n"
    );
    let env = move |k: &str| match k {
        "TEAMS_URL" => Some(teams.clone()),
        "LINK_KEY" => Some(LINK_KEY.to_string()),
        "SECMON_TRIAGE_APP_SERVICE_AUTH" if app_service_auth => Some("on".to_string()),
        _ => None,
    };
    let config = secmon::setup::load_str(&text, std::path::Path::new("test.yaml"), &env, now()).unwrap().config;
    let app = common::rig::app(config, store.clone(), http.clone(), clock.clone());
    Harness { emu, app, store, clock, browser }
}

/// One answer of the router.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.first()).map(String::as_str).unwrap_or("")
    }

    /// The `name=value` part of the cookie set as `name`.
    fn cookie(&self, name: &str) -> String {
        let set = self.headers.get("set-cookie").into_iter().flatten().find(|c| c.starts_with(&format!("{name}=")));
        set.unwrap_or_else(|| panic!("no cookie {name}: {self:?}")).split(';').next().unwrap().to_string()
    }

    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form") + "name=\"csrf\" value=\"".len();
        self.body[at..].split('"').next().unwrap().to_string()
    }
}

impl Harness {
    async fn call(&self, gate: Gate, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = secmon::functions::router_with(self.app.clone(), gate)
            .oneshot(req.body(axum::body::Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in resp.headers() {
            out.entry(k.as_str().to_string()).or_default().push(v.to_str().unwrap().to_string());
        }
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        Answer { status, headers: out, body: String::from_utf8_lossy(&body).into_owned() }
    }

    async fn get(&self, path: &str, cookie: &str) -> Answer {
        self.call(Gate::Open, "GET", path, &[("cookie", cookie)], "").await
    }

    async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let headers = [("cookie", cookie), ("content-type", "application/x-www-form-urlencoded")];
        self.call(Gate::Open, "POST", path, &headers, &body).await
    }

    /// A fresh link to the first new sample alert, as a notification carries it.
    fn link(&self) -> (String, Value) {
        let alert = self.new_alert();
        let page = self.app.config.triage.page.as_ref().unwrap();
        let parsed = secmon::alert::Alert::from_value(alert.clone()).unwrap();
        let url = secmon::triage::page::link_url(page, "contoso", &parsed, self.clock.now());
        (url.strip_prefix(BASE).unwrap().to_string(), alert)
    }

    fn new_alert(&self) -> Value {
        let mut alerts = self.emu.alerts(TENANT_ID);
        alerts.sort_by_key(|a| a["id"].as_str().unwrap().to_string());
        alerts.into_iter().find(|a| a["status"] == "new").expect("a new sample alert")
    }

    /// Signs in through the stand-in as a browser would: the page sends the person to the provider, the
    /// provider back with a code, the page to the link with a session cookie. Returns the cookie.
    async fn sign_in(&self, path: &str) -> String {
        let start = self.get(path, "").await;
        assert_eq!(start.status, 302, "{start:?}");
        let to = url::Url::parse(start.header("location")).unwrap();
        assert!(to.as_str().starts_with(&format!("{}/authorize?", self.emu.oidc_issuer())), "{to}");
        let q: BTreeMap<String, String> = to.query_pairs().into_owned().collect();
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], format!("{BASE}/api/triage/signin"));
        assert!(!q["state"].is_empty() && !q["nonce"].is_empty());
        let login = start.cookie("secmon_triage_login");
        assert!(start.header("set-cookie").contains("HttpOnly") && start.header("set-cookie").contains("SameSite=Lax"));
        let back = self.browser.post(format!("{}/authorize", self.emu.oidc_issuer())).form(&q).send().await.unwrap();
        assert_eq!(back.status(), 302);
        let back = back.headers()["location"].to_str().unwrap().to_string();
        let callback = self.get(back.strip_prefix(BASE).unwrap(), &login).await;
        assert_eq!(callback.status, 302, "{callback:?}");
        assert_eq!(callback.header("location"), format!("{BASE}{path}"));
        callback.cookie("secmon_triage")
    }

    async fn queued(&self) -> usize {
        let got = self.app.queue.receive(secmon::store::ALERTS_QUEUE, 10, Duration::ZERO).await.unwrap();
        got.len()
    }

    async fn audit(&self) -> Vec<Record> {
        common::rig::audit_records(self.store.as_ref()).await
    }
}

#[tokio::test]
async fn notifications_carry_a_signed_triage_link_in_the_card_and_the_mail() {
    let h = harness().await;
    let alert = h.new_alert();
    secmon::respond::process_alert(&h.app, "contoso", alert.clone()).await.unwrap();
    standalone::drain(&h.app, 20).await;
    let messages = h.emu.teams_messages("soc");
    assert_eq!(messages.len(), 1, "{messages:?}");
    let card = &messages[0]["attachments"][0]["content"];
    assert_eq!(card["version"], "1.4");
    let triage: Vec<&Value> = card["actions"].as_array().unwrap().iter().filter(|a| a["title"] == "Triage").collect();
    assert_eq!(triage.len(), 1, "{card}");
    assert_eq!(triage[0]["type"], "Action.OpenUrl");
    let card_url = triage[0]["url"].as_str().unwrap();
    // For scripts/check-cards.sh: the Adaptive Cards parser checks the card with its link (1.4).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cards");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("triage-link.json"), serde_json::to_string_pretty(card).unwrap()).unwrap();
    assert!(card_url.starts_with(&format!("{BASE}/api/triage/")), "{card_url}");
    let mails = h.emu.mails();
    assert_eq!(mails.len(), 1);
    // The template engine escapes `/` in attributes (`&#x2f;`), which a browser reads back as `/`.
    let html = mails[0].2["message"]["body"]["content"].as_str().unwrap().replace("&#x2f;", "/");
    let at = html.find(&format!("{BASE}/api/triage/")).expect("a triage link in the mail");
    let mail_url = html[at..].split('"').next().unwrap();
    assert_ne!(mail_url, card_url, "each message has its own single-use link");
    // Both are links to this alert at this version.
    let page = h.app.config.triage.page.as_ref().unwrap();
    for url in [card_url, mail_url] {
        let token = url.rsplit('/').next().unwrap();
        let link = secmon::triage::page::read_link(page, token, now()).unwrap();
        assert_eq!((link.tenant.as_str(), link.alert_id.as_str()), ("contoso", alert["id"].as_str().unwrap()));
        assert_eq!(link.version, alert["lastUpdateDateTime"].as_str().unwrap());
    }
}

#[tokio::test]
async fn a_link_signs_in_with_pkce_shows_the_alert_and_acts_once() {
    let h = harness().await;
    let (path, alert) = h.link();
    let session = h.sign_in(&path).await;
    let shown = h.get(&path, &session).await;
    assert_eq!(shown.status, 200, "{shown:?}");
    assert!(shown.header("content-type").starts_with("text/html"));
    assert_eq!(shown.header("referrer-policy"), "no-referrer");
    assert!(shown.body.contains(alert["title"].as_str().unwrap()), "{}", shown.body);
    assert!(shown.body.contains("Resolve as benign") && shown.body.contains("Act as dana@contoso.com"));
    // Nothing changed on the GETs.
    assert!(h.emu.patches().is_empty());
    assert_eq!(h.queued().await, 0);

    let form = [
        ("csrf", shown.csrf()),
        ("action", "resolve-benign".into()),
        ("classification", "falsePositive".into()),
        ("determination", "notMalicious".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = h.post(&path, &session, &form).await;
    assert_eq!(done.status, 200, "{done:?}");
    assert!(done.body.contains("Resolved as benign"), "{}", done.body);
    let results = standalone::drain(&h.app, 5).await;
    assert_eq!(results.len(), 1, "one triage message: {results:?}");
    let patches = h.emu.patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert_eq!(patches[0].2["status"], "resolved");
    assert_eq!(patches[0].2["classification"], "falsePositive");
    assert_eq!(patches[0].2["assignedTo"], "dana@contoso.com");
    let comments = h.emu.comments();
    assert!(comments.iter().any(|c| c.2 == "Resolved as benign by dana@contoso.com via secmon"), "{comments:?}");
    let audit = h.audit().await;
    assert!(audit.iter().any(|r| r.action == Action::ActionByUser && r.status_after.as_deref() == Some("resolved")));

    // The same link again: refused, on GET and POST, and nothing more is queued.
    let again = h.get(&path, &session).await;
    assert_eq!(again.status, 410, "{again:?}");
    assert!(again.body.contains("already used"));
    assert_eq!(h.post(&path, &session, &form).await.status, 410);
    assert_eq!(h.queued().await, 0);
}

#[tokio::test]
async fn tampered_expired_and_forged_requests_are_refused_and_queue_nothing() {
    let h = harness().await;
    let (path, _) = h.link();
    let session = h.sign_in(&path).await;
    let csrf = h.get(&path, &session).await.csrf();

    // A tampered token.
    let tampered = format!("{}x", path);
    assert_eq!(h.get(&tampered, &session).await.status, 403);
    // A CSRF token of another link, and none at all.
    let (other, _) = h.link();
    for (p, c) in [(&other, csrf.as_str()), (&path, "")] {
        assert_eq!(h.post(p, &session, &[("csrf", c), ("action", "acknowledge")]).await.status, 403, "{p} {c:?}");
    }
    // A POST without a session, or with a session cookie not signed by secmon.
    let good = [("csrf", csrf.as_str()), ("action", "acknowledge")];
    assert_eq!(h.post(&path, "", &good).await.status, 401);
    assert_eq!(h.post(&path, "secmon_triage=eyJ4IjoxfQ.AAAA", &good).await.status, 401);
    // Someone not on the allow-list signs in: shown the alert, refused the action.
    h.emu.set_oidc_user(OidcUser { oid: "oid-eve".into(), upn: "eve@contoso.com".into(), name: "Eve".into() });
    let (eves, _) = h.link();
    let eve = h.sign_in(&eves).await;
    let eve_csrf = h.get(&eves, &eve).await.csrf();
    let f = [("csrf", eve_csrf.as_str()), ("action", "acknowledge")];
    let refused = h.post(&eves, &eve, &f).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("not allowed"));
    // An expired link.
    h.clock.advance(chrono::Duration::seconds(3601));
    let expired = h.get(&path, &session).await;
    assert_eq!(expired.status, 410);
    assert!(expired.body.contains("expired"));

    assert_eq!(h.queued().await, 0);
    assert!(h.emu.patches().is_empty());
    assert!(h.store.list("triage-link/").await.unwrap().is_empty(), "no link was consumed");
}

/// The principal App Service Authentication puts in `X-MS-CLIENT-PRINCIPAL`.
fn principal(oid: &str, upn: &str) -> String {
    use base64::Engine;
    let p = json!({"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": [
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
        {"typ": "preferred_username", "val": upn}, {"typ": "name", "val": "Dana Lee"}]});
    base64::engine::general_purpose::STANDARD.encode(p.to_string())
}

/// An HTTP invocation of `triage-page` as the Functions host sends it.
fn invocation(method: &str, path: &str, headers: Value, body: &str) -> serde_json::Map<String, Value> {
    let req = json!({"Url": format!("https://edge.azurewebsites.net{path}"), "Method": method, "Query": "{}",
        "Headers": headers, "Params": {"rest": path.trim_start_matches("/api/triage/")}, "Body": body});
    let mut data = serde_json::Map::new();
    data.insert("req".into(), req);
    data
}

#[tokio::test]
async fn app_service_headers_sign_in_behind_the_functions_host_only() {
    let h = harness().await;
    let (path, alert) = h.link();
    let p = principal("7d1e0b3a-0000-4000-8000-00000000da7a", "dana@contoso.com");
    // Standalone: the headers are anybody's, so they are ignored: the page sends the person to sign in.
    let open = h.call(Gate::Open, "GET", &path, &[("x-ms-client-principal", &p)], "").await;
    assert_eq!(open.status, 302);
    assert!(open.header("location").starts_with(&h.emu.oidc_issuer()), "{open:?}");

    // The Functions host: no principal yet → App Service's sign-in, then back to the link.
    let out =
        secmon::host::azure::dispatch(&h.app, "triage-page", invocation("GET", &path, json!({}), "")).await.unwrap();
    let res = &out.outputs["res"];
    assert_eq!(res["statusCode"], 302, "{res}");
    let location = res["headers"]["Location"].as_str().unwrap();
    assert!(location.starts_with("/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Ftriage%2F"), "{location}");
    // Signed in by the platform: the page, with its form, as HTML.
    let headers = json!({"X-MS-CLIENT-PRINCIPAL": [p.clone()], "X-MS-CLIENT-PRINCIPAL-ID": ["7d1e0b3a-0000-4000-8000-00000000da7a"]});
    let out = secmon::host::azure::dispatch(&h.app, "triage-page", invocation("GET", &path, headers.clone(), ""))
        .await
        .unwrap();
    let res = &out.outputs["res"];
    assert_eq!(res["statusCode"], 200, "{res}");
    assert!(res["headers"]["Content-Type"].as_str().unwrap().starts_with("text/html"));
    let body = res["body"].as_str().unwrap();
    assert!(body.contains(alert["title"].as_str().unwrap()));
    let at = body.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    let csrf = body[at..].split('"').next().unwrap();
    let form = format!("csrf={csrf}&action=acknowledge");
    let out =
        secmon::host::azure::dispatch(&h.app, "triage-page", invocation("POST", &path, headers, &form)).await.unwrap();
    assert_eq!(out.outputs["res"]["statusCode"], 200, "{}", out.outputs["res"]);
    standalone::drain(&h.app, 5).await;
    let patches = h.emu.patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].2["status"], "inProgress");
}

/// In Azure without App Service Authentication the platform passes client-sent `X-MS-CLIENT-PRINCIPAL`
/// headers through: a forged one must not sign anybody in, so the page is off there (503), and nothing
/// is queued or used up.
#[tokio::test]
async fn without_app_service_authentication_the_page_is_off_in_azure_and_a_forged_principal_does_nothing() {
    let h = harness_with(false).await;
    let (path, _) = h.link();
    let p = principal("7d1e0b3a-0000-4000-8000-00000000da7a", "dana@contoso.com");
    let headers = json!({"X-MS-CLIENT-PRINCIPAL": [p.clone()], "X-MS-CLIENT-PRINCIPAL-ID": ["7d1e0b3a-0000-4000-8000-00000000da7a"]});
    for (method, body) in [("GET", ""), ("POST", "action=acknowledge")] {
        let out =
            secmon::host::azure::dispatch(&h.app, "triage-page", invocation(method, &path, headers.clone(), body))
                .await
                .unwrap();
        let res = &out.outputs["res"];
        assert_eq!(res["statusCode"], 503, "{method}: {res}");
        assert!(!res["body"].as_str().unwrap_or_default().contains("csrf"), "{res}");
    }
    standalone::drain(&h.app, 5).await;
    assert!(h.emu.patches().is_empty());
    assert!(h.store.list("triage-link/").await.unwrap().is_empty(), "the link is not used up");
    // And a value the app does not know stops the load.
    let text = "tenants:\n  - { id: 11111111-2222-3333-4444-555555555555, name: contoso }\n";
    let env = |k: &str| (k == "SECMON_TRIAGE_APP_SERVICE_AUTH").then(|| "yes".to_string());
    let err = secmon::setup::load_str(text, std::path::Path::new("t.yaml"), &env, now()).unwrap_err();
    assert!(err.to_string().contains("SECMON_TRIAGE_APP_SERVICE_AUTH"), "{err}");
}

#[tokio::test]
async fn a_sign_in_with_another_state_a_used_code_or_a_wrong_verifier_is_refused() {
    let h = harness().await;
    let (path, _) = h.link();
    let start = h.get(&path, "").await;
    let login = start.cookie("secmon_triage_login");
    let q: BTreeMap<String, String> =
        url::Url::parse(start.header("location")).unwrap().query_pairs().into_owned().collect();
    let back = h.browser.post(format!("{}/authorize", h.emu.oidc_issuer())).form(&q).send().await.unwrap();
    let back = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let code = back.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    // Another state than the one in the sign-in cookie (a login CSRF): refused, the code not redeemed.
    let forged = format!("/api/triage/signin?code={code}&state=not-the-state");
    assert_eq!(h.get(&forged, &login).await.status, 400);
    // No sign-in cookie at all.
    let real = format!("/api/triage/signin?{}", back.query().unwrap());
    assert_eq!(h.get(&real, "").await.status, 400);
    // The real callback works once; the same code again is refused by the provider.
    let ok = h.get(&real, &login).await;
    assert_eq!(ok.status, 302, "{ok:?}");
    let again = h.get(&real, &login).await;
    assert_eq!(again.status, 403, "{again:?}");
    assert!(!again.headers.contains_key("set-cookie"), "no session for a refused sign-in");

    // The stand-in itself refuses a verifier that does not match the challenge.
    let start = h.get(&path, "").await;
    let q: BTreeMap<String, String> =
        url::Url::parse(start.header("location")).unwrap().query_pairs().into_owned().collect();
    let back = h.browser.post(format!("{}/authorize", h.emu.oidc_issuer())).form(&q).send().await.unwrap();
    let back = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let code = back.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let token = h
        .browser
        .post(format!("{}/token", h.emu.oidc_issuer()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &q["client_id"]),
            ("redirect_uri", &q["redirect_uri"]),
            ("code_verifier", "a-verifier-of-somebody-else-0123456789abcdef"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 400);
}
