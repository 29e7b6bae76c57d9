//! `POST /api/hcp/tenant/v1/projects/{projectId}/jobs/{jobId}:cancel`: a pending job ends
//! `CANCELLED` at once (200), a running one is asked to stop (202, then `CANCELLED`), an ended
//! one is a conflict, another project's is not found; the same through `hcp_client`.

mod common;

use std::time::Duration;

use common::Setup;
use hcp_core::{JobId, JobState, VmSpec};
use serde_json::{Value, json};

const T: &str = "/api/hcp/tenant/v1";
/// A guard against hanging, not a measurement.
const LIMIT: Duration = Duration::from_secs(30);

/// The simulator with creates that take ten minutes, and two projects.
fn slow_hosts() -> String {
    "providers:\n  - name: lab\n    kind: sim\n    settings: {op_latency: {create_vm: 10m}}\n    \
     hosts:\n      - {name: lab-1, zone: east}\nzones:\n  - name: east\ncatalog:\n  images: \
     [{name: ubuntu-24.04, min_disk_gib: 5}]\n  flavors: [{name: small, vcpus: 1, memory_mib: \
     1024, disk_gib: 10}]\nprojects:\n  - name: demo\n  - name: other\n"
        .to_string()
}

async fn job_state(s: &common::TestServer, job: &str) -> String {
    let v: Value = s
        .http
        .get(s.at(&format!("{T}/jobs/{job}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["state"].as_str().unwrap().to_string()
}

async fn wait_for_state(s: &common::TestServer, job: &str, state: &str) {
    let wait = async {
        while job_state(s, job).await != state {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(LIMIT, wait)
        .await
        .unwrap_or_else(|_| panic!("job {job} never became {state}"));
}

async fn cancel(s: &common::TestServer, project: &str, job: &str) -> reqwest::Response {
    s.http
        .post(s.at(&format!("{T}/projects/{project}/jobs/{job}:cancel")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn pending_and_running_jobs_are_cancelled_ended_ones_conflict() {
    let s = common::start_with(Setup {
        hosts_yaml: Some(slow_hosts()),
        ..Default::default()
    })
    .await;
    let created: Value = s
        .http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .json(&json!({"name": "slow", "image": "ubuntu-24.04", "flavor": "small"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let create_job = created["job_id"].as_str().unwrap().to_string();
    let vm = created["vm_id"].as_str().unwrap().to_string();
    wait_for_state(&s, &create_job, "RUNNING").await;

    // A second job on the same VM waits for the first: cancelling it ends it at once.
    let stop: Value = s
        .http
        .post(s.at(&format!("{T}/projects/demo/vms/{vm}:stop")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stop_job = stop["job_id"].as_str().unwrap().to_string();
    assert_eq!(job_state(&s, &stop_job).await, "PENDING");
    let resp = cancel(&s, "demo", &stop_job).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["state"], "CANCELLED", "{body}");
    assert_eq!(body["action"]["action"], "stop", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled by"),
        "{body}"
    );

    // Another project's job does not exist for this caller's project.
    let resp = cancel(&s, "other", &create_job).await;
    assert_eq!(resp.status(), 404);
    let resp = cancel(&s, "demo", "job-nope").await;
    assert_eq!(resp.status(), 404);
    let resp = cancel(&s, "nope", &create_job).await;
    assert_eq!(resp.status(), 404);

    // The running create is asked to stop: 202 with the job's URL, then CANCELLED.
    let resp = cancel(&s, "demo", &create_job).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.headers()["location"].to_str().unwrap(),
        format!("{T}/jobs/{create_job}")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], create_job.as_str());
    let ended = s
        .client
        .wait_job(&JobId::new(&create_job), Some(LIMIT))
        .await
        .unwrap();
    assert_eq!(ended.state, JobState::Cancelled);

    // An ended job cannot be cancelled.
    let resp = cancel(&s, "demo", &create_job).await;
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "CONFLICT");
    assert!(
        body["detail"].as_str().unwrap().contains("already ended"),
        "{body}"
    );
    // An unknown verb on a job is not a route.
    let resp = s
        .http
        .post(s.at(&format!("{T}/projects/demo/jobs/{create_job}:start")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn the_client_cancels_a_job() {
    let s = common::start_with(Setup {
        hosts_yaml: Some(slow_hosts()),
        ..Default::default()
    })
    .await;
    let accepted = s
        .client
        .create_vm(
            "demo",
            &VmSpec::new("slow-client", "ubuntu-24.04", "small"),
            None,
        )
        .await
        .unwrap();
    let job = s.client.cancel_job("demo", &accepted.job_id).await.unwrap();
    assert_eq!(job.id, accepted.job_id);
    assert!(
        matches!(job.state, JobState::Cancelled | JobState::Running),
        "{:?}",
        job.state
    );
    let ended = s
        .client
        .wait_job(&accepted.job_id, Some(LIMIT))
        .await
        .unwrap();
    assert_eq!(ended.state, JobState::Cancelled);
    let e = s
        .client
        .cancel_job("demo", &accepted.job_id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::Conflict);
    let e = s
        .client
        .cancel_job("other", &accepted.job_id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::NotFound);
}
