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
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::RespondError;
use crate::alert::{Alert, AlertStatus};
use crate::app::App;
use crate::config::Config;
use crate::graph::{AlertUpdate, Retry};
use crate::notify::view::{Member, View};
use crate::notify::{NotifyError, Payload, Receiver, Receivers, StatusUpdate};
use crate::store::{Change, Once, Store, StoreError, keys, once};

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

/// What to do for one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The receiver's name.
    pub receiver: String,
    /// Tell again after this long, even when nothing rose.
    pub realert: Option<Duration>,
    /// Group alerts of one incident arriving within this window.
    pub group: Option<Duration>,
    /// The routes that chose this receiver, for the message and the audit trail.
    pub routes: Vec<String>,
}

/// Everything delivery does for one alert version: receivers with their options, then status updates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The receivers, deduplicated, in route order.
    pub targets: Vec<Target>,
    /// `(route, update)` for every matched route with `set:`.
    pub updates: Vec<(String, StatusUpdate)>,
}

fn route_label(config: &Config, i: usize) -> String {
    config.routes.get(i).and_then(|r| r.name.clone()).unwrap_or_else(|| format!("routes[{i}]"))
}

impl Plan {
    /// The plan for the matched routes (indices into `config.routes`): receivers in order, each with the
    /// options of the first matched route that names it, and every matched route's `set:`.
    pub fn for_routes(config: &Config, routes: &[usize]) -> Plan {
        let mut plan = Plan::default();
        for &i in routes {
            let Some(route) = config.routes.get(i) else { continue };
            let label = route_label(config, i);
            for r in &route.receivers {
                match plan.targets.iter_mut().find(|t| &t.receiver == r) {
                    Some(t) => t.routes.push(label.clone()),
                    None => plan.targets.push(Target {
                        receiver: r.clone(),
                        realert: route.realert,
                        group: route.group_by_incident,
                        routes: vec![label.clone()],
                    }),
                }
            }
            if let Some(set) = &route.set {
                plan.updates.push((label, set.clone()));
            }
        }
        plan
    }

    /// The plan when only receiver names are known: each takes the options of the first route in the
    /// config that names it; no `set:` updates, since which routes matched is not known.
    pub fn for_receivers(config: &Config, receivers: &[String]) -> Plan {
        let mut plan = Plan::default();
        for r in receivers {
            if plan.targets.iter().any(|t| &t.receiver == r) {
                continue;
            }
            let first = config.routes.iter().position(|route| route.receivers.contains(r));
            let route = first.and_then(|i| config.routes.get(i));
            plan.targets.push(Target {
                receiver: r.clone(),
                realert: route.and_then(|r| r.realert),
                group: route.and_then(|r| r.group_by_incident),
                routes: first.map(|i| vec![route_label(config, i)]).unwrap_or_default(),
            });
        }
        plan
    }
}

/// Notifies `receivers` about one alert version (options from the routes that name them; see
/// [`Plan::for_receivers`]). [`deliver_routes`] also applies the matched routes' `set:` updates.
pub async fn deliver(
    app: &App,
    tenant: &str,
    alert: &Alert,
    raw: &Value,
    receivers: &[String],
) -> Result<Delivered, RespondError> {
    deliver_plan(app, tenant, alert, raw, &Plan::for_receivers(&app.config, receivers)).await
}

/// Notifies the receivers of the matched routes (indices into `config.routes`) and applies their
/// `set:` updates.
pub async fn deliver_routes(
    app: &App,
    tenant: &str,
    alert: &Alert,
    raw: &Value,
    routes: &[usize],
) -> Result<Delivered, RespondError> {
    deliver_plan(app, tenant, alert, raw, &Plan::for_routes(&app.config, routes)).await
}

