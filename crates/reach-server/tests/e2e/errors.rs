//! Every error leaves in Defender's envelope with the right status and code:
//! unknown routes, wrong methods, oversized and mistyped bodies, malformed
//! JSON, and each validation rule of runliveresponse.

use reqwest::Method;
use serde_json::json;

use reach_server::testing::*;

async fn post_run(
    server: &TestServer,
    machine: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    server
        .client
        .request(
            Method::POST,
            &format!("/api/machines/{machine}/runliveresponse"),
        )
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn transport_level_errors_use_the_envelope() {
    let server = TestServer::start_with(|c| c.limits.json_body_max_bytes = 2048).await;
    let device = server.enroll("d").await;
    let path = format!("/api/machines/{}/runliveresponse", device.machine_id);
    let c = &server.client;
    assert_error(
        c.request(Method::GET, "/api/nothing-here")
            .send()
            .await
            .unwrap(),
        404,
        "NotFound",
    )
    .await;
    assert_error(
        c.request(Method::DELETE, "/api/machineactions")
            .send()
            .await
            .unwrap(),
        405,
        "MethodNotAllowed",
    )
    .await;
    let big = json!({"Commands": [{"type": "GetFile", "params": [{"key": "Path", "value": "x".repeat(4096)}]}]});
    assert_error(
        c.request(Method::POST, &path)
            .json(&big)
            .send()
            .await
            .unwrap(),
        413,
        "RequestEntityTooLarge",
    )
    .await;
    let text = c
        .request(Method::POST, &path)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(text, 415, "UnsupportedMediaType").await;
    let broken = c
        .request(Method::POST, &path)
        .header("content-type", "application/json")
        .body("{\"Commands\": [")
        .send()
        .await
        .unwrap();
    assert_error(broken, 400, "InvalidRequestBody").await;
    // The token endpoint's body is bounded the same way, in the envelope.
    let huge_form = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            server.url, server.tenant_id
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_secret={}",
            "x".repeat(4096)
        ))
        .send()
        .await
        .unwrap();
    assert_error(huge_form, 413, "RequestEntityTooLarge").await;
    let wrong_shape = c
        .request(Method::POST, &path)
        .header("content-type", "application/json")
        .body("{\"Commands\": \"GetFile\"}")
        .send()
        .await
        .unwrap();
    assert_error(wrong_shape, 400, "InvalidRequestBody").await;
    // Clients send a JSON content type on GETs too.
    let get = c
        .request(Method::GET, "/api/machines")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
}

#[tokio::test]
async fn runliveresponse_validation_names_the_offending_command() {
    let server = TestServer::start().await;
    let device = server.enroll("d").await;
    server.upload("ok.sh", b"echo\n").await;
    server.upload("tool.bin", b"bin").await;
    let id = device.machine_id.as_str();
    let cases = [
        (
            json!({"Comment": "no commands"}),
            "MissingRequiredParameter",
            "Commands",
        ),
        (
            json!({"commands": [], "Comment": "lower-case"}),
            "MissingRequiredParameter",
            "Commands",
        ),
        (
            json!({"Commands": []}),
            "InvalidRequestBody",
            "at least one",
        ),
        (
            json!({"Commands": [{"type": "Reboot", "params": []}]}),
            "InvalidRequestBody",
            "Command 0: unknown type 'Reboot'",
        ),
        (
            json!({"Commands": [{"type": "runscript", "params": []}]}),
            "InvalidRequestBody",
            "unknown type 'runscript'",
        ),
        (
            json!({"Commands": [{"type": "GetFile", "params": []}]}),
            "MissingRequiredParameter",
            "Path in command 0 (GetFile)",
        ),
        (
            json!({"Commands": [{"type": "RunScript", "params": [{"key": "scriptName", "value": "ok.sh"}]}]}),
            "InvalidRequestBody",
            "unknown parameter 'scriptName'",
        ),
        (
            json!({"Commands": [{"type": "GetFile", "params": [{"key": "Path", "value": "/x"}]}, {"type": "PutFile", "params": [{"key": "FileName", "value": "tool.bin"}]}]}),
            "InvalidRequestBody",
            "Command 1 (PutFile) comes after a GetFile",
        ),
        (
            json!({"Commands": [{"type": "RunScript", "params": [{"key": "ScriptName", "value": "ok.sh"}, {"key": "Args", "value": "-name \"unclosed"}]}]}),
            "InvalidInput",
            "Command 0 (RunScript): Args cannot be split",
        ),
        (
            json!({"Commands": [{"type": "RunScript", "params": [{"key": "ScriptName", "value": "missing.sh"}]}]}),
            "InvalidRequestBody",
            "'missing.sh' is not in the live response library",
        ),
    ];
    for (body, code, needle) in cases {
        let error = assert_error(post_run(&server, id, body.clone()).await, 400, code).await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body} → {message}");
    }
    let too_many: Vec<_> = (0..101)
        .map(|_| json!({"type": "GetFile", "params": [{"key": "Path", "value": "/x"}]}))
        .collect();
    assert_error(
        post_run(&server, id, json!({"Commands": too_many})).await,
        400,
        "MaximumBatchSizeExceeded",
    )
    .await;
    // Nothing was created by the refused requests.
    assert!(server.client.actions(&[]).await.unwrap().value.is_empty());
}

