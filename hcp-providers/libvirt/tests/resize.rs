//! Resizing through HCP's engine on real QEMU domains (qemu:///system, prepared by `setup.sh`),
//! each step checked with `virsh dominfo` and `virsh vol-info`. Fails (never skips) when the peer
//! is missing; removes what it made, even when it fails.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Cleanup, IMAGE, POOL, QEMU, prefix, require_qemu, virsh};
use hcp_core::{
    CODE_RESIZE_NOT_ALLOWED, ChangeImpact, Config, Engine, ErrorKind, JobState, PowerState,
    Principal, RequestContext, ResizeRequest, VmSpec,
};

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

/// One `Key: value` line of `virsh dominfo` / `vol-info` output.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim_start_matches(':').trim())
        })
        .unwrap_or_else(|| panic!("no `{key}` in {text}"))
        .to_string()
}

fn dominfo(name: &str, key: &str) -> String {
    let (ok, text) = virsh(QEMU, &["dominfo", name]);
    assert!(ok, "{text}");
    field(&text, key)
}

/// The disk's capacity in bytes, as `virsh vol-info --bytes` reports it.
fn disk_bytes(vm_id: &str) -> u64 {
    let (ok, text) = virsh(
        QEMU,
        &[
            "vol-info",
            "--pool",
            POOL,
            &format!("hcp-{vm_id}.qcow2"),
            "--bytes",
        ],
    );
    assert!(ok, "{text}");
    field(&text, "Capacity")
        .trim_end_matches("bytes")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("capacity in {text}: {e}"))
}

fn size(vcpus: Option<u32>, memory_mib: Option<u64>, disk_gib: Option<u64>) -> ResizeRequest {
    ResizeRequest {
        flavor: None,
        vcpus,
        memory_mib,
        disk_gib,
    }
}

const GIB: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_applies_only_what_is_allowed_on_real_domains() {
    require_qemu();
    let prefix = prefix("rsz");
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
    assert_eq!(dominfo(&name, "State"), "running");
    assert_eq!(dominfo(&name, "CPU(s)"), "1");
    assert_eq!(disk_bytes(vm.as_str()), GIB);

    // libvirt changes a running domain's vCPUs and memory only at its next boot: with `hot`
    // alone it is refused before a job, and the domain is untouched.
    let hot = [ChangeImpact::Hot];
    let e = engine
        .resize_vm(&ctx, &vm, &size(Some(2), Some(128), None), &hot)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(e.code(), CODE_RESIZE_NOT_ALLOWED, "{e}");
    assert_eq!(e.field(), Some("vcpus"), "{e}");
    assert_eq!(dominfo(&name, "CPU(s)"), "1");

    // A disk grows live on the running domain: `hot` is enough.
    let r = engine
        .resize_vm(&ctx, &vm, &size(None, None, Some(2)), &hot)
        .await
        .unwrap();
    run(&engine, &ctx, &r.job_id).await;
    assert_eq!(disk_bytes(vm.as_str()), 2 * GIB);
    assert_eq!(dominfo(&name, "State"), "running");
    let (ok, xml) = virsh(QEMU, &["dumpxml", &name]);
    assert!(
        ok && xml.contains("<hcp:disk_gib>2</hcp:disk_gib>"),
        "{xml}"
    );

    // With `reboot` allowed: written to the definition, then the job restarts the domain.
    let r = engine
        .resize_vm(
            &ctx,
            &vm,
            &size(Some(2), Some(128), None),
            &[ChangeImpact::Hot, ChangeImpact::Reboot],
        )
        .await
        .unwrap();
    run(&engine, &ctx, &r.job_id).await;
    assert_eq!(dominfo(&name, "State"), "running");
    assert_eq!(dominfo(&name, "CPU(s)"), "2");
    assert_eq!(dominfo(&name, "Max memory"), "131072 KiB");
    assert_eq!(dominfo(&name, "Used memory"), "131072 KiB");
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    assert_eq!(
        (
            v.resources.vcpus,
            v.resources.memory_mib,
            v.resources.disk_gib
        ),
        (2, 128, 2)
    );
    assert_eq!(v.power, PowerState::Running);

    // A stopped domain takes every change at once; its disk grows with virStorageVolResize.
    let stop = engine.stop_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &stop.job_id).await;
    let r = engine
        .resize_vm(&ctx, &vm, &size(Some(1), Some(96), Some(3)), &hot)
        .await
        .unwrap();
    run(&engine, &ctx, &r.job_id).await;
    assert_eq!(dominfo(&name, "State"), "shut off");
    assert_eq!(dominfo(&name, "CPU(s)"), "1");
    assert_eq!(dominfo(&name, "Max memory"), "98304 KiB");
    assert_eq!(disk_bytes(vm.as_str()), 3 * GIB);

    // A disk never shrinks, whatever is allowed.
    let e = engine
        .resize_vm(
            &ctx,
            &vm,
            &size(None, None, Some(1)),
            &[
                ChangeImpact::Hot,
                ChangeImpact::Reboot,
                ChangeImpact::PowerOff,
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), CODE_RESIZE_NOT_ALLOWED, "{e}");
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    assert_eq!(disk_bytes(vm.as_str()), 3 * GIB);

    let del = engine.delete_vm(&ctx, &vm, true).await.unwrap();
    run(&engine, &ctx, &del.job_id).await;
    engine.shutdown().await;
}
