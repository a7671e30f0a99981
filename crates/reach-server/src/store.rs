//! The `Store` trait: every piece of durable state (tenants, apps, machines,
//! library entries, actions and their commands) behind domain-shaped methods.
//! The database behind it is the single source of truth; callers keep nothing
//! in memory that a restart would need.
//!
//! One implementation, `sql_store::SqlStore`, runs on SQLite (the embedded
//! default) and PostgreSQL (several nodes), chosen by the database URL; the
//! conformance suite (tests/store.rs) runs the same tests on both. Row types
//! here are internal and never serialised; the API converts them to
//! reach-proto types. A store must never touch file bytes; those live in
//! `files`.

pub mod sql;
pub mod sql_store;

use async_trait::async_trait;
use reach_proto::agent::{CommandRef, MachineInfo, Work};
use reach_proto::api::{ActionStatus, Command, CommandStatus};

use crate::odata::Query;
use crate::ratelimit::Window;
use crate::time::Micros;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist (or is not visible to the caller).
    #[error("{0} was not found")]
    NotFound(String),
    /// The change conflicts with what is stored; the message says how.
    #[error("{0}")]
    Conflict(String),
    /// The machine already has a Pending or InProgress live response action.
    #[error("a live response action is already active on the machine")]
    ActiveActionExists,
    /// The tenant reached its limit of live response actions running.
    #[error("the tenant has {0} live response actions running")]
    TenantActionLimit(u32),
    /// The requestor reached its limit of queued live response actions.
    #[error("the requestor has {0} live response actions queued")]
    RequestorQueueLimit(u32),
    /// A credential the store checked is not (or no longer) good; the
    /// message says why.
    #[error("{0}")]
    Refused(String),
    /// The OData query cannot be applied (unknown property, wrong type).
    #[error("{0}")]
    InvalidQuery(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
}

/// A client app (client-credentials identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub client_id: String,
    pub tenant_id: String,
    pub name: String,
    /// argon2 PHC string.
    pub secret_hash: String,
    pub roles: Vec<String>,
    /// Disabled apps get no token, and their tokens stop working.
    pub disabled: bool,
    /// Bumped when the secret is rotated or the app disabled: tokens issued
    /// under an older generation stop working.
    pub token_generation: u64,
    /// Device groups the app is limited to; empty: every machine.
    pub device_groups: Vec<String>,
}

/// A person who signs in to the web console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub tenant_id: String,
    /// argon2 PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    /// Bumped when the user is disabled: older tokens stop working.
    pub token_generation: u64,
    /// Device groups the user is limited to; empty: every machine.
    pub device_groups: Vec<String>,
}

/// Machines a caller may see: the tenant's, or those carrying one of the
/// tags of the caller's device groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    All,
    /// Machines with any of these tags (compared without case); none when empty.
    Tags(Vec<String>),
}

impl Scope {
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
pub async fn resolve_machine<S: Store + ?Sized>(
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

/// A named set of machine tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceGroup {
    pub tenant_id: String,
    pub name: String,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRow {
    pub id: String,
    pub tenant_id: String,
    pub info: MachineInfo,
    pub last_ip: Option<String>,
    pub tags: Vec<String>,
    pub first_seen: Micros,
    pub last_seen: Micros,
    pub connected: bool,
}

/// The limits `create_action` enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionLimits {
    /// Actions running on devices (InProgress) per tenant: Defender's
    /// concurrent live response sessions.
    pub running_per_tenant: u32,
    /// Actions waiting for their devices (Pending) per requestor.
    pub pending_per_requestor: u32,
}

/// An enrollment token as operators see it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentTokenRow {
    /// The first 12 hex characters of the token's SHA-256.
    pub id: String,
    pub tenant_id: String,
    pub created: Micros,
    pub expires: Option<Micros>,
    pub max_uses: Option<u64>,
    pub uses: u64,
    pub revoked: Option<Micros>,
}

