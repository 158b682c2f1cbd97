//! The pipeline for one queue message: decide → claim → act → record.
//!
//! A message is an alert version (decide with the rules, close and/or notify), a doorbell (poll the
//! tenant now), or a lookup (fetch one alert, then as an alert version). Every effect is claimed in the
//! store before it is performed, so a redelivered message never closes or notifies twice, and audited
//! after it.

pub mod deliver;

use crate::app::App;
use crate::host::azure::{Failure, Invocation, Outcome};
use crate::intake::{Message, MessageError};
use crate::store::{ALERTS_QUEUE, poison_name};

/// Why a message was not processed.
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// The message can never be processed: it is set aside on the poison queue.
    #[error("unprocessable: {0}")]
    Malformed(String),
    /// Processing failed in a way a retry may fix: leave the message on the queue.
    #[error("retry: {0}")]
    Retry(String),
}

impl From<MessageError> for RespondError {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::Malformed(m) => RespondError::Malformed(m),
            MessageError::Store(s) => RespondError::Retry(s.to_string()),
        }
    }
}

/// The queue-trigger function: handles one message body.
pub async fn on_queue(app: &App, inv: Invocation<Vec<u8>>) -> Result<Outcome, Failure> {
    match handle_body(app, &inv.data).await {
        Ok(summary) => Ok(Outcome { logs: vec![summary], ..Default::default() }),
        Err(RespondError::Malformed(reason)) => {
            // Retrying cannot help; the host would retry five times and then poison it anyway.
            // Set it aside now, and succeed so the host deletes the original.
            app.queue
                .send(&poison_name(ALERTS_QUEUE), &inv.data)
                .await
                .map_err(|e| Failure::Failed(format!("could not poison an unreadable message: {e}")))?;
            tracing::error!("message moved to {}: {reason}", poison_name(ALERTS_QUEUE));
            Ok(Outcome {
                logs: vec![format!("unreadable message moved to the poison queue: {reason}")],
                ..Default::default()
            })
        }
        Err(RespondError::Retry(reason)) => Err(Failure::Failed(reason)),
    }
}

/// Parses and processes one queue body; returns a one-line summary.
pub async fn handle_body(app: &App, body: &[u8]) -> Result<String, RespondError> {
    let message = Message::parse(body)?.resolve(app.store.as_ref()).await?;
    process(app, message).await
}

/// Processes one message.
pub async fn process(app: &App, message: Message) -> Result<String, RespondError> {
    let now = app.clock.now();
    match message {
        Message::Poll { tenant, reason } => {
            let report = crate::intake::poll::poll_tenant(app, &tenant, now)
                .await
                .map_err(|e| RespondError::Retry(e.to_string()))?;
            Ok(format!("polled {tenant} ({reason}): {} new alert versions", report.queued))
        }
        Message::Lookup { tenant, alert_id } => {
            let alert = app.graph.get_alert(&tenant, &alert_id).await.map_err(|e| match e.retry {
                crate::graph::Retry::Retryable => RespondError::Retry(e.to_string()),
                crate::graph::Retry::Permanent => RespondError::Malformed(e.to_string()),
            })?;
            process_alert(app, &tenant, alert).await
        }
        Message::Alert { tenant, alert } => process_alert(app, &tenant, alert).await,
        Message::AlertRef { key, .. } => Err(RespondError::Malformed(format!("unresolved alert reference {key}"))),
    }
}

/// Decides and acts on one alert version.
pub async fn process_alert(app: &App, tenant: &str, alert: serde_json::Value) -> Result<String, RespondError> {
    let _ = (app, tenant, alert);
    Err(RespondError::Retry("alert processing is not built yet".into()))
}
