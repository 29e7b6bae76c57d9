//! HCP's engine over the libvirt provider against the real peer: libvirtd on qemu:///system
//! running QEMU (TCG) guests, prepared by `setup.sh`, configured by
//! `examples/config/libvirt.yaml`. Every test fails (never skips) when the peer is missing, and
//! removes every domain and volume it made, even when it fails.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::{Cleanup, IMAGE, QEMU, prefix, require_qemu, virsh};
use hcp_core::store::{PageRequest, Scope};
use hcp_core::{
    Config, Engine, JobState, NetworkAttachment, Principal, ProjectId, RequestContext, VmId, VmSpec,
};

const GRACE: Duration = Duration::from_secs(1);

fn example_config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/libvirt.yaml");
    let mut c = Config::from_file(&path).expect("examples/config/libvirt.yaml is valid");
    // An OS-less guest ignores ACPI: keep graceful stops short.
    c.engine.graceful_stop_timeout = GRACE;
    c.engine.inventory_refresh_interval = Duration::ZERO;
    c
}

async fn engine() -> Engine {
    hcp_provider_libvirt::register(Engine::builder(example_config()))
        .build()
        .await
        .expect("an engine over examples/config/libvirt.yaml")
}

async fn run(engine: &Engine, ctx: &RequestContext, job: &hcp_core::JobId) -> hcp_core::Job {
    let job = engine
        .wait_job(&ctx.scope(), job, Some(Duration::from_secs(120)))
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

fn domstate(name: &str) -> String {
    let (ok, text) = virsh(QEMU, &["domstate", name]);
    if ok {
        text.trim().to_string()
    } else {
        format!("absent ({})", text.trim())
    }
}

/// The source files of a domain's disks, per `virsh domblklist`.
fn disk_files(name: &str) -> Vec<String> {
    let (ok, text) = virsh(QEMU, &["domblklist", name, "--details"]);
    assert!(ok, "{text}");
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() == 4 && cols[0] == "file").then(|| cols[3].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_end_to_end_on_qemu_system() {
    require_qemu();
    let prefix = prefix("e2e");
    let _guard = Cleanup::new(QEMU, &prefix);
    let engine = engine().await;
    let ctx = RequestContext::new("demo", Principal::new("alice"));
    let name = format!("{prefix}-web");
    let mut spec = VmSpec::new(&name, IMAGE, "tiny");
    spec.networks = vec![NetworkAttachment {
        network: "default".into(),
    }];
    spec.tags.insert("team".into(), "web".into());

    // Create → running, HCP's mark in the metadata, a qcow2 overlay on the base image.
    let s = engine.create_vm(&ctx, spec).await.unwrap();
    run(&engine, &ctx, &s.job_id).await;
    assert_eq!(domstate(&name), "running");
    let (ok, xml) = virsh(QEMU, &["dumpxml", &name]);
    assert!(ok, "{xml}");
    assert!(xml.contains("https://hcp.dev/xmlns/vm/1"), "{xml}");
    assert!(
        xml.contains(&format!(">{}<", s.vm_id)),
        "the metadata carries HCP's id: {xml}"
    );
    assert!(
        xml.contains(">demo<"),
        "the metadata carries the project: {xml}"
    );
    assert!(xml.contains("type='user'"), "{xml}");
    assert!(
        xml.contains("base-tiny.qcow2"),
        "the disk's backing store is the base image: {xml}"
    );
    let disks = disk_files(&name);
    assert_eq!(disks.len(), 1, "{disks:?}");
    assert!(
        disks[0].ends_with(&format!("hcp-{}.qcow2", s.vm_id)),
        "{disks:?}"
    );
    assert!(Path::new(&disks[0]).exists());
    let vm = engine.get_vm(&ctx.scope(), &s.vm_id).await.unwrap();
    let (_, uuid) = virsh(QEMU, &["domuuid", &name]);
    assert_eq!(vm.binding.native_id.as_deref(), Some(uuid.trim()));

    // Stop (graceful: the OS-less guest ignores ACPI, so it ends in a power-off).
    let s2 = engine.stop_vm(&ctx, &s.vm_id, false).await.unwrap();
    run(&engine, &ctx, &s2.job_id).await;
    assert_eq!(domstate(&name), "shut off");
    let s2 = engine.start_vm(&ctx, &s.vm_id).await.unwrap();
    run(&engine, &ctx, &s2.job_id).await;
    assert_eq!(domstate(&name), "running");
    for hard in [false, true] {
        let s2 = engine.reboot_vm(&ctx, &s.vm_id, hard).await.unwrap();
        run(&engine, &ctx, &s2.job_id).await;
        assert_eq!(domstate(&name), "running", "after a reboot (hard: {hard})");
    }

    // Console: the upstream is the domain's VNC socket on loopback, and it speaks RFB.
    let console = engine.console(&ctx, &s.vm_id, None).await.unwrap();
    let upstream = match console.upstream.clone().map(|u| u.transport) {
        Some(hcp_core::ConsoleTransport::Tcp { address }) => address,
        other => panic!("a VNC socket upstream for HCP's proxy, not {other:?}"),
    };
    assert_eq!(
        console.upstream.as_ref().map(|u| &u.handshake),
        Some(&hcp_core::ConsoleHandshake::None)
    );
    assert!(upstream.starts_with("127.0.0.1:"), "{upstream}");
    assert_eq!(console.url, format!("vnc://{upstream}"));
    assert!(console.expires_at > chrono::Utc::now());
    let (_, display) = virsh(QEMU, &["vncdisplay", &name]);
    let port: u16 = 5900
        + display
            .trim()
            .rsplit(':')
            .next()
            .and_then(|d| d.parse::<u16>().ok())
            .expect("virsh vncdisplay");
    assert_eq!(upstream, format!("127.0.0.1:{port}"));
    let mut sock = TcpStream::connect(&upstream).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut version = [0u8; 12];
    sock.read_exact(&mut version).unwrap();
    assert_eq!(&version, b"RFB 003.008\n");

    // Delete → the domain and its overlay are gone, the base image stays.
    let s2 = engine.delete_vm(&ctx, &s.vm_id, true).await.unwrap();
    run(&engine, &ctx, &s2.job_id).await;
    assert!(domstate(&name).starts_with("absent"), "{}", domstate(&name));
    assert!(!Path::new(&disks[0]).exists(), "the overlay is deleted");
    let (ok, _) = virsh(QEMU, &["vol-info", "--pool", "hcp", "base-tiny.qcow2"]);
    assert!(ok, "the base image stays");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_user_data_reaches_a_seed_iso() {
    require_qemu();
    let prefix = prefix("ci");
    let _guard = Cleanup::new(QEMU, &prefix);
    let engine = engine().await;
    let ctx = RequestContext::new("demo", Principal::new("alice"));
    let name = format!("{prefix}-init");
    let mut spec = VmSpec::new(&name, IMAGE, "tiny");
    spec.user_data = Some("#cloud-config\nruncmd: [echo hello-from-hcp]\n".into());
    let s = engine.create_vm(&ctx, spec).await.unwrap();
    run(&engine, &ctx, &s.job_id).await;
    assert_eq!(domstate(&name), "running");
    let disks = disk_files(&name);
    let seed = disks
        .iter()
        .find(|d| d.ends_with("-seed.iso"))
        .unwrap_or_else(|| panic!("a seed ISO is attached: {disks:?}"));
    let iso = std::fs::read(seed).unwrap();
    assert_eq!(
        &iso[16 * 2048 + 40..16 * 2048 + 46],
        b"cidata",
        "NoCloud volume id"
    );
    let text = String::from_utf8_lossy(&iso);
    assert!(
        text.contains("hello-from-hcp"),
        "the user-data is on the ISO"
    );
    assert!(text.contains(&format!("instance-id: {}", s.vm_id)));
    let (_, xml) = virsh(QEMU, &["dumpxml", &name]);
    assert!(xml.contains("device='cdrom'"), "{xml}");

    // Snapshots stay possible with the read-only seed attached.
    let snap = engine
        .submit(
            &ctx,
            hcp_core::Action::Snapshot {
                vm_id: s.vm_id.clone(),
                name: "s1".into(),
            },
        )
        .await
        .unwrap();
    run(&engine, &ctx, &snap.job_id).await;
    let (_, list) = virsh(QEMU, &["snapshot-list", &name, "--name"]);
    assert_eq!(list.trim(), "s1");

    let d = engine.delete_vm(&ctx, &s.vm_id, true).await.unwrap();
    run(&engine, &ctx, &d.job_id).await;
    for f in &disks {
        assert!(!Path::new(f).exists(), "{f} is deleted with the VM");
    }
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_restart_rebuilds_the_same_vms() {
    require_qemu();
    let prefix = prefix("rs");
    let _guard = Cleanup::new(QEMU, &prefix);
    let demo = RequestContext::new("demo", Principal::new("alice"));
    let staging = RequestContext::new("staging", Principal::new("bob"));
    let first = engine().await;
    let mut made = Vec::new();
    for (ctx, what) in [(&demo, "a"), (&demo, "b"), (&staging, "c")] {
        let s = first
            .create_vm(ctx, VmSpec::new(format!("{prefix}-{what}"), IMAGE, "tiny"))
            .await
            .unwrap();
        run(&first, ctx, &s.job_id).await;
        made.push((ctx.scope(), s.vm_id, format!("{prefix}-{what}")));
    }
    first.shutdown().await;
    drop(first);

    // A new engine with an empty in-memory store rebuilds them from the domains' metadata.
    let second = engine().await;
    for (scope, id, name) in &made {
        let vm = second
            .get_vm(scope, id)
            .await
            .unwrap_or_else(|e| panic!("{name} ({id}) comes back after a restart: {e}"));
        assert_eq!(&vm.spec.name, name);
        assert_eq!(Scope::Project(vm.project.clone()), *scope);
        assert_eq!(vm.spec.image, IMAGE);
        assert_eq!(&*vm.binding.host, "local");
    }
    let demo_list = second
        .list_vms(&Scope::Project(ProjectId::new("demo")), &PageRequest::all())
        .await
        .unwrap();
    let ours: Vec<&VmId> = demo_list
        .items
        .iter()
        .filter(|v| v.spec.name.starts_with(&prefix))
        .map(|v| &v.id)
        .collect();
    assert_eq!(ours, vec![&made[0].1, &made[1].1]);
    assert!(
        second.get_vm(&demo.scope(), &made[2].1).await.is_err(),
        "staging's VM is not visible to demo"
    );
    for (scope, id, _) in &made {
        let ctx = if *scope == demo.scope() {
            &demo
        } else {
            &staging
        };
        let d = second.delete_vm(ctx, id, true).await.unwrap();
        run(&second, ctx, &d.job_id).await;
    }
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_defined_with_virsh_is_unmanaged() {
    require_qemu();
    let prefix = prefix("um");
    let _guard = Cleanup::new(QEMU, &prefix);
    let name = format!("{prefix}-legacy");
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("legacy.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type>hvm</type></os></domain>"
        ),
    )
    .unwrap();
    let (ok, text) = virsh(QEMU, &["define", xml.to_str().unwrap()]);
    assert!(ok, "{text}");

    let engine = engine().await;
    engine.refresh_inventory().await.unwrap();
    let seen = engine
        .inventory_vms()
        .into_iter()
        .find(|v| v.name == name)
        .expect("ops see the domain in the inventory");
    assert_eq!(seen.vm_id, None, "it is unmanaged");
    assert_eq!(seen.project, None, "it belongs to no tenant");
    assert_eq!(seen.power, hcp_core::PowerState::Stopped);
    for project in ["demo", "staging"] {
        let listed = engine
            .list_vms(
                &Scope::Project(ProjectId::new(project)),
                &PageRequest::all(),
            )
            .await
            .unwrap();
        assert!(
            !listed.items.iter().any(|v| v.spec.name == name),
            "no tenant lists it"
        );
    }
    let all = engine
        .list_vms(&Scope::All, &PageRequest::all())
        .await
        .unwrap();
    assert!(
        !all.items.iter().any(|v| v.spec.name == name),
        "HCP does not adopt it"
    );
    engine.shutdown().await;
}
