//! The store conformance suite: every test runs the same steps on SQLite and
//! on PostgreSQL (a fresh database on the server named by
//! REACH_TEST_DATABASE_URL; without it the PostgreSQL half prints a skip
//! notice). Races are real: several tasks on several connections (and, on
//! PostgreSQL, two separately opened stores standing in for two nodes).

use reach_server::audit::{Operation, Outcome};
use std::sync::Arc;

use reach_proto::agent::{CommandRef, MachineInfo, Work};
use reach_proto::api::{ActionStatus, Command, CommandStatus};
use reach_server::odata::Query;
use reach_server::ratelimit::Window;
use reach_server::store::sql::SqlStore;
use reach_server::store::*;
use reach_server::testing;
use reach_server::time::Micros;

/// One backend under test: its name, a URL to open more stores on, and the
/// temp dir that holds it (SQLite).
struct Backend {
    name: &'static str,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    async fn open(&self) -> SqlStore {
        SqlStore::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("opening {}: {e:#}", self.name))
    }
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![Backend {
        name: "sqlite",
        url: reach_server::store::sql::sqlite_url(&dir.path().join("reach.db")),
        _dir: Some(dir),
    }];
    if let Some(url) = testing::fresh_postgres().await {
        all.push(Backend {
            name: "postgres",
            url,
            _dir: None,
        });
    }
    all
}

/// Defender's tenant limit, and a queue per requestor.
const LIMITS: ActionLimits = ActionLimits {
    running_per_tenant: 25,
    pending_per_requestor: 100,
};

const TENANT: &str = "t";

fn info(hostname: &str) -> MachineInfo {
    MachineInfo {
        hostname: hostname.into(),
        os_platform: "Linux".into(),
        os_version: "6.1".into(),
        os_architecture: "64-bit".into(),
        agent_version: "0.1.0".into(),
        ip_addresses: vec![],
    }
}

/// A tenant with an enrollment token and `machines` enrolled machines
/// (ids `aaaa...`, `bbbb...`, hostnames `host-0`, `host-1`, ...).
async fn seed(store: &SqlStore, machines: usize) -> Vec<String> {
    let now = Micros::now();
    let tenant = Tenant {
        id: TENANT.into(),
        name: "Tenant".into(),
    };
    store.create_tenant(&tenant, now).await.unwrap();
    store
        .create_enrollment_token(TENANT, "token-hash", None, None, now)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..machines {
        let id = format!("{:040x}", i + 1);
        store
            .enroll_machine(
                "token-hash",
                &id,
                "cred",
                &info(&format!("host-{i}")),
                Some("10.0.0.1"),
                now,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

fn put_file(name: &str) -> NewCommand {
    NewCommand {
        command: Command {
            kind: "PutFile".into(),
            params: vec![],
        },
        work: Work::PutFile {
            signature: None,
            file_name: name.into(),
            sha256: "abc".into(),
        },
        timeout_secs: 60,
    }
}

fn get_file(path: &str) -> NewCommand {
    NewCommand {
        command: Command {
            kind: "GetFile".into(),
            params: vec![],
        },
        work: Work::GetFile { path: path.into() },
        timeout_secs: 60,
    }
}

fn action(id: &str, machine: &str, commands: Vec<NewCommand>) -> NewAction {
    NewAction {
        id: id.into(),
        tenant_id: TENANT.into(),
        machine_id: machine.into(),
        requestor: "analyst".into(),
        requestor_id: "app:analyst".into(),
        requestor_comment: Some("triage".into()),
        commands,
        now: Micros::now(),
    }
}

/// A store with one machine and one action "a1" of `commands` on it.
async fn with_action(backend: &Backend, commands: Vec<NewCommand>) -> (SqlStore, String) {
    let store = backend.open().await;
    let machine = seed(&store, 1).await.remove(0);
    store
        .create_action(&action("a1", &machine, commands), LIMITS)
        .await
        .unwrap();
    (store, machine)
}

fn query(raw: &str) -> Query {
    Query::parse(Some(raw)).unwrap()
}

#[tokio::test]
async fn a_command_is_claimed_once_and_recorded_once() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![put_file("x")]).await;
        let machine = &machine;
        let now = Micros::now();
        let claimed = store
            .claim_next_command(machine, "agent-1", now)
            .await
            .unwrap();
        let claimed = claimed.expect("the command is claimed");
        assert_eq!(
            claimed.command,
            CommandRef {
                action_id: "a1".into(),
                index: 0
            }
        );
        assert!(
            store
                .claim_next_command(machine, "agent-1", now)
                .await
                .unwrap()
                .is_none(),
            "{}: never handed out twice",
            backend.name
        );
        let finish = Finish::Completed { file_sha256: None };
        let first = store
            .finish_command(machine, &claimed.command, &finish, now)
            .await
            .unwrap();
        assert_eq!(first.unwrap().status, ActionStatus::Succeeded);
        let again = store
            .finish_command(machine, &claimed.command, &finish, now)
            .await
            .unwrap();
        assert!(
            again.is_none(),
            "{}: a repeat changes nothing",
            backend.name
        );
        let stored = store.get_action(TENANT, "a1").await.unwrap();
        assert_eq!(stored.status, ActionStatus::Succeeded);
        assert_eq!(stored.commands[0].status, CommandStatus::Completed);
        assert_eq!(stored.requestor_comment.as_deref(), Some("triage"));
    }
}

