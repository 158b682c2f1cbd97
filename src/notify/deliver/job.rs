//! Job: what travels on the `deliveries` queue. Deciding an alert version produces one job per receiver
//! (tell it) and one per route `set:` (update the alert once every receiver was told); each is retried,
//! backed off and poisoned on its own, so a receiver that hangs delays only its own jobs.
//!
//! A job carries the alert as decided (the snapshot its receivers are told about), or, when that does
//! not fit a queue message, the key of the copy `intake` already keeps in the store
//! (`alerts/{tenant}/{sha256}`, written here too when the alert came from elsewhere). It is validated
//! on receipt: a job that does not parse, names no alert, an unknown tenant or receiver, or an alert
//! that is gone, can never be done and is poisoned with the reason.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::alert::Alert;
use crate::config::Config;
use crate::notify::StatusUpdate;
use crate::rules::{Delivery, Update};
use crate::store::{DELIVERIES_QUEUE, Queue, Store, StoreError, keys};

/// One unit of delivery work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Tenant name.
    pub tenant: String,
    /// The alert version as it was decided, when it fits the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Value>,
    /// Else the store key of that alert (`alerts/{tenant}/{sha256}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_ref: Option<String>,
    /// What to do.
    pub task: Task,
    /// Not before then: a grouping window, a paused receiver. A job that arrives early (a backend caps
    /// its delays) is sent back until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// How many times an update has waited for its receivers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waited: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The work of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Task {
    /// Tell `receiver` about the alert version, with the options of the first matched route naming it.
    Notify {
        /// The receiver's name.
        receiver: String,
        /// The matched routes that name it.
        routes: Vec<String>,
        /// `realert`, in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        realert_secs: Option<u64>,
        /// `group_by_incident`, in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_secs: Option<u64>,
    },
    /// Apply `route`'s `set:` once every one of `receivers` was told.
    Update {
        /// The route.
        route: String,
        /// What it sets.
        set: StatusUpdate,
        /// The receivers of the decision, told first.
        receivers: Vec<String>,
    },
}

/// A job that can never be done, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unprocessable delivery: {0}")]
pub struct BadJob(pub String);

/// A job read and checked, with its alert.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The job as it came, without its alert (moved into `alert`; see [`Ready::into_job`]).
    pub job: Job,
    /// Its alert.
    pub alert: Alert,
}

impl Job {
    /// A job telling `d.receiver` about an alert version (the alert is added when it is sent: [`put`]).
    pub fn notify(tenant: &str, d: &Delivery) -> Job {
        Job {
            tenant: tenant.to_string(),
            alert: None,
            alert_ref: None,
            task: Task::Notify {
                receiver: d.receiver.clone(),
                routes: d.routes.clone(),
                realert_secs: d.realert.map(|r| r.as_secs()),
                group_secs: d.group.map(|g| g.as_secs().max(1)),
            },
            not_before: None,
            waited: 0,
        }
    }

    /// A job applying route `u`'s `set:` once every one of `receivers` was told.
    pub fn update(tenant: &str, u: &Update, receivers: &[String]) -> Job {
        Job {
            tenant: tenant.to_string(),
            alert: None,
            alert_ref: None,
            task: Task::Update { route: u.route.clone(), set: u.set.clone(), receivers: receivers.to_vec() },
            not_before: None,
            waited: 0,
        }
    }

    /// How long the job stays hidden when sent at `now`: none without a `not_before`, else until then
    /// (at least a second, the finest delay every backend has).
    pub fn delay(&self, now: DateTime<Utc>) -> Duration {
        self.not_before.map_or(Duration::ZERO, |at| (at - now).to_std().unwrap_or_default().max(Duration::from_secs(1)))
    }

    /// Parses a queue body.
    pub fn parse(body: &[u8]) -> Result<Job, BadJob> {
        let text = std::str::from_utf8(body).map_err(|e| BadJob(format!("not UTF-8: {e}")))?;
        serde_json::from_str(text.trim()).map_err(|e| BadJob(format!("not a delivery job: {e}")))
    }

