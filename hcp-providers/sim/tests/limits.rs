//! The simulator refuses what a real hypervisor would: sizes beyond its declared limits, and a VM
//! that does not fit, even when a host reports absurd numbers; its sums never wrap or panic.

use hcp_core::{
    CreateVm, ErrorKind, HcpMark, OpContext, PowerState, ProjectId, Provider, Resources, VmId,
};
use hcp_provider_sim::{SimHost, SimProvider, SimSettings, SimVm};

fn sim(settings: SimSettings) -> SimProvider {
    SimProvider::new("sim", settings, vec![SimHost::new("h1", "z", 16, 32768)]).unwrap()
}

fn create(name: &str, resources: Resources) -> CreateVm {
    let mark = HcpMark::new(VmId::generate(), ProjectId::new("demo"));
    CreateVm::new(mark, "h1", name, "ubuntu-24.04", resources)
}

fn size(vcpus: u32, memory_mib: u64, disk_gib: u64) -> Resources {
    Resources {
        vcpus,
        memory_mib,
        disk_gib,
    }
}

#[tokio::test]
async fn declared_limits_are_enforced_by_the_provider_too() {
    let p = sim(SimSettings {
        max_vcpus: 4,
        max_disk_gib: 100,
        ..Default::default()
    });
    let caps = p.capabilities();
    assert_eq!((caps.max_vcpus, caps.max_disk_gib), (Some(4), Some(100)));
    assert!(caps.max_memory_mib.is_some() && caps.max_networks.is_some());
    let ctx = OpContext::detached();
    for (r, field) in [
        (size(5, 1024, 10), "vcpus"),
        (size(1, 1024, 101), "disk_gib"),
        (size(1, u64::MAX, 10), "memory_mib"),
    ] {
        let e = p.create_vm(&ctx, create("big", r)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{r:?}: {e}");
        assert_eq!(e.field(), Some(field), "{r:?}: {e}");
    }
    assert!(p.state().unwrap().hosts["h1"].vms.is_empty());
    p.create_vm(&ctx, create("ok", size(4, 1024, 100)))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_host_full_of_absurd_vms_refuses_without_wrapping() {
    let p = sim(SimSettings::default());
    // Sizes no hypervisor reports, as a corrupt state file might hold.
    for name in ["huge-1", "huge-2"] {
        p.seed_vm(
            "h1",
            SimVm::new(
                name,
                PowerState::Running,
                size(u32::MAX, u64::MAX, u64::MAX),
                None,
            ),
        )
        .unwrap();
    }
    let e = p
        .create_vm(&OpContext::detached(), create("small", size(1, 16, 1)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    let inv = p
        .host_inventory(hcp_core::HostInventory::new("h1"))
        .await
        .unwrap();
    assert_eq!((inv.vcpus_used, inv.memory_mib_used), (u32::MAX, u64::MAX));
}

#[test]
fn limits_in_settings_are_bounded() {
    for (key, value) in [
        ("max_vcpus", serde_json::json!(0)),
        ("max_vcpus", serde_json::json!(5000)),
        ("max_memory_mib", serde_json::json!(u64::MAX)),
        ("max_disk_gib", serde_json::json!(0)),
        ("max_networks", serde_json::json!(17)),
    ] {
        let e = SimSettings::from_value("sim", &serde_json::json!({ key: value })).unwrap_err();
        assert_eq!(
            e.field(),
            Some(format!("providers.sim.settings.{key}").as_str()),
            "{e}"
        );
    }
}