#[tokio::test]
async fn nodes_racing_to_claim_hand_a_command_out_once() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        store
            .create_action(&action("a1", &machines[0], vec![put_file("x")]), LIMITS)
            .await
            .unwrap();
        // Two stores: two nodes with their own connection pools.
        let nodes = [Arc::new(store), Arc::new(backend.open().await)];
        let mut tasks = Vec::new();
        for i in 0..8 {
            let node = nodes[i % 2].clone();
            let machine = machines[0].clone();
            tasks.push(tokio::spawn(async move {
                node.claim_next_command(&machine, "agent-1", Micros::now())
                    .await
                    .unwrap()
            }));
        }
        let mut claimed = 0;
        for task in tasks {
            claimed += usize::from(task.await.unwrap().is_some());
        }
        assert_eq!(claimed, 1, "{}: claimed exactly once", backend.name);
    }
}

#[tokio::test]
async fn racing_submissions_get_one_action_per_machine_and_the_tenant_limit() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 6).await;
        let nodes = [Arc::new(store), Arc::new(backend.open().await)];
        // Eight submissions for one machine at once: exactly one wins.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let node = nodes[i % 2].clone();
            let new = action(&format!("same-{i}"), &machines[0], vec![put_file("x")]);
            tasks.push(tokio::spawn(async move {
                node.create_action(&new, LIMITS).await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::ActiveActionExists) => {}
                Err(other) => panic!("{}: unexpected {other:?}", backend.name),
            }
        }
        assert_eq!(won, 1, "{}: one active action per machine", backend.name);
        // Five machines racing against a limit of 3 queued per requestor (1 is queued).
        let mut tasks = Vec::new();
        for (i, machine) in machines[1..].iter().enumerate() {
            let node = nodes[i % 2].clone();
            let new = action(&format!("limit-{i}"), machine, vec![put_file("x")]);
            tasks.push(tokio::spawn(async move {
                node.create_action(
                    &new,
                    ActionLimits {
                        pending_per_requestor: 3,
                        ..LIMITS
                    },
                )
                .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::RequestorQueueLimit(3)) => {}
                Err(other) => panic!("{}: unexpected {other:?}", backend.name),
            }
        }
        assert_eq!(won, 2, "{}: the queue limit holds", backend.name);
        let counts = nodes[0].count_actions_by_status().await.unwrap();
        let pending = counts
            .iter()
            .find(|(s, _)| *s == ActionStatus::Pending)
            .unwrap();
        assert_eq!(pending.1, 3);
    }
}

#[tokio::test]
async fn another_machine_cannot_claim_record_or_finish() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 2).await;
        store
            .create_action(&action("a1", &machines[0], vec![get_file("/x")]), LIMITS)
            .await
            .unwrap();
        let now = Micros::now();
        let claimed = store
            .claim_next_command(&machines[0], "agent-1", now)
            .await
            .unwrap()
            .unwrap();
        let other = &machines[1];
        let own = store
            .machine_command(&machines[0], &claimed.command)
            .await
            .unwrap();
        assert_eq!(own.status, CommandStatus::InProgress);
        assert!(matches!(
            store.machine_command(other, &claimed.command).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            store
                .claim_next_command(other, "agent-1", now)
                .await
                .unwrap()
                .is_none()
        );
        let failed = Finish::Failed {
            errors: vec!["forged".into()],
            timed_out: false,
        };
        assert!(
            store
                .finish_command(other, &claimed.command, &failed, now)
                .await
                .unwrap()
                .is_none()
        );
        let blob = ResultBlob {
            key: "k".into(),
            size: 1,
            sha256: Some("s".into()),
            chunks: None,
        };
        assert!(matches!(
            store.record_result(other, &claimed.command, &blob).await,
            Err(StoreError::NotFound(_))
        ));
        // The owner records a result in chunks, one of them sent twice.
        let chunk = |n: u32| ChunkRow {
            n,
            raw_size: 10,
            // Chunk 0 announced by its SHA-256 alone, the others by CRC-32
            // (the largest one too, which must not wrap).
            raw_crc32: (n > 0).then_some(u32::MAX - n),
            raw_sha256: if n == 0 { "raw0".into() } else { String::new() },
            stored_size: 12,
            stored_sha256: format!("stored{n}"),
            attempts: 1,
        };
        for n in [0, 1, 1] {
            store
                .put_chunk(&machines[0], &claimed.command, &chunk(n))
                .await
                .unwrap();
        }
        assert!(
            store
                .put_chunk(other, &claimed.command, &chunk(2))
                .await
                .is_err()
        );
        let chunks = store.list_chunks(&claimed.command).await.unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].attempts, 2, "{}", backend.name);
        assert_eq!(chunks[0], chunk(0), "{}", backend.name);
        assert_eq!(chunks[1].raw_crc32, Some(u32::MAX - 1), "{}", backend.name);
        store
            .record_result(&machines[0], &claimed.command, &blob)
            .await
            .unwrap();
        let done = Finish::Completed {
            file_sha256: Some("f".into()),
        };
        let action = store
            .finish_command(&machines[0], &claimed.command, &done, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(action.status, ActionStatus::Succeeded);
        assert_eq!(action.commands[0].result.as_ref(), Some(&blob));
        assert_eq!(action.commands[0].file_sha256.as_deref(), Some("f"));
    }
}

