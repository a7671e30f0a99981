//! The SQL of `Commands` (see `store::commands`), for both engines. Every
//! change names the machine it comes from: a device can only move its own
//! commands.

use async_trait::async_trait;
use reach_proto::agent::CommandRef;

use super::*;
use crate::store::*;
use crate::time::Micros;

mod finish;

#[async_trait]
impl Commands for SqlStore {
    async fn claim_next_command(
        &self,
        machine_id: &str,
        agent_instance: &str,
        now: Micros,
        lane: Lane,
    ) -> StoreResult<Option<Claimed>> {
        let mut tx = self.write().await?;
        if self.engine == Engine::Postgres {
            // Lock first, read after: a read that waits on a row lock sees
            // the locked row anew, but not what its subqueries and joins saw.
            let sql = format!(
                "SELECT id FROM actions WHERE machine_id = $1 AND status IN {ACTIVE} FOR UPDATE"
            );
            // Every active action of the machine (a batch's too), not just
            // the first row.
            exec::query(sql).bind(machine_id).fetch_all(&mut tx).await?;
        }
        // (`idx >= 0`, always true, makes SQLite look a command up by its
        // action, through the primary key, rather than scan every running
        // command of the fleet through `commands_running`.)
        // Whether a command of the machine runs, and the first command not
        // yet started of its active actions: an action already running
        // first (its next command), then the oldest. A batch's action waits
        // while its batch is paused or cancelled, or its wave has not come.
        let kinds = lane.kinds_sql();
        let sql = format!(
            "SELECT a.id, a.created_us, c.idx, c.work, c.timeout_secs,
                (SELECT count(*) FROM actions x WHERE x.machine_id = $1 AND x.status IN {ACTIVE}
                 AND x.kind IN {kinds}
                 AND EXISTS (SELECT 1 FROM commands r WHERE r.action_id = x.id AND r.idx >= 0
                     AND r.status = 'InProgress')) AS running
             FROM actions a JOIN commands c ON c.action_id = a.id AND c.status = 'Created'
             WHERE a.machine_id = $1 AND a.status IN {ACTIVE} AND a.kind IN {kinds} AND {MAY_RUN}
             ORDER BY CASE a.status WHEN 'InProgress' THEN 0 ELSE 1 END, a.created_us, a.seq, c.idx
             LIMIT 1"
        );
        let Some(row) = exec::query(sql)
            .bind(machine_id)
            .fetch_optional(&mut tx)
            .await?
        else {
            return Ok(None);
        };
        let action_id: String = row.try_get("id")?;
        let action_created = Micros(row.try_get("created_us")?);
        let running: i64 = row.try_get("running")?;
        let index: i64 = row.try_get("idx")?;
        if running > 0 {
            return Ok(None);
        }
        exec::query("UPDATE commands SET status = 'InProgress', start_us = $1, agent_instance = $4 WHERE action_id = $2 AND idx = $3")
            .bind(now.0)
            .bind(&action_id)
            .bind(index)
            .bind(agent_instance)
            .execute(&mut tx)
            .await?;
        exec::query("UPDATE actions SET status = 'InProgress', updated_us = $1 WHERE id = $2")
            .bind(now.0)
            .bind(&action_id)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Claimed {
            command: CommandRef {
                action_id,
                index: index as u32,
            },
            work: from_json(row.try_get::<&str>("work")?)?,
            timeout_secs: row.try_get::<i64>("timeout_secs")? as u64,
            action_created,
        }))
    }

    async fn has_active_action(&self, machine_id: &str) -> StoreResult<bool> {
        let sql =
            format!("SELECT count(*) FROM actions WHERE machine_id = $1 AND status IN {ACTIVE}");
        let active: i64 = exec::query_scalar(sql)
            .bind(machine_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(active > 0)
    }

    async fn has_active_in(&self, machine_id: &str, lane: Lane) -> StoreResult<bool> {
        let sql = format!(
            "SELECT count(*) FROM actions WHERE machine_id = $1 AND status IN {ACTIVE} AND kind IN {}",
            lane.kinds_sql()
        );
        let active: i64 = exec::query_scalar(sql)
            .bind(machine_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(active > 0)
    }

    async fn running_commands(&self, machine_id: &str) -> StoreResult<Vec<Running>> {
        let rows = exec::query(
            "SELECT c.action_id, c.idx, c.agent_instance, a.kind FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE a.machine_id = $1 AND c.status = 'InProgress'",
        )
        .bind(machine_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Running {
                    command: CommandRef {
                        action_id: r.try_get("action_id")?,
                        index: r.try_get::<i64>("idx")? as u32,
                    },
                    agent_instance: r
                        .try_get::<Option<String>>("agent_instance")?
                        .unwrap_or_default(),
                    lane: match reach_proto::api::ActionType::parse(r.try_get("kind")?) {
                        Some(kind) => Lane::of(kind),
                        None => Lane::Live,
                    },
                })
            })
            .collect()
    }

    async fn offboard_unclaimed(
        &self,
        machine_id: &str,
        action_id: &str,
        now: Micros,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        self.lock_action(&mut tx, action_id).await?;
        let done = exec::query(
            "UPDATE actions SET status = 'Succeeded', updated_us = $1
             WHERE id = $2 AND machine_id = $3 AND status = 'Pending' AND kind = 'Offboard'",
        )
        .bind(now.0)
        .bind(action_id)
        .bind(machine_id)
        .execute(&mut tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        exec::query(
            "UPDATE commands SET status = 'Completed', start_us = $1, end_us = $1
             WHERE action_id = $2 AND status = 'Created'",
        )
        .bind(now.0)
        .bind(action_id)
        .execute(&mut tx)
        .await?;
        finish::offboard(&mut tx, machine_id, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn requeue_command(&self, machine_id: &str, command: &CommandRef) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        self.lock_action(&mut tx, &command.action_id).await?;
        let done = exec::query(
            "UPDATE commands SET status = 'Created', start_us = NULL, agent_instance = NULL
             WHERE action_id = $1 AND idx = $2 AND status = 'InProgress'
               AND action_id IN (SELECT id FROM actions WHERE machine_id = $3 AND status = 'InProgress')",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_result(
        &self,
        machine_id: &str,
        command: &CommandRef,
        blob: &ResultBlob,
    ) -> StoreResult<()> {
        let done = self.write_one(exec::query(
            "UPDATE commands SET result_key = $1, result_size = $2, result_sha256 = $3, result_chunks = $4
             WHERE action_id = $5 AND idx = $6 AND status = 'InProgress'
               AND action_id IN (SELECT id FROM actions WHERE machine_id = $7)",
        )
        .bind(&blob.key)
        .bind(blob.size as i64)
        .bind(&blob.sha256)
        .bind(blob.chunks.map(i64::from))
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        )
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_running(command));
        }
        Ok(())
    }

    async fn put_chunk(
        &self,
        machine_id: &str,
        command: &CommandRef,
        chunk: &ChunkRow,
    ) -> StoreResult<()> {
        let done = self.write_one(exec::query(
            "INSERT INTO result_chunks (action_id, idx, n, raw_size, raw_sha256, stored_size, stored_sha256, raw_crc32)
             SELECT c.action_id, c.idx, $1, $2, $3, $4, $5, $9 FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE c.action_id = $6 AND c.idx = $7 AND c.status = 'InProgress' AND a.machine_id = $8
             ON CONFLICT (action_id, idx, n) DO UPDATE SET raw_size = excluded.raw_size,
                raw_sha256 = excluded.raw_sha256, stored_size = excluded.stored_size,
                stored_sha256 = excluded.stored_sha256, raw_crc32 = excluded.raw_crc32,
                attempts = result_chunks.attempts + 1",
        )
        .bind(i64::from(chunk.n))
        .bind(chunk.raw_size as i64)
        .bind(&chunk.raw_sha256)
        .bind(chunk.stored_size as i64)
        .bind(&chunk.stored_sha256)
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .bind(chunk.raw_crc32.map(i64::from))
        )
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_running(command));
        }
        Ok(())
    }

    async fn inline_result(&self, tenant_id: &str, command: &CommandRef) -> StoreResult<Vec<u8>> {
        exec::query_scalar::<Vec<u8>>(
            "SELECT r.bytes FROM inline_results r JOIN actions a ON a.id = r.action_id
             WHERE r.action_id = $1 AND r.idx = $2 AND a.tenant_id = $3",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "The result of command {} of action {}",
                command.index, command.action_id
            ))
        })
    }

    async fn inline_results(
        &self,
        tenant_id: &str,
        commands: &[CommandRef],
    ) -> StoreResult<std::collections::HashMap<CommandRef, Vec<u8>>> {
        let wanted: std::collections::HashSet<&CommandRef> = commands.iter().collect();
        let mut found = std::collections::HashMap::with_capacity(commands.len());
        let mut actions: Vec<&str> = commands.iter().map(|c| c.action_id.as_str()).collect();
        actions.sort_unstable();
        actions.dedup();
        for chunk in actions.chunks(500) {
            // Read from the results, by key; the tenant checked per row
            // (joined the other way, SQLite read every action of the
            // tenant for each group).
            let sql = format!(
                "SELECT r.action_id, r.idx, r.bytes FROM inline_results r
                 WHERE r.action_id IN ({})
                   AND EXISTS (SELECT 1 FROM actions a WHERE a.id = r.action_id AND a.tenant_id = $1)",
                placeholders(2, chunk.len())
            );
            let mut query = exec::query(sql).bind(tenant_id);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let command = CommandRef {
                    action_id: row.try_get("action_id")?,
                    index: u32::try_from(row.try_get::<i64>("idx")?).map_err(|_| {
                        StoreError::Other(anyhow::anyhow!("a negative command index"))
                    })?,
                };
                if wanted.contains(&command) {
                    found.insert(command, row.try_get::<Vec<u8>>("bytes")?);
                }
            }
        }
        Ok(found)
    }

    async fn list_chunks(&self, command: &CommandRef) -> StoreResult<Vec<ChunkRow>> {
        let rows =
            exec::query("SELECT * FROM result_chunks WHERE action_id = $1 AND idx = $2 ORDER BY n")
                .bind(&command.action_id)
                .bind(i64::from(command.index))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(rows::chunk).collect()
    }

    async fn finish_command(
        &self,
        machine_id: &str,
        command: &CommandRef,
        finish: &Finish,
        result: Option<&InlineResult>,
        now: Micros,
    ) -> StoreResult<Option<Finished>> {
        self.finish(machine_id, command, finish, result, now).await
    }

    async fn take_sweeper_turn(
        &self,
        job: &str,
        every_secs: u64,
        now: Micros,
    ) -> StoreResult<bool> {
        if self.engine == Engine::Sqlite {
            return Ok(true);
        }
        // One statement: of the nodes that ask in the same period, the
        // first to write wins; the others find the turn taken.
        let taken: Option<String> = exec::query_scalar(
            "INSERT INTO sweeper_turns (job, last_us) VALUES ($1, $2)
             ON CONFLICT (job) DO UPDATE SET last_us = excluded.last_us
             WHERE sweeper_turns.last_us <= $3
             RETURNING job",
        )
        .bind(job)
        .bind(now.0)
        .bind(now.minus_secs(every_secs).0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(taken.is_some())
    }

    async fn sweep(
        &self,
        queue_deadline: Micros,
        lease_grace_secs: u64,
        now: Micros,
    ) -> StoreResult<Swept> {
        let mut tx = self.write().await?;
        if self.engine == Engine::Postgres {
            // One node sweeps at a time; the others skip this round.
            let mine: bool = exec::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(SWEEP_LOCK)
                .fetch_one(&mut tx)
                .await?;
            if !mine {
                return Ok(Swept::default());
            }
        }
        // An action alone waits the queue TTL from its last change; a
        // batch's waits until its batch expires. Two index reads, each of
        // the actions that wait only (`actions_active_alone_by_update`;
        // expired batches, then their active actions), never every active
        // action: a large batch in flight is not read each second.
        let sql = format!(
            "UPDATE actions SET status = 'TimeOut', updated_us = $1
             WHERE id IN (
                 SELECT id FROM actions
                  WHERE status IN {ACTIVE} AND batch_id IS NULL AND updated_us < $2
                 UNION ALL
                 SELECT a.id FROM batches b JOIN actions a ON a.batch_id = b.id
                  WHERE b.expires_us < $1 AND a.status IN {ACTIVE} AND a.batch_id IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.action_id = actions.id AND c.idx >= 0
                    AND c.status = 'InProgress')
             RETURNING id"
        );
        let queue_expired: Vec<String> = exec::query_scalar(sql)
            .bind(now.0)
            .bind(queue_deadline.0)
            .fetch_all(&mut tx)
            .await?;
        // Lock the actions first (as finish_command does), then their commands.
        let sql = format!(
            "SELECT a.id, a.machine_id, c.idx FROM actions a JOIN commands c ON c.action_id = a.id
             WHERE c.status = 'InProgress' AND c.start_us + (c.timeout_secs + $1) * 1000000 < $2{}",
            self.engine.for_update_of("a")
        );
        let expired = exec::query(sql)
            .bind(lease_grace_secs as i64)
            .bind(now.0)
            .fetch_all(&mut tx)
            .await?;
        let message = format!(
            "The agent did not report a result within the command's timeout plus {lease_grace_secs} s"
        );
        let mut lease_expired = Vec::new();
        for row in &expired {
            let machine_id: String = row.try_get("machine_id")?;
            let command = CommandRef {
                action_id: row.try_get("id")?,
                index: row.try_get::<i64>("idx")? as u32,
            };
            let failed = exec::query(
                "UPDATE commands SET status = 'Failed', end_us = $1, errors = $2
                 WHERE action_id = $3 AND idx = $4 AND status = 'InProgress'",
            )
            .bind(now.0)
            .bind(json(&vec![message.clone()]))
            .bind(&command.action_id)
            .bind(i64::from(command.index))
            .execute(&mut tx)
            .await?;
            if failed.rows_affected() == 0 {
                continue;
            }
            let sql = format!(
                "UPDATE actions SET status = CASE WHEN status IN {ACTIVE} THEN 'Failed' ELSE status END,
                    updated_us = $1 WHERE id = $2"
            );
            exec::query(sql)
                .bind(now.0)
                .bind(&command.action_id)
                .execute(&mut tx)
                .await?;
            lease_expired.push((machine_id, command));
        }
        tx.commit().await?;
        Ok(Swept {
            queue_expired,
            lease_expired,
        })
    }
}

/// The command is not InProgress on the calling machine.
pub(super) fn not_running(command: &CommandRef) -> StoreError {
    StoreError::NotFound(format!(
        "Running command {} of action {} on this machine",
        command.index, command.action_id
    ))
}
