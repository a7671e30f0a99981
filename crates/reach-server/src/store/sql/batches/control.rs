//! Changing a batch after creation: cancel, pause, resume, and the
//! sweeper's move from one wave to the next. Each runs in one write
//! transaction that locks the batch's row first (PostgreSQL), so two nodes
//! cannot both move a batch; the wave pass runs on one node at a time.

use super::super::*;
use super::{load_counts, settled};
use crate::store::*;
use crate::time::Micros;

/// The batch locked for this transaction, with its counts: NotFound for
/// another tenant's.
async fn locked(
    tx: &mut WriteTx,
    engine: Engine,
    tenant_id: &str,
    id: &str,
) -> StoreResult<BatchRow> {
    let lock = match engine {
        Engine::Postgres => " FOR UPDATE",
        Engine::Sqlite => "",
    };
    let row = exec::query(format!(
        "SELECT * FROM batches WHERE id = $1 AND tenant_id = $2{lock}"
    ))
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("Batch {id}")))?;
    let mut batches = vec![rows::batch(&row)?];
    load_counts(On::from(&mut *tx), &mut batches).await?;
    Ok(batches.remove(0))
}

/// Running batches in waves with a wave to come and none of the current
/// wave's actions active.
const DUE_WAVES: &str = "SELECT b.id, b.tenant_id FROM batches b
    WHERE b.status = 'Running' AND b.wave_size IS NOT NULL
      AND b.current_wave * b.wave_size < b.machine_count
      AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.batch_id = b.id
           AND a.wave <= b.current_wave AND a.status IN ('Pending', 'InProgress')
           AND a.batch_id IS NOT NULL)";

/// Conflict unless the batch still runs or waits.
fn still_open(batch: &BatchRow, verb: &str) -> StoreResult<()> {
    match batch.status {
        BatchStatus::Running | BatchStatus::Paused => Ok(()),
        done => Err(StoreError::Conflict(format!(
            "Batch {} is already {} and cannot be {verb}",
            batch.id,
            done.as_str()
        ))),
    }
}

/// The batch's machines of `wave` whose actions still wait.
async fn waiting_in_wave(tx: &mut WriteTx, batch_id: &str, wave: u64) -> StoreResult<Vec<String>> {
    let rows = exec::query(
        "SELECT machine_id FROM actions WHERE batch_id = $1 AND wave = $2 AND status = 'Pending'",
    )
    .bind(batch_id)
    .bind(wave as i64)
    .long()
    .fetch_all(&mut *tx)
    .await?;
    rows.iter().map(|r| r.try_get("machine_id")).collect()
}

/// Whether an action of the batch up to `wave` is not final.
async fn wave_open(tx: &mut WriteTx, batch_id: &str, wave: u64) -> StoreResult<bool> {
    let open: i64 = exec::query_scalar(format!(
        "SELECT count(*) FROM (SELECT 1 FROM actions WHERE batch_id = $1 AND wave <= $2
            AND status IN {ACTIVE} AND batch_id IS NOT NULL LIMIT 1) AS o"
    ))
    .bind(batch_id)
    .bind(wave as i64)
    .fetch_one(&mut *tx)
    .await?;
    Ok(open > 0)
}

impl SqlStore {
    pub(super) async fn cancel_batch_sql(
        &self,
        tenant_id: &str,
        id: &str,
        requestor: &str,
        comment: Option<&str>,
        now: Micros,
    ) -> StoreResult<(BatchRow, Vec<StoppedAction>)> {
        let mut tx = self.write().await?;
        let batch = locked(&mut tx, self.engine, tenant_id, id).await?;
        still_open(&batch, "cancelled")?;
        // The running commands first, while their actions are still active.
        let stopped = exec::query(format!(
            "UPDATE commands SET status = 'Failed', end_us = $1, errors = $2
             WHERE status = 'InProgress' AND action_id IN
                (SELECT id FROM actions WHERE batch_id = $3 AND status IN {ACTIVE})
             RETURNING action_id"
        ))
        .bind(now.0)
        .bind(json(&vec![format!("Cancelled by {requestor}")]))
        .bind(id)
        .fetch_all(&mut tx)
        .await?;
        let stopped: Vec<String> = stopped
            .iter()
            .map(|r| r.try_get("action_id"))
            .collect::<StoreResult<_>>()?;
        let cancelled = exec::query(format!(
            "UPDATE actions SET status = 'Cancelled', cancellation_requestor = $1,
                cancellation_comment = $2, cancelled_us = $3, updated_us = $3
             WHERE batch_id = $4 AND status IN {ACTIVE}
             RETURNING id, machine_id"
        ))
        .bind(requestor)
        .bind(comment)
        .bind(now.0)
        .bind(id)
        .fetch_all(&mut tx)
        .await?;
        let mut running = Vec::new();
        for row in &cancelled {
            let action_id: String = row.try_get("id")?;
            if stopped.contains(&action_id) {
                running.push(StoppedAction {
                    machine_id: row.try_get("machine_id")?,
                    action_id,
                });
            }
        }
        exec::query(
            "UPDATE batches SET status = 'Cancelled', cancellation_requestor = $1,
                cancellation_comment = $2, cancelled_us = $3, updated_us = $3 WHERE id = $4",
        )
        .bind(requestor)
        .bind(comment)
        .bind(now.0)
        .bind(id)
        .execute(&mut tx)
        .await?;
        let batch = locked(&mut tx, self.engine, tenant_id, id).await?;
        tx.commit().await?;
        Ok((batch, running))
    }

