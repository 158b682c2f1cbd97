//! E-mail through Graph `POST /users/{sender}/sendMail` (application permission `Mail.Send`): an HTML
//! body that Outlook renders well, subject `[secmon][contoso][High] <title>` (the tenant, the severity, the title), and Exchange Online's sending
//! limit of 30 messages a minute per mailbox kept as a posting budget ([`super::budget`]) shared by
//! every receiver sending from the mailbox: mail beyond it goes out as one digest.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::budget::Budgeted;
use super::template::{RenderError, Templates};
use super::view::{Digest, View, clip};
use super::{Notifier, NotifyError, Payload, SendContext};
use crate::alert::Alert;
use crate::config::Issue;
use crate::graph::Retry;

/// The most alerts one digest mail lists; the rest wait for the next.
const DIGEST_LINES: usize = 200;
/// Graph keeps subjects to 255 characters.
const SUBJECT_CHARS: usize = 255;
/// The largest sendMail request secmon sends, in bytes of JSON. Graph's request cap for sendMail is about
/// 4 MB and Exchange Online's default message size limit 25 MB (35 MB with encoding overhead counted);
/// 1 MB stays far under both, and far over any mail worth reading.
pub const MAX_MAIL_BYTES: usize = 1_000_000;
/// How many entries per evidence list a mail tries first, then fewer until it renders within the
/// template fuel and fits in [`MAX_MAIL_BYTES`]; the rest is counted ("N more evidence items not shown").
const CUTS: [usize; 6] = [25, 10, 5, 2, 1, 0];

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
    budget: Budgeted,
    /// The longest one sendMail call may take, Graph's own retries included.
    timeout: std::time::Duration,
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
            budget: Budgeted { name: format!("mail/{}", config.from.to_ascii_lowercase()), budget: config.budget },
            timeout: config.timeout,
        })
    }
}

#[async_trait]
impl Notifier for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    /// The sendMail body for `view`, as Graph documents it (`saveToSentItems` a JSON bool), with the
    /// evidence cut like the Teams card's until it renders within the template fuel and fits in
    /// [`MAX_MAIL_BYTES`], so an alert with thousands of evidence items is still told.
    fn render(&self, templates: &Templates, view: &View, _alert: &Alert) -> Result<Payload, NotifyError> {
        let fail =
            |what: &str, e: String| NotifyError::new(&self.name, format!("{what} template: {e}"), Retry::Permanent);
        let mut why = String::new();
        for max in CUTS {
            let mut v = view.clone();
            v.cut(max);
            v.group.truncate(max.max(1) * 4);
            let rendered = templates
                .try_render(&self.subject, &v)
                .and_then(|subject| Ok((subject, templates.try_render(&self.body, &v)?)));
            let (subject, html) = match rendered {
                Ok(both) => both,
                Err(RenderError::OutOfFuel(e)) => {
                    why = format!("needs more template fuel than {} allows ({e})", super::template::FUEL);
                    continue;
                }
                Err(RenderError::Failed(e)) => return Err(fail("body or subject", e)),
            };
            // A subject is one line; alert titles are not to be trusted with line breaks.
            let subject: String = subject.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            let mail = self.mail(&subject, html);
            let size = serde_json::to_vec(&mail).expect("JSON").len();
            if size <= MAX_MAIL_BYTES {
                return Ok(Payload::Json(mail));
            }
            why = format!("is {size} bytes; secmon sends at most {MAX_MAIL_BYTES}");
        }
        Err(NotifyError::new(
            &self.name,
            format!("the mail {why} even without evidence: shorten the template"),
            Retry::Permanent,
        ))
    }

    fn budget(&self) -> Option<Budgeted> {
        Some(self.budget.clone())
    }

    /// A digest mail: subject `[secmon][contoso] 40 alerts: 3 High, 37 Medium`, one table row per alert.
    fn render_digest(&self, templates: &Templates, digest: &mut Digest) -> Result<Value, NotifyError> {
        digest.keep(DIGEST_LINES);
        let html = templates
            .render("builtin/digest.html", digest)
            .map_err(|e| NotifyError::new(&self.name, format!("digest template: {e}"), Retry::Permanent))?;
        let kind = if digest.scheduled.is_some() { "digest: " } else { "" };
        let subject: String = format!("[secmon][{}] {kind}{} alerts: {}", digest.tenants, digest.count, digest.summary)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Ok(self.mail(&subject, html))
    }

    /// Sends the mail through Graph as [`Email::from`] (the mailbox's sending limit is kept by its
    /// budget before this is called); Graph's 202 is the status.
    async fn send(&self, cx: &SendContext<'_>, body: &Payload) -> Result<u16, NotifyError> {
        // The sending tenant's identity, when one is configured (an MSSP's SOC tenant), else the alert's own.
        let tenant = self.sender.as_deref().unwrap_or(cx.tenant);
        let sent = tokio::time::timeout(self.timeout, cx.graph.send_mail(tenant, &self.from, &body.json())).await;
        let Ok(sent) = sent else {
            let message = format!("sendMail as {}: {}", self.from, super::http::timed_out(self.timeout));
            return Err(NotifyError::new(&self.name, message, Retry::Retryable));
        };
        sent.map(|()| 202).map_err(|e| {
            let status = e.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            NotifyError::new(&self.name, format!("sendMail as {}{status}: {}", self.from, e.message), e.retry)
        })
    }
}

impl Email {
    /// The sendMail body, as Graph documents it (`saveToSentItems` a JSON bool).
    fn mail(&self, subject: &str, html: String) -> Value {
        let recipients =
            |list: &[String]| list.iter().map(|a| json!({"emailAddress": {"address": a}})).collect::<Vec<_>>();
        let mut message = json!({
            "subject": clip(subject, SUBJECT_CHARS),
            "body": {"contentType": "HTML", "content": html},
            "toRecipients": recipients(&self.to),
        });
        if !self.cc.is_empty() {
            message["ccRecipients"] = Value::Array(recipients(&self.cc));
        }
        json!({"message": message, "saveToSentItems": false})
    }
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
            budget: crate::config::receivers::BudgetConfig::email(),
            digest: None,
            timeout: crate::config::receivers::DEFAULT_RECEIVER_TIMEOUT,
            breaker: Default::default(),
        };
        c.validate("receivers.x.email", &mut out);
        let paths: Vec<_> = out.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["receivers.x.email.to[1]", "receivers.x.email.cc[0]"]);
    }
}
