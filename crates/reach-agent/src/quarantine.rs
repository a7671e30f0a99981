//! The quarantine folder: executables that StopAndQuarantineFile took off
//! the device, each kept as `<id>.bin` (mode 0400, in a 0700 folder beside
//! the state file, so only root reads it and nothing runs it) with a record
//! `<id>.json` of where it came from (path, mode, owner, SHA-1, when, which
//! action). `reach-agent restore-quarantine` lists them and puts one back
//! where it was, with its mode and owner.
//!
//! This module only keeps and restores files; finding and stopping the
//! processes is the command's (`commands/quarantine.rs`). It never
//! overwrites a file: a restore to a path that exists again is refused.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// Where a quarantined file came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its name in the folder (`<id>.bin`, `<id>.json`).
    pub id: String,
    /// The path it was taken from.
    pub original_path: String,
    /// Hex SHA-1 of its bytes.
    pub sha1: String,
    /// Its permission bits there.
    pub mode: u32,
    /// Its owner there.
    pub uid: u32,
    /// Its group there.
    pub gid: u32,
    /// When it was taken (seconds since 1970).
    pub quarantined_at: u64,
    /// The action that took it.
    pub action_id: String,
}

/// The quarantine folder of an agent.
pub struct Vault {
    dir: PathBuf,
}

impl Vault {
    /// The folder beside the state file `state_path`.
    pub fn open(state_path: &Path) -> Self {
        Self {
            dir: state_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("quarantine"),
        }
    }

    /// Keeps the bytes read from `source` (for a running executable,
    /// `/proc/PID/exe`, which reads even a deleted file) as the file found
    /// at `original`, checking they still hash to `sha1`.
    pub fn keep(
        &self,
        source: &Path,
        original: &str,
        sha1: &str,
        action_id: &str,
    ) -> anyhow::Result<Entry> {
        create_private_dir(&self.dir)?;
        let metadata =
            std::fs::metadata(source).with_context(|| format!("reading {}", source.display()))?;
        let id = format!(
            "{}-{:016x}",
            &sha1[..12.min(sha1.len())],
            rand::random::<u64>()
        );
        let bin = self.dir.join(format!("{id}.bin"));
        let copied = copy_hashing(source, &bin, 0o400)?;
        if copied != sha1 {
            let _ = std::fs::remove_file(&bin);
            bail!("{original} changed while it was read (its SHA-1 is now {copied})");
        }
        let (mode, uid, gid) = owner(&metadata);
        let entry = Entry {
            id: id.clone(),
            original_path: original.to_string(),
            sha1: sha1.to_string(),
            mode,
            uid,
            gid,
            quarantined_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            action_id: action_id.to_string(),
        };
        reach_client::private_file::write_private(
            &self.dir.join(format!("{id}.json")),
            &serde_json::to_vec_pretty(&entry)?,
        )?;
        Ok(entry)
    }

    /// Every quarantined file, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let read = match std::fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(entries),
            Err(err) => return Err(err).context("reading the quarantine folder"),
        };
        for file in read.flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read(&path)?;
                entries.push(
                    serde_json::from_slice::<Entry>(&text)
                        .with_context(|| format!("reading {}", path.display()))?,
                );
            }
        }
        entries.sort_by(|a, b| (a.quarantined_at, &a.id).cmp(&(b.quarantined_at, &b.id)));
        Ok(entries)
    }

    /// Puts quarantined file `id` back where it was, with its mode and
    /// owner, and forgets it. Refused when something is at that path now.
    pub fn restore(&self, id: &str) -> anyhow::Result<Entry> {
        let entry = self
            .list()?
            .into_iter()
            .find(|e| e.id == id)
            .with_context(|| {
                format!("no quarantined file {id}: `reach-agent restore-quarantine` lists them")
            })?;
        let original = Path::new(&entry.original_path);
        if original.symlink_metadata().is_ok() {
            bail!(
                "{} exists again; move it away first, the quarantined copy is never written over it",
                entry.original_path
            );
        }
        let bin = self.dir.join(format!("{id}.bin"));
        let copied = copy_hashing(&bin, original, entry.mode & 0o7777)?;
        if copied != entry.sha1 {
            let _ = std::fs::remove_file(original);
            bail!("the quarantined copy no longer hashes to {}", entry.sha1);
        }
        set_owner(original, entry.uid, entry.gid)?;
        std::fs::remove_file(&bin)?;
        std::fs::remove_file(self.dir.join(format!("{id}.json")))?;
        Ok(entry)
    }
}

/// Hex SHA-1 of what `path` reads.
pub fn sha1_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha1::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

/// Copies `from` to a new file `to` (never over one) with `mode`, synced;
/// the hex SHA-1 of the bytes copied.
fn copy_hashing(from: &Path, to: &Path, mode: u32) -> anyhow::Result<String> {
    let mut source =
        std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut target = options
        .open(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let mut hasher = Sha1::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = source.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        target.write_all(&buffer[..n])?;
    }
    target.sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(hex::encode(hasher.finalize()))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(unix)]
fn owner(metadata: &std::fs::Metadata) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    (metadata.mode(), metadata.uid(), metadata.gid())
}

#[cfg(not(unix))]
fn owner(_metadata: &std::fs::Metadata) -> (u32, u32, u32) {
    (0o644, 0, 0)
}

#[cfg(unix)]
fn set_owner(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("giving {} back to its owner", path.display()))
}

#[cfg(not(unix))]
fn set_owner(_path: &Path, _uid: u32, _gid: u32) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_kept_private_listed_and_restored_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(&dir.path().join("state.json"));
        let original = dir.path().join("tool");
        std::fs::write(&original, b"#!/bin/sh\necho bad\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&original, std::fs::Permissions::from_mode(0o751)).unwrap();
        }
        let sha1 = sha1_of(&original).unwrap();
        let path = original.display().to_string();
        assert!(vault.keep(&original, &path, &"0".repeat(40), "a").is_err());
        let entry = vault.keep(&original, &path, &sha1, "a1").unwrap();
        std::fs::remove_file(&original).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let kept = dir.path().join(format!("quarantine/{}.bin", entry.id));
            let mode = std::fs::metadata(kept).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o777,
                0o400,
                "only its owner reads it, nothing runs it"
            );
            let folder = std::fs::metadata(dir.path().join("quarantine")).unwrap();
            assert_eq!(folder.permissions().mode() & 0o777, 0o700);
        }
        assert_eq!(vault.list().unwrap(), vec![entry.clone()]);
        std::fs::write(&original, b"something new").unwrap();
        assert!(vault.restore(&entry.id).is_err(), "never written over");
        std::fs::remove_file(&original).unwrap();
        let restored = vault.restore(&entry.id).unwrap();
        assert_eq!(restored.original_path, path);
        assert_eq!(sha1_of(&original).unwrap(), sha1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&original).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o751);
        }
        assert!(vault.list().unwrap().is_empty());
        assert!(vault.restore(&entry.id).is_err());
    }
}
