//! The host-neutral function layer: every secmon function as a plain async fn of
//! `(app, payload, now)`, and the one HTTP router every host serves.
//!
//! A host (the layer above) only translates its envelope: the Functions host's `Data`/`Metadata`
//! invocation, a Lambda event, the standalone scheduler and worker. It calls the function named here and
//! turns its [`Outcome`] back into what the host expects (an invocation answer, an SQS batch response,
//! a queue delete). No stage sees a host's types.
//!
//! | function | trigger | what |
//! |---|---|---|
//! | `poll-alerts` | timer | [`poll_alerts`]: poll every tenant |
//! | `reconcile-alerts` | timer | [`reconcile_alerts`]: re-list a longer window, queue what the polls missed |
//! | `graph-subscriptions` | timer | [`graph_subscriptions`]: create, renew, reauthorize subscriptions |
//! | `sweep` | timer | [`sweep`]: remove what outlived its lifetime (`retention`), a bounded batch per run |
//! | `respond` | queue `alerts` | [`respond`]: one queue message (an alert version, a poll, a lookup) |
//! | `deliver` | queue `deliveries` | [`deliver`]: one delivery job (tell one receiver, or apply one route's `set:`) |
//! | `graph-webhook`, `graph-lifecycle`, `doorbell`, `health` | HTTP | [`router`]: `/api/{function}`; `health` only says up/starting/down |
//! | `health-details` | HTTP | [`health_details`]: each tenant's state and last error, behind the function key or `health.token` |
//! | `doctor` | HTTP | [`doctor`]: `secmon doctor`'s checks, behind the function key and `doctor.token` |
//! | `bot-messages` | HTTP | [`crate::triage::bot_messages`]: the Teams bot's messaging endpoint (card clicks), behind the Bot Connector's token |
//! | `triage-page` | HTTP | [`triage_page`]: `/api/triage/{token}`, the triage page of a signed link (docs/triage.md) |

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::app::App;
use crate::intake::http::{HttpRequest, HttpResponse};
use crate::intake::{Message, MessageError};
use crate::respond::RespondError;

pub mod http;

pub use self::http::{router, router_with};

/// How a function is triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A schedule (NCRONTAB in Azure, EventBridge on AWS, the built-in scheduler standalone).
    Timer,
    /// A queue: `alerts` or `deliveries` ([`Function::queue`]).
    Queue,
    /// An HTTP request to `/api/<name>`.
    Http,
}

/// Every secmon function; the names are the same for every host (the Azure function folders, the
/// Lambda handlers, the standalone routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// `poll-alerts`: the polling timer.
    PollAlerts,
    /// `reconcile-alerts`: the reconciliation timer.
    ReconcileAlerts,
    /// `graph-subscriptions`: the subscription-keeping timer.
    GraphSubscriptions,
    /// `sweep`: the retention timer.
    Sweep,
    /// `respond`: one message of the `alerts` queue.
    Respond,
    /// `deliver`: one job of the `deliveries` queue.
    Deliver,
    /// `graph-webhook`: Graph change notifications (doorbells) and the validation handshake.
    GraphWebhook,
    /// `graph-lifecycle`: Graph lifecycle notifications.
    GraphLifecycle,
    /// `doorbell`: the signed "poll now".
    Doorbell,
    /// `health`: up, starting or down, for anyone (no tenant names, no errors).
    Health,
    /// `health-details`: each tenant's state and last (redacted) error, behind the function key or `health.token`.
    HealthDetails,
    /// `doctor`: the checks of `secmon doctor`, from inside the deployment (its managed identity).
    Doctor,
    /// `bot-messages`: the Teams bot's messaging endpoint (edge): a card click, checked and queued.
    BotMessages,
    /// `triage-page`: the triage page of a signed link, at `/api/triage/{token}` (edge app).
    TriagePage,
}

impl Function {
    /// Every function, timers first, then the queue, then HTTP.
    pub const ALL: [Function; 14] = [
        Function::PollAlerts,
        Function::ReconcileAlerts,
        Function::GraphSubscriptions,
        Function::Sweep,
        Function::Respond,
        Function::Deliver,
        Function::GraphWebhook,
        Function::GraphLifecycle,
        Function::Doorbell,
        Function::Health,
        Function::HealthDetails,
        Function::Doctor,
        Function::BotMessages,
        Function::TriagePage,
    ];

