//! The `triage` section: acting on alerts from where they are told (docs/triage.md) — the Teams bots'
//! identities and who may act.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Issue;

/// `triage`: the Teams bots and the people allowed to act on alerts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageConfig {
    /// The Teams bots (Azure Bot Service), by name; a `teams: { bot: … }` receiver names one. Without
    /// any, no card carries buttons and the `bot-messages` endpoint refuses every request. An MSSP has
    /// one per customer tenant (new bots are single-tenant).
    #[serde(default)]
    pub bots: BTreeMap<String, BotConfig>,
    /// Who may act, unless a bot says otherwise. Empty (the default): nobody.
    #[serde(default)]
    pub allowed: AllowedConfig,
    /// The triage page (`/api/triage/…`) and the signed links to it in e-mail and Workflows cards.
    /// Without it, notifications carry no triage link and the page refuses every request.
    #[serde(default)]
    pub page: Option<TriagePageConfig>,
}

/// The bot's registration: a single-tenant Entra app registration tied to an Azure Bot resource.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// The bot's Microsoft App ID (its app registration's client id): the audience of the Bot
    /// Connector's tokens and the client of the bot's own token.
    pub app_id: String,
    /// The app registration's client secret. A secret: write `${SECMON_BOT_SECRET}`.
    pub app_secret: String,
    /// The Entra tenant (id or domain) the app registration lives in; the bot's own token comes from
    /// `{authority_url}/{tenant_id}/oauth2/v2.0/token`.
    pub tenant_id: String,
    /// The Bot Connector's OpenID metadata; defaults to the one of the config's cloud
    /// (`https://login.botframework.com/v1/.well-known/openidconfiguration` for `global`). Tests point it
    /// at the emulator.
    #[serde(default)]
    pub openid_metadata: Option<String>,
    /// The configured tenants (by name) whose alerts this bot may act on; empty (the default): every
    /// tenant. A click names its alert's tenant in the card's data, which the Teams client sends back:
    /// this list is what stops a click through one customer's bot from acting on another's alert.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Who may act through this bot, instead of `triage.allowed`.
    #[serde(default)]
    pub allowed: Option<AllowedConfig>,
}

// --- triage page (issue 22: signed links, the page, its sign-in) ---

/// `triage.page`: the triage page and its links (docs/triage.md "Triage links and the triage page").
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriagePageConfig {
    /// The app's public URL (`https://<edge app>.azurewebsites.net`); links are `{base_url}/api/triage/{token}`.
    pub base_url: String,
    /// The HMAC-SHA256 key that signs links, sessions and forms: at least 32 bytes. A secret: write
    /// `${SECMON_TRIAGE_LINK_KEY}`.
    pub link_key: String,
    /// How long a link is good for after the notification is sent.
    #[serde(default = "default_link_ttl", with = "super::duration")]
    #[schemars(with = "String")]
    pub link_ttl: std::time::Duration,
    /// Sign-in outside Azure: an OpenID Connect provider (authorization code flow with PKCE). In Azure
    /// the page relies on App Service Authentication instead, and this is not used.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// Who may act on the page, instead of `triage.allowed`.
    #[serde(default)]
    pub allowed: Option<AllowedConfig>,
    /// True when `SECMON_TRIAGE_APP_SERVICE_AUTH` is `on`: App Service Authentication is enabled on this
    /// app (the Bicep sets it exactly then), so the platform strips client-sent `X-MS-CLIENT-PRINCIPAL`
    /// headers and the page may trust them. Set from the environment at load, never from the file.
    #[serde(skip)]
    #[schemars(skip)]
    pub app_service_auth: bool,
}

/// Reads `SECMON_TRIAGE_APP_SERVICE_AUTH`: `on` or unset/`off`; anything else is an error.
pub fn app_service_auth(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None | Some("") | Some("off") => Ok(false),
        Some("on") => Ok(true),
        Some(other) => Err(format!("{other:?} is neither on nor off")),
    }
}

fn default_link_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(72 * 3600)
}

/// The OpenID Connect provider of the triage page's standalone sign-in.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer (`https://login.microsoftonline.com/{tenant}/v2.0`); its discovery document is
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id of the app registration (its redirect URI is `{base_url}/api/triage/signin`).
    pub client_id: String,
    /// The client secret, for a confidential client; without it secmon signs in as a public client
    /// (PKCE alone). A secret: write `${SECMON_TRIAGE_OIDC_SECRET}`.
    #[serde(default)]
    pub client_secret: Option<String>,
}

/// The shortest `triage.page.link_key`.
pub const MIN_LINK_KEY_BYTES: usize = 32;

