//! Retention: old results, unused library files, the audit trail pruned, abandoned chunks.

use super::*;

/// Chunk 0 of a GetFile, 10 bytes.
fn first_chunk() -> ChunkRow {
    ChunkRow {
        n: 0,
        raw_size: 10,
        raw_crc32: Some(1),
        raw_sha256: String::new(),
        stored_size: 10,
        stored_sha256: "s".into(),
        attempts: 1,
    }
}

#[tokio::test]
async fn retention_finds_old_results_unused_library_files_and_prunes_the_audit_trail() {
    for backend in backends().await {
        let store = backend.open().await;
        let machine = seed(&store, 1).await.remove(0);
        let day = 24 * 3600;
        let now = Micros::now();
        let long_ago = now.minus_secs(40 * day);
        let old = NewAction {
            now: long_ago,
            ..action("a1", &machine, vec![get_file("/x")])
        };
        store.create_action(&old, LIMITS).await.unwrap();
        let claimed = store
            .claim_next_command(&machine, "agent-1", long_ago, Lane::Live)
            .await
            .unwrap()
            .unwrap();
        let blob = ResultBlob {
            key: "results/a1/0/chunks".into(),
            size: 10,
            sha256: None,
            chunks: Some(1),
        };
        store
            .record_result(&machine, &claimed.command, &blob)
            .await
            .unwrap();
        store
            .put_chunk(&machine, &claimed.command, &first_chunk())
            .await
            .unwrap();
        let done = Finish::Completed {
            file_sha256: Some("f".into()),
        };
        store
            .finish_command(&machine, &claimed.command, &done, None, long_ago)
            .await
            .unwrap();

        let cutoff = now.minus_secs(30 * day);
        assert!(
            store
                .expired_results(now.minus_secs(50 * day), 10)
                .await
                .unwrap()
                .is_empty(),
            "{}: not old enough",
            backend.name
        );
        let expired = store.expired_results(cutoff, 10).await.unwrap();
        assert_eq!(expired.len(), 1, "{}", backend.name);
        assert_eq!(expired[0].result, Some(blob));
        assert_eq!(expired[0].chunks, [0]);
        assert_eq!(expired[0].machine_id, machine);
        assert!(store.forget_result(&claimed.command, now).await.unwrap());
        assert!(!store.forget_result(&claimed.command, now).await.unwrap());
        assert!(store.expired_results(cutoff, 10).await.unwrap().is_empty());
        let kept = &store.get_action(TENANT, "a1").await.unwrap().commands[0];
        assert_eq!(kept.status, CommandStatus::Completed);
        assert_eq!(kept.result, None);
        assert_eq!(kept.result_deleted, Some(now));
        assert_eq!(
            kept.file_sha256.as_deref(),
            Some("f"),
            "the evidence hash stays"
        );

        // Library files: one needed by a pending action, one unused and old,
        // one changed recently.
        store
            .create_action(&action("a2", &machine, vec![put_file("x")]), LIMITS)
            .await
            .unwrap();
        for (name, sha, when) in [
            ("needed.sh", "abc", long_ago),
            ("stale.sh", "zzz", long_ago),
            ("fresh.sh", "yyy", now),
        ] {
            let row = LibraryRow {
                tenant_id: TENANT.into(),
                file_name: name.into(),
                sha256: sha.into(),
                size: 1,
                description: None,
                has_parameters: false,
                parameters_description: None,
                created_by: "a".into(),
                last_updated_by: None,
                creation_time: when,
                last_updated_time: when,
                signature: None,
            };
            store.put_library_file(&row, false).await.unwrap();
        }
        let unused: Vec<String> = store
            .unused_library_files(cutoff)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.file_name)
            .collect();
        assert_eq!(unused, ["stale.sh"], "{}", backend.name);
        // Ended, but created after the cutoff: still recently used.
        store
            .cancel_action(TENANT, "a2", "analyst", None, now)
            .await
            .unwrap();
        assert_eq!(store.unused_library_files(cutoff).await.unwrap().len(), 1);

        // The audit trail: two old entries go, the pruning is recorded.
        let at = |time: Micros| reach_server::store::AuditEvent {
            time,
            ..reach_server::audit::event(
                TENANT,
                reach_server::audit::Actor::system(),
                Operation::MachineTagged,
                Outcome::Succeeded,
                serde_json::json!({}),
            )
        };
        let appended = store
            .append_audit(&[at(long_ago), at(long_ago.plus_secs(1)), at(now)])
            .await
            .unwrap();
        let pruning = reach_server::audit::event(
            "",
            reach_server::audit::Actor::system(),
            Operation::AuditPruned,
            Outcome::Succeeded,
            serde_json::json!({ "retentionDays": 30 }),
        );
        assert!(
            store
                .prune_audit(now.minus_secs(50 * day), pruning.clone())
                .await
                .unwrap()
                .is_none()
        );
        let entry = store.prune_audit(cutoff, pruning).await.unwrap().unwrap();
        let details: serde_json::Value = serde_json::from_str(&entry.event.details).unwrap();
        assert_eq!(details["removed"], 2, "{}", backend.name);
        assert_eq!(details["throughId"], appended[1].seq);
        assert_eq!(details["throughHash"], appended[1].hash.as_str());
        assert_eq!(details["retentionDays"], 30);
        assert_eq!(
            entry.prev_hash, appended[2].hash,
            "appended after the kept entry"
        );
        assert_eq!(
            reach_server::audit::verify(&store).await.unwrap(),
            reach_server::audit::Verdict::Intact {
                entries: 2,
                first: appended[2].seq,
                head: Some((entry.seq, entry.hash.clone())),
            },
            "{}",
            backend.name
        );
    }
}

#[tokio::test]
async fn chunks_of_a_transfer_that_ended_without_its_result_are_abandoned() {
    for backend in backends().await {
        let store = backend.open().await;
        let machine = seed(&store, 1).await.remove(0);
        let now = Micros::now();
        store
            .create_action(&action("a1", &machine, vec![get_file("/x")]), LIMITS)
            .await
            .unwrap();
        let claimed = store
            .claim_next_command(&machine, "agent-1", now, Lane::Live)
            .await
            .unwrap()
            .unwrap();
        store
            .put_chunk(&machine, &claimed.command, &first_chunk())
            .await
            .unwrap();
        assert!(
            store.abandoned_chunks(10).await.unwrap().is_empty(),
            "{}: still running",
            backend.name
        );
        store
            .cancel_action(TENANT, "a1", "lead", Some("stop"), now)
            .await
            .unwrap();
        let abandoned = store.abandoned_chunks(10).await.unwrap();
        assert_eq!(abandoned.len(), 1, "{}", backend.name);
        assert_eq!(abandoned[0].command, claimed.command);
        assert_eq!(abandoned[0].chunks, [0]);
        assert_eq!(abandoned[0].result, None);
        assert!(store.forget_result(&claimed.command, now).await.unwrap());
        assert!(store.abandoned_chunks(10).await.unwrap().is_empty());
        assert!(
            store
                .list_chunks(&claimed.command)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
