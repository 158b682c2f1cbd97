//! Keeping secrets out of logs, errors, audit records and notifications.
//!
//! Workflows URLs carry a signature in `sig=`, Functions URLs a key in `code=`, and bearer tokens,
//! client secrets and HMAC keys may turn up in an error body. [`redact`] masks the known shapes;
//! [`Secrets`] additionally masks every value the configuration took from the environment.

use std::sync::{Arc, OnceLock, RwLock};

/// What replaces a secret.
pub const MASK: &str = "***";

/// Query and form parameters whose values are secrets (Workflows and SAS signatures, function keys,
/// client secrets, tokens) or give a SAS away.
const SECRET_PARAMS: &[&str] =
    &["sig", "code", "client_secret", "client_assertion", "access_token", "sv", "se", "sp", "skoid", "sktid"];

/// Environment variables whose values are secrets wherever they are read (credentials the Azure SDK,
/// the Functions host or Lambda hand to the process): [`register_environment`] masks them even when no
/// config value names them.
pub const SECRET_ENV: &[&str] = &[
    "AZURE_CLIENT_SECRET",
    "IDENTITY_HEADER",
    "MSI_SECRET",
    "AZURE_FEDERATED_TOKEN",
    "SECMON_STORAGE_SAS",
    "AzureWebJobsStorage",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Registers the value of every [`SECRET_ENV`] variable `env` has with [`global`].
pub fn register_environment(env: &dyn Fn(&str) -> Option<String>) {
    for name in SECRET_ENV {
        if let Some(value) = env(name).filter(|v| !v.is_empty()) {
            global().add(&value);
        }
    }
}

/// Masks secret-bearing query parameters, bearer tokens and `client_secret` form fields in `text`.
pub fn redact(text: &str) -> String {
    let mut out = mask_params(text, SECRET_PARAMS);
    out = mask_after(&out, "Bearer ", |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c));
    out = mask_after(&out, "\"access_token\":\"", |c: char| c != '"');
    // A triage page link is a capability (docs/triage.md): its token never reaches a log.
    out = mask_after(&out, "/api/triage/", |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c));
    out = global().mask(&out);
    out
}

