//! One interface for an embedded engine and a running service: [`Hcp`].
//!
//! Shells (the `hcp` command, the Python module) hold an `Arc<dyn Hcp>` and never ask which
//! one they talk to. [`EngineClient`] runs calls on an engine in this process as one principal;
//! [`Client`] sends them to `hcp serve`. Both answer with the same types (one tenant job type,
//! [`TenantJob`], and one update type, [`TenantUpdate`]) and refuse the same requests with the
//! same errors: an empty or malformed idempotency key names `idempotency_key` in both, a lookup
//! of an unknown VM or job names `vm_id` or `job_id`, and a job of another project is not found.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use hcp_core::job::TenantJob;
use hcp_core::store::{JobFilter, PageRequest, Scope, VmFilter, VmSort};
use hcp_core::{
    Action, AdoptRequest, Capabilities, Catalog, Console, ConsoleKind, Engine, Error, ErrorKind,
    FieldPlan, Host, InventoryVm, JobId, JobLogLine, JobState, JobUpdate, MigrateRequest,
    NewServerGroup, Operation, PendingReason, Principal, ProjectId, RequestContext, ResizeRequest,
    ServerGroup, ServerGroupId, Snapshot, TenantVm, VmId,
};

use crate::{Accepted, Client};

/// One update while following a job, as its tenant sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum TenantUpdate {
    /// A log line: past lines first, then live ones (no operator-only lines).
    Log(JobLogLine),
    /// The job's state or progress changed.
    Status {
        /// The state.
        state: JobState,
        /// Progress, 0–100.
        progress: u8,
        /// Why it is pending, while it is.
        pending_reason: Option<PendingReason>,
    },
    /// The job ended; nothing follows.
    End(Box<TenantJob>),
}

/// A job's updates: past log lines, live lines and status changes, then its end.
pub type TenantUpdates = BoxStream<'static, hcp_core::Result<TenantUpdate>>;

/// What a shell asks of HCP, whether the engine runs in this process or in a service.
///
/// `project` is optional on calls about an existing VM or job: without it, the VM's or job's
/// own project is used (an embedded engine finds it itself; a client asks the service). With
/// it, a VM or job of another project is not found.
#[async_trait]
pub trait Hcp: Send + Sync + fmt::Debug {
    /// Returns true when calls go to a service, whose jobs go on after this process ends.
    fn is_remote(&self) -> bool;

