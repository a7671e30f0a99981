//! Batches: one call runs on every machine it targets (by ids, tags, an
//! OData filter or all), each machine's part an ordinary MachineAction with
//! a `batchId`; exact counts; a busy machine runs its batch action after
//! its current one; targets checked and scoped; expiry.

use reach_proto::api::{ActionStatus, Batch, BatchTargets, Command, CreateBatchRequest, roles};

use reach_server::admin;
use reach_server::testing::*;

fn batch(commands: Vec<Command>, machines: BatchTargets) -> CreateBatchRequest {
    CreateBatchRequest {
        commands: Some(commands),
        comment: Some("sweep".into()),
        machines: Some(machines),
        ..CreateBatchRequest::default()
    }
}

fn ids(ids: &[&str]) -> BatchTargets {
    BatchTargets {
        ids: Some(ids.iter().map(|s| s.to_string()).collect()),
        ..BatchTargets::default()
    }
}

/// Polls the batch until `done` holds.
async fn wait_batch(server: &TestServer, id: &str, done: impl Fn(&Batch) -> bool) -> Batch {
    wait_for(&format!("batch {id} reaching the state"), async || {
        let batch = server.client.batch(id).await.unwrap();
        let c = batch.counts;
        let sum = c.pending + c.in_progress + c.succeeded + c.failed + c.timed_out + c.cancelled;
        assert_eq!(
            sum, batch.machine_count,
            "counts sum to the machines: {batch:?}"
        );
        done(&batch).then_some(batch)
    })
    .await
}

#[tokio::test]
async fn a_batch_runs_on_every_machine_it_targets() {
    let server = TestServer::start().await;
    let (a, b, c) = (
        server.agent().await,
        server.agent().await,
        server.agent().await,
    );
    let offline = server.enroll("offline").await;
    for device in [&a, &b] {
        server
            .client
            .tag_machine(&device.machine_id, "web", true)
            .await
            .unwrap();
    }
    server.upload("hi.sh", b"echo hi\n").await;
    let commands = vec![run_script("hi.sh", None)];

    // By tag: the two web machines.
    let by_tag = BatchTargets {
        tags: Some(vec!["WEB".into()]),
        ..BatchTargets::default()
    };
    let created = server
        .client
        .create_batch(&batch(commands.clone(), by_tag))
        .await
        .unwrap();
    assert_eq!(created.status, "Running");
    assert_eq!(created.machine_count, 2);
    assert_eq!(created.counts.pending, 2);
    assert_eq!(created.requestor_comment.as_deref(), Some("sweep"));
    let done = wait_batch(&server, &created.id, |b| b.status == "Completed").await;
    assert_eq!(done.counts.succeeded, 2);
    // Each machine's part is an ordinary action naming its batch.
    let filter = format!("batchId eq '{}'", created.id);
    let actions = server
        .client
        .actions(&[("$filter", &filter), ("$count", "true")])
        .await
        .unwrap();
    assert_eq!(actions.count, Some(2));
    let mut machines: Vec<String> = actions.value.iter().map(|a| a.machine_id.clone()).collect();
    machines.sort();
    let mut web = vec![a.machine_id.clone(), b.machine_id.clone()];
    web.sort();
    assert_eq!(machines, web);
    for action in &actions.value {
        assert_eq!(action.batch_id.as_deref(), Some(created.id.as_str()));
        assert_status(action, ActionStatus::Succeeded);
        let transcript = server.result(&action.id, 0).await;
        assert!(String::from_utf8_lossy(&transcript).contains("hi"));
    }
    let listed = server
        .client
        .batch_actions(&created.id, &[("$filter", "status eq 'Succeeded'")])
        .await
        .unwrap();
    assert_eq!(listed.value.len(), 2);

    // By id (repeated ids count once) and by filter.
    let by_ids = server
        .client
        .create_batch(&batch(
            commands.clone(),
            ids(&[&a.machine_id, &c.machine_id, &a.machine_id]),
        ))
        .await
        .unwrap();
    assert_eq!(by_ids.machine_count, 2);
    let active = BatchTargets {
        filter: Some("healthStatus eq 'Active'".into()),
        ..BatchTargets::default()
    };
    let by_filter = server
        .client
        .create_batch(&batch(commands.clone(), active))
        .await
        .unwrap();
    assert_eq!(by_filter.machine_count, 3);
    wait_batch(&server, &by_ids.id, |b| b.counts.succeeded == 2).await;
    wait_batch(&server, &by_filter.id, |b| b.counts.succeeded == 3).await;

    // All: the offline machine waits, so the batch runs on.
    let all = BatchTargets {
        all: Some(true),
        ..BatchTargets::default()
    };
    let everyone = server
        .client
        .create_batch(&batch(commands, all))
        .await
        .unwrap();
    assert_eq!(everyone.machine_count, 4);
    let waiting = wait_batch(&server, &everyone.id, |b| b.counts.succeeded == 3).await;
    assert_eq!(waiting.status, "Running");
    assert_eq!(waiting.counts.pending, 1);
    let pending = server
        .client
        .batch_actions(&everyone.id, &[("$filter", "status eq 'Pending'")])
        .await
        .unwrap();
    assert_eq!(pending.value[0].machine_id, offline.machine_id);

    // Newest first, with $count and OData on the batch's properties.
    let listed = server.client.batches(&[("$count", "true")]).await.unwrap();
    assert_eq!(listed.count, Some(4));
    assert_eq!(listed.value[0].id, everyone.id);
    let completed = server
        .client
        .batches(&[("$filter", "status eq 'Completed'")])
        .await
        .unwrap();
    assert_eq!(completed.value.len(), 3);
}

