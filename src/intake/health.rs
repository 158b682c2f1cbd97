//! Health of the poll, per tenant, and the dead man's switch.
//!
//! Every poll writes `health/{tenant}` (JSON [`Health`]): the last attempt, the last success, the last
//! error; every reconciliation writes when it ran and how many versions it found missing. `secmon status`
//! and `GET /api/health-details` report it per tenant ([`status`], [`details_http`]); the anonymous
//! `GET /api/health` says only `up`, `starting` or `down` ([`http`]), from a briefly cached [`Overall`],
//! so it tells a stranger nothing about the tenants and costs no store read per request.
//!
//! Each tenant is in one [`State`]: **up** (a successful poll within `poll.stale_after`), **starting**
//! (not up, its last recorded poll did not fail, and this process started less than
//! `health.start_grace` ago: never polled yet, or secmon was stopped for a while), or **down**
//! (otherwise: its polls fail, or are overdue). The whole is down if one tenant is, else starting if
//! one is, else up. Starting answers 200, like up: a load balancer keeps sending Graph's notifications
//! to a fresh instance (which can take them), and an uptime probe alarms only once the grace is over.
//! Down answers 503. A tenant whose last successful poll (or, if it never had one, its first attempt) is older than `poll.stale_after` is
//! successful poll (or, if it never had one, its first attempt) is older than `poll.stale_after` is
//! unhealthy, and [`check_stale`] raises it as an alert on the queue: one synthetic alerts_v2-shaped
//! alert per tenant per stale period, with the id `secmon-health-{tenant}-{yyyymmddHH}`. Ids that
//! start with `secmon-` are secmon's own: the respond stage routes them like any alert and must never
//! PATCH or comment on them in Graph.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Message;
use super::poll::{PollError, PollReport, Watermark};
use crate::app::App;
use crate::intake::http::HttpResponse;
use crate::store::{self, Change, StoreError, keys};

/// The health record of one tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
// Records written by older versions may lack newer fields.
#[serde(default)]
pub struct Health {
    /// When a poll was first attempted (the reference for a tenant that never succeeded).
    pub first_attempt: Option<DateTime<Utc>>,
    /// The last poll attempt.
    pub last_attempt: Option<DateTime<Utc>>,
    /// The last successful poll.
    pub last_success: Option<DateTime<Utc>>,
    /// The error of the last poll, if it failed.
    pub last_error: Option<String>,
    /// Failed polls since the last success.
    pub consecutive_failures: u32,
    /// When the dead man's switch last raised an alert for this tenant.
    pub last_alarm: Option<DateTime<Utc>>,
    /// Alert versions queued by the last successful poll.
    pub last_queued: Option<usize>,
    /// The last successful reconciliation.
    pub last_reconciled: Option<DateTime<Utc>>,
    /// Versions the last successful reconciliation found missing (and queued).
    pub reconcile_missing: Option<usize>,
    /// The error of the last reconciliation, if it failed.
    pub reconcile_error: Option<String>,
}

impl Health {
    /// The time staleness is measured from: the last success, else the first attempt.
    pub fn reference(&self) -> Option<DateTime<Utc>> {
        self.last_success.or(self.first_attempt)
    }

    /// Whether the tenant has gone `stale_after` without a successful poll.
    pub fn is_stale(&self, now: DateTime<Utc>, stale_after: chrono::Duration) -> bool {
        self.reference().is_some_and(|r| now - r >= stale_after)
    }
}

fn stale_after(app: &App) -> chrono::Duration {
    chrono::Duration::from_std(app.config.poll.stale_after).unwrap_or(chrono::Duration::minutes(30))
}

/// Reads a tenant's health record (absent: never polled; unreadable: treated as never polled).
pub async fn load(app: &App, tenant: &str) -> Result<Option<Health>, StoreError> {
    Ok(app.store.get(&keys::health(tenant)).await?.map(|v| parse(tenant, &v.value)))
}

