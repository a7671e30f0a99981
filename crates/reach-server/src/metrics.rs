//! Prometheus metrics at `GET /metrics`: connected agents, live response
//! actions by status, dispatch latency and command duration histograms,
//! bytes transferred, and rate-limit rejections. Counters live in this
//! process; action counts come from the database, so every node reports
//! the same totals for them. Written in the text exposition format by hand:
//! no client library is needed for a handful of series.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::SharedState;
use crate::error::{ApiError, ApiResult};

/// Bucket bounds, in seconds.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0,
];

/// A histogram of durations.
pub struct Histogram {
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Counts one observation of `micros` microseconds.
    pub fn observe_micros(&self, micros: i64) {
        let micros = micros.max(0) as u64;
        let seconds = micros as f64 / 1e6;
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

/// What `/metrics` shows: counters and histograms of this process.
#[derive(Default)]
pub struct Metrics {
    /// Submit → first command handed to the agent.
    pub dispatch_latency: Histogram,
    /// Command start → end, as the server saw them.
    pub command_duration: Histogram,
    /// File bytes received from agents (results, chunks).
    pub bytes_received: AtomicU64,
    /// File bytes sent to agents (payloads).
    pub bytes_sent: AtomicU64,
    /// Requests answered 429 by a per-caller rate limit.
    pub rate_limited: AtomicU64,
    /// RunScript transcripts that came inside the agent's `Finished`.
    pub transcripts_inline: AtomicU64,
    /// RunScript transcripts uploaded in a request of their own.
    pub transcripts_uploaded: AtomicU64,
    /// Claims the database failed, tried again on the same connection.
    pub claims_deferred: AtomicU64,
    /// Bytes of live output stored.
    pub output_bytes: AtomicU64,
    /// Pieces of live output dropped (not the running command, out of
    /// order, past the limits, or the database failed).
    pub output_refused: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

/// `GET /metrics`.
pub async fn render(State(state): State<SharedState>) -> ApiResult<Response> {
    let m = &state.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP reach_connected_agents Agents connected to this node.\n# TYPE reach_connected_agents gauge\nreach_connected_agents {}",
        state.hub.connected_count()
    );
    let _ = writeln!(
        out,
        "# HELP reach_actions Live response actions by status (all tenants).\n# TYPE reach_actions gauge"
    );
    for (status, count) in state.store.count_actions_by_status().await? {
        let _ = writeln!(out, "reach_actions{{status=\"{status}\"}} {count}");
    }
    m.dispatch_latency.write(
        &mut out,
        "reach_dispatch_latency_seconds",
        "Time from submitting an action to handing its first command to the agent.",
    );
    m.command_duration.write(
        &mut out,
        "reach_command_duration_seconds",
        "Time from a command's start to its end.",
    );
    counter(
        &mut out,
        "reach_bytes_received_total",
        "File bytes received from agents.",
        m.bytes_received.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "reach_bytes_sent_total",
        "File bytes sent to agents.",
        m.bytes_sent.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "reach_rate_limited_total",
        "Requests refused by a per-caller rate limit.",
        m.rate_limited.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "reach_claims_deferred_total",
        "Claims of an agent's next command that the database failed (a pool timeout, a failover), tried again on the same connection.",
        m.claims_deferred.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "reach_live_output_bytes_total",
        "Bytes of running scripts' output stored as agents sent it (live output).",
        m.output_bytes.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "reach_live_output_dropped_total",
        "Pieces of live output not stored: not the command the connection runs, not where its stream ends, past the limits, or the database failed. Their text comes with the transcript.",
        m.output_refused.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP reach_live_output_followers Clients following live output on this node.\n# TYPE reach_live_output_followers gauge\nreach_live_output_followers {}",
        state.followers.count()
    );
    let _ = writeln!(
        out,
        "# HELP reach_transcripts_received_total RunScript transcripts received, inside the agent's message or uploaded.\n# TYPE reach_transcripts_received_total counter\nreach_transcripts_received_total{{via=\"message\"}} {}\nreach_transcripts_received_total{{via=\"upload\"}} {}",
        m.transcripts_inline.load(Ordering::Relaxed),
        m.transcripts_uploaded.load(Ordering::Relaxed),
    );
    if let Some(group) = state.store.group_commits() {
        counter(
            &mut out,
            "reach_sqlite_commits_total",
            "SQLite COMMITs that made write transactions durable (group commit: one COMMIT holds the transactions of every caller queued for the writer).",
            group.commits,
        );
        counter(
            &mut out,
            "reach_sqlite_writes_committed_total",
            "Write transactions those COMMITs held; divided by reach_sqlite_commits_total, the mean group.",
            group.writes,
        );
    }
    let mut response = out.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

/// `GET /readyz`: 200 when the database and the object store answer, else 503.
pub async fn readyz(
    axum::extract::State(state): axum::extract::State<SharedState>,
) -> ApiResult<&'static str> {
    state
        .store
        .ping()
        .await
        .map_err(|err| ApiError::Unavailable(format!("The database does not answer: {err}")))?;
    state
        .files
        .probe()
        .await
        .map_err(|err| ApiError::Unavailable(format!("The object store does not answer: {err}")))?;
    Ok("ready")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::default();
        h.observe_micros(3_000);
        h.observe_micros(2_000_000);
        let mut out = String::new();
        h.write(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2.5\"} 2\n"), "{out}");
        assert!(
            out.contains("x_bucket{le=\"+Inf\"} 2\nx_sum 2.003\nx_count 2\n"),
            "{out}"
        );
    }
}
