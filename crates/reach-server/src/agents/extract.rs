//! What every agent transfer endpoint checks first, as extractors: the
//! machine, authenticated by its credential (`AgentIdentity`), and the
//! command of the path's `{action}/{index}`, which must belong to one of
//! that machine's actions (`OwnCommand`): another machine's command answers
//! 404, exactly as one that does not exist. Nothing here reads a body.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use reach_proto::agent::CommandRef;
use reach_proto::api::CommandStatus;
use serde::Deserialize;

use super::{AgentIdentity, authenticate};
use crate::SharedState;
use crate::error::{ApiError, ApiResult};
use crate::http::Path;
use crate::store::{CommandRow, StoreError};

impl FromRequestParts<SharedState> for AgentIdentity {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers).await
    }
}

/// A command index or chunk number of a transfer path.
pub fn parse_index(text: &str) -> ApiResult<u32> {
    text.parse()
        .map_err(|_| ApiError::InvalidInput(format!("'{text}' is not a number")))
}

/// The `{action}/{index}` of a transfer path.
#[derive(Deserialize)]
struct CommandPath {
    action: String,
    index: String,
}

/// A command of one of the calling machine's actions, as stored now.
pub struct OwnCommand {
    /// The machine asking.
    pub identity: AgentIdentity,
    /// Which command.
    pub command: CommandRef,
    /// The command as stored.
    pub row: CommandRow,
}

impl OwnCommand {
    /// 409 unless the command is InProgress (handed to the agent, not ended).
    pub fn running(&self) -> ApiResult<()> {
        if self.row.status != CommandStatus::InProgress {
            return Err(ApiError::Conflict(format!(
                "Command {} is {}, not InProgress",
                self.command.index, self.row.status
            )));
        }
        Ok(())
    }
}

impl FromRequestParts<SharedState> for OwnCommand {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let identity = AgentIdentity::from_request_parts(parts, state).await?;
        let Path(CommandPath { action, index }) =
            Path::<CommandPath>::from_request_parts(parts, state).await?;
        let command = CommandRef {
            action_id: action,
            index: parse_index(&index)?,
        };
        let row = match state
            .store
            .machine_command(&identity.machine_id, &command)
            .await
        {
            Ok(row) => row,
            Err(StoreError::NotFound(_)) => {
                return Err(ApiError::ResourceNotFound(format!(
                    "Command {} of action {} was not found",
                    command.index, command.action_id
                )));
            }
            Err(err) => return Err(err.into()),
        };
        Ok(Self {
            identity,
            command,
            row,
        })
    }
}
