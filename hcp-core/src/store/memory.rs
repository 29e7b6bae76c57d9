//! The in-memory store: the default, nothing on disk.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::fastmap::HashMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    HostRoom, IdempotencyRecord, IdempotencyScope, JobFilter, Page, PageRequest, Scope, Store,
    Submission, SubmitOutcome, Usage, VmFilter, VmSort, VmSortKey, VmWrite, group_name_taken,
    group_not_empty, group_not_found, lease_lost,
};
use crate::{
    CODE_IDEMPOTENCY_KEY_REUSED, Error, ErrorKind, Event, EventFilter, Job, JobId, JobLease,
    JobLogLine, JobState, LogEntry, ProjectId, Result, ServerGroup, ServerGroupId, Vm, VmId,
};

/// Keeps everything in memory; the default store.
///
/// It keeps at most `max_events` events and at most `max_events` unpublished ones in its
/// outbox; beyond that the oldest go first. An engine without a publisher (no NATS) never
/// drains the outbox, so it fills up and then drops one event per new one: the warning about it
/// is logged the first time, and again only after a publisher made room.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    // Records are boxed: the maps' nodes then hold pointers, and a node half full (as ids in
    // ascending order leave most of them) wastes a few pointers instead of a few records.
    vms: HashMap<VmId, Box<Vm>>,
    /// Every VM id in order (lists of every project page through it): lookups hash, and
    /// only listing walks the ids in order.
    vm_ids: VmIds,
    vm_names: HashMap<(ProjectId, String), VmId>,
    /// Each project's VM ids in order; an id may stay behind its VM's removal (see [`VmIds`]).
    project_vms: HashMap<ProjectId, VmIds>,
    usage: HashMap<ProjectId, Usage>,
    /// What the VMs bound to each host hold ([`Usage::on_host`]), by provider and host.
    host_usage: HashMap<String, HashMap<String, Usage>>,
    jobs: HashMap<JobId, Box<JobEntry>>,
    /// Every job id in order (see `vm_ids`).
    job_ids: OrderedIds<JobId>,
    project_jobs: HashMap<ProjectId, OrderedIds<JobId>>,
    idempotency: HashMap<IdempotencyScope, IdempotencyRecord>,
    events: VecDeque<Arc<Event>>,
    /// Each project's events by number, ascending: a project's audit list (a tenant's event
    /// stream, which opens with one) reads its own events, not every event kept.
    project_events: ProjectEvents,
    /// Events not yet published, by number; bounded by `max_events` like `events`.
    /// Unpublished events in order of their sequence numbers (appended in that order).
    outbox: VecDeque<Arc<Event>>,
    next_event_seq: u64,
    /// The outbox was full and dropped an event since it last had room: the warning is logged
    /// once per such spell, not once per event (an engine without a publisher fills it for good).
    outbox_overflowing: bool,
    max_events: usize,
    max_log_lines: usize,
    groups: BTreeMap<ServerGroupId, ServerGroup>,
    group_names: HashMap<(ProjectId, String), ServerGroupId>,
    group_members: HashMap<ServerGroupId, BTreeSet<VmId>>,
    /// The jobs that have not ended, per VM, oldest (by id) first: the claim rules' index. A
    /// sorted list: a VM nearly always has one such job, rarely a few.
    unfinished: HashMap<VmId, smallvec::SmallVec<[JobId; 1]>>,
}

/// Ids in ascending order, for listing and paging: a sorted queue. Ids made here grow with
/// time, so adding one is a push at the back (a B-tree compared it with some thirty others on
/// the way to its last leaf); removing the oldest is a pop at the front. Ids removed from the
/// middle go in batches ([`OrderedIds::retain`]).
#[derive(Debug)]
struct OrderedIds<T>(VecDeque<T>);

impl<T> Default for OrderedIds<T> {
    fn default() -> Self {
        OrderedIds(VecDeque::new())
    }
}

impl<T: Ord> OrderedIds<T> {
    /// Adds `id` in its place (nothing when present).
    fn insert(&mut self, id: T) {
        match self.0.back() {
            Some(last) if *last >= id => {
                if let Err(i) = self.0.binary_search(&id) {
                    self.0.insert(i, id);
                }
            }
            _ => self.0.push_back(id),
        }
    }

    /// Keeps the ids `keep` accepts, in one pass.
    fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.0.retain(keep);
    }

    /// The ids within `lower` and `upper`, in order.
    fn range(&self, lower: Bound<&T>, upper: Bound<&T>) -> impl DoubleEndedIterator<Item = &T> {
        let start = match lower {
            Bound::Unbounded => 0,
            Bound::Included(l) => self.0.partition_point(|id| id < l),
            Bound::Excluded(l) => self.0.partition_point(|id| id <= l),
        };
        let end = match upper {
            Bound::Unbounded => self.0.len(),
            Bound::Included(u) => self.0.partition_point(|id| id <= u),
            Bound::Excluded(u) => self.0.partition_point(|id| id < u),
        };
        self.0.range(start..end.max(start))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Every id, in order.
    fn iter(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.0.iter()
    }

    /// The ids before `upper` (all of them without), in order.
    fn before(&self, upper: Option<&T>) -> impl DoubleEndedIterator<Item = &T> {
        let end = upper.map_or(self.0.len(), |u| self.0.partition_point(|id| id < u));
        self.0.range(..end)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// VM ids in ascending order, removed lazily: a removed VM's id stays in the list until the
/// ids removed since the last sweep outnumber half the list, and then one pass drops every id
/// whose VM is gone. A create appends and a delete counts, so neither compares ids along a tree
/// (the B-trees these replaced cost two thirds of a create's store write). Readers look each id
/// up in `vms` anyway, and skip ids without a VM in the list's scope: an id whose VM was
/// removed, or (in a project's list) came back in another project.
#[derive(Debug, Default)]
struct VmIds {
    ids: OrderedIds<VmId>,
    /// Ids removed since the last sweep (an id that came back is still counted: it only makes
    /// the next sweep come sooner).
    removed: usize,
}

impl VmIds {
    /// Adds `id` in its place (nothing when present, removed or not).
    fn insert(&mut self, id: VmId) {
        self.ids.insert(id);
    }

    /// Notes that one id's VM is gone, and sweeps when removed ids outnumber half the list,
    /// keeping the ids `live` accepts: a constant cost per removal, amortised.
    fn remove(&mut self, live: impl FnMut(&VmId) -> bool) {
        self.removed += 1;
        if self.removed.saturating_mul(2) > self.ids.len() {
            self.ids.retain(live);
            self.removed = 0;
        }
    }
}

#[derive(Debug, Clone)]
struct JobEntry {
    job: Job,
    logs: VecDeque<JobLogLine>,
    next_seq: u64,
}

/// Finished jobs with their logs, and idempotency records: what an embedded engine that lives
/// for one command (the CLI) carries over to the next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreSnapshot {
    /// Jobs with their log lines.
    pub jobs: Vec<(Job, Vec<JobLogLine>)>,
    /// Idempotency records.
    pub idempotency: Vec<IdempotencyRecord>,
    /// Server groups (without members: those come from the VMs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ServerGroup>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(1000, 100_000)
    }
}

