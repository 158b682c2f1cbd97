//! A Bot Connector stand-in (Bot Framework v3 REST): the OpenID metadata and JWKS a bot checks inbound
//! tokens against, tokens signed with the stand-in's own RSA key, and the conversation endpoints a bot
//! posts to (`POST /v3/conversations/{id}/activities`, `PUT /v3/conversations/{id}/activities/{activityId}`).
//!
//! The service URL is `{base}/botconnector/` and the metadata `{base}/botframework/v1/.well-known/openidconfiguration`.
//! The bot's outbound calls need a token from the emulator's token endpoint (any registered client,
//! `scope=https://api.botframework.com/.default`); every call is recorded ([`BotCall`]).

use std::sync::OnceLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::state::{AppState, json_response, random_string};

/// The issuer of Bot Connector tokens.
pub const ISSUER: &str = "https://api.botframework.com";

/// One call a bot made to the Bot Connector stand-in.
#[derive(Debug, Clone, PartialEq)]
pub struct BotCall {
    /// `POST` (a new activity) or `PUT` (an update in place).
    pub method: String,
    /// The conversation id from the path.
    pub conversation: String,
    /// The activity id: the one assigned to a new activity, or the one updated.
    pub activity_id: String,
    /// The client id of the bot's token.
    pub client_id: String,
    /// The activity sent.
    pub activity: Value,
}

/// A signing key with its `kid`.
pub(crate) struct SigningKey {
    pub kid: String,
    pair: KeyPair,
}

impl SigningKey {
    pub(crate) fn generate() -> SigningKey {
        SigningKey { kid: random_string(16), pair: KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation") }
    }

    /// The JWK of the public key, endorsed for `msteams` (as the Bot Connector's keys are).
    pub(crate) fn jwk(&self) -> Value {
        let (n, e) = rsa_public_components(self.pair.public_key().as_ref());
        json!({
            "kty": "RSA", "use": "sig", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
            "endorsements": ["msteams"],
        })
    }

    /// A compact RS256 JWT of `claims`, with `kid` in the header.
    pub(crate) fn sign(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let signed =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signed.as_bytes(), &mut signature).expect("RSA sign");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// The stand-in's key, made on first use (RSA key generation is not free; most tests never need it).
pub(crate) fn key(cell: &OnceLock<SigningKey>) -> &SigningKey {
    cell.get_or_init(SigningKey::generate)
}

/// `n` and `e` of a DER `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`, RFC 8017), leading zeros
/// stripped as JWK wants them.
fn rsa_public_components(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn tlv(input: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(input[0], tag, "DER tag");
        let (len, header) = match input[1] {
            l if l < 0x80 => (l as usize, 2),
            l => {
                let n = (l & 0x7f) as usize;
                (input[2..2 + n].iter().fold(0usize, |acc, b| acc << 8 | *b as usize), 2 + n)
            }
        };
        (&input[header..header + len], &input[header + len..])
    }
    let (seq, _) = tlv(der, 0x30);
    let (n, rest) = tlv(seq, 0x02);
    let (e, _) = tlv(rest, 0x02);
    let strip = |b: &[u8]| b.iter().skip_while(|x| **x == 0).copied().collect::<Vec<u8>>();
    (strip(n), strip(e))
}

/// `GET /botframework/v1/.well-known/openidconfiguration`.
pub(crate) async fn openid_configuration(State(state): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "issuer": ISSUER,
            "authorization_endpoint": "https://invalid.botframework.com",
            "jwks_uri": format!("{}/botframework/v1/.well-known/keys", state.base_url),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        }),
    )
}

/// `GET /botframework/v1/.well-known/keys`.
pub(crate) async fn keys(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!({"keys": [key(&state.bot_key).jwk()]}))
}

/// `POST /botconnector/v3/conversations/{conversation}/activities`: a new activity; answers its id.
pub(crate) async fn post_activity(
    State(state): State<AppState>,
    Path(conversation): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, "POST", conversation, None, &headers, &body)
}

/// `PUT /botconnector/v3/conversations/{conversation}/activities/{activity}`: an update in place.
pub(crate) async fn put_activity(
    State(state): State<AppState>,
    Path((conversation, activity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    record(&state, "PUT", conversation, Some(activity), &headers, &body)
}

fn record(
    state: &AppState,
    method: &str,
    conversation: String,
    activity_id: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let info = match state.authenticate(headers) {
        Ok(info) => info,
        Err(refused) => return refused,
    };
    let Ok(activity) = serde_json::from_slice::<Value>(body) else {
        return bot_error(StatusCode::BAD_REQUEST, "BadSyntax", "The activity is not JSON.");
    };
    if activity.get("type").and_then(Value::as_str) != Some("message") {
        return bot_error(StatusCode::BAD_REQUEST, "BadArgument", "The activity type must be 'message'.");
    }
    let mut inner = state.lock();
    if let Some(id) = &activity_id
        && !inner.bot_calls.iter().any(|c| c.conversation == conversation && c.method == "POST" && c.activity_id == *id)
    {
        return bot_error(StatusCode::NOT_FOUND, "ActivityNotFound", "The activity was not found.");
    }
    let id = activity_id.unwrap_or_else(|| format!("1:{}", random_string(20)));
    inner.bot_calls.push(BotCall {
        method: method.to_string(),
        conversation,
        activity_id: id.clone(),
        client_id: info.client_id,
        activity,
    });
    json_response(if method == "POST" { StatusCode::CREATED } else { StatusCode::OK }, &json!({"id": id}))
}

/// The Bot Framework's error body.
fn bot_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &json!({"error": {"code": code, "message": message}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_token_verifies_with_its_jwk() {
        let key = SigningKey::generate();
        let token = key.sign(&key.kid, &json!({"iss": ISSUER}));
        let jwk = key.jwk();
        let b64 = |f: &str| URL_SAFE_NO_PAD.decode(jwk[f].as_str().unwrap()).unwrap();
        let (n, e) = (b64("n"), b64("e"));
        assert_eq!(n.len(), 256);
        assert_eq!(e, [1, 0, 1]);
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let public = aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e };
        public
            .verify(
                &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(sig).unwrap(),
            )
            .unwrap();
    }
}
