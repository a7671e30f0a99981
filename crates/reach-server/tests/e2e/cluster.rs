//! Two server nodes sharing one PostgreSQL database and one S3 bucket (the
//! servers named by REACH_TEST_DATABASE_URL and REACH_TEST_S3_URL; without
//! them these tests print a skip notice). The agent is connected to node B
//! while analysts call node A; results come back through presigned S3 links;
//! node B stops mid-script and the work goes on through node A.

use reach_client::ClientError;
use reach_proto::api::{ActionStatus, CommandStatus};
use reach_server::testing;

use reach_server::testing::*;

/// Node A on fresh PostgreSQL and S3 storage, or None (skip notice printed).
async fn cluster_node() -> Option<TestServer> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,sqlx=warn")
        .with_test_writer()
        .try_init();
    let database = testing::fresh_postgres().await?;
    let objects = testing::fresh_s3_prefix()?;
    Some(
        TestServer::start_with(|config| {
            config.database_url = database;
            config.object_store_url = objects;
        })
        .await,
    )
}

#[tokio::test]
async fn an_action_submitted_on_one_node_runs_through_another() {
    let Some(mut node_a) = cluster_node().await else {
        return;
    };
    let node_b = node_a.another_node().await;
    // The agent prefers node B; node A is its fallback.
    let mut device = node_a.enroll("agent").await;
    let mut config = node_a.agent_config(device.dir.path());
    config.servers = vec![node_b.url.clone(), node_a.url.clone()];
    node_b.connect_with(&mut device, config).await;
    assert!(!node_a.state.hub.is_connected(&device.machine_id));

    // A 12 MiB file to collect (two chunks), and a script, uploaded to node A.
    let evidence = device.dir.path().join("evidence.log");
    let lines: String = (0..400_000)
        .map(|i| format!("{i:08} sshd[42]: Accepted publickey for root\n"))
        .collect();
    std::fs::write(&evidence, lines.as_bytes()).unwrap();
    node_a
        .upload("hello.sh", b"echo hello from $(hostname)\n")
        .await;
    let done = node_a
        .run(
            &device.machine_id,
            vec![
                run_script("hello.sh", None),
                get_file(evidence.to_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:#?}");

    // The collected file is served by the object store through a presigned link.
    let endpoint = std::env::var("AWS_ENDPOINT").unwrap();
    let link = node_a.client.download_link(&done.id, 1).await.unwrap();
    assert!(link.starts_with(&endpoint), "{link}");
    assert!(link.contains("X-Amz-Signature="), "{link}");
    assert!(link.contains("X-Amz-Expires=1800"), "30 minutes: {link}");
    let collected = reqwest::get(&link).await.unwrap();
    assert_eq!(collected.status(), 200);
    assert_eq!(gunzip(&collected.bytes().await.unwrap()), lines.as_bytes());
    // A transcript that came with the outcome is kept in the database and
    // served by any node, through a link any node made.
    let transcript_link = node_b.client.download_link(&done.id, 0).await.unwrap();
    assert!(
        transcript_link.starts_with(&node_b.url),
        "{transcript_link}"
    );
    let transcript_link = transcript_link.replacen(&node_b.url, &node_a.url, 1);
    let transcript: serde_json::Value = reqwest::get(&transcript_link)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        transcript["script_output"]
            .as_str()
            .unwrap()
            .starts_with("hello from")
    );

    // A script waits for a trigger; node B stops while it runs.
    node_a
        .upload(
            "wait.sh",
            b"while [ ! -f \"$1\" ]; do sleep 0.05; done\necho finished\n",
        )
        .await;
    let trigger = device.dir.path().join("go");
    let args = trigger.to_str().unwrap().to_string();
    let created = node_a
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("wait.sh", Some(&args))], "failover"),
        )
        .await
        .unwrap();
    node_a
        .wait_until(&created.id, |a| {
            a.commands[0].command_status == CommandStatus::InProgress
        })
        .await;
    let mut node_b = node_b;
    node_b.stop().await;
    tokio::time::timeout(
        DEADLINE,
        node_a.state.hub.wait_connected(&device.machine_id),
    )
    .await
    .expect("the agent moves to node A");
    std::fs::write(&trigger, b"").unwrap();
    let finished = node_a.wait_final(&created.id).await;
    assert_eq!(finished.status, ActionStatus::Succeeded, "{finished:#?}");
    let transcript: serde_json::Value =
        serde_json::from_slice(&node_a.result(&created.id, 0).await).unwrap();
    assert_eq!(transcript["script_output"], "finished\n", "ran once");
    node_a.stop().await;
}

