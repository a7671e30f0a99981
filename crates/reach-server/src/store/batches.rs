//! Batches: one call's commands for every machine it targeted, each
//! machine's part an ordinary action naming its batch. The store keeps the
//! batch and its actions together and counts the actions by status when a
//! batch is read, so counts are exact whatever ran where. It never decides
//! who may target which machine: the API resolves targets first.

use async_trait::async_trait;
use reach_proto::api::{ActionStatus, Command};

use super::*;
use crate::odata::Query;
use crate::time::Micros;

/// How a batch reaches its machines: all at once, or in waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// Machines per wave.
    pub wave_size: u64,
    /// Failed and timed-out actions, as a share of those finished, past
    /// which the batch pauses.
    pub max_failed_percent: u8,
}

/// A machine a batch targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTarget {
    /// Its id.
    pub machine_id: String,
    /// Its computer name now (kept on its action).
    pub computer_dns_name: String,
}

/// A batch to create, as the API validated it, with its targets resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatch {
    /// Its id (a GUID the API chose).
    pub id: String,
    /// The caller's tenant.
    pub tenant_id: String,
    /// Who asked, as shown.
    pub requestor: String,
    /// Who asked, as a stable key (`Principal::rate_key`).
    pub requestor_id: String,
    /// The caller's comment.
    pub requestor_comment: Option<String>,
    /// The commands every machine runs.
    pub commands: Vec<NewCommand>,
    /// The machines, in the order their waves take them.
    pub targets: Vec<BatchTarget>,
    /// Waves, if any.
    pub rollout: Option<Rollout>,
    /// When its actions still waiting time out.
    pub expires: Micros,
    /// When it was submitted.
    pub now: Micros,
}

/// Where a batch stands, as set (Completed is read from its actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    /// Dispatching (or done dispatching and not yet all final).
    Running,
    /// Dispatching nothing new; what runs finishes.
    Paused,
    /// Every action is final.
    Completed,
    /// Cancelled: every action not final then was cancelled.
    Cancelled,
}

impl BatchStatus {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Running => "Running",
            BatchStatus::Paused => "Paused",
            BatchStatus::Completed => "Completed",
            BatchStatus::Cancelled => "Cancelled",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "Running" => BatchStatus::Running,
            "Paused" => BatchStatus::Paused,
            "Completed" => BatchStatus::Completed,
            "Cancelled" => BatchStatus::Cancelled,
            _ => return None,
        })
    }
}

/// How many of a batch's actions stand where.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Waiting for their machines (or their wave).
    pub pending: u64,
    /// Running on their machines.
    pub in_progress: u64,
    /// Done, every command completed.
    pub succeeded: u64,
    /// A command failed.
    pub failed: u64,
    /// Timed out, running or waiting.
    pub timed_out: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl BatchCounts {
    /// Adds `n` actions of `status`.
    pub fn add(&mut self, status: ActionStatus, n: u64) {
        let slot = match status {
            ActionStatus::Pending => &mut self.pending,
            ActionStatus::InProgress => &mut self.in_progress,
            ActionStatus::Succeeded => &mut self.succeeded,
            ActionStatus::Failed => &mut self.failed,
            ActionStatus::TimeOut => &mut self.timed_out,
            ActionStatus::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }

    /// Actions not final yet.
    pub fn active(&self) -> u64 {
        self.pending + self.in_progress
    }

    /// Every action.
    pub fn total(&self) -> u64 {
        self.active() + self.succeeded + self.failed + self.timed_out + self.cancelled
    }
}

/// A batch as stored, with its counts as of the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRow {
    /// Its id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// Who asked.
    pub requestor: String,
    /// Who asked, as a stable key (`Principal::rate_key`).
    pub requestor_id: String,
    /// The caller's comment.
    pub requestor_comment: Option<String>,
    /// Where it stands (Completed once every action is final).
    pub status: BatchStatus,
    /// Why it paused by itself (a wave failed too much).
    pub paused_reason: Option<String>,
    /// The commands as submitted.
    pub commands: Vec<Command>,
    /// Machines targeted.
    pub machine_count: u64,
    /// Its actions by status; they sum to `machine_count`.
    pub counts: BatchCounts,
    /// Waves, if any.
    pub rollout: Option<Rollout>,
    /// The wave being dispatched (1 without waves).
    pub current_wave: u64,
    /// When it was submitted.
    pub created: Micros,
    /// When it or one of its actions last changed.
    pub last_update: Micros,
    /// When its actions still waiting time out.
    pub expires: Micros,
    /// Who cancelled it.
    pub cancellation_requestor: Option<String>,
    /// Why it was cancelled.
    pub cancellation_comment: Option<String>,
}

