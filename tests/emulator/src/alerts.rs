//! `/security/alerts_v2`: list with `$filter`/`$top`/`$skip`/`$skiptoken`, get, PATCH and comments.
//!
//! Paging: the first page snapshots the ordered ids of every matching alert on the server and
//! hands out `$skiptoken`s that point into that snapshot. Later pages return the *current* state
//! of the snapshotted alerts, so every alert that matched at the first page is returned exactly
//! once even when alerts are updated (and would re-sort) between pages. Real Graph documents only
//! that `@odata.nextLink` is to be followed as an opaque URL; its doc example shows offset paging
//! (`$top=100&$skip=200`), under which an update between pages can repeat or skip an alert. The
//! snapshot is the kind behaviour; clients must still dedupe and rely on their overlap window.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::state::{
    ALERT_READ_ROLES, ALERT_WRITE_ROLES, AppState, CommentShape, Cursor, Inner, OrderBy, Paging, ServerOrder,
    alert_time, fmt_time, graph_error, json_response, json_text_response, parse_time, random_string,
};

/// Largest `$top` accepted.
pub(crate) const MAX_TOP: usize = 2000;
/// Snapshots older than this are forgotten (their skiptokens then answer 400).
const CURSOR_TTL: Duration = Duration::from_secs(3600);

pub(crate) const STATUS: &[&str] = &["unknown", "new", "inProgress", "resolved", "unknownFutureValue"];
pub(crate) const SEVERITY: &[&str] = &["unknown", "informational", "low", "medium", "high", "unknownFutureValue"];
pub(crate) const CLASSIFICATION: &[&str] =
    &["unknown", "falsePositive", "truePositive", "informationalExpectedActivity", "unknownFutureValue"];
/// Determination values as the v1.0 metadata sends them (not the stale names on the PATCH page).
pub(crate) const DETERMINATION: &[&str] = &[
    "unknown",
    "apt",
    "malware",
    "securityPersonnel",
    "securityTesting",
    "unwantedSoftware",
    "other",
    "multiStagedAttack",
    "compromisedAccount",
    "phishing",
    "maliciousUserActivity",
    "notMalicious",
    "notEnoughDataToValidate",
    "confirmedActivity",
    "lineOfBusinessApplication",
    "unknownFutureValue",
];
/// serviceSource members up to `unknownFutureValue`; anything else is evolvable.
pub(crate) const SERVICE_SOURCE: &[&str] = &[
    "unknown",
    "microsoftDefenderForEndpoint",
    "microsoftDefenderForIdentity",
    "microsoftDefenderForCloudApps",
    "microsoftDefenderForOffice365",
    "microsoft365Defender",
    "azureAdIdentityProtection",
    "microsoftAppGovernance",
    "dataLossPrevention",
    "unknownFutureValue",
];
/// The evolvable serviceSource members of v1.0.
pub(crate) const SERVICE_SOURCE_EVOLVABLE: &[&str] = &["microsoftDefenderForCloud", "microsoftSentinel"];
/// detectionSource members up to `unknownFutureValue`; anything else is evolvable.
const DETECTION_SOURCE: &[&str] = &[
    "unknown",
    "microsoftDefenderForEndpoint",
    "antivirus",
    "smartScreen",
    "customTi",
    "microsoftDefenderForOffice365",
    "automatedInvestigation",
    "microsoftThreatExperts",
    "customDetection",
    "microsoftDefenderForIdentity",
    "cloudAppSecurity",
    "microsoft365Defender",
    "azureAdIdentityProtection",
    "manual",
    "microsoftDataLossPrevention",
    "appGovernancePolicy",
    "appGovernanceDetection",
    "unknownFutureValue",
];
/// Evidence remediationStatus members up to `unknownFutureValue`.
const REMEDIATION_STATUS: &[&str] = &["none", "remediated", "prevented", "blocked", "notFound", "unknownFutureValue"];

const PREFER_UNKNOWN_ENUMS: &str = "include-unknown-enum-members";

/// Whether the request sent `Prefer: include-unknown-enum-members` (possibly among other preferences).
fn wants_unknown_enums(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(PREFER_UNKNOWN_ENUMS))))
}

