//! REST DTOs of the Defender-compatible API under `/api/...` and the token
//! endpoint. Field names follow `shared/spec/mde-compat.md` exactly: request
//! bodies are PascalCase where Defender's are, responses camelCase.

pub mod roles;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Status of a machine action (spec section 2). Terminal: Succeeded, Failed, TimeOut, Cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    TimeOut,
    Cancelled,
}

impl ActionStatus {
    pub const ALL: [ActionStatus; 6] = [
        Self::Pending,
        Self::InProgress,
        Self::Succeeded,
        Self::Failed,
        Self::TimeOut,
        Self::Cancelled,
    ];

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
    Created,
    InProgress,
    Completed,
    Failed,
}

impl CommandStatus {
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
    PutFile,
    RunScript,
    GetFile,
}

impl CommandType {
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

/// One `{"key": ..., "value": ...}` pair of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandParam {
    pub key: String,
    pub value: String,
}

/// A command as submitted and as echoed back: `{"type", "params"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub params: Vec<CommandParam>,
}

impl Command {
    pub fn new(kind: CommandType, params: &[(&str, &str)]) -> Self {
        Self {
            kind: kind.as_str().to_string(),
            params: params
                .iter()
                .map(|(k, v)| CommandParam {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        }
    }

    /// The value of a parameter, by its exact (case-sensitive) key.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }
}

/// Body of `POST /api/machines/{id}/runliveresponse`. Fields are optional here so
/// that the server can name what is missing instead of failing to parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunLiveResponseRequest {
    #[serde(rename = "Commands", default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<Command>>,
    #[serde(rename = "Comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Body of `POST /api/machineactions/{id}/cancel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    #[serde(rename = "Comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Body of `POST /api/machines/{id}/tags` (`Value`, `Action`: `Add` or
/// `Remove`) and of `POST /api/machines/AddOrRemoveTagForMultipleMachines`
/// (with `MachineIds`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MachineTagRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_ids: Option<Vec<String>>,
}

/// One command of a live response action, with its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandEntry {
    pub index: u32,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub command_status: CommandStatus,
    pub errors: Vec<String>,
    pub command: Command,
}

/// The MachineAction entity (spec section 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineAction {
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: Option<String>,
    pub requestor: String,
    pub requestor_comment: Option<String>,
    pub status: ActionStatus,
    pub machine_id: String,
    pub computer_dns_name: Option<String>,
    pub creation_date_time_utc: String,
    pub last_update_date_time_utc: String,
    pub cancellation_requestor: Option<String>,
    pub cancellation_comment: Option<String>,
    pub cancellation_date_time_utc: Option<String>,
    pub error_h_result: i64,
    pub scope: Option<String>,
    pub external_id: Option<String>,
    pub request_source: String,
    pub related_file_info: Option<serde_json::Value>,
    pub commands: Vec<CommandEntry>,
    pub troubleshoot_info: Option<String>,
}

/// A live response library file (spec section 1.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LibraryFile {
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    pub file_name: String,
    pub sha256: String,
    pub description: Option<String>,
    pub creation_time: String,
    pub last_updated_time: String,
    pub created_by: String,
    pub last_updated_by: Option<String>,
    pub has_parameters: bool,
    pub parameters_description: Option<String>,
    /// Size in bytes (a Reach addition; Defender clients ignore it).
    #[serde(default)]
    pub size: u64,
    /// Ed25519 signature (base64) uploaded with the file (a Reach addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The Machine entity (spec section 1.9): every field of Defender's, those
/// Reach cannot know `null` (`unknown`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    pub id: String,
    pub computer_dns_name: String,
    pub first_seen: String,
    pub last_seen: String,
    pub os_platform: String,
    pub os_version: String,
    pub os_architecture: String,
    pub version: String,
    pub last_ip_address: Option<String>,
    /// The device's own addresses, as its agent last reported them.
    #[serde(default)]
    pub ip_addresses: Vec<MachineIpAddress>,
    pub health_status: String,
    pub onboarding_status: String,
    pub machine_tags: Vec<String>,
    /// A Reach addition: another machine the caller can see reports the
    /// same name (a re-imaged device's stale record, or an impostor).
    /// Naming such a machine answers 409; use its id.
    #[serde(default)]
    pub duplicate_name: bool,
    /// Defender's fields that Reach does not know, always present (as
    /// `null`) so that clients indexing them directly find them.
    #[serde(flatten)]
    pub unknown: MachineUnknowns,
}

