//! The newcomer's path through the real binary: `reach-server --dev` writes
//! dev-credentials.json once its local agent is connected, the credentials
//! work, a restart reuses them, and `apps create` / `enrollment-token
//! create` / `print-config` / `audit verify` / `audit export` work on the
//! same data directory (and `audit verify` notices an altered entry), and its debug
//! log holds none of the secrets and tokens used.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Stdio;

use reach_client::{Client, LibraryUpload};
use reach_proto::api::{ActionStatus, Command, CommandType, RunLiveResponseRequest};
use reach_server::dev::DevCredentials;
use reach_server::testing::{eventually, wait_final, wait_for};

/// Runs reach-server in `dir` with `--data-dir data`: a relative data
/// directory, as a newcomer's `./reach-data` is.
fn server(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach-server"));
    command
        .args(args)
        .arg("--data-dir")
        .arg("data")
        .current_dir(dir)
        .env("REACH_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn start_dev(dir: &Path) -> (tokio::process::Child, DevCredentials) {
    start_dev_with(dir, &[]).await
}

async fn start_dev_with(dir: &Path, extra: &[&str]) -> (tokio::process::Child, DevCredentials) {
    let mut args = vec!["--dev", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    spawn_dev(dir, server(dir, &args)).await
}

/// Spawns `command` (a `--dev` server in `dir`) and waits for its credentials.
async fn spawn_dev(
    dir: &Path,
    mut command: tokio::process::Command,
) -> (tokio::process::Child, DevCredentials) {
    let credentials = reach_server::dev::credentials_path(&dir.join("data"));
    let _ = std::fs::remove_file(&credentials);
    let child = command.stdout(Stdio::null()).spawn().unwrap();
    let parsed = wait_for("dev-credentials.json appearing", async || {
        let text = std::fs::read_to_string(&credentials).ok()?;
        serde_json::from_str::<DevCredentials>(&text).ok()
    })
    .await;
    (child, parsed)
}

/// Uploads `hi.sh` (echo hi) and runs it on `machine`; returns the action.
async fn run_hi(client: &Client, machine: &str, comment: &str) -> reach_proto::api::MachineAction {
    client
        .upload_library_file(LibraryUpload::bytes("hi.sh", b"echo hi\n".to_vec()))
        .await
        .unwrap();
    let request = RunLiveResponseRequest {
        commands: Some(vec![Command::new(
            CommandType::RunScript,
            &[("ScriptName", "hi.sh")],
        )]),
        comment: Some(comment.into()),
    };
    client.run_live_response(machine, &request).await.unwrap()
}

#[tokio::test]
async fn dev_mode_is_ready_to_use_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut first, creds) = start_dev(dir.path()).await;
    assert!(creds.server.starts_with("http://127.0.0.1:"));
    assert_eq!(creds.machine_id.len(), 40);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(reach_server::dev::credentials_path(&data))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let client = Client::new(&creds.server)
        .login(&creds.tenant_id, &creds.client_id, &creds.client_secret)
        .await
        .unwrap();
    let created = run_hi(&client, &creds.machine_id, "dev").await;
    let action = wait_final(&client, &created.id).await;
    assert_eq!(action.status, ActionStatus::Succeeded, "{action:#?}");
    let url = client.download_link(&created.id, 0).await.unwrap();
    let transcript: serde_json::Value = client.download(&url).await.unwrap().json().await.unwrap();
    assert_eq!(transcript["exit_code"], 0, "{transcript}");
    assert_eq!(transcript["script_output"], "hi\n", "{transcript}");
    first.kill().await.unwrap();
    #[cfg(unix)]
    assert_private(&data);

    let (mut second, again) = start_dev(dir.path()).await;
    assert_eq!(again.tenant_id, creds.tenant_id);
    assert_eq!(again.client_id, creds.client_id);
    assert_eq!(again.client_secret, creds.client_secret);
    assert_eq!(again.machine_id, creds.machine_id);
    let client = Client::new(&again.server)
        .login(&again.tenant_id, &again.client_id, &again.client_secret)
        .await
        .unwrap();
    let old = client.action(&created.id).await.unwrap();
    assert_eq!(
        old.status,
        ActionStatus::Succeeded,
        "nothing stored is lost"
    );
    let machines = client.machines(&[]).await.unwrap();
    assert_eq!(
        machines.value.len(),
        1,
        "the local agent is reused, not enrolled again"
    );
    second.kill().await.unwrap();

    let output = server(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "automation",
            "--roles",
            "Machine.Read.All,Library.Manage",
        ],
    )
    .output()
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("client secret:"), "{stdout}");
    let bad_role = server(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "x",
            "--roles",
            "Machine.Everything",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("unknown role"));
    let token = server(dir.path(), &["enrollment-token", "create"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&token.stdout).starts_with("rch_enr_"));
    let limited = server(
        dir.path(),
        &[
            "enrollment-token",
            "create",
            "--expires",
            "7d",
            "--uses",
            "3",
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(
        limited.status.success(),
        "{}",
        String::from_utf8_lossy(&limited.stderr)
    );
    let bad = server(
        dir.path(),
        &["enrollment-token", "create", "--expires", "soon"],
    )
    .output()
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a validity"));
    let listed = server(dir.path(), &["enrollment-token", "list"])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let line = listed
        .lines()
        .find(|l| l.contains("uses 0/3"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.ends_with("valid"), "{line}");
    assert!(
        listed.contains("expires never"),
        "dev mode's token: {listed}"
    );
    let id = line.split_whitespace().next().unwrap();
    let revoked = server(dir.path(), &["enrollment-token", "revoke", id])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&revoked.stdout).contains("revoked"));
    let listed = server(dir.path(), &["enrollment-token", "list"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&format!("{id}  ")));
    assert!(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|l| l.starts_with(id) && l.ends_with("revoked"))
    );
    let tenant = server(dir.path(), &["tenants", "create", "--name", "second"])
        .output()
        .await
        .unwrap();
    assert!(tenant.status.success());
    let ambiguous = server(dir.path(), &["enrollment-token", "create"])
        .output()
        .await
        .unwrap();
    assert!(!ambiguous.status.success());
    assert!(String::from_utf8_lossy(&ambiguous.stderr).contains("give --tenant"));
    let cancelled = server(
        dir.path(),
        &["actions", "cancel-pending", "--app", &creds.client_id],
    )
    .output()
    .await
    .unwrap();
    assert!(
        cancelled.status.success(),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    assert!(String::from_utf8_lossy(&cancelled.stdout).contains("pending actions of app"));
    let pending = server(
        dir.path(),
        &["actions", "pending", "--app", &creds.client_id],
    )
    .output()
    .await
    .unwrap();
    assert!(pending.status.success());
    assert!(pending.stdout.is_empty(), "nothing left queued");
    let example = server(dir.path(), &["print-config"])
        .output()
        .await
        .unwrap();
    let parsed =
        reach_server::Config::from_toml(&String::from_utf8_lossy(&example.stdout)).unwrap();
    assert_eq!(parsed, reach_server::Config::default());

    // Access subcommands, through the binary (their effects: tests/e2e/access.rs).
    let tenant = creds.tenant_id.as_str();
    for (args, expect) in [
        (
            vec![
                "groups",
                "create",
                "--name",
                "web",
                "--tags",
                "web-servers",
                "--tenant",
                tenant,
            ],
            "device group web",
        ),
        (
            vec!["groups", "list", "--tenant", tenant],
            "web\tweb-servers",
        ),
        (
            vec![
                "machines",
                "tag",
                &creds.machine_id,
                "--add",
                "web-servers,linux",
            ],
            "tags: web-servers, linux",
        ),
        (
            vec!["apps", "rotate-secret", &creds.client_id],
            "client secret:",
        ),
        (vec!["apps", "disable", &creds.client_id], "disabled"),
        (vec!["users", "disable", &creds.console_user], "disabled"),
    ] {
        let output = server(dir.path(), &args).output().await.unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && said.contains(expect),
            "{args:?}: {said}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let unknown_group = server(
        dir.path(),
        &[
            "apps",
            "create",
            "--name",
            "x",
            "--roles",
            "Machine.Read.All",
            "--groups",
            "nope",
            "--tenant",
            tenant,
        ],
    )
    .output()
    .await
    .unwrap();
    assert!(!unknown_group.status.success());
    assert!(String::from_utf8_lossy(&unknown_group.stderr).contains("no device group 'nope'"));

    // What the operator did here is in the audit trail, intact.
    let verify = server(dir.path(), &["audit", "verify"])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{said}");
    assert!(said.contains("audit trail intact"), "{said}");
    let export = server(dir.path(), &["audit", "export", "--since", "2020-01-01"])
        .output()
        .await
        .unwrap();
    assert!(export.status.success());
    let lines: Vec<reach_proto::api::AuditLogEntry> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let created = lines
        .iter()
        .find(|e| e.operation == "TenantCreated")
        .expect("tenants create is recorded");
    assert_eq!(created.actor_type, "operator");
    assert_eq!(created.details["name"], "second");
    for operation in [
        "EnrollmentTokenCreated",
        "DeviceGroupDefined",
        "MachineTagged",
        "AppSecretRotated",
        "AppDisabled",
        "UserDisabled",
    ] {
        assert!(
            lines.iter().any(|e| e.operation == operation),
            "{operation}"
        );
    }
    assert!(lines.windows(2).all(|w| w[1].previous_hash == w[0].hash));
    let later = server(dir.path(), &["audit", "export", "--since", "2999-01-01"])
        .output()
        .await
        .unwrap();
    assert!(later.status.success() && later.stdout.is_empty());

    sqlx::any::install_default_drivers();
    let url = reach_server::store::sql::sqlite_url(&dir.path().join("data/reach.db"));
    let db = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE audit_log SET details = '{\"name\":\"other\"}' WHERE seq = $1")
        .bind(created.id)
        .execute(&db)
        .await
        .unwrap();
    db.close().await;
    let verify = server(dir.path(), &["audit", "verify"])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("BROKEN at entry {}", created.id)),
        "{said}"
    );
}

