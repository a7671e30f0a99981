//! The sweeper: a background task that ends actions queued past the queue
//! TTL (TimeOut) and commands whose lease ran out without a result (Failed),
//! then tells the machines' connections so they move on; and closes the
//! connections of machines revoked meanwhile (`reach-server machines
//! revoke` writes to the database from another process). All decisions are
//! made in the store, atomically; the sweeper only calls it on a timer.
//! It also writes when machines were last heard from, batched: one
//! transaction per interval for all of this node's agents, not one write
//! per heartbeat. Every tenth sweep it deletes the chunks of GetFiles that
//! ended without a result (`retention::discard_abandoned`). Each sweep
//! writes the counts of unauthenticated refusals whose window ended
//! (`audit::refusals`). Every fifth sweep, if no other node of the cluster
//! did it in the last `rewake_after_secs`, it wakes the connections (here
//! and, through the cluster's notices, on the other nodes) of machines
//! whose action waited Pending longer than that: a wake-up lost between
//! nodes costs that much latency, never the action.
//! Every sixtieth, with several nodes, it forgets rate-limit counts older
//! than any window. Every tenth it forgets the live output of commands
//! that ended more than `live_output_keep_secs` ago (their transcripts stay). Each sweep moves batches in waves to their next wave
//! (or pauses one whose machines failed too much) and wakes the wave.

use std::time::Duration;

use crate::SharedState;
use crate::hub::HubEvent;
use crate::time::Micros;

/// Connections woken again per sweep at most.
const REWAKE_BATCH: u32 = 1000;

/// Wakes the connections of machines whose action is still Pending past
/// `rewake_after_secs`: here, and on the other nodes through the cluster's
/// notices. One node of the cluster does it per period (the read costs the
/// database the same whichever node asks).
async fn rewake(state: &SharedState) {
    let every = state.config.live_response.rewake_after_secs;
    let now = Micros::now();
    match state.store.take_sweeper_turn("rewake", every, now).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            tracing::warn!(
                error = format!("{err:#}"),
                "taking the re-wake's turn failed"
            );
            return;
        }
    }
    match state
        .store
        .waiting_connected(now.minus_secs(every), REWAKE_BATCH)
        .await
    {
        Ok(waiting) => {
            if !waiting.is_empty() {
                tracing::info!(
                    machines = waiting.len(),
                    "waking connections whose action waits; their wake-up was lost"
                );
                crate::cluster::wake_many(state, &waiting).await;
            }
        }
        Err(err) => tracing::warn!(
            error = format!("{err:#}"),
            "looking for actions whose wake-up was lost failed"
        ),
    }
}

/// Moves batches in waves on: wakes the machines of a wave that starts;
/// records a batch that paused itself.
async fn advance_waves(state: &SharedState) {
    let steps = match state.store.advance_waves(Micros::now()).await {
        Ok(steps) => steps,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "moving batches to their next wave failed"
            );
            return;
        }
    };
    for step in steps {
        match step {
            crate::store::WaveStep::Started {
                batch_id,
                wave,
                machines,
            } => {
                tracing::info!(batch.id = %batch_id, wave, machines = machines.len(), "batch wave started");
                crate::cluster::wake_many(state, &machines).await;
            }
            crate::store::WaveStep::Paused {
                batch_id,
                tenant_id,
                reason,
            } => {
                tracing::warn!(batch.id = %batch_id, reason = %reason, "batch paused itself");
                let mut event = crate::audit::event(
                    &tenant_id,
                    crate::audit::Actor::system(),
                    crate::audit::Operation::BatchPaused,
                    crate::audit::Outcome::Succeeded,
                    serde_json::json!({ "reason": reason }),
                );
                event.target = Some(batch_id);
                state.auditor.record(event).await;
            }
        }
    }
}

/// Forgets rate-limit counts no window reaches any more, where they are
/// kept in the database (several nodes; a single node counts in memory).
async fn prune_rate_limits(state: &SharedState) {
    if !matches!(state.limiter, crate::ratelimit::Limiter::Shared(_)) {
        return;
    }
    let before = Micros::now().minus_secs(crate::store::rate_limits::PRUNE_AFTER.as_secs());
    if let Err(err) = state.store.prune_rate_limits(before).await {
        tracing::warn!(
            error = format!("{err:#}"),
            "pruning old rate-limit counts failed"
        );
    }
}

