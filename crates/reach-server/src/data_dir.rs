//! Keeping the server's local files private. The data directory holds the
//! SQLite database (with the token-signing and download-link keys), stored
//! library files and results, and dev credentials: another local account
//! that reads it can forge tokens. Directories Reach makes are 0700 and the
//! files 0600; an existing directory or database that group or others can
//! reach stops the server with an error naming the path and the fix.
//! `process::harden` (called first by the binary) sets umask 077, so every
//! file the process creates is private, including those made by libraries.
//!
//! Unix only: elsewhere these functions do nothing and the directory's ACLs
//! are the operator's to set (not tested here). This module never loosens a
//! permission and never deletes anything.

use std::path::Path;

use anyhow::Context;

/// The SQLite files of the embedded database.
pub const DATABASE_FILES: [&str; 3] = ["reach.db", "reach.db-wal", "reach.db-shm"];

/// Creates `dir` (and missing parents) readable by the owner only, and
/// Writes a file only its owner can read (0600 on Unix).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    reach_client::private_file::write_private(path, contents)
        .with_context(|| format!("writing {}", path.display()))
}

/// refuses one that group or others can reach.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    check_private(dir)
}

/// The embedded database's directory: private, as are its database files
/// (made 0600 before SQLite opens them, so its journal files are too).
pub fn prepare_database_dir(dir: &Path) -> anyhow::Result<()> {
    create_private_dir(dir)?;
    for name in DATABASE_FILES {
        check_private(&dir.join(name))?;
    }
    let database = dir.join(DATABASE_FILES[0]);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&database)
        .with_context(|| format!("creating {}", database.display()))?;
    Ok(())
}

/// Fails when `path` exists and its group or others have any permission.
#[cfg(unix)]
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let fix = if metadata.is_dir() {
            "chmod -R go-rwx"
        } else {
            "chmod 600"
        };
        anyhow::bail!(
            "{} is readable by other accounts (mode {mode:o}): it holds Reach's signing keys and \
             results. Run `{fix} {}` and start again. If other accounts may have read it, \
             replace the keys (docs/security.md, 'Compromised server')",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn check_private(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_the_database_are_private() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/b");
        prepare_database_dir(&dir).unwrap();
        assert_eq!(mode(&top.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("reach.db")), 0o600);
        prepare_database_dir(&dir).unwrap();
    }

    #[test]
    fn a_readable_directory_or_database_is_refused_by_name() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("data");
        prepare_database_dir(&dir).unwrap();
        std::fs::set_permissions(dir.join("reach.db"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = format!("{:#}", prepare_database_dir(&dir).unwrap_err());
        assert!(err.contains("reach.db") && err.contains("644"), "{err}");
        std::fs::set_permissions(dir.join("reach.db"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = format!("{:#}", create_private_dir(&dir).unwrap_err());
        assert!(
            err.contains(&dir.display().to_string()) && err.contains("go-rwx"),
            "{err}"
        );
    }
}