    /// The function's name (`poll-alerts`, `respond`, …).
    pub fn name(self) -> &'static str {
        match self {
            Function::PollAlerts => "poll-alerts",
            Function::ReconcileAlerts => "reconcile-alerts",
            Function::GraphSubscriptions => "graph-subscriptions",
            Function::Sweep => "sweep",
            Function::Respond => "respond",
            Function::Deliver => "deliver",
            Function::GraphWebhook => "graph-webhook",
            Function::GraphLifecycle => "graph-lifecycle",
            Function::Doorbell => "doorbell",
            Function::Health => "health",
            Function::HealthDetails => "health-details",
            Function::Doctor => "doctor",
            Function::BotMessages => "bot-messages",
            Function::TriagePage => "triage-page",
        }
    }

    /// The function called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// How it is triggered.
    pub fn trigger(self) -> Trigger {
        match self {
            Function::PollAlerts | Function::ReconcileAlerts | Function::GraphSubscriptions | Function::Sweep => {
                Trigger::Timer
            }
            Function::Respond | Function::Deliver => Trigger::Queue,
            Function::GraphWebhook
            | Function::GraphLifecycle
            | Function::Doorbell
            | Function::Health
            | Function::HealthDetails
            | Function::Doctor
            | Function::BotMessages => Trigger::Http,
            Function::TriagePage => Trigger::Http,
        }
    }

    /// The queue a queue function is triggered by.
    pub fn queue(self) -> Option<&'static str> {
        match self {
            Function::Respond => Some(crate::store::ALERTS_QUEUE),
            Function::Deliver => Some(crate::store::DELIVERIES_QUEUE),
            _ => None,
        }
    }

    /// Runs queue function `self` on one message body: [`respond`] or [`deliver`].
    pub async fn on_message(self, app: &App, body: &[u8], now: DateTime<Utc>) -> Outcome {
        match self {
            Function::Deliver => deliver(app, body, now).await,
            _ => respond(app, body, now).await,
        }
    }

    /// The HTTP functions, in [`Function::ALL`] order.
    pub fn http() -> impl Iterator<Item = Function> {
        Function::ALL.into_iter().filter(|f| f.trigger() == Trigger::Http)
    }
}

/// A timer firing, whatever scheduled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timer {
    /// The run is late (the host was down at its time). A late poll still polls: the watermark makes
    /// it catch up.
    pub past_due: bool,
}

/// What one run of a function came to; each host turns it into its own answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done: the message (if any) may be deleted.
    Done {
        /// Lines for the invocation log.
        logs: Vec<String>,
        /// A machine-readable summary (the Functions host's `ReturnValue`).
        value: Value,
    },
    /// The input can never be processed: the host sets it aside on the poison queue and counts the run
    /// as handled, so it is neither retried nor dropped.
    Poison(String),
    /// Failed in a way a retry may fix: the host leaves the message (or the run) to be retried.
    Retry(String),
}

impl Outcome {
    /// Done with one log line and no summary value.
    pub fn done(line: impl Into<String>) -> Self {
        Outcome::Done { logs: vec![line.into()], value: Value::Null }
    }

    /// One line saying what happened, for logs and the standalone worker.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Done { logs, .. } => logs.join("; "),
            Outcome::Poison(reason) => format!("poisoned: {reason}"),
            Outcome::Retry(reason) => format!("retry: {reason}"),
        }
    }
}

/// The timer function `poll-alerts`: polls every tenant. It fails (so the host's monitoring sees
/// it) only when every tenant failed.
pub async fn poll_alerts(app: &App, timer: Timer, now: DateTime<Utc>) -> Outcome {
    let mut logs = Vec::new();
    if timer.past_due {
        logs.push("timer is past due; polling now".to_string());
    }
    let outcomes = crate::intake::poll::poll_all(app, now).await;
    for o in &outcomes {
        logs.push(match (&o.report, &o.error) {
            (None, None) if o.coalesced.is_some() => {
                format!("{}: coalesced ({})", o.tenant, o.coalesced.as_deref().unwrap_or_default())
            }
            (Some(r), _) => format!(
                "{}: {} pages, {} alerts, {} queued, watermark {} -> {}",
                o.tenant,
                r.pages,
                r.alerts_seen,
                r.queued,
                r.watermark_before.as_deref().unwrap_or("none"),
                r.watermark_after.as_deref().unwrap_or("none")
            ),
            (None, Some(e)) => format!("{}: failed: {e}", o.tenant),
            (None, None) => format!("{}: no result", o.tenant),
        });
        if let Some(id) = &o.stale_alarm {
            logs.push(format!("{}: no successful poll for too long; raised {id}", o.tenant));
        }
    }
    // Alerts that waited for a receiver's posting budget go out now if it has room again.
    logs.extend(crate::notify::deliver::flush(app).await);
    // Silences that ended tell what they muted; scheduled digests that are due go out.
    logs.extend(crate::notify::silence::tick(app, now).await);
    if !outcomes.is_empty() && outcomes.iter().all(|o| o.error.is_some()) {
        return Outcome::Retry(logs.join("; "));
    }
    Outcome::Done { logs, value: serde_json::to_value(&outcomes).expect("outcomes serialize") }
}

