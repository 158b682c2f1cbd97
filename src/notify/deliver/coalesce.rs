//! Coalesce: a receiver with a posting budget ([`crate::notify::budget`]) takes a slot before each
//! send. An alert that finds the budget spent, or others already waiting, joins the receiver's pending
//! list in the store with its claim completed (it is held there, durably), and what waits goes out in
//! one digest as soon as a slot is free: taken by the next delivery to the receiver, or by the poll
//! timer ([`flush`]). Nothing sleeps: a delivery that cannot send leaves its alert in the list and
//! returns.
//!
//! A digest is an effect like a notification: claimed (`notify-digest/…`), sent, completed, audited
//! with every alert it carries. The pending record holds the digest in flight together with its
//! alerts, so no alert is in two digests, and a crash between send and complete repeats only that
//! digest, once its claim's lease has run out (and a slot is free).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::claim::SEND_LEASE;
use super::{record, send};
use crate::app::App;
use crate::graph::Retry;
use crate::notify::budget::{self, Budgeted};
use crate::notify::view::{Digest, DigestLine};
use crate::notify::{Notifier, NotifyError};
use crate::store::{Change, Claim, Store, StoreError, keys};

/// One alert version (with the alerts grouped into its message) waiting for a digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Waiting {
    /// The alert version's notify claim (its identity in the list).
    pub claim: String,
    /// The alert version (`lastUpdateDateTime`).
    pub version: String,
    /// The routes that chose the receiver.
    pub routes: Vec<String>,
    /// Its line, then its grouped alerts' lines.
    pub lines: Vec<DigestLine>,
}

impl Waiting {
    fn rank(&self) -> u8 {
        self.lines.iter().map(DigestLine::rank).max().unwrap_or(0)
    }

    fn since(&self) -> &str {
        self.lines.first().map(|l| l.since.as_str()).unwrap_or("")
    }
}

/// A digest being sent, with the alerts it carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InFlight {
    id: String,
    started: DateTime<Utc>,
    entries: Vec<Waiting>,
}

/// What waits for one receiver of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Pending {
    waiting: Vec<Waiting>,
    digest: Option<InFlight>,
}

fn pending_key(tenant: &str, receiver: &str) -> String {
    keys::notify_pending(tenant, receiver)
}

fn digest_key(tenant: &str, receiver: &str, id: &str) -> String {
    keys::notify_digest(tenant, receiver, id)
}

async fn read(store: &dyn Store, pk: &str) -> Result<Pending, StoreError> {
    Ok(store.get(pk).await?.and_then(|v| serde_json::from_slice(&v.value).ok()).unwrap_or_default())
}

/// Changes the pending record by compare-and-swap; `change` answers `None` to leave it as it is.
async fn update<T>(
    store: &dyn Store,
    pk: &str,
    mut change: impl FnMut(&mut Pending) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    crate::store::update(store, pk, |current| {
        let mut pending: Pending = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        match change(&mut pending) {
            Some(answer) => Change::Put(serde_json::to_vec(&pending).expect("JSON"), Some(answer)),
            None => Change::Keep(None),
        }
    })
    .await
}

/// Completes the notify claim of a waiting alert whose delivery crashed right after it joined the list
/// (its lease ran out, so the claim is free); a live delivery completes its own claim.
async fn settle_claim(store: &dyn Store, key: &str) -> Result<(), StoreError> {
    if let Claim::Acquired(token) = store.claim(key, SEND_LEASE).await? {
        store.complete(key, &token).await?;
    }
    Ok(())
}

/// Whether a budgeted receiver may send one alert's own message now: nothing waits for it and a slot
/// was taken. Otherwise the alert is to [`wait`].
pub(super) async fn slot_for_one(
    store: &dyn Store,
    tenant: &str,
    receiver: &str,
    budgeted: &Budgeted,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let pending = read(store, &pending_key(tenant, receiver)).await?;
    if !pending.waiting.is_empty() || pending.digest.is_some() {
        return Ok(false);
    }
    Ok(budget::take(store, budgeted, now).await?.is_none())
}

