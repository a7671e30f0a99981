//! A running script's output on its way to the server while it runs: the
//! capture of `run_script` pushes text here, and the connection sends it as
//! `Output` messages, coalescing what arrives within `COALESCE` of the last
//! send (or fills a message) into one. The buffer is bounded: when it holds
//! `MOST_PENDING` bytes (a connection down or too slow), the command's live
//! output stops, because the server only takes a stream without gaps, and
//! the transcript carries everything anyway. The last `KEPT_SENT` bytes
//! sent are kept and sent again after a reconnection (`resend`): pieces a
//! dropped connection lost would otherwise leave a gap, and the server
//! refuses every piece after a gap; it drops those it already holds.
//!
//! This module never decides what a transcript holds: it only sees text
//! that the capture already kept, cut on whole characters (`whole_prefix`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reach_proto::agent::{AgentMessage, CommandRef, Stream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Output that arrives within this long of the last send waits to travel
/// with what follows it; output after a quiet spell goes at once.
pub const COALESCE: Duration = Duration::from_millis(250);

/// Most bytes waiting to be sent, over all commands.
pub const MOST_PENDING: usize = 4 * 1024 * 1024;

/// Bytes of the pieces sent last, kept to send again after a reconnection.
pub const KEPT_SENT: usize = 1024 * 1024;

#[derive(Clone)]
struct Piece {
    command: CommandRef,
    stream: Stream,
    offset: u64,
    text: String,
    /// Sent before: it goes again exactly as it was, never merged with
    /// what follows (the server's stream ends where a sent piece ended).
    sealed: bool,
}

#[derive(Default)]
struct Inner {
    pending: VecDeque<Piece>,
    pending_bytes: usize,
    /// The pieces sent last (at most `KEPT_SENT` bytes), as sent.
    sent: VecDeque<Piece>,
    sent_bytes: usize,
    /// Commands whose live output stopped (the buffer overflowed).
    abandoned: Vec<CommandRef>,
    last_sent: Option<Instant>,
}

/// Output waiting for the connection.
#[derive(Default)]
pub struct LiveOutput {
    inner: Mutex<Inner>,
    ready: Notify,
    /// Largest text per message; 0 while the server takes none.
    limit: AtomicU64,
}

impl LiveOutput {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the server's `Welcome` allows: the largest text of one message,
    /// 0 for none (what waits is then dropped, and nothing more is kept).
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
        if bytes == 0 {
            let mut inner = self.lock();
            inner.pending.clear();
            inner.pending_bytes = 0;
            inner.sent.clear();
            inner.sent_bytes = 0;
        }
        self.ready.notify_one();
    }

    /// Text a command's stream produced, starting at `offset` of it.
    pub fn push(&self, command: &CommandRef, stream: Stream, offset: u64, text: String) {
        let limit = self.limit.load(Ordering::Relaxed) as usize;
        if limit == 0 || text.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.abandoned.contains(command) {
            return;
        }
        if inner.pending_bytes + text.len() > MOST_PENDING {
            tracing::warn!(action.id = %command.action_id, command.index = command.index, "live output is not keeping up; the rest comes with the transcript");
            inner.pending.retain(|p| &p.command != command);
            inner.pending_bytes = inner.pending.iter().map(|p| p.text.len()).sum();
            if inner.abandoned.len() >= 16 {
                inner.abandoned.remove(0);
            }
            inner.abandoned.push(command.clone());
            return;
        }
        inner.pending_bytes += text.len();
        match inner.pending.back_mut() {
            Some(last)
                if !last.sealed
                    && last.command == *command
                    && last.stream == stream
                    && last.offset + last.text.len() as u64 == offset
                    && last.text.len() + text.len() <= limit =>
            {
                last.text.push_str(&text);
            }
            _ => inner.pending.push_back(Piece {
                command: command.clone(),
                stream,
                offset,
                text,
                sealed: false,
            }),
        }
        drop(inner);
        self.ready.notify_one();
    }

    /// The messages waiting, once they are due: at once after a quiet
    /// spell or when they fill a message, else `COALESCE` after the last
    /// send. Cancel-safe: nothing is taken before the last await.
    pub async fn next(&self) -> Vec<AgentMessage> {
        loop {
            let notified = self.ready.notified();
            let due = {
                let inner = self.lock();
                let limit = self.limit.load(Ordering::Relaxed) as usize;
                match inner.pending.front() {
                    None => None,
                    Some(_) => {
                        let full = inner.pending_bytes >= limit;
                        Some(match inner.last_sent {
                            Some(last) if !full => last + COALESCE,
                            _ => Instant::now(),
                        })
                    }
                }
            };
            match due {
                None => notified.await,
                Some(due) => {
                    tokio::time::sleep_until(due).await;
                    let messages: Vec<_> = std::iter::from_fn(|| self.take()).collect();
                    if !messages.is_empty() {
                        return messages;
                    }
                }
            }
        }
    }

    /// The first waiting message, whether due or not (the connection sends
    /// them all before a command's `Finished`).
    pub fn take(&self) -> Option<AgentMessage> {
        let limit = self.limit.load(Ordering::Relaxed) as usize;
        let mut inner = self.lock();
        let mut piece = inner.pending.pop_front()?;
        if piece.text.len() > limit && limit > 0 {
            // A piece longer than a message (the limit shrank): the rest
            // stays first in line.
            let cut = floor_char_boundary(&piece.text, limit);
            let rest = piece.text.split_off(cut);
            inner.pending.push_front(Piece {
                command: piece.command.clone(),
                stream: piece.stream,
                offset: piece.offset + cut as u64,
                text: rest,
                sealed: piece.sealed,
            });
        }
        inner.pending_bytes -= piece.text.len();
        inner.last_sent = Some(Instant::now());
        inner.sent_bytes += piece.text.len();
        inner.sent.push_back(piece.clone());
        while inner.sent_bytes > KEPT_SENT
            && let Some(old) = inner.sent.pop_front()
        {
            inner.sent_bytes -= old.text.len();
        }
        Some(AgentMessage::Output {
            command: piece.command,
            stream: piece.stream,
            offset: piece.offset,
            text: piece.text,
        })
    }
}

