//! The tenant API's project event stream (`GET /api/hcp/tenant/v1/projects/{projectId}/events`):
//! the project's VM and job changes as server-sent events, each carrying the changed VM (and
//! job) as the tenant sees them, so a client keeps a live table without polling the list.
//!
//! # Behavior
//! - Scoped like every tenant route: a project the caller is not a member of answers exactly
//!   like an unknown one (`404`), and only the project's own events are followed.
//! - Built on the audit stream, but never shows it: each change names its cause (the audit event
//!   name) and carries the tenant views of the VM and job, never hosts, native ids, principals of
//!   other events or drift details.
//! - Without a resume point the stream follows live changes only and starts with one
//!   `event: ready`; with `Last-Event-ID` (or `after`) it first replays the project's changes
//!   after that position (at most 10,000 of them), then follows live ones.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use hcp_core::store::Scope;
use hcp_core::{Engine, ErrorKind, Event, EventFilter, EventKind, JobId};
use poem::Request;
use poem::web::sse::Event as SseEvent;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::EventStream;
use poem_openapi::types::ToJSON;
use poem_openapi::{Object, OpenApi, Union};

use super::security::ApiAuth;
use super::{ApiTags, State, tenant_context};
use crate::dto::{TenantJobDto, TenantVmDto};
use crate::error::ApiResult;
use crate::sse::{follow_events, follow_live};

/// One change of a project's VM or job.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct ProjectChangeDto {
    /// The change's position in the stream (also its server-sent event `id`): send it back as
    /// `Last-Event-ID` (or `after`) to resume after it.
    pub seq: u64,
    /// What happened: `job_transition`, `vm_created`, `vm_deleted`, `vm_tags_updated`,
    /// `vm_resized`, `vm_adopted` or `drift`.
    pub cause: String,
    /// The VM the change concerns.
    pub vm_id: String,
    /// The VM as it is when the change is sent (a later state when changes follow quickly);
    /// absent once the VM no longer exists.
    #[oai(skip_serializing_if_is_none)]
    pub vm: Option<TenantVmDto>,
    /// For `job_transition`: the job as it is when the change is sent.
    #[oai(skip_serializing_if_is_none)]
    pub job: Option<TenantJobDto>,
}

/// The first event of a stream without a resume point: the stream now follows live changes.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct StreamReadyDto {
    /// The project followed.
    pub project: String,
}

/// One server-sent event of the project stream: `event: change` (with `id`), or the opening
/// `event: ready`.
// One short-lived value per event: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Union)]
#[oai(discriminator_name = "type")]
pub enum ProjectEventDto {
    /// A VM or job changed.
    #[oai(mapping = "change")]
    Change(ProjectChangeDto),
    /// The stream follows live changes from here.
    #[oai(mapping = "ready")]
    Ready(StreamReadyDto),
}

/// The event stream route of the tenant API.
pub(crate) struct TenantEventsApi {
    pub(crate) state: State,
}

#[OpenApi(prefix_path = "/api/hcp/tenant/v1", tag = "ApiTags::Tenant")]
impl TenantEventsApi {
    /// Follow a project's VM and job changes
    ///
    /// Server-sent events: `event: change` (`id` = its `seq`) each time one of the project's VMs
    /// or jobs changes, carrying the VM (and the job) as `GET` would answer them then; a VM that
    /// no longer exists comes without `vm`. Without a resume point the stream follows live
    /// changes only and opens with `event: ready`: list the VMs after it to start from a state
    /// no change is missing from. To resume, send `Last-Event-ID` (browsers' `EventSource` does
    /// on reconnect) or `after` with the last `seq` seen: the project's changes after it are
    /// replayed (at most 10,000), then live ones follow. Idle streams get a keep-alive comment
    /// every 15 seconds.
    #[oai(
        path = "/projects/:projectId/events",
        method = "get",
        operation_id = "projectEvents"
    )]
    async fn project_events(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        /// Resume after this change's `seq` (`Last-Event-ID` wins when both are sent).
        after: Query<Option<u64>>,
        /// Resume after this change's `seq` (sent by `EventSource` on reconnect).
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<u64>>,
    ) -> ApiResult<EventStream<BoxStream<'static, ProjectEventDto>>> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let engine = self.state.engine.clone();
        let project = ctx.project.clone();
        let resume = last_event_id.0.or(after.0);
        let filter = EventFilter {
            after: resume.unwrap_or(0),
            project: Some(project.clone()),
            vm_id: None,
            limit: 0,
        };
        let events = match resume {
            Some(_) => follow_events(engine.clone(), filter).await?,
            None => follow_live(engine.clone(), filter),
        };
        let scope = Scope::Project(project.clone());
        let changes = events
            .then(move |e| change_of(engine.clone(), scope.clone(), e))
            .filter_map(|c| std::future::ready(c.map(ProjectEventDto::Change)));
        let stream = match resume {
            None => stream::once(std::future::ready(ProjectEventDto::Ready(StreamReadyDto {
                project: project.to_string(),
            })))
            .chain(changes)
            .boxed(),
            _ => changes.boxed(),
        };
        Ok(EventStream::new(stream)
            .keep_alive(super::tenant::SSE_KEEP_ALIVE)
            .to_event(|e| {
                let event = SseEvent::message(e.to_json_string());
                match &e {
                    ProjectEventDto::Change(c) => event.event_type("change").id(c.seq.to_string()),
                    ProjectEventDto::Ready(_) => event.event_type("ready"),
                }
            }))
    }
}

/// Builds the change an audit event means for the tenant, reading the VM (and job) as they are
/// now; `None` for events that change no VM or job (consoles, reconcile requests).
async fn change_of(engine: Engine, scope: Scope, e: Arc<Event>) -> Option<ProjectChangeDto> {
    let vm_id = e.vm_id.clone()?;
    let job_id: Option<JobId> = match &e.kind {
        EventKind::JobTransition { job_id, .. } => Some(job_id.clone()),
        EventKind::VmCreated { .. }
        | EventKind::VmDeleted { .. }
        | EventKind::VmTagsUpdated { .. }
        | EventKind::VmResized { .. }
        | EventKind::VmAdopted { .. }
        | EventKind::VmReleased { .. }
        | EventKind::Drift(_)
        | EventKind::DriftRepaired { .. } => None,
        _ => return None,
    };
    let vm = match engine.get_vm(&scope, &vm_id).await {
        Ok(vm) => Some(vm.tenant_view().into()),
        Err(err) if err.kind() == ErrorKind::NotFound => None,
        Err(err) => {
            tracing::warn!(error = %err, %vm_id, "a project event's VM could not be read");
            None
        }
    };
    let job = match job_id {
        Some(id) => match engine.get_job(&scope, &id).await {
            Ok(job) => Some((&job).into()),
            Err(err) => {
                tracing::warn!(error = %err, job_id = %id, "a project event's job could not be read");
                None
            }
        },
        None => None,
    };
    Some(ProjectChangeDto {
        seq: e.seq,
        cause: e.kind.name().to_string(),
        vm_id: vm_id.to_string(),
        vm,
        job,
    })
}