/// Replaces evolvable enum members by `unknownFutureValue`, as Graph does without the Prefer header.
fn mask_evolvable(alert: &mut Value) {
    fn mask(v: &mut Value, field: &str, known: &[&str]) {
        if let Some(s) = v.get(field).and_then(Value::as_str)
            && !known.contains(&s)
        {
            v[field] = json!("unknownFutureValue");
        }
    }
    mask(alert, "serviceSource", SERVICE_SOURCE);
    mask(alert, "detectionSource", DETECTION_SOURCE);
    if let Some(evidence) = alert.get_mut("evidence").and_then(Value::as_array_mut) {
        for e in evidence {
            mask(e, "remediationStatus", REMEDIATION_STATUS);
        }
    }
}

/// Prepares a stored alert for the wire, masking evolvable enums unless the Prefer header asks for them
/// (then the stored alert goes out as it is, borrowed: a page of a thousand alerts is serialized
/// straight from the store, not copied first).
fn present<'a>(alert: &'a Value, headers: &HeaderMap) -> Cow<'a, Value> {
    if wants_unknown_enums(headers) {
        return Cow::Borrowed(alert);
    }
    let mut alert = alert.clone();
    mask_evolvable(&mut alert);
    Cow::Owned(alert)
}

/// One page of a list, in the order Graph writes its members.
#[derive(Serialize)]
struct ListPage<'a> {
    #[serde(rename = "@odata.context")]
    context: String,
    #[serde(rename = "@odata.count", skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    value: Vec<Cow<'a, Value>>,
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

/// Adds `Preference-Applied` when the request asked for unknown enum members.
fn with_preference(mut resp: Response, headers: &HeaderMap) -> Response {
    if wants_unknown_enums(headers) {
        resp.headers_mut().insert("preference-applied", HeaderValue::from_static(PREFER_UNKNOWN_ENUMS));
    }
    resp
}

fn bad_filter() -> Response {
    graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid filter clause")
}

/// One comparison of a `$filter`.
#[derive(Debug)]
enum Clause {
    Time { field: String, op: String, at: DateTime<Utc> },
    Str { field: String, negate: bool, value: Option<String> },
}

impl Clause {
    fn matches(&self, alert: &Value) -> bool {
        match self {
            Clause::Time { field, op, at } => {
                let Some(t) = alert_time(alert, field) else {
                    return false;
                };
                match op.as_str() {
                    "ge" => t >= *at,
                    "gt" => t > *at,
                    "le" => t <= *at,
                    "lt" => t < *at,
                    "eq" => t == *at,
                    _ => t != *at,
                }
            }
            Clause::Str { field, negate, value } => {
                let actual = alert.get(field).and_then(Value::as_str);
                (actual == value.as_deref()) != *negate
            }
        }
    }
}

/// Splits a filter into words and `'quoted'` literals (with `''` as an escaped quote).
fn tokenize(filter: &str) -> Option<Vec<(String, bool)>> {
    let mut tokens = Vec::new();
    let mut chars = filter.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next()? {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    '\'' => break,
                    other => s.push(other),
                }
            }
            tokens.push((s, true));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '\'' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            tokens.push((s, false));
        }
    }
    Some(tokens)
}

/// Parses `field op value [and field op value]…` for the properties alerts_v2 can filter on.
fn parse_filter(filter: &str) -> Option<Vec<Clause>> {
    let tokens = tokenize(filter)?;
    let mut clauses = Vec::new();
    let mut i = 0;
    loop {
        let [(field, false), (op, false), (value, quoted)] = tokens.get(i..i + 3)? else {
            return None;
        };
        let clause = match field.as_str() {
            "lastUpdateDateTime" | "createdDateTime" => {
                if *quoted || !["ge", "gt", "le", "lt", "eq", "ne"].contains(&op.as_str()) {
                    return None;
                }
                Clause::Time { field: field.clone(), op: op.clone(), at: parse_time(value)? }
            }
            "status" | "severity" | "serviceSource" | "classification" | "determination" | "assignedTo" => {
                let negate = match op.as_str() {
                    "eq" => false,
                    "ne" => true,
                    _ => return None,
                };
                let value = if *quoted {
                    Some(value.clone())
                } else if value == "null" {
                    None
                } else {
                    return None;
                };
                // Enum literals are case-sensitive: `status eq 'New'` is "Invalid filter clause".
                let members: Option<Vec<&str>> = match field.as_str() {
                    "status" => Some(STATUS.to_vec()),
                    "severity" => Some(SEVERITY.to_vec()),
                    "classification" => Some(CLASSIFICATION.to_vec()),
                    "determination" => Some(DETERMINATION.to_vec()),
                    "serviceSource" => Some([SERVICE_SOURCE, SERVICE_SOURCE_EVOLVABLE].concat()),
                    _ => None,
                };
                if let (Some(members), Some(v)) = (members, value.as_deref())
                    && !members.contains(&v)
                {
                    return None;
                }
                Clause::Str { field: field.clone(), negate, value }
            }
            _ => return None,
        };
        clauses.push(clause);
        i += 3;
        match tokens.get(i) {
            None => return Some(clauses),
            Some((and, false)) if and.eq_ignore_ascii_case("and") => i += 1,
            Some(_) => return None,
        }
    }
}

