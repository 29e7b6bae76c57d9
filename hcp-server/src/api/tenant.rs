//! The tenant API (`/api/hcp/tenant/v1`): one project's VMs and jobs. Views never show hosts,
//! native VM ids or datastores; another project's objects are "not found".

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use hcp_core::{Error, JobId, VmId};
use poem::Request;
use poem::web::sse::Event;
use poem::web::websocket::{BoxWebSocketUpgraded, WebSocket};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::EventStream;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, OpenApi};

use super::security::ApiAuth;
use super::vm_query::vm_query;
use super::{AcceptedResponse, ApiTags, State, find_job, tenant_context, watch_job};
use crate::console::SUBPROTOCOL;
use crate::dto::{
    ConsoleDto, ConsoleKindDto, CreateVmRequest, JobEventDto, JobStateDto, PatchVmRequest,
    TenantJobDto, TenantJobPage, TenantVmDto, TenantVmRef, VmPage, VmPageRef,
};
use crate::error::ApiResult;
use crate::json::JsonBody;
use crate::limits::StrictJson;

/// The answer of a cancel request.
#[derive(Debug, ApiResponse)]
pub(crate) enum CancelResponse {
    /// The job ended `CANCELLED`.
    #[oai(status = 200)]
    Cancelled(JsonBody<TenantJobDto>),
    /// The running job was asked to stop; it ends `CANCELLED` shortly. `Location` is the job's
    /// URL.
    #[oai(status = 202)]
    Cancelling(JsonBody<TenantJobDto>, #[oai(header = "Location")] String),
}

/// One VM with its version.
#[derive(Debug, ApiResponse)]
pub(crate) enum VmResponse {
    /// The VM. `ETag` is its version: send it as `If-Match` to change the VM with `PATCH`.
    #[oai(status = 200)]
    Ok(JsonBody<TenantVmDto>, #[oai(header = "ETag")] String),
}

impl VmResponse {
    fn of(vm: &hcp_core::Vm) -> Self {
        VmResponse::Ok(JsonBody::new(&TenantVmRef::new(vm)), etag(vm.generation))
    }
}

/// The `ETag` of a VM: its generation, as a strong entity tag.
fn etag(generation: u64) -> String {
    format!("\"{generation}\"")
}

/// Reads an `If-Match` header: a VM `ETag` (weak or strong). `None` when absent; a value that is
/// no VM version (`*`, a list, garbage) never matches.
fn if_match(header: Option<&str>) -> hcp_core::Result<Option<u64>> {
    let Some(text) = header else {
        return Ok(None);
    };
    let t = text.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    match t
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .and_then(|t| t.parse::<u64>().ok())
    {
        Some(g) => Ok(Some(g)),
        None => Err(Error::new(
            hcp_core::ErrorKind::Conflict,
            "If-Match must be the ETag of the VM's latest GET, e.g. \"7\"",
        )
        .with_code(hcp_core::CODE_PRECONDITION_FAILED)
        .with_field("If-Match")),
    }
}

/// How often an idle server-sent event stream sends a keep-alive comment.
pub(crate) const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) struct TenantApi {
    pub(crate) state: State,
}

#[OpenApi(prefix_path = "/api/hcp/tenant/v1", tag = "ApiTags::Tenant")]
impl TenantApi {
    /// List a project's VMs
    ///
    /// Pages are ordered by VM id (oldest first) unless `sort` says otherwise; pass the previous
    /// page's `next` as `cursor`, with the same filters and `sort`. Filters combine: a VM is
    /// listed when it matches all of them. A sorted list pages without gaps or repeats while VMs
    /// are added and removed (ties are broken by VM id). A bad filter value is
    /// `400 INVALID_SPEC` naming the parameter and what is allowed.
    #[oai(
        path = "/projects/:projectId/vms",
        method = "get",
        operation_id = "listVms"
    )]
    #[allow(clippy::too_many_arguments)] // one per query parameter, as poem-openapi wants
    async fn list_vms(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        /// Page size (default 100, clamped to the server's maximum, 1000 by default).
        limit: Query<Option<u32>>,
        /// The `next` cursor of the previous page.
        cursor: Query<Option<String>>,
        /// Only VMs whose name starts with this text (case-sensitive).
        name_prefix: Query<Option<String>>,
        /// Only VMs with this tag, as `key=value`; repeat for more (all must match).
        tag: Query<Vec<String>>,
        /// Only VMs in this state: `PENDING`, `ACTIVE`, `ERROR` or `DELETED`.
        state: Query<Option<String>>,
        /// Only VMs in this observed power state: `RUNNING`, `STOPPED`, `PAUSED` or `UNKNOWN`.
        power: Query<Option<String>>,
        /// The order: `name`, `-name`, `created_at` or `-created_at` (`-`: largest first);
        /// by VM id when absent.
        sort: Query<Option<String>>,
    ) -> ApiResult<JsonBody<VmPage>> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let (filter, sort) = vm_query(name_prefix.0, tag.0, state.0, power.0, sort.0)?;
        let page = self
            .state
            .engine
            .list_vms_matching(
                &ctx.scope(),
                &filter,
                sort,
                &self.state.pages.request(limit.0, cursor.0)?,
            )
            .await?;
        Ok(JsonBody::new(&VmPageRef::new(&page)))
    }

    /// Create a VM
    ///
    /// Validates the spec against the catalog and the zone's capabilities, places the VM and
    /// starts its create job. A request that needs a capability the zone lacks (user-data in a
    /// zone without cloud-init) is refused with `409 FEATURE_NOT_SUPPORTED` before any job exists.
    /// A size outside HCP's bounds or the zone's limits (`max_vcpus`, `max_memory_mib`,
    /// `max_disk_gib`, `max_networks`), or larger than any of its hosts, is refused with
    /// `400 INVALID_SPEC` naming the field and what is allowed; a zone whose hosts are full is
    /// `409 CAPACITY_EXHAUSTED`; a create beyond the project's quota is `403 QUOTA_EXCEEDED`.
    #[oai(
        path = "/projects/:projectId/vms",
        method = "post",
        operation_id = "createVm"
    )]
    async fn create_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        /// Replays the first answer when the same request is sent again with the same key;
        /// the same key with a different request is refused with `422 IDEMPOTENCY_KEY_REUSED`.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: StrictJson<CreateVmRequest>,
    ) -> ApiResult<AcceptedResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let submitted = self.state.engine.create_vm(&ctx, body.0.into()).await?;
        Ok(AcceptedResponse::new(&ctx.project, &submitted))
    }

    /// Get a VM
    #[oai(
        path = "/projects/:projectId/vms/:vmId",
        method = "get",
        operation_id = "getVm"
    )]
    async fn get_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
    ) -> ApiResult<VmResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let vm = self
            .state
            .engine
            .get_vm(&ctx.scope(), &VmId::new(vm_id.0))
            .await?;
        Ok(VmResponse::of(&vm))
    }

    /// Change a VM's tags
    ///
    /// A JSON Merge Patch (RFC 7396) on the VM's tags: `{"tags": {"team": "web", "old": null}}`
    /// sets `team`, removes `old` and keeps every other tag; any other field is refused naming
    /// it. `If-Match` must carry the `ETag` of the VM's latest GET: without it the answer is
    /// `428 PRECONDITION_REQUIRED`, with an older one `412 PRECONDITION_FAILED`, and nothing
    /// changes. Of concurrent changes with the same `ETag`, exactly one succeeds. No job runs:
    /// HCP's record of the VM changes (the hypervisor keeps the tags the VM was created with).
    #[oai(
        path = "/projects/:projectId/vms/:vmId",
        method = "patch",
        operation_id = "patchVm"
    )]
    async fn patch_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        /// The VM's `ETag`, from its latest GET.
        #[oai(name = "If-Match")]
        if_match_header: Header<Option<String>>,
        body: StrictJson<PatchVmRequest>,
    ) -> ApiResult<VmResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let version = if_match(if_match_header.0.as_deref())?;
        let vm = self
            .state
            .engine
            .update_tags(&ctx, &VmId::new(vm_id.0), &body.0.tags, version)
            .await?;
        Ok(VmResponse::of(&vm))
    }

    /// Delete a VM
    ///
    /// A running VM is shut down first: gracefully, then powered off hard once the stop timeout
    /// passes; `force` skips the graceful shutdown.
    #[oai(
        path = "/projects/:projectId/vms/:vmId",
        method = "delete",
        operation_id = "deleteVm"
    )]
    async fn delete_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        /// Skip the graceful shutdown of a running VM: power it off hard at once.
        force: Query<Option<bool>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> ApiResult<AcceptedResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let s = self
            .state
            .engine
            .delete_vm(&ctx, &VmId::new(vm_id.0), force.0.unwrap_or(false))
            .await?;
        Ok(AcceptedResponse::new(&ctx.project, &s))
    }

    /// Start a VM
    #[oai(
        path = "/projects/:projectId/vms/:vmId/@start",
        method = "post",
        operation_id = "startVm"
    )]
    async fn start_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> ApiResult<AcceptedResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let s = self
            .state
            .engine
            .start_vm(&ctx, &VmId::new(vm_id.0))
            .await?;
        Ok(AcceptedResponse::new(&ctx.project, &s))
    }

    /// Stop a VM
    ///
    /// A graceful shutdown first, then a hard power-off; immediately hard with `force`.
    #[oai(
        path = "/projects/:projectId/vms/:vmId/@stop",
        method = "post",
        operation_id = "stopVm"
    )]
    async fn stop_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        /// Skip the graceful shutdown.
        force: Query<Option<bool>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> ApiResult<AcceptedResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let s = self
            .state
            .engine
            .stop_vm(&ctx, &VmId::new(vm_id.0), force.0.unwrap_or(false))
            .await?;
        Ok(AcceptedResponse::new(&ctx.project, &s))
    }

    /// Reboot a VM
    #[oai(
        path = "/projects/:projectId/vms/:vmId/@reboot",
        method = "post",
        operation_id = "rebootVm"
    )]
    async fn reboot_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        /// Reset instead of a guest reboot.
        hard: Query<Option<bool>>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> ApiResult<AcceptedResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let s = self
            .state
            .engine
            .reboot_vm(&ctx, &VmId::new(vm_id.0), hard.0.unwrap_or(false))
            .await?;
        Ok(AcceptedResponse::new(&ctx.project, &s))
    }

    /// Open a console to a VM
    ///
    /// Answers a URL valid until `expires_at`. The VM must be active and its host must offer a
    /// console (`409 FEATURE_NOT_SUPPORTED` otherwise). When the console is a socket HCP can
    /// reach (a libvirt domain's VNC display, say), the URL is HCP's own WebSocket proxy,
    /// `ws(s)://…/api/hcp/tenant/v1/console/ws?token=…`, with a single-use token bound to this VM
    /// and caller; `expires_at` is then the deadline to connect (see `GET /console/ws`).
    #[oai(
        path = "/projects/:projectId/vms/:vmId/@console",
        method = "post",
        operation_id = "consoleVm"
    )]
    async fn console(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        /// The console protocol; the host's preferred one when absent.
        #[oai(name = "type")]
        kind: Query<Option<ConsoleKindDto>>,
    ) -> ApiResult<JsonBody<ConsoleDto>> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let vm_id = VmId::new(vm_id.0);
        let console = self
            .state
            .engine
            .console(&ctx, &vm_id, kind.0.map(Into::into))
            .await?;
        if console.upstream.is_some() {
            return Ok(JsonBody::new(
                &self.state.consoles.issue(req, &ctx, &vm_id, console)?,
            ));
        }
        Ok(JsonBody::new(&ConsoleDto::from(console)))
    }

    /// Connect to a console (WebSocket)
    ///
    /// The console proxy: a WebSocket (RFC 6455) upgrade that relays the bytes of a VM's
    /// console (RFB, for VNC) in binary frames, both ways, until either side closes. Connect to
    /// the `url` that `POST .../vms/{vmId}:console` answered, before its `expires_at`: its
    /// `token` opens one connection, for the caller it was issued to. noVNC connects as is
    /// (`new RFB(element, url)`; the `binary` subprotocol is accepted) from a page of this
    /// origin, whose session cookie authenticates the upgrade; other clients send their bearer
    /// token. A used token is `410 CONSOLE_TOKEN_USED`, an expired one `410
    /// CONSOLE_TOKEN_EXPIRED`, another caller's `403 CONSOLE_TOKEN_FOREIGN` (the token is then
    /// void), an unknown one `404 CONSOLE_TOKEN_NOT_FOUND`; a console that does not answer is
    /// `503`. Opening and closing are audit events (`console_session`).
    #[oai(
        path = "/console/ws",
        method = "get",
        operation_id = "consoleWebSocket"
    )]
    async fn console_ws(
        &self,
        auth: ApiAuth,
        ws: Option<WebSocket>,
        /// The single-use token of the console's `url`.
        token: Query<Option<String>>,
    ) -> ApiResult<BoxWebSocketUpgraded> {
        let token = token.0.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            Error::invalid(
                "token",
                "is required: connect to the `url` that POST .../vms/{vmId}:console answered",
            )
        })?;
        // Check the upgrade before the token is spent.
        let ws = ws.ok_or_else(|| {
            Error::invalid(
                "Upgrade",
                "this route is a WebSocket: send GET with `Connection: Upgrade`, `Upgrade: \
                 websocket`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key` (noVNC and \
                 WebSocket clients do)",
            )
        })?;
        let grant = self.state.consoles.take(&token, &auth.0)?;
        let upstream = self
            .state
            .consoles
            .connect(&self.state.engine, &grant)
            .await?;
        let proxy = self.state.consoles.clone();
        let engine = self.state.engine.clone();
        Ok(ws
            .protocols([SUBPROTOCOL])
            .on_upgrade(move |socket| proxy.relay(engine, grant, upstream, socket))
            .boxed())
    }

    /// List a project's jobs
    ///
    /// Newest first; pass the previous page's `next` as `cursor`.
    #[oai(
        path = "/projects/:projectId/jobs",
        method = "get",
        operation_id = "listJobs"
    )]
    #[allow(clippy::too_many_arguments)] // One parameter per part of the OpenAPI operation.
    async fn list_jobs(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        /// Only jobs on this VM.
        vm_id: Query<Option<String>>,
        /// Only jobs in this state.
        state: Query<Option<JobStateDto>>,
        /// Page size (default 100, clamped to the server's maximum).
        limit: Query<Option<u32>>,
        /// The `next` cursor of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<JsonBody<TenantJobPage>> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let page = self
            .state
            .job_page(&ctx.scope(), vm_id.0, state.0, limit.0, cursor.0)
            .await?;
        Ok(JsonBody::new(&TenantJobPage {
            items: page.items.iter().map(Into::into).collect(),
            next: page.next,
        }))
    }

    /// Cancel a job
    ///
    /// A pending job ends `CANCELLED` at once (`200`). A running job is asked to stop: its
    /// provider call is abandoned and the job ends `CANCELLED` shortly (`202`; follow it at
    /// `Location`). A job that already ended is `409 CONFLICT`; another project's job is `404`.
    #[oai(
        path = "/projects/:projectId/jobs/:jobId/@cancel",
        method = "post",
        operation_id = "cancelJob"
    )]
    async fn cancel_job(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "jobId")] job_id: Path<String>,
    ) -> ApiResult<CancelResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let job = self
            .state
            .engine
            .cancel_job(&ctx.scope(), &JobId::new(job_id.0), &ctx.principal)
            .await?;
        tracing::info!(job_id = %job.id, vm_id = %job.vm_id, project = %job.project, state = %job.state, "job cancel requested");
        Ok(if job.state.is_terminal() {
            CancelResponse::Cancelled(JsonBody::new(&TenantJobDto::from(&job)))
        } else {
            let location = format!("{}/jobs/{}", super::TENANT_PREFIX, job.id);
            CancelResponse::Cancelling(JsonBody::new(&TenantJobDto::from(&job)), location)
        })
    }

    /// Find a VM by id among the caller's projects
    ///
    /// For a caller that knows a VM's id but not its project (the CLI's `hcp vm show ID`
    /// without `--project`): the VM's `project` names it. A VM of a project the caller is not a
    /// member of is "not found".
    #[oai(path = "/vms/:vmId", method = "get", operation_id = "findVm")]
    async fn find_vm(
        &self,
        auth: ApiAuth,
        #[oai(name = "vmId")] vm_id: Path<String>,
    ) -> ApiResult<JsonBody<TenantVmDto>> {
        let vm_id = VmId::new(vm_id.0);
        for scope in auth.0.scopes() {
            match self.state.engine.get_vm(&scope, &vm_id).await {
                Err(e) if e.kind() == hcp_core::ErrorKind::NotFound => continue,
                other => return Ok(JsonBody::new(&TenantVmRef::new(&other?))),
            }
        }
        Err(Error::not_found("vm", &vm_id).into())
    }

    /// List jobs across the caller's projects
    ///
    /// Newest first, from every project the caller is a member of (the CLI's `hcp job list`
    /// without `--project`); each job's `project` names it. Pass the previous page's `next` as
    /// `cursor`.
    #[oai(path = "/jobs", method = "get", operation_id = "listMyJobs")]
    async fn list_my_jobs(
        &self,
        auth: ApiAuth,
        /// Only jobs on this VM.
        vm_id: Query<Option<String>>,
        /// Only jobs in this state.
        state: Query<Option<JobStateDto>>,
        /// Page size (default 100, clamped to the server's maximum).
        limit: Query<Option<u32>>,
        /// The `next` cursor of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<JsonBody<TenantJobPage>> {
        let page = self
            .state
            .job_page(&auth.0.scope(), vm_id.0, state.0, limit.0, cursor.0)
            .await?;
        Ok(JsonBody::new(&TenantJobPage {
            items: page.items.iter().map(Into::into).collect(),
            next: page.next,
        }))
    }

    /// Get a job
    ///
    /// A pending job's `pending_reason` says why it waits.
    #[oai(path = "/jobs/:jobId", method = "get", operation_id = "getJob")]
    async fn get_job(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "jobId")] job_id: Path<String>,
    ) -> ApiResult<JsonBody<TenantJobDto>> {
        let job = find_job(&self.state.engine, req, &JobId::new(job_id.0)).await?;
        Ok(JsonBody::new(&TenantJobDto::from(&job)))
    }

    /// Follow a job's log
    ///
    /// Server-sent events: the past log lines (`event: log`, `id` = line number), then live
    /// lines and status changes (`event: status`), then one `event: end` carrying the final job,
    /// after which the stream closes. With `Last-Event-ID`, lines up to that number are skipped.
    #[oai(path = "/jobs/:jobId/logs", method = "get", operation_id = "jobLogs")]
    async fn job_logs(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "jobId")] job_id: Path<String>,
        /// Resume after this log line number.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<u64>>,
    ) -> ApiResult<EventStream<BoxStream<'static, JobEventDto>>> {
        let watch = watch_job(&self.state.engine, req, &JobId::new(job_id.0)).await?;
        let after = last_event_id.0.unwrap_or(0);
        let stream = watch
            .into_stream()
            .filter_map(|u| std::future::ready(JobEventDto::tenant(u)))
            .filter(move |e| {
                std::future::ready(!matches!(e, JobEventDto::Log(l) if l.seq <= after))
            })
            .boxed();
        Ok(EventStream::new(stream)
            .keep_alive(SSE_KEEP_ALIVE)
            .to_event(|e| {
                let mut event = Event::message(e.to_json_string()).event_type(e.name());
                if let JobEventDto::Log(l) = &e {
                    event = event.id(l.seq.to_string());
                }
                event
            }))
    }
}