/// Every directory and file under `dir` (database, WAL, blobs, results,
/// keys, the agent's files) is the owner's alone.
#[cfg(unix)]
fn assert_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let mode = metadata.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
        seen += 1;
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
    }
    for name in ["reach.db", "reach.db-wal", "dev-credentials.json", "blobs"] {
        assert!(dir.join(name).exists(), "{name} was checked");
    }
    assert!(seen > 10, "only {seen} entries");
}

#[cfg(unix)]
#[tokio::test]
async fn a_data_directory_others_can_read_stops_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = server(dir.path(), &["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("readable by other accounts") && stderr.contains("data"),
        "{stderr}"
    );
    assert!(!data.join("reach.db").exists(), "nothing was written");
}

#[tokio::test]
async fn dev_mode_can_serve_https_with_its_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, creds) = start_dev_with(dir.path(), &["--tls"]).await;
    assert!(
        creds.server.starts_with("https://127.0.0.1:"),
        "{}",
        creds.server
    );
    let ca = dir.path().join("data/tls/ca.pem");
    let tls = reach_agent::tls::client_config(Some(&ca)).unwrap();
    let client = Client::with_tls(&creds.server, tls)
        .login(&creds.tenant_id, &creds.client_id, &creds.client_secret)
        .await
        .unwrap();
    let machine = client.machine(&creds.machine_id).await.unwrap();
    assert_eq!(
        machine.health_status, "Active",
        "the local agent connected over TLS"
    );
    let untrusting = Client::new(&creds.server)
        .request_token(&creds.tenant_id, &creds.client_id, &creds.client_secret)
        .await;
    assert!(untrusting.is_err(), "the dev CA is not a public one");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn kill_9_during_a_script_ends_the_command_failed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, creds) = start_dev(dir.path()).await;
    let client = Client::new(&creds.server)
        .login(&creds.tenant_id, &creds.client_id, &creds.client_secret)
        .await
        .unwrap();
    let script = b"echo $$ > script.pid\nexec sleep 300\n".to_vec();
    client
        .upload_library_file(LibraryUpload::bytes("long.sh", script))
        .await
        .unwrap();
    let request = RunLiveResponseRequest {
        commands: Some(vec![Command::new(
            CommandType::RunScript,
            &[("ScriptName", "long.sh")],
        )]),
        comment: Some("kill -9".into()),
    };
    let created = client
        .run_live_response(&creds.machine_id, &request)
        .await
        .unwrap();
    let pid_file = dir.path().join("data/agent/work/script.pid");
    eventually("the script starting", async || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let script_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    first.start_kill().unwrap(); // SIGKILL: server and its in-process agent die at once
    first.wait().await.unwrap();

    let (mut second, again) = start_dev(dir.path()).await;
    let client = Client::new(&again.server)
        .login(&again.tenant_id, &again.client_id, &again.client_secret)
        .await
        .unwrap();
    let done = wait_final(&client, &created.id).await;
    assert_eq!(done.status, ActionStatus::Failed, "{done:#?}");
    assert_eq!(
        done.commands[0].errors,
        ["The agent restarted while the command was running"]
    );
    second.kill().await.unwrap();
    // The orphaned script outlived its agent (under systemd the unit's
    // cgroup is cleaned up on restart); end it here.
    let _ = std::process::Command::new("kill")
        .args(["-9", &script_pid.to_string()])
        .status();
}

