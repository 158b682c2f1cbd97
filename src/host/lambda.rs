//! AWS Lambda: the same functions on `lambda_runtime`, for organisations that host on AWS.
//!
//! One binary serves every function. Lambda starts it with `AWS_LAMBDA_RUNTIME_API` set (that is how
//! it knows where it runs) and `_HANDLER` set to the function's `Handler` from the SAM template, which
//! names the secmon function it serves:
//!
//! | `Handler` | trigger | calls |
//! |---|---|---|
//! | `poll-alerts` | EventBridge schedule | [`functions::poll_alerts`] |
//! | `reconcile-alerts` | EventBridge schedule | [`functions::reconcile_alerts`] |
//! | `graph-subscriptions` | EventBridge schedule | [`functions::graph_subscriptions`] |
//! | `respond` | SQS (`alerts`), `ReportBatchItemFailures` | [`functions::respond`] per record |
//! | `deliver` | SQS (`deliveries`), `ReportBatchItemFailures` | [`functions::deliver`] per record |
//! | `http` | Function URL (`lambda_http`) | [`functions::router`]: `/api/{function}` |
//!
//! A record that fails in a way a retry may fix is listed in `batchItemFailures`, so SQS redelivers it
//! alone and, after the redrive policy's `maxReceiveCount`, moves it to its queue's poison queue
//! (`alerts-poison`, `deliveries-poison`). A record that can never be processed is moved there at once
//! by the same logic as the Functions queue trigger. Nothing is dropped.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

use crate::app::App;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::functions::{self, Outcome, Timer};
use crate::graph::Graph;
use crate::store::aws::AwsSettings;
use crate::store::{ALERTS_QUEUE, poison_name};

/// The secmon function one Lambda function serves, named by its `Handler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `poll-alerts`: the polling timer.
    PollAlerts,
    /// `reconcile-alerts`: the reconciliation timer.
    ReconcileAlerts,
    /// `graph-subscriptions`: the subscription-keeping timer.
    GraphSubscriptions,
    /// `sweep`: the retention timer.
    Sweep,
    /// `respond`: the `alerts` queue.
    Respond,
    /// `deliver`: the `deliveries` queue.
    Deliver,
    /// `http`: the webhook, lifecycle, doorbell, health and bot-messages endpoints behind a Function URL.
    Http,
}

impl Function {
    /// Every Lambda handler.
    pub const ALL: [Function; 7] = [
        Function::PollAlerts,
        Function::ReconcileAlerts,
        Function::GraphSubscriptions,
        Function::Sweep,
        Function::Respond,
        Function::Deliver,
        Function::Http,
    ];

    /// The function named by a Lambda `Handler` (`_HANDLER`).
    pub fn from_handler(handler: &str) -> Result<Self, String> {
        let handler = handler.trim();
        Function::ALL.into_iter().find(|f| f.name() == handler).ok_or_else(|| {
            let names: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
            format!("_HANDLER is {handler:?}; set the Lambda function's Handler to one of {}", names.join(", "))
        })
    }

    /// The secmon function name, as in Azure (`poll-alerts`, `respond`, …); `http` serves every HTTP
    /// function.
    pub fn name(self) -> &'static str {
        match self {
            Function::PollAlerts => functions::Function::PollAlerts.name(),
            Function::ReconcileAlerts => functions::Function::ReconcileAlerts.name(),
            Function::GraphSubscriptions => functions::Function::GraphSubscriptions.name(),
            Function::Sweep => functions::Function::Sweep.name(),
            Function::Respond => functions::Function::Respond.name(),
            Function::Deliver => functions::Function::Deliver.name(),
            Function::Http => "http",
        }
    }
}

/// Whether this process was started by Lambda (the Runtime API address is in the environment).
pub fn in_lambda(env: &dyn Fn(&str) -> Option<String>) -> bool {
    env("AWS_LAMBDA_RUNTIME_API").is_some_and(|v| !v.is_empty())
}

/// A failed invocation, as reported to the Runtime API (`errorType`, `errorMessage`); redacted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LambdaFailure(String);

impl LambdaFailure {
    fn new(message: &str) -> Self {
        Self(crate::redact::redact(message))
    }
}

impl From<LambdaFailure> for lambda_runtime::Diagnostic {
    fn from(f: LambdaFailure) -> Self {
        lambda_runtime::Diagnostic { error_type: "secmon::Failure".into(), error_message: f.0 }
    }
}