    /// The body of the job on the queue.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("jobs serialize")
    }

    /// The receiver (notify) or route (update) the job is for, for logs.
    pub fn target(&self) -> &str {
        match &self.task {
            Task::Notify { receiver, .. } => receiver,
            Task::Update { route, .. } => route,
        }
    }

    /// Checks the job against `config` and reads its alert (from the store when it carries a key). A
    /// store failure is retried (`Err(Ok(_))`); everything else wrong is a [`BadJob`].
    pub async fn ready(self, config: &Config, store: &dyn Store) -> Result<Ready, Result<StoreError, BadJob>> {
        if config.tenant(&self.tenant).is_none() {
            return Err(Err(BadJob(format!("tenant {:?} is not in the config", self.tenant))));
        }
        match &self.task {
            Task::Notify { receiver, .. } if !config.receivers.contains_key(receiver) => {
                return Err(Err(BadJob(format!("receiver {receiver:?} is not in the config"))));
            }
            Task::Update { receivers, .. } => {
                if let Some(r) = receivers.iter().find(|r| !config.receivers.contains_key(*r)) {
                    return Err(Err(BadJob(format!("receiver {r:?} is not in the config"))));
                }
            }
            Task::Notify { .. } => {}
        }
        let mut job = self;
        let raw = match (job.alert.take(), &job.alert_ref) {
            // Moved, not copied: [`Ready::into_job`] puts it back for a job sent on again.
            (Some(a), None) => a,
            (None, Some(key)) => {
                if !key.starts_with(&format!("alerts/{}/", keys::part(&job.tenant))) {
                    return Err(Err(BadJob(format!("alert reference {key:?} is not one of {}'s", job.tenant))));
                }
                let stored = store.get(key).await.map_err(Ok)?;
                let stored = stored.ok_or_else(|| Err(BadJob(format!("alert reference {key} not in the store"))))?;
                serde_json::from_slice(&stored.value).map_err(|e| Err(BadJob(format!("stored alert {key}: {e}"))))?
            }
            (Some(_), Some(_)) => return Err(Err(BadJob("both an alert and an alert reference".into()))),
            (None, None) => return Err(Err(BadJob("no alert and no alert reference".into()))),
        };
        let alert = Alert::from_value(raw).map_err(|e| Err(BadJob(format!("alert for {}: {e}", job.tenant))))?;
        if alert.id.is_empty() {
            return Err(Err(BadJob("the alert has no id".into())));
        }
        Ok(Ready { job, alert })
    }
}

impl Ready {
    /// The job as it came, its alert back in it (to be sent on the queue again).
    pub fn into_job(self) -> Job {
        let mut job = self.job;
        if job.alert_ref.is_none() {
            job.alert = Some(self.alert.raw().clone());
        }
        job
    }

    /// The delivery options of a notify job.
    pub fn delivery(&self) -> Option<Delivery> {
        match &self.job.task {
            Task::Notify { receiver, routes, realert_secs, group_secs } => Some(Delivery {
                receiver: receiver.clone(),
                routes: routes.clone(),
                realert: realert_secs.map(Duration::from_secs),
                group: group_secs.map(Duration::from_secs),
            }),
            Task::Update { .. } => None,
        }
    }
}

/// Puts the jobs of one decided alert version on the `deliveries` queue: one per receiver of
/// `deliveries`, one per route of `updates`. An alert too large for a message goes into the store
/// first, once, and every job carries its key. Returns the receivers queued.
pub async fn enqueue(
    store: &dyn Store,
    queue: &dyn Queue,
    tenant: &str,
    alert: &Alert,
    deliveries: &[Delivery],
    updates: &[Update],
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let receivers: Vec<String> = deliveries.iter().map(|d| d.receiver.clone()).collect();
    let mut jobs: Vec<Job> = deliveries.iter().map(|d| Job::notify(tenant, d)).collect();
    jobs.extend(updates.iter().map(|u| Job::update(tenant, u, &receivers)));
    put(store, queue, DELIVERIES_QUEUE, alert, &jobs, now).await?;
    Ok(receivers)
}

