//! What an agent does once its machine is offboarded (the server answers
//! its connection with 410, after the Offboard command reported): it
//! releases isolation, deletes its credential (the state file), its outbox
//! and working folder, leaves a note (`offboarded` beside the state file)
//! and stops. At its next start the note makes it stop at once, saying so,
//! rather than fail over and over under a service manager; enrolling again
//! removes the note.
//!
//! This module never deletes anything but the agent's own files.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Config;
use crate::commands::isolate::Isolation;

/// The note an offboarded agent leaves beside its state file.
pub fn note_path(state_path: &Path) -> PathBuf {
    state_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("offboarded")
}

/// When this device was offboarded, if its note says so and it has no
/// credential since.
pub fn offboarded(config: &Config) -> Option<String> {
    if config.state_path.exists() {
        return None;
    }
    let note = std::fs::read_to_string(note_path(&config.state_path)).ok()?;
    Some(note.trim().to_string())
}

/// Leaves Reach: isolation released, credential, outbox and working folder
/// deleted, the note written.
pub async fn leave(config: &Config, isolation: &Isolation) -> anyhow::Result<()> {
    if let Err(failure) = isolation.leave().await {
        tracing::error!(error = %failure.message, "releasing isolation while offboarding failed");
    }
    for dir in [config.outbox_dir(), config.work_dir()] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "removing a folder while offboarding failed")
            }
        }
    }
    let when = format!(
        "{} (seconds since 1970)",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );
    reach_client::private_file::write_private(&note_path(&config.state_path), when.as_bytes())
        .context("writing the offboarded note")?;
    std::fs::remove_file(&config.state_path)
        .with_context(|| format!("deleting the credential {}", config.state_path.display()))?;
    tracing::warn!("this machine was offboarded: its credential is deleted; the agent stops");
    Ok(())
}
