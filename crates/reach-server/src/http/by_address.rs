//! Limits per client address on the endpoints that take no token (token
//! requests, console sign-in, agent enrollment, result downloads), before
//! their handlers do any work: one address cannot spend the server's CPU on
//! guesses, and others' calls still fit.
//!
//! Counts live in this node's memory (`AppState::address_limiter`): they
//! protect this node's CPU, and cost no database write per refused request.
//! An IPv6 client counts by its /64, the block one host usually holds. This
//! module never reads a request's body or credentials.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reach_proto::agent::paths as agent_paths;

use crate::SharedState;
use crate::config::Limits;
use crate::error::ApiError;
use crate::ratelimit::Window;
use crate::time::Micros;

/// The budget an unauthenticated route draws on: its name and calls a minute.
fn budget(limits: &Limits, method: &Method, route: &str) -> Option<(&'static str, u32)> {
    match route {
        "/{tenant}/oauth2/token" | "/{tenant}/oauth2/v2.0/token" => {
            Some(("token", limits.token_per_minute_per_address))
        }
        "/console/session" if method == Method::POST => {
            Some(("sign-in", limits.sign_in_per_minute_per_address))
        }
        agent_paths::ENROLL => Some(("enrollment", limits.enroll_per_minute_per_address)),
        "/download/{*path}" => Some(("download", limits.download_per_minute_per_address)),
        _ => None,
    }
}

/// The part of an address that names one client: all of IPv4, an IPv6 /64.
pub fn client_block(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Middleware: refuses a call past its address's budget with 429 and
/// Retry-After, in the error envelope.
pub async fn limit(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let Some(route) = request.extensions().get::<MatchedPath>() else {
        return next.run(request).await;
    };
    let Some((name, per_minute)) = budget(&state.config.limits, request.method(), route.as_str())
    else {
        return next.run(request).await;
    };
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return next.run(request).await;
    };
    let ip = crate::net::client_ip(peer.ip(), request.headers(), &state.config.trusted_proxies);
    let key = format!("address:{}/{name}", client_block(ip));
    let decision = state
        .address_limiter
        .check(
            state.store.as_ref(),
            &key,
            &[Window::per_minute(per_minute)],
            Micros::now(),
        )
        .await;
    match decision {
        Ok(Ok(())) => next.run(request).await,
        Ok(Err(retry_after_secs)) => {
            crate::metrics::Metrics::add(&state.metrics.rate_limited, 1);
            tracing::debug!(client.ip = %ip, endpoint = name, "per-address limit reached");
            ApiError::TooManyRequests {
                message: format!(
                    "Too many {name} requests from this address; retry in {retry_after_secs} s"
                ),
                retry_after_secs,
            }
            .into_response()
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routes_without_a_token_are_limited() {
        let limits = Limits::default();
        let named = |method: Method, route: &str| budget(&limits, &method, route).map(|b| b.0);
        assert_eq!(named(Method::POST, "/{tenant}/oauth2/token"), Some("token"));
        assert_eq!(
            named(Method::POST, "/{tenant}/oauth2/v2.0/token"),
            Some("token")
        );
        assert_eq!(named(Method::POST, "/console/session"), Some("sign-in"));
        assert_eq!(named(Method::GET, "/console/session"), None);
        assert_eq!(named(Method::POST, agent_paths::ENROLL), Some("enrollment"));
        assert_eq!(named(Method::GET, "/download/{*path}"), Some("download"));
        assert_eq!(named(Method::GET, "/api/machines"), None);
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_block(ip("2001:db8:1:2:aaaa::1")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_block(ip("2001:db8:1:2:ffff::9")),
            client_block(ip("2001:db8:1:2::7"))
        );
        assert_eq!(client_block(ip("::ffff:10.1.2.3")), "10.1.2.3");
    }
}
