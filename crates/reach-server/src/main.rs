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
    /// Manage enrolled machines.
    Machines {
        #[command(subcommand)]
        command: MachineCommand,
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
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an enrollment token for agents.
    Create {
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum MachineCommand {
    /// Revoke a machine's credential; its agent is disconnected and cannot reconnect.
    Revoke { id: String },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
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
                },
        } => {
            let roles = admin::parse_roles(&roles)?;
            let tenant = tenant_or_only(&state, tenant).await?;
            let app = admin::create_app(store, &tenant, &name, roles).await?;
            let details = json!({ "clientId": app.client_id, "name": name, "roles": app.roles });
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
                },
        } => {
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
            let user = admin::create_user(store, &tenant, &name, roles, password).await?;
            let details = json!({ "name": user.name, "roles": user.roles });
            audit(&state, &tenant, "UserCreated", details).await?;
            println!("tenant id: {}", user.tenant_id);
            println!("user:      {}", user.name);
            if !password_stdin {
                println!("password:  {}", user.password);
                println!("The password is shown only now; it is stored hashed.");
            }
            println!("roles:     {}", user.roles.join(","));
        }
        Command::EnrollmentToken {
            command: TokenCommand::Create { tenant },
        } => {
            let tenant = tenant_or_only(&state, tenant).await?;
            let token = admin::create_enrollment_token(store, &tenant).await?;
            audit(&state, &tenant, "EnrollmentTokenCreated", json!({})).await?;
            println!("{token}");
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
