//! `hcp vm resize`, embedded and against a running `hcp serve`: the same commands, the same
//! answers.

mod common;

use common::server::Server;
use common::{CONFLICT, Hcp, INVALID_INPUT};

fn resize(hcp: &Hcp) {
    let id = hcp.create("resized", &["--zone", "zone-a", "--wait"]);
    let done = hcp.json(&[
        "vm",
        "resize",
        &id,
        "--project",
        "demo",
        "--vcpus",
        "2",
        "--memory-mib",
        "2048",
        "--disk-gib",
        "20",
        "--allow",
        "hot,reboot",
        "--wait",
    ]);
    assert_eq!(done["job"]["operation"], "resize_vm", "{done}");
    assert_eq!(done["job"]["state"], "SUCCEEDED", "{done}");
    let vm = hcp.json(&["vm", "show", &id, "--project", "demo"]);
    assert_eq!(vm["resources"]["vcpus"], 2, "{vm}");
    assert_eq!(vm["resources"]["memory_mib"], 2048, "{vm}");
    assert_eq!(vm["resources"]["disk_gib"], 20, "{vm}");

    // A flavor: the simulator applies it live, so the default `--allow hot` is enough.
    let done = hcp.json(&[
        "vm",
        "resize",
        &id,
        "--project",
        "demo",
        "--flavor",
        "medium",
        "--wait",
    ]);
    assert_eq!(done["job"]["state"], "SUCCEEDED", "{done}");
    let vm = hcp.json(&["vm", "show", &id, "--project", "demo"]);
    assert_eq!(vm["resources"]["disk_gib"], 40, "{vm}");

    // A disk never shrinks: refused before any job, naming the field.
    let shrink = hcp.run(&[
        "--output",
        "json",
        "vm",
        "resize",
        &id,
        "--project",
        "demo",
        "--disk-gib",
        "10",
        "--allow",
        "hot,reboot,power_off",
    ]);
    assert_eq!(shrink.code, CONFLICT, "{shrink:?}");
    assert_eq!(shrink.error()["code"], "RESIZE_NOT_ALLOWED", "{shrink:?}");
    assert_eq!(shrink.error()["field"], "disk_gib", "{shrink:?}");

    let bad = hcp.run(&[
        "vm",
        "resize",
        &id,
        "--project",
        "demo",
        "--vcpus",
        "4",
        "--allow",
        "sometimes",
    ]);
    assert_eq!(bad.code, INVALID_INPUT, "{bad:?}");
}

#[test]
fn embedded_resize() {
    resize(&Hcp::new());
}

#[test]
fn remote_resize() {
    let server = Server::demo();
    resize(&Hcp::new().with_url(&server.url));
}
