//! Standalone mode: one process runs the scheduler, the HTTP server and the queue worker on the
//! embedded store — the same functions the Functions host would invoke, driven from here.
//!
//! The HTTP server ([`serve`]) limits what one client can hold (`webhook.server`): a request's headers
//! must arrive within `header_timeout` and its body within `body_timeout`, a connection idle for
//! `idle_timeout` is closed, and at most `max_connections` are open; at the cap a new connection
//! closes the longest-idle one, so idle sockets can never lock out `/api/health` or a notification.
//!
//! At start it logs a one-screen summary of what it will do ([`super::startup::summary`]) and polls
//! every tenant at once, without waiting for the schedule's first tick.
//!
//! The queue worker ([`worker`]) is a pool of `worker.concurrency` tasks over both queues (`alerts`
//! for `respond`, `deliveries` for `deliver`), fair between tenants: the next message started is always
//! one of the tenant with the fewest messages in work ([`Pending`]), so one tenant's burst never takes
//! every slot while another tenant waits.
//!
//! A message sent in this process (a doorbell's poll request, the poll's alerts, a decided alert's
//! deliveries) wakes the worker at once ([`Waking`]); between messages from elsewhere (another
//! process on the file, a visibility timeout running out) it looks every half second.
//!
//! Shutdown (SIGTERM or Ctrl-C) stops the scheduler and the HTTP server, lets the messages in hand
//! finish, and exits. A message is deleted only after it was processed, so one in flight when the
//! process dies (or received and not started) reappears: after its visibility timeout, or at once when
//! the next secmon process opens the SQLite store and finds its holder gone (dead-lease recovery,
//! [`crate::store::sqlite::Instance`]). Work is repeated, never lost.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::app::App;
use crate::functions::{self, Function, Outcome, Timer};
use crate::store::{ALERTS_QUEUE, DELIVERIES_QUEUE, Partial, Queue, QueueAdmin, Received, StoreResult};

/// The queue functions the worker serves, in the order [`drain`] empties their queues.
pub const QUEUE_FUNCTIONS: [Function; 2] = [Function::Respond, Function::Deliver];

/// The order in which the [`worker`] fills its free slots: deliveries first. A delivery job is an alert
/// already decided, one step from a person; taking them before new alerts tells people of the first
/// alerts of a burst while the rest are still being decided (filling the slots with the `alerts` queue
/// first held every notification of a 10,000-alert burst back until nearly all of it was decided), and
/// keeps fewer decided-but-untold alerts in flight. It cannot starve the `alerts` queue: deliveries
/// are made only by deciding alerts.
const FILL_ORDER: [Function; 2] = [Function::Deliver, Function::Respond];

/// How long a received message stays hidden while it is processed (a poll of many pages can be slow).
pub const VISIBILITY: Duration = Duration::from_secs(300);

/// How often the subscription manager runs.
pub const SUBSCRIPTIONS_EVERY: Duration = Duration::from_secs(6 * 3600);

/// What happened to one queue message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkResult {
    /// Processed and deleted.
    Done(String),
    /// Unprocessable: moved to the poison queue.
    Poisoned(String),
    /// Failed in a way a retry may fix: left on the queue, it reappears after the visibility timeout.
    Retry(String),
}

/// Processes one received message of the `alerts` queue and settles it on the queue.
pub async fn work_one(app: &App, msg: &Received) -> WorkResult {
    work(app, Function::Respond, msg).await
}

