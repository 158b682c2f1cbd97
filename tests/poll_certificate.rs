//! Polling with the client-certificate credential against the Graph emulator (TLS): the real
//! `ClientAssertionCredential` posts secmon's signed assertion to the emulator's token endpoint.
//!
//! The emulator accepts any well-formed JWT as an assertion for a registered client, and redacts
//! assertions in its request log. So the token calls go through a small HTTPS relay that keeps what
//! the credential sent, and the test checks the assertion as Entra would: the signature against the
//! certificate, then the audience, issuer, subject and lifetime.

#[path = "poll_support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::Path as UrlPath;
use axum::http::header::CONTENT_TYPE;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use secmon::graph::Retry;
use secmon::graph::auth::Auth;
use secmon::graph::client::GraphClient;
use secmon::intake::poll;
use secmon_emulator::Emulator;
use serde_json::{Value, json};
use sha2::Digest;
use support::*;
use tokio_rustls::{TlsAcceptor, rustls};

const NOW: &str = "2026-11-26T12:00:00Z";

/// A self-signed RSA certificate with its PKCS#8 key in one PEM file; returns the certificate's DER.
fn write_certificate(path: &Path) -> (Vec<u8>, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["secmon-poller".to_string()]).unwrap().self_signed(&key).unwrap();
    let key_pem = key.serialize_pem();
    std::fs::write(path, format!("{}{key_pem}", cert.pem())).unwrap();
    (cert.der().to_vec(), key_pem)
}

/// The tenant's config as a user writes it, with tokens from `authority`.
fn config(emu: &Emulator, authority: &str, certificate: &Path) -> secmon::config::Config {
    let text = format!(
        "graph_url: {}\nauthority_url: {}\ntenants:\n  - id: {}\n    name: contoso\n    credential:\n      kind: client_certificate\n      client_id: {CLIENT_ID}\n      certificate: {}\n",
        emu.graph_url(),
        authority,
        tenant_id("contoso"),
        certificate.display()
    );
    secmon::setup::load_str(&text, Path::new("secmon.yaml"), &|_| None, t(NOW)).unwrap().config
}

