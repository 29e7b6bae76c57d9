//! Jobs: the state machine, the job record, log lines, "why pending" reasons and the retry policy.
//!
//! Plain data and functions: no tokio, no I/O.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    Error, ErrorInfo, ErrorKind, JobId, Operation, Principal, ProjectId, Resources, Result, VmId,
};

/// The state of a job.
///
/// ```text
/// PENDING ──► RUNNING ──► SUCCEEDED
///    │  ▲         │ ╲───► FAILED
///    │  └─retry───┘  ╲──► CANCELLED
///    ├──────────────────► CANCELLED
///    └──────────────────► FAILED   (timed out or blocked while queued)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// Accepted and queued; see [`Job::pending_reason`].
    Pending,
    /// A worker is running it.
    Running,
    /// It finished successfully.
    Succeeded,
    /// It failed; see [`Job::error`].
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// Returns true for the final states.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Returns true when `self → next` is a legal transition.
    pub fn can_transition_to(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Pending, Running)
                | (Pending, Cancelled)
                | (Pending, Failed)
                | (Running, Pending)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Cancelled)
        )
    }

    /// Returns `next` when `self → next` is legal.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] naming both states when the transition is illegal.
    pub fn transition(self, next: JobState) -> Result<JobState> {
        if self.can_transition_to(next) {
            Ok(next)
        } else {
            Err(Error::new(
                ErrorKind::Conflict,
                format!("illegal job transition {self} → {next}"),
            ))
        }
    }

    /// Returns the stable upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "PENDING",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a job is still pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PendingReason {
    /// Queued; a worker will pick it up next.
    Queued,
    /// Another job acts on the same VM; this one runs after it.
    WaitingForVm {
        /// The job that holds the VM.
        blocking_job: JobId,
    },
    /// The host already runs its maximum number of jobs.
    WaitingForHostSlot {
        /// The busy host.
        host: String,
        /// The per-host limit.
        limit: usize,
    },
    /// HCP already runs its maximum number of jobs.
    WaitingForWorker {
        /// The global limit.
        limit: usize,
    },
    /// A temporary error; the next attempt starts at `retry_at`.
    RetryBackoff {
        /// The attempt that failed.
        attempt: u32,
        /// When the next attempt may start.
        retry_at: DateTime<Utc>,
        /// The temporary error's tenant-safe message.
        error: String,
        /// The temporary error's operator-only detail (host names, native ids); absent in
        /// tenant views.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

impl PendingReason {
    /// Returns the tenant view: no host name, no error detail.
    pub fn tenant_view(self) -> PendingReason {
        match self {
            // The busy host's name is an operator detail.
            PendingReason::WaitingForHostSlot { limit, .. } => PendingReason::WaitingForHostSlot {
                host: String::new(),
                limit,
            },
            // So is the retried error's detail.
            PendingReason::RetryBackoff {
                attempt,
                retry_at,
                error,
                ..
            } => PendingReason::RetryBackoff {
                attempt,
                retry_at,
                error,
                detail: None,
            },
            other => other,
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PendingReason::Queued => f.write_str("queued"),
            PendingReason::WaitingForVm { blocking_job } => {
                write!(f, "waiting for job {blocking_job} on the same VM")
            }
            PendingReason::WaitingForHostSlot { host, limit } => {
                write!(
                    f,
                    "waiting for a slot on host {host} ({limit} jobs running)"
                )
            }
            PendingReason::WaitingForWorker { limit } => {
                write!(f, "waiting for a free worker ({limit} jobs running)")
            }
            PendingReason::RetryBackoff {
                attempt,
                retry_at,
                error,
                detail,
            } => {
                write!(f, "attempt {attempt} failed ({error}")?;
                if let Some(d) = detail {
                    write!(f, "; {d}")?;
                }
                write!(f, "); retrying at {retry_at}")
            }
        }
    }
}

/// What a job does, beyond its [`Operation`]. Carries no secrets: a create job reads the spec from
/// the VM's desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum JobAction {
    /// Creates the VM described by its desired state, then starts it.
    Create,
    /// Deletes the VM, shutting a running VM down first.
    Delete {
        /// Skip the graceful shutdown: power a running VM off hard at once.
        force: bool,
    },
    /// Powers the VM on.
    Start,
    /// Powers the VM off.
    Stop {
        /// Skip the graceful shutdown.
        force: bool,
        /// How long a graceful shutdown may take before a hard power-off.
        graceful_timeout_secs: u64,
    },
    /// Restarts the VM.
    Reboot {
        /// Reset instead of a guest reboot.
        hard: bool,
    },
    /// Takes a snapshot.
    Snapshot {
        /// The snapshot name.
        name: String,
    },
    /// Moves the VM to another host.
    Migrate {
        /// The target host; empty in the tenant view, whose documents leave it out.
        #[serde(default)]
        target_host: String,
        /// A cold move: the job stops a running VM, moves it and starts it again on the target,
        /// so the VM is unavailable meanwhile. False for a live move.
        #[serde(default)]
        cold: bool,
    },
    /// Returns the VM to one of its snapshots.
    RevertSnapshot {
        /// HCP's id of the snapshot.
        snapshot_id: String,
        /// The snapshot's name.
        name: String,
        /// True when the snapshot holds memory state: the VM comes back running where it was;
        /// false for disks only: the VM ends stopped.
        #[serde(default)]
        memory: bool,
    },
    /// Deletes one of the VM's snapshots.
    DeleteSnapshot {
        /// HCP's id of the snapshot.
        snapshot_id: String,
        /// The snapshot's name.
        name: String,
    },
    /// Changes the VM's size in place, restarting or power-cycling it when the plan says so.
    Resize {
        /// The size before.
        from: Resources,
        /// The size after.
        to: Resources,
        /// The flavor the VM's spec names after the change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flavor: Option<String>,
        /// Restarts a running VM after the change, so that it sees what waits in its definition.
        #[serde(default)]
        reboot: bool,
        /// Stops a running VM before the change and starts it again after.
        #[serde(default)]
        power_cycle: bool,
    },
    /// Writes HCP's mark on a VM created outside HCP, taking it into the job's project.
    Adopt,
    /// Removes HCP's mark from the VM and forgets it; the VM itself stays as it is.
    Release,
}

