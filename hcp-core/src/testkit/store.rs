//! The store conformance suite: checks of the [`Store`] contract (its `# Behavior` sections)
//! that every store runs, the in-memory store in `hcp-core`'s tests and the PostgreSQL store
//! against a real database.
//!
//! Each check takes a fresh, empty store. [`store_conformance_tests!`](crate::store_conformance_tests)
//! writes one test per check, so a store crate runs the whole suite with one line:
//!
//! ```ignore
//! async fn fresh() -> std::sync::Arc<dyn hcp_core::store::Store> { /* an empty store */ }
//! hcp_core::store_conformance_tests!(fresh);
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};

use crate::store::{
    HostRoom, IdempotencyRecord, IdempotencyScope, JobFilter, PageRequest, Scope, Store,
    Submission, SubmitOutcome, Usage, VmFilter, VmSort, VmSortKey, VmWrite,
};
use crate::{
    CODE_CAPACITY_EXHAUSTED, CODE_IDEMPOTENCY_KEY_REUSED, DesiredState, Error, ErrorKind, Event,
    EventFilter, EventKind, Job, JobAction, JobId, JobState, LogEntry, LogLevel, Operation,
    PowerState, Principal, ProjectId, ProviderBinding, Quota, Resources, Result, Vm, VmId, VmSpec,
};
use crate::{
    CODE_SERVER_GROUP_NOT_EMPTY, CODE_SERVER_GROUP_POLICY, GroupPolicy, GroupStrength, ServerGroup,
    ServerGroupId,
};

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Error::internal(format!("store conformance: {}", format!($($msg)+))));
        }
    };
}

/// Makes a VM record of `project` named `name` with 1 vCPU and 512 MiB (not yet stored).
pub fn vm(project: &str, name: &str) -> Vm {
    let now = Utc::now();
    Vm {
        id: VmId::generate(),
        project: ProjectId::new(project),
        spec: std::sync::Arc::new(VmSpec::new(name, "ubuntu-24.04", "small")),
        resources: Resources {
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 10,
        },
        zone: "default".into(),
        desired: DesiredState::Pending,
        desired_power: PowerState::Running,
        power: PowerState::Unknown,
        present: false,
        binding: ProviderBinding {
            provider: "sim".into(),
            host: "host-1".into(),
            native_id: None,
            member_host: None,
        },
        last_error: None,
        created_at: now,
        updated_at: now,
        generation: 0,
    }
}

/// Makes a pending create job for `vm` (not yet stored).
pub fn job(vm: &Vm) -> Job {
    Job {
        id: JobId::generate(),
        project: vm.project.clone(),
        vm_id: vm.id.clone(),
        operation: Operation::CreateVm,
        action: JobAction::Create,
        state: JobState::Pending,
        pending_reason: None,
        attempts: 0,
        max_attempts: 3,
        progress: 0,
        principal: Principal::new("alice"),
        idempotency_key: None,
        host: vm.binding.host.clone(),
        provider: vm.binding.provider.clone(),
        error: None,
        timeout_ms: 60_000,
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
        generation: 0,
        lease: None,
        cancel_requested: None,
    }
}

/// Makes a create submission for a new VM of `project` named `name`, without a key.
pub fn create(project: &str, name: &str) -> Submission {
    let v = vm(project, name);
    Submission {
        idempotency: None,
        job: job(&v),
        vm: VmWrite::Insert(v),
        quota: None,
        fence: None,
        room: None,
    }
}

fn with_key(mut s: Submission, key: &str, fingerprint: &str) -> Submission {
    let (vm_id, project) = match &s.vm {
        VmWrite::Insert(v) | VmWrite::Update { vm: v, .. } => (v.id.clone(), v.project.clone()),
    };
    s.idempotency = Some(IdempotencyRecord {
        scope: IdempotencyScope {
            project,
            principal: "alice".into(),
            operation: Operation::CreateVm,
            key: key.into(),
        },
        fingerprint: fingerprint.into(),
        vm_id,
        job_id: s.job.id.clone(),
        created_at: Utc::now(),
    });
    s
}

/// Reads back the VM and job of an accepted submission.
async fn accepted(store: &Arc<dyn Store>, o: SubmitOutcome) -> Result<(Vm, Job)> {
    match o {
        SubmitOutcome::Accepted { vm_id, job_id } => Ok((
            stored_vm(store, &vm_id).await?,
            stored_job(store, &job_id).await?,
        )),
        SubmitOutcome::Replayed { .. } => Err(Error::internal(
            "store conformance: a submission without a remembered key was replayed",
        )),
    }
}

fn is_conflict(r: &Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::Conflict)
}

/// The names of every check, in the order [`run_all`] runs them.
pub const CHECKS: [&str; 15] = [
    "vm_generation_cas",
    "job_generation_cas",
    "submit_is_all_or_nothing",
    "idempotency_under_concurrency",
    "fingerprint_mismatch_is_refused",
    "paging_and_cursors",
    "scope_isolation",
    "log_sequence_numbers",
    "event_sequence_numbers",
    "retention_purge",
    "quota_under_concurrency",
    "usage_follows_vm_writes",
    "host_room_under_concurrency",
    "host_usage_follows_vm_writes",
    "filtered_sorted_listing",
];

/// Runs the check named `name` (one of [`CHECKS`] or [`LEASE_CHECKS`]) on `store`.
///
/// # Errors
/// The check's failure, or `Internal` for an unknown name.
pub async fn run(name: &str, store: Arc<dyn Store>) -> Result<()> {
    let r = match name {
        "vm_generation_cas" => vm_generation_cas(store).await,
        "job_generation_cas" => job_generation_cas(store).await,
        "submit_is_all_or_nothing" => submit_is_all_or_nothing(store).await,
        "idempotency_under_concurrency" => idempotency_under_concurrency(store).await,
        "fingerprint_mismatch_is_refused" => fingerprint_mismatch_is_refused(store).await,
        "paging_and_cursors" => paging_and_cursors(store).await,
        "scope_isolation" => scope_isolation(store).await,
        "log_sequence_numbers" => log_sequence_numbers(store).await,
        "event_sequence_numbers" => event_sequence_numbers(store).await,
        "retention_purge" => retention_purge(store).await,
        "quota_under_concurrency" => quota_under_concurrency(store).await,
        "usage_follows_vm_writes" => usage_follows_vm_writes(store).await,
        "host_room_under_concurrency" => host_room_under_concurrency(store).await,
        "host_usage_follows_vm_writes" => host_usage_follows_vm_writes(store).await,
        "filtered_sorted_listing" => filtered_sorted_listing(store).await,
        other if LEASE_CHECKS.contains(&other) => run_lease_check(other, store).await,
        other => return Err(Error::internal(format!("no store check named `{other}`"))),
    };
    r.map_err(|e| e.with_context("check", name))
}

/// Runs every check, each on a fresh store from `fresh`.
///
/// # Errors
/// The first failed check, naming it.
pub async fn run_all<F, Fut>(fresh: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    for name in CHECKS {
        run(name, fresh().await).await?;
    }
    for name in LEASE_CHECKS {
        run(name, fresh().await).await?;
    }
    Ok(())
}

/// Writes one `#[tokio::test]` per check of the store conformance suite; `$fresh` is an async
/// function returning a fresh, empty `Arc<dyn Store>`. The calling crate needs `tokio` with the
/// `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:path) => {
        $crate::store_conformance_tests!(@each $fresh;
            vm_generation_cas, job_generation_cas, submit_is_all_or_nothing,
            idempotency_under_concurrency, fingerprint_mismatch_is_refused, paging_and_cursors,
            scope_isolation, log_sequence_numbers, event_sequence_numbers, retention_purge,
            quota_under_concurrency, usage_follows_vm_writes, host_room_under_concurrency,
            host_usage_follows_vm_writes, filtered_sorted_listing);
        $crate::store_conformance_tests!(@each $fresh;
            lease_claim_has_one_winner, lease_one_active_job_per_vm, lease_expiry_and_reclaim,
            lease_stale_token_is_refused, lease_renew_by_non_holder_is_refused);
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = $fresh().await;
                if let Err(e) = $crate::testkit::store::run(stringify!($name), store).await {
                    panic!("{e:#}");
                }
            }
        )*
    };
}

/// Inserts, replaces and removes VMs with right and stale generations.
///
/// # Errors
/// When a stale write succeeds, a refused write changes anything, or generations do not move
/// 1, 2, 3.
pub async fn vm_generation_cas(store: Arc<dyn Store>) -> Result<()> {
    let mut v = vm("p1", "cas");
    v.generation = 42;
    let stored = store.put_vm(v.clone(), None).await?;
    ensure!(
        stored.generation == 1,
        "an insert stores generation 1, got {}",
        stored.generation
    );
    ensure!(
        is_conflict(&store.put_vm(v.clone(), None).await),
        "a second insert of one id is a conflict"
    );
    let mut same_name = vm("p1", "cas");
    same_name.generation = 0;
    ensure!(
        is_conflict(&store.put_vm(same_name, None).await),
        "an insert with a name taken in the project is a conflict"
    );
    ensure!(
        store.put_vm(vm("p2", "cas"), None).await.is_ok(),
        "the same name in another project is accepted"
    );
    let mut a = stored.clone();
    a.power = PowerState::Running;
    let a = store.put_vm(a, Some(1)).await?;
    ensure!(
        a.generation == 2,
        "a replace stores expected + 1, got {}",
        a.generation
    );
    let mut b = stored.clone();
    b.power = PowerState::Stopped;
    let r = store.put_vm(b, Some(1)).await;
    ensure!(
        is_conflict(&r),
        "a replace with a stale generation is a conflict: {r:?}"
    );
    ensure!(
        r.as_ref().err().is_some_and(Error::is_temporary),
        "a generation conflict is temporary (re-read and retry)"
    );
    let now = store.get_vm(&Scope::All, &v.id).await?;
    ensure!(
        now.as_ref()
            .is_some_and(|n| n.power == PowerState::Running && n.generation == 2),
        "a refused write changes nothing: {now:?}"
    );
    ensure!(
        is_conflict(&store.remove_vm(&v.id, 1).await),
        "a remove with a stale generation is a conflict"
    );
    ensure!(
        store.get_vm(&Scope::All, &v.id).await?.is_some(),
        "a refused remove keeps the VM"
    );
    let missing = store.put_vm(vm("p1", "ghost"), Some(1)).await;
    ensure!(
        matches!(&missing, Err(e) if e.kind() == ErrorKind::NotFound),
        "replacing a VM that does not exist is NotFound: {missing:?}"
    );
    store.remove_vm(&v.id, 2).await?;
    ensure!(
        store.get_vm(&Scope::All, &v.id).await?.is_none(),
        "a removed VM is gone"
    );
    ensure!(
        store.find_vm_by_name(&v.project, "cas").await?.is_none(),
        "a removed VM's name is free"
    );
    store.put_vm(vm("p1", "cas"), None).await?;
    Ok(())
}

/// Updates jobs with right and stale generations, concurrently.
///
/// # Errors
/// When two writers with one generation both succeed, or a refused write changes the job.
pub async fn job_generation_cas(store: Arc<dyn Store>) -> Result<()> {
    let (_, j) = accepted(&store, store.submit(create("p1", "job-cas")).await?).await?;
    ensure!(
        j.generation == 1,
        "a submitted job has generation 1, got {}",
        j.generation
    );
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let store = store.clone();
        let mut j = j.clone();
        tasks.push(tokio::spawn(async move {
            j.progress = i;
            store.update_job(j, 1).await
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| Error::internal(e.to_string()))? {
            Ok(j) => won.push(j),
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e),
        }
    }
    ensure!(
        won.len() == 1,
        "exactly one of 10 writers with one generation wins, got {}",
        won.len()
    );
    let cur = store
        .get_job(&Scope::All, &j.id)
        .await?
        .ok_or_else(|| Error::internal("the job vanished"))?;
    ensure!(
        cur.generation == 2 && cur.progress == won[0].progress,
        "the stored job is the winner's: {cur:?}"
    );
    let ghost = job(&vm("p1", "none"));
    let r = store.update_job(ghost, 1).await;
    ensure!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::NotFound),
        "updating a missing job is NotFound: {r:?}"
    );
    Ok(())
}

