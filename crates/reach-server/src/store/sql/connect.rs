//! Opening the database: the engine from the URL, SQLite's pools (readers
//! and the one writer, WAL), PostgreSQL's pool, and migrations run by one
//! process at a time.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Executor;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::*;
use crate::net::redact_url;

impl SqlStore {
    /// Opens the database named by `url` (`sqlite://...` or `postgres://...`)
    /// and brings its schema up to date. Nodes starting at once set up and
    /// migrate the database one after another (a lock file for SQLite, an
    /// advisory lock for PostgreSQL).
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
        // SQLite takes no lock of its own for migrations, and switching a
        // fresh file to WAL needs an exclusive lock that two connections both
        // reading answer with an immediate "database is locked" (SQLite's
        // deadlock avoidance skips the busy timeout). So processes and tasks
        // opening one file at once take turns on a lock file for both steps.
        // PostgreSQL migrations hold an advisory lock instead.
        let _turn = match engine {
            Engine::Sqlite => Some(sqlite_migration_lock(url).await?),
            Engine::Postgres => None,
        };
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
        migrations
            .run(&writer_pool)
            .await
            .with_context(|| format!("migrating {}", redact_url(url)))?;
        Ok(Self {
            pool,
            writer_pool,
            engine,
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            identities_epoch: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Opens (creating if needed) `reach.db` in `dir`: the embedded default.
    pub async fn open_sqlite(dir: &Path) -> anyhow::Result<Self> {
        crate::data_dir::prepare_database_dir(dir)?;
        Self::connect(&sqlite_url(&dir.join("reach.db"))).await
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
