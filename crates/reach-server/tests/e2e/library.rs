//! The live response library: multipart upload as real clients send it,
//! listing, overriding, deleting, names and size limits.

use reqwest::Method;
use reqwest::multipart::{Form, Part};

use reach_server::testing::*;

#[tokio::test]
async fn upload_list_override_and_delete() {
    let server = TestServer::start().await;
    // Lower-case `file` part without a Content-Type, as real clients send it.
    let form = Form::new()
        .part(
            "file",
            Part::bytes(b"echo one\n".to_vec()).file_name("collect.sh"),
        )
        .text("Description", "collects things")
        .text("HasParameters", "true")
        .text("ParametersDescription", "-target <path>");
    let response = server
        .client
        .request(Method::POST, "/api/libraryfiles")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let entity: serde_json::Value = response.json().await.unwrap();
    insta::assert_json_snapshot!("library_entity", entity, {
        ".creationTime" => "[time]",
        ".lastUpdatedTime" => "[time]",
        "[\"@odata.context\"]" => "[context]",
    });

    let again = Form::new().part(
        "File",
        Part::bytes(b"echo two\n".to_vec()).file_name("collect.sh"),
    );
    let conflict = server
        .client
        .request(Method::POST, "/api/libraryfiles")
        .multipart(again)
        .send()
        .await
        .unwrap();
    let body = assert_error(conflict, 409, "Conflict").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OverrideIfExists")
    );

    let replace = Form::new()
        .part(
            "FILE",
            Part::bytes(b"echo two\n".to_vec()).file_name("collect.sh"),
        )
        .text("OverrideIfExists", "true");
    let replaced = server
        .client
        .request(Method::POST, "/api/libraryfiles")
        .multipart(replace)
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    let list = server.client.library().await.unwrap();
    assert_eq!(list.value.len(), 1);
    assert_eq!(list.value[0].sha256, sha256_hex(b"echo two\n"));
    assert_eq!(
        list.value[0].description, None,
        "an override replaces the description"
    );

    server
        .client
        .delete_library_file("collect.sh")
        .await
        .unwrap();
    assert!(server.client.library().await.unwrap().value.is_empty());
    let gone = server
        .client
        .request(Method::DELETE, "/api/libraryfiles/collect.sh")
        .send()
        .await
        .unwrap();
    assert_error(gone, 404, "ResourceNotFound").await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn bad_names_sizes_and_forms_are_refused() {
    let server = TestServer::start_with(|c| c.limits.library_file_max_bytes = 1024).await;
    let long = "x".repeat(300) + ".sh";
    let names = [
        "../evil.sh",
        "a/b.sh",
        "a\\b.sh",
        "..",
        ".",
        "...sh",
        "nul\0.sh",
        "%2e%2e",
        // Look-alikes: Cyrillic ѕ and і, a ligature, a right-to-left override.
        "ѕcript.sh",
        "scrіpt.sh",
        "ﬁle.sh",
        "\u{202e}hs.exe",
        "with space.sh",
        long.as_str(),
        // Windows device names, which open the device instead of a file.
        "CON",
        "nul.ps1",
        "COM1.bat",
        "lpt3.txt",
        "trailing-dot.",
    ];
    for name in names {
        let form = Form::new().part(
            "file",
            Part::bytes(b"x".to_vec()).file_name(name.to_string()),
        );
        let response = server
            .client
            .request(Method::POST, "/api/libraryfiles")
            .multipart(form)
            .send()
            .await
            .unwrap();
        // A NUL breaks the part's headers themselves: the multipart parser refuses it.
        let code = if name.contains('\0') {
            "BadRequest"
        } else {
            "InvalidInput"
        };
        assert_error(response, 400, code).await;
        // Named in a path, the same names find nothing and break nothing.
        let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let response = server
            .client
            .request(Method::DELETE, &format!("/api/libraryfiles/{encoded}"))
            .send()
            .await
            .unwrap();
        // ("." and ".." are resolved by the URL itself, to other routes.)
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert!(
            (400..500).contains(&status) && body["error"]["code"].is_string(),
            "DELETE {name:?}: {status} {body}"
        );
    }
    assert!(
        server.client.library().await.unwrap().value.is_empty(),
        "nothing stored"
    );
    let big = Form::new().part("file", Part::bytes(vec![7u8; 4096]).file_name("big.bin"));
    let response = server
        .client
        .request(Method::POST, "/api/libraryfiles")
        .multipart(big)
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "RequestEntityTooLarge").await;
    let no_file = Form::new().text("Description", "nothing");
    let response = server
        .client
        .request(Method::POST, "/api/libraryfiles")
        .multipart(no_file)
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "MissingRequiredParameter").await;
    let json = server
        .client
        .request(Method::POST, "/api/libraryfiles")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_error(json, 415, "UnsupportedMediaType").await;
    let bad_bool = Form::new()
        .part("file", Part::bytes(b"x".to_vec()).file_name("ok.sh"))
        .text("OverrideIfExists", "maybe");
    let response = server
        .client
        .request(Method::POST, "/api/libraryfiles")
        .multipart(bad_bool)
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "InvalidInput").await;
    assert!(
        server.client.library().await.unwrap().value.is_empty(),
        "nothing refused was stored"
    );
    // No temporary upload was left behind.
    let tmp = server.dir.path().join("server/blobs/tmp");
    let leftovers = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0);
}

