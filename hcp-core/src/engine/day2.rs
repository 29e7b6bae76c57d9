//! Day-2 operations: what a request may ask of a VM in its known state, snapshots, and the
//! checks the engine makes before any of them becomes a job.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::store::{JobFilter, PageRequest, Scope};
use crate::{
    Capability, DesiredState, Error, ErrorKind, JobAction, ListSnapshots, NativeSnapshot,
    Operation, PowerState, Result, Vm, VmId,
};

use super::{Action, Engine, Inner, RequestContext, Submitted, validate_reference};

/// One snapshot of a VM as tenants see it: HCP's id, never the hypervisor's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// HCP's id (`snap-…`), stable for the VM and the name.
    pub id: String,
    /// The VM.
    pub vm_id: VmId,
    /// The name it was taken with.
    pub name: String,
    /// When it was taken, when the hypervisor says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// True when it holds the VM's memory state: a revert resumes the VM where it ran.
    pub memory: bool,
}

/// The answer to an accepted snapshot request (create, revert or delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSubmitted {
    /// The job and its VM.
    #[serde(flatten)]
    pub submitted: Submitted,
    /// HCP's id of the snapshot.
    pub snapshot_id: String,
    /// For a revert: true when the snapshot holds memory state, so the VM comes back running
    /// where it was; false when it holds disks only, so the VM ends stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_state_kept: Option<bool>,
}

/// Returns HCP's id of the snapshot `name` of `vm_id`: derived from both, so it survives a
/// restart with an empty store and shows nothing of the hypervisor.
pub fn snapshot_id(vm_id: &VmId, name: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{vm_id}\0{name}").as_bytes());
    format!("snap-{}", &hex::encode(digest)[..20])
}

/// Code of the error returned when a request cannot succeed given the VM's known state (a reboot
/// of a stopped VM, a start of a VM whose create failed).
pub const CODE_VM_STATE_CONFLICT: &str = "VM_STATE_CONFLICT";

fn state_conflict(message: String) -> Error {
    Error::new(ErrorKind::Conflict, message).with_code(CODE_VM_STATE_CONFLICT)
}

/// Refuses an action that cannot succeed given what HCP knows of the VM, before any job exists.
///
/// # Behavior
/// The power state compared is the one HCP wants once the VM's queued jobs have run
/// (`desired_power`), so a reboot queued behind a start is accepted. A delete is always accepted:
/// its job shuts a running VM down first.
///
/// # Errors
/// [`ErrorKind::Conflict`] with code [`CODE_VM_STATE_CONFLICT`] and the reason.
pub(crate) fn check_state(vm: &Vm, action: &Action) -> crate::Result<()> {
    if matches!(action, Action::Delete { .. } | Action::Create { .. }) {
        return Ok(());
    }
    let name = &vm.spec.name;
    if vm.desired == DesiredState::Error && !vm.present {
        return Err(state_conflict(format!(
            "VM `{name}` failed to be created and does not exist on its hypervisor; only a delete is possible"
        )));
    }
    let snapshot_op = matches!(
        action,
        Action::Snapshot { .. } | Action::RevertSnapshot { .. } | Action::DeleteSnapshot { .. }
    );
    if matches!(action, Action::Resize { .. }) && vm.desired == DesiredState::Pending && !vm.present
    {
        return Err(state_conflict(format!(
            "VM `{name}` is still being created; it can be resized once its create job ends"
        )));
    }
    if matches!(action, Action::Migrate { .. })
        && vm.desired == DesiredState::Pending
        && !vm.present
    {
        return Err(state_conflict(format!(
            "VM `{name}` is still being created; it can be moved once its create job ends"
        )));
    }
    if matches!(action, Action::Release { .. }) && vm.desired == DesiredState::Pending {
        return Err(state_conflict(format!(
            "VM `{name}` is still being created or adopted; it can be released once that job ends"
        )));
    }
    if snapshot_op && vm.desired == DesiredState::Pending && !vm.present {
        return Err(state_conflict(format!(
            "VM `{name}` is still being created; its snapshots can be managed once its create job ends"
        )));
    }
    match action {
        Action::Reboot { .. } if vm.desired_power == PowerState::Stopped => Err(state_conflict(
            format!("VM `{name}` is stopped; a reboot needs a running VM (start it instead)"),
        )),
        Action::Migrate {
            allow_cold: false, ..
        } if vm.desired_power != PowerState::Running => Err(state_conflict(format!(
            "VM `{name}` is not running; a live migration needs a running VM (set allow_cold to move it while stopped)"
        ))),
        _ => Ok(()),
    }
}

