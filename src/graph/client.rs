//! The real [`Graph`]: one reqwest client, one retry policy, a token bucket per tenant.
//!
//! Every request carries `Authorization: Bearer …` and `Prefer: include-unknown-enum-members`.
//! `@odata.nextLink` is followed as an opaque URL, but only to the Graph host we were configured
//! with: the bearer token never goes anywhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::auth::Auth;
use super::retry::{Buckets, Next, RetryPolicy, Sleeper, TokioSleeper, retry_after};
use super::{AlertPage, AlertQuery, AlertUpdate, CallStats, Graph, GraphError, Retry};
use crate::config::Config;

/// The `Prefer` value that makes Graph send evolvable enum members as themselves.
pub const PREFER: &str = "include-unknown-enum-members";

/// Microsoft Graph over HTTP.
pub struct GraphClient {
    http: reqwest::Client,
    base: url::Url,
    auth: Arc<Auth>,
    policy: RetryPolicy,
    sleeper: Arc<dyn Sleeper>,
    buckets: Buckets,
    stats: Mutex<HashMap<String, CallStats>>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// The versioned Graph root: the configured URL, with `/v1.0` added unless it names a version.
pub fn versioned_base(graph_base: &str) -> Result<url::Url, String> {
    let trimmed = graph_base.trim_end_matches('/');
    let with_version = if trimmed.ends_with("/v1.0") || trimmed.ends_with("/beta") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1.0")
    };
    url::Url::parse(&with_version).map_err(|e| format!("graph_url {graph_base:?} is not a URL: {e}"))
}

/// A Graph error body: `{"error": {"code": …, "message": …}}`.
fn graph_error_parts(body: &[u8]) -> (Option<String>, Option<String>) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["error"];
    (e["code"].as_str().map(str::to_string), e["message"].as_str().map(str::to_string))
}

fn unit_random() -> f64 {
    rand::random::<f64>()
}

impl GraphClient {
    /// A client for the config's Graph and tenants, sending through `http`.
    pub fn new(config: &Config, http: reqwest::Client) -> Result<Self, String> {
        let auth = Arc::new(Auth::new(config, http.clone()));
        Self::with_auth(config, http, auth)
    }

