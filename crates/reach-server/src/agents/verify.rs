//! Checks a GetFile's chunks while they arrive, so that `complete` need not
//! read them back. Each chunk is a deflate segment (a raw deflate stream
//! ended by a sync flush, no final block); the result is served as one gzip
//! member: `gzip_frame::HEADER`, the segments, `gzip_frame::tail`. Each
//! segment is decompressed as it streams in, and its bytes must have the
//! size and CRC-32 (and SHA-256, when the agent sends one) the agent
//! announced. While a command's chunks arrive in order on this node, the
//! decoder itself is carried from one chunk to the next (`InOrder`), with
//! the whole file's SHA-256 and CRC-32 (and, where the chunks are later
//! composed into one object, the stored stream's SHA-256): the segments are
//! decoded exactly as a client decodes the served file, one stream, so a
//! segment that does not end where the next can begin is caught. At
//! `complete` the final block must end that stream. The whole file's
//! SHA-256 is what proves the bytes; it is the only SHA-256 pass the server
//! makes over them unless the agent asks for more.
//!
//! A chunk out of order is decoded on its own, ended with a final block of
//! our own: it must stop exactly there. Whatever breaks the order (a chunk
//! sent again, a resumed transfer, chunks taken by another node, a restart)
//! only drops what was carried, and `complete` reads the stored chunks again
//! through one decoder. This never holds more of a file than the piece in
//! flight, and never touches the store or the database.

use std::collections::HashMap;
use std::io::{Error, ErrorKind};
use std::sync::Mutex;

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};
use futures::{Stream, StreamExt};
use reach_proto::agent::CommandRef;
use reach_proto::gzip_frame;
use sha2::{Digest, Sha256};

/// Commands whose carried decoders are kept at most (each holds about
/// 45 KiB: the inflate state and its 32 KiB window); past it they are all
/// dropped (their `complete` then reads the chunks again).
const MAX_CARRIED: usize = 2_000;

/// What is carried over chunks 0..next of one command: the decoder, in the
/// middle of the one deflate stream, and the whole file's sums so far.
pub struct Progress {
    next: u32,
    inflate: Box<Decompress>,
    sums: Sums,
    /// Only where the chunks become one object, whose bytes it then checks:
    /// the served bytes, header first.
    stored: Option<Sha256>,
    stored_size: u64,
}

impl Progress {
    /// Before chunk 0; `hash_stored`: also hash the served stream.
    pub fn new(hash_stored: bool) -> Self {
        Self {
            next: 0,
            inflate: Box::new(Decompress::new(false)),
            sums: Sums::default(),
            stored: hash_stored.then(|| Sha256::new_with_prefix(gzip_frame::HEADER)),
            stored_size: gzip_frame::HEADER.len() as u64,
        }
    }

    /// Ends the stream with the final block, which must end it exactly,
    /// and sums up the whole file and the served stream.
    pub fn whole(mut self) -> std::io::Result<Whole> {
        if !ends_cleanly(&mut self.inflate)? {
            return Err(invalid(
                "the last chunk does not end where the stream can end (it must end with a sync flush)",
            ));
        }
        let tail = gzip_frame::tail(self.sums.crc32.finalize(), self.sums.size);
        Ok(Whole {
            raw_size: self.sums.size,
            raw_sha256: hex::encode(self.sums.sha256.finalize()),
            tail,
            stored_size: self.stored_size + tail.len() as u64,
            stored_sha256: self.stored.map(|mut h| {
                h.update(tail);
                hex::encode(h.finalize())
            }),
        })
    }
}

/// The whole file's sums so far.
#[derive(Default)]
struct Sums {
    sha256: Sha256,
    crc32: crc32fast::Hasher,
    size: u64,
}

/// The whole file (and served stream) of a command whose chunks were all checked.
pub struct Whole {
    /// The file's size.
    pub raw_size: u64,
    /// Hex SHA-256 of the file.
    pub raw_sha256: String,
    /// What ends the served file: the final block, CRC-32 and size.
    pub tail: [u8; 10],
    /// The served file's size: header, segments and tail.
    pub stored_size: u64,
    /// When `Progress::new` was asked to hash the served stream.
    pub stored_sha256: Option<String>,
}

/// Carried decoders of the GetFiles arriving at this node.
#[derive(Default)]
pub struct InOrder(Mutex<HashMap<CommandRef, Progress>>);

