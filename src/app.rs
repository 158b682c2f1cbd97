//! The state every function shares: config and the external edges, each behind a small trait.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::graph::Graph;
use crate::store::{Queue, Store};

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// The validated config.
    pub config: Arc<Config>,
    /// State, claims and audit.
    pub store: Arc<dyn Store>,
    /// The alerts queue.
    pub queue: Arc<dyn Queue>,
    /// Microsoft Graph.
    pub graph: Arc<dyn Graph>,
    /// The HTTP client for receivers that are not Graph (Teams, webhooks).
    pub http: reqwest::Client,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("tenants", &self.config.tenants.len()).finish_non_exhaustive()
    }
}
