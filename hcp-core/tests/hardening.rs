//! One request or one job can never break the engine for everyone: sizes are bounded before any
//! job exists, capacity accounting never wraps, a panicking provider or worker fails only its
//! own job (and the next job on the same VM and host runs), and a job whose provider call hangs
//! can always be cancelled.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use hcp_core::store::{PageRequest, Scope};
use hcp_core::{
    Capabilities, Config, Console, CreateVm, CreatedVm, DeleteVm, DeletedVm, DesiredState, Engine,
    ErrorKind, GetConsole, HcpMark, HostInfo, HostInventory, HostInventoryReply, JobId, JobState,
    JobUpdate, OpContext, PowerState, Principal, ProjectId, Provider, ProviderInfo, RequestContext,
    Resources, Result, StartVm, StartedVm, VmId, VmSpec,
};
use hcp_provider_sim::{SimProvider, SimVm};

/// What the next call of an operation does.
#[derive(Debug, Default)]
struct Knob {
    /// Panics inside the call's future.
    panic: AtomicBool,
    /// Panics before the call even returns its future (outside the engine's call wrapper).
    panic_eagerly: AtomicBool,
    /// Never returns.
    hang: AtomicBool,
}

/// Wraps the simulator with panics and hangs on demand, and counts hung calls that were dropped.
#[derive(Debug)]
struct Faulty {
    sim: Arc<SimProvider>,
    create: Knob,
    start: Knob,
    /// Hung calls whose future was dropped.
    dropped: Arc<AtomicUsize>,
    /// Hung calls that started.
    hung: Arc<AtomicUsize>,
}

/// Counts a hung call's future being dropped.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Faulty {
    async fn misbehave(&self, knob: &Knob) {
        if knob.panic.swap(false, Ordering::SeqCst) {
            panic!("injected panic inside a provider call");
        }
        if knob.hang.swap(false, Ordering::SeqCst) {
            let _flag = DropFlag(self.dropped.clone());
            self.hung.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Provider for Faulty {
    fn info(&self) -> ProviderInfo {
        self.sim.info()
    }
    fn capabilities(&self) -> Capabilities {
        self.sim.capabilities()
    }
    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        self.sim.list_hosts().await
    }
    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        self.sim.host_inventory(args).await
    }
    // Written out by hand (not `async fn`) so that it can panic before returning its future.
    fn create_vm<'life0, 'life1, 'async_trait>(
        &'life0 self,
        ctx: &'life1 OpContext,
        args: CreateVm,
    ) -> Pin<Box<dyn Future<Output = Result<CreatedVm>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        if self.create.panic_eagerly.swap(false, Ordering::SeqCst) {
            panic!("injected panic before a provider call started");
        }
        Box::pin(async move {
            self.misbehave(&self.create).await;
            self.sim.create_vm(ctx, args).await
        })
    }
    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        self.sim.delete_vm(ctx, args).await
    }
    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        self.misbehave(&self.start).await;
        self.sim.start_vm(ctx, args).await
    }
    async fn stop_vm(
        &self,
        ctx: &OpContext,
        args: hcp_core::StopVm,
    ) -> Result<hcp_core::StoppedVm> {
        self.sim.stop_vm(ctx, args).await
    }
    async fn reboot_vm(
        &self,
        ctx: &OpContext,
        args: hcp_core::RebootVm,
    ) -> Result<hcp_core::RebootedVm> {
        self.sim.reboot_vm(ctx, args).await
    }
    async fn console(&self, args: GetConsole) -> Result<Console> {
        self.sim.console(args).await
    }
}

struct Rig {
    engine: Engine,
    faulty: Arc<Faulty>,
}

async fn rig_with(edit: impl FnOnce(&mut Config)) -> Rig {
    let mut config = hcp_provider_sim::demo_config();
    edit(&mut config);
    let sim = Arc::new(SimProvider::from_config(&config.providers[0], &config.secrets).unwrap());
    let faulty = Arc::new(Faulty {
        sim,
        create: Knob::default(),
        start: Knob::default(),
        dropped: Arc::default(),
        hung: Arc::default(),
    });
    let p: Arc<dyn Provider> = faulty.clone();
    let engine = Engine::builder(config)
        .provider_kind("sim", move |_, _| Ok(p.clone()))
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    Rig { engine, faulty }
}

