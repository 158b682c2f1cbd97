//! The notify half of the pipeline: each receiver of the matched routes gets the alert once.
//!
//! For every receiver, in order: **claim** `notify/{tenant}/{alert id}/{version}/{receiver}` in the store
//! (already done → skip; held by another worker → retry later) → **decide** whether to tell it again
//! (`realert`) and whether it rides in another alert's message (`group_by_incident`) → **send** → on
//! success complete the claim, on failure release it → **record** an audit entry either way. A failing
//! receiver never blocks the others: all are attempted, then the message is retried (or set aside when
//! no retry can help) for the ones that failed, whose claims were released. After every receiver
//! succeeded, the routes' `set:` updates run, each claimed once like a send and never applied to an alert
//! that someone changed since secmon read it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::RespondError;
use crate::alert::{Alert, AlertStatus};
use crate::app::App;
use crate::audit::{Action, Record};
use crate::graph::{AlertUpdate, Retry};
use crate::notify::view::{Member, View};
use crate::notify::{NotifyError, Payload, Receiver, Receivers, StatusUpdate};
use crate::rules::{Delivery, Update};
use crate::store::{Claim, Precondition, Store, StoreError};

/// How long a claim is held while its send runs; a crash lets a retry claim again after it.
const SEND_LEASE: Duration = Duration::from_secs(300);
/// A grouping record whose leader never finished is taken over after this long.
const STALE_GROUP: chrono::Duration = chrono::Duration::hours(1);

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
    /// Routes whose `set:` update was applied to the alert.
    pub updated: Vec<String>,
}

/// Tells each receiver of `deliveries` about one alert version, then applies the routes' `updates`.
pub async fn deliver(
    app: &App,
    tenant: &str,
    alert: &Alert,
    deliveries: &[Delivery],
    updates: &[Update],
) -> Result<Delivered, RespondError> {
    let receivers = Receivers::for_config(&app.config).map_err(|issues| {
        let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        RespondError::Retry(format!("the receivers in the config do not build: {}", text.join("; ")))
    })?;
    let mut done = Delivered::default();
    let mut failures: Vec<NotifyError> = Vec::new();
    let mut held = Vec::new();
    for target in deliveries {
        let claim_key = key(&["notify", tenant, &alert.id, alert.version(), &target.receiver]);
        match app.store.claim(&claim_key, SEND_LEASE + target.group.unwrap_or_default()).await.map_err(store)? {
            Claim::Done => done.already.push(target.receiver.clone()),
            Claim::Held => held.push(target.receiver.clone()),
            Claim::Acquired => match notify_one(app, &receivers, tenant, alert, target, &claim_key).await {
                Ok(Outcome::Sent) => done.sent.push(target.receiver.clone()),
                Ok(Outcome::Suppressed) => done.suppressed.push(target.receiver.clone()),
                Ok(Outcome::Grouped) => done.grouped.push(target.receiver.clone()),
                Err(e) => {
                    // Give the claim back so the retry sends; the audit record says what happened.
                    app.store.release(&claim_key).await.map_err(store)?;
                    failures.push(e);
                }
            },
        }
    }
    if !failures.is_empty() || !held.is_empty() {
        let mut parts: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
        if !held.is_empty() {
            parts.push(format!("being delivered by another worker: {}", held.join(", ")));
        }
        let summary = format!("alert {}: notification failed for {}", alert.id, parts.join("; "));
        let hopeless = held.is_empty() && failures.iter().all(|e| e.retry == Retry::Permanent);
        return Err(if hopeless { RespondError::Malformed(summary) } else { RespondError::Retry(summary) });
    }
    for Update { route, set } in updates {
        if apply_update(app, tenant, alert, route, set).await? {
            done.updated.push(route.clone());
        }
    }
    Ok(done)
}

enum Outcome {
    Sent,
    Suppressed,
    Grouped,
}