    /// Submits a change (snapshot actions included) and returns once it is accepted.
    ///
    /// # Errors
    /// `InvalidSpec` naming `idempotency_key` for an empty or malformed key, `project` when a
    /// create names none; `NotFound` naming `vm_id`; the engine's refusals;
    /// `FeatureNotSupported` for an action the tenant API does not offer (a service only).
    async fn submit(
        &self,
        project: Option<&ProjectId>,
        action: Action,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted>;

    /// Plans a resize: per field that would change, what applying it takes. Changes nothing.
    ///
    /// # Errors
    /// `NotFound` naming `vm_id`, or a bad size naming the field.
    async fn plan_resize(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &ResizeRequest,
    ) -> hcp_core::Result<Vec<FieldPlan>>;

    /// Lists a VM's snapshots, oldest first.
    ///
    /// # Errors
    /// `NotFound` naming `vm_id`, or a hypervisor that cannot snapshot.
    async fn list_snapshots(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<Vec<Snapshot>>;

    /// Creates a server group in `project`.
    ///
    /// # Errors
    /// An invalid name, or a name taken in the project.
    async fn create_server_group(
        &self,
        project: &ProjectId,
        new: NewServerGroup,
    ) -> hcp_core::Result<ServerGroup>;

    /// Lists a project's server groups (every page), by id.
    ///
    /// # Errors
    /// An invalid or unknown project.
    async fn list_server_groups(&self, project: &ProjectId) -> hcp_core::Result<Vec<ServerGroup>>;

    /// Returns a server group of `project` with its members.
    ///
    /// # Errors
    /// `NotFound`, also for another project's group.
    async fn get_server_group(
        &self,
        project: &ProjectId,
        id: &ServerGroupId,
    ) -> hcp_core::Result<ServerGroup>;

    /// Deletes an empty server group of `project`.
    ///
    /// # Errors
    /// `NotFound`, or `SERVER_GROUP_NOT_EMPTY` while VMs are in it.
    async fn delete_server_group(
        &self,
        project: &ProjectId,
        id: &ServerGroupId,
    ) -> hcp_core::Result<()>;

    /// Lists the VMs of `project`, oldest first (every page).
    ///
    /// # Errors
    /// An invalid or unknown project.
    async fn list_vms(&self, project: &ProjectId) -> hcp_core::Result<Vec<TenantVm>>;

    /// Lists the VMs of `project` that match `filter`, in the order `sort` gives (every page).
    ///
    /// # Errors
    /// An invalid or unknown project; `InvalidSpec` naming the field of a bad filter.
    async fn list_vms_matching(
        &self,
        project: &ProjectId,
        filter: &VmFilter,
        sort: VmSort,
    ) -> hcp_core::Result<Vec<TenantVm>>;

    /// Returns one VM.
    ///
    /// # Errors
    /// `NotFound` naming `vm_id` when it does not exist in `project` (or at all).
    async fn get_vm(&self, project: Option<&ProjectId>, vm_id: &VmId)
    -> hcp_core::Result<TenantVm>;

    /// Hands out a console to a running VM.
    ///
    /// # Errors
    /// `NotFound` naming `vm_id`, no console capability, or a VM that is not running.
    async fn console(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<Console>;

    /// Returns one job.
    ///
    /// # Errors
    /// `NotFound` naming `job_id` when it does not exist in `project` (or at all).
    async fn get_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantJob>;

    /// Lists jobs, newest first, at most `limit`: of `project`, or of every project the caller
    /// can see.
    ///
    /// # Errors
    /// An invalid or unknown project.
    async fn list_jobs(
        &self,
        project: Option<&ProjectId>,
        filter: &JobFilter,
        limit: usize,
    ) -> hcp_core::Result<Vec<TenantJob>>;

    /// Follows a job: its past log lines, then live updates, then its end. A stream that closes
    /// before the end yields the job when it has ended, or a temporary error when it has not.
    ///
    /// # Errors
    /// `NotFound` naming `job_id` when it does not exist in `project` (or at all).
    async fn watch_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantUpdates>;

    /// Waits until a job ends and returns it, following its updates.
    ///
    /// # Errors
    /// As [`Hcp::watch_job`]; `Timeout` (with the job in its context) when `timeout` passes
    /// first (the job goes on).
    async fn wait_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
        timeout: Option<Duration>,
    ) -> hcp_core::Result<TenantJob> {
        let wait = async {
            let mut updates = self.watch_job(project, job_id).await?;
            while let Some(u) = updates.next().await {
                if let TenantUpdate::End(job) = u? {
                    return Ok(*job);
                }
            }
            Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!("the log stream of job `{job_id}` closed before it ended"),
            )
            .temporary())
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("job `{job_id}` did not end within {t:?}"),
                )
                .with_context("job", job_id)
            })?,
            None => wait.await,
        }
    }

    /// Cancels a job and returns it: `CANCELLED` when it was pending, still `RUNNING` when it
    /// has been asked to stop.
    ///
    /// # Errors
    /// `NotFound` naming `job_id`; `Conflict` for a job that already ended.
    async fn cancel_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantJob>;

    /// Moves a running VM to another host of its provider and zone (operators; the principal
    /// of an embedded engine is its operator). `project`, when given, must be the VM's.
    ///
    /// # Errors
    /// `NotFound` naming `vm_id`, `target_host` invalid, no room, no live migration; a caller
    /// without the operator role (a service only).
    async fn migrate_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &MigrateRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted>;

    /// Takes a VM created outside HCP into `project` (operators): a job writes HCP's mark on it.
    ///
    /// # Errors
    /// An invalid project, name or tags naming the field, no such VM on the host, a VM HCP
    /// already manages, quota; a caller without the operator role (a service only).
    async fn adopt_vm(
        &self,
        project: &ProjectId,
        request: &AdoptRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted>;

    /// Gives a VM back (operators): a job removes HCP's mark and HCP forgets the VM.
    /// `project`, when given, must be the VM's.
    ///
    /// # Errors
    /// `NotFound` naming `vm_id`, a host that cannot remove the mark; a caller without the
    /// operator role (a service only).
    async fn release_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted>;

    /// Returns every VM the last inventory found on the hosts, HCP's and others (operator
    /// view), with the ones an operator can adopt marked.
    ///
    /// # Errors
    /// Transport errors and refusals (a service only).
    async fn inventory_vms(&self) -> hcp_core::Result<Vec<InventoryVm>>;

    /// Returns every host with its capacity and health (operator view).
    ///
    /// # Errors
    /// Transport errors and refusals (a service only).
    async fn hosts(&self) -> hcp_core::Result<Vec<Host>>;

    /// Returns the catalog: images, flavors, networks and zones.
    ///
    /// # Errors
    /// Transport errors (a service only).
    async fn catalog(&self) -> hcp_core::Result<Catalog>;

    /// Returns what can be asked for in `zone`, or anywhere.
    ///
    /// # Errors
    /// `InvalidSpec` naming `zone` when it is unknown.
    async fn capabilities(&self, zone: Option<&str>) -> hcp_core::Result<Capabilities>;

    /// Stops background work (an embedded engine's reconciler); a client has none.
    async fn close(&self) {}
}

