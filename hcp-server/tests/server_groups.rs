//! Server groups over real TCP, on the simulator's demo inventory (zone-a: two hosts): the
//! routes' statuses and bodies, a hard anti-affinity group refusing its third VM before any job,
//! project isolation, bad input naming the field, and the typed client.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{Setup, json_of, read_sse_to_end, start_with};

const T: &str = "/api/hcp/tenant/v1";

/// The demo hosts file with a second project, `other`.
fn two_projects() -> String {
    hcp_provider_sim::DEMO_HOSTS_FILE.replacen(
        "projects:\n",
        "projects:\n  - name: other\n    description: Another tenant\n",
        1,
    )
}

async fn start() -> common::TestServer {
    start_with(Setup {
        hosts_yaml: Some(two_projects()),
        ..Setup::default()
    })
    .await
}

async fn create_group(s: &common::TestServer, project: &str, body: Value) -> reqwest::Response {
    s.http
        .post(s.at(&format!("{T}/projects/{project}/server-groups")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn create_vm(s: &common::TestServer, name: &str, group: &str) -> reqwest::Response {
    s.http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .json(&json!({
            "name": name, "image": "ubuntu-24.04", "flavor": "small", "zone": "zone-a",
            "server_group": group,
        }))
        .send()
        .await
        .unwrap()
}

/// Follows a job to its end and returns it.
async fn finish(s: &common::TestServer, job_id: &str) -> Value {
    read_sse_to_end(&s.http, &s.at(&format!("{T}/jobs/{job_id}/logs"))).await;
    json_of(
        s.http
            .get(s.at(&format!("{T}/jobs/{job_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn job_ids(s: &common::TestServer) -> Vec<String> {
    let page = json_of(
        s.http
            .get(s.at(&format!("{T}/projects/demo/jobs?limit=1000")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn hard_anti_affinity_refuses_the_third_vm_in_a_zone_of_two_hosts_before_any_job() {
    let s = start().await;
    let resp = create_group(
        &s,
        "demo",
        json!({"name": "web", "policy": "anti-affinity", "strength": "hard"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let location = resp
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let group = json_of(resp).await;
    let id = group["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sg-"), "{group}");
    assert_eq!(location, format!("{T}/projects/demo/server-groups/{id}"));
    assert_eq!(group["policy"], "anti-affinity");
    assert_eq!(group["strength"], "hard");
    assert_eq!(group["members"], json!([]));

    let mut vms = Vec::new();
    for name in ["web-1", "web-2"] {
        let resp = create_vm(&s, name, &id).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let body = json_of(resp).await;
        let job = finish(&s, body["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        vms.push(body["vm_id"].as_str().unwrap().to_string());
    }
    let vm = json_of(
        s.http
            .get(s.at(&format!("{T}/projects/demo/vms/{}", vms[0])))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(vm["spec"]["server_group"], id.as_str(), "{vm}");
    let text = vm.to_string();
    assert!(
        !text.contains("sim-a"),
        "the tenant view names no host: {text}"
    );

    let before = job_ids(&s).await;
    let resp = create_vm(&s, "web-3", &id).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let problem = json_of(resp).await;
    assert_eq!(problem["code"], "SERVER_GROUP_POLICY", "{problem}");
    assert_eq!(problem["field"], "server_group", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("`web`") && detail.contains("hard anti-affinity"),
        "{detail}"
    );
    assert!(!detail.contains("sim-a"), "no host named: {detail}");
    assert_eq!(job_ids(&s).await, before, "no job was created");

    let shown = json_of(s.http.get(s.at(&location)).send().await.unwrap()).await;
    let mut want = vms.clone();
    want.sort();
    assert_eq!(shown["members"], json!(want), "{shown}");

    // A group with members is not deleted; once its VMs are gone it is.
    let resp = s.http.delete(s.at(&location)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(resp).await["code"], "SERVER_GROUP_NOT_EMPTY");
    for vm in &vms {
        let resp = s
            .http
            .delete(s.at(&format!("{T}/projects/demo/vms/{vm}?force=true")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let job = finish(&s, json_of(resp).await["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
    }
    let resp = s.http.delete(s.at(&location)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = s.http.get(s.at(&location)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn another_projects_group_is_not_found_and_bad_input_names_the_field() {
    let s = start().await;
    let group =
        json_of(create_group(&s, "demo", json!({"name": "db", "policy": "affinity"})).await).await;
    let id = group["id"].as_str().unwrap();
    assert_eq!(group["strength"], "hard", "hard is the default");

    let theirs = format!("{T}/projects/other/server-groups/{id}");
    let resp = s.http.get(s.at(&theirs)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = s.http.delete(s.at(&theirs)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let listed = json_of(
        s.http
            .get(s.at(&format!("{T}/projects/other/server-groups")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["items"], json!([]), "{listed}");
    let resp = s
        .http
        .post(s.at(&format!("{T}/projects/other/vms")))
        .json(&json!({"name": "sneak", "image": "ubuntu-24.04", "flavor": "small", "server_group": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(resp).await["field"], "server_group");

    for (body, field) in [
        (json!({"name": "x", "policy": "anti_affinity"}), "policy"),
        (
            json!({"name": "x", "policy": "affinity", "strength": "medium"}),
            "strength",
        ),
        (json!({"name": "Bad Name", "policy": "affinity"}), "name"),
        (json!({"policy": "affinity"}), "name"),
        (
            json!({"name": "x", "policy": "affinity", "members": []}),
            "members",
        ),
    ] {
        let resp = create_group(&s, "demo", body.clone()).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let problem = json_of(resp).await;
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let resp = create_group(&s, "demo", json!({"name": "db", "policy": "affinity"})).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(resp).await["field"], "name");

    let listed = json_of(
        s.http
            .get(s.at(&format!("{T}/projects/demo/server-groups?limit=10")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test]
async fn the_routes_are_in_the_openapi_document() {
    let s = start().await;
    let doc = json_of(s.http.get(s.at("/openapi.json")).send().await.unwrap()).await;
    let groups = &doc["paths"]["/api/hcp/tenant/v1/projects/{projectId}/server-groups"];
    assert!(
        groups["post"]["description"]
            .as_str()
            .unwrap()
            .contains("SERVER_GROUP_POLICY")
    );
    assert!(groups["get"].is_object());
    let one = &doc["paths"]["/api/hcp/tenant/v1/projects/{projectId}/server-groups/{groupId}"];
    assert!(one["get"].is_object() && one["delete"].is_object());
    assert!(
        doc.to_string().contains("\"server_group\""),
        "the VM create body documents server_group"
    );
}

#[tokio::test]
async fn the_typed_client_manages_groups() {
    let s = start().await;
    let c = &s.client;
    let g = c
        .create_server_group(
            "demo",
            "pool",
            hcp_core::GroupPolicy::AntiAffinity,
            hcp_core::GroupStrength::Soft,
        )
        .await
        .unwrap();
    assert_eq!(g.name, "pool");
    assert_eq!(g.strength, hcp_core::GroupStrength::Soft);
    let got = c.get_server_group("demo", &g.id).await.unwrap();
    assert_eq!(got.id, g.id);
    let page = c
        .list_server_groups("demo", &hcp_core::store::PageRequest::all())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    c.delete_server_group("demo", &g.id).await.unwrap();
    let e = c.get_server_group("demo", &g.id).await.unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::NotFound);
}
