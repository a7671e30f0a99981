//! Commands as agents work through them: claimed once, results and finishes only from the machine that holds them, leases and queue TTLs swept once.

use super::*;
use crate::inline_results::inline;

#[tokio::test]
async fn a_command_is_claimed_once_and_recorded_once() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![put_file("x")]).await;
        let machine = &machine;
        let now = Micros::now();
        let claimed = store
            .claim_next_command(machine, "agent-1", now, Lane::Live)
            .await
            .unwrap();
        let claimed = claimed.expect("the command is claimed");
        assert_eq!(
            claimed.command,
            CommandRef {
                action_id: "a1".into(),
                index: 0
            }
        );
        assert!(
            store
                .claim_next_command(machine, "agent-1", now, Lane::Live)
                .await
                .unwrap()
                .is_none(),
            "{}: never handed out twice",
            backend.name
        );
        let finish = Finish::Completed { file_sha256: None };
        let first = store
            .finish_command(machine, &claimed.command, &finish, None, now)
            .await
            .unwrap();
        assert_eq!(first.unwrap().action_status, ActionStatus::Succeeded);
        let again = store
            .finish_command(machine, &claimed.command, &finish, None, now)
            .await
            .unwrap();
        assert!(
            again.is_none(),
            "{}: a repeat changes nothing",
            backend.name
        );
        let stored = store.get_action(TENANT, "a1").await.unwrap();
        assert_eq!(stored.status, ActionStatus::Succeeded);
        assert_eq!(stored.commands[0].status, CommandStatus::Completed);
        assert_eq!(stored.requestor_comment.as_deref(), Some("triage"));
    }
}

#[tokio::test]
async fn nodes_racing_to_claim_hand_a_command_out_once() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        store
            .create_action(&action("a1", &machines[0], vec![put_file("x")]), LIMITS)
            .await
            .unwrap();
        // Two stores: two nodes with their own connection pools.
        let nodes = [Arc::new(store), Arc::new(backend.open().await)];
        let mut tasks = Vec::new();
        for i in 0..8 {
            let node = nodes[i % 2].clone();
            let machine = machines[0].clone();
            tasks.push(tokio::spawn(async move {
                node.claim_next_command(&machine, "agent-1", Micros::now(), Lane::Live)
                    .await
                    .unwrap()
            }));
        }
        let mut claimed = 0;
        for task in tasks {
            claimed += usize::from(task.await.unwrap().is_some());
        }
        assert_eq!(claimed, 1, "{}: claimed exactly once", backend.name);
    }
}

#[tokio::test]
async fn another_machine_cannot_claim_record_or_finish() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 2).await;
        store
            .create_action(&action("a1", &machines[0], vec![get_file("/x")]), LIMITS)
            .await
            .unwrap();
        let now = Micros::now();
        let claimed = store
            .claim_next_command(&machines[0], "agent-1", now, Lane::Live)
            .await
            .unwrap()
            .unwrap();
        let other = &machines[1];
        let own = store
            .machine_command(&machines[0], &claimed.command)
            .await
            .unwrap();
        assert_eq!(own.status, CommandStatus::InProgress);
        assert!(matches!(
            store.machine_command(other, &claimed.command).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            store
                .claim_next_command(other, "agent-1", now, Lane::Live)
                .await
                .unwrap()
                .is_none()
        );
        let failed = Finish::Failed {
            errors: vec!["forged".into()],
            timed_out: false,
        };
        assert!(
            store
                .finish_command(other, &claimed.command, &failed, None, now)
                .await
                .unwrap()
                .is_none()
        );
        let blob = ResultBlob {
            key: "k".into(),
            size: 1,
            sha256: Some("s".into()),
            chunks: None,
        };
        assert!(matches!(
            store.record_result(other, &claimed.command, &blob).await,
            Err(StoreError::NotFound(_))
        ));
        // The owner records a result in chunks, one of them sent twice.
        let chunk = |n: u32| ChunkRow {
            n,
            raw_size: 10,
            // Chunk 0 announced by its SHA-256 alone, the others by CRC-32
            // (the largest one too, which must not wrap).
            raw_crc32: (n > 0).then_some(u32::MAX - n),
            raw_sha256: if n == 0 { "raw0".into() } else { String::new() },
            stored_size: 12,
            stored_sha256: format!("stored{n}"),
            attempts: 1,
        };
        for n in [0, 1, 1] {
            store
                .put_chunk(&machines[0], &claimed.command, &chunk(n))
                .await
                .unwrap();
        }
        assert!(
            store
                .put_chunk(other, &claimed.command, &chunk(2))
                .await
                .is_err()
        );
        let chunks = store.list_chunks(&claimed.command).await.unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].attempts, 2, "{}", backend.name);
        assert_eq!(chunks[0], chunk(0), "{}", backend.name);
        assert_eq!(chunks[1].raw_crc32, Some(u32::MAX - 1), "{}", backend.name);
        store
            .record_result(&machines[0], &claimed.command, &blob)
            .await
            .unwrap();
        let done = Finish::Completed {
            file_sha256: Some("f".into()),
        };
        let action = store
            .finish_command(&machines[0], &claimed.command, &done, None, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(action.action_status, ActionStatus::Succeeded);
        assert_eq!(action.command.result.as_ref(), Some(&blob));
        assert_eq!(action.command.file_sha256.as_deref(), Some("f"));
    }
}

