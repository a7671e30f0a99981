//! A small run of every scenario, so that the tool does not rot: each must
//! finish and end with its JSON figures. No timing is asserted here; the
//! numbers that matter come from release builds (BENCHMARKS.md).

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_reach-bench"))
        .args(args)
        .env("REACH_LOG", "error")
        .output()
        .expect("running reach-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "reach-bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("a report");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("the last line is not JSON ({e}): {last}"))
}

#[test]
fn idle_connects_every_agent_and_measures_the_server() {
    let figures = run(&["idle", "--agents", "60", "--idle-secs", "1"]);
    assert_eq!(figures["scenario"], "idle");
    assert_eq!(figures["agents"], 60);
    assert!(figures["rss_per_agent_bytes"].as_f64().is_some());
    assert!(figures["idle_cpu_percent"].as_f64().is_some());
}

#[test]
fn dispatch_measures_every_action() {
    let figures = run(&[
        "dispatch",
        "--agents",
        "20",
        "--actions",
        "60",
        "--concurrency",
        "8",
    ]);
    assert_eq!(figures["actions"], 60);
    for key in ["receive_ms", "succeeded_ms"] {
        for q in ["p50", "p95", "p99", "max"] {
            assert!(figures[key][q].as_f64().is_some(), "{key}.{q}: {figures}");
        }
    }
    assert!(figures["actions_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn fanout_reaches_every_machine() {
    let figures = run(&["fanout", "--agents", "80"]);
    assert_eq!(figures["machines"], 80);
    assert!(
        figures["succeeded_100_secs"].as_f64().unwrap()
            >= figures["succeeded_99_secs"].as_f64().unwrap()
    );
}

#[test]
fn fanout_in_one_batch_reaches_every_machine_and_streams_its_results() {
    let figures = run(&["fanout", "--agents", "80", "--batch"]);
    assert_eq!(figures["machines"], 80);
    assert_eq!(figures["batch"], true);
    assert!(figures["results_secs"].as_f64().unwrap() >= 0.0);
}

#[test]
fn getfile_compares_with_the_machines_limits() {
    let figures = run(&["getfile", "--size", "3000000", "--compressible"]);
    assert_eq!(figures["bytes"], 3_000_000);
    assert!(figures["ratio_of_limit"].as_f64().unwrap() > 0.0);
    assert!(figures["server_peak_rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn only_loopback_is_ever_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        r#"{"url":"http://10.1.2.3:8080","tenant_id":"t","client_id":"c","client_secret":"s","enrollment_token":"e"}"#,
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_reach-bench"))
        .args(["idle", "--agents", "1", "--seed"])
        .arg(&seed)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only targets loopback"));
}

#[test]
fn output_follows_every_script_to_its_end() {
    let figures = run(&[
        "output",
        "--agents",
        "20",
        "--lines",
        "4",
        "--interval-ms",
        "100",
        "--start-after-ms",
        "3000",
        "--slow",
        "2",
    ]);
    assert_eq!(figures["scenario"], "output");
    assert_eq!(figures["complete"], 18);
    assert_eq!(figures["slow_complete"], 2);
    for q in ["p50", "p95", "p99", "max"] {
        assert!(
            figures["latency_ms"][q].as_f64().is_some(),
            "{q}: {figures}"
        );
    }
}
