//! Idempotency keys across invocations: each command is a new process with a new engine.

mod common;

use common::{CONFLICT, Hcp};

const CREATE: [&str; 10] = [
    "vm",
    "create",
    "--project",
    "demo",
    "--name",
    "web-1",
    "--image",
    "ubuntu-24.04",
    "--flavor",
    "small",
];

fn create_with_key(hcp: &Hcp, key: &str, extra: &[&str]) -> common::Run {
    let mut args = vec!["--output", "json"];
    args.extend_from_slice(&CREATE);
    args.extend_from_slice(&["--idempotency-key", key]);
    args.extend_from_slice(extra);
    hcp.run(&args)
}

#[test]
fn the_same_request_replays_across_invocations() {
    let hcp = Hcp::new();
    let first = create_with_key(&hcp, "order-17", &[]);
    assert_eq!(first.code, 0, "{first:?}");
    let first = first.json();
    assert_eq!(first["replayed"], false);

    let again = create_with_key(&hcp, "order-17", &["--wait"]);
    assert_eq!(again.code, 0, "{again:?}");
    let again = again.json();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["vm_id"], first["vm_id"]);
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(again["job"]["state"], "SUCCEEDED");
    assert_eq!(again["vm"]["id"], first["vm_id"]);

    // No second job ran, so the provider was not called again.
    let jobs = hcp.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["idempotency_key"], "order-17");
    assert_eq!(hcp.vms("demo").len(), 1);
    let sim: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hcp.path("sim.json")).unwrap()).unwrap();
    let on_hosts: usize = sim["hosts"]
        .as_object()
        .unwrap()
        .values()
        .map(|h| h["vms"].as_object().unwrap().len())
        .sum();
    assert_eq!(on_hosts, 1, "one VM on the simulated hosts");

    let table = hcp.run(&[&CREATE[..], &["--idempotency-key", "order-17"]].concat());
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("replayed"), "{}", table.stdout);
}

#[test]
fn a_different_request_with_the_same_key_is_a_conflict() {
    let hcp = Hcp::new();
    assert_eq!(create_with_key(&hcp, "k-1", &[]).code, 0);
    let other = create_with_key(&hcp, "k-1", &["--zone", "zone-b"]);
    assert_eq!(other.code, CONFLICT, "{other:?}");
    let e = other.error();
    assert_eq!(e["code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(e["field"], "idempotency_key");
    let words = hcp.run(
        &[
            &CREATE[..],
            &["--zone", "zone-b", "--idempotency-key", "k-1"],
        ]
        .concat(),
    );
    assert_eq!(words.code, CONFLICT);
    assert!(
        words.stderr.contains("IDEMPOTENCY_KEY_REUSED"),
        "{}",
        words.stderr
    );
    assert_eq!(hcp.vms("demo").len(), 1, "nothing new was created");
    assert_eq!(hcp.jobs().len(), 1);

    // Without a key, the same name is refused as taken.
    let taken = hcp.run(&[&["--output", "json"][..], &CREATE[..]].concat());
    assert_eq!(taken.code, CONFLICT, "{taken:?}");
    assert_eq!(taken.error()["field"], "name");
}

#[test]
fn keys_are_per_operation() {
    let hcp = Hcp::new();
    let created = create_with_key(&hcp, "same", &[]).json();
    let id = created["vm_id"].as_str().unwrap();
    let stopped = hcp.json(&["vm", "stop", id, "--idempotency-key", "same"]);
    assert_eq!(
        stopped["replayed"], false,
        "a stop is not a replay of the create"
    );
    let again = hcp.json(&["vm", "stop", id, "--idempotency-key", "same"]);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["job_id"], stopped["job_id"]);
}
