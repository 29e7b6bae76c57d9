//! The operations API (`/api/hcp/ops/v1`): providers with health, hosts, every VM with its
//! provider binding, capabilities per provider and host, reconciliation, migration, and the
//! audit stream.

use futures::stream::BoxStream;
use hcp_core::store::Scope;
use std::collections::BTreeMap;

use hcp_core::{AdoptRequest, EventFilter, JobId, MigrateRequest, ProjectId, VmId};
use poem::web::sse::Event;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;

use super::hyperv::{HostsResponse, InventoryResponse, hosts_page, inventory_page};
use super::security::ApiAuth;
use super::{ApiTags, OPS_PREFIX, State};
use crate::dto::{
    AuditEventItem, EventPage, EventPageRef, JobDto, JobPage, JobStateDto, OpsJobLogPage,
    OpsVmPage, ProviderCapabilitiesDto, ProviderStatusDto, RefreshReportDto, StrictDto,
};
use crate::error::ApiResult;
use crate::json::JsonBody;
use crate::limits::StrictJson;
use crate::sse::audit_stream;

/// Moves a VM to another host: the body of `POST /api/hcp/ops/v1/vms/{vmId}:migrate` (`{}`
/// lets HCP pick the host).
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub(crate) struct MigrateVmRequest {
    /// The host to move to: another host of the VM's provider in the VM's zone. Left out, HCP
    /// picks the zone's other reachable host with room for the VM and its image (the most free
    /// memory first).
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 255))]
    pub(crate) target_host: Option<String>,
    /// Accepts a cold move where no live one is possible (a stopped VM, or a host that cannot
    /// move running VMs): the VM is stopped, moved and started again, so it is unavailable
    /// meanwhile. Both hosts must declare `cold_migration`.
    #[serde(default)]
    #[oai(default)]
    pub(crate) allow_cold: bool,
}

impl StrictDto for MigrateVmRequest {
    const SERVER_OWNED: &'static [&'static str] = &[
        "id",
        "vm_id",
        "job_id",
        "project",
        "host",
        "provider",
        "native_id",
        "state",
    ];
}

/// Takes a VM created outside HCP into a project: the body of
/// `POST /api/hcp/ops/v1/vms:adopt`.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub(crate) struct AdoptVmRequest {
    /// The project the VM joins.
    #[oai(validator(min_length = 1, max_length = 63))]
    pub(crate) project: String,
    /// The host the VM is on, as `GET /api/hcp/ops/v1/inventory` reports it.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub(crate) host: String,
    /// The VM's native id or name on that host, as the inventory reports it.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub(crate) vm: String,
    /// The host's provider; needed only when hosts of several providers share the name.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 255))]
    pub(crate) provider: Option<String>,
    /// The VM's name in HCP (a DNS label); the hypervisor's name when left out.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 63))]
    pub(crate) name: Option<String>,
    /// The VM's tags in HCP (at most 50); the hypervisor's tags when left out.
    #[serde(default)]
    #[oai(validator(max_properties = 50))]
    pub(crate) tags: Option<BTreeMap<String, String>>,
}

impl StrictDto for AdoptVmRequest {
    const SERVER_OWNED: &'static [&'static str] = &[
        "id",
        "vm_id",
        "job_id",
        "native_id",
        "state",
        "power",
        "resources",
    ];
}

/// The answer of an ops route that starts a job.
#[derive(Debug, ApiResponse)]
pub(crate) enum OpsJobAccepted {
    /// Accepted: the job (operator view, with its hosts) does the work; `Location` is its URL
    /// in the ops API. A replayed idempotency key answers the first request's job again.
    #[oai(status = 202)]
    Accepted(
        JsonBody<JobDto>,
        #[oai(header = "Location")] String,
        /// `true` when the request replayed an earlier one with the same idempotency key: no new
        /// job was started; absent otherwise.
        #[oai(header = "Idempotency-Replayed")]
        Option<bool>,
    ),
}

