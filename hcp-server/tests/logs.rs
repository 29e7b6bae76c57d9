//! Structured JSON logs: an access line per request with its request id, job and VM ids on the
//! accepting request, and never an Authorization header or a request body's secrets. In-process,
//! the logs are this test's own subscriber's; with `HCP_SERVE_BIN`, they are what the `hcp serve`
//! child wrote to stderr, which the start helper captures.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_are_json_with_ids_and_without_secrets() {
    let buf = Buf::default();
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_env_filter("info")
        .with_writer(move || writer.clone())
        .init();
    let s = common::start_with(common::Setup {
        // The child's own format and level, whatever this process's environment says.
        env: vec![
            ("HCP_LOG_FORMAT".into(), "json".into()),
            ("HCP_LOG_LEVEL".into(), "info".into()),
        ],
        ..Default::default()
    })
    .await;
    let resp = s
        .http
        .post(s.at("/api/hcp/tenant/v1/projects/demo/vms"))
        .header("Authorization", "Bearer s3cret-token")
        .header("x-request-id", "log-req-1")
        .json(&serde_json::json!({"name": "logged", "image": "ubuntu-24.04", "flavor": "small", "zone": "zone-a",
            "user_data": "#cloud-config\npassword: hunter2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    s.client
        .wait_job(&body["job_id"].as_str().unwrap().into(), None)
        .await
        .unwrap();
    let text = if s.is_binary() {
        s.child_logs()
    } else {
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    };
    assert!(!text.trim().is_empty(), "no logs were captured");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| l["target"] == "hcp::access" && l["span"]["request_id"] == "log-req-1")
        .unwrap_or_else(|| panic!("no access line for the request in\n{text}"));
    assert_eq!(access["status"], 202);
    assert_eq!(
        access["route"],
        "/api/hcp/tenant/v1/projects/{projectId}/vms"
    );
    let accepted = lines
        .iter()
        .find(|l| l["message"] == "job accepted")
        .unwrap_or_else(|| panic!("no accepted line in\n{text}"));
    assert_eq!(accepted["vm_id"], body["vm_id"]);
    assert_eq!(accepted["job_id"], body["job_id"]);
    assert_eq!(accepted["span"]["request_id"], "log-req-1");
    assert!(
        !text.contains("s3cret-token"),
        "the Authorization header was logged"
    );
    assert!(!text.contains("hunter2"), "user-data was logged");
}