/// A machine busy with an action runs its batch action right after it;
/// while the batch action waits, a single `runliveresponse` on the machine
/// is refused as Defender refuses a second active request.
#[tokio::test]
async fn a_busy_machine_runs_its_batch_action_after_its_current_one() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    let gate = tempfile::tempdir().unwrap();
    let open = gate.path().join("open");
    server
        .upload(
            "wait.sh",
            b"while [ ! -e \"$1\" ]; do sleep 0.02; done\necho through\n",
        )
        .await;
    server.upload("hi.sh", b"echo hi\n").await;
    let args = open.display().to_string();
    let busy = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("wait.sh", Some(&args))], "busy"),
        )
        .await
        .unwrap();
    server
        .wait_until(&busy.id, |a| a.status == ActionStatus::InProgress)
        .await;
    let created = server
        .client
        .create_batch(&batch(
            vec![run_script("hi.sh", None)],
            ids(&[&device.machine_id]),
        ))
        .await
        .unwrap();
    let refused = server
        .client
        .request(
            reqwest::Method::POST,
            &format!("/api/machines/{}/runliveresponse", device.machine_id),
        )
        .json(&request(vec![run_script("hi.sh", None)], "third"))
        .send()
        .await
        .unwrap();
    assert_error(refused, 400, "ActiveRequestAlreadyExists").await;
    let queued = server.client.batch(&created.id).await.unwrap();
    assert_eq!(
        queued.counts.pending, 1,
        "it waits behind the running action"
    );
    std::fs::write(&open, b"").unwrap();
    assert_status(&server.wait_final(&busy.id).await, ActionStatus::Succeeded);
    let done = wait_batch(&server, &created.id, |b| b.status == "Completed").await;
    assert_eq!(done.counts.succeeded, 1);
}

