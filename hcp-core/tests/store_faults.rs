//! The engine when its store fails for a moment: a job whose worker cannot read it, or cannot
//! claim it, runs later instead of staying PENDING forever (and its VM's later jobs with it), and
//! `cancel_job` reports a store failure instead of claiming the job is running.
//!
//! The store here wraps the real in-memory store and refuses chosen calls; everything else is
//! the real engine on the simulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hcp_core::store::{
    IdempotencyRecord, IdempotencyScope, JobFilter, MemoryStore, Page, PageRequest, Scope, Store,
    Submission, SubmitOutcome, Usage, VmFilter, VmSort,
};
use hcp_core::{
    Engine, Error, ErrorKind, Event, EventFilter, Job, JobId, JobLease, JobLogLine, JobState,
    LogEntry, Principal, ProjectId, RequestContext, Result, Vm, VmId, VmSpec,
};

/// The in-memory store, refusing chosen calls with an internal (store) error.
#[derive(Debug, Default)]
struct FaultyStore {
    inner: MemoryStore,
    /// Refuse this many claims (the worker's `claim_job`).
    fail_claims: AtomicUsize,
    /// Refuse every write that moves a job to CANCELLED.
    fail_cancels: AtomicBool,
    /// Hold claims until cleared.
    hold_claims: AtomicBool,
    /// Hold event appends until cleared.
    hold_events: AtomicBool,
    /// Refuse every lease renewal with `LEASE_LOST`, as a store does once another worker took
    /// the job.
    refuse_renewals: AtomicBool,
}

fn store_down() -> Error {
    Error::internal("injected: the store is unavailable").temporary()
}

