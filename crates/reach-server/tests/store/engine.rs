//! The engine itself: SQLite URLs and files, migrations run once when nodes start together.

use super::*;

#[tokio::test]
async fn a_sqlite_url_names_a_file_created_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let store = SqlStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert!(path.exists());
    let err = SqlStore::connect("mysql://localhost/reach")
        .await
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("unsupported database URL"),
        "{err:#}"
    );
}

#[tokio::test]
async fn nodes_starting_at_once_migrate_once() {
    for backend in backends().await {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = backend.url.clone();
            tasks.push(tokio::spawn(async move { SqlStore::connect(&url).await }));
        }
        for task in tasks {
            let store = task
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: {e:#}", backend.name));
            store.ping().await.unwrap();
        }
    }
}

/// Tasks opening one fresh SQLite file at once: switching it to WAL and
/// migrating take turns, so none is answered "database is locked" (two
/// connections upgrading their shared locks get that at once, whatever the
/// busy timeout). Many rounds, because the race is narrow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_opening_a_fresh_sqlite_file_at_once_all_succeed() {
    for round in 0..25 {
        let dir = tempfile::tempdir().unwrap();
        let url = reach_server::store::sql::sqlite_url(&dir.path().join("reach.db"));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move { SqlStore::connect(&url).await }));
        }
        for task in tasks {
            let store = task
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
            store.ping().await.unwrap();
        }
    }
}

/// Migrations before this number were numbered per engine; from it on, a
/// change has the same number and name in both (ARCHITECTURE.md).
const FIRST_SHARED_MIGRATION: u32 = 17;

/// The migration files of one engine at or after `FIRST_SHARED_MIGRATION`.
fn shared_migrations(engine: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(engine);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| {
            let number: u32 = name
                .split('_')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name} does not start with its number"));
            number >= FIRST_SHARED_MIGRATION
        })
        .collect();
    names.sort();
    names
}

#[test]
fn each_new_migration_has_the_same_number_and_name_in_both_engines() {
    assert_eq!(
        shared_migrations("sqlite"),
        shared_migrations("postgres"),
        "a schema change is one migration per engine, with the same number and name"
    );
    let legacy_sqlite = std::fs::read_dir(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite"),
    )
    .unwrap()
    .count()
        - shared_migrations("sqlite").len();
    assert!(
        legacy_sqlite < FIRST_SHARED_MIGRATION as usize,
        "FIRST_SHARED_MIGRATION is past the newest SQLite migration numbered alone"
    );
}

/// SQLite's writer does not checkpoint as it commits (that writes and syncs
/// the database file on the committing thread, a runtime worker); a thread
/// of the store's own copies the WAL into the database file while it runs.
#[tokio::test]
async fn sqlite_copies_the_wal_into_the_database_file_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reach.db");
    let store = SqlStore::connect(&reach_server::store::sql::sqlite_url(&path))
        .await
        .unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let event = reach_server::audit::event(
        TENANT,
        reach_server::audit::Actor::system(),
        Operation::MachineTagged,
        Outcome::Succeeded,
        serde_json::json!({ "padding": "x".repeat(8192) }),
    );
    // 4 MiB of entries.
    for _ in 0..64 {
        store.append_audit(&vec![event.clone(); 8]).await.unwrap();
    }
    testing::eventually("the WAL copied into the database file", async || {
        std::fs::metadata(&path).unwrap().len() > before + 4 * 1024 * 1024
    })
    .await;
    store.ping().await.unwrap();
}

/// SQLite's plan for `sql` (one text parameter, `arg`) on a fresh,
/// migrated database: the `detail` of each step.
async fn sqlite_plan(sql: &str, arg: &str) -> Vec<String> {
    use sqlx::Row;
    let dir = tempfile::tempdir().unwrap();
    let url = reach_server::store::sql::sqlite_url(&dir.path().join("reach.db"));
    let _store = SqlStore::connect(&url).await.unwrap();
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&url).await.unwrap();
    // Test text only: the two fixed statements below.
    sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .bind(arg.to_string())
        .fetch_all(&db)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get("detail"))
        .collect()
}

/// Every submit counts the tenant's running actions (the per-tenant limit).
/// On SQLite that count reads an index of running actions alone: through
/// the tenant's index of all actions it read every action the tenant ever
/// had, a cost that grew with history.
#[tokio::test]
async fn the_running_count_at_submit_reads_running_actions_only() {
    let plan = sqlite_plan(
        "SELECT count(*) FROM actions WHERE tenant_id = $1 AND status = 'InProgress' AND batch_id IS NULL",
        TENANT,
    )
    .await;
    assert!(
        plan.iter()
            .any(|step| step.contains("INDEX actions_running_by_tenant")),
        "{plan:?}"
    );
}

