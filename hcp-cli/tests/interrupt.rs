//! Ctrl-C while waiting cancels the job; nothing is left half-created.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{Hcp, INTERRUPTED};

#[test]
fn ctrl_c_while_waiting_cancels_the_job() {
    let hcp = Hcp::new();
    let slow = hcp.path("slow.yaml");
    let example = std::fs::read_to_string(common::example_config()).unwrap();
    assert!(
        example.contains("create_vm: 150ms"),
        "the example hosts file changed; update this test"
    );
    std::fs::write(&slow, example.replace("create_vm: 150ms", "create_vm: 10m")).unwrap();
    let hcp = hcp.with_config(&slow);

    let mut child = hcp
        .command()
        .args([
            "--output",
            "json",
            "vm",
            "create",
            "--project",
            "team-a",
            "--name",
            "slow",
            "--image",
            "debian-12",
            "--flavor",
            "small",
            "--wait",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the job is running: its first log line is on stderr.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "hcp ended before its job started: {seen}"
        );
        seen.push_str(&line);
        if line.contains("attempt 1/") {
            break;
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(INTERRUPTED), "{seen}{rest}");
    assert!(rest.contains("cancelling the job"), "{rest}");
    assert!(rest.contains("\"code\":\"INTERRUPTED\""), "{rest}");
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["job"]["state"], "CANCELLED");

    assert!(hcp.vms("team-a").is_empty(), "nothing half-created");
    let job = hcp.json(&["job", "show", outcome["job_id"].as_str().unwrap()]);
    assert_eq!(job["state"], "CANCELLED", "the cancelled job is kept");
}
