//! The SQL of `Library` (see `store::library`), for both engines. The bytes
//! are in `files`; this is only the catalogue.

use async_trait::async_trait;

use super::*;
use crate::store::*;

#[async_trait]
impl Library for SqlStore {
    async fn put_library_file(
        &self,
        row: &LibraryRow,
        replace: bool,
    ) -> StoreResult<Option<LibraryRow>> {
        let mut tx = self.write().await?;
        self.lock_tenant(&mut tx, &row.tenant_id).await?;
        let existing = exec::query(
            "SELECT * FROM library_files WHERE tenant_id = $1 AND lower(file_name) = lower($2)",
        )
        .bind(&row.tenant_id)
        .bind(&row.file_name)
        .fetch_optional(&mut tx)
        .await?
        .map(|r| rows::library(&r))
        .transpose()?;
        match &existing {
            Some(old) if !replace => {
                return Err(StoreError::Conflict(format!(
                    "A library file named '{}' already exists; set OverrideIfExists=true to replace it",
                    old.file_name
                )));
            }
            Some(old) => {
                exec::query(
                    "UPDATE library_files SET sha256 = $1, size = $2, description = $3, has_parameters = $4,
                        parameters_description = $5, last_updated_by = $6, last_updated_us = $7,
                        signature = $10
                     WHERE tenant_id = $8 AND file_name = $9",
                )
                .bind(&row.sha256)
                .bind(row.size as i64)
                .bind(&row.description)
                .bind(row.has_parameters as i64)
                .bind(&row.parameters_description)
                .bind(&row.created_by)
                .bind(row.last_updated_time.0)
                .bind(&row.tenant_id)
                .bind(&old.file_name)
                .bind(&row.signature)
                .execute(&mut tx)
                .await?;
            }
            None => {
                exec::query(
                    "INSERT INTO library_files (tenant_id, file_name, sha256, size, description, has_parameters,
                        parameters_description, created_by, last_updated_by, creation_us, last_updated_us,
                        signature)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&row.tenant_id)
                .bind(&row.file_name)
                .bind(&row.sha256)
                .bind(row.size as i64)
                .bind(&row.description)
                .bind(row.has_parameters as i64)
                .bind(&row.parameters_description)
                .bind(&row.created_by)
                .bind(&row.last_updated_by)
                .bind(row.creation_time.0)
                .bind(row.last_updated_time.0)
                .bind(&row.signature)
                .execute(&mut tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(existing)
    }

    async fn get_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow> {
        let row = exec::query(
            "SELECT * FROM library_files WHERE tenant_id = $1 AND lower(file_name) = lower($2)",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("Library file {name}")))?;
        rows::library(&row)
    }

    async fn list_library_files(&self, tenant_id: &str) -> StoreResult<Vec<LibraryRow>> {
        let rows =
            exec::query("SELECT * FROM library_files WHERE tenant_id = $1 ORDER BY file_name")
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(rows::library).collect()
    }

    async fn delete_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow> {
        let mut tx = self.write().await?;
        self.lock_tenant(&mut tx, tenant_id).await?;
        let row = exec::query(
            "SELECT * FROM library_files WHERE tenant_id = $1 AND lower(file_name) = lower($2)",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("Library file {name}")))?;
        let row = rows::library(&row)?;
        exec::query(
            "DELETE FROM library_files WHERE tenant_id = $1 AND lower(file_name) = lower($2)",
        )
        .bind(tenant_id)
        .bind(name)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn library_blob_in_use(&self, tenant_id: &str, sha256: &str) -> StoreResult<bool> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM library_files WHERE tenant_id = $1 AND sha256 = $2)
                  + (SELECT count(*) FROM commands c JOIN actions a ON a.id = c.action_id
                     WHERE a.tenant_id = $1 AND c.payload_sha256 = $2 AND a.status IN {ACTIVE})"
        );
        let used: i64 = exec::query_scalar(sql)
            .bind(tenant_id)
            .bind(sha256)
            .fetch_one(&self.pool)
            .await?;
        Ok(used != 0)
    }
}
