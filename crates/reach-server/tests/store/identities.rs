//! Secrets and rate limits, shared by every node.

use super::*;

#[tokio::test]
async fn secrets_and_rate_limits_are_shared_by_every_node() {
    for backend in backends().await {
        let nodes = [
            Arc::new(backend.open().await),
            Arc::new(backend.open().await),
        ];
        let now = Micros::now();
        let (a, b) = tokio::join!(
            nodes[0].secret("k", "first", now),
            nodes[1].secret("k", "second", now)
        );
        assert_eq!(a.unwrap(), b.unwrap(), "{}: one secret wins", backend.name);
        // Twelve calls at once from two nodes against 5 a minute: 5 pass.
        let windows = [Window::per_minute(5)];
        let mut tasks = Vec::new();
        for i in 0..12 {
            let node = nodes[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                node.rate_limit("app/runliveresponse", &windows, now).await
            }));
        }
        let mut allowed = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Ok(()) => allowed += 1,
                Err(wait) => assert_eq!(wait, 60, "{}", backend.name),
            }
        }
        assert_eq!(allowed, 5, "{}: the budget is the cluster's", backend.name);
        let other = nodes[0]
            .rate_limit("other/runliveresponse", &windows, now)
            .await
            .unwrap();
        assert!(other.is_ok(), "budgets are per caller");
        let later = nodes[1]
            .rate_limit("app/runliveresponse", &windows, now.plus_secs(60))
            .await
            .unwrap();
        assert!(later.is_ok(), "{}: calls age out", backend.name);
    }
}

/// The database's sums decide exactly as the single node's count in
/// memory (the reference arithmetic, `decide`), refusals and waits
/// included, over two windows; pruning forgets only what no window reaches.
#[tokio::test]
async fn the_shared_count_decides_as_the_local_count_and_prunes_old_seconds() {
    use reach_server::ratelimit::Limiter;
    for backend in backends().await {
        let store = backend.open().await;
        let local = Limiter::local();
        let windows = [Window::per_minute(4), Window::per_hour(7)];
        let start = Micros(1_700_000_000_000_000);
        let offsets = [
            0, 0, 1, 2, 3, 5, 30, 59, 60, 61, 62, 90, 120, 121, 200, 3599, 3600, 3601, 3700,
        ];
        let mut refused = 0;
        for (i, offset) in offsets.into_iter().enumerate() {
            let now = start.plus_secs(offset);
            let shared = store.rate_limit("k", &windows, now).await.unwrap();
            let expected = local.check(&store, "k", &windows, now).await.unwrap();
            assert_eq!(
                shared, expected,
                "{}: call {i} at +{offset} s",
                backend.name
            );
            refused += usize::from(shared.is_err());
        }
        assert!(refused >= 5, "{}: both windows refused some", backend.name);
        // Seconds before +3600 go; the ones the hour still reaches stay.
        let pruned = store
            .prune_rate_limits(start.plus_secs(3600))
            .await
            .unwrap();
        assert!(pruned > 0, "{}", backend.name);
        let now = start.plus_secs(3700);
        assert_eq!(
            store.rate_limit("k", &windows, now).await.unwrap(),
            local.check(&store, "k", &windows, now).await.unwrap(),
            "{}: the count after pruning",
            backend.name
        );
    }
}

/// Nodes take a busy caller's calls from the database a few at a time
/// (100 a minute: shares of 5) and spend them without asking again: the
/// cluster still allows exactly the budget, and a share's unspent calls go
/// back with the node's next request.
#[tokio::test]
async fn shares_of_a_budget_add_up_to_it_and_unspent_calls_go_back() {
    use reach_server::ratelimit::Limiter;
    for backend in backends().await {
        let nodes = [
            (Arc::new(backend.open().await), Arc::new(Limiter::shared())),
            (Arc::new(backend.open().await), Arc::new(Limiter::shared())),
        ];
        let windows = [Window::per_minute(100)];
        let now = Micros(1_700_000_000_000_000);
        let mut tasks = Vec::new();
        for i in 0..300 {
            let (store, limiter) = nodes[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                limiter
                    .check(store.as_ref(), "app/machines", &windows, now)
                    .await
            }));
        }
        let mut allowed = 0;
        for task in tasks {
            allowed += usize::from(task.await.unwrap().unwrap().is_ok());
        }
        assert_eq!(
            allowed, 100,
            "{}: the budget is the cluster's",
            backend.name
        );

        // Another caller: node 0 calls once (taking a share of 5), and once
        // a second later (giving back the 4 it did not spend, taking 5).
        let (store0, limiter0) = &nodes[0];
        let (store1, limiter1) = &nodes[1];
        for at in [now, now.plus_secs(1)] {
            let call = limiter0.check(store0.as_ref(), "other/machines", &windows, at);
            assert!(call.await.unwrap().is_ok());
        }
        // Node 1 gets the rest: 100 less node 0's 1 call and its share of 5.
        let mut rest = 0;
        while limiter1
            .check(
                store1.as_ref(),
                "other/machines",
                &windows,
                now.plus_secs(1),
            )
            .await
            .unwrap()
            .is_ok()
        {
            rest += 1;
            assert!(rest <= 100, "{}: never past the budget", backend.name);
        }
        assert_eq!(rest, 94, "{}: the unspent 4 came back", backend.name);
    }
}
