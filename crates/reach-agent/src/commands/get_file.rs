//! GetFile: sends a file from the device to the server in chunks. Each chunk
//! (8 MiB by default, set by the server) becomes a deflate segment: its own
//! deflate stream ended by a sync flush instead of a final block, as pigz
//! builds its output, so chunks compress in parallel and the segments one
//! after another are one deflate stream. The server frames them into one
//! gzip member (a header, the segments, a final block, the whole file's
//! CRC-32 and size). A chunk that does not shrink is sent as stored
//! (uncompressed) deflate blocks. Before sending, the agent asks which chunks the server already
//! holds (by size and CRC-32) and sends only the others, one at a time:
//! after a lost connection or a server restart at most one chunk is sent
//! again. The whole file's SHA-256, the one SHA-256 pass over its bytes,
//! goes to the server, which checks it before the result appears.
//!
//! The file is read once per attempt, sequentially, never held whole in
//! memory: at most a few chunks are in flight.

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use futures::StreamExt;
use reach_proto::agent::{ChunkInfo, CommandRef, CompleteChunks};
use sha2::{Digest, Sha256};

use super::{Context, Failure, Stop, Success, classify};

/// Opens the file, failing with the OS error. A directory is refused, and
/// so is anything but a regular file unless `special` allows it: a device
/// such as /dev/zero never ends, and a FIFO blocks. The type is read from
/// the opened file itself (opened without blocking), so it cannot be
/// swapped between the check and the read.
fn open(path: &str, special: bool) -> Result<std::fs::File, Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options
        .open(path)
        .map_err(|e| Failure::new(format!("{path}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| Failure::new(format!("{path}: {e}")))?;
    if meta.is_dir() {
        return Err(Failure::new(format!("{path}: is a directory, not a file")));
    }
    if !meta.is_file() && !special {
        return Err(Failure::new(format!(
            "{path}: is {}, not a regular file; this agent collects devices, FIFOs and sockets only when its operator sets allow_special_files",
            special_kind(&meta)
        )));
    }
    #[cfg(unix)]
    if !meta.is_file() {
        // Reads of a device or FIFO may block: back to blocking reads, on
        // this blocking thread, bounded by the command's timeout.
        set_blocking(&file).map_err(|e| Failure::new(format!("{path}: {e}")))?;
    }
    Ok(file)
}

/// What kind of special file `meta` describes, in words.
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let kind = meta.file_type();
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    let _ = meta;
    "a special file"
}

/// Clears O_NONBLOCK on an open file.
#[cfg(unix)]
#[allow(unsafe_code)]
fn set_blocking(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows for its duration;
    // F_GETFL/F_SETFL only read and set its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads the file chunk by chunk, feeding the whole-file hash in order.
struct Reader {
    file: std::fs::File,
    next: u32,
    chunk_bytes: usize,
    whole: Arc<Mutex<(Sha256, u64)>>,
}

impl Reader {
    fn read_chunk(&mut self) -> std::io::Result<Option<(u32, Vec<u8>)>> {
        // Read into spare capacity: zeroing 8 MiB first would cost a pass.
        let mut raw = Vec::with_capacity(self.chunk_bytes);
        let filled = (&mut self.file)
            .take(self.chunk_bytes as u64)
            .read_to_end(&mut raw)?;
        // An empty file is one empty chunk, so the result is a valid gzip.
        if filled == 0 && self.next > 0 {
            return Ok(None);
        }
        let mut whole = self.whole.lock().unwrap_or_else(|e| e.into_inner());
        whole.0.update(&raw);
        whole.1 += filled as u64;
        drop(whole);
        let n = self.next;
        self.next += 1;
        Ok(Some((n, raw)))
    }
}

/// A chunk ready to go: its description, and the segment to send unless
/// the server already holds these very bytes.
struct Prepared {
    info: ChunkInfo,
    segment: Option<Bytes>,
}

/// `raw` as a deflate segment: a raw deflate stream (no gzip or zlib
/// framing) ended by a sync flush, so that it ends on a byte boundary with
/// no final block and the next chunk's segment can follow it. Each segment
/// is compressed on its own: it never refers back into the chunk before.
fn deflate_segment(raw: &[u8], level: Compression) -> Vec<u8> {
    let mut compress = Compress::new(level, false);
    let mut out = Vec::with_capacity(raw.len() / 2 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = compress.total_in() as usize;
        compress
            .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
            .expect("compressing in memory");
        // Done when all input is taken and the flush left room to spare.
        if compress.total_in() as usize == raw.len() && out.len() < out.capacity() {
            return out;
        }
    }
}

/// `raw` as a deflate segment of stored (uncompressed) blocks, none final,
/// at the speed of a copy (miniz_oxide's stored mode spent more time than
/// hashing the chunk three times). Stored blocks end on a byte boundary by
/// construction; an empty chunk is one empty stored block.
fn stored_segment(raw: &[u8]) -> Vec<u8> {
    const BLOCK: usize = u16::MAX as usize;
    let blocks = raw.len().div_ceil(BLOCK).max(1);
    let mut out = Vec::with_capacity(raw.len() + blocks * 5);
    if raw.is_empty() {
        out.extend_from_slice(&[0, 0, 0, 0xff, 0xff]);
    }
    for piece in raw.chunks(BLOCK) {
        // BFINAL 0, BTYPE 00 (stored), then LEN and its complement.
        out.push(0);
        let len = piece.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// Bytes sampled from a chunk to see whether it compresses.
const SAMPLE: usize = 32 * 1024;

/// False when samples from four places of `raw` do not shrink by 3 %:
/// random or already-compressed bytes (archives, images, memory dumps),
/// which would cost a full compression pass for nothing.
fn worth_compressing(raw: &[u8]) -> bool {
    if raw.len() < 8 * SAMPLE {
        return true;
    }
    let step = (raw.len() - SAMPLE) / 3;
    let (mut sampled, mut compressed) = (0usize, 0usize);
    for i in 0..4 {
        let slice = &raw[i * step..i * step + SAMPLE];
        sampled += slice.len();
        compressed += deflate_segment(slice, Compression::fast()).len();
    }
    compressed * 100 < sampled * 97
}

fn prepare(n: u32, raw: Vec<u8>, stored: Option<ChunkInfo>) -> Prepared {
    // Each byte is hashed with SHA-256 once, for the whole file (`Reader`);
    // a chunk needs only gzip's CRC-32, at the speed of a copy.
    let raw_crc32 = crc32fast::hash(&raw);
    let raw_size = raw.len() as u64;
    if let Some(stored) = stored
        && stored.raw_crc32 == Some(raw_crc32)
        && stored.raw_size == raw_size
    {
        return Prepared {
            info: stored,
            segment: None,
        };
    }
    let mut segment = if worth_compressing(&raw) {
        deflate_segment(&raw, Compression::fast())
    } else {
        Vec::new()
    };
    if segment.is_empty() || segment.len() >= raw.len() {
        segment = stored_segment(&raw);
    }
    Prepared {
        info: ChunkInfo {
            n,
            raw_size,
            raw_crc32: Some(raw_crc32),
            raw_sha256: String::new(),
            stored_size: segment.len() as u64,
            // The server checks the segment by its decompressed bytes.
            stored_sha256: String::new(),
        },
        segment: Some(Bytes::from(segment)),
    }
}

async fn attempt(
    context: &Context,
    command: &CommandRef,
    path: &str,
    chunk_bytes: usize,
) -> Result<String, Stop> {
    let stored = super::held_chunks(context, command).await?;
    let file = open(path, context.allow_special_files).map_err(Stop::Fatal)?;
    let whole = Arc::new(Mutex::new((Sha256::new(), 0u64)));
    let reader = Reader {
        file,
        next: 0,
        chunk_bytes,
        whole: whole.clone(),
    };
    let source = futures::stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let (reader, read) = tokio::task::spawn_blocking(move || {
            let read = reader.read_chunk();
            (reader, read)
        })
        .await
        .ok()?;
        match read {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(reader))),
            Ok(None) => None,
            Err(err) => Some((Err(err), None)),
        }
    });
    // Chunks prepared ahead of the upload: at least three, so that reading
    // and hashing here keep going while the server checks the chunk before
    // (two left one of two cores idle 14 % of the time); at most four, so
    // the agent holds under 80 MiB while it sends (each chunk's 8 MiB and its
    // segment while it is prepared, the segment until it is sent).
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(3, 4);
    let stored = Arc::new(stored);
    let prepared = source
        .map(|read| {
            let stored = stored.clone();
            async move {
                let (n, raw) = read?;
                let known = stored.get(&n).cloned();
                tokio::task::spawn_blocking(move || prepare(n, raw, known))
                    .await
                    .map_err(std::io::Error::other)
            }
        })
        .buffered(workers);
    let mut prepared = std::pin::pin!(prepared);
    let mut chunks = 0;
    let mut sent = 0;
    while let Some(next) = prepared.next().await {
        let next = next.map_err(|e| Stop::Fatal(Failure::new(format!("{path}: {e}"))))?;
        chunks = next.info.n + 1;
        if let Some(segment) = next.segment {
            context
                .client
                .put_chunk(&command.action_id, command.index, &next.info, segment)
                .await
                .map_err(classify)?;
            sent += 1;
        }
    }
    let (hasher, raw_size) = std::mem::take(&mut *whole.lock().unwrap_or_else(|e| e.into_inner()));
    let raw_sha256 = hex::encode(hasher.finalize());
    let complete = CompleteChunks {
        chunks,
        raw_size,
        raw_sha256: raw_sha256.clone(),
    };
    context
        .client
        .complete(&command.action_id, command.index, &complete)
        .await
        .map_err(classify)?;
    tracing::info!(chunks, sent, bytes = raw_size, "file sent");
    Ok(raw_sha256)
}

