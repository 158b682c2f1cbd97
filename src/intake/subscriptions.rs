//! Graph subscriptions that never lapse: create, renew, re-create, delete, reauthorize.
//!
//! Each configured subscription is a doorbell (a new message in the mailbox that Defender sends its alert
//! e-mails to makes secmon poll that tenant now). [`sync`] makes Graph match the config: it creates what is
//! missing, renews each subscription once half of its lifetime has passed, re-creates ones that vanished
//! or were removed, reauthorizes ones Graph asked about, and deletes ones no longer configured.
//!
//! Records live in the store under `subscriptions/{tenant}/{id}` with the resource, the expiry and a random
//! per-subscription `clientState` secret that [`crate::intake::webhook`] checks every notification against.
//! Creation writes a *pending* record (`subscriptions/{tenant}/pending-{nonce}`) with the secret before
//! calling Graph, so a notification that arrives between Graph's answer and the stored record is still
//! recognised; a crash in between leaves an orphan at Graph that the next [`sync`] deletes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::App;
use crate::graph::GraphError;
use crate::store::{Store, StoreError, keys};

pub use crate::config::intake::SubscriptionConfig;

/// Maximum lifetime of an Outlook message subscription (Graph's subscription-lifetime table).
pub const MAX_MINUTES_OUTLOOK: i64 = 10_080;
/// Maximum lifetime of a (legacy) security alert subscription.
pub const MAX_MINUTES_SECURITY_ALERTS: i64 = 43_200;
/// Maximum lifetime secmon assumes for every other resource (the table's most common shorter value).
pub const MAX_MINUTES_OTHER: i64 = 4_230;
/// How much shorter than the maximum secmon asks for: Graph answers 400 to a longer request, and its
/// clock is not ours.
pub const EXPIRY_MARGIN_MINUTES: i64 = 15;
/// A pending record older than this belongs to a creation that crashed; it is removed.
const PENDING_TTL_MINUTES: i64 = 60;
/// How long a "creating" marker lets the webhook answer Graph's validation handshake. Graph validates
/// within 10 seconds of the create request; the rest is room for the create's own retries and for clocks
/// of the worker (which writes the marker) and the edge (which reads it) that differ a little.
pub const CREATING_WINDOW_SECONDS: i64 = 120;
/// Bytes of randomness in a `clientState` (43 characters of base64url; Graph allows 128).
const CLIENT_STATE_BYTES: usize = 32;

/// The longest lifetime Graph grants a subscription on `resource`.
pub fn max_lifetime(resource: &str) -> chrono::Duration {
    let r = resource.trim_start_matches('/').to_ascii_lowercase();
    let minutes = if (r.starts_with("users/") || r.starts_with("me/")) && r.ends_with("/messages") {
        MAX_MINUTES_OUTLOOK
    } else if r.starts_with("security/alerts") && !r.starts_with("security/alerts_v2") {
        MAX_MINUTES_SECURITY_ALERTS
    } else {
        MAX_MINUTES_OTHER
    };
    chrono::Duration::minutes(minutes)
}

/// The expiry secmon requests for a new or renewed subscription on `resource`.
pub fn requested_expiry(resource: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    now + max_lifetime(resource) - chrono::Duration::minutes(EXPIRY_MARGIN_MINUTES)
}

