//! Day-2 operations over real TCP: deleting running VMs, refusals by state, snapshots.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{json_of, read_sse_to_end, start};

const T: &str = "/api/hcp/tenant/v1";

/// Follows a job's log stream to its end; returns the stream's text and the job.
async fn finish(s: &common::TestServer, job_id: &str) -> (String, Value) {
    let text = read_sse_to_end(&s.http, &s.at(&format!("{T}/jobs/{job_id}/logs"))).await;
    let job = json_of(
        s.http
            .get(s.at(&format!("{T}/jobs/{job_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    (text, job)
}

/// Creates a running VM and waits for it; returns its id.
async fn running_vm(s: &common::TestServer, name: &str) -> String {
    let resp = s
        .http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .json(&json!({"name": name, "image": "ubuntu-24.04", "flavor": "small", "zone": "zone-a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body = json_of(resp).await;
    let (_, job) = finish(s, body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    body["vm_id"].as_str().unwrap().to_string()
}

async fn post(s: &common::TestServer, path: &str) -> reqwest::Response {
    s.http.post(s.at(path)).send().await.unwrap()
}

#[tokio::test]
async fn deleting_a_running_vm_shuts_it_down_then_deletes_it() {
    let s = start().await;
    for (name, query, line) in [
        ("graceful-1", "", "the guest shut down"),
        ("forced-1", "?force=true", "powered the VM off (force)"),
    ] {
        let id = running_vm(&s, name).await;
        let vm = format!("{T}/projects/demo/vms/{id}");
        let shown = json_of(s.http.get(s.at(&vm)).send().await.unwrap()).await;
        assert_eq!(shown["power"], "RUNNING", "{shown}");
        let resp = s
            .http
            .delete(s.at(&format!("{vm}{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{name}");
        let (log, job) = finish(&s, json_of(resp).await["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "SUCCEEDED", "{name}: {job}");
        assert_eq!(job["operation"], "delete_vm");
        assert!(log.contains(line), "{name}: the log says `{line}`: {log}");
        let gone = s.http.get(s.at(&vm)).send().await.unwrap();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND, "{name} is gone");
    }
}

#[tokio::test]
async fn a_request_the_vm_state_rules_out_is_refused_before_any_job() {
    let s = start().await;
    let id = running_vm(&s, "state-1").await;
    let vm = format!("{T}/projects/demo/vms/{id}");
    let resp = post(&s, &format!("{vm}:stop")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let (_, job) = finish(&s, json_of(resp).await["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED");

    let jobs_before = json_of(
        s.http
            .get(s.at(&format!("{T}/projects/demo/jobs")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let resp = post(&s, &format!("{vm}:reboot")).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let problem = json_of(resp).await;
    assert_eq!(problem["code"], "VM_STATE_CONFLICT", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("stopped"),
        "the reason is given: {problem}"
    );
    assert!(problem.get("job_id").is_none(), "{problem}");
    let jobs_after = json_of(
        s.http
            .get(s.at(&format!("{T}/projects/demo/jobs")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jobs_before, jobs_after, "no job was made");

    // A reboot queued behind a start is accepted: the state compared is the one wanted.
    let start_resp = post(&s, &format!("{vm}:start")).await;
    assert_eq!(start_resp.status(), StatusCode::ACCEPTED);
    let reboot = post(&s, &format!("{vm}:reboot")).await;
    assert_eq!(reboot.status(), StatusCode::ACCEPTED);
    let (_, job) = finish(&s, json_of(reboot).await["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
}

async fn snapshots_of(s: &common::TestServer, vm: &str) -> Vec<Value> {
    let resp = s
        .http
        .get(s.at(&format!("{vm}/snapshots")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    json_of(resp).await["items"].as_array().unwrap().clone()
}

async fn take(s: &common::TestServer, vm: &str, body: Value) -> reqwest::Response {
    s.http
        .post(s.at(&format!("{vm}/snapshots")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn snapshots_are_taken_listed_reverted_and_deleted_with_hcp_ids() {
    let s = start().await;
    let id = running_vm(&s, "snappy").await;
    let vm = format!("{T}/projects/demo/vms/{id}");
    assert!(snapshots_of(&s, &vm).await.is_empty());

    // Names are validated, naming the field; server-owned fields are refused.
    for (body, field) in [
        (json!({"name": "Not A Label"}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "ok", "memory": true}), "memory"),
        (json!({}), "name"),
    ] {
        let r = take(&s, &vm, body.clone()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let p = json_of(r).await;
        assert!(p.to_string().contains(field), "{body} names {field}: {p}");
    }

    let r = take(&s, &vm, json!({"name": "before-upgrade"})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let accepted = json_of(r).await;
    let snap = accepted["snapshot_id"].as_str().unwrap().to_string();
    assert!(snap.starts_with("snap-"), "{accepted}");
    // A second one of the same name is refused before a job, even while the first is queued.
    let again = take(&s, &vm, json!({"name": "before-upgrade"})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(again).await["field"], "name");
    let (_, job) = finish(&s, accepted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["operation"], "snapshot_vm");

    let listed = snapshots_of(&s, &vm).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], snap.as_str());
    assert_eq!(listed[0]["name"], "before-upgrade");
    assert_eq!(
        listed[0]["memory"], true,
        "a running VM's snapshot holds memory"
    );
    let text = serde_json::to_string(&listed).unwrap();
    for leak in ["sim-a", "sim-b", "@", "native"] {
        assert!(!text.contains(leak), "the tenant sees {leak}: {text}");
    }

    // A disk-only snapshot (taken while stopped) reverts to a stopped VM and says so.
    let stop = post(&s, &format!("{vm}:stop")).await;
    finish(&s, json_of(stop).await["job_id"].as_str().unwrap()).await;
    let r = take(&s, &vm, json!({"name": "cold"})).await;
    let cold = json_of(r).await;
    finish(&s, cold["job_id"].as_str().unwrap()).await;
    let start_resp = post(&s, &format!("{vm}:start")).await;
    finish(&s, json_of(start_resp).await["job_id"].as_str().unwrap()).await;

    let r = post(
        &s,
        &format!(
            "{vm}/snapshots/{}:revert",
            cold["snapshot_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let reverted = json_of(r).await;
    assert_eq!(reverted["memory_state_kept"], false, "{reverted}");
    let (log, job) = finish(&s, reverted["job_id"].as_str().unwrap()).await;
    assert_eq!(job["operation"], "revert_snapshot");
    assert!(log.contains("disks only"), "{log}");
    let shown = json_of(s.http.get(s.at(&vm)).send().await.unwrap()).await;
    assert_eq!(shown["power"], "STOPPED", "{shown}");

    let r = post(&s, &format!("{vm}/snapshots/{snap}:revert")).await;
    let reverted = json_of(r).await;
    assert_eq!(reverted["memory_state_kept"], true, "{reverted}");
    finish(&s, reverted["job_id"].as_str().unwrap()).await;
    let shown = json_of(s.http.get(s.at(&vm)).send().await.unwrap()).await;
    assert_eq!(shown["power"], "RUNNING", "{shown}");

    // Unknown snapshots are 404 naming the field; another project's VM is 404.
    let r = post(&s, &format!("{vm}/snapshots/snap-0000:revert")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(r).await["field"], "snapshot_id");
    let r = s
        .http
        .get(s.at(&format!("{T}/projects/other/vms/{id}/snapshots")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = s
        .http
        .delete(s.at(&format!("{vm}/snapshots/{snap}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (_, job) = finish(&s, json_of(r).await["job_id"].as_str().unwrap()).await;
    assert_eq!(job["operation"], "delete_snapshot");
    assert_eq!(job["state"], "SUCCEEDED");
    let left: Vec<String> = snapshots_of(&s, &vm)
        .await
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["cold"]);
}

#[tokio::test]
async fn snapshot_limit_and_zones_without_snapshots_are_refused_before_a_job() {
    let s = common::start_with(common::Setup {
        hosts_yaml: Some(format!(
            "{}\nengine:\n  max_snapshots_per_vm: 2\n",
            include_str!("../../hcp-providers/sim/src/demo.yaml")
        )),
        ..Default::default()
    })
    .await;
    let id = running_vm(&s, "limited").await;
    let vm = format!("{T}/projects/demo/vms/{id}");
    for name in ["one", "two"] {
        let r = take(&s, &vm, json!({ "name": name })).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{name}");
    }
    let r = take(&s, &vm, json!({"name": "three"})).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a limit, not a request budget"
    );
    let p = json_of(r).await;
    assert_eq!(p["code"], "QUOTA_EXCEEDED", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("max_snapshots_per_vm"),
        "{p}"
    );

    // zone-b declares no snapshots: refused with the capability named.
    let r = s
        .http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .json(&json!({"name": "b-1", "image": "ubuntu-24.04", "flavor": "small", "zone": "zone-b"}))
        .send()
        .await
        .unwrap();
    let body = json_of(r).await;
    finish(&s, body["job_id"].as_str().unwrap()).await;
    let vm_b = format!("{T}/projects/demo/vms/{}", body["vm_id"].as_str().unwrap());
    let r = take(&s, &vm_b, json!({"name": "nope"})).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let p = json_of(r).await;
    assert_eq!(p["code"], "FEATURE_NOT_SUPPORTED", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("snapshot"), "{p}");
}

#[tokio::test]
async fn plan_says_per_field_what_a_resize_takes_and_changes_nothing() {
    let s = start().await;
    let id = running_vm(&s, "planned").await;
    let vm = format!("{T}/projects/demo/vms/{id}");
    let before = json_of(s.http.get(s.at(&vm)).send().await.unwrap()).await;
    let plan = |body: Value| {
        let url = s.at(&format!("{vm}:plan"));
        let http = s.http.clone();
        async move { http.post(url).json(&body).send().await.unwrap() }
    };

    // The simulator resizes a running VM live; a disk shrink is data-destructive.
    let r = plan(json!({"flavor": "medium", "disk_gib": 5})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let p = json_of(r).await;
    let fields: Vec<(String, String)> = p["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["field"].as_str().unwrap().to_string(),
                f["impact"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("vcpus".to_string(), "hot".to_string()),
            ("memory_mib".to_string(), "hot".to_string()),
            ("disk_gib".to_string(), "data_destructive".to_string()),
        ],
        "{p}"
    );
    assert_eq!(p["fields"][0]["from"], 1);
    assert_eq!(p["fields"][0]["to"], 2);
    assert!(
        p["fields"][2]["reason"]
            .as_str()
            .unwrap()
            .contains("shrink"),
        "{p}"
    );

    // Nothing changes: an empty plan. Bad input names the field.
    let p = json_of(plan(json!({"vcpus": 1})).await).await;
    assert_eq!(p["fields"], json!([]), "{p}");
    let r = plan(json!({"flavor": "huge"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(r).await["field"], "flavor");
    let r = plan(json!({"vcpus": 0})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(r).await["field"], "vcpus");
    let r = plan(json!({"vcpus": 2, "host": "sim-a1"})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let after = json_of(s.http.get(s.at(&vm)).send().await.unwrap()).await;
    assert_eq!(before, after, "a plan changes nothing");
}

#[tokio::test]
async fn resize_applies_only_what_is_allowed_and_updates_the_vm() {
    let s = common::start_with(common::Setup {
        hosts_yaml: Some(
            include_str!("../../hcp-providers/sim/src/demo.yaml").replace(
                "  - name: demo\n",
                "  - name: demo\n    quota: {max_vcpus: 4}\n",
            ),
        ),
        ..Default::default()
    })
    .await;
    let id = running_vm(&s, "grown").await;
    let vm = format!("{T}/projects/demo/vms/{id}");
    let resize = |body: Value, key: Option<&'static str>| {
        let url = s.at(&format!("{vm}:resize"));
        let http = s.http.clone();
        async move {
            let mut rb = http.post(url).json(&body);
            if let Some(k) = key {
                rb = rb.header("Idempotency-Key", k);
            }
            rb.send().await.unwrap()
        }
    };

    // The simulator resizes a running VM live: `hot`, the default, is enough.
    let r = resize(
        json!({"vcpus": 2, "memory_mib": 2048, "disk_gib": 20}),
        Some("k1"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.headers().get("location").is_some());
    let body = json_of(r).await;
    let (log, job) = finish(&s, body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["operation"], "resize_vm", "{job}");
    assert_eq!(job["action"]["action"], "resize", "{job}");
    assert_eq!(job["action"]["to"]["vcpus"], 2, "{job}");
    assert!(log.contains("resized to 2 vCPUs"), "{log}");
    let shown = json_of(s.http.get(s.at(&vm)).send().await.unwrap()).await;
    assert_eq!(shown["resources"]["vcpus"], 2, "{shown}");
    assert_eq!(shown["resources"]["disk_gib"], 20, "{shown}");
    assert_eq!(shown["spec"]["memory_mib"], 2048, "{shown}");
    assert_eq!(shown["power"], "RUNNING", "{shown}");
    // The same key replays the first answer and starts nothing.
    let r = resize(
        json!({"vcpus": 2, "memory_mib": 2048, "disk_gib": 20}),
        Some("k1"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["idempotency-replayed"], "true");
    assert_eq!(json_of(r).await["job_id"], body["job_id"]);

    // A disk shrink is refused whatever is allowed, naming the field.
    let r = resize(
        json!({"disk_gib": 10, "allow": ["hot", "reboot", "power_off", "data_destructive"]}),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let p = json_of(r).await;
    assert_eq!(p["code"], "RESIZE_NOT_ALLOWED", "{p}");
    assert_eq!(p["field"], "disk_gib", "{p}");

    // Beyond the project's quota (4 vCPUs): refused before a job.
    let r = resize(json!({"vcpus": 5}), None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(json_of(r).await["code"], "QUOTA_EXCEEDED");

    // Bad input names the field; nothing to change is a bad request.
    let r = resize(json!({"vcpus": 3, "allow": ["sometimes"]}), None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = resize(json!({"vcpus": 3, "host": "sim-a1"}), None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = resize(json!({"vcpus": 2}), None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(r).await["field"], "resize");
    let after = json_of(s.http.get(s.at(&vm)).send().await.unwrap()).await;
    assert_eq!(
        after["resources"], shown["resources"],
        "refusals change nothing"
    );
}
