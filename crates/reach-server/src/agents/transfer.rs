//! The agent's file transfers over HTTP: downloading the library file of a
//! PutFile or RunScript command, and uploading a command's result (the
//! RunScript transcript or the gzip of a collected file). Bytes stream
//! between the connection and the object store; a machine can only reach
//! the commands of its own actions.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reach_proto::agent::{CommandRef, Work};
use reach_proto::api::CommandStatus;

use super::{AgentIdentity, authenticate};
use crate::SharedState;
use crate::error::{ApiError, ApiResult};
use crate::files::{FileError, Files};
use crate::store::{CommandRow, ResultBlob};

/// The command index of a transfer path.
fn parse_index(text: &str) -> ApiResult<u32> {
    text.parse()
        .map_err(|_| ApiError::InvalidInput(format!("'{text}' is not a command index")))
}

/// Finds a command of this machine's action, or 404 (also for other machines' actions).
async fn own_command(
    state: &SharedState,
    identity: &AgentIdentity,
    action_id: &str,
    index: u32,
) -> ApiResult<CommandRow> {
    let not_found = || {
        ApiError::ResourceNotFound(format!(
            "Command {index} of action {action_id} was not found"
        ))
    };
    let action = state
        .store
        .get_action(&identity.tenant_id, action_id)
        .await
        .map_err(|_| not_found())?;
    if action.machine_id != identity.machine_id {
        return Err(not_found());
    }
    action
        .commands
        .into_iter()
        .find(|c| c.index == index)
        .ok_or_else(not_found)
}

/// `GET /agent/v1/commands/{action}/{index}/payload`.
pub async fn payload(
    State(state): State<SharedState>,
    Path((action_id, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let identity = authenticate(&state, &headers).await?;
    let index = parse_index(&index)?;
    let command = own_command(&state, &identity, &action_id, index).await?;
    let sha256 = match &command.work {
        Work::PutFile { sha256, .. } | Work::RunScript { sha256, .. } => sha256.clone(),
        Work::GetFile { .. } => {
            return Err(ApiError::BadRequest(
                "GetFile commands have no payload".into(),
            ));
        }
    };
    if command.status != CommandStatus::InProgress {
        return Err(ApiError::BadRequest(format!(
            "Command {index} is {}, not InProgress",
            command.status
        )));
    }
    let key = Files::library_key(&identity.tenant_id, &sha256);
    let (size, stream) = state
        .files
        .get_stream(&key)
        .await
        .map_err(|err| match err {
            FileError::NotFound(_) => {
                ApiError::ResourceNotFound("The library file's bytes are gone".into())
            }
            other => ApiError::internal(other),
        })?;
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(value) = HeaderValue::from_str(&sha256) {
        headers.insert("x-reach-sha256", value);
    }
    Ok(response)
}

/// `PUT /agent/v1/commands/{action}/{index}/result`.
pub async fn result(
    State(state): State<SharedState>,
    Path((action_id, index)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let identity = authenticate(&state, &headers).await?;
    let index = parse_index(&index)?;
    let command = own_command(&state, &identity, &action_id, index).await?;
    if matches!(command.work, Work::PutFile { .. }) {
        return Err(ApiError::BadRequest(
            "PutFile commands have no result".into(),
        ));
    }
    if command.status != CommandStatus::InProgress {
        return Err(ApiError::Conflict(format!(
            "Command {index} is {}, not InProgress",
            command.status
        )));
    }
    let key = Files::result_key(&action_id, index);
    let max = Some(state.config.limits.result_max_bytes).filter(|max| *max > 0);
    let stored = state
        .files
        .put_stream(&key, body.into_data_stream(), max)
        .await
        .map_err(|err| match err {
            FileError::Body(why) => {
                ApiError::BadRequest(format!("The upload was interrupted: {why}"))
            }
            FileError::TooLarge(max) => ApiError::PayloadTooLarge(format!(
                "The result is larger than this server accepts ({max} bytes, gzip-compressed)"
            )),
            other => ApiError::internal(other),
        })?;
    let reference = CommandRef { action_id, index };
    state
        .store
        .record_result(
            &identity.machine_id,
            &reference,
            &ResultBlob {
                key,
                size: stored.size,
                sha256: stored.sha256,
            },
        )
        .await?;
    tracing::info!(machine.id = %identity.machine_id, action.id = %reference.action_id, command.index = index, bytes = stored.size, "result stored");
    Ok(StatusCode::NO_CONTENT)
}