/// The expiry asked for when Graph refused [`requested_expiry`] (a clock ahead of Graph's): half the lifetime.
fn fallback_expiry(resource: &str, now: DateTime<Utc>) -> String {
    (now + max_lifetime(resource) / 2).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// True once less than half of the resource's lifetime remains. Half a week for mailboxes (the timer runs
/// every six hours), so a few failed timer runs in a row still leave days before anything lapses.
pub fn needs_renewal(record: &SubscriptionRecord, now: DateTime<Utc>) -> bool {
    record.expiration - now < max_lifetime(&record.resource) / 2
}

/// A fresh `clientState` secret: 32 bytes from the operating system's CSPRNG, base64url.
pub fn new_client_state() -> String {
    use base64::Engine;
    use rand::TryRngCore;
    let mut bytes = [0u8; CLIENT_STATE_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the operating system's random source works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What a record still needs after a lifecycle notification, if the inline action did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Needs {
    /// Graph asked for reauthorization (`reauthorizationRequired`).
    Reauthorize,
    /// Graph removed the subscription (`subscriptionRemoved`).
    Recreate,
}

/// A subscription secmon created, as stored under `subscriptions/{tenant}/{id}`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct SubscriptionRecord {
    /// Graph's subscription id.
    pub id: String,
    /// Tenant name.
    pub tenant: String,
    /// The resource, as configured.
    pub resource: String,
    /// The change type, as configured.
    pub change_type: String,
    /// When Graph lets it lapse.
    pub expiration: DateTime<Utc>,
    /// The secret Graph echoes in every notification; never logged.
    pub client_state: String,
    /// The notification URL without its query string (which may hold a function key).
    pub notification_url: String,
    /// [`Endpoints::fingerprint`] of the URLs Graph was given, query (function key) included: a hash,
    /// never the key. When the configured URLs no longer match it (the key was rotated), [`sync`]
    /// creates a replacement and then deletes this one. Absent in records of older versions, which are
    /// therefore replaced once.
    #[serde(default)]
    pub url_fingerprint: Option<String>,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// Work left over from a lifecycle notification.
    #[serde(default)]
    pub needs: Option<Needs>,
}

impl std::fmt::Debug for SubscriptionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("resource", &self.resource)
            .field("expiration", &self.expiration)
            .field("client_state", &crate::redact::MASK)
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

impl SubscriptionRecord {
    /// The record for display (`secmon subscriptions list`): everything but the secret.
    pub fn summary(&self, now: DateTime<Utc>) -> Value {
        json!({
            "tenant": self.tenant,
            "id": self.id,
            "resource": self.resource,
            "change_type": self.change_type,
            "expiration": self.expiration.to_rfc3339_opts(SecondsFormat::Secs, true),
            "expires_in_hours": (self.expiration - now).num_minutes() as f64 / 60.0,
            "renew_due": needs_renewal(self, now),
            "notification_url": self.notification_url,
            "needs": self.needs,
        })
    }
}

/// The secret of a subscription being created, stored before Graph is asked (see the module doc).
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingRecord {
    /// Tenant name.
    pub tenant: String,
    /// The resource being subscribed to.
    pub resource: String,
    /// The secret sent to Graph.
    pub client_state: String,
    /// When creation started.
    pub started: DateTime<Utc>,
}

impl std::fmt::Debug for PendingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRecord").field("tenant", &self.tenant).field("resource", &self.resource).finish()
    }
}

/// Graph subscription ids are GUIDs; anything else is not used as part of a store key.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Every stored subscription record (not pending ones) of one tenant, or of all when `tenant` is `None`.
pub async fn load_records(store: &dyn Store, tenant: Option<&str>) -> Result<Vec<SubscriptionRecord>, StoreError> {
    let mut out = Vec::new();
    for key in store.list(&keys::subscriptions(tenant)).await? {
        if keys::is_subscription_pending(&key) {
            continue;
        }
        if let Some(record) = read_json::<SubscriptionRecord>(store, &key).await? {
            out.push(record);
        }
    }
    Ok(out)
}

async fn read_json<T: for<'de> Deserialize<'de>>(store: &dyn Store, key: &str) -> Result<Option<T>, StoreError> {
    let Some(v) = store.get(key).await? else { return Ok(None) };
    match serde_json::from_slice(&v.value) {
        Ok(t) => Ok(Some(t)),
        Err(e) => {
            // A record secmon cannot read is left in place for a human, and reported.
            tracing::error!("unreadable subscription record {key}: {e}");
            Ok(None)
        }
    }
}

async fn put_record(store: &dyn Store, record: &SubscriptionRecord) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(record).expect("records serialize");
    store.put(&keys::subscription(&record.tenant, &record.id), &bytes).await.map(|_| ())
}

/// The URLs Graph is given: notification and lifecycle, with the configured query (a function key).
#[derive(Clone)]
pub struct Endpoints {
    /// `{public_url}/api/graph-webhook`, without query.
    pub notification_base: String,
    /// The notification URL as given to Graph (with the query; a secret may be in it).
    pub notification_url: String,
    /// The lifecycle URL as given to Graph.
    pub lifecycle_url: String,
}

