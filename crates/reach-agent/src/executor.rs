//! Runs assignments one at a time, in the order they arrive, and keeps the
//! messages for the server (Started, Finished) in an outbox until the
//! connection has sent them. A command is identified by (action id, index):
//! an assignment seen before is ignored, so a repeated delivery never runs a
//! command twice. Cancel stops the running command of an action (killing its
//! process tree) or drops it from the queue.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use reach_proto::agent::{AgentMessage, Assignment, CommandRef, Outcome};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::commands;

/// Most command ids remembered for de-duplication.
const REMEMBERED: usize = 4096;

#[derive(Default)]
struct Shared {
    outbox: VecDeque<AgentMessage>,
    queued: Vec<CommandRef>,
    running: Option<(CommandRef, CancellationToken)>,
    cancelled: HashSet<String>,
    seen: HashSet<CommandRef>,
    seen_order: VecDeque<CommandRef>,
}

#[derive(Clone)]
pub struct Executor {
    shared: Arc<Mutex<Shared>>,
    outbox_ready: Arc<Notify>,
    queue: mpsc::UnboundedSender<Assignment>,
    stop: CancellationToken,
}

impl Executor {
    pub fn start(context: commands::Context) -> Self {
        let (queue, mut assignments) = mpsc::unbounded_channel::<Assignment>();
        let executor = Self {
            shared: Arc::default(),
            outbox_ready: Arc::new(Notify::new()),
            queue,
            stop: CancellationToken::new(),
        };
        let worker = executor.clone();
        tokio::spawn(async move {
            loop {
                let assignment = tokio::select! {
                    a = assignments.recv() => match a { Some(a) => a, None => return },
                    _ = worker.stop.cancelled() => return,
                };
                worker.execute(&context, assignment).await;
            }
        });
        executor
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn post(&self, message: AgentMessage) {
        self.lock().outbox.push_back(message);
        self.outbox_ready.notify_one();
    }

    async fn execute(&self, context: &commands::Context, assignment: Assignment) {
        let command = assignment.command.clone();
        let token = CancellationToken::new();
        let cancelled = {
            let mut shared = self.lock();
            shared.queued.retain(|c| c != &command);
            let cancelled = shared.cancelled.contains(&command.action_id);
            if !cancelled {
                shared.running = Some((command.clone(), token.clone()));
            }
            cancelled
        };
        let outcome = if cancelled {
            Outcome::Failed {
                errors: vec!["Cancelled".into()],
                timed_out: false,
            }
        } else {
            self.post(AgentMessage::Started(command.clone()));
            tracing::info!(action.id = %command.action_id, command.index = command.index, "command started");
            commands::execute(context, &assignment, token).await
        };
        tracing::info!(action.id = %command.action_id, command.index = command.index, outcome = ?outcome, "command finished");
        let mut shared = self.lock();
        shared.running = None;
        shared
            .outbox
            .push_back(AgentMessage::Finished { command, outcome });
        drop(shared);
        self.outbox_ready.notify_one();
    }

    /// Queues an assignment unless it was seen before.
    pub fn submit(&self, assignment: Assignment) {
        let mut shared = self.lock();
        if !shared.seen.insert(assignment.command.clone()) {
            tracing::info!(action.id = %assignment.command.action_id, command.index = assignment.command.index, "repeated assignment ignored");
            return;
        }
        shared.seen_order.push_back(assignment.command.clone());
        if shared.seen_order.len() > REMEMBERED
            && let Some(old) = shared.seen_order.pop_front()
        {
            shared.seen.remove(&old);
        }
        shared.queued.push(assignment.command.clone());
        drop(shared);
        let _ = self.queue.send(assignment);
    }

    /// Cancels the action's running or queued command.
    pub fn cancel(&self, action_id: &str) {
        let mut shared = self.lock();
        shared.cancelled.insert(action_id.to_string());
        if let Some((command, token)) = &shared.running
            && command.action_id == action_id
        {
            tracing::info!(action.id = %action_id, "cancelling the running command");
            token.cancel();
        }
    }

    /// Commands this agent holds: running, queued, or finished but undelivered.
    pub fn held(&self) -> Vec<CommandRef> {
        let shared = self.lock();
        let mut held: Vec<CommandRef> = shared.running.iter().map(|(c, _)| c.clone()).collect();
        held.extend(shared.queued.iter().cloned());
        for message in &shared.outbox {
            if let AgentMessage::Finished { command, .. } = message {
                held.push(command.clone());
            }
        }
        held
    }

    /// The oldest undelivered message, if any.
    pub fn next_message(&self) -> Option<AgentMessage> {
        self.lock().outbox.front().cloned()
    }

    /// Marks the oldest message delivered.
    pub fn delivered(&self) {
        self.lock().outbox.pop_front();
    }

    /// Resolves when a message may be waiting in the outbox.
    pub async fn message_ready(&self) {
        if self.lock().outbox.is_empty() {
            self.outbox_ready.notified().await;
        }
    }

    pub fn stop(&self) {
        if let Some((_, token)) = &self.lock().running {
            token.cancel();
        }
        self.stop.cancel();
    }
}
