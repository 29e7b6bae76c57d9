//! The provider against fakepve: TLS trust, token auth, error classification, task following
//! (log lines, failures, timeouts) and faults injected through fakepve.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{IMAGE, Lines, NODE, Peer};
use hcp_core::{
    CreateVm, ErrorKind, HcpMark, HostInventory, JobId, OpContext, ProjectId, Provider, Resources,
    StartVm, VmId, VmTarget,
};
use serde_json::json;

fn small() -> Resources {
    Resources {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 1,
    }
}

fn args(name: &str) -> CreateVm {
    let mark = HcpMark::new(VmId::generate(), ProjectId::new("demo"));
    CreateVm::new(mark, NODE, name, IMAGE, small())
}

fn target(a: &CreateVm, native_id: Option<String>) -> VmTarget {
    VmTarget {
        vm_id: a.vm_id.clone(),
        name: a.name.clone(),
        host: a.host.clone(),
        native_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trusts_the_ca_file_or_the_pinned_fingerprint_only() {
    let peer = Peer::start(0.0);
    let inv = HostInventory::new(NODE);
    let p = peer.provider();
    p.host_inventory(inv.clone()).await.unwrap();
    let pinned = peer.provider_with(peer.settings_with(json!({
        "ca_file": null,
        "fingerprint": peer.info["fingerprint"],
    })));
    pinned.host_inventory(inv.clone()).await.unwrap();
    let wrong = peer.provider_with(peer.settings_with(json!({
        "ca_file": null,
        "fingerprint": "00".repeat(32),
    })));
    let e = wrong.host_inventory(inv.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    let system = peer.provider_with(peer.settings_with(json!({"ca_file": null})));
    let e = system.host_inventory(inv).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_permanent_error_that_never_shows_the_secret() {
    let peer = Peer::start(0.0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "11111111-2222-3333-4444-555555555555\n").unwrap();
    let p = peer.provider_with(peer.settings_with(json!({"token_secret_file": file})));
    let e = p
        .host_inventory(HostInventory::new(NODE))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    assert!(!e.is_temporary(), "{e}");
    let shown = format!("{e} {e:?} {p:?}");
    assert!(!shown.contains("11111111-2222"), "{shown}");
    let real = std::fs::read_to_string(peer.info["token_secret_file"].as_str().unwrap()).unwrap();
    assert!(!format!("{:?}", peer.provider()).contains(real.trim()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_a_temporary_error() {
    let peer = Peer::start(0.0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = peer.provider_with(peer.settings_with(json!({
        "url": format!("https://127.0.0.1:{port}"),
        "request_timeout": "2s",
    })));
    let e = p
        .host_inventory(HostInventory::new(NODE))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    assert!(e.is_temporary());
    assert!(!e.message().contains("127.0.0.1"), "{}", e.message());
    // Configured hosts are still listed.
    assert_eq!(p.list_hosts().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_log_lines_reach_the_job_log_and_node_names_do_not() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    let lines = Arc::new(Lines::default());
    let ctx = OpContext::new(JobId::generate(), lines.clone());
    let created = p.create_vm(&ctx, args("logs-1")).await.unwrap();
    // Operators read PVE's task output whole...
    let log = lines.operator();
    assert!(
        log.iter()
            .any(|l| l.contains("creating a clone of VM 9000")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("TASK OK")), "{log:?}");
    // ...tenants read that it progresses, without node names, VMIDs or storages.
    let tenant = lines.tenant();
    assert!(
        tenant.iter().any(|l| l.contains("cloning image")),
        "{tenant:?}"
    );
    for l in &tenant {
        assert!(!l.contains(NODE), "{l}");
        assert!(!l.contains("9000"), "{l}");
        assert!(!l.contains(&created.native_id), "{l}");
        assert!(!l.contains("local"), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_fails_with_pves_message() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    let a = args("fails-1").with_start(false);
    let created = p
        .create_vm(&OpContext::detached(), a.clone())
        .await
        .unwrap();
    let vmid: u64 = created.native_id.parse().unwrap();
    peer.command(json!({"op": "vm_attr", "vmid": vmid, "attr": "start_error",
        "value": "start failed: QEMU exited with code 1"}));
    let e = p
        .start_vm(
            &OpContext::detached(),
            StartVm::new(target(&a, Some(created.native_id))),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderError, "{e}");
    assert!(e.message().contains("QEMU exited with code 1"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_past_its_timeout_is_stopped_on_the_node() {
    let peer = Peer::start(0.05);
    let p = peer.provider_with(peer.settings_with(json!({"task_timeout": "1s"})));
    let a = args("slow-1").with_start(false);
    let created = p
        .create_vm(&OpContext::detached(), a.clone())
        .await
        .unwrap();
    let vmid: u64 = created.native_id.parse().unwrap();
    // 200 PVE seconds at 0.05: 10 s of real time, far past the 1 s timeout.
    peer.command(json!({"op": "vm_attr", "vmid": vmid, "attr": "start_secs", "value": 200}));
    let started = std::time::Instant::now();
    let e = p
        .start_vm(
            &OpContext::detached(),
            StartVm::new(target(&a, Some(created.native_id))),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let requests = peer.command(json!({"op": "requests"}));
    let stopped = requests["requests"].as_array().unwrap().iter().any(|r| {
        r[0] == "DELETE"
            && r[1]
                .as_str()
                .unwrap()
                .starts_with(&format!("/api2/json/nodes/{NODE}/tasks/UPID:{NODE}:"))
    });
    assert!(
        stopped,
        "the task is stopped with DELETE /nodes/{{node}}/tasks/{{upid}}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_invalid_spec_naming_the_parameter() {
    let peer = Peer::start(0.0);
    let p = peer.provider();
    let mut a = args("bad-1");
    a.resources.memory_mib = 1;
    let e = p
        .create_vm(&OpContext::detached(), a.clone())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("memory"), "{e}");
    // The half-made clone is gone, so a retry cannot return it.
    let inv = p.host_inventory(HostInventory::new(NODE)).await.unwrap();
    assert!(
        !inv.vms
            .iter()
            .any(|v| v.mark.as_ref().is_some_and(|m| m.vm_id == a.vm_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_parallel_clones_through_lock_timeouts_get_distinct_vmids_within_the_cap() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    peer.command(
        json!({"op": "fail", "method": "POST", "suffix": "/nodes/pve1/qemu/9000/clone",
        "status": 500,
        "message": "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout",
        "times": 6}),
    );
    let creates = (0..10).map(|i| {
        let p = p.clone();
        async move {
            p.create_vm(&OpContext::detached(), args(&format!("par-{i}")))
                .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let mut ids = HashSet::new();
    for r in results {
        ids.insert(r.unwrap().native_id);
    }
    assert_eq!(ids.len(), 10, "ten distinct VMIDs");
    let peak = p.peak_parallel(NODE).unwrap();
    assert!((1..=2).contains(&peak), "peak {peak}");
    let requests = peer.command(json!({"op": "requests"}));
    let clones = requests["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[1] == "/api2/json/nodes/pve1/qemu/9000/clone")
        .count();
    assert!(
        clones >= 16,
        "lock timeouts were retried ({clones} clone requests)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_vmid_moves_on_to_another_and_leaves_the_other_vm_alone() {
    let peer = Peer::start(0.0);
    let p = peer.provider();
    // Someone else's VM, unmarked.
    peer.command(
        json!({"op": "add_vm", "vmid": 100, "name": "theirs", "node": NODE,
        "config": {"memory": 2048, "cores": 3}}),
    );
    peer.command(
        json!({"op": "fail", "method": "POST", "suffix": "/nodes/pve1/qemu/9000/clone",
        "status": 500, "message": "unable to create VM 101: config file already exists",
        "times": 2}),
    );
    let lines = Arc::new(Lines::default());
    let ctx = OpContext::new(JobId::generate(), lines.clone());
    let created = p.create_vm(&ctx, args("taken-1")).await.unwrap();
    assert_ne!(created.native_id, "100");
    let log = lines.tenant();
    assert_eq!(
        log.iter().filter(|l| l.contains("is taken")).count(),
        2,
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("101")), "{log:?}");
    let theirs = peer.proxmoxer(json!({"op": "vm", "node": NODE, "vmid": 100}));
    assert_eq!(theirs["config"]["name"], "theirs");
    assert_eq!(
        theirs["config"]["memory"].to_string().trim_matches('"'),
        "2048"
    );
    assert!(theirs["config"].get("description").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_ignores_shutdown_is_powered_off_after_the_graceful_timeout() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    let a = args("acpi-1");
    let created = p
        .create_vm(&OpContext::detached(), a.clone())
        .await
        .unwrap();
    let vmid: u64 = created.native_id.parse().unwrap();
    peer.command(json!({"op": "vm_attr", "vmid": vmid, "attr": "acpi", "value": false}));
    let t = target(&a, Some(created.native_id.clone()));
    let stop = hcp_core::StopVm::new(t.clone()).with_graceful_timeout(Duration::from_secs(30));
    let stopped = p.stop_vm(&OpContext::detached(), stop).await.unwrap();
    assert!(stopped.forced && !stopped.was_stopped, "{stopped:?}");
    let seen = peer.proxmoxer(json!({"op": "vm", "node": NODE, "vmid": vmid}));
    assert_eq!(seen["status"]["status"], "stopped");
    // A guest that honours ACPI stops gracefully.
    p.start_vm(&OpContext::detached(), StartVm::new(t.clone()))
        .await
        .unwrap();
    peer.command(json!({"op": "vm_attr", "vmid": vmid, "attr": "acpi", "value": true}));
    let stop = hcp_core::StopVm::new(t).with_graceful_timeout(Duration::from_secs(30));
    let stopped = p.stop_vm(&OpContext::detached(), stop).await.unwrap();
    assert!(!stopped.forced, "{stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_following_a_task_stops_the_task() {
    let peer = Peer::start(0.05);
    let p = peer.provider();
    let a = args("dropped-1").with_start(false);
    let created = p
        .create_vm(&OpContext::detached(), a.clone())
        .await
        .unwrap();
    let vmid: u64 = created.native_id.parse().unwrap();
    peer.command(json!({"op": "vm_attr", "vmid": vmid, "attr": "start_secs", "value": 200}));
    let detached = OpContext::detached();
    let start = p.start_vm(&detached, StartVm::new(target(&a, Some(created.native_id))));
    let r = tokio::time::timeout(Duration::from_millis(800), start).await;
    assert!(r.is_err(), "the start is still following its task");
    let mut stopped = false;
    for _ in 0..50 {
        let requests = peer.command(json!({"op": "requests"}));
        stopped = requests["requests"].as_array().unwrap().iter().any(|r| {
            r[0] == "DELETE"
                && r[1]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("/api2/json/nodes/{NODE}/tasks/UPID:{NODE}:"))
        });
        if stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stopped, "the abandoned task is stopped on the node");
}
