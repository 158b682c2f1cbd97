//! A local stand-in for the parts of Microsoft Graph and Entra ID that secmon uses, with per-test
//! fault injection. Wire formats follow the documented samples in `tests/fixtures/samples/`.
//!
//! # Layout
//! - [`Emulator`]: start a server on 127.0.0.1 (http, or https with a generated test CA), seed it,
//!   inspect what clients sent.
//! - `entra`: `POST /{tenant}/oauth2/v2.0/token` (client credentials) and `GET /msi/token`
//!   (App Service managed identity).
//! - `alerts`: `/v1.0/security/alerts_v2` list (filter, paging), get, PATCH, comments.
//! - `mail`: `/v1.0/users/{sender}/sendMail`.
//! - `subscriptions`: `/v1.0/subscriptions` with the validation handshake; change and lifecycle notifications.
//! - `sinks`: a Teams Workflows trigger and a generic webhook sink.
//! - `botconnector`: a Bot Connector stand-in: OpenID metadata and JWKS, activities signed with its own
//!   RSA key ([`Emulator::bot_token`]), proactive posts and in-place updates recorded ([`Emulator::bot_calls`]).
//! - `oidc`: an OpenID Connect provider stand-in at `/oidc` for the triage page's sign-in: discovery, a
//!   one-button sign-in page for the test user ([`Emulator::set_oidc_user`]), a token endpoint that checks
//!   the PKCE verifier and answers an RS256 `id_token` (signed with the Bot Connector stand-in's key), JWKS.
//! - [`faults`]: status, delay, dropped-connection and garbage faults for any route.
//! - `server`: routing, request recording, the accept loop, TLS.
//! - `generate`: the documented sample alerts and deterministic generated ones.
//!
//! # Choices where Graph's behaviour is undocumented
//! - **Paging.** The first list page snapshots the ordered ids of all matching alerts; `@odata.nextLink`
//!   carries an opaque `$skiptoken` into that snapshot, and later pages return the alerts' *current*
//!   state. Every alert matching at the first page is returned exactly once even if alerts are updated
//!   between pages. Real Graph's doc example shows offset paging (`$top`/`$skip`), which can repeat or
//!   skip an alert under concurrent updates, so clients must still dedupe and poll with an overlap.
//!   `$top` is the page size (1..=2000); `$skip` and `$count=true` work on the first page;
//!   `$orderby` on `lastUpdateDateTime` or `createdDateTime` is honoured (undocumented, but production
//!   pollers send it); other `$` options (`$select`, …) answer 400. [`Emulator::set_listing`] changes
//!   all three: the server's own order (most recent first, oldest first, by id), `$orderby` honoured,
//!   ignored or refused, and snapshot or offset paging; [`Emulator::change_between_pages`] updates
//!   alerts after each page served, as a busy tenant does while a client pages.
//! - **Comments bump `lastUpdateDateTime`**, like PATCH does: the harder case for a poller.
//! - **Enums are strict.** Filter literals are case-sensitive (`status eq 'New'` is "Invalid filter
//!   clause"); PATCH rejects `benignPositive` and the stale determination names (`compromisedUser`, …).
//! - **Entra errors** follow Entra: an unknown client id is 400 `unauthorized_client` (AADSTS700016);
//!   a wrong secret or a malformed assertion is 401 `invalid_client`; a client marked with
//!   [`Emulator::set_consent_missing`] gets 400 `invalid_grant` AADSTS65001 (`consent_required`).
//! - **Tokens are JWT-shaped** with `aud`, `tid`, `appid` and `roles` claims (unsigned: the emulator
//!   knows its tokens by lookup). Roles are per client ([`Emulator::set_client_roles`], default
//!   `SecurityAlert.ReadWrite.All` and `Mail.Send`) and enforced: alerts need `SecurityAlert.Read.All` or
//!   `.ReadWrite.All` (writes the latter), sendMail `Mail.Send`; without one Graph's real 403 body
//!   (`Forbidden`, "Missing application roles. …").
//! - **`Date`** of Graph's answers can be skewed ([`Emulator::set_date_skew`]).
//! - **Subscriptions** accept plain-http notification URLs only on loopback, so tests can receive them.
#![warn(missing_docs)]
// Handlers bail out early with a ready `Response` (`Result<_, Response>`), the usual axum idiom;
// boxing it only to shrink the error variant would buy nothing on this cold path.
#![allow(clippy::result_large_err)]