fn parse(tenant: &str, bytes: &[u8]) -> Health {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        tracing::warn!(tenant, "health record unreadable ({e}); starting a new one");
        Health::default()
    })
}

/// Read-modify-write of a health record with compare-and-swap.
async fn update(app: &App, tenant: &str, change: impl Fn(&mut Health)) -> Result<Health, StoreError> {
    store::update(app.store.as_ref(), &keys::health(tenant), |current| {
        let mut h = current.map(|bytes| parse(tenant, bytes)).unwrap_or_default();
        change(&mut h);
        Change::Put(serde_json::to_vec(&h).expect("health serializes"), h)
    })
    .await
}

/// Records a poll's outcome. A failure to write health is logged, not returned: the poll's own
/// result matters more, and the next poll writes again.
pub async fn record(app: &App, tenant: &str, now: DateTime<Utc>, result: &Result<PollReport, PollError>) {
    let written = update(app, tenant, |h| {
        h.first_attempt.get_or_insert(now);
        h.last_attempt = Some(now);
        match result {
            Ok(r) => {
                h.last_success = Some(now);
                h.last_error = None;
                h.consecutive_failures = 0;
                h.last_queued = Some(r.queued);
            }
            Err(e) => {
                h.last_error = Some(e.message.clone());
                h.consecutive_failures += 1;
            }
        }
    })
    .await;
    if let Err(e) = written {
        tracing::error!(tenant, "could not record poll health: {e}");
    }
}

/// Records a reconciliation's outcome (logged, not returned, like [`record`]).
pub async fn record_reconcile(app: &App, tenant: &str, now: DateTime<Utc>, result: &Result<PollReport, PollError>) {
    let written = update(app, tenant, |h| match result {
        Ok(r) => {
            h.last_reconciled = Some(now);
            h.reconcile_missing = Some(r.queued);
            h.reconcile_error = None;
        }
        Err(e) => h.reconcile_error = Some(e.message.clone()),
    })
    .await;
    if let Err(e) = written {
        tracing::error!(tenant, "could not record reconciliation health: {e}");
    }
}

/// The dead man's switch alert for a tenant: shaped like an alerts_v2 alert so that routes and
/// receivers treat it like any other.
pub fn stale_alert(tenant: &str, health: &Health, now: DateTime<Utc>, stale_after: chrono::Duration) -> Value {
    let since = health.reference().map(|r| r.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let minutes = stale_after.num_minutes();
    let description = match (&health.last_success, &health.last_error) {
        (Some(s), Some(e)) => format!(
            "secmon has not polled Microsoft Graph alerts for tenant {tenant} successfully since {} (more than {minutes} minutes). Alerts raised in that time have not been seen yet. Last error: {e}",
            s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        (Some(s), None) => format!(
            "secmon has not polled Microsoft Graph alerts for tenant {tenant} since {} (more than {minutes} minutes): the poll is not running. Alerts raised in that time have not been seen yet.",
            s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        (None, e) => format!(
            "secmon has never polled Microsoft Graph alerts for tenant {tenant} successfully (trying for more than {minutes} minutes). Last error: {}",
            e.as_deref().unwrap_or("none recorded")
        ),
    };
    let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "id": format!("secmon-health-{tenant}-{}", now.format("%Y%m%d%H")),
        "title": format!("secmon: no successful alert poll for tenant {tenant}"),
        "description": crate::redact::redact(&description),
        "recommendedActions": "Check secmon's logs and `secmon status`; check the tenant's credential, consent and Graph permissions (SecurityAlert.Read.All).",
        "serviceSource": "secmon",
        "detectionSource": "secmon",
        "productName": "secmon",
        "category": "Health",
        "severity": "high",
        "status": "new",
        "classification": null,
        "determination": null,
        "tenantId": tenant,
        "createdDateTime": stamp,
        "lastUpdateDateTime": stamp,
        "firstActivityDateTime": since,
        "lastActivityDateTime": stamp,
        "evidence": [],
        "comments": [],
    })
}

/// Raises the dead man's switch for `tenant` when its polls have been failing (or not running) for
/// longer than `poll.stale_after`, at most once per stale period. Returns the alert id when raised.
///
/// The alert is queued before the alarm time is recorded: a crash in between repeats the alarm,
/// it never loses it.
pub async fn check_stale(app: &App, tenant: &str, now: DateTime<Utc>) -> Result<Option<String>, StoreError> {
    let period = stale_after(app);
    let Some(health) = load(app, tenant).await? else { return Ok(None) };
    if !health.is_stale(now, period) || health.last_alarm.is_some_and(|a| now - a < period) {
        return Ok(None);
    }
    let alert = stale_alert(tenant, &health, now, period);
    let id = alert["id"].as_str().unwrap_or_default().to_string();
    Message::Alert { tenant: tenant.to_string(), alert }.send(app.store.as_ref(), app.queue.as_ref()).await?;
    tracing::error!(tenant, alert = id, "no successful poll for longer than stale_after; alarm raised");
    update(app, tenant, |h| h.last_alarm = Some(now)).await?;
    Ok(Some(id))
}

/// Where a tenant's polling stands (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Polled successfully within `poll.stale_after`.
    Up,
    /// No recent success, no failure either, and this process started less than `health.start_grace` ago.
    Starting,
    /// Its polls fail or are overdue.
    Down,
}