/// Puts an alert version in the pending list of `receiver`, once (a redelivered message finds it there,
/// waiting or in the digest in flight).
pub(super) async fn wait(store: &dyn Store, tenant: &str, receiver: &str, entry: Waiting) -> Result<(), StoreError> {
    update(store, &pending_key(tenant, receiver), |p| {
        let listed = |w: &Waiting| w.claim == entry.claim;
        let known = p.waiting.iter().any(listed) || p.digest.as_ref().is_some_and(|d| d.entries.iter().any(listed));
        (!known).then(|| p.waiting.push(entry.clone()))
    })
    .await
    .map(|_| ())
}

/// What [`drain`] sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drained {
    /// Digests sent.
    pub digests: usize,
    /// Alerts they carried.
    pub alerts: usize,
    /// Alerts still waiting.
    pub waiting: usize,
    /// When the budget has a slot again, if it was spent with alerts waiting.
    pub next: Option<DateTime<Utc>>,
}

/// Sends what waits for `receiver` of `tenant`: one digest per free slot until nothing waits, the
/// budget is spent, or another worker is sending one. A failed digest puts its alerts back.
pub async fn drain(app: &App, tenant: &str, receiver: &str) -> Result<Drained, NotifyError> {
    let store = app.store.as_ref();
    let store_err = |e: StoreError| NotifyError::new(receiver, format!("store: {e}"), Retry::Retryable);
    let notifier = app.receivers.get(receiver)?;
    let Some(budgeted) = notifier.budget() else { return Ok(Drained::default()) };
    let pk = pending_key(tenant, receiver);
    let mut drained = Drained::default();
    loop {
        let now = app.clock.now();
        let pending = read(store, &pk).await.map_err(store_err)?;
        drained.waiting = lines(&pending.waiting);
        let (id, entries, more, token) = match pending.digest {
            // A digest in flight: its sender is at it, or crashed and its lease ran out.
            Some(d) => {
                let dk = digest_key(tenant, receiver, &d.id);
                let token = match store.claim(&dk, SEND_LEASE).await.map_err(store_err)? {
                    Claim::Held => return Ok(drained),
                    Claim::Done => {
                        // Sent, but the record was not cleared.
                        clear(store, &pk, &d.id).await.map_err(store_err)?;
                        continue;
                    }
                    Claim::Acquired(token) => token,
                };
                if let Some(at) = budget::take(store, &budgeted, now).await.map_err(store_err)? {
                    store.release(&dk, &token).await.map_err(store_err)?;
                    drained.next = Some(at);
                    return Ok(drained);
                }
                (d.id, d.entries, drained.waiting, token)
            }
            None if pending.waiting.is_empty() => return Ok(drained),
            None => {
                if let Some(at) = budget::take(store, &budgeted, now).await.map_err(store_err)? {
                    drained.next = Some(at);
                    return Ok(drained);
                }
                let carried = fitting(app, notifier, receiver, pending.waiting)?;
                let id = uuid::Uuid::new_v4().simple().to_string();
                let started = update(store, &pk, |p| {
                    // Another worker put a digest in flight, or took some of these alerts: start over.
                    let present = carried.iter().all(|c| p.waiting.iter().any(|w| w.claim == c.claim));
                    if p.digest.is_some() || !present {
                        return None;
                    }
                    p.waiting.retain(|w| !carried.iter().any(|c| c.claim == w.claim));
                    p.digest = Some(InFlight { id: id.clone(), started: now, entries: carried.clone() });
                    Some(())
                })
                .await
                .map_err(store_err)?;
                if started.is_none() {
                    continue;
                }
                let dk = digest_key(tenant, receiver, &id);
                let Claim::Acquired(token) = store.claim(&dk, SEND_LEASE).await.map_err(store_err)? else {
                    continue;
                };
                let more = drained.waiting - lines(&carried);
                (id, carried, more, token)
            }
        };
        let sent = send_digest(app, notifier, tenant, receiver, &id, &entries, more).await;
        let dk = digest_key(tenant, receiver, &id);
        match sent {
            Ok(carried) => {
                store.complete(&dk, &token).await.map_err(store_err)?;
                for w in &entries {
                    settle_claim(store, &w.claim).await.map_err(store_err)?;
                }
                clear(store, &pk, &id).await.map_err(store_err)?;
                drained.digests += 1;
                drained.alerts += carried;
            }
            Err(e) => {
                let failed = update(store, &pk, |p| {
                    let d = p.digest.take_if(|d| d.id == id)?;
                    p.waiting.splice(0..0, d.entries);
                    Some(())
                })
                .await;
                store.release(&dk, &token).await.map_err(store_err)?;
                failed.map_err(store_err)?;
                return Err(e);
            }
        }
    }
}

