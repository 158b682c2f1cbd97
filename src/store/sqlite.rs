//! The embedded backend: one SQLite file holds state, claims, streams and queues.
//!
//! **One connection, group commit, no hand-off.** Every operation is a job for the one connection.
//! A caller queues its job and, when the connection is free, runs every queued job itself, in one
//! transaction, on its own thread; a caller that finds the connection busy is answered by the
//! caller that holds it, which runs the queue again before it lets the connection go. So a lone
//! caller pays no thread switch, and concurrent writers share one commit (a savepoint per job keeps
//! a failed job from undoing the others). A job is answered only after its batch committed: every
//! effect is in the file before the call returns. Statements are prepared once per connection
//! (`prepare_cached`).
//!
//! **Durability.** WAL journal with `synchronous = NORMAL`: a commit has been written to the file
//! (the operating system holds it) before the call returns, so a crash or `kill -9` of secmon loses
//! nothing acknowledged. A power cut or a kernel crash may roll back the last commits — all of them
//! after some point, in order — which repeats work and loses none; `docs/performance.md` ("SQLite
//! durability") says why. Checkpoints (which copy the WAL into the database, with the fsyncs NORMAL
//! defers to them) run every [`CHECKPOINT_PAGES`] pages of WAL.
//!
//! Batches that write begin `IMMEDIATE`, so two processes on one file (two `secmon run` on one
//! store) queue on SQLite's write lock instead of failing on a stale snapshot. No transaction spans
//! an `.await`: a batch runs from begin to commit in one go on one thread. A claim's holder token is
//! a random value in the `token` column.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Claim, Etag, Listed, Precondition, Queue, Received, Space, Store, StoreError, StoreResult, Token, Versioned,
    poison_name,
};
use crate::clock::{Clock, SystemClock};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL,
    written INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, done INTEGER NOT NULL, lease_until INTEGER NOT NULL,
    token TEXT NOT NULL DEFAULT '', written INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS streams (stream TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (stream, seq));
";

/// The queue: a message's state in one small row, its body in another table. Receive rewrites the state
/// (visibility, dequeue count, receipt, holder) and SQLite rewrites a whole row on any update, so a body
/// in that row (several KB of alert JSON, in overflow pages) went to the WAL again on every receive.
///
/// - `queue` is keyed by `(queue, seq)` and has no rowid: receive walks one queue in order over the
///   table itself and skips the hidden messages, delete finds a message by its key, and there is no
///   index to keep beside it. `seq` is the message id ([`Received::id`]) and its place in line.
/// - `queue_body` is keyed by `seq` (its rowid): written once on send, deleted with the message. A new
///   message's `seq` is the next rowid, above every message there is; a number is used again only
///   after the message that had it is gone (a stale receipt of that one still finds no match).
const QUEUE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (queue TEXT NOT NULL, seq INTEGER NOT NULL, visible_at INTEGER NOT NULL,
    dequeue_count INTEGER NOT NULL, receipt TEXT NOT NULL, leased_by TEXT NOT NULL DEFAULT '',
    enqueued_at INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (queue, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_body (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
";

/// Pages of WAL after which a commit checkpoints (SQLite's default is 1000, 4 MB): fewer checkpoints,
/// each of them two fsyncs.
pub const CHECKPOINT_PAGES: u32 = 4000;

/// The visible messages of a queue, oldest first (see [`Queue::receive`]).
/// `CROSS JOIN` keeps `queue` the outer loop: the walk is in order and stops after `max`.
const RECEIVE: &str = "SELECT q.seq, b.body, q.dequeue_count FROM queue AS q CROSS JOIN queue_body AS b
     ON b.seq = q.seq WHERE q.queue = ?1 AND q.visible_at <= ?2 ORDER BY q.seq";

/// Most jobs one transaction runs.
const MAX_BATCH: usize = 256;

/// The SQLite store and queue.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
    clock: Arc<dyn Clock>,
    max_dequeue: u32,
    /// This process, recorded in the file: the holder of what it receives (see [`Instance`]).
    instance: Arc<Instance>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("max_dequeue", &self.max_dequeue).finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Sends a job's outcome to its caller: `None` once its batch committed, else why the batch failed.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// Runs an operation on the connection — or, given why its batch could not begin, does not — and says
/// whether it succeeded and how to answer once the batch is settled.
type Run = Box<dyn FnOnce(Result<&Connection, &str>) -> (bool, Answer) + Send>;

/// One operation waiting for the connection.
struct Job {
    /// Whether it may write: a batch with a writer begins `IMMEDIATE`, each writer in a savepoint.
    write: bool,
    /// The operation.
    run: Run,
}

/// The connection and the jobs waiting for it.
struct Db {
    conn: Mutex<Connection>,
    pending: Mutex<Vec<Job>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A job that panicked leaves nothing half-done behind a lock: the queue is a plain list, and an
    // open transaction is rolled back before the next batch.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Db {
    /// Queues `job`, then runs what is queued unless another caller holds the connection: that caller
    /// looks at the queue again after it lets the connection go, so the job is never left behind.
    fn submit(&self, job: Job) {
        lock(&self.pending).push(job);
        loop {
            let conn = match self.conn.try_lock() {
                Ok(conn) => conn,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            while let Some(batch) = self.take() {
                run_batch(&conn, batch);
            }
            drop(conn);
            if lock(&self.pending).is_empty() {
                return;
            }
        }
    }

    fn take(&self) -> Option<Vec<Job>> {
        let mut pending = lock(&self.pending);
        if pending.is_empty() {
            return None;
        }
        let n = pending.len().min(MAX_BATCH);
        Some(pending.drain(..n).collect())
    }
}

/// Runs `jobs` in one transaction (reads alone in none) and answers each once it is settled.
fn run_batch(c: &Connection, jobs: Vec<Job>) {
    if !c.is_autocommit() {
        // Left open by a job that panicked.
        let _ = c.execute_batch("ROLLBACK");
    }
    if !jobs.iter().any(|j| j.write) {
        for job in jobs {
            (job.run)(Ok(c)).1(None);
        }
        return;
    }
    if let Err(e) = exec(c, "BEGIN IMMEDIATE") {
        let why = e.to_string();
        for job in jobs {
            (job.run)(Err(&why)).1(Some(&why));
        }
        return;
    }
    // A batch of one needs no savepoint: its failure rolls the transaction back.
    let alone = jobs.len() == 1;
    let mut rollback = false;
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let savepoint = job.write && !alone;
        if savepoint && let Err(e) = exec(c, "SAVEPOINT job") {
            answers.push((job.run)(Err(&e.to_string())).1);
            continue;
        }
        let (ok, answer) = (job.run)(Ok(c));
        if savepoint {
            if !ok {
                let _ = exec(c, "ROLLBACK TO job");
            }
            let _ = exec(c, "RELEASE job");
        } else if !ok {
            rollback = alone;
        }
        answers.push(answer);
    }
    let settled = if rollback { exec(c, "ROLLBACK") } else { exec(c, "COMMIT") };
    match settled {
        Ok(()) => answers.into_iter().for_each(|a| a(None)),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            let why = e.to_string();
            answers.into_iter().for_each(|a| a(Some(&why)));
        }
    }
}

fn exec(c: &Connection, sql: &str) -> rusqlite::Result<()> {
    c.prepare_cached(sql)?.execute([]).map(|_| ())
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
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        enable_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
        conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES).map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(64);
        // The schema and its migrations in one write transaction: a second process opening the file at
        // the same moment waits for it, instead of finding a column missing and adding it twice.
        let instance = Arc::new(Instance::this_process());
        exec(&conn, "BEGIN IMMEDIATE").map_err(backend)?;
        let setup = conn
            .execute_batch(SCHEMA)
            .map_err(backend)
            .and_then(|()| migrate(&conn))
            .and_then(|()| register(&conn, &instance));
        match setup {
            Ok(()) => exec(&conn, "COMMIT").map_err(backend)?,
            Err(e) => {
                let _ = exec(&conn, "ROLLBACK");
                return Err(e);
            }
        }
        let db = Db { conn: Mutex::new(conn), pending: Mutex::new(Vec::new()) };
        Ok(Self { db: Arc::new(db), clock: Arc::new(SystemClock), max_dequeue: 5, instance })
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

    /// Runs `f` as one job that only reads.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.job(false, f).await
    }

    /// Runs `f` as one job that may write; it is answered after its batch committed.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.job(true, f).await
    }

    async fn job<T, F>(&self, write: bool, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let run = move |c: Result<&Connection, &str>| -> (bool, Answer) {
            let out = match c {
                Ok(c) => f(c),
                Err(why) => Err(backend(why)),
            };
            let ok = out.is_ok();
            let answer = move |failed: Option<&str>| {
                let out = match (out, failed) {
                    (Ok(_), Some(why)) => Err(backend(format!("commit failed: {why}"))),
                    (out, _) => out,
                };
                let _ = tx.send(out);
            };
            (ok, Box::new(answer))
        };
        self.db.submit(Job { write, run: Box::new(run) });
        rx.await.map_err(|_| backend("the sqlite job was dropped unanswered"))?
    }
}

