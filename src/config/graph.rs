//! The `cloud` setting and per-tenant credentials.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Issue;

/// A Microsoft cloud (national clouds have their own Graph and login hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Global service (and M365 GCC).
    #[default]
    Global,
    /// US Government L4 (GCC High).
    Usgov,
    /// US Government L5 (DoD).
    Usgovdod,
    /// China (21Vianet): accepted in the file only to say clearly that it cannot work.
    China,
}

impl Cloud {
    /// Graph root.
    pub fn graph_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://graph.microsoft.com",
            Cloud::Usgov => "https://graph.microsoft.us",
            Cloud::Usgovdod => "https://dod-graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }

    /// The audience of a token for a Power Automate trigger set to "any user in my tenant"
    /// (Power Automate's "Add OAuth authentication for HTTP request triggers"). GCC uses the `global`
    /// cloud with `https://gov.service.flow.microsoft.us/`.
    pub fn flow_audience(self) -> &'static str {
        match self {
            Cloud::Global => "https://service.flow.microsoft.com/",
            Cloud::Usgov => "https://high.service.flow.microsoft.us/",
            Cloud::Usgovdod => "https://service.flow.appsplatform.us/",
            Cloud::China => "https://service.powerautomate.cn/",
        }
    }

    /// Token authority.
    pub fn authority_url(self) -> &'static str {
        match self {
            Cloud::Global => "https://login.microsoftonline.com",
            Cloud::Usgov | Cloud::Usgovdod => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// Checks the cloud can serve alerts_v2.
    pub fn validate(self, path: &str, out: &mut Vec<Issue>) {
        if self == Cloud::China {
            out.push(Issue::error(
                path,
                "Microsoft Graph in China (21Vianet) has no security alerts_v2 or incidents API; secmon cannot watch tenants there",
            ));
        }
    }
}

/// How to authenticate to one tenant. Absent fields are taken from the environment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Which kind: `managed_identity`, `client_secret`, `client_certificate`, `workload_identity`,
    /// `azure_cli`. Default: `client_secret` when a secret is given, else chosen from the environment.
    #[serde(default)]
    pub kind: Option<CredentialKind>,
    /// App (client) id; for a user-assigned managed identity, its client id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Client secret; write `${NAME}` to take it from the environment.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Path of one PEM file holding the certificate and its unencrypted RSA private key.
    #[serde(default)]
    pub certificate: Option<String>,
}

/// The credential kinds secmon supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// App Service / Functions managed identity (`IDENTITY_ENDPOINT`), system- or user-assigned.
    ManagedIdentity,
    /// App registration with a client secret.
    ClientSecret,
    /// App registration with a certificate.
    ClientCertificate,
    /// Workload identity federation (`AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
    /// The signed-in Azure CLI user (local development only).
    AzureCli,
}

impl CredentialConfig {
    /// Checks the fields fit the kind.
    pub fn validate(&self, path: &str, out: &mut Vec<Issue>) {
        match self.kind {
            Some(CredentialKind::ClientSecret) | None if self.client_secret.is_some() && self.client_id.is_none() => {
                out.push(Issue::error(format!("{path}.client_id"), "a client secret needs a client_id"))
            }
            Some(CredentialKind::ClientSecret) | None if self.client_secret.is_some() => {}
            Some(CredentialKind::ClientSecret) => {
                out.push(Issue::error(format!("{path}.client_secret"), "kind client_secret needs client_secret"))
            }
            Some(CredentialKind::ClientCertificate) if self.certificate.is_none() || self.client_id.is_none() => out
                .push(Issue::error(
                    format!("{path}.certificate"),
                    "kind client_certificate needs client_id and certificate",
                )),
            _ => {}
        }
    }
}
