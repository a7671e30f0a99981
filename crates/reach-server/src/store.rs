//! The `Store`: every piece of durable state (tenants, apps, machines,
//! library entries, actions and their commands, live output, the audit trail) behind
//! domain-shaped methods. The database behind it is the single source of
//! truth; callers keep nothing in memory that a restart would need.
//!
//! `Store` is the sum of one narrow trait per domain, each with its row
//! types in its own file; a consumer takes the narrow trait it needs
//! (`&dyn Identities`, `&dyn AuditLog`). One implementation, `sql::SqlStore`,
//! runs on SQLite (the embedded default) and PostgreSQL (several nodes),
//! chosen by the database URL; the conformance suite (tests/store/) runs the
//! same tests on both. Row types are internal and never serialised; the API
//! converts them to reach-proto types. A store must never touch file bytes
//! (those live in `files`) nor import anything above it but `config`,
//! `odata`, `data_dir` and `time`.

pub mod actions;
pub mod audit;
pub mod batches;
pub mod commands;
pub mod enrollment;
pub mod identities;
pub mod library;
pub mod machines;
pub mod output;
pub mod rate_limits;
pub mod retention;
pub mod sql;

use async_trait::async_trait;

pub use actions::{
    ActionLimits, ActionRow, Actions, CommandRow, InlineResult, NewAction, NewCommand, ResultBlob,
    inline_result_command, inline_result_key,
};
pub use audit::{AuditEntry, AuditEvent, AuditLog};
pub use batches::{
    BatchCounts, BatchRow, BatchStatus, BatchTarget, Batches, NewBatch, Rollout, StoppedAction,
    WaveStep,
};
pub use commands::{ChunkRow, Claimed, Commands, Finish, Finished, Lane, Running, Swept};
pub use enrollment::{Enrollment, EnrollmentTokenRow, MachineCredential};
pub use identities::{App, DeviceGroup, Identities, Tenant, User};
pub use library::{Library, LibraryRow};
pub use machines::{MachineRow, Machines, Scope, resolve_machine};
pub use output::{Appended, BatchChunk, BatchEnd, OutputChunk, OutputProgress, Outputs, PageSize};
pub use rate_limits::RateLimits;
pub use retention::{ExpiredResult, Retention};

/// Why a store call failed; handlers map it to the error envelope.
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
    /// The database failed.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A store call's result.
pub type StoreResult<T> = Result<T, StoreError>;

/// Every domain of durable state, in one database.
#[async_trait]
pub trait Store:
    Identities
    + Enrollment
    + Machines
    + Library
    + Actions
    + Batches
    + Commands
    + Outputs
    + AuditLog
    + Retention
    + RateLimits
    + 'static
{
    /// Answers when the database is reachable.
    async fn ping(&self) -> StoreResult<()>;

    /// On SQLite, what group commit did since the store opened; None on
    /// PostgreSQL, where each write transaction commits on its own.
    fn group_commits(&self) -> Option<GroupCommits>;
}

/// SQLite's group commit so far (`/metrics`): the mean group is
/// `writes / commits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommits {
    /// COMMITs that made callers' changes durable.
    pub commits: u64,
    /// Callers' write transactions those COMMITs held.
    pub writes: u64,
}
