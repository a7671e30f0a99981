//! Role names as they appear in tokens: Defender's application and
//! delegated permissions, and Reach's own (`Machine.LiveResponse.Basic`,
//! `AuditLog.Read`). Which roles grant what is the server's business
//! (`reach_server::auth::permissions`).

/// Advanced live response: PutFile, RunScript and GetFile.
pub const LIVE_RESPONSE: &str = "Machine.LiveResponse";
/// Basic live response: GetFile only (collecting, never changing or
/// running anything on the device); a Reach role.
pub const LIVE_RESPONSE_BASIC: &str = "Machine.LiveResponse.Basic";
/// Reads every machine and action of the tenant (application permission).
pub const READ_ALL: &str = "Machine.Read.All";
/// Reads and changes machines (tags) of the tenant (application permission).
pub const READ_WRITE_ALL: &str = "Machine.ReadWrite.All";
/// Uploads, replaces and deletes library files.
pub const LIBRARY_MANAGE: &str = "Library.Manage";
/// Reads the audit trail (`GET /api/auditlog`); a Reach role.
pub const AUDIT_READ: &str = "AuditLog.Read";
/// Reads machines and actions within the user's device groups (the delegated spelling of the two below too).
pub const READ: &str = "Machine.Read";
/// Changes machines (tags) within the user's device groups.
pub const READ_WRITE: &str = "Machine.ReadWrite";
/// Collects investigation packages (Defender); may cancel actions.
pub const COLLECT_FORENSICS: &str = "Machine.CollectForensics";
/// Isolates and releases machines (Defender); may cancel actions.
pub const ISOLATE: &str = "Machine.Isolate";
/// Restricts code execution (Defender); may cancel actions.
pub const RESTRICT_EXECUTION: &str = "Machine.RestrictExecution";
/// Runs antivirus scans (Defender); may cancel actions.
pub const SCAN: &str = "Machine.Scan";
/// Offboards machines (Defender); may cancel actions.
pub const OFFBOARD: &str = "Machine.Offboard";
/// Stops and quarantines files (Defender); may cancel actions.
pub const STOP_AND_QUARANTINE: &str = "Machine.StopAndQuarantine";

/// Every role a dev-mode app receives.
pub const ALL: &[&str] = &[
    LIVE_RESPONSE,
    LIVE_RESPONSE_BASIC,
    READ_ALL,
    READ_WRITE_ALL,
    LIBRARY_MANAGE,
    AUDIT_READ,
    COLLECT_FORENSICS,
    ISOLATE,
    RESTRICT_EXECUTION,
    SCAN,
    OFFBOARD,
    STOP_AND_QUARANTINE,
];
