//! Hostile input, generated (proptest) and sent through the public
//! boundary: OData query strings, `runliveresponse` bodies and agent
//! WebSocket frames. Whatever arrives, the answer is a success or a 4xx in
//! the error envelope (never a 5xx, a panic or a hang), and nothing stored
//! changes unless the request succeeded.

use futures::SinkExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio_tungstenite::tungstenite::Message;

use reach_server::testing::*;

/// A runner without a failure file (the suite runs from a clean checkout).
fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs an async check from proptest's synchronous closure.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// A 4xx must carry the error envelope; a 5xx is a failure.
async fn answered(response: reqwest::Response, what: &str) -> Result<u16, TestCaseError> {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    prop_assert!(
        status < 500,
        "{what}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    if status >= 400 {
        let error: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| TestCaseError::fail(format!("{what}: {status}, not JSON: {e}")))?;
        prop_assert!(error["error"]["code"].is_string(), "{what}: {error}");
        prop_assert!(error["error"]["message"].is_string(), "{what}: {error}");
    }
    Ok(status)
}

/// Words of the `$filter` grammar, and pieces that break it.
const FILTER_WORDS: &[&str] = &[
    "machineId",
    "status",
    "type",
    "createdDateTime",
    "computerDnsName",
    "healthStatus",
    "requestor",
    "commands",
    "eq",
    "ne",
    "gt",
    "ge",
    "lt",
    "le",
    "in",
    "and",
    "or",
    "not",
    "(",
    ")",
    ",",
    "'Pending'",
    "'",
    "''",
    "'a''b'",
    "42",
    "-9223372036854775809",
    "1e309",
    "2024-01-01T00:00:00Z",
    "2024-13-45T99:99:99Z",
    "null",
    "true",
    "startswith(",
    "endswith(",
    "contains(",
    "/any(c:c",
    "c:c/type",
    "$",
    "%",
    "\u{0}",
    "é",
    "😀",
];

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(prop::sample::select(FILTER_WORDS), 0..40)
            .prop_map(|words| words.join(" ")),
        // Deep nesting, past the depth limit and far past it.
        (0usize..3000).prop_map(|n| format!(
            "{}status eq 'Pending'{}",
            "(".repeat(n),
            ")".repeat(n)
        )),
        (0usize..3000).prop_map(|n| format!("{}status eq 'Pending'", "not ".repeat(n))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_odata_query_is_answered_200_or_400() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let token = server.client.token().unwrap().to_string();
    let mut runner = runner(300);
    let strategy = (
        filter(),
        prop::sample::select(&["$filter", "$top", "$skip", "$orderby", "$count", "$FILTER"][..]),
        prop::sample::select(&["machineactions", "machines"][..]),
    );
    runner
        .run(&strategy, |(text, option, collection)| {
            block_on(async {
                let response = http
                    .get(format!("{}/api/{collection}", server.url))
                    .query(&[(option, text.as_str())])
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let status = answered(response, &format!("{option}={text:?}")).await?;
                prop_assert!(
                    status == 200 || status == 400,
                    "{option}={text:?}: {status}"
                );
                Ok(())
            })
        })
        .unwrap();
    // Raw query strings that are not even form-encoded.
    runner
        .run(&any::<Vec<u8>>(), |bytes| {
            let raw: String = url::form_urlencoded::byte_serialize(&bytes).collect();
            block_on(async {
                let response = http
                    .get(format!(
                        "{}/api/machineactions?{raw}&$filter={raw}",
                        server.url
                    ))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                answered(response, &format!("{raw:?}")).await?;
                Ok(())
            })
        })
        .unwrap();
}

/// JSON shaped like a `runliveresponse` body, often wrong.
fn body() -> impl Strategy<Value = serde_json::Value> {
    let key = prop::sample::select(
        &[
            "Commands",
            "commands",
            "Comment",
            "type",
            "params",
            "key",
            "value",
            "Path",
            "ScriptName",
            "Args",
            "FileName",
            "",
        ][..],
    );
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        prop::sample::select(
            &[
                "RunScript",
                "GetFile",
                "PutFile",
                "Path",
                "ScriptName",
                "Args",
                "FileName",
                "x.sh",
                "/etc/hostname",
                "../../etc/shadow",
                "",
            ][..]
        )
        .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|pairs| {
                serde_json::Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                )
            }),
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_runliveresponse_body_is_answered_without_a_5xx_or_a_stray_action() {
    let server = TestServer::start().await;
    let device = server.enroll("hostile").await;
    server.upload("x.sh", b"true\n").await;
    let http = reqwest::Client::new();
    let token = server.client.token().unwrap().to_string();
    let url = format!(
        "{}/api/machines/{}/runliveresponse",
        server.url, device.machine_id
    );
    let count = || async {
        server
            .client
            .actions(&[("$count", "true")])
            .await
            .unwrap()
            .value
            .len()
    };
    let mut runner = runner(300);
    runner
        .run(
            &prop_oneof![body().prop_map(|b| b.to_string()), any::<String>(),],
            |text| {
                block_on(async {
                    let before = count().await;
                    let response = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(text.clone())
                        .send()
                        .await
                        .unwrap();
                    let status = answered(response, &text).await?;
                    let after = count().await;
                    if status == 201 {
                        prop_assert_eq!(after, before + 1, "{}", text);
                        // Let the next valid body in: this machine takes one action at a time.
                        let actions = server.client.actions(&[("$top", "1")]).await.unwrap();
                        if let Some(action) = actions.value.first() {
                            let _ = server.client.cancel(&action.id, "hostile").await;
                        }
                    } else {
                        prop_assert_eq!(after, before, "{}: {}", text, status);
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_agent_frame_leaves_the_server_serving() {
    let server = TestServer::start().await;
    let mut device = server.enroll("frames").await;
    let credential = bearer(&device);
    let frames = prop_oneof![
        any::<String>().prop_map(Message::text),
        body().prop_map(|b| Message::text(b.to_string())),
        prop::sample::select(
            &[
                r#"{"type":"Hello"}"#,
                r#"{"type":"Finished","command":{"action_id":"nope","index":4294967295}}"#,
                r#"{"type":"Finished","command":{"action_id":"../../x","index":0},"outcome":{"Completed":{"sha256":null}}}"#,
                r#"{"type":"Heartbeat","running":[{"action_id":"","index":-1}]}"#,
                r#"{"type":"Ack"}"#,
            ][..]
        )
        .prop_map(Message::text),
        any::<Vec<u8>>().prop_map(Message::binary),
    ];
    let mut runner = runner(64);
    runner
        .run(&prop::collection::vec(frames, 1..4), |frames| {
            block_on(async {
                let mut socket = agent_socket(&server.url, &credential).await;
                for frame in frames {
                    // The server may close on a bad frame; sending after that may fail.
                    if socket.send(frame).await.is_err() {
                        break;
                    }
                }
                let _ = socket.close(None).await;
                // Still serving: the API answers and the machine is still there.
                let machine = server.client.machine(&device.machine_id).await;
                prop_assert!(machine.is_ok(), "{:?}", machine.err());
                Ok(())
            })
        })
        .unwrap();
    // And a well-behaved agent still connects and runs a command afterwards.
    server.connect(&mut device).await;
    server.upload("ok.sh", b"echo fine\n").await;
    let done = server
        .run(&device.machine_id, vec![run_script("ok.sh", None)])
        .await;
    assert_eq!(done.status, reach_proto::api::ActionStatus::Succeeded);
}