impl MemoryStore {
    /// Appends `lines` to job `id`'s log (the oldest lines go past `max_log_lines`) and returns
    /// the number the first of them got; [`MemoryStore::logs_from`] reads them back. Copies
    /// nothing: the engine reads lines back only for a job somebody watches.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] for an unknown job.
    pub(crate) fn append_logs_now(
        &self,
        id: &JobId,
        lines: impl IntoIterator<Item = (DateTime<Utc>, LogEntry)>,
    ) -> Result<u64> {
        self.append_each(id, lines, |_| {})
    }

    /// Appends `lines` to job `id`'s log, handing each line as written to `each`; returns the
    /// number the first of them got.
    fn append_each(
        &self,
        id: &JobId,
        lines: impl IntoIterator<Item = (DateTime<Utc>, LogEntry)>,
        mut each: impl FnMut(&JobLogLine),
    ) -> Result<u64> {
        let mut s = self.lock();
        let max = s.max_log_lines;
        let entry = s
            .jobs
            .get_mut(id)
            .ok_or_else(|| Error::not_found("job", id))?;
        let first = entry.next_seq;
        for (at, log) in lines {
            if entry.logs.len() >= max {
                entry.logs.pop_front();
            }
            let line = JobLogLine::from_entry(entry.next_seq, at, log);
            each(&line);
            entry.logs.push_back(line);
            entry.next_seq += 1;
        }
        Ok(first)
    }

    /// Appends `event` (numbering it) and returns it as stored; [`Store::append_event`] without
    /// a future, for the engine on an in-memory store ([`Store::as_memory`]).
    ///
    /// The caller shares `event` ([`Arc::new`]) before the call, holding no other handle on it:
    /// the event moves once, into its allocation, instead of into this call and then there. (A
    /// handle held elsewhere would make this call copy it.)
    pub(crate) fn append_event_now(&self, mut event: Arc<Event>) -> Arc<Event> {
        let mut s = self.lock();
        Arc::make_mut(&mut event).seq = s.next_event_seq;
        s.next_event_seq += 1;
        if s.events.len() == s.max_events
            && let Some(gone) = s.events.pop_front()
        {
            s.forget_project_event(&gone);
        }
        if let Some(p) = &event.project {
            s.project_events.push(p, event.seq);
        }
        s.events.push_back(event.clone());
        if s.outbox.len() >= s.max_events
            && let Some(dropped) = s.outbox.pop_front().map(|e| e.seq)
            && !std::mem::replace(&mut s.outbox_overflowing, true)
        {
            tracing::warn!(
                seq = dropped,
                "the in-memory event outbox is full (no publisher drains it); dropped the oldest \
                 unpublished event, and drops one per new event, without another warning, until \
                 a publisher makes room"
            );
        }
        s.outbox.push_back(event.clone());
        event
    }

    /// Claims job `id` as [`Store::claim_job`] does and, when it is pending and its time is not
    /// up at `now` ([`Job::deadline`]), starts it in the same write (PENDING → RUNNING at
    /// `now`): one lock and one copy of the job where a claim and then a start take two. Returns
    /// the job as written and whether this call started it.
    ///
    /// # Errors
    /// [`Store::claim_job`]'s.
    pub(crate) fn claim_and_start_now(
        &self,
        id: &JobId,
        holder: &Arc<str>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
        leases_at: Option<DateTime<Utc>>,
    ) -> Result<Option<(Box<Job>, bool)>> {
        let leases_at = leases_at.unwrap_or_else(crate::clock::system_now);
        let mut s = self.lock();
        let Some(entry) = s.claim(id, holder, until, leases_at)? else {
            return Ok(None);
        };
        let start = entry.job.state == JobState::Pending && now < entry.job.deadline();
        if start {
            entry.job.transition(JobState::Running, now)?;
        }
        Ok(Some((Box::new(entry.job.clone()), start)))
    }

    /// [`Store::update_job_fenced`] of the caller's copy of a job, without a future and without
    /// moving the job in and out: on success `job` carries what was written (its new generation
    /// and the stored lease).
    ///
    /// # Errors
    /// [`Store::update_job_fenced`]'s.
    pub(crate) fn update_job_fenced_now(
        &self,
        job: &mut Job,
        expected: u64,
        token: u64,
    ) -> Result<()> {
        let mut s = self.lock();
        s.lease_mut(&job.id, None, token)?;
        s.replace_job_in_place(job, expected)
    }

    /// [`Store::put_vm`] replacing VM `vm.id` at generation `expected` with the caller's copy,
    /// without a future and without moving the VM in and out: on success `vm` carries its new
    /// generation.
    ///
    /// # Errors
    /// [`Store::put_vm`]'s.
    pub(crate) fn replace_vm_now(&self, vm: &mut Vm, expected: u64) -> Result<()> {
        self.lock().replace_vm_in_place(vm, expected)
    }

    /// [`Store::get_vm`] without a future.
    pub(crate) fn get_vm_now(&self, scope: &Scope, id: &VmId) -> Option<Vm> {
        self.lock()
            .vm(id)
            .filter(|v| scope.allows(&v.project))
            .cloned()
    }

    /// The id of the VM named `name` in `project` ([`Store::find_vm_by_name`] without a future
    /// and without a copy of the VM).
    pub(crate) fn vm_named_now(&self, project: &ProjectId, name: &str) -> Option<VmId> {
        self.lock().vm_named(project, name).cloned()
    }

