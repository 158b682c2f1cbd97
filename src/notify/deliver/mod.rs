//! Delivery: each receiver of a decision gets one alert version once.
//!
//! For every receiver, in order: **claim** `notify/{tenant}/{alert id}/{version}/{receiver}` in the store
//! (already done → skip; held by another worker → retry later) → **decide** whether to tell it again
//! (`realert`) and whether it rides in another alert's message (`group_by_incident`) → **send** → on
//! success complete the claim, on failure release it → **record** an audit entry either way. A failing
//! receiver never blocks the others: all are attempted, then the message is retried (or set aside when
//! no retry can help) for the ones that failed, whose claims were released. After every receiver
//! succeeded, the routes' `set:` updates run, each claimed once like a send and never applied to an alert
//! that someone changed since secmon read it.
//!
//! A receiver with a posting budget (Teams, e-mail) takes a slot before it sends; an alert that finds
//! none waits in the receiver's pending list and goes out in a digest (`coalesce`, [`drain`], and
//! [`flush`] from the poll timer).
//!
//! Each step is a named function in its own file: `claim`, [`realert`], `group`, `coalesce`, `render`,
//! `send`, `record`, and the routes' `update`s; [`deliver`] runs them in that order.

mod claim;
mod coalesce;
mod group;
mod realert;
mod record;
mod render;
mod send;
mod update;

pub use self::coalesce::{Drained, drain, flush};
use self::group::Grouping;
pub use self::realert::{Last, Why, realert};
use crate::alert::Alert;
use crate::app::App;
use crate::graph::Retry;
use crate::notify::{NotifyError, Receivers, silence};
use crate::rules::{Delivery, Update};
use crate::store::{Once, StoreError, keys, once};

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
    /// Routes whose `set:` update was applied to the alert.
    pub updated: Vec<String>,
    /// Receivers not told: a silence or a route's window muted the alert (`notify_silenced`).
    pub silenced: Vec<String>,
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

/// Tells each receiver of `deliveries` about one alert version, then applies the routes' `updates`.
pub async fn deliver(
    app: &App,
    tenant: &str,
    alert: &Alert,
    deliveries: &[Delivery],
    updates: &[Update],
) -> Result<Delivered, DeliverError> {
    let receivers = &app.receivers;
    let mut done = Delivered::default();
    let mut failures: Vec<NotifyError> = Vec::new();
    let mut held = Vec::new();
    for target in deliveries {
        let claim_key = claim::notify_key(tenant, alert, &target.receiver);
        let act = || notify_one(app, receivers, tenant, alert, target, &claim_key);
        match once(app.store.as_ref(), &claim_key, claim::lease(target), act).await.map_err(store)? {
            Once::AlreadyDone => done.already.push(target.receiver.clone()),
            Once::Held => held.push(target.receiver.clone()),
            Once::Done(Outcome::Sent) => done.sent.push(target.receiver.clone()),
            Once::Done(Outcome::Suppressed) => done.suppressed.push(target.receiver.clone()),
            Once::Done(Outcome::Grouped) => done.grouped.push(target.receiver.clone()),
            Once::Done(Outcome::Deferred) => done.deferred.push(target.receiver.clone()),
            Once::Done(Outcome::Silenced) => done.silenced.push(target.receiver.clone()),
            // The claim was given back so the retry sends; the audit record says what happened.
            Once::Failed(e) => failures.push(e),
        }
    }
    if !failures.is_empty() || !held.is_empty() {
        let mut parts: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
        if !held.is_empty() {
            parts.push(format!("being delivered by another worker: {}", held.join(", ")));
        }
        let message = format!("alert {}: notification failed for {}", alert.id, parts.join("; "));
        let hopeless = held.is_empty() && failures.iter().all(|e| e.retry == Retry::Permanent);
        return Err(DeliverError { message, retry: if hopeless { Retry::Permanent } else { Retry::Retryable } });
    }
    for Update { route, set } in updates {
        if update::apply_update(app, tenant, alert, route, set).await? {
            done.updated.push(route.clone());
        }
    }
    Ok(done)
}

enum Outcome {
    Sent,
    Suppressed,
    Grouped,
    Deferred,
    Silenced,
}

/// The steps for one claimed receiver: realert → group → render → send → record. The caller completes
/// the claim on success and releases it on error.
async fn notify_one(
    app: &App,
    receivers: &Receivers,
    tenant: &str,
    alert: &Alert,
    target: &Delivery,
    claim_key: &str,
) -> Result<Outcome, NotifyError> {
    let now = app.clock.now();
    let name = target.receiver.as_str();
    let store_err = |e: StoreError| NotifyError::new(name, format!("store: {e}"), Retry::Retryable);
    if let Some(muted) = silence::muting(app, tenant, alert, target, now).await.map_err(store_err)? {
        record::append(app, tenant, now, muted.record(alert, name, &target.routes)).await;
        return Ok(Outcome::Silenced);
    }
    let last_key = keys::notify_last(tenant, &alert.id, name);
    let last = realert::last(app.store.as_ref(), &last_key).await.map_err(store_err)?;
    let why = match realert(last.as_ref(), alert, now, target.realert) {
        Ok(why) => why,
        Err(reason) => {
            record::append(app, tenant, now, record::suppressed(alert, name, reason)).await;
            return Ok(Outcome::Suppressed);
        }
    };
    let mut view = render::view(tenant, alert, target, why);
    if silence::digest::collect(app, tenant, alert, target, &view, claim_key, now).await.map_err(store_err)? {
        realert::remember(app.store.as_ref(), &last_key, alert, now).await;
        return Ok(Outcome::Deferred);
    }
    let group_key = match group::group(app.store.as_ref(), tenant, name, alert, &mut view, target.group, now)
        .await
        .map_err(store_err)?
    {
        Grouping::Member { leader } => {
            realert::remember(app.store.as_ref(), &last_key, alert, now).await;
            record::append(app, tenant, now, record::grouped(alert, name, &leader)).await;
            return Ok(Outcome::Grouped);
        }
        Grouping::Leader { key } => Some(key),
        Grouping::Alone => None,
    };

    let notifier = receivers.get(name)?;
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
        realert::remember(app.store.as_ref(), &last_key, alert, now).await;
        if let Some(gk) = group_key {
            group::mark_sent(app.store.as_ref(), &gk, &alert.id).await;
        }
        record::append(app, tenant, now, record::deferred(alert, name, notifier.kind())).await;
        // A slot may be free with others waiting: send them (and this one) now. A failure leaves
        // them waiting for the next delivery or the poll timer; this alert is safe in the list.
        if let Err(e) = coalesce::drain(app, tenant, name).await {
            tracing::warn!(receiver = name, "digest not sent yet: {e}");
        }
        return Ok(Outcome::Deferred);
    }
    let result = match notifier.render(&receivers.templates, &view, alert) {
        Ok(payload) => send::send(app, notifier, tenant, &payload, now, claim_key).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(status) => {
            realert::remember(app.store.as_ref(), &last_key, alert, now).await;
            if let Some(gk) = group_key {
                group::mark_sent(app.store.as_ref(), &gk, &alert.id).await;
            }
            record::append(app, tenant, now, record::sent(alert, name, notifier.kind(), &view, &target.routes, status))
                .await;
            Ok(Outcome::Sent)
        }
        Err(e) => {
            record::append(app, tenant, now, record::failed(alert, name, notifier.kind(), &e)).await;
            Err(e)
        }
    }
}
