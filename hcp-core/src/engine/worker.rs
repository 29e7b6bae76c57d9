//! The worker: runs one attempt of one job against its provider, inside the job's timeout and
//! cancellation, then records the outcome on the job and the VM.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::inventory::{settle_capacity, settle_resize, write_inventory};
use super::leases::{self, Held};
use super::scheduler::SchedMsg;
use super::watch::LogMsg;
use super::{HostKey, Inner, lock};
use crate::store::Scope;
use crate::{
    CreateVm, DeleteSnapshot, DeleteVm, DesiredState, Error, ErrorInfo, ErrorKind, EventKind,
    HcpMark, HostInventory, Job, JobAction, JobReporter, JobState, JobUpdate, LogEntry, LogLevel,
    MigrateVm, NetworkPlan, OpContext, PendingReason, PowerState, Principal, RebootVm, ResizeVm,
    Resources, RetryDecision, RevertSnapshot, SetMark, SnapshotVm, StartVm, StopVm, Vm, VmTarget,
};

/// What a successful attempt changed.
enum Effect {
    Created {
        native_id: String,
        power: PowerState,
        /// The member host a cluster target's provider chose.
        member_host: Option<String>,
    },
    Deleted,
    Power(PowerState),
    Reverted(PowerState),
    Moved {
        host: String,
        native_id: String,
    },
    Adopted,
    Released,
    Nothing,
}

struct Reporter {
    inner: Arc<Inner>,
    job: crate::JobId,
}

impl JobReporter for Reporter {
    fn log(&self, entry: LogEntry) {
        super::watch::send(&self.inner, LogMsg::line(&self.job, entry));
    }

    fn progress(&self, percent: u8) {
        super::watch::send(
            &self.inner,
            LogMsg::Progress {
                job_id: self.job.clone(),
                percent,
            },
        );
    }
}

fn log(inner: &Inner, job: &Job, entry: LogEntry) {
    super::watch::send(inner, LogMsg::line(&job.id, entry));
}

/// The line that opens an attempt: `attempt 1/3: create web-1`, joined into one allocation
/// without a formatter (every job writes it).
fn attempt_line(attempt: u32, max: u32, operation: crate::Operation, name: &str) -> String {
    let (mut a, mut m) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (a, m, op) = (a.format(attempt), m.format(max), operation.as_str());
    let parts = ["attempt ", a, "/", m, ": ", op, " ", name];
    let mut line = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        line.push_str(p);
    }
    line
}

/// A line that ends a job or an attempt with `e`: its message for everyone, its detail for
/// operators.
fn error_line(level: LogLevel, message: String, e: &Error) -> LogEntry {
    LogEntry::new(level, message).with_detail(e.detail().unwrap_or_default())
}

/// Runs one attempt of `job_id` and returns what the scheduler must do next.
///
/// # Behavior
/// The worker first claims the job in the store under a lease ([`super::leases`]); a job it
/// cannot claim (ended, held by another worker or replica, or behind an older unfinished job of
/// its VM) is left alone, and the lease poller offers it again when it becomes claimable. When
/// the store fails before the job is claimed or started, the job is still PENDING: it is
/// scheduled again after a pause instead of being dropped, so neither it nor the later jobs on
/// its VM wait forever. A claimed job that is RUNNING was abandoned by a worker that died or
/// hung: it is recovered ([`recover_abandoned`]) before anything is run again. Every job write
/// carries the lease's fencing token; once the lease is lost the attempt stops at once (its
/// provider call is dropped) and writes nothing more.
pub(crate) async fn run(
    inner: &Arc<Inner>,
    job_id: &crate::JobId,
    vm_id: &crate::VmId,
    host_key: &HostKey,
) -> SchedMsg {
    let finished = |vm_id| SchedMsg::Finished {
        job_id: job_id.clone(),
        vm_id,
        host_key: host_key.clone(),
    };
    let again = || SchedMsg::Retry {
        job_id: job_id.clone(),
        vm_id: vm_id.clone(),
        host_key: host_key.clone(),
        after: inner
            .settings
            .retry
            .initial_delay
            .max(Duration::from_millis(50)),
    };
    let claimed_at = tokio::time::Instant::now();
    // One clock read for the claim and the attempt's start: its lease, its timeout check, its
    // start time, what is left of its time.
    let now = inner.now();
    let until = leases::until(now, inner.settings.job_lease);
    // Claimed and started in one write on the in-memory store; elsewhere `run_claimed` starts it.
    let (job, started) = match inner.claim_job(job_id, until, now).await {
        Ok(Some(j)) => j,
        // Ended, held elsewhere, or behind an older job of its VM: the poller offers it again
        // once it can run. Gone (purged): nothing to run. Either way its VM's queue moves on.
        Ok(None) => return finished(vm_id.clone()),
        Err(e) if e.kind() == ErrorKind::NotFound => return finished(vm_id.clone()),
        Err(e) => {
            tracing::warn!(job_id = %job_id, error = %e, "cannot claim a job to run it; trying again shortly");
            return again();
        }
    };
    let Some(token) = job.lease.as_ref().map(|l| l.token) else {
        tracing::error!(job_id = %job_id, "the store returned a claimed job without its lease");
        return again();
    };
    let held = Held::new(inner, token, claimed_at);
    // The lease's heartbeat runs beside the job in this task, until the job's attempt is over.
    let msg = tokio::select! {
        biased;
        msg = run_claimed(inner, job, started, now, &held, host_key) => msg,
        never = held.keep(inner, job_id) => match never {},
    };
    // A job in retry backoff keeps its lease until its retry time; any other is given up.
    if !matches!(msg, SchedMsg::Retry { .. }) || !held.is_held() {
        let _ = inner.release_lease(job_id, token).await;
    }
    msg
}

/// How often a running job's worker reads the job for a cancel asked in another process.
const CANCEL_POLL: Duration = Duration::from_secs(1);

/// Starts the task that reads, every [`CANCEL_POLL`], the jobs this engine is running for a
/// cancel asked in another process (written into the store by [`crate::Engine::cancel_job`]),
/// and cancels such a job's token ([`cancelled_while_running`] then reads who asked). One task
/// serves every running job: no timer per job.
pub(crate) fn spawn_cancel_poller(inner: std::sync::Weak<Inner>) {
    use futures::StreamExt;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(CANCEL_POLL).await;
            let Some(inner) = inner.upgrade() else { return };
            let running: Vec<(crate::JobId, tokio_util::sync::CancellationToken)> =
                lock(&inner.cancels)
                    .iter()
                    .filter(|(_, token)| !token.is_cancelled())
                    .map(|(id, token)| (id.clone(), token.clone()))
                    .collect();
            futures::stream::iter(running)
                .for_each_concurrent(16, |(id, token)| {
                    let inner = &inner;
                    async move {
                        if let Ok(Some(j)) = inner.store.get_job(&Scope::All, &id).await
                            && j.cancel_requested.is_some()
                        {
                            token.cancel();
                        }
                    }
                })
                .await;
        }
    });
}

