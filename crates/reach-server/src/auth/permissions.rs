//! Which roles grant each thing a caller may do: the one table that
//! handlers (through `api::authorize`) and the console's capabilities read.
//! Role names are Defender's (`reach_proto::api::roles`); a role is granted
//! to an app or a user by an operator. Nothing else in the server checks a
//! role by name.

use reach_proto::api::roles;

/// Read machines, machine actions and their tags.
pub const READ: &[&str] = &[
    roles::READ_ALL,
    roles::READ_WRITE_ALL,
    roles::READ,
    roles::READ_WRITE,
];

/// Start live response (GetFile at least).
pub const RUN_LIVE_RESPONSE: &[&str] = &[roles::LIVE_RESPONSE, roles::LIVE_RESPONSE_BASIC];

/// Also put files and run scripts (advanced live response).
pub const RUN_ADVANCED: &[&str] = &[roles::LIVE_RESPONSE];

/// Cancel a machine action: any role that may start one.
pub const CANCEL_ACTIONS: &[&str] = &[
    roles::LIVE_RESPONSE,
    roles::LIVE_RESPONSE_BASIC,
    roles::COLLECT_FORENSICS,
    roles::ISOLATE,
    roles::RESTRICT_EXECUTION,
    roles::SCAN,
    roles::OFFBOARD,
    roles::STOP_AND_QUARANTINE,
];

/// Get a download link for a command's result.
pub const DOWNLOAD_RESULTS: &[&str] = &[
    roles::LIVE_RESPONSE,
    roles::LIVE_RESPONSE_BASIC,
    roles::READ_ALL,
    roles::READ_WRITE_ALL,
];

/// Isolate machines and release them (Defender's role).
pub const ISOLATE: &[&str] = &[roles::ISOLATE];

/// Offboard machines (Defender's role).
pub const OFFBOARD: &[&str] = &[roles::OFFBOARD];

/// Stop and quarantine files (Defender's role).
pub const STOP_AND_QUARANTINE: &[&str] = &[roles::STOP_AND_QUARANTINE];

/// Collect investigation packages and get their links (Defender's role).
pub const COLLECT_FORENSICS: &[&str] = &[roles::COLLECT_FORENSICS];

/// Ask for an antivirus scan (Defender's role; Reach refuses the action).
pub const SCAN: &[&str] = &[roles::SCAN];

/// Restrict code execution (Defender's role; Reach refuses the action).
pub const RESTRICT_EXECUTION: &[&str] = &[roles::RESTRICT_EXECUTION];

/// Add and remove machine tags.
pub const TAG_MACHINES: &[&str] = &[roles::READ_WRITE_ALL, roles::READ_WRITE];

/// Upload, replace and delete library files (and list them).
pub const MANAGE_LIBRARY: &[&str] = &[roles::LIBRARY_MANAGE];

/// Read the audit trail.
pub const READ_AUDIT_LOG: &[&str] = &[roles::AUDIT_READ];
