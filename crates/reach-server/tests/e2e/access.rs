//! Scoped access through the public API: revoking an app's tokens (secret
//! rotation, disabling), device groups by machine tags (machines outside
//! a caller's groups do not exist for it), and the basic live response
//! role that may only collect files.

use reach_proto::api::{Command, roles};
use reach_server::admin;

use reach_server::testing::*;

fn everything() -> Vec<String> {
    roles::ALL.iter().map(|r| r.to_string()).collect()
}

/// A server with an app holding every role, signed in and heard from once.
async fn automation() -> (TestServer, admin::NewApp, reach_client::Client) {
    let server = TestServer::start().await;
    let store = server.state.store.as_ref();
    let app = admin::create_app(store, &server.tenant_id, "automation", everything())
        .await
        .unwrap();
    let client = server.login(&app).await;
    client.machines(&[]).await.unwrap();
    (server, app, client)
}

#[tokio::test]
async fn rotating_a_secret_or_disabling_an_app_revokes_its_tokens_at_once() {
    let (server, app, client) = automation().await;
    let store = server.state.store.as_ref();

    let secret = admin::rotate_app_secret(store, &app.client_id)
        .await
        .unwrap();
    let refused = client.machines(&[]).await.unwrap_err().to_string();
    assert!(refused.contains("401"), "{refused}");
    assert!(refused.contains("no longer valid"), "{refused}");
    let old_secret = reach_client::Client::new(&server.url)
        .login(&server.tenant_id, &app.client_id, &app.client_secret)
        .await;
    assert!(old_secret.is_err());
    let rotated = admin::NewApp {
        client_secret: secret,
        ..app.clone()
    };
    let client = server.login(&rotated).await;
    client.machines(&[]).await.unwrap();

    store.set_app_disabled(&app.client_id, true).await.unwrap();
    assert!(
        client
            .machines(&[])
            .await
            .unwrap_err()
            .to_string()
            .contains("401")
    );
    let disabled = reach_client::Client::new(&server.url)
        .login(&server.tenant_id, &app.client_id, &rotated.client_secret)
        .await
        .err()
        .unwrap();
    assert!(disabled.to_string().contains("disabled"), "{disabled}");

    store.set_app_disabled(&app.client_id, false).await.unwrap();
    assert!(
        client.machines(&[]).await.is_err(),
        "earlier tokens stay revoked"
    );
    server.login(&rotated).await.machines(&[]).await.unwrap();
}

/// The operator's command runs in its own process, with its own connection
/// to the database: this node learns of its change only by reading the
/// account again, which it does at most `ACCOUNT_TTL` after the last read.
#[tokio::test]
async fn a_revocation_by_another_process_takes_effect_within_a_second() {
    use reach_server::auth::admit::ACCOUNT_TTL;
    let (server, app, client) = automation().await;
    let operator = reach_server::store::sql::SqlStore::open_sqlite(&server.state.config.data_dir)
        .await
        .unwrap();
    let changed = std::time::Instant::now();
    admin::rotate_app_secret(&operator, &app.client_id)
        .await
        .unwrap();
    let refused = wait_for("the rotated app's token refused", async || {
        let started = std::time::Instant::now();
        match client.machines(&[]).await {
            Ok(_) => {
                let after = started.duration_since(changed);
                assert!(
                    after < ACCOUNT_TTL,
                    "the revoked token was still accepted {after:?} after the change"
                );
                None
            }
            Err(err) => Some(err.to_string()),
        }
    })
    .await;
    assert!(refused.contains("no longer valid"), "{refused}");
}

