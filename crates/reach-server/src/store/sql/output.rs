//! The SQL of `Outputs` (see `store::output`), for both engines. On
//! PostgreSQL a piece is one call of `reach_append_output` (migration
//! 0022), so the scope's row lock is held for the function's own work
//! only; SQLite runs the same steps in the writer's transaction.

use async_trait::async_trait;
use reach_proto::agent::{CommandRef, Stream};

use super::exec::Row;
use super::*;
use crate::store::*;
use crate::time::Micros;

fn stream_column(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout_live",
        Stream::Stderr => "stderr_live",
    }
}

fn parse_stream(text: &str) -> StoreResult<Stream> {
    match text {
        "stdout" => Ok(Stream::Stdout),
        "stderr" => Ok(Stream::Stderr),
        other => Err(StoreError::Other(anyhow::anyhow!(
            "output_chunks.stream holds {other:?}"
        ))),
    }
}

fn chunk(row: &Row) -> StoreResult<OutputChunk> {
    Ok(OutputChunk {
        seq: rows::unsigned("output_chunks.seq", row.try_get("seq")?)?,
        stream: parse_stream(row.try_get("stream")?)?,
        offset: rows::unsigned("output_chunks.byte_offset", row.try_get("byte_offset")?)?,
        text: row.try_get("text")?,
    })
}

fn progress(row: &Row) -> StoreResult<OutputProgress> {
    Ok(OutputProgress {
        command: rows::command(row)?,
        stdout_live: rows::unsigned("commands.stdout_live", row.try_get("stdout_live")?)?,
        stderr_live: rows::unsigned("commands.stderr_live", row.try_get("stderr_live")?)?,
        last_seq: rows::unsigned("commands.output_last_seq", row.try_get("output_last_seq")?)?,
        action_ended: !matches!(row.try_get("action_status")?, "Pending" | "InProgress"),
    })
}

impl SqlStore {
    /// SQLite's steps of `reach_append_output`, in the writer's turn.
    async fn append_output_sqlite(
        &self,
        machine_id: &str,
        command: &CommandRef,
        stream: Stream,
        offset: u64,
        text: &str,
        max: u64,
    ) -> StoreResult<Appended> {
        let mut tx = self.write().await?;
        let batch: Option<Option<String>> =
            exec::query_scalar("SELECT batch_id FROM actions WHERE id = $1 AND machine_id = $2")
                .bind(&command.action_id)
                .bind(machine_id)
                .fetch_optional(&mut tx)
                .await?;
        let Some(batch) = batch else {
            return Ok(Appended::NotRunning);
        };
        let column = stream_column(stream);
        let live: Option<i64> = exec::query_scalar(format!(
            "SELECT {column} FROM commands WHERE action_id = $1 AND idx = $2 AND status = 'InProgress'"
        ))
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .fetch_optional(&mut tx)
        .await?;
        let Some(live) = live else {
            return Ok(Appended::NotRunning);
        };
        let live = rows::unsigned("commands live output", live)?;
        if live != offset {
            return Ok(Appended::Gap);
        }
        let len = text.len() as u64;
        if live + len > max {
            return Ok(Appended::Full);
        }
        let seq: i64 = match &batch {
            None => exec::query_scalar(
                "UPDATE actions SET output_seq = output_seq + 1 WHERE id = $1 RETURNING output_seq",
            )
            .bind(&command.action_id),
            Some(batch_id) => exec::query_scalar(
                "UPDATE batches SET output_seq = output_seq + 1 WHERE id = $1 RETURNING output_seq",
            )
            .bind(batch_id),
        }
        .fetch_one(&mut tx)
        .await?;
        exec::query(format!(
            "UPDATE commands SET {column} = {column} + $3, output_last_seq = $4, output_kept = 1
             WHERE action_id = $1 AND idx = $2"
        ))
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(len as i64)
        .bind(seq)
        .execute(&mut tx)
        .await?;
        exec::query(
            "INSERT INTO output_chunks (action_id, idx, seq, batch_id, stream, byte_offset, text)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(seq)
        .bind(&batch)
        .bind(stream.as_str())
        .bind(offset as i64)
        .bind(text)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Appended::Stored {
            seq: rows::unsigned("output sequence", seq)?,
            batch_id: batch,
        })
    }
}

