//! The emulator over loopback: tokens, alerts_v2, mail, subscriptions, sinks, faults and TLS.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Query;
use axum::http::header::CONTENT_TYPE;
use chrono::{DateTime, Utc};
use common::{CLIENT_ID, SECRET, Setup, TENANT};
use reqwest::Method;
use secmon_emulator::{CommentShape, Fault, FaultKind, Options};
use serde_json::{Value, json};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ids(body: &Value) -> Vec<String> {
    body["value"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
}

// ---------- Entra ----------

#[tokio::test]
async fn token_endpoint_accepts_good_and_rejects_bad_credentials() {
    let s = Setup::new(Options::default()).await;
    let url = format!("{}/{TENANT}/oauth2/v2.0/token", s.emu.authority_url());
    let form = |client_id: &'static str, secret: &'static str| {
        vec![
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ]
    };
    let resp = s.http.post(&url).form(&form(CLIENT_ID, SECRET)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(body["access_token"].as_str().unwrap().len() > 20);

    let resp = s.http.post(&url).form(&form(CLIENT_ID, "wrong")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"].as_str().unwrap().starts_with("AADSTS7000215"));

    let resp = s.http.post(&url).form(&form("unknown-app", SECRET)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unauthorized_client");

    let mut bad_scope = form(CLIENT_ID, SECRET);
    bad_scope[2].1 = "https://graph.microsoft.com/SecurityAlert.Read.All";
    let resp = s.http.post(&url).form(&bad_scope).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_scope");

    // Certificate / workload identity: any JWT-shaped assertion for a known client.
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    let assertion = |a: &'static str| {
        vec![
            ("client_id", CLIENT_ID),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", a),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ]
    };
    let resp = s.http.post(&url).form(&assertion(jwt)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s.http.post(&url).form(&assertion("not-a-jwt")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // The secret never reaches the request log.
    let logged: Vec<String> = s.emu.requests().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert!(logged.iter().any(|b| b.contains("client_secret=REDACTED")));
    assert!(logged.iter().all(|b| !b.contains(SECRET) && !b.contains("c2lnbmF0dXJl")));
}

#[tokio::test]
async fn managed_identity_endpoint_checks_the_header() {
    let s = Setup::new(Options::default()).await;
    let url = format!("{}?api-version=2019-08-01&resource=https://graph.microsoft.com", s.emu.identity_endpoint());
    assert_eq!(s.http.get(&url).send().await.unwrap().status(), 400);
    let wrong = s.http.get(&url).header("x-identity-header", "nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let resp = s
        .http
        .get(format!("{url}&client_id=user-assigned-1"))
        .header("x-identity-header", s.emu.identity_header())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://graph.microsoft.com");
    assert_eq!(body["client_id"], "user-assigned-1");
    let expires_on: i64 = body["expires_on"].as_str().expect("a string").parse().unwrap();
    assert!(expires_on > Utc::now().timestamp());
    // The MI token works against Graph for the default tenant.
    let token = body["access_token"].as_str().unwrap();
    let graph =
        s.http.get(format!("{}/security/alerts_v2", s.emu.graph_url())).bearer_auth(token).send().await.unwrap();
    assert_eq!(graph.status(), 200);
    // The identity header is redacted in the request log.
    assert!(s.emu.requests().iter().all(|r| { r.headers.get("x-identity-header").is_none_or(|v| v == "REDACTED") }));
}

#[tokio::test]
async fn graph_rejects_missing_unknown_and_expired_tokens() {
    let s = Setup::new(Options::default()).await;
    let url = format!("{}/security/alerts_v2", s.emu.graph_url());
    for req in [s.http.get(&url), s.http.get(&url).bearer_auth("made-up")] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    }
    assert_eq!(s.get("/security/alerts_v2", false).await.0, 200);
    s.emu.set_now(Some(Utc::now() + chrono::Duration::hours(2)));
    let (status, _, body) = s.get("/security/alerts_v2", false).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"));
    let auth = s.emu.requests().last().unwrap().headers["authorization"].clone();
    assert_eq!(auth, "Bearer REDACTED");
}

#[tokio::test]
async fn tls_mode_serves_https_trusted_through_the_ca() {
    let emu = secmon_emulator::Emulator::start(Options { tls: true, ..Options::default() }).await.unwrap();
    emu.add_client(TENANT, CLIENT_ID, SECRET);
    assert!(emu.base_url().starts_with("https://127.0.0.1:"));
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap();
    let trusting = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    let token = common::token(&trusting, &emu.authority_url(), SECRET).await;
    assert!(!token.is_empty());
    // A client that does not trust the test CA fails the handshake.
    let default = reqwest::Client::new();
    assert!(default.get(emu.graph_url()).send().await.is_err());
}

// ---------- alerts_v2 ----------

#[tokio::test]
async fn paging_returns_every_alert_exactly_once_even_when_alerts_change() {
    let s = Setup::new(Options::default()).await;
    let start = at("2026-11-01T00:00:00Z");
    s.emu.generate_alerts(TENANT, 1050, 42, start);
    let (status, _, mut page) = s.get("/security/alerts_v2", false).await;
    assert_eq!(status, 200);
    assert_eq!(page["@odata.context"], format!("{}/$metadata#security/alerts_v2", s.emu.graph_url()));
    let first_page = ids(&page);
    assert_eq!(first_page.len(), 100);
    let times: Vec<&str> =
        page["value"].as_array().unwrap().iter().map(|a| a["lastUpdateDateTime"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "most recent first");

    let mut seen = first_page.clone();
    let mut pages = 1;
    let all = s.emu.alerts(TENANT);
    while let Some(next) = page["@odata.nextLink"].as_str().map(str::to_string) {
        assert!(next.starts_with(&format!("{}/security/alerts_v2?", s.emu.graph_url())));
        // Updates between pages move alerts to the front of the ordering; paging must not care.
        let victim = all[all.len() - 1 - pages * 7]["id"].as_str().unwrap();
        assert!(s.emu.touch_alert(TENANT, victim, Utc::now()));
        page = s.get(&next, false).await.2;
        seen.extend(ids(&page));
        pages += 1;
    }
    assert_eq!(pages, 11);
    assert_eq!(seen.len(), 1050);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1050);

    // $top sets the page size.
    let (_, _, body) = s.get("/security/alerts_v2?$top=500", false).await;
    assert_eq!(ids(&body).len(), 500);
    assert!(body["@odata.nextLink"].is_string());
    assert_eq!(s.get("/security/alerts_v2?$top=5000", false).await.0, 400);
    assert_eq!(s.get("/security/alerts_v2?$skiptoken=garbage", false).await.0, 400);
}

#[tokio::test]
async fn filters_select_the_right_alerts() {
    let s = Setup::new(Options::default()).await;
    s.emu.generate_alerts(TENANT, 400, 3, at("2026-11-01T00:00:00Z"));
    let all = s.emu.alerts(TENANT);
    let cut = all[150]["lastUpdateDateTime"].as_str().unwrap().to_string();
    let expected: HashSet<String> = all
        .iter()
        .filter(|a| a["lastUpdateDateTime"].as_str().unwrap() >= cut.as_str() && a["severity"] == "high")
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!expected.is_empty());
    let filter = format!("lastUpdateDateTime ge {cut} and severity eq 'high'");
    let resp = s
        .http
        .get(format!("{}/security/alerts_v2", s.emu.graph_url()))
        .query(&[("$filter", filter.as_str()), ("$top", "1000")])
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: HashSet<String> = ids(&resp.json().await.unwrap()).into_iter().collect();
    assert_eq!(got, expected);

    // gt excludes the boundary alert, ge includes it.
    let boundary = all[150]["id"].as_str().unwrap().to_string();
    for (op, included) in [("ge", true), ("gt", false)] {
        let q = format!("lastUpdateDateTime {op} {cut}");
        let resp = s
            .http
            .get(format!("{}/security/alerts_v2", s.emu.graph_url()))
            .query(&[("$filter", q.as_str()), ("$top", "1000")])
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(ids(&resp.json().await.unwrap()).contains(&boundary), included, "{op}");
    }

    for f in ["status eq 'new'", "serviceSource eq 'microsoftSentinel'", "createdDateTime lt 2026-11-01T03:00:00Z"] {
        let resp = s
            .http
            .get(format!("{}/security/alerts_v2", s.emu.graph_url()))
            .query(&[("$filter", f), ("$top", "1000"), ("$count", "true")])
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        let n = body["value"].as_array().unwrap().len();
        assert!(n > 0 && n < 400, "{f}: {n}");
        assert_eq!(body["@odata.count"], n);
    }

    let resp = s
        .http
        .get(format!("{}/security/alerts_v2", s.emu.graph_url()))
        .query(&[("$filter", "status eq 'New'")])
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "BadRequest");
    assert_eq!(body["error"]["message"], "Invalid filter clause");
}

#[tokio::test]
async fn evolvable_enums_need_the_prefer_header() {
    let s = Setup::new(Options::default()).await;
    s.emu.seed_samples(TENANT);
    let sentinel = "da637878227677560813_-334257894";
    let path = format!("/security/alerts_v2/{sentinel}");

    let (status, headers, plain) = s.get(&path, false).await;
    assert_eq!(status, 200);
    assert_eq!(plain["serviceSource"], "unknownFutureValue");
    assert_eq!(plain["detectionSource"], "unknownFutureValue");
    assert!(headers.get("preference-applied").is_none());

    let (_, headers, preferred) = s.get(&path, true).await;
    assert_eq!(preferred["serviceSource"], "microsoftSentinel");
    assert_eq!(preferred["detectionSource"], "scheduledAlerts");
    assert_eq!(headers["preference-applied"], "include-unknown-enum-members");

    // Non-evolvable values are untouched either way, and the list behaves the same.
    let (_, _, list) = s.get("/security/alerts_v2", false).await;
    let by_id: HashMap<&str, &Value> =
        list["value"].as_array().unwrap().iter().map(|a| (a["id"].as_str().unwrap(), a)).collect();
    assert_eq!(by_id[sentinel]["serviceSource"], "unknownFutureValue");
    assert_eq!(by_id["da637551227677560813_-961444813"]["serviceSource"], "microsoftDefenderForEndpoint");
    assert_eq!(s.emu.alert(TENANT, sentinel).unwrap()["serviceSource"], "microsoftSentinel");
    // With the header the list sends the stored alerts as they are, and says so.
    let (_, headers, list) = s.get("/security/alerts_v2", true).await;
    let by_id: HashMap<&str, &Value> =
        list["value"].as_array().unwrap().iter().map(|a| (a["id"].as_str().unwrap(), a)).collect();
    assert_eq!(by_id[sentinel], &s.emu.alert(TENANT, sentinel).unwrap());
    assert_eq!(headers["preference-applied"], "include-unknown-enum-members");
    // Filtering sees stored values: the documented Sentinel filter finds the alert.
    let (status, _, body) = s.get("/security/alerts_v2?$filter=serviceSource%20eq%20'microsoftSentinel'", false).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), vec![sentinel.to_string()]);
    let (status, _, body) = s.get("/security/alerts_v2/missing-id", false).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "NotFound");
}

#[tokio::test]
async fn patch_validates_and_resolves() {
    let s = Setup::new(Options::default()).await;
    s.emu.seed_samples(TENANT);
    let id = "da637551227677560813_-961444813";
    let path = format!("/security/alerts_v2/{id}");
    for bad in [
        json!({"status": "resolved", "classification": "benignPositive"}),
        json!({"determination": "compromisedUser"}),
        json!({"status": "closed"}),
        json!({"customDetails": {"a": "b"}}),
        json!({"title": "x"}),
    ] {
        let (status, body) = s.send(Method::PATCH, &path, &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "InvalidRequestBody", "{bad}");
    }
    assert!(s.emu.patches().is_empty());

    // A fixed clock in the past: tokens issued on the wall clock stay valid.
    s.emu.set_now(Some(at("2026-01-01T10:00:00Z")));
    let update = json!({"status": "resolved", "classification": "informationalExpectedActivity", "determination": "securityTesting"});
    let (status, body) = s.send(Method::PATCH, &path, &update).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["classification"], "informationalExpectedActivity");
    assert_eq!(body["determination"], "securityTesting");
    assert!(body["resolvedDateTime"].is_string());
    assert_eq!(body["lastUpdateDateTime"], body["resolvedDateTime"]);
    assert_eq!(body["lastUpdateDateTime"], "2026-01-01T10:00:00.0000000Z");
    assert_eq!(s.emu.alert(TENANT, id).unwrap()["status"], "resolved");
    assert_eq!(s.emu.patches(), vec![(TENANT.to_string(), id.to_string(), update)]);

    let (status, body) = s.send(Method::PATCH, "/security/alerts_v2/nope", &json!({"status": "resolved"})).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "NotFound");
}

