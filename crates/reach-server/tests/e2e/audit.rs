//! The audit trail through the public API: what a live response session
//! leaves in it, who may read it, OData over it, and `verify` finding an
//! altered or removed entry.

use reach_proto::api::{AuditLogEntry, roles};
use reach_server::audit::{self, Verdict};

use reach_server::testing::*;

fn find<'a>(entries: &'a [AuditLogEntry], operation: &str) -> Vec<&'a AuditLogEntry> {
    entries
        .iter()
        .filter(|e| e.operation == operation)
        .collect()
}

#[tokio::test]
async fn a_session_is_recorded_from_token_to_download() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("hello.sh", b"#!/bin/sh\necho hi\n").await;
    let hostname = device.work_dir().join("h.txt");
    std::fs::write(&hostname, b"evidence").unwrap();
    let done = server
        .run(
            &device.machine_id,
            vec![
                run_script("hello.sh", Some("--quick")),
                get_file(hostname.to_str().unwrap()),
            ],
        )
        .await;
    server.result(&done.id, 1).await;

    let log = server.client.audit_log(&[("$top", "100")]).await.unwrap();
    let entries = log.value;
    // Newest first, numbered in the one chain.
    assert!(entries.windows(2).all(|w| w[0].id > w[1].id));

    let token = find(&entries, "POST /{tenant}/oauth2/v2.0/token");
    assert!(!token.is_empty(), "{entries:#?}");
    assert_eq!(token[0].actor_type, "app");
    assert_eq!(token[0].outcome, "Succeeded");
    assert_eq!(token[0].source_ip.as_deref(), Some("127.0.0.1"));

    let upload = find(&entries, "POST /api/libraryfiles")[0];
    assert_eq!(upload.target.as_deref(), Some("hello.sh"));
    assert_eq!(upload.details["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(upload.actor_name, "everything");

    let run = find(&entries, "POST /api/machines/{id}/runliveresponse")[0];
    assert_eq!(run.http_status, Some(201));
    assert_eq!(run.machine_id.as_deref(), Some(device.machine_id.as_str()));
    assert_eq!(run.target.as_deref(), Some(done.id.as_str()));
    assert_eq!(run.details["commands"][0]["type"], "RunScript");
    assert_eq!(run.details["commands"][0]["args"], "--quick");
    assert_eq!(run.details["commands"][1]["type"], "GetFile");
    assert_eq!(run.tenant_id, server.tenant_id);

    for operation in ["CommandStarted", "CommandFinished"] {
        let steps = find(&entries, operation);
        assert_eq!(steps.len(), 2, "{operation}: {entries:#?}");
        for step in steps {
            assert_eq!(step.actor_type, "machine");
            assert_eq!(step.actor_id, device.machine_id);
            assert_eq!(step.outcome, "Succeeded");
            assert!(step.target.as_deref().unwrap().starts_with(&done.id));
        }
    }
    let collected = find(&entries, "CommandFinished")
        .into_iter()
        .find(|e| e.target.as_deref() == Some(&format!("{}/1", done.id)))
        .unwrap();
    assert_eq!(collected.details["fileSha256"].as_str().unwrap().len(), 64);

    let link = find(
        &entries,
        "GET /api/machineactions/{id}/getliveresponseresultdownloadlink/{args}",
    )[0];
    assert_eq!(link.machine_id.as_deref(), Some(device.machine_id.as_str()));
    let download = find(&entries, "GET /download/{*path}")[0];
    assert_eq!(download.actor_type, "link");
    assert_eq!(download.tenant_id, server.tenant_id);
    assert_eq!(download.outcome, "Succeeded");

    // Each entry links to the one before it.
    let mut oldest_first = entries.clone();
    oldest_first.reverse();
    for pair in oldest_first.windows(2) {
        if pair[1].id == pair[0].id + 1 {
            assert_eq!(pair[1].previous_hash, pair[0].hash);
        }
    }
    assert!(matches!(
        audit::verify(server.state.store.as_ref()).await.unwrap(),
        Verdict::Intact { .. }
    ));
}

#[tokio::test]
async fn reading_needs_its_own_role_and_refusals_are_recorded() {
    let server = TestServer::start().await;
    let responder = server
        .app(
            "responder",
            &[roles::LIVE_RESPONSE, roles::READ_ALL, roles::LIBRARY_MANAGE],
        )
        .await;
    let refused = responder.audit_log(&[]).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");

    // A call with a forged token is recorded, outside any tenant.
    let forged = reqwest::Client::new()
        .post(format!("{}/api/machines/abc/runliveresponse", server.url))
        .bearer_auth("e30.e30.e30")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let denied = server
        .client
        .audit_log(&[("$filter", "outcome eq 'Denied'")])
        .await
        .unwrap()
        .value;
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0].operation, "GET /api/auditlog");
    assert_eq!(denied[0].actor_name, "responder");
    assert_eq!(denied[0].http_status, Some(403));

    let everyone = server
        .state
        .store
        .audit_page(0, reach_server::time::Micros(i64::MIN), 1000)
        .await
        .unwrap();
    let anonymous = everyone
        .iter()
        .find(|e| e.event.actor_type == "anonymous")
        .expect("the forged call is recorded");
    assert_eq!(anonymous.event.tenant_id, "");
    assert_eq!(anonymous.event.http_status, Some(401));
    assert_eq!(anonymous.event.machine_id, None);
}