/// Refuses an empty or malformed idempotency key before anything is looked up or sent (a
/// service reads an empty `Idempotency-Key` header as no key at all; an engine refuses it).
fn check_key(key: Option<&str>, op: Operation) -> hcp_core::Result<()> {
    match key {
        Some(k) => hcp_core::validate_idempotency_key(k).map_err(|e| e.with_operation(op)),
        None => Ok(()),
    }
}

/// Names `field` on a "not found" error that names none yet (an unknown id given by the
/// caller).
fn name_field(e: Error, field: &str) -> Error {
    if e.kind() == ErrorKind::NotFound && e.field().is_none() {
        e.with_field(field)
    } else {
        e
    }
}

/// Returns the error for a create that names no project.
fn project_required() -> Error {
    Error::invalid("project", "is required: the tenant API is project-scoped")
}

/// Returns the VM an action acts on; `None` for a create or an adoption.
fn vm_of(action: &Action) -> Option<&VmId> {
    match action {
        Action::Create { .. } | Action::Adopt(_) => None,
        Action::Release { vm_id }
        | Action::Delete { vm_id, .. }
        | Action::Start { vm_id }
        | Action::Stop { vm_id, .. }
        | Action::Reboot { vm_id, .. }
        | Action::Snapshot { vm_id, .. }
        | Action::Migrate { vm_id, .. }
        | Action::RevertSnapshot { vm_id, .. }
        | Action::DeleteSnapshot { vm_id, .. }
        | Action::Resize { vm_id, .. } => Some(vm_id),
    }
}

/// Returns the answer to an accepted change in `project`.
fn accepted(project: &ProjectId, s: hcp_core::Submitted) -> Accepted {
    Accepted {
        resource_id: format!("projects/{project}/vms/{}", s.vm_id),
        vm_id: s.vm_id,
        job_id: s.job_id,
        replayed: s.replayed,
        snapshot_id: None,
        memory_state_kept: None,
    }
}

