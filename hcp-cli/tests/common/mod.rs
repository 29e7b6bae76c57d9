//! Runs the real `hcp` binary with its state in a temporary directory, never the user's; with
//! [`Hcp::with_url`], every command goes to a running `hcp serve` ([`server`]).

#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Exit codes, as `hcp --help` documents them.
pub const INVALID_INPUT: i32 = 2;
pub const NOT_FOUND: i32 = 3;
pub const CONFLICT: i32 = 4;
pub const FEATURE_NOT_SUPPORTED: i32 = 5;
pub const JOB_FAILED: i32 = 8;
pub const UNAVAILABLE: i32 = 7;
pub const INTERRUPTED: i32 = 130;

/// One isolated environment: simulator state, jobs file and state directory in a tempdir.
pub struct Hcp {
    pub dir: tempfile::TempDir,
    config: Option<PathBuf>,
    url: Option<String>,
    use_sim_state: bool,
}

/// The result of one command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Hcp {
    /// An environment on the built-in demo, with `HCP_SIM_STATE` set.
    pub fn new() -> Hcp {
        Hcp {
            dir: tempfile::tempdir().expect("tempdir"),
            config: None,
            url: None,
            use_sim_state: true,
        }
    }

    /// Runs every command with `--config path`.
    pub fn with_config(mut self, path: impl Into<PathBuf>) -> Hcp {
        self.config = Some(path.into());
        self
    }

    /// Runs every command with `--url url` (remote mode).
    pub fn with_url(mut self, url: &str) -> Hcp {
        self.url = Some(url.to_string());
        self
    }

    /// Leaves `HCP_SIM_STATE` unset, so the state goes under `XDG_STATE_HOME`.
    pub fn without_sim_state(mut self) -> Hcp {
        self.use_sim_state = false;
        self
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state_home(&self) -> PathBuf {
        self.path("state")
    }

    /// The command with a clean, isolated environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hcp"));
        for var in [
            "HCP_CONFIG",
            "HCP_PROJECT",
            "HCP_OUTPUT",
            "HCP_LOG",
            "HCP_LOG_LEVEL",
            "NO_COLOR",
            "HCP_URL",
            "HCP_TOKEN",
            "HCP_SIM_STATE",
        ] {
            c.env_remove(var);
        }
        c.env("XDG_STATE_HOME", self.state_home())
            .env("HOME", self.path("home"))
            .env("USER", "tester");
        if self.use_sim_state {
            c.env("HCP_SIM_STATE", self.path("sim.json"));
        }
        if let Some(config) = &self.config {
            c.arg("--config").arg(config);
        }
        if let Some(url) = &self.url {
            c.arg("--url").arg(url);
        }
        c
    }

    /// Runs `hcp args...`.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.command().args(args).output().expect("run hcp");
        Run::from(out)
    }

    /// Runs `hcp --output json args...`, asserts success and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let r = self.run(&all);
        assert_eq!(r.code, 0, "hcp {args:?} failed: {r:?}");
        r.json()
    }

    /// Creates a VM in the demo project and returns its id.
    pub fn create(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "vm",
            "create",
            "--project",
            "demo",
            "--name",
            name,
            "--image",
            "ubuntu-24.04",
            "--flavor",
            "small",
        ];
        args.extend_from_slice(extra);
        let v = self.json(&args);
        v["vm_id"].as_str().expect("vm_id").to_string()
    }

    /// Lists the VMs of `project` (JSON).
    pub fn vms(&self, project: &str) -> Vec<Value> {
        self.json(&["vm", "list", "--project", project])
            .as_array()
            .expect("array")
            .clone()
    }

    /// Lists every job (JSON).
    pub fn jobs(&self) -> Vec<Value> {
        self.json(&["job", "list"])
            .as_array()
            .expect("array")
            .clone()
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().expect("hcp was killed by a signal"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    }
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The `error` object printed on stderr with `--output json`.
    pub fn error(&self) -> Value {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON error on stderr: {self:?}"));
        let v: Value = serde_json::from_str(line).expect("JSON error");
        v["error"].clone()
    }
}

/// The example hosts file shipped in the repository.
pub fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/sim.yaml")
}

/// Speaks the client side of RFB (3.8, security type "None", a shared ClientInit) over `s`, as
/// a native VNC client does, and returns the desktop name of the server's ServerInit.
#[allow(dead_code)]
pub fn rfb_client(s: &mut std::net::TcpStream) -> String {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut version = [0u8; 12];
    s.read_exact(&mut version).expect("the RFB version");
    assert_eq!(&version, b"RFB 003.008\n");
    s.write_all(b"RFB 003.008\n").unwrap();
    let mut count = [0u8; 1];
    s.read_exact(&mut count).unwrap();
    let mut types = vec![0u8; usize::from(count[0])];
    s.read_exact(&mut types).unwrap();
    assert!(
        types.contains(&1),
        "the console asks no password of the client: {types:?}"
    );
    s.write_all(&[1]).unwrap();
    let mut result = [0u8; 4];
    s.read_exact(&mut result).unwrap();
    assert_eq!(u32::from_be_bytes(result), 0, "security result");
    s.write_all(&[1]).unwrap();
    // ServerInit: width, height (2 + 2), pixel format (16), name length (4), name.
    let mut init = [0u8; 24];
    s.read_exact(&mut init).expect("ServerInit");
    let len = u32::from_be_bytes(init[20..24].try_into().unwrap()) as usize;
    assert!(len < 4096);
    let mut name = vec![0u8; len];
    s.read_exact(&mut name).unwrap();
    String::from_utf8_lossy(&name).into_owned()
}

/// A running `hcp vm console --listen 127.0.0.1:0 --once`: its address, from its first line.
#[allow(dead_code)]
pub struct Bridge {
    child: std::process::Child,
    /// Where the bridge listens.
    pub addr: String,
}

#[allow(dead_code)]
impl Bridge {
    /// Starts `hcp <args> --listen 127.0.0.1:0 --once --output json` and reads its address.
    pub fn start(hcp: &Hcp, args: &[&str]) -> Bridge {
        use std::io::BufRead;
        let mut child = hcp
            .command()
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--once", "--output", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start hcp vm console --listen");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let listening: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the bridge did not say where it listens ({e}): {line:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            }
        };
        Bridge {
            addr: listening["listen"].as_str().unwrap().to_string(),
            child,
        }
    }

    /// Waits for the bridge to stop after its one connection; returns its stderr.
    pub fn finish(mut self) -> String {
        use std::io::Read;
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                assert!(status.success(), "the bridge failed: {status} {err}");
                return err;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the bridge did not stop after its --once connection");
    }
}