impl JobAction {
    /// Returns the operation this action performs.
    pub fn operation(&self) -> Operation {
        match self {
            JobAction::Create => Operation::CreateVm,
            JobAction::Delete { .. } => Operation::DeleteVm,
            JobAction::Start => Operation::StartVm,
            JobAction::Stop { .. } => Operation::StopVm,
            JobAction::Reboot { .. } => Operation::RebootVm,
            JobAction::Snapshot { .. } => Operation::SnapshotVm,
            JobAction::Migrate { .. } => Operation::MigrateVm,
            JobAction::RevertSnapshot { .. } => Operation::RevertSnapshot,
            JobAction::DeleteSnapshot { .. } => Operation::DeleteSnapshot,
            JobAction::Resize { .. } => Operation::ResizeVm,
            JobAction::Adopt => Operation::AdoptVm,
            JobAction::Release => Operation::ReleaseVm,
        }
    }
}

/// One job: an infrastructure change on one VM.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job id.
    pub id: JobId,
    /// The project the VM belongs to.
    pub project: ProjectId,
    /// The VM it acts on.
    pub vm_id: VmId,
    /// The operation.
    pub operation: Operation,
    /// Details of the operation.
    pub action: JobAction,
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
    pub principal: Principal,
    /// The idempotency key it was submitted with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The host it runs on (operator view).
    pub host: Arc<str>,
    /// The provider it runs on (operator view).
    pub provider: Arc<str>,
    /// The error, when it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<ErrorInfo>>,
    /// The per-job timeout in milliseconds, counted from its first start (from its acceptance
    /// while it has not started).
    pub timeout_ms: u64,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When its first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The compare-and-swap generation, bumped on every write.
    pub generation: u64,
    /// The worker lease on the job, once a worker claimed it (operator view). Only the store's
    /// lease methods write it; a job write that carries another value keeps the stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<JobLease>,
    /// Who asked to cancel the job while it ran. The worker holding the job, in whichever
    /// process, stops it within a second of seeing this (see [`crate::Engine::cancel_job`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<Principal>,
}

