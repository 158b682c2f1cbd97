//! A generic JSON webhook for ticketing systems and SOAR tools: the alert and the decision, signed.
//!
//! Headers: `X-Secmon-Timestamp: <unix seconds>` and
//! `X-Secmon-Signature: sha256=<hex HMAC-SHA256 over "{timestamp}.{body}">`; `X-Secmon-Delivery` is the
//! same for every retry of one delivery, so a receiver can drop duplicates. See `docs/notifications.md`.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use sha2::Sha256;

use super::http::post;
use super::template::{RenderError, Templates};
use super::view::{View, clip};
use super::{Notifier, NotifyError, SendContext};
use crate::alert::Alert;
use crate::config::Issue;
use crate::graph::Retry;
use crate::graph::retry::RetryPolicy;

pub use crate::config::receivers::{MIN_SECRET_BYTES, WebhookReceiverConfig};

/// The largest body secmon posts, in bytes: a little under the 1 MiB that common reverse proxies accept
/// by default (nginx's `client_max_body_size`), which ticketing and SOAR endpoints often sit behind.
pub const MAX_BODY_BYTES: usize = 1_000_000;
/// How many items of the raw alert's `evidence` a body tries (all first), then fewer until it renders
/// within the template fuel and fits in [`MAX_BODY_BYTES`]; the rest is counted in `evidence_not_shown`.
const CUTS: [usize; 7] = [usize::MAX, 1000, 250, 100, 25, 5, 0];
/// Comments a body keeps at the last cut (the newest).
const LAST_COMMENTS: usize = 10;
/// Characters of the description a body keeps at the last cut.
const LAST_DESCRIPTION_CHARS: usize = 1_500;

/// A built webhook receiver.
#[derive(Debug, Clone)]
pub struct Webhook {
    name: String,
    url: String,
    secret: Option<String>,
    template: String,
    /// How hard a send tries before the queue takes over.
    pub retry: RetryPolicy,
}

impl Webhook {
    /// Builds the receiver `name`, compiling its template override (errors at `path`).
    pub fn new(
        name: &str,
        config: &WebhookReceiverConfig,
        templates: &mut Templates,
        path: &str,
    ) -> Result<Webhook, Issue> {
        let template = match &config.template {
            Some(source) => {
                let tname = format!("{name}/webhook.json");
                templates
                    .add(&tname, source)
                    .map_err(|e| Issue::error(format!("{path}.webhook.template"), format!("does not compile: {e}")))?;
                tname
            }
            None => "builtin/webhook.json".to_string(),
        };
        if let Some(s) = &config.secret {
            crate::redact::global().add(s);
        }
        Ok(Webhook {
            name: name.to_string(),
            url: config.url.clone(),
            secret: config.secret.clone(),
            template,
            retry: RetryPolicy { timeout: config.timeout, ..RetryPolicy::receivers() },
        })
    }
}

#[async_trait]
impl Notifier for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    /// The JSON body for `view` and the alert as Graph sent it; checked to be JSON. When it needs more
    /// than the template fuel or is larger than [`MAX_BODY_BYTES`], the alert's evidence (and the
    /// view's lists) are cut further and `evidence_not_shown` counts what was left out; the last cut also
    /// shortens the description and keeps only the newest comments.
    fn render(&self, templates: &Templates, view: &View, alert: &Alert) -> Result<Value, NotifyError> {
        let permanent = |m: String| NotifyError::new(&self.name, m, Retry::Permanent);
        let mut why = String::new();
        /// What the template sees: the view's fields and `alert`, the alert as Graph sent it (borrowed
        /// unless a cut shortens it: the template's context is built from it directly).
        #[derive(serde::Serialize)]
        struct Context<'a> {
            #[serde(flatten)]
            view: &'a View,
            alert: &'a Value,
        }
        for max in CUTS {
            let mut v = view.clone();
            v.cut(max);
            v.group.truncate(max.clamp(1, 100) * 4);
            let evidence = alert.raw().get("evidence").and_then(Value::as_array).map_or(0, Vec::len);
            let mut raw = std::borrow::Cow::Borrowed(alert.raw());
            if evidence > max || max == 0 {
                let raw = raw.to_mut();
                if let Some(Value::Array(evidence)) = raw.get_mut("evidence") {
                    evidence.truncate(max);
                }
                if max == 0 {
                    if let Some(Value::String(d)) = raw.get_mut("description") {
                        *d = clip(d, LAST_DESCRIPTION_CHARS);
                    }
                    if let Some(Value::Array(comments)) = raw.get_mut("comments") {
                        let drop = comments.len().saturating_sub(LAST_COMMENTS);
                        comments.drain(..drop);
                    }
                }
            }
            v.evidence_not_shown = evidence.saturating_sub(max);
            let ctx = Context { view: &v, alert: &raw };
            let text = match templates.try_render(&self.template, &ctx) {
                Ok(text) => text,
                Err(RenderError::OutOfFuel(e)) => {
                    why = format!("needs more template fuel than {} allows ({e})", super::template::FUEL);
                    continue;
                }
                Err(RenderError::Failed(e)) => return Err(permanent(format!("body template: {e}"))),
            };
            let body: Value = serde_json::from_str(&text)
                .map_err(|e| permanent(format!("body template did not produce JSON: {e}")))?;
            let size = serde_json::to_vec(&body).expect("JSON").len();
            if size <= MAX_BODY_BYTES {
                return Ok(body);
            }
            why = format!("is {size} bytes; secmon sends at most {MAX_BODY_BYTES}");
        }
        Err(permanent(format!("the body {why} even without evidence: shorten the template")))
    }

    /// POSTs the body, signed at `cx.now`, with the delivery's id.
    async fn send(&self, cx: &SendContext<'_>, body: &Value) -> Result<u16, NotifyError> {
        let body = serde_json::to_vec(body).expect("JSON");
        let timestamp = cx.now.timestamp().to_string();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let header = |v: &str| HeaderValue::from_str(v).expect("ASCII header value");
        headers.insert(HeaderName::from_static("x-secmon-timestamp"), header(&timestamp));
        headers.insert(HeaderName::from_static("x-secmon-delivery"), header(cx.delivery));
        if let Some(secret) = &self.secret {
            headers.insert(HeaderName::from_static("x-secmon-signature"), header(&sign(secret, &timestamp, &body)));
        }
        post(cx.http, &self.name, &self.url, headers, body, &self.retry).await
    }
}

/// `sha256=<hex HMAC-SHA256 over "{timestamp}.{body}">`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_computation() {
        // Computed with Python: hmac.new(key, b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            sign("0123456789abcdef-secret", "1700000000", br#"{"a":1}"#),
            "sha256=6948a2dc6985c92d09b9edade5c97dce2ba201452d91a72e4a20d35abe4d3420"
        );
        assert_ne!(
            sign("0123456789abcdef-secret", "1700000001", br#"{"a":1}"#),
            sign("0123456789abcdef-secret", "1700000000", br#"{"a":1}"#)
        );
    }
}
