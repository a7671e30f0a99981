//! The web console's server side: the page and its security headers,
//! signing in and out, and the session cookie's rules (HttpOnly,
//! SameSite=Strict, Secure over HTTPS, accepted by the API only with
//! X-Requested-With: reach-console).

use reach_proto::api::roles;
use reach_server::admin;

use reach_server::testing::*;

async fn user(server: &TestServer, name: &str, roles: &[&str]) -> String {
    let roles = roles.iter().map(|r| r.to_string()).collect();
    admin::create_user(
        server.state.store.as_ref(),
        &server.tenant_id,
        name,
        roles,
        Vec::new(),
        None,
    )
    .await
    .unwrap()
    .password
}

/// Signs in; returns the status, the Set-Cookie header and the body.
async fn sign_in(
    server: &TestServer,
    name: &str,
    password: &str,
) -> (u16, String, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/console/session", server.url))
        .json(&serde_json::json!({ "name": name, "password": password }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cookie, response.json().await.unwrap_or_default())
}

/// The `name=value` part of a Set-Cookie header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn the_console_page_is_served_with_strict_security_headers() {
    let server = TestServer::start().await;
    let page = reqwest::get(format!("{}/", server.url)).await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/app.js">"#));
    assert!(!html.contains("<script>"), "no inline script");
    for file in [
        "app.js",
        "api.js",
        "ui.js",
        "devices.js",
        "run.js",
        "actions.js",
        "library.js",
    ] {
        let asset = reqwest::get(format!("{}/console/{file}", server.url))
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{file}");
        assert!(
            asset.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
    }
    let (status, body) = server.get_raw("/console/../Cargo.toml").await;
    assert_eq!(status, 404, "{body}");
    let missing = reqwest::get(format!("{}/console/nope.js", server.url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NotFound");
    // API responses carry the same headers.
    let api = reqwest::get(format!("{}/api/machines", server.url))
        .await
        .unwrap();
    assert_eq!(api.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn users_sign_in_with_a_cookie_the_api_accepts_only_from_the_console() {
    let server = TestServer::start().await;
    let password = user(
        &server,
        "Dana",
        &[roles::LIVE_RESPONSE, roles::READ_ALL, roles::LIBRARY_MANAGE],
    )
    .await;
    let (status, _, body) = sign_in(&server, "dana", "wrong password!").await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert_eq!(body["error"]["message"], "Wrong user name or password");
    let (status, _, body) = sign_in(&server, "nobody", &password).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "Wrong user name or password");

    let (status, set_cookie, body) = sign_in(&server, "DANA", &password).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Dana");
    assert_eq!(body["tenantId"], server.tenant_id.as_str());
    assert!(set_cookie.starts_with("reach_session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain http: {set_cookie}");
    let cookie = cookie_pair(&set_cookie);

    let http = reqwest::Client::new();
    let with_header = http
        .get(format!("{}/api/machines", server.url))
        .header("cookie", &cookie)
        .header("x-requested-with", "reach-console")
        .send()
        .await
        .unwrap();
    assert_eq!(with_header.status(), 200);
    // The same cookie without the console's header (a form on another site): refused.
    let forged = http
        .get(format!("{}/api/machines", server.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let body: serde_json::Value = forged.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Requested-With")
    );

    // The user is the requestor of what they run.
    let device = server.enroll("offline").await;
    server.upload("x.sh", b"true\n").await;
    let created = http
        .post(format!(
            "{}/api/machines/{}/runliveresponse",
            server.url, device.machine_id
        ))
        .header("cookie", &cookie)
        .header("x-requested-with", "reach-console")
        .json(&request(vec![run_script("x.sh", None)], "from the console"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["requestor"], "Dana");

    let me = http
        .get(format!("{}/console/session", server.url))
        .header("cookie", &cookie)
        .header("x-requested-with", "reach-console")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["name"], "Dana");

    let out = http
        .delete(format!("{}/console/session", server.url))
        .header("cookie", &cookie)
        .header("x-requested-with", "reach-console")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("reach_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // The session ended on the server: the old cookie, and the token inside
    // it used as a bearer token, stop working at once.
    let replayed = http
        .get(format!("{}/api/machines", server.url))
        .header("cookie", &cookie)
        .header("x-requested-with", "reach-console")
        .send()
        .await
        .unwrap();
    assert_error(replayed, 401, "Unauthorized").await;
    let token = cookie.split_once('=').unwrap().1;
    let replayed = http
        .get(format!("{}/api/machines", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_error(replayed, 401, "Unauthorized").await;
    // Signing out without a session only clears the cookie.
    let out = http
        .delete(format!("{}/console/session", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    let (status, _, _) = sign_in(&server, "Dana", &password).await;
    assert_eq!(status, 200, "the user signs in again");
}

#[tokio::test]
async fn a_users_roles_limit_what_the_console_can_do() {
    let server = TestServer::start().await;
    let password = user(&server, "reader", &[roles::READ]).await;
    let (_, set_cookie, _) = sign_in(&server, "reader", &password).await;
    let device = server.enroll("d").await;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/machines/{}/runliveresponse",
            server.url, device.machine_id
        ))
        .header("cookie", cookie_pair(&set_cookie))
        .header("x-requested-with", "reach-console")
        .json(&request(vec![get_file("/etc/hostname")], "no"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn the_session_says_what_the_api_allows_and_the_api_agrees() {
    let server = TestServer::start().await;
    let device = server.agent().await;
    let basic = user(
        &server,
        "basic",
        &[roles::LIVE_RESPONSE_BASIC, roles::READ_ALL],
    )
    .await;
    let (status, set_cookie, session) = sign_in(&server, "basic", &basic).await;
    assert_eq!(status, 200, "{session}");
    let expected = serde_json::json!({
        "collectFiles": true,
        "putFilesAndRunScripts": false,
        "cancelActions": true,
        "downloadResults": true,
        "tagMachines": false,
        "manageLibrary": false,
        "readAuditLog": false,
        "isolate": false,
        "offboard": false,
        "stopAndQuarantine": false,
        "collectForensics": false,
    });
    assert_eq!(session["capabilities"], expected);
    // The same from the session endpoint, and each claim holds at the API:
    // a basic user collects, cancels and downloads (the buttons the console
    // used to disable), and may not tag.
    let http = reqwest::Client::new();
    let cookie = cookie_pair(&set_cookie);
    let call = |method: reqwest::Method, path: String| {
        http.request(method, format!("{}{path}", server.url))
            .header("cookie", &cookie)
            .header("x-requested-with", "reach-console")
    };
    let me: serde_json::Value = call(reqwest::Method::GET, "/console/session".into())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["capabilities"], expected);
    std::fs::create_dir_all(device.work_dir()).unwrap();
    let path = device.work_dir().join("collected.log");
    std::fs::write(&path, b"basic").unwrap();
    let created = call(
        reqwest::Method::POST,
        format!("/api/machines/{}/runliveresponse", device.machine_id),
    )
    .json(&request(vec![get_file(path.to_str().unwrap())], "basic"))
    .send()
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    server.wait_final(&id).await;
    let link = call(
        reqwest::Method::GET,
        format!("/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index=0)"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(link.status(), 200);
    let cancel = call(
        reqwest::Method::POST,
        format!("/api/machineactions/{id}/cancel"),
    )
    .json(&serde_json::json!({"Comment": "done"}))
    .send()
    .await
    .unwrap();
    // Authorised (the action is already final, so it cannot be cancelled).
    assert_error(cancel, 400, "BadRequest").await;
    let tag = call(
        reqwest::Method::POST,
        format!("/api/machines/{}/tags", device.machine_id),
    )
    .json(&serde_json::json!({"Value": "x", "Action": "Add"}))
    .send()
    .await
    .unwrap();
    assert_error(tag, 403, "Forbidden").await;
    for route in [
        "isolate",
        "offboard",
        "StopAndQuarantineFile",
        "collectInvestigationPackage",
    ] {
        let refused = call(
            reqwest::Method::POST,
            format!("/api/machines/{}/{route}", device.machine_id),
        )
        .json(&serde_json::json!({"Comment": "x", "Sha1": "0".repeat(40)}))
        .send()
        .await
        .unwrap();
        assert_error(refused, 403, "Forbidden").await;
    }

    let admin = user(&server, "admin", roles::ALL).await;
    let (_, _, session) = sign_in(&server, "admin", &admin).await;
    assert!(
        session["capabilities"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == true),
        "{session}"
    );
}

#[tokio::test]
async fn guessing_passwords_is_rate_limited() {
    let server = TestServer::start().await;
    let password = user(&server, "target", &[roles::READ]).await;
    for _ in 0..10 {
        assert_eq!(sign_in(&server, "target", "not the password").await.0, 401);
    }
    let (status, _, body) = sign_in(&server, "target", &password).await;
    assert_eq!(status, 429, "even the right password waits: {body}");
    assert_eq!(body["error"]["code"], "TooManyRequests");
}

#[tokio::test]
async fn the_session_cookie_is_secure_over_https() {
    let server = TestServer::start_tls().await;
    let password = user(&server, "tls-user", &[roles::READ]).await;
    let response = reqwest::Client::builder()
        .tls_backend_preconfigured(
            reach_agent::tls::client_config(server.ca_file.as_deref()).unwrap(),
        )
        .build()
        .unwrap()
        .post(format!("{}/console/session", server.url))
        .json(&serde_json::json!({ "name": "tls-user", "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(set_cookie.contains("; Secure"), "{set_cookie}");
}

#[tokio::test]
async fn a_disabled_user_is_signed_out_at_once_and_stays_out() {
    let server = TestServer::start().await;
    let password = user(&server, "Dana", &[roles::READ]).await;
    let (status, cookie, _) = sign_in(&server, "Dana", &password).await;
    assert_eq!(status, 200);
    let session = || async {
        reqwest::Client::new()
            .get(format!("{}/api/machines", server.url))
            .header("cookie", cookie_pair(&cookie))
            .header("x-requested-with", "reach-console")
            .send()
            .await
            .unwrap()
    };
    assert_eq!(session().await.status(), 200);

    let store = server.state.store.as_ref();
    store.set_user_disabled("dana", true).await.unwrap();
    assert_error(session().await, 401, "Unauthorized").await;
    assert_eq!(sign_in(&server, "Dana", &password).await.0, 401);

    // Enabled again: a new sign-in works, the old session stays revoked.
    store.set_user_disabled("Dana", false).await.unwrap();
    assert_error(session().await, 401, "Unauthorized").await;
    let (status, _, _) = sign_in(&server, "Dana", &password).await;
    assert_eq!(status, 200);
}
