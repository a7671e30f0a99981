//! The result a PutFile leaves: a small JSON record of what was put (the
//! library file's name and SHA-256, from the command as it was submitted)
//! and where the agent put it (the path it reports with its outcome), so
//! that a client asking every command for its download link gets one.
//! Written when the agent says the command completed, before the command
//! is recorded as finished; it never takes bytes from the agent but the path.

use reach_proto::agent::{CommandRef, Work};
use reach_proto::api::{CommandStatus, PutFileRecord};

use crate::SharedState;
use crate::files::Files;
use crate::store::ResultBlob;

/// Longest path recorded; a longer one is cut (at a character boundary).
const MAX_PATH: usize = 4096;

/// Stores the record of `command` when it is a running PutFile of
/// `machine_id`; anything else is left alone.
pub async fn store(
    state: &SharedState,
    machine_id: &str,
    command: &CommandRef,
    path: Option<String>,
) -> anyhow::Result<()> {
    let row = match state.store.machine_command(machine_id, command).await {
        Ok(row) => row,
        // Not this machine's, or gone: finishing it will say so.
        Err(crate::store::StoreError::NotFound(_)) => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    let Work::PutFile {
        file_name, sha256, ..
    } = row.work
    else {
        return Ok(());
    };
    if row.status != CommandStatus::InProgress || row.result.is_some() {
        return Ok(());
    }
    let record = PutFileRecord {
        file_name,
        sha256,
        path: path.map(|p| super::truncate(p, MAX_PATH)),
    };
    let bytes = serde_json::to_vec(&record)?;
    let key = Files::transcript_key(
        &command.action_id,
        command.index,
        crate::time::Micros::now(),
    );
    let stored = state.files.put_bytes(&key, bytes.into()).await?;
    state
        .store
        .record_result(
            machine_id,
            command,
            &ResultBlob {
                key,
                size: stored.size,
                sha256: Some(stored.sha256),
                chunks: None,
            },
        )
        .await?;
    Ok(())
}
