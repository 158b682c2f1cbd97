//! `secmon silence add / query / expire / preview`: what the commands do, as library functions that
//! print JSON lines (each an object with a `kind`), so `main.rs` only parses arguments.

use std::collections::BTreeMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::expiry::{Settled, settle};
use super::{Silence, audit, matches_high, read_all};
use crate::app::App;
use crate::audit::{Action, Record};
use crate::graph::AlertQuery;
use crate::rules::check::references;
use crate::rules::expr::{self, Expression};
use crate::store::{Change, Precondition, StoreError, keys};

/// Most alerts `preview` reads from Graph per tenant.
pub const PREVIEW_LIMIT: usize = 5_000;

/// What `secmon silence add` was given.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    /// The CEL matcher.
    pub when: String,
    /// How long it lasts.
    pub duration: std::time::Duration,
    /// When it starts (default now).
    pub starts_at: Option<DateTime<Utc>>,
    /// Why (required).
    pub comment: String,
    /// Who makes it.
    pub created_by: String,
    /// Only these receivers (default all).
    pub receivers: Vec<String>,
    /// Only this tenant (default all).
    pub tenant: Option<String>,
    /// Only while one of these windows holds.
    pub active_during: Vec<String>,
}

/// Checks a matcher as a route's `when` is checked at load: it compiles within the caps and names only
/// what exists.
pub fn compile(when: &str) -> Result<Expression, String> {
    let compiled = Expression::compile(&expr::env(), when)?;
    let problems = references(&compiled);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(compiled)
}

/// The warnings about a matcher: one that mutes every high-severity alert.
pub fn warnings(when: &str) -> Vec<String> {
    if matches_high(&expr::env(), Some(when)) {
        vec!["this silence mutes every high-severity alert it covers: is that meant?".to_string()]
    } else {
        Vec::new()
    }
}

/// Makes a silence: checked (matcher, duration within `silences.max_duration`, a comment, receivers,
/// tenant and windows that exist), stored, audited `silence_created`. Returns it with its warnings.
pub async fn add(app: &App, new: NewSilence, now: DateTime<Utc>) -> Result<(Silence, Vec<String>), String> {
    compile(&new.when).map_err(|e| format!("--when: {e}"))?;
    if new.comment.trim().is_empty() {
        return Err("--comment: say why (it is shown with every muted delivery)".into());
    }
    let max = app.config.silences.max_duration;
    if new.duration.is_zero() || new.duration > max {
        return Err(format!(
            "--for {}: a silence lasts from 1s up to silences.max_duration ({})",
            humantime::format_duration(new.duration),
            humantime::format_duration(max)
        ));
    }
    for r in &new.receivers {
        if !app.config.receivers.contains_key(r) {
            return Err(format!("--receiver {r:?}: no such receiver in the config"));
        }
    }
    if let Some(t) = &new.tenant
        && app.config.tenant(t).is_none()
    {
        return Err(format!("--tenant {t:?}: no such tenant in the config"));
    }
    for w in &new.active_during {
        if app.mute.intervals.get(w).is_none() {
            return Err(format!("--active-during {w:?}: no such time interval in the config"));
        }
    }
    let starts_at = new.starts_at.unwrap_or(now);
    let ends_at = starts_at + chrono::Duration::from_std(new.duration).map_err(|e| e.to_string())?;
    let silence = Silence {
        id: uuid::Uuid::new_v4().simple().to_string(),
        when: new.when.clone(),
        starts_at,
        ends_at,
        created_by: new.created_by,
        comment: new.comment,
        created_at: now,
        receivers: new.receivers,
        tenant: new.tenant,
        active_during: new.active_during,
        expired_by: None,
        settled: false,
    };
    let bytes = serde_json::to_vec(&silence).expect("JSON");
    app.store.put_if(&keys::silence(&silence.id), &bytes, Precondition::Absent).await.map_err(|e| e.to_string())?;
    app.mute.forget();
    let detail = json!({
        "when": silence.when, "starts_at": silence.starts_at, "ends_at": silence.ends_at,
        "created_by": silence.created_by, "comment": silence.comment, "receivers": silence.receivers,
        "active_during": silence.active_during,
    });
    let record =
        Record { detail: detail.to_string(), ..Record::new(&silence.audit_id(), &silence.id, Action::SilenceCreated) };
    audit(app, &silence, now, record).await;
    Ok((silence.clone(), warnings(&silence.when)))
}

/// Which silences `query` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Active and pending (not ended yet).
    Active,
    /// Ended.
    Expired,
    /// All.
    All,
}

/// The silences `filter` selects, as JSON objects with `kind: "silence"` and their `state` at `now`.
pub async fn query(app: &App, filter: Filter, now: DateTime<Utc>) -> Result<Vec<Value>, StoreError> {
    let mut out = Vec::new();
    for s in read_all(app.store.as_ref()).await? {
        let state = s.state(now);
        let keep = match filter {
            Filter::Active => state != "expired",
            Filter::Expired => state == "expired",
            Filter::All => true,
        };
        if keep {
            let mut v = json!({"kind": "silence", "state": state});
            if let (Value::Object(o), Value::Object(fields)) = (&mut v, serde_json::to_value(&s).expect("JSON")) {
                o.extend(fields);
            }
            v["problems"] = json!(problems(app, &s));
            out.push(v);
        }
    }
    Ok(out)
}

