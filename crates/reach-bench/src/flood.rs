//! The auth-flood scenario: many concurrent unauthenticated requests that
//! make the server check secrets (console sign-ins with unknown names and
//! with wrong passwords for a real user, token requests with unknown apps
//! and with a real app's wrong secret), each worker from its own loopback
//! address, while one analyst reads a machine. It reports the server's
//! memory before, at its peak and after the flood, and the analyst's
//! latency during it. The server the bench starts has its per-address
//! limits raised out of the way, so what holds the flood is the password
//! gate alone: the worst case, an attacker with as many addresses as it likes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::scenarios::{Servers, Target, mib, percentiles, report};

/// What the workers got back, by kind of request and status.
type Tally = Arc<Mutex<BTreeMap<String, u64>>>;

const KINDS: [&str; 4] = [
    "sign-in, unknown name",
    "sign-in, wrong password",
    "token, unknown app",
    "token, wrong secret",
];

pub async fn auth_flood(
    target: &Target,
    concurrency: usize,
    secs: u64,
    sources: usize,
) -> anyhow::Result<()> {
    let servers = Servers::start(target, 1).await?;
    let pid = match (servers.nodes.first(), target.server_pid) {
        (Some(node), _) => Some(node.pid()),
        (None, pid) => pid,
    };
    let seed = servers.seed.clone();
    if seed.console_user.is_empty() {
        bail!("the seed names no console user (console_user, console_password)");
    }
    let client = servers.client().await?;
    let machine = enroll_one(&seed.url, &seed.enrollment_token).await?;
    let rss = || pid.map(crate::server::rss).transpose();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base = rss()?;
    let cpu_before = pid.map(crate::server::cpu_seconds).transpose()?;

    // Every client is made before the clock starts (making one loads the
    // platform's certificates, which takes a while).
    let mut clients = Vec::with_capacity(sources.max(1));
    for source in 0..sources.max(1) {
        let address: IpAddr = format!("127.0.{}.{}", 1 + source / 250, 2 + source % 250).parse()?;
        clients.push(reqwest::Client::builder().local_address(address).build()?);
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    // The analyst reads one machine, one call after another, all along.
    let prober = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < deadline {
                let started = Instant::now();
                match client.machine(&machine).await {
                    Ok(_) => samples.push(started.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => failures += 1,
                }
            }
            (samples, failures)
        })
    };
    let tally: Tally = Arc::default();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let http = clients[worker % clients.len()].clone();
        let (seed, tally) = (seed.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            let mut n = worker;
            while Instant::now() < deadline {
                let kind = n % KINDS.len();
                n += 1;
                let guess = format!("guess-{n:012}");
                let sent = match kind {
                    0 | 1 => {
                        let name = if kind == 0 {
                            guess.as_str()
                        } else {
                            seed.console_user.as_str()
                        };
                        http.post(format!("{}/console/session", seed.url))
                            .json(&json!({ "name": name, "password": guess }))
                            .send()
                            .await
                    }
                    _ => {
                        let client_id = if kind == 2 {
                            guess.as_str()
                        } else {
                            seed.client_id.as_str()
                        };
                        http.post(format!("{}/{}/oauth2/v2.0/token", seed.url, seed.tenant_id))
                            .form(&[
                                ("grant_type", "client_credentials"),
                                ("client_id", client_id),
                                ("client_secret", guess.as_str()),
                            ])
                            .send()
                            .await
                    }
                };
                let outcome = match sent {
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(_) => "error".to_string(),
                };
                *tally
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .entry(format!("{}: {outcome}", KINDS[kind]))
                    .or_default() += 1;
            }
        }));
    }

    let mut peak = base.unwrap_or(0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(rss()?.unwrap_or(0));
    }
    for worker in workers {
        worker.await.context("a flood worker")?;
    }
    let (samples, probe_failures) = prober.await.context("the prober")?;
    let cpu_used = match (pid, cpu_before) {
        (Some(pid), Some(before)) => Some(crate::server::cpu_seconds(pid)? - before),
        _ => None,
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss()?;
    // The password gate gives its pooled memory back once idle.
    tokio::time::sleep(reach_server::auth::secrets::IDLE_TRIM).await;
    let settled = rss()?;

    let tally = tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let sent: u64 = tally.values().sum();
    let probe = percentiles(samples.clone());
    let show = |bytes: Option<u64>| {
        bytes.map_or("unknown".to_string(), |b| format!("{} MiB", mib(b as f64)))
    };
    let mut lines = vec![
        format!(
            "auth-flood: {concurrency} concurrent requests from {sources} addresses for {secs} s"
        ),
        format!("  sent {sent} ({:.0} a second)", sent as f64 / secs as f64),
    ];
    lines.extend(tally.iter().map(|(what, n)| format!("    {what}: {n}")));
    lines.push(format!(
        "  server RSS: {} before, {} at the peak, {} 5 s after, {} {} s after",
        show(base),
        show(Some(peak)),
        show(after),
        show(settled),
        5 + reach_server::auth::secrets::IDLE_TRIM.as_secs()
    ));
    if let Some(cpu) = cpu_used {
        lines.push(format!("  server CPU during the flood: {cpu:.1} s"));
    }
    lines.push(format!(
        "  analyst GET /api/machines/{{id}} during it: {} calls, {probe_failures} failed, p50 {} ms, p99 {} ms, max {} ms",
        samples.len(),
        probe["p50"],
        probe["p99"],
        probe["max"]
    ));
    report(
        &lines,
        json!({
            "scenario": "auth-flood",
            "concurrency": concurrency,
            "sources": sources,
            "secs": secs,
            "sent": sent,
            "outcomes": tally,
            "rss_base_bytes": base,
            "rss_peak_bytes": peak,
            "rss_after_bytes": after,
            "rss_settled_bytes": settled,
            "server_cpu_secs": cpu_used,
            "probe_calls": samples.len(),
            "probe_failures": probe_failures,
            "probe_ms": probe,
        }),
    );
    Ok(())
}

/// Enrolls one machine over the API; its id.
async fn enroll_one(url: &str, token: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{url}{}", reach_proto::agent::paths::ENROLL))
        .json(&json!({
            "enrollment_token": token,
            "info": {
                "hostname": "flood-target",
                "os_platform": "Linux",
                "os_version": "bench",
                "os_architecture": "64-bit",
                "agent_version": "bench",
            }
        }))
        .send()
        .await?
        .error_for_status()
        .context("enrolling the machine the analyst reads")?;
    let enrolled: reach_proto::agent::EnrollResponse = response.json().await?;
    Ok(enrolled.machine_id)
}
