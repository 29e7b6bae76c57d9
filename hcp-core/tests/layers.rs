//! Provider layers around a provider that records what it is asked and whether it saw its
//! call cancelled: a timed-out call is cancelled (the provider sees it) and waited for, a call
//! that is not safe to repeat is never repeated, per-host limits hold, errors carry their
//! context, and an engine built with layers runs its jobs through them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hcp_core::layer::{
    ConcurrencyLimitLayer, ErrorContextLayer, FaultLayer, ProviderExt, RetryLayer, TimeoutLayer,
};
use hcp_core::provider::{
    CreateVm, CreatedVm, DeleteVm, DeletedVm, GetConsole, HostInfo, HostInventory,
    HostInventoryReply, OpContext, ProviderInfo, RebootVm, RebootedVm, SnapshotVm, SnapshottedVm,
    StartVm, StartedVm, StopVm, StoppedVm, VmTarget,
};
use hcp_core::store::Scope;
use hcp_core::{
    Action, Capabilities, Console, Engine, Error, ErrorKind, JobState, Operation, PowerState,
    Principal, Provider, RequestContext, Result, VmId, VmSpec,
};

/// What the probe does with a call of one operation.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Answers at once.
    Answer,
    /// Waits until cancelled, then stops with `Cancelled`.
    HangUntilCancelled,
    /// The first `n` attempts wait until cancelled; later ones answer.
    HangFirst(usize),
    /// Ignores cancellation and answers after this long.
    Stubborn(Duration),
    /// The first `n` attempts fail with a temporary error; later ones answer.
    FailFirst(usize),
    /// Every attempt fails with a permanent error.
    FailPermanently,
    /// Takes this long, counting how many calls run at once.
    Busy(Duration),
}

#[derive(Debug, Default)]
struct Record {
    calls: HashMap<Operation, usize>,
    saw_cancel: HashMap<Operation, usize>,
    running: usize,
    most_running: usize,
}

#[derive(Debug)]
struct Probe {
    script: HashMap<Operation, Behaviour>,
    record: Mutex<Record>,
    finished: AtomicUsize,
}

impl Probe {
    fn new(script: &[(Operation, Behaviour)]) -> Arc<Probe> {
        Arc::new(Probe {
            script: script.iter().copied().collect(),
            record: Mutex::new(Record::default()),
            finished: AtomicUsize::new(0),
        })
    }

