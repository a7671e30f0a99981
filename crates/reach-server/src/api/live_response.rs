//! `POST /api/machines/{id}/runliveresponse`: validates the commands
//! (types, parameters, the PutFile → RunScript → GetFile order, library
//! names), creates the action atomically in the store, and wakes the
//! machine's agent. Answers 201 with the MachineAction.

use crate::http::Path;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use reach_proto::agent::Work;
use reach_proto::api::{Command, CommandType, MachineAction, RunLiveResponseRequest, roles};

use super::{Access, authorize};
use crate::SharedState;
use crate::auth::Principal;
use crate::auth::permissions;
use crate::error::{ApiError, ApiResult};
use crate::http::{JsonBody, odata_context};
use crate::hub::HubEvent;
use crate::store::{NewAction, NewCommand, StoreError};
use crate::time::Micros;

/// Longest `Comment` accepted.
pub const MAX_COMMENT: usize = 4096;
/// Longest parameter value accepted (`Args`, `Path`, names).
pub const MAX_PARAM: usize = 32 * 1024;

/// A command checked for shape, before library names are resolved.
#[derive(Debug)]
pub struct Checked {
    kind: CommandType,
    name: Option<String>,
    args: Option<String>,
    path: Option<String>,
}

/// Checks command `index` of a request for shape: its type, its parameters
/// and their lengths. Public for the fuzz targets (`fuzz/`).
pub fn check_command(index: usize, command: &Command) -> ApiResult<Checked> {
    let kind = CommandType::parse(&command.kind).ok_or_else(|| {
        ApiError::InvalidRequestBody(format!(
            "Command {index}: unknown type '{}'; allowed values are PutFile, RunScript, GetFile",
            command.kind
        ))
    })?;
    let (required, optional): (&str, &[&str]) = match kind {
        CommandType::PutFile => ("FileName", &[]),
        CommandType::RunScript => ("ScriptName", &["Args"]),
        CommandType::GetFile => ("Path", &[]),
    };
    for (i, param) in command.params.iter().enumerate() {
        if param.key != required && !optional.contains(&param.key.as_str()) {
            let mut allowed = vec![required];
            allowed.extend_from_slice(optional);
            return Err(ApiError::InvalidRequestBody(format!(
                "Command {index} ({}): unknown parameter '{}'; {} takes {} (names are case-sensitive)",
                kind.as_str(),
                param.key,
                kind.as_str(),
                allowed.join(", ")
            )));
        }
        if command.params[..i].iter().any(|p| p.key == param.key) {
            return Err(ApiError::InvalidRequestBody(format!(
                "Command {index} ({}): parameter '{}' is given twice",
                kind.as_str(),
                param.key
            )));
        }
        if param.value.len() > MAX_PARAM || param.value.contains('\0') {
            return Err(ApiError::InvalidInput(format!(
                "Command {index} ({}): parameter '{}' must be at most {MAX_PARAM} bytes, without NUL",
                kind.as_str(),
                param.key
            )));
        }
    }
    let value = command
        .param(required)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            ApiError::MissingParameter(format!("{required} in command {index} ({})", kind.as_str()))
        })?
        .to_string();
    let args = command.param("Args").map(String::from);
    // The agent splits Args as a POSIX shell would; what it cannot split
    // would fail there, so it is refused here, before anything is queued.
    if let Some(args) = &args
        && shlex::split(args).is_none()
    {
        return Err(ApiError::InvalidInput(format!(
            "Command {index} ({}): Args cannot be split into arguments: a quote is not closed or a backslash ends it",
            kind.as_str()
        )));
    }
    Ok(match kind {
        CommandType::GetFile => Checked {
            kind,
            name: None,
            args: None,
            path: Some(value),
        },
        _ => Checked {
            kind,
            name: Some(value),
            args,
            path: None,
        },
    })
}

/// A comment (of a submission or a cancel) is at most `MAX_COMMENT` bytes.
pub fn check_comment(comment: Option<&str>) -> ApiResult<()> {
    if comment.is_some_and(|c| c.len() > MAX_COMMENT) {
        return Err(ApiError::InvalidInput(format!(
            "Comment must be at most {MAX_COMMENT} bytes"
        )));
    }
    Ok(())
}

