//! Where commands go: an engine inside this process ([`Embedded`]) or a running `hcp serve`
//! ([`Remote`], through `hcp-client`). Both have the same methods, so command code does not
//! know which one it talks to.

use std::path::Path;
use std::sync::Arc;

use hcp_core::store::{JobFilter, MemoryStore, PageRequest, Scope, VmFilter, VmSort};
use hcp_core::{
    Action, Capabilities, Catalog, Console, ConsoleKind, Engine, Error, ErrorKind, Host, JobId,
    JobWatch, Principal, ProjectId, RequestContext, SecretString, Snapshot, SnapshotSubmitted,
    Submitted, TenantVm, VmId,
};

use hcp_server::relay::{self, ByteStream};

use crate::local::{self, EngineLock, Retention, StatePaths};
use crate::remote::{Remote, RemoteWatch};
use crate::views::{JobEvent, JobView};

/// How long opening a console (and its handshake) may take.
pub const CONSOLE_DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The error for a console that HCP does not relay: the client opens its URL itself.
pub fn not_relayed(console: &Console) -> Error {
    Error::new(
        ErrorKind::FeatureNotSupported,
        format!(
            "this {} console is a URL the client opens itself ({}); --listen bridges consoles \
             HCP relays (VNC, RDP)",
            console.kind.as_str(),
            console.url
        ),
    )
    .with_field("listen")
    .with_operation(hcp_core::Operation::Console)
}

/// Where commands go.
#[derive(Debug)]
pub enum Backend {
    /// An engine inside this process that lives for one command.
    Embedded(Box<Embedded>),
    /// A running `hcp serve` (`--url`).
    Remote(Remote),
}

/// An accepted change: the VM and the job that does the work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The VM the job acts on.
    pub vm_id: VmId,
    /// The job.
    pub job_id: JobId,
    /// True when an idempotency key replayed an earlier request: no new job ran.
    pub replayed: bool,
    /// HCP's id of the snapshot a snapshot request acts on.
    pub snapshot_id: Option<String>,
    /// A revert's answer: whether the VM's memory state comes back.
    pub memory_state_kept: Option<bool>,
}

impl From<Submitted> for Accepted {
    fn from(s: Submitted) -> Self {
        Accepted {
            vm_id: s.vm_id,
            job_id: s.job_id,
            replayed: s.replayed,
            snapshot_id: None,
            memory_state_kept: None,
        }
    }
}

impl From<SnapshotSubmitted> for Accepted {
    fn from(s: SnapshotSubmitted) -> Self {
        Accepted {
            snapshot_id: Some(s.snapshot_id),
            memory_state_kept: s.memory_state_kept,
            ..Accepted::from(s.submitted)
        }
    }
}

/// Follows one job; see [`Backend::watch_job`].
#[derive(Debug)]
pub enum JobStream {
    /// A watch on the embedded engine.
    Embedded(JobWatch),
    /// The service's server-sent event stream.
    Remote(RemoteWatch),
}

impl JobStream {
    /// Returns the next update, or `None` after the end.
    ///
    /// # Errors
    /// Remote mode: the stream broke, or closed before the job ended.
    pub async fn next(&mut self) -> Option<hcp_core::Result<JobEvent>> {
        match self {
            // The tenant view, as the service's stream: no operator-only lines or details.
            JobStream::Embedded(w) => loop {
                match w.next().await?.tenant_view() {
                    Some(u) => return Some(Ok(JobEvent::from(u))),
                    None => continue,
                }
            },
            JobStream::Remote(w) => w.next().await,
        }
    }
}

impl Backend {
    /// Opens the backend for one command. `mutating` commands hold the environment's lock until
    /// [`Backend::close`].
    ///
    /// # Errors
    /// An invalid hosts file or environment variable ([`ErrorKind::InvalidSpec`] naming the key
    /// and line), an unreadable state or jobs file, or a provider that cannot be built.
    pub async fn open(config: Option<&Path>, mutating: bool) -> anyhow::Result<Backend> {
        Ok(Backend::Embedded(Box::new(
            Embedded::open(config, mutating).await?,
        )))
    }

