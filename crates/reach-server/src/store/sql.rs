//! The SQL `Store`: one implementation for both engines Reach runs on,
//! SQLite (the embedded default, a file in the data directory, WAL mode) and
//! PostgreSQL (several nodes sharing one database). The SQL is portable
//! (`$n` placeholders, `RETURNING`, `ON CONFLICT`); `Engine` holds the few
//! places where the engines differ, and `exec` runs a statement on either
//! (rusqlite for SQLite, on the calling thread; sqlx for PostgreSQL).
//!
//! Every write that checks before it changes runs in one transaction that
//! excludes concurrent writers of the same thing: on SQLite `BEGIN IMMEDIATE`
//! (one writer at a time), on PostgreSQL row locks (`FOR UPDATE` on the
//! tenant, machine or action row) and advisory locks, so two nodes racing
//! cannot both pass a check (one active action per machine, actions per
//! tenant, claiming a command, rate limits).
//!
//! This file holds the connection's parts every domain shares (the engine,
//! write transactions, locks, value conversions); `connect` opens and
//! migrates the database, `pool` holds its connections, `exec` runs one
//! statement, `paging` runs OData pages, `odata_to_sql` compiles
//! OData queries, and one file per domain holds that domain's SQL.

mod actions;
mod audit;
mod batches;
mod commands;
mod connect;
mod enrollment;
mod exec;
mod identities;
mod library;
mod machines;
pub mod odata_to_sql;
mod output;
mod paging;
mod pool;
mod rate_limits;
mod retention;
mod rows;

use std::str::FromStr;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::AnyPool;

pub use connect::sqlite_url;

use super::{Store, StoreError, StoreResult};
use exec::{DbError, Done, On, Query, query};
use odata_to_sql::{Bind, Field, Kind};
use paging::{placeholders, select_page};
use pool::{Conn, Pool, WriteTx};

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
    /// Reads on either engine; on SQLite also the one writer (`pool`).
    pool: Pool,
    engine: Engine,
    /// Grows after each change to an account's standing or a device group
    /// made through this store (`Identities::identities_epoch`).
    identities_epoch: std::sync::atomic::AtomicU64,
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

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("store values serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(other)
}

/// The library file a command carries to the device, by hash.
fn payload_sha256(work: &reach_proto::agent::Work) -> Option<&str> {
    use reach_proto::agent::Work;
    match work {
        Work::PutFile { sha256, .. } | Work::RunScript { sha256, .. } => Some(sha256),
        _ => None,
    }
}

const ACTIVE: &str = "('Pending', 'InProgress')";

/// Whether action `a` may be handed out: always when it is alone; a
/// batch's once its batch runs and its wave has come. The claim and the
/// re-wake decide alike.
const MAY_RUN: &str =
    "(a.batch_id IS NULL OR EXISTS (SELECT 1 FROM batches b WHERE b.id = a.batch_id
     AND b.status = 'Running' AND a.wave <= b.current_wave))";

/// Advisory lock key held (per transaction) by the node that sweeps, so
/// that one node at a time sweeps on PostgreSQL.
const SWEEP_LOCK: i64 = 0x5245_4143_4801; // "REACH" + 1

/// Advisory lock key held (per transaction) by the node that moves batches
/// from one wave to the next, so that one node at a time does.
const WAVE_LOCK: i64 = 0x5245_4143_4803; // "REACH" + 3

/// Advisory lock key held (per transaction) while appending to the audit
/// trail on PostgreSQL, so that appends from several nodes form one chain.
const AUDIT_LOCK: i64 = 0x5245_4143_4802; // "REACH" + 2

impl SqlStore {
    /// Which engine it runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// PostgreSQL's pool, for LISTEN/NOTIFY (`cluster`); None on SQLite.
    pub fn postgres_pool(&self) -> Option<&AnyPool> {
        match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(_) => None,
        }
    }

    /// A checking write transaction: on SQLite in the writer's turn.
    async fn write(&self) -> Result<WriteTx, DbError> {
        Ok(match &self.pool {
            Pool::Sqlite(db) => WriteTx::Sqlite(db.begin().await?),
            Pool::Postgres(pool) => WriteTx::Postgres(pool.begin().await?),
        })
    }

    /// Runs one writing statement (SQLite: in the writer's turn). The
    /// engine's error comes back as is, for callers that map a constraint.
    async fn write_one(&self, query: Query) -> Result<Done, DbError> {
        match &self.pool {
            Pool::Sqlite(_) => {
                let mut tx = self.write().await?;
                let done = query.execute(&mut tx).await?;
                tx.commit().await?;
                Ok(done)
            }
            Pool::Postgres(_) => query.execute(&self.pool).await,
        }
    }

    /// `write_one` for a change to an account or device group: moves the
    /// identities epoch once it is written (or failed), so that what was
    /// read before it is not used again.
    async fn write_identity(&self, query: Query) -> Result<Done, DbError> {
        let done = self.write_one(query).await;
        self.identities_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        done
    }

    /// Locks an action's row until the transaction ends.
    async fn lock_action(&self, tx: &mut WriteTx, action_id: &str) -> StoreResult<()> {
        if self.engine == Engine::Postgres {
            query("SELECT id FROM actions WHERE id = $1 FOR UPDATE")
                .bind(action_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// Serialises appends to the audit trail across nodes (SQLite's write
    /// transaction already does).
    async fn lock_audit(&self, tx: &mut WriteTx) -> StoreResult<()> {
        if self.engine == Engine::Postgres {
            query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// Serialises checking writes within a tenant across nodes.
    async fn lock_tenant(&self, tx: &mut WriteTx, tenant_id: &str) -> StoreResult<()> {
        if self.engine == Engine::Postgres {
            query("SELECT id FROM tenants WHERE id = $1 FOR UPDATE")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
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
        query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn group_commits(&self) -> Option<super::GroupCommits> {
        match &self.pool {
            Pool::Sqlite(db) => {
                let (commits, writes) = db.group_commits();
                Some(super::GroupCommits { commits, writes })
            }
            Pool::Postgres(_) => None,
        }
    }
}