/// Processes one received message of `function`'s queue with `function` and settles it on the queue.
pub async fn work(app: &App, function: Function, msg: &Received) -> WorkResult {
    let queue = function.queue().expect("a queue function");
    match function.on_message(app, &msg.body, app.clock.now()).await {
        Outcome::Done { logs, .. } => match app.queue.delete(queue, msg).await {
            Ok(()) => WorkResult::Done(logs.join("; ")),
            // Processed, but the delete failed: it will be redelivered, and the claims make that harmless.
            Err(e) => WorkResult::Retry(format!("processed but not deleted: {e}")),
        },
        Outcome::Poison(reason) => match app.queue.poison(queue, msg).await {
            Ok(()) => {
                tracing::error!(message_id = %msg.id, "moved to the poison queue: {reason}");
                WorkResult::Poisoned(reason)
            }
            Err(e) => WorkResult::Retry(format!("could not poison ({reason}): {e}")),
        },
        Outcome::Retry(reason) => {
            tracing::warn!(message_id = %msg.id, dequeue_count = msg.dequeue_count, "will retry: {reason}");
            WorkResult::Retry(reason)
        }
    }
}

/// Processes messages until both queues have none visible (or `max_messages` were handled); returns
/// each result. Used by `secmon demo` and tests; the daemon uses [`worker`].
pub async fn drain(app: &App, max_messages: usize) -> Vec<WorkResult> {
    let mut results = Vec::new();
    while results.len() < max_messages {
        let mut worked = false;
        for function in QUEUE_FUNCTIONS {
            let queue = function.queue().expect("a queue function");
            let batch = match app.queue.receive(queue, 16, VISIBILITY).await {
                Ok(b) => b,
                Err(e) => {
                    results.push(WorkResult::Retry(format!("receive from {queue}: {e}")));
                    return results;
                }
            };
            for msg in &batch {
                results.push(work(app, function, msg).await);
                worked = true;
            }
        }
        if !worked {
            break;
        }
    }
    results
}

/// Received messages waiting for a worker, by tenant: the next one started is the oldest of the tenant
/// with the fewest messages in work (ties: the tenant that waited longest for a turn).
#[derive(Debug)]
pub struct Pending<T> {
    /// Per tenant, in the order the tenants last had a turn (longest waiting first).
    queues: Vec<(String, std::collections::VecDeque<T>)>,
    /// Messages in work, by tenant.
    in_work: std::collections::HashMap<String, usize>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self { queues: Vec::new(), in_work: Default::default() }
    }
}

impl<T> Pending<T> {
    /// Adds a received item of `tenant`.
    pub fn push(&mut self, tenant: &str, item: T) {
        match self.queues.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, q)) => q.push_back(item),
            None => self.queues.push((tenant.to_string(), std::collections::VecDeque::from([item]))),
        }
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.queues.iter().map(|(_, q)| q.len()).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next item to start, fairly between tenants, and counts it in work.
    pub fn start(&mut self) -> Option<(String, T)> {
        let in_work = &self.in_work;
        let i = self
            .queues
            .iter()
            .enumerate()
            .filter(|(_, (_, q))| !q.is_empty())
            .min_by_key(|(i, (t, _))| (in_work.get(t).copied().unwrap_or(0), *i))
            .map(|(i, _)| i)?;
        let (tenant, mut q) = self.queues.remove(i);
        let item = q.pop_front().expect("not empty");
        // This tenant had its turn: it goes to the back of the line.
        self.queues.push((tenant.clone(), q));
        self.queues.retain(|(_, q)| !q.is_empty());
        *self.in_work.entry(tenant.clone()).or_insert(0) += 1;
        Some((tenant, item))
    }

    /// Counts a started item of `tenant` as finished.
    pub fn finish(&mut self, tenant: &str) {
        if let Some(n) = self.in_work.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_work.remove(tenant);
            }
        }
    }
}

/// The tenant a queue message is about (both queues' messages name it), for fairness only.
fn tenant_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(default)]
        tenant: String,
    }
    serde_json::from_slice::<Named>(body).map(|n| n.tenant).unwrap_or_default()
}

/// How long the [`worker`] waits for a message when both queues had none and nothing woke it.
pub const IDLE: Duration = Duration::from_millis(500);

