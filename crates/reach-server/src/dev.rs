//! `reach-server --dev`: the newcomer's one command. Creates (once, and
//! reuses after a restart) a tenant, a client app holding every role and an
//! enrollment token; runs a local agent for this machine in the same
//! process; and, once both are ready, writes `<data-dir>/dev-credentials.json`
//! and prints how to call the API with `reach` and with curl.
//!
//! Dev mode is for trying Reach on one machine. It writes the app's secret in
//! clear into the data directory (mode 0600), which production never does.

use std::path::{Path, PathBuf};

use anyhow::Context;
use reach_proto::api::roles;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{SharedState, admin};

/// Contents of `dev-credentials.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DevCredentials {
    /// The server's URL.
    pub server: String,
    /// The dev tenant.
    pub tenant_id: String,
    /// The dev app's client id.
    pub client_id: String,
    /// The dev app's secret.
    pub client_secret: String,
    /// An enrollment token for more agents.
    pub enrollment_token: String,
    /// The local agent's machine.
    pub machine_id: String,
    /// The web console's user, with every role.
    pub console_user: String,
    /// The console user's password (the user is `dev`).
    pub console_password: String,
}

/// What dev mode keeps between restarts (the secrets are only stored hashed in the database).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DevSeed {
    tenant_id: String,
    client_id: String,
    client_secret: String,
    enrollment_token: String,
    /// Absent in seeds written before the console existed: made then.
    #[serde(default)]
    console_user: Option<(String, String)>,
}

/// The console user dev mode creates (with a suffix when another dev
/// tenant on the same database took the name).
pub const CONSOLE_USER: &str = "analyst";

fn seed_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-seed.json")
}

/// Where dev mode writes these credentials.
pub fn credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-credentials.json")
}

async fn seed(state: &SharedState) -> anyhow::Result<DevSeed> {
    let path = seed_path(&state.config.data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let seed: DevSeed =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut seed = seed;
        state
            .store
            .get_app(&seed.client_id)
            .await
            .with_context(|| format!("{} names an app the database does not have; remove the data directory to start over", path.display()))?;
        if seed.console_user.is_none() {
            seed.console_user = Some(console_user(state, &seed.tenant_id).await?);
            crate::data_dir::write_private(&path, serde_json::to_string_pretty(&seed)?.as_bytes())?;
        }
        return Ok(seed);
    }
    let tenant = admin::create_tenant(state.store.as_ref(), "dev").await?;
    let app = admin::create_app(
        state.store.as_ref(),
        &tenant.id,
        "reach-dev",
        roles::ALL.iter().map(|r| r.to_string()).collect(),
    )
    .await?;
    let enrollment_token =
        admin::create_enrollment_token(state.store.as_ref(), &tenant.id, None, None).await?;
    let console = console_user(state, &tenant.id).await?;
    let seed = DevSeed {
        tenant_id: tenant.id,
        client_id: app.client_id,
        client_secret: app.client_secret,
        enrollment_token,
        console_user: Some(console),
    };
    crate::data_dir::write_private(&path, serde_json::to_string_pretty(&seed)?.as_bytes())?;
    Ok(seed)
}

/// Creates the console user with every role; returns its name and password.
async fn console_user(state: &SharedState, tenant_id: &str) -> anyhow::Result<(String, String)> {
    let all: Vec<String> = roles::ALL.iter().map(|r| r.to_string()).collect();
    let store = state.store.as_ref();
    let user = match admin::create_user(
        store,
        tenant_id,
        CONSOLE_USER,
        all.clone(),
        Vec::new(),
        None,
    )
    .await
    {
        Ok(user) => user,
        Err(_) => {
            let name = format!("{CONSOLE_USER}-{}", &tenant_id[..8.min(tenant_id.len())]);
            admin::create_user(store, tenant_id, &name, all, Vec::new(), None)
                .await
                .context("creating the dev console user")?
        }
    };
    Ok((user.name, user.password))
}

