//! Fault tests with real processes: reach-server is killed with SIGKILL in
//! the middle of a large GetFile and started again; the in-process agent
//! resumes from the chunks the server had stored, sends at most one chunk
//! again, and the result un-gzips to exactly the original bytes.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use reach_client::Client;
use reach_proto::agent::CommandRef;
use reach_proto::api::{ActionStatus, Command, CommandType, RunLiveResponseRequest};
use reach_server::testing::{eventually, wait_final};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

const FILE_BYTES: usize = 256 * 1024 * 1024;
const CHUNK_BYTES: &str = "8388608";

fn admin(data: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reach-server"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("REACH_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn field(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no '{label}' in {text}"))
}

async fn start_server(data: &Path, port: u16) -> tokio::process::Child {
    start_server_with(data, port, &[], Stdio::null()).await
}

/// Starts reach-server on `port` with extra `REACH_*` settings and its log to `log`.
async fn start_server_with(
    data: &Path,
    port: u16,
    env: &[(&str, &str)],
    log: Stdio,
) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach-server"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data)
        .env("REACH_LOG", "warn")
        .env("REACH_LIVE_RESPONSE__CHUNK_BYTES", CHUNK_BYTES)
        // The test polls faster than Defender's 100 calls a minute.
        .env("REACH_LIMITS__API_PER_MINUTE", "100000")
        .env("REACH_LIMITS__API_PER_HOUR", "1000000")
        .envs(env.iter().copied())
        .stderr(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    eventually("the server answering", async || {
        reqwest::get(&url).await.is_ok()
    })
    .await;
    child
}

fn stored_chunks(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().contains('#'))
                .count()
        })
        .unwrap_or(0)
}

fn random_file(path: &PathBuf) -> String {
    let mut noise = Vec::with_capacity(FILE_BYTES);
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .take(FILE_BYTES as u64)
        .read_to_end(&mut noise)
        .unwrap();
    std::fs::write(path, &noise).unwrap();
    hex::encode(Sha256::digest(&noise))
}

/// Enrolls and runs an in-process agent kept in `dir`: (machine id, its stop, its task).
async fn start_agent(
    dir: &Path,
    url: &str,
    token: &str,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let config = reach_agent::Config {
        state_path: dir.join("state.json"),
        reconnect_min_ms: 50,
        reconnect_max_ms: 500,
        nft_command: Vec::new(),
        ..reach_agent::Config::default()
    };
    let machine = reach_agent::enroll(url, token, &config)
        .await
        .unwrap()
        .machine_id;
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(reach_agent::run(config, shutdown.clone()));
    (machine, shutdown, agent)
}

/// A tenant, an app holding every role (tenant, client id, secret) and an enrollment token.
fn seed(data: &Path) -> (String, String, String, String) {
    let tenant = field(
        &admin(data, &["tenants", "create", "--name", "faults"]),
        "tenant id:",
    );
    let roles = "Machine.LiveResponse,Machine.Read.All,Library.Manage";
    let app = admin(
        data,
        &["apps", "create", "--name", "faults", "--roles", roles],
    );
    let (client_id, secret) = (field(&app, "client id:"), field(&app, "client secret:"));
    let token = admin(data, &["enrollment-token", "create"])
        .trim()
        .to_string();
    (tenant, client_id, secret, token)
}

