//! `GET /api/machineactions` (OData, newest first), `GET
//! /api/machineactions/{id}` and `POST /api/machineactions/{id}/cancel`.
//! Cancelling tells the machine's agent to kill the running command.

use crate::http::Path;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use reach_proto::api::{CancelRequest, Collection, CommandEntry, MachineAction};

use super::{Access, authorize};
use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{OptionalJsonBody, odata_context};
use crate::hub::HubEvent;
use crate::odata::Query;
use crate::store::ActionRow;
use crate::time::Micros;

/// An action as clients read it.
pub fn to_wire(row: ActionRow) -> MachineAction {
    MachineAction {
        odata_context: None,
        id: row.id,
        kind: row.kind.as_str().into(),
        title: None,
        requestor: row.requestor,
        requestor_comment: row.requestor_comment,
        status: row.status,
        machine_id: row.machine_id,
        computer_dns_name: Some(row.computer_dns_name),
        creation_date_time_utc: row.created.to_wire(),
        last_update_date_time_utc: row.last_update.to_wire(),
        cancellation_requestor: row.cancellation_requestor,
        cancellation_comment: row.cancellation_comment,
        cancellation_date_time_utc: row.cancellation_time.map(Micros::to_wire),
        error_h_result: 0,
        scope: row.commands.first().and_then(|c| match &c.work {
            reach_proto::agent::Work::Isolate { selective, .. } => {
                Some(if *selective { "Selective" } else { "Full" }.to_string())
            }
            _ => None,
        }),
        external_id: None,
        request_source: "PublicApi".into(),
        related_file_info: row.commands.first().and_then(|c| match &c.work {
            reach_proto::agent::Work::StopAndQuarantineFile { sha1 } => Some(serde_json::json!({
                "fileIdentifier": sha1,
                "fileIdentifierType": "Sha1",
            })),
            // The package's own hash, once collected: chain of custody.
            reach_proto::agent::Work::CollectInvestigationPackage => {
                c.file_sha256.as_ref().map(|sha256| {
                    serde_json::json!({
                        "fileIdentifier": sha256,
                        "fileIdentifierType": "Sha256",
                    })
                })
            }
            _ => None,
        }),
        commands: row
            .commands
            .into_iter()
            .map(|c| CommandEntry {
                index: c.index,
                start_time: c.start_time.map(Micros::to_wire),
                end_time: c.end_time.map(Micros::to_wire),
                command_status: c.status,
                errors: c.errors,
                command: c.command,
            })
            .collect(),
        troubleshoot_info: None,
        batch_id: row.batch_id,
    }
}

/// `GET /api/machineactions` with OData.
pub async fn list(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Collection<MachineAction>>> {
    authorize(&state, &principal, Access::ReadActions).await?;
    page_of_actions(
        &state,
        &principal,
        &headers,
        query.as_deref(),
        None,
        "/api/machineactions",
    )
    .await
}

/// A page of the caller's actions (device groups apply) for the raw OData
/// query, narrowed by `and` when given, with the next page's link under
/// `path`: `GET /api/machineactions` and a batch's machine actions.
pub async fn page_of_actions(
    state: &SharedState,
    principal: &Principal,
    headers: &HeaderMap,
    raw: Option<&str>,
    and: Option<crate::odata::Expr>,
    path: &str,
) -> ApiResult<Json<Collection<MachineAction>>> {
    let mut query = Query::parse(raw).map_err(|e| ApiError::OData(e.0))?;
    let page = super::paging::Page::ask(&mut query, state.config.limits.page_size);
    if let Some(and) = and {
        query.and(and);
    }
    let (mut rows, count) = match super::scoped(query, &principal.scope) {
        Some(query) => {
            state
                .store
                .list_actions(&principal.tenant_id, &query)
                .await?
        }
        None => (Vec::new(), Some(0)),
    };
    let url = format!("{}{path}", crate::http::base_url(state, headers));
    let next_link = page.finish(&mut rows, &url, raw);
    Ok(Json(Collection {
        odata_context: odata_context(state, headers, "MachineActions"),
        count,
        value: rows.into_iter().map(to_wire).collect(),
        next_link,
    }))
}

/// `GET /api/machineactions/{id}`.
pub async fn get(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<MachineAction>> {
    authorize(&state, &principal, Access::ReadActions).await?;
    let row = visible_action(&state, &principal, &id).await?;
    let mut action = to_wire(row);
    action.odata_context = Some(odata_context(&state, &headers, "MachineActions/$entity"));
    Ok(Json(action))
}

/// `POST /api/machineactions/{id}/cancel`.
pub async fn cancel(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    notes: crate::audit::Notes,
    OptionalJsonBody(body): OptionalJsonBody<CancelRequest>,
) -> ApiResult<Json<MachineAction>> {
    notes.target(&id);
    authorize(&state, &principal, Access::CancelActions).await?;
    let comment = body.and_then(|b| b.comment);
    super::live_response::check_comment(comment.as_deref())?;
    // Unscoped callers need no read first: cancel_action answers 404 itself.
    if principal.scope != crate::store::Scope::All {
        visible_action(&state, &principal, &id).await?;
    }
    let row = state
        .store
        .cancel_action(
            &principal.tenant_id,
            &id,
            &principal.name,
            comment.as_deref(),
            Micros::now(),
        )
        .await
        .map_err(|err| match err {
            crate::store::StoreError::Conflict(message) => ApiError::BadRequest(message),
            other => other.into(),
        })?;
    notes.machine(&row.machine_id);
    tracing::info!(action.id = %row.id, machine.id = %row.machine_id, requestor = %principal.name, "action cancelled");
    crate::cluster::send(
        &state,
        &row.machine_id,
        HubEvent::Cancel {
            action_id: row.id.clone(),
        },
    )
    .await;
    let mut action = to_wire(row);
    action.odata_context = Some(odata_context(&state, &headers, "MachineActions/$entity"));
    Ok(Json(action))
}

/// Command `index` of `action`, or 404 naming both.
pub fn command_of(action: &ActionRow, index: u32) -> ApiResult<&crate::store::CommandRow> {
    action
        .commands
        .iter()
        .find(|c| c.index == index)
        .ok_or_else(|| {
            ApiError::ResourceNotFound(format!(
                "Machine action {} has no command with index {index}",
                action.id
            ))
        })
}

/// An action of the caller's tenant on a machine of its device groups;
/// outside them, 404 as for an action that does not exist.
pub async fn visible_action(
    state: &SharedState,
    principal: &Principal,
    id: &str,
) -> ApiResult<ActionRow> {
    let action = state.store.get_action(&principal.tenant_id, id).await?;
    if principal.scope != crate::store::Scope::All {
        super::visible_machine(state, principal, &action.machine_id)
            .await
            .map_err(|_| {
                ApiError::from(crate::store::StoreError::NotFound(format!("Action {id}")))
            })?;
    }
    Ok(action)
}
