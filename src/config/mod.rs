//! One YAML config file, validated at load, every error with its file, line and field.
//!
//! Loading: read the file → YAML to JSON with locations ([`yaml`]) → replace `${NAME}` in string values
//! from the environment (so secrets stay out of the file; every substituted value is registered with
//! [`crate::redact`]) → apply environment overrides (`SECMON_GRAPH_URL`) → typed deserialization (unknown
//! fields are errors) → [`Config::validate`] (cross-references, rule expressions, templates).
//!
//! Each section's type lives with the stage that uses it: `graph` (cloud, credentials), `intake`
//! (poll, subscriptions, webhook), `rules` (close rules, routes), `notify` (receivers).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::doctor::DoctorConfig;
pub use self::graph::{Cloud, CredentialConfig, CredentialKind};
pub use self::health::HealthConfig;
pub use self::intake::{PollConfig, SubscriptionConfig, WebhookConfig};
pub use self::receivers::{MailConfig, ReceiverConfig, StatusUpdate};
pub use self::retention::RetentionConfig;
pub use self::rules::{CloseRuleConfig, Mode, RouteConfig};

pub mod doctor;
pub mod duration;
pub mod graph;
pub mod health;
pub mod intake;
pub mod ncrontab;
pub mod receivers;
pub mod retention;
pub mod rules;
pub mod silence;
pub mod triage;
pub mod yaml;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which Microsoft cloud: `global`, `usgov` (GCC High, L4) or `usgovdod` (DoD, L5).
    #[serde(default)]
    pub cloud: Cloud,
    /// Graph base URL; defaults to the cloud's (`https://graph.microsoft.com`). `SECMON_GRAPH_URL` wins.
    #[serde(default)]
    pub graph_url: Option<String>,
    /// Login authority; defaults to the cloud's (`https://login.microsoftonline.com`).
    /// `SECMON_AUTHORITY_URL` wins.
    #[serde(default)]
    pub authority_url: Option<String>,
    /// Where state lives in standalone mode. In Azure the store comes from the environment.
    #[serde(default)]
    pub store: StoreConfig,
    /// The tenants to watch.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Polling.
    #[serde(default)]
    pub poll: PollConfig,
    /// Known-benign rules that close alerts; first match wins, in file order.
    #[serde(default)]
    pub close_rules: Vec<CloseRuleConfig>,
    /// Where alerts that were not closed go; first match wins unless `continue: true`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Named notification receivers.
    #[serde(default)]
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// Graph change-notification subscriptions (doorbells that trigger a poll).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// The webhook and doorbell endpoints.
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// E-mail: which tenant sends.
    #[serde(default)]
    pub mail: MailConfig,
    /// The `/api/doctor` HTTP function (off without a token).
    #[serde(default)]
    pub doctor: DoctorConfig,
    /// A close rule in `mode: enforce` must have a stored replay of its current version on every tenant
    /// that found no true positive (`secmon rules replay`); without it `check-config` fails instead of
    /// warning.
    #[serde(default)]
    pub require_replay: bool,
    /// Limits of silences (`secmon silence add`).
    #[serde(default)]
    pub silences: silence::SilencesConfig,
    /// Named recurring windows that routes reference as `mute_during` / `active_during`.
    #[serde(default)]
    pub time_intervals: Vec<silence::TimeIntervalConfig>,
    /// `/api/health` (anonymous up/down) and `/api/health-details` (per tenant, behind a key or token).
    #[serde(default)]
    pub health: HealthConfig,
    /// How long what secmon writes is kept, and the `sweep` timer that removes what expired.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// The standalone queue worker (`secmon run`).
    #[serde(default)]
    pub worker: WorkerConfig,
    /// Acting on alerts from Teams (the bot) and who may act (docs/triage.md).
    #[serde(default)]
    pub triage: triage::TriageConfig,
    /// True when `SECMON_CLOSE` is `off` (or another of [`rules::CLOSE_OFF`]): every close rule runs
    /// in shadow mode. Set from the environment at load, never from the file, so an operator can stop all
    /// closing at once; a value secmon does not know fails the load.
    #[serde(skip)]
    #[schemars(skip)]
    pub closing_disabled: bool,
}

