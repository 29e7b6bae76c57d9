//! Runs the real `hcp serve` binary for the remote-mode tests, on a free loopback port, and kills
//! it when the test ends, even when it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Variables that would change how `hcp serve` runs; every test starts without them.
const SERVE_ENV: &[&str] = &[
    "HCP_NATS_URL",
    "HCP_NATS_SUBJECT_PREFIX",
    "HCP_NATS_STREAM",
    "HCP_LISTEN",
    "HCP_CONFIG",
    "HCP_LOG_FORMAT",
    "HCP_LOG_LEVEL",
    "RUST_LOG",
    "HCP_BODY_LIMIT",
    "HCP_REQUEST_TIMEOUT",
    "HCP_PAGE_MAX",
    "HCP_SHUTDOWN_TIMEOUT",
    "HCP_PUBLIC_URL",
    "HCP_CONSOLE_TTL",
    "HCP_HEADER_READ_TIMEOUT",
    "HCP_MAX_CONNECTIONS",
    "HCP_MAX_HEADER_BYTES",
    "INVENTORY_REFRESH_INTERVAL",
    "HCP_JOB_TIMEOUT",
    "HCP_JOB_LEASE",
    "HCP_ROLE",
    "HCP_IDEMPOTENCY_TTL",
    "HCP_MAX_CONCURRENT_JOBS",
    "HCP_MAX_JOBS_PER_HOST",
    "HCP_DEFAULT_PROJECT",
    "HCP_SECRETS_DIR",
    "HCP_DATABASE_URL",
    "HCP_DATABASE_SCHEMA",
    "HCP_URL",
    "HCP_TOKEN",
    "OIDC_ISSUER_URL",
    "OIDC_CLIENT_ID",
    "OIDC_ROLE_NAME",
    "OIDC_HYPERV_ROLE",
    "OIDC_TENANT_ROLE",
    "OIDC_ALLOW_SHARED_TENANT_ROLE",
    "OIDC_ROLES_CLAIM_STRING",
    "OIDC_PROJECTS_CLAIM_STRING",
    "OIDC_OPERATOR_ROLE",
    "OIDC_ROLES_CLAIM",
    "OIDC_PROJECTS_CLAIM",
    "OIDC_REDIRECT_URL",
    "HCP_PUBLIC_ROUTES",
];

/// How long start-up may take before the test gives up (a guard against hanging, not a
/// measurement).
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

/// Builds an `hcp serve` command.
pub struct ServeBuilder {
    dir: tempfile::TempDir,
    command: Command,
    listen: Option<String>,
}

