//! `GET /api/batches/{id}/output?index=N`: the live output of command N on
//! every machine of a batch, as one stream of Server-Sent Events: the
//! events of `api::output`, their JSON also carrying `machineId`,
//! `computerDnsName` and `actionId`. A machine's `end` follows all its
//! pieces; once every machine's command ended, a `done` event, and the
//! stream closes.
//!
//! An event's id is `{piece}.{end time}.{action}`: the last piece sent
//! (numbered in the batch's sequence) and the last end sent (ends go in
//! the order of their time, then action id), so that `Last-Event-ID`
//! resumes both. Machines outside the caller's device groups are left out.

use std::collections::{HashMap, VecDeque};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::response::sse::Event;
use reach_proto::agent::CommandRef;
use reach_proto::api::OutputMachine;

use super::visible_batch;
use crate::SharedState;
use crate::api::output::{
    PAGE, Read, Source, end_event, end_of, follow, last_event_id, may_have_more, piece_event,
};
use crate::api::{Access, authorize};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::followers::Followed;
use crate::http::Path;
use crate::store::{BatchEnd, Scope};
use crate::time::Micros;

/// `GET /api/batches/{id}/output?index=N`.
pub async fn batch_output(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    notes: crate::audit::Notes,
) -> ApiResult<Response> {
    notes.target(&id);
    authorize(&state, &principal, Access::ReadOutput).await?;
    let batch = visible_batch(&state, &principal, &id).await?;
    let index = super::results::command_index(raw.as_deref(), batch.commands.len())?;
    notes.detail("index", index);
    if !batch.commands[index as usize]
        .kind
        .eq_ignore_ascii_case("RunScript")
    {
        return Err(ApiError::BadRequest(format!(
            "Command {index} is a {}; only RunScript commands have output",
            batch.commands[index as usize].kind
        )));
    }
    let cursor = match last_event_id(&headers) {
        None => Cursor::default(),
        Some(text) => Cursor::parse(&text).ok_or_else(|| {
            ApiError::InvalidInput(format!(
                "Last-Event-ID must be the id of an event of this stream, got '{text}'"
            ))
        })?,
    };
    let following = state.followers.follow(Followed::Batch(batch.id.clone()));
    let source = BatchSource {
        state,
        principal,
        batch_id: batch.id,
        index,
        cursor,
        visible: HashMap::new(),
        all_ended: false,
    };
    Ok(follow(source, following))
}

/// Where a client of a batch's stream stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor {
    /// The last piece sent.
    piece: u64,
    /// The last end sent: its time and action.
    end: (i64, String),
}

impl Cursor {
    fn id(&self) -> String {
        format!("{}.{}.{}", self.piece, self.end.0, self.end.1)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(3, '.');
        let piece = parts.next()?.parse().ok()?;
        let time = parts.next()?.parse().ok()?;
        let action = parts.next()?;
        if action.len() > 64
            || !action
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return None;
        }
        Some(Self {
            piece,
            end: (time, action.to_string()),
        })
    }
}

/// A batch's output.
struct BatchSource {
    state: SharedState,
    principal: Principal,
    batch_id: String,
    index: u32,
    cursor: Cursor,
    /// Machines seen, and whether the caller may see them.
    visible: HashMap<String, bool>,
    /// Every machine's command was seen ended.
    all_ended: bool,
}

impl Source for BatchSource {
    fn name(&self) -> String {
        format!("batch {} command {}", self.batch_id, self.index)
    }

    async fn read(&mut self, queue: &mut VecDeque<Event>) -> ApiResult<Read> {
        let store = self.state.store.clone();
        // Ends first: a command read as ended has all its pieces stored.
        let (time, action) = &self.cursor.end;
        let ends = store
            .batch_output_ends(
                &self.batch_id,
                self.index,
                (Micros(*time), action),
                PAGE.pieces,
            )
            .await?;
        let page = store
            .batch_output_after(&self.batch_id, self.index, self.cursor.piece, PAGE)
            .await?;
        let full = may_have_more(page.iter().map(|p| &p.chunk));
        let mut any = false;
        for piece in page {
            self.cursor.piece = piece.chunk.seq;
            if !self.may_see(&piece.machine_id).await {
                continue;
            }
            let extra = machine(
                &piece.machine_id,
                &piece.computer_dns_name,
                &piece.action_id,
            );
            let chunk = &piece.chunk;
            let id = self.cursor.id();
            queue.push_back(piece_event(
                &id,
                chunk.stream,
                chunk.offset,
                &chunk.text,
                &extra,
            ));
            any = true;
        }
        let ends_read = ends.len();
        for end in ends {
            // Its pieces first, all of them (a full page may not hold them
            // all yet; pieces forgotten after the keep period never come).
            if full && end.progress.last_seq > self.cursor.piece {
                return Ok(Read::More);
            }
            self.end(end, queue).await;
            any = true;
        }
        if full || ends_read > 0 {
            return Ok(Read::More);
        }
        if any {
            return Ok(Read::Nothing);
        }
        // Nothing new: over once every machine's command ended, and the
        // ends were read once more after that was seen.
        let batch = store
            .get_batch(&self.principal.tenant_id, &self.batch_id)
            .await?;
        let counts = batch.counts;
        if counts.pending + counts.in_progress > 0 {
            return Ok(Read::Nothing);
        }
        if self.all_ended {
            // Said, so that a client tells the end from a stream closed
            // after `MOST_FOLLOW`.
            let done = Event::default()
                .id(self.cursor.id())
                .event("done")
                .data("{}");
            queue.push_back(done);
            return Ok(Read::Over);
        }
        self.all_ended = true;
        Ok(Read::More)
    }
}

impl BatchSource {
    async fn may_see(&mut self, machine_id: &str) -> bool {
        if self.principal.scope == Scope::All {
            return true;
        }
        if let Some(known) = self.visible.get(machine_id) {
            return *known;
        }
        let visible = crate::api::visible_machine(&self.state, &self.principal, machine_id)
            .await
            .is_ok();
        self.visible.insert(machine_id.to_string(), visible);
        visible
    }

    async fn end(&mut self, end: BatchEnd, queue: &mut VecDeque<Event>) {
        self.cursor.end = (end.ended.0, end.action_id.clone());
        if !self.may_see(&end.machine_id).await {
            return;
        }
        let command = CommandRef {
            action_id: end.action_id.clone(),
            index: self.index,
        };
        let tenant_id = self.principal.tenant_id.clone();
        let how = end_of(&self.state, &tenant_id, &command, &end.progress).await;
        let extra = machine(&end.machine_id, &end.computer_dns_name, &end.action_id);
        let id = self.cursor.id();
        for (stream, offset, text) in &how.rest {
            let event = piece_event(&id, *stream, *offset, text, &extra);
            queue.push_back(event);
        }
        queue.push_back(end_event(&id, &how, &extra));
    }
}

fn machine(machine_id: &str, name: &str, action_id: &str) -> OutputMachine {
    OutputMachine {
        machine_id: Some(machine_id.to_string()),
        computer_dns_name: Some(name.to_string()),
        action_id: Some(action_id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resume_both_cursors_and_refuse_anything_else() {
        let cursor = Cursor {
            piece: 42,
            end: (1_700_000_000_000_000, "0b5c-aa".into()),
        };
        assert_eq!(Cursor::parse(&cursor.id()), Some(cursor));
        assert_eq!(
            Cursor::parse(&Cursor::default().id()),
            Some(Cursor::default())
        );
        for bad in ["", "1", "1.2", "x.1.a", "1.2.a b", "1.2.a\u{0}"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }
}