impl InOrder {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<CommandRef, Progress>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What to carry through chunk `n`: fresh for chunk 0, that of chunks
    /// 0..n when `n` comes next, otherwise nothing (and the command's is
    /// dropped: the order is broken).
    pub fn take(&self, command: &CommandRef, n: u32, hash_stored: bool) -> Option<Progress> {
        let carried = self.map().remove(command);
        if n == 0 {
            return Some(Progress::new(hash_stored));
        }
        carried.filter(|p| p.next == n)
    }

    /// Keeps what is carried after chunk `n` was stored and recorded.
    pub fn put(&self, command: CommandRef, mut progress: Progress, n: u32) {
        progress.next = n + 1;
        let mut map = self.map();
        if map.len() >= MAX_CARRIED {
            tracing::debug!(
                carried = map.len(),
                "dropping carried GetFile decoders; complete reads those chunks again"
            );
            map.clear();
        }
        map.insert(command, progress);
    }

    /// What was carried through all `chunks`, when they all arrived in order here.
    pub fn finish(&self, command: &CommandRef, chunks: u32) -> Option<Progress> {
        let progress = self.map().remove(command)?;
        (progress.next == chunks).then_some(progress)
    }
}

/// What one chunk held once decompressed.
pub struct Checked {
    /// Bytes it decompressed to.
    pub raw_size: u64,
    /// CRC-32 of those bytes.
    pub raw_crc32: u32,
    /// When the checker was asked to hash the chunk.
    pub raw_sha256: Option<String>,
    /// What was carried, with this chunk added, if anything was.
    pub progress: Option<Progress>,
}

impl Checked {
    /// Whether these are the bytes announced: their size, and their CRC-32
    /// and SHA-256 where those were announced (empty: not).
    pub fn matches(&self, raw_size: u64, raw_crc32: Option<u32>, raw_sha256: &str) -> bool {
        self.raw_size == raw_size
            && raw_crc32.is_none_or(|crc| crc == self.raw_crc32)
            && (raw_sha256.is_empty() || self.raw_sha256.as_deref() == Some(raw_sha256))
    }
}

fn invalid(why: &str) -> Error {
    Error::new(ErrorKind::InvalidData, why.to_string())
}

/// The sums of one chunk's decompressed bytes. Decompression stops with
/// `FileTooLarge` as soon as it would pass `limit` (the size announced): a
/// small segment that inflates to gigabytes costs no more than the bytes
/// it claimed.
struct ChunkSums {
    crc: crc32fast::Hasher,
    sha256: Option<Sha256>,
    size: u64,
    limit: u64,
}

impl ChunkSums {
    fn new(hash: bool, limit: u64) -> Self {
        Self {
            crc: crc32fast::Hasher::new(),
            sha256: hash.then(Sha256::new),
            size: 0,
            limit,
        }
    }

    fn add(&mut self, raw: &[u8], whole: Option<&mut Sums>) -> std::io::Result<()> {
        if self.size + raw.len() as u64 > self.limit {
            return Err(Error::new(
                ErrorKind::FileTooLarge,
                format!(
                    "it decompresses to more than the {} bytes announced",
                    self.limit
                ),
            ));
        }
        self.crc.update(raw);
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(raw);
        }
        self.size += raw.len() as u64;
        if let Some(whole) = whole {
            whole.sha256.update(raw);
            whole.crc32.update(raw);
            whole.size += raw.len() as u64;
        }
        Ok(())
    }
}

/// Where one call to `inflate` left the stream.
struct Inflated {
    /// The deflate stream ended (a final block).
    end: bool,
    /// Input bytes after the end of the stream.
    left: usize,
}

/// Bytes decompressed per step.
const STEP: usize = 64 * 1024;

/// Decompresses `input` with `decoder`, adding the bytes to `chunk` (and
/// to what `whole` carries), until the input is used up or the stream ends.
fn inflate(
    decoder: &mut Decompress,
    mut input: &[u8],
    flush: FlushDecompress,
    chunk: &mut ChunkSums,
    mut whole: Option<&mut Sums>,
) -> std::io::Result<Inflated> {
    let mut out = [0u8; STEP];
    loop {
        let (before_in, before_out) = (decoder.total_in(), decoder.total_out());
        let status = decoder
            .decompress(input, &mut out, flush)
            .map_err(|e| Error::new(ErrorKind::InvalidData, e))?;
        let consumed = (decoder.total_in() - before_in) as usize;
        let produced = (decoder.total_out() - before_out) as usize;
        chunk.add(&out[..produced], whole.as_deref_mut())?;
        input = &input[consumed..];
        if status == Status::StreamEnd {
            return Ok(Inflated {
                end: true,
                left: input.len(),
            });
        }
        if input.is_empty() && produced < out.len() {
            return Ok(Inflated {
                end: false,
                left: 0,
            });
        }
        if consumed == 0 && produced == 0 {
            return Err(invalid("the deflate stream does not go on"));
        }
    }
}