/// Reads a VM's snapshots from its hypervisor.
async fn native_snapshots(inner: &Inner, vm: &Vm) -> Result<Vec<NativeSnapshot>> {
    let entry = inner.provider(&vm.binding.provider)?;
    inner
        .call(
            &vm.binding.provider,
            Operation::ListSnapshots,
            &vm.binding.host,
            entry
                .provider
                .list_snapshots(ListSnapshots::new(super::worker::target(vm))),
        )
        .await
}

/// The snapshot names a VM will have once its queued jobs have run: the hypervisor's, plus the
/// queued creates, minus the queued deletes.
async fn expected_snapshots(inner: &Inner, vm: &Vm) -> Result<Vec<NativeSnapshot>> {
    let mut snaps = native_snapshots(inner, vm).await?;
    let filter = JobFilter {
        vm_id: Some(vm.id.clone()),
        state: None,
    };
    let mut page = PageRequest::all();
    let mut queued = Vec::new();
    loop {
        let p = inner.store.list_jobs(&Scope::All, &filter, &page).await?;
        queued.extend(p.items.into_iter().filter(|j| !j.state.is_terminal()));
        match p.next {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    // Jobs list newest first; apply them in submission order.
    queued.sort_by_key(|j| j.created_at);
    for job in queued {
        match job.action {
            JobAction::Snapshot { name } if !snaps.iter().any(|s| s.name == name) => {
                let memory = vm.desired_power == PowerState::Running;
                snaps.push(NativeSnapshot::new(name, None, memory));
            }
            JobAction::DeleteSnapshot { name, .. } => snaps.retain(|s| s.name != name),
            _ => {}
        }
    }
    Ok(snaps)
}

fn find<'a>(vm: &Vm, snaps: &'a [NativeSnapshot], id: &str) -> Result<&'a NativeSnapshot> {
    validate_reference("snapshot_id", id)?;
    snaps
        .iter()
        .find(|s| snapshot_id(&vm.id, &s.name) == id)
        .ok_or_else(|| Error::not_found("snapshot", id).with_field("snapshot_id"))
}

/// Checks a snapshot create against the VM's snapshots and the per-VM limit.
pub(crate) async fn snapshot_job(inner: &Inner, vm: &Vm, name: String) -> Result<JobAction> {
    crate::validate_dns_label("name", &name)?;
    // The hypervisor's own rules (Proxmox: at most 40 characters, starting with a letter).
    let provider = &inner.provider(&vm.binding.provider)?.provider;
    provider.check_snapshot_name(&name)?;
    let snaps = expected_snapshots(inner, vm).await?;
    if snaps.iter().any(|s| s.name == name) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "name: VM `{}` already has a snapshot named `{name}`",
                vm.spec.name
            ),
        )
        .with_field("name"));
    }
    // The smaller of the engine's limit and the hypervisor's own (Hyper-V keeps 50
    // checkpoints per VM); the refusal says whose it is.
    let engine_max = inner.settings.max_snapshots_per_vm;
    let (max, whose, quota) = match provider.max_snapshots_per_vm() {
        Some(own) if own < engine_max => (
            own,
            format!("the most its hypervisor keeps for one VM ({own})"),
            "hypervisor_max_snapshots",
        ),
        _ => (
            engine_max,
            format!("the most allowed (engine.max_snapshots_per_vm = {engine_max})"),
            "max_snapshots_per_vm",
        ),
    };
    if snaps.len() >= usize::try_from(max).unwrap_or(usize::MAX) {
        return Err(Error::new(
            ErrorKind::QuotaExceeded,
            format!(
                "VM `{}` has {} snapshots, {whose}; delete one first",
                vm.spec.name,
                snaps.len()
            ),
        )
        .with_context("quota", quota));
    }
    Ok(JobAction::Snapshot { name })
}