async fn rig() -> Rig {
    rig_with(|_| {}).await
}

fn alice() -> RequestContext {
    RequestContext::new("demo", Principal::new("alice"))
}

/// The one host of zone-b, so that every create below lands on the same host.
fn on_b(name: &str) -> VmSpec {
    VmSpec::new(name, "ubuntu-24.04", "small").with_zone("zone-b")
}

async fn wait(engine: &Engine, job: &JobId) -> hcp_core::Job {
    // A guard against a hang (the bug these tests keep fixed), not a measurement.
    engine
        .wait_job(&Scope::All, job, Some(Duration::from_secs(60)))
        .await
        .unwrap()
}

/// Waits until the job reports RUNNING.
async fn running(engine: &Engine, job: &JobId) {
    let mut w = engine.watch_job(&Scope::All, job).await.unwrap();
    if engine.get_job(&Scope::All, job).await.unwrap().state == JobState::Running {
        return;
    }
    while let Some(u) = w.next().await {
        match u {
            JobUpdate::Status {
                state: JobState::Running,
                ..
            } => return,
            JobUpdate::End(j) => panic!("the job ended before it ran: {j:?}"),
            _ => {}
        }
    }
    panic!("the job's updates stopped before it ran");
}

fn host_b(engine: &Engine) -> hcp_core::Host {
    engine
        .hosts()
        .into_iter()
        .find(|h| h.name == "sim-b1")
        .unwrap()
}

