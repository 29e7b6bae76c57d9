//! `hcp._hcp.Core`: every operation once as a Rust future, offered to Python twice — as a
//! blocking call (GIL released, Ctrl-C honoured) and as an asyncio awaitable
//! ([`crate::runtime::awaitable`], pyo3-async-runtimes). The public classes
//! `hcp.Engine`, `hcp.Client`, `hcp.AsyncEngine` and `hcp.AsyncClient` (Python) wrap it.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use hcp_core::store::{VmFilter, VmSort, parse_power_filter, parse_state_filter};
use hcp_core::{Action, Error, JobId, JobState, Principal, VmId, VmSpec};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::backend::{
    Backend, ConfigSource, UpdateStream, project as pid, snapshot_submitted,
    submitted as core_submitted, timeout_from_secs,
};
use crate::errors::Failure;
use crate::runtime::{awaitable, block_on};
use crate::spec::{CreateArgs, flag, optional_str, required_str, seconds};
use crate::types::{
    Capabilities, Catalog, Console, FieldPlan, Host, InventoryVm, Job, JobLogLine, ServerGroup,
    Snapshot, Submitted, Vm,
};
use hcp_client::TenantUpdate;

type Outcome<T> = Result<T, Failure>;

/// The filter and sort arguments of `list_vms`, read from Python (an argument of the wrong
/// type is an error naming it, reported when the call runs).
struct VmQuery(Result<(VmFilter, VmSort), Error>);

impl VmQuery {
    /// Reads and parses the arguments, with errors naming the argument.
    fn read(
        name_prefix: &Bound<'_, PyAny>,
        tags: &Bound<'_, PyAny>,
        state: &Bound<'_, PyAny>,
        power: &Bound<'_, PyAny>,
        sort: &Bound<'_, PyAny>,
    ) -> Self {
        let parse = || -> Result<(VmFilter, VmSort), Error> {
            let filter = VmFilter {
                name_prefix: optional_str("name_prefix", name_prefix)?,
                tags: crate::spec::tags(tags)?.into_iter().collect(),
                state: optional_str("state", state)?
                    .as_deref()
                    .map(parse_state_filter)
                    .transpose()?,
                power: optional_str("power", power)?
                    .as_deref()
                    .map(parse_power_filter)
                    .transpose()?,
            };
            let sort = match optional_str("sort", sort)? {
                Some(s) => s.parse()?,
                None => VmSort::default(),
            };
            Ok((filter, sort))
        };
        VmQuery(parse())
    }
}

/// The native half of every HCP client object.
#[pyclass(frozen, module = "hcp._hcp")]
pub struct Core {
    backend: Mutex<Option<Arc<Backend>>>,
    description: String,
}

/// A change to a VM other than creating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VmChange {
    Start,
    Stop,
    Reboot,
    Delete,
}

impl VmChange {
    fn parse(op: &str) -> Result<Self, Error> {
        Ok(match op {
            "start" => VmChange::Start,
            "stop" => VmChange::Stop,
            "reboot" => VmChange::Reboot,
            "delete" => VmChange::Delete,
            other => {
                return Err(Error::invalid(
                    "operation",
                    format!("unknown VM operation `{other}`; allowed: start, stop, reboot, delete"),
                ));
            }
        })
    }

    fn action(self, vm_id: VmId, force: bool, hard: bool) -> Action {
        match self {
            VmChange::Start => Action::Start { vm_id },
            VmChange::Stop => Action::Stop { vm_id, force },
            VmChange::Reboot => Action::Reboot { vm_id, hard },
            VmChange::Delete => Action::Delete { vm_id, force },
        }
    }
}

/// `create_vm`'s arguments once read: project, spec, idempotency key, wait, timeout.
type CreateInput = (String, VmSpec, Option<String>, bool, Option<f64>);