/// The error of an attempt cancelled while it ran, naming who asked when the stored job says
/// (a cancel asked in another process always does; one asked here may not yet).
async fn cancelled_while_running(inner: &Inner, job_id: &crate::JobId) -> Error {
    match inner.store.get_job(&Scope::All, job_id).await {
        Ok(Some(Job {
            cancel_requested: Some(by),
            ..
        })) => Error::new(
            ErrorKind::Cancelled,
            format!("cancelled by {by} while running"),
        ),
        _ => Error::new(ErrorKind::Cancelled, "cancelled while running"),
    }
}

// The ending, retrying and recovering steps and the provider call are boxed where they are
// awaited: each is a large future, and unboxed they made this one over 11 KB, which every spawn
// of a job copied whole (a tenth of the engine's instructions per job).
/// Runs the attempt of `job`, claimed at `now`, which the claim also `started` (PENDING →
/// RUNNING) or left as it was.
async fn run_claimed(
    inner: &Arc<Inner>,
    job: Box<Job>,
    started: bool,
    now: DateTime<Utc>,
    held: &Held,
    host_key: &HostKey,
) -> SchedMsg {
    let job_id = job.id.clone();
    let finished = |vm_id| SchedMsg::Finished {
        job_id: job_id.clone(),
        vm_id,
        host_key: host_key.clone(),
    };
    let again = |vm_id| SchedMsg::Retry {
        job_id: job_id.clone(),
        vm_id,
        host_key: host_key.clone(),
        after: inner
            .settings
            .retry
            .initial_delay
            .max(Duration::from_millis(50)),
    };
    let token = held.token;
    let deadline = job.deadline();
    let abandoned = !started && job.state == JobState::Running;
    if !started && now >= deadline {
        let err = Error::new(
            ErrorKind::Timeout,
            format!("job exceeded its timeout of {} ms", job.timeout_ms),
        );
        let vm = if abandoned {
            inner
                .store
                .get_vm(&Scope::All, &job.vm_id)
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        // A job that waited past its timeout ends FAILED without starting.
        let _ = Box::pin(fail(inner, job.clone(), vm.as_ref(), err, JobState::Failed)).await;
        return finished(job.vm_id);
    }
    let job = if abandoned {
        log(
            inner,
            &job,
            LogEntry::warn(format!(
                "the worker running attempt {} stopped (its lease lapsed); this worker took the job over and looks at the hypervisor before running anything again",
                job.attempts
            )),
        );
        let Ok(Some(vm)) = inner.store.get_vm(&Scope::All, &job.vm_id).await else {
            let err = Error::internal(format!("vm `{}` of job `{}` is gone", job.vm_id, job.id));
            let _ = Box::pin(fail(inner, job.clone(), None, err, JobState::Failed)).await;
            return finished(job.vm_id);
        };
        match Box::pin(recover_abandoned(inner, &job, &vm)).await {
            Found::Done(effect, what) => {
                log(inner, &job, LogEntry::info(format!("recovery: {what}")));
                if held.is_held() {
                    Box::pin(succeed(inner, job.clone(), vm, effect)).await;
                }
                return finished(job.vm_id);
            }
            Found::Fail(e, what) => {
                log(inner, &job, LogEntry::warn(format!("recovery: {what}")));
                if held.is_held() {
                    let _ =
                        Box::pin(fail(inner, job.clone(), Some(&vm), e, JobState::Failed)).await;
                }
                return finished(job.vm_id);
            }
            Found::Rerun(what) => {
                log(inner, &job, LogEntry::info(format!("recovery: {what}")));
                // A new attempt: RUNNING → PENDING → RUNNING counts it.
                // Boxed, as the start below: rare, and unboxed its write would widen every
                // state of this future.
                match Box::pin(inner.update_job_fenced_with(job.id.clone(), token, |j| {
                    j.transition(JobState::Pending, inner.now())?;
                    j.transition(JobState::Running, inner.now())
                }))
                .await
                {
                    Ok(j) => j,
                    Err(e) if e.kind() == ErrorKind::Conflict && !e.is_temporary() => {
                        return finished(job.vm_id);
                    }
                    Err(e) => {
                        tracing::warn!(job_id = %job.id, error = %e, "cannot restart a recovered job; trying again shortly");
                        return again(job.vm_id);
                    }
                }
            }
        }
    } else if started {
        transition_event(inner, &job, Some(JobState::Pending), None).await;
        job
    } else {
        // Start it: PENDING → RUNNING, compare-and-swap under the lease, from the job as the
        // claim returned it.
        let vm_id = job.vm_id.clone();
        match Box::pin(
            inner.update_job_fenced_from(Some(job), job_id.clone(), token, |j| {
                if j.state != JobState::Pending {
                    return Err(Error::new(ErrorKind::Conflict, "no longer pending"));
                }
                j.transition(JobState::Running, now)
            }),
        )
        .await
        {
            Ok(j) => {
                transition_event(inner, &j, Some(JobState::Pending), None).await;
                j
            }
            // Someone else moved it on (a cancel, or another worker took it): nothing to run.
            Err(e) if e.kind() == ErrorKind::Conflict && !e.is_temporary() => {
                return finished(vm_id);
            }
            // The store failed: the job is still PENDING; claim it again shortly.
            Err(e) => {
                tracing::warn!(job_id = %job_id, error = %e, "cannot start a claimed job; trying again shortly");
                return again(vm_id);
            }
        }
    };
    publish_status(inner, &job);
    let Ok(Some(vm)) = inner.read_vm(&Scope::All, &job.vm_id).await else {
        let err = Error::internal(format!("vm `{}` of job `{}` is gone", job.vm_id, job.id));
        let _ = Box::pin(fail(inner, job.clone(), None, err, JobState::Running)).await;
        return finished(job.vm_id);
    };
    log(
        inner,
        &job,
        LogEntry::info(attempt_line(
            job.attempts,
            job.max_attempts,
            job.operation,
            &vm.spec.name,
        )),
    );
    tracing::debug!(job_id = %job.id, vm_id = %vm.id, provider = %vm.binding.provider, host = %vm.binding.host, attempt = job.attempts, "job attempt started");

    // A cancel that came while the job was being claimed left its token here already.
    let cancel = lock(&inner.cancels)
        .entry(job.id.clone())
        .or_default()
        .clone();
    // A recovery asked the hypervisor first: the clock moved since.
    let remaining = crate::clock::since(deadline, if abandoned { inner.now() } else { now })
        .unwrap_or(Duration::ZERO);
    // The job's cancel token reaches the provider through its context (a cancel, or the
    // job's time running out, cancels the call, not just drops it). The context shares the
    // map's token (it takes this copy: each copy of a token locks it to count and to drop) and
    // the attempt waits on it through the context; the attempt's end cancels it, just before
    // the token leaves the map.
    let ctx = OpContext::for_job(
        job.id.clone(),
        Arc::new(Reporter {
            inner: inner.clone(),
            job: job.id.clone(),
        }),
        cancel,
    );
    let outcome = tokio::select! {
        // The lease first: a worker that lost it must not act on the VM once more.
        biased;
        _ = held.lost() => None,
        _ = ctx.cancelled() => Some(Err(cancelled_while_running(inner, &job.id).await)),
        r = tokio::time::timeout(remaining, Box::pin(perform(inner, &ctx, &job, &vm))) => Some(r.unwrap_or_else(|_| {
            Err(Error::new(ErrorKind::Timeout, format!("job exceeded its timeout of {} ms", job.timeout_ms)))
        })),
    };
    // Whatever ended the attempt, its provider call is over: cancel anything it left running.
    ctx.cancel();
    lock(&inner.cancels).remove(&job.id);
    let outcome = match outcome {
        Some(o) if held.is_held() => o,
        _ => {
            // Another worker owns the job now: leave everything (the VM, its record, the
            // job) to it.
            log(
                inner,
                &job,
                LogEntry::warn(format!(
                    "attempt {} stopped: this worker lost the job's lease",
                    job.attempts
                )),
            );
            lock(&inner.progress).remove(&job.id);
            return finished(job.vm_id);
        }
    };

    let vm_id = job.vm_id.clone();
    match outcome {
        Ok(effect) => Box::pin(succeed(inner, job, vm, effect)).await,
        Err(e) => {
            let e = e
                .with_operation(job.operation)
                .with_context("vm", &vm.id)
                .with_context("job", &job.id);
            if e.kind() != ErrorKind::Cancelled
                && let RetryDecision::RetryAfter(after) =
                    inner.settings.retry.decide(job.attempts, &e)
                && later(inner.now(), after).is_some_and(|at| at < deadline)
            {
                return Box::pin(retry(inner, &job, e, after, host_key)).await;
            }
            let state = if e.kind() == ErrorKind::Cancelled {
                JobState::Cancelled
            } else {
                JobState::Failed
            };
            let _ = Box::pin(fail(inner, job, Some(&vm), e.persist(), state)).await;
        }
    }
    finished(vm_id)
}

/// What the new holder of an abandoned job found on the hypervisor.
enum Found {
    /// The operation had taken effect: the job is finished with this effect.
    Done(Effect, String),
    /// The operation must run again.
    Rerun(String),
    /// The job fails with this error.
    Fail(Error, String),
}

/// Looks at the hypervisor before an abandoned job (its worker died or hung mid-attempt) runs
/// again, Nova-style: a create whose VM exists with HCP's mark is adopted and finished, never
/// created twice; a create without a VM is run again, or failed once its attempts are used up;
/// a delete whose VM is gone succeeds; a power operation checks the power state. Other
/// operations run again (each is safe to repeat). What was found goes to the job log.
async fn recover_abandoned(inner: &Arc<Inner>, job: &Job, vm: &Vm) -> Found {
    let rerun = |what: String| {
        if job.attempts >= job.max_attempts {
            Found::Fail(
                Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!(
                        "the worker running the job stopped and its {} attempts are used up",
                        job.max_attempts
                    ),
                )
                .with_operation(job.operation),
                format!("{what}; no attempt is left, so the job fails"),
            )
        } else {
            Found::Rerun(format!("{what}; running it again"))
        }
    };
    let looked = match inner.provider(&vm.binding.provider) {
        Ok(entry) => {
            inner
                .call(
                    &vm.binding.provider,
                    crate::Operation::HostInventory,
                    &vm.binding.host,
                    entry
                        .provider
                        .host_inventory(HostInventory::new(vm.binding.host.to_string())),
                )
                .await
        }
        Err(e) => Err(e),
    };
    let found = match looked {
        Ok(inv) => inv.vms.into_iter().find(|n| {
            n.mark.as_ref().is_some_and(|m| m.vm_id == vm.id)
                || vm.binding.native_id.as_deref() == Some(n.native_id.as_str())
        }),
        Err(e) => {
            return rerun(format!(
                "could not look at the hypervisor ({})",
                e.message()
            ));
        }
    };
    match (&job.action, found) {
        (JobAction::Create, Some(n)) => Found::Done(
            Effect::Created {
                native_id: n.native_id,
                power: n.power,
                member_host: n.host,
            },
            "the VM exists on the hypervisor with HCP's mark; it is adopted, not created again"
                .into(),
        ),
        (JobAction::Create, None) => rerun("no VM was made".into()),
        (JobAction::Delete { .. }, None) => Found::Done(Effect::Deleted, "the VM is gone".into()),
        (JobAction::Delete { .. }, Some(_)) => rerun("the VM still exists".into()),
        (JobAction::Start | JobAction::Reboot { .. }, Some(n))
            if n.power == PowerState::Running =>
        {
            Found::Done(
                Effect::Power(PowerState::Running),
                "the VM is running".into(),
            )
        }
        (JobAction::Stop { .. }, Some(n)) if n.power == PowerState::Stopped => Found::Done(
            Effect::Power(PowerState::Stopped),
            "the VM is stopped".into(),
        ),
        (JobAction::Start | JobAction::Reboot { .. } | JobAction::Stop { .. }, Some(n)) => {
            rerun(format!("the VM is {}", n.power))
        }
        (_, None) => rerun("the VM was not found on its host".into()),
        (_, Some(_)) => rerun(format!(
            "{} cannot be checked on the hypervisor",
            job.operation
        )),
    }
}

