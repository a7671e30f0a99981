//! The files a command carries both ways, whole: a PutFile or RunScript
//! command's library file, downloaded by the agent a chunk at a time (each
//! with its SHA-256, so the agent checks every chunk and resumes from the
//! next), and a RunScript transcript, uploaded in one stream into the object
//! store. Bytes stream, at most one chunk in memory; a machine only reaches
//! the commands of its own actions (`OwnCommand`). A library file of at most
//! `live_response.inline_payload_bytes` skips its download: it travels in
//! the command's `Run` message (`inline`), checked by the agent the same way.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use reach_proto::agent::{Work, paths};
use reach_proto::api::CommandStatus;
use sha2::{Digest, Sha256};

use super::extract::{OwnCommand, parse_index};
use super::inline_cache::Inline;
use super::upload_failed;
use crate::SharedState;
use crate::error::{ApiError, ApiResult};
use crate::files::{FileError, Files};
use crate::metrics::Metrics;
use crate::store::ResultBlob;

/// `GET /agent/v1/commands/{action}/{index}/payload?chunk=K`: chunk K of the
/// library file (`chunk_bytes` each), with its SHA-256 and the file's size
/// and chunk count in headers, so the agent checks every chunk and resumes
/// from the next one. At most one chunk is in memory.
pub async fn payload(
    State(state): State<SharedState>,
    own: OwnCommand,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let OwnCommand {
        identity,
        command: reference,
        row: command,
    } = own;
    let (action_id, index) = (&reference.action_id, reference.index);
    let chunk = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "chunk")
        .map(|(_, v)| parse_index(&v))
        .transpose()?
        .unwrap_or(0);
    let sha256 = match &command.work {
        Work::PutFile { sha256, .. } | Work::RunScript { sha256, .. } => sha256.clone(),
        other => {
            return Err(ApiError::BadRequest(format!(
                "{} commands have no payload",
                other.kind()
            )));
        }
    };
    if command.status != CommandStatus::InProgress {
        return Err(ApiError::BadRequest(format!(
            "Command {index} is {}, not InProgress",
            command.status
        )));
    }
    let key = Files::library_key(&identity.tenant_id, &sha256);
    let gone = |err: FileError| match err {
        FileError::NotFound(_) => {
            ApiError::ResourceNotFound("The library file's bytes are gone".into())
        }
        other => ApiError::internal(other),
    };
    let size = state.files.size(&key).await.map_err(gone)?;
    let chunk_bytes = state.config.live_response.chunk_bytes.max(1);
    let chunks = size.div_ceil(chunk_bytes).max(1);
    if u64::from(chunk) >= chunks {
        return Err(ApiError::RangeNotSatisfiable(format!(
            "The payload has {chunks} chunks; there is no chunk {chunk}"
        )));
    }
    let start = u64::from(chunk) * chunk_bytes;
    let end = (start + chunk_bytes).min(size);
    let bytes = state
        .files
        .get_range(&key, start..end)
        .await
        .map_err(gone)?;
    let chunk_sha256 = hex::encode(Sha256::digest(&bytes));
    tracing::debug!(machine.id = %identity.machine_id, action.id = %action_id, command.index = index, chunk, "payload chunk served");
    let len = bytes.len();
    Metrics::add(&state.metrics.bytes_sent, len as u64);
    let once = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let stream = state.bandwidth.throttle(&identity.machine_id, once);
    let mut response = Body::from_stream(stream).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    out.insert(paths::CHUNKS, HeaderValue::from(chunks));
    out.insert(paths::SIZE, HeaderValue::from(size));
    if let Ok(value) = HeaderValue::from_str(&chunk_sha256) {
        out.insert(paths::SHA256, value);
    }
    Ok(response)
}

/// `PUT /agent/v1/commands/{action}/{index}/result`.
pub async fn result(
    State(state): State<SharedState>,
    own: OwnCommand,
    body: Body,
) -> ApiResult<StatusCode> {
    match own.row.work {
        Work::RunScript { .. } | Work::StopAndQuarantineFile { .. } => {}
        Work::PutFile { .. } | Work::Isolate { .. } | Work::Unisolate | Work::Offboard => {
            return Err(ApiError::BadRequest(format!(
                "{} commands have no result",
                own.row.work.kind()
            )));
        }
        Work::GetFile { .. } | Work::CollectInvestigationPackage => {
            return Err(ApiError::BadRequest(format!(
                "A {} result is sent in chunks, not as one upload",
                own.row.work.kind()
            )));
        }
    }
    own.running()?;
    let OwnCommand {
        identity,
        command: reference,
        ..
    } = own;
    let index = reference.index;
    let key = Files::transcript_key(&reference.action_id, index, crate::time::Micros::now());
    let max = Some(state.config.limits.result_max_bytes).filter(|max| *max > 0);
    let stored = state
        .files
        .put_stream(
            &key,
            state.bandwidth.throttle(
                &identity.machine_id,
                crate::http::slow_body::guard(body.into_data_stream(), &state.config.http),
            ),
            max,
        )
        .await
        .map_err(|err| {
            upload_failed(err, |max| {
                ApiError::PayloadTooLarge(format!(
                    "The result is larger than this server accepts ({max} bytes, gzip-compressed)"
                ))
            })
        })?;
    Metrics::add(&state.metrics.bytes_received, stored.size);
    Metrics::add(&state.metrics.transcripts_uploaded, 1);
    state
        .store
        .record_result(
            &identity.machine_id,
            &reference,
            &ResultBlob {
                key,
                size: stored.size,
                sha256: Some(stored.sha256),
                chunks: None,
            },
        )
        .await?;
    tracing::info!(machine.id = %identity.machine_id, action.id = %reference.action_id, command.index = index, bytes = stored.size, "result stored");
    Ok(StatusCode::NO_CONTENT)
}

/// A PutFile's or RunScript's library file, base64, when it is at most
/// `live_response.inline_payload_bytes` long: it then travels inside the
/// `Run` message. None for GetFile, a larger file, or a file that cannot be
/// read now (the agent then downloads it, and a missing file fails there,
/// with the download's message). Read once per file and then kept in
/// memory (`InlineCache`).
pub async fn inline(state: &SharedState, tenant_id: &str, work: &Work) -> Option<String> {
    use base64::Engine;
    let limit = state.config.live_response.inline_payload_bytes;
    let sha256 = match work {
        Work::PutFile { sha256, .. } | Work::RunScript { sha256, .. } => sha256,
        _ => return None,
    };
    if limit == 0 {
        return None;
    }
    let key = Files::library_key(tenant_id, sha256);
    let file = match state.inline_payloads.get(&key) {
        Some(file) => file,
        None => {
            let size = state.files.size(&key).await.ok()?;
            let file = if size > limit {
                Inline::TooLarge
            } else {
                Inline::Bytes(state.files.get_range(&key, 0..size).await.ok()?)
            };
            state.inline_payloads.keep(&key, file.clone());
            file
        }
    };
    let Inline::Bytes(bytes) = file else {
        return None;
    };
    Metrics::add(&state.metrics.bytes_sent, bytes.len() as u64);
    Some(base64::engine::general_purpose::STANDARD.encode(&bytes))
}
