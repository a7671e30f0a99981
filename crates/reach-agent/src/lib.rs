//! reach-agent: runs on a device, holds one WebSocket to reach-server, and
//! runs the live response commands it is given (PutFile, RunScript,
//! GetFile), one at a time, streaming files over HTTP.
//!
//! `enroll` trades an enrollment token for a machine identity kept in a state
//! file (0600); `run(config, shutdown)` connects and reconnects with jittered
//! backoff until `shutdown` is cancelled. This crate must never link sqlx,
//! axum or object_store, and never logs credentials or file contents.

pub mod collect;
pub mod commands;
pub mod connection;
pub mod containment;
pub mod executor;
pub mod isolation;
pub mod live_output;
pub mod offboard;
pub mod outbox;
pub mod quarantine;
pub mod system;
pub mod tls;

use std::path::{Path, PathBuf};

use anyhow::Context;
use reach_client::AgentClient;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The documented example agent config, with every default.
pub const EXAMPLE_CONFIG: &str = include_str!("../reach-agent.example.toml");

/// The agent's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// State file holding the machine id and credential.
    pub state_path: PathBuf,
    /// Working folder for PutFile and scripts; emptied at start. Default:
    /// `work/` beside the state file.
    pub work_dir: Option<PathBuf>,
    /// Server URL, overriding the one recorded at enrolment.
    pub server: Option<String>,
    /// Several server URLs (the nodes of a cluster, in order of preference):
    /// when the one in use fails, the agent moves to the next. Empty: only
    /// `server` (or the URL recorded at enrolment). One load-balancer URL
    /// needs no list.
    pub servers: Vec<String>,
    /// Trust only this CA (PEM) for the server's certificate. Default: the
    /// platform's root certificates.
    pub ca_file: Option<PathBuf>,
    /// Allow plain http to a server that is not on loopback.
    pub insecure_http: bool,
    /// Most bytes of stdout and of stderr kept per script.
    pub output_cap_bytes: usize,
    /// First reconnect delay, in milliseconds; doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// The longest reconnect delay, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Ed25519 public keys (base64) library files must be signed by before
    /// this agent puts or runs them. Empty: no signature is needed.
    pub trusted_keys: Vec<String>,
    /// Let GetFile collect devices, FIFOs and sockets (regular files only otherwise).
    pub allow_special_files: bool,
    /// Accept library signatures of the first format, which cover only the
    /// file's SHA-256 (not its name nor its use).
    pub accept_v1_signatures: bool,
    /// The `nft` command network isolation runs, program first (Linux).
    /// Empty: this agent never isolates its device, and Isolate fails
    /// saying so.
    pub nft_command: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_path: default_state_path(),
            work_dir: None,
            server: None,
            servers: Vec::new(),
            ca_file: None,
            insecure_http: false,
            output_cap_bytes: 10 * 1024 * 1024,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
            trusted_keys: Vec::new(),
            allow_special_files: false,
            accept_v1_signatures: false,
            nft_command: vec!["nft".into()],
        }
    }
}

fn default_state_path() -> PathBuf {
    if cfg!(windows) {
        PathBuf::from(r"C:\ProgramData\Reach\agent\state.json")
    } else {
        PathBuf::from("/var/lib/reach-agent/state.json")
    }
}

impl Config {
    /// Results waiting for the server: `outbox/` beside the state file.
    pub fn outbox_dir(&self) -> PathBuf {
        self.state_path
            .parent()
            .unwrap_or(Path::new("."))
            .join("outbox")
    }

    /// Where PutFile puts files and scripts run: `work_dir`, or `work` beside the state file.
    pub fn work_dir(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| {
            self.state_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("work")
        })
    }
}

/// What enrolment produced; kept in the state file.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The server it enrolled with.
    pub server: String,
    /// Its machine id.
    pub machine_id: String,
    /// Its secret (never logged).
    pub credential: String,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("server", &self.server)
            .field("machine_id", &self.machine_id)
            .field("credential", &"<redacted>")
            .finish()
    }
}

impl State {
    /// Reads the state file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading agent state {}; enroll first with `reach-agent enroll`",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes the state file with owner-only permissions.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        reach_client::private_file::write_private(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// `<machine_id>.<secret>`, as sent in `Authorization: Bearer`.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.machine_id, self.credential)
    }
}

