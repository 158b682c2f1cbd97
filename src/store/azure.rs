//! The store contract on Azure Storage: Blob storage for state, claims and audit streams, Storage
//! Queues for the queue, through the official `azure_storage_blob` / `azure_storage_queue` crates.
//!
//! Layout:
//! - values: block blobs `kv/<key>` in container [`STATE_CONTAINER`]; the blob's ETag is the version,
//!   `If-None-Match: *` creates only (409 when it exists), `If-Match` swaps only (412 when stale);
//! - claims: block blobs `claim/<key>` in the same container holding `{"done":false,"lease_until":…}`;
//!   the first claim is a create-only write, an expired lease is taken over with `If-Match` on the
//!   ETag just read, so two takers of one expired lease cannot both win. The holder's token is the
//!   ETag of its write: renew, complete and release are writes (or a delete) with `If-Match` on it, so
//!   each is one request and fails (412) once anyone else has written the claim. A completed record
//!   names the token that completed it, so the holder may complete again;
//! - streams: append blobs `<stream>` in container [`AUDIT_CONTAINER`], one append block per record
//!   (a block is written whole or not at all), framed as `<length>:<bytes>\n` so records may hold any byte.
//!   Record `n` is the `n`th block: an append reads the blob's committed block count and length and
//!   appends with the append-position condition at that length, so two writers of one number cannot
//!   both land (412). The store remembers the count and length after its own append, so the next one
//!   tries that position at once (a 412 sends it back to reading them). An append blob takes 50,000
//!   blocks: the audit trail writes segments of 10,000 records ([`crate::audit`]), one blob each;
//! - retention: every state blob carries its write time on the store's clock (metadata
//!   `secmonwritten`), which [`Store::scan`] lists with the ETag; [`Store::delete_if`] deletes with
//!   `If-Match`. Deleting an audit blob the container's immutability policy still keeps is refused;
//! - queues: Storage Queues; message text is the body in standard base64, which is what the Functions
//!   queue trigger decodes with host.json's `messageEncoding: base64`. Messages never expire (TTL -1):
//!   an alert left on a queue for a week is late, not lost.
//!
//! Authentication: in Azure, the function's user-assigned managed identity (`AZURE_CLIENT_ID`), over
//! https. For local development against Azurite only, a SAS appended to the URLs
//! (`SECMON_STORAGE_SAS`); there is deliberately no shared-key or connection-string path.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RequestContent, Url};
use azure_core::http::{ExponentialRetryOptions, RetryOptions};
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_storage_blob::models::{
    AppendBlobClientAppendBlockOptions, AppendBlobClientCreateOptions, BlobClientDeleteOptions,
    BlobClientGetPropertiesResultHeaders, BlobClientUploadOptions, BlobContainerClientListBlobsOptions,
    ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobServiceClient, BlobServiceClientOptions};
use azure_storage_queue::models::{
    QueueClientGetPropertiesResultHeaders, QueueClientReceiveMessagesOptions, QueueClientSendMessageOptions,
    QueueMessage,
};
use azure_storage_queue::{QueueClient, QueueServiceClient, QueueServiceClientOptions};
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{
    Claim, Etag, Listed, Precondition, Queue, Received, Space, Store, StoreError, StoreResult, Token, Versioned,
    poison_name,
};
use crate::clock::{Clock, SystemClock};

/// The container holding values and claims.
pub const STATE_CONTAINER: &str = "secmon-state";
/// The container holding the audit streams (append blobs).
pub const AUDIT_CONTAINER: &str = "secmon-audit";
/// How many times a message is received before it is poison; the Functions host's default.
pub const DEFAULT_MAX_DEQUEUE: u32 = 5;
/// The largest queue body: a Storage Queue message holds 64 KiB of text, 48 KiB of body once in
/// base64; 45 KiB leaves room for the encoding's padding and the service's own accounting.
pub const MAX_BODY: usize = 45 * 1024;

/// Where the Azure store lives and how it authenticates, usually read from the environment.
#[derive(Clone)]
pub struct AzureSettings {
    /// Blob service URL (`https://<account>.blob.core.windows.net`).
    pub blob_url: String,
    /// Queue service URL (`https://<account>.queue.core.windows.net`).
    pub queue_url: String,
    /// How requests are authorized.
    pub auth: AzureAuth,
}

impl std::fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            AzureAuth::ManagedIdentity { client_id } => format!("managed identity {client_id:?}"),
            AzureAuth::Token(_) => "token credential".into(),
            AzureAuth::Sas(_) => "SAS (local development)".into(),
        };
        f.debug_struct("AzureSettings")
            .field("blob_url", &self.blob_url)
            .field("queue_url", &self.queue_url)
            .field("auth", &auth)
            .finish()
    }
}

/// How the store authorizes its requests.
#[derive(Clone)]
pub enum AzureAuth {
    /// The managed identity of the function app; `Some(client id)` for a user-assigned identity.
    ManagedIdentity {
        /// Client id of the user-assigned identity (`AZURE_CLIENT_ID`); `None` for the system-assigned one.
        client_id: Option<String>,
    },
    /// Any Entra token credential (https only).
    Token(Arc<dyn TokenCredential>),
    /// A SAS query string appended to every URL (local development against Azurite).
    Sas(String),
}

