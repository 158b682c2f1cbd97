//! Triage from where the alert is told (issue 22): the Teams bot's inbound side.
//!
//! - [`botauth`]: the Bot Connector token check every inbound activity passes first.

pub mod botauth;