/// Follows every page of a listing.
async fn all_pages<T, F, Fut>(mut page: PageRequest, mut next: F) -> hcp_core::Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = hcp_core::Result<hcp_core::store::Page<T>>>,
{
    let mut out = Vec::new();
    loop {
        let p = next(page.clone()).await?;
        out.extend(p.items);
        match p.next {
            Some(c) => page.cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// An engine in this process, called as one principal (the local user of a shell, who is its
/// operator: without a project, lookups cover every project).
#[derive(Debug, Clone)]
pub struct EngineClient {
    engine: Engine,
    principal: Principal,
}

impl EngineClient {
    /// Calls `engine` as `principal`.
    pub fn new(engine: Engine, principal: Principal) -> EngineClient {
        EngineClient { engine, principal }
    }

    /// Returns the engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Returns the principal calls act as.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Returns the lookup scope: `project` (checked as a submit checks it) when given, else
    /// every project.
    fn scope(&self, project: Option<&ProjectId>) -> hcp_core::Result<Scope> {
        match project {
            Some(p) => {
                self.engine.check_project(p)?;
                Ok(Scope::Project(p.clone()))
            }
            None => Ok(Scope::All),
        }
    }

    async fn vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<hcp_core::Vm> {
        let scope = self.scope(project)?;
        self.engine
            .get_vm(&scope, vm_id)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    /// Returns the request context for acting on `vm_id` (or creating in `project`).
    async fn context(
        &self,
        project: Option<&ProjectId>,
        vm_id: Option<&VmId>,
    ) -> hcp_core::Result<RequestContext> {
        let project = match (project, vm_id) {
            (Some(p), _) => p.clone(),
            (None, Some(id)) => self.vm(None, id).await?.project,
            (None, None) => return Err(project_required()),
        };
        Ok(RequestContext::new(project, self.principal.clone()))
    }

    /// Returns the caller's view of a job: the tenant view with the caller's own key.
    fn view(job: &hcp_core::Job) -> TenantJob {
        let mut t = job.tenant_view();
        t.idempotency_key = job.idempotency_key.clone();
        t
    }
}

#[async_trait]
impl Hcp for EngineClient {
    fn is_remote(&self) -> bool {
        false
    }

    async fn submit(
        &self,
        project: Option<&ProjectId>,
        action: Action,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = action.operation();
        check_key(idempotency_key.as_deref(), op)?;
        let ctx = self
            .context(project, vm_of(&action))
            .await
            .map_err(|e| e.with_operation(op))?
            .with_idempotency_key(idempotency_key);
        if matches!(
            action,
            Action::Snapshot { .. } | Action::RevertSnapshot { .. } | Action::DeleteSnapshot { .. }
        ) {
            let s = self.engine.submit_snapshot(&ctx, action).await?;
            return Ok(Accepted {
                snapshot_id: Some(s.snapshot_id),
                memory_state_kept: s.memory_state_kept,
                ..accepted(&ctx.project, s.submitted)
            });
        }
        let s = self.engine.submit(&ctx, action).await?;
        Ok(accepted(&ctx.project, s))
    }

    async fn plan_resize(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &ResizeRequest,
    ) -> hcp_core::Result<Vec<FieldPlan>> {
        let ctx = self.context(project, Some(vm_id)).await?;
        self.engine
            .plan_resize(&ctx, vm_id, request)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    async fn list_snapshots(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<Vec<Snapshot>> {
        let ctx = self
            .context(project, Some(vm_id))
            .await
            .map_err(|e| e.with_operation(Operation::ListSnapshots))?;
        self.engine
            .list_snapshots(&ctx, vm_id)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    async fn create_server_group(
        &self,
        project: &ProjectId,
        new: NewServerGroup,
    ) -> hcp_core::Result<ServerGroup> {
        let ctx = self.context(Some(project), None).await?;
        self.engine.create_server_group(&ctx, new).await
    }

    async fn list_server_groups(&self, project: &ProjectId) -> hcp_core::Result<Vec<ServerGroup>> {
        let scope = self.scope(Some(project))?;
        all_pages(PageRequest::all(), |page| {
            let scope = scope.clone();
            async move { self.engine.list_server_groups(&scope, &page).await }
        })
        .await
    }

    async fn get_server_group(
        &self,
        project: &ProjectId,
        id: &ServerGroupId,
    ) -> hcp_core::Result<ServerGroup> {
        let scope = self.scope(Some(project))?;
        self.engine.get_server_group(&scope, id).await
    }

    async fn delete_server_group(
        &self,
        project: &ProjectId,
        id: &ServerGroupId,
    ) -> hcp_core::Result<()> {
        let ctx = self.context(Some(project), None).await?;
        self.engine.delete_server_group(&ctx, id).await
    }

    async fn list_vms(&self, project: &ProjectId) -> hcp_core::Result<Vec<TenantVm>> {
        let scope = self.scope(Some(project))?;
        let vms = all_pages(PageRequest::all(), |page| {
            let scope = scope.clone();
            async move { self.engine.list_vms(&scope, &page).await }
        })
        .await?;
        Ok(vms.iter().map(hcp_core::Vm::tenant_view).collect())
    }

    async fn list_vms_matching(
        &self,
        project: &ProjectId,
        filter: &VmFilter,
        sort: VmSort,
    ) -> hcp_core::Result<Vec<TenantVm>> {
        let scope = self.scope(Some(project))?;
        filter.validate()?;
        let vms = all_pages(PageRequest::all(), |page| {
            let scope = scope.clone();
            async move {
                self.engine
                    .list_vms_matching(&scope, filter, sort, &page)
                    .await
            }
        })
        .await?;
        Ok(vms.iter().map(hcp_core::Vm::tenant_view).collect())
    }

    async fn get_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<TenantVm> {
        Ok(self.vm(project, vm_id).await?.tenant_view())
    }

    async fn console(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<Console> {
        let ctx = self
            .context(project, Some(vm_id))
            .await
            .map_err(|e| e.with_operation(Operation::Console))?;
        self.engine
            .console(&ctx, vm_id, kind)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    async fn get_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantJob> {
        let scope = self.scope(project)?;
        let job = self
            .engine
            .get_job(&scope, job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        Ok(EngineClient::view(&job))
    }

    async fn list_jobs(
        &self,
        project: Option<&ProjectId>,
        filter: &JobFilter,
        limit: usize,
    ) -> hcp_core::Result<Vec<TenantJob>> {
        let scope = self.scope(project)?;
        let mut jobs = Vec::new();
        let mut page = PageRequest::first(limit.min(PageRequest::MAX_LIMIT));
        while jobs.len() < limit {
            let p = self.engine.list_jobs(&scope, filter, &page).await?;
            jobs.extend(p.items.iter().map(EngineClient::view));
            match p.next {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn watch_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantUpdates> {
        let scope = self.scope(project)?;
        let watch = self
            .engine
            .watch_job(&scope, job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        // The tenant view, as the service's stream: no operator-only lines or details.
        Ok(watch
            .into_stream()
            .filter_map(|u| {
                std::future::ready(match u {
                    JobUpdate::End(job) => {
                        Some(TenantUpdate::End(Box::new(EngineClient::view(&job))))
                    }
                    other => match other.tenant_view() {
                        Some(JobUpdate::Log(l)) => Some(TenantUpdate::Log(l)),
                        Some(JobUpdate::Status {
                            state,
                            progress,
                            pending_reason,
                        }) => Some(TenantUpdate::Status {
                            state,
                            progress,
                            pending_reason,
                        }),
                        _ => None,
                    },
                })
            })
            .map(Ok)
            .boxed())
    }

    async fn cancel_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantJob> {
        let scope = self.scope(project)?;
        let job = self
            .engine
            .cancel_job(&scope, job_id, &self.principal)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        Ok(EngineClient::view(&job))
    }

    async fn migrate_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &MigrateRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = Operation::MigrateVm;
        check_key(idempotency_key.as_deref(), op)?;
        // A VM outside `project` is not found, as for every other call.
        let vm = self
            .vm(project, vm_id)
            .await
            .map_err(|e| e.with_operation(op))?;
        let s = self
            .engine
            .migrate_vm(&self.principal, vm_id, request, idempotency_key)
            .await
            .map_err(|e| name_field(e, "vm_id"))?;
        Ok(accepted(&vm.project, s))
    }

    async fn adopt_vm(
        &self,
        project: &ProjectId,
        request: &AdoptRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = Operation::AdoptVm;
        check_key(idempotency_key.as_deref(), op)?;
        project.validate().map_err(|e| e.with_operation(op))?;
        let s = self
            .engine
            .adopt_vm(&self.principal, project, request, idempotency_key)
            .await?;
        Ok(accepted(project, s))
    }

    async fn release_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = Operation::ReleaseVm;
        check_key(idempotency_key.as_deref(), op)?;
        let vm = self
            .vm(project, vm_id)
            .await
            .map_err(|e| e.with_operation(op))?;
        let s = self
            .engine
            .release_vm(&self.principal, vm_id, idempotency_key)
            .await
            .map_err(|e| name_field(e, "vm_id"))?;
        Ok(accepted(&vm.project, s))
    }

    async fn inventory_vms(&self) -> hcp_core::Result<Vec<InventoryVm>> {
        Ok(self.engine.inventory_vms())
    }

    async fn hosts(&self) -> hcp_core::Result<Vec<Host>> {
        Ok(self.engine.hosts())
    }

    async fn catalog(&self) -> hcp_core::Result<Catalog> {
        Ok(self.engine.catalog().clone())
    }

    async fn capabilities(&self, zone: Option<&str>) -> hcp_core::Result<Capabilities> {
        self.engine.capabilities(zone)
    }

    async fn close(&self) {
        self.engine.shutdown().await;
    }
}

impl Client {
    /// Returns the project of a call on `vm_id`: `project` when given (checked as the service
    /// checks it, so a malformed one is refused by name before anything is sent), else the
    /// project of the caller's VM with that id.
    async fn project_of(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<ProjectId> {
        match project {
            Some(p) => {
                p.validate()?;
                Ok(p.clone())
            }
            None => Ok(self
                .find_vm(vm_id)
                .await
                .map_err(|e| name_field(e, "vm_id"))?
                .project),
        }
    }

    /// Refuses an invalid or unknown project the way the service's project-scoped routes do
    /// (the job routes are not project-scoped).
    async fn check_project(&self, project: &ProjectId) -> hcp_core::Result<()> {
        project.validate()?;
        self.list_jobs(
            project.as_str(),
            &JobFilter::default(),
            &PageRequest::first(1),
        )
        .await
        .map(|_| ())
    }

    /// Returns a job; with `project`, a job of another project is not found.
    async fn scoped_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantJob> {
        if let Some(p) = project {
            self.check_project(p).await?;
        }
        let job = self
            .get_job(job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        if let Some(p) = project
            && *p != job.project
        {
            return Err(Error::not_found("job", job_id).with_field("job_id"));
        }
        Ok(job)
    }
}

#[async_trait]
impl Hcp for Client {
    fn is_remote(&self) -> bool {
        true
    }

    async fn submit(
        &self,
        project: Option<&ProjectId>,
        action: Action,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = action.operation();
        check_key(idempotency_key.as_deref(), op)?;
        let project = match vm_of(&action) {
            Some(vm_id) => self.project_of(project, vm_id).await,
            None => match project {
                Some(p) => p.validate().map(|()| p.clone()),
                None => Err(project_required()),
            },
        }
        .map_err(|e| e.with_operation(op))?;
        let p = project.as_str();
        let key = idempotency_key.as_deref();
        match action {
            Action::Create { spec, host: None } => self.create_vm(p, &spec, key).await,
            Action::Create { host: Some(_), .. } => Err(Error::new(
                ErrorKind::FeatureNotSupported,
                "pinning a VM to a host is not available through the tenant API",
            )
            .with_field("host")
            .with_operation(op)),
            Action::Delete { vm_id, force } => self.delete_vm(p, &vm_id, force, key).await,
            Action::Start { vm_id } => self.start_vm(p, &vm_id, key).await,
            Action::Stop { vm_id, force } => self.stop_vm(p, &vm_id, force, key).await,
            Action::Reboot { vm_id, hard } => self.reboot_vm(p, &vm_id, hard, key).await,
            Action::Snapshot { vm_id, name } => self.create_snapshot(p, &vm_id, &name, key).await,
            Action::RevertSnapshot { vm_id, snapshot_id } => {
                self.revert_snapshot(p, &vm_id, &snapshot_id, key).await
            }
            Action::DeleteSnapshot { vm_id, snapshot_id } => {
                self.delete_snapshot(p, &vm_id, &snapshot_id, key).await
            }
            Action::Resize {
                vm_id,
                change,
                allow,
            } => self.resize_vm(p, &vm_id, &change, &allow, key).await,
            _ => Err(Error::new(
                ErrorKind::FeatureNotSupported,
                format!("`{op}` is not available through the tenant API"),
            )
            .with_operation(op)),
        }
        .map_err(|e| match op {
            Operation::CreateVm => e,
            _ => name_field(e, "vm_id"),
        })
    }

    async fn plan_resize(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &ResizeRequest,
    ) -> hcp_core::Result<Vec<FieldPlan>> {
        let project = self.project_of(project, vm_id).await?;
        Client::plan_resize(self, project.as_str(), vm_id, request)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    async fn list_snapshots(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<Vec<Snapshot>> {
        let project = self
            .project_of(project, vm_id)
            .await
            .map_err(|e| e.with_operation(Operation::ListSnapshots))?;
        Client::list_snapshots(self, project.as_str(), vm_id)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    async fn create_server_group(
        &self,
        project: &ProjectId,
        new: NewServerGroup,
    ) -> hcp_core::Result<ServerGroup> {
        Client::create_server_group(self, project.as_str(), &new.name, new.policy, new.strength)
            .await
    }

    async fn list_server_groups(&self, project: &ProjectId) -> hcp_core::Result<Vec<ServerGroup>> {
        all_pages(PageRequest::all(), |page| async move {
            Client::list_server_groups(self, project.as_str(), &page).await
        })
        .await
    }

    async fn get_server_group(
        &self,
        project: &ProjectId,
        id: &ServerGroupId,
    ) -> hcp_core::Result<ServerGroup> {
        Client::get_server_group(self, project.as_str(), id).await
    }

    async fn delete_server_group(
        &self,
        project: &ProjectId,
        id: &ServerGroupId,
    ) -> hcp_core::Result<()> {
        Client::delete_server_group(self, project.as_str(), id).await
    }

    async fn list_vms(&self, project: &ProjectId) -> hcp_core::Result<Vec<TenantVm>> {
        project.validate()?;
        self.list_all_vms(project.as_str()).await
    }

    async fn list_vms_matching(
        &self,
        project: &ProjectId,
        filter: &VmFilter,
        sort: VmSort,
    ) -> hcp_core::Result<Vec<TenantVm>> {
        project.validate()?;
        filter.validate()?;
        self.list_all_vms_matching(project.as_str(), filter, sort)
            .await
    }

    async fn get_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<TenantVm> {
        let project = self.project_of(project, vm_id).await?;
        Client::get_vm(self, project.as_str(), vm_id)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    async fn console(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<Console> {
        let project = self
            .project_of(project, vm_id)
            .await
            .map_err(|e| e.with_operation(Operation::Console))?;
        Client::console(self, project.as_str(), vm_id, kind)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    async fn get_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantJob> {
        self.scoped_job(project, job_id).await
    }

    async fn list_jobs(
        &self,
        project: Option<&ProjectId>,
        filter: &JobFilter,
        limit: usize,
    ) -> hcp_core::Result<Vec<TenantJob>> {
        if let Some(p) = project {
            p.validate()?;
        }
        let mut jobs = Vec::new();
        let mut page = PageRequest::first(limit.min(PageRequest::MAX_LIMIT));
        while jobs.len() < limit {
            // Without a project: every project the caller is a member of.
            let p = match project {
                Some(project) => Client::list_jobs(self, project.as_str(), filter, &page).await?,
                None => self.list_my_jobs(filter, &page).await?,
            };
            jobs.extend(p.items);
            match p.next {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn watch_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantUpdates> {
        if project.is_some() {
            // The log route is not project-scoped: check the project first, as the engine's
            // scoped lookup does.
            self.scoped_job(project, job_id).await?;
        }
        let updates = self
            .watch_tenant_job(job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        let client = self.clone();
        let job_id = job_id.clone();
        // Some(stream) while it runs; None once it ended.
        Ok(stream::unfold(Some(updates), move |state| {
            let client = client.clone();
            let job_id = job_id.clone();
            async move {
                let mut updates = state?;
                match updates.next().await {
                    Some(Ok(TenantUpdate::End(job))) => Some((Ok(TenantUpdate::End(job)), None)),
                    Some(Ok(u)) => Some((Ok(u), Some(updates))),
                    Some(Err(e)) => Some((Err(e), None)),
                    // Closed before the end event (a proxy cut it, the service stopped).
                    None => Some((end_after_close(&client, &job_id).await, None)),
                }
            }
        })
        .boxed())
    }

    async fn cancel_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<TenantJob> {
        // The job route is not project-scoped: without a project, the job's own.
        let project = match project {
            Some(p) => {
                p.validate()?;
                p.clone()
            }
            None => {
                self.get_job(job_id)
                    .await
                    .map_err(|e| name_field(e, "job_id"))?
                    .project
            }
        };
        Client::cancel_job(self, project.as_str(), job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))
    }

    async fn migrate_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &MigrateRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = Operation::MigrateVm;
        check_key(idempotency_key.as_deref(), op)?;
        if project.is_some() {
            // The ops route is not project-scoped: a VM of another project is not found.
            Hcp::get_vm(self, project, vm_id)
                .await
                .map_err(|e| e.with_operation(op))?;
        }
        Client::migrate_vm(self, vm_id, request, idempotency_key.as_deref())
            .await
            .map_err(|e| name_field(e, "vm_id").with_operation(op))
    }

    async fn adopt_vm(
        &self,
        project: &ProjectId,
        request: &AdoptRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = Operation::AdoptVm;
        check_key(idempotency_key.as_deref(), op)?;
        project.validate().map_err(|e| e.with_operation(op))?;
        Client::adopt_vm(self, project.as_str(), request, idempotency_key.as_deref())
            .await
            .map_err(|e| e.with_operation(op))
    }

    async fn release_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = Operation::ReleaseVm;
        check_key(idempotency_key.as_deref(), op)?;
        if project.is_some() {
            Hcp::get_vm(self, project, vm_id)
                .await
                .map_err(|e| e.with_operation(op))?;
        }
        Client::release_vm(self, vm_id, idempotency_key.as_deref())
            .await
            .map_err(|e| name_field(e, "vm_id").with_operation(op))
    }

    async fn inventory_vms(&self) -> hcp_core::Result<Vec<InventoryVm>> {
        Client::inventory_vms(self).await
    }

    async fn hosts(&self) -> hcp_core::Result<Vec<Host>> {
        Client::hosts(self).await
    }

    async fn catalog(&self) -> hcp_core::Result<Catalog> {
        Client::catalog(self).await
    }

    async fn capabilities(&self, zone: Option<&str>) -> hcp_core::Result<Capabilities> {
        Client::capabilities(self, zone).await
    }
}

/// The end of a job whose update stream closed before its end event: the job when it has
/// ended, else a temporary error that says how to follow it again.
async fn end_after_close(client: &Client, job_id: &JobId) -> hcp_core::Result<TenantUpdate> {
    let job = client.get_job(job_id).await?;
    if job.state.is_terminal() {
        Ok(TenantUpdate::End(Box::new(job)))
    } else {
        Err(Error::new(
            ErrorKind::ProviderUnavailable,
            format!(
                "the log stream of job {job_id} closed before the job ended (it is {}); follow \
                 it again with `hcp job watch {job_id}`",
                job.state
            ),
        )
        .temporary())
    }
}