/// The standalone queue worker.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// How many queue messages `secmon run` works on at once (default 256), shared fairly between
    /// tenants: a tenant's burst never takes every slot while another tenant waits.
    #[serde(default = "WorkerConfig::default_concurrency")]
    pub concurrency: usize,
    /// Whether the worker that decides an alert tries its deliveries at once (default true), so that
    /// only a delivery that does not finish (it failed, its receiver is paused, it waits for its group)
    /// becomes a job on the `deliveries` queue; `false` queues every delivery as a job, as the
    /// Functions and Lambda hosts do.
    #[serde(default = "WorkerConfig::default_first_try")]
    pub first_try: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self { concurrency: Self::default_concurrency(), first_try: Self::default_first_try() }
    }
}

impl WorkerConfig {
    /// 256: a slot mostly waits (on a receiver, on Graph, on the store's commit), so more of them keep
    /// the two cores of a small machine busy, and the more store calls wait together the more of them
    /// share one commit. At 8 the 10,000-alert benchmark took 6.1 s, at 64 4.8 s (median of three),
    /// at 256 4.3 s with 15 % fewer bytes written, at 512 no better (`docs/performance.md`). A receiver
    /// that hangs holds at most its own share of the slots until its breaker opens.
    fn default_concurrency() -> usize {
        256
    }

    fn default_first_try() -> bool {
        true
    }
}

/// Standalone state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite file (created if missing).
    pub sqlite: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { sqlite: PathBuf::from("./secmon.db") }
    }
}

/// One watched tenant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Entra tenant id (a GUID) or a verified domain.
    pub id: String,
    /// Short name used in logs, store keys and rules (`tenant` in a CEL expression); unique.
    pub name: String,
    /// How to get a token for this tenant; when absent, chosen from the environment.
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The config cannot be used.
    Error,
    /// Usable, but probably not what was meant (an expired rule).
    Warning,
}

/// One finding of validation, located by its path in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// Error or warning.
    pub level: Level,
    /// The field, e.g. `routes[1].receivers[0]`.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl Issue {
    /// An error at `path`.
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { level: Level::Error, path: path.into(), message: message.into() }
    }

    /// A warning at `path`.
    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { level: Level::Warning, path: path.into(), message: message.into() }
    }
}

/// What section validators may look at besides their own section.
#[derive(Debug, Clone)]
pub struct ValidationContext<'a> {
    /// The whole config.
    pub config: &'a Config,
    /// The time the config is judged at (expiry of rules).
    pub now: DateTime<Utc>,
}

