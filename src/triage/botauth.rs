//! Bot Connector token validation: who may post an activity (a card click) to secmon's bot endpoint.
//!
//! Every inbound activity carries `Authorization: Bearer <JWT>` signed by the Bot Connector. It is
//! accepted only when all of these hold (Bot Framework "authenticate requests from the Bot Connector
//! service"):
//! - the header is `Bearer` and the token is a JWT signed with **RS256** (no `none`, no HMAC);
//! - its `kid` names a key of the Bot Connector's JWKS, found through the OpenID metadata document
//!   (`jwks_uri`); keys are cached and fetched again when a token names an unknown `kid` (at most once a
//!   minute, so forged `kid`s cannot make secmon hammer the metadata) or when the cache is a day old;
//! - the key is endorsed for the activity's channel (`endorsements`, when the key lists any);
//! - the signature verifies with that key;
//! - `iss` is the Bot Connector's issuer (`https://api.botframework.com`);
//! - `aud` is the bot's app id;
//! - `exp` and `nbf` hold within [`CLOCK_SKEW`] (a token without `exp` is refused);
//! - the `serviceUrl` claim equals the activity's `serviceUrl` (else a token issued for one Teams
//!   region could be replayed with an activity naming another service URL, where secmon would then post).
//!
//! Anything that fails the token itself is [`Refusal::Unauthorized`] (401); a valid token for another
//! service URL is [`Refusal::Forbidden`] (403). When the keys cannot be fetched the answer is
//! [`Refusal::Unavailable`] (503: the Bot Connector retries). The reasons are for the log; the HTTP
//! answer says only the status, so nothing of the token is echoed.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

/// The Bot Connector's OpenID metadata in the global cloud.
pub const OPENID_METADATA: &str = "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// The Bot Connector's OpenID metadata in US Government clouds.
pub const OPENID_METADATA_US_GOV: &str = "https://login.botframework.azure.us/v1/.well-known/openidconfiguration";
/// The issuer of tokens the Bot Connector sends to bots.
pub const ISSUER: &str = "https://api.botframework.com";
/// How far `exp` and `nbf` may be off: the Bot Framework's own 5 minutes.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// Keys older than this are fetched again on the next token.
const KEYS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// An unknown `kid` fetches the keys again at most this often.
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(60);
/// The longest token accepted (a Bot Connector token is about 1 KB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the check needs to know about this bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotAuthSettings {
    /// The bot's Microsoft App ID: the tokens' audience.
    pub app_id: String,
    /// Where the OpenID metadata is ([`OPENID_METADATA`]; a test points it at the emulator).
    pub openid_metadata: String,
    /// The expected issuer ([`ISSUER`]).
    pub issuer: String,
}

impl BotAuthSettings {
    /// The Bot Connector's settings in the global cloud for the bot `app_id`.
    pub fn global(app_id: &str) -> Self {
        Self { app_id: app_id.to_string(), openid_metadata: OPENID_METADATA.to_string(), issuer: ISSUER.to_string() }
    }
}

/// Why a request was refused; the reason goes to the log, never into the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token, or a token that is not valid (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A valid token that does not allow this request (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The signing keys could not be fetched (503).
    #[error("cannot check tokens now: {0}")]
    Unavailable(String),
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unauthorized(_) => 401,
            Refusal::Forbidden(_) => 403,
            Refusal::Unavailable(_) => 503,
        }
    }
}

/// The claims of an accepted token that the caller may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The service URL the token was issued for (equal to the activity's).
    pub service_url: String,
    /// The token's `exp`.
    pub expires: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    #[serde(default)]
    kty: String,
    kid: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    e: String,
    #[serde(default)]
    endorsements: Option<Vec<String>>,
}

#[derive(Debug, Default)]
struct Keys {
    by_kid: HashMap<String, Jwk>,
    fetched: Option<DateTime<Utc>>,
}

/// The token check with its key cache; one per bot, shared by every request.
#[derive(Debug)]
pub struct BotAuth {
    settings: BotAuthSettings,
    http: reqwest::Client,
    keys: Mutex<Keys>,
}

impl BotAuth {
    /// A check for `settings`; keys are fetched with `http` on the first token.
    pub fn new(settings: BotAuthSettings, http: reqwest::Client) -> Self {
        Self { settings, http, keys: Mutex::new(Keys::default()) }
    }

