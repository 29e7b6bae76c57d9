//! Ticket (password) logins against fakepve: `POST /access/ticket`, the `PVEAuthCookie` cookie and
//! the `CSRFPreventionToken` header on writes, renewal as tickets age and after a 401, a wrong
//! password, and the console upstream's cookie.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{IMAGE, Lines, NODE, Peer};
use hcp_core::{
    ConsoleTransport, CreateVm, DeleteVm, ErrorKind, GetConsole, HcpMark, HostInventory, JobId,
    OpContext, ProjectId, Provider, Resources, StopVm, VmId, VmTarget,
};
use hcp_provider_proxmox::ProxmoxProvider;
use serde_json::{Value, json};

fn args(name: &str) -> CreateVm {
    let mark = HcpMark::new(VmId::generate(), ProjectId::new("demo"));
    let small = Resources {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 1,
    };
    CreateVm::new(mark, NODE, name, IMAGE, small)
}

fn target(a: &CreateVm, native_id: &str) -> VmTarget {
    VmTarget {
        vm_id: a.vm_id.clone(),
        name: a.name.clone(),
        host: a.host.clone(),
        native_id: Some(native_id.to_string()),
    }
}

/// A provider logging in with fakepve's root password instead of the API token.
fn password_provider(peer: &Peer, extra: Value) -> Arc<ProxmoxProvider> {
    let mut keys = json!({
        "token_id": null,
        "token_secret_file": null,
        "username": peer.info["username"],
        "password_file": peer.info["password_file"],
    });
    for (k, v) in extra.as_object().unwrap() {
        keys[k] = v.clone();
    }
    peer.provider_with(peer.settings_with(keys))
}

fn ctx() -> (OpContext, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    (OpContext::new(JobId::generate(), lines.clone()), lines)
}

