//! The notify half of the pipeline: each receiver of the matched routes gets the alert once.

use serde_json::Value;

use super::RespondError;
use crate::alert::Alert;
use crate::app::App;

/// What delivery did for one alert version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivered {
    /// Receivers that were sent to now.
    pub sent: Vec<String>,
    /// Receivers skipped because this version was already delivered to them (a redelivered message).
    pub already: Vec<String>,
}

/// Notifies `receivers` about one alert version. Not built yet.
pub async fn deliver(
    app: &App,
    tenant: &str,
    alert: &Alert,
    raw: &Value,
    receivers: &[String],
) -> Result<Delivered, RespondError> {
    let _ = (app, tenant, alert, raw, receivers);
    Err(RespondError::Retry("notification delivery is not built yet".into()))
}
