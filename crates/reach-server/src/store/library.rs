//! The live response library: each tenant's scripts and files by name, with
//! their hash, size and signature (the bytes live in `files`).

use async_trait::async_trait;

use super::*;
use crate::time::Micros;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryRow {
    pub tenant_id: String,
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    pub description: Option<String>,
    pub has_parameters: bool,
    pub parameters_description: Option<String>,
    pub created_by: String,
    pub last_updated_by: Option<String>,
    pub creation_time: Micros,
    pub last_updated_time: Micros,
    /// Ed25519 signature (base64) uploaded with the file.
    pub signature: Option<String>,
}

#[async_trait]
pub trait Library: Send + Sync {
    /// Inserts a library entry, or replaces it when `replace` is set.
    /// Returns the entry it replaced. Conflict when it exists and `replace` is not set.
    async fn put_library_file(
        &self,
        row: &LibraryRow,
        replace: bool,
    ) -> StoreResult<Option<LibraryRow>>;
    async fn get_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow>;
    async fn list_library_files(&self, tenant_id: &str) -> StoreResult<Vec<LibraryRow>>;
    async fn delete_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow>;
    /// True when a library entry or an unfinished command still needs the blob of this hash.
    async fn library_blob_in_use(&self, tenant_id: &str, sha256: &str) -> StoreResult<bool>;
}