impl Config {
    /// Every finding, errors and warnings, in document order of sections.
    pub fn validate(&self, now: DateTime<Utc>) -> Vec<Issue> {
        let cx = ValidationContext { config: self, now };
        let mut out = Vec::new();
        self.cloud.validate("cloud", &mut out);
        for (field, url) in [("graph_url", &self.graph_url), ("authority_url", &self.authority_url)] {
            if let Some(u) = url {
                // A token travels with every request: plain http only to this machine (an emulator).
                match url::Url::parse(u) {
                    Ok(parsed) if parsed.scheme() == "https" => {}
                    Ok(parsed) if parsed.scheme() == "http" && receivers::is_loopback(&parsed) => {}
                    Ok(parsed) if parsed.scheme() == "http" => out.push(Issue::error(
                        field,
                        format!(
                            "{u:?} is plain http: tokens would travel in cleartext; use https (http only to \
                             127.0.0.1, localhost or [::1], e.g. a local emulator)"
                        ),
                    )),
                    _ => out.push(Issue::error(field, format!("not an http(s) URL: {u:?}"))),
                }
            }
        }
        if self.tenants.is_empty() {
            out.push(Issue::error("tenants", "at least one tenant is required"));
        }
        if !(1..=1024).contains(&self.worker.concurrency) {
            out.push(Issue::error("worker.concurrency", "between 1 and 1024 (default 256)"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let path = format!("tenants[{i}]");
            if t.id.trim().is_empty() {
                out.push(Issue::error(format!("{path}.id"), "tenant id is empty"));
            }
            if !is_name(&t.name) {
                out.push(Issue::error(
                    format!("{path}.name"),
                    "a tenant name uses letters, digits, '-' and '_' only (it becomes part of storage keys)",
                ));
            }
            if !names.insert(t.name.as_str()) {
                out.push(Issue::error(format!("{path}.name"), format!("duplicate tenant name {:?}", t.name)));
            }
            if let Some(c) = &t.credential {
                c.validate(&format!("{path}.credential"), &mut out);
            }
        }
        self.poll.validate("poll", &mut out);
        rules::validate_close_rules(&self.close_rules, &cx, &mut out);
        rules::validate_routes(&self.routes, &cx, &mut out);
        rules::validate_route_notifications(&self.routes, &mut out);
        for (name, r) in &self.receivers {
            if !is_name(name) {
                out.push(Issue::error(
                    format!("receivers.{name}"),
                    "a receiver name uses letters, digits, '-' and '_' only",
                ));
            }
            r.validate(&format!("receivers.{name}"), &mut out);
            if let ReceiverConfig::Teams(t) = r
                && let Some(auth) = &t.auth
                && self.tenant(&auth.tenant).is_none()
            {
                out.push(Issue::error(
                    format!("receivers.{name}.teams.auth.tenant"),
                    format!("{:?} is not a configured tenant (by name)", auth.tenant),
                ));
            }
            if let ReceiverConfig::Teams(t) = r
                && let Some(bot) = &t.bot
                && !bot.name.trim().is_empty()
                && !self.triage.bots.contains_key(&bot.name)
            {
                out.push(Issue::error(
                    format!("receivers.{name}.teams.bot.name"),
                    format!("no bot is named {:?} in triage.bots", bot.name),
                ));
            }
        }
        self.validate_senders(&mut out);
        for (i, s) in self.subscriptions.iter().enumerate() {
            s.validate(&format!("subscriptions[{i}]"), &cx, &mut out);
        }
        self.webhook.validate("webhook", &cx, &mut out);
        self.doctor.validate("doctor", &mut out);
        silence::validate(self, &mut out);
        self.health.validate("health", &mut out);
        self.retention.validate("retention", &mut out);
        let tenant_names: Vec<&str> = self.tenants.iter().map(|t| t.name.as_str()).collect();
        self.triage.validate("triage", &tenant_names, &mut out);
        out
    }

    /// Sending tenants name configured tenants; with several tenants, mail should go out through one
    /// chosen sender, not through each customer's own tenant.
    fn validate_senders(&self, out: &mut Vec<Issue>) {
        let sender = self.mail.tenant.as_deref();
        if let Some(t) = sender
            && self.tenant(t).is_none()
        {
            out.push(Issue::error("mail.tenant", format!("unknown tenant {t:?}")));
        }
        for (name, r) in &self.receivers {
            let ReceiverConfig::Email(e) = r else { continue };
            let path = format!("receivers.{name}.email.tenant");
            match (e.tenant.as_deref(), sender) {
                (Some(t), _) if self.tenant(t).is_none() => {
                    out.push(Issue::error(path, format!("unknown tenant {t:?}")));
                }
                (Some(t), Some(s)) if t != s => out.push(Issue::warning(
                    path,
                    format!("sends through tenant {t:?}, not the configured sender mail.tenant {s:?}"),
                )),
                (None, None) if self.tenants.len() > 1 => out.push(Issue::warning(
                    path,
                    "sends through each alert's own tenant (each needs Mail.Send and a mailbox of its own, and a \
                     tenant whose credential fails cannot send its own alarm); set mail.tenant or this tenant \
                     to the tenant whose mailbox sends",
                )),
                _ => {}
            }
        }
    }

    /// The tenant with this name.
    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The Graph base URL in force.
    pub fn graph_base(&self) -> String {
        self.graph_url.clone().unwrap_or_else(|| self.cloud.graph_url().to_string()).trim_end_matches('/').to_string()
    }

    /// The login authority in force.
    pub fn authority(&self) -> String {
        self.authority_url
            .clone()
            .unwrap_or_else(|| self.cloud.authority_url().to_string())
            .trim_end_matches('/')
            .to_string()
    }

    /// The JSON Schema of the config file.
    pub fn json_schema() -> Value {
        serde_json::to_value(schemars::schema_for!(Config)).expect("schema serializes")
    }
}

/// True for names usable in keys and URLs: `[A-Za-z0-9_-]+`.
pub fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A config that loaded, with what is needed to point at its lines.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// The file it came from.
    pub file: PathBuf,
    /// The parsed document, for locations.
    pub source: yaml::Located,
    /// Warnings found at load (errors make loading fail).
    pub warnings: Vec<Issue>,
}

impl Loaded {
    /// `file:line:col: level: path: message`.
    pub fn render(&self, issue: &Issue) -> String {
        render(&self.file, Some(&self.source), issue)
    }
}

fn render(file: &Path, source: Option<&yaml::Located>, issue: &Issue) -> String {
    let level = match issue.level {
        Level::Error => "error",
        Level::Warning => "warning",
    };
    // An unknown field is best shown at its key; anything else at its value.
    let key_first = issue.message.starts_with("unknown field");
    let place = source
        .and_then(|s| {
            if key_first { s.key_locations.get(&issue.path).copied() } else { None }.or_else(|| s.locate(&issue.path))
        })
        .map(|l| format!("{}:{}:{}", file.display(), l.line, l.column))
        .unwrap_or_else(|| file.display().to_string());
    let field = if issue.path.is_empty() { String::new() } else { format!("{}: ", issue.path) };
    crate::redact::redact(&format!("{place}: {level}: {field}{}", issue.message))
}

/// Why a config could not be loaded. Its text names the file, line and field of each problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has problems; each line is one, located.
    #[error("{}", .lines.join("\n"))]
    Invalid {
        /// Rendered findings (errors first, then warnings).
        lines: Vec<String>,
        /// The findings.
        issues: Vec<Issue>,
    },
}

