//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod audit_race;
pub mod azurite;
pub mod triage;
#[cfg(feature = "aws")]
pub mod moto;
