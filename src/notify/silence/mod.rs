//! Noise control without touching Defender: silences, recurring mute windows, re-notification when a
//! silence ends, and scheduled digests.
//!
//! - **Silences** ([`Silence`]) are stored in the store (`silences/{id}`), so every instance shares
//!   them: a CEL matcher over the alert (the same language, environment and load-time checks as
//!   routes), a start and an end (at most `silences.max_duration` apart), who made it and why, and
//!   optionally the receivers, the tenant and the windows (`active_during`) it is limited to. Each
//!   process keeps the list for `silences.cache` so a delivery does not cost a listing of the store.
//! - **Windows** ([`interval`]): named `time_intervals` in the config that a route references as
//!   `mute_during` / `active_during`.
//! - [`muting`] is asked by delivery right before a receiver would be told about an alert version: a
//!   muted delivery is audited `notify_silenced` (with the silence or window) and its claim completed;
//!   every alert a silence muted is remembered (`silence-muted/{id}/…`).
//! - [`expiry`]: when a silence ends (its time is up, or `secmon silence expire`), each alert it muted
//!   that Graph still has open is told once to each receiver it was muted for (claimed, audited), from
//!   the poll timer ([`tick`]).
//! - [`digest`]: a receiver or route with `digest: {schedule: …}` collects what is routed to it in the
//!   store and sends it as one message at each fire time ([`schedule`]).
//! - [`cli`]: `secmon silence add / query / expire / preview`.

pub mod cli;
pub mod digest;
pub mod expiry;
pub mod interval;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use self::interval::Intervals;
use self::schedule::Schedule;
use crate::alert::Alert;
use crate::app::App;
use crate::audit::{Action, Record};
use crate::config::{Config, Issue, ReceiverConfig};
use crate::rules::Delivery;
use crate::rules::expr::{self, Expression};
use crate::store::{Change, Store, StoreError, keys};

/// One silence as stored at `silences/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    /// Its id (a UUID without dashes).
    pub id: String,
    /// The CEL matcher over the alert, as in a route's `when`.
    pub when: String,
    /// From when it mutes.
    pub starts_at: DateTime<Utc>,
    /// Until when it mutes (exclusive); `secmon silence expire` moves it to now.
    pub ends_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    /// Why (required).
    pub comment: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// The receivers it mutes; empty: all.
    #[serde(default)]
    pub receivers: Vec<String>,
    /// The tenant it mutes (by name); none: all.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Windows (`time_intervals` names) it is limited to: it mutes only while one of them holds.
    #[serde(default)]
    pub active_during: Vec<String>,
    /// Who ended it early, if someone did.
    #[serde(default)]
    pub expired_by: Option<String>,
    /// Its end was dealt with: `silence_expired` audited and every muted alert re-notified or settled.
    #[serde(default)]
    pub settled: bool,
}

impl Silence {
    /// `pending`, `active` or `expired` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if now < self.starts_at {
            "pending"
        } else if now < self.ends_at {
            "active"
        } else {
            "expired"
        }
    }

    /// The tenants whose audit trail records it: its own, else every configured tenant.
    fn tenants<'a>(&'a self, config: &'a Config) -> Vec<&'a str> {
        match &self.tenant {
            Some(t) => vec![t.as_str()],
            None => config.tenants.iter().map(|t| t.name.as_str()).collect(),
        }
    }

    /// The audit id of this silence's records (`silence-{id}`).
    fn audit_id(&self) -> String {
        format!("silence-{}", self.id)
    }
}

/// Why a delivery is muted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Muted {
    /// The silence, when a silence mutes it (a window of the route otherwise).
    pub silence: Option<String>,
    /// In words: `silence 3f2a…: maintenance of ex01 (by ana)`, `routes[1] (night): inside time interval "night"`.
    pub reason: String,
}

impl Muted {
    /// The `notify_silenced` record of the muted delivery of `alert` to `receiver`.
    pub fn record(&self, alert: &Alert, receiver: &str, routes: &[String]) -> Record {
        #[derive(Serialize)]
        struct Facts<'a> {
            silence: Option<&'a str>,
            reason: &'a str,
            routes: &'a [String],
        }
        let detail = serde_json::to_string(&Facts { silence: self.silence.as_deref(), reason: &self.reason, routes })
            .expect("facts serialize");
        Record {
            receiver: Some(receiver.to_string()),
            detail,
            ..Record::new(&alert.id, alert.version(), Action::NotifySilenced)
        }
    }
}

