//! The AWS backend: S3 for state, claims and audit streams; SQS for the queue.
//!
//! - Values are objects under `kv/`; [`Precondition::Absent`] is a put with `If-None-Match: *` and
//!   [`Precondition::Matches`] a put with `If-Match: <etag>`, so S3 itself decides who wins a race
//!   (412 or 409 → [`StoreError::Conflict`]). S3's ETag of a plain put is the MD5 of the bytes: two
//!   writes of the same bytes carry the same ETag, which is harmless for a compare-and-swap (the value
//!   is still the one that was read) and is why claim records carry a random nonce.
//! - Claims are objects under `claim/` holding `{state, until_ms, nonce}`: created with
//!   `If-None-Match: *`, an expired lease taken over with `If-Match`. The holder's token is the ETag
//!   of its write (unique thanks to the nonce): renew, complete and release are each one put with
//!   `If-Match` on it, refused once anyone else has written the claim. A completed record names the
//!   token that completed it, so the holder may complete again.
//! - S3 has no append: a stream is numbered objects `stream/<name>/<seq>` (20 digits, so listing order
//!   is append order; record `n` is object `n - 1`), each created with `If-None-Match: *`, so two
//!   writers never share a number. An audit segment (`audit/{tenant}/{day}/{NNNNNN}`) is a stream of its
//!   own, listed apart from its day's unsegmented stream by the digits-only last part.
//! - Retention lists with `ListObjectsV2` (`start-after`, `max-keys`): a key's write time is S3's
//!   `LastModified` (the server's clock), and a delete checks the ETag first and is sent with `If-Match`.
//! - The queue is SQS. The dequeue count is SQS's `ApproximateReceiveCount`; a message received more
//!   than [`Queue::max_dequeue`] times is moved to `<queue>-poison` by [`SqsQueue::receive`], as the
//!   SQLite backend does (in Lambda, the event source mapping's redrive policy does the same, see
//!   `infra/aws/template.yaml`). SQS accepts a stale receipt handle without an error (and does not
//!   delete the message), so [`SqsQueue`] remembers the current receipt of each message it hands
//!   out in a receipt register (a [`Store`]) and refuses a delete with any other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{
    Claim, Etag, Listed, Precondition, Queue, Received, Space, Store, StoreError, StoreResult, Token, Versioned, keys,
    poison_name,
};
use crate::clock::{Clock, SystemClock};

/// S3's limit on the length of an object key, in bytes.
const S3_KEY_LIMIT: usize = 1024;
/// The message attribute that marks a body sent as base64 (SQS bodies must be XML-safe text).
pub const ENCODING_ATTRIBUTE: &str = "secmon-encoding";
/// The largest queue body: an SQS message holds 256 KiB with its attributes, and a body that is not
/// SQS-safe text is sent in base64 ([`encode_body`]), which grows it by a third.
pub const MAX_BODY: usize = 190 * 1024;

/// Where the AWS backend lives, as the Lambda functions read it from their environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsSettings {
    /// `SECMON_S3_BUCKET`: the state bucket.
    pub bucket: String,
    /// `SECMON_S3_PREFIX`: a key prefix inside the bucket (may be empty).
    pub prefix: String,
    /// `SECMON_SQS_QUEUE_URL`: the URL of the `alerts` queue.
    pub queue_url: String,
    /// `SECMON_SQS_POISON_QUEUE_URL`: the URL of `alerts-poison` (the dead-letter queue).
    pub poison_queue_url: String,
    /// `SECMON_SQS_DELIVERIES_QUEUE_URL`: the URL of the `deliveries` queue.
    pub deliveries_queue_url: String,
    /// `SECMON_SQS_DELIVERIES_POISON_QUEUE_URL`: the URL of `deliveries-poison`.
    pub deliveries_poison_queue_url: String,
    /// `AWS_ENDPOINT_URL`: an endpoint override (a local emulator); S3 then uses path-style addressing.
    pub endpoint_url: Option<String>,
}

