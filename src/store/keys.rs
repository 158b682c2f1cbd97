//! The keyspace: every store key and stream name secmon uses, one function per family.
//!
//! Keys are `/`-separated paths. Each variable part (tenant name, alert id, receiver name, rule id…)
//! goes through [`part`], the one escaping rule: `%` becomes `%25` and `/` becomes `%2F`, so a part can
//! never run into the next one or into another family. Parts without either character are unchanged,
//! which is why keys written before this module existed still read the same.
//!
//! | key / stream | holds | written by | lifetime |
//! |---|---|---|---|
//! | `watermark/{tenant}` | JSON watermark of the tenant's poll (compare-and-swap) | `intake::poll` | kept |
//! | `seen/{tenant}/window` | JSON versions already queued inside the overlap and the reconciliation window, and those being queued (compare-and-swap) | `intake::poll` | kept, pruned each poll |
//! | `paging/{tenant}` | JSON of what the tenant's Graph accepts (`$orderby` refused until …) (compare-and-swap) | `intake::poll` | kept |
//! | `poll-slot/{tenant}` | JSON of the tenant's pending and running poll and the doorbells coalesced into them (compare-and-swap) | `intake::coalesce` | kept |
//! | `health/{tenant}` | JSON poll and reconciliation health record (compare-and-swap) | `intake::health` | kept |
//! | `subscriptions/{tenant}/{id}` | JSON record of one Graph subscription | `intake::subscriptions` | until the subscription is removed |
//! | `subscriptions/{tenant}/pending-{uuid}` | JSON record of a subscription being created | `intake::subscriptions` | until created, or stale after its TTL |
//! | `alerts/{tenant}/{sha256}` | an alert too large for a queue message (see [`crate::intake::Message`]) | `intake` (send) | kept |
//! | `doorbell/{signature}` | claim: a doorbell signature is used once | `intake::webhook` | kept |
//! | `close/{tenant}/{alert}/{version}` | claim: the close PATCH of one alert version | `respond::close` | kept |
//! | `close-outcome/{tenant}/{alert}/{version}` | text `failed {status} {message}` of a close Graph refused | `respond::close` | kept |
//! | `close-started/{tenant}/{alert}/{version}` | the rule id whose close of this version began (set right before the PATCH) | `respond::close` | kept |
//! | `comment/{tenant}/{alert}/{version}` | claim: the close comment of one alert version | `respond::close` | kept |
//! | `breaker/{tenant}/{rule}/{YYYY-MM-DDTHH}` | decimal count of a rule's closes in one tenant in a UTC hour (compare-and-swap) | `respond::close` | kept |
//! | `breaker-notice/{tenant}/{rule}/{YYYY-MM-DDTHH}` | claim: the owner is told once per rule, tenant and hour | `respond` | kept |
//! | `audited/{tenant}/{alert}/{version}/{action}` | claim: one audit record per alert version and action | `respond` | kept |
//! | `notify/{tenant}/{alert}/{version}/{receiver}` | claim: one delivery per alert version and receiver | `notify::deliver` | kept |
//! | `notify-last/{tenant}/{alert}/{receiver}` | JSON of what the receiver was last told (`realert`) | `notify::deliver` | kept |
//! | `notify-group/{tenant}/{receiver}/{incident}` | JSON group of an incident's alerts (compare-and-swap) | `notify::deliver` | kept, taken over when stale |
//! | `notify-budget/{receiver or mailbox}` | JSON send times inside a posting budget's window (compare-and-swap) | `notify::budget` | kept, pruned each send |
//! | `notify-pending/{tenant}/{receiver}` | JSON alerts waiting for a digest, and the digest in flight (compare-and-swap) | `notify::deliver::coalesce` | kept, emptied by each digest |
//! | `notify-digest/{tenant}/{receiver}/{id}` | claim: one digest is sent once | `notify::deliver::coalesce` | kept |
//! | `receiver-breaker/{receiver}` | JSON circuit breaker of one receiver: failures in a row, paused until, the probe in flight (compare-and-swap) | `notify::deliver::breaker` | kept |
//! | `update/{tenant}/{alert}/{version}/{route}` | claim: a route's `set:` once per alert version | `notify::deliver` | kept |
//! | `ratelimit/mail/{sender}/{YYYYMMDDTHHMM}` | decimal count of mails a sender sent in a minute (compare-and-swap) | `notify::email` | kept |
//! | stream `audit/{tenant}/{YYYY-MM-DD}` | the hash-chained audit records of a tenant's day, each written at its number once | `audit` | kept |
//! | `audit-head/{tenant}/{YYYY-MM-DD}` | JSON head of that stream's chain (last seq and hash, pending record; compare-and-swap) | `audit` | kept |
//! | `queue-receipts/{queue}/{message id}` | the current SQS receipt handle of a received message | `store::aws` | until the message is deleted or poisoned |
//!
//! "Claim" keys live in the claim namespace of the backend ([`super::Store::claim`]), the others are
//! values ([`super::Store::get`]) or streams ([`super::Store::append`]). "Kept" means nothing deletes the
//! key today.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, Utc};

