//! The SQL of `Actions` (see `store::actions`), for both engines. Checks
//! and writes of one submission happen in one transaction, so concurrent
//! callers cannot both pass a limit.

use async_trait::async_trait;
use reach_proto::agent::CommandRef;
use reach_proto::api::ActionStatus;

mod create;

use super::*;
use crate::odata::Query;
use crate::store::*;
use crate::time::Micros;

#[async_trait]
impl Actions for SqlStore {
    async fn count_actions_by_status(&self) -> StoreResult<Vec<(ActionStatus, u64)>> {
        let rows = exec::query("SELECT status, count(*) AS n FROM actions GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(ActionStatus, u64)> =
            ActionStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for row in &rows {
            let status: ActionStatus = parse_status(row.try_get::<&str>("status")?)?;
            let n = row.try_get::<i64>("n")? as u64;
            if let Some(entry) = counts.iter_mut().find(|(s, _)| *s == status) {
                entry.1 = n;
            }
        }
        Ok(counts)
    }

    async fn create_action(
        &self,
        action: &NewAction,
        limits: ActionLimits,
    ) -> StoreResult<ActionRow> {
        let commands = create::command_rows(action);
        let dns = match self.engine {
            Engine::Postgres => self.create_in_one_call(action, limits, &commands).await?,
            Engine::Sqlite => self.create_in_steps(action, limits, &commands).await?,
        };
        // What the rows now hold, without reading them back.
        Ok(ActionRow {
            id: action.id.clone(),
            tenant_id: action.tenant_id.clone(),
            machine_id: action.machine_id.clone(),
            computer_dns_name: dns,
            requestor: action.requestor.clone(),
            requestor_comment: action.requestor_comment.clone(),
            status: ActionStatus::Pending,
            created: action.now,
            last_update: action.now,
            cancellation_requestor: None,
            cancellation_comment: None,
            cancellation_time: None,
            batch_id: None,
            kind: action.kind,
            commands,
        })
    }

    async fn pending_actions_of(&self, requestor_id: &str) -> StoreResult<Vec<ActionRow>> {
        let mut conn = self.pool.acquire().await?;
        let rows = exec::query(
            "SELECT * FROM actions WHERE requestor_id = $1 AND status = 'Pending' ORDER BY created_us, seq",
        )
        .bind(requestor_id)
        .fetch_all(&mut conn)
        .await?;
        let mut actions = rows
            .iter()
            .map(rows::action)
            .collect::<StoreResult<Vec<_>>>()?;
        load_commands(On::from(&mut conn), &mut actions).await?;
        Ok(actions)
    }

    async fn get_action(&self, tenant_id: &str, id: &str) -> StoreResult<ActionRow> {
        let mut conn = self.pool.acquire().await?;
        let action = fetch_action(On::from(&mut conn), id).await?;
        if action.tenant_id != tenant_id {
            return Err(StoreError::NotFound(format!("Machine action {id}")));
        }
        Ok(action)
    }

    async fn machine_command(
        &self,
        machine_id: &str,
        command: &CommandRef,
    ) -> StoreResult<CommandRow> {
        let row = exec::query(
            "SELECT c.* FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE c.action_id = $1 AND c.idx = $2 AND a.machine_id = $3",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "Command {} of action {}",
                command.index, command.action_id
            ))
        })?;
        rows::command(&row)
    }

    async fn list_actions(
        &self,
        tenant_id: &str,
        query: &Query,
    ) -> StoreResult<(Vec<ActionRow>, Option<u64>)> {
        let mut conn = self.pool.acquire().await?;
        let (rows, count) = select_page(
            &mut conn,
            self.engine,
            "actions",
            "a",
            "*",
            tenant_id,
            query,
            &action_fields(),
            "a.created_us DESC, a.seq DESC",
        )
        .await?;
        let mut actions = rows
            .iter()
            .map(rows::action)
            .collect::<StoreResult<Vec<_>>>()?;
        load_commands(On::from(&mut conn), &mut actions).await?;
        Ok((actions, count))
    }

    async fn cancel_action(
        &self,
        tenant_id: &str,
        id: &str,
        requestor: &str,
        comment: Option<&str>,
        now: Micros,
    ) -> StoreResult<ActionRow> {
        let mut tx = self.write().await?;
        self.lock_action(&mut tx, id).await?;
        let action = fetch_action(On::from(&mut tx), id).await?;
        if action.tenant_id != tenant_id {
            return Err(StoreError::NotFound(format!("Machine action {id}")));
        }
        if action.status.is_final() {
            return Err(StoreError::Conflict(format!(
                "Machine action {id} is already {} and cannot be cancelled",
                action.status
            )));
        }
        exec::query(
            "UPDATE actions SET status = 'Cancelled', cancellation_requestor = $1, cancellation_comment = $2,
                cancelled_us = $3, updated_us = $4 WHERE id = $5",
        )
        .bind(requestor)
        .bind(comment)
        .bind(now.0)
        .bind(now.0)
        .bind(id)
        .execute(&mut tx)
        .await?;
        exec::query(
            // `idx >= 0`: by the primary key, not every running command.
            "UPDATE commands SET status = 'Failed', end_us = $1, errors = $2
             WHERE action_id = $3 AND idx >= 0 AND status = 'InProgress'",
        )
        .bind(now.0)
        .bind(json(&vec![format!("Cancelled by {requestor}")]))
        .bind(id)
        .execute(&mut tx)
        .await?;
        let action = fetch_action(On::from(&mut tx), id).await?;
        tx.commit().await?;
        Ok(action)
    }
}