/// Opens a console upstream with aiohttp (an independent WebSocket client) and returns its first
/// frame, or the HTTP status that refused the upgrade.
fn open_websocket(peer: &Peer, url: &str, headers: &[(String, String)]) -> Value {
    const SCRIPT: &str = r#"
import asyncio, json, ssl, sys
import aiohttp
a = json.loads(sys.argv[1])
async def main():
    tls = ssl.create_default_context(cafile=a['ca_file'])
    async with aiohttp.ClientSession() as s:
        try:
            async with s.ws_connect(a['url'], headers=a['headers'], protocols=('binary',), ssl=tls) as ws:
                msg = await ws.receive(timeout=10)
                data = msg.data.decode() if isinstance(msg.data, bytes) else str(msg.data)
                print(json.dumps({'first': data}))
        except aiohttp.WSServerHandshakeError as e:
            print(json.dumps({'status': e.status}))
asyncio.run(main())
"#;
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let out = Command::new(common::python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(json!({"url": url, "headers": headers, "ca_file": peer.info["ca_file"]}).to_string())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "the WebSocket check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the WebSocket check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_login_creates_stops_and_deletes_a_vm_with_one_ticket() {
    let peer = Peer::start(0.0);
    let p = password_provider(&peer, json!({}));
    let (ctx, _lines) = ctx();
    let a = args("ticket-1");
    // Every write (clone, config, start, stop, delete) needs the CSRF token besides the cookie.
    let created = p.create_vm(&ctx, a.clone()).await.unwrap();
    let inv = p.host_inventory(HostInventory::new(NODE)).await.unwrap();
    assert!(inv.vms.iter().any(|v| v.native_id == created.native_id));
    let t = target(&a, &created.native_id);
    p.stop_vm(&ctx, StopVm::new(t.clone()).with_force(true))
        .await
        .unwrap();
    assert!(p.delete_vm(&ctx, DeleteVm::new(t)).await.unwrap().existed);
    assert_eq!(p.password_logins(), 1, "one ticket serves every request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_renewed_as_they_age_without_failing_a_running_job() {
    // Tickets live 2 s on this PVE; HCP renews them after 1 s. Every answer takes 150 ms, so a
    // create (some 20 requests) spans several renewals.
    let peer = Peer::start(0.05);
    peer.command(json!({"op": "set", "attr": "ticket_ttl", "value": 2}));
    let p = password_provider(&peer, json!({"ticket_renew": "1s"}));
    p.host_inventory(HostInventory::new(NODE)).await.unwrap();
    assert_eq!(p.password_logins(), 1);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // The ticket is older than `ticket_renew` and still valid on the PVE side: HCP renews it
    // before PVE would refuse it (a 401 would renew it too, but only once it has expired).
    p.host_inventory(HostInventory::new(NODE)).await.unwrap();
    assert_eq!(p.password_logins(), 2, "renewed before it expired");
    peer.command(json!({"op": "latency", "secs": 3}));
    let (ctx, _lines) = ctx();
    let started = std::time::Instant::now();
    let created = p.create_vm(&ctx, args("ticket-2")).await.unwrap();
    let took = started.elapsed();
    assert!(!created.native_id.is_empty());
    assert!(
        took > Duration::from_secs(2),
        "the create must outlive a ticket to test renewal; it took {took:?}"
    );
    assert!(
        p.password_logins() >= 3,
        "renewed during the job: {} logins",
        p.password_logins()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_pve_refuses_is_renewed_once_and_the_call_goes_on() {
    let peer = Peer::start(0.0);
    let p = password_provider(&peer, json!({}));
    p.host_inventory(HostInventory::new(NODE)).await.unwrap();
    assert_eq!(p.password_logins(), 1);
    // PVE forgets every ticket (a restart of pveproxy's key, a revoked session).
    peer.command(json!({"op": "revoke_tickets"}));
    let (ctx, _lines) = ctx();
    p.create_vm(&ctx, args("ticket-3")).await.unwrap();
    assert_eq!(p.password_logins(), 2, "one new login after the 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_permanent_error_naming_no_secret() {
    let peer = Peer::start(0.0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "not the password 7f3a\n").unwrap();
    let p = password_provider(&peer, json!({"password_file": file}));
    let e = p
        .host_inventory(HostInventory::new(NODE))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    assert!(!e.is_temporary(), "{e}");
    assert!(e.message().contains("password_file"), "{e}");
    assert!(
        !e.message().contains("root@pam"),
        "the user stays for operators: {e}"
    );
    assert!(
        format!("{e:?}").contains("root@pam"),
        "operators see the user: {e:?}"
    );
    let real = std::fs::read_to_string(peer.info["password_file"].as_str().unwrap()).unwrap();
    let good = password_provider(&peer, json!({}));
    good.host_inventory(HostInventory::new(NODE)).await.unwrap();
    let shown = format!("{e} {e:?} {p:?} {good:?} {:?}", good.settings());
    for secret in [
        "not the password",
        real.trim(),
        "PVEAuthCookie",
        "PVE:root@pam:",
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_upstream_carries_the_ticket_cookie() {
    let peer = Peer::start(0.0);
    let p = password_provider(&peer, json!({}));
    let (ctx, _lines) = ctx();
    let a = args("ticket-console");
    let created = p.create_vm(&ctx, a.clone()).await.unwrap();
    let t = target(&a, &created.native_id);
    let upstream = |c: hcp_core::Console| match c.upstream.expect("an upstream").transport {
        ConsoleTransport::WebSocket { url, headers, .. } => (url, headers),
        other => panic!("a WebSocket upstream expected: {other:?}"),
    };
    let (url, headers) = upstream(p.console(GetConsole::new(t.clone())).await.unwrap());
    assert_eq!(headers.len(), 1, "one credential header");
    assert_eq!(headers[0].0.to_ascii_lowercase(), "cookie");
    assert!(headers[0].1.starts_with("PVEAuthCookie=PVE:root@pam:"));
    let opened = open_websocket(&peer, &url, &headers);
    assert_eq!(opened["first"], "RFB 003.008\n", "{opened}");
    // Without the cookie PVE refuses the upgrade: the header is what lets HCP in.
    let (url, _) = upstream(p.console(GetConsole::new(t)).await.unwrap());
    let refused = open_websocket(&peer, &url, &[]);
    assert_eq!(refused["status"], 401, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_with_a_password_login() {
    // Every operation the suite runs (writes with the CSRF token, task following, consoles,
    // snapshots) works with a ticket as it does with the API token.
    let peer = Peer::start(0.01);
    let p = password_provider(&peer, json!({}));
    let f =
        hcp_core::testkit::Fixture::new(NODE, IMAGE).with_graceful_timeout(Duration::from_secs(5));
    hcp_core::testkit::run_all(common::dyn_provider(&p), &f)
        .await
        .unwrap_or_else(|e| panic!("conformance with a password login: {e}"));
    assert_eq!(p.password_logins(), 1);
}
