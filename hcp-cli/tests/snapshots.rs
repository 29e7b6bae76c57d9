//! `hcp vm snapshot create|list|revert|delete`, embedded and against a running `hcp serve`:
//! the same commands, the same answers.

mod common;

use common::server::Server;
use common::{CONFLICT, Hcp, INVALID_INPUT, NOT_FOUND};

fn round_trip(hcp: &Hcp) {
    let id = hcp.create("snappy", &["--zone", "zone-a", "--wait"]);
    let empty = hcp.json(&["vm", "snapshot", "list", &id, "--project", "demo"]);
    assert_eq!(empty, serde_json::json!([]));

    let bad = hcp.run(&[
        "--output",
        "json",
        "vm",
        "snapshot",
        "create",
        &id,
        "--project",
        "demo",
        "--name",
        "Bad Name",
    ]);
    assert_eq!(bad.code, INVALID_INPUT, "{bad:?}");
    assert_eq!(bad.error()["field"], "name", "{bad:?}");

    let taken = hcp.json(&[
        "vm",
        "snapshot",
        "create",
        &id,
        "--project",
        "demo",
        "--name",
        "warm",
        "--wait",
    ]);
    assert_eq!(taken["job"]["state"], "SUCCEEDED", "{taken}");
    assert_eq!(taken["job"]["operation"], "snapshot_vm");
    let warm = taken["snapshot_id"].as_str().unwrap().to_string();
    assert!(warm.starts_with("snap-"), "{taken}");

    let again = hcp.run(&[
        "--output",
        "json",
        "vm",
        "snapshot",
        "create",
        &id,
        "--project",
        "demo",
        "--name",
        "warm",
    ]);
    assert_eq!(again.code, CONFLICT, "{again:?}");
    assert_eq!(again.error()["field"], "name");

    let listed = hcp.json(&["vm", "snapshot", "list", &id, "--project", "demo"]);
    assert_eq!(listed[0]["id"], warm.as_str(), "{listed}");
    assert_eq!(listed[0]["memory"], true, "{listed}");
    let table = hcp.run(&["vm", "snapshot", "list", &id, "--project", "demo"]);
    assert!(
        table.stdout.contains("warm") && table.stdout.contains(&warm),
        "{table:?}"
    );

    hcp.json(&["vm", "stop", &id, "--project", "demo", "--wait"]);
    let reverted = hcp.json(&[
        "vm",
        "snapshot",
        "revert",
        &id,
        "--project",
        "demo",
        "--snapshot",
        &warm,
        "--wait",
    ]);
    assert_eq!(
        reverted["job"]["operation"], "revert_snapshot",
        "{reverted}"
    );
    assert_eq!(reverted["job"]["state"], "SUCCEEDED", "{reverted}");
    assert_eq!(reverted["memory_state_kept"], true, "{reverted}");
    assert_eq!(
        reverted["vm"]["power"], "RUNNING",
        "memory state resumes the VM"
    );

    let unknown = hcp.run(&[
        "--output",
        "json",
        "vm",
        "snapshot",
        "revert",
        &id,
        "--project",
        "demo",
        "--snapshot",
        "snap-nope",
    ]);
    assert_eq!(unknown.code, NOT_FOUND, "{unknown:?}");
    assert_eq!(unknown.error()["field"], "snapshot_id", "{unknown:?}");

    let deleted = hcp.json(&[
        "vm",
        "snapshot",
        "delete",
        &id,
        "--project",
        "demo",
        "--snapshot",
        &warm,
        "--wait",
    ]);
    assert_eq!(deleted["job"]["operation"], "delete_snapshot", "{deleted}");
    assert_eq!(deleted["job"]["state"], "SUCCEEDED", "{deleted}");
    let left = hcp.json(&["vm", "snapshot", "list", &id, "--project", "demo"]);
    assert_eq!(left, serde_json::json!([]));
}

#[test]
fn embedded_snapshot_round_trip() {
    round_trip(&Hcp::new());
}

#[test]
fn remote_snapshot_round_trip() {
    let server = Server::demo();
    round_trip(&Hcp::new().with_url(&server.url));
}

fn plan(hcp: &Hcp) {
    let id = hcp.create("planned", &["--wait"]);
    let p = hcp.json(&[
        "vm",
        "plan",
        &id,
        "--project",
        "demo",
        "--flavor",
        "medium",
        "--disk-gib",
        "5",
    ]);
    let got: Vec<(&str, &str)> = p
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["field"].as_str().unwrap(), f["impact"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("vcpus", "hot"),
            ("memory_mib", "hot"),
            ("disk_gib", "data_destructive")
        ],
        "{p}"
    );
    let bad = hcp.run(&[
        "--output",
        "json",
        "vm",
        "plan",
        &id,
        "--project",
        "demo",
        "--flavor",
        "huge",
    ]);
    assert_eq!(bad.code, INVALID_INPUT, "{bad:?}");
    assert_eq!(bad.error()["field"], "flavor");
    let table = hcp.run(&["vm", "plan", &id, "--project", "demo", "--vcpus", "4"]);
    assert!(
        table.stdout.contains("TAKES") && table.stdout.contains("hot"),
        "{table:?}"
    );
}

#[test]
fn embedded_plan() {
    plan(&Hcp::new());
}

#[test]
fn remote_plan() {
    let server = Server::demo();
    plan(&Hcp::new().with_url(&server.url));
}