/// One variable part of a key, escaped: `%` → `%25`, `/` → `%2F`.
pub fn part(raw: &str) -> Cow<'_, str> {
    if raw.contains(['%', '/']) { Cow::Owned(raw.replace('%', "%25").replace('/', "%2F")) } else { Cow::Borrowed(raw) }
}

/// Undoes [`part`].
pub fn unpart(escaped: &str) -> Cow<'_, str> {
    if !escaped.contains('%') {
        return Cow::Borrowed(escaped);
    }
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let (decoded, len) = match &rest[i..] {
            r if r.starts_with("%25") => ('%', 3),
            r if r.starts_with("%2F") => ('/', 3),
            _ => ('%', 1),
        };
        out.push(decoded);
        rest = &rest[i + len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// A key from a family name and its parts, each escaped with [`part`].
fn key(family: &str, parts: &[&str]) -> String {
    let mut out = String::from(family);
    for p in parts {
        out.push('/');
        out.push_str(&part(p));
    }
    out
}

/// The UTC hour of `now`, as breaker keys count in it (`2026-11-26T10`).
pub fn hour(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%dT%H").to_string()
}

/// `watermark/{tenant}`: the tenant's poll watermark.
pub fn watermark(tenant: &str) -> String {
    key("watermark", &[tenant])
}

/// `seen/{tenant}/window`: the alert versions already queued inside the poll overlap.
pub fn seen(tenant: &str) -> String {
    key("seen", &[tenant, "window"])
}

/// `paging/{tenant}`: what the tenant's Graph accepts in a list request.
pub fn paging(tenant: &str) -> String {
    key("paging", &[tenant])
}

/// `poll-slot/{tenant}`: the tenant's pending and running poll.
pub fn poll_slot(tenant: &str) -> String {
    key("poll-slot", &[tenant])
}

/// `health/{tenant}`: the tenant's poll health record.
pub fn health(tenant: &str) -> String {
    key("health", &[tenant])
}

/// The prefix of the subscription records of `tenant`, or of all tenants.
pub fn subscriptions(tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("{}/", key("subscriptions", &[t])),
        None => "subscriptions/".to_string(),
    }
}

/// `subscriptions/{tenant}/{id}`: the record of one Graph subscription.
pub fn subscription(tenant: &str, id: &str) -> String {
    key("subscriptions", &[tenant, id])
}

/// `subscriptions/{tenant}/pending-{token}`: a subscription being created.
pub fn subscription_pending(tenant: &str, token: &str) -> String {
    key("subscriptions", &[tenant, &format!("pending-{token}")])
}

/// The prefix of the pending subscription records of `tenant`.
pub fn subscriptions_pending(tenant: &str) -> String {
    format!("{}pending-", subscriptions(Some(tenant)))
}

/// The tenant of a key listed under [`subscriptions`]`(None)`.
pub fn subscription_tenant(key: &str) -> Option<String> {
    let rest = key.strip_prefix("subscriptions/")?;
    rest.split('/').next().map(|t| unpart(t).into_owned())
}

/// Whether `key` (from under [`subscriptions`]) is a pending record rather than a subscription.
pub fn is_subscription_pending(key: &str) -> bool {
    key.rsplit('/').next().is_some_and(|last| last.starts_with("pending-"))
}

/// `alerts/{tenant}/{digest}`: an alert too large for a queue message.
pub fn large_alert(tenant: &str, digest: &str) -> String {
    key("alerts", &[tenant, digest])
}

/// `doorbell/{signature}`: the claim that uses a doorbell signature once.
pub fn doorbell(signature: &str) -> String {
    key("doorbell", &[signature])
}

/// `close/{tenant}/{alert}/{version}`: the claim of one close.
pub fn close(tenant: &str, alert: &str, version: &str) -> String {
    key("close", &[tenant, alert, version])
}

