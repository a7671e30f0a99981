//! `--follow`: a script's lines printed before it ends (stdout to stdout,
//! stderr to stderr), a batch's lines prefixed with the machine's name,
//! `reach output`, and Ctrl-C: without a terminal it stops following and
//! leaves the action running; on a terminal, answering `y` cancels it.

use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Prints a line to each stream, waits for the file named by its argument,
/// prints another line.
const GATED: &str = "echo 'first line'\necho 'first error' >&2\nwhile [ ! -f \"$1\" ]; do sleep 0.02; done\necho 'second line'\n";

async fn upload(env: &Env, name: &str, body: &str) {
    let script = env.dir.path().join(name);
    std::fs::write(&script, body).unwrap();
    let uploaded = env
        .reach(&["library", "upload", script.to_str().unwrap()])
        .await;
    assert!(uploaded.status.success(), "{}", text(&uploaded.stderr));
}

/// Reads `from` until what was read contains `wanted`; returns it all.
async fn read_until(from: &mut (impl AsyncReadExt + Unpin), seen: &mut String, wanted: &str) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        while !seen.contains(wanted) {
            let n = from.read(&mut buf).await.unwrap();
            assert!(n > 0, "ended before {wanted:?}: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{wanted:?} before the deadline: {seen}"));
}

#[tokio::test]
async fn run_follow_prints_lines_before_the_script_ends() {
    let env = start().await;
    upload(&env, "gated.sh", GATED).await;
    let gate = env.dir.path().join("gate");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"))
        .args([
            "run",
            &env.machine_id,
            "--script",
            "gated.sh",
            "--args",
            gate.to_str().unwrap(),
            "--follow",
        ])
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    read_until(&mut stdout, &mut out, "first line\n").await;
    read_until(&mut stderr, &mut err, "first error\n").await;
    assert!(child.try_wait().unwrap().is_none(), "still following");
    std::fs::write(&gate, b"").unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    stdout.read_to_string(&mut out).await.unwrap();
    stderr.read_to_string(&mut err).await.unwrap();
    assert_eq!(status.code(), Some(0), "{out}{err}");
    assert!(out.starts_with("first line\nsecond line\n"), "{out}");
    assert!(out.contains("exit code: 0"), "then the summary: {out}");
    assert_eq!(
        out.matches("second line").count(),
        1,
        "not printed twice: {out}"
    );

    // `reach output` afterwards: the whole output, and as JSON.
    let listed = env.reach(&["actions", "--json"]).await;
    let actions: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = actions[0]["id"].as_str().unwrap().to_string();
    let shown = env.reach(&["output", &id]).await;
    assert_eq!(text(&shown.stdout), "first line\nsecond line\n");
    assert!(text(&shown.stderr).contains("first error"));
    let json = env.reach(&["output", &id, "0", "--json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["complete"], true);
    assert_eq!(json["exitCode"], 0);
}

#[tokio::test]
async fn a_followed_batch_prefixes_each_line_with_its_machine() {
    let env = start().await;
    upload(&env, "two.sh", "echo one\nprintf 'two'\n").await;
    let ran = env
        .reach(&["run", "--all", "--script", "two.sh", "--follow"])
        .await;
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let out = text(&ran.stdout);
    let lines: Vec<&str> = out.lines().take(2).collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, expected) in lines.iter().zip(["one", "two"]) {
        let (name, rest) = line.split_once(": ").unwrap();
        assert!(!name.is_empty());
        assert_eq!(rest, expected, "{out}");
    }
    assert!(out.contains("STATUS"), "then the summary: {out}");
}

#[tokio::test]
async fn ctrl_c_without_a_terminal_stops_following_and_leaves_the_action() {
    let env = start().await;
    upload(&env, "gated.sh", GATED).await;
    let gate = env.dir.path().join("gate");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"))
        .args(["run", &env.machine_id, "--script", "gated.sh", "--args"])
        .arg(&gate)
        .arg("--follow")
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut out = String::new();
    read_until(&mut stdout, &mut out, "first line\n").await;
    let pid = child.id().unwrap().to_string();
    let signalled = tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(signalled.success());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("stopped following"), "{err}");
    let listed = env.reach(&["actions", "--json"]).await;
    let actions: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(actions[0]["status"], "InProgress", "left running");
    std::fs::write(&gate, b"").unwrap();
}

/// On a terminal (`script` gives one), Ctrl-C asks, and `y` cancels: the
/// stream then ends with what ran, and the action is Cancelled.
#[tokio::test]
async fn ctrl_c_on_a_terminal_asks_and_cancels() {
    let env = start().await;
    upload(&env, "gated.sh", GATED).await;
    let gate = env.dir.path().join("never");
    // `exec`: `script` runs the command through $SHELL, and a shell that
    // stays as the parent (dash does) dies of the Ctrl-C itself, so
    // `script --return` would report its 130 instead of the CLI's code.
    let command = format!(
        "exec '{}' run {} --script gated.sh --args '{}' --follow",
        env!("CARGO_BIN_EXE_reach"),
        env.machine_id,
        gate.display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script (util-linux) gives the command a terminal");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut screen = String::new();
    read_until(&mut stdout, &mut screen, "first line").await;
    // Ctrl-C as the terminal sends it, then the answer.
    stdin.write_all(b"\x03").await.unwrap();
    read_until(&mut stdout, &mut screen, "? [y/N]").await;
    stdin.write_all(b"y\n").await.unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    stdout.read_to_string(&mut screen).await.unwrap();
    assert!(screen.contains("cancelled"), "{screen}");
    assert_eq!(
        status.code(),
        Some(1),
        "the action did not succeed: {screen}"
    );
    let listed = env.reach(&["actions", "--json"]).await;
    let actions: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(actions[0]["status"], "Cancelled", "{screen}");
}