/// Refuses submissions part-way and checks nothing of them was written.
///
/// # Errors
/// When a refused submission leaves a VM, a job or an idempotency record behind.
pub async fn submit_is_all_or_nothing(store: Arc<dyn Store>) -> Result<()> {
    let (v, _) = accepted(&store, store.submit(create("p1", "taken")).await?).await?;
    // A taken name: the job and the key must not be written.
    let s = with_key(create("p1", "taken"), "k-name", "f1");
    let (job_id, scope) = (s.job.id.clone(), s.idempotency.clone().map(|r| r.scope));
    ensure!(
        is_conflict(&store.submit(s).await),
        "a taken name is a conflict"
    );
    ensure!(
        store.get_job(&Scope::All, &job_id).await?.is_none(),
        "no job for a refused submit"
    );
    if let Some(scope) = &scope {
        ensure!(
            store.idempotency(scope).await?.is_none(),
            "no idempotency record for a refused submit"
        );
    }
    // A stale VM generation on an update.
    let mut changed = v.clone();
    changed.desired = DesiredState::Deleted;
    let mut j = job(&v);
    j.operation = Operation::DeleteVm;
    j.action = JobAction::Delete { force: false };
    let stale = Submission {
        idempotency: None,
        job: j.clone(),
        vm: VmWrite::Update {
            vm: changed.clone(),
            expected: 7,
        },
        quota: None,
        fence: None,
        room: None,
    };
    let stale = with_key(stale, "k-stale", "f2");
    let scope = stale.idempotency.clone().map(|r| r.scope);
    ensure!(
        is_conflict(&store.submit(stale).await),
        "a stale VM generation is a conflict"
    );
    ensure!(
        store.get_job(&Scope::All, &j.id).await?.is_none(),
        "no job for a stale update"
    );
    if let Some(scope) = &scope {
        ensure!(
            store.idempotency(scope).await?.is_none(),
            "no record for a stale update"
        );
    }
    let cur = store.get_vm(&Scope::All, &v.id).await?;
    ensure!(
        cur.as_ref()
            .is_some_and(|c| c.desired == v.desired && c.generation == 1),
        "a refused update leaves the VM as it was: {cur:?}"
    );
    // A job id that exists: the VM insert must not be written either.
    let mut dup = create("p1", "dup-job");
    dup.job.id = accepted(&store, store.submit(create("p1", "first")).await?)
        .await?
        .1
        .id;
    let dup_vm = match &dup.vm {
        VmWrite::Insert(v) => v.id.clone(),
        VmWrite::Update { vm, .. } => vm.id.clone(),
    };
    ensure!(
        is_conflict(&store.submit(dup).await),
        "an existing job id is a conflict"
    );
    ensure!(
        store.get_vm(&Scope::All, &dup_vm).await?.is_none(),
        "no VM for a submission whose job was refused"
    );
    ensure!(
        store
            .find_vm_by_name(&ProjectId::new("p1"), "dup-job")
            .await?
            .is_none(),
        "the refused VM's name stays free"
    );
    // The right generation: VM and job written together.
    let ok = Submission {
        idempotency: None,
        job: j.clone(),
        vm: VmWrite::Update {
            vm: changed,
            expected: 1,
        },
        quota: None,
        fence: None,
        room: None,
    };
    let (vm2, job2) = accepted(&store, store.submit(ok).await?).await?;
    ensure!(
        vm2.generation == 2 && vm2.desired == DesiredState::Deleted && job2.generation == 1,
        "an accepted update writes VM and job: {vm2:?} {job2:?}"
    );
    Ok(())
}

/// Sends one key 50 times at once and checks one job was written and every other call replayed
/// it.
///
/// # Errors
/// When more than one submission is accepted, or a replay names another job.
pub async fn idempotency_under_concurrency(store: Arc<dyn Store>) -> Result<()> {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        // Each caller makes its own ids (as the engine does), with one key and fingerprint.
        let s = with_key(create("p1", &format!("idem-{i}")), "key-1", "same-request");
        tasks.push(tokio::spawn(async move { store.submit(s).await }));
    }
    let mut accepted_ids = Vec::new();
    let mut replayed = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| Error::internal(e.to_string()))?? {
            SubmitOutcome::Accepted { vm_id, job_id } => accepted_ids.push((vm_id, job_id)),
            SubmitOutcome::Replayed { vm_id, job_id } => replayed.push((vm_id, job_id)),
        }
    }
    ensure!(
        accepted_ids.len() == 1,
        "exactly one of 50 is accepted, got {}",
        accepted_ids.len()
    );
    ensure!(
        replayed.iter().all(|r| r == &accepted_ids[0]),
        "every replay names the accepted VM and job"
    );
    let jobs = store
        .list_jobs(&Scope::All, &JobFilter::default(), &PageRequest::all())
        .await?;
    ensure!(
        jobs.items.len() == 1,
        "one job exists, found {}",
        jobs.items.len()
    );
    let vms = store.list_vms(&Scope::All, &PageRequest::all()).await?;
    ensure!(
        vms.items.len() == 1,
        "one VM exists, found {}",
        vms.items.len()
    );
    let rec = store
        .idempotency(&IdempotencyScope {
            project: ProjectId::new("p1"),
            principal: "alice".into(),
            operation: Operation::CreateVm,
            key: "key-1".into(),
        })
        .await?
        .ok_or_else(|| Error::internal("store conformance: the key is not remembered"))?;
    ensure!(
        (rec.vm_id.clone(), rec.job_id.clone()) == accepted_ids[0],
        "the record names the accepted request"
    );
    // The same key by another principal is another scope.
    let mut other = with_key(create("p1", "idem-other"), "key-1", "same-request");
    if let Some(r) = other.idempotency.as_mut() {
        r.scope.principal = "bob".into();
    }
    ensure!(
        matches!(store.submit(other).await?, SubmitOutcome::Accepted { .. }),
        "a key is scoped to its principal"
    );
    Ok(())
}

/// Reuses a key for a different request.
///
/// # Errors
/// When the reuse is not refused with `IDEMPOTENCY_KEY_REUSED` or writes anything.
pub async fn fingerprint_mismatch_is_refused(store: Arc<dyn Store>) -> Result<()> {
    accepted(
        &store,
        store
            .submit(with_key(create("p1", "fp-a"), "k", "first"))
            .await?,
    )
    .await?;
    let s = with_key(create("p1", "fp-b"), "k", "second");
    let job_id = s.job.id.clone();
    let r = store.submit(s).await;
    ensure!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::Conflict
            && e.code() == CODE_IDEMPOTENCY_KEY_REUSED
            && e.field() == Some("idempotency_key")),
        "a reused key is IDEMPOTENCY_KEY_REUSED on field idempotency_key: {r:?}"
    );
    ensure!(
        store.get_job(&Scope::All, &job_id).await?.is_none(),
        "no job for a reused key"
    );
    ensure!(
        store
            .find_vm_by_name(&ProjectId::new("p1"), "fp-b")
            .await?
            .is_none(),
        "no VM for a reused key"
    );
    let replay = store
        .submit(with_key(create("p1", "fp-c"), "k", "first"))
        .await?;
    ensure!(
        matches!(replay, SubmitOutcome::Replayed { .. }),
        "the first request still replays"
    );
    Ok(())
}

