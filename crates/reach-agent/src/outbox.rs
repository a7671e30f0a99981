//! The durable outbox: how each command ended, and its result file (a
//! RunScript transcript), kept on disk until the server acknowledges it.
//! A result survives a lost connection, an unreachable server and an agent
//! restart; it is removed only after the server's `Ack`.
//!
//! Layout: `<dir>/<seq>.json` holds an `Entry`; `<dir>/<seq>.result` its
//! result bytes. Files are written to a temporary name, synced and renamed,
//! so a crash leaves either the old state or the new one.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use reach_proto::agent::{CommandRef, Outcome};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// One finished command waiting for the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its place in the outbox (increasing).
    pub seq: u64,
    /// Which command.
    pub command: CommandRef,
    /// How it ended.
    pub outcome: Outcome,
    /// True when a result file must be uploaded before the outcome is sent.
    pub has_result: bool,
    /// True once the result file was uploaded (or the server refused it).
    pub uploaded: bool,
}

/// Finished commands on disk until the server acknowledges them, so a restart loses none.
pub struct Outbox {
    dir: PathBuf,
    entries: Mutex<VecDeque<Entry>>,
    ready: Notify,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

impl Outbox {
    /// Opens the outbox in `dir`, loading what a previous run left.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = item?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            match serde_json::from_str::<Entry>(&text) {
                Ok(entry) => entries.push(entry),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "ignoring an unreadable outbox entry")
                }
            }
        }
        entries.sort_by_key(|e| e.seq);
        if !entries.is_empty() {
            tracing::info!(
                entries = entries.len(),
                "results from before the restart wait for delivery"
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            entries: Mutex::new(entries.into()),
            ready: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Where the result of entry `seq` waits for its upload.
    pub fn result_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.result"))
    }

    /// Stores how a command ended (and its result bytes) durably.
    pub fn push(
        &self,
        command: CommandRef,
        outcome: Outcome,
        result: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        let mut entries = self.lock();
        let seq = entries.back().map_or(0, |e| e.seq + 1).max(now_seq());
        if let Some(bytes) = result {
            write_atomic(&self.result_path(seq), bytes).context("saving a result in the outbox")?;
        }
        let entry = Entry {
            seq,
            command,
            outcome,
            has_result: result.is_some(),
            uploaded: false,
        };
        write_atomic(
            &self.entry_path(seq),
            serde_json::to_string(&entry)?.as_bytes(),
        )
        .context("saving an outcome in the outbox")?;
        entries.push_back(entry);
        drop(entries);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest entry not yet acknowledged.
    pub fn front(&self) -> Option<Entry> {
        self.lock().front().cloned()
    }

    /// Records that an entry's result no longer needs uploading.
    pub fn mark_uploaded(&self, seq: u64) -> anyhow::Result<()> {
        let mut entries = self.lock();
        if let Some(entry) = entries.iter_mut().find(|e| e.seq == seq) {
            entry.uploaded = true;
            write_atomic(
                &self.entry_path(seq),
                serde_json::to_string(entry)?.as_bytes(),
            )?;
        }
        let _ = std::fs::remove_file(self.result_path(seq));
        Ok(())
    }

    /// The server acknowledged this command: forget it.
    pub fn acknowledge(&self, command: &CommandRef) {
        let mut entries = self.lock();
        let Some(at) = entries.iter().position(|e| &e.command == command) else {
            return;
        };
        let entry = entries.remove(at).expect("position is in range");
        drop(entries);
        let _ = std::fs::remove_file(self.result_path(entry.seq));
        let _ = std::fs::remove_file(self.entry_path(entry.seq));
        self.ready.notify_one();
    }

    /// Commands whose outcome is not yet acknowledged.
    pub fn held(&self) -> Vec<CommandRef> {
        self.lock().iter().map(|e| e.command.clone()).collect()
    }

    /// Resolves when an entry may be waiting.
    pub async fn ready(&self) {
        if self.lock().is_empty() {
            self.ready.notified().await;
        }
    }
}

/// A sequence number that keeps growing across restarts.
fn now_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(index: u32) -> CommandRef {
        CommandRef {
            action_id: "a".into(),
            index,
        }
    }

    #[test]
    fn entries_survive_a_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox
            .push(
                command(0),
                Outcome::Completed {
                    sha256: None,
                    path: None,
                },
                Some(b"transcript"),
            )
            .unwrap();
        outbox
            .push(
                command(1),
                Outcome::Failed {
                    errors: vec!["x".into()],
                    timed_out: false,
                },
                None,
            )
            .unwrap();
        let first = outbox.front().unwrap();
        assert_eq!(
            std::fs::read(outbox.result_path(first.seq)).unwrap(),
            b"transcript"
        );
        drop(outbox);

        let reopened = Outbox::open(dir.path()).unwrap();
        assert_eq!(reopened.held(), vec![command(0), command(1)]);
        let first = reopened.front().unwrap();
        assert!(first.has_result && !first.uploaded);
        reopened.mark_uploaded(first.seq).unwrap();
        reopened.acknowledge(&command(0));
        drop(reopened);

        let again = Outbox::open(dir.path()).unwrap();
        assert_eq!(again.held(), vec![command(1)]);
        again.acknowledge(&command(1));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
