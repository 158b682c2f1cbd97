//! A store that passes every operation on to another, after asking a [`Hook`]: how tests make a store
//! that crashes, dies or watches at a chosen operation without writing the whole [`Store`] trait again.
//!
//! ```
//! # use secmon::store::hooked::{Hook, Hooked, Op};
//! # use secmon::store::{StoreError, StoreResult};
//! /// Fails every write of a watermark, as a crash just before it would.
//! struct NoWatermark;
//!
//! #[async_trait::async_trait]
//! impl Hook for NoWatermark {
//!     async fn before(&self, op: &Op<'_>) -> StoreResult<()> {
//!         match op.key().starts_with("watermark/") && op.is_write() {
//!             true => Err(StoreError::Backend("injected crash".into())),
//!             false => Ok(()),
//!         }
//!     }
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use super::{Claim, Etag, Listed, Precondition, Space, Store, StoreResult, Token, Versioned};

/// One store operation, named with its key (or stream, or prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// [`Store::get`].
    Get(&'a str),
    /// [`Store::put_if`].
    PutIf(&'a str),
    /// [`Store::put`].
    Put(&'a str),
    /// [`Store::delete`].
    Delete(&'a str),
    /// [`Store::list`] of a prefix.
    List(&'a str),
    /// [`Store::claim`].
    Claim(&'a str),
    /// [`Store::renew`].
    Renew(&'a str),
    /// [`Store::complete`].
    Complete(&'a str),
    /// [`Store::release`].
    Release(&'a str),
    /// [`Store::append`] of record `seq` to a stream.
    Append(&'a str, u64),
    /// [`Store::read_stream`].
    ReadStream(&'a str),
    /// [`Store::list_streams`] of a prefix.
    ListStreams(&'a str),
    /// [`Store::scan`] of a prefix.
    Scan(&'a str),
    /// [`Store::delete_if`].
    DeleteIf(&'a str),
    /// [`Store::delete_stream`].
    DeleteStream(&'a str),
}

impl Op<'_> {
    /// The key, stream or prefix the operation is about.
    pub fn key(&self) -> &str {
        match *self {
            Op::Get(k)
            | Op::PutIf(k)
            | Op::Put(k)
            | Op::Delete(k)
            | Op::List(k)
            | Op::Claim(k)
            | Op::Renew(k)
            | Op::Complete(k)
            | Op::Release(k)
            | Op::Append(k, _)
            | Op::ReadStream(k)
            | Op::ListStreams(k)
            | Op::Scan(k)
            | Op::DeleteIf(k)
            | Op::DeleteStream(k) => k,
        }
    }

    /// Whether the operation may change what is stored (a claim, renewal and release included).
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get(_) | Op::List(_) | Op::ReadStream(_) | Op::ListStreams(_) | Op::Scan(_))
    }
}

/// What a [`Hooked`] store asks around each operation. Both default to doing nothing.
#[async_trait::async_trait]
pub trait Hook: Send + Sync {
    /// Before `op` reaches the inner store: an error is the operation's answer and the inner store never
    /// sees it; a future that never resolves is a process that died.
    async fn before(&self, _op: &Op<'_>) -> StoreResult<()> {
        Ok(())
    }

    /// After the inner store answered `op` (successfully or not).
    fn after(&self, _op: &Op<'_>) {}
}

/// `inner`, with `hook` asked around every operation.
pub struct Hooked<H> {
    /// The store that does the work.
    pub inner: Arc<dyn Store>,
    /// What is asked.
    pub hook: H,
}

impl<H: Hook> Hooked<H> {
    /// `inner` with `hook`.
    pub fn new(inner: Arc<dyn Store>, hook: H) -> Self {
        Self { inner, hook }
    }

    async fn around<T>(&self, op: Op<'_>, call: impl std::future::Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.hook.before(&op).await?;
        let result = call.await;
        self.hook.after(&op);
        result
    }
}

#[async_trait::async_trait]
impl<H: Hook> Store for Hooked<H> {
    async fn get(&self, key: &str) -> StoreResult<Option<Versioned>> {
        self.around(Op::Get(key), self.inner.get(key)).await
    }
    async fn put_if(&self, key: &str, value: &[u8], cond: Precondition) -> StoreResult<Etag> {
        self.around(Op::PutIf(key), self.inner.put_if(key, value, cond)).await
    }
    async fn put(&self, key: &str, value: &[u8]) -> StoreResult<Etag> {
        self.around(Op::Put(key), self.inner.put(key, value)).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.around(Op::Delete(key), self.inner.delete(key)).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.around(Op::List(prefix), self.inner.list(prefix)).await
    }
    async fn claim(&self, key: &str, lease: Duration) -> StoreResult<Claim> {
        self.around(Op::Claim(key), self.inner.claim(key, lease)).await
    }
    async fn renew(&self, key: &str, token: &Token, lease: Duration) -> StoreResult<Token> {
        self.around(Op::Renew(key), self.inner.renew(key, token, lease)).await
    }
    async fn complete(&self, key: &str, token: &Token) -> StoreResult<()> {
        self.around(Op::Complete(key), self.inner.complete(key, token)).await
    }
    async fn release(&self, key: &str, token: &Token) -> StoreResult<()> {
        self.around(Op::Release(key), self.inner.release(key, token)).await
    }
    async fn append(&self, stream: &str, seq: u64, record: &[u8]) -> StoreResult<()> {
        self.around(Op::Append(stream, seq), self.inner.append(stream, seq, record)).await
    }
    async fn read_stream(&self, stream: &str) -> StoreResult<Vec<Vec<u8>>> {
        self.around(Op::ReadStream(stream), self.inner.read_stream(stream)).await
    }
    async fn list_streams(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.around(Op::ListStreams(prefix), self.inner.list_streams(prefix)).await
    }
    async fn scan(&self, space: Space, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<Listed>> {
        self.around(Op::Scan(prefix), self.inner.scan(space, prefix, after, limit)).await
    }
    async fn delete_if(&self, space: Space, key: &str, etag: &Etag) -> StoreResult<bool> {
        self.around(Op::DeleteIf(key), self.inner.delete_if(space, key, etag)).await
    }
    async fn delete_stream(&self, stream: &str) -> StoreResult<()> {
        self.around(Op::DeleteStream(stream), self.inner.delete_stream(stream)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::StoreError;
    use crate::store::sqlite::SqliteStore;

    /// Notes every operation and refuses deletes.
    #[derive(Default)]
    struct Notes(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Hook for Notes {
        async fn before(&self, op: &Op<'_>) -> StoreResult<()> {
            self.0.lock().unwrap().push(format!("{op:?}"));
            match op {
                Op::Delete(_) => Err(StoreError::Backend("no deletes here".into())),
                _ => Ok(()),
            }
        }
        fn after(&self, op: &Op<'_>) {
            self.0.lock().unwrap().push(format!("done {}", op.key()));
        }
    }

    #[tokio::test]
    async fn every_operation_passes_the_hook_and_a_refusal_never_reaches_the_store() {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let s = Hooked::new(inner.clone(), Notes::default());
        s.put("a", b"1").await.unwrap();
        assert_eq!(s.get("a").await.unwrap().unwrap().value, b"1");
        assert!(s.delete("a").await.is_err());
        assert!(inner.get("a").await.unwrap().is_some(), "the refused delete did not reach the store");
        let notes = s.hook.0.lock().unwrap().clone();
        assert_eq!(notes, ["Put(\"a\")", "done a", "Get(\"a\")", "done a", "Delete(\"a\")"]);
    }

    #[test]
    fn writes_are_told_from_reads() {
        assert!(Op::Claim("k").is_write() && Op::Append("s", 1).is_write() && Op::DeleteIf("k").is_write());
        assert!(!Op::Get("k").is_write() && !Op::Scan("p").is_write() && !Op::ReadStream("s").is_write());
        assert_eq!(Op::Append("audit/x", 3).key(), "audit/x");
    }
}
