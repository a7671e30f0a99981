//! A bound on the headers of each part of a multipart body, applied to the
//! raw byte stream before the multipart parser sees it. The parser keeps a
//! part's header bytes in memory until it finds their end (a blank line),
//! with no limit of its own, and library uploads take bodies of hundreds of
//! megabytes: without this, one part "header" of 200 MiB would be buffered
//! whole. This module only watches the bytes go by; it never changes them.

use axum::body::Bytes;
use futures::{Stream, StreamExt};

/// Longest header block of one part (its `Content-Disposition`,
/// `Content-Type`, ...) accepted, in bytes.
pub const MAX_PART_HEADERS: usize = 8 * 1024;

/// Why the stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// A part's headers passed the limit.
    #[error("a multipart part's headers are longer than {MAX_PART_HEADERS} bytes")]
    HeadersTooLong,
    /// The body itself failed.
    #[error("{0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where the watcher is in the body.
enum Place {
    /// In a part's data (or the preamble): looking for the next delimiter.
    Data,
    /// After a delimiter: looking for the blank line that ends the part's
    /// headers, which began at this offset.
    Headers { start: u64 },
}

/// Watches a multipart body for part headers longer than `max`. Offsets
/// count from the start of the body (plus the two bytes of a virtual line
/// break before it, so that the first `--boundary` matches like every later
/// `\r\n--boundary`).
struct Watcher {
    delimiter: Vec<u8>,
    place: Place,
    /// The last bytes seen, so that a pattern split between two chunks is
    /// still found, and the offset of its first byte.
    tail: Vec<u8>,
    tail_start: u64,
    /// Where the next search starts: nothing before it is looked at again.
    search_from: u64,
    max: u64,
}

impl Watcher {
    fn new(boundary: &str, max: usize) -> Self {
        Self {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            place: Place::Data,
            tail: b"\r\n".to_vec(),
            tail_start: 0,
            search_from: 0,
            max: max as u64,
        }
    }

    /// Looks at the next chunk; fails once a part's headers run past `max`.
    fn watch(&mut self, chunk: &[u8]) -> Result<(), GuardError> {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        let base = self.tail_start;
        let end = base + window.len() as u64;
        loop {
            let from = (self.search_from.max(base) - base) as usize;
            let rest = &window[from..];
            match self.place {
                Place::Data => match find(rest, &self.delimiter) {
                    Some(i) => {
                        let after = base + (from + i + self.delimiter.len()) as u64;
                        self.place = Place::Headers { start: after };
                        self.search_from = after;
                    }
                    None => break,
                },
                Place::Headers { start } => match find(rest, b"\r\n\r\n") {
                    Some(i) => {
                        let blank = base + (from + i) as u64;
                        if blank - start > self.max {
                            return Err(GuardError::HeadersTooLong);
                        }
                        self.place = Place::Data;
                        self.search_from = blank + 4;
                    }
                    None if end - start > self.max => return Err(GuardError::HeadersTooLong),
                    None => break,
                },
            }
        }
        // A match not found yet starts within the last (pattern length - 1) bytes.
        let keep = match self.place {
            Place::Data => self.delimiter.len() - 1,
            Place::Headers { .. } => 3,
        };
        let cut = window.len().saturating_sub(keep);
        self.tail = window[cut..].to_vec();
        self.tail_start = base + cut as u64;
        Ok(())
    }
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut from = 0;
    while let Some(offset) = haystack[from..=haystack.len() - needle.len()]
        .iter()
        .position(|b| *b == first)
    {
        let start = from + offset;
        if &haystack[start..start + needle.len()] == needle {
            return Some(start);
        }
        from = start + 1;
    }
    None
}

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    let mime = pieces.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    pieces
        .filter_map(|p| p.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

/// `stream` unchanged, ending with `HeadersTooLong` as soon as one part's
/// headers run past `max` bytes.
pub fn bounded<S, E>(
    stream: S,
    boundary: &str,
    max: usize,
) -> impl Stream<Item = Result<Bytes, GuardError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut watcher = Watcher::new(boundary, max);
    let mut failed = false;
    stream.map(move |item| {
        if failed {
            return Err(GuardError::HeadersTooLong);
        }
        let chunk = item.map_err(|e| GuardError::Body(Box::new(e)))?;
        if let Err(err) = watcher.watch(&chunk) {
            failed = true;
            return Err(err);
        }
        Ok(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(header_len: usize) -> Vec<u8> {
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"Description\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.sh\"\r\nX-Pad: ".to_vec();
        body.extend(std::iter::repeat_n(b'p', header_len));
        body.extend_from_slice(b"\r\n\r\necho --XyZ hi\r\n\r\n--XyZ--\r\n");
        body
    }

    /// Feeds `body` in chunks of `size`; whether the watcher accepted it.
    fn accepts(body: &[u8], size: usize, max: usize) -> bool {
        let mut watcher = Watcher::new("XyZ", max);
        body.chunks(size).all(|chunk| watcher.watch(chunk).is_ok())
    }

    #[test]
    fn headers_within_the_bound_pass_in_any_chunking() {
        let ok = body(100);
        for size in [1, 2, 3, 5, 7, 64, 4096] {
            assert!(accepts(&ok, size, 512), "chunks of {size}");
        }
    }

    #[test]
    fn long_headers_are_refused_in_any_chunking() {
        let long = body(2000);
        for size in [1, 3, 7, 64, 4096, long.len()] {
            assert!(!accepts(&long, size, 512), "chunks of {size}");
        }
        // Data that only looks like headers is not counted.
        let mut data =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
                .to_vec();
        data.extend(std::iter::repeat_n(b'd', 100_000));
        data.extend_from_slice(b"\r\n--XyZ--\r\n");
        assert!(accepts(&data, 1000, 512));
        // A part whose headers never end.
        let mut endless = b"--XyZ\r\nContent-Disposition: ".to_vec();
        endless.extend(std::iter::repeat_n(b'h', 100_000));
        assert!(!accepts(&endless, 4096, 512));
    }

    #[test]
    fn boundaries_are_read_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary("Multipart/Form-Data; charset=utf-8; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }
}
