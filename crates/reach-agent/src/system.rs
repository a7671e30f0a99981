//! Facts about this device (name, OS, architecture) and the platform parts of
//! running processes: starting a script in its own process group (Unix) and
//! killing the whole group. Windows and macOS compile through cfg-gated code.

use reach_proto::agent::{IpAddress, MachineInfo};

/// The device's non-loopback addresses, with MAC addresses where Linux tells them.
fn ip_addresses() -> Vec<IpAddress> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    interfaces
        .into_iter()
        .filter(|i| !i.is_loopback())
        .take(64)
        .map(|i| IpAddress {
            ip_address: i.ip().to_string(),
            mac_address: mac_address(&i.name),
            interface: Some(i.name.clone()),
        })
        .collect()
}

fn mac_address(interface: &str) -> Option<String> {
    if interface.contains('/') || interface.contains("..") {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    let mac = text.trim();
    (mac.len() == 17 && mac != "00:00:00:00:00:00").then(|| mac.to_string())
}

pub fn machine_info() -> MachineInfo {
    MachineInfo {
        ip_addresses: ip_addresses(),
        hostname: hostname(),
        os_platform: os_platform().to_string(),
        os_version: os_version(),
        os_architecture: if cfg!(target_pointer_width = "64") {
            "64-bit"
        } else {
            "32-bit"
        }
        .to_string(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn os_platform() -> &'static str {
    if cfg!(target_os = "linux") {
        "Linux"
    } else if cfg!(target_os = "macos") {
        "macOS"
    } else if cfg!(windows) {
        "Windows"
    } else {
        std::env::consts::OS
    }
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        if let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let name = name.trim();
            if !name.is_empty() {
                return name.to_string();
            }
        }
        if let Ok(output) = std::process::Command::new("hostname").output() {
            let name = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if !name.is_empty() {
                return name;
            }
        }
    }
    std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".to_string())
}

fn os_version() -> String {
    if let Ok(text) = std::fs::read_to_string("/etc/os-release") {
        for line in text.lines() {
            if let Some(value) = line.strip_prefix("PRETTY_NAME=") {
                return value.trim_matches('"').to_string();
            }
        }
    }
    std::env::consts::OS.to_string()
}

/// Puts the child in a process group of its own, so the whole tree can be killed.
pub fn own_process_group(command: &mut tokio::process::Command) {
    #[cfg(unix)]
    {
        command.process_group(0);
    }
    #[cfg(windows)]
    {
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        command.creation_flags(CREATE_NEW_PROCESS_GROUP);
    }
}

/// Kills the child's whole process group (Unix) or the child (elsewhere).
pub fn kill_tree(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        kill_group(pid);
        return;
    }
    let _ = child.start_kill();
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn kill_group(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals a process group; it touches
    // no memory of ours. The group id is the child's pid (process_group(0)).
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}