#[tokio::test]
async fn comments_accept_both_shapes_and_the_switch_narrows_them() {
    let s = Setup::new(Options::default()).await;
    s.emu.seed_samples(TENANT);
    let path = "/security/alerts_v2/da637551227677560813_-961444813/comments";
    let object: Value =
        serde_json::from_str(include_str!("../../fixtures/samples/alert-comment-request.json")).unwrap();
    let array = json!([{"@odata.type": "microsoft.graph.security.alertComment", "comment": "second"}]);

    let (status, body) = s.send(Method::POST, path, &object).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    let (status, body) = s.send(Method::POST, path, &array).await;
    assert_eq!(status, 200);
    let list = body["value"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["comment"], "Demo for docs");
    assert_eq!(list[1]["comment"], "second");
    // Same keys as the documented response.
    let sample: Value =
        serde_json::from_str(include_str!("../../fixtures/samples/alert-comment-response.json")).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<HashSet<_>>();
    assert_eq!(keys(&list[0]), keys(&sample["value"][0]));
    assert!(body["@odata.context"].as_str().unwrap().ends_with("/comments"));

    s.emu.set_comment_shape(CommentShape::ObjectOnly);
    assert_eq!(s.send(Method::POST, path, &array).await.0, 400);
    assert_eq!(s.send(Method::POST, path, &object).await.0, 200);
    s.emu.set_comment_shape(CommentShape::ArrayOnly);
    assert_eq!(s.send(Method::POST, path, &object).await.0, 400);
    assert_eq!(s.send(Method::POST, path, &array).await.0, 200);
    assert_eq!(s.send(Method::POST, path, &json!({"comment": ""})).await.0, 400);
    assert_eq!(s.send(Method::POST, "/security/alerts_v2/nope/comments", &array).await.0, 404);
    assert_eq!(s.emu.comments().len(), 4);
}

