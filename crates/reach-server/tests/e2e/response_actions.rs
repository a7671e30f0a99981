//! Isolate and release through the API with in-process agents (whose
//! isolation is off: they run on the machine running the tests; the real
//! rules are exercised inside a network namespace by reach-agent's
//! `isolate_device` test): the checks before anything is stored, one
//! active isolation per machine beside live response, queueing for an
//! offline machine, cancel, `$filter` by type, the audit trail, an older
//! agent that is never sent work it cannot parse, and a response action
//! that runs while a script still does.

use reach_proto::agent::ServerMessage;
use reach_proto::api::{ActionStatus, CommandStatus};
use reach_server::testing::*;

use super::agents::raw;

async fn post(
    client: &reach_client::Client,
    path: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    client
        .request(reqwest::Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn isolate_checks_the_role_the_machine_then_the_body() {
    let server = TestServer::start().await;
    let device = server.enroll("offline").await;
    let machine = device.machine_id.clone();
    let path = format!("/api/machines/{machine}/isolate");
    let full = serde_json::json!({ "Comment": "contain", "IsolationType": "Full" });

    let reader = server.app("reader", &["Machine.Read.All"]).await;
    assert_error(post(&reader, &path, full.clone()).await, 403, "Forbidden").await;
    let live = server.app("live", &["Machine.LiveResponse"]).await;
    assert_error(post(&live, &path, full.clone()).await, 403, "Forbidden").await;
    let isolator = server.app("isolator", &["Machine.Isolate"]).await;
    let unknown = post(&isolator, "/api/machines/nope/isolate", full.clone()).await;
    assert_error(unknown, 404, "ResourceNotFound").await;
    for (body, code, says) in [
        (serde_json::json!({}), "MissingRequiredParameter", "Comment"),
        (
            serde_json::json!({ "Comment": "  ", "IsolationType": "Full" }),
            "MissingRequiredParameter",
            "Comment",
        ),
        (
            serde_json::json!({ "Comment": "x", "IsolationType": "Partial" }),
            "InvalidRequestBody",
            "Full, Selective",
        ),
        (
            serde_json::json!({ "Comment": "x", "IsolationType": "UnManagedDevice" }),
            "BadRequest",
            "not supported by Reach",
        ),
    ] {
        let refused = post(&isolator, &path, body).await;
        let body = assert_error(refused, 400, code).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    assert!(server.client.actions(&[]).await.unwrap().value.is_empty());

    // Accepted for an offline machine: queued, and the machine shows it.
    let created = isolator.isolate(&machine, "contain", "full").await.unwrap();
    assert_eq!(created.kind, "Isolate");
    assert_eq!(created.scope.as_deref(), Some("Full"));
    assert_eq!(created.status, ActionStatus::Pending);
    assert_eq!(created.commands.len(), 1);
    assert_eq!(created.commands[0].command.kind, "Isolate");
    let shown = server.client.machine(&machine).await.unwrap();
    assert_eq!(shown.isolation_state, "Pending");
    let pending = server
        .client
        .machines(&[("$filter", "isolationState eq 'Pending'")])
        .await
        .unwrap();
    assert_eq!(pending.value.len(), 1);

    // One isolation at a time per machine (a release too), while live
    // response is its own: it is still accepted.
    for again in [
        post(&isolator, &path, full.clone()).await,
        post(
            &isolator,
            &format!("/api/machines/{machine}/unisolate"),
            serde_json::json!({ "Comment": "x" }),
        )
        .await,
    ] {
        assert_error(again, 400, "ActiveRequestAlreadyExists").await;
    }
    server.upload("x.sh", b"true\n").await;
    let script = server
        .client
        .run_live_response(&machine, &request(vec![run_script("x.sh", None)], "look"))
        .await
        .unwrap();
    assert_eq!(script.kind, "LiveResponse");

    // Listed by type; cancelled while it waits.
    let isolations = server
        .client
        .actions(&[("$filter", "type eq 'Isolate'")])
        .await
        .unwrap();
    assert_eq!(isolations.value.len(), 1);
    assert_eq!(isolations.value[0].id, created.id);
    let cancelled = isolator
        .cancel(&created.id, "changed my mind")
        .await
        .unwrap();
    assert_eq!(cancelled.status, ActionStatus::Cancelled);
    let shown = server.client.machine(&machine).await.unwrap();
    assert_eq!(shown.isolation_state, "NotIsolated");

    // The trail says who isolated what, with which comment and type.
    let trail = server.client.audit_log(&[]).await.unwrap().value;
    let entry = trail
        .iter()
        .find(|e| {
            e.target.as_deref() == Some(created.id.as_str()) && e.operation.ends_with("/isolate")
        })
        .expect("the isolation's audit entry");
    assert_eq!(entry.machine_id.as_deref(), Some(machine.as_str()));
    assert_eq!(entry.details["comment"], "contain");
    assert_eq!(entry.details["isolationType"], "Full");
}

#[tokio::test]
async fn an_agent_with_isolation_off_fails_it_saying_so_even_while_a_script_runs() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    let machine = &device.machine_id;
    let gate = device.dir.path().join("gate");
    server
        .upload(
            "gated.sh",
            b"echo started\nwhile [ ! -e \"$1\" ]; do sleep 0.05; done\n",
        )
        .await;
    let script = server
        .client
        .run_live_response(
            machine,
            &request(
                vec![run_script("gated.sh", Some(&gate.display().to_string()))],
                "slow",
            ),
        )
        .await
        .unwrap();
    server
        .wait_until(&script.id, |a| {
            a.commands[0].command_status == CommandStatus::InProgress
        })
        .await;
    // The isolation does not wait behind the script.
    let isolate = server
        .client
        .isolate(machine, "contain", "Full")
        .await
        .unwrap();
    let done = server.wait_final(&isolate.id).await;
    assert_eq!(done.status, ActionStatus::Failed);
    let errors = done.commands[0].errors.join(" ");
    assert!(
        errors.contains("Isolation is turned off on this agent"),
        "{errors}"
    );
    let running = server.client.action(&script.id).await.unwrap();
    assert_eq!(
        running.status,
        ActionStatus::InProgress,
        "the script still runs"
    );
    assert_eq!(
        server
            .client
            .machine(machine)
            .await
            .unwrap()
            .isolation_state,
        "NotIsolated"
    );
    // A release of a device that is not isolated succeeds.
    let release = server.client.unisolate(machine, "clean").await.unwrap();
    assert_eq!(release.kind, "Unisolate");
    let done = server.wait_final(&release.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:?}");
    std::fs::write(&gate, b"").unwrap();
    assert_eq!(
        server.wait_final(&script.id).await.status,
        ActionStatus::Succeeded
    );
}

#[tokio::test]
async fn an_older_agent_is_never_sent_work_it_cannot_parse() {
    let server = TestServer::start().await;
    let device = server.enroll("old").await;
    // A Hello without capabilities: an agent from before them.
    let mut socket = raw::hello(&server.url, &bearer(&device), "old-agent").await;
    eventually("the old agent is connected", async || {
        server.state.hub.is_connected(&device.machine_id)
    })
    .await;
    let isolate = server
        .client
        .isolate(&device.machine_id, "contain", "Full")
        .await
        .unwrap();
    let done = server.wait_final(&isolate.id).await;
    assert_eq!(done.status, ActionStatus::Failed);
    let errors = done.commands[0].errors.join(" ");
    assert!(errors.contains("cannot run Isolate: update it"), "{errors}");
    // The connection stays, and live response still reaches it.
    server.upload("x.sh", b"true\n").await;
    let script = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("x.sh", None)], "still here"),
        )
        .await
        .unwrap();
    match raw::next(&mut socket).await {
        ServerMessage::Run(assignment) => {
            assert_eq!(assignment.command.action_id, script.id);
        }
        other => panic!("expected the script, got {other:?}"),
    }
}