/// Pages through VMs and jobs of two projects.
///
/// # Errors
/// When a page is too long, an item repeats or is missed, `next` is wrong, or the order is not
/// the documented one.
pub async fn paging_and_cursors(store: Arc<dyn Store>) -> Result<()> {
    let mut all_jobs = Vec::new();
    let mut all_vms = Vec::new();
    for i in 0..23 {
        let project = if i % 3 == 0 { "p2" } else { "p1" };
        let (v, j) = accepted(
            &store,
            store
                .submit(create(project, &format!("page-{i:02}")))
                .await?,
        )
        .await?;
        all_jobs.push(j);
        all_vms.push(v);
    }
    for (scope, want) in [
        (Scope::All, 23usize),
        (Scope::Project(ProjectId::new("p1")), 15),
        (Scope::Project(ProjectId::new("p2")), 8),
        (
            Scope::Projects(vec![ProjectId::new("p2"), ProjectId::new("p1")]),
            23,
        ),
        (
            Scope::Projects(vec![ProjectId::new("p2"), ProjectId::new("nobody")]),
            8,
        ),
        (Scope::Projects(vec![ProjectId::new("p2")]), 8),
        (Scope::Projects(vec![]), 0),
    ] {
        let mut seen = Vec::new();
        let mut page = PageRequest::first(5);
        let mut pages = 0;
        loop {
            let p = store.list_vms(&scope, &page).await?;
            ensure!(p.items.len() <= 5, "a VM page holds at most its limit");
            pages += 1;
            ensure!(pages <= 10, "VM paging does not end");
            seen.extend(p.items.into_iter().map(|v| v.id));
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        ensure!(
            seen.len() == want,
            "{scope:?}: {want} VMs over all pages, got {}",
            seen.len()
        );
        ensure!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "VMs come in id order without repeats"
        );
        ensure!(
            pages == want.div_ceil(5).max(1),
            "{scope:?}: next is set exactly when more follow"
        );

        let mut jobs = Vec::new();
        let mut page = PageRequest::first(4);
        loop {
            let p = store
                .list_jobs(&scope, &JobFilter::default(), &page)
                .await?;
            ensure!(p.items.len() <= 4, "a job page holds at most its limit");
            jobs.extend(p.items.into_iter().map(|j| j.id));
            ensure!(jobs.len() <= want, "job paging repeats items");
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        ensure!(
            jobs.len() == want,
            "{scope:?}: {want} jobs over all pages, got {}",
            jobs.len()
        );
        ensure!(
            jobs.windows(2).all(|w| w[0] > w[1]),
            "jobs come newest first without repeats"
        );
    }
    // Filters combine with paging.
    let target = &all_jobs[4];
    let by_vm = store
        .list_jobs(
            &Scope::All,
            &JobFilter {
                vm_id: Some(target.vm_id.clone()),
                state: None,
            },
            &PageRequest::first(10),
        )
        .await?;
    ensure!(
        by_vm.items.len() == 1 && by_vm.items[0].id == target.id && by_vm.next.is_none(),
        "the vm filter selects that VM's job"
    );
    let running = store
        .list_jobs(
            &Scope::All,
            &JobFilter {
                vm_id: None,
                state: Some(JobState::Running),
            },
            &PageRequest::first(10),
        )
        .await?;
    ensure!(running.items.is_empty(), "no job is running");
    let clamped = store.list_vms(&Scope::All, &PageRequest::first(0)).await?;
    ensure!(clamped.items.len() == 1, "a limit of 0 is clamped to 1");

    // Removed VMs leave no trace in any page, and no empty page after the last: p1 keeps its
    // first five VMs (the removed ones are its last ten), p2 loses every other one.
    let p1: Vec<&Vm> = all_vms
        .iter()
        .filter(|v| v.project.as_str() == "p1")
        .collect();
    let p2: Vec<&Vm> = all_vms
        .iter()
        .filter(|v| v.project.as_str() == "p2")
        .collect();
    let mut removed = Vec::new();
    for v in p1.iter().skip(5).chain(p2.iter().step_by(2)) {
        store.remove_vm(&v.id, v.generation).await?;
        removed.push((*v).clone());
    }
    let kept = |p: &str| -> Vec<VmId> {
        all_vms
            .iter()
            .filter(|v| v.project.as_str() == p || p.is_empty())
            .filter(|v| !removed.iter().any(|r| r.id == v.id))
            .map(|v| v.id.clone())
            .collect()
    };
    for (scope, want) in [
        (Scope::All, kept("")),
        (Scope::Project(ProjectId::new("p1")), kept("p1")),
        (Scope::Project(ProjectId::new("p2")), kept("p2")),
        (
            Scope::Projects(vec![ProjectId::new("p2"), ProjectId::new("p1")]),
            kept(""),
        ),
    ] {
        let mut seen = Vec::new();
        let mut page = PageRequest::first(5);
        let mut pages = 0;
        loop {
            let p = store.list_vms(&scope, &page).await?;
            pages += 1;
            ensure!(pages <= 10, "VM paging does not end");
            ensure!(
                !p.items.is_empty() || pages == 1,
                "{scope:?}: a page after removals is never empty"
            );
            seen.extend(p.items.into_iter().map(|v| v.id));
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        ensure!(
            seen == want,
            "{scope:?}: after removals the pages hold {want:?}, got {seen:?}"
        );
        ensure!(
            pages == want.len().div_ceil(5).max(1),
            "{scope:?}: after removals, next is set exactly when more follow"
        );
        let matching = unfiltered(&store, &scope).await?;
        ensure!(
            matching.iter().map(|v| &v.id).eq(want.iter()),
            "{scope:?}: a filtered listing after removals holds exactly the VMs kept"
        );
    }
    // A removed VM's id that comes back in another project is that project's only (the last
    // of p1 removed: a store that keeps removed ids a while may still hold it under p1).
    let Some(last_of_p1) = removed.iter().rev().find(|v| v.project.as_str() == "p1") else {
        return Err(Error::internal(
            "store conformance: no VM of p1 was removed",
        ));
    };
    let back = Vm {
        project: ProjectId::new("p3"),
        generation: 0,
        ..last_of_p1.clone()
    };
    let back = store.put_vm(back, None).await?;
    for (project, want) in [("p1", false), ("p3", true)] {
        let scope = Scope::Project(ProjectId::new(project));
        let listed = store.list_vms(&scope, &PageRequest::first(100)).await?;
        let matching = unfiltered(&store, &scope).await?;
        for items in [&listed.items, &matching] {
            ensure!(
                items.iter().any(|v| v.id == back.id) == want,
                "a VM removed from p1 and put back in p3 is listed in {project}: {want}"
            );
        }
    }
    let everywhere = store
        .list_vms(
            &Scope::Projects(vec![ProjectId::new("p1"), ProjectId::new("p3")]),
            &PageRequest::first(100),
        )
        .await?;
    ensure!(
        everywhere.items.iter().filter(|v| v.id == back.id).count() == 1,
        "a VM put back in another project is listed once across both"
    );
    Ok(())
}

/// Returns the first 100 VMs of `scope` from the filtered listing, without a filter, in id order.
async fn unfiltered(store: &Arc<dyn Store>, scope: &Scope) -> Result<Vec<Vm>> {
    let page = store
        .list_vms_matching(
            scope,
            &VmFilter::default(),
            VmSort::default(),
            &PageRequest::first(100),
        )
        .await?;
    Ok(page.items)
}

/// Looks up one project's objects from another project's scope.
///
/// # Errors
/// When a project scope sees another project's VM or job.
pub async fn scope_isolation(store: Arc<dyn Store>) -> Result<()> {
    let (va, ja) = accepted(&store, store.submit(create("alpha", "shared-name")).await?).await?;
    let (vb, jb) = accepted(&store, store.submit(create("beta", "shared-name")).await?).await?;
    let a = Scope::Project(ProjectId::new("alpha"));
    let b = Scope::Project(ProjectId::new("beta"));
    ensure!(
        store.get_vm(&a, &va.id).await?.is_some(),
        "alpha sees its VM"
    );
    ensure!(
        store.get_vm(&a, &vb.id).await?.is_none(),
        "alpha never sees beta's VM"
    );
    ensure!(
        store.get_job(&a, &jb.id).await?.is_none(),
        "alpha never sees beta's job"
    );
    ensure!(
        store.get_job(&b, &ja.id).await?.is_none(),
        "beta never sees alpha's job"
    );
    ensure!(
        store.get_vm(&Scope::All, &vb.id).await?.is_some(),
        "the all scope sees every VM"
    );
    let gamma_and_alpha = Scope::Projects(vec![ProjectId::new("gamma"), ProjectId::new("alpha")]);
    ensure!(
        store.get_vm(&gamma_and_alpha, &va.id).await?.is_some()
            && store.get_vm(&gamma_and_alpha, &vb.id).await?.is_none()
            && store.get_job(&gamma_and_alpha, &jb.id).await?.is_none(),
        "a scope of several projects sees exactly theirs"
    );
    let listed = store
        .list_jobs(&gamma_and_alpha, &JobFilter::default(), &PageRequest::all())
        .await?;
    ensure!(
        listed.items.iter().all(|j| j.project.as_str() == "alpha") && !listed.items.is_empty(),
        "a scope of several projects lists only their jobs"
    );
    let vms = store.list_vms(&a, &PageRequest::all()).await?;
    ensure!(
        vms.items.iter().all(|v| v.project.as_str() == "alpha") && vms.items.len() == 1,
        "alpha's VM list holds only its VM"
    );
    // A cursor taken from another project's list reveals nothing either.
    let p = store
        .list_vms(
            &a,
            &PageRequest {
                limit: 10,
                cursor: Some(String::new()),
            },
        )
        .await?;
    ensure!(
        p.items.iter().all(|v| v.project.as_str() == "alpha"),
        "a cursor keeps the scope"
    );
    let jobs = store
        .list_jobs(
            &b,
            &JobFilter {
                vm_id: Some(va.id.clone()),
                state: None,
            },
            &PageRequest::all(),
        )
        .await?;
    ensure!(
        jobs.items.is_empty(),
        "beta cannot list alpha's jobs by naming alpha's VM"
    );
    let events_b = EventFilter {
        project: Some(ProjectId::new("beta")),
        ..Default::default()
    };
    store
        .append_event(event(Some("alpha"), Some(&va.id)))
        .await?;
    ensure!(
        store.list_events(&events_b).await?.is_empty(),
        "a project filter never lists another project's events"
    );
    ensure!(
        store
            .find_vm_by_name(&ProjectId::new("beta"), "shared-name")
            .await?
            .is_some_and(|v| v.id == vb.id),
        "names are per project"
    );
    Ok(())
}

/// Appends log lines, also concurrently, and reads them after a sequence number.
///
/// # Errors
/// When numbers repeat, skip, or lines come back out of order.
pub async fn log_sequence_numbers(store: Arc<dyn Store>) -> Result<()> {
    let (_, j) = accepted(&store, store.submit(create("p1", "logs")).await?).await?;
    let first = store
        .append_logs(
            &j.id,
            vec![
                (Utc::now(), LogEntry::new(LogLevel::Info, "one")),
                (Utc::now(), LogEntry::new(LogLevel::Info, "two")),
            ],
        )
        .await?;
    ensure!(
        first.iter().map(|l| l.seq).collect::<Vec<_>>() == [1, 2],
        "the first lines are 1 and 2"
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let id = j.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append_logs(
                    &id,
                    vec![(
                        Utc::now(),
                        LogEntry::new(LogLevel::Info, format!("line {i}")),
                    )],
                )
                .await
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::internal(e.to_string()))??;
    }
    let all = store.job_logs(&j.id, 0).await?;
    let seqs: Vec<u64> = all.iter().map(|l| l.seq).collect();
    ensure!(
        seqs == (1..=22).collect::<Vec<_>>(),
        "22 lines numbered 1..=22 in order: {seqs:?}"
    );
    ensure!(all[1].message == "two", "lines keep their text");
    let after = store.job_logs(&j.id, 20).await?;
    ensure!(
        after.iter().map(|l| l.seq).collect::<Vec<_>>() == [21, 22],
        "lines after 20 are 21 and 22"
    );
    // A batch: two jobs, one of them in two entries, and a missing job that fails only its own
    // entry.
    let (_, k) = accepted(&store, store.submit(create("p1", "logs-2")).await?).await?;
    let line = |m: &str| (Utc::now(), LogEntry::new(LogLevel::Info, m));
    let ghost = JobId::generate();
    let out = store
        .append_logs_batch(vec![
            (j.id.clone(), vec![line("b1")]),
            (k.id.clone(), vec![line("k1"), line("k2")]),
            (ghost.clone(), vec![line("lost")]),
            (j.id.clone(), vec![line("b2")]),
        ])
        .await;
    let numbers = |r: &Result<Vec<crate::JobLogLine>>| {
        r.as_ref()
            .map(|ls| ls.iter().map(|l| l.seq).collect::<Vec<_>>())
            .ok()
    };
    ensure!(out.len() == 4, "a batch of 4 entries gives 4 results");
    ensure!(
        numbers(&out[0]) == Some(vec![23]) && numbers(&out[3]) == Some(vec![24]),
        "a job's entries in one batch continue its numbers in order: {:?} {:?}",
        numbers(&out[0]),
        numbers(&out[3])
    );
    ensure!(
        numbers(&out[1]) == Some(vec![1, 2]),
        "another job in the batch numbers from 1: {:?}",
        numbers(&out[1])
    );
    ensure!(
        matches!(&out[2], Err(e) if e.kind() == ErrorKind::NotFound),
        "a missing job in a batch is NotFound for its own entry"
    );
    let tail: Vec<String> = store
        .job_logs(&j.id, 22)
        .await?
        .into_iter()
        .map(|l| l.message)
        .collect();
    ensure!(
        tail == ["b1", "b2"],
        "batched lines are stored in order: {tail:?}"
    );
    let other: Vec<String> = store
        .job_logs(&k.id, 0)
        .await?
        .into_iter()
        .map(|l| l.message)
        .collect();
    ensure!(
        other == ["k1", "k2"],
        "the other job's batched lines: {other:?}"
    );
    ensure!(
        store.append_logs_batch(Vec::new()).await.is_empty(),
        "an empty batch gives no results"
    );
    ensure!(
        matches!(store.append_logs(&ghost, vec![(Utc::now(), LogEntry::new(LogLevel::Info, "x"))]).await,
            Err(e) if e.kind() == ErrorKind::NotFound),
        "appending to a missing job is NotFound"
    );
    ensure!(
        matches!(store.job_logs(&ghost, 0).await, Err(e) if e.kind() == ErrorKind::NotFound),
        "reading a missing job's log is NotFound"
    );
    Ok(())
}

fn event(project: Option<&str>, vm_id: Option<&VmId>) -> Event {
    Event {
        seq: 999,
        at: Utc::now(),
        project: project.map(ProjectId::new),
        vm_id: vm_id.cloned(),
        principal: Some("alice".into()),
        kind: EventKind::VmCreated {
            resources: Resources {
                vcpus: 1,
                memory_mib: 512,
                disk_gib: 10,
            },
        },
    }
}

/// Appends events, also concurrently, and lists them with cursors and filters.
///
/// # Errors
/// When numbers repeat or skip, or a filter or cursor selects the wrong events.
pub async fn event_sequence_numbers(store: Arc<dyn Store>) -> Result<()> {
    let vm_a = VmId::generate();
    let e1 = store.append_event(event(Some("p1"), Some(&vm_a))).await?;
    ensure!(
        e1.seq == 1,
        "the first event is 1 (the caller's number is ignored), got {}",
        e1.seq
    );
    let mut tasks = Vec::new();
    for i in 0..30 {
        let store = store.clone();
        let project = if i % 2 == 0 { "p1" } else { "p2" };
        tasks.push(tokio::spawn(async move {
            store.append_event(event(Some(project), None)).await
        }));
    }
    let mut seqs = HashSet::new();
    for t in tasks {
        seqs.insert(t.await.map_err(|e| Error::internal(e.to_string()))??.seq);
    }
    ensure!(
        seqs == (2..=31).collect::<HashSet<_>>(),
        "concurrent events get 2..=31 once each"
    );
    let all = store.list_events(&EventFilter::default()).await?;
    ensure!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>() == (1..=31).collect::<Vec<_>>(),
        "events list in sequence order"
    );
    ensure!(
        all[0].as_ref().kind == e1.kind && all[0].vm_id == e1.vm_id,
        "events keep their content"
    );
    let after = store
        .list_events(&EventFilter {
            after: 29,
            ..Default::default()
        })
        .await?;
    ensure!(
        after.iter().map(|e| e.seq).collect::<Vec<_>>() == [30, 31],
        "after 29 come 30 and 31"
    );
    let limited = store
        .list_events(&EventFilter {
            after: 0,
            project: Some(ProjectId::new("p2")),
            vm_id: None,
            limit: 4,
        })
        .await?;
    ensure!(
        limited.len() == 4
            && limited
                .iter()
                .all(|e| e.project.as_ref().map(ProjectId::as_str) == Some("p2"))
            && limited.windows(2).all(|w| w[0].seq < w[1].seq),
        "a project filter with a limit gives that project's first events"
    );
    let by_vm = store
        .list_events(&EventFilter {
            vm_id: Some(vm_a.clone()),
            ..Default::default()
        })
        .await?;
    ensure!(
        by_vm.len() == 1 && by_vm[0].seq == 1,
        "a VM filter selects its events"
    );
    // A batch takes the next numbers in its own order, beside single appends.
    let vm_b = VmId::generate();
    let batch = store
        .append_events(vec![
            event(Some("p3"), Some(&vm_b)),
            event(None, None),
            event(Some("p3"), None),
        ])
        .await;
    let mut numbered = Vec::new();
    for r in batch {
        numbered.push(r?);
    }
    ensure!(
        seqs_of(&numbered) == [32, 33, 34],
        "a batch of 3 after 31 events is 32, 33, 34: {:?}",
        seqs_of(&numbered)
    );
    let listed = store
        .list_events(&EventFilter {
            after: 31,
            ..Default::default()
        })
        .await?;
    ensure!(
        seqs_of(&listed) == [32, 33, 34]
            && listed[0].vm_id.as_ref() == Some(&vm_b)
            && listed[1].project.is_none()
            && listed[2].project.as_ref().map(ProjectId::as_str) == Some("p3"),
        "batched events list in order with their content"
    );
    ensure!(
        store.append_events(Vec::new()).await.is_empty(),
        "an empty batch gives no results"
    );
    Ok(())
}