/// `close-outcome/{tenant}/{alert}/{version}`: why a close was refused for good.
pub fn close_outcome(tenant: &str, alert: &str, version: &str) -> String {
    key("close-outcome", &[tenant, alert, version])
}

/// `close-started/{tenant}/{alert}/{version}`: the close of this version was begun (written right before
/// the PATCH), so a retry resumes it on the version it was decided on instead of deciding again.
pub fn close_started(tenant: &str, alert: &str, version: &str) -> String {
    key("close-started", &[tenant, alert, version])
}

/// `comment/{tenant}/{alert}/{version}`: the claim of one close comment.
pub fn comment(tenant: &str, alert: &str, version: &str) -> String {
    key("comment", &[tenant, alert, version])
}

/// `breaker/{tenant}/{rule}/{hour}`: a close rule's count of closes in one tenant in the UTC hour of `now`.
/// Per tenant, so one customer's flood never pauses a rule for the others.
pub fn breaker(tenant: &str, rule: &str, now: DateTime<Utc>) -> String {
    key("breaker", &[tenant, rule, &hour(now)])
}

/// `breaker-notice/{tenant}/{rule}/{hour}`: the claim that tells a rule's owner once per tenant and hour.
pub fn breaker_notice(tenant: &str, rule: &str, now: DateTime<Utc>) -> String {
    key("breaker-notice", &[tenant, rule, &hour(now)])
}

/// `audited/{tenant}/{alert}/{version}/{action}`: the claim of one audit record.
pub fn audited(tenant: &str, alert: &str, version: &str, action: &str) -> String {
    key("audited", &[tenant, alert, version, action])
}

/// `notify/{tenant}/{alert}/{version}/{receiver}`: the claim of one delivery.
pub fn notify(tenant: &str, alert: &str, version: &str, receiver: &str) -> String {
    key("notify", &[tenant, alert, version, receiver])
}

/// `receiver-breaker/{receiver}`: the circuit breaker of one receiver, shared by every worker.
pub fn receiver_breaker(receiver: &str) -> String {
    key("receiver-breaker", &[receiver])
}

/// `notify-last/{tenant}/{alert}/{receiver}`: what a receiver was last told about an alert.
pub fn notify_last(tenant: &str, alert: &str, receiver: &str) -> String {
    key("notify-last", &[tenant, alert, receiver])
}

/// `notify-group/{tenant}/{receiver}/{incident}`: an incident's alerts grouped into one message.
pub fn notify_group(tenant: &str, receiver: &str, incident: &str) -> String {
    key("notify-group", &[tenant, receiver, incident])
}

/// `update/{tenant}/{alert}/{version}/{route}`: the claim of a route's `set:`.
pub fn update(tenant: &str, alert: &str, version: &str, route: &str) -> String {
    key("update", &[tenant, alert, version, route])
}

/// `notify-budget/{receiver or mailbox}`: the send times of a posting budget's window.
pub fn notify_budget(name: &str) -> String {
    key("notify-budget", &[name])
}

/// `notify-pending/{tenant}/{receiver}`: the alerts waiting for a budgeted receiver's digest, and the
/// digest in flight.
pub fn notify_pending(tenant: &str, receiver: &str) -> String {
    key("notify-pending", &[tenant, receiver])
}

/// `notify-digest/{tenant}/{receiver}/{id}`: the claim of sending one digest.
pub fn notify_digest(tenant: &str, receiver: &str, id: &str) -> String {
    key("notify-digest", &[tenant, receiver, id])
}

/// `ratelimit/mail/{sender}/{minute}`: a sender's mails in the minute starting at `minute` (the
/// address lower-cased, since Exchange counts per mailbox).
pub fn mail_slots(sender: &str, minute: DateTime<Utc>) -> String {
    key("ratelimit", &["mail", &sender.to_ascii_lowercase(), &minute.format("%Y%m%dT%H%M").to_string()])
}

/// `queue-receipts/{queue}/{message id}`: the receipt an SQS message was last received with.
pub fn queue_receipt(queue: &str, message_id: &str) -> String {
    key("queue-receipts", &[queue, message_id])
}

/// The prefix of the audit streams of `tenant`, or of all tenants.
pub fn audit_streams(tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("{}/", key("audit", &[t])),
        None => "audit/".to_string(),
    }
}

