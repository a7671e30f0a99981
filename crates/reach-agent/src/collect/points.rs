//! The data points of the collectors (Linux, macOS), in the package's
//! order: each a file (or a folder of files) of the package and where its
//! bytes come from. Adding one adds a row to `CollectionSummaryReport.csv`.

/// Where a data point's bytes come from.
pub(super) enum Source {
    /// A program and its arguments.
    Command(&'static [&'static str]),
    /// The first of these programs that exists (a fallback for another
    /// distribution's tools).
    FirstOf(&'static [&'static [&'static str]]),
    /// One file.
    File(&'static str),
    /// Every regular file in these folders (not below them).
    Folders(&'static [&'static str]),
    /// Every file of this name in each home folder, and root's.
    Histories(&'static [&'static str]),
    /// A listing of these folders and what they hold.
    Listing(&'static [&'static str]),
}

/// One row of the summary: a file (or a folder of files) in the package.
pub(super) struct DataPoint {
    /// Its path in the package.
    pub(super) path: &'static str,
    /// Where its bytes come from.
    pub(super) source: Source,
}

const fn point(path: &'static str, source: Source) -> DataPoint {
    DataPoint { path, source }
}

/// Linux's data points, in the package's order.
pub(super) const LINUX: &[DataPoint] = &[
    point(
        "Processes/processes.txt",
        Source::Command(&[
            "ps",
            "-eo",
            "pid,ppid,user,lstart,etime,args",
            "--width",
            "4096",
        ]),
    ),
    point(
        "Network connections/connections.txt",
        Source::Command(&["ss", "-tanpu"]),
    ),
    point(
        "Network connections/listening ports.txt",
        Source::Command(&["ss", "-tlnpu"]),
    ),
    point(
        "Network connections/arp.txt",
        Source::Command(&["ip", "neigh", "show"]),
    ),
    point(
        "Network connections/routes.txt",
        Source::Command(&["ip", "route", "show", "table", "all"]),
    ),
    point(
        "Network connections/addresses.txt",
        Source::Command(&["ip", "addr", "show"]),
    ),
    point(
        "Network connections/firewall (nftables).txt",
        Source::Command(&["nft", "list", "ruleset"]),
    ),
    point(
        "Network connections/firewall (iptables).txt",
        Source::Command(&["iptables-save"]),
    ),
    point(
        "System information/uname.txt",
        Source::Command(&["uname", "-a"]),
    ),
    point(
        "System information/os-release.txt",
        Source::File("/etc/os-release"),
    ),
    point(
        "System information/uptime.txt",
        Source::Command(&["uptime"]),
    ),
    point(
        "Disk volumes/block devices.txt",
        Source::Command(&["lsblk", "-a", "-o", "NAME,SIZE,TYPE,FSTYPE,MOUNTPOINT,UUID"]),
    ),
    point("Disk volumes/usage.txt", Source::Command(&["df", "-h"])),
    point("Disk volumes/mounts.txt", Source::File("/proc/mounts")),
    point(
        "Open files/open files.txt",
        Source::Command(&["lsof", "-n", "-P"]),
    ),
    point("Users and groups/passwd.txt", Source::File("/etc/passwd")),
    point("Users and groups/group.txt", Source::File("/etc/group")),
    point(
        "Users and groups/sign-in history.txt",
        Source::Command(&["last", "-F", "-w"]),
    ),
    point("Users and groups/sudoers.txt", Source::File("/etc/sudoers")),
    point(
        "Users and groups/sudoers.d",
        Source::Folders(&["/etc/sudoers.d"]),
    ),
    point("Scheduled tasks/crontab.txt", Source::File("/etc/crontab")),
    point(
        "Scheduled tasks/cron",
        Source::Folders(&["/etc/cron.d", "/var/spool/cron/crontabs", "/var/spool/cron"]),
    ),
    point(
        "Scheduled tasks/systemd timers.txt",
        Source::Command(&["systemctl", "list-timers", "--all", "--no-pager"]),
    ),
    point(
        "Services/services.txt",
        Source::Command(&[
            "systemctl",
            "list-units",
            "--type=service",
            "--all",
            "--no-pager",
        ]),
    ),
    point("Kernel modules/modules.txt", Source::File("/proc/modules")),
    point(
        "Shell history",
        Source::Histories(&[
            ".bash_history",
            ".zsh_history",
            ".sh_history",
            ".ash_history",
        ]),
    ),
    point(
        "Temp directories/listing.txt",
        Source::Listing(&["/tmp", "/var/tmp", "/dev/shm"]),
    ),
    point(
        "Installed programs/packages.txt",
        Source::FirstOf(&[
            &[
                "dpkg-query",
                "-W",
                "-f",
                "${Package}\t${Version}\t${Architecture}\n",
            ],
            &["rpm", "-qa"],
            &["apk", "info", "-v"],
        ]),
    ),
];

