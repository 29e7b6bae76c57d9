//! A cluster of simulated hosts is one placement target: it reports its members' summed
//! capacity, places each VM on the member with the most free memory that fits the whole VM,
//! refuses a VM no single member can hold, and reaches a placed VM through the cluster.

use hcp_core::{
    CreateVm, ErrorKind, HcpMark, HostInventory, OpContext, ProjectId, Provider, Resources, StopVm,
    TargetKind, VmId, VmTarget,
};
use hcp_provider_sim::{SimCluster, SimHost, SimProvider, SimSettings};

fn sim() -> SimProvider {
    SimProvider::new(
        "sim",
        SimSettings::default(),
        vec![
            SimHost::new("m1", "z", 4, 8192),
            SimHost::new("m2", "z", 4, 8192),
            SimHost::new("solo", "z", 8, 16384),
        ],
    )
    .unwrap()
    .with_clusters(vec![SimCluster::new(
        "cl",
        "z",
        vec!["m1".into(), "m2".into()],
    )])
    .unwrap()
}

fn create(name: &str, vcpus: u32, memory_mib: u64) -> CreateVm {
    let mark = HcpMark::new(VmId::generate(), ProjectId::new("demo"));
    let r = Resources {
        vcpus,
        memory_mib,
        disk_gib: 10,
    };
    CreateVm::new(mark, "cl", name, "ubuntu-24.04", r)
}

#[tokio::test]
async fn a_cluster_lists_as_one_target_with_the_members_summed() {
    let p = sim();
    let targets = p.list_hosts().await.unwrap();
    let by_name: Vec<(&str, TargetKind, u32, u64)> = targets
        .iter()
        .map(|t| (t.name.as_str(), t.kind, t.vcpus_total, t.memory_mib_total))
        .collect();
    assert_eq!(
        by_name,
        [
            ("solo", TargetKind::Host, 8, 16384),
            ("cl", TargetKind::Cluster, 8, 16384)
        ]
    );
    assert_eq!(targets[1].members, ["m1", "m2"]);
}

#[tokio::test]
async fn the_cluster_places_on_the_member_with_most_free_memory() {
    let p = sim();
    let ctx = OpContext::detached();
    let a = p.create_vm(&ctx, create("a", 1, 6144)).await.unwrap();
    let first = a.host.clone().expect("a cluster create names its host");
    let b = p.create_vm(&ctx, create("b", 1, 1024)).await.unwrap();
    let second = b.host.clone().unwrap();
    assert_ne!(first, second, "the emptier member takes the next VM");

    let inv = p.host_inventory(HostInventory::new("cl")).await.unwrap();
    assert_eq!((inv.vcpus_used, inv.memory_mib_used), (2, 7168));
    let hosts: Vec<(&str, Option<&str>)> = inv
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.host.as_deref()))
        .collect();
    assert!(hosts.contains(&("a", Some(first.as_str()))), "{hosts:?}");
    let used: Vec<(&str, u64)> = inv
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.memory_mib_used))
        .collect();
    assert!(used.contains(&(first.as_str(), 6144)), "{used:?}");

    // A VM is reached through its cluster whichever member holds it.
    let target = VmTarget {
        vm_id: VmId::generate(),
        name: "a".into(),
        host: "cl".into(),
        native_id: Some(a.native_id.clone()),
    };
    let stopped = p
        .stop_vm(&ctx, StopVm::new(target).with_force(true))
        .await
        .unwrap();
    assert!(!stopped.was_stopped);
}

#[tokio::test]
async fn a_vm_no_single_member_can_hold_is_refused() {
    let p = sim();
    let ctx = OpContext::detached();
    p.create_vm(&ctx, create("a", 1, 6144)).await.unwrap();
    p.create_vm(&ctx, create("b", 1, 6144)).await.unwrap();
    // 4 GiB free in sum, 2 GiB on each member.
    let e = p.create_vm(&ctx, create("c", 1, 3072)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    let e = p.create_vm(&ctx, create("d", 6, 512)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    let vms: usize = p.state().unwrap().hosts.values().map(|h| h.vms.len()).sum();
    assert_eq!(vms, 2);
}

#[tokio::test]
async fn names_are_unique_over_the_cluster_and_a_retry_finds_its_vm() {
    let p = sim();
    let ctx = OpContext::detached();
    let args = create("a", 1, 1024);
    let first = p.create_vm(&ctx, args.clone()).await.unwrap();
    let again = p.create_vm(&ctx, args).await.unwrap();
    assert_eq!((again.native_id, again.host), (first.native_id, first.host));
    let e = p.create_vm(&ctx, create("a", 1, 1024)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
}

#[test]
fn a_cluster_of_unknown_hosts_is_refused() {
    let p = SimProvider::new(
        "sim",
        SimSettings::default(),
        vec![SimHost::new("m1", "z", 4, 8192)],
    )
    .unwrap();
    let e = p
        .with_clusters(vec![SimCluster::new("cl", "z", vec!["nope".into()])])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(e.message().contains("`nope`"), "{e}");
}