    /// [`Store::submit`] without a future.
    ///
    /// # Errors
    /// [`Store::submit`]'s.
    pub(crate) fn submit_now(&self, submission: Submission) -> Result<SubmitOutcome> {
        let mut s = self.lock();
        if let Some(rec) = &submission.idempotency
            && let Some(prev) = s.idempotency.get(&rec.scope)
        {
            if prev.fingerprint == rec.fingerprint {
                return Ok(SubmitOutcome::Replayed {
                    vm_id: prev.vm_id.clone(),
                    job_id: prev.job_id.clone(),
                });
            }
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "idempotency key `{}` was already used for a different {} request",
                    rec.scope.key, rec.scope.operation
                ),
            )
            .with_code(CODE_IDEMPOTENCY_KEY_REUSED)
            .with_field("idempotency_key"));
        }
        if s.jobs.contains_key(&submission.job.id) {
            return Err(Error::new(ErrorKind::Conflict, "job id already exists"));
        }
        // Validate everything before the first mutation, so a refused submission writes nothing:
        // the quota first, then each write checks before it changes anything.
        let (project, before, after) = match &submission.vm {
            VmWrite::Insert(vm) => (&vm.project, Usage::default(), Usage::of(vm)),
            VmWrite::Update { vm, expected } => (
                &vm.project,
                Usage::of(s.check_vm(&vm.id, *expected)?),
                Usage::of(vm),
            ),
        };
        s.check_quota(project, submission.quota.as_ref(), before, after)?;
        match &submission.vm {
            VmWrite::Insert(vm) => s.check_room(submission.room.as_ref(), None, vm)?,
            VmWrite::Update { vm, .. } => {
                s.check_room(submission.room.as_ref(), s.vm(&vm.id), vm)?;
            }
        }
        if let VmWrite::Insert(vm) = &submission.vm {
            s.check_group(vm)?;
        }
        let vm_id = match submission.vm {
            VmWrite::Insert(vm) => s.insert_vm(Box::new(vm))?.id.clone(),
            VmWrite::Update { vm, expected } => s.replace_vm(vm, expected)?.id,
        };
        let job_id = submission.job.id.clone();
        // Boxed here, where the submission is taken apart: the job moves once, into the box.
        // Room for a job's usual lines (its attempt, what it did, its end): the first line
        // would take as much through the deque's path for growing.
        s.insert_job(Box::new(JobEntry {
            job: submission.job,
            logs: VecDeque::with_capacity(4),
            next_seq: 1,
        }))?;
        if let Some(rec) = submission.idempotency {
            s.idempotency.insert(rec.scope.clone(), rec);
        }
        Ok(SubmitOutcome::Accepted { vm_id, job_id })
    }

    /// [`Store::get_job`] in any scope, without a future.
    pub(crate) fn get_job_now(&self, id: &JobId) -> Option<Job> {
        self.lock().jobs.get(id).map(|e| e.job.clone())
    }

    /// [`Store::remove_vm`] without a future.
    ///
    /// # Errors
    /// [`Store::remove_vm`]'s.
    pub(crate) fn remove_vm_now(&self, id: &VmId, expected: u64) -> Result<()> {
        let mut s = self.lock();
        s.check_vm(id, expected)?;
        let Some(vm) = s.vms.remove(id) else {
            return Err(Error::internal("a checked VM vanished"));
        };
        let State {
            vms,
            vm_ids,
            project_vms,
            ..
        } = &mut *s;
        vm_ids.remove(|id| vms.contains_key(id));
        if let Some(ids) = project_vms.get_mut(&vm.project) {
            ids.remove(|id| vms.get(id).is_some_and(|v| v.project == vm.project));
        }
        if let Some(g) = &vm.spec.server_group
            && let Some(set) = s.group_members.get_mut(g)
        {
            set.remove(id);
        }
        s.apply_usage(&vm.project, Usage::of(&vm), Usage::default());
        s.apply_host_usage(&vm, Usage::on_host(&vm), Usage::default());
        s.vm_names
            .remove(&(vm.project.clone(), vm.spec.name.clone()));
        Ok(())
    }

    /// [`Store::release_lease`] without a future.
    ///
    /// # Errors
    /// [`Store::release_lease`]'s.
    pub(crate) fn release_lease_now(&self, id: &JobId, holder: &str, token: u64) -> Result<()> {
        let mut s = self.lock();
        let entry = s.lease_mut(id, Some(holder), token)?;
        // Every write that ends a job ends its lease too (`replace_job_in_place`): no clock read
        // for an ended one.
        if entry.job.state.is_terminal() {
            return Ok(());
        }
        if let Some(lease) = entry.job.lease.as_mut() {
            lease.until = lease.until.min(crate::clock::system_now());
        }
        Ok(())
    }

    /// Returns job `id`'s log lines numbered `first` and later (those still kept).
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] for an unknown job.
    pub(crate) fn logs_from(&self, id: &JobId, first: u64) -> Result<Vec<JobLogLine>> {
        let s = self.lock();
        let entry = s.jobs.get(id).ok_or_else(|| Error::not_found("job", id))?;
        let start = entry.logs.partition_point(|l| l.seq < first);
        Ok(entry.logs.range(start..).cloned().collect())
    }

    /// Creates an empty store keeping at most `max_log_lines` per job and `max_events` events.
    pub fn new(max_log_lines: usize, max_events: usize) -> Self {
        MemoryStore {
            state: Mutex::new(State {
                max_events: max_events.max(1),
                max_log_lines: max_log_lines.max(1),
                next_event_seq: 1,
                outbox_overflowing: false,
                ..Default::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written record: every write below
        // validates first and mutates after, so the data stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exports finished jobs (with logs) and idempotency records.
    pub fn export(&self) -> StoreSnapshot {
        let s = self.lock();
        StoreSnapshot {
            jobs: s
                .job_ids
                .iter()
                .filter_map(|id| s.jobs.get(id))
                .filter(|e| e.job.state.is_terminal())
                .map(|e| (e.job.clone(), e.logs.iter().cloned().collect()))
                .collect(),
            idempotency: s.idempotency.values().cloned().collect(),
            groups: s
                .groups
                .values()
                .map(|g| ServerGroup {
                    members: Vec::new(),
                    ..g.clone()
                })
                .collect(),
        }
    }

    /// Imports a snapshot; jobs and records already present are kept as they are.
    pub fn import(&self, snapshot: StoreSnapshot) {
        let mut s = self.lock();
        for (job, logs) in snapshot.jobs {
            if s.jobs.contains_key(&job.id) {
                continue;
            }
            s.project_jobs
                .entry(job.project.clone())
                .or_default()
                .insert(job.id.clone());
            let next_seq = logs.last().map_or(1, |l| l.seq + 1);
            // An imported job that has not ended joins the claim rules' index, as a submitted one.
            s.track(&job);
            s.job_ids.insert(job.id.clone());
            s.jobs.insert(
                job.id.clone(),
                Box::new(JobEntry {
                    job,
                    logs: logs.into(),
                    next_seq,
                }),
            );
        }
        for rec in snapshot.idempotency {
            s.idempotency.entry(rec.scope.clone()).or_insert(rec);
        }
        for g in snapshot.groups {
            let name_key = (g.project.clone(), g.name.clone());
            if s.groups.contains_key(&g.id) || s.group_names.contains_key(&name_key) {
                continue;
            }
            s.group_names.insert(name_key, g.id.clone());
            s.groups.insert(
                g.id.clone(),
                ServerGroup {
                    members: Vec::new(),
                    ..g
                },
            );
        }
    }
}

fn cas_conflict(what: &str, id: &dyn std::fmt::Display, expected: u64, actual: u64) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!(
            "{what} `{id}` changed concurrently (expected generation {expected}, found {actual})"
        ),
    )
    .temporary()
}

impl State {
    /// Returns the event numbered `seq`, when it is still kept.
    fn event(&self, seq: u64) -> Option<&Arc<Event>> {
        // Numbered without gaps and evicted oldest first, so usually at its offset from the
        // first; a search after a retention pass dropped events out of order.
        let first = self.events.front()?.seq;
        let at = usize::try_from(seq.checked_sub(first)?).ok()?;
        match self.events.get(at) {
            Some(e) if e.seq == seq => Some(e),
            _ => {
                let i = self.events.partition_point(|e| e.seq < seq);
                self.events.get(i).filter(|e| e.seq == seq)
            }
        }
    }

    /// Drops `gone`, the oldest event kept, from its project's numbers.
    fn forget_project_event(&mut self, gone: &Event) {
        if let Some(p) = &gone.project {
            self.project_events.forget_oldest(p, gone.seq);
        }
    }

    /// Inserts a new VM and returns it as stored.
    fn insert_vm(&mut self, mut vm: Box<Vm>) -> Result<&Vm> {
        if self.vms.contains_key(&vm.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("vm `{}` already exists", vm.id),
            ));
        }
        let name_key = (vm.project.clone(), vm.spec.name.clone());
        if let Some(other) = self.vm_names.get(&name_key) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "a VM named `{}` already exists in project `{}` ({other})",
                    vm.spec.name, vm.project
                ),
            )
            .with_field("name"));
        }
        vm.generation = 1;
        if let Some(g) = &vm.spec.server_group {
            self.group_members
                .entry(g.clone())
                .or_default()
                .insert(vm.id.clone());
        }
        self.apply_usage(&vm.project, Usage::default(), Usage::of(&vm));
        self.apply_host_usage(&vm, Usage::default(), Usage::on_host(&vm));
        self.vm_names.insert(name_key, vm.id.clone());
        self.project_vms
            .entry(vm.project.clone())
            .or_default()
            .insert(vm.id.clone());
        self.vm_ids.insert(vm.id.clone());
        Ok(&**self.vms.entry(vm.id.clone()).or_insert(vm))
    }

    /// Returns the stored VM `id`.
    fn vm(&self, id: &VmId) -> Option<&Vm> {
        self.vms.get(id).map(|v| &**v)
    }

    /// Notes that events left the outbox (published or purged): once it has room again, a later
    /// overflow warns again.
    fn outbox_shrank(&mut self) {
        if self.outbox.len() < self.max_events {
            self.outbox_overflowing = false;
        }
    }

    /// Returns the id of the VM named `name` in `project`.
    fn vm_named(&self, project: &ProjectId, name: &str) -> Option<&VmId> {
        self.vm_names.get(&(project.clone(), name.to_string()))
    }

    fn check_vm(&self, id: &VmId, expected: u64) -> Result<&Vm> {
        let cur = self.vm(id).ok_or_else(|| Error::not_found("vm", id))?;
        if cur.generation != expected {
            return Err(cas_conflict("vm", id, expected, cur.generation));
        }
        Ok(cur)
    }

    fn replace_vm(&mut self, mut vm: Vm, expected: u64) -> Result<Vm> {
        self.replace_vm_in_place(&mut vm, expected)?;
        Ok(vm)
    }

    /// [`State::replace_vm`] of the caller's copy, which it brings up to date (its generation)
    /// instead of moving it in and out.
    fn replace_vm_in_place(&mut self, vm: &mut Vm, expected: u64) -> Result<()> {
        let cur = self.check_vm(&vm.id, expected)?;
        // The same shared spec (the usual write) has the same name without comparing it.
        if cur.project != vm.project
            || !(Arc::ptr_eq(&cur.spec, &vm.spec) || cur.spec.name == vm.spec.name)
        {
            return Err(Error::internal("a VM's project and name never change"));
        }
        let before = Usage::of(cur);
        let host_before = (cur.binding.provider != vm.binding.provider
            || cur.binding.host != vm.binding.host)
            .then(|| (cur.clone(), Usage::on_host(cur)));
        let held_before = Usage::on_host(cur);
        let old_group = cur.spec.server_group.clone();
        if old_group != vm.spec.server_group {
            if let Some(g) = old_group
                && let Some(set) = self.group_members.get_mut(&g)
            {
                set.remove(&vm.id);
            }
            if let Some(g) = &vm.spec.server_group {
                self.group_members
                    .entry(g.clone())
                    .or_default()
                    .insert(vm.id.clone());
            }
        }
        vm.generation = expected + 1;
        self.apply_usage(&vm.project, before, Usage::of(vm));
        match host_before {
            // A move: the old host gives back what the new one takes.
            Some((old, held)) => {
                self.apply_host_usage(&old, held, Usage::default());
                self.apply_host_usage(vm, Usage::default(), Usage::on_host(vm));
            }
            None => self.apply_host_usage(vm, held_before, Usage::on_host(vm)),
        }
        match self.vms.get_mut(&vm.id) {
            Some(slot) => (*vm).clone_into(slot),
            None => return Err(Error::internal("a checked VM vanished")),
        }
        Ok(())
    }

    /// Returns a group with its members filled in.
    fn group_view(&self, g: &ServerGroup) -> ServerGroup {
        let mut g = g.clone();
        g.members = self
            .group_members
            .get(&g.id)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        g
    }

    /// Checks that inserting `vm` keeps its server group's policy (see [`Store::submit`]).
    fn check_group(&self, vm: &Vm) -> Result<()> {
        let Some(id) = &vm.spec.server_group else {
            return Ok(());
        };
        let group = self
            .groups
            .get(id)
            .filter(|g| g.project == vm.project)
            .ok_or_else(|| group_not_found(id))?;
        let members: Vec<(String, String)> = self
            .group_members
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|m| self.vms.get(m))
            .map(|m| (m.binding.provider.to_string(), m.binding.group_slot()))
            .collect();
        group.admits(&members, (&vm.binding.provider, &vm.binding.group_slot()))
    }

    fn apply_usage(&mut self, project: &ProjectId, before: Usage, after: Usage) {
        if before == after {
            return;
        }
        let u = self.usage.entry(project.clone()).or_default();
        *u = u.plus(after.minus(before)).minus(before.minus(after));
    }

    /// Moves what `vm`'s host holds from `before` to `after` (see [`Usage::on_host`]).
    fn apply_host_usage(&mut self, vm: &Vm, before: Usage, after: Usage) {
        if before == after {
            return;
        }
        let (provider, host) = (&vm.binding.provider, &vm.binding.host);
        let hosts = match self.host_usage.get_mut(&**provider) {
            Some(h) => h,
            None => self.host_usage.entry(provider.to_string()).or_default(),
        };
        let u = match hosts.get_mut(&**host) {
            Some(u) => u,
            None => hosts.entry(host.to_string()).or_default(),
        };
        *u = u.plus(after.minus(before)).minus(before.minus(after));
    }

    fn held_on(&self, provider: &str, host: &str) -> Usage {
        self.host_usage
            .get(provider)
            .and_then(|h| h.get(host))
            .copied()
            .unwrap_or_default()
    }

    /// Checks `room` on `vm`'s host for a VM write that changes what that host holds from what
    /// the stored record `old` held there (nothing when it is absent or bound elsewhere) to
    /// what `vm` holds.
    fn check_room(&self, room: Option<&HostRoom>, old: Option<&Vm>, vm: &Vm) -> Result<()> {
        let Some(room) = room else {
            return Ok(());
        };
        let (provider, host) = (&vm.binding.provider, &vm.binding.host);
        let before = old
            .filter(|o| o.binding.provider == *provider && o.binding.host == *host)
            .map(Usage::on_host)
            .unwrap_or_default();
        let after = Usage::on_host(vm);
        let added = after.minus(before);
        let held = self
            .held_on(provider, host)
            .plus(added)
            .minus(before.minus(after));
        room.check(&held, &added)
    }

    /// Checks `quota` for a write of `project` that changes a VM's usage from `before` to `after`.
    fn check_quota(
        &self,
        project: &ProjectId,
        quota: Option<&crate::Quota>,
        before: Usage,
        after: Usage,
    ) -> Result<()> {
        let Some(quota) = quota else { return Ok(()) };
        let added = after.minus(before);
        if added.is_zero() {
            return Ok(());
        }
        let cur = self.usage.get(project).copied().unwrap_or_default();
        cur.plus(added)
            .minus(before.minus(after))
            .check(project, quota, &added)
    }

    fn insert_job(&mut self, mut entry: Box<JobEntry>) -> Result<()> {
        let job = &mut entry.job;
        if self.jobs.contains_key(&job.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("job `{}` already exists", job.id),
            ));
        }
        job.generation = 1;
        job.lease = None;
        self.track(job);
        self.project_jobs
            .entry(job.project.clone())
            .or_default()
            .insert(job.id.clone());
        self.job_ids.insert(job.id.clone());
        self.jobs.insert(job.id.clone(), entry);
        Ok(())
    }

    /// Keeps the index of unfinished jobs in step with a job's (new) state.
    fn track(&mut self, job: &Job) {
        if job.state.is_terminal() {
            if let Some(ids) = self.unfinished.get_mut(&job.vm_id) {
                if let Ok(i) = ids.binary_search(&job.id) {
                    ids.remove(i);
                }
                if ids.is_empty() {
                    self.unfinished.remove(&job.vm_id);
                }
            }
        } else if let Some(ids) = self.unfinished.get_mut(&job.vm_id) {
            // A job written again while it runs is tracked already: no key to make.
            if let Err(i) = ids.binary_search(&job.id) {
                ids.insert(i, job.id.clone());
            }
        } else {
            // Held inline: a VM nearly always has one unfinished job, and no list is allocated.
            self.unfinished
                .insert(job.vm_id.clone(), smallvec::smallvec![job.id.clone()]);
        }
    }

    /// Returns true when `job` is the oldest unfinished job of its VM.
    fn first_of_vm(&self, job: &Job) -> bool {
        self.unfinished
            .get(&job.vm_id)
            .and_then(|set| set.first())
            .is_none_or(|first| first == &job.id)
    }

    /// Claims job `id` for `holder` until `until` ([`Store::claim_job`]'s rules, leases judged
    /// at `now`): returns its entry, claimed, or `None` when it cannot be claimed.
    fn claim(
        &mut self,
        id: &JobId,
        holder: &Arc<str>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<&mut JobEntry>> {
        let job = &self
            .jobs
            .get(id)
            .ok_or_else(|| Error::not_found("job", id))?
            .job;
        let free = job
            .lease
            .as_ref()
            .is_none_or(|l| !l.is_active(now) || l.holder == *holder);
        if job.state.is_terminal() || !free || !self.first_of_vm(job) {
            return Ok(None);
        }
        let token = job
            .lease
            .as_ref()
            .map_or(0, |l| l.token)
            .checked_add(1)
            .ok_or_else(|| Error::internal("a job's fencing token overflowed"))?;
        let Some(entry) = self.jobs.get_mut(id) else {
            return Ok(None);
        };
        entry.job.generation = entry
            .job
            .generation
            .checked_add(1)
            .ok_or_else(|| Error::internal("a job's generation overflowed"))?;
        entry.job.lease = Some(JobLease {
            holder: holder.clone(),
            token,
            until,
        });
        Ok(Some(entry))
    }

    /// Replaces a job (compare-and-swap), keeping the stored lease.
    fn replace_job(&mut self, mut job: Job, expected: u64) -> Result<Job> {
        self.replace_job_in_place(&mut job, expected)?;
        Ok(job)
    }

    /// [`State::replace_job`] of the caller's copy, which it brings up to date (its generation,
    /// the stored lease) instead of moving it in and out.
    fn replace_job_in_place(&mut self, job: &mut Job, expected: u64) -> Result<()> {
        let entry = self
            .jobs
            .get_mut(&job.id)
            .ok_or_else(|| Error::not_found("job", &job.id))?;
        if entry.job.generation != expected {
            return Err(cas_conflict("job", &job.id, expected, entry.job.generation));
        }
        job.generation = expected
            .checked_add(1)
            .ok_or_else(|| Error::internal("a job's generation overflowed"))?;
        // The worker's copy nearly always carries the stored lease already: no copy of it then.
        if job.lease != entry.job.lease {
            job.lease = entry.job.lease.clone();
        }
        // A job's ending write ends its lease too.
        if job.state.is_terminal()
            && let Some(lease) = job.lease.as_mut()
        {
            lease.until = lease.until.min(crate::clock::system_now());
        }
        // In place: the stored job's text allocations are reused.
        entry.job.clone_from(job);
        self.track(job);
        Ok(())
    }

    /// Returns the lease of job `id` when it carries `holder` (any holder: `None`) and `token`.
    fn lease_mut(&mut self, id: &JobId, holder: Option<&str>, token: u64) -> Result<&mut JobEntry> {
        let entry = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| Error::not_found("job", id))?;
        match &entry.job.lease {
            Some(l) if l.token == token && holder.is_none_or(|h| h == &*l.holder) => Ok(entry),
            _ => Err(lease_lost(id, token)),
        }
    }
}