/// What one alert a silence muted needs when the silence ends, at `silence-muted/{id}/{tenant}/{alert}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MutedAlert {
    /// The tenant.
    pub tenant: String,
    /// The alert id.
    pub alert: String,
    /// The last version muted.
    pub version: String,
    /// The receivers it was muted for.
    pub receivers: Vec<String>,
}

/// A stored silence with its matcher compiled.
struct Active {
    silence: Silence,
    when: Expression,
}

/// The windows and schedules of a route, by the label deliveries carry (its name, else `routes[i]`).
#[derive(Debug, Clone, Default)]
struct RouteNoise {
    mute: Vec<String>,
    active: Vec<String>,
    digest: Option<Schedule>,
}

struct Cached {
    at: DateTime<Utc>,
    list: Arc<Vec<Active>>,
}

/// What noise control compiles from the config once (windows, route windows, digest schedules), and
/// the per-process cache of the stored silences. Lives in the [`App`].
pub struct Mute {
    /// The `time_intervals`, compiled.
    pub intervals: Intervals,
    routes: BTreeMap<String, RouteNoise>,
    receivers: BTreeMap<String, Schedule>,
    env: Arc<cel::Env>,
    /// The CEL helpers, registered once; each alert is bound in a scope of them.
    helpers: expr::Helpers,
    cache_for: chrono::Duration,
    cache: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for Mute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mute").field("routes", &self.routes.len()).finish_non_exhaustive()
    }
}

/// The label a delivery carries for route `i` (as the rules engine writes it).
fn route_label(config: &Config, i: usize) -> String {
    config.routes[i].name.clone().unwrap_or_else(|| format!("routes[{i}]"))
}

