//! Machine tags over the API (Defender's three routes): what automation
//! calls around live response, and what Reach's device groups are made of.

use reach_proto::api::roles;
use reach_server::admin;
use reqwest::Method;
use serde_json::json;

use reach_server::testing::*;

#[tokio::test]
async fn a_machine_is_tagged_and_untagged_and_found_by_its_tags() {
    let server = TestServer::start().await;
    let a = server.enroll("a").await;
    let b = server.enroll("b").await;
    let c = &server.client;

    let tagged = c
        .tag_machine(&a.machine_id, "Incident-4711", true)
        .await
        .unwrap();
    assert_eq!(tagged.machine_tags, ["Incident-4711"]);
    // Again, in another case: still one tag.
    let again = c
        .tag_machine(&a.machine_id, "incident-4711", true)
        .await
        .unwrap();
    assert_eq!(again.machine_tags, ["Incident-4711"]);
    let both = c
        .tag_machines(
            &[a.machine_id.clone(), b.machine_id.clone()],
            "contained",
            true,
        )
        .await
        .unwrap();
    assert_eq!(both.value.len(), 2);
    assert!(
        both.value
            .iter()
            .all(|m| m.machine_tags.contains(&"contained".to_string()))
    );

    let exact = c.find_by_tag("CONTAINED", false).await.unwrap();
    assert_eq!(exact.value.len(), 2);
    let prefix = c.find_by_tag("incident-", true).await.unwrap();
    assert_eq!(prefix.value.len(), 1);
    assert_eq!(prefix.value[0].id, a.machine_id);
    assert!(
        c.find_by_tag("incident-", false)
            .await
            .unwrap()
            .value
            .is_empty()
    );
    // LIKE's wildcards are literal characters here.
    assert!(c.find_by_tag("%", true).await.unwrap().value.is_empty());
    assert!(
        c.find_by_tag("_ncident", true)
            .await
            .unwrap()
            .value
            .is_empty()
    );

    let removed = c
        .tag_machine(&a.machine_id, "CONTAINED", false)
        .await
        .unwrap();
    assert_eq!(removed.machine_tags, ["Incident-4711"]);
    // Paths in any case, as Defender's, and the raw body shape automation sends.
    let response = c
        .request(
            Method::POST,
            &format!("/API/Machines/{}/Tags", b.machine_id),
        )
        .json(&json!({"Value": "triage", "Action": "add"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let machine: serde_json::Value = response.json().await.unwrap();
    assert_eq!(machine["machineTags"], json!(["contained", "triage"]));
    let (status, found) = server
        .get_raw("/api/machines/FindByTag?tag=triage&useStartsWithFilter=false")
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["value"][0]["id"], b.machine_id.as_str());

    // Each change is in the audit trail, with its machine.
    let trail = c
        .audit_log(&[("$filter", "operation eq 'MachineTagsChanged'")])
        .await
        .unwrap();
    assert_eq!(trail.value.len(), 6, "{:#?}", trail.value);
    assert!(trail.value.iter().all(|e| e.machine_id.is_some()));
}

#[tokio::test]
async fn tag_requests_are_checked() {
    let server = TestServer::start().await;
    let device = server.enroll("a").await;
    let c = &server.client;
    let path = format!("/api/machines/{}/tags", device.machine_id);
    for (body, status, code) in [
        (json!({"Action": "Add"}), 400, "MissingRequiredParameter"),
        (json!({"Value": "x"}), 400, "MissingRequiredParameter"),
        (
            json!({"Value": "x", "Action": "Toggle"}),
            400,
            "InvalidInput",
        ),
        (json!({"Value": "  ", "Action": "Add"}), 400, "InvalidInput"),
        (
            json!({"Value": "x".repeat(201), "Action": "Add"}),
            400,
            "InvalidInput",
        ),
        (
            json!({"Value": "a\u{7}b", "Action": "Add"}),
            400,
            "InvalidInput",
        ),
        (
            json!({"Value": 5, "Action": "Add"}),
            400,
            "InvalidRequestBody",
        ),
    ] {
        let response = c
            .request(Method::POST, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, status, code).await;
    }
    let bulk = "/api/machines/AddOrRemoveTagForMultipleMachines";
    let too_many: Vec<String> = (0..501).map(|n| format!("m{n}")).collect();
    for (body, status, code) in [
        (
            json!({"Value": "x", "Action": "Add"}),
            400,
            "MissingRequiredParameter",
        ),
        (
            json!({"Value": "x", "Action": "Add", "MachineIds": []}),
            400,
            "MissingRequiredParameter",
        ),
        (
            json!({"Value": "x", "Action": "Add", "MachineIds": too_many}),
            400,
            "MaximumBatchSizeExceeded",
        ),
        // One unknown id: 404, and the known machine is left as it was.
        (
            json!({"Value": "x", "Action": "Add", "MachineIds": [device.machine_id, "nope"]}),
            404,
            "ResourceNotFound",
        ),
    ] {
        let response = c
            .request(Method::POST, bulk)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(response, status, code).await;
    }
    assert!(
        c.machine(&device.machine_id)
            .await
            .unwrap()
            .machine_tags
            .is_empty()
    );
    let (status, _) = server.get_raw("/api/machines/findbytag").await;
    assert_eq!(status, 400);
    let (status, _) = server
        .get_raw("/api/machines/findbytag?tag=x&useStartsWithFilter=maybe")
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn tagging_needs_read_write_and_reaches_only_visible_machines() {
    let server = TestServer::start().await;
    let store = server.state.store.as_ref();
    let tenant = &server.tenant_id;
    let inside = server.enroll("web").await;
    let outside = server.enroll("db").await;
    admin::change_tags(store, tenant, &inside.machine_id, &["web".into()], &[])
        .await
        .unwrap();
    admin::change_tags(store, tenant, &outside.machine_id, &["db".into()], &[])
        .await
        .unwrap();
    admin::create_group(store, tenant, "web", &["web".into()])
        .await
        .unwrap();
    admin::create_group(store, tenant, "db", &["db".into()])
        .await
        .unwrap();

    // Reading is not enough.
    let reader = server.app("reader", &[roles::READ_ALL]).await;
    let err = reader
        .tag_machine(&inside.machine_id, "x", true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("Forbidden"), "{err}");

    let app = admin::create_scoped_app(
        store,
        tenant,
        "web team",
        vec![roles::READ_WRITE_ALL.to_string()],
        vec!["web".into()],
    )
    .await
    .unwrap();
    let scoped = server.login(&app).await;
    // A machine outside its groups does not exist for it, alone or in a batch.
    let err = scoped
        .tag_machine(&outside.machine_id, "web", true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFound"), "{err}");
    let err = scoped
        .tag_machines(
            &[inside.machine_id.clone(), outside.machine_id.clone()],
            "web",
            true,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFound"), "{err}");
    assert_eq!(
        server
            .client
            .machine(&outside.machine_id)
            .await
            .unwrap()
            .machine_tags,
        ["db"]
    );
    assert!(
        scoped
            .find_by_tag("db", false)
            .await
            .unwrap()
            .value
            .is_empty()
    );
    // It may move a machine it sees into another group, and then no longer sees it.
    scoped
        .tag_machine(&inside.machine_id, "db", true)
        .await
        .unwrap();
    scoped
        .tag_machine(&inside.machine_id, "web", false)
        .await
        .unwrap();
    let err = scoped.machine(&inside.machine_id).await.unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFound"), "{err}");
}

#[tokio::test]
async fn concurrent_tag_changes_all_land() {
    let server = TestServer::start().await;
    let device = server.enroll("a").await;
    let changes = (0..16).map(|n| {
        let client = server.client.clone();
        let id = device.machine_id.clone();
        async move { client.tag_machine(&id, &format!("tag-{n}"), true).await }
    });
    for result in futures::future::join_all(changes).await {
        result.unwrap();
    }
    let machine = server.client.machine(&device.machine_id).await.unwrap();
    assert_eq!(machine.machine_tags.len(), 16, "{:?}", machine.machine_tags);
}