#[tokio::test]
async fn odata_narrows_and_pages_the_trail() {
    let server = TestServer::start().await;
    for name in ["a.sh", "b.sh", "c.sh"] {
        server.upload(name, b"echo").await;
    }
    let uploads = server
        .client
        .audit_log(&[
            ("$filter", "operation eq 'POST /api/libraryfiles'"),
            ("$orderby", "id asc"),
            ("$count", "true"),
        ])
        .await
        .unwrap();
    assert_eq!(uploads.count, Some(3));
    let targets: Vec<_> = uploads
        .value
        .iter()
        .map(|e| e.target.clone().unwrap())
        .collect();
    assert_eq!(targets, ["a.sh", "b.sh", "c.sh"]);
    let first = uploads.value[0].id;
    let later = server
        .client
        .audit_log(&[
            (
                "$filter",
                &format!("id gt {first} and startswith(operation, 'POST /api/lib')"),
            ),
            ("$top", "1"),
            ("$skip", "1"),
        ])
        .await
        .unwrap();
    assert_eq!(later.value.len(), 1);
    assert_eq!(later.value[0].target.as_deref(), Some("b.sh"));
    let (status, body) = server.get_raw("/api/auditlog?$filter=id eq 'x'").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = server.get_raw("/api/auditlog?$filter=secret eq 'x'").await;
    assert_eq!(status, 400);
}

/// Opens the test server's SQLite database beside it, for tampering.
async fn database(server: &TestServer) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = reach_server::store::sql::sqlite_url(&server.state.config.data_dir.join("reach.db"));
    sqlx::AnyPool::connect(&url).await.unwrap()
}