#[tokio::test]
async fn kill_9_of_the_server_mid_getfile_resumes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (tenant, client_id, secret, token) = seed(&data);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = start_server(&data, port).await;

    let agent_dir = dir.path().join("agent");
    let (machine, shutdown, agent) = start_agent(&agent_dir, &url, &token).await;

    let evidence = dir.path().join("evidence.bin");
    let expected = random_file(&evidence);
    let client = Client::new(&url)
        .login(&tenant, &client_id, &secret)
        .await
        .unwrap();
    let request = RunLiveResponseRequest {
        commands: Some(vec![Command::new(
            CommandType::GetFile,
            &[("Path", evidence.to_str().unwrap())],
        )]),
        comment: Some("faults".into()),
    };
    let created = client.run_live_response(&machine, &request).await.unwrap();

    let chunks_dir = data.join(format!("blobs/results/{}/0/segments", created.id));
    eventually("chunks arriving", async || stored_chunks(&chunks_dir) >= 4).await;
    server.start_kill().unwrap(); // SIGKILL, in the middle of the transfer
    server.wait().await.unwrap();
    let before = stored_chunks(&chunks_dir);
    assert!(
        before < FILE_BYTES / CHUNK_BYTES.parse::<usize>().unwrap(),
        "the transfer was not cut"
    );
    let mut server = start_server(&data, port).await;

    let client = Client::new(&url)
        .login(&tenant, &client_id, &secret)
        .await
        .unwrap();
    let done = wait_final(&client, &created.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:#?}");

    // The result un-gzips to exactly the original bytes.
    let link = client.download_link(&created.id, 0).await.unwrap();
    let body = client.download(&link).await.unwrap().bytes().await.unwrap();
    // One gzip member: a reader that stops after the first member (as
    // .NET's GZipStream does) reads the whole file.
    let mut decoder = flate2::read::GzDecoder::new(&body[..]);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0usize;
    loop {
        let n = decoder.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n;
    }
    assert_eq!(size, FILE_BYTES);
    assert_eq!(hex::encode(hasher.finalize()), expected);

    // At most one chunk was sent again.
    let state = reach_server::open(reach_server::Config {
        data_dir: data.clone(),
        ..reach_server::Config::default()
    })
    .await
    .unwrap();
    let command = CommandRef {
        action_id: created.id.clone(),
        index: 0,
    };
    let chunks = state.store.list_chunks(&command).await.unwrap();
    let resent: u32 = chunks.iter().map(|c| c.attempts - 1).sum();
    eprintln!("chunks stored before the kill: {before}, sent again: {resent}");
    assert!(resent <= 1, "chunks sent again: {resent}");
    assert_eq!(
        chunks.len(),
        FILE_BYTES / CHUNK_BYTES.parse::<usize>().unwrap()
    );

    shutdown.cancel();
    let _ = agent.await;
    server.kill().await.unwrap();
}

#[tokio::test]
async fn kill_9_of_the_server_mid_putfile_resumes_with_the_hash_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (tenant, client_id, secret, token) = seed(&data);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    // 32 MiB/s per agent, so the download is still running when the server dies.
    let capped = [("REACH_LIMITS__AGENT_BYTES_PER_SEC", "33554432")];
    let mut server = start_server_with(&data, port, &capped, Stdio::null()).await;

    let agent_dir = dir.path().join("agent");
    let (machine, shutdown, agent) = start_agent(&agent_dir, &url, &token).await;

    let tool = dir.path().join("tool.bin");
    let expected = {
        let mut noise = Vec::new();
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .take(96 << 20)
            .read_to_end(&mut noise)
            .unwrap();
        std::fs::write(&tool, &noise).unwrap();
        hex::encode(Sha256::digest(&noise))
    };
    let client = Client::new(&url)
        .login(&tenant, &client_id, &secret)
        .await
        .unwrap();
    let bytes = std::fs::read(&tool).unwrap();
    client
        .upload_library_file(reach_client::LibraryUpload::bytes("tool.bin", bytes))
        .await
        .unwrap();
    let request = RunLiveResponseRequest {
        commands: Some(vec![Command::new(
            CommandType::PutFile,
            &[("FileName", "tool.bin")],
        )]),
        comment: Some("putfile".into()),
    };
    let created = client.run_live_response(&machine, &request).await.unwrap();

    let partial = agent_dir.join("work/.tool.bin.partial");
    eventually("the download getting going", async || {
        std::fs::metadata(&partial).map_or(0, |m| m.len()) >= 16 << 20
    })
    .await;
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let got = std::fs::metadata(&partial).unwrap().len();
    assert!(got < 96 << 20, "the download was not cut");

    let log_path = dir.path().join("second.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let logged = [
        ("REACH_LIMITS__AGENT_BYTES_PER_SEC", "33554432"),
        ("REACH_LOG", "warn,reach_server::agents::payload=debug"),
    ];
    let mut server = start_server_with(&data, port, &logged, Stdio::from(log)).await;
    let client = Client::new(&url)
        .login(&tenant, &client_id, &secret)
        .await
        .unwrap();
    let done = wait_final(&client, &created.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:#?}");
    let put = std::fs::read(agent_dir.join("work/tool.bin")).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&put)), expected);

    // The agent asked only for the chunks it did not have: the partial file
    // holds whole, checked chunks, so it resumed right after them.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let served: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("payload chunk served"))
        .filter_map(|l| {
            l.split("chunk=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let chunk_bytes = 8u64 << 20;
    assert_eq!(got % chunk_bytes, 0, "only whole chunks are kept");
    let first = got / chunk_bytes;
    assert_eq!(served, (first..12).collect::<Vec<_>>(), "{log}");
    shutdown.cancel();
    let _ = agent.await;
    server.kill().await.unwrap();
}