/// Reads `create_vm`'s arguments, raising `hcp.InvalidSpec` naming the first of a wrong type.
fn create_input(
    py: Python<'_>,
    project: &Bound<'_, PyAny>,
    args: &CreateArgs<'_>,
    (key, wait, timeout): (&Bound<'_, PyAny>, &Bound<'_, PyAny>, &Bound<'_, PyAny>),
) -> PyResult<CreateInput> {
    let read = || {
        Ok::<_, Error>((
            required_str("project", project)?,
            args.to_spec()?,
            optional_str("idempotency_key", key)?,
            flag("wait", wait)?,
            seconds("timeout", timeout)?,
        ))
    };
    read().map_err(|e| Failure::from(e).into_pyerr(py))
}

/// Reads `adopt_vm`'s arguments, raising `hcp.InvalidSpec` naming `tags` when they are not a
/// mapping of strings.
fn adopt_request(
    py: Python<'_>,
    host: String,
    vm: String,
    name: Option<String>,
    tags: &Bound<'_, PyAny>,
    provider: Option<String>,
) -> PyResult<hcp_core::AdoptRequest> {
    let tags = if tags.is_none() {
        None
    } else {
        Some(crate::spec::tags(tags).map_err(|e| Failure::from(e).into_pyerr(py))?)
    };
    Ok(hcp_core::AdoptRequest::new(host, vm)
        .with_name(name)
        .with_tags(tags)
        .with_provider(provider))
}

/// Submits `action` and, when asked, waits for its job; a job that ends without succeeding
/// becomes [`Failure::JobEnded`].
///
/// The submission runs as its own task, so it completes even when the caller stops waiting
/// (Ctrl-C, asyncio cancellation): no half-accepted request is left behind.
async fn submit_and_wait(
    backend: Arc<Backend>,
    project: String,
    action: Action,
    key: Option<String>,
    wait: bool,
    timeout: Option<f64>,
) -> Outcome<Submitted> {
    let timeout = timeout_from_secs(timeout)?;
    let submitter = backend.clone();
    let submitted = tokio::spawn(async move {
        submitter
            .submit(Some(&pid(&project)), action, key)
            .await
            .map(|a| core_submitted(&a))
    })
    .await
    .map_err(|e| Error::internal(format!("the submission task failed: {e}")))??;
    if !wait {
        return Ok(Submitted::new(&submitted, None));
    }
    let job = Job::from(&backend.wait_job(None, &submitted.job_id, timeout).await?);
    if job.state != JobState::Succeeded.as_str() {
        return Err(Failure::JobEnded(Box::new(job)));
    }
    Ok(Submitted::new(&submitted, Some(job)))
}

/// Runs an operator's submission (migrate, adopt, release) as its own task and, when asked,
/// waits for its job; a job that ends without succeeding becomes [`Failure::JobEnded`].
async fn ops_and_wait(
    backend: Arc<Backend>,
    submit: impl Future<Output = hcp_core::Result<hcp_core::Submitted>> + Send + 'static,
    wait: bool,
    timeout: Option<f64>,
) -> Outcome<Submitted> {
    let timeout = timeout_from_secs(timeout)?;
    let submitted = tokio::spawn(submit)
        .await
        .map_err(|e| Error::internal(format!("the submission task failed: {e}")))??;
    if !wait {
        return Ok(Submitted::new(&submitted, None));
    }
    let job = Job::from(&backend.wait_job(None, &submitted.job_id, timeout).await?);
    if job.state != JobState::Succeeded.as_str() {
        return Err(Failure::JobEnded(Box::new(job)));
    }
    Ok(Submitted::new(&submitted, Some(job)))
}

impl Core {
    fn backend(&self) -> PyResult<Arc<Backend>> {
        self.backend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PyRuntimeError::new_err(format!("{} is closed", self.description)))
    }

    fn create_vm_fut(
        &self,
        project: String,
        spec: VmSpec,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Submitted>> + Send + 'static> {
        let backend = self.backend()?;
        let action = Action::Create { spec, host: None };
        Ok(submit_and_wait(
            backend,
            project,
            action,
            idempotency_key,
            wait,
            timeout,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn change_vm_fut(
        &self,
        operation: &str,
        project: String,
        vm: String,
        force: bool,
        hard: bool,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Submitted>> + Send + 'static> {
        let backend = self.backend()?;
        let change = VmChange::parse(operation);
        Ok(async move {
            let action = change?.action(VmId::new(vm), force, hard);
            submit_and_wait(backend, project, action, idempotency_key, wait, timeout).await
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn snapshot_vm_fut(
        &self,
        operation: &str,
        project: String,
        vm: String,
        snapshot: String,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Submitted>> + Send + 'static> {
        let backend = self.backend()?;
        let vm_id = VmId::new(vm);
        let action = match operation {
            "create" => Ok(Action::Snapshot {
                vm_id,
                name: snapshot,
            }),
            "revert" => Ok(Action::RevertSnapshot {
                vm_id,
                snapshot_id: snapshot,
            }),
            "delete" => Ok(Action::DeleteSnapshot {
                vm_id,
                snapshot_id: snapshot,
            }),
            other => Err(Error::invalid(
                "operation",
                format!("unknown snapshot operation `{other}`; allowed: create, revert, delete"),
            )),
        };
        Ok(async move {
            let timeout = timeout_from_secs(timeout)?;
            let submitter = backend.clone();
            let action = action?;
            let submitted = tokio::spawn(async move {
                submitter
                    .submit(Some(&pid(&project)), action, idempotency_key)
                    .await
                    .map(|a| snapshot_submitted(&a))
            })
            .await
            .map_err(|e| Error::internal(format!("the submission task failed: {e}")))??;
            if !wait {
                return Ok(Submitted::of_snapshot(&submitted, None));
            }
            let job = Job::from(
                &backend
                    .wait_job(None, &submitted.submitted.job_id, timeout)
                    .await?,
            );
            if job.state != JobState::Succeeded.as_str() {
                return Err(Failure::JobEnded(Box::new(job)));
            }
            Ok(Submitted::of_snapshot(&submitted, Some(job)))
        })
    }

    fn migrate_vm_fut(
        &self,
        vm: String,
        request: hcp_core::MigrateRequest,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Submitted>> + Send + 'static> {
        let backend = self.backend()?;
        let submitter = backend.clone();
        let submit = async move {
            submitter
                .migrate_vm(None, &VmId::new(vm), &request, idempotency_key)
                .await
                .map(|a| core_submitted(&a))
        };
        Ok(ops_and_wait(backend, submit, wait, timeout))
    }

    #[allow(clippy::too_many_arguments)]
    fn adopt_vm_fut(
        &self,
        project: String,
        request: hcp_core::AdoptRequest,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Submitted>> + Send + 'static> {
        let backend = self.backend()?;
        let submitter = backend.clone();
        let submit = async move {
            submitter
                .adopt_vm(&pid(&project), &request, idempotency_key)
                .await
                .map(|a| core_submitted(&a))
        };
        Ok(ops_and_wait(backend, submit, wait, timeout))
    }

    fn release_vm_fut(
        &self,
        vm: String,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Submitted>> + Send + 'static> {
        let backend = self.backend()?;
        let submitter = backend.clone();
        let submit = async move {
            submitter
                .release_vm(None, &VmId::new(vm), idempotency_key)
                .await
                .map(|a| core_submitted(&a))
        };
        Ok(ops_and_wait(backend, submit, wait, timeout))
    }

    fn inventory_vms_fut(
        &self,
    ) -> PyResult<impl Future<Output = Outcome<Vec<InventoryVm>>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            Ok(backend
                .inventory_vms()
                .await?
                .iter()
                .map(InventoryVm::from)
                .collect())
        })
    }

    /// Builds a resize action; `allow` names impacts (`hot`, `reboot`, `power_off`).
    fn resize_action(
        vm: String,
        change: hcp_core::ResizeRequest,
        allow: Vec<String>,
    ) -> Result<Action, Error> {
        let allow = allow
            .iter()
            .map(|a| {
                serde_json::from_value::<hcp_core::ChangeImpact>(serde_json::Value::String(
                    a.clone(),
                ))
                .map_err(|_| {
                    Error::invalid(
                        "allow",
                        format!(
                            "unknown impact `{}`; allowed: hot, reboot, power_off",
                            hcp_core::echo(a)
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Action::Resize {
            vm_id: VmId::new(vm),
            change,
            allow,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn resize_vm_fut(
        &self,
        project: String,
        vm: String,
        change: hcp_core::ResizeRequest,
        allow: Vec<String>,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Submitted>> + Send + 'static> {
        let backend = self.backend()?;
        let action = Core::resize_action(vm, change, allow);
        Ok(async move {
            submit_and_wait(backend, project, action?, idempotency_key, wait, timeout).await
        })
    }

    fn plan_resize_fut(
        &self,
        project: String,
        vm: String,
        request: hcp_core::ResizeRequest,
    ) -> PyResult<impl Future<Output = Outcome<Vec<FieldPlan>>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            Ok(backend
                .plan_resize(Some(&pid(&project)), &VmId::new(vm), &request)
                .await?
                .iter()
                .map(FieldPlan::from)
                .collect())
        })
    }

    fn list_snapshots_fut(
        &self,
        project: String,
        vm: String,
    ) -> PyResult<impl Future<Output = Outcome<Vec<Snapshot>>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            Ok(backend
                .list_snapshots(Some(&pid(&project)), &VmId::new(vm))
                .await?
                .iter()
                .map(Snapshot::from)
                .collect())
        })
    }

    fn create_server_group_fut(
        &self,
        project: String,
        name: String,
        policy: String,
        strength: String,
    ) -> PyResult<impl Future<Output = Outcome<ServerGroup>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            let new = hcp_core::NewServerGroup {
                name,
                policy: policy.parse()?,
                strength: strength.parse()?,
            };
            Ok(ServerGroup::from(
                &backend.create_server_group(&pid(&project), new).await?,
            ))
        })
    }

    fn list_server_groups_fut(
        &self,
        project: String,
    ) -> PyResult<impl Future<Output = Outcome<Vec<ServerGroup>>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            Ok(backend
                .list_server_groups(&pid(&project))
                .await?
                .iter()
                .map(ServerGroup::from)
                .collect())
        })
    }

    fn get_server_group_fut(
        &self,
        project: String,
        group: String,
    ) -> PyResult<impl Future<Output = Outcome<ServerGroup>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            let g = backend
                .get_server_group(&pid(&project), &hcp_core::ServerGroupId::new(group))
                .await?;
            Ok(ServerGroup::from(&g))
        })
    }

    fn delete_server_group_fut(
        &self,
        project: String,
        group: String,
    ) -> PyResult<impl Future<Output = Outcome<()>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            backend
                .delete_server_group(&pid(&project), &hcp_core::ServerGroupId::new(group))
                .await?;
            Ok(())
        })
    }

    fn list_vms_fut(
        &self,
        project: String,
        query: VmQuery,
    ) -> PyResult<impl Future<Output = Outcome<Vec<Vm>>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            let (filter, sort) = query.0?;
            Ok(backend
                .list_vms_matching(&pid(&project), &filter, sort)
                .await?
                .iter()
                .map(Vm::from)
                .collect())
        })
    }

    fn get_vm_fut(
        &self,
        project: String,
        vm: String,
    ) -> PyResult<impl Future<Output = Outcome<Vm>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            Ok(Vm::from(
                &backend.get_vm(Some(&pid(&project)), &VmId::new(vm)).await?,
            ))
        })
    }

    fn console_fut(
        &self,
        project: String,
        vm: String,
    ) -> PyResult<impl Future<Output = Outcome<Console>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            Ok(Console::from(
                &backend
                    .console(Some(&pid(&project)), &VmId::new(vm), None)
                    .await?,
            ))
        })
    }

    fn get_job_fut(
        &self,
        job: String,
    ) -> PyResult<impl Future<Output = Outcome<Job>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move { Ok(Job::from(&backend.get_job(None, &JobId::new(job)).await?)) })
    }

    fn wait_job_fut(
        &self,
        job: String,
        timeout: Option<f64>,
    ) -> PyResult<impl Future<Output = Outcome<Job>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            let timeout = timeout_from_secs(timeout)?;
            Ok(Job::from(
                &backend.wait_job(None, &JobId::new(job), timeout).await?,
            ))
        })
    }

    fn hosts_fut(&self) -> PyResult<impl Future<Output = Outcome<Vec<Host>>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move { Ok(backend.hosts().await?.iter().map(Host::from).collect()) })
    }

    fn catalog_fut(&self) -> PyResult<impl Future<Output = Outcome<Catalog>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move { Ok(Catalog::from(&backend.catalog().await?)) })
    }

    fn capabilities_fut(
        &self,
        zone: Option<String>,
    ) -> PyResult<impl Future<Output = Outcome<Capabilities>> + Send + 'static> {
        let backend = self.backend()?;
        Ok(async move {
            Ok(Capabilities::from(
                &backend.capabilities(zone.as_deref()).await?,
            ))
        })
    }

    fn close_fut(&self) -> impl Future<Output = Outcome<()>> + Send + 'static {
        let backend = self
            .backend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        async move {
            if let Some(b) = backend {
                b.close().await;
            }
            Ok(())
        }
    }
}