/// Accepts TLS connections for `axum::serve`.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((stream, addr)) = self.tcp.accept().await
                && let Ok(stream) = self.tls.accept(stream).await
            {
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// An HTTPS relay to the emulator's token endpoint that keeps every request body it forwards.
struct TokenRelay {
    url: String,
    ca_pem: String,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

async fn token_relay(emu: &Emulator) -> TokenRelay {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], leaf_key.serialize_der().try_into().unwrap())
        .unwrap();

    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (forward, target, kept) = (http_for(emu), emu.authority_url(), bodies.clone());
    let router = axum::Router::new().route(
        "/{tenant}/oauth2/v2.0/token",
        axum::routing::post(move |UrlPath(tenant): UrlPath<String>, body: Bytes| async move {
            kept.lock().unwrap().push(body.clone());
            let answer = forward
                .post(format!("{target}/{tenant}/oauth2/v2.0/token"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            (status, [(CONTENT_TYPE, "application/json")], answer.bytes().await.unwrap())
        }),
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", tcp.local_addr().unwrap());
    let listener = TlsListener { tcp, tls: TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move { axum::serve(listener, router).await });
    TokenRelay { url, ca_pem: ca.pem(), bodies }
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn a_certificate_credential_polls_with_an_assertion_signed_by_the_certificates_key() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("secmon.pem");
    let (cert_der, _) = write_certificate(&pem);
    let emu = emulator(50).await;
    let tid = tenant_id("contoso");
    // The emulator keys clients by secret; a certificate client simply never sends it.
    emu.add_client(&tid, CLIENT_ID, "never-sent");
    let relay = token_relay(&emu).await;
    let config = config(&emu, &relay.url, &pem);
    let mut r = rig_with(emu, config.clone(), t(NOW));
    // The rig's client trusts the emulator; this one trusts the relay too.
    let http = reqwest::Client::builder()
        .tls_certs_only(
            [&r.emu.ca_pem().unwrap(), &relay.ca_pem].map(|p| reqwest::Certificate::from_pem(p.as_bytes()).unwrap()),
        )
        .build()
        .unwrap();
    r.app.graph = Arc::new(GraphClient::new(&config, http.clone()).unwrap().with_sleeper(r.sleeper.clone()));
    r.app.http = http;
    assert_eq!(
        Auth::new(&config, r.app.http.clone()).describe("contoso").unwrap(),
        format!("client certificate {} (app {CLIENT_ID})", pem.display())
    );
    let ts = "2026-11-26T11:55:00.000Z";
    r.emu.seed_alerts(
        &tid,
        (0..3)
            .map(|i| json!({"id": format!("c-{i}"), "title": "alert", "severity": "high", "status": "new",
                            "serviceSource": "microsoftDefenderForEndpoint", "lastUpdateDateTime": ts, "createdDateTime": ts}))
            .collect(),
    );

    let report = poll::poll_tenant(&r.app, "contoso", t(NOW)).await.unwrap();
    assert_eq!((report.alerts_seen, report.queued), (3, 3), "{report:?}");
    assert_eq!(drain(&r).await.len(), 3);

    let token_calls = relay.bodies.lock().unwrap().clone();
    assert_eq!(token_calls.len(), 1, "one token, cached for the poll");
    assert!(r.emu.requests().iter().any(|q| q.path.ends_with("/oauth2/v2.0/token") && q.status == Some(200)));
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&token_calls[0]).into_owned().collect();
    assert!(!form.contains_key("client_secret"));
    assert_eq!(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], "https://graph.microsoft.com/.default");

    // What Entra would check: the signature against the registered certificate, then the claims.
    let assertion = &form["client_assertion"];
    let (signing_input, signature) = assertion.rsplit_once('.').unwrap();
    let der = CertificateDer::from(cert_der.as_slice());
    webpki::EndEntityCert::try_from(&der)
        .unwrap()
        .verify_signature(
            webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )
        .expect("the assertion is signed by the certificate's key");
    let (header, claims) = signing_input.split_once('.').unwrap();
    let (header, claims) = (decode(header), decode(claims));
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["x5t#S256"], URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&cert_der)));
    assert_eq!(claims["aud"], format!("{}/{tid}/oauth2/v2.0/token", relay.url));
    assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some(CLIENT_ID), Some(CLIENT_ID)));
    let now = chrono::Utc::now().timestamp();
    let (nbf, exp) = (claims["nbf"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
    assert!((now - 60..=now).contains(&nbf) && exp == nbf + 600, "{claims}");
}

#[tokio::test]
async fn a_certificate_file_that_cannot_work_is_a_permanent_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("secmon.pem");
    let (_, key_pem) = write_certificate(&pem);
    // Only the key: the certificate was left out when the file was assembled.
    std::fs::write(&pem, &key_pem).unwrap();
    let emu = emulator(50).await;
    emu.add_client(&tenant_id("contoso"), CLIENT_ID, "never-sent");
    let config = config(&emu, &emu.authority_url(), &pem);
    let r = rig_with(emu, config, t(NOW));

    let e = Auth::new(&r.app.config, r.app.http.clone()).token("contoso").await.unwrap_err();
    assert_eq!(e.retry, Retry::Permanent, "{e}");
    assert!(e.message.contains(&pem.display().to_string()) && e.message.contains("no certificate"), "{e}");
    let key_line = key_pem.lines().nth(1).unwrap();
    assert!(!e.to_string().contains(key_line), "{e}");
    let polled = poll::poll_tenant(&r.app, "contoso", t(NOW)).await.unwrap_err().to_string();
    assert!(polled.contains("no certificate"), "{polled}");
    assert!(r.emu.requests().is_empty(), "nothing was sent: {:?}", r.emu.requests().len());
}