impl Endpoints {
    /// A fingerprint of both URLs as Graph is given them, query included: the first 128 bits of a
    /// SHA-256, hex. Function keys are long random values, so the hash does not reveal them; it only
    /// tells whether a subscription was created with the URLs configured now.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"secmon notification urls\n");
        h.update(self.notification_url.as_bytes());
        h.update(b"\n");
        h.update(self.lifecycle_url.as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// Builds the endpoints from the webhook config, or `None` when `webhook.public_url` is not set.
    pub fn from_config(config: &crate::config::Config) -> Option<Endpoints> {
        let base = config.webhook.public_url.as_deref()?.trim_end_matches('/').to_string();
        let query = config.webhook.notification_query.as_deref().map(|q| q.trim_start_matches('?')).unwrap_or("");
        let with_query = |path: &str| {
            if query.is_empty() { format!("{base}{path}") } else { format!("{base}{path}?{query}") }
        };
        Some(Endpoints {
            notification_base: format!("{base}/api/graph-webhook"),
            notification_url: with_query("/api/graph-webhook"),
            lifecycle_url: with_query("/api/graph-lifecycle"),
        })
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").field("notification_base", &self.notification_base).finish_non_exhaustive()
    }
}

/// What [`sync`] did to one subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// Tenant name.
    pub tenant: String,
    /// `created`, `renewed`, `reauthorized`, `recreated`, `deleted`, `deleted-orphan`, `kept`, `failed`.
    pub action: &'static str,
    /// The subscription id it applies to (the new one for `created`/`recreated`).
    pub id: Option<String>,
    /// The resource.
    pub resource: String,
    /// Details: the error for `failed` (redacted), the old id for `recreated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What one [`sync`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Every action, in order.
    pub actions: Vec<Action>,
}

impl Report {
    /// Number of actions of a kind.
    pub fn count(&self, action: &str) -> usize {
        self.actions.iter().filter(|a| a.action == action).count()
    }

    /// True if anything failed.
    pub fn has_failures(&self) -> bool {
        self.count("failed") > 0
    }

    /// One line: counts per action.
    pub fn summary(&self) -> String {
        let kinds = ["created", "renewed", "reauthorized", "recreated", "deleted", "deleted-orphan", "kept", "failed"];
        let parts: Vec<String> =
            kinds.iter().map(|k| (k, self.count(k))).filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect();
        if parts.is_empty() { "no subscriptions configured".into() } else { parts.join(", ") }
    }

    fn push(&mut self, tenant: &str, action: &'static str, id: Option<&str>, resource: &str, detail: Option<String>) {
        let detail = detail.map(|d| crate::redact::redact(&d));
        self.actions.push(Action {
            tenant: tenant.to_string(),
            action,
            id: id.map(str::to_string),
            resource: resource.to_string(),
            detail,
        });
    }
}

fn same_resource(a: &str, b: &str) -> bool {
    a.trim_start_matches('/').eq_ignore_ascii_case(b.trim_start_matches('/'))
}

fn same_change_type(a: &str, b: &str) -> bool {
    let set = |s: &str| s.split(',').map(|c| c.trim().to_ascii_lowercase()).collect::<std::collections::BTreeSet<_>>();
    set(a) == set(b)
}

fn url_without_query(u: &str) -> &str {
    u.split('?').next().unwrap_or(u)
}

/// Why one subscription operation failed.
#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// Makes Graph's subscriptions match the config for every tenant, at `now`. One subscription's failure
/// never stops the others; every failure is in the report.
pub async fn sync(app: &App, now: DateTime<Utc>) -> Report {
    let mut report = Report::default();
    let endpoints = Endpoints::from_config(&app.config);
    let mut tenants: Vec<String> = app.config.tenants.iter().map(|t| t.name.clone()).collect();
    // Tenants removed from the config may still have records: their subscriptions are deleted too.
    match app.store.list(&keys::subscriptions(None)).await {
        Ok(stored) => {
            for key in stored {
                if let Some(t) = keys::subscription_tenant(&key)
                    && !tenants.contains(&t)
                {
                    tenants.push(t);
                }
            }
        }
        Err(e) => report.push("*", "failed", None, "", Some(format!("listing subscription records: {e}"))),
    }
    for tenant in tenants {
        sync_tenant(app, &tenant, endpoints.as_ref(), now, &mut report).await;
    }
    report
}

