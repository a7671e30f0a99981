//! HTTPS: a server with its own CA serves the API and the agent gateway
//! over TLS; an agent pinned to that CA works end to end; an agent pinned to
//! another CA, or one speaking plain http to a remote host, is refused.

use reach_proto::api::{ActionStatus, ScriptTranscript};

use reach_server::testing::*;

#[tokio::test]
async fn an_agent_pinned_to_the_servers_ca_works_over_tls() {
    let server = TestServer::start_tls().await;
    assert!(server.url.starts_with("https://"));
    let device = server.agent().await;
    server.upload("hi.sh", b"echo over tls\n").await;
    let done = server
        .run(
            &device.machine_id,
            vec![put_file("hi.sh"), run_script("hi.sh", None)],
        )
        .await;
    assert_status(&done, ActionStatus::Succeeded);
    let link = server.client.download_link(&done.id, 1).await.unwrap();
    assert!(link.starts_with("https://"), "{link}");
    let transcript: ScriptTranscript =
        serde_json::from_slice(&server.result(&done.id, 1).await).unwrap();
    assert_eq!(transcript.script_output, "over tls\n");
    // Plain HTTP to a TLS port gets nowhere.
    let plain = server.url.replacen("https://", "http://", 1);
    assert!(reqwest::get(format!("{plain}/healthz")).await.is_err());
}

#[tokio::test]
async fn a_different_ca_or_plain_http_to_a_remote_host_is_refused() {
    let server = TestServer::start_tls().await;
    let other = tempfile::tempdir().unwrap();
    let wrong =
        reach_server::tls::dev_pki(&other.path().join("tls"), &["127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = server.agent_config(dir.path());
    config.ca_file = Some(wrong.ca_path);
    let err = reach_agent::enroll(&server.url, &server.enrollment_token, &config)
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.to_lowercase().contains("certificate"), "{message}");

    let err = reach_agent::enroll("http://192.0.2.1:8080", &server.enrollment_token, &config)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("--insecure-http"), "{err:#}");
    assert!(!dir.path().join("state.json").exists());
}
