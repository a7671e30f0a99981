//! Defender's response actions that Reach agents carry out:
//! `POST /api/machines/{id}/isolate`, `.../unisolate`, `.../offboard`,
//! `.../StopAndQuarantineFile` and `.../collectInvestigationPackage`. Each checks the
//! caller's role (403), the machine (404 for one unknown or outside its
//! device groups), then the body (400), stores an action of its type with
//! one command that the agent runs beside live response (`store::Lane`),
//! wakes the machine's agent, and answers 201 with the MachineAction.
//! Offline machines get it when they return, within the queue TTL.
//!
//! This module never changes a device itself: the agent does, and proves
//! it kept its server before it reports success.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reach_proto::agent::Work;
use reach_proto::api::{
    ActionType, Command, IsolateRequest, MachineAction, ResponseActionRequest,
    StopAndQuarantineRequest,
};

use super::{Access, authorize, visible_machine};
use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::{JsonBody, Path, odata_context};
use crate::hub::HubEvent;
use crate::store::{ActionLimits, NewAction, NewCommand};
use crate::time::Micros;

/// Seconds an agent has to carry out a response action (isolating proves
/// the server answers within 10 s of it; the rest is slack).
pub const RESPONSE_TIMEOUT_SECS: u64 = 120;

/// `POST /api/machines/{id}/isolate`.
pub async fn isolate(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(machine): Path<String>,
    notes: crate::audit::Notes,
    JsonBody(request): JsonBody<IsolateRequest>,
) -> ApiResult<(StatusCode, Json<MachineAction>)> {
    let kind = ActionType::Isolate;
    let checked = Checked::new(&state, &principal, &headers, &notes, &machine, kind).await?;
    let comment = required_comment(request.comment)?;
    let selective = match request.isolation_type.as_deref().map(str::trim) {
        None | Some("") => false,
        Some(t) if t.eq_ignore_ascii_case("Full") => false,
        Some(t) if t.eq_ignore_ascii_case("Selective") => true,
        Some(t) if t.eq_ignore_ascii_case("UnManagedDevice") => {
            return Err(ApiError::BadRequest(
                "IsolationType UnManagedDevice is not supported by Reach: Reach isolates a device through its own agent, and an unmanaged device has none".into(),
            ));
        }
        Some(other) => {
            return Err(ApiError::InvalidRequestBody(format!(
                "IsolationType '{other}' is not one of Full, Selective"
            )));
        }
    };
    let scope = if selective { "Selective" } else { "Full" };
    let allow = match selective {
        true => state
            .config
            .isolation
            .selective_allow
            .iter()
            .map(|d| d.to_string())
            .collect(),
        false => Vec::new(),
    };
    notes.detail("isolationType", scope);
    let params = [("IsolationType", scope)];
    let work = Work::Isolate { selective, allow };
    checked.submit(comment, &params, work).await
}

/// `POST /api/machines/{id}/unisolate`.
pub async fn unisolate(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(machine): Path<String>,
    notes: crate::audit::Notes,
    JsonBody(request): JsonBody<ResponseActionRequest>,
) -> ApiResult<(StatusCode, Json<MachineAction>)> {
    let kind = ActionType::Unisolate;
    let checked = Checked::new(&state, &principal, &headers, &notes, &machine, kind).await?;
    let comment = required_comment(request.comment)?;
    checked.submit(comment, &[], Work::Unisolate).await
}

/// `POST /api/machines/{id}/offboard`. A machine whose agent is not
/// connected is offboarded at once (revoked; the action Succeeded): its
/// agent learns it at its next connection.
pub async fn offboard(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(machine): Path<String>,
    notes: crate::audit::Notes,
    JsonBody(request): JsonBody<ResponseActionRequest>,
) -> ApiResult<(StatusCode, Json<MachineAction>)> {
    let kind = ActionType::Offboard;
    let checked = Checked::new(&state, &principal, &headers, &notes, &machine, kind).await?;
    let comment = required_comment(request.comment)?;
    let offline = !checked.machine.connected;
    let machine_id = checked.machine.id.clone();
    let (status, Json(mut action)) = checked.submit(comment, &[], Work::Offboard).await?;
    if offline
        && state
            .store
            .offboard_unclaimed(&machine_id, &action.id, Micros::now())
            .await?
    {
        notes.detail(
            "offboarded",
            "at once: the machine's agent was not connected",
        );
        tracing::warn!(machine.id = %machine_id, action.id = %action.id, "machine offboarded while offline; its agent learns it at its next connection");
        let context = action.odata_context.take();
        action = super::machine_actions::to_wire(
            state
                .store
                .get_action(&principal.tenant_id, &action.id)
                .await?,
        );
        action.odata_context = context;
    }
    Ok((status, Json(action)))
}

