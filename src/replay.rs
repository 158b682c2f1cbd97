//! `secmon rules replay` and `secmon rules suggest` end to end: read a tenant's alert history from Graph
//! ([`crate::intake::history`], read-only, within the Graph client's request budget), judge it
//! ([`crate::rules::replay`], [`crate::rules::suggest`]), store each rule's result under
//! `replay/{tenant}/{rule}` ([`crate::store::keys::replay`]), and tell `check-config` which enforce rules
//! replay does not support ([`enforcement_issues`]).

use chrono::{DateTime, Utc};

use crate::app::App;
use crate::config::{Config, Issue};
use crate::intake::history::{self, Progress, Walked};
use crate::rules::replay::{Replay, ReplayError, ReplayRecord, ReplayReport, Stored};
use crate::rules::suggest::{Suggester, Suggestion};
use crate::store::{Store, keys};

/// Why a replay or suggestion run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not a configured tenant.
    #[error("no tenant named {0:?} in the config")]
    UnknownTenant(String),
    /// The rules cannot be replayed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// Reading the history failed (after the client's retries).
    #[error("reading the alert history of {tenant}: {source}")]
    Graph {
        /// Tenant name.
        tenant: String,
        /// The Graph error.
        source: crate::graph::GraphError,
    },
    /// Storing the result failed.
    #[error("storing the replay of {tenant}: {message}")]
    Store {
        /// Tenant name.
        tenant: String,
        /// What happened.
        message: String,
    },
}

/// Parses `--since`: a duration back from `now` (`30d`, `12h`), a date (`2026-11-01`, midnight UTC) or
/// an RFC 3339 time.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    let back = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither a duration (30d, 12h), a date (2026-11-01) nor an RFC 3339 time"))?;
    let back = chrono::Duration::from_std(back).map_err(|_| format!("{text:?} is too long ago"))?;
    Ok(now - back)
}

/// One tenant's replay: the report and what reading the history cost.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// What replay found.
    pub report: ReplayReport,
    /// The walk's pages, requests and waits.
    pub walked: Walked,
}

/// Replays the close rules (every one, or `only`) on `tenant`'s alerts created in `[since, until)`, and
/// stores each rule's record (`replay/{tenant}/{rule}`, stamped `until`).
pub async fn replay_tenant(
    app: &App,
    tenant: &str,
    only: Option<&str>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<Replayed, RunError> {
    if app.config.tenant(tenant).is_none() {
        return Err(RunError::UnknownTenant(tenant.to_string()));
    }
    let mut replay = Replay::new(&app.config, only, tenant, since, until)?;
    let page = app.config.poll.page_size();
    let walked =
        history::walk(app.graph.as_ref(), tenant, since, until, page, progress, &mut |alert| replay.observe(&alert))
            .await
            .map_err(|source| RunError::Graph { tenant: tenant.to_string(), source })?;
    let report = replay.finish();
    for record in report.records(until) {
        let value = serde_json::to_vec(&record).expect("records serialize");
        app.store
            .put(&keys::replay(tenant, &record.rule), &value)
            .await
            .map_err(|e| RunError::Store { tenant: tenant.to_string(), message: e.to_string() })?;
    }
    Ok(Replayed { report, walked })
}

/// The detectors analysts resolved as benign at least `min_benign` times in `[since, until)`, most first
/// (at most `top`), each with a draft shadow rule. Writes nothing.
pub async fn suggest_tenant(
    app: &App,
    tenant: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    min_benign: usize,
    top: usize,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<(Vec<Suggestion>, Walked), RunError> {
    if app.config.tenant(tenant).is_none() {
        return Err(RunError::UnknownTenant(tenant.to_string()));
    }
    let mut suggester = Suggester::new(tenant);
    let page = app.config.poll.page_size();
    let walked =
        history::walk(app.graph.as_ref(), tenant, since, until, page, progress, &mut |alert| suggester.observe(&alert))
            .await
            .map_err(|source| RunError::Graph { tenant: tenant.to_string(), source })?;
    Ok((suggester.finish(min_benign, top, until), walked))
}

/// `check-config`'s findings about enforce rules without a supporting replay (see
/// [`crate::rules::replay::enforcement_issues`]), read from `store`. A store that cannot be read counts
/// as "never replayed" and says why.
pub async fn enforcement_issues(config: &Config, store: &dyn Store) -> Vec<Issue> {
    let mut stored = std::collections::HashMap::new();
    for rule in config.close_rules.iter().filter(|r| r.mode == crate::rules::Mode::Enforce) {
        for tenant in &config.tenants {
            let key = keys::replay(&tenant.name, &rule.id);
            let found: Stored = match store.get(&key).await {
                Ok(None) => None,
                Ok(Some(v)) => Some(serde_json::from_slice::<ReplayRecord>(&v.value).map_err(|e| e.to_string())),
                Err(e) => Some(Err(format!("store: {e}"))),
            };
            stored.insert((tenant.name.clone(), rule.id.clone()), found);
        }
    }
    crate::rules::replay::enforcement_issues(config, &|t, r| {
        stored.get(&(t.to_string(), r.to_string())).cloned().flatten()
    })
}
