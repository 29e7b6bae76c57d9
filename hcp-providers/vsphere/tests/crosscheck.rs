//! Cross-checks with pyvmomi, an independent vSphere client: what HCP did is what vCenter shows
//! pyvmomi, and a VM pyvmomi made is unmanaged to operators and invisible to tenants.

mod common;

use std::sync::Arc;

use common::{HOST, IMAGE, Lines, OTHER, Peer, SOURCE, dyn_provider};
use hcp_core::store::{PageRequest, Scope};
use hcp_core::testkit::{Fixture, engine_for};
use hcp_core::{
    CreateVm, DeleteVm, HcpMark, OpContext, ProjectId, Provider, Resources, SnapshotVm, StopVm,
    VmId, VmTarget,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyvmomi_sees_what_hcp_did() {
    let peer = Peer::start(1);
    let p = peer.provider();
    let vm_id = VmId::generate();
    let mark = HcpMark::new(vm_id.clone(), ProjectId::new("cross"));
    let resources = Resources {
        vcpus: 3,
        memory_mib: 768,
        disk_gib: 2,
    };
    let lines = Arc::new(Lines::default());
    let ctx = OpContext::new(hcp_core::JobId::generate(), lines.clone());
    let created = p
        .create_vm(
            &ctx,
            CreateVm::new(mark, HOST, "cross-1", IMAGE, resources).with_start(true),
        )
        .await
        .unwrap();
    assert!(
        lines.progress().contains(&100),
        "task progress reaches the job: {:?}",
        lines.progress()
    );
    let target = VmTarget {
        vm_id: vm_id.clone(),
        name: "cross-1".into(),
        host: HOST.into(),
        native_id: Some(created.native_id.clone()),
    };
    let snap = p
        .snapshot_vm(
            &ctx,
            SnapshotVm::new(target.clone()).with_name("before-upgrade"),
        )
        .await
        .unwrap();
    assert!(!snap.snapshot_id.is_empty());
    p.stop_vm(&ctx, StopVm::new(target.clone()).with_force(true))
        .await
        .unwrap();

    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "cross-1"}));
    assert_eq!(seen["moref"], created.native_id.as_str(), "{seen}");
    assert_eq!(seen["host"], "DC0_C0_H0", "{seen}");
    assert_eq!(seen["cpus"], 3, "{seen}");
    assert_eq!(seen["memory_mb"], 768, "{seen}");
    assert_eq!(seen["power"], "poweredOff", "{seen}");
    assert_eq!(seen["snapshots"], json!(["before-upgrade"]), "{seen}");
    let disks = seen["disks_gib"].as_array().unwrap();
    assert!(
        disks.first().and_then(|d| d.as_u64()) >= Some(2),
        "the first disk grew to the flavor's size: {seen}"
    );
    let mark = seen["mark"].as_str().unwrap();
    assert!(
        mark.contains(vm_id.as_str()) && mark.contains("cross"),
        "{mark}"
    );

    p.delete_vm(&ctx, DeleteVm::new(target)).await.unwrap();
    let gone = peer.pyvmomi(json!({"cmd": "show", "name": "cross-1"}));
    assert_eq!(gone["found"], false, "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_made_by_pyvmomi_is_unmanaged_and_invisible_to_tenants() {
    let peer = Peer::start(1);
    let made = peer.pyvmomi(json!({"cmd": "clone", "name": "outsider-1", "source": SOURCE}));
    let moref = made["moref"].as_str().unwrap().to_string();
    let p = peer.provider();
    let f = Fixture::new(HOST, IMAGE).with_other_host(OTHER);
    let engine = engine_for(dyn_provider(&p), &f).await.unwrap();
    engine.refresh_inventory().await.unwrap();
    let ops = engine.inventory_vms();
    let outsider = ops
        .iter()
        .find(|v| v.native_id == moref)
        .unwrap_or_else(|| panic!("ops inventory lists the outsider: {ops:?}"));
    assert_eq!(outsider.name, "outsider-1");
    assert_eq!(outsider.vm_id, None);
    assert_eq!(outsider.project, None);
    for project in ["conformance", "cross"] {
        let listed = engine
            .list_vms(
                &Scope::Project(ProjectId::new(project)),
                &PageRequest::all(),
            )
            .await
            .unwrap();
        assert!(
            !listed.items.iter().any(|v| v.spec.name == "outsider-1"),
            "no tenant sees it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_data_reaches_guestinfo_on_images_that_take_it() {
    let peer = Peer::start(1);
    let p = peer.provider_with(peer.settings_with(json!({
        "images": {"ubuntu-24.04": {"template": IMAGE, "cloud_init": true},
                   "plain": {"template": IMAGE}},
    })));
    assert!(p.capabilities().cloud_init);
    let ctx = OpContext::detached();
    let size = Resources {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 0,
    };
    let user_data = "#cloud-config\nhostname: ci-1\n";
    let plain = CreateVm::new(
        HcpMark::new(VmId::generate(), ProjectId::new("cross")),
        HOST,
        "ci-plain",
        "plain",
        size,
    )
    .with_user_data(Some(user_data.into()));
    let e = p.create_vm(&ctx, plain).await.unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::FeatureNotSupported, "{e}");
    let vm_id = VmId::generate();
    let args = CreateVm::new(
        HcpMark::new(vm_id.clone(), ProjectId::new("cross")),
        HOST,
        "ci-1",
        "ubuntu-24.04",
        size,
    )
    .with_user_data(Some(user_data.into()));
    let created = p.create_vm(&ctx, args).await.unwrap();
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "ci-1"}));
    assert_eq!(seen["userdata"], user_data, "{seen}");
    let meta = seen["metadata"].as_str().unwrap();
    assert!(meta.contains(&format!("instance-id: {vm_id}")), "{meta}");
    assert!(meta.contains("local-hostname: ci-1"), "{meta}");
    // The mark says user-data was given, never what it was.
    assert!(
        !seen["mark"].as_str().unwrap().contains("cloud-config"),
        "{seen}"
    );
    let target = VmTarget {
        vm_id,
        name: "ci-1".into(),
        host: HOST.into(),
        native_id: Some(created.native_id),
    };
    p.delete_vm(&ctx, DeleteVm::new(target).with_force(true))
        .await
        .unwrap();
}
