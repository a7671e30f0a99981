//! Live output end to end: a script's lines reach a follower before the
//! script ends, a resumed stream loses and repeats nothing, the end event,
//! the JSON form, the output cap, cancel while following, a batch's merged
//! stream, a follower that does not read, and the streamed text against
//! the transcript byte for byte.

use std::collections::HashMap;

use reach_client::output::{Follow, OutputEvent};
use reach_proto::api::{
    ActionStatus, BatchTargets, CreateBatchRequest, OutputEnd, ScriptTranscript,
};

use reach_server::testing::*;

/// Prints a line, waits for the test to create `gate` in its working
/// folder, prints more (stdout and stderr, multi-byte characters), exits 7.
const GATED: &[u8] = b"#!/bin/sh\necho 'first line'\nwhile [ ! -f gate ]; do sleep 0.02; done\necho 'second: \xc3\xa9t\xc3\xa9 \xe2\x9c\x93'\necho 'oops' >&2\nexit 7\n";

/// Many lines, quickly, on both streams.
const CHATTY: &[u8] = b"#!/bin/sh\ni=0\nwhile [ $i -lt 400 ]; do echo \"line $i of the output, long enough to matter\"; echo \"err $i\" >&2; i=$((i+1)); done\n";

async fn next(follow: &mut Follow<'_>) -> Option<OutputEvent> {
    tokio::time::timeout(DEADLINE, follow.next())
        .await
        .expect("an event before the deadline")
        .expect("the stream reads")
}

/// What a command's stream brings until its end: stdout, stderr, the end,
/// and each event's stream with its offset (checked contiguous).
#[derive(Default)]
struct Seen {
    out: String,
    err: String,
    end: Option<OutputEnd>,
    events: usize,
}

impl Seen {
    fn add(&mut self, event: OutputEvent) {
        self.events += 1;
        match event {
            OutputEvent::Stdout(piece) => {
                assert_eq!(piece.offset as usize, self.out.len(), "stdout contiguous");
                self.out.push_str(&piece.text);
            }
            OutputEvent::Stderr(piece) => {
                assert_eq!(piece.offset as usize, self.err.len(), "stderr contiguous");
                self.err.push_str(&piece.text);
            }
            OutputEvent::End(end) => self.end = Some(end),
            OutputEvent::Done => panic!("a command's stream has no done"),
        }
    }

    async fn to_end(follow: &mut Follow<'_>) -> Seen {
        let mut seen = Seen::default();
        while let Some(event) = next(follow).await {
            seen.add(event);
        }
        assert!(seen.end.is_some(), "the stream ends with its end event");
        seen
    }
}

async fn transcript(server: &TestServer, action_id: &str) -> ScriptTranscript {
    serde_json::from_slice(&server.result(action_id, 0).await).unwrap()
}

