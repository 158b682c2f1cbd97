//! Building the shared [`App`] from the config and the environment.
//!
//! The store comes from the environment: `SECMON_STORE=azure` selects Azure Blob storage and
//! Storage Queues ([`crate::store::azure`], settings in `SECMON_BLOB_URL`, `SECMON_QUEUE_URL`);
//! anything else, or nothing, the SQLite file named by the config's `store.sqlite`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::app::App;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::graph::{AlertPage, AlertUpdate, Graph, GraphError, Retry};
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

/// The [`App`] for a validated config: store and queue from the environment, the system clock.
pub async fn app_from_config(config: Config) -> Result<App, SetupError> {
    let (store, queue) = stores_from_env(&config).await?;
    Ok(App {
        config: Arc::new(config),
        store,
        queue,
        graph: Arc::new(NoGraphClient),
        http: reqwest::Client::new(),
        clock: Arc::new(SystemClock),
    })
}

/// Stands in for the Microsoft Graph client until the `graph` module ships one: every call fails as
/// retryable, so work waits on the queue instead of being skipped.
#[derive(Debug)]
struct NoGraphClient;

impl NoGraphClient {
    fn fail<T>(operation: &str) -> Result<T, GraphError> {
        Err(GraphError {
            operation: operation.to_string(),
            status: None,
            code: None,
            message: "this build has no Microsoft Graph client".into(),
            retry: Retry::Retryable,
        })
    }
}

#[async_trait]
impl Graph for NoGraphClient {
    async fn list_alerts(&self, _: &str, _: &str) -> Result<AlertPage, GraphError> {
        Self::fail("list alerts")
    }
    async fn next_alerts(&self, _: &str, _: &str) -> Result<AlertPage, GraphError> {
        Self::fail("list alerts")
    }
    async fn get_alert(&self, _: &str, _: &str) -> Result<Value, GraphError> {
        Self::fail("get alert")
    }
    async fn update_alert(&self, _: &str, _: &str, _: &AlertUpdate) -> Result<Value, GraphError> {
        Self::fail("update alert")
    }
    async fn add_comment(&self, _: &str, _: &str, _: &str) -> Result<(), GraphError> {
        Self::fail("comment on alert")
    }
    async fn send_mail(&self, _: &str, _: &str, _: &Value) -> Result<(), GraphError> {
        Self::fail("send mail")
    }
    async fn create_subscription(&self, _: &str, _: &Value) -> Result<Value, GraphError> {
        Self::fail("create subscription")
    }
    async fn renew_subscription(&self, _: &str, _: &str, _: &str) -> Result<Value, GraphError> {
        Self::fail("renew subscription")
    }
    async fn reauthorize_subscription(&self, _: &str, _: &str) -> Result<(), GraphError> {
        Self::fail("reauthorize subscription")
    }
    async fn delete_subscription(&self, _: &str, _: &str) -> Result<(), GraphError> {
        Self::fail("delete subscription")
    }
    async fn list_subscriptions(&self, _: &str) -> Result<Vec<Value>, GraphError> {
        Self::fail("list subscriptions")
    }
}
