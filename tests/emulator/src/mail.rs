//! `POST /v1.0/users/{sender}/sendMail`: validates the documented body, records it, answers 202.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::state::{AppState, MAIL_SEND_ROLES, graph_error};

/// Checks a recipient list: an array of `{"emailAddress":{"address":"…@…"}}`.
fn check_recipients(message: &Value, field: &str, required: bool) -> Result<(), (&'static str, String)> {
    let Some(list) = message.get(field) else {
        return if required {
            Err((
                "ErrorInvalidRecipients",
                "At least one recipient is not valid., Recipient '' is not resolved. All recipients must be resolved before a message can be submitted.".into(),
            ))
        } else {
            Ok(())
        };
    };
    let items = list.as_array().ok_or(("RequestBodyRead", format!("Property '{field}' must be an array.")))?;
    if required && items.is_empty() {
        return Err(("ErrorInvalidRecipients", "At least one recipient is required.".into()));
    }
    for item in items {
        let address = item.pointer("/emailAddress/address").and_then(Value::as_str).unwrap_or("");
        if !address.contains('@') || address.starts_with('@') || address.ends_with('@') {
            return Err((
                "ErrorInvalidRecipients",
                format!("At least one recipient is not valid., Recipient '{address}' is not resolved."),
            ));
        }
    }
    Ok(())
}

/// Validates a sendMail body against the documented shape.
pub(crate) fn validate_send_mail(body: &Value) -> Result<(), (&'static str, String)> {
    let read = |m: &str| ("RequestBodyRead", m.to_string());
    let top = body.as_object().ok_or_else(|| read("The request body must be a JSON object."))?;
    for key in top.keys() {
        if key != "message" && key != "saveToSentItems" {
            return Err(read(&format!("The property '{key}' does not exist on type 'microsoft.graph.sendMail'.")));
        }
    }
    let message =
        top.get("message").filter(|m| m.is_object()).ok_or_else(|| read("The 'message' parameter is required."))?;
    if !message.get("subject").is_some_and(Value::is_string) {
        return Err(read("Property 'message.subject' must be a string."));
    }
    let content_type = message.pointer("/body/contentType").and_then(Value::as_str).unwrap_or("");
    // Graph's enum parsing is case-insensitive ("text", "Text", "HTML" all work).
    if !content_type.eq_ignore_ascii_case("text") && !content_type.eq_ignore_ascii_case("html") {
        return Err(read(&format!(
            "Requested value '{content_type}' was not found for 'message.body.contentType' (Text or HTML)."
        )));
    }
    if !message.pointer("/body/content").is_some_and(Value::is_string) {
        return Err(read("Property 'message.body.content' must be a string."));
    }
    check_recipients(message, "toRecipients", true)?;
    check_recipients(message, "ccRecipients", false)?;
    check_recipients(message, "bccRecipients", false)?;
    match top.get("saveToSentItems") {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") => Ok(()),
        Some(other) => Err(read(&format!("Cannot convert '{other}' to Edm.Boolean for 'saveToSentItems'."))),
    }
}

/// `POST /v1.0/users/{sender}/sendMail`.
pub(crate) async fn send_mail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sender): Path<String>,
    body: Bytes,
) -> Response {
    let token = match state.authorize(&headers, &MAIL_SEND_ROLES) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(StatusCode::BAD_REQUEST, "RequestBodyRead", "Unable to read JSON request payload.");
    };
    if let Err((code, message)) = validate_send_mail(&body) {
        return graph_error(StatusCode::BAD_REQUEST, code, &message);
    }
    state.lock().mails.push((token.tenant, sender, body));
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_sample_is_valid() {
        let sample: Value = serde_json::from_str(include_str!("../../fixtures/samples/sendmail-request.json")).unwrap();
        assert!(validate_send_mail(&sample).is_ok());
    }

    #[test]
    fn broken_bodies_are_rejected() {
        let good = json!({"message": {"subject": "s", "body": {"contentType": "HTML", "content": "<b>x</b>"},
            "toRecipients": [{"emailAddress": {"address": "a@contoso.com"}}]}, "saveToSentItems": false});
        assert!(validate_send_mail(&good).is_ok());
        let mut cases = Vec::new();
        let mut b = good.clone();
        b["message"]["body"]["contentType"] = json!("markdown");
        cases.push(b);
        let mut b = good.clone();
        b["message"]["toRecipients"] = json!([]);
        cases.push(b);
        let mut b = good.clone();
        b["message"]["toRecipients"] = json!([{"emailAddress": {"address": "nobody"}}]);
        cases.push(b);
        let mut b = good.clone();
        b["saveToSentItems"] = json!("maybe");
        cases.push(b);
        let mut b = good.clone();
        b["message"].as_object_mut().unwrap().remove("subject");
        cases.push(b);
        let mut b = good.clone();
        b["extra"] = json!(1);
        cases.push(b);
        for case in cases {
            assert!(validate_send_mail(&case).is_err(), "{case} should be rejected");
        }
    }
}
