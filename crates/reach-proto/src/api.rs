//! REST DTOs of the Defender-compatible API under `/api/...` and the token
//! endpoint. Field names follow `shared/spec/mde-compat.md` exactly: request
//! bodies are PascalCase where Defender's are, responses camelCase.

mod batch;
mod machine;
mod output;
mod response;
pub mod roles;
mod status;

use serde::{Deserialize, Serialize};

pub use batch::{Batch, BatchCounts, BatchRollout, BatchTargets, CreateBatchRequest};
pub use machine::{Machine, MachineIpAddress, MachineTagRequest, MachineUnknowns};
pub use output::{CommandOutput, OutputEnd, OutputMachine, OutputPiece};
pub use response::{
    IsolateRequest, IsolationState, ResponseActionRequest, StopAndQuarantineRequest,
};
pub use status::{ActionStatus, ActionType, CommandStatus, CommandType, UnknownStatus};

/// One `{"key": ..., "value": ...}` pair of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandParam {
    /// The parameter's name: `FileName`, `ScriptName`, `Args` or `Path`.
    pub key: String,
    /// The parameter's value, as the caller wrote it.
    pub value: String,
}

/// A command as submitted and as echoed back: `{"type", "params"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// `PutFile`, `RunScript` or `GetFile` (any case on input).
    #[serde(rename = "type")]
    pub kind: String,
    /// The command's parameters, in the caller's order.
    #[serde(default)]
    pub params: Vec<CommandParam>,
}

impl Command {
    /// A command of `kind` with `params` as (key, value) pairs.
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
    /// The commands to run, in order (PutFile before RunScript before GetFile).
    #[serde(rename = "Commands", default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<Command>>,
    /// Why the action is taken; shown as `requestorComment`.
    #[serde(rename = "Comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Body of `POST /api/machineactions/{id}/cancel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Why the action is cancelled; shown as `cancellationComment`.
    #[serde(rename = "Comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// One command of a live response action, with its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandEntry {
    /// The command's position in the action, from 0.
    pub index: u32,
    /// When the device started it (ISO 8601), or null.
    pub start_time: Option<String>,
    /// When it ended, or null.
    pub end_time: Option<String>,
    /// `Created`, `InProgress`, `Completed` or `Failed`.
    pub command_status: CommandStatus,
    /// Why it failed (empty unless Failed).
    pub errors: Vec<String>,
    /// The command as submitted.
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
    /// `https://host/api/$metadata#MachineActions/$entity` on a single entity.
    pub odata_context: Option<String>,
    /// The action's id (a GUID).
    pub id: String,
    /// `LiveResponse`, or the response action's type (`Isolate`,
    /// `Unisolate`, ...: `ActionType`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Always null: Defender's title of an action.
    pub title: Option<String>,
    /// Who asked: the app's or user's name.
    pub requestor: String,
    /// The comment given when it was submitted.
    pub requestor_comment: Option<String>,
    /// Where the action stands.
    pub status: ActionStatus,
    /// The machine it runs on.
    pub machine_id: String,
    /// The machine's computer name when the action was created.
    pub computer_dns_name: Option<String>,
    /// When it was submitted (ISO 8601, 7-digit fraction, Z).
    pub creation_date_time_utc: String,
    /// When its status last changed.
    pub last_update_date_time_utc: String,
    /// Who cancelled it, if someone did.
    pub cancellation_requestor: Option<String>,
    /// Why it was cancelled.
    pub cancellation_comment: Option<String>,
    /// When it was cancelled.
    pub cancellation_date_time_utc: Option<String>,
    /// Always 0: Defender's HRESULT of a failed action.
    pub error_h_result: i64,
    /// `Full` or `Selective` for an isolation; null otherwise.
    pub scope: Option<String>,
    /// Always null: Defender's caller-supplied external id.
    pub external_id: Option<String>,
    /// `PublicApi` for every action submitted through the API.
    pub request_source: String,
    /// Always null for live response.
    pub related_file_info: Option<serde_json::Value>,
    /// The action's commands, by index. A response action has one, of its
    /// own type, whose `errors` say why it failed.
    pub commands: Vec<CommandEntry>,
    /// Always null: Defender's troubleshooting detail.
    pub troubleshoot_info: Option<String>,
    /// Reach's extension: the batch this action is one machine's part of
    /// (absent on an action submitted alone, so Defender's shape is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
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
    /// `https://host/api/$metadata#LibraryFiles/$entity` on a single entity.
    pub odata_context: Option<String>,
    /// The file's name, unique in the tenant without regard to case.
    pub file_name: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// What it is for, as the uploader described it.
    pub description: Option<String>,
    /// When it was first uploaded.
    pub creation_time: String,
    /// When it was last replaced.
    pub last_updated_time: String,
    /// Who first uploaded it.
    pub created_by: String,
    /// Who last replaced it.
    pub last_updated_by: Option<String>,
    /// Whether the script takes `Args`.
    pub has_parameters: bool,
    /// How to call it, as the uploader described it.
    pub parameters_description: Option<String>,
    /// Size in bytes (a Reach addition; Defender clients ignore it).
    #[serde(default)]
    pub size: u64,
    /// Ed25519 signature (base64) uploaded with the file (a Reach addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// One entry of Reach's audit trail (`GET /api/auditlog`, and each line of
/// `reach-server audit export`). A Reach addition; Defender has no such API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditLogEntry {
    /// Position in the chain (1, 2, ...), across all tenants.
    pub id: i64,
    /// When it happened (ISO 8601, 7-digit fraction, Z).
    pub timestamp: String,
    /// The tenant it happened in (empty when no tenant was known).
    pub tenant_id: String,
    /// `app`, `user`, `machine`, `operator`, `link`, `anonymous` or `system`.
    pub actor_type: String,
    /// The actor's id: a client id, a user name, a machine id, an OS user.
    pub actor_id: String,
    /// The actor's display name.
    pub actor_name: String,
    /// The client's address, for HTTP calls.
    pub source_ip: Option<String>,
    /// The HTTP method and route, or the event's name (`CommandStarted`, ...).
    pub operation: String,
    /// The machine it concerns, if one.
    pub machine_id: Option<String>,
    /// What it acted on: an action id, `action/index`, a file name.
    pub target: Option<String>,
    /// `Succeeded`, `Failed` or `Denied`.
    pub outcome: String,
    /// The HTTP status answered, for HTTP calls.
    pub http_status: Option<u16>,
    /// What only this kind of event says (JSON object).
    pub details: serde_json::Value,
    /// Hex SHA-256 of the entry before this one (64 zeros for the first).
    pub previous_hash: String,
    /// Hex SHA-256 of this entry and `previous_hash`.
    pub hash: String,
}

