//! End to end through the real `hcp serve` binary over `examples/config/proxmox.yaml`, against
//! fakepve (the Proxmox VE API fake; AGPL, run as a separate process) started by the provider's
//! launcher, every step driven by the `hcp` CLI in remote mode and checked independently with
//! proxmoxer. Needs `hcp-providers/proxmox/peer.sh` (the test fails, never skips, without it).

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::Hcp;
use common::server::ServeBuilder;
use serde_json::Value;

struct Fakepve {
    child: Child,
    info: Value,
    _dir: tempfile::TempDir,
}

impl Drop for Fakepve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    let venv = std::env::var_os("HCP_FAKEPVE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/hcp-fakepve-venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "the Proxmox test peer is missing: run hcp-providers/proxmox/peer.sh (looked for {})",
        py.display()
    );
    py
}

fn provider_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hcp-providers/proxmox/tests")
}

fn fakepve() -> Fakepve {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(python())
        .arg(provider_tests().join("fakepve_launcher.py"))
        .arg(dir.path())
        .args(["--time-scale", "0.01"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fakepve_launcher.py");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("fakepve: {e}: {line:?}"));
    Fakepve {
        child,
        info,
        _dir: dir,
    }
}

fn proxmoxer(pve: &Fakepve, args: Value) -> Value {
    let mut conf = pve.info.clone();
    conf["args"] = args;
    let out = Command::new(python())
        .arg(provider_tests().join("crosscheck.py"))
        .arg(conf.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn hcp_serve_runs_vms_on_proxmox_through_the_cli() {
    let pve = fakepve();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/proxmox.yaml");
    let yaml = std::fs::read_to_string(example).unwrap();
    for fixed in [
        "https://127.0.0.1:18006",
        "/tmp/hcp-fakepve/token",
        "/tmp/hcp-fakepve/fakepve.crt",
    ] {
        assert!(
            yaml.contains(fixed),
            "examples/config/proxmox.yaml changed; update this test"
        );
    }
    let yaml = yaml
        .replace("https://127.0.0.1:18006", pve.info["url"].as_str().unwrap())
        .replace(
            "/tmp/hcp-fakepve/token",
            pve.info["token_secret_file"].as_str().unwrap(),
        )
        .replace(
            "/tmp/hcp-fakepve/fakepve.crt",
            pve.info["ca_file"].as_str().unwrap(),
        );
    let builder = ServeBuilder::new().hosts(&yaml);
    let hosts_file = builder.dir().join("hosts.yaml");
    let server = builder.start();
    let hcp = Hcp::new().with_url(&server.url);

    let id = hcp.create("web-1", &["--wait"]);
    let vm = hcp.json(&["vm", "show", &id, "--project", "demo"]);
    assert_eq!(vm["power"], "RUNNING", "{vm}");
    let shown = vm.to_string();
    assert!(
        !shown.contains("pve1") && !shown.contains("native"),
        "tenants see no node or VMID: {shown}"
    );

    // proxmoxer finds the VM HCP made, running, with HCP's mark.
    let listed = proxmoxer(&pve, serde_json::json!({"op": "list", "node": "pve1"}));
    let found = listed["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "web-1")
        .cloned()
        .unwrap_or_else(|| panic!("proxmoxer sees web-1: {listed}"));
    assert_eq!(found["status"], "running");
    let vmid = found["vmid"].clone();
    let config = proxmoxer(
        &pve,
        serde_json::json!({"op": "vm", "node": "pve1", "vmid": vmid}),
    );
    assert!(
        config["config"]["description"]
            .as_str()
            .unwrap()
            .contains(&id)
    );

    // The console: the tenant gets HCP's proxy URL, never the node, VMID or VNC ticket.
    let console = hcp.json(&["vm", "console", &id, "--project", "demo"]);
    assert_eq!(console["type"], "vnc", "{console}");
    let url = console["url"].as_str().unwrap();
    assert!(
        url.contains("/api/hcp/tenant/v1/console/ws?token="),
        "{url}"
    );
    for hidden in ["pve1", "PVEVNC", "vncticket", "8006"] {
        assert!(!console.to_string().contains(hidden), "{hidden}: {console}");
    }
    // A native VNC client through `hcp vm console --listen` and HCP's proxy reaches fakepve's
    // VNC server (RFB over `vncwebsocket`): HCP answers the VNC ticket's challenge itself, so
    // the client is asked for no password, and the desktop is the VM's.
    let bridge = common::Bridge::start(&hcp, &["vm", "console", &id, "--project", "demo"]);
    let mut vnc = std::net::TcpStream::connect(&bridge.addr).unwrap();
    assert_eq!(common::rfb_client(&mut vnc), "web-1");
    drop(vnc);
    let bridge_err = bridge.finish();
    // Embedded mode (the operator's own engine over the same hosts file) bridges the upstream
    // itself, without `hcp serve`.
    let embedded = Hcp::new().with_config(&hosts_file);
    let bridge = common::Bridge::start(&embedded, &["vm", "console", &id, "--project", "demo"]);
    let mut vnc = std::net::TcpStream::connect(&bridge.addr).unwrap();
    assert_eq!(common::rfb_client(&mut vnc), "web-1");
    drop(vnc);
    let bridge_err = bridge_err + &bridge.finish();
    let logs = server.logs();
    let secret = std::fs::read_to_string(pve.info["token_secret_file"].as_str().unwrap()).unwrap();
    for text in [&bridge_err, &logs] {
        assert!(!text.contains("PVEVNC"), "a VNC ticket was printed: {text}");
        assert!(!text.contains(secret.trim()), "the API token was printed");
    }

    let stopped = hcp.json(&["vm", "stop", &id, "--project", "demo", "--wait"]);
    assert_eq!(stopped["job"]["state"], "SUCCEEDED", "{stopped}");
    let seen = proxmoxer(
        &pve,
        serde_json::json!({"op": "vm", "node": "pve1", "vmid": vmid}),
    );
    assert_eq!(seen["status"]["status"], "stopped");

    let deleted = hcp.json(&["vm", "delete", &id, "--project", "demo", "--wait"]);
    assert_eq!(deleted["job"]["state"], "SUCCEEDED", "{deleted}");
    let listed = proxmoxer(&pve, serde_json::json!({"op": "list", "node": "pve1"}));
    assert!(
        !listed["vms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "web-1"),
        "{listed}"
    );
}
