//! What Graph and people reach: the webhook URL's handshake, the receivers' settings, the test messages.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::Check;
use super::environment::cloud_name;
use crate::app::App;
use crate::config::{Cloud, Config, ReceiverConfig};

/// `webhook.public_url` is https and both notification URLs answer Graph's validation handshake.
pub async fn subscriptions(app: &App) -> Vec<Check> {
    let config = &app.config;
    let Some(endpoints) = crate::intake::subscriptions::Endpoints::from_config(config) else {
        return if config.subscriptions.is_empty() {
            Vec::new()
        } else {
            vec![Check::failure(
                "subscriptions: public_url",
                "subscriptions are configured but webhook.public_url is not set",
                "set webhook.public_url to the app's https base URL",
            )]
        };
    };
    let public = config.webhook.public_url.clone().unwrap_or_default();
    let mut out = Vec::new();
    match url::Url::parse(&public) {
        Ok(u) if u.scheme() == "https" => {
            out.push(Check::ok("subscriptions: public_url", format!("{public} is https")))
        }
        _ => out.push(Check::failure(
            "subscriptions: public_url",
            format!("{public} is not https: Graph only sends notifications to https URLs"),
            "set webhook.public_url to the app's https URL (https://<app>.azurewebsites.net, or the TLS proxy in \
             front of `secmon run`)",
        )),
    }
    // The webhook answers the handshake only while a subscription is being created: say so in the store
    // it reads for as long as the probe takes, as the subscription code does around a create.
    use crate::intake::subscriptions::{mark_creating, unmark_creating};
    let marker = mark_creating(app.store.as_ref(), "doctor", app.clock.now()).await.ok();
    for (function, target) in
        [("graph-webhook", &endpoints.notification_url), ("graph-lifecycle", &endpoints.lifecycle_url)]
    {
        out.push(handshake(&app.http, function, target).await);
    }
    if let Some(key) = marker {
        unmark_creating(app.store.as_ref(), "doctor", &key).await;
    }
    out
}

/// Calls `url` as Graph validates a notification URL: `POST ?validationToken=…`, `text/plain`; the
/// answer must be 200 with the token as `text/plain`.
async fn handshake(http: &reqwest::Client, function: &str, target: &str) -> Check {
    let name = format!("subscriptions: {function} handshake");
    let token = format!("secmon-doctor {}", uuid::Uuid::new_v4());
    let Ok(mut url) = url::Url::parse(target) else {
        return Check::failure(name, "the notification URL is not a URL", "fix webhook.public_url");
    };
    url.query_pairs_mut().append_pair("validationToken", &token);
    let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
    let fix = format!(
        "make {shown} reach secmon's {function} function: the app is running, the URL's host and path are right, and \
         webhook.notification_query carries the function key (code=...)"
    );
    let sent = http
        .post(url)
        .header("Content-Type", "text/plain; charset=utf-8")
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return Check::failure(name, format!("POST {shown} failed: {}", e.without_url()), fix),
    };
    let status = resp.status().as_u16();
    let text_plain = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let body = resp.text().await.unwrap_or_default();
    if status == 403 {
        // Reachable, and refusing strangers as it should: it reads another store than this run wrote to.
        return Check::warning(
            name,
            format!(
                "{shown} refused the handshake (403): it answers only while a subscription is being created, and it does not see this run's marker"
            ),
            "run the check from inside the deployment (GET /api/doctor on the worker app), which shares the edge's store",
        );
    }
    if status == 200 && body == token && text_plain {
        Check::ok(name, format!("{shown} echoed the validation token as text/plain"))
    } else if status == 200 && body == token {
        Check::failure(
            name,
            format!("{shown} echoed the token but not as text/plain"),
            "answer the handshake with Content-Type: text/plain",
        )
    } else {
        Check::failure(name, format!("POST {shown}?validationToken=... answered {status} without the token"), fix)
    }
}

/// Workflows trigger hosts per cloud: Logic Apps' and Power Platform's (the newer Workflows URLs).
/// The US Government hosts follow the same pattern on `.us`; not confirmed in a primary source.
fn workflows_clouds(host: &str) -> Option<&'static [Cloud]> {
    if host.ends_with(".logic.azure.com") || host.ends_with(".api.powerplatform.com") {
        Some(&[Cloud::Global])
    } else if host.ends_with(".logic.azure.us") || host.ends_with(".api.powerplatform.us") {
        Some(&[Cloud::Usgov, Cloud::Usgovdod])
    } else if host.ends_with(".logic.azure.cn") {
        Some(&[Cloud::China])
    } else {
        None
    }
}

