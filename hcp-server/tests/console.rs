//! The console proxy, in-process over real TCP: a provider whose console has an `upstream` (the
//! simulator wrapped to point its consoles at a TCP echo server these tests run) gets HCP's own
//! WebSocket URL with a single-use token; a WebSocket client relays bytes through it; used,
//! expired, unknown and foreign tokens are refused; sessions are audit events. The real VNC
//! check (an RFB handshake with a QEMU domain) is `hcp-cli/tests/libvirt_e2e.rs`.
//!
//! These tests need a provider that only exists in this file, so they always run in-process
//! (also when `HCP_SERVE_BIN` is set).

mod common;
mod oidc;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hcp_core::store::Scope;
use hcp_core::{
    Console, Engine, EventFilter, EventKind, GetConsole, JobId, JobState, OpContext, Provider,
    ProviderConfig, Secrets, VmId,
};
use hcp_provider_sim::SimProvider;
use hcp_server::{ServeOptions, Server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const T: &str = "/api/hcp/tenant/v1";
/// What the echo upstream says first, like a VNC server.
const GREETING: &[u8] = b"RFB 003.008\n";
/// A guard against hanging, not a measurement.
const LIMIT: Duration = Duration::from_secs(30);

/// The simulator, with consoles that point at `upstream` (which a test may change).
#[derive(Debug)]
struct Proxied {
    inner: Arc<dyn Provider>,
    upstream: Arc<Mutex<String>>,
}

#[async_trait::async_trait]
impl Provider for Proxied {
    fn info(&self) -> hcp_core::ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> hcp_core::Capabilities {
        self.inner.capabilities()
    }
    async fn list_hosts(&self) -> hcp_core::Result<Vec<hcp_core::HostInfo>> {
        self.inner.list_hosts().await
    }
    async fn host_inventory(
        &self,
        args: hcp_core::HostInventory,
    ) -> hcp_core::Result<hcp_core::HostInventoryReply> {
        self.inner.host_inventory(args).await
    }
    async fn create_vm(
        &self,
        ctx: &OpContext,
        args: hcp_core::CreateVm,
    ) -> hcp_core::Result<hcp_core::CreatedVm> {
        self.inner.create_vm(ctx, args).await
    }
    async fn delete_vm(
        &self,
        ctx: &OpContext,
        args: hcp_core::DeleteVm,
    ) -> hcp_core::Result<hcp_core::DeletedVm> {
        self.inner.delete_vm(ctx, args).await
    }
    async fn start_vm(
        &self,
        ctx: &OpContext,
        args: hcp_core::StartVm,
    ) -> hcp_core::Result<hcp_core::StartedVm> {
        self.inner.start_vm(ctx, args).await
    }
    async fn stop_vm(
        &self,
        ctx: &OpContext,
        args: hcp_core::StopVm,
    ) -> hcp_core::Result<hcp_core::StoppedVm> {
        self.inner.stop_vm(ctx, args).await
    }
    async fn reboot_vm(
        &self,
        ctx: &OpContext,
        args: hcp_core::RebootVm,
    ) -> hcp_core::Result<hcp_core::RebootedVm> {
        self.inner.reboot_vm(ctx, args).await
    }
    async fn console(&self, args: GetConsole) -> hcp_core::Result<Console> {
        let c = self.inner.console(args).await?;
        let upstream = self.upstream.lock().unwrap().clone();
        Ok(
            Console::new(c.kind, format!("vnc://{upstream}"), c.expires_at)
                .with_upstream(hcp_core::ConsoleUpstream::tcp(upstream)),
        )
    }
}

/// A TCP server that greets like a VNC server, echoes what it reads, and closes on `bye`.
struct Echo {
    addr: String,
    connections: Arc<AtomicUsize>,
}

async fn echo() -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if sock.write_all(GREETING).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) if buf[..n].ends_with(b"bye") => return,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Echo { addr, connections }
}

