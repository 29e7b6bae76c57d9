//! Resize through HCP's engine on govmomi's vCenter simulator: the planner's classification for
//! kind `vsphere` (vCPUs and memory need the VM off, the disk grows live), a change beyond what
//! the caller allowed refused before any job, and each applied change seen by pyvmomi.

mod common;

use std::time::Duration;

use common::{HOST, IMAGE, OTHER, Peer, dyn_provider};
use hcp_core::store::{JobFilter, PageRequest};
use hcp_core::testkit::{Fixture, engine_for};
use hcp_core::{
    CODE_RESIZE_NOT_ALLOWED, ChangeImpact, Engine, ErrorKind, JobState, OpContext, Principal,
    Provider, RequestContext, ResizeRequest, ResizeVm, VmSpec, VmTarget,
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

fn show(peer: &Peer, name: &str) -> Value {
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": name}));
    assert_eq!(seen["found"], true, "{seen}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_plans_refuses_beyond_allow_and_applies_what_pyvmomi_sees() {
    let peer = Peer::start(1);
    let p = peer.provider();
    assert!(p.capabilities().resize);
    let f = Fixture::new(HOST, IMAGE).with_other_host(OTHER);
    let engine = engine_for(dyn_provider(&p), &f).await.unwrap();
    let ctx = RequestContext::new(f.project.clone(), Principal::new("alice"));
    let name = "resize-1";
    let s = engine
        .create_vm(&ctx, VmSpec::new(name, IMAGE, "conformance"))
        .await
        .unwrap();
    run(&engine, &ctx, &s.job_id).await;
    let vm = s.vm_id.clone();
    let before = show(&peer, name);
    assert_eq!(before["power"], "poweredOn", "{before}");
    let now = engine.get_vm(&ctx.scope(), &vm).await.unwrap().resources;
    let (vcpus, memory) = (now.vcpus + 1, now.memory_mib * 2);
    let disk = now.disk_gib.max(1) + 2;

    // The plan for a running VM: vCPUs and memory need it off, the disk grows live.
    let plan = engine
        .plan_resize(&ctx, &vm, &change(Some(vcpus), Some(memory), Some(disk)))
        .await
        .unwrap();
    let impacts: Vec<(&str, ChangeImpact)> =
        plan.iter().map(|p| (p.field.as_str(), p.impact)).collect();
    assert_eq!(
        impacts,
        [
            ("vcpus", ChangeImpact::PowerOff),
            ("memory_mib", ChangeImpact::PowerOff),
            ("disk_gib", ChangeImpact::Hot)
        ],
        "{plan:?}"
    );

    // Beyond what the caller allowed: refused before any job, naming the field; nothing changed.
    let jobs_before = jobs(&engine, &ctx).await;
    let refused = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(Some(vcpus), None, None),
            &[ChangeImpact::Hot, ChangeImpact::Reboot],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert_eq!(refused.code(), CODE_RESIZE_NOT_ALLOWED, "{refused}");
    assert_eq!(refused.field(), Some("vcpus"), "{refused}");
    assert_eq!(jobs(&engine, &ctx).await, jobs_before);
    assert_eq!(show(&peer, name), before, "nothing changed in vCenter");

    // The provider itself refuses a running VM's vCPU change (vCenter would, without hot-add).
    let record = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    let target = VmTarget {
        vm_id: vm.clone(),
        name: name.to_string(),
        host: record.binding.host.to_string(),
        native_id: record.binding.native_id.clone(),
    };
    let direct = p
        .resize_vm(
            &OpContext::detached(),
            ResizeVm::new(target).with_memory_mib(Some(memory)),
        )
        .await
        .unwrap_err();
    assert_eq!(direct.kind(), ErrorKind::Conflict, "{direct}");
    assert_eq!(direct.field(), Some("memory_mib"), "{direct}");

    // The disk grows live: the VM keeps running.
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
    let seen = show(&peer, name);
    assert_eq!(seen["disks_gib"][0], disk, "{seen}");
    assert_eq!(seen["power"], "poweredOn", "{seen}");

    // vCPUs and memory with power_off allowed: the job stops, reconfigures and starts the VM.
    let resized = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(Some(vcpus), Some(memory), None),
            &[ChangeImpact::Hot, ChangeImpact::PowerOff],
        )
        .await
        .unwrap();
    run(&engine, &ctx, &resized.job_id).await;
    let seen = show(&peer, name);
    assert_eq!(seen["cpus"], vcpus, "{seen}");
    assert_eq!(seen["memory_mb"], memory, "{seen}");
    assert_eq!(seen["power"], "poweredOn", "{seen}");
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!((v.resources.vcpus, v.resources.memory_mib), (vcpus, memory));

    // A shrink is data-destructive and never allowed.
    let shrink = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(None, None, Some(disk - 1)),
            &[
                ChangeImpact::Hot,
                ChangeImpact::Reboot,
                ChangeImpact::PowerOff,
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(shrink.field(), Some("disk_gib"), "{shrink}");

    let del = engine.delete_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &del.job_id).await;
    engine.shutdown().await;
}
