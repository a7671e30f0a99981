//! `fanout`: one RunScript on every machine of the fleet, one call per
//! machine, as today's Defender-shaped API takes it; how long until all
//! are submitted, received and Succeeded. With `--batch`, one call for the
//! whole fleet (`POST /api/batches`, all machines), then how long its
//! results take to stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use super::*;

pub async fn fanout(
    target: &Target,
    count: usize,
    concurrency: usize,
    batch: bool,
    nodes: usize,
) -> anyhow::Result<()> {
    if batch {
        return fanout_batch(target, count, nodes).await;
    }
    if nodes != 1 {
        bail!("--nodes goes with --batch");
    }
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

/// One batch for every machine: the call, every action Succeeded (from the
/// batch's exact counts), and the results of all streamed.
async fn fanout_batch(target: &Target, count: usize, nodes: usize) -> anyhow::Result<()> {
    let (servers, workers, client, machines) = fleet_on(target, count, nodes).await?;
    let rss_before = servers.rss()?;
    let reconnects = workers.reconnects();
    let at_setup = reconnects.load(std::sync::atomic::Ordering::Relaxed);
    let (receiver, stop, _) = receive_times(workers);
    let request = reach_proto::api::CreateBatchRequest {
        commands: script_request().commands,
        comment: Some("fanout".into()),
        machines: Some(reach_proto::api::BatchTargets {
            all: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started = Instant::now();
    let created = client.create_batch(&request).await?;
    let created_secs = started.elapsed().as_secs_f64();
    let total = machines.len() as u64;
    if created.machine_count != total {
        bail!(
            "the batch targets {} machines, not {total}",
            created.machine_count
        );
    }
    // As a user watching would, and no more: every 100 ms up to 10,000
    // machines, 1 s at 100,000 (exact counts read the batch's actions).
    let poll = Duration::from_millis((total / 100).clamp(100, 1000));
    let mut at_99 = None;
    let mut rss_most = rss_before.clone();
    let done_secs = loop {
        for (most, now) in rss_most.iter_mut().zip(servers.rss()?) {
            *most = (*most).max(now);
        }
        let batch = reach_client::patiently(|| client.batch(&created.id)).await?;
        let done = batch.counts.succeeded;
        if at_99.is_none() && done * 100 >= total * 99 {
            at_99 = Some(started.elapsed().as_secs_f64());
        }
        if done >= total {
            break started.elapsed().as_secs_f64();
        }
        let failed = batch.counts.failed + batch.counts.timed_out + batch.counts.cancelled;
        if failed > 0 {
            bail!("{failed} of {total} actions of the batch did not succeed");
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {done} of {total} actions Succeeded after 10 minutes");
        }
        tokio::time::sleep(poll).await;
    };
    let rss_after = servers.rss()?;
    let during = reconnects.load(std::sync::atomic::Ordering::Relaxed) - at_setup;
    let _ = stop.send(());
    let received = receiver.await?;
    let at_99 = at_99.unwrap_or(done_secs);
    let streaming = Instant::now();
    let lines = reach_client::patiently(|| client.batch_results_lines(&created.id, 0)).await?;
    let results_secs = streaming.elapsed().as_secs_f64();
    if lines as u64 != total {
        bail!("the results held {lines} lines, not {total}");
    }
    report(
        &[
            format!(
                "fanout --batch: one call for {total} machines on {nodes} node(s), database {}",
                database_name(target)
            ),
            format!(
                "  server RSS per node before the batch {rss_before:?}, most while it ran {rss_most:?}, after {rss_after:?} (bytes)"
            ),
            format!(
                "  created in {created_secs:.2} s; {} commands reached their agents",
                received.len()
            ),
            format!("  99% Succeeded after {at_99:.2} s, 100% after {done_secs:.2} s"),
            format!("  results of all {lines} machines streamed in {results_secs:.2} s"),
            format!(
                "  agents reconnected {at_setup} time(s) while the fleet connected, {during} while the batch ran"
            ),
        ],
        json!({
            "scenario": "fanout",
            "batch": true,
            "machines": total,
            "nodes": nodes,
            "rss_before_bytes": rss_before,
            "rss_most_bytes": rss_most,
            "rss_after_bytes": rss_after,
            "database": database_name(target),
            "created_secs": (created_secs * 100.0).round() / 100.0,
            "succeeded_99_secs": (at_99 * 100.0).round() / 100.0,
            "succeeded_100_secs": (done_secs * 100.0).round() / 100.0,
            "results_secs": (results_secs * 100.0).round() / 100.0,
            "reconnects_setup": at_setup,
            "reconnects_during": during,
        }),
    );
    Ok(())
}
