//! When a silence ends: `silence_expired` is audited once (claim `silence-ended/{id}`), then every
//! alert it muted is read from Graph, and one still open is told once to each receiver it was muted for
//! (claim `silence-renotify/{id}/{tenant}/{alert}/{receiver}`, audited `notify` with why "silence
//! ended"). An alert resolved meanwhile is not told (`notify_suppressed`); one that another silence
//! mutes now is left to that one (`notify_silenced`); one whose newer version the receiver was told
//! about since the end is not told again. A receiver whose posting budget is spent, or a
//! Graph that fails, leaves the rest to the next run of the poll timer. When nothing is left the silence
//! is marked settled; 30 days after it ended it is deleted with its list of muted alerts.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::Digest as _;

use super::{MutedAlert, Silence, audit, muting, read_all};
use crate::alert::{Alert, AlertStatus};
use crate::app::App;
use crate::audit::{Action, Record};
use crate::graph::Retry;
use crate::notify::deliver::Last;
use crate::notify::view::View;
use crate::notify::{NotifyError, SendContext, budget};
use crate::rules::Delivery;
use crate::store::{Change, Once, StoreError, keys, once};

const LEASE: std::time::Duration = std::time::Duration::from_secs(300);
/// How long an ended, settled silence is kept (`secmon silence query --expired` shows it).
const KEEP: Duration = Duration::days(30);

/// What settling one ended silence did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Settled {
    /// The silence.
    pub silence: String,
    /// Re-notifications sent now.
    pub told: usize,
    /// Muted alerts resolved meanwhile (not told).
    pub resolved: usize,
    /// Muted alerts another silence mutes now.
    pub still_muted: usize,
    /// Muted alerts the receiver was told about since the silence ended (a newer version went through).
    pub told_since: usize,
    /// Re-notifications left for the next run (budget spent, Graph failing, another worker at it).
    pub waiting: usize,
    /// Whether everything is done (the silence is marked settled).
    pub settled: bool,
}

/// Settles every silence that ended and is not settled yet, and deletes the old settled ones.
pub async fn settle_ended(app: &App, now: DateTime<Utc>) -> Vec<String> {
    let silences = match read_all(app.store.as_ref()).await {
        Ok(s) => s,
        Err(e) => return vec![format!("silences: {e}")],
    };
    let mut logs = Vec::new();
    for s in silences.iter().filter(|s| s.ends_at <= now) {
        if s.settled {
            if s.ends_at + KEEP < now
                && let Err(e) = forget(app, s).await
            {
                logs.push(format!("silence {}: not deleted yet: {e}", s.id));
            }
            continue;
        }
        match settle(app, s, now).await {
            Ok(r) if r.told + r.resolved + r.still_muted + r.waiting > 0 || r.settled => logs.push(format!(
                "silence {} ended: {} told again, {} resolved meanwhile, {} muted by another silence, {} told a newer \
                 version since, {} waiting",
                s.id, r.told, r.resolved, r.still_muted, r.told_since, r.waiting
            )),
            Ok(_) => {}
            Err(e) => logs.push(format!("silence {}: {e}", s.id)),
        }
    }
    logs
}

/// Deals with the end of one silence (see the module docs); safe to run again and on several workers.
pub async fn settle(app: &App, s: &Silence, now: DateTime<Utc>) -> Result<Settled, StoreError> {
    let store = app.store.as_ref();
    let mut report = Settled { silence: s.id.clone(), ..Settled::default() };
    let ended = once(store, &keys::silence_ended(&s.id), LEASE, || async {
        let detail = serde_json::json!({
            "ends_at": s.ends_at, "expired_by": s.expired_by, "comment": s.comment, "when": s.when,
        });
        let record = Record { detail: detail.to_string(), ..Record::new(&s.audit_id(), &s.id, Action::SilenceExpired) };
        audit(app, s, now, record).await;
        Ok::<_, StoreError>(())
    })
    .await?;
    let mut open = matches!(ended, Once::Held | Once::Failed(_));
    for key in store.list(&keys::silence_muted_all(&s.id)).await? {
        let Some(v) = store.get(&key).await? else { continue };
        let Ok(muted) = serde_json::from_slice::<MutedAlert>(&v.value) else { continue };
        for receiver in &muted.receivers {
            let claim = keys::silence_renotify(&s.id, &muted.tenant, &muted.alert, receiver);
            match once(store, &claim, LEASE, || renotify(app, s, &muted, receiver, &claim, now)).await? {
                Once::Done(Told::Sent) => report.told += 1,
                Once::Done(Told::Resolved) => report.resolved += 1,
                Once::Done(Told::StillMuted) => report.still_muted += 1,
                Once::Done(Told::Since) => report.told_since += 1,
                Once::AlreadyDone => {}
                Once::Held => {
                    report.waiting += 1;
                    open = true;
                }
                Once::Failed(e) => {
                    tracing::warn!("re-notification after silence {} waits: {e}", s.id);
                    report.waiting += 1;
                    open = true;
                }
            }
        }
    }
    if !open {
        crate::store::update(store, &keys::silence(&s.id), |current| {
            let Some(mut record) = current.and_then(|v| serde_json::from_slice::<Silence>(v).ok()) else {
                return Change::Keep(());
            };
            if record.settled || record.ends_at > now {
                return Change::Keep(());
            }
            record.settled = true;
            Change::Put(serde_json::to_vec(&record).expect("JSON"), ())
        })
        .await?;
        report.settled = true;
    }
    Ok(report)
}

