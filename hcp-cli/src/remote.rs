//! The remote backend: every command goes to a running `hcp serve` through `hcp-client`.
//!
//! The tenant API is project-scoped; a command on an existing VM given by id without
//! `--project` asks the service for the VM's project first (`GET .../vms/{vmId}`), as the
//! embedded engine finds it itself, so the rule is the same in both modes. Errors arrive as
//! the same [`hcp_core::Error`]s an embedded engine returns (the client decodes the problem body),
//! so messages and exit codes do not depend on the mode.

use futures::StreamExt;
use futures::stream::BoxStream;
use hcp_client::Client;
use hcp_core::store::{JobFilter, PageRequest};
use hcp_core::{
    Action, Capabilities, Catalog, Console, ConsoleKind, ConsoleUpstream, Error, ErrorKind, Host,
    JobId, JobUpdate, ProjectId, SecretString, TenantVm, TlsTrust, VmId,
};
use hcp_server::relay::{self, ByteStream};

use crate::backend::Accepted;
use crate::views::{JobEvent, JobView};

/// A client of one service.
#[derive(Debug)]
pub struct Remote {
    client: Client,
    /// The bearer token, for the console proxy's WebSocket upgrade.
    token: Option<SecretString>,
}

/// Checks an idempotency key before it is sent.
fn check_key(key: Option<&str>, op: hcp_core::Operation) -> hcp_core::Result<()> {
    match key {
        Some(k) => hcp_core::validate_idempotency_key(k).map_err(|e| e.with_operation(op)),
        None => Ok(()),
    }
}

/// Turns the answer of an ops route that starts a job into the CLI's.
fn ops_accepted(a: hcp_client::Accepted) -> Accepted {
    Accepted {
        vm_id: a.vm_id,
        job_id: a.job_id,
        replayed: a.replayed,
        snapshot_id: None,
        memory_state_kept: None,
    }
}

/// Returns the error for a command that needs a project the user did not give.
fn project_required() -> Error {
    Error::new(
        ErrorKind::InvalidSpec,
        "--project (or HCP_PROJECT) is required with --url: the service's tenant API is \
         project-scoped",
    )
    .with_field("project")
}

/// Returns the project, checked as the service checks it (so that a malformed one, even one too
/// long for a URL, is refused by name before anything is sent).
fn require(project: Option<&ProjectId>) -> hcp_core::Result<&ProjectId> {
    let project = project.ok_or_else(project_required)?;
    project.validate()?;
    Ok(project)
}

/// Names `field` on a "not found" error that names none yet (an unknown id given on the
/// command line), as the embedded backend does.
fn name_field(e: Error, field: &str) -> Error {
    if e.kind() == ErrorKind::NotFound && e.field().is_none() {
        e.with_field(field)
    } else {
        e
    }
}