    fn calls(&self, op: Operation) -> usize {
        self.record
            .lock()
            .unwrap()
            .calls
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    fn saw_cancel(&self, op: Operation) -> usize {
        self.record
            .lock()
            .unwrap()
            .saw_cancel
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    async fn act(&self, op: Operation, ctx: &OpContext) -> Result<()> {
        let attempt = {
            let mut r = self.record.lock().unwrap();
            let n = r.calls.entry(op).or_default();
            *n += 1;
            *n
        };
        let hang = async {
            ctx.cancelled().await;
            *self
                .record
                .lock()
                .unwrap()
                .saw_cancel
                .entry(op)
                .or_default() += 1;
            Err(Error::new(ErrorKind::Cancelled, format!("{op} stopped")))
        };
        let r = match self.script.get(&op).copied().unwrap_or(Behaviour::Answer) {
            Behaviour::Answer => Ok(()),
            Behaviour::HangUntilCancelled => hang.await,
            Behaviour::HangFirst(n) if attempt <= n => hang.await,
            Behaviour::HangFirst(_) => Ok(()),
            Behaviour::Stubborn(d) => {
                tokio::time::sleep(d).await;
                if ctx.is_cancelled() {
                    *self
                        .record
                        .lock()
                        .unwrap()
                        .saw_cancel
                        .entry(op)
                        .or_default() += 1;
                }
                Ok(())
            }
            Behaviour::FailFirst(n) if attempt <= n => {
                Err(Error::new(ErrorKind::ProviderUnavailable, "host busy").temporary())
            }
            Behaviour::FailFirst(_) => Ok(()),
            Behaviour::FailPermanently => Err(Error::new(ErrorKind::Conflict, "no")),
            Behaviour::Busy(d) => {
                {
                    let mut r = self.record.lock().unwrap();
                    r.running += 1;
                    r.most_running = r.most_running.max(r.running);
                }
                tokio::time::sleep(d).await;
                self.record.lock().unwrap().running -= 1;
                Ok(())
            }
        };
        self.finished.fetch_add(1, Ordering::SeqCst);
        r
    }
}

#[async_trait]
impl Provider for Probe {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "probe".into(),
            kind: "probe".into(),
            version: "1".into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        self.act(Operation::ListHosts, &OpContext::detached())
            .await?;
        Ok(vec![])
    }

    async fn host_inventory(&self, _args: HostInventory) -> Result<HostInventoryReply> {
        Err(Error::new(ErrorKind::NotFound, "no hosts"))
    }

    async fn create_vm(&self, ctx: &OpContext, _args: CreateVm) -> Result<CreatedVm> {
        self.act(Operation::CreateVm, ctx).await?;
        Ok(CreatedVm::new("native-1", PowerState::Running))
    }

    async fn delete_vm(&self, ctx: &OpContext, _args: DeleteVm) -> Result<DeletedVm> {
        self.act(Operation::DeleteVm, ctx).await?;
        Ok(DeletedVm::new(true))
    }

    async fn start_vm(&self, ctx: &OpContext, _args: StartVm) -> Result<StartedVm> {
        self.act(Operation::StartVm, ctx).await?;
        Ok(StartedVm::new(false))
    }

    async fn stop_vm(&self, ctx: &OpContext, _args: StopVm) -> Result<StoppedVm> {
        self.act(Operation::StopVm, ctx).await?;
        Ok(StoppedVm::new(false, false))
    }

    async fn reboot_vm(&self, ctx: &OpContext, _args: RebootVm) -> Result<RebootedVm> {
        self.act(Operation::RebootVm, ctx).await?;
        Ok(RebootedVm::new())
    }

    async fn console(&self, _args: GetConsole) -> Result<Console> {
        Err(Error::new(ErrorKind::NotFound, "no console"))
    }

    async fn snapshot_vm(&self, ctx: &OpContext, args: SnapshotVm) -> Result<SnapshottedVm> {
        self.act(Operation::SnapshotVm, ctx).await?;
        Ok(SnapshottedVm::new(args.name.clone()))
    }
}

fn target(host: &str) -> VmTarget {
    VmTarget {
        vm_id: VmId::generate(),
        name: "web-1".into(),
        host: host.into(),
        native_id: Some("native-1".into()),
    }
}

fn quick_retry() -> RetryLayer {
    RetryLayer::new()
        .with_max_attempts(3)
        .with_delays(Duration::from_millis(5), Duration::from_millis(20))
        .with_jitter(false)
}

fn quick_timeout() -> TimeoutLayer {
    TimeoutLayer::new(Duration::from_millis(100)).with_grace(Duration::from_secs(2))
}

/// Retry outside the timeout, as an engine stacks them: each attempt gets its own timeout.
fn stack(probe: &Arc<Probe>) -> Arc<dyn Provider> {
    (probe.clone() as Arc<dyn Provider>)
        .layer(quick_timeout())
        .layer(quick_retry())
        .layer(ErrorContextLayer)
}

#[tokio::test]
async fn a_timed_out_reboot_is_cancelled_and_never_repeated() {
    let probe = Probe::new(&[(Operation::RebootVm, Behaviour::HangUntilCancelled)]);
    let p = stack(&probe);
    let err = p
        .reboot_vm(&OpContext::detached(), RebootVm::new(target("h1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(!err.is_temporary(), "a reboot is not safe to repeat: {err}");
    assert!(err.message().contains("was stopped"), "{err}");
    assert_eq!(
        probe.saw_cancel(Operation::RebootVm),
        1,
        "the provider saw its call cancelled"
    );
    assert_eq!(probe.calls(Operation::RebootVm), 1, "a reboot runs once");
    assert_eq!(
        probe.finished.load(Ordering::SeqCst),
        1,
        "the cancelled call had ended when the layer answered"
    );
}

#[tokio::test]
async fn a_timed_out_snapshot_is_cancelled_and_never_repeated() {
    let probe = Probe::new(&[(Operation::SnapshotVm, Behaviour::HangFirst(1))]);
    let p = stack(&probe);
    let mut args = SnapshotVm::new(target("h1"));
    args.name = "before-upgrade".into();
    let err = p
        .snapshot_vm(&OpContext::detached(), args)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(probe.calls(Operation::SnapshotVm), 1);
    assert_eq!(probe.saw_cancel(Operation::SnapshotVm), 1);
}

#[tokio::test]
async fn a_timed_out_start_is_cancelled_then_repeated_because_it_is_safe() {
    let probe = Probe::new(&[(Operation::StartVm, Behaviour::HangFirst(1))]);
    let p = stack(&probe);
    p.start_vm(&OpContext::detached(), StartVm::new(target("h1")))
        .await
        .unwrap();
    assert_eq!(probe.calls(Operation::StartVm), 2);
    assert_eq!(probe.saw_cancel(Operation::StartVm), 1);
}

#[tokio::test]
async fn a_create_carries_its_mark_as_a_guard_and_is_repeated_after_a_timeout() {
    let probe = Probe::new(&[(Operation::CreateVm, Behaviour::HangFirst(1))]);
    let p = stack(&probe);
    let f = hcp_core::testkit::Fixture::new("h1", "ubuntu-24.04");
    let mark = hcp_core::HcpMark {
        vm_id: VmId::generate(),
        project: f.project.clone(),
        image: None,
        flavor: None,
        zone: None,
        created_at: None,
        user_data: false,
        server_group: None,
    };
    let args = CreateVm::new(mark, "h1", "web-1", "ubuntu-24.04", f.resources);
    let created = p.create_vm(&OpContext::detached(), args).await.unwrap();
    assert_eq!(created.native_id, "native-1");
    assert_eq!(probe.calls(Operation::CreateVm), 2);
}

#[tokio::test]
async fn a_call_that_does_not_stop_is_reported_as_possibly_taking_effect() {
    let probe = Probe::new(&[(
        Operation::StopVm,
        Behaviour::Stubborn(Duration::from_secs(3)),
    )]);
    let p = (probe.clone() as Arc<dyn Provider>)
        .layer(TimeoutLayer::new(Duration::from_millis(50)).with_grace(Duration::from_millis(100)))
        .layer(quick_retry());
    let err = p
        .stop_vm(&OpContext::detached(), StopVm::new(target("h1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.message().contains("may still take effect"), "{err}");
    assert!(!err.is_temporary(), "{err}");
    assert_eq!(
        probe.calls(Operation::StopVm),
        1,
        "not repeated beside itself"
    );
}

#[tokio::test]
async fn a_call_that_answers_within_the_grace_keeps_its_answer() {
    let probe = Probe::new(&[(
        Operation::StopVm,
        Behaviour::Stubborn(Duration::from_millis(150)),
    )]);
    let p = (probe.clone() as Arc<dyn Provider>)
        .layer(TimeoutLayer::new(Duration::from_millis(50)).with_grace(Duration::from_secs(2)));
    p.stop_vm(&OpContext::detached(), StopVm::new(target("h1")))
        .await
        .unwrap();
    assert_eq!(probe.saw_cancel(Operation::StopVm), 1);
}

#[tokio::test]
async fn retries_repeat_temporary_failures_of_safe_calls_only() {
    let probe = Probe::new(&[
        (Operation::DeleteVm, Behaviour::FailFirst(2)),
        (Operation::RebootVm, Behaviour::FailFirst(1)),
        (Operation::StopVm, Behaviour::FailPermanently),
        (Operation::StartVm, Behaviour::FailFirst(10)),
    ]);
    let p = stack(&probe);
    let ctx = OpContext::detached();
    p.delete_vm(&ctx, DeleteVm::new(target("h1")))
        .await
        .unwrap();
    assert_eq!(probe.calls(Operation::DeleteVm), 3);

    let err = p
        .reboot_vm(&ctx, RebootVm::new(target("h1")))
        .await
        .unwrap_err();
    assert!(err.is_temporary(), "left to the job's own retry: {err}");
    assert_eq!(probe.calls(Operation::RebootVm), 1);

    let err = p
        .stop_vm(&ctx, StopVm::new(target("h1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(probe.calls(Operation::StopVm), 1);

    let err = p
        .start_vm(&ctx, StartVm::new(target("h1")))
        .await
        .unwrap_err();
    assert!(err.is_temporary());
    assert_eq!(probe.calls(Operation::StartVm), 3, "at most max_attempts");
}

#[tokio::test]
async fn a_cancelled_context_ends_the_backoff() {
    let probe = Probe::new(&[(Operation::StartVm, Behaviour::FailFirst(10))]);
    let p = (probe.clone() as Arc<dyn Provider>).layer(
        RetryLayer::new()
            .with_max_attempts(10)
            .with_delays(Duration::from_secs(30), Duration::from_secs(30)),
    );
    let ctx = OpContext::detached();
    let cancel = ctx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let started = std::time::Instant::now();
    let err = p
        .start_vm(&ctx, StartVm::new(target("h1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProviderUnavailable);
    assert_eq!(probe.calls(Operation::StartVm), 1);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn concurrency_is_limited_per_host() {
    let probe = Probe::new(&[(
        Operation::StartVm,
        Behaviour::Busy(Duration::from_millis(50)),
    )]);
    let p = (probe.clone() as Arc<dyn Provider>).layer(ConcurrencyLimitLayer::new(2));
    let ctx = OpContext::detached();
    let calls = (0..6).map(|_| p.start_vm(&ctx, StartVm::new(target("h1"))));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(probe.record.lock().unwrap().most_running, 2);

    // Two hosts: each has its own two slots.
    probe.record.lock().unwrap().most_running = 0;
    let calls = (0..8).map(|i| {
        let host = if i % 2 == 0 { "h1" } else { "h2" };
        p.start_vm(&ctx, StartVm::new(target(host)))
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(probe.record.lock().unwrap().most_running, 4);
}

#[tokio::test]
async fn a_call_cancelled_while_waiting_for_a_slot_never_reaches_the_provider() {
    let probe = Probe::new(&[(
        Operation::StartVm,
        Behaviour::Busy(Duration::from_millis(300)),
    )]);
    let p = (probe.clone() as Arc<dyn Provider>).layer(ConcurrencyLimitLayer::new(1));
    let busy = p.clone();
    let first = tokio::spawn(async move {
        busy.start_vm(&OpContext::detached(), StartVm::new(target("h1")))
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ctx = OpContext::detached();
    ctx.cancel();
    let err = p
        .start_vm(&ctx, StartVm::new(target("h1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    first.await.unwrap().unwrap();
    assert_eq!(probe.calls(Operation::StartVm), 1);
}

#[tokio::test]
async fn errors_name_their_operation_provider_and_host() {
    let probe = Probe::new(&[(Operation::StopVm, Behaviour::FailPermanently)]);
    let p = (probe.clone() as Arc<dyn Provider>).layer(ErrorContextLayer);
    let err = p
        .stop_vm(&OpContext::detached(), StopVm::new(target("h7")))
        .await
        .unwrap_err();
    assert_eq!(err.operation(), Some(Operation::StopVm));
    let context: Vec<(&str, &str)> = err
        .context()
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    assert!(context.contains(&("provider", "probe")), "{context:?}");
    assert!(context.contains(&("host", "h7")), "{context:?}");
}

#[tokio::test]
async fn faults_are_injected_before_the_provider_and_repeat_with_their_seed() {
    let probe = Probe::new(&[]);
    let p = (probe.clone() as Arc<dyn Provider>).layer(FaultLayer::new(7).with_failure_rate(0.5));
    let ctx = OpContext::detached();
    let mut outcomes = Vec::new();
    for _ in 0..40 {
        outcomes.push(p.start_vm(&ctx, StartVm::new(target("h1"))).await.is_ok());
    }
    let ok = outcomes.iter().filter(|o| **o).count();
    assert!((5..=35).contains(&ok), "{ok} of 40 went through");
    assert_eq!(
        probe.calls(Operation::StartVm),
        ok,
        "a failed roll never reached it"
    );

    let again =
        (Probe::new(&[]) as Arc<dyn Provider>).layer(FaultLayer::new(7).with_failure_rate(0.5));
    let mut repeat = Vec::new();
    for _ in 0..40 {
        repeat.push(
            again
                .start_vm(&ctx, StartVm::new(target("h1")))
                .await
                .is_ok(),
        );
    }
    assert_eq!(outcomes, repeat, "the same seed gives the same faults");

    // A hang ends only when a timeout cancels it.
    let hung = (Probe::new(&[]) as Arc<dyn Provider>)
        .layer(FaultLayer::new(1).with_hang(Operation::RebootVm))
        .layer(quick_timeout());
    let err = hung
        .reboot_vm(&ctx, RebootVm::new(target("h1")))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
}

#[tokio::test]
async fn the_simulator_passes_conformance_through_the_whole_stack() {
    let sim: Arc<dyn Provider> = Arc::new(
        hcp_provider_sim::SimProvider::new(
            "sim",
            hcp_provider_sim::SimSettings::default(),
            vec![
                hcp_provider_sim::SimHost::new("h1", "zone-a", 16, 32768),
                hcp_provider_sim::SimHost::new("h2", "zone-a", 16, 32768),
            ],
        )
        .unwrap(),
    );
    let p = sim
        .layer(FaultLayer::new(3).with_latency(Duration::from_millis(1)))
        .layer(ConcurrencyLimitLayer::new(4))
        .layer(TimeoutLayer::new(Duration::from_secs(30)))
        .layer(RetryLayer::new())
        .layer(ErrorContextLayer);
    let f = hcp_core::testkit::Fixture::new("h1", "ubuntu-24.04").with_other_host("h2");
    hcp_core::testkit::run_all(p, &f).await.unwrap();
}

/// Creates a VM on `engine`, reboots it, and returns the reboot job with the VM as it is after.
async fn create_then_reboot(engine: &Engine) -> (hcp_core::Job, hcp_core::Vm) {
    let ctx = RequestContext::new("demo", Principal::new("alice"));
    let created = engine
        .create_vm(&ctx, VmSpec::new("web-1", "ubuntu-24.04", "small"))
        .await
        .unwrap();
    let job = engine
        .wait_job(&Scope::All, &created.job_id, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    let reboot = engine
        .submit(
            &ctx,
            Action::Reboot {
                vm_id: created.vm_id.clone(),
                hard: false,
            },
        )
        .await
        .unwrap();
    let job = engine
        .wait_job(&Scope::All, &reboot.job_id, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    let vm = engine.get_vm(&Scope::All, &created.vm_id).await.unwrap();
    (job, vm)
}

/// Checks that a reboot job timed out after one attempt and left the VM running.
fn assert_timed_out_once(job: hcp_core::Job, vm: &hcp_core::Vm) -> hcp_core::ErrorInfo {
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert_eq!(
        job.attempts, 1,
        "a timed-out reboot is not run again: {job:?}"
    );
    let error = job.error.expect("the job says why");
    assert_eq!(error.kind, ErrorKind::Timeout, "{error:?}");
    assert_eq!(vm.power, PowerState::Running, "{vm:?}");
    *error
}

#[tokio::test]
async fn an_engine_runs_its_jobs_through_its_layers() {
    let engine = hcp_provider_sim::register(Engine::builder(hcp_provider_sim::demo_config()))
        .layer(FaultLayer::new(1).with_hang(Operation::RebootVm))
        .layer(quick_timeout())
        .layer(quick_retry())
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    let (job, vm) = create_then_reboot(&engine).await;
    assert_timed_out_once(job, &vm);
}

#[tokio::test]
async fn the_hosts_files_provider_calls_settings_wrap_every_provider() {
    let yaml = format!(
        "{}\nengine:\n  provider_calls: {{timeout: 1s, grace: 1s, attempts: 2, max_per_host: 1}}\n",
        hcp_provider_sim::DEMO_HOSTS_FILE
    );
    let config = hcp_core::Config::from_yaml(&yaml, "hosts file").unwrap();
    assert_eq!(config.engine.provider_calls.layers().len(), 3);
    // The hypervisor's reboot hangs; the settings' layers sit outside the provider.
    let engine = Engine::builder(config)
        .provider_kind("sim", |c, s| {
            let sim: Arc<dyn Provider> =
                Arc::new(hcp_provider_sim::SimProvider::from_config(c, s)?);
            Ok(sim.layer(FaultLayer::new(1).with_hang(Operation::RebootVm)))
        })
        .without_background_reconcile()
        .build()
        .await
        .unwrap();
    let (job, vm) = create_then_reboot(&engine).await;
    let error = assert_timed_out_once(job, &vm);
    assert!(error.message.contains("within 1s"), "{error:?}");

    for (key, value, allowed) in [
        ("timeout", "25h", "0s (off) to 24h"),
        ("grace", "0s", "1s to 10m"),
        ("attempts", "0", "1-10"),
        ("max_per_host", "1001", "0 (no cap) to 1000"),
    ] {
        let yaml = format!(
            "{}\nengine:\n  provider_calls: {{{key}: {value}}}\n",
            hcp_provider_sim::DEMO_HOSTS_FILE
        );
        let err = hcp_core::Config::from_yaml(&yaml, "hosts file").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
        let field = format!("engine.provider_calls.{key}");
        assert_eq!(err.field(), Some(field.as_str()), "{err}");
        assert!(err.message().contains(allowed), "{err}");
    }
}
