//! The served OpenAPI document describes what the service really sends where Schemathesis cannot
//! look: the audit events of the ops event stream (server-sent events) and of its page, checked
//! against the document's own `AuditEvent` schema, and collections that are present even when
//! empty because the schema calls them required.

mod common;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

/// Checks `value` against the parts of an OpenAPI object schema this service uses: required
/// properties, property types, formats and enums. Returns what does not hold.
fn check(schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(obj) = value.as_object() else {
        problems.push(format!("{at}: not an object: {value}"));
        return;
    };
    for r in schema["required"].as_array().into_iter().flatten() {
        let r = r.as_str().unwrap();
        if !obj.contains_key(r) {
            problems.push(format!("{at}: required `{r}` is missing in {value}"));
        }
    }
    let props = schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in obj {
        let Some(p) = props.get(k) else {
            if schema.get("additionalProperties").is_none() {
                problems.push(format!("{at}: `{k}` is not in the schema"));
            }
            continue;
        };
        let ok = match p["type"].as_str() {
            Some("integer") => v.is_u64() || v.is_i64(),
            Some("string") => v.is_string(),
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("boolean") => v.is_boolean(),
            _ => true,
        };
        if !ok {
            problems.push(format!("{at}.{k}: {v} is not a {}", p["type"]));
        }
        if let Some(e) = p["enum"].as_array()
            && !e.contains(v)
        {
            problems.push(format!("{at}.{k}: {v} is not one of {e:?}"));
        }
        if p["format"] == "date-time"
            && chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default()).is_err()
        {
            problems.push(format!("{at}.{k}: {v} is not a date-time"));
        }
    }
}

/// GETs `path` and parses its JSON body.
async fn get_json(s: &common::TestServer, path: &str) -> Value {
    s.http
        .get(s.at(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => doc
            .pointer(&r.replacen('#', "", 1))
            .unwrap_or_else(|| panic!("{r} does not resolve")),
        None => schema,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_match_their_schema_in_the_page_and_the_stream() {
    let s = common::start().await;
    let doc: Value = get_json(&s, "/openapi.json").await;
    let page_schema = resolve(
        &doc,
        &doc["paths"]["/api/hcp/ops/v1/events"]["get"]["responses"]["200"]["content"]["application/json; charset=utf-8"]
            ["schema"],
    );
    let item_of_page = resolve(&doc, &page_schema["properties"]["items"]["items"]);
    let stream_schema = &doc["paths"]["/api/hcp/ops/v1/events/stream"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"];
    let item_of_stream = resolve(&doc, &stream_schema["items"]);
    let audit = &doc["components"]["schemas"]["AuditEvent"];
    assert!(audit.is_object(), "no AuditEvent schema in the document");
    assert_eq!(item_of_page, audit, "the page's items are AuditEvents");
    assert_eq!(item_of_stream, audit, "the stream's items are AuditEvents");

    // Make events of several kinds: a create (job transitions, vm_created), a delete.
    let resp = s
        .http
        .post(s.at("/api/hcp/tenant/v1/projects/demo/vms"))
        .json(&json!({"name": "audited", "image": "ubuntu-24.04", "flavor": "small"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    s.client
        .wait_job(&body["job_id"].as_str().unwrap().into(), None)
        .await
        .unwrap();
    let vm = body["vm_id"].as_str().unwrap().to_string();
    let resp = s
        .http
        .delete(s.at(&format!(
            "/api/hcp/tenant/v1/projects/demo/vms/{vm}?force=true"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    s.client
        .wait_job(&body["job_id"].as_str().unwrap().into(), None)
        .await
        .unwrap();

    let mut problems = Vec::new();
    // The deletion's event follows its job's end: wait for it.
    let mut page = Value::Null;
    for _ in 0..100 {
        page = get_json(&s, "/api/hcp/ops/v1/events?limit=1000").await;
        if page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "vm_deleted")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let items = page["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().filter_map(|e| e["event"].as_str()).collect();
    for k in ["job_transition", "vm_created", "vm_deleted"] {
        assert!(kinds.contains(&k), "no `{k}` event in {items:#?}");
    }
    for (i, e) in items.iter().enumerate() {
        check(audit, e, &format!("page.items[{i}]"), &mut problems);
    }

    // The stream replays the same events; read them as server-sent events.
    let resp = s
        .http
        .get(s.at("/api/hcp/ops/v1/events/stream?after=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen < items.len() {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("the stream replays every past event within 10 s")
            .expect("the stream stays open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        seen = text.matches("\ndata: ").count() + usize::from(text.starts_with("data: "));
    }
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), items.len(), "{text}");
    for (i, e) in events.iter().enumerate() {
        check(audit, e, &format!("stream[{i}]"), &mut problems);
        assert_eq!(e, &items[i], "the stream and the page disagree at {i}");
    }
    assert!(problems.is_empty(), "{problems:#?}");
    drop(body);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn empty_collections_are_present_because_the_schema_requires_them() {
    let s = common::start().await;
    let doc: Value = get_json(&s, "/openapi.json").await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    // Every required array or map of every schema: a response never leaves one out, so the
    // flag must be right; NetworkDto.zones once was required but left out when empty.
    let network = &schemas["NetworkDto"];
    assert!(
        network["required"]
            .as_array()
            .unwrap()
            .contains(&json!("zones")),
        "{network}"
    );
    let resp: Value = get_json(&s, "/api/hcp/common/v1/networks").await;
    let nets = resp
        .as_array()
        .or_else(|| resp["items"].as_array())
        .unwrap_or_else(|| panic!("a list of networks: {resp}"));
    assert!(!nets.is_empty());
    for n in nets {
        let mut problems = Vec::new();
        check(network, n, "network", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }
    s.stop().await.unwrap();
}
