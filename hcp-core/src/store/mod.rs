//! The store: VMs' desired state, jobs and their logs, idempotency records and the audit stream.
//!
//! Every write is a compare-and-swap on a generation number, so a stale worker cannot overwrite
//! newer state. A submission (idempotency record, VM write and job) is one transaction. Jobs are
//! claimed under leases with fencing tokens, so several engines (replicas) can share one store.
//! The in-memory store lives here; the PostgreSQL store is the crate `hcp-store-postgres`.

mod memory;
mod query;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use memory::{MemoryStore, StoreSnapshot};
pub use query::{
    SortValue, VmFilter, VmPosition, VmSort, VmSortKey, parse_power_filter, parse_state_filter,
    parse_tag_filter,
};

use crate::{
    DesiredState, Error, ErrorKind, Event, EventFilter, Job, JobId, JobLease, JobLogLine, JobState,
    LogEntry, Operation, ProjectId, Quota, Resources, Result, ServerGroup, ServerGroupId, Vm, VmId,
};

/// Which objects a lookup may see: one project's (tenants) or all (operators, HCP itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Only this project's objects; others are "not found".
    Project(ProjectId),
    /// Only these projects' objects (a tenant's view across its projects); others are "not
    /// found". An empty list sees nothing.
    Projects(Vec<ProjectId>),
    /// Every object.
    All,
}

impl Scope {
    /// Returns true when the object of `project` is visible in this scope.
    pub fn allows(&self, project: &ProjectId) -> bool {
        match self {
            Scope::Project(p) => p == project,
            Scope::Projects(ps) => ps.contains(project),
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
    /// The project's quota, checked against its usage when the VM write adds to it; `None`
    /// checks nothing.
    pub quota: Option<Quota>,
    /// A singleton duty's leadership (a drift repair): a store with leases writes nothing and
    /// refuses with [`crate::ErrorKind::Conflict`] and code [`crate::CODE_LEADERSHIP_LOST`]
    /// unless that lease still holds with that token. `None` for every request.
    pub fence: Option<crate::LeaderFence>,
    /// The room HCP's VMs have on the host the written VM is bound to, checked against what the
    /// stored VMs bound there hold ([`Usage::on_host`]) when the write adds to it; `None`
    /// checks nothing.
    pub room: Option<HostRoom>,
}

/// The room a host (or cluster target) offers HCP's VMs: its total less what the VMs HCP does not
/// manage use there, as last observed.
///
/// [`Store::submit`] checks it against the sum of [`Usage::on_host`] over the stored VMs bound to
/// the host, inside the submit transaction. So replicas that place creates at the same moment, each
/// from its own view of the host, cannot together fill it past its total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRoom {
    /// vCPUs HCP's VMs may hold there in all.
    pub vcpus: u128,
    /// Memory HCP's VMs may hold there in all, in MiB.
    pub memory_mib: u128,
}

impl HostRoom {
    /// Checks what the host's VMs hold after a write that `added` to it.
    ///
    /// # Errors
    /// [`ErrorKind::QuotaExceeded`] with code [`crate::CODE_CAPACITY_EXHAUSTED`], temporary
    /// (another job may free the room), when the sum exceeds the room. The message names the
    /// size asked for, never the host: tenants do not see hosts.
    pub fn check(&self, held: &Usage, added: &Usage) -> Result<()> {
        if added.is_zero() || (held.vcpus <= self.vcpus && held.memory_mib <= self.memory_mib) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::QuotaExceeded,
            format!(
                "the chosen host no longer has {} vCPUs and {} MiB of memory free; retry",
                added.vcpus, added.memory_mib
            ),
        )
        .with_context("capacity", "exhausted")
        .with_code(crate::CODE_CAPACITY_EXHAUSTED)
        .temporary())
    }
}

/// What a project's VMs hold: the sum over its stored VMs that are not being deleted.
///
/// Sums are kept in `u128`, so VMs rebuilt from hosts that report absurd sizes (up to `u64::MAX`
/// each) add up without wrapping; a store saturates rather than wraps beyond that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// VMs.
    pub vms: u128,
    /// vCPUs over those VMs.
    pub vcpus: u128,
    /// Memory over those VMs, in MiB.
    pub memory_mib: u128,
}

impl Usage {
    /// Returns what one VM of `resources` holds.
    pub fn of_resources(resources: Resources) -> Usage {
        Usage {
            vms: 1,
            vcpus: u128::from(resources.vcpus),
            memory_mib: u128::from(resources.memory_mib),
        }
    }

