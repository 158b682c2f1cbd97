//! Read-modify-write of one value with compare-and-swap, written once.
//!
//! [`update`] reads the value and its ETag, asks the caller what to do with it, and writes only if
//! nothing changed since the read (create-only when there was no value). When another writer got there
//! first it reads again and asks again, a bounded number of times.

use super::{Precondition, Store, StoreError, StoreResult, Versioned};

/// How many times [`update`] reads and tries to write before it gives up with
/// [`StoreError::Conflict`].
pub const CAS_ATTEMPTS: usize = 20;

/// What an [`update`] step decides, given the current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<R> {
    /// Write these bytes in place of the value read (create it when there was none), then answer `R`.
    Put(Vec<u8>, R),
    /// Write nothing and answer `R`.
    Keep(R),
}

/// Applies `change` to the value at `key` with compare-and-swap, retrying on conflict; returns the
/// answer of the step that was written (or kept).
pub async fn update<R>(store: &dyn Store, key: &str, change: impl FnMut(Option<&[u8]>) -> Change<R>) -> StoreResult<R> {
    let current = store.get(key).await?;
    update_from(store, key, current, change).await
}

/// [`update`] starting from `current`, a value the caller has just read from `key` (saves a read).
pub async fn update_from<R>(
    store: &dyn Store,
    key: &str,
    mut current: Option<Versioned>,
    mut change: impl FnMut(Option<&[u8]>) -> Change<R>,
) -> StoreResult<R> {
    for attempt in 0..CAS_ATTEMPTS {
        if attempt > 0 {
            current = store.get(key).await?;
        }
        let (value, cond) = match current.take() {
            Some(v) => (Some(v.value), Precondition::Matches(v.etag)),
            None => (None, Precondition::Absent),
        };
        match change(value.as_deref()) {
            Change::Keep(answer) => return Ok(answer),
            Change::Put(bytes, answer) => match store.put_if(key, &bytes, cond).await {
                Ok(_) => return Ok(answer),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            },
        }
    }
    Err(StoreError::Conflict { key: key.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn count(v: Option<&[u8]>) -> u32 {
        v.and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()).unwrap_or(0)
    }

    fn increment(v: Option<&[u8]>) -> Change<u32> {
        let n = count(v) + 1;
        Change::Put(n.to_string().into_bytes(), n)
    }

    #[tokio::test]
    async fn creates_then_swaps_and_keeps() {
        let s = SqliteStore::in_memory().unwrap();
        assert_eq!(update(&s, "c", increment).await.unwrap(), 1);
        assert_eq!(update(&s, "c", increment).await.unwrap(), 2);
        assert_eq!(update(&s, "c", |v| Change::Keep(count(v))).await.unwrap(), 2);
        assert_eq!(s.get("c").await.unwrap().unwrap().value, b"2");
    }

    #[tokio::test]
    async fn a_stale_read_is_retried_on_the_new_value() {
        let s = SqliteStore::in_memory().unwrap();
        s.put("c", b"1").await.unwrap();
        let stale = s.get("c").await.unwrap();
        s.put("c", b"5").await.unwrap();
        let mut seen = Vec::new();
        let n = update_from(&s, "c", stale, |v| {
            seen.push(count(v));
            increment(v)
        })
        .await
        .unwrap();
        assert_eq!((n, seen), (6, vec![1, 5]));
    }

    #[tokio::test]
    async fn concurrent_updates_all_land() {
        let s = SqliteStore::in_memory().unwrap();
        let (a, b, c, d) = tokio::join!(
            update(&s, "c", increment),
            update(&s, "c", increment),
            update(&s, "c", increment),
            update(&s, "c", increment)
        );
        let mut got = vec![a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
        got.sort();
        assert_eq!(got, vec![1, 2, 3, 4]);
    }
}