/// Purges old finished jobs and old idempotency records.
///
/// # Errors
/// When an unfinished or recent job, or a VM, is dropped, or an old one is kept.
pub async fn retention_purge(store: Arc<dyn Store>) -> Result<()> {
    let now = Utc::now();
    let long_ago = now - ChronoDuration::hours(48);
    let (_, old_done) = accepted(
        &store,
        store
            .submit(with_key(create("p1", "old"), "old-key", "f"))
            .await?,
    )
    .await?;
    let (_, new_done) = accepted(&store, store.submit(create("p1", "new")).await?).await?;
    let (_, pending) = accepted(&store, store.submit(create("p1", "pending")).await?).await?;
    store
        .append_logs(
            &old_done.id,
            vec![(now, LogEntry::new(LogLevel::Info, "bye"))],
        )
        .await?;
    for (j, at) in [(&old_done, long_ago), (&new_done, now)] {
        let mut done = j.clone();
        done.transition(JobState::Running, at)?;
        done.transition(JobState::Succeeded, at)?;
        store.update_job(done, j.generation).await?;
    }
    let unfinished = store.unfinished_jobs().await?;
    ensure!(
        unfinished.len() == 1 && unfinished[0].id == pending.id,
        "only the pending job is unfinished"
    );
    let cutoff = now - ChronoDuration::hours(1);
    // Records created before the cutoff go; this one was created now, so move the cutoff past it.
    store
        .purge(cutoff, now + ChronoDuration::seconds(1), None)
        .await?;
    ensure!(
        store.get_job(&Scope::All, &old_done.id).await?.is_none(),
        "a job finished before the cutoff is purged"
    );
    ensure!(
        matches!(store.job_logs(&old_done.id, 0).await, Err(e) if e.kind() == ErrorKind::NotFound),
        "a purged job's log goes with it"
    );
    ensure!(
        store.get_job(&Scope::All, &new_done.id).await?.is_some(),
        "a job finished after the cutoff stays"
    );
    ensure!(
        store.get_job(&Scope::All, &pending.id).await?.is_some(),
        "an unfinished job stays"
    );
    ensure!(
        store.get_vm(&Scope::All, &old_done.vm_id).await?.is_some(),
        "purging jobs never drops VMs"
    );
    let rec = store
        .idempotency(&IdempotencyScope {
            project: ProjectId::new("p1"),
            principal: "alice".into(),
            operation: Operation::CreateVm,
            key: "old-key".into(),
        })
        .await?;
    ensure!(
        rec.is_none(),
        "an idempotency record created before its cutoff is purged"
    );
    let listed = store
        .list_jobs(&Scope::All, &JobFilter::default(), &PageRequest::all())
        .await?;
    ensure!(
        listed.items.len() == 2,
        "two jobs remain listed, found {}",
        listed.items.len()
    );
    Ok(())
}

fn usage(vms: u128, vcpus: u128, memory_mib: u128) -> Usage {
    Usage {
        vms,
        vcpus,
        memory_mib,
    }
}

/// Sends 20 creates at once into a project with a quota of 10 VMs.
///
/// # Errors
/// When more or fewer than 10 are accepted, a refused one writes anything, or the usage is off.
pub async fn quota_under_concurrency(store: Arc<dyn Store>) -> Result<()> {
    let quota = Quota {
        max_vms: Some(10),
        max_vcpus: None,
        max_memory_mib: Some(10 * 512),
    };
    // Another project's VMs count for that project only.
    store.put_vm(vm("other", "elsewhere"), None).await?;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let mut s = with_key(create("q", &format!("q-{i}")), &format!("k-{i}"), "f");
        s.quota = Some(quota);
        tasks.push(tokio::spawn(async move {
            let name = format!("q-{i}");
            (name, store.submit(s).await)
        }));
    }
    let (mut ok, mut refused) = (0, Vec::new());
    for t in tasks {
        let (name, r) = t.await.map_err(|e| Error::internal(e.to_string()))?;
        match r {
            Ok(SubmitOutcome::Accepted { .. }) => ok += 1,
            Ok(SubmitOutcome::Replayed { .. }) => {
                return Err(Error::internal(
                    "store conformance: distinct keys were replayed",
                ));
            }
            Err(e) if e.kind() == ErrorKind::QuotaExceeded => refused.push(name),
            Err(e) => return Err(e),
        }
    }
    ensure!(
        ok == 10 && refused.len() == 10,
        "10 of 20 fit a quota of 10, got {ok}"
    );
    for name in &refused {
        ensure!(
            store
                .find_vm_by_name(&ProjectId::new("q"), name)
                .await?
                .is_none(),
            "a create refused by the quota writes no VM"
        );
    }
    let jobs = store
        .list_jobs(
            &Scope::Project(ProjectId::new("q")),
            &JobFilter::default(),
            &PageRequest::all(),
        )
        .await?;
    ensure!(
        jobs.items.len() == 10,
        "10 jobs exist, found {}",
        jobs.items.len()
    );
    let u = store.usage(&ProjectId::new("q")).await?;
    ensure!(
        u == usage(10, 10, 5120),
        "the usage counts the 10 VMs: {u:?}"
    );
    ensure!(
        store.usage(&ProjectId::new("other")).await? == usage(1, 1, 512),
        "another project's usage is its own"
    );
    // The quota refuses one more; the refusal names the limit.
    let mut s = create("q", "q-more");
    s.quota = Some(quota);
    let r = store.submit(s).await;
    ensure!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::QuotaExceeded),
        "an 11th create is refused: {r:?}"
    );
    // A submission that adds nothing (a power change) passes at the limit.
    let any = store
        .list_vms(&Scope::Project(ProjectId::new("q")), &PageRequest::first(1))
        .await?
        .items
        .into_iter()
        .next()
        .ok_or_else(|| Error::internal("store conformance: no VM listed"))?;
    let mut on = any.clone();
    on.desired_power = PowerState::Stopped;
    let mut j = job(&any);
    j.operation = Operation::StopVm;
    j.action = JobAction::Stop {
        force: false,
        graceful_timeout_secs: 5,
    };
    let stop = Submission {
        idempotency: None,
        vm: VmWrite::Update {
            vm: on,
            expected: any.generation,
        },
        job: j,
        quota: Some(quota),
        fence: None,
        room: None,
    };
    accepted(&store, store.submit(stop).await?).await?;
    Ok(())
}

/// Follows a project's usage through inserts, updates, deletes and removals.
///
/// # Errors
/// When the usage does not match the VMs the store holds.
pub async fn usage_follows_vm_writes(store: Arc<dyn Store>) -> Result<()> {
    let p = ProjectId::new("u");
    ensure!(
        store.usage(&p).await?.is_zero(),
        "an empty project holds nothing"
    );
    let (a, _) = accepted(&store, store.submit(create("u", "a")).await?).await?;
    let mut big = vm("u", "big");
    big.resources = Resources {
        vcpus: 4,
        memory_mib: u64::MAX,
        disk_gib: 1,
    };
    // A VM rebuilt from its host's mark: counted without a quota check, summed without wrapping.
    let big = store.put_vm(big, None).await?;
    let both = usage(2, 5, 512 + u128::from(u64::MAX));
    ensure!(store.usage(&p).await? == both, "inserts add up past u64");
    // Deleting (desired Deleted) releases at once.
    let mut del = a.clone();
    del.desired = DesiredState::Deleted;
    let mut j = job(&a);
    j.operation = Operation::DeleteVm;
    j.action = JobAction::Delete { force: false };
    let quota = Quota {
        max_vms: Some(1),
        ..Quota::default()
    };
    accepted(
        &store,
        store
            .submit(Submission {
                idempotency: None,
                vm: VmWrite::Update {
                    vm: del.clone(),
                    expected: 1,
                },
                job: j,
                quota: Some(quota),
                fence: None,
                room: None,
            })
            .await?,
    )
    .await?;
    ensure!(
        store.usage(&p).await? == usage(1, 4, u128::from(u64::MAX)),
        "a VM being deleted holds nothing"
    );
    // A failed create, or a finished delete, removes the record and releases nothing more.
    store.remove_vm(&a.id, 2).await?;
    ensure!(
        store.usage(&p).await? == usage(1, 4, u128::from(u64::MAX)),
        "removing a deleted VM changes nothing"
    );
    // A failed delete puts the VM back: it holds again (no quota check on the way back).
    let mut back = big.clone();
    back.desired = DesiredState::Deleted;
    let back = store.put_vm(back, Some(1)).await?;
    ensure!(
        store.usage(&p).await?.is_zero(),
        "the big VM being deleted holds nothing"
    );
    let mut again = back.clone();
    again.desired = DesiredState::Error;
    store.put_vm(again, Some(2)).await?;
    ensure!(
        store.usage(&p).await? == usage(1, 4, u128::from(u64::MAX)),
        "a VM back from deletion holds again"
    );
    store.remove_vm(&big.id, 3).await?;
    ensure!(
        store.usage(&p).await?.is_zero(),
        "removing the last VM releases all"
    );
    // A refused write (stale generation) changes no usage.
    let (c, _) = accepted(&store, store.submit(create("u", "c")).await?).await?;
    let mut stale = c.clone();
    stale.desired = DesiredState::Deleted;
    ensure!(
        is_conflict(&store.put_vm(stale, Some(9)).await),
        "a stale write is a conflict"
    );
    ensure!(
        store.usage(&p).await? == usage(1, 1, 512),
        "a refused write changes no usage"
    );
    Ok(())
}

/// The room of the conformance VMs' host (`sim`, `host-1`): `vcpus` and 512 MiB each.
fn room(vcpus: u32) -> HostRoom {
    HostRoom {
        vcpus: u128::from(vcpus),
        memory_mib: u128::from(vcpus) * 512,
    }
}

fn is_no_room(r: &Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::QuotaExceeded && e.code() == CODE_CAPACITY_EXHAUSTED)
}

/// Sends 20 creates of 1 vCPU at once, from two projects, onto a host with room for 10.
///
/// # Errors
/// When more or fewer than 10 are accepted, a refusal is not `CAPACITY_EXHAUSTED` or names the
/// host, a refused one writes anything, or the host's usage is off.
pub async fn host_room_under_concurrency(store: Arc<dyn Store>) -> Result<()> {
    // A VM on another host of the same name under another provider counts there only.
    let mut elsewhere = vm("a", "elsewhere");
    elsewhere.binding.provider = "other".into();
    store.put_vm(elsewhere, None).await?;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let project = if i % 2 == 0 { "a" } else { "b" };
        let mut s = create(project, &format!("h-{i}"));
        s.room = Some(room(10));
        tasks.push(tokio::spawn(async move {
            (project, format!("h-{i}"), store.submit(s).await)
        }));
    }
    let (mut ok, mut refused) = (0, Vec::new());
    for t in tasks {
        let (project, name, r) = t.await.map_err(|e| Error::internal(e.to_string()))?;
        match r {
            Ok(SubmitOutcome::Accepted { .. }) => ok += 1,
            Ok(SubmitOutcome::Replayed { .. }) => {
                return Err(Error::internal("store conformance: a create was replayed"));
            }
            Err(e)
                if e.kind() == ErrorKind::QuotaExceeded && e.code() == CODE_CAPACITY_EXHAUSTED =>
            {
                ensure!(
                    e.is_temporary() && !e.to_string().contains("host-1"),
                    "a full host is a temporary refusal that does not name the host: {e}"
                );
                refused.push((project, name));
            }
            Err(e) => return Err(e),
        }
    }
    ensure!(
        ok == 10 && refused.len() == 10,
        "10 of 20 fit a host with room for 10, got {ok}"
    );
    for (project, name) in &refused {
        ensure!(
            store
                .find_vm_by_name(&ProjectId::new(*project), name)
                .await?
                .is_none(),
            "a create refused for room writes no VM"
        );
    }
    let jobs = store
        .list_jobs(&Scope::All, &JobFilter::default(), &PageRequest::all())
        .await?;
    ensure!(
        jobs.items.len() == 10,
        "10 jobs exist, found {}",
        jobs.items.len()
    );
    let held = store.host_usage("sim", "host-1").await?;
    ensure!(
        held == usage(10, 10, 5120),
        "the host holds the 10 VMs: {held:?}"
    );
    ensure!(
        store.host_usage("other", "host-1").await? == usage(1, 1, 512),
        "another provider's host is its own"
    );
    // Without a room nothing is checked; a room is the room of the VM's own host.
    accepted(&store, store.submit(create("a", "unchecked")).await?).await?;
    let mut s = create("a", "other-host");
    s.vm = match s.vm {
        VmWrite::Insert(mut v) => {
            v.binding.host = "host-2".into();
            VmWrite::Insert(v)
        }
        other => other,
    };
    s.room = Some(room(1));
    accepted(&store, store.submit(s).await?).await?;
    ensure!(
        store.host_usage("sim", "host-2").await? == usage(1, 1, 512),
        "the VM counts on its own host"
    );
    // A larger room admits again.
    let mut s = create("a", "larger");
    s.room = Some(room(13));
    accepted(&store, store.submit(s).await?).await?;
    let mut s = create("a", "full-again");
    s.room = Some(room(12));
    ensure!(
        is_no_room(&store.submit(s).await),
        "a 13th VM does not fit a room of 12"
    );
    Ok(())
}

