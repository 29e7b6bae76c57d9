//! The provider against govmomi's vCenter simulator: TLS trust, login failures, a session ended
//! mid-job, unknown templates, placement on the pinned host, placement by DRS inside a cluster
//! target, job logs and tenant text, and the console the simulator cannot give.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{FAR, HOST, IMAGE, Lines, OTHER, PASSWORD, Peer};
use hcp_core::{
    ConsoleKind, CreateVm, DeleteVm, ErrorKind, GetConsole, HcpMark, HostInventory, MigrateVm,
    NetworkPlan, OpContext, PowerState, ProjectId, Provider, Resources, StopVm, VmId, VmTarget,
};
use serde_json::json;

fn args(host: &str, name: &str, image: &str) -> (CreateVm, VmTarget) {
    let vm_id = VmId::generate();
    let mark = HcpMark::new(vm_id.clone(), ProjectId::new("api"));
    let resources = Resources {
        vcpus: 2,
        memory_mib: 256,
        disk_gib: 1,
    };
    let target = VmTarget {
        vm_id,
        name: name.to_string(),
        host: host.to_string(),
        native_id: None,
    };
    (CreateVm::new(mark, host, name, image, resources), target)
}

fn job() -> (OpContext, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    (
        OpContext::new(hcp_core::JobId::generate(), lines.clone()),
        lines,
    )
}

#[tokio::test]
async fn tls_is_checked_by_thumbprint_and_a_wrong_one_is_refused() {
    let peer = Peer::start(1);
    let good = peer.provider();
    let inv = good.host_inventory(HostInventory::new(HOST)).await.unwrap();
    assert!(inv.images.contains(&IMAGE.to_string()), "{:?}", inv.images);
    assert!(
        inv.networks.contains(&"default".to_string()),
        "{:?}",
        inv.networks
    );
    assert!(inv.host.vcpus_total > 0 && inv.host.memory_mib_total > 0);

    let bad = peer.provider_with(peer.settings_with(json!({"thumbprint": "00".repeat(32)})));
    let e = bad
        .host_inventory(HostInventory::new(HOST))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    // Configured hosts are still listed while vCenter cannot be reached.
    assert_eq!(bad.list_hosts().await.unwrap().len(), 4);

    // The CA that signed the certificate is trusted through ca_file.
    let ca = peer
        .provider_with(peer.settings_with(json!({"thumbprint": null, "ca_file": peer.ca_file()})));
    ca.host_inventory(HostInventory::new(HOST)).await.unwrap();

    // A CA file that did not sign the certificate is refused.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("ca.pem");
    std::fs::write(&other_ca, OTHER_CA).unwrap();
    let ca =
        peer.provider_with(peer.settings_with(json!({"thumbprint": null, "ca_file": other_ca})));
    let e = ca
        .host_inventory(HostInventory::new(HOST))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
}

/// A self-signed certificate that signed nothing the simulator serves.
const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBfjCCASOgAwIBAgIUXyfneQ6X5ZwZ/K1elV7XBLGNgSQwCgYIKoZIzj0EAwIw
EzERMA8GA1UEAwwIb3RoZXItY2EwIBcNMjYxMjAyMDU1OTM5WhgPMjEyNjExMDgw
NTU5MzlaMBMxETAPBgNVBAMMCG90aGVyLWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAE0I0Eou2YwjhMsVreekPbFxffF92jsEBWwibxY/Kd6gkNGpym1HoBIL4b
arPxk34RU1xajdWLR4Cla7iJ6sB2GqNTMFEwHQYDVR0OBBYEFIWR9G9e3igFyO6f
dQa94bBalxZLMB8GA1UdIwQYMBaAFIWR9G9e3igFyO6fdQa94bBalxZLMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAJFkFAh82CVNl/JpaOuASJYL
CYYjaFmpC74JRQ/a4xa8AiEAhHZKGHoJqsxgawcbhBJ+J7xlNGw8OpA32ff81Zve
MpE=
-----END CERTIFICATE-----
";