impl TriagePageConfig {
    fn validate(&self, path: &str, fallback: &AllowedConfig, out: &mut Vec<Issue>) {
        let local = |u: &str| u.starts_with("http://127.0.0.1") || u.starts_with("http://localhost");
        let base = self.base_url.trim_end_matches('/');
        if url::Url::parse(base).is_err() || !(base.starts_with("https://") || local(base)) {
            out.push(Issue::error(format!("{path}.base_url"), "must be the app's public https:// URL"));
        }
        if self.link_key.len() < MIN_LINK_KEY_BYTES {
            out.push(Issue::error(
                format!("{path}.link_key"),
                format!("must be at least {MIN_LINK_KEY_BYTES} bytes (write ${{SECMON_TRIAGE_LINK_KEY}})"),
            ));
        }
        if self.link_ttl.is_zero() {
            out.push(Issue::error(format!("{path}.link_ttl"), "must be longer than 0"));
        }
        if let Some(oidc) = &self.oidc {
            if !(oidc.issuer.starts_with("https://") || local(&oidc.issuer)) {
                out.push(Issue::error(format!("{path}.oidc.issuer"), "must be an https:// URL"));
            }
            if oidc.client_id.trim().is_empty() {
                out.push(Issue::error(format!("{path}.oidc.client_id"), "the client id is required"));
            }
        }
        match &self.allowed {
            Some(allowed) => allowed.validate(&format!("{path}.allowed"), out),
            None if fallback.is_empty() => out.push(Issue::warning(
                format!("{path}.allowed"),
                "no users or groups are allowed to act on the triage page: every action will be refused",
            )),
            None => {}
        }
    }

    /// Who may act on the page: its own list, else `triage.allowed`.
    pub fn allowed<'a>(&'a self, fallback: &'a AllowedConfig) -> &'a AllowedConfig {
        self.allowed.as_ref().unwrap_or(fallback)
    }
}

impl BotConfig {
    /// Whether this bot may act on alerts of `tenant`.
    pub fn serves(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }
}

/// Who may act on alerts: a person is allowed when listed in `users` or a member of one of `groups`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedConfig {
    /// Entra object ids or UPNs. Teams activities always carry the object id and only sometimes the
    /// UPN, so prefer object ids.
    #[serde(default)]
    pub users: Vec<String>,
    /// Entra group object ids; membership (transitive) is checked on Graph with the alert's tenant's
    /// credential (`checkMemberGroups`, which needs `GroupMember.Read.All`).
    #[serde(default)]
    pub groups: Vec<String>,
}

impl TriageConfig {
    /// Who may act through `bot`: its own list, else `triage.allowed`.
    pub fn allowed_for<'a>(&'a self, bot: &'a BotConfig) -> &'a AllowedConfig {
        bot.allowed.as_ref().unwrap_or(&self.allowed)
    }

    /// The bot whose app id is `app_id` (the audience of an inbound token), with its name.
    pub fn bot_by_app_id(&self, app_id: &str) -> Option<(&str, &BotConfig)> {
        self.bots.iter().find(|(_, b)| b.app_id == app_id).map(|(n, b)| (n.as_str(), b))
    }

    /// Checks the section; `path` is where it is in the file; `tenants` are the configured tenants' names.
    pub fn validate(&self, path: &str, tenants: &[&str], out: &mut Vec<Issue>) {
        let mut app_ids = std::collections::BTreeSet::new();
        for (name, bot) in &self.bots {
            let bot_path = format!("{path}.bots.{name}");
            if !app_ids.insert(bot.app_id.as_str()) {
                out.push(Issue::error(format!("{bot_path}.app_id"), "another bot has the same app id"));
            }
            if bot.app_id.trim().is_empty() {
                out.push(Issue::error(format!("{bot_path}.app_id"), "the bot's Microsoft App ID is required"));
            }
            if bot.app_secret.trim().is_empty() {
                out.push(Issue::error(
                    format!("{bot_path}.app_secret"),
                    "the bot's client secret is required (write ${SECMON_BOT_SECRET})",
                ));
            }
            if bot.tenant_id.trim().is_empty() {
                out.push(Issue::error(
                    format!("{bot_path}.tenant_id"),
                    "the Entra tenant of the bot's app registration is required",
                ));
            }
            if let Some(url) = &bot.openid_metadata
                && !url.starts_with("https://")
                && !url.starts_with("http://127.0.0.1")
                && !url.starts_with("http://localhost")
            {
                out.push(Issue::error(format!("{bot_path}.openid_metadata"), "must be an https:// URL"));
            }
            for (i, tenant) in bot.tenants.iter().enumerate() {
                if !tenants.contains(&tenant.as_str()) {
                    out.push(Issue::error(format!("{bot_path}.tenants[{i}]"), format!("no tenant is named {tenant}")));
                }
            }
            match &bot.allowed {
                Some(allowed) => allowed.validate(&format!("{bot_path}.allowed"), out),
                None if self.allowed.is_empty() => out.push(Issue::warning(
                    format!("{path}.allowed"),
                    format!("no users or groups are allowed to act through bot {name}: every click will be refused"),
                )),
                None => {}
            }
        }
        self.allowed.validate(&format!("{path}.allowed"), out);
        if let Some(page) = &self.page {
            page.validate(&format!("{path}.page"), &self.allowed, out);
        }
    }
}

