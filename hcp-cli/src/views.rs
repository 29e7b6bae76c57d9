//! What the CLI shows: tenant views of jobs, the outcome of a mutating command, and the errors
//! that are not `hcp_core::Error`s.

use std::fmt;

use chrono::{DateTime, Utc};
use hcp_core::job::TenantJob;
use hcp_core::{
    ErrorInfo, Job, JobAction, JobId, JobLogLine, JobState, JobUpdate, Operation, PendingReason,
    ProjectId, TenantVm, VmId,
};
use serde::{Deserialize, Serialize};

/// A job as a tenant sees it: no host, no provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    /// The job id.
    pub id: JobId,
    /// The project of its VM.
    pub project: ProjectId,
    /// The VM it acts on.
    pub vm_id: VmId,
    /// The operation.
    pub operation: Operation,
    /// Details of the operation; `null` only from a service that does not send them.
    #[serde(default)]
    pub action: Option<JobAction>,
    /// The state.
    pub state: JobState,
    /// Why it is pending, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<PendingReason>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Most attempts allowed.
    pub max_attempts: u32,
    /// Progress, 0–100.
    pub progress: u8,
    /// Who submitted it.
    pub principal: String,
    /// The idempotency key it was submitted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The error, when it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&Job> for JobView {
    /// Goes through the core's tenant view, so nothing operator-only (hosts) reaches the CLI's
    /// output; the idempotency key is the caller's own and stays.
    fn from(j: &Job) -> Self {
        let mut view = JobView::from(&j.tenant_view());
        view.idempotency_key = j.idempotency_key.clone();
        view
    }
}

impl From<&TenantJob> for JobView {
    fn from(j: &TenantJob) -> Self {
        JobView {
            id: j.id.clone(),
            project: j.project.clone(),
            vm_id: j.vm_id.clone(),
            operation: j.operation,
            action: j.action.clone(),
            state: j.state,
            pending_reason: j.pending_reason.clone(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            progress: j.progress,
            principal: j.principal.clone(),
            idempotency_key: None,
            error: j.error.clone(),
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }
}

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

impl From<JobUpdate> for JobEvent {
    fn from(u: JobUpdate) -> Self {
        match u {
            JobUpdate::Log(line) => JobEvent::Log(line),
            JobUpdate::Status {
                state,
                progress,
                pending_reason,
            } => JobEvent::Status {
                state,
                progress,
                pending_reason,
            },
            JobUpdate::End(job) => JobEvent::End {
                job: Box::new(JobView::from(job.as_ref())),
            },
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
