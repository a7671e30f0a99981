//! What the server process sets about itself before it serves, once, from
//! its `main`: umask 077, so that every file it or a library creates is
//! its account's alone (the data directory holds the signing keys), and,
//! with glibc, a fixed threshold above which allocations are mapped and
//! unmapped on their own, so that large buffers freed after a burst (argon2
//! blocks, transfer buffers) go back to the system instead of staying in
//! malloc's arenas. This module never touches anything but the process's
//! own settings.

/// Applies both settings. Safe to call more than once.
pub fn harden() {
    restrict_umask();
    return_large_frees();
}

/// Makes every file and directory this process creates from now on private
/// (umask 077).
#[cfg(unix)]
#[allow(unsafe_code)]
fn restrict_umask() {
    // SAFETY: umask only sets the process's file-mode mask; it cannot fail
    // and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

#[cfg(not(unix))]
fn restrict_umask() {}

/// Allocations of 1 MiB and more get their own mapping, returned to the
/// system when freed. Without a fixed threshold glibc raises it after each
/// large free, up to 32 MiB, and keeps later large blocks in its per-thread
/// arenas for good.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn return_large_frees() {
    // SAFETY: mallopt changes allocator tuning only; it is thread-safe and
    // takes plain integers.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    if ok != 1 {
        tracing::warn!("could not set malloc's mmap threshold");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_frees() {}
