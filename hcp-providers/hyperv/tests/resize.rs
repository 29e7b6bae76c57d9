//! Resize on Hyper-V through the WinRM test host: vCPUs and memory change while the VM is off
//! and are refused with a Conflict naming the field while it runs; the first VHDX grows live on
//! the SCSI chain (generation 2) and only while off on the IDE chain (generation 1); a disk never
//! shrinks, nor grows under checkpoints; bad values never reach the host. Then through HCP's
//! engine: `:plan` says what each change takes on Hyper-V, `:resize` refuses beyond `allow`
//! before any job, and a `power_off` change stops, resizes and starts the VM.

mod common;

use std::time::Duration;

use hcp_core::store::{JobFilter, PageRequest};
use hcp_core::{
    CODE_RESIZE_NOT_ALLOWED, ChangeImpact, Config, CreateVm, DeleteVm, Engine, Error, ErrorKind,
    HcpMark, HostInventory, JobState, OpContext, PowerState, Principal, ProjectId, Provider,
    RequestContext, ResizeRequest, ResizeVm, Resources, SnapshotVm, VmId, VmSpec, VmTarget,
};
use hcp_provider_hyperv::{HypervProvider, HypervSettings};
use serde_json::{Value, json};

const MIB: u64 = 1024 * 1024;

/// Creates a VM on hv1 (1 vCPU, 512 MiB, 5 GiB) and returns its target.
async fn vm(p: &HypervProvider, name: &str, start: bool) -> VmTarget {
    let vm_id = VmId::generate();
    let mark = HcpMark::new(vm_id.clone(), ProjectId::new("demo"));
    let resources = Resources {
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 5,
    };
    let created = p
        .create_vm(
            &OpContext::detached(),
            CreateVm::new(mark, "hv1", name, "ubuntu-24.04", resources).with_start(start),
        )
        .await
        .unwrap();
    VmTarget {
        vm_id,
        name: name.into(),
        host: "hv1".into(),
        native_id: Some(created.native_id),
    }
}

async fn resize(
    p: &HypervProvider,
    t: &VmTarget,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    disk_gib: Option<u64>,
) -> Result<bool, Error> {
    p.resize_vm(
        &OpContext::detached(),
        ResizeVm::new(t.clone())
            .with_vcpus(vcpus)
            .with_memory_mib(memory_mib)
            .with_disk_gib(disk_gib),
    )
    .await
    .map(|r| r.restart_needed)
}

/// The VM as the test host's Hyper-V model holds it.
fn model(th: &common::TestHost, t: &VmTarget) -> Value {
    th.control("hv1", "state", None)["vms"][t.native_id.clone().unwrap().to_lowercase()].clone()
}

/// (vCPUs, memory MiB, disk GiB, power) as HCP's inventory reads them back.
async fn seen(p: &HypervProvider, t: &VmTarget) -> (u32, u64, u64, PowerState) {
    let inv = p.host_inventory(HostInventory::new("hv1")).await.unwrap();
    let v = inv
        .vms
        .iter()
        .find(|v| Some(&v.native_id) == t.native_id.as_ref())
        .expect("the VM is listed");
    (
        v.resources.vcpus,
        v.resources.memory_mib,
        v.resources.disk_gib,
        v.power,
    )
}

fn calls(th: &common::TestHost) -> usize {
    th.control("hv1", "records", None)["records"]
        .as_array()
        .unwrap()
        .len()
}

