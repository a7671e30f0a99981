//! Enrolment and the agent's WebSocket. One task per connection reads the
//! agent's messages, hands it the next command from the store when it is
//! idle or woken, records results, and closes on shutdown, revocation or
//! silence (three missed heartbeats).
//!
//! A connection runs at most one command of each lane at a time (live
//! response, and response actions beside it: `store::Lane`), and only work
//! its agent's Hello says it runs; which command is next is always decided
//! by `Store::claim_next_command`, never by this task's memory
//! (`agents/dispatch.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use reach_proto::agent::{AgentMessage, CommandRef, EnrollRequest, EnrollResponse, ServerMessage};
use tokio::sync::mpsc;

use super::machine_info::check_info;
use super::{AgentIdentity, authenticate};
use crate::SharedState;
use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::hub::HubEvent;
use crate::store::{Finish, StoreError};
use crate::time::Micros;

/// `POST /agent/v1/enroll`: trades an enrollment token for a machine identity.
pub async fn enroll(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    notes: crate::audit::Notes,
    crate::http::JsonBody(request): crate::http::JsonBody<EnrollRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    check_info(&request.info)?;
    let client = crate::net::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    let mut raw = [0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    let machine_id = hex::encode(raw);
    let credential = auth::random_secret(32);
    let machine = state
        .store
        .enroll_machine(
            &auth::sha256_hex(&request.enrollment_token),
            &machine_id,
            &auth::sha256_hex(&credential),
            &request.info,
            Some(&client.to_string()),
            Micros::now(),
        )
        .await
        .map_err(|err| match err {
            StoreError::NotFound(_) => ApiError::Unauthorized("Invalid enrollment token".into()),
            other => other.into(),
        })?;
    notes.claimed(
        crate::audit::Actor::machine(&machine.id),
        &machine.tenant_id,
    );
    notes.machine(&machine.id);
    notes.detail("computerDnsName", machine.info.hostname.as_str());
    tracing::info!(machine.id = %machine.id, tenant.id = %machine.tenant_id, machine.name = %machine.info.hostname, "agent enrolled");
    Ok(Json(EnrollResponse {
        machine_id,
        credential,
    }))
}

/// The most agent connections to hold: the configured number, or the
/// process's open-file limit less what the database, stored files and API
/// clients need (a quarter, at most 1,000); None when the limit is unknown.
fn connection_cap(configured: usize) -> Option<usize> {
    if configured > 0 {
        return Some(configured);
    }
    let (soft, _) = rlimit::Resource::NOFILE.get().ok()?;
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    Some(soft - (soft / 4).min(1000))
}

/// `GET /agent/v1/connect`: the agent's WebSocket.
pub async fn connect(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    slot: Option<axum::Extension<std::sync::Arc<crate::connections::Slot>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let identity = authenticate(&state, &headers).await?;
    let cap = connection_cap(state.config.agents.max_connections);
    let held = state.hub.connected_count();
    if cap.is_some_and(|cap| held >= cap) && !state.hub.is_connected(&identity.machine_id) {
        tracing::warn!(machine.id = %identity.machine_id, connections = held, "refusing an agent connection: this node holds its maximum");
        return Err(ApiError::Unavailable(format!(
            "This server holds its maximum of {held} agent connections; retry later or connect to another node"
        )));
    }
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "Agents connect with a WebSocket upgrade: {rejection}"
        ))
    })?;
    let max = state.config.agents.max_message_bytes;
    let client = crate::net::client_ip(peer.ip(), &headers, &state.config.trusted_proxies);
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            // An agent's connection has its own cap, not the API's.
            if let Some(axum::Extension(slot)) = slot {
                slot.become_agent();
            }
            let machine_id = identity.machine_id.clone();
            if let Err(err) = Session::run(state, identity, client, socket).await {
                tracing::warn!(machine.id = %machine_id, error = format!("{err:#}"), "agent connection ended with an error");
            }
        }))
}

pub(super) struct Session {
    pub(super) state: SharedState,
    pub(super) identity: AgentIdentity,
    socket: WebSocket,
    /// The live response command this agent is running, if any.
    pub(super) in_flight: Option<CommandRef>,
    /// The response action's command it is running, if any.
    pub(super) in_flight_response: Option<CommandRef>,
    /// The agent process's id from its Hello (commands are handed to it).
    pub(super) instance: String,
    /// The `Work` types the agent runs (its Hello's `capabilities`).
    pub(super) capabilities: Vec<String>,
    /// The agent's version, for the error an old agent's command gets.
    pub(super) agent_version: String,
    /// When to try a claim again that the database failed.
    pub(super) claim_again_at: Option<tokio::time::Instant>,
    /// The agent reported its Offboard: the machine is revoked, and this
    /// connection ends (its next one is answered 410).
    offboarded: bool,
    /// Pieces of live output this connection may still send.
    output_allowance: super::output::Allowance,
}

