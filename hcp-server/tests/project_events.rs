//! The tenant project event stream (`GET /api/hcp/tenant/v1/projects/{projectId}/events`): a
//! VM created by another client arrives as changes carrying the tenant view (and ends `ACTIVE`),
//! a resumed stream replays what it missed, and a tenant of another project gets exactly the
//! answer of an unknown project (with the real OIDC provider).

mod common;
mod oidc;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

const T: &str = "/api/hcp/tenant/v1";
const TENANT: &str = "hcp-tenant";

/// One parsed server-sent event.
#[derive(Debug, Default, Clone)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

/// Reads server-sent events from `resp` until `done` says stop (30 s at most).
async fn read_until(resp: reqwest::Response, mut done: impl FnMut(&[Sse]) -> bool) -> Vec<Sse> {
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut e = Sse::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        e.event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        e.id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        e.data = serde_json::from_str(v).unwrap();
                    }
                }
                if !e.event.is_empty() {
                    events.push(e);
                }
            }
            if done(&events) {
                return;
            }
        }
        panic!("the stream ended early: {events:?}");
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the expected events arrive");
    events
}

fn active(events: &[Sse], vm_id: &str) -> bool {
    events.iter().any(|e| {
        e.event == "change"
            && e.data["vm_id"] == vm_id
            && e.data["vm"]["state"] == "ACTIVE"
            && e.data["vm"]["power"] == "RUNNING"
    })
}

#[tokio::test]
async fn a_vm_created_elsewhere_arrives_live_and_a_resumed_stream_replays_it() {
    let s = common::start().await;
    let resp = s
        .http
        .get(s.at(&format!("{T}/projects/demo/events")))
        .send()
        .await
        .unwrap();
    // The live stream opens with `ready` before any change.
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let vm_id = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let seen = vm_id.clone();
    let reader = tokio::spawn(read_until(resp, move |ev| {
        if let Some(tx) = ready_tx.take() {
            tx.send(ev[0].clone()).unwrap();
        }
        let id = seen.lock().unwrap().clone();
        !id.is_empty() && active(ev, &id)
    }));
    let first = ready_rx.await.unwrap();
    assert_eq!(first.event, "ready");
    assert_eq!(first.data["project"], "demo");
    assert_eq!(first.id, None);

    let created: Value = s
        .http
        .post(s.at(&format!("{T}/projects/demo/vms")))
        .json(&json!({"name": "ev-1", "image": "ubuntu-24.04", "flavor": "small"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["vm_id"].as_str().unwrap().to_string();
    *vm_id.lock().unwrap() = id.clone();
    let events = reader.await.unwrap();
    let changes: Vec<&Sse> = events.iter().filter(|e| e.event == "change").collect();
    assert!(!changes.is_empty());
    for c in &changes {
        assert_eq!(c.id.as_deref(), Some(c.data["seq"].to_string().as_str()));
        if c.data["vm_id"] == id.as_str() {
            let vm = &c.data["vm"];
            assert_eq!(vm["name"], "ev-1");
            // The tenant view: no placement, no native id, no host.
            for hidden in ["binding", "host", "provider", "native_id"] {
                assert!(vm.get(hidden).is_none(), "{hidden} leaked: {vm}");
            }
        }
    }
    let transition = changes
        .iter()
        .find(|c| c.data["vm_id"] == id.as_str() && c.data["cause"] == "job_transition")
        .expect("a job transition arrives");
    assert_eq!(transition.data["job"]["id"], created["job_id"]);

    // Resuming after the first change replays the later ones, with `after` and with
    // `Last-Event-ID` alike, and opens with no `ready`.
    let first_seq = changes[0].data["seq"].as_u64().unwrap();
    for resume in [
        s.http
            .get(s.at(&format!("{T}/projects/demo/events?after={first_seq}"))),
        s.http
            .get(s.at(&format!("{T}/projects/demo/events")))
            .header("Last-Event-ID", first_seq.to_string()),
    ] {
        let id = id.clone();
        let replay = read_until(resume.send().await.unwrap(), move |ev| active(ev, &id)).await;
        assert_eq!(replay[0].event, "change", "{replay:?}");
        assert!(
            replay
                .iter()
                .all(|e| e.data["seq"].as_u64().unwrap() > first_seq)
        );
    }
}

#[tokio::test]
async fn another_projects_stream_is_not_found_like_an_unknown_project() {
    let a = oidc::AuthServer::start(&[]).await;
    let demo = a.idp.token("alice", &[TENANT], &["demo"]).await;
    let other = a.idp.token("olga", &[TENANT], &["other"]).await;
    let mut answers = Vec::new();
    for project in ["demo", "nosuch"] {
        let resp = a
            .get(&format!("{T}/projects/{project}/events"), &other)
            .await;
        let status = resp.status().as_u16();
        let mut body: Value = resp.json().await.unwrap();
        // The request id differs; everything else must not.
        body.as_object_mut().unwrap().remove("request_id");
        body.as_object_mut().unwrap().remove("instance");
        let detail = body["detail"].as_str().unwrap_or_default().to_string();
        answers.push((status, body["code"].clone(), detail.replace(project, "P")));
    }
    assert_eq!(answers[0].0, 404, "{answers:?}");
    assert_eq!(
        answers[0], answers[1],
        "another project answers like an unknown one"
    );

    // The member follows it; a VM of `other` never shows in `demo`'s stream.
    let resp = a.get(&format!("{T}/projects/demo/events"), &demo).await;
    let vm = a.create("other", "olgas-vm", &other).await;
    assert_eq!(vm.status(), 202);
    let theirs: Value = vm.json().await.unwrap();
    let mine: Value = a
        .create("demo", "alices-vm", &demo)
        .await
        .json()
        .await
        .unwrap();
    let mine_id = mine["vm_id"].as_str().unwrap().to_string();
    let events = read_until(resp, move |ev| active(ev, &mine_id)).await;
    let text = format!("{events:?}");
    assert!(!text.contains(theirs["vm_id"].as_str().unwrap()), "{text}");
    assert!(!text.contains("olgas-vm"), "{text}");
    assert!(!text.contains("olga"), "{text}");
}
