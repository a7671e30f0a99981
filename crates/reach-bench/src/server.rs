//! The server under test. By default reach-bench starts one itself: its own
//! executable in `serve` mode, a separate process running reach-server's
//! code (built with the same profile), listening on 127.0.0.1:0 with a fresh
//! data directory, a tenant, an app holding every role, an enrollment token,
//! and rate limits raised out of the way. Its RSS and CPU time are read from
//! /proc. It never listens anywhere but loopback.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};
use reach_proto::api::roles;
use serde::{Deserialize, Serialize};

/// What a started server tells the bench, as one JSON line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seed {
    pub url: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub enrollment_token: String,
    /// A console user (read-only) and its password, for sign-in floods.
    #[serde(default)]
    pub console_user: String,
    #[serde(default)]
    pub console_password: String,
}

/// A server process started by the bench; stopped when dropped.
pub struct ServerProcess {
    child: Child,
    pub seed: Seed,
}

impl ServerProcess {
    /// Starts `reach-bench serve` in `data_dir` (`database_url` empty: SQLite).
    pub fn start(data_dir: &Path, database_url: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding reach-bench's own executable")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--database-url")
            .arg(database_url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the server process")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the server's address")?;
        if line.trim().is_empty() {
            let _ = child.kill();
            bail!("the server exited before it was ready");
        }
        let seed: Seed = serde_json::from_str(line.trim()).context("parsing the server's seed")?;
        Ok(Self { child, seed })
    }

    /// Another node of the same cluster (same database), sharing the first's seed.
    pub fn join(data_dir: &Path, database_url: &str, first: &Seed) -> anyhow::Result<Self> {
        let mut node = Self::start(data_dir, database_url)?;
        let url = node.seed.url.clone();
        node.seed = first.clone();
        node.seed.url = url;
        Ok(node)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        rss(self.pid())
    }

    /// Peak resident memory so far, in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        status_kib(self.pid(), "VmHWM:").map(|kib| kib * 1024)
    }

    /// CPU time used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid())
    }
}

/// Resident memory of process `pid` now, in bytes.
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

/// CPU time process `pid` used so far (user + system), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").context("parsing /proc/pid/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("{field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("a number")?
        .parse()?)
}

fn clock_ticks() -> f64 {
    // Linux's USER_HZ is 100 on every architecture Reach targets.
    100.0
}

/// `reach-bench serve`: runs a server for the bench until stdin closes.
pub async fn serve(data_dir: &Path, database_url: &str) -> anyhow::Result<()> {
    // As reach-server's main does, so that the bench measures the same process.
    reach_server::process::harden();
    let mut config = reach_server::Config {
        data_dir: data_dir.to_path_buf(),
        database_url: database_url.to_string(),
        ..reach_server::Config::default()
    };
    // The bench measures Reach, not Defender's quotas.
    config.limits.run_live_response_per_minute = 100_000_000;
    config.limits.batches_per_minute = 100_000_000;
    config.limits.api_per_minute = 100_000_000;
    config.limits.api_per_hour = 1_000_000_000;
    config.limits.active_actions_per_tenant = 1_000_000;
    config.limits.token_per_minute_per_address = 100_000_000;
    config.limits.sign_in_per_minute_per_address = 100_000_000;
    config.limits.enroll_per_minute_per_address = 100_000_000;
    config.limits.download_per_minute_per_address = 100_000_000;
    // Thousands of simulated agents enrol and upload from each loopback address.
    config.http.max_connections_per_address = 1_000_000;
    config.http.max_api_connections = 1_000_000;
    // REACH_* variables set for the bench reach its server too, so that a
    // run can compare one setting's two values with one binary.
    config.apply_env(std::env::vars())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let state = reach_server::open(config).await?;
    let store = state.store.as_ref();
    let tenants = store.list_tenants().await?;
    let tenant = match tenants.into_iter().next() {
        Some(tenant) => tenant,
        None => reach_server::admin::create_tenant(store, "bench").await?,
    };
    let all = roles::ALL.iter().map(|r| r.to_string()).collect();
    let app = reach_server::admin::create_app(store, &tenant.id, "reach-bench", all).await?;
    let enrollment_token =
        reach_server::admin::create_enrollment_token(store, &tenant.id, None, None).await?;
    let user = reach_server::admin::create_user(
        store,
        &tenant.id,
        &format!("bench-{:016x}", rand::random::<u64>()),
        vec![roles::READ.to_string()],
        Vec::new(),
        None,
    )
    .await?;
    let seed = Seed {
        console_user: user.name,
        console_password: user.password,
        url,
        tenant_id: tenant.id,
        client_id: app.client_id,
        client_secret: app.client_secret,
        enrollment_token,
    };
    println!("{}", serde_json::to_string(&seed)?);
    let stop = async {
        // The bench holds our stdin; when it goes away, so do we.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
    };
    reach_server::serve(state, listener, stop).await
}
