//! Client-certificate authentication without OpenSSL.
//!
//! `azure_identity`'s `ClientCertificateCredential` needs OpenSSL, which the static release binary
//! cannot carry. secmon signs the Microsoft identity platform's certificate assertion itself
//! (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>) with aws-lc-rs,
//! which rustls already links in, and hands it to `ClientAssertionCredential`.
//!
//! The file is PEM: the certificate and its unencrypted RSA private key (PKCS#8 `PRIVATE KEY` or
//! PKCS#1 `RSA PRIVATE KEY`), in any order; more certificates (a chain) may be present, and the one
//! the key belongs to is used. It is read once, when the tenant's credential is first built, so a
//! renewed certificate is picked up on restart.

use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{ClientMethodOptions, ClientOptions};
use azure_core::time::OffsetDateTime;
use azure_identity::{ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use zeroize::Zeroizing;

/// How long an assertion is valid. It is signed afresh for every token request, so short is enough.
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// Why a certificate file cannot be used. Every message names the file and none shows key material.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The file could not be read.
    #[error("client certificate {path}: cannot read the file: {source}")]
    Read {
        /// The configured path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A binary file: PKCS#12 (`.pfx`, `.p12`) or DER.
    #[error(
        "client certificate {path}: not a PEM file (PKCS#12 .pfx/.p12 or DER?); secmon reads PEM only: convert a PKCS#12 file with `openssl pkcs12 -in {path} -nodes -out secmon-cert.pem` and point `certificate` at the result"
    )]
    NotPem {
        /// The configured path.
        path: String,
    },
    /// PEM text that does not parse.
    #[error("client certificate {path}: malformed PEM ({reason})")]
    BadPem {
        /// The configured path.
        path: String,
        /// What is wrong, without the file's contents.
        reason: &'static str,
    },
    /// The private key is protected by a passphrase.
    #[error(
        "client certificate {path}: the private key is encrypted; secmon needs it unencrypted: `openssl pkey -in {path} -out key.pem`, then put key.pem and the certificate in one file readable only by secmon"
    )]
    EncryptedKey {
        /// The configured path.
        path: String,
    },
    /// No `CERTIFICATE` section.
    #[error("client certificate {path}: no certificate (-----BEGIN CERTIFICATE-----) in the file")]
    NoCertificate {
        /// The configured path.
        path: String,
    },
    /// No private key section.
    #[error(
        "client certificate {path}: no private key (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----) in the file"
    )]
    NoKey {
        /// The configured path.
        path: String,
    },
    /// More than one private key.
    #[error("client certificate {path}: more than one private key in the file; keep only the certificate's")]
    SeveralKeys {
        /// The configured path.
        path: String,
    },
    /// The key is not an RSA key of 2048 to 8192 bits, or is malformed.
    #[error(
        "client certificate {path}: the private key is not a usable RSA key ({reason}); Entra certificate assertions are RS256 and need RSA, 2048 to 8192 bits"
    )]
    BadKey {
        /// The configured path.
        path: String,
        /// The key parser's reason, e.g. `WrongAlgorithm`.
        reason: String,
    },
    /// No certificate in the file could be parsed.
    #[error("client certificate {path}: the certificate is not a valid X.509 v3 certificate ({reason})")]
    BadCertificate {
        /// The configured path.
        path: String,
        /// The parser's reason.
        reason: String,
    },
    /// No certificate in the file carries the key's public half.
    #[error("client certificate {path}: the private key does not belong to the certificate in the file")]
    KeyMismatch {
        /// The configured path.
        path: String,
    },
}

/// A certificate and its private key, ready to sign client assertions.
pub struct Certificate {
    path: String,
    key: RsaKeyPair,
    /// base64url SHA-1 of the DER certificate (`x5t`).
    x5t: String,
    /// base64url SHA-256 of the DER certificate (`x5t#S256`).
    x5t_s256: String,
}

impl std::fmt::Debug for Certificate {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("path", &self.path)
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Reads the certificate and key from the PEM file at `path`.
    pub fn from_pem_file(path: &str) -> Result<Self, CertificateError> {
        let bytes = Zeroizing::new(
            std::fs::read(path).map_err(|source| CertificateError::Read { path: path.to_string(), source })?,
        );
        Self::from_pem(path, &bytes)
    }