impl State {
    /// The state of a tenant with `health` at `now`, for a process started at `started`.
    pub fn of(
        health: &Health,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
        started: DateTime<Utc>,
        grace: chrono::Duration,
    ) -> State {
        if health.last_success.is_some_and(|s| now - s < stale_after) {
            State::Up
        } else if health.last_error.is_none() && now - started < grace {
            State::Starting
        } else {
            State::Down
        }
    }

    /// The state of several tenants together: down if one is, else starting if one is, else up.
    pub fn all(states: impl IntoIterator<Item = State>) -> State {
        states.into_iter().fold(State::Up, |acc, s| match (acc, s) {
            (State::Down, _) | (_, State::Down) => State::Down,
            (State::Starting, _) | (_, State::Starting) => State::Starting,
            _ => State::Up,
        })
    }

    /// The HTTP status that goes with it: 200 for up and starting, 503 for down.
    pub fn http_status(self) -> u16 {
        if self == State::Down { 503 } else { 200 }
    }
}

/// One tenant's line in `secmon status` and `GET /api/health-details`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantStatus {
    /// Tenant name.
    pub tenant: String,
    /// Up, starting or down.
    pub state: State,
    /// Polled successfully within `stale_after`.
    pub healthy: bool,
    /// The last successful poll.
    pub last_success: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub seconds_since_success: Option<i64>,
    /// The last attempt.
    pub last_attempt: Option<DateTime<Utc>>,
    /// The last error, if the last poll failed.
    pub last_error: Option<String>,
    /// Failed polls since the last success.
    pub consecutive_failures: u32,
    /// The tenant's watermark.
    pub watermark: Option<DateTime<Utc>>,
    /// The last successful reconciliation.
    pub last_reconciled: Option<DateTime<Utc>>,
    /// Versions it found missing; more than zero means `poll.overlap` is too small.
    pub reconcile_missing: Option<usize>,
    /// The error of the last reconciliation, if it failed.
    pub reconcile_error: Option<String>,
    /// Poll requests (doorbells, timers) answered by a poll already pending.
    pub polls_coalesced: u64,
}

/// The health of every tenant.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    /// The tenants' states together ([`State::all`]).
    pub status: State,
    /// Every tenant healthy (up).
    pub healthy: bool,
    /// The configured `poll.stale_after`, in seconds.
    pub stale_after_seconds: i64,
    /// One line per configured tenant.
    pub tenants: Vec<TenantStatus>,
}