fn take(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

#[async_trait]
impl Store for FaultyStore {
    fn kind(&self) -> &'static str {
        "faulty"
    }
    async fn submit(&self, s: Submission) -> Result<SubmitOutcome> {
        self.inner.submit(s).await
    }
    async fn usage(&self, p: &ProjectId) -> Result<Usage> {
        self.inner.usage(p).await
    }
    async fn host_usage(&self, provider: &str, host: &str) -> Result<Usage> {
        self.inner.host_usage(provider, host).await
    }
    async fn idempotency(&self, s: &IdempotencyScope) -> Result<Option<IdempotencyRecord>> {
        self.inner.idempotency(s).await
    }
    async fn get_vm(&self, s: &Scope, id: &VmId) -> Result<Option<Vm>> {
        self.inner.get_vm(s, id).await
    }
    async fn find_vm_by_name(&self, p: &ProjectId, n: &str) -> Result<Option<Vm>> {
        self.inner.find_vm_by_name(p, n).await
    }
    async fn list_vms(&self, s: &Scope, p: &PageRequest) -> Result<Page<Vm>> {
        self.inner.list_vms(s, p).await
    }
    async fn list_vms_matching(
        &self,
        s: &Scope,
        f: &VmFilter,
        o: VmSort,
        p: &PageRequest,
    ) -> Result<Page<Vm>> {
        self.inner.list_vms_matching(s, f, o, p).await
    }
    async fn put_vm(&self, vm: Vm, e: Option<u64>) -> Result<Vm> {
        self.inner.put_vm(vm, e).await
    }
    async fn remove_vm(&self, id: &VmId, e: u64) -> Result<()> {
        self.inner.remove_vm(id, e).await
    }
    async fn get_job(&self, s: &Scope, id: &JobId) -> Result<Option<Job>> {
        self.inner.get_job(s, id).await
    }
    async fn list_jobs(&self, s: &Scope, f: &JobFilter, p: &PageRequest) -> Result<Page<Job>> {
        self.inner.list_jobs(s, f, p).await
    }
    async fn unfinished_jobs(&self) -> Result<Vec<Job>> {
        self.inner.unfinished_jobs().await
    }
    async fn unfinished_jobs_of(&self, vm_id: &VmId) -> Result<Vec<Job>> {
        self.inner.unfinished_jobs_of(vm_id).await
    }
    async fn update_job(&self, job: Job, expected: u64) -> Result<Job> {
        if job.state == JobState::Cancelled && self.fail_cancels.load(Ordering::SeqCst) {
            return Err(store_down());
        }
        self.inner.update_job(job, expected).await
    }
    async fn append_logs(
        &self,
        id: &JobId,
        lines: Vec<(DateTime<Utc>, LogEntry)>,
    ) -> Result<Vec<JobLogLine>> {
        self.inner.append_logs(id, lines).await
    }
    async fn job_logs(&self, id: &JobId, after: u64) -> Result<Vec<JobLogLine>> {
        self.inner.job_logs(id, after).await
    }
    async fn append_event(&self, e: Event) -> Result<Arc<Event>> {
        while self.hold_events.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.inner.append_event(e).await
    }
    async fn list_events(&self, f: &EventFilter) -> Result<Vec<Arc<Event>>> {
        self.inner.list_events(f).await
    }
    async fn purge(
        &self,
        j: DateTime<Utc>,
        k: DateTime<Utc>,
        fence: Option<&hcp_core::LeaderFence>,
    ) -> Result<()> {
        self.inner.purge(j, k, fence).await
    }
    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        fence: Option<&hcp_core::LeaderFence>,
    ) -> Result<u64> {
        self.inner.purge_events(before, fence).await
    }
    async fn unpublished_events(&self, limit: usize) -> Result<Vec<Arc<Event>>> {
        self.inner.unpublished_events(limit).await
    }
    async fn mark_published(&self, seqs: &[u64]) -> Result<()> {
        self.inner.mark_published(seqs).await
    }
    async fn create_server_group(&self, g: hcp_core::ServerGroup) -> Result<hcp_core::ServerGroup> {
        self.inner.create_server_group(g).await
    }
    async fn get_server_group(
        &self,
        s: &Scope,
        id: &hcp_core::ServerGroupId,
    ) -> Result<Option<hcp_core::ServerGroup>> {
        self.inner.get_server_group(s, id).await
    }
    async fn list_server_groups(
        &self,
        s: &Scope,
        p: &PageRequest,
    ) -> Result<Page<hcp_core::ServerGroup>> {
        self.inner.list_server_groups(s, p).await
    }
    async fn delete_server_group(
        &self,
        s: &Scope,
        id: &hcp_core::ServerGroupId,
    ) -> Result<hcp_core::ServerGroup> {
        self.inner.delete_server_group(s, id).await
    }
    async fn claim_job(&self, id: &JobId, h: &str, until: DateTime<Utc>) -> Result<Option<Job>> {
        while self.hold_claims.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if take(&self.fail_claims) {
            return Err(store_down());
        }
        self.inner.claim_job(id, h, until).await
    }
    async fn renew_lease(
        &self,
        id: &JobId,
        h: &str,
        t: u64,
        until: DateTime<Utc>,
    ) -> Result<JobLease> {
        if self.refuse_renewals.load(Ordering::SeqCst) {
            return Err(
                Error::new(ErrorKind::Conflict, "the job's lease is held elsewhere")
                    .with_code(hcp_core::CODE_LEASE_LOST),
            );
        }
        self.inner.renew_lease(id, h, t, until).await
    }
    async fn release_lease(&self, id: &JobId, h: &str, t: u64) -> Result<()> {
        self.inner.release_lease(id, h, t).await
    }
    async fn update_job_fenced(&self, job: Job, expected: u64, t: u64) -> Result<Job> {
        self.inner.update_job_fenced(job, expected, t).await
    }
    async fn claimable_jobs(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Job>> {
        self.inner.claimable_jobs(now, limit).await
    }
}

async fn engine(store: Arc<FaultyStore>) -> Engine {
    engine_with_timeout(
        store,
        Duration::from_secs(30 * 60),
        Arc::new(hcp_core::SystemClock),
    )
    .await
}