/// The longest start of `text` of at most `at` bytes that ends on a
/// character, but never empty.
impl LiveOutput {
    /// A new connection: the pieces sent last go again, first, exactly as
    /// they were sent (the server keeps pieces whole, so its stream ends
    /// where one of them ends, and it drops those it holds).
    pub fn resend(&self) {
        let mut inner = self.lock();
        let sent = std::mem::take(&mut inner.sent);
        inner.sent_bytes = 0;
        for mut piece in sent.into_iter().rev() {
            inner.pending_bytes += piece.text.len();
            piece.sealed = true;
            inner.pending.push_front(piece);
        }
        drop(inner);
        self.ready.notify_one();
    }
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut cut = at.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        text.chars().next().map_or(0, char::len_utf8)
    } else {
        cut
    }
}

/// How many of `bytes` can be turned into text now: all but a last
/// character that more bytes may still complete. Text made of each such
/// prefix in turn, invalid bytes replaced, is the text of all the bytes
/// at once (`String::from_utf8_lossy`), which is what the transcript holds.
pub fn whole_prefix(bytes: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match std::str::from_utf8(&bytes[at..]) {
            Ok(_) => return bytes.len(),
            Err(err) => match err.error_len() {
                Some(bad) => at += err.valid_up_to() + bad,
                None => return at + err.valid_up_to(),
            },
        }
    }
}

/// One stream of one script: turns the bytes the capture keeps into text
/// pieces for `LiveOutput`, holding back an unfinished character.
pub struct Feed {
    live: Arc<LiveOutput>,
    command: CommandRef,
    stream: Stream,
    held: Vec<u8>,
    offset: u64,
}

impl Feed {
    /// A feed of `stream` of `command`.
    pub fn new(live: Arc<LiveOutput>, command: CommandRef, stream: Stream) -> Self {
        Self {
            live,
            command,
            stream,
            held: Vec::new(),
            offset: 0,
        }
    }

