//! The agent gateway: enrolment, the one WebSocket each agent holds
//! (`gateway`), and the HTTP endpoints agents stream files through: a
//! command's payload and transcript (`payload`), a GetFile's chunks
//! (`chunks`, checked by `verify`). How a command ended, with a small
//! transcript inside the message, is `finished`. Every transfer endpoint starts from the
//! same checks (`extract`). Connections register in the `hub`, which wakes them the
//! moment a command is created.
//!
//! What a machine must run is always read from the store, so a lost
//! wake-up costs latency, never work. This module never imports the API or
//! the console.

pub mod chunks;
mod dispatch;
pub mod extract;
pub mod finished;
pub mod gateway;
pub mod inline_cache;
pub mod machine_info;
pub mod output;
pub mod payload;
pub mod put_record;
mod raw_chunks;
pub mod verify;

/// Claims a node on PostgreSQL runs at once (its agent connections asking
/// for their next command). Half of its pool of 32, so that results,
/// uploads and the API keep connections of their own while a batch wakes a
/// whole fleet. On SQLite there is no such limit: claims queue for the
/// writer, and the more queue the more share a COMMIT (measured: a limit of
/// 16 made a 10,000-machine batch on SQLite 1.86 → 2.3 s).
pub const CLAIMS_AT_ONCE: usize = 16;

use axum::http::HeaderMap;

use crate::SharedState;
use crate::auth;
use crate::error::ApiError;
use crate::files::FileError;

/// A machine, authenticated by its credential.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// The machine's id.
    pub machine_id: String,
    /// The machine's tenant.
    pub tenant_id: String,
}

/// Checks `Authorization: Bearer <machine_id>.<secret>`.
pub async fn authenticate(
    state: &SharedState,
    headers: &HeaderMap,
) -> Result<AgentIdentity, ApiError> {
    let unauthorized = || ApiError::Unauthorized("Invalid or missing agent credential".into());
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(unauthorized)?;
    let (machine_id, secret) = token.split_once('.').ok_or_else(unauthorized)?;
    if machine_id.len() != 40 || !machine_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unauthorized());
    }
    let credential = match state.store.machine_credential(machine_id).await {
        Ok(c) => c,
        Err(crate::store::StoreError::NotFound(_)) => return Err(unauthorized()),
        Err(err) => return Err(err.into()),
    };
    let presented = auth::sha256_hex(secret);
    if !auth::constant_time_eq(presented.as_bytes(), credential.credential_hash.as_bytes()) {
        return Err(unauthorized());
    }
    // Told only to the holder of the credential: the agent then deletes it.
    if credential.offboarded {
        return Err(ApiError::Offboarded(
            "This machine was offboarded: its agent deletes its credential and stops. Enroll the device again to use it".into(),
        ));
    }
    if credential.revoked {
        return Err(unauthorized());
    }
    Ok(AgentIdentity {
        machine_id: machine_id.to_string(),
        tenant_id: credential.tenant_id,
    })
}

/// `text` cut to at most `max` bytes, at a character boundary: what a
/// device says is bounded before it is stored.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The answer to an upload that could not be stored; `too_large` words the size limit.
pub(crate) fn upload_failed(err: FileError, too_large: impl FnOnce(u64) -> ApiError) -> ApiError {
    match err {
        FileError::Body(why) if why.contains(crate::http::slow_body::STALLED) => {
            ApiError::RequestTimeout(format!("The upload was cut off: {why}"))
        }
        FileError::Body(why) => ApiError::BadRequest(format!("The upload was interrupted: {why}")),
        FileError::TooLarge(max) => too_large(max),
        other => ApiError::internal(other),
    }
}
