//! Where a request comes from: the TCP peer, or, when the peer is a proxy
//! the operator trusts (`trusted_proxies`), the client address that proxy
//! put in `X-Forwarded-For`. Used for the audit trail's `sourceIp` and a
//! machine's `lastIpAddress`. It never trusts the header from anyone else:
//! a client can write any `X-Forwarded-For` it likes. Likewise the scheme
//! and host a trusted proxy forwards (`X-Forwarded-Proto`,
//! `X-Forwarded-Host`), which the links the API hands out are built from:
//! `forget_untrusted_forwarding` removes them from any other peer's request.
//! And `redact_url`: a URL as messages and logs may show it, without its
//! password.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

/// An address block: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{text}' is not an IP address or block (10.0.0.0/8, fd00::/8)");
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr = IpAddr::from_str(addr).map_err(|_| bad())?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for IpNet {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> Self {
        format!("{}/{}", net.addr, net.prefix)
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy;
/// then the nearest address in `X-Forwarded-For` that is not a trusted
/// proxy itself (proxies append, so the right end is the most trustworthy).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !trusted(peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in forwarded.iter().rev() {
        let Ok(ip) = IpAddr::from_str(hop) else {
            break;
        };
        client = ip.to_canonical();
        if !trusted(client) {
            break;
        }
    }
    client
}

/// Headers through which a proxy tells the origin the client used.
pub const FORWARDED_ORIGIN: [&str; 2] = ["x-forwarded-proto", "x-forwarded-host"];

/// Removes `X-Forwarded-Proto` and `X-Forwarded-Host` unless `peer` is a
/// trusted proxy, so that nothing after this sees a client's own claim of
/// the scheme and host it used (a link built from them could point at the
/// client's choice of host).
pub fn forget_untrusted_forwarding(
    peer: IpAddr,
    headers: &mut HeaderMap,
    trusted_proxies: &[IpNet],
) {
    let peer = peer.to_canonical();
    if trusted_proxies.iter().any(|net| net.contains(peer)) {
        return;
    }
    for name in FORWARDED_ORIGIN {
        headers.remove(name);
    }
}

/// A database URL without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) if url.is_empty() => String::new(),
        Err(_) => "(an invalid URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded.parse().unwrap());
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.9.9.9")), "mapped IPv4");
        let one: IpNet = "192.168.1.5".parse().unwrap();
        assert!(one.contains(ip("192.168.1.5")) && !one.contains(ip("192.168.1.6")));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        assert_eq!(String::from(net), "10.0.0.0/8");
    }

    #[test]
    fn only_a_trusted_proxy_is_believed() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let spoofed = headers("6.6.6.6, 203.0.113.7");
        assert_eq!(
            client_ip(ip("198.51.100.1"), &spoofed, &proxies),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &spoofed, &proxies),
            ip("203.0.113.7")
        );
        let chained = headers("203.0.113.7, 10.0.0.9");
        assert_eq!(
            client_ip(ip("10.0.0.2"), &chained, &proxies),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &proxies),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &headers("garbage"), &proxies),
            ip("10.0.0.2")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &spoofed, &[]), ip("10.0.0.2"));
    }
}
