//! A destination that stays reachable while a device is isolated, as the
//! server's `[isolation] selective_allow` lists it and `Work::Isolate`
//! carries it: `ADDRESS[/PREFIX][:PORT]`. The server checks its
//! configuration with `Destination::parse` and the agent parses the same
//! text again before building rules; this module only parses and prints.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Text that is not `ADDRESS[/PREFIX][:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDestination(pub String);

impl fmt::Display for BadDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an address or network with an optional port (10.0.0.0/8, 192.0.2.1:443, [2001:db8::]/32:443)",
            self.0
        )
    }
}

impl std::error::Error for BadDestination {}

/// A destination that stays reachable: a network, and a port or all.
/// Serialised as the text `parse` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Destination {
    /// The network's address.
    pub address: IpAddr,
    /// Its prefix length (32 or 128: one address).
    pub prefix: u8,
    /// One TCP or UDP port, or every port.
    pub port: Option<u16>,
}

impl Destination {
    /// Parses `10.0.0.0/8`, `192.0.2.1:443`, `192.0.2.0/24:443`,
    /// `2001:db8::1`, `[2001:db8::]/32:443`.
    pub fn parse(text: &str) -> Result<Self, BadDestination> {
        let bad = || BadDestination(text.to_string());
        let text = text.trim();
        let (net, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (address, after) = rest.split_once(']').ok_or_else(bad)?;
                let (prefix, port) = match after.rsplit_once(':') {
                    Some((prefix, port)) => (prefix, Some(port)),
                    None => (after, None),
                };
                (format!("{address}{prefix}"), port)
            }
            None if text.matches(':').count() == 1 => {
                let (net, port) = text.split_once(':').ok_or_else(bad)?;
                (net.to_string(), Some(port))
            }
            None => (text.to_string(), None),
        };
        let port = port
            .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad))
            .transpose()?;
        let (address, prefix) = match net.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (net.as_str(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(bad)?,
            None => most,
        };
        Ok(Self {
            address: network(address, prefix),
            prefix,
            port,
        })
    }
}

impl fmt::Display for Destination {
    /// The form `parse` reads: `10.0.0.0/8`, `192.0.2.1:443`,
    /// `[2001:db8::]/32:443`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let most = if self.address.is_ipv4() { 32 } else { 128 };
        let prefix = if self.prefix == most {
            String::new()
        } else {
            format!("/{}", self.prefix)
        };
        match (self.address, self.port) {
            (IpAddr::V6(address), Some(port)) => write!(f, "[{address}]{prefix}:{port}"),
            (address, Some(port)) => write!(f, "{address}{prefix}:{port}"),
            (address, None) => write!(f, "{address}{prefix}"),
        }
    }
}

impl TryFrom<String> for Destination {
    type Error = BadDestination;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<Destination> for String {
    fn from(destination: Destination) -> Self {
        destination.to_string()
    }
}

/// `address` with the bits past `prefix` cleared: the network it starts.
fn network(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_with_and_without_prefix_and_port() {
        let parsed = |text: &str| Destination::parse(text).unwrap();
        assert_eq!(parsed("10.0.0.0/8").prefix, 8);
        assert_eq!(parsed("10.0.0.0/8").port, None);
        assert_eq!(parsed("192.0.2.1:443").port, Some(443));
        assert_eq!(parsed("192.0.2.1:443").prefix, 32);
        assert_eq!(parsed("192.0.2.0/24:443").prefix, 24);
        assert_eq!(parsed("2001:db8::1").prefix, 128);
        let v6 = parsed("[2001:db8::]/32:443");
        assert_eq!((v6.prefix, v6.port), (32, Some(443)));
        for bad in [
            "",
            "10.0.0.0/33",
            "host.example:443",
            "10.0.0.1:0",
            "[::1",
            "1.2.3.4:x",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_bits_are_cleared_and_the_text_round_trips() {
        let parsed = Destination::parse("10.1.2.3/8").unwrap();
        assert_eq!(parsed.address, "10.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(Destination::parse("0.0.0.0/0").unwrap().prefix, 0);
        for text in [
            "10.0.0.0/8",
            "192.0.2.1:443",
            "[2001:db8::]/32:443",
            "2001:db8::1",
            "0.0.0.0/0",
        ] {
            assert_eq!(Destination::parse(text).unwrap().to_string(), text);
        }
    }
}