impl Session {
    async fn run(
        state: SharedState,
        identity: AgentIdentity,
        peer: std::net::IpAddr,
        mut socket: WebSocket,
    ) -> anyhow::Result<()> {
        let heartbeat = Duration::from_secs(state.config.agents.heartbeat_secs.max(1));
        let hello = tokio::time::timeout(heartbeat * 3, socket.recv()).await;
        let (info, running, instance, capabilities, isolated) = match hello {
            Ok(Some(Ok(Message::Text(text)))) => {
                match serde_json::from_str::<AgentMessage>(&text) {
                    Ok(AgentMessage::Hello {
                        info,
                        running,
                        instance,
                        capabilities,
                        isolated,
                    }) => (info, running, instance, capabilities, isolated),
                    _ => anyhow::bail!("the first message was not a valid Hello"),
                }
            }
            _ => anyhow::bail!("no Hello from the agent"),
        };
        if let Err(err) = check_info(&info) {
            anyhow::bail!("invalid Hello: {err}");
        }
        let capabilities = super::dispatch::check_capabilities(capabilities)?;
        let machine_id = identity.machine_id.clone();
        let renamed = state
            .store
            .machine_connected(
                &machine_id,
                &info,
                Some(&peer.to_string()),
                isolated,
                Micros::now(),
            )
            .await?;
        if let Some(former) = renamed {
            // A device that changes the name it reports may be taking another's.
            tracing::warn!(machine.id = %machine_id, machine.former_name = %former, machine.name = %info.hostname, "a machine reported a new name");
            let mut event = crate::audit::event(
                &identity.tenant_id,
                crate::audit::Actor::machine(&machine_id),
                crate::audit::Operation::MachineRenamed,
                crate::audit::Outcome::Succeeded,
                serde_json::json!({ "from": former, "to": info.hostname }),
            );
            event.machine_id = Some(machine_id.clone());
            event.source_ip = Some(peer.to_string());
            state.auditor.record(event).await;
        }
        let (conn_id, events) = state.hub.register(&machine_id);
        tracing::info!(machine.id = %machine_id, peer = %peer, agent.version = %info.agent_version, "agent connected");
        let mut session = Session {
            state: state.clone(),
            identity,
            socket,
            in_flight: None,
            in_flight_response: None,
            instance,
            capabilities,
            agent_version: info.agent_version.clone(),
            claim_again_at: None,
            offboarded: false,
            output_allowance: Default::default(),
        };
        let result = session.serve(running, events, heartbeat).await;
        state.hub.unregister(&machine_id, conn_id);
        if !state.hub.is_connected(&machine_id)
            && let Err(err) = state
                .store
                .machine_disconnected(&machine_id, Micros::now())
                .await
        {
            tracing::warn!(machine.id = %machine_id, error = %err, "recording the disconnect failed");
        }
        tracing::info!(machine.id = %machine_id, "agent disconnected");
        result
    }

    pub(super) async fn send(&mut self, message: &ServerMessage) -> anyhow::Result<()> {
        let text = serde_json::to_string(message)?;
        self.socket.send(Message::Text(text.into())).await?;
        Ok(())
    }

    async fn serve(
        &mut self,
        agent_running: Vec<CommandRef>,
        mut events: mpsc::Receiver<HubEvent>,
        heartbeat: Duration,
    ) -> anyhow::Result<()> {
        let machine_id = self.identity.machine_id.clone();
        self.send(&ServerMessage::Welcome {
            machine_id: machine_id.clone(),
            heartbeat_secs: heartbeat.as_secs(),
            inline_result_bytes: super::finished::inline_result_limit(&self.state.config),
            live_output_bytes: super::output::live_output_limit(&self.state.config),
        })
        .await?;
        self.reconcile(agent_running).await?;
        // Most connections (a fleet reconnecting after a restart) have
        // nothing to run: a read says so without the writer's turn. An
        // action created after this read wakes the connection, which the
        // hub registered before.
        if self.in_flight.is_none() || self.in_flight_response.is_none() {
            match self.state.store.has_active_action(&machine_id).await {
                Ok(true) => self.dispatch().await?,
                Ok(false) => {}
                Err(err) => self.claim_later(&err),
            }
        }
        let shutdown = self.state.shutdown.clone();
        let silence = heartbeat * 3;
        loop {
            let claim_again_at = self.claim_again_at;
            tokio::select! {
                _ = tokio::time::sleep_until(claim_again_at.unwrap_or_else(tokio::time::Instant::now)),
                    if claim_again_at.is_some() => {
                    self.claim_again_at = None;
                    self.dispatch().await?;
                }
                message = tokio::time::timeout(silence, self.socket.recv()) => {
                    let message = match message {
                        Err(_) => anyhow::bail!("no message from the agent for {} s", silence.as_secs()),
                        Ok(None) | Ok(Some(Err(_))) => return Ok(()),
                        Ok(Some(Ok(message))) => message,
                    };
                    let text = match message {
                        Message::Text(text) => text,
                        Message::Close(_) => return Ok(()),
                        Message::Ping(_) | Message::Pong(_) => continue,
                        Message::Binary(_) => anyhow::bail!("binary messages are not part of the protocol"),
                    };
                    let message: AgentMessage = serde_json::from_str(&text)
                        .map_err(|err| anyhow::anyhow!("invalid message from the agent: {err}"))?;
                    self.state.hub.seen(&machine_id);
                    self.handle(message).await?;
                    if self.offboarded {
                        tracing::warn!(machine.id = %machine_id, "machine offboarded; closing its connection");
                        let _ = self.socket.send(Message::Close(None)).await;
                        return Ok(());
                    }
                }
                event = events.recv() => match event {
                    Some(HubEvent::Wake) => self.dispatch().await?,
                    Some(HubEvent::Cancel { action_id }) => {
                        self.send(&ServerMessage::Cancel { action_id: action_id.clone() }).await?;
                        for slot in [&mut self.in_flight, &mut self.in_flight_response] {
                            if slot.as_ref().is_some_and(|c| c.action_id == action_id) {
                                *slot = None;
                            }
                        }
                        self.dispatch().await?;
                    }
                    Some(HubEvent::Close) | None => {
                        let _ = self.socket.send(Message::Close(None)).await;
                        return Ok(());
                    }
                },
                _ = shutdown.cancelled() => {
                    let _ = self.socket.send(Message::Close(None)).await;
                    return Ok(());
                }
            }
        }
    }