#[tokio::test]
async fn a_wrong_password_is_a_permanent_error_that_never_shows_it() {
    let peer = Peer::start(1);
    let path = peer.dir.path().join("wrong");
    std::fs::write(&path, "not-the-Pa55word\n").unwrap();
    let p = peer.provider_with(peer.settings_with(json!({"password_file": path})));
    let e = p
        .host_inventory(HostInventory::new(HOST))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    assert!(!e.is_temporary(), "a refused login is not retried: {e}");
    assert_eq!(e.context_value("vim_fault"), Some("InvalidLogin"));
    let shown = format!("{e} {e:?} {} {p:?}", e.operator_message());
    assert!(!shown.contains("not-the-Pa55word"), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(!shown.contains("vmware_soap_session"), "{shown}");
}

#[tokio::test]
async fn a_session_ended_mid_job_logs_in_again_and_the_job_succeeds() {
    let peer = Peer::start(1);
    let p = peer.provider();
    let (create, target) = args(HOST, "relogin-1", IMAGE);
    let (ctx, _) = job();
    let created = p.create_vm(&ctx, create).await.unwrap();
    assert_eq!(p.logins(), 1);
    let ended = peer.pyvmomi(json!({"cmd": "terminate_others"}));
    assert!(ended["terminated"].as_u64().unwrap() >= 1, "{ended}");
    let mut t = target.clone();
    t.native_id = Some(created.native_id);
    let (ctx, _) = job();
    let stopped = p
        .stop_vm(&ctx, StopVm::new(t.clone()).with_force(true))
        .await
        .unwrap();
    assert!(!stopped.was_stopped);
    assert_eq!(p.logins(), 2, "one new login after the session ended");
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "relogin-1"}));
    assert_eq!(seen["power"], "poweredOff", "{seen}");
    p.delete_vm(&ctx, DeleteVm::new(t)).await.unwrap();
}

#[tokio::test]
async fn an_unknown_template_is_refused_before_anything_is_cloned() {
    let peer = Peer::start(1);
    let p = peer.provider();
    let before = p.host_inventory(HostInventory::new(HOST)).await.unwrap();
    let (create, _) = args(HOST, "ghost-1", "no-such-image");
    let (ctx, lines) = job();
    let e = p.create_vm(&ctx, create).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("no-such-image"), "{e}");
    let after = p.host_inventory(HostInventory::new(HOST)).await.unwrap();
    assert_eq!(before.vms.len(), after.vms.len());
    assert!(lines.tenant().is_empty(), "{:?}", lines.tenant());
}

#[tokio::test]
async fn a_clone_lands_on_the_pinned_host_with_its_size_and_nics_and_moves() {
    let peer = Peer::start(1);
    let p = peer.provider();
    // The template lives on the first host of cluster 0; ask for the other cluster's host.
    let (create, mut t) = args(FAR, "placed-1", IMAGE);
    let create = create.with_networks(vec![NetworkPlan {
        network: "default".into(),
        vlan: None,
    }]);
    let (ctx, lines) = job();
    let created = p.create_vm(&ctx, create).await.unwrap();
    assert_eq!(created.power, PowerState::Running);
    t.native_id = Some(created.native_id.clone());
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "placed-1"}));
    assert_eq!(seen["host"], "DC0_C1_H0", "{seen}");
    assert_eq!(seen["cpus"], 2, "{seen}");
    assert_eq!(seen["memory_mb"], 256, "{seen}");
    assert_eq!(seen["nics"], json!(["VM Network"]), "{seen}");
    assert_eq!(seen["power"], "poweredOn", "{seen}");
    let inv = p.host_inventory(HostInventory::new(FAR)).await.unwrap();
    assert!(
        inv.vms
            .iter()
            .any(|v| v.native_id == created.native_id && v.mark.is_some())
    );
    // Tenants read what happened, never where.
    for line in lines.tenant() {
        for hidden in ["DC0_", "vm-", "host-", "LocalDS", "datastore"] {
            assert!(!line.contains(hidden), "{line}");
        }
    }
    // Migration within the cluster.
    let (ctx, _) = job();
    let e = p
        .migrate_vm(&ctx, MigrateVm::new(t.clone()).with_target_host("nowhere"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let mut t2 = t.clone();
    t2.host = FAR.into();
    let moved = p
        .migrate_vm(&ctx, MigrateVm::new(t2.clone()).with_target_host(OTHER))
        .await
        .unwrap();
    assert_eq!(moved.host, OTHER);
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "placed-1"}));
    assert_eq!(seen["host"], "DC0_C0_H1", "{seen}");
    p.delete_vm(&ctx, DeleteVm::new(t2).with_force(true))
        .await
        .unwrap();
}

