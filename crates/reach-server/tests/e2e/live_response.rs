//! Live response end to end: the seed example, PutFile then RunScript,
//! fail-fast, cancel, script timeout, and the downloadable results.

use reach_proto::api::{ActionStatus, CommandStatus, ScriptTranscript};

use reach_server::testing::*;

const HELLO: &[u8] = b"#!/bin/sh\necho \"hello $1\"\necho \"warn: $2\" >&2\nprintf 'collected by %s' \"$1\" > out.txt\nexit 3\n";

#[tokio::test]
async fn seed_example_runs_a_script_with_args_then_collects_a_file() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("hello.sh", HELLO).await;
    let out = device.work_dir().join("out.txt");
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(
                vec![
                    run_script("hello.sh", Some("'big world' second")),
                    get_file(out.to_str().unwrap()),
                ],
                "Testing Live Response API",
            ),
        )
        .await
        .unwrap();
    insta::assert_json_snapshot!("created_action", created, {
        ".id" => "[action id]",
        ".machineId" => "[machine id]",
        ".computerDnsName" => "[host]",
        ".creationDateTimeUtc" => "[time]",
        ".lastUpdateDateTimeUtc" => "[time]",
        ".commands[1].command.params[0].value" => "[path]",
        "[\"@odata.context\"]" => "[context]",
    });
    assert!(
        created
            .odata_context
            .as_deref()
            .unwrap()
            .ends_with("/api/$metadata#MachineActions/$entity")
    );
    let time = regex_lite_time(&created.creation_date_time_utc);
    assert!(
        time,
        "7-digit fraction and Z: {}",
        created.creation_date_time_utc
    );

    let done = server.wait_final(&created.id).await;
    assert_status(&done, ActionStatus::Succeeded);
    assert!(
        done.commands
            .iter()
            .all(|c| c.command_status == CommandStatus::Completed)
    );
    insta::assert_json_snapshot!("succeeded_action", done, {
        ".id" => "[action id]",
        ".machineId" => "[machine id]",
        ".computerDnsName" => "[host]",
        ".creationDateTimeUtc" => "[time]",
        ".lastUpdateDateTimeUtc" => "[time]",
        ".commands[].startTime" => "[time]",
        ".commands[].endTime" => "[time]",
        ".commands[1].command.params[0].value" => "[path]",
        "[\"@odata.context\"]" => "[context]",
    });

    let transcript: serde_json::Value =
        serde_json::from_slice(&server.result(&created.id, 0).await).unwrap();
    let keys: Vec<&str> = transcript
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["exit_code", "script_errors", "script_name", "script_output"]
    );
    let transcript: ScriptTranscript = serde_json::from_value(transcript).unwrap();
    assert_eq!(
        transcript,
        ScriptTranscript {
            script_name: "hello.sh".into(),
            exit_code: 3,
            script_output: "hello big world\n".into(),
            script_errors: "warn: second\n".into(),
        }
    );
    let collected = server.result(&created.id, 1).await;
    assert_eq!(&collected[..2], &[0x1f, 0x8b], "gzip magic");
    assert_eq!(gunzip(&collected), b"collected by big world");
}

fn regex_lite_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() == 28
        && bytes[19] == b'.'
        && bytes[27] == b'Z'
        && bytes[20..27].iter().all(u8::is_ascii_digit)
}

#[tokio::test]
async fn put_file_lands_in_the_working_folder_for_a_later_script() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("data.txt", b"payload from the library").await;
    server.upload("read.sh", b"cat data.txt\n").await;
    let done = server
        .run(
            &device.machine_id,
            vec![put_file("data.txt"), run_script("read.sh", None)],
        )
        .await;
    assert_status(&done, ActionStatus::Succeeded);
    let transcript: ScriptTranscript =
        serde_json::from_slice(&server.result(&done.id, 1).await).unwrap();
    assert_eq!(transcript.script_output, "payload from the library");
    assert_eq!(transcript.exit_code, 0);
    // The PutFile's link serves the record of what was put, and where.
    let record: reach_proto::api::PutFileRecord =
        serde_json::from_slice(&server.result(&done.id, 0).await).unwrap();
    assert_eq!(record.file_name, "data.txt");
    assert_eq!(
        record.path.as_deref(),
        device.work_dir().join("data.txt").to_str()
    );
}

