//! reach-bench: measures Reach at fleet scale on this machine. It starts the
//! server itself (its own executable in `serve` mode, a separate process)
//! or uses one given by URL, simulates agents over the real protocol in
//! worker processes, and prints a readable report whose last line is one
//! JSON object with the figures. It only ever targets loopback addresses
//! and stops by itself. See BENCHMARKS.md for the commands and results.

mod agents;
mod flood;
mod scenarios;
mod server;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "reach-bench", about = "Benchmarks for Reach (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N agents connect and stay connected: connect time, server RSS per agent, idle CPU.
    Idle {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Server nodes sharing one PostgreSQL database (needs --database-url).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// How long to measure idle CPU, in seconds.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
        #[command(flatten)]
        target: scenarios::Target,
    },
    /// M actions (one RunScript each) over N connected agents: latency percentiles and throughput.
    Dispatch {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 1000)]
        actions: usize,
        /// Actions in flight at once (each on its own machine).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[command(flatten)]
        target: scenarios::Target,
    },
    /// One action on every connected machine, as fast as the API takes them.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// One batch for the whole fleet instead of one call per machine.
        #[arg(long)]
        batch: bool,
        /// With --batch: server nodes sharing one PostgreSQL database.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        #[command(flatten)]
        target: scenarios::Target,
    },
    /// One GetFile of a file of this size through a real agent, against the machine's own limits.
    Getfile {
        #[arg(long, default_value_t = 100 * 1024 * 1024)]
        size: u64,
        /// Log-like text instead of random bytes.
        #[arg(long)]
        compressible: bool,
        #[command(flatten)]
        target: scenarios::Target,
    },
    /// One batch of scripts writing timed lines on N machines, one live
    /// output follower each (some reading slowly): write-to-follower
    /// latency, completeness, server memory.
    Output {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Lines each script writes.
        #[arg(long, default_value_t = 20)]
        lines: u32,
        /// Milliseconds between two lines.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
        /// Bytes of a line.
        #[arg(long, default_value_t = 80)]
        line_bytes: usize,
        /// The scripts wait this long before their first line, while the
        /// followers connect.
        #[arg(long, default_value_t = 10_000)]
        start_after_ms: u64,
        /// Followers that read slowly (an event every 2 s).
        #[arg(long, default_value_t = 10)]
        slow: usize,
        #[command(flatten)]
        target: scenarios::Target,
    },
    /// Concurrent unauthenticated sign-ins and token requests that make the
    /// server check secrets, while an analyst reads a machine: memory and latency.
    AuthFlood {
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Distinct loopback source addresses the requests come from.
        #[arg(long, default_value_t = 200)]
        sources: usize,
        #[command(flatten)]
        target: scenarios::Target,
    },
    /// (internal) Run a server for the bench until stdin closes.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "")]
        database_url: String,
    },
    /// (internal) Run simulated agents until stdin closes.
    #[command(hide = true)]
    Agents {
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        #[arg(long)]
        token: String,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        bind: IpAddr,
        #[arg(long)]
        label: String,
        /// Agents connecting at once.
        #[arg(long, default_value_t = 256)]
        parallel: usize,
    },
}

/// The server's allocator, so that `serve` measures what `reach-server` runs.
#[global_allocator]
static ALLOCATOR: reach_server::Allocator = reach_server::Allocator {};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REACH_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Scenario::Serve {
                data_dir,
                database_url,
            } => server::serve(&data_dir, &database_url).await,
            Scenario::Agents {
                servers,
                token,
                count,
                bind,
                label,
                parallel,
            } => agents::worker(servers, token, count, bind, label, parallel).await,
            Scenario::Idle {
                agents,
                nodes,
                idle_secs,
                target,
            } => scenarios::idle(&target, agents, nodes, idle_secs).await,
            Scenario::Dispatch {
                agents,
                actions,
                concurrency,
                target,
            } => scenarios::dispatch(&target, agents, actions, concurrency).await,
            Scenario::Fanout {
                agents,
                concurrency,
                batch,
                nodes,
                target,
            } => scenarios::fanout(&target, agents, concurrency, batch, nodes).await,
            Scenario::Getfile {
                size,
                compressible,
                target,
            } => scenarios::getfile(&target, size, compressible).await,
            Scenario::Output {
                agents,
                lines,
                interval_ms,
                line_bytes,
                start_after_ms,
                slow,
                target,
            } => {
                let plan = agents::Streaming {
                    lines,
                    interval: std::time::Duration::from_millis(interval_ms),
                    start_after: std::time::Duration::from_millis(start_after_ms),
                    bytes: line_bytes,
                };
                scenarios::output(&target, agents, plan, slow).await
            }
            Scenario::AuthFlood {
                concurrency,
                secs,
                sources,
                target,
            } => flood::auth_flood(&target, concurrency, secs, sources).await,
        }
    })
}
