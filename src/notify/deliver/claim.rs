//! Claim: before a receiver is told about an alert version, its idempotency key is claimed in the store,
//! so a redelivered message never tells it twice. Done means told; held means another worker is at it.

use std::time::Duration;

use crate::alert::Alert;
use crate::rules::Delivery;
use crate::store::{Claim, Store, StoreError};

/// How long a claim is held while its send runs; a crash lets a retry claim again after it.
pub(super) const SEND_LEASE: Duration = Duration::from_secs(300);

/// The claim of telling `receiver` about this version of `alert`.
pub(super) fn notify_key(tenant: &str, alert: &Alert, receiver: &str) -> String {
    key(&["notify", tenant, &alert.id, alert.version(), receiver])
}

/// Claims telling `target.receiver` about this version of `alert` at `claim_key`; the lease covers the
/// send and the grouping window a leader waits out.
pub(super) async fn claim(store: &dyn Store, claim_key: &str, target: &Delivery) -> Result<Claim, StoreError> {
    store.claim(claim_key, SEND_LEASE + target.group.unwrap_or_default()).await
}

/// A store key from parts; `/` and `%` inside a part are escaped, so parts never run together.
pub(super) fn key(parts: &[&str]) -> String {
    parts.iter().map(|p| p.replace('%', "%25").replace('/', "%2F")).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_their_parts() {
        assert_eq!(key(&["notify", "t", "a/b%c", "v"]), "notify/t/a%2Fb%25c/v");
    }
}
