//! The operator subcommands' arguments, as clap parses them. What each
//! does is in `operator.rs`.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    /// Print the documented example config.
    PrintConfig,
    /// Manage tenants.
    Tenants {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage client apps (client-credentials identities).
    Apps {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Manage the people who sign in to the web console.
    Users {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage agent enrollment tokens.
    EnrollmentToken {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage device groups (sets of machines, by tag) that apps and users can be limited to.
    Groups {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Manage enrolled machines.
    Machines {
        #[command(subcommand)]
        command: MachineCommand,
    },
    /// Live response actions waiting for their devices.
    Actions {
        #[command(subcommand)]
        command: ActionCommand,
    },
    /// Check and export the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every entry's hash and link; exits 1 at the first broken one.
    Verify,
    /// Print entries as JSON lines (oldest first), for a SIEM.
    Export {
        /// Only entries at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z, or a date).
        #[arg(long)]
        since: Option<String>,
        /// Only this tenant's entries (default: every tenant's).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its id.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Create a client app; prints its id and secret once.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated roles, e.g. Machine.LiveResponse,Machine.Read.All,Library.Manage
        #[arg(long)]
        roles: String,
        /// Tenant id (default: the only tenant there is).
        #[arg(long)]
        tenant: Option<String>,
        /// Comma-separated device groups the app is limited to (default: every machine).
        #[arg(long)]
        groups: Option<String>,
    },
    /// Give an app a new secret; tokens issued under the old one stop working at once.
    RotateSecret { client_id: String },
    /// Refuse the app tokens; its existing tokens stop working at once.
    Disable { client_id: String },
    /// Allow a disabled app tokens again (its earlier tokens stay revoked).
    Enable { client_id: String },
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create or redefine a device group: the machines carrying any of its tags.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated machine tags.
        #[arg(long)]
        tags: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List a tenant's device groups.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a console user; prints a generated password once (or reads one from stdin).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated roles, e.g. Machine.LiveResponse,Machine.Read,Library.Manage
        #[arg(long)]
        roles: String,
        /// Tenant id (default: the only tenant there is).
        #[arg(long)]
        tenant: Option<String>,
        /// Read the password from the first line of stdin instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        /// Comma-separated device groups the user is limited to (default: every machine).
        #[arg(long)]
        groups: Option<String>,
    },
    /// Refuse the user sign-in; the user's existing tokens stop working at once.
    Disable { name: String },
    /// Allow a disabled user to sign in again (earlier tokens stay revoked).
    Enable { name: String },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an enrollment token for agents (printed once).
    Create {
        #[arg(long)]
        tenant: Option<String>,
        /// How long the token enrolls agents: 30m, 24h, 7d, or never.
        #[arg(long, default_value = "24h")]
        expires: String,
        /// How many agents it may enroll (default: any number until it expires).
        #[arg(long)]
        uses: Option<u64>,
    },
    /// List every enrollment token (by id: the start of its hash; never the token).
    List,
    /// Revoke an enrollment token by its id (as `list` shows it).
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum ActionCommand {
    /// List the actions an app queued that have not started (Pending).
    Pending {
        #[arg(long)]
        app: String,
    },
    /// Cancel every action an app queued that has not started.
    CancelPending {
        #[arg(long)]
        app: String,
        #[arg(long, default_value = "Cancelled by an operator")]
        comment: String,
    },
}

#[derive(Subcommand)]
pub enum MachineCommand {
    /// Revoke a machine's credential; its agent is disconnected and cannot reconnect.
    Revoke { id: String },
    /// Add or remove a machine's tags (device groups are defined by tags).
    Tag {
        id: String,
        /// Comma-separated tags to add.
        #[arg(long)]
        add: Option<String>,
        /// Comma-separated tags to remove.
        #[arg(long)]
        remove: Option<String>,
    },
}