async fn start(server: &TestServer, machine_id: &str, script: &str) -> String {
    server
        .client
        .run_live_response(machine_id, &request(vec![run_script(script, None)], "live"))
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn lines_arrive_before_the_script_ends_and_add_up_to_its_transcript() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("gated.sh", GATED).await;
    let id = start(&server, &device.machine_id, "gated.sh").await;
    let mut follow = server.client.follow_output(&id, 0, None);
    let Some(OutputEvent::Stdout(first)) = next(&mut follow).await else {
        panic!("the first line, as stdout");
    };
    assert_eq!(first.text, "first line\n");
    assert_eq!(first.offset, 0);
    // The script is still waiting for its gate: it has not ended.
    let running = server.client.action(&id).await.unwrap();
    assert_eq!(running.status, ActionStatus::InProgress);
    let so_far = server.client.output(&id, 0).await.unwrap();
    assert_eq!(so_far.stdout, "first line\n");
    assert!(!so_far.complete);
    assert_eq!(so_far.exit_code, None);

    std::fs::write(device.work_dir().join("gate"), b"").unwrap();
    let mut seen = Seen {
        out: first.text,
        ..Seen::default()
    };
    while let Some(event) = next(&mut follow).await {
        seen.add(event);
    }
    let end = seen.end.clone().expect("an end");
    assert_eq!(end.command_status, "Completed");
    assert_eq!(end.exit_code, Some(7));
    let transcript = transcript(&server, &id).await;
    assert_eq!(seen.out, transcript.script_output, "stdout byte for byte");
    assert_eq!(seen.err, transcript.script_errors, "stderr byte for byte");
    assert_eq!(seen.out, "first line\nsecond: été ✓\n");

    // The JSON form once it ended, and a stream opened after the end.
    let after = server.client.output(&id, 0).await.unwrap();
    assert!(after.complete);
    assert_eq!(after.exit_code, Some(7));
    assert_eq!(after.stdout, transcript.script_output);
    assert_eq!(after.stderr, transcript.script_errors);
    let replay = Seen::to_end(&mut server.client.follow_output(&id, 0, None)).await;
    assert_eq!((replay.out, replay.err), (seen.out, seen.err));

    // The raw shapes other clients parse.
    let path = format!("/api/machineactions/{id}/commands/0/output");
    let (status, json) = server.get_raw(&path).await;
    assert_eq!(status, 200);
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["complete", "exitCode", "stderr", "stdout"]);
    let response = server
        .client
        .request(reqwest::Method::GET, &path)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.starts_with("id: ")
            && body
                .contains("\nevent: stdout\ndata: {\"text\":\"first line\\n\",\"offset\":0}\n\n"),
        "{body}"
    );
    assert!(
        body.contains("event: end\ndata: {\"commandStatus\":\"Completed\",\"exitCode\":7}\n\n"),
        "{body}"
    );
}

#[tokio::test]
async fn a_resumed_stream_loses_and_repeats_nothing() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("chatty.sh", CHATTY).await;
    let id = start(&server, &device.machine_id, "chatty.sh").await;
    let whole = Seen::to_end(&mut server.client.follow_output(&id, 0, None)).await;
    let transcript = transcript(&server, &id).await;
    assert_eq!(whole.out, transcript.script_output);
    assert_eq!(whole.err, transcript.script_errors);
    // Stop after each number of events in turn, resume after the last id.
    for stop_after in [1, 2, whole.events / 2, whole.events - 1] {
        let mut first = server.client.follow_output(&id, 0, None);
        let mut seen = Seen::default();
        for _ in 0..stop_after {
            seen.add(next(&mut first).await.unwrap());
        }
        let last = first.last_id.clone();
        assert!(last.is_some(), "every event has an id");
        let mut rest = server.client.follow_output(&id, 0, last);
        while let Some(event) = next(&mut rest).await {
            seen.add(event);
        }
        assert_eq!(
            seen.out, whole.out,
            "stdout resumed after {stop_after} events"
        );
        assert_eq!(seen.err, whole.err);
        assert_eq!(seen.events, whole.events);
    }
    // An id that is not one of the stream's is refused in the envelope.
    let response = server
        .client
        .request(
            reqwest::Method::GET,
            &format!("/api/machineactions/{id}/commands/0/output"),
        )
        .header("accept", "text/event-stream")
        .header("last-event-id", "nonsense")
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "InvalidInput").await;
}

#[tokio::test]
async fn output_past_the_cap_is_counted_not_sent_and_the_note_ends_the_stream() {
    let server = TestServer::start().await;
    let mut device = server.enroll("capped").await;
    let mut config = server.agent_config(device.dir.path());
    config.output_cap_bytes = 1000;
    server.connect_with(&mut device, config).await;
    server.upload("chatty.sh", CHATTY).await;
    let id = start(&server, &device.machine_id, "chatty.sh").await;
    let seen = Seen::to_end(&mut server.client.follow_output(&id, 0, None)).await;
    let transcript = transcript(&server, &id).await;
    assert_eq!(seen.out, transcript.script_output);
    assert!(
        seen.out.contains("[output truncated:"),
        "the transcript's note comes last: {}",
        &seen.out[seen.out.len().saturating_sub(80)..]
    );
    let live: u64 = server
        .state
        .store
        .output_progress(&reach_proto::agent::CommandRef {
            action_id: id.clone(),
            index: 0,
        })
        .await
        .unwrap()
        .stdout_live;
    assert!(live <= 1000, "no more than the cap was sent live: {live}");
}