fn set_power(th: &common::TestHost, t: &VmTarget, state: &str) {
    th.control(
        "hv1",
        "power",
        Some(json!({ "vm_id": t.native_id.clone().unwrap(), "state": state })),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vcpus_and_memory_change_while_off_and_the_disk_grows_live_but_never_shrinks() {
    let th = common::TestHost::start(1, None);
    let p = common::provider(&th, common::settings());
    assert!(p.capabilities().resize, "Hyper-V declares resize");
    let t = vm(&p, "rs-gen2", false).await;

    // Off: everything applies at once.
    let restart = resize(&p, &t, Some(4), Some(2048), Some(8)).await.unwrap();
    assert!(!restart, "nothing waits for a restart on Hyper-V");
    assert_eq!(seen(&p, &t).await, (4, 2048, 8, PowerState::Stopped));
    let m = model(&th, &t);
    assert_eq!(m["processor_count"], 4, "{m}");
    assert_eq!(m["memory_startup"], 2048 * MIB, "{m}");
    // The same size again is no change.
    resize(&p, &t, Some(4), Some(2048), Some(8)).await.unwrap();
    assert_eq!(seen(&p, &t).await, (4, 2048, 8, PowerState::Stopped));

    // Running: vCPUs and memory are refused with a Conflict naming the field; nothing changes,
    // not even the disk asked for in the same call.
    set_power(&th, &t, "Running");
    for (vcpus, memory, field) in [
        (Some(2), None, "vcpus"),
        (None, Some(4096), "memory_mib"),
        (Some(8), Some(8192), "vcpus"),
    ] {
        let e = resize(&p, &t, vcpus, memory, Some(12)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
        assert_eq!(e.field(), Some(field), "{e}");
        assert!(e.message().contains("only while it is off"), "{e}");
        assert!(
            !e.message().contains("hv1") && !e.message().contains("rs-gen2"),
            "tenants read neither the host nor PowerShell's text: {e}"
        );
    }
    assert_eq!(seen(&p, &t).await, (4, 2048, 8, PowerState::Running));

    // Running, generation 2 (the boot VHDX is on the SCSI chain): the disk grows live.
    resize(&p, &t, None, None, Some(20)).await.unwrap();
    assert_eq!(seen(&p, &t).await, (4, 2048, 20, PowerState::Running));

    // A disk never shrinks, running or not.
    let e = resize(&p, &t, None, None, Some(19)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    assert!(e.message().contains("only grows"), "{e}");
    set_power(&th, &t, "Off");
    let e = resize(&p, &t, Some(2), None, Some(10)).await.unwrap_err();
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    assert_eq!(
        seen(&p, &t).await,
        (4, 2048, 20, PowerState::Stopped),
        "a refused resize changes nothing, not even the vCPUs checked before the disk"
    );

    // Under checkpoints the drive is a differencing chain: the disk keeps its size.
    p.snapshot_vm(
        &OpContext::detached(),
        SnapshotVm::new(t.clone()).with_name("before"),
    )
    .await
    .unwrap();
    let e = resize(&p, &t, None, None, Some(30)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    assert!(e.message().contains("snapshots"), "{e}");

    // Values outside Hyper-V's bounds never reach the host.
    let before = calls(&th);
    for (vcpus, memory, disk, field) in [
        (Some(0), None, None, "vcpus"),
        (Some(241), None, None, "vcpus"),
        (Some(u32::MAX), None, None, "vcpus"),
        (None, Some(1023), None, "memory_mib"),
        (None, Some(16), None, "memory_mib"),
        (None, Some(12 * 1024 * 1024 + 2), None, "memory_mib"),
        (None, Some(u64::MAX), None, "memory_mib"),
        (None, None, Some(0), "disk_gib"),
        (None, None, Some(64 * 1024 + 1), "disk_gib"),
        (None, None, Some(u64::MAX), "disk_gib"),
    ] {
        let e = resize(&p, &t, vcpus, memory, disk).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
        assert_eq!(e.field(), Some(field), "{e}");
    }
    assert_eq!(calls(&th), before);

    // Parameters travelled as data: the script text never held a size.
    let records = th.control("hv1", "records", None)["records"].clone();
    let resizes: Vec<&Value> = records
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["script"] == "Resize-HcpVm")
        .collect();
    assert!(!resizes.is_empty());
    assert_eq!(resizes[0]["params"]["Vcpus"], 4, "{}", resizes[0]);

    // A missing VM is NotFound.
    p.delete_vm(
        &OpContext::detached(),
        DeleteVm::new(t.clone()).with_force(true),
    )
    .await
    .unwrap();
    let e = resize(&p, &t, Some(2), None, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_1_grows_its_ide_disk_only_while_off() {
    let th = common::TestHost::start(1, None);
    let p = common::provider(
        &th,
        HypervSettings {
            generation: 1,
            ..common::settings()
        },
    );
    let t = vm(&p, "rs-gen1", true).await;
    let e = resize(&p, &t, None, None, Some(10)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    assert!(e.message().contains("IDE"), "{e}");
    // Generation 1's limits: 64 vCPUs, checked before the call.
    let e = resize(&p, &t, Some(65), None, None).await.unwrap_err();
    assert_eq!(e.field(), Some("vcpus"), "{e}");
    set_power(&th, &t, "Off");
    resize(&p, &t, Some(8), None, Some(10)).await.unwrap();
    assert_eq!(seen(&p, &t).await, (8, 512, 10, PowerState::Stopped));
}

/// A hosts file over the test host whose VMs are of `generation`.
fn hosts_file(th: &common::TestHost, generation: u8) -> String {
    let (name, port) = &th.hosts[0];
    format!(
        r#"
providers:
  - name: hyperv-test
    kind: hyperv
    settings:
      tls_verify: false
      operation_timeout: 5s
      generation: {generation}
    hosts:
      - {{name: {name}, zone: zone-a, settings: {{address: 127.0.0.1, port: {port}}}}}
zones:
  - name: zone-a
projects:
  - name: demo
catalog:
  images: [{{name: ubuntu-24.04, os: linux, min_disk_gib: 1}}]
  flavors: [{{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}}]
"#
    )
}

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

/// An engine over the test host, its VMs of `generation`, with one running VM made.
async fn engine_with_vm(
    th: &common::TestHost,
    generation: u8,
) -> (Engine, RequestContext, hcp_core::VmId, tempfile::TempDir) {
    let config = Config::from_yaml(&hosts_file(th, generation), "test hosts file").unwrap();
    let (engine, dir) = common::engine(config).await;
    let ctx = RequestContext::new("demo", Principal::new("alice"));
    let s = engine
        .create_vm(&ctx, VmSpec::new("planned", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    run(&engine, &ctx, &s.job_id).await;
    (engine, ctx, s.vm_id, dir)
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
async fn the_engine_plans_hyperv_resizes_and_refuses_beyond_allow_before_any_job() {
    let th = common::TestHost::start(1, None);
    let (engine, ctx, vm, _dir) = engine_with_vm(&th, 2).await;
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!(v.power, PowerState::Running);

    // Running on Hyper-V: vCPUs and memory need the VM off, the disk grows live.
    let plan = engine
        .plan_resize(&ctx, &vm, &change(Some(2), Some(2048), Some(12)))
        .await
        .unwrap();
    let got: Vec<(&str, ChangeImpact)> =
        plan.iter().map(|p| (p.field.as_str(), p.impact)).collect();
    assert_eq!(
        got,
        [
            ("vcpus", ChangeImpact::PowerOff),
            ("memory_mib", ChangeImpact::PowerOff),
            ("disk_gib", ChangeImpact::Hot)
        ],
        "{plan:?}"
    );
    assert!(plan[0].reason.contains("Hyper-V"), "{plan:?}");

    // Beyond what the caller allowed: refused before any job, naming the field.
    let before = jobs(&engine, &ctx).await;
    let calls_before = calls(&th);
    let e = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(Some(2), None, None),
            &[ChangeImpact::Hot, ChangeImpact::Reboot],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), CODE_RESIZE_NOT_ALLOWED, "{e}");
    assert_eq!(e.field(), Some("vcpus"), "{e}");
    assert!(e.to_string().contains("power_off"), "{e}");
    assert_eq!(jobs(&engine, &ctx).await, before);
    let e = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(None, None, Some(5)),
            &[
                ChangeImpact::Hot,
                ChangeImpact::Reboot,
                ChangeImpact::PowerOff,
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    assert_eq!(jobs(&engine, &ctx).await, before);
    assert_eq!(calls(&th), calls_before, "the host saw no call");

    // The disk grows live with `hot` allowed; the VM keeps running.
    let grown = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(None, None, Some(12)),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap();
    run(&engine, &ctx, &grown.job_id).await;

    // vCPUs and memory with `power_off` allowed: the job stops, resizes and starts the VM.
    let resized = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(Some(2), Some(2048), None),
            &[ChangeImpact::Hot, ChangeImpact::PowerOff],
        )
        .await
        .unwrap();
    run(&engine, &ctx, &resized.job_id).await;
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!(
        (
            v.resources.vcpus,
            v.resources.memory_mib,
            v.resources.disk_gib
        ),
        (2, 2048, 12)
    );
    assert_eq!(v.power, PowerState::Running);
    let native = v.binding.native_id.clone().unwrap().to_lowercase();
    let m = th.control("hv1", "state", None)["vms"][native].clone();
    assert_eq!(m["processor_count"], 2, "{m}");
    assert_eq!(m["memory_startup"], 2048 * MIB, "{m}");
    assert_eq!(m["state"], "Running", "{m}");

    let del = engine.delete_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &del.job_id).await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_1_vms_disk_growth_is_planned_with_a_stop_and_refused_live() {
    let th = common::TestHost::start(1, None);
    let (engine, ctx, vm, _dir) = engine_with_vm(&th, 1).await;
    assert_eq!(
        engine.get_vm(&ctx.scope(), &vm).await.unwrap().power,
        PowerState::Running
    );
    let plan = engine
        .plan_resize(&ctx, &vm, &change(None, None, Some(12)))
        .await
        .unwrap();
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(plan[0].impact, ChangeImpact::PowerOff, "{plan:?}");
    assert!(plan[0].reason.contains("generation 1"), "{plan:?}");
    // Live only: refused before any job, naming the disk (it used to be accepted and then
    // fail inside the job).
    let before = jobs(&engine, &ctx).await;
    let e = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(None, None, Some(12)),
            &[ChangeImpact::Hot],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), CODE_RESIZE_NOT_ALLOWED, "{e}");
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    assert_eq!(jobs(&engine, &ctx).await, before);
    // With a stop allowed, the job stops, grows and starts the VM.
    let grown = engine
        .resize_vm(
            &ctx,
            &vm,
            &change(None, None, Some(12)),
            &[ChangeImpact::Hot, ChangeImpact::PowerOff],
        )
        .await
        .unwrap();
    run(&engine, &ctx, &grown.job_id).await;
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!(v.resources.disk_gib, 12);
    assert_eq!(v.power, PowerState::Running);
    let del = engine.delete_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &del.job_id).await;
    engine.shutdown().await;
}
