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
    pub raw_size: u64,
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
    pub raw_size: u64,
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
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};
    use std::io::Read;

    /// A deflate segment as an agent sends it.
    fn segment(raw: &[u8]) -> Bytes {
        let mut compress = Compress::new(Compression::fast(), false);
        let mut out = Vec::with_capacity(raw.len() + 1024);
        compress
            .compress_vec(raw, &mut out, FlushCompress::Sync)
            .unwrap();
        assert_eq!(compress.total_in() as usize, raw.len());
        Bytes::from(out)
    }

    /// A whole gzip member, as agents before segments sent a chunk.
    fn member(raw: &[u8]) -> Bytes {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        std::io::Write::write_all(&mut encoder, raw).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    fn command() -> CommandRef {
        CommandRef {
            action_id: "a".into(),
            index: 0,
        }
    }

    async fn check(segment: &Bytes, progress: Option<Progress>) -> std::io::Result<Checked> {
        check_within(segment, progress, u64::MAX).await
    }

    async fn check_within(
        segment: &Bytes,
        progress: Option<Progress>,
        limit: u64,
    ) -> std::io::Result<Checked> {
        let checker = Checker::start(progress, true, limit);
        let pieces: Vec<Result<Bytes, std::io::Error>> = segment
            .chunks(1000)
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        let tapped: Vec<_> = checker.tap(futures::stream::iter(pieces)).collect().await;
        assert!(tapped.iter().all(|p| p.is_ok()));
        checker.finish().await
    }

    #[tokio::test]
    async fn chunks_in_order_carry_the_stream_and_the_whole_files_sums() {
        let command = command();
        let carried = InOrder::default();
        let parts = [b"first part, ".repeat(500), b"second part".repeat(300)];
        let segments: Vec<Bytes> = parts.iter().map(|p| segment(p)).collect();
        for (n, m) in segments.iter().enumerate() {
            let n = n as u32;
            let raw = &parts[n as usize];
            let checked = check(m, carried.take(&command, n, true)).await.unwrap();
            let sha256 = hex::encode(Sha256::digest(raw));
            let crc = crc32fast::hash(raw);
            assert_eq!(checked.raw_sha256.as_deref(), Some(sha256.as_str()));
            assert!(checked.matches(raw.len() as u64, Some(crc), &sha256));
            assert!(checked.matches(raw.len() as u64, Some(crc), ""));
            assert!(!checked.matches(raw.len() as u64 + 1, Some(crc), ""));
            assert!(!checked.matches(raw.len() as u64, Some(crc ^ 1), ""));
            assert!(!checked.matches(raw.len() as u64, None, &"0".repeat(64)));
            carried.put(command.clone(), checked.progress.unwrap(), n);
        }
        let whole = carried.finish(&command, 2).unwrap().whole().unwrap();
        let file = parts.concat();
        assert_eq!(whole.raw_sha256, hex::encode(Sha256::digest(&file)));
        assert_eq!(whole.raw_size, file.len() as u64);
        // The served file: header, segments, tail; one gzip member.
        let served = [&gzip_frame::HEADER[..], &segments.concat(), &whole.tail[..]].concat();
        assert_eq!(
            whole.stored_sha256,
            Some(hex::encode(Sha256::digest(&served)))
        );
        assert_eq!(whole.stored_size, served.len() as u64);
        let mut read = Vec::new();
        flate2::read::GzDecoder::new(&served[..])
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, file);
        assert!(carried.finish(&command, 2).is_none(), "taken once");
    }

    #[tokio::test]
    async fn a_chunk_out_of_order_drops_what_was_carried() {
        let command = command();
        let carried = InOrder::default();
        let m = segment(b"bytes");
        let first = check(&m, carried.take(&command, 0, false)).await.unwrap();
        carried.put(command.clone(), first.progress.unwrap(), 0);
        // Chunk 0 sent again after chunk 1 was expected: the chain restarts at 0.
        assert!(carried.take(&command, 0, false).is_some());
        // Chunk 2 before chunk 1: nothing to carry, and nothing kept.
        assert!(carried.take(&command, 2, false).is_none());
        assert!(carried.finish(&command, 3).is_none());
        // Alone, a segment is still checked, and ends where the next can begin.
        let alone = check(&segment(b"more bytes"), None).await.unwrap();
        assert_eq!(alone.raw_size, 10);
        assert!(alone.progress.is_none());
    }

    #[tokio::test]
    async fn the_stored_stream_is_hashed_only_when_asked() {
        let command = command();
        let carried = InOrder::default();
        let raw = b"chunk bytes".repeat(100);
        let checker = Checker::start(carried.take(&command, 0, false), false, u64::MAX);
        let tapped: Vec<Result<Bytes, std::io::Error>> = checker
            .tap(futures::stream::iter([Ok(segment(&raw))]))
            .collect()
            .await;
        assert_eq!(tapped.len(), 1);
        let checked = checker.finish().await.unwrap();
        assert_eq!(checked.raw_sha256, None, "not asked to hash the chunk");
        assert_eq!(checked.raw_crc32, crc32fast::hash(&raw));
        carried.put(command.clone(), checked.progress.unwrap(), 0);
        let whole = carried.finish(&command, 1).unwrap().whole().unwrap();
        assert_eq!(whole.stored_sha256, None);
        assert_eq!(whole.raw_sha256, hex::encode(Sha256::digest(&raw)));
    }

    #[tokio::test]
    async fn finish_does_not_wait_for_a_tapped_stream_left_alive() {
        let raw = b"kept alive".repeat(10);
        let checker = Checker::start(None, false, u64::MAX);
        let mut tapped = Box::pin(checker.tap(futures::stream::iter([Ok::<_, std::io::Error>(
            segment(&raw),
        )])));
        while let Some(piece) = tapped.next().await {
            piece.unwrap();
        }
        // `tapped` is still alive here; the checker must end all the same.
        let checked = tokio::time::timeout(std::time::Duration::from_secs(10), checker.finish())
            .await
            .expect("finish waited for a tapped stream")
            .unwrap();
        assert_eq!(checked.raw_size, raw.len() as u64);
        drop(tapped);
    }

    #[tokio::test]
    async fn bytes_that_are_not_a_segment_fail_the_check() {
        let not_deflate = Bytes::from_static(b"this is not a deflate segment at all");
        assert!(check(&not_deflate, None).await.is_err());
        // Cut short: it does not end on the sync flush.
        let whole = segment(&b"x".repeat(10_000));
        let cut = whole.slice(..whole.len() - 4);
        assert!(check(&cut, None).await.is_err());
        assert!(
            check(&cut, Some(Progress::new(false)))
                .await
                .is_ok_and(|c| c.progress.unwrap().whole().is_err())
        );
        // A stream with its final block: the next chunk could not follow.
        let mut compress = Compress::new(Compression::fast(), false);
        let mut finished = Vec::with_capacity(1024);
        compress
            .compress_vec(b"the end", &mut finished, FlushCompress::Finish)
            .unwrap();
        let err = check(&Bytes::from(finished), Some(Progress::new(false)))
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("final block"), "{err}");
        // What older agents sent is named as such.
        let err = check(&member(b"old"), None).await.err().expect("refused");
        assert!(err.to_string().contains("upgrade the agent"), "{err}");
    }

    #[tokio::test]
    async fn a_segment_inflating_past_its_announced_size_stops_there() {
        let bomb = segment(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 1024 * 1024, "a small segment: {}", bomb.len());
        let err = check_within(&bomb, Some(Progress::new(false)), 1024 * 1024)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        let exact = segment(&vec![7u8; 4096]);
        let checked = check_within(&exact, None, 4096).await.unwrap();
        assert_eq!(checked.raw_size, 4096);
    }
}