/// Decides, sends and records for one claimed receiver. The caller releases the claim on error.
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
    let last_key = key(&["notify-last", tenant, &alert.id, name]);
    let last: Option<Last> =
        app.store.get(&last_key).await.map_err(store_err)?.and_then(|v| serde_json::from_slice(&v.value).ok());
    let why = match realert(last.as_ref(), alert, now, target.realert) {
        Ok(why) => why,
        Err(reason) => {
            app.store.complete(claim_key).await.map_err(store_err)?;
            audit(app, tenant, now, suppressed(alert, name, reason)).await;
            return Ok(Outcome::Suppressed);
        }
    };
    let mut view = View::new(tenant, name, alert);
    view.why = why.to_string();
    view.routes = target.routes.clone();

    let incident = alert.incident_id.clone().filter(|i| !i.is_empty() && !alert.id.starts_with("secmon-"));
    let mut group_key = None;
    if let (Some(window), Some(incident)) = (target.group, incident) {
        let gk = key(&["notify-group", tenant, name, &incident]);
        match join(app.store.as_ref(), &gk, view.member(), now, window).await.map_err(store_err)? {
            Joined::Member { leader } => {
                app.store.complete(claim_key).await.map_err(store_err)?;
                remember(app, &last_key, alert, now).await;
                audit(app, tenant, now, grouped(alert, name, &leader)).await;
                return Ok(Outcome::Grouped);
            }
            Joined::Lead { closes } => {
                // Wait out the window so that the incident's other alerts can join this message.
                let wait = (closes - now).to_std().unwrap_or_default();
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                view.group = close(app.store.as_ref(), &gk, &alert.id).await.map_err(store_err)?;
                group_key = Some(gk);
            }
            Joined::Alone => {}
        }
    }

    let receiver = receivers
        .by_name
        .get(name)
        .ok_or_else(|| NotifyError::new(name, "no such receiver in the config", Retry::Permanent))?;
    let result = match receiver.render(&receivers.templates, &view, alert.raw()) {
        Ok(payload) => send(app, receiver, name, tenant, payload, now, claim_key).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(status) => {
            app.store.complete(claim_key).await.map_err(store_err)?;
            remember(app, &last_key, alert, now).await;
            if let Some(gk) = group_key {
                mark_sent(app.store.as_ref(), &gk, &alert.id).await;
            }
            audit(app, tenant, now, sent(alert, name, receiver.kind(), &view, &target.routes, status)).await;
            Ok(Outcome::Sent)
        }
        Err(e) => {
            audit(app, tenant, now, failed(alert, name, receiver.kind(), &e)).await;
            Err(e)
        }
    }
}

/// Sends a rendered payload; returns the HTTP status (202 for mail accepted by Graph).
async fn send(
    app: &App,
    receiver: &Receiver,
    name: &str,
    tenant: &str,
    payload: Payload,
    now: DateTime<Utc>,
    claim_key: &str,
) -> Result<u16, NotifyError> {
    match (receiver, payload) {
        (Receiver::Teams(t), Payload::Teams(message)) => t.send(&app.http, &message).await,
        (Receiver::Email(e), Payload::Email(body)) => {
            let slot = crate::notify::email::book_slot(app.store.as_ref(), &e.from, now)
                .await
                .map_err(|err| NotifyError::new(name, format!("store: {err}"), Retry::Retryable))?;
            match slot {
                Some(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
                Some(_) => {}
                None => {
                    return Err(NotifyError::new(
                        name,
                        format!("{} has used its Exchange sending limit for the next minutes", e.from),
                        Retry::Retryable,
                    ));
                }
            }
            e.send(app.graph.as_ref(), tenant, &body).await.map(|()| 202)
        }
        (Receiver::Webhook(w), Payload::Webhook(body)) => {
            let delivery = hex::encode(&Sha256::digest(claim_key.as_bytes())[..16]);
            w.send(&app.http, body, now, &delivery).await
        }
        _ => Err(NotifyError::new(name, "payload does not fit the receiver", Retry::Permanent)),
    }
}

/// What secmon last told a receiver about an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Last {
    /// When.
    pub at: DateTime<Utc>,
    /// The severity rank then.
    pub severity: u8,
    /// The status then.
    pub status: String,
}

/// Why an alert is told (again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Never told before.
    New,
    /// Its severity rose since.
    SeverityRose,
    /// It was resolved and is open again.
    Reopened,
    /// The route's `realert` interval passed.
    Reminder,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::New => "new",
            Why::SeverityRose => "severity rose",
            Why::Reopened => "reopened",
            Why::Reminder => "reminder",
        })
    }
}

