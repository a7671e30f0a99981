//! Holding every process a script starts, so that cancel, timeout, the end
//! of the script and the agent's next start (after a crash) end them all,
//! including those that left the script's process group (`setsid`,
//! daemons).
//!
//! On Linux each script starts in a cgroup v2 of its own (`Hold`), under
//! the agent's own cgroup when it may create one there (systemd's
//! `Delegate=yes`), else under `reach-scripts/` at the hierarchy's root;
//! the child joins it before it runs a single instruction of the script, so
//! no descendant escapes, and killing writes `cgroup.kill` (or signals
//! every process listed, on kernels before 5.14). Every script's processes
//! also carry an environment marker (`REACH_SCRIPT`), and every hold is
//! recorded in `<state dir>/scripts/` until its processes are gone: where
//! cgroups are unavailable, the kill ends the process group and every
//! process whose environment carries the marker; at start, the agent ends
//! what its records (and its cgroups) still hold. Elsewhere (macOS,
//! Windows: `system::ProcessTree`) the process group or Job object is the
//! hold. This module kills only processes it started or marked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::system::ProcessTree;

/// The environment variable every script process carries.
pub const MARKER: &str = "REACH_SCRIPT";

/// Where this agent's script holds live.
pub struct Containment {
    /// This agent's cgroup directory for scripts (Linux, when usable).
    cgroups: Option<PathBuf>,
    /// Records of holds whose processes may still run.
    records: PathBuf,
    /// Identifies this agent among others on the machine (its machine id).
    key: String,
}

/// What is recorded on disk while a script's processes may run.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    marker: String,
    cgroup: Option<PathBuf>,
}

impl Containment {
    /// Sets up holds for this agent (`key`: its machine id; `state_dir`:
    /// where records are kept) and ends whatever a previous run of it left.
    pub fn open(state_dir: &Path, key: &str) -> Arc<Self> {
        let key: String = key
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(64)
            .collect();
        let records = state_dir.join("scripts");
        if let Err(err) = std::fs::create_dir_all(&records) {
            tracing::warn!(error = %err, dir = %records.display(), "cannot keep script records");
        }
        let cgroups = cgroup::scripts_dir(&key);
        match &cgroups {
            Some(dir) => {
                tracing::info!(cgroup = %dir.display(), "scripts run in cgroups of their own")
            }
            None => tracing::info!(
                "cgroup v2 is not available: scripts are held by process group and an environment marker"
            ),
        }
        let containment = Arc::new(Self {
            cgroups,
            records,
            key,
        });
        containment.end_leftovers();
        containment
    }

    /// Ends what earlier runs of this agent left: every recorded hold, and
    /// every cgroup under this agent's.
    fn end_leftovers(&self) {
        let mut ended = 0;
        if let Ok(entries) = std::fs::read_dir(&self.records) {
            for entry in entries.flatten() {
                let path = entry.path();
                if let Ok(record) = std::fs::read(&path)
                    .map_err(|_| ())
                    .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|_| ()))
                {
                    ended += end(record.cgroup.as_deref(), &record.marker);
                }
                let _ = std::fs::remove_file(&path);
            }
        }
        if let Some(dir) = &self.cgroups
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for entry in entries.flatten() {
                if entry.path().join("cgroup.procs").exists() {
                    ended += end(Some(&entry.path()), "");
                }
            }
            // Killed cgroups empty shortly after; then they and this
            // agent's directory go.
            for _ in 0..50 {
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for entry in entries.flatten() {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
                cgroup::remove_if_empty(dir);
                if !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if ended > 0 {
            tracing::warn!(
                processes = ended,
                "ended processes that scripts of an earlier run of this agent left running"
            );
        }
    }

    /// Prepares `command` to start in a new hold named `name` (unique per
    /// command, such as `action.index`).
    pub fn prepare(&self, command: &mut tokio::process::Command, name: &str) -> Hold {
        let mut name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(100)
            .collect();
        if name.is_empty() || name.starts_with('.') {
            name.insert(0, '_');
        }
        let marker = format!("{}.{name}", self.key);
        command.env(MARKER, &marker);
        crate::system::own_process_group(command);
        let cgroup = self
            .cgroups
            .as_ref()
            .and_then(|dir| cgroup::join_at_start(command, &dir.join(&name)));
        let record = self.records.join(&name);
        let text = serde_json::to_vec(&Record {
            marker: marker.clone(),
            cgroup: cgroup.clone(),
        })
        .expect("a record serialises");
        if let Err(err) = std::fs::write(&record, text) {
            tracing::warn!(error = %err, "cannot record a script's hold; a crash would leave it running");
        }
        Hold {
            marker,
            cgroup,
            record,
            tree: None,
            contained: false,
            released: false,
        }
    }
}

