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
//! | `subscription-creating/{tenant}/{uuid}` | JSON `{"started"}`: a subscription of ours is being created right now, so the webhook answers Graph's validation handshake | `intake::subscriptions` (worker) | deleted when Graph answers the create; ignored after 2 minutes ([`crate::intake::subscriptions::CREATING_WINDOW_SECONDS`]) and removed by the next sync |
//! | `alerts/{tenant}/{sha256}` | an alert too large for a queue message (see [`crate::intake::Message`]) | `intake` (send) | `retention.large_alerts` (sweep) |
//! | `doorbell/{signature}` | claim: a doorbell signature is used once | `intake::webhook` | `retention.counters` (sweep) |
//! | `close/{tenant}/{alert}/{version}` | claim: the close PATCH of one alert version | `respond::close` | `retention.claims` (sweep) |
//! | `close-outcome/{tenant}/{alert}/{version}` | text `failed {status} {message}` of a close Graph refused | `respond::close` | `retention.claims` (sweep) |
//! | `close-started/{tenant}/{alert}/{version}` | the rule id whose close of this version began (set right before the PATCH) | `respond::close` | `retention.claims` (sweep) |
//! | `comment/{tenant}/{alert}/{version}` | claim: the close comment of one alert version | `respond::close` | `retention.claims` (sweep) |
//! | `triage-link/{nonce}` | JSON `{by, action, at}`: a triage page link was used (links are single-use) | `triage::page` | `retention.claims` (sweep) |
//! | `triage/{tenant}/{alert}/{version}/{action}/{user}` | claim: one person's card action on one alert version (a double click acts once) | `triage::act` | `retention.claims` (sweep) |
//! | `breaker/{tenant}/{rule}/{YYYY-MM-DDTHH}` | decimal count of a rule's closes in one tenant in a UTC hour (compare-and-swap) | `respond::close` | `retention.counters` (sweep) |
//! | `breaker-notice/{tenant}/{rule}/{YYYY-MM-DDTHH}` | claim: the owner is told once per rule, tenant and hour | `respond` | `retention.counters` (sweep) |
//! | `audited/{tenant}/{alert}/{version}/{action}` | claim: one audit record per alert version and action | `respond` | `retention.claims` (sweep) |
//! | `notify/{tenant}/{alert}/{version}/{receiver}` | claim: one delivery per alert version and receiver | `notify::deliver` | `retention.claims` (sweep) |
//! | `notify-last/{tenant}/{alert}/{receiver}` | JSON of what the receiver was last told (`realert`) | `notify::deliver` | `retention.claims` (sweep) |
//! | `botcard/{tenant}/{alert}/{receiver}` | JSON of a Teams bot receiver's card of an alert: where it is, the version it shows, the last click's outcome, a post under way (compare-and-swap) | `notify::cards` | `retention.claims` after its last change (sweep) |
//! | `notify-group/{tenant}/{receiver}/{incident}` | JSON group of an incident's alerts (compare-and-swap) | `notify::deliver` | taken over when stale; `retention.claims` after its last change (sweep) |
//! | `notify-budget/{receiver or mailbox}` | JSON send times inside a posting budget's window (compare-and-swap) | `notify::budget` | kept, pruned each send |
//! | `notify-pending/{tenant}/{receiver}` | JSON alerts waiting for a digest, and the digest in flight (compare-and-swap) | `notify::deliver::coalesce` | kept, emptied by each digest |
//! | `notify-digest/{tenant}/{receiver}/{id}` | claim: one digest is sent once | `notify::deliver::coalesce` | `retention.claims` (sweep) |
//! | `receiver-breaker/{receiver}` | JSON circuit breaker of one receiver: failures in a row, paused until, the probe in flight (compare-and-swap) | `notify::deliver::breaker` | kept |
//! | `update/{tenant}/{alert}/{version}/{route}` | claim: a route's `set:` once per alert version | `notify::deliver` | `retention.claims` (sweep) |
//! | `silences/{id}` | JSON of one silence (`secmon silence add`; compare-and-swap when expired or settled) | `notify::silence` | kept until 30 days after it ended and was settled |
//! | `silence-muted/{silence}/{tenant}/{alert}` | JSON of an alert the silence muted, the version and receivers (compare-and-swap) | `notify::silence` | deleted with its silence |
//! | `silence-ended/{silence}` | claim: `silence_expired` is audited once | `notify::silence::expiry` | `retention.claims` (sweep) |
//! | `silence-renotify/{silence}/{tenant}/{alert}/{receiver}` | claim: a muted alert still open is told once when the silence ends | `notify::silence::expiry` | `retention.claims` (sweep) |
//! | `digest-batch/{tenant}/{receiver}/{fire time}` | JSON of the alerts collected for one scheduled digest, sealed with its parts when due (compare-and-swap) | `notify::silence::digest` | kept until 7 days after it was sent |
//! | `digest-member/{tenant}/{alert}/{version}/{receiver}` | the batch key an alert version was collected into (compare-and-swap) | `notify::silence::digest` | `retention.claims` (sweep) |
//! | `digest-send/{tenant}/{receiver}/{fire time}/{part}` | claim: one message of a scheduled digest is sent once | `notify::silence::digest` | `retention.claims` (sweep) |
//! | `ratelimit/mail/{sender}/{YYYYMMDDTHHMM}` | decimal count of mails a sender sent in a minute (compare-and-swap) | `notify::email` | `retention.counters` (sweep) |
//! | stream `audit/{tenant}/{YYYY-MM-DD}/{NNNNNN}` | segment `NNNNNN` (from `000001`, at most 10,000 records) of the hash-chained audit records of a tenant's day, each written at its number once; `audit/{tenant}/{YYYY-MM-DD}` itself: a day written before segments | `audit` | `retention.audit_days` after the day, plus a day (sweep) |
//! | `audit-head/{tenant}/{YYYY-MM-DD}` | JSON head of that day's chain (last seq and hash, pending records, the open segment and its first seq; compare-and-swap) | `audit` | removed with its day (sweep) |
//! | `queue-receipts/{queue}/{message id}` | the current SQS receipt handle of a received message | `store::aws` | until the message is deleted or poisoned; `retention.claims` at most (sweep) |
//! | `sweep/cursor` | JSON of where the sweep goes on (family, last key) | `retention` | kept |
//! | `replay/{tenant}/{rule}` | JSON of the rule's last replay on the tenant: its hash without `mode`, the window, would-close and true-positive counts and ids | `secmon rules replay` (`crate::replay`) | kept, replaced by the next replay of the rule |
//!
//! "Claim" keys live in the claim namespace of the backend ([`super::Store::claim`]), the others are
//! values ([`super::Store::get`]) or streams ([`super::Store::append`]). "Kept" means nothing deletes the
//! key (the family does not grow with the alerts: one key per tenant, receiver or subscription); "(sweep)"
//! means the `sweep` timer removes it once its last write is older than the lifetime named
//! ([`crate::retention`]; the table of lifetimes is in `docs/operations.md`).

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

