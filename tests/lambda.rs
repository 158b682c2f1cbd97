//! The Lambda adapter through a fake Lambda Runtime API on loopback, with recorded event payloads.
//!
//! Each test starts a fake Runtime API, then a child process running `host::lambda::run` with
//! `AWS_LAMBDA_RUNTIME_API` pointing at it (the runtime reads its settings from the environment only,
//! so it gets a process of its own). The child is this test binary, re-run for the ignored test
//! `child_lambda_process`; its store is a SQLite file the test reads afterwards.
#![cfg(feature = "aws")]

mod lambda_support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use lambda_support::{FakeRuntime, LambdaProcess, Reply, fixture};
use secmon::app::App;
use secmon::clock::SystemClock;
use secmon::graph::fake::FakeGraph;
use secmon::host::lambda::{self, Function};
use secmon::store::sqlite::SqliteStore;
use secmon::store::{ALERTS_QUEUE, Queue, poison_name};

fn spawn_lambda(runtime: &FakeRuntime, handler: &str, db: &std::path::Path) -> LambdaProcess {
    lambda_support::spawn_lambda(runtime, handler, "child_lambda_process", &[("SECMON_TEST_LAMBDA_DB", db)])
}

/// A Graph with no alerts (a lookup answers 404, permanent) where the alert `unavailable` answers 503.
fn scripted_graph() -> FakeGraph {
    let graph = FakeGraph::new();
    graph.fail("get_alert:unavailable", 503);
    graph
}

fn test_app(db: &std::path::Path) -> App {
    let store = Arc::new(SqliteStore::open(db).unwrap());
    App::builder(secmon::config::Config::default())
        .backend(store)
        .graph(Arc::new(scripted_graph()))
        .clock(Arc::new(SystemClock))
        .build()
        .unwrap()
}

/// The Lambda process itself: runs only when a test starts it (see [`spawn_lambda`]).
#[test]
#[ignore = "the child process of the Lambda tests; started by them"]
fn child_lambda_process() {
    let db = std::env::var("SECMON_TEST_LAMBDA_DB").expect("started by a Lambda test");
    let function = Function::from_handler(&std::env::var("_HANDLER").unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(lambda::run(test_app(std::path::Path::new(&db)), function, std::future::pending())).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batch_reports_exactly_the_failed_record_and_poisons_the_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("secmon.db");
    let runtime = FakeRuntime::start().await;
    let mut child = spawn_lambda(&runtime, "respond", &db);

    let reply = runtime.invoke(&mut child, fixture("sqs-batch-partial-failure.json")).await;

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

    let reply = runtime.invoke(&mut child, event.clone()).await;

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

    let reply = runtime.invoke(&mut child, event).await;

    // The same request, body decoded, straight to the webhook in this process.
    let notification = std::fs::read(format!(
        "{}/tests/fixtures/samples/change-notification-webhook.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let req = secmon::intake::http::HttpRequest {
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

    let reply = runtime.invoke(&mut child, event).await;

    let Reply::Response(v) = reply else { panic!("{reply:?}") };
    assert_eq!(v["statusCode"], json!(404), "{v}");
}