impl Drop for Containment {
    /// An agent that stops leaves no empty cgroups behind (a script still
    /// held keeps its own, for the next start to end).
    fn drop(&mut self) {
        if let Some(dir) = &self.cgroups {
            cgroup::remove_if_empty(dir);
        }
    }
}

/// One script's processes.
pub struct Hold {
    marker: String,
    cgroup: Option<PathBuf>,
    record: PathBuf,
    tree: Option<ProcessTree>,
    /// The child joined its cgroup: every descendant is there, and no scan
    /// for the marker is needed to find them.
    contained: bool,
    released: bool,
}

impl Drop for Hold {
    /// A hold dropped unreleased (its command's task ended early, as when
    /// the agent stops mid-script) still ends its processes and forgets
    /// itself.
    fn drop(&mut self) {
        if self.released {
            return;
        }
        end(self.cgroup.as_deref(), self.marker_to_scan());
        if let Some(dir) = &self.cgroup {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::fs::remove_file(&self.record);
    }
}

impl Hold {
    /// Takes hold of the started child (its group, or its Job object).
    pub fn attach(&mut self, child: &tokio::process::Child) {
        self.tree = Some(ProcessTree::attach(child));
        self.contained = match (&self.cgroup, child.id()) {
            (Some(dir), Some(pid)) => cgroup::holds(dir, pid),
            _ => false,
        };
        if self.cgroup.is_some() && !self.contained {
            tracing::warn!(
                "the script did not join its cgroup; it is held by process group and marker"
            );
        }
    }

    /// The marker to look for in every process's environment: none when
    /// the cgroup holds the script (a /proc scan per script end saved).
    fn marker_to_scan(&self) -> &str {
        if self.contained { "" } else { &self.marker }
    }

    /// Kills every process of the hold: the child, its group, its cgroup,
    /// and, unless the cgroup holds them all, everything carrying its marker.
    pub fn kill(&self, child: Option<&mut tokio::process::Child>) {
        if let (Some(tree), Some(child)) = (&self.tree, child) {
            tree.kill(child);
        }
        end(self.cgroup.as_deref(), self.marker_to_scan());
    }

    /// Kills what is left and forgets the hold once its processes are gone
    /// (its cgroup removed, its record deleted).
    pub async fn release(mut self, child: Option<&mut tokio::process::Child>) {
        self.released = true;
        self.kill(child);
        if let Some(dir) = &self.cgroup {
            // The kernel empties a killed cgroup shortly after.
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The agent's own directory exists only while a script runs.
            if let Some(agent_dir) = dir.parent() {
                cgroup::remove_if_empty(agent_dir);
            }
        }
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Ends a hold's processes: its cgroup's, and those carrying `marker`
/// (unless empty). Returns how many processes were signalled.
fn end(cgroup: Option<&Path>, marker: &str) -> usize {
    let mut ended = 0;
    if let Some(dir) = cgroup {
        ended += cgroup::kill(dir);
        let _ = std::fs::remove_dir(dir);
    }
    if !marker.is_empty() {
        ended += marked::kill(marker);
    }
    ended
}

#[cfg(target_os = "linux")]
mod cgroup {
    //! cgroup v2: where this agent may create cgroups, joining one at a
    //! child's start, and killing one.

    use std::path::{Path, PathBuf};

    /// The cgroup v2 mount point, from /proc/self/mountinfo.
    fn mount_point() -> Option<PathBuf> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        text.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount = left.split_whitespace().nth(4)?;
            (fstype == "cgroup2").then(|| PathBuf::from(mount))
        })
    }

