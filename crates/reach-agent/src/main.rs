//! `reach-agent`: `enroll` this device with a server, then `run`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use reach_agent::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "reach-agent", version, about = "Reach live response agent")]
struct Cli {
    /// Agent config file (TOML). Every key is optional.
    #[arg(long, global = true, env = "REACH_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// State file with this device's identity.
    #[arg(long, global = true, env = "REACH_AGENT_STATE")]
    state: Option<PathBuf>,
    /// Trust only this CA (PEM) for the server's certificate.
    #[arg(long, global = true, env = "REACH_AGENT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Allow plain http to a server that is not on loopback.
    #[arg(long, global = true)]
    insecure_http: bool,
    /// An Ed25519 public key (base64) library files must be signed by before
    /// this agent puts or runs them; repeat it, or separate keys by commas.
    /// Added to the config's `trusted_keys`.
    #[arg(
        long = "trusted-key",
        global = true,
        env = "REACH_AGENT_TRUSTED_KEYS",
        value_delimiter = ','
    )]
    trusted_keys: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this device with a server, using an enrollment token.
    Enroll {
        #[arg(long, env = "REACH_AGENT_SERVER")]
        server: String,
        #[arg(long, env = "REACH_AGENT_ENROLLMENT_TOKEN")]
        token: String,
    },
    /// Connect to the server and run live response commands until stopped.
    Run {
        /// Server URL, overriding the one recorded at enrolment. Repeat it
        /// (or separate URLs by commas) for the nodes of a cluster: the agent
        /// moves to the next when one fails.
        #[arg(long = "server", env = "REACH_AGENT_SERVER", value_delimiter = ',')]
        servers: Vec<String>,
    },
    /// Print the example agent config.
    PrintConfig,
    /// Break-glass: remove this device's network isolation now, whatever
    /// the server says (as root, on the device, from its console).
    ReleaseIsolation,
    /// List the files StopAndQuarantineFile quarantined; with an id, put
    /// that one back where it was, with its mode and owner.
    RestoreQuarantine {
        /// The quarantined file to put back (as listed).
        id: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REACH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<Config>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(state) = cli.state {
        config.state_path = state;
    }
    if cli.ca_file.is_some() {
        config.ca_file = cli.ca_file;
    }
    config.insecure_http |= cli.insecure_http;
    config.trusted_keys.extend(cli.trusted_keys);
    match cli.command {
        Command::Enroll { server, token } => {
            let state = reach_agent::enroll(&server, &token, &config).await?;
            println!(
                "enrolled as machine {} (state in {})",
                state.machine_id,
                config.state_path.display()
            );
        }
        Command::Run { mut servers } => {
            match servers.len() {
                0 => {}
                1 => config.server = servers.pop(),
                _ => config.servers = servers,
            }
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                stop.cancel();
            });
            reach_agent::run(config, shutdown).await?;
        }
        Command::PrintConfig => print!("{}", reach_agent::EXAMPLE_CONFIG),
        Command::RestoreQuarantine { id } => {
            let vault = reach_agent::quarantine::Vault::open(&config.state_path);
            match id {
                Some(id) => {
                    let entry = vault.restore(&id)?;
                    println!("restored {} (SHA-1 {})", entry.original_path, entry.sha1);
                }
                None => {
                    let entries = vault.list()?;
                    if entries.is_empty() {
                        println!("nothing is quarantined");
                    }
                    for entry in entries {
                        println!(
                            "{}\t{}\t{}\taction {}",
                            entry.id, entry.sha1, entry.original_path, entry.action_id
                        );
                    }
                }
            }
        }
        Command::ReleaseIsolation => {
            // The rules through the configured nft (plain `nft` where the
            // configuration turned isolation off), then the record that
            // would put them back at the agent's next start.
            let nft = match config.nft_command.is_empty() {
                true => reach_agent::isolation::Nft::default(),
                false => reach_agent::isolation::Nft::with_command(config.nft_command.clone()),
            };
            let record = reach_agent::commands::isolate::record_path(&config.state_path);
            let released = reach_agent::commands::isolate::release(Some(&nft), &record)
                .await
                .map_err(|failure| anyhow::anyhow!(failure.message))
                .context("releasing the isolation")?;
            if released {
                println!("isolation released: this device's network is open again");
            } else {
                println!("this device was not isolated");
            }
        }
    }
    Ok(())
}