/// Enrolls this device with `server` and writes the state file named by
/// `config` (whose TLS settings apply).
pub async fn enroll(server: &str, token: &str, config: &Config) -> anyhow::Result<State> {
    tls::check_server_url(server, config.insecure_http)?;
    let tls = tls::client_config(config.ca_file.as_deref())?;
    let state_path = &config.state_path;
    let response = AgentClient::enroll(server, token, system::machine_info(), Some(tls))
        .await
        .context("enrolling with the server")?;
    let state = State {
        server: server.trim_end_matches('/').to_string(),
        machine_id: response.machine_id,
        credential: response.credential,
    };
    state.save(state_path)?;
    // A device offboarded before is enrolled again.
    let _ = std::fs::remove_file(offboard::note_path(state_path));
    tracing::info!(machine.id = %state.machine_id, "enrolled");
    Ok(state)
}

/// Runs the agent until `shutdown` is cancelled, or until its machine is
/// offboarded (it then deletes its credential and returns).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(when) = offboard::offboarded(&config) {
        tracing::warn!(offboarded = %when, "this device was offboarded; enroll it again (reach-agent enroll) to use it");
        return Ok(());
    }
    let mut state = State::load(&config.state_path)?;
    if let Some(server) = &config.server {
        state.server = server.trim_end_matches('/').to_string();
    }
    let servers: Vec<String> = if config.servers.is_empty() {
        vec![state.server.clone()]
    } else {
        config
            .servers
            .iter()
            .map(|s| s.trim_end_matches('/').to_string())
            .collect()
    };
    for server in &servers {
        tls::check_server_url(server, config.insecure_http)?;
    }
    let tls = tls::client_config(config.ca_file.as_deref())?;
    let trusted_keys = config
        .trusted_keys
        .iter()
        .map(|key| reach_client::signing::TrustedKey::parse(key))
        .collect::<Result<Vec<_>, _>>()
        .context("reading trusted_keys")?;
    if !trusted_keys.is_empty() {
        tracing::info!(
            keys = trusted_keys.len(),
            "library files must be signed by a trusted key"
        );
    }
    // Absolute, so that scripts and their working directory agree whatever
    // the agent's own current directory is.
    let work_dir =
        std::path::absolute(config.work_dir()).context("resolving the working folder")?;
    empty_dir(&work_dir)?;
    let outbox = std::sync::Arc::new(outbox::Outbox::open(&config.outbox_dir())?);
    let client = AgentClient::new(&servers[0], &state.bearer(), Some(tls.clone()));
    let live = std::sync::Arc::new(live_output::LiveOutput::default());
    let isolation = std::sync::Arc::new(commands::isolate::Isolation::new(
        (!config.nft_command.is_empty())
            .then(|| isolation::Nft::with_command(config.nft_command.clone())),
        &config.state_path,
        servers.clone(),
        std::sync::Arc::new(tls.clone()),
    ));
    // Before the first connection: a device isolated stays isolated.
    isolation.restore().await;
    let context = commands::Context {
        client: client.clone(),
        work_dir,
        output_cap_bytes: config.output_cap_bytes,
        trusted_keys,
        allow_special_files: config.allow_special_files,
        accept_v1_signatures: config.accept_v1_signatures,
        containment: containment::Containment::open(
            config.state_path.parent().unwrap_or(Path::new(".")),
            &state.machine_id,
        ),
        live: live.clone(),
        isolation: isolation.clone(),
        state_path: config.state_path.clone(),
        machine_id: state.machine_id.clone(),
    };
    let executor = executor::Executor::start(context.clone(), outbox.clone());
    let responses = executor::Executor::start(context, outbox.clone());
    let parts = connection::Parts {
        state: &state,
        instance: format!("{:032x}", rand::random::<u128>()),
        servers: &servers,
        client: &client,
        executor: &executor,
        responses: &responses,
        outbox: &outbox,
        live: &live,
        isolation: &isolation,
        tls: std::sync::Arc::new(tls),
        shutdown: &shutdown,
    };
    let ended = connection::run(&config, &parts).await;
    executor.stop();
    responses.stop();
    if ended == connection::Ended::Offboarded {
        offboard::leave(&config, &isolation).await?;
    }
    Ok(())
}

/// Empties (or creates) the working folder.
fn empty_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_to_the_defaults() {
        let parsed: Config = toml::from_str(EXAMPLE_CONFIG).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn state_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let state = State {
            server: "http://127.0.0.1:1".into(),
            machine_id: "a".repeat(40),
            credential: "secret".into(),
        };
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        assert!(!format!("{state:?}").contains("secret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
