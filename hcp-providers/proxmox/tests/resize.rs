//! Resize through HCP's engine on fakepve: the planner's classification for kind `proxmox`
//! (vCPUs and memory of a running VM wait for a restart, the disk grows live), a change beyond
//! what the caller allowed refused before any job, and each applied change seen by proxmoxer.

mod common;

use std::time::Duration;

use common::{IMAGE, NODE, Peer, dyn_provider};
use hcp_core::store::{JobFilter, PageRequest};
use hcp_core::testkit::{Fixture, engine_for};
use hcp_core::{
    CODE_RESIZE_NOT_ALLOWED, ChangeImpact, Engine, ErrorKind, JobState, Principal, RequestContext,
    ResizeRequest, VmSpec,
};
use serde_json::{Value, json};

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

/// The VM's status and config as proxmoxer reads them.
fn pve(peer: &Peer, (node, vmid): (&str, &str)) -> Value {
    peer.proxmoxer(json!({"op": "vm", "node": node, "vmid": vmid}))
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("a number: {v}"))
}

async fn jobs(engine: &Engine, ctx: &RequestContext) -> usize {
    engine
        .list_jobs(&ctx.scope(), &JobFilter::default(), &PageRequest::all())
        .await
        .unwrap()
        .items
        .len()
}

fn change(vcpus: Option<u32>, memory_mib: Option<u64>, disk_gib: Option<u64>) -> ResizeRequest {
    ResizeRequest {
        flavor: None,
        vcpus,
        memory_mib,
        disk_gib,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_plans_refuses_beyond_allow_and_applies_what_proxmoxer_sees() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    assert!(hcp_core::Provider::capabilities(&*p).resize);
    let f = Fixture::new(NODE, IMAGE).with_graceful_timeout(Duration::from_secs(5));
    let engine = engine_for(dyn_provider(&p), &f).await.unwrap();
    let ctx = RequestContext::new(f.project.clone(), Principal::new("alice"));
    let s = engine
        .create_vm(&ctx, VmSpec::new("resize-1", IMAGE, "conformance"))
        .await
        .unwrap();
    run(&engine, &ctx, &s.job_id).await;
    let vm = s.vm_id.clone();
    let binding = engine.get_vm(&ctx.scope(), &vm).await.unwrap().binding;
    let native = binding.native_id.expect("a VMID once created");
    let at = (binding.host.as_ref(), native.as_str());
    let before = pve(&peer, at);
    assert_eq!(before["status"]["status"], "running", "{before}");
    let now = engine.get_vm(&ctx.scope(), &vm).await.unwrap().resources;
    let (vcpus, memory) = (now.vcpus + 1, now.memory_mib * 2);
    let disk = now.disk_gib + 2;

    // The plan for a running VM: vCPUs and memory need a restart, the disk grows live.
    let plan = engine
        .plan_resize(&ctx, &vm, &change(Some(vcpus), Some(memory), Some(disk)))
        .await
        .unwrap();
    let impacts: Vec<(&str, ChangeImpact)> =
        plan.iter().map(|p| (p.field.as_str(), p.impact)).collect();
    assert_eq!(
        impacts,
        [
            ("vcpus", ChangeImpact::Reboot),
            ("memory_mib", ChangeImpact::Reboot),
            ("disk_gib", ChangeImpact::Hot)
        ],
        "{plan:?}"
    );
    assert!(plan[0].reason.contains("Proxmox"), "{plan:?}");

    // Beyond what the caller allowed: refused before any job, naming the field; PVE untouched.
    let jobs_before = jobs(&engine, &ctx).await;
    let refused = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(None, Some(memory), None),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert_eq!(refused.code(), CODE_RESIZE_NOT_ALLOWED, "{refused}");
    assert_eq!(refused.field(), Some("memory_mib"), "{refused}");
    assert!(refused.to_string().contains("reboot"), "{refused}");
    assert_eq!(jobs(&engine, &ctx).await, jobs_before);
    let seen = pve(&peer, at);
    assert_eq!(seen["config"], before["config"], "nothing changed on PVE");

    // A shrink is data-destructive and never allowed.
    let shrink = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(None, None, Some(now.disk_gib - 1)),
            &[
                ChangeImpact::Hot,
                ChangeImpact::Reboot,
                ChangeImpact::PowerOff,
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(shrink.field(), Some("disk_gib"), "{shrink}");

    // The disk grows live: the VM keeps running and nothing else changes. fakepve 0.5.0 checks
    // `PUT /qemu/{vmid}/resize` against PVE's schema (a bad `disk` or `size` fails the job) but
    // stores nothing for QEMU guests, so proxmoxer cannot see the new size: the test checks
    // that HCP asked PVE for it.
    let resize_path = format!("/api2/json/nodes/{}/qemu/{}/resize", at.0, at.1);
    let resizes = |peer: &Peer| {
        peer.command(json!({"op": "requests"}))["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[0] == "PUT" && r[1] == resize_path.as_str())
            .count()
    };
    let resizes_before = resizes(&peer);
    let grown = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(None, None, Some(disk)),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap();
    run(&engine, &ctx, &grown.job_id).await;
    assert_eq!(
        resizes(&peer),
        resizes_before + 1,
        "HCP grows the disk with PUT {resize_path}"
    );
    let seen = pve(&peer, at);
    assert_eq!(seen["status"]["status"], "running", "{seen}");
    assert_eq!(seen["config"]["cores"], before["config"]["cores"], "{seen}");
    assert_eq!(
        seen["config"]["memory"], before["config"]["memory"],
        "{seen}"
    );

    // vCPUs and memory with a restart allowed: the job restarts the VM, PVE runs the new size.
    let resized = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(Some(vcpus), Some(memory), None),
            &[ChangeImpact::Hot, ChangeImpact::Reboot],
        )
        .await
        .unwrap();
    let job = run(&engine, &ctx, &resized.job_id).await;
    let seen = pve(&peer, at);
    assert_eq!(num(&seen["config"]["cores"]), u64::from(vcpus), "{seen}");
    assert_eq!(num(&seen["config"]["memory"]), memory, "{seen}");
    assert_eq!(seen["status"]["status"], "running", "{seen}");
    assert_eq!(job.operation, hcp_core::Operation::ResizeVm);
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!(
        (
            v.resources.vcpus,
            v.resources.memory_mib,
            v.resources.disk_gib
        ),
        (vcpus, memory, disk)
    );

    // A stopped VM takes a change at once, with no restart.
    let stop = engine.stop_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &stop.job_id).await;
    let plan = engine
        .plan_resize(&ctx, &vm, &change(Some(vcpus + 1), None, None))
        .await
        .unwrap();
    assert_eq!(plan[0].impact, ChangeImpact::Hot, "{plan:?}");
    let cold = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(Some(vcpus + 1), None, None),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap();
    run(&engine, &ctx, &cold.job_id).await;
    let seen = pve(&peer, at);
    assert_eq!(
        num(&seen["config"]["cores"]),
        u64::from(vcpus + 1),
        "{seen}"
    );
    assert_eq!(seen["status"]["status"], "stopped", "{seen}");

    let del = engine.delete_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &del.job_id).await;
    engine.shutdown().await;
}