clone_in_place!(Job {
    copy: [
        operation,
        state,
        attempts,
        max_attempts,
        progress,
        timeout_ms,
        created_at,
        started_at,
        finished_at,
        generation
    ],
    clone: [
        id,
        project,
        vm_id,
        action,
        pending_reason,
        principal,
        idempotency_key,
        host,
        provider,
        error,
        lease,
        cancel_requested
    ],
});

/// A worker's claim on a job: who holds it, until when, and its fencing token.
///
/// # Behavior
/// The token of a job only grows: each claim stores the previous token plus one, so a write
/// that carries an older token comes from a worker that lost the job, and the store refuses it.
/// A released or lapsed lease stays on the job (with its token) until the next claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLease {
    /// The worker (an engine instance) holding the job.
    pub holder: Arc<str>,
    /// The fencing token of this claim.
    pub token: u64,
    /// When the lease lapses unless renewed.
    pub until: DateTime<Utc>,
}

impl JobLease {
    /// Returns true when the lease still holds at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.until > now
    }
}

impl Job {
    /// Moves the job to `next`, stamping times and bumping the generation.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when the transition is illegal; the job is unchanged.
    pub fn transition(&mut self, next: JobState, now: DateTime<Utc>) -> Result<()> {
        self.state = self.state.transition(next)?;
        match next {
            JobState::Running => {
                self.pending_reason = None;
                self.attempts += 1;
                self.started_at.get_or_insert(now);
            }
            JobState::Succeeded => {
                self.progress = 100;
                self.finished_at = Some(now);
            }
            JobState::Failed | JobState::Cancelled => {
                self.pending_reason = None;
                self.finished_at = Some(now);
            }
            JobState::Pending => {}
        }
        Ok(())
    }

    /// Returns when the job's time is up: its first start (or, for a job that never started,
    /// its acceptance) plus its timeout, computed without overflow (a timeout too large for the
    /// calendar never ends). Counting a waiting job from its acceptance lets a job that waited
    /// past its timeout end with `TIMEOUT` when its turn comes, instead of never timing out.
    pub fn deadline(&self) -> DateTime<Utc> {
        crate::clock::add(
            self.started_at.unwrap_or(self.created_at),
            Duration::from_millis(self.timeout_ms),
        )
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Returns the job's duration so far, or its total once it ended.
    pub fn elapsed(&self, now: DateTime<Utc>) -> Option<Duration> {
        let start = self.started_at?;
        let end = self.finished_at.unwrap_or(now);
        crate::clock::since(end, start)
    }
}

/// A job as a tenant sees it: no host or provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantJob {
    /// The job id.
    pub id: JobId,
    /// The project.
    pub project: ProjectId,
    /// The VM it acts on.
    pub vm_id: VmId,
    /// The operation.
    pub operation: Operation,
    /// Details of the operation (`force`, `hard`, a snapshot's name; a migration's target host
    /// is left blank). `None` only when read from a source that does not carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// The idempotency key it was submitted with: set only where the caller reads its own jobs
    /// from an engine it holds (an embedded engine); the service never sends it, and
    /// [`Job::tenant_view`] leaves it empty.
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

impl Job {
    /// Returns the tenant view: no host, no provider.
    pub fn tenant_view(&self) -> TenantJob {
        let pending_reason = self.pending_reason.clone().map(PendingReason::tenant_view);
        let action = match &self.action {
            // The target host is an operator detail.
            JobAction::Migrate { cold, .. } => JobAction::Migrate {
                target_host: String::new(),
                cold: *cold,
            },
            other => other.clone(),
        };
        TenantJob {
            id: self.id.clone(),
            project: self.project.clone(),
            vm_id: self.vm_id.clone(),
            operation: self.operation,
            action: Some(action),
            state: self.state,
            pending_reason,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            progress: self.progress,
            principal: self.principal.subject.to_string(),
            idempotency_key: None,
            error: self.error.as_deref().map(ErrorInfo::tenant),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// The severity of a job log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Normal progress.
    Info,
    /// Something worth a look (a retry, a forced power-off).
    Warn,
    /// A failure.
    Error,
}

/// Who may read a job log line; set where the line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogAudience {
    /// Tenants and operators (the message is tenant-safe; any detail is still operator-only).
    #[default]
    Everyone,
    /// Operators only: the whole line may name hosts, native ids, paths or provider URLs.
    Operators,
}

impl LogAudience {
    fn is_everyone(&self) -> bool {
        *self == LogAudience::Everyone
    }
}

/// A log line as its writer makes it, before the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its severity.
    pub level: LogLevel,
    /// Who may read it.
    pub audience: LogAudience,
    /// The text; tenant-safe unless `audience` is [`LogAudience::Operators`].
    pub message: String,
    /// Operator-only text (host names, native ids, paths).
    pub detail: Option<String>,
}

impl LogEntry {
    /// Creates a line every reader of the job sees.
    pub fn new(level: LogLevel, message: impl Into<String>) -> Self {
        LogEntry {
            level,
            audience: LogAudience::Everyone,
            message: message.into(),
            detail: None,
        }
    }

