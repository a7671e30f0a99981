//! `reach-server`: runs the server (`--dev` for the zero-setup mode) and its
//! administrative subcommands.

mod operator;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use reach_server::{Config, config, dev};
use tokio_util::sync::CancellationToken;

use operator::Command;

#[global_allocator]
static ALLOCATOR: reach_server::Allocator = reach_server::Allocator {};

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
        Some(command) => operator::administer(config, command).await,
    }
}

async fn serve(mut config: Config, dev_mode: bool, dev_tls: bool) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Off loopback, dev mode serves HTTPS with its own CA: its agent (and
    // any other) never sends a credential in clear over a network.
    let automatic_tls =
        dev_mode && !dev_tls && !addr.ip().is_loopback() && config.tls.cert_path.is_empty();
    if automatic_tls {
        eprintln!(
            "--dev listening off loopback ({addr}): serving HTTPS with a CA made for this data directory"
        );
    }
    let dev_tls = dev_tls || automatic_tls;
    let pki = if dev_tls {
        let mut hosts = vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "::1".to_string(),
        ];
        if addr.ip().is_unspecified() {
            // Every address clients may come to.
            let info = reach_agent::system::machine_info();
            hosts.extend(info.ip_addresses.into_iter().map(|a| a.ip_address));
        } else {
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
        // The local agent comes over loopback when the server listens on
        // every address, else to the address it listens on.
        let to = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
            }
            _ => addr,
        };
        let url = format!("{scheme}://{to}");
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
