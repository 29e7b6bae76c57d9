//! The engine's contract, end to end on the simulator: idempotency, capability negotiation
//! before any job exists, one job per VM, per-host limits, retries of temporary errors only,
//! timeouts, cancellation, drift, stateless rebuild, job log streaming, and bad input.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hcp_core::store::{JobFilter, PageRequest, Scope};
use hcp_core::{
    Action, Capabilities, Config, Console, CreateVm, CreatedVm, DeleteVm, DeletedVm, DesiredState,
    Drift, Engine, Error, ErrorKind, EventFilter, EventKind, GetConsole, HostInfo, HostInventory,
    HostInventoryReply, JobState, JobUpdate, OpContext, PendingReason, PowerState, Principal,
    Provider, ProviderInfo, RebootVm, RebootedVm, RequestContext, Result, StartVm, StartedVm,
    StopVm, StoppedVm, VmId, VmSpec,
};
use hcp_provider_sim::SimProvider;

/// Wraps a provider: counts calls, tracks concurrency per VM and per host, injects failures.
#[derive(Debug)]
struct Probe {
    inner: Arc<dyn Provider>,
    calls: Mutex<HashMap<&'static str, usize>>,
    active_vm: Mutex<HashMap<String, usize>>,
    active_host: Mutex<HashMap<String, usize>>,
    max_vm: AtomicUsize,
    max_host: AtomicUsize,
    order: Mutex<Vec<(String, &'static str)>>,
    /// Fail the next N mutating calls with this error.
    fail: Mutex<Option<(usize, Error)>>,
    delay: Mutex<Duration>,
}

impl Probe {
    fn new(inner: Arc<dyn Provider>) -> Arc<Self> {
        Arc::new(Probe {
            inner,
            calls: Mutex::default(),
            active_vm: Mutex::default(),
            active_host: Mutex::default(),
            max_vm: AtomicUsize::new(0),
            max_host: AtomicUsize::new(0),
            order: Mutex::default(),
            fail: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
        })
    }

    fn calls(&self, op: &str) -> usize {
        self.calls.lock().unwrap().get(op).copied().unwrap_or(0)
    }

    fn fail_next(&self, n: usize, e: Error) {
        *self.fail.lock().unwrap() = Some((n, e));
    }

    fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    async fn around<T>(
        &self,
        op: &'static str,
        vm: &str,
        host: &str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
        self.order.lock().unwrap().push((vm.to_string(), op));
        let nv = {
            let mut m = self.active_vm.lock().unwrap();
            let n = m.entry(vm.to_string()).or_default();
            *n += 1;
            *n
        };
        let nh = {
            let mut m = self.active_host.lock().unwrap();
            let n = m.entry(host.to_string()).or_default();
            *n += 1;
            *n
        };
        self.max_vm.fetch_max(nv, Ordering::SeqCst);
        self.max_host.fetch_max(nh, Ordering::SeqCst);
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let injected = {
            let mut f = self.fail.lock().unwrap();
            match f.as_mut() {
                Some((n, e)) if *n > 0 => {
                    *n -= 1;
                    Some(e.clone())
                }
                _ => None,
            }
        };
        let r = match injected {
            Some(e) => Err(e),
            None => f.await,
        };
        *self.active_vm.lock().unwrap().get_mut(vm).unwrap() -= 1;
        *self.active_host.lock().unwrap().get_mut(host).unwrap() -= 1;
        r
    }
}

#[async_trait]
impl Provider for Probe {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        self.inner.list_hosts().await
    }
    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        self.inner.host_inventory(args).await
    }
    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm> {
        let (vm, host) = (args.vm_id.to_string(), args.host.clone());
        self.around("create", &vm, &host, self.inner.create_vm(ctx, args))
            .await
    }
    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        let (vm, host) = (args.target.vm_id.to_string(), args.target.host.clone());
        self.around("delete", &vm, &host, self.inner.delete_vm(ctx, args))
            .await
    }
    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        let (vm, host) = (args.target.vm_id.to_string(), args.target.host.clone());
        self.around("start", &vm, &host, self.inner.start_vm(ctx, args))
            .await
    }
    async fn stop_vm(&self, ctx: &OpContext, args: StopVm) -> Result<StoppedVm> {
        let (vm, host) = (args.target.vm_id.to_string(), args.target.host.clone());
        self.around("stop", &vm, &host, self.inner.stop_vm(ctx, args))
            .await
    }
    async fn reboot_vm(&self, ctx: &OpContext, args: RebootVm) -> Result<RebootedVm> {
        let (vm, host) = (args.target.vm_id.to_string(), args.target.host.clone());
        self.around("reboot", &vm, &host, self.inner.reboot_vm(ctx, args))
            .await
    }
    async fn console(&self, args: GetConsole) -> Result<Console> {
        self.inner.console(args).await
    }
}

struct Rig {
    engine: Engine,
    probe: Arc<Probe>,
    sim: Arc<SimProvider>,
}

fn demo_sim(config: &Config) -> Arc<SimProvider> {
    let pc = &config.providers[0];
    Arc::new(SimProvider::from_config(pc, &config.secrets).unwrap())
}

async fn engine_over(config: Config, probe: Arc<Probe>) -> Engine {
    let p: Arc<dyn Provider> = probe;
    Engine::builder(config)
        .provider_kind("sim", move |_, _| Ok(p.clone()))
        .without_background_reconcile()
        .build()
        .await
        .unwrap()
}

async fn rig_with(edit: impl FnOnce(&mut Config)) -> Rig {
    let mut config = hcp_provider_sim::demo_config();
    config.engine.retry.initial_delay = Duration::from_millis(5);
    config.engine.retry.max_delay = Duration::from_millis(20);
    edit(&mut config);
    let sim = demo_sim(&config);
    let probe = Probe::new(sim.clone());
    let engine = engine_over(config, probe.clone()).await;
    Rig { engine, probe, sim }
}