/// Orders alerts most recent first by lastUpdateDateTime, then by id.
pub(crate) fn sort_recent_first(alerts: &mut [&Value]) {
    alerts.sort_by_cached_key(|a: &&Value| {
        let a: &Value = a;
        (std::cmp::Reverse(alert_time(a, "lastUpdateDateTime")), id_of(a))
    });
}

fn id_of(alert: &Value) -> &str {
    alert.get("id").and_then(Value::as_str).unwrap_or("")
}

/// An `$orderby` the emulator understands: a time field and a direction.
#[derive(Clone, Debug, PartialEq)]
struct Sort {
    field: String,
    descending: bool,
}

fn parse_orderby(value: &str) -> Option<Sort> {
    let mut words = value.split_whitespace();
    let field = words.next()?;
    if !["lastUpdateDateTime", "createdDateTime"].contains(&field) {
        return None;
    }
    let descending = match words.next() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => return None,
    };
    words.next().is_none().then(|| Sort { field: field.to_string(), descending })
}

/// The ids of a tenant's alerts matching `clauses`, in the order the listing gives them.
fn matching_ids(inner: &Inner, tenant: &str, clauses: &[Clause], sort: Option<&Sort>) -> Vec<String> {
    let mut matching: Vec<&Value> = inner
        .alerts
        .get(tenant)
        .map(|m| m.values().filter(|a| clauses.iter().all(|c| c.matches(a))).collect())
        .unwrap_or_default();
    let honoured = sort.filter(|_| inner.listing.orderby == OrderBy::Honoured);
    match (honoured, inner.listing.order) {
        // Each alert's time is read once, not in every comparison (a listing of 10,000 alerts parsed
        // a time string some 280,000 times, more CPU than the client it answered).
        (Some(s), _) => {
            matching.sort_by_cached_key(|a: &&Value| {
                let a: &Value = a;
                (alert_time(a, &s.field), id_of(a))
            });
            if s.descending {
                matching.reverse();
            }
        }
        (None, ServerOrder::RecentFirst) => sort_recent_first(&mut matching),
        (None, ServerOrder::OldestFirst) => {
            sort_recent_first(&mut matching);
            matching.reverse();
        }
        (None, ServerOrder::ById) => matching.sort_by(|a, b| id_of(a).cmp(id_of(b))),
    }
    matching.iter().map(|a| id_of(a).to_string()).collect()
}

fn encode_skiptoken(cursor: &str, offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(json!({"c": cursor, "o": offset}).to_string())
}

fn decode_skiptoken(token: &str) -> Option<(String, usize)> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    Some((v["c"].as_str()?.to_string(), v["o"].as_u64()? as usize))
}

/// Upserts the next batch of between-pages changes for `tenant`, if any.
fn change_after_page(inner: &mut Inner, tenant: &str) {
    let Some(batch) = inner.between_pages.get_mut(tenant).and_then(|q| q.pop_front()) else { return };
    let alerts = inner.alerts.entry(tenant.to_string()).or_default();
    for alert in batch {
        if let Some(id) = alert.get("id").and_then(Value::as_str) {
            alerts.insert(id.to_string(), alert);
        }
    }
}

