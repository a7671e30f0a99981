//! Results kept in the database: a transcript that comes with the outcome
//! is stored in the same transaction, for its tenant only, read one by one
//! or a page at a time, and forgotten with the result; only an inline key
//! names a command.

use super::*;
use sha2::Digest;

fn transcript(key: &str) -> ResultBlob {
    ResultBlob {
        key: key.into(),
        size: 42,
        sha256: Some("ab".repeat(32)),
        chunks: None,
    }
}

/// A transcript sent with the outcome.
pub(crate) fn inline(text: &str) -> InlineResult {
    InlineResult {
        bytes: text.as_bytes().to_vec(),
        sha256: format!("{:x}", sha2::Sha256::digest(text.as_bytes())),
    }
}

/// How the store records `inline(text)` for `command`.
fn kept_inline(command: &CommandRef, text: &str) -> ResultBlob {
    let sent = inline(text);
    ResultBlob {
        key: reach_server::store::inline_result_key(command),
        size: sent.bytes.len() as u64,
        sha256: Some(sent.sha256),
        chunks: None,
    }
}

#[tokio::test]
async fn a_transcript_that_comes_with_the_outcome_is_kept_with_it() {
    for backend in backends().await {
        let store = backend.open().await;
        let machines = seed(&store, 1).await;
        let machine = &machines[0];
        let commands = vec![run_script("a.sh"), run_script("b.sh"), put_file("c")];
        store
            .create_action(&action("a1", machine, commands), LIMITS)
            .await
            .unwrap();
        let now = Micros::now();
        let done = Finish::Completed { file_sha256: None };
        let finish = async |expected: &str, result: Option<&InlineResult>| {
            let claimed = store
                .claim_next_command(machine, "agent-1", now, Lane::Live)
                .await
                .unwrap()
                .unwrap();
            let action = store
                .finish_command(machine, &claimed.command, &done, result, now)
                .await
                .unwrap()
                .unwrap();
            let command = &action.command;
            assert_eq!(
                command.status,
                CommandStatus::Completed,
                "{}: {expected}",
                backend.name
            );
            (claimed.command, command.result.clone())
        };
        // With the outcome: recorded in the same transaction, its bytes in
        // the database, for this tenant only.
        let (first, kept) = finish("inline", Some(&inline("transcript 0"))).await;
        assert_eq!(
            kept,
            Some(kept_inline(&first, "transcript 0")),
            "{}",
            backend.name
        );
        assert_eq!(kept.unwrap().inline_command(), Some(first.clone()));
        assert_eq!(
            store.inline_result(TENANT, &first).await.unwrap(),
            b"transcript 0",
            "{}",
            backend.name
        );
        assert!(matches!(
            store.inline_result("another-tenant", &first).await,
            Err(StoreError::NotFound(_))
        ));
        // Uploaded first: the upload is kept, the inline copy is not.
        let claimed = store
            .claim_next_command(machine, "agent-1", now, Lane::Live)
            .await
            .unwrap()
            .unwrap();
        store
            .record_result(machine, &claimed.command, &transcript("uploaded-1"))
            .await
            .unwrap();
        let action = store
            .finish_command(
                machine,
                &claimed.command,
                &done,
                Some(&inline("transcript 1")),
                now,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            action.command.result,
            Some(transcript("uploaded-1")),
            "{}",
            backend.name
        );
        assert!(matches!(
            store.inline_result(TENANT, &claimed.command).await,
            Err(StoreError::NotFound(_))
        ));
        // A PutFile has no result: one sent with it is not kept.
        let (third, kept) = finish("put", Some(&inline("transcript 2"))).await;
        assert_eq!(kept, None, "{}", backend.name);
        assert!(store.inline_result(TENANT, &third).await.is_err());
        // Many in one read (a page of a batch's results): those kept, for
        // this tenant only.
        let asked = [first.clone(), claimed.command.clone(), third.clone()];
        let found = store.inline_results(TENANT, &asked).await.unwrap();
        assert_eq!(found.len(), 1, "{}", backend.name);
        assert_eq!(found[&first], b"transcript 0");
        assert!(
            store
                .inline_results("another-tenant", &asked)
                .await
                .unwrap()
                .is_empty()
        );
        let stored = store.get_action(TENANT, "a1").await.unwrap();
        assert_eq!(stored.status, ActionStatus::Succeeded, "{}", backend.name);
        assert_eq!(
            stored.commands[0].result,
            Some(kept_inline(&first, "transcript 0")),
            "{}",
            backend.name
        );
        // Retention forgets the bytes with the result.
        assert!(store.forget_result(&first, now).await.unwrap());
        assert!(matches!(
            store.inline_result(TENANT, &first).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[test]
fn only_an_inline_result_key_names_a_command() {
    let command = CommandRef {
        action_id: "0f3c2a9e-1b7d-4c55-9a43-2d1e8f7b6c10".into(),
        index: 3,
    };
    let key = reach_server::store::inline_result_key(&command);
    assert_eq!(
        reach_server::store::inline_result_command(&key),
        Some(command)
    );
    for other in [
        "transcripts/2026-12-01/a.0",
        "results/a/0",
        "inline/a",
        "inline//0",
        "inline/a/",
        "inline/a/+1",
        "inline/a/0/x",
        "inline/../0",
        "inline/a/99999999999",
    ] {
        assert_eq!(
            reach_server::store::inline_result_command(other),
            None,
            "{other}"
        );
    }
}
