//! The `reach` binary against a real in-process server and agent: upload a
//! script, run it with arguments, collect a file un-gzipped, list actions,
//! download a result, and the exit codes (0, 1 when an action fails, 2 on
//! usage errors).

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

mod batches;
mod follow;
mod respond;

use std::process::Output;

use reach_server::testing::{DEADLINE, TestServer};
use tokio_util::sync::CancellationToken;

struct Env {
    vars: Vec<(&'static str, String)>,
    machine_id: String,
    dir: tempfile::TempDir,
    _server: TestServer,
    _agent: tokio_util::sync::DropGuard,
}

async fn start() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let agent_config = reach_agent::Config {
        state_path: dir.path().join("agent/state.json"),
        nft_command: Vec::new(),
        ..reach_agent::Config::default()
    };
    let agent = reach_agent::enroll(&server.url, &server.enrollment_token, &agent_config)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(reach_agent::run(agent_config, shutdown.clone()));
    tokio::time::timeout(DEADLINE, server.state.hub.wait_connected(&agent.machine_id))
        .await
        .unwrap();
    Env {
        vars: vec![
            ("REACH_SERVER", server.url.clone()),
            ("REACH_TENANT_ID", server.tenant_id.clone()),
            ("REACH_CLIENT_ID", server.admin_app.client_id.clone()),
            (
                "REACH_CLIENT_SECRET",
                server.admin_app.client_secret.clone(),
            ),
            (
                "REACH_CONFIG_DIR",
                dir.path().join("cli").display().to_string(),
            ),
        ],
        machine_id: agent.machine_id,
        dir,
        _server: server,
        _agent: shutdown.drop_guard(),
    }
}

