//! StopAndQuarantineFile through the API with an in-process agent: a
//! running executable of the test's own (a copy of `sleep` made unique, so
//! that no other process of the machine shares its SHA-1) is killed, kept
//! in the agent's quarantine and removed; a copy that is not running stays,
//! as the report says; the action carries the hash in `relatedFileInfo`;
//! the quarantined file goes back with its mode; and the checks before.

use reach_agent::quarantine::{Vault, sha1_of};
use reach_proto::api::ActionStatus;
use reach_server::testing::*;

/// A copy of `sleep` with bytes of its own after the end (ignored when it
/// runs), at `path`, executable.
fn unique_sleep(path: &std::path::Path) {
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("sleep (coreutils)");
    let mut bytes = std::fs::read(sleep).unwrap();
    bytes.extend_from_slice(format!("reach-test-{}", rand::random::<u64>()).as_bytes());
    std::fs::write(path, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o750)).unwrap();
}

#[tokio::test]
async fn the_running_file_is_stopped_quarantined_and_can_be_put_back() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    let machine = &device.machine_id;
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("implant");
    unique_sleep(&tool);
    let copy = dir.path().join("implant-copy");
    std::fs::copy(&tool, &copy).unwrap();
    let sha1 = sha1_of(&tool).unwrap();
    let mut running = std::process::Command::new(&tool)
        .arg("300")
        .spawn()
        .unwrap();

    let path = format!("/api/machines/{machine}/StopAndQuarantineFile");
    let post = |client: reach_client::Client, body: serde_json::Value| {
        let path = path.clone();
        async move {
            client
                .request(reqwest::Method::POST, &path)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let isolator = server.app("isolator", &["Machine.Isolate"]).await;
    let refused = post(
        isolator,
        serde_json::json!({ "Comment": "x", "Sha1": sha1 }),
    )
    .await;
    assert_error(refused, 403, "Forbidden").await;
    let responder = server
        .app("responder", &["Machine.StopAndQuarantine"])
        .await;
    for (body, code) in [
        (
            serde_json::json!({ "Comment": "x" }),
            "MissingRequiredParameter",
        ),
        (
            serde_json::json!({ "Comment": "x", "Sha1": "abc" }),
            "InvalidInput",
        ),
        (
            serde_json::json!({ "Sha1": sha1 }),
            "MissingRequiredParameter",
        ),
    ] {
        assert_error(post(responder.clone(), body).await, 400, code).await;
    }

    let action = responder
        .stop_and_quarantine_file(machine, "implant found", &sha1.to_uppercase())
        .await
        .unwrap();
    assert_eq!(action.kind, "StopAndQuarantineFile");
    assert_eq!(
        action.related_file_info,
        Some(serde_json::json!({ "fileIdentifier": sha1, "fileIdentifierType": "Sha1" }))
    );
    let done = server.wait_final(&action.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:?}");
    let status = running.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the process was killed");
    assert!(!tool.exists(), "the running file was taken away");
    assert!(copy.exists(), "a copy that was not running is not searched");

    let report: serde_json::Value =
        serde_json::from_slice(&server.result(&action.id, 0).await).unwrap();
    assert_eq!(report["sha1"], sha1.as_str());
    assert_eq!(report["processes"][0]["pid"], running.id());
    assert_eq!(report["processes"][0]["killed"], true);
    assert_eq!(report["files"][0]["path"], tool.display().to_string());
    assert_eq!(report["files"][0]["removed"], true);
    assert!(
        report["note"]
            .as_str()
            .unwrap()
            .contains("were not searched")
    );
    let id = report["files"][0]["quarantineId"].as_str().unwrap();

    // `reach-agent restore-quarantine ID` puts it back, mode and all.
    let vault = Vault::open(&device.dir.path().join("state.json"));
    assert_eq!(vault.list().unwrap().len(), 1);
    let restored = vault.restore(id).unwrap();
    assert_eq!(restored.action_id, action.id);
    assert_eq!(sha1_of(&tool).unwrap(), sha1);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&tool).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o750);

    // Nothing running with that hash any more: done, and said so.
    let again = responder
        .stop_and_quarantine_file(machine, "again", &sha1)
        .await
        .unwrap();
    assert_eq!(
        server.wait_final(&again.id).await.status,
        ActionStatus::Succeeded
    );
    let report: serde_json::Value =
        serde_json::from_slice(&server.result(&again.id, 0).await).unwrap();
    assert!(report["processes"].as_array().unwrap().is_empty());
    assert!(
        report["note"]
            .as_str()
            .unwrap()
            .starts_with("No running process")
    );
    assert!(tool.exists(), "a file not running is left alone");
}
