//! Live output: the pieces of a running script's stdout and stderr that its
//! agent sends while it runs, numbered in their scope (the batch's, or the
//! action's alone) so that a reader resumes after a number, kept until
//! `live_output_keep_secs` after the command ended. The stored pieces of a
//! stream are always its start: a piece is taken only where the stream
//! ends. The transcript stays the record; this store never reads it.

use async_trait::async_trait;
use reach_proto::agent::{CommandRef, Stream};

use super::*;
use crate::time::Micros;

/// One stored piece of a command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// Its number in its scope: increasing, not contiguous per command.
    pub seq: u64,
    /// stdout or stderr.
    pub stream: Stream,
    /// Where the text starts in its stream (bytes).
    pub offset: u64,
    /// The text.
    pub text: String,
}

/// A piece of a batch's output, with the machine it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchChunk {
    /// The piece.
    pub chunk: OutputChunk,
    /// The action it belongs to.
    pub action_id: String,
    /// Its machine.
    pub machine_id: String,
    /// The machine's name when the action was created.
    pub computer_dns_name: String,
}

/// How much one read takes at most: `pieces`, and pieces starting within
/// `chars` characters of the page's start (so at least one), so that a
/// reader holds a bounded page whatever the pieces' sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize {
    /// Most pieces.
    pub pieces: u32,
    /// Characters after which no further piece starts.
    pub chars: u64,
}

impl PageSize {
    /// Whether a page read with this size may have left pieces behind.
    pub fn may_have_more(self, pieces: usize, chars: u64) -> bool {
        pieces >= self.pieces as usize || chars >= self.chars
    }
}

/// What became of a piece the agent sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored under this number, in the scope of this batch (or the action alone).
    Stored {
        /// The piece's number.
        seq: u64,
        /// The batch of the command's action, if any.
        batch_id: Option<String>,
    },
    /// The command is not running on this machine (it ended, or never was).
    NotRunning,
    /// The piece does not start where the stored stream ends (a piece lost
    /// or sent twice): the transcript will carry the rest.
    Gap,
    /// The stream would pass the most kept; the transcript carries the rest.
    Full,
}

/// Where a command's live output stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputProgress {
    /// The command (its status, and once ended its result).
    pub command: CommandRow,
    /// Bytes of stdout stored as pieces (0 again once they are forgotten).
    pub stdout_live: u64,
    /// Bytes of stderr stored as pieces.
    pub stderr_live: u64,
    /// The number of the command's last piece (0: none ever).
    pub last_seq: u64,
    /// The action ended (a command never started then never will).
    pub action_ended: bool,
}

impl OutputProgress {
    /// The command ended, or never will run: its output is all there is.
    pub fn ended(&self) -> bool {
        use reach_proto::api::CommandStatus;
        matches!(
            self.command.status,
            CommandStatus::Completed | CommandStatus::Failed
        ) || self.action_ended
    }
}

/// A batch's command that ended, for its batch's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEnd {
    /// The action.
    pub action_id: String,
    /// Its machine.
    pub machine_id: String,
    /// The machine's name when the action was created.
    pub computer_dns_name: String,
    /// When the command ended (with `action_id`, the order of ends).
    pub ended: Micros,
    /// The command's output as it ended.
    pub progress: OutputProgress,
}

/// Live output, stored and read.
#[async_trait]
pub trait Outputs: Send + Sync {
    /// Stores `text` of `stream` starting at `offset`, when `command` runs
    /// on `machine_id`, starts where that stream's stored text ends, and
    /// keeps the stream within `max` bytes.
    async fn append_output(
        &self,
        machine_id: &str,
        command: &CommandRef,
        stream: Stream,
        offset: u64,
        text: &str,
        max: u64,
    ) -> StoreResult<Appended>;
    /// The command and how much of its output is stored (NotFound for a
    /// command that does not exist; callers check the action is visible).
    async fn output_progress(&self, command: &CommandRef) -> StoreResult<OutputProgress>;
    /// The command's pieces numbered after `after`, in order, one page.
    async fn output_after(
        &self,
        command: &CommandRef,
        after: u64,
        page: PageSize,
    ) -> StoreResult<Vec<OutputChunk>>;
    /// The pieces of command `index` of the batch's actions numbered after
    /// `after`, in order, one page.
    async fn batch_output_after(
        &self,
        batch_id: &str,
        index: u32,
        after: u64,
        page: PageSize,
    ) -> StoreResult<Vec<BatchChunk>>;
    /// Command `index` of the batch's actions that ended after `after`
    /// (end time, then action id), in that order, at most `limit`.
    async fn batch_output_ends(
        &self,
        batch_id: &str,
        index: u32,
        after: (Micros, &str),
        limit: u32,
    ) -> StoreResult<Vec<BatchEnd>>;
    /// Forgets the pieces of at most `limit` commands that ended before
    /// `ended_before`; the number of commands whose pieces went.
    async fn forget_output(&self, ended_before: Micros, limit: u32) -> StoreResult<u64>;
}