fn page_of<K: Ord + Clone + ToString, T>(
    keys: impl Iterator<Item = K>,
    limit: usize,
    get: impl Fn(&K) -> Option<T>,
) -> Page<T> {
    let mut items = Vec::with_capacity(limit.min(64));
    let mut last = None;
    let mut more = false;
    for k in keys {
        // Keys without an item (a removed VM's id) are skipped, and do not make a next page.
        if let Some(t) = get(&k) {
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(t);
            last = Some(k);
        }
    }
    Page {
        items,
        next: if more {
            last.map(|k| k.to_string())
        } else {
            None
        },
    }
}

/// Each project's event numbers, ascending, with the slot of the project of the last event
/// appended: a job's events name one project, so most appends find their list without hashing.
#[derive(Debug, Default)]
struct ProjectEvents {
    by_project: indexmap::IndexMap<ProjectId, VecDeque<u64>, foldhash::fast::RandomState>,
    /// The last project appended to and its slot in `by_project` (valid until a removal).
    last: Option<(ProjectId, usize)>,
}

impl ProjectEvents {
    /// Appends event `seq` (the newest) to `project`'s numbers.
    fn push(&mut self, project: &ProjectId, seq: u64) {
        if let Some((last, slot)) = &self.last
            && last == project
            && let Some((_, seqs)) = self.by_project.get_index_mut(*slot)
        {
            seqs.push_back(seq);
            return;
        }
        let entry = self.by_project.entry(project.clone());
        let slot = entry.index();
        entry.or_default().push_back(seq);
        self.last = Some((project.clone(), slot));
    }