/// Looks up environment variables; a trait object so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What a layer above adds to validation: compiling what the config names (rule expressions,
/// templates). Its findings are located and reported with the config's own.
pub type Check<'a> = &'a dyn Fn(&Config, &ValidationContext<'_>, &mut Vec<Issue>);

/// Loads and validates the config at `file` with the process environment, structure and
/// cross-references only (`setup::load` adds compiling the rules and templates).
pub fn load(file: &Path, now: DateTime<Utc>) -> Result<Loaded, ConfigError> {
    load_checked(file, now, &|_, _, _| {})
}

/// [`load`] with `check`'s findings too.
pub fn load_checked(file: &Path, now: DateTime<Utc>, check: Check<'_>) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Io { file: file.to_path_buf(), source })?;
    load_str_checked(&text, file, &|k| std::env::var(k).ok(), now, check)
}

/// Loads and validates config text (structure and cross-references); `file` is only used in messages.
pub fn load_str(text: &str, file: &Path, env: EnvLookup<'_>, now: DateTime<Utc>) -> Result<Loaded, ConfigError> {
    load_str_checked(text, file, env, now, &|_, _, _| {})
}

/// [`load_str`] with `check`'s findings too.
pub fn load_str_checked(
    text: &str,
    file: &Path,
    env: EnvLookup<'_>,
    now: DateTime<Utc>,
    check: Check<'_>,
) -> Result<Loaded, ConfigError> {
    let invalid = |issues: Vec<Issue>, source: Option<&yaml::Located>| {
        let lines = issues.iter().map(|i| render(file, source, i)).collect();
        ConfigError::Invalid { lines, issues }
    };
    let mut source = match yaml::parse(text) {
        Ok(s) => s,
        Err(e) => {
            let issue = Issue::error("", format!("YAML syntax: {}", e.message));
            let line = crate::redact::redact(&format!(
                "{}:{}:{}: error: YAML syntax: {}",
                file.display(),
                e.location.line,
                e.location.column,
                e.message
            ));
            return Err(ConfigError::Invalid { lines: vec![line], issues: vec![issue] });
        }
    };
    if !source.value.is_object() {
        return Err(invalid(vec![Issue::error("", "the config must be a mapping of sections")], Some(&source)));
    }

    let mut issues = Vec::new();
    substitute_env(&mut source.value, "", env, &mut issues);
    if !issues.is_empty() {
        return Err(invalid(issues, Some(&source)));
    }
    if let Some(url) = env("SECMON_GRAPH_URL").filter(|u| !u.is_empty()) {
        source.value["graph_url"] = Value::String(url);
    }
    if let Some(url) = env("SECMON_AUTHORITY_URL").filter(|u| !u.is_empty()) {
        source.value["authority_url"] = Value::String(url);
    }
    // The audit retention in Azure is the audit container's immutability period (one Bicep parameter).
    if let Some(days) = env("SECMON_AUDIT_RETENTION_DAYS").filter(|d| !d.trim().is_empty()) {
        match days.trim().parse::<u32>() {
            Ok(d) => {
                if !source.value["retention"].is_object() {
                    source.value["retention"] = Value::Object(Default::default());
                }
                source.value["retention"]["audit_days"] = Value::from(d);
            }
            Err(_) => {
                let issue = Issue::error("SECMON_AUDIT_RETENTION_DAYS", format!("{days:?} is not a number of days"));
                return Err(invalid(vec![issue], Some(&source)));
            }
        }
    }

    let mut config: Config = match serde_path_to_error::deserialize(&source.value) {
        Ok(c) => c,
        Err(e) => {
            let mut path = path_string(e.path());
            let message = e.inner().to_string();
            // serde names an unknown field in words only; point at the field's own line.
            if let Some(name) = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next())
                && !path.ends_with(name)
            {
                path = yaml::join_key(&path, name);
            }
            return Err(invalid(vec![Issue::error(path, message)], Some(&source)));
        }
    };

    let mut findings = config.validate(now);
    match rules::closing_disabled(env("SECMON_CLOSE").as_deref()) {
        Ok(disabled) => config.closing_disabled = disabled,
        Err(e) => findings.push(Issue::error("SECMON_CLOSE", e)),
    }
    match (triage::app_service_auth(env("SECMON_TRIAGE_APP_SERVICE_AUTH").as_deref()), config.triage.page.as_mut()) {
        (Ok(on), Some(page)) => page.app_service_auth = on,
        (Ok(_), None) => {}
        (Err(e), _) => findings.push(Issue::error("SECMON_TRIAGE_APP_SERVICE_AUTH", e)),
    }
    check(&config, &ValidationContext { config: &config, now }, &mut findings);
    let (errors, warnings): (Vec<_>, Vec<_>) = findings.into_iter().partition(|i| i.level == Level::Error);
    if !errors.is_empty() {
        let mut all = errors;
        all.extend(warnings);
        return Err(invalid(all, Some(&source)));
    }
    Ok(Loaded { config, file: file.to_path_buf(), source, warnings })
}

