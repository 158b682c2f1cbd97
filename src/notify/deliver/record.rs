//! Record: the audit records of delivery, one typed constructor per action. Facts a record has no
//! field for go into its detail as JSON.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::alert::Alert;
use crate::app::App;
use crate::audit::{Action, Record};
use crate::graph::{AlertUpdate, Retry};
use crate::notify::NotifyError;
use crate::notify::view::{DigestLine, View};

/// Appends a delivery record to the audit trail. A record that cannot be written is logged, never a
/// reason to send twice.
pub(super) async fn append(app: &App, tenant: &str, now: DateTime<Utc>, record: Record) {
    let alert = record.alert_id.clone();
    if let Err(e) = app.audit.append(tenant, now, record).await {
        tracing::error!("audit record lost for alert {alert} ({e})");
    }
}

/// A record of `action` about `alert` for `receiver` (a receiver's name, or a route's for updates).
fn record(alert: &Alert, action: Action, receiver: &str) -> Record {
    Record { receiver: Some(receiver.to_string()), ..Record::new(&alert.id, alert.version(), action) }
}

/// Facts a record has no field for, as the JSON its detail carries.
fn facts(facts: impl Serialize) -> String {
    serde_json::to_string(&facts).expect("facts serialize")
}

/// The receiver was sent the alert (with the members of its group); `status` is the receiver's answer.
pub(super) fn sent(alert: &Alert, receiver: &str, kind: &str, view: &View, routes: &[String], status: u16) -> Record {
    #[derive(Serialize)]
    struct Sent<'a> {
        kind: &'a str,
        why: &'a str,
        routes: &'a [String],
        grouped: Vec<&'a str>,
    }
    let grouped = view.group.iter().map(|m| m.id.as_str()).collect();
    crate::metrics::receiver_sent(receiver);
    Record {
        graph_status: Some(status),
        detail: facts(Sent { kind, why: &view.why, routes, grouped }),
        ..record(alert, Action::Notify, receiver)
    }
}

/// A Teams bot receiver's card of the alert (activity `activity`) was updated in place to this version.
pub(super) fn card_updated(alert: &Alert, receiver: &str, activity: &str, routes: &[String]) -> Record {
    #[derive(Serialize)]
    struct Updated<'a> {
        kind: &'a str,
        why: &'a str,
        activity: &'a str,
        routes: &'a [String],
    }
    Record {
        graph_status: Some(200),
        detail: facts(Updated { kind: "teams", why: "card updated in place", activity, routes }),
        ..record(alert, Action::Notify, receiver)
    }
}

/// The receiver could not be sent the alert.
pub(super) fn failed(alert: &Alert, receiver: &str, kind: &str, e: &NotifyError) -> Record {
    #[derive(Serialize)]
    struct Failed<'a> {
        kind: &'a str,
        error: &'a str,
        retryable: bool,
    }
    let retryable = e.retry == Retry::Retryable;
    crate::metrics::receiver_failed(receiver, &e.message);
    Record {
        detail: facts(Failed { kind, error: &e.message, retryable }),
        ..record(alert, Action::NotifyFailed, receiver)
    }
}

/// The receiver's breaker opened after `failures` in a row (the last one `error`): paused until `until`.
pub(super) fn paused(alert: &Alert, receiver: &str, failures: u32, until: DateTime<Utc>, error: &str) -> Record {
    #[derive(Serialize)]
    struct Paused<'a> {
        failures: u32,
        until: String,
        error: &'a str,
    }
    let until = until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Record { detail: facts(Paused { failures, until, error }), ..record(alert, Action::ReceiverPaused, receiver) }
}

/// The receiver answered a probe after a pause: its breaker closed.
pub(super) fn resumed(alert: &Alert, receiver: &str) -> Record {
    record(alert, Action::ReceiverResumed, receiver)
}

/// The receiver was not told again: `reason` says why this version is nothing new.
pub(super) fn suppressed(alert: &Alert, receiver: &str, reason: String) -> Record {
    Record { detail: reason, ..record(alert, Action::NotifySuppressed, receiver) }
}

/// The receiver is told about the alert in the message of `leader`, another alert of its incident.
pub(super) fn grouped(alert: &Alert, receiver: &str, leader: &str) -> Record {
    #[derive(Serialize)]
    struct Grouped<'a> {
        leader: &'a str,
    }
    Record { detail: facts(Grouped { leader }), ..record(alert, Action::NotifyGrouped, receiver) }
}

/// The receiver's budget is spent: the alert waits for a digest.
pub(super) fn deferred(alert: &Alert, receiver: &str, kind: &str) -> Record {
    #[derive(Serialize)]
    struct Deferred<'a> {
        kind: &'a str,
    }
    Record { detail: facts(Deferred { kind }), ..record(alert, Action::NotifyDeferred, receiver) }
}

/// The audit id of digest `id`.
fn digest_id(id: &str) -> String {
    format!("digest-{id}")
}

