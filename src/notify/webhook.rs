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
use super::{Notifier, NotifyError, Payload, SendContext};
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
            None => BUILTIN.to_string(),
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

impl Webhook {
    /// [`Notifier::render`] with the receiver's template (also the built-in one, which
    /// [`builtin_body`] writes without it).
    fn render_template(&self, templates: &Templates, view: &View, alert: &Alert) -> Result<Value, NotifyError> {
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
            v.group.truncate(group_size(max));
            let (raw, not_shown) = cut_alert(alert, max);
            v.evidence_not_shown = not_shown;
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
}

/// The name of the built-in body template.
const BUILTIN: &str = "builtin/webhook.json";

/// How many members of the incident's group a body at cut `max` lists.
fn group_size(max: usize) -> usize {
    max.clamp(1, 100) * 4
}

/// The alert as Graph sent it with at most `max` evidence items (at the last cut, `max == 0`, also a
/// shorter description and only the newest comments), and how many evidence items were left out.
fn cut_alert(alert: &Alert, max: usize) -> (std::borrow::Cow<'_, Value>, usize) {
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
    (raw, evidence.saturating_sub(max))
}

/// The built-in body (`templates/webhook.json`) written straight from the view and the alert, with the
/// same cuts: the same JSON the template writes (a test compares the two; the alert keeps Graph's order
/// of keys, which the template sorted), without the template's copy of the whole alert and without
/// parsing its text back, which were most of a delivery's rendering time. It is written once, to the
/// bytes that are sent.
fn builtin_body(view: &View, alert: &Alert) -> Result<Vec<u8>, String> {
    #[derive(serde::Serialize)]
    struct Decision<'a> {
        action: &'static str,
        why: &'a str,
        routes: &'a [String],
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        source: &'static str,
        schema: u32,
        tenant: &'a str,
        receiver: &'a str,
        decision: Decision<'a>,
        alert: &'a Value,
        evidence_not_shown: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        notice: Option<String>,
        group: &'a [super::view::Member],
    }
    let mut size = 0;
    for max in CUTS {
        let (raw, not_shown) = cut_alert(alert, max);
        let body = Body {
            source: "secmon",
            schema: 1,
            tenant: &view.tenant,
            receiver: &view.receiver,
            decision: Decision { action: "notify", why: &view.why, routes: &view.routes },
            alert: &raw,
            evidence_not_shown: not_shown,
            notice: (not_shown > 0).then(|| format!("{not_shown} more evidence items not shown")),
            group: &view.group[..view.group.len().min(group_size(max))],
        };
        let bytes = serde_json::to_vec(&body).expect("JSON");
        size = bytes.len();
        if size <= MAX_BODY_BYTES {
            return Ok(bytes);
        }
    }
    Err(format!("the body is {size} bytes even without evidence; secmon sends at most {MAX_BODY_BYTES}"))
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
    fn render(&self, templates: &Templates, view: &View, alert: &Alert) -> Result<Payload, NotifyError> {
        if self.template == BUILTIN {
            builtin_body(view, alert).map(Payload::Body).map_err(|m| NotifyError::new(&self.name, m, Retry::Permanent))
        } else {
            self.render_template(templates, view, alert).map(Payload::Json)
        }
    }

    /// The built-in body carries the alert's own `evidence`, not the view's lists; a template may use them.
    fn shows_evidence(&self) -> bool {
        self.template != BUILTIN
    }

    /// POSTs the body, signed at `cx.now`, with the delivery's id.
    async fn send(&self, cx: &SendContext<'_>, body: &Payload) -> Result<u16, NotifyError> {
        let body = body.bytes().into_owned();
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
    use crate::notify::view::Member;

    fn receiver(templates: &mut Templates) -> Webhook {
        let config: WebhookReceiverConfig =
            serde_json::from_value(serde_json::json!({"url": "https://hooks.example.net/x"})).unwrap();
        Webhook::new("tickets", &config, templates, "receivers.tickets").unwrap()
    }

    fn samples() -> Vec<Value> {
        let mut alerts = Vec::new();
        for name in ["alerts_v2-list-response.json", "alerts_v2-list-sentinel-response.json"] {
            let path = format!("{}/tests/fixtures/samples/{name}", env!("CARGO_MANIFEST_DIR"));
            let list: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            alerts.extend(list["value"].as_array().unwrap().iter().cloned());
        }
        alerts
    }

    /// The built-in body written without the template is the template's body (the same JSON value;
    /// only the order of the alert's keys differs: Graph's, where the template sorted them): for the
    /// documented alerts, with a group, with evidence cut for size, and at the last cut (description and
    /// comments shortened).
    #[test]
    fn the_builtin_body_without_the_template_is_the_templates_body() {
        let mut templates = Templates::new();
        let hook = receiver(&mut templates);
        let mut alerts = samples();
        assert!(alerts.len() >= 2, "the samples hold alerts");
        // Evidence that does not fit the body limit whole (cut to 1000, 250, ... items).
        let mut big = alerts[0].clone();
        let item = big["evidence"][0].clone();
        big["evidence"] = Value::Array(vec![item; 3000]);
        big["evidence"][0]["padding"] = Value::String("x".repeat(400));
        for e in big["evidence"].as_array_mut().unwrap() {
            e["note"] = Value::String("y".repeat(300));
        }
        alerts.push(big);
        // So large even without evidence that only the last cut fits.
        let mut huge = alerts[0].clone();
        huge["description"] = Value::String("d".repeat(2_000_000));
        huge["comments"] = Value::Array((0..40).map(|i| serde_json::json!({"comment": format!("c{i}")})).collect());
        alerts.push(huge);
        let mut cut = 0;
        for raw in alerts {
            let alert = Alert::from_value(raw).unwrap();
            let mut view = View::new("contoso", "tickets", &alert);
            view.why = "new alert".into();
            view.routes = vec!["routes[0]".into(), "soc".into()];
            view.group = (0..500)
                .map(|i| Member {
                    id: format!("da{i}"),
                    title: format!("member \"{i}\" <b>"),
                    severity: "high".into(),
                    url: (i % 2 == 0).then(|| format!("https://security.microsoft.com/alerts/da{i}")),
                })
                .collect();
            let bytes = builtin_body(&view, &alert).unwrap();
            let bare = View {
                group: view.group.clone(),
                why: view.why.clone(),
                routes: view.routes.clone(),
                ..View::without_evidence("contoso", "tickets", &alert)
            };
            assert_eq!(builtin_body(&bare, &alert).unwrap(), bytes, "the built-in body shows no view evidence");
            assert!(!hook.shows_evidence());
            let direct: Value = serde_json::from_slice(&bytes).unwrap();
            let templated = hook.render_template(&templates, &view, &alert).unwrap();
            assert_eq!(direct, templated);
            let keys = |v: &Value| v["alert"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&direct), alert.raw().as_object().unwrap().keys().cloned().collect::<Vec<_>>());
            cut += usize::from(direct["evidence_not_shown"].as_u64().unwrap() > 0);
            assert_eq!(
                hook.render(&templates, &view, &alert).unwrap(),
                Payload::Body(bytes),
                "render takes the direct path"
            );
        }
        assert_eq!(cut, 2, "the two large alerts were cut");
    }

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
