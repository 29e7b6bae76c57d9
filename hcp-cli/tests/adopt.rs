//! `hcp host inventory`, `hcp vm adopt` and `hcp vm release`, embedded and against a running
//! `hcp serve` (development mode: the caller is an operator): the same commands, the same
//! answers. The simulator's state file is seeded with a running VM HCP did not make, and the
//! tests compare that VM in the file before and after, so a round trip that changed more than
//! HCP's mark fails.

mod common;

use std::path::Path;

use common::server::ServeBuilder;
use common::{CONFLICT, Hcp, INVALID_INPUT, NOT_FOUND};
use serde_json::{Value, json};

const STRAY: &str = "sim-900";

/// Writes the demo's hosts to `path` with one VM without HCP's mark on sim-a1.
fn seed_stray(path: &Path) {
    let host = |name: &str, zone: &str, vcpus: u32, memory: u64| json!({"name": name, "zone": zone, "vcpus": vcpus, "memory_mib": memory, "down": false, "vms": {}});
    let mut hosts = json!({
        "sim-a1": host("sim-a1", "zone-a", 32, 131072),
        "sim-a2": host("sim-a2", "zone-a", 32, 131072),
        "sim-b1": host("sim-b1", "zone-b", 16, 65536),
    });
    hosts["sim-a1"]["vms"][STRAY] = json!({
        "native_id": STRAY,
        "name": "legacy-web",
        "power": "RUNNING",
        "resources": {"vcpus": 2, "memory_mib": 2048, "disk_gib": 20},
        "image": "unknown",
        "mark": null,
        "tags": {"owner": "web-team"},
        "has_user_data": false,
        "snapshots": [],
    });
    let state = json!({"hosts": hosts, "next_id": 1000});
    std::fs::write(path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
}

fn stray_on_disk(path: &Path) -> Value {
    let state: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    state["hosts"]["sim-a1"]["vms"][STRAY].clone()
}

/// The stray as `hcp host inventory --output json` lists it.
fn stray_in_inventory(hcp: &Hcp) -> Value {
    let inventory = hcp.json(&["host", "inventory"]);
    let found: Vec<&Value> = inventory
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["native_id"] == STRAY)
        .collect();
    assert_eq!(found.len(), 1, "{inventory}");
    found[0].clone()
}

/// Adopts the stray into `demo` and waits; embedded mode keeps the hypervisor's name and tags
/// (it rebuilds VMs from the marks on every command), a service takes the ones given.
fn adopt(hcp: &Hcp, remote: bool) -> Value {
    let mut args = vec![
        "vm",
        "adopt",
        "legacy-web",
        "--host",
        "sim-a1",
        "--project",
        "demo",
    ];
    if remote {
        args.extend(["--name", "web-legacy", "--tag", "team=web"]);
    }
    args.extend(["--idempotency-key", "adopt-legacy-web", "--wait"]);
    hcp.json(&args)
}

