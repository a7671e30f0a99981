//! A submission's writes: the limit checks, the action and its commands,
//! in one transaction that excludes other submissions of the tenant until
//! it commits. On SQLite that is the writer's transaction, statement by
//! statement (each a call into the library). On PostgreSQL it is one call
//! of `reach_create_action` (migration 0019), so the tenant's row lock is
//! held for the database's own work and never over a round trip to a node.
//! Both paths must decide alike: the store conformance suite runs the
//! races and limits on both engines.

use reach_proto::api::CommandStatus;

use super::super::*;
use crate::store::*;

/// The commands as they are stored, numbered from 0.
pub(super) fn command_rows(action: &NewAction) -> Vec<CommandRow> {
    action
        .commands
        .iter()
        .enumerate()
        .map(|(index, command)| CommandRow {
            index: index as u32,
            command: command.command.clone(),
            work: command.work.clone(),
            status: CommandStatus::Created,
            start_time: None,
            end_time: None,
            errors: Vec::new(),
            timeout_secs: command.timeout_secs,
            result: None,
            file_sha256: None,
            result_deleted: None,
        })
        .collect()
}

/// A second active action on the machine breaks the unique index
/// `actions_one_active_per_machine`.
fn active_exists(err: DbError) -> StoreError {
    if err.is_unique_violation() {
        StoreError::ActiveActionExists
    } else {
        err.into()
    }
}

fn machine_not_found(action: &NewAction) -> StoreError {
    StoreError::NotFound(format!("Machine {}", action.machine_id))
}

impl SqlStore {
    /// PostgreSQL: the whole submission in one statement (autocommitted).
    /// Returns the machine's name.
    pub(super) async fn create_in_one_call(
        &self,
        action: &NewAction,
        limits: ActionLimits,
        commands: &[CommandRow],
    ) -> StoreResult<String> {
        let commands: Vec<serde_json::Value> = commands
            .iter()
            .map(|c| {
                serde_json::json!({
                    "idx": c.index,
                    "command": json(&c.command),
                    "work": json(&c.work),
                    "payload_sha256": payload_sha256(&c.work),
                    "timeout_secs": c.timeout_secs,
                })
            })
            .collect();
        let row = exec::query(
            "SELECT outcome, dns_name FROM reach_create_action($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&action.id)
        .bind(&action.tenant_id)
        .bind(&action.machine_id)
        .bind(&action.requestor)
        .bind(&action.requestor_comment)
        .bind(action.now.0)
        .bind(&action.requestor_id)
        .bind(i64::from(limits.running_per_tenant))
        .bind(i64::from(limits.pending_per_requestor))
        .bind(json(&commands))
        .bind(action.kind.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(active_exists)?;
        match row.try_get::<&str>("outcome")? {
            "Created" => Ok(row.try_get::<String>("dns_name")?),
            "TenantActionLimit" => Err(StoreError::TenantActionLimit(limits.running_per_tenant)),
            "RequestorQueueLimit" => Err(StoreError::RequestorQueueLimit(
                limits.pending_per_requestor,
            )),
            "MachineNotFound" => Err(machine_not_found(action)),
            "ActiveActionExists" => Err(StoreError::ActiveActionExists),
            unknown => Err(other(anyhow::anyhow!(
                "reach_create_action answered {unknown:?}"
            ))),
        }
    }

    /// SQLite: the same steps in the writer's transaction. Returns the
    /// machine's name.
    pub(super) async fn create_in_steps(
        &self,
        action: &NewAction,
        limits: ActionLimits,
        commands: &[CommandRow],
    ) -> StoreResult<String> {
        let mut tx = self.write().await?;
        // Both counts in one statement (each through its own index). Only
        // live response counts, and is counted: response actions have
        // rate limits of their own, and never wait for a batch.
        let counts = exec::query(
            "SELECT (SELECT count(*) FROM actions WHERE tenant_id = $1 AND status = 'InProgress' AND batch_id IS NULL
                        AND kind = 'LiveResponse') AS running,
                    (SELECT count(*) FROM actions WHERE requestor_id = $2 AND status = 'Pending' AND batch_id IS NULL
                        AND kind = 'LiveResponse') AS queued,
                    (SELECT count(*) FROM actions WHERE machine_id = $3 AND status IN ('Pending', 'InProgress')
                        AND batch_id IS NOT NULL) AS batch_active",
        )
        .bind(&action.tenant_id)
        .bind(&action.requestor_id)
        .bind(&action.machine_id)
        .fetch_one(&mut tx)
        .await?;
        let running: i64 = counts.try_get("running")?;
        let queued: i64 = counts.try_get("queued")?;
        let live = action.kind == reach_proto::api::ActionType::LiveResponse;
        if live && running >= i64::from(limits.running_per_tenant) {
            return Err(StoreError::TenantActionLimit(limits.running_per_tenant));
        }
        if live && queued >= i64::from(limits.pending_per_requestor) {
            return Err(StoreError::RequestorQueueLimit(
                limits.pending_per_requestor,
            ));
        }
        // A machine's batch action counts as its active request.
        if live && counts.try_get::<i64>("batch_active")? > 0 {
            return Err(StoreError::ActiveActionExists);
        }
        // The machine must be the tenant's (no row: not found).
        let dns: String = exec::query_scalar(
            "INSERT INTO actions (id, tenant_id, machine_id, computer_dns_name, requestor, requestor_comment,
                status, created_us, updated_us, requestor_id, kind)
             SELECT $1, tenant_id, id, computer_dns_name, $2, $3, 'Pending', $4, $4, $7, $8 FROM machines
             WHERE id = $5 AND tenant_id = $6
             RETURNING computer_dns_name",
        )
        .bind(&action.id)
        .bind(&action.requestor)
        .bind(&action.requestor_comment)
        .bind(action.now.0)
        .bind(&action.machine_id)
        .bind(&action.tenant_id)
        .bind(&action.requestor_id)
        .bind(action.kind.as_str())
        .fetch_optional(&mut tx)
        .await
        .map_err(active_exists)?
        .ok_or_else(|| machine_not_found(action))?;
        // One prepared INSERT per command: on SQLite a statement is a call,
        // not a round trip.
        let insert = "INSERT INTO commands (action_id, idx, command, work, payload_sha256, status, timeout_secs)
             VALUES ($1, $2, $3, $4, $5, 'Created', $6)";
        for command in commands {
            exec::query(insert)
                .bind(&action.id)
                .bind(i64::from(command.index))
                .bind(json(&command.command))
                .bind(json(&command.work))
                .bind(payload_sha256(&command.work))
                .bind(command.timeout_secs as i64)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(dns)
    }
}
