//! Receivers for secmon's outgoing notifications: a Teams Workflows trigger and a generic webhook sink.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::state::{AppState, json_response};

/// Teams rejects messages larger than 28 KB; taken here as 28 × 1024 bytes of request body.
pub(crate) const TEAMS_MAX_BYTES: usize = 28 * 1024;

/// A Logic Apps / Workflows style error body.
fn workflow_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &json!({"error": {"code": code, "message": message}}))
}

/// Checks the Workflows "post card" payload: a message with at least one Adaptive Card attachment.
fn check_card_message(body: &Value) -> Result<(), String> {
    if body.get("type").and_then(Value::as_str) != Some("message") {
        return Err("The property 'type' must be 'message'.".into());
    }
    let attachments = body
        .get("attachments")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("The property 'attachments' must be a non-empty array.")?;
    for a in attachments {
        if a.get("contentType").and_then(Value::as_str) != Some("application/vnd.microsoft.card.adaptive") {
            return Err("Each attachment must have contentType 'application/vnd.microsoft.card.adaptive'.".into());
        }
        let content = a.get("content").ok_or("Each attachment needs a 'content' Adaptive Card.")?;
        if content.get("type").and_then(Value::as_str) != Some("AdaptiveCard") {
            return Err("The attachment content must be an object with type 'AdaptiveCard'.".into());
        }
        if !content.get("body").is_none_or(Value::is_array) {
            return Err("The Adaptive Card 'body' must be an array.".into());
        }
    }
    Ok(())
}

/// `POST /workflows/{name}/triggers/manual/paths/invoke?api-version=…&sig=…`.
pub(crate) async fn teams(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let expected = state.lock().workflows.get(&name).map(|w| w.sig.clone());
    let Some(expected) = expected else {
        return workflow_error(
            StatusCode::NOT_FOUND,
            "WorkflowNotFound",
            &format!("The workflow '{name}' could not be found."),
        );
    };
    if params.get("sig") != Some(&expected) {
        return workflow_error(
            StatusCode::UNAUTHORIZED,
            "DirectApiInvalidAuthorizationSignature",
            "The provided authorization signature is not valid.",
        );
    }
    if body.len() > TEAMS_MAX_BYTES {
        return workflow_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MessageSizeExceeded",
            &format!("The message is {} bytes; the limit is {TEAMS_MAX_BYTES} bytes.", body.len()),
        );
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return workflow_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content is not valid JSON.",
        );
    };
    if let Err(why) = check_card_message(&message) {
        return workflow_error(StatusCode::BAD_REQUEST, "TriggerInputSchemaMismatch", &why);
    }
    if let Some(w) = state.lock().workflows.get_mut(&name) {
        w.messages.push(message);
    }
    StatusCode::ACCEPTED.into_response()
}

/// `POST /sink/{name}`: records headers and the raw body, answers 200.
pub(crate) async fn webhook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    state.lock().sinks.entry(name).or_default().push((headers, body.to_vec()));
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_card_sample_is_accepted() {
        let sample: Value =
            serde_json::from_str(include_str!("../../fixtures/samples/functions-teams-webhook-adaptive-card.json"))
                .unwrap();
        assert!(check_card_message(&sample).is_ok());
        assert!(check_card_message(&json!({"text": "hello"})).is_err());
        assert!(check_card_message(&json!({"type": "message", "attachments": []})).is_err());
        assert!(
            check_card_message(&json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": {"type": "MessageCard"}}]}))
                .is_err()
        );
    }
}
