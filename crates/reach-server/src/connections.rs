//! Accepting and serving HTTP connections, with the bounds a server facing
//! the open network needs: at most `http.max_connections_per_address` open
//! API connections from one client address and `http.max_api_connections`
//! in all (an agent's WebSocket stops counting once it is established:
//! agents have their own cap, `agents.max_connections`), so that one client
//! cannot take every file descriptor the agents and the database need; a
//! request's headers must arrive within `http.header_timeout_secs`, which
//! also closes a keep-alive connection left idle that long; a TLS handshake
//! within 10 s. Refused connections are closed at once, before a byte is
//! read. Bodies have their own rules (`api::read_body`, `slow_body`).
//!
//! This module knows nothing of routes: it serves whatever router it is
//! given, HTTP/1.1 only (with upgrades, for agents' WebSockets).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Http;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open API connections, per client address and in all.
#[derive(Default)]
pub struct Counts {
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One accepted connection's place in the counts; given back when the
/// connection closes, or earlier when it becomes an agent's WebSocket.
pub struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
    held: Mutex<bool>,
}

impl Slot {
    /// The connection is an agent's WebSocket from now on: it no longer
    /// counts against the API connection caps.
    pub fn become_agent(&self) {
        self.release();
    }

    fn release(&self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if !std::mem::take(&mut *held) {
            return;
        }
        let mut map = self
            .counts
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

impl Counts {
    /// A slot for a connection from `ip`, or None when it would pass a cap.
    fn admit(self: &Arc<Self>, ip: IpAddr, per_address: usize, total: usize) -> Option<Slot> {
        let mut map = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let all: usize = map.values().sum();
        let here = map.get(&ip).copied().unwrap_or(0);
        if here >= per_address || all >= total {
            return None;
        }
        map.insert(ip, here + 1);
        Some(Slot {
            counts: self.clone(),
            ip,
            held: Mutex::new(true),
        })
    }

    /// Open API connections in all (for metrics and tests).
    pub fn open(&self) -> usize {
        self.per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

/// The cap on API connections in all: the configured one, or half of the
/// file descriptors that agents' default cap leaves free (a quarter of the
/// open-file limit, at most 1,000: see `agents::gateway`), so that agents,
/// API clients, the database and stored files never want more descriptors
/// than the process has. At least 64.
pub fn total_cap(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let soft = rlimit::Resource::NOFILE
        .get()
        .map(|(soft, _)| usize::try_from(soft).unwrap_or(usize::MAX))
        .unwrap_or(4096);
    ((soft / 4).min(1000) / 2).max(64)
}

/// Serves `router` on `listener` (TLS when `tls` is set) until `stop` is
/// cancelled, then lets open requests finish and waits for every connection
/// to close.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    http: Http,
    counts: Arc<Counts>,
    stop: CancellationToken,
) {
    let per_address = http.max_connections_per_address.max(1);
    let total = total_cap(http.max_api_connections);
    let header_timeout = Duration::from_secs(http.header_timeout_secs.max(1));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let tracker = TaskTracker::new();
    let mut refused_logged = tokio::time::Instant::now() - Duration::from_secs(60);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and the like: wait a moment rather than spin.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Some(slot) = counts.admit(peer.ip().to_canonical(), per_address, total) else {
            drop(tcp);
            if refused_logged.elapsed() >= Duration::from_secs(10) {
                refused_logged = tokio::time::Instant::now();
                tracing::warn!(client.ip = %peer.ip(), per_address, total, "connection refused: too many open API connections");
            }
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (router, acceptor, stop) = (router.clone(), acceptor.clone(), stop.clone());
        tracker.spawn(async move {
            let slot = Arc::new(slot);
            match acceptor {
                None => serve_connection(tcp, peer, slot, router, header_timeout, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, slot, router, header_timeout, stop).await
                        }
                        Ok(Err(err)) => {
                            tracing::info!(peer = %peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::info!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Serves one connection: HTTP/1.1 with upgrades, each request carrying
/// the peer's address (`ConnectInfo`) and the connection's `Slot`.
async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    slot: Arc<Slot>,
    router: axum::Router,
    header_timeout: Duration,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let mut request: Request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            router.clone().oneshot(request)
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_all_and_agents_leave_them() {
        let counts = Arc::new(Counts::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = counts.admit(a, 2, 3).unwrap();
        let second = counts.admit(a, 2, 3).unwrap();
        assert!(counts.admit(a, 2, 3).is_none(), "per address");
        let third = counts.admit(b, 2, 3).unwrap();
        assert!(counts.admit(b, 2, 3).is_none(), "in all");
        first.become_agent();
        assert_eq!(counts.open(), 2);
        let fourth = counts.admit(a, 2, 3).unwrap();
        drop(first);
        assert_eq!(counts.open(), 3, "an agent's slot is given back once");
        drop((second, third, fourth));
        assert_eq!(counts.open(), 0);
    }
}
