//! Handing an agent its next command, lane by lane (`store::Lane`): at
//! most one live response command and one response action's command at a
//! time, each claimed through the store (never decided by the connection's
//! memory), each only if the agent's Hello says it runs that work: an older
//! agent's command it could not parse fails at once, saying why, rather
//! than closing its connection.

use std::time::Duration;

use reach_proto::agent::{BASE_CAPABILITIES, CommandRef, ServerMessage};

use super::gateway::Session;
use crate::store::{Claimed, Finish, Lane};
use crate::time::Micros;

/// Most `capabilities` an agent may list, and their longest name.
const MOST_CAPABILITIES: usize = 32;
const LONGEST_CAPABILITY: usize = 64;

/// The work a Hello says its agent runs (none listed: an agent before the
/// list, which runs `BASE_CAPABILITIES`), bounded.
pub(super) fn check_capabilities(listed: Vec<String>) -> anyhow::Result<Vec<String>> {
    if listed.len() > MOST_CAPABILITIES || listed.iter().any(|c| c.len() > LONGEST_CAPABILITY) {
        anyhow::bail!(
            "invalid Hello: at most {MOST_CAPABILITIES} capabilities of at most {LONGEST_CAPABILITY} bytes"
        );
    }
    if listed.is_empty() {
        return Ok(BASE_CAPABILITIES.iter().map(|c| c.to_string()).collect());
    }
    Ok(listed)
}

impl Session {
    /// Where the command of `lane` this agent runs is kept.
    pub(super) fn slot(&mut self, lane: Lane) -> &mut Option<CommandRef> {
        match lane {
            Lane::Live => &mut self.in_flight,
            Lane::Response => &mut self.in_flight_response,
        }
    }

    /// Sends the next command of each lane the agent is idle on.
    pub(super) async fn dispatch(&mut self) -> anyhow::Result<()> {
        for lane in Lane::ALL {
            self.dispatch_in(lane).await?;
        }
        Ok(())
    }

    async fn dispatch_in(&mut self, lane: Lane) -> anyhow::Result<()> {
        let machine_id = self.identity.machine_id.clone();
        loop {
            if self.slot(lane).is_some() {
                return Ok(());
            }
            if lane == Lane::Response {
                match self.state.store.has_active_in(&machine_id, lane).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(err) => {
                        self.claim_later(&err);
                        return Ok(());
                    }
                }
            }
            let claimed = {
                // A wake-up of the whole fleet queues its claims here, in
                // order and without a deadline, rather than in the database
                // pool, where each would wait its acquire timeout out and fail.
                let _turn = self.state.claims.acquire().await?;
                self.state
                    .store
                    .claim_next_command(&machine_id, &self.instance, Micros::now(), lane)
                    .await
            };
            let claimed = match claimed {
                Ok(Some(claimed)) => claimed,
                Ok(None) => return Ok(()),
                Err(err) => {
                    self.claim_later(&err);
                    return Ok(());
                }
            };
            if !self.capabilities.iter().any(|c| c == claimed.work.kind()) {
                self.refuse_unsupported(&claimed).await?;
                continue;
            }
            return self.send_claimed(lane, claimed).await;
        }
    }

    /// A command the agent cannot run (an older agent): it fails now,
    /// saying why, and is never sent.
    async fn refuse_unsupported(&mut self, claimed: &Claimed) -> anyhow::Result<()> {
        let finish = Finish::Failed {
            errors: vec![format!(
                "The agent on this machine (version {}) cannot run {}: update it",
                self.agent_version,
                claimed.work.kind()
            )],
            timed_out: false,
        };
        let machine_id = self.identity.machine_id.clone();
        tracing::warn!(machine.id = %machine_id, action.id = %claimed.command.action_id, work = claimed.work.kind(), agent.version = %self.agent_version, "the agent cannot run this command; it failed");
        if self
            .state
            .store
            .finish_command(&machine_id, &claimed.command, &finish, None, Micros::now())
            .await?
            .is_some()
        {
            super::finished::audit_finish(&self.state, &self.identity, &claimed.command, &finish)
                .await;
        }
        Ok(())
    }

    async fn send_claimed(&mut self, lane: Lane, claimed: Claimed) -> anyhow::Result<()> {
        let machine_id = self.identity.machine_id.clone();
        // Recorded while the command travels: the wait for the audit commit
        // is not added to dispatch latency. (Should this node die between
        // the two, the action's own entry lists the command, and its end is
        // recorded by whichever node sees it.)
        let (state, identity) = (self.state.clone(), self.identity.clone());
        let (command, details) = (
            claimed.command.clone(),
            serde_json::json!({ "work": claimed.work }),
        );
        let started = async move {
            let operation = crate::audit::Operation::CommandStarted;
            super::finished::audit_command(
                &state,
                &identity,
                operation,
                &command,
                crate::audit::Outcome::Succeeded,
                details,
            )
            .await;
        };
        tracing::info!(machine.id = %machine_id, action.id = %claimed.command.action_id, command.index = claimed.command.index, "command dispatched");
        if claimed.command.index == 0 {
            let waited = Micros::now().0 - claimed.action_created.0;
            self.state.metrics.dispatch_latency.observe_micros(waited);
        }
        *self.slot(lane) = Some(claimed.command.clone());
        // A small library file is read to travel with the command, while
        // the CommandStarted entry is committed.
        let send = async {
            let inline_payload =
                super::payload::inline(&self.state, &self.identity.tenant_id, &claimed.work).await;
            let run = ServerMessage::Run(reach_proto::agent::Assignment {
                command: claimed.command,
                timeout_secs: claimed.timeout_secs,
                chunk_bytes: self.state.config.live_response.chunk_bytes,
                work: claimed.work,
                inline_payload,
            });
            self.send(&run).await
        };
        let ((), sent) = tokio::join!(started, send);
        sent
    }

    /// A claim (or the read before it) the database failed: a pool
    /// exhausted by a wake-up of a whole fleet, a failover. The connection
    /// stays and the claim is tried again in one to three seconds: ending
    /// it would bring the agent back to connect (more work for the same
    /// database), a whole fleet at once.
    pub(super) fn claim_later(&mut self, err: &crate::store::StoreError) {
        crate::metrics::Metrics::add(&self.state.metrics.claims_deferred, 1);
        let delay = Duration::from_millis(1000 + rand::random::<u64>() % 2000);
        tracing::warn!(machine.id = %self.identity.machine_id, error = format!("{err:#}"), retry.ms = delay.as_millis() as u64, "claiming the next command failed; trying again");
        self.claim_again_at = Some(tokio::time::Instant::now() + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_lists_its_work_within_bounds_or_none_for_an_older_agent() {
        let base: Vec<String> = BASE_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        assert_eq!(check_capabilities(Vec::new()).unwrap(), base);
        let listed = vec!["RunScript".to_string(), "Isolate".to_string()];
        assert_eq!(check_capabilities(listed.clone()).unwrap(), listed);
        assert!(check_capabilities(vec!["x".into(); MOST_CAPABILITIES + 1]).is_err());
        assert!(check_capabilities(vec!["x".repeat(LONGEST_CAPABILITY + 1)]).is_err());
    }
}
