//! The Lambda adapter through a fake Lambda Runtime API on loopback, with recorded event payloads.
//!
//! Each test starts a fake Runtime API, then a child process running `host::lambda::run` with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it (the runtime reads its settings from the environment only,
//! so it gets a process of its own). The child is this test binary, re-run for the ignored test
//! `child_lambda_process`; its store is a SQLite file the test reads afterwards.
#![cfg(feature = "aws")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use secmon::app::App;
use secmon::clock::SystemClock;
use secmon::graph::{AlertPage, AlertUpdate, Graph, GraphError, Retry};
use secmon::host::lambda::{self, Function};
use secmon::store::sqlite::SqliteStore;
use secmon::store::{ALERTS_QUEUE, Queue, poison_name};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/lambda/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// What the fake Runtime API saw for one invocation.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Response(Value),
    Error(Value),
}

#[derive(Default)]
struct RuntimeState {
    pending: VecDeque<(String, Value)>,
    replies: Vec<(String, Reply)>,
}

/// A Lambda Runtime API: `invocation/next` hands out queued events, `response` / `error` record answers.
struct FakeRuntime {
    addr: SocketAddr,
    state: Arc<Mutex<RuntimeState>>,
}

impl FakeRuntime {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(RuntimeState::default()));
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    /// Queues `event` and waits for the function's answer.
    async fn invoke(&self, child: &mut Child, event: Value) -> Reply {
        let id = uuid::Uuid::new_v4().to_string();
        self.state.lock().unwrap().pending.push_back((id.clone(), event));
        // Bounded so a broken adapter fails the test instead of hanging it; not a speed assertion.
        for _ in 0..1200 {
            if let Some((_, reply)) = self.state.lock().unwrap().replies.iter().find(|(r, _)| *r == id) {
                return reply.clone();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the Lambda process exited ({status}) before answering");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no answer for invocation {id} within a minute");
    }
}

