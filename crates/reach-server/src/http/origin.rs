//! Where clients reach this server: the base URL that links and OData
//! contexts are built from (the configured `public_url`, or what a trusted
//! proxy forwarded, or the request's own scheme and Host), and the
//! middleware that removes forwarded scheme and host from anyone who is not
//! a trusted proxy. It never trusts a forwarded header from anyone else.

use axum::extract::Request;
use axum::http::{HeaderMap, header};

use crate::SharedState;

/// The first value of header `name` (a proxy chain lists several).
fn first_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
}

/// The first value of header `name`, when it is a plausible host name
/// (letters, digits, `-.:[]`).
fn host_header(headers: &HeaderMap, name: &str) -> Option<String> {
    first_value(headers, name)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        })
        .map(str::to_string)
}

/// The base URL clients reach this server at: the configured `public_url`;
/// or the scheme and host a trusted proxy forwarded (`X-Forwarded-Proto`,
/// `X-Forwarded-Host`; `forwarding` removed them from anyone else's
/// request); or the request's own scheme and Host.
pub fn base_url(state: &SharedState, headers: &HeaderMap) -> String {
    if !state.config.public_url.is_empty() {
        return state.config.public_url.trim_end_matches('/').to_string();
    }
    let host = host_header(headers, "x-forwarded-host")
        .or_else(|| host_header(headers, header::HOST.as_str()))
        .unwrap_or_else(|| state.config.listen.to_string());
    let forwarded = first_value(headers, "x-forwarded-proto").map(str::to_ascii_lowercase);
    let scheme = match forwarded.as_deref() {
        Some("https") => "https",
        Some("http") => "http",
        _ if state.config.tls.enabled() => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// Middleware: drops the forwarded scheme and host of any request that did
/// not come from one of `trusted_proxies`.
pub async fn forwarding(
    axum::extract::State(state): axum::extract::State<SharedState>,
    mut request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        Some(axum::extract::ConnectInfo(peer)) => {
            let peer = peer.ip();
            crate::net::forget_untrusted_forwarding(
                peer,
                request.headers_mut(),
                &state.config.trusted_proxies,
            );
        }
        // No peer known (not served by the accept loop): trust nobody.
        None => {
            for name in crate::net::FORWARDED_ORIGIN {
                request.headers_mut().remove(name);
            }
        }
    }
    next.run(request).await
}

/// `https://host/api/$metadata#<entity>`.
pub fn odata_context(state: &SharedState, headers: &HeaderMap, entity: &str) -> String {
    format!("{}/api/$metadata#{entity}", base_url(state, headers))
}
