//! Simulated agents: many per process, each a small task holding one real
//! WebSocket to the server and speaking the real agent protocol (Hello,
//! heartbeats, Run → the script, from the message or downloaded → transcript
//! upload → Finished → Ack), as the real agent does. A RunScript does not
//! run anything: the agent answers with a trivial transcript at once, so the
//! figures are Reach's own cost.
//!
//! A process holds at most 20,000 open files here, so the coordinator
//! spreads agents over several worker processes (`reach-bench agents`), each
//! on its own loopback source address (127.0.0.2, 127.0.0.3, ...). Workers
//! report on stdout as JSON lines; they stop when their stdin closes.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, ChildStdout, Command, Stdio};
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
/// (round-robin) from source address `bind`, then serves them until stdin closes.
pub async fn worker(
    servers: Vec<String>,
    token: String,
    count: usize,
    bind: IpAddr,
    label: String,
) -> anyhow::Result<()> {
    let http = reach_client::reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let connected = Arc::new(AtomicUsize::new(0));
    let all_connected = Arc::new(tokio::sync::Notify::new());
    // Enrolment and connection in parallel, but not all at once.
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let server = servers[i % servers.len()].clone();
        let agent = Agent {
            server,
            http: http.clone(),
            token: token.clone(),
            hostname: format!("{label}-{i:05}"),
            bind,
        };
        let gate = gate.clone();
        let connected = connected.clone();
        let all_connected = all_connected.clone();
        tasks.push(tokio::spawn(async move {
            let socket = {
                let _permit = gate.acquire().await.expect("the gate stays open");
                agent.connect().await
            };
            let socket = match socket {
                Ok(socket) => socket,
                Err(err) => {
                    emit(&Event::Error {
                        message: format!("{}: {err:#}", agent.hostname),
                    });
                    return;
                }
            };
            if connected.fetch_add(1, Ordering::SeqCst) + 1 == count {
                all_connected.notify_one();
            }
            if let Err(err) = agent.serve(socket).await {
                emit(&Event::Error {
                    message: format!("{}: {err:#}", agent.hostname),
                });
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

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

struct Agent {
    server: String,
    http: reach_client::reqwest::Client,
    token: String,
    hostname: String,
    bind: IpAddr,
}

struct Connected {
    socket: Socket,
    bearer: String,
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

    async fn connect(&self) -> anyhow::Result<Connected> {
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
        let bearer = format!("{}.{}", enrolled.machine_id, enrolled.credential);
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
            instance: format!("{:032x}", rand::random::<u128>()),
        };
        socket
            .send(Message::text(serde_json::to_string(&hello)?))
            .await?;
        Ok(Connected { socket, bearer })
    }

    async fn serve(&self, connected: Connected) -> anyhow::Result<()> {
        let Connected { mut socket, bearer } = connected;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(30));
        heartbeat.tick().await;
        let mut inline_limit = 0;
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
                        ServerMessage::Welcome { heartbeat_secs, inline_result_bytes, .. } => {
                            heartbeat = tokio::time::interval(Duration::from_secs(heartbeat_secs.max(1)));
                            heartbeat.tick().await;
                            inline_limit = inline_result_bytes;
                        }
                        ServerMessage::Run(assignment) => {
                            emit(&Event::Run { action: assignment.command.action_id.clone(), at_us: now_us() });
                            let (outcome, result) = match self.fetch(&bearer, &assignment).await {
                                Ok(()) => self.run(&bearer, &assignment.command, &assignment.work, inline_limit).await,
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

    /// Answers a command at once: a trivial transcript for RunScript, inside
    /// `Finished` (the second value, base64) when the server's `Welcome`
    /// allowed that size, else uploaded first, as the real agent does.
    async fn run(
        &self,
        bearer: &str,
        command: &CommandRef,
        work: &Work,
        inline_limit: u64,
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
                    script_output: "ok\n".into(),
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
        }
    }
}

/// The coordinator's handle on the worker processes.
pub struct Workers {
    children: Vec<Child>,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Event>,
}

impl Workers {
    /// The worker processes, and this one (which submits and polls): the
    /// load generator, whose CPU time the reports show beside the server's.
    pub fn generator_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.children.iter().map(Child::id).collect();
        pids.push(std::process::id());
        pids
    }

    /// Starts enough workers for `count` agents spread over `servers`.
    pub fn start(servers: &[String], token: &str, count: usize) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut children = Vec::new();
        let workers = count.div_ceil(PER_WORKER).max(1);
        for w in 0..workers {
            let share = count / workers + usize::from(w < count % workers);
            let mut child = Command::new(&exe)
                .arg("agents")
                .arg("--servers")
                .arg(servers.join(","))
                .arg("--token")
                .arg(token)
                .arg("--count")
                .arg(share.to_string())
                .arg("--bind")
                .arg(format!("127.0.0.{}", 2 + w))
                .arg("--label")
                .arg(format!("bench-w{w}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting a worker")?;
            let stdout: ChildStdout = child.stdout.take().context("worker stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(event) = serde_json::from_str::<Event>(&line)
                        && tx.send(event).is_err()
                    {
                        break;
                    }
                }
            });
            children.push(child);
        }
        Ok(Self { children, events })
    }

    /// Waits until every agent is connected; fails on a worker's error.
    pub async fn wait_connected(&mut self, count: usize) -> anyhow::Result<()> {
        let mut connected = 0;
        while connected < count {
            match self.events.recv().await {
                Some(Event::Connected { count }) => connected += count,
                Some(Event::Error { message }) => bail!("an agent failed: {message}"),
                Some(Event::Run { .. } | Event::Finished { .. }) => {}
                None => bail!("the workers stopped before all agents connected"),
            }
        }
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
