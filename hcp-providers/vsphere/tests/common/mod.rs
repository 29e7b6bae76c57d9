//! The test peer: govmomi's vCenter simulator (`vcsim`, built by `peer.sh` from Debian's govmomi
//! sources and our `vcsim/main.go`) started as a child process on a free loopback port, and
//! pyvmomi (the independent client, in the venv `peer.sh` makes). A missing binary or venv
//! fails the test, naming `peer.sh` (never a skip).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use hcp_core::{JobReporter, LogEntry, Provider};
use hcp_provider_vsphere::{VsphereHost, VsphereProvider, VsphereSettings};
use serde_json::{Value, json};

/// The image every test clones (a template the set-up makes with pyvmomi).
pub const IMAGE: &str = "ubuntu-24.04";
/// The template's source VM in the simulator's VPX inventory.
pub const SOURCE: &str = "DC0_C0_RP0_VM0";
/// The HCP host tests create VMs on, and its ESXi host.
pub const HOST: &str = "esx-a";
/// A second host in the same cluster.
pub const OTHER: &str = "esx-b";
/// A host in the other cluster.
pub const FAR: &str = "esx-c";
/// The simulator's login.
pub const USER: &str = "hcp-ci";
/// The simulator's password (held in a file, as in production).
pub const PASSWORD: &str = "s3cret-Pa55";

/// The loopback ports these tests use (the CLI end-to-end test takes 18730-18739, the benchmark
/// 18740-18749).
const PORTS: std::ops::Range<u16> = 18700..18730;
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

fn home_cache(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache")
            .join(default)
    })
}

/// Returns the vcsim binary; panics (fails the test) when `peer.sh` has not run.
pub fn vcsim() -> PathBuf {
    let bin = home_cache("HCP_VCSIM_DIR", "hcp-vcsim").join("vcsim");
    assert!(
        bin.exists(),
        "the vSphere test peer is missing: run hcp-providers/vsphere/peer.sh (looked for {})",
        bin.display()
    );
    bin
}

/// Returns pyvmomi's python; panics (fails the test) when `peer.sh` has not run.
pub fn python() -> PathBuf {
    let py = home_cache("HCP_PYVMOMI_VENV", "hcp-pyvmomi-venv").join("bin/python");
    assert!(
        py.exists(),
        "pyvmomi is missing: run hcp-providers/vsphere/peer.sh (looked for {})",
        py.display()
    );
    py
}

