//! The agent's one WebSocket to the server: connect with the machine
//! credential, say Hello (with the commands still held), then pass Run and
//! Cancel to the executor, deliver the outbox one entry at a time (send
//! Finished with a small result inside it, or upload a larger one first,
//! then wait for the server's Ack), send a running script's output as it comes
//! (`live_output`, when the server's Welcome takes it), and heartbeat. On
//! any failure it reconnects after a jittered, doubling delay; it stops only
//! on shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use reach_client::{AgentClient, ClientError};
use reach_proto::agent::{AgentMessage, CommandRef, ServerMessage};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::executor::Executor;
use crate::live_output::LiveOutput;
use crate::outbox::{Entry, Outbox};
use crate::{Config, State, system};

/// The `Work` this agent runs (`Work::kind`), for its Hello.
pub const CAPABILITIES: [&str; 8] = [
    "PutFile",
    "RunScript",
    "GetFile",
    "Isolate",
    "Unisolate",
    "Offboard",
    "StopAndQuarantineFile",
    "CollectInvestigationPackage",
];

/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

/// What a session needs besides its socket.
pub struct Parts<'a> {
    /// The machine's identity and credential.
    pub state: &'a State,
    /// This agent process's id (see `AgentMessage::Hello`).
    pub instance: String,
    /// The servers to use, in order; `client` points at the one in use.
    pub servers: &'a [String],
    /// Calls to the server in use.
    pub client: &'a AgentClient,
    /// Runs live response commands one at a time.
    pub executor: &'a Executor,
    /// Runs response actions (isolate, release) one at a time, beside
    /// live response (`Work::is_response`).
    pub responses: &'a Executor,
    /// Finished commands not yet acknowledged.
    pub outbox: &'a Outbox,
    /// A running script's output, sent as it comes when the server takes it.
    pub live: &'a LiveOutput,
    /// The device's network isolation (its state goes in the Hello).
    pub isolation: &'a crate::commands::isolate::Isolation,
    /// Which servers to trust on `wss://`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Cancelled when the agent stops.
    pub shutdown: &'a CancellationToken,
}

/// The server refused this agent with 410: its machine was offboarded.
#[derive(Debug, thiserror::Error)]
#[error("the server says this machine was offboarded")]
pub struct Offboarded;

/// Why `run` returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The agent is stopping.
    Shutdown,
    /// The machine was offboarded: the agent deletes its credential and stops.
    Offboarded,
}

/// Holds the connection to the server (or the next one of a cluster) until
/// shutdown or offboarding, reconnecting with backoff.
pub async fn run(config: &Config, parts: &Parts<'_>) -> Ended {
    let shutdown = parts.shutdown;
    let min = Duration::from_millis(config.reconnect_min_ms.max(1));
    let max = Duration::from_millis(config.reconnect_max_ms.max(config.reconnect_min_ms.max(1)));
    let mut delay = min;
    let mut current = 0;
    loop {
        let started = Instant::now();
        match session(parts).await {
            Ok(()) if shutdown.is_cancelled() => return Ended::Shutdown,
            Ok(()) => tracing::info!("connection closed by the server"),
            Err(err) if err.is::<Offboarded>() => return Ended::Offboarded,
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "connection to the server failed"
            ),
        }
        if parts.servers.len() > 1 {
            // Another node carries on; the server's leases cover the one that failed.
            current = (current + 1) % parts.servers.len();
            parts.client.set_server(&parts.servers[current]);
            tracing::info!(server = %parts.servers[current], "moving to the next server");
        }
        if started.elapsed() >= STABLE {
            delay = min;
        }
        let jitter = rand::rng().random_range(0.5..1.5);
        let wait = delay.mul_f64(jitter).min(max);
        tracing::info!(delay_ms = wait.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return Ended::Shutdown,
        }
        delay = (delay * 2).min(max);
    }
}

fn websocket_url(server: &str) -> String {
    let ws = if let Some(rest) = server.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = server.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        server.to_string()
    };
    format!("{ws}{}", reach_proto::agent::paths::CONNECT)
}

/// The `Finished` message of an outbox entry. Its result file, if it still
/// needs delivering, travels inside the message when the server takes it
/// there (`inline_limit`, from its `Welcome`) and is uploaded first
/// otherwise.
async fn finished(
    parts: &Parts<'_>,
    entry: &Entry,
    inline_limit: u64,
) -> anyhow::Result<AgentMessage> {
    let mut message = AgentMessage::Finished {
        command: entry.command.clone(),
        outcome: entry.outcome.clone(),
        result: None,
    };
    if !entry.has_result || entry.uploaded {
        return Ok(message);
    }
    let bytes = tokio::fs::read(parts.outbox.result_path(entry.seq)).await?;
    let rest = serde_json::to_string(&message)?.len();
    if bytes.len() as u64 <= inline_limit && rest < reach_proto::agent::FINISHED_ROOM {
        use base64::Engine;
        if let AgentMessage::Finished { result, .. } = &mut message {
            *result = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
        }
        return Ok(message);
    }
    upload(parts, entry, bytes).await?;
    Ok(message)
}

