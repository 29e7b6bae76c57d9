//! Snapshots through HCP's engine on fakepve, the way users take them (`hcp vm snapshot ...`):
//! the engine lists a VM's snapshots before it accepts a create, a revert or a delete, so this is
//! the path that needs `list_snapshots`. Each step is checked with proxmoxer.

mod common;

use std::time::Duration;

use common::{IMAGE, NODE, Peer, dyn_provider};
use hcp_core::store::{JobFilter, PageRequest};
use hcp_core::testkit::{Fixture, engine_for};
use hcp_core::{Engine, ErrorKind, JobState, PowerState, Principal, RequestContext, VmSpec};
use serde_json::json;

async fn run(engine: &Engine, ctx: &RequestContext, job: &hcp_core::JobId) -> hcp_core::Job {
    let job = engine
        .wait_job(&ctx.scope(), job, Some(Duration::from_secs(60)))
        .await
        .expect("the job ends");
    assert_eq!(
        job.state,
        JobState::Succeeded,
        "{} failed: {:?}",
        job.operation,
        job.error
    );
    job
}

async fn jobs(engine: &Engine, ctx: &RequestContext) -> usize {
    engine
        .list_jobs(&ctx.scope(), &JobFilter::default(), &PageRequest::all())
        .await
        .unwrap()
        .items
        .len()
}

/// The snapshot names PVE reports (proxmoxer), sorted, without `current`.
fn pve_names(peer: &Peer, (node, vmid): (&str, &str)) -> Vec<String> {
    let seen = peer.proxmoxer(json!({"op": "snapshots", "node": node, "vmid": vmid}));
    let mut names: Vec<String> = seen["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("a snapshot list: {seen}"))
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| *n != "current")
        .map(String::from)
        .collect();
    names.sort();
    names
}

fn pve_status(peer: &Peer, (node, vmid): (&str, &str)) -> String {
    let seen = peer.proxmoxer(json!({"op": "vm", "node": node, "vmid": vmid}));
    seen["status"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_create_list_revert_delete_through_the_engine() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    let f = Fixture::new(NODE, IMAGE).with_graceful_timeout(Duration::from_secs(5));
    let engine = engine_for(dyn_provider(&p), &f).await.unwrap();
    let ctx = RequestContext::new(f.project.clone(), Principal::new("alice"));
    let s = engine
        .create_vm(&ctx, VmSpec::new("esnap-1", IMAGE, "conformance"))
        .await
        .unwrap();
    run(&engine, &ctx, &s.job_id).await;
    let vm = s.vm_id.clone();
    // Hosts are named like their PVE nodes here; the engine places the VM on either.
    let binding = engine.get_vm(&ctx.scope(), &vm).await.unwrap().binding;
    let native = binding.native_id.expect("a VMID once created");
    let vmid = (binding.host.as_ref(), native.as_str());
    assert_eq!(pve_status(&peer, vmid), "running");

    // A running VM's snapshot holds its memory.
    let warm = engine.create_snapshot(&ctx, &vm, "warm").await.unwrap();
    run(&engine, &ctx, &warm.submitted.job_id).await;
    assert_eq!(pve_names(&peer, vmid), ["warm"]);
    let listed = engine.list_snapshots(&ctx, &vm).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, warm.snapshot_id);
    assert!(listed[0].memory, "{listed:?}");
    assert!(listed[0].created_at.is_some());

    // The same name again is refused before a job: the engine read PVE's list.
    let dup = engine.create_snapshot(&ctx, &vm, "warm").await.unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::Conflict, "{dup}");
    assert_eq!(dup.field(), Some("name"));

    // DNS labels PVE's `pve-configid` refuses (one character, over 40 characters) are refused
    // before any job exists, naming `name` and saying what PVE takes.
    let before = jobs(&engine, &ctx).await;
    for bad in ["a", &"s".repeat(41)] {
        let e = engine.create_snapshot(&ctx, &vm, bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{bad}: {e}");
        assert_eq!(e.field(), Some("name"), "{e}");
        assert!(e.to_string().contains("2-40"), "{e}");
    }
    assert_eq!(
        jobs(&engine, &ctx).await,
        before,
        "no job for a refused name"
    );
    assert_eq!(pve_names(&peer, vmid), ["warm"]);

    // A stopped VM's snapshot holds its disks only.
    let stop = engine.stop_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &stop.job_id).await;
    let cold = engine.create_snapshot(&ctx, &vm, "cold").await.unwrap();
    run(&engine, &ctx, &cold.submitted.job_id).await;
    assert_eq!(pve_names(&peer, vmid), ["cold", "warm"]);
    let listed = engine.list_snapshots(&ctx, &vm).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["warm", "cold"], "oldest first");
    assert!(!listed[1].memory);
    let start = engine.start_vm(&ctx, &vm).await.unwrap();
    run(&engine, &ctx, &start.job_id).await;

    // Reverting the running VM to the disk-only snapshot leaves it stopped.
    let r = engine
        .revert_snapshot(&ctx, &vm, &cold.snapshot_id)
        .await
        .unwrap();
    assert_eq!(r.memory_state_kept, Some(false));
    run(&engine, &ctx, &r.submitted.job_id).await;
    assert_eq!(pve_status(&peer, vmid), "stopped");
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!(v.power, PowerState::Stopped);

    // Reverting to the memory snapshot runs it again.
    let r = engine
        .revert_snapshot(&ctx, &vm, &warm.snapshot_id)
        .await
        .unwrap();
    assert_eq!(r.memory_state_kept, Some(true));
    run(&engine, &ctx, &r.submitted.job_id).await;
    assert_eq!(pve_status(&peer, vmid), "running");
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!(v.power, PowerState::Running);

    let d = engine
        .delete_snapshot(&ctx, &vm, &warm.snapshot_id)
        .await
        .unwrap();
    run(&engine, &ctx, &d.submitted.job_id).await;
    assert_eq!(pve_names(&peer, vmid), ["cold"]);
    let gone = engine
        .delete_snapshot(&ctx, &vm, &warm.snapshot_id)
        .await
        .unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");

    let del = engine.delete_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &del.job_id).await;
    engine.shutdown().await;
}