/// What is wrong with a stored silence under the config in force (it was checked when it was made,
/// but the config may have changed since): a matcher that no longer compiles mutes nothing; a receiver,
/// tenant or window that is gone; and the warning about muting every high-severity alert.
pub fn problems(app: &App, s: &Silence) -> Vec<String> {
    let mut out = Vec::new();
    if let Err(e) = compile(&s.when) {
        out.push(format!("when: {e}; it mutes nothing"));
    }
    for r in s.receivers.iter().filter(|r| !app.config.receivers.contains_key(*r)) {
        out.push(format!("receiver {r:?} is not in the config"));
    }
    if let Some(t) = s.tenant.as_deref().filter(|t| app.config.tenant(t).is_none()) {
        out.push(format!("tenant {t:?} is not in the config"));
    }
    for w in s.active_during.iter().filter(|w| app.mute.intervals.get(w).is_none()) {
        out.push(format!("time interval {w:?} is not in the config; it never holds"));
    }
    out.extend(warnings(&s.when));
    out
}

/// Ends silence `id` now (`by` says who), then settles it at once: `silence_expired` audited, the
/// alerts it muted that are still open told.
pub async fn expire(app: &App, id: &str, by: &str, now: DateTime<Utc>) -> Result<Settled, String> {
    let key = keys::silence(id);
    let ended = crate::store::update(app.store.as_ref(), &key, |current| {
        let Some(mut s) = current.and_then(|v| serde_json::from_slice::<Silence>(v).ok()) else {
            return Change::Keep(Err(format!("no silence {id:?}")));
        };
        if s.ends_at <= now {
            return Change::Keep(Ok(s));
        }
        // A pending silence ends before it began: it never muted anything.
        s.starts_at = s.starts_at.min(now);
        s.ends_at = now;
        s.expired_by = Some(by.to_string());
        Change::Put(serde_json::to_vec(&s).expect("JSON"), Ok(s))
    })
    .await
    .map_err(|e| e.to_string())??;
    app.mute.forget();
    settle(app, &ended, now).await.map_err(|e| e.to_string())
}

/// Writes, as JSON lines, every alert updated since `since` that `when` would mute (read-only from
/// Graph; nothing is changed), with the receivers the audit trail says were told about it, then a
/// summary line. Returns how many would be muted.
pub async fn preview(
    app: &App,
    when: &str,
    tenant: Option<&str>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<usize, String> {
    let matcher = compile(when).map_err(|e| format!("--when: {e}"))?;
    for w in warnings(when) {
        writeln!(out, "{}", json!({"kind": "warning", "message": w})).map_err(|e| e.to_string())?;
    }
    let helpers = expr::Helpers::new(expr::env());
    let (mut checked, mut matched) = (0usize, 0usize);
    let mut truncated = Vec::new();
    for t in app.config.tenants.iter().filter(|t| tenant.is_none_or(|only| only == t.name)) {
        let told = told_since(app, &t.name, since).await.map_err(|e| e.to_string())?;
        let query = AlertQuery {
            filter: format!("lastUpdateDateTime ge {}", since.format("%Y-%m-%dT%H:%M:%SZ")),
            orderby: None,
            top: None,
        };
        let mut page = app.graph.list_alerts(&t.name, &query).await.map_err(|e| e.to_string())?;
        let mut seen = 0usize;
        loop {
            for raw in &page.values() {
                seen += 1;
                let cx = helpers.scope(raw, &t.name, now);
                if matcher.matches(&cx).unwrap_or(false) {
                    matched += 1;
                    let id = raw["id"].as_str().unwrap_or_default();
                    let line = json!({
                        "kind": "alert", "tenant": t.name, "id": id, "title": raw["title"],
                        "severity": raw["severity"], "status": raw["status"], "updated": raw["lastUpdateDateTime"],
                        "told": told.get(id).cloned().unwrap_or_default(),
                    });
                    writeln!(out, "{line}").map_err(|e| e.to_string())?;
                }
            }
            let next = page.next_link.take();
            match next {
                Some(link) if seen < PREVIEW_LIMIT => {
                    page = app.graph.next_alerts(&t.name, &link).await.map_err(|e| e.to_string())?
                }
                Some(_) => {
                    truncated.push(t.name.clone());
                    break;
                }
                None => break,
            }
        }
        checked += seen;
    }
    let summary = json!({
        "kind": "summary", "since": since, "checked": checked, "would_mute": matched,
        "truncated": truncated, "changed": false,
    });
    writeln!(out, "{summary}").map_err(|e| e.to_string())?;
    Ok(matched)
}

/// The receivers told about each alert of `tenant` since `since`, from the audit trail (the days since
/// `since` only, read as stored).
async fn told_since(
    app: &App,
    tenant: &str,
    since: DateTime<Utc>,
) -> Result<BTreeMap<String, Vec<String>>, crate::store::StoreError> {
    let store = app.store.as_ref();
    let mut told: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for day in crate::audit::days(store, Some(tenant)).await?.into_iter().filter(|d| d.date >= since.date_naive()) {
        for raw in day.records(store).await? {
            let Ok(r) = serde_json::from_slice::<Record>(&raw) else { continue };
            let recent = DateTime::parse_from_rfc3339(&r.time).is_ok_and(|t| t >= since);
            if let (Action::Notify, Some(receiver), true) = (r.action, r.receiver, recent) {
                let list = told.entry(r.alert_id).or_default();
                if !list.contains(&receiver) {
                    list.push(receiver);
                }
            }
        }
    }
    Ok(told)
}