// ---------- mail ----------

#[tokio::test]
async fn send_mail_validates_and_records() {
    let s = Setup::new(Options::default()).await;
    let sample: Value = serde_json::from_str(include_str!("../../fixtures/samples/sendmail-request.json")).unwrap();
    let resp = s
        .http
        .post(format!("{}/users/secmon@contoso.com/sendMail", s.emu.graph_url()))
        .bearer_auth(&s.token)
        .json(&sample)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(resp.bytes().await.unwrap().is_empty());
    let mut bad = sample.clone();
    bad["message"]["toRecipients"] = json!([]);
    let (status, body) = s.send(Method::POST, "/users/secmon@contoso.com/sendMail", &bad).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "ErrorInvalidRecipients");
    assert_eq!(s.emu.mails(), vec![(TENANT.to_string(), "secmon@contoso.com".to_string(), sample)]);
}

// ---------- faults ----------

#[tokio::test]
async fn each_fault_kind_fires_the_requested_number_of_times() {
    let s = Setup::new(Options::default()).await;
    let faults = s.emu.faults();

    faults.push(Fault::status("alerts_v2", 429, Some(7)).times(2));
    for _ in 0..2 {
        let (status, headers, body) = s.get("/security/alerts_v2", false).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "7");
        assert_eq!(body["error"]["code"], "TooManyRequests");
    }
    assert_eq!(s.get("/security/alerts_v2", false).await.0, 200);

    faults.push(Fault::new("alerts_v2", FaultKind::Garbage));
    let resp =
        s.http.get(format!("{}/security/alerts_v2", s.emu.graph_url())).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.is_err());
    assert_eq!(s.get("/security/alerts_v2", false).await.0, 200);

    faults.push(Fault::new("alerts_v2", FaultKind::Drop).times(2));
    for _ in 0..2 {
        let err = s.http.get(format!("{}/security/alerts_v2", s.emu.graph_url())).bearer_auth(&s.token).send().await;
        assert!(err.is_err(), "dropped connection must fail");
    }
    assert_eq!(s.get("/security/alerts_v2", false).await.0, 200);

    faults.push(Fault::new("alerts_v2", FaultKind::Delay(Duration::from_millis(300))));
    let started = std::time::Instant::now();
    assert_eq!(s.get("/security/alerts_v2", false).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(s.get("/security/alerts_v2", false).await.0, 200);
    assert!(started.elapsed() < Duration::from_millis(300));

    // Method filter and the token endpoint and sinks are covered too.
    faults.push(Fault::status("/oauth2/", 503, None).method("POST"));
    let resp = s
        .http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", s.emu.authority_url()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    faults.push(Fault::status("/sink/", 500, None));
    let sink = s.emu.webhook_sink_url("x");
    assert_eq!(s.http.post(&sink).body("{}").send().await.unwrap().status(), 500);
    assert_eq!(s.http.post(&sink).body("{}").send().await.unwrap().status(), 200);
    assert_eq!(faults.remaining(), 0);

    let requests = s.emu.requests();
    assert_eq!(requests.iter().filter(|r| r.faulted).count(), 2 + 1 + 2 + 1 + 1 + 1);
    assert_eq!(requests.iter().filter(|r| r.status.is_none()).count(), 2);
    assert_eq!(s.emu.webhook_deliveries("x").len(), 1);

    faults.push(Fault::status("alerts_v2", 500, None).times(10));
    faults.clear();
    assert_eq!(s.get("/security/alerts_v2", false).await.0, 200);
}