/// Whether to tell a receiver about this alert version, given what it was last told: yes when it is
/// new, its severity rose, it was reopened, or `interval` has passed; otherwise the reason not to.
pub fn realert(
    last: Option<&Last>,
    alert: &Alert,
    now: DateTime<Utc>,
    interval: Option<Duration>,
) -> Result<Why, String> {
    let Some(last) = last else { return Ok(Why::New) };
    if alert.severity().rank() > last.severity {
        return Ok(Why::SeverityRose);
    }
    if last.status == AlertStatus::Resolved.as_str() && alert.status() != AlertStatus::Resolved {
        return Ok(Why::Reopened);
    }
    if let Some(interval) = interval
        && now - last.at >= chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX)
    {
        return Ok(Why::Reminder);
    }
    Err(format!(
        "told at {} and nothing rose since{}",
        last.at.to_rfc3339(),
        interval.map(|i| format!(" (realert after {})", humantime::format_duration(i))).unwrap_or_default()
    ))
}

async fn remember(app: &App, last_key: &str, alert: &Alert, now: DateTime<Utc>) {
    let last = Last { at: now, severity: alert.severity().rank(), status: alert.status().as_str().to_string() };
    if let Err(e) = app.store.put(last_key, &serde_json::to_vec(&last).expect("JSON")).await {
        // Losing this only means the next version may be told once more; never fail a sent message.
        tracing::warn!("could not record the realert state at {last_key}: {e}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupState {
    Open,
    Closed,
    Sent,
}

/// The alerts of one incident collected into one message for one receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    leader: String,
    closes: DateTime<Utc>,
    state: GroupState,
    members: Vec<Member>,
}

/// Where an alert stands in its incident's group.
#[derive(Debug, Clone, PartialEq)]
enum Joined {
    /// It sends the group's message when the window closes.
    Lead { closes: DateTime<Utc> },
    /// It is told in the leader's message.
    Member { leader: String },
    /// The group is past joining and its leader has not finished: tell it on its own.
    Alone,
}

async fn join(
    store: &dyn Store,
    key: &str,
    me: Member,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Joined, StoreError> {
    loop {
        let current = store.get(key).await?;
        let group: Option<Group> = current.as_ref().and_then(|v| serde_json::from_slice(&v.value).ok());
        let (next, answer) = match &group {
            Some(g) if g.leader == me.id => return Ok(Joined::Lead { closes: g.closes }),
            Some(g) if g.members.iter().any(|m| m.id == me.id) => {
                return Ok(Joined::Member { leader: g.leader.clone() });
            }
            Some(g) if g.state == GroupState::Open && now < g.closes => {
                let mut g = g.clone();
                g.members.push(me.clone());
                let leader = g.leader.clone();
                (g, Joined::Member { leader })
            }
            Some(g) if g.state != GroupState::Sent && now < g.closes + STALE_GROUP => return Ok(Joined::Alone),
            _ => {
                let closes = now + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::zero());
                let g = Group { leader: me.id.clone(), closes, state: GroupState::Open, members: Vec::new() };
                (g, Joined::Lead { closes })
            }
        };
        let cond = match current {
            Some(v) => Precondition::Matches(v.etag),
            None => Precondition::Absent,
        };
        match store.put_if(key, &serde_json::to_vec(&next).expect("JSON"), cond).await {
            Ok(_) => return Ok(answer),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Closes the group led by `leader` to new members and returns its members.
async fn close(store: &dyn Store, key: &str, leader: &str) -> Result<Vec<Member>, StoreError> {
    loop {
        let Some(current) = store.get(key).await? else { return Ok(Vec::new()) };
        let Ok(mut g) = serde_json::from_slice::<Group>(&current.value) else { return Ok(Vec::new()) };
        if g.leader != leader || g.state != GroupState::Open {
            return Ok(if g.leader == leader { g.members } else { Vec::new() });
        }
        g.state = GroupState::Closed;
        match store.put_if(key, &serde_json::to_vec(&g).expect("JSON"), Precondition::Matches(current.etag)).await {
            Ok(_) => return Ok(g.members),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn mark_sent(store: &dyn Store, key: &str, leader: &str) {
    let result = async {
        let Some(current) = store.get(key).await? else { return Ok(()) };
        let Ok(mut g) = serde_json::from_slice::<Group>(&current.value) else { return Ok(()) };
        if g.leader == leader {
            g.state = GroupState::Sent;
            store.put_if(key, &serde_json::to_vec(&g).expect("JSON"), Precondition::Matches(current.etag)).await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    if let Err(e) = result {
        // The group is taken over once stale; until then later alerts of the incident go alone.
        tracing::warn!("could not mark the group at {key} as sent: {e}");
    }
}

/// Applies a route's `set:` once per alert version. Returns whether the alert was changed.
async fn apply_update(
    app: &App,
    tenant: &str,
    alert: &Alert,
    route: &str,
    update: &StatusUpdate,
) -> Result<bool, RespondError> {
    let now = app.clock.now();
    let claim_key = key(&["update", tenant, &alert.id, alert.version(), route]);
    match app.store.claim(&claim_key, SEND_LEASE).await.map_err(store)? {
        Claim::Done => return Ok(false),
        Claim::Held => return Err(RespondError::Retry(format!("update of {} by {route} is in progress", alert.id))),
        Claim::Acquired => {}
    }
    let outcome = async {
        let current = app.graph.get_alert(tenant, &alert.id).await?;
        let current_alert = Alert::from_value(current).ok();
        let seen = current_alert.as_ref().map(|a| a.version().to_string()).unwrap_or_default();
        if seen != alert.version() {
            return Ok((
                None,
                format!("changed since secmon read it (lastUpdateDateTime {seen:?}, read {:?})", alert.version()),
            ));
        }
        let current_alert = current_alert.expect("read above");
        if current_alert.status() == AlertStatus::Resolved {
            return Ok((None, "already resolved".to_string()));
        }
        let change = AlertUpdate {
            status: update.status.clone().filter(|s| s != current_alert.status().as_str()),
            assigned_to: update.assigned_to.clone().filter(|a| current_alert.assigned_to.as_deref() != Some(a)),
            ..Default::default()
        };
        if change == AlertUpdate::default() {
            // Already so: updating again would only make a new version and a new round of this.
            return Ok((None, "already set".to_string()));
        }
        app.graph.update_alert(tenant, &alert.id, &change).await?;
        Ok::<_, crate::graph::GraphError>((Some(change), String::new()))
    }
    .await;
    match outcome {
        Ok((change, skipped)) => {
            app.store.complete(&claim_key).await.map_err(store)?;
            let record = match &change {
                Some(c) => updated(alert, route, c),
                None => update_skipped(alert, route, skipped),
            };
            audit(app, tenant, now, record).await;
            Ok(change.is_some())
        }
        Err(e) => {
            app.store.release(&claim_key).await.map_err(store)?;
            let message = crate::redact::redact(&e.to_string());
            audit(app, tenant, now, update_failed(alert, route, &message, e.status)).await;
            let text = format!("alert {}: update by {route} failed: {message}", alert.id);
            Err(match e.retry {
                Retry::Retryable => RespondError::Retry(text),
                Retry::Permanent => RespondError::Malformed(text),
            })
        }
    }
}

/// Appends a delivery record to the audit trail. A record that cannot be written is logged, never a
/// reason to send twice.
async fn audit(app: &App, tenant: &str, now: DateTime<Utc>, record: Record) {
    let alert = record.alert_id.clone();
    if let Err(e) = crate::audit::append(app.store.as_ref(), tenant, now, record).await {
        tracing::error!("audit record lost for alert {alert} ({e})");
    }
}

/// A record of `action` about `alert` for `receiver` (a receiver's name, or a route's for updates).
fn record(alert: &Alert, action: Action, receiver: &str) -> Record {
    Record { receiver: Some(receiver.to_string()), ..Record::new(&alert.id, alert.version(), action) }
}

/// Facts a record has no field for, as the JSON its detail carries.
fn facts(facts: impl Serialize) -> String {
    serde_json::to_string(&facts).expect("facts serialize")
}

/// The receiver was sent the alert (with the members of its group); `status` is the receiver's answer.
fn sent(alert: &Alert, receiver: &str, kind: &str, view: &View, routes: &[String], status: u16) -> Record {
    #[derive(Serialize)]
    struct Sent<'a> {
        kind: &'a str,
        why: &'a str,
        routes: &'a [String],
        grouped: Vec<&'a str>,
    }
    let grouped = view.group.iter().map(|m| m.id.as_str()).collect();
    Record {
        graph_status: Some(status),
        detail: facts(Sent { kind, why: &view.why, routes, grouped }),
        ..record(alert, Action::Notify, receiver)
    }
}

/// The receiver could not be sent the alert.
fn failed(alert: &Alert, receiver: &str, kind: &str, e: &NotifyError) -> Record {
    #[derive(Serialize)]
    struct Failed<'a> {
        kind: &'a str,
        error: &'a str,
        retryable: bool,
    }
    let retryable = e.retry == Retry::Retryable;
    Record {
        detail: facts(Failed { kind, error: &e.message, retryable }),
        ..record(alert, Action::NotifyFailed, receiver)
    }
}

/// The receiver was not told again: `reason` says why this version is nothing new.
fn suppressed(alert: &Alert, receiver: &str, reason: String) -> Record {
    Record { detail: reason, ..record(alert, Action::NotifySuppressed, receiver) }
}

/// The receiver is told about the alert in the message of `leader`, another alert of its incident.
fn grouped(alert: &Alert, receiver: &str, leader: &str) -> Record {
    #[derive(Serialize)]
    struct Grouped<'a> {
        leader: &'a str,
    }
    Record { detail: facts(Grouped { leader }), ..record(alert, Action::NotifyGrouped, receiver) }
}

/// The route's `set:` changed the alert in Graph.
fn updated(alert: &Alert, route: &str, change: &AlertUpdate) -> Record {
    #[derive(Serialize)]
    struct Updated<'a> {
        status_before: &'a str,
        set: &'a AlertUpdate,
    }
    let status = alert.status();
    Record {
        detail: facts(Updated { status_before: status.as_str(), set: change }),
        ..record(alert, Action::Update, route)
    }
}

/// The route's `set:` was not applied; `reason` says why.
fn update_skipped(alert: &Alert, route: &str, reason: String) -> Record {
    Record { detail: reason, ..record(alert, Action::UpdateSkipped, route) }
}

/// Graph refused the route's `set:`.
fn update_failed(alert: &Alert, route: &str, error: &str, status: Option<u16>) -> Record {
    #[derive(Serialize)]
    struct UpdateFailed<'a> {
        error: &'a str,
    }
    Record { graph_status: status, detail: facts(UpdateFailed { error }), ..record(alert, Action::UpdateFailed, route) }
}

/// A store key from parts; `/` and `%` inside a part are escaped, so parts never run together.
fn key(parts: &[&str]) -> String {
    parts.iter().map(|p| p.replace('%', "%25").replace('/', "%2F")).collect::<Vec<_>>().join("/")
}

fn store(e: StoreError) -> RespondError {
    RespondError::Retry(format!("store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn alert(severity: &str, status: &str) -> Alert {
        Alert::from_value(json!({"id": "a", "severity": severity, "status": status})).unwrap()
    }

    #[test]
    fn realert_tells_new_risen_reopened_and_reminders_only() {
        let t0: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        let last = Last { at: t0, severity: 3, status: "new".into() };
        let hour = Some(Duration::from_secs(3600));
        let later = t0 + chrono::Duration::minutes(30);
        assert_eq!(realert(None, &alert("low", "new"), t0, None), Ok(Why::New));
        assert!(realert(Some(&last), &alert("medium", "inProgress"), later, hour).is_err());
        assert!(realert(Some(&last), &alert("low", "new"), later, None).is_err());
        assert_eq!(realert(Some(&last), &alert("high", "new"), later, None), Ok(Why::SeverityRose));
        let resolved = Last { status: "resolved".into(), ..last.clone() };
        assert_eq!(realert(Some(&resolved), &alert("medium", "new"), later, None), Ok(Why::Reopened));
        assert!(realert(Some(&resolved), &alert("medium", "resolved"), later, None).is_err());
        let much_later = t0 + chrono::Duration::minutes(61);
        assert_eq!(realert(Some(&last), &alert("medium", "new"), much_later, hour), Ok(Why::Reminder));
        assert!(realert(Some(&last), &alert("medium", "new"), much_later, None).is_err());
    }

    #[test]
    fn keys_escape_their_parts() {
        assert_eq!(key(&["notify", "t", "a/b%c", "v"]), "notify/t/a%2Fb%25c/v");
    }
}
