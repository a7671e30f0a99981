//! What one client may hold open, and how slowly it may send: slow headers,
//! idle keep-alive connections, slow bodies and streamed uploads are cut
//! off; connections past the per-address and total caps are closed at once,
//! while agents' WebSockets do not count against them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use reach_server::testing::*;

/// A TCP connection to `server` from `source` (any 127.0.0.0/8 address).
async fn connect(server: &TestServer, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(format!("{source}:0").parse::<SocketAddr>().unwrap())
        .unwrap();
    let address: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();
    socket.connect(address).await.unwrap()
}

/// Reads until the server closes the connection; what it sent, and when.
async fn until_closed(stream: &mut TcpStream) -> (String, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open"),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        Instant::now(),
    )
}

/// Sends `head`, then `count` bytes of `byte` one every 300 ms until the
/// server hangs up; what the server said before closing.
async fn trickle(stream: TcpStream, head: &[u8], byte: u8, count: usize) -> String {
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head).await.unwrap();
    let writing = tokio::spawn(async move {
        for _ in 0..count {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, reader.read_to_end(&mut answer)).await;
    writing.abort();
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed() {
    let server = TestServer::start_with(|c| c.http.header_timeout_secs = 1).await;
    // Slowloris: a header byte every 300 ms never completes the request.
    let slow = connect(&server, "127.0.0.31").await;
    let started = Instant::now();
    let said = trickle(slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b'X', 200).await;
    assert!(!said.contains("200 OK"), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A keep-alive connection left idle after its request is closed too.
    let mut idle = connect(&server, "127.0.0.32").await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (answered, closed_at) = until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(closed_at - started < Duration::from_secs(10));
}

#[tokio::test]
async fn a_body_trickled_in_is_cut_off_with_408() {
    let server = TestServer::start_with(|c| {
        c.http.body_timeout_secs = 1;
        c.http.stall_secs = 1;
        c.http.min_body_bytes = 1024;
    })
    .await;
    // A JSON body (console sign-in): whole within body_timeout_secs.
    let json = connect(&server, "127.0.0.33").await;
    let head = b"POST /console/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    let answer = trickle(json, head, b' ', 100).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"RequestTimeout\""), "{answer}");

    // A streamed upload (a library file): cut off once it stalls.
    let token = server.client.token().unwrap().to_string();
    let upload = connect(&server, "127.0.0.34").await;
    let head = format!(
        "POST /api/libraryfiles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.sh\"\r\n\r\n"
    );
    let answer = trickle(upload, head.as_bytes(), b'e', 1000).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("arrived too slowly"), "{answer}");
    assert!(server.client.library().await.unwrap().value.is_empty());
}

#[tokio::test]
async fn connections_past_the_caps_are_closed_at_once() {
    let server = TestServer::start_with(|c| {
        c.http.max_connections_per_address = 3;
        c.http.max_api_connections = 8;
    })
    .await;
    // Three idle connections from one address are held...
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&server, "127.0.0.41").await);
    }
    // ...the fourth is closed before it can send anything.
    let mut fourth = connect(&server, "127.0.0.41").await;
    let (said, _) = until_closed(&mut fourth).await;
    assert!(said.is_empty(), "{said}");
    // Another address is served.
    let mut other = connect(&server, "127.0.0.42").await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answered, _) = until_closed(&mut other).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    // In all: connections from other addresses fill the total of eight
    // (the test's own client may hold one too).
    let room = 8 - server.state.connections.open();
    for i in 0..room {
        held.push(connect(&server, &format!("127.0.1.{i}")).await);
    }
    eventually("8 connections open", async || {
        server.state.connections.open() >= 8
    })
    .await;
    let mut past_total = connect(&server, "127.0.0.46").await;
    let (said, _) = until_closed(&mut past_total).await;
    assert!(said.is_empty(), "{said}");
    // Closing one makes room again.
    drop(held.pop());
    eventually("the slot being given back", async || {
        server.state.connections.open() < 8
    })
    .await;
    let mut again = connect(&server, "127.0.0.46").await;
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answered, _) = until_closed(&mut again).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

#[tokio::test]
async fn agents_websockets_do_not_count_against_the_api_caps() {
    let server = TestServer::start_with(|c| c.http.max_connections_per_address = 4).await;
    let mut agents = Vec::new();
    for i in 0..6 {
        let mut device = server.enroll(&format!("agent-{i}")).await;
        server.connect(&mut device).await;
        agents.push(device);
    }
    // Six agents from 127.0.0.1 are connected, and the API still answers there.
    assert!(server.state.connections.open() <= 4);
    server.client.machines(&[]).await.unwrap();
}
