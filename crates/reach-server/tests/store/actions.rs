//! Actions as analysts submit, list and cancel them: one active action per machine, the tenant and requestor limits under races, OData listings.

use super::*;

#[tokio::test]
async fn racing_submissions_get_one_action_per_machine_and_the_tenant_limit() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 6).await;
        let nodes = [Arc::new(store), Arc::new(backend.open().await)];
        // Eight submissions for one machine at once: exactly one wins.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let node = nodes[i % 2].clone();
            let new = action(&format!("same-{i}"), &machines[0], vec![put_file("x")]);
            tasks.push(tokio::spawn(async move {
                node.create_action(&new, LIMITS).await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::ActiveActionExists) => {}
                Err(other) => panic!("{}: unexpected {other:?}", backend.name),
            }
        }
        assert_eq!(won, 1, "{}: one active action per machine", backend.name);
        // Five machines racing against a limit of 3 queued per requestor (1 is queued).
        let mut tasks = Vec::new();
        for (i, machine) in machines[1..].iter().enumerate() {
            let node = nodes[i % 2].clone();
            let new = action(&format!("limit-{i}"), machine, vec![put_file("x")]);
            tasks.push(tokio::spawn(async move {
                node.create_action(
                    &new,
                    ActionLimits {
                        pending_per_requestor: 3,
                        ..LIMITS
                    },
                )
                .await
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::RequestorQueueLimit(3)) => {}
                Err(other) => panic!("{}: unexpected {other:?}", backend.name),
            }
        }
        assert_eq!(won, 2, "{}: the queue limit holds", backend.name);
        let counts = nodes[0].count_actions_by_status().await.unwrap();
        let pending = counts
            .iter()
            .find(|(s, _)| *s == ActionStatus::Pending)
            .unwrap();
        assert_eq!(pending.1, 3);
    }
}

#[tokio::test]
async fn cancel_ends_an_active_action_once() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![put_file("x")]).await;
        let machine = &machine;
        let now = Micros::now();
        store
            .claim_next_command(machine, "agent-1", now, Lane::Live)
            .await
            .unwrap();
        let cancelled = store
            .cancel_action(TENANT, "a1", "lead", Some("wrong host"), now)
            .await
            .unwrap();
        assert_eq!(cancelled.status, ActionStatus::Cancelled);
        assert_eq!(cancelled.cancellation_requestor.as_deref(), Some("lead"));
        assert_eq!(cancelled.commands[0].status, CommandStatus::Failed);
        assert!(matches!(
            store.cancel_action(TENANT, "a1", "lead", None, now).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.cancel_action("other", "a1", "x", None, now).await,
            Err(StoreError::NotFound(_))
        ));
        // A new action may start on the machine.
        store
            .create_action(&action("a2", machine, vec![put_file("x")]), LIMITS)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn actions_and_machines_are_listed_with_odata() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 3).await;
        for (i, machine) in machines.iter().enumerate() {
            let mut new = action(&format!("a{i}"), machine, vec![put_file("x")]);
            new.now = Micros(1_700_000_000_000_000 + i as i64 * 1_000_000);
            store.create_action(&new, LIMITS).await.unwrap();
        }
        store
            .cancel_action(TENANT, "a1", "lead", None, Micros::now())
            .await
            .unwrap();
        let (all, count) = store
            .list_actions(TENANT, &query("$count=true"))
            .await
            .unwrap();
        let ids: Vec<&str> = all.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a2", "a1", "a0"], "{}: newest first", backend.name);
        assert_eq!(count, Some(3));
        let filter = format!(
            "$filter=status eq 'pending' and machineId in ('{}', '{}')&$orderby=creationDateTimeUtc asc&$top=1",
            machines[0], machines[1]
        );
        let (some, _) = store.list_actions(TENANT, &query(&filter)).await.unwrap();
        let ids: Vec<&str> = some.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["a0"], "{}", backend.name);
        let (late, _) = store
            .list_actions(
                TENANT,
                &query("$filter=creationDateTimeUtc ge 2023-11-14T22:13:21Z"),
            )
            .await
            .unwrap();
        assert_eq!(late.len(), 2, "{}", backend.name);
        assert!(matches!(
            store
                .list_actions(TENANT, &query("$filter=colour eq 'red'"))
                .await,
            Err(StoreError::InvalidQuery(_))
        ));

        let (named, count) = store
            .list_machines(
                TENANT,
                &query("$filter=startswith(computerDnsName,'HOST-') and computerDnsName ne 'host-1'&$count=true"),
                Micros(0),
            )
            .await
            .unwrap();
        let names: Vec<&str> = named.iter().map(|m| m.info.hostname.as_str()).collect();
        assert_eq!(names, ["host-0", "host-2"], "{}", backend.name);
        assert_eq!(count, Some(2));
        let (tagged, _) = store
            .list_machines(
                TENANT,
                &query("$filter=machineTags/any(t: t eq 'x')"),
                Micros(0),
            )
            .await
            .unwrap();
        assert!(tagged.is_empty());
        let by_name = store.get_machine(TENANT, "HOST-2").await.unwrap();
        assert_eq!(by_name.id, machines[2]);
        let by_id = store
            .get_machine(TENANT, &machines[1].to_uppercase())
            .await
            .unwrap();
        assert_eq!(by_id.info.hostname, "host-1");
        assert!(matches!(
            store.get_machine("other", "host-1").await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn the_tenant_limit_counts_running_actions_and_queues_are_per_requestor() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 4).await;
        let limits = ActionLimits {
            running_per_tenant: 1,
            pending_per_requestor: 2,
        };
        let by = |id: &str, machine: &str, requestor: &str| NewAction {
            requestor_id: requestor.into(),
            ..action(id, machine, vec![get_file("/x")])
        };
        // Queued actions do not count against the tenant's running limit.
        store
            .create_action(&by("q1", &machines[0], "app:a"), limits)
            .await
            .unwrap();
        store
            .create_action(&by("q2", &machines[1], "app:a"), limits)
            .await
            .unwrap();
        assert!(matches!(
            store
                .create_action(&by("q3", &machines[2], "app:a"), limits)
                .await,
            Err(StoreError::RequestorQueueLimit(2))
        ));
        // Another requestor's queue is its own.
        store
            .create_action(&by("b1", &machines[2], "app:b"), limits)
            .await
            .unwrap();
        assert_eq!(store.pending_actions_of("app:a").await.unwrap().len(), 2);
        // Once one runs, the tenant's running limit (1) is reached.
        store
            .claim_next_command(&machines[0], "agent", Micros::now(), Lane::Live)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(
                store
                    .create_action(&by("b2", &machines[3], "app:b"), limits)
                    .await,
                Err(StoreError::TenantActionLimit(1))
            ),
            "{}",
            backend.name
        );
        let pending: Vec<String> = store
            .pending_actions_of("app:a")
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(pending, ["q2"], "{}", backend.name);
    }
}
