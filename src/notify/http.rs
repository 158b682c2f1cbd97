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
            Err(e) => (NotifyError::new(what, failure(&e, policy.timeout), Retry::Retryable), None),
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

/// What went wrong with a request that got no answer, in words a person acts on: "timed out after
/// 10s", "connection refused", "connection reset", … reqwest's own text names the URL (which may carry a
/// `sig=`), so it is never used whole; the source chain is searched for what happened.
pub fn failure(e: &reqwest::Error, timeout: std::time::Duration) -> String {
    if e.is_timeout() {
        return timed_out(timeout);
    }
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string().to_ascii_lowercase());
        source = s.source();
    }
    let all = causes.join(": ");
    let known = [
        ("connection refused", "connection refused"),
        ("connection reset", "connection reset"),
        ("broken pipe", "connection reset"),
        ("dns error", "the host name does not resolve"),
        ("failed to lookup", "the host name does not resolve"),
        ("certificate", "TLS certificate refused"),
        ("tls", "TLS handshake failed"),
        ("connection closed before message completed", "connection closed without an answer"),
        ("incomplete message", "connection closed without an answer"),
        ("timed out", "timed out"),
    ];
    if let Some((_, said)) = known.iter().find(|(needle, _)| all.contains(needle)) {
        return if *said == "timed out" { timed_out(timeout) } else { (*said).to_string() };
    }
    if e.is_connect() {
        return "could not connect".to_string();
    }
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the receiver");
    }
    format!("request failed: {}", super::view::clip(&crate::redact::redact(&text), 200))
}

/// "timed out after 10s".
pub fn timed_out(timeout: std::time::Duration) -> String {
    format!("timed out after {}", humantime::format_duration(timeout))
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
