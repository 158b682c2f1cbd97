//! Triage from where the alert is told (issue 22): the Teams bot's inbound side.
//!
//! - [`botauth`]: the Bot Connector token check every inbound activity passes first.
//! - [`inbound`]: the messaging endpoint: token, allow-list, the click for the queue.
//! - [`act`]: what a card click does on the worker: read, compare, PATCH, comment, audit, card updated.

pub mod act;
pub mod botauth;
pub mod inbound;
