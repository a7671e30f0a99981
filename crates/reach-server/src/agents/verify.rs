//! Checks a GetFile's chunks while they arrive, so that `complete` need not
//! read them back: each gzip member is decompressed as it streams in, and
//! its bytes must have the size and CRC-32 (and SHA-256, when the agent sends
//! one) the agent announced. While a command's chunks arrive in order on this
//! node, the whole file's SHA-256 (and, where the chunks are later composed
//! into one object, the stored stream's) is carried from one chunk to the
//! next (`InOrder`), so at `complete` it is already known. The whole file's
//! SHA-256 is what proves the bytes; it is the only SHA-256 pass the server
//! makes over them unless the agent asks for more.
//!
//! Whatever breaks the order (a chunk sent again, a resumed transfer, chunks
//! taken by another node, a restart) only drops the carried hashes, and
//! `complete` reads the stored chunks again. This never holds more of a file
//! than the piece in flight, and never touches the store or the database.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reach_proto::agent::CommandRef;
use sha2::{Digest, Sha256};

/// Commands whose carried hashes are kept at most; past it they are all
/// dropped (their `complete` then reads the chunks again).
const MAX_CARRIED: usize = 10_000;

/// The hashes carried over chunks 0..next of one command.
#[derive(Clone)]
pub struct Progress {
    next: u32,
    raw: Sha256,
    raw_size: u64,
    /// Only where the chunks become one object, whose bytes it then checks.
    stored: Option<Sha256>,
    stored_size: u64,
}

impl Progress {
    /// Before chunk 0; `hash_stored`: also hash the stored stream.
    pub fn new(hash_stored: bool) -> Self {
        Self {
            next: 0,
            raw: Sha256::new(),
            raw_size: 0,
            stored: hash_stored.then(Sha256::new),
            stored_size: 0,
        }
    }

    pub fn whole(self) -> Whole {
        Whole {
            raw_size: self.raw_size,
            raw_sha256: hex::encode(self.raw.finalize()),
            stored_size: self.stored_size,
            stored_sha256: self.stored.map(|h| hex::encode(h.finalize())),
        }
    }
}

/// The whole file (and stored stream) of a command whose chunks were all checked.
pub struct Whole {
    pub raw_size: u64,
    pub raw_sha256: String,
    pub stored_size: u64,
    /// When `Progress::new` was asked to hash the stored stream.
    pub stored_sha256: Option<String>,
}

/// Carried hashes of the GetFiles arriving at this node.
#[derive(Default)]
pub struct InOrder(Mutex<HashMap<CommandRef, Progress>>);

impl InOrder {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<CommandRef, Progress>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hashes to carry through chunk `n`: fresh for chunk 0, those of
    /// chunks 0..n when `n` comes next, otherwise none (and the command's
    /// are dropped: the order is broken).
    pub fn take(&self, command: &CommandRef, n: u32, hash_stored: bool) -> Option<Progress> {
        let carried = self.map().remove(command);
        if n == 0 {
            return Some(Progress::new(hash_stored));
        }
        carried.filter(|p| p.next == n)
    }

    /// Keeps the hashes after chunk `n` was stored and recorded.
    pub fn put(&self, command: CommandRef, mut progress: Progress, n: u32) {
        progress.next = n + 1;
        let mut map = self.map();
        if map.len() >= MAX_CARRIED {
            tracing::debug!(
                carried = map.len(),
                "dropping carried GetFile hashes; complete reads those chunks again"
            );
            map.clear();
        }
        map.insert(command, progress);
    }

    /// The whole file's hashes when all `chunks` arrived in order here.
    pub fn finish(&self, command: &CommandRef, chunks: u32) -> Option<Whole> {
        let progress = self.map().remove(command)?;
        (progress.next == chunks).then(|| progress.whole())
    }
}