    /// Connects to the service at `url` (nothing is sent until the first request).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `url` or `token` when they cannot be used.
    pub fn remote(url: &str, token: Option<&SecretString>) -> hcp_core::Result<Backend> {
        Ok(Backend::Remote(Remote::connect(url, token)?))
    }

    /// Returns true when commands go to a service: its jobs go on when this process ends.
    pub fn is_remote(&self) -> bool {
        matches!(self, Backend::Remote(_))
    }

    /// Ends the command: saves the jobs it ran and stops the engine.
    ///
    /// # Errors
    /// When the jobs file cannot be written.
    pub async fn close(self) -> anyhow::Result<()> {
        match self {
            Backend::Embedded(e) => e.close().await,
            Backend::Remote(_) => Ok(()),
        }
    }

    /// Submits an infrastructure change and returns once it is accepted. `project` may be
    /// absent for an action on an existing VM in embedded mode: the VM's own project is used.
    ///
    /// # Errors
    /// See [`Engine::submit`]; remote mode also needs `project`.
    pub async fn submit(
        &self,
        project: Option<&ProjectId>,
        action: Action,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        match self {
            Backend::Embedded(e) => e
                .submit(project, action, idempotency_key)
                .await
                .map(Accepted::from),
            Backend::Remote(r) => r.submit(project, action, idempotency_key).await,
        }
    }

    /// Plans a resize: per field that would change, what applying it takes. Changes nothing.
    ///
    /// # Errors
    /// See [`Engine::plan_resize`].
    pub async fn plan_resize(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &hcp_core::ResizeRequest,
    ) -> hcp_core::Result<Vec<hcp_core::FieldPlan>> {
        match self {
            Backend::Embedded(e) => {
                let ctx = e.context(project, Some(vm_id)).await?;
                e.engine.plan_resize(&ctx, vm_id, request).await
            }
            Backend::Remote(r) => r.plan_resize(project, vm_id, request).await,
        }
    }

    /// Creates a server group in `project`.
    ///
    /// # Errors
    /// See [`Engine::create_server_group`].
    pub async fn create_server_group(
        &self,
        project: &ProjectId,
        new: hcp_core::NewServerGroup,
    ) -> hcp_core::Result<hcp_core::ServerGroup> {
        match self {
            Backend::Embedded(e) => {
                let ctx = e.context(Some(project), None).await?;
                e.engine.create_server_group(&ctx, new).await
            }
            Backend::Remote(r) => r.create_server_group(project, new).await,
        }
    }

    /// Lists a project's server groups, by id.
    ///
    /// # Errors
    /// See [`Engine::list_server_groups`].
    pub async fn list_server_groups(
        &self,
        project: &ProjectId,
    ) -> hcp_core::Result<Vec<hcp_core::ServerGroup>> {
        match self {
            Backend::Embedded(e) => {
                e.engine.check_project(project)?;
                let scope = Scope::Project(project.clone());
                let mut page = PageRequest::all();
                let mut out = Vec::new();
                loop {
                    let p = e.engine.list_server_groups(&scope, &page).await?;
                    out.extend(p.items);
                    match p.next {
                        Some(c) => page.cursor = Some(c),
                        None => return Ok(out),
                    }
                }
            }
            Backend::Remote(r) => r.list_server_groups(project).await,
        }
    }

    /// Returns a server group of `project` with its members.
    ///
    /// # Errors
    /// See [`Engine::get_server_group`].
    pub async fn get_server_group(
        &self,
        project: &ProjectId,
        id: &hcp_core::ServerGroupId,
    ) -> hcp_core::Result<hcp_core::ServerGroup> {
        match self {
            Backend::Embedded(e) => {
                e.engine.check_project(project)?;
                e.engine
                    .get_server_group(&Scope::Project(project.clone()), id)
                    .await
            }
            Backend::Remote(r) => r.get_server_group(project, id).await,
        }
    }

    /// Deletes an empty server group of `project`.
    ///
    /// # Errors
    /// See [`Engine::delete_server_group`].
    pub async fn delete_server_group(
        &self,
        project: &ProjectId,
        id: &hcp_core::ServerGroupId,
    ) -> hcp_core::Result<()> {
        match self {
            Backend::Embedded(e) => {
                let ctx = e.context(Some(project), None).await?;
                e.engine.delete_server_group(&ctx, id).await
            }
            Backend::Remote(r) => r.delete_server_group(project, id).await,
        }
    }