#[tokio::test]
async fn cancelling_while_following_ends_the_stream_with_what_ran() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("gated.sh", GATED).await;
    let id = start(&server, &device.machine_id, "gated.sh").await;
    let mut follow = server.client.follow_output(&id, 0, None);
    let mut seen = Seen::default();
    seen.add(next(&mut follow).await.unwrap());
    assert_eq!(seen.out, "first line\n");
    server.client.cancel(&id, "stop it").await.unwrap();
    while let Some(event) = next(&mut follow).await {
        seen.add(event);
    }
    let end = seen.end.expect("an end");
    assert_eq!(end.command_status, "Failed");
    assert_eq!(end.exit_code, None, "a killed script has no transcript");
    assert_eq!(seen.out, "first line\n", "what ran before the cancel stays");
}

#[tokio::test]
async fn a_batch_streams_every_machine_with_its_name_then_done() {
    let server = TestServer::start().await;
    let a = server.agent().await;
    let b = server.agent().await;
    server.upload("chatty.sh", CHATTY).await;
    let batch = server
        .client
        .create_batch(&CreateBatchRequest {
            commands: Some(vec![run_script("chatty.sh", None)]),
            comment: Some("sweep".into()),
            machines: Some(BatchTargets {
                ids: Some(vec![a.machine_id.clone(), b.machine_id.clone()]),
                ..BatchTargets::default()
            }),
            ..CreateBatchRequest::default()
        })
        .await
        .unwrap();
    let mut follow = server.client.follow_batch_output(&batch.id, 0, None);
    let mut out: HashMap<String, String> = HashMap::new();
    let mut ends: HashMap<String, OutputEnd> = HashMap::new();
    let mut done = false;
    while let Some(event) = next(&mut follow).await {
        match event {
            OutputEvent::Stdout(piece) => {
                let machine = piece.machine.machine_id.clone().unwrap();
                assert!(piece.machine.computer_dns_name.is_some());
                assert!(!ends.contains_key(&machine), "pieces come before the end");
                let text = out.entry(machine).or_default();
                assert_eq!(piece.offset as usize, text.len());
                text.push_str(&piece.text);
            }
            OutputEvent::Stderr(_) => {}
            OutputEvent::End(end) => {
                let machine = end.machine.machine_id.clone().unwrap();
                assert!(ends.insert(machine, end).is_none(), "one end each");
            }
            OutputEvent::Done => done = true,
        }
    }
    assert!(done, "the stream says every machine ended");
    assert_eq!(ends.len(), 2);
    for device in [&a, &b] {
        let end = &ends[&device.machine_id];
        assert_eq!(end.command_status, "Completed");
        let action_id = end.machine.action_id.clone().unwrap();
        let transcript = transcript(&server, &action_id).await;
        assert_eq!(out[&device.machine_id], transcript.script_output);
    }
}

#[tokio::test]
async fn a_follower_that_does_not_read_slows_nobody_and_catches_up() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("chatty.sh", CHATTY).await;
    let id = start(&server, &device.machine_id, "chatty.sh").await;
    // Opens the stream and reads nothing while the script runs.
    let mut idle = server.client.follow_output(&id, 0, None);
    let first = next(&mut idle).await.unwrap();
    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Succeeded);
    let other = Seen::to_end(&mut server.client.follow_output(&id, 0, None)).await;
    // The idle follower now reads everything, from the store.
    let mut seen = Seen::default();
    seen.add(first);
    while let Some(event) = next(&mut idle).await {
        seen.add(event);
    }
    assert_eq!((seen.out, seen.err), (other.out, other.err));
}