/// Why the Azure store could not be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum AzureSetupError {
    /// A required environment variable is missing or empty.
    #[error("{0} is not set; the Azure store needs SECMON_BLOB_URL and SECMON_QUEUE_URL")]
    Missing(&'static str),
    /// A URL does not parse or is not usable.
    #[error("{name}: {reason}")]
    BadUrl {
        /// Which setting.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The credential or a client could not be built.
    #[error("Azure client: {0}")]
    Client(String),
    /// The containers could not be checked or created (the identity may lack a role, or the
    /// account is unreachable); retrying may help.
    #[error("Azure storage at start-up: {0}")]
    Startup(String),
}

impl AzureSettings {
    /// Reads `SECMON_BLOB_URL`, `SECMON_QUEUE_URL`, and either `SECMON_STORAGE_SAS` (local
    /// development) or the managed identity (`AZURE_CLIENT_ID` for a user-assigned one).
    pub fn from_env() -> Result<Self, AzureSetupError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// As [`AzureSettings::from_env`], with an explicit lookup (tests).
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, AzureSetupError> {
        let get = |name: &'static str| env(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let blob_url = get("SECMON_BLOB_URL").ok_or(AzureSetupError::Missing("SECMON_BLOB_URL"))?;
        let queue_url = get("SECMON_QUEUE_URL").ok_or(AzureSetupError::Missing("SECMON_QUEUE_URL"))?;
        let auth = match get("SECMON_STORAGE_SAS") {
            Some(sas) => {
                let sas = sas.trim_start_matches('?').to_string();
                // The SAS is a bearer secret: mask it wherever it might be printed.
                crate::redact::global().add(&sas);
                AzureAuth::Sas(sas)
            }
            None => AzureAuth::ManagedIdentity { client_id: get("AZURE_CLIENT_ID") },
        };
        Ok(Self { blob_url, queue_url, auth })
    }
}

/// Parses a service URL, drops a trailing slash (so child paths join cleanly) and appends the SAS.
fn service_url(name: &'static str, raw: &str, auth: &AzureAuth) -> Result<Url, AzureSetupError> {
    let bad = |reason: String| AzureSetupError::BadUrl { name, reason };
    let mut url = Url::parse(raw).map_err(|e| bad(format!("{e}")))?;
    if url.query().is_some() {
        return Err(bad("must not carry a query; put a SAS in SECMON_STORAGE_SAS".into()));
    }
    match auth {
        AzureAuth::Sas(sas) => url.set_query(Some(sas)),
        _ if url.scheme() != "https" => return Err(bad("an Entra token is only sent over https".into())),
        _ => {}
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

/// [`Store`] and [`Queue`] on one Azure Storage account.
pub struct AzureStore {
    state: BlobContainerClient,
    audit: BlobContainerClient,
    queues: QueueServiceClient,
    clock: Arc<dyn Clock>,
    max_dequeue: u32,
    /// The block count and length of the streams this store last appended to, so the next append to one
    /// tries its append position at once instead of reading the blob's properties first (a wrong guess
    /// costs one refused append, then the properties are read as without it).
    tails: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
    requests: Arc<Requests>,
}

/// Counts every storage request the store's clients send, each try of a retried one included: a
/// pipeline policy, so nothing the SDK sends on the store's behalf is missed.
#[derive(Debug, Default)]
struct Requests(std::sync::atomic::AtomicU64);

#[async_trait]
impl azure_core::http::policies::Policy for Requests {
    async fn send(
        &self,
        ctx: &azure_core::http::Context,
        request: &mut azure_core::http::Request,
        next: &[Arc<dyn azure_core::http::policies::Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// How many streams' tails an [`AzureStore`] remembers (one per open segment of each tenant is enough).
const TAILS: usize = 256;

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStore").field("max_dequeue", &self.max_dequeue).finish_non_exhaustive()
    }
}

impl AzureStore {
    /// Builds the clients and makes sure both containers exist.
    pub async fn connect(settings: &AzureSettings) -> Result<Self, AzureSetupError> {
        Self::connect_in(settings, STATE_CONTAINER, AUDIT_CONTAINER).await
    }

    /// [`AzureStore::connect`] with other container names: a store of its own on a shared account
    /// (tests that sweep, whose deletes must not reach other tests' keys).
    pub async fn connect_in(settings: &AzureSettings, state: &str, audit: &str) -> Result<Self, AzureSetupError> {
        let blob_url = service_url("SECMON_BLOB_URL", &settings.blob_url, &settings.auth)?;
        let queue_url = service_url("SECMON_QUEUE_URL", &settings.queue_url, &settings.auth)?;
        let credential: Option<Arc<dyn TokenCredential>> = match &settings.auth {
            AzureAuth::Sas(_) => None,
            AzureAuth::Token(t) => Some(t.clone()),
            AzureAuth::ManagedIdentity { client_id } => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    ..Default::default()
                };
                let c: Arc<dyn TokenCredential> =
                    ManagedIdentityCredential::new(Some(options)).map_err(|e| AzureSetupError::Client(redacted(&e)))?;
                Some(c)
            }
        };
        let requests = Arc::new(Requests::default());
        let blob_options = BlobServiceClientOptions { client_options: client_options(&requests), ..Default::default() };
        let blobs = BlobServiceClient::new(blob_url, credential.clone(), Some(blob_options))
            .map_err(|e| AzureSetupError::Client(redacted(&e)))?;
        let queue_options =
            QueueServiceClientOptions { client_options: client_options(&requests), ..Default::default() };
        let queues = QueueServiceClient::new(queue_url, credential, Some(queue_options))
            .map_err(|e| AzureSetupError::Client(redacted(&e)))?;
        let store = Self {
            state: blobs.blob_container_client(state),
            audit: blobs.blob_container_client(audit),
            queues,
            clock: Arc::new(SystemClock),
            max_dequeue: DEFAULT_MAX_DEQUEUE,
            tails: Default::default(),
            requests,
        };
        for (name, container) in [(state, &store.state), (audit, &store.audit)] {
            match container.create(None).await {
                Ok(_) => {}
                Err(e) if status(&e) == Some(409) => {}
                // An identity with roles on some containers only (the Azure "edge" app has none on the
                // audit container, see docs/deploy.md) may not create them; the deployment does. A
                // missing role still shows on the first read or write that needs it.
                Err(e) if status(&e) == Some(403) => {
                    tracing::info!(container = name, "not allowed to create the container; using it as deployed");
                }
                Err(e) => return Err(AzureSetupError::Startup(redacted(&e))),
            }
        }
        Ok(store)
    }

    /// Uses `clock` for claim leases (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how many receives make a message poison (host.json's `maxDequeueCount`).
    pub fn with_max_dequeue(mut self, n: u32) -> Self {
        self.max_dequeue = n;
        self
    }

    fn tail(&self, stream: &str) -> Option<(u64, u64)> {
        self.tails.lock().ok()?.get(stream).copied()
    }

    fn remember_tail(&self, stream: &str, tail: (u64, u64)) {
        if let Ok(mut tails) = self.tails.lock() {
            if tails.len() >= TAILS && !tails.contains_key(stream) {
                tails.clear();
            }
            tails.insert(stream.to_string(), tail);
        }
    }

    /// Storage requests sent so far (every try, start-up included): what a stage costs in operations.
    pub fn requests(&self) -> u64 {
        self.requests.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn queue(&self, name: &str) -> StoreResult<QueueClient> {
        check_queue_name(name)?;
        self.queues.queue_client(name).map_err(|e| backend("queue client", &e))
    }
}

/// Storage calls retry a few times quickly; the queue and the host's retries cover longer outages.
/// Every try is counted in `requests`.
fn client_options(requests: &Arc<Requests>) -> ClientOptions {
    ClientOptions {
        per_try_policies: vec![requests.clone()],
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            max_retries: 3,
            max_total_elapsed: azure_core::time::Duration::seconds(20),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn redacted(e: &azure_core::Error) -> String {
    crate::redact::redact(&e.to_string())
}

fn status(e: &azure_core::Error) -> Option<u16> {
    e.http_status().map(u16::from)
}

fn backend(what: &str, e: &azure_core::Error) -> StoreError {
    StoreError::Backend(format!("{what}: {}", redacted(e)))
}

fn conflict(key: &str) -> StoreError {
    StoreError::Conflict { key: key.to_string() }
}

/// Blob names: at most 1024 characters, no control characters, and no trailing `/` or `.`
/// (the service trims those, so two keys would name one blob).
fn check_key(key: &str) -> StoreResult<()> {
    let invalid = |reason| Err(StoreError::InvalidKey { key: key.to_string(), reason });
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > 1000 {
        return invalid("longer than 1000 bytes");
    }
    if key.chars().any(char::is_control) {
        return invalid("contains a control character");
    }
    if key.ends_with('/') || key.ends_with('.') {
        return invalid("ends with '/' or '.'");
    }
    Ok(())
}

/// Storage Queue names: 3–63 lower-case letters, digits and single hyphens, not starting or ending
/// with a hyphen.
fn check_queue_name(name: &str) -> StoreResult<()> {
    let ok = (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidKey {
            key: name.to_string(),
            reason: "a queue name is 3-63 lower-case letters, digits and single hyphens",
        })
    }
}

/// The metadata every state blob carries: when it was written (milliseconds since 1970, the store's
/// clock), which [`Store::scan`] reports; a blob without it reports the service's last-modified time.
const WRITTEN: &str = "secmonwritten";

fn space_blob(space: Space, key: &str) -> String {
    match space {
        Space::Values => value_blob(key),
        Space::Claims => claim_blob(key),
    }
}

/// An ETag in one form whatever returned it (a response header carries it quoted, a listing may not),
/// so a listed version compares equal to a read one and goes back in `If-Match` as the header form.
fn quoted(etag: &str) -> String {
    if etag.starts_with('"') { etag.to_string() } else { format!("\"{etag}\"") }
}

fn value_blob(key: &str) -> String {
    format!("kv/{key}")
}

fn claim_blob(key: &str) -> String {
    format!("claim/{key}")
}

/// What a claim blob holds.
#[derive(Debug, Serialize, Deserialize)]
struct ClaimRecord {
    done: bool,
    lease_until: DateTime<Utc>,
    /// The token that completed it (absent in records older than fencing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_by: Option<String>,
}

impl ClaimRecord {
    fn held(until: DateTime<Utc>) -> Vec<u8> {
        serde_json::to_vec(&ClaimRecord { done: false, lease_until: until, completed_by: None })
            .expect("claim records serialize")
    }
}

impl AzureStore {
    /// Downloads a blob with its ETag; `None` when absent.
    async fn read_blob(container: &BlobContainerClient, name: &str) -> StoreResult<Option<(Vec<u8>, String)>> {
        let blob = container.blob_client(name);
        let response = match blob.download(None).await {
            Ok(r) => r,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(backend(&format!("read {name}"), &e)),
        };
        let etag = response
            .properties
            .etag
            .as_ref()
            .map(|e| quoted(e.as_ref()))
            .ok_or_else(|| StoreError::Backend(format!("read {name}: no ETag in the response")))?;
        let body = response.body.collect().await.map_err(|e| backend(&format!("read {name}"), &e))?;
        Ok(Some((body.to_vec(), etag)))
    }

    /// Uploads a block blob under `cond` (`None` = unconditional); maps lost conditions to Conflict.
    async fn write_blob(&self, name: &str, key: &str, value: &[u8], cond: Option<&Precondition>) -> StoreResult<Etag> {
        let written = self.clock.now().timestamp_millis().to_string();
        let mut options = BlobClientUploadOptions {
            metadata: Some(std::collections::HashMap::from([(WRITTEN.to_string(), written)])),
            ..Default::default()
        };
        match cond {
            Some(Precondition::Absent) => options = options.if_not_exists(),
            Some(Precondition::Matches(etag)) => options.if_match = Some(etag.0.as_str().into()),
            None => {}
        }
        let content = RequestContent::from(value.to_vec());
        match self.state.blob_client(name).upload(content, Some(options)).await {
            Ok(result) => result
                .etag
                .map(|e| Etag(quoted(e.as_ref())))
                .ok_or_else(|| StoreError::Backend(format!("write {name}: no ETag in the response"))),
            // 409: exists (create-only); 412: changed since read; 404: gone since read (If-Match).
            Err(e) if cond.is_some() && matches!(status(&e), Some(409 | 412 | 404)) => Err(conflict(key)),
            Err(e) => Err(backend(&format!("write {name}"), &e)),
        }
    }

    async fn list_names(container: &BlobContainerClient, prefix: &str) -> StoreResult<Vec<String>> {
        let options = BlobContainerClientListBlobsOptions { prefix: Some(prefix.to_string()), ..Default::default() };
        let mut pager = container.list_blobs(Some(options)).map_err(|e| backend("list", &e))?;
        let mut names = Vec::new();
        while let Some(item) = pager.try_next().await.map_err(|e| backend("list", &e))? {
            if let Some(name) = item.name {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn read_claim(&self, key: &str) -> StoreResult<Option<(ClaimRecord, String)>> {
        let name = claim_blob(key);
        let Some((body, etag)) = Self::read_blob(&self.state, &name).await? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&body)
            .map_err(|e| StoreError::Backend(format!("claim blob {name} is not a claim record: {e}")))?;
        Ok(Some((record, etag)))
    }
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::days(3650))
}

#[async_trait]
impl Store for AzureStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        check_key(key)?;
        Ok(Self::read_blob(&self.state, &value_blob(key))
            .await?
            .map(|(value, etag)| Versioned { value, etag: Etag(etag) }))
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Precondition) -> StoreResult<Etag> {
        check_key(key)?;
        self.write_blob(&value_blob(key), key, value, Some(&cond)).await
    }

    async fn put(&self, key: &str, value: &[u8]) -> StoreResult<Etag> {
        check_key(key)?;
        self.write_blob(&value_blob(key), key, value, None).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        check_key(key)?;
        match self.state.blob_client(&value_blob(key)).delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(backend(&format!("delete {key}"), &e)),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let names = Self::list_names(&self.state, &value_blob(prefix)).await?;
        Ok(names.into_iter().filter_map(|n| n.strip_prefix("kv/").map(str::to_string)).collect())
    }

    async fn claim(&self, key: &str, lease: Duration) -> StoreResult<Claim> {
        check_key(key)?;
        let name = claim_blob(key);
        // Most keys are claimed for the first time: create the claim first (one request) and read it
        // only when it exists. A few rounds at most: each lost race means someone else changed it.
        let mut cond = Precondition::Absent;
        for _ in 0..5 {
            let now = self.clock.now();
            let body = ClaimRecord::held(lease_end(now, lease));
            match self.write_blob(&name, key, &body, Some(&cond)).await {
                Ok(etag) => return Ok(Claim::Acquired(Token(etag.0))),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            cond = match self.read_claim(key).await? {
                None => Precondition::Absent,
                Some((held, _)) if held.done => return Ok(Claim::Done),
                Some((held, _)) if held.lease_until > now => return Ok(Claim::Held),
                // The holder crashed (or stalled): take it over, but only from the version just read.
                Some((_, etag)) => Precondition::Matches(Etag(etag)),
            };
        }
        // Still contended after several rounds: someone else is acting on it right now.
        Ok(Claim::Held)
    }

    async fn renew(&self, key: &str, token: &Token, lease: Duration) -> StoreResult<Token> {
        check_key(key)?;
        let body = ClaimRecord::held(lease_end(self.clock.now(), lease));
        let cond = Precondition::Matches(Etag(token.0.clone()));
        match self.write_blob(&claim_blob(key), key, &body, Some(&cond)).await {
            Ok(etag) => Ok(Token(etag.0)),
            Err(StoreError::Conflict { .. }) => Err(StoreError::NotHolder { key: key.into() }),
            Err(e) => Err(e),
        }
    }

    async fn complete(&self, key: &str, token: &Token) -> StoreResult<()> {
        check_key(key)?;
        let record = ClaimRecord { done: true, lease_until: self.clock.now(), completed_by: Some(token.0.clone()) };
        let body = serde_json::to_vec(&record).expect("claim records serialize");
        let cond = Precondition::Matches(Etag(token.0.clone()));
        match self.write_blob(&claim_blob(key), key, &body, Some(&cond)).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => match self.read_claim(key).await? {
                Some((r, _)) if r.done && r.completed_by.as_ref() == Some(&token.0) => Ok(()),
                _ => Err(StoreError::NotHolder { key: key.into() }),
            },
            Err(e) => Err(e),
        }
    }

    async fn release(&self, key: &str, token: &Token) -> StoreResult<()> {
        check_key(key)?;
        // Delete only the holder's version, so neither a completion nor another holder is undone.
        let options = BlobClientDeleteOptions { if_match: Some(token.0.as_str().into()), ..Default::default() };
        match self.state.blob_client(&claim_blob(key)).delete(Some(options)).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(status(&e), Some(404 | 412)) => match self.read_claim(key).await? {
                Some((r, _)) if r.done => Ok(()),
                _ => Err(StoreError::NotHolder { key: key.into() }),
            },
            Err(e) => Err(backend(&format!("release {key}"), &e)),
        }
    }

    async fn append(&self, stream: &str, seq: u64, record: &[u8]) -> StoreResult<()> {
        check_key(stream)?;
        let mut frame = format!("{}:", record.len()).into_bytes();
        frame.extend_from_slice(record);
        frame.push(b'\n');
        let client = self.audit.blob_client(stream);
        let blob = client.append_blob_client();
        let taken = || StoreError::Conflict { key: format!("{stream}#{seq}") };
        let mut guess = self.tail(stream).filter(|(blocks, _)| blocks + 1 == seq);
        for _ in 0..5 {
            let known = guess.take();
            let (blocks, length) = match known {
                Some(tail) => tail,
                None => match client.get_properties(None).await {
                    Ok(r) => {
                        let what = format!("properties of {stream}");
                        let blocks = r.blob_committed_block_count().map_err(|e| backend(&what, &e))?.unwrap_or(0);
                        (
                            u64::try_from(blocks).unwrap_or(0),
                            r.content_length().map_err(|e| backend(&what, &e))?.unwrap_or(0),
                        )
                    }
                    Err(e) if status(&e) == Some(404) => {
                        // First record of the stream: create the append blob (create-only, so a
                        // concurrent creator's records are never wiped).
                        match blob.create(Some(AppendBlobClientCreateOptions::default().if_not_exists())).await {
                            Ok(_) => {}
                            Err(e) if status(&e) == Some(409) => {}
                            Err(e) => return Err(backend(&format!("create stream {stream}"), &e)),
                        }
                        (0, 0)
                    }
                    Err(e) => return Err(backend(&format!("properties of {stream}"), &e)),
                },
            };
            if blocks >= seq {
                return Err(taken());
            }
            if blocks + 1 < seq {
                return Err(StoreError::Backend(format!("append to {stream}: record {seq} after only {blocks}")));
            }
            let options =
                AppendBlobClientAppendBlockOptions { append_position: Some(length as i64), ..Default::default() };
            let len = frame.len() as u64;
            match blob.append_block(RequestContent::from(frame.clone()), len, Some(options)).await {
                Ok(_) => {
                    self.remember_tail(stream, (seq, length + len));
                    return Ok(());
                }
                // Someone appended since the properties were read (or the blob was just created): look again.
                Err(e) if matches!(status(&e), Some(412 | 404)) => continue,
                Err(e) => return Err(backend(&format!("append to {stream}"), &e)),
            }
        }
        Err(StoreError::Backend(format!("append to {stream}: the stream kept changing while appending; retry")))
    }

    async fn read_stream(&self, stream: &str) -> StoreResult<Vec<Vec<u8>>> {
        check_key(stream)?;
        match Self::read_blob(&self.audit, stream).await? {
            None => Ok(Vec::new()),
            Some((bytes, _)) => parse_frames(&bytes).map_err(|e| StoreError::Backend(format!("stream {stream}: {e}"))),
        }
    }

    async fn list_streams(&self, prefix: &str) -> StoreResult<Vec<String>> {
        Self::list_names(&self.audit, prefix).await
    }

    async fn scan(&self, space: Space, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Listed>> {
        let area = space_blob(space, "");
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(space_blob(space, prefix)),
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            ..Default::default()
        };
        let mut pager = self.state.list_blobs(Some(options)).map_err(|e| backend("scan", &e))?;
        let mut out = Vec::new();
        // The service lists in name order; the cursor is skipped on this side (`marker` is opaque).
        while out.len() < limit {
            let Some(item) = pager.try_next().await.map_err(|e| backend("scan", &e))? else { break };
            let Some(key) = item.name.as_deref().and_then(|n| n.strip_prefix(area.as_str())) else { continue };
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            let properties = item.properties.as_ref();
            let Some(etag) = properties.and_then(|p| p.etag.as_ref()) else { continue };
            let stamped = item
                .metadata
                .as_ref()
                .and_then(|m| m.values.as_ref())
                .and_then(|v| v.get(WRITTEN))
                .and_then(|ms| ms.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_millis);
            let modified = properties
                .and_then(|p| p.last_modified)
                .and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()));
            let Some(written) = stamped.or(modified) else { continue };
            out.push(Listed { key: key.to_string(), etag: Etag(quoted(etag.as_ref())), written });
        }
        Ok(out)
    }

    async fn delete_if(&self, space: Space, key: &str, etag: &Etag) -> StoreResult<bool> {
        check_key(key)?;
        if space == Space::Claims {
            // Never a claim whose lease is still running, whatever its age.
            match self.read_claim(key).await? {
                Some((r, current)) if current == etag.0 && (r.done || r.lease_until <= self.clock.now()) => {}
                _ => return Ok(false),
            }
        }
        let options = BlobClientDeleteOptions { if_match: Some(etag.0.as_str().into()), ..Default::default() };
        match self.state.blob_client(&space_blob(space, key)).delete(Some(options)).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(status(&e), Some(404 | 412)) => Ok(false),
            Err(e) => Err(backend(&format!("delete {key}"), &e)),
        }
    }

    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        check_key(stream)?;
        if let Ok(mut tails) = self.tails.lock() {
            tails.remove(stream);
        }
        match self.audit.blob_client(stream).delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // The container's time-based retention policy keeps every audit blob for its period.
            Err(e) if matches!(status(&e), Some(409 | 403)) => Err(StoreError::Backend(format!(
                "delete {stream}: refused, the audit container's immutability policy still keeps it: {}",
                redacted(&e)
            ))),
            Err(e) => Err(backend(&format!("delete {stream}"), &e)),
        }
    }
}

