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
//! This file holds SQL only; it never touches file bytes or the network.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use reach_proto::agent::{CommandRef, MachineInfo, Work};
use reach_proto::api::{ActionStatus, Command, CommandStatus};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};

use super::sql::{self, Bind, Dialect, Field, Kind};
use super::*;
use crate::odata::Query;
use crate::ratelimit::{self, Window};
use crate::time::Micros;

/// The database engine behind a `SqlStore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
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

    fn dialect(self) -> Dialect {
        match self {
            Engine::Sqlite => Dialect::Sqlite,
            Engine::Postgres => Dialect::Postgres,
        }
    }
}

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
    /// Opens the database named by `url` (`sqlite://...` or `postgres://...`)
    /// and brings its schema up to date. Migrations hold a lock in the
    /// database, so nodes starting at once migrate one after another.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let engine = if url.starts_with("sqlite:") {
            Engine::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            anyhow::bail!(
                "unsupported database URL '{}': use sqlite://PATH or postgres://...",
                redact_url(url)
            );
        };
        // A SQLite file is created when missing unless the URL says otherwise.
        let url = &if engine == Engine::Sqlite && !url.contains("mode=") {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}mode=rwc")
        } else {
            url.to_string()
        };
        let options: AnyConnectOptions = url
            .parse()
            .with_context(|| format!("parsing the database URL {}", redact_url(url)))?;
        let (pool, writer_pool) = match engine {
            Engine::Sqlite => {
                // WAL is a property of the database file: set it once, before the pool.
                let mut first = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&options)
                    .await
                    .with_context(|| format!("opening {}", redact_url(url)))?;
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&mut first)
                    .await?;
                sqlx::Connection::close(first).await?;
                let sqlite_pool = |size: u32| {
                    AnyPoolOptions::new()
                        .max_connections(size)
                        // Readers never wait on the writer (WAL); writers queue on `writer` first.
                        .acquire_timeout(Duration::from_secs(30))
                        // A file's connection does not break in the pool: no ping
                        // (a round trip to the connection's thread) before each use.
                        .test_before_acquire(false)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON")
                                    .await?;
                                Ok(())
                            })
                        })
                        .connect_with(options.clone())
                };
                let readers = sqlite_pool(8)
                    .await
                    .with_context(|| format!("connecting to {}", redact_url(url)))?;
                let writer = sqlite_pool(1)
                    .await
                    .with_context(|| format!("connecting to {}", redact_url(url)))?;
                (readers, writer)
            }
            Engine::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(32)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .with_context(|| format!("connecting to {}", redact_url(url)))?;
                (pool.clone(), pool)
            }
        };
        let migrations = match engine {
            Engine::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Engine::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        // PostgreSQL migrations hold an advisory lock; SQLite's hold none, so
        // processes opening one file at once take turns on a lock file.
        let _turn = match engine {
            Engine::Sqlite => Some(sqlite_migration_lock(url).await?),
            Engine::Postgres => None,
        };
        migrations
            .run(&writer_pool)
            .await
            .with_context(|| format!("migrating {}", redact_url(url)))?;
        Ok(Self {
            pool,
            writer_pool,
            engine,
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Opens (creating if needed) `reach.db` in `dir`: the embedded default.
    pub async fn open_sqlite(dir: &Path) -> anyhow::Result<Self> {
        crate::data_dir::prepare_database_dir(dir)?;
        Self::connect(&sqlite_url(&dir.join("reach.db"))).await
    }

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

/// Waits for and holds `<database>.migrate-lock` until dropped.
async fn sqlite_migration_lock(url: &str) -> anyhow::Result<std::fs::File> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let mut path = options.get_filename().as_os_str().to_owned();
    path.push(".migrate-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await?
        .context("waiting for another process's SQLite migration")
}

/// A `sqlite://` URL for a database file, created when missing.
pub fn sqlite_url(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = url::Url::parse("sqlite://").expect("a valid base URL");
    url.set_path(&path.to_string_lossy());
    url.set_query(Some("mode=rwc"));
    url.to_string()
}

/// A database URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) if url.is_empty() => String::new(),
        Err(_) => "(an invalid URL)".to_string(),
    }
}

fn action_fields() -> Vec<Field> {
    vec![
        Field::new("id", "a.id", Kind::Text),
        Field::new("status", "a.status", Kind::Text),
        Field::new("machineId", "a.machine_id", Kind::Text),
        Field::new("type", "'LiveResponse'", Kind::Text),
        Field::new("requestor", "a.requestor", Kind::Text),
        Field::new("computerDnsName", "a.computer_dns_name", Kind::Text),
        Field::new("creationDateTimeUtc", "a.created_us", Kind::Time),
        Field::new("lastUpdateDateTimeUtc", "a.updated_us", Kind::Time),
        // The action's machine's tags: what device-group scopes filter on.
        Field::new(
            "machineTags",
            "(SELECT m.tags FROM machines m WHERE m.id = a.machine_id)",
            Kind::TextList,
        ),
    ]
}

/// Machine properties. `active_since` is a number we produce, never client text.
pub(crate) fn machine_fields(active_since: Micros) -> Vec<Field> {
    let health = format!(
        "(CASE WHEN m.connected = 1 AND m.last_seen_us >= {} THEN 'Active' ELSE 'Inactive' END)",
        active_since.0
    );
    let mut fields = vec![
        Field::new("id", "m.id", Kind::Text),
        Field::new("computerDnsName", "m.computer_dns_name", Kind::Text),
        Field::new("osPlatform", "m.os_platform", Kind::Text),
        Field::new("osVersion", "m.os_version", Kind::Text),
        Field::new("osArchitecture", "m.os_architecture", Kind::Text),
        Field::new("version", "m.agent_version", Kind::Text),
        Field::new("lastIpAddress", "m.last_ip", Kind::Text),
        Field::new("healthStatus", health, Kind::Text),
        Field::new("onboardingStatus", "'Onboarded'", Kind::Text),
        Field::new("machineTags", "m.tags", Kind::TextList),
        Field::new("firstSeen", "m.first_seen_us", Kind::Time),
        Field::new("lastSeen", "m.last_seen_us", Kind::Time),
    ];
    // Defender properties Reach does not track: filters on them match nothing.
    for name in [
        "deviceValue",
        "aadDeviceId",
        "exposureLevel",
        "riskScore",
        "rbacGroupId",
    ] {
        fields.push(Field::new(name, "CAST(NULL AS TEXT)", Kind::Text));
    }
    fields
}

/// Appends events after the newest entry, in a transaction that holds the
/// audit lock (`SqlStore::lock_audit`).
async fn append_audit_in(tx: &mut WriteTx, events: &[AuditEvent]) -> StoreResult<Vec<AuditEntry>> {
    let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (mut seq, mut prev_hash) = match last {
        Some(row) => (row.try_get::<i64, _>("seq")?, row.try_get("hash")?),
        None => (0, crate::audit::GENESIS.to_string()),
    };
    let mut appended = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let hash = crate::audit::link_hash(seq, event, &prev_hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, time_us, tenant_id, actor_type, actor_id, actor_name,
                source_ip, operation, machine_id, target, outcome, http_status, details,
                prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(seq)
        .bind(event.time.0)
        .bind(&event.tenant_id)
        .bind(&event.actor_type)
        .bind(&event.actor_id)
        .bind(&event.actor_name)
        .bind(&event.source_ip)
        .bind(&event.operation)
        .bind(&event.machine_id)
        .bind(&event.target)
        .bind(&event.outcome)
        .bind(event.http_status.map(i64::from))
        .bind(&event.details)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
        appended.push(AuditEntry {
            seq,
            event: event.clone(),
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        });
    }
    Ok(appended)
}

fn audit_fields() -> Vec<Field> {
    vec![
        Field::new("id", "l.seq", Kind::Int),
        Field::new("timestamp", "l.time_us", Kind::Time),
        Field::new("actorType", "l.actor_type", Kind::Text),
        Field::new("actorId", "l.actor_id", Kind::Text),
        Field::new("actorName", "l.actor_name", Kind::Text),
        Field::new("sourceIp", "l.source_ip", Kind::Text),
        Field::new("operation", "l.operation", Kind::Text),
        Field::new("machineId", "l.machine_id", Kind::Text),
        Field::new("target", "l.target", Kind::Text),
        Field::new("outcome", "l.outcome", Kind::Text),
        Field::new("httpStatus", "l.http_status", Kind::Int),
    ]
}

fn audit_from_row(row: &AnyRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        seq: row.try_get("seq")?,
        event: AuditEvent {
            time: Micros(row.try_get("time_us")?),
            tenant_id: row.try_get("tenant_id")?,
            actor_type: row.try_get("actor_type")?,
            actor_id: row.try_get("actor_id")?,
            actor_name: row.try_get("actor_name")?,
            source_ip: row.try_get("source_ip")?,
            operation: row.try_get("operation")?,
            machine_id: row.try_get("machine_id")?,
            target: row.try_get("target")?,
            outcome: row.try_get("outcome")?,
            http_status: row
                .try_get::<Option<i64>, _>("http_status")?
                .map(|s| u16::try_from(s).map_err(other))
                .transpose()?,
            details: row.try_get("details")?,
        },
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for bind in binds {
        query = match bind {
            Bind::Text(t) => query.bind(t.as_str()),
            Bind::Int(n) => query.bind(*n),
        };
    }
    query
}

/// Runs a `SELECT count(*) ... WHERE tenant_id = $1 <filter>` with the filter's binds.
async fn count(
    conn: &mut sqlx::AnyConnection,
    sql: String,
    tenant_id: &str,
    binds: &[Bind],
) -> StoreResult<u64> {
    let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).bind(tenant_id);
    for bind in binds {
        query = match bind {
            Bind::Text(t) => query.bind(t.as_str()),
            Bind::Int(n) => query.bind(*n),
        };
    }
    Ok(query.fetch_one(conn).await? as u64)
}

