//! `dispatch`: many short RunScript actions through the API with a number
//! in flight; actions per second, submit-to-agent and submit-to-Succeeded
//! latencies, and the server's CPU per action.

use std::time::{Duration, Instant};

use anyhow::bail;
use reach_proto::api::ActionStatus;
use serde_json::json;

use super::*;
use crate::agents::now_us;
use crate::server::{self};

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
