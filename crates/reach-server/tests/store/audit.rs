//! The audit trail: appends from several nodes at once form one chain.

use super::*;

#[tokio::test]
async fn nodes_appending_to_the_audit_trail_at_once_form_one_chain() {
    for backend in backends().await {
        let nodes = [
            Arc::new(backend.open().await),
            Arc::new(backend.open().await),
        ];
        let mut tasks = Vec::new();
        for i in 0..16 {
            let node = nodes[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let events: Vec<AuditEvent> = (0..3)
                    .map(|j| {
                        let mut event = reach_server::audit::event(
                            TENANT,
                            reach_server::audit::Actor::system(),
                            Operation::MachineTagged,
                            Outcome::Succeeded,
                            serde_json::json!({ "task": i, "event": j }),
                        );
                        event.http_status = Some(200);
                        event.source_ip = Some("10.0.0.1".into());
                        event
                    })
                    .collect();
                node.append_audit(&events).await.unwrap()
            }));
        }
        for task in tasks {
            let appended = task.await.unwrap();
            // A batch keeps its order and its own links.
            assert_eq!(appended[1].seq, appended[0].seq + 1, "{}", backend.name);
            assert_eq!(appended[1].prev_hash, appended[0].hash);
        }
        let all = nodes[0]
            .audit_page(0, Micros(i64::MIN), 1000)
            .await
            .unwrap();
        let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=48).collect::<Vec<_>>(), "{}", backend.name);
        assert_eq!(all[0].event.http_status, Some(200), "round-trips");
        assert!(
            matches!(
                reach_server::audit::verify(nodes[1].as_ref())
                    .await
                    .unwrap(),
                reach_server::audit::Verdict::Intact { entries: 48, .. }
            ),
            "{}: one intact chain",
            backend.name
        );
        let (page, count) = nodes[1]
            .list_audit(
                TENANT,
                &query("$filter=sourceIp eq '10.0.0.1'&$top=5&$count=true"),
            )
            .await
            .unwrap();
        assert_eq!((page.len(), count), (5, Some(48)), "{}", backend.name);
        assert_eq!(page[0].seq, 48, "newest first");
    }
}

#[tokio::test]
async fn a_batch_larger_than_one_insert_is_one_intact_chain() {
    for backend in backends().await {
        let store = backend.open().await;
        let events: Vec<AuditEvent> = (0..150)
            .map(|i| {
                reach_server::audit::event(
                    TENANT,
                    reach_server::audit::Actor::system(),
                    Operation::MachineTagged,
                    Outcome::Succeeded,
                    serde_json::json!({ "event": i }),
                )
            })
            .collect();
        let appended = store.append_audit(&events).await.unwrap();
        assert_eq!(appended.len(), 150, "{}", backend.name);
        let stored = store.audit_page(0, Micros(i64::MIN), 1000).await.unwrap();
        assert_eq!(stored, appended, "{}: stored as returned", backend.name);
        assert!(
            matches!(
                reach_server::audit::verify(&store).await.unwrap(),
                reach_server::audit::Verdict::Intact { entries: 150, .. }
            ),
            "{}",
            backend.name
        );
    }
}
