//! The OIDC test peer and the authenticated service: starts `oauth2-mock-server` (through
//! `mock-idp.mjs`) on 127.0.0.1 with a free port, mints tokens with the claims each case needs,
//! and starts the service trusting it (the real `hcp serve` binary when `HCP_SERVE_BIN` is set,
//! else in-process over real TCP). Every minted token is remembered, and every log line the
//! service writes is captured, so a test can assert that no token was ever logged.
//!
//! The peer is installed by `scripts/oidc-peer.sh`; when node or the package is missing the
//! tests fail and say so.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::common::{self, Setup, TestServer};

/// The client id (audience) the service is configured with.
pub const CLIENT_ID: &str = "hcp-test";
/// The tenant API's prefix.
pub const T: &str = "/api/hcp/tenant/v1";

/// The hosts file of the tests: the demo with a second project, `other`.
pub fn two_projects() -> String {
    hcp_provider_sim::DEMO_HOSTS_FILE.replace(
        "projects:\n",
        "projects:\n  - name: other\n    description: Another tenant\n",
    )
}

fn minted() -> &'static Mutex<Vec<String>> {
    static MINTED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    MINTED.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remembers a token (or cookie value) that must never appear in the logs.
pub fn remember(token: &str) {
    minted().lock().unwrap().push(token.to_string());
}

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured() -> &'static Buf {
    static LOGS: OnceLock<Buf> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Buf::default();
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_env_filter("debug")
            .with_writer(move || writer.clone())
            .init();
        buf
    })
}

/// Captures the logs of every in-process service of this test binary (call before starting one).
pub fn capture_logs() {
    captured();
}

fn child_logs() -> &'static Mutex<String> {
    static CHILD: OnceLock<Mutex<String>> = OnceLock::new();
    CHILD.get_or_init(|| Mutex::new(String::new()))
}

/// Returns every log line captured so far in this process, and those of every `hcp serve` child
/// that has stopped.
pub fn logs() -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&captured().0.lock().unwrap()),
        child_logs().lock().unwrap()
    )
}

/// Asserts that no remembered token (nor its signature) appears in `extra` or in the captured
/// logs, and returns how many tokens were checked.
pub fn assert_no_token_logged(extra: &str) -> usize {
    let text = format!("{}\n{extra}", logs());
    let tokens = minted().lock().unwrap().clone();
    for t in &tokens {
        assert!(!text.contains(t.as_str()), "a token was logged");
        if let Some(sig) = t.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(!text.contains(sig), "a token's signature was logged");
        }
    }
    tokens.len()
}

/// The running mock identity provider.
pub struct Idp {
    /// Its issuer, `http://localhost:PORT`.
    pub issuer: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    http: reqwest::Client,
    child: Child,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn npm_dir() -> PathBuf {
    match std::env::var_os("HCP_NPM_CACHE") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/hcp-npm")
        }
    }
}

impl Idp {
    /// Starts the provider; panics, naming the set-up script, when node or the package is missing.
    pub async fn start() -> Idp {
        let module = npm_dir().join("node_modules/oauth2-mock-server/dist/index.mjs");
        assert!(
            module.exists(),
            "the OIDC test peer is not installed ({} is missing): run scripts/oidc-peer.sh",
            module.display()
        );
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc/mock-idp.mjs");
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
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        })
        .await
        .unwrap()
        .expect("read the mock provider's address");
        let info: Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
            panic!("the mock provider did not start (said {line:?}); run scripts/oidc-peer.sh")
        });
        let port = info["port"].as_u64().expect("port");
        Idp {
            issuer: info["issuer"].as_str().expect("issuer").to_string(),
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            child,
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}/__test/{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("the mock provider answers");
        assert!(
            resp.status().is_success(),
            "control {path}: {}",
            resp.status()
        );
        resp.json().await.unwrap()
    }

    /// Mints a token signed by the current key: `claims` are merged over the defaults (`iss`,
    /// `iat`, `exp` in an hour, `nbf`), `remove` deletes claims, `header` merges into the header.
    pub async fn mint(&self, claims: Value, remove: &[&str], header: Value) -> String {
        let v = self
            .control(
                "token",
                json!({"claims": claims, "remove": remove, "header": header}),
            )
            .await;
        let t = v["token"].as_str().unwrap().to_string();
        remember(&t);
        t
    }

    /// Mints a valid token for `sub` with `roles` and `projects`.
    pub async fn token(&self, sub: &str, roles: &[&str], projects: &[&str]) -> String {
        self.mint(
            json!({"sub": sub, "aud": CLIENT_ID, "roles": roles, "projects": projects}),
            &[],
            json!({}),
        )
        .await
    }

    /// Makes a new current RS256 key; `retire` removes the old one from the published key set.
    pub async fn rotate(&self, retire: bool) -> String {
        self.rotate_to("RS256", retire).await
    }

    /// Makes a new current key for `alg` (RS256, PS256, ES256, EdDSA, ...).
    pub async fn rotate_to(&self, alg: &str, retire: bool) -> String {
        self.control("rotate", json!({"alg": alg, "retire": retire}))
            .await["kid"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Returns the current key's id and its public key in PEM.
    pub async fn public_pem(&self) -> (String, String) {
        let v = self.control("public-pem", json!({})).await;
        (
            v["kid"].as_str().unwrap().to_string(),
            v["pem"].as_str().unwrap().to_string(),
        )
    }

    /// Returns how many times the JWKS was fetched.
    pub async fn jwks_fetches(&self) -> u64 {
        self.control("stats", json!({})).await["jwks"]
            .as_u64()
            .unwrap()
    }

    /// Makes discovery and JWKS answer 503 (or answer again).
    pub async fn set_down(&self, down: bool) {
        self.control("down", json!({"down": down})).await;
    }

    /// Sets claims merged into every token the token endpoint issues (the browser login).
    pub async fn set_login_claims(&self, claims: Value) {
        self.control("login-claims", json!({"claims": claims}))
            .await;
    }
}

/// A service trusting a mock provider.
pub struct AuthServer {
    pub idp: Idp,
    pub server: TestServer,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        // Keep a stopped child's logs for the suite-wide "no token logged" check.
        child_logs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&self.server.child_logs());
    }
}