#[tokio::test]
async fn a_result_is_required_and_failures_stop_the_action() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        let machine = &machines[0];
        let commands = vec![get_file("/a"), put_file("b")];
        store
            .create_action(&action("a1", machine, commands), LIMITS)
            .await
            .unwrap();
        let now = Micros::now();
        let claimed = store
            .claim_next_command(machine, "agent-1", now)
            .await
            .unwrap()
            .unwrap();
        let done = Finish::Completed { file_sha256: None };
        let action = store
            .finish_command(machine, &claimed.command, &done, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(action.status, ActionStatus::Failed, "{}", backend.name);
        assert_eq!(action.commands[0].status, CommandStatus::Failed);
        assert!(action.commands[0].errors[0].contains("no result"));
        assert_eq!(action.commands[1].status, CommandStatus::Created);
        assert!(
            store
                .claim_next_command(machine, "agent-1", now)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn cancel_ends_an_active_action_once() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![put_file("x")]).await;
        let machine = &machine;
        let now = Micros::now();
        store
            .claim_next_command(machine, "agent-1", now)
            .await
            .unwrap();
        let cancelled = store
            .cancel_action(TENANT, "a1", "lead", Some("wrong host"), now)
            .await
            .unwrap();
        assert_eq!(cancelled.status, ActionStatus::Cancelled);
        assert_eq!(cancelled.cancellation_requestor.as_deref(), Some("lead"));
        assert_eq!(cancelled.commands[0].status, CommandStatus::Failed);
        assert!(matches!(
            store.cancel_action(TENANT, "a1", "lead", None, now).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.cancel_action("other", "a1", "x", None, now).await,
            Err(StoreError::NotFound(_))
        ));
        // A new action may start on the machine.
        store
            .create_action(&action("a2", machine, vec![put_file("x")]), LIMITS)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn sweeps_expire_queued_actions_and_lapsed_leases_once() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 2).await;
        let mut queued = action("queued", &machines[0], vec![put_file("x")]);
        queued.now = Micros::now().minus_secs(100);
        store.create_action(&queued, LIMITS).await.unwrap();
        let mut running = action("running", &machines[1], vec![put_file("x")]);
        running.now = Micros::now().minus_secs(1000);
        store.create_action(&running, LIMITS).await.unwrap();
        store
            .claim_next_command(&machines[1], "agent-1", Micros::now().minus_secs(500))
            .await
            .unwrap()
            .unwrap();
        let nodes = [Arc::new(store), Arc::new(backend.open().await)];
        let now = Micros::now();
        let (a, b) = tokio::join!(
            nodes[0].sweep(now.minus_secs(50), 120, now),
            nodes[1].sweep(now.minus_secs(50), 120, now)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut expired: Vec<String> = a.queue_expired.into_iter().chain(b.queue_expired).collect();
        expired.sort();
        assert_eq!(expired, vec!["queued".to_string()], "{}", backend.name);
        let leases: Vec<_> = a.lease_expired.into_iter().chain(b.lease_expired).collect();
        assert_eq!(leases.len(), 1, "{}: a lease expires once", backend.name);
        assert_eq!(leases[0].0, machines[1]);
        let timed_out = nodes[0].get_action(TENANT, "queued").await.unwrap();
        assert_eq!(timed_out.status, ActionStatus::TimeOut);
        let failed = nodes[0].get_action(TENANT, "running").await.unwrap();
        assert_eq!(failed.status, ActionStatus::Failed);
        assert!(failed.commands[0].errors[0].contains("timeout plus 120 s"));
        let again = nodes[0].sweep(now.minus_secs(50), 120, now).await.unwrap();
        assert_eq!(again, Swept::default());
    }
}

