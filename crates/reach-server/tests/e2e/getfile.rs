//! A collected file is served as exactly one gzip member, whatever its
//! chunks: readers that stop after the first member (.NET Framework's
//! GZipStream, Python's `zlib.decompressobj(31)`, flate2's `GzDecoder`)
//! get the whole file, and gzip's own tools read its size from the trailer.

use reach_server::testing::*;

/// A file of several 64 KiB chunks, some compressible, some not, and a
/// last one cut short.
fn evidence() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..6_000)
        .flat_map(|i| format!("{i:06} sshd[42]: Accepted publickey for root\n").into_bytes())
        .collect();
    let mut noise = vec![0u8; 200_000];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut noise);
    bytes.extend_from_slice(&noise);
    bytes.extend_from_slice(&b"tail of the log\n".repeat(2_000));
    bytes.extend_from_slice(b"no newline at the end");
    bytes
}

/// Collects `file` from a device of `server` and returns the result as served.
async fn collect(server: &TestServer, file: &[u8]) -> Vec<u8> {
    let device = server.agent().await;
    let path = device.work_dir().join("evidence.log");
    std::fs::create_dir_all(device.work_dir()).unwrap();
    std::fs::write(&path, file).unwrap();
    // `run` waits until the action is final.
    let done = server
        .run(&device.machine_id, vec![get_file(path.to_str().unwrap())])
        .await;
    assert_status(&done, reach_proto::api::ActionStatus::Succeeded);
    server.result(&done.id, 0).await
}

#[tokio::test]
async fn a_file_of_many_chunks_is_one_gzip_member() {
    let server =
        TestServer::start_with(|config| config.live_response.chunk_bytes = 64 * 1024).await;
    let file = evidence();
    assert!(file.len() > 6 * 64 * 1024, "several chunks: {}", file.len());
    let served = collect(&server, &file).await;
    // `gunzip` reads one member only and refuses anything after it.
    assert_eq!(gunzip(&served), file);

    // gzip itself: the trailer's size is the file's, and the CRC checks out.
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("evidence.log.gz");
    std::fs::write(&saved, &served).unwrap();
    let test = std::process::Command::new("gzip")
        .arg("-t")
        .arg(&saved)
        .status()
        .expect("gzip runs");
    assert!(test.success(), "gzip -t refused the result");
    let listed = std::process::Command::new("gzip")
        .arg("-l")
        .arg(&saved)
        .output()
        .expect("gzip runs");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let sizes: Vec<u64> = listed
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(sizes, [served.len() as u64, file.len() as u64], "{listed}");
}

#[tokio::test]
async fn an_empty_file_is_one_valid_gzip_member() {
    let server = TestServer::start().await;
    let served = collect(&server, b"").await;
    assert!(gunzip(&served).is_empty());
}