    /// Returns `project`'s numbers.
    fn of(&self, project: &ProjectId) -> Option<&VecDeque<u64>> {
        self.by_project.get(project)
    }

    /// Drops event `seq`, the oldest kept, from `project`'s numbers.
    fn forget_oldest(&mut self, project: &ProjectId, seq: u64) {
        let Some(seqs) = self.by_project.get_mut(project) else {
            return;
        };
        if seqs.front() == Some(&seq) {
            seqs.pop_front();
        }
        if seqs.is_empty() {
            // Moves the last project into the freed slot: the cached slot may be stale.
            self.by_project.swap_remove(project);
            self.last = None;
        }
    }
}

/// Lists in one order merged into one list in that order, lazily: each item costs a comparison
/// per list, so a page of a scope of several projects costs about its own size, not the number
/// of ids the projects hold.
struct Merged<'a, T> {
    /// Each list's next item and the rest of the list.
    heads: Vec<(&'a T, Box<dyn Iterator<Item = &'a T> + 'a>)>,
    descending: bool,
}

impl<'a, T: Ord> Merged<'a, T> {
    /// Merges `lists`, each ascending (descending when `descending`). An item in two lists
    /// comes out twice.
    fn new(
        lists: impl IntoIterator<Item = Box<dyn Iterator<Item = &'a T> + 'a>>,
        descending: bool,
    ) -> Self {
        let heads = lists
            .into_iter()
            .filter_map(|mut l| l.next().map(|first| (first, l)))
            .collect();
        Merged { heads, descending }
    }
}

