//! Two engines sharing one store, as replicas sharing a database do: one built without workers
//! (an API replica) accepts jobs, the other runs them. The first sees every job through the
//! store: it waits on and watches jobs it does not run, with every log line in order, cancels
//! a running one, and releases the capacity it held once the job ended. Two such API engines
//! placing creates at once cannot fill a host past its room: the store checks it.

use std::sync::Arc;
use std::time::Duration;

use hcp_core::store::{MemoryStore, Scope, Store};
use hcp_core::{
    Config, Engine, ErrorKind, JobState, JobUpdate, Principal, Provider, RequestContext, VmSpec,
};
use hcp_provider_sim::SimProvider;

/// One simulated estate for both engines; creates take `create_ms` so a cancel lands mid-run.
fn estate(create_ms: u64) -> (Config, Arc<SimProvider>) {
    let mut config = hcp_provider_sim::demo_config();
    config.providers[0].settings = serde_json::json!({
        "op_latency": {"create_vm": format!("{create_ms}ms")},
    });
    let sim = Arc::new(SimProvider::from_config(&config.providers[0], &config.secrets).unwrap());
    (config, sim)
}

async fn engine(
    config: &Config,
    sim: &Arc<SimProvider>,
    store: &Arc<MemoryStore>,
    workers: bool,
) -> Engine {
    let p: Arc<dyn Provider> = sim.clone();
    let store: Arc<dyn Store> = store.clone();
    let b = Engine::builder(config.clone())
        .provider_kind("sim", move |_, _| Ok(p.clone()))
        .store(store)
        .without_background_reconcile();
    let b = if workers { b } else { b.without_workers() };
    b.build().await.unwrap()
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

/// Waits (at most 30 s, a guard) for a job to end and returns it.
async fn ended(engine: &Engine, job: &hcp_core::JobId) -> hcp_core::Job {
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(30)))
        .await
        .unwrap()
}

/// VMs on the simulator's hosts.
fn vms_on(sim: &SimProvider) -> usize {
    sim.state()
        .unwrap()
        .hosts
        .values()
        .map(|h| h.vms.len())
        .sum()
}

fn store() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(1000, 100_000))
}

