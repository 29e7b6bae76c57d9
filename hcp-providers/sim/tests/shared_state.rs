//! Several simulators share one state file: each keeps the state it parsed and parses again only
//! when the file changed, so a VM another process (or another simulator in this one) created,
//! changed or removed is seen on the next call, as is a file rewritten by hand.

use std::path::Path;
use std::time::Duration;

use hcp_core::{
    CreateVm, HcpMark, HostInventory, OpContext, PowerState, ProjectId, Provider, Resources, VmId,
};
use hcp_provider_sim::{SimHost, SimProvider, SimSettings, SimState, SimVm};

fn sim(path: &Path) -> SimProvider {
    let settings = SimSettings {
        state_file: Some(path.to_path_buf()),
        ..Default::default()
    };
    SimProvider::new(
        "sim",
        settings,
        vec![
            SimHost::new("h1", "z", 64, 65536),
            SimHost::new("h2", "z", 64, 65536),
        ],
    )
    .unwrap()
}

fn size() -> Resources {
    Resources {
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 5,
    }
}

fn create(name: &str) -> CreateVm {
    let mark = HcpMark::new(VmId::generate(), ProjectId::new("demo"));
    CreateVm::new(mark, "h1", name, "ubuntu-24.04", size())
}

/// The VMs of `host` as `p` reports them: (name, power).
async fn inventory(p: &SimProvider, host: &str) -> Vec<(String, PowerState)> {
    let mut vms: Vec<_> = p
        .host_inventory(HostInventory::new(host))
        .await
        .unwrap()
        .vms
        .into_iter()
        .map(|v| (v.name, v.power))
        .collect();
    vms.sort_by(|a, b| a.0.cmp(&b.0));
    vms
}

#[tokio::test]
async fn a_second_simulator_sees_what_the_first_changed_after_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.json");
    let (a, b) = (sim(&path), sim(&path));
    let ctx = OpContext::detached();
    a.create_vm(&ctx, create("one")).await.unwrap();
    // Both have read the file now, and keep what they parsed.
    assert_eq!(inventory(&b, "h1").await.len(), 1);
    assert_eq!(inventory(&a, "h1").await.len(), 1);

    let two = a.create_vm(&ctx, create("two")).await.unwrap();
    assert_eq!(
        inventory(&b, "h1").await,
        [
            ("one".to_string(), PowerState::Running),
            ("two".to_string(), PowerState::Running)
        ],
        "b sees the VM a created after b read the file"
    );
    // A change that keeps the file's length ("stopped" and "running" are as long).
    a.set_power(&two.native_id, PowerState::Stopped).unwrap();
    assert_eq!(inventory(&b, "h1").await[1].1, PowerState::Stopped);
    // b's own write starts from a's latest state, not from what b parsed before.
    b.create_vm(&ctx, create("three")).await.unwrap();
    assert_eq!(inventory(&a, "h1").await.len(), 3);
    assert_eq!(inventory(&b, "h1").await.len(), 3);
    assert!(a.remove_vm(&two.native_id).unwrap());
    assert_eq!(inventory(&b, "h1").await.len(), 2);
    // Once the file's time is old enough to trust, a change is still seen.
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(inventory(&b, "h1").await.len(), 2);
    a.create_vm(&ctx, create("four")).await.unwrap();
    assert_eq!(inventory(&b, "h1").await.len(), 3);
    assert_eq!(a.state().unwrap(), b.state().unwrap());
}

/// Rewrites the state file in place (same inode), as a hand edit or a tool ignoring the lock does.
fn rewrite_in_place(path: &Path, state: &SimState) {
    std::fs::write(path, serde_json::to_vec_pretty(state).unwrap()).unwrap();
}

