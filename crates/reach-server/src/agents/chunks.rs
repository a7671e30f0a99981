//! The chunked, resumable upload of a GetFile result: each chunk is a
//! deflate segment, decompressed and checked against the size and CRC-32
//! (or SHA-256) it was announced with as it streams into its own object
//! (`verify`); the agent asks which chunks are stored and sends only the
//! rest. `complete` checks the whole file's SHA-256 (carried over chunks
//! that arrived in order, or read back from the stored chunks) and stores
//! the gzip header and tail that make the segments one gzip member, before
//! the result becomes visible. At most one chunk is in memory; a machine
//! only reaches the commands of its own actions (`OwnCommand`).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use reach_proto::agent::{ChunkInfo, CommandRef, CompleteChunks, Work, paths};
use serde::Deserialize;

use super::extract::{OwnCommand, parse_index};
use super::{upload_failed, verify};
use crate::SharedState;
use crate::error::{ApiError, ApiResult};
use crate::files::{FileError, Files};
use crate::http::{JsonBody, Path};
use crate::metrics::Metrics;
use crate::store::{ChunkRow, ResultBlob};

/// The chunk number of `.../chunks/{n}`.
#[derive(Deserialize)]
pub struct ChunkPath {
    n: String,
}

/// A running GetFile (or investigation package) command of the calling
/// machine; true for a package, whose chunks are its bytes as they are
/// (`raw_chunks`).
fn running_get_file(own: &OwnCommand) -> ApiResult<bool> {
    let raw = match own.row.work {
        Work::GetFile { .. } => false,
        Work::CollectInvestigationPackage => true,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "Command {} is not a GetFile",
                own.command.index
            )));
        }
    };
    own.running()?;
    Ok(raw)
}

/// `limit` for chunk `n`, lowered to what the result's cap
/// (`limits.result_max_bytes`) leaves beside the command's other chunks.
pub(super) async fn within_result(
    state: &SharedState,
    command: &CommandRef,
    n: u32,
    limit: u64,
) -> ApiResult<u64> {
    let max_total = state.config.limits.result_max_bytes;
    if max_total == 0 {
        return Ok(limit);
    }
    let others: u64 = state
        .store
        .list_chunks(command)
        .await?
        .iter()
        .filter(|c| c.n != n)
        .map(|c| c.stored_size)
        .sum();
    Ok(limit.min(max_total.saturating_sub(others)))
}

/// The `Reach-Raw-Size` header: a chunk's bytes, at most `chunk_bytes`.
fn raw_size_header(headers: &HeaderMap, chunk_bytes: u64) -> ApiResult<u64> {
    headers
        .get(paths::RAW_SIZE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .filter(|size| *size <= chunk_bytes)
        .ok_or_else(|| {
            ApiError::InvalidInput(format!(
                "{} must be a size of at most {chunk_bytes} bytes",
                paths::RAW_SIZE
            ))
        })
}

fn to_info(row: ChunkRow) -> ChunkInfo {
    ChunkInfo {
        n: row.n,
        raw_size: row.raw_size,
        raw_crc32: row.raw_crc32,
        raw_sha256: row.raw_sha256,
        stored_size: row.stored_size,
        stored_sha256: row.stored_sha256,
    }
}

/// `GET /agent/v1/commands/{action}/{index}/chunks`: what is already stored.
pub async fn list_chunks(
    State(state): State<SharedState>,
    own: OwnCommand,
) -> ApiResult<Json<Vec<ChunkInfo>>> {
    running_get_file(&own)?;
    let chunks = state.store.list_chunks(&own.command).await?;
    Ok(Json(chunks.into_iter().map(to_info).collect()))
}

fn hex_header(headers: &HeaderMap, name: &str) -> ApiResult<String> {
    let value = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::MissingParameter(format!("header {name}")))?;
    if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::InvalidInput(format!(
            "{name} must be 64 hex characters"
        )));
    }
    Ok(value.to_ascii_lowercase())
}

fn crc_header(headers: &HeaderMap) -> ApiResult<u32> {
    headers
        .get(paths::RAW_CRC32)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 8)
        .and_then(|v| u32::from_str_radix(v, 16).ok())
        .ok_or_else(|| {
            ApiError::InvalidInput(format!("{} must be 8 hex characters", paths::RAW_CRC32))
        })
}

