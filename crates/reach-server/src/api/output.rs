//! `GET /api/machineactions/{id}/commands/{index}/output`: a RunScript's
//! output while it runs. With `Accept: text/event-stream`, Server-Sent
//! Events: `stdout` and `stderr` events (`{"text", "offset"}`) numbered by
//! the stored pieces' sequence, which `Last-Event-ID` resumes after, then
//! `end` (`{"commandStatus", "exitCode"}`); otherwise JSON of what exists
//! so far. Once the command ended, what its transcript holds past the
//! stored pieces (a piece lost with a connection, the notes of a cut
//! output, an agent without live output) comes as one last piece per
//! stream, so the streamed text is always the transcript's.
//!
//! A follower reads from the store at its own pace, woken by `followers`
//! or its poll: a slow one holds only its page in memory and slows nobody.
//! Each stream lasts at most `MOST_FOLLOW`; clients resume from the last
//! id (EventSource does so by itself), which checks their token again.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::TryStreamExt;
use reach_proto::agent::{CommandRef, Stream, Work};
use reach_proto::api::{CommandOutput, OutputEnd, OutputMachine, OutputPiece, ScriptTranscript};
use tokio::time::Instant;

use super::{Access, authorize};
use crate::SharedState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::followers::{Followed, Following};
use crate::http::Path;
use crate::store::{CommandRow, OutputChunk, OutputProgress, PageSize};

/// A follower reads the store again at least this often, woken or not
/// (wake-ups from another node may be lost; an end recorded elsewhere
/// wakes nobody here).
pub const POLL: Duration = Duration::from_secs(1);

/// What a follower reads at once: at most 256 pieces, and no piece past
/// the first 256 Ki characters (a piece is at most 64 KiB), so that it
/// holds at most about a MiB whatever the pieces.
pub const PAGE: PageSize = PageSize {
    pieces: 256,
    chars: 256 * 1024,
};

/// Whether `page` may have left pieces behind (read again at once).
pub fn may_have_more<'a>(page: impl Iterator<Item = &'a OutputChunk>) -> bool {
    let (pieces, chars) = page.fold((0, 0u64), |(n, c), p| {
        (n + 1, c + p.text.chars().count() as u64)
    });
    PAGE.may_have_more(pieces, chars)
}

/// The longest one stream lasts before the server closes it; the client
/// resumes with `Last-Event-ID`.
pub const MOST_FOLLOW: Duration = Duration::from_secs(600);

/// A comment line this often keeps proxies from closing a quiet stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The largest transcript read to complete a stream (as batch results).
const MOST_TRANSCRIPT: u64 = super::batches::results::MAX_INLINE_TRANSCRIPT;

/// Uploaded transcripts (up to `MOST_TRANSCRIPT` each) read at once on this
/// node to end streams: a batch's thousand followers reaching their ends
/// together hold at most this many in memory, not a thousand.
static TRANSCRIPT_READS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// JSON answers (each up to both streams whole, tens of MiB at most) built
/// at once on this node; the others wait their turn.
static WHOLE_ANSWERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// Whether the client asked for Server-Sent Events.
pub fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// The `Last-Event-ID` header, if any.
pub fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// An SSE response of `events`, kept open by comments.
pub fn sse<S>(events: S) -> Response
where
    S: futures::Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies that buffer (nginx) pass each event on at once.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

/// A piece as a `stdout` or `stderr` event, naming `machine` on a batch's
/// stream (empty on a command's).
pub fn piece_event(
    id: &str,
    stream: Stream,
    offset: u64,
    text: &str,
    machine: &OutputMachine,
) -> Event {
    let data = OutputPiece {
        text: text.to_string(),
        offset,
        machine: machine.clone(),
    };
    Event::default()
        .id(id)
        .event(stream.as_str())
        .data(serde_json::to_string(&data).expect("output events serialise"))
}

/// The `end` event.
pub fn end_event(id: &str, end: &End, machine: &OutputMachine) -> Event {
    let data = OutputEnd {
        command_status: end.command_status.clone(),
        exit_code: end.exit_code,
        machine: machine.clone(),
    };
    Event::default()
        .id(id)
        .event("end")
        .data(serde_json::to_string(&data).expect("output events serialise"))
}

/// How a command ended, and what of its output the stored pieces lack.
pub struct End {
    /// The command's status.
    pub command_status: String,
    /// The script's exit code, when a transcript says it.
    pub exit_code: Option<i32>,
    /// The rest of each stream past the stored pieces: (stream, offset, text).
    pub rest: Vec<(Stream, u64, String)>,
}