async fn rig() -> Rig {
    rig_with(|_| {}).await
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

/// Returns the job once `ready` holds for it, reading it each time the scheduler moves rather
/// than after a fixed sleep, so a slow machine cannot make the test flake (it fails only when
/// the state never comes, after 20 s).
async fn job_when(
    engine: &Engine,
    job: &hcp_core::JobId,
    ready: impl Fn(&hcp_core::Job) -> bool,
) -> hcp_core::Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let j = engine.get_job(&Scope::All, job).await.unwrap();
        if ready(&j) || tokio::time::Instant::now() >= deadline {
            return j;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait(engine: &Engine, job: &hcp_core::JobId) -> hcp_core::Job {
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(20)))
        .await
        .unwrap()
}

#[tokio::test]
async fn create_runs_to_active_and_lists_in_its_project_only() {
    let r = rig().await;
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("web-1", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert_eq!(job.attempts, 1);
    assert_eq!(job.progress, 100);
    let vm = r.engine.get_vm(&alice().scope(), &s.vm_id).await.unwrap();
    assert_eq!(vm.desired, DesiredState::Active);
    assert_eq!(vm.power, PowerState::Running);
    assert!(vm.binding.native_id.is_some());
    let other = Scope::Project("other".into());
    assert_eq!(
        r.engine.get_vm(&other, &s.vm_id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(
        r.engine
            .list_vms(&other, &PageRequest::all())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        r.engine
            .get_job(&other, &s.job_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let listed = r
        .engine
        .list_vms(&alice().scope(), &PageRequest::all())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
}

#[tokio::test]
async fn idempotent_replay_calls_no_provider_and_key_reuse_is_refused() {
    let r = rig().await;
    let ctx = alice().with_idempotency_key(Some("k-1".into()));
    let spec = VmSpec::new("web-1", "ubuntu-24.04", "small");
    let a = r.engine.create_vm(&ctx, spec.clone()).await.unwrap();
    wait(&r.engine, &a.job_id).await;
    let b = r.engine.create_vm(&ctx, spec.clone()).await.unwrap();
    assert!(b.replayed);
    assert_eq!((a.vm_id.clone(), a.job_id.clone()), (b.vm_id, b.job_id));
    assert_eq!(r.probe.calls("create"), 1, "a replay calls no provider");
    let e = r
        .engine
        .create_vm(&ctx, VmSpec::new("web-2", "ubuntu-24.04", "small"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.code(), "IDEMPOTENCY_KEY_REUSED");
    // The key is scoped to the principal: bob's k-1 is a different request.
    let bob =
        RequestContext::new("demo", Principal::new("bob")).with_idempotency_key(Some("k-1".into()));
    let c = r
        .engine
        .create_vm(&bob, VmSpec::new("web-3", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    assert!(!c.replayed);
    // Two identical requests racing: one is accepted, the other replays or is told to retry.
    let race = alice().with_idempotency_key(Some("k-race".into()));
    let spec4 = VmSpec::new("web-4", "ubuntu-24.04", "small");
    let (x, y) = tokio::join!(
        r.engine.create_vm(&race, spec4.clone()),
        r.engine.create_vm(&race, spec4)
    );
    let oks: Vec<_> = [&x, &y]
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .collect();
    assert!(!oks.is_empty());
    for res in [&x, &y] {
        if let Err(e) = res {
            assert_eq!(e.code(), "IDEMPOTENCY_KEY_IN_PROGRESS", "{e}");
        }
    }
    if oks.len() == 2 {
        assert_eq!(oks[0].job_id, oks[1].job_id);
    }
}

#[tokio::test]
async fn missing_capability_is_refused_before_any_job_exists() {
    let r = rig().await;
    let spec = VmSpec::new("cloudy", "ubuntu-24.04", "small")
        .with_zone("zone-b")
        .with_user_data("#cloud-config\n");
    let e = r.engine.create_vm(&alice(), spec).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported);
    let text = e.to_string();
    assert!(
        text.contains("sim") && text.contains("cloud_init") && text.contains("create_vm"),
        "{text}"
    );
    let jobs = r
        .engine
        .list_jobs(&Scope::All, &JobFilter::default(), &PageRequest::all())
        .await
        .unwrap();
    assert!(jobs.items.is_empty(), "no job exists");
    assert!(
        r.engine
            .list_vms(&Scope::All, &PageRequest::all())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(r.probe.calls("create"), 0);
    // The same request in zone-a is fine, and zone capabilities tell a client beforehand.
    assert!(!r.engine.capabilities(Some("zone-b")).unwrap().cloud_init);
    assert!(r.engine.capabilities(Some("zone-a")).unwrap().cloud_init);
    let ok = VmSpec::new("cloudy", "ubuntu-24.04", "small")
        .with_zone("zone-a")
        .with_user_data("#cloud-config\n");
    let s = r.engine.create_vm(&alice(), ok).await.unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    // Snapshots are refused on zone-b hosts before a job exists.
    let b = r
        .engine
        .create_vm(
            &alice(),
            VmSpec::new("plain", "ubuntu-24.04", "small").with_zone("zone-b"),
        )
        .await
        .unwrap();
    wait(&r.engine, &b.job_id).await;
    let e = r
        .engine
        .submit(
            &alice(),
            Action::Snapshot {
                vm_id: b.vm_id.clone(),
                name: "s1".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported);
    assert_eq!(e.context_value("capability"), Some("snapshot"));
}

#[tokio::test]
async fn bad_input_names_the_field_and_creates_nothing() {
    let r = rig().await;
    let cases: Vec<(RequestContext, VmSpec, &str)> = vec![
        (alice(), VmSpec::new("", "ubuntu-24.04", "small"), "name"),
        (
            alice(),
            VmSpec::new("Web_1", "ubuntu-24.04", "small"),
            "name",
        ),
        (
            alice(),
            VmSpec {
                vcpus: Some(0),
                ..VmSpec::new("a", "ubuntu-24.04", "small")
            },
            "vcpus",
        ),
        (alice(), VmSpec::new("a", "debian", "small"), "image"),
        (alice(), VmSpec::new("a", "ubuntu-24.04", "huge"), "flavor"),
        (
            alice(),
            VmSpec::new("a", "ubuntu-24.04", "small").with_zone("zone-z"),
            "zone",
        ),
        (
            alice(),
            VmSpec::new("a", "windows-2022", "small"),
            "disk_gib",
        ),
        (
            RequestContext::new("nope", Principal::new("alice")),
            VmSpec::new("a", "ubuntu-24.04", "small"),
            "project",
        ),
        (
            RequestContext::new("Bad Project", Principal::new("alice")),
            VmSpec::new("a", "ubuntu-24.04", "small"),
            "project",
        ),
    ];
    for (ctx, spec, field) in cases {
        let e = r.engine.create_vm(&ctx, spec.clone()).await.unwrap_err();
        assert_eq!(e.field(), Some(field), "{spec:?}: {e}");
        assert!(
            matches!(e.kind(), ErrorKind::InvalidSpec | ErrorKind::NotFound),
            "{e}"
        );
    }
    assert!(
        r.engine
            .list_vms(&Scope::All, &PageRequest::all())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(r.probe.calls("create"), 0);
    let e = r
        .engine
        .start_vm(&alice(), &VmId::new("vm-nope"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn jobs_on_one_vm_never_overlap_and_run_in_order() {
    let r = rig().await;
    r.probe.set_delay(Duration::from_millis(20));
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("busy", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let stop = r.engine.stop_vm(&alice(), &s.vm_id, false).await.unwrap();
    let start = r.engine.start_vm(&alice(), &s.vm_id).await.unwrap();
    let reboot = r.engine.reboot_vm(&alice(), &s.vm_id, false).await.unwrap();
    // While the create runs, the next job says why it waits.
    let queued = r.engine.get_job(&Scope::All, &stop.job_id).await.unwrap();
    assert_eq!(queued.state, JobState::Pending);
    let expected = Some(PendingReason::WaitingForVm {
        blocking_job: s.job_id.clone(),
    });
    let queued = job_when(&r.engine, &stop.job_id, |j| j.pending_reason == expected).await;
    assert_eq!(queued.pending_reason, expected);
    for j in [&s.job_id, &stop.job_id, &start.job_id, &reboot.job_id] {
        assert_eq!(wait(&r.engine, j).await.state, JobState::Succeeded);
    }
    assert_eq!(
        r.probe.max_vm.load(Ordering::SeqCst),
        1,
        "never two operations on one VM at once"
    );
    let ops: Vec<&str> = r
        .probe
        .order
        .lock()
        .unwrap()
        .iter()
        .filter(|(v, _)| v == s.vm_id.as_str())
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(ops, ["create", "stop", "start", "reboot"]);
}

#[tokio::test]
async fn per_host_cap_holds_and_other_hosts_are_not_starved() {
    let r = rig_with(|c| {
        c.engine.max_jobs_per_host = 2;
        c.engine.max_concurrent_jobs = 8;
    })
    .await;
    r.probe.set_delay(Duration::from_millis(30));
    let mut jobs = Vec::new();
    for i in 0..8 {
        let spec = VmSpec::new(format!("a{i}"), "ubuntu-24.04", "small");
        let s = r
            .engine
            .submit(
                &alice(),
                Action::Create {
                    spec,
                    host: Some("sim-a1".into()),
                },
            )
            .await
            .unwrap();
        jobs.push(s.job_id);
    }
    let other = r
        .engine
        .create_vm(
            &alice(),
            VmSpec::new("b0", "ubuntu-24.04", "small").with_zone("zone-b"),
        )
        .await
        .unwrap();
    let waiting = job_when(&r.engine, &jobs[7], |j| {
        matches!(
            j.pending_reason,
            Some(PendingReason::WaitingForHostSlot { .. })
        )
    })
    .await;
    assert!(
        matches!(&waiting.pending_reason, Some(PendingReason::WaitingForHostSlot { host, limit: 2 }) if host == "sim-a1"),
        "{:?}",
        waiting.pending_reason
    );
    // The zone-b job is not stuck behind the busy host.
    let b = wait(&r.engine, &other.job_id).await;
    let last = r.engine.get_job(&Scope::All, &jobs[7]).await.unwrap();
    assert_eq!(b.state, JobState::Succeeded);
    assert!(
        !last.state.is_terminal(),
        "the zone-b job finished before the busy host's queue drained"
    );
    for j in &jobs {
        assert_eq!(wait(&r.engine, j).await.state, JobState::Succeeded);
    }
    assert_eq!(r.probe.max_host.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn temporary_errors_are_retried_and_permanent_ones_are_not() {
    let r = rig().await;
    r.probe.fail_next(
        2,
        Error::new(ErrorKind::ProviderUnavailable, "WinRM busy").temporary(),
    );
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("retry", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.attempts, 3);
    let logs = r.engine.store().job_logs(&s.job_id, 0).await.unwrap();
    assert!(
        logs.iter().any(|l| l.message.contains("retrying")),
        "{logs:?}"
    );

    r.probe
        .fail_next(1, Error::new(ErrorKind::ProviderError, "access denied"));
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("perm", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, 1);
    assert_eq!(job.error.as_ref().unwrap().kind, ErrorKind::ProviderError);
    let vm = r.engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
    assert_eq!(vm.desired, DesiredState::Error);
    assert!(vm.last_error.is_some());

    // Attempts are bounded: a host that never recovers fails the job after max_attempts.
    r.probe.fail_next(
        100,
        Error::new(ErrorKind::ProviderUnavailable, "down").temporary(),
    );
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("never", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts, r.engine.settings().retry.max_attempts);
    assert_eq!(
        job.error.as_ref().unwrap().kind,
        ErrorKind::ProviderUnavailable
    );
}

#[tokio::test]
async fn a_job_past_its_timeout_fails_and_leaves_nothing_half_created() {
    let r = rig_with(|c| c.engine.job_timeout = Duration::from_millis(100)).await;
    r.probe.set_delay(Duration::from_millis(600));
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("slow", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_ref().unwrap().kind, ErrorKind::Timeout);
    r.probe.set_delay(Duration::ZERO);
    let inv = r.sim.state().unwrap();
    assert!(
        inv.hosts.values().all(|h| h.vms.is_empty()),
        "no VM left on any host"
    );
}

#[tokio::test]
async fn cancelling_a_queued_job_ends_it_and_frees_the_vm_queue() {
    let r = rig().await;
    r.probe.set_delay(Duration::from_millis(50));
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("c1", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let stop = r.engine.stop_vm(&alice(), &s.vm_id, false).await.unwrap();
    let start = r.engine.start_vm(&alice(), &s.vm_id).await.unwrap();
    let cancelled = r
        .engine
        .cancel_job(&alice().scope(), &stop.job_id, &Principal::new("alice"))
        .await
        .unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        wait(&r.engine, &start.job_id).await.state,
        JobState::Succeeded
    );
    assert_eq!(r.probe.calls("stop"), 0);
    let e = r
        .engine
        .cancel_job(&alice().scope(), &stop.job_id, &Principal::new("alice"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn watching_a_job_gives_past_lines_live_lines_then_the_end() {
    let r = rig().await;
    r.probe.set_delay(Duration::from_millis(30));
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("w", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let mut w = r
        .engine
        .watch_job(&alice().scope(), &s.job_id)
        .await
        .unwrap();
    let mut lines = Vec::new();
    let mut end = None;
    while let Some(u) = w.next().await {
        match u {
            JobUpdate::Log(l) => lines.push(l),
            JobUpdate::End(j) => end = Some(j),
            JobUpdate::Status { .. } => {}
        }
    }
    let end = end.expect("an end event");
    assert_eq!(end.state, JobState::Succeeded);
    assert!(lines.len() >= 2, "{lines:?}");
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps or repeats: {seqs:?}"
    );
    // Watching a finished job replays the same lines and the end.
    let mut again = r
        .engine
        .watch_job(&alice().scope(), &s.job_id)
        .await
        .unwrap();
    let mut n = 0;
    while let Some(u) = again.next().await {
        if let JobUpdate::Log(_) = u {
            n += 1;
        }
    }
    assert_eq!(n, lines.len());
    let e = r
        .engine
        .watch_job(&Scope::Project("other".into()), &s.job_id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn drift_is_classified_reported_once_and_power_restored_per_policy() {
    let r = rig_with(|c| c.engine.drift_policy = hcp_core::DriftPolicy::RestorePower).await;
    let a = r
        .engine
        .create_vm(&alice(), VmSpec::new("a", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let b = r
        .engine
        .create_vm(&alice(), VmSpec::new("b", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    wait(&r.engine, &a.job_id).await;
    wait(&r.engine, &b.job_id).await;
    let native = |id: &VmId| {
        let engine = r.engine.clone();
        let id = id.clone();
        async move {
            engine
                .get_vm(&Scope::All, &id)
                .await
                .unwrap()
                .binding
                .native_id
                .unwrap()
        }
    };
    r.sim
        .set_power(&native(&a.vm_id).await, PowerState::Stopped)
        .unwrap();
    r.sim.remove_vm(&native(&b.vm_id).await).unwrap();
    r.sim
        .seed_vm(
            "sim-a2",
            hcp_provider_sim::SimVm::new("stranger", PowerState::Running, Default::default(), None),
        )
        .unwrap();
    let report = r.engine.refresh_inventory().await.unwrap();
    assert!(
        report
            .drift
            .iter()
            .any(|d| matches!(d, Drift::PowerMismatch { vm_id, .. } if *vm_id == a.vm_id))
    );
    assert!(
        report
            .drift
            .iter()
            .any(|d| matches!(d, Drift::Missing { vm_id, .. } if *vm_id == b.vm_id))
    );
    assert!(
        report
            .drift
            .iter()
            .any(|d| matches!(d, Drift::Unmanaged { name, .. } if name == "stranger"))
    );
    assert_eq!(report.repairs, 1);
    let repair = r
        .engine
        .list_jobs(
            &Scope::All,
            &JobFilter {
                vm_id: Some(a.vm_id.clone()),
                state: None,
            },
            &PageRequest::all(),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|j| &*j.principal.subject == "system:reconciler")
        .expect("a repair job");
    assert_eq!(wait(&r.engine, &repair.id).await.state, JobState::Succeeded);
    let vm_b = r.engine.get_vm(&Scope::All, &b.vm_id).await.unwrap();
    assert!(!vm_b.present);
    // Drift events are emitted once, not at every refresh.
    r.engine.refresh_inventory().await.unwrap();
    let events = r.engine.list_events(&EventFilter::default()).await.unwrap();
    let missing = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Drift(Drift::Missing { .. })))
        .count();
    assert_eq!(missing, 1);
    // An operator's "reconcile now" is attributed to them.
    let now = r
        .engine
        .reconcile_now(&Principal::new("operator-olga"))
        .await
        .unwrap();
    assert_eq!(now.hosts_ok, 3);
    let events = r.engine.list_events(&EventFilter::default()).await.unwrap();
    let asked = events
        .iter()
        .find(|e| e.kind.name() == "reconcile_requested")
        .expect("an audit event");
    assert_eq!(asked.principal.as_deref(), Some("operator-olga"));
    // The unmanaged VM is visible to operators, never to a tenant.
    assert!(
        r.engine
            .inventory_vms()
            .iter()
            .any(|v| v.name == "stranger" && v.vm_id.is_none())
    );
    let tenant = r
        .engine
        .list_vms(&alice().scope(), &PageRequest::all())
        .await
        .unwrap();
    assert!(tenant.items.iter().all(|v| v.spec.name != "stranger"));
}

#[tokio::test]
async fn an_engine_with_an_empty_store_rebuilds_vms_from_the_hosts() {
    let config = hcp_provider_sim::demo_config();
    let sim = demo_sim(&config);
    let probe = Probe::new(sim.clone());
    let first = engine_over(config.clone(), probe.clone()).await;
    let mut made = HashMap::new();
    for (project, name) in [("demo", "x1"), ("demo", "x2"), ("ops", "y1")] {
        let ctx = RequestContext::new(project, Principal::new("alice"));
        let s = match first
            .create_vm(&ctx, VmSpec::new(name, "ubuntu-24.04", "small"))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                // `ops` is not a configured project in the demo: it is refused by name.
                assert_eq!(e.field(), Some("project"));
                continue;
            }
        };
        wait(&first, &s.job_id).await;
        made.insert(s.vm_id.clone(), (project, name));
    }
    drop(first);
    let started = chrono::Utc::now();
    let second = engine_over(config, Probe::new(sim.clone())).await;
    let all = second
        .list_vms(&Scope::All, &PageRequest::all())
        .await
        .unwrap();
    let rebuilt: HashSet<(VmId, String, String)> = all
        .items
        .iter()
        .map(|v| (v.id.clone(), v.project.to_string(), v.spec.name.clone()))
        .collect();
    let expected: HashSet<(VmId, String, String)> = made
        .iter()
        .map(|(id, (p, n))| (id.clone(), p.to_string(), n.to_string()))
        .collect();
    assert_eq!(rebuilt, expected);
    for v in &all.items {
        assert_eq!(v.desired, DesiredState::Active);
        assert_eq!(v.spec.flavor.as_deref(), Some("small"));
        assert_eq!(
            (v.spec.vcpus, v.spec.memory_mib, v.spec.disk_gib),
            (None, None, None),
            "sizes stay implied by the flavor"
        );
        assert!(
            v.created_at < started,
            "the creation time comes from the host's mark"
        );
    }
    let events = second.list_events(&EventFilter::default()).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::VmAdopted { .. }))
            .count(),
        made.len()
    );
    // The rebuilt VMs are fully usable.
    let (id, _) = made.iter().next().unwrap();
    let d = second.delete_vm(&alice(), id, true).await.unwrap();
    assert_eq!(wait(&second, &d.job_id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn capacity_and_quota_refuse_before_a_job_exists() {
    let r = rig_with(|c| {
        c.projects[0].quota.max_vms = Some(2);
    })
    .await;
    for n in ["q1", "q2"] {
        let s = r
            .engine
            .create_vm(&alice(), VmSpec::new(n, "ubuntu-24.04", "small"))
            .await
            .unwrap();
        wait(&r.engine, &s.job_id).await;
    }
    let e = r
        .engine
        .create_vm(&alice(), VmSpec::new("q3", "ubuntu-24.04", "small"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
    let big = VmSpec {
        vcpus: Some(64),
        ..VmSpec::new("big", "ubuntu-24.04", "small")
    };
    let r2 = rig().await;
    // Larger than any host: a bad request naming the field, not a full zone.
    let e = r2.engine.create_vm(&alice(), big).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("vcpus"), "{e}");
    assert!(e.to_string().contains("more than 32 vCPUs"), "{e}");
    // A size some host could hold, while every host is full: capacity exhausted.
    let fills = VmSpec {
        vcpus: Some(16),
        ..VmSpec::new("fill-b", "ubuntu-24.04", "small").with_zone("zone-b")
    };
    let s = r2.engine.create_vm(&alice(), fills).await.unwrap();
    wait(&r2.engine, &s.job_id).await;
    let e = r2
        .engine
        .create_vm(
            &alice(),
            VmSpec::new("no-room", "ubuntu-24.04", "small").with_zone("zone-b"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert!(e.to_string().contains("1 vCPUs"), "{e}");
    // A name is unique in its project.
    let s = r2
        .engine
        .create_vm(&alice(), VmSpec::new("dup", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    wait(&r2.engine, &s.job_id).await;
    let e = r2
        .engine
        .create_vm(&alice(), VmSpec::new("dup", "ubuntu-24.04", "small"))
        .await
        .unwrap_err();
    assert_eq!((e.kind(), e.field()), (ErrorKind::Conflict, Some("name")));
}

#[tokio::test]
async fn delete_and_console_follow_the_vm_lifecycle() {
    let r = rig().await;
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("d", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    wait(&r.engine, &s.job_id).await;
    let c = r.engine.console(&alice(), &s.vm_id, None).await.unwrap();
    assert!(c.expires_at > chrono::Utc::now());
    // A plain delete of a running VM shuts it down first, then deletes it.
    let d = r.engine.delete_vm(&alice(), &s.vm_id, false).await.unwrap();
    assert_eq!(wait(&r.engine, &d.job_id).await.state, JobState::Succeeded);
    assert_eq!(
        r.engine
            .get_vm(&Scope::All, &s.vm_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let events = r
        .engine
        .list_events(&EventFilter {
            vm_id: Some(s.vm_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert!(
        names.contains(&"vm_created")
            && names.contains(&"vm_deleted")
            && names.contains(&"console_opened"),
        "{names:?}"
    );
    assert!(events.iter().all(|e| e.principal.is_some()));
}

#[tokio::test]
async fn a_bad_hosts_file_names_key_and_line_and_unknown_kinds_are_refused() {
    let text =
        hcp_provider_sim::DEMO_HOSTS_FILE.replace("kind: sim", "kind: sim\n    colour: blue");
    let e = Config::from_yaml(&text, "hosts.yaml").unwrap_err();
    assert!(
        e.to_string().contains("colour") && e.to_string().contains("line"),
        "{e}"
    );
    let mut config = hcp_provider_sim::demo_config();
    config.providers[0].kind = "vmware".into();
    let e = hcp_provider_sim::register(Engine::builder(config))
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("providers[0].kind"));
    assert!(e.to_string().contains("sim"), "{e}");
}

#[tokio::test]
async fn sim_settings_inject_faults_and_down_hosts() {
    let mut config = hcp_provider_sim::demo_config();
    config.providers[0].settings =
        serde_json::json!({"down_hosts": ["sim-a1", "sim-a2"], "images": ["ubuntu-24.04"]});
    let engine = hcp_provider_sim::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    let hosts = engine.hosts();
    assert!(
        hosts
            .iter()
            .filter(|h| h.zone == "zone-a")
            .all(|h| !h.available)
    );
    assert!(engine.is_ready(), "one host still answers");
    let e = engine
        .create_vm(
            &alice(),
            VmSpec::new("x", "ubuntu-24.04", "small").with_zone("zone-a"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable);
    assert!(e.is_temporary());
}

#[tokio::test]
async fn cancelling_a_running_create_removes_what_it_made() {
    let r = rig().await;
    r.probe.set_delay(Duration::from_millis(300));
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("half", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    // Wait until it runs, then cancel it.
    for _ in 0..100 {
        if r.engine
            .get_job(&Scope::All, &s.job_id)
            .await
            .unwrap()
            .state
            == JobState::Running
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    r.engine
        .cancel_job(&alice().scope(), &s.job_id, &Principal::new("alice"))
        .await
        .unwrap();
    r.probe.set_delay(Duration::ZERO);
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        r.engine
            .get_vm(&Scope::All, &s.vm_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert!(
        r.sim
            .state()
            .unwrap()
            .hosts
            .values()
            .all(|h| h.vms.is_empty()),
        "nothing left on any host"
    );
    // The name is free again.
    let again = r
        .engine
        .create_vm(&alice(), VmSpec::new("half", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    assert_eq!(
        wait(&r.engine, &again.job_id).await.state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn a_hosts_vm_count_moves_with_its_used_capacity() {
    let r = rig().await;
    let count = |engine: &Engine| -> (usize, u32) {
        engine
            .hosts()
            .iter()
            .fold((0, 0), |(n, v), h| (n + h.vm_count, v + h.vcpus_used))
    };
    let (vms0, vcpus0) = count(&r.engine);
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("counted", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    let (vms1, vcpus1) = count(&r.engine);
    assert!(vcpus1 > vcpus0, "the create uses vCPUs");
    assert_eq!(
        vms1,
        vms0 + 1,
        "and the VM is counted at once, not at the next refresh"
    );
    let d = r.engine.delete_vm(&alice(), &s.vm_id, true).await.unwrap();
    assert_eq!(wait(&r.engine, &d.job_id).await.state, JobState::Succeeded);
    let (vms2, vcpus2) = count(&r.engine);
    assert_eq!((vms2, vcpus2), (vms0, vcpus0), "a delete gives both back");
}

/// Placement honours the images each host reports: a VM lands on a host that has its image,
/// and an image no host of the zone has is refused before any job exists.
#[tokio::test]
async fn placement_honours_the_images_each_host_reports() {
    let mut config = hcp_provider_sim::demo_config();
    config.providers[0].settings = serde_json::json!({
        "host_images": {"sim-a1": ["ubuntu-24.04"], "sim-a2": ["ubuntu-24.04", "windows-2022"]}
    });
    let engine = hcp_provider_sim::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    for i in 0..3 {
        let mut spec = VmSpec::new(format!("win-{i}"), "windows-2022", "small").with_zone("zone-a");
        spec.disk_gib = Some(40);
        let s = engine.create_vm(&alice(), spec).await.unwrap();
        let job = wait(&engine, &s.job_id).await;
        assert_eq!(job.state, hcp_core::JobState::Succeeded, "{:?}", job.error);
        let vm = engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
        assert_eq!(&*vm.binding.host, "sim-a2", "only sim-a2 has the image");
    }
    let jobs = engine
        .list_jobs(&Scope::All, &Default::default(), &Default::default())
        .await
        .unwrap()
        .items
        .len();
    // windows-2022 in zone-b: its one host reports only the provider-wide default (any image),
    // so only zone-a's hosts are narrowed. An image that zone-a's hosts both lack:
    let mut config = hcp_provider_sim::demo_config();
    config.providers[0].settings = serde_json::json!({
        "host_images": {"sim-a1": ["ubuntu-24.04"], "sim-a2": ["ubuntu-24.04"]}
    });
    let narrow = hcp_provider_sim::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    let mut spec = VmSpec::new("win", "windows-2022", "small").with_zone("zone-a");
    spec.disk_gib = Some(40);
    let e = narrow.create_vm(&alice(), spec).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("image"), "{e}");
    assert!(
        e.to_string().contains("images offered there: ubuntu-24.04"),
        "what is allowed: {e}"
    );
    assert!(!e.to_string().contains("sim-a"), "no host names: {e}");
    let none = narrow
        .list_jobs(&Scope::All, &Default::default(), &Default::default())
        .await
        .unwrap()
        .items;
    assert!(none.is_empty(), "refused before any job exists: {none:?}");
    assert_eq!(jobs, 3);
}

/// Placement honours what each target reports per image and per network: an image whose VMs
/// take no user-data there is refused with user-data before any job exists, naming `user_data`
/// and the images that take it; a VM asking for a network only one host reaches lands there;
/// a network no host of the zone reaches is refused naming `networks[i].network` and the
/// networks offered. No refusal names a host.
#[tokio::test]
async fn placement_honours_per_image_capabilities_and_the_networks_each_target_reports() {
    let yaml = hcp_provider_sim::DEMO_HOSTS_FILE
        .replace(
            "      images: [ubuntu-24.04, windows-2022]\n",
            "      images: [ubuntu-24.04, windows-2022]\n      image_disable: {windows-2022: [cloud_init]}\n      networks: [default]\n      host_networks: {sim-a2: [default, dmz]}\n",
        )
        .replace(
            "    - {name: default, description: The default tenant network}\n",
            "    - {name: default, description: The default tenant network}\n    - {name: dmz}\n    - {name: storage}\n",
        );
    let config = Config::from_yaml(&yaml, "test hosts file").unwrap();
    let engine = hcp_provider_sim::register(Engine::builder(config))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    let jobs = |engine: &Engine| {
        let engine = engine.clone();
        async move {
            engine
                .list_jobs(&Scope::All, &Default::default(), &Default::default())
                .await
                .unwrap()
                .items
                .len()
        }
    };

    let mut win = VmSpec::new("win", "windows-2022", "small")
        .with_zone("zone-a")
        .with_user_data("#cloud-config\n");
    win.disk_gib = Some(40);
    let e = engine.create_vm(&alice(), win.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert_eq!(e.field(), Some("user_data"), "{e}");
    assert!(
        e.to_string().contains("images that do: ubuntu-24.04"),
        "{e}"
    );
    assert!(!e.to_string().contains("sim-a"), "no host names: {e}");
    // A zone without cloud-init at all names the field too.
    let b = VmSpec::new("lin-b", "ubuntu-24.04", "small")
        .with_zone("zone-b")
        .with_user_data("#cloud-config\n");
    let e = engine.create_vm(&alice(), b).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FeatureNotSupported, "{e}");
    assert_eq!(e.field(), Some("user_data"), "{e}");
    assert_eq!(jobs(&engine).await, 0, "refused before any job exists");

    // Without user-data the image is served; with it, the image that takes it is.
    win.user_data = None;
    let s = engine.create_vm(&alice(), win).await.unwrap();
    assert_eq!(wait(&engine, &s.job_id).await.state, JobState::Succeeded);
    let ubuntu = VmSpec::new("lin", "ubuntu-24.04", "small")
        .with_zone("zone-a")
        .with_user_data("#cloud-config\n");
    let s = engine.create_vm(&alice(), ubuntu).await.unwrap();
    assert_eq!(wait(&engine, &s.job_id).await.state, JobState::Succeeded);

    for i in 0..2 {
        let mut spec = VmSpec::new(format!("dmz-{i}"), "ubuntu-24.04", "small").with_zone("zone-a");
        spec.networks = ["default", "dmz"]
            .iter()
            .map(|n| hcp_core::NetworkAttachment {
                network: (*n).into(),
            })
            .collect();
        let s = engine.create_vm(&alice(), spec).await.unwrap();
        let job = wait(&engine, &s.job_id).await;
        assert_eq!(job.state, JobState::Succeeded, "{:?}", job.error);
        let vm = engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
        assert_eq!(&*vm.binding.host, "sim-a2", "only sim-a2 reaches dmz");
    }
    let before = jobs(&engine).await;
    let mut spec = VmSpec::new("st", "ubuntu-24.04", "small").with_zone("zone-a");
    spec.networks = ["default", "storage"]
        .iter()
        .map(|n| hcp_core::NetworkAttachment {
            network: (*n).into(),
        })
        .collect();
    let e = engine.create_vm(&alice(), spec).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("networks[1].network"), "{e}");
    assert!(
        e.to_string()
            .contains("networks offered there: default, dmz"),
        "{e}"
    );
    assert!(!e.to_string().contains("sim-"), "no host names: {e}");
    assert_eq!(jobs(&engine).await, before, "refused before any job exists");
}

#[tokio::test]
async fn the_simulators_console_url_names_the_vm_by_hcps_id_never_its_host_or_native_id() {
    let r = rig().await;
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("c", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    wait(&r.engine, &s.job_id).await;
    let vm = r.engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
    let binding = vm.binding.clone();
    let native = binding.native_id.clone().expect("created");
    let c = r.engine.console(&alice(), &s.vm_id, None).await.unwrap();
    let url = c.url.clone();
    assert!(url.contains(s.vm_id.as_str()), "{url}");
    let path = url.split('?').next().unwrap();
    for secret in [
        native.as_str(),
        binding.host.as_ref(),
        binding.provider.as_ref(),
    ] {
        assert!(
            !path.split('/').any(|seg| seg == secret),
            "{secret} in {url}"
        );
    }
}

/// Groups zone-a's two demo hosts (4 vCPUs and 8 GiB each) into the cluster `cl-a`, capped at
/// `max_jobs` jobs at once.
fn cluster_a(c: &mut Config, max_jobs: Option<usize>) {
    let p = &mut c.providers[0];
    for h in p.hosts.iter_mut().filter(|h| h.zone == "zone-a") {
        h.cluster = Some("cl-a".into());
        h.vcpus = Some(4);
        h.memory_mib = Some(8192);
    }
    p.clusters.push(
        serde_json::from_value(serde_json::json!({
            "name": "cl-a", "zone": "zone-a", "max_jobs": max_jobs,
        }))
        .unwrap(),
    );
}

fn sized(name: &str, vcpus: u32, memory_mib: u64) -> VmSpec {
    let mut spec = VmSpec::new(name, "ubuntu-24.04", "small").with_zone("zone-a");
    spec.vcpus = Some(vcpus);
    spec.memory_mib = Some(memory_mib);
    spec
}

#[tokio::test]
async fn a_cluster_target_places_on_a_member_and_reports_the_sum() {
    let r = rig_with(|c| cluster_a(c, None)).await;
    r.engine.refresh_inventory().await.unwrap();
    let hosts = r.engine.hosts();
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["cl-a", "sim-b1"],
        "members are placed on through their cluster"
    );
    let cl = &hosts[0];
    assert_eq!(cl.kind, hcp_core::TargetKind::Cluster);
    assert_eq!((cl.vcpus_total, cl.memory_mib_total), (8, 16384));
    let members: Vec<(&str, u32, u64)> = cl
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.vcpus_total, m.memory_mib_total))
        .collect();
    assert_eq!(members, [("sim-a1", 4, 8192), ("sim-a2", 4, 8192)]);

    // Two VMs of 6 GiB: the cluster puts them on different members (most free memory first).
    let mut placed = Vec::new();
    for name in ["c1", "c2"] {
        let s = r
            .engine
            .create_vm(&alice(), sized(name, 2, 6144))
            .await
            .unwrap();
        assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
        let vm = r.engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
        assert_eq!(&*vm.binding.host, "cl-a");
        let member = vm
            .binding
            .member_host
            .clone()
            .expect("the create names its host");
        let on_sim = &r.sim.state().unwrap().hosts[&member];
        assert!(
            on_sim.vms.values().any(|v| v.name == name),
            "{name} is on {member} in the simulator"
        );
        placed.push((s.vm_id, member));
    }
    assert_ne!(placed[0].1, placed[1].1, "each member took one VM");

    r.engine.refresh_inventory().await.unwrap();
    let cl = r.engine.hosts().into_iter().next().unwrap();
    assert_eq!(
        (cl.vcpus_used, cl.memory_mib_used, cl.vm_count),
        (4, 12288, 2)
    );
    assert!(
        cl.members
            .iter()
            .all(|m| (m.vcpus_used, m.memory_mib_used) == (2, 6144))
    );
    let inv = r.engine.inventory_vms();
    let c1 = inv
        .iter()
        .find(|v| v.vm_id.as_ref() == Some(&placed[0].0))
        .unwrap();
    assert_eq!(
        (c1.host.as_str(), c1.cluster.as_deref()),
        (placed[0].1.as_str(), Some("cl-a"))
    );

    // Day-2 operations reach the VM through its cluster.
    let stop = r
        .engine
        .stop_vm(&alice(), &placed[0].0, false)
        .await
        .unwrap();
    assert_eq!(
        wait(&r.engine, &stop.job_id).await.state,
        JobState::Succeeded
    );
    let del = r
        .engine
        .delete_vm(&alice(), &placed[0].0, false)
        .await
        .unwrap();
    assert_eq!(
        wait(&r.engine, &del.job_id).await.state,
        JobState::Succeeded
    );
    let left: usize = r
        .sim
        .state()
        .unwrap()
        .hosts
        .values()
        .map(|h| h.vms.len())
        .sum();
    assert_eq!(left, 1);
}

#[tokio::test]
async fn a_vm_that_fits_no_single_member_is_refused_though_the_sum_would_fit() {
    let r = rig_with(|c| cluster_a(c, None)).await;
    let jobs_before = r.probe.calls("create");
    // 6 vCPUs: the cluster has 8, but no member more than 4.
    let e = r
        .engine
        .create_vm(&alice(), sized("wide", 6, 1024))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("vcpus"), "{e}");
    assert!(e.message().contains("more than 4 vCPUs"), "{e}");
    let e = r
        .engine
        .create_vm(&alice(), sized("tall", 1, 12288))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("memory_mib"), "{e}");

    // Fill each member to 2 GiB free: 4 GiB free in sum, but no 3 GiB VM fits one host.
    for name in ["f1", "f2"] {
        let s = r
            .engine
            .create_vm(&alice(), sized(name, 1, 6144))
            .await
            .unwrap();
        assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    }
    r.engine.refresh_inventory().await.unwrap();
    let cl = r.engine.hosts().into_iter().next().unwrap();
    assert_eq!(cl.memory_mib_total - cl.memory_mib_used, 4096);
    let e = r
        .engine
        .create_vm(&alice(), sized("split", 1, 3072))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert_eq!(e.code(), hcp_core::CODE_CAPACITY_EXHAUSTED, "{e}");
    assert_eq!(
        r.probe.calls("create"),
        jobs_before + 2,
        "refused before any job"
    );
    // 2 GiB still fits one member.
    let s = r
        .engine
        .create_vm(&alice(), sized("fits", 1, 2048))
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
}

/// Submits `n` creates in `zone` and returns their jobs.
async fn creates(r: &Rig, zone: &str, n: usize) -> Vec<hcp_core::JobId> {
    let mut jobs = Vec::new();
    for i in 0..n {
        let spec = VmSpec::new(format!("{zone}-{i}"), "ubuntu-24.04", "small").with_zone(zone);
        jobs.push(r.engine.create_vm(&alice(), spec).await.unwrap().job_id);
    }
    jobs
}

#[tokio::test]
async fn a_cluster_runs_at_most_its_own_max_jobs() {
    let r = rig_with(|c| {
        cluster_a(c, Some(1));
        c.engine.max_jobs_per_host = 4;
    })
    .await;
    r.probe.set_delay(Duration::from_millis(20));
    let jobs = creates(&r, "zone-a", 4).await;
    let waiting = job_when(&r.engine, &jobs[3], |j| {
        matches!(
            j.pending_reason,
            Some(PendingReason::WaitingForHostSlot { .. })
        )
    })
    .await;
    assert!(
        matches!(&waiting.pending_reason, Some(PendingReason::WaitingForHostSlot { host, limit: 1 }) if host == "cl-a"),
        "{:?}",
        waiting.pending_reason
    );
    for j in &jobs {
        assert_eq!(wait(&r.engine, j).await.state, JobState::Succeeded);
    }
    assert_eq!(r.probe.max_host.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_host_runs_at_most_its_own_max_jobs() {
    let r = rig_with(|c| {
        c.providers[0].hosts[2].max_jobs = Some(3);
        c.engine.max_jobs_per_host = 1;
    })
    .await;
    r.probe.set_delay(Duration::from_millis(20));
    let jobs = creates(&r, "zone-b", 6).await;
    for j in &jobs {
        assert_eq!(wait(&r.engine, j).await.state, JobState::Succeeded);
    }
    assert_eq!(
        r.probe.max_host.load(Ordering::SeqCst),
        3,
        "the host's own cap, not max_jobs_per_host, bounds it"
    );
}
