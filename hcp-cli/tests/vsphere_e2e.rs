//! End to end through the real `hcp serve` binary over `examples/config/vsphere.yaml`, against
//! govmomi's vCenter simulator (built by `hcp-providers/vsphere/peer.sh`), every step driven by
//! the `hcp` CLI in remote mode and checked independently with pyvmomi. Needs the peer (the test
//! fails, never skips, without it).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Hcp;
use common::server::ServeBuilder;
use serde_json::{Value, json};

const PASSWORD: &str = "e2e-Pa55word";

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

fn python() -> PathBuf {
    let py = cache("HCP_PYVMOMI_VENV", "hcp-pyvmomi-venv").join("bin/python");
    assert!(
        py.exists(),
        "pyvmomi is missing: run hcp-providers/vsphere/peer.sh (looked for {})",
        py.display()
    );
    py
}

fn vcsim() -> Vcsim {
    let bin = cache("HCP_VCSIM_DIR", "hcp-vcsim").join("vcsim");
    assert!(
        bin.exists(),
        "the vSphere test peer is missing: run hcp-providers/vsphere/peer.sh (looked for {})",
        bin.display()
    );
    // The provider crate's tests take 18700-18739 and its benchmark 18740-18749.
    let port = (18730..18740)
        .rev()
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 18730-18739");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
    let mut child = Command::new(bin)
        .args(["-l", &format!("127.0.0.1:{port}")])
        .args(["-userpass", &format!("hcp:{PASSWORD}")])
        .arg("-ca-out")
        .arg(dir.path().join("ca.pem"))
        .args([
            "-cluster",
            "2",
            "-host",
            "3",
            "-vm",
            "2",
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
    let sim = Vcsim { child, port, dir };
    pyvmomi(
        &sim,
        json!({"cmd": "setup", "template": "ubuntu-24.04", "source": "DC0_C0_RP0_VM0"}),
    );
    sim
}

fn pyvmomi(sim: &Vcsim, args: Value) -> Value {
    let out = Command::new(python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../hcp-providers/vsphere/tests/pyvmomi_client.py"),
        )
        .arg(
            json!({"host": "127.0.0.1", "port": sim.port, "user": "hcp", "password": PASSWORD,
                   "args": args})
            .to_string(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// True when `text` holds a vCenter managed object id (`vm-42`, `host-7`, `datastore-3`); HCP's
/// own ids (`vm-` and 32 hex digits) are not.
fn has_moref(text: &str) -> bool {
    [
        "vm-",
        "host-",
        "datastore-",
        "resgroup-",
        "dvportgroup-",
        "network-",
    ]
    .iter()
    .any(|prefix| {
        text.match_indices(prefix).any(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let id: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            !id.is_empty() && id.chars().all(|c| c.is_ascii_digit())
        })
    })
}

#[test]
fn hcp_serve_runs_vms_on_vsphere_through_the_cli() {
    let sim = vcsim();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/vsphere.yaml");
    let yaml = std::fs::read_to_string(example).unwrap();
    for fixed in [
        "https://127.0.0.1:18700/sdk",
        "/tmp/hcp-vcsim/password",
        "/tmp/hcp-vcsim/ca.pem",
    ] {
        assert!(
            yaml.contains(fixed),
            "examples/config/vsphere.yaml changed; update this test"
        );
    }
    let dir = sim.dir.path().to_str().unwrap();
    let yaml = yaml
        .replace(
            "https://127.0.0.1:18700/sdk",
            &format!("https://127.0.0.1:{}/sdk", sim.port),
        )
        .replace("/tmp/hcp-vcsim/password", &format!("{dir}/password"))
        .replace("/tmp/hcp-vcsim/ca.pem", &format!("{dir}/ca.pem"));
    let server = ServeBuilder::new().hosts(&yaml).start();
    let hcp = Hcp::new().with_url(&server.url);

    let id = hcp.create("web-1", &["--wait"]);
    let vm = hcp.json(&["vm", "show", &id, "--project", "demo"]);
    assert_eq!(vm["power"], "RUNNING", "{vm}");
    let shown = vm.to_string();
    for hidden in ["DC0_", "LocalDS", "native"] {
        assert!(
            !shown.contains(hidden),
            "tenants see no host or datastore: {shown}"
        );
    }
    assert!(!has_moref(&shown), "tenants see no MoRef: {shown}");

    // pyvmomi finds the VM HCP made, running, sized by the flavor, with HCP's mark.
    let seen = pyvmomi(&sim, json!({"cmd": "show", "name": "web-1"}));
    assert_eq!(seen["power"], "poweredOn", "{seen}");
    assert!(has_moref(seen["moref"].as_str().unwrap()), "{seen}");
    assert_eq!(seen["cpus"], 1, "{seen}");
    assert_eq!(seen["memory_mb"], 512, "{seen}");
    assert!(seen["mark"].as_str().unwrap().contains(&id), "{seen}");

    let stopped = hcp.json(&["vm", "stop", &id, "--project", "demo", "--wait"]);
    assert_eq!(stopped["job"]["state"], "SUCCEEDED", "{stopped}");
    let seen = pyvmomi(&sim, json!({"cmd": "show", "name": "web-1"}));
    assert_eq!(seen["power"], "poweredOff", "{seen}");

    let deleted = hcp.json(&["vm", "delete", &id, "--project", "demo", "--wait"]);
    assert_eq!(deleted["job"]["state"], "SUCCEEDED", "{deleted}");
    let seen = pyvmomi(&sim, json!({"cmd": "show", "name": "web-1"}));
    assert_eq!(seen["found"], false, "{seen}");
}
