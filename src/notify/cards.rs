//! Bot cards: where a Teams bot receiver's card of an alert is, so that later versions of the alert
//! update it in place instead of posting again.
//!
//! `botcard/{tenant}/{alert}/{receiver}` holds a [`BotCard`] (compare-and-swap): the card's location
//! ([`CardRef`]) and the alert version it shows, and the last click's outcome (kept on the card by
//! every later update). Before a post, the record is marked *posting* (with the time); the post's
//! activity id then completes it. So:
//! - a later version of the alert that finds a card updates it (`PUT`), never posts a second one;
//! - a version that finds another worker posting the first card waits for it (a few seconds);
//! - a post that failed (an error answer, a timeout) clears the mark: the retry posts;
//! - only a worker that died between the Bot Connector taking the post and the record taking its id
//!   leaves the mark behind: after [`POSTING_STALE`] the next delivery posts again, and that card may
//!   then be the second of the alert (the Bot Connector has no idempotency key and Teams cannot list a
//!   channel's messages to a bot, so this cannot be told). It is logged and audited as possible.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{Change, Store, StoreError, keys, update};
use crate::triage::act::CardRef;

/// How long a *posting* mark stands before a delivery takes it for a worker that died mid-post: the
/// delivery claim's lease (a retry of the same delivery comes after it).
pub const POSTING_STALE: std::time::Duration = std::time::Duration::from_secs(300);

/// A bot receiver's card of one alert, at `botcard/{tenant}/{alert}/{receiver}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BotCard {
    /// Where the card is; none while the first post is under way.
    #[serde(default)]
    pub card: Option<CardRef>,
    /// The alert version the card shows (`lastUpdateDateTime`).
    #[serde(default)]
    pub version: String,
    /// Set right before a post, cleared when it is done or failed.
    #[serde(default)]
    pub posting_since: Option<DateTime<Utc>>,
    /// The last click's outcome ("Resolved as benign by Dana Lee, 10:42 UTC").
    #[serde(default)]
    pub outcome: Option<String>,
    /// A post was made after an earlier one may have reached Teams (see the module doc).
    #[serde(default)]
    pub maybe_duplicate: bool,
}

fn parse(bytes: Option<&[u8]>) -> Option<BotCard> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

fn put<R>(card: &BotCard, answer: R) -> Change<R> {
    Change::Put(serde_json::to_vec(card).expect("JSON"), answer)
}

/// The record of `receiver`'s card of `alert`.
pub async fn read(store: &dyn Store, tenant: &str, alert: &str, receiver: &str) -> Result<Option<BotCard>, StoreError> {
    Ok(parse(store.get(&keys::botcard(tenant, alert, receiver)).await?.map(|v| v.value).as_deref()))
}

/// What a delivery finds before posting.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    /// No card: post (the record is now marked *posting*). `maybe_duplicate`: a stale mark was found,
    /// an earlier post may have reached Teams.
    Post {
        /// A stale *posting* mark was taken over.
        maybe_duplicate: bool,
    },
    /// Another worker is posting the card right now.
    Posting,
    /// The card exists: update it.
    Card(BotCard),
}

/// Looks at the record and, when there is no card, marks it *posting* at `now` for `version`.
pub async fn begin(
    store: &dyn Store,
    tenant: &str,
    alert: &str,
    receiver: &str,
    version: &str,
    now: DateTime<Utc>,
) -> Result<Before, StoreError> {
    let stale = chrono::Duration::from_std(POSTING_STALE).expect("short");
    update(store, &keys::botcard(tenant, alert, receiver), |bytes| {
        let mut card = parse(bytes).unwrap_or_default();
        if card.card.is_some() {
            return Change::Keep(Before::Card(card));
        }
        let maybe_duplicate = match card.posting_since {
            Some(since) if now - since < stale => return Change::Keep(Before::Posting),
            Some(_) => true,
            None => false,
        };
        card.posting_since = Some(now);
        card.version = version.to_string();
        card.maybe_duplicate = maybe_duplicate;
        put(&card, Before::Post { maybe_duplicate })
    })
    .await
}

/// The post is done: the card is at `at`, showing `version`.
pub async fn posted(
    store: &dyn Store,
    tenant: &str,
    alert: &str,
    receiver: &str,
    at: CardRef,
    version: &str,
) -> Result<(), StoreError> {
    update(store, &keys::botcard(tenant, alert, receiver), |bytes| {
        let mut card = parse(bytes).unwrap_or_default();
        card.card = Some(at.clone());
        card.version = version.to_string();
        card.posting_since = None;
        put(&card, ())
    })
    .await
}