/// Sends `jobs` about `alert` to `queue`, each visible after its [`Job::delay`]: the ones due at once in one
/// send (SQLite: one transaction), a delayed one on its own. Each job carries the alert, borrowed
/// rather than copied into it; an alert too large for a message goes into the store first, once, and
/// every job carries its key. A failure part-way is retried whole, and each job's claim makes a copy
/// harmless.
pub(super) async fn put(
    store: &dyn Store,
    queue: &dyn Queue,
    name: &str,
    alert: &Alert,
    jobs: &[Job],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    /// A job's body as [`Job::body`] writes it, with the alert borrowed.
    #[derive(Serialize)]
    struct Body<'a> {
        tenant: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        alert: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        alert_ref: Option<&'a str>,
        task: &'a Task,
        #[serde(skip_serializing_if = "Option::is_none")]
        not_before: Option<&'a DateTime<Utc>>,
        #[serde(skip_serializing_if = "is_zero")]
        waited: u32,
    }
    let body = |job: &Job, alert_ref: Option<&str>| {
        let body = Body {
            tenant: &job.tenant,
            alert: alert_ref.is_none().then(|| alert.raw()),
            alert_ref,
            task: &job.task,
            not_before: job.not_before.as_ref(),
            waited: job.waited,
        };
        serde_json::to_vec(&body).expect("jobs serialize")
    };
    let mut alert_ref: Option<String> = None;
    let (mut due, mut later) = (Vec::with_capacity(jobs.len()), Vec::new());
    for job in jobs {
        let mut bytes = body(job, alert_ref.as_deref());
        if bytes.len() > queue.max_body() && alert_ref.is_none() {
            use sha2::Digest;
            let raw = serde_json::to_vec(alert.raw()).expect("alerts serialize");
            let key = keys::large_alert(&job.tenant, &hex::encode(sha2::Sha256::digest(&raw)));
            store.put(&key, &raw).await?;
            bytes = body(job, Some(&key));
            alert_ref = Some(key);
        }
        match job.delay(now) {
            Duration::ZERO => due.push(bytes),
            delay => later.push((bytes, delay)),
        }
    }
    if !due.is_empty() {
        queue.send_many(name, &due).await.map_err(|p| p.error)?;
    }
    for (bytes, delay) in later {
        queue.send_after(name, &bytes, delay).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use serde_json::json;

    fn config() -> Config {
        let text = "tenants:\n  - {id: 11111111-2222-3333-4444-555555555555, name: contoso}\nroutes:\n  - { receivers: [tickets] }\nreceivers:\n  tickets: { webhook: { url: \"http://127.0.0.1:9/hook\" } }\n";
        crate::config::load_str(text, std::path::Path::new("t.yaml"), &|_| None, Utc::now()).unwrap().config
    }

    fn delivery() -> Delivery {
        Delivery { receiver: "tickets".into(), realert: None, group: None, routes: vec!["routes[0]".into()] }
    }

    #[tokio::test]
    async fn one_job_per_receiver_and_large_alerts_travel_by_key() {
        let s = SqliteStore::in_memory().unwrap();
        let small = Alert::from_value(json!({"id": "a1", "lastUpdateDateTime": "2026-11-26T10:00:00Z"})).unwrap();
        let big = Alert::from_value(json!({"id": "a2", "description": "x".repeat(60_000)})).unwrap();
        let mut two = delivery();
        two.receiver = "soc".into();
        enqueue(&s, &s, "contoso", &small, &[delivery(), two], &[], Utc::now()).await.unwrap();
        enqueue(&s, &s, "contoso", &big, &[delivery()], &[], Utc::now()).await.unwrap();
        let got = s.receive(DELIVERIES_QUEUE, 10, Duration::from_secs(30)).await.unwrap();
        let jobs: Vec<Job> = got.iter().map(|m| Job::parse(&m.body).unwrap()).collect();
        assert_eq!(jobs.iter().map(Job::target).collect::<Vec<_>>(), ["tickets", "soc", "tickets"]);
        assert!(jobs[0].alert.is_some() && jobs[0].alert_ref.is_none());
        assert!(got[2].body.len() < 1000, "the large alert travels by key");
        let key = jobs[2].alert_ref.clone().unwrap();
        assert!(key.starts_with("alerts/contoso/"), "{key}");
        let ready = jobs[2].clone().ready(&config(), &s).await.unwrap();
        assert_eq!(ready.alert.id, "a2");
    }

    #[tokio::test]
    async fn a_bad_job_says_what_is_wrong() {
        let s = SqliteStore::in_memory().unwrap();
        let c = config();
        let good = Job {
            tenant: "contoso".into(),
            alert: Some(json!({"id": "a1"})),
            alert_ref: None,
            task: Task::Notify { receiver: "tickets".into(), routes: vec![], realert_secs: None, group_secs: None },
            not_before: None,
            waited: 0,
        };
        assert!(good.clone().ready(&c, &s).await.is_ok());
        let bad = |j: Job| async { j.ready(&c, &s).await.unwrap_err().unwrap_err().0 };
        let mut j = good.clone();
        j.tenant = "fabrikam".into();
        assert!(bad(j).await.contains("tenant \"fabrikam\" is not in the config"));
        let mut j = good.clone();
        j.task = Task::Notify { receiver: "nobody".into(), routes: vec![], realert_secs: None, group_secs: None };
        assert!(bad(j).await.contains("receiver \"nobody\""));
        let mut j = good.clone();
        j.alert = None;
        assert!(bad(j).await.contains("no alert"));
        let mut j = good.clone();
        j.alert = None;
        j.alert_ref = Some("alerts/contoso/abc".into());
        assert!(bad(j).await.contains("not in the store"));
        let mut j = good.clone();
        j.alert = None;
        j.alert_ref = Some("watermark/contoso".into());
        assert!(bad(j).await.contains("is not one of contoso's"));
        assert!(Job::parse(b"{\"tenant\":\"contoso\"}").unwrap_err().0.contains("missing field"));
        assert!(Job::parse(&[0xff]).unwrap_err().0.contains("UTF-8"));
    }
}
