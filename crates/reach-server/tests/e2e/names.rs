//! Machines by name: a name two visible machines carry is refused (409,
//! naming their ids), never guessed; scope decides which machines count;
//! revoking a stale record lets the name resolve again; `duplicateName`
//! marks them in listings; a renamed machine is an audit entry; and
//! enrollment tokens expire, run out of uses and can be revoked.

use futures::SinkExt;
use reach_proto::agent::{AgentMessage, EnrollResponse};
use reach_proto::api::roles;
use reach_server::admin;
use tokio_tungstenite::tungstenite::Message;

use reach_server::testing::*;

/// Enrolls a device that reports `hostname` with `token`.
async fn enroll_as(
    server: &TestServer,
    token: &str,
    hostname: &str,
) -> Result<EnrollResponse, reach_client::ClientError> {
    let mut info = reach_agent::system::machine_info();
    info.hostname = hostname.to_string();
    reach_client::AgentClient::enroll(&server.url, token, info, None).await
}

async fn status_of(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    server.get_raw(path).await
}

#[tokio::test]
async fn a_name_two_machines_carry_is_refused_until_the_stale_one_is_revoked() {
    let server = TestServer::start().await;
    let token = server.enrollment_token.clone();
    let real = enroll_as(&server, &token, "vm").await.unwrap();
    let impostor = enroll_as(&server, &token, "VM").await.unwrap();

    let (status, body) = status_of(&server, "/api/machines/vm").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "Conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&real.machine_id) && message.contains(&impostor.machine_id),
        "{message}"
    );
    let refused = server
        .client
        .run_live_response("vm", &request(vec![get_file("/etc/hostname")], "by name"))
        .await
        .unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(409));
    assert!(
        server.client.actions(&[]).await.unwrap().value.is_empty(),
        "nothing was queued"
    );
    // Listings mark both; ids still work.
    let listed = server.client.machines(&[]).await.unwrap().value;
    assert!(
        listed
            .iter()
            .filter(|m| m.computer_dns_name.eq_ignore_ascii_case("vm"))
            .all(|m| m.duplicate_name)
    );
    let (status, by_id) = status_of(&server, &format!("/api/machines/{}", real.machine_id)).await;
    assert_eq!(status, 200);
    assert_eq!(by_id["duplicateName"], true);

    // The operator revokes the impostor: the name resolves to the real one.
    server
        .state
        .store
        .revoke_machine(&impostor.machine_id)
        .await
        .unwrap();
    let (status, body) = status_of(&server, "/api/machines/vm").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], real.machine_id.as_str());
    assert_eq!(body["duplicateName"], false);
}

#[tokio::test]
async fn only_the_machines_in_the_callers_scope_count_for_a_name() {
    let server = TestServer::start().await;
    let store = server.state.store.as_ref();
    let token = server.enrollment_token.clone();
    let inside = enroll_as(&server, &token, "db").await.unwrap();
    let outside = enroll_as(&server, &token, "db").await.unwrap();
    admin::change_tags(
        store,
        &server.tenant_id,
        &inside.machine_id,
        &["dba".into()],
        &[],
    )
    .await
    .unwrap();
    admin::create_group(store, &server.tenant_id, "dba-team", &["dba".into()])
        .await
        .unwrap();
    let app = admin::create_scoped_app(
        store,
        &server.tenant_id,
        "dba automation",
        vec![roles::READ_ALL.to_string()],
        vec!["dba-team".into()],
    )
    .await
    .unwrap();
    let scoped = server.login(&app).await;
    let machine = scoped.machine("db").await.unwrap();
    assert_eq!(machine.id, inside.machine_id);
    assert!(
        !machine.duplicate_name,
        "the other 'db' is not the caller's to see"
    );
    let all = server.client.machine(&outside.machine_id).await.unwrap();
    assert!(all.duplicate_name, "an unscoped caller sees both");
}

#[tokio::test]
async fn a_machine_reporting_a_new_name_is_recorded() {
    let server = TestServer::start().await;
    let device = enroll_as(&server, &server.enrollment_token, "laptop-1")
        .await
        .unwrap();
    let bearer = format!("{}.{}", device.machine_id, device.credential);
    let mut socket = agent_socket(&server.url, &bearer).await;
    let mut info = reach_agent::system::machine_info();
    info.hostname = "dc01".into();
    let hello = AgentMessage::Hello {
        info,
        running: vec![],
        instance: "p".into(),
        capabilities: vec![],
        isolated: None,
    };
    socket
        .send(Message::text(serde_json::to_string(&hello).unwrap()))
        .await
        .unwrap();
    let renamed = wait_for("a MachineRenamed entry", async || {
        let (_, trail) = server
            .get_raw("/api/auditlog?$filter=operation+eq+'MachineRenamed'")
            .await;
        trail["value"].as_array().and_then(|v| v.first()).cloned()
    })
    .await;
    assert_eq!(renamed["machineId"], device.machine_id.as_str());
    assert_eq!(renamed["details"]["from"], "laptop-1");
    assert_eq!(renamed["details"]["to"], "dc01");
}

#[tokio::test]
async fn enrollment_tokens_expire_run_out_and_can_be_revoked() {
    let server = TestServer::start().await;
    let store = server.state.store.as_ref();
    let tenant = server.tenant_id.as_str();
    let refusal = |result: Result<EnrollResponse, reach_client::ClientError>| {
        let err = result.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
        err.to_string()
    };

    let once = admin::create_enrollment_token(store, tenant, None, Some(1))
        .await
        .unwrap();
    enroll_as(&server, &once, "first").await.unwrap();
    let why = refusal(enroll_as(&server, &once, "second").await);
    assert!(why.contains("used as many times as it allows"), "{why}");

    let short = admin::create_enrollment_token(
        store,
        tenant,
        Some(std::time::Duration::from_secs(1)),
        None,
    )
    .await
    .unwrap();
    enroll_as(&server, &short, "in time").await.unwrap();
    let why = wait_for("the short-lived token expiring", async || {
        enroll_as(&server, &short, "late").await.err()
    })
    .await
    .to_string();
    assert!(why.contains("expired"), "{why}");

    let revocable = admin::create_enrollment_token(store, tenant, None, None)
        .await
        .unwrap();
    let listed = store.list_enrollment_tokens().await.unwrap();
    let hash = reach_server::auth::sha256_hex(&revocable);
    let row = listed.iter().find(|t| hash.starts_with(&t.id)).unwrap();
    assert_eq!((row.uses, row.max_uses, row.revoked), (0, None, None));
    store
        .revoke_enrollment_token(&row.id, reach_server::time::Micros::now())
        .await
        .unwrap();
    let why = refusal(enroll_as(&server, &revocable, "after").await);
    assert!(why.contains("revoked"), "{why}");
    let once_row = store
        .list_enrollment_tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| reach_server::auth::sha256_hex(&once).starts_with(&t.id))
        .unwrap();
    assert_eq!((once_row.uses, once_row.max_uses), (1, Some(1)));
}