    /// Lists a VM's snapshots, oldest first.
    ///
    /// # Errors
    /// See [`Engine::list_snapshots`].
    pub async fn list_snapshots(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<Vec<Snapshot>> {
        match self {
            Backend::Embedded(e) => {
                let ctx = e.context(project, Some(vm_id)).await?;
                e.engine.list_snapshots(&ctx, vm_id).await
            }
            Backend::Remote(r) => r.list_snapshots(project, vm_id).await,
        }
    }

    /// Submits a snapshot create, revert or delete; the answer names the snapshot.
    ///
    /// # Errors
    /// See [`Engine::create_snapshot`], [`Engine::revert_snapshot`] and
    /// [`Engine::delete_snapshot`].
    pub async fn snapshot(
        &self,
        project: Option<&ProjectId>,
        action: Action,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        match self {
            Backend::Embedded(e) => {
                let op = action.operation();
                let (Action::Snapshot { vm_id, .. }
                | Action::RevertSnapshot { vm_id, .. }
                | Action::DeleteSnapshot { vm_id, .. }) = &action
                else {
                    return e
                        .submit(project, action, idempotency_key)
                        .await
                        .map(Accepted::from);
                };
                let ctx = e
                    .context(project, Some(vm_id))
                    .await
                    .map_err(|e| e.with_operation(op))?
                    .with_idempotency_key(idempotency_key);
                Ok(Accepted::from(
                    e.engine.submit_snapshot(&ctx, action).await?,
                ))
            }
            Backend::Remote(r) => r.submit(project, action, idempotency_key).await,
        }
    }

    /// Lists the VMs of `project`, oldest first.
    ///
    /// # Errors
    /// An invalid or unknown project.
    pub async fn list_vms(&self, project: &ProjectId) -> hcp_core::Result<Vec<TenantVm>> {
        match self {
            Backend::Embedded(e) => e.list_vms(project).await,
            Backend::Remote(r) => r.list_vms(project).await,
        }
    }

    /// Lists the VMs of `project` that match `filter`, in the order `sort` gives, following the
    /// pages.
    ///
    /// # Errors
    /// An invalid or unknown project; `InvalidSpec` naming the field for a bad filter.
    pub async fn list_vms_matching(
        &self,
        project: &ProjectId,
        filter: &VmFilter,
        sort: VmSort,
    ) -> hcp_core::Result<Vec<TenantVm>> {
        match self {
            Backend::Embedded(e) => e.list_vms_matching(project, filter, sort).await,
            Backend::Remote(r) => r.list_vms_matching(project, filter, sort).await,
        }
    }

    /// Returns one VM.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it does not exist in `project` (or at all).
    pub async fn get_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<TenantVm> {
        match self {
            Backend::Embedded(e) => e.get_vm(project, vm_id).await.map(|vm| vm.tenant_view()),
            Backend::Remote(r) => r.get_vm(project, vm_id).await,
        }
    }

    /// Hands out a console to a running VM.
    ///
    /// # Errors
    /// See [`Engine::console`].
    pub async fn console(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<Console> {
        match self {
            Backend::Embedded(e) => e.console(project, vm_id, kind).await,
            Backend::Remote(r) => r.console(project, vm_id, kind).await,
        }
    }

    /// Tells whether HCP relays `console` for this backend (the provider's upstream embedded,
    /// the service's WebSocket proxy remote), so `--listen` can bridge it.
    pub fn relays(&self, console: &Console) -> bool {
        match self {
            Backend::Embedded(_) => console.upstream.is_some(),
            Backend::Remote(_) => Remote::relays(console),
        }
    }

    /// Opens a console and returns its bytes, past any handshake: the provider's upstream
    /// (embedded) or the service's console proxy (remote).
    ///
    /// # Errors
    /// See [`Engine::console`]; [`ErrorKind::FeatureNotSupported`] for a console the client opens
    /// itself (a URL); [`ErrorKind::ProviderUnavailable`] when the console does not answer.
    pub async fn open_console(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<(ConsoleKind, Box<dyn ByteStream>)> {
        match self {
            Backend::Embedded(e) => {
                let console = e.console(project, vm_id, kind).await?;
                let Some(upstream) = &console.upstream else {
                    return Err(not_relayed(&console));
                };
                let stream = relay::dial(upstream, CONSOLE_DIAL_TIMEOUT)
                    .await
                    .map_err(|why| {
                        // Embedded mode is the operator's own engine: the reason may name hosts.
                        Error::new(
                            ErrorKind::ProviderUnavailable,
                            format!("the console of vm `{vm_id}` does not answer: {why}"),
                        )
                        .with_operation(hcp_core::Operation::Console)
                        .temporary()
                    })?;
                Ok((console.kind, stream))
            }
            Backend::Remote(r) => r.open_console(project, vm_id, kind).await,
        }
    }

    /// Returns one job.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it does not exist in `project` (or at all).
    pub async fn get_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<JobView> {
        match self {
            Backend::Embedded(e) => e.get_job(project, job_id).await,
            Backend::Remote(r) => r.get_job(project, job_id).await,
        }
    }

    /// Lists jobs, newest first.
    ///
    /// # Errors
    /// An invalid or unknown project.
    pub async fn list_jobs(
        &self,
        project: Option<&ProjectId>,
        filter: &JobFilter,
        limit: usize,
    ) -> hcp_core::Result<Vec<JobView>> {
        match self {
            Backend::Embedded(e) => e.list_jobs(project, filter, limit).await,
            Backend::Remote(r) => r.list_jobs(project, filter, limit).await,
        }
    }

    /// Follows a job: its past log lines, then live updates, then its end.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when it does not exist in `project` (or at all).
    pub async fn watch_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<JobStream> {
        match self {
            Backend::Embedded(e) => e.watch_job(project, job_id).await,
            Backend::Remote(r) => r.watch_job(project, job_id).await.map(JobStream::Remote),
        }
    }

    /// Cancels a job.
    ///
    /// # Errors
    /// See [`Engine::cancel_job`].
    pub async fn cancel_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<JobView> {
        match self {
            Backend::Embedded(e) => e.cancel_job(project, job_id).await,
            Backend::Remote(r) => r.cancel_job(project, job_id).await,
        }
    }

    /// Moves a running VM to another host of its provider and zone (operators; the embedded
    /// engine belongs to the local user, who is its operator). `project`, when given, must be
    /// the VM's.
    ///
    /// # Errors
    /// See [`Engine::migrate_vm`]; remote mode also reports a caller without the operator role.
    pub async fn migrate_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &hcp_core::MigrateRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        match self {
            Backend::Embedded(e) => {
                // A VM outside --project is not found, as for every other command.
                e.get_vm(project, vm_id).await?;
                e.engine
                    .migrate_vm(&e.principal, vm_id, request, idempotency_key)
                    .await
                    .map(Accepted::from)
            }
            Backend::Remote(r) => r.migrate_vm(vm_id, request, idempotency_key).await,
        }
    }

    /// Takes a VM created outside HCP into `project` (operators; the embedded engine belongs to
    /// the local user, who is its operator).
    ///
    /// # Errors
    /// See [`Engine::adopt_vm`]; remote mode also reports a caller without the operator role.
    pub async fn adopt_vm(
        &self,
        project: &ProjectId,
        request: &hcp_core::AdoptRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        match self {
            Backend::Embedded(e) => e
                .engine
                .adopt_vm(&e.principal, project, request, idempotency_key)
                .await
                .map(Accepted::from),
            Backend::Remote(r) => r.adopt_vm(project, request, idempotency_key).await,
        }
    }

    /// Releases a VM: removes HCP's mark from it and forgets it (operators). `project`, when
    /// given, must be the VM's.
    ///
    /// # Errors
    /// See [`Engine::release_vm`]; remote mode also reports a caller without the operator role.
    pub async fn release_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        match self {
            Backend::Embedded(e) => {
                e.get_vm(project, vm_id).await?;
                e.engine
                    .release_vm(&e.principal, vm_id, idempotency_key)
                    .await
                    .map(Accepted::from)
            }
            Backend::Remote(r) => r.release_vm(vm_id, idempotency_key).await,
        }
    }

    /// Returns every VM the last inventory found on the hosts, HCP's and others (operator
    /// view), with the ones an operator can adopt marked.
    ///
    /// # Errors
    /// None in embedded mode; remote mode reports transport errors and refusals.
    pub async fn inventory_vms(&self) -> hcp_core::Result<Vec<hcp_core::InventoryVm>> {
        match self {
            Backend::Embedded(e) => Ok(e.engine.inventory_vms()),
            Backend::Remote(r) => r.inventory_vms().await,
        }
    }

    /// Returns every host with its capacity and health (operator view).
    ///
    /// # Errors
    /// None in embedded mode; remote mode reports transport errors and refusals.
    pub async fn hosts(&self) -> hcp_core::Result<Vec<Host>> {
        match self {
            Backend::Embedded(e) => Ok(e.engine.hosts()),
            Backend::Remote(r) => r.hosts().await,
        }
    }

    /// Returns the catalog: images, flavors, networks and zones.
    ///
    /// # Errors
    /// None in embedded mode; remote mode reports transport errors.
    pub async fn catalog(&self) -> hcp_core::Result<Catalog> {
        match self {
            Backend::Embedded(e) => Ok(e.engine.catalog().clone()),
            Backend::Remote(r) => r.catalog().await,
        }
    }

    /// Returns what can be asked for in `zone`, or anywhere.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `zone` when it is unknown.
    pub async fn capabilities(&self, zone: Option<&str>) -> hcp_core::Result<Capabilities> {
        match self {
            Backend::Embedded(e) => e.engine.capabilities(zone),
            Backend::Remote(r) => r.capabilities(zone).await,
        }
    }
}

/// The embedded engine, its files and the principal commands act as.
#[derive(Debug)]
pub struct Embedded {
    engine: Engine,
    store: Arc<MemoryStore>,
    principal: Principal,
    paths: StatePaths,
    retention: Retention,
    /// Held by mutating commands until they close.
    lock: Option<EngineLock>,
}

impl Embedded {
    async fn open(config_path: Option<&Path>, mutating: bool) -> anyhow::Result<Embedded> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut config = hcp_providers::load_config(config_path, &env)?;
        let paths = StatePaths::resolve(config_path, &env)?;
        paths.create_dir()?;
        paths.assign_sim_state(&mut config)?;
        let lock = if mutating {
            Some(EngineLock::acquire(&paths.engine_lock, || {
                eprintln!("hcp: waiting for another hcp command on this environment to finish...");
            })?)
        } else {
            None
        };
        let settings = &config.engine;
        let retention = Retention {
            max_jobs: local::MAX_JOBS,
            jobs: settings.job_retention,
            keys: settings.idempotency_ttl,
        };
        let store = Arc::new(MemoryStore::new(
            settings.max_log_lines_per_job,
            settings.max_events,
        ));
        store.import(local::read_jobs(&paths.jobs)?);
        let engine = hcp_providers::register_all(Engine::builder(config))
            .store(store.clone())
            .without_background_reconcile()
            .build()
            .await?;
        Ok(Embedded {
            engine,
            store,
            principal: local_principal(),
            paths,
            retention,
            lock,
        })
    }

