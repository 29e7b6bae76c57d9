//! Cross-checks with pyvmomi, an independent vSphere client: what HCP did is what vCenter shows
//! pyvmomi (VMs, and the snapshot tree HCP's takes, reverts and deletes make), a snapshot
//! pyvmomi took is in HCP's list, and a VM pyvmomi made is unmanaged to operators and invisible
//! to tenants.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{HOST, IMAGE, Lines, OTHER, Peer, SOURCE, dyn_provider};
use hcp_core::store::{PageRequest, Scope};
use hcp_core::testkit::{Fixture, engine_for};
use hcp_core::{
    CreateVm, DeleteSnapshot, DeleteVm, HcpMark, JobState, ListSnapshots, NativeSnapshot,
    OpContext, PowerState, Principal, ProjectId, Provider, RequestContext, Resources,
    RevertSnapshot, SnapshotVm, StopVm, VmId, VmSpec, VmTarget,
};
use serde_json::{Value, json};

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

/// Runs `tests/pyvmomi_client.py snapshots` on `name`: the tree as `[{name, children}]` and the
/// current snapshot's name.
fn tree_of(peer: &Peer, name: &str) -> (Value, Value) {
    let seen = peer.pyvmomi(json!({"cmd": "snapshots", "name": name}));
    assert_eq!(seen["found"], true, "{seen}");
    (seen["tree"].clone(), seen["current"].clone())
}

fn leaf(name: &str) -> Value {
    json!({"name": name, "children": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyvmomi_sees_the_snapshot_tree_hcp_makes_and_hcp_lists_pyvmomis_snapshots() {
    let peer = Peer::start(1);
    let p = peer.provider();
    let vm_id = VmId::generate();
    let size = Resources {
        vcpus: 1,
        memory_mib: 128,
        disk_gib: 0,
    };
    let ctx = OpContext::detached();
    let created = p
        .create_vm(
            &ctx,
            CreateVm::new(
                HcpMark::new(vm_id.clone(), ProjectId::new("cross")),
                HOST,
                "snaps-1",
                IMAGE,
                size,
            )
            .with_start(true),
        )
        .await
        .unwrap();
    let t = VmTarget {
        vm_id,
        name: "snaps-1".into(),
        host: HOST.into(),
        native_id: Some(created.native_id),
    };
    let names = |l: &[NativeSnapshot]| l.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let take = |name: &'static str| {
        let (p, t) = (p.clone(), t.clone());
        async move {
            p.snapshot_vm(&OpContext::detached(), SnapshotVm::new(t).with_name(name))
                .await
                .unwrap()
        }
    };

    // s1, s2, back to s1, then s3: s3 branches off s1 beside s2.
    take("s1").await;
    take("s2").await;
    let r = p
        .revert_snapshot(&ctx, RevertSnapshot::new(t.clone()).with_name("s1"))
        .await
        .unwrap();
    assert!(!r.memory_kept, "HCP's snapshots hold disks only");
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "snaps-1"}));
    assert_eq!(
        seen["power"],
        json!(match r.power {
            PowerState::Running => "poweredOn",
            _ => "poweredOff",
        }),
        "the revert reports the power state vCenter shows: {seen}"
    );
    take("s3").await;
    let (tree, current) = tree_of(&peer, "snaps-1");
    assert_eq!(
        tree,
        json!([{"name": "s1", "children": [leaf("s2"), leaf("s3")]}]),
        "pyvmomi sees the branch the revert made"
    );
    assert_eq!(current, "s3");
    let listed = p
        .list_snapshots(ListSnapshots::new(t.clone()))
        .await
        .unwrap();
    assert_eq!(
        names(&listed),
        ["s1", "s2", "s3"],
        "flattened, oldest first"
    );
    assert!(listed.iter().all(|s| s.created_at.is_some() && !s.memory));
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at)
    );

    // Deleting s1 keeps its children: they become roots.
    let d = p
        .delete_snapshot(&ctx, DeleteSnapshot::new(t.clone()).with_name("s1"))
        .await
        .unwrap();
    assert!(d.existed);
    let (tree, _) = tree_of(&peer, "snaps-1");
    assert_eq!(tree, json!([leaf("s2"), leaf("s3")]));

    // A snapshot pyvmomi takes shows up in HCP's list, and HCP can revert to it and delete it.
    peer.pyvmomi(
        json!({"cmd": "snapshot", "name": "snaps-1", "snapshot": "by-pyvmomi", "memory": true}),
    );
    let listed = p
        .list_snapshots(ListSnapshots::new(t.clone()))
        .await
        .unwrap();
    assert_eq!(names(&listed), ["s2", "s3", "by-pyvmomi"]);
    assert!(listed[2].created_at.is_some());
    p.revert_snapshot(&ctx, RevertSnapshot::new(t.clone()).with_name("by-pyvmomi"))
        .await
        .unwrap();
    let (tree, current) = tree_of(&peer, "snaps-1");
    assert_eq!(
        tree,
        json!([leaf("s2"), {"name": "s3", "children": [leaf("by-pyvmomi")]}])
    );
    assert_eq!(current, "by-pyvmomi");
    for name in ["by-pyvmomi", "s2", "s3"] {
        let d = p
            .delete_snapshot(&ctx, DeleteSnapshot::new(t.clone()).with_name(name))
            .await
            .unwrap();
        assert!(d.existed, "{name}");
    }
    let (tree, current) = tree_of(&peer, "snaps-1");
    assert_eq!(tree, json!([]));
    assert_eq!(current, Value::Null);
    assert!(
        p.list_snapshots(ListSnapshots::new(t.clone()))
            .await
            .unwrap()
            .is_empty()
    );
    let again = p
        .delete_snapshot(&ctx, DeleteSnapshot::new(t.clone()).with_name("s2"))
        .await
        .unwrap();
    assert!(!again.existed);
    let e = p
        .revert_snapshot(&ctx, RevertSnapshot::new(t.clone()).with_name("s2"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::NotFound, "{e}");

    // Two snapshots of one name (vCenter allows it) are refused by name, not guessed at.
    take("twin").await;
    peer.pyvmomi(
        json!({"cmd": "snapshot", "name": "snaps-1", "snapshot": "twin", "memory": false}),
    );
    let e = p
        .delete_snapshot(&ctx, DeleteSnapshot::new(t.clone()).with_name("twin"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::Conflict, "{e}");
    assert!(
        !e.message().contains("snapshot-"),
        "no managed object ids: {e}"
    );

    p.delete_vm(&ctx, DeleteVm::new(t.clone()).with_force(true))
        .await
        .unwrap();
    let e = p.list_snapshots(ListSnapshots::new(t)).await.unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::NotFound, "{e}");
}