/// Checks a request's commands and comment before anything is read: their
/// count, shapes and order, and that the caller's role allows their types.
/// `runliveresponse` and batches take the same commands.
pub fn check_commands(
    state: &SharedState,
    principal: &Principal,
    commands: Option<Vec<Command>>,
    comment: Option<&str>,
) -> ApiResult<(Vec<Command>, Vec<Checked>)> {
    let limits = &state.config.limits;
    let commands = commands.ok_or_else(|| ApiError::MissingParameter("Commands".into()))?;
    if commands.is_empty() {
        return Err(ApiError::InvalidRequestBody(
            "Commands must hold at least one command".into(),
        ));
    }
    if commands.len() > limits.commands_per_action {
        return Err(ApiError::MaximumBatchSizeExceeded(format!(
            "Received: {} commands, allowed: {}",
            commands.len(),
            limits.commands_per_action
        )));
    }
    check_comment(comment)?;
    let checked = commands
        .iter()
        .enumerate()
        .map(|(i, c)| check_command(i, c))
        .collect::<ApiResult<Vec<_>>>()?;
    for (i, pair) in checked.windows(2).enumerate() {
        if pair[1].kind < pair[0].kind {
            return Err(ApiError::InvalidRequestBody(format!(
                "Command {} ({}) comes after a {}; commands must be all PutFile, then RunScript, then GetFile",
                i + 1,
                pair[1].kind.as_str(),
                pair[0].kind.as_str()
            )));
        }
    }
    if !principal.has_any(permissions::RUN_ADVANCED)
        && let Some(command) = checked.iter().find(|c| c.kind != CommandType::GetFile)
    {
        return Err(ApiError::Forbidden(format!(
            "{} needs the advanced live response role ({}); {} allows GetFile only",
            command.kind.as_str(),
            roles::LIVE_RESPONSE,
            roles::LIVE_RESPONSE_BASIC
        )));
    }
    Ok((commands, checked))
}

/// Resolves checked commands to what agents run: library names to the
/// files' hashes (recorded now, so replacing a file later does not change
/// what is queued) and each command's timeout.
pub async fn resolve_commands(
    state: &SharedState,
    principal: &Principal,
    commands: Vec<Command>,
    checked: Vec<Checked>,
) -> ApiResult<Vec<NewCommand>> {
    let lr = &state.config.live_response;
    let mut new_commands = Vec::with_capacity(checked.len());
    for (index, (command, checked)) in commands.into_iter().zip(checked).enumerate() {
        let work = match (checked.kind, checked.name, checked.path) {
            (CommandType::GetFile, _, Some(path)) => Work::GetFile { path },
            (kind, Some(name), _) => {
                let file = match state
                    .store
                    .get_library_file(&principal.tenant_id, &name)
                    .await
                {
                    Ok(file) => file,
                    Err(StoreError::NotFound(_)) => {
                        return Err(ApiError::InvalidRequestBody(format!(
                            "Command {index} ({}): '{name}' is not in the live response library",
                            kind.as_str()
                        )));
                    }
                    Err(err) => return Err(err.into()),
                };
                if kind == CommandType::PutFile {
                    Work::PutFile {
                        file_name: file.file_name,
                        sha256: file.sha256,
                        signature: file.signature,
                    }
                } else {
                    Work::RunScript {
                        script_name: file.file_name,
                        sha256: file.sha256,
                        args: checked.args.filter(|a| !a.trim().is_empty()),
                        signature: file.signature,
                    }
                }
            }
            _ => {
                return Err(ApiError::InvalidRequestBody(format!(
                    "Command {index} is incomplete"
                )));
            }
        };
        let timeout_secs = match work {
            Work::RunScript { .. } => lr.script_timeout_secs,
            _ => lr.transfer_timeout_secs,
        };
        new_commands.push(NewCommand {
            command,
            work,
            timeout_secs,
        });
    }
    Ok(new_commands)
}

/// `POST /api/machines/{id}/runliveresponse`.
pub async fn run(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(machine): Path<String>,
    notes: crate::audit::Notes,
    JsonBody(request): JsonBody<RunLiveResponseRequest>,
) -> ApiResult<(StatusCode, Json<MachineAction>)> {
    notes.machine(&machine);
    authorize(&state, &principal, Access::RunLiveResponse).await?;
    let limits = &state.config.limits;
    let (commands, checked) = check_commands(
        &state,
        &principal,
        request.commands,
        request.comment.as_deref(),
    )?;
    let machine = super::visible_machine(&state, &principal, &machine).await?;
    let new_commands = resolve_commands(&state, &principal, commands, checked).await?;
    notes.machine(&machine.id);
    notes.detail(
        "commands",
        serde_json::to_value(new_commands.iter().map(|c| &c.work).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    if let Some(comment) = &request.comment {
        notes.detail("comment", comment.as_str());
    }
    let action = NewAction {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: principal.tenant_id.clone(),
        machine_id: machine.id.clone(),
        requestor: principal.name.clone(),
        requestor_id: principal.rate_key(),
        requestor_comment: request.comment,
        kind: reach_proto::api::ActionType::LiveResponse,
        commands: new_commands,
        now: Micros::now(),
    };
    let row = state
        .store
        .create_action(
            &action,
            crate::store::ActionLimits {
                running_per_tenant: limits.active_actions_per_tenant,
                pending_per_requestor: limits.pending_actions_per_app,
            },
        )
        .await?;
    notes.target(&row.id);
    tracing::info!(action.id = %row.id, machine.id = %row.machine_id, requestor = %row.requestor, commands = row.commands.len(), "live response action created");
    crate::cluster::send(&state, &row.machine_id, HubEvent::Wake).await;
    let mut body = super::machine_actions::to_wire(row);
    body.odata_context = Some(odata_context(&state, &headers, "MachineActions/$entity"));
    Ok((StatusCode::CREATED, Json(body)))
}