    /// Checks the `Authorization` header of an activity that names `service_url` and `channel_id`.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        service_url: &str,
        channel_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Verified, Refusal> {
        let unauthorized = |why: &str| Refusal::Unauthorized(why.to_string());
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("no Bearer token"))?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized("token too long"));
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(unauthorized("not a JWT (three parts)"));
        };
        let header: Value = decode_json(h64).ok_or_else(|| unauthorized("header is not base64url JSON"))?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(unauthorized("alg is not RS256"));
        }
        let kid = header.get("kid").and_then(Value::as_str).ok_or_else(|| unauthorized("no kid"))?;
        let signature = URL_SAFE_NO_PAD.decode(s64).map_err(|_| unauthorized("signature is not base64url"))?;
        let key = self.key(kid, now).await?.ok_or_else(|| unauthorized("kid is not a Bot Connector key"))?;
        if key.kty != "RSA" {
            return Err(unauthorized("key is not RSA"));
        }
        if let Some(endorsed) = &key.endorsements
            && !endorsed.iter().any(|c| c == channel_id)
        {
            return Err(unauthorized("key is not endorsed for the activity's channel"));
        }
        let (n, e) = match (URL_SAFE_NO_PAD.decode(&key.n), URL_SAFE_NO_PAD.decode(&key.e)) {
            (Ok(n), Ok(e)) => (n, e),
            _ => return Err(unauthorized("key is not base64url")),
        };
        let public = aws_lc_rs::signature::RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() };
        let signed = &token[..h64.len() + 1 + c64.len()];
        public
            .verify(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
            .map_err(|_| unauthorized("signature does not verify"))?;

        let claims: Value = decode_json(c64).ok_or_else(|| unauthorized("claims are not base64url JSON"))?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err(unauthorized("wrong issuer"));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.settings.app_id,
            Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(self.settings.app_id.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(unauthorized("wrong audience"));
        }
        let skew = chrono::Duration::from_std(CLOCK_SKEW).expect("skew fits");
        let time = |name: &str| claims.get(name).and_then(Value::as_i64).and_then(|s| DateTime::from_timestamp(s, 0));
        let expires = time("exp").ok_or_else(|| unauthorized("no exp"))?;
        if now > expires + skew {
            return Err(unauthorized("expired"));
        }
        if let Some(nbf) = time("nbf")
            && now + skew < nbf
        {
            return Err(unauthorized("not valid yet"));
        }
        let claimed = claims.get("serviceUrl").or_else(|| claims.get("serviceurl")).and_then(Value::as_str);
        let Some(claimed) = claimed else {
            return Err(Refusal::Forbidden("token has no serviceUrl".into()));
        };
        if !same_service_url(claimed, service_url) {
            return Err(Refusal::Forbidden("token was issued for another service URL".into()));
        }
        Ok(Verified { service_url: claimed.to_string(), expires })
    }

    /// The key `kid`, fetching the keys when the cache is empty, a day old, or lacks `kid` (at most
    /// once per [`REFRESH_AT_MOST_EVERY`]).
    async fn key(&self, kid: &str, now: DateTime<Utc>) -> Result<Option<Jwk>, Refusal> {
        let mut keys = self.keys.lock().await;
        let age = keys.fetched.map(|at| (now - at).to_std().unwrap_or_default());
        let stale = age.is_none_or(|a| a >= KEYS_MAX_AGE);
        let may_refresh = age.is_none_or(|a| a >= REFRESH_AT_MOST_EVERY);
        if stale || (!keys.by_kid.contains_key(kid) && may_refresh) {
            match self.fetch().await {
                Ok(by_kid) => *keys = Keys { by_kid, fetched: Some(now) },
                // Keys a day old still check tokens better than none while the metadata is down.
                Err(why) if keys.by_kid.is_empty() => return Err(Refusal::Unavailable(why)),
                Err(why) => tracing::warn!("Bot Connector keys not refreshed: {why}"),
            }
        }
        Ok(keys.by_kid.get(kid).cloned())
    }

    async fn fetch(&self) -> Result<HashMap<String, Jwk>, String> {
        let get = |url: String| async move {
            let resp = self.http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("GET {url}: HTTP {}", resp.status()));
            }
            resp.json::<Value>().await.map_err(|e| format!("GET {url}: {e}"))
        };
        let metadata = get(self.settings.openid_metadata.clone()).await?;
        let jwks_uri = metadata
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: no jwks_uri", self.settings.openid_metadata))?;
        let jwks = get(jwks_uri.to_string()).await?;
        let keys: Vec<Value> = jwks.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
        // A key this check cannot use (another type, no kid) is skipped, not fatal for the others.
        Ok(keys.into_iter().filter_map(|k| serde_json::from_value::<Jwk>(k).ok()).map(|k| (k.kid.clone(), k)).collect())
    }
}

/// The audiences an `Authorization: Bearer <JWT>` header's token names, **unverified**: only to pick
/// which bot's [`BotAuth`] checks it (which then checks the audience again, with the signature). Empty
/// when the header holds no readable JWT.
pub fn audiences(authorization: Option<&str>) -> Vec<String> {
    let token = authorization.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
    let Some(token) = token.map(str::trim).filter(|t| t.len() <= MAX_TOKEN_BYTES) else {
        return Vec::new();
    };
    let claims = token.split('.').nth(1).and_then(decode_json);
    match claims.as_ref().and_then(|c| c.get("aud")) {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(all)) => all.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// Service URLs compare without case in the scheme and host and without a trailing slash.
fn same_service_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'))
}

fn decode_json(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls_compare_without_trailing_slash_or_case() {
        assert!(same_service_url("https://smba.trafficmanager.net/emea/", "https://smba.trafficmanager.net/emea"));
        assert!(same_service_url("https://SMBA.trafficmanager.net/emea", "https://smba.trafficmanager.net/emea/"));
        assert!(!same_service_url("https://smba.trafficmanager.net/emea/", "https://smba.trafficmanager.net/amer/"));
    }

    #[tokio::test]
    async fn malformed_headers_are_unauthorized_without_fetching_keys() {
        // The metadata URL is unreachable: none of these may get as far as fetching keys.
        let auth = BotAuth::new(
            BotAuthSettings { openid_metadata: "http://127.0.0.1:9/none".into(), ..BotAuthSettings::global("app") },
            reqwest::Client::new(),
        );
        let now = Utc::now();
        for header in [None, Some("Basic abc"), Some("Bearer "), Some("Bearer a.b"), Some("Bearer a.b.c.d")] {
            let refused = auth.verify(header, "https://s/", "msteams", now).await.unwrap_err();
            assert_eq!(refused.status(), 401, "{header:?}: {refused}");
        }
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(b"{}"));
        let refused = auth.verify(Some(&format!("Bearer {none}")), "https://s/", "msteams", now).await.unwrap_err();
        assert_eq!(refused, Refusal::Unauthorized("alg is not RS256".into()));
    }
}
