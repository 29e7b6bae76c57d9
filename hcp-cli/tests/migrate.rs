//! `hcp vm migrate ID [--to HOST] [--allow-cold] [--wait]`, embedded and against a running
//! `hcp serve` (development mode: the caller is an operator): the same commands, the same
//! answers. Which host holds the VM is read from `hcp host list`, the operators' view.

mod common;

use common::server::Server;
use common::{CONFLICT, Hcp, INVALID_INPUT, NOT_FOUND};

/// Returns each zone-a host's VM count.
fn counts(hcp: &Hcp) -> (u64, u64) {
    let hosts = hcp.json(&["host", "list"]);
    let count = |name: &str| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {hosts}"))["vm_count"]
            .as_u64()
            .unwrap()
    };
    (count("sim-a1"), count("sim-a2"))
}

fn round_trip(hcp: &Hcp) {
    let before = counts(hcp);
    let id = hcp.create("mover", &["--zone", "zone-a", "--wait"]);
    let after = counts(hcp);
    let (from, to) = if after.0 > before.0 {
        ("sim-a1", "sim-a2")
    } else {
        assert!(after.1 > before.1, "{before:?} {after:?}");
        ("sim-a2", "sim-a1")
    };

    let same = hcp.run(&[
        "--output", "json", "vm", "migrate", &id, "--to", from, "--wait",
    ]);
    assert_eq!(same.code, INVALID_INPUT, "{same:?}");
    assert_eq!(same.error()["field"], "target_host", "{same:?}");
    let other_zone = hcp.run(&["--output", "json", "vm", "migrate", &id, "--to", "sim-b1"]);
    assert_eq!(other_zone.code, INVALID_INPUT, "{other_zone:?}");
    assert!(
        other_zone.error()["message"]
            .as_str()
            .unwrap()
            .contains("zone"),
        "{other_zone:?}"
    );

    let moved = hcp.json(&[
        "vm",
        "migrate",
        &id,
        "--project",
        "demo",
        "--to",
        to,
        "--idempotency-key",
        "move-1",
        "--wait",
    ]);
    assert_eq!(moved["job"]["state"], "SUCCEEDED", "{moved}");
    assert_eq!(moved["job"]["operation"], "migrate_vm", "{moved}");
    assert_eq!(
        counts(hcp),
        before_plus(before, to),
        "the VM now counts on {to}"
    );
    // The tenant's view of the VM in the answer names no host.
    assert!(!moved["vm"].to_string().contains("sim-a"), "{moved}");
    let replay = hcp.json(&[
        "vm",
        "migrate",
        &id,
        "--to",
        to,
        "--idempotency-key",
        "move-1",
        "--wait",
    ]);
    assert_eq!(replay["replayed"], true, "{replay}");
    assert_eq!(replay["job_id"], moved["job_id"], "{replay}");

    // Without --to, HCP picks the zone's other host: back where it came from.
    let back = hcp.json(&["vm", "migrate", &id, "--wait"]);
    assert_eq!(back["job"]["state"], "SUCCEEDED", "{back}");
    assert_eq!(counts(hcp), after);

    // A stopped VM cannot move live; with --allow-cold it moves and stays stopped.
    hcp.json(&["vm", "stop", &id, "--force", "--wait"]);
    let stopped = hcp.run(&["--output", "json", "vm", "migrate", &id]);
    assert_eq!(stopped.code, CONFLICT, "{stopped:?}");
    assert_eq!(stopped.error()["code"], "VM_STATE_CONFLICT", "{stopped:?}");
    let cold = hcp.json(&["vm", "migrate", &id, "--allow-cold", "--wait"]);
    assert_eq!(cold["job"]["state"], "SUCCEEDED", "{cold}");
    assert_eq!(cold["job"]["action"]["cold"], true, "{cold}");

    let unknown = hcp.run(&["--output", "json", "vm", "migrate", "vm-nope"]);
    assert_eq!(unknown.code, NOT_FOUND, "{unknown:?}");
}

fn before_plus(before: (u64, u64), to: &str) -> (u64, u64) {
    if to == "sim-a1" {
        (before.0 + 1, before.1)
    } else {
        (before.0, before.1 + 1)
    }
}

#[test]
fn embedded_migrate_round_trip() {
    round_trip(&Hcp::new());
}

#[test]
fn remote_migrate_round_trip() {
    let server = Server::demo();
    round_trip(&Hcp::new().with_url(&server.url));
}
