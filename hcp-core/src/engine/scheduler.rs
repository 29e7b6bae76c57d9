//! The scheduler: one task that decides which pending job runs next.
//!
//! # Behavior
//! - Never two jobs on one VM at once: jobs on a VM wait in that VM's queue, in submission order.
//! - At most `max_concurrent_jobs` running overall and, per placement target (a host or a
//!   cluster), its own `max_jobs` from the hosts file or else `max_jobs_per_host`; a job whose
//!   target is full waits in that target's queue without blocking jobs for other targets.
//! - A job in retry backoff keeps its VM (later jobs on the VM wait) but frees its slots.
//!
//! Each job passes through the queues a constant number of times, so scheduling stays cheap
//! with many thousands of queued jobs.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::mpsc;

use super::{HostKey, Inner, worker};
use crate::fastmap::{HashMap, HashSet};
use crate::{JobId, JobState, PendingReason, VmId};

#[derive(Debug)]
pub(crate) enum SchedMsg {
    /// A job was accepted.
    Submitted {
        job_id: JobId,
        vm_id: VmId,
        host_key: HostKey,
    },
    /// A started job's worker returned: it ended, or never started because it had ended already.
    Finished {
        job_id: JobId,
        vm_id: VmId,
        host_key: HostKey,
    },
    /// A started job failed temporarily and is pending again; it may run after `after`.
    Retry {
        job_id: JobId,
        vm_id: VmId,
        host_key: HostKey,
        after: Duration,
    },
    /// A retry's backoff elapsed.
    RetryReady {
        job_id: JobId,
        vm_id: VmId,
        host_key: HostKey,
    },
    /// A pending job was cancelled or failed without running.
    Cancelled { job_id: JobId, vm_id: VmId },
    /// The lease poller found a claimable job in the store; ignored when already known here.
    Offered {
        job_id: JobId,
        vm_id: VmId,
        host_key: HostKey,
    },
}

#[derive(Debug, Clone)]
struct Queued {
    job_id: JobId,
    vm_id: VmId,
    host_key: HostKey,
}

struct Scheduler {
    max_global: usize,
    max_host: usize,
    /// Caps of the targets that set their own (`max_jobs`), by host key.
    target_caps: HashMap<HostKey, usize>,
    running: HashSet<JobId>,
    running_host: HashMap<HostKey, usize>,
    /// Each VM's jobs in submission order, the first inline: a VM nearly always has one job
    /// at a time, and no list is allocated for it. A job is here from its submission until it
    /// finishes or is cancelled (queued, running or in backoff), so an offer of one found here
    /// is ignored: no set of known jobs is kept beside it.
    vm_queues: HashMap<VmId, smallvec::SmallVec<[Queued; 1]>>,
    ready: VecDeque<Queued>,
    host_waiting: HashMap<HostKey, VecDeque<Queued>>,
    /// Jobs removed from their VM queue while still sitting in `ready`, a host queue or backoff.
    skip: HashSet<JobId>,
}

pub(crate) fn spawn(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<SchedMsg>) {
    let (max_global, max_host, target_caps) = match inner.upgrade() {
        Some(i) => (
            i.settings.max_concurrent_jobs.max(1),
            i.settings.max_jobs_per_host.max(1),
            i.providers
                .iter()
                .flat_map(|(provider, entry)| {
                    entry
                        .max_jobs
                        .iter()
                        .map(move |(target, n)| (HostKey::of(provider, target), (*n).max(1)))
                })
                .collect(),
        ),
        None => return,
    };
    let mut s = Scheduler {
        max_global,
        max_host,
        target_caps,
        running: HashSet::default(),
        running_host: HashMap::default(),
        vm_queues: HashMap::default(),
        ready: VecDeque::new(),
        host_waiting: HashMap::default(),
        skip: HashSet::default(),
    };
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let Some(inner) = inner.upgrade() else { return };
            // The scheduler serves every job: a bug that panics here must cost one message, not
            // the engine's whole job processing.
            let pass = std::panic::catch_unwind(AssertUnwindSafe(|| {
                s.handle(&inner, msg);
                // Drain what else is queued before pumping, so bursts are handled in one pass.
                while let Ok(msg) = rx.try_recv() {
                    s.handle(&inner, msg);
                }
                s.pump(&inner);
            }));
            if let Err(panic) = pass {
                tracing::error!(
                    panic = super::panic_message(panic.as_ref()),
                    "the scheduler panicked handling a message; it goes on with the next"
                );
            }
        }
    });
}

