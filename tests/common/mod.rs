//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod audit_race;
pub mod azurite;
#[cfg(feature = "aws")]
pub mod moto;
pub mod rig;
pub mod triage;
