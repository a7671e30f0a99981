//! The batching writer: every entry of the process passes one task that
//! commits whatever is queued in one transaction, and each caller hears
//! back only once its entry is committed (or that it could not be). A
//! batch the database refuses is tried again for up to a minute (a pool
//! timeout under a connection storm, a failover), callers waiting, before
//! it is given up. It never drops an entry silently: a failure is logged
//! and answered.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

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

/// How long a batch the database refused is tried again before it is given up.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// The longest wait between two tries.
const MOST_DELAY: Duration = Duration::from_secs(5);

/// Appends one batch, trying again while `RETRY_FOR` allows. An append is
/// one transaction, so a refused try left nothing behind.
async fn append(store: &dyn AuditLog, events: &[AuditEvent]) -> bool {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut tries = 1u32;
    loop {
        let err = match store.append_audit(events).await {
            Ok(_) => return true,
            Err(err) => err,
        };
        if started.elapsed() + delay > RETRY_FOR {
            tracing::error!(
                error = format!("{err:#}"),
                events = events.len(),
                tries,
                "audit entries could not be written"
            );
            return false;
        }
        tracing::warn!(
            error = format!("{err:#}"),
            events = events.len(),
            tries,
            "audit entries not written yet; trying again"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MOST_DELAY);
        tries += 1;
    }
}

impl Auditor {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn AuditLog>) -> Self {
        let (queue, mut incoming) = mpsc::channel::<(AuditEvent, oneshot::Sender<bool>)>(4096);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while incoming.recv_many(&mut batch, BATCH).await > 0 {
                let (events, waiting): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                let written = append(store.as_ref(), &events).await;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::odata::Query;
    use crate::store::{AuditEntry, StoreError, StoreResult};
    use crate::time::Micros;

    /// Refuses the first `failures` appends, then keeps what it is given.
    struct Flaky {
        failures: Mutex<u32>,
        kept: Mutex<Vec<AuditEvent>>,
    }

    #[async_trait]
    impl AuditLog for Flaky {
        async fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<Vec<AuditEntry>> {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(StoreError::Other(anyhow::anyhow!(
                    "pool timed out while waiting for an open connection"
                )));
            }
            self.kept.lock().unwrap().extend_from_slice(events);
            Ok(Vec::new())
        }
        async fn list_audit(
            &self,
            _: &str,
            _: &Query,
        ) -> StoreResult<(Vec<AuditEntry>, Option<u64>)> {
            unreachable!()
        }
        async fn audit_page(&self, _: i64, _: Micros, _: u32) -> StoreResult<Vec<AuditEntry>> {
            unreachable!()
        }
        async fn prune_audit(&self, _: Micros, _: AuditEvent) -> StoreResult<Option<AuditEntry>> {
            unreachable!()
        }
    }

    fn event(operation: &str) -> AuditEvent {
        AuditEvent {
            time: Micros(1),
            tenant_id: "t".into(),
            actor_type: "system".into(),
            actor_id: "reach".into(),
            actor_name: "reach".into(),
            source_ip: None,
            operation: operation.into(),
            machine_id: None,
            target: None,
            outcome: "Succeeded".into(),
            http_status: None,
            details: "{}".into(),
        }
    }

    fn flaky(failures: u32) -> Arc<Flaky> {
        Arc::new(Flaky {
            failures: Mutex::new(failures),
            kept: Mutex::new(Vec::new()),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_the_database_refused_for_a_while_is_still_written() {
        let store = flaky(4);
        let auditor = Auditor::start(store.clone());
        assert!(auditor.record(event("BatchCreated")).await);
        assert_eq!(*store.kept.lock().unwrap(), vec![event("BatchCreated")]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_the_database_keeps_refusing_is_answered_as_not_written() {
        let store = flaky(u32::MAX);
        let auditor = Auditor::start(store.clone());
        let started = Instant::now();
        assert!(!auditor.record(event("BatchCreated")).await);
        assert!(started.elapsed() <= RETRY_FOR);
        assert!(started.elapsed() >= RETRY_FOR - MOST_DELAY);
        assert!(store.kept.lock().unwrap().is_empty());
    }
}
