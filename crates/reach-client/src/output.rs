//! Live output (Reach's extension): a command's output so far, and its
//! Server-Sent Events followed to their end, resuming with `Last-Event-ID`
//! when the server closes a stream early or the connection drops.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reach_proto::api::{CommandOutput, OutputEnd, OutputPiece};
use reqwest::Method;

use super::{Client, ClientError, Result, check, json, segment};

/// The longest event line read (a piece is at most 64 KiB of text, which
/// JSON may escape to six times that).
const MOST_LINE: usize = 4 * 1024 * 1024;

/// Connections in a row that may fail before following gives up.
const MOST_FAILURES: u32 = 5;

/// One event of an output stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEvent {
    /// Standard output.
    Stdout(OutputPiece),
    /// Standard error.
    Stderr(OutputPiece),
    /// A command ended (on a batch's stream, one machine's).
    End(OutputEnd),
    /// Every machine of a batch ended.
    Done,
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The events of one response, parsed as they arrive.
struct Events {
    body: Body,
    buf: Vec<u8>,
    id: Option<String>,
    event: String,
    data: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            id: None,
            event: String::new(),
            data: String::new(),
        }
    }

    /// The next event and the stream's last id; None once the body ends.
    async fn next(&mut self) -> Result<Option<(Option<String>, OutputEvent)>> {
        loop {
            while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(event) = self.line(line)? {
                    return Ok(Some((self.id.clone(), event)));
                }
            }
            if self.buf.len() > MOST_LINE {
                return Err(ClientError::Protocol(
                    "an event line of the output stream is too long".into(),
                ));
            }
            match self.body.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => return Ok(None),
            }
        }
    }

    fn line(&mut self, line: &str) -> Result<Option<OutputEvent>> {
        if line.is_empty() {
            let (event, data) = (
                std::mem::take(&mut self.event),
                std::mem::take(&mut self.data),
            );
            let bad = |err: serde_json::Error| {
                ClientError::Protocol(format!("an output event's data is not as expected: {err}"))
            };
            return Ok(match event.as_str() {
                "stdout" => Some(OutputEvent::Stdout(
                    serde_json::from_str(&data).map_err(bad)?,
                )),
                "stderr" => Some(OutputEvent::Stderr(
                    serde_json::from_str(&data).map_err(bad)?,
                )),
                "end" => Some(OutputEvent::End(serde_json::from_str(&data).map_err(bad)?)),
                "done" => Some(OutputEvent::Done),
                // Comments, and events of later servers.
                _ => None,
            });
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            "id" => self.id = Some(value.to_string()),
            _ => {}
        }
        Ok(None)
    }
}

/// An output stream followed to its end: a command's `end`, or a batch's
/// `done`. Resumes after the last event's id when the stream closes
/// before, so nothing is lost or repeated.
pub struct Follow<'a> {
    client: &'a Client,
    path: String,
    /// The id of the last event received.
    pub last_id: Option<String>,
    events: Option<Events>,
    finished: bool,
    batch: bool,
    failures: u32,
}

impl Follow<'_> {
    /// The next event; None once the stream is over.
    pub async fn next(&mut self) -> Result<Option<OutputEvent>> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let events = match &mut self.events {
                Some(events) => events,
                None => match connect(self.client, &self.path, self.last_id.as_deref()).await {
                    Ok(events) => self.events.insert(events),
                    Err(err) => {
                        self.failed(err).await?;
                        continue;
                    }
                },
            };
            match events.next().await {
                Ok(Some((id, event))) => {
                    self.failures = 0;
                    self.last_id = id;
                    match &event {
                        OutputEvent::End(_) if !self.batch => self.finished = true,
                        OutputEvent::Done => self.finished = true,
                        _ => {}
                    }
                    return Ok(Some(event));
                }
                // Closed before the end (the server's time limit): resume.
                Ok(None) => self.events = None,
                Err(err) => {
                    self.events = None;
                    self.failed(err).await?;
                }
            }
        }
    }

    async fn failed(&mut self, err: ClientError) -> Result<()> {
        self.failures += 1;
        // A refusal (403, 404, 400) does not change by trying again.
        let refused = err
            .status()
            .is_some_and(|s| s.is_client_error() && s.as_u16() != 429);
        if refused || self.failures >= MOST_FAILURES {
            return Err(err);
        }
        tokio::time::sleep(Duration::from_millis(250 << self.failures)).await;
        Ok(())
    }
}

/// Opens the stream at `path`, after `last_id` when given. (Free of
/// `Follow`, whose body stream is not `Sync`, so that following is `Send`.)
async fn connect(client: &Client, path: &str, last_id: Option<&str>) -> Result<Events> {
    let mut request = client
        .request(Method::GET, path)
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    Ok(Events::new(check(request.send().await?).await?))
}

impl Client {
    /// `GET /api/machineactions/{id}/commands/{index}/output`: the output so far.
    pub async fn output(&self, id: &str, index: u32) -> Result<CommandOutput> {
        let path = format!(
            "/api/machineactions/{}/commands/{index}/output",
            segment(id)
        );
        json(self.request(Method::GET, &path).send().await?).await
    }

    /// Follows command `index`'s output until it ends, from after
    /// `last_id` (an event's id) when given.
    pub fn follow_output(&self, id: &str, index: u32, last_id: Option<String>) -> Follow<'_> {
        Follow {
            client: self,
            path: format!(
                "/api/machineactions/{}/commands/{index}/output",
                segment(id)
            ),
            last_id,
            events: None,
            finished: false,
            batch: false,
            failures: 0,
        }
    }

    /// Follows command `index`'s output on every machine of a batch until
    /// every one ended.
    pub fn follow_batch_output(&self, id: &str, index: u32, last_id: Option<String>) -> Follow<'_> {
        Follow {
            client: self,
            path: format!("/api/batches/{}/output?index={index}", segment(id)),
            last_id,
            events: None,
            finished: false,
            batch: true,
            failures: 0,
        }
    }
}
