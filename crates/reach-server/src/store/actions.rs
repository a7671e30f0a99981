//! Live response actions as analysts submit, list and cancel them, with
//! their commands and the limits on how many may wait or run.

use async_trait::async_trait;
use reach_proto::agent::{CommandRef, Work};
use reach_proto::api::{ActionStatus, ActionType, Command, CommandStatus};

use super::*;
use crate::odata::Query;
use crate::time::Micros;

/// The limits `create_action` enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionLimits {
    /// Actions running on devices (InProgress) per tenant: Defender's
    /// concurrent live response sessions.
    pub running_per_tenant: u32,
    /// Actions waiting for their devices (Pending) per requestor.
    pub pending_per_requestor: u32,
}

/// A command of a new action, validated, with the library file's hash
/// recorded at submit time for PutFile and RunScript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCommand {
    /// The command as submitted (echoed back to callers).
    pub command: Command,
    /// What the agent is to do, with library files resolved to their hashes.
    pub work: Work,
    /// Seconds the agent lets it run.
    pub timeout_secs: u64,
}

/// An action to create, as the API validated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAction {
    /// Its id (a GUID the API chose).
    pub id: String,
    /// The caller's tenant.
    pub tenant_id: String,
    /// The machine it runs on.
    pub machine_id: String,
    /// Who asked (the app's or user's name), as shown.
    pub requestor: String,
    /// Who queued it, as a stable key (`Principal::rate_key`): what the
    /// per-requestor queue limit counts.
    pub requestor_id: String,
    /// The caller's comment.
    pub requestor_comment: Option<String>,
    /// Live response, or a response action (whose one command does it).
    pub kind: ActionType,
    /// Its commands, in order.
    pub commands: Vec<NewCommand>,
    /// When it was submitted.
    pub now: Micros,
}

/// A live response action as stored, with its commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRow {
    /// Its id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// The machine it runs on.
    pub machine_id: String,
    /// The machine's computer name when the action was created.
    pub computer_dns_name: String,
    /// Who asked.
    pub requestor: String,
    /// The caller's comment.
    pub requestor_comment: Option<String>,
    /// Where it stands.
    pub status: ActionStatus,
    /// When it was submitted.
    pub created: Micros,
    /// When its status last changed.
    pub last_update: Micros,
    /// Who cancelled it.
    pub cancellation_requestor: Option<String>,
    /// Why it was cancelled.
    pub cancellation_comment: Option<String>,
    /// When it was cancelled.
    pub cancellation_time: Option<Micros>,
    /// The batch it is one machine's part of, if any.
    pub batch_id: Option<String>,
    /// Live response, or a response action.
    pub kind: ActionType,
    /// Its commands, by index.
    pub commands: Vec<CommandRow>,
}

/// One command of an action as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRow {
    /// Its position in the action, from 0.
    pub index: u32,
    /// The command as submitted.
    pub command: Command,
    /// What the agent is to do.
    pub work: Work,
    /// Where it stands.
    pub status: CommandStatus,
    /// When it was handed to the agent.
    pub start_time: Option<Micros>,
    /// When it ended.
    pub end_time: Option<Micros>,
    /// Why it failed.
    pub errors: Vec<String>,
    /// Seconds the agent lets it run.
    pub timeout_secs: u64,
    /// Its stored result, once recorded (and until retention forgets it).
    pub result: Option<ResultBlob>,
    /// GetFile: hex SHA-256 of the collected file as it was on the device.
    pub file_sha256: Option<String>,
    /// When retention deleted the stored result.
    pub result_deleted: Option<Micros>,
}

/// A stored command result: where its bytes are and what they hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultBlob {
    /// The object, or with `chunks` the prefix of the chunk objects, or for
    /// a result kept in the database `inline/{action}/{index}`
    /// (`inline_result_key`).
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// Hex SHA-256 of the stored bytes; none for a result served as its
    /// chunks (checked by their decompressed bytes and the whole file's
    /// SHA-256 instead, which the command records).
    pub sha256: Option<String>,
    /// Set when the result is `chunks` objects to serve one after another.
    pub chunks: Option<u32>,
}

/// What names a result kept in the database rather than the object store.
const INLINE_RESULT_PREFIX: &str = "inline/";

impl ResultBlob {
    /// The command whose result this is, when its bytes are kept in the
    /// database (`Commands::inline_result`) rather than as an object.
    pub fn inline_command(&self) -> Option<CommandRef> {
        inline_result_command(&self.key)
    }
}

/// The `ResultBlob::key` of a command's result kept in the database.
pub fn inline_result_key(command: &CommandRef) -> String {
    format!(
        "{INLINE_RESULT_PREFIX}{}/{}",
        command.action_id, command.index
    )
}

/// The command an `inline_result_key` names (None for any other key).
pub fn inline_result_command(key: &str) -> Option<CommandRef> {
    let (action_id, index) = key.strip_prefix(INLINE_RESULT_PREFIX)?.split_once('/')?;
    let valid_id = !action_id.is_empty()
        && action_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    // Digits only: `u32::from_str` would also take a leading '+'.
    if !valid_id || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(CommandRef {
        action_id: action_id.to_string(),
        index: index.parse().ok()?,
    })
}

/// A transcript that came inside the agent's `Finished` message, to keep
/// in the database with the command's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineResult {
    /// The transcript as the agent sent it.
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// Live response actions as analysts submit, list and cancel them.
#[async_trait]
pub trait Actions: Send + Sync {
    /// Live response actions of all tenants by status (every status listed).
    async fn count_actions_by_status(&self) -> StoreResult<Vec<(ActionStatus, u64)>>;
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
    /// An action of the tenant by id (NotFound for another tenant's).
    async fn get_action(&self, tenant_id: &str, id: &str) -> StoreResult<ActionRow>;
    /// One command of an action of `machine_id` (NotFound for any other
    /// machine's): what the agent's transfer endpoints check, in one read.
    async fn machine_command(
        &self,
        machine_id: &str,
        command: &CommandRef,
    ) -> StoreResult<CommandRow>;
    /// A page of the tenant's actions matching `query`, with `$count` the number that match.
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
}