mod alerts;
mod botconnector;
mod directory;
mod entra;
pub mod faults;
mod generate;
mod mail;
mod oidc;
mod server;
mod sinks;
mod state;
mod subscriptions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub use botconnector::BotCall;
pub use faults::{Fault, FaultKind, Faults};
pub use oidc::OidcUser;
pub use state::{CommentShape, Listing, OrderBy, Paging, Recorded, ServerOrder};
pub use subscriptions::Delivery;

use state::{Inner, Shared, Workflow, random_string};

/// How to start an [`Emulator`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Serve https with a certificate from a generated test CA (see [`Emulator::ca_pem`]).
    pub tls: bool,
    /// Default number of alerts per list page (`$top` overrides it per request).
    pub page_size: usize,
    /// The tenant that managed-identity tokens belong to.
    pub default_tenant: String,
    /// Port to listen on at 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Which body shapes the comments endpoint accepts.
    pub comment_shape: CommentShape,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tls: false,
            page_size: 100,
            default_tenant: "00000000-0000-0000-0000-000000000001".to_string(),
            port: 0,
            comment_shape: CommentShape::Both,
        }
    }
}

/// A running emulator; dropping it (or [`Emulator::shutdown`]) stops the server.
pub struct Emulator {
    state: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
    ca_pem: Option<String>,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Emulator {
    /// Binds 127.0.0.1 and starts serving in the background on the current Tokio runtime.
    pub async fn start(opts: Options) -> anyhow::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let (tls, ca_pem) = if opts.tls {
            let (acceptor, pem) = server::tls_acceptor()?;
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let scheme = if opts.tls { "https" } else { "http" };
        // Outgoing calls (validation handshakes, notifications) go to test receivers, often self-signed.
        let http = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build()?;
        let state = Arc::new(Shared {
            base_url: format!("{scheme}://{addr}"),
            identity_header: random_string(32),
            mi_client_id: uuid::Uuid::new_v4().to_string(),
            default_tenant: opts.default_tenant,
            page_size: opts.page_size.clamp(1, alerts::MAX_TOP),
            faults: Faults::default(),
            http,
            bot_key: std::sync::OnceLock::new(),
            inner: Mutex::new(Inner { comment_shape: opts.comment_shape, ..Inner::default() }),
        });
        let task = server::spawn(listener, tls, state.clone());
        Ok(Emulator { state, task, addr, ca_pem })
    }

    /// Stops the server and waits until its socket is closed.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The accept loop owns the listener and the connection tasks; awaiting it frees both.
        let _ = (&mut self.task).await;
    }

    /// The server's root, e.g. `http://127.0.0.1:PORT` (`https` when TLS is on).
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// The Graph root: `base_url() + "/v1.0"`.
    pub fn graph_url(&self) -> String {
        self.state.graph_url()
    }