/// A running command stopped by a batch's cancellation: its machine is
/// told to kill it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedAction {
    /// The machine it ran on.
    pub machine_id: String,
    /// The action.
    pub action_id: String,
}

/// What the sweeper's pass over batches in waves did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaveStep {
    /// The batch moved on to `wave`; its machines are to be woken.
    Started {
        /// The batch.
        batch_id: String,
        /// The wave now dispatched.
        wave: u64,
        /// Its machines whose actions wait.
        machines: Vec<String>,
    },
    /// Too many failed: the batch paused, saying why.
    Paused {
        /// The batch.
        batch_id: String,
        /// Its tenant.
        tenant_id: String,
        /// Why (also the batch's `pausedReason`).
        reason: String,
    },
}

/// Batches as analysts create and read them.
#[async_trait]
pub trait Batches: Send + Sync {
    /// Creates the batch and one Pending action per target, atomically.
    /// The tenant's running and queue limits do not apply to them; a
    /// machine busy with another action keeps its batch action queued.
    async fn create_batch(&self, batch: &NewBatch) -> StoreResult<BatchRow>;
    /// A batch of the tenant by id, with its counts (NotFound for another
    /// tenant's).
    async fn get_batch(&self, tenant_id: &str, id: &str) -> StoreResult<BatchRow>;
    /// A page of the tenant's batches matching `query` (newest first by
    /// default), with `$count` the number that match.
    async fn list_batches(
        &self,
        tenant_id: &str,
        query: &Query,
    ) -> StoreResult<(Vec<BatchRow>, Option<u64>)>;
    /// A page of a batch's actions, with their commands, after position
    /// `after` (0 for the first page), at most `limit`, in the order they
    /// were created: keyset pages for streaming a batch's results in
    /// constant memory. `query`'s filter narrows them (device groups).
    /// Each comes with its position, for the next page.
    async fn batch_actions_after(
        &self,
        tenant_id: &str,
        batch_id: &str,
        query: &Query,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, ActionRow)>>;
    /// Cancels a batch: every action of it not final is Cancelled, its
    /// running command Failed ("Cancelled by ..."). Returns the batch and
    /// the actions whose command was running. Conflict when the batch is
    /// already Completed or Cancelled.
    async fn cancel_batch(
        &self,
        tenant_id: &str,
        id: &str,
        requestor: &str,
        comment: Option<&str>,
        now: Micros,
    ) -> StoreResult<(BatchRow, Vec<StoppedAction>)>;
    /// Pauses a Running batch (a Paused one stays so): nothing new is
    /// dispatched; what runs finishes. Conflict when Completed or Cancelled.
    async fn pause_batch(&self, tenant_id: &str, id: &str, now: Micros) -> StoreResult<BatchRow>;
    /// Resumes a Paused batch (a Running one stays so); when its current
    /// wave is over, the next starts. Returns the batch and the machines
    /// whose actions may now run. Conflict when Completed or Cancelled.
    async fn resume_batch(
        &self,
        tenant_id: &str,
        id: &str,
        now: Micros,
    ) -> StoreResult<(BatchRow, Vec<String>)>;
    /// Moves every Running batch in waves whose current wave is over to its
    /// next wave, or pauses it when more of its finished actions failed
    /// than it allows. On several nodes one sweeps at a time.
    async fn advance_waves(&self, now: Micros) -> StoreResult<Vec<WaveStep>>;
}
