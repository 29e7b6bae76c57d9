//! libvirtd restarts under a running provider: while it is down the host is reported unavailable
//! (temporary), and once it is back the provider reconnects by itself; guests keep running
//! across the restart. It runs alone in its test binary because it restarts the daemon.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, IMAGE, QEMU, prefix, qemu_provider, require_qemu, virsh};
use hcp_core::{
    CreateVm, DeleteVm, ErrorKind, HcpMark, HostInventory, OpContext, PowerState, ProjectId,
    Provider, Resources, StopVm, VmId, VmTarget,
};

const PID_FILE: &str = "/run/libvirtd.pid";

fn libvirtd_pid() -> i32 {
    std::fs::read_to_string(PID_FILE)
        .unwrap_or_else(|e| panic!("{PID_FILE}: {e} (start libvirtd with setup.sh)"))
        .trim()
        .parse()
        .expect("a pid in the pid file")
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn stop_libvirtd() {
    let pid = libvirtd_pid();
    let ok = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill libvirtd ({pid})");
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        assert!(Instant::now() < deadline, "libvirtd ({pid}) did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_libvirtd() {
    let ok = std::process::Command::new("libvirtd")
        .arg("-d")
        .status()
        .unwrap()
        .success();
    assert!(ok, "libvirtd -d");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !virsh(QEMU, &["version"]).0 {
        assert!(Instant::now() < deadline, "libvirtd did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Restarts libvirtd if the test stops half-way.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        if !virsh(QEMU, &["version"]).0 {
            start_libvirtd();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_libvirtd_restarts() {
    require_qemu();
    let prefix = prefix("rc");
    let _restart = Restart;
    let _guard = Cleanup::new(QEMU, &prefix);
    let p = qemu_provider();
    let ctx = OpContext::detached();
    let mark = HcpMark {
        vm_id: VmId::generate(),
        project: ProjectId::new("demo"),
        image: Some(IMAGE.into()),
        flavor: None,
        zone: None,
        created_at: None,
        user_data: false,
        server_group: None,
    };
    let name = format!("{prefix}-survivor");
    let res = Resources {
        vcpus: 1,
        memory_mib: 64,
        disk_gib: 1,
    };
    let created = p
        .create_vm(
            &ctx,
            CreateVm::new(mark.clone(), "local", &name, IMAGE, res),
        )
        .await
        .unwrap();

    stop_libvirtd();
    let e = p
        .host_inventory(HostInventory::new("local"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    assert!(e.is_temporary(), "{e}");

    start_libvirtd();
    let inv = p
        .host_inventory(HostInventory::new("local"))
        .await
        .unwrap_or_else(|e| panic!("the provider reconnects by itself: {e}"));
    let vm = inv
        .vms
        .iter()
        .find(|v| v.native_id == created.native_id)
        .expect("the VM is still there");
    assert_eq!(
        vm.power,
        PowerState::Running,
        "the guest ran through the restart"
    );
    assert_eq!(vm.mark.as_ref(), Some(&mark));

    let t = VmTarget {
        vm_id: mark.vm_id.clone(),
        name,
        host: "local".into(),
        native_id: Some(created.native_id),
    };
    p.stop_vm(&ctx, StopVm::new(t.clone()).with_force(true))
        .await
        .unwrap();
    assert!(p.delete_vm(&ctx, DeleteVm::new(t)).await.unwrap().existed);
}
