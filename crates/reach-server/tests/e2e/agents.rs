//! The agent-facing endpoints: enrolment, credentials, and isolation
//! between machines. Errors here use the same envelope as the API.

use reach_server::testing::*;

#[tokio::test]
async fn enrolment_needs_a_valid_token_and_credentials_are_checked() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let bad = http
        .post(format!("{}/agent/v1/enroll", server.url))
        .json(&serde_json::json!({
            "enrollment_token": "rch_enr_wrong",
            "info": {"hostname": "h", "os_platform": "Linux", "os_version": "1", "os_architecture": "64-bit", "agent_version": "0"}
        }))
        .send()
        .await
        .unwrap();
    assert_error(bad, 401, "Unauthorized").await;
    let addresses: Vec<_> = (0..65)
        .map(|i| serde_json::json!({"ip_address": format!("10.0.0.{i}")}))
        .collect();
    let flood = http
        .post(format!("{}/agent/v1/enroll", server.url))
        .json(&serde_json::json!({
            "enrollment_token": server.enrollment_token,
            "info": {"hostname": "h", "os_platform": "Linux", "os_version": "1", "os_architecture": "64-bit",
                     "agent_version": "0", "ip_addresses": addresses}
        }))
        .send()
        .await
        .unwrap();
    assert_error(flood, 400, "InvalidInput").await;
    let device = server.enroll("d").await;
    let connect = format!("{}/agent/v1/connect", server.url);
    assert_error(
        http.get(&connect).send().await.unwrap(),
        401,
        "Unauthorized",
    )
    .await;
    let forged = format!("{}.not-the-secret", device.machine_id);
    assert_error(
        http.get(&connect).bearer_auth(forged).send().await.unwrap(),
        401,
        "Unauthorized",
    )
    .await;
    let no_upgrade = http
        .get(&connect)
        .bearer_auth(bearer(&device))
        .send()
        .await
        .unwrap();
    assert_error(no_upgrade, 400, "BadRequest").await;
}

#[tokio::test]
async fn a_machine_cannot_reach_another_machines_commands() {
    let server = TestServer::start().await;
    let a = server.enroll("a").await;
    let b = server.enroll("b").await;
    server.upload("tool.bin", b"secret tool").await;
    let created = server
        .client
        .run_live_response(&a.machine_id, &request(vec![put_file("tool.bin")], "for a"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let payload = format!("{}/agent/v1/commands/{}/0/payload", server.url, created.id);
    let response = http
        .get(&payload)
        .bearer_auth(bearer(&b))
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "ResourceNotFound").await;
    let result = format!("{}/agent/v1/commands/{}/0/result", server.url, created.id);
    let response = http
        .put(&result)
        .bearer_auth(bearer(&b))
        .body("forged")
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "ResourceNotFound").await;
    let bad_index = format!(
        "{}/agent/v1/commands/{}/zero/payload",
        server.url, created.id
    );
    let response = http
        .get(&bad_index)
        .bearer_auth(bearer(&a))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "InvalidInput").await;
    // Machine a itself may not fetch it before the command was handed to it.
    let response = http
        .get(&payload)
        .bearer_auth(bearer(&a))
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "BadRequest").await;
}

#[tokio::test]
async fn a_revoked_machine_is_disconnected_and_cannot_return() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server
        .state
        .store
        .revoke_machine(&device.machine_id)
        .await
        .unwrap();
    eventually("the revoked agent's connection closing", async || {
        !server.state.hub.is_connected(&device.machine_id)
    })
    .await;
    let machine = server.client.machine(&device.machine_id).await.unwrap();
    assert_eq!(machine.health_status, "Inactive");
    let refused = reqwest::Client::new()
        .get(format!("{}/agent/v1/connect", server.url))
        .bearer_auth(bearer(&device))
        .send()
        .await
        .unwrap();
    assert_error(refused, 401, "Unauthorized").await;
    // Its queued work stays queued, never handed to the revoked agent.
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![get_file("/etc/hostname")], "after revoke"),
        )
        .await
        .unwrap();
    assert!(!server.state.hub.is_connected(&device.machine_id));
    assert_status(
        &server.client.action(&created.id).await.unwrap(),
        reach_proto::api::ActionStatus::Pending,
    );
}