    /// Creates an info line every reader of the job sees.
    pub fn info(message: impl Into<String>) -> Self {
        LogEntry::new(LogLevel::Info, message)
    }

    /// Creates a warning line every reader of the job sees.
    pub fn warn(message: impl Into<String>) -> Self {
        LogEntry::new(LogLevel::Warn, message)
    }

    /// Adds operator-only text to the line (an empty text adds nothing).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        if !detail.is_empty() {
            self.detail = Some(detail);
        }
        self
    }

    /// Hides the whole line from tenants.
    pub fn operators_only(mut self) -> Self {
        self.audience = LogAudience::Operators;
        self
    }
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLogLine {
    /// Its position in the job's log, from 1.
    pub seq: u64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Its severity.
    pub level: LogLevel,
    /// Who may read it.
    #[serde(default, skip_serializing_if = "LogAudience::is_everyone")]
    pub audience: LogAudience,
    /// The text; tenant-safe unless `audience` is [`LogAudience::Operators`].
    pub message: String,
    /// Operator-only text (host names, native ids, paths); absent in tenant views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl JobLogLine {
    /// Numbers `entry` as line `seq`, written at `at`.
    pub fn from_entry(seq: u64, at: DateTime<Utc>, entry: LogEntry) -> Self {
        JobLogLine {
            seq,
            at,
            level: entry.level,
            audience: entry.audience,
            message: entry.message,
            detail: entry.detail,
        }
    }

    /// Returns the tenant view of the line: `None` for an operator-only line, otherwise the line
    /// without its detail.
    pub fn tenant_view(&self) -> Option<JobLogLine> {
        (self.audience == LogAudience::Everyone).then(|| JobLogLine {
            detail: None,
            ..self.clone()
        })
    }

    /// Returns the message followed by the detail in parentheses: the text operators read.
    pub fn operator_message(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} ({d})", self.message),
            None => self.message.clone(),
        }
    }
}

impl JobUpdate {
    /// Returns the tenant view of the update: `None` for an operator-only log line; otherwise
    /// the update without operator details (log detail, error detail, host and provider names;
    /// an ending job's `host` and `provider` are empty).
    pub fn tenant_view(self) -> Option<JobUpdate> {
        match self {
            JobUpdate::Log(l) => l.tenant_view().map(JobUpdate::Log),
            JobUpdate::Status {
                state,
                progress,
                pending_reason,
            } => Some(JobUpdate::Status {
                state,
                progress,
                pending_reason: pending_reason.map(PendingReason::tenant_view),
            }),
            JobUpdate::End(job) => {
                // The same blanks as `Job::tenant_view`, in the full record the update carries.
                let mut job = *job;
                let t = job.tenant_view();
                job.host = Arc::from("");
                job.provider = Arc::from("");
                job.error = t.error.map(Box::new);
                job.pending_reason = t.pending_reason;
                if let Some(action) = t.action {
                    job.action = action;
                }
                Some(JobUpdate::End(Box::new(job)))
            }
        }
    }
}

