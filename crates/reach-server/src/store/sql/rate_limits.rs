//! The SQL of `RateLimits` (see `store::rate_limits`), for both engines.
//! Counting is per Unix second; nothing here sleeps or blocks a request.
//! A call reads one row of sums (one per window); the seconds themselves
//! are read only to tell a refused caller how long to wait.

use async_trait::async_trait;

use super::*;
use crate::store::rate_limits::{Bucket, PRUNE_AFTER, Window, decide, span};
use crate::store::*;
use crate::time::Micros;

#[async_trait]
impl RateLimits for SqlStore {
    async fn take_rate_limit(
        &self,
        key: &str,
        windows: &[Window],
        now: Micros,
        wanted: u32,
        unused: Option<Bucket>,
    ) -> StoreResult<Result<u32, u64>> {
        let mut tx = self.write().await?;
        if self.engine == Engine::Postgres {
            // Every node counts calls of this key one at a time.
            exec::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(key)
                .execute(&mut tx)
                .await?;
        }
        if let Some(unused) = unused.filter(|u| u.calls > 0) {
            // Never below zero, whatever a node says it did not use.
            exec::query(
                "UPDATE rate_limit_calls SET calls = CASE WHEN calls > $3 THEN calls - $3 ELSE 0 END
                 WHERE key = $1 AND second = $2",
            )
            .bind(key)
            .bind(unused.second)
            .bind(unused.calls as i64)
            .execute(&mut tx)
            .await?;
        }
        let (second, longest) = span(windows, now);
        debug_assert!(
            longest <= PRUNE_AFTER.as_secs() as i64,
            "a window longer than the pruning horizon"
        );
        // The calls in each window, summed by the database: one row however
        // many seconds the longest window holds. Old seconds are pruned by
        // the sweeper (`prune_rate_limits`), not on every call.
        let sums = windows
            .iter()
            .enumerate()
            .map(|(i, _)| {
                format!(
                    "CAST(COALESCE(SUM(calls) FILTER (WHERE second > ${}), 0) AS BIGINT) AS w{i}",
                    i + 3
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {sums} FROM rate_limit_calls WHERE key = $1 AND second > $2");
        let mut query = exec::query(sql).bind(key).bind(second - longest);
        for window in windows {
            query = query.bind(second - window.window.as_secs() as i64);
        }
        let row = query.fetch_one(&mut tx).await?;
        // What every window still allows, and at most what was asked for.
        let mut room = i64::from(wanted.max(1));
        for (i, window) in windows.iter().enumerate() {
            let calls: i64 = row.try_get(format!("w{i}").as_str())?;
            room = room.min(i64::from(window.calls) - calls);
        }
        let decision = if room > 0 {
            Ok(room as u32)
        } else {
            // Refused: the seconds to wait need the calls second by second.
            decide(
                &buckets(&mut tx, key, second - longest).await?,
                windows,
                second,
            )
            .map(|()| 1)
        };
        if let Ok(taken) = decision {
            exec::query(
                "INSERT INTO rate_limit_calls (key, second, calls) VALUES ($1, $2, $3)
                 ON CONFLICT (key, second) DO UPDATE SET calls = rate_limit_calls.calls + $3",
            )
            .bind(key)
            .bind(second)
            .bind(i64::from(taken))
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }

    async fn prune_rate_limits(&self, before: Micros) -> StoreResult<u64> {
        let done = self
            .write_one(
                exec::query("DELETE FROM rate_limit_calls WHERE second < $1")
                    .bind(before.0.div_euclid(1_000_000)),
            )
            .await?;
        Ok(done.rows_affected())
    }
}

/// The calls of `key` per second after `since`, oldest first.
async fn buckets(tx: &mut WriteTx, key: &str, since: i64) -> StoreResult<Vec<Bucket>> {
    let rows = exec::query(
        "SELECT second, calls FROM rate_limit_calls WHERE key = $1 AND second > $2 ORDER BY second",
    )
    .bind(key)
    .bind(since)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Bucket {
                second: row.try_get("second")?,
                calls: row.try_get::<i64>("calls")? as u64,
            })
        })
        .collect()
}