#[pymethods]
impl Core {
    /// Builds an engine embedded in this process.
    ///
    /// ``path`` names a hosts file, ``text`` holds hosts-file YAML, ``json`` the hosts file as
    /// JSON (``origin`` names either in errors); with none, the simulator's demo catalog is used.
    #[staticmethod]
    #[pyo3(signature = (*, path=None, text=None, json=None, origin=None, principal))]
    fn embedded(
        py: Python<'_>,
        path: Option<std::path::PathBuf>,
        text: Option<String>,
        json: Option<String>,
        origin: Option<String>,
        principal: String,
    ) -> PyResult<Self> {
        let origin = origin.unwrap_or_else(|| "config".into());
        let source = match (path, text, json) {
            (None, None, None) => ConfigSource::Demo,
            (Some(p), None, None) => ConfigSource::File(p),
            (None, Some(text), None) => ConfigSource::Text { text, origin },
            (None, None, Some(text)) => ConfigSource::Json { text, origin },
            _ => {
                let e = Error::invalid(
                    "config",
                    "give one of a hosts file path, its YAML text or its JSON text",
                );
                return Err(Failure::from(e).into_pyerr(py));
            }
        };
        if principal.trim().is_empty() {
            return Err(
                Failure::from(Error::invalid("principal", "must not be empty")).into_pyerr(py),
            );
        }
        let description = match &source {
            ConfigSource::Demo => "Engine(demo)".to_string(),
            ConfigSource::File(p) => format!("Engine({})", p.display()),
            ConfigSource::Text { origin, .. } | ConfigSource::Json { origin, .. } => {
                format!("Engine({origin})")
            }
        };
        let embedded = block_on(py, async move {
            Ok(crate::backend::embedded(source, Principal::new(principal)).await?)
        })?;
        Ok(Core {
            backend: Mutex::new(Some(Arc::new(embedded) as Arc<Backend>)),
            description,
        })
    }

