//! What the CLI shows: tenant views of jobs, the outcome of a mutating command, and the errors
//! that are not `hcp_core::Error`s.

use std::fmt;

use hcp_client::TenantUpdate;
use hcp_core::job::TenantJob;
use hcp_core::{JobId, JobLogLine, JobState, PendingReason, TenantVm, VmId};
use serde::{Deserialize, Serialize};

/// A job as a tenant sees it: no host, no provider (embedded, with the caller's own
/// idempotency key).
pub type JobView = TenantJob;

/// One update while following a job (`hcp job watch --output json` prints one per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    /// A log line: past lines first, then live ones.
    Log(JobLogLine),
    /// The state or progress changed.
    Status {
        /// The state.
        state: JobState,
        /// Progress, 0–100.
        progress: u8,
        /// Why it is pending.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_reason: Option<PendingReason>,
    },
    /// The job ended; nothing follows.
    End {
        /// The job as it ended.
        job: Box<JobView>,
    },
}

impl From<TenantUpdate> for JobEvent {
    fn from(u: TenantUpdate) -> Self {
        match u {
            TenantUpdate::Log(line) => JobEvent::Log(line),
            TenantUpdate::Status {
                state,
                progress,
                pending_reason,
            } => JobEvent::Status {
                state,
                progress,
                pending_reason,
            },
            TenantUpdate::End(job) => JobEvent::End { job },
        }
    }
}

/// What a mutating command (`vm create|start|stop|reboot|delete`) did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The VM the job acted on.
    pub vm_id: VmId,
    /// The job.
    pub job_id: JobId,
    /// True when an idempotency key replayed an earlier request: no new job ran.
    pub replayed: bool,
    /// The job, as it ended (or as it was when the command returned: remote mode without
    /// `--wait`).
    pub job: JobView,
    /// The VM after the job; absent once deleted.
    pub vm: Option<TenantVm>,
    /// HCP's id of the snapshot a snapshot command acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// A revert's answer: true when the snapshot held memory state (the VM came back running
    /// where it was), false when it held disks only (the VM ended stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_state_kept: Option<bool>,
}

/// A job ended `FAILED` or `CANCELLED`.
#[derive(Debug)]
pub struct JobFailed {
    /// The job as it ended.
    pub job: JobView,
}

impl fmt::Display for JobFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "job {} ({}) ended {}",
            self.job.id, self.job.operation, self.job.state
        )?;
        if let Some(e) = &self.job.error {
            write!(f, ": {}", e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for JobFailed {}

/// The user stopped waiting for a job with Ctrl-C twice (the first asked to cancel the job).
#[derive(Debug)]
pub struct Interrupted {
    /// The job that was being waited for.
    pub job_id: JobId,
    /// True when the job runs in a service (remote mode) and goes on without us.
    pub detached: bool,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detached {
            write!(
                f,
                "interrupted while waiting for job {id}, which the service was asked to cancel: follow it with `hcp job watch {id}`",
                id = self.job_id
            )
        } else {
            write!(
                f,
                "interrupted while waiting for job {}; its outcome is unknown (the next command rebuilds the VM state from the hosts)",
                self.job_id
            )
        }
    }
}

impl std::error::Error for Interrupted {}
