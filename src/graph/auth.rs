//! Entra ID tokens for Graph, per tenant, with `azure_identity` credentials.
//!
//! `azure_identity` 1.x has no default chain, so [`choose`] picks one credential per tenant, in
//! this documented order:
//! 1. the tenant's own `credential:` in the config (its `kind`, or `client_secret` when one is given);
//! 2. `IDENTITY_ENDPOINT` set (App Service / Functions): managed identity, user-assigned when
//!    `AZURE_CLIENT_ID` is set (by client id; App Service rejects resource ids);
//! 3. `AZURE_FEDERATED_TOKEN_FILE` set: workload identity (`AZURE_CLIENT_ID`, the tenant's id);
//! 4. `AZURE_CLIENT_SECRET` set: client secret (`AZURE_CLIENT_ID`, the tenant's id), the usual way
//!    to watch many tenants with one multi-tenant app registration;
//! 5. otherwise the signed-in Azure CLI (local development).
//!
//! A managed identity only ever gets tokens for its own home tenant; watching other tenants needs
//! an app registration per tenant (or one multi-tenant app), configured per tenant.
//!
//! Tokens are cached per tenant and refreshed five minutes before they expire (the Azure CLI
//! credential caches nothing itself). The credentials' own retries are off: secmon's one retry
//! policy ([`super::retry`]) applies to token calls too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

use super::certificate::Certificate;
use super::{CredentialKind, GraphError, Retry};
use crate::config::{Config, TenantConfig};

/// Refresh a cached token this long before it expires.
const REFRESH_MARGIN: azure_core::time::Duration = azure_core::time::Duration::minutes(5);

/// Reads an environment variable; injectable so tests need not touch the process environment.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The credential chosen for one tenant.
#[derive(Clone, PartialEq, Eq)]
pub enum Choice {
    /// App Service / Functions managed identity; user-assigned when a client id is given.
    ManagedIdentity {
        /// Client id of a user-assigned identity.
        client_id: Option<String>,
    },
    /// App registration with a client secret.
    ClientSecret {
        /// App (client) id.
        client_id: String,
        /// The secret.
        secret: String,
    },
    /// App registration with a certificate.
    ClientCertificate {
        /// App (client) id.
        client_id: String,
        /// PEM file with the certificate and its RSA private key.
        path: String,
    },
    /// Workload identity federation.
    WorkloadIdentity {
        /// App (client) id.
        client_id: String,
        /// The projected service-account token file.
        token_file: String,
    },
    /// The Azure CLI's signed-in account.
    AzureCli,
}