impl<'a, T: Ord> Iterator for Merged<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        let descending = self.descending;
        let (i, _) = self.heads.iter().enumerate().reduce(|best, this| {
            let first = if descending {
                this.1.0 > best.1.0
            } else {
                this.1.0 < best.1.0
            };
            if first { this } else { best }
        })?;
        let head = &mut self.heads[i];
        let item = head.0;
        match head.1.next() {
            Some(next) => head.0 = next,
            None => drop(self.heads.swap_remove(i)),
        }
        Some(item)
    }
}

/// Iterates `ids` forwards, or backwards when `descending`.
fn in_order<'a, I>(ids: I, descending: bool) -> Box<dyn Iterator<Item = &'a VmId> + 'a>
where
    I: DoubleEndedIterator<Item = &'a VmId> + 'a,
{
    if descending {
        Box::new(ids.rev())
    } else {
        Box::new(ids)
    }
}

/// A VM ordered by [`VmSort::compare_vms`], for a heap of the first VMs of a sorted page.
struct Ranked<'a>(&'a Vm, VmSort);

impl PartialEq for Ranked<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Ranked<'_> {}

impl PartialOrd for Ranked<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.1.compare_vms(self.0, other.0)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "in-memory"
    }

    async fn submit(&self, submission: Submission) -> Result<SubmitOutcome> {
        self.submit_now(submission)
    }

    async fn usage(&self, project: &ProjectId) -> Result<Usage> {
        Ok(self.lock().usage.get(project).copied().unwrap_or_default())
    }

    async fn host_usage(&self, provider: &str, host: &str) -> Result<Usage> {
        Ok(self.lock().held_on(provider, host))
    }

    async fn idempotency(&self, scope: &IdempotencyScope) -> Result<Option<IdempotencyRecord>> {
        Ok(self.lock().idempotency.get(scope).cloned())
    }

    async fn get_vm(&self, scope: &Scope, id: &VmId) -> Result<Option<Vm>> {
        Ok(self.get_vm_now(scope, id))
    }

    async fn find_vm_by_name(&self, project: &ProjectId, name: &str) -> Result<Option<Vm>> {
        let s = self.lock();
        Ok(s.vm_named(project, name).and_then(|id| s.vm(id)).cloned())
    }

    async fn list_vms(&self, scope: &Scope, page: &PageRequest) -> Result<Page<Vm>> {
        let s = self.lock();
        let limit = page.clamped_limit();
        let cursor = page.cursor.as_ref().map(|c| VmId::new(c.clone()));
        let lower = cursor.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        // Every id is looked up, and kept only when its VM exists in scope (see `VmIds`).
        let in_scope = |k: &VmId| s.vm(k).filter(|v| scope.allows(&v.project)).cloned();
        Ok(match scope {
            Scope::All => page_of(
                s.vm_ids.ids.range(lower, Bound::Unbounded).cloned(),
                limit,
                in_scope,
            ),
            Scope::Project(p) => match s.project_vms.get(p) {
                Some(ids) => page_of(
                    ids.ids.range(lower, Bound::Unbounded).cloned(),
                    limit,
                    in_scope,
                ),
                None => Page {
                    items: vec![],
                    next: None,
                },
            },
            Scope::Projects(ps) => {
                let ids: BTreeSet<&VmId> = ps
                    .iter()
                    .filter_map(|p| s.project_vms.get(p))
                    .flat_map(|ids| ids.ids.range(lower, Bound::Unbounded))
                    .collect();
                page_of(ids.into_iter().cloned(), limit, in_scope)
            }
        })
    }

    async fn list_vms_matching(
        &self,
        scope: &Scope,
        filter: &VmFilter,
        sort: VmSort,
        page: &PageRequest,
    ) -> Result<Page<Vm>> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| sort.parse_cursor(c))
            .transpose()?;
        let limit = page.clamped_limit();
        let s = self.lock();
        let wanted = |v: &Vm| {
            scope.allows(&v.project)
                && filter.matches(v)
                && after.as_ref().is_none_or(|a| sort.follows(v, a))
        };
        let mut found: Vec<&Vm> = Vec::with_capacity(limit.min(64) + 1);
        if sort.key == VmSortKey::Id {
            // In id order already: walk the ids from the cursor on and stop after one VM past
            // the page, so a page costs its own size, not the number of VMs.
            let (lower, upper) = match (&after, sort.descending) {
                (None, _) => (Bound::Unbounded, Bound::Unbounded),
                (Some(a), false) => (Bound::Excluded(&a.id), Bound::Unbounded),
                (Some(a), true) => (Bound::Unbounded, Bound::Excluded(&a.id)),
            };
            // `wanted` keeps only VMs in scope: a removed VM's id left in a list is skipped.
            let ids: Box<dyn Iterator<Item = &VmId>> = match scope {
                Scope::Project(p) => match s.project_vms.get(p) {
                    Some(ids) => in_order(ids.ids.range(lower, upper), sort.descending),
                    None => Box::new(std::iter::empty()),
                },
                // Each project's ids in order, merged; a project named twice is walked once.
                // An id left behind in a project's list (its VM came back in another project
                // in scope) is dropped there, so no VM comes twice.
                Scope::Projects(ps) => {
                    let state: &State = &s;
                    Box::new(Merged::new(
                        ps.iter()
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .filter_map(|p| state.project_vms.get(p).map(|ids| (p, ids)))
                            .map(|(p, ids)| {
                                Box::new(
                                    in_order(ids.ids.range(lower, upper), sort.descending).filter(
                                        move |id| state.vm(id).is_some_and(|v| v.project == *p),
                                    ),
                                ) as Box<dyn Iterator<Item = &VmId>>
                            }),
                        sort.descending,
                    ))
                }
                Scope::All => in_order(s.vm_ids.ids.range(lower, upper), sort.descending),
            };
            found.extend(
                ids.filter_map(|id| s.vm(id))
                    .filter(|v| wanted(v))
                    .take(limit + 1),
            );
        } else {
            // The first `limit + 1` in order, kept in a heap whose top is the last of them: a
            // page costs the VMs in scope times the log of its size, and copies nothing but
            // the page.
            let candidates: Box<dyn Iterator<Item = &Vm>> = match scope {
                Scope::All => Box::new(s.vms.values().map(|v| &**v)),
                // A VM counts in its own project's list only: an id left behind in another
                // project's list (its VM came back there) is skipped.
                Scope::Project(p) => Box::new(
                    s.project_vms
                        .get(p)
                        .into_iter()
                        .flat_map(|ids| ids.ids.iter())
                        .filter_map(|id| s.vm(id))
                        .filter(move |v| v.project == *p),
                ),
                // A project named twice is walked once.
                Scope::Projects(ps) => Box::new(
                    ps.iter()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .filter_map(|p| s.project_vms.get(p).map(|ids| (p, ids)))
                        .flat_map(|(p, ids)| {
                            ids.ids
                                .iter()
                                .filter_map(|id| s.vm(id))
                                .filter(move |v| v.project == *p)
                        }),
                ),
            };
            let mut heap = std::collections::BinaryHeap::with_capacity(limit + 2);
            for v in candidates.filter(|v| wanted(v)) {
                heap.push(Ranked(v, sort));
                if heap.len() > limit + 1 {
                    heap.pop();
                }
            }
            found.extend(heap.into_sorted_vec().into_iter().map(|r| r.0));
        }
        let more = found.len() > limit;
        found.truncate(limit);
        let next = if more {
            found.last().map(|v| sort.cursor(&sort.position(v)))
        } else {
            None
        };
        Ok(Page {
            items: found.into_iter().cloned().collect(),
            next,
        })
    }

    async fn put_vm(&self, vm: Vm, expected: Option<u64>) -> Result<Vm> {
        let mut s = self.lock();
        match expected {
            None => s.insert_vm(Box::new(vm)).cloned(),
            Some(g) => s.replace_vm(vm, g),
        }
    }

    async fn remove_vm(&self, id: &VmId, expected: u64) -> Result<()> {
        self.remove_vm_now(id, expected)
    }

    async fn get_job(&self, scope: &Scope, id: &JobId) -> Result<Option<Job>> {
        Ok(self
            .lock()
            .jobs
            .get(id)
            .map(|e| &e.job)
            .filter(|j| scope.allows(&j.project))
            .cloned())
    }

    async fn list_jobs(
        &self,
        scope: &Scope,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<Page<Job>> {
        let s = self.lock();
        let limit = page.clamped_limit();
        let upper = page.cursor.as_ref().map(|c| JobId::new(c.clone()));
        let get = |k: &JobId| {
            s.jobs
                .get(k)
                .map(|e| &e.job)
                .filter(|j| filter.vm_id.as_ref().is_none_or(|v| &j.vm_id == v))
                .filter(|j| filter.state.is_none_or(|st| j.state == st))
                .cloned()
        };
        Ok(match scope {
            Scope::All => page_of(s.job_ids.before(upper.as_ref()).rev().cloned(), limit, get),
            Scope::Project(p) => match s.project_jobs.get(p) {
                Some(ids) => page_of(ids.before(upper.as_ref()).rev().cloned(), limit, get),
                None => Page {
                    items: vec![],
                    next: None,
                },
            },
            // Each project's jobs newest first, merged; a project named twice is walked once.
            Scope::Projects(ps) => {
                let lists = ps
                    .iter()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .filter_map(|p| s.project_jobs.get(p))
                    .map(|ids| {
                        Box::new(ids.before(upper.as_ref()).rev())
                            as Box<dyn Iterator<Item = &JobId>>
                    });
                page_of(Merged::new(lists, true).cloned(), limit, get)
            }
        })
    }

    async fn unfinished_jobs(&self) -> Result<Vec<Job>> {
        // From the claim rules' index: the cost follows the unfinished jobs, not every job kept.
        let s = self.lock();
        let mut ids: Vec<&JobId> = s.unfinished.values().flatten().collect();
        ids.sort_unstable();
        Ok(ids
            .into_iter()
            .filter_map(|id| s.jobs.get(id))
            .map(|e| e.job.clone())
            .collect())
    }

    async fn unfinished_jobs_of(&self, vm_id: &VmId) -> Result<Vec<Job>> {
        let s = self.lock();
        Ok(s.unfinished
            .get(vm_id)
            .into_iter()
            .flatten()
            .filter_map(|id| s.jobs.get(id))
            .map(|e| e.job.clone())
            .collect())
    }

    async fn update_job(&self, job: Job, expected: u64) -> Result<Job> {
        self.lock().replace_job(job, expected)
    }

    async fn append_logs(
        &self,
        id: &JobId,
        lines: Vec<(DateTime<Utc>, LogEntry)>,
    ) -> Result<Vec<JobLogLine>> {
        let mut out = Vec::with_capacity(lines.len());
        self.append_each(id, lines, |line| out.push(line.clone()))?;
        Ok(out)
    }

    fn as_memory(&self) -> Option<&MemoryStore> {
        Some(self)
    }

    async fn job_logs(&self, id: &JobId, after: u64) -> Result<Vec<JobLogLine>> {
        let s = self.lock();
        let entry = s.jobs.get(id).ok_or_else(|| Error::not_found("job", id))?;
        Ok(entry
            .logs
            .iter()
            .filter(|l| l.seq > after)
            .cloned()
            .collect())
    }

    async fn append_event(&self, event: Event) -> Result<Arc<Event>> {
        Ok(self.append_event_now(Arc::new(event)))
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Arc<Event>>> {
        let s = self.lock();
        let limit = if filter.limit == 0 {
            PageRequest::MAX_LIMIT
        } else {
            filter.limit
        };
        if let Some(p) = &filter.project {
            // Through the project's own numbers, from the first after the cursor: each event
            // is found by its position in `events`.
            let Some(seqs) = s.project_events.of(p) else {
                return Ok(Vec::new());
            };
            let start = seqs.partition_point(|&seq| seq <= filter.after);
            return Ok(seqs
                .range(start..)
                .filter_map(|&seq| s.event(seq))
                .filter(|e| filter.matches(e))
                .take(limit)
                .cloned()
                .collect());
        }
        // Events are ordered by seq: skip straight to the first one after the cursor.
        let start = s.events.partition_point(|e| e.seq <= filter.after);
        Ok(s.events
            .range(start..)
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect())
    }

    // One process, no leases: a fence has nothing to be checked against.
    async fn purge(
        &self,
        jobs_before: DateTime<Utc>,
        keys_before: DateTime<Utc>,
        _fence: Option<&crate::LeaderFence>,
    ) -> Result<()> {
        let mut s = self.lock();
        let old: Vec<(JobId, ProjectId)> = s
            .jobs
            .values()
            .filter(|e| e.job.finished_at.is_some_and(|f| f < jobs_before))
            .map(|e| (e.job.id.clone(), e.job.project.clone()))
            .collect();
        if !old.is_empty() {
            let mut projects = crate::fastmap::HashSet::default();
            for (id, project) in &old {
                if let Some(e) = s.jobs.remove(id) {
                    s.track(&e.job);
                }
                projects.insert(project.clone());
            }
            // The ordered ids lose the purged ones in one pass each (`jobs` no longer has them).
            let State {
                jobs,
                job_ids,
                project_jobs,
                ..
            } = &mut *s;
            job_ids.retain(|id| jobs.contains_key(id));
            for project in projects {
                if let Some(ids) = project_jobs.get_mut(&project) {
                    ids.retain(|id| jobs.contains_key(id));
                    if ids.is_empty() {
                        project_jobs.remove(&project);
                    }
                }
            }
        }
        s.idempotency.retain(|_, r| r.created_at >= keys_before);
        Ok(())
    }

    // --- The audit stream: retention by time window and the publishing outbox. ---

    async fn purge_events(
        &self,
        before: DateTime<Utc>,
        _fence: Option<&crate::LeaderFence>,
    ) -> Result<u64> {
        let mut s = self.lock();
        let n = s.events.len();
        s.events.retain(|e| e.at >= before);
        if s.events.len() != n {
            // Rebuilt in one pass: retention may drop events from anywhere in the stream.
            let mut index = ProjectEvents::default();
            for e in &s.events {
                if let Some(p) = &e.project {
                    index.push(p, e.seq);
                }
            }
            s.project_events = index;
        }
        s.outbox.retain(|e| e.at >= before);
        s.outbox_shrank();
        Ok(u64::try_from(n - s.events.len()).unwrap_or(u64::MAX))
    }

    async fn unpublished_events(&self, limit: usize) -> Result<Vec<Arc<Event>>> {
        let limit = limit.clamp(1, PageRequest::MAX_LIMIT);
        Ok(self.lock().outbox.iter().take(limit).cloned().collect())
    }

    async fn mark_published(&self, seqs: &[u64]) -> Result<()> {
        let mut s = self.lock();
        // Published events are nearly always the oldest: each is found by binary search and
        // removed from the front.
        for seq in seqs {
            if let Ok(i) = s.outbox.binary_search_by_key(seq, |e| e.seq) {
                s.outbox.remove(i);
            }
        }
        s.outbox_shrank();
        Ok(())
    }

    async fn create_server_group(&self, group: ServerGroup) -> Result<ServerGroup> {
        let mut s = self.lock();
        if s.groups.contains_key(&group.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("server group `{}` already exists", group.id),
            ));
        }
        let name_key = (group.project.clone(), group.name.clone());
        if s.group_names.contains_key(&name_key) {
            return Err(group_name_taken(&group.project, &group.name));
        }
        let group = ServerGroup {
            generation: 1,
            members: Vec::new(),
            ..group
        };
        s.group_names.insert(name_key, group.id.clone());
        s.groups.insert(group.id.clone(), group.clone());
        Ok(s.group_view(&group))
    }

    async fn get_server_group(
        &self,
        scope: &Scope,
        id: &ServerGroupId,
    ) -> Result<Option<ServerGroup>> {
        let s = self.lock();
        Ok(s.groups
            .get(id)
            .filter(|g| scope.allows(&g.project))
            .map(|g| s.group_view(g)))
    }

    async fn list_server_groups(
        &self,
        scope: &Scope,
        page: &PageRequest,
    ) -> Result<Page<ServerGroup>> {
        let s = self.lock();
        let lower = match &page.cursor {
            Some(c) => Bound::Excluded(ServerGroupId::new(c.clone())),
            None => Bound::Unbounded,
        };
        let keys: Vec<ServerGroupId> = s
            .groups
            .range((lower, Bound::Unbounded))
            .filter(|(_, g)| scope.allows(&g.project))
            .map(|(k, _)| k.clone())
            .collect();
        Ok(page_of(keys.into_iter(), page.clamped_limit(), |k| {
            s.groups.get(k).map(|g| s.group_view(g))
        }))
    }

    async fn delete_server_group(&self, scope: &Scope, id: &ServerGroupId) -> Result<ServerGroup> {
        let mut s = self.lock();
        let group = s
            .groups
            .get(id)
            .filter(|g| scope.allows(&g.project))
            .map(|g| s.group_view(g))
            .ok_or_else(|| Error::not_found("server group", id))?;
        if !group.members.is_empty() {
            return Err(group_not_empty(&group, group.members.len()));
        }
        s.groups.remove(id);
        s.group_names
            .remove(&(group.project.clone(), group.name.clone()));
        s.group_members.remove(id);
        Ok(group)
    }

    // ---- Job leases -------------------------------------------------------------------------

    async fn claim_job(
        &self,
        id: &JobId,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<Option<Job>> {
        let now = crate::clock::system_now();
        let mut s = self.lock();
        Ok(s.claim(id, &Arc::from(holder), until, now)?
            .map(|entry| entry.job.clone()))
    }

    async fn renew_lease(
        &self,
        id: &JobId,
        holder: &str,
        token: u64,
        until: DateTime<Utc>,
    ) -> Result<JobLease> {
        let mut s = self.lock();
        let entry = s.lease_mut(id, Some(holder), token)?;
        if entry.job.state.is_terminal() {
            return Err(lease_lost(id, token));
        }
        let lease = entry
            .job
            .lease
            .as_mut()
            .ok_or_else(|| lease_lost(id, token))?;
        lease.until = until;
        Ok(lease.clone())
    }

    async fn release_lease(&self, id: &JobId, holder: &str, token: u64) -> Result<()> {
        self.release_lease_now(id, holder, token)
    }

    async fn update_job_fenced(&self, mut job: Job, expected: u64, token: u64) -> Result<Job> {
        self.update_job_fenced_now(&mut job, expected, token)?;
        Ok(job)
    }

    async fn claimable_jobs(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Job>> {
        let s = self.lock();
        // Borrowed, and only the oldest `limit` ordered and cloned: with every VM's first job
        // cloned and sorted, a poll (every third of the lease) held the lock for O(n log n)
        // with n jobs queued.
        let mut found: Vec<&Job> = s
            .unfinished
            .values()
            .filter_map(|set| set.first())
            .filter_map(|id| s.jobs.get(id))
            .map(|e| &e.job)
            .filter(|j| j.lease.as_ref().is_none_or(|l| !l.is_active(now)))
            .collect();
        if limit == 0 {
            return Ok(Vec::new());
        }
        if found.len() > limit {
            found.select_nth_unstable_by(limit - 1, |a, b| a.id.cmp(&b.id));
            found.truncate(limit);
        }
        found.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        Ok(found.into_iter().cloned().collect())
    }
}