/// macOS's data points, in Defender's macOS folders (cfg-free text, chosen
/// at run time; not run by any test here: no macOS machine).
pub(super) const MACOS: &[DataPoint] = &[
    point(
        "Processes/processes.txt",
        Source::Command(&["ps", "-axo", "pid,ppid,user,lstart,etime,command"]),
    ),
    point(
        "Network connections/connections.txt",
        Source::Command(&["netstat", "-anv"]),
    ),
    point(
        "Network connections/listening ports.txt",
        Source::Command(&["lsof", "-nP", "-iTCP", "-sTCP:LISTEN"]),
    ),
    point(
        "Network connections/arp.txt",
        Source::Command(&["arp", "-an"]),
    ),
    point(
        "Network connections/routes.txt",
        Source::Command(&["netstat", "-rn"]),
    ),
    point(
        "Network connections/addresses.txt",
        Source::Command(&["ifconfig", "-a"]),
    ),
    point(
        "Network connections/firewall (pf).txt",
        Source::Command(&["pfctl", "-sr"]),
    ),
    point(
        "Network connections/proxy settings.txt",
        Source::Command(&["scutil", "--proxy"]),
    ),
    point(
        "System information/system.txt",
        Source::Command(&[
            "system_profiler",
            "SPSoftwareDataType",
            "SPHardwareDataType",
        ]),
    ),
    point(
        "System information/uname.txt",
        Source::Command(&["uname", "-a"]),
    ),
    point(
        "Disk volumes/disks.txt",
        Source::Command(&["diskutil", "list"]),
    ),
    point("Disk volumes/usage.txt", Source::Command(&["df", "-h"])),
    point(
        "Open files/open files.txt",
        Source::Command(&["lsof", "-n", "-P"]),
    ),
    point(
        "Users and groups/users.txt",
        Source::Command(&["dscl", ".", "-list", "/Users", "UniqueID"]),
    ),
    point(
        "Users and groups/groups.txt",
        Source::Command(&["dscl", ".", "-list", "/Groups", "PrimaryGroupID"]),
    ),
    point(
        "Users and groups/sign-in history.txt",
        Source::Command(&["last"]),
    ),
    point("Users and groups/sudoers.txt", Source::File("/etc/sudoers")),
    point(
        "Users and groups/sudoers.d",
        Source::Folders(&["/etc/sudoers.d"]),
    ),
    point(
        "Scheduled tasks/launchd.txt",
        Source::Command(&["launchctl", "list"]),
    ),
    point(
        "Scheduled tasks/launch agents and daemons",
        Source::Folders(&["/Library/LaunchAgents", "/Library/LaunchDaemons"]),
    ),
    point(
        "Scheduled tasks/cron",
        Source::Folders(&["/usr/lib/cron/tabs"]),
    ),
    point(
        "Kernel modules/kernel extensions.txt",
        Source::FirstOf(&[&["kmutil", "showloaded"], &["kextstat"]]),
    ),
    point(
        "Applications/applications.txt",
        Source::Listing(&["/Applications"]),
    ),
    point(
        "Shell history",
        Source::Histories(&[".bash_history", ".zsh_history", ".sh_history"]),
    ),
    point(
        "Temp directories/listing.txt",
        Source::Listing(&["/tmp", "/private/var/tmp"]),
    ),
    point(
        "Installed programs/packages.txt",
        Source::Command(&["pkgutil", "--pkgs"]),
    ),
];
