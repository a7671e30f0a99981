//! Defender's machine actions Reach refuses: runAntiVirusScan,
//! restrictCodeExecution and unrestrictCodeExecution answer 400 in the
//! envelope saying why, after the role (403) and the machine (404: unknown,
//! as a client's connection test expects) are checked; the paths match in
//! any case; nothing is stored and the refusal is an audit entry.

use reach_server::testing::*;

async fn post(client: &reach_client::Client, path: &str) -> reqwest::Response {
    client
        .request(reqwest::Method::POST, path)
        .json(&serde_json::json!({ "Comment": "test", "ScanType": "Quick" }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn unsupported_actions_say_why_after_the_role_and_the_machine() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    let machine = &device.machine_id;
    for action in [
        "runAntiVirusScan",
        "restrictCodeExecution",
        "unrestrictCodeExecution",
        "RUNANTIVIRUSSCAN",
    ] {
        let unknown = post(&server.client, &format!("/api/machines/nope/{action}")).await;
        assert_error(unknown, 404, "ResourceNotFound").await;
        let refused = post(&server.client, &format!("/api/machines/{machine}/{action}")).await;
        assert_eq!(refused.status(), 400, "{action}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "BadRequest");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("not supported by Reach agents"),
            "{message}"
        );
    }
    // A caller without the action's role learns nothing of the machine.
    let reader = server.app("reader", &["Machine.Read.All"]).await;
    let forbidden = post(&reader, "/api/machines/nope/runAntiVirusScan").await;
    assert_error(forbidden, 403, "Forbidden").await;
    // Nothing was stored; each refusal is in the trail.
    assert!(server.client.actions(&[]).await.unwrap().value.is_empty());
    let trail = server.client.audit_log(&[]).await.unwrap().value;
    let refusals = trail
        .iter()
        .filter(|e| e.target.as_deref() == Some(machine.as_str()) && e.http_status == Some(400))
        .count();
    assert_eq!(refusals, 4);
    // As Kibana's connection test calls them: an unknown machine is ResourceNotFound.
    for action in ["isolate", "unisolate"] {
        let test = post(
            &server.client,
            &format!("/api/machines/elastic-connector-test/{action}"),
        )
        .await;
        assert_error(test, 404, "ResourceNotFound").await;
    }
}
