//! A hypervisor's own snapshot limit (`Provider::max_snapshots_per_vm`, Hyper-V's 50
//! checkpoints) is refused before any job exists, like the engine's own
//! `engine.max_snapshots_per_vm`, whichever is smaller.

use std::time::Duration;

use hcp_core::store::Scope;
use hcp_core::{Engine, ErrorKind, JobState, Principal, RequestContext, VmSpec};

async fn engine(provider_limit: Option<u32>, engine_limit: u32) -> Engine {
    let mut config = hcp_provider_sim::demo_config();
    config.providers[0].settings = serde_json::json!({"max_snapshots_per_vm": provider_limit});
    config.engine.max_snapshots_per_vm = engine_limit;
    hcp_provider_sim::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap()
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

async fn ended(engine: &Engine, job: &hcp_core::JobId) -> JobState {
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(20)))
        .await
        .unwrap()
        .state
}

/// Takes snapshots until one is refused; returns how many were taken and the refusal.
async fn fill(engine: &Engine) -> (usize, hcp_core::Error) {
    let s = engine
        .create_vm(&alice(), VmSpec::new("snappy", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    assert_eq!(ended(engine, &s.job_id).await, JobState::Succeeded);
    for n in 0..100 {
        match engine
            .create_snapshot(&alice(), &s.vm_id, &format!("snap-{n}"))
            .await
        {
            Ok(accepted) => assert_eq!(
                ended(engine, &accepted.submitted.job_id).await,
                JobState::Succeeded
            ),
            Err(e) => return (n, e),
        }
    }
    panic!("no snapshot was refused");
}

#[tokio::test]
async fn the_hypervisors_limit_refuses_one_more_snapshot_before_any_job() {
    let engine = engine(Some(3), 32).await;
    let (taken, e) = fill(&engine).await;
    assert_eq!(taken, 3);
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert!(
        e.message().contains("its hypervisor keeps"),
        "the refusal says whose limit it is: {e}"
    );
    // The refusal made no job: one create and three snapshots.
    let jobs = engine
        .list_jobs(
            &Scope::All,
            &hcp_core::store::JobFilter::default(),
            &hcp_core::store::PageRequest::all(),
        )
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 4);
}

#[tokio::test]
async fn the_smaller_of_the_engines_and_the_hypervisors_limit_holds() {
    let (taken, e) = fill(&engine(Some(10), 2).await).await;
    assert_eq!(taken, 2);
    assert!(e.message().contains("engine.max_snapshots_per_vm"), "{e}");
    let (taken, _) = fill(&engine(None, 4).await).await;
    assert_eq!(taken, 4, "no hypervisor limit: the engine's holds");
}
