//! vSphere provider benchmark against govmomi's vCenter simulator with 1,000 VMs (2 clusters of
//! 3 hosts, 500 VMs per cluster). Prints, in one run:
//! 1. the inventory refresh: HCP's `host_inventory` (one `RetrievePropertiesEx` over a container
//!    view: VMs, templates, hosts, clusters, port groups, datastores) beside pyvmomi's
//!    property-collector read of the same VM properties (median of 10 reads each, after a
//!    warm-up; pyvmomi's time excludes its process start and login);
//! 2. 20 concurrent clone + power-on: through HCP's provider (every create reads the
//!    inventory, checks the name, clones, reads the clone back, reconfigures what differs and
//!    powers on, each task followed with `WaitForUpdatesEx`) beside pyvmomi on 20 threads
//!    (clone, power on, `pyVim.task.WaitForTask`).
//!
//! Needs the peer (`hcp-providers/vsphere/peer.sh`).
//! Run: `cargo bench -p hcp-benches --bench vsphere` (`HCP_BENCH_CREATES` sets the count).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use hcp_core::{CreateVm, HcpMark, HostInventory, OpContext, ProjectId, Provider, Resources, VmId};
use hcp_provider_vsphere::{VsphereHost, VsphereProvider, VsphereSettings};
use serde_json::{Value, json};

const USER: &str = "bench";
const PASSWORD: &str = "bench-Pa55";
const IMAGE: &str = "ubuntu-24.04";

struct Peer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cache(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache")
            .join(default)
    })
}

fn python() -> PathBuf {
    let py = cache("HCP_PYVMOMI_VENV", "hcp-pyvmomi-venv").join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: run hcp-providers/vsphere/peer.sh",
        py.display()
    );
    py
}

fn start() -> Peer {
    let bin = cache("HCP_VCSIM_DIR", "hcp-vcsim").join("vcsim");
    assert!(
        bin.exists(),
        "{} is missing: run hcp-providers/vsphere/peer.sh",
        bin.display()
    );
    let port = (18740..18750)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 18740-18749");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("password"), PASSWORD).unwrap();
    let mut child = Command::new(bin)
        .args(["-l", &format!("127.0.0.1:{port}")])
        .args(["-userpass", &format!("{USER}:{PASSWORD}")])
        .arg("-ca-out")
        .arg(dir.path().join("ca.pem"))
        .args([
            "-cluster",
            "2",
            "-host",
            "3",
            "-vm",
            "500",
            "-standalone-host",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vcsim");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("vcsim prints its URL");
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    Peer { child, port, dir }
}

fn pyvmomi(peer: &Peer, args: Value) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../hcp-providers/vsphere/tests/pyvmomi_client.py");
    let out = Command::new(python())
        .arg(script)
        .arg(
            json!({"host": "127.0.0.1", "port": peer.port, "user": USER, "password": PASSWORD,
                   "args": args})
            .to_string(),
        )
        .output()
        .expect("run pyvmomi");
    assert!(
        out.status.success(),
        "pyvmomi: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("HCP_BENCH_CREATES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let peer = start();
    pyvmomi(
        &peer,
        json!({"cmd": "setup", "template": IMAGE, "source": "DC0_C0_RP0_VM0"}),
    );
    let settings = VsphereSettings::from_value(
        "vc",
        &json!({
            "url": format!("https://127.0.0.1:{}/sdk", peer.port),
            "username": USER,
            "password_file": peer.dir.path().join("password"),
            "ca_file": peer.dir.path().join("ca.pem"),
        }),
    )
    .expect("settings");
    let p = Arc::new(
        VsphereProvider::new(
            "vc",
            settings,
            vec![
                VsphereHost::new("h0", "zone-a", "DC0_C0_H0"),
                VsphereHost::new("h1", "zone-a", "DC0_C0_H1"),
            ],
        )
        .expect("provider"),
    );

    // 1. Inventory.
    let warm = p
        .host_inventory(HostInventory::new("h0"))
        .await
        .expect("inventory");
    let mut hcp_reads = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        p.host_inventory(HostInventory::new("h0"))
            .await
            .expect("inventory");
        hcp_reads.push(t.elapsed().as_secs_f64());
    }
    let hcp_inv = median(hcp_reads);
    let py = pyvmomi(&peer, json!({"cmd": "inventory", "repeat": 10}));
    let py_inv = py["seconds"].as_f64().expect("seconds");
    let total = py["count"].as_u64().unwrap_or(0);

    // 2. Concurrent clone + power-on.
    let size = Resources {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 0,
    };
    let started = Instant::now();
    let creates = (0..n).map(|i| {
        let p = p.clone();
        async move {
            let mark = HcpMark::new(VmId::generate(), ProjectId::new("bench"));
            let args = CreateVm::new(mark, "h0", format!("hcp-{i}"), IMAGE, size);
            p.create_vm(&OpContext::detached(), args).await
        }
    });
    let results = futures::future::join_all(creates).await;
    let hcp_create = started.elapsed().as_secs_f64();
    for r in results {
        r.expect("create");
    }
    let py = pyvmomi(
        &peer,
        json!({"cmd": "creates", "n": n, "threads": n, "source": IMAGE,
               "pool_host": "DC0_C0_H0", "prefix": "py"}),
    );
    let py_create = py["seconds"].as_f64().expect("seconds");

    println!(
        "vsphere: govmomi's vCenter simulator, {total} VMs (host h0 holds {})",
        warm.vms.len()
    );
    println!(
        "  {:<58} {:>8.1} ms   ({:.2}x pyvmomi)",
        "inventory refresh, HCP host_inventory (median of 10)",
        hcp_inv * 1000.0,
        hcp_inv / py_inv
    );
    println!(
        "  {:<58} {:>8.1} ms",
        "inventory read, pyvmomi RetrievePropertiesEx (median of 10)",
        py_inv * 1000.0
    );
    println!(
        "  {:<58} {:>8.2} s    ({:.2}x pyvmomi)",
        format!("{n} concurrent clone + power-on, HCP provider"),
        hcp_create,
        hcp_create / py_create
    );
    println!(
        "  {:<58} {:>8.2} s",
        format!("{n} concurrent clone + power-on, pyvmomi ({n} threads)"),
        py_create
    );
}
