//! The Azure Functions custom-handler protocol.
//!
//! The host starts `secmon serve`, polls `GET /` until anything answers, then for each invocation
//! `POST /<FunctionName>` with `{"Data": {...}, "Metadata": {...}}` and reads back
//! `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}`. Any non-2xx marks the invocation failed
//! (a queue message is retried, then poisoned) and the host discards the `Logs` of such a response,
//! so failures are also logged to stdout.
//!
//! The host's quirks are tolerated here, once: values JSON-encoded twice (`"Id": "\"4e77…\""`),
//! numbers as strings (`"DequeueCount": "1"`), `ScheduleStatus: null`, `IsPastDue` as a string,
//! `Query` as a JSON-encoded string, and queue text that is JSON, a JSON string, or base64.

use std::collections::BTreeMap;
use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::app::App;
use crate::functions::{self, Function, Timer, Trigger};
use crate::intake::http::{HttpRequest, HttpResponse};
use crate::store::{ALERTS_QUEUE, poison_name};

/// Trigger metadata with the host's encodings undone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// Queue: how many times the message was dequeued (1 on the first try).
    pub dequeue_count: Option<u32>,
    /// Queue: message id.
    pub id: Option<String>,
    /// `sys.UtcNow`.
    pub utc_now: Option<String>,
    /// Everything, as sent.
    pub raw: Map<String, Value>,
}

/// What a function returns to the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Output bindings by name (`res` for HTTP).
    pub outputs: Map<String, Value>,
    /// Lines for the invocation log (Application Insights), all at Information level.
    pub logs: Vec<String>,
    /// `$return` output.
    pub return_value: Value,
}

impl Outcome {
    fn to_json(&self) -> Value {
        json!({"Outputs": self.outputs, "Logs": self.logs, "ReturnValue": self.return_value})
    }
}

/// Timer trigger data (`Data.timer`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimerInfo {
    /// The run is late (the host was down at its time).
    pub is_past_due: bool,
    /// `ScheduleStatus.Last`, when the host tracks it (null when monitoring is off).
    pub last: Option<String>,
    /// `ScheduleStatus.Next`.
    pub next: Option<String>,
}

impl TimerInfo {
    /// The host-neutral timer.
    pub fn timer(&self) -> Timer {
        Timer { past_due: self.is_past_due }
    }
}

/// Why an invocation body was refused (answered 400).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvocationError {
    /// Not JSON, or not an object with `Data`.
    #[error("invocation body: {0}")]
    Body(String),
    /// `Data` lacks the binding the function needs.
    #[error("invocation Data has no {0:?} binding")]
    MissingBinding(&'static str),
    /// The binding is there but malformed.
    #[error("invocation Data.{binding}: {reason}")]
    BadBinding {
        /// Binding name.
        binding: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Strips one layer of JSON-string encoding if the host added one (`"\"abc\""` → `abc`).
pub fn unquote(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => Some(inner),
            _ => Some(s.clone()),
        },
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Reads a number that may arrive as a number or a string (possibly JSON-quoted).
pub fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        other => unquote(other)?.trim().parse().ok(),
    }
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        other => unquote(other)?.trim().to_ascii_lowercase().parse().ok(),
    }
}

/// Splits a raw invocation body into `Data` and normalised [`Metadata`].
pub fn parse_envelope(body: &[u8]) -> Result<(Map<String, Value>, Metadata), InvocationError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| InvocationError::Body(format!("not JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(InvocationError::Body("not a JSON object".into()));
    };
    let data = match top.remove("Data") {
        Some(Value::Object(d)) => d,
        Some(Value::Null) | None => return Err(InvocationError::Body("no Data object".into())),
        Some(_) => return Err(InvocationError::Body("Data is not an object".into())),
    };
    let raw = match top.remove("Metadata") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let metadata = Metadata {
        dequeue_count: raw.get("DequeueCount").and_then(number).map(|n| n as u32),
        id: raw.get("Id").and_then(unquote),
        utc_now: raw.get("sys").and_then(|s| s.get("UtcNow")).and_then(unquote),
        raw,
    };
    Ok((data, metadata))
}

