//! `getfile`: one large file collected from an agent through the real
//! protocol; throughput and the server's memory while it streams.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reach_proto::api::{ActionStatus, Command, CommandType, RunLiveResponseRequest};
use serde_json::json;

use super::*;

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
        nft_command: Vec::new(),
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
