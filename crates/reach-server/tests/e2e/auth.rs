//! Tokens and permissions: both token endpoints, 401 without a valid token
//! (forged, expired, misaddressed or of another algorithm included),
//! 403 without the role, and 429 with Retry-After past a rate limit.

use reach_proto::api::roles;

use reach_server::testing::*;

#[tokio::test]
async fn both_token_endpoints_issue_bearer_tokens_with_a_numeric_expiry() {
    let server = TestServer::start().await;
    let app = reach_server::admin::create_app(
        server.state.store.as_ref(),
        &server.tenant_id,
        "ANYRUN-LogicApp",
        vec![roles::READ_ALL.into()],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    for (path, extra) in [
        (
            "oauth2/token",
            ("resource", "https://api.securitycenter.microsoft.com"),
        ),
        (
            "OAuth2/V2.0/Token",
            ("scope", "https://api.security.microsoft.com/.default"),
        ),
    ] {
        let response = http
            .post(format!("{}/{}/{path}", server.url, server.tenant_id))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.client_id.as_str()),
                ("client_secret", app.client_secret.as_str()),
                extra,
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3599);
        assert!(body["expires_in"].is_u64());
        let token = body["access_token"].as_str().unwrap();
        let machines = http
            .get(format!("{}/api/machines", server.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(machines.status(), 200);
    }
    let wrong = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            server.url, server.tenant_id
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", "not-the-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_error(wrong, 401, "Unauthorized").await;
    let other_tenant = http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            server.url,
            uuid::Uuid::new_v4()
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_error(other_tenant, 401, "Unauthorized").await;
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/machineactions", server.url);
    assert_error(http.get(&url).send().await.unwrap(), 401, "Unauthorized").await;
    assert_error(
        http.get(&url)
            .bearer_auth("not.a.jwt")
            .send()
            .await
            .unwrap(),
        401,
        "Unauthorized",
    )
    .await;
    let token = server.client.token().unwrap();
    let (head, rest) = token.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let flipped: String = sig.chars().rev().collect();
    let tampered = format!("{head}.{payload}.{flipped}");
    assert_error(
        http.get(&url).bearer_auth(&tampered).send().await.unwrap(),
        401,
        "Unauthorized",
    )
    .await;
    let other = TestServer::start().await;
    let foreign = other.client.token().unwrap();
    assert_error(
        http.get(&url).bearer_auth(foreign).send().await.unwrap(),
        401,
        "Unauthorized",
    )
    .await;
}

#[tokio::test]
async fn missing_roles_get_403() {
    let server = TestServer::start().await;
    let device = server.enroll("d").await;
    let reader = server.app("reader", &[roles::READ_ALL]).await;
    reader.machines(&[]).await.unwrap();
    reader.actions(&[]).await.unwrap();
    let denied = reader
        .request(
            reqwest::Method::POST,
            &format!("/api/machines/{}/runliveresponse", device.machine_id),
        )
        .json(&request(vec![get_file("/etc/hostname")], "no"))
        .send()
        .await
        .unwrap();
    assert_error(denied, 403, "Forbidden").await;
    let library = reader
        .request(reqwest::Method::GET, "/api/libraryfiles")
        .send()
        .await
        .unwrap();
    assert_error(library, 403, "Forbidden").await;
    let responder = server.app("responder", &[roles::LIVE_RESPONSE]).await;
    let machines = responder
        .request(reqwest::Method::GET, "/api/machines")
        .send()
        .await
        .unwrap();
    assert_error(machines, 403, "Forbidden").await;
    let created = responder
        .run_live_response(
            &device.machine_id,
            &request(vec![get_file("/etc/hostname")], "ok"),
        )
        .await
        .unwrap();
    assert_eq!(created.requestor, "responder");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.limits.run_live_response_per_minute = 2;
        c.limits.api_per_minute = 3;
    })
    .await;
    let device = server.enroll("d").await;
    let body = request(vec![get_file("/etc/hostname")], "x");
    let path = format!("/api/machines/{}/runliveresponse", device.machine_id);
    for _ in 0..2 {
        let response = server
            .client
            .request(reqwest::Method::POST, &path)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_ne!(response.status(), 429);
    }
    let limited = server
        .client
        .request(reqwest::Method::POST, &path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_error(limited, 429, "TooManyRequests").await;

    // Other APIs have their own budget.
    for _ in 0..3 {
        server.client.actions(&[]).await.unwrap();
    }
    let err = server.client.actions(&[]).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(429));
    server.client.machines(&[]).await.unwrap();
}

/// The server's token-signing key, as someone who read its database has it.
async fn jwt_key(server: &TestServer) -> Vec<u8> {
    let stored = server
        .state
        .store
        .secret("jwt-signing", "unused", reach_server::time::Micros::now())
        .await
        .unwrap();
    hex::decode(stored).unwrap()
}