/// How `progress`'s command ended: its status, exit code, and the
/// transcript's text past the stored pieces of each stream.
pub async fn end_of(
    state: &SharedState,
    tenant_id: &str,
    command: &CommandRef,
    progress: &OutputProgress,
) -> End {
    let transcript = transcript(state, tenant_id, command, &progress.command).await;
    let mut rest = Vec::new();
    if let Some(transcript) = &transcript {
        for (stream, text, stored) in [
            (
                Stream::Stdout,
                &transcript.script_output,
                progress.stdout_live,
            ),
            (
                Stream::Stderr,
                &transcript.script_errors,
                progress.stderr_live,
            ),
        ] {
            match text.get(stored as usize..) {
                Some("") => {}
                Some(tail) => rest.push((stream, stored, tail.to_string())),
                None => {
                    tracing::warn!(action.id = %command.action_id, command.index = command.index, stream = stream.as_str(), "the transcript is shorter than the live output stored; its end is not streamed")
                }
            }
        }
    }
    End {
        command_status: progress.command.status.to_string(),
        exit_code: transcript.map(|t| t.exit_code),
        rest,
    }
}

/// The command's transcript, when it has one this server may read whole.
async fn transcript(
    state: &SharedState,
    tenant_id: &str,
    command: &CommandRef,
    row: &CommandRow,
) -> Option<ScriptTranscript> {
    let blob = row.result.as_ref()?;
    let bytes = match blob.inline_command() {
        Some(_) => state.store.inline_result(tenant_id, command).await.ok()?,
        None if blob.size <= MOST_TRANSCRIPT => {
            let _turn = TRANSCRIPT_READS.acquire().await.ok()?;
            let read = async {
                let (_, stream) = state.files.get_stream(&blob.key).await?;
                let chunks: Vec<Bytes> = stream.try_collect().await?;
                Ok::<_, crate::files::FileError>(chunks.concat())
            };
            match read.await {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::warn!(action.id = %command.action_id, command.index = command.index, error = %err, "reading a transcript to end its output failed");
                    return None;
                }
            }
        }
        None => return None,
    };
    serde_json::from_slice(&bytes).ok()
}

/// `GET /api/machineactions/{id}/commands/{index}/output`.
pub async fn command_output(
    State(state): State<SharedState>,
    principal: Principal,
    headers: HeaderMap,
    Path((id, index)): Path<(String, String)>,
    notes: crate::audit::Notes,
) -> ApiResult<Response> {
    notes.target(format!("{id}/commands/{index}/output"));
    authorize(&state, &principal, Access::ReadOutput).await?;
    let index: u32 = index.trim().parse().map_err(|_| {
        ApiError::InvalidInput(format!("The command index must be a number, got '{index}'"))
    })?;
    let action = super::machine_actions::visible_action(&state, &principal, &id).await?;
    notes.machine(&action.machine_id);
    let command = super::machine_actions::command_of(&action, index)?;
    if !matches!(command.work, Work::RunScript { .. }) {
        return Err(ApiError::BadRequest(format!(
            "Command {index} is a {}; only RunScript commands have output",
            command.command.kind
        )));
    }
    let command = CommandRef {
        action_id: action.id,
        index,
    };
    if !wants_events(&headers) {
        return Ok(Json(so_far(&state, &principal.tenant_id, &command).await?).into_response());
    }
    let after = match last_event_id(&headers) {
        None => 0,
        Some(id) => id.parse::<u64>().map_err(|_| {
            ApiError::InvalidInput(format!(
                "Last-Event-ID must be the id of an event of this stream, got '{id}'"
            ))
        })?,
    };
    notes.detail("stream", "events");
    let following = state
        .followers
        .follow(Followed::Action(command.action_id.clone()));
    let source = CommandSource {
        state,
        tenant_id: principal.tenant_id,
        command,
        cursor: after,
    };
    Ok(follow(source, following))
}