async fn next(State(state): State<Arc<Mutex<RuntimeState>>>) -> Response {
    // Long poll, as the real Runtime API does: answer when an event is there.
    loop {
        let item = state.lock().unwrap().pending.pop_front();
        if let Some((id, event)) = item {
            let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
            let headers = [
                ("lambda-runtime-aws-request-id", id),
                ("lambda-runtime-deadline-ms", deadline.to_string()),
                (
                    "lambda-runtime-invoked-function-arn",
                    "arn:aws:lambda:us-east-1:123456789012:function:secmon-test".to_string(),
                ),
                ("lambda-runtime-trace-id", "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700".to_string()),
            ];
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(k, v.parse().unwrap());
            }
            return (StatusCode::OK, map, event.to_string()).into_response();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn response(State(state): State<Arc<Mutex<RuntimeState>>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    state.lock().unwrap().replies.push((id, Reply::Response(v)));
    StatusCode::ACCEPTED
}

async fn error(State(state): State<Arc<Mutex<RuntimeState>>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    state.lock().unwrap().replies.push((id, Reply::Error(v)));
    StatusCode::ACCEPTED
}

async fn init_error(body: Bytes) -> StatusCode {
    panic!("the runtime reported an init error: {}", String::from_utf8_lossy(&body));
}

/// The child process; killed when the test ends, pass or fail.
struct LambdaProcess(Child);

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_lambda(runtime: &FakeRuntime, handler: &str, db: &std::path::Path) -> LambdaProcess {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_lambda_process", "--nocapture", "--test-threads=1"])
        .env("AWS_LAMBDA_RUNTIME_API", runtime.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("secmon-{handler}"))
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("_HANDLER", handler)
        .env("SECMON_TEST_LAMBDA_DB", db)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the Lambda child process");
    LambdaProcess(child)
}

/// A Graph that answers `get_alert` by id: `unavailable` → 503 (retryable), anything else → 404.
struct ScriptedGraph;

fn graph_error(operation: &str, status: u16, retry: Retry) -> GraphError {
    GraphError {
        operation: operation.into(),
        status: Some(status),
        code: None,
        message: format!("HTTP {status}"),
        retry,
    }
}

#[async_trait]
impl Graph for ScriptedGraph {
    async fn list_alerts(&self, _: &str, _: &str) -> Result<AlertPage, GraphError> {
        Ok(AlertPage::default())
    }
    async fn next_alerts(&self, _: &str, _: &str) -> Result<AlertPage, GraphError> {
        Ok(AlertPage::default())
    }
    async fn get_alert(&self, _: &str, id: &str) -> Result<Value, GraphError> {
        match id {
            "unavailable" => Err(graph_error("get alert", 503, Retry::Retryable)),
            _ => Err(graph_error("get alert", 404, Retry::Permanent)),
        }
    }
    async fn update_alert(&self, _: &str, _: &str, _: &AlertUpdate) -> Result<Value, GraphError> {
        Err(graph_error("update alert", 500, Retry::Retryable))
    }
    async fn add_comment(&self, _: &str, _: &str, _: &str) -> Result<(), GraphError> {
        Err(graph_error("add comment", 500, Retry::Retryable))
    }
    async fn send_mail(&self, _: &str, _: &str, _: &Value) -> Result<(), GraphError> {
        Err(graph_error("send mail", 500, Retry::Retryable))
    }
    async fn create_subscription(&self, _: &str, _: &Value) -> Result<Value, GraphError> {
        Err(graph_error("create subscription", 500, Retry::Retryable))
    }
    async fn renew_subscription(&self, _: &str, _: &str, _: &str) -> Result<Value, GraphError> {
        Err(graph_error("renew subscription", 500, Retry::Retryable))
    }
    async fn reauthorize_subscription(&self, _: &str, _: &str) -> Result<(), GraphError> {
        Err(graph_error("reauthorize subscription", 500, Retry::Retryable))
    }
    async fn delete_subscription(&self, _: &str, _: &str) -> Result<(), GraphError> {
        Ok(())
    }
    async fn list_subscriptions(&self, _: &str) -> Result<Vec<Value>, GraphError> {
        Ok(Vec::new())
    }
}

fn test_app(db: &std::path::Path) -> App {
    let store = Arc::new(SqliteStore::open(db).unwrap());
    App {
        config: Arc::new(secmon::config::Config::default()),
        store: store.clone(),
        queue: store,
        graph: Arc::new(ScriptedGraph),
        http: reqwest::Client::new(),
        clock: Arc::new(SystemClock),
    }
}

/// The Lambda process itself: runs only when a test starts it (see [`spawn_lambda`]).
#[test]
#[ignore = "the child process of the Lambda tests; started by them"]
fn child_lambda_process() {
    let db = std::env::var("SECMON_TEST_LAMBDA_DB").expect("started by a Lambda test");
    let function = Function::from_handler(&std::env::var("_HANDLER").unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(lambda::run(test_app(std::path::Path::new(&db)), function)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batch_reports_exactly_the_failed_record_and_poisons_the_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secmon.db");
    let runtime = FakeRuntime::start().await;
    let mut child = spawn_lambda(&runtime, "respond", &db);

    let reply = runtime.invoke(&mut child.0, fixture("sqs-batch-partial-failure.json")).await;

    // MessageID_1 is not a message and MessageID_3 names an alert Graph says is gone: neither can ever
    // be processed, so both are set aside. MessageID_2 met a 503: SQS must redeliver it alone.
    assert_eq!(reply, Reply::Response(json!({"batchItemFailures": [{"itemIdentifier": "MessageID_2"}]})));
    let store = SqliteStore::open(&db).unwrap();
    let poisoned = store.receive(&poison_name(ALERTS_QUEUE), 10, Duration::from_secs(30)).await.unwrap();
    let mut bodies: Vec<String> = poisoned.iter().map(|m| String::from_utf8(m.body.clone()).unwrap()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![
            "this is not a secmon message".to_string(),
            r#"{"kind":"lookup","tenant":"contoso","alert_id":"gone"}"#.to_string(),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_event_runs_the_poll_timer_and_reports_what_it_returned() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secmon.db");
    let runtime = FakeRuntime::start().await;
    let mut child = spawn_lambda(&runtime, "poll-alerts", &db);
    let event = fixture("eventbridge-scheduled-event.json");

    let reply = runtime.invoke(&mut child.0, event.clone()).await;

    // The same call in this process: the adapter must carry its result (or failure) unchanged.
    let app = test_app(&dir.path().join("direct.db"));
    let direct = lambda::on_schedule(&app, Function::PollAlerts, serde_json::from_value(event).unwrap(), None).await;
    match (reply, direct) {
        (Reply::Response(v), Ok(expected)) => assert_eq!(v, expected),
        (Reply::Error(e), Err(expected)) => {
            assert_eq!(e["errorType"], "secmon::Failure");
            assert_eq!(e["errorMessage"], expected.to_string());
        }
        (reply, direct) => panic!("the Lambda answer {reply:?} differs from the direct call {direct:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_url_request_with_a_base64_body_reaches_the_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secmon.db");
    let runtime = FakeRuntime::start().await;
    let mut child = spawn_lambda(&runtime, "http", &db);
    let event = fixture("function-url-post-base64.json");

    let reply = runtime.invoke(&mut child.0, event).await;

    // The same request, body decoded, straight to the webhook in this process.
    let notification = std::fs::read(format!(
        "{}/tests/fixtures/samples/change-notification-webhook.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let req = secmon::host::HttpRequest {
        method: "POST".into(),
        query: Vec::new(),
        headers: [("content-type".to_string(), "application/json".to_string())].into(),
        body: notification,
    };
    let app = test_app(&dir.path().join("direct.db"));
    let expected = secmon::intake::webhook::handle(&app, "graph-webhook", req).await;

    let Reply::Response(v) = reply else { panic!("the HTTP function failed: {reply:?}") };
    assert_eq!(v["statusCode"], json!(expected.status), "{v}");
    assert_eq!(v["headers"]["content-type"], json!(expected.content_type), "{v}");
    assert_eq!(v["body"], json!(expected.body), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_url_answers_404_for_unknown_functions() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime::start().await;
    let mut child = spawn_lambda(&runtime, "http", &dir.path().join("secmon.db"));
    let mut event = fixture("function-url-post-base64.json");
    event["rawPath"] = json!("/api/no-such-function");
    event["requestContext"]["http"]["path"] = json!("/api/no-such-function");

    let reply = runtime.invoke(&mut child.0, event).await;

    let Reply::Response(v) = reply else { panic!("{reply:?}") };
    assert_eq!(v["statusCode"], json!(404), "{v}");
}