    /// Returns what `vm` holds: nothing once it is being deleted.
    pub fn of(vm: &Vm) -> Usage {
        if vm.desired == DesiredState::Deleted {
            Usage::default()
        } else {
            Usage::of_resources(vm.resources)
        }
    }

    /// Returns what `vm` holds on the host it is bound to: its size while its create is in flight,
    /// while it is expected to exist, and while it is still there (a delete in flight); nothing
    /// once it is gone or its create failed.
    pub fn on_host(vm: &Vm) -> Usage {
        if matches!(vm.desired, DesiredState::Pending | DesiredState::Active) || vm.present {
            Usage::of_resources(vm.resources)
        } else {
            Usage::default()
        }
    }

    /// Adds `other`, saturating.
    #[must_use]
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            vms: self.vms.saturating_add(other.vms),
            vcpus: self.vcpus.saturating_add(other.vcpus),
            memory_mib: self.memory_mib.saturating_add(other.memory_mib),
        }
    }

    /// Subtracts `other`, stopping at zero.
    #[must_use]
    pub fn minus(self, other: Usage) -> Usage {
        Usage {
            vms: self.vms.saturating_sub(other.vms),
            vcpus: self.vcpus.saturating_sub(other.vcpus),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
        }
    }

    /// Returns true when nothing is held.
    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    /// Checks this usage (after a write that `added` to it) against `quota`. Only what the write
    /// added is checked, so a write that adds nothing passes even over a lowered quota.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `vcpus` or `memory_mib` when what was added alone
    /// exceeds a limit (it can never fit); [`ErrorKind::QuotaExceeded`] naming the limit when the
    /// sum does.
    pub fn check(&self, project: &ProjectId, quota: &Quota, added: &Usage) -> Result<()> {
        for (what, field, used, own, max) in [
            ("max_vms", None, self.vms, added.vms, quota.max_vms),
            (
                "max_vcpus",
                Some("vcpus"),
                self.vcpus,
                added.vcpus,
                quota.max_vcpus,
            ),
            (
                "max_memory_mib",
                Some("memory_mib"),
                self.memory_mib,
                added.memory_mib,
                quota.max_memory_mib,
            ),
        ] {
            let Some(max) = max else { continue };
            if own == 0 {
                continue;
            }
            if let Some(field) = field
                && own > u128::from(max)
            {
                return Err(Error::invalid(
                    field,
                    format!("is {own}; project `{project}` has a quota of {what} = {max}, so at most {max} fit"),
                )
                .with_context("quota", what));
            }
            if used > u128::from(max) {
                let mut e = Error::new(
                    ErrorKind::QuotaExceeded,
                    format!("project `{project}` would use {used} of its quota {what} = {max}"),
                )
                .with_context("quota", what);
                if let Some(field) = field {
                    e = e.with_field(field);
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The outcome of [`Store::submit`].
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// Written: the VM and job as submitted, now stored (read them back with
    /// [`Store::get_vm`] and [`Store::get_job`]).
    Accepted {
        /// The VM written.
        vm_id: VmId,
        /// The job written.
        job_id: JobId,
    },
    /// The same request was accepted before: its VM and job.
    Replayed {
        /// The VM of the first request.
        vm_id: VmId,
        /// The job of the first request.
        job_id: JobId,
    },
}

/// Log lines for several jobs, each job's lines in order: the input of
/// [`Store::append_logs_batch`].
pub type LogBatch = Vec<(JobId, Vec<(DateTime<Utc>, LogEntry)>)>;

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
/// - **Usage.** The store keeps each project's [`Usage`] (its VMs not being deleted) up to date
///   with every VM write, in the same transaction, so reading it costs the same at any project
///   size. [`Store::submit`] checks the submission's quota against it, so concurrent submissions
///   never overshoot a quota.
/// - **Sequence numbers.** Log lines are numbered per job from 1 and events globally from 1,
///   without gaps, in the order they are committed, so a reader that asks for everything after
///   the last number it saw misses nothing.
/// - **Leases.** A worker claims a job ([`Store::claim_job`]) before it runs it and holds it
///   under a lease that lapses unless renewed ([`Store::renew_lease`]). Each claim stores a
///   fencing token greater than any before on the job; the worker's job writes
///   ([`Store::update_job_fenced`]) carry it and are refused once another worker claimed the
///   job. At most one job of a VM is claimed at a time. The lease is written by these methods
///   only: [`Store::update_job`] keeps the stored lease whatever the record carries.
/// - **Errors.** `Conflict` means the state changed or a unique name or key is taken;
///   [`crate::ErrorKind::NotFound`] means the record a write names does not exist; any other
///   error is the store's own failure (unreachable database, ...) and says nothing about the
///   data.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Names the kind of store for people (`in-memory`, `PostgreSQL`).
    fn kind(&self) -> &'static str;

    /// Returns true when the store keeps its data past the process: a restart finds the jobs,
    /// logs, events and idempotency records, and queues the unfinished jobs again.
    fn durable(&self) -> bool {
        false
    }

    /// Returns this store as the in-memory store when it is one (a wrapper around one returns
    /// `None`). The engine then appends job log lines at once, as a job writes them, instead of
    /// queueing them for its log writer (which batches lines into one commit for a store that
    /// pays a commit per append), and audit events without a future.
    fn as_memory(&self) -> Option<&MemoryStore> {
        None
    }

    /// Writes a submission in one transaction.
    ///
    /// # Behavior
    /// With an idempotency record whose scope is already remembered: the same fingerprint returns
    /// [`SubmitOutcome::Replayed`] with the first request's VM and job ids and writes nothing; a
    /// different fingerprint is refused. Of concurrent submissions with one scope, exactly one is
    /// accepted and every other one is replayed (or refused). Otherwise the VM write, the job
    /// (stored with generation 1), the project's usage and the record are written together, or,
    /// when any part is refused, none of them. When the VM write adds to the project's usage and
    /// the submission carries a quota, the usage after the write is checked against it
    /// ([`Usage::check`]) while no other submission of the project can change it. Likewise, when
    /// the VM write adds to what the VMs bound to a host hold ([`Usage::on_host`]) and the
    /// submission carries that host's [`HostRoom`], the host's sum after the write is checked
    /// against the room while no other write can change it.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] with code `IDEMPOTENCY_KEY_REUSED` when the key was used for
    /// a different request; `Conflict` when the VM name is taken, the VM changed since read, or
    /// the job id exists; the errors of [`Usage::check`] when the quota refuses, and of
    /// [`HostRoom::check`] when the host has no room.
    async fn submit(&self, submission: Submission) -> Result<SubmitOutcome>;

    /// Returns what `project`'s VMs hold (see [`Usage`]); zero for a project without VMs.
    async fn usage(&self, project: &ProjectId) -> Result<Usage>;

    /// Returns what the stored VMs bound to `host` of `provider` hold there: the sum of
    /// [`Usage::on_host`]. Every VM write (submit, put, remove) keeps it, atomically with the VM.
    async fn host_usage(&self, provider: &str, host: &str) -> Result<Usage>;

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

    /// Lists VMs visible in `scope` that match `filter`, in the order `sort` gives.
    ///
    /// # Behavior
    /// Every part of `filter` must match (a VM needs every tag asked for); an empty filter with
    /// the default sort lists exactly what [`Store::list_vms`] lists, with the same cursors.
    /// Ties of the sort key are broken by VM id, in the same direction, so the order is total.
    /// The cursor (see [`VmSort::cursor`]) encodes the sort key and the id of the last VM
    /// returned, and the next page starts strictly after that position: paging is gapless and
    /// without duplicates for the VMs that exist throughout, while VMs are added or removed
    /// (one added before the cursor's position is not shown; one removed is simply absent).
    /// Creation times are compared at microsecond precision. A page holds at most
    /// [`PageRequest::clamped_limit`] items; `next` is set exactly when more items follow.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming `cursor` when the cursor was not made for this
    /// sort order.
    async fn list_vms_matching(
        &self,
        scope: &Scope,
        filter: &VmFilter,
        sort: VmSort,
        page: &PageRequest,
    ) -> Result<Page<Vm>>;

    /// Inserts (`expected: None`) or replaces a VM (compare-and-swap).
    ///
    /// # Behavior
    /// An insert is refused with `Conflict` when the id exists or the name is taken in the
    /// project. A replace may not change the VM's project or name.
    async fn put_vm(&self, vm: Vm, expected: Option<u64>) -> Result<Vm>;

    /// Writes a VM like [`Store::put_vm`] for a singleton duty (the reconciler recording what it
    /// observed, rebuilding a VM from its host's mark, marking a missing VM).
    ///
    /// # Behavior
    /// A store with leases writes nothing and refuses with [`crate::ErrorKind::Conflict`] and
    /// code [`crate::CODE_LEADERSHIP_LOST`] unless `fence`'s lease still holds with its token,
    /// checked in the write's transaction, so a leader deposed while it observed never
    /// overwrites what the new leader records. The default, for stores of one process (no
    /// leases, so nothing to check against), is [`Store::put_vm`]; so is every store's answer
    /// without a `fence` (a process alone has none).
    async fn put_vm_fenced(
        &self,
        vm: Vm,
        expected: Option<u64>,
        fence: Option<&crate::LeaderFence>,
    ) -> Result<Vm> {
        let _ = fence;
        self.put_vm(vm, expected).await
    }

    /// Removes a VM record (compare-and-swap), releasing its usage; its jobs stay until they are
    /// purged.
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

    /// Returns the jobs of VM `vm_id` that have not ended, oldest first, from the index the
    /// claim rules keep (it costs the same however many jobs the store holds).
    async fn unfinished_jobs_of(&self, vm_id: &VmId) -> Result<Vec<Job>>;

    /// Replaces a job (compare-and-swap on its generation). The stored lease is kept: the one in
    /// `job` is ignored, and the returned job carries the stored one. A write that ends the job
    /// (a terminal state) lapses that lease at once: its `until` becomes the store's clock if
    /// later, as [`Store::release_lease`] would set it.
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

    /// Appends log lines to several jobs at once: [`Store::append_logs`] for each entry.
    ///
    /// # Behavior
    /// Returns one result per entry, in the order given; a job that does not exist fails its
    /// own entry with [`crate::ErrorKind::NotFound`] and no other. Each job's lines are numbered
    /// as [`Store::append_logs`] numbers them, also when a job appears in several entries. A
    /// durable store writes the whole batch in one transaction, so the engine's log writer pays
    /// one commit for every line that queued up while the previous batch was written (group
    /// commit). The default calls [`Store::append_logs`] once per entry.
    async fn append_logs_batch(&self, batch: LogBatch) -> Vec<Result<Vec<JobLogLine>>> {
        let mut out = Vec::with_capacity(batch.len());
        for (id, lines) in batch {
            out.push(self.append_logs(&id, lines).await);
        }
        out
    }

    /// Returns a job's log lines after sequence number `after`, in order.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the job does not exist.
    async fn job_logs(&self, id: &JobId, after: u64) -> Result<Vec<JobLogLine>>;

    /// Appends an event, assigning its sequence number (the one in `event` is ignored).
    async fn append_event(&self, event: Event) -> Result<Arc<Event>>;

    /// Appends several events in the order given, assigning them consecutive sequence numbers.
    ///
    /// # Behavior
    /// Returns one result per event, in order. A durable store appends the whole batch in one
    /// transaction (all or nothing, so every entry then carries the same error), which lets the
    /// engine pay one commit for every event that queued up while the previous batch was
    /// written. The default calls [`Store::append_event`] once per event.
    async fn append_events(&self, events: Vec<Event>) -> Vec<Result<Arc<Event>>> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            out.push(self.append_event(event).await);
        }
        out
    }

    /// Lists events after `filter.after` matching the filter, in sequence order, at most
    /// `filter.limit` (0: [`PageRequest::MAX_LIMIT`]). A store may drop the oldest events.
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Arc<Event>>>;

    /// Drops finished jobs (with their logs) finished before `jobs_before` and idempotency
    /// records created before `keys_before`. Unfinished jobs and VMs are never dropped.
    ///
    /// With a `fence` (the leader's retention duty), a store with leases drops nothing and
    /// refuses with code [`crate::CODE_LEADERSHIP_LOST`] unless that lease still holds with that
    /// token, checked in the same transaction.
    async fn purge(
        &self,
        jobs_before: DateTime<Utc>,
        keys_before: DateTime<Utc>,
        fence: Option<&crate::LeaderFence>,
    ) -> Result<()>;

    /// Stores a new server group (generation 1, no members).
    ///
    /// # Behavior
    /// A group's members are the stored VMs whose `spec.server_group` names it; every read of a
    /// group fills [`ServerGroup::members`] from them (ordered by id), and a VM leaves its group
    /// when its record is removed. [`Store::submit`] of a VM insert that names a group checks,
    /// in its transaction and serialised with every other write to the group, that the group
    /// exists in the VM's project and, for a hard policy, that the VM's binding keeps it
    /// ([`ServerGroup::admits`] over the members' `(provider, host)`), so concurrent creates
    /// into one group never break a hard policy, even from several processes.
    ///
    /// # Errors
    /// `Conflict` naming the field `name` when the project has a group of that name, or when
    /// the id exists.
    async fn create_server_group(&self, group: ServerGroup) -> Result<ServerGroup>;

    /// Returns a server group visible in `scope`, with its members.
    async fn get_server_group(
        &self,
        scope: &Scope,
        id: &ServerGroupId,
    ) -> Result<Option<ServerGroup>>;

    /// Lists server groups visible in `scope`, ordered by id, paged like [`Store::list_vms`].
    async fn list_server_groups(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<ServerGroup>>;

    /// Removes a server group visible in `scope` that has no members, and returns it.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when it does not exist or is outside `scope`;
    /// `Conflict` with code [`crate::CODE_SERVER_GROUP_NOT_EMPTY`] when a VM is still in it
    /// (checked in one transaction with the removal, so no create can slip in between).
    async fn delete_server_group(&self, scope: &Scope, id: &ServerGroupId) -> Result<ServerGroup>;

    // --- The audit stream: retention by time window and the publishing outbox (issue 12). ---

    /// Drops the events that happened (their [`Event::at`]) before `before`, with their outbox
    /// entries, and returns how many events it dropped.
    ///
    /// # Behavior
    /// This is the only way an event leaves the store besides a store's own size bound: events
    /// are never updated, and no other method deletes one. Events at or after `before` stay,
    /// whatever their sequence numbers; later events keep their numbers, so a reader's cursor
    /// stays valid. An unpublished event dropped here is dropped from the outbox too (retention
    /// wins over delivery). A `fence` is checked as [`Store::purge`] checks it.
    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        fence: Option<&crate::LeaderFence>,
    ) -> Result<u64>;

    /// Returns up to `limit` (clamped to 1..=[`PageRequest::MAX_LIMIT`]) events of the outbox,
    /// oldest first: the events appended and not yet marked published.
    ///
    /// # Behavior
    /// [`Store::append_event`] puts every event into the outbox in the same transaction that
    /// stores it, so an event is either stored and waiting for publication or not stored at
    /// all. An event stays in the outbox, and is returned again by every call, until
    /// [`Store::mark_published`] names it (or retention drops it): a publisher that crashes
    /// between publishing and marking publishes it again, so consumers deduplicate by the
    /// event's id.
    async fn unpublished_events(&self, limit: usize) -> Result<Vec<Arc<Event>>>;

    /// Removes the events numbered `seqs` from the outbox; the events themselves stay.
    ///
    /// # Behavior
    /// Numbers not in the outbox (already marked, purged, or never appended) are ignored, so
    /// marking is idempotent and two publishers marking the same events do not fail.
    async fn mark_published(&self, seqs: &[u64]) -> Result<()>;

    // ---- Job leases -------------------------------------------------------------------------
    // A worker runs a job only while it holds the job's lease; every write it makes carries the
    // lease's fencing token, so a worker whose lease lapsed and was claimed by another cannot
    // overwrite what the new holder does. See the trait's "Leases" paragraph.

    /// Claims job `id` for `holder` until `until`, with a new fencing token.
    ///
    /// # Behavior
    /// Claims the job when it has not ended, its lease is absent, lapsed (its `until` is not
    /// after the store's clock) or already `holder`'s, and it is the oldest unfinished job of its
    /// VM (by id). So at most one job of a VM is claimed at a time, and a VM's jobs run in
    /// order. The claim stores `JobLease { holder, token, until }` where `token` is the job's
    /// previous token plus one (1 for its first claim), bumps the job's generation and returns
    /// the job. Of concurrent claims of one job, or of jobs of one VM, one at most wins.
    /// Otherwise returns `None` and changes nothing (the job ended, another holder's lease is
    /// active, or an older job of its VM has not ended). The job's state is left as it is: a
    /// RUNNING job claimed after its lease lapsed is an abandoned job for the caller to recover.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the job does not exist.
    async fn claim_job(
        &self,
        id: &JobId,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<Job>>;

    /// Extends the lease `token` of `holder` on job `id` to `until` and returns it.
    ///
    /// # Behavior
    /// Renews while the stored lease still carries `holder` and `token` and the job has not
    /// ended, also after it lapsed as long as nobody claimed the job since. Changes nothing
    /// else (not the generation).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] with code [`crate::CODE_LEASE_LOST`] when the job ended or
    /// its lease is another's or has another token; [`crate::ErrorKind::NotFound`] when the job
    /// does not exist.
    async fn renew_lease(
        &self,
        id: &JobId,
        holder: &str,
        token: u64,
        until: DateTime<Utc>,
    ) -> Result<JobLease>;

    /// Gives up the lease `token` of `holder` on job `id`, so it can be claimed at once.
    ///
    /// # Behavior
    /// Sets the lease's `until` to the store's clock when it is later (a lease that already
    /// lapsed, such as an ended job's, stays as it is); holder and token stay, so the next claim
    /// gets a greater token. Works on an ended job too. Changes nothing else.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] with code [`crate::CODE_LEASE_LOST`] when the lease is
    /// another's or has another token; [`crate::ErrorKind::NotFound`] when the job does not
    /// exist.
    async fn release_lease(&self, id: &JobId, holder: &str, token: u64) -> Result<()>;

    /// Replaces a job (compare-and-swap on its generation) for the worker holding lease `token`.
    ///
    /// # Behavior
    /// Like [`Store::update_job`], and only while the job's stored lease carries `token` (also
    /// after it lapsed, as long as nobody claimed the job since). The stored lease is kept.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] with code [`crate::CODE_LEASE_LOST`], permanent, when the
    /// stored token differs or the job has no lease, and nothing is written; otherwise the errors
    /// of [`Store::update_job`].
    async fn update_job_fenced(&self, job: Job, expected: u64, token: u64) -> Result<Job>;

    /// Returns jobs a worker may claim at `now`, oldest first, at most `limit`.
    ///
    /// # Behavior
    /// Lists the jobs that have not ended, whose lease is absent or lapsed at `now`, and that
    /// are the oldest unfinished job of their VM: what [`Store::claim_job`] would grant (unless
    /// another caller claims them first). Jobs whose worker died (RUNNING, lease lapsed) are
    /// among them, and so are PENDING jobs nobody scheduled.
    async fn claimable_jobs(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Job>>;
}

/// Returns the refusal of deleting `group` while it has `members` VMs.
pub fn group_not_empty(group: &ServerGroup, members: usize) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "server group `{}` still has {members} member VM(s); delete them first",
            group.name
        ),
    )
    .with_code(crate::CODE_SERVER_GROUP_NOT_EMPTY)
}

