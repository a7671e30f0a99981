//! Live output (Reach's extension): what `GET
//! /api/machineactions/{id}/commands/{index}/output` answers, as JSON and
//! as the data of its Server-Sent Events (`stdout`, `stderr`, `end`), and
//! the batch's stream, whose events also name the machine.

use serde::{Deserialize, Serialize};

/// The JSON form: a command's output so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandOutput {
    /// Standard output so far.
    pub stdout: String,
    /// Standard error so far.
    pub stderr: String,
    /// The command ended: this is all of it.
    pub complete: bool,
    /// The script's exit code, once it ended with a transcript.
    pub exit_code: Option<i32>,
}

/// The machine an event of a batch's stream comes from (absent on a
/// command's own stream).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputMachine {
    /// The machine's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// Its name when the action was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer_dns_name: Option<String>,
    /// The machine's action in the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
}

/// The data of a `stdout` or `stderr` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputPiece {
    /// The text, newlines included.
    pub text: String,
    /// Where it starts in its stream (bytes of the stream's UTF-8 text).
    pub offset: u64,
    /// The machine (batch streams).
    #[serde(flatten)]
    pub machine: OutputMachine,
}

/// The data of an `end` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputEnd {
    /// How the command ended (`Completed`, `Failed`; `Created` for one its
    /// action's end kept from running).
    pub command_status: String,
    /// The script's exit code, when its transcript says it.
    pub exit_code: Option<i32>,
    /// The machine (batch streams).
    #[serde(flatten)]
    pub machine: OutputMachine,
}