impl Mute {
    /// Compiles the windows and digest schedules of `config`; every problem located at its field.
    pub fn build(config: &Config) -> Result<Mute, Vec<Issue>> {
        let mut issues = Vec::new();
        let intervals = Intervals::compile(&config.time_intervals).unwrap_or_else(|mut e| {
            issues.append(&mut e);
            Intervals::default()
        });
        let mut compile = |path: String, d: &crate::config::silence::DigestConfig| match Schedule::compile(d) {
            Ok(s) => Some(s),
            Err(e) => {
                issues.push(Issue::error(path, e));
                None
            }
        };
        let mut routes = BTreeMap::new();
        for (i, r) in config.routes.iter().enumerate() {
            let digest = r.digest.as_ref().and_then(|d| compile(format!("routes[{i}].digest.schedule"), d));
            routes.insert(
                route_label(config, i),
                RouteNoise { mute: r.mute_during.clone(), active: r.active_during.clone(), digest },
            );
        }
        let mut receivers = BTreeMap::new();
        for (name, rc) in &config.receivers {
            if let Some(d) = rc.digest()
                && let Some(s) = compile(format!("receivers.{name}.{}.digest.schedule", rc.kind()), d)
            {
                receivers.insert(name.clone(), s);
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let cache_for = chrono::Duration::from_std(config.silences.cache).unwrap_or(chrono::Duration::zero());
        let env = expr::env();
        let helpers = expr::Helpers::new(env.clone());
        Ok(Mute { intervals, routes, receivers, env, helpers, cache_for, cache: Mutex::new(None) })
    }

    /// Whether the routes that chose a receiver mute it now: when every one of them is inside a
    /// `mute_during` window or outside its `active_during` windows (one route that may tell is enough).
    fn routes_muted(&self, routes: &[String], now: DateTime<Utc>) -> Option<String> {
        let mut reasons = Vec::new();
        for label in routes {
            let noise = self.routes.get(label)?;
            reasons.push(format!("{label}: {}", self.intervals.muted(&noise.mute, &noise.active, now)?));
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// The digest schedule a delivery goes to, if any: the receiver's own, else that of the first
    /// route that chose it with one.
    pub fn digest_for(&self, target: &Delivery) -> Option<&Schedule> {
        self.receivers
            .get(&target.receiver)
            .or_else(|| target.routes.iter().find_map(|r| self.routes.get(r).and_then(|n| n.digest.as_ref())))
    }

    /// The receivers that get scheduled digests (their own, or from a route).
    pub fn digest_receivers(&self, config: &Config) -> Vec<String> {
        let mut out: Vec<String> = self.receivers.keys().cloned().collect();
        for (i, r) in config.routes.iter().enumerate() {
            if self.routes.get(&route_label(config, i)).is_some_and(|n| n.digest.is_some()) {
                out.extend(r.receivers.iter().cloned());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Forgets the cached list, so the next delivery reads the store (after a change in this process).
    pub fn forget(&self) {
        *self.cache.lock().expect("silence cache") = None;
    }

    /// The silences not yet ended when the store was last read (at most `silences.cache` ago).
    async fn active(&self, store: &dyn Store, now: DateTime<Utc>) -> Result<Arc<Vec<Active>>, StoreError> {
        if let Some(c) = self.cache.lock().expect("silence cache").as_ref()
            && now >= c.at
            && now - c.at < self.cache_for
        {
            return Ok(c.list.clone());
        }
        let mut list = Vec::new();
        for s in read_all(store).await? {
            if s.ends_at <= now {
                continue;
            }
            match Expression::compile(&self.env, &s.when) {
                Ok(when) => list.push(Active { silence: s, when }),
                Err(e) => tracing::warn!("silence {} no longer compiles and mutes nothing: {e}", s.id),
            }
        }
        let list = Arc::new(list);
        *self.cache.lock().expect("silence cache") = Some(Cached { at: now, list: list.clone() });
        Ok(list)
    }
}

/// Every stored silence, in id order (unreadable records are skipped and logged).
pub async fn read_all(store: &dyn Store) -> Result<Vec<Silence>, StoreError> {
    let mut out = Vec::new();
    for key in store.list(&keys::silences()).await? {
        let Some(v) = store.get(&key).await? else { continue };
        match serde_json::from_slice::<Silence>(&v.value) {
            Ok(s) => out.push(s),
            Err(e) => tracing::warn!("{key} is not a silence record: {e}"),
        }
    }
    Ok(out)
}

/// Whether `target` must not be told about `alert` now, and why: the windows of the routes that chose
/// it, then the stored silences. A silence that mutes it remembers the alert, so that it is told when
/// the silence ends. Delivery asks this before anything else for each receiver.
pub async fn muting(
    app: &App,
    tenant: &str,
    alert: &Alert,
    target: &Delivery,
    now: DateTime<Utc>,
) -> Result<Option<Muted>, StoreError> {
    let mute = &app.mute;
    if let Some(reason) = mute.routes_muted(&target.routes, now) {
        return Ok(Some(Muted { silence: None, reason }));
    }
    let active = mute.active(app.store.as_ref(), now).await?;
    let Some(silence) = matching(mute, &active, tenant, alert, &target.receiver, now) else { return Ok(None) };
    remember(app.store.as_ref(), &silence, tenant, alert, &target.receiver).await?;
    let reason = format!("silence {}: {} (by {})", silence.id, silence.comment, silence.created_by);
    Ok(Some(Muted { silence: Some(silence.id), reason }))
}

/// The first active silence that mutes `alert` for `receiver` of `tenant` at `now`. Evaluated without
/// awaiting: the CEL context stays on this thread.
fn matching(
    mute: &Mute,
    active: &[Active],
    tenant: &str,
    alert: &Alert,
    receiver: &str,
    now: DateTime<Utc>,
) -> Option<Silence> {
    let applies = |s: &Silence| {
        s.starts_at <= now
            && now < s.ends_at
            && s.tenant.as_deref().is_none_or(|t| t == tenant)
            && (s.receivers.is_empty() || s.receivers.iter().any(|r| r == receiver))
            && (s.active_during.is_empty() || mute.intervals.muted(&[], &s.active_during, now).is_none())
    };
    let candidates: Vec<&Active> = active.iter().filter(|a| applies(&a.silence)).collect();
    if candidates.is_empty() {
        return None;
    }
    let cx = mute.helpers.scope(alert.raw(), tenant, now);
    for a in candidates {
        match a.when.matches(&cx) {
            Ok(true) => return Some(a.silence.clone()),
            Ok(false) => {}
            Err(e) => tracing::debug!(alert = %alert.id, "silence {} does not apply: {e}", a.silence.id),
        }
    }
    None
}

/// Records that `silence` muted `alert` for `receiver` (compare-and-swap: receivers accumulate).
async fn remember(
    store: &dyn Store,
    silence: &Silence,
    tenant: &str,
    alert: &Alert,
    receiver: &str,
) -> Result<(), StoreError> {
    let key = keys::silence_muted(&silence.id, tenant, &alert.id);
    crate::store::update(store, &key, |current| {
        let mut m: MutedAlert = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        let fresh = m.version != alert.version() || !m.receivers.iter().any(|r| r == receiver);
        if !fresh {
            return Change::Keep(());
        }
        m.tenant = tenant.to_string();
        m.alert = alert.id.clone();
        m.version = alert.version().to_string();
        if !m.receivers.iter().any(|r| r == receiver) {
            m.receivers.push(receiver.to_string());
        }
        Change::Put(serde_json::to_vec(&m).expect("JSON"), ())
    })
    .await
}

/// Appends `record` to the audit trail of each tenant of `silence`; a lost record is logged.
async fn audit(app: &App, silence: &Silence, now: DateTime<Utc>, record: Record) {
    for tenant in silence.tenants(&app.config) {
        if let Err(e) = app.audit.append(tenant, now, record.clone()).await {
            tracing::error!("audit record of silence {} lost for {tenant}: {e}", silence.id);
        }
    }
}

/// What the poll timer does for noise control: deals with the silences that ended ([`expiry`]) and
/// sends the scheduled digests that are due ([`digest`]). Returns a log line per thing done or failed.
pub async fn tick(app: &App, now: DateTime<Utc>) -> Vec<String> {
    let mut logs = expiry::settle_ended(app, now).await;
    logs.extend(digest::flush_due(app, now).await);
    logs
}

/// The config checks beyond names (which `Config::validate` makes): windows and schedules compile;
/// warnings for a window that mutes at all times, and for a route whose windows mute high-severity
/// alerts it matches.
pub fn check(config: &Config, out: &mut Vec<Issue>) {
    let mute = match Mute::build(config) {
        Ok(m) => m,
        Err(issues) => {
            out.extend(issues);
            return;
        }
    };
    let env = expr::env();
    for (i, r) in config.routes.iter().enumerate() {
        for (j, name) in r.mute_during.iter().enumerate() {
            if mute.intervals.get(name).is_some_and(|w| w.always()) {
                out.push(Issue::warning(
                    format!("routes[{i}].mute_during[{j}]"),
                    format!("time interval {name:?} holds at all times: this route never tells anyone"),
                ));
            }
        }
        if (r.mute_during.is_empty() && r.active_during.is_empty()) || !matches_high(&env, r.when.as_deref()) {
            continue;
        }
        let field = if r.mute_during.is_empty() { "active_during" } else { "mute_during" };
        out.push(Issue::warning(
            format!("routes[{i}].{field}"),
            "this route matches high-severity alerts, and its windows mute them: nobody is told about a \
             high-severity alert at those times unless another route (continue: true) tells someone",
        ));
    }
    for (name, rc) in &config.receivers {
        if let (Some(_), ReceiverConfig::Teams(_) | ReceiverConfig::Email(_)) = (rc.digest(), rc) {
            let routed_high =
                config.routes.iter().any(|r| r.receivers.contains(name) && matches_high(&env, r.when.as_deref()));
            if routed_high {
                out.push(Issue::warning(
                    format!("receivers.{name}.{}.digest", rc.kind()),
                    "high-severity alerts are routed to this receiver, which only sends scheduled digests",
                ));
            }
        }
    }
}

/// Whether an expression matches a high-severity alert (the documented sample, made high): the test of
/// "mutes everything of high severity" for routes and silences. No expression matches everything.
pub fn matches_high(env: &Arc<cel::Env>, when: Option<&str>) -> bool {
    let Some(when) = when else { return true };
    let Ok(when) = Expression::compile(env, when) else { return false };
    let helpers = expr::Helpers::new(env.clone());
    high_samples().iter().all(|raw| {
        let cx = helpers.scope(raw, "contoso", "2026-01-01T00:00:00Z".parse().expect("a time"));
        when.matches(&cx).unwrap_or(false)
    })
}

/// High-severity alerts that differ in everything else: the sample alert, and a bare one.
fn high_samples() -> Vec<serde_json::Value> {
    let mut sample: serde_json::Value =
        serde_json::from_str(crate::notify::template::SAMPLE_ALERT).expect("sample alert is JSON");
    sample["severity"] = "high".into();
    let bare = serde_json::json!({
        "id": "x", "severity": "high", "status": "new", "title": "x", "serviceSource": "microsoftSentinel",
        "detectionSource": "scheduledAlerts", "category": "x", "evidence": [], "lastUpdateDateTime": "2026-01-01T00:00:00Z"
    });
    vec![sample, bare]
}
