//! Shared by the webhook tests: an in-memory Graph that keeps subscriptions, an App on SQLite with a
//! manual clock, queue wrappers that fail or stall, and helpers to read what was queued.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use secmon::app::App;
use secmon::clock::ManualClock;
use secmon::graph::{AlertPage, AlertUpdate, Graph, GraphError, Retry};
use secmon::host::{HttpRequest, HttpResponse};
use secmon::intake::Message;
use secmon::store::sqlite::SqliteStore;
use secmon::store::{ALERTS_QUEUE, Queue, Received, StoreResult};
use serde_json::{Value, json};

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
    match secmon::config::load_str(yaml, Path::new("test.yaml"), &env, t0()) {
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
        let app = App {
            config: Arc::new(config),
            store: store.clone(),
            queue,
            graph: graph.clone(),
            http: reqwest::Client::new(),
            clock: clock.clone(),
        };
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

/// A Graph that keeps subscriptions in memory and records every subscription call.
#[derive(Default)]
pub struct FakeGraph {
    pub subs: Mutex<BTreeMap<String, (String, Value)>>,
    pub calls: Mutex<Vec<String>>,
    /// Operation names (`create`, `renew`, `reauthorize`, `delete`, `list`) that fail, with the status.
    pub failing: Mutex<BTreeMap<String, (u16, Option<u32>)>>,
    next_id: Mutex<u32>,
}

impl FakeGraph {
    fn check(&self, op: &str, tenant: &str) -> Result<(), GraphError> {
        self.calls.lock().unwrap().push(format!("{op} {tenant}"));
        let mut failing = self.failing.lock().unwrap();
        let hit = match failing.get_mut(op) {
            Some((status, None)) => Some(*status),
            Some((status, Some(n))) if *n > 0 => {
                *n -= 1;
                Some(*status)
            }
            _ => None,
        };
        match hit.as_ref() {
            Some(status) => Err(GraphError {
                operation: format!("{op} subscription for {tenant}"),
                status: Some(*status),
                code: None,
                message: format!("injected {status}"),
                retry: if *status >= 500 { Retry::Retryable } else { Retry::Permanent },
            }),
            None => Ok(()),
        }
    }

    pub fn fail(&self, op: &str, status: u16) {
        self.failing.lock().unwrap().insert(op.into(), (status, None));
    }

    pub fn fail_once(&self, op: &str, status: u16) {
        self.failing.lock().unwrap().insert(op.into(), (status, Some(1)));
    }

    pub fn expiry_of(&self, id: &str) -> chrono::DateTime<chrono::Utc> {
        let sub = self.sub(id).unwrap();
        chrono::DateTime::parse_from_rfc3339(sub["expirationDateTime"].as_str().unwrap()).unwrap().into()
    }

    pub fn heal(&self) {
        self.failing.lock().unwrap().clear();
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    pub fn sub(&self, id: &str) -> Option<Value> {
        self.subs.lock().unwrap().get(id).map(|(_, v)| v.clone())
    }

    pub fn ids(&self, tenant: &str) -> Vec<String> {
        self.subs.lock().unwrap().iter().filter(|(_, (t, _))| t == tenant).map(|(id, _)| id.clone()).collect()
    }

    /// Graph removing a subscription on its own.
    pub fn vanish(&self, id: &str) {
        self.subs.lock().unwrap().remove(id);
    }

    /// A subscription someone else made (or a crash left behind).
    pub fn insert(&self, tenant: &str, body: Value) {
        let id = body["id"].as_str().unwrap().to_string();
        self.subs.lock().unwrap().insert(id, (tenant.into(), body));
    }
}

fn not_found(op: &str, id: &str) -> GraphError {
    GraphError {
        operation: format!("{op} subscription {id}"),
        status: Some(404),
        code: Some("ResourceNotFound".into()),
        message: "not found".into(),
        retry: Retry::Permanent,
    }
}

#[async_trait]
impl Graph for FakeGraph {
    async fn list_alerts(&self, _: &str, _: &str) -> Result<AlertPage, GraphError> {
        Ok(AlertPage::default())
    }
    async fn next_alerts(&self, _: &str, _: &str) -> Result<AlertPage, GraphError> {
        Ok(AlertPage::default())
    }
    async fn get_alert(&self, _: &str, id: &str) -> Result<Value, GraphError> {
        Ok(json!({"id": id}))
    }
    async fn update_alert(&self, _: &str, _: &str, _: &AlertUpdate) -> Result<Value, GraphError> {
        Ok(json!({}))
    }
    async fn add_comment(&self, _: &str, _: &str, _: &str) -> Result<(), GraphError> {
        Ok(())
    }
    async fn send_mail(&self, _: &str, _: &str, _: &Value) -> Result<(), GraphError> {
        Ok(())
    }
    async fn create_subscription(&self, tenant: &str, body: &Value) -> Result<Value, GraphError> {
        self.check("create", tenant)?;
        let id = {
            let mut n = self.next_id.lock().unwrap();
            *n += 1;
            format!("00000000-0000-0000-0000-{:012}", *n)
        };
        let mut sub = body.clone();
        sub["id"] = json!(id);
        self.subs.lock().unwrap().insert(id, (tenant.into(), sub.clone()));
        Ok(sub)
    }
    async fn renew_subscription(&self, tenant: &str, id: &str, expiration: &str) -> Result<Value, GraphError> {
        self.check("renew", tenant)?;
        let mut subs = self.subs.lock().unwrap();
        let (_, sub) = subs.get_mut(id).ok_or_else(|| not_found("renew", id))?;
        sub["expirationDateTime"] = json!(expiration);
        Ok(sub.clone())
    }
    async fn reauthorize_subscription(&self, tenant: &str, id: &str) -> Result<(), GraphError> {
        self.check("reauthorize", tenant)?;
        self.subs.lock().unwrap().get(id).map(|_| ()).ok_or_else(|| not_found("reauthorize", id))
    }
    async fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), GraphError> {
        self.check("delete", tenant)?;
        self.subs.lock().unwrap().remove(id);
        Ok(())
    }
    async fn list_subscriptions(&self, tenant: &str) -> Result<Vec<Value>, GraphError> {
        self.check("list", tenant)?;
        Ok(self.subs.lock().unwrap().values().filter(|(t, _)| t == tenant).map(|(_, v)| v.clone()).collect())
    }
}

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
