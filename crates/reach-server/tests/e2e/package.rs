//! The investigation package through the API with an in-process agent: the
//! collection runs, its zip arrives through the chunked transfer (in small
//! chunks here, so that it takes several and a resume is exercised by the
//! agent's own check of what the server holds), `getPackageUri` answers 404
//! before and the zip itself after (CPython's zip reader checks it and its
//! manifest), the zip's SHA-256 is in the action and the audit trail, and
//! one collection at a time per machine.

use reach_proto::api::ActionStatus;
use reach_server::testing::*;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn a_package_is_collected_sent_and_served_as_the_zip_it_is() {
    let server = TestServer::start_with(|config| {
        config.live_response.chunk_bytes = 64 * 1024;
    })
    .await;
    let device = server.agent().await;
    let machine = &device.machine_id;
    let isolator = server.app("isolator", &["Machine.Isolate"]).await;
    let refused = isolator
        .request(
            reqwest::Method::POST,
            &format!("/api/machines/{machine}/collectInvestigationPackage"),
        )
        .json(&serde_json::json!({ "Comment": "x" }))
        .send()
        .await
        .unwrap();
    assert_error(refused, 403, "Forbidden").await;
    let forensics = server.app("forensics", &["Machine.CollectForensics"]).await;
    let action = forensics
        .collect_investigation_package(machine, "incident 42")
        .await
        .unwrap();
    assert_eq!(action.kind, "CollectInvestigationPackage");
    // One at a time per machine (as Defender), while it waits or runs.
    let again = forensics
        .request(
            reqwest::Method::POST,
            &format!("/api/machines/{machine}/collectInvestigationPackage"),
        )
        .json(&serde_json::json!({ "Comment": "again" }))
        .send()
        .await
        .unwrap();
    assert_error(again, 400, "ActiveRequestAlreadyExists").await;
    let early = forensics
        .request(
            reqwest::Method::GET,
            &format!("/api/machineactions/{}/getPackageUri", action.id),
        )
        .send()
        .await
        .unwrap();
    if early.status() != 200 {
        assert_error(early, 404, "ResourceNotFound").await;
    }
    let done = server.wait_final(&action.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:?}");
    let url = forensics.package_uri(&action.id).await.unwrap();
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[..4], b"PK\x03\x04", "a zip, not gzipped again");
    let sha256 = hex::encode(Sha256::digest(&bytes));
    assert_eq!(
        done.related_file_info,
        Some(serde_json::json!({ "fileIdentifier": sha256, "fileIdentifierType": "Sha256" }))
    );
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("package.zip");
    std::fs::write(&zip, &bytes).unwrap();
    let check = "import zipfile,json,hashlib,sys\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nm=json.loads(z.read('manifest.json'))\nfor f in m['files']:\n  assert hashlib.sha256(z.read(f['path'])).hexdigest()==f['sha256'], f\nprint(m['machineId'], 'CollectionSummaryReport.csv' in z.namelist())";
    let output = std::process::Command::new("python3")
        .args(["-c", check])
        .arg(&zip)
        .output()
        .expect("python3 reads the zip");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{machine} True")
    );
    // The trail holds the package's hash with the command's end.
    let trail = server.client.audit_log(&[]).await.unwrap().value;
    assert!(
        trail
            .iter()
            .any(|e| e.operation == "CommandFinished" && e.details["fileSha256"] == sha256.as_str()),
        "the package's SHA-256 is in the audit trail"
    );
    // getPackageUri is for packages only.
    let script = server
        .client
        .run_live_response(machine, &request(vec![get_file("/etc/hostname")], "x"))
        .await
        .unwrap();
    server.wait_final(&script.id).await;
    let wrong = forensics
        .request(
            reqwest::Method::GET,
            &format!("/api/machineactions/{}/getPackageUri", script.id),
        )
        .send()
        .await
        .unwrap();
    assert_error(wrong, 404, "ResourceNotFound").await;
}
