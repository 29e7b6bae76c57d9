//! `hcp server-group create|list|show|delete` and `hcp vm create --server-group`, embedded and
//! against a running `hcp serve`: the same commands, the same answers. The demo's zone-a has two
//! hosts, so a hard anti-affinity group takes two VMs there and refuses the third before any job.

mod common;

use common::server::Server;
use common::{CONFLICT, Hcp, INVALID_INPUT, NOT_FOUND};

fn round_trip(hcp: &Hcp) {
    let group = hcp.json(&[
        "server-group",
        "create",
        "--project",
        "demo",
        "--name",
        "web",
        "--policy",
        "anti-affinity",
    ]);
    let id = group["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sg-"), "{group}");
    assert_eq!(group["policy"], "anti-affinity", "{group}");
    assert_eq!(group["strength"], "hard", "hard is the default: {group}");

    let taken = hcp.run(&[
        "--output",
        "json",
        "server-group",
        "create",
        "--project",
        "demo",
        "--name",
        "web",
        "--policy",
        "affinity",
    ]);
    assert_eq!(taken.code, CONFLICT, "{taken:?}");
    assert_eq!(taken.error()["field"], "name", "{taken:?}");
    let bad = hcp.run(&[
        "--output",
        "json",
        "server-group",
        "create",
        "--project",
        "demo",
        "--name",
        "Bad Name",
        "--policy",
        "affinity",
    ]);
    assert_eq!(bad.code, INVALID_INPUT, "{bad:?}");
    assert_eq!(bad.error()["field"], "name", "{bad:?}");

    let a = hcp.create(
        "web-1",
        &["--zone", "zone-a", "--server-group", &id, "--wait"],
    );
    let b = hcp.create(
        "web-2",
        &["--zone", "zone-a", "--server-group", &id, "--wait"],
    );
    let shown = hcp.json(&["vm", "show", &a, "--project", "demo"]);
    assert_eq!(shown["spec"]["server_group"], id.as_str(), "{shown}");

    let jobs = hcp.jobs().len();
    let third = hcp.run(&[
        "--output",
        "json",
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "web-3",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
        "--zone",
        "zone-a",
        "--server-group",
        &id,
    ]);
    assert_eq!(third.code, CONFLICT, "{third:?}");
    let e = third.error();
    assert_eq!(e["code"], "SERVER_GROUP_POLICY", "{third:?}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("hard anti-affinity")
            || third.stderr.contains("hard anti-affinity"),
        "{third:?}"
    );
    assert_eq!(hcp.jobs().len(), jobs, "no job was created");

    let shown = hcp.json(&["server-group", "show", &id, "--project", "demo"]);
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(shown["members"], serde_json::json!(want), "{shown}");
    let listed = hcp.json(&["server-group", "list", "--project", "demo"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let table = hcp.run(&["server-group", "list", "--project", "demo"]);
    assert!(
        table.stdout.contains("web") && table.stdout.contains("hard anti-affinity"),
        "{table:?}"
    );

    let busy = hcp.run(&[
        "--output",
        "json",
        "server-group",
        "delete",
        &id,
        "--project",
        "demo",
    ]);
    assert_eq!(busy.code, CONFLICT, "{busy:?}");
    assert_eq!(busy.error()["code"], "SERVER_GROUP_NOT_EMPTY", "{busy:?}");
    for vm in [&a, &b] {
        hcp.json(&["vm", "delete", vm, "--project", "demo", "--force", "--wait"]);
    }
    hcp.json(&["server-group", "delete", &id, "--project", "demo"]);
    let gone = hcp.run(&[
        "--output",
        "json",
        "server-group",
        "show",
        &id,
        "--project",
        "demo",
    ]);
    assert_eq!(gone.code, NOT_FOUND, "{gone:?}");
}

#[test]
fn embedded_server_group_round_trip() {
    round_trip(&Hcp::new());
}

#[test]
fn remote_server_group_round_trip() {
    let server = Server::demo();
    round_trip(&Hcp::new().with_url(&server.url));
}
