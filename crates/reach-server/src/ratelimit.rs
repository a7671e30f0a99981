//! Per-caller rate limits, as Defender applies them: each API has its own
//! budget per client app (runliveresponse 10 calls a minute; every other API
//! 100 a minute and 1,500 an hour). A sliding log per (caller, API) gives an
//! exact `Retry-After`.
//!
//! State is in this process's memory: with several nodes each enforces its
//! own budget. It never blocks a request; it only answers yes or how long.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

#[derive(Default)]
pub struct RateLimiter {
    log: Mutex<HashMap<(String, &'static str), VecDeque<Instant>>>,
}

impl RateLimiter {
    /// Records a call of `caller` to `api` if every window allows it;
    /// otherwise returns the whole seconds until it would be allowed.
    pub fn check(&self, caller: &str, api: &'static str, windows: &[Window]) -> Result<(), u64> {
        self.check_at(caller, api, windows, Instant::now())
    }

    fn check_at(
        &self,
        caller: &str,
        api: &'static str,
        windows: &[Window],
        now: Instant,
    ) -> Result<(), u64> {
        let longest = windows.iter().map(|w| w.window).max().unwrap_or_default();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() > 10_000 {
            log.retain(|_, calls| {
                calls
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < longest)
            });
        }
        let calls = log.entry((caller.to_string(), api)).or_default();
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= longest)
        {
            calls.pop_front();
        }
        if let Some(closed) = windows.iter().find(|w| w.calls == 0) {
            return Err(closed.window.as_secs().max(1));
        }
        let mut wait = Duration::ZERO;
        for w in windows {
            let in_window: Vec<&Instant> = calls
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < w.window)
                .collect();
            if in_window.len() >= w.calls as usize {
                // The call that must age out first is the `calls`-th newest.
                let oldest_needed = in_window[w.calls as usize - 1];
                let free_at = *oldest_needed + w.window;
                wait = wait.max(free_at.saturating_duration_since(now));
            }
        }
        if wait > Duration::ZERO {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(secs.max(1));
        }
        calls.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleventh_call_in_a_minute_waits_for_the_first_to_age_out() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        let windows = [Window::per_minute(10)];
        for i in 0..10 {
            let at = start + Duration::from_secs(i);
            assert!(limiter.check_at("app", "run", &windows, at).is_ok());
        }
        let retry = limiter
            .check_at("app", "run", &windows, start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(retry, 50);
        assert!(limiter.check_at("other", "run", &windows, start).is_ok());
        assert!(limiter.check_at("app", "list", &windows, start).is_ok());
        assert!(
            limiter
                .check_at("app", "run", &windows, start + Duration::from_secs(60))
                .is_ok()
        );
    }

    #[test]
    fn a_zero_limit_refuses_every_call() {
        let limiter = RateLimiter::default();
        let retry = limiter
            .check("a", "x", &[Window::per_minute(0)])
            .unwrap_err();
        assert_eq!(retry, 60);
    }

    #[test]
    fn hourly_window_applies_too() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        let windows = [Window::per_minute(100), Window::per_hour(3)];
        for i in 0..3 {
            assert!(
                limiter
                    .check_at("a", "x", &windows, start + Duration::from_secs(i * 120))
                    .is_ok()
            );
        }
        let retry = limiter
            .check_at("a", "x", &windows, start + Duration::from_secs(400))
            .unwrap_err();
        assert_eq!(retry, 3200);
    }
}