impl std::fmt::Debug for Choice {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Choice {
    /// One line for logs and `status`, without secrets.
    pub fn describe(&self) -> String {
        match self {
            Choice::ManagedIdentity { client_id: None } => "managed identity (system-assigned)".into(),
            Choice::ManagedIdentity { client_id: Some(id) } => format!("managed identity (user-assigned {id})"),
            Choice::ClientSecret { client_id, .. } => format!("client secret (app {client_id})"),
            Choice::ClientCertificate { client_id, path } => format!("client certificate {path} (app {client_id})"),
            Choice::WorkloadIdentity { client_id, .. } => format!("workload identity (app {client_id})"),
            Choice::AzureCli => "Azure CLI".into(),
        }
    }
}

/// A token could not be had because of configuration, not because of the service.
fn config_error(tenant: &str, message: impl Into<String>) -> GraphError {
    GraphError {
        operation: format!("credential for {tenant}"),
        status: None,
        code: Some("CredentialConfig".into()),
        message: message.into(),
        retry: Retry::Permanent,
    }
}

/// Picks the credential for `tenant` in the documented order; `env` reads environment variables.
pub fn choose(tenant: &TenantConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Choice, GraphError> {
    let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let name = tenant.name.as_str();
    if let Some(c) = &tenant.credential {
        let kind = c.kind.or(if c.client_secret.is_some() {
            Some(CredentialKind::ClientSecret)
        } else if c.certificate.is_some() {
            Some(CredentialKind::ClientCertificate)
        } else {
            None
        });
        let client_id = || {
            c.client_id.clone().or_else(|| var("AZURE_CLIENT_ID")).ok_or_else(|| {
                config_error(name, "no client_id in the tenant's credential and AZURE_CLIENT_ID is not set")
            })
        };
        match kind {
            Some(CredentialKind::ManagedIdentity) => {
                return Ok(Choice::ManagedIdentity {
                    client_id: c.client_id.clone().or_else(|| var("AZURE_CLIENT_ID")),
                });
            }
            Some(CredentialKind::ClientSecret) => {
                let secret = c.client_secret.clone().or_else(|| var("AZURE_CLIENT_SECRET")).ok_or_else(|| {
                    config_error(name, "kind client_secret without client_secret, and AZURE_CLIENT_SECRET is not set")
                })?;
                return Ok(Choice::ClientSecret { client_id: client_id()?, secret });
            }
            Some(CredentialKind::ClientCertificate) => {
                let path = c.certificate.clone().or_else(|| var("AZURE_CLIENT_CERTIFICATE_PATH")).ok_or_else(|| {
                    config_error(
                        name,
                        "kind client_certificate without certificate, and AZURE_CLIENT_CERTIFICATE_PATH is not set",
                    )
                })?;
                return Ok(Choice::ClientCertificate { client_id: client_id()?, path });
            }
            Some(CredentialKind::WorkloadIdentity) => {
                let token_file = var("AZURE_FEDERATED_TOKEN_FILE").ok_or_else(|| {
                    config_error(name, "kind workload_identity needs AZURE_FEDERATED_TOKEN_FILE (set by the workload identity webhook)")
                })?;
                return Ok(Choice::WorkloadIdentity { client_id: client_id()?, token_file });
            }
            Some(CredentialKind::AzureCli) => return Ok(Choice::AzureCli),
            // Only a client_id: fall through to the environment, with that id.
            None => {}
        }
    }
    let explicit_id = tenant.credential.as_ref().and_then(|c| c.client_id.clone());
    let client_id = explicit_id.or_else(|| var("AZURE_CLIENT_ID"));
    if var("IDENTITY_ENDPOINT").is_some() {
        return Ok(Choice::ManagedIdentity { client_id });
    }
    if let Some(token_file) = var("AZURE_FEDERATED_TOKEN_FILE") {
        let client_id = client_id
            .ok_or_else(|| config_error(name, "AZURE_FEDERATED_TOKEN_FILE is set but AZURE_CLIENT_ID is not"))?;
        return Ok(Choice::WorkloadIdentity { client_id, token_file });
    }
    if let Some(secret) = var("AZURE_CLIENT_SECRET") {
        let client_id =
            client_id.ok_or_else(|| config_error(name, "AZURE_CLIENT_SECRET is set but AZURE_CLIENT_ID is not"))?;
        return Ok(Choice::ClientSecret { client_id, secret });
    }
    Ok(Choice::AzureCli)
}

/// Why [`choose`] picks what it picks for `tenant`: the rule of the documented order that applied.
pub fn reason(tenant: &TenantConfig, env: &dyn Fn(&str) -> Option<String>) -> &'static str {
    let set = |k: &str| env(k).is_some_and(|v| !v.trim().is_empty());
    match &tenant.credential {
        Some(c) if c.kind.is_some() => "the tenant's credential.kind in the config",
        Some(c) if c.client_secret.is_some() => "the tenant's credential.client_secret in the config",
        Some(c) if c.certificate.is_some() => "the tenant's credential.certificate in the config",
        _ if set("IDENTITY_ENDPOINT") => "IDENTITY_ENDPOINT is set (App Service / Functions managed identity)",
        _ if set("AZURE_FEDERATED_TOKEN_FILE") => "AZURE_FEDERATED_TOKEN_FILE is set (workload identity)",
        _ if set("AZURE_CLIENT_SECRET") => "AZURE_CLIENT_SECRET is set",
        _ => "no credential in the config or the environment, so the signed-in Azure CLI",
    }
}

/// Turns an `azure_core` error into a [`GraphError`] that says whether a retry helps.
///
/// The credentials wrap every failure as `Credential` ("… authentication failed"); the cause
/// underneath decides: an HTTP status, a garbled answer, or a credential that cannot work as set up.
pub fn token_error(tenant: &str, e: &azure_core::Error) -> GraphError {
    use azure_core::error::ErrorKind;
    let mut cause = e;
    while matches!(cause.kind(), ErrorKind::Credential)
        && let Some(inner) = std::error::Error::source(cause).and_then(|s| s.downcast_ref::<azure_core::Error>())
    {
        cause = inner;
    }
    let (status, code, retry) = match cause.kind() {
        ErrorKind::HttpResponse { status, error_code, .. } => {
            let s = u16::from(*status);
            (Some(s), error_code.clone(), super::retry::RetryPolicy::classify(s))
        }
        // A credential that cannot work as configured (missing file, unsupported identity source).
        ErrorKind::Credential => (None, None, Retry::Permanent),
        // I/O, a token endpoint answering garbage, anything else: worth another try.
        _ => (None, None, Retry::Retryable),
    };
    GraphError {
        operation: format!("get a Graph token for {tenant}"),
        status,
        code,
        message: crate::redact::redact(&format!("{e}")),
        retry,
    }
}

struct Cached {
    token: String,
    expires_on: azure_core::time::OffsetDateTime,
}

/// Tokens for every configured tenant: one credential each, built on first use, cached.
pub struct Auth {
    authority: String,
    scope: String,
    tenants: HashMap<String, TenantConfig>,
    http: reqwest::Client,
    env: Env,
    credentials: Mutex<HashMap<String, Arc<dyn TokenCredential>>>,
    /// Tokens by (tenant, scope).
    cache: tokio::sync::Mutex<HashMap<(String, String), Cached>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("authority", &self.authority).field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl Auth {
    /// Credentials for the config's tenants, sharing `http` as transport (so a test CA trusted by the
    /// Graph client is trusted by the token calls too). The environment is the process's.
    pub fn new(config: &Config, http: reqwest::Client) -> Self {
        Self::with_env(config, http, Arc::new(|k: &str| std::env::var(k).ok()))
    }

    /// As [`Auth::new`], reading the environment through `env`.
    pub fn with_env(config: &Config, http: reqwest::Client, env: Env) -> Self {
        for t in &config.tenants {
            if let Some(s) = t.credential.as_ref().and_then(|c| c.client_secret.as_deref()) {
                crate::redact::global().add(s);
            }
        }
        if let Some(s) = env("AZURE_CLIENT_SECRET") {
            crate::redact::global().add(&s);
        }
        Self {
            authority: config.authority(),
            // Tokens are issued for the cloud's Graph, whatever URL the requests go to.
            scope: format!("{}/.default", config.cloud.graph_url()),
            tenants: config.tenants.iter().map(|t| (t.name.clone(), t.clone())).collect(),
            http,
            env,
            credentials: Mutex::new(HashMap::new()),
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The credential each tenant uses, for `status` and logs.
    pub fn describe(&self, tenant: &str) -> Result<String, GraphError> {
        let t = self.tenants.get(tenant).ok_or_else(|| config_error(tenant, "not a configured tenant"))?;
        Ok(choose(t, &*self.env)?.describe())
    }

    fn client_options(&self) -> ClientOptions {
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = self.authority.clone();
        ClientOptions {
            retry: RetryOptions::none(),
            transport: Some(Transport::new(Arc::new(self.http.clone()))),
            cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
            ..Default::default()
        }
    }

    fn credential(&self, tenant: &str) -> Result<Arc<dyn TokenCredential>, GraphError> {
        if let Some(c) = self.credentials.lock().expect("credentials lock").get(tenant) {
            return Ok(c.clone());
        }
        let t = self.tenants.get(tenant).ok_or_else(|| config_error(tenant, "not a configured tenant"))?;
        let choice = choose(t, &*self.env)?;
        tracing::info!(tenant, credential = %choice.describe(), "credential chosen");
        let built: azure_core::Result<Arc<dyn TokenCredential>> = match choice {
            Choice::ManagedIdentity { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.map(UserAssignedId::ClientId),
                    client_options: self.client_options(),
                }))
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            Choice::ClientSecret { client_id, secret } => {
                crate::redact::global().add(&secret);
                ClientSecretCredential::new(
                    &t.id,
                    client_id,
                    Secret::new(secret),
                    Some(ClientSecretCredentialOptions { client_options: self.client_options() }),
                )
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            Choice::WorkloadIdentity { client_id, token_file } => {
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions { client_options: self.client_options() },
                    client_id: Some(client_id),
                    tenant_id: Some(t.id.clone()),
                    token_file_path: Some(token_file.into()),
                }))
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            Choice::ClientCertificate { client_id, path } => {
                let certificate = Certificate::from_pem_file(&path).map_err(|e| config_error(tenant, e.to_string()))?;
                super::certificate::credential(&t.id, &client_id, certificate, &self.authority, self.client_options())
            }
            Choice::AzureCli => AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: Some(t.id.clone()),
                ..Default::default()
            }))
            .map(|c| c as Arc<dyn TokenCredential>),
        };
        let credential = built.map_err(|e| token_error(tenant, &e))?;
        self.credentials.lock().expect("credentials lock").insert(tenant.to_string(), credential.clone());
        Ok(credential)
    }

    /// A bearer token for `tenant`'s Graph, from the cache while it has five minutes left.
    pub async fn token(&self, tenant: &str) -> Result<String, GraphError> {
        self.token_for(tenant, &self.scope).await
    }

    /// A bearer token for `scope` (another resource, e.g. a Power Automate trigger) with `tenant`'s
    /// credential, cached like Graph's.
    pub async fn token_for(&self, tenant: &str, scope: &str) -> Result<String, GraphError> {
        let mut cache = self.cache.lock().await;
        let now = azure_core::time::OffsetDateTime::now_utc();
        let cache_key = (tenant.to_string(), scope.to_string());
        if let Some(c) = cache.get(&cache_key)
            && c.expires_on - REFRESH_MARGIN > now
        {
            return Ok(c.token.clone());
        }
        let credential = self.credential(tenant)?;
        let token = credential.get_token(&[scope], None).await.map_err(|e| token_error(tenant, &e))?;
        let value = token.token.secret().to_string();
        if value.trim().is_empty() {
            return Err(GraphError {
                operation: format!("get a Graph token for {tenant}"),
                status: None,
                code: None,
                message: "the token endpoint answered an empty access token".into(),
                retry: Retry::Retryable,
            });
        }
        crate::redact::global().add(&value);
        cache.insert(cache_key, Cached { token: value.clone(), expires_on: token.expires_on });
        Ok(value)
    }

    /// Forgets a tenant's cached token (after Graph refused it).
    pub async fn forget(&self, tenant: &str) {
        self.cache.lock().await.retain(|(t, _), _| t != tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::CredentialConfig;

    fn tenant(credential: Option<CredentialConfig>) -> TenantConfig {
        TenantConfig { id: "11111111-2222-3333-4444-555555555555".into(), name: "contoso".into(), credential }
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_environment_is_read_in_the_documented_order() {
        let all = env_of(&[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1/msi"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_CLIENT_ID", "app"),
            ("AZURE_CLIENT_SECRET", "s3cret-value"),
        ]);
        assert_eq!(choose(&tenant(None), &all).unwrap(), Choice::ManagedIdentity { client_id: Some("app".into()) });
        let no_mi = env_of(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ("AZURE_CLIENT_ID", "app"),
            ("AZURE_CLIENT_SECRET", "s3cret-value"),
        ]);
        assert!(matches!(choose(&tenant(None), &no_mi).unwrap(), Choice::WorkloadIdentity { .. }));
        let secret = env_of(&[("AZURE_CLIENT_ID", "app"), ("AZURE_CLIENT_SECRET", "s3cret-value")]);
        assert!(matches!(choose(&tenant(None), &secret).unwrap(), Choice::ClientSecret { .. }));
        assert_eq!(choose(&tenant(None), &env_of(&[])).unwrap(), Choice::AzureCli);
        let system = env_of(&[("IDENTITY_ENDPOINT", "http://127.0.0.1/msi")]);
        assert_eq!(choose(&tenant(None), &system).unwrap(), Choice::ManagedIdentity { client_id: None });
    }

    #[test]
    fn the_tenants_own_credential_wins() {
        let env = env_of(&[("IDENTITY_ENDPOINT", "http://127.0.0.1/msi")]);
        let c = CredentialConfig {
            client_id: Some("app".into()),
            client_secret: Some("x".repeat(10)),
            ..Default::default()
        };
        assert!(matches!(choose(&tenant(Some(c)), &env).unwrap(), Choice::ClientSecret { .. }));
        let cli = CredentialConfig { kind: Some(CredentialKind::AzureCli), ..Default::default() };
        assert_eq!(choose(&tenant(Some(cli)), &env).unwrap(), Choice::AzureCli);
        // Only a client id: the environment decides the kind, with that id.
        let id_only = CredentialConfig { client_id: Some("uami".into()), ..Default::default() };
        assert_eq!(
            choose(&tenant(Some(id_only)), &env).unwrap(),
            Choice::ManagedIdentity { client_id: Some("uami".into()) }
        );
    }

    #[test]
    fn incomplete_settings_are_permanent_errors_that_say_what_is_missing() {
        let env = env_of(&[("AZURE_CLIENT_SECRET", "s3cret-value")]);
        let e = choose(&tenant(None), &env).unwrap_err();
        assert_eq!(e.retry, Retry::Permanent);
        assert!(e.message.contains("AZURE_CLIENT_ID"), "{e}");
        let wi = CredentialConfig {
            kind: Some(CredentialKind::WorkloadIdentity),
            client_id: Some("a".into()),
            ..Default::default()
        };
        let e = choose(&tenant(Some(wi)), &env_of(&[])).unwrap_err();
        assert!(e.message.contains("AZURE_FEDERATED_TOKEN_FILE"), "{e}");
    }

    #[test]
    fn the_reason_names_the_rule_that_applied() {
        let env = env_of(&[("IDENTITY_ENDPOINT", "http://127.0.0.1/msi"), ("AZURE_CLIENT_SECRET", "s3cret-value")]);
        assert!(reason(&tenant(None), &env).starts_with("IDENTITY_ENDPOINT"));
        let c =
            CredentialConfig { client_id: Some("a".into()), client_secret: Some("x".repeat(10)), ..Default::default() };
        assert!(reason(&tenant(Some(c)), &env).contains("client_secret in the config"));
        assert!(reason(&tenant(None), &env_of(&[])).contains("Azure CLI"));
    }

    #[test]
    fn descriptions_never_show_the_secret() {
        let c = Choice::ClientSecret { client_id: "app".into(), secret: "hunter2-secret".into() };
        assert!(!format!("{c:?} {}", c.describe()).contains("hunter2"));
    }
}