    /// Parses PEM text; `path` names the file in errors.
    pub fn from_pem(path: &str, pem: &[u8]) -> Result<Self, CertificateError> {
        let path = path.to_string();
        if !contains(pem, b"-----BEGIN ") {
            return Err(CertificateError::NotPem { path });
        }
        // PKCS#8 encrypted keys and OpenSSL's legacy encrypted PKCS#1 keys (with PEM headers).
        if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || contains(pem, b"Proc-Type: 4,ENCRYPTED") {
            return Err(CertificateError::EncryptedKey { path });
        }
        let mut certificates = Vec::new();
        let mut keys = Vec::new();
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
            let (kind, der) =
                section.map_err(|e| CertificateError::BadPem { path: path.clone(), reason: pem_reason(&e) })?;
            match kind {
                SectionKind::Certificate => certificates.push(CertificateDer::from(der)),
                // Wrapped at once so the key bytes are zeroed when dropped.
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                    keys.extend(PrivateKeyDer::from_pem(kind, der))
                }
                _ => {}
            }
        }
        if certificates.is_empty() {
            return Err(CertificateError::NoCertificate { path });
        }
        let key = match keys.as_slice() {
            [] => return Err(CertificateError::NoKey { path }),
            [key] => key,
            _ => return Err(CertificateError::SeveralKeys { path }),
        };
        let key = match key {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(CertificateError::BadKey { path, reason: "not an RSA key".into() }),
        }
        .map_err(|e| CertificateError::BadKey { path: path.clone(), reason: e.to_string() })?;
        let der = leaf_for(&path, &key, &certificates)?;
        Ok(Self {
            x5t: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der)),
            x5t_s256: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, der)),
            path,
            key,
        })
    }

    /// The signed client assertion (a JWT) for `client_id` at the token endpoint `audience`, valid
    /// from `now` for ten minutes, with a random `jti`.
    pub fn assertion(&self, client_id: &str, audience: &str, now: OffsetDateTime) -> azure_core::Result<String> {
        let now = now.unix_timestamp();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t, "x5t#S256": self.x5t_s256});
        let claims = json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = sign(&self.key, signing_input.as_bytes()).ok_or_else(|| {
            azure_core::Error::with_message(
                ErrorKind::Credential,
                format!("client certificate {}: signing the client assertion failed", self.path),
            )
        })?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature of `message`.
fn sign(key: &RsaKeyPair, message: &[u8]) -> Option<Vec<u8>> {
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut signature).ok()?;
    Some(signature)
}

/// The certificate the key belongs to: the one that verifies a signature made with the key, which is
/// exactly the check Entra makes.
fn leaf_for<'a>(
    path: &str,
    key: &RsaKeyPair,
    certificates: &'a [CertificateDer<'static>],
) -> Result<&'a CertificateDer<'static>, CertificateError> {
    const PROBE: &[u8] = b"secmon: does this key belong to this certificate?";
    let signature = sign(key, PROBE)
        .ok_or_else(|| CertificateError::BadKey { path: path.to_string(), reason: "it cannot sign".into() })?;
    let mut parse_error = None;
    for der in certificates {
        match webpki::EndEntityCert::try_from(der) {
            Ok(cert) => {
                if cert.verify_signature(webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256, PROBE, &signature).is_ok() {
                    return Ok(der);
                }
            }
            Err(e) => {
                parse_error.get_or_insert(e);
            }
        }
    }
    // A certificate that does not parse may well be the key's own: report that rather than a mismatch.
    Err(match parse_error {
        Some(e) => CertificateError::BadCertificate { path: path.to_string(), reason: format!("{e:?}") },
        None => CertificateError::KeyMismatch { path: path.to_string() },
    })
}

/// What is wrong with PEM text, without echoing any of it.
fn pem_reason(e: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a section has no END line",
        Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        Error::Base64Decode(_) => "a section is not valid base64",
        _ => "unreadable",
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Supplies a freshly signed assertion for every token request.
struct Assertion {
    certificate: Certificate,
    client_id: String,
    audience: String,
}

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertion")
            .field("certificate", &self.certificate)
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish()
    }
}

#[async_trait::async_trait]
impl ClientAssertion for Assertion {
    async fn secret(&self, _options: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.certificate.assertion(&self.client_id, &self.audience, OffsetDateTime::now_utc())
    }
}