    pub(super) async fn pause_batch_sql(
        &self,
        tenant_id: &str,
        id: &str,
        now: Micros,
    ) -> StoreResult<BatchRow> {
        let mut tx = self.write().await?;
        let batch = locked(&mut tx, self.engine, tenant_id, id).await?;
        still_open(&batch, "paused")?;
        exec::query(
            "UPDATE batches SET status = 'Paused', updated_us = $1 WHERE id = $2 AND status = 'Running'",
        )
        .bind(now.0)
        .bind(id)
        .execute(&mut tx)
        .await?;
        let batch = locked(&mut tx, self.engine, tenant_id, id).await?;
        tx.commit().await?;
        Ok(batch)
    }

    pub(super) async fn resume_batch_sql(
        &self,
        tenant_id: &str,
        id: &str,
        now: Micros,
    ) -> StoreResult<(BatchRow, Vec<String>)> {
        let mut tx = self.write().await?;
        let batch = locked(&mut tx, self.engine, tenant_id, id).await?;
        still_open(&batch, "resumed")?;
        let mut wave = batch.current_wave;
        // Paused at a wave's end (or while its last actions ended): the
        // next wave starts now; the caller has seen why it paused.
        if let Some(rollout) = batch.rollout
            && wave * rollout.wave_size < batch.machine_count
            && !wave_open(&mut tx, id, wave).await?
        {
            wave += 1;
        }
        exec::query(
            "UPDATE batches SET status = 'Running', paused_reason = NULL, current_wave = $1,
                updated_us = $2 WHERE id = $3",
        )
        .bind(wave as i64)
        .bind(now.0)
        .bind(id)
        .execute(&mut tx)
        .await?;
        let machines = exec::query(
            "SELECT machine_id FROM actions WHERE batch_id = $1 AND wave <= $2 AND status = 'Pending'",
        )
        .bind(id)
        .bind(wave as i64)
        .long()
        .fetch_all(&mut tx)
        .await?
        .iter()
        .map(|r| r.try_get("machine_id"))
        .collect::<StoreResult<Vec<String>>>()?;
        let batch = locked(&mut tx, self.engine, tenant_id, id).await?;
        tx.commit().await?;
        Ok((batch, machines))
    }

    pub(super) async fn advance_waves_sql(&self, now: Micros) -> StoreResult<Vec<WaveStep>> {
        // Read first: most sweeps find no batch due, and then take no
        // write transaction (the sweeper runs every second).
        if exec::query(DUE_WAVES)
            .long()
            .fetch_all(&self.pool)
            .await?
            .is_empty()
        {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        if self.engine == Engine::Postgres {
            let mine: bool = exec::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(WAVE_LOCK)
                .fetch_one(&mut tx)
                .await?;
            if !mine {
                return Ok(Vec::new());
            }
        }
        // Again in the transaction: what was read may have moved on.
        let due = exec::query(DUE_WAVES).long().fetch_all(&mut tx).await?;
        let mut steps = Vec::new();
        for row in &due {
            let id: String = row.try_get("id")?;
            let tenant_id: String = row.try_get("tenant_id")?;
            let batch = locked(&mut tx, self.engine, &tenant_id, &id).await?;
            if settled(batch.status, &batch.counts) != BatchStatus::Running {
                continue;
            }
            let Some(rollout) = batch.rollout else {
                continue;
            };
            let c = batch.counts;
            let failed = c.failed + c.timed_out;
            let finished = c.succeeded + failed;
            if finished > 0 && failed * 100 > u64::from(rollout.max_failed_percent) * finished {
                let reason = format!(
                    "Wave {}: {failed} of {finished} finished machines failed or timed out, over MaxFailedPercent {} %",
                    batch.current_wave, rollout.max_failed_percent
                );
                exec::query(
                    "UPDATE batches SET status = 'Paused', paused_reason = $1, updated_us = $2 WHERE id = $3",
                )
                .bind(&reason)
                .bind(now.0)
                .bind(&id)
                .execute(&mut tx)
                .await?;
                steps.push(WaveStep::Paused {
                    batch_id: id,
                    tenant_id,
                    reason,
                });
                continue;
            }
            let wave = batch.current_wave + 1;
            exec::query("UPDATE batches SET current_wave = $1, updated_us = $2 WHERE id = $3")
                .bind(wave as i64)
                .bind(now.0)
                .bind(&id)
                .execute(&mut tx)
                .await?;
            let machines = waiting_in_wave(&mut tx, &id, wave).await?;
            steps.push(WaveStep::Started {
                batch_id: id,
                wave,
                machines,
            });
        }
        tx.commit().await?;
        Ok(steps)
    }
}
