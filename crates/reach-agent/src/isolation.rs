//! Network isolation of the device (Linux: an nftables table of Reach's
//! own, `inet reach_isolation`, through the `nft` command). While it is in
//! place, the device drops every packet in, out and forwarded, except
//! loopback, the agent's own connection to each of its servers (that
//! address and port, not the whole host), DNS to the configured resolvers,
//! DHCP, IPv6 neighbour discovery, and the destinations the server's
//! `Selective` isolation allows. The table is replaced whole in one `nft`
//! transaction, so there is never a moment with half a ruleset, and it is
//! removed by deleting the table, which nothing else of the system owns.
//!
//! This module only builds, applies and removes the rules. Deciding when
//! (and proving the server is still reachable afterwards, else rolling
//! back) belongs to the command that isolates. macOS (pf) and Windows (WFP)
//! are not built yet: they refuse with `IsolationError::Unsupported`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

pub use reach_proto::destination::{BadDestination, Destination};

/// The table's name; nothing but this module touches it.
pub const TABLE: &str = "reach_isolation";

/// Why isolation could not be applied or removed.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// This platform has no isolation yet.
    #[error("isolation is not supported on this platform yet")]
    Unsupported,
    /// `nft` could not be run (not installed, not permitted).
    #[error("running {program} failed: {error}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        error: std::io::Error,
    },
    /// `nft` refused the rules or the removal.
    #[error("nft failed: {0}")]
    Nft(String),
    /// An allowed destination is not `ADDRESS[/PREFIX][:PORT]`.
    #[error(transparent)]
    Destination(#[from] BadDestination),
}

/// What stays reachable while the device is isolated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// The agent's servers: each address and port (TCP).
    pub servers: Vec<SocketAddr>,
    /// DNS resolvers (UDP and TCP port 53).
    pub resolvers: Vec<IpAddr>,
    /// More destinations (`Selective` isolation).
    pub destinations: Vec<Destination>,
}

fn family(address: &IpAddr) -> &'static str {
    if address.is_ipv4() { "ip" } else { "ip6" }
}

/// One rule's match of a remote `side` (`saddr`/`daddr`, with the port
/// field `sport`/`dport`) against `destination`.
fn matches(destination: &Destination, inbound: bool) -> String {
    let (addr, port) = if inbound {
        ("saddr", "sport")
    } else {
        ("daddr", "dport")
    };
    let mut rule = format!(
        "{} {addr} {}/{}",
        family(&destination.address),
        destination.address,
        destination.prefix
    );
    if let Some(number) = destination.port {
        let _ = write!(rule, " meta l4proto {{ tcp, udp }} th {port} {number}");
    }
    rule
}

/// The nftables script that puts the table in place, replacing any
/// earlier version of it in the same transaction.
pub fn ruleset(allowed: &Allowed) -> String {
    let mut remote: Vec<Destination> = Vec::new();
    for server in &allowed.servers {
        remote.push(Destination {
            address: server.ip(),
            prefix: if server.is_ipv4() { 32 } else { 128 },
            port: Some(server.port()),
        });
    }
    for resolver in &allowed.resolvers {
        remote.push(Destination {
            address: *resolver,
            prefix: if resolver.is_ipv4() { 32 } else { 128 },
            port: Some(53),
        });
    }
    remote.extend(allowed.destinations.iter().copied());
    let mut chains = String::new();
    for (chain, hook, inbound) in [("input", "input", true), ("output", "output", false)] {
        let interface = if inbound { "iif" } else { "oif" };
        let _ = writeln!(chains, "  chain {chain} {{");
        let _ = writeln!(
            chains,
            "    type filter hook {hook} priority -200; policy drop;"
        );
        let _ = writeln!(chains, "    {interface} \"lo\" accept");
        // DHCP (v4 and v6) and IPv6 neighbour discovery keep the address
        // and the way to the server.
        let _ = writeln!(
            chains,
            "    udp sport {{ 67, 68 }} udp dport {{ 67, 68 }} accept"
        );
        let _ = writeln!(
            chains,
            "    udp sport {{ 546, 547 }} udp dport {{ 546, 547 }} accept"
        );
        let _ = writeln!(
            chains,
            "    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert }} accept"
        );
        for destination in &remote {
            let _ = writeln!(chains, "    {} accept", matches(destination, inbound));
        }
        let _ = writeln!(chains, "  }}");
    }
    format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n{chains}  chain forward {{\n    type filter hook forward priority -200; policy drop;\n  }}\n}}\n"
    )
}

