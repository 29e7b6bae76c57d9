//! libvirt overhead benchmark: the wall time for HCP (an Engine over the libvirt provider on
//! qemu:///system) to create+start, destroy and delete N VMs one after another, next to `virsh`
//! doing the same operations directly (vol-create-as of a qcow2 overlay, define from equivalent
//! XML, start, destroy, undefine, vol-delete), and the provider called without the engine.
//! The ratio HCP ÷ virsh is the overhead HCP adds.
//!
//! Needs the real peer (`sudo hcp-providers/libvirt/setup.sh`) and the `libvirt` feature:
//! `cargo bench -p hcp-benches --features libvirt --bench libvirt` (set `HCP_BENCH_VMS` to
//! change N, default 10).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hcp_core::{
    Config, CreateVm, DeleteVm, Engine, HcpMark, JobState, OpContext, Principal, ProjectId,
    Provider, RequestContext, Resources, StopVm, VmId, VmSpec, VmTarget,
};
use hcp_provider_libvirt::{LibvirtProvider, register};

const URI: &str = "qemu:///system";
const POOL: &str = "hcp";
const BASE: &str = "base-tiny.qcow2";

const HOSTS_FILE: &str = "providers:
  - name: kvm
    kind: libvirt
    settings:
      pool: hcp
      images: {base-tiny: base-tiny.qcow2}
    hosts:
      - {name: local, zone: z, settings: {uri: 'qemu:///system'}}
zones: [{name: z}]
catalog:
  images: [{name: base-tiny}]
  flavors: [{name: tiny, vcpus: 1, memory_mib: 64, disk_gib: 1}]
engine:
  inventory_refresh_interval: 0s
  retry: {max_attempts: 1}
";

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(URI)
        .args(args)
        .output()
        .expect("virsh runs");
    assert!(
        out.status.success(),
        "virsh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_peer() {
    let out = Command::new("virsh")
        .args(["-c", URI, "vol-info", "--pool", POOL, BASE])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "the libvirt peer is not ready ({URI}, pool {POOL}, volume {BASE}): run `sudo hcp-providers/libvirt/setup.sh`"
        ),
    }
}

/// The domain XML HCP writes for a tiny VM, for virsh to define.
fn domain_xml(name: &str, disk: &str) -> String {
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <metadata><hcp:vm xmlns:hcp='https://hcp.dev/xmlns/vm/1'><hcp:id>bench</hcp:id><hcp:project>bench</hcp:project></hcp:vm></metadata>\
         <os><type>hvm</type><boot dev='hd'/></os><features><acpi/></features>\
         <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>\
         <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/></disk>\
         <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>\
         <serial type='pty'><target port='0'/></serial><console type='pty'><target type='serial' port='0'/></console>\
         <memballoon model='none'/></devices></domain>"
    )
}

fn with_virsh(n: usize, prefix: &str) -> Duration {
    let dir = std::env::temp_dir();
    let start = Instant::now();
    for i in 0..n {
        let name = format!("{prefix}-virsh-{i}");
        let vol = format!("{name}.qcow2");
        virsh(&[
            "vol-create-as",
            POOL,
            &vol,
            "1G",
            "--format",
            "qcow2",
            "--backing-vol",
            BASE,
            "--backing-vol-format",
            "qcow2",
        ]);
        let disk = virsh(&["vol-path", "--pool", POOL, &vol]);
        let xml = dir.join(format!("{name}.xml"));
        std::fs::write(&xml, domain_xml(&name, disk.trim())).expect("write the XML");
        virsh(&["define", xml.to_str().expect("utf-8 path")]);
        let _ = std::fs::remove_file(&xml);
        virsh(&["start", &name]);
        virsh(&["destroy", &name]);
        virsh(&["undefine", &name]);
        virsh(&["vol-delete", "--pool", POOL, &vol]);
    }
    start.elapsed()
}

