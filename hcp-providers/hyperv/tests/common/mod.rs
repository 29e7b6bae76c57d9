//! Starts HCP's WinRM test host (`testhost/`) as a child process on free ports and builds
//! providers against it. Fails loudly when the test host's virtualenv is missing.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hcp_core::{SecretString, Secrets};
use hcp_provider_hyperv::{
    AuthKind, Credentials, HostEntry, HostSettings, HypervProvider, HypervSettings,
};
use serde_json::Value;

pub const USER: &str = "hcp";
pub const PASSWORD: &str = "Hcp-test-pässword-'$(x)";

/// A running test host process.
pub struct TestHost {
    child: Child,
    pub hosts: Vec<(String, u16)>,
    pub control: String,
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("HCP_WINRM_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var("HCP_WINRM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/hcp-winrm-venv")
        });
    venv.join("bin/python")
}

impl TestHost {
    /// Starts `hosts` WinRM hosts over HTTPS (self-signed), optionally as one failover cluster.
    pub fn start(hosts: usize, cluster: Option<&str>) -> TestHost {
        TestHost::start_with(hosts, cluster, &[])
    }

    pub fn start_with(hosts: usize, cluster: Option<&str>, extra: &[&str]) -> TestHost {
        TestHost::spawn(hosts, cluster, extra, true)
    }

    /// Starts `hosts` WinRM hosts over plain HTTP (NTLM sealing or Basic).
    pub fn start_http(hosts: usize) -> TestHost {
        TestHost::spawn(hosts, None, &[], false)
    }

    fn spawn(hosts: usize, cluster: Option<&str>, extra: &[&str], tls: bool) -> TestHost {
        let py = python();
        assert!(
            Path::new(&py).exists(),
            "the WinRM test host's virtualenv is missing ({}): run hcp-providers/hyperv/testhost/setup.sh first",
            py.display()
        );
        // HCP_TESTHOST_CLOCK: run the test host with its clock moved (libfaketime's offset syntax,
        // e.g. "+20m"), for the Kerberos clock-skew test. Preloaded into the test host itself
        // (not through the `faketime` wrapper), so that dropping the TestHost ends the process.
        let mut cmd = Command::new(&py);
        if let Ok(offset) = std::env::var("HCP_TESTHOST_CLOCK") {
            let lib = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
                .iter()
                .map(|a| PathBuf::from(format!("/usr/lib/{a}/faketime/libfaketime.so.1")))
                .find(|p| p.exists())
                .expect("libfaketime is installed (testhost/kdc.sh installs Debian's faketime)");
            cmd.env("LD_PRELOAD", lib).env("FAKETIME", offset);
        }
        cmd.current_dir(crate_dir().join("testhost"))
            .args(["-m", "hcp_winrm_testhost", "--hosts", &hosts.to_string()])
            .args([
                "--username",
                USER,
                "--password",
                PASSWORD,
                "--copy-seconds",
                "0.3",
            ])
            // winrm-rs 1.1 re-authenticates every HTTPS request with NTLM, and its connection
            // pool may send the Authenticate message on another connection (see the README).
            .args(["--ntlm-binding", "any"])
            .args(extra)
            .args(if tls { &["--tls"][..] } else { &[][..] })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("HCP_TESTHOST_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if let Some(c) = cluster {
            cmd.args(["--cluster", c]);
        }
        let mut child = cmd.spawn().expect("cannot start the WinRM test host");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the test host prints its address");
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the test host printed {line:?} instead of JSON: {e}"));
        let hosts = info["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().unwrap().to_string(),
                    h["port"].as_u64().unwrap() as u16,
                )
            })
            .collect();
        TestHost {
            child,
            hosts,
            control: info["control"].as_str().expect("control").to_string(),
        }
    }

    pub fn port(&self, host: &str) -> u16 {
        self.hosts.iter().find(|(n, _)| n == host).expect("host").1
    }

    /// Calls the control API: GET when `body` is None.
    pub fn control(&self, host: &str, op: &str, body: Option<Value>) -> Value {
        let url = self.control.trim_start_matches("http://");
        let (addr, base) = url.split_once('/').unwrap();
        let path = format!("/{base}/{host}/{op}");
        let mut s = TcpStream::connect(addr).expect("control port");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let method = if payload.is_empty() { "GET" } else { "POST" };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("control {op}: {e}: {resp}"))
    }

    pub fn entries(&self, cluster: Option<&str>) -> Vec<HostEntry> {
        self.hosts
            .iter()
            .map(|(name, port)| HostEntry {
                name: name.clone(),
                zone: "zone-a".into(),
                vcpus: None,
                memory_mib: None,
                settings: HostSettings {
                    address: Some("127.0.0.1".into()),
                    port: Some(*port),
                    cluster: cluster.map(str::to_string),
                },
            })
            .collect()
    }
}

pub fn settings() -> HypervSettings {
    HypervSettings {
        tls_verify: false,
        auth: AuthKind::Ntlm,
        script_timeout: Duration::from_secs(60),
        operation_timeout: Duration::from_secs(5),
        ..HypervSettings::default()
    }
}

pub fn creds(password: &str) -> Credentials {
    Credentials {
        username: USER.into(),
        password: SecretString::new(password),
    }
}

pub fn provider(th: &TestHost, settings: HypervSettings) -> HypervProvider {
    HypervProvider::new("hyperv", settings, th.entries(None), creds(PASSWORD)).unwrap()
}

/// Builds an engine over `config` (its reconciler off) with the test host's credentials in a
/// secrets directory, which lives as long as the returned `TempDir`.
pub async fn engine(mut config: hcp_core::Config) -> (hcp_core::Engine, tempfile::TempDir) {
    let (dir, secrets) = secrets_dir();
    config.secrets = secrets;
    let engine = hcp_provider_hyperv::register(hcp_core::Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    (engine, dir)
}

/// A secrets directory holding the test host's credentials.
pub fn secrets_dir() -> (tempfile::TempDir, Secrets) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("winrm_username"), USER).unwrap();
    std::fs::write(dir.path().join("winrm_password"), PASSWORD).unwrap();
    let s = Secrets::new(dir.path());
    (dir, s)
}
