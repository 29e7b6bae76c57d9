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
