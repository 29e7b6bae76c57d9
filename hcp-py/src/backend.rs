//! Where calls go: the engine embedded in this process, or a running `hcp serve` (through
//! hcp-client).
//!
//! Both answer with hcp-core's types, so everything above this module (typed objects, errors,
//! waiting, log iteration) is shared.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hcp_core::job::TenantJob;
use hcp_core::store::{PageRequest, Scope, VmFilter, VmSort};
use hcp_core::{
    Action, Capabilities, Catalog, Config, Console, Engine, Error, Host, InventoryVm, JobId,
    JobUpdate, Principal, ProjectId, RequestContext, Result, Snapshot, SnapshotSubmitted,
    Submitted, TenantVm, VmId,
};

/// A job's updates: past log lines, live lines and status changes, then its end.
pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<JobUpdate>> + Send>>;

/// Where an engine's configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// The simulator's demo catalog.
    Demo,
    /// A hosts file.
    File(PathBuf),
    /// The hosts file as JSON (a Python mapping), re-rendered as YAML so that errors name the
    /// key and a line; `origin` names it in errors.
    Json {
        /// The JSON text.
        text: String,
        /// What errors call it.
        origin: String,
    },
    /// Hosts-file text (YAML or JSON); `origin` names it in errors.
    Text {
        /// The text.
        text: String,
        /// What errors call it.
        origin: String,
    },
}

/// Whether a configuration came through `hcp_providers::load_config` (environment already
/// applied) or inline from Python.
enum SourceKind {
    Loaded,
    Inline,
}

/// The engine embedded in this process.
#[derive(Debug)]
pub struct Embedded {
    engine: Engine,
    principal: Principal,
}

impl Embedded {
    /// Builds the engine the way `hcp serve` does: the configuration (the simulator's demo when
    /// none), the environment applied on top, and every provider kind compiled in.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming the key (and line) of a bad configuration.
    pub async fn build(source: ConfigSource, principal: Principal) -> Result<Self> {
        let source_kind = match &source {
            ConfigSource::Demo | ConfigSource::File(_) => SourceKind::Loaded,
            ConfigSource::Json { .. } | ConfigSource::Text { .. } => SourceKind::Inline,
        };
        let env = |name: &str| std::env::var(name).ok();
        let mut config = match source {
            ConfigSource::Demo => hcp_providers::load_config(None, &env)?,
            ConfigSource::File(path) => hcp_providers::load_config(Some(&path), &env)?,
            ConfigSource::Json { text, origin } => {
                let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    Error::invalid("config", format!("{origin} is not valid JSON: {e}"))
                })?;
                let yaml = serde_yaml_ng::to_string(&value).map_err(|e| {
                    Error::invalid(
                        "config",
                        format!("{origin} cannot be rendered as YAML: {e}"),
                    )
                })?;
                Config::from_yaml(&yaml, &format!("{origin} (as YAML)"))?
            }
            ConfigSource::Text { text, origin } => Config::from_yaml(&text, &origin)?,
        };
        if matches!(source_kind, SourceKind::Inline) {
            config.apply_env(&env)?;
        }
        let engine = hcp_providers::register_all(Engine::builder(config))
            .build()
            .await?;
        Ok(Embedded { engine, principal })
    }

    fn ctx(&self, project: &str, key: Option<String>) -> RequestContext {
        RequestContext::new(project, self.principal.clone()).with_idempotency_key(key)
    }
}

/// A running HCP service (`hcp serve`), reached through hcp-client.
#[derive(Debug)]
pub struct Remote {
    client: hcp_client::Client,
}