/// `subscription-creating/{tenant}/{token}`: a subscription of ours is being created (the validation
/// handshake is answered only while one exists).
pub fn subscription_creating(tenant: &str, token: &str) -> String {
    key("subscription-creating", &[tenant, token])
}

/// The prefix of every [`subscription_creating`] marker.
pub const SUBSCRIPTION_CREATING: &str = "subscription-creating/";

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
/// `close-started/{tenant}/{alert}/`: the prefix of every version of the alert whose close began.
pub fn close_started_any(tenant: &str, alert: &str) -> String {
    format!("{}/", key("close-started", &[tenant, alert]))
}

/// the PATCH), so a retry resumes it on the version it was decided on instead of deciding again.
pub fn close_started(tenant: &str, alert: &str, version: &str) -> String {
    key("close-started", &[tenant, alert, version])
}

/// `comment/{tenant}/{alert}/{version}`: the claim of one close comment.
pub fn comment(tenant: &str, alert: &str, version: &str) -> String {
    key("comment", &[tenant, alert, version])
}

/// `triage/{tenant}/{alert}/{version}/{action}/{user}`: the claim of one card action (`acknowledge`,
/// `resolve-benign`, …) by one person (Entra object id) on the alert version the card showed.
pub fn triage(tenant: &str, alert: &str, version: &str, action: &str, user: &str) -> String {
    key("triage", &[tenant, alert, version, action, user])
}

