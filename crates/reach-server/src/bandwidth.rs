//! Optional bandwidth caps on file transfers, in bytes per second: one per
//! agent and one for the whole server. Token buckets with one second of
//! burst; a transfer over its share waits before its next piece. Streams
//! are slowed, never cut, and nothing is buffered beyond the piece in hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

/// A token bucket refilling at `rate` bytes per second, holding at most one
/// second's worth.
pub struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    /// A cap of `rate` bytes a second.
    pub fn new(rate: u64) -> Self {
        Self {
            rate: rate as f64,
            state: Mutex::new((rate as f64, Instant::now())),
        }
    }

    /// Takes `bytes`, returning how long to wait before sending them.
    pub fn reserve(&self, bytes: u64) -> Duration {
        self.reserve_at(bytes, Instant::now())
    }

    fn reserve_at(&self, bytes: u64, now: Instant) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = &mut *state;
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.rate);
        *last = now;
        *tokens -= bytes as f64;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }
}

/// The caps on transfer rates: per agent and for the whole server.
#[derive(Default)]
pub struct Bandwidth {
    total: Option<Bucket>,
    per_agent: u64,
    agents: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl Bandwidth {
    /// 0 means no cap.
    pub fn new(per_agent: u64, total: u64) -> Self {
        Self {
            total: (total > 0).then(|| Bucket::new(total)),
            per_agent,
            agents: Mutex::default(),
        }
    }

    fn agent(&self, machine_id: &str) -> Option<Arc<Bucket>> {
        if self.per_agent == 0 {
            return None;
        }
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            agents
                .entry(machine_id.to_string())
                .or_insert_with(|| Arc::new(Bucket::new(self.per_agent)))
                .clone(),
        )
    }

    /// Slows `stream` to the machine's and the server's caps.
    pub fn throttle<'a, S, E>(
        self: &Arc<Self>,
        machine_id: &str,
        stream: S,
    ) -> impl Stream<Item = Result<bytes::Bytes, E>> + Send + 'a
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Send + 'a,
        E: Send + 'a,
    {
        let agent = self.agent(machine_id);
        let this = self.clone();
        stream.then(move |item| {
            let agent = agent.clone();
            let this = this.clone();
            async move {
                if let Ok(bytes) = &item {
                    let len = bytes.len() as u64;
                    let wait_agent = agent.as_ref().map_or(Duration::ZERO, |b| b.reserve(len));
                    let wait_total = this
                        .total
                        .as_ref()
                        .map_or(Duration::ZERO, |b| b.reserve(len));
                    let wait = wait_agent.max(wait_total);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                item
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_a_second_of_burst_then_paces() {
        let bucket = Bucket::new(1000);
        let start = Instant::now();
        assert_eq!(bucket.reserve_at(1000, start), Duration::ZERO);
        assert_eq!(bucket.reserve_at(500, start), Duration::from_millis(500));
        // Half a second later the debt is paid; the next 1000 bytes wait a second.
        let later = start + Duration::from_millis(500);
        assert_eq!(bucket.reserve_at(1000, later), Duration::from_secs(1));
    }
}
