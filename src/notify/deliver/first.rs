//! First try: the worker that decided an alert tells its receivers at once, and only what does not
//! finish becomes a job on the `deliveries` queue.
//!
//! A job for every delivery costs a queue round trip per receiver: the alert's JSON written to the
//! store, read back and parsed again, the job deleted. Most deliveries finish on their first try, so
//! with [`App::first_try`] (`secmon run`, `worker.first_try`) each receiver of a decision is tried at
//! once, all of them concurrently, by the same steps a job runs ([`deliver_one`]: breaker, claim,
//! realert, group, send, record). A delivery that does not finish becomes the job it would have been,
//! and from then on is retried, backed off and poisoned on its own:
//!
//! - a failure a retry may fix: a job tried again after [`RETRY_AFTER`] (then the queue's retries);
//! - a receiver paused by its breaker, a group's leader whose window is open, a claim another worker
//!   holds: a job due at that time, as a job's own try would have put it back;
//! - a failure no retry can fix (a refused payload, say): the job goes to the poison queue at once,
//!   with the reason in the log and the audit trail.
//!
//! A route's `set:` is always a job: it waits until every receiver was told. The alert's message is
//! deleted only after this returns, so a crash repeats the decision and its tries (the claims make a
//! repeat harmless, as for a job), and a receiver that hangs holds the worker of the alert it is being
//! told about for its timeout, as its job would, while the alert's other receivers are told.

use std::time::Duration;

use super::{DeliverError, Job, Step, deliver_one, job, said};
use crate::alert::Alert;
use crate::app::App;
use crate::graph::Retry;
use crate::rules::{Delivery, Update};
use crate::store::{DELIVERIES_QUEUE, StoreError, poison_name};

/// How long a delivery whose first try failed waits on the queue before its job tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Tries each of `deliveries` at once and queues a job for each one that did not finish, and one per
/// route of `updates`. Returns what happened, a phrase per receiver, for the alert's log line. A store
/// failure while queueing is returned: the alert's message is then retried whole.
pub async fn first_try(
    app: &App,
    tenant: &str,
    alert: &Alert,
    deliveries: &[Delivery],
    updates: &[Update],
) -> Result<Vec<String>, StoreError> {
    let tries = deliveries.iter().map(|d| deliver_one(app, tenant, alert, d));
    let steps = futures::future::join_all(tries).await;
    let now = app.clock.now();
    let mut said_all = Vec::with_capacity(deliveries.len());
    let (mut queued, mut poisoned) = (Vec::new(), Vec::new());
    for (d, step) in deliveries.iter().zip(steps) {
        let name = d.receiver.as_str();
        let mut job = Job::notify(tenant, d);
        let (line, again_at) = match step {
            Ok(step) => {
                if step == Step::Sent {
                    crate::metrics::count(crate::metrics::Counter::AlertsNotified, tenant, 1);
                }
                match said(step, name, now) {
                    (line, Some(at)) => (format!("{line} (queued)"), Some(at)),
                    done => done,
                }
            }
            Err(DeliverError { message, retry }) => {
                crate::metrics::count(crate::metrics::Counter::AlertsFailed, tenant, 1);
                tracing::warn!(tenant, alert = %alert.id, version = alert.version(), "{message}");
                if retry == Retry::Permanent {
                    tracing::error!(tenant, alert = %alert.id, "{name}: moved to the poison queue: {message}");
                    poisoned.push(job);
                    said_all.push(format!("{name} failed for good, poisoned: {message}"));
                    continue;
                }
                let again = now + chrono::Duration::from_std(RETRY_AFTER).expect("a minute");
                (format!("{name} failed, queued to try again: {message}"), Some(again))
            }
        };
        if let Some(at) = again_at {
            job.not_before = Some(at);
            queued.push(job);
        }
        said_all.push(line);
    }
    let receivers: Vec<String> = deliveries.iter().map(|d| d.receiver.clone()).collect();
    queued.extend(updates.iter().map(|u| Job::update(tenant, u, &receivers)));
    let (store, queue) = (app.store.as_ref(), app.queue.as_ref());
    if !queued.is_empty() {
        job::put(store, queue, DELIVERIES_QUEUE, alert, &queued, now).await?;
    }
    if !poisoned.is_empty() {
        job::put(store, queue, &poison_name(DELIVERIES_QUEUE), alert, &poisoned, now).await?;
    }
    Ok(said_all)
}
