//! Keeping secrets out of logs, errors, audit records and notifications.
//!
//! Workflows URLs carry a signature in `sig=`, Functions URLs a key in `code=`, and bearer tokens,
//! client secrets and HMAC keys may turn up in an error body. [`redact`] masks the known shapes;
//! [`Secrets`] additionally masks every value the configuration took from the environment.

use std::sync::{Arc, OnceLock, RwLock};

/// What replaces a secret.
pub const MASK: &str = "***";

/// Masks secret-bearing query parameters, bearer tokens and `client_secret` form fields in `text`.
pub fn redact(text: &str) -> String {
    let mut out = mask_params(
        text,
        &["sig", "code", "client_secret", "client_assertion", "access_token", "sv", "se", "sp", "skoid", "sktid"],
    );
    out = mask_after(&out, "Bearer ", |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c));
    out = mask_after(&out, "\"access_token\":\"", |c: char| c != '"');
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
    /// Adds a value; short values (under 6 characters) are ignored, as masking them would mangle text.
    pub fn add(&self, value: &str) {
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
    fn masks_registered_literals() {
        let s = Secrets::default();
        s.add("hunter2-long-secret");
        s.add("abc");
        assert_eq!(s.mask("x hunter2-long-secret y abc"), "x *** y abc");
    }
}
