//! The SQL of `AuditLog` (see `store::audit`), for both engines. Entries
//! are only ever appended (and pruned from the oldest, recorded); nothing
//! here rewrites one.

use async_trait::async_trait;

use super::*;
use crate::odata::Query;
use crate::store::*;
use crate::time::Micros;

#[async_trait]
impl AuditLog for SqlStore {
    async fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<Vec<AuditEntry>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        self.lock_audit(&mut tx).await?;
        let appended = append_audit_in(&mut tx, events).await?;
        tx.commit().await?;
        Ok(appended)
    }

    async fn list_audit(
        &self,
        tenant_id: &str,
        query: &Query,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>)> {
        let (rows, count) = select_page(
            &mut self.pool.acquire().await?,
            self.engine,
            "audit_log",
            "l",
            "*",
            tenant_id,
            query,
            &audit_fields(),
            "l.seq DESC",
        )
        .await?;
        let entries = rows
            .iter()
            .map(rows::audit)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((entries, count))
    }

    async fn audit_page(
        &self,
        after_seq: i64,
        since: Micros,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = exec::query(
            "SELECT * FROM audit_log WHERE seq > $1 AND time_us >= $2 ORDER BY seq LIMIT $3",
        )
        .bind(after_seq)
        .bind(since.0)
        .bind(i64::from(limit))
        .long()
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::audit).collect()
    }

    async fn prune_audit(
        &self,
        before: Micros,
        mut event: AuditEvent,
    ) -> StoreResult<Option<AuditEntry>> {
        let mut tx = self.write().await?;
        self.lock_audit(&mut tx).await?;
        let through = exec::query(
            "SELECT seq, hash, (SELECT count(*) FROM audit_log o WHERE o.time_us < $1) AS removed
             FROM audit_log WHERE time_us < $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(before.0)
        .fetch_optional(&mut tx)
        .await?;
        let Some(through) = through else {
            return Ok(None);
        };
        let through_id: i64 = through.try_get("seq")?;
        let through_hash: String = through.try_get("hash")?;
        let removed: i64 = through.try_get("removed")?;
        // Everything up to the newest old entry goes, so the chain that is
        // kept has no hole (an old entry behind a newer one goes too).
        exec::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(through_id)
            .execute(&mut tx)
            .await?;
        let mut details: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&event.details).unwrap_or_default();
        details.insert("throughId".into(), through_id.into());
        details.insert("throughHash".into(), through_hash.into());
        details.insert("removed".into(), removed.into());
        details.insert("before".into(), before.to_wire().into());
        event.details = serde_json::Value::Object(details).to_string();
        let mut appended = append_audit_in(&mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(appended.pop())
    }
}

/// Columns of one audit row in an INSERT.
const AUDIT_COLUMNS: usize = 15;

/// Rows per INSERT: 64 × 15 binds stays far below both engines' limits
/// (SQLite 32,766, PostgreSQL 65,535).
const AUDIT_ROWS_PER_INSERT: usize = 64;

/// Appends events after the newest entry, in a transaction that holds the
/// audit lock (`SqlStore::lock_audit`).
pub(super) async fn append_audit_in(
    tx: &mut WriteTx,
    events: &[AuditEvent],
) -> StoreResult<Vec<AuditEntry>> {
    let last = exec::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (mut seq, mut prev_hash) = match last {
        Some(row) => (row.try_get::<i64>("seq")?, row.try_get("hash")?),
        None => (0, crate::store::audit::GENESIS.to_string()),
    };
    // The chain is computed here, then written as one multi-row INSERT per
    // `AUDIT_ROWS_PER_INSERT` entries (one statement, one round trip).
    let mut appended = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let hash = crate::store::audit::link_hash(seq, event, &prev_hash);
        appended.push(AuditEntry {
            seq,
            event: event.clone(),
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    for rows in appended.chunks(AUDIT_ROWS_PER_INSERT) {
        let values = (0..rows.len())
            .map(|row| format!("({})", placeholders(row * AUDIT_COLUMNS + 1, AUDIT_COLUMNS)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO audit_log (seq, time_us, tenant_id, actor_type, actor_id, actor_name,
                source_ip, operation, machine_id, target, outcome, http_status, details,
                prev_hash, hash)
             VALUES {values}"
        );
        let mut query = exec::query(sql);
        for entry in rows {
            let event = &entry.event;
            query = query
                .bind(entry.seq)
                .bind(event.time.0)
                .bind(&event.tenant_id)
                .bind(&event.actor_type)
                .bind(&event.actor_id)
                .bind(&event.actor_name)
                .bind(&event.source_ip)
                .bind(&event.operation)
                .bind(&event.machine_id)
                .bind(&event.target)
                .bind(&event.outcome)
                .bind(event.http_status.map(i64::from))
                .bind(&event.details)
                .bind(&entry.prev_hash)
                .bind(&entry.hash);
        }
        query.execute(&mut *tx).await?;
    }
    Ok(appended)
}

pub(super) fn audit_fields() -> Vec<Field> {
    vec![
        Field::new("id", "l.seq", Kind::Int),
        Field::new("timestamp", "l.time_us", Kind::Time),
        Field::new("actorType", "l.actor_type", Kind::Text),
        Field::new("actorId", "l.actor_id", Kind::Text),
        Field::new("actorName", "l.actor_name", Kind::Text),
        Field::new("sourceIp", "l.source_ip", Kind::Text),
        Field::new("operation", "l.operation", Kind::Text),
        Field::new("machineId", "l.machine_id", Kind::Text),
        Field::new("target", "l.target", Kind::Text),
        Field::new("outcome", "l.outcome", Kind::Text),
        Field::new("httpStatus", "l.http_status", Kind::Int),
    ]
}
