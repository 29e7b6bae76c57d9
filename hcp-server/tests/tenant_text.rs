//! The host-name sweep (issue 10): jobs fail on a simulator host, then every response a tenant
//! can read through a real `hcp serve` (job, job list, job log stream, VM, VM list, error bodies)
//! is searched for the host's name, the provider's name, the VM's native id and the simulator's
//! state file; none may appear. The operator routes still show the detail.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

const T: &str = "/api/hcp/tenant/v1";
const OPS: &str = "/api/hcp/ops/v1";
const HOST: &str = "hv-sweep-secret-7";
const PROVIDER: &str = "prov-sweep-secret";

fn hosts() -> String {
    format!(
        r#"
providers:
  - name: {PROVIDER}
    kind: sim
    settings:
      state_file: $DIR/state.json
    hosts:
      - {{name: {HOST}, zone: z1}}
zones:
  - name: z1
catalog:
  images: [{{name: img}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}]
engine:
  inventory_refresh_interval: 0s
  retry: {{max_attempts: 2, initial_delay: 1500ms, max_delay: 1500ms, factor: 1.0, jitter: false}}
"#
    )
}

/// Collects every tenant-visible text with where it came from.
#[derive(Default)]
struct Seen(Vec<(String, String)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    async fn get(&mut self, s: &common::TestServer, path: &str) -> Value {
        let resp = s.http.get(s.at(path)).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        self.add(format!("GET {path} ({status})"), text.clone());
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn post(
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
    async fn logs(&mut self, s: &common::TestServer, job_id: &str) -> Value {
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
        tokio::time::timeout(Duration::from_secs(60), read)
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

    fn assert_free_of(&self, secrets: &[&str]) {
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

    fn all(&self) -> String {
        self.0
            .iter()
            .map(|(w, t)| format!("{w}: {t}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[tokio::test]
async fn tenant_responses_never_name_hosts_providers_or_native_ids() {
    let s = common::start_with(common::Setup {
        hosts_yaml: Some(hosts()),
        ..Default::default()
    })
    .await;
    let mut seen = Seen::default();

    // A VM that exists on the host, with a native id.
    let (status, created) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "sweep-ok", "image": "img", "flavor": "small", "zone": "z1"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let vm_id = created["vm_id"].as_str().unwrap().to_string();
    let job = seen.logs(&s, created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    let ops_vms = s
        .http
        .get(s.at(&format!("{OPS}/vms")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let ops_vm = ops_vms["items"]
        .as_array()
        .or(ops_vms.as_array())
        .unwrap_or_else(|| panic!("no VM list in {ops_vms}"))
        .iter()
        .find(|v| v["id"] == vm_id.as_str())
        .unwrap_or_else(|| panic!("{vm_id} not in {ops_vms}"))
        .clone();
    assert_eq!(ops_vm["binding"]["host"], HOST, "{ops_vm}");
    let native_id = ops_vm["binding"]["native_id"].as_str().unwrap().to_string();
    assert!(!native_id.is_empty(), "{ops_vm}");

    // The host stops answering; HCP learns it only from the failing calls.
    let path = s.dir().join("state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    state["hosts"][HOST]["down"] = json!(true);
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();

    // A stop that is retried, then fails. Watch it through its backoff.
    let (status, stop) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms/{vm_id}:stop"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{stop}");
    let stop_job = stop["job_id"].as_str().unwrap().to_string();
    let mut saw_backoff = false;
    let started = Instant::now();
    loop {
        let j = seen.get(&s, &format!("{T}/jobs/{stop_job}")).await;
        if j["pending_reason"]["reason"] == "retry_backoff" && !saw_backoff {
            saw_backoff = true;
            assert_eq!(
                j["pending_reason"]["error"], "the VM's host does not answer",
                "{j}"
            );
            assert!(j["pending_reason"].get("detail").is_none(), "{j}");
            // Operators see the detail of the same retry.
            let o = s
                .http
                .get(s.at(&format!("{OPS}/jobs/{stop_job}")))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap();
            if o["pending_reason"]["reason"] == "retry_backoff" {
                let detail = o["pending_reason"]["detail"].as_str().unwrap_or_default();
                assert!(detail.contains(HOST), "{o}");
            }
        }
        if j["state"] == "FAILED" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the stop job did not fail: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_backoff, "the stop job was never seen in retry_backoff");
    let failed_stop = seen.logs(&s, &stop_job).await;
    assert_eq!(failed_stop["state"], "FAILED", "{failed_stop}");
    assert_eq!(
        failed_stop["error"]["message"], "the VM's host does not answer",
        "{failed_stop}"
    );

    // A create placed on the silent host fails, and its clean-up fails too.
    let (status, create) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "sweep-fail", "image": "img", "flavor": "small"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{create}");
    let failed_vm = create["vm_id"].as_str().unwrap().to_string();
    let create_job = create["job_id"].as_str().unwrap().to_string();
    let failed_create = seen.logs(&s, &create_job).await;
    assert_eq!(failed_create["state"], "FAILED", "{failed_create}");

    // An error answered right away, and a start that fails as well.
    let (status, console) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms/{vm_id}:console"),
            json!({}),
        )
        .await;
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{console}"
    );
    let (status, start) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms/{vm_id}:start"),
            json!({}),
        )
        .await;
    if status == StatusCode::ACCEPTED {
        let j = seen.logs(&s, start["job_id"].as_str().unwrap()).await;
        assert_ne!(j["state"], "SUCCEEDED", "{j}");
    }

    // Everything else a tenant reads about these VMs and jobs.
    for job in [&stop_job, &create_job] {
        seen.get(&s, &format!("{T}/jobs/{job}")).await;
    }
    seen.get(&s, &format!("{T}/projects/demo/jobs")).await;
    seen.get(&s, &format!("{T}/projects/demo/vms")).await;
    let vm = seen
        .get(&s, &format!("{T}/projects/demo/vms/{vm_id}"))
        .await;
    assert!(vm["last_error"]["message"].is_string(), "{vm}");
    seen.get(&s, &format!("{T}/projects/demo/vms/{failed_vm}"))
        .await;

    let dir = s.dir().display().to_string();
    seen.assert_free_of(&[HOST, PROVIDER, &native_id, &dir]);
    // The sweep read what it meant to: the failures and their log lines are there.
    let all = seen.all();
    assert!(
        all.contains("stop_vm failed: the VM's host does not answer"),
        "{all}"
    );
    assert!(
        all.contains("create_vm failed: the VM's host does not answer"),
        "{all}"
    );
    assert!(
        all.contains("could not remove the partly created VM"),
        "{all}"
    );
    assert!(all.contains("retrying in"), "{all}");

    // Operators see where it happened.
    let o = s
        .http
        .get(s.at(&format!("{OPS}/jobs/{create_job}")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(o["host"], HOST, "{o}");
    assert_eq!(
        o["error"]["message"], "the VM's host does not answer",
        "{o}"
    );
    assert!(
        o["error"]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains(HOST),
        "{o}"
    );
    let ops_vms = s
        .http
        .get(s.at(&format!("{OPS}/vms")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ops_vms.contains(&format!("host `{HOST}` is down")),
        "{ops_vms}"
    );
}