// ---------- subscriptions and notifications ----------

/// A receiver that answers validation like a correct webhook and records notifications.
async fn receiver(echo_correctly: bool) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |Query(q): Query<HashMap<String, String>>, raw: axum::extract::RawQuery, body: String| {
                let store = store.clone();
                async move {
                    if let Some(token) = q.get("validationToken") {
                        let answer = if echo_correctly { token.clone() } else { raw.0.unwrap_or_default() };
                        return (axum::http::StatusCode::OK, [(CONTENT_TYPE, "text/plain")], answer);
                    }
                    store.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                    (axum::http::StatusCode::ACCEPTED, [(CONTENT_TYPE, "text/plain")], String::new())
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn subscription(url: &str, resource: &str, minutes: i64) -> Value {
    json!({
        "changeType": "created",
        "notificationUrl": url,
        "lifecycleNotificationUrl": url,
        "resource": resource,
        "expirationDateTime": (Utc::now() + chrono::Duration::minutes(minutes)).to_rfc3339(),
        "clientState": "secretClientValue",
    })
}

#[tokio::test]
async fn subscription_handshake_lifetimes_and_management() {
    let s = Setup::new(Options::default()).await;
    let (good, _) = receiver(true).await;
    let (bad, _) = receiver(false).await;
    let resource = "users/secmon@contoso.com/mailFolders('inbox')/messages";

    let (status, body) = s.send(Method::POST, "/subscriptions", &subscription(&bad, resource, 60)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "ValidationError");

    let (status, _) = s.send(Method::POST, "/subscriptions", &subscription(&good, resource, 10_081)).await;
    assert_eq!(status, 400, "messages subscriptions live at most 10080 minutes");
    let (status, _) =
        s.send(Method::POST, "/subscriptions", &subscription(&good, "security/alerts?$filter=x", 4231)).await;
    assert_eq!(status, 400, "other resources live at most 4230 minutes");
    let mut long_state = subscription(&good, resource, 60);
    long_state["clientState"] = json!("x".repeat(129));
    assert_eq!(s.send(Method::POST, "/subscriptions", &long_state).await.0, 400);
    let mut absolute = subscription(&good, resource, 60);
    absolute["resource"] = json!("https://graph.microsoft.com/v1.0/users/x/messages");
    assert_eq!(s.send(Method::POST, "/subscriptions", &absolute).await.0, 400);
    let mut missing = subscription(&good, resource, 60);
    missing.as_object_mut().unwrap().remove("changeType");
    assert_eq!(s.send(Method::POST, "/subscriptions", &missing).await.0, 400);

    let (status, created) = s.send(Method::POST, "/subscriptions", &subscription(&good, resource, 10_000)).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["resource"], resource);
    assert_eq!(created["applicationId"], CLIENT_ID);

    let (_, _, list) = s.get("/subscriptions", false).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    let renewed = (Utc::now() + chrono::Duration::minutes(120)).to_rfc3339();
    let (status, body) =
        s.send(Method::PATCH, &format!("/subscriptions/{id}"), &json!({"expirationDateTime": renewed})).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], id);
    assert_eq!(s.send(Method::POST, &format!("/subscriptions/{id}/reauthorize"), &json!({})).await.0, 200);
    let resp =
        s.http.delete(format!("{}/subscriptions/{id}", s.emu.graph_url())).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(s.get(&format!("/subscriptions/{id}"), false).await.0, 404);
}

