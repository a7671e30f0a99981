//! `output`: live output at scale. One batch runs a streaming script on
//! every machine (each writes timed lines, `agents::Streaming`), and one
//! client per machine follows its action's output over Server-Sent Events
//! (`reach_client::output`), some of them reading slowly. Measured: the
//! time from a line's write on the agent to its arrival at a follower that
//! keeps up (lines written before their follower connected are left out),
//! that every follower, slow ones included, gets every line, and the
//! server's memory while they all follow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reach_client::output::OutputEvent;
use reach_proto::api::{BatchTargets, Command, CommandType, CreateBatchRequest};
use serde_json::json;

use super::*;
use crate::agents::{Streaming, now_us, times};

/// How long a slow follower waits after each event it reads.
const SLOW_PAUSE: Duration = Duration::from_secs(2);

/// What one follower saw.
#[derive(Default)]
struct Seen {
    /// Milliseconds from write to arrival, for lines written after it connected.
    latencies: Vec<f64>,
    /// Lines received in all.
    lines: usize,
    /// Its command's end came.
    ended: bool,
}

/// Follows `action`'s output to its end; a slow follower pauses `pause`
/// after every event (`SLOW_PAUSE`).
async fn follow(client: Client, action: String, pause: Option<Duration>) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let connected_us = now_us();
    let mut stream = client.follow_output(&action, 0, None);
    while let Some(event) = stream.next().await? {
        let at = now_us();
        match event {
            OutputEvent::Stdout(piece) => {
                for written in times(&piece.text) {
                    seen.lines += 1;
                    if written >= connected_us {
                        seen.latencies.push((at - written) as f64 / 1000.0);
                    }
                }
            }
            OutputEvent::End(_) => seen.ended = true,
            _ => {}
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    Ok(seen)
}

/// The batch's action ids, paging through the API.
async fn batch_actions(client: &Client, batch: &str, count: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    while ids.len() < count {
        let skip = ids.len().to_string();
        let page = client
            .batch_actions(batch, &[("$top", "1000"), ("$skip", skip.as_str())])
            .await?;
        if page.value.is_empty() {
            bail!("the batch has {} actions, expected {count}", ids.len());
        }
        ids.extend(page.value.into_iter().map(|a| a.id));
    }
    Ok(ids)
}

pub async fn output(
    target: &Target,
    count: usize,
    plan: Streaming,
    slow: usize,
) -> anyhow::Result<()> {
    let (servers, workers, client, _machines) = fleet(target, count).await?;
    let (_receiver, stop, _) = receive_times(workers);
    let request = CreateBatchRequest {
        commands: Some(vec![Command::new(
            CommandType::RunScript,
            &[("ScriptName", "bench.sh"), ("Args", &plan.args())],
        )]),
        comment: Some("output".into()),
        machines: Some(BatchTargets {
            all: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rss_before = servers.rss()?;
    let cpu_before = servers.cpu()?;
    let started = Instant::now();
    let batch = client.create_batch(&request).await?;
    let actions = batch_actions(&client, &batch.id, count).await?;
    // Every follower connects while the scripts wait to start.
    let mut tasks = Vec::new();
    for (i, action) in actions.into_iter().enumerate() {
        let pause = (i < slow).then_some(SLOW_PAUSE);
        tasks.push(tokio::spawn(follow(client.clone(), action, pause)));
    }
    let followers_secs = started.elapsed().as_secs_f64();
    if started.elapsed() >= plan.start_after {
        bail!(
            "the followers took {followers_secs:.1} s to start, longer than the scripts waited; raise --start-after-ms"
        );
    }
    // The server's memory, sampled while they follow.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let pids: Vec<u32> = servers.nodes.iter().map(|n| n.pid()).collect();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while sampling.load(Ordering::Relaxed) {
                let now: u64 = pids
                    .iter()
                    .filter_map(|p| crate::server::rss(*p).ok())
                    .sum();
                peak = peak.max(now);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            peak
        })
    };
    let mut keeping_up = Vec::new();
    let (mut complete, mut slow_complete) = (0, 0);
    let deadline = plan.start_after + plan.interval * plan.lines + Duration::from_secs(600);
    for (i, task) in tasks.into_iter().enumerate() {
        let left = deadline.saturating_sub(started.elapsed());
        let seen = tokio::time::timeout(left, task)
            .await
            .context("followers did not finish within 10 minutes of the scripts' end")???;
        let whole = seen.ended && seen.lines == plan.lines as usize;
        if i < slow {
            slow_complete += usize::from(whole);
        } else {
            complete += usize::from(whole);
            keeping_up.extend(seen.latencies);
        }
    }
    let all_secs = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let peak: u64 = sampler.await?;
    let rss_after = servers.rss()?;
    let cpu_after = servers.cpu()?;
    let _ = stop.send(());
    let before: u64 = rss_before.iter().sum();
    let cpu: f64 = cpu_after.iter().sum::<f64>() - cpu_before.iter().sum::<f64>();
    let samples = keeping_up.len();
    let latency = percentiles(keeping_up);
    report(
        &[
            format!(
                "output: {count} scripts writing {} lines of {} bytes every {} ms, one follower each ({slow} reading slowly), database {}",
                plan.lines,
                plan.bytes,
                plan.interval.as_millis(),
                database_name(target)
            ),
            format!(
                "  followers connected {followers_secs:.2} s after the batch call; all ended after {all_secs:.1} s"
            ),
            format!("  write → follower (ms, {samples} lines, followers keeping up): {latency}"),
            format!(
                "  every line and the end: {complete} of {} followers keeping up, {slow_complete} of {slow} slow ones",
                count - slow.min(count)
            ),
            format!(
                "  server RSS {} MiB before, {} MiB at most while following, {} MiB after; CPU {cpu:.1} s",
                mib(before as f64),
                mib(peak as f64),
                mib(rss_after.iter().sum::<u64>() as f64)
            ),
        ],
        json!({
            "scenario": "output",
            "machines": count,
            "lines": plan.lines,
            "line_bytes": plan.bytes,
            "interval_ms": plan.interval.as_millis() as u64,
            "slow_followers": slow,
            "database": database_name(target),
            "latency_ms": latency,
            "latency_samples": samples,
            "complete": complete,
            "slow_complete": slow_complete,
            "rss_before_mib": mib(before as f64),
            "rss_peak_mib": mib(peak as f64),
            "server_cpu_secs": (cpu * 10.0).round() / 10.0,
            "all_ended_secs": (all_secs * 100.0).round() / 100.0,
        }),
    );
    if complete + slow_complete < count {
        bail!(
            "{} followers missed lines or their end",
            count - complete - slow_complete
        );
    }
    Ok(())
}