#[tokio::test]
async fn actions_and_machines_are_listed_with_odata() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 3).await;
        for (i, machine) in machines.iter().enumerate() {
            let mut new = action(&format!("a{i}"), machine, vec![put_file("x")]);
            new.now = Micros(1_700_000_000_000_000 + i as i64 * 1_000_000);
            store.create_action(&new, LIMITS).await.unwrap();
        }
        store
            .cancel_action(TENANT, "a1", "lead", None, Micros::now())
            .await
            .unwrap();
        let (all, count) = store
            .list_actions(TENANT, &query("$count=true"))
            .await
            .unwrap();
        let ids: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a2", "a1", "a0"], "{}: newest first", backend.name);
        assert_eq!(count, Some(3));
        let filter = format!(
            "$filter=status eq 'pending' and machineId in ('{}', '{}')&$orderby=creationDateTimeUtc asc&$top=1",
            machines[0], machines[1]
        );
        let (some, _) = store.list_actions(TENANT, &query(&filter)).await.unwrap();
        let ids: Vec<&str> = some.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a0"], "{}", backend.name);
        let (late, _) = store
            .list_actions(
                TENANT,
                &query("$filter=creationDateTimeUtc ge 2023-11-14T22:13:21Z"),
            )
            .await
            .unwrap();
        assert_eq!(late.len(), 2, "{}", backend.name);
        assert!(matches!(
            store
                .list_actions(TENANT, &query("$filter=colour eq 'red'"))
                .await,
            Err(StoreError::InvalidQuery(_))
        ));

        let (named, count) = store
            .list_machines(
                TENANT,
                &query("$filter=startswith(computerDnsName,'HOST-') and computerDnsName ne 'host-1'&$count=true"),
                Micros(0),
            )
            .await
            .unwrap();
        let names: Vec<&str> = named.iter().map(|m| m.info.hostname.as_str()).collect();
        assert_eq!(names, ["host-0", "host-2"], "{}", backend.name);
        assert_eq!(count, Some(2));
        let (tagged, _) = store
            .list_machines(
                TENANT,
                &query("$filter=machineTags/any(t: t eq 'x')"),
                Micros(0),
            )
            .await
            .unwrap();
        assert!(tagged.is_empty());
        let by_name = store.get_machine(TENANT, "HOST-2").await.unwrap();
        assert_eq!(by_name.id, machines[2]);
        let by_id = store
            .get_machine(TENANT, &machines[1].to_uppercase())
            .await
            .unwrap();
        assert_eq!(by_id.info.hostname, "host-1");
        assert!(matches!(
            store.get_machine("other", "host-1").await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn library_names_are_unique_without_case_and_blobs_stay_while_used() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        let now = Micros::now();
        let row = |name: &str, sha: &str| LibraryRow {
            tenant_id: TENANT.into(),
            file_name: name.into(),
            sha256: sha.into(),
            size: 3,
            description: Some("d".into()),
            has_parameters: true,
            parameters_description: Some("-v".into()),
            created_by: "analyst".into(),
            last_updated_by: None,
            creation_time: now,
            last_updated_time: now,
            signature: Some(format!("sig-{sha}")),
        };
        assert!(
            store
                .put_library_file(&row("Collect.sh", "abc"), false)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            store
                .put_library_file(&row("collect.SH", "def"), false)
                .await,
            Err(StoreError::Conflict(_))
        ));
        let replaced = store
            .put_library_file(&row("collect.SH", "def"), true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(replaced.sha256, "abc", "{}", backend.name);
        assert_eq!(replaced.signature.as_deref(), Some("sig-abc"));
        let stored = store.get_library_file(TENANT, "COLLECT.sh").await.unwrap();
        assert_eq!(stored.file_name, "Collect.sh");
        assert_eq!(stored.sha256, "def");
        assert_eq!(
            stored.signature.as_deref(),
            Some("sig-def"),
            "replaced with the file"
        );
        assert_eq!(stored.last_updated_by.as_deref(), Some("analyst"));
        // A queued action still needs the old bytes.
        store
            .create_action(
                &action("a1", &machines[0], vec![put_file("Collect.sh")]),
                LIMITS,
            )
            .await
            .unwrap();
        assert!(store.library_blob_in_use(TENANT, "abc").await.unwrap());
        assert!(!store.library_blob_in_use(TENANT, "zzz").await.unwrap());
        store
            .delete_library_file(TENANT, "collect.sh")
            .await
            .unwrap();
        assert!(store.list_library_files(TENANT).await.unwrap().is_empty());
        assert!(!store.library_blob_in_use(TENANT, "def").await.unwrap());
        assert!(matches!(
            store.delete_library_file(TENANT, "collect.sh").await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn machines_connect_disconnect_and_are_revoked() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        let machine = &machines[0];
        let mut moved = info("renamed");
        moved.os_version = "6.2".into();
        store
            .machine_connected(machine, &moved, None, Micros::now())
            .await
            .unwrap();
        let row = store.get_machine(TENANT, machine).await.unwrap();
        assert!(row.connected);
        assert_eq!(row.info.hostname, "renamed");
        assert_eq!(
            row.last_ip.as_deref(),
            Some("10.0.0.1"),
            "kept when unknown"
        );
        let later = Micros::now().plus_secs(60);
        store
            .machines_seen(&[machine.clone(), "f".repeat(40)], later)
            .await
            .unwrap();
        let row = store.get_machine(TENANT, machine).await.unwrap();
        assert_eq!(
            row.last_seen, later,
            "{}: heartbeats recorded in a batch",
            backend.name
        );
        store.revoke_machine(machine).await.unwrap();
        assert!(store.machine_credential(machine).await.unwrap().revoked);
        assert_eq!(
            store.revoked_connected().await.unwrap(),
            vec![machine.clone()]
        );
        store
            .machine_disconnected(machine, Micros::now())
            .await
            .unwrap();
        assert!(store.revoked_connected().await.unwrap().is_empty());
        assert!(matches!(
            store
                .enroll_machine(
                    "unknown",
                    "f".repeat(40).as_str(),
                    "c",
                    &info("x"),
                    None,
                    Micros::now()
                )
                .await,
            Err(StoreError::Refused(_))
        ));
    }
}

#[tokio::test]
async fn secrets_and_rate_limits_are_shared_by_every_node() {
    for backend in backends().await {
        let nodes = [
            Arc::new(backend.open().await),
            Arc::new(backend.open().await),
        ];
        let now = Micros::now();
        let (a, b) = tokio::join!(
            nodes[0].secret("k", "first", now),
            nodes[1].secret("k", "second", now)
        );
        assert_eq!(a.unwrap(), b.unwrap(), "{}: one secret wins", backend.name);
        // Twelve calls at once from two nodes against 5 a minute: 5 pass.
        let windows = [Window::per_minute(5)];
        let mut tasks = Vec::new();
        for i in 0..12 {
            let node = nodes[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                node.rate_limit("app/runliveresponse", &windows, now).await
            }));
        }
        let mut allowed = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Ok(()) => allowed += 1,
                Err(wait) => assert_eq!(wait, 60, "{}", backend.name),
            }
        }
        assert_eq!(allowed, 5, "{}: the budget is the cluster's", backend.name);
        let other = nodes[0]
            .rate_limit("other/runliveresponse", &windows, now)
            .await
            .unwrap();
        assert!(other.is_ok(), "budgets are per caller");
        let later = nodes[1]
            .rate_limit("app/runliveresponse", &windows, now.plus_secs(60))
            .await
            .unwrap();
        assert!(later.is_ok(), "{}: calls age out", backend.name);
    }
}

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

