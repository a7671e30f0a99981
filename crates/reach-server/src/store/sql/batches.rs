//! The SQL of `Batches` (see `store::batches`), for both engines. A batch
//! and its actions and commands are inserted in one transaction, many rows
//! a statement; counts are read from the index `actions_by_batch` when a
//! batch is read, never stored, and so is Completed (every action final).

mod control;

use async_trait::async_trait;
use reach_proto::api::ActionStatus;

use super::*;
use crate::odata::Query;
use crate::store::*;
use crate::time::Micros;

/// Rows per INSERT statement (well inside both engines' bind limits).
const ROWS_PER_INSERT: usize = 200;

#[async_trait]
impl Batches for SqlStore {
    async fn create_batch(&self, batch: &NewBatch) -> StoreResult<BatchRow> {
        let commands: Vec<reach_proto::api::Command> =
            batch.commands.iter().map(|c| c.command.clone()).collect();
        let wave_size = batch.rollout.map(|r| r.wave_size.max(1));
        let mut tx = self.write().await?;
        exec::query(
            "INSERT INTO batches (id, tenant_id, requestor, requestor_id, requestor_comment, status,
                commands, machine_count, wave_size, max_failed_percent, current_wave,
                created_us, updated_us, expires_us)
             VALUES ($1, $2, $3, $4, $5, 'Running', $6, $7, $8, $9, 1, $10, $10, $11)",
        )
        .bind(&batch.id)
        .bind(&batch.tenant_id)
        .bind(&batch.requestor)
        .bind(&batch.requestor_id)
        .bind(&batch.requestor_comment)
        .bind(json(&commands))
        .bind(batch.targets.len() as i64)
        .bind(wave_size.map(|n| n as i64))
        .bind(batch.rollout.map(|r| i64::from(r.max_failed_percent)))
        .bind(batch.now.0)
        .bind(batch.expires.0)
        .execute(&mut tx)
        .await?;
        let action_ids: Vec<String> = batch
            .targets
            .iter()
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        for (chunk, targets) in batch.targets.chunks(ROWS_PER_INSERT).enumerate() {
            // $1..$6 shared; then 4 values a row.
            let rows = (0..targets.len())
                .map(|r| {
                    let n = 7 + r * 4;
                    format!(
                        "(${n}, $1, ${}, ${}, $2, $3, 'Pending', $4, $4, $5, $6, ${})",
                        n + 1,
                        n + 2,
                        n + 3
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO actions (id, tenant_id, machine_id, computer_dns_name, requestor,
                    requestor_comment, status, created_us, updated_us, requestor_id, batch_id, wave)
                 VALUES {rows}"
            );
            let mut query = exec::query(sql)
                .bind(&batch.tenant_id)
                .bind(&batch.requestor)
                .bind(&batch.requestor_comment)
                .bind(batch.now.0)
                .bind(&batch.requestor_id)
                .bind(&batch.id);
            for (offset, target) in targets.iter().enumerate() {
                let position = chunk * ROWS_PER_INSERT + offset;
                let wave = wave_size.map_or(1, |size| position as u64 / size + 1);
                query = query
                    .bind(&action_ids[position])
                    .bind(&target.machine_id)
                    .bind(&target.computer_dns_name)
                    .bind(wave as i64);
            }
            query.execute(&mut tx).await?;
        }
        insert_commands(&mut tx, &action_ids, &batch.commands).await?;
        tx.commit().await?;
        let mut counts = BatchCounts::default();
        counts.add(ActionStatus::Pending, batch.targets.len() as u64);
        Ok(BatchRow {
            id: batch.id.clone(),
            tenant_id: batch.tenant_id.clone(),
            requestor: batch.requestor.clone(),
            requestor_id: batch.requestor_id.clone(),
            requestor_comment: batch.requestor_comment.clone(),
            status: BatchStatus::Running,
            paused_reason: None,
            commands,
            machine_count: batch.targets.len() as u64,
            counts,
            rollout: batch.rollout,
            current_wave: 1,
            created: batch.now,
            last_update: batch.now,
            expires: batch.expires,
            cancellation_requestor: None,
            cancellation_comment: None,
        })
    }

    async fn get_batch(&self, tenant_id: &str, id: &str) -> StoreResult<BatchRow> {
        let mut conn = self.pool.acquire().await?;
        let row = exec::query("SELECT * FROM batches WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(&mut conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Batch {id}")))?;
        let mut batches = vec![rows::batch(&row)?];
        load_counts(On::from(&mut conn), &mut batches).await?;
        Ok(batches.remove(0))
    }

    async fn list_batches(
        &self,
        tenant_id: &str,
        query: &Query,
    ) -> StoreResult<(Vec<BatchRow>, Option<u64>)> {
        let mut conn = self.pool.acquire().await?;
        let (rows, count) = select_page(
            &mut conn,
            self.engine,
            "batches",
            "b",
            "*",
            tenant_id,
            query,
            &batch_fields(),
            "b.created_us DESC, b.seq DESC",
        )
        .await?;
        let mut batches = rows
            .iter()
            .map(rows::batch)
            .collect::<StoreResult<Vec<_>>>()?;
        load_counts(On::from(&mut conn), &mut batches).await?;
        Ok((batches, count))
    }

    async fn batch_actions_after(
        &self,
        tenant_id: &str,
        batch_id: &str,
        query: &Query,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, ActionRow)>> {
        let filter_only = Query {
            filter: query.filter.clone(),
            ..Query::default()
        };
        // $1 tenant, $2 batch, $3 after, $4 limit; the filter's from $5.
        let compiled = odata_to_sql::compile(
            &filter_only,
            &super::actions::action_fields(),
            "a.seq",
            self.engine,
            5,
        )
        .map_err(odata)?;
        let filter = if compiled.where_sql.is_empty() {
            String::new()
        } else {
            format!("AND {}", compiled.where_sql)
        };
        let sql = format!(
            "SELECT a.* FROM actions a WHERE a.tenant_id = $1 AND a.batch_id = $2 AND a.seq > $3 {filter}
             ORDER BY a.seq LIMIT $4"
        );
        let mut conn = self.pool.acquire().await?;
        let rows = paging::bind_all(
            exec::query(sql)
                .bind(tenant_id)
                .bind(batch_id)
                .bind(after)
                .bind(i64::from(limit)),
            &compiled.binds,
        )
        .long()
        .fetch_all(&mut conn)
        .await?;
        let mut positions = Vec::with_capacity(rows.len());
        let mut actions = Vec::with_capacity(rows.len());
        for row in &rows {
            positions.push(row.try_get::<i64>("seq")?);
            actions.push(rows::action(row)?);
        }
        super::actions::load_commands(On::from(&mut conn), &mut actions).await?;
        Ok(positions.into_iter().zip(actions).collect())
    }

    async fn cancel_batch(
        &self,
        tenant_id: &str,
        id: &str,
        requestor: &str,
        comment: Option<&str>,
        now: Micros,
    ) -> StoreResult<(BatchRow, Vec<StoppedAction>)> {
        self.cancel_batch_sql(tenant_id, id, requestor, comment, now)
            .await
    }

    async fn pause_batch(&self, tenant_id: &str, id: &str, now: Micros) -> StoreResult<BatchRow> {
        self.pause_batch_sql(tenant_id, id, now).await
    }

    async fn resume_batch(
        &self,
        tenant_id: &str,
        id: &str,
        now: Micros,
    ) -> StoreResult<(BatchRow, Vec<String>)> {
        self.resume_batch_sql(tenant_id, id, now).await
    }

    async fn advance_waves(&self, now: Micros) -> StoreResult<Vec<WaveStep>> {
        self.advance_waves_sql(now).await
    }
}