/// What one re-notification came to.
enum Told {
    Sent,
    Resolved,
    StillMuted,
    Since,
}

/// Tells `receiver` once about an alert `s` muted, if Graph still has it open and nothing mutes it now.
async fn renotify(
    app: &App,
    s: &Silence,
    muted: &MutedAlert,
    receiver: &str,
    claim: &str,
    now: DateTime<Utc>,
) -> Result<Told, NotifyError> {
    let tenant = muted.tenant.as_str();
    let fail = |what: &str, e: String, retry| NotifyError::new(receiver, format!("{what}: {e}"), retry);
    let last_key = keys::notify_last(tenant, &muted.alert, receiver);
    let last = app.store.get(&last_key).await.map_err(|e| fail("store", e.to_string(), Retry::Retryable))?;
    if last.and_then(|v| serde_json::from_slice::<Last>(&v.value).ok()).is_some_and(|l| l.at >= s.ends_at) {
        // A newer version was told since the silence ended: that was the news.
        return Ok(Told::Since);
    }
    let record_of = |alert: &Alert, action: Action, detail: serde_json::Value| Record {
        receiver: Some(receiver.to_string()),
        detail: detail.to_string(),
        ..Record::new(&alert.id, alert.version(), action)
    };
    let append = |record: Record| async move {
        if let Err(e) = app.audit.append(tenant, now, record).await {
            tracing::error!("audit record lost after silence {} ({e})", s.id);
        }
    };
    let current = match app.graph.get_alert(tenant, &muted.alert).await {
        Ok(v) => v,
        Err(e) if e.retry == Retry::Retryable => {
            return Err(fail("reading the alert", e.to_string(), Retry::Retryable));
        }
        // Gone, or no longer readable: there is nothing open to tell.
        Err(e) => {
            tracing::info!("alert {} muted by silence {} cannot be read: {e}", muted.alert, s.id);
            return Ok(Told::Resolved);
        }
    };
    let alert =
        Alert::from_value(current).map_err(|e| fail("the alert Graph returned", e.to_string(), Retry::Permanent))?;
    if alert.status() == AlertStatus::Resolved {
        let detail = serde_json::json!(format!("resolved while silence {} muted it; not told", s.id));
        append(record_of(&alert, Action::NotifySuppressed, detail)).await;
        return Ok(Told::Resolved);
    }
    let target = Delivery { receiver: receiver.to_string(), realert: None, group: None, routes: Vec::new() };
    let other =
        muting(app, tenant, &alert, &target, now).await.map_err(|e| fail("store", e.to_string(), Retry::Retryable))?;
    if let Some(m) = other {
        append(m.record(&alert, receiver, &[])).await;
        return Ok(Told::StillMuted);
    }
    let notifier = app.receivers.get(receiver)?;
    if let Some(budgeted) = notifier.budget()
        && let Some(at) = budget::take(app.store.as_ref(), &budgeted, now)
            .await
            .map_err(|e| fail("store", e.to_string(), Retry::Retryable))?
    {
        return Err(NotifyError::new(receiver, format!("posting budget spent until {at}"), Retry::Retryable));
    }
    let mut view = View::new(tenant, receiver, &alert);
    view.why = "silence ended".to_string();
    let payload = notifier.render(&app.receivers.templates, &view, &alert)?;
    let delivery = hex::encode(&sha2::Sha256::digest(claim.as_bytes())[..16]);
    let kind = notifier.kind();
    match notifier.send(&SendContext::new(app, tenant, now, &delivery), &payload).await {
        Ok(status) => {
            let last = Last { at: now, severity: alert.severity().rank(), status: alert.status().as_str().to_string() };
            if let Err(e) = app.store.put(&last_key, &serde_json::to_vec(&last).expect("JSON")).await {
                tracing::warn!("could not record the realert state at {last_key}: {e}");
            }
            let detail = serde_json::json!({"kind": kind, "why": "silence ended", "silence": s.id});
            append(Record { graph_status: Some(status), ..record_of(&alert, Action::Notify, detail) }).await;
            Ok(Told::Sent)
        }
        Err(e) => {
            let detail = serde_json::json!({"kind": kind, "error": e.message, "retryable": e.retry == Retry::Retryable, "silence": s.id});
            append(record_of(&alert, Action::NotifyFailed, detail)).await;
            Err(e)
        }
    }
}

/// Deletes a settled silence and its list of muted alerts (the claims stay).
async fn forget(app: &App, s: &Silence) -> Result<(), StoreError> {
    let store = app.store.as_ref();
    for key in store.list(&keys::silence_muted_all(&s.id)).await? {
        store.delete(&key).await?;
    }
    store.delete(&keys::silence(&s.id)).await
}