#[tokio::test]
async fn a_failing_command_stops_the_rest() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("ok.sh", b"echo ok\n").await;
    let done = server
        .run(
            &device.machine_id,
            vec![
                run_script("ok.sh", None),
                get_file("/nonexistent/reach/file"),
                get_file("/etc/hostname"),
            ],
        )
        .await;
    assert_status(&done, ActionStatus::Failed);
    let statuses: Vec<CommandStatus> = done.commands.iter().map(|c| c.command_status).collect();
    assert_eq!(
        statuses,
        [
            CommandStatus::Completed,
            CommandStatus::Failed,
            CommandStatus::Created
        ]
    );
    assert!(
        done.commands[1].errors[0].contains("No such file or directory"),
        "{:?}",
        done.commands[1].errors
    );
    assert!(done.commands[2].start_time.is_none());
    let link = server.client.download_link(&done.id, 2).await.unwrap_err();
    assert_eq!(link.code(), Some("ResourceNotFound"));
}

#[tokio::test]
async fn missing_interpreter_and_bad_args_fail_clearly() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("tool.xyz", b"whatever").await;
    let done = server
        .run(&device.machine_id, vec![run_script("tool.xyz", None)])
        .await;
    assert_status(&done, ActionStatus::Failed);
    assert_eq!(
        done.commands[0].errors,
        ["no interpreter for .xyz on this device"]
    );
    server.upload("ok.sh", b"echo ok\n").await;
    // Args the agent could not split are refused at submit, naming the command.
    let err = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("ok.sh", Some("'unclosed"))], "bad args"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    assert!(
        err.to_string()
            .contains("Command 0 (RunScript): Args cannot be split"),
        "{err}"
    );
}

fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_for_file(path: &std::path::Path) -> String {
    wait_for(&format!("{} appearing", path.display()), async || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|text| text.ends_with('\n'))
    })
    .await
}

/// A script with a child in its process group and one that left it
/// (`setsid`): both must go when the script is cancelled or times out.
const SLEEPER: &[u8] = b"sleep 300 &\necho $! > sleeper.pid\nsetsid sh -c 'echo $$ > escaped.pid; exec sleep 300' &\nwait\n";

/// The pids of the sleeper's two children, once both are running.
async fn sleeper_pids(work: &std::path::Path) -> [u32; 2] {
    let mut pids = [0; 2];
    for (i, name) in ["sleeper.pid", "escaped.pid"].iter().enumerate() {
        pids[i] = wait_for_file(&work.join(name))
            .await
            .trim()
            .parse()
            .unwrap();
        assert!(process_alive(pids[i]), "{name}");
    }
    pids
}

/// Waits until none of `pids` is alive.
async fn all_gone(pids: &[u32], after: &str) {
    for pid in pids {
        eventually(
            &format!("process {pid} ending after the {after}"),
            async || !process_alive(*pid),
        )
        .await;
    }
}

