//! The audit trail: events appended in one hash chain, listed, paged
//! through for verification and export, and pruned (recording its own
//! pruning).

use async_trait::async_trait;

use sha2::{Digest, Sha256};

use super::*;
use crate::odata::Query;
use crate::time::Micros;

/// One event of the audit trail, before the store places it in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it happened.
    pub time: Micros,
    /// Empty when no tenant is known (a refused token).
    pub tenant_id: String,
    /// `app`, `user`, `machine`, `operator` (the CLI on the server), `link`
    /// (a signed download link), `anonymous` or `system`.
    pub actor_type: String,
    /// The actor's id.
    pub actor_id: String,
    /// The actor's display name.
    pub actor_name: String,
    /// The client's address, for HTTP calls.
    pub source_ip: Option<String>,
    /// `POST /api/machines/{id}/runliveresponse`, `CommandStarted`, ...
    pub operation: String,
    /// The machine it concerns.
    pub machine_id: Option<String>,
    /// What it acted on.
    pub target: Option<String>,
    /// `Succeeded`, `Failed` or `Denied`.
    pub outcome: String,
    /// The HTTP status answered, for HTTP calls.
    pub http_status: Option<u16>,
    /// A JSON object, as text (hashed as stored).
    pub details: String,
}

/// An event in the chain: its number, and the hashes that link it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its number in the chain, from 1.
    pub seq: i64,
    /// What it records.
    pub event: AuditEvent,
    /// The hash of the entry before it.
    pub prev_hash: String,
    /// The hash of this entry and `prev_hash` (`link_hash`).
    pub hash: String,
}

/// The audit trail's storage: one chain for all tenants.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends events to the audit trail in one transaction, each chained to
    /// the one before it (`audit::link_hash`), in order. Appends from
    /// several nodes take turns, so the chain has one order.
    async fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<Vec<AuditEntry>>;
    /// A tenant's audit entries, newest first unless `$orderby` says otherwise.
    async fn list_audit(
        &self,
        tenant_id: &str,
        query: &Query,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>)>;
    /// All tenants' entries with `seq > after_seq` and time at or after
    /// `since`, oldest first, at most `limit`: what `audit verify` and
    /// `audit export` page through.
    async fn audit_page(
        &self,
        after_seq: i64,
        since: Micros,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Deletes the audit entries older than `before` and appends `event`
    /// (its details completed with `throughId`, `throughHash` and
    /// `removed`) in one transaction, so the chain records its own pruning.
    /// None when no entry was older.
    async fn prune_audit(
        &self,
        before: Micros,
        event: AuditEvent,
    ) -> StoreResult<Option<AuditEntry>>;
}

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hex SHA-256 of an entry's number, its fields and the hash before it,
/// written as one JSON array (serde_json writes the same text for the same
/// values, so the hash does not depend on the engine that stored them).
pub fn link_hash(seq: i64, event: &AuditEvent, prev_hash: &str) -> String {
    let text = serde_json::json!([
        "reach-audit-v1",
        seq,
        event.time.0,
        event.tenant_id,
        event.actor_type,
        event.actor_id,
        event.actor_name,
        event.source_ip,
        event.operation,
        event.machine_id,
        event.target,
        event.outcome,
        event.http_status,
        event.details,
        prev_hash,
    ])
    .to_string();
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuditEvent {
        AuditEvent {
            time: Micros(1_700_000_000_000_000),
            tenant_id: "t1".into(),
            actor_type: "system".into(),
            actor_id: "system".into(),
            actor_name: "system".into(),
            source_ip: None,
            operation: "Test".into(),
            machine_id: None,
            target: None,
            outcome: "Succeeded".into(),
            http_status: None,
            details: "{\"a\":1}".into(),
        }
    }

    #[test]
    fn the_hash_covers_every_field_and_the_link() {
        let base = sample();
        let hash = link_hash(7, &base, GENESIS);
        assert_eq!(hash.len(), 64);
        assert_eq!(hash, link_hash(7, &base.clone(), GENESIS));
        assert_ne!(hash, link_hash(8, &base, GENESIS));
        assert_ne!(hash, link_hash(7, &base, &"1".repeat(64)));
        let changes: Vec<fn(&mut AuditEvent)> = vec![
            |e| e.time.0 += 1,
            |e| e.tenant_id.push('x'),
            |e| e.actor_type.push('x'),
            |e| e.actor_id.push('x'),
            |e| e.actor_name.push('x'),
            |e| e.source_ip = Some("10.0.0.1".into()),
            |e| e.operation.push('x'),
            |e| e.machine_id = Some("m".into()),
            |e| e.target = Some("t".into()),
            |e| e.outcome.push('x'),
            |e| e.http_status = Some(200),
            |e| e.details = "{\"a\":2}".into(),
        ];
        for change in changes {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(hash, link_hash(7, &changed, GENESIS), "{changed:?}");
        }
    }
}
