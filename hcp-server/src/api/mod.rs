//! The routes, one module per API, and what they share: the application state, the request
//! context of the authenticated caller, job lookups scoped to the caller's projects, and the
//! colon-verb routing.

pub(crate) mod common;
pub(crate) mod day2;
pub(crate) mod groups;
pub(crate) mod health;
pub(crate) mod hyperv;
pub(crate) mod me;
pub(crate) mod ops;
pub(crate) mod security;
pub(crate) mod tenant;
pub(crate) mod tenant_events;
pub(crate) mod vm_query;

use std::collections::HashMap;
use std::sync::Arc;

use hcp_core::{
    Engine, Error, ErrorKind, Job, JobId, JobWatch, ProjectId, RequestContext, Submitted,
};
use poem_openapi::{ApiResponse, OpenApiService, Tags};

use crate::auth;
use crate::dto::AcceptedDto;
use crate::json::JsonBody;
use crate::limits::PageLimits;
use crate::metrics::Metrics;

/// The tenant API's path prefix.
pub(crate) const TENANT_PREFIX: &str = "/api/hcp/tenant/v1";

/// The custom verbs of `.../vms/{vmId}:<verb>`.
pub(crate) const COLON_VERBS: [&str; 6] = ["start", "stop", "reboot", "console", "plan", "resize"];
/// The custom verbs of `.../vms/{vmId}/snapshots/{snapshotId}:<verb>`.
pub(crate) const SNAPSHOT_COLON_VERBS: [&str; 1] = ["revert"];
/// The custom verbs of `.../projects/{projectId}/jobs/{jobId}:<verb>`.
pub(crate) const JOB_COLON_VERBS: [&str; 1] = ["cancel"];
/// The operations API's prefix.
pub(crate) const OPS_PREFIX: &str = "/api/hcp/ops/v1";
/// The custom verbs of the operations API's `/vms/{vmId}:<verb>`.
pub(crate) const OPS_VM_COLON_VERBS: [&str; 2] = ["migrate", "release"];
/// The custom verbs of the operations API's VM collection, `/vms:<verb>`.
pub(crate) const OPS_VMS_COLLECTION_VERBS: [&str; 1] = ["adopt"];
/// How a colon verb is routed internally: `.../vms/{vmId}/@start`. Requests never reach these
/// paths directly (see [`crate::http`]), and the published OpenAPI document shows `{vmId}:start`.
pub(crate) const VERB_MARKER: &str = "/@";

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    /// The console tokens and relays.
    pub(crate) consoles: Arc<crate::console::ConsoleProxy>,
    pub(crate) pages: PageLimits,
    pub(crate) metrics: Arc<Metrics>,
}

pub(crate) type State = Arc<AppState>;

impl AppState {
    /// Returns true once the first inventory has loaded and at least one provider answers.
    pub(crate) fn ready(&self) -> Result<(), String> {
        let providers = self.engine.providers();
        if !providers.iter().any(|p| p.healthy) {
            return Err(format!(
                "none of the {} configured providers answers (no host answered the last inventory)",
                providers.len()
            ));
        }
        if !self.engine.is_ready() {
            return Err("the first inventory has not finished loading".into());
        }
        Ok(())
    }