impl Remote {
    /// Creates a client of the service at `url`, with an optional bearer token.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming `url` for a malformed URL, or `token` for a
    /// token that cannot be sent in a header.
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        let client = hcp_client::Client::builder(url).token(token).build()?;
        Ok(Remote { client })
    }

    /// Returns the service's base URL.
    pub fn url(&self) -> &str {
        self.client.base_url()
    }

    async fn submit(&self, project: &str, action: Action, key: Option<&str>) -> Result<Submitted> {
        let c = &self.client;
        let accepted = match action {
            Action::Create { spec, host: None } => c.create_vm(project, &spec, key).await?,
            Action::Create { host: Some(_), .. } => {
                return Err(Error::invalid("host", "tenants cannot pin a VM to a host"));
            }
            Action::Delete { vm_id, force } => c.delete_vm(project, &vm_id, force, key).await?,
            Action::Start { vm_id } => c.start_vm(project, &vm_id, key).await?,
            Action::Stop { vm_id, force } => c.stop_vm(project, &vm_id, force, key).await?,
            Action::Reboot { vm_id, hard } => c.reboot_vm(project, &vm_id, hard, key).await?,
            Action::Resize {
                vm_id,
                change,
                allow,
            } => c.resize_vm(project, &vm_id, &change, &allow, key).await?,
            other => {
                return Err(Error::invalid(
                    "operation",
                    format!("`{}` is not offered by the tenant API", other.operation()),
                ));
            }
        };
        // The service marks a replayed idempotent request with `Idempotency-Replayed: true`.
        Ok(Submitted {
            vm_id: accepted.vm_id,
            job_id: accepted.job_id,
            replayed: accepted.replayed,
        })
    }
}

/// Where calls go.
#[derive(Debug)]
pub enum Backend {
    /// The engine embedded in this process.
    Embedded(Embedded),
    /// A running HCP service.
    Remote(Remote),
}

impl Backend {
    /// Submits a change to a VM.
    ///
    /// # Errors
    /// The engine's refusal (invalid input, not found, capability, quota, idempotency conflict).
    pub async fn submit(
        &self,
        project: &str,
        action: Action,
        key: Option<String>,
    ) -> Result<Submitted> {
        match self {
            Backend::Embedded(e) => e.engine.submit(&e.ctx(project, key), action).await,
            Backend::Remote(r) => r.submit(project, action, key.as_deref()).await,
        }
    }

    /// Submits a snapshot create, revert or delete; the answer names the snapshot.
    ///
    /// # Errors
    /// The engine's refusal (invalid name, unknown snapshot, limit, capability, ...).
    pub async fn snapshot(
        &self,
        project: &str,
        action: Action,
        key: Option<String>,
    ) -> Result<SnapshotSubmitted> {
        match self {
            Backend::Embedded(e) => e.engine.submit_snapshot(&e.ctx(project, key), action).await,
            Backend::Remote(r) => {
                let c = &r.client;
                let key = key.as_deref();
                let accepted = match action {
                    Action::Snapshot { vm_id, name } => {
                        c.create_snapshot(project, &vm_id, &name, key).await?
                    }
                    Action::RevertSnapshot { vm_id, snapshot_id } => {
                        c.revert_snapshot(project, &vm_id, &snapshot_id, key)
                            .await?
                    }
                    Action::DeleteSnapshot { vm_id, snapshot_id } => {
                        c.delete_snapshot(project, &vm_id, &snapshot_id, key)
                            .await?
                    }
                    other => {
                        return Err(Error::invalid(
                            "operation",
                            format!("`{}` is not a snapshot operation", other.operation()),
                        ));
                    }
                };
                Ok(SnapshotSubmitted {
                    snapshot_id: accepted.snapshot_id.clone().unwrap_or_default(),
                    memory_state_kept: accepted.memory_state_kept,
                    submitted: Submitted {
                        vm_id: accepted.vm_id,
                        job_id: accepted.job_id,
                        replayed: accepted.replayed,
                    },
                })
            }
        }
    }

    /// Moves a running VM to another host of its provider and zone (operators; the embedded
    /// engine's caller is its operator).
    ///
    /// # Errors
    /// The engine's refusal: not found, `target_host` invalid, not running, no room,
    /// no live migration (cold moves are not offered); remotely, a caller without the operator
    /// role.
    pub async fn migrate_vm(
        &self,
        vm: &VmId,
        request: &hcp_core::MigrateRequest,
        key: Option<String>,
    ) -> Result<Submitted> {
        match self {
            Backend::Embedded(e) => e.engine.migrate_vm(&e.principal, vm, request, key).await,
            Backend::Remote(r) => r
                .client
                .migrate_vm(vm, request, key.as_deref())
                .await
                .map(Into::into),
        }
    }

