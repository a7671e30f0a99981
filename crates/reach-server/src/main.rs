//! `reach-server`: runs the server (`--dev` for the zero-setup mode) and its
//! administrative subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use reach_server::{Config, admin, audit, config, dev};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "reach-server", version, about = "Reach live response server")]
struct Cli {
    /// Config file (TOML); see `reach-server print-config`.
    #[arg(long, global = true, env = "REACH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the config).
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Data directory (overrides the config).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Database URL (overrides the config): sqlite://PATH or postgres://...
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Object store URL (overrides the config): file:///PATH or s3://BUCKET/PREFIX.
    #[arg(long, global = true)]
    object_store_url: Option<String>,
    /// Zero-setup mode: create a tenant, an app and a local agent, and print how to use them.
    #[arg(long)]
    dev: bool,
    /// With --dev: serve HTTPS with a CA and certificate made for this data directory.
    #[arg(long, requires = "dev")]
    tls: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
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
enum AuditCommand {
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
enum TenantCommand {
    /// Create a tenant and print its id.
    Create {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum AppCommand {
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
enum GroupCommand {
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
enum UserCommand {
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
enum TokenCommand {
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
enum ActionCommand {
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
enum MachineCommand {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // Everything the server writes (database, results, keys) is its own,
    // and large buffers go back to the system once freed.
    reach_server::process::harden();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REACH_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = cli.database_url {
        config.database_url = url;
    }
    if let Some(url) = cli.object_store_url {
        config.object_store_url = url;
    }
    match cli.command {
        None => serve(config, cli.dev, cli.tls).await,
        Some(Command::PrintConfig) => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Some(command) => administer(config, command).await,
    }
}

/// The tenant named on the command line, or the only one there is.
async fn tenant_or_only(
    state: &reach_server::SharedState,
    tenant: Option<String>,
) -> anyhow::Result<String> {
    if let Some(tenant) = tenant {
        return Ok(tenant);
    }
    let tenants = state.store.list_tenants().await?;
    match tenants.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => anyhow::bail!(
            "there is no tenant yet: create one with `reach-server tenants create --name NAME`"
        ),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|t| format!("{} ({})", t.id, t.name))
                .collect();
            anyhow::bail!("give --tenant, one of: {}", names.join(", "))
        }
    }
}

/// A comma-separated list, without empty items.
fn list(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// Records an administrative change made from this command line.
async fn audit(
    state: &reach_server::SharedState,
    tenant_id: &str,
    operation: &str,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let event = audit::event(
        tenant_id,
        audit::Actor::operator(),
        operation,
        "Succeeded",
        details,
    );
    if !state.auditor.record(event).await {
        anyhow::bail!("the change was made but its audit entry could not be written; see the log");
    }
    Ok(())
}

/// `apps disable` / `apps enable`: either way the app's earlier tokens stop working.
async fn set_app_disabled(
    state: &reach_server::SharedState,
    client_id: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let app = state.store.get_app(client_id).await?;
    state.store.set_app_disabled(client_id, disabled).await?;
    let operation = if disabled {
        "AppDisabled"
    } else {
        "AppEnabled"
    };
    audit(
        state,
        &app.tenant_id,
        operation,
        json!({ "clientId": client_id }),
    )
    .await?;
    match disabled {
        true => println!("app {client_id} disabled; its tokens no longer work"),
        false => println!("app {client_id} enabled; request new tokens"),
    }
    Ok(())
}

/// `users disable` / `users enable`: either way the user's earlier tokens stop working.
async fn set_user_disabled(
    state: &reach_server::SharedState,
    name: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let user = state.store.get_user(name).await?;
    state.store.set_user_disabled(name, disabled).await?;
    let operation = if disabled {
        "UserDisabled"
    } else {
        "UserEnabled"
    };
    audit(
        state,
        &user.tenant_id,
        operation,
        json!({ "name": user.name }),
    )
    .await?;
    match disabled {
        true => println!("user {} disabled; their sessions no longer work", user.name),
        false => println!(
            "user {} enabled; earlier sessions stay signed out",
            user.name
        ),
    }
    Ok(())
}

async fn administer(config: Config, command: Command) -> anyhow::Result<()> {
    let state = reach_server::open(config).await?;
    let store = state.store.as_ref();
    match command {
        Command::Tenants {
            command: TenantCommand::Create { name },
        } => {
            let tenant = admin::create_tenant(store, &name).await?;
            audit(&state, &tenant.id, "TenantCreated", json!({ "name": name })).await?;
            println!("tenant id: {}", tenant.id);
        }
        Command::Apps {
            command:
                AppCommand::Create {
                    name,
                    roles,
                    tenant,
                    groups,
                },
        } => {
            let roles = admin::parse_roles(&roles)?;
            let tenant = tenant_or_only(&state, tenant).await?;
            let groups = list(groups.as_deref());
            let app =
                admin::create_scoped_app(store, &tenant, &name, roles, groups.clone()).await?;
            let details = json!({ "clientId": app.client_id, "name": name, "roles": app.roles, "deviceGroups": groups });
            audit(&state, &tenant, "AppCreated", details).await?;
            println!("tenant id:     {}", app.tenant_id);
            println!("client id:     {}", app.client_id);
            println!("client secret: {}", app.client_secret);
            println!("roles:         {}", app.roles.join(","));
            println!("The secret is shown only now; it is stored hashed.");
        }
        Command::Users {
            command:
                UserCommand::Create {
                    name,
                    roles,
                    tenant,
                    password_stdin,
                    groups,
                },
        } => {
            let groups = list(groups.as_deref());
            let roles = admin::parse_roles(&roles)?;
            let tenant = tenant_or_only(&state, tenant).await?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                None
            };
            let user =
                admin::create_user(store, &tenant, &name, roles, groups.clone(), password).await?;
            let details = json!({ "name": user.name, "roles": user.roles, "deviceGroups": groups });
            audit(&state, &tenant, "UserCreated", details).await?;
            println!("tenant id: {}", user.tenant_id);
            println!("user:      {}", user.name);
            if !password_stdin {
                println!("password:  {}", user.password);
                println!("The password is shown only now; it is stored hashed.");
            }
            println!("roles:     {}", user.roles.join(","));
        }
        Command::Apps {
            command: AppCommand::RotateSecret { client_id },
        } => {
            let app = store.get_app(&client_id).await?;
            let secret = admin::rotate_app_secret(store, &client_id).await?;
            let details = json!({ "clientId": client_id });
            audit(&state, &app.tenant_id, "AppSecretRotated", details).await?;
            println!("client id:     {client_id}");
            println!("client secret: {secret}");
            println!("The secret is shown only now; tokens issued before this no longer work.");
        }
        Command::Apps {
            command: AppCommand::Disable { client_id },
        } => set_app_disabled(&state, &client_id, true).await?,
        Command::Apps {
            command: AppCommand::Enable { client_id },
        } => set_app_disabled(&state, &client_id, false).await?,
        Command::Users {
            command: UserCommand::Disable { name },
        } => set_user_disabled(&state, &name, true).await?,
        Command::Users {
            command: UserCommand::Enable { name },
        } => set_user_disabled(&state, &name, false).await?,
        Command::Groups {
            command: GroupCommand::Create { name, tags, tenant },
        } => {
            let tenant = tenant_or_only(&state, tenant).await?;
            let group = admin::create_group(store, &tenant, &name, &list(Some(&tags))).await?;
            let details = json!({ "name": group.name, "tags": group.tags });
            audit(&state, &tenant, "DeviceGroupDefined", details).await?;
            println!(
                "device group {}: machines tagged {}",
                group.name,
                group.tags.join(", ")
            );
        }
        Command::Groups {
            command: GroupCommand::List { tenant },
        } => {
            let tenant = tenant_or_only(&state, tenant).await?;
            for group in store.list_device_groups(&tenant).await? {
                println!("{}\t{}", group.name, group.tags.join(","));
            }
        }
        Command::Machines {
            command: MachineCommand::Tag { id, add, remove },
        } => {
            let machine = store.machine_credential(&id).await?;
            let tags = admin::change_tags(
                store,
                &machine.tenant_id,
                &id,
                &list(add.as_deref()),
                &list(remove.as_deref()),
            )
            .await?;
            let details = json!({ "added": list(add.as_deref()), "removed": list(remove.as_deref()), "tags": tags });
            audit(&state, &machine.tenant_id, "MachineTagged", details).await?;
            println!("machine {id} tags: {}", tags.join(", "));
        }
        Command::EnrollmentToken {
            command:
                TokenCommand::Create {
                    tenant,
                    expires,
                    uses,
                },
        } => {
            let tenant = tenant_or_only(&state, tenant).await?;
            let valid_for = admin::parse_validity(&expires)?;
            let token = admin::create_enrollment_token(store, &tenant, valid_for, uses).await?;
            let details =
                json!({ "validForSecs": valid_for.map(|d| d.as_secs()), "maxUses": uses });
            audit(&state, &tenant, "EnrollmentTokenCreated", details).await?;
            println!("{token}");
        }
        Command::EnrollmentToken {
            command: TokenCommand::List,
        } => {
            let now = reach_server::time::Micros::now();
            for token in store.list_enrollment_tokens().await? {
                println!("{}", admin::describe_token(&token, now));
            }
        }
        Command::EnrollmentToken {
            command: TokenCommand::Revoke { id },
        } => {
            let token = store
                .revoke_enrollment_token(&id, reach_server::time::Micros::now())
                .await?;
            audit(
                &state,
                &token.tenant_id,
                "EnrollmentTokenRevoked",
                json!({ "tokenId": token.id }),
            )
            .await?;
            println!("enrollment token {} revoked", token.id);
        }
        Command::Actions {
            command: ActionCommand::Pending { app },
        } => {
            for action in admin::pending_actions(store, &app).await? {
                println!(
                    "{}  {}  {}  created {}",
                    action.id,
                    action.machine_id,
                    action.computer_dns_name,
                    action.created.to_wire()
                );
            }
        }
        Command::Actions {
            command: ActionCommand::CancelPending { app, comment },
        } => {
            let app_row = store.get_app(&app).await?;
            let cancelled = admin::cancel_pending(store, &app, &comment).await?;
            let details = json!({ "clientId": app, "cancelled": cancelled });
            audit(
                &state,
                &app_row.tenant_id,
                "PendingActionsCancelled",
                details,
            )
            .await?;
            println!("{} pending actions of app {app} cancelled", cancelled.len());
        }
        Command::Machines {
            command: MachineCommand::Revoke { id },
        } => {
            let machine = store.machine_credential(&id).await?;
            store.revoke_machine(&id).await?;
            let details = json!({ "machineId": id });
            audit(&state, &machine.tenant_id, "MachineRevoked", details).await?;
            println!("machine {id} revoked");
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => match audit::verify(store).await? {
            audit::Verdict::Intact {
                entries,
                first,
                head,
            } => {
                println!("audit trail intact: {entries} entries");
                if let Some((seq, hash)) = head {
                    println!("entries {first} to {seq}; newest entry's hash: {hash}");
                    println!(
                        "Keep the newest hash elsewhere: a trail cut short at its end is still intact."
                    );
                }
            }
            audit::Verdict::Broken { seq, reason } => {
                println!("audit trail BROKEN at entry {seq}: {reason}");
                std::process::exit(1);
            }
        },
        Command::Audit {
            command: AuditCommand::Export { since, tenant },
        } => {
            let since = match since {
                Some(text) => reach_server::time::Micros::parse(&text).with_context(|| {
                    format!("--since '{text}' is not a date-time (e.g. 2026-11-01T00:00:00Z)")
                })?,
                None => reach_server::time::Micros(i64::MIN),
            };
            audit::export(
                store,
                since,
                tenant.as_deref(),
                &mut std::io::stdout().lock(),
            )
            .await?;
        }
        Command::PrintConfig => unreachable!("handled before opening the store"),
    }
    Ok(())
}

async fn serve(mut config: Config, dev_mode: bool, dev_tls: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let pki = if dev_tls {
        let mut hosts = vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "::1".to_string(),
        ];
        if !addr.ip().is_unspecified() {
            hosts.push(addr.ip().to_string());
        }
        let pki = reach_server::tls::dev_pki(&config.data_dir.join("tls"), &hosts)?;
        config.tls.cert_path = pki.cert_path.display().to_string();
        config.tls.key_path = pki.key_path.display().to_string();
        Some(pki)
    } else {
        None
    };
    let state = reach_server::open(config).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let server_stop = shutdown.clone();
    let server = tokio::spawn(reach_server::serve(state.clone(), listener, async move {
        server_stop.cancelled().await
    }));
    let agent = if dev_mode {
        let scheme = if pki.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let ca_file = pki.as_ref().map(|p| p.ca_path.clone());
        let (credentials, agent) =
            dev::start(&state, &url, ca_file, shutdown.child_token()).await?;
        println!(
            "{}",
            dev::instructions(&credentials, &state.config.data_dir, pki.as_ref())
        );
        Some(agent)
    } else {
        None
    };
    let result = server.await.context("server task")?;
    if let Some(agent) = agent {
        let _ = agent.await;
    }
    result
}
