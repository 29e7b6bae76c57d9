//! Job leases on the engine's side: the heartbeat that keeps a running job's lease alive, and
//! the poller that finds jobs nobody runs (never scheduled, or abandoned by a worker that died
//! or hung) and offers them to the scheduler.
//!
//! # Behavior
//! - A worker claims its job before it runs it ([`crate::store::Store::claim_job`]) and holds
//!   a [`Held`] lease: a heartbeat renews it every third of `engine.job_lease`.
//! - The worker stops its job (drops its provider call, writes nothing more) as soon as the
//!   lease is lost (a renewal refused with `LEASE_LOST`) or may have lapsed: when no renewal
//!   succeeded for the lease's length less a tenth, measured on this process's monotonic clock
//!   from when the last successful renewal was sent. A process stopped past its lease (SIGSTOP)
//!   therefore finds its lease expired the moment it runs again, before any other work.
//! - The poller asks the store for claimable jobs every third of the lease and offers those the
//!   scheduler does not know; the scheduler ignores jobs it already queues or runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::Inner;
use super::scheduler::SchedMsg;
use crate::{JobId, Result};

/// Most jobs the poller offers per pass.
const POLL_BATCH: usize = 500;

/// The lease `until` for a claim or renewal made at `now`.
pub(crate) fn until(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    crate::clock::add(now, lease).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How long after a successful renewal was sent this process trusts its lease: the lease less a
/// tenth, so the worker stops before another replica may claim the job.
fn trusted(lease: Duration) -> Duration {
    lease.saturating_sub(lease / 10)
}

/// A lease this engine holds on a running job. Its heartbeat ([`Held::keep`]) runs inside the
/// job's own task, beside the job: no task of its own per job.
pub(crate) struct Held {
    /// The fencing token every write of the job carries.
    pub(crate) token: u64,
    /// Set when the lease was lost or may have lapsed. Only the heartbeat sets it, from the
    /// job's own task, and wakes that task when it does: [`Held::lost`] needs no waker of its
    /// own.
    lost: AtomicBool,
    /// Milliseconds after `base` until which the lease is trusted.
    valid_ms: AtomicU64,
    base: Instant,
    /// The lease's length.
    lease: Duration,
}

impl Held {
    /// Holds the lease `token`, claimed just before `claimed_at`.
    pub(crate) fn new(inner: &Inner, token: u64, claimed_at: Instant) -> Held {
        let lease = inner.settings.job_lease;
        Held {
            token,
            lost: AtomicBool::new(false),
            valid_ms: AtomicU64::new(millis(trusted(lease))),
            base: claimed_at,
            lease,
        }
    }

    /// The heartbeat of the lease on `job_id`: renews it every third of its length and marks
    /// it lost when a renewal is refused with `LEASE_LOST` or none succeeded in time. Never
    /// completes: run it beside the job (`select!`) and drop it when the job is done.
    pub(crate) async fn keep(&self, inner: &Inner, job_id: &JobId) -> std::convert::Infallible {
        let period = (self.lease / 3).max(Duration::from_millis(10));
        let token = self.token;
        loop {
            // One timer: the next renewal, or the moment the lease can no longer be trusted,
            // whichever comes first. Past the second (a process stopped past its lease), the
            // job stops; no late renewal revives it.
            let renew_at = Instant::now() + period;
            tokio::time::sleep_until(renew_at.min(self.deadline())).await;
            if Instant::now() >= self.deadline() {
                tracing::warn!(%job_id, token, "no lease renewal succeeded in time; the job stops here");
                self.mark_lost().await;
                return std::future::pending().await;
            }
            let sent = Instant::now();
            match inner
                .store
                .renew_lease(job_id, &inner.holder, token, until(inner.now(), self.lease))
                .await
            {
                Ok(_) => {
                    let ms =
                        millis(sent.saturating_duration_since(self.base) + trusted(self.lease));
                    self.valid_ms.fetch_max(ms, Ordering::AcqRel);
                }
                Err(e) if e.code() == crate::CODE_LEASE_LOST => {
                    tracing::warn!(%job_id, token, "the job's lease was taken over; the job stops here");
                    self.mark_lost().await;
                    return std::future::pending().await;
                }
                Err(e) => {
                    tracing::warn!(%job_id, token, error = %e, "cannot renew a job's lease; trying again");
                }
            }
        }
    }

    /// When the lease stops being trusted, unless renewed before.
    fn deadline(&self) -> Instant {
        self.base + Duration::from_millis(self.valid_ms.load(Ordering::Acquire))
    }

    /// Returns true while the lease is held and trusted.
    pub(crate) fn is_held(&self) -> bool {
        !self.lost.load(Ordering::Acquire) && Instant::now() < self.deadline()
    }

    /// Completes once the lease is lost or may have lapsed. It reads the clock each time it is
    /// polled, so a job resumed past its lease (a process stopped and continued) stops before
    /// anything else it does, and it needs no timer of its own: the heartbeat ([`Held::keep`]),
    /// which runs in the same task, wakes the task at the lease's deadline and then marks the
    /// lease lost.
    pub(crate) async fn lost(&self) {
        std::future::poll_fn(|_| {
            if self.lost.load(Ordering::Acquire) || Instant::now() >= self.deadline() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }

    /// Marks the lease lost and wakes the job's task (this runs in it), so that the job, polled
    /// again, sees it in [`Held::lost`].
    async fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
        std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            std::task::Poll::Ready(())
        })
        .await;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Offers every claimable job to the scheduler once.
///
/// # Errors
/// The store's.
pub(crate) async fn poll_once(inner: &Arc<Inner>) -> Result<()> {
    for job in inner.store.claimable_jobs(inner.now(), POLL_BATCH).await? {
        let _ = inner.sched.send(SchedMsg::Offered {
            host_key: super::HostKey::new(&job.provider, &job.host),
            job_id: job.id,
            vm_id: job.vm_id,
        });
    }
    Ok(())
}

/// Polls the store for claimable jobs every third of the lease until the engine shuts down.
pub(crate) fn spawn_poller(inner: Weak<Inner>) {
    let Some((period, shutdown)) = inner.upgrade().map(|i| {
        (
            (i.settings.job_lease / 3).max(Duration::from_millis(10)),
            i.shutdown.clone(),
        )
    }) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = poll_once(&inner).await {
                tracing::warn!(error = %e, "cannot look for claimable jobs; trying again");
            }
        }
    });
}