#[tokio::test]
async fn output_needs_the_results_permission_and_a_script() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("gated.sh", GATED).await;
    let id = start(&server, &device.machine_id, "gated.sh").await;
    let path = format!("/api/machineactions/{id}/commands/0/output");
    let reader = server.app("reader", &["Machine.Read"]).await;
    let response = reader
        .request(reqwest::Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "Forbidden").await;
    let (status, body) = server
        .get_raw(&format!("/api/machineactions/{id}/commands/1/output"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
    let (status, _) = server
        .get_raw("/api/machineactions/00000000-0000-0000-0000-000000000000/commands/0/output")
        .await;
    assert_eq!(status, 404);
    // Case-insensitive, as Defender's paths.
    let (status, _) = server
        .get_raw(&format!("/API/MachineActions/{id}/Commands/0/Output"))
        .await;
    assert_eq!(status, 200);
    std::fs::write(device.work_dir().join("gate"), b"").unwrap();
    server.wait_final(&id).await;
    let get = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![get_file("/etc/hostname")], "x"),
        )
        .await
        .unwrap();
    let (status, body) = server
        .get_raw(&format!("/api/machineactions/{}/commands/0/output", get.id))
        .await;
    assert_eq!(status, 400, "{body}");
    // Following is recorded in the audit trail, as a download is.
    let entries = server.client.audit_log(&[]).await.unwrap().value;
    assert!(
        entries
            .iter()
            .any(|e| e.target.as_deref() == Some(&format!("{id}/commands/0/output"))),
        "an audit entry for reading the output"
    );
}

#[tokio::test]
async fn without_live_output_the_stream_still_brings_the_whole_transcript() {
    let server = TestServer::start_with(|config| config.live_response.live_output_bytes = 0).await;
    let device = server.agent().await;
    server.upload("chatty.sh", CHATTY).await;
    let id = start(&server, &device.machine_id, "chatty.sh").await;
    let seen = Seen::to_end(&mut server.client.follow_output(&id, 0, None)).await;
    let transcript = transcript(&server, &id).await;
    assert_eq!(seen.out, transcript.script_output);
    assert_eq!(seen.err, transcript.script_errors);
    assert_eq!(seen.events, 3, "one piece per stream, then the end");
}

/// A device speaking the protocol by hand (a compromised agent): pieces
/// for another machine's command, out of order, too large, repeated or
/// faster than allowed are dropped, its connection stays, and at the end
/// the transcript, not the pieces, is what the output says.
#[tokio::test]
async fn a_device_adds_only_its_running_commands_output_in_order() {
    use super::agents::raw;
    use futures::SinkExt;
    use reach_proto::agent::{AgentMessage, CommandRef, Outcome, ServerMessage, Stream};
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start().await;
    let victim = server.agent().await;
    let device = server.enroll("raw").await;
    server.upload("gated.sh", GATED).await;
    let victims = start(&server, &victim.machine_id, "gated.sh").await;
    wait_for("the victim's first line", async || {
        let so_far = server.client.output(&victims, 0).await.unwrap();
        (so_far.stdout == "first line\n").then_some(())
    })
    .await;
    let own = start(&server, &device.machine_id, "gated.sh").await;
    let mut socket = raw::hello(&server.url, &bearer(&device), "p1").await;
    let ServerMessage::Run(run) = raw::next(&mut socket).await else {
        panic!("a Run");
    };
    let mut send = async |action: &str, offset: u64, text: String| {
        let piece = AgentMessage::Output {
            command: CommandRef {
                action_id: action.to_string(),
                index: 0,
            },
            stream: Stream::Stdout,
            offset,
            text,
        };
        socket
            .send(Message::text(serde_json::to_string(&piece).unwrap()))
            .await
            .unwrap();
    };
    send(&victims, 11, "forged\n".into()).await;
    send(&own, 5, "a hole\n".into()).await;
    send(&own, 0, "x".repeat(64 * 1024 + 1)).await;
    send(&own, 0, "hello\n".into()).await;
    send(&own, 0, "hello\n".into()).await;
    for i in 0..200u64 {
        send(&own, 6 + i, "a".into()).await;
    }
    // Its connection stays: the command's end is taken and acknowledged.
    let transcript = ScriptTranscript {
        script_name: "gated.sh".into(),
        exit_code: 0,
        script_output: format!("hello\n{}", "a".repeat(200)),
        script_errors: String::new(),
    };
    use base64::Engine;
    let finished = AgentMessage::Finished {
        command: run.command.clone(),
        outcome: Outcome::Completed {
            sha256: None,
            path: None,
        },
        result: Some(
            base64::engine::general_purpose::STANDARD
                .encode(serde_json::to_vec(&transcript).unwrap()),
        ),
    };
    socket
        .send(Message::text(serde_json::to_string(&finished).unwrap()))
        .await
        .unwrap();
    assert!(matches!(
        raw::next(&mut socket).await,
        ServerMessage::Ack(_)
    ));

    let stored = server
        .state
        .store
        .output_progress(&run.command)
        .await
        .unwrap()
        .stdout_live;
    assert!(
        (7..200).contains(&stored),
        "hello, then as many pieces as the allowance let through, in order: {stored}"
    );
    let pieces = server
        .state
        .store
        .output_after(&run.command, 0, reach_server::api::output::PAGE)
        .await
        .unwrap();
    let text: String = pieces.iter().map(|p| p.text.as_str()).collect();
    assert!(
        text.starts_with("hello\na") && text[6..].chars().all(|c| c == 'a'),
        "{text}"
    );
    let seen = Seen::to_end(&mut server.client.follow_output(&own, 0, None)).await;
    assert_eq!(
        seen.out, transcript.script_output,
        "the transcript completes it"
    );
    let victim_so_far = server.client.output(&victims, 0).await.unwrap();
    assert_eq!(victim_so_far.stdout, "first line\n", "nothing forged");
    std::fs::write(victim.work_dir().join("gate"), b"").unwrap();
}

