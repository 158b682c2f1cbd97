//! Claim: before a receiver is told about an alert version, its idempotency key is claimed in the store
//! ([`crate::store::once`]), so a redelivered message never tells it twice. Done means told; held means
//! another worker is at it.

use std::time::Duration;

use crate::alert::Alert;
use crate::store::keys;

/// How long a claim is held while its send runs; a crash lets a retry claim again after it.
pub(super) const SEND_LEASE: Duration = Duration::from_secs(300);

/// The claim of telling `receiver` about this version of `alert`.
pub(super) fn notify_key(tenant: &str, alert: &Alert, receiver: &str) -> String {
    keys::notify(tenant, &alert.id, alert.version(), receiver)
}