/// Reads `Data.<binding>` of a timer trigger.
pub fn timer_info(data: &Map<String, Value>, binding: &'static str) -> Result<TimerInfo, InvocationError> {
    let v = data.get(binding).ok_or(InvocationError::MissingBinding(binding))?;
    let v = match v {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| InvocationError::BadBinding { binding, reason: format!("not JSON: {e}") })?,
        other => other.clone(),
    };
    if !v.is_object() {
        return Err(InvocationError::BadBinding { binding, reason: "not an object".into() });
    }
    let status = v.get("ScheduleStatus").filter(|s| s.is_object());
    Ok(TimerInfo {
        is_past_due: v.get("IsPastDue").and_then(boolean).unwrap_or(false),
        last: status.and_then(|s| s.get("Last")).and_then(unquote),
        next: status.and_then(|s| s.get("Next")).and_then(unquote),
    })
}

/// Reads `Data.<binding>` of a queue trigger as the message bytes, with the host's encodings undone.
pub fn queue_item(data: &Map<String, Value>, binding: &'static str) -> Result<Vec<u8>, InvocationError> {
    match data.get(binding) {
        None | Some(Value::Null) => Err(InvocationError::MissingBinding(binding)),
        // The host passes JSON messages either as text or already parsed.
        Some(Value::String(s)) => Ok(queue_text(s)),
        Some(other) => Ok(other.to_string().into_bytes()),
    }
}

/// Queue text as the host hands it over: JSON, JSON encoded once more as a JSON string, or still in the
/// queue's base64 (when the host does not decode it); anything else is passed on as it is, to be poisoned.
fn queue_text(text: &str) -> Vec<u8> {
    use base64::Engine;
    let json = |t: &str| match serde_json::from_str::<Value>(t.trim()) {
        Ok(Value::String(inner)) => Some(inner.into_bytes()),
        Ok(_) => Some(t.as_bytes().to_vec()),
        Err(_) => None,
    };
    json(text)
        .or_else(|| {
            let decoded = base64::engine::general_purpose::STANDARD.decode(text.trim()).ok()?;
            json(std::str::from_utf8(&decoded).ok()?)
        })
        .unwrap_or_else(|| text.as_bytes().to_vec())
}

/// Reads `Data.<binding>` of an HTTP trigger (default mode, no forwarding) into an [`HttpRequest`].
pub fn http_request(data: &Map<String, Value>, binding: &'static str) -> Result<HttpRequest, InvocationError> {
    let req = data.get(binding).ok_or(InvocationError::MissingBinding(binding))?;
    let bad = |reason: &str| InvocationError::BadBinding { binding, reason: reason.to_string() };
    let req = req.as_object().ok_or_else(|| bad("not an object"))?;
    let method = req.get("Method").and_then(unquote).unwrap_or_else(|| "POST".into()).to_ascii_uppercase();
    let mut query = Vec::new();
    // `Query` is a map, or that map JSON-encoded as a string ("{}").
    let q = match req.get("Query") {
        Some(Value::String(s)) => serde_json::from_str(s).map_err(|_| bad("Query is not a JSON object"))?,
        Some(v) => v.clone(),
        None => Value::Null,
    };
    if let Value::Object(map) = q {
        for (k, v) in map {
            match v {
                Value::Array(items) => query.extend(items.iter().filter_map(unquote).map(|s| (k.clone(), s))),
                other => query.extend(unquote(&other).map(|s| (k.clone(), s))),
            }
        }
    }
    // When the map is missing, fall back to the URL's own query string.
    if query.is_empty()
        && let Some(u) = req.get("Url").and_then(unquote).and_then(|u| url::Url::parse(&u).ok())
    {
        query.extend(u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())));
    }
    let mut headers = BTreeMap::new();
    if let Some(Value::Object(h)) = req.get("Headers") {
        for (k, v) in h {
            let value = match v {
                Value::Array(items) => items.iter().filter_map(unquote).collect::<Vec<_>>().join(", "),
                other => unquote(other).unwrap_or_default(),
            };
            headers.insert(k.to_ascii_lowercase(), value);
        }
    }
    let body = match req.get("Body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
    };
    Ok(HttpRequest { method, query, headers, body })
}