async fn count_jobs(engine: &Engine) -> usize {
    engine
        .list_jobs(&Scope::All, &Default::default(), &PageRequest::all())
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test]
async fn hostile_sizes_are_refused_before_any_job_naming_the_field() {
    let r = rig().await;
    let sized = |vcpus: Option<u32>, memory_mib: Option<u64>, disk_gib: Option<u64>| VmSpec {
        vcpus,
        memory_mib,
        disk_gib,
        ..VmSpec::new("big", "ubuntu-24.04", "small")
    };
    let cases = [
        // The request of the issue: accepted with 202 before, and it broke creates for everyone.
        (sized(None, Some(u64::MAX), None), "memory_mib", "at most"),
        (sized(None, Some(1 << 63), None), "memory_mib", "at most"),
        (
            sized(None, None, Some(1_000_000_000_000_000)),
            "disk_gib",
            "at most",
        ),
        (sized(None, None, Some(u64::MAX)), "disk_gib", "at most"),
        (sized(Some(u32::MAX), None, None), "vcpus", "at most 4096"),
        (sized(Some(0), None, None), "vcpus", "at least 1"),
        (sized(None, Some(0), None), "memory_mib", "at least 16"),
        (sized(None, None, Some(0)), "disk_gib", "at least 1"),
        // Within the global bounds, but beyond the simulator's declared limits.
        (sized(Some(4096), None, None), "vcpus", "max_vcpus"),
        (sized(None, None, Some(1 << 20)), "disk_gib", "max_disk_gib"),
        // Within every limit, but larger than any host: a bad request, not a full zone.
        (sized(Some(64), None, None), "vcpus", "no host"),
        (sized(None, Some(1 << 20), None), "memory_mib", "no host"),
    ];
    for (spec, field, says) in cases {
        let e = r
            .engine
            .create_vm(&alice(), spec.clone())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{spec:?}: {e}");
        assert_eq!(e.field(), Some(field), "{spec:?}: {e}");
        assert!(e.message().contains(says), "{spec:?}: {e}");
    }
    let many = VmSpec {
        networks: (0..17)
            .map(|_| hcp_core::NetworkAttachment {
                network: "default".into(),
            })
            .collect(),
        ..VmSpec::new("nets", "ubuntu-24.04", "small")
    };
    let e = r.engine.create_vm(&alice(), many).await.unwrap_err();
    assert_eq!(e.field(), Some("networks"), "{e}");
    let huge = VmSpec::new("img", "x".repeat(1 << 20), "small");
    let e = r.engine.create_vm(&alice(), huge).await.unwrap_err();
    assert_eq!(e.field(), Some("image"), "{e}");
    assert!(e.message().len() < 200, "the value is not echoed: {e}");

    // Nothing was accepted, nothing is held, and a normal create still works.
    assert_eq!(count_jobs(&r.engine).await, 0);
    for h in r.engine.hosts() {
        assert_eq!((h.vcpus_used, h.memory_mib_used), (0, 0), "{h:?}");
    }
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("ok", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_zone_limit_is_a_bad_request_naming_the_limit() {
    let r = rig_with(|c| {
        c.zones[1].limits.max_vcpus = Some(2);
        c.zones[1].limits.max_disk_gib = Some(50);
    })
    .await;
    let e = r
        .engine
        .create_vm(
            &alice(),
            VmSpec {
                vcpus: Some(4),
                ..on_b("wide")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(e.field(), Some("vcpus"));
    assert!(e.message().contains("max_vcpus = 2"), "{e}");
    assert!(e.message().contains("allowed: 1-2"), "{e}");
    let e = r
        .engine
        .create_vm(
            &alice(),
            VmSpec {
                disk_gib: Some(51),
                ..on_b("deep")
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("disk_gib"), "{e}");
    // Zone A has no such limit.
    let s = r
        .engine
        .create_vm(
            &alice(),
            VmSpec {
                vcpus: Some(4),
                disk_gib: Some(51),
                ..VmSpec::new("wide", "ubuntu-24.04", "small").with_zone("zone-a")
            },
        )
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_host_reporting_absurd_sizes_reads_as_full_and_breaks_nothing() {
    let r = rig().await;
    // A VM on sim-b1 that claims every resource there is (what a wrapping sum once produced).
    let absurd = Resources {
        vcpus: u32::MAX,
        memory_mib: u64::MAX,
        disk_gib: u64::MAX,
    };
    r.faulty
        .sim
        .seed_vm(
            "sim-b1",
            SimVm::new("giant", PowerState::Running, absurd, None),
        )
        .unwrap();
    r.faulty
        .sim
        .seed_vm(
            "sim-b1",
            SimVm::new(
                "adopted",
                PowerState::Running,
                absurd,
                Some(HcpMark::new(VmId::generate(), ProjectId::new("demo"))),
            ),
        )
        .unwrap();
    r.engine.refresh_inventory().await.unwrap();
    let b = host_b(&r.engine);
    assert_eq!(b.vcpus_used, u32::MAX, "saturated, not wrapped: {b:?}");
    assert_eq!(b.memory_mib_used, u64::MAX);
    // The full host is never chosen; creates go elsewhere and the listing keeps working.
    let e = r.engine.create_vm(&alice(), on_b("b")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    let s = r
        .engine
        .create_vm(&alice(), VmSpec::new("a", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    let vm = r.engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
    assert_ne!(&*vm.binding.host, "sim-b1");
    assert_eq!(r.engine.hosts().len(), 3);
}

#[tokio::test]
async fn a_quota_summed_over_absurd_vms_is_exceeded_not_wrapped() {
    let r = rig_with(|c| {
        c.projects[0].quota.max_memory_mib = Some(u64::MAX);
    })
    .await;
    let absurd = Resources {
        vcpus: 1,
        memory_mib: u64::MAX,
        disk_gib: 1,
    };
    r.faulty
        .sim
        .seed_vm(
            "sim-b1",
            SimVm::new(
                "adopted",
                PowerState::Running,
                absurd,
                Some(HcpMark::new(VmId::generate(), ProjectId::new("demo"))),
            ),
        )
        .unwrap();
    assert_eq!(r.engine.refresh_inventory().await.unwrap().adopted, 1);
    let e = r
        .engine
        .create_vm(&alice(), VmSpec::new("one-more", "ubuntu-24.04", "small"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert_eq!(e.field(), Some("memory_mib"));
}

/// A create whose provider or worker panics: the job fails with an internal error, the host's
/// reservation is released, and the next jobs on the same VM and the same host run.
async fn panicking_create_fails_only_its_job(eager: bool) {
    let r = rig().await;
    let before = host_b(&r.engine);
    if eager {
        r.faulty.create.panic_eagerly.store(true, Ordering::SeqCst);
    } else {
        r.faulty.create.panic.store(true, Ordering::SeqCst);
    }
    let s = r.engine.create_vm(&alice(), on_b("boom")).await.unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    let error = job.error.unwrap();
    assert_eq!(error.kind, ErrorKind::Internal, "{error:?}");
    assert!(!error.message.contains("injected"), "{error:?}");
    let vm = r.engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
    assert_eq!(vm.desired, DesiredState::Error);
    let after = host_b(&r.engine);
    assert_eq!(
        (after.vcpus_used, after.memory_mib_used),
        (before.vcpus_used, before.memory_mib_used),
        "the reservation was released"
    );

    // The next job on the same VM runs.
    let d = r.engine.delete_vm(&alice(), &s.vm_id, true).await.unwrap();
    assert_eq!(wait(&r.engine, &d.job_id).await.state, JobState::Succeeded);
    // The next create on the same host runs, and the listing works.
    let s = r.engine.create_vm(&alice(), on_b("next")).await.unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    let vm = r.engine.get_vm(&Scope::All, &s.vm_id).await.unwrap();
    assert_eq!(&*vm.binding.host, "sim-b1");
    assert_eq!(r.engine.hosts().len(), 3);
    assert_eq!(r.engine.stats().running, 0);
}

#[tokio::test]
async fn a_provider_panic_fails_only_its_job() {
    panicking_create_fails_only_its_job(false).await;
}

#[tokio::test]
async fn a_worker_panic_fails_only_its_job() {
    panicking_create_fails_only_its_job(true).await;
}

#[tokio::test]
async fn a_hung_create_is_cancelled_its_call_dropped_and_its_room_freed() {
    let r = rig().await;
    r.faulty.create.hang.store(true, Ordering::SeqCst);
    let s = r.engine.create_vm(&alice(), on_b("stuck")).await.unwrap();
    running(&r.engine, &s.job_id).await;
    while r.faulty.hung.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert!(host_b(&r.engine).vcpus_used >= 1, "the create holds room");
    let me = Principal::new("alice");
    r.engine
        .cancel_job(&Scope::All, &s.job_id, &me)
        .await
        .unwrap();
    let job = wait(&r.engine, &s.job_id).await;
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert_eq!(
        r.faulty.dropped.load(Ordering::SeqCst),
        1,
        "the hung call's future was dropped"
    );
    // Nothing was made: the VM is forgotten and its room is free again.
    assert_eq!(
        r.engine
            .get_vm(&Scope::All, &s.vm_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(host_b(&r.engine).vcpus_used, 0);
    let s = r.engine.create_vm(&alice(), on_b("stuck")).await.unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_hung_start_is_cancelled_and_delete_then_works() {
    let r = rig().await;
    let s = r.engine.create_vm(&alice(), on_b("vm")).await.unwrap();
    assert_eq!(wait(&r.engine, &s.job_id).await.state, JobState::Succeeded);
    r.faulty.start.hang.store(true, Ordering::SeqCst);
    let start = r.engine.start_vm(&alice(), &s.vm_id).await.unwrap();
    // A delete queued behind the hung job waits for it ...
    let del = r.engine.delete_vm(&alice(), &s.vm_id, true).await.unwrap();
    running(&r.engine, &start.job_id).await;
    assert_eq!(
        r.engine
            .get_job(&Scope::All, &del.job_id)
            .await
            .unwrap()
            .state,
        JobState::Pending
    );
    // ... and runs once the hung job is cancelled.
    let cancelled = r
        .engine
        .cancel_job(&alice().scope(), &start.job_id, &Principal::new("alice"))
        .await
        .unwrap();
    assert!(!cancelled.state.is_terminal() || cancelled.state == JobState::Cancelled);
    let job = wait(&r.engine, &start.job_id).await;
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert_eq!(r.faulty.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(
        wait(&r.engine, &del.job_id).await.state,
        JobState::Succeeded
    );
    assert!(r.faulty.sim.state().unwrap().hosts["sim-b1"].vms.is_empty());
}