/// Every command of every new action, many rows a statement.
async fn insert_commands(
    tx: &mut WriteTx,
    action_ids: &[String],
    commands: &[NewCommand],
) -> StoreResult<()> {
    let per_action: Vec<(String, String, Option<String>, i64)> = commands
        .iter()
        .map(|c| {
            (
                json(&c.command),
                json(&c.work),
                payload_sha256(&c.work).map(String::from),
                c.timeout_secs as i64,
            )
        })
        .collect();
    let rows: Vec<(&String, usize)> = action_ids
        .iter()
        .flat_map(|id| (0..commands.len()).map(move |index| (id, index)))
        .collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let values = (0..chunk.len())
            .map(|r| {
                let n = 1 + r * 6;
                format!(
                    "(${n}, ${}, ${}, ${}, ${}, 'Created', ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO commands (action_id, idx, command, work, payload_sha256, status, timeout_secs)
             VALUES {values}"
        );
        let mut query = exec::query(sql);
        for (action_id, index) in chunk {
            let (command, work, sha, timeout) = &per_action[*index];
            query = query
                .bind(action_id.as_str())
                .bind(*index as i64)
                .bind(command.as_str())
                .bind(work.as_str())
                .bind(sha.as_deref())
                .bind(*timeout);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Each batch's actions by status, and their latest change, from the index.
async fn load_counts(mut on: On<'_>, batches: &mut [BatchRow]) -> StoreResult<()> {
    for chunk in batches.chunks_mut(500) {
        if chunk.is_empty() {
            continue;
        }
        let ids = placeholders(1, chunk.len());
        let sql = format!(
            "SELECT batch_id, status, count(*) AS n, max(updated_us) AS latest FROM actions
             WHERE batch_id IN ({ids}) GROUP BY batch_id, status"
        );
        let mut query = exec::query(sql);
        for batch in chunk.iter() {
            query = query.bind(batch.id.clone());
        }
        for row in query.long().fetch_all(&mut on).await? {
            let batch_id: String = row.try_get("batch_id")?;
            let status: ActionStatus = parse_status(row.try_get::<&str>("status")?)?;
            let n = row.try_get::<i64>("n")? as u64;
            let latest = Micros(row.try_get("latest")?);
            if let Some(batch) = chunk.iter_mut().find(|b| b.id == batch_id) {
                batch.counts.add(status, n);
                batch.last_update = batch.last_update.max(latest);
            }
        }
        for batch in chunk.iter_mut() {
            batch.status = settled(batch.status, &batch.counts);
        }
    }
    Ok(())
}

/// Completed once every action is final, whatever was set (but Cancelled):
/// read, never written, so concurrent last finishes cannot miss it.
fn settled(status: BatchStatus, counts: &BatchCounts) -> BatchStatus {
    match status {
        BatchStatus::Running | BatchStatus::Paused if counts.active() == 0 => {
            BatchStatus::Completed
        }
        other => other,
    }
}

/// `status` as `settled` reads it, in SQL (for OData).
const STATUS_SQL: &str = "(CASE WHEN b.status IN ('Running', 'Paused') AND NOT EXISTS
    (SELECT 1 FROM actions x WHERE x.batch_id = b.id AND x.status IN ('Pending', 'InProgress'))
    THEN 'Completed' ELSE b.status END)";

/// Batch properties for OData.
fn batch_fields() -> Vec<Field> {
    vec![
        Field::new("id", "b.id", Kind::Text),
        Field::new("status", STATUS_SQL, Kind::Text),
        Field::new("requestor", "b.requestor", Kind::Text),
        Field::new("requestorComment", "b.requestor_comment", Kind::Text),
        Field::new("creationDateTimeUtc", "b.created_us", Kind::Time),
        Field::new("expirationDateTimeUtc", "b.expires_us", Kind::Time),
        Field::new("machineCount", "b.machine_count", Kind::Int),
        // Not an entity property: the API narrows a device-group-scoped
        // caller to the batches it created.
        Field::new("requestorKey", "b.requestor_id", Kind::Text),
    ]
}
