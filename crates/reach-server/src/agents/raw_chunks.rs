//! The chunked transfer of an investigation package: GetFile's resumable
//! protocol (the same endpoints, headers and chunk records), but each
//! chunk is the file's bytes themselves, not a deflate segment. A chunk is
//! stored only when its size and SHA-256 are the ones announced (its CRC-32
//! is computed as it arrives, for the agent to resume by); `complete`
//! reads the stored chunks back in order and checks the whole file's size
//! and SHA-256 before the result exists. The result is served as the
//! chunks one after another (between an empty head and tail, so the
//! segments' serving path applies), or composed into one object where the
//! store presigns: the zip exactly as the agent sent it, never gzipped.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use reach_proto::agent::{CompleteChunks, paths};
use sha2::{Digest, Sha256};

use super::extract::OwnCommand;
use crate::SharedState;
use crate::error::{ApiError, ApiResult};
use crate::files::Files;
use crate::metrics::Metrics;
use crate::store::{ChunkRow, ResultBlob};

/// `PUT .../chunks/{n}` of a package: chunk `n`, stored as it is.
pub async fn put(
    state: &SharedState,
    own: OwnCommand,
    n: u32,
    headers: &HeaderMap,
    body: Body,
    raw_size: u64,
) -> ApiResult<StatusCode> {
    let OwnCommand {
        identity, command, ..
    } = own;
    let raw_sha256 = headers
        .get(paths::RAW_SHA256)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            ApiError::MissingParameter(format!(
                "header {} (a package's chunk is checked by its SHA-256)",
                paths::RAW_SHA256
            ))
        })?;
    let limit = super::chunks::within_result(state, &command, n, raw_size).await?;
    let key = Files::chunk_key(&Files::chunks_prefix(&command.action_id, command.index), n);
    let crc = Arc::new(Mutex::new(crc32fast::Hasher::new()));
    let tapped = {
        let crc = crc.clone();
        state
            .bandwidth
            .throttle(
                &identity.machine_id,
                crate::http::slow_body::guard(body.into_data_stream(), &state.config.http),
            )
            .map(move |part| {
                if let Ok(bytes) = &part {
                    crc.lock().unwrap_or_else(|e| e.into_inner()).update(bytes);
                }
                part
            })
    };
    let stored = state
        .files
        .put_stream_hashing(&key, tapped, Some(limit), true)
        .await
        .map_err(|err| {
            super::upload_failed(err, |_| {
                ApiError::PayloadTooLarge(format!(
                    "Chunk {n} is larger than its {raw_size} bytes, or the result than this server accepts"
                ))
            })
        })?;
    if stored.size != raw_size || stored.sha256 != raw_sha256 {
        let _ = state.files.delete(&key).await;
        return Err(ApiError::BadRequest(format!(
            "Chunk {n} arrived as {} bytes with SHA-256 {}, not the {raw_size} bytes with {raw_sha256} it was sent for; send it again",
            stored.size, stored.sha256
        )));
    }
    Metrics::add(&state.metrics.bytes_received, stored.size);
    let raw_crc32 = crc
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .finalize();
    let row = ChunkRow {
        n,
        raw_size,
        raw_crc32: Some(raw_crc32),
        raw_sha256,
        stored_size: stored.size,
        stored_sha256: stored.sha256,
        attempts: 1,
    };
    state
        .store
        .put_chunk(&identity.machine_id, &command, &row)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../complete` of a package: every chunk there, the whole file as
/// announced, then the result recorded.
pub async fn complete(
    state: &SharedState,
    own: OwnCommand,
    body: CompleteChunks,
    chunks: &[ChunkRow],
) -> ApiResult<StatusCode> {
    let OwnCommand {
        identity, command, ..
    } = own;
    let prefix = Files::chunks_prefix(&command.action_id, command.index);
    let mut whole = Sha256::new();
    let mut size = 0u64;
    for chunk in chunks {
        let mut stream = super::chunks::open_chunk(state, &prefix, chunk.n).await?;
        while let Some(part) = stream.next().await {
            let part = part.map_err(ApiError::internal)?;
            size += part.len() as u64;
            whole.update(&part);
        }
    }
    let sha256 = hex::encode(whole.finalize());
    if size != body.raw_size || sha256 != body.raw_sha256.to_ascii_lowercase() {
        return Err(ApiError::BadRequest(format!(
            "The stored chunks make {size} bytes with SHA-256 {sha256}, not the file's {} bytes with {}",
            body.raw_size, body.raw_sha256
        )));
    }
    // Empty ends: the segments' serving path, with nothing around the bytes.
    let parts = Files::result_parts(&prefix, body.chunks);
    for key in [&parts[0], &parts[parts.len() - 1]] {
        state
            .files
            .put_bytes(key, bytes::Bytes::new())
            .await
            .map_err(ApiError::internal)?;
    }
    let blob = if state.files.presigns() {
        super::chunks::compose_chunks(state, &command, &parts, &sha256).await?
    } else {
        ResultBlob {
            key: prefix,
            size,
            sha256: None,
            chunks: Some(body.chunks),
        }
    };
    state
        .store
        .record_result(&identity.machine_id, &command, &blob)
        .await?;
    tracing::info!(machine.id = %identity.machine_id, action.id = %command.action_id, command.index = command.index, bytes = size, sha256 = %sha256, chunks = body.chunks, "investigation package stored");
    Ok(StatusCode::NO_CONTENT)
}
