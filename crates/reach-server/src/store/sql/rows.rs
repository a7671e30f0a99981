//! The rows of each table as the database returns them (records, one field
//! per column, typed as both engines store them), and their checked
//! conversion into the store's row types: a count or size
//! that does not fit is an error naming the column, never a silent
//! wrap-around, and JSON and status text that does not parse is an error,
//! never a default. Nothing here runs a query.

use super::exec::{Row, record};
use reach_proto::agent::MachineInfo;

use super::{from_json, parse_status};
use crate::store::*;
use crate::time::Micros;

/// A stored whole number that must not be negative.
pub(super) fn unsigned(column: &str, value: i64) -> StoreResult<u64> {
    u64::try_from(value)
        .map_err(|_| StoreError::Other(anyhow::anyhow!("{column} holds {value}, not a count")))
}

/// A stored whole number that must fit in 32 bits, unsigned.
fn small(column: &str, value: i64) -> StoreResult<u32> {
    u32::try_from(value)
        .map_err(|_| StoreError::Other(anyhow::anyhow!("{column} holds {value}, out of range")))
}

/// A stored flag (0 or 1).
fn flag(value: i64) -> bool {
    value != 0
}

record! {
    struct TenantRecord {
        id: String,
        name: String,
    }
}

pub(super) fn tenant(row: &Row) -> StoreResult<Tenant> {
    let r = TenantRecord::from_row(row)?;
    Ok(Tenant {
        id: r.id,
        name: r.name,
    })
}

record! {
    struct AppRecord {
        client_id: String,
        tenant_id: String,
        name: String,
        secret_hash: String,
        roles: String,
        disabled: i64,
        token_generation: i64,
        device_groups: String,
    }
}

pub(super) fn app(row: &Row) -> StoreResult<App> {
    let r = AppRecord::from_row(row)?;
    Ok(App {
        client_id: r.client_id,
        tenant_id: r.tenant_id,
        name: r.name,
        secret_hash: r.secret_hash,
        roles: from_json(&r.roles)?,
        disabled: flag(r.disabled),
        token_generation: unsigned("apps.token_generation", r.token_generation)?,
        device_groups: from_json(&r.device_groups)?,
    })
}

record! {
    struct UserRecord {
        name: String,
        tenant_id: String,
        password_hash: String,
        roles: String,
        disabled: i64,
        token_generation: i64,
        device_groups: String,
    }
}

pub(super) fn user(row: &Row) -> StoreResult<User> {
    let r = UserRecord::from_row(row)?;
    Ok(User {
        name: r.name,
        tenant_id: r.tenant_id,
        password_hash: r.password_hash,
        roles: from_json(&r.roles)?,
        disabled: flag(r.disabled),
        token_generation: unsigned("users.token_generation", r.token_generation)?,
        device_groups: from_json(&r.device_groups)?,
    })
}

record! {
    struct MachineRecord {
        id: String,
        tenant_id: String,
        computer_dns_name: String,
        os_platform: String,
        os_version: String,
        os_architecture: String,
        agent_version: String,
        ip_addresses: String,
        last_ip: Option<String>,
        tags: String,
        first_seen_us: i64,
        last_seen_us: i64,
        connected: i64,
        isolation_state: String,
    }
}

pub(super) fn machine(row: &Row) -> StoreResult<MachineRow> {
    let r = MachineRecord::from_row(row)?;
    Ok(MachineRow {
        id: r.id,
        tenant_id: r.tenant_id,
        info: MachineInfo {
            hostname: r.computer_dns_name,
            os_platform: r.os_platform,
            os_version: r.os_version,
            os_architecture: r.os_architecture,
            agent_version: r.agent_version,
            ip_addresses: from_json(&r.ip_addresses)?,
        },
        last_ip: r.last_ip,
        tags: from_json(&r.tags)?,
        first_seen: Micros(r.first_seen_us),
        last_seen: Micros(r.last_seen_us),
        connected: flag(r.connected),
        isolation_state: r.isolation_state,
    })
}

record! {
    struct LibraryRecord {
        tenant_id: String,
        file_name: String,
        sha256: String,
        size: i64,
        description: Option<String>,
        has_parameters: i64,
        parameters_description: Option<String>,
        created_by: String,
        last_updated_by: Option<String>,
        creation_us: i64,
        last_updated_us: i64,
        signature: Option<String>,
    }
}