    /// Lists one page of the jobs in `scope`, newest first, filtered by a list route's `vm_id`
    /// and `state` query parameters and paged by its `limit` and `cursor`.
    pub(crate) async fn job_page(
        &self,
        scope: &hcp_core::store::Scope,
        vm_id: Option<String>,
        state: Option<crate::dto::JobStateDto>,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> hcp_core::Result<hcp_core::store::Page<Job>> {
        let filter = hcp_core::store::JobFilter {
            vm_id: vm_id.map(hcp_core::VmId::new),
            state: state.map(Into::into),
        };
        self.engine
            .list_jobs(scope, &filter, &self.pages.request(limit, cursor)?)
            .await
    }
}

/// Builds the request context of a tenant request in `project`: a malformed project id is a
/// 400; a project the caller is not a member of, or (when projects are configured) an unknown
/// one, is a 404. Only operators see the configured projects named in that 404.
pub(crate) fn tenant_context(
    engine: &Engine,
    req: &poem::Request,
    project: &str,
    idempotency_key: Option<String>,
) -> hcp_core::Result<RequestContext> {
    let caller = auth::caller(req);
    let project = ProjectId::new(project);
    project.validate()?;
    auth::check_member(&caller, &project)?;
    check_known(engine, &caller, &project)?;
    Ok(RequestContext::new(project, caller.principal())
        .with_idempotency_key(idempotency_key.filter(|k| !k.is_empty())))
}

/// Refuses a project that is not configured (when projects are configured) as "not found";
/// only operators see the configured projects named in that error.
fn check_known(
    engine: &Engine,
    caller: &auth::Caller,
    project: &ProjectId,
) -> hcp_core::Result<()> {
    engine.check_project(project).map_err(|e| {
        if e.kind() == ErrorKind::NotFound && !caller.operator {
            Error::new(
                ErrorKind::NotFound,
                format!("project: project `{project}` not found"),
            )
            .with_field("project")
        } else {
            e
        }
    })
}

/// Builds the request context of a Hyper-V route in its default `project`: the Hyper-V role
/// (checked before routing) is enough; project membership does not apply. An unconfigured
/// default project is "not found", naming no other project.
pub(crate) fn legacy_context(
    engine: &Engine,
    req: &poem::Request,
    project: &str,
    idempotency_key: Option<String>,
) -> hcp_core::Result<RequestContext> {
    let caller = auth::caller(req);
    let project = ProjectId::new(project);
    check_known(engine, &caller, &project)?;
    Ok(RequestContext::new(project, caller.principal())
        .with_idempotency_key(idempotency_key.filter(|k| !k.is_empty())))
}

/// Returns a job by id, looked up in the engine within each of the caller's projects (every
/// project for operators); a job of another project is "not found".
pub(crate) async fn find_job(
    engine: &Engine,
    req: &poem::Request,
    job_id: &JobId,
) -> hcp_core::Result<Job> {
    for scope in auth::caller(req).scopes() {
        match engine.get_job(&scope, job_id).await {
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            other => return other,
        }
    }
    Err(Error::not_found("job", job_id))
}

/// Follows a job by id, scoped like [`find_job`].
pub(crate) async fn watch_job(
    engine: &Engine,
    req: &poem::Request,
    job_id: &JobId,
) -> hcp_core::Result<JobWatch> {
    for scope in auth::caller(req).scopes() {
        match engine.watch_job(&scope, job_id).await {
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            other => return other,
        }
    }
    Err(Error::not_found("job", job_id))
}

/// API groups in the OpenAPI document.
#[derive(Tags)]
pub(crate) enum ApiTags {
    /// Tenant API: VMs and jobs of one project.
    Tenant,
    /// Operations API: providers, hosts, all VMs, reconciliation and the audit stream.
    Ops,
    /// Common read-only API: the catalog and capabilities.
    Common,
    /// The Hyper-V service's routes, kept for its existing users.
    #[oai(rename = "Hyper-V")]
    HyperV,
    /// Health, readiness and metrics.
    Health,
}

/// The answer of every route that starts a job.
#[derive(Debug, ApiResponse)]
pub(crate) enum AcceptedResponse {
    /// Accepted: a job does the work; `Location` is the job's URL. A replayed idempotency key
    /// answers the first request's body again, with `Idempotency-Replayed: true`.
    #[oai(status = 202)]
    Accepted(
        JsonBody<AcceptedDto>,
        #[oai(header = "Location")] String,
        /// `true` when the request replayed an earlier one with the same idempotency key: no new
        /// job was started; absent otherwise.
        #[oai(header = "Idempotency-Replayed")]
        Option<bool>,
    ),
}

impl AcceptedResponse {
    pub(crate) fn new(project: &ProjectId, s: &Submitted) -> Self {
        tracing::info!(vm_id = %s.vm_id, job_id = %s.job_id, project = %project, replayed = s.replayed, "job accepted");
        AcceptedResponse::Accepted(
            JsonBody::new(&AcceptedDto {
                resource_id: format!("projects/{project}/vms/{}", s.vm_id),
                vm_id: s.vm_id.to_string(),
                job_id: s.job_id.to_string(),
            }),
            format!("{TENANT_PREFIX}/jobs/{}", s.job_id),
            s.replayed.then_some(true),
        )
    }
}

pub(crate) type Apis = (
    tenant::TenantApi,
    tenant_events::TenantEventsApi,
    me::MeApi,
    day2::Day2Api,
    groups::ServerGroupsApi,
    ops::OpsApi,
    common::CommonApi,
    hyperv::HyperVApi,
    health::HealthApi,
);

/// Builds the OpenAPI service over every API.
pub(crate) fn service(state: &State) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            tenant::TenantApi { state: state.clone() },
            tenant_events::TenantEventsApi { state: state.clone() },
            me::MeApi { state: state.clone() },
            day2::Day2Api { state: state.clone() },
            groups::ServerGroupsApi { state: state.clone() },
            ops::OpsApi { state: state.clone() },
            common::CommonApi { state: state.clone() },
            hyperv::HyperVApi { state: state.clone() },
            health::HealthApi { state: state.clone() },
        ),
        "HCP — Hypervisor Control Plane",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "One API to create, run, watch and delete VMs on Hyper-V, Proxmox VE, vSphere and libvirt (and the built-in simulator). \
         Changes are asynchronous: they answer `202 Accepted` with a job to follow (`GET /api/hcp/tenant/v1/jobs/{jobId}` \
         or its server-sent log stream). Every mutating route honours an `Idempotency-Key` header. Every error is a \
         problem-JSON body with a stable `code`. List routes page with `limit` (clamped to the server's maximum, 1000 \
         by default) and the `next` cursor of the previous page.",
    )
}

