//! File bytes: library files and command results, kept in an object store
//! through `object_store`: `LocalFileSystem` under the data directory by
//! default, or S3-compatible storage (`s3://bucket/prefix`) shared by every
//! node. Bytes always stream in and out in chunks (multipart uploads),
//! hashed on the way; nothing here ever holds a whole file in memory, and
//! nothing here knows about the database. With S3, results are handed out
//! as presigned GET URLs, so their bytes never pass through a node.
//!
//! Keys: `library/{tenant}/{sha256}` (content-addressed, so an override never
//! changes bytes an action already refers to), `transcripts/{day}/{action}.{index}`
//! (an uploaded transcript; earlier versions used `results/{action}/{index}`
//! and `...{index}.{random}` for one sent with the outcome, which is now
//! kept in the database instead; every result's key is recorded with it), `results/{action}/{index}/segments/`
//! (a collected file: `head`, the deflate segments `{n}`, `tail`, served one
//! after another as one gzip member; results collected before segments are
//! gzip members under `.../chunks/{n}`) or `.../collected.gz` (the parts
//! composed, on S3), and `tmp/{uuid}` while an upload is in flight.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};

/// Why a file could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The upload passed this many bytes.
    #[error("the file is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The upload's stream failed (the client went away or stalled).
    #[error("the upload was interrupted: {0}")]
    Body(String),
    /// No object under that key.
    #[error("{0} was not found")]
    NotFound(String),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// Size and hex SHA-256 of stored bytes (the hash empty when not asked for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Bytes stored.
    pub size: u64,
    /// Hex SHA-256 of the bytes stored.
    pub sha256: String,
}

/// The object store every file goes through: library files, results and their chunks.
#[derive(Clone)]
pub struct Files {
    store: Arc<dyn ObjectStore>,
    /// Set for S3: signs result download URLs.
    signer: Option<Arc<AmazonS3>>,
    /// Prepended to every key (`s3://bucket/prefix`), empty or ending in `/`.
    prefix: String,
    /// Where the files are, for logs (no credentials).
    location: String,
}

/// Upload part size: large enough for S3's 5 MiB minimum.
const PART_SIZE: usize = 8 * 1024 * 1024;

