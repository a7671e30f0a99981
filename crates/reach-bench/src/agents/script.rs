//! A simulated script that writes its output over time, for the `output`
//! scenario: a RunScript whose Args are `stream LINES INTERVAL_MS
//! START_MS BYTES` writes LINES lines of about BYTES bytes, one every
//! INTERVAL_MS after waiting START_MS, each carrying the wall-clock time it
//! was written (`t=<µs since the epoch>`), so that a follower measures the
//! time from the write to its screen. The lines go through the real
//! agent's `LiveOutput` (the same coalescing, bounds and messages); the
//! transcript holds them all.

use std::sync::Arc;
use std::time::Duration;

use reach_agent::live_output::LiveOutput;
use reach_proto::agent::{CommandRef, Stream};

/// What a streaming script writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streaming {
    /// Lines written.
    pub lines: u32,
    /// Between two lines.
    pub interval: Duration,
    /// Before the first line (followers connect meanwhile).
    pub start_after: Duration,
    /// Bytes of a line, at least what its time and number take.
    pub bytes: usize,
}

impl Streaming {
    /// The plan in a RunScript's Args, if they ask for one.
    pub fn parse(args: Option<&str>) -> Option<Self> {
        let mut words = args?.split_whitespace();
        if words.next()? != "stream" {
            return None;
        }
        let mut number = || words.next()?.parse::<u64>().ok();
        let plan = Streaming {
            lines: u32::try_from(number()?).ok()?,
            interval: Duration::from_millis(number()?),
            start_after: Duration::from_millis(number()?),
            bytes: usize::try_from(number()?).ok()?,
        };
        Some(plan)
    }

    /// The Args that ask for this plan.
    pub fn args(&self) -> String {
        format!(
            "stream {} {} {} {}",
            self.lines,
            self.interval.as_millis(),
            self.start_after.as_millis(),
            self.bytes
        )
    }
}

/// One line: its time, its number, padding to `bytes`, a newline.
fn line(number: u32, bytes: usize) -> String {
    let mut text = format!("t={} i={number} ", super::now_us());
    while text.len() + 1 < bytes {
        text.push('.');
    }
    text.push('\n');
    text
}

/// The times (µs since the epoch) written in `text`'s lines.
pub fn times(text: &str) -> impl Iterator<Item = i64> + '_ {
    text.lines()
        .filter_map(|l| l.strip_prefix("t=")?.split(' ').next()?.parse().ok())
}

/// Writes the plan's lines into `live` as the script's stdout; returns the
/// whole stdout, for the transcript.
pub async fn run(plan: Streaming, live: Arc<LiveOutput>, command: CommandRef) -> String {
    tokio::time::sleep(plan.start_after).await;
    let mut stdout = String::new();
    let mut next = tokio::time::Instant::now();
    for number in 0..plan.lines {
        let text = line(number, plan.bytes);
        live.push(&command, Stream::Stdout, stdout.len() as u64, text.clone());
        stdout.push_str(&text);
        next += plan.interval;
        tokio::time::sleep_until(next).await;
    }
    stdout
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip_and_lines_carry_their_time() {
        let plan = Streaming {
            lines: 20,
            interval: Duration::from_millis(500),
            start_after: Duration::from_millis(3000),
            bytes: 80,
        };
        assert_eq!(Streaming::parse(Some(&plan.args())), Some(plan));
        assert_eq!(Streaming::parse(Some("other 1 2 3 4")), None);
        assert_eq!(Streaming::parse(None), None);
        let text = format!("{}{}", line(0, 80), line(1, 10));
        assert_eq!(text.lines().next().unwrap().len(), 79);
        assert_eq!(times(&text).count(), 2);
    }
}
