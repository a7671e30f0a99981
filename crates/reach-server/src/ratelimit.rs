//! Per-caller rate limits, as Defender applies them: each API has its own
//! budget per client app (runliveresponse 10 calls a minute; every other API
//! 100 a minute and 1,500 an hour).
//!
//! Calls are counted per caller, API and second: in this process's memory
//! on a single node (SQLite: one process owns the database, and a write per
//! API call would serialise every request behind SQLite's one writer), and
//! in the database with several nodes (PostgreSQL: the store's
//! `rate_limit`), so that the budget holds for the whole cluster. `decide`
//! is the one decision over those counts: whether one more call fits every
//! window, and if not, the exact whole seconds until it would
//! (`Retry-After`). It never blocks a request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::store::{Store, StoreResult};
use crate::time::Micros;

/// Where calls are counted.
pub enum Limiter {
    /// In this process (one node).
    Local(Mutex<HashMap<String, Vec<Bucket>>>),
    /// In the database, shared by every node.
    Shared,
}

impl Limiter {
    pub fn local() -> Self {
        Limiter::Local(Mutex::new(HashMap::new()))
    }

    /// Records a call of `key` if every window allows it; otherwise the
    /// whole seconds until one would be allowed.
    pub async fn check(
        &self,
        store: &dyn Store,
        key: &str,
        windows: &[Window],
        now: Micros,
    ) -> StoreResult<Result<(), u64>> {
        match self {
            Limiter::Shared => store.rate_limit(key, windows, now).await,
            Limiter::Local(buckets) => Ok(count_locally(buckets, key, windows, now)),
        }
    }
}

/// The single-node count: like the store's, in memory.
fn count_locally(
    buckets: &Mutex<HashMap<String, Vec<Bucket>>>,
    key: &str,
    windows: &[Window],
    now: Micros,
) -> Result<(), u64> {
    let (second, longest) = span(windows, now);
    let mut all = buckets.lock().unwrap_or_else(|e| e.into_inner());
    if all.len() > 100_000 {
        all.retain(|_, calls| calls.last().is_some_and(|b| b.second > second - longest));
    }
    let calls = all.entry(key.to_string()).or_default();
    calls.retain(|b| b.second > second - longest);
    let decision = decide(calls, windows, second);
    if decision.is_ok() {
        match calls.last_mut() {
            Some(last) if last.second == second => last.calls += 1,
            _ => calls.push(Bucket { second, calls: 1 }),
        }
    }
    decision
}

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
    pub calls: u32,
    pub window: Duration,
}

impl Window {
    pub fn per_minute(calls: u32) -> Self {
        Self {
            calls,
            window: Duration::from_secs(60),
        }
    }

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
    pub second: i64,
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
    fn the_local_count_keeps_callers_and_apis_apart_and_forgets_old_calls() {
        let buckets = Mutex::new(HashMap::new());
        let windows = [Window::per_minute(2)];
        let at = |s: i64| Micros(s * 1_000_000);
        assert!(count_locally(&buckets, "a/run", &windows, at(100)).is_ok());
        assert!(count_locally(&buckets, "a/run", &windows, at(101)).is_ok());
        assert_eq!(count_locally(&buckets, "a/run", &windows, at(102)), Err(58));
        assert!(count_locally(&buckets, "b/run", &windows, at(102)).is_ok());
        assert!(count_locally(&buckets, "a/list", &windows, at(102)).is_ok());
        assert!(count_locally(&buckets, "a/run", &windows, at(160)).is_ok());
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
