//! Runs assignments one at a time, in the order they arrive, and puts how
//! each ended into the durable outbox. A command is identified by (action
//! id, index): an assignment seen before is ignored, so a repeated delivery
//! never runs a command twice. Cancel stops the running command of an action
//! (killing its process tree) or drops it from the queue.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use reach_proto::agent::{Assignment, CommandRef, Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::commands;
use crate::outbox::Outbox;

/// Most command and action ids remembered for de-duplication and cancels.
const REMEMBERED: usize = 4096;

/// A set that forgets its oldest members beyond `REMEMBERED`.
struct Recent<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Default for Recent<T> {
    fn default() -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Recent<T> {
    /// Adds `item`; false when it was already there.
    fn insert(&mut self, item: T) -> bool {
        if !self.set.insert(item.clone()) {
            return false;
        }
        self.order.push_back(item);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    fn contains(&self, item: &T) -> bool {
        self.set.contains(item)
    }
}

#[derive(Default)]
struct Shared {
    queued: Vec<CommandRef>,
    running: Option<(CommandRef, CancellationToken)>,
    cancelled: Recent<String>,
    seen: Recent<CommandRef>,
}

/// Runs commands one at a time, de-duplicated, each cancellable.
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Mutex<Shared>>,
    outbox: Arc<Outbox>,
    queue: mpsc::UnboundedSender<Assignment>,
    stop: CancellationToken,
}

impl Executor {
    /// Starts the worker task running commands with `context`.
    pub fn start(context: commands::Context, outbox: Arc<Outbox>) -> Self {
        let (queue, mut assignments) = mpsc::unbounded_channel::<Assignment>();
        let executor = Self {
            shared: Arc::default(),
            outbox,
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
        let done = if cancelled {
            commands::Done {
                outcome: Outcome::Failed {
                    errors: vec!["Cancelled".into()],
                    timed_out: false,
                },
                result: None,
            }
        } else {
            tracing::info!(action.id = %command.action_id, command.index = command.index, "command started");
            commands::execute(context, &assignment, token).await
        };
        if self.stop.is_cancelled() && !cancelled {
            // The agent is stopping: the command was cut short, not finished.
            // Leaving it out of the outbox lets the server see the restart.
            self.lock().running = None;
            return;
        }
        tracing::info!(action.id = %command.action_id, command.index = command.index, outcome = ?done.outcome, "command finished");
        if let Err(err) = self
            .outbox
            .push(command.clone(), done.outcome, done.result.as_deref())
        {
            tracing::error!(action.id = %command.action_id, command.index = command.index, error = format!("{err:#}"), "saving the command's outcome failed");
        }
        self.lock().running = None;
    }

    /// Queues an assignment unless it was seen before.
    pub fn submit(&self, assignment: Assignment) {
        let mut shared = self.lock();
        if !shared.seen.insert(assignment.command.clone()) {
            tracing::info!(action.id = %assignment.command.action_id, command.index = assignment.command.index, "repeated assignment ignored");
            return;
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

    /// Commands this agent holds: running, queued, or finished but not acknowledged.
    pub fn held(&self) -> Vec<CommandRef> {
        let mut held = self.active();
        held.extend(self.outbox.held());
        held
    }

    /// Commands running or queued here (not those in the outbox).
    pub fn active(&self) -> Vec<CommandRef> {
        let shared = self.lock();
        let mut active: Vec<CommandRef> = shared.running.iter().map(|(c, _)| c.clone()).collect();
        active.extend(shared.queued.iter().cloned());
        active
    }

    /// Stops taking work and kills the running command.
    pub fn stop(&self) {
        self.stop.cancel();
        if let Some((_, token)) = &self.lock().running {
            token.cancel();
        }
    }
}