/// The timer function `reconcile-alerts`: re-lists `poll.reconcile.window` for every tenant and queues
/// the versions the polls missed. Fails only when every tenant failed.
pub async fn reconcile_alerts(app: &App, _timer: Timer, now: DateTime<Utc>) -> Outcome {
    let outcomes = crate::intake::poll::reconcile_all(app, now).await;
    let logs: Vec<String> = outcomes
        .iter()
        .map(|o| match (&o.report, &o.error) {
            (Some(r), _) => {
                format!(
                    "{}: {} versions listed since {}, {} missing and queued",
                    o.tenant, r.alerts_seen, r.since, r.queued
                )
            }
            (None, Some(e)) => format!("{}: failed: {e}", o.tenant),
            (None, None) => format!("{}: no result", o.tenant),
        })
        .collect();
    if !outcomes.is_empty() && outcomes.iter().all(|o| o.error.is_some()) {
        return Outcome::Retry(logs.join("; "));
    }
    Outcome::Done { logs, value: serde_json::to_value(&outcomes).expect("outcomes serialize") }
}

/// The timer function `graph-subscriptions`. It is marked failed when any subscription could not be
/// kept, so it shows in the host's monitor; everything that could be done was done.
pub async fn graph_subscriptions(app: &App, _timer: Timer, now: DateTime<Utc>) -> Outcome {
    let report = crate::intake::subscriptions::sync(app, now).await;
    let mut logs = vec![format!("subscriptions: {}", report.summary())];
    for a in report.actions.iter().filter(|a| a.action != "kept") {
        logs.push(format!(
            "{} {} {} {}{}",
            a.action,
            a.tenant,
            a.id.as_deref().unwrap_or("-"),
            a.resource,
            a.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
        ));
    }
    tracing::info!("{}", logs.join("; "));
    if report.has_failures() {
        return Outcome::Retry(logs.join("; "));
    }
    Outcome::Done { logs, value: Value::Null }
}

/// The timer function `sweep`: removes what outlived its lifetime ([`crate::retention::sweep`]), at most
/// `retention.batch` keys a run, going on where the last run stopped. A non-empty poison queue is a
/// warning in its log (poison messages are never swept).
pub async fn sweep(app: &App, _timer: Timer, now: DateTime<Utc>) -> Outcome {
    match crate::retention::sweep(app.store.as_ref(), app.queue.as_ref(), &app.config.retention, now).await {
        Ok(r) => {
            let mut logs = vec![format!(
                "sweep: {} keys looked at, {} expired removed, {} audit days removed",
                r.examined, r.removed, r.audit_days_removed
            )];
            if let Some(why) = &r.audit_refused {
                logs.push(format!("audit kept: {why}"));
            }
            if r.poison > 0 {
                tracing::warn!(poison = r.poison, "the poison queue holds messages; they are kept until handled");
                logs.push(format!("{} messages on the poison queue (kept until handled)", r.poison));
            }
            tracing::info!("{}", logs.join("; "));
            Outcome::Done { logs, value: serde_json::to_value(&r).expect("reports serialize") }
        }
        Err(e) => Outcome::Retry(format!("sweep: {e}")),
    }
}