/// Follows what a host's VMs hold through a create, its failure, success, a move, a resize
/// checked against the room, a delete and a removal.
///
/// # Errors
/// When the host's usage does not match the VMs bound to it.
pub async fn host_usage_follows_vm_writes(store: Arc<dyn Store>) -> Result<()> {
    let held = || async { store.host_usage("sim", "host-1").await };
    ensure!(held().await?.is_zero(), "an empty host holds nothing");
    // A create in flight holds its size.
    let (a, _) = accepted(&store, store.submit(create("p", "a")).await?).await?;
    let (f, _) = accepted(&store, store.submit(create("p", "f")).await?).await?;
    ensure!(held().await? == usage(2, 2, 1024), "creates in flight hold");
    // A failed create (nothing on the host) holds nothing; a created VM holds.
    let mut failed = f.clone();
    failed.desired = DesiredState::Error;
    store.put_vm(failed, Some(1)).await?;
    let mut up = a.clone();
    up.desired = DesiredState::Active;
    up.present = true;
    let up = store.put_vm(up, Some(1)).await?;
    ensure!(
        held().await? == usage(1, 1, 512),
        "a failed create frees its room"
    );
    // A growth is checked against the room and refused whole.
    let mut grown = up.clone();
    grown.resources.vcpus = 4;
    grown.resources.memory_mib = 2048;
    let mut j = job(&up);
    j.operation = Operation::ResizeVm;
    let grow = |vm: Vm, r: HostRoom| Submission {
        idempotency: None,
        vm: VmWrite::Update {
            vm,
            expected: up.generation,
        },
        job: j.clone(),
        quota: None,
        fence: None,
        room: Some(r),
    };
    ensure!(
        is_no_room(&store.submit(grow(grown.clone(), room(3))).await),
        "a growth past the room is refused"
    );
    ensure!(
        store.get_job(&Scope::All, &j.id).await?.is_none() && held().await? == usage(1, 1, 512),
        "a refused growth writes nothing"
    );
    let (grown, _) = accepted(&store, store.submit(grow(grown, room(4))).await?).await?;
    ensure!(
        held().await? == usage(1, 4, 2048),
        "a growth holds the new size"
    );
    // A move: the old host gives back what the new one takes.
    let mut moved = grown.clone();
    moved.binding.host = "host-2".into();
    let moved = store.put_vm(moved, Some(grown.generation)).await?;
    ensure!(
        held().await?.is_zero() && store.host_usage("sim", "host-2").await? == usage(1, 4, 2048),
        "a moved VM counts on its new host only"
    );
    // A delete in flight still holds (the VM is still there); its removal frees.
    let mut del = moved.clone();
    del.desired = DesiredState::Deleted;
    let del = store.put_vm(del, Some(moved.generation)).await?;
    ensure!(
        store.host_usage("sim", "host-2").await? == usage(1, 4, 2048),
        "a VM being deleted holds its host until it is gone"
    );
    store.remove_vm(&del.id, del.generation).await?;
    store.remove_vm(&f.id, 2).await?;
    ensure!(
        store.host_usage("sim", "host-2").await?.is_zero() && held().await?.is_zero(),
        "removed VMs hold nothing"
    );
    Ok(())
}

/// Pages through `list_vms_matching` with pages of `limit`, returning the ids in order.
async fn page_through(
    store: &Arc<dyn Store>,
    scope: &Scope,
    filter: &VmFilter,
    sort: VmSort,
    limit: usize,
) -> Result<Vec<VmId>> {
    let mut seen = Vec::new();
    let mut page = PageRequest::first(limit);
    for _ in 0..100 {
        let p = store.list_vms_matching(scope, filter, sort, &page).await?;
        ensure!(p.items.len() <= limit, "a VM page holds at most its limit");
        ensure!(
            p.next.is_none() || p.items.len() == limit,
            "a page with a next cursor is full"
        );
        seen.extend(p.items.into_iter().map(|v| v.id));
        match p.next {
            Some(c) => page.cursor = Some(c),
            None => return Ok(seen),
        }
    }
    Err(Error::internal(
        "store conformance: filtered VM paging does not end",
    ))
}

/// Filters VMs by name prefix, tags, state and power, combined, in every sort order, and pages
/// through them; checks the result against the same filter and order applied in memory.
///
/// # Errors
/// When a filtered page holds a VM that does not match, misses one that does, comes out of
/// order, repeats or skips a VM while VMs are added and removed between pages, shows another
/// project's VM, or accepts a cursor of another sort order.
pub async fn filtered_sorted_listing(store: Arc<dyn Store>) -> Result<()> {
    let base = Utc::now();
    let mut all: Vec<Vm> = Vec::new();
    // (project, name, tags, state, power, minutes before now)
    type Spec<'a> = (
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        DesiredState,
        PowerState,
        i64,
    );
    let specs: [Spec<'_>; 12] = [
        (
            "p1",
            "web-1",
            &[("env", "prod"), ("tier", "web")],
            DesiredState::Active,
            PowerState::Running,
            5,
        ),
        (
            "p1",
            "web-2",
            &[("env", "prod"), ("tier", "web")],
            DesiredState::Active,
            PowerState::Stopped,
            5,
        ),
        (
            "p1",
            "web-3",
            &[("env", "dev"), ("tier", "web")],
            DesiredState::Active,
            PowerState::Running,
            1,
        ),
        (
            "p1",
            "db-1",
            &[("env", "prod"), ("tier", "db")],
            DesiredState::Active,
            PowerState::Running,
            9,
        ),
        (
            "p1",
            "db-2",
            &[("env", "prod")],
            DesiredState::Error,
            PowerState::Unknown,
            3,
        ),
        (
            "p1",
            "batch",
            &[],
            DesiredState::Pending,
            PowerState::Unknown,
            7,
        ),
        (
            "p1",
            "web-10",
            &[("env", "prod"), ("tier", "web")],
            DesiredState::Pending,
            PowerState::Paused,
            2,
        ),
        (
            "p1",
            "webster",
            &[("env", "=x=")],
            DesiredState::Active,
            PowerState::Running,
            5,
        ),
        (
            "p2",
            "web-1",
            &[("env", "prod"), ("tier", "web")],
            DesiredState::Active,
            PowerState::Running,
            4,
        ),
        (
            "p2",
            "web-9",
            &[("env", "prod")],
            DesiredState::Active,
            PowerState::Running,
            8,
        ),
        (
            "p2",
            "db-1",
            &[("env", "dev")],
            DesiredState::Deleted,
            PowerState::Stopped,
            6,
        ),
        (
            "p3",
            "web-1",
            &[("env", "prod")],
            DesiredState::Active,
            PowerState::Running,
            0,
        ),
    ];
    for (project, name, tags, desired, power, minutes) in specs {
        let mut v = vm(project, name);
        std::sync::Arc::make_mut(&mut v.spec).tags = tags
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        v.desired = desired;
        v.power = power;
        // Equal minutes give equal creation times: ties must be broken by id.
        v.created_at = base - ChronoDuration::minutes(minutes);
        all.push(store.put_vm(v, None).await?);
    }
    let t = |k: &str, v: &str| (k.to_string(), v.to_string());
    let filters = [
        VmFilter::default(),
        VmFilter {
            name_prefix: Some("web-".into()),
            ..VmFilter::default()
        },
        VmFilter {
            name_prefix: Some("we_".into()),
            ..VmFilter::default()
        },
        VmFilter {
            name_prefix: Some("web%".into()),
            ..VmFilter::default()
        },
        VmFilter {
            tags: vec![t("env", "prod")],
            ..VmFilter::default()
        },
        VmFilter {
            tags: vec![t("env", "prod"), t("tier", "web")],
            ..VmFilter::default()
        },
        VmFilter {
            tags: vec![t("env", "prod"), t("env", "dev")],
            ..VmFilter::default()
        },
        VmFilter {
            tags: vec![t("env", "=x=")],
            ..VmFilter::default()
        },
        VmFilter {
            tags: vec![t("tier", "")],
            ..VmFilter::default()
        },
        VmFilter {
            state: Some(DesiredState::Active),
            power: Some(PowerState::Running),
            ..VmFilter::default()
        },
        VmFilter {
            name_prefix: Some("web".into()),
            tags: vec![t("env", "prod")],
            state: Some(DesiredState::Active),
            power: Some(PowerState::Running),
        },
        VmFilter {
            power: Some(PowerState::Paused),
            ..VmFilter::default()
        },
    ];
    let sorts = [
        VmSort::default(),
        VmSort::descending(VmSortKey::Id),
        VmSort::ascending(VmSortKey::Name),
        VmSort::descending(VmSortKey::Name),
        VmSort::ascending(VmSortKey::CreatedAt),
        VmSort::descending(VmSortKey::CreatedAt),
    ];
    let scopes = [
        Scope::All,
        Scope::Project(ProjectId::new("p1")),
        Scope::Projects(vec![ProjectId::new("p2"), ProjectId::new("p3")]),
        Scope::Projects(vec![ProjectId::new("p3")]),
        Scope::Projects(vec![
            ProjectId::new("p3"),
            ProjectId::new("p1"),
            ProjectId::new("p3"),
        ]),
        Scope::Projects(vec![]),
    ];
    for scope in &scopes {
        for filter in &filters {
            for sort in sorts {
                let mut want: Vec<&Vm> = all
                    .iter()
                    .filter(|v| scope.allows(&v.project) && filter.matches(v))
                    .collect();
                want.sort_by(|a, b| sort.compare(&sort.position(a), &sort.position(b)));
                let want: Vec<VmId> = want.into_iter().map(|v| v.id.clone()).collect();
                for limit in [2, 5, 100] {
                    let got = page_through(&store, scope, filter, sort, limit).await?;
                    ensure!(
                        got == want,
                        "{scope:?}, {filter:?}, sort {sort}, pages of {limit}: want {want:?}, got {got:?}"
                    );
                }
            }
        }
    }

    // An empty filter with the default sort lists what list_vms lists, with the same cursors.
    let plain = store.list_vms(&Scope::All, &PageRequest::first(4)).await?;
    let matching = store
        .list_vms_matching(
            &Scope::All,
            &VmFilter::default(),
            VmSort::default(),
            &PageRequest::first(4),
        )
        .await?;
    ensure!(
        plain == matching,
        "the default sort with no filter is list_vms's order and cursor"
    );

    // A tenant's tag filter never reaches another project's VMs.
    let p2_only = page_through(
        &store,
        &Scope::Project(ProjectId::new("p2")),
        &VmFilter {
            tags: vec![t("tier", "web")],
            ..VmFilter::default()
        },
        VmSort::ascending(VmSortKey::Name),
        10,
    )
    .await?;
    ensure!(
        p2_only == vec![all[8].id.clone()],
        "a tag filter in one project's scope sees only that project's VMs, got {p2_only:?}"
    );

    // Paging stays gapless while VMs come and go: sorted by name, two at a time.
    let scope = Scope::Project(ProjectId::new("p1"));
    let filter = VmFilter::default();
    let sort = VmSort::ascending(VmSortKey::Name);
    let first = store
        .list_vms_matching(&scope, &filter, sort, &PageRequest::first(2))
        .await?;
    let mut seen: Vec<Vm> = first.items.clone();
    ensure!(
        seen.iter()
            .map(|v| v.spec.name.as_str())
            .collect::<Vec<_>>()
            == ["batch", "db-1"],
        "p1 by name starts with batch, db-1"
    );
    // Added before the cursor: not shown. Added after: shown. Removed after: absent.
    store.put_vm(vm("p1", "aaa"), None).await?;
    let late = store.put_vm(vm("p1", "zzz"), None).await?;
    let gone = all
        .iter()
        .find(|v| v.project.as_str() == "p1" && v.spec.name == "web-2");
    let gone = gone.ok_or_else(|| Error::internal("store conformance: web-2 missing"))?;
    store.remove_vm(&gone.id, gone.generation).await?;
    let mut page = PageRequest::first(2);
    page.cursor = first.next.clone();
    ensure!(page.cursor.is_some(), "p1 has more than two VMs");
    for _ in 0..20 {
        let p = store
            .list_vms_matching(&scope, &filter, sort, &page)
            .await?;
        seen.extend(p.items);
        match p.next {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    let names: Vec<&str> = seen.iter().map(|v| v.spec.name.as_str()).collect();
    ensure!(
        names
            == [
                "batch", "db-1", "db-2", "web-1", "web-10", "web-3", "webster", "zzz"
            ],
        "paging by name while VMs are added and removed is gapless and without repeats: {names:?}"
    );
    ensure!(
        seen.last().is_some_and(|v| v.id == late.id),
        "a VM added after the cursor is shown"
    );

    // A cursor carries its sort order: one made for another order is refused naming `cursor`.
    let by_time = VmSort::descending(VmSortKey::CreatedAt);
    let mut foreign = PageRequest::first(2);
    foreign.cursor = first.next;
    let r = store
        .list_vms_matching(&scope, &filter, by_time, &foreign)
        .await;
    ensure!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::InvalidSpec && e.field() == Some("cursor")),
        "a cursor of a name sort passed with a time sort is InvalidSpec naming cursor: {r:?}"
    );
    Ok(())
}