    async fn close(self) -> anyhow::Result<()> {
        self.engine.shutdown().await;
        if self.lock.is_some() {
            local::save_jobs(&self.paths.jobs, self.store.export(), self.retention)?;
        }
        drop(self.lock);
        Ok(())
    }

    /// Refuses an invalid or unknown project exactly as the engine's submit does.
    fn check_project(&self, project: &ProjectId) -> hcp_core::Result<()> {
        self.engine.check_project(project)
    }

    /// Returns the lookup scope: the project when given, else every project (the embedded
    /// engine belongs to the local user).
    fn scope(&self, project: Option<&ProjectId>) -> hcp_core::Result<Scope> {
        match project {
            Some(p) => {
                self.check_project(p)?;
                Ok(Scope::Project(p.clone()))
            }
            None => Ok(Scope::All),
        }
    }

    async fn get_vm(
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
            (None, Some(id)) => self.get_vm(None, id).await?.project,
            (None, None) => return Err(Error::invalid("project", "is required")),
        };
        Ok(RequestContext::new(project, self.principal.clone()))
    }

    async fn submit(
        &self,
        project: Option<&ProjectId>,
        action: Action,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Submitted> {
        let vm_id = match &action {
            Action::Create { .. } | Action::Adopt(_) => None,
            Action::Release { vm_id } => Some(vm_id.clone()),
            Action::Delete { vm_id, .. }
            | Action::Start { vm_id }
            | Action::Stop { vm_id, .. }
            | Action::Reboot { vm_id, .. }
            | Action::Snapshot { vm_id, .. }
            | Action::Migrate { vm_id, .. }
            | Action::RevertSnapshot { vm_id, .. }
            | Action::DeleteSnapshot { vm_id, .. }
            | Action::Resize { vm_id, .. } => Some(vm_id.clone()),
        };
        let op = action.operation();
        let ctx = self
            .context(project, vm_id.as_ref())
            .await
            .map_err(|e| e.with_operation(op))?
            .with_idempotency_key(idempotency_key);
        self.engine.submit(&ctx, action).await
    }

    async fn list_vms(&self, project: &ProjectId) -> hcp_core::Result<Vec<TenantVm>> {
        self.check_project(project)?;
        let scope = Scope::Project(project.clone());
        let mut vms = Vec::new();
        let mut page = PageRequest::all();
        loop {
            let p = self.engine.list_vms(&scope, &page).await?;
            vms.extend(p.items.iter().map(hcp_core::Vm::tenant_view));
            match p.next {
                Some(cursor) => page.cursor = Some(cursor),
                None => return Ok(vms),
            }
        }
    }

    async fn list_vms_matching(
        &self,
        project: &ProjectId,
        filter: &VmFilter,
        sort: VmSort,
    ) -> hcp_core::Result<Vec<TenantVm>> {
        self.check_project(project)?;
        let scope = Scope::Project(project.clone());
        let mut vms = Vec::new();
        let mut page = PageRequest::all();
        loop {
            let p = self
                .engine
                .list_vms_matching(&scope, filter, sort, &page)
                .await?;
            vms.extend(p.items.iter().map(hcp_core::Vm::tenant_view));
            match p.next {
                Some(cursor) => page.cursor = Some(cursor),
                None => return Ok(vms),
            }
        }
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
            .map_err(|e| e.with_operation(hcp_core::Operation::Console))?;
        self.engine
            .console(&ctx, vm_id, kind)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => name_field(e, "vm_id"),
                _ => e,
            })
    }

    async fn get_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<JobView> {
        let scope = self.scope(project)?;
        let job = self
            .engine
            .get_job(&scope, job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        Ok(JobView::from(&job))
    }

    async fn list_jobs(
        &self,
        project: Option<&ProjectId>,
        filter: &JobFilter,
        limit: usize,
    ) -> hcp_core::Result<Vec<JobView>> {
        let scope = self.scope(project)?;
        let mut jobs = Vec::new();
        let mut page = PageRequest::first(limit.min(PageRequest::MAX_LIMIT));
        while jobs.len() < limit {
            let p = self.engine.list_jobs(&scope, filter, &page).await?;
            jobs.extend(p.items.iter().map(JobView::from));
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
    ) -> hcp_core::Result<JobStream> {
        let scope = self.scope(project)?;
        let watch = self
            .engine
            .watch_job(&scope, job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        Ok(JobStream::Embedded(watch))
    }

    async fn cancel_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<JobView> {
        let scope = self.scope(project)?;
        let job = self
            .engine
            .cancel_job(&scope, job_id, &self.principal)
            .await?;
        Ok(JobView::from(&job))
    }
}

/// The principal the local user acts as: their login name. Idempotency keys are scoped to it.
fn local_principal() -> Principal {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "local".to_string());
    Principal::new(user)
}

/// Names `field` on an error that names none yet (an unknown id given on the command line).
fn name_field(e: Error, field: &str) -> Error {
    if e.field().is_none() {
        e.with_field(field)
    } else {
        e
    }
}
