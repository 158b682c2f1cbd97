//! Delivery: each receiver of a decision gets one alert version once, as its own unit of work.
//!
//! Deciding an alert version ([`crate::respond`]) puts one [`Job`] per receiver, and one per route
//! `set:`, on the `deliveries` queue ([`enqueue`]); the `deliver` function runs one job at a time
//! ([`run`]), so a receiver that hangs or fails delays, retries and poisons only its own jobs.
//!
//! For one receiver ([`deliver_one`]): ask its **breaker** whether it may be sent to (a receiver that
//! failed too often in a row is paused: the job waits on the queue) → **claim**
//! `notify/{tenant}/{alert id}/{version}/{receiver}` in the store (already done → skip; held by another
//! worker → try again shortly) → **decide** whether to tell it again (`realert`) and whether it rides in
//! another alert's message (`group_by_incident`; a group's leader waits for its window on the queue) →
//! **send** → on success complete the claim, on failure release it → **record** an audit entry either
//! way. A route's `set:` runs once every receiver of the decision was told, claimed once like a send,
//! and never on an alert that someone changed since secmon read it.
//!
//! A receiver with a posting budget (Teams, e-mail) takes a slot before it sends; an alert that finds
//! none waits in the receiver's pending list and goes out in a digest (`coalesce`, [`drain`], and
//! [`flush`] from the poll timer).
//!
//! In `secmon run` the worker that decided the alert gives each receiver a first try at once
//! ([`first_try`]), and only a delivery that does not finish becomes a job.
//!
//! Each step is a named function in its own file: `job`, `first`, `breaker`, `claim`, [`realert`],
//! `group`, `coalesce`, `render`, `send`, `record`, and the routes' `update`s.

pub mod breaker;
mod card;
mod claim;
mod coalesce;
mod first;
mod group;
mod job;
mod realert;
mod record;
mod render;
mod send;
mod update;

use chrono::{DateTime, Utc};

use self::breaker::{Admit, Transition};
pub use self::coalesce::{Drained, drain, flush};
pub use self::first::{RETRY_AFTER, first_try};
use self::group::Grouping;
pub use self::job::{BadJob, Job, Ready, Task, enqueue};
pub use self::realert::{Last, Why, realert};
use crate::alert::Alert;
use crate::app::App;
use crate::graph::Retry;
use crate::notify::{NotifyError, silence};
use crate::rules::{Delivery, Update};
use crate::store::{Claim, Once, Put, Store, StoreError, Versioned, keys, once_reading};

/// What delivery did for one alert version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivered {
    /// Receivers that were sent to now.
    pub sent: Vec<String>,
    /// Receivers skipped because this version was already delivered to them (a redelivered message).
    pub already: Vec<String>,
    /// Receivers not told again: `realert` said this version is nothing new.
    pub suppressed: Vec<String>,
    /// Receivers that got this alert inside another alert's message of the same incident.
    pub grouped: Vec<String>,
    /// Receivers whose posting budget was spent: the alert waits in their pending list for a digest.
    pub deferred: Vec<String>,
    /// Receivers not told yet: the alert leads its incident's group and waits for the window to close.
    /// Deliver again after [`Delivered::until`].
    pub waiting: Vec<String>,
    /// When the earliest group window of a waiting receiver closes.
    pub until: Option<DateTime<Utc>>,
    /// Routes whose `set:` update was applied to the alert.
    pub updated: Vec<String>,
    /// Receivers not told: a silence or a route's window muted the alert (`notify_silenced`).
    pub silenced: Vec<String>,
    /// Teams bot receivers whose card of the alert was updated in place to this version.
    pub cards_updated: Vec<String>,
}

/// Why a delivery did not finish, and whether retrying the message can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliverError {
    /// What failed (redacted).
    pub message: String,
    /// Whether a retry helps.
    pub retry: Retry,
}

impl DeliverError {
    fn retry(message: String) -> Self {
        Self { message, retry: Retry::Retryable }
    }
}

fn store(e: StoreError) -> DeliverError {
    DeliverError::retry(format!("store: {e}"))
}

