//! The statuses of actions and commands and the command types, with the
//! exact names Defender uses on the wire (parsed without case).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Status of a machine action (spec section 2). Terminal: Succeeded, Failed, TimeOut, Cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionStatus {
    /// Waiting for its device (queued, or the device is offline).
    Pending,
    /// Handed to the device; a command is running.
    InProgress,
    /// Every command completed.
    Succeeded,
    /// A command failed (or the action was stopped by a failure).
    Failed,
    /// Waited past the queue TTL, or ran past its lease, without ending.
    TimeOut,
    /// Cancelled by a caller (or an operator).
    Cancelled,
}

impl ActionStatus {
    /// Every status, in the order listings present them.
    pub const ALL: [ActionStatus; 6] = [
        Self::Pending,
        Self::InProgress,
        Self::Succeeded,
        Self::Failed,
        Self::TimeOut,
        Self::Cancelled,
    ];

    /// The name Defender uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::TimeOut => "TimeOut",
            Self::Cancelled => "Cancelled",
        }
    }

    /// True once the action can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::InProgress)
    }
}

/// Status of one command inside a live response action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CommandStatus {
    /// Not handed to the device yet.
    Created,
    /// Running on the device.
    InProgress,
    /// Ended well; its result (if any) is stored.
    Completed,
    /// Ended badly; `errors` says why.
    Failed,
}

impl CommandStatus {
    /// The name Defender uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::InProgress => "InProgress",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
        }
    }
}

/// Error returned when a status string is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStatus(pub String);

impl fmt::Display for UnknownStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown status '{}'", self.0)
    }
}

impl std::error::Error for UnknownStatus {}

impl FromStr for ActionStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

impl FromStr for CommandStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Created,
            Self::InProgress,
            Self::Completed,
            Self::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three live response command types, in the order the API requires them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CommandType {
    /// Copies a library file to the device.
    PutFile,
    /// Runs a library script on the device and records its transcript.
    RunScript,
    /// Collects a file from the device, gzip-compressed.
    GetFile,
}

impl CommandType {
    /// The name Defender uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PutFile => "PutFile",
            Self::RunScript => "RunScript",
            Self::GetFile => "GetFile",
        }
    }

    /// Parses the exact (case-sensitive) Defender spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PutFile" => Some(Self::PutFile),
            "RunScript" => Some(Self::RunScript),
            "GetFile" => Some(Self::GetFile),
            _ => None,
        }
    }
}

/// A machine action's `type`: live response, or one of Defender's response
/// actions that Reach agents carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionType {
    /// `runliveresponse`: PutFile, RunScript and GetFile commands.
    LiveResponse,
    /// `isolate`: the device is cut off the network but its servers.
    Isolate,
    /// `unisolate`: isolation removed.
    Unisolate,
    /// `offboard`: the machine revoked, its agent's credential deleted.
    Offboard,
    /// `StopAndQuarantineFile`: processes of an executable stopped, the
    /// executable quarantined.
    StopAndQuarantineFile,
    /// `collectInvestigationPackage`: a zip of forensic data.
    CollectInvestigationPackage,
}

impl ActionType {
    /// Every type, in the order listings present them.
    pub const ALL: [ActionType; 6] = [
        Self::LiveResponse,
        Self::Isolate,
        Self::Unisolate,
        Self::Offboard,
        Self::StopAndQuarantineFile,
        Self::CollectInvestigationPackage,
    ];

    /// The name Defender uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LiveResponse => "LiveResponse",
            Self::Isolate => "Isolate",
            Self::Unisolate => "Unisolate",
            Self::Offboard => "Offboard",
            Self::StopAndQuarantineFile => "StopAndQuarantineFile",
            Self::CollectInvestigationPackage => "CollectInvestigationPackage",
        }
    }

    /// Parses the exact (case-sensitive) Defender spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
