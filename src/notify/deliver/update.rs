//! A route's `set:`: applied once per alert version after every receiver was told, and never to an
//! alert that someone changed since secmon read it.

use super::claim::SEND_LEASE;
use super::{DeliverError, record, store};
use crate::alert::{Alert, AlertStatus};
use crate::app::App;
use crate::graph::AlertUpdate;
use crate::notify::StatusUpdate;
use crate::store::{Once, keys, once};

/// Applies a route's `set:` once per alert version. Returns whether the alert was changed.
pub(super) async fn apply_update(
    app: &App,
    tenant: &str,
    alert: &Alert,
    route: &str,
    update: &StatusUpdate,
) -> Result<bool, DeliverError> {
    let now = app.clock.now();
    let claim_key = keys::update(tenant, &alert.id, alert.version(), route);
    let act = || async {
        let current = app.graph.get_alert(tenant, &alert.id).await?;
        let current_alert = Alert::from_value(current).ok();
        let seen = current_alert.as_ref().map(|a| a.version().to_string()).unwrap_or_default();
        if seen != alert.version() {
            return Ok((
                None,
                format!("changed since secmon read it (lastUpdateDateTime {seen:?}, read {:?})", alert.version()),
            ));
        }
        let current_alert = current_alert.expect("read above");
        if current_alert.status() == AlertStatus::Resolved {
            return Ok((None, "already resolved".to_string()));
        }
        let change = AlertUpdate {
            status: update.status.clone().filter(|s| s != current_alert.status().as_str()),
            assigned_to: update.assigned_to.clone().filter(|a| current_alert.assigned_to.as_deref() != Some(a)),
            ..Default::default()
        };
        if change == AlertUpdate::default() {
            // Already so: updating again would only make a new version and a new round of this.
            return Ok((None, "already set".to_string()));
        }
        app.graph.update_alert(tenant, &alert.id, &change).await?;
        Ok::<_, crate::graph::GraphError>((Some(change), String::new()))
    };
    match once(app.store.as_ref(), &claim_key, SEND_LEASE, act).await.map_err(store)? {
        Once::AlreadyDone => Ok(false),
        Once::Held => Err(DeliverError::retry(format!("update of {} by {route} is in progress", alert.id))),
        Once::Done((change, skipped)) => {
            let record = match &change {
                Some(c) => record::updated(alert, route, c),
                None => record::update_skipped(alert, route, skipped),
            };
            record::append(app, tenant, now, record).await;
            Ok(change.is_some())
        }
        Once::Failed(e) => {
            let message = crate::redact::redact(&e.to_string());
            record::append(app, tenant, now, record::update_failed(alert, route, &message, e.status)).await;
            let text = format!("alert {}: update by {route} failed: {message}", alert.id);
            Err(DeliverError { message: text, retry: e.retry })
        }
    }
}
