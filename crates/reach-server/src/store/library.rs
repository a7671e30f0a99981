//! The live response library: each tenant's scripts and files by name, with
//! their hash, size and signature (the bytes live in `files`).

use async_trait::async_trait;

use super::*;
use crate::time::Micros;

/// A library file as recorded (its bytes are in `files` under its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryRow {
    /// Its tenant.
    pub tenant_id: String,
    /// Its name (unique in the tenant without case).
    pub file_name: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// What it is for.
    pub description: Option<String>,
    /// Whether the script takes arguments.
    pub has_parameters: bool,
    /// How to call it.
    pub parameters_description: Option<String>,
    /// Who first uploaded it.
    pub created_by: String,
    /// Who last replaced it.
    pub last_updated_by: Option<String>,
    /// When it was first uploaded.
    pub creation_time: Micros,
    /// When it was last replaced.
    pub last_updated_time: Micros,
    /// Ed25519 signature (base64) uploaded with the file.
    pub signature: Option<String>,
}

/// Each tenant's library of scripts and files.
#[async_trait]
pub trait Library: Send + Sync {
    /// Inserts a library entry, or replaces it when `replace` is set.
    /// Returns the entry it replaced. Conflict when it exists and `replace` is not set.
    async fn put_library_file(
        &self,
        row: &LibraryRow,
        replace: bool,
    ) -> StoreResult<Option<LibraryRow>>;
    /// By name, without case.
    async fn get_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow>;
    /// A tenant's library, by name.
    async fn list_library_files(&self, tenant_id: &str) -> StoreResult<Vec<LibraryRow>>;
    /// Deletes an entry and returns it; its blob is released by the caller.
    async fn delete_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow>;
    /// True when a library entry or an unfinished command still needs the blob of this hash.
    async fn library_blob_in_use(&self, tenant_id: &str, sha256: &str) -> StoreResult<bool>;
}