/// A raw protocol peer: the agent's WebSocket, driven by hand.
pub mod raw {
    use futures::{SinkExt, StreamExt};
    use reach_proto::agent::{AgentMessage, ServerMessage};
    use tokio_tungstenite::tungstenite::Message;

    pub use reach_server::testing::AgentSocket as Socket;

    /// Connects as the device holding `bearer` and says Hello as `instance`.
    pub async fn hello(server: &str, bearer: &str, instance: &str) -> Socket {
        let mut socket = reach_server::testing::agent_socket(server, bearer).await;
        let hello = AgentMessage::Hello {
            info: reach_agent::system::machine_info(),
            running: vec![],
            instance: instance.to_string(),
            // An agent from before capabilities: live response only.
            capabilities: vec![],
            isolated: None,
        };
        socket
            .send(Message::text(serde_json::to_string(&hello).unwrap()))
            .await
            .unwrap();
        socket
    }

    /// The next message from the server that is not a Welcome.
    pub async fn next(socket: &mut Socket) -> ServerMessage {
        loop {
            let message = tokio::time::timeout(super::DEADLINE, socket.next())
                .await
                .expect("a message from the server")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                let parsed: ServerMessage = serde_json::from_str(&text).unwrap();
                if !matches!(parsed, ServerMessage::Welcome { .. }) {
                    return parsed;
                }
            }
        }
    }
}

#[tokio::test]
async fn a_command_lost_in_transit_is_handed_to_the_same_agent_again() {
    let server = TestServer::start().await;
    let device = server.enroll("raw").await;
    server.upload("x.sh", b"true\n").await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("x.sh", None)], "transit"),
        )
        .await
        .unwrap();
    // The Run arrives, and the connection drops before the agent takes it.
    let mut socket = raw::hello(&server.url, &bearer(&device), "process-1").await;
    let reach_proto::agent::ServerMessage::Run(first) = raw::next(&mut socket).await else {
        panic!("expected Run");
    };
    drop(socket);
    // The same process reconnects holding nothing: it gets the command again.
    let mut socket = raw::hello(&server.url, &bearer(&device), "process-1").await;
    let reach_proto::agent::ServerMessage::Run(again) = raw::next(&mut socket).await else {
        panic!("expected Run again");
    };
    assert_eq!(again.command, first.command);
    let action = server.client.action(&created.id).await.unwrap();
    assert_eq!(action.status, reach_proto::api::ActionStatus::InProgress);
    drop(socket);
    // A restarted process (another instance) may have run part of it: it fails.
    let _socket = raw::hello(&server.url, &bearer(&device), "process-2").await;
    let done = server.wait_final(&created.id).await;
    assert_eq!(done.status, reach_proto::api::ActionStatus::Failed);
    assert_eq!(
        done.commands[0].errors,
        vec!["The agent restarted while the command was running".to_string()]
    );
}

#[tokio::test]
async fn a_node_at_its_connection_limit_refuses_more_agents_clearly() {
    let server = TestServer::start_with(|config| config.agents.max_connections = 1).await;
    let first = server.agent().await;
    let second = server.enroll("second").await;
    let url = format!("{}/agent/v1/connect", server.url.replacen("http", "ws", 1));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", bearer(&second)).parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "ServiceUnavailable");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("maximum of 1 agent connections")
            );
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    // The connected agent is unaffected, and may reconnect in its own place.
    assert!(server.state.hub.is_connected(&first.machine_id));
}