async fn succeeded(engine: &hcp_core::Engine, ctx: &RequestContext, job: &hcp_core::JobId) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_takes_lists_reverts_and_deletes_snapshots_of_a_vsphere_vm() {
    let peer = Peer::start(1);
    let p = peer.provider();
    let f = Fixture::new(HOST, IMAGE).with_other_host(OTHER);
    let engine = engine_for(dyn_provider(&p), &f).await.unwrap();
    let ctx = RequestContext::new("cross", Principal::new("alice"));
    let s = engine
        .create_vm(&ctx, VmSpec::new("eng-snap-1", IMAGE, "conformance"))
        .await
        .unwrap();
    succeeded(&engine, &ctx, &s.job_id).await;
    let vm = s.vm_id;

    // The engine lists the VM's snapshots before it accepts a create: that list now works.
    let taken = engine.create_snapshot(&ctx, &vm, "before").await.unwrap();
    succeeded(&engine, &ctx, &taken.submitted.job_id).await;
    let listed = engine.list_snapshots(&ctx, &vm).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, taken.snapshot_id);
    assert_eq!(listed[0].name, "before");
    assert!(!listed[0].memory && listed[0].created_at.is_some());
    let dup = engine
        .create_snapshot(&ctx, &vm, "before")
        .await
        .unwrap_err();
    assert_eq!(dup.kind(), hcp_core::ErrorKind::Conflict, "{dup}");
    let (tree, _) = tree_of(&peer, "eng-snap-1");
    assert_eq!(tree, json!([leaf("before")]));

    let r = engine
        .revert_snapshot(&ctx, &vm, &taken.snapshot_id)
        .await
        .unwrap();
    assert_eq!(r.memory_state_kept, Some(false));
    succeeded(&engine, &ctx, &r.submitted.job_id).await;
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "eng-snap-1"}));
    let v = engine.get_vm(&ctx.scope(), &vm).await.unwrap();
    let want = if seen["power"] == "poweredOn" {
        PowerState::Running
    } else {
        PowerState::Stopped
    };
    assert_eq!(
        v.power, want,
        "HCP records the power state vCenter shows: {seen}"
    );

    let d = engine
        .delete_snapshot(&ctx, &vm, &taken.snapshot_id)
        .await
        .unwrap();
    succeeded(&engine, &ctx, &d.submitted.job_id).await;
    assert!(engine.list_snapshots(&ctx, &vm).await.unwrap().is_empty());
    let (tree, _) = tree_of(&peer, "eng-snap-1");
    assert_eq!(tree, json!([]));

    let del = engine.delete_vm(&ctx, &vm, true).await.unwrap();
    succeeded(&engine, &ctx, &del.job_id).await;
    engine.shutdown().await;
}