#[tokio::test]
async fn batch_targets_are_checked_and_scoped() {
    let server = TestServer::start().await;
    let store = server.state.store.as_ref();
    let tenant = &server.tenant_id;
    let inside = server.enroll("web").await;
    let outside = server.enroll("db").await;
    admin::change_tags(store, tenant, &inside.machine_id, &["web".into()], &[])
        .await
        .unwrap();
    admin::create_group(store, tenant, "web", &["web".into()])
        .await
        .unwrap();
    let app = admin::create_scoped_app(
        store,
        tenant,
        "web team",
        vec![roles::LIVE_RESPONSE.into(), roles::READ.into()],
        vec!["web".into()],
    )
    .await
    .unwrap();
    let scoped = server.login(&app).await;
    let commands = vec![get_file("/etc/hostname")];
    let post = |client: &reach_client::Client, body: serde_json::Value| {
        client
            .request(reqwest::Method::POST, "/api/batches")
            .json(&body)
            .send()
    };
    let cases = [
        (
            serde_json::json!({"Commands": commands, "Machines": {}}),
            400,
            "InvalidRequestBody",
        ),
        (
            serde_json::json!({"Commands": commands, "Machines": {"All": true, "Tags": ["web"]}}),
            400,
            "InvalidRequestBody",
        ),
        (
            serde_json::json!({"Commands": commands, "Machines": {"Tags": ["nothing-has-it"]}}),
            400,
            "InvalidInput",
        ),
        (
            serde_json::json!({"Commands": commands}),
            400,
            "MissingRequiredParameter",
        ),
        (
            serde_json::json!({"Commands": [], "Machines": {"All": true}}),
            400,
            "InvalidRequestBody",
        ),
        (
            serde_json::json!({"Commands": commands, "Machines": {"All": true}, "ExpiresInSeconds": 0}),
            400,
            "InvalidInput",
        ),
        (
            serde_json::json!({"Commands": commands, "Machines": {"All": true}, "Rollout": {"WaveSize": 0}}),
            400,
            "InvalidInput",
        ),
        (
            serde_json::json!({"Commands": commands, "Machines": {"All": true}, "Rollout": {"WaveSize": u64::MAX}}),
            400,
            "InvalidInput",
        ),
    ];
    for (body, status, code) in cases {
        let response = post(&server.client, body.clone()).await.unwrap();
        assert_error(response, status, code).await;
    }
    // An id the caller cannot see is named, as a machine that does not exist.
    let response = post(
        &scoped,
        serde_json::json!({"Commands": commands, "Machines": {"Ids": [inside.machine_id, outside.machine_id]}}),
    )
    .await
    .unwrap();
    let error = assert_error(response, 404, "ResourceNotFound").await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&outside.machine_id),
        "{error}"
    );
    // All, for a caller limited to its groups, is its groups' machines.
    let mine = scoped
        .create_batch(&batch(
            commands.clone(),
            BatchTargets {
                all: Some(true),
                ..BatchTargets::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(mine.machine_count, 1);
    let theirs = server
        .client
        .create_batch(&batch(commands, ids(&[&outside.machine_id])))
        .await
        .unwrap();
    // It sees its own batches only, and the others do not exist for it.
    let listed = scoped.batches(&[]).await.unwrap();
    assert_eq!(listed.value.len(), 1);
    assert_eq!(listed.value[0].id, mine.id);
    let hidden = scoped.batch(&theirs.id).await.unwrap_err();
    assert!(hidden.to_string().contains("404"), "{hidden}");
    assert_eq!(server.client.batches(&[]).await.unwrap().value.len(), 2);
}

/// A batch's actions still waiting when it expires end TimeOut.
#[tokio::test]
async fn a_batch_expires_for_machines_that_never_came() {
    let server = TestServer::start().await;
    let offline = server.enroll("offline").await;
    let request = CreateBatchRequest {
        expires_in_seconds: Some(1),
        ..batch(vec![get_file("/etc/hostname")], ids(&[&offline.machine_id]))
    };
    let created = server.client.create_batch(&request).await.unwrap();
    let done = wait_batch(&server, &created.id, |b| b.status == "Completed").await;
    assert_eq!(done.counts.timed_out, 1);
}

/// Results: one NDJSON line per machine whose command is final, with the
/// transcript of a RunScript and the hash and a fresh link of a GetFile.
#[tokio::test]
async fn a_batchs_results_stream_one_line_per_machine() {
    let server = TestServer::start().await;
    let devices = [server.agent().await, server.agent().await];
    let offline = server.enroll("offline").await;
    let evidence = devices[0].dir.path().join("evidence.txt");
    std::fs::write(&evidence, b"collected\n").unwrap();
    server.upload("hi.sh", b"echo hi from batch\n").await;
    let created = server
        .client
        .create_batch(&batch(
            vec![
                run_script("hi.sh", None),
                get_file(evidence.to_str().unwrap()),
            ],
            ids(&[
                &devices[0].machine_id,
                &devices[1].machine_id,
                &offline.machine_id,
            ]),
        ))
        .await
        .unwrap();
    wait_batch(&server, &created.id, |b| b.counts.succeeded == 2).await;
    let fetch = |index: &str| {
        server
            .client
            .request(
                reqwest::Method::GET,
                &format!("/api/batches/{}/results?index={index}", created.id),
            )
            .send()
    };
    let response = fetch("0").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The offline machine's command may still run: no line for it.
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert_eq!(line["status"], "Succeeded");
        assert_eq!(line["commandStatus"], "Completed");
        assert_eq!(line["transcript"]["exit_code"], 0);
        assert_eq!(line["transcript"]["script_output"], "hi from batch\n");
        assert!(line["actionId"].is_string() && line["computerDnsName"].is_string());
    }
    // The GetFile (both agents share this host's files): the file's hash,
    // and a link to its gzip.
    let text = fetch("1").await.unwrap().text().await.unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in &lines {
        assert_eq!(
            line["machineId"].as_str().unwrap().len(),
            devices[0].machine_id.len()
        );
        assert_eq!(line["commandStatus"], "Completed", "{line}");
        let url = line["downloadUrl"].as_str().unwrap();
        let gz = server
            .client
            .download(url)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, "collected\n");
        use sha2::Digest;
        assert_eq!(
            line["sha256"],
            hex::encode(sha2::Sha256::digest(b"collected\n"))
        );
    }
    for (index, code) in [
        ("", "InvalidInput"),
        ("2", "InvalidInput"),
        ("x", "InvalidInput"),
    ] {
        assert_error(fetch(index).await.unwrap(), 400, code).await;
    }
}
