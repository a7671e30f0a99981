//! StopAndQuarantineFile: every running process whose executable's SHA-1
//! is the one asked for is killed, and each such executable is kept in the
//! quarantine folder (`quarantine::Vault`) and removed from where it was.
//! The report (the command's result, JSON) lists the processes and files
//! handled and says plainly what was not done: copies of the file that
//! were not running were not searched.
//!
//! Linux reads `/proc/PID/exe` (the executable itself, even once deleted);
//! other platforms refuse, as isolation does, until built. It never stops
//! the agent itself or process 1, and hashes each executable once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use reach_proto::agent::CommandRef;
use serde_json::json;

use super::{Failure, Success};
use crate::quarantine::{Vault, sha1_of};

/// Executables larger than this are not hashed (and named in the report).
const LARGEST: u64 = 1024 * 1024 * 1024;

/// What the report says was not searched.
pub const NOT_SEARCHED: &str = "Only the executables of running processes were searched: copies of this file that were not running, elsewhere on the disk, were not searched, stopped or quarantined.";

/// One running process and its executable.
struct Process {
    pid: u32,
    exe: PathBuf,
    /// The executable's path as the kernel names it (" (deleted)" cut).
    path: String,
    file: (u64, u64),
}

/// Runs the command for `sha1` (already checked: 40 hex digits).
pub async fn run(command: &CommandRef, sha1: &str, state_path: &Path) -> Result<Success, Failure> {
    if !cfg!(target_os = "linux") {
        return Err(Failure::new(
            "StopAndQuarantineFile is not supported on this platform yet",
        ));
    }
    let sha1 = sha1.to_ascii_lowercase();
    let vault = Vault::open(state_path);
    let action_id = command.action_id.clone();
    let report =
        tokio::task::spawn_blocking(move || stop_and_quarantine(&sha1, &vault, &action_id))
            .await
            .map_err(|err| Failure::new(format!("The search failed: {err}")))??;
    Ok(Success {
        result: Some(serde_json::to_vec_pretty(&report).unwrap_or_default()),
        ..Success::default()
    })
}

fn stop_and_quarantine(
    sha1: &str,
    vault: &Vault,
    action_id: &str,
) -> Result<serde_json::Value, Failure> {
    let own = own_file();
    let mut hashes: HashMap<(u64, u64), Option<String>> = HashMap::new();
    let mut too_large = Vec::new();
    let mut matched: Vec<Process> = Vec::new();
    for process in processes() {
        let hash = hashes.entry(process.file).or_insert_with(|| {
            let size = std::fs::metadata(&process.exe)
                .map(|m| m.len())
                .unwrap_or(0);
            if size > LARGEST {
                too_large.push(process.path.clone());
                return None;
            }
            sha1_of(&process.exe).ok()
        });
        if hash.as_deref() == Some(sha1) {
            matched.push(process);
        }
    }
    if let Some(agent) = matched.iter().find(|p| Some(p.file) == own) {
        return Err(Failure::new(format!(
            "{} is this agent's own executable: not stopping the agent",
            agent.path
        )));
    }
    let mut by_file: Vec<((u64, u64), Vec<&Process>)> = Vec::new();
    for process in &matched {
        match by_file.iter_mut().find(|(file, _)| *file == process.file) {
            Some((_, group)) => group.push(process),
            None => by_file.push((process.file, vec![process])),
        }
    }
    let mut files = Vec::new();
    let mut processes = Vec::new();
    for (file, group) in by_file {
        let first = group[0];
        let mut report = json!({ "path": first.path });
        // A file of an installed package is the system's (Defender, too,
        // leaves trusted publishers' files alone): neither stopped nor taken.
        if let Some(package) = package_of(&first.path) {
            report["refused"] = json!(format!(
                "it belongs to the installed package {package}: not stopped or quarantined"
            ));
            files.push(report);
            continue;
        }
        // Kept first (from /proc/PID/exe, which still reads a deleted
        // file), then the processes killed, then the file removed.
        match vault.keep(&first.exe, &first.path, sha1, action_id) {
            Ok(entry) => report["quarantineId"] = json!(entry.id),
            Err(err) => {
                report["error"] = json!(format!("{err:#}"));
                files.push(report);
                continue;
            }
        }
        for process in group {
            // The pid may have been reused since it was read: killed only
            // if it still runs the same file.
            let still = file_of(&process.exe) == Some(file);
            if still {
                crate::containment::signal_kill(process.pid as i32);
            }
            processes.push(json!({ "pid": process.pid, "path": process.path, "killed": still }));
        }
        report["removed"] = json!(remove_if_same(Path::new(&first.path), sha1));
        files.push(report);
    }
    tracing::warn!(sha1 = %sha1, processes = processes.len(), files = files.len(), "stop and quarantine done");
    Ok(json!({
        "sha1": sha1,
        "processes": processes,
        "files": files,
        "notHashed": too_large,
        "note": if matched.is_empty() {
            format!("No running process's executable has this SHA-1. {NOT_SEARCHED}")
        } else {
            NOT_SEARCHED.to_string()
        },
    }))
}