/// The tags in the order the document lists them: by importance, the tenant API first.
pub(crate) const TAG_ORDER: [ApiTags; 5] = [
    ApiTags::Tenant,
    ApiTags::Ops,
    ApiTags::Common,
    ApiTags::HyperV,
    ApiTags::Health,
];

/// Rewrites the internal colon-verb paths (`{vmId}/@start`) of a generated document into the
/// published form (`{vmId}:start`), orders the tags by [`TAG_ORDER`], applies the running
/// configuration to the security poem-openapi declared ([`security`]: none on the `public`
/// routes, and none at all when `auth` is off), and returns the document and a map from
/// operation id to route template (the `route` label of the HTTP metrics).
///
/// poem-openapi keeps tags in a sorted set (so the tenant API came last) and fixes each
/// operation's security at compile time; both need this pass.
pub(crate) fn publish(
    internal: &str,
    auth: bool,
    public: &[String],
) -> (String, HashMap<String, String>) {
    let mut doc: serde_json::Value = serde_json::from_str(internal).unwrap_or_default();
    if let Some(tags) = doc.get_mut("tags").and_then(|t| t.as_array_mut()) {
        let rank = |t: &serde_json::Value| {
            let name = t.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            TAG_ORDER
                .iter()
                .position(|tag| tag.name() == name)
                .unwrap_or(TAG_ORDER.len())
        };
        tags.sort_by_key(rank);
    }
    if !auth && let Some(schemes) = doc.get_mut("components").and_then(|c| c.as_object_mut()) {
        schemes.remove("securitySchemes");
    }
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for (path, item) in paths.iter_mut() {
            let open = !auth || public.iter().any(|p| p == path);
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for op in ops.values_mut().filter_map(|op| op.as_object_mut()) {
                if !auth {
                    op.remove("security");
                } else if open {
                    op.insert("security".into(), serde_json::json!([]));
                }
            }
        }
    }
    let mut routes = HashMap::new();
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let old = std::mem::take(paths);
        for (path, item) in old {
            // `{vmId}/@start` → `{vmId}:start`; `/vms/@adopt` → `/vms:adopt`.
            let public = path.replace(VERB_MARKER, ":");
            if let Some(ops) = item.as_object() {
                for op in ops.values() {
                    if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                        routes.insert(id.to_string(), public.clone());
                    }
                }
            }
            paths.insert(public, item);
        }
    }
    (
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
        routes,
    )
}
