//! E-mail through Graph `POST /users/{sender}/sendMail` (application permission `Mail.Send`): an HTML
//! body that Outlook renders well, subject `[secmon][High] <title>`, and Exchange Online's sending
//! limit of 30 messages a minute per mailbox kept with a counter in the store.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use serde_json::{Value, json};

use super::template::Templates;
use super::view::{View, clip};
use super::{Notifier, NotifyError, SendContext};
use crate::alert::Alert;
use crate::config::Issue;
use crate::graph::Retry;
use crate::store::{Change, Store, StoreError, keys};

/// Exchange Online accepts 30 messages a minute from one mailbox.
pub const PER_MINUTE: u32 = 30;
/// How many minutes ahead a send may book a slot before it gives up and lets the queue retry.
const LOOKAHEAD_MINUTES: i64 = 10;
/// Graph keeps subjects to 255 characters.
const SUBJECT_CHARS: usize = 255;

pub use crate::config::receivers::EmailConfig;

/// A built e-mail receiver.
#[derive(Debug, Clone)]
pub struct Email {
    name: String,
    /// The sending mailbox.
    pub from: String,
    /// The tenant whose identity sends; `None`: the alert's own.
    sender: Option<String>,
    to: Vec<String>,
    cc: Vec<String>,
    subject: String,
    body: String,
}

impl Email {
    /// Builds the receiver `name`, compiling its template overrides (errors at `path`).
    pub fn new(
        name: &str,
        config: &EmailConfig,
        sender: Option<String>,
        templates: &mut Templates,
        path: &str,
    ) -> Result<Email, Issue> {
        let mut compile = |field: &str, file: &str, source: &Option<String>, builtin: &str| match source {
            Some(source) => {
                let tname = format!("{name}/{file}");
                templates
                    .add(&tname, source)
                    .map_err(|e| Issue::error(format!("{path}.email.{field}"), format!("does not compile: {e}")))?;
                Ok(tname)
            }
            None => Ok(builtin.to_string()),
        };
        let subject = compile("subject", "subject.txt", &config.subject, "builtin/subject.txt")?;
        let body = compile("template", "email.html", &config.template, "builtin/email.html")?;
        Ok(Email {
            name: name.to_string(),
            from: config.from.clone(),
            sender,
            to: config.to.clone(),
            cc: config.cc.clone(),
            subject,
            body,
        })
    }
}

#[async_trait]
impl Notifier for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    /// The sendMail body for `view`, as Graph documents it (`saveToSentItems` a JSON bool).
    fn render(&self, templates: &Templates, view: &View, _alert: &Alert) -> Result<Value, NotifyError> {
        let fail =
            |what: &str, e: String| NotifyError::new(&self.name, format!("{what} template: {e}"), Retry::Permanent);
        let subject = templates.render(&self.subject, view).map_err(|e| fail("subject", e))?;
        // A subject is one line; alert titles are not to be trusted with line breaks.
        let subject: String = subject.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let html = templates.render(&self.body, view).map_err(|e| fail("body", e))?;
        let recipients =
            |list: &[String]| list.iter().map(|a| json!({"emailAddress": {"address": a}})).collect::<Vec<_>>();
        let mut message = json!({
            "subject": clip(&subject, SUBJECT_CHARS),
            "body": {"contentType": "HTML", "content": html},
            "toRecipients": recipients(&self.to),
        });
        if !self.cc.is_empty() {
            message["ccRecipients"] = Value::Array(recipients(&self.cc));
        }
        Ok(json!({"message": message, "saveToSentItems": false}))
    }

    /// Sends the mail through Graph as [`Email::from`], in a minute of its mailbox's sending limit
    /// ([`book_slot`]); Graph's 202 is the status.
    async fn send(&self, cx: &SendContext<'_>, body: &Value) -> Result<u16, NotifyError> {
        let slot = book_slot(cx.store, &self.from, cx.now)
            .await
            .map_err(|err| NotifyError::new(&self.name, format!("store: {err}"), Retry::Retryable))?;
        match slot {
            Some(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
            Some(_) => {}
            None => {
                return Err(NotifyError::new(
                    &self.name,
                    format!("{} has used its Exchange sending limit for the next minutes", self.from),
                    Retry::Retryable,
                ));
            }
        }
        // The sending tenant's identity, when one is configured (an MSSP's SOC tenant), else the alert's own.
        let tenant = self.sender.as_deref().unwrap_or(cx.tenant);
        cx.graph.send_mail(tenant, &self.from, body).await.map(|()| 202).map_err(|e| {
            let status = e.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            NotifyError::new(&self.name, format!("sendMail as {}{status}: {}", self.from, e.message), e.retry)
        })
    }
}

/// Books one of the sender's [`PER_MINUTE`] slots in the store, in the first minute from `now` that has
/// room, and returns how long to wait for that minute. The counter lives in the store so that every
/// instance of the function app shares it.
pub async fn book_slot(store: &dyn Store, sender: &str, now: DateTime<Utc>) -> Result<Option<Duration>, StoreError> {
    let minute = now.with_second(0).and_then(|t| t.with_nanosecond(0)).expect("valid time");
    for ahead in 0..LOOKAHEAD_MINUTES {
        let start = minute + chrono::Duration::minutes(ahead);
        // Compare-and-swap, so two instances never both take the thirtieth slot.
        let booked = crate::store::update(store, &keys::mail_slots(sender, start), |current| {
            let used: u32 = current.and_then(|v| std::str::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
            if used >= PER_MINUTE {
                return Change::Keep(false);
            }
            Change::Put((used + 1).to_string().into_bytes(), true)
        })
        .await?;
        if booked {
            return Ok(Some((start - now).to_std().unwrap_or_default()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        let mut out = Vec::new();
        let c = EmailConfig {
            from: "secmon@contoso.com".into(),
            to: vec!["soc@contoso.com".into(), "not an address".into()],
            cc: vec!["a@b".into()],
            subject: None,
            template: None,
            tenant: None,
        };
        c.validate("receivers.x.email", &mut out);
        let paths: Vec<_> = out.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["receivers.x.email.to[1]", "receivers.x.email.cc[0]"]);
    }

    #[tokio::test]
    async fn the_thirty_first_mail_of_a_minute_waits_for_the_next() {
        let store = crate::store::sqlite::SqliteStore::in_memory().unwrap();
        let now: DateTime<Utc> = "2026-11-26T10:00:45Z".parse().unwrap();
        for _ in 0..PER_MINUTE {
            assert_eq!(book_slot(&store, "secmon@contoso.com", now).await.unwrap(), Some(Duration::ZERO));
        }
        assert_eq!(book_slot(&store, "SECMON@contoso.com", now).await.unwrap(), Some(Duration::from_secs(15)));
        // Another mailbox has its own budget.
        assert_eq!(book_slot(&store, "other@contoso.com", now).await.unwrap(), Some(Duration::ZERO));
    }
}
