//! The demo flow (`secmon demo`, `tests/demo.rs`) on the Lambda adapter: the Graph emulator over TLS,
//! seeded as the demo seeds it, `examples/demo.yaml`, and the two functions of the flow as Lambda runs
//! them — `poll-alerts` for an EventBridge schedule, `respond` for SQS batches — each a child process
//! behind a fake Runtime API (see `lambda_support`).
//!
//! The children build their state with [`lambda::app_from_env`], as the deployed binary does: config
//! file from `SECMON_CONFIG`, the secret placeholders from Secrets Manager, and the S3 + SQS store, all
//! on moto. The test plays the SQS event source mapping: it receives what the poll queued, hands it to
//! `respond` in batches of 10 (the template's `BatchSize`) and deletes what succeeded. The numbers are
//! read back from the emulator and the bucket, and they are the numbers of `tests/demo.rs`.
//!
//! Like `tests/aws_store.rs`, this needs moto: `scripts/moto.sh start`, then `SECMON_MOTO`; without it
//! the test skips, saying so loudly (scripts/test.sh always sets it).
#![cfg(feature = "aws")]

mod common;
mod lambda_support;

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use chrono::Utc;
use serde_json::{Map, Value, json};

use common::moto::{REGION, moto, sdk};
use lambda_support::{FakeRuntime, Reply, fixture, spawn_lambda};
use secmon::demo::{CONFIG, TENANT_ID, crafted_alerts};
use secmon::graph::Graph;
use secmon::graph::client::GraphClient;
use secmon::host::lambda::{self, Function};
use secmon::store::Store;
use secmon::store::aws::{S3Store, s3_client};
use secmon_emulator::{Emulator, Options};

/// The demo tenant's app registration, as in `examples/demo.yaml`.
const CLIENT_ID: &str = "5f4b3c2a-0000-4000-8000-00000000d3e0";
const TEAMS_SINK: &str = "soc";
/// The `respond` function's SQS batch size in `infra/aws/template.yaml`.
const BATCH_SIZE: usize = 10;
const CHILD: &str = "child_lambda_demo_process";

/// One Lambda process of the demo: builds its state from the environment as the deployed binary does.
#[test]
#[ignore = "the child process of the Lambda demo test; started by it"]
fn child_lambda_demo_process() {
    // The function's log, as Lambda would collect it (the child writes to the test's terminal).
    secmon::logging::init(secmon::logging::Format::Text);
    let ca = std::fs::read(std::env::var("SECMON_TEST_CA").expect("started by the Lambda demo test")).unwrap();
    let function = Function::from_handler(&std::env::var("_HANDLER").unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let graph_http = http.clone();
        let app =
            lambda::app_from_env(|config| GraphClient::new(config, graph_http).map(|g| Arc::new(g) as Arc<dyn Graph>))
                .await
                .unwrap();
        // The Teams sink is on the emulator's TLS port too, so the receivers' client must trust its CA
        // as well; everything else is what `app_from_env` built.
        let app = app.with_http(http);
        lambda::run(app, function, std::future::pending()).await.unwrap();
    });
}

/// The Lambda SQS record for a received message, as the event source mapping builds it.
fn sqs_record(msg: &aws_sdk_sqs::types::Message, queue_arn: &str) -> Value {
    let attributes: Map<String, Value> =
        msg.attributes().into_iter().flatten().map(|(k, v)| (k.as_str().to_string(), json!(v))).collect();
    let message_attributes: Map<String, Value> = msg
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = json!({"stringValue": v.string_value(), "stringListValues": [], "binaryListValues": [],
                               "dataType": v.data_type()});
            (k.clone(), value)
        })
        .collect();
    json!({
        "messageId": msg.message_id(),
        "receiptHandle": msg.receipt_handle(),
        "body": msg.body(),
        "md5OfBody": msg.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
        "attributes": attributes,
        "messageAttributes": message_attributes,
    })
}