/// Prints paths the way [`yaml`] records them: `a.b[2].c`.
fn path_string(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => out = yaml::join_index(&out, *index),
            serde_path_to_error::Segment::Map { key } => out = yaml::join_key(&out, key),
            serde_path_to_error::Segment::Enum { variant } => out = yaml::join_key(&out, variant),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Replaces `${NAME}` in every string value; `$${` stands for a literal `${`.
fn substitute_env(value: &mut Value, path: &str, env: EnvLookup<'_>, issues: &mut Vec<Issue>) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, env, is_secret_field(path)) {
            Ok(expanded) => *s = expanded,
            Err(message) => issues.push(Issue::error(path, message)),
        },
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                substitute_env(v, &yaml::join_index(path, i), env, issues);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                substitute_env(v, &yaml::join_key(path, k), env, issues);
            }
        }
        _ => {}
    }
}

/// True for the fields whose values are secrets: client secrets, HMAC and doorbell keys, tokens, and the
/// Teams Workflows URL (its `sig=` is the credential). Only their substituted values are masked in
/// everything secmon writes; a path, a plain URL or a name taken from the environment prints as it is.
/// (The signature or key inside any substituted URL is masked regardless, see `redact`.)
pub fn is_secret_field(path: &str) -> bool {
    let field = path.rsplit('.').next().unwrap_or(path);
    let field = field.split('[').next().unwrap_or(field);
    matches!(field, "client_secret" | "secret" | "doorbell_secret" | "notification_query" | "webhook_url" | "password")
        || field.ends_with("_secret")
        || field.ends_with("_token")
        || field.ends_with("_key")
        || field == "token"
        // `webhook.doorbell_secrets.<tenant>`: the last segment is a tenant name, every value a key.
        || path.split('.').any(|segment| segment == "doorbell_secrets")
}

