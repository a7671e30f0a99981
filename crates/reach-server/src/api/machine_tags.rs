//! Machine tags over the API, as Defender's: `POST /api/machines/{id}/tags`,
//! `POST /api/machines/AddOrRemoveTagForMultipleMachines` and
//! `GET /api/machines/findbytag`. Reach's device groups are tag rules, so a
//! tag change can move a machine between groups: only machines the caller
//! can see are tagged (others answer 404 as if absent), an app may move a
//! machine it sees into another group but never gains one it cannot see,
//! and every change is an audit entry (`MachineTagsChanged`, one per
//! machine, besides the call's own). Changes are atomic per machine in the
//! store, so concurrent callers never lose each other's tags.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use reach_proto::api::{Collection, Machine, MachineTagRequest};
use serde_json::json;

use super::machines::{active_since, mark_duplicates, to_wire};
use super::{Access, authorize, visible_machine};
use crate::SharedState;
use crate::audit::Notes;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::Path;
use crate::http::{JsonBody, odata_context};
use crate::odata::{Expr, Literal, Query};

/// Most machines one bulk call may tag (Defender's limit).
pub const MAX_MACHINES: usize = 500;

/// Longest tag, in characters (Defender's portal and API stop at 200).
const MAX_TAG_CHARS: usize = 200;

/// What a request asks: add (true) or remove (false) the tag.
struct Change {
    tag: String,
    add: bool,
}

/// Checks the tag (1 to 200 characters, no control characters, trimmed)
/// and the action (`Add` or `Remove`, any case).
fn change(value: Option<String>, action: Option<String>) -> ApiResult<Change> {
    let value = value.ok_or_else(|| ApiError::MissingParameter("Value".into()))?;
    let tag = value.trim().to_string();
    if tag.is_empty() || tag.chars().count() > MAX_TAG_CHARS || tag.chars().any(char::is_control) {
        return Err(ApiError::InvalidInput(format!(
            "Value must be a tag of 1 to {MAX_TAG_CHARS} characters without control characters"
        )));
    }
    let action = action.ok_or_else(|| ApiError::MissingParameter("Action".into()))?;
    let add = if action.eq_ignore_ascii_case("add") {
        true
    } else if action.eq_ignore_ascii_case("remove") {
        false
    } else {
        return Err(ApiError::InvalidInput(format!(
            "Action must be Add or Remove, not '{action}'"
        )));
    };
    Ok(Change { tag, add })
}

/// Applies `change` to one visible machine and records it.
async fn apply(
    state: &SharedState,
    principal: &Principal,
    machine_id: &str,
    change: &Change,
) -> ApiResult<Vec<String>> {
    let one = std::slice::from_ref(&change.tag);
    let (add, remove): (&[String], &[String]) = if change.add { (one, &[]) } else { (&[], one) };
    let tags = state
        .store
        .change_machine_tags(&principal.tenant_id, machine_id, add, remove)
        .await?;
    let mut event = crate::audit::event(
        &principal.tenant_id,
        principal.actor(),
        crate::audit::Operation::MachineTagsChanged,
        crate::audit::Outcome::Succeeded,
        json!({
            "action": if change.add { "Add" } else { "Remove" },
            "tag": change.tag,
            "tags": tags,
        }),
    );
    event.machine_id = Some(machine_id.to_string());
    event.target = Some(change.tag.clone());
    state.auditor.record(event).await;
    Ok(tags)
}

/// `rows` as one page of Machines, `duplicateName` marked.
async fn collection(
    state: &SharedState,
    principal: &Principal,
    headers: &HeaderMap,
    rows: Vec<crate::store::MachineRow>,
) -> ApiResult<Collection<Machine>> {
    let since = active_since(state);
    let mut value: Vec<Machine> = rows.into_iter().map(|r| to_wire(r, since)).collect();
    mark_duplicates(state, principal, &mut value).await?;
    Ok(Collection {
        odata_context: odata_context(state, headers, "Machines"),
        count: None,
        value,
        next_link: None,
    })
}

