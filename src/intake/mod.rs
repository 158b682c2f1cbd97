//! How alerts come in: [`poll`] (the timer, with its [`health`], and reconciliation), [`webhook`] (Graph
//! change notifications and doorbells), [`coalesce`] (at most one pending poll per tenant),
//! [`subscriptions`] (keeping Graph subscriptions alive). Both paths end in a [`Message`] on the queue.
//! [`http`] holds the host-neutral request and response the HTTP stages take and give. [`history`] reads
//! a tenant's past alerts read-only, for replaying rules on them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Queue, Store, StoreError};

pub mod coalesce;
pub mod health;
pub mod history;
pub mod http;
pub mod poll;
pub mod subscriptions;
pub mod webhook;

/// What travels on the `alerts` queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// One alert version, as Graph returned it.
    Alert {
        /// Tenant name.
        tenant: String,
        /// The alert JSON.
        alert: Value,
    },
    /// One alert version too large for a queue message, kept in the store under `key`.
    AlertRef {
        /// Tenant name.
        tenant: String,
        /// Store key of the alert JSON.
        key: String,
    },
    /// Poll this tenant now (a doorbell rang).
    Poll {
        /// Tenant name.
        tenant: String,
        /// What rang, for the logs (a subscription's resource, `doorbell`, `lifecycle:missed`).
        reason: String,
    },
    /// Fetch this alert now and process it.
    Lookup {
        /// Tenant name.
        tenant: String,
        /// Alert id.
        alert_id: String,
    },
    /// A person acted on an alert (a card button, a triage page): `click` is a `triage::act::Click`,
    /// checked on receipt by the worker that acts on it.
    Triage {
        /// Tenant name.
        tenant: String,
        /// The click.
        click: Value,
    },
}

/// Why a queue message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not a message secmon understands: it goes to the poison queue, it is never dropped.
    #[error("unreadable queue message: {0}")]
    Malformed(String),
    /// The store failed; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The queue body of a [`Message::Alert`] for an alert's JSON text as Graph sent it, written without
/// parsing the alert: the same message as [`Message::send`] writes for the parsed alert.
pub fn alert_body(tenant: &str, alert: &serde_json::value::RawValue) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        kind: &'static str,
        tenant: &'a str,
        alert: &'a serde_json::value::RawValue,
    }
    serde_json::to_vec(&Body { kind: "alert", tenant, alert }).expect("messages serialize")
}

impl Message {
    /// The tenant the message is about.
    pub fn tenant(&self) -> &str {
        match self {
            Message::Alert { tenant, .. }
            | Message::AlertRef { tenant, .. }
            | Message::Poll { tenant, .. }
            | Message::Lookup { tenant, .. }
            | Message::Triage { tenant, .. } => tenant,
        }
    }

    /// Parses a queue body, the JSON that [`Message::send`] wrote (each host hands it over with its
    /// own encodings undone).
    pub fn parse(body: &[u8]) -> Result<Message, MessageError> {
        let text = std::str::from_utf8(body).map_err(|e| MessageError::Malformed(format!("not UTF-8: {e}")))?;
        serde_json::from_str(text.trim()).map_err(|e| MessageError::Malformed(e.to_string()))
    }

    /// Puts the message on the alerts queue; an alert too large for the queue ([`Queue::max_body`]) goes
    /// into the store first and the queue carries a [`Message::AlertRef`].
    pub async fn send(&self, store: &dyn Store, queue: &dyn Queue) -> Result<(), StoreError> {
        let body = serde_json::to_vec(self).expect("messages serialize");
        if body.len() <= queue.max_body() {
            return queue.send(crate::store::ALERTS_QUEUE, &body).await;
        }
        let Message::Alert { tenant, alert } = self else {
            return queue.send(crate::store::ALERTS_QUEUE, &body).await;
        };
        use sha2::Digest;
        let alert_bytes = serde_json::to_vec(alert).expect("alerts serialize");
        let digest = hex::encode(sha2::Sha256::digest(&alert_bytes));
        let key = crate::store::keys::large_alert(tenant, &digest);
        store.put(&key, &alert_bytes).await?;
        let reference = Message::AlertRef { tenant: tenant.clone(), key };
        queue.send(crate::store::ALERTS_QUEUE, &serde_json::to_vec(&reference).expect("serializes")).await
    }

    /// Resolves an [`Message::AlertRef`] into the alert it points at; other messages are returned as is.
    pub async fn resolve(self, store: &dyn Store) -> Result<Message, MessageError> {
        match self {
            Message::AlertRef { tenant, key } => {
                let stored = store
                    .get(&key)
                    .await?
                    .ok_or_else(|| MessageError::Malformed(format!("alert reference {key} not in the store")))?;
                let alert = serde_json::from_slice(&stored.value)
                    .map_err(|e| MessageError::Malformed(format!("stored alert {key}: {e}")))?;
                Ok(Message::Alert { tenant, alert })
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use serde_json::json;

    #[test]
    fn parses_what_send_writes() {
        let m = Message::Poll { tenant: "contoso".into(), reason: "doorbell".into() };
        assert_eq!(Message::parse(&serde_json::to_vec(&m).unwrap()).unwrap(), m);
        assert!(matches!(Message::parse(b"{\"kind\":\"nope\"}"), Err(MessageError::Malformed(_))));
        assert!(matches!(Message::parse(&[0xff, 0xfe]), Err(MessageError::Malformed(_))));
    }

    #[test]
    fn an_alert_body_from_json_text_is_the_message_send_writes() {
        let alert = json!({"id": "a1", "title": "Tab\tand \"quotes\" é", "evidence": [{"n": 1}], "z": null});
        let raw = serde_json::value::to_raw_value(&alert).unwrap();
        let body = alert_body("contoso", &raw);
        let m = Message::Alert { tenant: "contoso".into(), alert };
        assert_eq!(body, serde_json::to_vec(&m).unwrap());
        assert_eq!(Message::parse(&body).unwrap(), m);
    }

    #[tokio::test]
    async fn large_alerts_travel_through_the_store() {
        let s = SqliteStore::in_memory().unwrap();
        let alert = json!({"id": "big", "description": "x".repeat(60_000)});
        let m = Message::Alert { tenant: "contoso".into(), alert: alert.clone() };
        m.send(&s, &s).await.unwrap();
        let got = s.receive(crate::store::ALERTS_QUEUE, 1, std::time::Duration::from_secs(30)).await.unwrap();
        assert!(got[0].body.len() < 1000, "the queue carries a reference only");
        let parsed = Message::parse(&got[0].body).unwrap();
        assert!(matches!(parsed, Message::AlertRef { .. }));
        assert_eq!(parsed.resolve(&s).await.unwrap(), m);
    }
}