#[tokio::test]
async fn names_are_unique_even_where_vcenter_allows_duplicates() {
    let peer = Peer::start(1);
    let p = peer.provider();
    let (create, t) = args(HOST, "dup-1", IMAGE);
    let (ctx, _) = job();
    let first = p.create_vm(&ctx, create).await.unwrap();
    let (again, _) = args(OTHER, "dup-1", IMAGE);
    let e = p.create_vm(&ctx, again).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(!e.message().contains(&first.native_id), "{e}");
    let mut t = t;
    t.native_id = Some(first.native_id);
    p.delete_vm(&ctx, DeleteVm::new(t).with_force(true))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unknown_network_is_refused_naming_the_field_and_leaves_no_clone() {
    let peer = Peer::start(1);
    let p = peer.provider();
    let (create, _) = args(HOST, "nonet-1", IMAGE);
    let create = create
        .with_networks(vec![NetworkPlan {
            network: "nowhere".into(),
            vlan: None,
        }])
        .with_tags(BTreeMap::new());
    let (ctx, _) = job();
    let e = p.create_vm(&ctx, create).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("networks"));
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "nonet-1"}));
    assert_eq!(
        seen["found"], false,
        "the half-made clone is deleted: {seen}"
    );
}

#[tokio::test]
async fn a_failed_task_fails_the_call_with_vcenters_message() {
    let peer = Peer::start(1);
    let p = peer.provider();
    // The simulator cannot create the clone's files under a name holding a path separator: the
    // clone task itself fails (the engine never sends such a name; the provider passes it on).
    let (create, _) = args(HOST, "bad/../../name", IMAGE);
    let (ctx, _) = job();
    let e = p.create_vm(&ctx, create).await.unwrap_err();
    assert!(
        e.context_value("vim_task").is_some(),
        "a task failed: {e:?}"
    );
    assert_eq!(e.context_value("vim_method"), Some("CloneVM_Task"), "{e:?}");
    assert!(e.message().starts_with("vCenter"), "{e}");
    assert!(
        e.context_value("vim_message")
            .is_some_and(|m| !m.is_empty()),
        "{e:?}"
    );
}

#[tokio::test]
async fn shutdown_logs_out_of_vcenter() {
    let peer = Peer::start(1);
    let p = peer.provider();
    p.host_inventory(HostInventory::new(HOST)).await.unwrap();
    p.shutdown().await.unwrap();
    // pyvmomi's own session is the only one left.
    let ended = peer.pyvmomi(json!({"cmd": "terminate_others"}));
    assert_eq!(ended["terminated"], 0, "{ended}");
    // The provider logs in again when it is used after a shutdown.
    p.host_inventory(HostInventory::new(HOST)).await.unwrap();
    assert_eq!(p.logins(), 2);
}

