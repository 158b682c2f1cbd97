//! Functions fidelity: start the real `secmon serve` the way the Functions host does (environment,
//! a random free port, readiness by polling `GET /` every 25 ms), then replay the documented
//! invocation payloads for every function in `functions/*/function.json` and check what the host
//! would read back: the status code, `Outputs` / `Logs` / `ReturnValue`, and stdout.
//!
//! Functions are read from the folder, so a new function without a payload here fails this test.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use secmon::intake::Message;
use secmon::store::sqlite::SqliteStore;
use secmon::store::{ALERTS_QUEUE, Queue, poison_name};
use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn sample(name: &str) -> Value {
    let path = format!("{ROOT}/tests/fixtures/samples/{name}");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// `secmon serve` as a child process, with its stdout collected line by line.
struct Handler {
    child: Child,
    port: u16,
    stdout: Arc<Mutex<Vec<String>>>,
    db: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Handler {
    /// Starts the binary as the host would and waits until `GET /` answers anything.
    async fn start() -> Handler {
        Handler::start_with("").await
    }

    /// The same, with `extra` appended to the config file.
    async fn start_with(extra: &str) -> Handler {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("secmon.db");
        let config = dir.path().join("secmon.yaml");
        std::fs::write(
            &config,
            format!(
                "tenants:\n  - id: 11111111-2222-3333-4444-555555555555\n    name: contoso\nstore: {{ sqlite: {} }}\n{extra}",
                db.display()
            ),
        )
        .unwrap();
        // The host picks a free loopback port and hands it over; so do we.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_secmon"))
            .arg("serve")
            .current_dir(ROOT)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", uuid::Uuid::new_v4().to_string())
            .env("FUNCTIONS_APP_ROOT_PATH", ROOT)
            .env("SECMON_CONFIG", &config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start secmon serve");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let http = reqwest::Client::new();
        // The host's readiness check: any HTTP answer on `/`, polled every 25 ms. The deadline only
        // stops a broken build from hanging the suite (the host gives up after its own timeout).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http.get(format!("http://127.0.0.1:{port}/")).send().await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("secmon serve exited before it was ready: {status}; stdout: {:?}", stdout.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "secmon serve never answered GET /");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Handler { child, port, stdout, db, _dir: dir, http }
    }

    /// One invocation as the host sends it: `POST /<function>` with its headers.
    async fn invoke(&self, function: &str, body: impl Into<reqwest::Body>) -> (u16, Value, String) {
        let id = uuid::Uuid::new_v4().to_string();
        let resp = self
            .http
            .post(format!("http://127.0.0.1:{}/{function}", self.port))
            .header("X-Azure-Functions-InvocationId", &id)
            .header("X-Azure-Functions-HostVersion", "4.1040.300.0")
            .header("User-Agent", "Azure-Functions-Host/4.1040.300.0")
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{function}: answer is not JSON ({e}): {text}"));
        (status, value, id)
    }

    /// The stdout JSON lines logged inside invocation `id` (waits briefly for the pipe).
    async fn stdout_for(&self, id: &str) -> Vec<Value> {
        for _ in 0..200 {
            let lines: Vec<Value> = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["span"]["invocation_id"] == id)
                .collect();
            if !lines.is_empty() {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Vec::new()
    }

    /// Stops it as the host does (SIGTERM) and returns whether it exited cleanly.
    fn stop(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        self.child.wait().unwrap().success()
    }
}

impl Drop for Handler {
    // A failed assertion must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The answer's shape the host reads from a 2xx: `Outputs` object, `Logs` strings, `ReturnValue`.
fn assert_host_shape(function: &str, body: &Value) {
    assert!(body["Outputs"].is_object(), "{function}: Outputs must be an object: {body}");
    let logs = body["Logs"].as_array().unwrap_or_else(|| panic!("{function}: Logs must be an array: {body}"));
    assert!(logs.iter().all(Value::is_string), "{function}: Logs must be strings: {body}");
    assert!(body.as_object().unwrap().contains_key("ReturnValue"), "{function}: ReturnValue missing: {body}");
}

/// The function's trigger binding: (type, name, the whole binding).
fn trigger(function_json: &Value) -> (String, String, Value) {
    let b = function_json["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["direction"] == "in" && b["type"].as_str().is_some_and(|t| t.ends_with("Trigger")))
        .expect("a trigger binding")
        .clone();
    (b["type"].as_str().unwrap().to_string(), b["name"].as_str().unwrap().to_string(), b)
}

/// The documented request of a trigger type, with its binding renamed to ours.
fn documented_payload(function: &str, kind: &str, binding: &str, trigger: &Value, message: &str) -> Value {
    match kind {
        "timerTrigger" => {
            let mut p = sample("functions-timer-request.json");
            let data = p["Data"].as_object_mut().unwrap();
            let timer = data.remove("timer").expect("the sample's timer binding");
            data.insert(binding.to_string(), timer);
            p
        }
        "queueTrigger" => {
            // The observed shape: metadata JSON-encoded twice, numbers as strings.
            let mut p = sample("functions-queue-request-observed.json");
            let data = p["Data"].as_object_mut().unwrap();
            data.clear();
            data.insert(binding.to_string(), Value::String(message.to_string()));
            p
        }
        "httpTrigger" => {
            let mut p = sample("functions-http-request.json");
            let data = p["Data"].as_object_mut().unwrap();
            let mut req = data.values().next().cloned().expect("the sample's http binding");
            let method = trigger["methods"][0].as_str().unwrap_or("post").to_ascii_uppercase();
            let route = trigger["route"].as_str().unwrap_or(function);
            req["Method"] = json!(method);
            req["Url"] = json!(format!("http://localhost:7071/api/{route}"));
            data.clear();
            data.insert(binding.to_string(), req);
            p
        }
        other => panic!("{function}: no documented payload for trigger type {other}; add one to this test"),
    }
}

fn functions() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(Path::new(ROOT).join("functions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("function.json").is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let json = serde_json::from_str(&std::fs::read_to_string(p.join("function.json")).unwrap()).unwrap();
            (name, json)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn every_function_answers_the_documented_payloads_as_the_host_expects() {
    let mut handler = Handler::start().await;
    let all = functions();
    assert!(all.len() >= 7, "functions/ holds every function: {:?}", all.iter().map(|f| &f.0).collect::<Vec<_>>());
    let valid = serde_json::to_string(&Message::Poll { tenant: "contoso".into(), reason: "fidelity".into() }).unwrap();
    // A delivery job that is not due yet: `deliver` puts it back on its queue with a delay.
    let later = json!({"tenant": "contoso", "alert": {"id": "a1"}, "not_before": "2999-01-01T00:00:00Z",
        "task": {"kind": "update", "route": "triage", "set": {"status": "inProgress"}, "receivers": []}})
    .to_string();

    for (function, json) in &all {
        let (kind, binding, trig) = trigger(json);
        let message = if function == "deliver" { &later } else { &valid };
        let payload = documented_payload(function, &kind, &binding, &trig, message);
        let (status, body, id) = handler.invoke(function, payload.to_string()).await;
        // A well-formed invocation of a known function is never refused or unknown.
        assert!(matches!(status, 200 | 500), "{function}: {status} {body}");
        assert_host_shape(function, &body);
        if status == 500 {
            // The host drops the Logs of a failed invocation: stdout must say why, with the id.
            let lines = handler.stdout_for(&id).await;
            assert!(
                lines.iter().any(|l| l["level"] == "ERROR" && l["message"].as_str().unwrap_or("").contains("invocation failed")),
                "{function}: a failed invocation is logged on stdout with its invocation id; got {lines:?}"
            );
        }
        if kind == "httpTrigger" {
            assert_eq!(status, 200, "{function}: HTTP functions answer through Outputs.res: {body}");
            let out_name = json["bindings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["type"] == "http" && b["direction"] == "out")
                .and_then(|b| b["name"].as_str())
                .expect("an http output binding");
            let res = &body["Outputs"][out_name];
            let code = res["statusCode"].as_u64().unwrap_or_else(|| panic!("{function}: statusCode: {body}"));
            assert!((100..600).contains(&code), "{function}: {code}");
            assert!(res["body"].is_string(), "{function}: body is text: {body}");
            assert!(res["headers"]["Content-Type"].is_string(), "{function}: {body}");
        }
        if kind == "queueTrigger" {
            let logs = body["Logs"].to_string();
            assert!(!logs.contains("poison"), "{function}: a valid message must not be poisoned: {body}");
        }
    }
    assert!(handler.stop(), "secmon serve exits cleanly on SIGTERM");
}

#[tokio::test]
async fn malformed_invocations_are_refused_with_the_reason_and_logged() {
    let mut handler = Handler::start().await;

    let (status, body, id) = handler.invoke("respond", "this is not json").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("not JSON"), "{body}");
    let lines = handler.stdout_for(&id).await;
    assert!(lines.iter().any(|l| l["level"] == "ERROR" && l["status"] == 400), "{lines:?}");

    let (status, body, _) = handler.invoke("poll-alerts", r#"{"Data":{},"Metadata":{}}"#).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("no \"timer\" binding"), "{body}");

    let (status, body, _) = handler.invoke("respond", r#"{"Data":{"message":null},"Metadata":{}}"#).await;
    assert_eq!(status, 400, "{body}");

    let (status, _, _) = handler.invoke("no-such-function", r#"{"Data":{},"Metadata":{}}"#).await;
    assert_eq!(status, 404);
    assert!(handler.stop());
}

/// An unreadable queue message succeeds (so the host deletes it) after being set aside on the poison
/// queue; what the function logged comes back in `Logs` and on stdout with the invocation id.
#[tokio::test]
async fn an_unreadable_queue_message_is_poisoned_not_dropped() {
    let mut handler = Handler::start().await;
    let mut payload = sample("functions-queue-request-observed.json");
    payload["Data"] = json!({"message": "{\"kind\":\"launch_missiles\"}"});
    let (status, body, id) = handler.invoke("respond", payload.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_host_shape("respond", &body);
    let logs: Vec<&str> = body["Logs"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(
        logs.iter().any(|l| l.starts_with("ERROR") && l.contains(&poison_name(ALERTS_QUEUE))),
        "the function's own log line is returned in Logs: {logs:?}"
    );
    assert!(handler.stdout_for(&id).await.iter().any(|l| l["level"] == "ERROR"));
    assert!(handler.stop());
    let db = handler.db.clone();

    let store = SqliteStore::open(&db).unwrap();
    let poisoned = store.receive(&poison_name(ALERTS_QUEUE), 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(poisoned.len(), 1);
    assert_eq!(poisoned[0].body, b"{\"kind\":\"launch_missiles\"}");
}

/// An unreadable delivery job is set aside on the deliveries' own poison queue, with the reason.
#[tokio::test]
async fn an_unreadable_delivery_job_is_poisoned_on_its_own_queue() {
    let mut handler = Handler::start().await;
    let mut payload = sample("functions-queue-request-observed.json");
    payload["Data"] = json!({"message": "{\"tenant\":\"contoso\",\"task\":{\"kind\":\"tell_everyone\"}}"});
    let (status, body, _) = handler.invoke("deliver", payload.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_host_shape("deliver", &body);
    let logs = body["Logs"].to_string();
    assert!(logs.contains("deliveries-poison") && logs.contains("not a delivery job"), "{logs}");
    assert!(handler.stop());
    let store = SqliteStore::open(&handler.db).unwrap();
    let poisoned = store.receive("deliveries-poison", 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(poisoned.len(), 1);
    assert!(store.receive(&poison_name(ALERTS_QUEUE), 10, Duration::from_secs(30)).await.unwrap().is_empty());
}

/// The round trip through the host protocol: what the Azure backend puts on the queue, decoded as
/// the host does with `messageEncoding: base64`, is a message `secmon serve` reads (not poisoned).
#[tokio::test]
async fn a_message_from_the_azure_queue_reaches_respond_readable() {
    if !common::azurite::available("a_message_from_the_azure_queue_reaches_respond_readable") {
        return;
    }
    let host_json: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/host.json")).unwrap()).unwrap();
    assert_eq!(host_json["extensions"]["queues"]["messageEncoding"], "base64", "the backend writes base64");

    let store = common::azurite::store().await;
    let queue = format!("host-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let message = Message::Poll { tenant: "contoso".into(), reason: "round trip".into() };
    store.send(&queue, &serde_json::to_vec(&message).unwrap()).await.unwrap();
    let text = peek_text(&queue).await;
    let decoded = base64::engine::general_purpose::STANDARD.decode(&text).expect("the host decodes base64");
    let decoded = String::from_utf8(decoded).expect("UTF-8, as the host hands strings over");

    let mut handler = Handler::start().await;
    let mut payload = sample("functions-queue-request-observed.json");
    payload["Data"] = json!({ "message": decoded });
    let (status, body, _) = handler.invoke("respond", payload.to_string()).await;
    assert_ne!(status, 400, "{body}");
    assert!(!body["Logs"].to_string().contains("poison"), "{body}");
    assert!(handler.stop());
    let db = handler.db.clone();
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.len(&poison_name(ALERTS_QUEUE)).await.unwrap(), 0);
}

/// The Teams bot's messaging endpoint as the Functions host invokes it (anonymous route: the host passes
/// the Bot Connector's `Authorization` header through): a signed card action is queued as a triage
/// message and answered 200 in `Outputs.res`; a forged token is 401 there and queues nothing.
#[tokio::test]
async fn the_host_invokes_bot_messages_and_a_signed_click_is_queued() {
    const BOT_APP: &str = "7d1e3b5a-1111-4222-8333-444455556666";
    let emu = secmon_emulator::Emulator::start(secmon_emulator::Options::default()).await.unwrap();
    let config = format!(
        "triage:\n  bots:\n    soc: {{ app_id: {BOT_APP}, app_secret: s, tenant_id: t, openid_metadata: '{}' }}\n  \
         allowed: {{ users: [0b6c8e2a-dana-4c1e-9f00-000000000042] }}\n",
        emu.bot_openid_url()
    );
    let mut handler = Handler::start_with(&config).await;
    let activity = json!({
        "type": "message", "id": "1701", "channelId": "msteams", "serviceUrl": emu.bot_service_url(),
        "from": {"id": "29:1abc", "name": "Dana Lee", "aadObjectId": "0b6c8e2a-dana-4c1e-9f00-000000000042"},
        "conversation": {"id": "19:secops@thread.tacv2"}, "replyToId": "card-1",
        "value": {"secmon": "acknowledge", "tenant": "contoso", "alert": "a1", "version": "2026-12-01T10:00:00Z"},
    });
    let invocation = |token: &str| {
        let mut p = sample("functions-http-request.json");
        p["Data"] = json!({"req": {
            "Url": "https://secmon.azurewebsites.net/api/bot-messages", "Method": "POST", "Query": "{}",
            "Headers": {"Content-Type": ["application/json; charset=utf-8"], "Authorization": [format!("Bearer {token}")]},
            "Params": {}, "Body": activity.to_string(),
        }});
        p.to_string()
    };
    let issued = chrono::Utc::now() - chrono::Duration::minutes(1);
    let signed = emu.bot_token(BOT_APP, &emu.bot_service_url(), issued);
    let (status, body, _) = handler.invoke("bot-messages", invocation(&signed)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Outputs"]["res"]["statusCode"], 200, "{body}");
    let claims = json!({"iss": "https://api.botframework.com", "aud": BOT_APP, "serviceUrl": emu.bot_service_url(),
        "exp": (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp()});
    let (_, body, _) = handler.invoke("bot-messages", invocation(&emu.forged_bot_token(&claims))).await;
    assert_eq!(body["Outputs"]["res"]["statusCode"], 401, "{body}");
    assert_eq!(body["Outputs"]["res"]["body"], "unauthorized", "{body}");
    assert!(handler.stop());
    let store = SqliteStore::open(&handler.db).unwrap();
    let queued = store.receive(ALERTS_QUEUE, 10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(queued.len(), 1, "only the signed click");
    let message = Message::parse(&queued[0].body).unwrap();
    let Message::Triage { tenant, click } = message else { panic!("{message:?}") };
    assert_eq!((tenant.as_str(), click["bot"].as_str()), ("contoso", Some("soc")));
}

async fn peek_text(queue: &str) -> String {
    use azure_storage_queue::QueueServiceClient;
    let mut url = azure_core::http::Url::parse(common::azurite::QUEUE_URL).unwrap();
    url.set_query(Some(&common::azurite::account_sas()));
    let client = QueueServiceClient::new(url, None, None).unwrap().queue_client(queue).unwrap();
    let peeked = client.peek_messages(None).await.unwrap().into_model().unwrap();
    peeked.items.unwrap().remove(0).message_text.unwrap()
}
