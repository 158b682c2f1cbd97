//! Shared pieces of the notify tests: a local HTTP sink with scripted answers, an in-memory Graph, and
//! an `App` built from YAML.
#![allow(dead_code, unused_imports)]

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use secmon::alert::Alert;
use secmon::app::App;
use secmon::clock::ManualClock;
use secmon::graph::{GraphError, Retry};
use secmon::notify::deliver::Delivered;
use secmon::respond::RespondError;
use secmon::rules::{Decision, Delivery, Engine};
use secmon::store::sqlite::SqliteStore;
use serde_json::Value;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: tokio::time::Instant,
    /// What the sink answered.
    pub status: u16,
}

impl Hit {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct SinkState {
    hits: Vec<Hit>,
    /// Scripted answers per path: (status, retry-after seconds, body).
    script: HashMap<String, VecDeque<(u16, Option<u64>, String)>>,
    /// How long every answer takes (after the request is recorded).
    delay: Option<std::time::Duration>,
}

/// A local HTTP receiver that records every POST and answers as scripted (202 by default).
#[derive(Clone)]
pub struct Sink {
    state: Arc<Mutex<SinkState>>,
    pub base: String,
}

impl Sink {
    pub async fn start() -> Sink {
        let state = Arc::new(Mutex::new(SinkState::default()));
        let app = axum::Router::new().route("/{*path}", axum::routing::post(handle)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { state, base }
    }

    /// Answers the next `times` requests to `path` with `status`.
    pub fn script(&self, path: &str, times: usize, status: u16, retry_after: Option<u64>, body: &str) {
        let mut s = self.state.lock().unwrap();
        let q = s.script.entry(path.to_string()).or_default();
        for _ in 0..times {
            q.push_back((status, retry_after, body.to_string()));
        }
    }

    /// Answers every request only after `delay` (the request is recorded at once).
    pub fn delay(&self, delay: Option<std::time::Duration>) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.state.lock().unwrap().hits.iter().filter(|h| h.path == path).cloned().collect()
    }
}

async fn handle(
    State(state): State<Arc<Mutex<SinkState>>>,
    AxPath(path): AxPath<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{path}");
    let (answer, delay) = {
        let mut s = state.lock().unwrap();
        let answer = s.script.get_mut(&path).and_then(|q| q.pop_front());
        s.hits.push(Hit {
            path: path.clone(),
            query: uri.query().unwrap_or("").to_string(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect(),
            body: body.to_vec(),
            at: tokio::time::Instant::now(),
            status: answer.as_ref().map(|a| a.0).unwrap_or(202),
        });
        (answer, s.delay)
    };
    if path.starts_with("/workflows/")
        && let Ok(message) = serde_json::from_slice::<Value>(&body)
    {
        keep_sent_card(&message);
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    match answer {
        Some((status, retry_after, body)) => {
            let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
            if let Some(r) = retry_after {
                resp.headers_mut().insert("retry-after", r.to_string().parse().unwrap());
            }
            resp
        }
        None => StatusCode::ACCEPTED.into_response(),
    }
}

pub use secmon::graph::fake::FakeGraph;

pub fn throttled() -> GraphError {
    GraphError {
        operation: "sendMail".into(),
        status: Some(429),
        code: Some("ApplicationThrottled".into()),
        message: "Application is over its MailboxConcurrency limit.".into(),
        retry: Retry::Retryable,
    }
}

pub use secmon::graph::fake::fake_token;
pub struct World {
    pub app: App,
    pub graph: Arc<FakeGraph>,
    pub clock: Arc<ManualClock>,
    pub store: Arc<SqliteStore>,
    pub sink: Sink,
}

pub const WEBHOOK_KEY: &str = "whsec-0123456789abcdef-long-key";

pub fn now() -> DateTime<Utc> {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

/// An App whose config is `routes_and_receivers` under one tenant; `${TEAMS_URL}`, `${HOOK_URL}` and
/// `${HOOK_KEY}` point at the sink.
pub async fn world(routes_and_receivers: &str) -> World {
    let sink = Sink::start().await;
    let teams_url = format!(
        "{}/workflows/soc/triggers/manual/paths/invoke?api-version=2016-06-01&sig=SIGsecret0123456789",
        sink.base
    );
    let hook_url = format!("{}/hook", sink.base);
    let env = move |k: &str| match k {
        "TEAMS_URL" => Some(teams_url.clone()),
        "HOOK_URL" => Some(hook_url.clone()),
        "HOOK_KEY" => Some(WEBHOOK_KEY.to_string()),
        _ => None,
    };
    let text =
        format!("tenants:\n  - {{id: 11111111-2222-3333-4444-555555555555, name: contoso}}\n{routes_and_receivers}");
    let loaded =
        secmon::setup::load_str(&text, Path::new("secmon.yaml"), &env, now()).unwrap_or_else(|e| panic!("config: {e}"));
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
    let graph = Arc::new(FakeGraph::default());
    let app =
        App::builder(loaded.config).backend(store.clone()).graph(graph.clone()).clock(clock.clone()).build().unwrap();
    World { app, graph, clock, store, sink }
}

/// The rules' decision about `alert` under the world's config.
pub fn decision(app: &App, alert: &Alert) -> Decision {
    Engine::compile(&app.config).expect("the rules compile").decide(alert, "contoso", app.clock.now())
}

/// Tells `receivers`, in this order, about one alert version, each with the options of the matched route
/// that names it; no route updates.
pub async fn deliver(app: &App, alert: &Alert, receivers: &[String]) -> Result<Delivered, RespondError> {
    let decided = decision(app, alert);
    let deliveries: Vec<Delivery> = receivers
        .iter()
        .map(|r| decided.deliveries.iter().find(|d| &d.receiver == r).cloned().expect("a matched route names it"))
        .collect();
    secmon::notify::deliver::deliver(app, "contoso", alert, &deliveries, &[]).await.map_err(RespondError::from)
}

/// Delivers `alert` as the matched routes say: their receivers, then their `set:` updates.
pub async fn deliver_routes(app: &App, alert: &Alert) -> Result<Delivered, RespondError> {
    let decided = decision(app, alert);
    secmon::notify::deliver::deliver(app, "contoso", alert, &decided.deliveries, &decided.updates)
        .await
        .map_err(RespondError::from)
}

/// The documented sample alert (`alerts_v2-list-response.json`), with changes.
pub fn sample(changes: Value) -> Value {
    let list: Value = serde_json::from_str(include_str!("../fixtures/samples/alerts_v2-list-response.json")).unwrap();
    let mut a = list["value"][0].clone();
    for (k, v) in changes.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

/// Writes every distinct card the sink receives as `target/cards/sent-<hash>.json`, so that
/// `scripts/check-cards.sh` checks each card the suite sends with the real parser, not only the named ones.
fn keep_sent_card(message: &Value) {
    use sha2::Digest;
    let card = &message["attachments"][0]["content"];
    let hash = hex::encode(&sha2::Sha256::digest(card.to_string().as_bytes())[..8]);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cards");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("sent-{hash}.json")), serde_json::to_vec_pretty(card).unwrap()).unwrap();
}

/// Writes a Teams card where `scripts/check-cards.sh` validates it with the real Adaptive Cards parser.
pub fn keep_card(name: &str, message: &Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cards");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(&message["attachments"][0]["content"]).unwrap(),
    )
    .unwrap();
}

pub async fn audit(store: &SqliteStore) -> Vec<Value> {
    use secmon::store::Store;
    let mut out = Vec::new();
    for s in store.list_streams("audit/").await.unwrap() {
        for r in store.read_stream(&s).await.unwrap() {
            out.push(serde_json::from_slice(&r).unwrap());
        }
    }
    out
}