/// `triage-link/{nonce}`: written once when a triage page link is used; a link whose nonce has it is refused.
pub fn triage_link(nonce: &str) -> String {
    key("triage-link", &[nonce])
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

/// `botcard/{tenant}/{alert}/{receiver}`: where a Teams bot receiver's card of an alert is.
pub fn botcard(tenant: &str, alert: &str, receiver: &str) -> String {
    key("botcard", &[tenant, alert, receiver])
}

/// `botcard/{tenant}/{alert}/`: the prefix of every bot card of an alert.
pub fn botcards(tenant: &str, alert: &str) -> String {
    format!("{}/", key("botcard", &[tenant, alert]))
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

/// The prefix of every silence record.
pub fn silences() -> String {
    "silences/".to_string()
}

/// `silences/{id}`: one silence.
pub fn silence(id: &str) -> String {
    key("silences", &[id])
}

/// The prefix of the alerts silence `id` muted.
pub fn silence_muted_all(id: &str) -> String {
    format!("{}/", key("silence-muted", &[id]))
}

/// `silence-muted/{silence}/{tenant}/{alert}`: an alert the silence muted.
pub fn silence_muted(id: &str, tenant: &str, alert: &str) -> String {
    key("silence-muted", &[id, tenant, alert])
}

/// `silence-ended/{silence}`: the claim that audits a silence's end once.
pub fn silence_ended(id: &str) -> String {
    key("silence-ended", &[id])
}

/// `silence-renotify/{silence}/{tenant}/{alert}/{receiver}`: the claim of telling a muted alert once
/// when its silence ends.
pub fn silence_renotify(id: &str, tenant: &str, alert: &str, receiver: &str) -> String {
    key("silence-renotify", &[id, tenant, alert, receiver])
}

/// The prefix of the scheduled digest batches of `receiver` in `tenant`.
pub fn digest_batches(tenant: &str, receiver: &str) -> String {
    format!("{}/", key("digest-batch", &[tenant, receiver]))
}

/// `digest-batch/{tenant}/{receiver}/{fire}`: what one scheduled digest collects.
pub fn digest_batch(tenant: &str, receiver: &str, fire: DateTime<Utc>) -> String {
    key("digest-batch", &[tenant, receiver, &fire.format("%Y-%m-%dT%H:%M:%SZ").to_string()])
}

/// `digest-member/{tenant}/{alert}/{version}/{receiver}`: the batch an alert version was collected into.
pub fn digest_member(tenant: &str, alert: &str, version: &str, receiver: &str) -> String {
    key("digest-member", &[tenant, alert, version, receiver])
}

/// `digest-send/{tenant}/{receiver}/{fire}/{part}`: the claim of sending one message of a digest.
pub fn digest_send(tenant: &str, receiver: &str, fire: DateTime<Utc>, part: usize) -> String {
    key("digest-send", &[tenant, receiver, &fire.format("%Y-%m-%dT%H:%M:%SZ").to_string(), &part.to_string()])
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

/// `replay/{tenant}/{rule}`: the last replay of a close rule on a tenant; `check-config` reads it.
pub fn replay(tenant: &str, rule: &str) -> String {
    key("replay", &[tenant, rule])
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

/// Stream `audit/{tenant}/{day}/{segment}`: segment `segment` (from 1, six digits) of a tenant's day.
/// A day's chain is cut into segments of at most [`crate::audit::SEGMENT_RECORDS`] records, so no stream
/// comes near a backend's limit (50,000 blocks in an Azure append blob). The unsegmented stream
/// [`audit_stream`] itself holds the records written before segments existed (segment 0).
pub fn audit_segment(day: &str, segment: u32) -> String {
    if segment == 0 { day.to_string() } else { format!("{day}/{segment:06}") }
}

/// What a stream name under [`audit_streams`] is: the day's stream (the chain's name, [`audit_stream`]),
/// the UTC day, and the segment (0 for the unsegmented stream of before segments). `None` for a name
/// that is neither.
pub fn audit_stream_parts(stream: &str) -> Option<(String, NaiveDate, u32)> {
    let rest = stream.strip_prefix("audit/")?;
    let mut parts = rest.split('/');
    let tenant = parts.next().filter(|t| !t.is_empty())?;
    let day_text = parts.next()?;
    let day = NaiveDate::parse_from_str(day_text, "%Y-%m-%d").ok()?;
    let segment = match parts.next() {
        None => 0,
        Some(s) if s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok().filter(|n| *n > 0)?,
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((format!("audit/{tenant}/{day_text}"), day, segment))
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
            (botcard("contoso", "da1", "soc"), "botcard/contoso/da1/soc"),
            (botcards("contoso", "da/1"), "botcard/contoso/da%2F1/"),
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
            (audit_segment("audit/contoso/2026-11-26", 3), "audit/contoso/2026-11-26/000003"),
            (close_started_any("contoso", "da1"), "close-started/contoso/da1/"),
            (audit_segment("audit/contoso/2026-11-26", 0), "audit/contoso/2026-11-26"),
            (queue_receipt("alerts", "5fd1-77"), "queue-receipts/alerts/5fd1-77"),
            (replay("contoso", "pentest"), "replay/contoso/pentest"),
            (silence("3f2a"), "silences/3f2a"),
            (silence_muted("3f2a", "contoso", "da1"), "silence-muted/3f2a/contoso/da1"),
            (silence_muted_all("3f2a"), "silence-muted/3f2a/"),
            (silence_ended("3f2a"), "silence-ended/3f2a"),
            (silence_renotify("3f2a", "contoso", "da1", "soc"), "silence-renotify/3f2a/contoso/da1/soc"),
            (digest_batch("contoso", "soc", now), "digest-batch/contoso/soc/2026-11-26T10:42:17Z"),
            (digest_batches("contoso", "soc"), "digest-batch/contoso/soc/"),
            (digest_member("contoso", "da1", v, "soc"), "digest-member/contoso/da1/2026-11-26T10:00:00.123Z/soc"),
            (digest_send("contoso", "soc", now, 1), "digest-send/contoso/soc/2026-11-26T10:42:17Z/1"),
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

    #[test]
    fn audit_stream_names_say_their_day_and_segment() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let stream = audit_stream("a/b", day);
        assert_eq!(audit_stream_parts(&stream), Some((stream.clone(), day, 0)));
        assert_eq!(audit_stream_parts(&audit_segment(&stream, 12)), Some((stream.clone(), day, 12)));
        for bad in ["audit/contoso", "audit/contoso/yesterday", "audit/contoso/2026-11-26/12", "watermark/x/2026-11-26"]
        {
            assert_eq!(audit_stream_parts(bad), None, "{bad}");
        }
    }
}