/// The queue function `respond`: one message of the `alerts` queue. An alert version goes through
/// [`crate::respond`]; a poll request polls the tenant; a lookup fetches one alert first.
pub async fn respond(app: &App, body: &[u8], now: DateTime<Utc>) -> Outcome {
    let message = match Message::parse(body) {
        Ok(m) => m.resolve(app.store.as_ref()).await,
        Err(e) => Err(e),
    };
    let message = match message {
        Ok(m) => m,
        Err(e) => return outcome_of(RespondError::from(e)),
    };
    let tenant = message.tenant().to_string();
    match dispatch(app, message, now).await {
        Ok(line) => Outcome::done(line),
        Err(e) => {
            crate::metrics::count(crate::metrics::Counter::AlertsFailed, &tenant, 1);
            outcome_of(e)
        }
    }
}

/// The queue function `deliver`: one job of the `deliveries` queue ([`crate::notify::deliver::Job`]).
/// A job that has to wait (its receiver is paused, its alert leads an incident group whose window is
/// open, another worker holds it) is put back on the queue with a delay and this message is done, so
/// waiting never counts as a try and never holds a worker. A job that can never be done is poisoned with
/// the reason; a failure a retry may fix leaves it to the queue's back-off.
pub async fn deliver(app: &App, body: &[u8], now: DateTime<Utc>) -> Outcome {
    use crate::notify::deliver::{Job, run};
    let job = match Job::parse(body) {
        Ok(job) => job,
        Err(e) => return Outcome::Poison(e.to_string()),
    };
    if let Some(at) = job.not_before.filter(|at| *at > now) {
        // Early (a backend caps delays): back on the queue until its time.
        let line = format!("{} not due before {at}", job.target());
        return again(app, job, at, now, line).await;
    }
    let tenant = job.tenant.clone();
    let ready = match job.ready(&app.config, app.store.as_ref()).await {
        Ok(ready) => ready,
        Err(Ok(e)) => return Outcome::Retry(format!("store: {e}")),
        Err(Err(bad)) => return Outcome::Poison(bad.to_string()),
    };
    match run(app, &ready).await {
        Ok(ran) => {
            // One line per delivery outcome, naming what a person looks for: "notified soc-teams".
            let alert = &ready.alert;
            tracing::info!(tenant, alert = %alert.id, version = alert.version(), "{}", ran.summary);
            deliver_ran(app, ready, ran, now).await
        }
        Err(e) => {
            crate::metrics::count(crate::metrics::Counter::AlertsFailed, &tenant, 1);
            tracing::warn!(tenant, alert = %ready.alert.id, version = ready.alert.version(), "{}", e.message);
            match e.retry {
                crate::graph::Retry::Retryable => Outcome::Retry(e.message),
                crate::graph::Retry::Permanent => Outcome::Poison(e.message),
            }
        }
    }
}

/// What a delivery job that ran becomes: done, or back on the queue for its time.
async fn deliver_ran(
    app: &App,
    ready: crate::notify::deliver::Ready,
    ran: crate::notify::deliver::Ran,
    now: DateTime<Utc>,
) -> Outcome {
    match ran.again_at {
        Some(at) => {
            let mut job = ready.into_job();
            if matches!(job.task, crate::notify::deliver::Task::Update { .. }) {
                job.waited += 1;
            }
            again(app, job, at, now, ran.summary).await
        }
        None => Outcome::done(ran.summary),
    }
}

/// Puts `job` back on the `deliveries` queue to appear at `at`; this message is then done.
async fn again(
    app: &App,
    mut job: crate::notify::deliver::Job,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    line: String,
) -> Outcome {
    job.not_before = Some(at);
    match app.queue.send_after(crate::store::DELIVERIES_QUEUE, &job.body(), job.delay(now)).await {
        Ok(()) => Outcome::done(line),
        Err(e) => Outcome::Retry(format!("{line}; could not put it back on the queue: {e}")),
    }
}

async fn dispatch(app: &App, message: Message, now: DateTime<Utc>) -> Result<String, RespondError> {
    match message {
        Message::Poll { tenant, reason } => {
            use crate::intake::coalesce;
            coalesce::begin(app, &tenant, now).await.map_err(|e| RespondError::Retry(format!("poll slot: {e}")))?;
            let result = crate::intake::poll::poll_tenant(app, &tenant, now).await;
            coalesce::finish(app, &tenant, now, result.as_ref().ok())
                .await
                .map_err(|e| RespondError::Retry(e.to_string()))?;
            let report = result.map_err(|e| RespondError::Retry(e.to_string()))?;
            let more = if report.more { "; more to do, follow-up queued" } else { "" };
            Ok(format!("polled {tenant} ({reason}): {} new alert versions{more}", report.queued))
        }
        Message::Lookup { tenant, alert_id } => {
            let alert = app.graph.get_alert(&tenant, &alert_id).await.map_err(|e| match e.retry {
                crate::graph::Retry::Retryable => RespondError::Retry(e.to_string()),
                crate::graph::Retry::Permanent => RespondError::Malformed(e.to_string()),
            })?;
            crate::respond::process_alert(app, &tenant, alert).await
        }
        Message::Alert { tenant, alert } => crate::respond::process_alert(app, &tenant, alert).await,
        Message::AlertRef { key, .. } => Err(RespondError::Malformed(format!("unresolved alert reference {key}"))),
        Message::Triage { tenant, click } => crate::triage::on_click(app, &tenant, click, now).await,
    }
}