#[tokio::test]
async fn a_command_its_agent_never_received_is_handed_out_again() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![put_file("x")]).await;
        let machine = &machine;
        let now = Micros::now();
        let first = store
            .claim_next_command(machine, "agent-1", now)
            .await
            .unwrap()
            .unwrap();
        let running = store.running_commands(machine).await.unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].agent_instance, "agent-1", "{}", backend.name);
        assert!(
            store
                .requeue_command(machine, &first.command)
                .await
                .unwrap()
        );
        assert!(
            !store
                .requeue_command(machine, &first.command)
                .await
                .unwrap(),
            "only an InProgress command"
        );
        let again = store
            .claim_next_command(machine, "agent-1", now)
            .await
            .unwrap()
            .expect("handed out again");
        assert_eq!(again.command, first.command);
        assert!(
            !store
                .requeue_command(&"f".repeat(40), &again.command)
                .await
                .unwrap(),
            "{}: only by its own machine",
            backend.name
        );
    }
}

#[tokio::test]
async fn nodes_appending_to_the_audit_trail_at_once_form_one_chain() {
    for backend in backends().await {
        let nodes = [
            Arc::new(backend.open().await),
            Arc::new(backend.open().await),
        ];
        let mut tasks = Vec::new();
        for i in 0..16 {
            let node = nodes[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let events: Vec<AuditEvent> = (0..3)
                    .map(|j| {
                        let mut event = reach_server::audit::event(
                            TENANT,
                            reach_server::audit::Actor::system(),
                            Operation::MachineTagged,
                            Outcome::Succeeded,
                            serde_json::json!({ "task": i, "event": j }),
                        );
                        event.http_status = Some(200);
                        event.source_ip = Some("10.0.0.1".into());
                        event
                    })
                    .collect();
                node.append_audit(&events).await.unwrap()
            }));
        }
        for task in tasks {
            let appended = task.await.unwrap();
            // A batch keeps its order and its own links.
            assert_eq!(appended[1].seq, appended[0].seq + 1, "{}", backend.name);
            assert_eq!(appended[1].prev_hash, appended[0].hash);
        }
        let all = nodes[0]
            .audit_page(0, Micros(i64::MIN), 1000)
            .await
            .unwrap();
        let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=48).collect::<Vec<_>>(), "{}", backend.name);
        assert_eq!(all[0].event.http_status, Some(200), "round-trips");
        assert!(
            matches!(
                reach_server::audit::verify(nodes[1].as_ref())
                    .await
                    .unwrap(),
                reach_server::audit::Verdict::Intact { entries: 48, .. }
            ),
            "{}: one intact chain",
            backend.name
        );
        let (page, count) = nodes[1]
            .list_audit(
                TENANT,
                &query("$filter=sourceIp eq '10.0.0.1'&$top=5&$count=true"),
            )
            .await
            .unwrap();
        assert_eq!((page.len(), count), (5, Some(48)), "{}", backend.name);
        assert_eq!(page[0].seq, 48, "newest first");
    }
}

