//! `reach isolate` and `reach release`: one machine waited for, several
//! only with `--yes` when there is no terminal to ask on, `--no-wait
//! --json`, the isolation column of `reach machines`, and the exit codes.
//! (The test's agent runs with isolation off, as every in-process agent:
//! its isolation fails saying so; real rules are tested inside network
//! namespaces by reach-agent's tests.)

use std::process::Stdio;

use super::*;

#[tokio::test]
async fn isolate_and_release_from_the_command_line() {
    let env = start().await;
    let machine = env.machine_id.clone();
    let isolated = env
        .reach(&["isolate", &machine, "--comment", "contain"])
        .await;
    assert_eq!(
        isolated.status.code(),
        Some(1),
        "{}",
        text(&isolated.stderr)
    );
    let report = text(&isolated.stdout);
    assert!(report.contains("Failed"), "{report}");
    assert!(report.contains("Isolation is turned off"), "{report}");
    let released = env
        .reach(&["release", &machine, "--comment", "clean"])
        .await;
    assert_eq!(
        released.status.code(),
        Some(0),
        "{}",
        text(&released.stderr)
    );
    assert!(text(&released.stdout).contains("Succeeded"));
    let usage = env.reach(&["isolate", &machine]).await;
    assert_eq!(usage.status.code(), Some(2), "--comment is required");

    // Several machines: without a terminal, only with --yes.
    let offline = env._server.enroll("offline").await;
    let asked = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"))
        .args(["isolate", "--all", "--comment", "contain"])
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(asked.status.code(), Some(1));
    assert!(
        text(&asked.stderr).contains("give --yes"),
        "{}",
        text(&asked.stderr)
    );
    let listed = env.reach(&["actions", "--json"]).await;
    let actions: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let isolations = actions
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["type"] == "Isolate")
        .count();
    assert_eq!(isolations, 1, "nothing more was asked of the fleet");

    let fleet = env
        .reach(&[
            "isolate",
            "--all",
            "--comment",
            "contain",
            "--yes",
            "--no-wait",
            "--json",
        ])
        .await;
    assert_eq!(fleet.status.code(), Some(0), "{}", text(&fleet.stderr));
    let created: Vec<serde_json::Value> = text(&fleet.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(created.len(), 2);
    assert!(
        created
            .iter()
            .all(|a| a["type"] == "Isolate" && a["scope"] == "Full")
    );
    let machines = text(&env.reach(&["machines"]).await.stdout);
    assert!(machines.contains("ISOLATION"), "{machines}");
    let row = machines
        .lines()
        .find(|line| line.contains(&offline.machine_id))
        .unwrap();
    assert!(row.contains("Pending"), "{row}");
}

#[tokio::test]
async fn offboarding_asks_even_for_one_machine() {
    let env = start().await;
    let machine = env.machine_id.clone();
    let asked = tokio::process::Command::new(env!("CARGO_BIN_EXE_reach"))
        .args(["offboard", &machine, "--comment", "retired"])
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(asked.status.code(), Some(1));
    let said = text(&asked.stderr);
    assert!(
        said.contains("give --yes") && said.contains("deletes its credential"),
        "{said}"
    );
    let done = env
        .reach(&["offboard", &machine, "--comment", "retired", "--yes"])
        .await;
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert!(text(&done.stdout).contains("Succeeded"));
}

#[tokio::test]
async fn a_package_is_collected_and_fetched_as_a_zip() {
    let env = start().await;
    let machine = env.machine_id.clone();
    let collected = env
        .reach(&["collect", &machine, "--comment", "incident"])
        .await;
    assert_eq!(
        collected.status.code(),
        Some(0),
        "{}",
        text(&collected.stderr)
    );
    let said = text(&collected.stderr);
    let id = text(&collected.stdout)
        .split('\t')
        .nth(1)
        .unwrap()
        .to_string();
    assert!(said.contains(&format!("reach result {id} 0")), "{said}");
    let zip = env.dir.path().join("package.zip");
    let fetched = env
        .reach(&["result", &id, "0", "-o", zip.to_str().unwrap()])
        .await;
    assert_eq!(fetched.status.code(), Some(0), "{}", text(&fetched.stderr));
    assert_eq!(&std::fs::read(&zip).unwrap()[..4], b"PK\x03\x04");
}
