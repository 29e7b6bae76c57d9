//! End to end through the real `hcp serve` binary (built with `--features libvirt`) over
//! `examples/config/libvirt.yaml`, against the real peer: libvirtd on qemu:///system running QEMU
//! guests, prepared by `hcp-providers/libvirt/setup.sh`. Every step is driven over HTTP (and a
//! WebSocket for the console) and checked independently with `virsh`.
//!
//! ```sh
//! sudo hcp-providers/libvirt/setup.sh
//! cargo test -p hcp-cli --features libvirt --test libvirt_e2e
//! ```
//!
//! The tests fail (never skip) when the peer is missing, kill every `hcp serve` they start, and
//! remove every domain and volume they made (a guard sweeps their name prefix and VM ids), even
//! when they fail.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::server::{ServeBuilder, Server};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const QEMU: &str = "qemu:///system";
const POOL: &str = "hcp";
const T: &str = "/api/hcp/tenant/v1";
const OPS: &str = "/api/hcp/ops/v1";
/// How long a console URL lets its client connect, in these tests.
const CONSOLE_TTL: Duration = Duration::from_secs(3);
/// A guard against hanging, not a measurement.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs `virsh -c qemu:///system args…` and returns (success, stdout + stderr).
fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(QEMU)
        .args(args)
        .output()
        .expect("virsh runs (install libvirt-clients: hcp-providers/libvirt/setup.sh)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Fails the test with a clear message when qemu:///system, its pool or base image is missing.
fn require_qemu() {
    let (ok, text) = virsh(&["vol-info", "--pool", POOL, "base-tiny.qcow2"]);
    assert!(
        ok,
        "the real libvirt peer is not ready: `virsh -c {QEMU} vol-info --pool {POOL} \
         base-tiny.qcow2` failed: {}\nrun `sudo hcp-providers/libvirt/setup.sh` (installs and \
         starts libvirt + QEMU, creates the pool and base image)",
        text.trim()
    );
}

fn domstate(name: &str) -> String {
    match virsh(&["domstate", name]) {
        (true, text) => text.trim().to_string(),
        (false, text) => format!("absent ({})", text.trim()),
    }
}

fn volumes() -> String {
    let (ok, text) = virsh(&["vol-list", POOL]);
    assert!(ok, "{text}");
    text
}

/// Removes, on drop, every domain whose name starts with its prefix and every volume of the VM
/// ids it was told about: what the tests made, even when they fail.
struct Cleanup {
    prefix: String,
    vm_ids: Mutex<Vec<String>>,
}

impl Cleanup {
    fn new(tag: &str) -> Arc<Cleanup> {
        let c = Cleanup {
            prefix: format!("hcpe{}{tag}", std::process::id() % 100_000),
            vm_ids: Mutex::new(Vec::new()),
        };
        c.sweep();
        Arc::new(c)
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    fn track(&self, vm_id: &str) {
        self.vm_ids.lock().unwrap().push(vm_id.to_string());
    }

    fn sweep(&self) {
        let (_, names) = virsh(&["list", "--all", "--name"]);
        for name in names
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with(&self.prefix))
        {
            let _ = virsh(&["destroy", name]);
            let _ = virsh(&[
                "undefine",
                name,
                "--remove-all-storage",
                "--snapshots-metadata",
                "--nvram",
            ]);
        }
        for id in self.vm_ids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            for vol in [format!("hcp-{id}.qcow2"), format!("hcp-{id}-seed.iso")] {
                let _ = virsh(&["vol-delete", "--pool", POOL, &vol]);
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.sweep();
    }
}

/// The example hosts file with a short graceful stop: the OS-less guests ignore ACPI.
fn hosts_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/libvirt.yaml");
    let yaml = std::fs::read_to_string(&path).expect("examples/config/libvirt.yaml");
    assert!(
        yaml.contains("graceful_stop_timeout: 10s"),
        "examples/config/libvirt.yaml changed; update this test"
    );
    yaml.replace("graceful_stop_timeout: 10s", "graceful_stop_timeout: 1s")
}

/// Starts `hcp serve --config <libvirt hosts file>` and waits until it is ready.
async fn serve() -> Server {
    let hosts = hosts_file();
    tokio::task::spawn_blocking(move || {
        ServeBuilder::new()
            .hosts(&hosts)
            .env("HCP_CONSOLE_TTL", &format!("{}s", CONSOLE_TTL.as_secs()))
            .start()
    })
    .await
    .expect("hcp serve starts")
}

/// A client of one `hcp serve`.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn of(server: &Server) -> Api {
        Api {
            base: server.url.clone(),
            http: reqwest::Client::builder().timeout(LIMIT).build().unwrap(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("hcp serve answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Sends a change, waits for its job and asserts that it succeeded.
    async fn run(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, accepted) = self.call(method.clone(), path, body).await;
        assert_eq!(status, 202, "{method} {path}: {accepted}");
        let job_id = accepted["job_id"].as_str().unwrap();
        let job = self.wait(job_id).await;
        assert_eq!(job["state"], "SUCCEEDED", "{method} {path}: {job}");
        accepted
    }

    async fn wait(&self, job_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let job = self.get(&format!("{T}/jobs/{job_id}")).await;
            if matches!(
                job["state"].as_str(),
                Some("SUCCEEDED" | "FAILED" | "CANCELLED")
            ) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} did not end: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a VM and returns its id once its job succeeded.
    async fn create(&self, guard: &Cleanup, project: &str, name: &str) -> String {
        let (status, accepted) = self
            .call(
                reqwest::Method::POST,
                &format!("{T}/projects/{project}/vms"),
                Some(json!({"name": name, "image": "base-tiny", "flavor": "tiny",
                            "networks": [{"network": "default"}], "tags": {"suite": "e2e"}})),
            )
            .await;
        assert_eq!(status, 202, "create {name}: {accepted}");
        let vm_id = accepted["vm_id"].as_str().unwrap().to_string();
        guard.track(&vm_id);
        let job = self.wait(accepted["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "SUCCEEDED", "create {name}: {job}");
        vm_id
    }

    async fn delete(&self, project: &str, vm_id: &str) {
        self.run(
            reqwest::Method::DELETE,
            &format!("{T}/projects/{project}/vms/{vm_id}?force=true"),
            None,
        )
        .await;
    }

    /// Lists the names and ids of a project's VMs.
    async fn tenant_vms(&self, project: &str) -> Vec<(String, String)> {
        let page = self
            .get(&format!("{T}/projects/{project}/vms?limit=1000"))
            .await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["spec"]["name"].as_str().unwrap_or_default().to_string(),
                    v["id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the console WebSocket as noVNC does (the `binary` subprotocol); a refusal returns the
/// HTTP status and problem body.
async fn open(url: &str) -> Result<Ws, (u16, Value)> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
    match tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("the handshake ends")
    {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap()),
                Some("binary")
            );
            Ok(ws)
        }
        Err(WsError::Http(resp)) => Err((
            resp.status().as_u16(),
            resp.body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null),
        )),
        Err(e) => panic!("the WebSocket handshake failed: {e}"),
    }
}

async fn refused(url: &str) -> (u16, Value) {
    match open(url).await {
        Ok(_) => panic!("{url} opened; it should have been refused"),
        Err(r) => r,
    }
}

/// The RFB byte stream carried in binary WebSocket frames.
struct Rfb {
    ws: Ws,
    buf: Vec<u8>,
}

impl Rfb {
    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            match tokio::time::timeout(LIMIT, self.ws.next())
                .await
                .expect("the VNC server answers")
            {
                Some(Ok(Message::Binary(b))) => self.buf.extend_from_slice(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected RFB bytes in a binary frame, got {other:?}"),
            }
        }
        self.buf.drain(..n).collect()
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).await.unwrap();
    }

    /// Runs the RFB 3.8 handshake (version, security type None, ClientInit) and returns the
    /// server's version line and desktop name.
    async fn handshake(&mut self) -> (String, String) {
        let version = String::from_utf8(self.read(12).await).unwrap();
        self.write(b"RFB 003.008\n").await;
        let count = self.read(1).await[0];
        assert!(count > 0, "the VNC server refused the connection");
        let types = self.read(count as usize).await;
        assert!(
            types.contains(&1),
            "the domain's VNC offers no security type None: {types:?}"
        );
        self.write(&[1]).await;
        assert_eq!(self.read(4).await, [0, 0, 0, 0], "SecurityResult OK");
        self.write(&[1]).await; // ClientInit, shared
        let init = self.read(24).await;
        let width = u16::from_be_bytes([init[0], init[1]]);
        assert!(width > 0, "a framebuffer");
        let len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]) as usize;
        let name = String::from_utf8_lossy(&self.read(len).await).into_owned();
        (version, name)
    }
}