    /// Bytes the capture kept, in order.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
        let whole = whole_prefix(&self.held);
        if whole == 0 {
            return;
        }
        let rest = self.held.split_off(whole);
        let text = String::from_utf8_lossy(&self.held).into_owned();
        self.held = rest;
        self.send(text);
    }

    /// The stream ended: an unfinished last character goes as the
    /// transcript has it (replaced).
    pub fn end(&mut self) {
        if !self.held.is_empty() {
            let text = String::from_utf8_lossy(&self.held).into_owned();
            self.held.clear();
            self.send(text);
        }
    }

    fn send(&mut self, text: String) {
        let len = text.len() as u64;
        self.live
            .push(&self.command, self.stream, self.offset, text);
        self.offset += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> CommandRef {
        CommandRef {
            action_id: "a".into(),
            index: 0,
        }
    }

    /// Bytes fed in any split give the text of all of them at once,
    /// invalid and unfinished characters included.
    #[test]
    fn pieces_add_up_to_the_transcript_text() {
        let bytes: Vec<u8> = [
            "héllo ".as_bytes(),
            &[0xff, b'x', 0xe2, 0x82],
            "€ ok ✓".as_bytes(),
            &[0xf0, 0x9f],
        ]
        .concat();
        let whole = String::from_utf8_lossy(&bytes).into_owned();
        for split in 1..8 {
            let live = Arc::new(LiveOutput::default());
            live.set_limit(1 << 20);
            let mut feed = Feed::new(live.clone(), command(), Stream::Stdout);
            for part in bytes.chunks(split) {
                feed.bytes(part);
            }
            feed.end();
            let mut text = String::new();
            while let Some(AgentMessage::Output {
                offset, text: t, ..
            }) = live.take()
            {
                assert_eq!(offset as usize, text.len(), "offsets follow the text");
                text.push_str(&t);
            }
            assert_eq!(text, whole, "split every {split} bytes");
        }
    }

    #[test]
    fn streams_stay_apart_and_messages_stay_under_the_limit() {
        let live = LiveOutput::default();
        live.set_limit(4);
        live.push(&command(), Stream::Stdout, 0, "ab".into());
        live.push(&command(), Stream::Stdout, 2, "cd".into());
        live.push(&command(), Stream::Stderr, 0, "e".into());
        live.push(&command(), Stream::Stdout, 4, "fgh".into());
        let mut got = Vec::new();
        while let Some(AgentMessage::Output {
            stream,
            offset,
            text,
            ..
        }) = live.take()
        {
            got.push((stream, offset, text));
        }
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, 0, "abcd".to_string()),
                (Stream::Stderr, 0, "e".to_string()),
                (Stream::Stdout, 4, "fgh".to_string()),
            ]
        );
    }

    #[test]
    fn nothing_is_kept_without_a_server_that_takes_it_nor_past_the_bound() {
        let live = LiveOutput::default();
        live.push(&command(), Stream::Stdout, 0, "ab".into());
        assert!(live.take().is_none(), "no Welcome allowed live output");
        live.set_limit(MOST_PENDING as u64);
        let big = "x".repeat(MOST_PENDING - 1);
        live.push(&command(), Stream::Stdout, 0, big);
        live.push(
            &command(),
            Stream::Stdout,
            (MOST_PENDING - 1) as u64,
            "yz".into(),
        );
        assert!(live.take().is_none(), "the command's live output stopped");
        live.push(
            &command(),
            Stream::Stdout,
            MOST_PENDING as u64 + 1,
            "q".into(),
        );
        assert!(live.take().is_none(), "and stays stopped: no gap is sent");
    }

    /// After a reconnection the pieces sent last go again, as sent and
    /// before what waits, so a piece the old connection lost is not a gap.
    #[test]
    fn a_new_connection_sends_the_last_pieces_again_first() {
        let live = LiveOutput::default();
        live.set_limit(4);
        live.push(&command(), Stream::Stdout, 0, "abcdef".into());
        let texts = |live: &LiveOutput| -> Vec<(u64, String)> {
            std::iter::from_fn(|| live.take())
                .map(|m| match m {
                    AgentMessage::Output { offset, text, .. } => (offset, text),
                    _ => panic!("output"),
                })
                .collect()
        };
        assert_eq!(
            texts(&live),
            [(0, "abcd".to_string()), (4, "ef".to_string())]
        );
        live.resend();
        live.push(&command(), Stream::Stdout, 6, "g".into());
        assert_eq!(
            texts(&live),
            [
                (0, "abcd".to_string()),
                (4, "ef".to_string()),
                (6, "g".to_string())
            ],
            "what follows is not merged into a piece sent again"
        );
        live.resend();
        assert_eq!(texts(&live).len(), 3, "kept again once sent");
    }

    #[tokio::test(start_paused = true)]
    async fn output_after_a_quiet_spell_goes_at_once_and_a_burst_waits() {
        let live = LiveOutput::default();
        live.set_limit(1024);
        live.push(&command(), Stream::Stdout, 0, "a".into());
        let start = Instant::now();
        assert_eq!(live.next().await.len(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        live.push(&command(), Stream::Stdout, 1, "b".into());
        live.push(&command(), Stream::Stderr, 0, "e".into());
        live.push(&command(), Stream::Stdout, 2, "c".into());
        let sent = live.next().await;
        assert_eq!(start.elapsed(), COALESCE, "a burst waits for the window");
        let texts: Vec<_> = sent
            .into_iter()
            .map(|m| match m {
                AgentMessage::Output { text, .. } => text,
                _ => panic!("output"),
            })
            .collect();
        assert_eq!(texts, ["b", "e", "c"], "in order, in one go");
        live.push(&command(), Stream::Stdout, 3, "x".repeat(1024));
        let full = Instant::now();
        live.next().await;
        assert_eq!(
            full.elapsed(),
            Duration::ZERO,
            "a full message goes at once"
        );
    }
}