/// The post failed (the Bot Connector answered an error, or nothing): clear the *posting* mark so the
/// retry posts without suspecting a duplicate.
pub async fn abandoned(store: &dyn Store, tenant: &str, alert: &str, receiver: &str) -> Result<(), StoreError> {
    update(store, &keys::botcard(tenant, alert, receiver), |bytes| match parse(bytes) {
        Some(mut card) if card.card.is_none() && card.posting_since.is_some() => {
            card.posting_since = None;
            put(&card, ())
        }
        _ => Change::Keep(()),
    })
    .await
}

/// The card was updated in place to show `version`.
pub async fn shown(
    store: &dyn Store,
    tenant: &str,
    alert: &str,
    receiver: &str,
    version: &str,
) -> Result<(), StoreError> {
    update(store, &keys::botcard(tenant, alert, receiver), |bytes| match parse(bytes) {
        Some(mut card) => {
            card.version = version.to_string();
            put(&card, ())
        }
        None => Change::Keep(()),
    })
    .await
}

/// Whether `version` is newer than `shown` (both `lastUpdateDateTime`; compared as times when both
/// parse, else as text). An older version arriving late never takes a card back.
pub fn newer(version: &str, shown: &str) -> bool {
    match (version.parse::<DateTime<Utc>>(), shown.parse::<DateTime<Utc>>()) {
        (Ok(v), Ok(s)) => v > s,
        _ => version > shown,
    }
}

/// Keeps a click's `outcome` on every bot card of the alert that is the clicked card, so that later
/// updates show it too. A record that cannot be written is logged: the click itself is done.
pub async fn note_outcome(store: &dyn Store, tenant: &str, alert: &str, clicked: &CardRef, outcome: &str) {
    let keys = match store.list(&keys::botcards(tenant, alert)).await {
        Ok(keys) => keys,
        Err(e) => return tracing::warn!(alert, "the click's outcome is not kept for later card updates: {e}"),
    };
    for key in keys {
        let noted = update(store, &key, |bytes| match parse(bytes) {
            Some(mut card) if card.card.as_ref().is_some_and(|c| c.activity_id == clicked.activity_id) => {
                card.outcome = Some(outcome.to_string());
                put(&card, ())
            }
            _ => Change::Keep(()),
        })
        .await;
        if let Err(e) = noted {
            tracing::warn!(alert, "the click's outcome is not kept at {key}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn card(id: &str) -> CardRef {
        CardRef {
            service_url: "https://smba.example/".into(),
            conversation_id: "19:c@thread.tacv2".into(),
            activity_id: id.into(),
        }
    }

    #[tokio::test]
    async fn a_card_is_posted_once_then_updated_and_a_dead_post_is_taken_over_later() {
        let s = SqliteStore::in_memory().unwrap();
        let t0 = at("2026-12-01T10:00:00Z");
        let v1 = "2026-12-01T09:59:00Z";
        assert_eq!(begin(&s, "contoso", "a1", "soc", v1, t0).await.unwrap(), Before::Post { maybe_duplicate: false });
        // Another version meanwhile waits for the post.
        assert_eq!(begin(&s, "contoso", "a1", "soc", "v2", t0).await.unwrap(), Before::Posting);
        posted(&s, "contoso", "a1", "soc", card("act-1"), v1).await.unwrap();
        let Before::Card(found) = begin(&s, "contoso", "a1", "soc", "v2", t0).await.unwrap() else { panic!() };
        assert_eq!(found.card, Some(card("act-1")));
        assert_eq!(found.version, v1);
        // A failed post clears its mark: the retry is no duplicate.
        assert!(matches!(begin(&s, "contoso", "a2", "soc", v1, t0).await.unwrap(), Before::Post { .. }));
        abandoned(&s, "contoso", "a2", "soc").await.unwrap();
        assert_eq!(begin(&s, "contoso", "a2", "soc", v1, t0).await.unwrap(), Before::Post { maybe_duplicate: false });
        // A worker died mid-post: after POSTING_STALE the next delivery posts, flagged.
        let later = t0 + chrono::Duration::seconds(301);
        assert_eq!(begin(&s, "contoso", "a2", "soc", v1, later).await.unwrap(), Before::Post { maybe_duplicate: true });
        // A click's outcome stays with the card it was on.
        note_outcome(&s, "contoso", "a1", &card("act-1"), "Acknowledged by Dana Lee, 10:42 UTC").await;
        note_outcome(&s, "contoso", "a1", &card("other"), "not this one").await;
        let kept = read(&s, "contoso", "a1", "soc").await.unwrap().unwrap();
        assert_eq!(kept.outcome.as_deref(), Some("Acknowledged by Dana Lee, 10:42 UTC"));
        assert!(newer("2026-12-01T10:00:00.5Z", "2026-12-01T10:00:00Z"));
        assert!(!newer("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"));
    }
}