#[tokio::test]
async fn machines_outside_a_callers_device_groups_do_not_exist_for_it() {
    let server = TestServer::start().await;
    let store = server.state.store.as_ref();
    let tenant = &server.tenant_id;
    let inside = server.enroll("web").await;
    let outside = server.enroll("db").await;
    admin::change_tags(
        store,
        tenant,
        &inside.machine_id,
        &["Web-Servers".into()],
        &[],
    )
    .await
    .unwrap();
    admin::change_tags(
        store,
        tenant,
        &outside.machine_id,
        &["databases".into()],
        &[],
    )
    .await
    .unwrap();
    admin::create_group(store, tenant, "web", &["web-servers".into(), "dmz".into()])
        .await
        .unwrap();
    assert!(
        admin::create_scoped_app(store, tenant, "x", everything(), vec!["nope".into()])
            .await
            .is_err(),
        "a group that does not exist is refused"
    );
    let app = admin::create_scoped_app(store, tenant, "web team", everything(), vec!["WEB".into()])
        .await
        .unwrap();
    let scoped = server.login(&app).await;

    // An action on the machine outside, made by an unscoped caller.
    server.upload("x.sh", b"echo").await;
    let elsewhere = server
        .client
        .run_live_response(
            &outside.machine_id,
            &request(vec![get_file("/etc/hostname")], "t"),
        )
        .await
        .unwrap();

    let machines = scoped.machines(&[("$count", "true")]).await.unwrap();
    assert_eq!(machines.count, Some(1));
    assert_eq!(machines.value[0].id, inside.machine_id);
    let unfiltered = server.client.machines(&[]).await.unwrap();
    assert_eq!(unfiltered.value.len(), 2);
    let hidden = scoped.machine(&outside.machine_id).await.unwrap_err();
    assert!(hidden.to_string().contains("404"), "{hidden}");
    let run = scoped
        .run_live_response(
            &outside.machine_id,
            &request(vec![get_file("/etc/hostname")], "t"),
        )
        .await
        .unwrap_err();
    assert!(run.to_string().contains("404"), "{run}");
    for refused in [
        scoped.action(&elsewhere.id).await.map(|_| ()).unwrap_err(),
        scoped
            .cancel(&elsewhere.id, "no")
            .await
            .map(|_| ())
            .unwrap_err(),
        scoped
            .download_link(&elsewhere.id, 0)
            .await
            .map(|_| ())
            .unwrap_err(),
        scoped
            .output(&elsewhere.id, 0)
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(refused.to_string().contains("404"), "{refused}");
    }
    assert!(scoped.actions(&[]).await.unwrap().value.is_empty());

    // Inside its group, everything works; the unscoped caller sees both.
    let mine = scoped
        .run_live_response(
            &inside.machine_id,
            &request(vec![get_file("/etc/hostname")], "t"),
        )
        .await
        .unwrap();
    let listed = scoped.actions(&[]).await.unwrap().value;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, mine.id);
    assert_eq!(server.client.actions(&[]).await.unwrap().value.len(), 2);
    scoped.cancel(&mine.id, "done").await.unwrap();

    // Untagged, the machine leaves the group on the next call.
    admin::change_tags(
        store,
        tenant,
        &inside.machine_id,
        &[],
        &["web-servers".into()],
    )
    .await
    .unwrap();
    assert!(scoped.machines(&[]).await.unwrap().value.is_empty());
    assert!(scoped.action(&mine.id).await.is_err());
}

#[tokio::test]
async fn the_basic_live_response_role_may_only_collect_files() {
    let server = TestServer::start().await;
    let device = server.enroll("host").await;
    server.upload("tool.sh", b"echo").await;
    let basic = server
        .app("collector", &[roles::LIVE_RESPONSE_BASIC, roles::READ_ALL])
        .await;
    let refused: [Vec<Command>; 2] = [
        vec![run_script("tool.sh", None)],
        vec![put_file("tool.sh"), get_file("/etc/hostname")],
    ];
    for commands in refused {
        let err = basic
            .run_live_response(&device.machine_id, &request(commands, "t"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("403"), "{err}");
        assert!(err.contains("Machine.LiveResponse"), "{err}");
    }
    assert!(server.client.actions(&[]).await.unwrap().value.is_empty());
    let collect = basic
        .run_live_response(
            &device.machine_id,
            &request(vec![get_file("/etc/hostname")], "t"),
        )
        .await
        .unwrap();
    basic.cancel(&collect.id, "enough").await.unwrap();
}
