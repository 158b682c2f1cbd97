//! The Bot Connector token check against the emulator's Bot Connector stand-in: its OpenID metadata and
//! JWKS over HTTP, tokens signed with its own key, and each way a token can be wrong.

use chrono::{DateTime, Duration, Utc};
use secmon::triage::botauth::{BotAuth, BotAuthSettings, CLOCK_SKEW, ISSUER, Refusal};
use secmon_emulator::{Emulator, Options};
use serde_json::{Value, json};

const APP_ID: &str = "6f0a1c2e-0000-4000-8000-00000000b0t1";

struct Fixture {
    emu: Emulator,
    auth: BotAuth,
    service_url: String,
    now: DateTime<Utc>,
}

async fn fixture() -> Fixture {
    let emu = Emulator::start(Options::default()).await.unwrap();
    let settings = BotAuthSettings { openid_metadata: emu.bot_openid_url(), ..BotAuthSettings::global(APP_ID) };
    let auth = BotAuth::new(settings, reqwest::Client::new());
    let service_url = emu.bot_service_url();
    let now: DateTime<Utc> = "2026-12-01T10:42:00Z".parse().unwrap();
    Fixture { emu, auth, service_url, now }
}

impl Fixture {
    fn claims(&self) -> Value {
        json!({
            "iss": ISSUER, "aud": APP_ID, "serviceUrl": self.service_url,
            "nbf": self.now.timestamp() - 60, "exp": self.now.timestamp() + 3600,
        })
    }

    fn with(&self, field: &str, value: Value) -> String {
        let mut claims = self.claims();
        claims[field] = value;
        self.emu.bot_token_with(&claims)
    }

    async fn check(&self, token: &str) -> Result<(), Refusal> {
        self.check_at(token, self.now).await
    }

    async fn check_at(&self, token: &str, now: DateTime<Utc>) -> Result<(), Refusal> {
        let header = format!("Bearer {token}");
        self.auth.verify(Some(&header), &self.service_url, "msteams", now).await.map(|_| ())
    }

    fn key_fetches(&self) -> usize {
        self.emu.requests().iter().filter(|r| r.path == "/botframework/v1/.well-known/keys").count()
    }
}

#[tokio::test]
async fn a_token_the_connector_signed_is_accepted_and_the_keys_are_fetched_once() {
    let f = fixture().await;
    let token = f.emu.bot_token(APP_ID, &f.service_url, f.now - Duration::minutes(1));
    let verified = f.auth.verify(Some(&format!("Bearer {token}")), &f.service_url, "msteams", f.now).await.unwrap();
    assert_eq!(verified.service_url, f.service_url);
    assert_eq!(verified.expires, f.now + Duration::minutes(59));
    // The service URL may differ by a trailing slash only.
    let bare = f.service_url.trim_end_matches('/');
    f.auth.verify(Some(&format!("Bearer {token}")), bare, "msteams", f.now).await.unwrap();
    for _ in 0..3 {
        f.check(&token).await.unwrap();
    }
    assert_eq!(f.key_fetches(), 1, "the keys are cached");
}

#[tokio::test]
async fn a_forged_token_is_unauthorized_and_refetches_the_keys_at_most_once_a_minute() {
    let f = fixture().await;
    f.check(&f.emu.bot_token_with(&f.claims())).await.unwrap();
    let forged = f.emu.forged_bot_token(&f.claims());
    assert_eq!(f.check(&forged).await, Err(Refusal::Unauthorized("signature does not verify".into())));

    // An unknown kid makes the check fetch the keys again, but not on every request.
    let mut header: Value = json!({"alg": "RS256", "kid": "rotated-away"});
    let unknown = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        header["typ"] = json!("JWT");
        format!("{}.{}.{}", b64.encode(header.to_string()), b64.encode(f.claims().to_string()), b64.encode([0u8; 256]))
    };
    let later = f.now + Duration::minutes(2);
    for _ in 0..5 {
        let refused = f.check_at(&unknown, later).await.unwrap_err();
        assert_eq!(refused, Refusal::Unauthorized("kid is not a Bot Connector key".into()));
    }
    assert_eq!(f.key_fetches(), 2, "one refetch for the unknown kid within the minute");
}