fn round_trip(hcp: &Hcp, state_file: &Path, remote: bool) {
    let before = stray_on_disk(state_file);
    assert_eq!(before["mark"], Value::Null);

    let stray = stray_in_inventory(hcp);
    assert_eq!(stray["host"], "sim-a1", "{stray}");
    assert_eq!(stray["name"], "legacy-web", "{stray}");
    assert_eq!(stray["power"], "RUNNING", "{stray}");
    assert_eq!(stray["adoptable"], true, "{stray}");
    assert_eq!(stray["vm_id"], Value::Null, "{stray}");
    let table = hcp.run(&["host", "inventory"]);
    assert_eq!(table.code, 0, "{table:?}");
    let line = table
        .stdout
        .lines()
        .find(|l| l.contains(STRAY))
        .unwrap_or_else(|| panic!("{STRAY} in {table:?}"));
    assert!(
        line.contains("legacy-web") && line.contains("yes"),
        "{line}"
    );
    assert!(table.stdout.contains("ADOPTABLE"), "{table:?}");

    // Refused before any job, naming what is wrong.
    let unknown = hcp.run(&[
        "--output",
        "json",
        "vm",
        "adopt",
        "no-such-vm",
        "--host",
        "sim-a1",
        "--project",
        "demo",
    ]);
    assert_eq!(unknown.code, NOT_FOUND, "{unknown:?}");
    let bad = hcp.run(&[
        "--output",
        "json",
        "vm",
        "adopt",
        STRAY,
        "--host",
        "sim-a1",
        "--project",
        "Not-A-Project",
    ]);
    assert_eq!(bad.code, INVALID_INPUT, "{bad:?}");
    assert_eq!(bad.error()["field"], "project", "{bad:?}");
    if remote {
        let bad_name = hcp.run(&[
            "--output",
            "json",
            "vm",
            "adopt",
            STRAY,
            "--host",
            "sim-a1",
            "--project",
            "demo",
            "--name",
            "Web Legacy",
        ]);
        assert_eq!(bad_name.code, INVALID_INPUT, "{bad_name:?}");
        assert_eq!(bad_name.error()["field"], "name", "{bad_name:?}");
    }
    assert_eq!(stray_on_disk(state_file), before, "refusals change nothing");

    if !remote {
        for extra in [["--name", "web-legacy"], ["--tag", "team=web"]] {
            let mut args = vec![
                "--output",
                "json",
                "vm",
                "adopt",
                STRAY,
                "--host",
                "sim-a1",
                "--project",
                "demo",
            ];
            args.extend(extra);
            let refused = hcp.run(&args);
            assert_eq!(refused.code, INVALID_INPUT, "{refused:?}");
            let field = if extra[0] == "--name" { "name" } else { "tags" };
            assert_eq!(refused.error()["field"], field, "{refused:?}");
            assert!(
                refused.error()["message"]
                    .as_str()
                    .unwrap()
                    .contains("--url"),
                "{refused:?}"
            );
        }
    }
    let adopted = adopt(hcp, remote);
    assert_eq!(adopted["job"]["state"], "SUCCEEDED", "{adopted}");
    assert_eq!(adopted["job"]["operation"], "adopt_vm", "{adopted}");
    let vm_id = adopted["vm_id"].as_str().unwrap().to_string();
    let replay = adopt(hcp, remote);
    assert_eq!(replay["replayed"], true, "{replay}");
    assert_eq!(replay["job_id"], adopted["job_id"], "{replay}");

    // The tenant's view: in the project, its observed size and power, no host.
    let vm = hcp.json(&["vm", "show", &vm_id, "--project", "demo"]);
    assert_eq!(vm["state"], "ACTIVE", "{vm}");
    let (name, tag) = if remote {
        ("web-legacy", ("team", "web"))
    } else {
        ("legacy-web", ("owner", "web-team"))
    };
    assert_eq!(vm["name"], name, "{vm}");
    assert_eq!(vm["power"], "RUNNING", "{vm}");
    assert_eq!(vm["resources"]["vcpus"], 2, "{vm}");
    assert_eq!(vm["spec"]["tags"][tag.0], tag.1, "{vm}");
    assert!(!vm.to_string().contains("sim-a1") && !vm.to_string().contains(STRAY));
    let on_disk = stray_on_disk(state_file);
    assert_eq!(on_disk["mark"]["vm_id"], vm_id.as_str(), "{on_disk}");
    let mut unmarked = on_disk.clone();
    unmarked["mark"] = Value::Null;
    assert_eq!(unmarked, before, "adoption changed only the mark");

    let again = hcp.run(&[
        "--output",
        "json",
        "vm",
        "adopt",
        STRAY,
        "--host",
        "sim-a1",
        "--project",
        "demo",
    ]);
    assert_eq!(again.code, CONFLICT, "{again:?}");

    let released = hcp.json(&["vm", "release", &vm_id, "--project", "demo", "--wait"]);
    assert_eq!(released["job"]["state"], "SUCCEEDED", "{released}");
    assert_eq!(released["job"]["operation"], "release_vm", "{released}");
    let gone = hcp.run(&[
        "--output",
        "json",
        "vm",
        "show",
        &vm_id,
        "--project",
        "demo",
    ]);
    assert_eq!(gone.code, NOT_FOUND, "{gone:?}");
    assert_eq!(
        stray_on_disk(state_file),
        before,
        "the round trip left the VM as it was"
    );
    let twice = hcp.run(&["--output", "json", "vm", "release", &vm_id]);
    assert_eq!(twice.code, NOT_FOUND, "{twice:?}");
}

#[test]
fn embedded_adopt_release_round_trip() {
    let hcp = Hcp::new();
    let state_file = hcp.path("sim.json");
    seed_stray(&state_file);
    round_trip(&hcp, &state_file, false);
}

#[test]
fn remote_adopt_release_round_trip() {
    // `hcp serve` keeps the simulator in memory unless its hosts file names a state file.
    let builder = ServeBuilder::new();
    let state_file = builder.dir().join("stray-sim.json");
    seed_stray(&state_file);
    let hosts = hcp_provider_sim::DEMO_HOSTS_FILE.replacen(
        "      seed: 42\n",
        &format!(
            "      seed: 42\n      state_file: {}\n",
            state_file.display()
        ),
        1,
    );
    assert_ne!(hosts, hcp_provider_sim::DEMO_HOSTS_FILE);
    let server = builder.hosts(&hosts).start();
    round_trip(&Hcp::new().with_url(&server.url), &state_file, true);
}
