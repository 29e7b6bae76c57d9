//! What the host-name sweeps share: a collector of every text a tenant reads, with where it came
//! from, and the check that none names what tenants must not see.

#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common;

/// The tenant routes' prefix.
pub const T: &str = "/api/hcp/tenant/v1";
/// The operator routes' prefix.
pub const OPS: &str = "/api/hcp/ops/v1";

/// Collects every tenant-visible text with where it came from.
#[derive(Default)]
pub struct Seen(Vec<(String, String)>);

impl Seen {
    pub fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    pub async fn get(&mut self, s: &common::TestServer, path: &str) -> Value {
        let resp = s.http.get(s.at(path)).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        self.add(format!("GET {path} ({status})"), text.clone());
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn post(
        &mut self,
        s: &common::TestServer,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let resp = s.http.post(s.at(path)).json(&body).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        self.add(format!("POST {path} ({status})"), text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Reads a job's tenant log stream to its end; returns the final job of its `end` event.
    pub async fn logs(&mut self, s: &common::TestServer, job_id: &str) -> Value {
        let path = format!("{T}/jobs/{job_id}/logs");
        let resp = s.http.get(s.at(&path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut text = String::new();
        let mut stream = resp.bytes_stream();
        let read = async {
            while let Some(chunk) = stream.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                if text.contains("event: end") && text.ends_with("\n\n") {
                    break;
                }
            }
        };
        tokio::time::timeout(LOG_TIMEOUT, read)
            .await
            .expect("the log stream ends");
        self.add(format!("SSE {path}"), text.clone());
        let end = text
            .split("event: end")
            .nth(1)
            .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("data: ")))
            .unwrap_or_else(|| panic!("no end event in {text}"));
        serde_json::from_str(end).unwrap()
    }

    pub fn assert_free_of(&self, secrets: &[&str]) {
        assert!(!self.0.is_empty());
        for (what, text) in &self.0 {
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{what} names `{secret}`, which tenants must not see:\n{text}"
                );
            }
        }
    }

    pub fn all(&self) -> String {
        self.0
            .iter()
            .map(|(w, t)| format!("{w}: {t}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Returns the operator view of one VM from `GET /ops/v1/vms`.
pub async fn ops_vm(s: &common::TestServer, vm_id: &str) -> Value {
    let vms: Value = s
        .http
        .get(s.at(&format!("{OPS}/vms")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    vms["items"]
        .as_array()
        .or(vms.as_array())
        .unwrap_or_else(|| panic!("no VM list in {vms}"))
        .iter()
        .find(|v| v["id"] == vm_id)
        .unwrap_or_else(|| panic!("{vm_id} not in {vms}"))
        .clone()
}

/// Returns the operator view of one job.
pub async fn ops_job(s: &common::TestServer, job_id: &str) -> Value {
    s.http
        .get(s.at(&format!("{OPS}/jobs/{job_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Returns the operator view of one job's log lines (`GET /ops/v1/jobs/{jobId}/logs`).
pub async fn ops_logs(s: &common::TestServer, job_id: &str) -> Value {
    let resp = s
        .http
        .get(s.at(&format!("{OPS}/jobs/{job_id}/logs")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

/// How long a job's log stream may take to end.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(60);
