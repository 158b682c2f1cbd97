//! The embedded backend: one SQLite file holds state, claims, streams and queues.
//!
//! rusqlite is synchronous; each call runs on the blocking pool behind one connection in a mutex.
//! That is plenty for one process (standalone mode) and keeps every operation a single transaction.
//! Transactions that read before they write begin `IMMEDIATE`, so two processes on one file (two
//! `secmon run` on one store) queue on SQLite's write lock instead of failing on a stale snapshot.
//! A claim's holder token is a random value in the `token` column.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Claim, Etag, Precondition, Queue, Received, Store, StoreError, StoreResult, Token, poison_name};
use crate::clock::{Clock, SystemClock};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, done INTEGER NOT NULL, lease_until INTEGER NOT NULL,
    token TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS streams (stream TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (stream, seq));
CREATE TABLE IF NOT EXISTS queue (id TEXT PRIMARY KEY, queue TEXT NOT NULL, body BLOB NOT NULL,
    visible_at INTEGER NOT NULL, dequeue_count INTEGER NOT NULL, receipt TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (queue, visible_at, seq);
-- send() takes MAX(seq); without this index every send scans the table (a 10,000-alert poll was O(n^2)).
CREATE INDEX IF NOT EXISTS queue_seq ON queue (seq);
";

/// The SQLite store and queue.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    clock: Arc<dyn Clock>,
    max_dequeue: u32,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("max_dequeue", &self.max_dequeue).finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Self::with_connection(conn)
    }

    /// A private in-memory database (tests, `rules test`).
    pub fn in_memory() -> StoreResult<Self> {
        Self::with_connection(Connection::open_in_memory().map_err(backend)?)
    }

    fn with_connection(conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(Duration::from_secs(10)).map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        migrate(&conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), clock: Arc::new(SystemClock), max_dequeue: 5 })
    }

    /// Uses `clock` for leases and visibility timeouts.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how many receives make a message poison (default 5, as the Functions host).
    pub fn with_max_dequeue(mut self, n: u32) -> Self {
        self.max_dequeue = n.max(1);
        self
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Backend("sqlite connection poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(backend)?
    }
}

/// Brings a file written by an older secmon up to [`SCHEMA`]: claims gained a holder token (an old
/// claim has the empty token: completed ones stay done, a held one frees itself when its lease runs out).
fn migrate(conn: &Connection) -> StoreResult<()> {
    let has_token = conn
        .prepare("SELECT 1 FROM pragma_table_info('claims') WHERE name = 'token'")
        .and_then(|mut s| s.exists([]))
        .map_err(backend)?;
    if !has_token {
        conn.execute_batch("ALTER TABLE claims ADD COLUMN token TEXT NOT NULL DEFAULT ''").map_err(backend)?;
    }
    Ok(())
}

fn immediate(c: &mut Connection) -> StoreResult<rusqlite::Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)
}

fn not_holder(key: String) -> StoreError {
    StoreError::NotHolder { key }
}

fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey { key: key.into(), reason: "empty" });
    }
    if key.len() > 1024 {
        return Err(StoreError::InvalidKey { key: key.into(), reason: "longer than 1024 bytes" });
    }
    Ok(())
}