/// `GET /v1.0/security/alerts_v2`.
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let token = match state.authorize(&headers, &ALERT_READ_ROLES) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let orderby_refused = state.lock().listing.orderby == OrderBy::Refused;
    for key in params.keys() {
        let supported = ["$filter", "$top", "$skip", "$skiptoken", "$count"].contains(&key.as_str())
            || (key == "$orderby" && !orderby_refused);
        if key.starts_with('$') && !supported {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Query option '{key}' is not allowed. Supported: $count, $filter, $skip, $top."),
            );
        }
    }
    let sort = match params.get("$orderby").map(|v| parse_orderby(v)) {
        Some(None) => {
            return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid $orderby expression.");
        }
        Some(Some(s)) => Some(s),
        None => None,
    };
    let number = |name: &str| -> Result<Option<usize>, Response> {
        params
            .get(name)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    graph_error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("Invalid value '{v}' for query option '{name}'."),
                    )
                })
            })
            .transpose()
    };
    let (top, skip) = match (number("$top"), number("$skip")) {
        (Ok(t), Ok(s)) => (t, s.unwrap_or(0)),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    if top.is_some_and(|t| t == 0 || t > MAX_TOP) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("The value of $top must be between 1 and {MAX_TOP}."),
        );
    }
    let graph = state.graph_url();
    let mut count = None;

    let (page_ids, next): (Vec<String>, Option<String>) = if let Some(skiptoken) = params.get("$skiptoken") {
        let mut inner = state.lock();
        let found = decode_skiptoken(skiptoken).and_then(|(c, o)| {
            let cursor = inner.cursors.get(&c)?;
            (cursor.tenant == token.tenant && (cursor.offset_paging || o <= cursor.ids.len())).then_some((c, o))
        });
        let Some((cursor_id, offset)) = found else {
            drop(inner);
            return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "The $skiptoken is invalid or has expired.");
        };
        let cursor = &inner.cursors[&cursor_id];
        let ids = if cursor.offset_paging {
            // Offset paging runs the query again, on the alerts as they are now.
            let clauses = parse_filter(&cursor.filter).unwrap_or_default();
            let sort = cursor.orderby.as_deref().and_then(parse_orderby);
            matching_ids(&inner, &token.tenant, &clauses, sort.as_ref())
        } else {
            cursor.ids.clone()
        };
        let page = cursor.page;
        let start = offset.min(ids.len());
        let end = (offset + page).min(ids.len());
        let page_ids = ids[start..end].to_vec();
        let next = (end < ids.len()).then(|| encode_skiptoken(&cursor_id, end));
        if next.is_none() {
            inner.cursors.remove(&cursor_id);
        }
        (page_ids, next)
    } else {
        let filter = params.get("$filter").cloned().unwrap_or_default();
        let clauses = match params.get("$filter") {
            Some(f) => match parse_filter(f) {
                Some(c) => c,
                None => return bad_filter(),
            },
            None => Vec::new(),
        };
        let page = top.unwrap_or(state.page_size).max(1);
        let mut inner = state.lock();
        let ids = matching_ids(&inner, &token.tenant, &clauses, sort.as_ref());
        if params.get("$count").is_some_and(|c| c == "true") {
            count = Some(ids.len());
        }
        let ids: Vec<String> = ids.into_iter().skip(skip).collect();
        if ids.len() <= page {
            (ids, None)
        } else {
            inner.cursors.retain(|_, c| c.created.elapsed() < CURSOR_TTL);
            let cursor_id = random_string(16);
            let first = ids[..page].to_vec();
            let offset_paging = inner.listing.paging == Paging::Offset;
            let cursor = Cursor {
                tenant: token.tenant.clone(),
                ids: if offset_paging { Vec::new() } else { ids },
                page,
                created: Instant::now(),
                offset_paging,
                filter,
                orderby: params.get("$orderby").cloned(),
            };
            inner.cursors.insert(cursor_id.clone(), cursor);
            (first, Some(encode_skiptoken(&cursor_id, page + skip * usize::from(offset_paging))))
        }
    };

    let body = {
        let mut inner = state.lock();
        let alerts = inner.alerts.get(&token.tenant);
        let page = ListPage {
            context: format!("{graph}/$metadata#security/alerts_v2"),
            count,
            value: page_ids
                .iter()
                .filter_map(|id| alerts.and_then(|m| m.get(id)))
                .map(|a| present(a, &headers))
                .collect(),
            next_link: next.map(|next| format!("{graph}/security/alerts_v2?$skiptoken={next}")),
        };
        let body = serde_json::to_string(&page).expect("a page of JSON values serializes");
        change_after_page(&mut inner, &token.tenant);
        body
    };
    with_preference(json_text_response(StatusCode::OK, body), &headers)
}