fn outcome_of(e: RespondError) -> Outcome {
    match e {
        RespondError::Malformed(reason) => Outcome::Poison(reason),
        RespondError::Retry(reason) => Outcome::Retry(reason),
    }
}

impl From<MessageError> for RespondError {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::Malformed(m) => RespondError::Malformed(m),
            MessageError::Store(s) => RespondError::Retry(s.to_string()),
        }
    }
}

/// Who checked a caller before its request reached secmon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gate {
    /// Nobody: the standalone server, Lambda's Function URL (`AuthType: NONE`), the tests.
    #[default]
    Open,
    /// The Functions host, which invokes a function whose `function.json` says `"authLevel": "function"`
    /// (`health-details`, `doctor`) only with a valid function key, and answers 401 itself otherwise.
    FunctionKey,
}

/// One HTTP function: `name` is the function's name (`graph-webhook`, …), with nobody having checked
/// the caller before ([`Gate::Open`]).
pub async fn http(app: &App, name: &str, req: HttpRequest) -> HttpResponse {
    http_behind(app, name, req, Gate::Open).await
}

/// One HTTP function behind `gate` (who checked the caller before).
pub async fn http_behind(app: &App, name: &str, req: HttpRequest, gate: Gate) -> HttpResponse {
    match name {
        "doctor" => doctor(app, req).await,
        "health-details" => health_details(app, req, gate).await,
        "bot-messages" => crate::triage::bot_messages(app, req).await,
        "triage-page" => HttpResponse::text(404, "the triage page is at /api/triage/{token}"),
        _ => crate::intake::webhook::handle(app, name, req).await,
    }
}

/// The HTTP function `triage-page`: `/api/triage/{rest}` ([`crate::triage::page`]). Behind the
/// Functions host ([`Gate::FunctionKey`], i.e. Azure) the person is the one App Service Authentication
/// put in `X-MS-CLIENT-PRINCIPAL` — but only when the app says that authentication is on
/// (`SECMON_TRIAGE_APP_SERVICE_AUTH=on`): only then does the platform strip client-sent copies, so
/// without it the page is off in Azure (anyone could claim to be anyone). Anywhere else those headers are
/// ignored and the page signs people in with OpenID Connect.
pub async fn triage_page(app: &App, rest: &str, req: HttpRequest, gate: Gate) -> HttpResponse {
    use crate::triage::page::SignIn;
    let how = match gate {
        Gate::FunctionKey if app.config.triage.page.as_ref().is_some_and(|p| p.app_service_auth) => SignIn::AppService,
        Gate::FunctionKey => {
            tracing::warn!(
                "a triage page request in Azure, but App Service Authentication is not on for this app \
                 (SECMON_TRIAGE_APP_SERVICE_AUTH is not `on`): refused; deploy with triageAuthClientId"
            );
            return HttpResponse::text(
                503,
                "the triage page needs App Service Authentication, which is not enabled for this app",
            );
        }
        Gate::Open => SignIn::Oidc,
    };
    crate::triage::page::handle(app, rest, &req, how).await
}

/// The HTTP function `health-details`: every tenant's state, last poll and last error (redacted), as
/// `GET /api/health` would tell it if it told strangers anything. Allowed with `Authorization: Bearer
/// <health.token>` when a token is configured (in every host; in Azure the function key as well), and
/// with the function key alone in Azure when none is; otherwise (standalone, AWS, no token) 404.
pub async fn health_details(app: &App, req: HttpRequest, gate: Gate) -> HttpResponse {
    use subtle::ConstantTimeEq;
    let resp =
        |r: HttpResponse| r.with_header("X-Content-Type-Options", "nosniff").with_header("Cache-Control", "no-store");
    match (app.config.health.token.as_deref(), gate) {
        (Some(expected), _) => {
            let given = req.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
            if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
                return resp(HttpResponse::text(401, "Authorization: Bearer <health.token> required"));
            }
        }
        (None, Gate::FunctionKey) => {}
        (None, Gate::Open) => return resp(HttpResponse::text(404, "no such function")),
    }
    if req.method != "GET" && req.method != "HEAD" {
        return resp(HttpResponse::text(405, "use GET").with_header("Allow", "GET"));
    }
    resp(crate::intake::health::details_http(app, app.clock.now()).await)
}

