//! Running one SQL statement on either engine: a query with owned values
//! bound to its `$n` placeholders, run on the readers, a read connection or
//! a write transaction, answering rows whose columns are read by name.
//!
//! PostgreSQL runs through sqlx. SQLite runs through rusqlite on the calling
//! thread: a statement against a local file takes microseconds, and handing
//! each one to a connection thread and back (what sqlx's SQLite driver does)
//! cost a third of the server's CPU in context switches. So nothing here may
//! wait on anything but SQLite itself: a SQLite write only ever runs in a
//! transaction the writer began in its turn, after any wait for another
//! process's lock, asleep (`pool::SqliteDb::begin`); a read that can be
//! long (a page of thousands of rows, an export) is marked `long`, which
//! moves the calling worker's other tasks away while it runs. Values are
//! never logged.

use std::borrow::Cow;
use std::sync::Arc;

use rusqlite::types::ValueRef;
use sqlx::{AssertSqlSafe, Row as _, ValueRef as _};

mod value;

pub(super) use value::{Bind, Decode, Value};

use super::pool::{Conn, Pool, WriteTx};
use crate::store::{StoreError, StoreResult};

/// One row of a result: its columns by name.
#[derive(Debug, Clone)]
pub(super) struct Row {
    names: Arc<[Box<str>]>,
    values: Vec<Value>,
}

impl Row {
    /// Column `name`, as `T`: an error names the column when it is missing
    /// or holds something else.
    pub(super) fn try_get<'r, T: Decode<'r>>(&'r self, name: &str) -> StoreResult<T> {
        let index = self
            .names
            .iter()
            .position(|n| &**n == name)
            .ok_or_else(|| column_error(name, "is not in the result".into()))?;
        Ok(T::decode(&self.values[index]).map_err(|why| column_error(name, why))?)
    }

    /// The columns before and after the first one named `marker` (itself
    /// in neither): a join of two tables read as two rows, so that each
    /// table's columns keep their names (`SELECT a.*, 1 AS marker, c.*`).
    pub(super) fn split_at(self, marker: &str) -> StoreResult<(Row, Row)> {
        let index = self
            .names
            .iter()
            .position(|n| &**n == marker)
            .ok_or_else(|| column_error(marker, "is not in the result".into()))?;
        let mut before = self.values;
        let after = before.split_off(index + 1);
        before.truncate(index);
        Ok((
            Row {
                names: self.names[..index].into(),
                values: before,
            },
            Row {
                names: self.names[index + 1..].into(),
                values: after,
            },
        ))
    }

    fn first<'r, T: Decode<'r>>(&'r self) -> Result<T, DbError> {
        let value = self
            .values
            .first()
            .ok_or_else(|| column_error("0", "is not in the result".into()))?;
        T::decode(value).map_err(|why| column_error(&self.names[0], why))
    }
}

fn column_error(name: &str, why: String) -> DbError {
    DbError::Column(format!("column {name} {why}"))
}

