//! Small files travel inside the agent protocol's messages. A small
//! RunScript transcript comes inside the agent's `Finished` instead of an
//! upload of its own: what the server advertises, what it takes and
//! refuses, and that a repeated message leaves no stray file. A small
//! library file goes out inside `Run`, read from the object store once.

use std::sync::atomic::Ordering;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use reach_proto::agent::{AgentMessage, Assignment, Outcome, ServerMessage};
use reach_proto::api::ActionStatus;
use reach_server::testing::*;
use tokio_tungstenite::tungstenite::Message;

use super::agents::raw;

/// Files under the server's transcript store.
fn transcripts(server: &TestServer) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .map(|entry| entry.unwrap().path())
                .map(|path| if path.is_dir() { count(&path) } else { 1 })
                .sum()
        })
    }
    count(&server.dir.path().join("server/blobs/transcripts"))
}

/// A raw device connected to `server` with one command of `commands` handed
/// to it; returns the `Welcome`'s inline limit too.
async fn raw_run(
    server: &TestServer,
    commands: Vec<reach_proto::api::Command>,
) -> (String, raw::Socket, Assignment, u64, String) {
    let device = server.enroll("raw").await;
    let created = server
        .client
        .run_live_response(&device.machine_id, &request(commands, "inline result"))
        .await
        .unwrap();
    let mut socket = raw::hello(&server.url, &bearer(&device), "process-1").await;
    let welcome = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ServerMessage::Welcome {
        inline_result_bytes,
        ..
    } = serde_json::from_str(welcome.to_text().unwrap()).unwrap()
    else {
        panic!("expected Welcome first, got {welcome:?}");
    };
    let ServerMessage::Run(run) = raw::next(&mut socket).await else {
        panic!("expected Run");
    };
    (
        created.id,
        socket,
        run,
        inline_result_bytes,
        bearer(&device),
    )
}