impl AwsSettings {
    /// Reads the settings through `env`; every missing variable is named in the error.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut missing = Vec::new();
        let mut need = |name: &'static str| {
            env(name).filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
                missing.push(name);
                String::new()
            })
        };
        let bucket = need("SECMON_S3_BUCKET");
        let queue_url = need("SECMON_SQS_QUEUE_URL");
        let poison_queue_url = need("SECMON_SQS_POISON_QUEUE_URL");
        let deliveries_queue_url = need("SECMON_SQS_DELIVERIES_QUEUE_URL");
        let deliveries_poison_queue_url = need("SECMON_SQS_DELIVERIES_POISON_QUEUE_URL");
        if !missing.is_empty() {
            return Err(format!("the AWS store needs {}", missing.join(", ")));
        }
        Ok(Self {
            bucket,
            prefix: env("SECMON_S3_PREFIX").unwrap_or_default(),
            queue_url,
            poison_queue_url,
            deliveries_queue_url,
            deliveries_poison_queue_url,
            endpoint_url: env("AWS_ENDPOINT_URL").filter(|v| !v.trim().is_empty()),
        })
    }

    /// Builds the store and queue: the SDK's default credential chain and region, clients for S3 and
    /// SQS, and the URLs of the `alerts` and `deliveries` queues and their poison queues.
    pub async fn connect(&self, clock: Arc<dyn Clock>) -> (Arc<S3Store>, Arc<SqsQueue>) {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = loader.load().await;
        let s3 = s3_client(&sdk, self.endpoint_url.is_some());
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let store = Arc::new(S3Store::new(s3, &self.bucket, &self.prefix).with_clock(clock));
        let queue = Arc::new(
            SqsQueue::new(sqs, store.clone())
                .with_queue_url(super::ALERTS_QUEUE, &self.queue_url)
                .with_queue_url(&poison_name(super::ALERTS_QUEUE), &self.poison_queue_url)
                .with_queue_url(super::DELIVERIES_QUEUE, &self.deliveries_queue_url)
                .with_queue_url(&poison_name(super::DELIVERIES_QUEUE), &self.deliveries_poison_queue_url),
        );
        (store, queue)
    }
}

/// An S3 client from shared SDK config; `path_style` for emulators that cannot serve
/// virtual-hosted bucket names (`bucket.127.0.0.1`).
pub fn s3_client(sdk: &aws_config::SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(sdk).force_path_style(path_style).build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn backend<E, R>(what: String, e: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match e.as_service_error() {
        Some(s) => format!("{}: {}", s.code().unwrap_or("error"), s.message().unwrap_or("")),
        None => format!("{}", aws_sdk_s3::error::DisplayErrorContext(e)),
    };
    StoreError::Backend(crate::redact::redact(&format!("{what}: {detail}")))
}

fn http_status<E>(e: &SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// What a claim object holds.
#[derive(Debug, Serialize, Deserialize)]
struct ClaimRecord {
    /// `held` or `done`.
    state: String,
    /// Until when a `held` lease runs (epoch milliseconds).
    until_ms: i64,
    /// Makes every write's bytes (so its ETag) unique.
    nonce: String,
    /// The token that completed it (absent in records older than fencing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_by: Option<String>,
}

impl ClaimRecord {
    fn held(until_ms: i64) -> Vec<u8> {
        Self::bytes("held", until_ms, None)
    }

    fn done(by: &Token) -> Vec<u8> {
        Self::bytes("done", 0, Some(by.0.clone()))
    }

    fn bytes(state: &str, until_ms: i64, completed_by: Option<String>) -> Vec<u8> {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let r = ClaimRecord { state: state.into(), until_ms, nonce, completed_by };
        serde_json::to_vec(&r).expect("claim record serializes")
    }
}

/// State, claims and streams in one S3 bucket.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("bucket", &self.bucket).field("prefix", &self.prefix).finish()
    }
}

