//! Migration over real TCP (`POST /api/hcp/ops/v1/vms/{vmId}:migrate`, development mode, so the
//! caller is an operator): the answer is the operator's job, the ops view of the VM shows its
//! new host, the tenant's views of the VM and of the job show none, refusals name the field.
//! Who may call the route is in `authz_matrix.rs`.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{json_of, start};

const T: &str = "/api/hcp/tenant/v1";
const OPS: &str = "/api/hcp/ops/v1";

async fn wait_job(s: &common::TestServer, job_id: &str) -> Value {
    for _ in 0..800 {
        let j = json_of(
            s.http
                .get(s.at(&format!("{OPS}/jobs/{job_id}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if matches!(
            j["state"].as_str(),
            Some("SUCCEEDED" | "FAILED" | "CANCELLED")
        ) {
            return j;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("job {job_id} did not end");
}

async fn running_vm(s: &common::TestServer, name: &str, zone: &str) -> String {
    let resp = s
        .http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .json(&json!({"name": name, "image": "ubuntu-24.04", "flavor": "small", "zone": zone}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body = json_of(resp).await;
    let job = wait_job(s, body["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    body["vm_id"].as_str().unwrap().to_string()
}

async fn ops_host(s: &common::TestServer, vm: &str) -> String {
    let page = json_of(
        s.http
            .get(s.at(&format!("{OPS}/vms?project=demo")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let v = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == vm)
        .unwrap_or_else(|| panic!("{vm} not in {page}"));
    v["binding"]["host"].as_str().unwrap().to_string()
}

async fn migrate(s: &common::TestServer, vm: &str, body: Value) -> reqwest::Response {
    s.http
        .post(s.at(&format!("{OPS}/vms/{vm}:migrate")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_operator_moves_a_vm_and_tenants_never_see_a_host() {
    let s = start().await;
    let vm = running_vm(&s, "mover", "zone-a").await;
    let from = ops_host(&s, &vm).await;
    let to = if from == "sim-a1" { "sim-a2" } else { "sim-a1" };

    let resp = s
        .http
        .post(s.at(&format!("{OPS}/vms/{vm}:migrate")))
        .header("Idempotency-Key", "move-mover-1")
        .json(&json!({"target_host": to}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let job = json_of(resp).await;
    assert_eq!(job["operation"], "migrate_vm", "{job}");
    assert_eq!(job["action"]["action"], "migrate", "{job}");
    assert_eq!(job["action"]["target_host"], to, "{job}");
    assert_eq!(
        job["host"],
        from.as_str(),
        "the job runs from the VM's host: {job}"
    );
    assert_eq!(
        location,
        format!("{OPS}/jobs/{}", job["id"].as_str().unwrap())
    );
    let job_id = job["id"].as_str().unwrap().to_string();

    // The same key replays the job.
    let again = s
        .http
        .post(s.at(&format!("{OPS}/vms/{vm}:migrate")))
        .header("Idempotency-Key", "move-mover-1")
        .json(&json!({"target_host": to}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotency-replayed"], "true");
    assert_eq!(json_of(again).await["id"], job_id.as_str());

    let done = wait_job(&s, &job_id).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(ops_host(&s, &vm).await, to);

    // The tenant's views: the job says `migrate`, never where; the VM names no host.
    let tjob = json_of(
        s.http
            .get(s.at(&format!("{T}/jobs/{job_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(tjob["action"]["action"], "migrate", "{tjob}");
    let tvm = json_of(
        s.http
            .get(s.at(&format!("{T}/projects/demo/vms/{vm}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for (what, doc) in [("job", &tjob), ("vm", &tvm)] {
        let text = doc.to_string();
        for host in ["sim-a1", "sim-a2", "target_host", "binding"] {
            assert!(
                !text.contains(host),
                "the tenant's {what} shows `{host}`: {text}"
            );
        }
    }

    // The audit stream records the move for operators.
    let events = json_of(
        s.http
            .get(s.at(&format!("{OPS}/events?vm_id={vm}&limit=1000")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let moved: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "vm_migrated")
        .collect();
    assert_eq!(moved.len(), 1, "{events}");
    assert_eq!(moved[0]["from_host"], from.as_str());
    assert_eq!(moved[0]["to_host"], to);

    // `{}` lets HCP pick: the zone's other host, i.e. back where it came from.
    let resp = migrate(&s, &vm, json!({})).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job = json_of(resp).await;
    assert_eq!(job["action"]["target_host"], from.as_str(), "{job}");
    wait_job(&s, job["id"].as_str().unwrap()).await;
    assert_eq!(ops_host(&s, &vm).await, from);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn refusals_name_the_field_and_start_no_job() {
    let s = start().await;
    let vm = running_vm(&s, "stayer", "zone-a").await;
    let here = ops_host(&s, &vm).await;
    for (body, status, code, field) in [
        (
            json!({"target_host": here}),
            400,
            "INVALID_SPEC",
            Some("target_host"),
        ),
        (
            json!({"target_host": "sim-b1"}),
            400,
            "INVALID_SPEC",
            Some("target_host"),
        ),
        (
            json!({"target_host": "nowhere"}),
            400,
            "INVALID_SPEC",
            Some("target_host"),
        ),
        (
            json!({"target_host": ""}),
            400,
            "INVALID_SPEC",
            Some("target_host"),
        ),
        (json!({"host": "sim-a2"}), 400, "INVALID_SPEC", Some("host")),
        (json!({"allow_cold": "yes"}), 400, "INVALID_SPEC", None),
    ] {
        let resp = migrate(&s, &vm, body.clone()).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let p = json_of(resp).await;
        assert_eq!(p["code"], code, "{body}: {p}");
        if let Some(f) = field {
            assert_eq!(p["field"], f, "{body}: {p}");
        }
    }
    // A stopped VM cannot move live; it moves cold only when the caller allows it.
    let resp = s
        .http
        .post(s.at(&format!("{T}/projects/demo/vms/{vm}:stop?force=true")))
        .send()
        .await
        .unwrap();
    let stop = json_of(resp).await;
    wait_job(&s, stop["job_id"].as_str().unwrap()).await;
    let resp = migrate(&s, &vm, json!({})).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let p = json_of(resp).await;
    assert_eq!(p["code"], "VM_STATE_CONFLICT", "{p}");
    assert!(p["detail"].to_string().contains("allow_cold"), "{p}");
    assert_eq!(ops_host(&s, &vm).await, here);
    let resp = migrate(&s, &vm, json!({"allow_cold": true})).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job = json_of(resp).await;
    assert_eq!(job["action"]["cold"], true, "{job}");
    let done = wait_job(&s, job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_ne!(ops_host(&s, &vm).await, here, "moved while stopped");
    // The tenant's job says the move was cold, never where.
    let tjob = json_of(
        s.http
            .get(s.at(&format!("{T}/jobs/{}", job["id"].as_str().unwrap())))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(tjob["action"]["cold"], true, "{tjob}");
    assert!(!tjob.to_string().contains("sim-a"), "{tjob}");
    // An unknown VM.
    let resp = migrate(&s, "vm-unknown", json!({})).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // zone-b has one host: nowhere to go.
    let lone = running_vm(&s, "lone", "zone-b").await;
    let resp = migrate(&s, &lone, json!({})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(resp).await["field"], "target_host");
    assert_eq!(ops_host(&s, &lone).await, "sim-b1");
    s.stop().await.unwrap();
}