#[tokio::test]
async fn a_nic_on_a_distributed_port_group_is_backed_by_its_switch() {
    let peer = Peer::start(1);
    let p = peer.provider_with(
        peer.settings_with(json!({"networks": {"default": "VM Network", "dv": "DC0_DVPG0"}})),
    );
    let inv = p.host_inventory(HostInventory::new(HOST)).await.unwrap();
    assert!(
        inv.networks.contains(&"dv".to_string()),
        "{:?}",
        inv.networks
    );
    let (create, mut t) = args(HOST, "dvnic-1", IMAGE);
    let create = create.with_networks(vec![
        NetworkPlan {
            network: "dv".into(),
            vlan: None,
        },
        NetworkPlan {
            network: "default".into(),
            vlan: None,
        },
    ]);
    let (ctx, _) = job();
    let created = p.create_vm(&ctx, create).await.unwrap();
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "dvnic-1"}));
    let nics = seen["nics"].as_array().unwrap();
    assert_eq!(nics.len(), 2, "{seen}");
    assert!(
        nics[0].as_str().unwrap().starts_with("dvpg:dvportgroup-"),
        "{seen}"
    );
    assert_eq!(nics[1], "VM Network", "{seen}");
    t.native_id = Some(created.native_id);
    p.delete_vm(&ctx, DeleteVm::new(t).with_force(true))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_console_on_the_simulator_is_a_clear_feature_not_supported() {
    let peer = Peer::start(1);
    let p = peer.provider();
    // Without `console: webmks` the declaration stays off: the engine refuses consoles first.
    assert!(!p.capabilities().console_webmks);
    let (create, mut target) = args(HOST, "console-1", IMAGE);
    let (ctx, _) = job();
    let created = p.create_vm(&ctx, create.with_start(true)).await.unwrap();
    target.native_id = Some(created.native_id.clone());
    // The simulator answers AcquireTicket with MethodNotFound.
    let e = p
        .console(GetConsole::new(target.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert!(!e.is_temporary(), "{e}");
    assert_eq!(
        e.context_value("capability"),
        Some("console_webmks"),
        "{e:?}"
    );
    assert!(e.message().contains("WebMKS"), "{e}");
    assert!(
        !e.message().contains(&created.native_id),
        "tenants see no managed object id: {e}"
    );
    assert!(
        e.operator_message().contains("AcquireTicket"),
        "operators see vCenter's answer: {}",
        e.operator_message()
    );
    // Other console types are refused without asking vCenter.
    let e = p
        .console(GetConsole::new(target.clone()).with_kind(Some(ConsoleKind::Vnc)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert_eq!(e.context_value("capability"), Some("console_vnc"), "{e:?}");
    // A stopped VM has no console; a missing one is NotFound.
    p.stop_vm(&ctx, StopVm::new(target.clone()).with_force(true))
        .await
        .unwrap();
    let e = p
        .console(GetConsole::new(target.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    p.delete_vm(&ctx, DeleteVm::new(target.clone()))
        .await
        .unwrap();
    let e = p.console(GetConsole::new(target)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

/// A cluster target: capacity from the cluster's summary, its ESXi hosts as members, and a create
/// placed by DRS (`PlaceVm`) on one of its hosts; HCP reports the host back from the VM's
/// `runtime.host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_target_lets_vcenter_place_the_vm_and_reports_its_host() {
    use hcp_provider_vsphere::{VsphereCluster, VsphereProvider};
    let peer = Peer::start(1);
    let p = Arc::new(
        VsphereProvider::new("vc", peer.settings_with(json!({})), Peer::hosts())
            .unwrap()
            .with_clusters(vec![
                VsphereCluster::new("cl-0", "zone-a", "DC0_C0"),
                VsphereCluster::new("cl-1", "zone-b", "DC0_C1"),
            ]),
    );
    let targets = p.list_hosts().await.unwrap();
    let cl = targets.iter().find(|t| t.name == "cl-0").expect("listed");
    assert!(cl.is_cluster());
    let mut members = cl.members.clone();
    members.sort();
    assert_eq!(members, ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"]);
    let inv = p.host_inventory(HostInventory::new("cl-0")).await.unwrap();
    let (vcpus, memory) = inv.members.iter().fold((0, 0), |(c, m), h| {
        (c + h.vcpus_total, m + h.memory_mib_total)
    });
    assert!(vcpus > 0 && memory > 0);
    // The summary sums the hosts' bytes and is rounded down once; each member is rounded down
    // on its own, so the summary may exceed the members' MiB by under one MiB a member.
    assert_eq!(
        cl.vcpus_total, vcpus,
        "the cluster's summary is its members' sum"
    );
    let slack = u64::try_from(members.len()).unwrap();
    assert!(
        (memory..memory + slack).contains(&cl.memory_mib_total),
        "the cluster's summary ({} MiB) is its members' sum ({memory} MiB)",
        cl.memory_mib_total
    );
    // The VMs vcsim put in the cluster are listed with their host.
    assert!(!inv.vms.is_empty());
    assert!(
        inv.vms
            .iter()
            .all(|v| v.host.as_ref().is_some_and(|h| members.contains(h)))
    );

    let (create, target) = args("cl-0", "drs-1", IMAGE);
    let (ctx, lines) = job();
    let created = p.create_vm(&ctx, create).await.unwrap();
    let host = created
        .host
        .clone()
        .expect("a cluster create names its host");
    assert!(members.contains(&host), "{host}");
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "drs-1"}));
    assert_eq!(
        seen["host"],
        json!(host),
        "pyvmomi sees the VM where HCP says"
    );
    assert!(
        lines.tenant().iter().all(|l| !l.contains(&host)),
        "tenants never read the host: {:?}",
        lines.tenant()
    );
    let inv = p.host_inventory(HostInventory::new("cl-0")).await.unwrap();
    let vm = inv
        .vms
        .iter()
        .find(|v| v.native_id == created.native_id)
        .expect("the cluster lists the new VM");
    assert_eq!(vm.host.as_deref(), Some(host.as_str()));
    // Day-2 calls find it through the cluster target.
    let target = VmTarget {
        native_id: Some(created.native_id.clone()),
        ..target
    };
    p.delete_vm(
        &OpContext::detached(),
        DeleteVm::new(target).with_force(true),
    )
    .await
    .unwrap();
    p.shutdown().await.unwrap();
}

/// DRS places a cluster create: HCP asks `PlaceVm` (the simulator answers with a random host of
/// the cluster), clones to the host, datastore and pool it names, and reports that host. A create
/// into the cluster that does not hold the template lands there too (before `PlaceVm`, the
/// simulator kept the clone on the template's host, outside the cluster). pyvmomi sees each VM
/// on the host HCP names; tenants never read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drs_places_cluster_creates_on_a_member_host() {
    use hcp_provider_vsphere::{VsphereCluster, VsphereProvider};
    let peer = Peer::start(1);
    let p = Arc::new(
        VsphereProvider::new("vc", peer.settings_with(json!({})), Peer::hosts())
            .unwrap()
            .with_clusters(vec![
                VsphereCluster::new("cl-0", "zone-a", "DC0_C0"),
                VsphereCluster::new("cl-1", "zone-b", "DC0_C1"),
            ]),
    );
    for (target, cluster, name) in [
        ("cl-1", "DC0_C1", "drs-far"),
        ("cl-0", "DC0_C0", "drs-near"),
    ] {
        let members = [0, 1, 2].map(|i| format!("{cluster}_H{i}"));
        let (create, vm_target) = args(target, name, IMAGE);
        let (ctx, lines) = job();
        let created = p.create_vm(&ctx, create).await.unwrap();
        let host = created
            .host
            .clone()
            .expect("a cluster create names its host");
        assert!(
            members.contains(&host),
            "{name} on {host}, not in {cluster}"
        );
        assert!(
            lines
                .operator()
                .iter()
                .any(|l| l.contains(&format!("DRS placed the VM on host `{host}`"))),
            "the job log says where DRS put the VM: {:?}",
            lines.operator()
        );
        let seen = peer.pyvmomi(json!({"cmd": "show", "name": name}));
        assert_eq!(
            seen["host"],
            json!(host),
            "pyvmomi sees {name} where HCP says"
        );
        assert!(
            lines.tenant().iter().all(|l| !l.contains(&host)),
            "tenants never read the host: {:?}",
            lines.tenant()
        );
        let target = VmTarget {
            native_id: Some(created.native_id.clone()),
            ..vm_target
        };
        p.delete_vm(
            &OpContext::detached(),
            DeleteVm::new(target).with_force(true),
        )
        .await
        .unwrap();
    }
    p.shutdown().await.unwrap();
}

/// A member host HCP pinned (a server group's policy per host) wins over DRS: the clone goes to
/// that host of the cluster, pyvmomi sees it there, and a host outside the cluster is refused
/// before anything is cloned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_member_host_is_where_the_cluster_create_goes() {
    use hcp_provider_vsphere::{VsphereCluster, VsphereProvider};
    let peer = Peer::start(1);
    let p = Arc::new(
        VsphereProvider::new("vc", peer.settings_with(json!({})), Peer::hosts())
            .unwrap()
            .with_clusters(vec![VsphereCluster::new("cl-0", "zone-a", "DC0_C0")]),
    );
    for member in ["DC0_C0_H2", "DC0_C0_H1"] {
        let name = format!("pinned-{}", member.to_ascii_lowercase().replace('_', "-"));
        let (create, vm_target) = args("cl-0", &name, IMAGE);
        let (ctx, lines) = job();
        let created = p
            .create_vm(&ctx, create.with_member_host(Some(member.into())))
            .await
            .unwrap();
        assert_eq!(created.host.as_deref(), Some(member));
        assert!(
            lines.operator().iter().all(|l| !l.contains("DRS placed")),
            "DRS is not asked: {:?}",
            lines.operator()
        );
        let seen = peer.pyvmomi(json!({"cmd": "show", "name": name}));
        assert_eq!(
            seen["host"],
            json!(member),
            "pyvmomi sees {name} on {member}"
        );
        let target = VmTarget {
            native_id: Some(created.native_id.clone()),
            ..vm_target
        };
        p.delete_vm(
            &OpContext::detached(),
            DeleteVm::new(target).with_force(true),
        )
        .await
        .unwrap();
    }
    let (create, _) = args("cl-0", "pinned-outside", IMAGE);
    let e = p
        .create_vm(
            &OpContext::detached(),
            create.with_member_host(Some("DC0_C1_H0".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::InvalidSpec, "{e}");
    let seen = peer.pyvmomi(json!({"cmd": "show", "name": "pinned-outside"}));
    assert_eq!(seen["found"], false, "nothing was cloned: {seen}");
    p.shutdown().await.unwrap();
}
