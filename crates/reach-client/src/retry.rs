//! Calling a read again when the server asks for patience: after its
//! `Retry-After` while it answers 429, and a few times with a growing delay
//! while it answers 500, 502, 503 or 504 (a node restarting, a database
//! pool exhausted for a moment). Only for calls that may be repeated
//! (reads): it never repeats a call that changes something.

use std::time::Duration;

use reqwest::StatusCode;

use crate::ClientError;

/// Tries after a server error, at most, before its error is returned.
pub const SERVER_ERROR_TRIES: u32 = 5;

/// Calls `call` until it answers, waiting as the server asks (429) or
/// growing from 1 s to 8 s after a server error, `SERVER_ERROR_TRIES` at most.
pub async fn patiently<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut failures = 0u32;
    loop {
        let err = match call().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let wait = match &err {
            ClientError::Api {
                retry_after: Some(secs),
                ..
            } => Duration::from_secs(*secs),
            _ if is_transient(err.status()) && failures + 1 < SERVER_ERROR_TRIES => {
                failures += 1;
                Duration::from_secs(1 << (failures - 1).min(3))
            }
            _ => return Err(err),
        };
        tokio::time::sleep(wait).await;
    }
}

fn is_transient(status: Option<StatusCode>) -> bool {
    matches!(
        status,
        Some(
            StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        )
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn answered(status: StatusCode) -> ClientError {
        ClientError::Api {
            status,
            code: "InternalServerError".into(),
            message: "An internal error occurred; retry the request".into(),
            target: String::new(),
            retry_after: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_is_tried_again_after_a_server_error() {
        let calls = AtomicU32::new(0);
        let value = patiently(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(answered(StatusCode::INTERNAL_SERVER_ERROR)),
                1 => Err(answered(StatusCode::SERVICE_UNAVAILABLE)),
                _ => Ok(7),
            }
        })
        .await
        .unwrap();
        assert_eq!((value, calls.load(Ordering::SeqCst)), (7, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_are_tried_a_few_times_and_refusals_never() {
        let calls = AtomicU32::new(0);
        let failed = patiently(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(answered(StatusCode::BAD_GATEWAY))
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), SERVER_ERROR_TRIES);

        let calls = AtomicU32::new(0);
        let refused = patiently(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(answered(StatusCode::NOT_FOUND))
        })
        .await;
        assert_eq!(refused.unwrap_err().status(), Some(StatusCode::NOT_FOUND));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_waits_as_long_as_the_server_asks() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        patiently(|| async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(ClientError::Api {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    code: "TooManyRequests".into(),
                    message: "slow down".into(),
                    target: String::new(),
                    retry_after: Some(42),
                })
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(42));
    }
}
