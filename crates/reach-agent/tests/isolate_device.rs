//! Isolate and release through the API, carried out by the real agent
//! binary running inside a network namespace this test creates (the
//! "device"), against an in-process server outside it, reached over a veth
//! pair (10.231.8.1 on the test's side, and 10.231.8.3, another host the
//! device must lose; 10.231.8.2 in the namespace).
//! Isolation is only ever applied inside that namespace, by the agent
//! running there; never to the machine that runs the tests. The namespace
//! (and with it the veth pair, the rules and the agent) is removed when the
//! test ends, even when it fails. Needs root, `ip` (iproute2), `nft`
//! (nftables) and python3: without them it prints a skip notice, and under
//! CI=true it fails instead.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reach_client::LibraryUpload;
use reach_proto::api::{ActionStatus, RunLiveResponseRequest};
use reach_server::testing::{DEADLINE, TestServer, eventually, run_script, wait_final};

#[path = "support/netns.rs"]
mod netns;
use netns::{ok, run};

const HOST: &str = "10.231.8.1";
const DEVICE: &str = "10.231.8.2";
/// Another address on the test's side: a host that is not the server.
const OTHER: &str = "10.231.8.3";

/// The device's namespace, joined to the test's side by a veth pair;
/// removed (with the agent and its rules) on drop.
struct Device {
    ns: String,
    host_link: String,
    listeners: Vec<std::process::Child>,
    agent: Option<tokio::process::Child>,
}

impl Device {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let device = Device {
            ns: format!("reach-dev-iso{id}"),
            host_link: format!("rdh{id}"),
            listeners: Vec::new(),
            agent: None,
        };
        let inside = format!("rdd{id}");
        ok(&["ip", "netns", "add", &device.ns]);
        ok(&[
            "ip",
            "link",
            "add",
            &device.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inside,
            "netns",
            &device.ns,
        ]);
        ok(&[
            "ip",
            "addr",
            "add",
            &format!("{HOST}/24"),
            "dev",
            &device.host_link,
        ]);
        ok(&[
            "ip",
            "addr",
            "add",
            &format!("{OTHER}/24"),
            "dev",
            &device.host_link,
        ]);
        ok(&["ip", "link", "set", &device.host_link, "up"]);
        let addr = format!("{DEVICE}/24");
        ok(&["ip", "-n", &device.ns, "addr", "add", &addr, "dev", &inside]);
        ok(&["ip", "-n", &device.ns, "link", "set", &inside, "up"]);
        ok(&["ip", "-n", &device.ns, "link", "set", "lo", "up"]);
        device
    }

    /// A TCP listener on the test's side of the link, accepting forever.
    fn listen(&mut self, port: u16) {
        self.listeners.push(netns::listener(None, HOST, port));
    }

    /// Whether a TCP connection from the device to `port` on the test's
    /// side opens within a second.
    fn reaches(&self, port: u16) -> bool {
        netns::reaches(&self.ns, HOST, port)
    }

    /// `nft` inside the device.
    fn nft(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["ip", "netns", "exec", &self.ns, "nft"];
        all.extend_from_slice(args);
        run(&all)
    }

    fn isolated(&self) -> bool {
        let tables = self.nft(&["list", "tables"]);
        String::from_utf8_lossy(&tables.stdout).contains("reach_isolation")
    }

    /// The agent binary inside the device.
    fn agent(&self, state: &Path, ca: &Path, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_reach-agent")])
            .args(args)
            .arg("--state")
            .arg(state)
            .arg("--ca-file")
            .arg(ca)
            .env("REACH_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn start_agent(&mut self, state: &Path, ca: &Path) {
        self.agent = Some(self.agent(state, ca, &["run"]).spawn().unwrap());
    }

    async fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill().await;
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(agent) = &mut self.agent {
            let _ = agent.start_kill();
        }
        netns::stop(&mut self.listeners);
        // Deleting the namespace takes its veth end (and so the pair), its
        // rules and its sockets with it.
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_link]);
    }
}

