//! Isolation with real nftables, only ever inside network namespaces this
//! test creates: an "agent" namespace and a "server" namespace joined by a
//! veth pair, listeners in the server namespace, and every `nft` command
//! run inside the agent namespace (`ip netns exec`). Never the machine
//! that runs the tests. Both namespaces (and with them the veth pair, the
//! rules and the listeners) are removed when the test ends, even when it
//! fails. Needs root, `ip` (iproute2) and `nft` (nftables): without them it
//! prints a skip notice, and under CI=true it fails instead.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use reach_agent::isolation::{Allowed, Destination, Nft};

#[path = "support/netns.rs"]
mod netns;
use netns::{ok, run};

/// Two namespaces of this test's own, joined by a veth pair; removed on drop.
struct Lab {
    agent: String,
    server: String,
    server_ip: String,
    listeners: Vec<std::process::Child>,
}

impl Lab {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let lab = Lab {
            agent: format!("reach-iso-a{id}"),
            server: format!("reach-iso-s{id}"),
            server_ip: "10.231.7.1".into(),
            listeners: Vec::new(),
        };
        ok(&["ip", "netns", "add", &lab.agent]);
        ok(&["ip", "netns", "add", &lab.server]);
        let (a, s) = (format!("ria{id}"), format!("ris{id}"));
        ok(&[
            "ip",
            "link",
            "add",
            &a,
            "netns",
            &lab.agent,
            "type",
            "veth",
            "peer",
            "name",
            &s,
            "netns",
            &lab.server,
        ]);
        ok(&[
            "ip",
            "-n",
            &lab.agent,
            "addr",
            "add",
            "10.231.7.2/24",
            "dev",
            &a,
        ]);
        ok(&[
            "ip",
            "-n",
            &lab.server,
            "addr",
            "add",
            "10.231.7.1/24",
            "dev",
            &s,
        ]);
        for (ns, dev) in [(&lab.agent, &a), (&lab.server, &s)] {
            ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
            ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// A TCP listener on `port` in the server namespace, accepting forever.
    fn listen(&mut self, port: u16) {
        let child = netns::listener(Some(&self.server), &self.server_ip, port);
        self.listeners.push(child);
    }

    /// Whether a TCP connection from the agent namespace to `port` opens
    /// within a second.
    fn reaches(&self, port: u16) -> bool {
        netns::reaches(&self.agent, &self.server_ip, port)
    }

    fn nft(&self) -> Nft {
        Nft::with_command(vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.agent.clone(),
            "nft".into(),
        ])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        netns::stop(&mut self.listeners);
        // Deleting a namespace takes its veth end, rules and sockets with it.
        let _ = run(&["ip", "netns", "del", &self.agent]);
        let _ = run(&["ip", "netns", "del", &self.server]);
    }
}

#[tokio::test]
async fn isolation_keeps_the_server_and_what_is_allowed_and_release_restores_the_rest() {
    if netns::skipped() {
        return;
    }
    let mut lab = Lab::new();
    lab.listen(8080);
    lab.listen(9090);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(lab.reaches(8080) && lab.reaches(9090)) {
        assert!(Instant::now() < deadline, "the listeners never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let nft = lab.nft();
    assert!(!nft.is_applied().await.unwrap());
    let server = format!("{}:8080", lab.server_ip).parse().unwrap();
    let full = Allowed {
        servers: vec![server],
        ..Allowed::default()
    };
    nft.apply(&full).await.unwrap();
    assert!(nft.is_applied().await.unwrap());
    assert!(lab.reaches(8080), "the agent's server stays reachable");
    assert!(!lab.reaches(9090), "another port of the same host does not");

    // Selective: the operator's destinations too; applying again replaces.
    let selective = Allowed {
        destinations: vec![Destination::parse(&format!("{}/32:9090", lab.server_ip)).unwrap()],
        ..full.clone()
    };
    nft.apply(&selective).await.unwrap();
    assert!(lab.reaches(8080) && lab.reaches(9090));
    nft.apply(&full).await.unwrap();
    assert!(!lab.reaches(9090), "replaced whole, not added to");

    assert!(nft.release().await.unwrap());
    assert!(!nft.is_applied().await.unwrap());
    assert!(lab.reaches(9090), "released");
    assert!(!nft.release().await.unwrap(), "nothing left to release");

    // The break-glass: `reach-agent release-isolation`, run on the device
    // (here: inside its namespace), whatever the server says.
    nft.apply(&full).await.unwrap();
    assert!(!lab.reaches(9090));
    let released = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.agent,
            env!("CARGO_BIN_EXE_reach-agent"),
            "release-isolation",
        ])
        .output()
        .unwrap();
    assert!(
        released.status.success(),
        "{}",
        String::from_utf8_lossy(&released.stderr)
    );
    assert!(String::from_utf8_lossy(&released.stdout).contains("isolation released"));
    assert!(!nft.is_applied().await.unwrap());
    assert!(lab.reaches(9090));
}
