//! `hcp job show/list/watch` find the jobs of earlier commands.

mod common;

use common::{CONFLICT, Hcp, JOB_FAILED, NOT_FOUND};
use serde_json::Value;

#[test]
fn jobs_of_earlier_commands_can_be_shown_listed_and_watched() {
    let hcp = Hcp::new();
    let created = hcp.json(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "a",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
    ]);
    let job_id = created["job_id"].as_str().unwrap();
    let vm_id = created["vm_id"].as_str().unwrap();
    hcp.json(&["vm", "stop", vm_id]);

    let job = hcp.json(&["job", "show", job_id]);
    assert_eq!(job["id"], job_id);
    assert_eq!(job["state"], "SUCCEEDED");
    assert_eq!(job["operation"], "create_vm");
    assert_eq!(job["vm_id"], vm_id);
    assert_eq!(job["principal"], "tester");
    assert!(
        job.get("host").is_none() && job.get("provider").is_none(),
        "tenant view: {job}"
    );
    assert_eq!(
        hcp.json(&["job", "show", job_id, "--project", "demo"])["id"],
        job_id
    );

    let all = hcp.jobs();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["operation"], "stop_vm");
    assert_eq!(all[1]["id"], job_id);
    let only_create = hcp.json(&[
        "job",
        "list",
        "--vm",
        vm_id,
        "--state",
        "succeeded",
        "--limit",
        "1",
    ]);
    assert_eq!(only_create.as_array().unwrap().len(), 1);
    assert!(
        hcp.json(&["job", "list", "--state", "failed"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let watch = hcp.run(&["--output", "json", "job", "watch", job_id]);
    assert_eq!(watch.code, 0, "{watch:?}");
    let events: Vec<Value> = watch
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    let (end, logs) = events.split_last().unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["job"]["state"], "SUCCEEDED");
    assert!(logs.iter().all(|e| e["type"] == "log"), "{events:?}");
    assert!(
        logs.iter()
            .any(|e| e["message"].as_str().unwrap().contains("succeeded")),
        "{events:?}"
    );
    let seqs: Vec<u64> = logs.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {seqs:?}"
    );

    let text = hcp.run(&["job", "watch", job_id]);
    assert_eq!(text.code, 0, "{text:?}");
    let last = text.stdout.lines().last().unwrap();
    assert_eq!(last, format!("{job_id} create_vm SUCCEEDED"));
    assert!(
        text.stdout.lines().count() > 1,
        "log lines come first: {}",
        text.stdout
    );

    let table = hcp.run(&["job", "list"]);
    assert_eq!(
        table.stdout.lines().count(),
        3,
        "a header and two jobs: {}",
        table.stdout
    );
}

#[test]
fn a_failed_job_is_kept_and_watch_exits_job_failed() {
    // A simulator whose every VM operation fails, without retries: the create job runs and fails.
    let failing = format!(
        "{}engine:\n  retry: {{max_attempts: 1}}\n",
        common::server::hosts_file("{failure_rate: 1.0}")
    );
    let hcp = Hcp::new();
    let path = hcp.path("failing.yaml");
    std::fs::write(&path, failing).unwrap();
    let hcp = hcp.with_config(&path);
    let failed = hcp.run(&[
        "--output",
        "json",
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "doomed",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
    ]);
    assert_eq!(failed.code, JOB_FAILED, "{failed:?}");
    let job_id = failed.json()["job_id"].as_str().unwrap().to_string();

    let job = hcp.json(&["job", "show", &job_id]);
    assert_eq!(job["state"], "FAILED");
    assert_eq!(job["error"]["code"], "PROVIDER_UNAVAILABLE");
    let watch = hcp.run(&["job", "watch", &job_id]);
    assert_eq!(watch.code, JOB_FAILED, "{watch:?}");
    assert!(
        watch.stdout.contains("FAILED") && watch.stdout.contains("injected fault"),
        "{}",
        watch.stdout
    );
    let listed = hcp.json(&["job", "list", "--state", "failed"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);
}

#[test]
fn job_cancel_refuses_ended_and_unknown_jobs() {
    let hcp = Hcp::new();
    let created = hcp.json(&[
        "vm",
        "create",
        "--project",
        "demo",
        "--name",
        "done",
        "--image",
        "ubuntu-24.04",
        "--flavor",
        "small",
    ]);
    let job_id = created["job_id"].as_str().unwrap();
    let ended = hcp.run(&["--output", "json", "job", "cancel", job_id]);
    assert_eq!(ended.code, CONFLICT, "{ended:?}");
    let e = ended.error();
    assert_eq!(e["code"], "CONFLICT");
    assert!(
        e["message"].as_str().unwrap().contains("already ended"),
        "{e}"
    );
    let unknown = hcp.run(&["job", "cancel", "job-0000"]);
    assert_eq!(unknown.code, NOT_FOUND, "{unknown:?}");
    assert_eq!(
        hcp.json(&["job", "show", job_id])["state"],
        "SUCCEEDED",
        "the job is unchanged"
    );
}
