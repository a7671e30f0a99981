//! SQLite's group commit: callers queued for the writer share one COMMIT,
//! each is answered after it, a failing caller takes only its own changes
//! with it, and a caller dropped at any point never leaves the writer's
//! transaction open.

use super::*;

const MANY: ActionLimits = ActionLimits {
    running_per_tenant: 25,
    pending_per_requestor: 10_000,
};

fn sqlite_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = reach_server::store::sql::sqlite_url(&dir.path().join("reach.db"));
    (dir, url)
}

fn pending(counts: &[(ActionStatus, u64)]) -> u64 {
    counts
        .iter()
        .find(|(s, _)| *s == ActionStatus::Pending)
        .map_or(0, |(_, n)| *n)
}

/// 64 submissions at once, 8 more racing for one machine: the 64 that
/// pass are durable (another connection to the file sees them), the 8
/// that break the one-active-action index fail alone, and the 64 took
/// fewer COMMITs than there were of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_queued_for_the_writer_share_a_commit_and_fail_alone() {
    let (_dir, url) = sqlite_file();
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let machines = seed(&store, 64).await;
    let before = store.group_commits().unwrap();
    let mut tasks = Vec::new();
    for (i, machine) in machines.iter().enumerate() {
        let node = store.clone();
        let new = action(&format!("a{i}"), machine, vec![put_file("x")]);
        tasks.push(tokio::spawn(
            async move { node.create_action(&new, MANY).await },
        ));
        if i < 8 {
            let store = store.clone();
            let new = action(&format!("dup{i}"), &machines[0], vec![put_file("x")]);
            tasks.push(tokio::spawn(async move {
                store.create_action(&new, MANY).await
            }));
        }
    }
    let (mut created, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::ActiveActionExists) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created, refused), (64, 8));
    let after = store.group_commits().unwrap();
    let writes = after.writes - before.writes;
    let commits = after.commits - before.commits;
    assert_eq!(writes, 64, "each created action is one committed write");
    assert!(
        commits < writes,
        "{writes} writes queued together took {commits} COMMITs"
    );
    let other = SqlStore::connect(&url).await.unwrap();
    let counts = other.count_actions_by_status().await.unwrap();
    assert_eq!(pending(&counts), 64);
}

/// Polls `fut` at most `polls` times, then drops it: a caller that gives
/// up at one of its await points (a cancelled request).
async fn poll_at_most<F: std::future::Future>(polls: usize, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut left = polls;
    std::future::poll_fn(move |cx| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        left -= 1;
        let poll = fut.as_mut().poll(cx).map(Some);
        if poll.is_pending() && left == 0 {
            // Polled once more, to give up.
            cx.waker().wake_by_ref();
        }
        poll
    })
    .await
}

/// Writers dropped at each of their await points (waiting for the turn,
/// letting other tasks reach it after their statements, waiting for the
/// group's COMMIT), alone and among others: every one answered Ok is
/// durable, and afterwards another process still gets the file's write
/// lock, so no transaction was left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_dropped_anywhere_leave_no_transaction_open() {
    let (_dir, url) = sqlite_file();
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let machines = seed(&store, 202).await;
    let other = SqlStore::connect(&url).await.unwrap();
    // Alone: given up after its first poll, with the writer free (it ran
    // its statements and was letting other tasks run before committing).
    let alone = action("alone", &machines[0], vec![put_file("x")]);
    assert!(
        poll_at_most(1, store.create_action(&alone, MANY))
            .await
            .is_none()
    );
    let late = action("late", &machines[1], vec![put_file("x")]);
    tokio::time::timeout(testing::DEADLINE, other.create_action(&late, MANY))
        .await
        .expect("another process gets the write lock")
        .unwrap();
    // Among others: each given up after 1 to 4 polls, or never.
    let mut tasks = Vec::new();
    for (i, machine) in machines[2..].iter().enumerate() {
        let store = store.clone();
        let new = action(&format!("a{i}"), machine, vec![put_file("x")]);
        let polls = if i % 5 == 4 { usize::MAX } else { 1 + i % 5 };
        tasks.push(tokio::spawn(async move {
            let id = new.id.clone();
            match poll_at_most(polls, store.create_action(&new, MANY)).await {
                Some(Ok(_)) => Some(id),
                Some(Err(err)) => panic!("unexpected {err:?}"),
                None => None,
            }
        }));
    }
    let mut answered = Vec::new();
    for task in tasks {
        answered.extend(task.await.unwrap());
    }
    assert!(answered.len() >= 40, "the writers never dropped finish");
    let again = action("again", &machines[1], vec![put_file("y")]);
    other
        .cancel_action(TENANT, "late", "t", None, Micros::now())
        .await
        .unwrap();
    tokio::time::timeout(testing::DEADLINE, other.create_action(&again, MANY))
        .await
        .expect("another process gets the write lock")
        .unwrap();
    for id in &answered {
        other.get_action(TENANT, id).await.unwrap();
    }
    // And the first store goes on writing.
    store
        .create_action(&action("last", &machines[0], vec![put_file("x")]), MANY)
        .await
        .map(|_| ())
        .or_else(|err| match err {
            // "alone" may have been committed by a later group.
            StoreError::ActiveActionExists => Ok(()),
            other => Err(other),
        })
        .unwrap();
}
