//! What retention deletes: stored results past their age, chunks of
//! abandoned GetFiles, and library entries nothing uses.

use async_trait::async_trait;
use reach_proto::agent::CommandRef;

use super::*;
use crate::time::Micros;

/// A stored result whose action ended before the retention cutoff: what
/// to delete from the object store before `Store::forget_result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredResult {
    /// Which command.
    pub command: CommandRef,
    /// Its tenant.
    pub tenant_id: String,
    /// Its machine.
    pub machine_id: String,
    /// Its stored result, if one was recorded.
    pub result: Option<ResultBlob>,
    /// Chunks recorded for the command (a GetFile, whole or cut short).
    pub chunks: Vec<u32>,
}

/// What retention finds to delete, and forgets once deleted.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Stored results (and recorded chunks) of commands whose action ended
    /// before `ended_before` and that retention has not deleted; at most `limit`.
    async fn expired_results(
        &self,
        ended_before: Micros,
        limit: u32,
    ) -> StoreResult<Vec<ExpiredResult>>;
    /// Chunks recorded for commands whose action ended without their
    /// result (a cancelled, failed or timed-out GetFile); at most `limit`.
    async fn abandoned_chunks(&self, limit: u32) -> StoreResult<Vec<ExpiredResult>>;
    /// Forgets a command's stored result and chunks (the caller deleted
    /// their objects first); the command keeps its status, errors and the
    /// collected file's hash. False when there was nothing to forget.
    async fn forget_result(&self, command: &CommandRef, now: Micros) -> StoreResult<bool>;
    /// Library entries of every tenant not changed since `before` and used
    /// by no action created since then nor by any unfinished action.
    async fn unused_library_files(&self, before: Micros) -> StoreResult<Vec<LibraryRow>>;
}
