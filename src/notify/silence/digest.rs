//! Scheduled digests: a receiver or route with `digest: {schedule: "0 0 8 * * *", time_zone: …}`
//! collects what is routed to it and sends it as one message (a Teams card or a mail, with the counts
//! by severity and by source) at each fire time, each alert once.
//!
//! **Collect.** An alert version a receiver would be told about joins the batch of the receiver's next
//! fire time, `digest-batch/{tenant}/{receiver}/{fire}` (compare-and-swap), inside the delivery's
//! notify claim, which completes only after the entry is stored. First its member record
//! `digest-member/…` names the batch, so a redelivery after a crash finds the entry where it went
//! instead of adding it to a later batch too. A batch that is already sealed takes nothing more: the
//! version moves to the next fire time.
//!
//! **Send.** From the poll timer ([`flush_due`]), a due batch is sealed: its entries are split into
//! the messages they need (as many lines as fit the receiver's size rule, the Teams card's 28,000
//! bytes or 200 lines a mail), and the split is stored with the batch, so every retry sends the same
//! messages. Each message is claimed (`digest-send/…/{part}`), takes a slot of the receiver's posting
//! budget and is sent; once its claim is completed it is audited (`notify_digest`, and a `notify`
//! record per alert naming it), and the batch notes that, so a process that dies in between leaves the
//! records to the next run. A kill at any point repeats what was not completed and skips nothing; only
//! a kill between a post and the completion of its claim (no store write lies between them) sends
//! that one message again, the same, since nothing reports a post back.

use std::collections::HashSet;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::alert::Alert;
use crate::app::App;
use crate::audit::{Action, Record};
use crate::graph::Retry;
use crate::notify::view::{Digest, DigestLine, View};
use crate::notify::{Notifier, NotifyError, SendContext, budget};
use crate::rules::Delivery;
use crate::store::{Change, Once, StoreError, keys, once};

/// How long one message's claim is held while it is sent.
const SEND_LEASE: std::time::Duration = std::time::Duration::from_secs(300);
/// How long a sent batch is kept (a redelivered version of a sent batch finds it sealed).
const KEEP_SENT: Duration = Duration::days(7);

/// One alert in a batch: its latest version's line and the notify claims of every version collected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    alert: String,
    claims: Vec<String>,
    version: String,
    routes: Vec<String>,
    line: DigestLine,
}

/// What one scheduled digest collects; `parts` is set when it is sealed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Batch {
    entries: Vec<Entry>,
    #[serde(default)]
    parts: Option<Vec<Vec<String>>>,
    /// The parts whose audit records are written (after their claim completed).
    #[serde(default)]
    audited: Vec<usize>,
    #[serde(default)]
    sent: bool,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Collects `alert` for `target`'s scheduled digest, if it has one: `Ok(true)` when the alert waits in
/// a batch now (its `notify_deferred` record written), `Ok(false)` when the receiver is told at once.
pub async fn collect(
    app: &App,
    tenant: &str,
    alert: &Alert,
    target: &Delivery,
    view: &View,
    claim_key: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(schedule) = app.mute.digest_for(target) else { return Ok(false) };
    let store = app.store.as_ref();
    let receiver = target.receiver.as_str();
    let member = keys::digest_member(tenant, &alert.id, alert.version(), receiver);
    let named = store.get(&member).await?.and_then(|v| String::from_utf8(v.value).ok());
    let mut fire = match named.as_deref().map(DateTime::parse_from_rfc3339) {
        Some(Ok(t)) => t.with_timezone(&Utc),
        _ => match schedule.next_after(now) {
            Some(t) => t,
            None => return Ok(false),
        },
    };
    let mut line = DigestLine::of(view, &now.to_rfc3339_opts(SecondsFormat::Millis, true)).remove(0);
    line.why = view.why.clone();
    let entry = Entry {
        alert: alert.id.clone(),
        claims: vec![claim_key.to_string()],
        version: alert.version().to_string(),
        routes: target.routes.clone(),
        line,
    };
    loop {
        store.put(&member, time(fire).as_bytes()).await?;
        let added = crate::store::update(store, &keys::digest_batch(tenant, receiver, fire), |current| {
            let mut b: Batch = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
            if b.entries.iter().any(|e| e.claims.iter().any(|c| c == claim_key)) {
                return Change::Keep(true);
            }
            if b.parts.is_some() {
                return Change::Keep(false);
            }
            match b.entries.iter_mut().find(|e| e.alert == entry.alert) {
                // A newer version of an alert already collected: one line, the latest.
                Some(e) => {
                    e.claims.push(claim_key.to_string());
                    e.version = entry.version.clone();
                    e.line = entry.line.clone();
                    e.routes = entry.routes.clone();
                }
                None => b.entries.push(entry.clone()),
            }
            Change::Put(serde_json::to_vec(&b).expect("JSON"), true)
        })
        .await?;
        if added {
            break;
        }
        // Sealed before this version got in: the next digest takes it.
        match schedule.next_after(fire) {
            Some(next) => fire = next,
            None => return Ok(false),
        }
    }
    let kind = app.receivers.get(receiver).map(|n| n.kind()).unwrap_or("unknown");
    let detail = serde_json::json!({"kind": kind, "digest": time(fire), "schedule": schedule.text}).to_string();
    let record = Record {
        receiver: Some(receiver.to_string()),
        detail,
        ..Record::new(&alert.id, alert.version(), Action::NotifyDeferred)
    };
    if let Err(e) = app.audit.append(tenant, now, record).await {
        tracing::error!("audit record lost for alert {} ({e})", alert.id);
    }
    Ok(true)
}