#[tokio::test]
async fn delivered_mail_notifies_in_the_documented_shape() {
    let s = Setup::new(Options::default()).await;
    let (url, seen) = receiver(true).await;
    let (_, created) =
        s.send(Method::POST, "/subscriptions", &subscription(&url, "/users/SecMon@contoso.com/messages", 60)).await;
    let id = created["id"].as_str().unwrap().to_string();

    let deliveries = s.emu.deliver_mail(TENANT, "secmon@contoso.com", "Alert digest").await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, Some(202));
    assert!(s.emu.deliver_mail(TENANT, "other@contoso.com", "x").await.is_empty());
    assert!(s.emu.deliver_mail("other-tenant", "secmon@contoso.com", "x").await.is_empty());

    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let item = &got[0]["value"][0];
    let sample: Value =
        serde_json::from_str(include_str!("../../fixtures/samples/change-notification-webhook.json")).unwrap();
    let sample_item = &sample["value"][0];
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<HashSet<_>>();
    assert_eq!(keys(item), keys(sample_item));
    assert_eq!(keys(&item["resourceData"]), keys(&sample_item["resourceData"]));
    assert_eq!(item["subscriptionId"], id.as_str());
    assert_eq!(item["clientState"], "secretClientValue");
    assert_eq!(item["tenantId"], TENANT);
    assert_eq!(item["changeType"], "created");
    assert_eq!(item["resourceData"]["@odata.type"], "#Microsoft.Graph.Message");
    assert_eq!(s.emu.mailbox(TENANT, "secmon@contoso.com").len(), 1);

    let d = s.emu.send_lifecycle(&id, "reauthorizationRequired").await.unwrap();
    assert_eq!(d.status, Some(202));
    let got = seen.lock().unwrap().clone();
    let life = &got[1]["value"][0];
    assert_eq!(life["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(life["subscriptionId"], id.as_str());
    let sample: Value =
        serde_json::from_str(include_str!("../../fixtures/samples/lifecycle-notification.json")).unwrap();
    assert_eq!(keys(life), keys(&sample["value"][0]));
}

// ---------- sinks ----------

#[tokio::test]
async fn teams_workflow_sink_checks_signature_size_and_shape() {
    let s = Setup::new(Options::default()).await;
    let url = s.emu.teams_webhook_url("soc");
    assert_eq!(url, s.emu.teams_webhook_url("soc"), "stable per name");
    assert!(url.contains("/triggers/manual/paths/invoke?api-version=") && url.contains("&sig="));
    let card: Value =
        serde_json::from_str(include_str!("../../fixtures/samples/functions-teams-webhook-adaptive-card.json"))
            .unwrap();

    assert_eq!(s.http.post(&url).json(&card).send().await.unwrap().status(), 202);
    let forged = format!("{}&sig=forged", url.split("&sig=").next().unwrap());
    assert_eq!(s.http.post(&forged).json(&card).send().await.unwrap().status(), 401);
    let resp = s.http.post(&url).json(&json!({"text": "legacy connector"})).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.json::<Value>().await.unwrap()["error"]["code"].is_string());
    let mut big = card.clone();
    big["attachments"][0]["content"]["body"][0]["text"] = json!("x".repeat(29 * 1024));
    assert_eq!(s.http.post(&url).json(&big).send().await.unwrap().status(), 413);
    assert_eq!(s.emu.teams_messages("soc"), vec![card]);
    // The signature is redacted in the request log.
    assert!(
        s.emu
            .requests()
            .iter()
            .all(|r| { r.query.as_deref().is_none_or(|q| !q.contains(url.split("&sig=").nth(1).unwrap())) })
    );

    let sink = s.emu.webhook_sink_url("generic");
    let resp = s.http.post(&sink).header("x-signature", "abc").body(r#"{"k":1}"#).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let deliveries = s.emu.webhook_deliveries("generic");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].0["x-signature"], "abc");
    assert_eq!(deliveries[0].1, br#"{"k":1}"#.to_vec());
}