impl Scheduler {
    fn handle(&mut self, inner: &Arc<Inner>, msg: SchedMsg) {
        match msg {
            SchedMsg::Offered {
                job_id,
                vm_id,
                host_key,
            } => {
                if self.queued(&vm_id, &job_id) {
                    return;
                }
                inner.pending.fetch_add(1, Ordering::Relaxed);
                self.handle(
                    inner,
                    SchedMsg::Submitted {
                        job_id,
                        vm_id,
                        host_key,
                    },
                );
            }
            SchedMsg::Submitted {
                job_id,
                vm_id,
                host_key,
            } => {
                let q = self.vm_queues.entry(vm_id.clone()).or_default();
                if q.iter().any(|j| j.job_id == job_id) {
                    // Offered by the poller before its submitter's message came.
                    inner.pending.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                let head = q.first().map(|h| h.job_id.clone());
                q.push(Queued {
                    job_id: job_id.clone(),
                    vm_id: vm_id.clone(),
                    host_key: host_key.clone(),
                });
                match head {
                    None => self.ready.push_back(Queued {
                        job_id,
                        vm_id,
                        host_key,
                    }),
                    Some(blocking_job) => {
                        set_reason(inner, job_id, PendingReason::WaitingForVm { blocking_job })
                    }
                }
            }
            SchedMsg::Finished {
                job_id,
                vm_id,
                host_key,
            } => {
                self.release(&job_id, &host_key);
                self.advance_vm(inner, &vm_id, &job_id);
            }
            SchedMsg::Retry {
                job_id,
                vm_id,
                host_key,
                after,
            } => {
                self.release(&job_id, &host_key);
                inner.pending.fetch_add(1, Ordering::Relaxed);
                let weak = Arc::downgrade(inner);
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    if let Some(inner) = weak.upgrade() {
                        let _ = inner.sched.send(SchedMsg::RetryReady {
                            job_id,
                            vm_id,
                            host_key,
                        });
                    }
                });
            }
            SchedMsg::RetryReady {
                job_id,
                vm_id,
                host_key,
            } => {
                if !self.skip.remove(&job_id) {
                    self.ready.push_back(Queued {
                        job_id,
                        vm_id,
                        host_key,
                    });
                }
            }
            SchedMsg::Cancelled { job_id, vm_id } => {
                if self.running.contains(&job_id) {
                    // Its worker reports Finished.
                    return;
                }
                let Some(q) = self.vm_queues.get_mut(&vm_id) else {
                    return;
                };
                let Some(pos) = q.iter().position(|j| j.job_id == job_id) else {
                    return;
                };
                inner.pending.fetch_sub(1, Ordering::Relaxed);
                if pos == 0 {
                    // The head sits in `ready`, a host queue or backoff: skip it there.
                    self.skip.insert(job_id.clone());
                    self.advance_vm(inner, &vm_id, &job_id);
                } else {
                    q.remove(pos);
                }
            }
        }
    }

    /// Returns true when job `job_id` of VM `vm_id` is in the VM's queue.
    fn queued(&self, vm_id: &VmId, job_id: &JobId) -> bool {
        self.vm_queues
            .get(vm_id)
            .is_some_and(|q| q.iter().any(|j| &j.job_id == job_id))
    }

    fn release(&mut self, job_id: &JobId, host_key: &HostKey) {
        if self.running.remove(job_id) {
            if let Some(n) = self.running_host.get_mut(host_key) {
                *n = n.saturating_sub(1);
            }
            // A slot on this host freed: its first waiting job goes first.
            if !self.host_waiting.is_empty()
                && let Some(w) = self.host_waiting.get_mut(host_key)
                && let Some(next) = w.pop_front()
            {
                self.ready.push_front(next);
            }
        }
    }

    /// Removes `done` from the head of its VM queue and readies the next job on the VM.
    fn advance_vm(&mut self, inner: &Arc<Inner>, vm_id: &VmId, done: &JobId) {
        let Some(q) = self.vm_queues.get_mut(vm_id) else {
            return;
        };
        if q.first().is_some_and(|h| &h.job_id == done) {
            q.remove(0);
        }
        match q.first() {
            Some(next) => {
                set_reason(inner, next.job_id.clone(), PendingReason::Queued);
                self.ready.push_back(next.clone());
            }
            None => {
                self.vm_queues.remove(vm_id);
            }
        }
    }

    fn pump(&mut self, inner: &Arc<Inner>) {
        while self.running.len() < self.max_global {
            let Some(job) = self.ready.pop_front() else {
                break;
            };
            // The sets and maps below are empty in the usual case: looked at only when not, so
            // the usual job hashes no key for them.
            if !self.skip.is_empty() && self.skip.remove(&job.job_id) {
                continue;
            }
            let cap = if self.target_caps.is_empty() {
                self.max_host
            } else {
                self.target_caps
                    .get(&job.host_key)
                    .copied()
                    .unwrap_or(self.max_host)
            };
            let on_host = self.running_host.entry(job.host_key.clone()).or_default();
            if *on_host >= cap {
                let host = job.host_key.host().to_string();
                set_reason(
                    inner,
                    job.job_id.clone(),
                    PendingReason::WaitingForHostSlot { host, limit: cap },
                );
                self.host_waiting
                    .entry(job.host_key.clone())
                    .or_default()
                    .push_back(job);
                continue;
            }
            *on_host += 1;
            self.running.insert(job.job_id.clone());
            inner.pending.fetch_sub(1, Ordering::Relaxed);
            inner.running.fetch_add(1, Ordering::Relaxed);
            let inner = inner.clone();
            tokio::spawn(async move {
                // A panic in the worker ends this job only: it is caught here, the job fails,
                // and the scheduler hears back either way, so its VM's queue and its slots move on.
                // Boxed: a job's future is large, and tokio moves a spawned future's whole
                // state each time it stores it; boxed, only the pointer moves.
                let run = AssertUnwindSafe(Box::pin(worker::run(
                    &inner,
                    &job.job_id,
                    &job.vm_id,
                    &job.host_key,
                )));
                let msg = match run.catch_unwind().await {
                    Ok(msg) => msg,
                    Err(panic) => {
                        let text = super::panic_message(panic.as_ref()).to_string();
                        let recover = AssertUnwindSafe(Box::pin(worker::recover(
                            &inner,
                            &job.job_id,
                            &job.vm_id,
                            &job.host_key,
                            &text,
                        )));
                        match recover.catch_unwind().await {
                            Ok(msg) => msg,
                            Err(_) => {
                                tracing::error!(job_id = %job.job_id, "recovering a panicked job panicked too; its VM's queue moves on");
                                SchedMsg::Finished {
                                    job_id: job.job_id.clone(),
                                    vm_id: job.vm_id.clone(),
                                    host_key: job.host_key.clone(),
                                }
                            }
                        }
                    }
                };
                inner.running.fetch_sub(1, Ordering::Relaxed);
                let _ = inner.sched.send(msg);
            });
        }
    }
}

/// Records why a job waits, if it is still pending.
fn set_reason(inner: &Arc<Inner>, job_id: JobId, reason: PendingReason) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let _ = inner
            .update_job_with(&job_id, |j| {
                if j.state != JobState::Pending || j.pending_reason.as_ref() == Some(&reason) {
                    return Err(crate::Error::new(crate::ErrorKind::Conflict, "unchanged"));
                }
                j.pending_reason = Some(reason.clone());
                Ok(())
            })
            .await;
    });
}