/// Serves `function` from the Lambda Runtime API until `shutdown` resolves (Lambda itself stops the
/// process with SIGTERM when it retires the execution environment).
pub async fn run(
    app: App,
    function: Function,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), lambda_runtime::Error> {
    tokio::select! {
        result = serve(app, function) => result,
        () = shutdown => Ok(()),
    }
}

async fn serve(app: App, function: Function) -> Result<(), lambda_runtime::Error> {
    tracing::info!(function = function.name(), "secmon on AWS Lambda");
    match function {
        // The same routes as standalone mode; lambda_http turns the Function URL event (base64 body
        // included) into a plain HTTP request for them.
        Function::Http => lambda_http::run(functions::router(app)).await,
        Function::Respond | Function::Deliver => {
            let queued =
                if function == Function::Deliver { functions::Function::Deliver } else { functions::Function::Respond };
            lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
                let app = app.clone();
                async move { Ok::<_, LambdaFailure>(on_sqs_for(&app, queued, event.payload).await) }
            }))
            .await
        }
        Function::PollAlerts | Function::ReconcileAlerts | Function::GraphSubscriptions | Function::Sweep => {
            lambda_runtime::run(service_fn(move |event: LambdaEvent<EventBridgeEvent<Value>>| {
                let app = app.clone();
                async move { on_schedule(&app, function, event.payload, Some(event.context.request_id)).await }
            }))
            .await
        }
    }
}

/// Reads the secret `arn` from Secrets Manager: a JSON object of `NAME: value` pairs that the config's
/// `${NAME}` references may use (Graph client secrets, the Teams URL, HMAC keys). Every value is
/// registered with [`crate::redact`], so none reaches a log.
pub async fn secrets_from_manager(arn: &str) -> Result<HashMap<String, String>, String> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let out = aws_sdk_secretsmanager::Client::new(&sdk)
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| format!("read secret {arn}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))?;
    let text = out.secret_string().ok_or_else(|| format!("secret {arn} has no SecretString"))?;
    let map: HashMap<String, String> = serde_json::from_str(text)
        .map_err(|e| format!("secret {arn} must be a JSON object of string values (NAME: value): {e}"))?;
    for value in map.values() {
        crate::redact::global().add(value);
    }
    Ok(map)
}

/// Builds the state from the Lambda environment: `SECMON_CONFIG` (with `${NAME}` taken from the secret
/// `SECMON_SECRETS_ARN` first, then the environment), the S3 + SQS store ([`AwsSettings`]), and the
/// Graph client `make_graph` builds from the config.
pub async fn app_from_env(make_graph: impl FnOnce(&Config) -> Result<Arc<dyn Graph>, String>) -> Result<App, String> {
    let secrets = match std::env::var("SECMON_SECRETS_ARN") {
        Ok(arn) if !arn.is_empty() => secrets_from_manager(&arn).await?,
        _ => HashMap::new(),
    };
    let env = |name: &str| secrets.get(name).cloned().or_else(|| std::env::var(name).ok());
    crate::redact::register_environment(&env);
    let file = PathBuf::from(env("SECMON_CONFIG").unwrap_or_else(|| "secmon.yaml".into()));
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let loaded = crate::setup::load_str(&text, &file, &env, chrono::Utc::now()).map_err(|e| e.to_string())?;
    for w in &loaded.warnings {
        tracing::warn!("{}", loaded.render(w));
    }
    match env("SECMON_STORE").as_deref() {
        None | Some("aws") => {}
        Some(other) => return Err(format!("SECMON_STORE is {other:?}; on AWS Lambda only \"aws\" is supported")),
    }
    let settings = AwsSettings::from_env(&env)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (store, queue) = settings.connect(clock.clone()).await;
    let graph = make_graph(&loaded.config)?;
    let http = crate::setup::http_client().map_err(|e| e.to_string())?;
    App::builder(loaded.config)
        .store(store)
        .queue(queue)
        .graph(graph)
        .http(http)
        .clock(clock)
        .build()
        .map_err(|e| e.to_string())
}

