//! SQLite's one writer connection and group commit. Callers take turns on
//! the writer; each caller's statements run inside a savepoint of a
//! transaction that callers share, and one COMMIT makes a whole group
//! durable: the pages several callers change (the newest leaf of each
//! index, the small partial indexes of active actions) are written to the
//! WAL once per group instead of once per caller.
//!
//! A caller whose statements are done either commits the group at once (no
//! other caller is waiting for the writer, after letting this worker's other
//! ready tasks reach it) or leaves it open for the callers queued behind it
//! and asks the committer task to commit after them. Either way it is
//! answered only once the COMMIT that holds its changes has returned: no
//! caller hears of a change before it is durable. A caller that fails rolls
//! back its own savepoint and leaves the others' changes in the group; if
//! SQLite ends the whole transaction (an I/O error, a full disk), every
//! member of the group is told it failed.
//!
//! It must never answer a member before its group's COMMIT, nor leave a
//! group open with no one bound to commit it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc, watch};

use super::{BUSY_TIMEOUT, DbError};

/// What a group's members hear: the COMMIT's outcome.
type Outcome = Option<Result<(), Arc<str>>>;

/// The writer connection and the transaction its callers share.
pub(in crate::store::sql) struct Writer {
    conn: Connection,
    group: Option<Group>,
    committed: Arc<Committed>,
}

/// What group commit did since the store opened (`/metrics`).
#[derive(Default)]
pub(in crate::store::sql) struct Committed {
    /// COMMITs that made callers' changes durable.
    pub(in crate::store::sql) commits: AtomicU64,
    /// Callers' write transactions those COMMITs held.
    pub(in crate::store::sql) writes: AtomicU64,
}

/// The open transaction and the callers whose changes are in it.
struct Group {
    /// Callers whose savepoints were released into it, waiting for COMMIT.
    members: usize,
    outcome: watch::Sender<Outcome>,
}

/// The writer, behind an async turn, with its committer task.
pub(in crate::store::sql) struct Turns {
    writer: Arc<Mutex<Writer>>,
    /// Callers waiting for the writer's turn.
    waiting: Arc<AtomicUsize>,
    /// Wakes the committer: a group was left open for the callers queued.
    commit_wanted: mpsc::Sender<()>,
    committed: Arc<Committed>,
}

impl Turns {
    /// The writer, and its committer task on the current runtime (it ends
    /// with these turns).
    pub(in crate::store::sql) fn new(conn: Connection) -> Self {
        let committed = Arc::new(Committed::default());
        let writer = Arc::new(Mutex::new(Writer {
            conn,
            group: None,
            committed: committed.clone(),
        }));
        let (commit_wanted, mut wanted) = mpsc::channel::<()>(1);
        let committer = writer.clone();
        tokio::spawn(async move {
            while wanted.recv().await.is_some() {
                // Queued behind the callers that were waiting: they joined.
                committer.lock().await.finish_group();
            }
        });
        Turns {
            writer,
            waiting: Arc::new(AtomicUsize::new(0)),
            commit_wanted,
            committed,
        }
    }

    /// What group commit did so far.
    pub(in crate::store::sql) fn committed(&self) -> &Committed {
        &self.committed
    }

    /// Waits for the writer's turn and opens this caller's savepoint, in the
    /// group's transaction (begun here, `BEGIN IMMEDIATE`, when none is
    /// open). While another process holds the file's write lock (an
    /// operator's subcommand) it waits here asleep in the runtime, never in
    /// SQLite's busy handler on a runtime thread, for `BUSY_TIMEOUT` at most.
    pub(in crate::store::sql) async fn begin(&self) -> Result<SqliteTx, DbError> {
        let mut writer = {
            let _waiting = Waiting::count(&self.waiting);
            self.writer.clone().lock_owned().await
        };
        if writer.group.is_some() && writer.conn.is_autocommit() {
            // SQLite ended the shared transaction under an earlier caller.
            writer.fail_group(ROLLED_BACK);
        }
        if writer.group.is_none() {
            if !writer.conn.is_autocommit() {
                // A transaction whose rollback failed: end it first.
                writer.conn.execute_batch("ROLLBACK")?;
            }
            begin_immediate(&mut writer).await?;
            let (outcome, _) = watch::channel(None);
            writer.group = Some(Group {
                members: 0,
                outcome,
            });
        }
        let tx = SqliteTx {
            writer: Some(writer),
            released: false,
            waiting: self.waiting.clone(),
            commit_wanted: self.commit_wanted.clone(),
        };
        tx.conn().execute_batch("SAVEPOINT member")?;
        Ok(tx)
    }
}

