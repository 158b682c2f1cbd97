//! The configuration and the environment: every variable set, no unresolved Key Vault reference, one
//! cloud for Graph and the login authority.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Check, KEY_VAULT_REFERENCE};
use crate::config::{Cloud, Config};

/// What loading the config said: each problem a check (an unset variable is left to [`variables`]),
/// its warnings, or that it loads.
pub fn loaded(result: &Result<crate::config::Loaded, crate::config::ConfigError>) -> Vec<Check> {
    use crate::config::{ConfigError, Level};
    let fix = "fix it there (`secmon check-config` lists every problem)";
    match result {
        Ok(loaded) => {
            let mut out: Vec<Check> =
                loaded.warnings.iter().map(|w| Check::warning("config", loaded.render(w), fix)).collect();
            out.push(Check::ok("config", format!("{} loads and validates", loaded.file.display())));
            out
        }
        Err(ConfigError::Invalid { lines, issues }) => lines
            .iter()
            .zip(issues)
            .filter(|(_, issue)| !issue.message.ends_with("is not set"))
            .map(|(line, issue)| match issue.level {
                Level::Error => Check::failure("config", line, fix),
                Level::Warning => Check::warning("config", line, fix),
            })
            .collect(),
        Err(e) => vec![Check::failure("config", e.to_string(), "pass -c FILE or set SECMON_CONFIG")],
    }
}

/// The fix for a Key Vault reference App Service did not resolve.
fn key_vault_fix(name: &str) -> String {
    format!(
        "App Service could not read the secret behind {name}: give the app's identity the Key Vault Secrets User \
         role on the vault (for a user-assigned identity also set the site's keyVaultReferenceIdentity), check the \
         vault and secret names in the reference, then restart the app; the portal's Environment variables blade \
         shows each reference's status"
    )
}

/// Every `${NAME}` in the config text is set, and none holds an unresolved Key Vault reference.
pub fn variables(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<Check> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'$';
        let after = &rest[pos + 2..];
        match after.find('}') {
            Some(end) if !escaped => {
                names.insert(after[..end].to_string());
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    let mut out = Vec::new();
    for name in &names {
        match env(name) {
            None => out.push(Check::failure(
                format!("environment: {name}"),
                format!("the config names ${{{name}}} but {name} is not set"),
                format!("set {name} (an app setting in Azure, an environment variable standalone)"),
            )),
            Some(v) if v.contains(KEY_VAULT_REFERENCE) => out.push(Check::failure(
                format!("environment: {name}"),
                format!("{name} holds the unresolved reference text {KEY_VAULT_REFERENCE}...), not the secret"),
                key_vault_fix(name),
            )),
            Some(v) if v.trim().is_empty() => out.push(Check::warning(
                format!("environment: {name}"),
                format!("{name} is set but empty"),
                format!("give {name} its value"),
            )),
            Some(_) => {}
        }
    }
    if out.is_empty() {
        out.push(Check::ok("environment", format!("all {} variables the config names are set", names.len())));
    }
    out
}

/// The environment variables secmon reads itself, besides those the config names.
const READ_FROM_ENV: [&str; 6] = [
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "SECMON_GRAPH_URL",
    "SECMON_AUTHORITY_URL",
];

/// No value of the loaded config, nor a variable secmon reads, is an unresolved Key Vault reference.
pub fn unresolved_references(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Check> {
    fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.contains(KEY_VAULT_REFERENCE) => out.push(path.to_string()),
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, x)| walk(x, &crate::config::yaml::join_index(path, i), out))
            }
            Value::Object(map) => map.iter().for_each(|(k, x)| walk(x, &crate::config::yaml::join_key(path, k), out)),
            _ => {}
        }
    }
    let mut paths = Vec::new();
    walk(&serde_json::to_value(config).expect("the config serializes"), "", &mut paths);
    let mut out: Vec<Check> = paths
        .iter()
        .map(|p| {
            Check::failure(
                format!("key-vault: {p}"),
                format!("{p} is the text of a Key Vault reference ({KEY_VAULT_REFERENCE}...)), not its secret"),
                key_vault_fix("the app setting this value comes from"),
            )
        })
        .collect();
    for name in READ_FROM_ENV {
        if env(name).is_some_and(|v| v.contains(KEY_VAULT_REFERENCE)) {
            out.push(Check::failure(
                format!("key-vault: {name}"),
                format!("{name} holds the unresolved reference text {KEY_VAULT_REFERENCE}...)"),
                key_vault_fix(name),
            ));
        }
    }
    if out.is_empty() {
        out.push(Check::ok("key-vault", "no value is an unresolved Key Vault reference"));
    }
    out
}

/// The cloud a Graph or login host belongs to, when it is a Microsoft one.
fn cloud_of_host(host: &str) -> Option<&'static [Cloud]> {
    match host {
        "graph.microsoft.com" | "login.microsoftonline.com" => Some(&[Cloud::Global]),
        "graph.microsoft.us" => Some(&[Cloud::Usgov]),
        "dod-graph.microsoft.us" => Some(&[Cloud::Usgovdod]),
        "login.microsoftonline.us" => Some(&[Cloud::Usgov, Cloud::Usgovdod]),
        "microsoftgraph.chinacloudapi.cn" | "login.chinacloudapi.cn" => Some(&[Cloud::China]),
        _ => None,
    }
}

pub(crate) fn cloud_name(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Global => "global",
        Cloud::Usgov => "usgov",
        Cloud::Usgovdod => "usgovdod",
        Cloud::China => "china",
    }
}

/// The Graph URL and the login authority belong to the configured cloud (tokens of one cloud are
/// worthless in another).
pub fn cloud(config: &Config) -> Vec<Check> {
    let name = cloud_name(config.cloud);
    let mut out = Vec::new();
    for (what, field, url, expected) in [
        ("Graph", "graph_url", config.graph_base(), config.cloud.graph_url()),
        ("login authority", "authority_url", config.authority(), config.cloud.authority_url()),
    ] {
        let check = format!("cloud: {field}");
        let host = url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        match cloud_of_host(&host) {
            Some(clouds) if clouds.contains(&config.cloud) => {
                out.push(Check::ok(check, format!("{what} {url} is the {name} cloud's")))
            }
            Some(clouds) => out.push(Check::failure(
                check,
                format!("cloud is {name} but the {what} {url} is the {} cloud's", cloud_name(clouds[0])),
                format!("set {field} to {expected} (or remove it), or set cloud to the one the tenant lives in"),
            )),
            None => out.push(Check::warning(
                check,
                format!("the {what} {url} is no Microsoft cloud's (an emulator or a proxy?)"),
                format!("for a real tenant in the {name} cloud remove {field} (default {expected})"),
            )),
        }
    }
    out
}
