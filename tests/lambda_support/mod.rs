//! A fake Lambda Runtime API on loopback and the child process that serves it, shared by the Lambda
//! tests (`tests/lambda.rs`, `tests/lambda_demo.rs`).
//!
//! The runtime reads its settings from the environment only, so the adapter gets a process of its own:
//! the test binary itself, re-run for one of its ignored tests (see [`spawn_lambda`]).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

/// A recorded event payload from `tests/fixtures/lambda/`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/lambda/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// What the fake Runtime API saw for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Response(Value),
    Error(Value),
}

#[derive(Default)]
struct RuntimeState {
    pending: VecDeque<(String, Value)>,
    replies: Vec<(String, Reply)>,
}

/// A Lambda Runtime API: `invocation/next` hands out queued events, `response` / `error` record answers.
pub struct FakeRuntime {
    pub addr: SocketAddr,
    state: Arc<Mutex<RuntimeState>>,
}

impl FakeRuntime {
    pub async fn start() -> Self {
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
    pub async fn invoke(&self, child: &mut LambdaProcess, event: Value) -> Reply {
        let id = uuid::Uuid::new_v4().to_string();
        self.state.lock().unwrap().pending.push_back((id.clone(), event));
        // Bounded so a broken adapter fails the test instead of hanging it; not a speed assertion.
        for _ in 0..1200 {
            if let Some((_, reply)) = self.state.lock().unwrap().replies.iter().find(|(r, _)| *r == id) {
                return reply.clone();
            }
            if let Some(status) = child.0.try_wait().unwrap() {
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
pub struct LambdaProcess(pub Child);

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the Lambda process serving `handler` from `runtime`: this test binary, re-run for the ignored
/// test `child_test` only, with the variables Lambda sets and `env` (the child's own settings).
pub fn spawn_lambda<V: AsRef<OsStr>>(
    runtime: &FakeRuntime,
    handler: &str,
    child_test: &str,
    env: &[(&str, V)],
) -> LambdaProcess {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", child_test, "--nocapture", "--test-threads=1"])
        .env("AWS_LAMBDA_RUNTIME_API", runtime.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("secmon-{handler}"))
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("_HANDLER", handler)
        .envs(env.iter().map(|(k, v)| (k, v.as_ref())))
        .stdin(Stdio::null())
        .spawn()
        .expect("start the Lambda child process");
    LambdaProcess(child)
}