/// What the database answered to a statement that was not a success.
#[derive(Debug, thiserror::Error)]
pub(super) enum DbError {
    /// From PostgreSQL (or the migrator).
    #[error(transparent)]
    Postgres(#[from] sqlx::Error),
    /// From SQLite.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A column missing or holding something else.
    #[error("{0}")]
    Column(String),
    /// SQLite's group commit failed, or the transaction it shared with
    /// other callers was rolled back: none of its changes were kept.
    #[error("the SQLite transaction was not committed: {0}")]
    GroupCommit(std::sync::Arc<str>),
    /// The thread that checkpoints SQLite's WAL could not start.
    #[error("starting the SQLite checkpoint thread: {0}")]
    Checkpointer(std::io::Error),
}

impl DbError {
    /// Whether the statement broke a unique index or primary key.
    pub(super) fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Postgres(err) => err
                .as_database_error()
                .is_some_and(|db| db.is_unique_violation()),
            DbError::Sqlite(rusqlite::Error::SqliteFailure(err, _)) => matches!(
                err.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

impl From<DbError> for StoreError {
    fn from(err: DbError) -> Self {
        StoreError::Other(err.into())
    }
}

/// Where a statement runs.
pub(super) enum On<'a> {
    /// Any reader (SQLite: one of the read connections; PostgreSQL: the pool).
    Pool(&'a Pool),
    /// One read connection held across several statements.
    Conn(&'a mut Conn),
    /// A write transaction.
    Tx(&'a mut WriteTx),
}

impl<'a> From<&'a Pool> for On<'a> {
    fn from(pool: &'a Pool) -> Self {
        On::Pool(pool)
    }
}

impl<'a> From<&'a mut Conn> for On<'a> {
    fn from(conn: &'a mut Conn) -> Self {
        On::Conn(conn)
    }
}

impl<'a> From<&'a mut WriteTx> for On<'a> {
    fn from(tx: &'a mut WriteTx) -> Self {
        On::Tx(tx)
    }
}

impl<'a> From<&'a mut On<'_>> for On<'a> {
    fn from(on: &'a mut On<'_>) -> Self {
        match on {
            On::Pool(pool) => On::Pool(pool),
            On::Conn(conn) => On::Conn(conn),
            On::Tx(tx) => On::Tx(tx),
        }
    }
}

/// How many rows a statement changed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Done {
    rows: u64,
}

impl Done {
    /// Rows inserted, updated or deleted.
    pub(super) fn rows_affected(&self) -> u64 {
        self.rows
    }
}

/// A statement and the values for its placeholders.
#[must_use = "a query does nothing until it runs"]
pub(super) struct Query {
    sql: Cow<'static, str>,
    binds: Vec<Value>,
    long: bool,
}

/// A statement to bind and run. `$1`, `$2`, ... name the bound values in
/// order on both engines.
pub(super) fn query(sql: impl Into<Cow<'static, str>>) -> Query {
    Query {
        sql: sql.into(),
        binds: Vec::new(),
        long: false,
    }
}

/// A statement whose answer is the first column of its rows, as `T`.
pub(super) fn query_scalar<T>(sql: impl Into<Cow<'static, str>>) -> Scalar<T> {
    Scalar {
        query: query(sql),
        _as: std::marker::PhantomData,
    }
}

enum Want {
    Nothing,
    /// The first row only: the rest are not read.
    First,
    Rows,
}

impl Query {
    /// Binds the next placeholder.
    pub(super) fn bind(mut self, value: impl Bind) -> Self {
        self.binds.push(value.value());
        self
    }

    /// Marks a read that may take long (many rows): on SQLite it runs
    /// without holding up the other tasks of the calling worker thread.
    pub(super) fn long(mut self) -> Self {
        self.long = true;
        self
    }

    /// Runs it; how many rows it changed.
    pub(super) async fn execute<'a>(self, on: impl Into<On<'a>>) -> Result<Done, DbError> {
        Ok(self.run(on.into(), Want::Nothing).await?.0)
    }

