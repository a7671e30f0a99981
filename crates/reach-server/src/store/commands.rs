//! Commands as agents work through them: claimed, run, their results and
//! GetFile chunks recorded, finished; and the sweep that ends what waited
//! or ran too long.

use async_trait::async_trait;
use reach_proto::agent::{CommandRef, Work};

use super::*;
use crate::time::Micros;

/// What finishing a command changed: its action's status afterwards and
/// the command as recorded (with the result the store kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The action's status after this command ended.
    pub action_status: reach_proto::api::ActionStatus,
    /// The command, as recorded.
    pub command: CommandRow,
    /// Whether the machine has another active action (a batch's queued
    /// behind this one), as read in the same transaction.
    pub others_active: bool,
}

/// One stored chunk of a result, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRow {
    /// The chunk's number, from 0.
    pub n: u32,
    /// Bytes of the file it holds.
    pub raw_size: u64,
    /// CRC-32 of those bytes, as the server computed them.
    pub raw_crc32: Option<u32>,
    /// Empty when the agent did not send it.
    pub raw_sha256: String,
    /// Bytes of the stored segment.
    pub stored_size: u64,
    /// Hex SHA-256 of the stored segment.
    pub stored_sha256: String,
    /// Completed uploads of this chunk (more than 1: it was sent again).
    pub attempts: u32,
}

/// The two sides of a machine's work, each handed to its agent one
/// command at a time: live response (which may run for long), and response
/// actions (isolate, release: seconds each), so that an isolation never
/// waits behind a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Live response actions.
    Live,
    /// Response actions (`Work::is_response`).
    Response,
}

impl Lane {
    /// Both lanes.
    pub const ALL: [Lane; 2] = [Lane::Live, Lane::Response];

    /// The lane of actions of type `kind`.
    pub fn of(kind: reach_proto::api::ActionType) -> Lane {
        use reach_proto::api::ActionType;
        match kind {
            // A collection runs for minutes: beside a script, not in the
            // way of an isolation.
            ActionType::LiveResponse | ActionType::CollectInvestigationPackage => Lane::Live,
            ActionType::Isolate
            | ActionType::Unisolate
            | ActionType::Offboard
            | ActionType::StopAndQuarantineFile => Lane::Response,
        }
    }

    /// The SQL list of the action types (`actions.kind`) in this lane:
    /// constants, never client text.
    pub fn kinds_sql(self) -> String {
        let kinds: Vec<String> = reach_proto::api::ActionType::ALL
            .into_iter()
            .filter(|kind| Lane::of(*kind) == self)
            .map(|kind| format!("'{}'", kind.as_str()))
            .collect();
        format!("({})", kinds.join(", "))
    }
}

/// A command handed to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Which command.
    pub command: CommandRef,
    /// What to do.
    pub work: Work,
    /// Seconds the agent lets it run.
    pub timeout_secs: u64,
    /// When its action was submitted.
    pub action_created: Micros,
}

/// A command InProgress on a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Which command.
    pub command: CommandRef,
    /// The agent process it was handed to (empty: unknown).
    pub agent_instance: String,
    /// The side of the machine's work it runs on.
    pub lane: Lane,
}

/// How a command ended, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// It ran.
    Completed {
        /// GetFile: hex SHA-256 of the file as it was on the device.
        file_sha256: Option<String>,
    },
    /// It did not run or did not end well.
    Failed {
        /// Why, for the analyst.
        errors: Vec<String>,
        /// It ran past its timeout.
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

/// Commands as agents work through them.
#[async_trait]
pub trait Commands: Send + Sync {
    /// Claims the next command of `lane` for a machine: the first Created
    /// command of its active actions of that lane, if no command of the
    /// lane is InProgress on the machine. Marks the command and action
    /// InProgress and records the agent process (`agent_instance`) it is
    /// handed to.
    async fn claim_next_command(
        &self,
        machine_id: &str,
        agent_instance: &str,
        now: Micros,
        lane: Lane,
    ) -> StoreResult<Option<Claimed>>;
    /// Whether the machine has an action still Pending or InProgress: a
    /// read, so that a connection with nothing to run does not take the
    /// writer's turn to find that out (`claim_next_command`).
    async fn has_active_action(&self, machine_id: &str) -> StoreResult<bool>;
    /// Whether the machine has an action of `lane` Pending or InProgress:
    /// the read before a claim of a lane that is rarely used, so that a
    /// wake-up for live response does not also take the writer's turn for
    /// it.
    async fn has_active_in(&self, machine_id: &str, lane: Lane) -> StoreResult<bool>;
    /// The commands currently InProgress on a machine, with the agent
    /// process each was handed to.
    async fn running_commands(&self, machine_id: &str) -> StoreResult<Vec<Running>>;
    /// Offboards a machine whose agent is not connected: its Offboard
    /// action `action_id`, while still Pending, ends Succeeded (its one
    /// command Completed) and the machine is revoked and marked offboarded,
    /// in one transaction. False (nothing changed) once an agent claimed it.
    async fn offboard_unclaimed(
        &self,
        machine_id: &str,
        action_id: &str,
        now: Micros,
    ) -> StoreResult<bool>;
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
    /// `result`, a RunScript's transcript that came with the outcome, is
    /// kept in the database in the same transaction, its `ResultBlob` keyed
    /// by `inline_result_key` (unless one was uploaded already; any other
    /// command ignores it: the returned command's result says which was
    /// kept). A RunScript or GetFile reported Completed without a
    /// recorded result fails instead. Returns None if the command was not
    /// InProgress (a repeated delivery).
    async fn finish_command(
        &self,
        machine_id: &str,
        command: &CommandRef,
        finish: &Finish,
        result: Option<&InlineResult>,
        now: Micros,
    ) -> StoreResult<Option<Finished>>;
    /// The bytes of a result kept in the database (`finish_command`), of an
    /// action of this tenant; NotFound for any other, or once retention
    /// forgot it.
    async fn inline_result(&self, tenant_id: &str, command: &CommandRef) -> StoreResult<Vec<u8>>;
    /// `inline_result` of many commands in one read (a page of a batch's
    /// results): those kept, by command; the others are absent.
    async fn inline_results(
        &self,
        tenant_id: &str,
        commands: &[CommandRef],
    ) -> StoreResult<std::collections::HashMap<CommandRef, Vec<u8>>>;
    /// Whether this node takes `job`'s turn now: true for one caller of the
    /// cluster per `every_secs` (always true on SQLite, one node alone).
    async fn take_sweeper_turn(&self, job: &str, every_secs: u64, now: Micros)
    -> StoreResult<bool>;
    /// Ends actions queued past `queue_deadline` (created before it) with
    /// TimeOut, and fails commands whose lease ran out by `now`.
    async fn sweep(
        &self,
        queue_deadline: Micros,
        lease_grace_secs: u64,
        now: Micros,
    ) -> StoreResult<Swept>;
}
