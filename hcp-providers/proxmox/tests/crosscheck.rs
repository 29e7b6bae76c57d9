//! Cross-checks with an independent client, proxmoxer, against the same fakepve: what HCP does is
//! what PVE's own clients see, and what they do shows up in HCP.

mod common;

use std::collections::BTreeMap;

use common::{IMAGE, NODE, Peer};
use hcp_core::{
    CreateVm, HcpMark, HostInventory, NetworkPlan, OpContext, PowerState, ProjectId, Provider,
    Resources, StopVm, VmId, VmTarget,
};
use serde_json::json;

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
