//! Response actions (isolate, release) in the store, on both engines: one
//! active isolation per machine beside live response, outside live
//! response's limits, claimed in a lane of their own while a script runs,
//! and the machine's isolation state they leave.

use reach_proto::api::ActionType;

use super::*;

/// A response action of `kind` (its one command's work to match).
fn isolate(id: &str, machine: &str, kind: ActionType) -> NewAction {
    let work = match kind {
        ActionType::Unisolate => Work::Unisolate,
        ActionType::Offboard => Work::Offboard,
        _ => Work::Isolate {
            selective: false,
            allow: Vec::new(),
        },
    };
    NewAction {
        kind,
        commands: vec![NewCommand {
            command: Command {
                kind: kind.as_str().into(),
                params: Vec::new(),
            },
            work,
            timeout_secs: 120,
        }],
        ..action(id, machine, Vec::new())
    }
}

async fn isolation_state(store: &SqlStore, machine: &str) -> String {
    store
        .machine_by_id(TENANT, machine)
        .await
        .unwrap()
        .unwrap()
        .isolation_state
}

#[tokio::test]
async fn an_isolation_is_one_per_machine_beside_live_response_and_outside_its_limits() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 2).await;
        let none = ActionLimits {
            running_per_tenant: 0,
            pending_per_requestor: 0,
        };
        // Live response's limits (here: none may run or wait) do not apply.
        store
            .create_action(&isolate("i1", &machines[0], ActionType::Isolate), none)
            .await
            .unwrap();
        assert_eq!(isolation_state(&store, &machines[0]).await, "Pending");
        for (id, kind) in [("i2", ActionType::Isolate), ("u1", ActionType::Unisolate)] {
            assert!(
                matches!(
                    store
                        .create_action(&isolate(id, &machines[0], kind), LIMITS)
                        .await,
                    Err(StoreError::ActiveActionExists)
                ),
                "{}: one isolation or release at a time",
                backend.name
            );
        }
        // Live response on the same machine is its own.
        store
            .create_action(&action("l1", &machines[0], vec![run_script("s")]), LIMITS)
            .await
            .unwrap();
        // Another machine is free.
        store
            .create_action(&isolate("i3", &machines[1], ActionType::Isolate), LIMITS)
            .await
            .unwrap();
        let listed = store
            .list_actions(TENANT, &query("$filter=type eq 'Isolate'"))
            .await
            .unwrap()
            .0;
        let mut ids: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["i1", "i3"], "{}", backend.name);
        assert!(listed.iter().all(|a| a.kind == ActionType::Isolate));
    }
}

#[tokio::test]
async fn each_lane_is_claimed_on_its_own_and_a_finished_isolation_marks_the_machine() {
    for backend in backends().await {
        let store = backend.open().await;
        let machine = seed(&store, 1).await.remove(0);
        let now = Micros::now();
        store
            .create_action(&action("l1", &machine, vec![run_script("s")]), LIMITS)
            .await
            .unwrap();
        store
            .create_action(&isolate("i1", &machine, ActionType::Isolate), LIMITS)
            .await
            .unwrap();
        assert!(store.has_active_in(&machine, Lane::Response).await.unwrap());
        let script = store
            .claim_next_command(&machine, "agent-1", now, Lane::Live)
            .await
            .unwrap()
            .expect("the script");
        assert_eq!(script.command.action_id, "l1");
        // The isolation is handed out while the script runs.
        let isolation = store
            .claim_next_command(&machine, "agent-1", now, Lane::Response)
            .await
            .unwrap()
            .expect("the isolation, beside the script");
        assert_eq!(isolation.command.action_id, "i1");
        assert!(matches!(isolation.work, Work::Isolate { .. }));
        let running = store.running_commands(&machine).await.unwrap();
        let lanes: Vec<(String, Lane)> = running
            .into_iter()
            .map(|r| (r.command.action_id, r.lane))
            .collect();
        assert!(lanes.contains(&("l1".into(), Lane::Live)), "{lanes:?}");
        assert!(lanes.contains(&("i1".into(), Lane::Response)), "{lanes:?}");
        // Completed without a result: a response action has none.
        let done = store
            .finish_command(
                &machine,
                &isolation.command,
                &Finish::Completed { file_sha256: None },
                None,
                now,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            done.action_status,
            ActionStatus::Succeeded,
            "{}",
            backend.name
        );
        assert_eq!(isolation_state(&store, &machine).await, "Isolated");
        // A release that fails leaves it isolated; one that succeeds does not.
        for (id, finish, state) in [
            (
                "u1",
                Finish::Failed {
                    errors: vec!["nft failed".into()],
                    timed_out: false,
                },
                "Isolated",
            ),
            ("u2", Finish::Completed { file_sha256: None }, "NotIsolated"),
        ] {
            store
                .create_action(&isolate(id, &machine, ActionType::Unisolate), LIMITS)
                .await
                .unwrap();
            let release = store
                .claim_next_command(&machine, "agent-1", now, Lane::Response)
                .await
                .unwrap()
                .expect("the release");
            store
                .finish_command(&machine, &release.command, &finish, None, now)
                .await
                .unwrap();
            assert_eq!(
                isolation_state(&store, &machine).await,
                state,
                "{}",
                backend.name
            );
        }
        // What the agent reports at its next connection is the truth.
        store
            .machine_connected(&machine, &info("host-0"), None, Some(true), now)
            .await
            .unwrap();
        assert_eq!(isolation_state(&store, &machine).await, "Isolated");
        store
            .machine_connected(&machine, &info("host-0"), None, None, now)
            .await
            .unwrap();
        assert_eq!(
            isolation_state(&store, &machine).await,
            "Isolated",
            "None leaves it"
        );
    }
}

#[tokio::test]
async fn an_offboard_ends_at_once_only_while_no_agent_claimed_it() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 2).await;
        let now = Micros::now();
        for machine in &machines {
            let id = format!("o-{machine}");
            store
                .create_action(&isolate(&id, machine, ActionType::Offboard), LIMITS)
                .await
                .unwrap();
        }
        // The first machine's agent claims its offboard first.
        let claimed = store
            .claim_next_command(&machines[0], "agent-1", now, Lane::Response)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(claimed.work, Work::Offboard));
        let first = format!("o-{}", machines[0]);
        assert!(
            !store
                .offboard_unclaimed(&machines[0], &first, now)
                .await
                .unwrap()
        );
        assert!(
            !store
                .machine_credential(&machines[0])
                .await
                .unwrap()
                .revoked
        );
        // The second is offline: offboarded at once.
        let second = format!("o-{}", machines[1]);
        assert!(
            store
                .offboard_unclaimed(&machines[1], &second, now)
                .await
                .unwrap()
        );
        let action = store.get_action(TENANT, &second).await.unwrap();
        assert_eq!(action.status, ActionStatus::Succeeded, "{}", backend.name);
        assert_eq!(action.commands[0].status, CommandStatus::Completed);
        let credential = store.machine_credential(&machines[1]).await.unwrap();
        assert!(
            credential.revoked && credential.offboarded,
            "{}",
            backend.name
        );
        // The claimed one is offboarded when its agent reports.
        store
            .finish_command(
                &machines[0],
                &claimed.command,
                &Finish::Completed { file_sha256: None },
                None,
                now,
            )
            .await
            .unwrap()
            .unwrap();
        let credential = store.machine_credential(&machines[0]).await.unwrap();
        assert!(
            credential.revoked && credential.offboarded,
            "{}",
            backend.name
        );
    }
}