impl ServeBuilder {
    /// `hcp serve --listen 127.0.0.1:0` with JSON logs at `info` and a clean environment.
    pub fn new() -> ServeBuilder {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_hcp"));
        for var in SERVE_ENV {
            command.env_remove(var);
        }
        command
            .env("HOME", dir.path().join("home"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("HCP_SIM_STATE", dir.path().join("cli-sim.json"))
            .env("HCP_LOG_FORMAT", "json")
            .env("HCP_LOG_LEVEL", "info")
            .arg("serve");
        ServeBuilder {
            dir,
            command,
            listen: Some("127.0.0.1:0".into()),
        }
    }

    /// Sets `--listen` (`127.0.0.1:0` by default); `None` leaves the flag out.
    pub fn listen(mut self, addr: Option<&str>) -> ServeBuilder {
        self.listen = addr.map(str::to_string);
        self
    }

    fn spawn(&mut self) -> Child {
        if let Some(l) = self.listen.take() {
            self.command.args(["--listen", &l]);
        }
        self.command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hcp serve")
    }

    /// The directory of this server's files.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Writes `yaml` as the hosts file and passes it with `--config`.
    pub fn hosts(mut self, yaml: &str) -> ServeBuilder {
        let path = self.dir.path().join("hosts.yaml");
        std::fs::write(&path, yaml).expect("write hosts file");
        self.command.arg("--config").arg(path);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> ServeBuilder {
        self.command.env(key, value);
        self
    }

    /// Adds arguments.
    pub fn args(mut self, args: &[&str]) -> ServeBuilder {
        self.command.args(args);
        self
    }

    /// Runs it to the end (for start-up failures).
    pub fn fail(mut self) -> super::Run {
        let (tx, rx) = mpsc::channel();
        let mut child = self.spawn();
        let mut guard = Guard(Some(child.id()));
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut out = String::new();
            let mut err = String::new();
            let _ = stdout.read_to_string(&mut out);
            let _ = stderr.read_to_string(&mut err);
            let _ = tx.send((out, err));
        });
        let (stdout, stderr) = rx
            .recv_timeout(STARTUP_LIMIT)
            .expect("hcp serve did not exit; it should have refused to start");
        let status = child.wait().expect("wait for hcp serve");
        guard.0 = None;
        super::Run {
            code: status.code().expect("hcp serve was killed by a signal"),
            stdout,
            stderr,
        }
    }

    /// Starts it and waits until it listens (its banner) and is ready (`/readyz` answers 200).
    pub fn start(mut self) -> Server {
        let mut child = self.spawn();
        let pid = child.id();
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            banner: String::new(),
            logs,
            stderr_reader: Some(stderr_reader),
            stdout: rx,
            _dir: self.dir,
        };
        // The banner ends with the line about stopping.
        loop {
            match server.stdout.recv_timeout(STARTUP_LIMIT) {
                Ok(line) => {
                    let last = line.starts_with("Stop with");
                    server.banner.push_str(&line);
                    server.banner.push('\n');
                    if last {
                        break;
                    }
                }
                Err(_) => panic!(
                    "hcp serve (pid {pid}) printed no banner; stdout so far:\n{}\nlogs:\n{}",
                    server.banner,
                    server.logs()
                ),
            }
        }
        let first = server.banner.lines().next().unwrap_or_default();
        server.url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in the banner's first line: {first}"))
            .to_string();
        server.wait_ready();
        server
    }
}

/// Kills a process unless disarmed.
struct Guard(Option<u32>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A running `hcp serve`; killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, from the banner.
    pub url: String,
    /// What it printed on stdout once it listened.
    pub banner: String,
    logs: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    stdout: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The simulator demo, as `hcp serve` runs without configuration.
    pub fn demo() -> Server {
        ServeBuilder::new().start()
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The log lines written so far (stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    fn wait_ready(&mut self) {
        let mut last = String::new();
        for _ in 0..1200 {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("hcp serve exited with {status}; logs:\n{}", self.logs());
            }
            match http(self.addr(), "GET", "/readyz", &[], None) {
                Ok(r) if r.status == 200 => return,
                Ok(r) => last = format!("{} {}", r.status, r.body),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "hcp serve never became ready: {last}; logs:\n{}",
            self.logs()
        );
    }

    /// Sends SIGTERM, waits for the process to exit, and returns its status and every log line.
    pub fn terminate(self) -> (ExitStatus, String) {
        self.signal("TERM");
        self.wait()
    }

    /// Waits for the process to exit (after a signal) and returns its status and every log line.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let status = self
            .child
            .take()
            .unwrap()
            .wait()
            .expect("wait for hcp serve");
        if let Some(t) = self.stderr_reader.take() {
            let _ = t.join();
        }
        let logs = self.logs();
        (status, logs)
    }

    /// Sends a signal (`TERM`, `INT`, ...).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{name} failed");
    }

    /// Returns once the process has exited, or `None` if it still runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain HTTP/1.1 answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole answer.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(STARTUP_LIMIT))?;
    s.write_all(request(addr, method, path, headers, body).as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw)
}

/// Renders a request.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    req
}

fn parse(raw: &[u8]) -> std::io::Result<Answer> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, text.clone());
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Answer {
        status,
        headers: head.to_string(),
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A hosts file for the simulator with one zone, fast by default; `settings` is the YAML
/// flow mapping of the provider's settings (`{op_latency: {create_vm: 10m}}`).
pub fn hosts_file(settings: &str) -> String {
    format!(
        "providers:\n  - name: lab\n    kind: sim\n    settings: {settings}\n    hosts:\n      - {{name: lab-1, zone: east}}\n      - {{name: lab-2, zone: east}}\nzones:\n  - name: east\ncatalog:\n  images: [{{name: ubuntu-24.04, min_disk_gib: 5}}]\n  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}]\nprojects:\n  - name: demo\n  - name: other\n"
    )
}
