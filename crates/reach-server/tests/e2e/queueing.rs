//! Offline devices, the queue TTL, one action per machine, the tenant's
//! limit of running actions and each app's queue, and an agent restart in
//! the middle of a command.

use reach_proto::api::{ActionStatus, CommandStatus, roles};

use reach_server::admin;
use reach_server::testing::eventually;

use reach_server::testing::*;

#[tokio::test]
async fn an_offline_device_keeps_its_action_pending_until_it_connects() {
    let server = TestServer::start().await;
    let mut device = server.enroll("offline").await;
    server.upload("ok.sh", b"echo queued\n").await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("ok.sh", None)], "queued"),
        )
        .await
        .unwrap();
    let machine = server.client.machine(&device.machine_id).await.unwrap();
    assert_eq!(machine.health_status, "Inactive");
    assert_status(
        &server.client.action(&created.id).await.unwrap(),
        ActionStatus::Pending,
    );

    server.connect(&mut device).await;
    let done = server.wait_final(&created.id).await;
    assert_status(&done, ActionStatus::Succeeded);
    let machine = server.client.machine(&device.machine_id).await.unwrap();
    assert_eq!(machine.health_status, "Active");
}

#[tokio::test]
async fn a_queued_action_times_out_after_the_queue_ttl() {
    let server = TestServer::start_with(|c| c.live_response.queue_ttl_secs = 1).await;
    let device = server.enroll("offline").await;
    server.upload("ok.sh", b"echo never\n").await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("ok.sh", None)], "too late"),
        )
        .await
        .unwrap();
    let done = server.wait_final(&created.id).await;
    assert_status(&done, ActionStatus::TimeOut);
    assert_eq!(done.commands[0].command_status, CommandStatus::Created);
}

#[tokio::test]
async fn one_live_response_action_per_machine_at_a_time() {
    let server = TestServer::start().await;
    let device = server.enroll("offline").await;
    server.upload("ok.sh", b"echo\n").await;
    let body = request(vec![run_script("ok.sh", None)], "first");
    let first = server
        .client
        .run_live_response(&device.machine_id, &body)
        .await
        .unwrap();
    let second = server
        .client
        .request(
            reqwest::Method::POST,
            &format!("/api/machines/{}/runliveresponse", device.machine_id),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let error = assert_error(second, 400, "ActiveRequestAlreadyExists").await;
    assert_eq!(error["error"]["message"], "Action is already in progress");
    server.client.cancel(&first.id, "make room").await.unwrap();
    server
        .client
        .run_live_response(&device.machine_id, &body)
        .await
        .unwrap();
}

#[tokio::test]
async fn one_app_queueing_for_offline_machines_cannot_lock_the_tenant_out() {
    let server = TestServer::start_with(|c| {
        c.limits.active_actions_per_tenant = 2;
        c.limits.pending_actions_per_app = 3;
    })
    .await;
    let store = server.state.store.as_ref();
    let collector = admin::create_app(
        store,
        &server.tenant_id,
        "collector",
        vec![roles::LIVE_RESPONSE_BASIC.to_string()],
    )
    .await
    .unwrap();
    let collecting = server.login(&collector).await;
    let get = request(vec![get_file("/var/log/syslog")], "collect");
    // The collect-only app queues GetFile on offline machines, up to its own limit...
    for i in 0..3 {
        let offline = server.enroll(&format!("offline-{i}")).await;
        collecting
            .run_live_response(&offline.machine_id, &get)
            .await
            .unwrap();
    }
    let fourth = server.enroll("offline-3").await;
    let refused = collecting
        .run_live_response(&fourth.machine_id, &get)
        .await
        .unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(429));
    assert!(
        refused.to_string().contains("waiting for their devices"),
        "{refused}"
    );
    // ...and the rest of the tenant works on: its queue is not theirs.
    server.upload("wait.sh", b"sleep 30\n").await;
    let script = request(vec![run_script("wait.sh", None)], "running");
    let mut running = Vec::new();
    for _ in 0..2 {
        let device = server.agent().await;
        let created = server
            .client
            .run_live_response(&device.machine_id, &script)
            .await
            .unwrap();
        server
            .wait_until(&created.id, |a| a.status == ActionStatus::InProgress)
            .await;
        running.push((device, created));
    }
    // Two running on devices: the tenant's limit of concurrent sessions.
    let third = server.enroll("third").await;
    let response = server
        .client
        .request(
            reqwest::Method::POST,
            &format!("/api/machines/{}/runliveresponse", third.machine_id),
        )
        .json(&script)
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("retry-after").is_some());
    let body = assert_error(response, 429, "TooManyRequests").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("running on devices"),
        "{body}"
    );
    for (_, created) in &running {
        server.client.cancel(&created.id, "done").await.unwrap();
    }

    // An operator lists and cancels the app's queue.
    let pending = admin::pending_actions(store, &collector.client_id)
        .await
        .unwrap();
    assert_eq!(pending.len(), 3);
    let cancelled = admin::cancel_pending(store, &collector.client_id, "lockout")
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 3);
    let action = server.client.action(&cancelled[0]).await.unwrap();
    assert_eq!(action.status, ActionStatus::Cancelled);
    assert_eq!(action.cancellation_requestor.as_deref(), Some("operator"));
    collecting
        .run_live_response(&fourth.machine_id, &get)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_agent_restart_fails_the_command_it_was_running() {
    let server = TestServer::start().await;
    let mut device = server.agent().await;
    server
        .upload("sleeper.sh", b"echo started > started.txt\nsleep 300\n")
        .await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("sleeper.sh", None)], "restart"),
        )
        .await
        .unwrap();
    server
        .wait_until(&created.id, |a| {
            a.commands[0].command_status == CommandStatus::InProgress
        })
        .await;
    let started = device.work_dir().join("started.txt");
    eventually("the script starting", async || started.exists()).await;
    device.stop().await;
    server.connect(&mut device).await;
    let done = server.wait_final(&created.id).await;
    assert_status(&done, ActionStatus::Failed);
    assert_eq!(
        done.commands[0].errors,
        ["The agent restarted while the command was running"]
    );
}

