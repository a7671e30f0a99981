//! The connections a `SqlStore` holds, and its write transactions. On
//! PostgreSQL, sqlx's pool. On SQLite, rusqlite connections to the one file:
//! read connections taken from a small stack (statements run on the calling
//! thread, so as many are in use as threads run statements at once), and
//! the one writer behind an async turn, so writers of this process queue in
//! the runtime and never in SQLite's busy handler. The writer does not
//! checkpoint the WAL as it commits (that writes and syncs the database file
//! on the committing thread); a thread of the store's own does, twice a
//! second, without blocking readers or the writer.
//!
//! Nothing here knows a table.

mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::exec::DbError;
use rusqlite::{Connection, OpenFlags};
use sqlx::{Any, AnyPool, Transaction};
pub(super) use writer::SqliteTx;

/// Read connections kept for reuse; more are opened while more are busy.
const KEPT_READERS: usize = 8;

/// Statements each SQLite connection keeps prepared.
const PREPARED_STATEMENTS: usize = 128;

/// How long a SQLite statement, or a writer beginning, waits for another
/// process's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Where reads run (and, on PostgreSQL, writes too).
pub(super) enum Pool {
    /// The embedded file.
    Sqlite(Arc<SqliteDb>),
    /// The shared database.
    Postgres(AnyPool),
}

impl Pool {
    /// One read connection, for several statements in a row.
    pub(super) async fn acquire(&self) -> Result<Conn, DbError> {
        Ok(match self {
            Pool::Sqlite(db) => Conn::Sqlite(db.reader()?),
            Pool::Postgres(pool) => Conn::Postgres(pool.acquire().await?),
        })
    }
}

/// A read connection held across several statements.
pub(super) enum Conn {
    /// A SQLite reader, back on the stack when dropped.
    Sqlite(Reader),
    /// A PostgreSQL connection from the pool.
    Postgres(sqlx::pool::PoolConnection<Any>),
}

/// A write transaction. SQLite: it holds the writer's turn until it ends;
/// dropped without `commit`, it rolls back.
pub(super) enum WriteTx {
    /// On the SQLite writer.
    Sqlite(SqliteTx),
    /// On a PostgreSQL connection.
    Postgres(Transaction<'static, Any>),
}

impl WriteTx {
    /// Makes its changes durable and visible.
    pub(super) async fn commit(self) -> Result<(), DbError> {
        match self {
            WriteTx::Sqlite(tx) => tx.commit().await,
            WriteTx::Postgres(tx) => Ok(tx.commit().await?),
        }
    }
}

/// The SQLite file's connections.
pub(super) struct SqliteDb {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    writer: writer::Turns,
    /// Dropped with the store, which ends the checkpoint thread.
    _checkpoints: mpsc::Sender<()>,
}

impl SqliteDb {
    /// Opens the writer and the checkpoint thread on an existing, migrated
    /// database file in WAL mode.
    pub(super) fn open(path: &Path) -> Result<Arc<Self>, DbError> {
        let writer = connect(path)?;
        // Checkpoints run on their own thread (below), not in a commit.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Waiting for another process's lock happens in `begin`, asleep.
        writer.busy_timeout(Duration::ZERO)?;
        let checkpointer = connect(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("reach-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(err) =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %err, "the SQLite WAL could not be checkpointed");
                    }
                }
            })
            .map_err(DbError::Checkpointer)?;
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            readers: Mutex::new(Vec::new()),
            writer: writer::Turns::new(writer),
            _checkpoints: stop,
        }))
    }

    /// A read connection (opened when none is free).
    pub(super) fn reader(self: &Arc<Self>) -> Result<Reader, DbError> {
        let kept = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match kept {
            Some(conn) => conn,
            None => {
                let conn = connect(&self.path)?;
                // A read path never writes behind the writer's turn.
                conn.pragma_update(None, "query_only", true)?;
                conn
            }
        };
        Ok(Reader {
            db: self.clone(),
            conn: Some(conn),
        })
    }

    /// This caller's part of the writer's transaction (`writer`: group
    /// commit), in its turn.
    pub(super) async fn begin(&self) -> Result<SqliteTx, DbError> {
        self.writer.begin().await
    }

    /// COMMITs so far, and the callers' write transactions they held.
    pub(super) fn group_commits(&self) -> (u64, u64) {
        let committed = self.writer.committed();
        (
            committed.commits.load(std::sync::atomic::Ordering::Relaxed),
            committed.writes.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

fn connect(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(PREPARED_STATEMENTS);
    Ok(conn)
}

/// A SQLite read connection, back on the stack when dropped.
pub(super) struct Reader {
    db: Arc<SqliteDb>,
    conn: Option<Connection>,
}

impl std::ops::Deref for Reader {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut kept = self.db.readers.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() < KEPT_READERS {
                kept.push(conn);
            }
        }
    }
}
