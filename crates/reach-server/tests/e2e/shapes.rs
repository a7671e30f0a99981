//! Snapshots of the JSON that clients parse, exactly as it leaves the
//! server (raw bytes parsed as JSON, not re-serialised from our own types):
//! a Machine, the token response, a collection with `@odata.count`, the
//! error envelope and an audit entry. Ids, times, hashes and addresses are
//! redacted; every field name, type and fixed value is pinned. A change
//! here is a change to the contract: it needs docs/api.md to say so.

use reach_server::testing::*;

/// A server with one connected agent whose machine is tagged `web`.
async fn tagged_agent() -> (TestServer, Device) {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server
        .client
        .tag_machine(&device.machine_id, "web", true)
        .await
        .unwrap();
    (server, device)
}

#[tokio::test]
async fn a_machine() {
    let (server, device) = tagged_agent().await;
    let (status, machine) = server
        .get_raw(&format!("/api/machines/{}", device.machine_id))
        .await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("machine", machine, {
        ".id" => "[machine id]",
        ".computerDnsName" => "[host]",
        ".osPlatform" => "[os]",
        ".osVersion" => "[os version]",
        ".osArchitecture" => "[architecture]",
        ".version" => "[agent version]",
        ".lastIpAddress" => "[address]",
        ".ipAddresses" => "[addresses]",
        ".firstSeen" => "[time]",
        ".lastSeen" => "[time]",
        "[\"@odata.context\"]" => "[context]",
    });
}

#[tokio::test]
async fn the_token_response() {
    let server = TestServer::start().await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            server.url, server.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", server.admin_app.client_id.as_str()),
            ("client_secret", server.admin_app.client_secret.as_str()),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let token: serde_json::Value = response.json().await.unwrap();
    insta::assert_json_snapshot!("token_response", token, {
        ".access_token" => "[token]",
    });
}

#[tokio::test]
async fn a_collection_with_its_count() {
    // Pages of one machine, so that the answer carries a next link too.
    let server = TestServer::start_with(|config| config.limits.page_size = 1).await;
    let _first = server.agent().await;
    let _second = server.agent().await;
    let (status, page) = server.get_raw("/api/machines?$count=true").await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("machines_counted", page, {
        "[\"@odata.context\"]" => "[context]",
        "[\"@odata.nextLink\"]" => "[next link]",
        ".value[].id" => "[machine id]",
        ".value[].computerDnsName" => "[host]",
        ".value[].osPlatform" => "[os]",
        ".value[].osVersion" => "[os version]",
        ".value[].osArchitecture" => "[architecture]",
        ".value[].version" => "[agent version]",
        ".value[].lastIpAddress" => "[address]",
        ".value[].ipAddresses" => "[addresses]",
        ".value[].firstSeen" => "[time]",
        ".value[].lastSeen" => "[time]",
        ".value[].duplicateName" => "[whether another machine has its name]",
    });
    assert!(
        page["@odata.nextLink"]
            .as_str()
            .is_some_and(|link| link.contains("$skip=1")),
        "{page}"
    );
}

#[tokio::test]
async fn the_error_envelope() {
    let server = TestServer::start().await;
    let (status, error) = server.get_raw("/api/machines/no-such-machine").await;
    assert_eq!(status, 404);
    insta::assert_json_snapshot!("error_envelope", error, {
        ".error.target" => "[request id]",
    });
}

#[tokio::test]
async fn an_audit_entry() {
    let (server, _device) = tagged_agent().await;
    let (status, page) = server
        .get_raw("/api/auditlog?$filter=operation+eq+'MachineTagsChanged'")
        .await;
    assert_eq!(status, 200);
    insta::assert_json_snapshot!("audit_entry", page["value"][0], {
        ".id" => "[sequence]",
        ".timestamp" => "[time]",
        ".tenantId" => "[tenant id]",
        ".actorId" => "[client id]",
        ".machineId" => "[machine id]",
        ".target" => "[machine id]",
        ".previousHash" => "[hash]",
        ".hash" => "[hash]",
    });
}