    /// A client using the given token source.
    pub fn with_auth(config: &Config, http: reqwest::Client, auth: Arc<Auth>) -> Result<Self, String> {
        if config.cloud == super::Cloud::China {
            return Err(
                "Microsoft Graph in China (21Vianet) has no security alerts_v2 API; secmon cannot run there".into()
            );
        }
        Ok(Self {
            http,
            base: versioned_base(&config.graph_base())?,
            auth,
            policy: RetryPolicy::default(),
            sleeper: Arc::new(TokioSleeper::default()),
            buckets: Buckets::new(config.poll.max_requests_per_minute),
            stats: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the retry policy.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces where waits happen (tests record them instead).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// The token source.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut u = self.base.clone();
        u.path_segments_mut().expect("an http(s) base has path segments").extend(segments);
        u
    }

    fn count(&self, tenant: &str, f: impl FnOnce(&mut CallStats)) {
        f(self.stats.lock().expect("stats lock").entry(tenant.to_string()).or_default());
    }

    /// Sends one request with the retry policy; `parse` turns a 2xx body into the result, and a
    /// body it refuses (a malformed page) is retried like a 5xx.
    async fn call<T>(
        &self,
        tenant: &str,
        operation: &str,
        method: Method,
        url: &str,
        body: Option<&Value>,
        parse: impl Fn(u16, &[u8]) -> Result<T, String>,
    ) -> Result<T, GraphError> {
        let fail = |status: Option<u16>, code: Option<String>, message: String, retry: Retry| GraphError {
            operation: format!("{operation} for {tenant}"),
            status,
            code,
            message: crate::redact::redact(&message),
            retry,
        };
        let mut attempt = 0u32;
        let mut refused_token = false;
        loop {
            attempt += 1;
            let budget = self.buckets.take(tenant, self.sleeper.elapsed());
            if !budget.is_zero() {
                self.count(tenant, |s| {
                    s.budget_waits += 1;
                    s.budget_wait += budget;
                });
                self.sleeper.sleep(budget).await;
            }
            let (err, retry_after) = match self.attempt(tenant, &method, url, body).await {
                Ok((status, bytes)) => match parse(status, &bytes) {
                    Ok(v) => return Ok(v),
                    Err(why) => {
                        tracing::warn!(
                            tenant,
                            operation,
                            attempt,
                            "Graph answered {status} with an unusable body: {why}"
                        );
                        (fail(Some(status), None, format!("unusable response: {why}"), Retry::Retryable), None)
                    }
                },
                Err(Attempt::Token(e)) => (e, None),
                Err(Attempt::Transport(message)) => (fail(None, None, message, Retry::Retryable), None),
                Err(Attempt::Status { status, retry_after, body }) => {
                    let (code, message) = graph_error_parts(&body);
                    let mut retry = RetryPolicy::classify(status);
                    // A token Graph refuses may have been revoked or rotated: fetch a new one, once.
                    if status == 401 && !refused_token {
                        refused_token = true;
                        self.auth.forget(tenant).await;
                        retry = Retry::Retryable;
                    }
                    let message = message.unwrap_or_else(|| format!("HTTP {status}"));
                    (fail(Some(status), code, message, retry), retry_after)
                }
            };
            match self.policy.next(attempt, err.retry, retry_after, unit_random()) {
                Next::GiveUp => {
                    self.count(tenant, |s| s.failures += 1);
                    return Err(err);
                }
                Next::RetryAfter { wait, throttled } => {
                    tracing::warn!(tenant, operation, attempt, wait_ms = wait.as_millis() as u64, "retrying: {err}");
                    self.count(tenant, |s| {
                        s.retries += 1;
                        if throttled {
                            s.throttled_waits += 1;
                            s.throttled_wait += wait;
                        }
                    });
                    self.sleeper.sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        tenant: &str,
        method: &Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), Attempt> {
        let token = self.auth.token(tenant).await.map_err(Attempt::Token)?;
        self.count(tenant, |s| s.requests += 1);
        let mut req = self
            .http
            .request(method.clone(), url)
            .bearer_auth(token)
            .header("Prefer", PREFER)
            .header("Accept", "application/json")
            .timeout(self.policy.timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| Attempt::Transport(transport_message(&e)))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(status, resp.headers(), chrono::Utc::now());
        let bytes = resp.bytes().await.map_err(|e| Attempt::Transport(transport_message(&e)))?;
        if (200..300).contains(&status) {
            Ok((status, Vec::from(bytes)))
        } else {
            Err(Attempt::Status { status, retry_after, body: Vec::from(bytes) })
        }
    }

    /// Checks a nextLink points at our Graph, so the bearer token is never sent elsewhere.
    fn check_next_link(&self, tenant: &str, link: &str) -> Result<(), GraphError> {
        let ok = url::Url::parse(link).is_ok_and(|u| u.origin() == self.base.origin());
        if ok {
            Ok(())
        } else {
            Err(GraphError {
                operation: format!("follow @odata.nextLink for {tenant}"),
                status: None,
                code: None,
                message: crate::redact::redact(&format!(
                    "nextLink {link:?} does not point at {}",
                    self.base.origin().ascii_serialization()
                )),
                retry: Retry::Permanent,
            })
        }
    }

    async fn page(&self, tenant: &str, operation: &str, url: &str) -> Result<AlertPage, GraphError> {
        self.call(tenant, operation, Method::GET, url, None, |_, body| parse_page(body)).await
    }
}

enum Attempt {
    Token(GraphError),
    Transport(String),
    Status { status: u16, retry_after: Option<Duration>, body: Vec<u8> },
}

fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading the answer"
    } else {
        "request failed"
    };
    // The source chain says why (reset, refused); the URL is dropped as it may carry tokens.
    let mut detail = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() { kind.to_string() } else { format!("{kind}: {detail}") }
}

/// Reads a list page: a JSON object with a `value` array and maybe an `@odata.nextLink` string. Each
/// item of `value` is kept as its JSON text ([`AlertPage::alerts`]).
pub fn parse_page(body: &[u8]) -> Result<AlertPage, String> {
    #[derive(serde::Deserialize)]
    struct Page {
        value: Option<Vec<Box<serde_json::value::RawValue>>>,
        #[serde(rename = "@odata.nextLink")]
        next_link: Option<Value>,
    }
    // One pass over the body; only a page that is not what Graph sends is read again, to say what is wrong.
    let page: Page = match serde_json::from_slice(body) {
        Ok(page) => page,
        Err(e) if e.is_data() => {
            return Err(match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) if map.contains_key("value") => "`value` is not an array".into(),
                _ => "not a JSON object".into(),
            });
        }
        Err(e) => return Err(format!("not JSON ({e})")),
    };
    let alerts = page.value.ok_or("no `value` array")?;
    let next_link = match page.next_link {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(_) => return Err("`@odata.nextLink` is not a URL string".into()),
    };
    Ok(AlertPage { alerts, next_link })
}

fn json_body(status: u16, body: &[u8]) -> Result<Value, String> {
    if status == 204 || body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))
}