pub(super) fn action_fields() -> Vec<Field> {
    vec![
        Field::new("id", "a.id", Kind::Text),
        Field::new("status", "a.status", Kind::Text),
        Field::new("machineId", "a.machine_id", Kind::Text),
        Field::new("type", "a.kind", Kind::Text),
        Field::new("requestor", "a.requestor", Kind::Text),
        Field::new("computerDnsName", "a.computer_dns_name", Kind::Text),
        Field::new("creationDateTimeUtc", "a.created_us", Kind::Time),
        Field::new("lastUpdateDateTimeUtc", "a.updated_us", Kind::Time),
        Field::new("batchId", "a.batch_id", Kind::Text),
        // The action's machine's tags: what device-group scopes filter on.
        Field::new(
            "machineTags",
            "(SELECT m.tags FROM machines m WHERE m.id = a.machine_id)",
            Kind::TextList,
        ),
    ]
}

/// More actions than this make loading their commands a long read.
const LONG_AFTER_ACTIONS: usize = 50;

pub(super) async fn load_commands(mut on: On<'_>, actions: &mut [ActionRow]) -> StoreResult<()> {
    for chunk in actions.chunks_mut(500) {
        let ids = placeholders(1, chunk.len());
        let sql =
            format!("SELECT * FROM commands WHERE action_id IN ({ids}) ORDER BY action_id, idx");
        let mut query = exec::query(sql);
        for action in chunk.iter() {
            query = query.bind(action.id.clone());
        }
        // A page of actions can bring thousands of commands; one action a few.
        if chunk.len() > LONG_AFTER_ACTIONS {
            query = query.long();
        }
        let rows = query.fetch_all(&mut on).await?;
        for row in &rows {
            let action_id: String = row.try_get("action_id")?;
            if let Some(action) = chunk.iter_mut().find(|a| a.id == action_id) {
                action.commands.push(rows::command(row)?);
            }
        }
    }
    Ok(())
}

/// One action with its commands: one statement (a poll is one read).
pub(super) async fn fetch_action(mut on: On<'_>, id: &str) -> StoreResult<ActionRow> {
    let rows = exec::query(
        "SELECT a.*, 1 AS commands_follow, c.* FROM actions a
         LEFT JOIN commands c ON c.action_id = a.id WHERE a.id = $1 ORDER BY c.idx",
    )
    .bind(id)
    .fetch_all(&mut on)
    .await?;
    let mut action = None;
    for row in rows {
        let (action_part, command_part) = row.split_at("commands_follow")?;
        let action = match &mut action {
            Some(action) => action,
            None => action.insert(rows::action(&action_part)?),
        };
        // No command row (LEFT JOIN): every column of the part is NULL.
        if command_part.try_get::<Option<i64>>("idx")?.is_some() {
            action.commands.push(rows::command(&command_part)?);
        }
    }
    action.ok_or_else(|| StoreError::NotFound(format!("Machine action {id}")))
}
