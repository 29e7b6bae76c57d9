//! The published OpenAPI document: valid OpenAPI 3, and every route of the HTTP issue in it.

mod common;

use openapiv3::{OpenAPI, ReferenceOr};

const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/hcp/tenant/v1/projects/{projectId}/vms"),
    ("post", "/api/hcp/tenant/v1/projects/{projectId}/vms"),
    ("get", "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}"),
    (
        "delete",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}",
    ),
    (
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:start",
    ),
    (
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:stop",
    ),
    (
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:reboot",
    ),
    (
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:console",
    ),
    (
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/vms/{vmId}:resize",
    ),
    ("get", "/api/hcp/tenant/v1/vms/{vmId}"),
    ("get", "/api/hcp/tenant/v1/console/ws"),
    ("get", "/api/hcp/tenant/v1/jobs/{jobId}"),
    ("get", "/api/hcp/tenant/v1/jobs/{jobId}/logs"),
    ("get", "/api/hcp/tenant/v1/projects/{projectId}/jobs"),
    (
        "post",
        "/api/hcp/tenant/v1/projects/{projectId}/jobs/{jobId}:cancel",
    ),
    ("get", "/api/hcp/ops/v1/providers"),
    ("get", "/api/hcp/ops/v1/hosts"),
    ("get", "/api/hcp/ops/v1/vms"),
    ("get", "/api/hcp/ops/v1/inventory"),
    ("get", "/api/hcp/ops/v1/capabilities"),
    ("post", "/api/hcp/ops/v1/reconcile"),
    ("get", "/api/hcp/ops/v1/events"),
    ("get", "/api/hcp/ops/v1/events/stream"),
    ("get", "/api/hcp/ops/v1/jobs"),
    ("get", "/api/hcp/ops/v1/jobs/{jobId}"),
    ("post", "/api/hcp/ops/v1/vms/{vmId}:migrate"),
    ("get", "/api/hcp/common/v1/catalog"),
    ("get", "/api/hcp/common/v1/images"),
    ("get", "/api/hcp/common/v1/flavors"),
    ("get", "/api/hcp/common/v1/networks"),
    ("get", "/api/hcp/common/v1/zones"),
    ("get", "/api/hcp/common/v1/capabilities"),
    ("get", "/api/hcp/common/v1/zones/capabilities"),
    ("get", "/api/hcp/common/v1/zones/{zone}/capabilities"),
    ("get", "/api/v1/hosts"),
    ("get", "/api/v1/vms"),
    ("post", "/api/v1/vms/create"),
    ("post", "/api/v1/vms/delete"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

#[tokio::test]
async fn openapi_document_is_valid_openapi_3_with_every_route() {
    let s = common::start().await;
    let text = s
        .http
        .get(s.at("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let doc: OpenAPI = serde_json::from_str(&text).expect("the document deserializes as OpenAPI 3");
    assert!(doc.openapi.starts_with("3."), "{}", doc.openapi);
    for (method, path) in ROUTES {
        let item = match doc.paths.paths.get(*path) {
            Some(ReferenceOr::Item(item)) => item,
            _ => panic!(
                "{path} is missing; paths: {:?}",
                doc.paths.paths.keys().collect::<Vec<_>>()
            ),
        };
        let op = match *method {
            "get" => item.get.as_ref(),
            "post" => item.post.as_ref(),
            "delete" => item.delete.as_ref(),
            _ => None,
        };
        let op = op.unwrap_or_else(|| panic!("{method} {path} is missing"));
        assert!(
            op.operation_id.is_some(),
            "{method} {path} has no operationId"
        );
        assert!(op.summary.is_some(), "{method} {path} has no summary");
    }
    // The Hyper-V lists document their paging: `limit` and `cursor`, and the next page's headers.
    for path in ["/api/v1/hosts", "/api/v1/vms"] {
        let Some(ReferenceOr::Item(item)) = doc.paths.paths.get(path) else {
            panic!("{path} is missing");
        };
        let op = item.get.as_ref().unwrap();
        let params: Vec<&str> = op
            .parameters
            .iter()
            .filter_map(|p| match p {
                ReferenceOr::Item(openapiv3::Parameter::Query { parameter_data, .. }) => {
                    Some(parameter_data.name.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(params, ["limit", "cursor"], "{path}");
        let Some(ReferenceOr::Item(ok)) = op
            .responses
            .responses
            .get(&openapiv3::StatusCode::Code(200))
        else {
            panic!("{path}: no 200");
        };
        for h in ["X-Next-Cursor", "Link"] {
            assert!(
                ok.headers.keys().any(|k| k.eq_ignore_ascii_case(h)),
                "{path}: {h} is not documented"
            );
        }
        assert!(
            ok.description.contains("X-Next-Cursor"),
            "{path}: {}",
            ok.description
        );
    }
    // No internal routing form leaks into the document.
    assert!(!text.contains("/@"), "internal colon-verb paths leaked");
    // Every mutating tenant route documents the Idempotency-Key header and a problem response.
    let create = match doc
        .paths
        .paths
        .get("/api/hcp/tenant/v1/projects/{projectId}/vms")
    {
        Some(ReferenceOr::Item(i)) => i.post.as_ref().unwrap(),
        _ => unreachable!(),
    };
    assert!(text.contains("Idempotency-Key"));
    // ... and the header that marks a replay.
    assert!(
        text.to_ascii_lowercase()
            .contains("\"idempotency-replayed\""),
        "the replay header is documented"
    );
    assert!(
        create
            .responses
            .responses
            .contains_key(&openapiv3::StatusCode::Code(202))
    );
    assert!(
        create
            .responses
            .responses
            .contains_key(&openapiv3::StatusCode::Range(4))
    );
    assert!(text.contains("application/problem+json"));
    // Every path parameter in a template is declared.
    for (path, item) in &doc.paths.paths {
        let ReferenceOr::Item(item) = item else {
            continue;
        };
        let names: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|p| p.split('}').next())
            .collect();
        for op in item.iter().map(|(_, op)| op) {
            for n in &names {
                let declared = op.parameters.iter().any(|p| match p {
                    ReferenceOr::Item(openapiv3::Parameter::Path { parameter_data, .. }) => {
                        parameter_data.name == *n
                    }
                    _ => false,
                });
                assert!(declared, "{path}: path parameter {n} is not declared");
            }
        }
    }
}

#[tokio::test]
async fn tags_come_by_importance_and_development_mode_declares_no_security() {
    let s = common::start().await;
    let doc: serde_json::Value = s
        .http
        .get(s.at("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .expect("a tags array")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["Tenant", "Ops", "Common", "Hyper-V", "Health"]);
    for t in doc["tags"].as_array().unwrap() {
        assert!(
            t["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{t}"
        );
    }
    // Without OIDC every request acts as the development principal: the document claims no
    // authentication, so Swagger UI offers no Authorize button.
    assert!(
        doc["components"].get("securitySchemes").is_none(),
        "{}",
        doc["components"]
    );
    assert!(doc.get("security").is_none());
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op.get("security").is_none(), "{method} {path}");
        }
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_root_leads_to_the_ui_and_docs_slash_to_the_documentation() {
    let s = common::start().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, location) in [("/", "ui/"), ("/ui", "ui/"), ("/docs/", "../docs")] {
        let resp = no_redirects.get(s.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), 302, "{path}");
        assert_eq!(resp.headers()["location"], location, "{path}");
    }
    // Followed, the root ends on the web UI (with its policy), `/docs/` on the Swagger UI.
    for (path, end, text) in [("/", "/ui/", "<main"), ("/docs/", "/docs", "swagger")] {
        let resp = s.http.get(s.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.url().path(), end, "{path}");
        if end == "/ui/" {
            let csp = resp.headers()["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe-inline"), "{csp}");
        }
        assert!(resp.text().await.unwrap().contains(text), "{path}");
    }
    // Other methods on / are not redirected.
    let resp = no_redirects.post(s.at("/")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    s.stop().await.unwrap();
}
