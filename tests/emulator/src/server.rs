//! The HTTP(S) server: the route table, the outer layer that records requests and injects faults,
//! and an accept loop that can close a connection without answering (for `FaultKind::Drop`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::faults::FaultKind;
use crate::state::{AppState, Recorded, graph_error, json_response};
use crate::{alerts, botconnector, directory, entra, mail, oidc, sinks, subscriptions};

/// Request bodies above this size are refused before routing.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Every route the emulator serves.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(entra::token))
        .route("/msi/token", get(entra::managed_identity))
        .route("/v1.0/security/alerts_v2", get(alerts::list))
        .route("/v1.0/security/alerts_v2/{id}", get(alerts::get).patch(alerts::patch))
        .route("/v1.0/security/alerts_v2/{id}/comments", post(alerts::add_comments))
        .route("/v1.0/users/{sender}/sendMail", post(mail::send_mail))
        .route("/v1.0/users/{user}/checkMemberGroups", post(directory::check_member_groups))
        .route("/v1.0/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route(
            "/v1.0/subscriptions/{id}",
            get(subscriptions::get).patch(subscriptions::renew).delete(subscriptions::delete),
        )
        .route("/v1.0/subscriptions/{id}/reauthorize", post(subscriptions::reauthorize))
        .route("/workflows/{name}/triggers/manual/paths/invoke", post(sinks::teams))
        .route("/sink/{name}", post(sinks::webhook))
        .route("/botframework/v1/.well-known/openidconfiguration", get(botconnector::openid_configuration))
        .route("/botframework/v1/.well-known/keys", get(botconnector::keys))
        .route("/botconnector/v3/conversations/{conversation}/activities", post(botconnector::post_activity))
        .route(
            "/botconnector/v3/conversations/{conversation}/activities/{activity}",
            axum::routing::put(botconnector::put_activity),
        )
        .route("/oidc/.well-known/openid-configuration", get(oidc::discovery))
        .route("/oidc/keys", get(oidc::keys))
        .route("/oidc/authorize", get(oidc::authorize_page).post(oidc::authorize))
        .route("/oidc/token", post(oidc::token))
        .fallback(|req: Request<Body>| async move {
            if req.uri().path().starts_with("/v1.0/") {
                graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("Resource not found for the segment '{}'.", req.uri().path()),
                )
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        })
        .with_state(state)
}

/// Redacts secrets before a request is stored: bearer tokens, the MI header, `sig=`, client secrets.
fn redact(
    path: &str,
    query: Option<&str>,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> (Option<String>, BTreeMap<String, String>, Vec<u8>) {
    let query = query.map(|q| {
        q.split('&')
            .map(|pair| if pair.starts_with("sig=") { "sig=REDACTED" } else { pair })
            .collect::<Vec<_>>()
            .join("&")
    });
    let headers = headers
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "authorization" => {
                    let v = v.to_str().unwrap_or("");
                    match v.split_once(' ') {
                        Some((scheme, _)) => format!("{scheme} REDACTED"),
                        None => "REDACTED".to_string(),
                    }
                }
                "x-identity-header" => "REDACTED".to_string(),
                _ => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            };
            (k.as_str().to_string(), value)
        })
        .collect();
    let body = if path.ends_with("/oauth2/v2.0/token") {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .map(|(k, v)| {
                let v =
                    if k == "client_secret" || k == "client_assertion" { "REDACTED".into() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish().into_bytes()
    } else {
        body.to_vec()
    };
    (query, headers, body)
}

/// The response an injected status or garbage fault produces.
fn fault_response(kind: &FaultKind) -> Option<axum::response::Response> {
    match kind {
        FaultKind::Status { status, retry_after, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = match body {
                Some(b) => json_response(status, b),
                None => {
                    let code = match status.as_u16() {
                        429 => "TooManyRequests",
                        503 => "ServiceUnavailable",
                        504 => "GatewayTimeout",
                        401 => "InvalidAuthenticationToken",
                        403 => "Forbidden",
                        s if s >= 500 => "InternalServerError",
                        _ => "BadRequest",
                    };
                    graph_error(status, code, "Injected fault.")
                }
            };
            if let Some(secs) = retry_after {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Some(resp)
        }
        FaultKind::Garbage => {
            let mut resp = json_response(StatusCode::OK, &json!(null));
            *resp.body_mut() = Body::from("<html><body>upstream error: \u{0}{\"value\": [</body></html>");
            Some(resp)
        }
        FaultKind::Delay(_) | FaultKind::Drop | FaultKind::Hang => None,
    }
}

/// Records the request, applies any fault, then routes it. `Err` makes hyper drop the connection.
async fn handle(state: AppState, router: Router, req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    let at = tokio::time::Instant::now();
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response()),
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let path_and_query = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let (rec_query, rec_headers, rec_body) = redact(&path, query.as_deref(), &parts.headers, &bytes);
    let mut recorded = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: rec_query,
        headers: rec_headers,
        body: rec_body,
        status: None,
        faulted: false,
        at,
    };
    let fault = state.faults.take(parts.method.as_str(), &path_and_query);
    recorded.faulted = fault.is_some();
    let injected = match &fault {
        Some(FaultKind::Drop) => {
            state.lock().requests.push(recorded);
            return Err(std::io::Error::other("injected fault: drop the connection"));
        }
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(*d).await;
            None
        }
        Some(FaultKind::Hang) => {
            state.lock().requests.push(recorded);
            std::future::pending::<()>().await;
            unreachable!("a hung request is never answered")
        }
        Some(kind) => fault_response(kind),
        None => None,
    };
    let client_request_id = parts.headers.get("client-request-id").cloned();
    let mut resp = match injected {
        Some(r) => r,
        None => {
            let req = Request::from_parts(parts, Body::from(bytes));
            match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    };
    if path.starts_with("/v1.0/") {
        let skew = state.lock().date_skew;
        if let Some(skew) = skew {
            let date = (state.now() + skew).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            resp.headers_mut()
                .insert(header::DATE, HeaderValue::from_str(&date).expect("an HTTP date is a valid header"));
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let h = resp.headers_mut();
        h.insert("request-id", HeaderValue::from_str(&request_id).expect("uuid is a valid header"));
        h.insert(
            "client-request-id",
            client_request_id.unwrap_or_else(|| HeaderValue::from_str(&request_id).expect("uuid is a valid header")),
        );
    }
    recorded.status = Some(resp.status().as_u16());
    state.lock().requests.push(recorded);
    Ok(resp)
}

/// Serves connections until the returned task is aborted; aborting it also ends open connections.
pub(crate) fn spawn(listener: TcpListener, tls: Option<TlsAcceptor>, state: AppState) -> tokio::task::JoinHandle<()> {
    let router = router(state.clone());
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            let router = router.clone();
            let tls = tls.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(state.clone(), router.clone(), req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // Connection errors (including injected drops) only end that connection.
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    })
}

/// A test CA and a leaf certificate for 127.0.0.1/localhost: the acceptor and the CA's PEM.
pub(crate) fn tls_acceptor() -> anyhow::Result<(TlsAcceptor, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use tokio_rustls::rustls;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "secmon-emulator test CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf_cert.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), ca_cert.pem()))
}
