//! `POST /v1.0/users/{id}/checkMemberGroups`: which of the given groups a user is a member of, from a
//! membership table the test fills ([`crate::Emulator::add_member`]); nested membership is the table's.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::state::{AppState, GROUP_READ_ROLES, graph_error, json_response};

/// The most group ids Graph takes in one call.
const MAX_GROUP_IDS: usize = 20;

/// `POST /v1.0/users/{user}/checkMemberGroups` with `{"groupIds": [...]}`; answers `{"value": [...]}`.
pub(crate) async fn check_member_groups(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Response {
    let token = match state.authorize(&headers, &GROUP_READ_ROLES) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let ids = serde_json::from_slice::<Value>(&body).ok().and_then(|b| {
        b.get("groupIds")?.as_array()?.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()
    });
    let Some(ids) = ids else {
        return graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", "groupIds must be an array of strings.");
    };
    if ids.is_empty() || ids.len() > MAX_GROUP_IDS {
        return graph_error(StatusCode::BAD_REQUEST, "Request_BadRequest", "Between 1 and 20 group ids are accepted.");
    }
    let inner = state.lock();
    let Some(groups) = inner.members.get(&(token.tenant.clone(), user.to_ascii_lowercase())) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{user}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    };
    let matched: Vec<&String> = ids.iter().filter(|id| groups.iter().any(|g| g.eq_ignore_ascii_case(id))).collect();
    json_response(StatusCode::OK, &json!({"value": matched}))
}
