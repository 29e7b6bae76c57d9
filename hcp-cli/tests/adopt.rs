//! `hcp vm release ID` and `hcp vm adopt NATIVE_ID --host H --project P`, embedded and against a
//! running `hcp serve` (development mode: the caller is an operator): a VM HCP made is released
//! (it stays on its host, without HCP's mark), then adopted back under a new id.
//! `hcp host inventory` shows where it is and whether it can be adopted.

mod common;

use common::server::Server;
use common::{CONFLICT, Hcp, NOT_FOUND};
use serde_json::Value;

/// The inventory's entry for the VM named `name`.
fn found(hcp: &Hcp, name: &str) -> Value {
    let inv = hcp.json(&["host", "inventory"]);
    inv.as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {inv}"))
        .clone()
}

fn round_trip(hcp: &Hcp) {
    let id = hcp.create("keeper", &["--zone", "zone-a", "--wait"]);
    let before = found(hcp, "keeper");
    assert_eq!(before["vm_id"], id.as_str(), "{before}");
    assert_eq!(before["adoptable"], false, "HCP's own VM: {before}");
    let native = before["native_id"].as_str().unwrap().to_string();
    let host = before["host"].as_str().unwrap().to_string();

    let released = hcp.json(&["vm", "release", &id, "--wait"]);
    assert_eq!(released["job"]["state"], "SUCCEEDED", "{released}");
    assert_eq!(released["job"]["operation"], "release_vm", "{released}");
    let gone = hcp.run(&["--output", "json", "vm", "show", &id, "--project", "demo"]);
    assert_eq!(gone.code, NOT_FOUND, "{gone:?}");

    let adopted = hcp.json(&[
        "vm",
        "adopt",
        &native,
        "--host",
        &host,
        "--project",
        "demo",
        "--name",
        "kept",
        "--tag",
        "team=ops",
        "--wait",
    ]);
    assert_eq!(adopted["job"]["state"], "SUCCEEDED", "{adopted}");
    assert_eq!(adopted["job"]["operation"], "adopt_vm", "{adopted}");
    assert_eq!(adopted["vm"]["name"], "kept", "{adopted}");
    assert_eq!(adopted["vm"]["state"], "ACTIVE", "{adopted}");
    assert_eq!(adopted["vm"]["spec"]["tags"]["team"], "ops", "{adopted}");
    let new_id = adopted["vm_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);

    // Taken again: refused, nothing changes.
    let again = hcp.run(&[
        "--output",
        "json",
        "vm",
        "adopt",
        &native,
        "--host",
        &host,
        "--project",
        "demo",
    ]);
    assert_eq!(again.code, CONFLICT, "{again:?}");
    let missing = hcp.run(&[
        "--output",
        "json",
        "vm",
        "adopt",
        "no-such-vm",
        "--host",
        &host,
        "--project",
        "demo",
    ]);
    assert_eq!(missing.code, NOT_FOUND, "{missing:?}");

    let done = hcp.json(&["vm", "release", "kept", "--project", "demo", "--wait"]);
    assert_eq!(done["job"]["state"], "SUCCEEDED", "{done}");
}

#[test]
fn embedded_release_and_adopt_round_trip() {
    round_trip(&Hcp::new());
}

#[test]
fn remote_release_and_adopt_round_trip() {
    let server = Server::demo();
    round_trip(&Hcp::new().with_url(&server.url));
}