/// Replaces the value of `name=` for each parameter name (case-insensitive), in URLs and form bodies.
fn mask_params(text: &str, names: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        // A parameter starts after anything but a word character, so `barcode=` is left alone while
        // `?code=`, `"code=` and `«code=` are masked.
        let at_boundary =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b'_' | b'-' | b'.'));
        let hit = at_boundary
            .then(|| {
                names.iter().find(|n| {
                    let end = i + n.len();
                    // Compare bytes: `i + len` may fall inside a multi-byte character of the text.
                    end < text.len() && bytes[i..end].eq_ignore_ascii_case(n.as_bytes()) && bytes[end] == b'='
                })
            })
            .flatten();
        if let Some(name) = hit {
            out.push_str(&text[i..i + name.len() + 1]);
            out.push_str(MASK);
            i += name.len() + 1;
            while i < text.len() && !matches!(bytes[i], b'&' | b' ' | b'"' | b'\'' | b')' | b'\n' | b';' | b'<' | b'>')
            {
                i += 1;
            }
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn mask_after(text: &str, marker: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(marker) {
        out.push_str(&rest[..pos + marker.len()]);
        rest = &rest[pos + marker.len()..];
        let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        if end > 0 {
            out.push_str(MASK);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A set of literal secret values to mask wherever they appear.
#[derive(Debug, Default, Clone)]
pub struct Secrets(Arc<RwLock<Vec<String>>>);

impl Secrets {
    /// Adds a value, and on its own each secret parameter it carries (a Workflows URL's `sig`, a function
    /// key's `code`), since an upstream may echo just that; short values (under 6 characters) are ignored,
    /// as masking them would mangle text.
    pub fn add(&self, value: &str) {
        for fragment in secret_fragments(value) {
            self.add_one(fragment);
        }
        self.add_one(value);
    }

    /// Adds only the secret parameters `value` carries (the `sig` of a URL), not the value itself.
    pub fn add_fragments(&self, value: &str) {
        for fragment in secret_fragments(value) {
            self.add_one(fragment);
        }
    }

    fn add_one(&self, value: &str) {
        if value.len() >= 6 {
            let mut list = self.0.write().expect("secrets lock");
            if !list.iter().any(|s| s == value) {
                list.push(value.to_string());
                // Longest first, so a secret that contains another is masked whole.
                list.sort_by_key(|s| std::cmp::Reverse(s.len()));
            }
        }
    }

    /// Masks every known value in `text`.
    pub fn mask(&self, text: &str) -> String {
        let list = self.0.read().expect("secrets lock");
        let mut out = text.to_string();
        for s in list.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }
}

/// The values of the [`SECRET_PARAMS`] in `value` (a URL, a query string, a form body).
fn secret_fragments(value: &str) -> Vec<&str> {
    let query = value.split_once('?').map_or(value, |(_, q)| q);
    query
        .split(['&', ';'])
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name.trim())))
        .map(|(_, v)| v)
        .collect()
}

/// The process-wide set, filled by the config loader with every `${NAME}` value it substituted.
pub fn global() -> &'static Secrets {
    static GLOBAL: OnceLock<Secrets> = OnceLock::new();
    GLOBAL.get_or_init(Secrets::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_signatures_keys_and_tokens() {
        let url = "https://prod-1.westeurope.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers&sv=1.0&sig=AbCdEf123_-";
        let out = redact(&format!("POST {url} failed"));
        assert!(!out.contains("AbCdEf123"), "{out}");
        assert!(out.contains("api-version=2016-06-01"));
        let f = redact("https://app.azurewebsites.net/api/graph-webhook?code=KEY123456==&x=1");
        assert_eq!(f, "https://app.azurewebsites.net/api/graph-webhook?code=***&x=1");
        assert_eq!(redact("Authorization: Bearer eyJ0eXAi.abc-def_g"), "Authorization: Bearer ***");
        assert_eq!(redact("client_id=a&client_secret=s3cr3t!&scope=x"), "client_id=a&client_secret=***&scope=x");
        assert_eq!(redact(r#"{"access_token":"tok.en"}"#), r#"{"access_token":"***"}"#);
        // Words that merely contain a parameter name are left alone.
        assert_eq!(redact("barcode=1 unicode=2"), "barcode=1 unicode=2");
        assert_eq!(
            redact("GET https://edge.example/api/triage/eyJ0Ijoi.AbC-d_e failed"),
            "GET https://edge.example/api/triage/*** failed"
        );
    }

    #[test]
    fn non_ascii_text_never_breaks_redaction() {
        // Found by the `config` fuzz target: a multi-byte character right after a boundary byte.
        assert_eq!(redact("error: \"ⓥⓥ\""), "error: \"ⓥⓥ\"");
        assert_eq!(redact("Титул ?sig=секрет&x=1 «code=ключ»"), "Титул ?sig=***&x=1 «code=***");
        for text in ["ü", " é", "&ñ=", "?s\u{301}ig=x", "\"日本語 code=秘密"] {
            let _ = redact(text);
        }
    }

    #[test]
    fn a_registered_url_masks_its_signature_alone_too() {
        let s = Secrets::default();
        s.add("https://prod-1.westeurope.logic.azure.com/workflows/x?api-version=2016-06-01&sig=SiGnAtUrE123");
        assert_eq!(s.mask("upstream said: bad signature SiGnAtUrE123"), "upstream said: bad signature ***");
        assert_eq!(s.mask("api-version=2016-06-01"), "api-version=2016-06-01", "only secret parameters");
    }

    #[test]
    fn secrets_of_the_environment_are_registered() {
        let env = |k: &str| match k {
            "IDENTITY_HEADER" => Some("identity-header-value-42".to_string()),
            "AZURE_CLIENT_SECRET" => Some(String::new()),
            _ => None,
        };
        register_environment(&env);
        assert_eq!(redact("x-identity-header: identity-header-value-42"), "x-identity-header: ***");
    }

    #[test]
    fn masks_registered_literals() {
        let s = Secrets::default();
        s.add("hunter2-long-secret");
        s.add("abc");
        assert_eq!(s.mask("x hunter2-long-secret y abc"), "x *** y abc");
    }
}