/// Collects `path`: streams it in deflate segments, resuming after what the server holds.
pub async fn run(
    context: &Context,
    command: &CommandRef,
    path: &str,
    chunk_bytes: u64,
) -> Result<Success, Failure> {
    // Fail at once, with the OS's words, when the file cannot be read.
    let owned = path.to_string();
    let special = context.allow_special_files;
    tokio::task::spawn_blocking(move || open(&owned, special).map(drop))
        .await
        .map_err(|e| Failure::new(e.to_string()))??;
    let chunk_bytes =
        usize::try_from(chunk_bytes.clamp(64 * 1024, 256 * 1024 * 1024)).unwrap_or(8 << 20);
    let sha256 = super::retrying("sending the file", || {
        attempt(context, command, path, chunk_bytes)
    })
    .await?;
    tracing::info!(sha256 = %sha256, "file collected");
    Ok(Success {
        sha256: Some(sha256),
        ..Success::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The segments framed as the server serves them, read by a reader
    /// that stops after the first gzip member.
    fn gunzip(segments: &[&[u8]]) -> Vec<u8> {
        let mut framed = reach_proto::gzip_frame::HEADER.to_vec();
        for segment in segments {
            framed.extend_from_slice(segment);
        }
        let mut out = Vec::new();
        // The raw bytes come from a raw deflate read first, for the trailer.
        flate2::read::DeflateDecoder::new(
            [&framed[10..], &reach_proto::gzip_frame::FINAL_BLOCK[..]]
                .concat()
                .as_slice(),
        )
        .read_to_end(&mut out)
        .unwrap();
        framed.extend_from_slice(&reach_proto::gzip_frame::tail(
            crc32fast::hash(&out),
            out.len() as u64,
        ));
        let mut whole = Vec::new();
        flate2::read::GzDecoder::new(&framed[..])
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole, out);
        whole
    }

    #[test]
    fn incompressible_chunks_are_stored_not_inflated() {
        let noise: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8 ^ (i >> 3) as u8)
            .collect();
        let prepared = prepare(0, noise.clone(), None);
        let segment = prepared.segment.unwrap();
        assert!(segment.len() <= noise.len() + noise.len() / 64 + 64);
        assert_eq!(gunzip(&[&segment]), noise);
        let text = b"log line\n".repeat(10_000);
        let small = prepare(1, text.clone(), None).segment.unwrap();
        assert!(small.len() < text.len() / 10);
        assert_eq!(gunzip(&[&small]), text);
    }

    #[test]
    fn a_chunk_the_server_holds_is_not_prepared_again() {
        let first = prepare(3, b"same bytes".to_vec(), None);
        let again = prepare(3, b"same bytes".to_vec(), Some(first.info.clone()));
        assert!(again.segment.is_none());
        let changed = prepare(3, b"other bytes".to_vec(), Some(first.info));
        assert!(changed.segment.is_some());
    }

    #[test]
    fn random_bytes_skip_compression_and_text_does_not() {
        let mut random = vec![0u8; 1 << 20];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
        assert!(!worth_compressing(&random));
        let text: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("{i:08} sshd[42]: Accepted publickey\n").into_bytes())
            .collect();
        assert!(worth_compressing(&text));
        assert!(worth_compressing(b"short"));
        // Either way the segment holds exactly the bytes.
        let segment = prepare(0, random.clone(), None).segment.unwrap();
        assert_eq!(gunzip(&[&segment]), random);
    }

    #[test]
    fn stored_segments_are_deflate_that_any_decoder_reads() {
        for size in [0usize, 1, 65_534, 65_535, 65_536, 200_000] {
            let raw: Vec<u8> = (0..size).map(|i| (i * 7 + i / 13) as u8).collect();
            let segment = stored_segment(&raw);
            assert_eq!(gunzip(&[&segment]), raw, "size {size}");
            assert_eq!(
                segment.len(),
                raw.len() + raw.len().div_ceil(65_535).max(1) * 5
            );
        }
        assert_eq!(
            gunzip(&[&stored_segment(b"ab"), &stored_segment(b"cd")]),
            b"abcd"
        );
    }

    #[test]
    fn segments_follow_one_another_in_one_gzip_member() {
        let text = b"hello ".repeat(5_000);
        let a = prepare(0, text.clone(), None).segment.unwrap();
        let b = prepare(1, b"world".to_vec(), None).segment.unwrap();
        let c = stored_segment(b"!");
        assert!(!reach_proto::gzip_frame::is_gzip_member(&a));
        assert_eq!(gunzip(&[&a, &b, &c]), [&text[..], b"world!"].concat());
        // A compressed segment ends with the sync flush's empty stored block.
        assert!(a.ends_with(&[0, 0, 0xff, 0xff]), "{:?}", &a[a.len() - 8..]);
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_unless_special_files_are_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let regular = dir.path().join("evidence.log");
        std::fs::write(&regular, b"log").unwrap();
        assert!(open(regular.to_str().unwrap(), false).is_ok());
        let err = open("/dev/zero", false).expect_err("refused");
        assert!(
            err.message.contains("a character device")
                && err.message.contains("allow_special_files"),
            "{}",
            err.message
        );
        // A FIFO with no writer: refused at once, never waited on.
        let fifo = dir.path().join("pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = open(fifo.to_str().unwrap(), false).expect_err("refused");
        assert!(err.message.contains("a FIFO"), "{}", err.message);
        let err = open(dir.path().to_str().unwrap(), true).expect_err("refused");
        assert!(err.message.contains("directory"), "{}", err.message);
        // Allowed, a device opens (and reads as usual).
        let mut zero = open("/dev/zero", true).unwrap();
        let mut buf = [1u8; 16];
        zero.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0u8; 16]);
    }
}