/// Digest `id` was sent to the receiver, carrying `alerts`.
pub(super) fn digest(id: &str, receiver: &str, kind: &str, alerts: &[&str], status: u16) -> Record {
    #[derive(Serialize)]
    struct Sent<'a> {
        kind: &'a str,
        count: usize,
        alerts: &'a [&'a str],
    }
    crate::metrics::receiver_sent(receiver);
    Record {
        receiver: Some(receiver.to_string()),
        graph_status: Some(status),
        detail: facts(Sent { kind, count: alerts.len(), alerts }),
        ..Record::new(&digest_id(id), id, Action::NotifyDigest)
    }
}

/// Digest `id` could not be sent; its alerts wait again.
pub(super) fn digest_failed(id: &str, receiver: &str, kind: &str, alerts: &[&str], e: &NotifyError) -> Record {
    #[derive(Serialize)]
    struct Failed<'a> {
        kind: &'a str,
        error: &'a str,
        retryable: bool,
        alerts: &'a [&'a str],
    }
    let retryable = e.retry == Retry::Retryable;
    crate::metrics::receiver_failed(receiver, &e.message);
    Record {
        receiver: Some(receiver.to_string()),
        detail: facts(Failed { kind, error: &e.message, retryable, alerts }),
        ..Record::new(&digest_id(id), id, Action::NotifyFailed)
    }
}

/// The receiver was told about the alert of `line` (version `version`) in digest `id`.
pub(super) fn in_digest(
    line: &DigestLine,
    version: &str,
    routes: &[String],
    receiver: &str,
    kind: &str,
    id: &str,
    status: u16,
) -> Record {
    #[derive(Serialize)]
    struct Sent<'a> {
        kind: &'a str,
        why: &'a str,
        routes: &'a [String],
        digest: String,
    }
    Record {
        receiver: Some(receiver.to_string()),
        graph_status: Some(status),
        detail: facts(Sent { kind, why: &line.why, routes, digest: digest_id(id) }),
        ..Record::new(&line.id, version, Action::Notify)
    }
}

/// The route's `set:` changed the alert in Graph.
pub(super) fn updated(alert: &Alert, route: &str, change: &AlertUpdate) -> Record {
    #[derive(Serialize)]
    struct Updated<'a> {
        status_before: &'a str,
        set: &'a AlertUpdate,
    }
    let status = alert.status();
    Record {
        detail: facts(Updated { status_before: status.as_str(), set: change }),
        ..record(alert, Action::Update, route)
    }
}

/// The route's `set:` was not applied; `reason` says why.
pub(super) fn update_skipped(alert: &Alert, route: &str, reason: String) -> Record {
    Record { detail: reason, ..record(alert, Action::UpdateSkipped, route) }
}

/// Graph refused the route's `set:`.
pub(super) fn update_failed(alert: &Alert, route: &str, error: &str, status: Option<u16>) -> Record {
    #[derive(Serialize)]
    struct UpdateFailed<'a> {
        error: &'a str,
    }
    Record { graph_status: status, detail: facts(UpdateFailed { error }), ..record(alert, Action::UpdateFailed, route) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_action_has_its_record_with_the_facts_as_json() {
        let alert =
            Alert::from_value(json!({"id": "a", "status": "new", "lastUpdateDateTime": "2026-11-26T10:00:00Z"}))
                .unwrap();
        let mut view = View::new("contoso", "soc", &alert);
        view.why = "new".into();
        let r = sent(&alert, "soc", "teams", &view, &["triage".to_string()], 202);
        assert_eq!((r.action, r.receiver.as_deref(), r.graph_status), (Action::Notify, Some("soc"), Some(202)));
        assert_eq!(r.detail, r#"{"kind":"teams","why":"new","routes":["triage"],"grouped":[]}"#);
        assert_eq!(r.alert_version, "2026-11-26T10:00:00Z");
        let r = failed(&alert, "soc", "webhook", &NotifyError::new("soc", "HTTP 503", Retry::Retryable));
        assert_eq!(
            (r.action, r.detail.as_str()),
            (Action::NotifyFailed, r#"{"kind":"webhook","error":"HTTP 503","retryable":true}"#)
        );
        let r = suppressed(&alert, "soc", "told at 10:00".into());
        assert_eq!((r.action, r.detail.as_str()), (Action::NotifySuppressed, "told at 10:00"));
        let r = grouped(&alert, "soc", "b");
        assert_eq!((r.action, r.detail.as_str()), (Action::NotifyGrouped, r#"{"leader":"b"}"#));
        let change = AlertUpdate { status: Some("inProgress".into()), ..Default::default() };
        let r = updated(&alert, "triage", &change);
        assert_eq!((r.action, r.receiver.as_deref()), (Action::Update, Some("triage")));
        assert_eq!(r.detail, r#"{"status_before":"new","set":{"status":"inProgress"}}"#);
        let r = update_skipped(&alert, "triage", "already set".into());
        assert_eq!((r.action, r.detail.as_str()), (Action::UpdateSkipped, "already set"));
        let r = update_failed(&alert, "triage", "conflict", Some(409));
        assert_eq!(
            (r.action, r.graph_status, r.detail.as_str()),
            (Action::UpdateFailed, Some(409), r#"{"error":"conflict"}"#)
        );
    }
}
