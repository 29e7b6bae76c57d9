//! Cross-checks with an independent client, proxmoxer, against the same fakepve: what HCP does is
//! what PVE's own clients see, and what they do shows up in HCP.

mod common;

use std::collections::BTreeMap;

use common::{IMAGE, NODE, Peer};
use hcp_core::{
    CreateVm, DeleteSnapshot, DeleteVm, ErrorKind, HcpMark, HostInventory, ListSnapshots,
    NetworkPlan, OpContext, PowerState, ProjectId, Provider, Resources, RevertSnapshot, SnapshotVm,
    StopVm, VmId, VmTarget,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmoxer_sees_what_hcp_did_and_hcp_sees_what_proxmoxer_did() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    let vm_id = VmId::generate();
    let mark = HcpMark::new(vm_id.clone(), ProjectId::new("demo"));
    let tags = BTreeMap::from([("team".to_string(), "web".to_string())]);
    let args = CreateVm::new(
        mark,
        NODE,
        "xcheck-1",
        IMAGE,
        Resources {
            vcpus: 2,
            memory_mib: 1024,
            disk_gib: 8,
        },
    )
    .with_networks(vec![
        NetworkPlan {
            network: "default".into(),
            vlan: Some(42),
        },
        NetworkPlan {
            network: "vmbr1".into(),
            vlan: None,
        },
    ])
    .with_tags(tags.clone());
    let created = p.create_vm(&OpContext::detached(), args).await.unwrap();
    let vmid: u32 = created.native_id.parse().unwrap();
    let seen = peer.proxmoxer(json!({"op": "vm", "node": NODE, "vmid": vmid}));
    assert_eq!(seen["status"]["status"], "running", "{seen}");
    let config = &seen["config"];
    assert_eq!(config["name"], "xcheck-1");
    assert_eq!(config["cores"].to_string().trim_matches('"'), "2");
    assert_eq!(config["memory"].to_string().trim_matches('"'), "1024");
    let net0 = config["net0"].as_str().unwrap();
    assert!(
        net0.contains("bridge=vmbr0") && net0.contains("tag=42"),
        "{net0}"
    );
    assert!(config["net1"].as_str().unwrap().contains("bridge=vmbr1"));
    let pve_tags = config["tags"].as_str().unwrap();
    assert!(
        pve_tags.split(';').any(|t| t == "hcp") && pve_tags.contains("team-web"),
        "{pve_tags}"
    );
    let description = config["description"].as_str().unwrap();
    assert!(description.contains(vm_id.as_str()), "{description}");

    let target = VmTarget {
        vm_id: vm_id.clone(),
        name: "xcheck-1".into(),
        host: NODE.into(),
        native_id: Some(created.native_id.clone()),
    };
    p.stop_vm(&OpContext::detached(), StopVm::new(target))
        .await
        .unwrap();
    let seen = peer.proxmoxer(json!({"op": "vm", "node": NODE, "vmid": vmid}));
    assert_eq!(seen["status"]["status"], "stopped", "{seen}");

    // A VM HCP did not create is in the inventory, without a mark.
    let made = peer.proxmoxer(json!({"op": "create", "node": NODE, "vmid": 777,
        "name": "made-by-proxmoxer", "cores": 1, "memory": 256}));
    assert_eq!(made["exitstatus"], "OK");
    let inv = p.host_inventory(HostInventory::new(NODE)).await.unwrap();
    let other = inv.vms.iter().find(|v| v.native_id == "777").unwrap();
    assert_eq!(other.name, "made-by-proxmoxer");
    assert!(other.mark.is_none());
    assert_eq!(other.power, PowerState::Stopped);
    assert_eq!(other.resources.memory_mib, 256);
    let ours = inv
        .vms
        .iter()
        .find(|v| v.native_id == created.native_id)
        .unwrap();
    assert_eq!(ours.mark.as_ref().unwrap().vm_id, vm_id);
    assert_eq!(ours.tags, tags);
    // fakepve accepts a qemu disk resize without modelling it (the size stays the template's),
    // so check that HCP asked PVE for the size instead.
    let requests = peer.command(json!({"op": "requests"}));
    let resize = format!("/api2/json/nodes/{NODE}/qemu/{vmid}/resize");
    assert!(
        requests["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r[0] == "PUT" && r[1] == resize.as_str()),
        "HCP grows the disk with PUT {resize}"
    );
    assert!(inv.images.contains(&IMAGE.to_string()), "{:?}", inv.images);
    assert!(
        inv.networks.contains(&"default".to_string()),
        "{:?}",
        inv.networks
    );
}

/// PVE's snapshot list as proxmoxer reads it: name → (vmstate, parent), without `current`.
fn pve_snapshots(peer: &Peer, vmid: u32) -> BTreeMap<String, (bool, Option<String>)> {
    let seen = peer.proxmoxer(json!({"op": "snapshots", "node": NODE, "vmid": vmid}));
    seen["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("a snapshot list: {seen}"))
        .iter()
        .filter(|s| s["name"] != "current")
        .map(|s| {
            let vmstate = match &s["vmstate"] {
                Value::Number(n) => n.as_u64() == Some(1),
                Value::String(x) => x == "1",
                _ => false,
            };
            (
                s["name"].as_str().unwrap().to_string(),
                (vmstate, s["parent"].as_str().map(str::to_string)),
            )
        })
        .collect()
}

fn snap(vmstate: bool, parent: Option<&str>) -> (bool, Option<String>) {
    (vmstate, parent.map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxmoxer_sees_hcps_snapshots_and_hcp_lists_proxmoxers() {
    let peer = Peer::start(0.01);
    let p = peer.provider();
    let ctx = OpContext::detached();
    let vm_id = VmId::generate();
    let args = CreateVm::new(
        HcpMark::new(vm_id.clone(), ProjectId::new("demo")),
        NODE,
        "xsnap-1",
        IMAGE,
        Resources {
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 2,
        },
    );
    let created = p.create_vm(&ctx, args).await.unwrap();
    let vmid: u32 = created.native_id.parse().unwrap();
    let t = VmTarget {
        vm_id,
        name: "xsnap-1".into(),
        host: NODE.into(),
        native_id: Some(created.native_id.clone()),
    };

    // Snapshots of the running VM hold its memory; PVE chains them by `parent`.
    for name in ["warm1", "warm2"] {
        p.snapshot_vm(&ctx, SnapshotVm::new(t.clone()).with_name(name))
            .await
            .unwrap();
    }
    assert_eq!(
        pve_snapshots(&peer, vmid),
        BTreeMap::from([
            ("warm1".into(), snap(true, None)),
            ("warm2".into(), snap(true, Some("warm1"))),
        ])
    );

    // A revert to a memory snapshot leaves the VM running, as proxmoxer sees it too.
    let reverted = p
        .revert_snapshot(&ctx, RevertSnapshot::new(t.clone()).with_name("warm1"))
        .await
        .unwrap();
    assert!(reverted.memory_kept);
    assert_eq!(reverted.power, PowerState::Running);
    let seen = peer.proxmoxer(json!({"op": "vm", "node": NODE, "vmid": vmid}));
    assert_eq!(seen["status"]["status"], "running", "{seen}");
    assert_eq!(seen["config"]["parent"], "warm1", "{seen}");

    let deleted = p
        .delete_snapshot(&ctx, DeleteSnapshot::new(t.clone()).with_name("warm2"))
        .await
        .unwrap();
    assert!(deleted.existed);
    assert_eq!(
        pve_snapshots(&peer, vmid),
        BTreeMap::from([("warm1".into(), snap(true, None))])
    );

    // A stopped VM's snapshot is of its disks only.
    p.stop_vm(&ctx, StopVm::new(t.clone()).with_force(true))
        .await
        .unwrap();
    p.snapshot_vm(&ctx, SnapshotVm::new(t.clone()).with_name("cold"))
        .await
        .unwrap();
    // A snapshot proxmoxer takes shows in HCP's list, after HCP's, with PVE's words for it.
    let made = peer.proxmoxer(
        json!({"op": "snapshot", "node": NODE, "vmid": vmid, "snapname": "byproxmoxer"}),
    );
    assert_eq!(made["exitstatus"], "OK", "{made}");
    let listed = p
        .list_snapshots(ListSnapshots::new(t.clone()))
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["warm1", "cold", "byproxmoxer"]);
    assert_eq!(
        listed.iter().map(|s| s.memory).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert!(listed.iter().all(|s| s.created_at.is_some()), "{listed:?}");
    assert_eq!(
        pve_snapshots(&peer, vmid),
        BTreeMap::from([
            ("warm1".into(), snap(true, None)),
            ("cold".into(), snap(false, Some("warm1"))),
            ("byproxmoxer".into(), snap(false, Some("cold"))),
        ])
    );

    // A revert to a disk-only snapshot leaves the VM stopped.
    let reverted = p
        .revert_snapshot(&ctx, RevertSnapshot::new(t.clone()).with_name("cold"))
        .await
        .unwrap();
    assert!(!reverted.memory_kept);
    assert_eq!(reverted.power, PowerState::Stopped);
    let seen = peer.proxmoxer(json!({"op": "vm", "node": NODE, "vmid": vmid}));
    assert_eq!(seen["status"]["status"], "stopped", "{seen}");
    assert_eq!(seen["config"]["parent"], "cold", "{seen}");

    // HCP deletes proxmoxer's snapshot; a second delete finds it gone.
    let d = DeleteSnapshot::new(t.clone()).with_name("byproxmoxer");
    assert!(p.delete_snapshot(&ctx, d.clone()).await.unwrap().existed);
    assert!(!p.delete_snapshot(&ctx, d).await.unwrap().existed);
    assert_eq!(
        pve_snapshots(&peer, vmid),
        BTreeMap::from([
            ("warm1".into(), snap(true, None)),
            ("cold".into(), snap(false, Some("warm1"))),
        ])
    );

    let e = p
        .revert_snapshot(
            &ctx,
            RevertSnapshot::new(t.clone()).with_name("never-taken"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("never-taken"), "{e}");

    // Once the VM is gone, its snapshots are NotFound, a delete included.
    assert!(
        p.delete_vm(&ctx, DeleteVm::new(t.clone()))
            .await
            .unwrap()
            .existed
    );
    let gone = p.list_snapshots(ListSnapshots::new(t.clone())).await;
    assert_eq!(gone.unwrap_err().kind(), ErrorKind::NotFound);
    let gone = p
        .delete_snapshot(&ctx, DeleteSnapshot::new(t).with_name("cold"))
        .await;
    assert_eq!(gone.unwrap_err().kind(), ErrorKind::NotFound);
}
