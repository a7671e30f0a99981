//! Which machines hold a connection to this node, and how to reach each
//! connection's task: `register` when an agent's Hello is handled, `send`
//! a `HubEvent` (wake, cancel, close), and the batch of machines heard from
//! since the last heartbeat write. Used by `agents` (which registers) and by
//! `cluster` (which delivers events to whichever node holds a machine).
//!
//! The hub holds connections only, never state: what a machine must run is
//! always read from the store, so a lost event costs latency, never work.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

/// Something a connection task must act on. Serialised as `cluster`
/// publishes it to the other nodes (`{"event":"cancel","action":"..."}`):
/// nodes of different versions read each other's, so the names stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum HubEvent {
    /// The store may hold a command for this machine.
    Wake,
    /// Stop the running command of this action.
    Cancel {
        /// The action's id.
        #[serde(rename = "action")]
        action_id: String,
    },
    /// Close the connection (the machine was revoked or reconnected elsewhere).
    Close,
}

struct Connection {
    id: u64,
    events: mpsc::Sender<HubEvent>,
}

/// This node's agent connections, by machine.
#[derive(Default)]
pub struct Hub {
    connections: Mutex<HashMap<String, Connection>>,
    next_id: AtomicU64,
    changed: Notify,
    /// Machines heard from since the last flush to the store.
    seen: Mutex<std::collections::HashSet<String>>,
}

impl Hub {
    /// Registers a connection for `machine_id`, closing any older one.
    pub fn register(&self, machine_id: &str) -> (u64, mpsc::Receiver<HubEvent>) {
        let (tx, rx) = mpsc::channel(64);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let old = self
            .lock()
            .insert(machine_id.to_string(), Connection { id, events: tx });
        if let Some(old) = old {
            let _ = old.events.try_send(HubEvent::Close);
        }
        self.changed.notify_waiters();
        (id, rx)
    }

    /// Removes the connection `id` of `machine_id`, unless a newer one replaced it.
    pub fn unregister(&self, machine_id: &str, id: u64) {
        let mut connections = self.lock();
        if connections.get(machine_id).is_some_and(|c| c.id == id) {
            connections.remove(machine_id);
        }
        drop(connections);
        self.changed.notify_waiters();
    }

    /// Delivers an event to the machine's connection, if it has one here.
    /// A full queue drops a `Wake` (one is already pending).
    pub fn send(&self, machine_id: &str, event: HubEvent) {
        if let Some(connection) = self.lock().get(machine_id) {
            let _ = connection.events.try_send(event);
        }
    }

    /// The id of the machine's connection to this node, if it has one (a
    /// new connection gets a new id).
    pub fn connection_id(&self, machine_id: &str) -> Option<u64> {
        self.lock().get(machine_id).map(|c| c.id)
    }

    /// Notes that a machine was heard from; `flush_seen` writes it later.
    pub fn seen(&self, machine_id: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(machine_id) {
            seen.insert(machine_id.to_string());
        }
    }

    /// Takes the machines heard from since the last call.
    pub fn take_seen(&self) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.drain().collect()
    }

    /// Wakes every connection here (after wake-ups may have been missed).
    pub fn wake_all(&self) {
        for connection in self.lock().values() {
            let _ = connection.events.try_send(HubEvent::Wake);
        }
    }

    /// Whether the machine holds a connection to this node.
    pub fn is_connected(&self, machine_id: &str) -> bool {
        self.lock().contains_key(machine_id)
    }

    /// How many machines hold a connection to this node.
    pub fn connected_count(&self) -> usize {
        self.lock().len()
    }

    /// Waits until `machine_id` is connected (after its Hello was handled).
    pub async fn wait_connected(&self, machine_id: &str) {
        loop {
            let changed = self.changed.notified();
            if self.is_connected(machine_id) {
                return;
            }
            changed.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}
