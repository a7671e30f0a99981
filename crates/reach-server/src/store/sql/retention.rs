//! The SQL of `Retention` (see `store::retention`), for both engines. The
//! caller deletes the objects first, then asks the store to forget them.

use super::exec::Row;
use async_trait::async_trait;
use reach_proto::agent::CommandRef;

use super::*;
use crate::store::*;
use crate::time::Micros;

#[async_trait]
impl Retention for SqlStore {
    async fn expired_results(
        &self,
        ended_before: Micros,
        limit: u32,
    ) -> StoreResult<Vec<ExpiredResult>> {
        let mut conn = self.pool.acquire().await?;
        let rows = exec::query(
            "SELECT c.*, a.tenant_id, a.machine_id FROM actions a JOIN commands c ON c.action_id = a.id
             WHERE a.status NOT IN ('Pending', 'InProgress') AND a.updated_us < $1
               AND (c.result_key IS NOT NULL
                    OR EXISTS (SELECT 1 FROM result_chunks rc WHERE rc.action_id = c.action_id AND rc.idx = c.idx))
             ORDER BY a.updated_us LIMIT $2",
        )
        .bind(ended_before.0)
        .bind(i64::from(limit))
        .fetch_all(&mut conn)
        .await?;
        expired_from_rows(&mut conn, rows).await
    }

    async fn abandoned_chunks(&self, limit: u32) -> StoreResult<Vec<ExpiredResult>> {
        let mut conn = self.pool.acquire().await?;
        let rows = exec::query(
            "SELECT c.*, a.tenant_id, a.machine_id FROM actions a JOIN commands c ON c.action_id = a.id
             WHERE a.id IN (SELECT DISTINCT action_id FROM result_chunks)
               AND a.status NOT IN ('Pending', 'InProgress') AND c.result_key IS NULL
               AND EXISTS (SELECT 1 FROM result_chunks rc WHERE rc.action_id = c.action_id AND rc.idx = c.idx)
             ORDER BY a.updated_us LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut conn)
        .await?;
        expired_from_rows(&mut conn, rows).await
    }

    async fn forget_result(&self, command: &CommandRef, now: Micros) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let forgotten = exec::query(
            "UPDATE commands SET result_key = NULL, result_size = NULL, result_sha256 = NULL,
                result_chunks = NULL, result_deleted_us = $3
             WHERE action_id = $1 AND idx = $2 AND result_key IS NOT NULL",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(now.0)
        .execute(&mut tx)
        .await?
        .rows_affected();
        exec::query("DELETE FROM inline_results WHERE action_id = $1 AND idx = $2")
            .bind(&command.action_id)
            .bind(i64::from(command.index))
            .execute(&mut tx)
            .await?;
        let chunks = exec::query("DELETE FROM result_chunks WHERE action_id = $1 AND idx = $2")
            .bind(&command.action_id)
            .bind(i64::from(command.index))
            .execute(&mut tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(forgotten + chunks > 0)
    }

    async fn unused_library_files(&self, before: Micros) -> StoreResult<Vec<LibraryRow>> {
        let rows = exec::query(
            "SELECT l.* FROM library_files l
             WHERE l.last_updated_us < $1
               AND NOT EXISTS (
                   SELECT 1 FROM commands c JOIN actions a ON a.id = c.action_id
                   WHERE a.tenant_id = l.tenant_id AND c.payload_sha256 = l.sha256
                     AND (a.created_us >= $1 OR a.status IN ('Pending', 'InProgress')))
             ORDER BY l.tenant_id, l.file_name",
        )
        .bind(before.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::library).collect()
    }
}

/// The commands of `rows` (commands joined with their action's tenant and
/// machine), each with the numbers of its recorded chunks.
pub(super) async fn expired_from_rows(
    conn: &mut Conn,
    rows: Vec<Row>,
) -> StoreResult<Vec<ExpiredResult>> {
    let mut expired = Vec::with_capacity(rows.len());
    for row in rows {
        let command = rows::command(&row)?;
        let command_ref = CommandRef {
            action_id: row.try_get("action_id")?,
            index: command.index,
        };
        let chunks = exec::query_scalar::<i64>(
            "SELECT n FROM result_chunks WHERE action_id = $1 AND idx = $2 ORDER BY n",
        )
        .bind(&command_ref.action_id)
        .bind(i64::from(command_ref.index))
        .fetch_all(&mut *conn)
        .await?;
        expired.push(ExpiredResult {
            command: command_ref,
            tenant_id: row.try_get("tenant_id")?,
            machine_id: row.try_get("machine_id")?,
            result: command.result,
            chunks: chunks.into_iter().map(|n| n as u32).collect(),
        });
    }
    Ok(expired)
}
