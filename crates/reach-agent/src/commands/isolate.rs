//! The Isolate and Unisolate commands, and isolation across restarts.
//!
//! Isolating resolves the agent's servers to addresses first (a name
//! cannot be resolved once DNS is the only way out), applies the rules
//! (`isolation::Nft`), then proves that a server still answers over a new
//! connection within `PROOF`; if none does, the rules are removed and the
//! command fails saying so: losing the management channel is the one
//! failure isolation must never cause. Only then is the record written
//! (`isolation.json` beside the state file, 0600), which the agent reads at
//! every start to put isolation back (`Isolation::restore`), so it survives
//! restarts and reboots until released. Releasing removes the rules and the
//! record; so does `reach-agent release-isolation`, the break-glass.
//!
//! This module never isolates without a record to undo it by, and never
//! keeps a record of isolation that is not in place.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Failure, Success};
use crate::isolation::{Allowed, Destination, Nft};

/// How long a server has to answer once the rules are in place.
pub const PROOF: Duration = Duration::from_secs(10);

/// Where the agent keeps what it isolated with: beside its state file.
pub fn record_path(state_path: &Path) -> PathBuf {
    state_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("isolation.json")
}

/// What isolation was applied with, kept until released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `Selective` isolation.
    pub selective: bool,
    /// The destinations it also allowed.
    pub allow: Vec<String>,
    /// The server addresses it allowed: allowed again at the next start
    /// beside what the servers' names resolve to then, so a device whose
    /// DNS is not up yet after a reboot is isolated all the same.
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
}

/// The device's isolation: the rules, the record, and the servers they
/// must keep reachable.
pub struct Isolation {
    /// None: this agent's configuration turned isolation off.
    nft: Option<Nft>,
    record: PathBuf,
    servers: Vec<String>,
    tls: Arc<rustls::ClientConfig>,
    resolv_files: Vec<PathBuf>,
}

impl Isolation {
    /// Isolation of this device for an agent whose state file is
    /// `state_path`, talking to `servers` with `tls`, through `nft` (None:
    /// refused, as configured).
    pub fn new(
        nft: Option<Nft>,
        state_path: &Path,
        servers: Vec<String>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        Self {
            nft,
            record: record_path(state_path),
            servers,
            tls,
            resolv_files: vec![
                PathBuf::from("/etc/resolv.conf"),
                // systemd-resolved's upstream servers: with its stub
                // (127.0.0.53) in resolv.conf, these are who it asks.
                PathBuf::from("/run/systemd/resolve/resolv.conf"),
            ],
        }
    }

    /// Whether the agent's record says the device is isolated.
    pub fn is_isolated(&self) -> bool {
        self.record.exists()
    }

