//! Batches on both engines: created whole, claimed behind a machine's
//! other action and by wave, counted exactly, moved wave to wave or paused
//! when too many fail, paused, resumed and cancelled.

use super::*;

fn new_batch(id: &str, machines: &[String], rollout: Option<Rollout>) -> NewBatch {
    let now = Micros::now();
    NewBatch {
        id: id.into(),
        tenant_id: TENANT.into(),
        requestor: "analyst".into(),
        requestor_id: "app:analyst".into(),
        requestor_comment: Some("sweep".into()),
        commands: vec![put_file("x")],
        targets: machines
            .iter()
            .map(|m| BatchTarget {
                machine_id: m.clone(),
                computer_dns_name: "host".into(),
            })
            .collect(),
        rollout,
        expires: now.plus_secs(3600),
        now,
    }
}

fn failed() -> Finish {
    Finish::Failed {
        errors: vec!["no".into()],
        timed_out: false,
    }
}

/// Claims the machine's next command and finishes it as `finish`.
async fn run_one(store: &SqlStore, machine: &str, finish: Finish) -> String {
    let claimed = store
        .claim_next_command(machine, "agent-1", Micros::now(), Lane::Live)
        .await
        .unwrap()
        .expect("a command to claim");
    store
        .finish_command(machine, &claimed.command, &finish, None, Micros::now())
        .await
        .unwrap();
    claimed.command.action_id
}

#[tokio::test]
async fn batch_actions_queue_behind_a_machines_action_and_by_wave() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 3).await;
        // Machine 0 is busy with an action of its own.
        store
            .create_action(&action("single", &machines[0], vec![put_file("x")]), LIMITS)
            .await
            .unwrap();
        let rollout = Rollout {
            wave_size: 2,
            max_failed_percent: 100,
        };
        let created = store
            .create_batch(&new_batch("b1", &machines, Some(rollout)))
            .await
            .unwrap();
        assert_eq!(created.machine_count, 3);
        assert_eq!(created.counts.pending, 3);
        // The machine's own action goes first, then its batch action.
        let first = run_one(
            &store,
            &machines[0],
            Finish::Completed { file_sha256: None },
        )
        .await;
        assert_eq!(first, "single", "{}", backend.name);
        run_one(
            &store,
            &machines[0],
            Finish::Completed { file_sha256: None },
        )
        .await;
        // Machine 2 is in the second wave: nothing to claim yet.
        assert!(
            store
                .claim_next_command(&machines[2], "agent-1", Micros::now(), Lane::Live)
                .await
                .unwrap()
                .is_none(),
            "{}",
            backend.name
        );
        assert!(store.advance_waves(Micros::now()).await.unwrap().is_empty());
        run_one(
            &store,
            &machines[1],
            Finish::Completed { file_sha256: None },
        )
        .await;
        let steps = store.advance_waves(Micros::now()).await.unwrap();
        assert_eq!(
            steps,
            vec![WaveStep::Started {
                batch_id: "b1".into(),
                wave: 2,
                machines: vec![machines[2].clone()],
            }],
            "{}",
            backend.name
        );
        run_one(
            &store,
            &machines[2],
            Finish::Completed { file_sha256: None },
        )
        .await;
        let done = store.get_batch(TENANT, "b1").await.unwrap();
        assert_eq!(done.status, BatchStatus::Completed, "{}", backend.name);
        assert_eq!(done.counts.succeeded, 3);
        assert_eq!(done.current_wave, 2);
        let (listed, count) = store
            .list_batches(TENANT, &query("$filter=status eq 'Completed'&$count=true"))
            .await
            .unwrap();
        assert_eq!((listed.len(), count), (1, Some(1)), "{}", backend.name);
    }
}

#[tokio::test]
async fn a_failing_wave_pauses_and_resume_starts_the_next() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 4).await;
        let rollout = Rollout {
            wave_size: 2,
            max_failed_percent: 49,
        };
        store
            .create_batch(&new_batch("b1", &machines, Some(rollout)))
            .await
            .unwrap();
        run_one(
            &store,
            &machines[0],
            Finish::Completed { file_sha256: None },
        )
        .await;
        run_one(&store, &machines[1], failed()).await;
        let steps = store.advance_waves(Micros::now()).await.unwrap();
        assert!(
            matches!(&steps[..], [WaveStep::Paused { reason, .. }] if reason.contains("1 of 2")),
            "{}: {steps:?}",
            backend.name
        );
        let paused = store.get_batch(TENANT, "b1").await.unwrap();
        assert_eq!(paused.status, BatchStatus::Paused);
        assert!(paused.paused_reason.is_some());
        // Paused: no wave moves and nothing is claimed.
        assert!(store.advance_waves(Micros::now()).await.unwrap().is_empty());
        assert!(
            store
                .claim_next_command(&machines[2], "agent-1", Micros::now(), Lane::Live)
                .await
                .unwrap()
                .is_none()
        );
        let (resumed, woken) = store
            .resume_batch(TENANT, "b1", Micros::now())
            .await
            .unwrap();
        assert_eq!(resumed.status, BatchStatus::Running, "{}", backend.name);
        assert_eq!(resumed.current_wave, 2);
        let mut woken = woken;
        woken.sort();
        assert_eq!(woken, vec![machines[2].clone(), machines[3].clone()]);
        run_one(
            &store,
            &machines[2],
            Finish::Completed { file_sha256: None },
        )
        .await;
        // Pause and cancel: the waiting action ends Cancelled, the batch too.
        store
            .pause_batch(TENANT, "b1", Micros::now())
            .await
            .unwrap();
        let (cancelled, stopped) = store
            .cancel_batch(TENANT, "b1", "lead", Some("enough"), Micros::now())
            .await
            .unwrap();
        assert!(stopped.is_empty());
        assert_eq!(cancelled.status, BatchStatus::Cancelled, "{}", backend.name);
        assert_eq!(cancelled.counts.cancelled, 1);
        assert_eq!(cancelled.counts.succeeded, 2);
        assert_eq!(cancelled.counts.failed, 1);
        assert!(matches!(
            store.pause_batch(TENANT, "b1", Micros::now()).await,
            Err(StoreError::Conflict(_))
        ));
    }
}

