//! The Defender-compatible API: one file per resource below, the path
//! normalisation that runs before routing (`paths`), and what only API
//! handlers share (permission and rate checks, the machines a caller may
//! see, the answer for an unknown route). Routes are listed in `router`.
//!
//! Handlers convert store rows to reach-proto types here; nothing below this
//! module serialises internal rows. Every error leaves through `ApiError`.
//! This module never imports the agent gateway or the console.

pub mod audit_log;
pub mod batches;
pub mod download;
pub mod library;
pub mod live_response;
pub mod machine_actions;
pub mod machine_tags;
pub mod machines;
pub mod output;
pub mod paging;
pub mod part_headers;
pub mod paths;
pub mod response_actions;
pub mod token;
pub mod unsupported_actions;

use axum::extract::{FromRequestParts, Request};

use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::ratelimit::Window;

/// An unknown route. Under `/api/machines/{id}/...` the machine is looked
/// up first, so that an unknown machine answers `ResourceNotFound` on every
/// machine route, as Defender's do (Kibana's connector tests its connection
/// by expecting that code from an action on a machine that does not exist).
pub async fn not_found(
    axum::extract::State(state): axum::extract::State<SharedState>,
    request: Request,
) -> ApiError {
    let path = request.uri().path().to_string();
    let unknown = || ApiError::NotFound(format!("No resource at {path}"));
    let Some(id) = path
        .strip_prefix("/api/machines/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(id, _)| id)
    else {
        return unknown();
    };
    let Ok(id) = percent_encoding::percent_decode_str(id).decode_utf8() else {
        return ApiError::InvalidInput(format!("The path {path} is not valid UTF-8"));
    };
    let (mut parts, _) = request.into_parts();
    let principal = match Principal::from_request_parts(&mut parts, &state).await {
        Ok(principal) => principal,
        Err(refused) => return refused,
    };
    match visible_machine(&state, &principal, &id).await {
        Ok(_) => unknown(),
        Err(err) => err,
    }
}

/// Any route called with a method it does not take.
pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

/// Each API's rate limit budget, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `runliveresponse`: 10 calls a minute by default.
    RunLiveResponse,
    /// Creating a batch: 10 calls a minute by default.
    CreateBatch,
    /// Any other API, by name: 100 a minute and 1,500 an hour by default.
    Other(&'static str),
}

/// What a handler does, as `authorize` checks it: the roles that allow it
/// and the rate budget it draws on. One row per kind of call; a new route
/// picks its row (or adds one) here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// List and read machines, find them by tag.
    ReadMachines,
    /// Add or remove machine tags.
    TagMachines,
    /// List and read machine actions.
    ReadActions,
    /// Cancel a machine action.
    CancelActions,
    /// Submit a live response action.
    RunLiveResponse,
    /// Create a batch (live response on many machines).
    CreateBatch,
    /// List and read batches.
    ReadBatches,
    /// Get a download link for a result.
    DownloadResults,
    /// Read or follow a script's output (the results' permission: output
    /// is what a result holds).
    ReadOutput,
    /// Isolate a machine or release it.
    Isolate,
    /// Offboard a machine.
    Offboard,
    /// Stop a file's processes and quarantine it.
    StopAndQuarantine,
    /// Collect an investigation package.
    CollectForensics,
    /// Get a collected package's link (`getPackageUri`).
    PackageUri,
    /// Ask for an antivirus scan (refused: not supported).
    Scan,
    /// Restrict or unrestrict code execution (refused: not supported).
    RestrictExecution,
    /// List, read, upload and delete library files.
    ManageLibrary,
    /// Read the audit trail.
    ReadAuditLog,
}