/// `POST /api/machines/{id}/tags`: 200 with the Machine as it is now.
pub async fn tag_one(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    notes: Notes,
    JsonBody(body): JsonBody<MachineTagRequest>,
) -> ApiResult<Json<Machine>> {
    authorize(&state, &principal, Access::TagMachines).await?;
    let change = change(body.value, body.action)?;
    let mut row = visible_machine(&state, &principal, &id).await?;
    notes.machine(&row.id);
    notes.target(&change.tag);
    row.tags = apply(&state, &principal, &row.id, &change).await?;
    let mut machine = to_wire(row, active_since(&state));
    mark_duplicates(&state, &principal, std::slice::from_mut(&mut machine)).await?;
    machine.odata_context = Some(odata_context(&state, &headers, "Machines/$entity"));
    Ok(Json(machine))
}

/// `POST /api/machines/AddOrRemoveTagForMultipleMachines`: every id must be
/// a machine the caller sees (else 404 naming it, and nothing changes);
/// 200 with the machines as they are now.
pub async fn tag_many(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    notes: Notes,
    JsonBody(body): JsonBody<MachineTagRequest>,
) -> ApiResult<Json<Collection<Machine>>> {
    authorize(&state, &principal, Access::TagMachines).await?;
    let change = change(body.value, body.action)?;
    let ids = body
        .machine_ids
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| ApiError::MissingParameter("MachineIds".into()))?;
    if ids.len() > MAX_MACHINES {
        return Err(ApiError::MaximumBatchSizeExceeded(format!(
            "MachineIds holds {} machines; at most {MAX_MACHINES} at once",
            ids.len()
        )));
    }
    notes.target(&change.tag);
    // Every machine is checked before any changes.
    let mut rows = Vec::with_capacity(ids.len());
    for id in &ids {
        let row = visible_machine(&state, &principal, id).await?;
        if !rows
            .iter()
            .any(|r: &crate::store::MachineRow| r.id == row.id)
        {
            rows.push(row);
        }
    }
    notes.detail("machines", rows.len());
    for row in &mut rows {
        row.tags = apply(&state, &principal, &row.id, &change).await?;
    }
    Ok(Json(collection(&state, &principal, &headers, rows).await?))
}

/// `GET /api/machines/findbytag?tag=T&useStartsWithFilter=true|false`: the
/// machines the caller sees that carry the tag (or, with the filter, a tag
/// starting with it), without case; at most one page (`limits.page_size`).
pub async fn find_by_tag(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Collection<Machine>>> {
    authorize(&state, &principal, Access::ReadMachines).await?;
    // Parameter names compare without case, as Defender's do.
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let tag = param("tag")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::MissingParameter("tag".into()))?;
    if tag.chars().count() > MAX_TAG_CHARS {
        return Err(ApiError::InvalidInput(format!(
            "tag must be at most {MAX_TAG_CHARS} characters"
        )));
    }
    let starts_with = match param("usestartswithfilter").as_deref() {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            return Err(ApiError::InvalidInput(format!(
                "useStartsWithFilter must be true or false, not '{v}'"
            )));
        }
    };
    let field = "machineTags".to_string();
    let query = Query {
        filter: Some(if starts_with {
            Expr::AnyStartsWith { field, prefix: tag }
        } else {
            Expr::AnyEq {
                field,
                value: Literal::Text(tag),
            }
        }),
        top: Some(super::paging::Page::bounded(state.config.limits.page_size)),
        ..Query::default()
    };
    let since = active_since(&state);
    let rows = match super::scoped(query, &principal.scope) {
        Some(query) => {
            state
                .store
                .list_machines(&principal.tenant_id, &query, since)
                .await?
                .0
        }
        None => Vec::new(),
    };
    Ok(Json(collection(&state, &principal, &headers, rows).await?))
}
