//! Repeated refusals of callers without a valid token, recorded as one
//! entry per source, operation and status per window instead of one each:
//! a client hammering the token endpoint would otherwise write thousands of
//! entries a second. The first refusal of a window is recorded at once, as
//! any other call (so an alert on it fires at once); the others are
//! counted, and when the window ends one more entry says how many there
//! were (`details.repeatedRefusals`), with the last one's time and claimed
//! caller. Nothing is dropped: every refusal is in the first entry or in the
//! count. Authenticated callers' refusals are recorded one by one as before.
//!
//! This module holds counts in memory only until the sweeper takes the
//! windows that ended (`take_due`); it never writes to the store itself.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::store::AuditEvent;
use crate::time::Micros;

/// Windows held at most; past it every held window ends at once.
const MAX_HELD: usize = 10_000;

/// One window: its first refusal's time, the latest refusal and how many
/// came after the first.
struct Window {
    started: Micros,
    latest: AuditEvent,
    repeated: u64,
}

/// What refusals are counted together by: source address, operation, status.
type Key = (Option<String>, String, Option<u16>);

/// Refusals of strangers, counted per source, operation and status until their window ends.
pub struct Refusals {
    window_us: i64,
    held: Mutex<HashMap<Key, Window>>,
}

impl Refusals {
    /// Counting over windows of `window_secs`.
    pub fn new(window_secs: u64) -> Self {
        Self {
            window_us: i64::try_from(window_secs.max(1)).unwrap_or(i64::MAX / 2) * 1_000_000,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// A refusal of an unauthenticated call: `Some` when it is to be
    /// recorded now (the first of its window), `None` when it was counted.
    /// Also returns the summaries of windows it closed to make room.
    pub fn note(&self, event: AuditEvent) -> (Option<AuditEvent>, Vec<AuditEvent>) {
        let key = (
            event.source_ip.clone(),
            event.operation.clone(),
            event.http_status,
        );
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = Vec::new();
        if let Some(window) = held.get_mut(&key)
            && event.time.0 - window.started.0 < self.window_us
        {
            window.repeated += 1;
            window.latest = event;
            return (None, closed);
        }
        if let Some(ended) = held.remove(&key) {
            closed.extend(summary(ended));
        }
        if held.len() >= MAX_HELD {
            closed.extend(held.drain().filter_map(|(_, w)| summary(w)));
        }
        held.insert(
            key,
            Window {
                started: event.time,
                latest: event.clone(),
                repeated: 0,
            },
        );
        (Some(event), closed)
    }

    /// The summaries of the windows that ended by `now` (for the sweeper).
    pub fn take_due(&self, now: Micros) -> Vec<AuditEvent> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<_> = held
            .iter()
            .filter(|(_, w)| now.0 - w.started.0 >= self.window_us)
            .map(|(key, _)| key.clone())
            .collect();
        due.into_iter()
            .filter_map(|key| held.remove(&key).and_then(summary))
            .collect()
    }
}

/// The entry that closes a window: the latest refusal, with how many came
/// after the first (None when none did).
fn summary(window: Window) -> Option<AuditEvent> {
    if window.repeated == 0 {
        return None;
    }
    let mut event = window.latest;
    let mut details: Map<String, Value> = serde_json::from_str(&event.details).unwrap_or_default();
    details.insert("repeatedRefusals".into(), window.repeated.into());
    details.insert("since".into(), window.started.to_wire().into());
    event.details = Value::Object(details).to_string();
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(ip: &str, at_secs: i64) -> AuditEvent {
        AuditEvent {
            time: Micros(at_secs * 1_000_000),
            tenant_id: String::new(),
            actor_type: "app".into(),
            actor_id: format!("guess-{at_secs}"),
            actor_name: String::new(),
            source_ip: Some(ip.into()),
            operation: "POST /{tenant}/oauth2/v2.0/token".into(),
            machine_id: None,
            target: None,
            outcome: "Denied".into(),
            http_status: Some(401),
            details: "{}".into(),
        }
    }

    #[test]
    fn one_entry_at_once_then_one_with_the_count() {
        let refusals = Refusals::new(60);
        let (now, closed) = refusals.note(refusal("10.0.0.1", 1000));
        assert!(now.is_some() && closed.is_empty());
        for t in 1001..1030 {
            assert!(refusals.note(refusal("10.0.0.1", t)).0.is_none());
        }
        // Another source has its own window.
        assert!(refusals.note(refusal("10.0.0.2", 1005)).0.is_some());
        assert!(refusals.take_due(Micros(1059 * 1_000_000)).is_empty());
        let due = refusals.take_due(Micros(1060 * 1_000_000));
        assert_eq!(due.len(), 1, "the lone refusal needs no summary");
        let details: Value = serde_json::from_str(&due[0].details).unwrap();
        assert_eq!(details["repeatedRefusals"], 29);
        assert_eq!(due[0].actor_id, "guess-1029", "the latest claimed caller");
        // The next refusal opens a new window and is recorded at once.
        assert!(refusals.note(refusal("10.0.0.1", 1061)).0.is_some());
    }

    #[test]
    fn a_refusal_after_the_window_closes_it_and_starts_another() {
        let refusals = Refusals::new(60);
        refusals.note(refusal("10.0.0.1", 0));
        refusals.note(refusal("10.0.0.1", 10));
        let (now, closed) = refusals.note(refusal("10.0.0.1", 70));
        assert!(now.is_some());
        assert_eq!(closed.len(), 1);
    }
}