/// `$first, $first+1, ...`: `count` placeholders for an `IN (...)` list.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `LIMIT $n OFFSET $n+1` after `$1` (the tenant) and the filter's binds.
fn page_sql(binds: &[Bind]) -> String {
    let limit = binds.len() + 2;
    format!("LIMIT ${limit} OFFSET ${}", limit + 1)
}

/// One page of a tenant's rows of `table` (SQL alias `alias`, whose
/// `tenant_id` column is bound to `$1`) matching `query`, and with `$count`
/// how many match in all.
#[allow(clippy::too_many_arguments)]
async fn select_page(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    table: &str,
    alias: &str,
    tenant_id: &str,
    query: &Query,
    fields: &[Field],
    default_order: &str,
) -> StoreResult<(Vec<AnyRow>, Option<u64>)> {
    let compiled = sql::compile(query, fields, default_order, dialect, 2).map_err(odata)?;
    let filter = if compiled.where_sql.is_empty() {
        String::new()
    } else {
        format!("AND {}", compiled.where_sql)
    };
    let from = format!("FROM {table} {alias} WHERE {alias}.tenant_id = $1 {filter}");
    let sql = format!(
        "SELECT * {from} {} {}",
        compiled.order_sql,
        page_sql(&compiled.binds)
    );
    let rows = bind_all(
        sqlx::query(AssertSqlSafe(sql)).bind(tenant_id),
        &compiled.binds,
    )
    .bind(i64::from(query.top.unwrap_or(crate::odata::MAX_TOP)))
    .bind(i64::from(query.skip))
    .fetch_all(&mut *conn)
    .await?;
    let count = if query.count {
        let sql = format!("SELECT count(*) {from}");
        Some(count(conn, sql, tenant_id, &compiled.binds).await?)
    } else {
        None
    };
    Ok((rows, count))
}

fn tenant_from_row(row: &AnyRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
    })
}

fn machine_from_row(row: &AnyRow) -> StoreResult<MachineRow> {
    Ok(MachineRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        info: MachineInfo {
            hostname: row.try_get("computer_dns_name")?,
            os_platform: row.try_get("os_platform")?,
            os_version: row.try_get("os_version")?,
            os_architecture: row.try_get("os_architecture")?,
            agent_version: row.try_get("agent_version")?,
            ip_addresses: from_json(row.try_get::<&str, _>("ip_addresses")?)?,
        },
        last_ip: row.try_get("last_ip")?,
        tags: from_json(row.try_get::<&str, _>("tags")?)?,
        first_seen: Micros(row.try_get("first_seen_us")?),
        last_seen: Micros(row.try_get("last_seen_us")?),
        connected: row.try_get::<i64, _>("connected")? != 0,
    })
}

fn library_from_row(row: &AnyRow) -> StoreResult<LibraryRow> {
    Ok(LibraryRow {
        tenant_id: row.try_get("tenant_id")?,
        file_name: row.try_get("file_name")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get::<i64, _>("size")? as u64,
        description: row.try_get("description")?,
        has_parameters: row.try_get::<i64, _>("has_parameters")? != 0,
        parameters_description: row.try_get("parameters_description")?,
        created_by: row.try_get("created_by")?,
        last_updated_by: row.try_get("last_updated_by")?,
        creation_time: Micros(row.try_get("creation_us")?),
        last_updated_time: Micros(row.try_get("last_updated_us")?),
        signature: row.try_get("signature")?,
    })
}

fn parse_status<T: FromStr>(text: &str) -> StoreResult<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(other)
}

fn action_from_row(row: &AnyRow) -> StoreResult<ActionRow> {
    Ok(ActionRow {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        machine_id: row.try_get("machine_id")?,
        computer_dns_name: row.try_get("computer_dns_name")?,
        requestor: row.try_get("requestor")?,
        requestor_comment: row.try_get("requestor_comment")?,
        status: parse_status(row.try_get::<&str, _>("status")?)?,
        created: Micros(row.try_get("created_us")?),
        last_update: Micros(row.try_get("updated_us")?),
        cancellation_requestor: row.try_get("cancellation_requestor")?,
        cancellation_comment: row.try_get("cancellation_comment")?,
        cancellation_time: row.try_get::<Option<i64>, _>("cancelled_us")?.map(Micros),
        commands: Vec::new(),
    })
}

fn command_from_row(row: &AnyRow) -> StoreResult<CommandRow> {
    let result = match row.try_get::<Option<String>, _>("result_key")? {
        Some(key) => Some(ResultBlob {
            key,
            size: row.try_get::<Option<i64>, _>("result_size")?.unwrap_or(0) as u64,
            sha256: row.try_get::<Option<String>, _>("result_sha256")?,
            chunks: row
                .try_get::<Option<i64>, _>("result_chunks")?
                .map(|n| n as u32),
        }),
        None => None,
    };
    Ok(CommandRow {
        index: row.try_get::<i64, _>("idx")? as u32,
        command: from_json::<Command>(row.try_get("command")?)?,
        work: from_json::<Work>(row.try_get("work")?)?,
        status: parse_status(row.try_get::<&str, _>("status")?)?,
        start_time: row.try_get::<Option<i64>, _>("start_us")?.map(Micros),
        end_time: row.try_get::<Option<i64>, _>("end_us")?.map(Micros),
        errors: from_json(row.try_get::<&str, _>("errors")?)?,
        timeout_secs: row.try_get::<i64, _>("timeout_secs")? as u64,
        result,
        file_sha256: row.try_get("file_sha256")?,
        result_deleted: row
            .try_get::<Option<i64>, _>("result_deleted_us")?
            .map(Micros),
    })
}

async fn load_commands(
    conn: &mut sqlx::AnyConnection,
    actions: &mut [ActionRow],
) -> StoreResult<()> {
    for chunk in actions.chunks_mut(500) {
        let ids = placeholders(1, chunk.len());
        let sql =
            format!("SELECT * FROM commands WHERE action_id IN ({ids}) ORDER BY action_id, idx");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for action in chunk.iter() {
            query = query.bind(action.id.clone());
        }
        let rows = query.fetch_all(&mut *conn).await?;
        for row in &rows {
            let action_id: String = row.try_get("action_id")?;
            if let Some(action) = chunk.iter_mut().find(|a| a.id == action_id) {
                action.commands.push(command_from_row(row)?);
            }
        }
    }
    Ok(())
}

