//! The scenarios: idle, dispatch, fanout, getfile and output. Each prints a readable
//! report and, as its last line, one JSON object with the figures.
//! One file per scenario; this file holds what they share: where the server
//! is (`Target`), the servers a run starts (`Servers`), the simulated fleet,
//! outcome tracking and the report.

mod dispatch;
mod fanout;
mod getfile;
mod idle;
mod output;

pub use dispatch::dispatch;
pub use fanout::fanout;
pub use getfile::getfile;
pub use idle::idle;
pub use output::output;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use reach_client::{Client, LibraryUpload};
use reach_proto::api::{Command, CommandType, RunLiveResponseRequest};
use serde_json::json;

use crate::agents::{Event, Workers};
use crate::server::{Seed, ServerProcess};

/// Where the server is.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// PostgreSQL for the server(s) the bench starts (default: SQLite).
    #[arg(long, default_value = "")]
    pub database_url: String,
    /// Use a running server instead: a JSON file with url, tenant_id,
    /// client_id, client_secret and enrollment_token (loopback only).
    #[arg(long)]
    pub seed: Option<PathBuf>,
    /// With --seed: the running server's process id, so that its memory and
    /// CPU are measured too.
    #[arg(long, requires = "seed")]
    pub server_pid: Option<u32>,
}

/// The servers of a run: the ones the bench started (to measure), or none.
pub(crate) struct Servers {
    pub(crate) nodes: Vec<ServerProcess>,
    pub(crate) seed: Seed,
    pub(crate) urls: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Servers {
    pub(crate) async fn start(target: &Target, nodes: usize) -> anyhow::Result<Self> {
        if let Some(path) = &target.seed {
            let seed: Seed = serde_json::from_str(&std::fs::read_to_string(path)?)
                .with_context(|| format!("reading {}", path.display()))?;
            let host = url::Url::parse(&seed.url)?;
            let loopback = host
                .host_str()
                .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback());
            if !loopback {
                bail!("reach-bench only targets loopback addresses (127.0.0.0/8, ::1)");
            }
            return Ok(Self {
                nodes: Vec::new(),
                urls: vec![seed.url.clone()],
                seed,
                _dirs: Vec::new(),
            });
        }
        if nodes > 1 && target.database_url.is_empty() {
            bail!("--nodes {nodes} needs --database-url postgres://... (nodes share the database)");
        }
        let mut dirs = Vec::new();
        let mut started: Vec<ServerProcess> = Vec::new();
        for _ in 0..nodes {
            let dir = tempfile::tempdir()?;
            let node = match started.first() {
                None => ServerProcess::start(&dir.path().join("data"), &target.database_url)?,
                Some(first) => ServerProcess::join(
                    &dir.path().join("data"),
                    &target.database_url,
                    &first.seed,
                )?,
            };
            started.push(node);
            dirs.push(dir);
        }
        let seed = started[0].seed.clone();
        Ok(Self {
            urls: started.iter().map(|n| n.seed.url.clone()).collect(),
            nodes: started,
            seed,
            _dirs: dirs,
        })
    }

    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.seed.url)
            .login(
                &self.seed.tenant_id,
                &self.seed.client_id,
                &self.seed.client_secret,
            )
            .await?)
    }

    fn rss(&self) -> anyhow::Result<Vec<u64>> {
        self.nodes.iter().map(|n| n.rss()).collect()
    }

    fn cpu(&self) -> anyhow::Result<Vec<f64>> {
        self.nodes.iter().map(|n| n.cpu_seconds()).collect()
    }
}

/// Percentiles of samples in milliseconds.
pub(crate) fn percentiles(mut samples: Vec<f64>) -> serde_json::Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((samples.len() as f64) * q).ceil() as usize;
        samples[rank.clamp(1, samples.len()) - 1]
    };
    let round = |v: f64| (v * 100.0).round() / 100.0;
    json!({
        "p50": round(at(0.50)),
        "p95": round(at(0.95)),
        "p99": round(at(0.99)),
        "max": round(at(1.0)),
    })
}

pub(crate) fn report(lines: &[String], figures: serde_json::Value) {
    for line in lines {
        println!("{line}");
    }
    println!("{figures}");
}

