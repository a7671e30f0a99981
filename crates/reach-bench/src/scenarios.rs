//! The scenarios: idle, dispatch, fanout and getfile. Each prints a readable
//! report and, as its last line, one JSON object with the figures.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reach_client::{Client, LibraryUpload};
use reach_proto::api::{ActionStatus, Command, CommandType, RunLiveResponseRequest};
use serde_json::json;

use crate::agents::{Event, Workers, now_us};
use crate::server::{self, Seed, ServerProcess};

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

pub async fn idle(
    target: &Target,
    count: usize,
    nodes: usize,
    idle_secs: u64,
) -> anyhow::Result<()> {
    let servers = Servers::start(target, nodes).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = servers.rss()?;
    let started = Instant::now();
    let mut workers = Workers::start(&servers.urls, &servers.seed.enrollment_token, count)?;
    workers.wait_connected(count).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // Let connection bookkeeping and the first heartbeats settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let loaded = servers.rss()?;
    let cpu_before = servers.cpu()?;
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cpu_after = servers.cpu()?;
    let elapsed = measured.elapsed().as_secs_f64();
    let per_node: Vec<serde_json::Value> = (0..servers.nodes.len())
        .map(|i| {
            let agents_here = count / nodes + usize::from(i < count % nodes);
            let grown = loaded[i].saturating_sub(base[i]) as f64;
            json!({
                "rss_base_bytes": base[i],
                "rss_bytes": loaded[i],
                "rss_per_agent_bytes": (grown / agents_here.max(1) as f64).round(),
                "idle_cpu_percent": ((cpu_after[i] - cpu_before[i]) / elapsed * 1000.0).round() / 10.0,
            })
        })
        .collect();
    let total_grown: f64 = loaded
        .iter()
        .zip(&base)
        .map(|(l, b)| l.saturating_sub(*b) as f64)
        .sum();
    let per_agent = (total_grown / count.max(1) as f64).round();
    let worst_cpu = per_node
        .iter()
        .filter_map(|n| n["idle_cpu_percent"].as_f64())
        .fold(0.0, f64::max);
    report(
        &[
            format!(
                "idle: {count} agents on {nodes} node(s), database {}",
                database_name(target)
            ),
            format!(
                "  all connected in {connect_secs:.2} s ({:.0} agents/s)",
                count as f64 / connect_secs
            ),
            format!(
                "  server RSS per connected agent: {per_agent} bytes ({:.1} KiB)",
                per_agent / 1024.0
            ),
            format!(
                "  server CPU while idle: {worst_cpu} % of one core (busiest node, over {idle_secs} s)"
            ),
        ],
        json!({
            "scenario": "idle",
            "agents": count,
            "nodes": nodes,
            "database": database_name(target),
            "connect_secs": (connect_secs * 100.0).round() / 100.0,
            "rss_per_agent_bytes": per_agent,
            "idle_cpu_percent": worst_cpu,
            "per_node": per_node,
        }),
    );
    Ok(())
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
    let servers = Servers::start(target, 1).await?;
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

/// Outcomes the agents have sent, so a lane polls the API only once its
/// agent has answered (polling from submit on would flood the server it
/// measures with reads).
#[derive(Clone, Default)]
struct Outcomes(Arc<std::sync::Mutex<HashMap<String, Outcome>>>);

enum Outcome {
    Sent,
    Awaited(tokio::sync::oneshot::Sender<()>),
}

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

pub async fn dispatch(
    target: &Target,
    count: usize,
    actions: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (servers, workers, client, machines) = fleet(target, count).await?;
    let concurrency = concurrency.clamp(1, count.max(1));
    let generator = workers.generator_pids();
    let generator_cpu =
        || -> anyhow::Result<f64> { generator.iter().map(|pid| server::cpu_seconds(*pid)).sum() };
    let (receiver, stop, outcomes) = receive_times(workers);
    let cpu_before: f64 = servers.cpu()?.iter().sum();
    let generator_before = generator_cpu()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..concurrency {
        let client = client.clone();
        let machines = machines.clone();
        let outcomes = outcomes.clone();
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            // Each lane has its own machines (every concurrency-th), so one is never busy twice.
            let mine: Vec<&String> = machines.iter().skip(lane).step_by(concurrency).collect();
            let mut next = lane;
            let mut turn = 0;
            while next < actions {
                let machine = mine[turn % mine.len()];
                let submitted = now_us();
                let created = client.run_live_response(machine, &script_request()).await?;
                // Poll once the agent has answered (or after 10 s without a
                // word), then ever less often: an eighth of the time waited
                // (1 to 20 ms), so polling adds at most 1/8 to a latency
                // without flooding the server it measures.
                outcomes.wait(&created.id, Duration::from_secs(10)).await;
                let answered = Instant::now();
                let done = loop {
                    let action = client.action(&created.id).await?;
                    if action.status.is_final() {
                        break action;
                    }
                    let pause = (answered.elapsed() / 8)
                        .clamp(Duration::from_millis(1), Duration::from_millis(20));
                    tokio::time::sleep(pause).await;
                };
                if done.status != ActionStatus::Succeeded {
                    bail!("action {} ended {}", done.id, done.status);
                }
                results.push((created.id, submitted, now_us()));
                next += concurrency;
                turn += 1;
            }
            Ok::<_, anyhow::Error>(results)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ms = (servers.cpu()?.iter().sum::<f64>() - cpu_before) * 1000.0;
    let cpu_per_action = cpu_ms / results.len().max(1) as f64;
    let generator_per_action =
        (generator_cpu()? - generator_before) * 1000.0 / results.len().max(1) as f64;
    let _ = stop.send(());
    let received = receiver.await?;
    let mut to_agent = Vec::new();
    let mut to_done = Vec::new();
    for (id, submitted, done) in &results {
        if let Some(at) = received.get(id) {
            to_agent.push((at - submitted) as f64 / 1000.0);
        }
        to_done.push((done - submitted) as f64 / 1000.0);
    }
    let receive = percentiles(to_agent);
    let succeeded = percentiles(to_done);
    let rate = results.len() as f64 / elapsed;
    report(
        &[
            format!(
                "dispatch: {} actions over {count} agents, {concurrency} in flight, database {}",
                results.len(),
                database_name(target)
            ),
            format!("  submit -> agent has the command (ms): {receive}"),
            format!("  submit -> Succeeded through the API (ms): {succeeded}"),
            format!("  {rate:.0} actions completed per second"),
            format!("  server CPU per action: {cpu_per_action:.2} ms (all nodes; user + system)"),
            format!(
                "  load generator CPU per action: {generator_per_action:.2} ms (agents and client, same machine)"
            ),
        ],
        json!({
            "scenario": "dispatch",
            "agents": count,
            "actions": results.len(),
            "concurrency": concurrency,
            "database": database_name(target),
            "receive_ms": receive,
            "succeeded_ms": succeeded,
            "actions_per_sec": rate.round(),
            "server_cpu_ms_per_action": (cpu_per_action * 100.0).round() / 100.0,
            "generator_cpu_ms_per_action": (generator_per_action * 100.0).round() / 100.0,
        }),
    );
    Ok(())
}

pub async fn fanout(target: &Target, count: usize, concurrency: usize) -> anyhow::Result<()> {
    let (_servers, workers, client, machines) = fleet(target, count).await?;
    let (receiver, stop, _) = receive_times(workers);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let client = client.clone();
        let machines = machines.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(machine) = machines.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                client.run_live_response(machine, &script_request()).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let submitted_secs = started.elapsed().as_secs_f64();
    let total = machines.len() as u64;
    let mut at_99 = None;
    let done_secs = loop {
        let page = client
            .actions(&[
                ("$filter", "status eq 'Succeeded'"),
                ("$count", "true"),
                ("$top", "0"),
            ])
            .await?;
        let done = page.count.unwrap_or(0);
        if at_99.is_none() && done * 100 >= total * 99 {
            at_99 = Some(started.elapsed().as_secs_f64());
        }
        if done >= total {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {done} of {total} actions Succeeded after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = stop.send(());
    let received = receiver.await?;
    let at_99 = at_99.unwrap_or(done_secs);
    report(
        &[
            format!(
                "fanout: one action on each of {total} machines, {concurrency} submissions in flight, database {}",
                database_name(target)
            ),
            format!(
                "  all submitted in {submitted_secs:.2} s; {} commands reached their agents",
                received.len()
            ),
            format!("  99% Succeeded after {at_99:.2} s, 100% after {done_secs:.2} s"),
        ],
        json!({
            "scenario": "fanout",
            "machines": total,
            "concurrency": concurrency,
            "database": database_name(target),
            "submitted_secs": (submitted_secs * 100.0).round() / 100.0,
            "succeeded_99_secs": (at_99 * 100.0).round() / 100.0,
            "succeeded_100_secs": (done_secs * 100.0).round() / 100.0,
        }),
    );
    Ok(())
}

/// Writes `size` bytes to `path`: random, or log-like text.
fn make_file(path: &std::path::Path, size: u64, compressible: bool) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut block = vec![0u8; 1 << 20];
    let mut line = 0u64;
    while written < size {
        let n = (size - written).min(block.len() as u64) as usize;
        if compressible {
            let mut text = Vec::with_capacity(n + 200);
            while text.len() < n {
                line += 1;
                text.extend_from_slice(
                    format!("2026-11-23T01:{:02}:{:02}Z host sshd[{}]: Accepted publickey for user{} from 10.0.{}.{} port {}\n",
                        line / 60 % 60, line % 60, 1000 + line % 5000, line % 97, line % 255, line % 253, 40000 + line % 20000).as_bytes(),
                );
            }
            file.write_all(&text[..n])?;
        } else {
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut block[..n]);
            file.write_all(&block[..n])?;
        }
        written += n as u64;
    }
    file.flush()?;
    Ok(())
}

/// The machine's own limits for this path: a loopback TCP copy of the file
/// to a sink, and writing it to disk with fdatasync. Bytes per second.
fn machine_limits(path: &std::path::Path, size: u64) -> anyhow::Result<(f64, f64)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        std::io::copy(&mut stream, &mut std::io::sink())
    });
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr)?;
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut stream)?;
    drop(stream);
    let copied = sink
        .join()
        .map_err(|_| anyhow::anyhow!("the sink panicked"))??;
    let tcp = copied as f64 / started.elapsed().as_secs_f64();

    let dir = path.parent().context("a folder")?;
    let target = dir.join("disk-probe");
    let started = Instant::now();
    {
        let mut source = std::fs::File::open(path)?;
        let mut out = std::fs::File::create(&target)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = source.read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        }
        out.sync_data()?;
    }
    let disk = size as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(&target)?;
    Ok((tcp, disk))
}