/// The queue of the daemon's [`App`]: every send in this process also wakes the [`worker`], so a
/// message sent while it waits (for [`IDLE`]) is started at once. Before, a doorbell's poll request
/// waited up to half a second to be picked up, and the alerts that poll queued up to half a second
/// more. A wake with nothing new to receive costs one empty receive.
pub struct Waking {
    inner: Arc<dyn Queue>,
    wake: Arc<Notify>,
}

impl Waking {
    /// `app` with its queue wrapped, and what the worker waits on.
    pub fn wrap(app: &App) -> (App, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        let queue = Waking { inner: app.queue.clone(), wake: wake.clone() };
        (app.with_queue(Arc::new(queue)), wake)
    }
}

#[async_trait]
impl Queue for Waking {
    async fn send(&self, queue: &str, body: &[u8]) -> StoreResult<()> {
        let sent = self.inner.send(queue, body).await;
        self.wake.notify_one();
        sent
    }

    async fn send_after(&self, queue: &str, body: &[u8], delay: Duration) -> StoreResult<()> {
        // Not visible yet: the worker finds it on a later look.
        self.inner.send_after(queue, body, delay).await
    }

    async fn send_many(&self, queue: &str, bodies: &[Vec<u8>]) -> Result<(), Partial> {
        let sent = self.inner.send_many(queue, bodies).await;
        self.wake.notify_one();
        sent
    }

    async fn receive(&self, queue: &str, max: usize, visibility: Duration) -> StoreResult<Vec<Received>> {
        self.inner.receive(queue, max, visibility).await
    }

    async fn delete(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        self.inner.delete(queue, msg).await
    }

    async fn poison(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        self.inner.poison(queue, msg).await
    }

    async fn len(&self, queue: &str) -> StoreResult<usize> {
        self.inner.len(queue).await
    }

    fn max_dequeue(&self) -> u32 {
        self.inner.max_dequeue()
    }

    fn max_body(&self) -> usize {
        self.inner.max_body()
    }

    fn admin(&self) -> Option<&dyn QueueAdmin> {
        self.inner.admin()
    }
}

/// The queue worker: a pool of `worker.concurrency` tasks over both queues, fair between tenants
/// ([`Pending`]), until `shutdown` turns true; then it finishes the messages in hand. Messages received
/// but not started stay hidden until their visibility timeout, then come back. It looks for messages
/// when a slot frees, when `wake` is notified (see [`Waking`]), and every [`IDLE`] while there are none.
pub async fn worker(app: App, wake: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let concurrency = app.config.worker.concurrency.max(1);
    let mut pending: Pending<(Function, Received)> = Pending::default();
    let mut running = tokio::task::JoinSet::new();
    while !*shutdown.borrow() {
        // Keep at most one message waiting per slot, so nothing waits long enough to reappear; and
        // receive only once half of that is used up, so a receive (one write to the store) takes several
        // messages rather than one each time a message finishes.
        let room = if pending.len() <= concurrency / 2 {
            (2 * concurrency).saturating_sub(pending.len() + running.len())
        } else {
            0
        };
        let (batch, failed) = fill(&app, room).await;
        let received = batch.len();
        for (function, msg) in batch {
            pending.push(&tenant_of(&msg.body), (function, msg));
        }
        while running.len() < concurrency {
            let Some((tenant, (function, msg))) = pending.start() else { break };
            let app = app.clone();
            // Boxed: the task then holds a pointer, not the pipeline's whole state machine (14 KB in a
            // debug build), which Tokio copied into the task, and again when the task finished.
            running.spawn(Box::pin(async move {
                work(&app, function, &msg).await;
                tenant
            }));
        }
        let wait = if failed {
            Duration::from_secs(5)
        } else if received == 0 && pending.is_empty() {
            IDLE
        } else {
            Duration::from_millis(50)
        };
        tokio::select! {
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(tenant) = done {
                    pending.finish(&tenant);
                }
            }
            _ = tokio::time::sleep(wait) => {}
            // With every slot busy a new message waits for one anyway: a slot freeing looks again.
            _ = wake.notified(), if !failed && running.len() < concurrency => {}
            _ = shutdown.changed() => {}
        }
        while let Some(done) = running.try_join_next() {
            if let Ok(tenant) = done {
                pending.finish(&tenant);
            }
        }
    }
    // Finish what is in hand.
    while running.join_next().await.is_some() {}
}

