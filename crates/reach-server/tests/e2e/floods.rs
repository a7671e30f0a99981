//! Floods on the endpoints that take no token: per-address limits, the
//! gate every secret check passes, and what a guess costs the server.

use std::net::IpAddr;

use reach_proto::api::roles;
use reach_server::{admin, auth};

use reach_server::testing::*;

/// A client whose requests come from `source` (any 127.0.0.0/8 address).
fn from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn token_request(client: &reqwest::Client, server: &TestServer) -> reqwest::Response {
    client
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            server.url, server.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "no-such-app"),
            ("client_secret", "guess"),
        ])
        .send()
        .await
        .unwrap()
}

async fn sign_in(
    client: &reqwest::Client,
    server: &TestServer,
    name: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("{}/console/session", server.url))
        .json(&serde_json::json!({ "name": name, "password": password }))
        .send()
        .await
        .unwrap()
}

async fn assert_limited(response: reqwest::Response, what: &str) {
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body = assert_error(response, 429, "TooManyRequests").await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(what) && message.contains("this address"),
        "{message}"
    );
}

#[tokio::test]
async fn each_unauthenticated_endpoint_limits_calls_per_address() {
    let server = TestServer::start_with(|config| {
        config.limits.token_per_minute_per_address = 3;
        config.limits.sign_in_per_minute_per_address = 3;
        config.limits.enroll_per_minute_per_address = 3;
        config.limits.download_per_minute_per_address = 3;
    })
    .await;
    let attacker = from("127.0.0.7");
    for _ in 0..3 {
        assert_eq!(token_request(&attacker, &server).await.status(), 401);
    }
    assert_limited(token_request(&attacker, &server).await, "token").await;

    for _ in 0..3 {
        assert_eq!(
            sign_in(&attacker, &server, "nobody", "guess-guess-guess")
                .await
                .status(),
            401
        );
    }
    assert_limited(
        sign_in(&attacker, &server, "nobody", "guess").await,
        "sign-in",
    )
    .await;

    let enroll = || {
        attacker
            .post(format!("{}/agent/v1/enroll", server.url))
            .json(&serde_json::json!({
                "enrollment_token": "rch_enr_guess",
                "info": {"hostname": "x", "os_platform": "Linux", "os_version": "1", "os_architecture": "64-bit", "agent_version": "1"}
            }))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(enroll().await.unwrap().status(), 401);
    }
    assert_limited(enroll().await.unwrap(), "enrollment").await;

    let download = || {
        attacker
            .get(format!("{}/download/forged?sig=x", server.url))
            .send()
    };
    for _ in 0..3 {
        let status = download().await.unwrap().status().as_u16();
        assert!(matches!(status, 400 | 401 | 403 | 404), "{status}");
    }
    assert_limited(download().await.unwrap(), "download").await;

    // Another address, and authenticated calls from the same one, go on.
    assert_eq!(
        token_request(&from("127.0.0.8"), &server).await.status(),
        401
    );
    let (status, _) = server.get_raw("/api/machines").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_flood_of_password_checks_is_told_to_come_back() {
    let server = TestServer::start_with(|config| {
        config.limits.password_checks_at_once = 1;
        config.limits.password_check_queue = 1;
    })
    .await;
    let password = admin::create_user(
        server.state.store.as_ref(),
        &server.tenant_id,
        "dana",
        vec![roles::READ_ALL.to_string()],
        Vec::new(),
        None,
    )
    .await
    .unwrap()
    .password;
    // From as many addresses as attempts, so that no per-address limit
    // answers first: only the gate does.
    let clients: Vec<reqwest::Client> = (0..20)
        .map(|i| from(&format!("127.0.2.{}", i + 1)))
        .collect();
    let attempts = clients
        .iter()
        .map(|client| sign_in(client, &server, "dana", &password));
    let responses = futures::future::join_all(attempts).await;
    let mut busy = 0;
    let mut signed_in = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => signed_in += 1,
            429 => {
                assert_eq!(response.headers()["retry-after"], "1");
                let body = assert_error(response, 429, "TooManyRequests").await;
                assert!(
                    body["error"]["message"].as_str().unwrap().contains("busy"),
                    "{body}"
                );
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        signed_in >= 1 && busy >= 1,
        "{signed_in} signed in, {busy} busy"
    );
    assert!(
        server.state.gate.pooled() <= 1,
        "one check at a time, one memory block"
    );
}

#[tokio::test]
async fn an_unknown_user_costs_no_password_check() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let response = sign_in(
            &client,
            &server,
            &format!("nobody-{i}"),
            "guess-guess-guess",
        )
        .await;
        assert_error(response, 401, "Unauthorized").await;
    }
    assert_eq!(server.state.gate.pooled(), 0, "no argon2 memory was taken");
}

#[tokio::test]
async fn client_secrets_use_a_fast_hash_and_old_argon2_ones_are_upgraded() {
    let server = TestServer::start().await;
    let store = server.state.store.as_ref();
    let app = admin::create_app(
        store,
        &server.tenant_id,
        "auto",
        vec![roles::READ_ALL.into()],
    )
    .await
    .unwrap();
    let stored = store.get_app(&app.client_id).await.unwrap().secret_hash;
    assert!(
        auth::secrets::is_fast(&stored),
        "new secrets get the fast hash"
    );

    // An app made before the fast hash existed: its secret's argon2 hash.
    let legacy = auth::secrets::hash_password(&app.client_secret).unwrap();
    store.set_app_secret(&app.client_id, &legacy).await.unwrap();
    server.login(&app).await.machines(&[]).await.unwrap();
    let upgraded = store.get_app(&app.client_id).await.unwrap().secret_hash;
    assert!(
        auth::secrets::is_fast(&upgraded),
        "upgraded after a good check"
    );
    server.login(&app).await.machines(&[]).await.unwrap();
}

#[tokio::test]
async fn guesses_from_one_address_do_not_lock_the_user_out_elsewhere() {
    let server = TestServer::start().await;
    let password = admin::create_user(
        server.state.store.as_ref(),
        &server.tenant_id,
        "target",
        vec![roles::READ.to_string()],
        Vec::new(),
        None,
    )
    .await
    .unwrap()
    .password;
    // Three addresses guess 10 times each: each is then refused...
    for source in ["127.0.0.11", "127.0.0.12", "127.0.0.13"] {
        let attacker = from(source);
        for _ in 0..10 {
            let response = sign_in(&attacker, &server, "target", "not the password").await;
            assert_eq!(response.status(), 401);
        }
        let response = sign_in(&attacker, &server, "target", &password).await;
        assert_eq!(response.status(), 429, "even the right password waits");
    }
    // ...while the user, from their own address, still signs in: slowed,
    // because the name drew more than its ceiling, but not refused.
    let started = std::time::Instant::now();
    let response = sign_in(&from("127.0.0.14"), &server, "target", &password).await;
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "slowed down"
    );
}