// --- The audit stream: retention by time window and the publishing outbox (issue 12). ---
// A section of its own, with its own list and macro, so other parts of the suite can grow
// beside it.

/// The names of the audit stream checks (retention and outbox), in the order
/// [`run_all_event_checks`] runs them.
pub const EVENT_CHECKS: [&str; 2] = ["event_retention_by_time", "event_outbox"];

/// Runs the audit stream check named `name` (one of [`EVENT_CHECKS`]) on `store`.
///
/// # Errors
/// The check's failure, or `Internal` for an unknown name.
pub async fn run_event_check(name: &str, store: Arc<dyn Store>) -> Result<()> {
    let r = match name {
        "event_retention_by_time" => event_retention_by_time(store).await,
        "event_outbox" => event_outbox(store).await,
        other => return Err(Error::internal(format!("no event check named `{other}`"))),
    };
    r.map_err(|e| e.with_context("check", name))
}

/// Runs every audit stream check, each on a fresh store from `fresh`.
///
/// # Errors
/// The first failed check, naming it.
pub async fn run_all_event_checks<F, Fut>(fresh: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    for name in EVENT_CHECKS {
        run_event_check(name, fresh().await).await?;
    }
    Ok(())
}

/// Writes one `#[tokio::test]` per audit stream check ([`EVENT_CHECKS`]); `$fresh` is an async
/// function returning a fresh, empty `Arc<dyn Store>`, as for
/// [`store_conformance_tests!`](crate::store_conformance_tests).
#[macro_export]
macro_rules! store_event_conformance_tests {
    ($fresh:path) => {
        $crate::store_event_conformance_tests!(@each $fresh; event_retention_by_time, event_outbox);
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = $fresh().await;
                if let Err(e) = $crate::testkit::store::run_event_check(stringify!($name), store).await {
                    panic!("{e:#}");
                }
            }
        )*
    };
}

fn event_at(project: &str, at: chrono::DateTime<Utc>) -> Event {
    let mut e = event(Some(project), None);
    e.at = at;
    e
}