#[tokio::test]
async fn revocation_groups_and_tags_are_stored_and_scope_listings() {
    for backend in backends().await {
        let (store, machine_id) = with_action(&backend, vec![get_file("/x")]).await;
        let now = Micros::now();
        let app = App {
            client_id: "c1".into(),
            tenant_id: TENANT.into(),
            name: "app".into(),
            secret_hash: "h0".into(),
            roles: vec![],
            disabled: false,
            token_generation: 0,
            device_groups: vec!["web".into()],
        };
        store.create_app(&app, now).await.unwrap();
        store.set_app_secret("c1", "h1").await.unwrap();
        store.set_app_disabled("c1", true).await.unwrap();
        let stored = store.get_app("c1").await.unwrap();
        assert_eq!(
            (
                stored.secret_hash.as_str(),
                stored.disabled,
                stored.token_generation
            ),
            ("h1", true, 2),
            "{}",
            backend.name
        );
        assert_eq!(stored.device_groups, ["web"]);
        assert!(matches!(
            store.set_app_disabled("nope", true).await,
            Err(StoreError::NotFound(_))
        ));
        let user = User {
            name: "Dana".into(),
            tenant_id: TENANT.into(),
            password_hash: "p".into(),
            roles: vec![],
            disabled: false,
            token_generation: 0,
            device_groups: vec![],
        };
        store.create_user(&user, now).await.unwrap();
        store.set_user_disabled("DANA", true).await.unwrap();
        let stored = store.get_user("dana").await.unwrap();
        assert!(
            stored.disabled && stored.token_generation == 1,
            "{}",
            backend.name
        );

        for tags in [
            vec!["a".to_string()],
            vec!["Web".to_string(), "dmz".to_string()],
        ] {
            let group = DeviceGroup {
                tenant_id: TENANT.into(),
                name: "web".into(),
                tags,
            };
            store.put_device_group(&group, now).await.unwrap();
        }
        let groups = store.list_device_groups(TENANT).await.unwrap();
        assert_eq!(groups.len(), 1, "{}: redefined in place", backend.name);
        assert_eq!(groups[0].tags, ["Web", "dmz"]);

        let by_tag = "$filter=machineTags/any(t: t eq 'web')";
        assert!(
            store
                .list_actions(TENANT, &query(by_tag))
                .await
                .unwrap()
                .0
                .is_empty()
        );
        store
            .set_machine_tags(&machine_id, &["WEB".into()])
            .await
            .unwrap();
        let (found, _) = store.list_actions(TENANT, &query(by_tag)).await.unwrap();
        assert_eq!(
            found.len(),
            1,
            "{}: actions by their machine's tags",
            backend.name
        );
        assert_eq!(
            store.get_machine(TENANT, &machine_id).await.unwrap().tags,
            ["WEB"]
        );
    }
}