impl AuthServer {
    /// Starts a provider and a service with two projects (`demo`, `other`) that trusts it, with
    /// `env` on top of the OIDC settings.
    pub async fn start(env: &[(&str, &str)]) -> AuthServer {
        AuthServer::start_with_hosts(two_projects(), env).await
    }

    /// Starts a provider and a service with the hosts file `hosts_yaml` that trusts it, with
    /// `env` on top of the OIDC settings.
    pub async fn start_with_hosts(hosts_yaml: String, env: &[(&str, &str)]) -> AuthServer {
        capture_logs();
        let idp = Idp::start().await;
        let mut vars = vec![
            ("OIDC_ISSUER_URL".to_string(), idp.issuer.clone()),
            ("OIDC_CLIENT_ID".to_string(), CLIENT_ID.to_string()),
            ("HCP_LOG_LEVEL".to_string(), "debug".to_string()),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let server = common::start_with(Setup {
            hosts_yaml: Some(hosts_yaml),
            env: vars,
            ..Default::default()
        })
        .await;
        AuthServer { idp, server }
    }

    /// Returns the full URL of `path`.
    pub fn at(&self, path: &str) -> String {
        self.server.at(path)
    }

    /// Sends a GET with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.server
            .http
            .get(self.at(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Creates a VM in `project` with a bearer token.
    pub async fn create(&self, project: &str, name: &str, token: &str) -> reqwest::Response {
        self.server
            .http
            .post(self.at(&format!("{T}/projects/{project}/vms")))
            .bearer_auth(token)
            .json(&json!({"name": name, "image": "ubuntu-24.04", "flavor": "small"}))
            .send()
            .await
            .unwrap()
    }

    /// Asserts that no minted token appears in the logs of this service (and of every
    /// in-process service of this test binary).
    pub fn assert_no_token_logged(&self) -> usize {
        assert_no_token_logged(&self.server.child_logs())
    }
}

/// Replaces a token's header with `header` (keeping its claims and signature).
pub fn with_header(token: &str, header: Value) -> String {
    let mut parts = token.splitn(3, '.');
    let (_, claims, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let t = format!(
        "{}.{claims}.{sig}",
        URL_SAFE_NO_PAD.encode(header.to_string())
    );
    remember(&t);
    t
}

/// Returns a token's decoded header.
pub fn header_of(token: &str) -> Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

/// Returns a token's decoded claims.
pub fn claims_of(token: &str) -> Value {
    let c = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap()
}

/// Asserts a `401` with `WWW-Authenticate: Bearer ... error="invalid_token"` whose problem
/// detail mentions `check`, without echoing `token`; returns the detail.
pub async fn assert_invalid(resp: reqwest::Response, token: &str, check: &str) -> String {
    assert_eq!(resp.status(), 401, "expected 401");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .expect("a WWW-Authenticate header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer realm=\"hcp\", error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let text = resp.text().await.unwrap();
    assert!(!text.contains(token), "the token was echoed");
    assert!(!challenge.contains(token), "the token was echoed");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["code"], "INVALID_TOKEN", "{body}");
    assert_eq!(body["status"], 401);
    let detail = body["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(check),
        "{detail:?} does not mention {check:?}"
    );
    assert!(
        challenge.contains(check),
        "{challenge:?} does not mention {check:?}"
    );
    detail
}
