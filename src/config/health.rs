//! The `health` section: what `/api/health` tells anyone, and who may read `/api/health-details`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Issue;

/// Settings of the `health` and `health-details` HTTP functions.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// The bearer token `/api/health-details` requires (`Authorization: Bearer …`); write `${NAME}`.
    /// In Azure the function key alone is enough when no token is set (the host checks it); standalone
    /// and on AWS the details answer 404 without a token. `/api/health` itself is only up/down.
    #[serde(default)]
    pub token: Option<String>,
    /// For how long after start a tenant with no recent successful poll, whose last poll did not fail
    /// (never polled yet, or secmon was stopped), counts as "starting" (200) rather than "down" (503).
    #[serde(default = "default_start_grace", with = "super::duration")]
    #[schemars(with = "String")]
    pub start_grace: Duration,
    /// How long the anonymous `/api/health` answer is reused before the store is read again.
    #[serde(default = "default_cache_for", with = "super::duration")]
    #[schemars(with = "String")]
    pub cache_for: Duration,
}

fn default_start_grace() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_cache_for() -> Duration {
    Duration::from_secs(10)
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { token: None, start_grace: default_start_grace(), cache_for: default_cache_for() }
    }
}

impl HealthConfig {
    /// Checks the token like `doctor.token`, and the durations.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        match &self.token {
            Some(t) if t.len() < super::doctor::MIN_TOKEN_BYTES => out.push(Issue::error(
                format!("{path}.token"),
                format!("use at least {} random characters", super::doctor::MIN_TOKEN_BYTES),
            )),
            Some(t) if !super::receivers::from_environment(t) => out.push(Issue::error(
                format!("{path}.token"),
                "the token is written in the config file; write \"${NAME}\" and set NAME in the environment or as \
                 a Key Vault reference",
            )),
            _ => {}
        }
        if self.start_grace > Duration::from_secs(24 * 3600) {
            out.push(Issue::error(format!("{path}.start_grace"), "use at most 24h"));
        }
        if self.cache_for > Duration::from_secs(300) {
            out.push(Issue::error(
                format!("{path}.cache_for"),
                "use at most 5m: an uptime probe would see a stale answer",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_and_the_durations_are_checked() {
        let check = |c: HealthConfig| {
            let mut out = Vec::new();
            c.validate("health", &mut out);
            out.into_iter().map(|i| i.path).collect::<Vec<_>>()
        };
        assert!(check(HealthConfig::default()).is_empty());
        let short = HealthConfig { token: Some("short".into()), ..Default::default() };
        assert_eq!(check(short), ["health.token"]);
        let long = HealthConfig {
            start_grace: Duration::from_secs(25 * 3600),
            cache_for: Duration::from_secs(301),
            ..Default::default()
        };
        assert_eq!(check(long), ["health.start_grace", "health.cache_for"]);
    }
}
