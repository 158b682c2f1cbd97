//! Building the shared [`App`] from the config and the environment.
//!
//! The store comes from the environment: `SECMON_STORE=azure` selects Azure Blob storage and
//! Storage Queues ([`crate::store::azure`], settings in `SECMON_BLOB_URL`, `SECMON_QUEUE_URL`);
//! anything else, or nothing, the SQLite file named by the config's `store.sqlite`.

use std::sync::Arc;

use crate::app::App;
use crate::clock::SystemClock;
use crate::config::{Config, ConfigError, Loaded};
use crate::graph::client::GraphClient;
use crate::store::azure::{AzureSettings, AzureStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Queue, Store};

/// Why the state could not be built; the message says which setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `SECMON_STORE` names no known backend.
    #[error("SECMON_STORE={0:?}: expected \"azure\" or \"sqlite\"")]
    UnknownStore(String),
    /// The Azure store's settings or start-up failed.
    #[error(transparent)]
    Azure(#[from] crate::store::azure::AzureSetupError),
    /// The Graph client cannot be built for this config (China, a bad graph_url).
    #[error("graph: {0}")]
    Graph(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// The config's rules or receivers do not compile.
    #[error(transparent)]
    Compile(#[from] crate::app::BuildError),
    /// The AWS store's settings are incomplete (`SECMON_STORE=aws`, feature `aws`).
    #[error("SECMON_STORE=aws: {0}")]
    Aws(String),
    /// The SQLite file could not be opened.
    #[error("store.sqlite {path}: {message}")]
    Sqlite {
        /// The file.
        path: String,
        /// What happened.
        message: String,
    },
}

/// The store and queue selected by `SECMON_STORE` (see the module docs).
pub async fn stores_from_env(config: &Config) -> Result<(Arc<dyn Store>, Arc<dyn Queue>), SetupError> {
    match std::env::var("SECMON_STORE").ok().as_deref().map(str::trim) {
        Some("azure") => {
            let store = Arc::new(AzureStore::connect(&AzureSettings::from_env()?).await?);
            Ok((store.clone(), store))
        }
        None | Some("") | Some("sqlite") => {
            let path = &config.store.sqlite;
            let store = SqliteStore::open(path)
                .map_err(|e| SetupError::Sqlite { path: path.display().to_string(), message: e.to_string() })?;
            let store = Arc::new(store);
            recover_dead_leases(store.as_ref()).await;
            Ok((store.clone(), store))
        }
        Some(other) => Err(SetupError::UnknownStore(other.to_string())),
    }
}

/// Makes visible at once what processes that died left in flight on the SQLite queue (see
/// [`crate::store::sqlite::Instance`]); a failure only means those messages wait for their timeout.
async fn recover_dead_leases(store: &dyn crate::store::QueueAdmin) {
    match store.recover_dead_leases().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(messages = n, "re-delivering what a stopped or crashed secmon left in flight"),
        Err(e) => tracing::warn!("could not look for messages left in flight by a dead process: {e}"),
    }
}

/// The store, the queue and the queue's operator side ([`crate::store::QueueAdmin`]) that
/// `SECMON_STORE` selects, for `secmon queue …`: as [`stores_from_env`], and with feature `aws`
/// `SECMON_STORE=aws` (S3 and SQS, settings as the Lambda functions read them).
pub async fn queue_tools_from_env(config: &Config) -> Result<QueueTools, SetupError> {
    match std::env::var("SECMON_STORE").ok().as_deref().map(str::trim) {
        Some("azure") => {
            let store = Arc::new(AzureStore::connect(&AzureSettings::from_env()?).await?);
            Ok((store.clone(), store.clone(), store))
        }
        #[cfg(feature = "aws")]
        Some("aws") => {
            let settings =
                crate::store::aws::AwsSettings::from_env(&|k| std::env::var(k).ok()).map_err(SetupError::Aws)?;
            let (store, queue) = settings.connect(Arc::new(SystemClock)).await;
            Ok((store, queue.clone(), queue))
        }
        None | Some("") | Some("sqlite") => {
            let path = &config.store.sqlite;
            let store = SqliteStore::open(path)
                .map_err(|e| SetupError::Sqlite { path: path.display().to_string(), message: e.to_string() })?;
            let store = Arc::new(store);
            Ok((store.clone(), store.clone(), store))
        }
        Some(other) => Err(SetupError::UnknownStore(other.to_string())),
    }
}

/// What [`queue_tools_from_env`] returns.
pub type QueueTools = (Arc<dyn Store>, Arc<dyn Queue>, Arc<dyn crate::store::QueueAdmin>);

/// The HTTP client every edge shares (Graph, token endpoints, receivers).
pub fn http_client() -> Result<reqwest::Client, SetupError> {
    reqwest::Client::builder()
        .user_agent(concat!("secmon/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        // A hung peer must not hold a queue message forever; every retry policy works per attempt.
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| SetupError::Http(e.to_string()))
}

/// The [`App`] for a validated config: store and queue from the environment, the Graph client
/// (credentials chosen per tenant, see [`crate::graph::auth`]), one HTTP client, the system clock.
pub async fn app_from_config(config: Config) -> Result<App, SetupError> {
    crate::redact::register_environment(&|k| std::env::var(k).ok());
    let (store, queue) = stores_from_env(&config).await?;
    let http = http_client()?;
    let graph = GraphClient::new(&config, http.clone()).map_err(SetupError::Graph)?;
    Ok(App::builder(config)
        .store(store)
        .queue(queue)
        .graph(Arc::new(graph))
        .http(http)
        .clock(Arc::new(SystemClock))
        .build()?)
}

/// What loading a config checks beyond its own structure: every rule and route expression compiles
/// (and close rules are linted), every template renders. Findings are located like the config's own.
pub fn check_stages(config: &Config, _cx: &crate::config::ValidationContext<'_>, out: &mut Vec<crate::config::Issue>) {
    crate::rules::check(config, out);
    crate::notify::check(config, out);
}

/// Loads the config at `file` with the process environment and checks it completely: structure,
/// cross-references and [`check_stages`]. What `check-config` and every host use.
pub fn load(file: &std::path::Path, now: chrono::DateTime<chrono::Utc>) -> Result<Loaded, ConfigError> {
    crate::config::load_checked(file, now, &check_stages)
}

/// [`load`] of config text with an environment of the caller's; `file` is only used in messages.
pub fn load_str(
    text: &str,
    file: &std::path::Path,
    env: crate::config::EnvLookup<'_>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Loaded, ConfigError> {
    crate::config::load_str_checked(text, file, env, now, &check_stages)
}
