//! Adoption and release (operators only): taking a VM created outside HCP into a project, and
//! giving one back.
//!
//! # Behavior
//! - Adoption reads the host's inventory live, finds the VM by native id or name, and refuses
//!   before anything changes when the VM carries HCP's mark (or an adoption of it is under
//!   way), is not on the host, would exceed the project's quota, or its host cannot write the
//!   mark (capability `adopt`), or when `engine.drift_repairs.unmanaged` is `report`. Accepted,
//!   the VM is recorded `PENDING` with its observed size and power; a job writes the mark
//!   through the provider and makes it `ACTIVE`, with a `vm_adopted` audit event.
//! - Release removes the mark through the provider and then the VM from the store, with a
//!   `vm_released` audit event. Neither job starts, stops or changes the VM itself.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::inventory::read_inventory;
use super::{Action, Engine, RequestContext, Submitted, validate_reference};
use crate::store::Scope;
use crate::{
    Capability, DesiredState, Error, ErrorKind, HostInventory, JobAction, NativeVm, Operation,
    PowerState, Principal, ProjectId, ProviderBinding, Requirements, Result, UnmanagedRepair, Vm,
    VmId, VmSpec, validate_dns_label, validate_tags,
};

/// An operator's request to take a VM created outside HCP into a project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptRequest {
    /// The provider of the host; needed only when hosts of several providers share the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The host the VM is on, as the operators' inventory reports it.
    pub host: String,
    /// The VM's native id or name, as the operators' inventory reports it.
    pub vm: String,
    /// The VM's name in HCP; the hypervisor's name when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The VM's tags in HCP; the hypervisor's tags when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

impl AdoptRequest {
    /// Creates a request for the VM `vm` (native id or name) on `host`.
    pub fn new(host: impl Into<String>, vm: impl Into<String>) -> Self {
        AdoptRequest {
            host: host.into(),
            vm: vm.into(),
            ..AdoptRequest::default()
        }
    }

    /// Names the host's provider.
    pub fn with_provider(mut self, provider: Option<String>) -> Self {
        self.provider = provider;
        self
    }

    /// Names the VM in HCP.
    pub fn with_name(mut self, name: Option<String>) -> Self {
        self.name = name;
        self
    }

    /// Sets the VM's tags in HCP.
    pub fn with_tags(mut self, tags: Option<BTreeMap<String, String>>) -> Self {
        self.tags = tags;
        self
    }
}

impl Engine {
    /// Takes a VM created outside HCP into `project` (an operator's request; see the module
    /// docs). Returns at once with the job that writes HCP's mark on the VM.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidSpec`] naming `host`, `provider`, `name` or `tags`;
    /// - [`ErrorKind::NotFound`] naming `vm` when the host has no such VM;
    /// - [`ErrorKind::Conflict`] when HCP already manages the VM, or the name is taken in the
    ///   project;
    /// - [`ErrorKind::QuotaExceeded`] when the VM does not fit the project's quota;
    /// - [`ErrorKind::FeatureNotSupported`] when the host's provider cannot write the mark or
    ///   adoption is switched off;
    /// - [`ErrorKind::ProviderUnavailable`] when the host does not answer.
    pub async fn adopt_vm(
        &self,
        principal: &Principal,
        project: &ProjectId,
        request: &AdoptRequest,
        idempotency_key: Option<String>,
    ) -> Result<Submitted> {
        let ctx = RequestContext::new(project.clone(), principal.clone())
            .with_idempotency_key(idempotency_key);
        self.submit(&ctx, Action::Adopt(request.clone())).await
    }

    /// Gives a VM back (an operator's request; see the module docs): its job removes HCP's mark
    /// from the VM and then the VM from the store, leaving the VM itself as it is.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming `vm_id`; [`ErrorKind::FeatureNotSupported`] when the
    /// VM's host cannot remove the mark; [`ErrorKind::Conflict`] with code
    /// [`super::CODE_VM_STATE_CONFLICT`] for a VM still being created or missing from its host.
    pub async fn release_vm(
        &self,
        principal: &Principal,
        vm_id: &VmId,
        idempotency_key: Option<String>,
    ) -> Result<Submitted> {
        let vm = self
            .inner
            .live_vm(&Scope::All, vm_id)
            .await
            .map_err(|e| e.with_operation(Operation::ReleaseVm))?;
        let ctx = RequestContext::new(vm.project, principal.clone())
            .with_idempotency_key(idempotency_key);
        self.submit(
            &ctx,
            Action::Release {
                vm_id: vm_id.clone(),
            },
        )
        .await
    }

