//! Enrollment tokens: expiry, use counts, revocation; machine names never guessed.

use super::*;

#[tokio::test]
async fn enrollment_tokens_count_their_uses_and_names_are_never_guessed() {
    for backend in backends().await {
        let store = backend.open().await;
        seed(&store, 1).await;
        let now = Micros::now();
        store
            .create_enrollment_token(TENANT, "abcdef0123456789", None, Some(1), now)
            .await
            .unwrap();
        let enroll = |id: &'static str, token: &'static str| {
            let store = &store;
            async move {
                store
                    .enroll_machine(token, id, "cred", &info("twin"), None, now)
                    .await
            }
        };
        enroll("c1", "abcdef0123456789").await.unwrap();
        let refused = enroll("c2", "abcdef0123456789").await.unwrap_err();
        assert!(
            matches!(refused, StoreError::Refused(_)),
            "{}: {refused}",
            backend.name
        );
        let token = store
            .list_enrollment_tokens()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id == "abcdef012345")
            .unwrap();
        assert_eq!(
            (token.uses, token.max_uses),
            (1, Some(1)),
            "{}",
            backend.name
        );
        store
            .create_enrollment_token(
                TENANT,
                "fedcba9876543210",
                Some(now.minus_secs(1)),
                None,
                now,
            )
            .await
            .unwrap();
        assert!(matches!(
            enroll("c3", "fedcba9876543210").await,
            Err(StoreError::Refused(_))
        ));
        let revoked = store.revoke_enrollment_token("fedcba", now).await.unwrap();
        assert_eq!(revoked.revoked, Some(now));

        // Two machines named "twin" (any case): the name resolves to neither.
        enroll("c4", "token-hash").await.unwrap();
        assert!(matches!(
            store.get_machine(TENANT, "TWIN").await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.machines_named(TENANT, "twin").await.unwrap().len(), 2);
        let duplicated = store.duplicated_names(TENANT).await.unwrap();
        assert_eq!(duplicated.len(), 2, "{}", backend.name);
        assert!(duplicated.iter().all(|(name, _)| name == "twin"));
        store.revoke_machine("c4").await.unwrap();
        assert_eq!(store.get_machine(TENANT, "twin").await.unwrap().id, "c1");
        assert!(store.duplicated_names(TENANT).await.unwrap().is_empty());
    }
}

/// Many enrollments at once with one token that allows five: exactly five
/// machines, and the token counts five uses (PostgreSQL takes the use and
/// inserts the machine in one statement; SQLite in the writer's transaction).
#[tokio::test]
async fn a_tokens_last_use_is_taken_once_under_concurrency() {
    for backend in backends().await {
        let store = backend.open().await;
        seed(&store, 1).await;
        let now = Micros::now();
        store
            .create_enrollment_token(TENANT, "5555aaaa5555aaaa", None, Some(5), now)
            .await
            .unwrap();
        let attempts = (0..24).map(|i| {
            let store = &store;
            async move {
                store
                    .enroll_machine(
                        "5555aaaa5555aaaa",
                        &format!("race-{i}"),
                        "cred",
                        &info(&format!("race-{i}")),
                        Some("127.0.0.9"),
                        now,
                    )
                    .await
            }
        });
        let outcomes = futures::future::join_all(attempts).await;
        let enrolled: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(enrolled.len(), 5, "{}", backend.name);
        assert!(
            outcomes
                .iter()
                .filter_map(|o| o.as_ref().err())
                .all(|e| matches!(e, StoreError::Refused(m) if m.contains("as many times"))),
            "{}",
            backend.name
        );
        for machine in enrolled {
            let stored = store.get_machine(TENANT, &machine.id).await.unwrap();
            assert_eq!(stored.info.hostname, machine.info.hostname);
            assert_eq!((stored.first_seen, stored.last_seen), (now, now));
            assert_eq!(stored.last_ip.as_deref(), Some("127.0.0.9"));
        }
        let token = store
            .list_enrollment_tokens()
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id == "5555aaaa5555")
            .unwrap();
        assert_eq!(token.uses, 5, "{}", backend.name);
    }
}