/// Feeds `decoder` the final block that follows the last segment: true when
/// it ends the stream exactly there, with no byte more out. A segment that
/// did not end on a sync flush (cut short, or ending mid-block) fails this.
fn ends_cleanly(decoder: &mut Decompress) -> std::io::Result<bool> {
    let mut after = ChunkSums::new(false, u64::MAX);
    let ended = inflate(
        decoder,
        &gzip_frame::FINAL_BLOCK,
        FlushDecompress::Finish,
        &mut after,
        None,
    )?;
    Ok(ended.end && ended.left == 0 && after.size == 0)
}

/// Decompresses one segment on a blocking thread while it streams in.
pub struct Checker {
    sender: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<std::io::Result<Checked>>,
}

impl Checker {
    /// `progress`: what chunks 0..n carried, to go on with; without it the
    /// segment is decoded on its own. `hash_chunk`: also hash the chunk's
    /// decompressed bytes (when the agent announced their SHA-256).
    /// `raw_limit`: the decompressed size announced; one byte more stops
    /// the checker (`FileTooLarge`).
    pub fn start(progress: Option<Progress>, hash_chunk: bool, raw_limit: u64) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
        let task = tokio::task::spawn_blocking(move || {
            let mut chunk = ChunkSums::new(hash_chunk, raw_limit);
            let mut carried = progress;
            let mut alone = carried.is_none().then(|| Decompress::new(false));
            let mut first = true;
            while let Some(bytes) = receiver.blocking_recv() {
                if std::mem::take(&mut first) && gzip_frame::is_gzip_member(&bytes) {
                    return Err(invalid(
                        "it is a gzip member, as agents built before single-member GetFile results send; this server takes deflate segments: upgrade the agent",
                    ));
                }
                let inflated = match (&mut carried, &mut alone) {
                    (Some(progress), _) => {
                        if let Some(stored) = &mut progress.stored {
                            stored.update(&bytes);
                        }
                        progress.stored_size += bytes.len() as u64;
                        inflate(
                            &mut progress.inflate,
                            &bytes,
                            FlushDecompress::None,
                            &mut chunk,
                            Some(&mut progress.sums),
                        )?
                    }
                    (None, Some(decoder)) => {
                        inflate(decoder, &bytes, FlushDecompress::None, &mut chunk, None)?
                    }
                    (None, None) => unreachable!("a decoder either way"),
                };
                if inflated.end {
                    return Err(invalid(
                        "it ends the deflate stream; a chunk must end with a sync flush, not a final block",
                    ));
                }
            }
            if let Some(mut decoder) = alone
                && !ends_cleanly(&mut decoder)?
            {
                return Err(invalid(
                    "it does not end where the next chunk can begin (it must end with a sync flush)",
                ));
            }
            Ok(Checked {
                raw_size: chunk.size,
                raw_crc32: chunk.crc.finalize(),
                raw_sha256: chunk.sha256.map(|h| hex::encode(h.finalize())),
                progress: carried,
            })
        });
        Self { sender, task }
    }

    /// `body`, with every piece also handed to the checker.
    pub fn tap<S, E>(&self, body: S) -> impl Stream<Item = Result<Bytes, E>> + Send + use<S, E>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: Send,
    {
        // Weak: a tapped stream left alive must not hold the input open,
        // or `finish` would wait for it forever.
        let sender = self.sender.downgrade();
        body.then(move |item| {
            let sender = sender.upgrade();
            let bytes = item.as_ref().ok().cloned();
            async move {
                if let (Some(bytes), Some(sender)) = (bytes, sender) {
                    // A checker that stopped (bad gzip) is reported by `finish`.
                    let _ = sender.send(bytes).await;
                }
                item
            }
        })
    }

    /// Waits for the checker to see the end of the segment.
    pub async fn finish(self) -> std::io::Result<Checked> {
        drop(self.sender);
        self.task.await.map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests;