/// Sends every scheduled digest that is due, for every tenant and receiver; a log line per digest sent
/// or failed.
pub async fn flush_due(app: &App, now: DateTime<Utc>) -> Vec<String> {
    let mut logs = Vec::new();
    let receivers = app.mute.digest_receivers(&app.config);
    for tenant in &app.config.tenants {
        for receiver in &receivers {
            match flush(app, &tenant.name, receiver, now).await {
                Ok(sent) => logs.extend(sent),
                Err(e) => logs.push(format!("{}/{receiver}: scheduled digest failed: {e}", tenant.name)),
            }
        }
    }
    logs
}

/// Why a digest was not sent (yet).
#[derive(Debug, thiserror::Error)]
enum FlushError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Notify(#[from] NotifyError),
}

async fn flush(app: &App, tenant: &str, receiver: &str, now: DateTime<Utc>) -> Result<Vec<String>, FlushError> {
    let store = app.store.as_ref();
    let mut logs = Vec::new();
    for key in store.list(&keys::digest_batches(tenant, receiver)).await? {
        let Some(fire) = key.rsplit('/').next().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else { continue };
        let fire = fire.with_timezone(&Utc);
        if fire > now {
            continue;
        }
        let Some(v) = store.get(&key).await? else { continue };
        let batch: Batch = serde_json::from_slice(&v.value).unwrap_or_default();
        if batch.sent {
            if fire + KEEP_SENT < now {
                store.delete(&key).await?;
            }
            continue;
        }
        let (alerts, messages) = send_batch(app, tenant, receiver, &key, fire, now).await?;
        if messages > 0 {
            logs.push(format!(
                "{tenant}/{receiver}: scheduled digest of {} sent: {alerts} alerts in {messages} messages",
                time(fire)
            ));
        }
    }
    Ok(logs)
}