/// What one chunk held once decompressed.
pub struct Checked {
    pub raw_size: u64,
    pub raw_crc32: u32,
    /// When the checker was asked to hash the chunk.
    pub raw_sha256: Option<String>,
    /// The carried hashes with this chunk added, if there were any.
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

/// Decompressed bytes go to the chunk's CRC-32 (and hash, if asked) and the
/// carried whole-file hash.
/// Decompression stops with `FileTooLarge` as soon as it would pass `limit`
/// (the size announced): a small member that inflates to gigabytes costs no
/// more than the bytes it claimed.
struct RawSink {
    crc: crc32fast::Hasher,
    chunk: Option<Sha256>,
    size: u64,
    limit: u64,
    whole: Option<Progress>,
}

impl Write for RawSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size + buf.len() as u64 > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "it decompresses to more than the {} bytes announced",
                    self.limit
                ),
            ));
        }
        self.crc.update(buf);
        if let Some(chunk) = &mut self.chunk {
            chunk.update(buf);
        }
        self.size += buf.len() as u64;
        if let Some(whole) = &mut self.whole {
            whole.raw.update(buf);
            whole.raw_size += buf.len() as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decompresses one member on a blocking thread while it streams in.
pub struct Checker {
    sender: tokio::sync::mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<std::io::Result<Checked>>,
}

impl Checker {
    /// `hash_chunk`: also hash the chunk's decompressed bytes (when the agent
    /// announced their SHA-256). `raw_limit`: the decompressed size
    /// announced; one byte more stops the checker (`FileTooLarge`).
    pub fn start(progress: Option<Progress>, hash_chunk: bool, raw_limit: u64) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
        let task = tokio::task::spawn_blocking(move || {
            let mut decoder = flate2::write::MultiGzDecoder::new(RawSink {
                crc: crc32fast::Hasher::new(),
                chunk: hash_chunk.then(Sha256::new),
                size: 0,
                limit: raw_limit,
                whole: progress,
            });
            while let Some(bytes) = receiver.blocking_recv() {
                decoder.write_all(&bytes)?;
                if let Some(whole) = &mut decoder.get_mut().whole {
                    if let Some(stored) = &mut whole.stored {
                        stored.update(&bytes);
                    }
                    whole.stored_size += bytes.len() as u64;
                }
            }
            let sink = decoder.finish()?;
            Ok(Checked {
                raw_size: sink.size,
                raw_crc32: sink.crc.finalize(),
                raw_sha256: sink.chunk.map(|h| hex::encode(h.finalize())),
                progress: sink.whole,
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

    /// Waits for the checker to see the end of the member.
    pub async fn finish(self) -> std::io::Result<Checked> {
        drop(self.sender);
        self.task.await.map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn member(raw: &[u8]) -> Bytes {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(raw).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    fn command() -> CommandRef {
        CommandRef {
            action_id: "a".into(),
            index: 0,
        }
    }

    async fn check(member: &Bytes, progress: Option<Progress>) -> std::io::Result<Checked> {
        check_within(member, progress, u64::MAX).await
    }

    async fn check_within(
        member: &Bytes,
        progress: Option<Progress>,
        limit: u64,
    ) -> std::io::Result<Checked> {
        let checker = Checker::start(progress, true, limit);
        let pieces: Vec<Result<Bytes, std::io::Error>> = member
            .chunks(1000)
            .map(|p| Ok(Bytes::copy_from_slice(p)))
            .collect();
        let tapped: Vec<_> = checker.tap(futures::stream::iter(pieces)).collect().await;
        assert!(tapped.iter().all(|p| p.is_ok()));
        checker.finish().await
    }

    #[tokio::test]
    async fn chunks_in_order_carry_the_whole_files_hashes() {
        let command = command();
        let carried = InOrder::default();
        let parts = [b"first part, ".repeat(500), b"second part".repeat(300)];
        let members: Vec<Bytes> = parts.iter().map(|p| member(p)).collect();
        for (n, m) in members.iter().enumerate() {
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
        let whole = carried.finish(&command, 2).unwrap();
        assert_eq!(
            whole.raw_sha256,
            hex::encode(Sha256::digest(parts.concat()))
        );
        assert_eq!(whole.raw_size, parts.concat().len() as u64);
        assert_eq!(
            whole.stored_sha256,
            Some(hex::encode(Sha256::digest(members.concat())))
        );
        assert_eq!(whole.stored_size, members.concat().len() as u64);
        assert!(carried.finish(&command, 2).is_none(), "taken once");
    }

    #[tokio::test]
    async fn a_chunk_out_of_order_drops_the_carried_hashes() {
        let command = command();
        let carried = InOrder::default();
        let m = member(b"bytes");
        let first = check(&m, carried.take(&command, 0, false)).await.unwrap();
        carried.put(command.clone(), first.progress.unwrap(), 0);
        // Chunk 0 sent again after chunk 1 was expected: the chain restarts at 0.
        assert!(carried.take(&command, 0, false).is_some());
        // Chunk 2 before chunk 1: nothing to carry, and nothing kept.
        assert!(carried.take(&command, 2, false).is_none());
        assert!(carried.finish(&command, 3).is_none());
    }

    #[tokio::test]
    async fn the_stored_stream_is_hashed_only_when_asked() {
        let command = command();
        let carried = InOrder::default();
        let raw = b"chunk bytes".repeat(100);
        let checker = Checker::start(carried.take(&command, 0, false), false, u64::MAX);
        let tapped: Vec<Result<Bytes, std::io::Error>> = checker
            .tap(futures::stream::iter([Ok(member(&raw))]))
            .collect()
            .await;
        assert_eq!(tapped.len(), 1);
        let checked = checker.finish().await.unwrap();
        assert_eq!(checked.raw_sha256, None, "not asked to hash the chunk");
        assert_eq!(checked.raw_crc32, crc32fast::hash(&raw));
        carried.put(command.clone(), checked.progress.unwrap(), 0);
        let whole = carried.finish(&command, 1).unwrap();
        assert_eq!(whole.stored_sha256, None);
        assert_eq!(whole.raw_sha256, hex::encode(Sha256::digest(&raw)));
    }

    #[tokio::test]
    async fn finish_does_not_wait_for_a_tapped_stream_left_alive() {
        let raw = b"kept alive".repeat(10);
        let checker = Checker::start(None, false, u64::MAX);
        let mut tapped = Box::pin(checker.tap(futures::stream::iter([Ok::<_, std::io::Error>(
            member(&raw),
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
    async fn bytes_that_are_not_gzip_fail_the_check() {
        let not_gzip = Bytes::from_static(b"this is not a gzip member at all");
        assert!(check(&not_gzip, None).await.is_err());
        let mut cut = member(&b"x".repeat(10_000)).to_vec();
        cut.truncate(cut.len() - 4);
        assert!(check(&Bytes::from(cut), None).await.is_err());
    }

    #[tokio::test]
    async fn a_member_inflating_past_its_announced_size_stops_there() {
        let bomb = member(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 1024 * 1024, "a small member: {}", bomb.len());
        let err = check_within(&bomb, Some(Progress::new(false)), 1024 * 1024)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
        let exact = member(&vec![7u8; 4096]);
        let checked = check_within(&exact, None, 4096).await.unwrap();
        assert_eq!(checked.raw_size, 4096);
    }
}