/// Prepares dev mode and starts the local agent against `server` (the URL
/// the server listens on), trusting `ca_file` when the server uses dev TLS.
/// Returns once the agent is connected.
pub async fn start(
    state: &SharedState,
    server: &str,
    ca_file: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<(DevCredentials, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let seed = seed(state).await?;
    let agent_dir = state.config.data_dir.join("agent");
    let config = reach_agent::Config {
        state_path: agent_dir.join("state.json"),
        work_dir: Some(agent_dir.join("work")),
        server: Some(server.to_string()),
        ca_file,
        // This agent runs on the machine the developer works on: isolating
        // "the dev device" must not cut that machine off.
        nft_command: Vec::new(),
        ..reach_agent::Config::default()
    };
    let existing = reach_agent::State::load(&config.state_path).ok();
    let known = match &existing {
        Some(existing) => state
            .store
            .machine_credential(&existing.machine_id)
            .await
            .is_ok(),
        None => false,
    };
    let agent_state = match existing {
        Some(existing) if known => existing,
        _ => reach_agent::enroll(server, &seed.enrollment_token, &config)
            .await
            .context("enrolling the local agent")?,
    };
    let agent = tokio::spawn(reach_agent::run(config, shutdown));
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        state.hub.wait_connected(&agent_state.machine_id),
    )
    .await
    .context("the local agent did not connect within 30 s")?;
    let credentials = DevCredentials {
        server: server.to_string(),
        tenant_id: seed.tenant_id,
        client_id: seed.client_id,
        client_secret: seed.client_secret,
        enrollment_token: seed.enrollment_token,
        machine_id: agent_state.machine_id,
        console_user: seed.console_user.clone().unwrap_or_default().0,
        console_password: seed.console_user.unwrap_or_default().1,
    };
    crate::data_dir::write_private(
        &credentials_path(&state.config.data_dir),
        serde_json::to_string_pretty(&credentials)?.as_bytes(),
    )?;
    Ok((credentials, agent))
}

/// The ready-to-paste instructions printed at start; `tls` is the dev PKI when serving HTTPS.
pub fn instructions(
    c: &DevCredentials,
    data_dir: &Path,
    tls: Option<&crate::tls::DevPki>,
) -> String {
    let (cacert, tls_note) = match tls {
        Some(pki) => (
            format!(" --cacert {}", pki.ca_path.display()),
            format!(
                "\n  HTTPS with a dev CA: {}\n  CA SHA-256 fingerprint: {}\n  (agents pin it with --ca-file; the reach CLI trusts it with REACH_CA_FILE)\n",
                pki.ca_path.display(),
                pki.ca_fingerprint
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"
Reach is running in dev mode.
  web console:       {server}/   (user {user}, password {password})
  server:            {server}
  tenant id:         {tenant}
  client id:         {client}
  client secret:     {secret}
  enrollment token:  {token}   (dev only: never expires, any number of uses;
                     elsewhere `reach-server enrollment-token create --expires 24h --uses N`)
  local machine id:  {machine}
  (saved in {creds})
{tls_note}
Run a command on this machine with the CLI:
  export REACH_SERVER={server} REACH_TENANT_ID={tenant} REACH_CLIENT_ID={client} REACH_CLIENT_SECRET={secret}
  cargo run -p reach-cli -- library upload examples/hello.sh
  cargo run -p reach-cli -- run {machine} --script hello.sh --args "'from reach'" --get-file /etc/hostname --out ./collected

Or with curl:
  TOKEN=$(curl -s{cacert} -X POST {server}/{tenant}/oauth2/v2.0/token \
    -d grant_type=client_credentials -d client_id={client} -d client_secret={secret} \
    -d scope=https://api.securitycenter.microsoft.com/.default | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s{cacert} -H "Authorization: Bearer $TOKEN" {server}/api/machines
"#,
        server = c.server,
        tenant = c.tenant_id,
        client = c.client_id,
        secret = c.client_secret,
        token = c.enrollment_token,
        machine = c.machine_id,
        user = c.console_user,
        password = c.console_password,
        creds = credentials_path(data_dir).display(),
    )
}
