//! The test peer: fakepve started as a child process by `fakepve_launcher.py`, from the venv
//! `peer.sh` makes. A missing venv fails the test (never a skip).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hcp_core::{JobReporter, LogEntry, Provider};
use hcp_provider_proxmox::{ProxmoxHost, ProxmoxProvider, ProxmoxSettings};
use serde_json::{Value, json};

/// The template every test clones.
pub const IMAGE: &str = "ubuntu-24.04";
/// The node tests create VMs on.
pub const NODE: &str = "pve1";

/// Returns the venv's python; panics (fails the test) when `peer.sh` has not run.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("HCP_FAKEPVE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/hcp-fakepve-venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "the Proxmox test peer is missing: run hcp-providers/proxmox/peer.sh (looked for {})",
        py.display()
    );
    py
}

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// A running fakepve.
pub struct Peer {
    child: Child,
    io: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    /// Where it listens and how to log in.
    pub info: Value,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Starts fakepve; `time_scale` turns PVE seconds into real ones (0: tasks end at once).
    pub fn start(time_scale: f64) -> Peer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(python())
            .arg(tests_dir().join("fakepve_launcher.py"))
            .arg(dir.path())
            .arg("--time-scale")
            .arg(time_scale.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fakepve_launcher.py");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read fakepve's address");
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("fakepve did not start ({e}): {line:?}"));
        Peer {
            child,
            io: Mutex::new((stdin, stdout)),
            info,
            _dir: dir,
        }
    }

    /// Runs a launcher command (fault injection); panics on an error reply.
    pub fn command(&self, cmd: Value) -> Value {
        let mut io = self.io.lock().unwrap();
        writeln!(io.0, "{cmd}").expect("write to fakepve");
        io.0.flush().expect("flush");
        let mut line = String::new();
        io.1.read_line(&mut line).expect("read fakepve's reply");
        let reply: Value = serde_json::from_str(&line).expect("a JSON reply");
        assert!(
            reply.get("error").is_none(),
            "fakepve command {cmd}: {reply}"
        );
        reply
    }

    /// Returns the API URL.
    pub fn url(&self) -> &str {
        self.info["url"].as_str().unwrap()
    }

    /// Returns settings trusting the peer's certificate as a CA.
    pub fn settings(&self) -> ProxmoxSettings {
        self.settings_with(json!({}))
    }

    /// Returns settings trusting the peer's certificate as a CA, with `extra` keys set.
    pub fn settings_with(&self, extra: Value) -> ProxmoxSettings {
        let mut v = json!({
            "url": self.info["url"],
            "token_id": self.info["token_id"],
            "token_secret_file": self.info["token_secret_file"],
            "ca_file": self.info["ca_file"],
            "task_poll": "20ms",
            "networks": {"default": "vmbr0"},
        });
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        ProxmoxSettings::from_value("pve", &v).expect("valid settings")
    }

    /// Builds a provider over nodes pve1 and pve2.
    pub fn provider(&self) -> Arc<ProxmoxProvider> {
        self.provider_with(self.settings())
    }

    /// Builds a provider with `settings` over nodes pve1 and pve2.
    pub fn provider_with(&self, settings: ProxmoxSettings) -> Arc<ProxmoxProvider> {
        Arc::new(
            ProxmoxProvider::new(
                "pve",
                settings,
                vec![
                    ProxmoxHost::new("pve1", "zone-a", "pve1"),
                    ProxmoxHost::new("pve2", "zone-a", "pve2"),
                ],
            )
            .expect("provider"),
        )
    }

    /// Runs `tests/crosscheck.py` (proxmoxer, the independent client) with `args`; returns its
    /// JSON answer.
    pub fn proxmoxer(&self, args: Value) -> Value {
        let out = Command::new(python())
            .arg(tests_dir().join("crosscheck.py"))
            .arg(
                json!({
                    "url": self.info["url"],
                    "token_id": self.info["token_id"],
                    "token_secret_file": self.info["token_secret_file"],
                    "ca_file": self.info["ca_file"],
                    "args": args,
                })
                .to_string(),
            )
            .output()
            .expect("run crosscheck.py");
        assert!(
            out.status.success(),
            "crosscheck.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("crosscheck.py prints JSON")
    }
}

/// Returns the provider as the trait object the engine uses.
pub fn dyn_provider(p: &Arc<ProxmoxProvider>) -> Arc<dyn Provider> {
    p.clone()
}

/// Collects job log lines.
#[derive(Default)]
pub struct Lines(pub Mutex<Vec<LogEntry>>);

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
}

impl JobReporter for Lines {
    fn log(&self, entry: LogEntry) {
        self.0.lock().unwrap().push(entry);
    }
    fn progress(&self, _percent: u8) {}
}

/// A short pause for tasks started in the background.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}
