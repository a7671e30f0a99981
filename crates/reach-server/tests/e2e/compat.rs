//! What real third-party Defender clients and SOAR connectors rely on
//! (../shared/spec/mde-machine-actions.md): the Machine entity with every
//! Defender field, `ResourceNotFound` for an unknown machine on every
//! machine route, server-driven paging with `@odata.nextLink`, and errors
//! in the envelope however malformed the path.

use reqwest::Method;
use serde_json::Value;

use reach_server::testing::*;

#[tokio::test]
async fn the_machine_entity_has_every_defender_field() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    let (status, machine) = server
        .get_raw(&format!("/api/machines/{}", device.machine_id))
        .await;
    assert_eq!(status, 200, "{machine}");
    // A client listing only Active and Onboarded machines sees it.
    assert_eq!(machine["onboardingStatus"], "Onboarded");
    assert_eq!(machine["healthStatus"], "Active");
    // Clients that index these directly find them, null where Reach cannot know.
    for field in [
        "osProcessor",
        "osBuild",
        "lastExternalIpAddress",
        "rbacGroupId",
        "rbacGroupName",
        "riskScore",
        "exposureLevel",
        "deviceValue",
        "aadDeviceId",
        "isAadJoined",
        "managedBy",
        "managedByStatus",
        "defenderAvStatus",
        "vmMetadata",
    ] {
        assert_eq!(machine.get(field), Some(&Value::Null), "{field}: {machine}");
    }
    for known in [
        "id",
        "computerDnsName",
        "firstSeen",
        "lastSeen",
        "osPlatform",
        "osVersion",
        "osArchitecture",
        "version",
        "lastIpAddress",
        "ipAddresses",
        "machineTags",
    ] {
        assert!(machine.get(known).is_some(), "{known}: {machine}");
    }
    // The filter clients send for it matches.
    let (_, listed) = server
        .get_raw(
            "/api/machines?$filter=onboardingStatus+eq+'Onboarded'+and+healthStatus+eq+'Active'",
        )
        .await;
    assert_eq!(listed["value"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test]
async fn an_unknown_machine_is_resource_not_found_on_every_machine_route() {
    let server = TestServer::start().await;
    let device = server.enroll("known").await;
    let c = &server.client;
    let body = serde_json::json!({"Comment": "connector test", "IsolationType": "Full"});
    for (method, path) in [
        (
            Method::GET,
            "/api/machines/elastic-connector-test".to_string(),
        ),
        (
            Method::POST,
            "/api/machines/elastic-connector-test/isolate".into(),
        ),
        (
            Method::POST,
            "/api/machines/elastic-connector-test/unisolate".into(),
        ),
        (
            Method::POST,
            "/api/machines/elastic-connector-test/runliveresponse".into(),
        ),
        (
            Method::POST,
            "/api/machines/elastic-connector-test/tags".into(),
        ),
        (
            Method::GET,
            "/api/machines/no%20such%20host/software".into(),
        ),
    ] {
        let body = if path.ends_with("runliveresponse") {
            serde_json::to_value(request(vec![get_file("/etc/hosts")], "test")).unwrap()
        } else if path.ends_with("tags") {
            serde_json::json!({"Value": "x", "Action": "Add"})
        } else {
            body.clone()
        };
        let response = c
            .request(method.clone(), &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 404, "{method} {path}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            error["error"]["code"], "ResourceNotFound",
            "{method} {path}: {text}"
        );
    }
    // A machine that exists, on a route Reach does not have: the route is unknown.
    let response = c
        .request(
            Method::GET,
            &format!("/api/machines/{}/software", device.machine_id),
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "NotFound").await;
    // Without a token, nothing is said about the machine.
    let anonymous = reqwest::Client::new()
        .post(format!(
            "{}/api/machines/elastic-connector-test/isolate",
            server.url
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_error(anonymous, 401, "Unauthorized").await;
}

#[tokio::test]
async fn a_malformed_path_answers_in_the_envelope() {
    let server = TestServer::start().await;
    for (method, path) in [
        (Method::GET, "/api/machines/%FF"),
        (Method::GET, "/api/machineactions/%C3%28"),
        (Method::POST, "/api/machines/%FF/tags"),
    ] {
        let response = server
            .client
            .request(method, path)
            .json(&serde_json::json!({"Value": "x", "Action": "Add"}))
            .send()
            .await
            .unwrap();
        assert_error(response, 400, "InvalidInput").await;
    }
}

/// Every machine a client following `@odata.nextLink` from `first` sees.
async fn follow(server: &TestServer, first: &str) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut pages = 0;
    let mut next = Some(format!("{}{first}", server.url));
    while let Some(url) = next.take() {
        let path = url
            .strip_prefix(&server.url)
            .expect("a link to this server");
        let (status, page) = server.get_raw(path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for machine in page["value"].as_array().unwrap() {
            ids.push(machine["id"].as_str().unwrap().to_string());
        }
        next = page["@odata.nextLink"].as_str().map(str::to_string);
        assert!(pages <= 10, "the links do not end");
    }
    (ids, pages)
}

#[tokio::test]
async fn a_list_past_a_page_links_to_the_rest() {
    let server = TestServer::start_with(|c| c.limits.page_size = 2).await;
    let mut enrolled = Vec::new();
    for n in 0..5 {
        enrolled.push(server.enroll(&format!("m{n}")).await.machine_id.clone());
    }
    enrolled.sort();
    // Unfiltered: three pages, every machine once.
    let (mut seen, pages) = follow(&server, "/api/machines").await;
    assert_eq!(pages, 3);
    seen.sort();
    assert_eq!(seen, enrolled);
    // `$top` bounds the whole answer, over pages.
    let (seen, pages) = follow(&server, "/api/machines?$top=3&$orderby=id").await;
    assert_eq!((seen.len(), pages), (3, 2));
    assert_eq!(seen, enrolled[..3]);
    // A client paging itself with $top and $skip gets no link past its page.
    let (_, page) = server.get_raw("/api/machines?$top=2&$skip=1").await;
    assert!(page.get("@odata.nextLink").is_none(), "{page}");
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn every_command_of_a_finished_action_answers_for_its_link() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("tool.bin", b"the tool").await;
    server
        .upload("args.sh", b"for a in \"$@\"; do echo \"[$a]\"; done\n")
        .await;
    // Kibana's connector sends `--noargs` when the user gives none: on
    // Defender, and here, the script gets it as a literal argument.
    let done = server
        .run(
            &device.machine_id,
            vec![
                put_file("tool.bin"),
                run_script("args.sh", Some("--noargs")),
            ],
        )
        .await;
    assert_status(&done, reach_proto::api::ActionStatus::Succeeded);
    let transcript: reach_proto::api::ScriptTranscript =
        serde_json::from_slice(&server.result(&done.id, 1).await).unwrap();
    assert_eq!(transcript.script_output, "[--noargs]\n");

    // PutFile: a small record of what was put and where.
    let link = server.client.download_link(&done.id, 0).await.unwrap();
    let response = server.client.download(&link).await.unwrap();
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let record: reach_proto::api::PutFileRecord = response.json().await.unwrap();
    let put = device.work_dir().join("tool.bin");
    assert_eq!(record.file_name, "tool.bin");
    assert_eq!(
        record.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"the tool"))
    );
    assert_eq!(record.path.as_deref(), put.to_str());
    assert_eq!(std::fs::read(&put).unwrap(), b"the tool");

    // A failed command's link says it failed, not that it may come later.
    let failed = server
        .run(&device.machine_id, vec![get_file("/no/such/file")])
        .await;
    assert_status(&failed, reach_proto::api::ActionStatus::Failed);
    let err = server
        .client
        .download_link(&failed.id, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceNotFound"), "{err}");
    assert!(
        err.to_string().contains("failed, so it has no result"),
        "{err}"
    );
}

#[tokio::test]
async fn links_follow_a_trusted_proxys_forwarded_scheme_and_host_only() {
    let trusted =
        TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let untrusted = TestServer::start().await;
    for (server, expected) in [
        (&trusted, "https://reach.example.com:8443/api/"),
        (&untrusted, &format!("{}/api/", untrusted.url)[..]),
    ] {
        let response = server
            .client
            .request(Method::GET, "/api/machines")
            .header("X-Forwarded-Proto", "https")
            .header("X-Forwarded-Host", "reach.example.com:8443")
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        let context = body["@odata.context"].as_str().unwrap();
        assert!(context.starts_with(expected), "{context} vs {expected}");
    }
    // A forwarded host that is not a host name is ignored.
    let response = trusted
        .client
        .request(Method::GET, "/api/machines")
        .header("X-Forwarded-Host", "evil.example/path?x")
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    let context = body["@odata.context"].as_str().unwrap();
    assert!(
        context.starts_with(&format!("{}/api/", trusted.url)),
        "{context}"
    );
}