/// `now` plus `after`, or `None` past the calendar's end.
fn later(now: DateTime<Utc>, after: Duration) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(after)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
}

/// Says in the job log how a stop (its own job, or the first step of a delete) went.
fn report_stop(ctx: &OpContext, r: &crate::StoppedVm, force: bool) {
    if r.was_stopped {
        ctx.info("the VM was already stopped");
    } else if r.forced && force {
        ctx.info("powered the VM off (force)");
    } else if r.forced {
        ctx.warn("the guest did not shut down in time; powered off");
    } else {
        ctx.info("the guest shut down");
    }
}

pub(crate) fn target(vm: &Vm) -> VmTarget {
    VmTarget {
        vm_id: vm.id.clone(),
        name: vm.spec.name.clone(),
        host: vm.binding.host.to_string(),
        native_id: vm.binding.native_id.clone(),
    }
}

async fn perform(inner: &Inner, ctx: &OpContext, job: &Job, vm: &Vm) -> crate::Result<Effect> {
    let entry = inner.provider(&vm.binding.provider)?;
    let p = &entry.provider;
    let (provider, host, op) = (
        vm.binding.provider.as_ref(),
        vm.binding.host.as_ref(),
        job.operation,
    );
    match &job.action {
        JobAction::Create => {
            let networks = vm
                .spec
                .networks
                .iter()
                .map(|n| NetworkPlan {
                    network: n.network.clone(),
                    vlan: inner.catalog.network(&n.network).and_then(|c| c.vlan),
                })
                .collect();
            let mark = HcpMark {
                vm_id: vm.id.clone(),
                project: vm.project.clone(),
                image: Some(vm.spec.image.clone()),
                flavor: vm.spec.flavor.clone(),
                zone: Some(vm.zone.to_string()),
                created_at: Some(vm.created_at),
                user_data: vm.spec.user_data.is_some(),
                server_group: vm.spec.server_group.clone(),
            };
            // The rest set in place: each `with_` call moves the arguments, a few hundred
            // bytes, once more.
            let mut args = CreateVm::new(mark, host, &vm.spec.name, &vm.spec.image, vm.resources);
            args.networks = networks;
            args.tags = vm.spec.tags.clone();
            args.user_data = vm.spec.user_data.clone();
            args.member_host = vm.binding.member_host.clone();
            let created = inner
                .call(provider, op, host, p.create_vm(ctx, args))
                .await?;
            ctx.info(["created ", vm.spec.name.as_str()].concat());
            if let Some(h) = &created.host {
                ctx.log(
                    LogEntry::info(format!("cluster `{host}` placed the VM on host `{h}`"))
                        .operators_only(),
                );
            }
            Ok(Effect::Created {
                native_id: created.native_id,
                power: created.power,
                member_host: created.host,
            })
        }
        JobAction::Delete { force } => {
            // What Nova and Terraform users expect: a running VM is shut down (gracefully unless
            // `force`, hard after the stop timeout), then deleted.
            let stop = StopVm::new(target(vm))
                .with_force(*force)
                .with_graceful_timeout(inner.settings.graceful_stop_timeout);
            match inner.call(provider, op, host, p.stop_vm(ctx, stop)).await {
                Ok(r) => report_stop(ctx, &r, *force),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let r = inner
                .call(
                    provider,
                    op,
                    host,
                    p.delete_vm(ctx, DeleteVm::new(target(vm)).with_force(true)),
                )
                .await?;
            if !r.existed {
                ctx.info("the VM was already gone");
            }
            Ok(Effect::Deleted)
        }
        JobAction::Start => {
            let r = inner
                .call(
                    provider,
                    op,
                    host,
                    p.start_vm(ctx, StartVm::new(target(vm))),
                )
                .await?;
            if r.was_running {
                ctx.info("the VM was already running");
            }
            Ok(Effect::Power(PowerState::Running))
        }
        JobAction::Stop {
            force,
            graceful_timeout_secs,
        } => {
            let args = StopVm::new(target(vm))
                .with_force(*force)
                .with_graceful_timeout(Duration::from_secs(*graceful_timeout_secs));
            let r = inner.call(provider, op, host, p.stop_vm(ctx, args)).await?;
            report_stop(ctx, &r, *force);
            Ok(Effect::Power(PowerState::Stopped))
        }
        JobAction::Reboot { hard } => {
            inner
                .call(
                    provider,
                    op,
                    host,
                    p.reboot_vm(ctx, RebootVm::new(target(vm)).with_hard(*hard)),
                )
                .await?;
            Ok(Effect::Power(PowerState::Running))
        }
        JobAction::Snapshot { name } => {
            let r = inner
                .call(
                    provider,
                    op,
                    host,
                    p.snapshot_vm(ctx, SnapshotVm::new(target(vm)).with_name(name)),
                )
                .await?;
            ctx.log(
                LogEntry::info(format!("snapshot {name} taken"))
                    .with_detail(format!("snapshot id {}", r.snapshot_id)),
            );
            Ok(Effect::Nothing)
        }
        JobAction::RevertSnapshot { name, .. } => {
            let r = inner
                .call(
                    provider,
                    op,
                    host,
                    p.revert_snapshot(ctx, RevertSnapshot::new(target(vm)).with_name(name)),
                )
                .await?;
            ctx.info(if r.memory_kept {
                format!("reverted to snapshot {name}; its memory state was restored")
            } else {
                format!(
                    "reverted to snapshot {name}; it holds disks only, so the VM is {}",
                    r.power
                )
            });
            Ok(Effect::Reverted(r.power))
        }
        JobAction::DeleteSnapshot { name, .. } => {
            let r = inner
                .call(
                    provider,
                    op,
                    host,
                    p.delete_snapshot(ctx, DeleteSnapshot::new(target(vm)).with_name(name)),
                )
                .await?;
            if !r.existed {
                ctx.info(format!("snapshot {name} was already gone"));
            }
            Ok(Effect::Nothing)
        }
        JobAction::Resize {
            from,
            to,
            flavor,
            reboot,
            power_cycle,
        } => {
            let running = !matches!(vm.power, PowerState::Stopped);
            let stop = || {
                StopVm::new(target(vm)).with_graceful_timeout(inner.settings.graceful_stop_timeout)
            };
            if *power_cycle && running {
                ctx.info("stopping the VM: its hypervisor changes this only while it is off");
                let r = inner
                    .call(provider, op, host, p.stop_vm(ctx, stop()))
                    .await?;
                report_stop(ctx, &r, false);
            }
            let changed = |a: u64, b: u64| (a != b).then_some(b);
            let args = ResizeVm::new(target(vm))
                .with_vcpus((from.vcpus != to.vcpus).then_some(to.vcpus))
                .with_memory_mib(changed(from.memory_mib, to.memory_mib))
                .with_disk_gib(changed(from.disk_gib, to.disk_gib));
            let r = inner
                .call(provider, op, host, p.resize_vm(ctx, args))
                .await?;
            record_resize(inner, job, vm, *from, *to, flavor.clone()).await;
            ctx.info(format!(
                "resized to {} vCPUs, {} MiB of memory and a {} GiB disk",
                to.vcpus, to.memory_mib, to.disk_gib
            ));
            if *power_cycle && running {
                inner
                    .call(
                        provider,
                        op,
                        host,
                        p.start_vm(ctx, StartVm::new(target(vm))),
                    )
                    .await?;
                ctx.info("started the VM again");
                return Ok(Effect::Power(PowerState::Running));
            }
            if r.restart_needed && running {
                if !*reboot {
                    ctx.warn("part of the change takes effect at the VM's next restart");
                    return Ok(Effect::Nothing);
                }
                // A cold restart: a guest reboot may keep the old hardware.
                ctx.info("restarting the VM so that it runs with its new size");
                let r = inner
                    .call(provider, op, host, p.stop_vm(ctx, stop()))
                    .await?;
                report_stop(ctx, &r, false);
                inner
                    .call(
                        provider,
                        op,
                        host,
                        p.start_vm(ctx, StartVm::new(target(vm))),
                    )
                    .await?;
                return Ok(Effect::Power(PowerState::Running));
            }
            Ok(Effect::Nothing)
        }
        JobAction::Adopt => {
            let mark = HcpMark {
                vm_id: vm.id.clone(),
                project: vm.project.clone(),
                image: None,
                flavor: None,
                zone: Some(vm.zone.to_string()),
                created_at: Some(vm.created_at),
                user_data: false,
                server_group: None,
            };
            inner
                .call(
                    provider,
                    op,
                    host,
                    p.set_mark(ctx, SetMark::new(target(vm)).with_mark(Some(mark))),
                )
                .await?;
            ctx.info(format!("HCP's mark written on {}", vm.spec.name));
            Ok(Effect::Adopted)
        }
        JobAction::Release => {
            inner
                .call(
                    provider,
                    op,
                    host,
                    p.set_mark(ctx, SetMark::new(target(vm))),
                )
                .await?;
            ctx.info(format!("HCP's mark removed from {}", vm.spec.name));
            Ok(Effect::Released)
        }
        JobAction::Migrate {
            target_host,
            cold: false,
        } => {
            let r = migrate_call(inner, ctx, op, vm, target_host, false).await?;
            Ok(Effect::Moved {
                host: r.host,
                native_id: r.native_id,
            })
        }
        JobAction::Migrate {
            target_host,
            cold: true,
        } => cold_move(inner, ctx, job, vm, target_host).await,
    }
}

/// A cold move: stops a running VM, moves it, records the move, and starts it again on the
/// target when its desired power is running. The move is recorded before the start, so a
/// failed start (the job fails or retries) leaves the VM recorded where it now is; a retry
/// finds it there and only starts it.
async fn cold_move(
    inner: &Inner,
    ctx: &OpContext,
    job: &Job,
    vm: &Vm,
    target_host: &str,
) -> crate::Result<Effect> {
    let entry = inner.provider(&vm.binding.provider)?;
    let p = &entry.provider;
    let (provider, op) = (vm.binding.provider.as_ref(), job.operation);
    let moved = if *vm.binding.host == *target_host {
        ctx.info("an earlier attempt moved the VM already");
        vm.clone()
    } else {
        let host = vm.binding.host.as_ref();
        if vm.power != PowerState::Stopped {
            ctx.info("stopping the VM for a cold move: it is unavailable until it runs again");
            let stop =
                StopVm::new(target(vm)).with_graceful_timeout(inner.settings.graceful_stop_timeout);
            let r = inner.call(provider, op, host, p.stop_vm(ctx, stop)).await?;
            report_stop(ctx, &r, false);
        }
        let r = migrate_call(inner, ctx, op, vm, target_host, true).await?;
        ctx.info("moved the VM while it was stopped");
        record_move(
            inner,
            job,
            vm,
            &r.host,
            &r.native_id,
            Some(PowerState::Stopped),
        )
        .await?;
        let mut moved = vm.clone();
        moved.binding.host = r.host.into();
        moved.binding.native_id = Some(r.native_id);
        moved
    };
    if vm.desired_power != PowerState::Running {
        return Ok(Effect::Nothing);
    }
    inner
        .call(
            provider,
            op,
            &moved.binding.host,
            p.start_vm(ctx, StartVm::new(target(&moved))),
        )
        .await?;
    ctx.info("started the VM again after the move");
    Ok(Effect::Power(PowerState::Running))
}

/// Asks `vm`'s provider to move it to `target_host`, live or (`cold`) stopped.
async fn migrate_call(
    inner: &Inner,
    ctx: &OpContext,
    op: crate::Operation,
    vm: &Vm,
    target_host: &str,
    cold: bool,
) -> crate::Result<crate::MigratedVm> {
    let entry = inner.provider(&vm.binding.provider)?;
    let args = MigrateVm::new(target(vm))
        .with_target_host(target_host)
        .with_cold(cold);
    inner
        .call(
            &vm.binding.provider,
            op,
            &vm.binding.host,
            entry.provider.migrate_vm(ctx, args),
        )
        .await
}

/// Records that `vm` moved to `host` (as `native_id`): the capacity moves with it, its binding
/// (and `power`, when given) is written, and a `vm_migrated` audit event names both hosts.
async fn record_move(
    inner: &Inner,
    job: &Job,
    vm: &Vm,
    host: &str,
    native_id: &str,
    power: Option<PowerState>,
) -> crate::Result<()> {
    settle_migration(inner, job, vm, Some(host));
    let r = inner
        .update_vm_with(&vm.id, |v| {
            v.binding.host = host.into();
            v.binding.native_id = Some(native_id.to_string());
            if let Some(p) = power {
                v.power = p;
            }
        })
        .await;
    inner
        .emit_for_job(
            job,
            EventKind::VmMigrated {
                provider: vm.binding.provider.to_string(),
                from_host: vm.binding.host.to_string(),
                to_host: host.to_string(),
            },
        )
        .await;
    r.map(|_| ())
}

/// Records a resize the provider applied: the VM's spec and size, the host's capacity, and an
/// audit event. Runs before any restart the job does after, so a failed restart leaves the VM
/// recorded at the size it now has.
async fn record_resize(
    inner: &Inner,
    job: &Job,
    vm: &Vm,
    from: Resources,
    to: Resources,
    flavor: Option<String>,
) {
    settle_resize(
        inner,
        &vm.binding.provider,
        &vm.binding.host,
        from,
        to,
        true,
    );
    let r = inner
        .update_vm_with(&vm.id, |v| {
            let spec = Arc::make_mut(&mut v.spec);
            spec.flavor = flavor.clone();
            // Explicit sizes only where the flavor (if any) does not already say them.
            let f = flavor.as_deref().and_then(|f| inner.catalog.flavor(f));
            spec.vcpus = (f.map(|f| f.vcpus) != Some(to.vcpus)).then_some(to.vcpus);
            spec.memory_mib =
                (f.map(|f| f.memory_mib) != Some(to.memory_mib)).then_some(to.memory_mib);
            spec.disk_gib = (f.map(|f| f.disk_gib) != Some(to.disk_gib)).then_some(to.disk_gib);
            v.resources = to;
        })
        .await;
    if let Err(e) = r {
        tracing::error!(job_id = %job.id, error = %e, "cannot record a resize on its VM");
    }
    inner
        .emit_for_job(job, EventKind::VmResized { from, to })
        .await;
}

/// Undoes what a resize that never reached its provider held: the VM's size (and so its quota
/// use) goes back to `from`, and the host's reserved growth is released. A resize the provider
/// applied (its spec already resolves to `to`) keeps its new size.
async fn unwind_resize(inner: &Inner, job: &Job, vm: &Vm) {
    let JobAction::Resize { from, to, .. } = &job.action else {
        return;
    };
    let (from, to) = (*from, *to);
    let applied = inner
        .store
        .get_vm(&Scope::All, &vm.id)
        .await
        .ok()
        .flatten()
        .is_some_and(|v| inner.catalog.resolve(&v.spec).ok() == Some(to));
    if applied {
        return;
    }
    settle_resize(
        inner,
        &vm.binding.provider,
        &vm.binding.host,
        from,
        to,
        false,
    );
    let r = inner
        .update_vm_with(&vm.id, |v| {
            if v.resources == to {
                v.resources = from;
            }
        })
        .await;
    if let Err(e) = r {
        tracing::error!(job_id = %job.id, error = %e, "cannot undo a resize on its VM");
    }
}

async fn succeed(inner: &Arc<Inner>, job: Box<Job>, vm: Vm, effect: Effect) {
    let result = match effect {
        Effect::Deleted => {
            settle_capacity(
                inner,
                &vm.binding.provider,
                &vm.binding.host,
                vm.resources,
                None,
                vm.present,
            );
            let removed = forget_known_vm(inner, &vm).await;
            inner
                .emit_for_job(
                    &job,
                    EventKind::VmDeleted {
                        resources: vm.resources,
                    },
                )
                .await;
            removed
        }
        Effect::Created {
            native_id,
            power,
            member_host,
        } => {
            settle_capacity(
                inner,
                &vm.binding.provider,
                &vm.binding.host,
                vm.resources,
                Some(true),
                false,
            );
            let (resources, vm_id) = (vm.resources, vm.id.clone());
            // The worker's copy of the VM is the write's starting point: no copy of it.
            let r = inner
                .update_vm_from(Some(vm), &vm_id, |v| {
                    v.binding.native_id = Some(native_id.clone());
                    v.binding.member_host = member_host.clone();
                    v.power = power;
                    v.present = true;
                    // A delete submitted meanwhile keeps the VM marked for deletion.
                    if v.desired != DesiredState::Deleted {
                        v.desired = DesiredState::Active;
                    }
                    v.last_error = None;
                })
                .await;
            inner
                .emit_for_job(&job, EventKind::VmCreated { resources })
                .await;
            r.map(|_| ())
        }
        Effect::Power(power) => inner
            .update_vm_with(&vm.id, |v| {
                v.power = power;
                v.last_error = None;
            })
            .await
            .map(|_| ()),
        Effect::Reverted(power) => inner
            .update_vm_with(&vm.id, |v| {
                v.power = power;
                // The VM is where the snapshot left it; HCP wants it there too.
                if power == PowerState::Running || power == PowerState::Stopped {
                    v.desired_power = power;
                }
                v.last_error = None;
            })
            .await
            .map(|_| ()),
        Effect::Moved { host, native_id } => {
            record_move(inner, &job, &vm, &host, &native_id, None).await
        }
        Effect::Adopted => {
            let r = inner
                .update_vm_with(&vm.id, |v| {
                    if v.desired == DesiredState::Pending {
                        v.desired = DesiredState::Active;
                    }
                    v.last_error = None;
                })
                .await;
            inner
                .emit_for_job(
                    &job,
                    EventKind::VmAdopted {
                        provider: vm.binding.provider.to_string(),
                        host: vm.binding.host.to_string(),
                    },
                )
                .await;
            r.map(|_| ())
        }
        Effect::Released => {
            let removed = forget_vm(inner, &vm.id).await;
            inner
                .emit_for_job(
                    &job,
                    EventKind::VmReleased {
                        provider: vm.binding.provider.to_string(),
                        host: vm.binding.host.to_string(),
                    },
                )
                .await;
            removed
        }
        Effect::Nothing => Ok(()),
    };
    if let Err(e) = result {
        tracing::error!(job_id = %job.id, error = %e, "cannot record a finished job's effect on its VM");
    }
    log(
        inner,
        &job,
        LogEntry::info([job.operation.as_str(), " succeeded"].concat()),
    );
    let _ = end(inner, job, JobState::Succeeded, None).await;
}

/// [`forget_vm`] from the VM as the worker read it: no read first unless somebody wrote it
/// since.
async fn forget_known_vm(inner: &Inner, vm: &Vm) -> crate::Result<()> {
    match inner.remove_vm(&vm.id, vm.generation).await {
        Err(e) if e.kind() == ErrorKind::Conflict && e.is_temporary() => {
            forget_vm(inner, &vm.id).await
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes a VM's record from the store (its delete or release succeeded).
async fn forget_vm(inner: &Inner, vm_id: &crate::VmId) -> crate::Result<()> {
    // Only the generation is kept across the removal: a small future.
    let generation = inner
        .store
        .get_vm(&Scope::All, vm_id)
        .await?
        .map(|v| v.generation);
    if let Some(generation) = generation {
        inner.store.remove_vm(vm_id, generation).await?;
    }
    Ok(())
}

/// Gives back what a migration or resize job held and did not use (the target's reserved room,
/// a resize's quota and growth); nothing for other jobs.
async fn release_holds(inner: &Inner, job: &Job, vm: &Vm) {
    // A cold move that moved the VM and then failed to start it settled the target already.
    let moved = match &job.action {
        JobAction::Migrate { target_host, .. } => inner
            .store
            .get_vm(&Scope::All, &vm.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|v| *v.binding.host == **target_host),
        _ => false,
    };
    if !moved {
        settle_migration(inner, job, vm, None);
    }
    unwind_resize(inner, job, vm).await;
}

/// Moves capacity after a migration job: releases the target's reservation and, when the VM
/// moved to `moved_to`, counts it there and no longer on the host it left.
fn settle_migration(inner: &Inner, job: &Job, vm: &Vm, moved_to: Option<&str>) {
    let JobAction::Migrate { target_host, .. } = &job.action else {
        return;
    };
    let provider = &vm.binding.provider;
    let mut inv = write_inventory(inner);
    if let Some(h) = inv.host_mut(provider, target_host) {
        h.capacity.release(&vm.resources);
    }
    if let Some(to) = moved_to {
        if let Some(h) = inv.host_mut(provider, to) {
            h.capacity.add_used(&vm.resources);
        }
        if let Some(h) = inv.host_mut(provider, &vm.binding.host) {
            h.capacity.remove_used(&vm.resources);
        }
    }
}

async fn retry(
    inner: &Arc<Inner>,
    job: &Job,
    e: Error,
    after: Duration,
    host_key: &HostKey,
) -> SchedMsg {
    log(
        inner,
        job,
        error_line(
            LogLevel::Warn,
            format!(
                "attempt {} failed with a temporary error, retrying in {} ms: {}",
                job.attempts,
                after.as_millis(),
                e.message()
            ),
            &e,
        ),
    );
    let retry_at = later(inner.now(), after).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let info = ErrorInfo::from(&e);
    let updated = write_job(inner, Box::new(job.clone()), |j| {
        j.transition(JobState::Pending, inner.now())?;
        j.pending_reason = Some(PendingReason::RetryBackoff {
            attempt: j.attempts,
            retry_at,
            error: e.message().to_string(),
            detail: e.detail().map(str::to_string),
        });
        Ok(())
    })
    .await;
    match updated {
        Ok(j) => {
            transition_event(inner, &j, Some(JobState::Running), Some(info)).await;
            publish_status(inner, &j);
            SchedMsg::Retry {
                job_id: job.id.clone(),
                vm_id: job.vm_id.clone(),
                host_key: host_key.clone(),
                after,
            }
        }
        Err(err) => {
            tracing::error!(job_id = %job.id, error = %err, "cannot requeue job for retry");
            SchedMsg::Finished {
                job_id: job.id.clone(),
                vm_id: job.vm_id.clone(),
                host_key: host_key.clone(),
            }
        }
    }
}

/// Ends a job as failed or cancelled and records the failure on its VM. A failed or cancelled
/// create removes whatever the provider had half-made.
async fn fail(
    inner: &Arc<Inner>,
    job: Box<Job>,
    vm: Option<&Vm>,
    e: Error,
    state: JobState,
) -> crate::Result<()> {
    // The full error, with provider and host context, is for operators; tenants see its message.
    tracing::warn!(job_id = %job.id, vm_id = %job.vm_id, error = %e, "job ended without success");
    let info = ErrorInfo::from(&e);
    log(
        inner,
        &job,
        error_line(
            LogLevel::Error,
            format!("{} failed: {}", job.operation, e.message()),
            &e,
        ),
    );
    // A resize that timed out before it started still holds its quota and host room.
    if vm.is_none()
        && matches!(job.action, JobAction::Resize { .. })
        && let Ok(Some(cur)) = inner.store.get_vm(&Scope::All, &job.vm_id).await
    {
        unwind_resize(inner, &job, &cur).await;
    }
    if let Some(vm) = vm {
        settle_migration(inner, &job, vm, None);
        if job.action == JobAction::Create {
            settle_capacity(
                inner,
                &vm.binding.provider,
                &vm.binding.host,
                vm.resources,
                Some(false),
                false,
            );
            let cleaned = cleanup_create(inner, &job, vm).await;
            if cleaned && state == JobState::Cancelled {
                // The caller asked for the create to stop and nothing is left on the host:
                // forget the VM, as a create cancelled while queued does.
                if let Ok(Some(cur)) = inner.store.get_vm(&Scope::All, &vm.id).await {
                    let _ = inner.store.remove_vm(&vm.id, cur.generation).await;
                }
                return end(inner, job, state, Some(info)).await;
            }
        }
        if job.action == JobAction::Adopt {
            // The mark was not written: HCP never managed the VM, so it forgets it again.
            if let Err(err) = forget_vm(inner, &vm.id).await {
                tracing::error!(job_id = %job.id, error = %err, "cannot forget a VM whose adoption failed");
            }
            return end(inner, job, state, Some(info)).await;
        }
        unwind_resize(inner, &job, vm).await;
        let is_create = job.action == JobAction::Create;
        let is_delete = matches!(job.action, JobAction::Delete { .. });
        let r = inner
            .update_vm_with(&vm.id, |v| {
                v.last_error = Some(Box::new(info.clone()));
                if is_create {
                    if v.desired != DesiredState::Deleted {
                        v.desired = DesiredState::Error;
                    }
                    v.present = false;
                    v.power = PowerState::Unknown;
                } else if is_delete {
                    // The VM still exists: it is active again, with the error recorded.
                    v.desired = DesiredState::Active;
                } else {
                    // The wanted power state did not come about: stop wanting it.
                    if matches!(v.power, PowerState::Running | PowerState::Stopped) {
                        v.desired_power = v.power;
                    }
                }
            })
            .await;
        if let Err(err) = r {
            tracing::error!(job_id = %job.id, error = %err, "cannot record a failed job on its VM");
        }
    }
    end(inner, job, state, Some(info)).await
}

/// Removes whatever a failed or cancelled create left on the host; returns true when nothing is left.
async fn cleanup_create(inner: &Arc<Inner>, job: &Job, vm: &Vm) -> bool {
    let Ok(entry) = inner.provider(&vm.binding.provider) else {
        return false;
    };
    let ctx = OpContext::detached();
    let args = DeleteVm::new(target(vm)).with_force(true);
    let r = tokio::time::timeout(
        Duration::from_secs(120),
        inner.call(
            &vm.binding.provider,
            crate::Operation::DeleteVm,
            &vm.binding.host,
            entry.provider.delete_vm(&ctx, args),
        ),
    )
    .await;
    match r {
        Ok(Ok(d)) => {
            if d.existed {
                log(inner, job, LogEntry::warn("removed the partly created VM"));
            }
            true
        }
        Ok(Err(e)) => {
            log(
                inner,
                job,
                error_line(
                    LogLevel::Error,
                    format!("could not remove the partly created VM: {}", e.message()),
                    &e,
                ),
            );
            false
        }
        Err(_) => {
            log(
                inner,
                job,
                LogEntry::new(LogLevel::Error, "removing the partly created VM timed out"),
            );
            false
        }
    }
}

/// Records a pending job that ended without running (cancelled while queued).
pub(crate) async fn finish_pending(inner: &Arc<Inner>, job: &Job, principal: &Principal) {
    if job.action == JobAction::Create {
        // Nothing exists on the host yet: forget the VM and free its capacity.
        if let Ok(Some(vm)) = inner.store.get_vm(&Scope::All, &job.vm_id).await {
            settle_capacity(
                inner,
                &vm.binding.provider,
                &vm.binding.host,
                vm.resources,
                Some(false),
                false,
            );
            let _ = inner.store.remove_vm(&vm.id, vm.generation).await;
        }
    } else if job.action == JobAction::Adopt {
        // The mark was never written: forget the VM again.
        let _ = forget_vm(inner, &job.vm_id).await;
    } else if matches!(job.action, JobAction::Delete { .. }) {
        let _ = inner
            .update_vm_with(&job.vm_id, |v| v.desired = DesiredState::Active)
            .await;
    } else if matches!(
        job.action,
        JobAction::Migrate { .. } | JobAction::Resize { .. }
    ) && let Ok(Some(vm)) = inner.store.get_vm(&Scope::All, &job.vm_id).await
    {
        release_holds(inner, job, &vm).await;
    }
    super::watch::send(
        inner,
        LogMsg::line(
            &job.id,
            LogEntry::warn(format!("cancelled by {principal} before it started")),
        ),
    );
    finalize(inner, Box::new(job.clone()));
}

async fn end(
    inner: &Arc<Inner>,
    job: Box<Job>,
    state: JobState,
    error: Option<ErrorInfo>,
) -> crate::Result<()> {
    let from = job.state;
    let err = error.clone();
    let progress = lock(&inner.progress).remove(&job.id);
    let job = write_job(inner, job, |j| {
        if let Some(p) = progress {
            j.progress = p;
        }
        j.transition(state, inner.now())?;
        j.error = err.clone().map(Box::new);
        Ok(())
    })
    .await?;
    transition_event(inner, &job, Some(from), error).await;
    finalize(inner, job);
    Ok(())
}

/// Writes a job a worker runs, from `job` as the worker last read or wrote it: fenced with the
/// token of the lease `job` carries (refused with `LEASE_LOST` once another worker claimed it),
/// unfenced for a job without a lease.
fn write_job<'a>(
    inner: &'a Inner,
    job: Box<Job>,
    f: impl FnMut(&mut Job) -> crate::Result<()> + Send + 'a,
) -> super::StoreCall<'a, crate::Result<Box<Job>>> {
    let id = job.id.clone();
    match job.lease.as_ref().map(|l| l.token) {
        Some(token) => inner.update_job_fenced_from(Some(job), id, token, f),
        None => super::StoreCall::Right(Box::pin(async move {
            inner.update_job_with(&id, f).await.map(Box::new)
        })),
    }
}

/// Tells watchers the job ended, once every log line sent before has been written. `job` is the
/// ended job as written: the log writer hands it on without reading it back.
fn finalize(inner: &Inner, job: Box<Job>) {
    // A cancel that raced the end left a token nobody will take.
    lock(&inner.cancels).remove(&job.id);
    super::watch::send(inner, LogMsg::Finalize(job));
}

/// Ends a job whose worker panicked, so that nothing stays stuck: the job fails with an internal
/// error, a create's reservation is released and its VM marked `ERROR`, and the returned message
/// lets the scheduler advance the VM's queue. Runs after the panic was caught; the panic's text
/// goes to the operators' log only.
pub(crate) async fn recover(
    inner: &Arc<Inner>,
    job_id: &crate::JobId,
    vm_id: &crate::VmId,
    host_key: &HostKey,
    panic: &str,
) -> SchedMsg {
    tracing::error!(%job_id, panic, "a job's worker panicked; the job fails with an internal error");
    lock(&inner.cancels).remove(job_id);
    lock(&inner.progress).remove(job_id);
    let finished = |vm_id| SchedMsg::Finished {
        job_id: job_id.clone(),
        vm_id,
        host_key: host_key.clone(),
    };
    // The job cannot be read: its VM's queue still moves on (the job, if it exists, is
    // claimable again once its lease lapses).
    let job = match inner.store.get_job(&Scope::All, job_id).await {
        Ok(Some(job)) => job,
        _ => return finished(vm_id.clone()),
    };
    if job.state.is_terminal() {
        return finished(job.vm_id);
    }
    let err = Error::internal(
        "the job failed unexpectedly (an internal error); operators find the details in the server log",
    )
    .with_operation(job.operation)
    .with_context("job", &job.id);
    let vm = inner
        .store
        .get_vm(&Scope::All, &job.vm_id)
        .await
        .ok()
        .flatten();
    if let Some(vm) = &vm {
        release_holds(inner, &job, vm).await;
    }
    if let Some(vm) = &vm
        && job.action == JobAction::Create
    {
        settle_capacity(
            inner,
            &vm.binding.provider,
            &vm.binding.host,
            vm.resources,
            Some(false),
            false,
        );
        let info = ErrorInfo::from(&err);
        let r = inner
            .update_vm_with(&vm.id, |v| {
                v.last_error = Some(Box::new(info.clone()));
                if v.desired != DesiredState::Deleted {
                    v.desired = DesiredState::Error;
                }
                v.power = PowerState::Unknown;
            })
            .await;
        if let Err(e) = r {
            tracing::error!(%job_id, error = %e, "cannot record a panicked job on its VM");
        }
    }
    log(
        inner,
        &job,
        LogEntry::new(
            LogLevel::Error,
            format!("{} failed: {}", job.operation, err.message()),
        ),
    );
    let vm_id = job.vm_id.clone();
    if let Err(e) = end(
        inner,
        Box::new(job),
        JobState::Failed,
        Some(ErrorInfo::from(&err)),
    )
    .await
    {
        tracing::error!(%job_id, error = %e, "cannot end a panicked job");
    }
    finished(vm_id)
}

/// Runs on the log writer after the job's last line: reports the end (of `job`, as its ending
/// write left it) to the observer and watchers.
pub(crate) fn announce_end(inner: &Inner, job: Box<Job>) {
    // An ended job carries its end: the clock is read only for one that does not.
    let elapsed = job
        .elapsed(job.finished_at.unwrap_or_else(|| inner.now()))
        .unwrap_or_default();
    inner
        .observer
        .job_finished(job.operation, job.state, elapsed);
    let sender = inner.watchers.remove(&job.id);
    if let Some(tx) = sender {
        let _ = tx.send(JobUpdate::End(job));
    }
}

async fn transition_event(
    inner: &Inner,
    job: &Job,
    from: Option<JobState>,
    error: Option<ErrorInfo>,
) {
    // The event happened when the job record says it did: its end, or its start.
    let at = match job.state {
        JobState::Running => job.started_at,
        s if s.is_terminal() => job.finished_at,
        _ => None,
    };
    inner
        .emit_at(
            at,
            Some(job.project.clone()),
            Some(job.vm_id.clone()),
            Some(&job.principal),
            EventKind::JobTransition {
                job_id: job.id.clone(),
                operation: job.operation,
                from,
                to: job.state,
                attempt: job.attempts,
                error,
            },
        )
        .await;
}

pub(crate) fn publish_status(inner: &Inner, job: &Job) {
    if let Some(tx) = inner.watchers.get(&job.id) {
        let _ = tx.send(JobUpdate::Status {
            state: job.state,
            progress: job.progress,
            pending_reason: job.pending_reason.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_line_names_the_attempt_the_operation_and_the_vm() {
        assert_eq!(
            attempt_line(2, 10, crate::Operation::CreateVm, "web-1"),
            format!("attempt 2/10: {} web-1", crate::Operation::CreateVm)
        );
        assert_eq!(
            attempt_line(u32::MAX, 1, crate::Operation::DeleteVm, ""),
            format!("attempt {}/1: {} ", u32::MAX, crate::Operation::DeleteVm)
        );
    }
}