fn seqs_of(events: &[Arc<Event>]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

/// Drops events older than a cutoff by their time, keeping newer ones and their numbers.
///
/// # Errors
/// When an event before the cutoff stays, one at or after it goes, the count is wrong, numbers
/// are reused, or a purged event stays in the outbox.
pub async fn event_retention_by_time(store: Arc<dyn Store>) -> Result<()> {
    let now = Utc::now();
    let old = now - ChronoDuration::hours(48);
    let cutoff = now - ChronoDuration::hours(1);
    // Old and new interleaved: retention goes by time, not by number.
    for at in [old, now, old, cutoff, old] {
        store.append_event(event_at("p1", at)).await?;
    }
    let dropped = store.purge_events(cutoff, None).await?;
    ensure!(
        dropped == 3,
        "three events happened before the cutoff, {dropped} dropped"
    );
    let left = store.list_events(&EventFilter::default()).await?;
    ensure!(
        seqs_of(&left) == [2, 4],
        "the events at or after the cutoff stay with their numbers, found {:?}",
        seqs_of(&left)
    );
    ensure!(
        left[1].at == cutoff || (left[1].at - cutoff).num_microseconds() == Some(0),
        "an event keeps its time"
    );
    let unpublished = store.unpublished_events(100).await?;
    ensure!(
        seqs_of(&unpublished) == [2, 4],
        "purged events leave the outbox too, found {:?}",
        seqs_of(&unpublished)
    );
    let next = store.append_event(event_at("p1", now)).await?;
    ensure!(
        next.seq == 6,
        "numbers are never reused after a purge, got {}",
        next.seq
    );
    ensure!(
        store.purge_events(cutoff, None).await? == 0,
        "a second purge with the same cutoff drops nothing"
    );
    let after = store
        .list_events(&EventFilter {
            after: 2,
            ..Default::default()
        })
        .await?;
    ensure!(
        seqs_of(&after) == [4, 6],
        "a reader's cursor stays valid across a purge, found {:?}",
        seqs_of(&after)
    );
    Ok(())
}

/// Appends events (also concurrently), reads them from the outbox in order, marks some
/// published, and marks again.
///
/// # Errors
/// When an appended event is missing from the outbox or there twice, the order or limit is
/// wrong, a marked event comes back, marking an unknown number fails, or marking drops the
/// event itself.
pub async fn event_outbox(store: Arc<dyn Store>) -> Result<()> {
    ensure!(
        store.unpublished_events(10).await?.is_empty(),
        "a fresh store's outbox is empty"
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let project = if i % 2 == 0 { "p1" } else { "p2" };
        tasks.push(tokio::spawn(async move {
            store.append_event(event(Some(project), None)).await
        }));
    }
    for t in tasks {
        t.await.map_err(|e| Error::internal(e.to_string()))??;
    }
    let all = store.unpublished_events(1000).await?;
    ensure!(
        seqs_of(&all) == (1..=20).collect::<Vec<_>>(),
        "every appended event is in the outbox once, in order, found {:?}",
        seqs_of(&all)
    );
    ensure!(
        all.iter().all(|e| e.principal.as_deref() == Some("alice")),
        "outbox events keep their content"
    );
    let first = store.unpublished_events(3).await?;
    ensure!(
        seqs_of(&first) == [1, 2, 3],
        "a limit gives the oldest, found {:?}",
        seqs_of(&first)
    );
    ensure!(
        seqs_of(&store.unpublished_events(3).await?) == [1, 2, 3],
        "reading does not consume: unmarked events come again"
    );
    ensure!(
        store.unpublished_events(0).await?.len() == 1,
        "a limit of 0 is clamped to 1"
    );
    store.mark_published(&[1, 2, 3, 5, 999_999]).await?;
    let rest = store.unpublished_events(1000).await?;
    ensure!(
        seqs_of(&rest) == [4].into_iter().chain(6..=20).collect::<Vec<_>>(),
        "marked events leave the outbox (unknown numbers ignored), found {:?}",
        seqs_of(&rest)
    );
    store.mark_published(&[1, 2]).await?;
    store.mark_published(&[]).await?;
    let all_events = store.list_events(&EventFilter::default()).await?;
    ensure!(
        seqs_of(&all_events) == (1..=20).collect::<Vec<_>>(),
        "marking published keeps the events themselves"
    );
    let more = store.append_event(event(Some("p1"), None)).await?;
    let rest = store.unpublished_events(1000).await?;
    ensure!(
        rest.last().map(|e| e.seq) == Some(more.seq) && rest.len() == 17,
        "a new event joins the outbox behind the unmarked ones"
    );
    let seqs: Vec<u64> = seqs_of(&rest);
    store.mark_published(&seqs).await?;
    ensure!(
        store.unpublished_events(1000).await?.is_empty(),
        "marking everything empties the outbox"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server groups: their own checks, run by `store_group_conformance_tests!` (a store crate calls
// it next to `store_conformance_tests!`).

/// The names of the server-group checks, in the order [`run_all_groups`] runs them.
pub const GROUP_CHECKS: [&str; 3] = [
    "server_group_crud_and_scopes",
    "server_group_members_follow_vms",
    "server_group_hard_policy_in_submit",
];

/// Runs the server-group check named `name` (one of [`GROUP_CHECKS`]) on `store`.
///
/// # Errors
/// The check's failure, or `Internal` for an unknown name.
pub async fn run_group_check(name: &str, store: Arc<dyn Store>) -> Result<()> {
    let r = match name {
        "server_group_crud_and_scopes" => server_group_crud_and_scopes(store).await,
        "server_group_members_follow_vms" => server_group_members_follow_vms(store).await,
        "server_group_hard_policy_in_submit" => server_group_hard_policy_in_submit(store).await,
        other => return Err(Error::internal(format!("no store check named `{other}`"))),
    };
    r.map_err(|e| e.with_context("check", name))
}

/// Runs every server-group check, each on a fresh store from `fresh`.
///
/// # Errors
/// The first failed check, naming it.
pub async fn run_all_groups<F, Fut>(fresh: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    for name in GROUP_CHECKS {
        run_group_check(name, fresh().await).await?;
    }
    Ok(())
}

/// Writes one `#[tokio::test]` per server-group check (see [`GROUP_CHECKS`]); `$fresh` is as
/// for [`store_conformance_tests!`](crate::store_conformance_tests).
#[macro_export]
macro_rules! store_group_conformance_tests {
    ($fresh:path) => {
        $crate::store_group_conformance_tests!(@each $fresh;
            server_group_crud_and_scopes, server_group_members_follow_vms,
            server_group_hard_policy_in_submit);
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = $fresh().await;
                if let Err(e) = $crate::testkit::store::run_group_check(stringify!($name), store).await {
                    panic!("{e:#}");
                }
            }
        )*
    };
}

fn group(project: &str, name: &str, policy: GroupPolicy, strength: GroupStrength) -> ServerGroup {
    ServerGroup::new(ProjectId::new(project), name, policy, strength)
}

/// A create submission of a VM of `project` in `group`, bound to `host`.
fn create_in(project: &str, name: &str, group: &ServerGroupId, host: &str) -> Submission {
    let mut s = create(project, name);
    if let VmWrite::Insert(v) = &mut s.vm {
        std::sync::Arc::make_mut(&mut v.spec).server_group = Some(group.clone());
        v.binding.host = host.into();
    }
    s
}

/// Creates, reads, lists and deletes groups: names unique per project, generation 1, scopes
/// isolate projects, paging is gapless.
///
/// # Errors
/// When a group is visible outside its project, a duplicate name is accepted, or a deleted
/// group is still found.
pub async fn server_group_crud_and_scopes(store: Arc<dyn Store>) -> Result<()> {
    let a = Scope::Project(ProjectId::new("alpha"));
    let b = Scope::Project(ProjectId::new("beta"));
    let web = store
        .create_server_group(group(
            "alpha",
            "web",
            GroupPolicy::AntiAffinity,
            GroupStrength::Hard,
        ))
        .await?;
    ensure!(web.generation == 1, "a new group has generation 1");
    ensure!(web.members.is_empty(), "a new group has no members");
    let dup = store
        .create_server_group(group(
            "alpha",
            "web",
            GroupPolicy::Affinity,
            GroupStrength::Soft,
        ))
        .await;
    ensure!(
        matches!(&dup, Err(e) if e.kind() == ErrorKind::Conflict && e.field() == Some("name")),
        "a second group named `web` in one project is a conflict naming `name`: {dup:?}"
    );
    let other = store
        .create_server_group(group(
            "beta",
            "web",
            GroupPolicy::Affinity,
            GroupStrength::Soft,
        ))
        .await?;
    let got = store.get_server_group(&a, &web.id).await?;
    ensure!(
        got.as_ref().is_some_and(|g| g.name == "web"
            && g.policy == GroupPolicy::AntiAffinity
            && g.strength == GroupStrength::Hard
            && g.project.as_str() == "alpha"),
        "alpha reads its group as written: {got:?}"
    );
    ensure!(
        store.get_server_group(&b, &web.id).await?.is_none(),
        "beta never sees alpha's group"
    );
    let del = store.delete_server_group(&b, &web.id).await;
    ensure!(
        matches!(&del, Err(e) if e.kind() == ErrorKind::NotFound),
        "beta cannot delete alpha's group: {del:?}"
    );
    for i in 0..4 {
        store
            .create_server_group(group(
                "alpha",
                &format!("g-{i}"),
                GroupPolicy::Affinity,
                GroupStrength::Soft,
            ))
            .await?;
    }
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let p = store.list_server_groups(&a, &page).await?;
        ensure!(p.items.len() <= 2, "a page holds at most its limit");
        seen.extend(p.items.into_iter().map(|g| g.id));
        match p.next {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    ensure!(
        seen.len() == 5 && seen == sorted,
        "paging alpha's groups returns its 5 groups once each, by id: {seen:?}"
    );
    ensure!(
        !seen.contains(&other.id),
        "alpha's list never holds beta's group"
    );
    let all = store
        .list_server_groups(&Scope::All, &PageRequest::all())
        .await?;
    ensure!(all.items.len() == 6, "the all scope lists every group");
    let gone = store.delete_server_group(&a, &web.id).await?;
    ensure!(gone.id == web.id, "delete returns the group");
    ensure!(
        store.get_server_group(&a, &web.id).await?.is_none(),
        "a deleted group is gone"
    );
    store
        .create_server_group(group(
            "alpha",
            "web",
            GroupPolicy::Affinity,
            GroupStrength::Soft,
        ))
        .await?;
    Ok(())
}

/// VMs created into a group are its members until their records are removed; a group with
/// members cannot be deleted; a VM cannot join another project's group or a missing one.
///
/// # Errors
/// When membership does not follow VM writes or a non-empty group is deleted.
pub async fn server_group_members_follow_vms(store: Arc<dyn Store>) -> Result<()> {
    let a = Scope::Project(ProjectId::new("alpha"));
    let g = store
        .create_server_group(group(
            "alpha",
            "pool",
            GroupPolicy::AntiAffinity,
            GroupStrength::Soft,
        ))
        .await?;
    let (v1, _) = accepted(
        &store,
        store
            .submit(create_in("alpha", "m-1", &g.id, "host-1"))
            .await?,
    )
    .await?;
    let (v2, _) = accepted(
        &store,
        store
            .submit(create_in("alpha", "m-2", &g.id, "host-1"))
            .await?,
    )
    .await?;
    let got = store.get_server_group(&a, &g.id).await?;
    let mut want = vec![v1.id.clone(), v2.id.clone()];
    want.sort();
    ensure!(
        got.as_ref().is_some_and(|x| x.members == want),
        "the group's members are its VMs, by id: {got:?}"
    );
    let listed = store.list_server_groups(&a, &PageRequest::all()).await?;
    ensure!(
        listed.items.first().is_some_and(|x| x.members == want),
        "a listed group carries its members"
    );
    let foreign = store
        .submit(create_in("beta", "m-1", &g.id, "host-2"))
        .await;
    ensure!(
        matches!(&foreign, Err(e) if e.kind() == ErrorKind::NotFound && e.field() == Some("server_group")),
        "a VM of beta cannot join alpha's group: {foreign:?}"
    );
    let missing = store
        .submit(create_in(
            "alpha",
            "m-3",
            &ServerGroupId::new("sg-missing"),
            "host-2",
        ))
        .await;
    ensure!(
        matches!(&missing, Err(e) if e.kind() == ErrorKind::NotFound && e.field() == Some("server_group")),
        "a VM cannot join a missing group: {missing:?}"
    );
    ensure!(
        store
            .find_vm_by_name(&ProjectId::new("alpha"), "m-3")
            .await?
            .is_none(),
        "a refused submission writes no VM"
    );
    let busy = store.delete_server_group(&a, &g.id).await;
    ensure!(
        matches!(&busy, Err(e) if e.kind() == ErrorKind::Conflict && e.code() == CODE_SERVER_GROUP_NOT_EMPTY),
        "a group with members is not deleted: {busy:?}"
    );
    store.remove_vm(&v1.id, v1.generation).await?;
    let got = store.get_server_group(&a, &g.id).await?;
    ensure!(
        got.as_ref()
            .is_some_and(|x| x.members == vec![v2.id.clone()]),
        "a removed VM leaves its group: {got:?}"
    );
    store.remove_vm(&v2.id, v2.generation).await?;
    store.delete_server_group(&a, &g.id).await?;
    Ok(())
}

/// A submission that would break a hard policy is refused with `SERVER_GROUP_POLICY` and writes
/// nothing; of concurrent creates onto one host of a hard anti-affinity group exactly one is
/// accepted; soft groups take any host.
///
/// # Errors
/// When a hard policy is broken.
pub async fn server_group_hard_policy_in_submit(store: Arc<dyn Store>) -> Result<()> {
    let anti = store
        .create_server_group(group(
            "alpha",
            "anti",
            GroupPolicy::AntiAffinity,
            GroupStrength::Hard,
        ))
        .await?;
    accepted(
        &store,
        store
            .submit(create_in("alpha", "a-1", &anti.id, "host-1"))
            .await?,
    )
    .await?;
    // A VM's unfinished jobs come from the claim rules' index: the create just accepted.
    let a1 = store
        .find_vm_by_name(&ProjectId::new("alpha"), "a-1")
        .await?
        .ok_or_else(|| Error::internal("store conformance: a-1 was not stored"))?;
    let open = store.unfinished_jobs_of(&a1.id).await?;
    ensure!(
        open.len() == 1 && open[0].vm_id == a1.id && !open[0].state.is_terminal(),
        "unfinished_jobs_of lists the VM's one pending create: {open:?}"
    );
    let second = create_in("alpha", "a-2", &anti.id, "host-1");
    let job_id = second.job.id.clone();
    let r = store.submit(second).await;
    ensure!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::Conflict && e.code() == CODE_SERVER_GROUP_POLICY),
        "a second member on host-1 of a hard anti-affinity group is refused: {r:?}"
    );
    ensure!(
        store.get_job(&Scope::All, &job_id).await?.is_none()
            && store
                .find_vm_by_name(&ProjectId::new("alpha"), "a-2")
                .await?
                .is_none(),
        "a refused member writes neither VM nor job"
    );
    accepted(
        &store,
        store
            .submit(create_in("alpha", "a-2", &anti.id, "host-2"))
            .await?,
    )
    .await?;

    // Inside a cluster target, the policy holds per member host.
    let on_member = |name: &str, member: &str| {
        let mut s = create_in("alpha", name, &anti.id, "cluster-1");
        if let VmWrite::Insert(v) = &mut s.vm {
            v.binding.member_host = Some(member.into());
        }
        s
    };
    accepted(&store, store.submit(on_member("c-1", "m-1")).await?).await?;
    accepted(&store, store.submit(on_member("c-2", "m-2")).await?).await?;
    let r = store.submit(on_member("c-3", "m-1")).await;
    ensure!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::Conflict && e.code() == CODE_SERVER_GROUP_POLICY),
        "a second member on member host m-1 of cluster-1 is refused: {r:?}"
    );

    // Concurrent creates onto one host: exactly one wins.
    let race = store
        .create_server_group(group(
            "alpha",
            "race",
            GroupPolicy::AntiAffinity,
            GroupStrength::Hard,
        ))
        .await?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let s = create_in("alpha", &format!("r-{i}"), &race.id, "host-9");
        tasks.push(tokio::spawn(async move { store.submit(s).await }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(SubmitOutcome::Accepted { .. })) => won += 1,
            Ok(Ok(SubmitOutcome::Replayed { .. })) => {
                return Err(Error::internal(
                    "store conformance: a keyless create replayed",
                ));
            }
            Ok(Err(e)) => ensure!(
                e.kind() == ErrorKind::Conflict,
                "a losing concurrent create is a conflict, not {e}"
            ),
            Err(e) => return Err(Error::internal(format!("a task panicked: {e}"))),
        }
    }
    ensure!(
        won == 1,
        "exactly one concurrent create onto host-9 is accepted, not {won}"
    );

    let aff = store
        .create_server_group(group(
            "alpha",
            "aff",
            GroupPolicy::Affinity,
            GroupStrength::Hard,
        ))
        .await?;
    accepted(
        &store,
        store
            .submit(create_in("alpha", "f-1", &aff.id, "host-1"))
            .await?,
    )
    .await?;
    accepted(
        &store,
        store
            .submit(create_in("alpha", "f-2", &aff.id, "host-1"))
            .await?,
    )
    .await?;
    let r = store
        .submit(create_in("alpha", "f-3", &aff.id, "host-2"))
        .await;
    ensure!(
        matches!(&r, Err(e) if e.code() == CODE_SERVER_GROUP_POLICY),
        "a hard affinity member on another host is refused: {r:?}"
    );

    let soft = store
        .create_server_group(group(
            "alpha",
            "soft",
            GroupPolicy::AntiAffinity,
            GroupStrength::Soft,
        ))
        .await?;
    accepted(
        &store,
        store
            .submit(create_in("alpha", "s-1", &soft.id, "host-1"))
            .await?,
    )
    .await?;
    accepted(
        &store,
        store
            .submit(create_in("alpha", "s-2", &soft.id, "host-1"))
            .await?,
    )
    .await?;
    Ok(())
}

// ---- Job leases ------------------------------------------------------------------------------
// The checks of the lease methods: claims, fencing tokens, expiry and renewal.

/// The names of the lease checks, in the order [`run_all`] runs them (after [`CHECKS`]).
pub const LEASE_CHECKS: [&str; 5] = [
    "lease_claim_has_one_winner",
    "lease_one_active_job_per_vm",
    "lease_expiry_and_reclaim",
    "lease_stale_token_is_refused",
    "lease_renew_by_non_holder_is_refused",
];

async fn run_lease_check(name: &str, store: Arc<dyn Store>) -> Result<()> {
    match name {
        "lease_claim_has_one_winner" => lease_claim_has_one_winner(store).await,
        "lease_one_active_job_per_vm" => lease_one_active_job_per_vm(store).await,
        "lease_expiry_and_reclaim" => lease_expiry_and_reclaim(store).await,
        "lease_stale_token_is_refused" => lease_stale_token_is_refused(store).await,
        "lease_renew_by_non_holder_is_refused" => lease_renew_by_non_holder_is_refused(store).await,
        other => Err(Error::internal(format!("no store check named `{other}`"))),
    }
}

fn in_secs(secs: i64) -> chrono::DateTime<Utc> {
    Utc::now() + ChronoDuration::seconds(secs)
}

fn is_lease_lost(r: &Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::Conflict && e.code() == crate::CODE_LEASE_LOST)
}

async fn stored_vm(store: &Arc<dyn Store>, id: &VmId) -> Result<Vm> {
    store
        .get_vm(&Scope::All, id)
        .await?
        .ok_or_else(|| Error::internal(format!("store conformance: vm `{id}` vanished")))
}

async fn stored_job(store: &Arc<dyn Store>, id: &JobId) -> Result<Job> {
    store
        .get_job(&Scope::All, id)
        .await?
        .ok_or_else(|| Error::internal(format!("store conformance: job `{id}` vanished")))
}

/// Submits a second job on `vm` (an update of the VM), returning the job.
async fn another_job(store: &Arc<dyn Store>, vm: &Vm) -> Result<Job> {
    let cur = stored_vm(store, &vm.id).await?;
    let expected = cur.generation;
    let mut j = job(&cur);
    j.operation = Operation::StartVm;
    j.action = JobAction::Start;
    let (_, j) = accepted(
        store,
        store
            .submit(Submission {
                idempotency: None,
                vm: VmWrite::Update { vm: cur, expected },
                job: j,
                quota: None,
                fence: None,
                room: None,
            })
            .await?,
    )
    .await?;
    Ok(j)
}

