//! Machines as the API lists them: their facts, tags and connection state,
//! and which of them a caller may see (`Scope`).

use async_trait::async_trait;
use reach_proto::agent::MachineInfo;

use super::*;
use crate::odata::Query;
use crate::time::Micros;

/// Machines a caller may see: the tenant's, or those carrying one of the
/// tags of the caller's device groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every machine of the tenant.
    #[default]
    All,
    /// Machines with any of these tags (compared without case); none when empty.
    Tags(Vec<String>),
}

impl Scope {
    /// Whether a machine with `machine_tags` is visible.
    pub fn allows(&self, machine_tags: &[String]) -> bool {
        match self {
            Scope::All => true,
            Scope::Tags(tags) => machine_tags
                .iter()
                .any(|t| tags.iter().any(|s| s.eq_ignore_ascii_case(t))),
        }
    }
}

/// A machine by id, or by computer name (without case) when exactly one
/// machine that `scope` allows and that is not revoked carries it: Conflict,
/// naming their ids, when several do; NotFound outside `scope`. Never a
/// guess: the agent chooses its name, so a guess would let a device
/// impersonate another.
pub async fn resolve_machine<S: Machines + ?Sized>(
    store: &S,
    tenant_id: &str,
    id_or_name: &str,
    scope: &Scope,
) -> StoreResult<MachineRow> {
    let hidden = || StoreError::NotFound(format!("Machine {id_or_name}"));
    if let Some(machine) = store.machine_by_id(tenant_id, id_or_name).await? {
        return match scope.allows(&machine.tags) {
            true => Ok(machine),
            false => Err(hidden()),
        };
    }
    let mut named: Vec<MachineRow> = store
        .machines_named(tenant_id, id_or_name)
        .await?
        .into_iter()
        .filter(|m| scope.allows(&m.tags))
        .collect();
    match named.len() {
        0 => Err(hidden()),
        1 => Ok(named.remove(0)),
        _ => {
            let ids: Vec<&str> = named.iter().map(|m| m.id.as_str()).collect();
            Err(StoreError::Conflict(format!(
                "The name '{id_or_name}' matches {} machines: {}. Use a machine id; an operator can revoke a stale record (reach-server machines revoke ID) so that the name resolves again",
                ids.len(),
                ids.join(", ")
            )))
        }
    }
}

/// A machine as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRow {
    /// Its id (40 hex characters).
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// What its agent last reported.
    pub info: MachineInfo,
    /// The address its agent last connected from.
    pub last_ip: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// When it enrolled.
    pub first_seen: Micros,
    /// When its agent was last heard from.
    pub last_seen: Micros,
    /// Whether its agent holds a connection to a node.
    pub connected: bool,
    /// `Isolated`, `NotIsolated`, or `Pending` while an isolate or release
    /// waits or runs.
    pub isolation_state: String,
}

/// Machines: their facts, tags, connections and visibility.
#[async_trait]
pub trait Machines: Send + Sync {
    /// Replaces a machine's tags.
    async fn set_machine_tags(&self, machine_id: &str, tags: &[String]) -> StoreResult<()>;
    /// Adds `add` and removes `remove` (compared without case) from the tags
    /// of a tenant's machine in one transaction, so that concurrent changes
    /// all land; returns the tags it then carries.
    async fn change_machine_tags(
        &self,
        tenant_id: &str,
        machine_id: &str,
        add: &[String],
        remove: &[String],
    ) -> StoreResult<Vec<String>>;
    /// Revoked machines still recorded as connected (to any node).
    async fn revoked_connected(&self) -> StoreResult<Vec<String>>;
    /// Machines recorded as connected (to any node) and running nothing
    /// whose action has been Pending since before `waited_since` and may be
    /// handed out (not a paused batch's, nor one of a wave to come): their
    /// wake-up was lost (a connected, idle agent claims a new action at
    /// once). At most `limit`, longest waiting first.
    async fn waiting_connected(&self, waited_since: Micros, limit: u32)
    -> StoreResult<Vec<String>>;
    /// Records a connection: device facts, address, isolation (when the
    /// agent reports it), connected = true, last seen = now. Returns the
    /// machine's former name when its reported name changed.
    async fn machine_connected(
        &self,
        machine_id: &str,
        info: &MachineInfo,
        ip: Option<&str>,
        isolated: Option<bool>,
        now: Micros,
    ) -> StoreResult<Option<String>>;
    /// Records that all of `machine_ids` were heard from at `now`, in one
    /// transaction (heartbeats are batched: one write per node per interval,
    /// not one per agent).
    async fn machines_seen(&self, machine_ids: &[String], now: Micros) -> StoreResult<()>;
    /// Records that a machine's connection ended.
    async fn machine_disconnected(&self, machine_id: &str, now: Micros) -> StoreResult<()>;
    /// By id, or by computer name: `resolve_machine` over every machine.
    async fn get_machine(&self, tenant_id: &str, id_or_name: &str) -> StoreResult<MachineRow> {
        resolve_machine(self, tenant_id, id_or_name, &Scope::All).await
    }
    /// By id only.
    async fn machine_by_id(&self, tenant_id: &str, id: &str) -> StoreResult<Option<MachineRow>>;
    /// The machines that are not revoked and carry this computer name
    /// (without case), at most 50.
    async fn machines_named(&self, tenant_id: &str, name: &str) -> StoreResult<Vec<MachineRow>>;
    /// Names (lower case) that several machines of the tenant that are not
    /// revoked carry, with each such machine's tags.
    async fn duplicated_names(&self, tenant_id: &str) -> StoreResult<Vec<(String, Vec<String>)>>;
    /// `active_since`: machines connected and seen after it are Active.
    async fn list_machines(
        &self,
        tenant_id: &str,
        query: &Query,
        active_since: Micros,
    ) -> StoreResult<(Vec<MachineRow>, Option<u64>)>;
    /// Every machine of the tenant matching `query`'s filter (its paging
    /// and order ignored), by computer name and id: what a batch targets.
    /// Revoked machines are left out.
    async fn machine_targets(
        &self,
        tenant_id: &str,
        query: &Query,
        active_since: Micros,
    ) -> StoreResult<Vec<BatchTarget>>;
}