async fn sync_tenant(app: &App, tenant: &str, endpoints: Option<&Endpoints>, now: DateTime<Utc>, report: &mut Report) {
    let wanted: Vec<&SubscriptionConfig> = app.config.subscriptions.iter().filter(|s| s.tenant == tenant).collect();
    let store = app.store.as_ref();
    let records = match load_records(store, Some(tenant)).await {
        Ok(r) => r,
        Err(e) => return report.push(tenant, "failed", None, "", Some(format!("reading records: {e}"))),
    };
    if wanted.is_empty() && records.is_empty() {
        return;
    }
    let pending = clean_pending(store, tenant, now).await;
    // Markers are judged by the clock the webhook reads them with.
    clean_creating(store, app.clock.now()).await;
    let live: HashMap<String, Value> = match app.graph.list_subscriptions(tenant).await {
        Ok(list) => list.into_iter().filter_map(|v| Some((v.get("id")?.as_str()?.to_string(), v.clone()))).collect(),
        Err(e) => return report.push(tenant, "failed", None, "", Some(format!("listing subscriptions: {e}"))),
    };

    let mut matched: HashSet<String> = HashSet::new();
    for want in &wanted {
        let mut candidates: Vec<&SubscriptionRecord> = records
            .iter()
            .filter(|r| !matched.contains(&r.id))
            .filter(|r| {
                same_resource(&r.resource, &want.resource) && same_change_type(&r.change_type, &want.change_type)
            })
            .collect();
        candidates.sort_by_key(|r| std::cmp::Reverse(r.expiration));
        let Some(endpoints) = endpoints else {
            report.push(
                tenant,
                "failed",
                candidates.first().map(|r| r.id.as_str()),
                &want.resource,
                Some("webhook.public_url is not set, so Graph has nowhere to send notifications".into()),
            );
            if let Some(r) = candidates.first() {
                matched.insert(r.id.clone());
            }
            continue;
        };
        let Some(record) = candidates.first() else {
            match create(app, tenant, want, endpoints, now).await {
                Ok(r) => report.push(tenant, "created", Some(&r.id), &want.resource, None),
                Err(e) => report.push(tenant, "failed", None, &want.resource, Some(format!("create: {e}"))),
            }
            continue;
        };
        matched.insert(record.id.clone());
        let vanished = !live.contains_key(&record.id);
        let moved = record.notification_url != endpoints.notification_base;
        // The same base but another query: the function key was rotated, and Graph still calls with the old one.
        let rekeyed = record.url_fingerprint.as_deref() != Some(endpoints.fingerprint().as_str());
        let lapsed = record.expiration <= now;
        if vanished || moved || rekeyed || lapsed || record.needs == Some(Needs::Recreate) {
            let why = if vanished {
                "vanished from Graph"
            } else if moved {
                "notification URL changed"
            } else if rekeyed && record.url_fingerprint.is_some() {
                "notification URL's query (function key) changed"
            } else if rekeyed {
                "created by an older secmon without a URL fingerprint"
            } else if lapsed {
                "expired"
            } else {
                "removed by Graph"
            };
            match recreate(app, record, want, endpoints, now, !vanished).await {
                Ok(r) => report.push(
                    tenant,
                    "recreated",
                    Some(&r.id),
                    &want.resource,
                    Some(format!("{why}; was {}", record.id)),
                ),
                Err(e) => report.push(
                    tenant,
                    "failed",
                    Some(&record.id),
                    &want.resource,
                    Some(format!("recreate ({why}): {e}")),
                ),
            }
            continue;
        }
        if record.needs == Some(Needs::Reauthorize) {
            match reauthorize(app, record, now).await {
                Ok(()) => report.push(tenant, "reauthorized", Some(&record.id), &want.resource, None),
                Err(e) => {
                    report.push(tenant, "failed", Some(&record.id), &want.resource, Some(format!("reauthorize: {e}")))
                }
            }
            continue;
        }
        if needs_renewal(record, now) {
            match renew(app, record, now).await {
                Ok(_) => report.push(tenant, "renewed", Some(&record.id), &want.resource, None),
                Err(OpError::Graph(e)) if e.status == Some(404) => {
                    match recreate(app, record, want, endpoints, now, false).await {
                        Ok(r) => report.push(
                            tenant,
                            "recreated",
                            Some(&r.id),
                            &want.resource,
                            Some(format!("renewal found it gone; was {}", record.id)),
                        ),
                        Err(e) => report.push(
                            tenant,
                            "failed",
                            Some(&record.id),
                            &want.resource,
                            Some(format!("recreate: {e}")),
                        ),
                    }
                }
                Err(e) => report.push(tenant, "failed", Some(&record.id), &want.resource, Some(format!("renew: {e}"))),
            }
            continue;
        }
        report.push(tenant, "kept", Some(&record.id), &want.resource, None);
    }

    for record in records.iter().filter(|r| !matched.contains(&r.id)) {
        let result: Result<(), OpError> = async {
            app.graph.delete_subscription(tenant, &record.id).await?;
            store.delete(&keys::subscription(tenant, &record.id)).await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                report.push(tenant, "deleted", Some(&record.id), &record.resource, Some("no longer configured".into()))
            }
            Err(e) => report.push(tenant, "failed", Some(&record.id), &record.resource, Some(format!("delete: {e}"))),
        }
    }

    // Subscriptions that point at secmon but have no record: a creation that crashed before storing.
    let Some(endpoints) = endpoints else { return };
    let known: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let stored_now = load_records(store, Some(tenant)).await.unwrap_or_default();
    for (id, sub) in &live {
        let ours = sub
            .get("notificationUrl")
            .and_then(Value::as_str)
            .is_some_and(|u| url_without_query(u).eq_ignore_ascii_case(&endpoints.notification_base));
        let in_flight = sub
            .get("clientState")
            .and_then(Value::as_str)
            .is_some_and(|cs| pending.iter().any(|p| p.client_state == cs));
        if !ours || known.contains(id.as_str()) || stored_now.iter().any(|r| &r.id == id) || in_flight {
            continue;
        }
        let resource = sub.get("resource").and_then(Value::as_str).unwrap_or("");
        match app.graph.delete_subscription(tenant, id).await {
            Ok(()) => report.push(tenant, "deleted-orphan", Some(id), resource, None),
            Err(e) => report.push(tenant, "failed", Some(id), resource, Some(format!("delete orphan: {e}"))),
        }
    }
}