/// Picks a free loopback port in the range given to these tests.
fn free_port() -> u16 {
    let span = PORTS.end - PORTS.start;
    let seed = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    for _ in 0..span {
        let i = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        let port = PORTS.start + (seed + i) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

/// A running simulator.
pub struct Peer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The SHA-256 thumbprint of its certificate (hex).
    pub thumbprint: String,
    /// Its certificate (PEM).
    pub pem: String,
    /// Holds the password file.
    pub dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Starts vcsim with 2 clusters of 3 hosts and `vms` VMs per resource pool, and makes the
    /// template [`IMAGE`] with pyvmomi.
    pub fn start(vms: u32) -> Peer {
        Peer::start_with(&["-cluster", "2", "-host", "3", "-vm", &vms.to_string()])
    }

    /// Starts vcsim with `flags` (besides the address and login).
    pub fn start_with(flags: &[&str]) -> Peer {
        let bin = vcsim();
        let _ = python();
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(bin)
            .arg("-ca-out")
            .arg(dir.path().join("ca.pem"))
            .arg("-l")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-userpass")
            .arg(format!("{USER}:{PASSWORD}"))
            .arg("-standalone-host")
            .arg("0")
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vcsim");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read vcsim's URL");
        assert!(
            line.contains(&format!("127.0.0.1:{port}/sdk")),
            "vcsim did not start: {line:?}"
        );
        // Keep reading its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        let mut peer = Peer {
            child,
            port,
            thumbprint: String::new(),
            pem: String::new(),
            dir,
        };
        let t = peer.pyvmomi(json!({"cmd": "thumbprint"}));
        peer.thumbprint = t["sha256"].as_str().unwrap().to_string();
        peer.pem = t["pem"].as_str().unwrap().to_string();
        peer.pyvmomi(json!({"cmd": "setup", "template": IMAGE, "source": SOURCE}));
        peer
    }

    /// Returns the CA file the simulator wrote.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Returns the SDK URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/sdk", self.port)
    }

    /// Returns the settings block, trusting the pinned thumbprint, with `extra` keys set
    /// (`null` removes one).
    pub fn settings_json(&self, extra: Value) -> Value {
        let mut v = json!({
            "url": self.url(),
            "username": USER,
            "password_file": self.dir.path().join("password"),
            "thumbprint": self.thumbprint,
            "networks": {"default": "VM Network"},
            "task_timeout": "60s",
        });
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    }

    /// Returns settings with `extra` keys set.
    pub fn settings_with(&self, extra: Value) -> VsphereSettings {
        VsphereSettings::from_value("vc", &self.settings_json(extra)).expect("valid settings")
    }

    /// The four HCP hosts: the three ESXi hosts of cluster 0 and one of cluster 1.
    pub fn hosts() -> Vec<VsphereHost> {
        vec![
            VsphereHost::new(HOST, "zone-a", "DC0_C0_H0"),
            VsphereHost::new(OTHER, "zone-a", "DC0_C0_H1"),
            VsphereHost::new("esx-a3", "zone-a", "DC0_C0_H2"),
            VsphereHost::new(FAR, "zone-b", "DC0_C1_H0"),
        ]
    }

    /// Builds a provider over [`Peer::hosts`].
    pub fn provider(&self) -> Arc<VsphereProvider> {
        self.provider_with(self.settings_with(json!({})))
    }

    /// Builds a provider with `settings`.
    pub fn provider_with(&self, settings: VsphereSettings) -> Arc<VsphereProvider> {
        Arc::new(VsphereProvider::new("vc", settings, Peer::hosts()).expect("provider"))
    }

    /// Runs `tests/pyvmomi_client.py` with `args`; returns its JSON answer.
    pub fn pyvmomi(&self, args: Value) -> Value {
        let out = Command::new(python())
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pyvmomi_client.py"))
            .arg(
                json!({
                    "host": "127.0.0.1",
                    "port": self.port,
                    "user": USER,
                    "password": PASSWORD,
                    "args": args,
                })
                .to_string(),
            )
            .output()
            .expect("run pyvmomi_client.py");
        assert!(
            out.status.success(),
            "pyvmomi_client.py {args} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("pyvmomi_client.py prints JSON")
    }
}

/// Returns the provider as the trait object the engine uses.
pub fn dyn_provider(p: &Arc<VsphereProvider>) -> Arc<dyn Provider> {
    p.clone()
}

/// Collects job log lines.
#[derive(Default)]
pub struct Lines(pub Mutex<Vec<LogEntry>>, pub Mutex<Vec<u8>>);

impl Lines {
    /// The lines a tenant reads (their messages, without operator-only lines or details).
    pub fn tenant(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.audience == hcp_core::LogAudience::Everyone)
            .map(|e| e.message.clone())
            .collect()
    }

    /// Every line as an operator reads it: message and detail.
    pub fn operator(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| match &e.detail {
                Some(d) => format!("{} ({d})", e.message),
                None => e.message.clone(),
            })
            .collect()
    }

    /// The progress values reported.
    pub fn progress(&self) -> Vec<u8> {
        self.1.lock().unwrap().clone()
    }
}

impl JobReporter for Lines {
    fn log(&self, entry: LogEntry) {
        self.0.lock().unwrap().push(entry);
    }
    fn progress(&self, percent: u8) {
        self.1.lock().unwrap().push(percent);
    }
}
