//! The operator's queue tools: `secmon queue stats` and `secmon queue poison list|show|redrive|purge`.
//!
//! They work on any queue by name (`alerts`, a delivery queue) and its `<name>-poison` queue, on every
//! backend, through [`QueueAdmin`]. Nothing is lost silently: a purge writes one audit record per
//! message it deletes (action `poison_purged`, in the stream of the tenant the message names) before it
//! deletes it, and a redrive moves a message back with a fresh dequeue count.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::audit::{self, Action, Record};
use crate::store::admin::{self, Listed, QueueStats, tenant_of};
use crate::store::{Queue, QueueAdmin, Store, StoreError, poison_name};

/// The audit tenant of a purged message that names no tenant.
pub const NO_TENANT: &str = "secmon";
/// How many poison messages the tools look at, at most.
pub const MAX_LISTED: usize = 10_000;

/// What the tools work with: the queue, its operator's side, and the store the audit trail is in.
#[derive(Clone, Copy)]
pub struct Tools<'a> {
    /// The queue.
    pub queue: &'a dyn Queue,
    /// Its operator's side.
    pub admin: &'a dyn QueueAdmin,
    /// The store (audit records of purges).
    pub store: &'a dyn Store,
}

/// One poison message as `poison list` prints it: what it is about, not its whole body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// The poison queue.
    pub queue: String,
    /// Message id (for `show`, `redrive`, `purge`).
    pub id: String,
    /// When it was put on the poison queue (or on its queue, by backend), RFC 3339.
    pub enqueued_at: Option<String>,
    /// Age in seconds.
    pub age_secs: Option<i64>,
    /// The message's kind (`alert`, `poll`, `lookup`, …), when it is secmon JSON.
    pub message_kind: Option<String>,
    /// Tenant it names.
    pub tenant: Option<String>,
    /// The alert id it carries.
    pub alert_id: Option<String>,
    /// The alert version (`lastUpdateDateTime`) it carries.
    pub alert_version: Option<String>,
    /// Body size in bytes.
    pub bytes: usize,
}

impl Entry {
    fn of(queue: &str, m: &Listed, now: DateTime<Utc>) -> Entry {
        let json: Option<Value> = serde_json::from_slice(&m.body).ok();
        let field = |path: &[&str]| -> Option<String> {
            let mut v = json.as_ref()?;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_string)
        };
        Entry {
            queue: queue.to_string(),
            id: m.id.clone(),
            enqueued_at: m.enqueued_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            age_secs: m.enqueued_at.map(|t| (now - t).num_seconds().max(0)),
            message_kind: field(&["kind"]),
            tenant: tenant_of(&m.body),
            alert_id: field(&["alert", "id"]).or_else(|| field(&["alert_id"])),
            alert_version: field(&["alert", "lastUpdateDateTime"]),
            bytes: m.body.len(),
        }
    }
}

/// One poison message whole, as `poison show` prints it: the body as JSON when it is, else as text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shown {
    /// What it is about.
    #[serde(flatten)]
    pub entry: Entry,
    /// How many times it was received on the poison queue.
    pub dequeue_count: u32,
    /// The body: its JSON, or its text (lossy UTF-8).
    pub body: Value,
}

/// What a redrive or purge did to one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Done {
    /// The poison queue.
    pub queue: String,
    /// Message id.
    pub id: String,
    /// `redriven`, `purged`, or `not_found`.
    pub outcome: &'static str,
    /// Where it went (redrive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Why a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The store or queue failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit record of a purge could not be written; the message was not deleted.
    #[error("not purged, the audit record could not be written: {0}")]
    Audit(#[from] audit::AuditError),
}

