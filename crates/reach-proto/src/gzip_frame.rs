//! The framing that turns a GetFile's deflate segments into one gzip file.
//! An agent sends each chunk as a deflate segment (a raw deflate stream
//! ended by a sync flush, with no final block); the server serves the
//! result as `HEADER`, the segments in order, then `tail(crc, size)`: one
//! gzip member that every reader, including those that stop after the
//! first member, reads whole. Only the bytes of that frame live here; this
//! module never compresses or checks anything.

/// A gzip member header: ID1 ID2, deflate, no flags, no modification time,
/// no extra flags, OS unknown (RFC 1952, 2.3).
pub const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A final, empty deflate block (fixed Huffman codes, end of block only):
/// what ends the stream after the last segment.
pub const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// What follows the last segment: the final block, then the whole file's
/// CRC-32 and its size modulo 2^32, as gzip defines them.
pub fn tail(crc32: u32, size: u64) -> [u8; 10] {
    let mut tail = [0u8; 10];
    tail[..2].copy_from_slice(&FINAL_BLOCK);
    tail[2..6].copy_from_slice(&crc32.to_le_bytes());
    tail[6..].copy_from_slice(&(size as u32).to_le_bytes());
    tail
}

/// Whether `bytes` open with a gzip member's magic number: what agents
/// built before segments sent as a chunk. A deflate segment never does
/// (0x1f would be a final block of the reserved type 3).
pub fn is_gzip_member(bytes: &[u8]) -> bool {
    bytes.starts_with(&HEADER[..2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_holds_the_crc_and_the_size_modulo_2_pow_32() {
        let tail = tail(0xdead_beef, (5u64 << 32) + 7);
        assert_eq!(tail[..2], FINAL_BLOCK);
        assert_eq!(tail[2..6], 0xdead_beef_u32.to_le_bytes());
        assert_eq!(tail[6..], 7u32.to_le_bytes());
        assert!(is_gzip_member(&HEADER));
        assert!(!is_gzip_member(&[0, 0, 0, 0xff, 0xff]));
    }
}