/// One update on a watched job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobUpdate {
    /// A log line (past lines first, then live ones).
    Log(JobLogLine),
    /// The job's state or progress changed.
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
    End(Box<Job>),
}

/// How failed attempts are retried: exponential backoff with jitter, temporary errors only.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Most attempts per job, the first included.
    pub max_attempts: u32,
    /// The delay after the first failed attempt.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// The longest delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// The factor each delay grows by.
    pub factor: f32,
    /// Randomises each delay (up to twice as long) so retries spread out.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: true,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop: the error is permanent, or the attempts ran out.
    GiveUp,
}

impl RetryPolicy {
    /// Decides what follows failed attempt number `attempt` (from 1) with `error`.
    ///
    /// # Behavior
    /// Only temporary errors are retried, and never more than `max_attempts` in all.
    pub fn decide(&self, attempt: u32, error: &Error) -> RetryDecision {
        if !error.is_temporary() || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        RetryDecision::RetryAfter(self.delay(attempt))
    }

    /// Returns the delay after failed attempt number `attempt` (from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut b = backon::ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .with_max_times(usize::MAX);
        if self.jitter {
            b = b.with_jitter();
        }
        b.build()
            .nth(attempt.saturating_sub(1) as usize)
            .unwrap_or(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transition_is_legal_or_rejected_exactly_as_documented() {
        use JobState::*;
        let legal = [
            (Pending, Running),
            (Pending, Cancelled),
            (Pending, Failed),
            (Running, Pending),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
        ];
        for from in JobState::ALL {
            for to in JobState::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} → {to}");
                assert_eq!(from.transition(to).is_ok(), expected, "{from} → {to}");
                if !expected {
                    let e = from.transition(to).unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::Conflict);
                }
            }
        }
        for s in [Succeeded, Failed, Cancelled] {
            assert!(s.is_terminal());
            assert!(JobState::ALL.iter().all(|t| !s.can_transition_to(*t)));
        }
    }

    fn job() -> Job {
        Job {
            id: JobId::generate(),
            project: "demo".into(),
            vm_id: VmId::generate(),
            operation: Operation::StartVm,
            action: JobAction::Start,
            state: JobState::Pending,
            pending_reason: Some(PendingReason::Queued),
            attempts: 0,
            max_attempts: 3,
            progress: 0,
            principal: Principal::new("alice"),
            idempotency_key: None,
            host: "secret-host".into(),
            provider: "p".into(),
            error: None,
            timeout_ms: 1000,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            generation: 1,
            lease: None,
            cancel_requested: None,
        }
    }

    #[test]
    fn the_tenant_view_keeps_the_action_without_hosts() {
        let mut j = job();
        j.action = JobAction::Stop {
            force: true,
            graceful_timeout_secs: 0,
        };
        assert_eq!(j.tenant_view().action, Some(j.action.clone()));
        j.action = JobAction::Migrate {
            target_host: "secret-host".into(),
            cold: true,
        };
        let t = j.tenant_view();
        assert_eq!(
            t.action,
            Some(JobAction::Migrate {
                target_host: String::new(),
                cold: true,
            })
        );
        let mut v = serde_json::to_value(&t).unwrap();
        assert!(!v.to_string().contains("secret-host"));
        // A tenant job without the action (an older service) still reads.
        v.as_object_mut().unwrap().remove("action");
        let back: TenantJob = serde_json::from_value(v).unwrap();
        assert_eq!(back.action, None);
    }

    #[test]
    fn tenant_views_drop_error_details_and_operator_lines() {
        let mut j = job();
        let e = Error::new(ErrorKind::ProviderUnavailable, "the host does not answer")
            .with_detail("host `secret-host` is down")
            .with_context("host", "secret-host");
        j.error = Some(Box::new(ErrorInfo::from(&e)));
        j.pending_reason = Some(PendingReason::RetryBackoff {
            attempt: 1,
            retry_at: Utc::now(),
            error: e.message().into(),
            detail: e.detail().map(str::to_string),
        });
        let operator = serde_json::to_string(&j).unwrap();
        assert!(operator.contains("secret-host"), "{operator}");
        assert!(
            j.pending_reason
                .as_ref()
                .unwrap()
                .to_string()
                .contains("secret-host")
        );
        let tenant = serde_json::to_string(&j.tenant_view()).unwrap();
        assert!(!tenant.contains("secret-host"), "{tenant}");
        assert!(tenant.contains("the host does not answer"), "{tenant}");

        let line = |entry: LogEntry| JobLogLine::from_entry(1, Utc::now(), entry);
        let shared = line(LogEntry::warn("retrying").with_detail("host secret-host"));
        assert_eq!(shared.operator_message(), "retrying (host secret-host)");
        let t = shared.tenant_view().unwrap();
        assert_eq!((t.message.as_str(), t.detail), ("retrying", None));
        let private = line(LogEntry::info("copied D:/secret-host/x.vhdx").operators_only());
        assert_eq!(private.tenant_view(), None);
        // Stored lines keep their marks; plain lines serialize as before.
        let back: JobLogLine =
            serde_json::from_str(&serde_json::to_string(&private).unwrap()).unwrap();
        assert_eq!(back.audience, LogAudience::Operators);
        let plain = serde_json::to_value(line(LogEntry::info("created"))).unwrap();
        assert!(plain.get("audience").is_none() && plain.get("detail").is_none());

        let updates = [
            JobUpdate::Log(shared),
            JobUpdate::Log(private),
            JobUpdate::Status {
                state: JobState::Pending,
                progress: 0,
                pending_reason: j.pending_reason.clone(),
            },
            JobUpdate::End(Box::new(j)),
        ];
        let seen: Vec<JobUpdate> = updates
            .into_iter()
            .filter_map(JobUpdate::tenant_view)
            .collect();
        assert_eq!(seen.len(), 3);
        let text = serde_json::to_string(&seen).unwrap();
        assert!(!text.contains("secret-host"), "{text}");
        assert!(!text.contains("\"p\""), "the provider's name: {text}");
    }

    #[test]
    fn job_transition_stamps_and_refuses_illegal_moves() {
        let mut j = job();
        let now = Utc::now();
        j.transition(JobState::Running, now).unwrap();
        assert_eq!(j.attempts, 1);
        assert_eq!(j.started_at, Some(now));
        assert!(j.pending_reason.is_none());
        j.transition(JobState::Succeeded, now).unwrap();
        assert_eq!(j.progress, 100);
        assert!(j.finished_at.is_some());
        let before = j.clone();
        assert!(j.transition(JobState::Running, now).is_err());
        assert_eq!(j, before);
    }

    #[test]
    fn only_temporary_errors_are_retried_and_attempts_are_bounded() {
        let p = RetryPolicy {
            jitter: false,
            ..Default::default()
        };
        let temp = Error::new(ErrorKind::ProviderUnavailable, "down").temporary();
        let perm = Error::new(ErrorKind::ProviderError, "bad");
        assert_eq!(p.decide(1, &perm), RetryDecision::GiveUp);
        assert_eq!(
            p.decide(1, &temp),
            RetryDecision::RetryAfter(Duration::from_millis(500))
        );
        assert_eq!(
            p.decide(2, &temp),
            RetryDecision::RetryAfter(Duration::from_millis(1000))
        );
        assert_eq!(
            p.decide(3, &temp),
            RetryDecision::RetryAfter(Duration::from_millis(2000))
        );
        assert_eq!(p.decide(4, &temp), RetryDecision::GiveUp);
    }

    #[test]
    fn backoff_is_capped_and_jitter_stays_within_twice_the_delay() {
        let p = RetryPolicy {
            max_attempts: 100,
            jitter: false,
            ..Default::default()
        };
        assert_eq!(p.delay(30), Duration::from_secs(30));
        let j = RetryPolicy { jitter: true, ..p };
        for attempt in 1..6 {
            let base = p.delay(attempt);
            let d = j.delay(attempt);
            assert!(
                d >= base && d <= base * 2,
                "attempt {attempt}: {d:?} vs {base:?}"
            );
        }
    }
}