#[tokio::test]
async fn unknown_machines_and_actions_are_404() {
    let server = TestServer::start().await;
    let body =
        json!({"Commands": [{"type": "GetFile", "params": [{"key": "Path", "value": "/x"}]}]});
    let response = post_run(&server, "1e5bc9d7e413ddd7902c2932e418702b84d0cc07", body).await;
    let error = assert_error(response, 404, "ResourceNotFound").await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1e5bc9d7e413ddd7902c2932e418702b84d0cc07")
    );
    let c = &server.client;
    assert_error(
        c.request(Method::GET, "/api/machines/nope")
            .send()
            .await
            .unwrap(),
        404,
        "ResourceNotFound",
    )
    .await;
    assert_error(
        c.request(Method::GET, "/api/machineactions/nope")
            .send()
            .await
            .unwrap(),
        404,
        "ResourceNotFound",
    )
    .await;
    let cancel = c
        .request(Method::POST, "/api/machineactions/nope/cancel")
        .json(&json!({"Comment": "x"}))
        .send()
        .await
        .unwrap();
    assert_error(cancel, 404, "ResourceNotFound").await;
    let link = c
        .request(
            Method::GET,
            "/api/machineactions/nope/GetLiveResponseResultDownloadLink(index=0)",
        )
        .send()
        .await
        .unwrap();
    assert_error(link, 404, "ResourceNotFound").await;
    let bad_index = c
        .request(
            Method::GET,
            "/api/machineactions/nope/GetLiveResponseResultDownloadLink(index=x)",
        )
        .send()
        .await
        .unwrap();
    assert_error(bad_index, 400, "InvalidInput").await;
}

#[tokio::test]
async fn paths_are_case_insensitive_and_accept_a_version() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("ok.sh", b"echo ok\n").await;
    let created = server
        .client
        .request(
            Method::POST,
            &format!("/API/Machines/{}/RunLiveResponse", device.machine_id),
        )
        .json(&request(vec![run_script("ok.sh", None)], "case"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    server.wait_final(id).await;
    for path in [
        format!("/api/MachineActions/{id}"),
        format!("/api/v1.0/machineactions/{id}"),
        format!("/Api/machineActions/{id}/getLiveResponseResultDownloadLink(index=0)"),
        format!("/api/machines/{}", device.machine_id.to_uppercase()),
        "/API/LIBRARYFILES".to_string(),
    ] {
        let (status, body) = server.get_raw(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // By computer name, too.
    let machine = server.client.machine(&device.machine_id).await.unwrap();
    let by_name = server
        .client
        .machine(&machine.computer_dns_name)
        .await
        .unwrap();
    assert_eq!(by_name.id, device.machine_id);
}