pub async fn getfile(target: &Target, size: u64, compressible: bool) -> anyhow::Result<()> {
    let servers = Servers::start(target, 1).await?;
    let work = tempfile::tempdir()?;
    let file = work.path().join("evidence.bin");
    make_file(&file, size, compressible)?;
    // A real agent, in this process, collects the file.
    let agent_dir = work.path().join("agent");
    let config = reach_agent::Config {
        state_path: agent_dir.join("state.json"),
        work_dir: Some(agent_dir.join("work")),
        ..reach_agent::Config::default()
    };
    let state =
        reach_agent::enroll(&servers.seed.url, &servers.seed.enrollment_token, &config).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let agent = tokio::spawn(reach_agent::run(config, shutdown.clone()));
    let client = servers.client().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.machine(&state.machine_id).await?.health_status != "Active" {
        if Instant::now() > deadline {
            bail!("the agent did not connect");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request = RunLiveResponseRequest {
        commands: Some(vec![Command::new(
            CommandType::GetFile,
            &[("Path", file.to_str().context("a UTF-8 path")?)],
        )]),
        comment: Some("reach-bench getfile".into()),
    };
    let started = Instant::now();
    let created = client
        .run_live_response(&state.machine_id, &request)
        .await?;
    let done = loop {
        let action = client.action(&created.id).await?;
        if action.status.is_final() {
            break action;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    if done.status != ActionStatus::Succeeded {
        bail!(
            "the GetFile ended {}: {:?}",
            done.status,
            done.commands[0].errors
        );
    }
    shutdown.cancel();
    let _ = agent.await;
    let peak = servers.nodes.first().map(|n| n.peak_rss()).transpose()?;
    let reach = size as f64 / elapsed;
    let (tcp, disk) = machine_limits(&file, size)?;
    let limit = tcp.min(disk);
    let mb = |b: f64| (b / 1e6 * 10.0).round() / 10.0;
    report(
        &[
            format!(
                "getfile: {} MiB of {} bytes, database {}",
                mib(size as f64),
                if compressible { "log-like" } else { "random" },
                database_name(target)
            ),
            format!("  end to end: {elapsed:.2} s, {} MB/s", mb(reach)),
            format!(
                "  this machine: loopback TCP {} MB/s, disk write with fdatasync {} MB/s",
                mb(tcp),
                mb(disk)
            ),
            format!(
                "  Reach reaches {:.0}% of the smaller",
                reach / limit * 100.0
            ),
            format!(
                "  server peak RSS: {} MiB",
                peak.map(|p| mib(p as f64)).unwrap_or(0.0)
            ),
        ],
        json!({
            "scenario": "getfile",
            "bytes": size,
            "compressible": compressible,
            "database": database_name(target),
            "secs": (elapsed * 100.0).round() / 100.0,
            "mb_per_sec": mb(reach),
            "loopback_tcp_mb_per_sec": mb(tcp),
            "disk_fdatasync_mb_per_sec": mb(disk),
            "ratio_of_limit": (reach / limit * 1000.0).round() / 1000.0,
            "server_peak_rss_bytes": peak,
        }),
    );
    Ok(())
}
