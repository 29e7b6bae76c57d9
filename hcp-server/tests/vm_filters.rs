//! VM list filters and sort orders over HTTP: `name_prefix`, repeatable `tag=k=v`, `state`,
//! `power` and `sort` on the tenant and ops VM lists, paged with cursors; bad values are `400`
//! naming the parameter and what it allows; a tag filter never reaches another project's VMs.

mod common;

use std::collections::BTreeSet;

use common::{Setup, json_of, start_with};
use hcp_core::VmSpec;
use hcp_core::store::{PageRequest, VmFilter, VmSort, VmSortKey};
use serde_json::Value;

const T: &str = "/api/hcp/tenant/v1";

async fn server() -> common::TestServer {
    let hosts = hcp_provider_sim::DEMO_HOSTS_FILE.replace(
        "projects:\n",
        "projects:\n  - name: other\n    description: Another tenant\n",
    );
    start_with(Setup {
        hosts_yaml: Some(hosts),
        ..Default::default()
    })
    .await
}

async fn make(s: &common::TestServer, project: &str, name: &str, tags: &[(&str, &str)]) {
    let mut spec = VmSpec::new(name, "ubuntu-24.04", "small");
    for (k, v) in tags {
        spec = spec.with_tag(*k, *v);
    }
    let acc = s.client.create_vm(project, &spec, None).await.unwrap();
    s.client.wait_job(&acc.job_id, None).await.unwrap();
}

/// Follows the pages of `path` with `query`, `limit` at a time; returns the names in order.
async fn names(
    s: &common::TestServer,
    path: &str,
    query: &[(&str, &str)],
    limit: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        let mut q: Vec<(&str, String)> =
            query.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        q.push(("limit", limit.to_string()));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let r = s.http.get(s.at(path)).query(&q).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} {q:?}");
        let body = json_of(r).await;
        let items = body["items"].as_array().unwrap();
        assert!(items.len() <= limit as usize);
        out.extend(items.iter().map(|v| {
            v["name"]
                .as_str()
                .or(v["spec"]["name"].as_str())
                .unwrap()
                .to_string()
        }));
        match body["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
    panic!("paging of {path} does not end");
}

async fn problem(s: &common::TestServer, path: &str, query: &[(&str, &str)]) -> Value {
    let r = s.http.get(s.at(path)).query(query).send().await.unwrap();
    assert_eq!(r.status(), 400, "{path} {query:?}");
    json_of(r).await
}

#[tokio::test]
async fn tenant_and_ops_lists_filter_sort_and_page() {
    let s = server().await;
    make(&s, "demo", "web-2", &[("env", "prod"), ("tier", "web")]).await;
    make(&s, "demo", "db-1", &[("env", "prod"), ("tier", "db")]).await;
    make(&s, "demo", "web-1", &[("env", "dev"), ("tier", "web")]).await;
    make(&s, "demo", "web-3", &[("env", "prod"), ("tier", "web")]).await;
    make(&s, "other", "web-1", &[("env", "prod"), ("tier", "web")]).await;
    let demo = format!("{T}/projects/demo/vms");

    // Name sort, both directions, paged one VM at a time.
    assert_eq!(
        names(&s, &demo, &[("sort", "name")], 1).await,
        ["db-1", "web-1", "web-2", "web-3"]
    );
    assert_eq!(
        names(&s, &demo, &[("sort", "-name")], 3).await,
        ["web-3", "web-2", "web-1", "db-1"]
    );
    // Creation order, both directions.
    assert_eq!(
        names(&s, &demo, &[("sort", "created_at")], 2).await,
        ["web-2", "db-1", "web-1", "web-3"]
    );
    assert_eq!(
        names(&s, &demo, &[("sort", "-created_at")], 2).await,
        ["web-3", "web-1", "db-1", "web-2"]
    );
    // Filters combine: prefix and two tags; a tag filter stays inside the project.
    assert_eq!(
        names(
            &s,
            &demo,
            &[
                ("name_prefix", "web"),
                ("tag", "env=prod"),
                ("tag", "tier=web"),
                ("sort", "name")
            ],
            1
        )
        .await,
        ["web-2", "web-3"]
    );
    assert_eq!(
        names(
            &s,
            &format!("{T}/projects/other/vms"),
            &[("tag", "tier=db")],
            10
        )
        .await,
        Vec::<String>::new(),
        "another project's VM is never reached through a tag filter"
    );
    assert_eq!(
        names(&s, &demo, &[("tag", "env=prod"), ("tag", "env=dev")], 10).await,
        Vec::<String>::new()
    );
    // State and power, any case.
    assert_eq!(
        names(
            &s,
            &demo,
            &[("state", "active"), ("power", "RUNNING"), ("sort", "name")],
            10
        )
        .await,
        ["db-1", "web-1", "web-2", "web-3"]
    );
    assert!(
        names(&s, &demo, &[("power", "STOPPED")], 10)
            .await
            .is_empty()
    );

    // The ops list sees every project and filters the same way.
    assert_eq!(
        names(
            &s,
            "/api/hcp/ops/v1/vms",
            &[("name_prefix", "web-1"), ("sort", "-name")],
            1
        )
        .await,
        ["web-1", "web-1"]
    );
    assert_eq!(
        names(
            &s,
            "/api/hcp/ops/v1/vms",
            &[("project", "other"), ("tag", "env=prod")],
            5
        )
        .await,
        ["web-1"]
    );

    // The client sends the same parameters.
    let filter = VmFilter {
        tags: vec![("tier".into(), "web".into())],
        ..VmFilter::default()
    };
    let page = s
        .client
        .list_vms_matching(
            "demo",
            &filter,
            VmSort::descending(VmSortKey::Name),
            &PageRequest::first(2),
        )
        .await
        .unwrap();
    let got: Vec<&str> = page.items.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(got, ["web-3", "web-2"]);
    assert!(page.next.is_some());
    let all = s
        .client
        .list_all_vms_matching("demo", &filter, VmSort::ascending(VmSortKey::Name))
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let ops = s
        .client
        .ops_vms_matching(None, &filter, VmSort::default(), &PageRequest::all())
        .await
        .unwrap();
    let projects: BTreeSet<&str> = ops.items.iter().map(|v| v.project.as_str()).collect();
    assert_eq!(projects, BTreeSet::from(["demo", "other"]));
}