/// A deflate segment of `raw` and its description as chunk `n`, announced
/// as the agent does (by CRC-32), with the segment's own hash.
fn chunk(n: u32, raw: &[u8]) -> (reach_proto::agent::ChunkInfo, bytes::Bytes) {
    use sha2::Digest;
    let mut compress = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut segment = Vec::with_capacity(raw.len() + 1024);
    compress
        .compress_vec(raw, &mut segment, flate2::FlushCompress::Sync)
        .unwrap();
    assert_eq!(compress.total_in() as usize, raw.len());
    let info = reach_proto::agent::ChunkInfo {
        n,
        raw_size: raw.len() as u64,
        raw_crc32: Some(crc32fast::hash(raw)),
        raw_sha256: String::new(),
        stored_size: segment.len() as u64,
        stored_sha256: hex::encode(sha2::Sha256::digest(&segment)),
    };
    (info, bytes::Bytes::from(segment))
}

/// A GetFile of `path` handed to a device driven by hand: the action, the
/// device's socket, the command it was handed, and its transfer client.
async fn getfile_on_a_raw_agent(
    server: &TestServer,
    path: &str,
) -> (
    reach_proto::api::MachineAction,
    raw::Socket,
    reach_proto::agent::Assignment,
    reach_client::AgentClient,
) {
    let device = server.enroll("raw").await;
    let created = server
        .client
        .run_live_response(&device.machine_id, &request(vec![get_file(path)], "raw"))
        .await
        .unwrap();
    let mut socket = raw::hello(&server.url, &bearer(&device), "process-1").await;
    let reach_proto::agent::ServerMessage::Run(run) = raw::next(&mut socket).await else {
        panic!("expected Run");
    };
    let agent = reach_client::AgentClient::new(&server.url, &bearer(&device), None);
    (created, socket, run, agent)
}

