//! A bound on how slowly a streamed upload (a library file, an agent's
//! collected file or transcript) may arrive: the client may keep the server
//! waiting at most `http.stall_secs` for each `http.min_body_bytes`. Only
//! time spent waiting on the client counts, not time the server itself took
//! between reads (its bandwidth caps, its storage), so a throttled transfer
//! is never cut, while a trickle of a byte every few seconds is. This
//! module only measures; it never changes the bytes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::config::Http;

/// The words every `Stalled` message holds (for callers that only see text).
pub const STALLED: &str = "arrived too slowly";

/// Why the stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum SlowBodyError {
    /// Fewer than the first number of bytes in the second number of seconds.
    #[error("the request body arrived too slowly: less than {0} bytes in {1} s")]
    Stalled(u64, u64),
    /// The body itself failed.
    #[error("{0}")]
    Body(String),
}

/// `stream`, failing with `Stalled` once the client kept it waiting
/// `stall_secs` (in all, across pauses) without `min_body_bytes` arriving.
pub fn guard<S, E>(stream: S, http: &Http) -> SlowBody<S>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    SlowBody {
        inner: stream,
        window: Duration::from_secs(http.stall_secs.max(1)),
        min_bytes: http.min_body_bytes,
        waited: Duration::ZERO,
        bytes: 0,
        waiting_since: None,
        alarm: Box::pin(tokio::time::sleep(Duration::ZERO)),
        failed: false,
    }
}

/// A body stream cut off when the client stalls.
pub struct SlowBody<S> {
    inner: S,
    window: Duration,
    min_bytes: u64,
    /// Time spent waiting on the client since `min_bytes` last arrived.
    waited: Duration,
    /// Bytes since then.
    bytes: u64,
    /// When the current wait began (the inner stream said Pending).
    waiting_since: Option<Instant>,
    alarm: Pin<Box<Sleep>>,
    failed: bool,
}

impl<S, E> Stream for SlowBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, SlowBodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                this.bytes += chunk.len() as u64;
                if this.bytes >= this.min_bytes {
                    this.bytes = 0;
                    this.waited = Duration::ZERO;
                }
                if this.waited >= this.window {
                    return Poll::Ready(Some(Err(this.stalled())));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(err))) => {
                Poll::Ready(Some(Err(SlowBodyError::Body(err.to_string()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let deadline = since + this.window.saturating_sub(this.waited);
                if now >= deadline {
                    return Poll::Ready(Some(Err(this.stalled())));
                }
                this.alarm.as_mut().reset(deadline);
                if this.alarm.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(this.stalled())));
                }
                Poll::Pending
            }
        }
    }
}

impl<S> SlowBody<S> {
    fn stalled(&mut self) -> SlowBodyError {
        self.failed = true;
        SlowBodyError::Stalled(self.min_bytes, self.window.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn http(stall_secs: u64, min_body_bytes: u64) -> Http {
        Http {
            stall_secs,
            min_body_bytes,
            ..Http::default()
        }
    }

    /// A stream sending `chunk` bytes after each `pause`, `count` times.
    fn trickle(
        pause: Duration,
        chunk: usize,
        count: usize,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
        Box::pin(futures::stream::iter(0..count).then(move |_| async move {
            tokio::time::sleep(pause).await;
            Ok(Bytes::from(vec![b'x'; chunk]))
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_off_once_it_has_waited_the_window() {
        let mut body = guard(trickle(Duration::from_secs(3), 1, 100), &http(10, 1024));
        let mut received = 0;
        let err = loop {
            match body.next().await {
                Some(Ok(chunk)) => received += chunk.len(),
                Some(Err(err)) => break err,
                None => panic!("the trickle was never cut off"),
            }
        };
        assert!(matches!(err, SlowBodyError::Stalled(1024, 10)), "{err}");
        assert!(received <= 4, "cut off after about 10 s: {received} bytes");
        assert!(body.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_off_without_sending_anything() {
        let silent = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let started = Instant::now();
        let mut body = guard(silent, &http(5, 1));
        assert!(matches!(
            body.next().await,
            Some(Err(SlowBodyError::Stalled(1, 5)))
        ));
        assert!(started.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_and_the_servers_own_pauses_pass() {
        // 2 KiB a second from the client: well above 1 KiB per 10 s.
        let body = guard(trickle(Duration::from_secs(1), 2048, 30), &http(10, 1024));
        let mut body = std::pin::pin!(body);
        let mut received = 0;
        while let Some(chunk) = body.next().await {
            received += chunk.unwrap().len();
            // The server pausing between reads (a bandwidth cap) is not the
            // client's fault.
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        assert_eq!(received, 30 * 2048);
    }
}