impl S3Store {
    /// A store in `bucket`, every key under `prefix` (empty, or ending in `/`; one is added if missing).
    pub fn new(client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Self { client, bucket: bucket.into(), prefix, clock: Arc::new(SystemClock) }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Uses `clock` for claim leases.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn object_key(&self, area: &str, key: &str) -> StoreResult<String> {
        if key.is_empty() {
            return Err(StoreError::InvalidKey { key: key.into(), reason: "empty" });
        }
        if key.chars().any(char::is_control) {
            return Err(StoreError::InvalidKey { key: key.into(), reason: "contains a control character" });
        }
        let full = format!("{}{area}/{key}", self.prefix);
        // Streams add `/<20 digits>`.
        if full.len() + 21 > S3_KEY_LIMIT {
            return Err(StoreError::InvalidKey { key: key.into(), reason: "too long for an S3 object key" });
        }
        Ok(full)
    }

    async fn get_object(&self, object: &str) -> StoreResult<Option<Versioned>> {
        match self.client.get_object().bucket(&self.bucket).key(object).send().await {
            Ok(out) => {
                let etag = out.e_tag().unwrap_or_default().to_string();
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| StoreError::Backend(format!("read s3://{}/{object}: {e}", self.bucket)))?;
                Ok(Some(Versioned { value: bytes.into_bytes().to_vec(), etag: Etag(etag) }))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) || http_status(&e) == Some(404) => {
                Ok(None)
            }
            Err(e) => Err(backend(format!("get s3://{}/{object}", self.bucket), &e)),
        }
    }

    /// Deletes `object` whatever its version (S3 answers success for one that is not there).
    async fn delete_object(&self, object: &str) -> StoreResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(object)
            .send()
            .await
            .map_err(|e| backend(format!("delete s3://{}/{object}", self.bucket), &e))?;
        Ok(())
    }

    async fn put_object(&self, object: &str, value: &[u8], cond: Option<&Precondition>) -> StoreResult<Etag> {
        let mut req = self.client.put_object().bucket(&self.bucket).key(object).body(ByteStream::from(value.to_vec()));
        req = match cond {
            Some(Precondition::Absent) => req.if_none_match("*"),
            Some(Precondition::Matches(etag)) => req.if_match(&etag.0),
            None => req,
        };
        match req.send().await {
            Ok(out) => Ok(Etag(out.e_tag().unwrap_or_default().to_string())),
            // 412: the condition failed; 409: a concurrent conditional write to the same key won;
            // 404 under If-Match: the value is gone, so it is not the version that was read either.
            Err(e) if cond.is_some() && matches!(http_status(&e), Some(412 | 409 | 404)) => {
                Err(StoreError::Conflict { key: object.to_string() })
            }
            Err(e) => Err(backend(format!("put s3://{}/{object}", self.bucket), &e)),
        }
    }

    async fn list_objects(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| backend(format!("list s3://{}/{prefix}", self.bucket), &e))?;
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        keys.sort();
        Ok(keys)
    }

    /// The numbered objects of `stream`, in order: `(seq, object key)`.
    async fn stream_objects(&self, stream: &str) -> StoreResult<Vec<(u64, String)>> {
        let base = format!("{}/", self.object_key("stream", stream)?);
        let mut out: Vec<(u64, String)> = self
            .list_objects(&base)
            .await?
            .into_iter()
            // A stream `a/b` lives under `stream/a/b/`, inside `stream/a/`'s listing: keep only `<digits>`.
            .filter_map(|k| k[base.len()..].parse::<u64>().ok().map(|n| (n, k)))
            .collect();
        out.sort();
        Ok(out)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    async fn read_claim(&self, object: &str) -> StoreResult<Option<(ClaimRecord, Etag)>> {
        let Some(current) = self.get_object(object).await? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&current.value).map_err(|e| {
            StoreError::Backend(format!("claim s3://{}/{object} is not a claim record: {e}", self.bucket))
        })?;
        Ok(Some((record, current.etag)))
    }
}

fn seq_key(base: &str, seq: u64) -> String {
    format!("{base}/{seq:020}")
}