pub(crate) struct OpsApi {
    pub(crate) state: State,
}

impl OpsApi {
    /// Answers an accepted ops job: the job in the operator view and its URL.
    async fn accepted(
        &self,
        s: hcp_core::Submitted,
        what: &'static str,
    ) -> ApiResult<OpsJobAccepted> {
        let job = self.state.engine.get_job(&Scope::All, &s.job_id).await?;
        tracing::info!(vm_id = %s.vm_id, job_id = %s.job_id, project = %job.project, replayed = s.replayed, "{what}");
        Ok(OpsJobAccepted::Accepted(
            JsonBody::new(&JobDto::operator(&job)),
            format!("{OPS_PREFIX}/jobs/{}", job.id),
            s.replayed.then_some(true),
        ))
    }
}

fn project_scope(project: Option<String>) -> hcp_core::Result<Scope> {
    match project.filter(|p| !p.is_empty()) {
        Some(p) => {
            let p = ProjectId::new(p);
            p.validate().map_err(|e| e.with_field("project"))?;
            Ok(Scope::Project(p))
        }
        None => Ok(Scope::All),
    }
}

#[OpenApi(prefix_path = "/api/hcp/ops/v1", tag = "ApiTags::Ops")]
impl OpsApi {
    /// List providers with their health
    #[oai(path = "/providers", method = "get", operation_id = "opsProviders")]
    async fn providers(&self, _auth: ApiAuth) -> Json<Vec<ProviderStatusDto>> {
        Json(
            self.state
                .engine
                .providers()
                .into_iter()
                .map(Into::into)
                .collect(),
        )
    }

    /// List hosts with capacity and health
    ///
    /// Ordered by provider and name, one page at a time: when more remain, the
    /// `X-Next-Cursor` header holds the `cursor` of the next page and `Link` names its URL.
    #[oai(path = "/hosts", method = "get", operation_id = "opsHosts")]
    async fn hosts(
        &self,
        _auth: ApiAuth,
        /// Page size (default and maximum: the server's largest page, 1000 unless
        /// `HCP_PAGE_MAX` says otherwise; larger values are clamped).
        limit: Query<Option<u32>>,
        /// The `X-Next-Cursor` value of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<HostsResponse> {
        hosts_page(
            &self.state,
            &format!("{OPS_PREFIX}/hosts"),
            limit.0,
            cursor.0,
        )
    }

    /// List every VM with its provider binding
    ///
    /// Filtered, sorted and paged like the tenant VM list (`name_prefix`, `tag`, `state`,
    /// `power`, `sort`); a bad filter value is `400 INVALID_SPEC` naming the parameter.
    #[oai(path = "/vms", method = "get", operation_id = "opsVms")]
    #[allow(clippy::too_many_arguments)] // one per query parameter, as poem-openapi wants
    async fn vms(
        &self,
        _auth: ApiAuth,
        /// Only this project's VMs.
        project: Query<Option<String>>,
        /// Page size (default 100, clamped to the server's maximum).
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
    ) -> ApiResult<JsonBody<OpsVmPage>> {
        let scope = project_scope(project.0)?;
        let (filter, sort) =
            super::vm_query::vm_query(name_prefix.0, tag.0, state.0, power.0, sort.0)?;
        let page = self
            .state
            .engine
            .list_vms_matching(
                &scope,
                &filter,
                sort,
                &self.state.pages.request(limit.0, cursor.0)?,
            )
            .await?;
        Ok(JsonBody::new(&OpsVmPage {
            items: page.items.into_iter().map(Into::into).collect(),
            next: page.next,
        }))
    }