pub(crate) fn mib(bytes: f64) -> f64 {
    (bytes / 1024.0 / 1024.0 * 10.0).round() / 10.0
}

fn database_name(target: &Target) -> &'static str {
    if target.database_url.is_empty() {
        "sqlite"
    } else {
        "postgres"
    }
}

/// Every machine id, paging through the API.
async fn machine_ids(client: &Client, expected: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    loop {
        let skip = ids.len().to_string();
        let page = client
            .machines(&[("$top", "10000"), ("$skip", skip.as_str())])
            .await?;
        if page.value.is_empty() {
            break;
        }
        ids.extend(page.value.into_iter().map(|m| m.id));
    }
    if ids.len() < expected {
        bail!("{} machines are enrolled, expected {expected}", ids.len());
    }
    Ok(ids)
}

/// A server with `count` connected agents, a logged-in client, the script
/// the actions run, and every machine id.
async fn fleet(
    target: &Target,
    count: usize,
) -> anyhow::Result<(Servers, Workers, Client, Arc<Vec<String>>)> {
    fleet_on(target, count, 1).await
}

/// `fleet` on `nodes` server nodes (several need PostgreSQL), the agents
/// spread over them.
async fn fleet_on(
    target: &Target,
    count: usize,
    nodes: usize,
) -> anyhow::Result<(Servers, Workers, Client, Arc<Vec<String>>)> {
    let servers = Servers::start(target, nodes).await?;
    let mut workers = Workers::start(&servers.urls, &servers.seed.enrollment_token, count)?;
    workers.wait_connected(count).await?;
    let client = servers.client().await?;
    client
        .upload_library_file(LibraryUpload::bytes("bench.sh", b"true\n".to_vec()))
        .await?;
    let machines = Arc::new(machine_ids(&client, count).await?);
    Ok((servers, workers, client, machines))
}

fn script_request() -> RunLiveResponseRequest {
    RunLiveResponseRequest {
        commands: Some(vec![Command::new(
            CommandType::RunScript,
            &[("ScriptName", "bench.sh")],
        )]),
        comment: Some("reach-bench".into()),
    }
}

enum Outcome {
    Sent,
    Awaited(tokio::sync::oneshot::Sender<()>),
}

/// Outcomes the agents have sent, so a lane polls the API only once its
/// agent has answered (polling from submit on would flood the server it
/// measures with reads).
#[derive(Clone, Default)]
struct Outcomes(Arc<std::sync::Mutex<HashMap<String, Outcome>>>);

impl Outcomes {
    fn sent(&self, action: String) {
        let mut map = self.0.lock().expect("outcomes lock");
        match map.remove(&action) {
            Some(Outcome::Awaited(waiter)) => {
                let _ = waiter.send(());
            }
            _ => {
                map.insert(action, Outcome::Sent);
            }
        }
    }

    /// Waits until the agent has sent `action`'s outcome (at most `limit`).
    async fn wait(&self, action: &str, limit: Duration) {
        let receiver = {
            let mut map = self.0.lock().expect("outcomes lock");
            if let Some(Outcome::Sent) = map.remove(action) {
                return;
            }
            let (waiter, receiver) = tokio::sync::oneshot::channel();
            map.insert(action.to_string(), Outcome::Awaited(waiter));
            receiver
        };
        let _ = tokio::time::timeout(limit, receiver).await;
    }
}

/// Follows the workers' events: when each command reached its agent (the
/// handle's result) and which outcomes were sent (`Outcomes`).
fn receive_times(
    mut workers: Workers,
) -> (
    tokio::task::JoinHandle<HashMap<String, i64>>,
    tokio::sync::oneshot::Sender<()>,
    Outcomes,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let outcomes = Outcomes::default();
    let sent = outcomes.clone();
    let handle = tokio::spawn(async move {
        let mut seen = HashMap::new();
        loop {
            tokio::select! {
                event = workers.events.recv() => match event {
                    Some(Event::Run { action, at_us }) => { seen.insert(action, at_us); }
                    Some(Event::Finished { action, .. }) => sent.sent(action),
                    Some(_) => {}
                    None => break,
                },
                _ = &mut stopped => break,
            }
        }
        // Keep the workers (and their agents) alive until here.
        drop(workers);
        seen
    });
    (handle, stop, outcomes)
}
