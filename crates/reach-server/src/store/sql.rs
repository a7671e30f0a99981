//! The SQL `Store`: one implementation for both engines Reach runs on,
//! SQLite (the embedded default, a file in the data directory, WAL mode) and
//! PostgreSQL (several nodes sharing one database), through sqlx's `Any`
//! driver. The SQL is portable (`$n` placeholders, `RETURNING`,
//! `ON CONFLICT`); `Engine` holds the few places where the engines differ.
//!
//! Every write that checks before it changes runs in one transaction that
//! excludes concurrent writers of the same thing: on SQLite `BEGIN IMMEDIATE`
//! (one writer at a time), on PostgreSQL row locks (`FOR UPDATE` on the
//! tenant, machine or action row) and advisory locks, so two nodes racing
//! cannot both pass a check (one active action per machine, actions per
//! tenant, claiming a command, rate limits).
//!
//!
//! This file holds the connection's parts every domain shares (the engine,
//! write transactions, locks, value conversions); `connect` opens and
//! migrates the database, `paging` runs OData pages, `odata_to_sql` compiles
//! OData queries, and one file per domain holds that domain's SQL.

mod actions;
mod audit;
mod commands;
mod connect;
mod enrollment;
mod identities;
mod library;
mod machines;
pub mod odata_to_sql;
mod paging;
mod rate_limits;
mod retention;
mod rows;

use std::str::FromStr;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::{Any, AnyPool, Transaction};

pub use connect::sqlite_url;

use super::{Store, StoreError, StoreResult};
use odata_to_sql::{Bind, Field, Kind};
use paging::{placeholders, select_page};

/// The database engine behind a `SqlStore`, and the few places their SQL
/// differs: how a checking transaction starts, row locks, and (in
/// `odata_to_sql`) collection membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded default: one file, one node.
    Sqlite,
    /// Several nodes sharing one database.
    Postgres,
}

impl Engine {
    /// How a checking write transaction starts.
    fn begin(self) -> &'static str {
        match self {
            // Takes the write lock now, so a check and its write see one state.
            Engine::Sqlite => "BEGIN IMMEDIATE",
            Engine::Postgres => "BEGIN",
        }
    }

    /// Appended to a SELECT in a write transaction to lock the rows of table
    /// alias `alias` it reads. SQLite needs none: its write transaction
    /// already excludes other writers.
    fn for_update_of(self, alias: &str) -> String {
        match self {
            Engine::Sqlite => String::new(),
            Engine::Postgres => format!(" FOR UPDATE OF {alias}"),
        }
    }
}

/// The store on SQLite or PostgreSQL.
pub struct SqlStore {
    /// Reads (and, on PostgreSQL, writes).
    pool: AnyPool,
    /// SQLite: the one connection that writes. Its page cache stays valid
    /// across its own commits (a connection's cache is dropped whenever
    /// another connection has written), and writers never meet in SQLite's
    /// busy handler. On PostgreSQL, the same pool as `pool`.
    writer_pool: AnyPool,
    engine: Engine,
    /// SQLite: writers take turns here, in the async runtime, instead of in
    /// SQLite's busy handler (which sleeps up to 100 ms between retries).
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Grows after each change to an account's standing or a device group
    /// made through this store (`Identities::identities_epoch`).
    identities_epoch: std::sync::atomic::AtomicU64,
}

/// A write transaction, holding the SQLite writer's turn until it ends.
struct WriteTx {
    tx: Tx,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    async fn commit(self) -> StoreResult<()> {
        Ok(self.tx.commit().await?)
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// NotFound (named by `what`) when an update changed no row.
fn found(rows: u64, what: impl FnOnce() -> String) -> StoreResult<()> {
    if rows == 0 {
        return Err(StoreError::NotFound(what()));
    }
    Ok(())
}

fn other(err: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Other(err.into())
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Other(err.into())
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("store values serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(other)
}

const ACTIVE: &str = "('Pending', 'InProgress')";

/// Advisory lock key held (per transaction) by the node that sweeps, so
/// that one node at a time sweeps on PostgreSQL.
const SWEEP_LOCK: i64 = 0x5245_4143_4801; // "REACH" + 1

/// Advisory lock key held (per transaction) while appending to the audit
/// trail on PostgreSQL, so that appends from several nodes form one chain.
const AUDIT_LOCK: i64 = 0x5245_4143_4802; // "REACH" + 2

type Tx = Transaction<'static, Any>;

impl SqlStore {
    /// Which engine it runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The pool, for LISTEN/NOTIFY (`cluster`) and tests.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.engine {
            Engine::Sqlite => Some(self.writer.clone().lock_owned().await),
            Engine::Postgres => None,
        }
    }

    async fn write(&self) -> StoreResult<WriteTx> {
        let turn = self.turn().await;
        Ok(WriteTx {
            tx: self.writer_pool.begin_with(self.engine.begin()).await?,
            _turn: turn,
        })
    }

    /// Runs one writing statement (SQLite: in the writers' turn). The
    /// engine's error comes back as is, for callers that map a constraint.
    async fn write_one<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        let _turn = self.turn().await;
        query.execute(&self.writer_pool).await
    }

    /// `write_one` for a change to an account or device group: moves the
    /// identities epoch once it is written (or failed), so that what was
    /// read before it is not used again.
    async fn write_identity<'q>(
        &self,
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        let done = self.write_one(query).await;
        self.identities_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        done
    }

    /// Locks an action's row until the transaction ends.
    async fn lock_action(&self, tx: &mut WriteTx, action_id: &str) -> StoreResult<()> {
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT id FROM actions WHERE id = $1 FOR UPDATE")
                .bind(action_id)
                .fetch_optional(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Serialises appends to the audit trail across nodes (SQLite's write
    /// transaction already does).
    async fn lock_audit(&self, tx: &mut WriteTx) -> StoreResult<()> {
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Serialises checking writes within a tenant across nodes.
    async fn lock_tenant(&self, tx: &mut WriteTx, tenant_id: &str) -> StoreResult<()> {
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant_id)
                .fetch_optional(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

fn parse_status<T: FromStr>(text: &str) -> StoreResult<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(other)
}

fn odata(err: crate::odata::ODataError) -> StoreError {
    StoreError::InvalidQuery(err.0)
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
