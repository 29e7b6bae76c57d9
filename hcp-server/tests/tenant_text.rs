//! The host-name sweep (issue 10): jobs fail on a simulator host, then every response a tenant
//! can read through a real `hcp serve` (job, job list, job log stream, VM, VM list, error bodies)
//! is searched for the host's name, the provider's name, the VM's native id and the simulator's
//! state file; none may appear. The operator routes still show the detail.

mod common;
mod sweep;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sweep::{OPS, Seen, T};
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
    let logs = sweep::ops_logs(&s, &create_job).await;
    let failed_line = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["message"] == "create_vm failed: the VM's host does not answer")
        .unwrap_or_else(|| panic!("{logs}"))
        .clone();
    assert_eq!(failed_line["audience"], "everyone", "{failed_line}");
    assert_eq!(
        failed_line["detail"],
        format!("host `{HOST}` is down"),
        "{failed_line}"
    );
    // Pages: one line at a time, each page's `next` leading to the following line.
    let first = s
        .http
        .get(s.at(&format!("{OPS}/jobs/{create_job}/logs?limit=1")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["next"], "1", "{first}");
}

/// HCP's WinRM test host (`hcp-providers/hyperv/testhost`), one host `hv1` over HTTPS.
struct WinrmTestHost {
    child: std::process::Child,
    port: u16,
    control: String,
}

impl Drop for WinrmTestHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WINRM_USER: &str = "hcp";
const WINRM_PASSWORD: &str = "Hcp-sweep-pässword";