/// `POST /api/machines/{id}/StopAndQuarantineFile`.
pub async fn stop_and_quarantine_file(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(machine): Path<String>,
    notes: crate::audit::Notes,
    JsonBody(request): JsonBody<StopAndQuarantineRequest>,
) -> ApiResult<(StatusCode, Json<MachineAction>)> {
    let kind = ActionType::StopAndQuarantineFile;
    let checked = Checked::new(&state, &principal, &headers, &notes, &machine, kind).await?;
    let comment = required_comment(request.comment)?;
    let sha1 = request
        .sha1
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::MissingParameter("Sha1".into()))?;
    if sha1.len() != 40 || !sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::InvalidInput(
            "Sha1 must be the file's SHA-1: 40 hexadecimal digits".into(),
        ));
    }
    notes.detail("sha1", sha1.as_str());
    let params = [("Sha1", sha1.as_str())];
    let work = Work::StopAndQuarantineFile { sha1: sha1.clone() };
    checked.submit(comment, &params, work).await
}

/// `POST /api/machines/{id}/collectInvestigationPackage`: one collection
/// per machine at a time (400 `ActiveRequestAlreadyExists` while one
/// waits or runs, as Defender); it runs beside an isolation, in live
/// response's lane.
pub async fn collect_investigation_package(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(machine): Path<String>,
    notes: crate::audit::Notes,
    JsonBody(request): JsonBody<ResponseActionRequest>,
) -> ApiResult<(StatusCode, Json<MachineAction>)> {
    let kind = ActionType::CollectInvestigationPackage;
    let checked = Checked::new(&state, &principal, &headers, &notes, &machine, kind).await?;
    let comment = required_comment(request.comment)?;
    checked
        .submit(comment, &[], Work::CollectInvestigationPackage)
        .await
}

/// Defender requires a comment on every response action; it is what the
/// audit trail says the action was for.
fn required_comment(comment: Option<String>) -> ApiResult<String> {
    let comment = comment
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ApiError::MissingParameter("Comment".into()))?;
    super::live_response::check_comment(Some(&comment))?;
    Ok(comment)
}

/// A response action whose caller and machine passed their checks, with
/// the call it came in.
struct Checked<'a> {
    state: &'a SharedState,
    principal: &'a Principal,
    headers: &'a HeaderMap,
    notes: &'a crate::audit::Notes,
    kind: ActionType,
    machine: crate::store::MachineRow,
}

impl<'a> Checked<'a> {
    async fn new(
        state: &'a SharedState,
        principal: &'a Principal,
        headers: &'a HeaderMap,
        notes: &'a crate::audit::Notes,
        machine: &str,
        kind: ActionType,
    ) -> ApiResult<Self> {
        notes.machine(machine);
        authorize(state, principal, Access::respond(kind)).await?;
        let machine = visible_machine(state, principal, machine).await?;
        notes.machine(&machine.id);
        Ok(Self {
            state,
            principal,
            headers,
            notes,
            kind,
            machine,
        })
    }

    /// Stores the action (one active of its type per machine: 400
    /// `ActiveRequestAlreadyExists` otherwise) and wakes the agent.
    async fn submit(
        self,
        comment: String,
        params: &[(&str, &str)],
        work: Work,
    ) -> ApiResult<(StatusCode, Json<MachineAction>)> {
        let (state, principal, headers, notes) =
            (self.state, self.principal, self.headers, self.notes);
        // The one command, of the action's type, echoed as clients read it.
        let command = Command {
            kind: self.kind.as_str().into(),
            params: params
                .iter()
                .map(|(key, value)| reach_proto::api::CommandParam {
                    key: key.to_string(),
                    value: value.to_string(),
                })
                .collect(),
        };
        notes.detail("comment", comment.as_str());
        notes.detail("work", serde_json::to_value(&work).unwrap_or_default());
        let action = NewAction {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: principal.tenant_id.clone(),
            machine_id: self.machine.id.clone(),
            requestor: principal.name.clone(),
            requestor_id: principal.rate_key(),
            requestor_comment: Some(comment),
            kind: self.kind,
            commands: vec![NewCommand {
                command,
                // A package is collected and sent as a GetFile is sent.
                timeout_secs: match work {
                    Work::CollectInvestigationPackage => {
                        state.config.live_response.transfer_timeout_secs
                    }
                    _ => RESPONSE_TIMEOUT_SECS,
                },
                work,
            }],
            now: Micros::now(),
        };
        let limits = &state.config.limits;
        let row = state
            .store
            .create_action(
                &action,
                ActionLimits {
                    running_per_tenant: limits.active_actions_per_tenant,
                    pending_per_requestor: limits.pending_actions_per_app,
                },
            )
            .await?;
        notes.target(&row.id);
        tracing::info!(action.id = %row.id, action.kind = %row.kind, machine.id = %row.machine_id, requestor = %row.requestor, "response action created");
        crate::cluster::send(state, &row.machine_id, HubEvent::Wake).await;
        let mut body = super::machine_actions::to_wire(row);
        body.odata_context = Some(odata_context(state, headers, "MachineActions/$entity"));
        Ok((StatusCode::CREATED, Json(body)))
    }
}
