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
    ///
    /// The fields are read into [`Fields`] and then checked for the message's `kind`, rather than by
    /// the derived `Deserialize`: serde reads an internally tagged enum by first copying the whole
    /// body into its own buffer (the tag may come last), then reading the variant from that copy, and
    /// for an alert that copy was 4 % of the standalone pipeline's CPU. Same messages, same refusals
    /// (a test compares the two).
    pub fn parse(body: &[u8]) -> Result<Message, MessageError> {
        let text = std::str::from_utf8(body).map_err(|e| MessageError::Malformed(format!("not UTF-8: {e}")))?;
        let fields: Fields = serde_json::from_str(text.trim()).map_err(|e| MessageError::Malformed(e.to_string()))?;
        fields.into_message().map_err(MessageError::Malformed)
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

/// Every field any [`Message`] has, as read by [`Message::parse`]: `kind` says which must be there.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    kind: String,
    tenant: Option<String>,
    #[serde(default, deserialize_with = "present")]
    alert: Option<Value>,
    key: Option<String>,
    reason: Option<String>,
    alert_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    click: Option<Value>,
}

/// A field that is there, `null` included (`Option<Value>` alone reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Fields {
    fn into_message(self) -> Result<Message, String> {
        let Fields { kind, tenant, alert, key, reason, alert_id, click } = self;
        let own: &str = match kind.as_str() {
            "alert" => "alert",
            "alert_ref" => "key",
            "poll" => "reason",
            "lookup" => "alert_id",
            "triage" => "click",
            other => {
                return Err(format!(
                    "unknown variant `{other}`, expected one of `alert`, `alert_ref`, `poll`, `lookup`, `triage`"
                ));
            }
        };
        let given = [
            ("alert", alert.is_some()),
            ("key", key.is_some()),
            ("reason", reason.is_some()),
            ("alert_id", alert_id.is_some()),
            ("click", click.is_some()),
        ];
        if let Some((name, _)) = given.iter().find(|(name, set)| *set && *name != own) {
            return Err(format!("unknown field `{name}`, expected one of `kind`, `tenant`, `{own}`"));
        }
        let tenant = tenant.ok_or("missing field `tenant`")?;
        let missing = || format!("missing field `{own}`");
        Ok(match own {
            "alert" => Message::Alert { tenant, alert: alert.ok_or_else(missing)? },
            "key" => Message::AlertRef { tenant, key: key.ok_or_else(missing)? },
            "reason" => Message::Poll { tenant, reason: reason.ok_or_else(missing)? },
            "alert_id" => Message::Lookup { tenant, alert_id: alert_id.ok_or_else(missing)? },
            _ => Message::Triage { tenant, click: click.ok_or_else(missing)? },
        })
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
    fn parse_reads_and_refuses_what_the_derived_reader_does() {
        let serde = |body: &str| serde_json::from_str::<Message>(body).map_err(|_| ());
        let ours = |body: &str| Message::parse(body.as_bytes()).map_err(|_| ());
        let bodies = [
            r#"{"kind":"alert","tenant":"contoso","alert":{"id":"a1","evidence":[{"n":1}]}}"#,
            r#"{"tenant":"contoso","alert":{"id":"a1"},"kind":"alert"}"#,
            r#"{"kind":"alert","tenant":"contoso","alert":null}"#,
            r#"{"kind":"alert_ref","tenant":"contoso","key":"alerts/contoso/ab"}"#,
            r#"{"kind":"poll","tenant":"contoso","reason":"doorbell"}"#,
            r#"{"kind":"lookup","tenant":"contoso","alert_id":"a1"}"#,
            r#"{"kind":"triage","tenant":"contoso","click":{"verb":"ack"}}"#,
            // Refused: a field of another kind, a field missing, an unknown kind or field, no kind.
            r#"{"kind":"poll","tenant":"contoso","reason":"doorbell","key":"k"}"#,
            r#"{"kind":"alert","tenant":"contoso"}"#,
            r#"{"kind":"poll","reason":"doorbell"}"#,
            r#"{"kind":"nope","tenant":"contoso"}"#,
            r#"{"kind":"poll","tenant":"contoso","reason":"doorbell","extra":1}"#,
            r#"{"tenant":"contoso","reason":"doorbell"}"#,
            r#"{"kind":"poll","tenant":7,"reason":"doorbell"}"#,
            r#"[1,2]"#,
        ];
        for body in bodies {
            assert_eq!(ours(body), serde(body), "{body}");
        }
        assert_eq!(bodies.iter().filter(|b| ours(b).is_ok()).count(), 7, "the first seven are messages");
        let refusal = Message::parse(br#"{"kind":"poll","tenant":"contoso","reason":"r","key":"k"}"#).unwrap_err();
        assert!(refusal.to_string().contains("unknown field `key`"), "{refusal}");
        let refusal = Message::parse(br#"{"kind":"lookup","tenant":"contoso"}"#).unwrap_err();
        assert!(refusal.to_string().contains("missing field `alert_id`"), "{refusal}");
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