/// `PUT /agent/v1/commands/{action}/{index}/chunks/{n}`: one deflate segment.
pub async fn put_chunk(
    State(state): State<SharedState>,
    own: OwnCommand,
    Path(ChunkPath { n }): Path<ChunkPath>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let n = parse_index(&n)?;
    let chunk_bytes = state.config.live_response.chunk_bytes;
    if running_get_file(&own)? {
        let raw_size = raw_size_header(&headers, chunk_bytes)?;
        return super::raw_chunks::put(&state, own, n, &headers, body, raw_size).await;
    }
    let OwnCommand {
        identity, command, ..
    } = own;
    let index = command.index;
    // The decompressed bytes' CRC-32 or SHA-256 (or both), and optionally the
    // segment's own hash: its decompressed bytes are checked either way.
    let raw_crc32 = headers
        .get(paths::RAW_CRC32)
        .map(|_| crc_header(&headers))
        .transpose()?;
    let raw_sha256 = headers
        .get(paths::RAW_SHA256)
        .map(|_| hex_header(&headers, paths::RAW_SHA256))
        .transpose()?;
    if raw_crc32.is_none() && raw_sha256.is_none() {
        return Err(ApiError::MissingParameter(format!(
            "header {} or {}",
            paths::RAW_CRC32,
            paths::RAW_SHA256
        )));
    }
    let raw_sha256 = raw_sha256.unwrap_or_default();
    let sha256 = headers
        .get(paths::SHA256)
        .map(|_| hex_header(&headers, paths::SHA256))
        .transpose()?;
    let raw_size = raw_size_header(&headers, chunk_bytes)?;
    // A segment is at most a little larger than its bytes (stored deflate blocks).
    let limit = within_result(&state, &command, n, raw_size + raw_size / 64 + 64 * 1024).await?;
    let max_total = state.config.limits.result_max_bytes;
    let prefix = Files::chunks_prefix(&command.action_id, index);
    let key = Files::chunk_key(&prefix, n);
    // Decompressed and checked as it streams in, beside the store's write.
    let carried = state
        .chunks_in_order
        .take(&command, n, state.files.presigns());
    let checker = verify::Checker::start(carried, !raw_sha256.is_empty(), raw_size);
    let stored = state
        .files
        .put_stream_hashing(
            &key,
            checker.tap(
                state
                    .bandwidth
                    .throttle(
                        &identity.machine_id,
                        crate::http::slow_body::guard(body.into_data_stream(), &state.config.http),
                    ),
            ),
            Some(limit),
            sha256.is_some(),
        )
        .await
        .map_err(|err| {
            upload_failed(err, |limit| {
                if max_total > 0 {
                    ApiError::PayloadTooLarge(format!(
                        "The result is larger than this server accepts ({max_total} bytes, gzip-compressed)"
                    ))
                } else {
                    ApiError::PayloadTooLarge(format!(
                        "Chunk {n} is larger than its {raw_size} bytes allow ({limit} bytes)"
                    ))
                }
            })
        })?;
    let checked = checker.finish().await;
    let verdict = match (&sha256, checked) {
        (Some(sha256), _) if stored.sha256 != *sha256 => Err(format!(
            "Chunk {n} arrived with SHA-256 {} instead of {sha256}; send it again",
            stored.sha256
        )),
        (_, Ok(checked)) if checked.matches(raw_size, raw_crc32, &raw_sha256) => Ok(checked),
        (_, Ok(_)) => Err(format!(
            "Chunk {n} does not hold the {raw_size} bytes (with the CRC-32 or SHA-256) it was sent for"
        )),
        (_, Err(err)) if err.kind() == std::io::ErrorKind::FileTooLarge => Err(format!(
            "Chunk {n} decompresses to more than the {raw_size} bytes it was sent for"
        )),
        (_, Err(err)) => Err(format!("Chunk {n} is not a valid deflate segment: {err}")),
    };
    let checked = match verdict {
        Ok(checked) => checked,
        Err(why) => {
            let _ = state.files.delete(&key).await;
            return Err(ApiError::BadRequest(why));
        }
    };
    Metrics::add(&state.metrics.bytes_received, stored.size);
    let row = ChunkRow {
        n,
        raw_size,
        // What the segment really held, whether or not it was announced.
        raw_crc32: Some(checked.raw_crc32),
        raw_sha256,
        stored_size: stored.size,
        stored_sha256: stored.sha256,
        attempts: 1,
    };
    state
        .store
        .put_chunk(&identity.machine_id, &command, &row)
        .await?;
    if let Some(progress) = checked.progress {
        state.chunks_in_order.put(command, progress, n);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /agent/v1/commands/{action}/{index}/complete`: checks every chunk
/// and the whole file, then makes the result visible.
pub async fn complete(
    State(state): State<SharedState>,
    own: OwnCommand,
    JsonBody(body): JsonBody<CompleteChunks>,
) -> ApiResult<StatusCode> {
    let raw = running_get_file(&own)?;
    let chunks = state.store.list_chunks(&own.command).await?;
    if let Some(missing) =
        (0..body.chunks).find(|n| chunks.get(*n as usize).is_none_or(|c| c.n != *n))
    {
        return Err(ApiError::BadRequest(format!("Chunk {missing} is missing")));
    }
    if chunks.len() != body.chunks as usize {
        return Err(ApiError::BadRequest(format!(
            "{} chunks are stored, not {}",
            chunks.len(),
            body.chunks
        )));
    }
    if raw {
        return super::raw_chunks::complete(&state, own, body, &chunks).await;
    }
    let OwnCommand {
        identity, command, ..
    } = own;
    let index = command.index;
    let prefix = Files::chunks_prefix(&command.action_id, index);
    let progress = match state.chunks_in_order.finish(&command, body.chunks) {
        // Every chunk was decoded as it arrived, in order, on this node.
        Some(progress) => progress,
        None => read_back(&state, &prefix, &chunks).await?,
    };
    let verify::Whole {
        raw_size,
        raw_sha256,
        tail,
        stored_size,
        stored_sha256,
    } = progress
        .whole()
        .map_err(|e| ApiError::BadRequest(format!("The chunks are not one deflate stream: {e}")))?;
    if raw_size != body.raw_size || raw_sha256 != body.raw_sha256.to_ascii_lowercase() {
        return Err(ApiError::BadRequest(format!(
            "The stored chunks make {raw_size} bytes with SHA-256 {raw_sha256}, not the file's {} bytes with {}",
            body.raw_size, body.raw_sha256
        )));
    }
    // The frame that makes the segments one gzip member.
    let parts = Files::result_parts(&prefix, body.chunks);
    for (key, bytes) in [
        (&parts[0], &reach_proto::gzip_frame::HEADER[..]),
        (&parts[parts.len() - 1], &tail[..]),
    ] {
        state
            .files
            .put_bytes(key, bytes::Bytes::copy_from_slice(bytes))
            .await
            .map_err(ApiError::internal)?;
    }
    let blob = if state.files.presigns() {
        // One presigned URL serves one object: compose the chunks into it
        // (the stored stream was hashed to check the composed object).
        let stored_sha256 = stored_sha256.ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("the stored chunks were not hashed"))
        })?;
        compose_chunks(&state, &command, &parts, &stored_sha256).await?
    } else {
        // Served part after part: header, segments, tail.
        ResultBlob {
            key: prefix,
            size: stored_size,
            sha256: None,
            chunks: Some(body.chunks),
        }
    };
    state
        .store
        .record_result(&identity.machine_id, &command, &blob)
        .await?;
    tracing::info!(machine.id = %identity.machine_id, action.id = %command.action_id, command.index = index, bytes = raw_size, stored = stored_size, chunks = body.chunks, "chunked result stored");
    Ok(StatusCode::NO_CONTENT)
}

/// The bytes of stored chunk `n` under `prefix`; one recorded but missing
/// is the agent's to send again.
pub(super) async fn open_chunk(
    state: &SharedState,
    prefix: &str,
    n: u32,
) -> ApiResult<futures::stream::BoxStream<'static, Result<bytes::Bytes, object_store::Error>>> {
    match state.files.get_stream(&Files::chunk_key(prefix, n)).await {
        Ok((_, stream)) => Ok(stream),
        Err(FileError::NotFound(_)) => Err(ApiError::BadRequest(format!(
            "Chunk {n} is recorded but not stored; send the file again"
        ))),
        Err(err) => Err(ApiError::internal(err)),
    }
}

/// Reads a command's stored chunks back through one decoder, checking each
/// against what it was sent for: the whole stream when it was not carried
/// while the chunks arrived (out of order, resumed, another node, a restart).
async fn read_back(
    state: &SharedState,
    prefix: &str,
    chunks: &[ChunkRow],
) -> ApiResult<verify::Progress> {
    let mut progress = verify::Progress::new(state.files.presigns());
    for chunk in chunks {
        let stream = open_chunk(state, prefix, chunk.n).await?;
        let checker =
            verify::Checker::start(Some(progress), !chunk.raw_sha256.is_empty(), chunk.raw_size);
        let mut read = std::pin::pin!(checker.tap(stream));
        while let Some(part) = read.next().await {
            part.map_err(ApiError::internal)?;
        }
        let checked = checker.finish().await.map_err(|e| {
            ApiError::BadRequest(format!(
                "Chunk {} is not a valid deflate segment: {e}",
                chunk.n
            ))
        })?;
        if !checked.matches(chunk.raw_size, chunk.raw_crc32, &chunk.raw_sha256) {
            return Err(ApiError::BadRequest(format!(
                "Chunk {} does not hold the bytes it was sent for",
                chunk.n
            )));
        }
        progress = checked.progress.ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("the checker dropped the carried hashes"))
        })?;
    }
    Ok(progress)
}

/// Streams a chunked result's parts (header, segments, tail) into one
/// object, checks it holds exactly the verified bytes, and deletes the parts.
pub(super) async fn compose_chunks(
    state: &SharedState,
    command: &CommandRef,
    parts: &[String],
    stored_sha256: &str,
) -> ApiResult<ResultBlob> {
    let key = Files::composed_key(&command.action_id, command.index);
    let stored = state
        .files
        .compose(parts, &key)
        .await
        .map_err(ApiError::internal)?;
    if stored.sha256 != stored_sha256 {
        let _ = state.files.delete(&key).await;
        return Err(ApiError::internal(anyhow::anyhow!(
            "the composed result of {}/{} does not match its chunks",
            command.action_id,
            command.index
        )));
    }
    for part in parts {
        if let Err(err) = state.files.delete(part).await {
            tracing::warn!(key = %part, error = %err, "deleting a composed chunk failed; retention removes it");
        }
    }
    Ok(ResultBlob {
        key,
        size: stored.size,
        sha256: Some(stored.sha256),
        chunks: None,
    })
}
