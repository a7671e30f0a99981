//! What a load balancer and an operator read: /healthz, /readyz and the
//! Prometheus metrics, which count real work.

use reach_server::testing::*;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn health_readiness_and_metrics_reflect_the_work_done() {
    let server = TestServer::start_with(|c| c.limits.run_live_response_per_minute = 1).await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", server.url)).send();
    let health = get("/healthz").await.unwrap();
    assert_eq!(
        (health.status().as_u16(), health.text().await.unwrap()),
        (200, "ok".to_string())
    );
    let ready = get("/readyz").await.unwrap();
    assert_eq!(
        (ready.status().as_u16(), ready.text().await.unwrap()),
        (200, "ready".to_string())
    );

    let device = server.agent().await;
    server.upload("hi.sh", b"echo hi\n").await;
    let done = server
        .run(&device.machine_id, vec![run_script("hi.sh", None)])
        .await;
    assert_status(&done, reach_proto::api::ActionStatus::Succeeded);
    let limited = server
        .client
        .run_live_response(
            &device.machine_id,
            &request(vec![run_script("hi.sh", None)], "again"),
        )
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Some("TooManyRequests"));

    let response = get("/metrics").await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    assert_eq!(metric(&text, "reach_connected_agents"), 1.0);
    assert_eq!(metric(&text, "reach_actions{status=\"Succeeded\"}"), 1.0);
    assert_eq!(metric(&text, "reach_actions{status=\"Pending\"}"), 0.0);
    assert_eq!(metric(&text, "reach_dispatch_latency_seconds_count"), 1.0);
    assert_eq!(metric(&text, "reach_command_duration_seconds_count"), 1.0);
    assert_eq!(
        metric(&text, "reach_bytes_sent_total"),
        8.0,
        "the script's 8 bytes"
    );
    assert!(
        metric(&text, "reach_bytes_received_total") > 0.0,
        "the transcript"
    );
    assert_eq!(metric(&text, "reach_rate_limited_total"), 1.0);
}

#[tokio::test]
async fn a_second_node_on_the_same_database_accepts_what_the_first_issued() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    server.upload("hi.sh", b"echo hi\n").await;
    let done = server
        .run(&device.machine_id, vec![run_script("hi.sh", None)])
        .await;
    let link = server.client.download_link(&done.id, 0).await.unwrap();

    // Node B: the same configuration and database, another address.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url_b = format!("http://{}", listener.local_addr().unwrap());
    let state_b = reach_server::open(server.state.config.clone())
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(reach_server::serve(state_b, listener, async move {
        stopped.cancelled().await
    }));
    let _stop = stop.drop_guard();

    let token = server.client.token().unwrap();
    let client_b = reach_client::Client::new(&url_b).with_token(token);
    let seen = client_b.action(&done.id).await.unwrap();
    assert_eq!(seen.status, reach_proto::api::ActionStatus::Succeeded);
    let on_b = link.replacen(&server.url, &url_b, 1);
    let response = reqwest::get(&on_b).await.unwrap();
    assert_eq!(response.status(), 200);
    let transcript: serde_json::Value = response.json().await.unwrap();
    assert_eq!(transcript["script_output"], "hi\n");
    // The keys live in the database, not in files a node keeps for itself.
    assert!(!server.state.config.data_dir.join("keys").exists());
}
