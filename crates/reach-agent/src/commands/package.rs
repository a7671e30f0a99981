//! CollectInvestigationPackage: the collector's zip (`collect`), written in
//! the working folder, then sent through GetFile's resumable transfer with
//! one difference: each chunk is the zip's bytes themselves, not a deflate
//! segment (the zip is compressed already, and the server serves it as it
//! is). Before sending, the agent asks which chunks the server holds (by
//! size and CRC-32) and sends only the others; each carries its SHA-256,
//! and `complete` the whole zip's, which the command reports.

use std::io::Read;
use std::path::Path;

use reach_proto::agent::{ChunkInfo, CommandRef, CompleteChunks};
use sha2::{Digest, Sha256};

use super::{Context, Failure, Stop, Success, classify};
use crate::collect::{Bounds, Package, collect};

/// Collects the package and sends it; its SHA-256 is the outcome's.
pub async fn run(
    context: &Context,
    command: &CommandRef,
    chunk_bytes: u64,
) -> Result<Success, Failure> {
    let dir = context
        .work_dir
        .join(format!("package-{}-{}", command.action_id, command.index));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::new(format!("creating {}: {e}", dir.display())))?;
    let result = collect_and_send(context, command, chunk_bytes, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn collect_and_send(
    context: &Context,
    command: &CommandRef,
    chunk_bytes: u64,
    dir: &Path,
) -> Result<Success, Failure> {
    let package = collect(&context.machine_id, dir, Bounds::default())
        .await
        .map_err(|e| Failure::new(format!("Collecting the package failed: {e:#}")))?;
    tracing::info!(bytes = package.size, sha256 = %package.sha256, "investigation package collected");
    let chunk_bytes = chunk_bytes.clamp(64 * 1024, 256 * 1024 * 1024);
    super::retrying("sending the package", || {
        send(context, command, &package, chunk_bytes)
    })
    .await?;
    Ok(Success {
        sha256: Some(package.sha256),
        ..Success::default()
    })
}

/// One attempt: the chunks the server lacks, then `complete`.
async fn send(
    context: &Context,
    command: &CommandRef,
    package: &Package,
    chunk_bytes: u64,
) -> Result<(), Stop> {
    let held = super::held_chunks(context, command).await?;
    let fatal = |e: std::io::Error| Stop::Fatal(Failure::new(format!("reading the package: {e}")));
    let mut file = std::fs::File::open(&package.path).map_err(fatal)?;
    let count = package.size.div_ceil(chunk_bytes).max(1);
    let count = u32::try_from(count)
        .map_err(|_| Stop::Fatal(Failure::new("the package has too many chunks")))?;
    for n in 0..count {
        let size = chunk_bytes.min(package.size - u64::from(n) * chunk_bytes);
        let mut bytes = vec![0u8; size as usize];
        file.read_exact(&mut bytes).map_err(fatal)?;
        let raw_crc32 = crc32fast::hash(&bytes);
        if held
            .get(&n)
            .is_some_and(|c| c.raw_size == size && c.raw_crc32 == Some(raw_crc32))
        {
            continue;
        }
        let chunk = ChunkInfo {
            n,
            raw_size: size,
            raw_crc32: Some(raw_crc32),
            raw_sha256: hex::encode(Sha256::digest(&bytes)),
            stored_size: size,
            stored_sha256: String::new(),
        };
        context
            .client
            .put_chunk(&command.action_id, command.index, &chunk, bytes.into())
            .await
            .map_err(classify)?;
    }
    let whole = CompleteChunks {
        chunks: count,
        raw_size: package.size,
        raw_sha256: package.sha256.clone(),
    };
    context
        .client
        .complete(&command.action_id, command.index, &whole)
        .await
        .map_err(classify)
}
