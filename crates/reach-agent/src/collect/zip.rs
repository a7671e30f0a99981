//! A zip archive written as it goes: each entry deflated (or stored, when
//! deflate does not make it smaller) with its CRC-32 and sizes in the local
//! header, then the central directory. Enough for the investigation
//! package; it never holds more than one entry in memory and refuses what
//! would need ZIP64 (an entry or the archive past 4 GiB, 65,535 entries),
//! which the collector's bounds keep far away.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::DeflateEncoder;

/// One entry of the central directory.
struct Central {
    name: String,
    method: u16,
    crc32: u32,
    compressed: u32,
    size: u32,
    offset: u32,
}

/// A zip archive being written to `W`.
pub struct ZipWriter<W: Write> {
    out: W,
    written: u64,
    entries: Vec<Central>,
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the package would need ZIP64 (over 4 GiB or 65,535 entries)",
    )
}

/// MS-DOS date and time of 1980-01-01 00:00: entries carry no time of
/// their own (the manifest says when the package was collected).
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (1 << 5) | 1;

impl<W: Write> ZipWriter<W> {
    /// An empty archive writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            entries: Vec::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Adds `name` (a relative path with `/`) holding `bytes`.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if self.entries.len() >= usize::from(u16::MAX) || bytes.len() > u32::MAX as usize {
            return Err(too_large());
        }
        let crc32 = crc32fast::hash(bytes);
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes)?;
        let deflated = encoder.finish()?;
        let (method, data): (u16, &[u8]) = if deflated.len() < bytes.len() {
            (8, &deflated)
        } else {
            (0, bytes)
        };
        let offset = u32::try_from(self.written).map_err(|_| too_large())?;
        let entry = Central {
            name: name.to_string(),
            method,
            crc32,
            compressed: data.len() as u32,
            size: bytes.len() as u32,
            offset,
        };
        let mut header = Vec::with_capacity(30 + name.len());
        header.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        header.extend_from_slice(&20u16.to_le_bytes()); // version needed
        header.extend_from_slice(&0x0800u16.to_le_bytes()); // names are UTF-8
        header.extend_from_slice(&method.to_le_bytes());
        header.extend_from_slice(&DOS_TIME.to_le_bytes());
        header.extend_from_slice(&DOS_DATE.to_le_bytes());
        header.extend_from_slice(&crc32.to_le_bytes());
        header.extend_from_slice(&entry.compressed.to_le_bytes());
        header.extend_from_slice(&entry.size.to_le_bytes());
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // no extra field
        header.extend_from_slice(name.as_bytes());
        self.put(&header)?;
        self.put(data)?;
        if self.written > u64::from(u32::MAX) {
            return Err(too_large());
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Writes the central directory; the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        let start = u32::try_from(self.written).map_err(|_| too_large())?;
        let entries = std::mem::take(&mut self.entries);
        for entry in &entries {
            let mut record = Vec::with_capacity(46 + entry.name.len());
            record.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            record.extend_from_slice(&(0x0300u16 | 20).to_le_bytes()); // made by: Unix
            record.extend_from_slice(&20u16.to_le_bytes());
            record.extend_from_slice(&0x0800u16.to_le_bytes());
            record.extend_from_slice(&entry.method.to_le_bytes());
            record.extend_from_slice(&DOS_TIME.to_le_bytes());
            record.extend_from_slice(&DOS_DATE.to_le_bytes());
            record.extend_from_slice(&entry.crc32.to_le_bytes());
            record.extend_from_slice(&entry.compressed.to_le_bytes());
            record.extend_from_slice(&entry.size.to_le_bytes());
            record.extend_from_slice(&(entry.name.len() as u16).to_le_bytes());
            record.extend_from_slice(&0u16.to_le_bytes()); // extra
            record.extend_from_slice(&0u16.to_le_bytes()); // comment
            record.extend_from_slice(&0u16.to_le_bytes()); // disk
            record.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            record.extend_from_slice(&(0o100_644u32 << 16).to_le_bytes()); // a regular file, 0644
            record.extend_from_slice(&entry.offset.to_le_bytes());
            record.extend_from_slice(entry.name.as_bytes());
            self.put(&record)?;
        }
        let size = u32::try_from(self.written - u64::from(start)).map_err(|_| too_large())?;
        let count = entries.len() as u16;
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&size.to_le_bytes());
        end.extend_from_slice(&start.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes()); // no comment
        self.put(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `python3 -m zipfile` (CPython's reader) says of the archive:
    /// every entry's name and bytes, checked against its CRC-32.
    #[test]
    fn an_archive_reads_back_whole_in_another_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("package.zip");
        let mut zip = ZipWriter::new(std::fs::File::create(&path).unwrap());
        let text = "ps output\n".repeat(1000);
        zip.add("Processes/ps.txt", text.as_bytes()).unwrap();
        zip.add("empty.txt", b"").unwrap();
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        zip.add("Système/random.bin", &random).unwrap();
        zip.finish().unwrap();
        let check = "import zipfile,sys\nz=zipfile.ZipFile(sys.argv[1])\nassert z.testzip() is None\nprint(sorted(z.namelist()))\nprint(len(z.read('Processes/ps.txt')), len(z.read('empty.txt')), len(z.read('Système/random.bin')))";
        let Some(said) = super::super::python_reads(check, &path) else {
            return;
        };
        assert!(
            said.contains("['Processes/ps.txt', 'Système/random.bin', 'empty.txt']"),
            "{said}"
        );
        assert!(said.contains(&format!("{} 0 4096", text.len())), "{said}");
    }
}