/// How many alerts `entries` tell.
fn lines(entries: &[Waiting]) -> usize {
    entries.iter().map(|w| w.lines.len()).sum()
}

/// The waiting entries the next digest carries, highest severity first then oldest: as many as the
/// receiver's message holds.
fn fitting(
    app: &App,
    notifier: &dyn Notifier,
    receiver: &str,
    mut waiting: Vec<Waiting>,
) -> Result<Vec<Waiting>, NotifyError> {
    waiting.sort_by(|a, b| b.rank().cmp(&a.rank()).then_with(|| a.since().cmp(b.since())));
    let mut digest = Digest::new(receiver, waiting.iter().flat_map(|w| w.lines.clone()).collect(), 0);
    notifier.render_digest(&app.receivers.templates, &mut digest)?;
    let kept: std::collections::HashSet<(&str, &str)> =
        digest.lines.iter().map(|l| (l.tenant.as_str(), l.id.as_str())).collect();
    let mut carried: Vec<Waiting> = Vec::new();
    for w in &waiting {
        if w.lines.iter().all(|l| kept.contains(&(l.tenant.as_str(), l.id.as_str()))) {
            carried.push(w.clone());
        }
    }
    if carried.is_empty() {
        carried.push(waiting[0].clone());
    }
    Ok(carried)
}

/// Renders and sends one digest of `entries`, and audits it: a `notify_digest` record listing every
/// alert, and a `notify` record per entry's alert naming the digest. Returns how many alerts it carried.
async fn send_digest(
    app: &App,
    notifier: &dyn Notifier,
    tenant: &str,
    receiver: &str,
    id: &str,
    entries: &[Waiting],
    more: usize,
) -> Result<usize, NotifyError> {
    let now = app.clock.now();
    let lines: Vec<DigestLine> = entries.iter().flat_map(|w| w.lines.clone()).collect();
    let count = lines.len();
    let mut digest = Digest::new(receiver, lines, more);
    let result = match notifier.render_digest(&app.receivers.templates, &mut digest) {
        Ok(_) if digest.count < count => Err(NotifyError::new(
            receiver,
            format!("a digest of {count} alerts no longer fits ({} do)", digest.count),
            Retry::Permanent,
        )),
        Ok(payload) => send::send(app, notifier, tenant, &payload.into(), now, &digest_key(tenant, receiver, id)).await,
        Err(e) => Err(e),
    };
    let ids: Vec<&str> = digest.lines.iter().map(|l| l.id.as_str()).collect();
    match result {
        Ok(status) => {
            record::append(app, tenant, now, record::digest(id, receiver, notifier.kind(), &ids, status)).await;
            // The alerts grouped into an entry's message have their `notify_grouped` records already.
            for w in entries {
                let r = record::in_digest(&w.lines[0], &w.version, &w.routes, receiver, notifier.kind(), id, status);
                record::append(app, tenant, now, r).await;
            }
            Ok(count)
        }
        Err(e) => {
            record::append(app, tenant, now, record::digest_failed(id, receiver, notifier.kind(), &ids, &e)).await;
            Err(e)
        }
    }
}

/// Clears digest `id` from the pending record once it was sent.
async fn clear(store: &dyn Store, pk: &str, id: &str) -> Result<(), StoreError> {
    update(store, pk, |p| p.digest.take_if(|d| d.id == id).map(|_| ())).await.map(|_| ())
}

/// Sends what waits for every budgeted receiver of every tenant (the poll timer calls this, so that
/// alerts waiting for a budget go out even when no other alert comes). Returns a log line per
/// receiver that sent or failed.
pub async fn flush(app: &App) -> Vec<String> {
    let mut logs = Vec::new();
    for tenant in &app.config.tenants {
        for (name, notifier) in &app.receivers.by_name {
            if notifier.budget().is_none() {
                continue;
            }
            match drain(app, &tenant.name, name).await {
                Ok(d) if d.digests > 0 || d.waiting > 0 => logs.push(format!(
                    "{}/{name}: {} digests with {} alerts sent, {} waiting",
                    tenant.name, d.digests, d.alerts, d.waiting
                )),
                Ok(_) => {}
                Err(e) => logs.push(format!("{}/{name}: digest failed: {e}", tenant.name)),
            }
        }
    }
    logs
}
