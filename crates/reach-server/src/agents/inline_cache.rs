//! Small library files kept in memory for the `Run` message. A library
//! file is stored under its tenant and SHA-256 and never changes, so what
//! was read once is the file for as long as it is kept: a script sent to
//! many machines is read from the object store once, not twice per machine
//! (its size, then its bytes). Files too large to travel inline are
//! remembered as such, so they cost no size check either.
//!
//! Bounded: at most `BUDGET` bytes are held (oldest first out), and an
//! entry is never larger than `live_response.inline_payload_bytes`. It holds
//! only what any agent of the tenant may receive anyway; agents still check
//! every byte against the SHA-256 recorded at submission.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

/// Bytes of library files held at most (16 MiB: 256 files of 64 KiB).
pub const BUDGET: usize = 16 * 1024 * 1024;

/// What a "too large to travel inline" entry counts against the budget.
const MARKER_COST: usize = 64;

/// A library file as the `Run` message takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inline {
    /// Small enough: its bytes.
    Bytes(Bytes),
    /// Larger than the inline limit: the agent downloads it.
    TooLarge,
}

impl Inline {
    fn cost(&self) -> usize {
        match self {
            Inline::Bytes(bytes) => bytes.len().max(MARKER_COST),
            Inline::TooLarge => MARKER_COST,
        }
    }
}

#[derive(Default)]
struct Held {
    entries: HashMap<String, Inline>,
    order: VecDeque<String>,
    bytes: usize,
}

/// Library files by object key, within `BUDGET`.
#[derive(Default)]
pub struct InlineCache {
    held: Mutex<Held>,
}

impl InlineCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file under `key`, if it was read before and is still held.
    pub fn get(&self, key: &str) -> Option<Inline> {
        self.lock().entries.get(key).cloned()
    }

    /// Keeps `file` under `key`, letting the oldest entries go to stay
    /// within the budget.
    pub fn keep(&self, key: &str, file: Inline) {
        let cost = file.cost();
        if cost > BUDGET {
            return;
        }
        let mut held = self.lock();
        if held.entries.contains_key(key) {
            return;
        }
        while held.bytes + cost > BUDGET {
            let Some(oldest) = held.order.pop_front() else {
                break;
            };
            if let Some(gone) = held.entries.remove(&oldest) {
                held.bytes -= gone.cost();
            }
        }
        held.bytes += cost;
        held.order.push_back(key.to_string());
        held.entries.insert(key.to_string(), file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_kept_within_the_budget_oldest_out_first() {
        let cache = InlineCache::default();
        let file = |byte: u8| Inline::Bytes(Bytes::from(vec![byte; BUDGET / 4]));
        for (n, key) in ["a", "b", "c", "d"].iter().enumerate() {
            cache.keep(key, file(n as u8));
        }
        cache.keep("large", Inline::TooLarge);
        assert_eq!(cache.get("a"), None, "the oldest went to make room");
        assert_eq!(cache.get("b"), Some(file(1)));
        assert_eq!(cache.get("large"), Some(Inline::TooLarge));
        assert!(cache.lock().bytes <= BUDGET);
        cache.keep("huge", Inline::Bytes(Bytes::from(vec![0; BUDGET + 1])));
        assert_eq!(cache.get("huge"), None, "never more than the budget");
        cache.keep("b", file(9));
        assert_eq!(
            cache.get("b"),
            Some(file(1)),
            "a file under a key never changes"
        );
    }
}