pub(super) fn library(row: &Row) -> StoreResult<LibraryRow> {
    let r = LibraryRecord::from_row(row)?;
    Ok(LibraryRow {
        tenant_id: r.tenant_id,
        file_name: r.file_name,
        sha256: r.sha256,
        size: unsigned("library_files.size", r.size)?,
        description: r.description,
        has_parameters: flag(r.has_parameters),
        parameters_description: r.parameters_description,
        created_by: r.created_by,
        last_updated_by: r.last_updated_by,
        creation_time: Micros(r.creation_us),
        last_updated_time: Micros(r.last_updated_us),
        signature: r.signature,
    })
}

record! {
    struct ActionRecord {
        id: String,
        tenant_id: String,
        machine_id: String,
        computer_dns_name: String,
        requestor: String,
        requestor_comment: Option<String>,
        status: String,
        created_us: i64,
        updated_us: i64,
        cancellation_requestor: Option<String>,
        cancellation_comment: Option<String>,
        cancelled_us: Option<i64>,
        batch_id: Option<String>,
        kind: String,
    }
}

/// An action without its commands (`load_commands` adds them).
pub(super) fn action(row: &Row) -> StoreResult<ActionRow> {
    let r = ActionRecord::from_row(row)?;
    Ok(ActionRow {
        id: r.id,
        tenant_id: r.tenant_id,
        machine_id: r.machine_id,
        computer_dns_name: r.computer_dns_name,
        requestor: r.requestor,
        requestor_comment: r.requestor_comment,
        status: parse_status(&r.status)?,
        created: Micros(r.created_us),
        last_update: Micros(r.updated_us),
        cancellation_requestor: r.cancellation_requestor,
        cancellation_comment: r.cancellation_comment,
        cancellation_time: r.cancelled_us.map(Micros),
        batch_id: r.batch_id,
        kind: reach_proto::api::ActionType::parse(&r.kind)
            .ok_or_else(|| super::other(anyhow::anyhow!("unknown action type {:?}", r.kind)))?,
        commands: Vec::new(),
    })
}

record! {
    struct CommandRecord {
        idx: i64,
        command: String,
        work: String,
        status: String,
        start_us: Option<i64>,
        end_us: Option<i64>,
        errors: String,
        timeout_secs: i64,
        result_key: Option<String>,
        result_size: Option<i64>,
        result_sha256: Option<String>,
        result_chunks: Option<i64>,
        file_sha256: Option<String>,
        result_deleted_us: Option<i64>,
    }
}

pub(super) fn command(row: &Row) -> StoreResult<CommandRow> {
    let r = CommandRecord::from_row(row)?;
    let result = match r.result_key {
        Some(key) => Some(ResultBlob {
            key,
            size: unsigned("commands.result_size", r.result_size.unwrap_or(0))?,
            sha256: r.result_sha256,
            chunks: r
                .result_chunks
                .map(|n| small("commands.result_chunks", n))
                .transpose()?,
        }),
        None => None,
    };
    Ok(CommandRow {
        index: small("commands.idx", r.idx)?,
        command: from_json(&r.command)?,
        work: from_json(&r.work)?,
        status: parse_status(&r.status)?,
        start_time: r.start_us.map(Micros),
        end_time: r.end_us.map(Micros),
        errors: from_json(&r.errors)?,
        timeout_secs: unsigned("commands.timeout_secs", r.timeout_secs)?,
        result,
        file_sha256: r.file_sha256,
        result_deleted: r.result_deleted_us.map(Micros),
    })
}

record! {
    struct AuditRecord {
        seq: i64,
        time_us: i64,
        tenant_id: String,
        actor_type: String,
        actor_id: String,
        actor_name: String,
        source_ip: Option<String>,
        operation: String,
        machine_id: Option<String>,
        target: Option<String>,
        outcome: String,
        http_status: Option<i64>,
        details: String,
        prev_hash: String,
        hash: String,
    }
}

