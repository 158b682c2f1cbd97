//! An OpenID Connect provider stand-in for the triage page's standalone sign-in: discovery, an
//! authorization endpoint with a one-button sign-in page for the configured test user, a token endpoint
//! that checks the PKCE verifier (S256) and answers an RS256 `id_token`, and the JWKS.
//!
//! The issuer is `{base}/oidc`. Tokens are signed with the Bot Connector stand-in's key
//! ([`crate::botconnector::key`]): one RSA key serves both.

use std::collections::HashMap;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::state::{AppState, json_response, random_string};

/// The signed-in person the stand-in vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcUser {
    /// Entra object id (`oid`).
    pub oid: String,
    /// `preferred_username`.
    pub upn: String,
    /// Display name (`name`).
    pub name: String,
}

impl Default for OidcUser {
    fn default() -> Self {
        OidcUser {
            oid: "7d1e0b3a-0000-4000-8000-00000000da7a".into(),
            upn: "dana@contoso.com".into(),
            name: "Dana Lee".into(),
        }
    }
}

/// One code handed out by the authorization endpoint, not yet redeemed.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: OidcUser,
}

/// The issuer of the stand-in's tokens.
pub(crate) fn issuer(state: &AppState) -> String {
    format!("{}/oidc", state.base_url)
}

/// `GET /oidc/.well-known/openid-configuration`.
pub(crate) async fn discovery(State(state): State<AppState>) -> Response {
    let iss = issuer(&state);
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}/authorize"),
            "token_endpoint": format!("{iss}/token"),
            "jwks_uri": format!("{iss}/keys"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }),
    )
}

/// `GET /oidc/keys`.
pub(crate) async fn keys(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!({"keys": [crate::botconnector::key(&state.bot_key).jwk()]}))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// `GET /oidc/authorize`: checks the request and shows a sign-in page with one button for the test user.
pub(crate) async fn authorize_page(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(why) = check_authorize(&q) {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let user = state.lock().oidc_user.clone().unwrap_or_default();
    let hidden: String = q
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(k), escape(v)))
        .collect();
    Html(format!(
        "<!doctype html><html><head><title>Sign in</title></head><body><h1>Sign in to the test provider</h1>\
         <form method=\"post\" action=\"authorize\">{hidden}<button id=\"signin\" type=\"submit\">Sign in as {}</button></form>\
         </body></html>",
        escape(&user.upn)
    ))
    .into_response()
}

fn check_authorize(q: &HashMap<String, String>) -> Result<(), String> {
    for field in ["client_id", "redirect_uri", "state", "code_challenge"] {
        if q.get(field).is_none_or(|v| v.is_empty()) {
            return Err(format!("{field} is required"));
        }
    }
    if q.get("response_type").map(String::as_str) != Some("code") {
        return Err("response_type must be code".into());
    }
    if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return Err("code_challenge_method must be S256".into());
    }
    Ok(())
}

/// `POST /oidc/authorize`: the test user signs in; redirects to `redirect_uri` with a code and the state.
pub(crate) async fn authorize(State(state): State<AppState>, Form(q): Form<HashMap<String, String>>) -> Response {
    if let Err(why) = check_authorize(&q) {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let code = random_string(32);
    let mut inner = state.lock();
    let user = inner.oidc_user.clone().unwrap_or_default();
    inner.oidc_grants.insert(
        code.clone(),
        Grant {
            client_id: q["client_id"].clone(),
            redirect_uri: q["redirect_uri"].clone(),
            challenge: q["code_challenge"].clone(),
            nonce: q.get("nonce").cloned(),
            user,
        },
    );
    drop(inner);
    let mut target = match url::Url::parse(&q["redirect_uri"]) {
        Ok(u) => u,
        Err(_) => return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL").into_response(),
    };
    target.query_pairs_mut().append_pair("code", &code).append_pair("state", &q["state"]);
    (StatusCode::FOUND, [(axum::http::header::LOCATION, target.to_string())]).into_response()
}

fn token_error(error: &str, description: &str) -> Response {
    json_response(StatusCode::BAD_REQUEST, &json!({"error": error, "error_description": description}))
}

/// `POST /oidc/token`: redeems a code once, if the PKCE verifier, client and redirect URI match.
pub(crate) async fn token(State(state): State<AppState>, Form(f): Form<HashMap<String, String>>) -> Response {
    if f.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return token_error("unsupported_grant_type", "only authorization_code");
    }
    let Some(grant) = f.get("code").and_then(|c| state.lock().oidc_grants.remove(c)) else {
        return token_error("invalid_grant", "unknown or used code");
    };
    if f.get("client_id") != Some(&grant.client_id) || f.get("redirect_uri") != Some(&grant.redirect_uri) {
        return token_error("invalid_grant", "client_id or redirect_uri differ from the authorization request");
    }
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    if URL_SAFE_NO_PAD.encode(digest.as_ref()) != grant.challenge {
        return token_error("invalid_grant", "the PKCE code_verifier does not match the code_challenge");
    }
    let now = state.now().timestamp();
    let mut claims = json!({
        "iss": issuer(&state),
        "aud": grant.client_id,
        "sub": format!("sub-{}", grant.user.oid),
        "oid": grant.user.oid,
        "preferred_username": grant.user.upn,
        "name": grant.user.name,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    if let Some(nonce) = grant.nonce {
        claims["nonce"] = Value::String(nonce);
    }
    let key = crate::botconnector::key(&state.bot_key);
    let id_token = key.sign(&key.kid, &claims);
    json_response(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": 3600, "id_token": id_token, "access_token": random_string(24)}),
    )
}