/// Returns the refusal of a VM that names a server group its project does not have.
pub fn group_not_found(id: &ServerGroupId) -> Error {
    Error::not_found("server group", id).with_field("server_group")
}

/// Returns the refusal of a second group named `name` in `project`.
pub fn group_name_taken(project: &ProjectId, name: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("a server group named `{name}` already exists in project `{project}`"),
    )
    .with_field("name")
}

/// The error a lease method or a fenced write returns when the caller's lease is gone.
pub fn lease_lost(id: &JobId, token: u64) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("job `{id}` is no longer held with lease token {token}"),
    )
    .with_code(crate::CODE_LEASE_LOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(vcpus: u32, memory_mib: u64) -> Usage {
        Usage::of_resources(Resources {
            vcpus,
            memory_mib,
            disk_gib: 1,
        })
    }

    #[test]
    fn quota_sums_are_checked_and_name_the_field() {
        let project = ProjectId::new("demo");
        let quota = Quota {
            max_vms: Some(3),
            max_vcpus: Some(8),
            max_memory_mib: Some(u64::MAX),
        };
        let u = size(2, 1024).plus(size(4, 1024));
        u.check(&project, &quota, &size(2, 1024)).unwrap();
        let e = u
            .plus(size(4, 1024))
            .check(&project, &quota, &size(2, 1024))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(e.field(), Some("vcpus"));
        // A write that adds nothing passes even over the quota.
        u.plus(size(40, 1024))
            .check(&project, &quota, &Usage::default())
            .unwrap();

        // VMs rebuilt from hosts may report any size: a sum past u64 exceeds even u64::MAX.
        let u = size(1, 16).plus(size(1, u64::MAX));
        let e = u.check(&project, &quota, &size(1, 16)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(e.field(), Some("memory_mib"));
        assert!(e.message().contains("18446744073709551631"), "{e}");

        // A request larger than the whole quota can never fit: invalid, naming the field.
        let e = size(9, 16)
            .check(&project, &quota, &size(9, 16))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert_eq!(e.field(), Some("vcpus"));
    }
}