/// Removes stale pending records and returns the live ones.
async fn clean_pending(store: &dyn Store, tenant: &str, now: DateTime<Utc>) -> Vec<PendingRecord> {
    let mut live = Vec::new();
    let Ok(pending) = store.list(&keys::subscriptions_pending(tenant)).await else { return live };
    for key in pending {
        match read_json::<PendingRecord>(store, &key).await {
            Ok(Some(p)) if now - p.started < chrono::Duration::minutes(PENDING_TTL_MINUTES) => live.push(p),
            Ok(_) => {
                let _ = store.delete(&key).await;
            }
            Err(_) => {}
        }
    }
    live
}

/// The marker of a subscription being created (`subscription-creating/{tenant}/{uuid}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CreatingMarker {
    started: DateTime<Utc>,
}

/// Writes a "creating" marker for `tenant` at `now` and returns its key; see [`creating`].
pub async fn mark_creating(store: &dyn Store, tenant: &str, now: DateTime<Utc>) -> Result<String, StoreError> {
    let key = keys::subscription_creating(tenant, &uuid::Uuid::new_v4().to_string());
    store.put(&key, &serde_json::to_vec(&CreatingMarker { started: now }).expect("serializes")).await?;
    Ok(key)
}

/// Removes a marker [`mark_creating`] wrote. A failure is only logged: the marker stops counting after
/// its window anyway, and the next [`sync`] removes it.
pub async fn unmark_creating(store: &dyn Store, tenant: &str, key: &str) {
    if let Err(e) = store.delete(key).await {
        tracing::warn!(tenant, "could not remove a subscription-creating marker: {e}");
    }
}