/// Each receiver's settings: a Workflows URL with its `sig` on a host of the right cloud; a webhook
/// secret that is hard to guess.
pub fn receivers(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, r) in &config.receivers {
        let check = format!("receiver {name}");
        match r {
            ReceiverConfig::Teams(t) => {
                // A bot receiver: its bot and conversation are checked when the config loads.
                let Some(webhook_url) = &t.webhook_url else {
                    let bot = t.bot.as_ref().map(|b| b.name.as_str()).unwrap_or_default();
                    out.push(Check::ok(check, format!("posts through bot {bot}")));
                    continue;
                };
                let Ok(u) = url::Url::parse(webhook_url) else {
                    out.push(Check::failure(
                        check,
                        "the Workflows URL is not a URL",
                        "paste the whole URL from the Workflows trigger",
                    ));
                    continue;
                };
                let host = u.host_str().unwrap_or("").to_string();
                if !u.query_pairs().any(|(k, v)| k.eq_ignore_ascii_case("sig") && !v.is_empty()) {
                    out.push(Check::failure(
                        check,
                        format!(
                            "the Workflows URL (host {host}) has no sig query parameter (the signature): the \
                             trigger will answer 401"
                        ),
                        "copy the whole HTTP URL from the Workflows trigger \"When a Teams webhook request is \
                         received\" (its last query parameter is the signature, sig), quoted, into the variable \
                         the config names",
                    ));
                    continue;
                }
                let cloud = config.cloud;
                match workflows_clouds(&host) {
                    Some(clouds) if clouds.contains(&cloud) => {
                        out.push(Check::ok(check, format!("Workflows URL on {host}, with sig")))
                    }
                    Some(clouds) => out.push(Check::failure(
                        check,
                        format!(
                            "the Workflows URL is on {host}, a {} cloud host, but cloud is {}",
                            cloud_name(clouds[0]),
                            cloud_name(cloud)
                        ),
                        "create the workflow in the tenant's own cloud and use its URL",
                    )),
                    None if crate::config::receivers::is_loopback(&u) => out.push(Check::warning(
                        check,
                        format!("Workflows URL on {host}, a local test sink"),
                        "use the real Workflows URL in production",
                    )),
                    None => out.push(Check::warning(
                        check,
                        format!("{host} is not a known Workflows host (*.logic.azure.com, *.api.powerplatform.com)"),
                        "check the URL is the Workflows trigger's",
                    )),
                }
            }
            ReceiverConfig::Webhook(w) => match &w.secret {
                None => out.push(Check::warning(
                    check,
                    "no secret: requests are not signed",
                    "set webhook.secret to 32+ random characters (openssl rand -hex 32) from the environment",
                )),
                Some(s) if s.len() < 32 || s.chars().collect::<BTreeSet<_>>().len() < 10 => out.push(Check::warning(
                    check,
                    format!(
                        "the HMAC key is weak ({} characters, {} distinct)",
                        s.len(),
                        s.chars().collect::<BTreeSet<_>>().len()
                    ),
                    "use 32+ random characters (openssl rand -hex 32)",
                )),
                Some(s) => out.push(Check::ok(check, format!("signed with a {}-character HMAC key", s.len()))),
            },
            ReceiverConfig::Email(e) => out
                .push(Check::ok(check, format!("sends as {} through Graph (Mail.Send is checked per tenant)", e.from))),
        }
    }
    out
}

/// The alert the test messages carry: the sample alert, marked as a test in its title and text.
pub fn test_alert(now: DateTime<Utc>) -> crate::alert::Alert {
    let mut v: Value = serde_json::from_str(crate::notify::template::SAMPLE_ALERT).expect("sample alert is JSON");
    v["id"] = json!(format!("secmon-doctor-test-{}", now.timestamp()));
    v["title"] = json!("secmon doctor: TEST MESSAGE, no action needed");
    v["description"] =
        json!("secmon doctor --send-test sent this message to check the receiver works. It is not an alert.");
    v["severity"] = json!("informational");
    crate::alert::Alert::from_value(v).expect("the sample alert reads")
}

/// One test message to every receiver, and what each answered.
pub async fn send_tests(app: &App, tenant: &str, now: DateTime<Utc>) -> Vec<Check> {
    let alert = test_alert(now);
    let mut out = Vec::new();
    for (name, receiver) in &app.receivers.by_name {
        let check = format!("send-test {name}");
        let view = crate::notify::view::View::new(tenant, name, &alert);
        let payload = match receiver.render(&app.receivers.templates, &view, &alert) {
            Ok(p) => p,
            Err(e) => {
                out.push(Check::failure(check, e.message, "fix the receiver's template"));
                continue;
            }
        };
        let delivery = format!("secmon-doctor-{}", uuid::Uuid::new_v4());
        match receiver.send(&crate::notify::SendContext::new(app, tenant, now, &delivery), &payload).await {
            Ok(status) => out.push(Check::ok(
                check,
                format!("{} test message sent; the receiver answered {status}", receiver.kind()),
            )),
            Err(e) => out.push(Check::failure(
                check,
                format!("{} test message refused: {}", receiver.kind(), e.message),
                "see the receiver check; fix the URL, key or permission it names",
            )),
        }
    }
    out
}