#[tokio::test]
async fn offboarding_revokes_the_machine_and_its_agent_deletes_its_credential() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    let machine = &device.machine_id;
    let state = device.dir.path().join("state.json");
    let isolator = server.app("isolator", &["Machine.Isolate"]).await;
    let refused = isolator
        .request(
            reqwest::Method::POST,
            &format!("/api/machines/{machine}/offboard"),
        )
        .json(&serde_json::json!({ "Comment": "bye" }))
        .send()
        .await
        .unwrap();
    assert_error(refused, 403, "Forbidden").await;
    let offboarder = server.app("offboarder", &["Machine.Offboard"]).await;
    let action = offboarder
        .offboard(machine, "decommissioned")
        .await
        .unwrap();
    assert_eq!(action.kind, "Offboard");
    let done = server.wait_final(&action.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:?}");
    eventually("the agent deleted its credential and stopped", async || {
        device.agent_ended() && !state.exists()
    })
    .await;
    assert!(device.dir.path().join("offboarded").exists());
    let note = std::fs::read_to_string(device.dir.path().join("offboarded")).unwrap();
    assert!(note.contains("seconds since 1970"), "{note}");
    assert!(!server.state.hub.is_connected(machine));
    let again = offboarder.offboard(machine, "again").await.unwrap();
    assert_eq!(
        server.wait_final(&again.id).await.status,
        ActionStatus::Succeeded,
        "offboarding an offboarded machine is already done"
    );
}

#[tokio::test]
async fn an_offline_machine_is_offboarded_at_once_and_its_agent_learns_it_when_back() {
    let server = TestServer::start().await;
    let mut device = server.enroll("offline").await;
    let bearer = bearer(&device);
    let action = server
        .client
        .offboard(&device.machine_id, "lost laptop")
        .await
        .unwrap();
    assert_eq!(action.status, ActionStatus::Succeeded, "{action:?}");
    assert_eq!(action.commands[0].command_status, CommandStatus::Completed);
    // The credential is answered 410, with the reason.
    let url = format!("{}/agent/v1/connect", server.url);
    let gone = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_error(gone, 410, "MachineOffboarded").await;
    // The agent, back, deletes its credential and stops by itself.
    let config = server.agent_config(device.dir.path());
    let stopped = tokio::time::timeout(
        DEADLINE,
        reach_agent::run(config.clone(), Default::default()),
    )
    .await
    .expect("the agent stops by itself");
    stopped.unwrap();
    assert!(!config.state_path.exists());
    // Started again, it stops at once, saying so.
    tokio::time::timeout(DEADLINE, reach_agent::run(config, Default::default()))
        .await
        .unwrap()
        .unwrap();
    device.stop().await;
}
