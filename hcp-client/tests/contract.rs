//! The contract of [`hcp_client::Hcp`]: the same calls give the same answers through an engine
//! in this process ([`EngineClient`]) and through the service ([`hcp_client::Client`] talking to
//! `hcp_server` over TCP on 127.0.0.1).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hcp_client::{EngineClient, Hcp, TenantUpdate};
use hcp_core::store::JobFilter;
use hcp_core::{
    Action, Engine, Error, JobAction, JobId, JobState, Principal, ProjectId, VmId, VmSpec,
};

/// The subject the service gives a caller without a token (its development mode).
const DEV_PRINCIPAL: &str = "anonymous";

const WAIT: Option<Duration> = Some(Duration::from_secs(120));

async fn demo_engine() -> Engine {
    hcp_provider_sim::register(Engine::builder(hcp_provider_sim::demo_config()))
        .build()
        .await
        .expect("the demo engine builds")
}

/// Starts the service over the demo engine and returns a client of it and its stop signal.
async fn remote() -> (hcp_client::Client, tokio::sync::oneshot::Sender<()>) {
    let options = hcp_server::ServeOptions::default().with_listen("127.0.0.1:0".parse().unwrap());
    let server = hcp_server::Server::bind(demo_engine().await, options)
        .await
        .expect("the service binds");
    let url = format!("http://{}", server.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    (hcp_client::Client::new(&url).unwrap(), tx)
}

/// An error as the contract compares it: kind, code and field.
fn refusal(e: &Error) -> String {
    format!(
        "{:?} {} field={:?}",
        e.kind(),
        e.code(),
        e.field().map(str::to_string)
    )
}

fn refused<T: std::fmt::Debug>(r: hcp_core::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => refusal(&e),
    }
}