#[tokio::test]
async fn a_result_is_required_and_failures_stop_the_action() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        let machine = &machines[0];
        let commands = vec![get_file("/a"), put_file("b")];
        store
            .create_action(&action("a1", machine, commands), LIMITS)
            .await
            .unwrap();
        let now = Micros::now();
        let claimed = store
            .claim_next_command(machine, "agent-1", now, Lane::Live)
            .await
            .unwrap()
            .unwrap();
        let done = Finish::Completed { file_sha256: None };
        let action = store
            .finish_command(machine, &claimed.command, &done, None, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            action.action_status,
            ActionStatus::Failed,
            "{}",
            backend.name
        );
        assert_eq!(action.command.status, CommandStatus::Failed);
        assert!(action.command.errors[0].contains("no result"));
        let stored = store.get_action(TENANT, "a1").await.unwrap();
        assert_eq!(stored.commands[1].status, CommandStatus::Created);
        assert!(
            store
                .claim_next_command(machine, "agent-1", now, Lane::Live)
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn sweeps_expire_queued_actions_and_lapsed_leases_once() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 2).await;
        let mut queued = action("queued", &machines[0], vec![put_file("x")]);
        queued.now = Micros::now().minus_secs(100);
        store.create_action(&queued, LIMITS).await.unwrap();
        let mut running = action("running", &machines[1], vec![put_file("x")]);
        running.now = Micros::now().minus_secs(1000);
        store.create_action(&running, LIMITS).await.unwrap();
        store
            .claim_next_command(
                &machines[1],
                "agent-1",
                Micros::now().minus_secs(500),
                Lane::Live,
            )
            .await
            .unwrap()
            .unwrap();
        let nodes = [Arc::new(store), Arc::new(backend.open().await)];
        let now = Micros::now();
        let (a, b) = tokio::join!(
            nodes[0].sweep(now.minus_secs(50), 120, now),
            nodes[1].sweep(now.minus_secs(50), 120, now)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let mut expired: Vec<String> = a.queue_expired.into_iter().chain(b.queue_expired).collect();
        expired.sort();
        assert_eq!(expired, vec!["queued".to_string()], "{}", backend.name);
        let leases: Vec<_> = a.lease_expired.into_iter().chain(b.lease_expired).collect();
        assert_eq!(leases.len(), 1, "{}: a lease expires once", backend.name);
        assert_eq!(leases[0].0, machines[1]);
        let timed_out = nodes[0].get_action(TENANT, "queued").await.unwrap();
        assert_eq!(timed_out.status, ActionStatus::TimeOut);
        let failed = nodes[0].get_action(TENANT, "running").await.unwrap();
        assert_eq!(failed.status, ActionStatus::Failed);
        assert!(failed.commands[0].errors[0].contains("timeout plus 120 s"));
        let again = nodes[0].sweep(now.minus_secs(50), 120, now).await.unwrap();
        assert_eq!(again, Swept::default());
    }
}