/// Every message visible on `url` now, each received once (hidden for the rest of the test).
async fn receive_all(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(BATCH_SIZE as i32)
            .visibility_timeout(600)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// Messages on `url`, visible or in flight.
async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    out.attributes().into_iter().flatten().map(|(_, v)| v.parse::<usize>().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_flow_runs_on_the_lambda_adapter() {
    let Some(endpoint) = moto() else { return };

    // The emulator, seeded exactly as `demo::run` seeds it.
    let emulator = Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    let secret = format!("demo-{}", uuid::Uuid::new_v4().simple());
    emulator.add_client(TENANT_ID, CLIENT_ID, &secret);
    emulator.seed_samples(TENANT_ID);
    emulator.seed_alerts(TENANT_ID, crafted_alerts(Utc::now()));

    // The deployment: a bucket, the alerts queue and its dead-letter queue, and the secret holding the
    // config's secret placeholders.
    let sdk = sdk(&endpoint).await;
    let name = format!("secmon-demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let s3 = s3_client(&sdk, true);
    s3.create_bucket().bucket(&name).send().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue_url = sqs.create_queue().queue_name(format!("{name}-alerts")).send().await.unwrap().queue_url.unwrap();
    let poison_url =
        sqs.create_queue().queue_name(format!("{name}-alerts-poison")).send().await.unwrap().queue_url.unwrap();
    let deliveries_url =
        sqs.create_queue().queue_name(format!("{name}-deliveries")).send().await.unwrap().queue_url.unwrap();
    let deliveries_poison_url =
        sqs.create_queue().queue_name(format!("{name}-deliveries-poison")).send().await.unwrap().queue_url.unwrap();
    let deliveries_arn = sqs
        .get_queue_attributes()
        .queue_url(&deliveries_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap();
    let secrets = json!({
        "SECMON_DEMO_CLIENT_SECRET": secret,
        "SECMON_DEMO_TEAMS_URL": emulator.teams_webhook_url(TEAMS_SINK),
    });
    let secret_arn = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(format!("{name}/graph"))
        .secret_string(secrets.to_string())
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();

    // The package: the demo config and, for this test only, the emulator's CA.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("demo.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let ca = dir.path().join("emulator-ca.pem");
    std::fs::write(&ca, emulator.ca_pem().expect("the emulator serves TLS")).unwrap();
    let env = [
        ("SECMON_CONFIG", config.display().to_string()),
        ("SECMON_STORE", "aws".into()),
        ("SECMON_S3_BUCKET", name.clone()),
        ("SECMON_S3_PREFIX", "secmon".into()),
        ("SECMON_SQS_QUEUE_URL", queue_url.clone()),
        ("SECMON_SQS_POISON_QUEUE_URL", poison_url.clone()),
        ("SECMON_SQS_DELIVERIES_QUEUE_URL", deliveries_url.clone()),
        ("SECMON_SQS_DELIVERIES_POISON_QUEUE_URL", deliveries_poison_url.clone()),
        ("SECMON_SECRETS_ARN", secret_arn),
        ("SECMON_DEMO_GRAPH_URL", emulator.graph_url()),
        ("SECMON_DEMO_AUTHORITY_URL", emulator.authority_url()),
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_REGION", REGION.into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("SECMON_TEST_CA", ca.display().to_string()),
    ];

    // (1) The schedule fires `poll-alerts`.
    let poll_runtime = FakeRuntime::start().await;
    let mut poll = spawn_lambda(&poll_runtime, "poll-alerts", CHILD, &env);
    let reply = poll_runtime.invoke(&mut poll, fixture("eventbridge-scheduled-event.json")).await;
    drop(poll);
    let Reply::Response(polled) = reply else { panic!("poll-alerts failed: {reply:?}") };
    let tenants = polled["returnValue"].as_array().unwrap();
    assert!(tenants.iter().all(|t| t.get("error").is_none()), "{polled}");
    let pulled: u64 = tenants.iter().map(|t| t["report"]["queued"].as_u64().unwrap()).sum();
    // Eight versions: two documented samples and six crafted alerts, each pulled once.
    assert_eq!(pulled, 8, "{polled}");

    // (2) The event source mapping hands exactly what the poll queued to `respond`, ten at a time,
    // and deletes a batch's records unless they are listed in `batchItemFailures`.
    let queued = receive_all(&sqs, &queue_url).await;
    assert_eq!(queued.len(), 8, "the queue holds what the poll queued, no more");
    let respond_runtime = FakeRuntime::start().await;
    let mut respond = spawn_lambda(&respond_runtime, "respond", CHILD, &env);
    for batch in queued.chunks(BATCH_SIZE) {
        let records: Vec<Value> = batch.iter().map(|m| sqs_record(m, &queue_arn)).collect();
        let reply = respond_runtime.invoke(&mut respond, json!({"Records": records})).await;
        assert_eq!(reply, Reply::Response(json!({"batchItemFailures": []})));
        for msg in batch {
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(msg.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    drop(respond);
    assert_eq!(depth(&sqs, &queue_url).await, 0, "respond queued nothing further");
    assert_eq!(depth(&sqs, &poison_url).await, 0, "nothing was poisoned");

    // (2b) Each decided alert queued one delivery per receiver: the `deliver` function tells each.
    let deliver_runtime = FakeRuntime::start().await;
    let mut deliver = spawn_lambda(&deliver_runtime, "deliver", CHILD, &env);
    let jobs = receive_all(&sqs, &deliveries_url).await;
    assert_eq!(jobs.len(), 9, "six Teams deliveries and three e-mails");
    for batch in jobs.chunks(BATCH_SIZE) {
        let records: Vec<Value> = batch.iter().map(|m| sqs_record(m, &deliveries_arn)).collect();
        let reply = deliver_runtime.invoke(&mut deliver, json!({"Records": records})).await;
        assert_eq!(reply, Reply::Response(json!({"batchItemFailures": []})));
        for msg in batch {
            sqs.delete_message()
                .queue_url(&deliveries_url)
                .receipt_handle(msg.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    drop(deliver);
    assert_eq!(depth(&sqs, &deliveries_url).await, 0, "deliver queued nothing further");
    assert_eq!(depth(&sqs, &deliveries_poison_url).await, 0, "no delivery was poisoned");

    // (3) What Graph, Teams and Exchange received, and what the bucket recorded.
    // The enforce rule closes Defender for Endpoint alerts with evidence in 203.0.113.0/24 up to medium:
    // the low and the medium one; the high one is above the rule's cap.
    let patches = emulator.patches();
    let patched: BTreeSet<&str> = patches.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(patched, BTreeSet::from(["demo-pentest-creds", "demo-pentest-scan"]));
    assert_eq!(patches.len(), 2, "each is closed once");
    for (_, _, body) in &patches {
        assert_eq!(
            body,
            &json!({"status": "resolved", "classification": "informationalExpectedActivity", "determination": "securityTesting"})
        );
    }
    let comments = emulator.comments();
    let commented: BTreeSet<&str> = comments.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(commented, patched, "each closed alert gets the rule's comment");
    assert_eq!(comments.len(), 2);
    assert!(comments.iter().all(|(_, _, text)| text.contains("pentest-2026q4") && text.contains("SEC-1234")));

    // Everything else is told: six alerts reach Teams, the three high ones also e-mail.
    let store = S3Store::new(s3_client(&sdk, true), &name, "secmon");
    let mut audit = Vec::new();
    for stream in store.list_streams("audit/").await.unwrap() {
        for record in store.read_stream(&stream).await.unwrap() {
            audit.push(serde_json::from_slice::<Value>(&record).unwrap());
        }
    }
    let notified: BTreeSet<&str> =
        audit.iter().filter(|r| r["action"] == "notify").filter_map(|r| r["alert_id"].as_str()).collect();
    assert_eq!(notified.len(), 6, "{notified:?}");
    assert_eq!(emulator.teams_messages(TEAMS_SINK).len(), 6);
    let mails = emulator.mails();
    assert_eq!(mails.len(), 3);
    let subjects: Vec<&str> = mails.iter().filter_map(|(_, _, m)| m["message"]["subject"].as_str()).collect();
    assert!(subjects.len() == 3 && subjects.iter().all(|s| s.starts_with("[secmon][contoso][High] ")), "{subjects:?}");

    // Shadow mode records "would close" and changes nothing.
    assert!(audit.iter().any(|r| r["action"] == "would_close" && r["alert_id"] == "demo-dlp-backup"));
    assert!(!patched.contains("demo-dlp-backup"));

    // The audit trail in the bucket verifies, record for record.
    let streams = secmon::audit::verify(&store, None).await.unwrap();
    assert!(!streams.is_empty());
    assert!(streams.iter().all(|s| s.ok()), "{streams:?}");
    assert_eq!(streams.iter().map(|s| s.records).sum::<usize>(), audit.len());

    emulator.shutdown().await;
}