/// The `Outputs.res` value the host turns into the HTTP response.
pub fn http_output(resp: &HttpResponse) -> Value {
    let mut headers = Map::new();
    headers.insert("Content-Type".into(), json!(resp.content_type));
    for (name, value) in &resp.headers {
        headers.insert((*name).into(), json!(value));
    }
    json!({
        "statusCode": resp.status,
        "body": resp.body,
        "headers": headers,
    })
}

/// The handler's router: `GET /` for readiness, `POST /<FunctionName>` for invocations.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(|| async { "secmon ready" }))
        .route("/{function}", post(invoke))
        .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024))
        .with_state(app)
}

async fn invoke(State(app): State<App>, Path(function): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let invocation_id = headers.get("x-azure-functions-invocationid").and_then(|v| v.to_str().ok()).map(str::to_string);
    let span = tracing::info_span!("invocation", function = %function, invocation_id = invocation_id.as_deref().unwrap_or("-"));
    // The span is attached to the future (not entered across awaits) so every line logged while this
    // invocation runs carries its id; what it logs is also collected for the answer's `Logs`.
    let (response, captured) =
        crate::logging::capture(invoke_in_span(app, function, invocation_id, body).instrument(span)).await;
    match response {
        Ok(mut outcome) => {
            outcome.logs.splice(0..0, captured);
            (StatusCode::OK, axum::Json(outcome.to_json())).into_response()
        }
        Err(failed) => failed,
    }
}

async fn invoke_in_span(
    app: App,
    function: String,
    invocation_id: Option<String>,
    body: Bytes,
) -> Result<Outcome, Response> {
    let (data, _metadata) = match parse_envelope(&body) {
        Ok(parts) => parts,
        Err(e) => return Err(failure(StatusCode::BAD_REQUEST, &function, &e.to_string())),
    };
    let _ = invocation_id;
    match dispatch(&app, &function, data).await {
        Ok(outcome) => Ok(outcome),
        Err(Failure::BadRequest(message)) => Err(failure(StatusCode::BAD_REQUEST, &function, &message)),
        Err(Failure::NotFound) => Err(failure(StatusCode::NOT_FOUND, &function, "no such function")),
        Err(Failure::Failed(message)) => Err(failure(StatusCode::INTERNAL_SERVER_ERROR, &function, &message)),
    }
}

/// Serves [`router`] on `127.0.0.1:port` (the host's `FUNCTIONS_CUSTOMHANDLER_PORT`) until `shutdown`
/// resolves, then finishes the invocations in flight and returns.
pub async fn serve(app: App, port: u16, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port} (FUNCTIONS_CUSTOMHANDLER_PORT): {e}"))?;
    tracing::info!(port, "custom handler listening");
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await?;
    tracing::info!("custom handler stopped");
    Ok(())
}

/// How an invocation failed.
#[derive(Debug)]
pub enum Failure {
    /// The invocation itself was malformed (400).
    BadRequest(String),
    /// No such function (404).
    NotFound,
    /// The function failed; the host should retry (500).
    Failed(String),
}

impl From<InvocationError> for Failure {
    fn from(e: InvocationError) -> Self {
        Failure::BadRequest(e.to_string())
    }
}

fn failure(status: StatusCode, function: &str, message: &str) -> Response {
    let message = crate::redact::redact(message);
    // The host drops the Logs of a non-2xx answer: stdout is the only place this is seen.
    tracing::error!(function, status = status.as_u16(), "invocation failed: {message}");
    (status, axum::Json(json!({"Outputs": {}, "Logs": [format!("{function} failed: {message}")], "ReturnValue": null, "error": message})))
        .into_response()
}

