//! `idle`: agents connect and stay idle; the server's memory and CPU per
//! connected agent, and how long connecting them all takes.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::agents::Workers;

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
    let reconnects = workers
        .reconnects()
        .load(std::sync::atomic::Ordering::Relaxed);
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
            format!("  agents reconnected {reconnects} time(s) while connecting"),
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
            "reconnects": reconnects,
            "rss_per_agent_bytes": per_agent,
            "idle_cpu_percent": worst_cpu,
            "per_node": per_node,
        }),
    );
    Ok(())
}
