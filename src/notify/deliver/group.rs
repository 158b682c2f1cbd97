//! Grouping: the alerts of one Defender incident that arrive within a route's `group_by_incident`
//! window are told to a receiver in one message, the first alert's (the leader's). The leader waits out
//! the window on the queue, never in a worker: its delivery is put back with a delay until the window
//! closes ([`Grouping::Wait`]), and on its second pass it closes the group and sends. The group record
//! lives in the store and changes by compare-and-swap.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::notify::view::{Member, View};
use crate::store::{Change, Store, StoreError, keys};

/// A grouping record whose leader never finished is taken over after this long.
const STALE_GROUP: chrono::Duration = chrono::Duration::hours(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupState {
    Open,
    Closed,
    Sent,
}

/// The alerts of one incident collected into one message for one receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    leader: String,
    closes: DateTime<Utc>,
    state: GroupState,
    members: Vec<Member>,
}

/// Where an alert stands in its incident's group.
#[derive(Debug, Clone, PartialEq)]
enum Joined {
    /// It sends the group's message when the window closes.
    Lead { closes: DateTime<Utc> },
    /// It is told in the leader's message.
    Member { leader: String },
    /// The group is past joining and its leader has not finished: tell it on its own.
    Alone,
}

/// Joins `me` to the group at `key`: as its leader when there is none (or it is stale), as a member
/// while it is open, else alone.
async fn join(
    store: &dyn Store,
    key: &str,
    me: Member,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Joined, StoreError> {
    crate::store::update(store, key, |current| {
        let group: Option<Group> = current.and_then(|v| serde_json::from_slice(v).ok());
        match group {
            Some(g) if g.leader == me.id => Change::Keep(Joined::Lead { closes: g.closes }),
            Some(g) if g.members.iter().any(|m| m.id == me.id) => Change::Keep(Joined::Member { leader: g.leader }),
            Some(mut g) if g.state == GroupState::Open && now < g.closes => {
                g.members.push(me.clone());
                Change::Put(serde_json::to_vec(&g).expect("JSON"), Joined::Member { leader: g.leader })
            }
            Some(g) if g.state != GroupState::Sent && now < g.closes + STALE_GROUP => Change::Keep(Joined::Alone),
            _ => {
                let closes = now + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::zero());
                let g = Group { leader: me.id.clone(), closes, state: GroupState::Open, members: Vec::new() };
                Change::Put(serde_json::to_vec(&g).expect("JSON"), Joined::Lead { closes })
            }
        }
    })
    .await
}

/// Closes the group led by `leader` to new members and returns its members.
async fn close(store: &dyn Store, key: &str, leader: &str) -> Result<Vec<Member>, StoreError> {
    crate::store::update(store, key, |current| {
        let Some(Ok(mut g)) = current.map(serde_json::from_slice::<Group>) else { return Change::Keep(Vec::new()) };
        if g.leader != leader || g.state != GroupState::Open {
            return Change::Keep(if g.leader == leader { g.members } else { Vec::new() });
        }
        g.state = GroupState::Closed;
        Change::Put(serde_json::to_vec(&g).expect("JSON"), g.members)
    })
    .await
}

/// Marks the group led by `leader` as sent, so that it is not taken over as stale.
pub(super) async fn mark_sent(store: &dyn Store, key: &str, leader: &str) {
    let result = crate::store::update(store, key, |current| match current.map(serde_json::from_slice::<Group>) {
        Some(Ok(mut g)) if g.leader == leader => {
            g.state = GroupState::Sent;
            Change::Put(serde_json::to_vec(&g).expect("JSON"), ())
        }
        _ => Change::Keep(()),
    })
    .await;
    if let Err(e) = result {
        // The group is taken over once stale; until then later alerts of the incident go alone.
        tracing::warn!("could not mark the group at {key} as sent: {e}");
    }
}

/// Where grouping left one alert for one receiver.
pub(super) enum Grouping {
    /// Told in the message of `leader`, another alert of its incident.
    Member {
        /// The leader's alert id.
        leader: String,
    },
    /// It leads the group at `key`: its message carries the members (in the view), and is marked sent.
    Leader {
        /// The group record.
        key: String,
    },
    /// Not grouped: told on its own.
    Alone,
    /// It leads the group, whose window is still open: try again at this time.
    Wait(DateTime<Utc>),
}

/// Groups `alert` with the other alerts of its incident for `receiver` when the route groups (`window`):
/// a leader before the window closes is told to wait ([`Grouping::Wait`]); after it, it takes the members
/// into `view`. secmon's own alerts are not grouped.
pub(super) async fn group(
    store: &dyn Store,
    tenant: &str,
    receiver: &str,
    alert: &Alert,
    view: &mut View,
    window: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Grouping, StoreError> {
    let incident = alert.incident_id.clone().filter(|i| !i.is_empty() && !alert.id.starts_with("secmon-"));
    let (Some(window), Some(incident)) = (window, incident) else { return Ok(Grouping::Alone) };
    let gk = keys::notify_group(tenant, receiver, &incident);
    match join(store, &gk, view.member(), now, window).await? {
        Joined::Member { leader } => Ok(Grouping::Member { leader }),
        // The window is open: the incident's other alerts may still join this message.
        Joined::Lead { closes } if now < closes => Ok(Grouping::Wait(closes)),
        Joined::Lead { .. } => {
            view.group = close(store, &gk, &alert.id).await?;
            Ok(Grouping::Leader { key: gk })
        }
        Joined::Alone => Ok(Grouping::Alone),
    }
}