impl Access {
    /// The roles that allow it (`auth::permissions`).
    pub fn roles(self) -> &'static [&'static str] {
        use crate::auth::permissions;
        match self {
            Access::ReadMachines | Access::ReadActions => permissions::READ,
            Access::TagMachines => permissions::TAG_MACHINES,
            Access::CancelActions => permissions::CANCEL_ACTIONS,
            Access::RunLiveResponse | Access::CreateBatch => permissions::RUN_LIVE_RESPONSE,
            Access::ReadBatches => permissions::READ,
            Access::DownloadResults | Access::ReadOutput => permissions::DOWNLOAD_RESULTS,
            Access::Isolate => permissions::ISOLATE,
            Access::Offboard => permissions::OFFBOARD,
            Access::StopAndQuarantine => permissions::STOP_AND_QUARANTINE,
            Access::CollectForensics | Access::PackageUri => permissions::COLLECT_FORENSICS,
            Access::Scan => permissions::SCAN,
            Access::RestrictExecution => permissions::RESTRICT_EXECUTION,
            Access::ManageLibrary => permissions::MANAGE_LIBRARY,
            Access::ReadAuditLog => permissions::READ_AUDIT_LOG,
        }
    }

    /// What submitting a response action of type `kind` is.
    pub fn respond(kind: reach_proto::api::ActionType) -> Access {
        use reach_proto::api::ActionType;
        match kind {
            ActionType::LiveResponse => Access::RunLiveResponse,
            ActionType::Isolate | ActionType::Unisolate => Access::Isolate,
            ActionType::Offboard => Access::Offboard,
            ActionType::StopAndQuarantineFile => Access::StopAndQuarantine,
            ActionType::CollectInvestigationPackage => Access::CollectForensics,
        }
    }

    /// The rate budget it draws on.
    pub fn api(self) -> Api {
        match self {
            Access::ReadMachines => Api::Other("machines"),
            Access::TagMachines => Api::Other("tags"),
            Access::ReadActions => Api::Other("machineactions"),
            Access::CancelActions => Api::Other("cancel"),
            Access::RunLiveResponse => Api::RunLiveResponse,
            Access::CreateBatch => Api::CreateBatch,
            Access::ReadBatches => Api::Other("batches"),
            Access::DownloadResults => Api::Other("downloadlink"),
            Access::ReadOutput => Api::Other("output"),
            Access::Isolate => Api::Other("isolate"),
            Access::Offboard => Api::Other("offboard"),
            Access::StopAndQuarantine => Api::Other("stopandquarantinefile"),
            Access::CollectForensics => Api::Other("collectinvestigationpackage"),
            Access::PackageUri => Api::Other("getpackageuri"),
            Access::Scan => Api::Other("runantivirusscan"),
            Access::RestrictExecution => Api::Other("restrictcodeexecution"),
            Access::ManageLibrary => Api::Other("libraryfiles"),
            Access::ReadAuditLog => Api::Other("auditlog"),
        }
    }
}

/// Checks the caller holds one of `roles` (403) and is within the API's rate
/// limit (429).
pub async fn authorize(
    state: &SharedState,
    principal: &Principal,
    access: Access,
) -> ApiResult<()> {
    let (roles, api) = (access.roles(), access.api());
    if !principal.has_any(roles) {
        return Err(ApiError::Forbidden(format!(
            "The caller lacks the permission for this operation; it needs one of: {}",
            roles.join(", ")
        )));
    }
    let limits = &state.config.limits;
    let (name, windows) = match api {
        Api::RunLiveResponse => (
            "runliveresponse",
            vec![Window::per_minute(limits.run_live_response_per_minute)],
        ),
        Api::CreateBatch => (
            "batches/create",
            vec![Window::per_minute(limits.batches_per_minute)],
        ),
        Api::Other(name) => (
            name,
            vec![
                Window::per_minute(limits.api_per_minute),
                Window::per_hour(limits.api_per_hour),
            ],
        ),
    };
    let key = format!("{}/{name}", principal.rate_key());
    state
        .limiter
        .check(
            state.store.as_ref(),
            &key,
            &windows,
            crate::time::Micros::now(),
        )
        .await?
        .inspect_err(|_| crate::metrics::Metrics::add(&state.metrics.rate_limited, 1))
        .map_err(|retry_after_secs| ApiError::TooManyRequests {
            message: format!("Rate limit reached for {name}; retry in {retry_after_secs} s"),
            retry_after_secs,
        })
}

/// A machine of the caller's tenant and device groups, by id or name.
/// Outside its groups a machine answers as one that does not exist (404),
/// as Defender's do. A name that several visible machines carry answers
/// 409 listing their ids.
pub async fn visible_machine(
    state: &SharedState,
    principal: &Principal,
    id_or_name: &str,
) -> ApiResult<crate::store::MachineRow> {
    Ok(crate::store::resolve_machine(
        state.store.as_ref(),
        &principal.tenant_id,
        id_or_name,
        &principal.scope,
    )
    .await?)
}

/// `query` narrowed to the machines of the caller's device groups (through
/// the entity's `machineTags`); None when the caller may see no machine.
pub fn scoped(
    mut query: crate::odata::Query,
    scope: &crate::store::Scope,
) -> Option<crate::odata::Query> {
    use crate::odata::{Expr, Literal};
    let crate::store::Scope::Tags(tags) = scope else {
        return Some(query);
    };
    if tags.is_empty() {
        return None;
    }
    let within = Expr::In {
        field: "machineTags".into(),
        values: tags.iter().cloned().map(Literal::Text).collect(),
    };
    query.and(within);
    Some(query)
}
