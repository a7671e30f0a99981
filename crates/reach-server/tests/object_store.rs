//! `Files` on each object store Reach supports: the local disk and a real
//! S3 server (the bucket named by REACH_TEST_S3_URL, with AWS_* set for it;
//! without it the S3 half prints a skip notice). Large objects go up as
//! multipart uploads; S3 results are handed out as presigned URLs that the
//! S3 server itself checks.

// Helpers here panic on what a test cannot go on without.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use futures::StreamExt;
use rand::RngCore;
use reach_server::files::{FileError, Files};
use reach_server::testing;
use sha2::{Digest, Sha256};

async fn stores() -> Vec<(&'static str, Files, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![("local", Files::open("", dir.path()).unwrap(), dir)];
    if let Some(url) = testing::fresh_s3_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(&url, dir.path()).expect("opening S3 from AWS_* variables");
        all.push(("s3", files, dir));
    }
    all
}

fn random(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// `bytes` as a stream of 1 MiB pieces, as a request body arrives.
fn body(bytes: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let pieces: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(1 << 20)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(pieces)
}

async fn read(files: &Files, key: &str) -> Vec<u8> {
    let (size, mut stream) = files.get_stream(key).await.unwrap();
    let mut out = Vec::new();
    while let Some(piece) = stream.next().await {
        out.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(size, out.len() as u64);
    out
}

#[tokio::test]
async fn large_objects_stream_in_parts_and_compose_into_one() {
    for (name, files, _dir) in stores().await {
        // 20 MiB: three parts of a multipart upload.
        let first = random(20 << 20);
        let stored = files
            .put_stream("results/a/0/chunks/00000000", body(&first), None)
            .await
            .unwrap();
        assert_eq!(stored.size, first.len() as u64, "{name}");
        assert_eq!(stored.sha256, hex::encode(Sha256::digest(&first)));
        assert_eq!(read(&files, "results/a/0/chunks/00000000").await, first);
        let range = files
            .get_range("results/a/0/chunks/00000000", 1000..2000)
            .await
            .unwrap();
        assert_eq!(&range[..], &first[1000..2000], "{name}");
        let second = random(3 << 20);
        files
            .put_stream("results/a/0/chunks/00000001", body(&second), None)
            .await
            .unwrap();
        let parts = vec![
            "results/a/0/chunks/00000000".to_string(),
            "results/a/0/chunks/00000001".to_string(),
        ];
        let composed = files.compose(&parts, "results/a/whole").await.unwrap();
        let whole = [first, second].concat();
        assert_eq!(
            composed.sha256,
            hex::encode(Sha256::digest(&whole)),
            "{name}"
        );
        assert_eq!(read(&files, "results/a/whole").await, whole);
        files
            .rename("results/a/whole", "results/b/0")
            .await
            .unwrap();
        assert!(matches!(
            files.size("results/a/whole").await,
            Err(FileError::NotFound(_))
        ));
        files.delete("results/b/0").await.unwrap();
        files.delete("results/b/0").await.unwrap();
        files.probe().await.unwrap();
    }
}

#[tokio::test]
async fn an_oversized_upload_leaves_nothing() {
    for (name, files, _dir) in stores().await {
        let bytes = random(9 << 20);
        let err = files
            .put_stream("library/t/x", body(&bytes), Some(8 << 20))
            .await
            .unwrap_err();
        assert!(matches!(err, FileError::TooLarge(_)), "{name}: {err}");
        assert!(matches!(
            files.size("library/t/x").await,
            Err(FileError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn s3_links_are_presigned_and_checked_by_the_store() {
    let Some(url) = testing::fresh_s3_prefix() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files = Files::open(&url, dir.path()).unwrap();
    assert!(files.presigns());
    let bytes = random(64 * 1024);
    files
        .put_stream("results/x/1", body(&bytes), None)
        .await
        .unwrap();
    let link = files
        .presigned_get(
            "results/x/1",
            std::time::Duration::from_secs(1800),
            "evidence.log.gz",
            "application/gzip",
        )
        .await
        .unwrap()
        .expect("S3 presigns");
    let query: Vec<(String, String)> = link.query_pairs().into_owned().collect();
    let expires = query.iter().find(|(k, _)| k == "X-Amz-Expires").unwrap();
    assert_eq!(expires.1, "1800", "valid 30 minutes");
    let response = reqwest::get(link.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    assert!(disposition.contains("evidence.log.gz"), "{disposition}");
    assert_eq!(response.bytes().await.unwrap().as_ref(), &bytes[..]);
    // The S3 server refuses a link whose signature does not match.
    let mut forged = link.clone();
    let pairs: Vec<(String, String)> = query
        .into_iter()
        .map(|(k, v)| {
            if k == "X-Amz-Expires" {
                (k, "604800".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let refused = reqwest::get(forged).await.unwrap();
    assert_eq!(refused.status(), 403);

    let local = Files::open("", dir.path()).unwrap();
    assert!(
        local
            .presigned_get("results/x/1", std::time::Duration::from_secs(1), "f", "t")
            .await
            .unwrap()
            .is_none(),
        "local files are served by the node's own signed links"
    );
}
