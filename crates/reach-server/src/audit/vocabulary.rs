//! The words of the trail: every operation recorded outside an HTTP call
//! (an HTTP call's operation is its method and route) and every outcome.
//! The text of each is stored and hashed into the chain, and SIEM rules
//! match on it: a variant's text never changes once released. A new kind
//! of event adds a variant here.

/// An event that is not an HTTP call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// An agent received a command.
    CommandStarted,
    /// A command ended (by its agent, or its lease ran out).
    CommandFinished,
    /// An agent reported another computer name than before.
    MachineRenamed,
    /// Tags added or removed through the API (one entry per machine).
    MachineTagsChanged,
    /// A batch in waves paused itself: too many of its machines failed.
    BatchPaused,
    /// Retention deleted a command's stored result.
    ResultDeleted,
    /// Retention deleted the chunks of a GetFile that ended without its result.
    PartialResultDeleted,
    /// Retention deleted a library file nothing used.
    LibraryFilePruned,
    /// Retention deleted the oldest entries of the trail itself.
    AuditPruned,
    /// An operator created a tenant.
    TenantCreated,
    /// An operator created an app.
    AppCreated,
    /// An operator disabled an app.
    AppDisabled,
    /// An operator enabled an app.
    AppEnabled,
    /// An operator gave an app a new secret.
    AppSecretRotated,
    /// An operator created a console user.
    UserCreated,
    /// An operator disabled a user.
    UserDisabled,
    /// An operator enabled a user.
    UserEnabled,
    /// An operator created or redefined a device group.
    DeviceGroupDefined,
    /// An operator replaced a machine's tags from the command line.
    MachineTagged,
    /// An operator created an enrollment token.
    EnrollmentTokenCreated,
    /// An operator revoked an enrollment token.
    EnrollmentTokenRevoked,
    /// An operator revoked a machine.
    MachineRevoked,
    /// An operator cancelled every Pending action of an app.
    PendingActionsCancelled,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 23] = [
        Operation::CommandStarted,
        Operation::CommandFinished,
        Operation::MachineRenamed,
        Operation::MachineTagsChanged,
        Operation::BatchPaused,
        Operation::ResultDeleted,
        Operation::PartialResultDeleted,
        Operation::LibraryFilePruned,
        Operation::AuditPruned,
        Operation::TenantCreated,
        Operation::AppCreated,
        Operation::AppDisabled,
        Operation::AppEnabled,
        Operation::AppSecretRotated,
        Operation::UserCreated,
        Operation::UserDisabled,
        Operation::UserEnabled,
        Operation::DeviceGroupDefined,
        Operation::MachineTagged,
        Operation::EnrollmentTokenCreated,
        Operation::EnrollmentTokenRevoked,
        Operation::MachineRevoked,
        Operation::PendingActionsCancelled,
    ];

    /// The text stored in the entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CommandStarted => "CommandStarted",
            Operation::CommandFinished => "CommandFinished",
            Operation::MachineRenamed => "MachineRenamed",
            Operation::MachineTagsChanged => "MachineTagsChanged",
            Operation::BatchPaused => "BatchPaused",
            Operation::ResultDeleted => "ResultDeleted",
            Operation::PartialResultDeleted => "PartialResultDeleted",
            Operation::LibraryFilePruned => "LibraryFilePruned",
            Operation::AuditPruned => "AuditPruned",
            Operation::TenantCreated => "TenantCreated",
            Operation::AppCreated => "AppCreated",
            Operation::AppDisabled => "AppDisabled",
            Operation::AppEnabled => "AppEnabled",
            Operation::AppSecretRotated => "AppSecretRotated",
            Operation::UserCreated => "UserCreated",
            Operation::UserDisabled => "UserDisabled",
            Operation::UserEnabled => "UserEnabled",
            Operation::DeviceGroupDefined => "DeviceGroupDefined",
            Operation::MachineTagged => "MachineTagged",
            Operation::EnrollmentTokenCreated => "EnrollmentTokenCreated",
            Operation::EnrollmentTokenRevoked => "EnrollmentTokenRevoked",
            Operation::MachineRevoked => "MachineRevoked",
            Operation::PendingActionsCancelled => "PendingActionsCancelled",
        }
    }
}

/// How an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did what was asked.
    Succeeded,
    /// It was refused or went wrong (other than for want of a credential).
    Failed,
    /// Refused for want of a credential or a permission (401, 403).
    Denied,
}

impl Outcome {
    /// The text stored in the entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "Succeeded",
            Outcome::Failed => "Failed",
            Outcome::Denied => "Denied",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each operation has its own text, so a SIEM rule matches one kind.
    #[test]
    fn every_operation_has_its_own_text() {
        let mut texts: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), Operation::ALL.len());
        assert!(
            texts
                .iter()
                .all(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
        );
    }
}
