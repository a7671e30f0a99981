//! `POST /api/batches/{id}/cancel`, `/pause` and `/resume`. Cancel ends
//! every action of the batch not final yet and kills its running scripts;
//! pause stops new dispatch (what runs finishes); resume dispatches again,
//! starting the next wave when the current one is over. Each answers 200
//! with the Batch; a batch already Completed or Cancelled is a 400.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use reach_proto::api::{self as wire, CancelRequest};

use super::{entity, visible_batch};
use crate::SharedState;
use crate::api::{Access, authorize};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{OptionalJsonBody, Path};
use crate::hub::HubEvent;
use crate::store::StoreError;
use crate::time::Micros;

/// A batch already done is a 400, as a final action's cancel is.
fn conflict(err: StoreError) -> ApiError {
    match err {
        StoreError::Conflict(message) => ApiError::BadRequest(message),
        other => other.into(),
    }
}

/// `POST /api/batches/{id}/cancel`.
pub async fn cancel(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    notes: crate::audit::Notes,
    OptionalJsonBody(body): OptionalJsonBody<CancelRequest>,
) -> ApiResult<Json<wire::Batch>> {
    notes.target(&id);
    authorize(&state, &principal, Access::CancelActions).await?;
    let comment = body.and_then(|b| b.comment);
    crate::api::live_response::check_comment(comment.as_deref())?;
    visible_batch(&state, &principal, &id).await?;
    let (row, stopped) = state
        .store
        .cancel_batch(
            &principal.tenant_id,
            &id,
            &principal.name,
            comment.as_deref(),
            Micros::now(),
        )
        .await
        .map_err(conflict)?;
    notes.detail("runningStopped", stopped.len());
    tracing::info!(batch.id = %row.id, requestor = %principal.name, running = stopped.len(), "batch cancelled");
    for action in stopped {
        crate::cluster::send(
            &state,
            &action.machine_id,
            HubEvent::Cancel {
                action_id: action.action_id,
            },
        )
        .await;
    }
    Ok(Json(entity(&state, &headers, row)))
}

/// `POST /api/batches/{id}/pause`.
pub async fn pause(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    notes: crate::audit::Notes,
) -> ApiResult<Json<wire::Batch>> {
    notes.target(&id);
    authorize(&state, &principal, Access::CreateBatch).await?;
    visible_batch(&state, &principal, &id).await?;
    let row = state
        .store
        .pause_batch(&principal.tenant_id, &id, Micros::now())
        .await
        .map_err(conflict)?;
    tracing::info!(batch.id = %row.id, requestor = %principal.name, "batch paused");
    Ok(Json(entity(&state, &headers, row)))
}

/// `POST /api/batches/{id}/resume`.
pub async fn resume(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    notes: crate::audit::Notes,
) -> ApiResult<Json<wire::Batch>> {
    notes.target(&id);
    authorize(&state, &principal, Access::CreateBatch).await?;
    visible_batch(&state, &principal, &id).await?;
    let (row, machines) = state
        .store
        .resume_batch(&principal.tenant_id, &id, Micros::now())
        .await
        .map_err(conflict)?;
    tracing::info!(batch.id = %row.id, requestor = %principal.name, machines = machines.len(), "batch resumed");
    crate::cluster::wake_many(&state, &machines).await;
    Ok(Json(entity(&state, &headers, row)))
}
