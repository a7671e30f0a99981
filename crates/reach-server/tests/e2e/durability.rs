//! Nothing lost: results that finish while the server is away wait on the
//! agent's disk and arrive when it is back, also across an agent restart;
//! repeated deliveries are recorded once; a claim the database fails is
//! tried again without dropping the agent's connection.

use reach_proto::api::{ActionStatus, CommandStatus, ScriptTranscript};

use reach_server::testing::eventually;

use reach_server::testing::*;

fn outbox_entries(device: &Device) -> usize {
    std::fs::read_dir(device.dir.path().join("outbox"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_result_finished_while_the_server_is_down_arrives_after_it_returns() {
    let mut server = TestServer::start().await;
    let mut device = server.agent().await;
    server
        .upload(
            "wait.sh",
            b"touch started\nwhile [ ! -f go ]; do sleep 0.02; done\necho finished offline\n",
        )
        .await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("wait.sh", None)], "offline"),
        )
        .await
        .unwrap();
    server
        .wait_until(&created.id, |a| {
            a.commands[0].command_status == CommandStatus::InProgress
        })
        .await;

    let started = device.work_dir().join("started");
    eventually("the script starting", async || started.exists()).await;
    server.stop().await;
    std::fs::write(device.work_dir().join("go"), "").unwrap();
    eventually("the transcript reaching the outbox", async || {
        outbox_entries(&device) == 1
    })
    .await;
    // The agent restarts too: the result must come from its disk.
    device.stop().await;
    server.restart().await;
    server.connect(&mut device).await;

    let done = server.wait_final(&created.id).await;
    assert_status(&done, ActionStatus::Succeeded);
    let transcript: ScriptTranscript =
        serde_json::from_slice(&server.result(&created.id, 0).await).unwrap();
    assert_eq!(transcript.script_output, "finished offline\n");
    eventually("the outbox emptying after the server's Ack", async || {
        outbox_entries(&device) == 0
    })
    .await;
}

/// A claim the database fails (here PostgreSQL, with a table it reads
/// renamed away; in production a pool exhausted by a wake-up of the whole
/// fleet, or a failover) keeps the agent's connection: the same connection
/// claims again a moment later and the action runs. Ending it would bring
/// every agent back to connect at once, more work for the same database.
#[tokio::test]
async fn a_claim_the_database_fails_is_tried_again_on_the_same_connection() {
    let Some(database) = reach_server::testing::fresh_postgres().await else {
        return;
    };
    let url = database.clone();
    let server = TestServer::start_with(|config| config.database_url = url).await;
    let device = server.agent().await;
    let connection = server.state.hub.connection_id(&device.machine_id);
    assert!(connection.is_some());
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&database).await.unwrap();
    sqlx::query("ALTER TABLE batches RENAME TO batches_away")
        .execute(&db)
        .await
        .unwrap();
    server.upload("hello.sh", b"echo hello\n").await;
    let created = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(
                vec![run_script("hello.sh", None)],
                "while the database fails",
            ),
        )
        .await
        .unwrap();
    eventually("the claim to fail", async || {
        server
            .state
            .metrics
            .claims_deferred
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    })
    .await;
    sqlx::query("ALTER TABLE batches_away RENAME TO batches")
        .execute(&db)
        .await
        .unwrap();
    let done = server.wait_final(&created.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded);
    assert_eq!(
        server.state.hub.connection_id(&device.machine_id),
        connection,
        "the agent kept its connection"
    );
}
