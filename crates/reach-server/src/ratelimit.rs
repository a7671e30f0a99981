//! Per-caller rate limits, as Defender applies them: each API has its own
//! budget per client app (runliveresponse 10 calls a minute; every other API
//! 100 a minute and 1,500 an hour).
//!
//! Calls are counted per caller, API and second: in this process's memory
//! on a single node (SQLite: one process owns the database, and a write per
//! API call would serialise every request behind SQLite's one writer), and
//! in the database with several nodes (PostgreSQL: the store's
//! `take_rate_limit`), so that the budget holds for the whole cluster. A
//! node takes a busy caller's calls from the database a few at a time (its
//! share, at most a twentieth of the smallest window's budget, 16 at most,
//! so Defender's 10 a minute stays one at a time), spends them within the
//! same second, and gives back what it did not spend with its next request:
//! the cluster never allows more than the budget, and a share left unspent
//! by a node that stops calling counts until its window passes. `decide`
//! is the one decision over those counts: whether one more call fits every
//! window, and if not, the exact whole seconds until it would
//! (`Retry-After`). It never blocks a request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::StoreResult;
pub use crate::store::rate_limits::Window;
use crate::store::rate_limits::{Bucket, RateLimits, decide, span};
use crate::time::Micros;

/// Where calls are counted.
pub enum Limiter {
    /// In this process (one node).
    Local(Mutex<HashMap<String, Vec<Bucket>>>),
    /// In the database, shared by every node; each key's share this node
    /// holds (its second, and the calls left in it).
    Shared(Mutex<HashMap<String, Share>>),
}

/// A key's share on this node. Its calls wait on each other while one asks
/// the database, so a burst is served from the share that one brings back.
type Share = Arc<tokio::sync::Mutex<Option<Bucket>>>;

/// The most calls a node takes from the database at once.
const MAX_SHARE: u32 = 16;

/// Shares held for this many keys at most (then the spent ones go).
const MAX_SHARES: usize = 100_000;

impl Limiter {
    /// Counting in this process.
    pub fn local() -> Self {
        Limiter::Local(Mutex::new(HashMap::new()))
    }

    /// Counting in the database, for a cluster.
    pub fn shared() -> Self {
        Limiter::Shared(Mutex::new(HashMap::new()))
    }

    /// Records a call of `key` if every window allows it; otherwise the
    /// whole seconds until one would be allowed.
    pub async fn check(
        &self,
        store: &dyn RateLimits,
        key: &str,
        windows: &[Window],
        now: Micros,
    ) -> StoreResult<Result<(), u64>> {
        match self {
            Limiter::Shared(shares) => take_shared(shares, store, key, windows, now).await,
            Limiter::Local(buckets) => Ok(count_locally(buckets, key, windows, now)),
        }
    }
}

/// The cluster's count: a call from this node's share of the second, or a
/// new share from the database (giving back what is left of the last one).
async fn take_shared(
    shares: &Mutex<HashMap<String, Share>>,
    store: &dyn RateLimits,
    key: &str,
    windows: &[Window],
    now: Micros,
) -> StoreResult<Result<(), u64>> {
    let (second, _) = span(windows, now);
    let slot = {
        let mut held = shares.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= MAX_SHARES {
            // Keep the shares in use or still spendable; the rest are spent.
            held.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |s| {
                        s.is_some_and(|b| b.second == second && b.calls > 0)
                    })
            });
        }
        held.entry(key.to_string()).or_default().clone()
    };
    let mut share = slot.lock().await;
    if let Some(held) = share.as_mut()
        && held.second == second
        && held.calls > 0
    {
        held.calls -= 1;
        return Ok(Ok(()));
    }
    let unused = share.take();
    let smallest = windows.iter().map(|w| w.calls).min().unwrap_or(0);
    let wanted = (smallest / 20).clamp(1, MAX_SHARE);
    let taken = store
        .take_rate_limit(key, windows, now, wanted, unused)
        .await?;
    if let Ok(taken) = taken {
        *share = Some(Bucket {
            second,
            calls: u64::from(taken - 1),
        });
    }
    Ok(taken.map(|_| ()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
