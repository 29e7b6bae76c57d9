//! The event stream of a job watch against a scripted server on 127.0.0.1: a reconnection
//! resumes with `Last-Event-ID`, and a reconnection the service refuses ends the watch with the
//! service's error instead of retrying.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use hcp_core::{ErrorKind, JobId, JobUpdate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn log_event(seq: u64) -> String {
    format!(
        "id: {seq}\nevent: log\ndata: {{\"type\":\"log\",\"seq\":{seq},\"at\":\"2026-01-01T00:00:00Z\",\"level\":\"info\",\"message\":\"line {seq}\"}}\n\n"
    )
}

/// Serves one scripted answer per connection, in order, and records each request head.
async fn scripted(answers: Vec<String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = heads.clone();
    tokio::spawn(async move {
        for answer in answers {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending a request");
                head.extend_from_slice(&buf[..n]);
            }
            recorded
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).to_lowercase());
            conn.write_all(answer.as_bytes()).await.unwrap();
            // Closing the connection is the cut.
        }
    });
    (url, heads)
}

fn event_stream(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}")
}

#[tokio::test]
async fn a_cut_watch_resumes_and_a_refused_reconnection_ends_it() {
    let problem =
        r#"{"status":404,"code":"NOT_FOUND","kind":"not_found","detail":"job `j-1` not found"}"#;
    let (url, heads) = scripted(vec![
        event_stream(&(log_event(1) + &log_event(2))),
        event_stream(&log_event(3)),
        format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{problem}",
            problem.len()
        ),
    ])
    .await;
    let client = hcp_client::Client::new(&url).unwrap();
    let mut watch = client.watch_job(&JobId::new("j-1")).await.unwrap();
    let mut seqs = Vec::new();
    let error = loop {
        match watch
            .next()
            .await
            .expect("the watch ends with an error, not silently")
        {
            Ok(JobUpdate::Log(l)) => seqs.push(l.seq),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(error.kind(), ErrorKind::NotFound, "{error}");
    assert!(watch.next().await.is_none(), "nothing follows the error");
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(!heads[0].contains("last-event-id"), "{}", heads[0]);
    assert!(heads[1].contains("last-event-id: 2\r\n"), "{}", heads[1]);
    assert!(heads[2].contains("last-event-id: 3\r\n"), "{}", heads[2]);
    assert!(
        heads
            .iter()
            .all(|h| h.contains("accept: text/event-stream"))
    );
}

#[tokio::test]
async fn an_unknown_job_fails_the_watch_call_itself() {
    let problem =
        r#"{"status":404,"code":"NOT_FOUND","kind":"not_found","detail":"job `nope` not found"}"#;
    let (url, _) = scripted(vec![format!(
        "HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{problem}",
        problem.len()
    )])
    .await;
    let client = hcp_client::Client::new(&url).unwrap();
    let Err(e) = client.watch_job(&JobId::new("nope")).await else {
        panic!("the watch of an unknown job opened");
    };
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}
