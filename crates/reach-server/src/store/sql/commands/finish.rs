//! A command's end (`Commands::finish_command`): the outcome recorded once,
//! a small result kept in the same transaction, the action moved on, and
//! what a response action changes of its machine (isolation, offboarding).

use reach_proto::agent::{CommandRef, Work};
use reach_proto::api::{ActionStatus, CommandStatus};

use super::super::*;
use crate::store::*;
use crate::time::Micros;

impl SqlStore {
    /// `Commands::finish_command`: the outcome, its result and what it
    /// changes of the action (and, for a response action, of the machine),
    /// in one transaction.
    pub(super) async fn finish(
        &self,
        machine_id: &str,
        command: &CommandRef,
        finish: &Finish,
        result: Option<&InlineResult>,
        now: Micros,
    ) -> StoreResult<Option<Finished>> {
        let mut tx = self.write().await?;
        self.lock_action(&mut tx, &command.action_id).await?;
        let found = exec::query(
            format!("SELECT a.status, c.work, c.result_key,
                (SELECT count(*) FROM commands r WHERE r.action_id = c.action_id AND r.status = 'Created') AS remaining,
                (SELECT count(*) FROM actions o WHERE o.machine_id = $3 AND o.status IN {ACTIVE}
                    AND o.id <> c.action_id) AS others
             FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE c.action_id = $1 AND c.idx = $2 AND c.status = 'InProgress' AND a.machine_id = $3"),
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .fetch_optional(&mut tx)
        .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let action_status: ActionStatus = parse_status(found.try_get::<&str>("status")?)?;
        let work: Work = from_json(found.try_get::<&str>("work")?)?;
        let uploaded = found.try_get::<Option<String>>("result_key")?.is_some();
        // Only a RunScript has a transcript (and a StopAndQuarantineFile
        // its report); an uploaded one is kept.
        let reports = matches!(
            work,
            Work::RunScript { .. } | Work::StopAndQuarantineFile { .. }
        );
        let result = result.filter(|_| reports && !uploaded);
        let has_result = uploaded || result.is_some();
        let needs_result = reports
            || matches!(
                work,
                Work::GetFile { .. } | Work::CollectInvestigationPackage
            );
        let missing = Finish::Failed {
            errors: vec!["The agent reported success but no result was uploaded".into()],
            timed_out: false,
        };
        let finish = match finish {
            Finish::Completed { .. } if needs_result && !has_result => &missing,
            other => other,
        };
        let file_sha256 = match finish {
            Finish::Completed { file_sha256 } => file_sha256.clone(),
            Finish::Failed { .. } => None,
        };
        let (status, errors, next_action) = match finish {
            Finish::Completed { .. } => (CommandStatus::Completed, Vec::new(), None),
            Finish::Failed { errors, timed_out } => (
                CommandStatus::Failed,
                errors.clone(),
                Some(if *timed_out {
                    ActionStatus::TimeOut
                } else {
                    ActionStatus::Failed
                }),
            ),
        };
        let row = exec::query(
            "UPDATE commands SET status = $1, end_us = $2, errors = $3, file_sha256 = $4,
                result_key = COALESCE(result_key, $7), result_size = COALESCE(result_size, $8),
                result_sha256 = COALESCE(result_sha256, $9)
             WHERE action_id = $5 AND idx = $6 RETURNING *",
        )
        .bind(status.as_str())
        .bind(now.0)
        .bind(json(&errors))
        .bind(file_sha256)
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(result.map(|_| inline_result_key(command)))
        .bind(result.map(|r| r.bytes.len() as i64))
        .bind(result.map(|r| r.sha256.as_str()))
        .fetch_one(&mut tx)
        .await?;
        if let Some(result) = result {
            // No result was recorded before (`uploaded` is false), so the
            // key just written is this one's.
            exec::query("INSERT INTO inline_results (action_id, idx, bytes) VALUES ($1, $2, $3)")
                .bind(&command.action_id)
                .bind(i64::from(command.index))
                .bind(result.bytes.as_slice())
                .execute(&mut tx)
                .await?;
        }
        // What the device did is so, whatever the action became meanwhile.
        let isolated = match (&work, status) {
            (Work::Isolate { .. }, CommandStatus::Completed) => Some(1),
            (Work::Unisolate, CommandStatus::Completed) => Some(0),
            _ => None,
        };
        if let Some(isolated) = isolated {
            exec::query("UPDATE machines SET isolated = $1 WHERE id = $2")
                .bind(isolated)
                .bind(machine_id)
                .execute(&mut tx)
                .await?;
        }
        if matches!(work, Work::Offboard) && status == CommandStatus::Completed {
            offboard(&mut tx, machine_id, now).await?;
        }
        let recorded = rows::command(&row)?;
        let remaining: i64 = found.try_get("remaining")?;
        let next_action = next_action.or((remaining == 0).then_some(ActionStatus::Succeeded));
        // A final action (cancelled meanwhile) keeps its status and time;
        // an active one moves on and is updated now (its last update, and
        // the queue TTL of its next command, count from this end). Only
        // this command is read back, never the action's other commands.
        let action_status = if action_status.is_final() {
            action_status
        } else {
            let status = next_action.unwrap_or(action_status);
            exec::query("UPDATE actions SET status = $1, updated_us = $2 WHERE id = $3")
                .bind(status.as_str())
                .bind(now.0)
                .bind(&command.action_id)
                .execute(&mut tx)
                .await?;
            status
        };
        tx.commit().await?;
        Ok(Some(Finished {
            action_status,
            command: recorded,
            others_active: found.try_get::<i64>("others")? > 0,
        }))
    }
}

/// Revokes the machine and marks it offboarded (its isolation gone with
/// its agent), in the caller's transaction.
pub(super) async fn offboard(tx: &mut WriteTx, machine_id: &str, now: Micros) -> StoreResult<()> {
    exec::query("UPDATE machines SET revoked = 1, isolated = 0, offboarded_us = $1 WHERE id = $2")
        .bind(now.0)
        .bind(machine_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
