//! The `doctor` section: who may run `secmon doctor`'s checks over HTTP (`/api/doctor`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Issue;

/// The shortest doctor token accepted.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Settings of the `doctor` HTTP function.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DoctorConfig {
    /// The bearer token `/api/doctor` requires (`Authorization: Bearer …`); write `${NAME}`. Without it
    /// the function answers 404, whatever the host. In Azure the function key is required as well.
    #[serde(default)]
    pub token: Option<String>,
}

impl DoctorConfig {
    /// Checks the token is long enough and comes from the environment.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        match &self.token {
            Some(t) if t.len() < MIN_TOKEN_BYTES => out.push(Issue::error(
                format!("{path}.token"),
                format!("use at least {MIN_TOKEN_BYTES} random characters"),
            )),
            Some(t) if !super::receivers::from_environment(t) => out.push(Issue::error(
                format!("{path}.token"),
                "the token is written in the config file; write \"${NAME}\" and set NAME in the environment or as \
                 a Key Vault reference",
            )),
            _ => {}
        }
    }
}
