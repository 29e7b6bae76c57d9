//! The host-name sweep on vSphere: jobs run on govmomi's vCenter simulator (built by
//! `hcp-providers/vsphere/peer.sh`; the test fails, never skips, without it) through a real
//! `hcp serve`; every response a tenant reads is searched for the host's name, the provider's
//! name, the ESXi host's and cluster's names in vCenter, the datastore and the VM's managed
//! object id. The operator routes still show them.

mod common;
mod sweep;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use serde_json::json;
use sweep::{Seen, T};

const HOST: &str = "esx-sweep-secret";
const PROVIDER: &str = "vc-sweep-provider";
const PASSWORD: &str = "sweep-Pa55word";

struct Vcsim {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cache(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap())
            .join(".cache")
            .join(default)
    })
}

fn vcsim() -> Vcsim {
    let bin = cache("HCP_VCSIM_DIR", "hcp-vcsim").join("vcsim");
    let py = cache("HCP_PYVMOMI_VENV", "hcp-pyvmomi-venv").join("bin/python");
    for needed in [&bin, &py] {
        assert!(
            needed.exists(),
            "the vSphere test peer is missing: run hcp-providers/vsphere/peer.sh (looked for {})",
            needed.display()
        );
    }
    // The provider crate's tests take 18700-18729, the CLI's 18730-18739.
    let port = (18720..18730)
        .rev()
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 18720-18729");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), PASSWORD).unwrap();
    let mut child = Command::new(bin)
        .args(["-l", &format!("127.0.0.1:{port}")])
        .args(["-userpass", &format!("hcp:{PASSWORD}")])
        .arg("-ca-out")
        .arg(dir.path().join("ca.pem"))
        .args([
            "-cluster",
            "1",
            "-host",
            "1",
            "-vm",
            "1",
            "-standalone-host",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vcsim");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("/sdk"), "vcsim did not start: {line:?}");
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    // The template, then the simulator's own VM out of the way: its host has only 2 vCPUs.
    for args in [
        json!({"cmd": "setup", "template": "base-tiny", "source": "DC0_C0_RP0_VM0"}),
        json!({"cmd": "destroy", "name": "DC0_C0_RP0_VM0"}),
    ] {
        let made = Command::new(&py)
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../hcp-providers/vsphere/tests/pyvmomi_client.py"),
            )
            .arg(
                json!({"host": "127.0.0.1", "port": port, "user": "hcp", "password": PASSWORD,
                       "args": args})
                .to_string(),
            )
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    Vcsim { child, port, dir }
}

#[tokio::test]
async fn vsphere_tenant_responses_never_name_the_host() {
    let sim = vcsim();
    let dir = sim.dir.path().display();
    let hosts = format!(
        r#"
providers:
  - name: {PROVIDER}
    kind: vsphere
    settings:
      url: https://127.0.0.1:{port}/sdk
      username: hcp
      password_file: {dir}/password
      ca_file: {dir}/ca.pem
      networks: {{default: VM Network}}
    hosts:
      - {{name: {HOST}, zone: zone-a, settings: {{host: DC0_C0_H0}}}}
zones:
  - name: zone-a
catalog:
  images: [{{name: base-tiny, min_disk_gib: 0}}, {{name: ghost, min_disk_gib: 0}}]
  flavors: [{{name: tiny, vcpus: 1, memory_mib: 64, disk_gib: 1}}]
  networks: [{{name: default}}, {{name: nowhere}}]
engine:
  inventory_refresh_interval: 0s
  retry: {{max_attempts: 1}}
"#,
        port = sim.port
    );
    let s = common::start_with(common::Setup {
        hosts_yaml: Some(hosts),
        ..Default::default()
    })
    .await;
    let mut seen = Seen::default();

    // A create that succeeds (its log names the VM's MoRef, for operators only).
    let (status, created) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "swept", "image": "base-tiny", "flavor": "tiny",
                   "networks": [{"network": "default"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let vm_id = created["vm_id"].as_str().unwrap().to_string();
    let job = seen.logs(&s, created["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    let ops_vm = sweep::ops_vm(&s, &vm_id).await;
    assert_eq!(ops_vm["binding"]["host"], HOST, "{ops_vm}");
    let moref = ops_vm["binding"]["native_id"].as_str().unwrap().to_string();
    assert!(moref.starts_with("vm-"), "{ops_vm}");

    // A create whose image has no template in vCenter: no host reports the image, so it is
    // refused before a job exists (the refusal is swept with the rest).
    let (status, failed) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "swept-2", "image": "ghost", "flavor": "tiny"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{failed}");
    assert_eq!(failed["field"], "image", "{failed}");
    // User-data on an image whose template does not take it, and a network no port group
    // carries: refused before a job exists, naming the field (swept with the rest).
    let (status, failed) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "swept-3", "image": "base-tiny", "flavor": "tiny",
                   "user_data": "#cloud-config\n"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{failed}");
    assert_eq!(failed["code"], "FEATURE_NOT_SUPPORTED", "{failed}");
    assert_eq!(failed["field"], "user_data", "{failed}");
    let (status, failed) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms"),
            json!({"name": "swept-4", "image": "base-tiny", "flavor": "tiny",
                   "networks": [{"network": "nowhere"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{failed}");
    assert_eq!(failed["field"], "networks[0].network", "{failed}");
    // A stop, so that the VM list shows a settled VM.
    let (status, stop) = seen
        .post(
            &s,
            &format!("{T}/projects/demo/vms/{vm_id}:stop"),
            json!({"force": true}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{stop}");
    seen.logs(&s, stop["job_id"].as_str().unwrap()).await;

    seen.get(&s, &format!("{T}/projects/demo/jobs")).await;
    seen.get(&s, &format!("{T}/projects/demo/vms")).await;
    seen.get(&s, &format!("{T}/projects/demo/vms/{vm_id}"))
        .await;

    seen.assert_free_of(&[
        HOST,
        PROVIDER,
        &moref,
        "DC0_C0_H0",
        "DC0_C0",
        "LocalDS_0",
        "127.0.0.1",
    ]);
    let all = seen.all();
    assert!(all.contains("cloning the image base-tiny"), "{all}");
    assert!(all.contains("image `ghost`"), "{all}");
}