/// Seals (once) and sends one due batch, message by message; returns the alerts and messages sent now.
async fn send_batch(
    app: &App,
    tenant: &str,
    receiver: &str,
    key: &str,
    fire: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(usize, usize), FlushError> {
    let store = app.store.as_ref();
    let notifier = app.receivers.get(receiver)?;
    let schedule = schedule_words(app, receiver);
    let batch = seal(app, notifier, receiver, key, &schedule).await?;
    let parts = batch.parts.clone().unwrap_or_default();
    let (mut alerts, mut messages) = (0, 0);
    for (k, claims) in parts.iter().enumerate() {
        let entries: Vec<&Entry> =
            claims.iter().filter_map(|c| batch.entries.iter().find(|e| e.claims.first() == Some(c))).collect();
        let more: usize = parts[k + 1..].iter().map(Vec::len).sum();
        let claim = keys::digest_send(tenant, receiver, fire, k);
        let part =
            Part { tenant, receiver, fire, index: k, entries: &entries, more, schedule: &schedule, claim: &claim };
        // Only the post runs inside the claim, so that nothing but the post itself lies between the
        // post and the claim's completion; the audit records follow, marked in the batch once written.
        let status = match once(store, &claim, SEND_LEASE, || send_part(app, notifier, &part, now)).await? {
            Once::Done(status) => {
                alerts += entries.len();
                messages += 1;
                Some(status)
            }
            Once::AlreadyDone if batch.audited.contains(&k) => continue,
            // Sent, by a process that died before its audit records were written.
            Once::AlreadyDone => None,
            // Another worker sends it now; the messages after it wait for the next run.
            Once::Held => return Ok((alerts, messages)),
            Once::Failed(e) => return Err(e.into()),
        };
        audit_part(app, notifier.kind(), &part, status, now).await;
        mark(store, key, |b| {
            if !b.audited.contains(&k) {
                b.audited.push(k);
            }
        })
        .await?;
    }
    mark(store, key, |b| b.sent = true).await?;
    Ok((alerts, messages))
}

/// Changes the batch at `key` by compare-and-swap.
async fn mark(store: &dyn crate::store::Store, key: &str, change: impl Fn(&mut Batch)) -> Result<(), StoreError> {
    crate::store::update(store, key, |current| {
        let mut b: Batch = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        let before = b.clone();
        change(&mut b);
        if b == before {
            return Change::Keep(());
        }
        Change::Put(serde_json::to_vec(&b).expect("JSON"), ())
    })
    .await
}

/// The schedule of `receiver`'s digests in words, for the message.
fn schedule_words(app: &App, receiver: &str) -> String {
    let target = Delivery {
        receiver: receiver.to_string(),
        realert: None,
        group: None,
        routes: app
            .config
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.receivers.iter().any(|n| n == receiver))
            .map(|(i, r)| r.name.clone().unwrap_or(format!("routes[{i}]")))
            .collect(),
    };
    app.mute.digest_for(&target).map(|s| s.words()).unwrap_or_default()
}

/// Seals the batch at `key` (if it is not sealed yet): its entries, highest severity first then
/// oldest, split into the messages the receiver needs.
async fn seal(
    app: &App,
    notifier: &dyn Notifier,
    receiver: &str,
    key: &str,
    schedule: &str,
) -> Result<Batch, FlushError> {
    let store = app.store.as_ref();
    for _ in 0..crate::store::CAS_ATTEMPTS {
        let Some(v) = store.get(key).await? else { return Ok(Batch::default()) };
        let batch: Batch = serde_json::from_slice(&v.value).unwrap_or_default();
        if batch.parts.is_some() {
            return Ok(batch);
        }
        let parts = split(app, notifier, receiver, &batch.entries, schedule)?;
        let mut sealed = batch.clone();
        sealed.parts = Some(parts);
        let bytes = serde_json::to_vec(&sealed).expect("JSON");
        match store.put_if(key, &bytes, crate::store::Precondition::Matches(v.etag)).await {
            Ok(_) => return Ok(sealed),
            // An entry joined (or another worker sealed it) since it was read: split again.
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Backend(format!("{key} kept changing while it was sealed")).into())
}

/// The messages `entries` need, each a list of the entries' first claims.
fn split(
    app: &App,
    notifier: &dyn Notifier,
    receiver: &str,
    entries: &[Entry],
    schedule: &str,
) -> Result<Vec<Vec<String>>, NotifyError> {
    let mut rest: Vec<&Entry> = entries.iter().collect();
    rest.sort_by(|a, b| b.line.rank().cmp(&a.line.rank()).then_with(|| a.line.since.cmp(&b.line.since)));
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let lines: Vec<DigestLine> = rest.iter().map(|e| e.line.clone()).collect();
        // Rendered with the most "and N more" text any of its messages can carry.
        let mut digest = Digest::scheduled(receiver, lines, entries.len(), schedule);
        notifier.render_digest(&app.receivers.templates, &mut digest)?;
        let kept: HashSet<&str> = digest.lines.iter().map(|l| l.id.as_str()).collect();
        let n = rest.iter().take_while(|e| kept.contains(e.line.id.as_str())).count().max(1);
        parts.push(rest.drain(..n).map(|e| e.claims[0].clone()).collect());
    }
    Ok(parts)
}

