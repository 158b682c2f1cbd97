//! Client-certificate authentication.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;

/// The credential for an app registration that proves itself with a certificate.
pub(crate) fn credential(
    tenant_id: &str,
    client_id: &str,
    path: &str,
    options: ClientOptions,
) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let _ = (tenant_id, client_id, options);
    Err(azure_core::Error::with_message(
        azure_core::error::ErrorKind::Credential,
        format!(
            "client certificate {path}: certificate credentials are not supported by this build of secmon; use a client secret, workload identity or managed identity"
        ),
    ))
}