/// An OData collection: `{"@odata.context", "@odata.count"?, "value": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection<T> {
    /// `https://host/api/$metadata#<entity set>`.
    #[serde(rename = "@odata.context")]
    pub odata_context: String,
    #[serde(
        rename = "@odata.count",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    /// How many entities match in all, with `$count=true`.
    pub count: Option<u64>,
    /// This page's entities.
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
    /// `https://host/api/$metadata#Edm.String`.
    #[serde(rename = "@odata.context")]
    pub odata_context: String,
    /// The value itself (a URL for download links).
    pub value: String,
}

/// Every error response: `{"error": {"code", "message", "target"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// What went wrong.
    pub error: ErrorBody,
}

/// What went wrong: a code clients match on, and words for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Defender's error code: `ResourceNotFound`, `InvalidRequestBody`, ...
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Per-request correlation id (a GUID).
    pub target: String,
}

/// Reply of the OAuth2 token endpoints. `expires_in` is a JSON number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// The same as `expires_in`, as Entra ID answers.
    #[serde(default)]
    pub ext_expires_in: u64,
    /// The token (a JWT), for `Authorization: Bearer`.
    pub access_token: String,
}

/// The downloadable result of a PutFile command (a Reach addition; Defender
/// has no result for PutFile): what was put, and where it is on the device
/// (`null` when the agent did not say, as agents before this record did not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutFileRecord {
    /// The library file that was put.
    pub file_name: String,
    /// Hex SHA-256 of the file as put on the device.
    pub sha256: String,
    /// Where the agent put it, when it said.
    pub path: Option<String>,
}

/// The downloadable result of a RunScript command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScriptTranscript {
    /// The library script that ran.
    pub script_name: String,
    /// Its exit code (128 + the signal's number when a signal ended it).
    pub exit_code: i32,
    /// What it wrote to standard output (up to the output cap).
    pub script_output: String,
    /// What it wrote to standard error (up to the output cap).
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
