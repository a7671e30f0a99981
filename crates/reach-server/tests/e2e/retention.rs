//! Retention through the running server: results and collected files past
//! their period leave the object store (the action and the evidence hash
//! stay, the download link says why it is gone), unused library files are
//! pruned when asked, and the audit trail records its own pruning.

use reach_proto::api::ActionStatus;
use reach_server::audit::{self, Verdict};
use reach_server::retention::{Report, run_once};
use reach_server::time::Micros;

use reach_server::testing::*;

const DAY: u64 = 24 * 3600;

#[tokio::test]
async fn results_past_their_period_are_deleted_and_the_record_stays() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("hello.sh", b"#!/bin/sh\necho hi\n").await;
    let evidence = device.work_dir().join("evidence.txt");
    std::fs::write(&evidence, b"evidence").unwrap();
    let done = server
        .run(
            &device.machine_id,
            vec![
                run_script("hello.sh", None),
                get_file(evidence.to_str().unwrap()),
            ],
        )
        .await;
    assert_status(&done, ActionStatus::Succeeded);
    let stored = server
        .state
        .store
        .get_action(&server.tenant_id, &done.id)
        .await
        .unwrap();
    let keys: Vec<String> = stored
        .commands
        .iter()
        .map(|c| c.result.clone().unwrap().key)
        .collect();
    // A pending action on another machine is never touched.
    let offline = server.enroll("offline").await;
    server
        .client
        .run_live_response(&offline.machine_id, &request(vec![get_file("/x")], "t"))
        .await
        .unwrap();

    let state = &server.state;
    // The transcript came with the outcome: it is kept in the database.
    let transcript = reach_server::store::inline_result_command(&keys[0]).unwrap();
    state
        .store
        .inline_result(&server.tenant_id, &transcript)
        .await
        .unwrap();
    let soon = run_once(state, Micros::now().plus_secs(29 * DAY))
        .await
        .unwrap();
    assert_eq!(soon.results, 0, "not yet past 30 days");
    let later = Micros::now().plus_secs(31 * DAY);
    let report = run_once(state, later).await.unwrap();
    assert_eq!(report.results, 2);
    assert_eq!(run_once(state, later).await.unwrap().results, 0, "once");

    assert!(
        state
            .store
            .inline_result(&server.tenant_id, &transcript)
            .await
            .is_err(),
        "transcript gone"
    );
    let chunk = reach_server::files::Files::chunk_key(&keys[1], 0);
    assert!(
        state.files.check_exists(&chunk).await.is_err(),
        "collected file gone"
    );
    let action = server.client.action(&done.id).await.unwrap();
    assert_status(&action, ActionStatus::Succeeded);
    let kept = state
        .store
        .get_action(&server.tenant_id, &done.id)
        .await
        .unwrap();
    assert!(
        kept.commands[1].file_sha256.is_some(),
        "the evidence hash stays"
    );
    let gone = server
        .client
        .download_link(&done.id, 1)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        gone.contains("404") && gone.contains("retention period (30 days)"),
        "{gone}"
    );

    let deleted = server
        .client
        .audit_log(&[("$filter", "operation eq 'ResultDeleted'")])
        .await
        .unwrap()
        .value;
    assert_eq!(deleted.len(), 2);
    assert!(
        deleted.iter().all(|e| e.actor_type == "system"
            && e.machine_id.as_deref() == Some(device.machine_id.as_str()))
    );
}

#[tokio::test]
async fn unused_library_files_are_pruned_only_when_configured() {
    let kept = TestServer::start().await;
    kept.upload("old.sh", b"echo").await;
    let report = run_once(&kept.state, Micros::now().plus_secs(400 * DAY))
        .await
        .unwrap();
    assert_eq!(report.library_files, 0, "kept by default");
    assert_eq!(kept.client.library().await.unwrap().value.len(), 1);

    let server = TestServer::start_with(|c| c.retention.unused_library_days = 10).await;
    server.upload("unused.sh", b"echo unused").await;
    server.upload("needed.sh", b"echo needed").await;
    let offline = server.enroll("offline").await;
    server
        .client
        .run_live_response(
            &offline.machine_id,
            &request(vec![put_file("needed.sh")], "t"),
        )
        .await
        .unwrap();
    let report = run_once(&server.state, Micros::now().plus_secs(11 * DAY))
        .await
        .unwrap();
    assert_eq!(report.library_files, 1);
    let left: Vec<String> = server
        .client
        .library()
        .await
        .unwrap()
        .value
        .into_iter()
        .map(|f| f.file_name)
        .collect();
    assert_eq!(left, ["needed.sh"], "a queued action still needs it");
    let pruned = server
        .client
        .audit_log(&[("$filter", "operation eq 'LibraryFilePruned'")])
        .await
        .unwrap()
        .value;
    assert_eq!(pruned[0].target.as_deref(), Some("unused.sh"));
}

#[tokio::test]
async fn the_audit_trail_records_its_own_pruning_and_stays_verifiable() {
    let server = TestServer::start_with(|c| c.retention.audit_days = 90).await;
    server.upload("a.sh", b"echo").await;
    let store = server.state.store.as_ref();
    let before = store.audit_page(0, Micros(i64::MIN), 1000).await.unwrap();
    assert!(before.len() >= 2);

    let report = run_once(&server.state, Micros::now().plus_secs(91 * DAY))
        .await
        .unwrap();
    assert_eq!(report.audit_entries, before.len() as u64);
    let after = store.audit_page(0, Micros(i64::MIN), 1000).await.unwrap();
    let pruning = after
        .iter()
        .find(|e| e.event.operation == audit::Operation::AuditPruned.as_str())
        .expect("the pruning is in the trail");
    let details: serde_json::Value = serde_json::from_str(&pruning.event.details).unwrap();
    assert_eq!(details["throughId"], before.last().unwrap().seq);
    assert_eq!(details["retentionDays"], 90);
    assert!(matches!(
        audit::verify(store).await.unwrap(),
        Verdict::Intact { .. }
    ));
    assert_eq!(
        run_once(&server.state, Micros::now()).await.unwrap(),
        Report::default(),
        "nothing is old now"
    );
}