impl Env {
    async fn reach(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"))
            .args(args)
            .envs(self.vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .await
            .unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn upload_run_collect_and_list() {
    let env = start().await;
    let script = env.dir.path().join("hello.sh");
    std::fs::write(
        &script,
        "echo \"hello $1\"\nprintf 'evidence' > evidence.txt\n",
    )
    .unwrap();
    let uploaded = env
        .reach(&[
            "library",
            "upload",
            script.to_str().unwrap(),
            "--description",
            "greets",
        ])
        .await;
    assert!(uploaded.status.success(), "{}", text(&uploaded.stderr));
    assert!(text(&uploaded.stdout).contains("hello.sh"));

    let work = env.dir.path().join("agent/work/evidence.txt");
    let out = env.dir.path().join("collected");
    let ran = env
        .reach(&[
            "run",
            &env.machine_id,
            "--script",
            "hello.sh",
            "--args",
            "'from reach'",
            "--get-file",
            work.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .await;
    let stdout = text(&ran.stdout);
    assert_eq!(ran.status.code(), Some(0), "{stdout}{}", text(&ran.stderr));
    assert!(stdout.contains("Succeeded"), "{stdout}");
    assert!(stdout.contains("hello from reach"), "{stdout}");
    assert!(stdout.contains("exit code: 0"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(out.join("evidence.txt")).unwrap(),
        "evidence"
    );

    let listed = env
        .reach(&["actions", "--json", "--machine", &env.machine_id])
        .await;
    let actions: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = actions[0]["id"].as_str().unwrap().to_string();
    assert_eq!(actions[0]["status"], "Succeeded");

    let result = env.reach(&["result", &id, "0"]).await;
    let transcript: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(transcript["script_output"], "hello from reach\n");
    let table = env.reach(&["action", &id]).await;
    assert!(text(&table.stdout).contains("RunScript"));
    let machines = env.reach(&["machines"]).await;
    assert!(text(&machines.stdout).contains(&env.machine_id));
    assert!(text(&machines.stdout).contains("Active"));
}

#[tokio::test]
async fn exit_codes_tell_failure_from_usage_errors() {
    let env = start().await;
    let failed = env
        .reach(&["run", &env.machine_id, "--get-file", "/no/such/reach/file"])
        .await;
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        text(&failed.stdout).contains("No such file or directory"),
        "{}",
        text(&failed.stdout)
    );
    let usage = env.reach(&["run"]).await;
    assert_eq!(usage.status.code(), Some(2));
    let nothing = env.reach(&["run", &env.machine_id]).await;
    assert_eq!(nothing.status.code(), Some(2));
    let orphan_args = env
        .reach(&["run", &env.machine_id, "--args", "x", "--script", "a.sh"])
        .await;
    assert_eq!(orphan_args.status.code(), Some(1));
    assert!(text(&orphan_args.stderr).contains("--args must follow"));
    let unknown = env
        .reach(&["run", "no-such-machine", "--get-file", "/etc/hostname"])
        .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("ResourceNotFound"),
        "{}",
        text(&unknown.stderr)
    );
}

#[tokio::test]
async fn login_saves_private_credentials() {
    let env = start().await;
    let vars: Vec<(&str, String)> = env
        .vars
        .iter()
        .filter(|(k, _)| *k != "REACH_CLIENT_SECRET")
        .cloned()
        .collect();
    let secret = env
        .vars
        .iter()
        .find(|(k, _)| *k == "REACH_CLIENT_SECRET")
        .unwrap()
        .1
        .clone();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"))
        .arg("login")
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{secret}\n").as_bytes())
        .await
        .unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let path = env.dir.path().join("cli/credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // With only the file (no secret in the environment), commands work.
    let machines = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"))
        .arg("machines")
        .env("REACH_CONFIG_DIR", env.dir.path().join("cli"))
        .env_remove("REACH_SERVER")
        .output()
        .await
        .unwrap();
    assert!(machines.status.success(), "{}", text(&machines.stderr));
    let wrong = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"))
        .args(["login", "--client-secret", "wrong"])
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
}

#[tokio::test]
async fn a_server_with_a_private_ca_is_reached_with_reach_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_tls().await;
    let ca = server.ca_file.clone().unwrap();
    let run = |with_ca: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"));
        command
            .args(["machines", "--json"])
            .env("REACH_SERVER", &server.url)
            .env("REACH_TENANT_ID", &server.tenant_id)
            .env("REACH_CLIENT_ID", &server.admin_app.client_id)
            .env("REACH_CLIENT_SECRET", &server.admin_app.client_secret)
            .env("REACH_CONFIG_DIR", dir.path().join("cli"));
        if with_ca {
            command.env("REACH_CA_FILE", &ca);
        } else {
            command.env_remove("REACH_CA_FILE");
        }
        command.output()
    };
    let trusted = run(true).await.unwrap();
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    assert_eq!(text(&trusted.stdout).trim(), "[]");
    let untrusted = run(false).await.unwrap();
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        text(&untrusted.stderr).contains("signing in"),
        "{}",
        text(&untrusted.stderr)
    );
}

#[tokio::test]
async fn keys_are_made_and_files_signed_offline_then_uploaded_signed() {
    let env = start().await;
    let key = env.dir.path().join("signing.key");
    let keygen = env
        .reach(&["library", "keygen", "--out", key.to_str().unwrap()])
        .await;
    assert!(keygen.status.success(), "{}", text(&keygen.stderr));
    let public = text(&keygen.stdout).trim().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = env
        .reach(&["library", "keygen", "--out", key.to_str().unwrap()])
        .await;
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );

    let script = env.dir.path().join("tool.sh");
    std::fs::write(&script, b"#!/bin/sh\necho tool\n").unwrap();
    let sign = env
        .reach(&[
            "library",
            "sign",
            "--key",
            key.to_str().unwrap(),
            script.to_str().unwrap(),
        ])
        .await;
    assert!(sign.status.success(), "{}", text(&sign.stderr));
    let signature = text(&sign.stdout).trim().to_string();
    let sha256 = reach_client::signing::sha256_file(&script).unwrap();
    let trusted = [reach_client::signing::TrustedKey::parse(&public).unwrap()];
    let check = reach_client::signing::Check {
        sha256: &sha256,
        name: "tool.sh",
        used_for: Some(reach_client::signing::Use::RunScript),
        accept_v1: false,
    };
    assert_eq!(
        reach_client::signing::verify(&trusted, check, Some(&signature)),
        Ok(())
    );

    let upload = env
        .reach(&[
            "--json",
            "library",
            "upload",
            script.to_str().unwrap(),
            "--signature",
            &signature,
        ])
        .await;
    assert!(upload.status.success(), "{}", text(&upload.stderr));
    assert!(text(&upload.stdout).contains(&signature));
}

#[tokio::test]
async fn terminal_escapes_in_script_output_are_shown_not_obeyed() {
    let env = start().await;
    let script = env.dir.path().join("hostile.sh");
    // Clear the screen, set the title, write the clipboard (OSC 52), then a
    // carriage return that would hide the line before it.
    std::fs::write(
        &script,
        "printf 'before\\033[2J\\033]0;owned\\007\\033]52;c;aGk=\\007\\rafter\\n'\n",
    )
    .unwrap();
    let uploaded = env
        .reach(&["library", "upload", script.to_str().unwrap()])
        .await;
    assert!(uploaded.status.success(), "{}", text(&uploaded.stderr));
    let ran = env
        .reach(&["run", &env.machine_id, "--script", "hostile.sh"])
        .await;
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert!(
        !ran.stdout.contains(&0x1b),
        "no escape byte reaches the terminal"
    );
    assert!(!ran.stdout.contains(&b'\r'));
    let stdout = text(&ran.stdout);
    assert!(
        stdout.contains("before\\x1b[2J\\x1b]0;owned\\x07\\x1b]52;c;aGk=\\x07\\x0dafter"),
        "{stdout}"
    );
    // --raw prints what the script wrote.
    let raw = env
        .reach(&["run", &env.machine_id, "--script", "hostile.sh", "--raw"])
        .await;
    assert!(
        raw.stdout.windows(4).any(|w| w == b"\x1b[2J"),
        "{}",
        text(&raw.stdout)
    );
    // --json, and a result piped elsewhere, stay exact.
    let ran = env
        .reach(&["run", &env.machine_id, "--script", "hostile.sh", "--json"])
        .await;
    let action: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    let id = action["id"].as_str().unwrap();
    let result = env.reach(&["result", id, "0"]).await;
    assert!(result.status.success(), "{}", text(&result.stderr));
    let transcript: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert!(
        transcript["script_output"]
            .as_str()
            .unwrap()
            .starts_with("before\x1b[2J\x1b]0;owned\x07"),
        "{transcript}"
    );
}

#[tokio::test]
async fn machines_are_tagged_and_untagged() {
    let env = start().await;
    let added = env
        .reach(&["machines", "tag", &env.machine_id, "--add", "incident-42"])
        .await;
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert!(
        text(&added.stdout).contains("tags: incident-42"),
        "{}",
        text(&added.stdout)
    );
    let json = env
        .reach(&[
            "--json",
            "machines",
            "tag",
            &env.machine_id,
            "--add",
            "triage",
        ])
        .await;
    let machine: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        machine["machineTags"],
        serde_json::json!(["incident-42", "triage"])
    );
    let removed = env
        .reach(&[
            "machines",
            "tag",
            &env.machine_id,
            "--remove",
            "incident-42",
        ])
        .await;
    assert!(
        text(&removed.stdout).ends_with("tags: triage\n"),
        "{}",
        text(&removed.stdout)
    );
    // One of --add or --remove, not both, not neither: a usage error.
    for args in [
        vec!["machines", "tag", &env.machine_id],
        vec![
            "machines",
            "tag",
            &env.machine_id,
            "--add",
            "a",
            "--remove",
            "b",
        ],
    ] {
        let usage = env.reach(&args).await;
        assert_eq!(usage.status.code(), Some(2), "{}", text(&usage.stderr));
    }
}