/// Receives up to `room` messages for the [`worker`]'s free slots, in [`FILL_ORDER`] (deliveries first),
/// at most 16 per receive; also says whether a receive failed (logged here), so the worker backs off.
pub async fn fill(app: &App, room: usize) -> (Vec<(Function, Received)>, bool) {
    let mut out = Vec::new();
    let mut failed = false;
    for function in FILL_ORDER {
        if room <= out.len() {
            break;
        }
        let queue = function.queue().expect("a queue function");
        match app.queue.receive(queue, (room - out.len()).min(16), VISIBILITY).await {
            Ok(batch) => out.extend(batch.into_iter().map(|msg| (function, msg))),
            Err(e) => {
                tracing::error!("queue receive from {queue} failed: {e}");
                failed = true;
            }
        }
    }
    (out, failed)
}

/// The next time `schedule` fires after `now`.
pub fn next_fire(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&now).next()
}

/// Runs a timer function on its schedule until shutdown.
async fn scheduler(
    app: App,
    function: functions::Function,
    schedule: cron::Schedule,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = app.clock.now();
        let Some(next) = next_fire(&schedule, now) else { return };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let now = app.clock.now();
        let timer = Timer { past_due: (now - next).num_seconds() > 60 };
        let outcome = match function {
            functions::Function::ReconcileAlerts => functions::reconcile_alerts(&app, timer, now).await,
            functions::Function::Sweep => functions::sweep(&app, timer, now).await,
            _ => functions::poll_alerts(&app, timer, now).await,
        };
        if let Outcome::Retry(e) = outcome {
            tracing::error!("{} failed: {e}", function.name());
        }
    }
}

/// Polls every tenant once at start (a shutdown meanwhile abandons it; the watermark makes that safe).
async fn first_poll(app: App, mut shutdown: watch::Receiver<bool>) {
    tokio::select! {
        outcome = functions::poll_alerts(&app, Timer::default(), app.clock.now()) => {
            if let Outcome::Retry(e) = outcome {
                tracing::error!("the first poll failed: {e}");
            }
        }
        _ = shutdown.changed() => {}
    }
}