    /// Checks an adoption and returns the VM record to insert (`PENDING`, observed size and
    /// power) with its provider and host.
    pub(crate) async fn adoption(
        &self,
        ctx: &RequestContext,
        req: &AdoptRequest,
        now: DateTime<Utc>,
    ) -> Result<(Vm, String, String)> {
        let op = Operation::AdoptVm;
        if self.inner.settings.drift_repairs.unmanaged == UnmanagedRepair::Report {
            return Err(Error::new(
                ErrorKind::FeatureNotSupported,
                "adoption is switched off: engine.drift_repairs.unmanaged is `report`; set it to `offer_adoption`",
            ));
        }
        validate_reference("host", &req.host)?;
        validate_reference("vm", &req.vm)?;
        if let Some(p) = &req.provider {
            validate_reference("provider", p)?;
        }
        if let Some(n) = &req.name {
            validate_dns_label("name", n)?;
        }
        if let Some(t) = &req.tags {
            validate_tags(t)?;
        }
        let (provider, zone, caps) = {
            let inv = read_inventory(&self.inner);
            let hosts: Vec<_> = inv
                .hosts
                .iter()
                .filter(|((p, h), _)| {
                    *h == req.host && req.provider.as_ref().is_none_or(|want| want == p)
                })
                .collect();
            match hosts.as_slice() {
                [] => {
                    return Err(Error::invalid(
                        "host",
                        format!(
                            "unknown host `{}`{}; the operators' host list names every host",
                            crate::error::echo(&req.host),
                            req.provider
                                .as_ref()
                                .map(|p| format!(" of provider `{}`", crate::error::echo(p)))
                                .unwrap_or_default()
                        ),
                    ));
                }
                [((p, _), h)] => (p.clone(), h.info.zone.clone(), h.caps),
                _ => {
                    return Err(Error::invalid(
                        "provider",
                        format!(
                            "hosts of several providers are named `{}`; name the provider",
                            crate::error::echo(&req.host)
                        ),
                    ));
                }
            }
        };
        caps.check(
            &provider,
            op,
            &Requirements {
                flags: vec![Capability::Adopt],
                ..Default::default()
            },
        )?;
        let entry = self.inner.provider(&provider)?;
        let inventory = self
            .inner
            .call(
                &provider,
                Operation::HostInventory,
                &req.host,
                entry
                    .provider
                    .host_inventory(HostInventory::new(req.host.clone())),
            )
            .await?;
        let native = find_native(&inventory.vms, &req.vm).ok_or_else(|| {
            Error::not_found("vm", &req.vm)
                .with_field("vm")
                .with_detail(format!("host `{}` of provider `{provider}`", req.host))
        })?;
        if let Some(mark) = &native.mark {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM `{}` is already managed by HCP as `{}` in project `{}`",
                    native.name, mark.vm_id, mark.project
                ),
            )
            .with_field("vm"));
        }
        // An adoption of this VM accepted but not yet written to the hypervisor.
        for job in self.inner.store.unfinished_jobs().await? {
            if job.action == JobAction::Adopt
                && *job.provider == *provider
                && *job.host == *req.host
                && let Some(v) = self.inner.store.get_vm(&Scope::All, &job.vm_id).await?
                && v.binding.native_id.as_deref() == Some(native.native_id.as_str())
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "VM `{}` is already being adopted as `{}` (job `{}`)",
                        native.name, v.id, job.id
                    ),
                )
                .with_field("vm"));
            }
        }
        let name = req.name.clone().unwrap_or_else(|| native.name.clone());
        // The hypervisor's name may not be a valid HCP name: say which field to set.
        validate_dns_label("name", &name).map_err(|e| {
            Error::new(
                ErrorKind::InvalidSpec,
                format!(
                    "{}; the hypervisor's name is not a valid HCP name, so give one",
                    e.message()
                ),
            )
            .with_field("name")
        })?;
        if let Some(existing) = self
            .inner
            .store
            .find_vm_by_name(&ctx.project, &name)
            .await?
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "a VM named `{name}` already exists in project `{}` ({})",
                    ctx.project, existing.id
                ),
            )
            .with_field("name"));
        }
        let r = native.resources;
        if let Some(q) = self.quota(&ctx.project) {
            let own = crate::store::Usage::of_resources(r);
            own.check(&ctx.project, &q, &own)?;
        }
        let vm = Vm {
            id: VmId::generate(),
            project: ctx.project.clone(),
            spec: std::sync::Arc::new(VmSpec {
                name,
                vcpus: Some(r.vcpus),
                memory_mib: Some(r.memory_mib),
                disk_gib: (r.disk_gib > 0).then_some(r.disk_gib),
                zone: Some(zone.clone()),
                tags: req.tags.clone().unwrap_or_else(|| native.tags.clone()),
                ..Default::default()
            }),
            resources: r,
            zone: zone.into(),
            desired: DesiredState::Pending,
            desired_power: if native.power == PowerState::Stopped {
                PowerState::Stopped
            } else {
                PowerState::Running
            },
            power: native.power,
            present: true,
            binding: ProviderBinding {
                provider: provider.as_str().into(),
                host: req.host.as_str().into(),
                native_id: Some(native.native_id.clone()),
                member_host: native.host.clone(),
            },
            last_error: None,
            created_at: now,
            updated_at: now,
            generation: 0,
        };
        Ok((vm, provider, req.host.clone()))
    }
}

/// Finds a VM by native id, else by name (the first of that name).
fn find_native<'a>(vms: &'a [NativeVm], wanted: &str) -> Option<&'a NativeVm> {
    vms.iter()
        .find(|v| v.native_id == wanted)
        .or_else(|| vms.iter().find(|v| v.name == wanted))
}
