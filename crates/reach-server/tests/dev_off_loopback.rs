//! `reach-server --dev --listen <an address off loopback>` works: the real
//! binary, run inside a network namespace this test creates (so the
//! address exists only there, never on the machine's own network), serves
//! HTTPS with a CA of its own (its local agent, like every agent, never
//! sends a credential in clear off loopback), its local agent connects, and
//! a client in the namespace reaches the API through that CA. The
//! namespace, and the server with it, is removed even when the test fails.
//! Needs root and `ip` (iproute2); without them it prints a skip notice,
//! and under CI=true it fails instead.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use reach_server::dev::DevCredentials;
use reach_server::testing::wait_for;

fn missing() -> Option<&'static str> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        return Some("root (network namespaces)");
    }
    let ip = Command::new("sh")
        .args(["-c", "command -v ip && command -v curl"])
        .stdout(Stdio::null())
        .status();
    if !ip.is_ok_and(|s| s.success()) {
        return Some("`ip` (iproute2) and `curl`");
    }
    None
}

/// A namespace of this test's own with one address, 10.231.9.1 (on one end
/// of a veth pair whose both ends stay inside it); removed
/// (with whatever runs in it) on drop.
struct Namespace(String);

impl Namespace {
    fn new() -> Self {
        let name = format!("reach-dev-{}", std::process::id() % 100_000);
        let ns = Namespace(name.clone());
        for args in [
            vec!["netns", "add", &name],
            vec![
                "-n", &name, "link", "add", "rd0", "type", "veth", "peer", "name", "rd1",
            ],
            vec!["-n", &name, "addr", "add", "10.231.9.1/24", "dev", "rd0"],
            vec!["-n", &name, "link", "set", "rd0", "up"],
            vec!["-n", &name, "link", "set", "rd1", "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            let status = Command::new("ip").args(&args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        }
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test]
async fn dev_mode_off_loopback_serves_https_and_its_agent_connects() {
    if let Some(what) = missing() {
        assert!(
            std::env::var("CI").is_err(),
            "this test needs {what} under CI"
        );
        println!("skipped: dev mode off loopback needs {what}");
        return;
    }
    let ns = Namespace::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = tokio::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_reach-server")])
        .args(["--dev", "--listen", "10.231.9.1:0", "--data-dir"])
        .arg(&data)
        .env("REACH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let credentials = reach_server::dev::credentials_path(&data);
    // Written once the local agent is connected.
    let creds: DevCredentials = wait_for("dev-credentials.json appearing", async || {
        let text = std::fs::read_to_string(&credentials).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    assert!(
        creds.server.starts_with("https://10.231.9.1:"),
        "{}",
        creds.server
    );
    let ca = data.join("tls/ca.pem");
    let health = Command::new("ip")
        .args(["netns", "exec", &ns.0, "curl", "-sS", "--cacert"])
        .arg(&ca)
        .arg(format!("{}/healthz", creds.server))
        .output()
        .unwrap();
    assert!(
        health.status.success() && String::from_utf8_lossy(&health.stdout) == "ok",
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let clear = Command::new("ip")
        .args(["netns", "exec", &ns.0, "curl", "-sS"])
        .arg(creds.server.replace("https://", "http://") + "/healthz")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&clear.stdout) != "ok",
        "nothing is served in clear"
    );
    server.kill().await.unwrap();
}
