//! How a machine gets its identity and proves it: enrollment tokens,
//! enrolling, the credential the gateway checks, and revocation.

use async_trait::async_trait;
use reach_proto::agent::MachineInfo;

use super::*;
use crate::time::Micros;

/// An enrollment token as operators see it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentTokenRow {
    /// The first 12 hex characters of the token's SHA-256.
    pub id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// When it was created.
    pub created: Micros,
    /// When it stops working, if ever.
    pub expires: Option<Micros>,
    /// How many enrollments it allows, if limited.
    pub max_uses: Option<u64>,
    /// How many it made.
    pub uses: u64,
    /// When it was revoked.
    pub revoked: Option<Micros>,
}

/// What the gateway needs to authenticate an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineCredential {
    /// The machine's tenant.
    pub tenant_id: String,
    /// Hex SHA-256 of the agent's secret.
    pub credential_hash: String,
    /// Revoked machines are refused.
    pub revoked: bool,
    /// Offboarded machines (revoked too) are told so.
    pub offboarded: bool,
}

/// How machines get and prove their identity.
#[async_trait]
pub trait Enrollment: Send + Sync {
    /// Stores an enrollment token by its hash, valid until `expires` (None:
    /// no expiry) for at most `max_uses` enrollments (None: no limit).
    async fn create_enrollment_token(
        &self,
        tenant_id: &str,
        token_hash: &str,
        expires: Option<Micros>,
        max_uses: Option<u64>,
        now: Micros,
    ) -> StoreResult<()>;
    /// Every enrollment token of every tenant, newest first.
    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentTokenRow>>;
    /// Revokes the one token whose id (its hash's first characters) starts
    /// with `id`: NotFound when none, Conflict when several.
    async fn revoke_enrollment_token(
        &self,
        id: &str,
        now: Micros,
    ) -> StoreResult<EnrollmentTokenRow>;
    /// Creates a machine with a fresh id if the enrollment token is known,
    /// not revoked, not expired at `now` and not used up, counting the use;
    /// `Refused` says which it is not.
    async fn enroll_machine(
        &self,
        token_hash: &str,
        machine_id: &str,
        credential_hash: &str,
        info: &MachineInfo,
        ip: Option<&str>,
        now: Micros,
    ) -> StoreResult<MachineRow>;
    /// What the gateway checks an agent's credential against.
    async fn machine_credential(&self, machine_id: &str) -> StoreResult<MachineCredential>;
    /// Marks a machine revoked; its credential stops working.
    async fn revoke_machine(&self, machine_id: &str) -> StoreResult<()>;
}