/// Brings a file written by an older secmon up to [`SCHEMA`]: claims gained a holder token (an old
/// claim has the empty token: completed ones stay done, a held one frees itself when its lease runs out).
/// How long a statement waits for another connection's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Switches the file to WAL. SQLite answers that switch with "database is locked" at once, without its
/// busy handler, while another connection holds a lock — two processes opening a new file at the same
/// moment — so it is retried here for as long as the busy timeout would wait.
fn enable_wal(conn: &Connection) -> StoreResult<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut wait = Duration::from_millis(2);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(backend(e)),
        }
    }
}

fn migrate(conn: &Connection) -> StoreResult<()> {
    let has_token = conn
        .prepare("SELECT 1 FROM pragma_table_info('claims') WHERE name = 'token'")
        .and_then(|mut s| s.exists([]))
        .map_err(backend)?;
    if !has_token {
        conn.execute_batch("ALTER TABLE claims ADD COLUMN token TEXT NOT NULL DEFAULT ''").map_err(backend)?;
    }
    // Write times (retention): a key from before them counts as written now, so it gets its whole
    // lifetime from the upgrade on and is never swept early.
    let now = chrono::Utc::now().timestamp_millis();
    for table in ["kv", "claims"] {
        let has_written = conn
            .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'written'"))
            .and_then(|mut s| s.exists([]))
            .map_err(backend)?;
        if !has_written {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN written INTEGER NOT NULL DEFAULT 0; UPDATE {table} SET written = {now};"
            ))
            .map_err(backend)?;
        }
    }
    migrate_admin(conn)
}

/// The version [`Store::scan`] gives a claim: any write (claim, renew, complete) changes it.
const CLAIM_VERSION: &str = "written || ':' || token || ':' || done";

fn from_ms(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
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

fn get_on(c: &Connection, key: &str) -> StoreResult<Option<Versioned>> {
    c.prepare_cached("SELECT value, version FROM kv WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row(params![key], |r| {
                Ok(Versioned { value: r.get(0)?, etag: Etag(r.get::<_, i64>(1)?.to_string()) })
            })
            .optional()
        })
        .map_err(backend)
}

fn put_on(c: &Connection, key: &str, value: &[u8], now: i64) -> StoreResult<Etag> {
    let version: i64 = c
        .prepare_cached(
            "INSERT INTO kv (key, value, version, written) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = kv.version + 1,
             written = excluded.written
             RETURNING version",
        )
        .and_then(|mut s| s.query_row(params![key, value, now], |r| r.get(0)))
        .map_err(backend)?;
    Ok(Etag(version.to_string()))
}