/// One message of a sealed batch.
struct Part<'a> {
    tenant: &'a str,
    receiver: &'a str,
    fire: DateTime<Utc>,
    index: usize,
    entries: &'a [&'a Entry],
    more: usize,
    schedule: &'a str,
    claim: &'a str,
}

impl Part<'_> {
    /// The audit id of this message (`digest-{receiver}-{fire}-{part}`).
    fn id(&self) -> String {
        format!("digest-{}-{}-{}", self.receiver, self.fire.format("%Y%m%dT%H%M%SZ"), self.index)
    }
}

/// Takes a budget slot, renders and sends one message of a digest; returns the receiver's status. A
/// failure is audited here (the claim is given back and the next run tries again).
async fn send_part(
    app: &App,
    notifier: &dyn Notifier,
    part: &Part<'_>,
    now: DateTime<Utc>,
) -> Result<u16, NotifyError> {
    let receiver = part.receiver;
    let store_err = |e: StoreError| NotifyError::new(receiver, format!("store: {e}"), Retry::Retryable);
    if let Some(budgeted) = notifier.budget()
        && let Some(at) = budget::take(app.store.as_ref(), &budgeted, now).await.map_err(store_err)?
    {
        return Err(NotifyError::new(
            receiver,
            format!("posting budget spent until {}; the digest goes out then", time(at)),
            Retry::Retryable,
        ));
    }
    let lines: Vec<DigestLine> = part.entries.iter().map(|e| e.line.clone()).collect();
    let count = lines.len();
    let mut digest = Digest::scheduled(receiver, lines, part.more, part.schedule);
    let rendered = notifier.render_digest(&app.receivers.templates, &mut digest).and_then(|payload| {
        if digest.count < count {
            return Err(NotifyError::new(
                receiver,
                format!("a digest of {count} alerts no longer fits ({} do)", digest.count),
                Retry::Permanent,
            ));
        }
        Ok(payload)
    });
    let delivery = hex::encode(&sha2::Sha256::digest(part.claim.as_bytes())[..16]);
    let result = match rendered {
        Ok(payload) => notifier.send(&SendContext::new(app, part.tenant, now, &delivery), &payload.into()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        let ids: Vec<&str> = part.entries.iter().map(|e| e.alert.as_str()).collect();
        let detail = serde_json::json!({
            "kind": notifier.kind(), "error": e.message, "retryable": e.retry == Retry::Retryable, "alerts": ids,
        });
        let record = Record {
            receiver: Some(receiver.to_string()),
            detail: detail.to_string(),
            ..Record::new(&part.id(), &time(part.fire), Action::NotifyFailed)
        };
        append(app, part, now, record).await;
    }
    result
}

/// The audit records of a sent message: `notify_digest` listing its alerts, and a `notify` record per
/// alert naming it. `status` is `None` when the process that sent it died before it could record it.
async fn audit_part(app: &App, kind: &str, part: &Part<'_>, status: Option<u16>, now: DateTime<Utc>) {
    let ids: Vec<&str> = part.entries.iter().map(|e| e.alert.as_str()).collect();
    let id = part.id();
    let detail = serde_json::json!({
        "kind": kind, "scheduled": part.schedule, "count": ids.len(), "alerts": ids,
    });
    let record = Record {
        receiver: Some(part.receiver.to_string()),
        graph_status: status,
        detail: detail.to_string(),
        ..Record::new(&id, &time(part.fire), Action::NotifyDigest)
    };
    append(app, part, now, record).await;
    for e in part.entries {
        let detail = serde_json::json!({"kind": kind, "why": e.line.why, "routes": e.routes, "digest": id});
        let record = Record {
            receiver: Some(part.receiver.to_string()),
            graph_status: status,
            detail: detail.to_string(),
            ..Record::new(&e.alert, &e.version, Action::Notify)
        };
        append(app, part, now, record).await;
    }
}

/// Appends one record to the tenant's audit trail; a lost record is logged.
async fn append(app: &App, part: &Part<'_>, now: DateTime<Utc>, record: Record) {
    if let Err(e) = app.audit.append(part.tenant, now, record).await {
        tracing::error!("audit record of {} lost ({e})", part.id());
    }
}