#[tokio::test]
async fn retention_finds_old_results_unused_library_files_and_prunes_the_audit_trail() {
    for backend in backends().await {
        let store = backend.open().await;
        let machine = seed(&store, 1).await.remove(0);
        let day = 24 * 3600;
        let now = Micros::now();
        let long_ago = now.minus_secs(40 * day);
        let old = NewAction {
            now: long_ago,
            ..action("a1", &machine, vec![get_file("/x")])
        };
        store.create_action(&old, LIMITS).await.unwrap();
        let claimed = store
            .claim_next_command(&machine, "agent-1", long_ago)
            .await
            .unwrap()
            .unwrap();
        let blob = ResultBlob {
            key: "results/a1/0/chunks".into(),
            size: 10,
            sha256: None,
            chunks: Some(1),
        };
        store
            .record_result(&machine, &claimed.command, &blob)
            .await
            .unwrap();
        let chunk = ChunkRow {
            n: 0,
            raw_size: 10,
            raw_crc32: Some(1),
            raw_sha256: String::new(),
            stored_size: 10,
            stored_sha256: "s".into(),
            attempts: 1,
        };
        store
            .put_chunk(&machine, &claimed.command, &chunk)
            .await
            .unwrap();
        let done = Finish::Completed {
            file_sha256: Some("f".into()),
        };
        store
            .finish_command(&machine, &claimed.command, &done, long_ago)
            .await
            .unwrap();

        let cutoff = now.minus_secs(30 * day);
        assert!(
            store
                .expired_results(now.minus_secs(50 * day), 10)
                .await
                .unwrap()
                .is_empty(),
            "{}: not old enough",
            backend.name
        );
        let expired = store.expired_results(cutoff, 10).await.unwrap();
        assert_eq!(expired.len(), 1, "{}", backend.name);
        assert_eq!(expired[0].result, Some(blob));
        assert_eq!(expired[0].chunks, [0]);
        assert_eq!(expired[0].machine_id, machine);
        assert!(store.forget_result(&claimed.command, now).await.unwrap());
        assert!(!store.forget_result(&claimed.command, now).await.unwrap());
        assert!(store.expired_results(cutoff, 10).await.unwrap().is_empty());
        let kept = &store.get_action(TENANT, "a1").await.unwrap().commands[0];
        assert_eq!(kept.status, CommandStatus::Completed);
        assert_eq!(kept.result, None);
        assert_eq!(kept.result_deleted, Some(now));
        assert_eq!(
            kept.file_sha256.as_deref(),
            Some("f"),
            "the evidence hash stays"
        );

        // Library files: one needed by a pending action, one unused and old,
        // one changed recently.
        store
            .create_action(&action("a2", &machine, vec![put_file("x")]), LIMITS)
            .await
            .unwrap();
        for (name, sha, when) in [
            ("needed.sh", "abc", long_ago),
            ("stale.sh", "zzz", long_ago),
            ("fresh.sh", "yyy", now),
        ] {
            let row = LibraryRow {
                tenant_id: TENANT.into(),
                file_name: name.into(),
                sha256: sha.into(),
                size: 1,
                description: None,
                has_parameters: false,
                parameters_description: None,
                created_by: "a".into(),
                last_updated_by: None,
                creation_time: when,
                last_updated_time: when,
                signature: None,
            };
            store.put_library_file(&row, false).await.unwrap();
        }
        let unused: Vec<String> = store
            .unused_library_files(cutoff)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.file_name)
            .collect();
        assert_eq!(unused, ["stale.sh"], "{}", backend.name);
        // Ended, but created after the cutoff: still recently used.
        store
            .cancel_action(TENANT, "a2", "analyst", None, now)
            .await
            .unwrap();
        assert_eq!(store.unused_library_files(cutoff).await.unwrap().len(), 1);

        // The audit trail: two old entries go, the pruning is recorded.
        let at = |time: Micros| reach_server::store::AuditEvent {
            time,
            ..reach_server::audit::event(
                TENANT,
                reach_server::audit::Actor::system(),
                Operation::MachineTagged,
                Outcome::Succeeded,
                serde_json::json!({}),
            )
        };
        let appended = store
            .append_audit(&[at(long_ago), at(long_ago.plus_secs(1)), at(now)])
            .await
            .unwrap();
        let pruning = reach_server::audit::event(
            "",
            reach_server::audit::Actor::system(),
            Operation::AuditPruned,
            Outcome::Succeeded,
            serde_json::json!({ "retentionDays": 30 }),
        );
        assert!(
            store
                .prune_audit(now.minus_secs(50 * day), pruning.clone())
                .await
                .unwrap()
                .is_none()
        );
        let entry = store.prune_audit(cutoff, pruning).await.unwrap().unwrap();
        let details: serde_json::Value = serde_json::from_str(&entry.event.details).unwrap();
        assert_eq!(details["removed"], 2, "{}", backend.name);
        assert_eq!(details["throughId"], appended[1].seq);
        assert_eq!(details["throughHash"], appended[1].hash.as_str());
        assert_eq!(details["retentionDays"], 30);
        assert_eq!(
            entry.prev_hash, appended[2].hash,
            "appended after the kept entry"
        );
        assert_eq!(
            reach_server::audit::verify(&store).await.unwrap(),
            reach_server::audit::Verdict::Intact {
                entries: 2,
                first: appended[2].seq,
                head: Some((entry.seq, entry.hash.clone())),
            },
            "{}",
            backend.name
        );
    }
}

