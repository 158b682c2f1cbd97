//! One POST with the retry policy every non-Graph receiver shares: 429 waits the advised
//! `Retry-After`, 5xx/408 and dropped connections back off, anything else is permanent.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::NotifyError;
use crate::graph::Retry;

/// How hard a receiver tries within one delivery before the queue takes over.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The longest wait secmon accepts from `Retry-After`; a longer one is left to the queue.
    pub max_wait: Duration,
    /// The wait after a 5xx or a dropped connection (doubled each time).
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 3, max_wait: Duration::from_secs(60), backoff: Duration::from_secs(1) }
    }
}

/// What one attempt came to.
enum Attempt {
    Done(u16),
    Again { wait: Duration, error: NotifyError },
    Fail(NotifyError),
}

/// POSTs `body` to `url` with `headers`, retrying as [`RetryPolicy`] says. Returns the final status.
/// `what` names the receiver in errors; the URL never appears in them (it may carry a `sig=`).
pub async fn post(
    http: &reqwest::Client,
    what: &str,
    url: &str,
    headers: HeaderMap,
    body: Vec<u8>,
    policy: RetryPolicy,
) -> Result<u16, NotifyError> {
    let mut backoff = policy.backoff;
    let mut attempt = 1;
    loop {
        let sent = http.post(url).headers(headers.clone()).body(body.clone()).send().await;
        let outcome = match sent {
            Ok(resp) => judge(what, resp, &mut backoff).await,
            Err(e) => {
                // reqwest's error text names the URL; drop it.
                let error = NotifyError::new(what, format!("request failed: {}", e.without_url()), Retry::Retryable);
                let wait = backoff;
                backoff *= 2;
                Attempt::Again { wait, error }
            }
        };
        match outcome {
            Attempt::Done(status) => return Ok(status),
            Attempt::Fail(error) => return Err(error),
            Attempt::Again { wait, error } => {
                if attempt >= policy.attempts || wait > policy.max_wait {
                    return Err(error);
                }
                tracing::warn!("{error}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

async fn judge(what: &str, resp: reqwest::Response, backoff: &mut Duration) -> Attempt {
    let status = resp.status();
    if status.is_success() {
        return Attempt::Done(status.as_u16());
    }
    let retry_after = retry_after(resp.headers());
    let text = resp.text().await.unwrap_or_default();
    let detail = error_detail(&text);
    let message = format!("HTTP {}{detail}", status.as_u16());
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            // No advice: wait as long as a second 5xx would, but at least a few seconds.
            let wait = retry_after.unwrap_or((*backoff).max(Duration::from_secs(5)));
            let error =
                NotifyError::new(what, format!("{message} (throttled; advised wait {wait:?})"), Retry::Retryable);
            Attempt::Again { wait, error }
        }
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => {
            let wait = retry_after.unwrap_or(*backoff);
            *backoff *= 2;
            Attempt::Again { wait, error: NotifyError::new(what, message, Retry::Retryable) }
        }
        _ => Attempt::Fail(NotifyError::new(what, message, Retry::Permanent)),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare from these services and read as absent).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
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