async fn with_engine(engine: &Engine, n: usize, prefix: &str) -> Duration {
    let ctx = RequestContext::new("bench", Principal::new("bench"));
    let scope = ctx.scope();
    let done = |job: hcp_core::Job| {
        assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
    };
    let start = Instant::now();
    for i in 0..n {
        let s = engine
            .create_vm(
                &ctx,
                VmSpec::new(format!("{prefix}-hcp-{i}"), "base-tiny", "tiny"),
            )
            .await
            .expect("create");
        done(
            engine
                .wait_job(&scope, &s.job_id, None)
                .await
                .expect("create job"),
        );
        let j = engine.stop_vm(&ctx, &s.vm_id, true).await.expect("stop");
        done(
            engine
                .wait_job(&scope, &j.job_id, None)
                .await
                .expect("stop job"),
        );
        let j = engine
            .delete_vm(&ctx, &s.vm_id, false)
            .await
            .expect("delete");
        done(
            engine
                .wait_job(&scope, &j.job_id, None)
                .await
                .expect("delete job"),
        );
    }
    start.elapsed()
}

async fn with_provider(p: &Arc<dyn Provider>, n: usize, prefix: &str) -> Duration {
    let ctx = OpContext::detached();
    let res = Resources {
        vcpus: 1,
        memory_mib: 64,
        disk_gib: 1,
    };
    let start = Instant::now();
    for i in 0..n {
        let mark = HcpMark {
            vm_id: VmId::generate(),
            project: ProjectId::new("bench"),
            image: Some("base-tiny".into()),
            flavor: None,
            zone: None,
        };
        let name = format!("{prefix}-prov-{i}");
        let created = p
            .create_vm(
                &ctx,
                CreateVm::new(mark.clone(), "local", &name, "base-tiny", res),
            )
            .await
            .expect("create");
        let t = VmTarget {
            vm_id: mark.vm_id,
            name,
            host: "local".into(),
            native_id: Some(created.native_id),
        };
        p.stop_vm(&ctx, StopVm::new(t.clone()).with_force(true))
            .await
            .expect("stop");
        p.delete_vm(&ctx, DeleteVm::new(t)).await.expect("delete");
    }
    start.elapsed()
}

fn leftovers(prefix: &str) -> Vec<String> {
    virsh(&["list", "--all", "--name"])
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn main() {
    require_peer();
    let n: usize = std::env::var("HCP_BENCH_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let prefix = format!("bench{}", std::process::id() % 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (hcp, direct) = rt.block_on(async {
        let config = Config::from_yaml(HOSTS_FILE, "bench").expect("bench hosts file");
        let engine = register(Engine::builder(config))
            .without_background_reconcile()
            .build()
            .await
            .expect("an engine over qemu:///system");
        let p: Arc<dyn Provider> = Arc::new(
            LibvirtProvider::from_config(
                &Config::from_yaml(HOSTS_FILE, "bench")
                    .expect("hosts")
                    .providers[0],
                &Default::default(),
            )
            .expect("provider"),
        );
        // Warm up: one VM each way, so connections are open and caches filled.
        with_engine(&engine, 1, &format!("{prefix}w")).await;
        with_provider(&p, 1, &format!("{prefix}w")).await;
        let hcp = with_engine(&engine, n, &prefix).await;
        let direct = with_provider(&p, n, &prefix).await;
        engine.shutdown().await;
        (hcp, direct)
    });
    with_virsh(1, &format!("{prefix}w"));
    let virsh_time = with_virsh(n, &prefix);
    assert!(
        leftovers(&prefix).is_empty(),
        "every benchmark domain was deleted"
    );

    let per = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    println!(
        "libvirt/lifecycle: {n} VMs one after another, each created+started, destroyed, deleted ({URI}, TCG, 1 vCPU, 64 MiB, qcow2 overlay)"
    );
    println!("  {:<28} {:>9} {:>12}", "", "wall (s)", "per VM (ms)");
    println!(
        "  {:<28} {:>9.3} {:>12.1}",
        "virsh (6 commands per VM)",
        virsh_time.as_secs_f64(),
        per(virsh_time)
    );
    println!(
        "  {:<28} {:>9.3} {:>12.1}",
        "HCP engine (3 jobs per VM)",
        hcp.as_secs_f64(),
        per(hcp)
    );
    println!(
        "  {:<28} {:>9.3} {:>12.1}",
        "HCP provider, no engine",
        direct.as_secs_f64(),
        per(direct)
    );
    println!(
        "  HCP / virsh = {:.2}   (provider / virsh = {:.2}; engine overhead over the provider = {:.1} ms per VM)",
        hcp.as_secs_f64() / virsh_time.as_secs_f64(),
        direct.as_secs_f64() / virsh_time.as_secs_f64(),
        per(hcp) - per(direct)
    );
}
