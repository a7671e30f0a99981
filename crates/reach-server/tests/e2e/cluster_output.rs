//! Live output across nodes sharing PostgreSQL (skipped without
//! REACH_TEST_DATABASE_URL and REACH_TEST_S3_URL): the agent is connected
//! to node B, the follower to node A, and the script's first line reaches
//! the follower while the script still runs; the end follows.

use reach_client::output::OutputEvent;
use reach_proto::api::ActionStatus;
use reach_server::testing;

use reach_server::testing::*;

const GATED: &[u8] =
    b"#!/bin/sh\necho 'first line'\nwhile [ ! -f gate ]; do sleep 0.02; done\necho 'second line'\n";

#[tokio::test]
async fn a_follower_on_one_node_sees_the_output_of_an_agent_on_another() {
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
    let node_b = node_a.another_node().await;
    let mut device = node_a.enroll("agent").await;
    let mut config = node_a.agent_config(device.dir.path());
    config.servers = vec![node_b.url.clone()];
    node_b.connect_with(&mut device, config).await;
    node_a.upload("gated.sh", GATED).await;
    let id = node_a
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("gated.sh", None)], "x"),
        )
        .await
        .unwrap()
        .id;
    let mut follow = node_a.client.follow_output(&id, 0, None);
    let next = async |follow: &mut reach_client::output::Follow<'_>| {
        tokio::time::timeout(DEADLINE, follow.next())
            .await
            .expect("an event before the deadline")
            .unwrap()
    };
    let Some(OutputEvent::Stdout(first)) = next(&mut follow).await else {
        panic!("the first line");
    };
    assert_eq!(first.text, "first line\n");
    assert_eq!(
        node_a.client.action(&id).await.unwrap().status,
        ActionStatus::InProgress,
        "seen on node A while the script runs on node B's agent"
    );
    std::fs::write(device.work_dir().join("gate"), b"").unwrap();
    let mut out = first.text;
    let mut ended = None;
    while let Some(event) = next(&mut follow).await {
        match event {
            OutputEvent::Stdout(piece) => out.push_str(&piece.text),
            OutputEvent::End(end) => ended = Some(end),
            _ => {}
        }
    }
    assert_eq!(out, "first line\nsecond line\n");
    assert_eq!(ended.unwrap().command_status, "Completed");
}