#[async_trait]
impl Store for S3Store {
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        self.get_object(&self.object_key("kv", key)?).await
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Precondition) -> StoreResult<Etag> {
        let object = self.object_key("kv", key)?;
        self.put_object(&object, value, Some(&cond)).await.map_err(|e| match e {
            StoreError::Conflict { .. } => StoreError::Conflict { key: key.into() },
            other => other,
        })
    }

    async fn put(&self, key: &str, value: &[u8]) -> StoreResult<Etag> {
        self.put_object(&self.object_key("kv", key)?, value, None).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.delete_object(&self.object_key("kv", key)?).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let base = format!("{}kv/", self.prefix);
        let keys = self.list_objects(&format!("{base}{prefix}")).await?;
        Ok(keys.into_iter().map(|k| k[base.len()..].to_string()).collect())
    }

    async fn claim(&self, key: &str, lease: Duration) -> StoreResult<Claim> {
        let object = self.object_key("claim", key)?;
        let until = |store: &Self| store.now_ms() + lease.as_millis() as i64;
        // Bounded: each round either decides or saw a concurrent change; a few rounds settle any race.
        for _ in 0..8 {
            match self.put_object(&object, &ClaimRecord::held(until(self)), Some(&Precondition::Absent)).await {
                Ok(etag) => return Ok(Claim::Acquired(Token(etag.0))),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            let Some((record, etag)) = self.read_claim(&object).await? else {
                continue;
            };
            match record.state.as_str() {
                "done" => return Ok(Claim::Done),
                _ if record.until_ms > self.now_ms() => return Ok(Claim::Held),
                _ => {}
            }
            // The lease ran out (its holder crashed or stalled): take it over, unless someone else just did.
            match self.put_object(&object, &ClaimRecord::held(until(self)), Some(&Precondition::Matches(etag))).await {
                Ok(etag) => return Ok(Claim::Acquired(Token(etag.0))),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Backend(format!("claim {key}: still contended after 8 rounds; retry")))
    }

    async fn renew(&self, key: &str, token: &Token, lease: Duration) -> StoreResult<Token> {
        let object = self.object_key("claim", key)?;
        let body = ClaimRecord::held(self.now_ms() + lease.as_millis() as i64);
        match self.put_object(&object, &body, Some(&Precondition::Matches(Etag(token.0.clone())))).await {
            Ok(etag) => Ok(Token(etag.0)),
            Err(StoreError::Conflict { .. }) => Err(StoreError::NotHolder { key: key.into() }),
            Err(e) => Err(e),
        }
    }

    async fn complete(&self, key: &str, token: &Token) -> StoreResult<()> {
        let object = self.object_key("claim", key)?;
        match self
            .put_object(&object, &ClaimRecord::done(token), Some(&Precondition::Matches(Etag(token.0.clone()))))
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => match self.read_claim(&object).await? {
                Some((r, _)) if r.state == "done" && r.completed_by.as_ref() == Some(&token.0) => Ok(()),
                _ => Err(StoreError::NotHolder { key: key.into() }),
            },
            Err(e) => Err(e),
        }
    }

    async fn release(&self, key: &str, token: &Token) -> StoreResult<()> {
        let object = self.object_key("claim", key)?;
        // An expired lease is free at once; only the holder's version is overwritten.
        match self.put_object(&object, &ClaimRecord::held(0), Some(&Precondition::Matches(Etag(token.0.clone())))).await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => match self.read_claim(&object).await? {
                Some((r, _)) if r.state == "done" => Ok(()),
                _ => Err(StoreError::NotHolder { key: key.into() }),
            },
            Err(e) => Err(e),
        }
    }

    async fn append(&self, stream: &str, seq: u64, record: &[u8]) -> StoreResult<()> {
        let base = self.object_key("stream", stream)?;
        let object = seq_key(&base, seq.saturating_sub(1));
        self.put_object(&object, record, Some(&Precondition::Absent)).await.map(|_| ()).map_err(|e| match e {
            StoreError::Conflict { .. } => StoreError::Conflict { key: format!("{stream}#{seq}") },
            other => other,
        })
    }

    async fn read_stream(&self, stream: &str) -> StoreResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for (_, object) in self.stream_objects(stream).await? {
            // Records are never deleted, so a listed one is there to read.
            let v = self.get_object(&object).await?.ok_or_else(|| {
                StoreError::Backend(format!("stream record s3://{}/{object} vanished while reading", self.bucket))
            })?;
            out.push(v.value);
        }
        Ok(out)
    }

    async fn list_streams(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let base = format!("{}stream/", self.prefix);
        let mut names: Vec<String> = self
            .list_objects(&format!("{base}{prefix}"))
            .await?
            .into_iter()
            .filter_map(|k| {
                let (name, seq) = k[base.len()..].rsplit_once('/')?;
                seq.bytes().all(|b| b.is_ascii_digit()).then(|| name.to_string())
            })
            .collect();
        names.dedup();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn scan(&self, space: Space, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Listed>> {
        let area = format!("{}{}/", self.prefix, space_area(space));
        let mut req = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{area}{prefix}"))
            .max_keys(limit.clamp(1, 1000) as i32);
        if let Some(after) = after {
            req = req.start_after(format!("{area}{after}"));
        }
        let page = req.send().await.map_err(|e| backend(format!("scan s3://{}/{area}{prefix}", self.bucket), &e))?;
        Ok(page
            .contents()
            .iter()
            .filter_map(|o| {
                let key = o.key()?.strip_prefix(area.as_str())?.to_string();
                let modified = o.last_modified()?;
                let written = chrono::DateTime::from_timestamp(modified.secs(), modified.subsec_nanos())?;
                Some(Listed { key, etag: Etag(o.e_tag()?.to_string()), written })
            })
            .take(limit)
            .collect())
    }

    async fn delete_if(&self, space: Space, key: &str, etag: &Etag) -> StoreResult<bool> {
        let object = self.object_key(space_area(space), key)?;
        // Look first (an emulator may ignore a conditional delete), then delete only that version.
        match self.get_object(&object).await? {
            Some(v) if v.etag == *etag => {
                // Never a claim whose lease is still running, whatever its age.
                if space == Space::Claims {
                    let r: ClaimRecord = serde_json::from_slice(&v.value).map_err(|e| {
                        StoreError::Backend(format!("claim s3://{}/{object} is not a claim record: {e}", self.bucket))
                    })?;
                    if r.state != "done" && r.until_ms > self.now_ms() {
                        return Ok(false);
                    }
                }
            }
            _ => return Ok(false),
        }
        match self.client.delete_object().bucket(&self.bucket).key(&object).if_match(&etag.0).send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(http_status(&e), Some(412 | 404)) => Ok(false),
            Err(e) => Err(backend(format!("delete s3://{}/{object}", self.bucket), &e)),
        }
    }

    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        for (_, object) in self.stream_objects(stream).await? {
            self.delete_object(&object).await?;
        }
        Ok(())
    }
}