/// A service whose provider's consoles point at `upstream`.
struct Service {
    url: String,
    http: reqwest::Client,
    engine: Engine,
    upstream: Arc<Mutex<String>>,
    /// The engine's clock: tests move it past a token's deadline instead of sleeping.
    clock: Arc<hcp_core::ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<hcp_core::Result<()>>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Service {
    async fn start(upstream: &str, hosts_yaml: &str, env: &[(&str, &str)]) -> Service {
        let vars: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let config = hcp_core::Config::from_yaml(hosts_yaml, "test hosts file").unwrap();
        let shared = Arc::new(Mutex::new(upstream.to_string()));
        let up = shared.clone();
        let clock = Arc::new(hcp_core::ManualClock::starting_now());
        let engine = Engine::builder(config)
            .clock(clock.clone())
            .provider_kind("sim", move |c: &ProviderConfig, s: &Secrets| {
                let inner: Arc<dyn Provider> = Arc::new(SimProvider::from_config(c, s)?);
                let p: Arc<dyn Provider> = Arc::new(Proxied {
                    inner,
                    upstream: up.clone(),
                });
                Ok(p)
            })
            .build()
            .await
            .expect("engine builds");
        let options = ServeOptions::default()
            .apply_env(&env)
            .expect("valid environment")
            .with_listen("127.0.0.1:0".parse().unwrap());
        let server = Server::bind(engine.clone(), options).await.expect("binds");
        let url = format!("http://{}", server.local_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Service {
            url,
            http: reqwest::Client::new(),
            engine,
            upstream: shared,
            clock,
            stop: Some(tx),
            task: Some(task),
        }
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Creates a VM in `project` (as the bearer of `token`, if any) and waits until it runs.
    async fn vm(&self, project: &str, name: &str, token: Option<&str>) -> String {
        let mut rb = self
            .http
            .post(self.at(&format!("{T}/projects/{project}/vms")))
            .json(&json!({"name": name, "image": "ubuntu-24.04", "flavor": "small", "zone": "zone-a"}));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 202);
        let body: Value = resp.json().await.unwrap();
        let job = self
            .engine
            .wait_job(
                &Scope::All,
                &JobId::new(body["job_id"].as_str().unwrap()),
                Some(LIMIT),
            )
            .await
            .unwrap();
        assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
        body["vm_id"].as_str().unwrap().to_string()
    }

    /// Asks for a console; returns the status and body.
    async fn console(&self, project: &str, vm: &str, token: Option<&str>) -> (u16, Value) {
        let mut rb = self
            .http
            .post(self.at(&format!("{T}/projects/{project}/vms/{vm}:console")));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    /// Returns the console sessions' audit events of `vm`.
    async fn sessions(&self, vm: &str) -> Vec<Arc<hcp_core::Event>> {
        let all = self
            .engine
            .list_events(&EventFilter {
                after: 0,
                project: None,
                vm_id: Some(VmId::new(vm)),
                limit: 1000,
            })
            .await
            .unwrap();
        all.into_iter()
            .filter(|e| matches!(e.kind, EventKind::ConsoleSession { .. }))
            .collect()
    }

    /// Waits until `vm` has `n` console session events.
    async fn wait_sessions(&self, vm: &str, n: usize) -> Vec<Arc<hcp_core::Event>> {
        let wait = async {
            loop {
                let s = self.sessions(vm).await;
                if s.len() >= n {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(LIMIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{vm} never had {n} console session events"))
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket as noVNC does (asking for the `binary` subprotocol); a refusal returns the
/// HTTP status and problem body.
async fn connect(url: &str, bearer: Option<&str>) -> Result<(Ws, Option<String>), (u16, Value)> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    if let Some(t) = bearer {
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    match tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("the handshake ends")
    {
        Ok((ws, resp)) => {
            let protocol = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string());
            Ok((ws, protocol))
        }
        Err(WsError::Http(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(e) => panic!("the WebSocket handshake failed: {e}"),
    }
}

/// Opens a WebSocket that must be refused; returns the HTTP status and problem body.
async fn refused(url: &str, bearer: Option<&str>) -> (u16, Value) {
    match connect(url, bearer).await {
        Ok(_) => panic!("{url} opened; it should have been refused"),
        Err(refusal) => refusal,
    }
}

/// Reads binary frames until `n` bytes have come.
async fn read_bytes(ws: &mut Ws, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let msg = tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("a frame comes")
            .expect("the socket stays open")
            .expect("a frame");
        match msg {
            Message::Binary(b) => got.extend_from_slice(&b),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
    got
}

/// Reads until the server's close frame and returns its code.
async fn closed_with(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(LIMIT, ws.next())
            .await
            .expect("the server closes")
        {
            Some(Ok(Message::Close(frame))) => return frame.map_or(1005, |f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the socket broke instead of closing: {e}"),
            None => panic!("the socket ended without a close frame"),
        }
    }
}

fn url_of(console: &Value) -> String {
    console["url"].as_str().expect("a url").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_with_an_upstream_is_relayed_once_and_audited() {
    let up = echo().await;
    let s = Service::start(&up.addr, hcp_provider_sim::DEMO_HOSTS_FILE, &[]).await;
    let vm = s.vm("demo", "console-1", None).await;

    let (status, console) = s.console("demo", &vm, None).await;
    assert_eq!(status, 200, "{console}");
    assert_eq!(console["type"], "vnc");
    let url = url_of(&console);
    let base = s.url.replace("http://", "ws://");
    assert!(
        url.starts_with(&format!("{base}/api/hcp/tenant/v1/console/ws?token=")),
        "HCP's own WebSocket endpoint: {url}"
    );
    let port = up.addr.rsplit(':').next().unwrap();
    assert!(
        !console.to_string().contains(&up.addr) && !url.contains(&format!(":{port}/")),
        "the upstream never reaches the tenant: {console}"
    );
    let mut keys: Vec<&String> = console.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["expires_at", "type", "url"]);
    let expires: chrono::DateTime<chrono::Utc> =
        console["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires > chrono::Utc::now(), "{expires}");

    // noVNC's handshake: the `binary` subprotocol is accepted, bytes go both ways.
    let (mut ws, protocol) = connect(&url, None)
        .await
        .expect("the token opens the console");
    assert_eq!(protocol.as_deref(), Some("binary"));
    assert_eq!(read_bytes(&mut ws, GREETING.len()).await, GREETING);
    ws.send(Message::binary(b"hello".to_vec())).await.unwrap();
    assert_eq!(read_bytes(&mut ws, 5).await, b"hello");
    let opened = s.wait_sessions(&vm, 1).await;
    assert!(
        matches!(
            opened[0].kind,
            EventKind::ConsoleSession {
                opened: true,
                bytes: None
            }
        ),
        "{opened:?}"
    );
    assert_eq!(
        opened[0].principal.as_deref(),
        Some(hcp_server::auth::DEV_PRINCIPAL_NAME)
    );
    assert_eq!(opened[0].project.as_ref().map(|p| p.as_str()), Some("demo"));

    // The same URL again: the token opened its one connection.
    let (status, problem) = refused(&url, None).await;
    assert_eq!(status, 410, "{problem}");
    assert_eq!(problem["code"], "CONSOLE_TOKEN_USED");
    assert_eq!(problem["field"], "token");
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "no second upstream connection"
    );

    // The upstream closing ends the session with a normal close, and the end is audited with
    // the bytes relayed (greeting + hello both ways + bye).
    ws.send(Message::binary(b"bye".to_vec())).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, 1000);
    let both = s.wait_sessions(&vm, 2).await;
    match &both[1].kind {
        EventKind::ConsoleSession {
            opened: false,
            bytes: Some(n),
        } => assert_eq!(*n, (GREETING.len() + 5 + 5 + 3) as u64),
        other => panic!("expected the session's end, got {other:?}"),
    }
    assert_eq!(
        both[1].principal.as_deref(),
        Some(hcp_server::auth::DEV_PRINCIPAL_NAME)
    );

    // A second console is a new token, the client closing ends that session too.
    let (_, again) = s.console("demo", &vm, None).await;
    assert_ne!(url_of(&again), url);
    let (mut ws, _) = connect(&url_of(&again), None).await.unwrap();
    assert_eq!(read_bytes(&mut ws, GREETING.len()).await, GREETING);
    ws.close(None).await.unwrap();
    let four = s.wait_sessions(&vm, 4).await;
    assert!(matches!(
        four[3].kind,
        EventKind::ConsoleSession {
            opened: false,
            bytes: Some(12)
        }
    ));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_missing_and_expired_tokens_are_refused_and_plain_requests_spend_nothing() {
    let up = echo().await;
    let s = Service::start(
        &up.addr,
        hcp_provider_sim::DEMO_HOSTS_FILE,
        &[("HCP_CONSOLE_TTL", "30s")],
    )
    .await;
    let vm = s.vm("demo", "console-2", None).await;
    let ws_base = format!(
        "{}/api/hcp/tenant/v1/console/ws",
        s.url.replace("http://", "ws://")
    );

    let (status, problem) = refused(&format!("{ws_base}?token=not-a-token"), None).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["code"], "CONSOLE_TOKEN_NOT_FOUND");
    let (status, problem) = refused(&ws_base, None).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["field"], "token");

    // A plain GET (no upgrade) is refused before the token is spent.
    let (_, console) = s.console("demo", &vm, None).await;
    let url = url_of(&console);
    let plain = s
        .http
        .get(url.replacen("ws://", "http://", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["field"], "Upgrade", "{body}");
    let (mut ws, _) = connect(&url, None).await.expect("the token is still good");
    assert_eq!(read_bytes(&mut ws, GREETING.len()).await, GREETING);
    // RFB travels in binary frames; a text frame ends the session (1003, unsupported data).
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, 1003);
    let ended = s.wait_sessions(&vm, 2).await;
    assert!(matches!(
        ended[1].kind,
        EventKind::ConsoleSession {
            opened: false,
            bytes: Some(12)
        }
    ));

    // Past its deadline (30 s here), a token is refused and the upstream never hears of it.
    let (_, console) = s.console("demo", &vm, None).await;
    let before = up.connections.load(Ordering::SeqCst);
    s.clock.advance(Duration::from_secs(31));
    let (status, problem) = refused(&url_of(&console), None).await;
    assert_eq!(status, 410, "{problem}");
    assert_eq!(problem["code"], "CONSOLE_TOKEN_EXPIRED");
    assert_eq!(up.connections.load(Ordering::SeqCst), before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_that_does_not_answer_or_a_deleted_vm_is_refused_not_500() {
    let up = echo().await;
    let s = Service::start(&up.addr, hcp_provider_sim::DEMO_HOSTS_FILE, &[]).await;
    let vm = s.vm("demo", "console-3", None).await;

    // Nothing listens on the upstream any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    *s.upstream.lock().unwrap() = dead.local_addr().unwrap().to_string();
    drop(dead);
    let (_, console) = s.console("demo", &vm, None).await;
    let (status, problem) = refused(&url_of(&console), None).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["code"], "PROVIDER_UNAVAILABLE");
    assert_eq!(problem["retryable"], true);
    assert!(
        !problem.to_string().contains("127.0.0.1:"),
        "the upstream stays hidden: {problem}"
    );

    // The VM is deleted between the console and the connection.
    *s.upstream.lock().unwrap() = up.addr.clone();
    let (_, console) = s.console("demo", &vm, None).await;
    let del = s
        .http
        .delete(s.at(&format!("{T}/projects/demo/vms/{vm}?force=true")))
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 202);
    let body: Value = del.json().await.unwrap();
    s.engine
        .wait_job(
            &Scope::All,
            &JobId::new(body["job_id"].as_str().unwrap()),
            Some(LIMIT),
        )
        .await
        .unwrap();
    let (status, problem) = refused(&url_of(&console), None).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(s.sessions(&vm).await.len(), 0, "no session opened");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_closes_sessions_and_records_their_end() {
    let up = echo().await;
    let s = Service::start(&up.addr, hcp_provider_sim::DEMO_HOSTS_FILE, &[]).await;
    let vm = s.vm("demo", "console-4", None).await;
    let (_, console) = s.console("demo", &vm, None).await;
    let (mut ws, _) = connect(&url_of(&console), None).await.unwrap();
    assert_eq!(read_bytes(&mut ws, GREETING.len()).await, GREETING);
    s.wait_sessions(&vm, 1).await;
    let engine = s.engine.clone();
    let stopping = tokio::spawn(s.stop());
    assert_eq!(closed_with(&mut ws).await, 1001, "going away");
    stopping.await.unwrap();
    let events = engine
        .list_events(&EventFilter {
            after: 0,
            project: None,
            vm_id: Some(VmId::new(&vm)),
            limit: 1000,
        })
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e.kind,
            EventKind::ConsoleSession {
                opened: false,
                bytes: Some(12)
            }
        )),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_authentication_a_token_opens_only_for_its_caller() {
    oidc::capture_logs();
    let idp = oidc::Idp::start().await;
    let up = echo().await;
    let s = Service::start(
        &up.addr,
        &oidc::two_projects(),
        &[
            ("OIDC_ISSUER_URL", idp.issuer.as_str()),
            ("OIDC_CLIENT_ID", oidc::CLIENT_ID),
        ],
    )
    .await;
    let alice = idp.token("alice", &["hcp-tenant"], &["demo"]).await;
    let bob = idp.token("bob", &["hcp-tenant"], &["demo"]).await;
    let vm = s.vm("demo", "console-5", Some(&alice)).await;
    let (status, console) = s.console("demo", &vm, Some(&alice)).await;
    assert_eq!(status, 200, "{console}");
    let url = url_of(&console);
    oidc::remember(url.split_once("token=").unwrap().1);

    // Without credentials the upgrade is refused before the token is looked at.
    let (status, _) = refused(&url, None).await;
    assert_eq!(status, 401);
    // Bob is in the same project, but the token is Alice's: refused, and the token is void.
    let (status, problem) = refused(&url, Some(&bob)).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["code"], "CONSOLE_TOKEN_FOREIGN");
    let (status, problem) = refused(&url, Some(&alice)).await;
    assert_eq!(status, 410, "{problem}");
    assert_eq!(problem["code"], "CONSOLE_TOKEN_USED");
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);

    // A fresh token opens for Alice, and the session names her.
    let (_, console) = s.console("demo", &vm, Some(&alice)).await;
    let url = url_of(&console);
    oidc::remember(url.split_once("token=").unwrap().1);
    let (mut ws, _) = connect(&url, Some(&alice)).await.expect("Alice's token");
    assert_eq!(read_bytes(&mut ws, GREETING.len()).await, GREETING);
    ws.close(None).await.unwrap();
    let sessions = s.wait_sessions(&vm, 2).await;
    assert!(
        sessions
            .iter()
            .all(|e| e.principal.as_deref() == Some("alice")),
        "{sessions:?}"
    );
    // Another tenant cannot even ask for this VM's console.
    let carol = idp.token("carol", &["hcp-tenant"], &["other"]).await;
    let (status, _) = s.console("demo", &vm, Some(&carol)).await;
    assert_eq!(status, 404);
    s.stop().await;
    assert!(oidc::assert_no_token_logged("") >= 5);
}

#[tokio::test]
async fn a_console_without_an_upstream_keeps_the_providers_url() {
    let s = common::start().await;
    let vm = {
        let resp = s
            .http
            .post(s.at(&format!("{T}/projects/demo/vms")))
            .json(&json!({"name": "plain", "image": "ubuntu-24.04", "flavor": "small", "zone": "zone-a"}))
            .send()
            .await
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        s.client
            .wait_job(&JobId::new(body["job_id"].as_str().unwrap()), Some(LIMIT))
            .await
            .unwrap();
        body["vm_id"].as_str().unwrap().to_string()
    };
    let resp = s
        .http
        .post(s.at(&format!("{T}/projects/demo/vms/{vm}:console")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let console: Value = resp.json().await.unwrap();
    let url = url_of(&console);
    assert!(
        !url.contains("/console/ws"),
        "the simulator's console is not proxied: {url}"
    );
}