/// Runs `nft`: the program and the arguments before nft's own (a test
/// runs it inside a network namespace: `ip netns exec NAME nft`).
#[derive(Debug, Clone)]
pub struct Nft {
    command: Vec<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Self {
            command: vec!["nft".into()],
        }
    }
}

impl Nft {
    /// `nft` run as `command` (its program first).
    pub fn with_command(command: Vec<String>) -> Self {
        Self { command }
    }

    async fn run(&self, args: &[&str], input: Option<&str>) -> Result<String, IsolationError> {
        if !cfg!(target_os = "linux") {
            return Err(IsolationError::Unsupported);
        }
        let program = self
            .command
            .first()
            .cloned()
            .unwrap_or_else(|| "nft".into());
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&self.command[1.min(self.command.len())..])
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawn = |error| IsolationError::Spawn {
            program: program.clone(),
            error,
        };
        let mut child = command.spawn().map_err(spawn)?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).await.map_err(spawn)?;
        }
        let output = child.wait_with_output().await.map_err(spawn)?;
        if !output.status.success() {
            let why = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(IsolationError::Nft(if why.is_empty() {
                format!("exited with {}", output.status)
            } else {
                why
            }));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Puts isolation in place (or replaces it), in one transaction.
    pub async fn apply(&self, allowed: &Allowed) -> Result<(), IsolationError> {
        self.run(&["-f", "-"], Some(&ruleset(allowed)))
            .await
            .map(|_| ())
    }

    /// Removes isolation; false when there was none.
    pub async fn release(&self) -> Result<bool, IsolationError> {
        if !self.is_applied().await? {
            return Ok(false);
        }
        self.run(&["delete", "table", "inet", TABLE], None).await?;
        Ok(true)
    }

    /// Whether the table is in place.
    pub async fn is_applied(&self) -> Result<bool, IsolationError> {
        let tables = self.run(&["list", "tables"], None).await?;
        Ok(tables
            .lines()
            .any(|line| line.trim() == format!("table inet {TABLE}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_replaces_the_table_and_allows_only_what_is_named() {
        let allowed = Allowed {
            servers: vec![
                "192.0.2.10:8443".parse().unwrap(),
                "[2001:db8::5]:443".parse().unwrap(),
            ],
            resolvers: vec!["192.0.2.53".parse().unwrap()],
            destinations: vec![Destination::parse("198.51.100.0/24:22").unwrap()],
        };
        let rules = ruleset(&allowed);
        assert!(rules.starts_with(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n")));
        assert!(rules.contains("policy drop;"));
        assert!(
            rules.contains("ip daddr 192.0.2.10/32 meta l4proto { tcp, udp } th dport 8443 accept")
        );
        assert!(
            rules.contains("ip saddr 192.0.2.10/32 meta l4proto { tcp, udp } th sport 8443 accept")
        );
        assert!(
            rules.contains(
                "ip6 daddr 2001:db8::5/128 meta l4proto { tcp, udp } th dport 443 accept"
            )
        );
        assert!(
            rules.contains("ip daddr 192.0.2.53/32 meta l4proto { tcp, udp } th dport 53 accept")
        );
        assert!(
            rules.contains("ip daddr 198.51.100.0/24 meta l4proto { tcp, udp } th dport 22 accept")
        );
        assert!(rules.contains("chain forward"));
        assert!(
            !rules.contains("ct state"),
            "no connection made before isolation survives it"
        );
    }
}