/// Takes the claim of `key` unless it is done or held until after `now`; the new lease ends at `until`.
fn claim_on(c: &Connection, key: String, now: i64, until: i64) -> StoreResult<Claim> {
    let row: Option<(i64, i64)> = c
        .prepare_cached("SELECT done, lease_until FROM claims WHERE key = ?1")
        .and_then(|mut s| s.query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(backend)?;
    Ok(match row {
        Some((1, _)) => Claim::Done,
        Some((_, lease_until)) if lease_until > now => Claim::Held,
        _ => {
            let token = uuid::Uuid::new_v4().simple().to_string();
            c.prepare_cached(
                "INSERT INTO claims (key, done, lease_until, token, written) VALUES (?1, 0, ?2, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET done = 0, lease_until = excluded.lease_until,
                 token = excluded.token, written = excluded.written",
            )
            .and_then(|mut s| s.execute(params![key, until, token, now]))
            .map_err(backend)?;
            Claim::Acquired(Token(token))
        }
    })
}

/// Completes the claim of `key` held with `token`; false when `token` does not hold it.
fn complete_on(c: &Connection, key: &str, token: &str, now: i64) -> StoreResult<bool> {
    let n = c
        .prepare_cached("UPDATE claims SET done = 1, written = ?3 WHERE key = ?1 AND token = ?2")
        .and_then(|mut s| s.execute(params![key, token, now]))
        .map_err(backend)?;
    Ok(n > 0)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        let key = key.to_string();
        self.read(move |c| get_on(c, &key)).await
    }

    async fn put_if(&self, key: &str, value: &[u8], cond: Precondition) -> StoreResult<Etag> {
        check_key(key)?;
        let (key, value) = (key.to_string(), value.to_vec());
        let now = self.now_ms();
        self.write(move |c| {
            let current: Option<i64> = c
                .prepare_cached("SELECT version FROM kv WHERE key = ?1")
                .and_then(|mut s| s.query_row(params![key], |r| r.get(0)).optional())
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
            c.prepare_cached(
                "INSERT INTO kv (key, value, version, written) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, version = excluded.version,
                 written = excluded.written",
            )
            .and_then(|mut s| s.execute(params![key, value, next, now]))
            .map_err(backend)?;
            Ok(Etag(next.to_string()))
        })
        .await
    }

    async fn put(&self, key: &str, value: &[u8]) -> StoreResult<Etag> {
        check_key(key)?;
        let (key, value) = (key.to_string(), value.to_vec());
        let now = self.now_ms();
        self.write(move |c| put_on(c, &key, &value, now)).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.write(move |c| {
            c.prepare_cached("DELETE FROM kv WHERE key = ?1")
                .and_then(|mut s| s.execute(params![key]))
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let pattern = prefix_pattern(prefix);
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT key FROM kv WHERE key LIKE ?1 ESCAPE '\\' ORDER BY key").map_err(backend)?;
            let rows = stmt.query_map(params![pattern], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(backend)
        })
        .await
    }

    async fn claim(&self, key: &str, lease: Duration) -> StoreResult<Claim> {
        check_key(key)?;
        let key = key.to_string();
        let (now, until) = (self.now_ms(), self.now_ms() + lease.as_millis() as i64);
        self.write(move |c| claim_on(c, key, now, until)).await
    }

    async fn claim_reading(&self, key: &str, lease: Duration, read: &str) -> StoreResult<(Claim, Option<Versioned>)> {
        check_key(key)?;
        let (key, read) = (key.to_string(), read.to_string());
        let (now, until) = (self.now_ms(), self.now_ms() + lease.as_millis() as i64);
        self.write(move |c| {
            let claim = claim_on(c, key, now, until)?;
            let value = match claim {
                Claim::Acquired(_) => get_on(c, &read)?,
                Claim::Done | Claim::Held => None,
            };
            Ok((claim, value))
        })
        .await
    }

    async fn renew(&self, key: &str, token: &Token, lease: Duration) -> StoreResult<Token> {
        let (key, token) = (key.to_string(), token.clone());
        let now = self.now_ms();
        let until = now + lease.as_millis() as i64;
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE claims SET lease_until = ?3, written = ?4 WHERE key = ?1 AND token = ?2 AND done = 0",
                )
                .and_then(|mut s| s.execute(params![key, token.0, until, now]))
                .map_err(backend)?;
            if n == 0 { Err(not_holder(key)) } else { Ok(token) }
        })
        .await
    }

    async fn complete(&self, key: &str, token: &Token) -> StoreResult<()> {
        let (key, token) = (key.to_string(), token.0.clone());
        let now = self.now_ms();
        self.write(move |c| if complete_on(c, &key, &token, now)? { Ok(()) } else { Err(not_holder(key)) }).await
    }

    async fn complete_with(&self, key: &str, token: &Token, puts: &[(String, Vec<u8>)]) -> StoreResult<()> {
        for (k, _) in puts {
            check_key(k)?;
        }
        let (key, token, puts) = (key.to_string(), token.0.clone(), puts.to_vec());
        let now = self.now_ms();
        // The puts stand when the claim is no longer this holder's: the job succeeds (its savepoint is
        // kept) and says so, and the error is made here.
        let completed = self
            .write(move |c| {
                for (k, v) in &puts {
                    put_on(c, k, v, now)?;
                }
                complete_on(c, &key, &token, now).map(|done| (done, key))
            })
            .await?;
        match completed {
            (true, _) => Ok(()),
            (false, key) => Err(not_holder(key)),
        }
    }

    async fn release(&self, key: &str, token: &Token) -> StoreResult<()> {
        let (key, token) = (key.to_string(), token.0.clone());
        self.write(move |c| {
            let done: Option<(i64, String)> = c
                .prepare_cached("SELECT done, token FROM claims WHERE key = ?1")
                .and_then(|mut s| s.query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(backend)?;
            match done {
                // Completed: never undone, whoever asks.
                Some((1, _)) => Ok(()),
                Some((_, holder)) if holder == token => c
                    .prepare_cached("DELETE FROM claims WHERE key = ?1")
                    .and_then(|mut s| s.execute(params![key]))
                    .map(|_| ())
                    .map_err(backend),
                _ => Err(not_holder(key)),
            }
        })
        .await
    }

    async fn append(&self, stream: &str, seq: u64, record: &[u8]) -> StoreResult<()> {
        check_key(stream)?;
        let (stream, record) = (stream.to_string(), record.to_vec());
        self.write(move |c| {
            let n = c
                .prepare_cached("INSERT INTO streams (stream, seq, record) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
                .and_then(|mut s| s.execute(params![stream, seq as i64, record]))
                .map_err(backend)?;
            if n == 0 { Err(StoreError::Conflict { key: format!("{stream}#{seq}") }) } else { Ok(()) }
        })
        .await
    }

    async fn append_new(&self, stream: &str, records: &[(u64, Vec<u8>)]) -> StoreResult<()> {
        check_key(stream)?;
        let (stream, records) = (stream.to_string(), records.to_vec());
        self.write(move |c| {
            let mut insert = c
                .prepare_cached("INSERT INTO streams (stream, seq, record) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
                .map_err(backend)?;
            for (seq, record) in &records {
                insert.execute(params![stream, *seq as i64, record]).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn read_stream(&self, stream: &str) -> StoreResult<Vec<Vec<u8>>> {
        let stream = stream.to_string();
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT record FROM streams WHERE stream = ?1 ORDER BY seq").map_err(backend)?;
            let rows = stmt.query_map(params![stream], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<Vec<u8>>, _>>().map_err(backend)
        })
        .await
    }

    async fn list_streams(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let pattern = prefix_pattern(prefix);
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT DISTINCT stream FROM streams WHERE stream LIKE ?1 ESCAPE '\\' ORDER BY stream")
                .map_err(backend)?;
            let rows = stmt.query_map(params![pattern], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(backend)
        })
        .await
    }

    async fn scan(&self, space: Space, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Listed>> {
        let (prefix, after) = (prefix.to_string(), after.unwrap_or_default().to_string());
        // A range on the primary key (from the prefix, past the cursor), cut where the prefix ends.
        let sql = match space {
            Space::Values => "SELECT key, CAST(version AS TEXT), written FROM kv WHERE key >= ?1 AND key > ?2
                 ORDER BY key LIMIT ?3"
                .to_string(),
            Space::Claims => format!(
                "SELECT key, {CLAIM_VERSION}, written FROM claims WHERE key >= ?1 AND key > ?2 ORDER BY key LIMIT ?3"
            ),
        };
        self.read(move |c| {
            let mut stmt = c.prepare(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(params![prefix, after, limit as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(backend)?;
            let mut out = Vec::new();
            for row in rows {
                let (key, etag, written) = row.map_err(backend)?;
                if !key.starts_with(&prefix) {
                    break;
                }
                out.push(Listed { key, etag: Etag(etag), written: from_ms(written) });
            }
            Ok(out)
        })
        .await
    }

    async fn delete_if(&self, space: Space, key: &str, etag: &Etag) -> StoreResult<bool> {
        let (key, etag) = (key.to_string(), etag.0.clone());
        let now = self.now_ms();
        self.write(move |c| {
            let n = match space {
                Space::Values => {
                    c.execute("DELETE FROM kv WHERE key = ?1 AND CAST(version AS TEXT) = ?2", params![key, etag])
                }
                // Never a claim whose lease is still running, whatever its age.
                Space::Claims => c.execute(
                    &format!(
                        "DELETE FROM claims WHERE key = ?1 AND {CLAIM_VERSION} = ?2 AND (done = 1 OR lease_until <= ?3)"
                    ),
                    params![key, etag, now],
                ),
            };
            n.map(|n| n > 0).map_err(backend)
        })
        .await
    }

    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        let stream = stream.to_string();
        self.write(move |c| {
            c.execute("DELETE FROM streams WHERE stream = ?1", params![stream]).map(|_| ()).map_err(backend)
        })
        .await
    }
}

/// Puts a message on `queue`, visible (and counted as put there) from `visible_at`: its body first, whose
/// new rowid is the message's `seq` (see [`QUEUE_SCHEMA`]).
fn insert_message(c: &Connection, queue: &str, body: &[u8], visible_at: i64) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO queue_body (body) VALUES (?1)")?.execute(params![body])?;
    let seq = c.last_insert_rowid();
    c.prepare_cached(
        "INSERT INTO queue (queue, seq, visible_at, dequeue_count, receipt, enqueued_at) VALUES (?1, ?2, ?3, 0, '', ?3)",
    )?
    .execute(params![queue, seq, visible_at])
    .map(|_| ())
}

/// Deletes the body of a message that was just deleted.
fn delete_body(c: &Connection, seq: i64) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM queue_body WHERE seq = ?1")?.execute(params![seq]).map(|_| ())
}

/// The `seq` a message id names; `None` for an id this store never gave (no such message).
fn seq_of(id: &str) -> Option<i64> {
    id.parse().ok()
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
        self.write(move |c| insert_message(c, &queue, &body, now).map_err(backend)).await
    }

    async fn send_many(&self, queue: &str, bodies: &[Vec<u8>]) -> Result<(), super::Partial> {
        let partial = |error| super::Partial { sent: 0, error };
        check_key(queue).map_err(partial)?;
        let (queue, bodies) = (queue.to_string(), bodies.to_vec());
        let now = self.now_ms();
        // One job: the batch it commits in is the transaction, so all of them are sent or none.
        self.write(move |c| {
            for body in &bodies {
                insert_message(c, &queue, body, now).map_err(backend)?;
            }
            Ok(())
        })
        .await
        .map_err(partial)
    }

    async fn receive(&self, queue: &str, max: usize, visibility: Duration) -> StoreResult<Vec<Received>> {
        let queue = queue.to_string();
        let now = self.now_ms();
        let hidden_until = now + visibility.as_millis() as i64;
        let max_dequeue = self.max_dequeue;
        let holder = self.instance.id.clone();
        self.write(move |c| {
            // No `LIMIT ?`: SQLite plans with a bound LIMIT's value and so prepared the statement again
            // whenever `max` changed (most receives). The index gives the order, so rows stream and
            // stepping stops after `max`.
            let rows = c
                .prepare_cached(RECEIVE)
                .and_then(|mut s| {
                    s.query_map(params![queue, now], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, u32>(2)?))
                    })?
                    .take(max)
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)?;
            let mut out = Vec::with_capacity(rows.len());
            for (seq, body, count) in rows {
                if count >= max_dequeue {
                    // Delivered max_dequeue times without being deleted: set it aside, as the host does.
                    c.prepare_cached(
                        "UPDATE queue SET queue = ?3, visible_at = ?4, dequeue_count = 0 WHERE queue = ?1 AND seq = ?2",
                    )
                    .and_then(|mut s| s.execute(params![queue, seq, poison_name(&queue), now]))
                    .map_err(backend)?;
                    continue;
                }
                // Random from the thread's generator, not the operating system's (a system call each).
                let receipt = format!("{:032x}", rand::random::<u128>());
                c.prepare_cached(
                    "UPDATE queue SET visible_at = ?3, dequeue_count = dequeue_count + 1, receipt = ?4,
                     leased_by = ?5 WHERE queue = ?1 AND seq = ?2",
                )
                .and_then(|mut s| s.execute(params![queue, seq, hidden_until, receipt, holder]))
                .map_err(backend)?;
                out.push(Received { id: seq.to_string(), receipt, body, dequeue_count: count + 1 });
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        let (queue, id, receipt) = (queue.to_string(), msg.id.clone(), msg.receipt.clone());
        self.write(move |c| {
            let conflict = || StoreError::Conflict { key: format!("{queue}/{id}") };
            let seq = seq_of(&id).ok_or_else(conflict)?;
            let n = c
                .prepare_cached("DELETE FROM queue WHERE queue = ?1 AND seq = ?2 AND receipt = ?3")
                .and_then(|mut s| s.execute(params![queue, seq, receipt]))
                .map_err(backend)?;
            if n == 0 {
                return Err(conflict());
            }
            delete_body(c, seq).map_err(backend)
        })
        .await
    }

    async fn poison(&self, queue: &str, msg: &Received) -> StoreResult<()> {
        let (queue, id, receipt) = (queue.to_string(), msg.id.clone(), msg.receipt.clone());
        let now = self.now_ms();
        self.write(move |c| {
            let conflict = || StoreError::Conflict { key: format!("{queue}/{id}") };
            let seq = seq_of(&id).ok_or_else(conflict)?;
            let n = c
                .prepare_cached(
                    "UPDATE queue SET queue = ?4, visible_at = ?5, receipt = '', dequeue_count = 0
                     WHERE queue = ?1 AND seq = ?2 AND receipt = ?3",
                )
                .and_then(|mut s| s.execute(params![queue, seq, receipt, poison_name(&queue), now]))
                .map_err(backend)?;
            if n == 0 {
                return Err(conflict());
            }
            Ok(())
        })
        .await
    }

    async fn len(&self, queue: &str) -> StoreResult<usize> {
        let queue = queue.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT COUNT(*) FROM queue WHERE queue = ?1")
                .and_then(|mut s| s.query_row(params![queue], |r| r.get::<_, i64>(0)))
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

    fn admin(&self) -> Option<&dyn super::QueueAdmin> {
        Some(self)
    }
}

// The operator's side of the queue ([`QueueAdmin`]) and who holds a message (dead-lease recovery).

/// One process that opened the file: who holds the messages it receives. A process that is gone (it
/// crashed, or was stopped) leaves its messages hidden until their visibility timeout; the next process
/// to open the file sees that the holder is not alive and makes them visible at once
/// ([`QueueAdmin::recover_dead_leases`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Random, per opened store.
    pub id: String,
    /// The process id.
    pub pid: u32,
    /// The machine's boot id (`/proc/sys/kernel/random/boot_id`): a process of an earlier boot is gone.
    pub boot: String,
    /// The host name: a process on another machine (a store on a shared disk) cannot be checked, so it
    /// is taken to be alive.
    pub host: String,
    /// When the process started, in clock ticks since boot (`/proc/<pid>/stat`), so a new process that
    /// was given a dead one's pid is not taken for it.
    pub started: String,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), `None` when there is no such process.
fn process_started(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

impl Instance {
    /// This process, as recorded in the file.
    pub fn this_process() -> Instance {
        let pid = std::process::id();
        Instance {
            id: uuid::Uuid::new_v4().simple().to_string(),
            pid,
            boot: read_trimmed("/proc/sys/kernel/random/boot_id"),
            host: read_trimmed("/proc/sys/kernel/hostname"),
            started: process_started(pid).unwrap_or_default(),
        }
    }

    /// Whether the process may still be running. Only Linux can tell (`/proc`); elsewhere, and for a
    /// process of another host, the answer is yes (its messages then wait for their visibility timeout).
    pub fn alive(&self) -> bool {
        if !cfg!(target_os = "linux") {
            return true;
        }
        let me = Instance::this_process();
        if self.host != me.host || me.boot.is_empty() {
            return true;
        }
        if self.boot != me.boot {
            return false;
        }
        process_started(self.pid).is_some_and(|started| started == self.started)
    }
}

fn migrate_admin(conn: &Connection) -> StoreResult<()> {
    migrate_queue(conn)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, pid INTEGER NOT NULL, boot TEXT NOT NULL,
             host TEXT NOT NULL, started TEXT NOT NULL, opened INTEGER NOT NULL)",
    )
    .map_err(backend)
}

/// Brings the queue to [`QUEUE_SCHEMA`]. A file from before it has one `queue` table with the body in
/// each row (and, older still, no `enqueued_at` or `leased_by`: such messages count as put on the queue
/// at 0, the age of the oldest then unknown, and as held by no one). Its rows move to the new tables in
/// the migrations' transaction, each keeping its queue, visibility, dequeue count, receipt, holder and
/// place in line; their ids become their new `seq`.
fn migrate_queue(conn: &Connection) -> StoreResult<()> {
    let has = |column: &str| {
        conn.prepare("SELECT 1 FROM pragma_table_info('queue') WHERE name = ?1")
            .and_then(|mut s| s.exists(params![column]))
            .map_err(backend)
    };
    if !has("body")? {
        return conn.execute_batch(QUEUE_SCHEMA).map_err(backend);
    }
    let old = "queue_before_issue_17";
    let column = |name: &str, otherwise: &str| {
        Ok::<_, StoreError>(if has(name)? { name.to_string() } else { otherwise.to_string() })
    };
    let (enqueued_at, leased_by) = (column("enqueued_at", "0")?, column("leased_by", "''")?);
    // The old table's indexes go with it; `ROW_NUMBER` numbers the messages in their old order (`seq`,
    // then the unique id should two share a seq), the same in both statements.
    conn.execute_batch(&format!(
        "ALTER TABLE queue RENAME TO {old};
         {QUEUE_SCHEMA}
         INSERT INTO queue_body (seq, body) SELECT ROW_NUMBER() OVER (ORDER BY seq, id), body FROM {old};
         INSERT INTO queue (queue, seq, visible_at, dequeue_count, receipt, leased_by, enqueued_at)
             SELECT queue, ROW_NUMBER() OVER (ORDER BY seq, id), visible_at, dequeue_count, receipt, {leased_by},
             {enqueued_at} FROM {old};
         DROP TABLE {old};"
    ))
    .map_err(backend)
}

fn register(conn: &Connection, me: &Instance) -> StoreResult<()> {
    conn.execute(
        "INSERT OR REPLACE INTO instances (id, pid, boot, host, started, opened)
         VALUES (?1, ?2, ?3, ?4, ?5, CAST(strftime('%s', 'now') AS INTEGER))",
        params![me.id, me.pid, me.boot, me.host, me.started],
    )
    .map(|_| ())
    .map_err(backend)
}

impl SqliteStore {
    /// The same store, holding what it receives as `instance` (recorded in the file); tests use it
    /// to play a process that died.
    pub fn as_instance(mut self, instance: Instance) -> StoreResult<Self> {
        register(
            &*self.db.conn.lock().map_err(|_| StoreError::Backend("sqlite connection poisoned".into()))?,
            &instance,
        )?;
        self.instance = Arc::new(instance);
        Ok(self)
    }

    /// The process this store records itself as.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }
}

fn millis(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    (ms > 0).then(|| chrono::DateTime::from_timestamp_millis(ms)).flatten()
}

#[async_trait]
impl super::admin::QueueAdmin for SqliteStore {
    async fn peek(&self, queue: &str, max: usize) -> StoreResult<super::admin::Peeked> {
        let queue = queue.to_string();
        self.read(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT q.seq, b.body, q.enqueued_at, q.dequeue_count FROM queue AS q CROSS JOIN queue_body AS b
                     ON b.seq = q.seq WHERE q.queue = ?1 ORDER BY q.seq LIMIT ?2",
                )
                .map_err(backend)?;
            let messages = stmt
                .query_map(params![queue, max.saturating_add(1) as i64], |r| {
                    Ok(super::admin::Listed {
                        id: r.get::<_, i64>(0)?.to_string(),
                        body: r.get(1)?,
                        enqueued_at: millis(r.get(2)?),
                        dequeue_count: r.get(3)?,
                    })
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            let complete = messages.len() <= max;
            Ok(super::admin::Peeked { messages: messages.into_iter().take(max).collect(), complete })
        })
        .await
    }

    async fn move_message(&self, from: &str, id: &str, to: &str) -> StoreResult<bool> {
        check_key(to)?;
        let (from, id, to) = (from.to_string(), id.to_string(), to.to_string());
        let now = self.now_ms();
        self.write(move |c| {
            // One job, so one transaction: the message is on one queue or the other, never both or
            // neither. It goes to the back of `to` with a new seq (so a new id, as a redriven message
            // has on Azure).
            let Some(seq) = seq_of(&id) else { return Ok(false) };
            let last: i64 =
                c.query_row("SELECT COALESCE(MAX(seq), 0) FROM queue_body", [], |r| r.get(0)).map_err(backend)?;
            let n = c
                .execute(
                    "UPDATE queue SET queue = ?3, seq = ?5, visible_at = ?4, dequeue_count = 0, receipt = '',
                     leased_by = '' WHERE queue = ?2 AND seq = ?1",
                    params![seq, from, to, now, last + 1],
                )
                .map_err(backend)?;
            if n > 0 {
                c.execute("UPDATE queue_body SET seq = ?2 WHERE seq = ?1", params![seq, last + 1]).map_err(backend)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn remove(&self, queue: &str, id: &str) -> StoreResult<bool> {
        let (queue, id) = (queue.to_string(), id.to_string());
        self.write(move |c| {
            let Some(seq) = seq_of(&id) else { return Ok(false) };
            let n =
                c.execute("DELETE FROM queue WHERE queue = ?1 AND seq = ?2", params![queue, seq]).map_err(backend)?;
            if n > 0 {
                delete_body(c, seq).map_err(backend)?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn recover_dead_leases(&self) -> StoreResult<usize> {
        let me = self.instance.id.clone();
        let others: Vec<Instance> = self
            .read(move |c| {
                let mut stmt =
                    c.prepare("SELECT id, pid, boot, host, started FROM instances WHERE id != ?1").map_err(backend)?;
                let rows = stmt
                    .query_map(params![me], |r| {
                        Ok(Instance {
                            id: r.get(0)?,
                            pid: r.get(1)?,
                            boot: r.get(2)?,
                            host: r.get(3)?,
                            started: r.get(4)?,
                        })
                    })
                    .map_err(backend)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(backend)
            })
            .await?;
        let dead: Vec<Instance> = others.into_iter().filter(|i| !i.alive()).collect();
        if dead.is_empty() {
            return Ok(0);
        }
        let now = self.now_ms();
        let freed = self
            .write(move |c| {
                // One write job: the batch it commits in is the transaction.
                let tx = c;
                let mut freed = 0;
                for instance in &dead {
                    let n = tx
                        .execute(
                            "UPDATE queue SET visible_at = ?2, leased_by = '' WHERE leased_by = ?1 AND visible_at > ?2",
                            params![instance.id, now],
                        )
                        .map_err(backend)?;
                    if n > 0 {
                        tracing::warn!(
                            pid = instance.pid,
                            messages = n,
                            "a secmon process that is gone held messages; they are visible again now"
                        );
                    }
                    freed += n;
                    tx.execute("DELETE FROM instances WHERE id = ?1", params![instance.id]).map_err(backend)?;
                }
                Ok(freed)
            })
            .await?;
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two `secmon run` starting at once on a new file: every open succeeds (SQLite answers the switch
    /// to WAL with "database is locked" at once, without its busy handler, when another connection is
    /// doing the same).
    #[test]
    fn processes_opening_a_new_file_at_once_all_open_it() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..40 {
            let path = dir.path().join(format!("{round}.db"));
            let start = Arc::new(std::sync::Barrier::new(4));
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        SqliteStore::open(&path).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
        }
    }

    #[tokio::test]
    async fn passes_the_store_contract() {
        let store = SqliteStore::in_memory().unwrap();
        super::super::contract::store_contract(&store).await;
    }

    #[tokio::test]
    async fn passes_the_retention_contract() {
        let store = SqliteStore::in_memory().unwrap();
        super::super::contract::retention_contract(&store).await;
    }

    /// A file from before write times: its keys count as written at the upgrade, never as ancient.
    #[tokio::test]
    async fn keys_from_before_write_times_count_as_written_at_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
                 INSERT INTO kv VALUES ('close-outcome/t/a/v', 'x', 1);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let listed = s.scan(Space::Values, "close-outcome/", None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].written > chrono::Utc::now() - chrono::Duration::minutes(1), "{listed:?}");
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

    /// Jobs queued while the connection is busy run in one batch, in one transaction: each is answered
    /// with its own outcome, and one that fails (a lost compare-and-swap) leaves the others' writes.
    #[tokio::test]
    async fn jobs_queued_while_the_connection_is_busy_share_one_batch() {
        use futures::FutureExt;
        let store = SqliteStore::in_memory().unwrap();
        store.put("b", b"0").await.unwrap();
        let mut a = store.put("a", b"1");
        let mut b = store.put_if("b", b"2", Precondition::Matches(Etag("7".into())));
        let mut c = store.put("c", b"3");
        {
            let _busy = store.db.conn.lock().unwrap();
            for job in [&mut a, &mut b, &mut c] {
                assert!(job.now_or_never().is_none(), "queued behind the busy connection, not run");
            }
        }
        assert_eq!(lock(&store.db.pending).len(), 3);
        // The next caller finds the connection free and runs its job with the three queued ones.
        assert_eq!(store.get("a").await.unwrap().unwrap().value, b"1");
        assert!(lock(&store.db.pending).is_empty());
        assert!(a.await.is_ok());
        assert!(matches!(b.await, Err(StoreError::Conflict { .. })));
        assert!(c.await.is_ok());
        assert_eq!(store.get("b").await.unwrap().unwrap().value, b"0", "the failed job wrote nothing");
        assert_eq!(store.get("c").await.unwrap().unwrap().value, b"3");
    }

    #[tokio::test]
    async fn passes_the_queue_contract() {
        let store = SqliteStore::in_memory().unwrap().with_max_dequeue(3);
        super::super::contract::queue_contract(&store).await;
    }

    /// Receives of any size reuse one prepared statement: none is prepared again.
    #[tokio::test]
    async fn receives_of_any_size_reuse_the_prepared_statement() {
        let store = SqliteStore::in_memory().unwrap();
        for i in 0..20u8 {
            store.send("q", &[i]).await.unwrap();
        }
        let mut got = 0;
        for max in [1, 3, 2, 5, 1, 4, 16] {
            got += store.receive("q", max, Duration::from_secs(30)).await.unwrap().len();
        }
        assert_eq!(got, 20, "each receive takes at most its max, in order, until the queue is empty");
        let conn = store.db.conn.lock().unwrap();
        let stmt = conn.prepare_cached(RECEIVE).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
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

    #[tokio::test]
    async fn passes_the_queue_admin_contract() {
        let store = SqliteStore::in_memory().unwrap().with_max_dequeue(2);
        super::super::contract::queue_admin_contract(&store, &store).await;
    }

    /// A process dies holding a message (received, never deleted); the next one to open the file makes it
    /// visible at once, long before its visibility timeout. One held by a live process stays hidden.
    #[tokio::test]
    async fn a_dead_processes_lease_is_recovered_at_the_next_start() {
        use super::super::admin::QueueAdmin;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let gone = {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        {
            let live = SqliteStore::open(&path).unwrap();
            live.send("alerts", b"held-by-the-living").await.unwrap();
            assert_eq!(live.receive("alerts", 1, Duration::from_secs(300)).await.unwrap().len(), 1);
            let crashed = SqliteStore::open(&path)
                .unwrap()
                .as_instance(Instance { pid: gone, started: "1".into(), ..Instance::this_process() })
                .unwrap();
            crashed.send("alerts", b"in-flight").await.unwrap();
            let got = crashed.receive("alerts", 10, Duration::from_secs(300)).await.unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].body, b"in-flight");
            // Both dropped without a delete: the crash (the living one is this test's own process).
        }
        let next = SqliteStore::open(&path).unwrap();
        assert!(next.receive("alerts", 10, Duration::from_secs(300)).await.unwrap().is_empty(), "hidden before");
        assert_eq!(next.recover_dead_leases().await.unwrap(), 1);
        let again = next.receive("alerts", 10, Duration::from_secs(300)).await.unwrap();
        assert_eq!(again.len(), 1, "only the dead process's message comes back");
        assert_eq!(again[0].body, b"in-flight");
        assert_eq!(again[0].dequeue_count, 2);
        assert_eq!(next.recover_dead_leases().await.unwrap(), 0, "the dead process is forgotten");
    }

    /// The queue as it was before issue #17: one table, the body in every row.
    const QUEUE_BEFORE_17: &str = "
        CREATE TABLE queue (id TEXT PRIMARY KEY, queue TEXT NOT NULL, body BLOB NOT NULL,
            visible_at INTEGER NOT NULL, dequeue_count INTEGER NOT NULL, receipt TEXT NOT NULL, seq INTEGER NOT NULL,
            enqueued_at INTEGER NOT NULL DEFAULT 0, leased_by TEXT NOT NULL DEFAULT '');
        CREATE INDEX queue_seq ON queue (seq);
        CREATE INDEX queue_order ON queue (queue, seq);";

    /// A file whose queue keeps the body in each row, opened by this version: every message is still
    /// there, on its queue, with its dequeue count, visibility, holder and place in line (its seq, not
    /// the order the rows were written in); new messages go after them; the old table and its indexes
    /// are gone.
    #[tokio::test]
    async fn a_queue_from_before_separate_bodies_is_migrated_whole() {
        use super::super::admin::QueueAdmin;
        use crate::clock::ManualClock;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let start = chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let (now, later) = (start.timestamp_millis(), start.timestamp_millis() + 60_000);
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(QUEUE_BEFORE_17).unwrap();
            // (id, queue, body, visible_at, dequeue_count, receipt, seq, enqueued_at, leased_by), written in
            // another order than their seq.
            c.execute_batch(&format!(
                "INSERT INTO queue VALUES
                   ('u-third', 'alerts', CAST('third' AS BLOB), 0, 1, 'r3', 7, 5, ''),
                   ('u-first', 'alerts', CAST('first' AS BLOB), 0, 0, '', 2, 3, ''),
                   ('u-held', 'alerts', CAST('held' AS BLOB), {later}, 2, 'r-held', 5, 4, 'gone-process'),
                   ('u-job', 'deliveries', CAST('job' AS BLOB), 0, 0, '', 9, 6, ''),
                   ('u-poison', 'alerts-poison', CAST('poisoned' AS BLOB), 0, 0, '', 3, 0, ''),
                   ('u-last', 'alerts', CAST('last' AS BLOB), 0, 4, 'r4', 11, 7, '');"
            ))
            .unwrap();
        }
        let clock = Arc::new(ManualClock::new(start));
        let s = SqliteStore::open(&path).unwrap().with_clock(clock.clone()).with_max_dequeue(5);
        {
            let conn = s.db.conn.lock().unwrap();
            let body_column: bool = conn
                .query_row("SELECT COUNT(*) FROM pragma_table_info('queue') WHERE name = 'body'", [], |r| r.get(0))
                .unwrap();
            assert!(!body_column, "the message rows hold no body");
            let old_objects: i64 = conn
                .query_row("SELECT COUNT(*) FROM sqlite_schema WHERE name LIKE 'queue_before%' OR name IN ('queue_seq', 'queue_order')", [], |r| r.get(0))
                .unwrap();
            assert_eq!(old_objects, 0, "the old table and its indexes are dropped");
        }
        assert_eq!((s.len("alerts").await.unwrap(), s.len("deliveries").await.unwrap()), (4, 1));
        s.send("alerts", b"new").await.unwrap();
        let got = s.receive("alerts", 10, Duration::from_secs(30)).await.unwrap();
        let seen: Vec<_> =
            got.iter().map(|m| (String::from_utf8_lossy(&m.body).into_owned(), m.dequeue_count)).collect();
        // The held message stays hidden; "last" had been received 4 times of 5: this receive is its 5th.
        let expected = [("first", 1), ("third", 2), ("last", 5), ("new", 1)];
        assert_eq!(seen, expected.map(|(b, n)| (b.to_string(), n)).to_vec());
        for m in &got {
            Queue::delete(&s, "alerts", m).await.unwrap();
        }
        assert!(s.receive("alerts", 10, Duration::from_secs(30)).await.unwrap().is_empty(), "held until {later}");
        clock.advance(chrono::Duration::milliseconds(later - now));
        let held = s.receive("alerts", 10, Duration::from_secs(30)).await.unwrap();
        assert_eq!((held.len(), held[0].body.as_slice(), held[0].dequeue_count), (1, &b"held"[..], 3));
        Queue::delete(&s, "alerts", &held[0]).await.unwrap();
        let poison = s.peek("alerts-poison", 10).await.unwrap();
        assert_eq!(poison.messages.len(), 1);
        assert_eq!((poison.messages[0].body.as_slice(), poison.messages[0].enqueued_at), (&b"poisoned"[..], None));
        let job = s.peek("deliveries", 10).await.unwrap();
        assert_eq!(job.messages[0].enqueued_at.map(|t| t.timestamp_millis()), Some(6));
        let bodies: i64 =
            s.db.conn.lock().unwrap().query_row("SELECT COUNT(*) FROM queue_body", [], |r| r.get(0)).unwrap();
        assert_eq!(bodies, 2, "a deleted message's body goes with it");
    }

    /// The same from the oldest queue, before it recorded when a message was put on it and who holds it.
    #[tokio::test]
    async fn a_queue_from_before_the_admin_columns_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE queue (id TEXT PRIMARY KEY, queue TEXT NOT NULL, body BLOB NOT NULL,
                     visible_at INTEGER NOT NULL, dequeue_count INTEGER NOT NULL, receipt TEXT NOT NULL,
                     seq INTEGER NOT NULL);
                 INSERT INTO queue VALUES ('b', 'alerts', CAST('second' AS BLOB), 0, 2, 'r', 2),
                     ('a', 'alerts', CAST('first' AS BLOB), 0, 0, '', 1);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let got = s.receive("alerts", 10, Duration::from_secs(30)).await.unwrap();
        let seen: Vec<_> = got.iter().map(|m| (m.body.as_slice(), m.dequeue_count)).collect();
        assert_eq!(seen, [(&b"first"[..], 1), (&b"second"[..], 3)]);
    }

    /// Receive, delete and a redrive each find their message by its key, never by a scan.
    #[test]
    fn the_queues_statements_use_the_keys() {
        let store = SqliteStore::in_memory().unwrap();
        let conn = store.db.conn.lock().unwrap();
        for sql in [
            RECEIVE,
            "DELETE FROM queue WHERE queue = ?1 AND seq = ?2 AND receipt = ?3",
            "DELETE FROM queue_body WHERE seq = ?1",
            "SELECT COALESCE(MAX(seq), 0) FROM queue_body",
            "SELECT COUNT(*) FROM queue WHERE queue = ?1",
        ] {
            let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let unbound = vec![rusqlite::types::Null; explain.parameter_count()];
            let plan: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(unbound), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN") && !step.contains("TEMP B-TREE")),
                "{sql}: {plan:?}"
            );
        }
    }

    #[test]
    fn this_process_is_alive_and_a_finished_one_is_not() {
        let me = Instance::this_process();
        assert!(me.alive());
        if cfg!(target_os = "linux") {
            assert!(!me.started.is_empty());
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            assert!(!Instance { pid, ..me.clone() }.alive());
            assert!(!Instance { boot: "an-earlier-boot".into(), ..me.clone() }.alive());
            assert!(Instance { host: "another-host".into(), pid, ..me }.alive(), "another host cannot be checked");
        }
    }
}