    /// Takes a VM created outside HCP into `project` (operators; the embedded engine's caller
    /// is its operator): a job writes HCP's mark on it.
    ///
    /// # Errors
    /// The engine's refusal: an invalid project, name or tags naming the field, no such VM on
    /// the host, a VM HCP already manages, quota, a host that cannot write the mark; remotely,
    /// a caller without the operator role.
    pub async fn adopt_vm(
        &self,
        project: &str,
        request: &hcp_core::AdoptRequest,
        key: Option<String>,
    ) -> Result<Submitted> {
        match self {
            Backend::Embedded(e) => {
                let project = ProjectId::new(project);
                project.validate()?;
                e.engine
                    .adopt_vm(&e.principal, &project, request, key)
                    .await
            }
            Backend::Remote(r) => r
                .client
                .adopt_vm(project, request, key.as_deref())
                .await
                .map(Into::into),
        }
    }

    /// Gives a VM back (operators): a job removes HCP's mark and HCP forgets the VM, which
    /// stays as it is.
    ///
    /// # Errors
    /// Not found, a host that cannot remove the mark, a VM still being created; remotely, a
    /// caller without the operator role.
    pub async fn release_vm(&self, vm: &VmId, key: Option<String>) -> Result<Submitted> {
        match self {
            Backend::Embedded(e) => e.engine.release_vm(&e.principal, vm, key).await,
            Backend::Remote(r) => r
                .client
                .release_vm(vm, key.as_deref())
                .await
                .map(Into::into),
        }
    }

    /// Lists every VM the last inventory found on the hosts, HCP's and others (operator view),
    /// with the ones an operator can adopt marked.
    ///
    /// # Errors
    /// None for the embedded engine; remotely, the service's refusal.
    pub async fn inventory_vms(&self) -> Result<Vec<InventoryVm>> {
        match self {
            Backend::Embedded(e) => Ok(e.engine.inventory_vms()),
            Backend::Remote(r) => r.client.inventory_vms().await,
        }
    }

    /// Plans a resize; changes nothing.
    ///
    /// # Errors
    /// Not found, or a bad size naming the field.
    pub async fn plan_resize(
        &self,
        project: &str,
        vm: &VmId,
        request: &hcp_core::ResizeRequest,
    ) -> Result<Vec<hcp_core::FieldPlan>> {
        match self {
            Backend::Embedded(e) => {
                e.engine
                    .plan_resize(&e.ctx(project, None), vm, request)
                    .await
            }
            Backend::Remote(r) => r.client.plan_resize(project, vm, request).await,
        }
    }

    /// Lists a VM's snapshots, oldest first.
    ///
    /// # Errors
    /// Not found, or a hypervisor that cannot snapshot.
    pub async fn list_snapshots(&self, project: &str, vm: &VmId) -> Result<Vec<Snapshot>> {
        match self {
            Backend::Embedded(e) => e.engine.list_snapshots(&e.ctx(project, None), vm).await,
            Backend::Remote(r) => r.client.list_snapshots(project, vm).await,
        }
    }

    /// Creates a server group in `project`.
    ///
    /// # Errors
    /// An invalid name, or a name taken in the project.
    pub async fn create_server_group(
        &self,
        project: &str,
        new: hcp_core::NewServerGroup,
    ) -> Result<hcp_core::ServerGroup> {
        match self {
            Backend::Embedded(e) => {
                e.engine
                    .create_server_group(&e.ctx(project, None), new)
                    .await
            }
            Backend::Remote(r) => {
                r.client
                    .create_server_group(project, &new.name, new.policy, new.strength)
                    .await
            }
        }
    }