/// Sends an upload over a raw connection: `head` of the multipart body,
/// then `filler` bytes of `byte` for as long as the server reads, then
/// `tail`. Returns the status line's code and how many filler bytes were
/// written before the server answered and closed.
async fn streamed_upload(
    server: &TestServer,
    head: &str,
    byte: u8,
    filler: usize,
    tail: &str,
) -> (u16, String, usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let length = head.len() + filler + tail.len();
    let request = format!(
        "POST /api/libraryfiles HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {length}\r\n\r\n{head}",
        server.client.token().unwrap()
    );
    let (tail, written) = (
        tail.to_string(),
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    );
    let counter = written.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(request.as_bytes()).await?;
        let block = vec![byte; 64 * 1024];
        let mut left = filler;
        while left > 0 {
            let n = left.min(block.len());
            writer.write_all(&block[..n]).await?;
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            left -= n;
        }
        writer.write_all(tail.as_bytes()).await
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, reader.read(&mut buf))
            .await
            .expect("the server answered")
            .unwrap_or(0);
        response.extend_from_slice(&buf[..n]);
        if n == 0 || String::from_utf8_lossy(&response).contains("\"target\"") {
            break;
        }
    }
    let at_answer = written.load(std::sync::atomic::Ordering::Relaxed);
    writing.abort();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text, at_answer)
}

#[tokio::test]
async fn text_parts_and_part_headers_are_refused_once_past_their_bounds() {
    let server = TestServer::start().await;
    let huge = 200 * 1024 * 1024;
    // A 200 MiB Description: refused after its first 16 KiB, not read whole.
    let (status, text, written) = streamed_upload(
        &server,
        "--XyZ\r\nContent-Disposition: form-data; name=\"Description\"\r\n\r\n",
        b'd',
        huge,
        "\r\n--XyZ--\r\n",
    )
    .await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("RequestEntityTooLarge") && text.contains("description part"),
        "{text}"
    );
    assert!(
        written < huge / 4,
        "the server answered after {written} bytes"
    );
    // A part whose headers run on for 200 MiB: refused after 8 KiB of them.
    let (status, text, written) = streamed_upload(
        &server,
        "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.sh\"\r\nX-Pad: ",
        b'p',
        huge,
        "\r\n\r\necho\r\n--XyZ--\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("headers are longer than 8192 bytes"),
        "{text}"
    );
    assert!(
        written < huge / 4,
        "the server answered after {written} bytes"
    );
    assert!(server.client.library().await.unwrap().value.is_empty());
}