/// Reads the health of every configured tenant. A tenant never polled is unhealthy.
pub async fn status(app: &App, now: DateTime<Utc>) -> Result<Status, StoreError> {
    let period = stale_after(app);
    let grace = chrono::Duration::from_std(app.config.health.start_grace).unwrap_or_default();
    let mut tenants = Vec::new();
    for t in &app.config.tenants {
        let health = load(app, &t.name).await?.unwrap_or_default();
        let watermark = app
            .store
            .get(&keys::watermark(&t.name))
            .await?
            .and_then(|v| serde_json::from_slice::<Watermark>(&v.value).ok())
            .map(|w| w.watermark);
        let slot = super::coalesce::load(app, &t.name).await?;
        let state = State::of(&health, now, period, app.started, grace);
        tenants.push(TenantStatus {
            tenant: t.name.clone(),
            state,
            healthy: state == State::Up,
            last_success: health.last_success,
            seconds_since_success: health.last_success.map(|s| (now - s).num_seconds()),
            last_attempt: health.last_attempt,
            // Upstream errors may echo what they were sent; redacted again on the way out.
            last_error: health.last_error.as_deref().map(crate::redact::redact),
            consecutive_failures: health.consecutive_failures,
            watermark,
            last_reconciled: health.last_reconciled,
            reconcile_missing: health.reconcile_missing,
            reconcile_error: health.reconcile_error.as_deref().map(crate::redact::redact),
            polls_coalesced: slot.coalesced,
        });
    }
    Ok(Status {
        status: State::all(tenants.iter().map(|t| t.state)),
        healthy: tenants.iter().all(|t| t.healthy),
        stale_after_seconds: period.num_seconds(),
        tenants,
    })
}

/// The anonymous answer, as last computed: the state and when it was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overall {
    /// Up, starting or down; a store that cannot be read is down.
    pub state: State,
    /// When it was computed.
    pub at: DateTime<Utc>,
}

/// The last [`Overall`], kept in the [`App`] for `health.cache_for`.
#[derive(Debug, Default)]
pub struct Cache(std::sync::Mutex<Option<Overall>>);

/// The state of every tenant together, computed at most once per `health.cache_for` (a clock that went
/// back computes anew).
pub async fn overall(app: &App, now: DateTime<Utc>) -> Overall {
    let ttl = chrono::Duration::from_std(app.config.health.cache_for).unwrap_or_default();
    let cached = *app.health_cache.0.lock().expect("health cache lock");
    if let Some(o) = cached
        && o.at <= now
        && now - o.at < ttl
    {
        return o;
    }
    let state = match status(app, now).await {
        Ok(s) => s.status,
        Err(e) => {
            tracing::error!("health: the store cannot be read: {}", crate::redact::redact(&e.to_string()));
            State::Down
        }
    };
    let fresh = Overall { state, at: now };
    *app.health_cache.0.lock().expect("health cache lock") = Some(fresh);
    fresh
}

/// `GET /api/health`, anonymous: `{"status": "up" | "starting" | "down"}`, 200 for up and starting, 503
/// for down (see the module doc); nothing else, so it names no tenant and shows no error.
pub async fn http(app: &App, now: DateTime<Utc>) -> HttpResponse {
    let o = overall(app, now).await;
    HttpResponse::json(o.state.http_status(), &json!({ "status": o.state }))
}

/// `GET /api/health-details` (behind the function key or `health.token`): the [`Status`] of every
/// tenant as JSON, errors redacted; 200 for up and starting, 503 for down, 500 when the store cannot be read.
pub async fn details_http(app: &App, now: DateTime<Utc>) -> HttpResponse {
    match status(app, now).await {
        Ok(s) => HttpResponse::json(s.status.http_status(), &serde_json::to_value(&s).expect("serializes")),
        Err(e) => HttpResponse::json(500, &json!({"status": "down", "error": crate::redact::redact(&e.to_string())})),
    }
}