/// Whether a subscription of ours is being created at `now` (a marker younger than
/// [`CREATING_WINDOW_SECONDS`] exists): only then is the validation handshake answered. Works across
/// instances and apps, since the marker is in the shared store.
pub async fn creating(store: &dyn Store, now: DateTime<Utc>) -> Result<bool, StoreError> {
    for key in store.list(keys::SUBSCRIPTION_CREATING).await? {
        let Some(v) = store.get(&key).await? else { continue };
        let Ok(marker) = serde_json::from_slice::<CreatingMarker>(&v.value) else { continue };
        let age = now - marker.started;
        // A little tolerance the other way too: the writer's clock may be ahead of ours.
        if age.num_seconds().abs() < CREATING_WINDOW_SECONDS {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes markers older than [`CREATING_WINDOW_SECONDS`] (a creation that crashed).
async fn clean_creating(store: &dyn Store, now: DateTime<Utc>) {
    let Ok(listed) = store.list(keys::SUBSCRIPTION_CREATING).await else { return };
    for key in listed {
        let stale = match store.get(&key).await {
            Ok(Some(v)) => serde_json::from_slice::<CreatingMarker>(&v.value)
                .map(|m| (now - m.started).num_seconds() >= CREATING_WINDOW_SECONDS)
                .unwrap_or(true),
            _ => false,
        };
        if stale {
            let _ = store.delete(&key).await;
        }
    }
}

/// Every pending record (subscriptions being created), for notifications that arrive before the record.
pub async fn load_pending(store: &dyn Store, listed: &[String]) -> Result<Vec<PendingRecord>, StoreError> {
    let mut out = Vec::new();
    for key in listed.iter().filter(|k| keys::is_subscription_pending(k)) {
        if let Some(p) = read_json(store, key).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// Creates one subscription at Graph and stores its record.
async fn create(
    app: &App,
    tenant: &str,
    want: &SubscriptionConfig,
    endpoints: &Endpoints,
    now: DateTime<Utc>,
) -> Result<SubscriptionRecord, OpError> {
    let client_state = new_client_state();
    let pending_key = keys::subscription_pending(tenant, &uuid::Uuid::new_v4().to_string());
    let pending = PendingRecord {
        tenant: tenant.into(),
        resource: want.resource.clone(),
        client_state: client_state.clone(),
        started: now,
    };
    app.store.put(&pending_key, &serde_json::to_vec(&pending).expect("serializes")).await?;
    // Graph validates both URLs before it answers the create: the edge answers only while this exists.
    let marker = mark_creating(app.store.as_ref(), tenant, app.clock.now()).await?;
    let created = post_subscription(app, tenant, want, endpoints, &client_state, now).await;
    unmark_creating(app.store.as_ref(), tenant, &marker).await;
    let created = created?;
    let expiry = requested_expiry(&want.resource, now);
    let id = created.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    if !valid_id(&id) {
        return Err(OpError::Other(format!("Graph answered a subscription without a usable id: {id:?}")));
    }
    let expiration = created
        .get("expirationDateTime")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(expiry);
    let record = SubscriptionRecord {
        id,
        tenant: tenant.into(),
        resource: want.resource.clone(),
        change_type: want.change_type.clone(),
        expiration,
        client_state,
        notification_url: endpoints.notification_base.clone(),
        url_fingerprint: Some(endpoints.fingerprint()),
        created: now,
        needs: None,
    };
    put_record(app.store.as_ref(), &record).await?;
    app.store.delete(&pending_key).await?;
    tracing::info!(tenant, id = %record.id, resource = %record.resource, "subscription created");
    Ok(record)
}

/// POSTs one subscription; a 400 (most likely our clock ahead of Graph's, so the expiry looks too far
/// out) is retried once asking for less.
async fn post_subscription(
    app: &App,
    tenant: &str,
    want: &SubscriptionConfig,
    endpoints: &Endpoints,
    client_state: &str,
    now: DateTime<Utc>,
) -> Result<Value, OpError> {
    let expiry = requested_expiry(&want.resource, now);
    let body = json!({
        "changeType": want.change_type,
        "notificationUrl": endpoints.notification_url,
        "lifecycleNotificationUrl": endpoints.lifecycle_url,
        "resource": want.resource,
        "expirationDateTime": expiry.to_rfc3339_opts(SecondsFormat::Millis, true),
        "clientState": client_state,
        "latestSupportedTlsVersion": "v1_2",
    });
    let created = match app.graph.create_subscription(tenant, &body).await {
        Err(e) if e.status == Some(400) => {
            // Most likely our clock is ahead of Graph's and the expiry looks too far out: ask for less.
            let mut shorter = body.clone();
            shorter["expirationDateTime"] = json!(fallback_expiry(&want.resource, now));
            app.graph.create_subscription(tenant, &shorter).await.map_err(|_| e)?
        }
        other => other?,
    };
    Ok(created)
}

/// Creates a replacement first (no gap), then removes the old one (at Graph too when `delete_old`).
async fn recreate(
    app: &App,
    old: &SubscriptionRecord,
    want: &SubscriptionConfig,
    endpoints: &Endpoints,
    now: DateTime<Utc>,
    delete_old: bool,
) -> Result<SubscriptionRecord, OpError> {
    let new = create(app, &old.tenant, want, endpoints, now).await?;
    if delete_old && let Err(e) = app.graph.delete_subscription(&old.tenant, &old.id).await {
        // The replacement works; the old one lapses on its own or is deleted as an orphan next time.
        tracing::warn!(tenant = %old.tenant, id = %old.id, "could not delete the replaced subscription: {}", crate::redact::redact(&e.to_string()));
    }
    app.store.delete(&keys::subscription(&old.tenant, &old.id)).await?;
    Ok(new)
}

/// Sets a new expiry at Graph and in the record.
async fn renew(app: &App, record: &SubscriptionRecord, now: DateTime<Utc>) -> Result<SubscriptionRecord, OpError> {
    let expiry = requested_expiry(&record.resource, now);
    let answer = match app
        .graph
        .renew_subscription(&record.tenant, &record.id, &expiry.to_rfc3339_opts(SecondsFormat::Millis, true))
        .await
    {
        Err(e) if e.status == Some(400) => app
            .graph
            .renew_subscription(&record.tenant, &record.id, &fallback_expiry(&record.resource, now))
            .await
            .map_err(|_| e)?,
        other => other?,
    };
    let expiration = answer
        .get("expirationDateTime")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(expiry);
    let mut updated = record.clone();
    updated.expiration = expiration;
    if updated.needs == Some(Needs::Reauthorize) {
        // Graph accepts a renewal in place of a reauthorization.
        updated.needs = None;
    }
    put_record(app.store.as_ref(), &updated).await?;
    Ok(updated)
}

/// Reauthorizes at Graph, falling back to a renewal, and clears the record's mark.
async fn reauthorize(app: &App, record: &SubscriptionRecord, now: DateTime<Utc>) -> Result<(), OpError> {
    match app.graph.reauthorize_subscription(&record.tenant, &record.id).await {
        Ok(()) => {
            let mut updated = record.clone();
            updated.needs = None;
            put_record(app.store.as_ref(), &updated).await?;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(tenant = %record.tenant, id = %record.id, "reauthorize failed, renewing instead: {}", crate::redact::redact(&e.to_string()));
            renew(app, record, now).await.map(|_| ())
        }
    }
}

/// A lifecycle event Graph sent (`lifecycleEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// The subscription's authorization must be renewed; notifications pause until it is.
    ReauthorizationRequired,
    /// Graph removed the subscription: recreate it and catch up.
    SubscriptionRemoved,
    /// Graph could not deliver some notifications: catch up.
    Missed,
    /// A value Graph added later; treated as "catch up".
    Other(String),
}

impl LifecycleEvent {
    /// Parses Graph's value.
    pub fn parse(s: &str) -> LifecycleEvent {
        match s {
            "reauthorizationRequired" => LifecycleEvent::ReauthorizationRequired,
            "subscriptionRemoved" => LifecycleEvent::SubscriptionRemoved,
            "missed" => LifecycleEvent::Missed,
            other => LifecycleEvent::Other(other.to_string()),
        }
    }

    /// Graph's name of the event.
    pub fn as_str(&self) -> &str {
        match self {
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
            LifecycleEvent::Other(s) => s,
        }
    }
}

/// How long a lifecycle notification may spend on Graph calls before answering; what is left is done by
/// the next [`sync`], because the mark on the record is written first.
pub const INLINE_BUDGET: Duration = Duration::from_millis(1500);

/// The durable part of a lifecycle event: queue a catch-up poll (`subscriptionRemoved`, `missed`, unknown
/// events) and mark the record with what it still needs. An error here means the notification must be
/// answered 5xx so Graph sends it again.
pub async fn record_lifecycle(
    app: &App,
    record: &SubscriptionRecord,
    event: &LifecycleEvent,
) -> Result<Option<Needs>, StoreError> {
    let needs = match event {
        LifecycleEvent::ReauthorizationRequired => Some(Needs::Reauthorize),
        LifecycleEvent::SubscriptionRemoved => Some(Needs::Recreate),
        LifecycleEvent::Missed | LifecycleEvent::Other(_) => None,
    };
    if !matches!(event, LifecycleEvent::ReauthorizationRequired) {
        let reason = format!("lifecycle:{}", event.as_str());
        super::coalesce::request(app, &record.tenant, &reason, app.clock.now()).await?;
    }
    if let Some(n) = needs {
        let mut marked = record.clone();
        marked.needs = Some(n);
        put_record(app.store.as_ref(), &marked).await?;
    }
    Ok(needs)
}

/// The inline part of a lifecycle event, bounded by [`INLINE_BUDGET`]: reauthorize (or renew), or
/// recreate. Returns what happened, for the log; failure leaves the mark for [`sync`].
pub async fn act_on_lifecycle(app: &App, record: &SubscriptionRecord, needs: Needs, now: DateTime<Utc>) -> String {
    let mut marked = record.clone();
    marked.needs = Some(needs);
    let work = async {
        match needs {
            Needs::Reauthorize => reauthorize(app, &marked, now).await.map(|()| "reauthorized".to_string()),
            Needs::Recreate => {
                let want = app
                    .config
                    .subscriptions
                    .iter()
                    .find(|w| {
                        w.tenant == marked.tenant
                            && same_resource(&w.resource, &marked.resource)
                            && same_change_type(&w.change_type, &marked.change_type)
                    })
                    .cloned();
                let endpoints = Endpoints::from_config(&app.config);
                match (want, endpoints) {
                    (Some(want), Some(endpoints)) => recreate(app, &marked, &want, &endpoints, now, false)
                        .await
                        .map(|r| format!("recreated as {}", r.id)),
                    _ => {
                        // No longer configured: the record goes, nothing is recreated.
                        app.store.delete(&keys::subscription(&marked.tenant, &marked.id)).await?;
                        Ok("removed (no longer configured)".to_string())
                    }
                }
            }
        }
    };
    match tokio::time::timeout(INLINE_BUDGET, work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => format!("left for the timer: {}", crate::redact::redact(&e.to_string())),
        Err(_) => "left for the timer: Graph did not answer in time".to_string(),
    }
}

/// `secmon subscriptions list`: the stored records without their secrets, as JSON.
pub async fn list(app: &App, now: DateTime<Utc>) -> Result<Value, StoreError> {
    let records = load_records(app.store.as_ref(), None).await?;
    Ok(Value::Array(records.iter().map(|r| r.summary(now)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    #[test]
    fn lifetimes_follow_graphs_table() {
        assert_eq!(max_lifetime("users/alerts@contoso.com/mailFolders('inbox')/messages").num_minutes(), 10_080);
        assert_eq!(max_lifetime("/users/{id}/messages").num_minutes(), 10_080);
        assert_eq!(max_lifetime("me/mailFolders('Inbox')/messages").num_minutes(), 10_080);
        assert_eq!(max_lifetime("security/alerts?$filter=status eq 'newAlert'").num_minutes(), 43_200);
        assert_eq!(max_lifetime("security/alerts_v2").num_minutes(), 4_230);
        assert_eq!(max_lifetime("users/a@b/events").num_minutes(), 4_230);
        let e = requested_expiry("users/a@b/messages", t0());
        assert!(e < t0() + chrono::Duration::minutes(10_080), "Graph answers 400 beyond the maximum");
        assert!(e > t0() + chrono::Duration::minutes(10_000));
    }

    #[test]
    fn renewal_is_due_at_half_life() {
        let mut r = SubscriptionRecord {
            id: "1".into(),
            tenant: "contoso".into(),
            resource: "users/a@b/messages".into(),
            change_type: "created".into(),
            expiration: t0() + chrono::Duration::days(4),
            client_state: "x".into(),
            notification_url: "https://x/api/graph-webhook".into(),
            url_fingerprint: None,
            created: t0(),
            needs: None,
        };
        assert!(!needs_renewal(&r, t0()));
        r.expiration = t0() + chrono::Duration::days(3);
        assert!(needs_renewal(&r, t0()));
        assert!(!format!("{r:?}").contains("client_state: \"x\""), "the secret is not in Debug output");
    }

    #[test]
    fn client_states_are_long_random_and_fit_graphs_limit() {
        let a = new_client_state();
        let b = new_client_state();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.len() <= 128);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn resources_and_change_types_compare_loosely() {
        assert!(same_resource("/users/A@b/messages", "users/a@B/messages"));
        assert!(!same_resource("users/a/messages", "users/b/messages"));
        assert!(same_change_type("created, updated", "updated,created"));
        assert!(!same_change_type("created", "created,updated"));
        assert!(keys::is_subscription_pending("subscriptions/contoso/pending-abc"));
        assert!(!keys::is_subscription_pending("subscriptions/contoso/5f0c-11"));
        assert!(!valid_id("../x"));
    }
}