/// Splits an append blob into its records (`<length>:<bytes>\n` each).
fn parse_frames(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut records = Vec::new();
    let mut offset = 0;
    while !bytes.is_empty() {
        let colon = bytes.iter().position(|b| *b == b':').ok_or(format!("no length at byte {offset}"))?;
        let len: usize = std::str::from_utf8(&bytes[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(format!("bad length at byte {offset}"))?;
        let end = colon + 1 + len;
        if bytes.len() <= end || bytes[end] != b'\n' {
            return Err(format!("record at byte {offset} is cut short"));
        }
        records.push(bytes[colon + 1..end].to_vec());
        bytes = &bytes[end + 1..];
        offset += end + 1;
    }
    Ok(records)
}

/// Storage Queue visibility timeouts are whole seconds, at least 1 and at most 7 days.
fn visibility_secs(d: Duration) -> i32 {
    d.as_secs_f64().ceil().clamp(1.0, 7.0 * 24.0 * 3600.0) as i32
}

#[async_trait]
impl Queue for AzureStore {
    async fn send(&self, queue: &str, body: &[u8]) -> StoreResult<()> {
        self.send_after(queue, body, Duration::ZERO).await
    }

    async fn send_after(&self, queue: &str, body: &[u8], delay: Duration) -> StoreResult<()> {
        let client = self.queue(queue)?;
        // Put Message's `visibilitytimeout`: the message appears after it (whole seconds, at least 1).
        let visibility = (!delay.is_zero()).then(|| visibility_secs(delay.min(super::MAX_DELAY)));
        let text = base64::engine::general_purpose::STANDARD.encode(body);
        for attempt in 0..2 {
            let message = QueueMessage { message_text: Some(text.clone()) };
            let content = message.try_into().map_err(|e| backend("encode message", &e))?;
            let options = QueueClientSendMessageOptions {
                message_time_to_live: Some(-1),
                visibility_timeout: visibility,
                ..Default::default()
            };
            match client.send_message(content, Some(options)).await {
                Ok(_) => return Ok(()),
                Err(e) if status(&e) == Some(404) && attempt == 0 => match client.create(None).await {
                    Ok(_) => {}
                    Err(e) if status(&e) == Some(409) => {}
                    Err(e) => return Err(backend(&format!("create queue {queue}"), &e)),
                },
                Err(e) => return Err(backend(&format!("send to {queue}"), &e)),
            }
        }
        Err(StoreError::Backend(format!("send to {queue}: the queue vanished while sending; retry")))
    }

    async fn receive(&self, queue: &str, max: usize, visibility: Duration) -> StoreResult<Vec<Received>> {
        let client = self.queue(queue)?;
        let options = QueueClientReceiveMessagesOptions {
            number_of_messages: Some(max.clamp(1, 32) as i32),
            visibility_timeout: Some(visibility_secs(visibility)),
            ..Default::default()
        };
        let response = match client.receive_messages(Some(options)).await {
            Ok(r) => r,
            Err(e) if status(&e) == Some(404) => return Ok(Vec::new()),
            Err(e) => return Err(backend(&format!("receive from {queue}"), &e)),
        };
        let messages = response.into_model().map_err(|e| backend(&format!("receive from {queue}"), &e))?;
        let mut out = Vec::new();
        for m in messages.items.unwrap_or_default() {
            let (Some(id), Some(receipt)) = (m.message_id, m.pop_receipt) else {
                return Err(StoreError::Backend(format!("receive from {queue}: a message without id or receipt")));
            };
            let text = m.message_text.unwrap_or_default();
            let body = match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
                Ok(b) => b,
                // Not written by secmon or the Functions host: keep the text as it is rather than drop it.
                Err(_) => {
                    tracing::warn!(queue, message_id = %id, "queue message is not base64; passing its text as is");
                    text.into_bytes()
                }
            };
            let dequeue_count = m.dequeue_count.unwrap_or(1).clamp(0, i64::from(u32::MAX)) as u32;
            let msg = Received { id, receipt, body, dequeue_count };
            if dequeue_count > self.max_dequeue {
                self.poison(queue, &msg).await?;
                tracing::error!(queue, message_id = %msg.id, dequeue_count, "moved to {} after too many tries", poison_name(queue));
                continue;
            }
            out.push(msg);
        }
        Ok(out)
    }

    async fn delete(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        let client = self.queue(queue)?;
        match client.delete_message(&msg.id, &msg.receipt, None).await {
            Ok(_) => Ok(()),
            // 404: already deleted; 400: the pop receipt is stale (someone received it since).
            Err(e) if matches!(status(&e), Some(400 | 404)) => Err(conflict(&format!("{queue}/{}", msg.id))),
            Err(e) => Err(backend(&format!("delete from {queue}"), &e)),
        }
    }

    async fn poison(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        // Copy first, then delete: a crash in between leaves a duplicate, never a loss.
        self.send(&poison_name(queue), &msg.body).await?;
        Queue::delete(self, queue, msg).await
    }

    async fn len(&self, queue: &str) -> StoreResult<usize> {
        let client = self.queue(queue)?;
        match client.get_properties(None).await {
            Ok(r) => {
                let count = r.approximate_messages_count().map_err(|e| backend(&format!("length of {queue}"), &e))?;
                Ok(count.unwrap_or(0).max(0) as usize)
            }
            Err(e) if status(&e) == Some(404) => Ok(0),
            Err(e) => Err(backend(&format!("length of {queue}"), &e)),
        }
    }

    fn max_dequeue(&self) -> u32 {
        self.max_dequeue
    }

    fn max_body(&self) -> usize {
        MAX_BODY
    }
}

// The operator's side of the queue ([`QueueAdmin`](super::admin::QueueAdmin)).

/// The body secmon sent, from a message's text (as [`Queue::receive`] decodes it).
fn body_of(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap_or_else(|_| text.as_bytes().to_vec())
}

fn chrono_of(t: Option<azure_core::time::OffsetDateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.unix_timestamp(), 0))
}

