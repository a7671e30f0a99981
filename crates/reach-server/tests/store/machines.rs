//! Machines: connections, revocation, device groups and tags, scoped listings, and finding lost wake-ups.

use super::*;

#[tokio::test]
async fn machines_connect_disconnect_and_are_revoked() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        let machine = &machines[0];
        let mut moved = info("renamed");
        moved.os_version = "6.2".into();
        store
            .machine_connected(machine, &moved, None, None, Micros::now())
            .await
            .unwrap();
        let row = store.get_machine(TENANT, machine).await.unwrap();
        assert!(row.connected);
        assert_eq!(row.info.hostname, "renamed");
        assert_eq!(
            row.last_ip.as_deref(),
            Some("10.0.0.1"),
            "kept when unknown"
        );
        let later = Micros::now().plus_secs(60);
        store
            .machines_seen(&[machine.clone(), "f".repeat(40)], later)
            .await
            .unwrap();
        let row = store.get_machine(TENANT, machine).await.unwrap();
        assert_eq!(
            row.last_seen, later,
            "{}: heartbeats recorded in a batch",
            backend.name
        );
        store.revoke_machine(machine).await.unwrap();
        assert!(store.machine_credential(machine).await.unwrap().revoked);
        assert_eq!(
            store.revoked_connected().await.unwrap(),
            vec![machine.clone()]
        );
        store
            .machine_disconnected(machine, Micros::now())
            .await
            .unwrap();
        assert!(store.revoked_connected().await.unwrap().is_empty());
        assert!(matches!(
            store
                .enroll_machine(
                    "unknown",
                    "f".repeat(40).as_str(),
                    "c",
                    &info("x"),
                    None,
                    Micros::now()
                )
                .await,
            Err(StoreError::Refused(_))
        ));
    }
}

#[tokio::test]
async fn revocation_groups_and_tags_are_stored_and_scope_listings() {
    for backend in backends().await {
        let (store, machine_id) = with_action(&backend, vec![get_file("/x")]).await;
        let now = Micros::now();
        let app = App {
            client_id: "c1".into(),
            tenant_id: TENANT.into(),
            name: "app".into(),
            secret_hash: "h0".into(),
            roles: vec![],
            disabled: false,
            token_generation: 0,
            device_groups: vec!["web".into()],
        };
        store.create_app(&app, now).await.unwrap();
        store.set_app_secret("c1", "h1").await.unwrap();
        store.set_app_disabled("c1", true).await.unwrap();
        let stored = store.get_app("c1").await.unwrap();
        assert_eq!(
            (
                stored.secret_hash.as_str(),
                stored.disabled,
                stored.token_generation
            ),
            ("h1", true, 2),
            "{}",
            backend.name
        );
        assert_eq!(stored.device_groups, ["web"]);
        assert!(matches!(
            store.set_app_disabled("nope", true).await,
            Err(StoreError::NotFound(_))
        ));
        let user = User {
            name: "Dana".into(),
            tenant_id: TENANT.into(),
            password_hash: "p".into(),
            roles: vec![],
            disabled: false,
            token_generation: 0,
            device_groups: vec![],
        };
        store.create_user(&user, now).await.unwrap();
        store.set_user_disabled("DANA", true).await.unwrap();
        let stored = store.get_user("dana").await.unwrap();
        assert!(
            stored.disabled && stored.token_generation == 1,
            "{}",
            backend.name
        );

        for tags in [
            vec!["a".to_string()],
            vec!["Web".to_string(), "dmz".to_string()],
        ] {
            let group = DeviceGroup {
                tenant_id: TENANT.into(),
                name: "web".into(),
                tags,
            };
            store.put_device_group(&group, now).await.unwrap();
        }
        let groups = store.list_device_groups(TENANT).await.unwrap();
        assert_eq!(groups.len(), 1, "{}: redefined in place", backend.name);
        assert_eq!(groups[0].tags, ["Web", "dmz"]);

        let by_tag = "$filter=machineTags/any(t: t eq 'web')";
        assert!(
            store
                .list_actions(TENANT, &query(by_tag))
                .await
                .unwrap()
                .0
                .is_empty()
        );
        store
            .set_machine_tags(&machine_id, &["WEB".into()])
            .await
            .unwrap();
        let (found, _) = store.list_actions(TENANT, &query(by_tag)).await.unwrap();
        assert_eq!(
            found.len(),
            1,
            "{}: actions by their machine's tags",
            backend.name
        );
        assert_eq!(
            store.get_machine(TENANT, &machine_id).await.unwrap().tags,
            ["WEB"]
        );
    }
}

#[tokio::test]
async fn connected_machines_whose_action_waits_are_found_for_a_new_wake_up() {
    for backend in backends().await {
        let (store, machine) = with_action(&backend, vec![put_file("x")]).await;
        let later = Micros::now().plus_secs(60);
        // Not connected: nothing to wake.
        assert!(store.waiting_connected(later, 10).await.unwrap().is_empty());
        store
            .machine_connected(&machine, &info("host-0"), None, None, Micros::now())
            .await
            .unwrap();
        assert_eq!(
            store.waiting_connected(later, 10).await.unwrap(),
            vec![machine.clone()],
            "{}",
            backend.name
        );
        // Not waiting long enough yet.
        let earlier = Micros::now().minus_secs(60);
        assert!(
            store
                .waiting_connected(earlier, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Claimed: it no longer waits.
        store
            .claim_next_command(&machine, "agent-1", Micros::now(), Lane::Live)
            .await
            .unwrap()
            .unwrap();
        assert!(
            store.waiting_connected(later, 10).await.unwrap().is_empty(),
            "{}",
            backend.name
        );
    }
}