impl AllowedConfig {
    /// Nobody is allowed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty()
    }

    fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        for (i, user) in self.users.iter().enumerate() {
            if user.trim().is_empty() {
                out.push(Issue::error(format!("{path}.users[{i}]"), "empty user"));
            }
        }
        for (i, group) in self.groups.iter().enumerate() {
            if uuid::Uuid::parse_str(group).is_err() {
                out.push(Issue::error(
                    format!("{path}.groups[{i}]"),
                    "a group is named by its Entra object id (a GUID), not its display name",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{ConfigError, Issue, load_str};

    const BASE: &str = "tenants:\n  - { id: 11111111-2222-3333-4444-555555555555, name: contoso }\n";

    /// The errors (as `Err`) or the warnings of loading `triage:` with `extra`.
    fn load(extra: &str) -> Result<Vec<Issue>, Vec<Issue>> {
        let now = "2026-12-01T00:00:00Z".parse().unwrap();
        match load_str(&format!("{BASE}triage:\n{extra}"), Path::new("t.yaml"), &|_| None, now) {
            Ok(loaded) => Ok(loaded.warnings),
            Err(ConfigError::Invalid { issues, .. }) => Err(issues),
            Err(other) => panic!("{other}"),
        }
    }

    fn paths(issues: &[Issue]) -> Vec<&str> {
        issues.iter().map(|i| i.path.as_str()).collect()
    }

    #[test]
    fn a_complete_bot_passes() {
        let warnings = load(
            "  bots:\n    soc: { app_id: 00000000-0000-0000-0000-00000000b007, app_secret: s, tenant_id: contoso.onmicrosoft.com, \
             tenants: [contoso] }\n  allowed: { users: [dana@contoso.com], groups: [6f1b2c3d-0000-4000-8000-000000000001] }\n",
        )
        .unwrap();
        assert!(paths(&warnings).iter().all(|p| !p.starts_with("triage")), "{warnings:?}");
    }

    #[test]
    fn missing_parts_and_a_group_by_name_are_errors() {
        let errors = load(
            "  bots:\n    a: { app_id: '', app_secret: '', tenant_id: '', tenants: [fabrikam] }\n    \
                  b: { app_id: '', app_secret: s, tenant_id: t, allowed: { users: [''] } }\n  \
                  allowed: { groups: [SOC analysts] }\n",
        )
        .unwrap_err();
        let found = paths(&errors);
        for path in [
            "triage.bots.a.app_id",
            "triage.bots.a.app_secret",
            "triage.bots.a.tenant_id",
            "triage.bots.a.tenants[0]",
            "triage.bots.b.app_id",
            "triage.bots.b.allowed.users[0]",
            "triage.allowed.groups[0]",
        ] {
            assert!(found.contains(&path), "{path} not in {found:?}");
        }
    }

    #[test]
    fn a_triage_page_needs_an_https_base_and_a_long_key() {
        let errors = load(
            "  page: { base_url: http://example.com, link_key: short, oidc: { issuer: ftp://x, client_id: '' } }\n",
        )
        .unwrap_err();
        let found = paths(&errors);
        for path in
            ["triage.page.base_url", "triage.page.link_key", "triage.page.oidc.issuer", "triage.page.oidc.client_id"]
        {
            assert!(found.contains(&path), "{path} not in {found:?}");
        }
        let warnings = load(
            "  page: { base_url: 'https://edge.azurewebsites.net', link_key: 0123456789abcdef0123456789abcdef }\n",
        )
        .unwrap();
        assert!(paths(&warnings).contains(&"triage.page.allowed"), "{warnings:?}");
    }

    #[test]
    fn a_bot_nobody_may_use_is_a_warning() {
        let warnings = load("  bots:\n    soc: { app_id: a, app_secret: s, tenant_id: t }\n").unwrap();
        assert!(paths(&warnings).contains(&"triage.allowed"), "{warnings:?}");
    }
}