/// Replaces the state file by a new one, as the simulator's own writers do.
fn replace(path: &Path, state: &SimState) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_vm_written_into_the_file_from_outside_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.json");
    let p = sim(&path);
    assert!(inventory(&p, "h2").await.is_empty());

    for (round, write) in [rewrite_in_place as fn(&Path, &SimState), replace]
        .into_iter()
        .enumerate()
    {
        for wait in [Duration::ZERO, Duration::from_millis(120)] {
            // With no wait the file's time is too recent to trust; after 120 ms it is trusted
            // and only its stamp is checked.
            tokio::time::sleep(wait).await;
            let before = inventory(&p, "h2").await;
            let mut state = p.state().unwrap();
            let mut vm = SimVm::new(
                format!("outside-{round}-{}", wait.as_millis()),
                PowerState::Running,
                size(),
                None,
            );
            state.next_id += 1;
            vm.native_id = format!("sim-{}", state.next_id);
            let id = vm.native_id.clone();
            state
                .hosts
                .get_mut("h2")
                .unwrap()
                .vms
                .insert(id.clone(), Box::new(vm));
            write(&path, &state);
            let after = inventory(&p, "h2").await;
            assert_eq!(after.len(), before.len() + 1, "round {round}, {wait:?}");

            // Same length, same inode for the in-place writer: only the content differs.
            tokio::time::sleep(wait).await;
            let _ = inventory(&p, "h2").await;
            let vm = state.hosts.get_mut("h2").unwrap().vms.get_mut(&id).unwrap();
            vm.power = PowerState::Stopped;
            write(&path, &state);
            let power = inventory(&p, "h2")
                .await
                .into_iter()
                .find(|(n, _)| n.starts_with(&format!("outside-{round}-{}", wait.as_millis())))
                .unwrap()
                .1;
            assert_eq!(power, PowerState::Stopped, "round {round}, {wait:?}");
            // And the simulator's next write keeps the outside VM.
            let ctx = OpContext::detached();
            p.create_vm(
                &ctx,
                CreateVm::new(
                    HcpMark::new(VmId::generate(), ProjectId::new("demo")),
                    "h2",
                    format!("inside-{round}-{}", wait.as_millis()),
                    "ubuntu-24.04",
                    size(),
                ),
            )
            .await
            .unwrap();
            assert_eq!(inventory(&p, "h2").await.len(), before.len() + 2);
        }
    }
}

#[tokio::test]
async fn a_broken_file_is_refused_and_a_fixed_one_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.json");
    let p = sim(&path);
    let good = std::fs::read(&path).unwrap();
    assert!(inventory(&p, "h1").await.is_empty());
    std::fs::write(&path, b"{ not json").unwrap();
    let e = p
        .host_inventory(HostInventory::new("h1"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not valid"), "{e}");
    std::fs::write(&path, good).unwrap();
    assert!(inventory(&p, "h1").await.is_empty());
}

#[tokio::test]
async fn the_index_follows_creates_deletes_migrations_and_reverts() {
    // Names, marks and capacity come from the index; every path that changes them keeps it right.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.json");
    for p in [
        sim(&path),
        SimProvider::new(
            "mem",
            SimSettings::default(),
            vec![
                SimHost::new("h1", "z", 64, 65536),
                SimHost::new("h2", "z", 64, 65536),
            ],
        )
        .unwrap(),
    ] {
        let ctx = OpContext::detached();
        let args = create("dup");
        let first = p.create_vm(&ctx, args.clone()).await.unwrap();
        // A retried create returns the same VM; another create with the name is refused.
        assert_eq!(
            p.create_vm(&ctx, args).await.unwrap().native_id,
            first.native_id
        );
        let e = p.create_vm(&ctx, create("dup")).await.unwrap_err();
        assert_eq!(e.kind(), hcp_core::ErrorKind::Conflict, "{e}");
        // Deleting frees the name.
        let target = hcp_core::VmTarget {
            vm_id: p.state().unwrap().hosts["h1"].vms[&first.native_id]
                .mark
                .clone()
                .unwrap()
                .vm_id,
            name: "dup".into(),
            host: "h1".into(),
            // Found through the mark.
            native_id: None,
        };
        p.delete_vm(&ctx, hcp_core::DeleteVm::new(target).with_force(true))
            .await
            .unwrap();
        p.create_vm(&ctx, create("dup")).await.unwrap();
        // Capacity: 64 vCPUs on h1, one used; 63 more fit, 64 do not.
        let big = |n: u32, name: &str| {
            let mut c = create(name);
            c.resources.vcpus = n;
            c
        };
        assert!(p.create_vm(&ctx, big(64, "too-big")).await.is_err());
        p.create_vm(&ctx, big(63, "fits")).await.unwrap();
        assert!(p.create_vm(&ctx, big(1, "full")).await.is_err());
    }
}
