//! Simulated agents: many per process, each a small task holding one real
//! WebSocket to the server and speaking the real agent protocol (Hello,
//! heartbeats, Run → the script, from the message or downloaded → transcript
//! upload → Finished → Ack), as the real agent does. A RunScript does not
//! run anything: the agent answers with a trivial transcript at once, so the
//! figures are Reach's own cost; one whose Args ask for it writes timed
//! lines over a while instead, sent as the real agent sends live output
//! (`script`).
//!
//! A process holds at most 20,000 open files here, so the coordinator
//! (`workers`) spreads agents over several worker processes (`reach-bench
//! agents`), each on its own loopback source address (127.0.0.2,
//! 127.0.0.3, ...). Workers report on stdout as JSON lines; they stop when
//! their stdin closes. An agent counts as connected once the server's
//! Welcome came; one whose connection fails or drops reconnects as the real
//! agent does, and the report says how often that happened.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use reach_proto::agent::{
    AgentMessage, Assignment, CommandRef, MachineInfo, Outcome, ServerMessage, Work, paths,
};
use reach_proto::api::ScriptTranscript;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod script;
mod workers;

pub use script::{Streaming, times};

pub use workers::Workers;

/// Most agents one worker process runs (it needs one file per connection).
pub const PER_WORKER: usize = 9_000;

/// A worker's report line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// This many agents are connected (sent once all of the worker's are).
    Connected { count: usize },
    /// An agent received a command, at this wall-clock time (µs since the epoch).
    Run { action: String, at_us: i64 },
    /// An agent sent the command's outcome (`Finished`), at this time.
    Finished { action: String, at_us: i64 },
    /// An agent's connection failed or dropped; it tries again.
    Reconnecting { message: String },
    /// The worker gave up.
    Error { message: String },
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn emit(event: &Event) {
    println!(
        "{}",
        serde_json::to_string(event).expect("events serialise")
    );
}

/// `reach-bench agents`: enrolls and connects `count` agents to `servers`
/// (round-robin) from source address `bind`, at most `parallel` connecting
/// at once, then serves them until stdin closes. An agent whose connection
/// fails or drops reconnects with a growing, jittered delay, as the real
/// agent does (without enrolling again), and the worker reports it.
pub async fn worker(
    servers: Vec<String>,
    token: String,
    count: usize,
    bind: IpAddr,
    label: String,
    parallel: usize,
) -> anyhow::Result<()> {
    let http = reach_client::reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let connected = Arc::new(AtomicUsize::new(0));
    let all_connected = Arc::new(tokio::sync::Notify::new());
    // Enrolment and connection in parallel, but not all at once.
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let server = servers[i % servers.len()].clone();
        let agent = Agent {
            server,
            http: http.clone(),
            token: token.clone(),
            hostname: format!("{label}-{i:05}"),
            bind,
            instance: format!("{:032x}", rand::random::<u128>()),
        };
        let gate = gate.clone();
        let connected = connected.clone();
        let all_connected = all_connected.clone();
        tasks.push(tokio::spawn(async move {
            let mut bearer = None;
            let mut failures = 0u32;
            let mut first = true;
            loop {
                let session = {
                    let _permit = gate.acquire().await.expect("the gate stays open");
                    agent.connect(&mut bearer).await
                };
                let why = match session {
                    Ok(session) => {
                        failures = 0;
                        if first {
                            first = false;
                            if connected.fetch_add(1, Ordering::SeqCst) + 1 == count {
                                all_connected.notify_one();
                            }
                        }
                        agent.serve(session).await
                    }
                    Err(err) => Err(err),
                };
                let why = match why {
                    Ok(()) => "the server closed the connection".to_string(),
                    Err(err) => format!("{err:#}"),
                };
                failures += 1;
                if first && failures > MAX_FAILURES {
                    emit(&Event::Error {
                        message: format!(
                            "{}: gave up after {failures} tries: {why}",
                            agent.hostname
                        ),
                    });
                    return;
                }
                emit(&Event::Reconnecting {
                    message: format!("{}: {why}", agent.hostname),
                });
                tokio::time::sleep(backoff(failures)).await;
            }
        }));
    }
    if count > 0 {
        all_connected.notified().await;
    }
    emit(&Event::Connected { count });
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
    for task in tasks {
        task.abort();
    }
    Ok(())
}

/// Tries an agent makes to connect the first time before its worker gives up.
const MAX_FAILURES: u32 = 20;