/// The installed package `path` belongs to, as dpkg or rpm know it.
fn package_of(path: &str) -> Option<String> {
    let run = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // With /bin a link to /usr/bin (merged /usr), the package database may
    // know the file by either name.
    let mut names = vec![path.to_string()];
    for (merged, old) in [
        ("/usr/bin/", "/bin/"),
        ("/usr/sbin/", "/sbin/"),
        ("/usr/lib/", "/lib/"),
    ] {
        if let Some(rest) = path.strip_prefix(merged) {
            names.push(format!("{old}{rest}"));
        }
    }
    for name in &names {
        // `dpkg-query -S` answers "package: path" (several joined by ", ").
        if let Some(found) = run("dpkg-query", &["-S", name]) {
            let package = found.split(':').next().unwrap_or_default().trim();
            if !package.is_empty() {
                return Some(package.to_string());
            }
        }
        if let Some(package) = run("rpm", &["-qf", name]).filter(|p| !p.is_empty()) {
            return Some(package);
        }
    }
    None
}

/// Removes `path` if it still holds a file of that SHA-1 (a deleted one is
/// already gone); whether it is gone now.
fn remove_if_same(path: &Path, sha1: &str) -> bool {
    match sha1_of(path) {
        Ok(hash) if hash == sha1 => std::fs::remove_file(path).is_ok(),
        Ok(_) => false,
        Err(err) => err.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Every process but this one and process 1, with its executable.
fn processes() -> Vec<Process> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if pid == own || pid <= 1 {
                return None;
            }
            let exe = entry.path().join("exe");
            let target = std::fs::read_link(&exe).ok()?;
            let path = target.display().to_string();
            let path = path.strip_suffix(" (deleted)").unwrap_or(&path).to_string();
            let file = file_of(&exe)?;
            Some(Process {
                pid,
                exe,
                path,
                file,
            })
        })
        .collect()
}

/// The agent's own executable, as (device, inode).
fn own_file() -> Option<(u64, u64)> {
    file_of(&std::env::current_exe().ok()?)
}

#[cfg(unix)]
fn file_of(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.dev(), metadata.ino()))
}

#[cfg(not(unix))]
fn file_of(_path: &Path) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_installed_packages_are_known_also_by_their_merged_name() {
        let has_dpkg = std::process::Command::new("dpkg-query")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_dpkg || !Path::new("/usr/bin/sleep").exists() {
            println!("skipped: needs dpkg and /usr/bin/sleep");
            return;
        }
        assert_eq!(package_of("/usr/bin/sleep").as_deref(), Some("coreutils"));
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("tool");
        std::fs::write(&own, b"x").unwrap();
        assert_eq!(package_of(&own.display().to_string()), None);
    }
}