impl Files {
    /// The object store named by `url`: empty for `<data_dir>/blobs`,
    /// `file:///path`, or `s3://bucket[/prefix]` (credentials, region and
    /// endpoint from the AWS_* environment variables).
    pub fn open(url: &str, data_dir: &Path) -> anyhow::Result<Self> {
        if url.is_empty() {
            return Self::local_at(&data_dir.join("blobs"));
        }
        let parsed = url::Url::parse(url)
            .with_context(|| format!("parsing the object store URL '{url}'"))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| anyhow::anyhow!("'{url}' is not a local path"))?;
                Self::local_at(&path)
            }
            "s3" => {
                let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
                    anyhow::anyhow!("'{url}' names no bucket: use s3://bucket/prefix")
                })?;
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .with_context(|| {
                        format!("configuring S3 for {url} from the AWS_* variables")
                    })?;
                let prefix = parsed.path().trim_matches('/');
                let s3 = Arc::new(s3);
                Ok(Self {
                    store: s3.clone(),
                    signer: Some(s3),
                    prefix: if prefix.is_empty() {
                        String::new()
                    } else {
                        format!("{prefix}/")
                    },
                    location: format!("s3://{bucket}/{prefix}"),
                })
            }
            other => anyhow::bail!(
                "unsupported object store URL scheme '{other}:': use file:///path or s3://bucket/prefix"
            ),
        }
    }

    /// Files under `<dir>/blobs` on the local disk.
    pub fn local(dir: &Path) -> anyhow::Result<Self> {
        Self::local_at(&dir.join("blobs"))
    }

    fn local_at(root: &Path) -> anyhow::Result<Self> {
        crate::data_dir::create_private_dir(root)?;
        let store = LocalFileSystem::new_with_prefix(root)
            .with_context(|| format!("opening {}", root.display()))?
            .with_automatic_cleanup(true);
        Ok(Self {
            store: Arc::new(store),
            signer: None,
            prefix: String::new(),
            location: root.display().to_string(),
        })
    }

    /// Where the files are (a directory or `s3://bucket/prefix`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// True when results are served by presigned URLs straight from the
    /// object store (S3), which needs each result as one object.
    pub fn presigns(&self) -> bool {
        self.signer.is_some()
    }

    /// A presigned GET URL for `key`, valid for `ttl`, that makes the store
    /// answer with `file_name` and `content_type`. None for local files.
    pub async fn presigned_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
        file_name: &str,
        content_type: &str,
    ) -> Result<Option<url::Url>, FileError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let options = SignedUrlOptions::new().with_query([
            (
                "response-content-disposition",
                format!("attachment; filename=\"{file_name}\""),
            ),
            ("response-content-type", content_type.to_string()),
        ]);
        let url = signer
            .signed_url_opts(Method::GET, &self.path(key), ttl, &options)
            .await?;
        Ok(Some(url))
    }

    fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{key}", self.prefix))
    }

    /// Where a tenant's library file of this hash is stored.
    pub fn library_key(tenant_id: &str, sha256: &str) -> String {
        format!("library/{tenant_id}/{sha256}")
    }

    /// A RunScript transcript, under the day it arrived (UTC). One
    /// directory a day rather than one per action: on the local disk a
    /// directory per action cost more than writing the transcript.
    pub fn transcript_key(action_id: &str, index: u32, now: crate::time::Micros) -> String {
        let day = now.to_wire().get(..10).unwrap_or("undated").to_string();
        format!("transcripts/{day}/{action_id}.{index}")
    }

    /// A chunked result composed into one object (S3, for one presigned URL).
    /// Beside its chunks, never at their prefix: stores that keep keys as
    /// paths (MinIO, s3s-fs) cannot hold `a/b` and `a/b/c` at once.
    pub fn composed_key(action_id: &str, index: u32) -> String {
        format!("results/{action_id}/{index}/collected.gz")
    }

    /// Prefix of a chunked result's objects.
    pub fn chunks_prefix(action_id: &str, index: u32) -> String {
        format!("results/{action_id}/{index}/segments")
    }

    /// Prefix of the chunks of a result collected before segments: gzip
    /// members, served one after another as they were.
    pub fn legacy_chunks_prefix(action_id: &str, index: u32) -> String {
        format!("results/{action_id}/{index}/chunks")
    }

    /// The objects of a chunked result under `prefix`, in the order they
    /// are served: for segments the gzip header, the `chunks` segments and
    /// the tail (one gzip member); for a legacy prefix its gzip members.
    pub fn result_parts(prefix: &str, chunks: u32) -> Vec<String> {
        let legacy = prefix.ends_with("/chunks");
        let mut parts = Vec::with_capacity(chunks as usize + 2);
        if !legacy {
            parts.push(format!("{prefix}/head"));
        }
        parts.extend((0..chunks).map(|n| Self::chunk_key(prefix, n)));
        if !legacy {
            parts.push(format!("{prefix}/tail"));
        }
        parts
    }

    /// Chunk `n` under a chunked result's prefix.
    pub fn chunk_key(prefix: &str, n: u32) -> String {
        format!("{prefix}/{n:08}")
    }

    /// Stores a few bytes held in memory at `key`.
    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<Stored, FileError> {
        self.put_stream(
            key,
            futures::stream::iter([Ok::<_, std::io::Error>(bytes)]),
            None,
        )
        .await
    }

    /// Streams `body` into `key`, hashing it; fails with `TooLarge` (and
    /// stores nothing) once more than `max_bytes` arrive. The object appears
    /// only when complete.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        body: S,
        max_bytes: Option<u64>,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.put_stream_hashing(key, body, max_bytes, true).await
    }

    /// `put_stream`, hashing only when `hash` (otherwise `Stored::sha256`
    /// is empty): for bytes whose caller checks them another way.
    pub async fn put_stream_hashing<S, E>(
        &self,
        key: &str,
        body: S,
        max_bytes: Option<u64>,
        hash: bool,
    ) -> Result<Stored, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut hasher = hash.then(Sha256::new);
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        // The first part is held in memory: a body that ends within it (a
        // transcript, most scripts) is stored with one plain put; a longer
        // one becomes a multipart upload.
        let mut first_part = Vec::new();
        let mut writer: Option<WriteMultipart> = None;
        while let Some(chunk) = body.next().await {
            let failed = match chunk {
                Err(err) => Some(FileError::Body(err.to_string())),
                Ok(chunk) => {
                    size += chunk.len() as u64;
                    if max_bytes.is_some_and(|max| size > max) {
                        Some(FileError::TooLarge(max_bytes.unwrap_or_default()))
                    } else {
                        if let Some(hasher) = &mut hasher {
                            hasher.update(&chunk);
                        }
                        self.write_part(&mut writer, &mut first_part, size, chunk, key)
                            .await
                            .err()
                    }
                }
            };
            if let Some(err) = failed {
                if let Some(writer) = writer {
                    let _ = writer.abort().await;
                }
                return Err(err);
            }
        }
        match writer {
            Some(writer) => {
                writer.finish().await?;
            }
            None => {
                let payload = object_store::PutPayload::from_iter(first_part);
                self.store.put(&self.path(key), payload).await?;
            }
        }
        Ok(Stored {
            size,
            sha256: hasher
                .map(|h| hex::encode(h.finalize()))
                .unwrap_or_default(),
        })
    }

    /// Holds `chunk` in the first part while `size` (bytes so far) fits in
    /// it; past it, starts the multipart upload with the first part and
    /// sends it and everything after through `writer`.
    async fn write_part(
        &self,
        writer: &mut Option<WriteMultipart>,
        first_part: &mut Vec<Bytes>,
        size: u64,
        chunk: Bytes,
        key: &str,
    ) -> Result<(), FileError> {
        match writer {
            Some(writer) => {
                writer.wait_for_capacity(4).await?;
                writer.put(chunk);
            }
            None => {
                first_part.push(chunk);
                if size > PART_SIZE as u64 {
                    let upload = self.store.put_multipart(&self.path(key)).await?;
                    let mut started = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
                    for held in first_part.drain(..) {
                        started.put(held);
                    }
                    *writer = Some(started);
                }
            }
        }
        Ok(())
    }

    /// The size and a byte stream of `key`.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, object_store::Error>>), FileError> {
        match self.store.get(&self.path(key)).await {
            Ok(result) => Ok((result.meta.size, result.into_stream())),
            Err(object_store::Error::NotFound { .. }) => Err(FileError::NotFound(key.to_string())),
            Err(err) => Err(err.into()),
        }
    }

    /// The size of `key`.
    pub async fn size(&self, key: &str) -> Result<u64, FileError> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(FileError::NotFound(key.to_string())),
            Err(err) => Err(err.into()),
        }
    }

    /// The bytes of `key` in `range` (for one chunk; never a whole file).
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, FileError> {
        match self.store.get_range(&self.path(key), range).await {
            Ok(bytes) => Ok(bytes),
            Err(object_store::Error::NotFound { .. }) => Err(FileError::NotFound(key.to_string())),
            Err(err) => Err(err.into()),
        }
    }

    /// Answers when the object store is reachable (a missing probe object is fine).
    pub async fn probe(&self) -> Result<(), FileError> {
        match self.size("readyz-probe").await {
            Ok(_) | Err(FileError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Fails with `NotFound` unless `key` exists.
    pub async fn check_exists(&self, key: &str) -> Result<(), FileError> {
        self.size(key).await.map(drop)
    }

    /// Moves an object to another key.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), FileError> {
        self.store.rename(&self.path(from), &self.path(to)).await?;
        Ok(())
    }

    /// Streams the objects `parts`, in order, into the one object `key`
    /// (a multipart upload; one part in memory at a time).
    pub async fn compose(&self, parts: &[String], key: &str) -> Result<Stored, FileError> {
        self.put_stream(key, self.concat(parts.to_vec()), None)
            .await
    }

    /// The bytes of `keys`, one object after another, each opened only
    /// when the one before it has been read.
    pub fn concat(&self, keys: Vec<String>) -> BoxStream<'static, Result<Bytes, FileError>> {
        let files = self.clone();
        futures::stream::iter(keys)
            .then(move |key| {
                let files = files.clone();
                async move { files.get_stream(&key).await }
            })
            .map(|opened| match opened {
                Ok((_, stream)) => stream.map(|r| r.map_err(FileError::from)).boxed(),
                Err(err) => futures::stream::once(async move { Err(err) }).boxed(),
            })
            .flatten()
            .boxed()
    }

    /// Deletes `key`; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), FileError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn streams_in_and_out_with_hash() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::local(dir.path()).unwrap();
        let stored = files
            .put_stream("results/a/0", chunks(&[b"hello ", b"world"]), None)
            .await
            .unwrap();
        assert_eq!(stored.size, 11);
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(b"hello world")));
        let (size, stream) = files.get_stream("results/a/0").await.unwrap();
        let bytes: Vec<Bytes> = stream.map(|c| c.unwrap()).collect().await;
        assert_eq!(size, 11);
        assert_eq!(bytes.concat(), b"hello world");
    }

    #[tokio::test]
    async fn oversized_upload_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::local(dir.path()).unwrap();
        let err = files
            .put_stream("tmp/x", chunks(&[b"12345", b"67890"]), Some(8))
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::TooLarge(8)));
        assert!(matches!(
            files.get_stream("tmp/x").await,
            Err(FileError::NotFound(_))
        ));
    }
}
