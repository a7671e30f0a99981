//! The agent gateway: enrolment, the one WebSocket each agent holds
//! (`gateway`), and the HTTP endpoints agents stream files through
//! (`transfer`). `Hub` maps connected machines to their connection task so
//! that API handlers can wake them the moment a command is created.
//!
//! The hub holds connections only; what a machine must run is always read
//! from the store, so a lost wake-up costs latency, never work.

pub mod gateway;
pub mod put_record;
pub mod transfer;
pub mod verify;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;
use tokio::sync::{Notify, mpsc};

use crate::SharedState;
use crate::auth;
use crate::error::ApiError;

/// Something a connection task must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// The store may hold a command for this machine.
    Wake,
    /// Stop the running command of this action.
    Cancel(String),
    /// Close the connection (the machine was revoked or reconnected elsewhere).
    Close,
}

struct Connection {
    id: u64,
    events: mpsc::Sender<HubEvent>,
}

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

    pub fn is_connected(&self, machine_id: &str) -> bool {
        self.lock().contains_key(machine_id)
    }

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

/// A machine, authenticated by its credential.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub machine_id: String,
    pub tenant_id: String,
}

/// Checks `Authorization: Bearer <machine_id>.<secret>`.
pub async fn authenticate(
    state: &SharedState,
    headers: &HeaderMap,
) -> Result<AgentIdentity, ApiError> {
    let unauthorized = || ApiError::Unauthorized("Invalid or missing agent credential".into());
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(unauthorized)?;
    let (machine_id, secret) = token.split_once('.').ok_or_else(unauthorized)?;
    if machine_id.len() != 40 || !machine_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unauthorized());
    }
    let credential = match state.store.machine_credential(machine_id).await {
        Ok(c) => c,
        Err(crate::store::StoreError::NotFound(_)) => return Err(unauthorized()),
        Err(err) => return Err(err.into()),
    };
    let presented = auth::sha256_hex(secret);
    if credential.revoked
        || !auth::constant_time_eq(presented.as_bytes(), credential.credential_hash.as_bytes())
    {
        return Err(unauthorized());
    }
    Ok(AgentIdentity {
        machine_id: machine_id.to_string(),
        tenant_id: credential.tenant_id,
    })
}

/// `text` cut to at most `max` bytes, at a character boundary: what a
/// device says is bounded before it is stored.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
