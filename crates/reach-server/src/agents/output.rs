//! An agent's live output (`AgentMessage::Output`): a piece of the running
//! script's stdout or stderr, stored for followers on any node and woken
//! through `cluster::output_changed`. Taken only for the command this
//! connection handed out and that still runs, only where its stream ends,
//! within `live_response.live_output_max_bytes`, and at most `PER_SECOND`
//! pieces a second per connection; anything else is dropped (the
//! transcript brings the whole output at the end), never an error that
//! ends the connection, since live output is an extra.
//!
//! Never logs the text.

use reach_proto::agent::{CommandRef, Stream};
use tokio::time::Instant;

use super::AgentIdentity;
use crate::SharedState;
use crate::store::Appended;

/// Pieces a second one connection may send, on average (an agent sends at
/// most four bursts a second, of one piece per stream, or full pieces).
pub const PER_SECOND: f64 = 50.0;

/// Pieces one connection may send at once above the average.
pub const BURST: f64 = 100.0;

/// The largest piece this server takes, as its `Welcome` tells agents:
/// `live_output_bytes`, within what fits in an agent's message.
pub fn live_output_limit(config: &crate::config::Config) -> u64 {
    let room = config
        .agents
        .max_message_bytes
        .saturating_sub(reach_proto::agent::FINISHED_ROOM) as u64
        // JSON may escape every byte of the text as \u00XX.
        / 6;
    config.live_response.live_output_bytes.min(room)
}

/// A connection's allowance of pieces (a token bucket).
pub struct Allowance {
    tokens: f64,
    at: Instant,
}

impl Default for Allowance {
    fn default() -> Self {
        Self {
            tokens: BURST,
            at: Instant::now(),
        }
    }
}

impl Allowance {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + earned).min(BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// A piece the agent sent.
pub struct Piece {
    /// Which command.
    pub command: CommandRef,
    /// stdout or stderr.
    pub stream: Stream,
    /// Where it starts in its stream.
    pub offset: u64,
    /// The text.
    pub text: String,
}

/// Stores `piece` when this connection runs its command (`in_flight`) and
/// it is within bounds; wakes its followers once stored.
pub async fn record(
    state: &SharedState,
    identity: &AgentIdentity,
    in_flight: Option<&CommandRef>,
    allowance: &mut Allowance,
    piece: Piece,
) {
    let Piece {
        command,
        stream,
        offset,
        text,
    } = piece;
    let machine_id = &identity.machine_id;
    let limit = live_output_limit(&state.config);
    let refused = if in_flight != Some(&command) {
        Some("not the command this connection runs")
    } else if text.is_empty() || text.len() as u64 > limit {
        Some("empty, or larger than the server takes")
    } else if !allowance.take() {
        Some("more pieces a second than the server takes")
    } else {
        None
    };
    if let Some(why) = refused {
        crate::metrics::Metrics::add(&state.metrics.output_refused, 1);
        tracing::debug!(machine.id = %machine_id, action.id = %command.action_id, command.index = command.index, why, "live output dropped");
        return;
    }
    let max = state.config.live_response.live_output_max_bytes;
    let appended = state
        .store
        .append_output(machine_id, &command, stream, offset, &text, max)
        .await;
    match appended {
        Ok(Appended::Stored { batch_id, .. }) => {
            crate::metrics::Metrics::add(&state.metrics.output_bytes, text.len() as u64);
            crate::cluster::output_changed(state, &command.action_id, batch_id.as_deref()).await;
        }
        Ok(other) => {
            crate::metrics::Metrics::add(&state.metrics.output_refused, 1);
            tracing::debug!(machine.id = %machine_id, action.id = %command.action_id, command.index = command.index, outcome = ?other, "live output not stored");
        }
        Err(err) => {
            crate::metrics::Metrics::add(&state.metrics.output_refused, 1);
            tracing::warn!(machine.id = %machine_id, action.id = %command.action_id, command.index = command.index, error = format!("{err:#}"), "storing live output failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_allowance_refills_at_its_rate() {
        let mut allowance = Allowance::default();
        let taken = (0..1000).filter(|_| allowance.take()).count();
        assert_eq!(taken, BURST as usize);
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let taken = (0..1000).filter(|_| allowance.take()).count();
        assert_eq!(taken, PER_SECOND as usize);
    }
}