/// Runs the `graph-subscriptions` function at start and then every [`SUBSCRIPTIONS_EVERY`].
async fn subscriptions_scheduler(app: App, mut shutdown: watch::Receiver<bool>) {
    if app.config.subscriptions.is_empty() {
        return;
    }
    loop {
        if let Outcome::Retry(e) = functions::graph_subscriptions(&app, Timer::default(), app.clock.now()).await {
            tracing::error!("graph-subscriptions failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(SUBSCRIPTIONS_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs the daemon until `shutdown` resolves: scheduler, HTTP server on `listen` (if any), worker.
pub async fn run(app: App, listen: Option<SocketAddr>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Everything below sends through this queue, so the worker hears of each message at once.
    let (app, wake) = Waking::wrap(&app);
    // Deliveries are tried by the worker that decides them; only what does not finish is a job.
    let app = app.with_first_try(app.config.worker.first_try);
    let schedule =
        crate::config::ncrontab::parse(&app.config.poll.schedule).map_err(|e| anyhow::anyhow!("poll.schedule: {e}"))?;
    let reconcile = &app.config.poll.reconcile.schedule;
    let reconcile =
        crate::config::ncrontab::parse(reconcile).map_err(|e| anyhow::anyhow!("poll.reconcile.schedule: {e}"))?;
    let sweep = &app.config.retention.schedule;
    let sweep = crate::config::ncrontab::parse(sweep).map_err(|e| anyhow::anyhow!("retention.schedule: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut bound = None;
    let server = match listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            bound = Some(listener.local_addr()?);
            let mut rx = stop_rx.clone();
            let router = router(&app);
            let limits = app.config.webhook.server.clone();
            let max_body = app.config.webhook.max_body_bytes;
            Some(tokio::spawn(async move {
                let graceful = async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                };
                serve(listener, router, Limits { server: limits, max_body }, graceful).await
            }))
        }
        None => None,
    };
    // Say what this process is about to do, then poll every tenant at once rather than at the first tick.
    let store = super::startup::store_label(&app);
    for line in super::startup::summary(&app, &store, app.clock.now()) {
        tracing::info!("{line}");
    }
    tracing::info!("{}", super::startup::listening(bound));
    tracing::info!("polling every tenant now, without waiting for the schedule");
    let first_poll = tokio::spawn(first_poll(app.clone(), stop_rx.clone()));
    let poller = tokio::spawn(scheduler(app.clone(), functions::Function::PollAlerts, schedule, stop_rx.clone()));
    let reconciler =
        tokio::spawn(scheduler(app.clone(), functions::Function::ReconcileAlerts, reconcile, stop_rx.clone()));
    let subscriptions = tokio::spawn(subscriptions_scheduler(app.clone(), stop_rx.clone()));
    // Retention: the `sweep` timer on `retention.schedule`.
    let sweeper = tokio::spawn(scheduler(app.clone(), functions::Function::Sweep, sweep, stop_rx.clone()));
    let worker = tokio::spawn(worker(app.clone(), wake, stop_rx));

    shutdown.await;
    tracing::info!("shutting down: finishing the messages in hand");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(first_poll, poller, reconciler, subscriptions, sweeper, worker);
    if let Some(server) = server {
        server.await??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// What the standalone server serves: the functions' routes and, when `webhook.server.metrics` is
/// enabled, the Prometheus page `/metrics`.
pub fn router(app: &App) -> axum::Router {
    let router = functions::router(app.clone());
    if !app.config.webhook.server.metrics.enabled {
        return router;
    }
    let app = app.clone();
    router.route("/metrics", axum::routing::get(move || metrics_page(app.clone())))
}

/// The process's metrics, with the depth of the alerts queue and its poison queue looked at now.
async fn metrics_page(app: App) -> axum::response::Response {
    use axum::response::IntoResponse;
    for queue in
        [ALERTS_QUEUE, DELIVERIES_QUEUE].into_iter().flat_map(|q| [q.to_string(), crate::store::poison_name(q)])
    {
        match app.queue.len(&queue).await {
            Ok(depth) => crate::metrics::set_queue(&queue, depth, None),
            Err(e) => tracing::warn!("metrics: the depth of {queue} is unknown ({e})"),
        }
    }
    // Per tenant and per receiver, from the messages themselves (the store's own queue only).
    if let Some(admin) = app.queue.admin() {
        for queue in [ALERTS_QUEUE, DELIVERIES_QUEUE] {
            match crate::store::admin::gauges(admin, queue, app.clock.now()).await {
                Ok(g) => {
                    let receivers = (queue == DELIVERIES_QUEUE).then(|| {
                        let mut all = g.receivers.clone();
                        for name in app.config.receivers.keys() {
                            all.entry(name.clone()).or_default();
                        }
                        all
                    });
                    crate::metrics::set_queue_shares(queue, &g.tenants, receivers.as_ref());
                }
                Err(e) => tracing::warn!("metrics: the messages of {queue} are unknown ({e})"),
            }
        }
    }
    let content_type = (axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    ([content_type], crate::metrics::global().render()).into_response()
}

/// What [`serve`] enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Timeouts and the connection cap (`webhook.server`).
    pub server: crate::config::intake::ServerLimits,
    /// The largest body read (`webhook.max_body_bytes`; the function answers 413 with a reason, this
    /// is the backstop one byte above).
    pub max_body: usize,
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Requests in flight.
    busy: std::sync::atomic::AtomicUsize,
    /// When the last request ended (or the connection opened).
    idle_since: std::sync::Mutex<tokio::time::Instant>,
    /// Told to close.
    close: tokio::sync::Notify,
}

impl Conn {
    fn idle_for(&self) -> Option<Duration> {
        use std::sync::atomic::Ordering;
        (self.busy.load(Ordering::SeqCst) == 0).then(|| self.idle_since.lock().expect("conn lock").elapsed())
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, with the [`Limits`] (see the module docs).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    let conns: Arc<Mutex<BTreeMap<u64, Arc<Conn>>>> = Arc::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    let mut next_id = 0u64;
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait, never spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        {
            let mut open = conns.lock().expect("conns lock");
            if open.len() >= limits.server.max_connections {
                let victim =
                    open.iter().filter_map(|(id, c)| c.idle_for().map(|idle| (idle, *id))).max().map(|(_, id)| id);
                match victim.and_then(|id| open.remove(&id)) {
                    Some(c) => c.close.notify_one(),
                    None => {
                        tracing::warn!(
                            cap = limits.server.max_connections,
                            "connection cap reached, none idle; refused one"
                        );
                        continue;
                    }
                }
            }
            next_id += 1;
            let conn = Arc::new(Conn {
                busy: Default::default(),
                idle_since: Mutex::new(tokio::time::Instant::now()),
                close: tokio::sync::Notify::new(),
            });
            open.insert(next_id, conn.clone());
            let (conns, router, limits, stop) = (conns.clone(), router.clone(), limits.clone(), stop_rx.clone());
            let id = next_id;
            tasks.spawn(async move {
                serve_connection(stream, router, &limits, &conn, stop).await;
                conns.lock().expect("conns lock").remove(&id);
            });
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: axum::Router,
    limits: &Limits,
    conn: &std::sync::Arc<Conn>,
    mut stop: watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    let body_timeout = limits.server.body_timeout;
    let max_body = limits.max_body.saturating_add(1);
    let state = conn.clone();
    let service = tower::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        let (router, state) = (router.clone(), state.clone());
        async move {
            state.busy.fetch_add(1, Ordering::SeqCst);
            let resp = answer(router, req, body_timeout, max_body).await;
            *state.idle_since.lock().expect("conn lock") = tokio::time::Instant::now();
            state.busy.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.server.header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(service));
    tokio::pin!(connection);
    let idle_timeout = limits.server.idle_timeout;
    let idle = async {
        loop {
            tokio::time::sleep(idle_timeout / 4).await;
            if conn.idle_for().is_some_and(|d| d >= idle_timeout) {
                return;
            }
        }
    };
    tokio::select! {
        _ = connection.as_mut() => return,
        () = conn.close.notified() => {}
        () = idle => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
}

/// Reads the body within `body_timeout` (408 after), then hands the request to the router.
async fn answer(
    router: axum::Router,
    req: axum::http::Request<hyper::body::Incoming>,
    body_timeout: Duration,
    max_body: usize,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, max_body);
    let bytes = match tokio::time::timeout(body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "the body is too large").into_response();
        }
        Ok(Err(_)) => return (axum::http::StatusCode::BAD_REQUEST, "the body could not be read").into_response(),
        Err(_) => {
            return (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {body_timeout:?}"),
            )
                .into_response();
        }
    };
    let req = axum::http::Request::from_parts(parts, axum::body::Body::from(bytes));
    match router.oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called, not when
/// the future is first polled, so a signal that comes in between waits for the future instead of
/// killing the process half-started; call it early, in a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            let wait = |stream: std::io::Result<tokio::signal::unix::Signal>| async move {
                match stream {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => {}
                () = wait(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_burst_never_takes_every_slot_while_another_tenant_waits() {
        let mut p = Pending::default();
        for i in 0..10 {
            p.push("contoso", format!("contoso-{i}"));
        }
        p.push("fabrikam", "fabrikam-0".to_string());
        p.push("fabrikam", "fabrikam-1".to_string());
        // Two slots: one each, although contoso's ten came first.
        let first: Vec<String> = (0..2).map(|_| p.start().unwrap().0).collect();
        assert_eq!(first, ["contoso", "fabrikam"]);
        // contoso's finishes first: the freed slot goes to whichever tenant has fewer in work — now
        // contoso (0) against fabrikam (1).
        p.finish("contoso");
        assert_eq!(p.start().unwrap(), ("contoso".to_string(), "contoso-1".to_string()));
        // Equal in work: the tenant that waited longest for a turn goes first.
        p.finish("fabrikam");
        p.finish("contoso");
        assert_eq!(p.start().unwrap(), ("fabrikam".to_string(), "fabrikam-1".to_string()));
        assert_eq!(p.start().unwrap().0, "contoso");
        // fabrikam is done: contoso takes every slot, in order.
        let rest: Vec<String> = std::iter::from_fn(|| p.start().map(|(_, m)| m)).collect();
        assert_eq!(rest, (3..10).map(|i| format!("contoso-{i}")).collect::<Vec<_>>());
        assert!(p.is_empty());
    }

    /// A worker over an in-memory store, its queue wrapped in [`Waking`]; returns the app whose queue
    /// wakes it, the unwrapped queue (a sender in another process, as it were) and the stop switch.
    fn waking_worker() -> (App, Arc<dyn Queue>, watch::Sender<bool>) {
        let yaml = "tenants:\n  - { id: 11111111-2222-3333-4444-555555555555, name: contoso, \
                    credential: { client_id: 00000000-0000-0000-0000-000000000001, client_secret: s } }\n";
        let now = chrono::Utc::now();
        let loaded = crate::setup::load_str(yaml, std::path::Path::new("t.yaml"), &|_| None, now).unwrap();
        let store = Arc::new(crate::store::sqlite::SqliteStore::in_memory().unwrap());
        let app = App::builder(loaded.config)
            .backend(store)
            .graph(Arc::new(crate::graph::fake::FakeGraph::new()))
            .build()
            .unwrap();
        let elsewhere = app.queue.clone();
        let (app, wake) = Waking::wrap(&app);
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(worker(app.clone(), wake, stop_rx));
        (app, elsewhere, stop)
    }

    /// How long (on the paused clock) until the message just sent was worked: an unreadable body,
    /// moved to the poison queue.
    async fn until_poisoned(app: &App, poisoned: usize) -> Duration {
        let sent = tokio::time::Instant::now();
        let poison = crate::store::poison_name(ALERTS_QUEUE);
        while app.queue.len(&poison).await.unwrap() < poisoned {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sent.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_sent_in_this_process_is_started_at_once_and_one_from_elsewhere_at_the_next_look() {
        let (app, elsewhere, _stop) = waking_worker();
        // Between two of the idle worker's looks (every 500 ms from its start).
        tokio::time::sleep(IDLE * 4 + IDLE / 2).await;
        app.queue.send(ALERTS_QUEUE, b"not a message").await.unwrap();
        let woken = until_poisoned(&app, 1).await;
        assert!(woken < Duration::from_millis(50), "started {woken:?} after it was sent");
        // Sent by another process on the store: nothing wakes the worker, its next look finds it.
        tokio::time::sleep(IDLE * 4 + IDLE / 2).await;
        elsewhere.send(ALERTS_QUEUE, b"not a message either").await.unwrap();
        let looked = until_poisoned(&app, 2).await;
        assert!(looked >= IDLE / 4 && looked <= IDLE, "started {looked:?} after it was sent");
    }

    #[test]
    fn the_default_schedule_fires_every_five_minutes() {
        let s = crate::config::ncrontab::parse("0 */5 * * * *").unwrap();
        let now: DateTime<Utc> = "2026-11-26T10:02:30Z".parse().unwrap();
        assert_eq!(next_fire(&s, now).unwrap(), "2026-11-26T10:05:00Z".parse::<DateTime<Utc>>().unwrap());
    }
}