    /// This process's cgroup v2 path (`0::/...`).
    fn own() -> Option<String> {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| p.trim().to_string())
    }

    /// A directory for this agent's script cgroups that it can create:
    /// under its own cgroup when delegated, else at the hierarchy's root.
    /// It exists only while a script runs (or was left by a crash): this
    /// probes that it can be made, and removes it again unless it held
    /// something already.
    pub fn scripts_dir(key: &str) -> Option<PathBuf> {
        let mount = mount_point()?;
        let own = own().unwrap_or_default();
        let own_dir = mount.join(own.trim_start_matches('/'));
        for base in [own_dir.join("reach-scripts"), mount.join("reach-scripts")] {
            let dir = base.join(key);
            if std::fs::create_dir_all(&dir).is_ok() && dir.join("cgroup.procs").exists() {
                remove_if_empty(&dir);
                return Some(dir);
            }
        }
        None
    }

    /// Removes this agent's cgroup directory, and the shared one above it,
    /// when nothing is in them.
    pub fn remove_if_empty(dir: &Path) {
        if std::fs::remove_dir(dir).is_ok()
            && let Some(parent) = dir.parent()
        {
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// Creates `dir` and makes the command's child join it before it runs
    /// the script: it writes "0" (itself) to `cgroup.procs` between fork
    /// and exec. None when the cgroup cannot be made.
    pub fn join_at_start(command: &mut tokio::process::Command, dir: &Path) -> Option<PathBuf> {
        std::fs::create_dir_all(dir).ok()?;
        let procs = std::ffi::CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .ok()?;
        join_in_child(command, procs);
        Some(dir.to_path_buf())
    }

    #[allow(unsafe_code)]
    fn join_in_child(command: &mut tokio::process::Command, procs: std::ffi::CString) {
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (open, write, close) on a
        // path prepared before the fork; it allocates nothing. A failure
        // leaves the child outside the cgroup, which `Hold::attach` notices.
        unsafe {
            command.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                }
                Ok(())
            });
        }
    }

    /// Whether `pid` is in the cgroup `dir`.
    pub fn holds(dir: &Path, pid: u32) -> bool {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|text| text.lines().any(|l| l.trim() == pid.to_string()))
            .unwrap_or(false)
    }

    /// Kills every process in the cgroup `dir`; how many there were.
    pub fn kill(dir: &Path) -> usize {
        let listed = || -> Vec<i32> {
            std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        let found = listed().len();
        if found == 0 {
            return 0;
        }
        if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
            // Before Linux 5.14: signal each, until none is left (forks race).
            for _ in 0..20 {
                let pids = listed();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    super::signal_kill(pid);
                }
            }
        }
        found
    }
}

#[cfg(not(target_os = "linux"))]
mod cgroup {
    use std::path::{Path, PathBuf};

    pub fn scripts_dir(_key: &str) -> Option<PathBuf> {
        None
    }
    pub fn join_at_start(_command: &mut tokio::process::Command, _dir: &Path) -> Option<PathBuf> {
        None
    }
    pub fn holds(_dir: &Path, _pid: u32) -> bool {
        false
    }
    pub fn kill(_dir: &Path) -> usize {
        0
    }
    pub fn remove_if_empty(_dir: &Path) {}
}

#[cfg(target_os = "linux")]
mod marked {
    //! Processes found by the environment marker scripts carry.

    /// Kills every process whose environment holds `REACH_SCRIPT=<marker>`.
    pub fn kill(marker: &str) -> usize {
        let wanted = format!("{}={marker}", super::MARKER).into_bytes();
        let own = std::process::id();
        let mut killed = 0;
        // A few passes: a process may fork while the first is under way.
        for _ in 0..3 {
            let mut found = 0;
            let Ok(entries) = std::fs::read_dir("/proc") else {
                return killed;
            };
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid == own {
                    continue;
                }
                let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                    continue;
                };
                if environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_slice())
                {
                    super::signal_kill(pid as i32);
                    found += 1;
                }
            }
            killed += found;
            if found == 0 {
                break;
            }
        }
        killed
    }
}

#[cfg(not(target_os = "linux"))]
mod marked {
    pub fn kill(_marker: &str) -> usize {
        0
    }
}

/// SIGKILL to one process (never process 1 or below).
#[cfg(unix)]
#[allow(unsafe_code)]
pub(crate) fn signal_kill(pid: i32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a positive pid signals that one process; it
    // touches no memory of ours.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[cfg(not(unix))]
pub(crate) fn signal_kill(_pid: i32) {}

#[cfg(test)]
mod tests;