    /// Runs it; every row it answered.
    pub(super) async fn fetch_all<'a>(self, on: impl Into<On<'a>>) -> Result<Vec<Row>, DbError> {
        Ok(self.run(on.into(), Want::Rows).await?.1)
    }

    /// Runs it; its first row, if any.
    pub(super) async fn fetch_optional<'a>(
        self,
        on: impl Into<On<'a>>,
    ) -> Result<Option<Row>, DbError> {
        Ok(self.run(on.into(), Want::First).await?.1.into_iter().next())
    }

    /// Runs it; its first row, which must exist.
    pub(super) async fn fetch_one<'a>(self, on: impl Into<On<'a>>) -> Result<Row, DbError> {
        self.fetch_optional(on)
            .await?
            .ok_or(DbError::Postgres(sqlx::Error::RowNotFound))
    }

    async fn run(self, on: On<'_>, want: Want) -> Result<(Done, Vec<Row>), DbError> {
        match on {
            On::Pool(Pool::Sqlite(db)) => {
                let conn = db.reader()?;
                self.on_sqlite(&conn, want)
            }
            On::Pool(Pool::Postgres(pool)) => self.on_postgres(pool, want).await,
            On::Conn(Conn::Sqlite(conn)) => self.on_sqlite(conn, want),
            On::Conn(Conn::Postgres(conn)) => self.on_postgres(&mut **conn, want).await,
            On::Tx(WriteTx::Sqlite(tx)) => self.on_sqlite(tx.conn(), want),
            On::Tx(WriteTx::Postgres(tx)) => self.on_postgres(&mut **tx, want).await,
        }
    }

    fn on_sqlite(
        self,
        conn: &rusqlite::Connection,
        want: Want,
    ) -> Result<(Done, Vec<Row>), DbError> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if self.long && multi_thread {
            tokio::task::block_in_place(|| self.sqlite_now(conn, want))
        } else {
            self.sqlite_now(conn, want)
        }
    }

    fn sqlite_now(
        &self,
        conn: &rusqlite::Connection,
        want: Want,
    ) -> Result<(Done, Vec<Row>), DbError> {
        let mut stmt = conn.prepare_cached(&self.sql)?;
        for index in 1..=stmt.parameter_count() {
            // `$n` is SQLite's named parameter "$n": numbered by first use,
            // not by n. Bind by the name's number, as PostgreSQL does.
            let bound = match stmt.parameter_name(index) {
                Some(name) => name
                    .strip_prefix(['$', '?'])
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(index),
                None => index,
            };
            let value = self.binds.get(bound - 1).ok_or_else(|| {
                DbError::Sqlite(rusqlite::Error::InvalidParameterCount(
                    bound,
                    self.binds.len(),
                ))
            })?;
            stmt.raw_bind_parameter(index, value)?;
        }
        let names: Arc<[Box<str>]> = stmt.column_names().into_iter().map(Into::into).collect();
        let read_only = stmt.readonly();
        let mut rows = Vec::new();
        let mut answered = stmt.raw_query();
        while let Some(row) = answered.next()? {
            if matches!(want, Want::Nothing) {
                continue;
            }
            let values = (0..names.len())
                .map(|i| sqlite_value(row.get_ref(i)?))
                .collect::<Result<Vec<_>, DbError>>()?;
            rows.push(Row {
                names: names.clone(),
                values,
            });
            // A statement's changes, RETURNING included, are all made by
            // its first step; dropping `answered` resets it.
            if matches!(want, Want::First) {
                break;
            }
        }
        drop(answered);
        let changed = if read_only { 0 } else { conn.changes() };
        Ok((Done { rows: changed }, rows))
    }

    async fn on_postgres<'c, E>(self, on: E, want: Want) -> Result<(Done, Vec<Row>), DbError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        let mut query = sqlx::query(AssertSqlSafe(self.sql.into_owned()));
        for value in self.binds {
            query = match value {
                Value::Int(v) => query.bind(v),
                Value::Real(v) => query.bind(v),
                Value::Text(v) => query.bind(v),
                Value::Blob(v) => query.bind(v),
            };
        }
        match want {
            Want::Nothing => {
                let done = query.execute(on).await?;
                Ok((
                    Done {
                        rows: done.rows_affected(),
                    },
                    Vec::new(),
                ))
            }
            Want::First | Want::Rows => {
                let answered = match want {
                    Want::First => query.fetch_optional(on).await?.into_iter().collect(),
                    _ => query.fetch_all(on).await?,
                };
                let mut rows = Vec::with_capacity(answered.len());
                let mut names: Option<Arc<[Box<str>]>> = None;
                for row in &answered {
                    let names = names
                        .get_or_insert_with(|| {
                            use sqlx::Column as _;
                            row.columns().iter().map(|c| c.name().into()).collect()
                        })
                        .clone();
                    let values = (0..names.len())
                        .map(|i| postgres_value(row, i))
                        .collect::<Result<Vec<_>, sqlx::Error>>()?;
                    rows.push(Row { names, values });
                }
                Ok((Done { rows: 0 }, rows))
            }
        }
    }
}

