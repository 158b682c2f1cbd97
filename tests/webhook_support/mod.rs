//! Shared by the webhook tests: an in-memory Graph that keeps subscriptions, an App on SQLite with a
//! manual clock, queue wrappers that fail or stall, and helpers to read what was queued.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use secmon::app::App;
use secmon::clock::ManualClock;
use secmon::intake::Message;
use secmon::intake::http::{HttpRequest, HttpResponse};
use secmon::store::sqlite::SqliteStore;
use secmon::store::{ALERTS_QUEUE, Queue, Received, StoreResult};
use serde_json::Value;

pub const DOORBELL_SECRET: &str = "doorbell-secret-0123456789";

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/samples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Two tenants, a mailbox doorbell for each, the doorbell secret, a function key in the notification URL.
pub fn config_yaml(public_url: &str) -> String {
    format!(
        r#"
tenants:
  - {{ id: 84bd8158-6d4d-4958-8b9f-9d6445542f95, name: contoso }}
  - {{ id: fabrikam.onmicrosoft.com, name: fabrikam }}
subscriptions:
  - {{ tenant: contoso, resource: "users/alerts@contoso.com/mailFolders('inbox')/messages", change_type: created }}
  - {{ tenant: fabrikam, resource: "users/soc@fabrikam.com/messages" }}
webhook:
  public_url: {public_url}
  notification_query: "code=${{FUNCTION_KEY}}"
  doorbell_secret: "${{DOORBELL}}"
  time_limit: 2s
"#
    )
}

pub fn load_config(yaml: &str) -> secmon::config::Config {
    let env = |k: &str| match k {
        "FUNCTION_KEY" => Some("FUNCTIONKEY-abc123==".to_string()),
        "DOORBELL" => Some(DOORBELL_SECRET.to_string()),
        _ => None,
    };
    match secmon::setup::load_str(yaml, Path::new("test.yaml"), &env, t0()) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}"),
    }
}

/// Everything a test needs to drive and inspect an App.
pub struct Harness {
    pub app: App,
    pub store: Arc<SqliteStore>,
    pub graph: Arc<FakeGraph>,
    pub clock: Arc<ManualClock>,
}

impl Harness {
    pub fn new(config: secmon::config::Config) -> Harness {
        Harness::build(config, false, None)
    }

    /// Sending to the queue fails (`stall: None`) or takes `stall` first.
    pub fn with_broken_queue(config: secmon::config::Config, stall: Option<Duration>) -> Harness {
        Harness::build(config, true, stall)
    }

    fn build(config: secmon::config::Config, broken: bool, stall: Option<Duration>) -> Harness {
        let clock = Arc::new(ManualClock::new(t0()));
        let store = Arc::new(SqliteStore::in_memory().unwrap().with_clock(clock.clone()));
        let graph = Arc::new(FakeGraph::default());
        let queue: Arc<dyn Queue> =
            if broken { Arc::new(BrokenQueue { inner: store.clone(), stall }) } else { store.clone() };
        let app = App::builder(config)
            .store(store.clone())
            .queue(queue)
            .graph(graph.clone())
            .clock(clock.clone())
            .build()
            .unwrap();
        Harness { app, store, graph, clock }
    }

    /// Every message on the alerts queue, parsed, without consuming them for good.
    pub async fn queued(&self) -> Vec<Message> {
        let got = self.store.receive(ALERTS_QUEUE, 1000, Duration::from_millis(1)).await.unwrap();
        // Make them visible again for later reads.
        self.clock.advance(chrono::Duration::milliseconds(2));
        got.iter().map(|r| Message::parse(&r.body).unwrap()).collect()
    }

    pub async fn handle(&self, function: &str, req: HttpRequest) -> HttpResponse {
        secmon::intake::webhook::handle(&self.app, function, req).await
    }
}

pub fn post(content_type: Option<&str>, query: &[(&str, &str)], body: impl Into<Vec<u8>>) -> HttpRequest {
    let mut headers = BTreeMap::new();
    if let Some(ct) = content_type {
        headers.insert("content-type".to_string(), ct.to_string());
    }
    HttpRequest {
        method: "POST".into(),
        query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        headers,
        body: body.into(),
    }
}

pub fn json_post(body: &Value) -> HttpRequest {
    post(Some("application/json; charset=utf-8"), &[("code", "FUNCTIONKEY-abc123==")], body.to_string())
}

pub fn header<'a>(resp: &'a HttpResponse, name: &str) -> Option<&'a str> {
    resp.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

pub use secmon::graph::fake::FakeGraph;

/// A queue whose `send` fails (the store is down) or stalls (the store is slow).
pub struct BrokenQueue {
    pub inner: Arc<SqliteStore>,
    pub stall: Option<Duration>,
}

#[async_trait]
impl Queue for BrokenQueue {
    async fn send(&self, queue: &str, body: &[u8]) -> StoreResult<()> {
        match self.stall {
            Some(d) => {
                tokio::time::sleep(d).await;
                self.inner.send(queue, body).await
            }
            None => Err(secmon::store::StoreError::Backend("queue unavailable".into())),
        }
    }
    async fn send_after(&self, queue: &str, body: &[u8], delay: Duration) -> StoreResult<()> {
        match self.stall {
            Some(d) => {
                tokio::time::sleep(d).await;
                self.inner.send_after(queue, body, delay).await
            }
            None => Err(secmon::store::StoreError::Backend("queue unavailable".into())),
        }
    }
    async fn receive(&self, queue: &str, max: usize, visibility: Duration) -> StoreResult<Vec<Received>> {
        self.inner.receive(queue, max, visibility).await
    }
    async fn delete(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        self.inner.delete(queue, msg).await
    }
    async fn poison(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        self.inner.poison(queue, msg).await
    }
    async fn len(&self, queue: &str) -> StoreResult<usize> {
        self.inner.len(queue).await
    }
    fn max_dequeue(&self) -> u32 {
        5
    }
    fn max_body(&self) -> usize {
        self.inner.max_body()
    }
}