impl WinrmTestHost {
    fn start() -> WinrmTestHost {
        use std::io::BufRead;
        let python = std::env::var("HCP_WINRM_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| {
                std::env::var("HCP_WINRM_VENV")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|_| {
                        std::path::PathBuf::from(std::env::var("HOME").expect("HOME is set"))
                            .join(".cache/hcp-winrm-venv")
                    })
                    .join("bin/python")
            });
        assert!(
            python.exists(),
            "the WinRM test host's virtualenv is missing ({}): run hcp-providers/hyperv/testhost/setup.sh first",
            python.display()
        );
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../hcp-providers/hyperv/testhost");
        let mut child = std::process::Command::new(&python)
            .current_dir(dir)
            .args(["-m", "hcp_winrm_testhost", "--hosts", "1"])
            .args(["--username", WINRM_USER, "--password", WINRM_PASSWORD])
            .args(["--copy-seconds", "0.3", "--ntlm-binding", "any", "--tls"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("cannot start the WinRM test host");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the test host prints its address");
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the test host printed {line:?} instead of JSON: {e}"));
        assert_eq!(info["hosts"][0]["name"], "hv1", "{info}");
        WinrmTestHost {
            child,
            port: info["hosts"][0]["port"].as_u64().unwrap() as u16,
            control: info["control"].as_str().expect("control").to_string(),
        }
    }

    /// Injects one failure of `script` with a PowerShell error naming the host and a path.
    async fn fault(&self, script: &str, category: &str) {
        let resp = reqwest::Client::new()
            .post(format!("{}/hv1/faults", self.control))
            .json(&json!({ format!("error:{script}"): {
                "Category": category,
                "Message": "The operation failed on host hv1: the file D:\\Hyper-V\\Secret-Store\\x.vhdx is in use",
                "Cmdlet": "Start-VM",
            } }))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{resp:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperv_tenant_responses_never_name_the_host() {
    const HV_PROVIDER: &str = "hv-sweep-provider";
    let th = WinrmTestHost::start();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("winrm_username"), WINRM_USER).unwrap();
    std::fs::write(secrets.path().join("winrm_password"), WINRM_PASSWORD).unwrap();
    let hosts = format!(
        r#"
providers:
  - name: {HV_PROVIDER}
    kind: hyperv
    settings:
      tls_verify: false
      disk_mode: copy
      operation_timeout: 5s
    hosts:
      - {{name: hv1, zone: zone-a, settings: {{address: 127.0.0.1, port: {}}}}}
zones:
  - name: zone-a
catalog:
  images: [{{name: ubuntu-24.04, os: linux, min_disk_gib: 1}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}]
  networks: [{{name: default}}]
engine:
  inventory_refresh_interval: 0s
  retry: {{max_attempts: 2, initial_delay: 10ms, max_delay: 10ms, factor: 1.0, jitter: false}}
"#,
        th.port
    );
    let s = common::start_with(common::Setup {
        hosts_yaml: Some(hosts),
        env: vec![(
            "HCP_SECRETS_DIR".into(),
            secrets.path().display().to_string(),
        )],
        ..Default::default()
    })
    .await;
    let mut seen = Seen::default();

    let (status, created) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "swept", "image": "ubuntu-24.04", "flavor": "small"}),
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
        .text()
        .await
        .unwrap();
    let ops_vms: Value = serde_json::from_str(&ops_vms).unwrap();
    let ops_vm = ops_vms["items"]
        .as_array()
        .or(ops_vms.as_array())
        .unwrap_or_else(|| panic!("no VM list in {ops_vms}"))
        .iter()
        .find(|v| v["id"] == vm_id.as_str())
        .unwrap_or_else(|| panic!("{vm_id} not in {ops_vms}"))
        .clone();
    assert_eq!(ops_vm["binding"]["host"], "hv1", "{ops_vm}");
    let native_id = ops_vm["binding"]["native_id"].as_str().unwrap().to_string();

    // A busy host (retried, then done), a failing start and a failing create.
    th.fault("Stop-HcpVm", "ResourceBusy").await;
    let (status, stop) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms/{vm_id}:stop"),
            json!({"force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{stop}");
    let job = seen.logs(&s, stop["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    th.fault("Start-HcpVm", "NotSpecified").await;
    let (status, start) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms/{vm_id}:start"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{start}");
    let start_job = start["job_id"].as_str().unwrap().to_string();
    let job = seen.logs(&s, &start_job).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert_eq!(
        job["error"]["message"], "Hyper-V reported an error (Start-VM)",
        "{job}"
    );
    th.fault("New-HcpVm", "NotSpecified").await;
    let (status, failed) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "swept-2", "image": "ubuntu-24.04", "flavor": "small"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{failed}");
    let job = seen.logs(&s, failed["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "FAILED", "{job}");

    seen.get(&s, &format!("{T}/jobs/{start_job}")).await;
    seen.get(&s, &format!("{T}/projects/demo/jobs")).await;
    seen.get(&s, &format!("{T}/projects/demo/vms")).await;
    seen.get(&s, &format!("{T}/projects/demo/vms/{vm_id}"))
        .await;
    let failed_vm = failed["vm_id"].as_str().unwrap();
    seen.get(&s, &format!("{T}/projects/demo/vms/{failed_vm}"))
        .await;

    seen.assert_free_of(&[
        "hv1",
        HV_PROVIDER,
        &native_id,
        "Secret-Store",
        "copying template",
    ]);
    let all = seen.all();
    assert!(all.contains("retrying in"), "{all}");
    assert!(
        all.contains("start_vm failed: Hyper-V reported an error"),
        "{all}"
    );

    // Operators read the host and PowerShell's words.
    let o = s
        .http
        .get(s.at(&format!("{OPS}/jobs/{start_job}")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(o["host"], "hv1", "{o}");
    let detail = o["error"]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("hv1") && detail.contains("Secret-Store"),
        "{o}"
    );
    // The script's own progress lines are there for operators, marked as theirs.
    let logs = sweep::ops_logs(&s, created["job_id"].as_str().unwrap()).await;
    let copying: Vec<&Value> = logs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("copying template VHDX"))
        })
        .collect();
    assert!(!copying.is_empty(), "{logs}");
    assert!(
        copying.iter().all(|l| l["audience"] == "operators"),
        "{logs}"
    );
}
