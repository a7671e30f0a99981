//! GetFile: streams a file from the device to the server, gzip-compressed on
//! the way, hashing the original bytes. The file is read in chunks on a
//! blocking thread and never held whole in memory.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use reach_proto::agent::CommandRef;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Context, Failure, Success};

const CHUNK: usize = 256 * 1024;

/// A `Write` that sends what it is given, in chunks, to an async receiver.
struct ChannelWriter {
    buffer: Vec<u8>,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

/// Reads `file`, gzips it into `sender`, and returns the original's SHA-256.
fn compress(
    mut file: std::fs::File,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> std::io::Result<String> {
    let writer = ChannelWriter {
        buffer: Vec::with_capacity(CHUNK),
        sender: sender.clone(),
    };
    let mut encoder = GzEncoder::new(writer, Compression::fast());
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let result = (|| {
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            encoder.write_all(&buf[..n])?;
        }
        let mut writer = encoder.finish()?;
        writer.flush()
    })();
    if let Err(err) = &result {
        // Fail the upload body so the server does not store a truncated file.
        let _ = sender.blocking_send(Err(std::io::Error::new(err.kind(), err.to_string())));
    }
    result.map(|()| hex::encode(hasher.finalize()))
}

pub async fn run(context: &Context, command: &CommandRef, path: &str) -> Result<Success, Failure> {
    let opened = {
        let path = path.to_string();
        tokio::task::spawn_blocking(move || -> Result<std::fs::File, Failure> {
            let file =
                std::fs::File::open(&path).map_err(|e| Failure::new(format!("{path}: {e}")))?;
            let meta = file
                .metadata()
                .map_err(|e| Failure::new(format!("{path}: {e}")))?;
            if meta.is_dir() {
                return Err(Failure::new(format!("{path}: is a directory, not a file")));
            }
            Ok(file)
        })
        .await
        .map_err(|e| Failure::new(e.to_string()))??
    };
    let (sender, receiver) = mpsc::channel(4);
    let reader = tokio::task::spawn_blocking(move || compress(opened, sender));
    let stream = futures::stream::unfold(receiver, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let upload = context.client.upload_result(
        &command.action_id,
        command.index,
        reach_client::reqwest::Body::wrap_stream(stream),
    );
    let (uploaded, read) = tokio::join!(upload, reader);
    // The server's answer first: when it refuses the upload, reading stops
    // with a broken pipe, which says less than the server's reason.
    uploaded?;
    let sha256 = read
        .map_err(|e| Failure::new(e.to_string()))?
        .map_err(|e| Failure::new(format!("{path}: {e}")))?;
    tracing::info!(sha256 = %sha256, "file collected");
    Ok(Success {
        sha256: Some(sha256),
        result: None,
    })
}