/// Uploads an entry's result file. A server that no longer wants it (the
/// command ended meanwhile) is not an error.
async fn upload(parts: &Parts<'_>, entry: &Entry, bytes: Vec<u8>) -> anyhow::Result<()> {
    let command = &entry.command;
    match parts
        .client
        .upload_result(&command.action_id, command.index, bytes.into())
        .await
    {
        Ok(()) => {}
        Err(ClientError::Api {
            status, message, ..
        }) if status.is_client_error() => {
            tracing::warn!(action.id = %command.action_id, command.index = command.index, %status, message, "the server refused the result; sending the outcome anyway");
        }
        Err(err) => return Err(err.into()),
    }
    parts.outbox.mark_uploaded(entry.seq)
}

async fn session(parts: &Parts<'_>) -> anyhow::Result<()> {
    let server = parts.client.server();
    let mut request = websocket_url(&server).into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", parts.state.bearer()).parse()?,
    );
    let connected = tokio::select! {
        connected = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(tokio_tungstenite::Connector::Rustls(parts.tls.clone())),
        ) => connected,
        _ = parts.shutdown.cancelled() => return Ok(()),
    };
    let (mut socket, _) = match connected {
        Ok(connected) => connected,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 410 => {
            return Err(Offboarded.into());
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 401 => {
            anyhow::bail!(
                "the server refused this agent's credential: the machine may have been revoked; enroll it again"
            )
        }
        Err(err) => return Err(err.into()),
    };
    let hello = AgentMessage::Hello {
        info: system::machine_info(),
        running: [parts.executor.held(), parts.responses.active()].concat(),
        instance: parts.instance.clone(),
        capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        isolated: Some(parts.isolation.is_isolated()),
    };
    socket
        .send(Message::text(serde_json::to_string(&hello)?))
        .await?;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(30));
    heartbeat.tick().await;
    tracing::info!(server = %server, "connected");
    // The outbox entry sent and not yet acknowledged on this connection.
    let mut awaiting: Option<CommandRef> = None;
    // Outcomes wait for the server's Welcome, which says how large a
    // result may travel inside them.
    let mut inline_limit: Option<u64> = None;
    loop {
        tokio::select! {
            incoming = socket.next() => {
                let message = match incoming {
                    None => return Ok(()),
                    Some(message) => message?,
                };
                let text = match message {
                    Message::Text(text) => text,
                    Message::Close(_) => return Ok(()),
                    _ => continue,
                };
                match serde_json::from_str::<ServerMessage>(&text)? {
                    ServerMessage::Welcome { heartbeat_secs, inline_result_bytes, live_output_bytes, .. } => {
                        heartbeat = tokio::time::interval(Duration::from_secs(heartbeat_secs.max(1)));
                        heartbeat.tick().await;
                        inline_limit = Some(inline_result_bytes);
                        parts.live.set_limit(live_output_bytes);
                        // What the last connection may have lost goes again.
                        parts.live.resend();
                    }
                    ServerMessage::Run(assignment) if assignment.work.is_response() => parts.responses.submit(assignment),
                    ServerMessage::Run(assignment) => parts.executor.submit(assignment),
                    ServerMessage::Cancel { action_id } => {
                        parts.executor.cancel(&action_id);
                        parts.responses.cancel(&action_id);
                    }
                    ServerMessage::Ack(command) => {
                        parts.outbox.acknowledge(&command);
                        if awaiting.as_ref() == Some(&command) {
                            awaiting = None;
                        }
                    }
                }
            }
            _ = parts.outbox.ready(), if awaiting.is_none() && inline_limit.is_some() => {
                if let Some(entry) = parts.outbox.front() {
                    // A command's output goes before how it ended.
                    while let Some(output) = parts.live.take() {
                        socket.send(Message::text(serde_json::to_string(&output)?)).await?;
                    }
                    let finished = finished(parts, &entry, inline_limit.unwrap_or(0)).await?;
                    socket.send(Message::text(serde_json::to_string(&finished)?)).await?;
                    awaiting = Some(entry.command);
                }
            }
            outputs = parts.live.next(), if inline_limit.is_some() => {
                for output in outputs {
                    socket.send(Message::text(serde_json::to_string(&output)?)).await?;
                }
            }
            _ = heartbeat.tick() => {
                socket.send(Message::text(serde_json::to_string(&AgentMessage::Heartbeat)?)).await?;
            }
            _ = parts.shutdown.cancelled() => {
                let _ = socket.close(None).await;
                return Ok(());
            }
        }
    }
}
