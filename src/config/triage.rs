//! The `triage` section: acting on alerts from where they are told (docs/triage.md) — the Teams bot's
//! identity and who may act.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Issue;

/// `triage`: the Teams bot and the people allowed to act on alerts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageConfig {
    /// The Teams bot (Azure Bot Service): without it, no card carries buttons and the `bot-messages`
    /// endpoint refuses every request.
    #[serde(default)]
    pub bot: Option<BotConfig>,
    /// Who may act. Empty (the default): nobody.
    #[serde(default)]
    pub allowed: AllowedConfig,
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
    /// Checks the section; `path` is where it is in the file.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        if let Some(bot) = &self.bot {
            let bot_path = format!("{path}.bot");
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
            if self.allowed.users.is_empty() && self.allowed.groups.is_empty() {
                out.push(Issue::warning(
                    format!("{path}.allowed"),
                    "no users or groups are allowed to act: every click will be refused",
                ));
            }
        }
        for (i, user) in self.allowed.users.iter().enumerate() {
            if user.trim().is_empty() {
                out.push(Issue::error(format!("{path}.allowed.users[{i}]"), "empty user"));
            }
        }
        for (i, group) in self.allowed.groups.iter().enumerate() {
            if uuid::Uuid::parse_str(group).is_err() {
                out.push(Issue::error(
                    format!("{path}.allowed.groups[{i}]"),
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
            "  bot: { app_id: 00000000-0000-0000-0000-00000000b007, app_secret: s, tenant_id: contoso.onmicrosoft.com }\n  \
             allowed: { users: [dana@contoso.com], groups: [6f1b2c3d-0000-4000-8000-000000000001] }\n",
        )
        .unwrap();
        assert!(paths(&warnings).iter().all(|p| !p.starts_with("triage")), "{warnings:?}");
    }

    #[test]
    fn missing_parts_and_a_group_by_name_are_errors() {
        let errors =
            load("  bot: { app_id: '', app_secret: '', tenant_id: '' }\n  allowed: { groups: [SOC analysts] }\n")
                .unwrap_err();
        let found = paths(&errors);
        for path in ["triage.bot.app_id", "triage.bot.app_secret", "triage.bot.tenant_id", "triage.allowed.groups[0]"] {
            assert!(found.contains(&path), "{path} not in {found:?}");
        }
    }

    #[test]
    fn a_bot_nobody_may_use_is_a_warning() {
        let warnings = load("  bot: { app_id: a, app_secret: s, tenant_id: t }\n").unwrap();
        assert!(paths(&warnings).contains(&"triage.allowed"), "{warnings:?}");
    }
}
