//! Retention: deleting what is kept no longer than configured
//! (`[retention]`). Results and collected files of actions that ended
//! `results_days` ago leave the object store (the action, its commands'
//! statuses, errors and collected files' SHA-256 stay in the database);
//! library files no action used for `unused_library_days` are deleted when
//! that is set; audit entries older than `audit_days` are pruned in the
//! same transaction that records the pruning in the trail.
//!
//! Every deletion is an audit entry (actor `system`). Each step is
//! idempotent, so several nodes may run it at once: the store decides who
//! forgot what, and only that node records it. Objects are deleted before
//! their records, so a crash in between leaves a record to retry, never an
//! unreachable object.

use std::time::Duration;

use serde_json::json;

use crate::SharedState;
use crate::audit::{self, Actor};
use crate::files::Files;
use crate::store::{ExpiredResult, StoreError};
use crate::time::Micros;

const DAY_SECS: u64 = 24 * 3600;

/// Results handled per store round trip.
const PAGE: u32 = 500;

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Stored results deleted.
    pub results: u64,
    /// Library files deleted.
    pub library_files: u64,
    /// Audit entries deleted.
    pub audit_entries: u64,
}

/// Runs retention every `interval_secs`, first one interval after start.
pub async fn run(state: SharedState) {
    let every = Duration::from_secs(state.config.retention.interval_secs.max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_once(&state, Micros::now()).await {
            Ok(report) if report != Report::default() => {
                tracing::info!(
                    results = report.results,
                    library.files = report.library_files,
                    audit.entries = report.audit_entries,
                    "retention deleted what was past its period"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::error!(error = format!("{err:#}"), "retention failed"),
        }
    }
}

/// One retention pass as of `now`.
pub async fn run_once(state: &SharedState, now: Micros) -> anyhow::Result<Report> {
    let cfg = &state.config.retention;
    let mut report = Report::default();
    if cfg.results_days > 0 {
        report.results = delete_results(state, now.minus_secs(cfg.results_days * DAY_SECS)).await?;
    }
    if cfg.unused_library_days > 0 {
        let cutoff = now.minus_secs(cfg.unused_library_days * DAY_SECS);
        report.library_files = prune_library(state, cutoff).await?;
    }
    if cfg.audit_days > 0 {
        let cutoff = now.minus_secs(cfg.audit_days * DAY_SECS);
        let event = audit::event(
            "",
            Actor::system(),
            audit::Operation::AuditPruned,
            crate::audit::Outcome::Succeeded,
            json!({ "retentionDays": cfg.audit_days }),
        );
        if let Some(entry) = state.store.prune_audit(cutoff, event).await? {
            let details: serde_json::Value = serde_json::from_str(&entry.event.details)?;
            report.audit_entries = details["removed"].as_u64().unwrap_or(0);
        }
    }
    Ok(report)
}

async fn delete_results(state: &SharedState, ended_before: Micros) -> anyhow::Result<u64> {
    let mut deleted = 0;
    loop {
        let page = state.store.expired_results(ended_before, PAGE).await?;
        let mut forgotten = 0;
        for expired in &page {
            if let Err(err) = delete_objects(&state.files, expired).await {
                // Left for the next run; its record still names the objects.
                tracing::warn!(action.id = %expired.command.action_id, command.index = expired.command.index, error = %err, "deleting an expired result failed");
                continue;
            }
            if state
                .store
                .forget_result(&expired.command, Micros::now())
                .await?
            {
                forgotten += 1;
                let event = audit::command_event(
                    &expired.tenant_id,
                    Actor::system(),
                    &expired.machine_id,
                    &expired.command,
                    crate::audit::Operation::ResultDeleted,
                    crate::audit::Outcome::Succeeded,
                    json!({
                        "retentionDays": state.config.retention.results_days,
                        "bytes": expired.result.as_ref().map(|r| r.size),
                    }),
                );
                state.auditor.record(event).await;
            }
        }
        deleted += forgotten;
        // A short page was the last; a page where nothing could be deleted
        // would come back the same.
        if page.len() < PAGE as usize || forgotten == 0 {
            return Ok(deleted);
        }
    }
}

/// Deletes the chunks of GetFiles whose action ended without their result
/// (cancelled, failed, timed out): they can never become a result, so they
/// go at once rather than after `results_days`. The sweeper calls this.
pub async fn discard_abandoned(state: &SharedState) -> anyhow::Result<u64> {
    let mut discarded = 0;
    for abandoned in state.store.abandoned_chunks(PAGE).await? {
        delete_objects(&state.files, &abandoned).await?;
        if state
            .store
            .forget_result(&abandoned.command, Micros::now())
            .await?
        {
            discarded += 1;
            let event = audit::command_event(
                &abandoned.tenant_id,
                Actor::system(),
                &abandoned.machine_id,
                &abandoned.command,
                crate::audit::Operation::PartialResultDeleted,
                crate::audit::Outcome::Succeeded,
                json!({ "chunks": abandoned.chunks.len() }),
            );
            state.auditor.record(event).await;
        }
    }
    Ok(discarded)
}

/// The objects of a result: one object, or its chunks, plus any chunks a
/// transfer left behind.
async fn delete_objects(files: &Files, expired: &ExpiredResult) -> anyhow::Result<()> {
    let command = &expired.command;
    // A result kept in the database goes with the row (`forget_result`).
    if let Some(blob) = expired
        .result
        .as_ref()
        .filter(|b| b.inline_command().is_none())
    {
        match blob.chunks {
            Some(chunks) => {
                for part in Files::result_parts(&blob.key, chunks) {
                    files.delete(&part).await?;
                }
            }
            None => files.delete(&blob.key).await?,
        }
    }
    if !expired.chunks.is_empty() {
        // A cut-short transfer's chunks, with the frame `complete` may have
        // stored, under today's prefix or (from before segments) the old one.
        let prefix = Files::chunks_prefix(&command.action_id, command.index);
        let legacy = Files::legacy_chunks_prefix(&command.action_id, command.index);
        // With no chunks counted, a result's parts are its frame alone.
        for frame in Files::result_parts(&prefix, 0) {
            files.delete(&frame).await?;
        }
        for n in &expired.chunks {
            files.delete(&Files::chunk_key(&prefix, *n)).await?;
            files.delete(&Files::chunk_key(&legacy, *n)).await?;
        }
    }
    Ok(())
}

async fn prune_library(state: &SharedState, unused_since: Micros) -> anyhow::Result<u64> {
    let mut pruned = 0;
    for file in state.store.unused_library_files(unused_since).await? {
        match state
            .store
            .delete_library_file(&file.tenant_id, &file.file_name)
            .await
        {
            Ok(_) => {}
            // Another node, or an analyst, deleted it meanwhile.
            Err(StoreError::NotFound(_)) => continue,
            Err(err) => return Err(err.into()),
        }
        release_library_blob(state, &file.tenant_id, &file.sha256).await;
        pruned += 1;
        let mut event = audit::event(
            &file.tenant_id,
            Actor::system(),
            crate::audit::Operation::LibraryFilePruned,
            crate::audit::Outcome::Succeeded,
            json!({
                "sha256": file.sha256,
                "unusedDays": state.config.retention.unused_library_days,
            }),
        );
        event.target = Some(file.file_name.clone());
        state.auditor.record(event).await;
    }
    Ok(pruned)
}

/// Deletes a library blob unless a library entry or an active action still needs it.
pub async fn release_library_blob(state: &SharedState, tenant_id: &str, sha256: &str) {
    match state.store.library_blob_in_use(tenant_id, sha256).await {
        Ok(false) => {
            if let Err(err) = state
                .files
                .delete(&Files::library_key(tenant_id, sha256))
                .await
            {
                tracing::warn!(sha256 = %sha256, error = %err, "deleting an unused library blob failed");
            }
        }
        Ok(true) => {}
        Err(err) => {
            tracing::warn!(sha256 = %sha256, error = %err, "checking library blob use failed")
        }
    }
}
