//! The store: VMs' desired state, jobs and their logs, idempotency records and the audit stream.
//!
//! Every write is a compare-and-swap on a generation number, so a stale worker cannot overwrite
//! newer state. A submission (idempotency record, VM write and job) is one transaction. The
//! in-memory store is the only store today; the trait is shaped so a database-backed store can
//! implement it without changing callers.

mod memory;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use memory::{MemoryStore, StoreSnapshot};

use crate::{
    Event, EventFilter, Job, JobId, JobLogLine, JobState, LogEntry, Operation, ProjectId, Result,
    Vm, VmId,
};

/// Which objects a lookup may see: one project's (tenants) or all (operators, HCP itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Only this project's objects; others are "not found".
    Project(ProjectId),
    /// Every object.
    All,
}

impl Scope {
    /// Returns true when the object of `project` is visible in this scope.
    pub fn allows(&self, project: &ProjectId) -> bool {
        match self {
            Scope::Project(p) => p == project,
            Scope::All => true,
        }
    }
}

/// Asks for one page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items to return (clamped to [`PageRequest::MAX_LIMIT`]).
    pub limit: usize,
    /// The cursor from the previous page's [`Page::next`].
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The largest page.
    pub const MAX_LIMIT: usize = 1000;

    /// Asks for the first page of `limit` items.
    pub fn first(limit: usize) -> Self {
        PageRequest {
            limit,
            cursor: None,
        }
    }

    /// Asks for every item (up to the largest page).
    pub fn all() -> Self {
        PageRequest::first(Self::MAX_LIMIT)
    }

    /// Returns the limit clamped to 1..=[`PageRequest::MAX_LIMIT`].
    pub fn clamped_limit(&self) -> usize {
        self.limit.clamp(1, Self::MAX_LIMIT)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest::first(100)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
}

/// Selects jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs on this VM.
    pub vm_id: Option<VmId>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
}

/// Who may replay a request: an idempotency key is scoped to project, principal and operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdempotencyScope {
    /// The project.
    pub project: ProjectId,
    /// The principal's subject.
    pub principal: String,
    /// The operation.
    pub operation: Operation,
    /// The key the client sent.
    pub key: String,
}

/// A remembered request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// Its scope.
    pub scope: IdempotencyScope,
    /// A digest of the request; a replay must match it.
    pub fingerprint: String,
    /// The VM it created or acted on.
    pub vm_id: VmId,
    /// The job it started.
    pub job_id: JobId,
    /// When it was first accepted.
    pub created_at: DateTime<Utc>,
}

/// How a submission writes the VM.
#[derive(Debug, Clone, PartialEq)]
pub enum VmWrite {
    /// Inserts a new VM; refused when its name is taken in the project.
    Insert(Vm),
    /// Replaces a VM whose generation is `expected`.
    Update {
        /// The new record.
        vm: Vm,
        /// The generation the caller read.
        expected: u64,
    },
}

/// One accepted request: written in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The idempotency record, when the request carried a key.
    pub idempotency: Option<IdempotencyRecord>,
    /// The VM write.
    pub vm: VmWrite,
    /// The new job.
    pub job: Job,
}

/// The outcome of [`Store::submit`].
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// Written: the stored VM and job.
    Accepted {
        /// The VM as stored.
        vm: Box<Vm>,
        /// The job as stored.
        job: Box<Job>,
    },
    /// The same request was accepted before: its VM and job.
    Replayed {
        /// The VM of the first request.
        vm_id: VmId,
        /// The job of the first request.
        job_id: JobId,
    },
}

