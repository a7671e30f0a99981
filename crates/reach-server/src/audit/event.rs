//! What an entry says: who acted (`Actor`), the events written outside an
//! HTTP call (`event`, `command_event`), how a finished command reads, and
//! an entry as clients and SIEMs read it (`to_wire`). It never writes.

use reach_proto::agent::CommandRef;
use reach_proto::api::AuditLogEntry;
use serde_json::Value;

use super::{Operation, Outcome};
use crate::store::{AuditEntry, AuditEvent};
use crate::time::Micros;

/// An entry as clients and SIEMs read it.
pub fn to_wire(entry: AuditEntry) -> AuditLogEntry {
    let event = entry.event;
    AuditLogEntry {
        id: entry.seq,
        timestamp: event.time.to_wire(),
        tenant_id: event.tenant_id,
        actor_type: event.actor_type,
        actor_id: event.actor_id,
        actor_name: event.actor_name,
        source_ip: event.source_ip,
        operation: event.operation,
        machine_id: event.machine_id,
        target: event.target,
        outcome: event.outcome,
        http_status: event.http_status,
        details: serde_json::from_str(&event.details).unwrap_or(Value::String(event.details)),
        previous_hash: entry.prev_hash,
        hash: entry.hash,
    }
}

/// Who an event is about, as the trail names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `app`, `user`, `machine`, `operator`, `link`, `anonymous` or `system`.
    pub kind: &'static str,
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: String,
}

impl Actor {
    /// A client app, by client id and display name.
    pub fn app(client_id: &str, name: &str) -> Self {
        Self {
            kind: "app",
            id: client_id.to_string(),
            name: name.to_string(),
        }
    }

    /// A console user, by name.
    pub fn user(name: &str) -> Self {
        Self {
            kind: "user",
            id: name.to_string(),
            name: name.to_string(),
        }
    }

    /// Whoever holds a signed download link.
    pub fn link() -> Self {
        Self {
            kind: "link",
            id: String::new(),
            name: "download link".into(),
        }
    }

    /// An agent, by its machine id.
    pub fn machine(machine_id: &str) -> Self {
        Self {
            kind: "machine",
            id: machine_id.to_string(),
            name: machine_id.to_string(),
        }
    }

    /// Someone running `reach-server` subcommands on the server itself.
    pub fn operator() -> Self {
        let name = std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            kind: "operator",
            id: name.clone(),
            name,
        }
    }

    /// The server itself (sweeper, retention).
    pub fn system() -> Self {
        Self {
            kind: "system",
            id: "reach-server".into(),
            name: "reach-server".into(),
        }
    }

    pub(super) fn anonymous() -> Self {
        Self {
            kind: "anonymous",
            id: String::new(),
            name: String::new(),
        }
    }
}

/// An event outside an HTTP call (a command started, an app created).
pub fn event(
    tenant_id: &str,
    actor: Actor,
    operation: Operation,
    outcome: Outcome,
    details: Value,
) -> AuditEvent {
    AuditEvent {
        time: Micros::now(),
        tenant_id: tenant_id.to_string(),
        actor_type: actor.kind.to_string(),
        actor_id: actor.id,
        actor_name: actor.name,
        source_ip: None,
        operation: operation.as_str().to_string(),
        machine_id: None,
        target: None,
        outcome: outcome.as_str().to_string(),
        http_status: None,
        details: details.to_string(),
    }
}

/// An event about one command of an action on a machine (its target is
/// `action/index`).
pub fn command_event(
    tenant_id: &str,
    actor: Actor,
    machine_id: &str,
    command: &CommandRef,
    operation: Operation,
    outcome: Outcome,
    details: Value,
) -> AuditEvent {
    let mut event = event(tenant_id, actor, operation, outcome, details);
    event.machine_id = Some(machine_id.to_string());
    event.target = Some(format!("{}/{}", command.action_id, command.index));
    event
}

/// How a finished command reads in the trail: its outcome and details.
pub fn finish_details(finish: &crate::store::Finish) -> (Outcome, Value) {
    match finish {
        crate::store::Finish::Completed { file_sha256 } => (
            Outcome::Succeeded,
            serde_json::json!({ "fileSha256": file_sha256 }),
        ),
        crate::store::Finish::Failed { errors, timed_out } => (
            Outcome::Failed,
            serde_json::json!({ "errors": errors, "timedOut": timed_out }),
        ),
    }
}
