//! Two commands at once on one environment.

mod common;

use common::Hcp;

#[test]
fn two_creates_started_at_the_same_time_both_succeed() {
    // The example hosts file gives creates a latency, so the two commands overlap.
    let hcp = Hcp::new().with_config(common::example_config());
    let spawn = |name: &str| {
        hcp.command()
            .args([
                "--output",
                "json",
                "vm",
                "create",
                "--project",
                "team-a",
                "--name",
                name,
                "--image",
                "debian-12",
                "--flavor",
                "small",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn hcp")
    };
    let (a, b) = (spawn("left"), spawn("right"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut ids = Vec::new();
    for out in [a, b] {
        let run = common::Run::from(out);
        assert_eq!(run.code, 0, "{run:?}");
        ids.push(run.json()["vm_id"].as_str().unwrap().to_string());
    }
    let vms = hcp.vms("team-a");
    let mut names: Vec<&str> = vms.iter().map(|v| v["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["left", "right"]);
    for v in &vms {
        assert!(ids.contains(&v["id"].as_str().unwrap().to_string()));
        assert_eq!(v["state"], "ACTIVE");
    }
    assert_eq!(hcp.jobs().len(), 2, "both jobs are in the jobs file");
}

#[test]
fn readers_work_while_a_create_runs() {
    let hcp = Hcp::new().with_config(common::example_config());
    let mut create = hcp
        .command()
        .args([
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
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read-only commands take no lock: they answer whatever the create's progress.
    for _ in 0..3 {
        let vms = hcp.vms("team-a");
        assert!(vms.len() <= 1, "{vms:?}");
        hcp.json(&["host", "list"]);
    }
    assert!(create.wait().unwrap().success());
    assert_eq!(hcp.vms("team-a").len(), 1);
}