/// Commands whose live output is forgotten per sweep at most.
const FORGET_OUTPUT_BATCH: u32 = 500;

/// Forgets the live output of commands that ended past the keep period.
async fn forget_output(state: &SharedState) {
    let keep = state.config.live_response.live_output_keep_secs;
    let before = Micros::now().minus_secs(keep);
    match state.store.forget_output(before, FORGET_OUTPUT_BATCH).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(
            commands = n,
            "forgot the live output of commands ended long ago"
        ),
        Err(err) => tracing::warn!(
            error = format!("{err:#}"),
            "forgetting old live output failed"
        ),
    }
}

/// Runs the sweeps on a timer until shutdown.
pub async fn run(state: SharedState) {
    let cfg = &state.config.live_response;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.sweep_interval_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A device is Active while heard from within three heartbeats; writing
    // every half heartbeat (at most every 5 s) keeps that true.
    let seen_every = Duration::from_secs(state.config.agents.heartbeat_secs.max(1))
        .div_f64(2.0)
        .min(Duration::from_secs(5));
    let mut seen_flushed = tokio::time::Instant::now();
    let mut sweeps = 0u64;
    loop {
        tick.tick().await;
        sweeps += 1;
        for event in state.refusals.take_due(Micros::now()) {
            state.auditor.record(event).await;
        }
        if sweeps.is_multiple_of(10) {
            forget_output(&state).await;
            match crate::retention::discard_abandoned(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    commands = n,
                    "deleted the chunks of transfers that ended without a result"
                ),
                Err(err) => tracing::warn!(
                    error = format!("{err:#}"),
                    "deleting abandoned chunks failed"
                ),
            }
        }
        if seen_flushed.elapsed() >= seen_every {
            seen_flushed = tokio::time::Instant::now();
            let seen = state.hub.take_seen();
            if !seen.is_empty()
                && let Err(err) = state.store.machines_seen(&seen, Micros::now()).await
            {
                tracing::warn!(
                    machines = seen.len(),
                    error = format!("{err:#}"),
                    "recording heartbeats failed"
                );
            }
        }
        let now = Micros::now();
        match state
            .store
            .sweep(
                now.minus_secs(cfg.queue_ttl_secs),
                cfg.lease_grace_secs,
                now,
            )
            .await
        {
            Ok(swept) => {
                for id in &swept.queue_expired {
                    tracing::info!(action.id = %id, "action timed out waiting for its device");
                }
                for (machine_id, command) in &swept.lease_expired {
                    let tenant_id = match state.store.machine_credential(machine_id).await {
                        Ok(machine) => machine.tenant_id,
                        Err(_) => String::new(),
                    };
                    let event = crate::audit::command_event(
                        &tenant_id,
                        crate::audit::Actor::system(),
                        machine_id,
                        command,
                        crate::audit::Operation::CommandFinished,
                        crate::audit::Outcome::Failed,
                        serde_json::json!({ "errors": ["The command's lease ran out without a result from the agent"] }),
                    );
                    state.auditor.record(event).await;
                    tracing::warn!(
                        action.id = %command.action_id,
                        command.index = command.index,
                        machine.id = %machine_id,
                        "command lease expired without a result from the agent"
                    );
                    crate::cluster::send(
                        &state,
                        machine_id,
                        HubEvent::Cancel {
                            action_id: command.action_id.clone(),
                        },
                    )
                    .await;
                }
            }
            Err(err) => tracing::error!(error = format!("{err:#}"), "sweep failed"),
        }
        advance_waves(&state).await;
        if sweeps.is_multiple_of(5) {
            rewake(&state).await;
        }
        if sweeps.is_multiple_of(60) {
            prune_rate_limits(&state).await;
        }
        match state.store.revoked_connected().await {
            Ok(revoked) => {
                for machine_id in revoked.iter().filter(|id| state.hub.is_connected(id)) {
                    tracing::warn!(machine.id = %machine_id, "disconnecting a revoked machine");
                    state.hub.send(machine_id, HubEvent::Close);
                }
            }
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "checking for revoked machines failed"
            ),
        }
    }
}