#[tokio::test]
async fn verify_finds_an_altered_and_a_removed_entry() {
    let server = TestServer::start().await;
    for name in ["a.sh", "b.sh", "c.sh", "d.sh"] {
        server.upload(name, b"echo").await;
    }
    let store = server.state.store.as_ref();
    let Verdict::Intact { entries, head, .. } = audit::verify(store).await.unwrap() else {
        panic!("a fresh trail is intact");
    };
    assert!(entries >= 5, "{entries}");
    let upload = server
        .client
        .audit_log(&[("$filter", "target eq 'b.sh'")])
        .await
        .unwrap()
        .value[0]
        .id;
    assert!(head.unwrap().0 > upload);

    let db = database(&server).await;
    sqlx::query("UPDATE audit_log SET target = 'innocent.sh' WHERE seq = $1")
        .bind(upload)
        .execute(&db)
        .await
        .unwrap();
    let verdict = audit::verify(store).await.unwrap();
    assert_eq!(
        verdict,
        Verdict::Broken {
            seq: upload,
            reason: "its contents do not match its hash (altered)".into()
        }
    );

    // Rewriting the entry's hash as well moves the break to the next entry.
    let rows = store
        .audit_page(upload - 1, reach_server::time::Micros(i64::MIN), 1)
        .await
        .unwrap();
    let forged = reach_server::store::audit::link_hash(upload, &rows[0].event, &rows[0].prev_hash);
    sqlx::query("UPDATE audit_log SET hash = $1 WHERE seq = $2")
        .bind(&forged)
        .bind(upload)
        .execute(&db)
        .await
        .unwrap();
    assert!(matches!(
        audit::verify(store).await.unwrap(),
        Verdict::Broken { seq, .. } if seq == upload + 1
    ));

    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(upload)
        .execute(&db)
        .await
        .unwrap();
    match audit::verify(store).await.unwrap() {
        Verdict::Broken { seq, reason } => {
            assert_eq!(seq, upload);
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("a removed entry went unnoticed: {other:?}"),
    }
}

/// The token request's recorded source, for a request sent with `forwarded`.
async fn recorded_source(server: &TestServer, forwarded: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            server.url, server.tenant_id
        ))
        .header("x-forwarded-for", forwarded)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "who"),
            ("client_secret", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let everyone = server
        .state
        .store
        .audit_page(0, reach_server::time::Micros(i64::MIN), 1000)
        .await
        .unwrap();
    everyone
        .into_iter()
        .rev()
        .find(|e| e.event.actor_id == "who")
        .and_then(|e| e.event.source_ip)
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let direct = TestServer::start().await;
    assert_eq!(
        recorded_source(&direct, "203.0.113.9").await.as_deref(),
        Some("127.0.0.1"),
        "a client cannot choose its recorded address"
    );
    let proxied =
        TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    assert_eq!(
        recorded_source(&proxied, "6.6.6.6, 203.0.113.9")
            .await
            .as_deref(),
        Some("203.0.113.9"),
        "the address the trusted proxy appended"
    );
}

#[tokio::test]
async fn a_flood_of_refused_strangers_is_one_entry_then_one_count() {
    let server = TestServer::start_with(|c| c.limits.refusal_audit_window_secs = 1).await;
    let http = reqwest::Client::builder()
        .local_address("127.0.0.9".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let url = format!("{}/{}/oauth2/v2.0/token", server.url, server.tenant_id);
    for i in 0..30 {
        let response = http
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &format!("guess-{i}")),
                ("client_secret", "guess"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let from_there = || async {
        server
            .state
            .store
            .audit_page(0, reach_server::time::Micros(i64::MIN), 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event.source_ip.as_deref() == Some("127.0.0.9"))
            .collect::<Vec<_>>()
    };
    let first = from_there().await;
    assert_eq!(
        first.len(),
        1,
        "the first refusal at once, the rest counted"
    );
    assert_eq!(first[0].event.actor_id, "guess-0");
    // When the window ends, one more entry carries the count.
    let entries = wait_for("the count being written", async || {
        let entries = from_there().await;
        (entries.len() > 1).then_some(entries)
    })
    .await;
    assert_eq!(entries.len(), 2);
    let details: serde_json::Value = serde_json::from_str(&entries[1].event.details).unwrap();
    assert_eq!(details["repeatedRefusals"], 29, "{details}");
    assert_eq!(entries[1].event.actor_id, "guess-29");
    assert_eq!(entries[1].event.outcome, "Denied");
    // A caller with a valid token is recorded call by call, as before.
    let reader = server.app("reader", &[roles::READ_ALL]).await;
    for _ in 0..3 {
        assert!(reader.audit_log(&[]).await.is_err());
    }
    let denied = server
        .client
        .audit_log(&[("$filter", "actorName eq 'reader' and outcome eq 'Denied'")])
        .await
        .unwrap()
        .value;
    assert_eq!(denied.len(), 3);
}
