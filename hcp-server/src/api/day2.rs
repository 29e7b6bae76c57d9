//! Day-2 routes of the tenant API: a VM's snapshots, resize plans and resizes. Like every tenant route they act in one
//! project; ids are HCP's (`snap-…`), never the hypervisor's.

use hcp_core::{ChangeImpact, ProjectId, ResizeRequest, SnapshotSubmitted, VmId};
use poem::Request;
use poem_openapi::param::{Header, Path};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde::{Deserialize, Serialize};

use super::security::ApiAuth;
use super::{AcceptedResponse, ApiTags, State, TENANT_PREFIX, tenant_context};
use crate::dto::StrictDto;
use crate::error::ApiResult;
use crate::json::JsonBody;
use crate::limits::StrictJson;

/// Takes a snapshot: the body of `POST .../vms/{vmId}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub(crate) struct CreateSnapshotRequest {
    /// The snapshot's name, unique per VM: 1-63 lowercase letters, digits and `-`, starting
    /// with a letter.
    #[oai(validator(min_length = 1, max_length = 63))]
    pub(crate) name: String,
}

impl StrictDto for CreateSnapshotRequest {
    const SERVER_OWNED: &'static [&'static str] =
        &["id", "vm_id", "created_at", "memory", "snapshot_id"];
}

/// One snapshot of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub(crate) struct SnapshotDto {
    /// HCP's id (`snap-…`).
    pub(crate) id: String,
    /// The VM.
    pub(crate) vm_id: String,
    /// The name it was taken with.
    pub(crate) name: String,
    /// When it was taken, when the hypervisor says.
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::rfc3339_opt"
    )]
    pub(crate) created_at: Option<chrono::DateTime<chrono::Utc>>,
    /// True when it holds the VM's memory state: a revert resumes the VM where it ran. False for
    /// a disk-only snapshot: a revert leaves the VM stopped.
    pub(crate) memory: bool,
}

/// A VM's snapshots, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub(crate) struct SnapshotList {
    /// The snapshots.
    pub(crate) items: Vec<SnapshotDto>,
}

/// The answer to an accepted snapshot request.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub(crate) struct SnapshotAcceptedDto {
    /// The resource the job acts on (`projects/{project}/vms/{vmId}/snapshots/{snapshotId}`).
    pub(crate) resource_id: String,
    /// The VM.
    pub(crate) vm_id: String,
    /// The job; follow it at `/api/hcp/tenant/v1/jobs/{job_id}`.
    pub(crate) job_id: String,
    /// HCP's id of the snapshot.
    pub(crate) snapshot_id: String,
    /// Revert only: `true` when the snapshot holds memory state, so the VM comes back running
    /// where it was; `false` when it holds disks only, so the VM ends stopped and its memory
    /// state at the time of the revert is lost.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) memory_state_kept: Option<bool>,
}

/// The answer of a route that starts a snapshot job.
#[derive(Debug, ApiResponse)]
pub(crate) enum SnapshotAccepted {
    /// Accepted: a job does the work; `Location` is the job's URL.
    #[oai(status = 202)]
    Accepted(
        JsonBody<SnapshotAcceptedDto>,
        #[oai(header = "Location")] String,
        /// `true` when the request replayed an earlier one with the same idempotency key.
        #[oai(header = "Idempotency-Replayed")]
        Option<bool>,
    ),
}

impl SnapshotAccepted {
    fn new(project: &ProjectId, s: &SnapshotSubmitted) -> Self {
        let j = &s.submitted;
        tracing::info!(vm_id = %j.vm_id, job_id = %j.job_id, project = %project, replayed = j.replayed, "job accepted");
        SnapshotAccepted::Accepted(
            JsonBody::new(&SnapshotAcceptedDto {
                resource_id: format!(
                    "projects/{project}/vms/{}/snapshots/{}",
                    j.vm_id, s.snapshot_id
                ),
                vm_id: j.vm_id.to_string(),
                job_id: j.job_id.to_string(),
                snapshot_id: s.snapshot_id.clone(),
                memory_state_kept: s.memory_state_kept,
            }),
            format!("{TENANT_PREFIX}/jobs/{}", j.job_id),
            j.replayed.then_some(true),
        )
    }
}