fn not_found(id: &str) -> Response {
    graph_error(StatusCode::NOT_FOUND, "NotFound", &format!("Alert '{id}' was not found."))
}

/// The alert with `@odata.context` first, as Graph writes a single entity.
fn entity(state: &AppState, mut alert: Value, headers: &HeaderMap) -> Response {
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(format!("{}/$metadata#security/alerts_v2/$entity", state.graph_url())));
    // The caller's copy is masked in place: no second copy of the alert.
    if !wants_unknown_enums(headers) {
        mask_evolvable(&mut alert);
    }
    if let Value::Object(fields) = alert {
        body.extend(fields);
    }
    with_preference(json_response(StatusCode::OK, &Value::Object(body)), headers)
}

/// `GET /v1.0/security/alerts_v2/{id}`.
pub(crate) async fn get(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let token = match state.authorize(&headers, &ALERT_READ_ROLES) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let alert = state.lock().alerts.get(&token.tenant).and_then(|m| m.get(&id)).cloned();
    match alert {
        Some(a) => entity(&state, a, &headers),
        None => not_found(&id),
    }
}

fn invalid_body(message: &str) -> Response {
    graph_error(StatusCode::BAD_REQUEST, "InvalidRequestBody", message)
}

/// Checks a PATCH body: only the four documented properties, with valid enum members.
fn validate_patch(body: &Value) -> Result<&Map<String, Value>, String> {
    let fields = body.as_object().ok_or_else(|| "The request body must be a JSON object.".to_string())?;
    if fields.is_empty() {
        return Err("The request body has no updatable property.".into());
    }
    for (key, value) in fields {
        let members: &[&str] = match key.as_str() {
            "status" => STATUS,
            "classification" => CLASSIFICATION,
            "determination" => DETERMINATION,
            "assignedTo" => {
                if !(value.is_string() || value.is_null()) {
                    return Err("Property 'assignedTo' must be a string or null.".into());
                }
                continue;
            }
            other => {
                return Err(format!(
                    "Property '{other}' does not exist on type 'microsoft.graph.security.alert' or is not updatable."
                ));
            }
        };
        let ok = value.as_str().is_some_and(|v| v != "unknownFutureValue" && members.contains(&v));
        if !ok {
            return Err(format!(
                "Requested value '{}' is not a valid value for property '{key}'.",
                value.as_str().map_or_else(|| value.to_string(), str::to_string)
            ));
        }
    }
    Ok(fields)
}

/// `PATCH /v1.0/security/alerts_v2/{id}`: updates status, classification, determination, assignedTo.
pub(crate) async fn patch(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let token = match state.authorize(&headers, &ALERT_WRITE_ROLES) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Unable to read JSON request payload.");
    };
    let fields = match validate_patch(&body) {
        Ok(f) => f.clone(),
        Err(message) => return invalid_body(&message),
    };
    let now = fmt_time(state.now());
    let mut inner = state.lock();
    let Some(alert) = inner.alerts.get_mut(&token.tenant).and_then(|m| m.get_mut(&id)) else {
        drop(inner);
        return not_found(&id);
    };
    let was_resolved = alert.get("status").and_then(Value::as_str) == Some("resolved");
    if let Some(status) = fields.get("status").and_then(Value::as_str) {
        if status == "resolved" && !was_resolved {
            alert["resolvedDateTime"] = json!(now);
        } else if status != "resolved" {
            alert["resolvedDateTime"] = Value::Null;
        }
    }
    for (key, value) in &fields {
        alert[key] = value.clone();
    }
    alert["lastUpdateDateTime"] = json!(now);
    let updated = alert.clone();
    inner.patches.push((token.tenant.clone(), id, body));
    drop(inner);
    entity(&state, updated, &headers)
}

/// Validates one alertComment object and returns its text.
fn comment_text(v: &Value) -> Result<String, String> {
    let fields = v.as_object().ok_or_else(|| "An alertComment must be a JSON object.".to_string())?;
    for (key, value) in fields {
        match key.as_str() {
            "comment" => {}
            "@odata.type" => {
                let t = value.as_str().unwrap_or("");
                if t.trim_start_matches('#') != "microsoft.graph.security.alertComment" {
                    return Err(format!("Unexpected @odata.type '{t}'."));
                }
            }
            other => {
                return Err(format!(
                    "Property '{other}' does not exist on type 'microsoft.graph.security.alertComment'."
                ));
            }
        }
    }
    match fields.get("comment").and_then(Value::as_str) {
        Some(c) if !c.trim().is_empty() => Ok(c.to_string()),
        _ => Err("Property 'comment' is required and must be a non-empty string.".into()),
    }
}

