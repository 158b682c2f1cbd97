//! Posting budgets: a receiver that a service throttles (a Workflows flow posts about 25 cards per
//! 5 minutes, an Exchange mailbox sends 30 messages a minute) takes a slot before each send, and what
//! finds no slot waits in a digest instead ([`crate::notify::deliver`] coalesces). The slots are a
//! sliding log in the store, changed by compare-and-swap, so every instance shares one budget and no
//! window of `per` ever holds more than `posts` sends.

use chrono::{DateTime, Utc};

use crate::store::{Change, Store, StoreError, keys};

pub use crate::config::receivers::BudgetConfig as Budget;

/// The budget a receiver sends under and the name it is counted by (receivers sending from one
/// mailbox share the mailbox's).
#[derive(Debug, Clone, PartialEq)]
pub struct Budgeted {
    /// What the slots are counted by, e.g. `teams/soc-teams`, `mail/secmon@contoso.com`.
    pub name: String,
    /// The budget.
    pub budget: Budget,
}

/// Takes one slot of `budgeted` at `now`: `Ok(None)` when taken, `Ok(Some(at))` when the budget is
/// spent until `at`.
pub async fn take(
    store: &dyn Store,
    budgeted: &Budgeted,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let per = chrono::Duration::from_std(budgeted.budget.per).unwrap_or(chrono::Duration::MAX);
    let posts = budgeted.budget.posts as usize;
    crate::store::update(store, &keys::notify_budget(&budgeted.name), |current| {
        let mut sent: Vec<DateTime<Utc>> = current.and_then(|v| serde_json::from_slice(v).ok()).unwrap_or_default();
        sent.retain(|t| *t > now - per);
        sent.sort();
        if sent.len() >= posts {
            return Change::Keep(Some(sent[sent.len() - posts] + per));
        }
        sent.push(now);
        Change::Put(serde_json::to_vec(&sent).expect("JSON"), None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn no_window_holds_more_than_the_budget() {
        let store = SqliteStore::in_memory().unwrap();
        let b = Budgeted { name: "teams/soc".into(), budget: Budget { posts: 3, per: Duration::from_secs(60) } };
        let t0: DateTime<Utc> = "2026-11-26T10:00:00Z".parse().unwrap();
        let s = chrono::Duration::seconds;
        assert_eq!(take(&store, &b, t0).await.unwrap(), None);
        assert_eq!(take(&store, &b, t0 + s(10)).await.unwrap(), None);
        assert_eq!(take(&store, &b, t0 + s(50)).await.unwrap(), None);
        // Spent until the first send leaves the window, whatever the minute boundaries.
        assert_eq!(take(&store, &b, t0 + s(59)).await.unwrap(), Some(t0 + s(60)));
        assert_eq!(take(&store, &b, t0 + s(60)).await.unwrap(), None);
        assert_eq!(take(&store, &b, t0 + s(65)).await.unwrap(), Some(t0 + s(70)));
        // Another name has its own budget.
        let other = Budgeted { name: "mail/a@contoso.com".into(), ..b.clone() };
        assert_eq!(take(&store, &other, t0 + s(65)).await.unwrap(), None);
    }
}