/// The JSON form: the output so far.
async fn so_far(
    state: &SharedState,
    tenant_id: &str,
    command: &CommandRef,
) -> ApiResult<CommandOutput> {
    let _turn = WHOLE_ANSWERS.acquire().await.map_err(ApiError::internal)?;
    // Read before the pieces: a command ended then has all its pieces stored.
    let progress = state.store.output_progress(command).await?;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let mut after = 0;
    loop {
        let page = state.store.output_after(command, after, PAGE).await?;
        let full = may_have_more(page.iter());
        for OutputChunk {
            seq, stream, text, ..
        } in page
        {
            after = seq;
            match stream {
                Stream::Stdout => stdout.push_str(&text),
                Stream::Stderr => stderr.push_str(&text),
            }
        }
        if !full {
            break;
        }
    }
    let ended = progress.ended();
    let mut exit_code = None;
    if ended {
        let end = end_of(state, tenant_id, command, &progress).await;
        for (stream, _, text) in end.rest {
            match stream {
                Stream::Stdout => stdout.push_str(&text),
                Stream::Stderr => stderr.push_str(&text),
            }
        }
        exit_code = end.exit_code;
    }
    Ok(CommandOutput {
        stdout,
        stderr,
        complete: ended,
        exit_code,
    })
}

/// What a stream of events reads from the store.
pub trait Source: Send + 'static {
    /// Queues the events of what is new since the last read.
    fn read(
        &mut self,
        queue: &mut VecDeque<Event>,
    ) -> impl std::future::Future<Output = ApiResult<Read>> + Send;
    /// What it follows, for the log.
    fn name(&self) -> String;
}

/// What a read found.
pub enum Read {
    /// Something, and maybe more: read again at once.
    More,
    /// Everything stored is read (what it found, if anything, is queued):
    /// wait for a wake-up or the poll before reading again.
    Nothing,
    /// The end: the stream closes once what is queued is sent.
    Over,
}

/// Server-Sent Events from `source`, read when `following` wakes or every
/// `POLL`, for at most `MOST_FOLLOW`.
pub fn follow<S: Source>(source: S, following: Following) -> Response {
    let follower = Follower {
        source,
        queue: VecDeque::new(),
        following,
        caught_up: false,
        over: false,
        until: Instant::now() + MOST_FOLLOW,
    };
    sse(futures::stream::unfold(follower, Follower::next))
}

/// One client following a source.
struct Follower<S> {
    source: S,
    queue: VecDeque<Event>,
    following: Following,
    /// The last read found everything stored: wait before the next.
    caught_up: bool,
    over: bool,
    until: Instant,
}

impl<S: Source> Follower<S> {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((Ok(event), self));
            }
            if self.over || Instant::now() >= self.until {
                return None;
            }
            if self.caught_up {
                // A piece stored since the read has already marked the
                // wake-up, so this returns at once then.
                tokio::select! {
                    _ = self.following.wake.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tokio::time::sleep_until(self.until) => {}
                }
            }
            match self.source.read(&mut self.queue).await {
                Ok(Read::More) => self.caught_up = false,
                Ok(Read::Over) => self.over = true,
                Ok(Read::Nothing) => self.caught_up = true,
                Err(err) => {
                    // The client resumes from its last id.
                    tracing::warn!(follows = %self.source.name(), error = %err, "reading live output failed; closing the stream");
                    return None;
                }
            }
        }
    }
}

/// One command's output.
struct CommandSource {
    state: SharedState,
    tenant_id: String,
    command: CommandRef,
    /// The last id sent (or the client's `Last-Event-ID`).
    cursor: u64,
}

impl Source for CommandSource {
    fn name(&self) -> String {
        format!(
            "action {} command {}",
            self.command.action_id, self.command.index
        )
    }

    async fn read(&mut self, queue: &mut VecDeque<Event>) -> ApiResult<Read> {
        let progress = self.state.store.output_progress(&self.command).await?;
        let page = self
            .state
            .store
            .output_after(&self.command, self.cursor, PAGE)
            .await?;
        let full = may_have_more(page.iter());
        let none = OutputMachine::default();
        for chunk in page {
            self.cursor = chunk.seq;
            let id = chunk.seq.to_string();
            queue.push_back(piece_event(
                &id,
                chunk.stream,
                chunk.offset,
                &chunk.text,
                &none,
            ));
        }
        if full {
            return Ok(Read::More);
        }
        if !progress.ended() {
            return Ok(Read::Nothing);
        }
        // Ended: the transcript's rest of each stream, then the end, each
        // with the next number after the last piece's.
        let end = end_of(&self.state, &self.tenant_id, &self.command, &progress).await;
        let last = progress.last_seq;
        for (stream, offset, text) in &end.rest {
            let id = last + 1 + u64::from(*stream == Stream::Stderr);
            if id > self.cursor {
                queue.push_back(piece_event(&id.to_string(), *stream, *offset, text, &none));
            }
        }
        queue.push_back(end_event(&(last + 3).to_string(), &end, &none));
        Ok(Read::Over)
    }
}