/// Resolves the snapshot a revert names, and whether it holds memory state.
pub(crate) async fn revert_job(inner: &Inner, vm: &Vm, id: String) -> Result<JobAction> {
    let snaps = expected_snapshots(inner, vm).await?;
    let snap = find(vm, &snaps, &id)?;
    Ok(JobAction::RevertSnapshot {
        name: snap.name.clone(),
        memory: snap.memory,
        snapshot_id: id,
    })
}

/// Resolves the snapshot a delete names.
pub(crate) async fn delete_snapshot_job(inner: &Inner, vm: &Vm, id: String) -> Result<JobAction> {
    let snaps = expected_snapshots(inner, vm).await?;
    let name = find(vm, &snaps, &id)?.name.clone();
    Ok(JobAction::DeleteSnapshot {
        snapshot_id: id,
        name,
    })
}

/// A new size asked for a VM: a flavor, explicit sizes, or both (explicit sizes override the
/// flavor's); fields left out keep the VM's current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    /// A catalog flavor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Disk size in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u64>,
}

/// Code of the error returned when a resize needs more than the caller allowed (a restart, a
/// power-off), or something HCP never does in place (shrinking a disk, recreating the VM).
pub const CODE_RESIZE_NOT_ALLOWED: &str = "RESIZE_NOT_ALLOWED";

/// Turns a resize plan into its job, refusing any field whose impact the caller did not allow.
///
/// # Behavior
/// `recreate` and `data_destructive` are refused even when allowed: HCP never recreates a VM or
/// shrinks a disk in place. A plan with a `reboot` field restarts the running VM after the
/// change; one with a `power_off` field stops it first and starts it again after.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `resize` when the plan changes nothing;
/// [`ErrorKind::Conflict`] with code [`CODE_RESIZE_NOT_ALLOWED`] naming the first field refused,
/// what applying it takes and why.
pub(crate) fn resize_job(
    vm: &Vm,
    plan: &[super::FieldPlan],
    allow: &[super::ChangeImpact],
    flavor: Option<String>,
    to: crate::Resources,
) -> Result<JobAction> {
    use super::ChangeImpact;
    if plan.is_empty() {
        return Err(Error::invalid(
            "resize",
            format!(
                "VM `{}` already has {} vCPUs, {} MiB of memory and a {} GiB disk; nothing to change",
                vm.spec.name, to.vcpus, to.memory_mib, to.disk_gib
            ),
        ));
    }
    for f in plan {
        let never = matches!(
            f.impact,
            ChangeImpact::Recreate | ChangeImpact::DataDestructive
        );
        if never || !allow.contains(&f.impact) {
            let hint = if never {
                "HCP never does this in place; create a new VM of the size wanted instead"
                    .to_string()
            } else {
                format!("add `{}` to `allow` to accept it", f.impact.as_str())
            };
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{}: changing it from {} to {} takes `{}` ({}); {hint}",
                    f.field,
                    f.from,
                    f.to,
                    f.impact.as_str(),
                    f.reason
                ),
            )
            .with_code(CODE_RESIZE_NOT_ALLOWED)
            .with_field(f.field.clone())
            .with_context("impact", f.impact.as_str()));
        }
    }
    Ok(JobAction::Resize {
        from: vm.resources,
        to,
        flavor,
        reboot: plan.iter().any(|f| f.impact == ChangeImpact::Reboot),
        power_cycle: plan.iter().any(|f| f.impact == ChangeImpact::PowerOff),
    })
}

