//! Defender's machine actions that Reach agents cannot carry out honestly:
//! `runAntiVirusScan` (Reach is not an antivirus) and
//! `restrictCodeExecution` / `unrestrictCodeExecution` (a Windows
//! code-integrity policy that only Defender's own sensor applies). Each
//! answers 400 in the error envelope with the reason, once the caller's
//! role and the machine are checked (403, then 404 for a machine unknown or
//! outside its device groups), so a client sees a refusal that says why,
//! not a 404 that looks like a wrong URL. Nothing is stored; the call is an
//! audit entry, as every POST is.

use axum::extract::State;

use super::{Access, authorize, visible_machine};
use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::Path;

async fn refuse(
    state: &SharedState,
    principal: &Principal,
    id: &str,
    access: Access,
    why: &str,
) -> ApiResult<()> {
    authorize(state, principal, access).await?;
    visible_machine(state, principal, id).await?;
    Err(ApiError::BadRequest(why.to_string()))
}

/// `POST /api/machines/{id}/runAntiVirusScan`.
pub async fn run_antivirus_scan(
    State(state): State<SharedState>,
    principal: Principal,
    Path(id): Path<String>,
    notes: crate::audit::Notes,
) -> ApiResult<()> {
    notes.target(&id);
    refuse(
        &state,
        &principal,
        &id,
        Access::Scan,
        "runAntiVirusScan is not supported by Reach agents: Reach is not an antivirus and has no engine to scan with. Run your scanner as a script with runliveresponse instead",
    )
    .await
}

/// `POST /api/machines/{id}/restrictCodeExecution` and
/// `POST /api/machines/{id}/unrestrictCodeExecution`.
pub async fn restrict_code_execution(
    State(state): State<SharedState>,
    principal: Principal,
    Path(id): Path<String>,
    notes: crate::audit::Notes,
) -> ApiResult<()> {
    notes.target(&id);
    refuse(
        &state,
        &principal,
        &id,
        Access::RestrictExecution,
        "restrictCodeExecution and unrestrictCodeExecution are not supported by Reach agents: they apply a Windows code-integrity policy that only Defender's own sensor enforces, and Reach does not pretend to",
    )
    .await
}
