//! Azurite for tests: its well-known account, an account SAS signed with its published key, and a
//! store connected to it. Started by `scripts/azurite.sh start`; `SECMON_AZURITE` says it is up.

use base64::Engine;
use hmac::{Hmac, Mac};
use secmon::store::azure::{AzureAuth, AzureSettings, AzureStore};

/// Azurite's account (public, documented; not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published account key.
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Blob endpoint.
pub const BLOB_URL: &str = "http://127.0.0.1:10000/devstoreaccount1";
/// Queue endpoint.
pub const QUEUE_URL: &str = "http://127.0.0.1:10001/devstoreaccount1";

/// Whether the test run was told Azurite is up. When not, prints a line nobody can miss.
pub fn available(test: &str) -> bool {
    if std::env::var_os("SECMON_AZURITE").is_some() {
        return true;
    }
    // Straight to stderr, past the test harness's capture, so a skip is seen without --nocapture.
    use std::io::Write;
    let line = format!(
        "\n*** {test}: skipped: Azurite not running (scripts/azurite.sh start, then SECMON_AZURITE=1; scripts/test.sh does both) ***\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// An account SAS for blob and queue (all resource types, read/write/delete/list/add/create/update/
/// process), valid for a day, signed as the storage service documents the version 2020-12-06+
/// string-to-sign: account, permissions, services, resource types, start, expiry, IP, protocol,
/// version, encryption scope, each followed by a newline.
pub fn account_sas() -> String {
    let (sp, ss, srt, spr, sv) = ("rwdlacup", "bq", "sco", "https,http", "2021-08-06");
    let st = (chrono::Utc::now() - chrono::Duration::minutes(5)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let se = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let to_sign = format!("{ACCOUNT}\n{sp}\n{ss}\n{srt}\n{st}\n{se}\n\n{spr}\n{sv}\n\n");
    let key = base64::engine::general_purpose::STANDARD.decode(KEY).expect("the published key is base64");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    format!("sv={sv}&ss={ss}&srt={srt}&sp={sp}&st={st}&se={se}&spr={spr}&sig={sig}")
}

/// Settings for Azurite with a fresh SAS.
pub fn settings() -> AzureSettings {
    AzureSettings { blob_url: BLOB_URL.into(), queue_url: QUEUE_URL.into(), auth: AzureAuth::Sas(account_sas()) }
}

/// A store on Azurite.
pub async fn store() -> AzureStore {
    AzureStore::connect(&settings()).await.expect("connect to Azurite")
}