#[tokio::test]
async fn two_nodes_racing_for_one_machine_create_one_action() {
    let Some(node_a) = cluster_node().await else {
        return;
    };
    let node_b = node_a.another_node().await;
    let device = node_a.enroll("offline").await;
    node_a.upload("x.sh", b"true\n").await;
    let body = request(vec![run_script("x.sh", None)], "race");
    for round in 0..5 {
        let (a, b) = tokio::join!(
            node_a.client.run_live_response(&device.machine_id, &body),
            node_b.client.run_live_response(&device.machine_id, &body)
        );
        let (won, lost) = match (a, b) {
            (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
            other => panic!("round {round}: expected one 201, got {other:?}"),
        };
        match lost {
            ClientError::Api { status, code, .. } => {
                assert_eq!(status, 400);
                assert_eq!(code, "ActiveRequestAlreadyExists");
            }
            other => panic!("{other:?}"),
        }
        node_b.client.cancel(&won.id, "next round").await.unwrap();
    }
}

/// Submit → claimed (the command's startTime), for actions submitted on
/// node A to a machine connected to node A itself and to one connected to
/// node B (woken through PostgreSQL NOTIFY). Prints the figures (run with
/// --nocapture); BENCHMARKS.md records them. Asserts only that every action
/// ran: timings are measured, not tested.
#[tokio::test]
async fn wake_ups_reach_agents_on_other_nodes() {
    let Some(node_a) = cluster_node().await else {
        return;
    };
    let node_b = node_a.another_node().await;
    let local = node_a.agent().await;
    let mut remote = node_a.enroll("remote").await;
    let config = node_a.agent_config(remote.dir.path());
    let mut config = config;
    config.server = Some(node_b.url.clone());
    node_b.connect_with(&mut remote, config).await;
    node_a.upload("true.sh", b"true\n").await;
    let mut latencies = [Vec::new(), Vec::new()];
    for round in 0..40 {
        for (which, device) in [&local, &remote].into_iter().enumerate() {
            let done = node_a
                .run(&device.machine_id, vec![run_script("true.sh", None)])
                .await;
            assert_eq!(done.status, ActionStatus::Succeeded, "round {round}");
            let created = reach_server::time::Micros::parse(&done.creation_date_time_utc).unwrap();
            let started = done.commands[0].start_time.as_deref().unwrap();
            let started = reach_server::time::Micros::parse(started).unwrap();
            latencies[which].push((started.0 - created.0) as f64 / 1000.0);
        }
    }
    for (name, mut ms) in ["same node", "other node"].into_iter().zip(latencies) {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "submit -> claimed, {name}: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms ({} actions)",
            at(0.5),
            at(0.95),
            at(1.0),
            ms.len()
        );
    }
}

/// A batch created on node A reaches machines connected to node B (woken
/// by one notice per group of machines), and both nodes count it alike.
#[tokio::test]
async fn a_batch_created_on_one_node_runs_on_machines_of_another() {
    use reach_proto::api::{BatchTargets, CreateBatchRequest};
    let Some(node_a) = cluster_node().await else {
        return;
    };
    let node_b = node_a.another_node().await;
    let mut machines = Vec::new();
    for _ in 0..3 {
        let mut device = node_a.enroll("agent").await;
        let mut config = node_a.agent_config(device.dir.path());
        config.servers = vec![node_b.url.clone()];
        node_b.connect_with(&mut device, config).await;
        machines.push(device);
    }
    node_a.upload("hi.sh", b"echo hi\n").await;
    let request = CreateBatchRequest {
        commands: Some(vec![run_script("hi.sh", None)]),
        machines: Some(BatchTargets {
            ids: Some(machines.iter().map(|d| d.machine_id.clone()).collect()),
            ..BatchTargets::default()
        }),
        ..CreateBatchRequest::default()
    };
    let created = node_a.client.create_batch(&request).await.unwrap();
    let done = wait_for("the batch completing", async || {
        let batch = node_a.client.batch(&created.id).await.unwrap();
        (batch.status == "Completed").then_some(batch)
    })
    .await;
    assert_eq!(done.counts.succeeded, 3);
    let seen_by_b = node_b.client.batch(&created.id).await.unwrap();
    assert_eq!(seen_by_b.counts, done.counts);
}

/// An investigation package on S3: its chunks composed into one object
/// (with the empty ends that keep the segments' path) and served by a
/// presigned link as the zip the agent sent.
#[tokio::test]
async fn a_package_on_s3_is_served_by_a_presigned_link_as_the_zip() {
    let Some(node_a) = cluster_node().await else {
        return;
    };
    let device = node_a.agent().await;
    let action = node_a
        .client
        .collect_investigation_package(&device.machine_id, "on s3")
        .await
        .unwrap();
    let done = node_a.wait_final(&action.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:?}");
    let url = node_a.client.package_uri(&action.id).await.unwrap();
    assert!(
        !url.contains("/download/"),
        "presigned by the object store: {url}"
    );
    let bytes = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
    assert_eq!(
        done.related_file_info.unwrap()["fileIdentifier"],
        sha256.as_str()
    );
}