    /// Connects to a running HCP service (``hcp serve``) at ``url``, with an optional bearer
    /// token.
    #[staticmethod]
    #[pyo3(signature = (*, url, token=None))]
    fn remote(py: Python<'_>, url: String, token: Option<String>) -> PyResult<Self> {
        // Building the HTTP client needs the runtime's context, not a wait.
        let _guard = crate::runtime::runtime()?.enter();
        let remote =
            crate::backend::remote(&url, token).map_err(|e| Failure::from(e).into_pyerr(py))?;
        let description = format!("Client({:?})", remote.base_url());
        Ok(Core {
            backend: Mutex::new(Some(Arc::new(remote) as Arc<Backend>)),
            description,
        })
    }

    fn __repr__(&self) -> String {
        self.description.clone()
    }

    /// Submits a new VM; waits for its job when ``wait``.
    ///
    /// Takes the HTTP API's create fields; an argument of the wrong type raises
    /// ``hcp.InvalidSpec`` naming it (see [`crate::spec`]).
    #[pyo3(signature = (project, name, image, flavor, *, vcpus, memory_mib, disk_gib, networks, zone, user_data, tags, idempotency_key, wait, timeout, server_group=None))]
    #[allow(clippy::too_many_arguments)]
    fn create_vm<'py>(
        &self,
        py: Python<'py>,
        project: Bound<'py, PyAny>,
        name: Bound<'py, PyAny>,
        image: Bound<'py, PyAny>,
        flavor: Bound<'py, PyAny>,
        vcpus: Bound<'py, PyAny>,
        memory_mib: Bound<'py, PyAny>,
        disk_gib: Bound<'py, PyAny>,
        networks: Bound<'py, PyAny>,
        zone: Bound<'py, PyAny>,
        user_data: Bound<'py, PyAny>,
        tags: Bound<'py, PyAny>,
        idempotency_key: Bound<'py, PyAny>,
        wait: Bound<'py, PyAny>,
        timeout: Bound<'py, PyAny>,
        server_group: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Submitted> {
        let server_group = server_group.unwrap_or_else(|| py.None().into_bound(py));
        let args = CreateArgs {
            name,
            image,
            flavor,
            vcpus,
            memory_mib,
            disk_gib,
            networks,
            zone,
            user_data,
            tags,
            server_group,
        };
        let (project, spec, idempotency_key, wait, timeout) =
            create_input(py, &project, &args, (&idempotency_key, &wait, &timeout))?;
        block_on(
            py,
            self.create_vm_fut(project, spec, idempotency_key, wait, timeout)?,
        )
    }