#[tokio::test]
async fn chunks_of_a_transfer_that_ended_without_its_result_are_abandoned() {
    for backend in backends().await {
        let store = backend.open().await;
        let machine = seed(&store, 1).await.remove(0);
        let now = Micros::now();
        store
            .create_action(&action("a1", &machine, vec![get_file("/x")]), LIMITS)
            .await
            .unwrap();
        let claimed = store
            .claim_next_command(&machine, "agent-1", now)
            .await
            .unwrap()
            .unwrap();
        let chunk = ChunkRow {
            n: 0,
            raw_size: 10,
            raw_crc32: Some(1),
            raw_sha256: String::new(),
            stored_size: 10,
            stored_sha256: "s".into(),
            attempts: 1,
        };
        store
            .put_chunk(&machine, &claimed.command, &chunk)
            .await
            .unwrap();
        assert!(
            store.abandoned_chunks(10).await.unwrap().is_empty(),
            "{}: still running",
            backend.name
        );
        store
            .cancel_action(TENANT, "a1", "lead", Some("stop"), now)
            .await
            .unwrap();
        let abandoned = store.abandoned_chunks(10).await.unwrap();
        assert_eq!(abandoned.len(), 1, "{}", backend.name);
        assert_eq!(abandoned[0].command, claimed.command);
        assert_eq!(abandoned[0].chunks, [0]);
        assert_eq!(abandoned[0].result, None);
        assert!(store.forget_result(&claimed.command, now).await.unwrap());
        assert!(store.abandoned_chunks(10).await.unwrap().is_empty());
        assert!(
            store
                .list_chunks(&claimed.command)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn enrollment_tokens_count_their_uses_and_names_are_never_guessed() {
    for backend in backends().await {
        let store = backend.open().await;
        seed(&store, 1).await;
        let now = Micros::now();
        store
            .create_enrollment_token(TENANT, "abcdef0123456789", None, Some(1), now)
            .await
            .unwrap();
        let enroll = |id: &'static str, token: &'static str| {
            let store = &store;
            async move {
                store
                    .enroll_machine(token, id, "cred", &info("twin"), None, now)
                    .await
            }
        };
        enroll("c1", "abcdef0123456789").await.unwrap();
        let refused = enroll("c2", "abcdef0123456789").await.unwrap_err();
        assert!(
            matches!(refused, StoreError::Refused(_)),
            "{}: {refused}",
            backend.name
        );
        let token = store
            .list_enrollment_tokens()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id == "abcdef012345")
            .unwrap();
        assert_eq!(
            (token.uses, token.max_uses),
            (1, Some(1)),
            "{}",
            backend.name
        );
        store
            .create_enrollment_token(
                TENANT,
                "fedcba9876543210",
                Some(now.minus_secs(1)),
                None,
                now,
            )
            .await
            .unwrap();
        assert!(matches!(
            enroll("c3", "fedcba9876543210").await,
            Err(StoreError::Refused(_))
        ));
        let revoked = store.revoke_enrollment_token("fedcba", now).await.unwrap();
        assert_eq!(revoked.revoked, Some(now));

        // Two machines named "twin" (any case): the name resolves to neither.
        enroll("c4", "token-hash").await.unwrap();
        assert!(matches!(
            store.get_machine(TENANT, "TWIN").await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.machines_named(TENANT, "twin").await.unwrap().len(), 2);
        let duplicated = store.duplicated_names(TENANT).await.unwrap();
        assert_eq!(duplicated.len(), 2, "{}", backend.name);
        assert!(duplicated.iter().all(|(name, _)| name == "twin"));
        store.revoke_machine("c4").await.unwrap();
        assert_eq!(store.get_machine(TENANT, "twin").await.unwrap().id, "c1");
        assert!(store.duplicated_names(TENANT).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn the_tenant_limit_counts_running_actions_and_queues_are_per_requestor() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 4).await;
        let limits = ActionLimits {
            running_per_tenant: 1,
            pending_per_requestor: 2,
        };
        let by = |id: &str, machine: &str, requestor: &str| NewAction {
            requestor_id: requestor.into(),
            ..action(id, machine, vec![get_file("/x")])
        };
        // Queued actions do not count against the tenant's running limit.
        store
            .create_action(&by("q1", &machines[0], "app:a"), limits)
            .await
            .unwrap();
        store
            .create_action(&by("q2", &machines[1], "app:a"), limits)
            .await
            .unwrap();
        assert!(matches!(
            store
                .create_action(&by("q3", &machines[2], "app:a"), limits)
                .await,
            Err(StoreError::RequestorQueueLimit(2))
        ));
        // Another requestor's queue is its own.
        store
            .create_action(&by("b1", &machines[2], "app:b"), limits)
            .await
            .unwrap();
        assert_eq!(store.pending_actions_of("app:a").await.unwrap().len(), 2);
        // Once one runs, the tenant's running limit (1) is reached.
        store
            .claim_next_command(&machines[0], "agent", Micros::now())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                store
                    .create_action(&by("b2", &machines[3], "app:b"), limits)
                    .await,
                Err(StoreError::TenantActionLimit(1))
            ),
            "{}",
            backend.name
        );
        let pending: Vec<String> = store
            .pending_actions_of("app:a")
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(pending, ["q2"], "{}", backend.name);
    }
}

#[tokio::test]
async fn connected_machines_whose_action_waits_are_found_for_a_new_wake_up() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![put_file("x")]).await;
        let later = Micros::now().plus_secs(60);
        // Not connected: nothing to wake.
        assert!(store.waiting_connected(later, 10).await.unwrap().is_empty());
        store
            .machine_connected(&machine, &info("host-0"), None, Micros::now())
            .await
            .unwrap();
        assert_eq!(
            store.waiting_connected(later, 10).await.unwrap(),
            vec![machine.clone()],
            "{}",
            backend.name
        );
        // Not waiting long enough yet.
        let earlier = Micros::now().minus_secs(60);
        assert!(
            store
                .waiting_connected(earlier, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Claimed: it no longer waits.
        store
            .claim_next_command(&machine, "agent-1", Micros::now())
            .await
            .unwrap()
            .unwrap();
        assert!(
            store.waiting_connected(later, 10).await.unwrap().is_empty(),
            "{}",
            backend.name
        );
    }
}