/// Reads the `console_session` audit events of a VM.
async fn sessions(api: &Api, vm_id: &str) -> Vec<Value> {
    let page = api
        .get(&format!("{OPS}/events?vm_id={vm_id}&limit=1000"))
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "console_session")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_console_and_delete_through_hcp_serve() {
    require_qemu();
    let guard = Cleanup::new("life");
    let server = serve().await;
    let api = Api::of(&server);
    let name = guard.name("web");

    // Create → running, HCP's id and project in the domain's metadata.
    let vm = api.create(&guard, "demo", &name).await;
    assert_eq!(domstate(&name), "running");
    let (ok, xml) = virsh(&["dumpxml", &name]);
    assert!(ok, "{xml}");
    assert!(xml.contains("https://hcp.dev/xmlns/vm/1"), "{xml}");
    assert!(xml.contains(&format!(">{vm}<")), "HCP's id: {xml}");
    assert!(xml.contains(">demo<"), "the project: {xml}");
    assert!(
        volumes().contains(&format!("hcp-{vm}.qcow2")),
        "{}",
        volumes()
    );
    let shown = api.get(&format!("{T}/projects/demo/vms/{vm}")).await;
    assert_eq!(shown["state"], "ACTIVE", "{shown}");
    assert_eq!(shown["power"], "RUNNING", "{shown}");

    // Stop, start, reboot reach the right state.
    let path = |verb: &str| format!("{T}/projects/demo/vms/{vm}:{verb}");
    api.run(reqwest::Method::POST, &path("stop"), None).await;
    assert_eq!(domstate(&name), "shut off");
    assert_eq!(
        api.get(&format!("{T}/projects/demo/vms/{vm}")).await["power"],
        "STOPPED"
    );
    api.run(reqwest::Method::POST, &path("start"), None).await;
    assert_eq!(domstate(&name), "running");
    for hard in ["false", "true"] {
        api.run(
            reqwest::Method::POST,
            &format!("{}?hard={hard}", path("reboot")),
            None,
        )
        .await;
        assert_eq!(domstate(&name), "running", "after a reboot (hard: {hard})");
    }

    // Console: HCP's own WebSocket; the RFB handshake with the domain's VNC server completes
    // through the proxy.
    let (status, console) = api
        .call(reqwest::Method::POST, &path("console"), None)
        .await;
    assert_eq!(status, 200, "{console}");
    assert_eq!(console["type"], "vnc");
    let url = console["url"].as_str().unwrap().to_string();
    let ws_base = server.url.replace("http://", "ws://");
    assert!(
        url.starts_with(&format!("{ws_base}/api/hcp/tenant/v1/console/ws?token=")),
        "{url}"
    );
    let (_, display) = virsh(&["vncdisplay", &name]);
    let vnc_port = 5900
        + display
            .trim()
            .rsplit(':')
            .next()
            .and_then(|d| d.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("virsh vncdisplay: {display}"));
    assert!(
        !console.to_string().contains(&format!(":{vnc_port}")),
        "the VNC socket stays hidden: {console}"
    );
    let mut rfb = Rfb {
        ws: open(&url).await.expect("the console opens"),
        buf: Vec::new(),
    };
    let (version, desktop) = rfb.handshake().await;
    assert_eq!(version, "RFB 003.008\n");
    assert!(
        desktop.contains(&name),
        "the desktop is the domain's ({desktop:?})"
    );
    // Reused: refused.
    let (status, problem) = refused(&url).await;
    assert_eq!(status, 410, "{problem}");
    assert_eq!(problem["code"], "CONSOLE_TOKEN_USED");
    rfb.ws.close(None).await.unwrap();
    drop(rfb);
    // Expired: refused.
    let (_, late) = api
        .call(reqwest::Method::POST, &path("console"), None)
        .await;
    tokio::time::sleep(CONSOLE_TTL + Duration::from_millis(500)).await;
    let (status, problem) = refused(late["url"].as_str().unwrap()).await;
    assert_eq!(status, 410, "{problem}");
    assert_eq!(problem["code"], "CONSOLE_TOKEN_EXPIRED");
    // The session's start and end are audit events naming the caller.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let events = loop {
        let e = sessions(&api, &vm).await;
        if e.len() >= 2 {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "{e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(events.len(), 2, "one session: {events:?}");
    assert_eq!(events[0]["opened"], true);
    assert_eq!(events[1]["opened"], false);
    assert!(events[1]["bytes"].as_u64().unwrap() > 24, "{events:?}");
    assert!(events.iter().all(|e| e["principal"] == "anonymous"));

    // A native VNC client through `hcp vm console --listen` (remote: HCP's proxy) completes the
    // RFB handshake with the domain's VNC server.
    let hcp = common::Hcp::new().with_url(&server.url);
    let (vm2, name2) = (vm.clone(), name.clone());
    tokio::task::spawn_blocking(move || {
        let bridge = common::Bridge::start(&hcp, &["vm", "console", &vm2, "--project", "demo"]);
        let mut vnc = std::net::TcpStream::connect(&bridge.addr).unwrap();
        let desktop = common::rfb_client(&mut vnc);
        assert!(
            desktop.contains(&name2),
            "the desktop is the domain's ({desktop:?})"
        );
        drop(vnc);
        bridge.finish();
    })
    .await
    .unwrap();

    // Delete → the domain and its disk are gone; the base image stays.
    api.delete("demo", &vm).await;
    assert!(domstate(&name).starts_with("absent"), "{}", domstate(&name));
    let vols = volumes();
    assert!(!vols.contains(&vm), "the VM's volumes are deleted: {vols}");
    assert!(vols.contains("base-tiny.qcow2"), "{vols}");
    let (status, _) = api
        .call(
            reqwest::Method::GET,
            &format!("{T}/projects/demo/vms/{vm}"),
            None,
        )
        .await;
    assert_eq!(status, 404);

    let (status, logs) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "hcp serve exited with {status}");
    assert!(
        !logs.contains(url.split_once("token=").unwrap().1),
        "a console token was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_finds_its_vms_and_ignores_unmanaged_domains() {
    require_qemu();
    let guard = Cleanup::new("rs");
    let first = serve().await;
    let api = Api::of(&first);
    let mut made = Vec::new();
    for (project, what) in [("demo", "a"), ("demo", "b"), ("staging", "c")] {
        let name = guard.name(what);
        let id = api.create(&guard, project, &name).await;
        made.push((project, name, id));
    }
    // A domain made outside HCP.
    let legacy = guard.name("legacy");
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("legacy.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>{legacy}</name><memory unit='MiB'>64</memory>\
             <vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        ),
    )
    .unwrap();
    let (ok, text) = virsh(&["define", xml.to_str().unwrap()]);
    assert!(ok, "{text}");

    // Stop HCP; a new one starts with an empty in-memory store.
    let (status, _) = tokio::task::spawn_blocking(move || first.terminate())
        .await
        .unwrap();
    assert!(status.success(), "hcp serve exited with {status}");
    let second = serve().await;
    let api = Api::of(&second);
    for (project, name, id) in &made {
        assert_eq!(domstate(name), "running", "HCP's restart left {name} alone");
        let vm = api.get(&format!("{T}/projects/{project}/vms/{id}")).await;
        assert_eq!(vm["id"], id.as_str());
        assert_eq!(vm["project"], *project, "{vm}");
        assert_eq!(vm["spec"]["name"], name.as_str());
        assert_eq!(vm["spec"]["image"], "base-tiny");
        assert_eq!(vm["state"], "ACTIVE", "{vm}");
    }
    let ours = |vms: Vec<(String, String)>| -> Vec<String> {
        vms.into_iter()
            .filter(|(n, _)| n.starts_with(&guard.prefix))
            .map(|(_, id)| id)
            .collect()
    };
    let mut demo_ids = ours(api.tenant_vms("demo").await);
    demo_ids.sort();
    let mut expected = vec![made[0].2.clone(), made[1].2.clone()];
    expected.sort();
    assert_eq!(demo_ids, expected);
    assert_eq!(
        ours(api.tenant_vms("staging").await),
        vec![made[2].2.clone()]
    );
    let (status, _) = api
        .call(
            reqwest::Method::GET,
            &format!("{T}/projects/demo/vms/{}", made[2].2),
            None,
        )
        .await;
    assert_eq!(status, 404, "staging's VM is not demo's");

    // The virsh-defined domain: ops see it unmanaged; no tenant and no managed list has it.
    let inventory = api.get(&format!("{OPS}/inventory")).await;
    let seen = inventory
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == legacy.as_str())
        .unwrap_or_else(|| panic!("ops see {legacy} in the inventory: {inventory}"));
    assert_eq!(seen["vm_id"], Value::Null, "{seen}");
    assert_eq!(seen["project"], Value::Null, "{seen}");
    assert_eq!(seen["power"], "STOPPED", "{seen}");
    let managed = api.get(&format!("{OPS}/vms?limit=1000")).await;
    assert!(
        !managed.to_string().contains(&legacy),
        "HCP does not adopt it: {managed}"
    );
    for project in ["demo", "staging"] {
        assert!(
            !api.tenant_vms(project)
                .await
                .iter()
                .any(|(n, _)| *n == legacy),
            "{project} does not list it"
        );
    }

    // The restarted service deletes what the first one made.
    for (project, name, id) in &made {
        api.delete(project, id).await;
        assert!(domstate(name).starts_with("absent"), "{}", domstate(name));
        assert!(!volumes().contains(id.as_str()));
    }
    assert_eq!(
        domstate(&legacy),
        "shut off",
        "the unmanaged domain is left alone"
    );
    drop(second);
}