pub(super) fn audit(row: &Row) -> StoreResult<AuditEntry> {
    let r = AuditRecord::from_row(row)?;
    let http_status = r
        .http_status
        .map(|status| {
            u16::try_from(status).map_err(|_| {
                StoreError::Other(anyhow::anyhow!(
                    "audit_log.http_status holds {status}, not a status"
                ))
            })
        })
        .transpose()?;
    Ok(AuditEntry {
        seq: r.seq,
        event: AuditEvent {
            time: Micros(r.time_us),
            tenant_id: r.tenant_id,
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            actor_name: r.actor_name,
            source_ip: r.source_ip,
            operation: r.operation,
            machine_id: r.machine_id,
            target: r.target,
            outcome: r.outcome,
            http_status,
            details: r.details,
        },
        prev_hash: r.prev_hash,
        hash: r.hash,
    })
}

record! {
    struct EnrollmentTokenRecord {
        token_hash: String,
        tenant_id: String,
        created_us: i64,
        expires_us: Option<i64>,
        max_uses: Option<i64>,
        uses: i64,
        revoked_us: Option<i64>,
    }
}

pub(super) fn enrollment_token(row: &Row) -> StoreResult<EnrollmentTokenRow> {
    let r = EnrollmentTokenRecord::from_row(row)?;
    Ok(EnrollmentTokenRow {
        id: r.token_hash.chars().take(12).collect(),
        tenant_id: r.tenant_id,
        created: Micros(r.created_us),
        expires: r.expires_us.map(Micros),
        max_uses: r
            .max_uses
            .map(|n| unsigned("enrollment_tokens.max_uses", n))
            .transpose()?,
        uses: unsigned("enrollment_tokens.uses", r.uses)?,
        revoked: r.revoked_us.map(Micros),
    })
}

record! {
    struct ChunkRecord {
        n: i64,
        raw_size: i64,
        raw_crc32: Option<i64>,
        raw_sha256: String,
        stored_size: i64,
        stored_sha256: String,
        attempts: i64,
    }
}

pub(super) fn chunk(row: &Row) -> StoreResult<ChunkRow> {
    let r = ChunkRecord::from_row(row)?;
    Ok(ChunkRow {
        n: small("result_chunks.n", r.n)?,
        raw_size: unsigned("result_chunks.raw_size", r.raw_size)?,
        raw_crc32: r
            .raw_crc32
            .map(|crc| small("result_chunks.raw_crc32", crc))
            .transpose()?,
        raw_sha256: r.raw_sha256,
        stored_size: unsigned("result_chunks.stored_size", r.stored_size)?,
        stored_sha256: r.stored_sha256,
        attempts: small("result_chunks.attempts", r.attempts)?,
    })
}

record! {
    struct BatchRecord {
        id: String,
        tenant_id: String,
        requestor: String,
        requestor_id: String,
        requestor_comment: Option<String>,
        status: String,
        paused_reason: Option<String>,
        commands: String,
        machine_count: i64,
        wave_size: Option<i64>,
        max_failed_percent: Option<i64>,
        current_wave: i64,
        created_us: i64,
        updated_us: i64,
        expires_us: i64,
        cancellation_requestor: Option<String>,
        cancellation_comment: Option<String>,
    }
}

/// A batch without its counts (`load_counts` adds them).
pub(super) fn batch(row: &Row) -> StoreResult<BatchRow> {
    let r = BatchRecord::from_row(row)?;
    let rollout = match r.wave_size {
        Some(size) => Some(Rollout {
            wave_size: unsigned("batches.wave_size", size)?,
            max_failed_percent: u8::try_from(r.max_failed_percent.unwrap_or(100)).map_err(
                |_| StoreError::Other(anyhow::anyhow!("batches.max_failed_percent out of range")),
            )?,
        }),
        None => None,
    };
    Ok(BatchRow {
        id: r.id,
        tenant_id: r.tenant_id,
        requestor: r.requestor,
        requestor_id: r.requestor_id,
        requestor_comment: r.requestor_comment,
        status: BatchStatus::parse(&r.status).ok_or_else(|| {
            StoreError::Other(anyhow::anyhow!("unknown batch status {:?}", r.status))
        })?,
        paused_reason: r.paused_reason,
        commands: from_json(&r.commands)?,
        machine_count: unsigned("batches.machine_count", r.machine_count)?,
        counts: BatchCounts::default(),
        rollout,
        current_wave: unsigned("batches.current_wave", r.current_wave)?,
        created: Micros(r.created_us),
        last_update: Micros(r.updated_us),
        expires: Micros(r.expires_us),
        cancellation_requestor: r.cancellation_requestor,
        cancellation_comment: r.cancellation_comment,
    })
}