/// What the gateway needs to authenticate an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineCredential {
    pub tenant_id: String,
    /// Hex SHA-256 of the agent's secret.
    pub credential_hash: String,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryRow {
    pub tenant_id: String,
    pub file_name: String,
    pub sha256: String,
    pub size: u64,
    pub description: Option<String>,
    pub has_parameters: bool,
    pub parameters_description: Option<String>,
    pub created_by: String,
    pub last_updated_by: Option<String>,
    pub creation_time: Micros,
    pub last_updated_time: Micros,
    /// Ed25519 signature (base64) uploaded with the file.
    pub signature: Option<String>,
}

/// A command of a new action, validated, with the library file's hash
/// recorded at submit time for PutFile and RunScript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    pub command: Command,
    pub work: Work,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAction {
    pub id: String,
    pub tenant_id: String,
    pub machine_id: String,
    pub requestor: String,
    /// Who queued it, as a stable key (`Principal::rate_key`): what the
    /// per-requestor queue limit counts.
    pub requestor_id: String,
    pub requestor_comment: Option<String>,
    pub commands: Vec<NewCommand>,
    pub now: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    pub index: u32,
    pub command: Command,
    pub work: Work,
    pub status: CommandStatus,
    pub start_time: Option<Micros>,
    pub end_time: Option<Micros>,
    pub errors: Vec<String>,
    pub timeout_secs: u64,
    pub result: Option<ResultBlob>,
    /// GetFile: hex SHA-256 of the collected file as it was on the device.
    pub file_sha256: Option<String>,
    /// When retention deleted the stored result.
    pub result_deleted: Option<Micros>,
}

/// A stored result whose action ended before the retention cutoff: what
/// to delete from the object store before `Store::forget_result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredResult {
    pub command: CommandRef,
    pub tenant_id: String,
    pub machine_id: String,
    pub result: Option<ResultBlob>,
    /// Chunks recorded for the command (a GetFile, whole or cut short).
    pub chunks: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRow {
    pub id: String,
    pub tenant_id: String,
    pub machine_id: String,
    pub computer_dns_name: String,
    pub requestor: String,
    pub requestor_comment: Option<String>,
    pub status: ActionStatus,
    pub created: Micros,
    pub last_update: Micros,
    pub cancellation_requestor: Option<String>,
    pub cancellation_comment: Option<String>,
    pub cancellation_time: Option<Micros>,
    pub commands: Vec<CommandRow>,
}

/// A stored command result: where its bytes are and what they hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultBlob {
    /// The object, or with `chunks` the prefix of the chunk objects.
    pub key: String,
    pub size: u64,
    /// Hex SHA-256 of the stored bytes; none for a result served as its
    /// chunks (checked by their decompressed bytes and the whole file's
    /// SHA-256 instead, which the command records).
    pub sha256: Option<String>,
    /// Set when the result is `chunks` objects to serve one after another.
    pub chunks: Option<u32>,
}

/// One stored chunk of a result, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRow {
    pub n: u32,
    pub raw_size: u64,
    pub raw_crc32: Option<u32>,
    /// Empty when the agent did not send it.
    pub raw_sha256: String,
    pub stored_size: u64,
    pub stored_sha256: String,
    /// Completed uploads of this chunk (more than 1: it was sent again).
    pub attempts: u32,
}

/// One event of the audit trail, before the store places it in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub time: Micros,
    /// Empty when no tenant is known (a refused token).
    pub tenant_id: String,
    /// `app`, `user`, `machine`, `operator` (the CLI on the server), `link`
    /// (a signed download link), `anonymous` or `system`.
    pub actor_type: String,
    pub actor_id: String,
    pub actor_name: String,
    pub source_ip: Option<String>,
    /// `POST /api/machines/{id}/runliveresponse`, `CommandStarted`, ...
    pub operation: String,
    pub machine_id: Option<String>,
    pub target: Option<String>,
    /// `Succeeded`, `Failed` or `Denied`.
    pub outcome: String,
    pub http_status: Option<u16>,
    /// A JSON object, as text (hashed as stored).
    pub details: String,
}