/// The HTTP function `doctor`: `GET` runs the read-only checks of `secmon doctor`, `POST
/// ?send_test=true` also sends one test message to every receiver; `?tenant=` checks one tenant. It
/// needs `Authorization: Bearer <doctor.token>` in every host (in Azure the function key as well), and
/// answers 404 when no token is configured, so it is never open. The answer is
/// `{"checks": [...], "summary": {...}}`, 200 when nothing failed, else 503.
pub async fn doctor(app: &App, req: HttpRequest) -> HttpResponse {
    use subtle::ConstantTimeEq;
    let resp =
        |r: HttpResponse| r.with_header("X-Content-Type-Options", "nosniff").with_header("Cache-Control", "no-store");
    let Some(expected) = app.config.doctor.token.as_deref() else {
        return resp(HttpResponse::text(404, "no such function"));
    };
    let given = req.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return resp(HttpResponse::text(401, "Authorization: Bearer <doctor.token> required"));
    }
    let send_test = match req.method.as_str() {
        "GET" => false,
        "POST" => matches!(req.query_param("send_test"), Some("true" | "1")),
        _ => return resp(HttpResponse::text(405, "GET, or POST ?send_test=true").with_header("Allow", "GET, POST")),
    };
    let options = crate::doctor::Options { tenant: req.query_param("tenant").map(str::to_string), send_test };
    let env: crate::graph::auth::Env = std::sync::Arc::new(|k: &str| std::env::var(k).ok());
    let checks = crate::doctor::run(app, env, &options).await;
    let status = if crate::doctor::failed(&checks) { 503 } else { 200 };
    let body = serde_json::json!({
        "checks": checks.iter().map(crate::doctor::Check::json).collect::<Vec<_>>(),
        "summary": crate::doctor::summary(&checks),
    });
    resp(HttpResponse::json(status, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_triggers_are_right() {
        for f in Function::ALL {
            assert_eq!(Function::from_name(f.name()), Some(f));
        }
        assert_eq!(Function::from_name("functions"), None);
        let http: Vec<&str> = Function::http().map(Function::name).collect();
        assert_eq!(
            http,
            [
                "graph-webhook",
                "graph-lifecycle",
                "doorbell",
                "health",
                "health-details",
                "doctor",
                "bot-messages",
                "triage-page"
            ]
        );
        assert_eq!(Function::Respond.trigger(), Trigger::Queue);
        assert_eq!(Function::Deliver.trigger(), Trigger::Queue);
        assert_eq!(Function::Deliver.queue(), Some("deliveries"));
        assert_eq!(Function::Respond.queue(), Some("alerts"));
        assert_eq!(Function::PollAlerts.trigger(), Trigger::Timer);
    }

    /// [`Gate::FunctionKey`] trusts the Functions host to have checked the key: only true of functions
    /// whose `function.json` says so.
    #[test]
    fn the_functions_that_trust_the_host_key_require_it_in_function_json() {
        for name in ["health-details", "doctor"] {
            let path = format!("{}/functions/{name}/function.json", env!("CARGO_MANIFEST_DIR"));
            let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            assert_eq!(json["bindings"][0]["authLevel"], "function", "{path}");
            assert_eq!(json["bindings"][0]["route"], name, "{path}");
        }
        let path = format!("{}/functions/health/function.json", env!("CARGO_MANIFEST_DIR"));
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["bindings"][0]["authLevel"], "anonymous", "the up/down answer stays open for probes");
        // The Bot Connector cannot send a function key: the JWT it signs is the check.
        let path = format!("{}/functions/bot-messages/function.json", env!("CARGO_MANIFEST_DIR"));
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["bindings"][0]["authLevel"], "anonymous", "{path}");
        assert_eq!(json["bindings"][0]["route"], "bot-messages", "{path}");
    }
}