#[tokio::test]
async fn cancelling_a_batch_stops_its_running_commands() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 2).await;
        store
            .create_batch(&new_batch("b1", &machines, None))
            .await
            .unwrap();
        let claimed = store
            .claim_next_command(&machines[0], "agent-1", Micros::now(), Lane::Live)
            .await
            .unwrap()
            .unwrap();
        let (batch, stopped) = store
            .cancel_batch(TENANT, "b1", "lead", None, Micros::now())
            .await
            .unwrap();
        assert_eq!(
            stopped,
            vec![StoppedAction {
                machine_id: machines[0].clone(),
                action_id: claimed.command.action_id.clone(),
            }],
            "{}",
            backend.name
        );
        assert_eq!(batch.counts.cancelled, 2);
        let action = store
            .get_action(TENANT, &claimed.command.action_id)
            .await
            .unwrap();
        assert_eq!(action.commands[0].status, CommandStatus::Failed);
        assert_eq!(action.batch_id.as_deref(), Some("b1"));
        assert!(
            store
                .claim_next_command(&machines[1], "agent-1", Micros::now(), Lane::Live)
                .await
                .unwrap()
                .is_none()
        );
    }
}

/// Results are read in keyset pages: every action once, in order, whatever
/// the page size.
#[tokio::test]
async fn a_batchs_actions_are_read_in_pages_after_a_position() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 5).await;
        store
            .create_batch(&new_batch("b1", &machines, None))
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .batch_actions_after(TENANT, "b1", &Query::default(), after, 2)
                .await
                .unwrap();
            let Some((last, _)) = page.last() else {
                break;
            };
            assert!(page.len() <= 2);
            after = *last;
            seen.extend(page.into_iter().map(|(_, a)| a.machine_id));
        }
        let mut expected = machines.clone();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "{}", backend.name);
        // Another tenant's view of the batch is empty.
        assert!(
            store
                .batch_actions_after("other", "b1", &Query::default(), 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// The re-wake looks only at actions a claim would hand out, on machines
/// that run nothing: a paused batch's or a later wave's Pending actions
/// (which could be thousands, oldest first) never fill its answer.
#[tokio::test]
async fn the_rewake_passes_over_actions_that_may_not_run_yet() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 5).await;
        for (i, machine) in machines.iter().enumerate() {
            store
                .machine_connected(
                    machine,
                    &info(&format!("host-{i}")),
                    None,
                    None,
                    Micros::now(),
                )
                .await
                .unwrap();
        }
        let rollout = Rollout {
            wave_size: 2,
            max_failed_percent: 100,
        };
        // Machines 0 and 1 are wave 1 (Running), 2 and 3 wave 2 (to come).
        store
            .create_batch(&new_batch("waves", &machines[..4], Some(rollout)))
            .await
            .unwrap();
        let later = Micros::now().plus_secs(60);
        let mut waiting = store.waiting_connected(later, 10).await.unwrap();
        waiting.sort();
        assert_eq!(waiting, machines[..2].to_vec(), "{}", backend.name);

        // Machine 0 runs its command: busy, it claims when it is done.
        store
            .claim_next_command(&machines[0], "agent-1", Micros::now(), Lane::Live)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store.waiting_connected(later, 10).await.unwrap(),
            vec![machines[1].clone()],
            "{}",
            backend.name
        );

        // Paused: none of its actions wait for a wake-up, and an action
        // alone created after them is the first answer (one at most here).
        store
            .pause_batch(TENANT, "waves", Micros::now())
            .await
            .unwrap();
        assert!(
            store.waiting_connected(later, 10).await.unwrap().is_empty(),
            "{}",
            backend.name
        );
        store
            .create_action(&action("single", &machines[4], vec![put_file("x")]), LIMITS)
            .await
            .unwrap();
        assert_eq!(
            store.waiting_connected(later, 1).await.unwrap(),
            vec![machines[4].clone()],
            "{}",
            backend.name
        );
    }
}
