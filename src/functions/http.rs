//! The one HTTP router: `/api/{function}` for every HTTP function, served as it is by `secmon run`,
//! by Lambda's Function URL, by the Functions host (each invocation's request is replayed through it)
//! and by the tests.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use super::{Function, Gate};
use crate::app::App;
use crate::intake::http::{HttpRequest, HttpResponse};

/// The HTTP functions at `/api/{function}`. The body limit here is a backstop above
/// `webhook.max_body_bytes`, which the functions themselves answer with 413 and a reason.
pub fn router(app: App) -> Router {
    router_with(app, Gate::Open)
}

/// The same router for a host that checks callers first: the Functions host replays its invocations
/// through `router_with(app, Gate::FunctionKey)`.
pub fn router_with(app: App, gate: Gate) -> Router {
    let backstop = app.config.webhook.max_body_bytes.saturating_add(1);
    Router::new()
        .route("/api/{function}", axum::routing::any(serve))
        .route("/api/triage/{*rest}", axum::routing::any(serve_triage_page))
        .layer(axum::extract::DefaultBodyLimit::max(backstop))
        .with_state((app, gate))
}

async fn serve(
    State((app, gate)): State<(App, Gate)>,
    Path(function): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = match Function::from_name(&function).filter(|f| f.trigger() == super::Trigger::Http) {
        Some(f) => super::http_behind(&app, f.name(), request_from_parts(&method, &uri, &headers, &body), gate).await,
        None => HttpResponse::text(404, "no such function"),
    };
    into_response(resp)
}

/// `/api/triage/{rest}`: the function `triage-page` ([`super::triage_page`]).
async fn serve_triage_page(
    State((app, gate)): State<(App, Gate)>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    into_response(super::triage_page(&app, &rest, request_from_parts(&method, &uri, &headers, &body), gate).await)
}

/// Converts an HTTP request's parts into an [`HttpRequest`]: the query decoded as Graph encodes it,
/// header names lower-cased, repeated headers joined with `, ` (RFC 9110's list form).
pub fn request_from_parts(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> HttpRequest {
    let query = uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default();
    let mut map = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_ascii_lowercase())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value)
            })
            .or_insert(value);
    }
    HttpRequest { method: method.as_str().to_ascii_uppercase(), query, headers: map, body: body.to_vec() }
}

/// Converts an [`HttpResponse`] into an axum response.
pub fn into_response(resp: HttpResponse) -> Response {
    let mut out = Response::new(axum::body::Body::from(resp.body));
    *out.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(resp.content_type));
    for (name, value) in resp.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            out.headers_mut().append(n, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axum_requests_decode_the_query_like_graph_encodes_it() {
        let uri: axum::http::Uri =
            "/api/graph-webhook?validationToken=Validation%3a+Testing+%2B%26%3D&code=k".parse().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("Content-Type", "text/plain; charset=utf-8".parse().unwrap());
        let req = request_from_parts(&axum::http::Method::POST, &uri, &headers, b"");
        assert_eq!(req.query_param("validationToken"), Some("Validation: Testing +&="));
        assert_eq!(req.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(req.method, "POST");
    }
}