impl AzureStore {
    /// Receives `queue`'s messages until message `id` is among them and gives back every other one at
    /// once; returns its body and pop receipt.
    async fn find(&self, queue: &str, id: &str) -> StoreResult<Option<(Vec<u8>, String)>> {
        let client = self.queue(queue)?;
        let mut hand_back = Vec::new();
        let mut found = None;
        while found.is_none() {
            let options = QueueClientReceiveMessagesOptions {
                number_of_messages: Some(32),
                visibility_timeout: Some(visibility_secs(super::admin::SCAN_VISIBILITY)),
                ..Default::default()
            };
            let batch = match client.receive_messages(Some(options)).await {
                Ok(r) => r.into_model().map_err(|e| backend(&format!("receive from {queue}"), &e))?,
                Err(e) if status(&e) == Some(404) => break,
                Err(e) => return Err(backend(&format!("receive from {queue}"), &e)),
            };
            let items = batch.items.unwrap_or_default();
            if items.is_empty() {
                break;
            }
            for m in items {
                let (Some(mid), Some(receipt)) = (m.message_id, m.pop_receipt) else { continue };
                if mid == id && found.is_none() {
                    found = Some((body_of(&m.message_text.unwrap_or_default()), receipt));
                } else {
                    hand_back.push((mid, receipt));
                }
            }
        }
        for (mid, receipt) in hand_back {
            if let Err(e) = client.update_message(&mid, &receipt, 0, None).await {
                // It comes back by itself after the scan's visibility timeout.
                tracing::warn!(queue, message_id = %mid, "could not make a message visible again: {}", redacted(&e));
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl super::admin::QueueAdmin for AzureStore {
    async fn peek(&self, queue: &str, max: usize) -> StoreResult<super::admin::Peeked> {
        use azure_storage_queue::models::QueueClientPeekMessagesOptions;
        let client = self.queue(queue)?;
        let options =
            QueueClientPeekMessagesOptions { number_of_messages: Some(max.clamp(1, 32) as i32), ..Default::default() };
        let items = match client.peek_messages(Some(options)).await {
            Ok(r) => r.into_model().map_err(|e| backend(&format!("peek at {queue}"), &e))?.items.unwrap_or_default(),
            Err(e) if status(&e) == Some(404) => Vec::new(),
            Err(e) => return Err(backend(&format!("peek at {queue}"), &e)),
        };
        let messages: Vec<super::admin::Listed> = items
            .into_iter()
            .filter_map(|m| {
                Some(super::admin::Listed {
                    id: m.message_id?,
                    body: body_of(&m.message_text.unwrap_or_default()),
                    enqueued_at: chrono_of(m.insertion_time),
                    dequeue_count: m.dequeue_count.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                })
            })
            .take(max)
            .collect();
        let complete = messages.len() >= Queue::len(self, queue).await?;
        Ok(super::admin::Peeked { messages, complete })
    }

    async fn move_message(&self, from: &str, id: &str, to: &str) -> StoreResult<bool> {
        let Some((body, receipt)) = self.find(from, id).await? else { return Ok(false) };
        // Copy first, then delete: a crash in between leaves a duplicate, never a loss.
        self.send(to, &body).await?;
        let msg = Received { id: id.to_string(), receipt, body, dequeue_count: 0 };
        Queue::delete(self, from, &msg).await?;
        Ok(true)
    }

    async fn remove(&self, queue: &str, id: &str) -> StoreResult<bool> {
        let Some((body, receipt)) = self.find(queue, id).await? else { return Ok(false) };
        Queue::delete(self, queue, &Received { id: id.to_string(), receipt, body, dequeue_count: 0 }).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_take_one_form() {
        assert_eq!(quoted("0x8DC1"), "\"0x8DC1\"");
        assert_eq!(quoted("\"0x8DC1\""), "\"0x8DC1\"");
    }

    #[test]
    fn frames_round_trip_any_bytes() {
        let records: Vec<Vec<u8>> =
            vec![b"{\"a\":1}".to_vec(), vec![], b"line\nbreak:colon".to_vec(), vec![0, 255, 10]];
        let mut blob = Vec::new();
        for r in &records {
            blob.extend(format!("{}:", r.len()).into_bytes());
            blob.extend(r);
            blob.push(b'\n');
        }
        assert_eq!(parse_frames(&blob).unwrap(), records);
        assert!(parse_frames(b"5:abc\n").unwrap_err().contains("cut short"));
        assert!(parse_frames(b"x:abc\n").unwrap_err().contains("bad length"));
        assert!(parse_frames(b"abc").unwrap_err().contains("no length"));
    }

    #[test]
    fn keys_and_queue_names_are_checked() {
        assert!(check_key("watermark/contoso").is_ok());
        for bad in ["", "a/", "a.", "a\nb"] {
            assert!(matches!(check_key(bad), Err(StoreError::InvalidKey { .. })), "{bad:?}");
        }
        assert!(check_key(&"k".repeat(1001)).is_err());
        for good in ["alerts", "alerts-poison", "contract-ab12cd34-poison"] {
            assert!(check_queue_name(good).is_ok(), "{good}");
        }
        for bad in ["al", "Alerts", "-alerts", "alerts-", "a--b", "a_b"] {
            assert!(check_queue_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn visibility_is_whole_seconds_within_the_service_limits() {
        assert_eq!(visibility_secs(Duration::from_millis(10)), 1);
        assert_eq!(visibility_secs(Duration::from_millis(1500)), 2);
        assert_eq!(visibility_secs(Duration::from_secs(30 * 24 * 3600)), 7 * 24 * 3600);
    }

    #[test]
    fn settings_come_from_the_environment_and_refuse_tokens_over_http() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let missing = AzureSettings::from_lookup(&env(&[("SECMON_BLOB_URL", "https://a.blob.core.windows.net")]));
        assert!(matches!(missing, Err(AzureSetupError::Missing("SECMON_QUEUE_URL"))));

        let mi = AzureSettings::from_lookup(&env(&[
            ("SECMON_BLOB_URL", "https://a.blob.core.windows.net/"),
            ("SECMON_QUEUE_URL", "https://a.queue.core.windows.net"),
            ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
        ]))
        .unwrap();
        assert!(matches!(&mi.auth, AzureAuth::ManagedIdentity { client_id: Some(id) } if id.ends_with("01")));
        let url = service_url("SECMON_BLOB_URL", &mi.blob_url, &mi.auth).unwrap();
        assert_eq!(url.as_str(), "https://a.blob.core.windows.net/");
        let err = service_url("SECMON_BLOB_URL", "http://127.0.0.1:10000/devstoreaccount1", &mi.auth).unwrap_err();
        assert!(err.to_string().contains("https"), "{err}");

        let sas = AzureSettings::from_lookup(&env(&[
            ("SECMON_BLOB_URL", "http://127.0.0.1:10000/devstoreaccount1/"),
            ("SECMON_QUEUE_URL", "http://127.0.0.1:10001/devstoreaccount1"),
            ("SECMON_STORAGE_SAS", "?sv=2021-08-06&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"),
        ]))
        .unwrap();
        let url = service_url("SECMON_BLOB_URL", &sas.blob_url, &sas.auth).unwrap();
        assert_eq!(url.path(), "/devstoreaccount1");
        assert_eq!(url.query(), Some("sv=2021-08-06&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"));
        let shown = crate::redact::redact(&format!("GET {url} failed"));
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!format!("{sas:?}").contains("c2VjcmV0"));
    }
}