/// What one delivery to one receiver came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Sent now.
    Sent,
    /// This version was already delivered to it (a redelivered job).
    Already,
    /// Not told again: `realert` said this version is nothing new.
    Suppressed,
    /// Told inside another alert's message of the same incident.
    Grouped,
    /// Its posting budget is spent: the alert waits in its pending list for a digest.
    Deferred,
    /// Not told: a silence or a route's window muted the alert (`notify_silenced` audited).
    Silenced,
    /// A Teams bot receiver's card of the alert was updated in place.
    CardUpdated,
    /// Another worker is delivering it right now: look again shortly.
    Held,
    /// The alert leads its incident's group and the window is open until then.
    Grouping(DateTime<Utc>),
    /// The receiver is paused by its breaker until then.
    Paused(DateTime<Utc>),
}

/// Tells each receiver of `deliveries` about one alert version in turn, in this process, then applies
/// the routes' `updates` once every receiver was told: the steps of the `deliver` function without the
/// queue between them (`secmon` itself queues one [`Job`] per receiver; tests and tools use this).
pub async fn deliver(
    app: &App,
    tenant: &str,
    alert: &Alert,
    deliveries: &[Delivery],
    updates: &[Update],
) -> Result<Delivered, DeliverError> {
    let mut done = Delivered::default();
    let mut failures: Vec<DeliverError> = Vec::new();
    let mut held = Vec::new();
    let mut paused = Vec::new();
    for target in deliveries {
        let name = target.receiver.clone();
        match deliver_one(app, tenant, alert, target).await {
            Ok(Step::Already) => done.already.push(name),
            Ok(Step::Held) => held.push(name),
            Ok(Step::Sent) => done.sent.push(name),
            Ok(Step::Suppressed) => done.suppressed.push(name),
            Ok(Step::Grouped) => done.grouped.push(name),
            Ok(Step::Deferred) => done.deferred.push(name),
            Ok(Step::Silenced) => done.silenced.push(name),
            Ok(Step::CardUpdated) => done.cards_updated.push(name),
            Ok(Step::Grouping(t)) => {
                done.waiting.push(name);
                done.until = Some(done.until.map_or(t, |u| u.min(t)));
            }
            Ok(Step::Paused(t)) => paused.push(format!("{name} (until {})", stamp(t))),
            Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() || !held.is_empty() || !paused.is_empty() {
        let mut parts: Vec<String> = failures.iter().map(|e| e.message.clone()).collect();
        if !held.is_empty() {
            parts.push(format!("being delivered by another worker: {}", held.join(", ")));
        }
        if !paused.is_empty() {
            parts.push(format!("paused by the breaker: {}", paused.join(", ")));
        }
        let message = format!("alert {}: notification failed for {}", alert.id, parts.join("; "));
        let hopeless = held.is_empty() && paused.is_empty() && failures.iter().all(|e| e.retry == Retry::Permanent);
        return Err(DeliverError { message, retry: if hopeless { Retry::Permanent } else { Retry::Retryable } });
    }
    if done.waiting.is_empty() {
        for Update { route, set } in updates {
            if update::apply_update(app, tenant, alert, route, set).await? {
                done.updated.push(route.clone());
            }
        }
    }
    Ok(done)
}

/// Tells one receiver about one alert version: breaker → claim → realert → group → send → record.
pub async fn deliver_one(app: &App, tenant: &str, alert: &Alert, target: &Delivery) -> Result<Step, DeliverError> {
    let name = target.receiver.as_str();
    let now = app.clock.now();
    let admitted = breaker::admit(app.store.as_ref(), &app.breakers, name, now).await.map_err(store)?;
    if let Admit::Wait(until) = admitted {
        return Ok(Step::Paused(until));
    }
    let claim_key = claim::notify_key(tenant, alert, name);
    // What the receiver was last told of the alert is read with the claim, and what it is told now
    // written with the claim's completion.
    let last_key = keys::notify_last(tenant, &alert.id, name);
    let attempt = Attempt { tenant, alert, target, claim_key: &claim_key, last_key: &last_key, admitted };
    let act = |last| notify_one(app, &attempt, last);
    let done = once_reading(app.store.as_ref(), &claim_key, claim::SEND_LEASE, &last_key, act).await.map_err(store)?;
    let sent = matches!(done, Once::Done(Outcome::Sent | Outcome::CardUpdated) | Once::Failed(Stop::Failed(_)));
    if admitted == Admit::Probe && !sent {
        // Nothing was sent: let the next delivery probe at once rather than after the probe's lease.
        if let Err(e) = breaker::unprobed(app.store.as_ref(), &app.breakers, name).await {
            tracing::warn!(receiver = name, "breaker probe not given back: {e}");
        }
    }
    match done {
        Once::AlreadyDone => Ok(Step::Already),
        Once::Held => Ok(Step::Held),
        Once::Done(Outcome::Sent) => Ok(Step::Sent),
        Once::Done(Outcome::Suppressed) => Ok(Step::Suppressed),
        Once::Done(Outcome::Grouped) => Ok(Step::Grouped),
        Once::Done(Outcome::Deferred) => Ok(Step::Deferred),
        Once::Done(Outcome::Silenced) => Ok(Step::Silenced),
        Once::Done(Outcome::CardUpdated) => Ok(Step::CardUpdated),
        // The claim was given back: the delivery is tried again at that time.
        Once::Failed(Stop::Wait(until)) => Ok(Step::Grouping(until)),
        Once::Failed(Stop::Posting) => Ok(Step::Held),
        // The claim was given back so the retry sends; the audit record says what happened.
        Once::Failed(Stop::Failed(e)) => Err(DeliverError { message: e.to_string(), retry: e.retry }),
    }
}

/// What one delivery job did, for the function's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// One line saying what happened.
    pub summary: String,
    /// Try the job again at this time (put it back on the queue with a delay, not counted as a try).
    pub again_at: Option<DateTime<Utc>>,
}

/// How long an update waits for its receivers before it is given up (poisoned, with the reason).
const UPDATE_WAITS: u32 = 120;

/// Runs one delivery job: a notify tells its receiver ([`deliver_one`]); an update applies its route's
/// `set:` once every receiver of the decision was told.
pub async fn run(app: &App, ready: &Ready) -> Result<Ran, DeliverError> {
    let (tenant, alert) = (ready.job.tenant.as_str(), &ready.alert);
    let now = app.clock.now();
    match &ready.job.task {
        Task::Notify { receiver, .. } => {
            let target = ready.delivery().expect("a notify job");
            let step = deliver_one(app, tenant, alert, &target).await?;
            if step == Step::Sent {
                crate::metrics::count(crate::metrics::Counter::AlertsNotified, tenant, 1);
            }
            let (summary, again_at) = said(step, receiver, now);
            Ok(Ran { summary: format!("{}: {summary}", alert.id), again_at })
        }
        Task::Update { route, set, receivers } => {
            let waiting = untold(app.store.as_ref(), tenant, alert, receivers).await.map_err(store)?;
            if !waiting.is_empty() {
                if ready.job.waited >= UPDATE_WAITS {
                    let message = format!(
                        "alert {}: the update by {route} waited too long for {} to be told; not applied",
                        alert.id,
                        waiting.join(", ")
                    );
                    return Err(DeliverError { message, retry: Retry::Permanent });
                }
                let summary = format!("{}: update by {route} waits for {}", alert.id, waiting.join(", "));
                return Ok(Ran { summary, again_at: Some(now + chrono::Duration::seconds(10)) });
            }
            let applied = update::apply_update(app, tenant, alert, route, set).await?;
            let summary = if applied { "applied" } else { "not needed" };
            Ok(Ran { summary: format!("{}: update by {route} {summary}", alert.id), again_at: None })
        }
    }
}

/// What one step of a delivery to `receiver` says in the log, and when to try again if it did not
/// finish.
fn said(step: Step, receiver: &str, now: DateTime<Utc>) -> (String, Option<DateTime<Utc>>) {
    match step {
        Step::Sent => (format!("notified {receiver}"), None),
        Step::Already => (format!("{receiver} was already told"), None),
        Step::Suppressed => (format!("{receiver} not told again (realert)"), None),
        Step::Grouped => (format!("{receiver} told in its incident's message"), None),
        Step::Deferred => (format!("{receiver} waiting for a digest"), None),
        Step::Silenced => (format!("{receiver} not told: silenced"), None),
        Step::CardUpdated => (format!("{receiver}: its card updated in place"), None),
        // Another worker is at it: look again shortly, it is then done or given back.
        Step::Held => (format!("{receiver} is being told by another worker"), Some(now + chrono::Duration::seconds(5))),
        Step::Grouping(t) => (format!("{receiver}: leads its incident's group until {}", stamp(t)), Some(t)),
        Step::Paused(t) => (format!("{receiver} is paused by its breaker until {}", stamp(t)), Some(t)),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The receivers of `receivers` not told about this alert version yet: their claim is not complete.
/// Looking takes a free claim for an instant and gives it back at once, so it never stops a delivery
/// (one that finds it held looks again shortly).
async fn untold(
    store: &dyn Store,
    tenant: &str,
    alert: &Alert,
    receivers: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for r in receivers {
        let key = claim::notify_key(tenant, alert, r);
        match store.claim(&key, std::time::Duration::from_secs(5)).await? {
            Claim::Done => {}
            Claim::Held => out.push(r.clone()),
            Claim::Acquired(token) => {
                store.release(&key, &token).await?;
                out.push(r.clone());
            }
        }
    }
    Ok(out)
}

/// Why a claimed delivery stopped without being done.
enum Stop {
    /// It failed.
    Failed(NotifyError),
    /// It leads a group whose window is open: try again then.
    Wait(DateTime<Utc>),
    /// Another worker is posting the alert's first bot card: try again shortly.
    Posting,
}

impl From<NotifyError> for Stop {
    fn from(e: NotifyError) -> Self {
        Stop::Failed(e)
    }
}

enum Outcome {
    Sent,
    Suppressed,
    Grouped,
    Deferred,
    Silenced,
    CardUpdated,
}

/// One delivery under its claim: the alert, the receiver, the claim's key and the key of what the
/// receiver was last told, and what the breaker said.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    tenant: &'a str,
    alert: &'a Alert,
    target: &'a Delivery,
    claim_key: &'a str,
    last_key: &'a str,
    admitted: Admit,
}

/// The steps for one claimed receiver: realert → group → render → send → record. `last` is the record
/// at `last_key` of what the receiver was last told of the alert; an outcome that told it (or holds the
/// alert for a digest or a group's message) returns the new record, which the caller writes as it
/// completes the claim on success; it releases the claim on error.
async fn notify_one(app: &App, attempt: &Attempt<'_>, last: Option<Versioned>) -> Result<(Outcome, Vec<Put>), Stop> {
    let Attempt { tenant, alert, target, claim_key, last_key, admitted } = *attempt;
    let receivers = &app.receivers;
    let now = app.clock.now();
    let name = target.receiver.as_str();
    let store_err = |e: StoreError| NotifyError::new(name, format!("store: {e}"), Retry::Retryable);
    if let Some(bot) = receivers.get(name)?.bot() {
        match card::existing(app, bot, tenant, alert, name, now).await {
            Ok(card::Existing::None) => {}
            Ok(card::Existing::Posting) => return Err(Stop::Posting),
            Ok(card::Existing::Updated(at)) => {
                health(app, tenant, alert, name, admitted, &Ok(200)).await;
                record::append(app, tenant, now, record::card_updated(alert, name, &at.activity_id, &target.routes))
                    .await;
                return Ok((Outcome::CardUpdated, Vec::new()));
            }
            Ok(card::Existing::Current(shown)) => {
                let reason = format!("its card shows version {shown} already");
                record::append(app, tenant, now, record::suppressed(alert, name, reason)).await;
                return Ok((Outcome::Suppressed, Vec::new()));
            }
            Err(e) => {
                health(app, tenant, alert, name, admitted, &Err(e.clone())).await;
                record::append(app, tenant, now, record::failed(alert, name, "teams", &e)).await;
                return Err(Stop::Failed(e));
            }
        }
    }
    if let Some(muted) = silence::muting(app, tenant, alert, target, now).await.map_err(store_err)? {
        record::append(app, tenant, now, muted.record(alert, name, &target.routes)).await;
        return Ok((Outcome::Silenced, Vec::new()));
    }
    let why = match realert(realert::last(last).as_ref(), alert, now, target.realert) {
        Ok(why) => why,
        Err(reason) => {
            record::append(app, tenant, now, record::suppressed(alert, name, reason)).await;
            return Ok((Outcome::Suppressed, Vec::new()));
        }
    };
    // What it is told now, written as the claim completes: from then on realert knows it was told.
    let told = || vec![realert::told(last_key, alert, now)];
    let notifier = receivers.get(name)?;
    let mut view = render::view(tenant, alert, target, why, notifier.shows_evidence());
    if silence::digest::collect(app, tenant, alert, target, &view, claim_key, now).await.map_err(store_err)? {
        return Ok((Outcome::Deferred, told()));
    }
    let group_key = match group::group(app.store.as_ref(), tenant, name, alert, &mut view, target.group, now)
        .await
        .map_err(store_err)?
    {
        Grouping::Member { leader } => {
            record::append(app, tenant, now, record::grouped(alert, name, &leader)).await;
            return Ok((Outcome::Grouped, told()));
        }
        Grouping::Leader { key } => Some(key),
        Grouping::Alone => None,
        Grouping::Wait(until) => return Err(Stop::Wait(until)),
    };

    // --- triage page (issue 22): e-mail and Workflows messages carry a signed, single-use triage link.
    if let Some(page) = app.config.triage.page.as_ref()
        && matches!(notifier.kind(), "email" | "teams")
        && !alert.id.starts_with("secmon-")
    {
        view.triage_url = Some(crate::triage::page::link_url(page, tenant, alert, now));
    }
    if let Some(budgeted) = notifier.budget()
        && !coalesce::slot_for_one(app.store.as_ref(), tenant, name, &budgeted, now).await.map_err(store_err)?
    {
        // The budget is spent, or others wait already: this alert waits with them for a digest.
        let since = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let entry = coalesce::Waiting {
            claim: claim_key.to_string(),
            version: alert.version().to_string(),
            routes: target.routes.clone(),
            lines: crate::notify::view::DigestLine::of(&view, &since),
        };
        // Its claim is completed by `once` when this returns: from now the list holds it, durably.
        coalesce::wait(app.store.as_ref(), tenant, name, entry).await.map_err(store_err)?;
        if let Some(gk) = group_key {
            group::mark_sent(app.store.as_ref(), &gk, &alert.id).await;
        }
        record::append(app, tenant, now, record::deferred(alert, name, notifier.kind())).await;
        // A slot may be free with others waiting: send them (and this one) now. A failure leaves
        // them waiting for the next delivery or the poll timer; this alert is safe in the list.
        if let Err(e) = coalesce::drain(app, tenant, name).await {
            tracing::warn!(receiver = name, "digest not sent yet: {e}");
        }
        return Ok((Outcome::Deferred, told()));
    }
    let result = match notifier.render(&receivers.templates, &view, alert) {
        Ok(payload) => {
            let sent = send::send(app, notifier, tenant, &payload, now, claim_key).await;
            health(app, tenant, alert, name, admitted, &sent).await;
            sent
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(status) => {
            if let Some(gk) = group_key {
                group::mark_sent(app.store.as_ref(), &gk, &alert.id).await;
            }
            record::append(app, tenant, now, record::sent(alert, name, notifier.kind(), &view, &target.routes, status))
                .await;
            Ok((Outcome::Sent, told()))
        }
        Err(e) => {
            record::append(app, tenant, now, record::failed(alert, name, notifier.kind(), &e)).await;
            Err(Stop::Failed(e))
        }
    }
}

/// Tells the receiver's breaker how a send went, and records a pause or a resumption. A breaker that
/// cannot be updated is logged: the delivery's own outcome stands.
async fn health(app: &App, tenant: &str, alert: &Alert, name: &str, admitted: Admit, sent: &Result<u16, NotifyError>) {
    let store = app.store.as_ref();
    let now = app.clock.now();
    let changed = match sent {
        Ok(_) => breaker::succeeded(store, &app.breakers, name, admitted).await,
        Err(e) if e.retry == Retry::Retryable => {
            let config = app.config.receivers.get(name).map(|r| r.breaker()).unwrap_or_default();
            breaker::failed(store, &app.breakers, name, &config, admitted, now).await
        }
        Err(_) => Ok(None),
    };
    match changed {
        Ok(Some(Transition::Opened { failures, until })) => {
            let error = sent.as_ref().err().map(|e| e.message.as_str()).unwrap_or_default();
            tracing::warn!(receiver = name, failures, "receiver paused until {}: {error}", stamp(until));
            record::append(app, tenant, now, record::paused(alert, name, failures, until, error)).await;
        }
        Ok(Some(Transition::Closed)) => {
            tracing::info!(receiver = name, "receiver answered again: its deliveries flow");
            record::append(app, tenant, now, record::resumed(alert, name)).await;
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(receiver = name, "breaker not updated: {e}"),
    }
}
