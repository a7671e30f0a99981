//! `GET /api/batches/{id}/results?index=N`: one NDJSON line per machine
//! whose command N is final (Completed or Failed, or never to run because
//! its action ended), streamed page by page: the server holds one page of
//! actions and the transcripts of one group of `GROUP` lines (each at most
//! the inline size, 64 KiB by default, read in one query per group; a
//! larger one, uploaded, alone) at a time, however large the batch. A
//! RunScript line carries the transcript object; a GetFile line the file's
//! SHA-256 and a fresh download link. Each call is an audit entry, as a
//! download link is.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use reach_proto::agent::{CommandRef, Work};
use reach_proto::api::CommandStatus;
use serde_json::{Value, json};

use super::visible_batch;
use crate::SharedState;
use crate::api::{Access, authorize};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::http::Path;
use crate::odata::Query;
use crate::store::{ActionRow, CommandRow, ResultBlob};

/// Actions read per page.
const PAGE: u32 = 500;

/// Lines whose transcripts kept in the database are read in one query.
const GROUP: usize = 50;

/// The largest transcript put inside a line; a larger one (only an agent
/// past its output cap could send one) gets a download link instead, so a
/// line never holds more than this in the server's memory.
pub const MAX_INLINE_TRANSCRIPT: u64 = 16 * 1024 * 1024;

/// `GET /api/batches/{id}/results?index=N`.
pub async fn results(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    notes: crate::audit::Notes,
) -> ApiResult<Response> {
    notes.target(&id);
    authorize(&state, &principal, Access::DownloadResults).await?;
    let batch = visible_batch(&state, &principal, &id).await?;
    let index = command_index(raw.as_deref(), batch.commands.len())?;
    notes.detail("index", index);
    // The caller's device groups narrow the machines, as for listings.
    let Some(scope) = crate::api::scoped(Query::default(), &principal.scope) else {
        return Ok(ndjson(Body::empty()));
    };
    let lines = futures::stream::try_unfold(0i64, move |after| {
        let (state, principal, headers, scope, batch_id) = (
            state.clone(),
            principal.clone(),
            headers.clone(),
            scope.clone(),
            batch.id.clone(),
        );
        async move {
            let page = state
                .store
                .batch_actions_after(&principal.tenant_id, &batch_id, &scope, after, PAGE)
                .await?;
            let Some((last, _)) = page.last() else {
                return Ok::<_, ApiError>(None);
            };
            let last = *last;
            let mut out = Vec::new();
            let mut page = page.into_iter().map(|(_, action)| action).peekable();
            while page.peek().is_some() {
                let group: Vec<ActionRow> = page.by_ref().take(GROUP).collect();
                let mut kept = kept_transcripts(&state, &principal, &group, index).await?;
                for action in group {
                    let line = line(&state, &headers, &principal, &mut kept, action, index).await?;
                    if let Some(line) = line {
                        out.extend_from_slice(line.to_string().as_bytes());
                        out.push(b'\n');
                    }
                }
            }
            Ok(Some((Bytes::from(out), last)))
        }
    })
    .inspect_err(|err| tracing::error!(error = %err, "streaming a batch's results failed"))
    .map_err(std::io::Error::other)
    .boxed();
    Ok(ndjson(Body::from_stream(lines)))
}

fn ndjson(body: Body) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// `index=N` from the query, N one of the batch's commands.
pub(crate) fn command_index(raw: Option<&str>, commands: usize) -> ApiResult<u32> {
    let value = url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(key, _)| key.eq_ignore_ascii_case("index"))
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| ApiError::MissingParameter("index".into()))?;
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (*n as usize) < commands)
        .ok_or_else(|| {
            ApiError::InvalidInput(format!(
                "index must be a command of the batch, from 0 to {}, got '{value}'",
                commands - 1
            ))
        })
}

/// The transcripts of command `index` of `actions` that are kept in the
/// database, in one read.
async fn kept_transcripts(
    state: &SharedState,
    principal: &Principal,
    actions: &[ActionRow],
    index: u32,
) -> ApiResult<HashMap<CommandRef, Vec<u8>>> {
    let wanted: Vec<CommandRef> = actions
        .iter()
        .flat_map(|a| a.commands.iter().filter(|c| c.index == index))
        .filter_map(|c| c.result.as_ref().and_then(|blob| blob.inline_command()))
        .collect();
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(state
        .store
        .inline_results(&principal.tenant_id, &wanted)
        .await?)
}

/// The machine's line, or None while its command N may still run.
async fn line(
    state: &SharedState,
    headers: &HeaderMap,
    principal: &Principal,
    kept: &mut HashMap<CommandRef, Vec<u8>>,
    action: ActionRow,
    index: u32,
) -> ApiResult<Option<Value>> {
    let Some(command) = action.commands.iter().find(|c| c.index == index) else {
        return Ok(None);
    };
    let ended = matches!(
        command.status,
        CommandStatus::Completed | CommandStatus::Failed
    );
    if !ended && !action.status.is_final() {
        return Ok(None);
    }
    let mut line = json!({
        "machineId": action.machine_id,
        "computerDnsName": action.computer_dns_name,
        "actionId": action.id,
        "status": action.status,
        "commandStatus": command.status,
        "errors": command.errors,
    });
    if command.status == CommandStatus::Completed {
        match &command.work {
            Work::RunScript { .. } => match &command.result {
                Some(blob) if blob.size > MAX_INLINE_TRANSCRIPT => {
                    line["transcript"] = Value::Null;
                    line["downloadUrl"] = link(state, headers, principal, command, blob).await?;
                }
                _ => line["transcript"] = transcript(state, kept, command).await?,
            },
            Work::GetFile { .. } => {
                line["sha256"] = json!(command.file_sha256);
                line["downloadUrl"] = match &command.result {
                    Some(blob) => link(state, headers, principal, command, blob).await?,
                    None => Value::Null,
                };
            }
            _ => {}
        }
    }
    Ok(Some(line))
}

/// A fresh download link of the command's result, as a JSON string.
async fn link(
    state: &SharedState,
    headers: &HeaderMap,
    principal: &Principal,
    command: &CommandRow,
    blob: &ResultBlob,
) -> ApiResult<Value> {
    let url = crate::api::download::result_link(
        state,
        headers,
        &principal.tenant_id,
        blob,
        &command.work,
    )
    .await?;
    Ok(json!(url))
}

/// The stored transcript (`{script_name, exit_code, script_output,
/// script_errors}`), taken out of `kept` (each line's once) or read from
/// the object store, or null once retention deleted it.
async fn transcript(
    state: &SharedState,
    kept: &mut HashMap<CommandRef, Vec<u8>>,
    command: &CommandRow,
) -> ApiResult<Value> {
    let Some(blob) = &command.result else {
        return Ok(Value::Null);
    };
    let bytes = match blob.inline_command() {
        Some(reference) => match kept.remove(&reference) {
            Some(bytes) => bytes,
            None => return Ok(Value::Null),
        },
        None => {
            let (_, stream) = state
                .files
                .get_stream(&blob.key)
                .await
                .map_err(ApiError::internal)?;
            let chunks: Vec<Bytes> = stream.try_collect().await.map_err(ApiError::internal)?;
            chunks.concat()
        }
    };
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}