/// The area of the bucket a key space lives in.
fn space_area(space: Space) -> &'static str {
    match space {
        Space::Values => "kv",
        Space::Claims => "claim",
    }
}

/// SQS as the queue; queue names map to URLs (configured, or looked up and cached).
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    urls: Mutex<HashMap<String, String>>,
    create_missing: bool,
    max_dequeue: u32,
    receipts: Arc<dyn Store>,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue").field("max_dequeue", &self.max_dequeue).finish_non_exhaustive()
    }
}

/// Whether SQS accepts `text` as a message body as it is (XML 1.0 characters only).
fn sqs_safe(text: &str) -> bool {
    text.chars()
        .all(|c| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..))
}

/// The SQS body and, when it had to be base64-encoded, the encoding attribute value.
pub fn encode_body(body: &[u8]) -> (String, Option<&'static str>) {
    match std::str::from_utf8(body) {
        Ok(text) if sqs_safe(text) => (text.to_string(), None),
        _ => (base64::engine::general_purpose::STANDARD.encode(body), Some("base64")),
    }
}

/// The bytes that were sent, from an SQS body and its `secmon-encoding` attribute.
pub fn decode_body(body: &str, encoding: Option<&str>) -> StoreResult<Vec<u8>> {
    match encoding {
        None => Ok(body.as_bytes().to_vec()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| StoreError::Backend(format!("message marked base64 is not base64: {e}"))),
        Some(other) => Err(StoreError::Backend(format!("unknown {ENCODING_ATTRIBUTE} {other:?}"))),
    }
}

