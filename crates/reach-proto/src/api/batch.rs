//! Batches, Reach's extension for live response on many machines in one
//! call: the request body (PascalCase, as Defender's) and the entity
//! (camelCase). Each machine's part is an ordinary `MachineAction` naming
//! its batch (`batchId`).

use serde::{Deserialize, Serialize};

use super::Command;

/// Body of `POST /api/batches`. Fields are optional here so that the
/// server can name what is missing instead of failing to parse.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateBatchRequest {
    /// The commands every machine runs, exactly as `runliveresponse` takes them.
    #[serde(rename = "Commands", default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Vec<Command>>,
    /// Why; shown as `requestorComment` on the batch and each action.
    #[serde(rename = "Comment", default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Which machines: exactly one of its fields.
    #[serde(rename = "Machines", default, skip_serializing_if = "Option::is_none")]
    pub machines: Option<BatchTargets>,
    /// Waves, if any.
    #[serde(rename = "Rollout", default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<BatchRollout>,
    /// Seconds until actions still waiting time out (default: the queue TTL).
    #[serde(
        rename = "ExpiresInSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_in_seconds: Option<u64>,
}

/// The machines a batch targets: exactly one field set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchTargets {
    /// Machine ids (or computer names).
    #[serde(rename = "Ids", default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    /// An OData `$filter` over machines, as `GET /api/machines` takes it.
    #[serde(rename = "Filter", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Machines carrying any of these tags.
    #[serde(rename = "Tags", default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Every machine the caller can see.
    #[serde(rename = "All", default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// Waves: `waveSize` machines at a time, pausing when too many fail. The
/// request's PascalCase names are taken too; the entity shows camelCase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRollout {
    /// Machines per wave.
    #[serde(rename = "waveSize", alias = "WaveSize")]
    pub wave_size: u64,
    /// Failed and timed-out actions, as a percentage of those finished,
    /// past which the batch pauses (default 100: never).
    #[serde(
        rename = "maxFailedPercent",
        alias = "MaxFailedPercent",
        default = "all"
    )]
    pub max_failed_percent: u8,
}

fn all() -> u8 {
    100
}

/// A batch's actions by status; they sum to `machineCount`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounts {
    /// Waiting for their machines (or their wave).
    #[serde(rename = "Pending")]
    pub pending: u64,
    /// Running.
    #[serde(rename = "InProgress")]
    pub in_progress: u64,
    /// Every command completed.
    #[serde(rename = "Succeeded")]
    pub succeeded: u64,
    /// A command failed.
    #[serde(rename = "Failed")]
    pub failed: u64,
    /// Timed out.
    #[serde(rename = "TimeOut")]
    pub timed_out: u64,
    /// Cancelled.
    #[serde(rename = "Cancelled")]
    pub cancelled: u64,
}

/// A batch as clients read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// `https://host/api/$metadata#Batches/$entity` on a single entity.
    #[serde(
        rename = "@odata.context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub odata_context: Option<String>,
    /// Its id (a GUID).
    pub id: String,
    /// `Running`, `Paused`, `Completed` (every action final) or `Cancelled`.
    pub status: String,
    /// Why it paused by itself, when it did.
    pub paused_reason: Option<String>,
    /// Who asked.
    pub requestor: String,
    /// The comment given.
    pub requestor_comment: Option<String>,
    /// When it was created (ISO 8601, 7-digit fraction, Z).
    pub creation_date_time_utc: String,
    /// When it or one of its actions last changed.
    pub last_update_date_time_utc: String,
    /// When its actions still waiting time out.
    pub expiration_date_time_utc: String,
    /// The commands every machine runs, as submitted.
    pub commands: Vec<Command>,
    /// Machines targeted.
    pub machine_count: u64,
    /// Its actions by status.
    pub counts: BatchCounts,
    /// Waves, or null.
    pub rollout: Option<BatchRollout>,
    /// Who cancelled it.
    pub cancellation_requestor: Option<String>,
    /// Why.
    pub cancellation_comment: Option<String>,
}