#[tokio::test]
async fn cancel_kills_the_running_script_and_its_children() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("sleeper.sh", SLEEPER).await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(
                vec![run_script("sleeper.sh", None), get_file("/etc/hostname")],
                "long",
            ),
        )
        .await
        .unwrap();
    let pids = sleeper_pids(&device.work_dir()).await;
    let cancelled = server.client.cancel(&created.id, "stop it").await.unwrap();
    assert_status(&cancelled, ActionStatus::Cancelled);
    assert_eq!(cancelled.cancellation_comment.as_deref(), Some("stop it"));
    assert_eq!(
        cancelled.cancellation_requestor.as_deref(),
        Some("everything")
    );
    assert!(cancelled.cancellation_date_time_utc.is_some());
    assert_eq!(cancelled.commands[0].command_status, CommandStatus::Failed);
    assert_eq!(cancelled.commands[1].command_status, CommandStatus::Created);
    all_gone(&pids, "cancel").await;
    let again = server
        .client
        .cancel(&created.id, "again")
        .await
        .unwrap_err();
    assert_eq!(again.status().map(|s| s.as_u16()), Some(400));
    assert!(again.to_string().contains("already Cancelled"), "{again}");

    // The machine is free again: a new action runs.
    server.upload("ok.sh", b"echo ok\n").await;
    let next = server
        .run(&device.machine_id, vec![run_script("ok.sh", None)])
        .await;
    assert_status(&next, ActionStatus::Succeeded);
}

#[tokio::test]
async fn a_script_past_its_timeout_is_killed_and_the_action_times_out() {
    let server = TestServer::start_with(|c| c.live_response.script_timeout_secs = 2).await;
    let device = server.agent().await;
    server.upload("sleeper.sh", SLEEPER).await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("sleeper.sh", None)], "slow"),
        )
        .await
        .unwrap();
    let pids = sleeper_pids(&device.work_dir()).await;
    let done = server.wait_final(&created.id).await;
    assert_status(&done, ActionStatus::TimeOut);
    assert_eq!(done.commands[0].command_status, CommandStatus::Failed);
    assert_eq!(
        done.commands[0].errors,
        ["The script timed out after 2 s and was killed"]
    );
    all_gone(&pids, "timeout").await;
}

#[tokio::test]
async fn a_daemon_left_holding_the_output_does_not_hold_up_the_result() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    // The script exits at once; what it started keeps its stdout open.
    server
        .upload(
            "daemon.sh",
            b"setsid sleep 120 &\necho $! > daemon.pid\necho started\nexit 0\n",
        )
        .await;
    let started = std::time::Instant::now();
    let done = server
        .run(&device.machine_id, vec![run_script("daemon.sh", None)])
        .await;
    assert_status(&done, ActionStatus::Succeeded);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the result waited {:?}",
        started.elapsed()
    );
    let transcript: serde_json::Value =
        serde_json::from_slice(&server.result(&done.id, 0).await).unwrap();
    assert!(
        transcript["script_output"]
            .as_str()
            .unwrap()
            .starts_with("started")
    );
    let pid: u32 = wait_for_file(&device.work_dir().join("daemon.pid"))
        .await
        .trim()
        .parse()
        .unwrap();
    all_gone(&[pid], "end of its script").await;
}