async fn engine_with_timeout(
    store: Arc<FaultyStore>,
    job_timeout: Duration,
    clock: Arc<dyn hcp_core::Clock>,
) -> Engine {
    let mut config = hcp_provider_sim::demo_config();
    config.engine.job_timeout = job_timeout;
    // A short lease: the lease poller (every third of it) picks up jobs nobody scheduled.
    config.engine.job_lease = Duration::from_secs(1);
    config.engine.retry.initial_delay = Duration::from_millis(5);
    config.engine.retry.max_delay = Duration::from_millis(20);
    engine_from(store, config, clock).await
}

/// Builds an engine with `config` on the simulator and `store`.
async fn engine_from(
    store: Arc<FaultyStore>,
    config: hcp_core::Config,
    clock: Arc<dyn hcp_core::Clock>,
) -> Engine {
    hcp_provider_sim::register(Engine::builder(config))
        .store(store)
        .clock(clock)
        .without_background_reconcile()
        .build()
        .await
        .unwrap()
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

async fn wait(engine: &Engine, job: &JobId) -> Job {
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(20)))
        .await
        .unwrap()
}

/// Waits (without reading jobs) until the armed failures were used up.
async fn until_used(n: &AtomicUsize) {
    for _ in 0..20_000 {
        if n.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the injected failure was never reached");
}

#[tokio::test]
async fn a_worker_that_cannot_claim_its_job_runs_it_later_and_the_vm_queue_moves_on() {
    let store = Arc::new(FaultyStore::default());
    let engine = engine(store.clone()).await;
    let s = engine
        .create_vm(&alice(), VmSpec::new("web-1", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &s.job_id).await.state, JobState::Succeeded);
    // The stop's worker fails to claim (read and lease) its job once; the claim returns the
    // job, so the worker reads it nowhere else on its way.
    store.fail_claims.store(1, Ordering::SeqCst);
    let stop = engine.stop_vm(&alice(), &s.vm_id, true).await.unwrap();
    until_used(&store.fail_claims).await;
    let start = engine.start_vm(&alice(), &s.vm_id).await.unwrap();
    let stopped = wait(&engine, &stop.job_id).await;
    assert_eq!(stopped.state, JobState::Succeeded, "{stopped:?}");
    let started = wait(&engine, &start.job_id).await;
    assert_eq!(started.state, JobState::Succeeded, "{started:?}");
}

#[tokio::test]
async fn a_failed_claim_leaves_the_job_to_run_later_not_pending_forever() {
    let store = Arc::new(FaultyStore::default());
    let engine = engine(store.clone()).await;
    store.fail_claims.store(1, Ordering::SeqCst);
    let s = engine
        .create_vm(&alice(), VmSpec::new("web-2", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let job = wait(&engine, &s.job_id).await;
    assert_eq!(store.fail_claims.load(Ordering::SeqCst), 0);
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempts, 1, "the failed claim started no attempt");
}

#[tokio::test]
async fn cancel_reports_a_store_failure_instead_of_calling_the_job_running() {
    let store = Arc::new(FaultyStore::default());
    let engine = engine(store.clone()).await;
    // The worker's claim waits, so the job stays PENDING while it is cancelled.
    store.hold_claims.store(true, Ordering::SeqCst);
    store.fail_cancels.store(true, Ordering::SeqCst);
    let s = engine
        .create_vm(&alice(), VmSpec::new("web-3", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let e = engine
        .cancel_job(&Scope::All, &s.job_id, &Principal::new("alice"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    // The failed cancel left nothing behind that would cancel the job later.
    store.fail_cancels.store(false, Ordering::SeqCst);
    store.hold_claims.store(false, Ordering::SeqCst);
    let job = wait(&engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
}

#[tokio::test]
async fn a_job_that_waits_past_its_timeout_ends_with_timeout_without_starting() {
    let store = Arc::new(FaultyStore::default());
    let clock = Arc::new(hcp_core::ManualClock::starting_now());
    let engine = engine_with_timeout(store.clone(), Duration::from_secs(2), clock.clone()).await;
    let s = engine
        .create_vm(&alice(), VmSpec::new("web-4", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    assert_eq!(wait(&engine, &s.job_id).await.state, JobState::Succeeded);
    // The stop's claim waits; the start queues behind it on the same VM.
    store.hold_claims.store(true, Ordering::SeqCst);
    let stop = engine.stop_vm(&alice(), &s.vm_id, true).await.unwrap();
    let start = engine.start_vm(&alice(), &s.vm_id).await.unwrap();
    // Both wait longer than their timeout before their turn comes: the engine's clock moves
    // 3 s on while the claim is held.
    clock.advance(Duration::from_secs(3));
    store.hold_claims.store(false, Ordering::SeqCst);
    let stopped = wait(&engine, &stop.job_id).await;
    assert!(stopped.state.is_terminal(), "{stopped:?}");
    let started = wait(&engine, &start.job_id).await;
    assert_eq!(started.state, JobState::Failed, "{started:?}");
    assert_eq!(started.error.as_ref().unwrap().kind, ErrorKind::Timeout);
    assert_eq!(started.attempts, 0, "it never started: {started:?}");
}

#[tokio::test]
async fn a_submit_dropped_after_its_store_write_still_runs_its_job() {
    let store = Arc::new(FaultyStore::default());
    let engine = engine(store.clone()).await;
    // The submission is written, then the request is dropped while its event is appended
    // (before the scheduler hears of the job), as a server's request timeout does.
    store.hold_events.store(true, Ordering::SeqCst);
    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        engine.create_vm(&alice(), VmSpec::new("web-5", "ubuntu-24.04", "small")),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the submit was still waiting: {dropped:?}"
    );
    store.hold_events.store(false, Ordering::SeqCst);
    let jobs = store
        .list_jobs(&Scope::All, &JobFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 1, "the job was written: {jobs:?}");
    // The lease poller finds the job nobody scheduled and runs it.
    let job = wait(&engine, &jobs.items[0].id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempts, 1, "{job:?}");
}

#[tokio::test]
async fn a_worker_whose_lease_renewal_is_refused_stops_the_attempt_and_leaves_the_job() {
    let store = Arc::new(FaultyStore::default());
    // The demo, with creates that take 30 s and a lease renewed every 200 ms.
    let mut config = hcp_provider_sim::demo_config();
    config.providers[0].settings["op_latency"] = serde_json::json!({"create_vm": "30s"});
    config.engine.job_lease = Duration::from_millis(600);
    let engine = engine_from(store.clone(), config, Arc::new(hcp_core::SystemClock)).await;
    let s = engine
        .create_vm(&alice(), VmSpec::new("web-1", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    // The create runs (for 30 s); then every renewal is refused.
    for _ in 0..2_000 {
        let job = engine.get_job(&Scope::All, &s.job_id).await.unwrap();
        if job.state == JobState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.refuse_renewals.store(true, Ordering::SeqCst);
    // The next renewal (a third of the lease later) is refused: the worker stops the attempt
    // and leaves the job (RUNNING, to whoever holds its lease) without ending it.
    let mut stopped = false;
    for _ in 0..400 {
        let lines = store.job_logs(&s.job_id, 0).await.unwrap();
        if lines
            .iter()
            .any(|l| l.message.contains("this worker lost the job's lease"))
        {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        stopped,
        "the attempt did not stop after its lease renewal was refused"
    );
    let job = engine.get_job(&Scope::All, &s.job_id).await.unwrap();
    assert_eq!(job.state, JobState::Running, "{job:?}");
    assert!(job.error.is_none(), "{job:?}");
}