/// Runs one function for an invocation; the core of [`router`], also used by tests.
///
/// An HTTP invocation's request is replayed through [`functions::router`], so the Functions host
/// serves exactly what `secmon run` and Lambda serve. A queue message that can never be processed is
/// moved to the poison queue here and the invocation succeeds, so the host neither retries it five
/// times nor drops it.
pub async fn dispatch(app: &App, function: &str, data: Map<String, Value>) -> Result<Outcome, Failure> {
    let now = app.clock.now();
    let function = Function::from_name(function).ok_or(Failure::NotFound)?;
    let outcome = match function.trigger() {
        Trigger::Timer => {
            let timer = timer_info(&data, "timer")?.timer();
            match function {
                Function::PollAlerts => functions::poll_alerts(app, timer, now).await,
                Function::ReconcileAlerts => functions::reconcile_alerts(app, timer, now).await,
                Function::Sweep => functions::sweep(app, timer, now).await,
                _ => functions::graph_subscriptions(app, timer, now).await,
            }
        }
        Trigger::Queue => {
            let body = queue_item(&data, "message")?;
            let poison = poison_name(function.queue().unwrap_or(ALERTS_QUEUE));
            match function.on_message(app, &body, now).await {
                functions::Outcome::Poison(reason) => {
                    app.queue
                        .send(&poison, &body)
                        .await
                        .map_err(|e| Failure::Failed(format!("could not poison an unreadable message: {e}")))?;
                    tracing::error!("message moved to {poison}: {reason}");
                    functions::Outcome::done(format!("unreadable message moved to the poison queue: {reason}"))
                }
                other => other,
            }
        }
        Trigger::Http => {
            let req = http_request(&data, "req")?;
            let resp = replay(app, &route_path(&data, function), req).await;
            let mut outputs = Map::new();
            outputs.insert("res".into(), http_output(&resp));
            return Ok(Outcome { outputs, ..Default::default() });
        }
    };
    match outcome {
        functions::Outcome::Done { logs, value } => Ok(Outcome { logs, return_value: value, ..Default::default() }),
        functions::Outcome::Retry(reason) | functions::Outcome::Poison(reason) => Err(Failure::Failed(reason)),
    }
}

/// The path an HTTP invocation is replayed at: `/api/{function}`, or for `triage-page` (route
/// `triage/{*rest}`) the `/api/triage/…` path of the invocation's `Url`.
fn route_path(data: &Map<String, Value>, function: Function) -> String {
    if function == Function::TriagePage
        && let Some(url) = data.get("req").and_then(|r| r.get("Url")).and_then(unquote)
        && let Ok(url) = url::Url::parse(&url)
        && url.path().starts_with("/api/triage/")
    {
        return url.path().to_string();
    }
    format!("/api/{}", function.name())
}

/// Sends one HTTP invocation's request through [`functions::router`] and reads back its answer.
async fn replay(app: &App, path: &str, req: HttpRequest) -> HttpResponse {
    use tower::ServiceExt;
    let mut uri = path.to_string();
    if !req.query.is_empty() {
        uri.push('?');
        uri.push_str(&url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&req.query).finish());
    }
    let mut builder = axum::http::Request::builder().method(req.method.as_str()).uri(uri);
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = match builder.body(axum::body::Body::from(req.body)) {
        Ok(r) => r,
        Err(e) => return HttpResponse::text(400, format!("the invocation's request is not valid HTTP: {e}")),
    };
    // The host invoked us, so it has checked the function key of every function whose function.json asks for one.
    let response = match functions::router_with(app.clone(), functions::Gate::FunctionKey).oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let content_type = match response.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some(t) if t.starts_with("application/json") => "application/json",
        Some(t) if t.starts_with("text/html") => "text/html; charset=utf-8",
        Some("text/plain") => "text/plain",
        _ => "text/plain; charset=utf-8",
    };
    let headers: Vec<(&'static str, String)> = crate::intake::http::RESPONSE_HEADERS
        .into_iter()
        .filter_map(|name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(|v| (name, v.to_string())))
        .collect();
    let body = match axum::body::to_bytes(response.into_body(), usize::MAX).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return HttpResponse::text(500, format!("reading the function's answer: {e}")),
    };
    HttpResponse { status, content_type, body, headers }
}

