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
