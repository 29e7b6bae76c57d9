//! Connection limits against a real service over TCP: headers trickled a byte at a time are cut
//! at the header-read timeout, the connection cap holds new clients back until a slot frees, and
//! an oversized request head gets `431` (not a silent close). After each attack, a normal request
//! is served.

mod common;

use std::time::{Duration, Instant};

use common::{Setup, TestServer, start_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn setup(vars: &[(&str, &str)]) -> Setup {
    Setup {
        env: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Setup::default()
    }
}

fn addr(s: &TestServer) -> String {
    s.url.trim_start_matches("http://").to_string()
}

/// Sends one complete request on a fresh connection and returns the status line.
async fn get_status(s: &TestServer, path: &str) -> String {
    let mut c = TcpStream::connect(addr(s)).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Trickles a request head one byte every 200 ms until the server closes the connection;
/// returns how long the connection stayed open.
async fn trickle(addr: String) -> Duration {
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in head.iter().cycle() {
        if c.write_all(&[*b]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_are_cut_at_the_header_read_timeout() {
    let s = start_with(setup(&[("HCP_HEADER_READ_TIMEOUT", "1s")])).await;
    let tasks: Vec<_> = (0..50).map(|_| tokio::spawn(trickle(addr(&s)))).collect();
    for t in tasks {
        let open = t.await.unwrap();
        // The client would trickle for 30 s; the server cuts it after about one.
        assert!(
            open < Duration::from_secs(10),
            "a trickling client held its connection for {open:?}"
        );
    }
    assert_eq!(get_status(&s, "/healthz").await, "HTTP/1.1 200 OK");
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_new_clients_until_a_slot_frees() {
    let s = start_with(setup(&[
        ("HCP_MAX_CONNECTIONS", "4"),
        ("HCP_HEADER_READ_TIMEOUT", "3s"),
    ]))
    .await;
    // Four clients take every slot and send nothing.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr(&s)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fifth client connects (the kernel's backlog takes it) but is not served yet.
    let mut fifth = TcpStream::connect(addr(&s)).await.unwrap();
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let early = tokio::time::timeout(Duration::from_millis(1500), fifth.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the fifth client was served while four connections held every slot"
    );
    // Freeing one slot lets it in.
    drop(idle.pop());
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), fifth.read_to_end(&mut out))
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // The idle ones are cut at the header-read timeout, and the service keeps serving.
    for mut c in idle {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("an idle connection is closed at the header-read timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    assert_eq!(get_status(&s, "/healthz").await, "HTTP/1.1 200 OK");
    s.stop().await.unwrap();
}

/// Sends a request whose `Authorization` header is `size` bytes and returns the whole answer.
async fn send_big_header(s: &TestServer, size: usize) -> String {
    let c = TcpStream::connect(addr(s)).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let writer = tokio::spawn(async move {
        let head = format!(
            "GET /api/hcp/tenant/v1/projects/demo/vms HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\r\n",
            "a".repeat(size)
        );
        let _ = w.write_all(head.as_bytes()).await;
        w
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), r.read_to_end(&mut out))
        .await
        .expect("an answer within 15 s")
        .expect("an answer, not a reset");
    drop(writer.await);
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_gets_431() {
    let s = start_with(Setup::default()).await;
    for size in [64 * 1024, 1024 * 1024] {
        let answer = send_big_header(&s, size).await;
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "a {size}-byte header: {}",
            answer.lines().next().unwrap_or("(nothing)")
        );
    }
    // A head under the default 32 KiB cap is read and answered normally (auth is off: 200).
    let answer = send_big_header(&s, 16 * 1024).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        answer.lines().next().unwrap_or_default()
    );
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_cap_is_configurable() {
    let s = start_with(setup(&[("HCP_MAX_HEADER_BYTES", "131072")])).await;
    let answer = send_big_header(&s, 64 * 1024).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        answer.lines().next().unwrap_or_default()
    );
    let answer = send_big_header(&s, 256 * 1024).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        answer.lines().next().unwrap_or_default()
    );
    s.stop().await.unwrap();
}
