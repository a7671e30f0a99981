//! The real reach-agent binary against an in-process server: kill -9 of the
//! agent during a RunScript, then a restart, ends the command Failed with a
//! clear message. (reach-server is only a dev-dependency here, to start a
//! real server; the agent itself never links it.)

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reach_client::{Client, LibraryUpload};
use reach_proto::api::{
    ActionStatus, Command, CommandStatus, CommandType, RunLiveResponseRequest, roles,
};
use reach_server::{Config, admin};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);

fn agent(state: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach-agent"));
    command
        .args(args)
        .arg("--state")
        .arg(state)
        .env("REACH_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn kill_9_of_the_agent_during_a_script_fails_the_command_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("server"),
        ..Config::default()
    };
    config.limits.api_per_minute = 100_000; // the test polls faster than Defender allows
    config.limits.api_per_hour = 1_000_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = reach_server::open(config).await.unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(reach_server::serve(state.clone(), listener, async move {
        stop.cancelled().await
    }));
    let _stop = shutdown.drop_guard();
    let tenant = admin::create_tenant(state.store.as_ref(), "t")
        .await
        .unwrap();
    let all = roles::ALL.iter().map(|r| r.to_string()).collect();
    let app = admin::create_app(state.store.as_ref(), &tenant.id, "app", all)
        .await
        .unwrap();
    let token = admin::create_enrollment_token(state.store.as_ref(), &tenant.id)
        .await
        .unwrap();

    let state_path = dir.path().join("agent/state.json");
    let enrolled = agent(
        &state_path,
        &["enroll", "--server", &url, "--token", &token],
    )
    .output()
    .await
    .unwrap();
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let machine = reach_agent::State::load(&state_path).unwrap().machine_id;
    let mut first = agent(&state_path, &["run"]).spawn().unwrap();
    tokio::time::timeout(DEADLINE, state.hub.wait_connected(&machine))
        .await
        .unwrap();

    let client = Client::new(&url)
        .login(&tenant.id, &app.client_id, &app.client_secret)
        .await
        .unwrap();
    client
        .upload_library_file(LibraryUpload::bytes(
            "long.sh",
            b"echo $$ > script.pid\nexec sleep 300\n".to_vec(),
        ))
        .await
        .unwrap();
    let request = RunLiveResponseRequest {
        commands: Some(vec![Command::new(
            CommandType::RunScript,
            &[("ScriptName", "long.sh")],
        )]),
        comment: Some("kill -9".into()),
    };
    let created = client.run_live_response(&machine, &request).await.unwrap();
    let pid_file = dir.path().join("agent/work/script.pid");
    eventually("the script starting", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let script_pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();

    first.start_kill().unwrap(); // SIGKILL: no chance to report anything
    first.wait().await.unwrap();
    let waiting = client.action(&created.id).await.unwrap();
    assert_eq!(
        waiting.commands[0].command_status,
        CommandStatus::InProgress,
        "nothing is decided while the agent is away"
    );

    let mut second = agent(&state_path, &["run"]).spawn().unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let done = loop {
        let action = client.action(&created.id).await.unwrap();
        if action.status.is_final() {
            break action;
        }
        assert!(tokio::time::Instant::now() < deadline, "{action:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.status, ActionStatus::Failed, "{done:#?}");
    assert_eq!(
        done.commands[0].errors,
        ["The agent restarted while the command was running"]
    );
    assert!(
        !pid_file.exists(),
        "the working folder was emptied at start"
    );

    second.kill().await.unwrap();
    // The orphan outlived its agent (a systemd unit's cgroup ends it); end it here.
    let _ = std::process::Command::new("kill")
        .args(["-9", &script_pid])
        .status();
}
