//! The Machine entity as Defender shapes it, and the bodies of the tag
//! APIs that change it.

use serde::{Deserialize, Serialize};

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
    /// `https://host/api/$metadata#Machines/$entity` on a single entity.
    pub odata_context: Option<String>,
    /// The machine's id (40 hex characters), chosen by the server at enrollment.
    pub id: String,
    /// The computer name its agent reports (never an identity).
    pub computer_dns_name: String,
    /// When it enrolled.
    pub first_seen: String,
    /// When its agent was last heard from.
    pub last_seen: String,
    /// Defender-style platform name (`Linux`, `macOS`, `Windows10`, ...), as its agent reports.
    pub os_platform: String,
    /// The operating system's version.
    pub os_version: String,
    /// `64-bit` or `32-bit`, as its agent reports.
    pub os_architecture: String,
    /// The agent's version.
    pub version: String,
    /// The address its agent last connected from (through trusted proxies).
    pub last_ip_address: Option<String>,
    /// The device's own addresses, as its agent last reported them.
    #[serde(default)]
    pub ip_addresses: Vec<MachineIpAddress>,
    /// `Active` while its agent is connected and heard from, else `Inactive`.
    pub health_status: String,
    /// Always `Onboarded`: a machine exists once its agent enrolled.
    pub onboarding_status: String,
    /// Its tags, as operators and the tag API set them.
    pub machine_tags: Vec<String>,
    /// A Reach addition: another machine the caller can see reports the
    /// same name (a re-imaged device's stale record, or an impostor).
    /// Naming such a machine answers 409; use its id.
    #[serde(default)]
    pub duplicate_name: bool,
    /// A Reach addition: `Isolated` or `NotIsolated` as the device's agent
    /// last reported it (or its last isolate or release succeeded), and
    /// `Pending` while an isolate or release waits or runs.
    #[serde(default)]
    pub isolation_state: String,
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
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub os_processor: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub os_build: Option<i64>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub last_external_ip_address: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub rbac_group_id: Option<i64>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub rbac_group_name: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub risk_score: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub exposure_level: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub device_value: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub aad_device_id: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub is_aad_joined: Option<bool>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub managed_by: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub managed_by_status: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub defender_av_status: Option<String>,
    /// Not tracked by Reach: null.
    #[serde(default)]
    pub vm_metadata: Option<serde_json::Value>,
}

/// One entry of a machine's `ipAddresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineIpAddress {
    /// The address.
    pub ip_address: String,
    /// The interface's hardware address, when the agent knows it.
    pub mac_address: Option<String>,
    /// The interface's kind, when the agent knows it.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `Up` for every address the agent reports.
    pub operational_status: String,
}

/// Body of `POST /api/machines/{id}/tags` (`Value`, `Action`: `Add` or
/// `Remove`) and of `POST /api/machines/AddOrRemoveTagForMultipleMachines`
/// (with `MachineIds`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MachineTagRequest {
    /// The tag to add or remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `Add` or `Remove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The machines to tag (`AddOrRemoveTagForMultipleMachines` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_ids: Option<Vec<String>>,
}
