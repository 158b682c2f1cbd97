//! Posting budgets: a receiver that a service throttles (a Workflows flow posts about 25 cards per
//! 5 minutes, an Exchange mailbox sends 30 messages a minute) takes a slot before each send, and what
//! finds no slot waits in a digest instead ([`crate::notify::deliver`] coalesces). The slots are a
//! sliding log in the store, changed by compare-and-swap, so every instance shares one budget and no
//! window of `per` ever holds more than `posts` sends.

use chrono::{DateTime, Utc};

use crate::store::{Precondition, Store, StoreError};

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

/// The store key of a budget's log. (Store keys are to move into one module; this one stays here
/// until then.)
fn log_key(name: &str) -> String {
    format!("notify-budget/{}", name.replace('%', "%25").replace('/', "%2F"))
}

/// Takes one slot of `budgeted` at `now`: `Ok(None)` when taken, `Ok(Some(at))` when the budget is
/// spent until `at`.
pub async fn take(
    store: &dyn Store,
    budgeted: &Budgeted,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let key = log_key(&budgeted.name);
    let per = chrono::Duration::from_std(budgeted.budget.per).unwrap_or(chrono::Duration::MAX);
    loop {
        let current = store.get(&key).await?;
        let mut sent: Vec<DateTime<Utc>> =
            current.as_ref().and_then(|v| serde_json::from_slice(&v.value).ok()).unwrap_or_default();
        sent.retain(|t| *t > now - per);
        sent.sort();
        if sent.len() >= budgeted.budget.posts as usize {
            let oldest = sent[sent.len() - budgeted.budget.posts as usize];
            return Ok(Some(oldest + per));
        }
        sent.push(now);
        let cond = match current {
            Some(v) => Precondition::Matches(v.etag),
            None => Precondition::Absent,
        };
        match store.put_if(&key, &serde_json::to_vec(&sent).expect("JSON"), cond).await {
            Ok(_) => return Ok(None),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
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