#[async_trait]
impl Outputs for SqlStore {
    async fn append_output(
        &self,
        machine_id: &str,
        command: &CommandRef,
        stream: Stream,
        offset: u64,
        text: &str,
        max: u64,
    ) -> StoreResult<Appended> {
        let (Ok(offset_i), Ok(max_i)) = (i64::try_from(offset), i64::try_from(max)) else {
            return Ok(Appended::Full);
        };
        if self.engine == Engine::Sqlite {
            return self
                .append_output_sqlite(machine_id, command, stream, offset, text, max)
                .await;
        }
        let row = exec::query(
            "SELECT out_seq AS seq, out_batch AS batch_id FROM reach_append_output($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .bind(stream.as_str())
        .bind(offset_i)
        .bind(text)
        .bind(max_i)
        .fetch_one(&self.pool)
        .await?;
        Ok(match row.try_get::<i64>("seq")? {
            -1 => Appended::NotRunning,
            -2 => Appended::Gap,
            -3 => Appended::Full,
            seq => Appended::Stored {
                seq: rows::unsigned("output sequence", seq)?,
                batch_id: row.try_get("batch_id")?,
            },
        })
    }

    async fn output_progress(&self, command: &CommandRef) -> StoreResult<OutputProgress> {
        let row = exec::query(
            "SELECT c.*, a.status AS action_status FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE c.action_id = $1 AND c.idx = $2",
        )
            .bind(&command.action_id)
            .bind(i64::from(command.index))
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "Command {} of action {}",
                    command.index, command.action_id
                ))
            })?;
        progress(&row)
    }

    async fn output_after(
        &self,
        command: &CommandRef,
        after: u64,
        page: PageSize,
    ) -> StoreResult<Vec<OutputChunk>> {
        // The first pieces by number, then those of them that start within
        // the page's characters (the first always does).
        exec::query(
            "SELECT seq, stream, byte_offset, text FROM (
                SELECT seq, stream, byte_offset, text,
                    SUM(LENGTH(text)) OVER (ORDER BY seq) - LENGTH(text) AS before
                FROM (SELECT seq, stream, byte_offset, text FROM output_chunks
                      WHERE action_id = $1 AND idx = $2 AND seq > $3 ORDER BY seq LIMIT $4) l) p
             WHERE before < $5 ORDER BY seq",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(page.pieces))
        .bind(i64::try_from(page.chars.max(1)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(chunk)
        .collect()
    }

    async fn batch_output_after(
        &self,
        batch_id: &str,
        index: u32,
        after: u64,
        page: PageSize,
    ) -> StoreResult<Vec<BatchChunk>> {
        exec::query(
            "SELECT p.seq, p.stream, p.byte_offset, p.text, a.id AS action_id, a.machine_id,
                a.computer_dns_name
             FROM (
                SELECT action_id, seq, stream, byte_offset, text,
                    SUM(LENGTH(text)) OVER (ORDER BY seq) - LENGTH(text) AS before
                FROM (SELECT action_id, seq, stream, byte_offset, text FROM output_chunks
                      WHERE batch_id = $1 AND idx = $2 AND seq > $3 ORDER BY seq LIMIT $4) l) p
             JOIN actions a ON a.id = p.action_id
             WHERE p.before < $5 ORDER BY p.seq",
        )
        .bind(batch_id)
        .bind(i64::from(index))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(page.pieces))
        .bind(i64::try_from(page.chars.max(1)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(BatchChunk {
                chunk: chunk(row)?,
                action_id: row.try_get("action_id")?,
                machine_id: row.try_get("machine_id")?,
                computer_dns_name: row.try_get("computer_dns_name")?,
            })
        })
        .collect()
    }

    async fn batch_output_ends(
        &self,
        batch_id: &str,
        index: u32,
        after: (Micros, &str),
        limit: u32,
    ) -> StoreResult<Vec<BatchEnd>> {
        let rows = exec::query(
            "SELECT * FROM (
                SELECT c.*, a.machine_id, a.computer_dns_name, a.status AS action_status,
                    COALESCE(c.end_us, a.updated_us) AS ended_us
                FROM actions a JOIN commands c ON c.action_id = a.id AND c.idx = $2
                WHERE a.batch_id = $1
                  AND (c.end_us IS NOT NULL OR a.status NOT IN ('Pending', 'InProgress'))) e
             WHERE e.ended_us > $3 OR (e.ended_us = $3 AND e.action_id > $4)
             ORDER BY e.ended_us, e.action_id LIMIT $5",
        )
        .bind(batch_id)
        .bind(i64::from(index))
        .bind(after.0.0)
        .bind(after.1)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let progress = progress(row)?;
                Ok(BatchEnd {
                    action_id: row.try_get("action_id")?,
                    machine_id: row.try_get("machine_id")?,
                    computer_dns_name: row.try_get("computer_dns_name")?,
                    ended: Micros(row.try_get("ended_us")?),
                    progress,
                })
            })
            .collect()
    }

    async fn forget_output(&self, ended_before: Micros, limit: u32) -> StoreResult<u64> {
        let mut tx = self.write().await?;
        let ended: Vec<(String, i64)> = exec::query(
            "SELECT action_id, idx FROM commands
             WHERE output_kept = 1 AND end_us < $1 AND status NOT IN ('Created', 'InProgress')
             ORDER BY end_us LIMIT $2",
        )
        .bind(ended_before.0)
        .bind(i64::from(limit))
        .fetch_all(&mut tx)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("action_id")?, row.try_get("idx")?)))
        .collect::<StoreResult<_>>()?;
        for (action_id, idx) in &ended {
            exec::query("DELETE FROM output_chunks WHERE action_id = $1 AND idx = $2")
                .bind(action_id)
                .bind(*idx)
                .execute(&mut tx)
                .await?;
            // The number of the last piece stays, so that a reader resuming
            // after it still finds the command's end.
            exec::query(
                "UPDATE commands SET output_kept = 0, stdout_live = 0, stderr_live = 0
                 WHERE action_id = $1 AND idx = $2",
            )
            .bind(action_id)
            .bind(*idx)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ended.len() as u64)
    }
}
