//! An agent's `Finished`: how a command ended, with a small RunScript
//! transcript inside the message when the connection's `Welcome` allowed it
//! (`live_response.inline_result_bytes`), recorded in the same transaction
//! as the outcome, and the audit entries of a command's steps.
//!
//! The transcript is kept in the database with the outcome, in one
//! transaction: never as a file, so nothing can refer to a missing one, and
//! a repeated or altered message cannot replace it (the store keeps the
//! first result). It never takes a result for a command that is not a
//! RunScript of this machine.

use base64::Engine;
use reach_proto::agent::{CommandRef, Outcome};
use sha2::{Digest, Sha256};

use super::AgentIdentity;
use crate::SharedState;
use crate::audit::{Actor, Operation};
use crate::metrics::Metrics;
use crate::store::{Finish, Finished, InlineResult};
use crate::time::Micros;

/// The largest transcript this server takes inside `Finished`, as told to
/// agents in `Welcome`: the configured size, less what base64 and the rest
/// of the message need within `agents.max_message_bytes`.
pub fn inline_result_limit(config: &crate::config::Config) -> u64 {
    let room = config
        .agents
        .max_message_bytes
        .saturating_sub(reach_proto::agent::FINISHED_ROOM) as u64
        / 4
        * 3;
    config.live_response.inline_result_bytes.min(room)
}

/// Records `command`'s end as the agent reported it (with `result`, the
/// transcript that came with it, base64) and its audit entry. Returns what
/// changed when this message ended the command, None when it had already
/// ended.
pub async fn record(
    state: &SharedState,
    identity: &AgentIdentity,
    command: &CommandRef,
    outcome: Outcome,
    result: Option<String>,
) -> anyhow::Result<Option<Finished>> {
    let machine_id = &identity.machine_id;
    let mut finish = match outcome {
        Outcome::Completed { sha256, path } => {
            super::put_record::store(state, machine_id, command, path).await?;
            Finish::Completed {
                file_sha256: sha256,
            }
        }
        // What a device says is bounded before it is stored.
        Outcome::Failed { errors, timed_out } => Finish::Failed {
            errors: errors
                .into_iter()
                .take(20)
                .map(|e| super::truncate(e, 4096))
                .collect(),
            timed_out,
        },
    };
    let inline = match result {
        None => None,
        Some(encoded) => match decode_inline(state, machine_id, command, &encoded) {
            Ok(inline) => Some(inline),
            Err(refused) => {
                tracing::warn!(machine.id = %machine_id, action.id = %command.action_id, command.index = command.index, reason = %refused, "an inline result was refused");
                finish = match finish {
                    Finish::Failed {
                        mut errors,
                        timed_out,
                    } => {
                        errors.push(refused);
                        Finish::Failed { errors, timed_out }
                    }
                    Finish::Completed { .. } => Finish::Failed {
                        errors: vec![refused],
                        timed_out: false,
                    },
                };
                None
            }
        },
    };
    let finished = state
        .store
        .finish_command(machine_id, command, &finish, inline.as_ref(), Micros::now())
        .await?;
    if let Some(done) = &finished {
        if let (Some(start), Some(end)) = (done.command.start_time, done.command.end_time) {
            state
                .metrics
                .command_duration
                .observe_micros(end.0 - start.0);
        }
        audit_finish(state, identity, command, &finish).await;
        tracing::info!(machine.id = %machine_id, action.id = %command.action_id, command.index = command.index, action.status = %done.action_status, "command finished");
    }
    Ok(finished)
}

/// Decodes an inline transcript, to keep with the command's outcome. The
/// error is the command's failure message for a result the server does not
/// take (too large, or not base64).
fn decode_inline(
    state: &SharedState,
    machine_id: &str,
    command: &CommandRef,
    encoded: &str,
) -> Result<InlineResult, String> {
    let limit = inline_result_limit(&state.config);
    let too_large = || {
        format!(
            "The agent sent a result larger than the {limit} bytes this server takes with the outcome"
        )
    };
    // Base64 of `limit` bytes is at most this long: refuse before decoding.
    if encoded.len() as u64 > limit.div_ceil(3) * 4 {
        return Err(too_large());
    }
    let bytes = match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(bytes) if bytes.len() as u64 <= limit => bytes,
        Ok(_) => return Err(too_large()),
        Err(err) => {
            return Err(format!(
                "The agent sent a result that is not valid base64: {err}"
            ));
        }
    };
    Metrics::add(&state.metrics.bytes_received, bytes.len() as u64);
    Metrics::add(&state.metrics.transcripts_inline, 1);
    tracing::debug!(machine.id = %machine_id, action.id = %command.action_id, command.index = command.index, bytes = bytes.len(), "inline result received");
    Ok(InlineResult {
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes,
    })
}

/// Records a command's step in the audit trail, with its machine as the actor.
pub async fn audit_command(
    state: &SharedState,
    identity: &AgentIdentity,
    operation: Operation,
    command: &CommandRef,
    outcome: crate::audit::Outcome,
    details: serde_json::Value,
) {
    let event = crate::audit::command_event(
        &identity.tenant_id,
        Actor::machine(&identity.machine_id),
        &identity.machine_id,
        command,
        operation,
        outcome,
        details,
    );
    state.auditor.record(event).await;
}

/// Records how a command ended in the audit trail.
pub async fn audit_finish(
    state: &SharedState,
    identity: &AgentIdentity,
    command: &CommandRef,
    finish: &Finish,
) {
    let (outcome, details) = crate::audit::finish_details(finish);
    audit_command(
        state,
        identity,
        Operation::CommandFinished,
        command,
        outcome,
        details,
    )
    .await;
}
