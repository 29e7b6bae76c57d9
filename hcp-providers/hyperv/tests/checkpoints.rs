//! Hyper-V checkpoints beyond the shared snapshot lifecycle: which checkpoints hold memory
//! (Production, Standard, Production's fallback), what a revert leaves running, names that
//! Hyper-V lets repeat, checkpoints that are not the VM owner's, and the errors for a missing VM,
//! a missing checkpoint and a bad name.

mod common;

use hcp_core::{
    CreateVm, DeleteSnapshot, DeleteVm, Error, ErrorKind, HcpMark, HostInventory, ListSnapshots,
    OpContext, PowerState, ProjectId, Provider, Resources, RevertSnapshot, SnapshotVm, VmId,
    VmTarget,
};
use hcp_provider_hyperv::HypervProvider;
use serde_json::{Value, json};

/// Creates a running VM on hv1 and returns its target (with the Hyper-V id).
async fn running_vm(p: &HypervProvider, name: &str) -> VmTarget {
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
            CreateVm::new(mark, "hv1", name, "ubuntu-24.04", resources).with_start(true),
        )
        .await
        .unwrap();
    assert_eq!(created.power, PowerState::Running);
    VmTarget {
        vm_id,
        name: name.into(),
        host: "hv1".into(),
        native_id: Some(created.native_id),
    }
}

fn native(t: &VmTarget) -> String {
    t.native_id.clone().unwrap()
}

async fn snapshot(p: &HypervProvider, t: &VmTarget, name: &str) -> Result<String, Error> {
    p.snapshot_vm(
        &OpContext::detached(),
        SnapshotVm::new(t.clone()).with_name(name),
    )
    .await
    .map(|s| s.snapshot_id)
}

/// Lists as (name, memory), oldest first.
async fn list(p: &HypervProvider, t: &VmTarget) -> Vec<(String, bool)> {
    p.list_snapshots(ListSnapshots::new(t.clone()))
        .await
        .unwrap()
        .into_iter()
        .map(|s| {
            assert!(s.created_at.is_some(), "Hyper-V reports a CreationTime");
            (s.name, s.memory)
        })
        .collect()
}

async fn power(p: &HypervProvider, t: &VmTarget) -> PowerState {
    let inv = p.host_inventory(HostInventory::new("hv1")).await.unwrap();
    inv.vms
        .iter()
        .find(|v| Some(&v.native_id) == t.native_id.as_ref())
        .expect("the VM is listed")
        .power
}

