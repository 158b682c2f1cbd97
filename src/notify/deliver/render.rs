//! Render: what a receiver is told about an alert: the alert's [`View`], why it is told and which routes
//! chose it. The receiver's [`Notifier::render`](crate::notify::Notifier::render) turns it into its
//! payload.

use super::realert::Why;
use crate::alert::Alert;
use crate::notify::view::View;
use crate::rules::Delivery;

/// What `target.receiver` is told about `alert` (with the evidence lists if its payload shows them);
/// grouping may add the incident's other alerts.
pub(super) fn view(tenant: &str, alert: &Alert, target: &Delivery, why: Why, evidence: bool) -> View {
    let mut view = if evidence {
        View::new(tenant, &target.receiver, alert)
    } else {
        View::without_evidence(tenant, &target.receiver, alert)
    };
    view.why = why.to_string();
    view.routes = target.routes.clone();
    view
}