#[tokio::test]
async fn bad_filter_values_are_400_naming_the_parameter() {
    let s = server().await;
    make(&s, "demo", "a-1", &[]).await;
    make(&s, "demo", "a-2", &[]).await;
    for path in [
        format!("{T}/projects/demo/vms"),
        "/api/hcp/ops/v1/vms".to_string(),
    ] {
        let p = problem(&s, &path, &[("tag", "env")]).await;
        assert_eq!(p["code"], "INVALID_SPEC", "{p}");
        let detail = p["detail"].as_str().unwrap_or_default().to_string() + &p.to_string();
        assert!(
            detail.contains("tag") && detail.contains("key=value"),
            "{p}"
        );

        let p = problem(&s, &path, &[("state", "on")]).await;
        assert!(p.to_string().contains("state"), "{p}");
        assert!(
            p.to_string().contains("PENDING, ACTIVE, ERROR, DELETED"),
            "{p}"
        );

        let p = problem(&s, &path, &[("power", "up")]).await;
        assert!(p.to_string().contains("power"), "{p}");
        assert!(
            p.to_string().contains("RUNNING, STOPPED, PAUSED, UNKNOWN"),
            "{p}"
        );

        let p = problem(&s, &path, &[("sort", "size")]).await;
        assert!(p.to_string().contains("sort"), "{p}");
        assert!(
            p.to_string()
                .contains("name, -name, created_at, -created_at"),
            "{p}"
        );
    }
    // A cursor of one order passed with another is refused naming `cursor`.
    let demo = format!("{T}/projects/demo/vms");
    let r = s
        .http
        .get(s.at(&demo))
        .query(&[("sort", "name"), ("limit", "1")])
        .send()
        .await
        .unwrap();
    let next = json_of(r).await["next"].as_str().unwrap().to_string();
    let p = problem(
        &s,
        &demo,
        &[("sort", "-created_at"), ("cursor", next.as_str())],
    )
    .await;
    assert!(p.to_string().contains("cursor"), "{p}");
}

#[tokio::test]
async fn the_openapi_document_describes_the_filters() {
    let s = server().await;
    let doc = json_of(s.http.get(s.at("/openapi.json")).send().await.unwrap()).await;
    for (path, op) in [
        ("/api/hcp/tenant/v1/projects/{projectId}/vms", "get"),
        ("/api/hcp/ops/v1/vms", "get"),
    ] {
        let params = doc["paths"][path][op]["parameters"].as_array().unwrap();
        for name in ["name_prefix", "tag", "state", "power", "sort"] {
            let p = params
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{path} documents `{name}`"));
            assert!(
                !p["description"].as_str().unwrap_or_default().is_empty(),
                "{path} `{name}` has a description"
            );
        }
        let tag = params.iter().find(|p| p["name"] == "tag").unwrap();
        assert_eq!(tag["schema"]["type"], "array", "`tag` is repeatable");
    }
}