/// Whether one of a machine's actions has a command running is read through
/// the commands' primary key, by action: through `commands_running` SQLite
/// read every running command of the fleet for each claim (`idx >= 0`
/// steers it; the claim, the sweep and cancel use the same term).
#[tokio::test]
async fn a_claim_reads_its_machines_commands_not_every_running_one() {
    let plan = sqlite_plan(
        "SELECT count(*) FROM actions x WHERE x.machine_id = $1
            AND x.status IN ('Pending', 'InProgress')
            AND EXISTS (SELECT 1 FROM commands r WHERE r.action_id = x.id AND r.idx >= 0
                AND r.status = 'InProgress')",
        "m",
    )
    .await;
    assert!(
        plan.iter()
            .any(|step| step.contains("sqlite_autoindex_commands_1"))
            && !plan.iter().any(|step| step.contains("commands_running")),
        "{plan:?}"
    );
}

/// The sweep (every second) and the re-wake (every fifth sweep) read the
/// actions that wait through indexes of those alone (on SQLite the sweep's
/// is `actions_active`, by status and last change): through an index of
/// all active actions they read a whole batch in flight each time (2 s a
/// call with 100,000 machines on PostgreSQL).
#[tokio::test]
async fn the_sweep_and_the_rewake_read_waiting_actions_only() {
    let plan = sqlite_plan(
        "SELECT id FROM actions
          WHERE status IN ('Pending', 'InProgress') AND batch_id IS NULL AND updated_us < $1",
        "0",
    )
    .await;
    assert!(
        plan.iter().any(|step| step
            .contains("SEARCH actions USING INDEX actions_active (status=? AND updated_us<?)")),
        "{plan:?}"
    );
    let plan = sqlite_plan(
        "SELECT a.machine_id FROM actions a JOIN machines m ON m.id = a.machine_id
          WHERE a.status = 'Pending' AND a.created_us < $1 AND m.connected = 1
          ORDER BY a.created_us LIMIT 1000",
        "0",
    )
    .await;
    assert!(
        plan.iter()
            .any(|step| step.contains("INDEX actions_pending_by_creation")),
        "{plan:?}"
    );
}

/// A page of a batch's results reads its transcripts by key: joined from
/// the tenant's actions, SQLite read every action of the tenant for each
/// group of 50 lines.
#[tokio::test]
async fn transcripts_of_a_page_are_read_by_their_keys() {
    let plan = sqlite_plan(
        "SELECT r.action_id, r.idx, r.bytes FROM inline_results r
          WHERE r.action_id IN ($1)
            AND EXISTS (SELECT 1 FROM actions a WHERE a.id = r.action_id AND a.tenant_id = 't')",
        "a1",
    )
    .await;
    assert!(
        plan.iter()
            .any(|step| step.contains("SEARCH r USING INDEX sqlite_autoindex_inline_results_1"))
            && !plan.iter().any(|step| step.contains("actions_by_tenant")),
        "{plan:?}"
    );
}

/// Another process holding SQLite's write lock (an operator's subcommand, or
/// a `sqlite3` shell inside `BEGIN`) makes the server's writes wait asleep,
/// not in SQLite's busy handler on a runtime thread: the runtime goes on
/// serving reads, and the write goes through once the lock is released.
#[tokio::test]
async fn a_write_waiting_for_another_process_lock_does_not_hold_up_the_runtime() {
    use sqlx::Executor;
    let dir = tempfile::tempdir().unwrap();
    let url = reach_server::store::sql::sqlite_url(&dir.path().join("reach.db"));
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    sqlx::any::install_default_drivers();
    let mut other = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    other.execute("BEGIN IMMEDIATE").await.unwrap();
    let writer = store.clone();
    let write = tokio::spawn(async move { writer.secret("waited", "value", Micros::now()).await });
    // This test's runtime has one thread: were the write blocking it, none
    // of this would run until SQLite gave up on the lock.
    for _ in 0..20 {
        store.ping().await.unwrap();
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!write.is_finished(), "the write waits for the lock");
    other.execute("COMMIT").await.unwrap();
    let kept = write.await.unwrap().unwrap();
    assert_eq!(kept, "value");
}
