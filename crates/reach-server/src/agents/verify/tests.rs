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