async fn begin_immediate(writer: &mut OwnedMutexGuard<Writer>) -> Result<(), DbError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match writer.conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => return Ok(()),
            Err(err) if is_busy(&err) && started.elapsed() < BUSY_TIMEOUT => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// SQLite's answer while another connection holds the lock it needs.
fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Counts a caller waiting for the turn, until it has it or gives up.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Writer {
    /// Commits the open group (rolls back one with no members) and tells
    /// its members.
    fn finish_group(&mut self) {
        let Some(group) = self.group.take() else {
            return;
        };
        let outcome = if group.members == 0 {
            self.rollback_all();
            Ok(())
        } else {
            match self.conn.execute_batch("COMMIT") {
                Ok(()) => {
                    self.committed.commits.fetch_add(1, Ordering::Relaxed);
                    let writes = group.members as u64;
                    self.committed.writes.fetch_add(writes, Ordering::Relaxed);
                    Ok(())
                }
                Err(err) => {
                    tracing::error!(error = %err, members = group.members, "a SQLite group commit failed");
                    self.rollback_all();
                    Err(Arc::from(err.to_string()))
                }
            }
        };
        group.outcome.send_replace(Some(outcome));
    }

    /// Ends the transaction without its changes and tells the members.
    fn fail_group(&mut self, why: &str) {
        self.rollback_all();
        if let Some(group) = self.group.take() {
            group.outcome.send_replace(Some(Err(Arc::from(why))));
        }
    }

    fn rollback_all(&self) {
        if !self.conn.is_autocommit()
            && let Err(err) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::warn!(error = %err, "a SQLite transaction could not be rolled back");
        }
    }
}

/// One caller's part of the writer's transaction, in its turn. Dropped
/// without `commit`, its savepoint rolls back and the group goes on.
pub(in crate::store::sql) struct SqliteTx {
    writer: Option<OwnedMutexGuard<Writer>>,
    /// Its savepoint is released into the group (its changes are the
    /// group's now, to be committed with it).
    released: bool,
    waiting: Arc<AtomicUsize>,
    commit_wanted: mpsc::Sender<()>,
}

impl SqliteTx {
    /// The writer connection.
    pub(in crate::store::sql) fn conn(&self) -> &Connection {
        &self
            .writer
            .as_ref()
            .expect("a transaction holds the writer until it ends")
            .conn
    }

    fn writer(&mut self) -> &mut Writer {
        self.writer
            .as_mut()
            .expect("a transaction holds the writer until it ends")
    }

    /// Releases this caller's savepoint into the group and returns once the
    /// group's COMMIT did. Dropped while waiting, the group is still
    /// committed: by this caller's turn as it ends, or after the callers
    /// queued.
    pub(in crate::store::sql) async fn commit(mut self) -> Result<(), DbError> {
        let writer = self.writer();
        if writer.conn.is_autocommit() {
            writer.fail_group(ROLLED_BACK);
            return Err(rolled_back());
        }
        writer.conn.execute_batch("RELEASE member")?;
        let Some(group) = writer.group.as_mut() else {
            return Err(rolled_back());
        };
        group.members += 1;
        let mut outcome = group.outcome.subscribe();
        self.released = true;
        if self.waiting.load(Ordering::Acquire) == 0 {
            // This worker's other ready tasks run first: those about to
            // write queue for the turn and join the group.
            tokio::task::yield_now().await;
        }
        self.end_turn();
        let outcome = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| rolled_back())?
            .clone();
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(DbError::GroupCommit(why)),
            None => Err(rolled_back()),
        }
    }

    /// Gives up the turn: an unreleased savepoint rolls back; the group is
    /// committed now unless callers wait for the turn, in which case the
    /// committer commits it after them.
    fn end_turn(&mut self) {
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        if !self.released {
            abandon(&mut writer);
        }
        let members = writer.group.as_ref().is_some_and(|g| g.members > 0);
        if !members
            || self.waiting.load(Ordering::Acquire) == 0
            || matches!(
                self.commit_wanted.try_send(()),
                Err(mpsc::error::TrySendError::Closed(_))
            )
        {
            writer.finish_group();
        }
    }
}

const ROLLED_BACK: &str = "the transaction was rolled back by SQLite";

fn rolled_back() -> DbError {
    DbError::GroupCommit(Arc::from(ROLLED_BACK))
}

/// Rolls back the caller's savepoint; the group's other changes stay.
fn abandon(writer: &mut Writer) {
    if writer.conn.is_autocommit() {
        writer.fail_group(ROLLED_BACK);
        return;
    }
    if let Err(err) = writer
        .conn
        .execute_batch("ROLLBACK TO member; RELEASE member")
    {
        tracing::warn!(error = %err, "a SQLite savepoint could not be rolled back");
        writer.fail_group("a savepoint could not be rolled back");
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        self.end_turn();
    }
}