#[tokio::test]
async fn a_command_its_agent_never_received_is_handed_out_again() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![put_file("x")]).await;
        let machine = &machine;
        let now = Micros::now();
        let first = store
            .claim_next_command(machine, "agent-1", now, Lane::Live)
            .await
            .unwrap()
            .unwrap();
        let running = store.running_commands(machine).await.unwrap();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].agent_instance, "agent-1", "{}", backend.name);
        assert!(
            store
                .requeue_command(machine, &first.command)
                .await
                .unwrap()
        );
        assert!(
            !store
                .requeue_command(machine, &first.command)
                .await
                .unwrap(),
            "only an InProgress command"
        );
        let again = store
            .claim_next_command(machine, "agent-1", now, Lane::Live)
            .await
            .unwrap()
            .expect("handed out again");
        assert_eq!(again.command, first.command);
        assert!(
            !store
                .requeue_command(&"f".repeat(40), &again.command)
                .await
                .unwrap(),
            "{}: only by its own machine",
            backend.name
        );
    }
}

/// Action "a1" of two RunScripts, the first claimed at `now`.
async fn two_scripts_one_running(backend: &Backend, now: Micros) -> (SqlStore, String, Claimed) {
    let (store, machine) = with_action(backend, vec![run_script("a.sh"), run_script("b.sh")]).await;
    let claimed = store
        .claim_next_command(&machine, "agent-1", now, Lane::Live)
        .await
        .unwrap()
        .unwrap();
    (store, machine, claimed)
}

#[tokio::test]
async fn a_command_ending_after_its_action_was_cancelled_changes_nothing() {
    for backend in backends().await {
        let now = Micros::now();
        let (store, machine, claimed) = two_scripts_one_running(&backend, now).await;
        let cancelled = store
            .cancel_action(TENANT, "a1", "analyst", Some("wrong host"), now)
            .await
            .unwrap();
        let done = Finish::Completed { file_sha256: None };
        let late = store
            .finish_command(
                &machine,
                &claimed.command,
                &done,
                Some(&inline("late")),
                now,
            )
            .await
            .unwrap();
        assert_eq!(late, None, "{}: the cancel ended it", backend.name);
        let stored = store.get_action(TENANT, "a1").await.unwrap();
        assert_eq!(stored.status, ActionStatus::Cancelled, "{}", backend.name);
        assert_eq!(stored.commands, cancelled.commands, "{}", backend.name);
        assert_eq!(stored.commands[0].status, CommandStatus::Failed);
        assert_eq!(
            stored.commands[0].result, None,
            "the late transcript is not kept"
        );
    }
}

#[tokio::test]
async fn an_action_is_updated_when_each_of_its_commands_ends() {
    for backend in backends().await {
        let started = Micros::now();
        let (store, machine, claimed) = two_scripts_one_running(&backend, started).await;
        let ended = started.plus_secs(600);
        let finished = store
            .finish_command(
                &machine,
                &claimed.command,
                &Finish::Completed { file_sha256: None },
                Some(&inline("t0")),
                ended,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            finished.action_status,
            ActionStatus::InProgress,
            "{}",
            backend.name
        );
        let stored = store.get_action(TENANT, "a1").await.unwrap();
        assert_eq!(
            stored.last_update, ended,
            "{}: the next command's queue time counts from here",
            backend.name
        );
    }
}

#[tokio::test]
async fn a_machine_has_an_active_action_until_it_ends() {
    for backend in backends().await {
        let store = backend.open().await;
        let machine = seed(&store, 1).await.remove(0);
        assert!(
            !store.has_active_action(&machine).await.unwrap(),
            "{}",
            backend.name
        );
        store
            .create_action(&action("a1", &machine, vec![run_script("a.sh")]), LIMITS)
            .await
            .unwrap();
        assert!(
            store.has_active_action(&machine).await.unwrap(),
            "{}: pending",
            backend.name
        );
        let now = Micros::now();
        let claimed = store
            .claim_next_command(&machine, "agent-1", now, Lane::Live)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store.has_active_action(&machine).await.unwrap(),
            "{}: running",
            backend.name
        );
        store
            .finish_command(
                &machine,
                &claimed.command,
                &Finish::Completed { file_sha256: None },
                Some(&inline("t")),
                now,
            )
            .await
            .unwrap();
        assert!(
            !store.has_active_action(&machine).await.unwrap(),
            "{}: ended",
            backend.name
        );
    }
}
