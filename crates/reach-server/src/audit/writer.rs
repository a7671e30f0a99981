//! The batching writer: every entry of the process passes one task that
//! commits whatever is queued in one transaction, and each caller hears
//! back only once its entry is committed (or that it could not be). It
//! never drops an entry silently: a failure is logged and answered.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{AuditEvent, AuditLog};

/// Appends events in batches: each caller waits until its event is
/// committed, and events that arrive while a batch commits go together in
/// the next one (one transaction per batch, not per event).
pub struct Auditor {
    queue: mpsc::Sender<(AuditEvent, oneshot::Sender<bool>)>,
}

/// Events per transaction, at most.
const BATCH: usize = 256;

impl Auditor {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn AuditLog>) -> Self {
        let (queue, mut incoming) = mpsc::channel::<(AuditEvent, oneshot::Sender<bool>)>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while incoming.recv_many(&mut batch, BATCH).await > 0 {
                let (events, waiting): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                let written = match store.append_audit(&events).await {
                    Ok(_) => true,
                    Err(err) => {
                        tracing::error!(
                            error = format!("{err:#}"),
                            events = events.len(),
                            "audit entries could not be written"
                        );
                        false
                    }
                };
                for done in waiting {
                    let _ = done.send(written);
                }
            }
        });
        Self { queue }
    }

    /// Appends one event and waits until it is committed. False (and an
    /// error in the log) when it could not be written.
    pub async fn record(&self, event: AuditEvent) -> bool {
        let (done, written) = oneshot::channel();
        if self.queue.send((event, done)).await.is_err() {
            tracing::error!("the audit writer has stopped; an entry was not written");
            return false;
        }
        written.await.unwrap_or(false)
    }
}
