//! Tokens from an external OIDC issuer: a fake issuer serves a JWKS over
//! real HTTP; tokens it signs are accepted with their roles or scopes, and
//! every kind of bad token is a 401.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reach_server::config::Oidc;
use serde_json::json;

use reach_server::testing::*;

const KEY: &[u8] = include_bytes!("../fixtures/oidc-test-key.pem");
const JWKS: &str = include_str!("../fixtures/oidc-test-jwks.json");
const ISSUER: &str = "https://login.example.test/tenant/v2.0";
const AUDIENCE: &str = "https://api.securitycenter.microsoft.com";

async fn jwks_server() -> String {
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(|| async { ([("content-type", "application/json")], JWKS) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn sign(claims: serde_json::Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(KEY).unwrap()).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[tokio::test]
async fn external_tokens_are_checked_against_the_issuers_keys() {
    let jwks_url = jwks_server().await;
    let server = TestServer::start_with(|c| {
        c.auth.oidc = Some(Oidc {
            issuer: ISSUER.into(),
            audiences: vec![AUDIENCE.into()],
            jwks_url: jwks_url.clone(),
            // Empty: each token's `tid` names the Reach tenant.
            tenant_id: String::new(),
        })
    })
    .await;
    let http = reqwest::Client::new();
    let call = |token: String| {
        let http = http.clone();
        let url = format!("{}/api/machines", server.url);
        async move { http.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let app = json!({
        "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "nbf": now() - 10,
        "roles": ["Machine.Read.All"], "appid": "ext-app", "app_displayname": "SOAR", "tid": server.tenant_id,
    });
    assert_eq!(call(sign(app.clone(), "test-key-1")).await.status(), 200);
    // The external app acts in the tenant its `tid` names, as its requestor name.
    let device = server.enroll("d").await;
    let mut responder = app.clone();
    responder["roles"] = json!(["Machine.LiveResponse"]);
    let created = http
        .post(format!(
            "{}/api/machines/{}/runliveresponse",
            server.url, device.machine_id
        ))
        .bearer_auth(sign(responder, "test-key-1"))
        .json(&request(vec![get_file("/etc/hostname")], "external"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["requestor"], "SOAR");

    let mut user = app.clone();
    user["roles"] = json!([]);
    user["scp"] = json!("Machine.Read Machine.LiveResponse");
    user["upn"] = json!("analyst@example.test");
    assert_eq!(call(sign(user, "test-key-1")).await.status(), 200);

    let mut no_role = app.clone();
    no_role["roles"] = json!(["Library.Manage"]);
    assert_error(call(sign(no_role, "test-key-1")).await, 403, "Forbidden").await;

    for (field, value) in [
        ("aud", json!("https://someone-else.example")),
        ("exp", json!(now() - 3600)),
        ("nbf", json!(now() + 3600)),
    ] {
        let mut bad = app.clone();
        bad[field] = value;
        assert_error(call(sign(bad, "test-key-1")).await, 401, "Unauthorized").await;
    }
    let mut other_issuer = app.clone();
    other_issuer["iss"] = json!("https://evil.example");
    assert_error(
        call(sign(other_issuer, "test-key-1")).await,
        401,
        "Unauthorized",
    )
    .await;
    assert_error(
        call(sign(app.clone(), "unknown-kid")).await,
        401,
        "Unauthorized",
    )
    .await;

    // Algorithm confusion: an HS256 token keyed with the issuer's public JWKS text.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("test-key-1".into());
    let confused =
        jsonwebtoken::encode(&header, &app, &EncodingKey::from_secret(JWKS.as_bytes())).unwrap();
    assert_error(call(confused).await, 401, "Unauthorized").await;
}
