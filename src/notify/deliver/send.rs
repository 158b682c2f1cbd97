//! Send: a rendered payload to its receiver, with what the receiver kind needs (the HTTP client, Graph,
//! the store for sending budgets) and a delivery id that stays the same across retries.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::notify::{Notifier, NotifyError, Payload, SendContext};

/// Sends `payload` to `notifier`; returns the receiver's HTTP status. The delivery id is derived from the
/// claim key, so every retry of this delivery carries the same one.
pub(super) async fn send(
    app: &App,
    notifier: &dyn Notifier,
    tenant: &str,
    payload: &Payload,
    now: DateTime<Utc>,
    claim_key: &str,
) -> Result<u16, NotifyError> {
    let delivery = hex::encode(&Sha256::digest(claim_key.as_bytes())[..16]);
    notifier.send(&SendContext::new(app, tenant, now, &delivery), payload).await
}