    /// Commands the store thinks run on this machine but the agent does not
    /// report: the agent restarted in between, so they failed.
    async fn reconcile(&mut self, agent_running: Vec<CommandRef>) -> anyhow::Result<()> {
        let machine_id = self.identity.machine_id.clone();
        for running in self.state.store.running_commands(&machine_id).await? {
            let command = running.command;
            if agent_running.contains(&command) {
                *self.slot(running.lane) = Some(command);
                continue;
            }
            // Handed to this very process, which does not hold it: it never
            // arrived (the connection or the node carrying it went away).
            if !self.instance.is_empty()
                && running.agent_instance == self.instance
                && self
                    .state
                    .store
                    .requeue_command(&machine_id, &command)
                    .await?
            {
                tracing::info!(machine.id = %machine_id, action.id = %command.action_id, command.index = command.index, "command never reached the agent; handing it out again");
                continue;
            }
            let finish = Finish::Failed {
                errors: vec!["The agent restarted while the command was running".into()],
                timed_out: false,
            };
            if self
                .state
                .store
                .finish_command(&machine_id, &command, &finish, None, Micros::now())
                .await?
                .is_some()
            {
                super::finished::audit_finish(&self.state, &self.identity, &command, &finish).await;
            }
            tracing::warn!(machine.id = %machine_id, action.id = %command.action_id, command.index = command.index, "command lost to an agent restart");
        }
        Ok(())
    }

    async fn handle(&mut self, message: AgentMessage) -> anyhow::Result<()> {
        match message {
            AgentMessage::Hello { .. } => anyhow::bail!("Hello sent twice"),
            AgentMessage::Heartbeat => Ok(()),
            AgentMessage::Output {
                command,
                stream,
                offset,
                text,
            } => {
                let piece = super::output::Piece {
                    command,
                    stream,
                    offset,
                    text,
                };
                super::output::record(
                    &self.state,
                    &self.identity,
                    self.in_flight.as_ref(),
                    &mut self.output_allowance,
                    piece,
                )
                .await;
                Ok(())
            }
            AgentMessage::Finished {
                command,
                outcome,
                result,
            } => {
                let finished =
                    super::finished::record(&self.state, &self.identity, &command, outcome, result)
                        .await?;
                for slot in [&mut self.in_flight, &mut self.in_flight_response] {
                    if slot.as_ref() == Some(&command) {
                        *slot = None;
                    }
                }
                if finished.is_some() {
                    // Its followers here see the end (and the transcript)
                    // now; those on other nodes at their next poll, which
                    // spares every finish of a fleet a notice.
                    let action = crate::followers::Followed::Action(command.action_id.clone());
                    self.state.followers.wake(&action);
                }
                self.send(&ServerMessage::Ack(command)).await?;
                if let Some(done) = &finished
                    && matches!(done.command.work, reach_proto::agent::Work::Offboard)
                    && done.command.status == reach_proto::api::CommandStatus::Completed
                {
                    self.offboarded = true;
                    return Ok(());
                }
                // When this action just ended, another may wait behind it
                // (a batch's action queued while the machine was busy): the
                // finish read whether one does. One created since wakes
                // this connection itself.
                if finished.is_some_and(|done| done.action_status.is_final() && !done.others_active)
                {
                    return Ok(());
                }
                self.dispatch().await
            }
        }
    }
}
