//! The agent's one WebSocket to the server: connect with the machine
//! credential, say Hello (with the commands still held), then pass Run and
//! Cancel to the executor, send its outbox, and heartbeat. On any failure it
//! reconnects after a jittered, doubling delay; it stops only on shutdown.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use reach_proto::agent::{AgentMessage, ServerMessage};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

use crate::executor::Executor;
use crate::{Config, State, system};

/// A connection that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(30);

pub async fn run(
    config: &Config,
    state: &State,
    executor: &Executor,
    shutdown: &CancellationToken,
) {
    let min = Duration::from_millis(config.reconnect_min_ms.max(1));
    let max = Duration::from_millis(config.reconnect_max_ms.max(config.reconnect_min_ms.max(1)));
    let mut delay = min;
    loop {
        let started = Instant::now();
        match session(state, executor, shutdown).await {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => tracing::info!("connection closed by the server"),
            Err(err) => tracing::warn!(
                error = format!("{err:#}"),
                "connection to the server failed"
            ),
        }
        if started.elapsed() >= STABLE {
            delay = min;
        }
        let jitter = rand::rng().random_range(0.5..1.5);
        let wait = delay.mul_f64(jitter).min(max);
        tracing::info!(delay_ms = wait.as_millis() as u64, "reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
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

async fn session(
    state: &State,
    executor: &Executor,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut request = websocket_url(&state.server).into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", state.bearer()).parse()?,
    );
    let (mut socket, _) = tokio::select! {
        connected = tokio_tungstenite::connect_async(request) => connected?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let hello = AgentMessage::Hello {
        info: system::machine_info(),
        running: executor.held(),
    };
    socket
        .send(Message::text(serde_json::to_string(&hello)?))
        .await?;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(30));
    heartbeat.tick().await;
    tracing::info!(server = %state.server, "connected");
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
                    ServerMessage::Welcome { heartbeat_secs, .. } => {
                        heartbeat = tokio::time::interval(Duration::from_secs(heartbeat_secs.max(1)));
                        heartbeat.tick().await;
                    }
                    ServerMessage::Run(assignment) => executor.submit(assignment),
                    ServerMessage::Cancel { action_id } => executor.cancel(&action_id),
                }
            }
            _ = executor.message_ready() => {
                while let Some(message) = executor.next_message() {
                    socket.send(Message::text(serde_json::to_string(&message)?)).await?;
                    executor.delivered();
                }
            }
            _ = heartbeat.tick() => {
                socket.send(Message::text(serde_json::to_string(&AgentMessage::Heartbeat)?)).await?;
            }
            _ = shutdown.cancelled() => {
                let _ = socket.close(None).await;
                return Ok(());
            }
        }
    }
}