/// Carries out a [`Plan`] for one alert version.
pub async fn deliver_plan(
    app: &App,
    tenant: &str,
    alert: &Alert,
    raw: &Value,
    plan: &Plan,
) -> Result<Delivered, RespondError> {
    let receivers = Receivers::for_config(&app.config).map_err(|issues| {
        let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        RespondError::Retry(format!("the receivers in the config do not build: {}", text.join("; ")))
    })?;
    let mut done = Delivered::default();
    let mut failures: Vec<NotifyError> = Vec::new();
    let mut held = Vec::new();
    for target in &plan.targets {
        let claim_key = keys::notify(tenant, &alert.id, alert.version(), &target.receiver);
        let lease = SEND_LEASE + target.group.unwrap_or_default();
        let act = || notify_one(app, &receivers, tenant, alert, raw, target, &claim_key);
        match once(app.store.as_ref(), &claim_key, lease, act).await.map_err(store)? {
            Once::AlreadyDone => done.already.push(target.receiver.clone()),
            Once::Held => held.push(target.receiver.clone()),
            Once::Done(Outcome::Sent) => done.sent.push(target.receiver.clone()),
            Once::Done(Outcome::Suppressed) => done.suppressed.push(target.receiver.clone()),
            Once::Done(Outcome::Grouped) => done.grouped.push(target.receiver.clone()),
            // The claim was given back so the retry sends; the audit record says what happened.
            Once::Failed(e) => failures.push(e),
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
    for (route, update) in &plan.updates {
        if apply_update(app, tenant, alert, route, update).await? {
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

/// Decides, sends and records for one claimed receiver; the caller completes the claim on success and
/// releases it on error.
async fn notify_one(
    app: &App,
    receivers: &Receivers,
    tenant: &str,
    alert: &Alert,
    raw: &Value,
    target: &Target,
    claim_key: &str,
) -> Result<Outcome, NotifyError> {
    let now = app.clock.now();
    let name = target.receiver.as_str();
    let store_err = |e: StoreError| NotifyError::new(name, format!("store: {e}"), Retry::Retryable);
    let last_key = keys::notify_last(tenant, &alert.id, name);
    let last: Option<Last> =
        app.store.get(&last_key).await.map_err(store_err)?.and_then(|v| serde_json::from_slice(&v.value).ok());
    let why = match realert(last.as_ref(), alert, now, target.realert) {
        Ok(why) => why,
        Err(reason) => {
            audit(app, tenant, alert, now, json!({"action": "notify_suppressed", "receiver": name, "reason": reason}))
                .await;
            return Ok(Outcome::Suppressed);
        }
    };
    let mut view = View::new(tenant, name, alert);
    view.why = why.to_string();
    view.routes = target.routes.clone();

    let incident = alert.incident_id.clone().filter(|i| !i.is_empty() && !alert.id.starts_with("secmon-"));
    let mut group_key = None;
    if let (Some(window), Some(incident)) = (target.group, incident) {
        let gk = keys::notify_group(tenant, name, &incident);
        match join(app.store.as_ref(), &gk, view.member(), now, window).await.map_err(store_err)? {
            Joined::Member { leader } => {
                remember(app, &last_key, alert, now).await;
                audit(app, tenant, alert, now, json!({"action": "notify_grouped", "receiver": name, "leader": leader}))
                    .await;
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
    let result = match receiver.render(&receivers.templates, &view, raw) {
        Ok(payload) => send(app, receiver, name, tenant, payload, now, claim_key).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(status) => {
            remember(app, &last_key, alert, now).await;
            if let Some(gk) = group_key {
                mark_sent(app.store.as_ref(), &gk, &alert.id).await;
            }
            let grouped: Vec<&str> = view.group.iter().map(|m| m.id.as_str()).collect();
            audit(
                app,
                tenant,
                alert,
                now,
                json!({"action": "notify", "receiver": name, "kind": receiver.kind(), "why": view.why,
                       "routes": target.routes, "status": status, "grouped": grouped}),
            )
            .await;
            Ok(Outcome::Sent)
        }
        Err(e) => {
            let retry = e.retry == Retry::Retryable;
            audit(
                app,
                tenant,
                alert,
                now,
                json!({"action": "notify_failed", "receiver": name, "kind": receiver.kind(), "error": e.message,
                       "retryable": retry}),
            )
            .await;
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
    crate::store::update(store, key, |current| {
        let group: Option<Group> = current.and_then(|v| serde_json::from_slice(v).ok());
        match group {
            Some(g) if g.leader == me.id => Change::Keep(Joined::Lead { closes: g.closes }),
            Some(g) if g.members.iter().any(|m| m.id == me.id) => Change::Keep(Joined::Member { leader: g.leader }),
            Some(mut g) if g.state == GroupState::Open && now < g.closes => {
                g.members.push(me.clone());
                Change::Put(serde_json::to_vec(&g).expect("JSON"), Joined::Member { leader: g.leader })
            }
            Some(g) if g.state != GroupState::Sent && now < g.closes + STALE_GROUP => Change::Keep(Joined::Alone),
            _ => {
                let closes = now + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::zero());
                let g = Group { leader: me.id.clone(), closes, state: GroupState::Open, members: Vec::new() };
                Change::Put(serde_json::to_vec(&g).expect("JSON"), Joined::Lead { closes })
            }
        }
    })
    .await
}

/// Closes the group led by `leader` to new members and returns its members.
async fn close(store: &dyn Store, key: &str, leader: &str) -> Result<Vec<Member>, StoreError> {
    crate::store::update(store, key, |current| {
        let Some(Ok(mut g)) = current.map(serde_json::from_slice::<Group>) else { return Change::Keep(Vec::new()) };
        if g.leader != leader || g.state != GroupState::Open {
            return Change::Keep(if g.leader == leader { g.members } else { Vec::new() });
        }
        g.state = GroupState::Closed;
        Change::Put(serde_json::to_vec(&g).expect("JSON"), g.members)
    })
    .await
}

async fn mark_sent(store: &dyn Store, key: &str, leader: &str) {
    let result = crate::store::update(store, key, |current| match current.map(serde_json::from_slice::<Group>) {
        Some(Ok(mut g)) if g.leader == leader => {
            g.state = GroupState::Sent;
            Change::Put(serde_json::to_vec(&g).expect("JSON"), ())
        }
        _ => Change::Keep(()),
    })
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
    let claim_key = keys::update(tenant, &alert.id, alert.version(), route);
    let act = || async {
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
    };
    match once(app.store.as_ref(), &claim_key, SEND_LEASE, act).await.map_err(store)? {
        Once::AlreadyDone => Ok(false),
        Once::Held => Err(RespondError::Retry(format!("update of {} by {route} is in progress", alert.id))),
        Once::Done((change, skipped)) => {
            let record = match &change {
                Some(c) => json!({"action": "update", "route": route, "status_before": alert.status().as_str(),
                                  "set": c}),
                None => json!({"action": "update_skipped", "route": route, "reason": skipped}),
            };
            audit(app, tenant, alert, now, record).await;
            Ok(change.is_some())
        }
        Once::Failed(e) => {
            let message = crate::redact::redact(&e.to_string());
            audit(
                app,
                tenant,
                alert,
                now,
                json!({"action": "update_failed", "route": route, "error": message, "status": e.status}),
            )
            .await;
            let text = format!("alert {}: update by {route} failed: {message}", alert.id);
            Err(match e.retry {
                Retry::Retryable => RespondError::Retry(text),
                Retry::Permanent => RespondError::Malformed(text),
            })
        }
    }
}

/// Appends a notification record to the hash-chained audit trail (`respond::audit`). `record` names the
/// `action` and may carry `receiver`/`route`, `status` (Graph's) and a `reason`; the rest goes into the
/// record's detail. A record that cannot be written is logged, never a reason to send twice.
async fn audit(app: &App, tenant: &str, alert: &Alert, now: DateTime<Utc>, record: Value) {
    use super::audit::{Action, Entry};
    let Value::Object(mut fields) = record else { return };
    let action = match fields.remove("action").as_ref().and_then(Value::as_str) {
        Some("notify") => Action::Notify,
        Some("notify_suppressed") => Action::NotifySuppressed,
        Some("notify_grouped") => Action::NotifyGrouped,
        Some("update") => Action::Update,
        Some("update_failed") => Action::UpdateFailed,
        Some("update_skipped") => Action::UpdateSkipped,
        _ => Action::NotifyFailed,
    };
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let receiver = fields.remove("receiver").or_else(|| fields.remove("route")).map(text);
    let graph_status = fields.remove("status").and_then(|v| v.as_u64()).map(|n| n as u16);
    let mut detail = fields.remove("reason").map(text).unwrap_or_default();
    if !fields.is_empty() {
        let rest = Value::Object(fields).to_string();
        detail = if detail.is_empty() { rest } else { format!("{detail} {rest}") };
    }
    let entry = Entry { receiver, graph_status, detail, ..Entry::new(&alert.id, alert.version(), action) };
    if let Err(e) = super::audit::append(app.store.as_ref(), tenant, now, entry).await {
        tracing::error!("audit record lost for alert {} ({e})", alert.id);
    }
}

fn store(e: StoreError) -> RespondError {
    RespondError::Retry(format!("store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
