//! Role names as they appear in tokens: Defender's application and
//! delegated permissions, and Reach's own (`Machine.LiveResponse.Basic`,
//! `AuditLog.Read`). Which roles grant what is the server's business
//! (`reach_server::auth::permissions`).

/// Advanced live response: PutFile, RunScript and GetFile.
pub const LIVE_RESPONSE: &str = "Machine.LiveResponse";
/// Basic live response: GetFile only (collecting, never changing or
/// running anything on the device); a Reach role.
pub const LIVE_RESPONSE_BASIC: &str = "Machine.LiveResponse.Basic";
pub const READ_ALL: &str = "Machine.Read.All";
pub const READ_WRITE_ALL: &str = "Machine.ReadWrite.All";
pub const LIBRARY_MANAGE: &str = "Library.Manage";
/// Reads the audit trail (`GET /api/auditlog`); a Reach role.
pub const AUDIT_READ: &str = "AuditLog.Read";
/// Delegated (user) spellings.
pub const READ: &str = "Machine.Read";
pub const READ_WRITE: &str = "Machine.ReadWrite";
pub const COLLECT_FORENSICS: &str = "Machine.CollectForensics";
pub const ISOLATE: &str = "Machine.Isolate";
pub const RESTRICT_EXECUTION: &str = "Machine.RestrictExecution";
pub const SCAN: &str = "Machine.Scan";
pub const OFFBOARD: &str = "Machine.Offboard";
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