    /// Awaitable form of :meth:`create_vm`.
    #[pyo3(signature = (project, name, image, flavor, *, vcpus, memory_mib, disk_gib, networks, zone, user_data, tags, idempotency_key, wait, timeout, server_group=None))]
    #[allow(clippy::too_many_arguments)]
    fn create_vm_async<'py>(
        &self,
        py: Python<'py>,
        project: Bound<'py, PyAny>,
        name: Bound<'py, PyAny>,
        image: Bound<'py, PyAny>,
        flavor: Bound<'py, PyAny>,
        vcpus: Bound<'py, PyAny>,
        memory_mib: Bound<'py, PyAny>,
        disk_gib: Bound<'py, PyAny>,
        networks: Bound<'py, PyAny>,
        zone: Bound<'py, PyAny>,
        user_data: Bound<'py, PyAny>,
        tags: Bound<'py, PyAny>,
        idempotency_key: Bound<'py, PyAny>,
        wait: Bound<'py, PyAny>,
        timeout: Bound<'py, PyAny>,
        server_group: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let server_group = server_group.unwrap_or_else(|| py.None().into_bound(py));
        let args = CreateArgs {
            name,
            image,
            flavor,
            vcpus,
            memory_mib,
            disk_gib,
            networks,
            zone,
            user_data,
            tags,
            server_group,
        };
        let (project, spec, idempotency_key, wait, timeout) =
            create_input(py, &project, &args, (&idempotency_key, &wait, &timeout))?;
        awaitable(
            py,
            self.create_vm_fut(project, spec, idempotency_key, wait, timeout)?,
        )
    }

    /// Submits ``start``, ``stop``, ``reboot`` or ``delete`` for a VM; waits when ``wait``.
    #[pyo3(signature = (operation, project, vm, *, force, hard, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn change_vm(
        &self,
        py: Python<'_>,
        operation: &str,
        project: String,
        vm: String,
        force: bool,
        hard: bool,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Submitted> {
        block_on(
            py,
            self.change_vm_fut(
                operation,
                project,
                vm,
                force,
                hard,
                idempotency_key,
                wait,
                timeout,
            )?,
        )
    }

    /// Awaitable form of :meth:`change_vm`.
    #[pyo3(signature = (operation, project, vm, *, force, hard, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn change_vm_async<'py>(
        &self,
        py: Python<'py>,
        operation: &str,
        project: String,
        vm: String,
        force: bool,
        hard: bool,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(
            py,
            self.change_vm_fut(
                operation,
                project,
                vm,
                force,
                hard,
                idempotency_key,
                wait,
                timeout,
            )?,
        )
    }

    /// Submits a snapshot ``create`` (``snapshot`` is the name), ``revert`` or ``delete``
    /// (``snapshot`` is the id); waits when ``wait``.
    #[pyo3(signature = (operation, project, vm, snapshot, *, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn snapshot_vm(
        &self,
        py: Python<'_>,
        operation: &str,
        project: String,
        vm: String,
        snapshot: String,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Submitted> {
        block_on(
            py,
            self.snapshot_vm_fut(
                operation,
                project,
                vm,
                snapshot,
                idempotency_key,
                wait,
                timeout,
            )?,
        )
    }

    /// Awaitable form of :meth:`snapshot_vm`.
    #[pyo3(signature = (operation, project, vm, snapshot, *, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn snapshot_vm_async<'py>(
        &self,
        py: Python<'py>,
        operation: &str,
        project: String,
        vm: String,
        snapshot: String,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(
            py,
            self.snapshot_vm_fut(
                operation,
                project,
                vm,
                snapshot,
                idempotency_key,
                wait,
                timeout,
            )?,
        )
    }

    /// Moves a running VM to another host of its zone (operators); waits when ``wait``.
    #[pyo3(signature = (vm, *, target_host, allow_cold, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn migrate_vm(
        &self,
        py: Python<'_>,
        vm: String,
        target_host: Option<String>,
        allow_cold: bool,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Submitted> {
        let request = hcp_core::MigrateRequest::new()
            .with_target_host(target_host)
            .with_allow_cold(allow_cold);
        block_on(
            py,
            self.migrate_vm_fut(vm, request, idempotency_key, wait, timeout)?,
        )
    }

    /// Awaitable form of :meth:`migrate_vm`.
    #[pyo3(signature = (vm, *, target_host, allow_cold, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn migrate_vm_async<'py>(
        &self,
        py: Python<'py>,
        vm: String,
        target_host: Option<String>,
        allow_cold: bool,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = hcp_core::MigrateRequest::new()
            .with_target_host(target_host)
            .with_allow_cold(allow_cold);
        awaitable(
            py,
            self.migrate_vm_fut(vm, request, idempotency_key, wait, timeout)?,
        )
    }

    /// Takes a VM created outside HCP into ``project`` (operators); waits when ``wait``.
    #[pyo3(signature = (project, host, vm, *, name, tags, provider, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn adopt_vm(
        &self,
        py: Python<'_>,
        project: String,
        host: String,
        vm: String,
        name: Option<String>,
        tags: &Bound<'_, PyAny>,
        provider: Option<String>,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Submitted> {
        let request = adopt_request(py, host, vm, name, tags, provider)?;
        block_on(
            py,
            self.adopt_vm_fut(project, request, idempotency_key, wait, timeout)?,
        )
    }

    /// Awaitable form of :meth:`adopt_vm`.
    #[pyo3(signature = (project, host, vm, *, name, tags, provider, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn adopt_vm_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        host: String,
        vm: String,
        name: Option<String>,
        tags: &Bound<'py, PyAny>,
        provider: Option<String>,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = adopt_request(py, host, vm, name, tags, provider)?;
        awaitable(
            py,
            self.adopt_vm_fut(project, request, idempotency_key, wait, timeout)?,
        )
    }

    /// Gives a VM back: removes HCP's mark and forgets it (operators); waits when ``wait``.
    #[pyo3(signature = (vm, *, idempotency_key, wait, timeout))]
    fn release_vm(
        &self,
        py: Python<'_>,
        vm: String,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Submitted> {
        block_on(py, self.release_vm_fut(vm, idempotency_key, wait, timeout)?)
    }

    /// Awaitable form of :meth:`release_vm`.
    #[pyo3(signature = (vm, *, idempotency_key, wait, timeout))]
    fn release_vm_async<'py>(
        &self,
        py: Python<'py>,
        vm: String,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.release_vm_fut(vm, idempotency_key, wait, timeout)?)
    }

    /// Resizes a VM in place, applying only changes whose impact is in ``allow``; waits when
    /// ``wait``.
    #[pyo3(signature = (project, vm, *, flavor, vcpus, memory_mib, disk_gib, allow, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn resize_vm(
        &self,
        py: Python<'_>,
        project: String,
        vm: String,
        flavor: Option<String>,
        vcpus: Option<u32>,
        memory_mib: Option<u64>,
        disk_gib: Option<u64>,
        allow: Vec<String>,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Submitted> {
        let change = hcp_core::ResizeRequest {
            flavor,
            vcpus,
            memory_mib,
            disk_gib,
        };
        block_on(
            py,
            self.resize_vm_fut(project, vm, change, allow, idempotency_key, wait, timeout)?,
        )
    }

    /// Awaitable form of :meth:`resize_vm`.
    #[pyo3(signature = (project, vm, *, flavor, vcpus, memory_mib, disk_gib, allow, idempotency_key, wait, timeout))]
    #[allow(clippy::too_many_arguments)]
    fn resize_vm_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        vm: String,
        flavor: Option<String>,
        vcpus: Option<u32>,
        memory_mib: Option<u64>,
        disk_gib: Option<u64>,
        allow: Vec<String>,
        idempotency_key: Option<String>,
        wait: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let change = hcp_core::ResizeRequest {
            flavor,
            vcpus,
            memory_mib,
            disk_gib,
        };
        awaitable(
            py,
            self.resize_vm_fut(project, vm, change, allow, idempotency_key, wait, timeout)?,
        )
    }

    /// Plans a resize; changes nothing.
    #[pyo3(signature = (project, vm, *, flavor, vcpus, memory_mib, disk_gib))]
    #[allow(clippy::too_many_arguments)]
    fn plan_resize(
        &self,
        py: Python<'_>,
        project: String,
        vm: String,
        flavor: Option<String>,
        vcpus: Option<u32>,
        memory_mib: Option<u64>,
        disk_gib: Option<u64>,
    ) -> PyResult<Vec<FieldPlan>> {
        let request = hcp_core::ResizeRequest {
            flavor,
            vcpus,
            memory_mib,
            disk_gib,
        };
        block_on(py, self.plan_resize_fut(project, vm, request)?)
    }

    /// Awaitable form of :meth:`plan_resize`.
    #[pyo3(signature = (project, vm, *, flavor, vcpus, memory_mib, disk_gib))]
    #[allow(clippy::too_many_arguments)]
    fn plan_resize_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        vm: String,
        flavor: Option<String>,
        vcpus: Option<u32>,
        memory_mib: Option<u64>,
        disk_gib: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let request = hcp_core::ResizeRequest {
            flavor,
            vcpus,
            memory_mib,
            disk_gib,
        };
        awaitable(py, self.plan_resize_fut(project, vm, request)?)
    }

    /// Lists a VM's snapshots.
    fn list_snapshots(
        &self,
        py: Python<'_>,
        project: String,
        vm: String,
    ) -> PyResult<Vec<Snapshot>> {
        block_on(py, self.list_snapshots_fut(project, vm)?)
    }

    /// Awaitable form of :meth:`list_snapshots`.
    fn list_snapshots_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        vm: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.list_snapshots_fut(project, vm)?)
    }

    /// Creates a server group: ``policy`` is ``"anti-affinity"`` or ``"affinity"``,
    /// ``strength`` ``"hard"`` or ``"soft"``.
    fn create_server_group(
        &self,
        py: Python<'_>,
        project: String,
        name: String,
        policy: String,
        strength: String,
    ) -> PyResult<ServerGroup> {
        block_on(
            py,
            self.create_server_group_fut(project, name, policy, strength)?,
        )
    }

    /// Awaitable form of :meth:`create_server_group`.
    fn create_server_group_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        name: String,
        policy: String,
        strength: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(
            py,
            self.create_server_group_fut(project, name, policy, strength)?,
        )
    }

    /// Lists a project's server groups, by id.
    fn list_server_groups(&self, py: Python<'_>, project: String) -> PyResult<Vec<ServerGroup>> {
        block_on(py, self.list_server_groups_fut(project)?)
    }

    /// Awaitable form of :meth:`list_server_groups`.
    fn list_server_groups_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.list_server_groups_fut(project)?)
    }

    /// Returns a server group with its member VM ids.
    fn get_server_group(
        &self,
        py: Python<'_>,
        project: String,
        group: String,
    ) -> PyResult<ServerGroup> {
        block_on(py, self.get_server_group_fut(project, group)?)
    }

    /// Awaitable form of :meth:`get_server_group`.
    fn get_server_group_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        group: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.get_server_group_fut(project, group)?)
    }

    /// Deletes an empty server group.
    fn delete_server_group(&self, py: Python<'_>, project: String, group: String) -> PyResult<()> {
        block_on(py, self.delete_server_group_fut(project, group)?)
    }

    /// Awaitable form of :meth:`delete_server_group`.
    fn delete_server_group_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        group: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.delete_server_group_fut(project, group)?)
    }

    /// Lists a project's VMs that match the filters, in the order `sort` gives.
    #[pyo3(signature = (project, *, name_prefix, tags, state, power, sort))]
    #[allow(clippy::too_many_arguments)]
    fn list_vms(
        &self,
        py: Python<'_>,
        project: String,
        name_prefix: Bound<'_, PyAny>,
        tags: Bound<'_, PyAny>,
        state: Bound<'_, PyAny>,
        power: Bound<'_, PyAny>,
        sort: Bound<'_, PyAny>,
    ) -> PyResult<Vec<Vm>> {
        let query = VmQuery::read(&name_prefix, &tags, &state, &power, &sort);
        block_on(py, self.list_vms_fut(project, query)?)
    }

    /// Awaitable form of :meth:`list_vms`.
    #[pyo3(signature = (project, *, name_prefix, tags, state, power, sort))]
    #[allow(clippy::too_many_arguments)]
    fn list_vms_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        name_prefix: Bound<'py, PyAny>,
        tags: Bound<'py, PyAny>,
        state: Bound<'py, PyAny>,
        power: Bound<'py, PyAny>,
        sort: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let query = VmQuery::read(&name_prefix, &tags, &state, &power, &sort);
        awaitable(py, self.list_vms_fut(project, query)?)
    }

    /// Returns one VM.
    fn get_vm(&self, py: Python<'_>, project: String, vm: String) -> PyResult<Vm> {
        block_on(py, self.get_vm_fut(project, vm)?)
    }

    /// Awaitable form of :meth:`get_vm`.
    fn get_vm_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        vm: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.get_vm_fut(project, vm)?)
    }

    /// Hands out a console.
    fn console(&self, py: Python<'_>, project: String, vm: String) -> PyResult<Console> {
        block_on(py, self.console_fut(project, vm)?)
    }

    /// Awaitable form of :meth:`console`.
    fn console_async<'py>(
        &self,
        py: Python<'py>,
        project: String,
        vm: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.console_fut(project, vm)?)
    }

    /// Returns a job.
    fn get_job(&self, py: Python<'_>, job: String) -> PyResult<Job> {
        block_on(py, self.get_job_fut(job)?)
    }

    /// Awaitable form of :meth:`get_job`.
    fn get_job_async<'py>(&self, py: Python<'py>, job: String) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.get_job_fut(job)?)
    }

    /// Waits until a job ends.
    #[pyo3(signature = (job, timeout=None))]
    fn wait_job(&self, py: Python<'_>, job: String, timeout: Option<f64>) -> PyResult<Job> {
        block_on(py, self.wait_job_fut(job, timeout)?)
    }

    /// Awaitable form of :meth:`wait_job`.
    #[pyo3(signature = (job, timeout=None))]
    fn wait_job_async<'py>(
        &self,
        py: Python<'py>,
        job: String,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.wait_job_fut(job, timeout)?)
    }

    /// Opens a job's log for blocking iteration (fails at once for an unknown job).
    fn job_logs(&self, py: Python<'_>, job: String) -> PyResult<JobLogs> {
        let backend = self.backend()?;
        let id = job.clone();
        let stream = block_on(py, async move {
            Ok(backend.watch_job(None, &JobId::new(id)).await?)
        })?;
        Ok(JobLogs {
            state: LogState::opened(job, stream),
        })
    }

    /// Opens a job's log for ``async for`` (an unknown job fails on the first step).
    fn job_logs_async(&self, job: String) -> PyResult<AsyncLogCursor> {
        Ok(AsyncLogCursor {
            state: LogState::lazy(job, self.backend()?),
        })
    }

    /// Lists hosts.
    fn hosts(&self, py: Python<'_>) -> PyResult<Vec<Host>> {
        block_on(py, self.hosts_fut()?)
    }

    /// Awaitable form of :meth:`hosts`.
    fn hosts_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.hosts_fut()?)
    }

    /// Lists every VM the last inventory found on the hosts, HCP's and others (operators).
    fn inventory_vms(&self, py: Python<'_>) -> PyResult<Vec<InventoryVm>> {
        block_on(py, self.inventory_vms_fut()?)
    }

    /// Awaitable form of :meth:`inventory_vms`.
    fn inventory_vms_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.inventory_vms_fut()?)
    }

    /// Returns the catalog.
    fn catalog(&self, py: Python<'_>) -> PyResult<Catalog> {
        block_on(py, self.catalog_fut()?)
    }

    /// Awaitable form of :meth:`catalog`.
    fn catalog_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.catalog_fut()?)
    }

    /// Returns the capabilities of a zone, or of every zone.
    #[pyo3(signature = (zone=None))]
    fn capabilities(&self, py: Python<'_>, zone: Option<String>) -> PyResult<Capabilities> {
        block_on(py, self.capabilities_fut(zone)?)
    }

    /// Awaitable form of :meth:`capabilities`.
    #[pyo3(signature = (zone=None))]
    fn capabilities_async<'py>(
        &self,
        py: Python<'py>,
        zone: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.capabilities_fut(zone)?)
    }

    /// Stops background work and refuses further calls; closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        block_on(py, self.close_fut())
    }

    /// Awaitable form of :meth:`close`.
    fn close_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.close_fut())
    }

    /// ``True`` once :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.backend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

