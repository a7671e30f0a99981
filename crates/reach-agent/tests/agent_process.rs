//! The real reach-agent binary against an in-process server: kill -9 of the
//! agent during a RunScript, then a restart, ends the command Failed with a
//! clear message. (reach-server is only a dev-dependency here, to start a
//! real server; the agent itself never links it.)

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Stdio;

use reach_client::LibraryUpload;
use reach_proto::api::{ActionStatus, Command, CommandStatus, CommandType, RunLiveResponseRequest};
use reach_server::testing::{DEADLINE, TestServer, eventually, wait_final};

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

#[tokio::test]
async fn kill_9_of_the_agent_during_a_script_fails_the_command_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let (url, token) = (server.url.clone(), server.enrollment_token.clone());
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
    tokio::time::timeout(DEADLINE, server.state.hub.wait_connected(&machine))
        .await
        .unwrap();

    let client = server.client.clone();
    client
        .upload_library_file(LibraryUpload::bytes(
            "long.sh",
            b"setsid sleep 300 &\necho $! > escaped.pid\necho $$ > script.pid\nexec sleep 300\n"
                .to_vec(),
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
    eventually("the script starting", async || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let script_pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let escaped_pid = std::fs::read_to_string(dir.path().join("agent/work/escaped.pid"))
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
    let done = wait_final(&client, &created.id).await;
    assert_eq!(done.status, ActionStatus::Failed, "{done:#?}");
    assert_eq!(
        done.commands[0].errors,
        ["The agent restarted while the command was running"]
    );
    assert!(
        !pid_file.exists(),
        "the working folder was emptied at start"
    );

    // The script and the child that left its group outlived the killed
    // agent; the agent's next start ended them.
    for pid in [&script_pid, &escaped_pid] {
        eventually(&format!("process {pid} ending"), async || !alive(pid)).await;
    }
    second.kill().await.unwrap();
    // Should the test have failed above, leave nothing running.
    for pid in [&script_pid, &escaped_pid] {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(") ")
                .next()
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}