    /// At start: puts recorded isolation back in place (without waiting for
    /// a server, which may not be reachable yet after a reboot), or removes
    /// rules that an agent which died while isolating left without a record.
    pub async fn restore(&self) {
        let Some(nft) = &self.nft else {
            return;
        };
        match read_record(&self.record) {
            Ok(Some(record)) => match self.apply(&record).await {
                Ok(_) => tracing::warn!("this device is isolated; isolation put back in place"),
                Err(failure) => {
                    tracing::error!(error = %failure.message, "putting isolation back in place failed")
                }
            },
            Ok(None) => match nft.release().await {
                Ok(true) => tracing::warn!("removed isolation rules left without a record"),
                Ok(false) => {}
                Err(crate::isolation::IsolationError::Unsupported) => {}
                Err(err) => tracing::warn!(error = %err, "checking for isolation rules failed"),
            },
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "reading the isolation record failed"
            ),
        }
    }

    /// The Isolate command.
    pub async fn isolate(&self, selective: bool, allow: &[String]) -> Result<Success, Failure> {
        let mut record = Record {
            selective,
            allow: allow.to_vec(),
            servers: Vec::new(),
        };
        let nft = self.nft()?;
        record.servers = self.apply(&record).await?;
        if let Err(why) = self.prove().await {
            let undone = match nft.release().await {
                Ok(_) => "the rules were removed".to_string(),
                Err(err) => format!(
                    "removing the rules failed too ({err}): run `reach-agent release-isolation` on the device"
                ),
            };
            let _ = std::fs::remove_file(&self.record);
            tracing::error!(error = %why, "isolation undone: no server answered once it was in place");
            return Err(Failure::new(format!(
                "Isolation was undone: no server answered within {} s once it was in place ({why}); {undone}. A proxy, VPN or a server reached through another address may be the cause",
                PROOF.as_secs()
            )));
        }
        let text = serde_json::to_vec(&record).map_err(|e| Failure::new(e.to_string()))?;
        if let Err(err) = reach_client::private_file::write_private(&self.record, &text) {
            let _ = nft.release().await;
            return Err(Failure::new(format!(
                "Isolation was undone: recording it failed, so it would not survive a restart ({err})"
            )));
        }
        tracing::warn!(selective, "this device is isolated");
        Ok(Success::default())
    }

    /// The Unisolate command: removes the rules, then the record.
    /// Succeeds on a device that was not isolated.
    pub async fn release(&self) -> Result<bool, Failure> {
        release(self.nft.as_ref(), &self.record).await
    }

    /// Offboarding's part: releases isolation where this platform has any
    /// (elsewhere there is none to release, only a record to forget).
    pub async fn leave(&self) -> Result<(), Failure> {
        if !cfg!(target_os = "linux") {
            let _ = std::fs::remove_file(&self.record);
            return Ok(());
        }
        self.release().await.map(|_| ())
    }

    fn nft(&self) -> Result<&Nft, Failure> {
        self.nft.as_ref().ok_or_else(|| {
            Failure::new(
                "Isolation is turned off on this agent (its configuration's nft_command is empty)",
            )
        })
    }

    /// Puts the rules in place for `record`; the server addresses allowed.
    async fn apply(&self, record: &Record) -> Result<Vec<SocketAddr>, Failure> {
        let destinations = record
            .allow
            .iter()
            .map(|text| Destination::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| Failure::new(format!("Not isolating: {err}")))?;
        let servers = self.server_addresses(&record.servers).await?;
        let allowed = Allowed {
            servers: servers.clone(),
            resolvers: resolvers(&self.resolv_files),
            destinations,
        };
        self.nft()?
            .apply(&allowed)
            .await
            .map_err(|err| Failure::new(format!("Isolating failed: {err}")))?;
        Ok(servers)
    }

    /// Every address and port of every server, resolved now, and those
    /// `known` from before.
    async fn server_addresses(&self, known: &[SocketAddr]) -> Result<Vec<SocketAddr>, Failure> {
        let mut addresses = known.to_vec();
        let mut errors = Vec::new();
        for server in &self.servers {
            match resolve(server).await {
                Ok(found) => addresses.extend(found),
                Err(why) => errors.push(format!("{server}: {why}")),
            }
        }
        addresses.sort();
        addresses.dedup();
        if addresses.is_empty() {
            return Err(Failure::new(format!(
                "Not isolating: no server address could be found, so the agent would lose its server ({})",
                errors.join("; ")
            )));
        }
        Ok(addresses)
    }

    /// Some server answers `/healthz` over a new connection within `PROOF`.
    async fn prove(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        let deadline = tokio::time::Instant::now() + PROOF;
        // Each server in turn, again until the deadline: the first packets
        // after a ruleset change may meet a neighbour table being rebuilt.
        loop {
            for server in &self.servers {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    return Err(errors.join("; "));
                }
                let tls = Some(self.tls.as_ref().clone());
                match reach_client::AgentClient::probe(server, tls, left.min(PROOF / 2)).await {
                    Ok(()) => return Ok(()),
                    Err(err) => {
                        errors.push(format!("{server}: {err}"));
                        errors.dedup();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Removes the rules (through `nft`, when isolation is on), then the
/// record at `record`; true when either existed. The Unisolate command and
/// the break-glass (`reach-agent release-isolation`).
pub async fn release(nft: Option<&Nft>, record: &Path) -> Result<bool, Failure> {
    let released = match nft {
        Some(nft) => nft
            .release()
            .await
            .map_err(|err| Failure::new(format!("Releasing isolation failed: {err}")))?,
        None => false,
    };
    let recorded = match std::fs::remove_file(record) {
        Ok(()) => true,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
        Err(err) => {
            return Err(Failure::new(format!(
                "The rules were removed but the isolation record {} could not be ({err}): it would isolate the device again at the agent's next start",
                record.display()
            )));
        }
    };
    if released || recorded {
        tracing::warn!("isolation released");
    }
    Ok(released || recorded)
}

fn read_record(path: &Path) -> anyhow::Result<Option<Record>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// A server URL's addresses and port.
async fn resolve(server: &str) -> Result<Vec<SocketAddr>, String> {
    let url = url::Url::parse(server).map_err(|e| e.to_string())?;
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let host = match url.host() {
        Some(url::Host::Ipv4(ip)) => return Ok(vec![SocketAddr::new(IpAddr::V4(ip), port)]),
        Some(url::Host::Ipv6(ip)) => return Ok(vec![SocketAddr::new(IpAddr::V6(ip), port)]),
        Some(url::Host::Domain(name)) => name.to_string(),
        None => return Err("the URL has no host".into()),
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?
        .collect();
    if found.is_empty() {
        return Err(format!("{host} has no address"));
    }
    Ok(found)
}

/// The `nameserver` addresses of the resolver files that exist.
fn resolvers(files: &[PathBuf]) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        found.extend(parse_resolvers(&text));
    }
    found.sort();
    found.dedup();
    found
}

/// `nameserver ADDRESS` lines (an IPv6 address may carry `%zone`, dropped).
fn parse_resolvers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|address| address.split('%').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolvers_are_read_from_nameserver_lines() {
        let text = "# comment\nsearch example\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver  2001:db8::53 \nnameserver bogus\n";
        let found = parse_resolvers(text);
        let expected: Vec<IpAddr> = ["192.0.2.53", "fe80::1", "2001:db8::53"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(found, expected);
    }

    #[tokio::test]
    async fn server_urls_resolve_to_their_address_and_port() {
        assert_eq!(
            resolve("https://192.0.2.10:8443").await.unwrap(),
            vec!["192.0.2.10:8443".parse().unwrap()]
        );
        assert_eq!(
            resolve("https://[2001:db8::5]").await.unwrap(),
            vec!["[2001:db8::5]:443".parse().unwrap()]
        );
        assert_eq!(
            resolve("http://127.0.0.1").await.unwrap(),
            vec!["127.0.0.1:80".parse().unwrap()]
        );
        assert!(resolve("not a url").await.is_err());
    }
}