/// A new size to plan: the body of `POST .../vms/{vmId}:plan`. A flavor, explicit sizes, or
/// both (explicit sizes override the flavor's); fields left out keep the VM's current value.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub(crate) struct PlanRequest {
    /// A catalog flavor.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 63))]
    pub(crate) flavor: Option<String>,
    /// vCPUs.
    #[serde(default)]
    pub(crate) vcpus: Option<u32>,
    /// Memory in MiB.
    #[serde(default)]
    pub(crate) memory_mib: Option<u64>,
    /// Disk size in GiB.
    #[serde(default)]
    pub(crate) disk_gib: Option<u64>,
}

impl StrictDto for PlanRequest {
    const SERVER_OWNED: &'static [&'static str] = &["id", "vm_id", "fields", "resources"];
}

/// What applying one field takes, from least to most disruptive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize, Serialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChangeImpactDto {
    /// Applied without a power change: live on a running VM, at once on a stopped one.
    Hot,
    /// Written to the VM's definition; the running guest sees it after a restart.
    Reboot,
    /// The hypervisor changes it only while the VM is off.
    PowerOff,
    /// Needs a new VM.
    Recreate,
    /// Loses data (shrinking a disk).
    DataDestructive,
}

impl From<ChangeImpact> for ChangeImpactDto {
    fn from(i: ChangeImpact) -> Self {
        match i {
            ChangeImpact::Hot => ChangeImpactDto::Hot,
            ChangeImpact::Reboot => ChangeImpactDto::Reboot,
            ChangeImpact::PowerOff => ChangeImpactDto::PowerOff,
            ChangeImpact::Recreate => ChangeImpactDto::Recreate,
            ChangeImpact::DataDestructive => ChangeImpactDto::DataDestructive,
        }
    }
}

/// The plan for one field.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub(crate) struct FieldPlanDto {
    /// The field (`vcpus`, `memory_mib`, `disk_gib`).
    pub(crate) field: String,
    /// Its value now.
    pub(crate) from: u64,
    /// The value asked for.
    pub(crate) to: u64,
    /// What applying it takes.
    pub(crate) impact: ChangeImpactDto,
    /// Why.
    pub(crate) reason: String,
}

/// A resize plan: one entry per field that changes (none when nothing would change).
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub(crate) struct PlanDto {
    /// The VM.
    pub(crate) vm_id: String,
    /// Per changed field, what applying it takes.
    pub(crate) fields: Vec<FieldPlanDto>,
}

/// A new size to apply: the body of `POST .../vms/{vmId}:resize`. The sizes as for `:plan`,
/// plus what the caller accepts the change may take.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub(crate) struct ResizeVmRequest {
    /// A catalog flavor.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 63))]
    pub(crate) flavor: Option<String>,
    /// vCPUs.
    #[serde(default)]
    pub(crate) vcpus: Option<u32>,
    /// Memory in MiB.
    #[serde(default)]
    pub(crate) memory_mib: Option<u64>,
    /// Disk size in GiB.
    #[serde(default)]
    pub(crate) disk_gib: Option<u64>,
    /// What the change may take (`hot`, `reboot`, `power_off`); `["hot"]` when absent. A field
    /// needing anything else is refused with `409 RESIZE_NOT_ALLOWED`; `recreate` and
    /// `data_destructive` are always refused.
    #[serde(default)]
    #[oai(validator(max_items = 5))]
    pub(crate) allow: Option<Vec<ChangeImpactDto>>,
}

impl StrictDto for ResizeVmRequest {
    const SERVER_OWNED: &'static [&'static str] = &["id", "vm_id", "fields", "resources", "job_id"];
}

impl From<ChangeImpactDto> for ChangeImpact {
    fn from(i: ChangeImpactDto) -> Self {
        match i {
            ChangeImpactDto::Hot => ChangeImpact::Hot,
            ChangeImpactDto::Reboot => ChangeImpact::Reboot,
            ChangeImpactDto::PowerOff => ChangeImpact::PowerOff,
            ChangeImpactDto::Recreate => ChangeImpact::Recreate,
            ChangeImpactDto::DataDestructive => ChangeImpact::DataDestructive,
        }
    }
}

pub(crate) struct Day2Api {
    pub(crate) state: State,
}