impl SqsQueue {
    /// A queue over `client`; `receipts` remembers the current receipt of each received message.
    pub fn new(client: aws_sdk_sqs::Client, receipts: Arc<dyn Store>) -> Self {
        Self { client, urls: Mutex::new(HashMap::new()), create_missing: false, max_dequeue: 5, receipts }
    }

    /// Names the URL of queue `name` (the deployed queues; no lookup needed, no extra permission).
    pub fn with_queue_url(self, name: &str, url: &str) -> Self {
        self.urls.lock().expect("urls lock").insert(name.into(), url.into());
        self
    }

    /// Creates queues that do not exist (tests and emulators; a deployment creates its queues).
    pub fn with_create_missing(mut self, create: bool) -> Self {
        self.create_missing = create;
        self
    }

    /// Sets how many receives make a message poison (default 5, as the redrive policy).
    pub fn with_max_dequeue(mut self, n: u32) -> Self {
        self.max_dequeue = n.max(1);
        self
    }

    async fn url(&self, queue: &str) -> StoreResult<String> {
        if let Some(u) = self.urls.lock().expect("urls lock").get(queue) {
            return Ok(u.clone());
        }
        let url = match self.client.get_queue_url().queue_name(queue).send().await {
            Ok(out) => out.queue_url().unwrap_or_default().to_string(),
            Err(e) if self.create_missing && e.as_service_error().is_some_and(|s| s.is_queue_does_not_exist()) => {
                let out = self
                    .client
                    .create_queue()
                    .queue_name(queue)
                    .send()
                    .await
                    .map_err(|e| backend(format!("create queue {queue}"), &e))?;
                out.queue_url().unwrap_or_default().to_string()
            }
            Err(e) => return Err(backend(format!("find queue {queue}"), &e)),
        };
        self.urls.lock().expect("urls lock").insert(queue.into(), url.clone());
        Ok(url)
    }

    async fn delete_handle(&self, queue: &str, url: &str, handle: &str) -> StoreResult<()> {
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(handle)
            .send()
            .await
            .map_err(|e| backend(format!("delete from {queue}"), &e))?;
        Ok(())
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, queue: &str, body: &[u8]) -> StoreResult<()> {
        self.send_after(queue, body, Duration::ZERO).await
    }

    async fn send_after(&self, queue: &str, body: &[u8], delay: Duration) -> StoreResult<()> {
        let url = self.url(queue).await?;
        let (text, encoding) = encode_body(body);
        let mut req = self.client.send_message().queue_url(&url).message_body(text);
        if !delay.is_zero() {
            // `DelaySeconds`: whole seconds, rounded up so it never appears early, at most 900.
            let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            req = req.delay_seconds(secs.min(super::MAX_DELAY.as_secs()) as i32);
        }
        if let Some(enc) = encoding {
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(enc)
                .build()
                .map_err(|e| StoreError::Backend(format!("message attribute: {e}")))?;
            req = req.message_attributes(ENCODING_ATTRIBUTE, attr);
        }
        req.send().await.map_err(|e| backend(format!("send to {queue}"), &e))?;
        Ok(())
    }