fn prefix_pattern(prefix: &str) -> String {
    let escaped = prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("{escaped}%")
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> StoreResult<Option<super::Versioned>> {
        let key = key.to_string();
        self.run(move |c| {
            c.query_row("SELECT value, version FROM kv WHERE key = ?1", params![key], |r| {
                Ok(super::Versioned { value: r.get(0)?, etag: Etag(r.get::<_, i64>(1)?.to_string()) })
            })
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Precondition) -> StoreResult<Etag> {
        check_key(key)?;
        let (key, value) = (key.to_string(), value.to_vec());
        self.run(move |c| {
            let tx = immediate(c)?;
            let current: Option<i64> = tx
                .query_row("SELECT version FROM kv WHERE key = ?1", params![key], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            let ok = match (&cond, current) {
                (Precondition::Absent, None) => true,
                (Precondition::Matches(Etag(e)), Some(v)) => *e == v.to_string(),
                _ => false,
            };
            if !ok {
                return Err(StoreError::Conflict { key });
            }
            let next = current.unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO kv (key, value, version) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version",
                params![key, value, next],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(Etag(next.to_string()))
        })
        .await
    }

    async fn put(&self, key: &str, value: &[u8]) -> StoreResult<Etag> {
        check_key(key)?;
        let (key, value) = (key.to_string(), value.to_vec());
        self.run(move |c| {
            let version: i64 = c
                .query_row(
                    "INSERT INTO kv (key, value, version) VALUES (?1, ?2, 1)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = kv.version + 1
                     RETURNING version",
                    params![key, value],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            Ok(Etag(version.to_string()))
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.run(move |c| c.execute("DELETE FROM kv WHERE key = ?1", params![key]).map(|_| ()).map_err(backend)).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let pattern = prefix_pattern(prefix);
        self.run(move |c| {
            let mut stmt =
                c.prepare("SELECT key FROM kv WHERE key LIKE ?1 ESCAPE '\\' ORDER BY key").map_err(backend)?;
            let rows = stmt.query_map(params![pattern], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(backend)
        })
        .await
    }

    async fn claim(&self, key: &str, lease: Duration) -> StoreResult<Claim> {
        check_key(key)?;
        let key = key.to_string();
        let now = self.now_ms();
        let until = now + lease.as_millis() as i64;
        self.run(move |c| {
            let tx = immediate(c)?;
            let row: Option<(i64, i64)> = tx
                .query_row("SELECT done, lease_until FROM claims WHERE key = ?1", params![key], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(backend)?;
            let answer = match row {
                Some((1, _)) => Claim::Done,
                Some((_, lease_until)) if lease_until > now => Claim::Held,
                _ => {
                    let token = uuid::Uuid::new_v4().simple().to_string();
                    tx.execute(
                        "INSERT INTO claims (key, done, lease_until, token) VALUES (?1, 0, ?2, ?3)
                         ON CONFLICT(key) DO UPDATE SET done = 0, lease_until = excluded.lease_until,
                         token = excluded.token",
                        params![key, until, token],
                    )
                    .map_err(backend)?;
                    Claim::Acquired(Token(token))
                }
            };
            tx.commit().map_err(backend)?;
            Ok(answer)
        })
        .await
    }

    async fn renew(&self, key: &str, token: &Token, lease: Duration) -> StoreResult<Token> {
        let (key, token) = (key.to_string(), token.clone());
        let until = self.now_ms() + lease.as_millis() as i64;
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE claims SET lease_until = ?3 WHERE key = ?1 AND token = ?2 AND done = 0",
                    params![key, token.0, until],
                )
                .map_err(backend)?;
            if n == 0 { Err(not_holder(key)) } else { Ok(token) }
        })
        .await
    }

    async fn complete(&self, key: &str, token: &Token) -> StoreResult<()> {
        let (key, token) = (key.to_string(), token.0.clone());
        self.run(move |c| {
            let n = c
                .execute("UPDATE claims SET done = 1 WHERE key = ?1 AND token = ?2", params![key, token])
                .map_err(backend)?;
            if n == 0 { Err(not_holder(key)) } else { Ok(()) }
        })
        .await
    }

    async fn release(&self, key: &str, token: &Token) -> StoreResult<()> {
        let (key, token) = (key.to_string(), token.0.clone());
        self.run(move |c| {
            let tx = immediate(c)?;
            let done: Option<(i64, String)> = tx
                .query_row("SELECT done, token FROM claims WHERE key = ?1", params![key], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(backend)?;
            match done {
                // Completed: never undone, whoever asks.
                Some((1, _)) => Ok(()),
                Some((_, holder)) if holder == token => {
                    tx.execute("DELETE FROM claims WHERE key = ?1", params![key]).map_err(backend)?;
                    tx.commit().map_err(backend)
                }
                _ => Err(not_holder(key)),
            }
        })
        .await
    }

    async fn append(&self, stream: &str, seq: u64, record: &[u8]) -> StoreResult<()> {
        check_key(stream)?;
        let (stream, record) = (stream.to_string(), record.to_vec());
        self.run(move |c| {
            let n = c
                .execute(
                    "INSERT INTO streams (stream, seq, record) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![stream, seq as i64, record],
                )
                .map_err(backend)?;
            if n == 0 { Err(StoreError::Conflict { key: format!("{stream}#{seq}") }) } else { Ok(()) }
        })
        .await
    }

    async fn read_stream(&self, stream: &str) -> StoreResult<Vec<Vec<u8>>> {
        let stream = stream.to_string();
        self.run(move |c| {
            let mut stmt = c.prepare("SELECT record FROM streams WHERE stream = ?1 ORDER BY seq").map_err(backend)?;
            let rows = stmt.query_map(params![stream], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<Vec<u8>>, _>>().map_err(backend)
        })
        .await
    }

    async fn list_streams(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let pattern = prefix_pattern(prefix);
        self.run(move |c| {
            let mut stmt = c
                .prepare("SELECT DISTINCT stream FROM streams WHERE stream LIKE ?1 ESCAPE '\\' ORDER BY stream")
                .map_err(backend)?;
            let rows = stmt.query_map(params![pattern], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl Queue for SqliteStore {
    async fn send(&self, queue: &str, body: &[u8]) -> StoreResult<()> {
        self.send_after(queue, body, Duration::ZERO).await
    }

    async fn send_after(&self, queue: &str, body: &[u8], delay: Duration) -> StoreResult<()> {
        check_key(queue)?;
        let (queue, body) = (queue.to_string(), body.to_vec());
        let now = self.now_ms() + delay.min(super::MAX_DELAY).as_millis() as i64;
        self.run(move |c| {
            c.execute(
                "INSERT INTO queue (id, queue, body, visible_at, dequeue_count, receipt, seq)
                 VALUES (?1, ?2, ?3, ?4, 0, '', (SELECT COALESCE(MAX(seq), 0) + 1 FROM queue))",
                params![uuid::Uuid::new_v4().to_string(), queue, body, now],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn receive(&self, queue: &str, max: usize, visibility: Duration) -> StoreResult<Vec<Received>> {
        let queue = queue.to_string();
        let now = self.now_ms();
        let hidden_until = now + visibility.as_millis() as i64;
        let max_dequeue = self.max_dequeue;
        self.run(move |c| {
            let tx = immediate(c)?;
            let mut out = Vec::new();
            {
                let mut stmt = tx
                    .prepare(
                        "SELECT id, body, dequeue_count FROM queue WHERE queue = ?1 AND visible_at <= ?2
                         ORDER BY seq LIMIT ?3",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![queue, now, max as i64], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, u32>(2)?))
                    })
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                for (id, body, count) in rows {
                    if count >= max_dequeue {
                        // Delivered max_dequeue times without being deleted: set it aside, as the host does.
                        tx.execute(
                            "UPDATE queue SET queue = ?2, visible_at = ?3, dequeue_count = 0 WHERE id = ?1",
                            params![id, poison_name(&queue), now],
                        )
                        .map_err(backend)?;
                        continue;
                    }
                    let receipt = uuid::Uuid::new_v4().to_string();
                    tx.execute(
                        "UPDATE queue SET visible_at = ?2, dequeue_count = dequeue_count + 1, receipt = ?3 WHERE id = ?1",
                        params![id, hidden_until, receipt],
                    )
                    .map_err(backend)?;
                    out.push(Received { id, receipt, body, dequeue_count: count + 1 });
                }
            }
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn delete(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        let (queue, id, receipt) = (queue.to_string(), msg.id.clone(), msg.receipt.clone());
        self.run(move |c| {
            let n = c
                .execute("DELETE FROM queue WHERE id = ?1 AND queue = ?2 AND receipt = ?3", params![id, queue, receipt])
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict { key: format!("{queue}/{id}") });
            }
            Ok(())
        })
        .await
    }

    async fn poison(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        let (queue, id, receipt) = (queue.to_string(), msg.id.clone(), msg.receipt.clone());
        let now = self.now_ms();
        self.run(move |c| {
            let n = c
                .execute(
                    "UPDATE queue SET queue = ?4, visible_at = ?5, receipt = '', dequeue_count = 0 WHERE id = ?1 AND queue = ?2 AND receipt = ?3",
                    params![id, queue, receipt, poison_name(&queue), now],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::Conflict { key: format!("{queue}/{id}") });
            }
            Ok(())
        })
        .await
    }

    async fn len(&self, queue: &str) -> StoreResult<usize> {
        let queue = queue.to_string();
        self.run(move |c| {
            c.query_row("SELECT COUNT(*) FROM queue WHERE queue = ?1", params![queue], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
                .map_err(backend)
        })
        .await
    }

    fn max_dequeue(&self) -> u32 {
        self.max_dequeue
    }

    /// The embedded queue holds any size; it keeps to the Azure queue's limit so that standalone mode
    /// and the tests send a large alert the way production does.
    fn max_body(&self) -> usize {
        super::azure::MAX_BODY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_store_contract() {
        let store = SqliteStore::in_memory().unwrap();
        super::super::contract::store_contract(&store).await;
    }

    #[tokio::test]
    async fn passes_the_fencing_contract() {
        let store = SqliteStore::in_memory().unwrap();
        super::super::contract::fencing_contract(&store).await;
    }

    /// Two handles on one file (two `secmon run` on one store) race one claim: one wins, and only its
    /// token completes it.
    #[tokio::test]
    async fn two_handles_on_one_file_share_claims() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (a, b) = (SqliteStore::open(&path).unwrap(), SqliteStore::open(&path).unwrap());
        let lease = Duration::from_secs(60);
        let (x, y) = tokio::join!(a.claim("k", lease), b.claim("k", lease));
        let (x, y) = (x.unwrap(), y.unwrap());
        let (winner, token) = match (&x, &y) {
            (Claim::Acquired(t), Claim::Held) => (&a, t.clone()),
            (Claim::Held, Claim::Acquired(t)) => (&b, t.clone()),
            other => panic!("exactly one handle must win: {other:?}"),
        };
        let loser = if std::ptr::eq(winner, &a) { &b } else { &a };
        assert!(matches!(loser.complete("k", &Token("guess".into())).await, Err(StoreError::NotHolder { .. })));
        loser.complete("k", &token).await.unwrap();
        assert_eq!(winner.claim("k", lease).await.unwrap(), Claim::Done);
    }

    #[tokio::test]
    async fn a_file_from_before_fencing_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE claims (key TEXT PRIMARY KEY, done INTEGER NOT NULL, lease_until INTEGER NOT NULL);
                 INSERT INTO claims VALUES ('done', 1, 0), ('stale', 0, 0);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.claim("done", Duration::from_secs(60)).await.unwrap(), Claim::Done);
        assert!(matches!(s.claim("stale", Duration::from_secs(60)).await.unwrap(), Claim::Acquired(_)));
    }

    #[tokio::test]
    async fn passes_the_queue_contract() {
        let store = SqliteStore::in_memory().unwrap().with_max_dequeue(3);
        super::super::contract::queue_contract(&store).await;
    }

    #[tokio::test]
    async fn survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.put("k", b"v").await.unwrap();
            s.send("q", b"m").await.unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.get("k").await.unwrap().unwrap().value, b"v");
        assert_eq!(s.receive("q", 10, Duration::from_secs(30)).await.unwrap()[0].body, b"m");
    }
}
