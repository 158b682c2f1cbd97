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
            Ok((store.clone(), store))
        }
        Some(other) => Err(SetupError::UnknownStore(other.to_string())),
    }
}

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
