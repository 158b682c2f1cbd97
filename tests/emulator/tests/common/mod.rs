//! Helpers shared by the emulator's integration tests.

use secmon_emulator::{Emulator, Options};
use serde_json::Value;

pub const TENANT: &str = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
pub const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
pub const SECRET: &str = "s3cr3t~value";

/// A started emulator with one registered client, an HTTP client and a Graph token.
pub struct Setup {
    pub emu: Emulator,
    pub http: reqwest::Client,
    pub token: String,
}

impl Setup {
    pub async fn new(opts: Options) -> Setup {
        let emu = Emulator::start(opts).await.expect("emulator starts");
        emu.add_client(TENANT, CLIENT_ID, SECRET);
        let http = reqwest::Client::new();
        let token = token(&http, &emu.authority_url(), SECRET).await;
        Setup { emu, http, token }
    }

    /// GET a Graph path (relative to /v1.0) with the token; returns status, headers and JSON (Null if none).
    pub async fn get(&self, path_and_query: &str, prefer: bool) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if path_and_query.starts_with("http") {
            path_and_query.to_string()
        } else {
            format!("{}{path_and_query}", self.emu.graph_url())
        };
        let mut req = self.http.get(url).bearer_auth(&self.token);
        if prefer {
            req = req.header("Prefer", "include-unknown-enum-members");
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// Sends a JSON body with the token; returns status and JSON body (Null if none).
    pub async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.emu.graph_url()))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Client-credentials token for the test client, panicking unless the endpoint answers 200.
pub async fn token(http: &reqwest::Client, authority: &str, secret: &str) -> String {
    let resp = http
        .post(format!("{authority}/{TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("token json");
    body["access_token"].as_str().expect("access_token").to_string()
}