#[tokio::test]
async fn isolation_through_the_api_keeps_the_server_survives_restarts_and_rolls_back() {
    if netns::skipped() {
        return;
    }
    let mut device = Device::new();
    let server = TestServer::start_tls_on(HOST, &[], |config| {
        config.isolation.selective_allow =
            vec![reach_proto::destination::Destination::parse(&format!("{HOST}:9091")).unwrap()];
    })
    .await;
    device.listen(9090);
    device.listen(9091);
    device.listeners.push(netns::listener(None, OTHER, 9090));
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("agent/state.json");
    let ca = server.ca_file.clone().unwrap();
    let enrolled = device
        .agent(
            &state,
            &ca,
            &[
                "enroll",
                "--server",
                &server.url,
                "--token",
                &server.enrollment_token,
            ],
        )
        .output()
        .await
        .unwrap();
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let machine = reach_agent::State::load(&state).unwrap().machine_id;
    device.start_agent(&state, &ca).await;
    let connected = || async {
        tokio::time::timeout(DEADLINE, server.state.hub.wait_connected(&machine))
            .await
            .expect("the agent connects");
    };
    connected().await;
    eventually("the device reaches the test's side", async || {
        device.reaches(9090) && netns::reaches(&device.ns, OTHER, 9090)
    })
    .await;
    let client = &server.client;
    let state_of = async |machine: &str| client.machine(machine).await.unwrap().isolation_state;
    assert_eq!(state_of(&machine).await, "NotIsolated");

    // Full isolation: the server stays, everything else goes.
    let isolate = client.isolate(&machine, "contain", "Full").await.unwrap();
    assert_eq!(isolate.kind, "Isolate");
    assert_eq!(isolate.scope.as_deref(), Some("Full"));
    let done = wait_final(client, &isolate.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:?}");
    assert!(device.isolated());
    assert!(
        !device.reaches(9090),
        "another port of the server's host is cut off"
    );
    assert!(
        !device.reaches(9091),
        "Full allows no configured destination"
    );
    assert!(
        !netns::reaches(&device.ns, OTHER, 9090),
        "another address is cut off"
    );
    assert_eq!(state_of(&machine).await, "Isolated");
    // The record keeps the server's address, allowed again at the next
    // start even before DNS answers.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.with_file_name("isolation.json")).unwrap())
            .unwrap();
    let address = server.url.trim_start_matches("https://").to_string();
    assert_eq!(record["servers"], serde_json::json!([address]));

    // Live response keeps working while isolated.
    client
        .upload_library_file(LibraryUpload::bytes(
            "hello.sh",
            b"echo isolated but here\n".to_vec(),
        ))
        .await
        .unwrap();
    let request = RunLiveResponseRequest {
        commands: Some(vec![run_script("hello.sh", None)]),
        comment: Some("investigate".into()),
    };
    let action = client.run_live_response(&machine, &request).await.unwrap();
    let action = wait_final(client, &action.id).await;
    assert_eq!(action.status, ActionStatus::Succeeded, "{action:?}");
    let transcript = String::from_utf8(server.result(&action.id, 0).await).unwrap();
    assert!(transcript.contains("isolated but here"), "{transcript}");

    // A restart (the rules gone too, as after a reboot) puts it back.
    device.stop_agent().await;
    let deleted = device.nft(&["delete", "table", "inet", "reach_isolation"]);
    assert!(deleted.status.success());
    assert!(device.reaches(9090));
    device.start_agent(&state, &ca).await;
    eventually("isolation is back after the restart", async || {
        device.isolated()
    })
    .await;
    assert!(!device.reaches(9090));
    connected().await;
    assert_eq!(state_of(&machine).await, "Isolated");

    // Release restores the rest.
    let release = client.unisolate(&machine, "clean").await.unwrap();
    assert_eq!(release.kind, "Unisolate");
    let done = wait_final(client, &release.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:?}");
    assert!(!device.isolated());
    assert!(device.reaches(9090));
    assert!(netns::reaches(&device.ns, OTHER, 9090), "released");
    assert_eq!(state_of(&machine).await, "NotIsolated");

    // Selective: the configured destination too, nothing else.
    let selective = client
        .isolate(&machine, "contain", "Selective")
        .await
        .unwrap();
    assert_eq!(selective.scope.as_deref(), Some("Selective"));
    let done = wait_final(client, &selective.id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{done:?}");
    assert!(device.reaches(9091), "the configured destination stays");
    assert!(!device.reaches(9090));
    let release = client.unisolate(&machine, "clean").await.unwrap();
    wait_final(client, &release.id).await;
    assert!(device.reaches(9090));

    // A server that cannot be reached once the rules are in place (new
    // connections to it dropped by another table of the device's; the
    // agent's own connection, older, carries on): undone, and said why.
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let blocker = format!(
        "table inet lab_blocker {{\n chain output {{\n  type filter hook output priority 10; policy accept;\n  tcp dport {port} ct state new drop\n }}\n}}\n"
    );
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &device.ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut nft.stdin.take().unwrap(), blocker.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success());
    let isolate = client.isolate(&machine, "contain", "Full").await.unwrap();
    let done = wait_final(client, &isolate.id).await;
    assert_eq!(done.status, ActionStatus::Failed, "{done:?}");
    let errors = done.commands[0].errors.join(" ");
    assert!(errors.contains("Isolation was undone"), "{errors}");
    assert!(!device.isolated(), "rolled back");
    assert!(device.reaches(9090));
    assert_eq!(state_of(&machine).await, "NotIsolated");
    assert!(!state.with_file_name("isolation.json").exists());
}