/// Where a log iteration stands.
enum Cursor {
    /// Not opened yet (async iteration opens on first use).
    Lazy(Arc<Backend>),
    /// Following the job.
    Open(UpdateStream),
    /// The job ended (or the stream did).
    Done,
}

/// The state one log iterator shares with the futures that advance it.
#[derive(Clone)]
struct LogState {
    job_id: String,
    cursor: Arc<tokio::sync::Mutex<Cursor>>,
    end: Arc<Mutex<Option<Job>>>,
}

impl LogState {
    fn opened(job_id: String, stream: UpdateStream) -> Self {
        Self::with(job_id, Cursor::Open(stream))
    }

    fn lazy(job_id: String, backend: Arc<Backend>) -> Self {
        Self::with(job_id, Cursor::Lazy(backend))
    }

    fn with(job_id: String, cursor: Cursor) -> Self {
        LogState {
            job_id,
            cursor: Arc::new(tokio::sync::Mutex::new(cursor)),
            end: Arc::new(Mutex::new(None)),
        }
    }

    /// Returns the next log line, or `None` once the job has ended.
    async fn next_line(self) -> Outcome<Option<JobLogLine>> {
        let mut cursor = self.cursor.lock().await;
        loop {
            let stream = match &mut *cursor {
                Cursor::Done => return Ok(None),
                Cursor::Lazy(backend) => {
                    let stream = backend
                        .watch_job(None, &JobId::new(self.job_id.clone()))
                        .await?;
                    *cursor = Cursor::Open(stream);
                    continue;
                }
                Cursor::Open(stream) => stream,
            };
            match stream.next().await {
                Some(Ok(TenantUpdate::Log(line))) => {
                    return Ok(Some(JobLogLine::new(&self.job_id, &line)));
                }
                Some(Ok(TenantUpdate::End(job))) => {
                    *self.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(Job::from(&*job));
                    *cursor = Cursor::Done;
                    return Ok(None);
                }
                Some(Ok(_status)) => {}
                Some(Err(e)) => {
                    *cursor = Cursor::Done;
                    return Err(e.into());
                }
                None => {
                    *cursor = Cursor::Done;
                    return Ok(None);
                }
            }
        }
    }

