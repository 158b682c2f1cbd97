//! Entra ID stand-ins: the v2 client-credentials token endpoint and the App Service managed-identity endpoint.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::Utc;
use serde_json::{Value, json};

use crate::state::{AppState, json_response};

/// Lifetime of client-credentials tokens, as Entra reports it.
const TOKEN_LIFETIME: i64 = 3599;
/// Lifetime of managed-identity tokens.
const MI_TOKEN_LIFETIME: i64 = 3600;
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An Entra (AADSTS) error body: `{"error","error_description","error_codes",…}`.
fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    entra_error_with(status, error, code, description, None)
}

/// [`entra_error`] with a `suberror` (e.g. `consent_required`).
fn entra_error_with(status: StatusCode, error: &str, code: u32, description: &str, suberror: Option<&str>) -> Response {
    let trace = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    let mut body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {}", now.format("%Y-%m-%d %H:%M:%SZ")),
        "error_codes": [code],
        "timestamp": now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        "trace_id": trace,
        "correlation_id": trace,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    if let Some(sub) = suberror {
        body["suberror"] = json!(sub);
    }
    json_response(status, &body)
}

/// `POST /{tenant}/oauth2/v2.0/token` with `grant_type=client_credentials`.
pub(crate) async fn token(State(state): State<AppState>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let missing = |name: &str| {
        entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
    };
    let Some(grant_type) = form.get("grant_type") else {
        return missing("grant_type");
    };
    if grant_type != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let Some(client_id) = form.get("client_id") else {
        return missing("client_id");
    };
    let Some(scope) = form.get("scope") else {
        return missing("scope");
    };
    if !scope.ends_with("/.default") || scope.contains(' ') {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    }
    let secret = state.lock().clients.get(&(tenant.clone(), client_id.clone())).cloned();
    let Some(secret) = secret else {
        // Entra answers an unknown application id with 400 unauthorized_client, not 401.
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        );
    };
    let accepted = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(given), _) => {
            if *given != secret {
                return entra_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                );
            }
            true
        }
        (None, Some(assertion)) => {
            if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
                return entra_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    50027,
                    "The client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
                );
            }
            looks_like_jwt(assertion)
        }
        (None, None) => {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    };
    if !accepted {
        return entra_error(StatusCode::UNAUTHORIZED, "invalid_client", 50027, "JWT token is invalid or is malformed.");
    }
    if state.lock().consent_missing.contains(&(tenant.clone(), client_id.clone())) {
        // As Entra answers when the app has no admin consent in the tenant (MicrosoftDocs/azure-docs#39189).
        let description = format!(
            "The user or administrator has not consented to use the application with ID '{client_id}' named 'secmon'. Send an interactive authorization request for this user and resource."
        );
        return entra_error_with(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            65001,
            &description,
            Some("consent_required"),
        );
    }
    let audience = scope.trim_end_matches("/.default");
    let roles = state.client_roles(&tenant, client_id);
    let (access_token, _) = state.issue_token(&tenant, client_id, audience, roles, TOKEN_LIFETIME);
    json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": access_token,
        }),
    )
}

/// Three base64url segments whose first two decode to JSON objects.
fn looks_like_jwt(assertion: &str) -> bool {
    let parts: Vec<&str> = assertion.split('.').collect();
    parts.len() == 3
        && !parts[2].is_empty()
        && parts[..2].iter().all(|p| {
            URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v.is_object())
        })
}

/// `GET /msi/token?api-version=2019-08-01&resource=…` with `x-identity-header` (App Service protocol).
pub(crate) async fn managed_identity(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let error = |status: StatusCode, message: &str| {
        json_response(
            status,
            &json!({"statusCode": status.as_u16(), "message": message, "correlationId": uuid::Uuid::new_v4().to_string()}),
        )
    };
    match headers.get("x-identity-header").and_then(|v| v.to_str().ok()) {
        None => {
            return error(StatusCode::BAD_REQUEST, "The request is missing the X-IDENTITY-HEADER header.");
        }
        Some(h) if h != state.identity_header => {
            return error(StatusCode::UNAUTHORIZED, "The X-IDENTITY-HEADER value is invalid.");
        }
        Some(_) => {}
    }
    if params.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return error(
            StatusCode::BAD_REQUEST,
            "The api-version parameter is missing or not supported; use 2019-08-01.",
        );
    }
    let Some(resource) = params.get("resource").filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "The resource parameter is required.");
    };
    // A user-assigned identity may be named by client_id, principal_id or mi_res_id; any is accepted.
    let client_id = params.get("client_id").cloned().unwrap_or_else(|| state.mi_client_id.clone());
    let roles = state
        .lock()
        .mi_roles
        .clone()
        .unwrap_or_else(|| crate::state::DEFAULT_ROLES.iter().map(|r| r.to_string()).collect());
    let (access_token, expires_at) =
        state.issue_token(&state.default_tenant, &client_id, resource.trim_end_matches('/'), roles, MI_TOKEN_LIFETIME);
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_on": expires_at.timestamp().to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }),
    )
}
