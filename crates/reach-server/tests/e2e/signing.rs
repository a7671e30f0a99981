//! Signed library files: an agent with trusted keys puts and runs only
//! files signed by one of them (a server that swapped or added a file
//! cannot make it run anything else), and a server with trusted keys
//! accepts only signed uploads.

use reach_client::LibraryUpload;
use reach_client::signing;
use reach_proto::api::{ActionStatus, CommandStatus};

use reach_server::testing::*;

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn signed(name: &str, bytes: &[u8], private: &str) -> LibraryUpload {
    LibraryUpload {
        signature: Some(signing::sign(private, &sha256(bytes), name, signing::Uses::Both).unwrap()),
        ..LibraryUpload::bytes(name, bytes.to_vec())
    }
}

#[tokio::test]
async fn an_agent_with_trusted_keys_runs_only_files_signed_by_them() {
    let server = TestServer::start().await;
    let (private, public) = signing::generate().unwrap();
    let (stranger, _) = signing::generate().unwrap();
    let mut device = server.enroll("strict").await;
    let config = reach_agent::Config {
        trusted_keys: vec![public],
        ..server.agent_config(device.dir.path())
    };
    server.connect_with(&mut device, config).await;

    let script = b"#!/bin/sh\necho signed and run\n";
    let uploaded = server
        .client
        .upload_library_file(signed("good.sh", script, &private))
        .await
        .unwrap();
    assert!(uploaded.signature.is_some());
    server
        .upload("unsigned.sh", b"#!/bin/sh\necho never\n")
        .await;
    server
        .client
        .upload_library_file(signed("stranger.sh", b"#!/bin/sh\necho never\n", &stranger))
        .await
        .unwrap();
    // A signature made for other bytes than the file's.
    let mut swapped = signed("swapped.sh", script, &private);
    swapped.body = reach_client::UploadBody::Bytes(b"#!/bin/sh\necho evil\n".to_vec());
    server.client.upload_library_file(swapped).await.unwrap();
    // A file signed as data (PutFile only, under its own name), uploaded
    // again with its signature under a script's name.
    let data = b"#!/bin/sh\necho data that runs\n";
    let as_data = signing::sign(
        &private,
        &sha256(data),
        "records.csv",
        signing::Uses::Only(signing::Use::PutFile),
    )
    .unwrap();
    for name in ["records.csv", "records.sh"] {
        let upload = LibraryUpload {
            signature: Some(as_data.clone()),
            ..LibraryUpload::bytes(name, data.to_vec())
        };
        server.client.upload_library_file(upload).await.unwrap();
    }
    let done = server
        .run(&device.machine_id, vec![put_file("records.csv")])
        .await;
    assert_status(&done, ActionStatus::Succeeded);

    let done = server
        .run(&device.machine_id, vec![run_script("good.sh", None)])
        .await;
    assert_status(&done, ActionStatus::Succeeded);
    let transcript: serde_json::Value =
        serde_json::from_slice(&server.result(&done.id, 0).await).unwrap();
    assert_eq!(transcript["script_output"], "signed and run\n");

    for (commands, why) in [
        (
            vec![run_script("unsigned.sh", None)],
            "the file is not signed",
        ),
        (vec![run_script("stranger.sh", None)], "does not match"),
        (vec![run_script("swapped.sh", None)], "does not match"),
        (vec![run_script("records.sh", None)], "does not match"),
        (vec![put_file("records.sh")], "does not match"),
        (vec![run_script("records.csv", None)], "does not match"),
        (vec![put_file("unsigned.sh")], "the file is not signed"),
    ] {
        let done = server.run(&device.machine_id, commands).await;
        assert_status(&done, ActionStatus::Failed);
        let command = &done.commands[0];
        assert_eq!(command.command_status, CommandStatus::Failed);
        let error = command.errors.join(" ");
        assert!(error.contains("signed by a key it trusts"), "{error}");
        assert!(error.contains(why), "{error}");
    }
    let landed = device.work_dir().join("unsigned.sh");
    assert!(!landed.exists(), "a refused PutFile writes nothing");
    // GetFile needs no signature.
    let done = server
        .run(&device.machine_id, vec![get_file("/etc/hostname")])
        .await;
    assert_status(&done, ActionStatus::Succeeded);
}

#[tokio::test]
async fn a_server_with_trusted_keys_accepts_only_signed_uploads() {
    let (private, public) = signing::generate().unwrap();
    let (stranger, _) = signing::generate().unwrap();
    let server =
        TestServer::start_with(|c| c.live_response.library_trusted_keys = vec![public]).await;
    let bytes = b"echo hi\n";
    let refusals = [
        LibraryUpload::bytes("plain.sh", bytes.to_vec()),
        signed("stranger.sh", bytes, &stranger),
        LibraryUpload {
            signature: Some("bm90IGEgc2lnbmF0dXJl".into()),
            ..LibraryUpload::bytes("garbled.sh", bytes.to_vec())
        },
        // Signed by the right key, for another name.
        LibraryUpload {
            signature: signed("other.sh", bytes, &private).signature,
            ..LibraryUpload::bytes("renamed.sh", bytes.to_vec())
        },
    ];
    for upload in refusals {
        let err = server
            .client
            .upload_library_file(upload)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("400") && err.contains("InvalidInput"), "{err}");
    }
    assert!(server.client.library().await.unwrap().value.is_empty());
    let stored = server
        .client
        .upload_library_file(signed("good.sh", bytes, &private))
        .await
        .unwrap();
    let listed = server.client.library().await.unwrap().value;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].signature, stored.signature);
}