/// Runs the sequence and returns what a caller sees, without the ids that differ per run.
async fn transcript(hcp: Arc<dyn Hcp>) -> Vec<String> {
    let mut out = Vec::new();
    let demo = ProjectId::new("demo");
    let spec = VmSpec::new("contract-1", "ubuntu-24.04", "small").with_tag("team", "core");
    let create = || Action::Create {
        spec: spec.clone(),
        host: None,
    };

    // Create with a key, then replay it.
    let a = hcp
        .submit(Some(&demo), create(), Some("contract-key".into()))
        .await
        .expect("the create is accepted");
    out.push(format!("create replayed={}", a.replayed));
    assert_eq!(a.resource_id, format!("projects/demo/vms/{}", a.vm_id));
    let again = hcp
        .submit(Some(&demo), create(), Some("contract-key".into()))
        .await
        .expect("the replay is accepted");
    assert_eq!((&again.vm_id, &again.job_id), (&a.vm_id, &a.job_id));
    out.push(format!("replay replayed={}", again.replayed));

    // Keys and projects refused the same way, before anything runs.
    out.push(format!(
        "empty key: {}",
        refused(hcp.submit(Some(&demo), create(), Some(String::new())).await)
    ));
    out.push(format!(
        "no project: {}",
        refused(hcp.submit(None, create(), None).await)
    ));
    out.push(format!(
        "bad project: {}",
        refused(
            hcp.submit(Some(&ProjectId::new("Not A Project!")), create(), None)
                .await
        )
    ));

    // Wait for the create; read the job and the VM back.
    let job = hcp.wait_job(None, &a.job_id, WAIT).await.unwrap();
    out.push(format!(
        "created: {} {:?} {:?} by {} error={:?}",
        job.state, job.operation, job.action, job.principal, job.error
    ));
    let got = hcp.get_job(Some(&demo), &a.job_id).await.unwrap();
    assert_eq!(got.id, a.job_id);
    out.push(format!("get job: {} {:?}", got.state, got.action));
    out.push(format!(
        "unknown job: {}",
        refused(hcp.get_job(None, &JobId::new("no-such-job")).await)
    ));
    let vm = hcp.get_vm(None, &a.vm_id).await.unwrap();
    out.push(format!(
        "vm: {} {:?} {:?} team={:?}",
        vm.spec.name,
        vm.state,
        vm.power,
        vm.spec.tags.get("team")
    ));
    assert_eq!(vm, hcp.get_vm(Some(&demo), &a.vm_id).await.unwrap());
    out.push(format!(
        "unknown vm: {}",
        refused(hcp.get_vm(Some(&demo), &VmId::new("no-such-vm")).await)
    ));
    let vms = hcp.list_vms(&demo).await.unwrap();
    out.push(format!(
        "listed: {}",
        vms.iter().filter(|v| v.id == a.vm_id).count()
    ));
    let jobs = hcp
        .list_jobs(Some(&demo), &JobFilter::default(), 50)
        .await
        .unwrap();
    out.push(format!(
        "jobs listed: {}",
        jobs.iter().filter(|j| j.id == a.job_id).count()
    ));

    // Watch a stop to its end.
    let stop = hcp
        .submit(
            None,
            Action::Stop {
                vm_id: a.vm_id.clone(),
                force: false,
            },
            None,
        )
        .await
        .unwrap();
    let mut updates = hcp.watch_job(Some(&demo), &stop.job_id).await.unwrap();
    let mut end = None;
    let mut after_end = 0;
    while let Some(u) = updates.next().await {
        match u.expect("an update") {
            TenantUpdate::End(job) => end = Some(job),
            _ if end.is_some() => after_end += 1,
            _ => {}
        }
    }
    let end = end.expect("the stream ends with the job");
    assert_eq!(after_end, 0, "nothing follows the end");
    out.push(format!(
        "stop watched: {} {:?} {:?}",
        end.state, end.operation, end.action
    ));
    assert!(matches!(end.action, Some(JobAction::Stop { .. })));

    // An action the caller cannot take, and a cancel of a job that already ended.
    out.push(format!(
        "unknown vm start: {}",
        refused(
            hcp.submit(
                None,
                Action::Start {
                    vm_id: VmId::new("no-such-vm")
                },
                None
            )
            .await
        )
    ));
    out.push(format!(
        "cancel ended: {}",
        refused(hcp.cancel_job(Some(&demo), &stop.job_id).await)
    ));

    // Delete, and the VM is gone.
    let del = hcp
        .submit(
            Some(&demo),
            Action::Delete {
                vm_id: a.vm_id.clone(),
                force: true,
            },
            Some("contract-delete".into()),
        )
        .await
        .unwrap();
    let deleted = hcp.wait_job(Some(&demo), &del.job_id, WAIT).await.unwrap();
    out.push(format!("deleted: {} {:?}", deleted.state, deleted.action));
    assert_eq!(deleted.state, JobState::Succeeded);
    out.push(format!(
        "deleted vm: {}",
        refused(hcp.get_vm(Some(&demo), &a.vm_id).await)
    ));
    out
}

#[tokio::test]
async fn an_engine_and_the_service_answer_alike() {
    let embedded: Arc<dyn Hcp> = Arc::new(EngineClient::new(
        demo_engine().await,
        Principal::new(DEV_PRINCIPAL),
    ));
    assert!(!embedded.is_remote());
    let local = transcript(embedded.clone()).await;
    embedded.close().await;

    let (client, stop) = remote().await;
    let service: Arc<dyn Hcp> = Arc::new(client);
    assert!(service.is_remote());
    let remote = transcript(service).await;
    let _ = stop.send(());

    for (i, (l, r)) in local.iter().zip(&remote).enumerate() {
        assert_eq!(l, r, "step {i} differs");
    }
    assert_eq!(local.len(), remote.len());
    assert!(local[0].contains("replayed=false") && local[1].contains("replayed=true"));
    assert!(local[2].contains("idempotency_key"), "{}", local[2]);
}

#[tokio::test]
async fn a_service_refuses_pinning_a_host_as_unsupported() {
    let (client, stop) = remote().await;
    let e = Hcp::submit(
        &client,
        Some(&ProjectId::new("demo")),
        Action::Create {
            spec: VmSpec::new("pinned", "ubuntu-24.04", "small"),
            host: Some("host-a1".into()),
        },
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), hcp_core::ErrorKind::FeatureNotSupported);
    assert_eq!(e.field(), Some("host"));
    let _ = stop.send(());
}
