//! Opening the database: the engine from the URL, WAL mode for SQLite,
//! migrations run by one process at a time (through sqlx's migrator on both
//! engines), then the connections `pool` holds.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Executor;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::pool::SqliteDb;
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
        let pool = match engine {
            Engine::Sqlite => {
                // WAL is a property of the database file: set it once, with
                // the migrations, on a connection of its own.
                let first = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .with_context(|| format!("opening {}", redact_url(url)))?;
                first.execute("PRAGMA journal_mode = WAL").await?;
                sqlx::migrate!("./migrations/sqlite")
                    .run(&first)
                    .await
                    .with_context(|| format!("migrating {}", redact_url(url)))?;
                first.close().await;
                let path = sqlite_path(url)?;
                Pool::Sqlite(
                    SqliteDb::open(&path).with_context(|| format!("opening {}", path.display()))?,
                )
            }
            Engine::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(32)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .with_context(|| format!("connecting to {}", redact_url(url)))?;
                sqlx::migrate!("./migrations/postgres")
                    .run(&pool)
                    .await
                    .with_context(|| format!("migrating {}", redact_url(url)))?;
                Pool::Postgres(pool)
            }
        };
        Ok(Self {
            pool,
            engine,
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
    let mut path = sqlite_path(url)?.into_os_string();
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

/// The database file a `sqlite://` URL names.
fn sqlite_path(url: &str) -> anyhow::Result<PathBuf> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    Ok(options.get_filename().to_path_buf())
}

/// A `sqlite://` URL for a database file, created when missing.
pub fn sqlite_url(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = url::Url::parse("sqlite://").expect("a valid base URL");
    url.set_path(&path.to_string_lossy());
    url.set_query(Some("mode=rwc"));
    url.to_string()
}