/// An event in the chain: its number, and the hashes that link it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// A command handed to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub command: CommandRef,
    pub work: Work,
    pub timeout_secs: u64,
    /// When its action was submitted.
    pub action_created: Micros,
}

/// A command InProgress on a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub command: CommandRef,
    /// The agent process it was handed to (empty: unknown).
    pub agent_instance: String,
}

/// How a command ended, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// `file_sha256`: for GetFile, the hash of the file on the device.
    Completed { file_sha256: Option<String> },
    Failed {
        errors: Vec<String>,
        timed_out: bool,
    },
}

/// What a sweep changed, so the caller can log it and wake machines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Actions that waited longer than the queue TTL and ended TimeOut.
    pub queue_expired: Vec<String>,
    /// Commands whose lease ran out without a result from the agent, with their machine.
    pub lease_expired: Vec<(String, CommandRef)>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database is reachable.
    async fn ping(&self) -> StoreResult<()>;
    /// The secret stored under `name`, storing `fresh` first if there is none.
    /// Concurrent callers all get the one value that won.
    async fn secret(&self, name: &str, fresh: &str, now: Micros) -> StoreResult<String>;
    /// Live response actions of all tenants by status (every status listed).
    async fn count_actions_by_status(&self) -> StoreResult<Vec<(ActionStatus, u64)>>;

    async fn create_tenant(&self, tenant: &Tenant, now: Micros) -> StoreResult<()>;
    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;

    async fn create_app(&self, app: &App, now: Micros) -> StoreResult<()>;
    async fn get_app(&self, client_id: &str) -> StoreResult<App>;

    /// Replaces an app's secret hash; its earlier tokens stop working.
    async fn set_app_secret(&self, client_id: &str, secret_hash: &str) -> StoreResult<()>;
    /// Replaces an app's secret hash with another hash of the same secret,
    /// only while the stored one is still `old`; its tokens stay valid.
    async fn rehash_app_secret(&self, client_id: &str, old: &str, new: &str) -> StoreResult<()>;
    /// Ends every session of a user (by name, without case): its earlier
    /// tokens stop working.
    async fn end_user_sessions(&self, name: &str) -> StoreResult<()>;
    /// Disables or enables an app; either way its earlier tokens stop working.
    async fn set_app_disabled(&self, client_id: &str, disabled: bool) -> StoreResult<()>;
    /// Disables or enables a user (by name, without case); either way the
    /// user's earlier tokens stop working.
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> StoreResult<()>;
    /// Creates or replaces a tenant's device group.
    async fn put_device_group(&self, group: &DeviceGroup, now: Micros) -> StoreResult<()>;
    async fn list_device_groups(&self, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>>;
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

    /// Conflict when a user of that name (in any case) exists.
    async fn create_user(&self, user: &User, now: Micros) -> StoreResult<()>;
    /// By name, compared without case.
    async fn get_user(&self, name: &str) -> StoreResult<User>;

    /// Stores an enrollment token by its hash, valid until `expires` (None:
    /// no expiry) for at most `max_uses` enrollments (None: no limit).
    async fn create_enrollment_token(
        &self,
        tenant_id: &str,
        token_hash: &str,
        expires: Option<Micros>,
        max_uses: Option<u64>,
        now: Micros,
    ) -> StoreResult<()>;
    /// Every enrollment token of every tenant, newest first.
    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentTokenRow>>;
    /// Revokes the one token whose id (its hash's first characters) starts
    /// with `id`: NotFound when none, Conflict when several.
    async fn revoke_enrollment_token(
        &self,
        id: &str,
        now: Micros,
    ) -> StoreResult<EnrollmentTokenRow>;
    /// Creates a machine with a fresh id if the enrollment token is known,
    /// not revoked, not expired at `now` and not used up, counting the use;
    /// `Refused` says which it is not.
    async fn enroll_machine(
        &self,
        token_hash: &str,
        machine_id: &str,
        credential_hash: &str,
        info: &MachineInfo,
        ip: Option<&str>,
        now: Micros,
    ) -> StoreResult<MachineRow>;
    async fn machine_credential(&self, machine_id: &str) -> StoreResult<MachineCredential>;
    /// Marks a machine revoked; its credential stops working.
    async fn revoke_machine(&self, machine_id: &str) -> StoreResult<()>;
    /// Revoked machines still recorded as connected (to any node).
    async fn revoked_connected(&self) -> StoreResult<Vec<String>>;
    /// Machines recorded as connected (to any node) whose action has been
    /// Pending since before `waited_since`: their wake-up was lost (a
    /// connected, idle agent claims a new action at once). At most `limit`,
    /// longest waiting first.
    async fn waiting_connected(&self, waited_since: Micros, limit: u32)
    -> StoreResult<Vec<String>>;

    /// Records a connection: device facts, address, connected = true, last
    /// seen = now. Returns the machine's former name when its reported name
    /// changed.
    async fn machine_connected(
        &self,
        machine_id: &str,
        info: &MachineInfo,
        ip: Option<&str>,
        now: Micros,
    ) -> StoreResult<Option<String>>;
    /// Records that all of `machine_ids` were heard from at `now`, in one
    /// transaction (heartbeats are batched: one write per node per interval,
    /// not one per agent).
    async fn machines_seen(&self, machine_ids: &[String], now: Micros) -> StoreResult<()>;
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

    /// Inserts a library entry, or replaces it when `replace` is set.
    /// Returns the entry it replaced. Conflict when it exists and `replace` is not set.
    async fn put_library_file(
        &self,
        row: &LibraryRow,
        replace: bool,
    ) -> StoreResult<Option<LibraryRow>>;
    async fn get_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow>;
    async fn list_library_files(&self, tenant_id: &str) -> StoreResult<Vec<LibraryRow>>;
    async fn delete_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow>;
    /// True when a library entry or an unfinished command still needs the blob of this hash.
    async fn library_blob_in_use(&self, tenant_id: &str, sha256: &str) -> StoreResult<bool>;

    /// Creates an action atomically, enforcing one active action per machine
    /// (`ActiveActionExists`), at most `limits.running_per_tenant` actions
    /// running (InProgress) in the tenant (`TenantActionLimit`) and at most
    /// `limits.pending_per_requestor` queued (Pending) by its requestor
    /// (`RequestorQueueLimit`).
    async fn create_action(
        &self,
        action: &NewAction,
        limits: ActionLimits,
    ) -> StoreResult<ActionRow>;
    /// The Pending actions queued by `requestor_id`, oldest first.
    async fn pending_actions_of(&self, requestor_id: &str) -> StoreResult<Vec<ActionRow>>;
    async fn get_action(&self, tenant_id: &str, id: &str) -> StoreResult<ActionRow>;
    /// One command of an action of `machine_id` (NotFound for any other
    /// machine's): what the agent's transfer endpoints check, in one read.
    async fn machine_command(
        &self,
        machine_id: &str,
        command: &CommandRef,
    ) -> StoreResult<CommandRow>;
    async fn list_actions(
        &self,
        tenant_id: &str,
        query: &Query,
    ) -> StoreResult<(Vec<ActionRow>, Option<u64>)>;
    /// Cancels a Pending or InProgress action; Conflict when it is already final.
    /// A command still running is marked Failed.
    async fn cancel_action(
        &self,
        tenant_id: &str,
        id: &str,
        requestor: &str,
        comment: Option<&str>,
        now: Micros,
    ) -> StoreResult<ActionRow>;

    /// Claims the next command for a machine: the first Created command of its
    /// active action, if no command of that action is InProgress. Marks the
    /// command and action InProgress and records the agent process
    /// (`agent_instance`) it is handed to.
    async fn claim_next_command(
        &self,
        machine_id: &str,
        agent_instance: &str,
        now: Micros,
    ) -> StoreResult<Option<Claimed>>;
    /// The commands currently InProgress on a machine, with the agent
    /// process each was handed to.
    async fn running_commands(&self, machine_id: &str) -> StoreResult<Vec<Running>>;
    /// Puts an InProgress command of this machine back to Created, for a
    /// command its agent never received. False if it was not InProgress.
    async fn requeue_command(&self, machine_id: &str, command: &CommandRef) -> StoreResult<bool>;
    /// Records the bytes of a command's result. The command must be InProgress
    /// on this machine.
    async fn record_result(
        &self,
        machine_id: &str,
        command: &CommandRef,
        blob: &ResultBlob,
    ) -> StoreResult<()>;
    /// Records (or replaces) a stored chunk of an InProgress command of this machine.
    async fn put_chunk(
        &self,
        machine_id: &str,
        command: &CommandRef,
        chunk: &ChunkRow,
    ) -> StoreResult<()>;
    /// The chunks recorded for a command, by number.
    async fn list_chunks(&self, command: &CommandRef) -> StoreResult<Vec<ChunkRow>>;
    /// Ends an InProgress command on this machine and moves its action on.
    /// A RunScript or GetFile reported Completed without a recorded result
    /// fails instead. Returns None if the command was not InProgress (a
    /// repeated delivery).
    async fn finish_command(
        &self,
        machine_id: &str,
        command: &CommandRef,
        finish: &Finish,
        now: Micros,
    ) -> StoreResult<Option<ActionRow>>;

    /// Ends actions queued past `queue_deadline` (created before it) with
    /// TimeOut, and fails commands whose lease ran out by `now`.
    async fn sweep(
        &self,
        queue_deadline: Micros,
        lease_grace_secs: u64,
        now: Micros,
    ) -> StoreResult<Swept>;

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

    /// Stored results (and recorded chunks) of commands whose action ended
    /// before `ended_before` and that retention has not deleted; at most `limit`.
    async fn expired_results(
        &self,
        ended_before: Micros,
        limit: u32,
    ) -> StoreResult<Vec<ExpiredResult>>;
    /// Chunks recorded for commands whose action ended without their
    /// result (a cancelled, failed or timed-out GetFile); at most `limit`.
    async fn abandoned_chunks(&self, limit: u32) -> StoreResult<Vec<ExpiredResult>>;
    /// Forgets a command's stored result and chunks (the caller deleted
    /// their objects first); the command keeps its status, errors and the
    /// collected file's hash. False when there was nothing to forget.
    async fn forget_result(&self, command: &CommandRef, now: Micros) -> StoreResult<bool>;
    /// Library entries of every tenant not changed since `before` and used
    /// by no action created since then nor by any unfinished action.
    async fn unused_library_files(&self, before: Micros) -> StoreResult<Vec<LibraryRow>>;
    /// Deletes the audit entries older than `before` and appends `event`
    /// (its details completed with `throughId`, `throughHash` and
    /// `removed`) in one transaction, so the chain records its own pruning.
    /// None when no entry was older.
    async fn prune_audit(
        &self,
        before: Micros,
        event: AuditEvent,
    ) -> StoreResult<Option<AuditEntry>>;

    /// Records a call under `key` (a caller and an API) if every window
    /// allows it, or answers the whole seconds until one would be allowed.
    /// Atomic across nodes: the budget is the cluster's, not a node's.
    async fn rate_limit(
        &self,
        key: &str,
        windows: &[Window],
        now: Micros,
    ) -> StoreResult<Result<(), u64>>;
}