/// Persists HCP's state.
///
/// # Behavior
/// This is the contract every store keeps; the store conformance suite checks
/// it (`hcp_core::testkit::store`, feature `testkit`); every store runs that whole suite.
///
/// - **Scopes.** Lookups take a [`Scope`]; an object outside it is reported absent, exactly like
///   a missing one. A project scope never sees another project's VMs or jobs, in lookups or
///   lists.
/// - **Generations.** Every VM and job carries a generation. An insert stores generation 1; a
///   write that names an expected generation succeeds only when the stored generation equals it,
///   and stores `expected + 1`. Otherwise it fails with [`crate::ErrorKind::Conflict`] marked
///   temporary (re-read and retry) and changes nothing. The generation a caller puts in the
///   record it passes is ignored.
/// - **Atomicity.** Each method is atomic: it writes all it says or nothing, and concurrent
///   callers (other tasks or, for a shared database, other processes) never see half of it.
///   [`Store::submit`] is one transaction over the idempotency record, the VM write and the job.
/// - **Sequence numbers.** Log lines are numbered per job from 1 and events globally from 1,
///   without gaps, in the order they are committed, so a reader that asks for everything after
///   the last number it saw misses nothing.
/// - **Errors.** `Conflict` means the state changed or a unique name or key is taken;
///   [`crate::ErrorKind::NotFound`] means the record a write names does not exist; any other
///   error is the store's own failure (unreachable database, ...) and says nothing about the
///   data.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Writes a submission in one transaction.
    ///
    /// # Behavior
    /// With an idempotency record whose scope is already remembered: the same fingerprint returns
    /// [`SubmitOutcome::Replayed`] with the first request's VM and job ids and writes nothing; a
    /// different fingerprint is refused. Of concurrent submissions with one scope, exactly one is
    /// accepted and every other one is replayed (or refused). Otherwise the VM write, the job
    /// (stored with generation 1) and the record are written together, or, when any part is
    /// refused, none of them.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] with code `IDEMPOTENCY_KEY_REUSED` when the key was used for
    /// a different request; `Conflict` when the VM name is taken, the VM changed since read, or
    /// the job id exists.
    async fn submit(&self, submission: Submission) -> Result<SubmitOutcome>;

    /// Returns the idempotency record of `scope`, if it is remembered.
    async fn idempotency(&self, scope: &IdempotencyScope) -> Result<Option<IdempotencyRecord>>;

    /// Returns a VM visible in `scope`.
    async fn get_vm(&self, scope: &Scope, id: &VmId) -> Result<Option<Vm>>;

    /// Returns the VM named `name` in `project` (names are unique per project).
    async fn find_vm_by_name(&self, project: &ProjectId, name: &str) -> Result<Option<Vm>>;

    /// Lists VMs visible in `scope`, ordered by id (byte order).
    ///
    /// # Behavior
    /// A page holds at most [`PageRequest::clamped_limit`] items; `next` is set exactly when more
    /// items follow, and passing it as the cursor returns the items after the last one returned.
    async fn list_vms(&self, scope: &Scope, page: &PageRequest) -> Result<Page<Vm>>;

    /// Inserts (`expected: None`) or replaces a VM (compare-and-swap).
    ///
    /// # Behavior
    /// An insert is refused with `Conflict` when the id exists or the name is taken in the
    /// project. A replace may not change the VM's project or name.
    async fn put_vm(&self, vm: Vm, expected: Option<u64>) -> Result<Vm>;

    /// Removes a VM record (compare-and-swap); its jobs stay until they are purged.
    async fn remove_vm(&self, id: &VmId, expected: u64) -> Result<()>;

    /// Returns a job visible in `scope`.
    async fn get_job(&self, scope: &Scope, id: &JobId) -> Result<Option<Job>>;

    /// Lists jobs visible in `scope` and matching `filter`, newest first (by id, descending),
    /// paged like [`Store::list_vms`].
    async fn list_jobs(
        &self,
        scope: &Scope,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>>;

    /// Returns jobs that have not ended, oldest first (recovery after a restart).
    async fn unfinished_jobs(&self) -> Result<Vec<Job>>;

    /// Replaces a job (compare-and-swap on its generation).
    async fn update_job(&self, job: Job, expected: u64) -> Result<Job>;

    /// Appends log lines to a job, assigning their sequence numbers.
    ///
    /// # Behavior
    /// The lines get consecutive numbers after the job's last one, also under concurrent
    /// appends. A store may keep only the newest lines of a long log; numbers are never reused.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the job does not exist.
    async fn append_logs(
        &self,
        id: &JobId,
        lines: Vec<(DateTime<Utc>, LogEntry)>,
    ) -> Result<Vec<JobLogLine>>;

    /// Returns a job's log lines after sequence number `after`, in order.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the job does not exist.
    async fn job_logs(&self, id: &JobId, after: u64) -> Result<Vec<JobLogLine>>;

    /// Appends an event, assigning its sequence number (the one in `event` is ignored).
    async fn append_event(&self, event: Event) -> Result<Arc<Event>>;

    /// Lists events after `filter.after` matching the filter, in sequence order, at most
    /// `filter.limit` (0: [`PageRequest::MAX_LIMIT`]). A store may drop the oldest events.
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Arc<Event>>>;

    /// Drops finished jobs (with their logs) finished before `jobs_before` and idempotency
    /// records created before `keys_before`. Unfinished jobs and VMs are never dropped.
    async fn purge(&self, jobs_before: DateTime<Utc>, keys_before: DateTime<Utc>) -> Result<()>;
}