fn vm_state(th: &common::TestHost, t: &VmTarget) -> Value {
    th.control("hv1", "state", None)["vms"][native(t).to_lowercase()].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_checkpoints_hold_no_memory_and_standard_ones_resume_the_vm() {
    let th = common::TestHost::start(1, None);
    let p = common::provider(&th, common::settings());
    let t = running_vm(&p, "cp-types").await;

    // Hyper-V's default CheckpointType, which HCP leaves alone: Production, disks only.
    snapshot(&p, &t, "prod").await.unwrap();
    // The site switched the VM to Standard checkpoints: a running VM's memory is kept.
    th.control(
        "hv1",
        "checkpoint_type",
        Some(json!({ "vm_id": native(&t), "type": "Standard" })),
    );
    snapshot(&p, &t, "std").await.unwrap();
    // Production again, but the guest cannot take one: Hyper-V falls back to Standard.
    th.control(
        "hv1",
        "checkpoint_type",
        Some(json!({ "vm_id": native(&t), "type": "Production" })),
    );
    th.control(
        "hv1",
        "guest",
        Some(json!({ "vm_id": native(&t), "guest": "unresponsive" })),
    );
    snapshot(&p, &t, "fallback").await.unwrap();
    assert_eq!(
        list(&p, &t).await,
        [
            ("prod".to_string(), false),
            ("std".to_string(), true),
            ("fallback".to_string(), true)
        ]
    );

    let r = p
        .revert_snapshot(
            &OpContext::detached(),
            RevertSnapshot::new(t.clone()).with_name("prod"),
        )
        .await
        .unwrap();
    assert!(!r.memory_kept);
    assert_eq!(r.power, PowerState::Stopped);
    assert_eq!(power(&p, &t).await, PowerState::Stopped);

    // From a stopped VM, a checkpoint with memory brings it back running.
    let r = p
        .revert_snapshot(
            &OpContext::detached(),
            RevertSnapshot::new(t.clone()).with_name("std"),
        )
        .await
        .unwrap();
    assert!(r.memory_kept);
    assert_eq!(r.power, PowerState::Running);
    assert_eq!(power(&p, &t).await, PowerState::Running);

    // ProductionOnly never falls back: the checkpoint fails and nothing is added.
    th.control(
        "hv1",
        "checkpoint_type",
        Some(json!({ "vm_id": native(&t), "type": "ProductionOnly" })),
    );
    let e = snapshot(&p, &t, "prod-only").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderError, "{e}");
    assert_eq!(list(&p, &t).await.len(), 3);

    // Deleting merges the checkpoint's differencing disk away.
    let files = |th: &common::TestHost| th.control("hv1", "state", None)["files"].to_string();
    let before = files(&th).matches(".avhdx").count();
    let d = p
        .delete_snapshot(
            &OpContext::detached(),
            DeleteSnapshot::new(t.clone()).with_name("std"),
        )
        .await
        .unwrap();
    assert!(d.existed);
    assert_eq!(files(&th).matches(".avhdx").count(), before - 1);

    let records = th.control("hv1", "records", None);
    assert_eq!(records["violations"], json!([]), "{records}");
    p.delete_vm(
        &OpContext::detached(),
        DeleteVm::new(t.clone()).with_force(true),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_hyper_v_lets_repeat_are_refused_not_guessed() {
    let th = common::TestHost::start(1, None);
    let p = common::provider(&th, common::settings());
    let t = running_vm(&p, "cp-names").await;
    snapshot(&p, &t, "before-upgrade").await.unwrap();

    // HCP refuses a name the VM already has (Hyper-V would take it twice), case-insensitively
    // as Hyper-V's own name lookups are.
    for name in ["before-upgrade", "BEFORE-UPGRADE"] {
        let e = snapshot(&p, &t, name).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    }

    // Someone took a second one with the same name in Hyper-V Manager; backup software left a
    // Recovery checkpoint, which is not the VM owner's and is not listed.
    th.control(
        "hv1",
        "checkpoint",
        Some(json!({ "vm_id": native(&t), "name": "before-upgrade" })),
    );
    th.control(
        "hv1",
        "checkpoint",
        Some(json!({ "vm_id": native(&t), "name": "veeam-backup", "snapshot_type": "Recovery" })),
    );
    assert_eq!(
        list(&p, &t).await,
        [
            ("before-upgrade".to_string(), false),
            ("before-upgrade".to_string(), false)
        ]
    );
    let e = p
        .revert_snapshot(
            &OpContext::detached(),
            RevertSnapshot::new(t.clone()).with_name("before-upgrade"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(
        e.operator_message().contains("unique per VM"),
        "{}",
        e.operator_message()
    );
    let e = p
        .delete_snapshot(
            &OpContext::detached(),
            DeleteSnapshot::new(t.clone()).with_name("before-upgrade"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert_eq!(list(&p, &t).await.len(), 2, "nothing was deleted");
    // The Recovery checkpoint is not HCP's to delete either.
    let d = p
        .delete_snapshot(
            &OpContext::detached(),
            DeleteSnapshot::new(t.clone()).with_name("veeam-backup"),
        )
        .await
        .unwrap();
    assert!(!d.existed);
    assert_eq!(
        vm_state(&th, &t)["checkpoints"].as_array().unwrap().len(),
        3
    );
    assert_eq!(
        power(&p, &t).await,
        PowerState::Running,
        "nothing was reverted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_vms_missing_checkpoints_and_bad_names() {
    let th = common::TestHost::start(1, None);
    let p = common::provider(&th, common::settings());
    let t = running_vm(&p, "cp-errors").await;

    let e = p
        .revert_snapshot(
            &OpContext::detached(),
            RevertSnapshot::new(t.clone()).with_name("never-taken"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("never-taken"), "{}", e.message());
    assert!(!e.message().contains("hv1") && !e.message().contains("cp-errors"));
    assert!(
        e.operator_message().contains("hv1"),
        "the host is in the detail"
    );
    assert_eq!(
        power(&p, &t).await,
        PowerState::Running,
        "nothing was reverted"
    );

    let d = p
        .delete_snapshot(
            &OpContext::detached(),
            DeleteSnapshot::new(t.clone()).with_name("never-taken"),
        )
        .await
        .unwrap();
    assert!(!d.existed);

    // A name the scripts' ValidatePattern would refuse never reaches the host.
    let calls = |th: &common::TestHost| {
        th.control("hv1", "records", None)["records"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = calls(&th);
    for bad in ["", "-x", "a b", "x'; Remove-VM *", &"y".repeat(101)] {
        let e = p
            .revert_snapshot(
                &OpContext::detached(),
                RevertSnapshot::new(t.clone()).with_name(bad),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
        assert_eq!(e.field(), Some("name"));
        let e = p
            .delete_snapshot(
                &OpContext::detached(),
                DeleteSnapshot::new(t.clone()).with_name(bad),
            )
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some("name"), "{e}");
    }
    assert_eq!(calls(&th), before);

    p.delete_vm(
        &OpContext::detached(),
        DeleteVm::new(t.clone()).with_force(true),
    )
    .await
    .unwrap();
    let gone = t.clone();
    let e = p
        .list_snapshots(ListSnapshots::new(gone.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = p
        .revert_snapshot(
            &OpContext::detached(),
            RevertSnapshot::new(gone.clone()).with_name("s1"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        !e.message().contains("s1"),
        "a missing VM is not reported as a missing snapshot: {}",
        e.message()
    );
    let e = p
        .delete_snapshot(
            &OpContext::detached(),
            DeleteSnapshot::new(gone).with_name("s1"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}
