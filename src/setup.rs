//! Builds the [`App`] a command needs from a loaded config: the SQLite store, the Graph client, one
//! HTTP client and the system clock.

use std::sync::Arc;

use anyhow::Context;

use crate::app::App;
use crate::clock::SystemClock;
use crate::config::Loaded;
use crate::graph::client::GraphClient;
use crate::store::sqlite::SqliteStore;

/// The HTTP client every edge shares (Graph, token endpoints, receivers).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("secmon/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .context("building the HTTP client")
}

/// The standalone [`App`]: the SQLite store at `config.store.sqlite`, the real Graph client.
pub fn app_from_config(loaded: &Loaded) -> anyhow::Result<App> {
    let config = Arc::new(loaded.config.clone());
    let path = &config.store.sqlite;
    let store =
        Arc::new(SqliteStore::open(path).with_context(|| format!("opening the SQLite store {}", path.display()))?);
    let http = http_client()?;
    let graph = GraphClient::new(&config, http.clone()).map_err(anyhow::Error::msg)?;
    Ok(App { config, store: store.clone(), queue: store, graph: Arc::new(graph), http, clock: Arc::new(SystemClock) })
}
