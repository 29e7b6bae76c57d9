//! `PATCH .../vms/{vmId}`: tags as a JSON Merge Patch, guarded by the VM's `ETag`: `If-Match`
//! missing → 428, stale → 412 and nothing changed, other fields refused naming them, concurrent
//! changes with one `ETag` → exactly one 200; an audit event records the change.

mod common;

use std::collections::BTreeMap;

use hcp_core::{EventKind, VmId, VmSpec};
use serde_json::{Value, json};

async fn patch(
    s: &common::TestServer,
    vm: &VmId,
    if_match: Option<&str>,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let mut rb = s
        .http
        .patch(s.at(&format!("/api/hcp/tenant/v1/projects/demo/vms/{vm}")))
        .json(body);
    if let Some(m) = if_match {
        rb = rb.header("If-Match", m);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (status, etag, v)
}

#[tokio::test]
async fn tags_change_only_with_the_current_etag() {
    let s = common::start().await;
    let c = &s.client;
    let spec = VmSpec::new("tagged-1", "ubuntu-24.04", "small")
        .with_tag("team", "core")
        .with_tag("old", "x");
    let acc = c.create_vm("demo", &spec, None).await.unwrap();
    c.wait_job(&acc.job_id, None).await.unwrap();
    let (vm, etag) = c.get_vm_versioned("demo", &acc.vm_id).await.unwrap();
    assert_eq!(vm.spec.tags.len(), 2);
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    // No If-Match → 428; another field → 400 naming it; nothing changed.
    let (status, _, body) = patch(&s, &acc.vm_id, None, &json!({"tags": {"a": "b"}})).await;
    assert_eq!(status, 428, "{body}");
    assert_eq!(body["code"], "PRECONDITION_REQUIRED");
    let (status, _, body) = patch(
        &s,
        &acc.vm_id,
        Some(&etag),
        &json!({"tags": {"a": "b"}, "name": "renamed"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("name"), "{body}");
    let (status, _, body) = patch(
        &s,
        &acc.vm_id,
        Some(&etag),
        &json!({"tags": {"bad key": "v"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "tags.bad key");

    // The current ETag: set one, remove one, keep the rest; a new ETag comes back.
    let mut p = BTreeMap::new();
    p.insert("team".to_string(), Some("web".to_string()));
    p.insert("old".to_string(), None);
    let (vm2, etag2) = c
        .update_vm_tags("demo", &acc.vm_id, &p, &etag)
        .await
        .unwrap();
    assert_eq!(
        vm2.spec.tags,
        BTreeMap::from([("team".to_string(), "web".to_string())])
    );
    assert_ne!(etag2, etag);
    assert_eq!(
        c.get_vm("demo", &acc.vm_id).await.unwrap().spec.tags,
        vm2.spec.tags
    );

    // The old ETag is stale now → 412, and nothing changes.
    let e = c
        .update_vm_tags("demo", &acc.vm_id, &p, &etag)
        .await
        .unwrap_err();
    assert_eq!(e.code(), hcp_core::CODE_PRECONDITION_FAILED, "{e}");
    let (status, _, _) = patch(&s, &acc.vm_id, Some(&etag), &json!({"tags": {"x": "y"}})).await;
    assert_eq!(status, 412);
    let (status, _, _) = patch(&s, &acc.vm_id, Some("*"), &json!({"tags": {"x": "y"}})).await;
    assert_eq!(status, 412, "`*` is no VM version");
    assert_eq!(
        c.get_vm("demo", &acc.vm_id).await.unwrap().spec.tags,
        vm2.spec.tags
    );

    // Another project's VM stays not found; an unknown VM too.
    let r = s
        .http
        .patch(s.at("/api/hcp/tenant/v1/projects/demo/vms/vm-nope"))
        .header("If-Match", etag2.as_str())
        .json(&json!({"tags": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // The audit stream records the change.
    let events = c.events(0, Some("demo"), 1000).await.unwrap();
    assert!(events.iter().any(|e| e.vm_id.as_ref() == Some(&acc.vm_id)
        && matches!(&e.kind, EventKind::VmTagsUpdated { tags } if tags.get("team").map(String::as_str) == Some("web"))));
}

#[tokio::test]
async fn of_twenty_concurrent_patches_with_one_etag_exactly_one_wins() {
    let s = common::start().await;
    let c = &s.client;
    let acc = c
        .create_vm(
            "demo",
            &VmSpec::new("tagged-2", "ubuntu-24.04", "small"),
            None,
        )
        .await
        .unwrap();
    c.wait_job(&acc.job_id, None).await.unwrap();
    let (_, etag) = c.get_vm_versioned("demo", &acc.vm_id).await.unwrap();
    let calls = (0..20).map(|i| {
        let c = c.clone();
        let etag = etag.clone();
        let id = acc.vm_id.clone();
        async move {
            let p = BTreeMap::from([("writer".to_string(), Some(format!("w{i}")))]);
            c.update_vm_tags("demo", &id, &p, &etag).await
        }
    });
    let results = futures::future::join_all(calls).await;
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), hcp_core::CODE_PRECONDITION_FAILED, "{r}");
    }
    let winner = &ok[0].0.spec.tags["writer"];
    let now = c.get_vm("demo", &acc.vm_id).await.unwrap();
    assert_eq!(&now.spec.tags["writer"], winner);
}