/// Stream `audit/{tenant}/{day}`: a tenant's audit records of one UTC day.
pub fn audit_stream(tenant: &str, day: NaiveDate) -> String {
    key("audit", &[tenant, &day.format("%Y-%m-%d").to_string()])
}

/// `audit-head/…`: the chain head of an [`audit_stream`].
pub fn audit_head(stream: &str) -> String {
    format!("audit-head/{}", stream.trim_start_matches("audit/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Every family's format, pinned: these strings are in stores already.
    #[test]
    fn every_family_keeps_its_format() {
        let now = at("2026-11-26T10:42:17.5Z");
        let day = now.date_naive();
        let v = "2026-11-26T10:00:00.123Z";
        let cases = [
            (watermark("contoso"), "watermark/contoso"),
            (seen("contoso"), "seen/contoso/window"),
            (health("contoso"), "health/contoso"),
            (subscriptions(None), "subscriptions/"),
            (subscriptions(Some("contoso")), "subscriptions/contoso/"),
            (subscription("contoso", "4e77-ab"), "subscriptions/contoso/4e77-ab"),
            (subscription_pending("contoso", "u1"), "subscriptions/contoso/pending-u1"),
            (subscriptions_pending("contoso"), "subscriptions/contoso/pending-"),
            (large_alert("contoso", "ab12"), "alerts/contoso/ab12"),
            (doorbell("00ff"), "doorbell/00ff"),
            (close("contoso", "da1", v), "close/contoso/da1/2026-11-26T10:00:00.123Z"),
            (close_outcome("contoso", "da1", v), "close-outcome/contoso/da1/2026-11-26T10:00:00.123Z"),
            (close_started("contoso", "da1", v), "close-started/contoso/da1/2026-11-26T10:00:00.123Z"),
            (comment("contoso", "da1", v), "comment/contoso/da1/2026-11-26T10:00:00.123Z"),
            (breaker("contoso", "r1", now), "breaker/contoso/r1/2026-11-26T10"),
            (breaker_notice("contoso", "r1", now), "breaker-notice/contoso/r1/2026-11-26T10"),
            (audited("contoso", "da1", v, "close"), "audited/contoso/da1/2026-11-26T10:00:00.123Z/close"),
            (notify("contoso", "da1", v, "soc"), "notify/contoso/da1/2026-11-26T10:00:00.123Z/soc"),
            (notify_last("contoso", "da1", "soc"), "notify-last/contoso/da1/soc"),
            (receiver_breaker("soc/teams"), "receiver-breaker/soc%2Fteams"),
            (notify_group("contoso", "soc", "42"), "notify-group/contoso/soc/42"),
            (update("contoso", "da1", v, "routes[0]"), "update/contoso/da1/2026-11-26T10:00:00.123Z/routes[0]"),
            (
                mail_slots("SecMon@Contoso.com", at("2026-11-26T10:42:00Z")),
                "ratelimit/mail/secmon@contoso.com/20261126T1042",
            ),
            (audit_streams(None), "audit/"),
            (audit_streams(Some("contoso")), "audit/contoso/"),
            (audit_stream("contoso", day), "audit/contoso/2026-11-26"),
            (audit_head("audit/contoso/2026-11-26"), "audit-head/contoso/2026-11-26"),
            (queue_receipt("alerts", "5fd1-77"), "queue-receipts/alerts/5fd1-77"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn keys_escape_their_parts() {
        assert_eq!(notify("t", "a/b%c", "v", "r"), "notify/t/a%2Fb%25c/v/r");
        assert_eq!(part("plain-id_1.2:3"), "plain-id_1.2:3");
        assert!(matches!(part("plain"), Cow::Borrowed(_)));
        // A tenant name with a slash cannot reach into another tenant's keys.
        assert_eq!(watermark("a/b"), "watermark/a%2Fb");
        assert!(!audit_stream("a/b", at("2026-11-26T00:00:00Z").date_naive()).starts_with(&audit_streams(Some("a"))));
        for raw in ["a/b%c", "%2F", "100%", "plain"] {
            assert_eq!(unpart(&part(raw)), raw);
        }
        assert_eq!(subscription_tenant(&subscription("a/b", "id")).as_deref(), Some("a/b"));
        assert_eq!(subscription_tenant(&subscription_pending("contoso", "x")).as_deref(), Some("contoso"));
        assert!(is_subscription_pending(&subscription_pending("contoso", "x")));
        assert!(!is_subscription_pending(&subscription("contoso", "x")));
    }
}