async fn fetch_action(conn: &mut sqlx::AnyConnection, id: &str) -> StoreResult<ActionRow> {
    let row = sqlx::query("SELECT * FROM actions WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("Machine action {id}")))?;
    let mut actions = vec![action_from_row(&row)?];
    load_commands(conn, &mut actions).await?;
    Ok(actions.remove(0))
}

/// The command is not InProgress on the calling machine.
fn not_running(command: &CommandRef) -> StoreError {
    StoreError::NotFound(format!(
        "Running command {} of action {} on this machine",
        command.index, command.action_id
    ))
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

    async fn secret(&self, name: &str, fresh: &str, now: Micros) -> StoreResult<String> {
        self.write_one(sqlx::query("INSERT INTO secrets (name, value, created_us) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(fresh)
            .bind(now.0)
            )
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn count_actions_by_status(&self) -> StoreResult<Vec<(ActionStatus, u64)>> {
        let rows = sqlx::query("SELECT status, count(*) AS n FROM actions GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(ActionStatus, u64)> =
            ActionStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for row in &rows {
            let status: ActionStatus = parse_status(row.try_get::<&str, _>("status")?)?;
            let n = row.try_get::<i64, _>("n")? as u64;
            if let Some(entry) = counts.iter_mut().find(|(s, _)| *s == status) {
                entry.1 = n;
            }
        }
        Ok(counts)
    }

    async fn create_tenant(&self, tenant: &Tenant, now: Micros) -> StoreResult<()> {
        self.write_one(
            sqlx::query("INSERT INTO tenants (id, name, created_us) VALUES ($1, $2, $3)")
                .bind(&tenant.id)
                .bind(&tenant.name)
                .bind(now.0),
        )
        .await?;
        Ok(())
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Tenant> {
        let row = sqlx::query("SELECT id, name FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Tenant {id}")))?;
        tenant_from_row(&row)
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let rows = sqlx::query("SELECT id, name FROM tenants ORDER BY created_us")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn create_app(&self, app: &App, now: Micros) -> StoreResult<()> {
        self.write_one(sqlx::query(
            "INSERT INTO apps (client_id, tenant_id, name, secret_hash, roles, created_us, disabled, token_generation, device_groups)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&app.client_id)
        .bind(&app.tenant_id)
        .bind(&app.name)
        .bind(&app.secret_hash)
        .bind(json(&app.roles))
        .bind(now.0)
        .bind(i64::from(app.disabled))
        .bind(app.token_generation as i64)
        .bind(json(&app.device_groups))
        )
        .await?;
        Ok(())
    }

    async fn set_app_secret(&self, client_id: &str, secret_hash: &str) -> StoreResult<()> {
        let done = self
            .write_one(
                sqlx::query(
                    "UPDATE apps SET secret_hash = $2, token_generation = token_generation + 1
                     WHERE client_id = $1",
                )
                .bind(client_id)
                .bind(secret_hash),
            )
            .await?;
        found(done.rows_affected(), || format!("App {client_id}"))
    }

    async fn rehash_app_secret(&self, client_id: &str, old: &str, new: &str) -> StoreResult<()> {
        self.write_one(
            sqlx::query(
                "UPDATE apps SET secret_hash = $3 WHERE client_id = $1 AND secret_hash = $2",
            )
            .bind(client_id)
            .bind(old)
            .bind(new),
        )
        .await?;
        Ok(())
    }

    async fn end_user_sessions(&self, name: &str) -> StoreResult<()> {
        let done = self
            .write_one(
                sqlx::query(
                    "UPDATE users SET token_generation = token_generation + 1
                     WHERE lower(name) = lower($1)",
                )
                .bind(name),
            )
            .await?;
        found(done.rows_affected(), || format!("User {name}"))
    }

    async fn set_app_disabled(&self, client_id: &str, disabled: bool) -> StoreResult<()> {
        let done = self
            .write_one(
                sqlx::query(
                    "UPDATE apps SET disabled = $2, token_generation = token_generation + 1
                     WHERE client_id = $1",
                )
                .bind(client_id)
                .bind(i64::from(disabled)),
            )
            .await?;
        found(done.rows_affected(), || format!("App {client_id}"))
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> StoreResult<()> {
        let done = self
            .write_one(
                sqlx::query(
                    "UPDATE users SET disabled = $2, token_generation = token_generation + 1
                     WHERE lower(name) = lower($1)",
                )
                .bind(name)
                .bind(i64::from(disabled)),
            )
            .await?;
        found(done.rows_affected(), || format!("User {name}"))
    }

    async fn put_device_group(&self, group: &DeviceGroup, now: Micros) -> StoreResult<()> {
        self.write_one(
            sqlx::query(
                "INSERT INTO device_groups (tenant_id, name, tags, created_us) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, name) DO UPDATE SET tags = excluded.tags",
            )
            .bind(&group.tenant_id)
            .bind(&group.name)
            .bind(json(&group.tags))
            .bind(now.0),
        )
        .await?;
        Ok(())
    }

    async fn list_device_groups(&self, tenant_id: &str) -> StoreResult<Vec<DeviceGroup>> {
        let rows = sqlx::query(
            "SELECT tenant_id, name, tags FROM device_groups WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeviceGroup {
                    tenant_id: row.try_get("tenant_id")?,
                    name: row.try_get("name")?,
                    tags: from_json(row.try_get::<&str, _>("tags")?)?,
                })
            })
            .collect()
    }

    async fn set_machine_tags(&self, machine_id: &str, tags: &[String]) -> StoreResult<()> {
        let done = self
            .write_one(
                sqlx::query("UPDATE machines SET tags = $2 WHERE id = $1")
                    .bind(machine_id)
                    .bind(json(&tags)),
            )
            .await?;
        found(done.rows_affected(), || format!("Machine {machine_id}"))
    }

    async fn change_machine_tags(
        &self,
        tenant_id: &str,
        machine_id: &str,
        add: &[String],
        remove: &[String],
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.write().await?;
        let sql = format!(
            "SELECT m.tags FROM machines m WHERE m.id = $1 AND m.tenant_id = $2{}",
            self.engine.for_update_of("m")
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(machine_id)
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("Machine {machine_id}")))?;
        let mut tags: Vec<String> = from_json(row.try_get::<&str, _>("tags")?)?;
        tags.retain(|t| !remove.iter().any(|r| r.eq_ignore_ascii_case(t)));
        for tag in add {
            if !tags.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
                tags.push(tag.clone());
            }
        }
        sqlx::query("UPDATE machines SET tags = $2 WHERE id = $1")
            .bind(machine_id)
            .bind(json(&tags))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(tags)
    }

    async fn get_app(&self, client_id: &str) -> StoreResult<App> {
        let row = sqlx::query("SELECT * FROM apps WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("App {client_id}")))?;
        Ok(App {
            client_id: row.try_get("client_id")?,
            tenant_id: row.try_get("tenant_id")?,
            name: row.try_get("name")?,
            secret_hash: row.try_get("secret_hash")?,
            roles: from_json(row.try_get::<&str, _>("roles")?)?,
            disabled: row.try_get::<i64, _>("disabled")? != 0,
            token_generation: row.try_get::<i64, _>("token_generation")? as u64,
            device_groups: from_json(row.try_get::<&str, _>("device_groups")?)?,
        })
    }

    async fn create_user(&self, user: &User, now: Micros) -> StoreResult<()> {
        self.write_one(
            sqlx::query(
                "INSERT INTO users (name, tenant_id, password_hash, roles, disabled, created_us, device_groups)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&user.name)
            .bind(&user.tenant_id)
            .bind(&user.password_hash)
            .bind(json(&user.roles))
            .bind(i64::from(user.disabled))
            .bind(now.0)
            .bind(json(&user.device_groups)),
        )
        .await
        .map_err(|err| match err.as_database_error() {
            Some(db) if db.is_unique_violation() => {
                StoreError::Conflict(format!("A user named '{}' already exists", user.name))
            }
            _ => err.into(),
        })?;
        Ok(())
    }

    async fn get_user(&self, name: &str) -> StoreResult<User> {
        let row = sqlx::query("SELECT * FROM users WHERE lower(name) = lower($1)")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("User {name}")))?;
        Ok(User {
            name: row.try_get("name")?,
            tenant_id: row.try_get("tenant_id")?,
            password_hash: row.try_get("password_hash")?,
            roles: from_json(row.try_get::<&str, _>("roles")?)?,
            disabled: row.try_get::<i64, _>("disabled")? != 0,
            token_generation: row.try_get::<i64, _>("token_generation")? as u64,
            device_groups: from_json(row.try_get::<&str, _>("device_groups")?)?,
        })
    }

    async fn create_enrollment_token(
        &self,
        tenant_id: &str,
        token_hash: &str,
        expires: Option<Micros>,
        max_uses: Option<u64>,
        now: Micros,
    ) -> StoreResult<()> {
        self.write_one(
            sqlx::query(
                "INSERT INTO enrollment_tokens (token_hash, tenant_id, created_us, expires_us, max_uses)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(tenant_id)
            .bind(now.0)
            .bind(expires.map(|e| e.0))
            .bind(max_uses.map(|m| i64::try_from(m).unwrap_or(i64::MAX))),
        )
        .await?;
        Ok(())
    }

    async fn list_enrollment_tokens(&self) -> StoreResult<Vec<EnrollmentTokenRow>> {
        let rows = sqlx::query("SELECT * FROM enrollment_tokens ORDER BY created_us DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(enrollment_token_from_row).collect()
    }

    async fn revoke_enrollment_token(
        &self,
        id: &str,
        now: Micros,
    ) -> StoreResult<EnrollmentTokenRow> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 6 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(StoreError::NotFound(format!("Enrollment token {id}")));
        }
        let mut tx = self.write().await?;
        let rows = sqlx::query("SELECT * FROM enrollment_tokens WHERE token_hash LIKE $1 LIMIT 2")
            .bind(format!("{id}%"))
            .fetch_all(&mut *tx)
            .await?;
        let row = match rows.as_slice() {
            [] => return Err(StoreError::NotFound(format!("Enrollment token {id}"))),
            [row] => row,
            _ => {
                return Err(StoreError::Conflict(format!(
                    "More than one enrollment token starts with {id}; give more of its id"
                )));
            }
        };
        let hash: String = row.try_get("token_hash")?;
        sqlx::query(
            "UPDATE enrollment_tokens SET revoked_us = COALESCE(revoked_us, $2) WHERE token_hash = $1",
        )
        .bind(&hash)
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT * FROM enrollment_tokens WHERE token_hash = $1")
            .bind(&hash)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        enrollment_token_from_row(&row)
    }

    async fn enroll_machine(
        &self,
        token_hash: &str,
        machine_id: &str,
        credential_hash: &str,
        info: &MachineInfo,
        ip: Option<&str>,
        now: Micros,
    ) -> StoreResult<MachineRow> {
        let mut tx = self.write().await?;
        // Counting the use and checking the token are one statement, so two
        // nodes cannot both take a token's last use.
        let taken: Option<String> = sqlx::query_scalar(
            "UPDATE enrollment_tokens SET uses = uses + 1
             WHERE token_hash = $1 AND revoked_us IS NULL
               AND (expires_us IS NULL OR expires_us > $2)
               AND (max_uses IS NULL OR uses < max_uses)
             RETURNING tenant_id",
        )
        .bind(token_hash)
        .bind(now.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(tenant_id) = taken else {
            let row = sqlx::query("SELECT * FROM enrollment_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&mut *tx)
                .await?;
            let why = match row.as_ref().map(enrollment_token_from_row).transpose()? {
                None => "The enrollment token is not valid",
                Some(token) if token.revoked.is_some() => "The enrollment token was revoked",
                Some(token) if token.expires.is_some_and(|e| e <= now) => {
                    "The enrollment token has expired"
                }
                Some(_) => "The enrollment token has been used as many times as it allows",
            };
            return Err(StoreError::Refused(why.into()));
        };
        sqlx::query(
            "INSERT INTO machines (id, tenant_id, credential_hash, computer_dns_name, os_platform, os_version,
                os_architecture, agent_version, last_ip, first_seen_us, last_seen_us, ip_addresses)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(machine_id)
        .bind(&tenant_id)
        .bind(credential_hash)
        .bind(&info.hostname)
        .bind(&info.os_platform)
        .bind(&info.os_version)
        .bind(&info.os_architecture)
        .bind(&info.agent_version)
        .bind(ip)
        .bind(now.0)
        .bind(now.0)
        .bind(json(&info.ip_addresses))
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT * FROM machines WHERE id = $1")
            .bind(machine_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        machine_from_row(&row)
    }

    async fn machine_credential(&self, machine_id: &str) -> StoreResult<MachineCredential> {
        let row =
            sqlx::query("SELECT tenant_id, credential_hash, revoked FROM machines WHERE id = $1")
                .bind(machine_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("Machine {machine_id}")))?;
        Ok(MachineCredential {
            tenant_id: row.try_get("tenant_id")?,
            credential_hash: row.try_get("credential_hash")?,
            revoked: row.try_get::<i64, _>("revoked")? != 0,
        })
    }

    async fn revoke_machine(&self, machine_id: &str) -> StoreResult<()> {
        let done = self
            .write_one(
                sqlx::query("UPDATE machines SET revoked = 1 WHERE id = $1").bind(machine_id),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("Machine {machine_id}")));
        }
        Ok(())
    }

    async fn revoked_connected(&self) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM machines WHERE revoked = 1 AND connected = 1")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn waiting_connected(
        &self,
        waited_since: Micros,
        limit: u32,
    ) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT a.machine_id FROM actions a JOIN machines m ON m.id = a.machine_id
             WHERE a.status = 'Pending' AND a.created_us < $1 AND m.connected = 1
             ORDER BY a.created_us LIMIT $2",
        )
        .bind(waited_since.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn machine_connected(
        &self,
        machine_id: &str,
        info: &MachineInfo,
        ip: Option<&str>,
        now: Micros,
    ) -> StoreResult<Option<String>> {
        let mut tx = self.write().await?;
        let former: Option<String> =
            sqlx::query_scalar("SELECT computer_dns_name FROM machines WHERE id = $1")
                .bind(machine_id)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "UPDATE machines SET computer_dns_name = $1, os_platform = $2, os_version = $3, os_architecture = $4,
                agent_version = $5, last_ip = COALESCE($6, last_ip), last_seen_us = $7, connected = 1,
                ip_addresses = $8
             WHERE id = $9",
        )
        .bind(&info.hostname)
        .bind(&info.os_platform)
        .bind(&info.os_version)
        .bind(&info.os_architecture)
        .bind(&info.agent_version)
        .bind(ip)
        .bind(now.0)
        .bind(json(&info.ip_addresses))
        .bind(machine_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(former.filter(|name| *name != info.hostname))
    }

    async fn machines_seen(&self, machine_ids: &[String], now: Micros) -> StoreResult<()> {
        let mut tx = self.write().await?;
        for chunk in machine_ids.chunks(500) {
            let ids = placeholders(2, chunk.len());
            let sql =
                format!("UPDATE machines SET last_seen_us = $1, connected = 1 WHERE id IN ({ids})");
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now.0);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn machine_disconnected(&self, machine_id: &str, now: Micros) -> StoreResult<()> {
        self.write_one(
            sqlx::query("UPDATE machines SET last_seen_us = $1, connected = 0 WHERE id = $2")
                .bind(now.0)
                .bind(machine_id),
        )
        .await?;
        Ok(())
    }

    async fn machine_by_id(&self, tenant_id: &str, id: &str) -> StoreResult<Option<MachineRow>> {
        let row = sqlx::query("SELECT * FROM machines WHERE id = $1 AND tenant_id = $2")
            .bind(id.to_ascii_lowercase())
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(machine_from_row).transpose()
    }

    async fn machines_named(&self, tenant_id: &str, name: &str) -> StoreResult<Vec<MachineRow>> {
        let rows = sqlx::query(
            "SELECT * FROM machines WHERE tenant_id = $1 AND lower(computer_dns_name) = lower($2)
               AND revoked = 0
             ORDER BY last_seen_us DESC LIMIT 50",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(machine_from_row).collect()
    }

    async fn duplicated_names(&self, tenant_id: &str) -> StoreResult<Vec<(String, Vec<String>)>> {
        let rows = sqlx::query(
            "SELECT lower(computer_dns_name) AS name, tags FROM machines
             WHERE tenant_id = $1 AND revoked = 0 AND lower(computer_dns_name) IN (
                 SELECT lower(computer_dns_name) FROM machines WHERE tenant_id = $1 AND revoked = 0
                 GROUP BY lower(computer_dns_name) HAVING count(*) > 1)",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String, _>("name")?,
                    from_json(row.try_get::<&str, _>("tags")?)?,
                ))
            })
            .collect()
    }

    async fn list_machines(
        &self,
        tenant_id: &str,
        query: &Query,
        active_since: Micros,
    ) -> StoreResult<(Vec<MachineRow>, Option<u64>)> {
        let (rows, count) = select_page(
            &mut *self.pool.acquire().await?,
            self.engine.dialect(),
            "machines",
            "m",
            tenant_id,
            query,
            &machine_fields(active_since),
            "m.computer_dns_name ASC, m.id ASC",
        )
        .await?;
        let machines = rows
            .iter()
            .map(machine_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((machines, count))
    }

    async fn put_library_file(
        &self,
        row: &LibraryRow,
        replace: bool,
    ) -> StoreResult<Option<LibraryRow>> {
        let mut tx = self.write().await?;
        self.lock_tenant(&mut tx, &row.tenant_id).await?;
        let existing = sqlx::query(
            "SELECT * FROM library_files WHERE tenant_id = $1 AND lower(file_name) = lower($2)",
        )
        .bind(&row.tenant_id)
        .bind(&row.file_name)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| library_from_row(&r))
        .transpose()?;
        match &existing {
            Some(old) if !replace => {
                return Err(StoreError::Conflict(format!(
                    "A library file named '{}' already exists; set OverrideIfExists=true to replace it",
                    old.file_name
                )));
            }
            Some(old) => {
                sqlx::query(
                    "UPDATE library_files SET sha256 = $1, size = $2, description = $3, has_parameters = $4,
                        parameters_description = $5, last_updated_by = $6, last_updated_us = $7,
                        signature = $10
                     WHERE tenant_id = $8 AND file_name = $9",
                )
                .bind(&row.sha256)
                .bind(row.size as i64)
                .bind(&row.description)
                .bind(row.has_parameters as i64)
                .bind(&row.parameters_description)
                .bind(&row.created_by)
                .bind(row.last_updated_time.0)
                .bind(&row.tenant_id)
                .bind(&old.file_name)
                .bind(&row.signature)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO library_files (tenant_id, file_name, sha256, size, description, has_parameters,
                        parameters_description, created_by, last_updated_by, creation_us, last_updated_us,
                        signature)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&row.tenant_id)
                .bind(&row.file_name)
                .bind(&row.sha256)
                .bind(row.size as i64)
                .bind(&row.description)
                .bind(row.has_parameters as i64)
                .bind(&row.parameters_description)
                .bind(&row.created_by)
                .bind(&row.last_updated_by)
                .bind(row.creation_time.0)
                .bind(row.last_updated_time.0)
                .bind(&row.signature)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(existing)
    }

    async fn get_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow> {
        let row = sqlx::query(
            "SELECT * FROM library_files WHERE tenant_id = $1 AND lower(file_name) = lower($2)",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("Library file {name}")))?;
        library_from_row(&row)
    }

    async fn list_library_files(&self, tenant_id: &str) -> StoreResult<Vec<LibraryRow>> {
        let rows =
            sqlx::query("SELECT * FROM library_files WHERE tenant_id = $1 ORDER BY file_name")
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(library_from_row).collect()
    }

    async fn delete_library_file(&self, tenant_id: &str, name: &str) -> StoreResult<LibraryRow> {
        let mut tx = self.write().await?;
        self.lock_tenant(&mut tx, tenant_id).await?;
        let row = sqlx::query(
            "SELECT * FROM library_files WHERE tenant_id = $1 AND lower(file_name) = lower($2)",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("Library file {name}")))?;
        let row = library_from_row(&row)?;
        sqlx::query(
            "DELETE FROM library_files WHERE tenant_id = $1 AND lower(file_name) = lower($2)",
        )
        .bind(tenant_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    async fn library_blob_in_use(&self, tenant_id: &str, sha256: &str) -> StoreResult<bool> {
        let sql = format!(
            "SELECT (SELECT count(*) FROM library_files WHERE tenant_id = $1 AND sha256 = $2)
                  + (SELECT count(*) FROM commands c JOIN actions a ON a.id = c.action_id
                     WHERE a.tenant_id = $1 AND c.payload_sha256 = $2 AND a.status IN {ACTIVE})"
        );
        let used: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(sha256)
            .fetch_one(&self.pool)
            .await?;
        Ok(used != 0)
    }

    async fn create_action(
        &self,
        action: &NewAction,
        limits: ActionLimits,
    ) -> StoreResult<ActionRow> {
        let mut tx = self.write().await?;
        // One creator at a time per tenant: the counts below stay true until commit.
        self.lock_tenant(&mut tx, &action.tenant_id).await?;
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM actions WHERE tenant_id = $1 AND status = 'InProgress'",
        )
        .bind(&action.tenant_id)
        .fetch_one(&mut *tx)
        .await?;
        if running >= i64::from(limits.running_per_tenant) {
            return Err(StoreError::TenantActionLimit(limits.running_per_tenant));
        }
        let queued: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM actions WHERE requestor_id = $1 AND status = 'Pending'",
        )
        .bind(&action.requestor_id)
        .fetch_one(&mut *tx)
        .await?;
        if queued >= i64::from(limits.pending_per_requestor) {
            return Err(StoreError::RequestorQueueLimit(
                limits.pending_per_requestor,
            ));
        }
        // The machine must be the tenant's (no row: not found); a second
        // active action on it breaks the unique index `actions_one_active_per_machine`.
        let dns: String = sqlx::query_scalar(
            "INSERT INTO actions (id, tenant_id, machine_id, computer_dns_name, requestor, requestor_comment,
                status, created_us, updated_us, requestor_id)
             SELECT $1, tenant_id, id, computer_dns_name, $2, $3, 'Pending', $4, $5, $8 FROM machines
             WHERE id = $6 AND tenant_id = $7
             RETURNING computer_dns_name",
        )
        .bind(&action.id)
        .bind(&action.requestor)
        .bind(&action.requestor_comment)
        .bind(action.now.0)
        .bind(action.now.0)
        .bind(&action.machine_id)
        .bind(&action.tenant_id)
        .bind(&action.requestor_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|err| match err.as_database_error() {
            Some(db) if db.is_unique_violation() => StoreError::ActiveActionExists,
            _ => err.into(),
        })?
        .ok_or_else(|| StoreError::NotFound(format!("Machine {}", action.machine_id)))?;
        let mut commands = Vec::with_capacity(action.commands.len());
        // Rows of 5 values after the shared action id, at most 100 rows a
        // statement (well inside both engines' bind limits).
        for (first, batch) in action.commands.chunks(100).enumerate() {
            let rows = (0..batch.len())
                .map(|r| {
                    let n = r * 5;
                    format!(
                        "($1, ${}, ${}, ${}, ${}, 'Created', ${})",
                        n + 2,
                        n + 3,
                        n + 4,
                        n + 5,
                        n + 6
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO commands (action_id, idx, command, work, payload_sha256, status, timeout_secs) VALUES {rows}"
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(&action.id);
            for (offset, command) in batch.iter().enumerate() {
                let index = first * 100 + offset;
                let payload_sha = match &command.work {
                    Work::PutFile { sha256, .. } | Work::RunScript { sha256, .. } => {
                        Some(sha256.clone())
                    }
                    Work::GetFile { .. } => None,
                };
                query = query
                    .bind(index as i64)
                    .bind(json(&command.command))
                    .bind(json(&command.work))
                    .bind(payload_sha)
                    .bind(command.timeout_secs as i64);
                commands.push(CommandRow {
                    index: index as u32,
                    command: command.command.clone(),
                    work: command.work.clone(),
                    status: CommandStatus::Created,
                    start_time: None,
                    end_time: None,
                    errors: Vec::new(),
                    timeout_secs: command.timeout_secs,
                    result: None,
                    file_sha256: None,
                    result_deleted: None,
                });
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        // What the rows now hold, without reading them back.
        Ok(ActionRow {
            id: action.id.clone(),
            tenant_id: action.tenant_id.clone(),
            machine_id: action.machine_id.clone(),
            computer_dns_name: dns,
            requestor: action.requestor.clone(),
            requestor_comment: action.requestor_comment.clone(),
            status: ActionStatus::Pending,
            created: action.now,
            last_update: action.now,
            cancellation_requestor: None,
            cancellation_comment: None,
            cancellation_time: None,
            commands,
        })
    }

    async fn get_action(&self, tenant_id: &str, id: &str) -> StoreResult<ActionRow> {
        let mut conn = self.pool.acquire().await?;
        let action = fetch_action(&mut conn, id).await?;
        if action.tenant_id != tenant_id {
            return Err(StoreError::NotFound(format!("Machine action {id}")));
        }
        Ok(action)
    }

    async fn machine_command(
        &self,
        machine_id: &str,
        command: &CommandRef,
    ) -> StoreResult<CommandRow> {
        let row = sqlx::query(
            "SELECT c.* FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE c.action_id = $1 AND c.idx = $2 AND a.machine_id = $3",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "Command {} of action {}",
                command.index, command.action_id
            ))
        })?;
        command_from_row(&row)
    }

    async fn list_actions(
        &self,
        tenant_id: &str,
        query: &Query,
    ) -> StoreResult<(Vec<ActionRow>, Option<u64>)> {
        let mut conn = self.pool.acquire().await?;
        let (rows, count) = select_page(
            &mut conn,
            self.engine.dialect(),
            "actions",
            "a",
            tenant_id,
            query,
            &action_fields(),
            "a.created_us DESC, a.seq DESC",
        )
        .await?;
        let mut actions = rows
            .iter()
            .map(action_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        load_commands(&mut conn, &mut actions).await?;
        Ok((actions, count))
    }

    async fn pending_actions_of(&self, requestor_id: &str) -> StoreResult<Vec<ActionRow>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT * FROM actions WHERE requestor_id = $1 AND status = 'Pending' ORDER BY created_us, seq",
        )
        .bind(requestor_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut actions = rows
            .iter()
            .map(action_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        load_commands(&mut conn, &mut actions).await?;
        Ok(actions)
    }

    async fn cancel_action(
        &self,
        tenant_id: &str,
        id: &str,
        requestor: &str,
        comment: Option<&str>,
        now: Micros,
    ) -> StoreResult<ActionRow> {
        let mut tx = self.write().await?;
        self.lock_action(&mut tx, id).await?;
        let action = fetch_action(&mut tx, id).await?;
        if action.tenant_id != tenant_id {
            return Err(StoreError::NotFound(format!("Machine action {id}")));
        }
        if action.status.is_final() {
            return Err(StoreError::Conflict(format!(
                "Machine action {id} is already {} and cannot be cancelled",
                action.status
            )));
        }
        sqlx::query(
            "UPDATE actions SET status = 'Cancelled', cancellation_requestor = $1, cancellation_comment = $2,
                cancelled_us = $3, updated_us = $4 WHERE id = $5",
        )
        .bind(requestor)
        .bind(comment)
        .bind(now.0)
        .bind(now.0)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE commands SET status = 'Failed', end_us = $1, errors = $2 WHERE action_id = $3 AND status = 'InProgress'",
        )
        .bind(now.0)
        .bind(json(&vec![format!("Cancelled by {requestor}")]))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let action = fetch_action(&mut tx, id).await?;
        tx.commit().await?;
        Ok(action)
    }

    async fn claim_next_command(
        &self,
        machine_id: &str,
        agent_instance: &str,
        now: Micros,
    ) -> StoreResult<Option<Claimed>> {
        let mut tx = self.write().await?;
        if self.engine == Engine::Postgres {
            // Lock first, read after: a read that waits on a row lock sees
            // the locked row anew, but not what its subqueries and joins saw.
            let sql = format!(
                "SELECT id FROM actions WHERE machine_id = $1 AND status IN {ACTIVE} FOR UPDATE"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(machine_id)
                .fetch_optional(&mut *tx)
                .await?;
        }
        // The machine's active action, whether one of its commands runs, and
        // its first command not yet started: one read.
        let sql = format!(
            "SELECT a.id, a.created_us,
                (SELECT count(*) FROM commands r WHERE r.action_id = a.id AND r.status = 'InProgress') AS running,
                c.idx, c.work, c.timeout_secs
             FROM actions a LEFT JOIN commands c ON c.action_id = a.id AND c.status = 'Created'
             WHERE a.machine_id = $1 AND a.status IN {ACTIVE}
             ORDER BY c.idx LIMIT 1"
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(machine_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let action_id: String = row.try_get("id")?;
        let action_created = Micros(row.try_get("created_us")?);
        let running: i64 = row.try_get("running")?;
        let Some(index) = row.try_get::<Option<i64>, _>("idx")? else {
            return Ok(None);
        };
        if running > 0 {
            return Ok(None);
        }
        sqlx::query("UPDATE commands SET status = 'InProgress', start_us = $1, agent_instance = $4 WHERE action_id = $2 AND idx = $3")
            .bind(now.0)
            .bind(&action_id)
            .bind(index)
            .bind(agent_instance)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE actions SET status = 'InProgress', updated_us = $1 WHERE id = $2")
            .bind(now.0)
            .bind(&action_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Claimed {
            command: CommandRef {
                action_id,
                index: index as u32,
            },
            work: from_json(row.try_get::<&str, _>("work")?)?,
            timeout_secs: row.try_get::<i64, _>("timeout_secs")? as u64,
            action_created,
        }))
    }

    async fn running_commands(&self, machine_id: &str) -> StoreResult<Vec<Running>> {
        let rows = sqlx::query(
            "SELECT c.action_id, c.idx, c.agent_instance FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE a.machine_id = $1 AND c.status = 'InProgress'",
        )
        .bind(machine_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Running {
                    command: CommandRef {
                        action_id: r.try_get("action_id")?,
                        index: r.try_get::<i64, _>("idx")? as u32,
                    },
                    agent_instance: r
                        .try_get::<Option<String>, _>("agent_instance")?
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn requeue_command(&self, machine_id: &str, command: &CommandRef) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        self.lock_action(&mut tx, &command.action_id).await?;
        let done = sqlx::query(
            "UPDATE commands SET status = 'Created', start_us = NULL, agent_instance = NULL
             WHERE action_id = $1 AND idx = $2 AND status = 'InProgress'
               AND action_id IN (SELECT id FROM actions WHERE machine_id = $3 AND status = 'InProgress')",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_result(
        &self,
        machine_id: &str,
        command: &CommandRef,
        blob: &ResultBlob,
    ) -> StoreResult<()> {
        let done = self.write_one(sqlx::query(
            "UPDATE commands SET result_key = $1, result_size = $2, result_sha256 = $3, result_chunks = $4
             WHERE action_id = $5 AND idx = $6 AND status = 'InProgress'
               AND action_id IN (SELECT id FROM actions WHERE machine_id = $7)",
        )
        .bind(&blob.key)
        .bind(blob.size as i64)
        .bind(&blob.sha256)
        .bind(blob.chunks.map(i64::from))
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        )
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_running(command));
        }
        Ok(())
    }

    async fn put_chunk(
        &self,
        machine_id: &str,
        command: &CommandRef,
        chunk: &ChunkRow,
    ) -> StoreResult<()> {
        let done = self.write_one(sqlx::query(
            "INSERT INTO result_chunks (action_id, idx, n, raw_size, raw_sha256, stored_size, stored_sha256, raw_crc32)
             SELECT c.action_id, c.idx, $1, $2, $3, $4, $5, $9 FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE c.action_id = $6 AND c.idx = $7 AND c.status = 'InProgress' AND a.machine_id = $8
             ON CONFLICT (action_id, idx, n) DO UPDATE SET raw_size = excluded.raw_size,
                raw_sha256 = excluded.raw_sha256, stored_size = excluded.stored_size,
                stored_sha256 = excluded.stored_sha256, raw_crc32 = excluded.raw_crc32,
                attempts = result_chunks.attempts + 1",
        )
        .bind(i64::from(chunk.n))
        .bind(chunk.raw_size as i64)
        .bind(&chunk.raw_sha256)
        .bind(chunk.stored_size as i64)
        .bind(&chunk.stored_sha256)
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .bind(chunk.raw_crc32.map(i64::from))
        )
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_running(command));
        }
        Ok(())
    }

    async fn list_chunks(&self, command: &CommandRef) -> StoreResult<Vec<ChunkRow>> {
        let rows =
            sqlx::query("SELECT * FROM result_chunks WHERE action_id = $1 AND idx = $2 ORDER BY n")
                .bind(&command.action_id)
                .bind(i64::from(command.index))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(ChunkRow {
                    n: row.try_get::<i64, _>("n")? as u32,
                    raw_size: row.try_get::<i64, _>("raw_size")? as u64,
                    raw_crc32: row
                        .try_get::<Option<i64>, _>("raw_crc32")?
                        .and_then(|crc| u32::try_from(crc).ok()),
                    raw_sha256: row.try_get("raw_sha256")?,
                    stored_size: row.try_get::<i64, _>("stored_size")? as u64,
                    stored_sha256: row.try_get("stored_sha256")?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                })
            })
            .collect()
    }

    async fn finish_command(
        &self,
        machine_id: &str,
        command: &CommandRef,
        finish: &Finish,
        now: Micros,
    ) -> StoreResult<Option<ActionRow>> {
        let mut tx = self.write().await?;
        self.lock_action(&mut tx, &command.action_id).await?;
        let found = sqlx::query(
            "SELECT a.status, c.work, c.result_key,
                (SELECT count(*) FROM commands r WHERE r.action_id = c.action_id AND r.status = 'Created') AS remaining
             FROM commands c JOIN actions a ON a.id = c.action_id
             WHERE c.action_id = $1 AND c.idx = $2 AND c.status = 'InProgress' AND a.machine_id = $3",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(machine_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(found) = found else {
            return Ok(None);
        };
        let action_status: ActionStatus = parse_status(found.try_get::<&str, _>("status")?)?;
        let work: Work = from_json(found.try_get::<&str, _>("work")?)?;
        let has_result = found.try_get::<Option<String>, _>("result_key")?.is_some();
        let needs_result = !matches!(work, Work::PutFile { .. });
        let missing = Finish::Failed {
            errors: vec!["The agent reported success but no result was uploaded".into()],
            timed_out: false,
        };
        let finish = match finish {
            Finish::Completed { .. } if needs_result && !has_result => &missing,
            other => other,
        };
        let file_sha256 = match finish {
            Finish::Completed { file_sha256 } => file_sha256.clone(),
            Finish::Failed { .. } => None,
        };
        let (status, errors, next_action) = match finish {
            Finish::Completed { .. } => (CommandStatus::Completed, Vec::new(), None),
            Finish::Failed { errors, timed_out } => (
                CommandStatus::Failed,
                errors.clone(),
                Some(if *timed_out {
                    ActionStatus::TimeOut
                } else {
                    ActionStatus::Failed
                }),
            ),
        };
        sqlx::query(
            "UPDATE commands SET status = $1, end_us = $2, errors = $3, file_sha256 = $4 WHERE action_id = $5 AND idx = $6",
        )
            .bind(status.as_str())
            .bind(now.0)
            .bind(json(&errors))
            .bind(file_sha256)
            .bind(&command.action_id)
            .bind(i64::from(command.index))
            .execute(&mut *tx)
            .await?;
        let remaining: i64 = found.try_get("remaining")?;
        let next_action = next_action.or((remaining == 0).then_some(ActionStatus::Succeeded));
        let row = if action_status.is_final() {
            sqlx::query("SELECT * FROM actions WHERE id = $1")
                .bind(&command.action_id)
                .fetch_one(&mut *tx)
                .await?
        } else {
            let status = next_action.unwrap_or(action_status);
            sqlx::query("UPDATE actions SET status = $1, updated_us = $2 WHERE id = $3 RETURNING *")
                .bind(status.as_str())
                .bind(now.0)
                .bind(&command.action_id)
                .fetch_one(&mut *tx)
                .await?
        };
        let mut actions = vec![action_from_row(&row)?];
        load_commands(&mut tx, &mut actions).await?;
        tx.commit().await?;
        Ok(actions.pop())
    }

    async fn sweep(
        &self,
        queue_deadline: Micros,
        lease_grace_secs: u64,
        now: Micros,
    ) -> StoreResult<Swept> {
        let mut tx = self.write().await?;
        if self.engine == Engine::Postgres {
            // One node sweeps at a time; the others skip this round.
            let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(SWEEP_LOCK)
                .fetch_one(&mut *tx)
                .await?;
            if !mine {
                return Ok(Swept::default());
            }
        }
        let sql = format!(
            "UPDATE actions SET status = 'TimeOut', updated_us = $1
             WHERE status IN {ACTIVE} AND updated_us < $2
               AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.action_id = actions.id AND c.status = 'InProgress')
             RETURNING id"
        );
        let queue_expired: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(now.0)
            .bind(queue_deadline.0)
            .fetch_all(&mut *tx)
            .await?;
        // Lock the actions first (as finish_command does), then their commands.
        let sql = format!(
            "SELECT a.id, a.machine_id, c.idx FROM actions a JOIN commands c ON c.action_id = a.id
             WHERE c.status = 'InProgress' AND c.start_us + (c.timeout_secs + $1) * 1000000 < $2{}",
            self.engine.for_update_of("a")
        );
        let expired = sqlx::query(AssertSqlSafe(sql))
            .bind(lease_grace_secs as i64)
            .bind(now.0)
            .fetch_all(&mut *tx)
            .await?;
        let message = format!(
            "The agent did not report a result within the command's timeout plus {lease_grace_secs} s"
        );
        let mut lease_expired = Vec::new();
        for row in &expired {
            let machine_id: String = row.try_get("machine_id")?;
            let command = CommandRef {
                action_id: row.try_get("id")?,
                index: row.try_get::<i64, _>("idx")? as u32,
            };
            let failed = sqlx::query(
                "UPDATE commands SET status = 'Failed', end_us = $1, errors = $2
                 WHERE action_id = $3 AND idx = $4 AND status = 'InProgress'",
            )
            .bind(now.0)
            .bind(json(&vec![message.clone()]))
            .bind(&command.action_id)
            .bind(i64::from(command.index))
            .execute(&mut *tx)
            .await?;
            if failed.rows_affected() == 0 {
                continue;
            }
            let sql = format!(
                "UPDATE actions SET status = CASE WHEN status IN {ACTIVE} THEN 'Failed' ELSE status END,
                    updated_us = $1 WHERE id = $2"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(now.0)
                .bind(&command.action_id)
                .execute(&mut *tx)
                .await?;
            lease_expired.push((machine_id, command));
        }
        tx.commit().await?;
        Ok(Swept {
            queue_expired,
            lease_expired,
        })
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<Vec<AuditEntry>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        self.lock_audit(&mut tx).await?;
        let appended = append_audit_in(&mut tx, events).await?;
        tx.commit().await?;
        Ok(appended)
    }

    async fn prune_audit(
        &self,
        before: Micros,
        mut event: AuditEvent,
    ) -> StoreResult<Option<AuditEntry>> {
        let mut tx = self.write().await?;
        self.lock_audit(&mut tx).await?;
        let through = sqlx::query(
            "SELECT seq, hash, (SELECT count(*) FROM audit_log o WHERE o.time_us < $1) AS removed
             FROM audit_log WHERE time_us < $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(before.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(through) = through else {
            return Ok(None);
        };
        let through_id: i64 = through.try_get("seq")?;
        let through_hash: String = through.try_get("hash")?;
        let removed: i64 = through.try_get("removed")?;
        // Everything up to the newest old entry goes, so the chain that is
        // kept has no hole (an old entry behind a newer one goes too).
        sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
            .bind(through_id)
            .execute(&mut *tx)
            .await?;
        let mut details: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&event.details).unwrap_or_default();
        details.insert("throughId".into(), through_id.into());
        details.insert("throughHash".into(), through_hash.into());
        details.insert("removed".into(), removed.into());
        details.insert("before".into(), before.to_wire().into());
        event.details = serde_json::Value::Object(details).to_string();
        let mut appended = append_audit_in(&mut tx, &[event]).await?;
        tx.commit().await?;
        Ok(appended.pop())
    }

    async fn expired_results(
        &self,
        ended_before: Micros,
        limit: u32,
    ) -> StoreResult<Vec<ExpiredResult>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT c.*, a.tenant_id, a.machine_id FROM actions a JOIN commands c ON c.action_id = a.id
             WHERE a.status NOT IN ('Pending', 'InProgress') AND a.updated_us < $1
               AND (c.result_key IS NOT NULL
                    OR EXISTS (SELECT 1 FROM result_chunks rc WHERE rc.action_id = c.action_id AND rc.idx = c.idx))
             ORDER BY a.updated_us LIMIT $2",
        )
        .bind(ended_before.0)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        expired_from_rows(&mut conn, rows).await
    }

    async fn abandoned_chunks(&self, limit: u32) -> StoreResult<Vec<ExpiredResult>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT c.*, a.tenant_id, a.machine_id FROM actions a JOIN commands c ON c.action_id = a.id
             WHERE a.id IN (SELECT DISTINCT action_id FROM result_chunks)
               AND a.status NOT IN ('Pending', 'InProgress') AND c.result_key IS NULL
               AND EXISTS (SELECT 1 FROM result_chunks rc WHERE rc.action_id = c.action_id AND rc.idx = c.idx)
             ORDER BY a.updated_us LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        expired_from_rows(&mut conn, rows).await
    }

    async fn forget_result(&self, command: &CommandRef, now: Micros) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let forgotten = sqlx::query(
            "UPDATE commands SET result_key = NULL, result_size = NULL, result_sha256 = NULL,
                result_chunks = NULL, result_deleted_us = $3
             WHERE action_id = $1 AND idx = $2 AND result_key IS NOT NULL",
        )
        .bind(&command.action_id)
        .bind(i64::from(command.index))
        .bind(now.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let chunks = sqlx::query("DELETE FROM result_chunks WHERE action_id = $1 AND idx = $2")
            .bind(&command.action_id)
            .bind(i64::from(command.index))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(forgotten + chunks > 0)
    }

    async fn unused_library_files(&self, before: Micros) -> StoreResult<Vec<LibraryRow>> {
        let rows = sqlx::query(
            "SELECT l.* FROM library_files l
             WHERE l.last_updated_us < $1
               AND NOT EXISTS (
                   SELECT 1 FROM commands c JOIN actions a ON a.id = c.action_id
                   WHERE a.tenant_id = l.tenant_id AND c.payload_sha256 = l.sha256
                     AND (a.created_us >= $1 OR a.status IN ('Pending', 'InProgress')))
             ORDER BY l.tenant_id, l.file_name",
        )
        .bind(before.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(library_from_row).collect()
    }

    async fn list_audit(
        &self,
        tenant_id: &str,
        query: &Query,
    ) -> StoreResult<(Vec<AuditEntry>, Option<u64>)> {
        let (rows, count) = select_page(
            &mut *self.pool.acquire().await?,
            self.engine.dialect(),
            "audit_log",
            "l",
            tenant_id,
            query,
            &audit_fields(),
            "l.seq DESC",
        )
        .await?;
        let entries = rows
            .iter()
            .map(audit_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((entries, count))
    }

    async fn audit_page(
        &self,
        after_seq: i64,
        since: Micros,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE seq > $1 AND time_us >= $2 ORDER BY seq LIMIT $3",
        )
        .bind(after_seq)
        .bind(since.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn rate_limit(
        &self,
        key: &str,
        windows: &[Window],
        now: Micros,
    ) -> StoreResult<Result<(), u64>> {
        let mut tx = self.write().await?;
        if self.engine == Engine::Postgres {
            // Every node counts calls of this key one at a time.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        let (second, longest) = ratelimit::span(windows, now);
        sqlx::query("DELETE FROM rate_limit_calls WHERE key = $1 AND second <= $2")
            .bind(key)
            .bind(second - longest)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT second, calls FROM rate_limit_calls WHERE key = $1 ORDER BY second",
        )
        .bind(key)
        .fetch_all(&mut *tx)
        .await?;
        let buckets = rows
            .iter()
            .map(|row| {
                Ok(ratelimit::Bucket {
                    second: row.try_get("second")?,
                    calls: row.try_get::<i64, _>("calls")? as u64,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let decision = ratelimit::decide(&buckets, windows, second);
        if decision.is_ok() {
            sqlx::query(
                "INSERT INTO rate_limit_calls (key, second, calls) VALUES ($1, $2, 1)
                 ON CONFLICT (key, second) DO UPDATE SET calls = rate_limit_calls.calls + 1",
            )
            .bind(key)
            .bind(second)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }
}

/// The commands of `rows` (commands joined with their action's tenant and
/// machine), each with the numbers of its recorded chunks.
async fn expired_from_rows(
    conn: &mut sqlx::pool::PoolConnection<Any>,
    rows: Vec<AnyRow>,
) -> StoreResult<Vec<ExpiredResult>> {
    let mut expired = Vec::with_capacity(rows.len());
    for row in rows {
        let command = command_from_row(&row)?;
        let command_ref = CommandRef {
            action_id: row.try_get("action_id")?,
            index: command.index,
        };
        let chunks = sqlx::query_scalar::<_, i64>(
            "SELECT n FROM result_chunks WHERE action_id = $1 AND idx = $2 ORDER BY n",
        )
        .bind(&command_ref.action_id)
        .bind(i64::from(command_ref.index))
        .fetch_all(&mut **conn)
        .await?;
        expired.push(ExpiredResult {
            command: command_ref,
            tenant_id: row.try_get("tenant_id")?,
            machine_id: row.try_get("machine_id")?,
            result: command.result,
            chunks: chunks.into_iter().map(|n| n as u32).collect(),
        });
    }
    Ok(expired)
}

fn enrollment_token_from_row(row: &AnyRow) -> StoreResult<EnrollmentTokenRow> {
    let hash: String = row.try_get("token_hash")?;
    Ok(EnrollmentTokenRow {
        id: hash.chars().take(12).collect(),
        tenant_id: row.try_get("tenant_id")?,
        created: Micros(row.try_get("created_us")?),
        expires: row.try_get::<Option<i64>, _>("expires_us")?.map(Micros),
        max_uses: row
            .try_get::<Option<i64>, _>("max_uses")?
            .map(|m| u64::try_from(m).unwrap_or(0)),
        uses: u64::try_from(row.try_get::<i64, _>("uses")?).unwrap_or(0),
        revoked: row.try_get::<Option<i64>, _>("revoked_us")?.map(Micros),
    })
}