    async fn receive(&self, queue: &str, max: usize, visibility: Duration) -> StoreResult<Vec<Received>> {
        let url = self.url(queue).await?;
        // SQS counts visibility in whole seconds: round up, so a message is never visible early.
        let secs = visibility.as_secs() + u64::from(visibility.subsec_nanos() > 0);
        let mut out = Vec::new();
        while out.len() < max {
            let batch = self
                .client
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages((max - out.len()).min(10) as i32)
                .visibility_timeout(secs.min(43_200) as i32)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| backend(format!("receive from {queue}"), &e))?;
            let messages = batch.messages();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                let (Some(id), Some(handle)) = (m.message_id(), m.receipt_handle()) else {
                    continue;
                };
                let encoding =
                    m.message_attributes().and_then(|a| a.get(ENCODING_ATTRIBUTE)).and_then(|v| v.string_value());
                let body = decode_body(m.body().unwrap_or_default(), encoding)?;
                let count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse::<u32>().ok())
                    .unwrap_or(1);
                if count > self.max_dequeue {
                    // Failed max_dequeue times already: set aside, never dropped (poison first, then delete).
                    self.send(&poison_name(queue), &body).await?;
                    self.delete_handle(queue, &url, handle).await?;
                    self.receipts.delete(&keys::queue_receipt(queue, id)).await?;
                    tracing::error!(queue, id, count, "message moved to {}", poison_name(queue));
                    continue;
                }
                self.receipts.put(&keys::queue_receipt(queue, id), handle.as_bytes()).await?;
                out.push(Received { id: id.into(), receipt: handle.into(), body, dequeue_count: count });
            }
        }
        Ok(out)
    }

    async fn delete(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        let url = self.url(queue).await?;
        let key = keys::queue_receipt(queue, &msg.id);
        match self.receipts.get(&key).await? {
            Some(current) if current.value == msg.receipt.as_bytes() => {}
            // Received again since (or deleted): this receiver no longer holds it.
            _ => return Err(StoreError::Conflict { key: format!("{queue}/{}", msg.id) }),
        }
        self.delete_handle(queue, &url, &msg.receipt).await?;
        self.receipts.delete(&key).await
    }

    async fn poison(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        self.send(&poison_name(queue), &msg.body).await?;
        let url = self.url(queue).await?;
        self.delete_handle(queue, &url, &msg.receipt).await?;
        self.receipts.delete(&keys::queue_receipt(queue, &msg.id)).await
    }

    async fn len(&self, queue: &str) -> StoreResult<usize> {
        let url = self.url(queue).await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| backend(format!("attributes of {queue}"), &e))?;
        Ok(out.attributes().map_or(0, |a| a.values().filter_map(|v| v.parse::<usize>().ok()).sum()))
    }

    fn max_dequeue(&self) -> u32 {
        self.max_dequeue
    }

    fn max_body(&self) -> usize {
        MAX_BODY
    }
}

// The operator's side of the queue ([`QueueAdmin`](super::admin::QueueAdmin)).

/// A message received by an operator's scan.
struct Scanned {
    id: String,
    handle: String,
    body: Vec<u8>,
    sent: Option<chrono::DateTime<chrono::Utc>>,
    count: u32,
}

impl SqsQueue {
    /// Receives every visible message of `queue`, hiding each for [`super::admin::SCAN_VISIBILITY`];
    /// the caller gives back what it does not delete ([`SqsQueue::hand_back`]).
    async fn scan(&self, queue: &str, url: &str) -> StoreResult<Vec<Scanned>> {
        let mut out: Vec<Scanned> = Vec::new();
        loop {
            let batch = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(super::admin::SCAN_VISIBILITY.as_secs() as i32)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| backend(format!("receive from {queue}"), &e))?;
            if batch.messages().is_empty() {
                return Ok(out);
            }
            for m in batch.messages() {
                let (Some(id), Some(handle)) = (m.message_id(), m.receipt_handle()) else { continue };
                let encoding =
                    m.message_attributes().and_then(|a| a.get(ENCODING_ATTRIBUTE)).and_then(|v| v.string_value());
                let attr = |name: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&name)).cloned();
                out.push(Scanned {
                    id: id.to_string(),
                    handle: handle.to_string(),
                    body: decode_body(m.body().unwrap_or_default(), encoding)?,
                    sent: attr(MessageSystemAttributeName::SentTimestamp)
                        .and_then(|t| t.parse::<i64>().ok())
                        .and_then(chrono::DateTime::from_timestamp_millis),
                    count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0),
                });
            }
        }
    }

    /// Makes scanned messages visible again at once.
    async fn hand_back(&self, queue: &str, url: &str, scanned: &[Scanned]) {
        for m in scanned {
            let shown =
                self.client.change_message_visibility().queue_url(url).receipt_handle(&m.handle).visibility_timeout(0);
            if let Err(e) = shown.send().await {
                // It comes back by itself after the scan's visibility timeout.
                tracing::warn!(
                    queue,
                    id = m.id,
                    "could not make a message visible again: {}",
                    backend(String::new(), &e)
                );
            }
        }
    }

    /// Scans `queue`, takes message `id` out of the scan (still hidden, to delete) and gives back the rest.
    async fn take(&self, queue: &str, url: &str, id: &str) -> StoreResult<Option<Scanned>> {
        let mut scanned = self.scan(queue, url).await?;
        let found = scanned.iter().position(|m| m.id == id).map(|i| scanned.remove(i));
        self.hand_back(queue, url, &scanned).await;
        Ok(found)
    }
}