    fn job(&self) -> Option<Job> {
        self.end.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A job's log lines as they are written, until the job ends.
///
/// Iterating blocks (without the GIL) until the next line arrives; Ctrl-C interrupts it. Once
/// the iteration ends, :attr:`job` holds the job in its final state.
#[pyclass(frozen, module = "hcp")]
pub struct JobLogs {
    state: LogState,
}

#[pymethods]
impl JobLogs {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<JobLogLine>> {
        block_on(py, self.state.clone().next_line())
    }

    /// The job's id.
    #[getter]
    fn job_id(&self) -> String {
        self.state.job_id.clone()
    }

    /// The job in its final state once the iteration has ended; ``None`` before.
    #[getter]
    fn job(&self) -> Option<Job> {
        self.state.job()
    }

    fn __repr__(&self) -> String {
        format!(
            "JobLogs(job_id={:?}, ended={})",
            self.state.job_id,
            self.state.job().is_some()
        )
    }
}

/// The native cursor behind ``hcp.AsyncJobLogs``: each step is an awaitable of the next line,
/// or ``None`` at the end.
#[pyclass(frozen, module = "hcp._hcp")]
pub struct AsyncLogCursor {
    state: LogState,
}

#[pymethods]
impl AsyncLogCursor {
    /// Fetches the next line: an awaitable of a ``JobLogLine`` or ``None``.
    fn next_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.state.clone().next_line())
    }

    /// The job's id.
    #[getter]
    fn job_id(&self) -> String {
        self.state.job_id.clone()
    }

    /// The job in its final state once the iteration has ended; ``None`` before.
    #[getter]
    fn job(&self) -> Option<Job> {
        self.state.job()
    }
}
