//! The SQL of `RateLimits` (see `store::rate_limits`), for both engines.
//! Counting is per Unix second; nothing here sleeps or blocks a request.

use async_trait::async_trait;
use sqlx::Row;

use super::*;
use crate::store::rate_limits::{Bucket, Window, decide, span};
use crate::store::*;
use crate::time::Micros;

#[async_trait]
impl RateLimits for SqlStore {
    async fn rate_limit(
        &self,
        key: &str,
        windows: &[Window],
        now: Micros,
    ) -> StoreResult<Result<(), u64>> {
        let mut tx = self.write().await?;
        if self.engine == Engine::Postgres {
            // Every node counts calls of this key one at a time.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        let (second, longest) = span(windows, now);
        sqlx::query("DELETE FROM rate_limit_calls WHERE key = $1 AND second <= $2")
            .bind(key)
            .bind(second - longest)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(
            "SELECT second, calls FROM rate_limit_calls WHERE key = $1 ORDER BY second",
        )
        .bind(key)
        .fetch_all(&mut *tx)
        .await?;
        let buckets = rows
            .iter()
            .map(|row| {
                Ok(Bucket {
                    second: row.try_get("second")?,
                    calls: row.try_get::<i64, _>("calls")? as u64,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let decision = decide(&buckets, windows, second);
        if decision.is_ok() {
            sqlx::query(
                "INSERT INTO rate_limit_calls (key, second, calls) VALUES ($1, $2, 1)
                 ON CONFLICT (key, second) DO UPDATE SET calls = rate_limit_calls.calls + 1",
            )
            .bind(key)
            .bind(second)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(decision)
    }
}