#[tokio::test]
async fn getfile_chunks_are_checked_as_they_arrive_in_any_order() {
    use futures::SinkExt;
    use sha2::Digest;
    let server = TestServer::start().await;
    let (created, mut socket, run, agent) =
        getfile_on_a_raw_agent(&server, "/var/log/evidence.log").await;
    let (action, index) = (run.command.action_id.clone(), run.command.index);
    let parts = [
        b"first chunk of the log\n".repeat(100),
        b"the rest\n".repeat(50),
    ];

    // A segment whose bytes are not the ones announced is refused on arrival:
    // by CRC-32, or by SHA-256 where one is announced.
    let (honest, segment) = chunk(0, &parts[0]);
    let mut wrong_crc = honest.clone();
    wrong_crc.raw_crc32 = Some(crc32fast::hash(b"something else"));
    let mut wrong_sha = honest.clone();
    wrong_sha.raw_sha256 = hex::encode(sha2::Sha256::digest(b"something else"));
    for lying in [wrong_crc, wrong_sha] {
        let err = agent
            .put_chunk(&action, index, &lying, segment.clone())
            .await
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
        assert!(err.to_string().contains("does not hold"), "{err}");
    }
    // A chunk announced by neither is refused before its bytes are read.
    let mut unannounced = honest.clone();
    unannounced.raw_crc32 = None;
    let err = agent
        .put_chunk(&action, index, &unannounced, segment)
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    assert!(err.to_string().contains("x-reach-raw-crc32"), "{err}");
    // Bytes that are not deflate at all are refused too, and so is a gzip
    // segment, what agents sent before segments, with what to do about it.
    let mut garbage = chunk(0, &parts[0]).0;
    garbage.stored_sha256 = hex::encode(sha2::Sha256::digest(b"not deflate"));
    let err = agent
        .put_chunk(
            &action,
            index,
            &garbage,
            bytes::Bytes::from_static(b"not deflate"),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not a valid deflate segment"),
        "{err}"
    );
    let mut old = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut old, &parts[0]).unwrap();
    let old = old.finish().unwrap();
    let mut legacy = chunk(0, &parts[0]).0;
    legacy.stored_sha256 = hex::encode(sha2::Sha256::digest(&old));
    legacy.stored_size = old.len() as u64;
    let err = agent
        .put_chunk(&action, index, &legacy, bytes::Bytes::from(old))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    assert!(err.to_string().contains("upgrade the agent"), "{err}");
    // A small segment that inflates far past the size it announces is
    // refused once past that size, not after inflating it all.
    let (mut bomb, segment) = chunk(0, &vec![0u8; 48 * 1024 * 1024]);
    bomb.raw_size = 1024 * 1024;
    let err = agent
        .put_chunk(&action, index, &bomb, segment)
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    assert!(
        err.to_string()
            .contains("decompresses to more than the 1048576 bytes"),
        "{err}"
    );
    assert!(agent.chunks(&action, index).await.unwrap().is_empty());

    // Chunks out of order: the whole file is checked by reading them back.
    // The segment's own hash is optional, and a chunk may be announced by
    // its SHA-256 instead of its CRC-32 (chunk 1 comes so).
    for n in [1u32, 0] {
        let (mut info, segment) = chunk(n, &parts[n as usize]);
        if n == 1 {
            info.stored_sha256.clear();
            info.raw_crc32 = None;
            info.raw_sha256 = hex::encode(sha2::Sha256::digest(&parts[1]));
        }
        agent
            .put_chunk(&action, index, &info, segment)
            .await
            .unwrap();
    }
    let whole = parts.concat();
    let sha256 = hex::encode(sha2::Sha256::digest(&whole));
    let wrong = reach_proto::agent::CompleteChunks {
        chunks: 2,
        raw_size: whole.len() as u64,
        raw_sha256: hex::encode(sha2::Sha256::digest(b"another file")),
    };
    let err = agent.complete(&action, index, &wrong).await.unwrap_err();
    assert!(err.to_string().contains("not the file's"), "{err}");
    let complete = reach_proto::agent::CompleteChunks {
        chunks: 2,
        raw_size: whole.len() as u64,
        raw_sha256: sha256.clone(),
    };
    agent.complete(&action, index, &complete).await.unwrap();
    let finished = reach_proto::agent::AgentMessage::Finished {
        command: run.command.clone(),
        outcome: reach_proto::agent::Outcome::Completed {
            sha256: Some(sha256),
            path: None,
        },
        result: None,
    };
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            serde_json::to_string(&finished).unwrap(),
        ))
        .await
        .unwrap();
    let done = server.wait_final(&created.id).await;
    assert_eq!(done.status, reach_proto::api::ActionStatus::Succeeded);
    assert_eq!(gunzip(&server.result(&created.id, 0).await), whole);
}

#[tokio::test]
async fn the_chunks_of_a_cancelled_getfile_are_deleted_then() {
    let server = TestServer::start().await;
    let (created, _socket, run, agent) = getfile_on_a_raw_agent(&server, "/var/log/big.log").await;
    let (action, index) = (run.command.action_id.clone(), run.command.index);
    let (info, segment) = chunk(0, &b"part of a big file\n".repeat(1000));
    agent
        .put_chunk(&action, index, &info, segment)
        .await
        .unwrap();
    let stored = server.dir.path().join(format!(
        "server/blobs/results/{action}/{index}/segments/00000000"
    ));
    assert!(stored.exists(), "{}", stored.display());

    server
        .client
        .cancel(&created.id, "wrong file")
        .await
        .unwrap();
    let store = server.state.store.clone();
    eventually("the chunks being deleted", async || {
        !stored.exists() && store.list_chunks(&run.command).await.unwrap().is_empty()
    })
    .await;
    let (_, trail) = server
        .get_raw("/api/auditlog?$filter=operation+eq+'PartialResultDeleted'")
        .await;
    assert_eq!(trail["value"].as_array().unwrap().len(), 1, "{trail}");
}
