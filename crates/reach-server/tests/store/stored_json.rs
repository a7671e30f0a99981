//! The JSON the store keeps of agent work (`commands.command` and
//! `commands.work`: reach-proto's `Command` and `Work`). Rows outlive the
//! server version that wrote them, so a field renamed in reach-proto must
//! not silently change what is written, nor stop rows already stored from
//! being read: the text written is pinned here, on both engines, and rows
//! in the shapes earlier versions wrote must still read.

use super::*;

/// A RunScript with arguments and a signature: every optional field set.
fn run_script() -> NewCommand {
    NewCommand {
        command: Command::new(
            reach_proto::api::CommandType::RunScript,
            &[("ScriptName", "triage.sh"), ("Args", "-v --all")],
        ),
        work: Work::RunScript {
            script_name: "triage.sh".into(),
            sha256: "ab".repeat(32),
            args: Some("-v --all".into()),
            signature: Some("c2lnbmF0dXJl".into()),
        },
        timeout_secs: 600,
    }
}

/// The database behind `backend`, through a connection of the test's own.
async fn raw(backend: &Backend) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&backend.url).await.unwrap()
}

/// The `command` and `work` columns of action `a1`, by index, as stored.
async fn stored(backend: &Backend) -> Vec<(String, String)> {
    use sqlx::Row;
    sqlx::query("SELECT command, work FROM commands WHERE action_id = 'a1' ORDER BY idx")
        .fetch_all(&raw(backend).await)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get("command"), row.get("work")))
        .collect()
}

#[tokio::test]
async fn the_json_written_for_agent_work_is_pinned() {
    for backend in backends().await {
        let (_store, _) = with_action(
            &backend,
            vec![
                put_file("tool.bin"),
                get_file("/var/log/syslog"),
                run_script(),
            ],
        )
        .await;
        let sha = "ab".repeat(32);
        assert_eq!(
            stored(&backend).await,
            vec![
                (
                    r#"{"type":"PutFile","params":[]}"#.to_string(),
                    r#"{"type":"PutFile","file_name":"tool.bin","sha256":"abc"}"#.to_string(),
                ),
                (
                    r#"{"type":"GetFile","params":[]}"#.to_string(),
                    r#"{"type":"GetFile","path":"/var/log/syslog"}"#.to_string(),
                ),
                (
                    r#"{"type":"RunScript","params":[{"key":"ScriptName","value":"triage.sh"},{"key":"Args","value":"-v --all"}]}"#.to_string(),
                    format!(
                        r#"{{"type":"RunScript","script_name":"triage.sh","sha256":"{sha}","args":"-v --all","signature":"c2lnbmF0dXJl"}}"#
                    ),
                ),
            ],
            "{}",
            backend.name
        );
    }
}

#[tokio::test]
async fn rows_in_the_shapes_earlier_versions_wrote_still_read() {
    // Work without `signature` (before signed libraries), a RunScript whose
    // `args` is null, and a command without `params`.
    let earlier = [
        (
            r#"{"type":"PutFile"}"#,
            r#"{"type":"PutFile","file_name":"tool.bin","sha256":"abc"}"#,
            Work::PutFile {
                file_name: "tool.bin".into(),
                sha256: "abc".into(),
                signature: None,
            },
        ),
        (
            r#"{"type":"RunScript","params":[{"key":"ScriptName","value":"a.sh"}]}"#,
            r#"{"type":"RunScript","script_name":"a.sh","sha256":"abc","args":null}"#,
            Work::RunScript {
                script_name: "a.sh".into(),
                sha256: "abc".into(),
                args: None,
                signature: None,
            },
        ),
        (
            r#"{"type":"GetFile","params":[{"key":"Path","value":"/etc/hosts"}]}"#,
            r#"{"type":"GetFile","path":"/etc/hosts"}"#,
            Work::GetFile {
                path: "/etc/hosts".into(),
            },
        ),
    ];
    for backend in backends().await {
        let (store, _) =
            with_action(&backend, vec![put_file("x"), put_file("y"), put_file("z")]).await;
        let db = raw(&backend).await;
        for (index, (command, work, _)) in earlier.iter().enumerate() {
            sqlx::query(
                "UPDATE commands SET command = $1, work = $2 WHERE action_id = 'a1' AND idx = $3",
            )
            .bind(*command)
            .bind(*work)
            .bind(index as i64)
            .execute(&db)
            .await
            .unwrap();
        }
        let action = store.get_action(TENANT, "a1").await.unwrap();
        for (row, (command, _, work)) in action.commands.iter().zip(&earlier) {
            assert_eq!(row.work, *work, "{}", backend.name);
            let command: Command = serde_json::from_str(command).unwrap();
            assert_eq!(row.command, command, "{}", backend.name);
        }
        assert!(action.commands[0].command.params.is_empty());
    }
}