/// `POST /v1.0/security/alerts_v2/{id}/comments`: appends comments, answers with the full list.
pub(crate) async fn add_comments(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let token = match state.authorize(&headers, &ALERT_WRITE_ROLES) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Unable to read JSON request payload.");
    };
    let shape = state.lock().comment_shape;
    let items: Vec<&Value> = match (&body, shape) {
        (Value::Array(items), CommentShape::Both | CommentShape::ArrayOnly) if !items.is_empty() => {
            items.iter().collect()
        }
        (Value::Object(_), CommentShape::Both | CommentShape::ObjectOnly) => vec![&body],
        _ => return invalid_body("The request body is not a valid alertComment payload."),
    };
    let texts: Vec<String> = match items.into_iter().map(comment_text).collect() {
        Ok(t) => t,
        Err(message) => return invalid_body(&message),
    };
    let now = state.now();
    let mut inner = state.lock();
    let Some(alert) = inner.alerts.get_mut(&token.tenant).and_then(|m| m.get_mut(&id)) else {
        drop(inner);
        return not_found(&id);
    };
    if !alert.get("comments").is_some_and(Value::is_array) {
        alert["comments"] = json!([]);
    }
    let list = alert["comments"].as_array_mut().expect("comments is an array");
    for text in &texts {
        list.push(json!({
            "comment": text,
            "createdByDisplayName": token.client_id,
            "createdDateTime": fmt_time(now),
        }));
    }
    let comments = list.clone();
    // Whether a comment bumps lastUpdateDateTime is undocumented; bumping is the harder case for
    // a poller (its own comment makes the alert look updated), so the emulator does it.
    alert["lastUpdateDateTime"] = json!(fmt_time(now));
    for text in texts {
        inner.comments.push((token.tenant.clone(), id.clone(), text));
    }
    drop(inner);
    json_response(
        StatusCode::OK,
        &json!({
            "@odata.context": format!("{}/$metadata#security/alerts_v2('{id}')/comments", state.graph_url()),
            "value": comments,
        }),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parses_documented_and_range_forms() {
        let c = parse_filter("serviceSource eq 'microsoftSentinel'").unwrap();
        assert_eq!(c.len(), 1);
        let c = parse_filter("lastUpdateDateTime ge 2026-11-26T00:00:00Z and status eq 'new' and severity ne 'low'")
            .unwrap();
        assert_eq!(c.len(), 3);
        assert!(parse_filter("assignedTo eq 'o''brien@contoso.com'").is_some());
    }

    #[test]
    fn filter_rejects_what_graph_rejects() {
        for bad in [
            "status eq 'New'",
            "status eq new",
            "lastUpdateDateTime ge '2026-11-26T00:00:00Z'",
            "lastUpdateDateTime ge yesterday",
            "title eq 'x'",
            "status eq 'new' or status eq 'resolved'",
            "status eq 'new' and",
            "status eq 'new",
            "",
        ] {
            assert!(parse_filter(bad).is_none(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn masking_replaces_only_evolvable_members() {
        let mut a = json!({"serviceSource": "microsoftSentinel", "detectionSource": "antivirus",
            "evidence": [{"remediationStatus": "active"}, {"remediationStatus": "none"}]});
        mask_evolvable(&mut a);
        assert_eq!(a["serviceSource"], "unknownFutureValue");
        assert_eq!(a["detectionSource"], "antivirus");
        assert_eq!(a["evidence"][0]["remediationStatus"], "unknownFutureValue");
        assert_eq!(a["evidence"][1]["remediationStatus"], "none");
    }

    #[test]
    fn patch_validation() {
        assert!(validate_patch(&json!({"classification": "benignPositive"})).is_err());
        assert!(validate_patch(&json!({"determination": "compromisedUser"})).is_err());
        assert!(validate_patch(&json!({"customDetails": {}})).is_err());
        assert!(validate_patch(&json!({})).is_err());
        assert!(
            validate_patch(&json!({"status": "resolved", "classification": "informationalExpectedActivity",
            "determination": "securityTesting", "assignedTo": null}))
            .is_ok()
        );
    }
}