#[async_trait]
impl Graph for GraphClient {
    async fn token_for(&self, tenant: &str, scope: &str) -> Result<String, GraphError> {
        self.auth.token_for(tenant, scope).await
    }

    async fn list_alerts(&self, tenant: &str, query: &AlertQuery) -> Result<AlertPage, GraphError> {
        let mut url = self.url(&["security", "alerts_v2"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("$filter", &query.filter);
            if let Some(orderby) = &query.orderby {
                q.append_pair("$orderby", orderby);
            }
            if let Some(top) = query.top {
                q.append_pair("$top", &top.to_string());
            }
        }
        self.page(tenant, "list alerts", url.as_str()).await
    }

    async fn next_alerts(&self, tenant: &str, next_link: &str) -> Result<AlertPage, GraphError> {
        self.check_next_link(tenant, next_link)?;
        self.page(tenant, "list alerts (next page)", next_link).await
    }

    async fn get_alert(&self, tenant: &str, id: &str) -> Result<Value, GraphError> {
        let url = self.url(&["security", "alerts_v2", id]);
        self.call(tenant, "get alert", Method::GET, url.as_str(), None, json_body).await
    }

    async fn update_alert(&self, tenant: &str, id: &str, update: &AlertUpdate) -> Result<Value, GraphError> {
        let url = self.url(&["security", "alerts_v2", id]);
        let body = serde_json::to_value(update).expect("updates serialize");
        self.call(tenant, "update alert", Method::PATCH, url.as_str(), Some(&body), json_body).await
    }

    async fn add_comment(&self, tenant: &str, id: &str, comment: &str) -> Result<(), GraphError> {
        let url = self.url(&["security", "alerts_v2", id, "comments"]);
        let one = json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": comment});
        match self.call(tenant, "comment on alert", Method::POST, url.as_str(), Some(&one), json_body).await {
            Ok(_) => Ok(()),
            // The docs show an object, the generated SDK sends an array: try the other shape once.
            Err(e) if e.status == Some(400) => {
                let many = Value::Array(vec![one]);
                self.call(tenant, "comment on alert", Method::POST, url.as_str(), Some(&many), json_body)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    async fn check_member_groups(
        &self,
        tenant: &str,
        user: &str,
        group_ids: &[String],
    ) -> Result<Vec<String>, GraphError> {
        let url = self.url(&["users", user, "checkMemberGroups"]);
        let body = json!({"groupIds": group_ids});
        let answer =
            self.call(tenant, "check group membership", Method::POST, url.as_str(), Some(&body), json_body).await?;
        Ok(answer
            .get("value")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default())
    }

    async fn send_mail(&self, tenant: &str, sender: &str, body: &Value) -> Result<(), GraphError> {
        let url = self.url(&["users", sender, "sendMail"]);
        self.call(tenant, "send mail", Method::POST, url.as_str(), Some(body), |_, _| Ok(())).await
    }

    async fn create_subscription(&self, tenant: &str, body: &Value) -> Result<Value, GraphError> {
        let url = self.url(&["subscriptions"]);
        self.call(tenant, "create subscription", Method::POST, url.as_str(), Some(body), json_body).await
    }

    async fn renew_subscription(&self, tenant: &str, id: &str, expiration: &str) -> Result<Value, GraphError> {
        let url = self.url(&["subscriptions", id]);
        let body = json!({"expirationDateTime": expiration});
        self.call(tenant, "renew subscription", Method::PATCH, url.as_str(), Some(&body), json_body).await
    }

    async fn reauthorize_subscription(&self, tenant: &str, id: &str) -> Result<(), GraphError> {
        let url = self.url(&["subscriptions", id, "reauthorize"]);
        self.call(tenant, "reauthorize subscription", Method::POST, url.as_str(), None, |_, _| Ok(())).await
    }

    async fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), GraphError> {
        let url = self.url(&["subscriptions", id]);
        match self.call(tenant, "delete subscription", Method::DELETE, url.as_str(), None, |_, _| Ok(())).await {
            Err(e) if e.status == Some(404) => Ok(()),
            other => other,
        }
    }

    async fn list_subscriptions(&self, tenant: &str) -> Result<Vec<Value>, GraphError> {
        let mut out = Vec::new();
        let mut page = self.page(tenant, "list subscriptions", self.url(&["subscriptions"]).as_str()).await?;
        loop {
            out.extend(page.values());
            let Some(next) = page.next_link.take() else { return Ok(out) };
            self.check_next_link(tenant, &next)?;
            page = self.page(tenant, "list subscriptions (next page)", &next).await?;
        }
    }

    fn call_stats(&self, tenant: &str) -> CallStats {
        self.stats.lock().expect("stats lock").get(tenant).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_added_once() {
        assert_eq!(versioned_base("https://graph.microsoft.com").unwrap().as_str(), "https://graph.microsoft.com/v1.0");
        assert_eq!(versioned_base("http://127.0.0.1:9/v1.0/").unwrap().as_str(), "http://127.0.0.1:9/v1.0");
        assert_eq!(
            versioned_base("https://graph.microsoft.us/beta").unwrap().as_str(),
            "https://graph.microsoft.us/beta"
        );
        assert!(versioned_base("not a url").is_err());
    }

    #[test]
    fn pages_must_have_a_value_array() {
        let sample = std::fs::read(format!(
            "{}/tests/fixtures/samples/alerts_v2-list-response.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let page = parse_page(&sample).unwrap();
        assert_eq!(page.alerts.len(), 1);
        assert_eq!(page.next_link, None);
        assert!(
            parse_page(br#"{"value":[],"@odata.nextLink":"https://graph.microsoft.com/v1.0/x?$skiptoken=a"}"#)
                .unwrap()
                .next_link
                .is_some()
        );
        for bad in [&b"<html>"[..], b"[]", b"{}", br#"{"value":{}}"#, br#"{"value":[],"@odata.nextLink":5}"#] {
            assert!(parse_page(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn graph_error_bodies_give_code_and_message() {
        let (c, m) = graph_error_parts(br#"{"error":{"code":"InvalidRequestBody","message":"bad value"}}"#);
        assert_eq!((c.as_deref(), m.as_deref()), (Some("InvalidRequestBody"), Some("bad value")));
        assert_eq!(graph_error_parts(b"oops"), (None, None));
    }

    #[test]
    fn china_is_refused_with_a_clear_error() {
        let config = Config { cloud: super::super::Cloud::China, ..Default::default() };
        let e = GraphClient::new(&config, reqwest::Client::new()).unwrap_err();
        assert!(e.contains("China") && e.contains("alerts_v2"), "{e}");
    }
}