/// A token of this server's own kind, forged here with its signing key from
/// the store: the claims of `token` changed by `edit`, signed with `alg`.
fn forge(
    key: &[u8],
    token: &str,
    alg: jsonwebtoken::Algorithm,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let mut claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    edit(&mut claims);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_get_401() {
    use base64::Engine;
    use jsonwebtoken::Algorithm;
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/machineactions", server.url);
    let key = jwt_key(&server).await;
    let token = server.client.token().unwrap();
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let get = |token: String| http.get(&url).bearer_auth(token).send();

    // The forgery itself is sound: unchanged claims under the right key pass,
    // so each refusal below is for the one thing changed.
    let same = forge(&key, token, Algorithm::HS256, |_| {});
    assert_eq!(get(same).await.unwrap().status(), 200);

    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let payload = token.split('.').nth(1).unwrap().to_string();
    let refused: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            format!(
                "{}.{payload}.",
                b64(serde_json::json!({"alg": "none", "typ": "JWT"}))
            ),
        ),
        (
            "alg none, the original signature",
            format!(
                "{}.{payload}.{}",
                b64(serde_json::json!({"alg": "none"})),
                token.rsplit('.').next().unwrap()
            ),
        ),
        (
            "HS512 with the right key (only HS256 is Reach's)",
            forge(&key, token, Algorithm::HS512, |_| {}),
        ),
        ("an RS256 header over an HMAC signature", {
            let forged = forge(&key, token, Algorithm::HS256, |_| {});
            let (_, rest) = forged.split_once('.').unwrap();
            format!(
                "{}.{rest}",
                b64(serde_json::json!({"alg": "RS256", "typ": "JWT"}))
            )
        }),
        (
            "another key",
            forge(
                b"not the server's key at all, 32b",
                token,
                Algorithm::HS256,
                |_| {},
            ),
        ),
        (
            "wrong issuer",
            forge(&key, token, Algorithm::HS256, |c| {
                c["iss"] = "https://login.example.com/other/".into()
            }),
        ),
        (
            "wrong audience",
            forge(&key, token, Algorithm::HS256, |c| {
                c["aud"] = "https://graph.microsoft.com".into()
            }),
        ),
        (
            "expired past the leeway",
            forge(&key, token, Algorithm::HS256, |c| {
                c["iat"] = (now - 7200).into();
                c["nbf"] = (now - 7200).into();
                c["exp"] = (now - 120).into();
            }),
        ),
        (
            "expired 10 s ago (past the 5 s leeway)",
            forge(&key, token, Algorithm::HS256, |c| {
                c["iat"] = (now - 3600).into();
                c["nbf"] = (now - 3600).into();
                c["exp"] = (now - 10).into();
            }),
        ),
        (
            "a lifetime longer than this server issues",
            forge(&key, token, Algorithm::HS256, |c| {
                c["exp"] = (now + 30 * 24 * 3600).into();
            }),
        ),
        (
            "not valid yet",
            forge(&key, token, Algorithm::HS256, |c| {
                c["nbf"] = (now + 600).into();
            }),
        ),
        (
            "no expiry",
            forge(&key, token, Algorithm::HS256, |c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        ("claims changed under the original signature", {
            let mut claims: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&payload)
                    .unwrap(),
            )
            .unwrap();
            claims["roles"] =
                serde_json::json!(["Machine.LiveResponse", "Library.Manage", "Machine.Read.All"]);
            claims["tid"] = "another-tenant".into();
            let (head, rest) = token.split_once('.').unwrap();
            let signature = rest.split_once('.').unwrap().1;
            format!("{head}.{}.{signature}", b64(claims))
        }),
    ];
    for (why, forged) in refused {
        let response = get(forged).await.unwrap();
        assert_eq!(response.status(), 401, "{why}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "Unauthorized", "{why}");
    }
}

#[tokio::test]
async fn a_forged_tokens_roles_are_not_believed() {
    use jsonwebtoken::Algorithm;
    let server = TestServer::start().await;
    let device = server.enroll("target").await;
    let reader = server.app("reader", &[roles::READ_ALL]).await;
    let key = jwt_key(&server).await;
    // Someone who read the signing key gives the read-only app every role.
    let forged = forge(&key, reader.token().unwrap(), Algorithm::HS256, |c| {
        c["roles"] = serde_json::json!(roles::ALL);
    });
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/machines/{}/runliveresponse",
            server.url, device.machine_id
        ))
        .bearer_auth(&forged)
        .json(&request(vec![get_file("/etc/hostname")], "forged"))
        .send()
        .await
        .unwrap();
    assert_error(response, 403, "Forbidden").await;
    // What the app really holds still works with the forged token.
    let response = reqwest::Client::new()
        .get(format!("{}/api/machines", server.url))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