    /// The Entra authority: tokens are at `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn authority_url(&self) -> String {
        self.base_url()
    }

    /// The App Service managed-identity endpoint (`IDENTITY_ENDPOINT`).
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.base_url())
    }

    /// The secret expected in `x-identity-header` (`IDENTITY_HEADER`).
    pub fn identity_header(&self) -> String {
        self.state.identity_header.clone()
    }

    /// The client id reported for the system-assigned managed identity.
    pub fn managed_identity_client_id(&self) -> String {
        self.state.mi_client_id.clone()
    }

    /// The test CA's certificate in PEM, when TLS is on.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca_pem.clone()
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A Workflows-like trigger URL for a named Teams channel (created on first call, stable after).
    pub fn teams_webhook_url(&self, name: &str) -> String {
        let sig = {
            let mut inner = self.state.lock();
            inner
                .workflows
                .entry(name.to_string())
                .or_insert_with(|| Workflow { sig: random_string(43), messages: Vec::new() })
                .sig
                .clone()
        };
        format!(
            "{}/workflows/{name}/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}",
            self.base_url()
        )
    }

    /// A generic JSON sink URL that records headers and body of every POST.
    pub fn webhook_sink_url(&self, name: &str) -> String {
        format!("{}/sink/{name}", self.base_url())
    }

    /// Accepts these client credentials for a tenant (a secret, or any JWT-shaped assertion).
    pub fn add_client(&self, tenant: &str, client_id: &str, client_secret: &str) {
        self.state.lock().clients.insert((tenant.to_string(), client_id.to_string()), client_secret.to_string());
    }

    /// Inserts alerts into a tenant, replacing any with the same `id` (alerts without an `id` are ignored).
    pub fn seed_alerts(&self, tenant: &str, alerts: Vec<Value>) {
        let mut inner = self.state.lock();
        let store = inner.alerts.entry(tenant.to_string()).or_default();
        for alert in alerts {
            if let Some(id) = alert.get("id").and_then(Value::as_str) {
                store.insert(id.to_string(), alert);
            }
        }
    }

    /// Removes every alert of a tenant.
    pub fn clear_alerts(&self, tenant: &str) {
        self.state.lock().alerts.remove(tenant);
    }

    /// Seeds the documented sample alerts (list and Sentinel examples) with `tenantId` set to `tenant`.
    pub fn seed_samples(&self, tenant: &str) {
        self.seed_alerts(tenant, generate::samples(tenant));
    }

    /// Seeds `n` realistic, varied alerts, deterministic from `seed`, updated progressively after `start`.
    pub fn generate_alerts(&self, tenant: &str, n: usize, seed: u64, start: DateTime<Utc>) {
        self.seed_alerts(tenant, generate::alerts(tenant, n, seed, start));
    }

    /// Simulates an update to an alert by setting its lastUpdateDateTime; false if there is no such alert.
    pub fn touch_alert(&self, tenant: &str, id: &str, at: DateTime<Utc>) -> bool {
        let mut inner = self.state.lock();
        match inner.alerts.get_mut(tenant).and_then(|m| m.get_mut(id)) {
            Some(alert) => {
                alert["lastUpdateDateTime"] = json!(state::fmt_time(at));
                true
            }
            None => false,
        }
    }

    /// A tenant's alerts as stored, most recent first.
    pub fn alerts(&self, tenant: &str) -> Vec<Value> {
        let inner = self.state.lock();
        let mut list: Vec<&Value> = inner.alerts.get(tenant).map(|m| m.values().collect()).unwrap_or_default();
        alerts::sort_recent_first(&mut list);
        list.into_iter().cloned().collect()
    }

    /// One alert as stored.
    pub fn alert(&self, tenant: &str, id: &str) -> Option<Value> {
        self.state.lock().alerts.get(tenant).and_then(|m| m.get(id)).cloned()
    }

    /// Every request received so far, in the order their handling finished.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().requests.clone()
    }

    /// Accepted alert PATCHes: (tenant, alert id, body).
    pub fn patches(&self) -> Vec<(String, String, Value)> {
        self.state.lock().patches.clone()
    }

    /// Accepted alert comments: (tenant, alert id, comment text).
    pub fn comments(&self) -> Vec<(String, String, String)> {
        self.state.lock().comments.clone()
    }

    /// Accepted sendMail calls: (tenant, sender from the path, sendMail body).
    pub fn mails(&self) -> Vec<(String, String, Value)> {
        self.state.lock().mails.clone()
    }

    /// Messages accepted by a named Teams Workflows trigger.
    pub fn teams_messages(&self, name: &str) -> Vec<Value> {
        self.state.lock().workflows.get(name).map(|w| w.messages.clone()).unwrap_or_default()
    }

    /// Deliveries to a named webhook sink: (headers with lower-case names, raw body).
    pub fn webhook_deliveries(&self, name: &str) -> Vec<(HashMap<String, String>, Vec<u8>)> {
        self.state.lock().sinks.get(name).cloned().unwrap_or_default()
    }

    /// The deliveries to sink `name` from number `from` (0-based) on: a waiter that counts what arrived
    /// copies only what is new, and holds the emulator's lock only for that.
    pub fn webhook_deliveries_from(&self, name: &str, from: usize) -> Vec<(HashMap<String, String>, Vec<u8>)> {
        self.state.lock().sinks.get(name).map(|d| d.get(from..).unwrap_or_default().to_vec()).unwrap_or_default()
    }

    /// The handle to inject faults.
    pub fn faults(&self) -> Faults {
        self.state.faults.clone()
    }

    /// How alert lists are ordered and paged from now on.
    pub fn set_listing(&self, listing: Listing) {
        self.state.lock().listing = listing;
    }

    /// After each list page served for `tenant` (any listing), upserts the next batch of `batches`.
    pub fn change_between_pages(&self, tenant: &str, batches: Vec<Vec<Value>>) {
        self.state.lock().between_pages.entry(tenant.to_string()).or_default().extend(batches);
    }

    /// Which comment body shapes are accepted from now on.
    pub fn set_comment_shape(&self, shape: CommentShape) {
        self.state.lock().comment_shape = shape;
    }

    /// The emulator's clock: the time set by [`Emulator::set_now`], else the wall clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.state.now()
    }

    /// Fixes the emulator's clock (token expiry, PATCH times, subscription lifetimes); `None` follows the wall clock.
    pub fn set_now(&self, now: Option<DateTime<Utc>>) {
        self.state.lock().now = now;
    }

    /// The Bot Connector stand-in's OpenID metadata URL (what a bot fetches its signing keys through).
    pub fn bot_openid_url(&self) -> String {
        format!("{}/botframework/v1/.well-known/openidconfiguration", self.state.base_url)
    }

    /// The Bot Connector stand-in's service URL (activities' `serviceUrl`; the bot posts under it).
    pub fn bot_service_url(&self) -> String {
        format!("{}/botconnector/", self.state.base_url)
    }

    /// A Bot Connector token as the stand-in signs it for an activity to the bot `app_id`: issuer
    /// `https://api.botframework.com`, audience `app_id`, the `serviceUrl` claim, valid for an hour from
    /// `issued`. [`Emulator::bot_token_with`] makes the broken ones.
    pub fn bot_token(&self, app_id: &str, service_url: &str, issued: DateTime<Utc>) -> String {
        self.bot_token_with(&json!({
            "iss": botconnector::ISSUER,
            "aud": app_id,
            "serviceUrl": service_url,
            "nbf": issued.timestamp(),
            "iat": issued.timestamp(),
            "exp": issued.timestamp() + 3600,
        }))
    }

    /// A token of exactly `claims`, signed with the stand-in's key.
    pub fn bot_token_with(&self, claims: &Value) -> String {
        let key = botconnector::key(&self.state.bot_key);
        key.sign(&key.kid, claims)
    }

    /// A forgery: `claims` signed with a key of the forger's own under the stand-in's `kid`.
    pub fn forged_bot_token(&self, claims: &Value) -> String {
        let kid = botconnector::key(&self.state.bot_key).kid.clone();
        botconnector::SigningKey::generate().sign(&kid, claims)
    }

    /// Makes `user` (an object id or UPN) of `tenant` a member of `groups`, as `checkMemberGroups` sees it
    /// (transitive membership included: list the groups it reaches through nesting too).
    pub fn add_member(&self, tenant: &str, user: &str, groups: &[&str]) {
        let mut inner = self.state.lock();
        let entry = inner.members.entry((tenant.to_string(), user.to_ascii_lowercase())).or_default();
        entry.extend(groups.iter().map(|g| g.to_string()));
    }

    /// The Bot Connector delivering `activity` to a bot's messaging endpoint `url`, as Teams does on a
    /// card click: signed with the stand-in's key for the bot `app_id` and the activity's `serviceUrl`,
    /// issued at the emulator's clock. Returns the status and body of the bot's answer.
    pub async fn send_activity(&self, url: &str, app_id: &str, activity: &Value) -> anyhow::Result<(u16, String)> {
        let service_url = activity.get("serviceUrl").and_then(Value::as_str).unwrap_or_default();
        let token = self.bot_token(app_id, service_url, self.now() - chrono::Duration::minutes(1));
        self.post_activity_with(url, Some(&token), activity).await
    }

    /// Posts `activity` to `url` with `token` (or none): forged, expired or misaddressed deliveries.
    pub async fn post_activity_with(
        &self,
        url: &str,
        token: Option<&str>,
        activity: &Value,
    ) -> anyhow::Result<(u16, String)> {
        let mut req = self.state.http.post(url).json(activity);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    /// The OpenID provider stand-in's issuer (`{base}/oidc`): the triage page's `oidc.issuer` in tests.
    pub fn oidc_issuer(&self) -> String {
        format!("{}/oidc", self.state.base_url)
    }

    /// Who the OpenID provider stand-in signs in from now on.
    pub fn set_oidc_user(&self, user: OidcUser) {
        self.state.lock().oidc_user = Some(user);
    }

    /// Every call bots made to the Bot Connector stand-in (posts and updates), in order.
    pub fn bot_calls(&self) -> Vec<BotCall> {
        self.state.lock().bot_calls.clone()
    }

    /// Issues a Graph access token for a tenant directly, bypassing the token endpoint (with the
    /// client's roles, for the global Graph).
    pub fn issue_token(&self, tenant: &str, client_id: &str) -> String {
        let roles = self.state.client_roles(tenant, client_id);
        self.state.issue_token(tenant, client_id, "https://graph.microsoft.com", roles, 3599).0
    }

    /// Grants a client of a tenant exactly these application roles (the token's `roles` claim, and
    /// what Graph checks: listing alerts needs `SecurityAlert.Read.All` or `.ReadWrite.All`, updating and
    /// commenting `SecurityAlert.ReadWrite.All`, sendMail `Mail.Send`). By default a client has
    /// `SecurityAlert.ReadWrite.All` and `Mail.Send`.
    pub fn set_client_roles(&self, tenant: &str, client_id: &str, roles: &[&str]) {
        self.state
            .lock()
            .client_roles
            .insert((tenant.to_string(), client_id.to_string()), roles.iter().map(|r| r.to_string()).collect());
    }

    /// Grants the managed identity exactly these application roles (default as for clients).
    pub fn set_managed_identity_roles(&self, roles: &[&str]) {
        self.state.lock().mi_roles = Some(roles.iter().map(|r| r.to_string()).collect());
    }

    /// Makes token requests of this client fail as Entra does when no admin consented to the app in
    /// the tenant: 400 `invalid_grant`, AADSTS65001, `suberror: consent_required`.
    pub fn set_consent_missing(&self, tenant: &str, client_id: &str) {
        self.state.lock().consent_missing.insert((tenant.to_string(), client_id.to_string()));
    }

    /// Makes Graph's `Date` response header this far from the emulator's clock (a skewed client clock
    /// looks the same from the client's side); `None` sends the true time.
    pub fn set_date_skew(&self, skew: Option<chrono::Duration>) {
        self.state.lock().date_skew = skew;
    }

    /// Puts a message in a mailbox and notifies every live subscription on its messages.
    pub async fn deliver_mail(&self, tenant: &str, mailbox_upn: &str, subject: &str) -> Vec<Delivery> {
        subscriptions::deliver_mail(&self.state, tenant, mailbox_upn, subject).await
    }

    /// Messages delivered to a mailbox with [`Emulator::deliver_mail`]: `{id, subject, receivedDateTime}`.
    pub fn mailbox(&self, tenant: &str, mailbox_upn: &str) -> Vec<Value> {
        self.state
            .lock()
            .mailboxes
            .get(&(tenant.to_string(), mailbox_upn.to_ascii_lowercase()))
            .cloned()
            .unwrap_or_default()
    }

    /// Posts a lifecycle notification (`reauthorizationRequired`, `subscriptionRemoved`, `missed`).
    pub async fn send_lifecycle(&self, subscription_id: &str, event: &str) -> anyhow::Result<Delivery> {
        subscriptions::send_lifecycle(&self.state, subscription_id, event).await
    }

    /// Posts any JSON body to a URL as Graph posts notifications; returns the status, `None` on failure.
    pub async fn post_notification_raw(&self, url: &str, body: &Value) -> Option<u16> {
        subscriptions::post_json(&self.state, url, body).await
    }
}
