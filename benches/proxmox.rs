//! Proxmox VE provider benchmark against fakepve with its default task latencies (time scale 1:
//! tasks run asynchronously in real time). Prints, in one run, the wall time of 20 creates
//! (linked clone of a template, config, disk resize, start, every task followed to its end):
//! 1. through HCP's provider, 20 at once (default per-node cap of 2 write tasks);
//! 2. through proxmoxer (PyPI, the reference Python client), serially;
//! 3. through proxmoxer on 10 threads (retrying VMIDs another thread took).
//!
//! Both sides poll tasks every 50 ms. Needs the peer venv (`hcp-providers/proxmox/peer.sh`).
//! Run: `cargo bench -p hcp-benches --bench proxmox` (`HCP_BENCH_CREATES` sets the count).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use hcp_core::{CreateVm, HcpMark, OpContext, ProjectId, Provider, Resources, VmId};
use hcp_provider_proxmox::{ProxmoxHost, ProxmoxProvider, ProxmoxSettings};
use serde_json::{Value, json};

struct Peer {
    child: Child,
    info: Value,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    let venv = std::env::var("HCP_FAKEPVE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/hcp-fakepve-venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run hcp-providers/proxmox/peer.sh",
        py.display()
    );
    py
}

fn start() -> Peer {
    let dir = tempfile::tempdir().expect("temp dir");
    let launcher = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../hcp-providers/proxmox/tests/fakepve_launcher.py");
    let mut child = Command::new(python())
        .arg(launcher)
        .arg(dir.path())
        .args(["--time-scale", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fakepve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("fakepve prints its address");
    let info = serde_json::from_str(&line).expect("JSON");
    Peer {
        child,
        info,
        _dir: dir,
    }
}

fn proxmoxer(peer: &Peer, n: usize, threads: usize, prefix: &str) -> f64 {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proxmoxer_creates.py");
    let out = Command::new(python())
        .arg(script)
        .arg(peer.info.to_string())
        .args([n.to_string(), threads.to_string(), prefix.to_string()])
        .output()
        .expect("run proxmoxer");
    assert!(
        out.status.success(),
        "proxmoxer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let vmids = v["vmids"].as_array().expect("vmids");
    assert_eq!(vmids.len(), n);
    v["seconds"].as_f64().expect("seconds")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("HCP_BENCH_CREATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let peer = start();
    let settings = ProxmoxSettings::from_value(
        "pve",
        &json!({
            "url": peer.info["url"],
            "token_id": peer.info["token_id"],
            "token_secret_file": peer.info["token_secret_file"],
            "ca_file": peer.info["ca_file"],
            "task_poll": "50ms",
            "networks": {"default": "vmbr0"},
        }),
    )
    .expect("settings");
    let p = Arc::new(
        ProxmoxProvider::new(
            "pve",
            settings,
            vec![ProxmoxHost::new("pve1", "zone-a", "pve1")],
        )
        .expect("provider"),
    );
    let size = Resources {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 4,
    };
    let started = Instant::now();
    let creates = (0..n).map(|i| {
        let p = p.clone();
        async move {
            let mark = HcpMark::new(VmId::generate(), ProjectId::new("bench"));
            let args = CreateVm::new(mark, "pve1", format!("hcp-{i}"), "ubuntu-24.04", size);
            p.create_vm(&OpContext::detached(), args).await
        }
    });
    let results = futures::future::join_all(creates).await;
    let hcp = started.elapsed().as_secs_f64();
    let mut ids: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("create").native_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "distinct VMIDs");
    let peak = p.peak_parallel("pve1").expect("host");
    let serial = proxmoxer(&peer, n, 1, "serial");
    let threaded = proxmoxer(&peer, n, 10, "threads");
    println!(
        "proxmox: {n} creates (clone + config + resize + start) against fakepve, time scale 1"
    );
    let rows = [
        (
            format!("HCP provider, {n} concurrent (cap 2/node, peak {peak})"),
            hcp,
        ),
        ("proxmoxer, serial".to_string(), serial),
        ("proxmoxer, 10 threads".to_string(), threaded),
    ];
    for (label, secs) in rows {
        println!(
            "  {label:<50} {secs:>7.2} s  ({:.0} ms/VM)",
            secs * 1000.0 / n as f64
        );
    }
}
