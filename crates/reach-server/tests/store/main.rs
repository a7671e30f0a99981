//! The store conformance suite: every test runs the same steps on SQLite and
//! on PostgreSQL (a fresh database on the server named by
//! REACH_TEST_DATABASE_URL; without it the PostgreSQL half prints a skip
//! notice). Races are real: several tasks on several connections (and, on
//! PostgreSQL, two separately opened stores standing in for two nodes).
//! One module per domain of the store, as `store/` is split.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

mod actions;
mod audit;
mod batches;
mod commands;
mod engine;
mod enrollment;
mod group_commit;
mod identities;
mod inline_results;
mod library;
mod machines;
mod output;
mod response_actions;
mod retention;
mod stored_json;

use std::sync::Arc;

use reach_proto::agent::{CommandRef, MachineInfo, Work};
use reach_proto::api::{ActionStatus, Command, CommandStatus};
use reach_server::audit::{Operation, Outcome};
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

fn run_script(name: &str) -> NewCommand {
    NewCommand {
        command: Command {
            kind: "RunScript".into(),
            params: vec![],
        },
        work: Work::RunScript {
            script_name: name.into(),
            sha256: "abc".into(),
            args: None,
            signature: None,
        },
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
        kind: reach_proto::api::ActionType::LiveResponse,
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