/// The fields of Defender's Machine entity that Reach cannot know. Each is
/// serialised, `null`, so a client that reads `machine["riskScore"]` gets
/// a value rather than a missing key; a client reading another server's
/// answer gets whatever it holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineUnknowns {
    #[serde(default)]
    pub os_processor: Option<String>,
    #[serde(default)]
    pub os_build: Option<i64>,
    #[serde(default)]
    pub last_external_ip_address: Option<String>,
    #[serde(default)]
    pub rbac_group_id: Option<i64>,
    #[serde(default)]
    pub rbac_group_name: Option<String>,
    #[serde(default)]
    pub risk_score: Option<String>,
    #[serde(default)]
    pub exposure_level: Option<String>,
    #[serde(default)]
    pub device_value: Option<String>,
    #[serde(default)]
    pub aad_device_id: Option<String>,
    #[serde(default)]
    pub is_aad_joined: Option<bool>,
    #[serde(default)]
    pub managed_by: Option<String>,
    #[serde(default)]
    pub managed_by_status: Option<String>,
    #[serde(default)]
    pub defender_av_status: Option<String>,
    #[serde(default)]
    pub vm_metadata: Option<serde_json::Value>,
}

/// One entry of a machine's `ipAddresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineIpAddress {
    pub ip_address: String,
    pub mac_address: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub operational_status: String,
}

/// One entry of Reach's audit trail (`GET /api/auditlog`, and each line of
/// `reach-server audit export`). A Reach addition; Defender has no such API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditLogEntry {
    /// Position in the chain (1, 2, ...), across all tenants.
    pub id: i64,
    pub timestamp: String,
    pub tenant_id: String,
    /// `app`, `user`, `machine`, `operator`, `link`, `anonymous` or `system`.
    pub actor_type: String,
    pub actor_id: String,
    pub actor_name: String,
    pub source_ip: Option<String>,
    pub operation: String,
    pub machine_id: Option<String>,
    pub target: Option<String>,
    /// `Succeeded`, `Failed` or `Denied`.
    pub outcome: String,
    pub http_status: Option<u16>,
    pub details: serde_json::Value,
    /// Hex SHA-256 of the entry before this one (64 zeros for the first).
    pub previous_hash: String,
    /// Hex SHA-256 of this entry and `previous_hash`.
    pub hash: String,
}

/// An OData collection: `{"@odata.context", "@odata.count"?, "value": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection<T> {
    #[serde(rename = "@odata.context")]
    pub odata_context: String,
    #[serde(
        rename = "@odata.count",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub count: Option<u64>,
    pub value: Vec<T>,
    /// The rest of the collection, when this page could not hold it.
    #[serde(
        rename = "@odata.nextLink",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub next_link: Option<String>,
}

/// A scalar OData result such as a download link (`$metadata#Edm.String`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StringValue {
    #[serde(rename = "@odata.context")]
    pub odata_context: String,
    pub value: String,
}

/// Every error response: `{"error": {"code", "message", "target"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    /// Per-request correlation id (a GUID).
    pub target: String,
}

/// Reply of the OAuth2 token endpoints. `expires_in` is a JSON number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token_type: String,
    pub expires_in: u64,
    #[serde(default)]
    pub ext_expires_in: u64,
    pub access_token: String,
}

/// The downloadable result of a PutFile command (a Reach addition; Defender
/// has no result for PutFile): what was put, and where it is on the device
/// (`null` when the agent did not say, as agents before this record did not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutFileRecord {
    pub file_name: String,
    pub sha256: String,
    pub path: Option<String>,
}

/// The downloadable result of a RunScript command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptTranscript {
    pub script_name: String,
    pub exit_code: i32,
    pub script_output: String,
    pub script_errors: String,
}

/// Roles (application permissions) that Reach checks, spelled as Defender does.
/// Longest library file name accepted.
pub const MAX_LIBRARY_NAME: usize = 255;

/// Whether `name` is safe as a library file name on every platform an agent
/// runs on: 1 to 255 ASCII letters, digits, `-`, `_` and `.`; no `..`; not
/// `.`; no trailing `.` (Windows drops it); and not a Windows device name
/// (`CON`, `PRN`, `AUX`, `NUL`, `COM0`-`COM9`, `LPT0`-`LPT9`, with any
/// extension and in any case), which would open the device instead of a file.
pub fn is_safe_library_name(name: &str) -> bool {
    let shaped = !name.is_empty()
        && name.len() <= MAX_LIBRARY_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.contains("..")
        && !name.ends_with('.');
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let device = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    shaped && !device
}
