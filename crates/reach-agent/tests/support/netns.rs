//! What the isolation tests share: running `ip` and `nft`, and whether
//! this machine can make network namespaces at all (root, iproute2,
//! nftables). Included by each test file (`#[path]`), never a test itself.

use std::process::{Command, Stdio};

/// Runs `args` (the program first) and returns what it did.
pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

/// Runs `args` and fails the test unless it succeeds.
pub fn ok(args: &[&str]) {
    let output = run(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Why this machine cannot run the test, if it cannot.
pub fn missing() -> Option<String> {
    let root = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        return Some("root (network namespaces)".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "`{tool}` ({})",
                if tool == "ip" { "iproute2" } else { "nftables" }
            ));
        }
    }
    None
}

/// A TCP listener on `ip:port` that accepts forever, run inside namespace
/// `ns` (None: where the test runs). The caller kills it.
pub fn listener(ns: Option<&str>, ip: &str, port: u16) -> std::process::Child {
    let program = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{ip}',{port}))\ns.listen(64)\nwhile True:\n    c,_=s.accept()\n    c.close()\n"
    );
    let mut command = match ns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, "python3"]);
            command
        }
        None => Command::new("python3"),
    };
    command
        .args(["-c", &program])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether a TCP connection from namespace `ns` to `ip:port` opens within
/// a second.
pub fn reaches(ns: &str, ip: &str, port: u16) -> bool {
    let program =
        format!("import socket\nsocket.create_connection(('{ip}',{port}),timeout=1).close()");
    Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &program])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when this machine cannot run an isolation test: it then says why
/// (and fails instead under CI=true, where nothing may be skipped).
pub fn skipped() -> bool {
    let Some(what) = missing() else {
        return false;
    };
    assert!(
        std::env::var("CI").is_err(),
        "isolation tests need {what} under CI"
    );
    println!("skipped: the isolation test needs {what}");
    true
}

/// Kills and reaps the listeners.
pub fn stop(listeners: &mut Vec<std::process::Child>) {
    for mut listener in listeners.drain(..) {
        let _ = listener.kill();
        let _ = listener.wait();
    }
}