#[OpenApi(prefix_path = "/api/hcp/tenant/v1", tag = "ApiTags::Tenant")]
impl Day2Api {
    /// List a VM's snapshots
    ///
    /// Oldest first, with HCP's ids. A VM whose hypervisor cannot snapshot is refused with
    /// `409 FEATURE_NOT_SUPPORTED`.
    #[oai(
        path = "/projects/:projectId/vms/:vmId/snapshots",
        method = "get",
        operation_id = "listSnapshots"
    )]
    async fn list_snapshots(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
    ) -> ApiResult<JsonBody<SnapshotList>> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let snaps = self
            .state
            .engine
            .list_snapshots(&ctx, &VmId::new(vm_id.0))
            .await?;
        Ok(JsonBody::new(&SnapshotList {
            items: snaps
                .into_iter()
                .map(|s| SnapshotDto {
                    id: s.id,
                    vm_id: s.vm_id.to_string(),
                    name: s.name,
                    created_at: s.created_at,
                    memory: s.memory,
                })
                .collect(),
        }))
    }

    /// Plan a resize
    ///
    /// Changes nothing: answers, per field that would change, what applying it takes on this
    /// VM's hypervisor in its current power state — `hot` (no power change), `reboot` (after a
    /// restart), `power_off` (only while off), `recreate` or `data_destructive` (a disk shrink) —
    /// with the reason. An unknown flavor or a size outside the bounds is `400 INVALID_SPEC`
    /// naming the field.
    #[oai(
        path = "/projects/:projectId/vms/:vmId/@plan",
        method = "post",
        operation_id = "planVm"
    )]
    async fn plan_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        body: StrictJson<PlanRequest>,
    ) -> ApiResult<JsonBody<PlanDto>> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, None)?;
        let b = body.0;
        let request = ResizeRequest {
            flavor: b.flavor,
            vcpus: b.vcpus,
            memory_mib: b.memory_mib,
            disk_gib: b.disk_gib,
        };
        let vm_id = VmId::new(vm_id.0);
        let plan = self
            .state
            .engine
            .plan_resize(&ctx, &vm_id, &request)
            .await?;
        Ok(JsonBody::new(&PlanDto {
            vm_id: vm_id.to_string(),
            fields: plan
                .into_iter()
                .map(|p| FieldPlanDto {
                    field: p.field,
                    from: p.from,
                    to: p.to,
                    impact: p.impact.into(),
                    reason: p.reason,
                })
                .collect(),
        }))
    }

    /// Resize a VM
    ///
    /// Starts a job that changes the VM's vCPUs, memory or disk (or its flavor) in place,
    /// applying only what `allow` accepts (`["hot"]` by default): each changed field is planned
    /// as by `:plan`, and a field whose impact is not allowed is refused before any job with
    /// `409 RESIZE_NOT_ALLOWED` naming the field, what it takes and why; `recreate` and
    /// `data_destructive` (a disk shrink) are always refused. A growth beyond the project's
    /// quota or the host's room is `403 QUOTA_EXCEEDED`; a hypervisor that cannot resize is
    /// `409 FEATURE_NOT_SUPPORTED`. The job restarts the VM when `reboot` is needed and
    /// allowed, or stops and starts it for `power_off`; the VM's spec changes when the
    /// hypervisor applied the new size.
    #[oai(
        path = "/projects/:projectId/vms/:vmId/@resize",
        method = "post",
        operation_id = "resizeVm"
    )]
    async fn resize_vm(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
        body: StrictJson<ResizeVmRequest>,
    ) -> ApiResult<AcceptedResponse> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let b = body.0;
        let request = ResizeRequest {
            flavor: b.flavor,
            vcpus: b.vcpus,
            memory_mib: b.memory_mib,
            disk_gib: b.disk_gib,
        };
        let allow: Vec<ChangeImpact> = match b.allow {
            Some(a) => a.into_iter().map(Into::into).collect(),
            None => vec![ChangeImpact::Hot],
        };
        let s = self
            .state
            .engine
            .resize_vm(&ctx, &VmId::new(vm_id.0), &request, &allow)
            .await?;
        Ok(AcceptedResponse::new(&ctx.project, &s))
    }

    /// Take a snapshot
    ///
    /// Starts a snapshot job. Refused before any job: a name that is not a DNS label
    /// (`400 INVALID_SPEC` naming `name`), a name the VM already has (`409 CONFLICT` naming
    /// `name`), a VM at its snapshot limit (`engine.max_snapshots_per_vm`, `403 QUOTA_EXCEEDED`),
    /// a hypervisor without snapshots (`409 FEATURE_NOT_SUPPORTED`). A running VM's snapshot
    /// holds its memory state.
    #[oai(
        path = "/projects/:projectId/vms/:vmId/snapshots",
        method = "post",
        operation_id = "createSnapshot"
    )]
    async fn create_snapshot(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
        body: StrictJson<CreateSnapshotRequest>,
    ) -> ApiResult<SnapshotAccepted> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let s = self
            .state
            .engine
            .create_snapshot(&ctx, &VmId::new(vm_id.0), &body.0.name)
            .await?;
        Ok(SnapshotAccepted::new(&ctx.project, &s))
    }

    /// Revert a VM to a snapshot
    ///
    /// Starts a revert job. `memory_state_kept` in the answer says what happens to a running
    /// VM: `true` when the snapshot holds memory state (the VM runs on from the snapshot's
    /// moment), `false` when it holds disks only (the VM ends stopped). An unknown snapshot is
    /// `404` naming `snapshot_id`.
    #[oai(
        path = "/projects/:projectId/vms/:vmId/snapshots/:snapshotId/@revert",
        method = "post",
        operation_id = "revertSnapshot"
    )]
    async fn revert_snapshot(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        #[oai(name = "snapshotId")] snapshot_id: Path<String>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> ApiResult<SnapshotAccepted> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let s = self
            .state
            .engine
            .revert_snapshot(&ctx, &VmId::new(vm_id.0), &snapshot_id.0)
            .await?;
        Ok(SnapshotAccepted::new(&ctx.project, &s))
    }

    /// Delete a snapshot
    ///
    /// Starts a job that deletes the snapshot; the VM keeps its current state. An unknown
    /// snapshot is `404` naming `snapshot_id`.
    #[oai(
        path = "/projects/:projectId/vms/:vmId/snapshots/:snapshotId",
        method = "delete",
        operation_id = "deleteSnapshot"
    )]
    async fn delete_snapshot(
        &self,
        _auth: ApiAuth,
        req: &Request,
        #[oai(name = "projectId")] project_id: Path<String>,
        #[oai(name = "vmId")] vm_id: Path<String>,
        #[oai(name = "snapshotId")] snapshot_id: Path<String>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<String>>,
    ) -> ApiResult<SnapshotAccepted> {
        let ctx = tenant_context(&self.state.engine, req, &project_id, idempotency_key.0)?;
        let s = self
            .state
            .engine
            .delete_snapshot(&ctx, &VmId::new(vm_id.0), &snapshot_id.0)
            .await?;
        Ok(SnapshotAccepted::new(&ctx.project, &s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::assert_same_json;

    #[test]
    fn day2_responses_serialise_as_their_to_json() {
        let at: chrono::DateTime<chrono::Utc> = "2026-12-02T19:27:18.123456789Z".parse().unwrap();
        let list = SnapshotList {
            items: vec![
                SnapshotDto {
                    id: "snap-1".into(),
                    vm_id: "vm-1".into(),
                    name: "before-upgrade".into(),
                    created_at: Some(at),
                    memory: true,
                },
                SnapshotDto {
                    id: "snap-2".into(),
                    vm_id: "vm-1".into(),
                    name: "disk-only \"x\"".into(),
                    created_at: None,
                    memory: false,
                },
            ],
        };
        assert_same_json("SnapshotList", &list, &list);
        let empty = SnapshotList { items: Vec::new() };
        assert_same_json("SnapshotList", &empty, &empty);
        let impacts = [
            ChangeImpact::Hot,
            ChangeImpact::Reboot,
            ChangeImpact::PowerOff,
            ChangeImpact::Recreate,
            ChangeImpact::DataDestructive,
        ];
        let plan = PlanDto {
            vm_id: "vm-1".into(),
            fields: impacts
                .into_iter()
                .map(|i| FieldPlanDto {
                    field: "memory_mib".into(),
                    from: 1024,
                    to: u64::MAX,
                    impact: i.into(),
                    reason: "while off \u{e9}".into(),
                })
                .collect(),
        };
        assert_same_json("PlanDto", &plan, &plan);
        for memory_state_kept in [None, Some(true), Some(false)] {
            let accepted = SnapshotAcceptedDto {
                resource_id: "projects/demo/vms/vm-1/snapshots/snap-1".into(),
                vm_id: "vm-1".into(),
                job_id: "job-1".into(),
                snapshot_id: "snap-1".into(),
                memory_state_kept,
            };
            assert_same_json("SnapshotAcceptedDto", &accepted, &accepted);
        }
    }
}