/// Returns the spec a VM has after `req` and the size it resolves to.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming the field for an unknown flavor or a size outside the
/// global bounds.
/// Plans `vm`'s resize to `target`: the kind's table ([`super::plan_resize`]) refined by the
/// VM's provider ([`crate::Provider::refine_resize_plan`]). `:plan` and `:resize` both use it,
/// so what the plan shows is what the resize enforces.
///
/// # Errors
/// [`ErrorKind::ProviderUnavailable`] when the VM's provider is not configured.
pub(crate) fn plan_for(
    inner: &Inner,
    vm: &Vm,
    target: crate::Resources,
) -> Result<Vec<super::FieldPlan>> {
    let provider = &inner.provider(&vm.binding.provider)?.provider;
    let mut plan = super::plan_resize(&provider.info().kind, vm.power, vm.resources, target);
    provider.refine_resize_plan(vm.power, &mut plan);
    Ok(plan)
}

pub(crate) fn resize_target(
    inner: &Inner,
    vm: &Vm,
    req: &ResizeRequest,
) -> Result<(crate::VmSpec, crate::Resources)> {
    let mut spec = crate::VmSpec::clone(&vm.spec);
    if let Some(f) = &req.flavor {
        spec.flavor = Some(f.clone());
        spec.vcpus = None;
        spec.memory_mib = None;
        spec.disk_gib = None;
    } else if spec.flavor.is_none()
        || inner
            .catalog
            .flavor(spec.flavor.as_deref().unwrap_or(""))
            .is_none()
    {
        // A VM rebuilt from its host may name no known flavor: start from its actual size.
        spec.flavor = None;
        spec.vcpus = Some(vm.resources.vcpus);
        spec.memory_mib = Some(vm.resources.memory_mib);
        spec.disk_gib = Some(vm.resources.disk_gib);
    }
    if let Some(v) = req.vcpus {
        spec.vcpus = Some(v);
    }
    if let Some(m) = req.memory_mib {
        spec.memory_mib = Some(m);
    }
    if let Some(d) = req.disk_gib {
        spec.disk_gib = Some(d);
    }
    let target = inner.catalog.resolve(&spec)?;
    Ok((spec, target))
}

impl Engine {
    /// Plans a resize without changing anything: per field that changes, what applying it takes
    /// on this VM's provider and in its power state, with the reason (see
    /// [`super::plan_resize`]).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a VM outside `ctx`'s project; [`ErrorKind::InvalidSpec`]
    /// naming the field for an unknown flavor or a size outside the global bounds or below the
    /// image's minimum disk; a request that changes nothing is an empty plan.
    pub async fn plan_resize(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        req: &ResizeRequest,
    ) -> Result<Vec<super::FieldPlan>> {
        self.check_project(&ctx.project)?;
        let vm = self.inner.live_vm(&ctx.scope(), vm_id).await?;
        let (_, target) = resize_target(&self.inner, &vm, req)?;
        plan_for(&self.inner, &vm, target)
    }

    /// Changes a VM's size in place as a job, applying only changes whose impact is in `allow`
    /// (see [`Engine::submit`] and [`super::plan_resize`]).
    ///
    /// # Behavior
    /// The planner classifies each changed field against the VM's provider and power state;
    /// every field must be allowed, and `recreate` or `data_destructive` (a disk shrink) never
    /// is. A growth must fit the project's quota and the VM's host, checked as for a create. The
    /// job resizes the VM, then restarts it when the plan needs `reboot`, or stops it before and
    /// starts it after when the plan needs `power_off`; the VM's spec and size change when the
    /// provider has applied them, and an audit event (`vm_resized`) records the change.
    ///
    /// # Errors
    /// As [`Engine::submit`]; [`ErrorKind::FeatureNotSupported`] when the VM's host cannot
    /// resize; [`ErrorKind::Conflict`] with code [`CODE_RESIZE_NOT_ALLOWED`] naming the field
    /// refused; [`ErrorKind::InvalidSpec`] naming `resize` for a request that changes nothing;
    /// [`ErrorKind::QuotaExceeded`] when the growth exceeds the project's quota or the host's
    /// free capacity.
    pub async fn resize_vm(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        change: &ResizeRequest,
        allow: &[super::ChangeImpact],
    ) -> Result<Submitted> {
        self.submit(
            ctx,
            Action::Resize {
                vm_id: vm_id.clone(),
                change: change.clone(),
                allow: allow.to_vec(),
            },
        )
        .await
    }

