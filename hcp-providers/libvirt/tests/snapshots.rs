//! Snapshots through HCP's engine on real QEMU domains (qemu:///system, prepared by
//! `setup.sh`), each step checked with `virsh snapshot-list`. Fails (never skips) when the peer
//! is missing; removes what it made, even when it fails.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Cleanup, IMAGE, QEMU, prefix, require_qemu, virsh};
use hcp_core::{Config, Engine, JobState, Principal, RequestContext, VmSpec};

fn config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/libvirt.yaml");
    let mut c = Config::from_file(&path).expect("examples/config/libvirt.yaml is valid");
    // An OS-less guest ignores ACPI: keep graceful stops short.
    c.engine.graceful_stop_timeout = Duration::from_secs(1);
    c.engine.inventory_refresh_interval = Duration::ZERO;
    c
}

async fn run(engine: &Engine, ctx: &RequestContext, job: &hcp_core::JobId) -> hcp_core::Job {
    let job = engine
        .wait_job(&ctx.scope(), job, Some(Duration::from_secs(180)))
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

fn snapshot_names(domain: &str) -> Vec<String> {
    let (ok, text) = virsh(QEMU, &["snapshot-list", domain, "--name"]);
    assert!(ok, "{text}");
    let mut names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    names.sort();
    names
}

fn domstate(name: &str) -> String {
    let (ok, text) = virsh(QEMU, &["domstate", name]);
    if ok {
        text.trim().to_string()
    } else {
        format!("absent ({})", text.trim())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_create_list_revert_delete_on_real_domains() {
    require_qemu();
    let prefix = prefix("snap");
    let _guard = Cleanup::new(QEMU, &prefix);
    let engine = hcp_provider_libvirt::register(Engine::builder(config()))
        .build()
        .await
        .expect("an engine over examples/config/libvirt.yaml");
    let ctx = RequestContext::new("demo", Principal::new("alice"));
    let name = format!("{prefix}-vm");
    let s = engine
        .create_vm(&ctx, VmSpec::new(&name, IMAGE, "tiny"))
        .await
        .unwrap();
    run(&engine, &ctx, &s.job_id).await;
    let vm = s.vm_id.clone();
    assert_eq!(domstate(&name), "running");

    // A running domain's snapshot holds its memory.
    let warm = engine.create_snapshot(&ctx, &vm, "warm").await.unwrap();
    run(&engine, &ctx, &warm.submitted.job_id).await;
    assert_eq!(snapshot_names(&name), ["warm"]);
    let listed = engine.list_snapshots(&ctx, &vm).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, warm.snapshot_id);
    assert!(listed[0].id.starts_with("snap-"));
    assert!(listed[0].memory, "{listed:?}");
    assert!(listed[0].created_at.is_some());

    // A second snapshot of the same name is refused before a job.
    let dup = engine.create_snapshot(&ctx, &vm, "warm").await.unwrap_err();
    assert_eq!(dup.kind(), hcp_core::ErrorKind::Conflict, "{dup}");
    assert_eq!(dup.field(), Some("name"));

    // A shut-off domain's snapshot holds disks only.
    let stop = engine.stop_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &stop.job_id).await;
    let cold = engine.create_snapshot(&ctx, &vm, "cold").await.unwrap();
    run(&engine, &ctx, &cold.submitted.job_id).await;
    assert_eq!(snapshot_names(&name), ["cold", "warm"]);
    let start = engine.start_vm(&ctx, &vm).await.unwrap();
    run(&engine, &ctx, &start.job_id).await;
    assert_eq!(domstate(&name), "running");

    // Reverting the running VM to the disk-only snapshot: memory is not kept, the domain is off.
    let r = engine
        .revert_snapshot(&ctx, &vm, &cold.snapshot_id)
        .await
        .unwrap();
    assert_eq!(r.memory_state_kept, Some(false));
    run(&engine, &ctx, &r.submitted.job_id).await;
    assert_eq!(domstate(&name), "shut off");
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!(v.power, hcp_core::PowerState::Stopped);

    // Reverting to the memory snapshot: the domain runs again.
    let r = engine
        .revert_snapshot(&ctx, &vm, &warm.snapshot_id)
        .await
        .unwrap();
    assert_eq!(r.memory_state_kept, Some(true));
    run(&engine, &ctx, &r.submitted.job_id).await;
    assert_eq!(domstate(&name), "running");

    let d = engine
        .delete_snapshot(&ctx, &vm, &warm.snapshot_id)
        .await
        .unwrap();
    run(&engine, &ctx, &d.submitted.job_id).await;
    assert_eq!(snapshot_names(&name), ["cold"]);

    // Deleting the running VM without force: shut down (hard after the stop timeout), deleted.
    let del = engine.delete_vm(&ctx, &vm, false).await.unwrap();
    run(&engine, &ctx, &del.job_id).await;
    assert!(domstate(&name).starts_with("absent"), "{}", domstate(&name));
    engine.shutdown().await;
}
