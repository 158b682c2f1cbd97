//! One POST for every receiver that is not Graph, retried by the one policy of [`crate::graph::retry`]:
//! 429 and 503 wait the advised `Retry-After`, other 5xx, 408 and dropped connections back off, anything
//! else is permanent.

use reqwest::header::HeaderMap;

use super::NotifyError;
use crate::graph::Retry;
use crate::graph::retry::{Next, RetryPolicy, retry_after};

/// POSTs `body` to `url` with `headers`, retrying as `policy` says. Returns the final status.
/// `what` names the receiver in errors; the URL never appears in them (it may carry a `sig=`).
pub async fn post(
    http: &reqwest::Client,
    what: &str,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
    policy: &RetryPolicy,
) -> Result<u16, NotifyError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = http.post(url).headers(headers.clone()).body(body.clone()).timeout(policy.timeout).send().await;
        let (error, advised) = match sent {
            Ok(resp) if resp.status().is_success() => return Ok(resp.status().as_u16()),
            Ok(resp) => refused(what, resp).await,
            // reqwest's error text names the URL; drop it.
            Err(e) => (NotifyError::new(what, format!("request failed: {}", e.without_url()), Retry::Retryable), None),
        };
        match policy.next(attempt, error.retry, advised, rand::random::<f64>()) {
            Next::GiveUp => return Err(error),
            Next::RetryAfter { wait, .. } => {
                tracing::warn!("{error}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The error of a non-2xx answer, and the wait the server advised (429/503 with `Retry-After`).
async fn refused(what: &str, resp: reqwest::Response) -> (NotifyError, Option<std::time::Duration>) {
    let status = resp.status().as_u16();
    let advised = retry_after(status, resp.headers(), chrono::Utc::now());
    let text = resp.text().await.unwrap_or_default();
    let throttled = if status == 429 { " (throttled)" } else { "" };
    let message = format!("HTTP {status}{}{throttled}", error_detail(&text));
    (NotifyError::new(what, message, RetryPolicy::classify(status)), advised)
}

/// `: CODE: message` from a Workflows / Logic Apps or Graph error body, else a short excerpt.
fn error_detail(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
        && let Some(e) = v.get("error")
    {
        let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
        let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
        return format!(": {code}: {}", super::view::clip(msg, 300));
    }
    format!(": {}", super::view::clip(text, 200))
}
