//! The state every function shares: the config with what is compiled from it once (the rule engine,
//! the receivers and their templates), and the external edges, each behind a small trait.
//!
//! An `App` is only made by [`App::builder`], which compiles the rules and receivers: nothing compiles
//! them again per alert, and no process-global cache is needed.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Issue};
use crate::graph::Graph;
use crate::notify::Receivers;
use crate::notify::silence::Mute;
use crate::rules::Engine;
use crate::store::{Queue, Store};

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct App {
    /// The validated config.
    pub config: Arc<Config>,
    /// The close rules and routes, compiled.
    pub engine: Arc<Engine>,
    /// The receivers, built, with their compiled templates.
    pub receivers: Arc<Receivers>,
    /// Noise control: the compiled windows and digest schedules, and this process's silence cache.
    pub mute: Arc<Mute>,
    /// State, claims and audit.
    pub store: Arc<dyn Store>,
    /// This process's audit appends to `store`, batched per tenant-day.
    pub audit: Arc<crate::audit::Writer>,
    /// What this process last read of the receivers' breakers in `store`, fresh for a second.
    pub breakers: Arc<crate::notify::deliver::breaker::Seen>,
    /// The alerts queue.
    pub queue: Arc<dyn Queue>,
    /// Microsoft Graph.
    pub graph: Arc<dyn Graph>,
    /// The HTTP client for receivers that are not Graph (Teams, webhooks).
    pub http: reqwest::Client,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// When this process built its state: `/api/health` says "starting" for `health.start_grace` after it.
    pub started: chrono::DateTime<chrono::Utc>,
    /// The anonymous health answer, reused for `health.cache_for`.
    pub health_cache: Arc<crate::intake::health::Cache>,
    /// The Teams bots' token checks and the group checks' answers (issue 22).
    pub triage: Arc<crate::triage::Triage>,
    /// Whether a decided alert's deliveries are tried at once by the worker that decided it, and only
    /// those not finished become jobs ([`crate::notify::deliver::first_try`]); else every delivery is a
    /// job on the `deliveries` queue. Off unless the host turns it on ([`App::with_first_try`]):
    /// `secmon run` does, from `worker.first_try`.
    pub first_try: bool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("tenants", &self.config.tenants.len()).finish_non_exhaustive()
    }
}

/// Why an [`App`] could not be built: the config's rules or receivers do not compile (a config that
/// was loaded with `setup::load` always does).
#[derive(Debug, thiserror::Error)]
#[error("the config does not compile: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct BuildError(pub Vec<Issue>);

/// Builds an [`App`]; see [`App::builder`].
pub struct AppBuilder {
    config: Config,
    store: Option<Arc<dyn Store>>,
    queue: Option<Arc<dyn Queue>>,
    graph: Option<Arc<dyn Graph>>,
    http: Option<reqwest::Client>,
    clock: Option<Arc<dyn Clock>>,
}

impl App {
    /// Starts an `App` for `config`. A store, a queue and a Graph are required; the HTTP client
    /// defaults to a plain one and the clock to the system clock.
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder { config, store: None, queue: None, graph: None, http: None, clock: None }
    }

    /// The same state with another Graph.
    pub fn with_graph(&self, graph: Arc<dyn Graph>) -> App {
        App { graph, ..self.clone() }
    }

    /// The same edges on another backend: its store, its queue, and an audit writer appending to it
    /// (the writer and the breakers' reads belong to the store; setting `store` alone would leave audit
    /// records going to the old one).
    pub fn with_backend<B: Store + Queue + 'static>(&self, backend: Arc<B>) -> App {
        let store: Arc<dyn Store> = backend.clone();
        App {
            audit: Arc::new(crate::audit::Writer::new(store.clone())),
            breakers: Arc::default(),
            store,
            queue: backend,
            ..self.clone()
        }
    }

    /// The same state with another queue on the same store (a wrapper of the queue it has, such as
    /// the standalone worker's [`crate::host::standalone::Waking`]).
    pub fn with_queue(&self, queue: Arc<dyn Queue>) -> App {
        App { queue, ..self.clone() }
    }

    /// The same state, trying deliveries at once (`true`) or queueing every one (`false`).
    pub fn with_first_try(&self, first_try: bool) -> App {
        App { first_try, ..self.clone() }
    }

    /// The same state with another HTTP client.
    pub fn with_http(&self, http: reqwest::Client) -> App {
        App { http, ..self.clone() }
    }

    /// The same edges with another config, compiled anew.
    pub fn with_config(&self, config: Config) -> Result<App, BuildError> {
        let (engine, receivers, mute) = compile(&config)?;
        Ok(App { config: Arc::new(config), engine, receivers, mute, triage: Arc::default(), ..self.clone() })
    }
}

type Compiled = (Arc<Engine>, Arc<Receivers>, Arc<Mute>);

fn compile(config: &Config) -> Result<Compiled, BuildError> {
    // Doorbell keys are secrets wherever they were written (a literal in the file too).
    for key in config.webhook.doorbell_secret.iter().chain(config.webhook.doorbell_secrets.values()) {
        crate::redact::global().add(key);
    }
    let engine = Engine::compile(config);
    let receivers = Receivers::build(config);
    let mute = Mute::build(config);
    match (engine, receivers, mute) {
        (Ok(e), Ok(r), Ok(m)) => Ok((Arc::new(e), Arc::new(r), Arc::new(m))),
        (e, r, m) => {
            let mut issues = e.err().unwrap_or_default();
            issues.extend(r.err().unwrap_or_default());
            issues.extend(m.err().unwrap_or_default());
            Err(BuildError(issues))
        }
    }
}

impl AppBuilder {
    /// The store (state, claims, audit).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The queue.
    pub fn queue(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// One backend as both store and queue (SQLite, Azure, AWS all are).
    pub fn backend<B: Store + Queue + 'static>(self, backend: Arc<B>) -> Self {
        self.store(backend.clone()).queue(backend)
    }

    /// Microsoft Graph.
    pub fn graph(mut self, graph: Arc<dyn Graph>) -> Self {
        self.graph = Some(graph);
        self
    }

    /// The HTTP client for receivers.
    pub fn http(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Compiles the rules and receivers and returns the state.
    ///
    /// # Panics
    /// When no store, queue or Graph was given: that is a programming error, not a config error.
    pub fn build(self) -> Result<App, BuildError> {
        let (engine, receivers, mute) = compile(&self.config)?;
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = self.store.expect("App::builder needs a store");
        Ok(App {
            started: clock.now(),
            health_cache: Arc::default(),
            triage: Arc::default(),
            config: Arc::new(self.config),
            engine,
            receivers,
            mute,
            audit: Arc::new(crate::audit::Writer::new(store.clone())),
            breakers: Arc::default(),
            store,
            queue: self.queue.expect("App::builder needs a queue"),
            graph: self.graph.expect("App::builder needs a Graph"),
            http: self.http.unwrap_or_default(),
            clock,
            first_try: false,
        })
    }
}
