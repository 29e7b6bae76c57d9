//! Starts the service for the tests: one helper, so the tests can run against the real `hcp serve`
//! binary (set `HCP_SERVE_BIN` to its path) or, by default, against `hcp_server::serve` in-process,
//! always over real TCP on 127.0.0.1.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use hcp_server::{ServeOptions, build_engine};
use tokio::sync::oneshot;

/// A running service.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A typed client of it.
    pub client: hcp_client::Client,
    /// A plain HTTP client.
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<hcp_core::Result<()>>>,
    child: Option<Child>,
    log_file: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Returns what the `hcp serve` child wrote to stderr (its logs); empty in-process, where
    /// logs go to the test binary's own subscriber.
    pub fn child_logs(&self) -> String {
        self.log_file
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Returns true when the service runs as the `hcp serve` binary.
    pub fn is_binary(&self) -> bool {
        self.log_file.is_some()
    }

    /// Returns the temporary directory of this server's files (`$DIR` in its hosts file).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.as_ref().expect("a temp dir").path()
    }

    /// Returns the full URL of `path`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Stops the service gracefully and returns what `serve` returned.
    pub async fn stop(mut self) -> hcp_core::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let status = c.wait().expect("wait for hcp serve");
            assert!(status.success(), "hcp serve exited with {status}");
            return Ok(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What to start.
#[derive(Default)]
pub struct Setup {
    /// A hosts file (YAML); the simulator's demo when absent.
    pub hosts_yaml: Option<String>,
    /// The body limit in bytes.
    pub body_limit: Option<usize>,
    /// Environment variables of the service (OIDC settings, ...): passed to the `hcp serve`
    /// child, or to `ServeOptions::apply_env` and `build_engine` in-process.
    pub env: Vec<(String, String)>,
}

/// Starts the demo service.
pub async fn start() -> TestServer {
    start_with(Setup::default()).await
}

/// Starts a service; the single place that decides in-process or binary.
pub async fn start_with(setup: Setup) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let config: Option<PathBuf> = setup.hosts_yaml.as_ref().map(|y| {
        let p = dir.path().join("hosts.yaml");
        std::fs::write(&p, y.replace("$DIR", &dir.path().display().to_string()))
            .expect("write hosts file");
        p
    });
    let http = reqwest::Client::new();
    if let Ok(bin) = std::env::var("HCP_SERVE_BIN") {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        if let Some(c) = &config {
            cmd.arg("--config").arg(c);
        }
        if let Some(l) = setup.body_limit {
            cmd.env("HCP_BODY_LIMIT", l.to_string());
        }
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        let log_file = dir.path().join("serve.log");
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).expect("log file"))
            .spawn()
            .expect("spawn hcp serve");
        let url = format!("http://127.0.0.1:{port}");
        // A guard, not a measurement: start-up reads every host's inventory first, which takes
        // a while on a loaded 2-core machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while http.get(format!("{url}/healthz")).send().await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "hcp serve exited ({status}) before it listened:\n{}",
                    std::fs::read_to_string(&log_file).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "hcp serve did not listen within 120 s:\n{}",
                std::fs::read_to_string(&log_file).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return TestServer {
            client: hcp_client::Client::new(&url).unwrap(),
            url,
            http,
            stop: None,
            task: None,
            child: Some(child),
            log_file: Some(log_file),
            _dir: Some(dir),
        };
    }
    let vars = setup.env.clone();
    let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let engine = build_engine(config.as_deref(), &env)
        .await
        .expect("engine builds");
    let mut options = ServeOptions::default()
        .apply_env(&env)
        .expect("the environment is valid")
        .with_listen("127.0.0.1:0".parse().unwrap());
    if let Some(l) = setup.body_limit {
        options = options.with_body_limit(l);
    }
    let server = hcp_server::Server::bind(engine, options)
        .await
        .expect("binds");
    let url = format!("http://{}", server.local_addr());
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    TestServer {
        client: hcp_client::Client::new(&url).unwrap(),
        url,
        http,
        stop: Some(tx),
        task: Some(task),
        child: None,
        log_file: None,
        _dir: Some(dir),
    }
}

/// Reads a response body as JSON.
pub async fn json_of(resp: reqwest::Response) -> Value {
    resp.json::<Value>().await.expect("a JSON body")
}

/// Reads a job's SSE log stream to its end and returns the raw text.
pub async fn read_sse_to_end(http: &reqwest::Client, url: &str) -> String {
    let resp = http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut text = String::new();
    let mut stream = resp.bytes_stream();
    let read = async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("event: end") && text.ends_with("\n\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the stream ends");
    text
}