/// Ends a job through fenced writes with `token` (PENDING → RUNNING → SUCCEEDED).
async fn finish_fenced(store: &Arc<dyn Store>, id: &JobId, token: u64) -> Result<Job> {
    let mut j = stored_job(store, id).await?;
    let g = j.generation;
    j.transition(JobState::Running, Utc::now())?;
    let mut j = store.update_job_fenced(j, g, token).await?;
    let g = j.generation;
    j.transition(JobState::Succeeded, Utc::now())?;
    store.update_job_fenced(j, g, token).await
}

/// Claims one job from 10 tasks at once.
///
/// # Errors
/// When more or fewer than one claim wins, the token is not 1, or the stored lease is not the
/// winner's.
pub async fn lease_claim_has_one_winner(store: Arc<dyn Store>) -> Result<()> {
    let (_, j) = accepted(&store, store.submit(create("p1", "lease-one")).await?).await?;
    ensure!(j.lease.is_none(), "a submitted job has no lease: {j:?}");
    let mut tasks = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        let id = j.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .claim_job(&id, &format!("worker-{i}"), in_secs(60))
                .await
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        if let Some(job) = t.await.map_err(|e| Error::internal(e.to_string()))?? {
            won.push(job);
        }
    }
    ensure!(
        won.len() == 1,
        "exactly one of 10 concurrent claims wins, got {}",
        won.len()
    );
    let lease = won[0]
        .lease
        .clone()
        .ok_or_else(|| Error::internal("store conformance: a claimed job carries its lease"))?;
    ensure!(lease.token == 1, "the first claim's token is 1: {lease:?}");
    let cur = stored_job(&store, &j.id).await?;
    ensure!(
        cur.lease.as_ref() == Some(&lease) && cur.generation == 2,
        "the stored job carries the winner's lease and a bumped generation: {cur:?}"
    );
    ensure!(
        cur.state == JobState::Pending,
        "a claim leaves the state alone: {cur:?}"
    );
    let r = store
        .claim_job(&JobId::new("job-missing"), "w", in_secs(60))
        .await;
    ensure!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::NotFound),
        "claiming a missing job is NotFound: {r:?}"
    );
    Ok(())
}

/// Claims the jobs of several VMs, two jobs each, from many tasks at once.
///
/// # Errors
/// When two jobs of one VM are claimed at once, a later job is claimed before the earlier one
/// ended, the earlier one's end does not free the later one, or the claimable jobs are not the
/// oldest first, cut at the limit.
pub async fn lease_one_active_job_per_vm(store: Arc<dyn Store>) -> Result<()> {
    let mut pairs = Vec::new();
    for n in 0..5 {
        let (v, first) = accepted(
            &store,
            store.submit(create("p1", &format!("lease-vm-{n}"))).await?,
        )
        .await?;
        let second = another_job(&store, &v).await?;
        pairs.push((first, second));
    }
    let claimable = store.claimable_jobs(Utc::now(), 100).await?;
    let ids: HashSet<&JobId> = claimable.iter().map(|j| &j.id).collect();
    ensure!(
        pairs
            .iter()
            .all(|(a, b)| ids.contains(&a.id) && !ids.contains(&b.id)),
        "only the oldest job of each VM is claimable: {ids:?}"
    );
    // Oldest first, and a limit keeps the oldest.
    ensure!(
        claimable.windows(2).all(|w| w[0].id < w[1].id),
        "claimable jobs come oldest first"
    );
    for limit in [0, 1, 3] {
        let some = store.claimable_jobs(Utc::now(), limit).await?;
        ensure!(
            some.iter()
                .map(|j| &j.id)
                .eq(claimable.iter().take(limit).map(|j| &j.id)),
            "a limit of {limit} keeps the {limit} oldest claimable jobs, in order"
        );
    }
    let mut tasks = Vec::new();
    for (i, (a, b)) in pairs.iter().enumerate() {
        for (k, id) in [&a.id, &b.id, &a.id, &b.id].into_iter().enumerate() {
            let store = store.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .claim_job(&id, &format!("worker-{i}-{k}"), in_secs(60))
                    .await
            }));
        }
    }
    let mut won = Vec::new();
    for t in tasks {
        if let Some(job) = t.await.map_err(|e| Error::internal(e.to_string()))?? {
            won.push(job);
        }
    }
    for (a, b) in &pairs {
        let n = won.iter().filter(|j| j.vm_id == a.vm_id).count();
        ensure!(n == 1, "one claim per VM wins, got {n} on {}", a.vm_id);
        ensure!(
            won.iter().all(|j| j.id != b.id),
            "a VM's later job is not claimed while an earlier one is unfinished"
        );
    }
    let (a, b) = &pairs[0];
    let token = won
        .iter()
        .find(|j| j.id == a.id)
        .and_then(|j| j.lease.as_ref())
        .map(|l| l.token)
        .ok_or_else(|| Error::internal("store conformance: the winner carries its lease"))?;
    finish_fenced(&store, &a.id, token).await?;
    let next = store.claim_job(&b.id, "worker-next", in_secs(60)).await?;
    ensure!(
        next.is_some(),
        "a VM's next job is claimable once the earlier one ended"
    );
    Ok(())
}

/// Lets a lease lapse and claims the job again.
///
/// # Errors
/// When an active lease is taken by another holder, a lapsed or released one is not, or a new
/// claim's token is not greater.
pub async fn lease_expiry_and_reclaim(store: Arc<dyn Store>) -> Result<()> {
    let (_, j) = accepted(&store, store.submit(create("p1", "lease-expiry")).await?).await?;
    let a = store
        .claim_job(&j.id, "worker-a", in_secs(60))
        .await?
        .ok_or_else(|| Error::internal("store conformance: a fresh job is claimable"))?;
    ensure!(
        store
            .claim_job(&j.id, "worker-b", in_secs(60))
            .await?
            .is_none(),
        "an active lease is not claimed by another holder"
    );
    ensure!(
        store.claimable_jobs(Utc::now(), 100).await?.is_empty(),
        "a job under an active lease is not claimable"
    );
    // Worker A's lease lapses (renewed into the past: no waiting on the clock).
    let token_a = a.lease.as_ref().map_or(0, |l| l.token);
    store
        .renew_lease(&j.id, "worker-a", token_a, in_secs(-1))
        .await?;
    let listed = store.claimable_jobs(Utc::now(), 100).await?;
    ensure!(
        listed.len() == 1 && listed[0].id == j.id,
        "a lapsed job is claimable: {listed:?}"
    );
    let b = store
        .claim_job(&j.id, "worker-b", in_secs(60))
        .await?
        .ok_or_else(|| Error::internal("store conformance: a lapsed lease is claimable"))?;
    let token_b = b.lease.as_ref().map_or(0, |l| l.token);
    ensure!(
        token_b > token_a,
        "a reclaim's token is greater: {token_a} then {token_b}"
    );
    // A released lease is claimable at once, with a greater token again.
    store.release_lease(&j.id, "worker-b", token_b).await?;
    let c = store
        .claim_job(&j.id, "worker-c", in_secs(60))
        .await?
        .ok_or_else(|| Error::internal("store conformance: a released lease is claimable"))?;
    let token_c = c.lease.as_ref().map_or(0, |l| l.token);
    ensure!(
        token_c > token_b && c.lease.as_ref().is_some_and(|l| &*l.holder == "worker-c"),
        "the claim after a release holds a greater token: {c:?}"
    );
    // An ended job is never claimed again.
    finish_fenced(&store, &j.id, token_c).await?;
    store.release_lease(&j.id, "worker-c", token_c).await?;
    ensure!(
        store
            .claim_job(&j.id, "worker-d", in_secs(60))
            .await?
            .is_none(),
        "an ended job is not claimable"
    );
    Ok(())
}

/// Writes a job with a stale token after another worker claimed it.
///
/// # Errors
/// When the stale write succeeds, is not `LEASE_LOST`, or changes anything.
pub async fn lease_stale_token_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let (_, j) = accepted(&store, store.submit(create("p1", "lease-stale")).await?).await?;
    let mut never = j.clone();
    never.progress = 5;
    let r = store.update_job_fenced(never, j.generation, 1).await;
    ensure!(
        is_lease_lost(&r),
        "a fenced write on a never-claimed job is LEASE_LOST: {r:?}"
    );
    let a = store
        .claim_job(&j.id, "worker-a", in_secs(-1))
        .await?
        .ok_or_else(|| Error::internal("store conformance: a fresh job is claimable"))?;
    let token_a = a.lease.as_ref().map_or(0, |l| l.token);
    let b = store
        .claim_job(&j.id, "worker-b", in_secs(60))
        .await?
        .ok_or_else(|| Error::internal("store conformance: a lapsed lease is claimable"))?;
    let token_b = b.lease.as_ref().map_or(0, |l| l.token);
    let before = stored_job(&store, &j.id).await?;
    let mut stale = before.clone();
    stale.transition(JobState::Running, Utc::now())?;
    stale.progress = 42;
    let r = store
        .update_job_fenced(stale.clone(), before.generation, token_a)
        .await;
    ensure!(
        is_lease_lost(&r) && r.as_ref().is_err_and(|e| !e.is_temporary()),
        "a write with a stale token is refused with a permanent LEASE_LOST: {r:?}"
    );
    ensure!(
        stored_job(&store, &j.id).await? == before,
        "a refused stale write changes nothing"
    );
    let written = store
        .update_job_fenced(stale, before.generation, token_b)
        .await?;
    ensure!(
        written.progress == 42 && written.generation == before.generation + 1,
        "the holder's fenced write is stored: {written:?}"
    );
    ensure!(
        written.lease.as_ref().is_some_and(|l| l.token == token_b),
        "a fenced write keeps the lease: {written:?}"
    );
    // An unfenced write keeps the stored lease whatever the record carries.
    let mut plain = written.clone();
    plain.lease = None;
    plain.progress = 43;
    let plain = store.update_job(plain, written.generation).await?;
    let cur = stored_job(&store, &j.id).await?;
    ensure!(
        cur.lease == written.lease && plain.lease == written.lease,
        "update_job keeps the stored lease: {cur:?}"
    );
    Ok(())
}

/// Renews a lease as its holder, as another holder and with a wrong token.
///
/// # Errors
/// When anyone but the holder with its token renews, or the holder cannot.
pub async fn lease_renew_by_non_holder_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let (_, j) = accepted(&store, store.submit(create("p1", "lease-renew")).await?).await?;
    let a = store
        .claim_job(&j.id, "worker-a", in_secs(60))
        .await?
        .ok_or_else(|| Error::internal("store conformance: a fresh job is claimable"))?;
    let token = a.lease.as_ref().map_or(0, |l| l.token);
    let r = store
        .renew_lease(&j.id, "worker-b", token, in_secs(120))
        .await;
    ensure!(is_lease_lost(&r), "another holder cannot renew: {r:?}");
    let r = store
        .renew_lease(&j.id, "worker-a", token + 1, in_secs(120))
        .await;
    ensure!(is_lease_lost(&r), "a wrong token cannot renew: {r:?}");
    let r = store.release_lease(&j.id, "worker-b", token).await;
    ensure!(is_lease_lost(&r), "another holder cannot release: {r:?}");
    ensure!(
        stored_job(&store, &j.id).await?.lease == a.lease,
        "refused renewals change nothing"
    );
    let until = in_secs(120);
    let renewed = store.renew_lease(&j.id, "worker-a", token, until).await?;
    ensure!(
        renewed.token == token
            && (renewed.until - until).num_milliseconds().abs() < 1
            && &*renewed.holder == "worker-a",
        "the holder renews its lease: {renewed:?}"
    );
    let r = store
        .renew_lease(&JobId::new("job-missing"), "worker-a", token, until)
        .await;
    ensure!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::NotFound),
        "renewing a missing job's lease is NotFound: {r:?}"
    );
    // Once the job ended, its lease has lapsed and is not renewed; releasing it still answers.
    let ended = finish_fenced(&store, &j.id, token).await?;
    let lapsed = |job: &Job| {
        job.lease
            .as_ref()
            .is_some_and(|l| l.token == token && !l.is_active(Utc::now()))
    };
    ensure!(
        lapsed(&ended) && lapsed(&stored_job(&store, &j.id).await?),
        "the write that ends a job lapses its lease: {:?}",
        ended.lease
    );
    let r = store.renew_lease(&j.id, "worker-a", token, until).await;
    ensure!(
        is_lease_lost(&r),
        "an ended job's lease is not renewed: {r:?}"
    );
    store.release_lease(&j.id, "worker-a", token).await?;
    let r = store.release_lease(&j.id, "worker-b", token).await;
    ensure!(
        is_lease_lost(&r),
        "another holder cannot release an ended job's lease: {r:?}"
    );
    Ok(())
}