/// Sends `Finished` (Completed) with `result` inline and waits for its Ack.
async fn finish(socket: &mut raw::Socket, run: &Assignment, result: Option<String>) {
    let finished = AgentMessage::Finished {
        command: run.command.clone(),
        outcome: Outcome::Completed {
            sha256: None,
            path: None,
        },
        result,
    };
    socket
        .send(Message::text(serde_json::to_string(&finished).unwrap()))
        .await
        .unwrap();
    match raw::next(socket).await {
        ServerMessage::Ack(acked) => assert_eq!(acked, run.command),
        other => panic!("expected Ack, got {other:?}"),
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_small_transcript_travels_with_the_outcome_into_the_database_and_a_repeat_changes_nothing()
 {
    let server = TestServer::start().await;
    server.upload("x.sh", b"true\n").await;
    let (id, mut socket, run, limit, _) = raw_run(&server, vec![run_script("x.sh", None)]).await;
    assert_eq!(limit, 64 * 1024, "the default, advertised in Welcome");
    let transcript =
        br#"{"script_name":"x.sh","exit_code":0,"script_output":"hi\n","script_errors":""}"#;
    finish(&mut socket, &run, Some(base64(transcript))).await;
    let done = server.wait_final(&id).await;
    assert_status(&done, ActionStatus::Succeeded);
    assert_eq!(server.result(&id, 0).await, transcript.to_vec());
    assert_eq!(
        transcripts(&server),
        0,
        "kept in the database, not as a file"
    );
    // The Ack was lost: the agent says it again (here a device trying to
    // change its transcript after the fact): the recorded one stays.
    finish(&mut socket, &run, Some(base64(b"another copy"))).await;
    assert_eq!(transcripts(&server), 0);
    assert_eq!(server.result(&id, 0).await, transcript.to_vec());
    assert_eq!(
        server
            .state
            .metrics
            .transcripts_inline
            .load(Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn an_inline_result_the_server_does_not_take_fails_the_command_with_the_reason() {
    let server = TestServer::start_with(|config| {
        config.live_response.inline_result_bytes = 16;
    })
    .await;
    server.upload("x.sh", b"true\n").await;
    let cases = [
        (vec![b'x'; 17], "larger than the 16 bytes"),
        (b"short".to_vec(), "not valid base64"),
    ];
    for (bytes, reason) in cases {
        let (id, mut socket, run, limit, _) =
            raw_run(&server, vec![run_script("x.sh", None)]).await;
        assert_eq!(limit, 16);
        let encoded = if reason.contains("base64") {
            "not base64!".to_string()
        } else {
            base64(&bytes)
        };
        finish(&mut socket, &run, Some(encoded)).await;
        let done = server.wait_final(&id).await;
        assert_status(&done, ActionStatus::Failed);
        let errors = done.commands[0].errors.join("; ");
        assert!(errors.contains(reason), "{reason}: {errors}");
    }
    assert_eq!(transcripts(&server), 0);
}

#[tokio::test]
async fn a_result_sent_with_a_getfile_or_putfile_is_not_kept() {
    let server = TestServer::start().await;
    server.upload("x.sh", b"true\n").await;
    let (id, mut socket, run, _, bearer) = raw_run(&server, vec![get_file("/etc/hostname")]).await;
    // Nor uploaded as one body: a GetFile's result comes in checked chunks.
    let upload = reqwest::Client::new()
        .put(format!(
            "{}{}",
            server.url,
            reach_proto::agent::paths::result(&run.command.action_id, run.command.index)
        ))
        .bearer_auth(&bearer)
        .body("not the file")
        .send()
        .await
        .unwrap();
    assert_error(upload, 400, "BadRequest").await;
    finish(&mut socket, &run, Some(base64(b"not the file"))).await;
    let done = server.wait_final(&id).await;
    assert_status(&done, ActionStatus::Failed);
    assert!(
        done.commands[0].errors[0].contains("no result"),
        "{:?}",
        done.commands[0].errors
    );
    assert_eq!(transcripts(&server), 0);
    // A PutFile's result is the server's own record of what was put.
    let (id, mut socket, run, _, _) = raw_run(&server, vec![put_file("x.sh")]).await;
    finish(&mut socket, &run, Some(base64(b"not a transcript"))).await;
    assert_status(&server.wait_final(&id).await, ActionStatus::Succeeded);
    let record = String::from_utf8(server.result(&id, 0).await).unwrap();
    assert!(
        record.contains("x.sh") && !record.contains("not a transcript"),
        "{record}"
    );
    assert_eq!(transcripts(&server), 1, "the record alone");
}

/// The real agent: a transcript within the advertised size rides in the
/// message; a larger one, or any with inlining off, is uploaded.
#[tokio::test]
async fn the_agent_sends_small_transcripts_inline_and_uploads_the_rest() {
    for (limit, output, inline) in [(4096, 100, true), (4096, 10_000, false), (0, 100, false)] {
        let server = TestServer::start_with(|config| {
            config.live_response.inline_result_bytes = limit;
        })
        .await;
        let device = server.agent().await;
        server
            .upload(
                "print.sh",
                b"#!/bin/sh\nhead -c \"$1\" /dev/zero | tr '\\0' a\n",
            )
            .await;
        let args = output.to_string();
        let done = server
            .run(
                &device.machine_id,
                vec![run_script("print.sh", Some(&args))],
            )
            .await;
        assert_status(&done, ActionStatus::Succeeded);
        let transcript: serde_json::Value =
            serde_json::from_slice(&server.result(&done.id, 0).await).unwrap();
        assert_eq!(
            transcript["script_output"].as_str().unwrap().len(),
            output,
            "{transcript}"
        );
        let metrics = &server.state.metrics;
        let counts = (
            metrics.transcripts_inline.load(Ordering::Relaxed),
            metrics.transcripts_uploaded.load(Ordering::Relaxed),
        );
        let expected = if inline { (1, 0) } else { (0, 1) };
        assert_eq!(counts, expected, "limit {limit}, output {output}");
    }
}

/// A library file up to `inline_payload_bytes` travels in the `Run`
/// message; a larger one, and every file with inlining off, is downloaded.
#[tokio::test]
async fn small_library_files_travel_with_the_command_and_large_ones_are_downloaded() {
    for (limit, size, inline) in [(64, 64, true), (64, 65, false), (0, 10, false)] {
        let server =
            TestServer::start_with(|config| config.live_response.inline_payload_bytes = limit)
                .await;
        let script = vec![b'#'; size];
        server.upload("x.sh", &script).await;
        let (_, _socket, run, _, _) = raw_run(&server, vec![run_script("x.sh", None)]).await;
        let sent = run.inline_payload.map(|text| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap()
        });
        match inline {
            true => assert_eq!(sent, Some(script), "limit {limit}, size {size}"),
            false => assert_eq!(sent, None, "limit {limit}, size {size}"),
        }
    }
}

/// A script sent to many machines is read once: after the first `Run`, its
/// stored copy is not read again (here: removed, and still sent).
#[tokio::test]
async fn a_small_library_file_is_read_once_for_every_run_that_carries_it() {
    let server = TestServer::start().await;
    server.upload("x.sh", b"echo hello\n").await;
    let (_, _socket, first, _, _) = raw_run(&server, vec![run_script("x.sh", None)]).await;
    let sent = first.inline_payload.expect("sent with the command");
    let library = server.dir.path().join("server/blobs/library");
    let stored: Vec<_> = walk(&library);
    assert_eq!(stored.len(), 1, "{stored:?}");
    std::fs::remove_file(&stored[0]).unwrap();
    let (_, _socket, second, _, _) = raw_run(&server, vec![run_script("x.sh", None)]).await;
    assert_eq!(second.inline_payload, Some(sent));
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir).map_or(Vec::new(), |entries| {
        entries
            .map(|entry| entry.unwrap().path())
            .flat_map(|path| {
                if path.is_dir() {
                    walk(&path)
                } else {
                    vec![path]
                }
            })
            .collect()
    })
}