    /// Lists a project's server groups (every page), by id.
    ///
    /// # Errors
    /// An invalid or unknown project.
    pub async fn list_server_groups(&self, project: &str) -> Result<Vec<hcp_core::ServerGroup>> {
        let mut page = PageRequest::all();
        let mut out = Vec::new();
        loop {
            let p = match self {
                Backend::Embedded(e) => {
                    let ctx = e.ctx(project, None);
                    e.engine.check_project(&ctx.project)?;
                    e.engine.list_server_groups(&ctx.scope(), &page).await?
                }
                Backend::Remote(r) => r.client.list_server_groups(project, &page).await?,
            };
            out.extend(p.items);
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Returns a server group of `project` with its members.
    ///
    /// # Errors
    /// Not found (also for another project's group).
    pub async fn get_server_group(
        &self,
        project: &str,
        id: &hcp_core::ServerGroupId,
    ) -> Result<hcp_core::ServerGroup> {
        match self {
            Backend::Embedded(e) => {
                let ctx = e.ctx(project, None);
                e.engine.check_project(&ctx.project)?;
                e.engine.get_server_group(&ctx.scope(), id).await
            }
            Backend::Remote(r) => r.client.get_server_group(project, id).await,
        }
    }

    /// Deletes an empty server group of `project`.
    ///
    /// # Errors
    /// Not found, or `SERVER_GROUP_NOT_EMPTY` while VMs are in it.
    pub async fn delete_server_group(
        &self,
        project: &str,
        id: &hcp_core::ServerGroupId,
    ) -> Result<()> {
        match self {
            Backend::Embedded(e) => {
                e.engine
                    .delete_server_group(&e.ctx(project, None), id)
                    .await
            }
            Backend::Remote(r) => r.client.delete_server_group(project, id).await,
        }
    }

    /// Lists a project's VMs, oldest first.
    ///
    /// # Errors
    /// An invalid project id.
    pub async fn list_vms(&self, project: &str) -> Result<Vec<TenantVm>> {
        match self {
            Backend::Embedded(e) => {
                let ctx = e.ctx(project, None);
                ctx.project.validate()?;
                let scope = ctx.scope();
                let mut page = PageRequest::all();
                let mut out = Vec::new();
                loop {
                    let p = e.engine.list_vms(&scope, &page).await?;
                    out.extend(p.items.iter().map(hcp_core::Vm::tenant_view));
                    match p.next {
                        Some(cursor) => page.cursor = Some(cursor),
                        None => return Ok(out),
                    }
                }
            }
            Backend::Remote(r) => r.client.list_all_vms(project).await,
        }
    }

    /// Lists a project's VMs that match `filter`, in the order `sort` gives, following the
    /// pages.
    ///
    /// # Errors
    /// An invalid project id; `InvalidSpec` naming the field for a bad filter.
    pub async fn list_vms_matching(
        &self,
        project: &str,
        filter: &VmFilter,
        sort: VmSort,
    ) -> Result<Vec<TenantVm>> {
        filter.validate()?;
        match self {
            Backend::Embedded(e) => {
                let ctx = e.ctx(project, None);
                ctx.project.validate()?;
                let scope = ctx.scope();
                let mut page = PageRequest::all();
                let mut out = Vec::new();
                loop {
                    let p = e
                        .engine
                        .list_vms_matching(&scope, filter, sort, &page)
                        .await?;
                    out.extend(p.items.iter().map(hcp_core::Vm::tenant_view));
                    match p.next {
                        Some(cursor) => page.cursor = Some(cursor),
                        None => return Ok(out),
                    }
                }
            }
            Backend::Remote(r) => r.client.list_all_vms_matching(project, filter, sort).await,
        }
    }

    /// Returns one VM of a project.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::NotFound`] when it does not exist in `project`.
    pub async fn get_vm(&self, project: &str, vm: &VmId) -> Result<TenantVm> {
        match self {
            Backend::Embedded(e) => {
                let ctx = e.ctx(project, None);
                ctx.project.validate()?;
                Ok(e.engine.get_vm(&ctx.scope(), vm).await?.tenant_view())
            }
            Backend::Remote(r) => r.client.get_vm(project, vm).await,
        }
    }

    /// Hands out a console to a running VM.
    ///
    /// # Errors
    /// Not found, no console capability, or a VM that is not running.
    pub async fn console(&self, project: &str, vm: &VmId) -> Result<Console> {
        match self {
            Backend::Embedded(e) => e.engine.console(&e.ctx(project, None), vm, None).await,
            Backend::Remote(r) => r.client.console(project, vm, None).await,
        }
    }

    /// Returns a job.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::NotFound`] for an unknown job.
    pub async fn get_job(&self, job: &JobId) -> Result<TenantJob> {
        match self {
            Backend::Embedded(e) => Ok(e.engine.get_job(&Scope::All, job).await?.tenant_view()),
            Backend::Remote(r) => r.client.get_job(job).await,
        }
    }

    /// Waits until a job ends.
    ///
    /// # Errors
    /// Not found, or [`hcp_core::ErrorKind::Timeout`] (with the job in its context) when
    /// `timeout` passes first.
    pub async fn wait_job(&self, job: &JobId, timeout: Option<Duration>) -> Result<TenantJob> {
        let job = match self {
            Backend::Embedded(e) => e.engine.wait_job(&Scope::All, job, timeout).await?,
            Backend::Remote(r) => r.client.wait_job(job, timeout).await?,
        };
        Ok(job.tenant_view())
    }

    /// Follows a job: its past log lines, then live lines and status changes, then its end.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::NotFound`] for an unknown job.
    pub async fn watch_job(&self, job: &JobId) -> Result<UpdateStream> {
        match self {
            Backend::Embedded(e) => {
                let watch = e.engine.watch_job(&Scope::All, job).await?;
                // The tenant view, as the service's stream: no operator-only lines or details.
                Ok(watch
                    .into_stream()
                    .filter_map(|u| futures::future::ready(u.tenant_view()))
                    .map(Ok)
                    .boxed())
            }
            Backend::Remote(r) => r.client.watch_job(job).await,
        }
    }

    /// Lists every host with its capacity and health.
    ///
    /// # Errors
    /// None for the embedded engine.
    pub async fn hosts(&self) -> Result<Vec<Host>> {
        match self {
            Backend::Embedded(e) => Ok(e.engine.hosts()),
            Backend::Remote(r) => r.client.hosts().await,
        }
    }

    /// Returns the catalog.
    ///
    /// # Errors
    /// None for the embedded engine.
    pub async fn catalog(&self) -> Result<Catalog> {
        match self {
            Backend::Embedded(e) => Ok(e.engine.catalog().clone()),
            Backend::Remote(r) => r.client.catalog().await,
        }
    }

    /// Returns what can be asked for in `zone`, or anywhere.
    ///
    /// # Errors
    /// [`hcp_core::ErrorKind::InvalidSpec`] naming `zone` when it is unknown.
    pub async fn capabilities(&self, zone: Option<&str>) -> Result<Capabilities> {
        match self {
            Backend::Embedded(e) => e.engine.capabilities(zone),
            Backend::Remote(r) => r.client.capabilities(zone).await,
        }
    }

    /// Stops background work (the embedded engine's reconciler).
    pub async fn close(&self) {
        match self {
            Backend::Embedded(e) => {
                e.engine.shutdown().await;
            }
            // Connections close when the last clone of the client drops.
            Backend::Remote(_) => {}
        }
    }
}

/// Checks a timeout given in seconds.
///
/// # Errors
/// [`hcp_core::ErrorKind::InvalidSpec`] naming `timeout` when it is negative, not finite or
/// too large.
pub fn timeout_from_secs(secs: Option<f64>) -> Result<Option<Duration>> {
    secs.map(|s| {
        if !s.is_finite() || s < 0.0 {
            return Err(Error::invalid(
                "timeout",
                format!(
                    "is {s}; allowed: a finite number of seconds >= 0, or None to wait forever"
                ),
            ));
        }
        Duration::try_from_secs_f64(s).map_err(|_| {
            Error::invalid(
                "timeout",
                format!("{s} seconds is too long; use None to wait forever"),
            )
        })
    })
    .transpose()
}