fn sqlite_value(value: ValueRef<'_>) -> Result<Value, DbError> {
    Ok(match value {
        ValueRef::Null => Value::Text(None),
        ValueRef::Integer(n) => Value::Int(Some(n)),
        ValueRef::Real(n) => Value::Real(Some(n)),
        ValueRef::Text(bytes) => {
            Value::Text(Some(String::from_utf8(bytes.to_vec()).map_err(|err| {
                DbError::Sqlite(rusqlite::Error::Utf8Error(0, err.utf8_error()))
            })?))
        }
        ValueRef::Blob(bytes) => Value::Blob(Some(bytes.to_vec())),
    })
}

fn postgres_value(row: &sqlx::any::AnyRow, i: usize) -> Result<Value, sqlx::Error> {
    use sqlx::any::AnyTypeInfoKind as Kind;
    let raw = row.try_get_raw(i)?;
    if raw.is_null() {
        return Ok(Value::Text(None));
    }
    let kind = raw.type_info().kind();
    Ok(match kind {
        Kind::Null => Value::Text(None),
        Kind::Bool => Value::Int(Some(i64::from(row.try_get::<bool, _>(i)?))),
        Kind::SmallInt => Value::Int(Some(i64::from(row.try_get::<i16, _>(i)?))),
        Kind::Integer => Value::Int(Some(i64::from(row.try_get::<i32, _>(i)?))),
        Kind::BigInt => Value::Int(Some(row.try_get::<i64, _>(i)?)),
        Kind::Real => Value::Real(Some(f64::from(row.try_get::<f32, _>(i)?))),
        Kind::Double => Value::Real(Some(row.try_get::<f64, _>(i)?)),
        Kind::Text => Value::Text(Some(row.try_get::<String, _>(i)?)),
        Kind::Blob => Value::Blob(Some(row.try_get::<Vec<u8>, _>(i)?)),
    })
}

/// A query answered by the first column of its rows.
#[must_use = "a query does nothing until it runs"]
pub(super) struct Scalar<T> {
    query: Query,
    _as: std::marker::PhantomData<fn() -> T>,
}

impl<T: for<'r> Decode<'r>> Scalar<T> {
    /// Binds the next placeholder.
    pub(super) fn bind(mut self, value: impl Bind) -> Self {
        self.query = self.query.bind(value);
        self
    }

    /// As `Query::long`.
    pub(super) fn long(mut self) -> Self {
        self.query = self.query.long();
        self
    }

    /// Runs it; the first column of its first row, which must exist.
    pub(super) async fn fetch_one<'a>(self, on: impl Into<On<'a>>) -> Result<T, DbError> {
        self.query.fetch_one(on).await?.first()
    }

    /// Runs it; the first column of its first row, if any.
    pub(super) async fn fetch_optional<'a>(
        self,
        on: impl Into<On<'a>>,
    ) -> Result<Option<T>, DbError> {
        match self.query.fetch_optional(on).await? {
            Some(row) => Ok(Some(row.first()?)),
            None => Ok(None),
        }
    }

    /// Runs it; the first column of every row.
    pub(super) async fn fetch_all<'a>(self, on: impl Into<On<'a>>) -> Result<Vec<T>, DbError> {
        self.query
            .fetch_all(on)
            .await?
            .iter()
            .map(Row::first)
            .collect()
    }
}

/// A struct read from a row, one field per column of the same name.
macro_rules! record {
    ($(#[$meta:meta])* struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        struct $name { $($field: $ty),* }
        impl $name {
            fn from_row(row: &$crate::store::sql::exec::Row) -> $crate::store::StoreResult<Self> {
                Ok(Self { $($field: row.try_get(stringify!($field))?),* })
            }
        }
    };
}
pub(super) use record;