impl Tools<'_> {
    /// Depth, age of the oldest message, poison count, per tenant, of each queue.
    pub async fn stats(&self, queues: &[String], now: DateTime<Utc>) -> Result<Vec<QueueStats>, ToolError> {
        let mut out = Vec::new();
        for q in queues {
            out.push(admin::stats(self.queue, self.admin, q, now).await?);
        }
        Ok(out)
    }

    /// The poison messages of `queue`, oldest first; `complete` as [`QueueAdmin::peek`].
    pub async fn list(&self, queue: &str, now: DateTime<Utc>) -> Result<(Vec<Entry>, bool), ToolError> {
        let dead = poison_name(queue);
        let peeked = self.admin.peek(&dead, MAX_LISTED).await?;
        Ok((peeked.messages.iter().map(|m| Entry::of(&dead, m, now)).collect(), peeked.complete))
    }

    /// One poison message of `queue`, whole.
    pub async fn show(&self, queue: &str, id: &str, now: DateTime<Utc>) -> Result<Option<Shown>, ToolError> {
        let dead = poison_name(queue);
        let peeked = self.admin.peek(&dead, MAX_LISTED).await?;
        Ok(peeked.messages.iter().find(|m| m.id == id).map(|m| Shown {
            entry: Entry::of(&dead, m, now),
            dequeue_count: m.dequeue_count,
            body: serde_json::from_slice(&m.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&m.body).into_owned())),
        }))
    }

    /// Moves poison messages of `queue` back onto it: the ones named, or every one (`ids` empty).
    pub async fn redrive(&self, queue: &str, ids: &[String]) -> Result<Vec<Done>, ToolError> {
        let dead = poison_name(queue);
        let mut out = Vec::new();
        if !ids.is_empty() {
            for id in ids {
                out.push(self.redrive_one(&dead, queue, id).await?);
            }
            return Ok(out);
        }
        // Every message: round after round, as a backend may show only some at a time (Azure: 32).
        loop {
            let peeked = self.admin.peek(&dead, MAX_LISTED).await?;
            let mut moved = 0;
            for m in &peeked.messages {
                let done = self.redrive_one(&dead, queue, &m.id).await?;
                moved += usize::from(done.outcome == "redriven");
                out.push(done);
            }
            if peeked.complete || moved == 0 {
                return Ok(out);
            }
        }
    }

    async fn redrive_one(&self, dead: &str, queue: &str, id: &str) -> Result<Done, ToolError> {
        let moved = self.admin.move_message(dead, id, queue).await?;
        if moved {
            tracing::info!(queue = dead, message_id = id, "redriven to {queue}");
        }
        let outcome = if moved { "redriven" } else { "not_found" };
        Ok(Done { queue: dead.to_string(), id: id.to_string(), outcome, to: moved.then(|| queue.to_string()) })
    }

    /// Deletes poison messages of `queue` (those put there before `before`, when given), each after
    /// an audit record that says what it carried.
    pub async fn purge(
        &self,
        queue: &str,
        before: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Done>, ToolError> {
        let dead = poison_name(queue);
        let mut out = Vec::new();
        // Round after round, as a backend may show only some at a time (Azure: 32); oldest first, so a
        // round that deletes nothing has nothing older behind it.
        loop {
            let peeked = self.admin.peek(&dead, MAX_LISTED).await?;
            let before_round = out.len();
            self.purge_round(&dead, &peeked.messages, before, now, &mut out).await?;
            let removed = out[before_round..].iter().filter(|d| d.outcome == "purged").count();
            if peeked.complete || removed == 0 {
                return Ok(out);
            }
        }
    }

    async fn purge_round(
        &self,
        dead: &str,
        messages: &[Listed],
        before: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        out: &mut Vec<Done>,
    ) -> Result<(), ToolError> {
        let dead = dead.to_string();
        for m in messages {
            // A message of unknown age is not "older than" anything.
            if before.is_some_and(|b| m.enqueued_at.is_none_or(|t| t >= b)) {
                continue;
            }
            let e = Entry::of(&dead, m, now);
            let tenant = e.tenant.clone().unwrap_or_else(|| NO_TENANT.to_string());
            let mut record = Record::new(
                e.alert_id.as_deref().unwrap_or(&e.id),
                e.alert_version.as_deref().unwrap_or(""),
                Action::PoisonPurged,
            );
            use sha2::Digest;
            record.detail = format!(
                "purged from {dead}: message {} ({}, {} bytes, sha256 {}, put there {})",
                e.id,
                e.message_kind.as_deref().unwrap_or("not secmon JSON"),
                e.bytes,
                hex::encode(sha2::Sha256::digest(&m.body)),
                e.enqueued_at.as_deref().unwrap_or("at an unknown time"),
            );
            audit::append(self.store, &tenant, now, record).await?;
            let removed = self.admin.remove(&dead, &m.id).await?;
            if removed {
                tracing::warn!(queue = dead, message_id = m.id, tenant, "purged (audited)");
            }
            out.push(Done {
                queue: dead.clone(),
                id: m.id.clone(),
                outcome: if removed { "purged" } else { "not_found" },
                to: None,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use std::time::Duration;

    async fn poisoned(store: &SqliteStore, bodies: &[&str]) {
        for b in bodies {
            store.send("alerts", b.as_bytes()).await.unwrap();
        }
        for m in store.receive("alerts", 10, Duration::from_secs(30)).await.unwrap() {
            store.poison("alerts", &m).await.unwrap();
        }
    }

    #[tokio::test]
    async fn list_show_redrive_and_an_audited_purge() {
        let store = SqliteStore::in_memory().unwrap();
        let tools = Tools { queue: &store, admin: &store, store: &store };
        let alert =
            r#"{"kind":"alert","tenant":"contoso","alert":{"id":"da1","lastUpdateDateTime":"2026-11-26T10:00:00Z"}}"#;
        poisoned(&store, &[alert, r#"{"kind":"poll","tenant":"fabrikam","reason":"doorbell"}"#, "garbage"]).await;
        let now = Utc::now();

        let (entries, complete) = tools.list("alerts", now).await.unwrap();
        assert!(complete);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].queue, "alerts-poison");
        assert_eq!(entries[0].alert_id.as_deref(), Some("da1"));
        assert_eq!(entries[0].alert_version.as_deref(), Some("2026-11-26T10:00:00Z"));
        assert_eq!(entries[1].message_kind.as_deref(), Some("poll"));
        assert_eq!(entries[2].tenant, None);

        let shown = tools.show("alerts", &entries[2].id, now).await.unwrap().unwrap();
        assert_eq!(shown.body, Value::String("garbage".into()));
        assert!(tools.show("alerts", "nope", now).await.unwrap().is_none());

        let done = tools.redrive("alerts", &[entries[1].id.clone(), "nope".into()]).await.unwrap();
        assert_eq!(done.iter().map(|d| d.outcome).collect::<Vec<_>>(), ["redriven", "not_found"]);
        assert_eq!(store.len("alerts").await.unwrap(), 1);

        // Nothing is older than an hour ago: nothing purged; then everything, each audited first.
        assert!(tools.purge("alerts", Some(now - chrono::Duration::hours(1)), now).await.unwrap().is_empty());
        let purged = tools.purge("alerts", None, now).await.unwrap();
        assert_eq!(purged.len(), 2);
        assert!(purged.iter().all(|d| d.outcome == "purged"));
        assert_eq!(store.len("alerts-poison").await.unwrap(), 0);
        let records = audit::verify(&store, None).await.unwrap();
        assert!(records.iter().all(|r| r.ok()), "{records:?}");
        let contoso = store
            .read_stream(&crate::store::keys::audit_segment(
                &crate::store::keys::audit_stream("contoso", now.date_naive()),
                1,
            ))
            .await
            .unwrap();
        let record: Record = serde_json::from_slice(&contoso[0]).unwrap();
        assert_eq!(record.action, Action::PoisonPurged);
        assert_eq!(record.alert_id, "da1");
        assert!(
            record.detail.contains("purged from alerts-poison") && record.detail.contains("sha256"),
            "{}",
            record.detail
        );
        let unnamed = store
            .read_stream(&crate::store::keys::audit_segment(
                &crate::store::keys::audit_stream(NO_TENANT, now.date_naive()),
                1,
            ))
            .await
            .unwrap();
        assert_eq!(unnamed.len(), 1, "a message naming no tenant is audited too");
    }

    #[tokio::test]
    async fn redrive_all_moves_every_poison_message_back_on_any_queue() {
        let store = SqliteStore::in_memory().unwrap();
        let tools = Tools { queue: &store, admin: &store, store: &store };
        for b in ["a", "b"] {
            store.send("deliveries", b.as_bytes()).await.unwrap();
        }
        for m in store.receive("deliveries", 10, Duration::from_secs(30)).await.unwrap() {
            store.poison("deliveries", &m).await.unwrap();
        }
        let done = tools.redrive("deliveries", &[]).await.unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(store.len("deliveries").await.unwrap(), 2);
        assert_eq!(store.len("deliveries-poison").await.unwrap(), 0);
        let stats = tools.stats(&["deliveries".into()], Utc::now()).await.unwrap();
        assert_eq!((stats[0].depth, stats[0].poison), (2, 0));
    }
}