/// Runs a timer function for one EventBridge scheduled event; a failure is reported to Lambda, which
/// retries the asynchronous invocation (and the next schedule polls again from the same watermark).
pub async fn on_schedule(
    app: &App,
    function: Function,
    event: EventBridgeEvent<Value>,
    request_id: Option<String>,
) -> Result<Value, LambdaFailure> {
    let now = app.clock.now();
    // EventBridge has no "past due": a schedule that could not invoke is retried, then dropped by
    // EventBridge; the watermark makes the next run catch up either way.
    let outcome = match function {
        Function::PollAlerts => functions::poll_alerts(app, Timer::default(), now).await,
        Function::ReconcileAlerts => functions::reconcile_alerts(app, Timer::default(), now).await,
        Function::GraphSubscriptions => functions::graph_subscriptions(app, Timer::default(), now).await,
        Function::Sweep => functions::sweep(app, Timer::default(), now).await,
        other => return Err(LambdaFailure::new(&format!("{} is not a timer function", other.name()))),
    };
    let request = request_id.as_deref().unwrap_or("-");
    match outcome {
        Outcome::Done { logs, value } => Ok(json!({"logs": logs, "returnValue": value})),
        Outcome::Retry(message) | Outcome::Poison(message) => {
            tracing::error!(function = function.name(), request, event = ?event.id, "invocation failed: {message}");
            Err(LambdaFailure::new(&message))
        }
    }
}

/// The bytes that were queued, from one SQS record (undoing the store's base64 for binary bodies).
pub fn record_body(record: &SqsMessage) -> Result<Vec<u8>, String> {
    let encoding =
        record.message_attributes.get(crate::store::aws::ENCODING_ATTRIBUTE).and_then(|a| a.string_value.as_deref());
    crate::store::aws::decode_body(record.body.as_deref().unwrap_or_default(), encoding).map_err(|e| e.to_string())
}

/// Runs `respond` for every record of an SQS batch of the `alerts` queue and lists the records to retry.
pub async fn on_sqs(app: &App, event: SqsEvent) -> SqsBatchResponse {
    on_sqs_for(app, functions::Function::Respond, event).await
}

/// Runs queue function `function` (`respond` or `deliver`) for every record of an SQS batch of its
/// queue and lists the records to retry.
///
/// Records are independent: one failure never fails the batch. A record that can never be processed
/// (including one whose body cannot be decoded) is moved to the poison queue and counts as handled.
pub async fn on_sqs_for(app: &App, function: functions::Function, event: SqsEvent) -> SqsBatchResponse {
    let poison = poison_name(function.queue().unwrap_or(ALERTS_QUEUE));
    let mut failures = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let dequeue_count: Option<u32> = record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok());
        // An undecodable body is still kept whole: `respond` sees the raw text, cannot parse it, and
        // poisons it.
        let body = record_body(&record).unwrap_or_else(|reason| {
            tracing::warn!(message_id = %id, "record body: {reason}");
            record.body.clone().unwrap_or_default().into_bytes()
        });
        let retry = |message: &str| {
            let message = crate::redact::redact(message);
            tracing::error!(message_id = %id, dequeue_count, "record failed, SQS will redeliver it: {message}");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id.clone();
            failure
        };
        match function.on_message(app, &body, app.clock.now()).await {
            Outcome::Done { logs, .. } => {
                for line in &logs {
                    tracing::info!(message_id = %id, "{line}");
                }
            }
            // Retrying cannot help: set it aside now and report it handled, so SQS deletes the original.
            Outcome::Poison(reason) => match app.queue.send(&poison, &body).await {
                Ok(()) => tracing::error!(message_id = %id, "record moved to the poison queue: {reason}"),
                Err(e) => failures.push(retry(&format!("could not poison ({reason}): {e}"))),
            },
            Outcome::Retry(reason) => failures.push(retry(&reason)),
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_name_the_functions() {
        for f in [
            Function::PollAlerts,
            Function::ReconcileAlerts,
            Function::GraphSubscriptions,
            Function::Sweep,
            Function::Respond,
            Function::Deliver,
            Function::Http,
        ] {
            assert_eq!(Function::from_handler(f.name()), Ok(f));
        }
        let err = Function::from_handler("bootstrap").unwrap_err();
        assert!(err.contains("bootstrap") && err.contains("poll-alerts"), "{err}");
    }

    #[test]
    fn lambda_is_detected_from_the_runtime_api_variable() {
        assert!(in_lambda(&|k| (k == "AWS_LAMBDA_RUNTIME_API").then(|| "127.0.0.1:9001".into())));
        assert!(!in_lambda(&|_| None));
        assert!(!in_lambda(&|_| Some(String::new())));
    }
}
