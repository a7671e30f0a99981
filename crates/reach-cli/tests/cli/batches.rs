//! `reach run` on many machines (a batch) and `reach batches` /
//! `reach batch ...`, with `--json` and on a terminal.

use super::*;

/// `reach run --all` makes one batch, follows it, saves collected files
/// under the machine's name, and prints the batch and each machine with
/// `--json`; `reach batches` and `reach batch ...` read and control it.
#[tokio::test]
async fn a_batch_from_the_command_line() {
    let env = start().await;
    let script = env.dir.path().join("hello.sh");
    std::fs::write(&script, "echo \"hello fleet\"\n").unwrap();
    let uploaded = env
        .reach(&["library", "upload", script.to_str().unwrap()])
        .await;
    assert!(uploaded.status.success(), "{}", text(&uploaded.stderr));
    let evidence = env.dir.path().join("evidence.txt");
    std::fs::write(&evidence, "evidence").unwrap();
    let out = env.dir.path().join("collected");
    let ran = env
        .reach(&[
            "run",
            "--all",
            "--script",
            "hello.sh",
            "--get-file",
            evidence.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
        .await;
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let report: serde_json::Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(report["batch"]["status"], "Completed");
    assert_eq!(report["batch"]["counts"]["Succeeded"], 1);
    let machine = &report["machines"][0];
    assert_eq!(machine["machineId"], env.machine_id.as_str());
    assert_eq!(machine["commands"][0]["exitCode"], 0);
    assert_eq!(machine["commands"][0]["output"], "hello fleet\n");
    let saved = machine["commands"][1]["savedPath"].as_str().unwrap();
    assert!(saved.starts_with(out.to_str().unwrap()), "{saved}");
    assert!(saved.ends_with("evidence.txt"), "{saved}");
    assert_eq!(std::fs::read_to_string(saved).unwrap(), "evidence");
    let id = report["batch"]["id"].as_str().unwrap();

    let listed = env.reach(&["batches", "--json"]).await;
    let batches: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(batches[0]["id"], id);
    let shown = env.reach(&["batch", id]).await;
    assert!(
        text(&shown.stdout).contains("Completed"),
        "{}",
        text(&shown.stdout)
    );
    let results = env.reach(&["batch", "results", id, "--index", "0"]).await;
    assert!(
        text(&results.stdout).contains("hello fleet"),
        "{}",
        text(&results.stdout)
    );
    let cancel = env.reach(&["batch", "cancel", id]).await;
    assert_eq!(
        cancel.status.code(),
        Some(1),
        "a completed batch cannot be cancelled"
    );
    // Neither one machine nor a target: a usage error.
    let usage = env.reach(&["run", "--script", "hello.sh"]).await;
    assert_eq!(usage.status.code(), Some(2));
}

/// On a terminal `reach run` draws indicatif's progress bar on stderr with
/// the counts, and ends with the summary table; `script` (util-linux) gives
/// the command a pseudo-terminal, as an analyst's shell would.
#[tokio::test]
async fn a_batch_on_a_terminal_shows_its_progress_bar() {
    let env = start().await;
    let script = env.dir.path().join("slow.sh");
    std::fs::write(&script, "sleep 1\necho done\n").unwrap();
    let uploaded = env
        .reach(&["library", "upload", script.to_str().unwrap()])
        .await;
    assert!(uploaded.status.success(), "{}", text(&uploaded.stderr));
    let command = format!(
        "exec '{}' run --all --script slow.sh",
        env!("CARGO_BIN_EXE_reach")
    );
    let ran = tokio::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "200")
        .output()
        .await
        .expect("script (util-linux) gives the command a terminal");
    let screen = text(&ran.stdout);
    assert_eq!(ran.status.code(), Some(0), "{screen}");
    assert!(screen.contains("1/1 final"), "{screen}");
    assert!(screen.contains("Succeeded 1 · Failed 0"), "{screen}");
    assert!(screen.contains("ETA"), "{screen}");
    assert!(screen.contains("Completed"), "{screen}");
    assert!(screen.contains("STATUS"), "{screen}");

    // Without a terminal nothing of the bar is written.
    let piped = env.reach(&["run", "--all", "--script", "slow.sh"]).await;
    assert_eq!(piped.status.code(), Some(0), "{}", text(&piped.stderr));
    assert!(
        !text(&piped.stderr).contains("final"),
        "{}",
        text(&piped.stderr)
    );
    assert!(text(&piped.stdout).contains("Completed"));
}