    /// Returns the caller's live VM, refused when its host cannot snapshot.
    async fn snapshottable_vm(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        op: Operation,
    ) -> Result<Vm> {
        self.check_project(&ctx.project)?;
        let vm = self.inner.live_vm(&ctx.scope(), vm_id).await?;
        self.require(&vm, op, Capability::Snapshot)?;
        Ok(vm)
    }

    /// Lists a VM's snapshots, oldest first, with HCP's ids.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for a VM outside `ctx`'s project; [`ErrorKind::FeatureNotSupported`]
    /// when its host cannot snapshot; the hypervisor's error when it cannot be asked.
    pub async fn list_snapshots(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
    ) -> Result<Vec<Snapshot>> {
        let op = Operation::ListSnapshots;
        let result = async {
            let vm = self.snapshottable_vm(ctx, vm_id, op).await?;
            if vm.desired == DesiredState::Pending && !vm.present {
                // Not on its host yet: it has no snapshots.
                return Ok(Vec::new());
            }
            let snaps = native_snapshots(&self.inner, &vm).await?;
            Ok(snaps
                .into_iter()
                .map(|s| Snapshot {
                    id: snapshot_id(&vm.id, &s.name),
                    vm_id: vm.id.clone(),
                    name: s.name,
                    created_at: s.created_at,
                    memory: s.memory,
                })
                .collect())
        }
        .await;
        result.map_err(|e: Error| e.with_operation(op))
    }

    /// Submits a snapshot action (`Action::Snapshot`, `RevertSnapshot` or `DeleteSnapshot`) as
    /// a job (see [`Engine::submit`]): the one entry point for shells that carry the action as a
    /// value; [`Engine::create_snapshot`], [`Engine::revert_snapshot`] and
    /// [`Engine::delete_snapshot`] call it.
    ///
    /// # Errors
    /// As those; [`ErrorKind::InvalidSpec`] naming `operation` for any other action.
    pub async fn submit_snapshot(
        &self,
        ctx: &RequestContext,
        action: Action,
    ) -> Result<SnapshotSubmitted> {
        let (snapshot_id, revert) = match &action {
            Action::Snapshot { vm_id, name } => (snapshot_id(vm_id, name), false),
            Action::RevertSnapshot { snapshot_id, .. } => (snapshot_id.clone(), true),
            Action::DeleteSnapshot { snapshot_id, .. } => (snapshot_id.clone(), false),
            other => {
                return Err(Error::invalid(
                    "operation",
                    format!("`{}` is not a snapshot operation", other.operation()),
                ));
            }
        };
        let submitted = self.submit(ctx, action).await?;
        // A revert's job (the first request's, on a replay) recorded what the snapshot holds.
        let memory_state_kept = if revert {
            self.inner
                .store
                .get_job(&ctx.scope(), &submitted.job_id)
                .await?
                .and_then(|j| match j.action {
                    JobAction::RevertSnapshot { memory, .. } => Some(memory),
                    _ => None,
                })
        } else {
            None
        };
        Ok(SnapshotSubmitted {
            submitted,
            snapshot_id,
            memory_state_kept,
        })
    }

    /// Takes a snapshot named `name` as a job (see [`Engine::submit`]).
    ///
    /// # Errors
    /// As [`Engine::submit`]; [`ErrorKind::InvalidSpec`] naming `name` for a name that is not a
    /// DNS label or that the VM's provider refuses ([`crate::Provider::check_snapshot_name`]);
    /// [`ErrorKind::Conflict`] naming `name` when the VM has (or will have) a snapshot
    /// of that name; [`ErrorKind::QuotaExceeded`] when it has `max_snapshots_per_vm` already.
    pub async fn create_snapshot(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        name: &str,
    ) -> Result<SnapshotSubmitted> {
        let action = Action::Snapshot {
            vm_id: vm_id.clone(),
            name: name.to_string(),
        };
        self.submit_snapshot(ctx, action).await
    }