#[tokio::test]
async fn expiry_and_not_before_hold_within_five_minutes_of_skew() {
    let f = fixture().await;
    assert_eq!(CLOCK_SKEW, std::time::Duration::from_secs(300));
    let expired_at = f.now.timestamp() - 60;
    let token = f.with("exp", json!(expired_at));
    // Expired a minute ago: within the skew, still accepted.
    f.check(&token).await.unwrap();
    // Expired more than five minutes ago: refused.
    let long_ago = f.with("exp", json!(f.now.timestamp() - 301));
    assert_eq!(f.check(&long_ago).await, Err(Refusal::Unauthorized("expired".into())));
    let future = f.with("nbf", json!(f.now.timestamp() + 301));
    assert_eq!(f.check(&future).await, Err(Refusal::Unauthorized("not valid yet".into())));
    f.check(&f.with("nbf", json!(f.now.timestamp() + 299))).await.unwrap();
    let mut claims = f.claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(f.check(&f.emu.bot_token_with(&claims)).await, Err(Refusal::Unauthorized("no exp".into())));
}

#[tokio::test]
async fn a_wrong_audience_or_issuer_is_unauthorized() {
    let f = fixture().await;
    let other_bot = f.with("aud", json!("another-bot"));
    assert_eq!(f.check(&other_bot).await, Err(Refusal::Unauthorized("wrong audience".into())));
    let issuer = f.with("iss", json!("https://sts.windows.net/evil/"));
    assert_eq!(f.check(&issuer).await, Err(Refusal::Unauthorized("wrong issuer".into())));
    // An audience list holding the app id is the bot's.
    f.check(&f.with("aud", json!(["x", APP_ID]))).await.unwrap();
}

#[tokio::test]
async fn a_token_for_another_service_url_is_forbidden() {
    let f = fixture().await;
    let other = f.with("serviceUrl", json!("https://smba.trafficmanager.net/amer/"));
    let refused = f.check(&other).await.unwrap_err();
    assert_eq!(refused.status(), 403);
    let mut claims = f.claims();
    claims.as_object_mut().unwrap().remove("serviceUrl");
    let refused = f.check(&f.emu.bot_token_with(&claims)).await.unwrap_err();
    assert_eq!(refused, Refusal::Forbidden("token has no serviceUrl".into()));
}

#[tokio::test]
async fn a_key_not_endorsed_for_the_channel_is_unauthorized() {
    let f = fixture().await;
    let token = f.emu.bot_token_with(&f.claims());
    let refused = f.auth.verify(Some(&format!("Bearer {token}")), &f.service_url, "webchat", f.now).await.unwrap_err();
    assert_eq!(refused, Refusal::Unauthorized("key is not endorsed for the activity's channel".into()));
}

#[tokio::test]
async fn unreachable_metadata_is_unavailable_not_accepted() {
    let f = fixture().await;
    let settings =
        BotAuthSettings { openid_metadata: format!("{}/nowhere", f.emu.base_url()), ..BotAuthSettings::global(APP_ID) };
    let auth = BotAuth::new(settings, reqwest::Client::new());
    let token = f.emu.bot_token_with(&f.claims());
    let refused = auth.verify(Some(&format!("Bearer {token}")), &f.service_url, "msteams", f.now).await.unwrap_err();
    assert_eq!(refused.status(), 503, "{refused}");
}

#[tokio::test]
async fn the_stand_in_records_proactive_posts_and_updates_from_an_authenticated_bot() {
    let f = fixture().await;
    let tenant = "00000000-0000-0000-0000-000000000001";
    let token = f.emu.issue_token(tenant, APP_ID);
    let http = reqwest::Client::new();
    let url = format!("{}v3/conversations/19:abc@thread.tacv2/activities", f.service_url);
    let card = json!({"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
        "content": {"type": "AdaptiveCard", "version": "1.4", "body": []}}]});
    let unauthenticated = http.post(&url).json(&card).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let posted: Value = http.post(&url).bearer_auth(&token).json(&card).send().await.unwrap().json().await.unwrap();
    let id = posted["id"].as_str().unwrap().to_string();
    let update = http.put(format!("{url}/{id}")).bearer_auth(&token).json(&card).send().await.unwrap();
    assert_eq!(update.status(), 200);
    let missing = http.put(format!("{url}/1:nope")).bearer_auth(&token).json(&card).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let calls = f.emu.bot_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].method.as_str(), calls[1].method.as_str()), ("POST", "PUT"));
    assert_eq!(calls[1].activity_id, id);
    assert_eq!(calls[0].conversation, "19:abc@thread.tacv2");
    assert_eq!(calls[0].client_id, APP_ID);
}