#[tokio::test]
async fn download_links_expire_and_refuse_tampering() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("ok.sh", b"echo ok\n").await;
    let done = server
        .run(&device.machine_id, vec![run_script("ok.sh", None)])
        .await;
    let url = server.client.download_link(&done.id, 0).await.unwrap();
    for param in ["se=", "sp=r", "sv=2019-07-07", "sr=b", "sig="] {
        assert!(url.contains(param), "{url}");
    }
    // A fresh link each call; both work without Authorization.
    assert_eq!(
        server
            .client
            .download(&url)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    let tampered = url.replace("/inline/", "/inline/x");
    assert_ne!(tampered, url);
    assert_error(reqwest::get(&tampered).await.unwrap(), 403, "Forbidden").await;
    let other_index = url.replacen(&format!("{}/0/", done.id), &format!("{}/1/", done.id), 1);
    assert_ne!(other_index, url);
    assert_error(reqwest::get(&other_index).await.unwrap(), 403, "Forbidden").await;
    // Paths that climb out, name other places, or hide bytes, under the
    // link's own signature: refused before anything is opened.
    let (link_base, link_query) = url.split_once('?').unwrap();
    let download_root = &link_base[..link_base.find("/download/").unwrap() + "/download/".len()];
    let long = "a/".repeat(2000);
    for path in [
        "transcripts/../../../etc/passwd",
        "transcripts/%2e%2e/%2e%2e/reach.db",
        "..%2f..%2fetc%2fpasswd",
        "transcripts\\..\\secret",
        "library/0000/x.sh",
        "transcripts/x%00.json",
        "inline/../../reach.db",
        "inline/x/0%2f..%2f..%2freach.db",
        "%E2%80%AEnosj.tpircsnart",
        long.as_str(),
    ] {
        let forged = format!("{download_root}{path}?{link_query}");
        let response = reqwest::get(&forged).await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert!(
            (status == 403 || status == 404) && body["error"]["code"].is_string(),
            "{path}: {status} {body}"
        );
    }
    let (base, query) = url.split_once('?').unwrap();
    let later = query.replace("se=", "se=2099");
    assert_error(
        reqwest::get(format!("{base}?{later}")).await.unwrap(),
        403,
        "Forbidden",
    )
    .await;
    assert_error(reqwest::get(base).await.unwrap(), 403, "Forbidden").await;

    let short = TestServer::start_with(|c| c.live_response.download_link_ttl_secs = 0).await;
    let device = short.agent().await;
    short.upload("ok.sh", b"echo ok\n").await;
    let done = short
        .run(&device.machine_id, vec![run_script("ok.sh", None)])
        .await;
    let expired = short.client.download_link(&done.id, 0).await.unwrap();
    let body = assert_error(reqwest::get(&expired).await.unwrap(), 403, "Forbidden").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn args_are_split_like_a_shell_but_never_run_by_one() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server
        .upload("args.sh", b"for a in \"$@\"; do echo \"[$a]\"; done\n")
        .await;
    let done = server
        .run(
            &device.machine_id,
            vec![run_script(
                "args.sh",
                Some(r#"one "two words" 'x;y' ; touch pwned $(id) `id` && echo |"#),
            )],
        )
        .await;
    assert_status(&done, ActionStatus::Succeeded);
    let transcript: ScriptTranscript =
        serde_json::from_slice(&server.result(&done.id, 0).await).unwrap();
    assert_eq!(
        transcript.script_output,
        "[one]\n[two words]\n[x;y]\n[;]\n[touch]\n[pwned]\n[$(id)]\n[`id`]\n[&&]\n[echo]\n[|]\n"
    );
    assert!(!device.work_dir().join("pwned").exists());
}

#[tokio::test]
async fn the_working_folder_is_emptied_when_the_agent_starts() {
    let server = TestServer::start().await;
    let mut device = server.enroll("d").await;
    std::fs::create_dir_all(device.work_dir().join("old")).unwrap();
    std::fs::write(device.work_dir().join("old/leftover.txt"), "from before").unwrap();
    server.connect(&mut device).await;
    let left: Vec<_> = std::fs::read_dir(device.work_dir()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_result_over_the_servers_limit_fails_clearly_and_stores_nothing() {
    let server = TestServer::start_with(|c| c.limits.result_max_bytes = 64 * 1024).await;
    let device = server.agent().await;
    // Random bytes do not compress: about 1 MiB reaches the server.
    let big = device.dir.path().join("big.bin");
    let mut noise = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open("/dev/urandom").unwrap(), 1024 * 1024),
        &mut noise,
    )
    .unwrap();
    std::fs::write(&big, noise).unwrap();
    let done = server
        .run(&device.machine_id, vec![get_file(big.to_str().unwrap())])
        .await;
    assert_status(&done, ActionStatus::Failed);
    assert_eq!(
        done.commands[0].errors,
        ["The result is larger than this server accepts (65536 bytes, gzip-compressed)"]
    );
    let results = server.dir.path().join("server/blobs/results");
    let kept = walk(&results);
    assert!(kept.is_empty(), "nothing partial is kept: {kept:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