impl Remote {
    /// Returns the project of a command on `vm_id`: `project` when given (checked as the
    /// service checks it), else the project of the caller's VM with that id.
    async fn project_of(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<ProjectId> {
        match project {
            Some(p) => require(Some(p)).cloned(),
            None => Ok(self
                .client
                .find_vm(vm_id)
                .await
                .map_err(|e| name_field(e, "vm_id"))?
                .project),
        }
    }

    /// Connects to the service at `url`, sending `token` as a bearer token.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `url` for a URL that is not `http(s)://host[:port]`, or
    /// `token` for one that cannot be sent in a header.
    pub fn connect(url: &str, token: Option<&SecretString>) -> hcp_core::Result<Remote> {
        let client = Client::builder(url)
            .token(token.map(|t| t.expose().to_string()))
            .build()?;
        Ok(Remote {
            client,
            token: token.cloned(),
        })
    }

    /// Submits a change and returns at once with its job.
    pub async fn submit(
        &self,
        project: Option<&ProjectId>,
        action: Action,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = action.operation();
        let vm_id = match &action {
            Action::Delete { vm_id, .. }
            | Action::Start { vm_id }
            | Action::Stop { vm_id, .. }
            | Action::Reboot { vm_id, .. }
            | Action::Snapshot { vm_id, .. }
            | Action::RevertSnapshot { vm_id, .. }
            | Action::DeleteSnapshot { vm_id, .. }
            | Action::Resize { vm_id, .. } => Some(vm_id),
            _ => None,
        };
        let project = match vm_id {
            Some(vm_id) => self.project_of(project, vm_id).await,
            None => require(project).cloned(),
        }
        .map_err(|e| e.with_operation(op))?;
        let project = &project;
        if let Some(key) = &idempotency_key {
            // The service reads an empty header as no key at all; refuse what the engine refuses.
            hcp_core::validate_idempotency_key(key).map_err(|e| e.with_operation(op))?;
        }
        let p = project.as_str();
        let key = idempotency_key.as_deref();
        let accepted = match action {
            Action::Create { spec, host: None } => self.client.create_vm(p, &spec, key).await,
            Action::Delete { vm_id, force } => self.client.delete_vm(p, &vm_id, force, key).await,
            Action::Start { vm_id } => self.client.start_vm(p, &vm_id, key).await,
            Action::Stop { vm_id, force } => self.client.stop_vm(p, &vm_id, force, key).await,
            Action::Reboot { vm_id, hard } => self.client.reboot_vm(p, &vm_id, hard, key).await,
            Action::Snapshot { vm_id, name } => {
                self.client.create_snapshot(p, &vm_id, &name, key).await
            }
            Action::RevertSnapshot { vm_id, snapshot_id } => {
                self.client
                    .revert_snapshot(p, &vm_id, &snapshot_id, key)
                    .await
            }
            Action::DeleteSnapshot { vm_id, snapshot_id } => {
                self.client
                    .delete_snapshot(p, &vm_id, &snapshot_id, key)
                    .await
            }
            Action::Resize {
                vm_id,
                change,
                allow,
            } => self.client.resize_vm(p, &vm_id, &change, &allow, key).await,
            _ => Err(Error::new(
                ErrorKind::FeatureNotSupported,
                format!("`{op}` is not available through the tenant API"),
            )
            .with_operation(op)),
        }
        .map_err(|e| match op {
            hcp_core::Operation::CreateVm => e,
            _ => name_field(e, "vm_id"),
        })?;
        Ok(Accepted {
            vm_id: accepted.vm_id,
            job_id: accepted.job_id,
            // The service marks a replay with `Idempotency-Replayed: true`.
            replayed: accepted.replayed,
            snapshot_id: accepted.snapshot_id,
            memory_state_kept: accepted.memory_state_kept,
        })
    }

    /// Moves a VM to another host through the ops API (operators only).
    pub async fn migrate_vm(
        &self,
        vm_id: &VmId,
        request: &hcp_core::MigrateRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = hcp_core::Operation::MigrateVm;
        check_key(idempotency_key.as_deref(), op)?;
        self.client
            .migrate_vm(vm_id, request, idempotency_key.as_deref())
            .await
            .map(ops_accepted)
            .map_err(|e| name_field(e, "vm_id").with_operation(op))
    }

    /// Takes a VM created outside HCP into `project` through the ops API (operators only).
    pub async fn adopt_vm(
        &self,
        project: &ProjectId,
        request: &hcp_core::AdoptRequest,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = hcp_core::Operation::AdoptVm;
        check_key(idempotency_key.as_deref(), op)?;
        self.client
            .adopt_vm(project.as_str(), request, idempotency_key.as_deref())
            .await
            .map(ops_accepted)
            .map_err(|e| e.with_operation(op))
    }

    /// Releases a VM through the ops API (operators only).
    pub async fn release_vm(
        &self,
        vm_id: &VmId,
        idempotency_key: Option<String>,
    ) -> hcp_core::Result<Accepted> {
        let op = hcp_core::Operation::ReleaseVm;
        check_key(idempotency_key.as_deref(), op)?;
        self.client
            .release_vm(vm_id, idempotency_key.as_deref())
            .await
            .map(ops_accepted)
            .map_err(|e| name_field(e, "vm_id").with_operation(op))
    }

    /// Plans a resize of a VM of the project.
    pub async fn plan_resize(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        request: &hcp_core::ResizeRequest,
    ) -> hcp_core::Result<Vec<hcp_core::FieldPlan>> {
        let project = self.project_of(project, vm_id).await?;
        self.client
            .plan_resize(project.as_str(), vm_id, request)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    /// Creates a server group in `project`.
    ///
    /// # Errors
    /// The service's error.
    pub async fn create_server_group(
        &self,
        project: &ProjectId,
        new: hcp_core::NewServerGroup,
    ) -> hcp_core::Result<hcp_core::ServerGroup> {
        self.client
            .create_server_group(project.as_str(), &new.name, new.policy, new.strength)
            .await
    }

    /// Lists a project's server groups (every page).
    ///
    /// # Errors
    /// The service's error.
    pub async fn list_server_groups(
        &self,
        project: &ProjectId,
    ) -> hcp_core::Result<Vec<hcp_core::ServerGroup>> {
        let mut page = PageRequest::all();
        let mut out = Vec::new();
        loop {
            let p = self
                .client
                .list_server_groups(project.as_str(), &page)
                .await?;
            out.extend(p.items);
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Returns a server group of `project`.
    ///
    /// # Errors
    /// The service's error.
    pub async fn get_server_group(
        &self,
        project: &ProjectId,
        id: &hcp_core::ServerGroupId,
    ) -> hcp_core::Result<hcp_core::ServerGroup> {
        self.client.get_server_group(project.as_str(), id).await
    }

    /// Deletes an empty server group of `project`.
    ///
    /// # Errors
    /// The service's error.
    pub async fn delete_server_group(
        &self,
        project: &ProjectId,
        id: &hcp_core::ServerGroupId,
    ) -> hcp_core::Result<()> {
        self.client.delete_server_group(project.as_str(), id).await
    }

    /// Lists a VM's snapshots.
    pub async fn list_snapshots(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<Vec<hcp_core::Snapshot>> {
        let op = hcp_core::Operation::ListSnapshots;
        let project = self
            .project_of(project, vm_id)
            .await
            .map_err(|e| e.with_operation(op))?;
        self.client
            .list_snapshots(project.as_str(), vm_id)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    /// Lists a project's VMs, following the pages.
    pub async fn list_vms(&self, project: &ProjectId) -> hcp_core::Result<Vec<TenantVm>> {
        project.validate()?;
        self.client.list_all_vms(project.as_str()).await
    }

    /// Lists a project's VMs that match `filter`, in the order `sort` gives, following the
    /// pages.
    pub async fn list_vms_matching(
        &self,
        project: &ProjectId,
        filter: &hcp_core::store::VmFilter,
        sort: hcp_core::store::VmSort,
    ) -> hcp_core::Result<Vec<TenantVm>> {
        project.validate()?;
        filter.validate()?;
        self.client
            .list_all_vms_matching(project.as_str(), filter, sort)
            .await
    }

    /// Returns one VM of the project.
    pub async fn get_vm(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
    ) -> hcp_core::Result<TenantVm> {
        let project = self.project_of(project, vm_id).await?;
        self.client
            .get_vm(project.as_str(), vm_id)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    /// Opens a console to a VM of the project.
    pub async fn console(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<Console> {
        let project = self
            .project_of(project, vm_id)
            .await
            .map_err(|e| e.with_operation(hcp_core::Operation::Console))?;
        self.client
            .console(project.as_str(), vm_id, kind)
            .await
            .map_err(|e| name_field(e, "vm_id"))
    }

    /// Tells whether the service relays `console`: its URL is the service's WebSocket proxy.
    pub fn relays(console: &Console) -> bool {
        console.url.starts_with("ws://") || console.url.starts_with("wss://")
    }

    /// Opens a console through the service's console proxy and returns its bytes.
    ///
    /// # Errors
    /// As [`Remote::console`]; [`ErrorKind::FeatureNotSupported`] for a console the client opens
    /// itself (a URL, not the proxy); [`ErrorKind::ProviderUnavailable`] when the proxy does not
    /// answer.
    pub async fn open_console(
        &self,
        project: Option<&ProjectId>,
        vm_id: &VmId,
        kind: Option<ConsoleKind>,
    ) -> hcp_core::Result<(ConsoleKind, Box<dyn ByteStream>)> {
        let console = self.console(project, vm_id, kind).await?;
        if !Remote::relays(&console) {
            return Err(crate::backend::not_relayed(&console));
        }
        let mut upstream = ConsoleUpstream::websocket(console.url.clone(), TlsTrust::System)
            .with_subprotocol("binary");
        if let Some(t) = &self.token {
            upstream = upstream.with_header("Authorization", format!("Bearer {}", t.expose()));
        }
        let stream = relay::dial(&upstream, crate::backend::CONSOLE_DIAL_TIMEOUT)
            .await
            .map_err(|why| {
                Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!("the service's console proxy does not answer: {why}"),
                )
                .with_operation(hcp_core::Operation::Console)
                .temporary()
            })?;
        Ok((console.kind, stream))
    }

    /// Refuses an invalid or unknown project the way the service's project-scoped routes do
    /// (the job routes are not project-scoped).
    async fn check_project(&self, project: &ProjectId) -> hcp_core::Result<()> {
        project.validate()?;
        self.client
            .list_jobs(
                project.as_str(),
                &JobFilter::default(),
                &PageRequest::first(1),
            )
            .await
            .map(|_| ())
    }

    /// Returns a job; with `project`, a job of another project is not found.
    pub async fn get_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<JobView> {
        if let Some(p) = project {
            self.check_project(p).await?;
        }
        let job = self
            .client
            .get_job(job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        if let Some(p) = project
            && *p != job.project
        {
            return Err(Error::not_found("job", job_id).with_field("job_id"));
        }
        Ok(JobView::from(&job))
    }

    /// Lists a project's jobs, newest first, at most `limit`.
    pub async fn list_jobs(
        &self,
        project: Option<&ProjectId>,
        filter: &JobFilter,
        limit: usize,
    ) -> hcp_core::Result<Vec<JobView>> {
        if let Some(p) = project {
            p.validate()?;
        }
        let mut jobs = Vec::new();
        let mut page = PageRequest::first(limit.min(PageRequest::MAX_LIMIT));
        while jobs.len() < limit {
            // Without a project: every project the caller is a member of, as embedded.
            let p = match project {
                Some(project) => {
                    self.client
                        .list_jobs(project.as_str(), filter, &page)
                        .await?
                }
                None => self.client.list_my_jobs(filter, &page).await?,
            };
            jobs.extend(p.items.iter().map(JobView::from));
            match p.next {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        jobs.truncate(limit);
        Ok(jobs)
    }

    /// Follows a job's server-sent log stream.
    pub async fn watch_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<RemoteWatch> {
        if project.is_some() {
            // The log route is not project-scoped: check the project first, as the embedded
            // engine's scoped lookup does.
            self.get_job(project, job_id).await?;
        }
        let stream = self
            .client
            .watch_job(job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        Ok(RemoteWatch {
            stream,
            client: self.client.clone(),
            job_id: job_id.clone(),
            ended: false,
        })
    }

    /// Cancels a job. Without `project`, the job's own project is looked up first (the job
    /// route is not project-scoped); with it, a job of another project is not found.
    pub async fn cancel_job(
        &self,
        project: Option<&ProjectId>,
        job_id: &JobId,
    ) -> hcp_core::Result<JobView> {
        let project = match project {
            Some(p) => p.clone(),
            None => {
                self.client
                    .get_job(job_id)
                    .await
                    .map_err(|e| name_field(e, "job_id"))?
                    .project
            }
        };
        let job = self
            .client
            .cancel_job(project.as_str(), job_id)
            .await
            .map_err(|e| name_field(e, "job_id"))?;
        Ok(JobView::from(&job))
    }

    /// Returns every host (the ops API).
    pub async fn hosts(&self) -> hcp_core::Result<Vec<Host>> {
        self.client.hosts().await
    }

    /// Returns every VM the last inventory found on the hosts (the ops API).
    pub async fn inventory_vms(&self) -> hcp_core::Result<Vec<hcp_core::InventoryVm>> {
        self.client.inventory_vms().await
    }

    /// Returns the catalog (the common API).
    pub async fn catalog(&self) -> hcp_core::Result<Catalog> {
        self.client.catalog().await
    }

    /// Returns what can be asked for in `zone`, or anywhere.
    pub async fn capabilities(&self, zone: Option<&str>) -> hcp_core::Result<Capabilities> {
        self.client.capabilities(zone).await
    }
}

/// A job's server-sent event stream.
pub struct RemoteWatch {
    stream: BoxStream<'static, hcp_core::Result<JobUpdate>>,
    client: Client,
    job_id: JobId,
    ended: bool,
}

impl std::fmt::Debug for RemoteWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWatch")
            .field("job_id", &self.job_id)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl RemoteWatch {
    /// Returns the next update, or `None` after the end.
    ///
    /// When the stream closes before the job's end event (a proxy cut it, the service
    /// stopped), asks for the job: an ended job yields its end; a running one is an error.
    pub async fn next(&mut self) -> Option<hcp_core::Result<JobEvent>> {
        if self.ended {
            return None;
        }
        match self.stream.next().await {
            Some(Ok(update)) => {
                let event = JobEvent::from(update);
                if matches!(event, JobEvent::End { .. }) {
                    self.ended = true;
                }
                Some(Ok(event))
            }
            Some(Err(e)) => {
                self.ended = true;
                Some(Err(e))
            }
            None => {
                self.ended = true;
                Some(self.end_after_close().await)
            }
        }
    }

    async fn end_after_close(&self) -> hcp_core::Result<JobEvent> {
        let job = self.client.get_job(&self.job_id).await?;
        if job.state.is_terminal() {
            Ok(JobEvent::End {
                job: Box::new(JobView::from(&job)),
            })
        } else {
            Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!(
                    "the log stream of job {} closed before the job ended (it is {}); follow it \
                     again with `hcp job watch {}`",
                    self.job_id, job.state, self.job_id
                ),
            )
            .temporary())
        }
    }
}
