//! The request bodies of Defender's response actions (isolate, unisolate)
//! and the machine's isolation state Reach adds to the Machine entity.

use serde::{Deserialize, Serialize};

/// `POST /api/machines/{id}/isolate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolateRequest {
    /// Why (required, as Defender requires it).
    #[serde(rename = "Comment", default)]
    pub comment: Option<String>,
    /// `Full` (the default) or `Selective`.
    #[serde(rename = "IsolationType", default)]
    pub isolation_type: Option<String>,
}

/// The body of the response actions that take only a comment
/// (`unisolate`, `offboard`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseActionRequest {
    /// Why (required, as Defender requires it).
    #[serde(rename = "Comment", default)]
    pub comment: Option<String>,
}

/// `POST /api/machines/{id}/StopAndQuarantineFile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopAndQuarantineRequest {
    /// Why (required, as Defender requires it).
    #[serde(rename = "Comment", default)]
    pub comment: Option<String>,
    /// Hex SHA-1 of the executable.
    #[serde(rename = "Sha1", default)]
    pub sha1: Option<String>,
}

/// A machine's `isolationState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IsolationState {
    /// Its network is open.
    NotIsolated,
    /// Cut off but for its servers.
    Isolated,
    /// An isolate or release waits for the device or runs.
    Pending,
}

impl IsolationState {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotIsolated => "NotIsolated",
            Self::Isolated => "Isolated",
            Self::Pending => "Pending",
        }
    }
}