/// The delay before retry `failures`: 0.5 s doubling up to 8 s, each with
/// up to half again of random jitter, so that a refused crowd spreads out.
fn backoff(failures: u32) -> Duration {
    let base = 500u64 << failures.saturating_sub(1).min(4);
    Duration::from_millis(base + rand::random::<u64>() % (base / 2 + 1))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

struct Agent {
    server: String,
    http: reach_client::reqwest::Client,
    token: String,
    hostname: String,
    bind: IpAddr,
    /// The agent process's id in its Hello: the same on every reconnection,
    /// as the real agent's, so that the server hands out again a command
    /// whose Run or Finished a dropped connection lost.
    instance: String,
}

/// An agent's open session: the WebSocket after the server's `Welcome`.
struct Connected {
    socket: Socket,
    bearer: String,
    heartbeat_secs: u64,
    inline_limit: u64,
    live_limit: u64,
}

impl Agent {
    fn info(&self) -> MachineInfo {
        MachineInfo {
            hostname: self.hostname.clone(),
            os_platform: "Linux".into(),
            os_version: "bench".into(),
            os_architecture: "64-bit".into(),
            agent_version: "bench".into(),
            ip_addresses: vec![],
        }
    }

    /// Enrolls (once: the credential is kept in `bearer`), opens the
    /// WebSocket, says Hello and waits for the server's Welcome.
    async fn connect(&self, bearer: &mut Option<String>) -> anyhow::Result<Connected> {
        let bearer = match bearer {
            Some(bearer) => bearer.clone(),
            None => bearer.insert(self.enroll().await?).clone(),
        };
        let url = url::Url::parse(&self.server)?;
        let addr: SocketAddr = format!(
            "{}:{}",
            url.host_str().context("a host")?,
            url.port_or_known_default().context("a port")?
        )
        .parse()
        .context("the server must be an IP address on loopback")?;
        if !addr.ip().is_loopback() || !self.bind.is_loopback() {
            bail!("reach-bench only ever connects loopback to loopback");
        }
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(self.bind, 0))?;
        let stream = socket.connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        let ws_url = format!("ws://{addr}{}", paths::CONNECT);
        let mut request = ws_url.into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {bearer}").parse()?);
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (mut socket, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .context("opening the WebSocket")?;
        let hello = AgentMessage::Hello {
            info: self.info(),
            running: vec![],
            instance: self.instance.clone(),
            // Simulated agents run live response only.
            capabilities: vec![],
            isolated: None,
        };
        socket
            .send(Message::text(serde_json::to_string(&hello)?))
            .await?;
        loop {
            let text = match socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None => {
                    bail!("the server closed the connection before its Welcome")
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(err).context("waiting for the Welcome"),
            };
            if let ServerMessage::Welcome {
                heartbeat_secs,
                inline_result_bytes,
                live_output_bytes,
                ..
            } = serde_json::from_str::<ServerMessage>(&text)?
            {
                return Ok(Connected {
                    socket,
                    bearer,
                    heartbeat_secs,
                    inline_limit: inline_result_bytes,
                    live_limit: live_output_bytes,
                });
            }
            bail!("the server spoke before its Welcome");
        }
    }

    /// Enrolls this machine: its bearer credential.
    async fn enroll(&self) -> anyhow::Result<String> {
        let request = reach_proto::agent::EnrollRequest {
            enrollment_token: self.token.clone(),
            info: self.info(),
        };
        let response = self
            .http
            .post(format!("{}{}", self.server, paths::ENROLL))
            .json(&request)
            .send()
            .await
            .context("enrolling")?;
        if !response.status().is_success() {
            bail!("enrolment answered {}", response.status());
        }
        let enrolled: reach_proto::agent::EnrollResponse = response.json().await?;
        Ok(format!("{}.{}", enrolled.machine_id, enrolled.credential))
    }

    async fn serve(&self, connected: Connected) -> anyhow::Result<()> {
        let Connected {
            mut socket,
            bearer,
            heartbeat_secs,
            inline_limit,
            live_limit,
        } = connected;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(heartbeat_secs.max(1)));
        heartbeat.tick().await;
        let live = Arc::new(reach_agent::live_output::LiveOutput::default());
        live.set_limit(live_limit);
        // A streaming script running, and what writes its lines.
        let mut running: Option<(Assignment, tokio::task::JoinHandle<String>)> = None;
        loop {
            tokio::select! {
                message = socket.next() => {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None => bail!("the server closed the connection"),
                        Some(Ok(_)) => continue,
                        Some(Err(err)) => return Err(err.into()),
                    };
                    match serde_json::from_str::<ServerMessage>(&text)? {
                        ServerMessage::Welcome { .. } => bail!("a second Welcome"),
                        ServerMessage::Run(assignment) => {
                            emit(&Event::Run { action: assignment.command.action_id.clone(), at_us: now_us() });
                            let plan = match &assignment.work {
                                Work::RunScript { args, .. } => Streaming::parse(args.as_deref()),
                                _ => None,
                            };
                            if let Some(plan) = plan.filter(|_| running.is_none())
                                && self.fetch(&bearer, &assignment).await.is_ok()
                            {
                                let writing = script::run(plan, live.clone(), assignment.command.clone());
                                running = Some((assignment, tokio::spawn(writing)));
                                continue;
                            }
                            let (outcome, result) = match self.fetch(&bearer, &assignment).await {
                                Ok(()) => self.run(&bearer, &assignment.command, &assignment.work, inline_limit, "ok\n".into()).await,
                                Err(why) => (Outcome::Failed { errors: vec![why], timed_out: false }, None),
                            };
                            let action = assignment.command.action_id.clone();
                            let finished = AgentMessage::Finished { command: assignment.command, outcome, result };
                            socket.send(Message::text(serde_json::to_string(&finished)?)).await?;
                            emit(&Event::Finished { action, at_us: now_us() });
                        }
                        ServerMessage::Cancel { .. } | ServerMessage::Ack(_) => {}
                    }
                }
                outputs = live.next() => {
                    for output in outputs {
                        socket.send(Message::text(serde_json::to_string(&output)?)).await?;
                    }
                }
                stdout = async { (&mut running.as_mut().expect("guarded").1).await }, if running.is_some() => {
                    let (assignment, _) = running.take().expect("guarded");
                    // The script's output goes before how it ended.
                    while let Some(output) = live.take() {
                        socket.send(Message::text(serde_json::to_string(&output)?)).await?;
                    }
                    let stdout = stdout.unwrap_or_default();
                    let (outcome, result) = self.run(&bearer, &assignment.command, &assignment.work, inline_limit, stdout).await;
                    let action = assignment.command.action_id.clone();
                    let finished = AgentMessage::Finished { command: assignment.command, outcome, result };
                    socket.send(Message::text(serde_json::to_string(&finished)?)).await?;
                    emit(&Event::Finished { action, at_us: now_us() });
                }
                _ = heartbeat.tick() => {
                    socket.send(Message::text(serde_json::to_string(&AgentMessage::Heartbeat)?)).await?;
                }
            }
        }
    }

    /// Takes a RunScript's or PutFile's library file as the real agent
    /// does: from the `Run` message when it came with it, else downloaded
    /// chunk by chunk (its bytes are read, not kept).
    async fn fetch(&self, bearer: &str, assignment: &Assignment) -> Result<(), String> {
        if assignment.inline_payload.is_some() || matches!(assignment.work, Work::GetFile { .. }) {
            return Ok(());
        }
        let command = &assignment.command;
        let mut chunk = 0;
        loop {
            let url = format!(
                "{}{}",
                self.server,
                paths::payload(&command.action_id, command.index, chunk)
            );
            let response = self
                .http
                .get(url)
                .bearer_auth(bearer)
                .send()
                .await
                .map_err(|err| format!("payload download failed: {err}"))?;
            if !response.status().is_success() {
                return Err(format!("payload download answered {}", response.status()));
            }
            let chunks: u32 = response
                .headers()
                .get(paths::CHUNKS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            response
                .bytes()
                .await
                .map_err(|err| format!("payload download failed: {err}"))?;
            chunk += 1;
            if chunk >= chunks {
                return Ok(());
            }
        }
    }

    /// Answers a command: a RunScript's transcript with `stdout`, inside
    /// `Finished` (the second value, base64) when the server's `Welcome`
    /// allowed that size, else uploaded first, as the real agent does.
    async fn run(
        &self,
        bearer: &str,
        command: &CommandRef,
        work: &Work,
        inline_limit: u64,
        stdout: String,
    ) -> (Outcome, Option<String>) {
        let completed = Outcome::Completed {
            sha256: None,
            path: None,
        };
        match work {
            Work::RunScript { script_name, .. } => {
                let transcript = ScriptTranscript {
                    script_name: script_name.clone(),
                    exit_code: 0,
                    script_output: stdout,
                    script_errors: String::new(),
                };
                let body = serde_json::to_vec(&transcript).expect("transcripts serialise");
                if body.len() as u64 <= inline_limit {
                    use base64::Engine;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
                    return (completed, Some(encoded));
                }
                let sent = self
                    .http
                    .put(format!(
                        "{}{}",
                        self.server,
                        paths::result(&command.action_id, command.index)
                    ))
                    .bearer_auth(bearer)
                    .body(body)
                    .send()
                    .await;
                let outcome = match sent {
                    Ok(response) if response.status().is_success() => completed,
                    Ok(response) => Outcome::Failed {
                        errors: vec![format!("result upload answered {}", response.status())],
                        timed_out: false,
                    },
                    Err(err) => Outcome::Failed {
                        errors: vec![format!("result upload failed: {err}")],
                        timed_out: false,
                    },
                };
                (outcome, None)
            }
            Work::PutFile { .. } => (completed, None),
            Work::GetFile { .. } => (
                Outcome::Failed {
                    errors: vec!["simulated agents do not collect files".into()],
                    timed_out: false,
                },
                None,
            ),
            // Never sent: their Hello lists no capabilities.
            other => (
                Outcome::Failed {
                    errors: vec![format!("simulated agents do not run {}", other.kind())],
                    timed_out: false,
                },
                None,
            ),
        }
    }
}