#[async_trait]
impl super::admin::QueueAdmin for SqsQueue {
    async fn peek(&self, queue: &str, max: usize) -> StoreResult<super::admin::Peeked> {
        let url = self.url(queue).await?;
        let scanned = self.scan(queue, &url).await?;
        self.hand_back(queue, &url, &scanned).await;
        let mut messages: Vec<super::admin::Listed> = scanned
            .into_iter()
            .map(|m| super::admin::Listed { id: m.id, body: m.body, enqueued_at: m.sent, dequeue_count: m.count })
            .collect();
        messages.sort_by_key(|m| m.enqueued_at);
        let complete = messages.len() <= max;
        messages.truncate(max);
        Ok(super::admin::Peeked { messages, complete })
    }

    async fn move_message(&self, from: &str, id: &str, to: &str) -> StoreResult<bool> {
        let url = self.url(from).await?;
        let Some(m) = self.take(from, &url, id).await? else { return Ok(false) };
        // Copy first, then delete: a crash in between leaves a duplicate, never a loss.
        self.send(to, &m.body).await?;
        self.delete_handle(from, &url, &m.handle).await?;
        Ok(true)
    }

    async fn remove(&self, queue: &str, id: &str) -> StoreResult<bool> {
        let url = self.url(queue).await?;
        let Some(m) = self.take(queue, &url, id).await? else { return Ok(false) };
        self.delete_handle(queue, &url, &m.handle).await?;
        Ok(true)
    }

    /// SQS cannot look without receiving (see the module docs of [`super::admin`]).
    fn peek_is_free(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies_travel_as_they_are_and_binary_as_base64() {
        let json = br#"{"kind":"poll","tenant":"contoso"}"#;
        assert_eq!(encode_body(json), (String::from_utf8(json.to_vec()).unwrap(), None));
        for body in [&[0u8, 1, 2, 0xff][..], b"bell\x07", "\u{FFFE}".as_bytes()] {
            let (text, enc) = encode_body(body);
            assert_eq!(enc, Some("base64"), "{body:?}");
            assert_eq!(decode_body(&text, enc).unwrap(), body);
        }
        assert!(decode_body("!!", Some("base64")).is_err());
        assert!(decode_body("x", Some("gzip")).is_err());
    }

    #[test]
    fn settings_name_every_missing_variable() {
        let env = |k: &str| (k == "SECMON_S3_BUCKET").then(|| "b".to_string());
        let err = AwsSettings::from_env(&env).unwrap_err();
        assert!(err.contains("SECMON_SQS_QUEUE_URL") && err.contains("SECMON_SQS_POISON_QUEUE_URL"), "{err}");
        assert!(!err.contains("SECMON_S3_BUCKET"), "{err}");
        let full = |k: &str| match k {
            "SECMON_S3_BUCKET" => Some("b".to_string()),
            "SECMON_SQS_QUEUE_URL" => Some("https://sqs/alerts".into()),
            "SECMON_SQS_POISON_QUEUE_URL" => Some("https://sqs/alerts-poison".into()),
            "SECMON_SQS_DELIVERIES_QUEUE_URL" => Some("https://sqs/deliveries".into()),
            "SECMON_SQS_DELIVERIES_POISON_QUEUE_URL" => Some("https://sqs/deliveries-poison".into()),
            _ => None,
        };
        let s = AwsSettings::from_env(&full).unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str(), s.endpoint_url), ("b", "", None));
    }
}