/// `--dev` on PostgreSQL and S3, then a second node started without `--dev`
/// on the same URLs: it knows the dev app and machine, and an action
/// submitted through it runs on the dev agent connected to the first node.
#[tokio::test]
async fn dev_mode_on_postgres_and_s3_and_a_second_node_joining_it() {
    let Some(database) = reach_server::testing::fresh_postgres().await else {
        return;
    };
    let Some(objects) = reach_server::testing::fresh_s3_prefix() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let urls = [
        "--database-url",
        database.as_str(),
        "--object-store-url",
        objects.as_str(),
    ];
    let (mut first, creds) = start_dev_with(dir.path(), &urls).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let second_dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(&urls);
    let mut second = server(second_dir.path(), &args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}");
    eventually("node 2 being ready", async || {
        let ready = reqwest::get(format!("{url}/readyz")).await;
        ready.is_ok_and(|r| r.status() == 200)
    })
    .await;

    let client = Client::new(&url)
        .login(&creds.tenant_id, &creds.client_id, &creds.client_secret)
        .await
        .unwrap();
    let machines = client.machines(&[]).await.unwrap();
    assert!(machines.value.iter().any(|m| m.id == creds.machine_id));
    let created = run_hi(&client, &creds.machine_id, "through node 2").await;
    let done = wait_final(&client, &created.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:#?}");
    // A small transcript comes with the outcome and is kept in PostgreSQL,
    // so the node serves it (a collected file's link is S3's: e2e cluster).
    let link = client.download_link(&created.id, 0).await.unwrap();
    assert!(
        link.starts_with(&format!("{url}/download/inline/")),
        "a link to the node: {link}"
    );
    let transcript: serde_json::Value = reqwest::get(&link).await.unwrap().json().await.unwrap();
    assert_eq!(transcript["script_output"], "hi\n");
    second.kill().await.unwrap();
    first.kill().await.unwrap();
}

#[tokio::test]
async fn debug_logs_hold_no_secret_or_token_used_in_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = server(dir.path(), &["--dev", "--listen", "127.0.0.1:0"]);
    // As verbose as an operator chasing a problem would make it.
    command.env("REACH_LOG", "debug").stderr(log);
    let (mut child, creds) = spawn_dev(dir.path(), command).await;
    let client = Client::new(&creds.server)
        .login(&creds.tenant_id, &creds.client_id, &creds.client_secret)
        .await
        .unwrap();
    // A refused secret is not logged either.
    let wrong_secret = "wrong-secret-0123456789abcdef";
    assert!(
        Client::new(&creds.server)
            .login(&creds.tenant_id, &creds.client_id, wrong_secret)
            .await
            .is_err()
    );
    let created = run_hi(&client, &creds.machine_id, "log scan").await;
    let done = wait_final(&client, &created.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:#?}");
    let link = client.download_link(&created.id, 0).await.unwrap();
    assert!(client.download(&link).await.unwrap().status().is_success());
    child.kill().await.unwrap();

    let agent = reach_agent::State::load(&dir.path().join("data/agent/state.json")).unwrap();
    let token = client.token().unwrap().to_string();
    let signature = token.rsplit('.').next().unwrap().to_string();
    let link_sig = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let secrets = [
        ("client secret", creds.client_secret.clone()),
        ("refused client secret", wrong_secret.to_string()),
        ("enrollment token", creds.enrollment_token.clone()),
        ("console password", creds.console_password.clone()),
        ("access token", token),
        ("access token signature", signature),
        ("agent credential", agent.credential.clone()),
        ("download link signature", link_sig),
    ];
    let logged = std::fs::read_to_string(&log_path).unwrap();
    // The scan means something only if the log saw the run.
    assert!(logged.contains("DEBUG"), "no debug lines logged");
    assert!(
        logged.contains(&created.id),
        "the run's action is not in the log"
    );
    for (what, secret) in secrets {
        assert!(secret.len() >= 16, "{what} is too short to scan for");
        assert!(
            !logged.contains(&secret),
            "the server's log holds the {what}"
        );
    }
}
