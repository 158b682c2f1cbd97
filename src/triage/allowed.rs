//! Who may act, checked on the worker for every click before anything changes: the person is listed in
//! `users` (object id or UPN: [`AllowList`]), else a member of one of `groups` (transitively), as Graph's
//! `POST /users/{id}/checkMemberGroups` answers with the credential of the alert's tenant.
//!
//! The edge cannot ask Graph (it holds no Graph credential), so the group check is here. Answers are
//! cached in the process for [`MEMBERSHIP_TTL`]: a burst of clicks asks Graph once, and a person removed
//! from a group may still act for at most that long.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::act::Actor;
use super::inbound::AllowList;
use crate::app::App;
use crate::config::triage::AllowedConfig;
use crate::graph::Retry;
use crate::respond::RespondError;

/// How long a group check's answer is reused.
pub const MEMBERSHIP_TTL: Duration = Duration::from_secs(5 * 60);

/// Why a person may act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Listed in `users`.
    Listed,
    /// A member of this group of `groups`.
    Member(String),
}

/// (tenant, object id, the groups asked, comma-joined).
type Asked = (String, String, String);
/// (the group that matched, if one did; when Graph said so).
type Answer = (Option<String>, DateTime<Utc>);

/// The group checks of this process.
#[derive(Debug, Default)]
pub struct Memberships {
    answers: Mutex<HashMap<Asked, Answer>>,
}

impl Memberships {
    fn get(&self, key: &Asked, now: DateTime<Utc>) -> Option<Option<String>> {
        let ttl = chrono::Duration::from_std(MEMBERSHIP_TTL).expect("ttl fits");
        let answers = self.answers.lock().expect("membership cache lock");
        answers.get(key).filter(|(_, at)| now - *at < ttl).map(|(group, _)| group.clone())
    }

    fn put(&self, key: Asked, group: Option<String>, now: DateTime<Utc>) {
        let ttl = chrono::Duration::from_std(MEMBERSHIP_TTL).expect("ttl fits");
        let mut answers = self.answers.lock().expect("membership cache lock");
        answers.retain(|_, (_, at)| now - *at < ttl);
        answers.insert(key, (group, now));
    }
}

/// Whether `actor` may act on an alert of `tenant` under `allowed`: `Ok(None)` is a refusal. A group check
/// Graph cannot answer now is [`RespondError::Retry`]; one it refuses (the `GroupMember.Read.All`
/// permission is missing) is unprocessable, with the reason, so the click waits on the poison queue.
pub async fn check(
    app: &App,
    allowed: &AllowedConfig,
    tenant: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Option<Allowed>, RespondError> {
    if AllowList(allowed.users.clone()).allows(actor) {
        return Ok(Some(Allowed::Listed));
    }
    if allowed.groups.is_empty() {
        return Ok(None);
    }
    let key = (tenant.to_string(), actor.aad_object_id.to_ascii_lowercase(), allowed.groups.join(","));
    let cache = &app.triage.memberships;
    if let Some(group) = cache.get(&key, now) {
        return Ok(group.map(Allowed::Member));
    }
    let matched = match app.graph.check_member_groups(tenant, &actor.aad_object_id, &allowed.groups).await {
        Ok(matched) => matched,
        // The person is not a user of the alert's tenant (another tenant's, a guest under another id).
        Err(e) if e.status == Some(404) => Vec::new(),
        Err(e) => {
            let text = format!(
                "checking the groups of {} in tenant {tenant} (needs GroupMember.Read.All): {}",
                actor.aad_object_id,
                crate::redact::redact(&e.to_string())
            );
            return Err(match e.retry {
                Retry::Retryable => RespondError::Retry(text),
                Retry::Permanent => RespondError::Malformed(text),
            });
        }
    };
    let group = allowed.groups.iter().find(|g| matched.iter().any(|m| m.eq_ignore_ascii_case(g))).cloned();
    cache.put(key, group.clone(), now);
    Ok(group.map(Allowed::Member))
}