#[tokio::test]
async fn a_command_whose_agent_never_returns_fails_when_its_lease_runs_out() {
    let server = TestServer::start_with(|c| {
        c.live_response.script_timeout_secs = 1;
        c.live_response.lease_grace_secs = 1;
    })
    .await;
    let mut device = server.agent().await;
    server
        .upload("sleeper.sh", b"echo started > started.txt\nsleep 300\n")
        .await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("sleeper.sh", None)], "lease"),
        )
        .await
        .unwrap();
    let started = device.work_dir().join("started.txt");
    eventually("the script starting", async || started.exists()).await;
    device.stop().await; // and it never comes back
    let done = server.wait_final(&created.id).await;
    assert_status(&done, ActionStatus::Failed);
    assert_eq!(
        done.commands[0].errors,
        ["The agent did not report a result within the command's timeout plus 1 s"]
    );
}

#[tokio::test]
async fn an_action_whose_wake_up_was_lost_still_starts() {
    use reach_proto::agent::Work;
    use reach_proto::api::{Command, CommandParam};
    use reach_server::store::{ActionLimits, NewAction, NewCommand};

    let server = TestServer::start_with(|c| c.live_response.rewake_after_secs = 1).await;
    let device = server.agent().await;
    std::fs::create_dir_all(device.work_dir()).unwrap();
    let path = device.work_dir().join("evidence.log");
    // One action first: the connection is then past its first claim, idle,
    // and only a wake-up makes it claim again.
    let first = server
        .run(&device.machine_id, vec![get_file(path.to_str().unwrap())])
        .await;
    assert_status(&first, ActionStatus::Failed);
    std::fs::write(&path, b"collected after a lost wake-up").unwrap();
    // Created straight in the store: what a node sees when the notification
    // that should have woken this machine's connection never arrived.
    let path = path.to_str().unwrap().to_string();
    let action = NewAction {
        id: "lost-wake-up".into(),
        tenant_id: server.tenant_id.clone(),
        machine_id: device.machine_id.clone(),
        requestor: "another node".into(),
        requestor_id: "app:another-node".into(),
        requestor_comment: None,
        kind: reach_proto::api::ActionType::LiveResponse,
        commands: vec![NewCommand {
            command: Command {
                kind: "GetFile".into(),
                params: vec![CommandParam {
                    key: "Path".into(),
                    value: path.clone(),
                }],
            },
            work: Work::GetFile { path },
            timeout_secs: 60,
        }],
        now: reach_server::time::Micros::now(),
    };
    let limits = ActionLimits {
        running_per_tenant: 25,
        pending_per_requestor: 250,
    };
    server
        .state
        .store
        .create_action(&action, limits)
        .await
        .unwrap();
    // The sweeper wakes the connection again once the action waited.
    let done = server.wait_final("lost-wake-up").await;
    assert_status(&done, ActionStatus::Succeeded);
    assert_eq!(
        gunzip(&server.result("lost-wake-up", 0).await),
        b"collected after a lost wake-up"
    );
}
