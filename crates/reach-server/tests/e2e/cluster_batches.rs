//! Batches across nodes sharing PostgreSQL (skipped without
//! REACH_TEST_DATABASE_URL and REACH_TEST_S3_URL): the node that holds the
//! machines' connections stops while their scripts run, the agents move to
//! the other node, and the batch's counts end exact.

use reach_proto::api::{BatchTargets, CreateBatchRequest};
use reach_server::testing;

use reach_server::testing::*;

#[tokio::test]
async fn a_batch_counts_exactly_while_a_node_dies_and_agents_move() {
    let Some(database) = testing::fresh_postgres().await else {
        return;
    };
    let Some(objects) = testing::fresh_s3_prefix() else {
        return;
    };
    let node_a = TestServer::start_with(|config| {
        config.database_url = database;
        config.object_store_url = objects;
    })
    .await;
    let mut node_b = node_a.another_node().await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        let mut device = node_a.enroll("agent").await;
        let mut config = node_a.agent_config(device.dir.path());
        // Node B first; node A is the fallback.
        config.servers = vec![node_b.url.clone(), node_a.url.clone()];
        node_b.connect_with(&mut device, config).await;
        devices.push(device);
    }
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    node_a
        .upload(
            "wait.sh",
            b"while [ ! -e \"$1\" ]; do sleep 0.02; done\necho finished\n",
        )
        .await;
    let request = CreateBatchRequest {
        commands: Some(vec![run_script("wait.sh", Some(go.to_str().unwrap()))]),
        machines: Some(BatchTargets {
            ids: Some(devices.iter().map(|d| d.machine_id.clone()).collect()),
            ..BatchTargets::default()
        }),
        ..CreateBatchRequest::default()
    };
    let created = node_a.client.create_batch(&request).await.unwrap();
    wait_for("every script running", async || {
        let batch = node_a.client.batch(&created.id).await.unwrap();
        (batch.counts.in_progress == 3).then_some(())
    })
    .await;
    node_b.stop().await;
    for device in &devices {
        tokio::time::timeout(
            DEADLINE,
            node_a.state.hub.wait_connected(&device.machine_id),
        )
        .await
        .expect("the agent moves to node A");
    }
    std::fs::write(&go, b"").unwrap();
    let done = wait_for("the batch completing", async || {
        let batch = node_a.client.batch(&created.id).await.unwrap();
        (batch.status == "Completed").then_some(batch)
    })
    .await;
    assert_eq!(done.counts.succeeded, 3, "{done:?}");
    assert_eq!(done.machine_count, 3);
    // Each script ran once: its transcript says so.
    let lines = node_a.client.batch_results(&created.id, 0).await.unwrap();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line["transcript"]["script_output"], "finished\n", "{line}");
    }
}