/// Following a command that has not started (its device offline) waits,
/// then streams once the device connects and runs it.
#[tokio::test]
async fn a_stream_waits_for_a_command_not_started_yet() {
    let server = TestServer::start().await;
    let mut device = server.enroll("offline").await;
    server.upload("chatty.sh", CHATTY).await;
    let id = start(&server, &device.machine_id, "chatty.sh").await;
    let client = server.client.clone();
    let following = {
        let id = id.clone();
        tokio::spawn(async move { Seen::to_end(&mut client.follow_output(&id, 0, None)).await })
    };
    let waiting = server.client.output(&id, 0).await.unwrap();
    assert_eq!((waiting.stdout.as_str(), waiting.complete), ("", false));
    assert!(!following.is_finished(), "the stream waits");
    server.connect(&mut device).await;
    let seen = tokio::time::timeout(DEADLINE, following)
        .await
        .unwrap()
        .unwrap();
    let transcript = transcript(&server, &id).await;
    assert_eq!(seen.out, transcript.script_output);
    assert_eq!(seen.end.unwrap().command_status, "Completed");
}

/// The agent's connection drops while a script runs: after it reconnects
/// (sending its last pieces again, which the server already holds), the
/// script's further lines still arrive live, before it ends.
#[tokio::test]
async fn live_output_goes_on_after_the_agent_reconnects() {
    const TWO_GATES: &[u8] = b"#!/bin/sh\necho 'first line'\nwhile [ ! -f gate1 ]; do sleep 0.02; done\necho 'second line'\nwhile [ ! -f gate2 ]; do sleep 0.02; done\n";
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("gates.sh", TWO_GATES).await;
    let id = start(&server, &device.machine_id, "gates.sh").await;
    let so_far = async |wanted: &str| {
        wait_for(&format!("{wanted:?} while the script runs"), async || {
            let output = server.client.output(&id, 0).await.unwrap();
            (output.stdout == wanted).then_some(output.complete)
        })
        .await
    };
    assert!(!so_far("first line\n").await);
    let first = server.state.hub.connection_id(&device.machine_id);
    server
        .state
        .hub
        .send(&device.machine_id, reach_server::hub::HubEvent::Close);
    eventually("the agent reconnects", async || {
        let now = server.state.hub.connection_id(&device.machine_id);
        now.is_some() && now != first
    })
    .await;
    std::fs::write(device.work_dir().join("gate1"), b"").unwrap();
    assert!(
        !so_far("first line\nsecond line\n").await,
        "a live piece, before the end"
    );
    std::fs::write(device.work_dir().join("gate2"), b"").unwrap();
    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Succeeded);
}