/// The credential for an app registration that proves itself with `certificate`, getting tokens
/// from `authority` (the login host) for `tenant_id`.
pub(crate) fn credential(
    tenant_id: &str,
    client_id: &str,
    certificate: Certificate,
    authority: &str,
    options: ClientOptions,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    // The audience is the token endpoint, built the way `ClientAssertionCredential` builds it.
    let audience =
        url::Url::parse(authority).and_then(|a| a.join(&format!("/{tenant_id}/oauth2/v2.0/token"))).map_err(|e| {
            azure_core::Error::with_message(ErrorKind::DataConversion, format!("token endpoint for {tenant_id}: {e}"))
        })?;
    let assertion = Assertion { certificate, client_id: client_id.to_string(), audience: audience.to_string() };
    ClientAssertionCredential::new(
        tenant_id.to_string(),
        client_id.to_string(),
        assertion,
        Some(ClientAssertionCredentialOptions { client_options: options }),
    )
    .map(|c| c as Arc<dyn TokenCredential>)
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use serde_json::Value;
    use sha2::Digest;

    use super::*;

    const CLIENT: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
    const AUDIENCE: &str = "https://login.example/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token";

    /// A self-signed RSA certificate and its key, as PEM; the certificate's DER.
    struct Pair {
        cert_pem: String,
        key_pem: String,
        der: Vec<u8>,
    }

    fn pair(name: &str) -> Pair {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        Pair { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    // RSA key generation is slow in debug builds: two pairs serve every test.
    static APP: LazyLock<Pair> = LazyLock::new(|| pair("secmon-test-app"));
    static OTHER: LazyLock<Pair> = LazyLock::new(|| pair("someone-else"));

    fn b64(data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(data)
    }

    fn decode(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// Verifies an RS256 JWT with the certificate's public key, as Entra does; returns (header, claims).
    fn verify(jwt: &str, cert_der: &[u8]) -> Result<(Value, Value), webpki::Error> {
        let (signing_input, signature) = jwt.rsplit_once('.').unwrap();
        let der = CertificateDer::from(cert_der);
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        cert.verify_signature(
            webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            signing_input.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).unwrap(),
        )?;
        let (header, claims) = signing_input.split_once('.').unwrap();
        Ok((decode(header), decode(claims)))
    }

    /// PKCS#8 `PrivateKeyInfo` → its PKCS#1 `RSAPrivateKey` (the OCTET STRING after version and algorithm).
    fn pkcs1_pem(pkcs8_pem: &str) -> String {
        fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
            let (tag, first) = (input[0], input[1] as usize);
            let (len, header) = if first < 0x80 {
                (first, 2)
            } else {
                let n = first & 0x7f;
                (input[2..2 + n].iter().fold(0usize, |a, b| a << 8 | *b as usize), 2 + n)
            };
            (tag, &input[header..header + len], &input[header + len..])
        }
        let der = PrivateKeyDer::from_pem_slice(pkcs8_pem.as_bytes()).unwrap();
        let (_, info, _) = tlv(der.secret_der());
        let (_, _, rest) = tlv(info); // version
        let (_, _, rest) = tlv(rest); // algorithm
        let (tag, rsa_key, _) = tlv(rest);
        assert_eq!(tag, 0x04, "OCTET STRING");
        let body = base64::engine::general_purpose::STANDARD.encode(rsa_key);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n", lines.join("\n"))
    }

    fn load(pem: &str) -> Result<Certificate, CertificateError> {
        Certificate::from_pem("/etc/secmon/app.pem", pem.as_bytes())
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap()
    }

    #[test]
    fn the_assertion_has_the_entra_format_and_verifies_with_the_certificate() {
        let c = load(&format!("{}{}", APP.cert_pem, APP.key_pem)).unwrap();
        let jwt = c.assertion(CLIENT, AUDIENCE, now()).unwrap();
        let (header, claims) = verify(&jwt, &APP.der).expect("signature verifies with the certificate's key");

        let sha256 = b64(&sha2::Sha256::digest(&APP.der));
        let sha1 = b64(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &APP.der).as_ref());
        assert_eq!(header, json!({"alg": "RS256", "typ": "JWT", "x5t": sha1, "x5t#S256": sha256}));
        let t = now().unix_timestamp();
        assert_eq!(claims["aud"], AUDIENCE);
        assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some(CLIENT), Some(CLIENT)));
        assert_eq!((claims["nbf"].as_i64(), claims["iat"].as_i64()), (Some(t), Some(t)));
        assert_eq!(claims["exp"].as_i64(), Some(t + 600));
        let jti = claims["jti"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(jti).is_ok(), "{jti}");
        assert_eq!(claims.as_object().unwrap().len(), 7, "{claims}");

        // Each assertion is unique, and the signature covers the claims.
        let again = c.assertion(CLIENT, AUDIENCE, now()).unwrap();
        assert_ne!(verify(&again, &APP.der).unwrap().1["jti"], jti);
        let parts: Vec<&str> = jwt.split('.').collect();
        let forged_claims = b64(claims.to_string().replace(CLIENT, "another-app").as_bytes());
        let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
        assert!(verify(&forged, &APP.der).is_err());
        assert!(verify(&jwt, &OTHER.der).is_err(), "another certificate's key does not verify it");
    }

    #[test]
    fn pkcs1_keys_any_order_and_a_chain_pick_the_keys_certificate() {
        let pkcs8 = load(&format!("{}{}", APP.cert_pem, APP.key_pem)).unwrap();
        let pkcs1 = load(&format!("{}\n{}", pkcs1_pem(&APP.key_pem), APP.cert_pem)).unwrap();
        assert_eq!(pkcs1.x5t_s256, pkcs8.x5t_s256);
        let jwt = pkcs1.assertion(CLIENT, AUDIENCE, now()).unwrap();
        verify(&jwt, &APP.der).unwrap();
        // Another certificate (say, an issuer) first: the key's own certificate is still the one used.
        let chain = load(&format!("{}{}{}", OTHER.cert_pem, APP.key_pem, APP.cert_pem)).unwrap();
        assert_eq!(chain.x5t_s256, b64(&sha2::Sha256::digest(&APP.der)));
    }

    /// Every key line of both test keys, to prove no message carries key material.
    fn key_lines() -> Vec<String> {
        [&APP.key_pem, &OTHER.key_pem, &pkcs1_pem(&APP.key_pem)]
            .iter()
            .flat_map(|p| p.lines().filter(|l| !l.starts_with("-----")).map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    fn error(pem: &str) -> (CertificateError, String) {
        let e = load(pem).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/etc/secmon/app.pem"), "names the file: {text}");
        for line in key_lines() {
            assert!(!text.contains(&line[..16]), "key material in {text}");
        }
        (e, text)
    }

    #[test]
    fn unusable_files_are_explained_without_key_material() {
        let (e, _) = error(&APP.cert_pem);
        assert!(matches!(e, CertificateError::NoKey { .. }), "{e}");
        let (e, _) = error(&APP.key_pem);
        assert!(matches!(e, CertificateError::NoCertificate { .. }), "{e}");
        let (e, text) = error(&format!("{}{}", APP.cert_pem, OTHER.key_pem));
        assert!(matches!(e, CertificateError::KeyMismatch { .. }), "{e}");
        assert!(text.contains("does not belong"), "{text}");
        let (e, _) = error(&format!("{}{}{}", APP.cert_pem, APP.key_pem, OTHER.key_pem));
        assert!(matches!(e, CertificateError::SeveralKeys { .. }), "{e}");

        let body = APP.key_pem.lines().nth(1).unwrap();
        let encrypted = format!("-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n-----END ENCRYPTED PRIVATE KEY-----\n");
        let (e, text) = error(&format!("{}{encrypted}", APP.cert_pem));
        assert!(matches!(e, CertificateError::EncryptedKey { .. }), "{e}");
        assert!(text.contains("openssl pkey"), "{text}");
        let legacy = format!(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\n{body}\n-----END RSA PRIVATE KEY-----\n"
        );
        let (e, _) = error(&format!("{}{legacy}", APP.cert_pem));
        assert!(matches!(e, CertificateError::EncryptedKey { .. }), "{e}");

        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (e, text) = error(&format!("{}{}", APP.cert_pem, ec.serialize_pem()));
        assert!(matches!(e, CertificateError::BadKey { .. }), "{e}");
        assert!(text.contains("RSA"), "{text}");

        let truncated = APP.key_pem.replace("-----END PRIVATE KEY-----", "");
        let (e, _) = error(&format!("{}{truncated}", APP.cert_pem));
        assert!(matches!(e, CertificateError::BadPem { .. }), "{e}");

        let not_a_cert = "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n";
        let (e, _) = error(&format!("{not_a_cert}{}", APP.key_pem));
        assert!(matches!(e, CertificateError::BadCertificate { .. }), "{e}");
    }

    #[test]
    fn pkcs12_and_missing_files_say_what_to_do() {
        // A PKCS#12 file is binary DER: a SEQUENCE, no PEM armour.
        let (e, text) = error("\u{30}\u{82}\u{0a}\u{01}\u{02}\u{01}\u{03}");
        assert!(matches!(e, CertificateError::NotPem { .. }), "{e}");
        assert!(text.contains("openssl pkcs12 -in /etc/secmon/app.pem -nodes"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = Certificate::from_pem_file(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, CertificateError::Read { .. }), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");

        let file = dir.path().join("app.pem");
        std::fs::write(&file, format!("{}{}", APP.key_pem, APP.cert_pem)).unwrap();
        let c = Certificate::from_pem_file(file.to_str().unwrap()).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("app.pem") && key_lines().iter().all(|l| !shown.contains(&l[..16])), "{shown}");
    }
}
