//! Facts about this device (name, OS, architecture, addresses) and the
//! platform parts of running processes: starting a script in a process
//! group of its own and killing its whole tree (the group on Unix, a Job
//! object on Windows). Windows and macOS compile through cfg-gated code.

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

/// This device's facts, as the agent reports them.
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

/// What it takes to kill a script's whole process tree: its process group
/// on Unix, a Job object on Windows (which also ends every process left in
/// it when the tree is dropped).
pub struct ProcessTree {
    #[cfg(unix)]
    pgid: Option<u32>,
    #[cfg(windows)]
    job: Option<job::Job>,
}

impl ProcessTree {
    /// Takes hold of the tree of a child started with `own_process_group`.
    pub fn attach(child: &tokio::process::Child) -> Self {
        #[cfg(unix)]
        {
            Self { pgid: child.id() }
        }
        #[cfg(windows)]
        {
            let job = child.raw_handle().and_then(job::Job::for_process);
            if job.is_none() {
                tracing::warn!(
                    "could not put the script in a Job object; cancel stops the script only"
                );
            }
            Self { job }
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = child;
            Self {}
        }
    }

    /// Kills every process of the tree (the child itself at least).
    pub fn kill(&self, child: &mut tokio::process::Child) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid {
            kill_group(pgid);
        }
        #[cfg(windows)]
        if let Some(job) = &self.job {
            job.terminate();
        }
        let _ = child.start_kill();
    }
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

/// Windows Job objects, the Windows way to hold a process tree.
#[cfg(windows)]
#[allow(unsafe_code)]
mod job {
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation,
        SetInformationJobObject, TerminateJobObject,
    };

    /// A Job object that kills its processes when closed.
    pub struct Job(HANDLE);

    // SAFETY: a job handle is a kernel object reference, usable from any thread.
    unsafe impl Send for Job {}
    unsafe impl Sync for Job {}

    impl Job {
        /// A new job holding `process` (and, from then on, its children).
        pub fn for_process(process: std::os::windows::io::RawHandle) -> Option<Self> {
            // SAFETY: plain Win32 calls on handles we own or were given; the
            // info struct lives across the call and its size is passed.
            unsafe {
                let job = CreateJobObjectW(std::ptr::null(), std::ptr::null());
                if job.is_null() {
                    return None;
                }
                let mut info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
                info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
                let set = SetInformationJobObject(
                    job,
                    JobObjectExtendedLimitInformation,
                    &info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION
                        as *const core::ffi::c_void,
                    std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
                );
                if set == 0 || AssignProcessToJobObject(job, process as HANDLE) == 0 {
                    CloseHandle(job);
                    return None;
                }
                Some(Self(job))
            }
        }

        pub fn terminate(&self) {
            // SAFETY: the handle is open until drop.
            unsafe {
                TerminateJobObject(self.0, 1);
            }
        }
    }

    impl Drop for Job {
        fn drop(&mut self) {
            // SAFETY: closing our own handle once; KILL_ON_JOB_CLOSE ends what is left.
            unsafe {
                CloseHandle(self.0);
            }
        }
    }
}
