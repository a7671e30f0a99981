//! Rate limits' arithmetic and their counts shared by every node: `decide`
//! is the one decision over a caller's calls per second (whether one more
//! fits every window, and if not, the whole seconds until it would), used
//! by the store's count (`RateLimits`, PostgreSQL: the cluster's budget)
//! and by `ratelimit`'s count in this process alike.

use async_trait::async_trait;

use std::time::Duration;

use super::*;
use crate::time::Micros;

/// Rate-limit counts shared by every node.
#[async_trait]
pub trait RateLimits: Send + Sync {
    /// Takes up to `wanted` calls of the budget under `key` (a caller and
    /// an API) at once, as many as every window allows, all counted in the
    /// second of `now`: a node's share, which it spends within that second
    /// without asking again. First gives back `unused`, what is left of an
    /// earlier share (its second and calls). Answers how many calls were
    /// taken (at least one), or the whole seconds until one would be
    /// allowed. Atomic across nodes: the budget is the cluster's.
    async fn take_rate_limit(
        &self,
        key: &str,
        windows: &[Window],
        now: Micros,
        wanted: u32,
        unused: Option<Bucket>,
    ) -> StoreResult<Result<u32, u64>>;
    /// Records one call under `key` if every window allows it, or answers
    /// the whole seconds until one would be allowed.
    async fn rate_limit(
        &self,
        key: &str,
        windows: &[Window],
        now: Micros,
    ) -> StoreResult<Result<(), u64>> {
        Ok(self
            .take_rate_limit(key, windows, now, 1, None)
            .await?
            .map(|_| ()))
    }
    /// Forgets the calls counted before `before`: no window reaches back
    /// that far (`PRUNE_AFTER`). The sweeper calls it; counting never does.
    async fn prune_rate_limits(&self, before: Micros) -> StoreResult<u64>;
}

/// Calls counted longer ago than this are pruned: longer than any window
/// (the longest Reach applies is an hour).
pub const PRUNE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// The Unix second of `now`, and the longest window in seconds: calls in
/// seconds at or before `second - longest` no longer count.
pub fn span(windows: &[Window], now: Micros) -> (i64, i64) {
    let longest = windows
        .iter()
        .map(|w| w.window.as_secs())
        .max()
        .unwrap_or(0);
    (now.0.div_euclid(1_000_000), longest as i64)
}

/// One window of a limit: at most `calls` within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// At most this many calls...
    pub calls: u32,
    /// ...within this long.
    pub window: Duration,
}

impl Window {
    /// `calls` a minute.
    pub fn per_minute(calls: u32) -> Self {
        Self {
            calls,
            window: Duration::from_secs(60),
        }
    }

    /// `calls` an hour.
    pub fn per_hour(calls: u32) -> Self {
        Self {
            calls,
            window: Duration::from_secs(3600),
        }
    }
}

/// The calls a caller made to an API within one Unix second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// The Unix second.
    pub second: i64,
    /// Calls made in it.
    pub calls: u64,
}

/// Whether one more call at Unix second `now` fits every window, given the
/// caller's earlier calls (`buckets`, oldest first). A call made in second
/// `s` counts against a window of `w` seconds until second `s + w`.
/// `Err` holds the seconds to wait (at least 1).
pub fn decide(buckets: &[Bucket], windows: &[Window], now: i64) -> Result<(), u64> {
    let mut wait = 0i64;
    for window in windows {
        let span = window.window.as_secs() as i64;
        if window.calls == 0 {
            return Err(span.max(1) as u64);
        }
        let in_window: Vec<&Bucket> = buckets.iter().filter(|b| b.second > now - span).collect();
        let mut total: u64 = in_window.iter().map(|b| b.calls).sum();
        // Let the oldest calls age out until one more call fits.
        for bucket in &in_window {
            if total < u64::from(window.calls) {
                break;
            }
            total -= bucket.calls;
            wait = wait.max(bucket.second + span - now);
        }
    }
    if wait > 0 {
        return Err(wait as u64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `decide` call by call, recording the allowed ones.
    fn call(log: &mut Vec<Bucket>, windows: &[Window], now: i64) -> Result<(), u64> {
        decide(log, windows, now)?;
        match log.last_mut() {
            Some(last) if last.second == now => last.calls += 1,
            _ => log.push(Bucket {
                second: now,
                calls: 1,
            }),
        }
        Ok(())
    }

    #[test]
    fn eleventh_call_in_a_minute_waits_for_the_first_to_age_out() {
        let windows = [Window::per_minute(10)];
        let mut log = Vec::new();
        for i in 0..10 {
            assert!(call(&mut log, &windows, 1000 + i).is_ok());
        }
        assert_eq!(call(&mut log, &windows, 1010), Err(50));
        assert_eq!(call(&mut log, &windows, 1059), Err(1));
        assert!(call(&mut log, &windows, 1060).is_ok());
    }

    #[test]
    fn a_burst_in_one_second_ages_out_together() {
        let windows = [Window::per_minute(3)];
        let mut log = Vec::new();
        for _ in 0..3 {
            assert!(call(&mut log, &windows, 500).is_ok());
        }
        assert_eq!(call(&mut log, &windows, 530), Err(30));
        assert!(call(&mut log, &windows, 560).is_ok());
    }

    #[test]
    fn a_zero_limit_refuses_every_call() {
        assert_eq!(decide(&[], &[Window::per_minute(0)], 0), Err(60));
    }

    #[test]
    fn hourly_window_applies_too() {
        let windows = [Window::per_minute(100), Window::per_hour(3)];
        let mut log = Vec::new();
        for i in 0..3 {
            assert!(call(&mut log, &windows, i * 120).is_ok());
        }
        assert_eq!(call(&mut log, &windows, 400), Err(3200));
    }
}
