//! Adoption and release over real TCP (`POST /api/hcp/ops/v1/vms:adopt`,
//! `POST /api/hcp/ops/v1/vms/{vmId}:release`; development mode, so the caller is an operator),
//! and the operators' host and inventory lists in pages. The simulator keeps its hosts in a
//! state file seeded with a VM HCP did not make, and the test compares that VM in the file
//! before and after. Who may call the routes is in `authz_matrix.rs`.

mod common;

use std::path::Path;

use hcp_core::PowerState;
use hcp_provider_sim::{SimHost, SimState, SimVm};
use reqwest::StatusCode;
use serde_json::{Value, json};

use common::{Setup, json_of, start_with};

const T: &str = "/api/hcp/tenant/v1";
const OPS: &str = "/api/hcp/ops/v1";
const STRAY: &str = "sim-900";

/// The demo hosts file over a state file holding one VM without HCP's mark on sim-a1.
fn hosts_with_a_stray(dir: &Path) -> (String, std::path::PathBuf) {
    let mut state = SimState::default();
    for (host, zone, vcpus, memory) in [
        ("sim-a1", "zone-a", 32, 131072),
        ("sim-a2", "zone-a", 32, 131072),
        ("sim-b1", "zone-b", 16, 65536),
    ] {
        state
            .hosts
            .insert(host.into(), SimHost::new(host, zone, vcpus, memory));
    }
    let size = hcp_core::Resources {
        vcpus: 2,
        memory_mib: 2048,
        disk_gib: 20,
    };
    let mut vm = SimVm::new("legacy-web", PowerState::Running, size, None);
    vm.native_id = STRAY.into();
    vm.tags.insert("owner".into(), "web-team".into());
    state
        .hosts
        .get_mut("sim-a1")
        .unwrap()
        .vms
        .insert(STRAY.into(), Box::new(vm));
    let path = dir.join("sim.json");
    std::fs::write(&path, serde_json::to_string(&state).unwrap()).unwrap();
    let yaml = hcp_provider_sim::DEMO_HOSTS_FILE.replacen(
        "      seed: 42\n",
        &format!("      seed: 42\n      state_file: {}\n", path.display()),
        1,
    );
    (yaml, path)
}

fn stray_on_disk(path: &Path) -> Value {
    let state: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    state["hosts"]["sim-a1"]["vms"][STRAY].clone()
}

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

/// Reads every page of an operators' list, `limit` at a time; returns the items and the number
/// of pages.
async fn all_pages(s: &common::TestServer, path: &str, limit: u32) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..100 {
        let mut url = format!("{path}?limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let resp = s.http.get(s.at(&url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{url}");
        let next = resp
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Vec<Value> = resp.json().await.unwrap();
        assert!(page.len() <= limit as usize);
        items.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => return (items, pages),
        }
    }
    panic!("{path} never ended");
}

#[tokio::test]
async fn an_operator_adopts_and_releases_a_vm_and_only_its_mark_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (yaml, file) = hosts_with_a_stray(dir.path());
    let s = start_with(Setup {
        hosts_yaml: Some(yaml),
        ..Setup::default()
    })
    .await;
    let before = stray_on_disk(&file);
    let reconcile = s.http.post(s.at(&format!("{OPS}/reconcile"))).send().await;
    assert_eq!(reconcile.unwrap().status(), StatusCode::OK);

    // The lists come in pages; the default page holds everything here.
    let (hosts, pages) = all_pages(&s, &format!("{OPS}/hosts"), 2).await;
    assert_eq!((hosts.len(), pages), (3, 2), "{hosts:?}");
    let whole: Vec<Value> = json_of(
        s.http
            .get(s.at(&format!("{OPS}/hosts")))
            .send()
            .await
            .unwrap(),
    )
    .await
    .as_array()
    .unwrap()
    .clone();
    assert_eq!(whole, hosts, "one default page, in the same order");
    let (inventory, _) = all_pages(&s, &format!("{OPS}/inventory"), 1).await;
    let stray = inventory
        .iter()
        .find(|v| v["native_id"] == STRAY)
        .expect("the stray is listed");
    assert_eq!(stray["adoptable"], true, "{stray}");
    assert!(stray["vm_id"].is_null());
    let bad = s
        .http
        .get(s.at(&format!("{OPS}/inventory?cursor=nonsense")))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // A field the operator may not set is refused, naming it.
    let resp = s
        .http
        .post(s.at(&format!("{OPS}/vms:adopt")))
        .json(&json!({"project": "demo", "host": "sim-a1", "vm": STRAY, "native_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(json_of(resp).await.to_string().contains("native_id"));

    let resp = s
        .http
        .post(s.at(&format!("{OPS}/vms:adopt")))
        .header("Idempotency-Key", "adopt-legacy-web")
        .json(
            &json!({"project": "demo", "host": "sim-a1", "vm": "legacy-web", "name": "web-legacy"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let accepted = json_of(resp).await;
    assert_eq!(accepted["action"]["action"], "adopt", "{accepted}");
    let vm_id = accepted["vm_id"].as_str().unwrap().to_string();
    let job = wait_job(&s, accepted["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");

    // The tenant sees the VM in the project, with its observed size and power, and no host.
    let vm = json_of(
        s.http
            .get(s.at(&format!("{T}/projects/demo/vms/{vm_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(vm["state"], "ACTIVE", "{vm}");
    assert_eq!(vm["name"], "web-legacy");
    assert_eq!(vm["power"], "RUNNING");
    assert_eq!(vm["resources"]["vcpus"], 2);
    assert!(!vm.to_string().contains("sim-a1") && !vm.to_string().contains(STRAY));
    let adopted = stray_on_disk(&file);
    assert_eq!(adopted["mark"]["vm_id"], vm_id.as_str());
    let mut unmarked = adopted.clone();
    unmarked["mark"] = Value::Null;
    assert_eq!(unmarked, before, "only the mark changed");

    // Adopting it again is refused.
    let again = s
        .http
        .post(s.at(&format!("{OPS}/vms:adopt")))
        .json(&json!({"project": "demo", "host": "sim-a1", "vm": STRAY}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);

    let resp = s
        .http
        .post(s.at(&format!("{OPS}/vms/{vm_id}:release")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let accepted = json_of(resp).await;
    assert_eq!(accepted["action"]["action"], "release");
    let job = wait_job(&s, accepted["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    let gone = s
        .http
        .get(s.at(&format!("{T}/projects/demo/vms/{vm_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(stray_on_disk(&file), before, "the VM is exactly as it was");
    let events = json_of(
        s.http
            .get(s.at(&format!("{OPS}/events?vm_id={vm_id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|e| e.starts_with("vm_"))
        .collect();
    assert_eq!(names, ["vm_adopted", "vm_released"], "{events}");

    // The published document names the routes as clients call them.
    let doc = json_of(s.http.get(s.at("/openapi.json")).send().await.unwrap()).await;
    assert!(doc["paths"][format!("{OPS}/vms:adopt")]["post"].is_object());
    assert!(doc["paths"][format!("{OPS}/vms/{{vmId}}:release")]["post"].is_object());
}