    /// Returns a VM to a snapshot as a job, saying whether the VM's memory state comes back.
    ///
    /// # Errors
    /// As [`Engine::submit`]; [`ErrorKind::NotFound`] naming `snapshot_id` for an unknown
    /// snapshot.
    pub async fn revert_snapshot(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        snapshot_id: &str,
    ) -> Result<SnapshotSubmitted> {
        let action = Action::RevertSnapshot {
            vm_id: vm_id.clone(),
            snapshot_id: snapshot_id.to_string(),
        };
        self.submit_snapshot(ctx, action).await
    }

    /// Deletes a snapshot as a job; the VM keeps its current state.
    ///
    /// # Errors
    /// As [`Engine::submit`]; [`ErrorKind::NotFound`] naming `snapshot_id` for an unknown
    /// snapshot.
    pub async fn delete_snapshot(
        &self,
        ctx: &RequestContext,
        vm_id: &VmId,
        snapshot_id: &str,
    ) -> Result<SnapshotSubmitted> {
        let action = Action::DeleteSnapshot {
            vm_id: vm_id.clone(),
            snapshot_id: snapshot_id.to_string(),
        };
        self.submit_snapshot(ctx, action).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProviderBinding, Resources, VmId, VmSpec};

    fn vm(desired: DesiredState, power: PowerState, present: bool) -> Vm {
        let now = chrono::Utc::now();
        Vm {
            id: VmId::new("vm-1"),
            project: "demo".into(),
            spec: std::sync::Arc::new(VmSpec::new("web-1", "ubuntu-24.04", "small")),
            resources: Resources {
                vcpus: 1,
                memory_mib: 512,
                disk_gib: 1,
            },
            zone: "zone-a".into(),
            desired,
            desired_power: power,
            power,
            present,
            binding: ProviderBinding {
                provider: "sim".into(),
                host: "h".into(),
                native_id: None,
                member_host: None,
            },
            last_error: None,
            created_at: now,
            updated_at: now,
            generation: 1,
        }
    }

    #[test]
    fn refuses_what_the_known_state_cannot_do() {
        let id = VmId::new("vm-1");
        let reboot = Action::Reboot {
            vm_id: id.clone(),
            hard: false,
        };
        let delete = Action::Delete {
            vm_id: id.clone(),
            force: false,
        };
        let start = Action::Start { vm_id: id.clone() };
        let running = vm(DesiredState::Active, PowerState::Running, true);
        let stopped = vm(DesiredState::Active, PowerState::Stopped, true);
        let failed = vm(DesiredState::Error, PowerState::Unknown, false);
        let pending = vm(DesiredState::Pending, PowerState::Running, false);
        let snapshot = Action::Snapshot {
            vm_id: id.clone(),
            name: "s".into(),
        };
        for (vm, action, ok) in [
            (&running, &reboot, true),
            (&running, &delete, true),
            (&stopped, &reboot, false),
            (&stopped, &delete, true),
            (&stopped, &start, true),
            (&failed, &start, false),
            (&failed, &reboot, false),
            (&failed, &delete, true),
            (&pending, &snapshot, false),
            (&pending, &reboot, true),
            (&running, &snapshot, true),
        ] {
            let r = check_state(vm, action);
            assert_eq!(r.is_ok(), ok, "{action:?} on {:?}: {r:?}", vm.desired_power);
            if let Err(e) = r {
                assert_eq!(e.kind(), ErrorKind::Conflict);
                assert_eq!(e.code(), CODE_VM_STATE_CONFLICT);
                assert!(e.message().contains("web-1"), "{e}");
            }
        }
    }
}