/// Deserialize helper so callers can read `Data` into their own types.
pub fn data_as<T: for<'de> Deserialize<'de>>(
    data: &Map<String, Value>,
    binding: &'static str,
) -> Result<T, InvocationError> {
    let v = data.get(binding).ok_or(InvocationError::MissingBinding(binding))?;
    serde_json::from_value(v.clone()).map_err(|e| InvocationError::BadBinding { binding, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/samples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn queue_text_is_plain_double_encoded_or_base64() {
        use base64::Engine;
        let m = crate::intake::Message::Poll { tenant: "contoso".into(), reason: "doorbell".into() };
        let plain = serde_json::to_string(&m).unwrap();
        let double = serde_json::to_string(&plain).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&plain);
        for text in [plain, double, b64] {
            let data = Map::from_iter([("message".to_string(), Value::String(text))]);
            assert_eq!(crate::intake::Message::parse(&queue_item(&data, "message").unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn documented_queue_request_parses() {
        let (data, meta) = parse_envelope(&sample("functions-queue-request.json")).unwrap();
        assert_eq!(meta.dequeue_count, Some(1));
        assert_eq!(meta.id.as_deref(), Some("800ae4b3-bdd2-4c08-badd-f08e5a34b865"));
        assert_eq!(queue_item(&data, "myQueueItem").unwrap(), b"{ message: \"Message sent\" }");
    }

    #[test]
    fn observed_queue_request_with_double_encoding_parses() {
        let (data, meta) = parse_envelope(&sample("functions-queue-request-observed.json")).unwrap();
        assert_eq!(meta.dequeue_count, Some(1), "\"1\" as a string");
        assert_eq!(meta.id.as_deref(), Some("4e773554-f6b7-4ea2-b07d-4c5fd5aba741"), "quotes stripped");
        assert_eq!(meta.utc_now.as_deref(), Some("2023-10-12T20:13:49.640002Z"));
        assert_eq!(queue_item(&data, "queue").unwrap(), br#"{"message":"hello","number":2}"#);
    }

    #[test]
    fn timer_requests_parse_with_and_without_status() {
        let (data, _) = parse_envelope(&sample("functions-timer-request.json")).unwrap();
        let t = timer_info(&data, "timer").unwrap();
        assert!(!t.is_past_due);
        assert_eq!(t.last.as_deref(), Some("2023-10-12T20:13:49.640002Z"));
        let body = br#"{"Data":{"timer":{"Schedule":{"AdjustForDST":true},"ScheduleStatus":null,"IsPastDue":"True"}},"Metadata":{}}"#;
        let (data, _) = parse_envelope(body).unwrap();
        let t = timer_info(&data, "timer").unwrap();
        assert!(t.is_past_due);
        assert_eq!(t.last, None);
        let info: Value = serde_json::from_slice(&sample("functions-timer-info.json")).unwrap();
        let mut d = Map::new();
        d.insert("timer".into(), info);
        assert_eq!(timer_info(&d, "timer").unwrap().next.as_deref(), Some("2016-10-04T10:20:00+00:00"));
    }

    #[test]
    fn documented_http_request_parses() {
        let (data, _) = parse_envelope(&sample("functions-http-request.json")).unwrap();
        let req = http_request(&data, "req").unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.body, br#"{"id":1005,"quantity":2,"color":"black"}"#);
        assert!(req.query.is_empty());
    }

    #[test]
    fn http_query_from_map_or_url() {
        let body = json!({"Data": {"req": {"Method": "POST", "Url": "https://x/api/graph-webhook?validationToken=a%20b%3Cc&code=K",
            "Query": "{\"validationToken\":\"a b<c\"}", "Headers": {"Content-Type": ["text/plain; charset=utf-8"]}}}});
        let (data, _) = parse_envelope(body.to_string().as_bytes()).unwrap();
        assert_eq!(http_request(&data, "req").unwrap().query_param("validationToken"), Some("a b<c"));
        let body =
            json!({"Data": {"req": {"Method": "post", "Url": "https://x/api/graph-webhook?validationToken=a%20b"}}});
        let (data, _) = parse_envelope(body.to_string().as_bytes()).unwrap();
        let req = http_request(&data, "req").unwrap();
        assert_eq!(req.query_param("validationToken"), Some("a b"));
        assert_eq!(req.method, "POST");
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_reason() {
        for (body, want) in [
            (&b"not json"[..], "not JSON"),
            (b"[1,2]", "not a JSON object"),
            (b"{\"Metadata\":{}}", "no Data"),
            (b"{\"Data\":5}", "Data is not an object"),
        ] {
            let e = parse_envelope(body).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        let (data, _) = parse_envelope(b"{\"Data\":{}}").unwrap();
        assert_eq!(timer_info(&data, "timer").unwrap_err(), InvocationError::MissingBinding("timer"));
    }
}