    /// List every VM found on the hosts, HCP's and others
    ///
    /// What the last inventory found, ordered by provider, host and native id; VMs without
    /// HCP's mark that `vms:adopt` can take are `adoptable`. One page at a time: when more
    /// remain, the `X-Next-Cursor` header holds the `cursor` of the next page and `Link` names
    /// its URL.
    #[oai(path = "/inventory", method = "get", operation_id = "opsInventory")]
    async fn inventory(
        &self,
        _auth: ApiAuth,
        /// Page size (default and maximum: the server's largest page, 1000 unless
        /// `HCP_PAGE_MAX` says otherwise; larger values are clamped).
        limit: Query<Option<u32>>,
        /// The `X-Next-Cursor` value of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<InventoryResponse> {
        inventory_page(
            &self.state,
            &format!("{OPS_PREFIX}/inventory"),
            limit.0,
            cursor.0,
        )
    }

    /// List capabilities per provider and host
    #[oai(
        path = "/capabilities",
        method = "get",
        operation_id = "opsCapabilities"
    )]
    async fn capabilities(&self, _auth: ApiAuth) -> Json<Vec<ProviderCapabilitiesDto>> {
        Json(
            self.state
                .engine
                .provider_capabilities()
                .into_iter()
                .map(Into::into)
                .collect(),
        )
    }

    /// Reconcile now
    ///
    /// Refreshes every host's inventory, rebuilds VMs found with HCP's mark, and reports drift.
    #[oai(path = "/reconcile", method = "post", operation_id = "opsReconcile")]
    async fn reconcile(&self, auth: ApiAuth) -> ApiResult<Json<RefreshReportDto>> {
        let principal = auth.0.principal();
        Ok(Json(
            self.state.engine.reconcile_now(&principal).await?.into(),
        ))
    }

    /// Migrate a VM to another host
    ///
    /// Moves a VM to another host of its provider in its zone: the named `target_host`, or (left
    /// out) the zone's other reachable host with the VM's image and room for it, as the VM's
    /// server group prefers. A running VM moves live where both hosts can; otherwise (and for a
    /// stopped VM) only with `allow_cold`, where the hosts declare `cold_migration`: the job
    /// stops the VM, moves it and starts it again (its action says `cold: true`). The VM's size
    /// is reserved on the target until the job ends; when it succeeds the VM is bound to the
    /// new host and a `vm_migrated` audit event names both hosts. Tenants see the job, never
    /// the hosts. Refused before any job: the VM's own host, a host of another
    /// provider or zone, a host without the VM's image (`400 INVALID_SPEC` naming
    /// `target_host`); no room on the target (`409 CAPACITY_EXHAUSTED`); a VM that is not
    /// running without `allow_cold` (`409 VM_STATE_CONFLICT`); a host that cannot move the VM
    /// the way it must move (`409 FEATURE_NOT_SUPPORTED`, saying whether `allow_cold` helps); a
    /// target a hard server group rules out (`409 SERVER_GROUP_POLICY`).
    #[oai(
        path = "/vms/:vmId/@migrate",
        method = "post",
        operation_id = "opsMigrateVm"
    )]
    async fn migrate_vm(
        &self,
        auth: ApiAuth,
        #[oai(name = "vmId")] vm_id: Path<String>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
        body: StrictJson<MigrateVmRequest>,
    ) -> ApiResult<OpsJobAccepted> {
        let principal = auth.0.principal();
        let request = MigrateRequest::new()
            .with_target_host(body.0.target_host)
            .with_allow_cold(body.0.allow_cold);
        let s = self
            .state
            .engine
            .migrate_vm(
                &principal,
                &VmId::new(vm_id.0),
                &request,
                idempotency_key.0.filter(|k| !k.is_empty()),
            )
            .await?;
        self.accepted(s, "migration accepted").await
    }

    /// Adopt a VM created outside HCP
    ///
    /// Takes a VM that carries no HCP mark (`adoptable` in `GET /api/hcp/ops/v1/inventory`)
    /// into `project`: the VM is recorded `PENDING` with its observed size and power, and a job
    /// writes HCP's mark on it through its provider, then makes it `ACTIVE` with a `vm_adopted`
    /// audit event. Nothing else about the VM changes; a running VM keeps running. Refused
    /// before any change: a VM HCP already manages or is adopting, or a name the project
    /// already uses (`409 CONFLICT`); no such VM on the host (`404 NOT_FOUND` naming `vm`); an
    /// unknown host (`400 INVALID_SPEC` naming `host`); the project's quota
    /// (`409 QUOTA_EXCEEDED`); a provider that cannot write the mark (capability `adopt`), or
    /// adoption switched off by `engine.drift_repairs.unmanaged: report`
    /// (`409 FEATURE_NOT_SUPPORTED`).
    #[oai(path = "/vms/@adopt", method = "post", operation_id = "opsAdoptVm")]
    async fn adopt_vm(
        &self,
        auth: ApiAuth,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
        body: StrictJson<AdoptVmRequest>,
    ) -> ApiResult<OpsJobAccepted> {
        let principal = auth.0.principal();
        let b = body.0;
        let project = ProjectId::new(b.project);
        project.validate().map_err(|e| e.with_field("project"))?;
        let request = AdoptRequest::new(b.host, b.vm)
            .with_provider(b.provider)
            .with_name(b.name)
            .with_tags(b.tags);
        let s = self
            .state
            .engine
            .adopt_vm(
                &principal,
                &project,
                &request,
                idempotency_key.0.filter(|k| !k.is_empty()),
            )
            .await?;
        self.accepted(s, "adoption accepted").await
    }

    /// Release a VM from HCP
    ///
    /// The reverse of `vms:adopt`: a job removes HCP's mark from the VM through its provider,
    /// then HCP forgets the VM (a `vm_released` audit event). The VM itself stays on its host
    /// as it is, running or not; it shows again as `adoptable` in the inventory. Refused before
    /// any change: an unknown VM (`404`), a VM still being created or adopted, or one missing
    /// from its host (`409 VM_STATE_CONFLICT`), a provider that cannot remove the mark
    /// (`409 FEATURE_NOT_SUPPORTED`).
    #[oai(
        path = "/vms/:vmId/@release",
        method = "post",
        operation_id = "opsReleaseVm"
    )]
    async fn release_vm(
        &self,
        auth: ApiAuth,
        #[oai(name = "vmId")] vm_id: Path<String>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> ApiResult<OpsJobAccepted> {
        let principal = auth.0.principal();
        let s = self
            .state
            .engine
            .release_vm(
                &principal,
                &VmId::new(vm_id.0),
                idempotency_key.0.filter(|k| !k.is_empty()),
            )
            .await?;
        self.accepted(s, "release accepted").await
    }

    /// List jobs of every project
    #[oai(path = "/jobs", method = "get", operation_id = "opsJobs")]
    async fn jobs(
        &self,
        _auth: ApiAuth,
        /// Only this project's jobs.
        project: Query<Option<String>>,
        /// Only jobs on this VM.
        vm_id: Query<Option<String>>,
        /// Only jobs in this state.
        state: Query<Option<JobStateDto>>,
        /// Page size (default 100, clamped to the server's maximum).
        limit: Query<Option<u32>>,
        /// The `next` cursor of the previous page.
        cursor: Query<Option<String>>,
    ) -> ApiResult<JsonBody<JobPage>> {
        let scope = project_scope(project.0)?;
        let page = self
            .state
            .job_page(&scope, vm_id.0, state.0, limit.0, cursor.0)
            .await?;
        Ok(JsonBody::new(&JobPage {
            items: page.items.iter().map(JobDto::operator).collect(),
            next: page.next,
        }))
    }

    /// Get a job with its host and provider
    #[oai(path = "/jobs/:jobId", method = "get", operation_id = "opsGetJob")]
    async fn job(
        &self,
        _auth: ApiAuth,
        #[oai(name = "jobId")] job_id: Path<String>,
    ) -> ApiResult<JsonBody<JobDto>> {
        let job = self
            .state
            .engine
            .get_job(&Scope::All, &JobId::new(job_id.0))
            .await?;
        Ok(JsonBody::new(&JobDto::operator(&job)))
    }

    /// Read a job's log with its operator details
    ///
    /// Every line, the operator-only ones included, with its `detail`; lines after line number
    /// `after`, oldest first. Pass the page's `next` as `after` to read on.
    #[oai(
        path = "/jobs/:jobId/logs",
        method = "get",
        operation_id = "opsJobLogs"
    )]
    async fn job_logs(
        &self,
        _auth: ApiAuth,
        #[oai(name = "jobId")] job_id: Path<String>,
        /// Only lines after this line number.
        after: Query<Option<u64>>,
        /// Page size (default 100, clamped to the server's maximum).
        limit: Query<Option<u32>>,
    ) -> ApiResult<JsonBody<OpsJobLogPage>> {
        let limit = self.state.pages.request(limit.0, None)?.limit;
        let job = self
            .state
            .engine
            .get_job(&Scope::All, &JobId::new(job_id.0))
            .await?;
        let mut lines = self
            .state
            .engine
            .store()
            .job_logs(&job.id, after.0.unwrap_or(0))
            .await?;
        let next = (lines.len() > limit)
            .then(|| {
                lines
                    .get(limit.saturating_sub(1))
                    .map(|l| l.seq.to_string())
            })
            .flatten();
        lines.truncate(limit);
        Ok(JsonBody::new(&OpsJobLogPage {
            items: lines.into_iter().map(Into::into).collect(),
            next,
        }))
    }

    /// Read the audit stream, one page at a time
    ///
    /// Events in order after sequence number `after`; pass the page's `next` as `after` to read on.
    #[oai(path = "/events", method = "get", operation_id = "opsEvents")]
    async fn events(
        &self,
        _auth: ApiAuth,
        /// Only events after this sequence number.
        after: Query<Option<u64>>,
        /// Only this project's events.
        project: Query<Option<String>>,
        /// Only this VM's events.
        vm_id: Query<Option<String>>,
        /// Page size (default 100, clamped to the server's maximum).
        limit: Query<Option<u32>>,
    ) -> ApiResult<JsonBody<EventPage>> {
        let limit = self.state.pages.request(limit.0, None)?.limit;
        let filter = EventFilter {
            after: after.0.unwrap_or(0),
            project: project.0.filter(|p| !p.is_empty()).map(ProjectId::new),
            vm_id: vm_id.0.map(VmId::new),
            limit,
        };
        let events = self.state.engine.list_events(&filter).await?;
        let next = (events.len() == limit)
            .then(|| events.last().map(|e| e.seq.to_string()))
            .flatten();
        Ok(JsonBody::new(&EventPageRef::new(&events, next)))
    }

    /// Follow the audit stream
    ///
    /// Server-sent events (`event: audit`, `id` = sequence number): past events after `after`,
    /// then live ones.
    #[oai(
        path = "/events/stream",
        method = "get",
        operation_id = "opsEventStream"
    )]
    async fn event_stream(
        &self,
        _auth: ApiAuth,
        /// Only events after this sequence number.
        after: Query<Option<u64>>,
        /// Only this project's events.
        project: Query<Option<String>>,
    ) -> ApiResult<EventStream<BoxStream<'static, AuditEventItem>>> {
        let filter = EventFilter {
            after: after.0.unwrap_or(0),
            project: project.0.filter(|p| !p.is_empty()).map(ProjectId::new),
            vm_id: None,
            limit: 0,
        };
        let stream = audit_stream(self.state.engine.clone(), filter).await?;
        Ok(EventStream::new(stream)
            .keep_alive(super::tenant::SSE_KEEP_ALIVE)
            .to_event(|e| {
                Event::message(e.to_json_string())
                    .event_type("audit")
                    .id(e.0.seq.to_string())
            }))
    }
}