fn expand(s: &str, env: EnvLookup<'_>, secret: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').ok_or("unterminated ${ in value")?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name {name:?} in ${{...}}"));
            }
            let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            if secret || crate::redact::SECRET_ENV.contains(&name) {
                crate::redact::global().add(&value);
            } else {
                // Not a secret field, but a URL may still carry a key or signature: mask just those.
                crate::redact::global().add_fragments(&value);
            }
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "TEAMS_URL" => Some("https://example.invalid/workflows/x?sig=SECRETSIG123".into()),
            _ => None,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-26T00:00:00Z".parse().unwrap()
    }

    const GOOD: &str = "tenants:\n  - id: 11111111-2222-3333-4444-555555555555\n    name: contoso\n";

    #[test]
    fn a_minimal_config_loads_with_defaults() {
        let loaded = load_str(GOOD, Path::new("c.yaml"), &env, now()).unwrap();
        assert_eq!(loaded.config.tenants[0].name, "contoso");
        assert_eq!(loaded.config.graph_base(), "https://graph.microsoft.com");
    }

    #[test]
    fn unknown_fields_name_file_line_and_field() {
        let text = format!("{GOOD}poll:\n  overlapp: 10m\n");
        let err = load_str(&text, Path::new("c.yaml"), &env, now()).unwrap_err().to_string();
        assert!(err.starts_with("c.yaml:5:3: error: poll.overlapp: unknown field `overlapp`"), "{err}");
    }

    #[test]
    fn env_substitution_and_missing_variables() {
        let text = format!("{GOOD}graph_url: \"${{MISSING_VAR}}\"\n");
        let err = load_str(&text, Path::new("c.yaml"), &env, now()).unwrap_err().to_string();
        assert!(err.contains("c.yaml:4:12:") && err.contains("MISSING_VAR is not set"), "{err}");
        assert_eq!(
            expand("a$${b}c ${TEAMS_URL}", &env, false).unwrap(),
            "a${b}c https://example.invalid/workflows/x?sig=SECRETSIG123"
        );
    }

    #[test]
    fn substituted_secrets_never_reach_error_text() {
        let text = format!("{GOOD}graph_url: 5\nauthority_url: \"${{TEAMS_URL}}x\"\ncloud: moon\n");
        let err = load_str(&text, Path::new("c.yaml"), &env, now()).unwrap_err().to_string();
        assert!(!err.contains("SECRETSIG123"), "{err}");
    }

    #[test]
    fn tenants_are_checked() {
        let text = "tenants:\n  - {id: a, name: x}\n  - {id: b, name: x}\n  - {id: c, name: 'bad name'}\n";
        let err = load_str(text, Path::new("c.yaml"), &env, now()).unwrap_err();
        let ConfigError::Invalid { lines, .. } = err else { panic!() };
        assert!(lines.iter().any(|l| l.contains("c.yaml:3:") && l.contains("duplicate tenant name")), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains("c.yaml:4:") && l.contains("tenants[2].name")), "{lines:?}");
        let empty = load_str("{}", Path::new("c.yaml"), &env, now()).unwrap_err().to_string();
        assert!(empty.contains("at least one tenant"), "{empty}");
    }

    #[test]
    fn only_secrets_are_masked_not_every_substituted_value() {
        let env = |k: &str| match k {
            "DB_PATH" => Some("/var/lib/secmon/state-file.db".to_string()),
            "MY_HMAC" => Some("hmac-key-0123456789-abcdef".to_string()),
            _ => None,
        };
        let text = format!(
            "{GOOD}store: {{ sqlite: \"${{DB_PATH}}\" }}\nreceivers:\n  h: {{ webhook: {{ url: \"https://hooks.example.net/x\", secret: \"${{MY_HMAC}}\" }} }}\n"
        );
        load_str(&text, Path::new("c.yaml"), &env, now()).unwrap();
        let shown = crate::redact::redact("store /var/lib/secmon/state-file.db, key hmac-key-0123456789-abcdef");
        assert_eq!(shown, "store /var/lib/secmon/state-file.db, key ***");
        assert!(is_secret_field("tenants[0].credential.client_secret"));
        assert!(is_secret_field("receivers.soc.teams.webhook_url"));
        assert!(is_secret_field("webhook.doorbell_secrets.contoso"), "a per-tenant doorbell key is a secret");
        assert!(!is_secret_field("store.sqlite") && !is_secret_field("graph_url"));
    }

    #[test]
    fn graph_and_authority_urls_are_https_unless_loopback() {
        for (url, ok) in [
            ("https://graph.microsoft.com", true),
            ("http://127.0.0.1:8080", true),
            ("http://127.8.9.10", true),
            ("http://localhost:1", true),
            ("http://[::1]:9", true),
            ("http://graph.example.net", false),
            ("http://10.0.0.5", false),
            ("ftp://graph.example.net", false),
        ] {
            for field in ["graph_url", "authority_url"] {
                let text = format!("{GOOD}{field}: \"{url}\"\n");
                let result = load_str(&text, Path::new("c.yaml"), &env, now());
                assert_eq!(result.is_ok(), ok, "{field} {url}: {:?}", result.err().map(|e| e.to_string()));
            }
        }
    }

    #[test]
    fn the_schema_describes_every_section() {
        let schema = Config::json_schema();
        let props = schema["properties"].as_object().unwrap();
        for key in ["cloud", "tenants", "poll", "close_rules", "routes", "receivers", "subscriptions", "webhook"] {
            assert!(props.contains_key(key), "{key}");
        }
    }
}