#[tokio::test]
async fn an_engine_without_workers_accepts_jobs_another_runs_and_follows_them() {
    // Long enough that a watch polling twice a second sees the job running.
    let (config, sim) = estate(3000);
    let shared = store();
    let api = engine(&config, &sim, &shared, false).await;
    let s = api
        .create_vm(&alice(), VmSpec::new("web-1", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    // Nobody runs it yet: the API engine only wrote it down.
    let e = api
        .wait_job(&Scope::All, &s.job_id, Some(Duration::from_millis(1500)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(
        api.get_job(&Scope::All, &s.job_id).await.unwrap().state,
        JobState::Pending
    );
    assert_eq!(api.stats().running, 0);
    assert_eq!(vms_on(&sim), 0, "no VM was made without a worker");

    // A watch opened on the API engine before the worker starts sees the whole run.
    let mut watch = api.watch_job(&Scope::All, &s.job_id).await.unwrap();
    let _worker = engine(&config, &sim, &shared, true).await;
    let mut lines = Vec::new();
    let mut states = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(u) = watch.next().await {
            match u {
                JobUpdate::Log(l) => lines.push(l),
                JobUpdate::Status { state, .. } => states.push(state),
                JobUpdate::End(job) => return Some(job),
            }
        }
        None
    })
    .await
    .expect("the watch on the API engine ends when the worker's job ends")
    .expect("the watch returns the job's end");
    assert_eq!(end.state, JobState::Succeeded, "{end:?}");
    assert!(states.contains(&JobState::Running), "{states:?}");
    let stored = shared.job_logs(&s.job_id, 0).await.unwrap();
    assert!(!stored.is_empty());
    assert_eq!(
        lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
        stored.iter().map(|l| l.seq).collect::<Vec<_>>(),
        "every stored line, once, in order"
    );
    // Waits on either engine agree.
    let waited = ended(&api, &s.job_id).await;
    assert_eq!(waited.state, JobState::Succeeded);
    assert_eq!(vms_on(&sim), 1);
}

#[tokio::test]
async fn a_cancel_on_one_engine_stops_a_job_running_on_another() {
    let (config, sim) = estate(60_000);
    let shared = store();
    let api = engine(&config, &sim, &shared, false).await;
    let worker = engine(&config, &sim, &shared, true).await;
    let s = api
        .create_vm(&alice(), VmSpec::new("slow", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while api.get_job(&Scope::All, &s.job_id).await.unwrap().state != JobState::Running {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker engine starts the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = api
        .cancel_job(&Scope::All, &s.job_id, &Principal::new("bob"))
        .await
        .unwrap();
    assert_eq!(asked.cancel_requested, Some(Principal::new("bob")));
    // The create would take a minute; the guard is well below it.
    let job = ended(&api, &s.job_id).await;
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    let error = job.error.expect("a cancelled job says why");
    assert!(error.message.contains("bob"), "{}", error.message);
    assert_eq!(vms_on(&sim), 0, "the cancelled create left nothing behind");
    assert_eq!(
        api.get_vm(&Scope::All, &s.vm_id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Cancelling it again is refused: it ended.
    let again = worker
        .cancel_job(&Scope::All, &s.job_id, &Principal::new("bob"))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn capacity_held_for_another_engines_job_is_released_when_it_ends() {
    let (config, sim) = estate(0);
    let shared = store();
    let api = engine(&config, &sim, &shared, false).await;
    let _worker = engine(&config, &sim, &shared, true).await;
    let free = |e: &Engine| -> u64 {
        e.hosts()
            .iter()
            .filter(|h| h.zone == "zone-a")
            .map(|h| h.memory_mib_total.saturating_sub(h.memory_mib_used))
            .sum()
    };
    let before = free(&api);
    let s = api
        .create_vm(
            &alice(),
            VmSpec::new("held", "ubuntu-24.04", "small").with_zone("zone-a"),
        )
        .await
        .unwrap();
    assert!(
        free(&api) < before,
        "the accepted create's size is held at once"
    );
    let job = ended(&api, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded);
    let d = api.delete_vm(&alice(), &s.vm_id, false).await.unwrap();
    let job = ended(&api, &d.job_id).await;
    assert_eq!(job.state, JobState::Succeeded);
    // The host is empty again; once the held capacity is released (checked every second), a
    // refresh shows all of it free. A reservation kept for good would stay below forever.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        api.refresh_inventory().await.unwrap();
        let now = free(&api);
        if now == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the capacity held for the create is released: {now} free vs {before} before"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_api_replicas_cannot_overfill_a_host_together() {
    // zone-b is one host of 16 vCPUs: room for 8 medium VMs (2 vCPUs each). Each replica's own
    // host table would admit 8, so 16 creates split over two replicas would all be accepted if
    // only process memory held the room; the store's check admits 8 in all.
    let (config, sim) = estate(0);
    let shared = store();
    let a = Arc::new(engine(&config, &sim, &shared, false).await);
    let b = Arc::new(engine(&config, &sim, &shared, false).await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let e = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            e.create_vm(
                &alice(),
                VmSpec::new(format!("b-{i}"), "ubuntu-24.04", "medium").with_zone("zone-b"),
            )
            .await
        }));
    }
    let (mut ok, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
                assert_eq!(e.code(), hcp_core::CODE_CAPACITY_EXHAUSTED, "{e}");
                assert!(!e.to_string().contains("sim-b1"), "no host named: {e}");
                full += 1;
            }
        }
    }
    assert_eq!(
        (ok, full),
        (8, 8),
        "8 medium VMs fit the host, whichever replica placed them"
    );
    let held = shared.host_usage("sim", "sim-b1").await.unwrap();
    assert_eq!((held.vms, held.vcpus), (8, 16));
}

/// A follower of several replicas: never the leader.
#[derive(Debug)]
struct Follower;

#[async_trait::async_trait]
impl hcp_core::Leadership for Follower {
    fn is_leader(&self) -> bool {
        false
    }
    fn token(&self) -> Option<u64> {
        None
    }
    async fn release(&self) {}
}

#[tokio::test]
async fn a_follower_keeps_its_host_table_fresh_and_acts_on_nothing() {
    let (mut config, sim) = estate(0);
    config.engine.inventory_refresh_interval = Duration::from_millis(100);
    let p: Arc<dyn Provider> = sim.clone();
    let follower = Engine::builder(config.clone())
        .provider_kind("sim", move |_, _| Ok(p.clone()))
        .leadership(Arc::new(Follower))
        .build()
        .await
        .unwrap();
    let used = |e: &Engine| -> u64 { e.hosts().iter().map(|h| h.memory_mib_used).sum() };
    let before = used(&follower);
    // Another HCP (its own store) makes a VM on the same hosts: the follower's store never
    // hears of it.
    let other = engine(&config, &sim, &store(), true).await;
    let s = other
        .create_vm(&alice(), VmSpec::new("elsewhere", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let done = ended(&other, &s.job_id).await;
    assert_eq!(done.state, JobState::Succeeded);
    // The follower's host table shows the VM's memory once its next refresh read the hosts...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while used(&follower) <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower's host table never showed the new VM's memory"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and it acted on nothing: the marked VM was not rebuilt into its store (the leader's
    // duty), and no drift was reported.
    assert_eq!(
        follower
            .get_vm(&Scope::All, &s.vm_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let events = follower
        .list_events(&hcp_core::EventFilter::default())
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .all(|e| !matches!(e.kind, hcp_core::EventKind::Drift(_))),
        "a follower reports no drift"
    );
}
