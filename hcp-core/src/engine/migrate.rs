//! Migration (operators only): moving a running VM to another host of its provider and zone.
//! The target is chosen and checked here, before any job exists; the worker then calls the
//! provider's live migration and rebinds the VM.
//!
//! # Behavior
//! - A named target must be another host of the VM's provider in the VM's zone; `None` means
//!   "any other host of the zone": the reachable one with the VM's image, the capability and
//!   room for the VM, preferring the most free memory (as placement does for a create).
//! - The VM's size is reserved on the target like a create's; the job settles it when it ends.
//! - Only live moves exist: no provider implements a cold move, so `allow_cold` does not turn a
//!   refused live migration into something else, it only changes the refusal's words.

use serde::{Deserialize, Serialize};

use super::inventory::{HostState, read_inventory};
use super::{Action, Engine, RequestContext, Submitted};
use crate::store::Scope;
use crate::{Capability, Error, ErrorKind, Operation, Principal, Result, Vm, VmId};

/// An operator's request to move a VM to another host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateRequest {
    /// The host to move to; `None` lets the engine pick another host of the VM's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    /// Accepts a cold move (the VM is unavailable while it moves) when the provider cannot move
    /// it live. No provider offers cold moves today, so such a request is refused with
    /// `FEATURE_NOT_SUPPORTED`.
    #[serde(default)]
    pub allow_cold: bool,
}

impl MigrateRequest {
    /// Creates a request for "any other host of the VM's zone", live only.
    pub fn new() -> Self {
        MigrateRequest::default()
    }

    /// Names the target host.
    pub fn with_target_host(mut self, host: Option<impl Into<String>>) -> Self {
        self.target_host = host.map(Into::into);
        self
    }

    /// Accepts (or not) a cold move where no live one is possible.
    pub fn with_allow_cold(mut self, allow_cold: bool) -> Self {
        self.allow_cold = allow_cold;
        self
    }
}

impl Engine {
    /// Moves a running VM to another host of its provider and zone, live; an operator's request
    /// (the VM may belong to any project, and the job is recorded in the VM's project).
    ///
    /// # Behavior
    /// The target is chosen and checked before the job exists (see the module docs) and the
    /// VM's size is reserved on it. When the job succeeds, the VM is bound to the new host, the
    /// capacity moves from the old host to the new one, and a `vm_migrated` audit event records
    /// both hosts (operators' view; tenants see only the job). `idempotency_key` replays an
    /// earlier identical request, as for every submission.
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`] naming `vm_id` for an unknown or deleted VM;
    /// - [`ErrorKind::Conflict`] with code [`super::CODE_VM_STATE_CONFLICT`] for a VM that is
    ///   not running (a live migration needs a running VM), or another job's idempotency key;
    /// - the errors of the target's choice: `FeatureNotSupported` (no live migration on the
    ///   VM's host; with `allow_cold`, stating that cold migration is not available either),
    ///   `InvalidSpec` naming `target_host`, `ProviderUnavailable`, `QuotaExceeded` with code
    ///   [`crate::CODE_CAPACITY_EXHAUSTED`].
    pub async fn migrate_vm(
        &self,
        principal: &Principal,
        vm_id: &VmId,
        request: &MigrateRequest,
        idempotency_key: Option<String>,
    ) -> Result<Submitted> {
        let vm = self
            .inner
            .live_vm(&Scope::All, vm_id)
            .await
            .map_err(|e| e.with_operation(Operation::MigrateVm))?;
        let ctx = RequestContext::new(vm.project, principal.clone())
            .with_idempotency_key(idempotency_key);
        self.submit(
            &ctx,
            Action::Migrate {
                vm_id: vm_id.clone(),
                target_host: request.target_host.clone(),
                allow_cold: request.allow_cold,
            },
        )
        .await
    }

    /// Chooses and checks the host `vm` moves to.
    ///
    /// # Errors
    /// - [`ErrorKind::FeatureNotSupported`] when the VM's host cannot migrate running VMs (with
    ///   `allow_cold`, stating that cold migration is not available on its provider), or the
    ///   named target cannot receive them;
    /// - [`ErrorKind::InvalidSpec`] naming `target_host` for a malformed name, the VM's own host,
    ///   a host of another provider or zone, a host without the VM's image, or a zone with no
    ///   other host;
    /// - [`ErrorKind::ProviderUnavailable`] (temporary) when the target is unreachable;
    /// - [`ErrorKind::QuotaExceeded`] with code [`crate::CODE_CAPACITY_EXHAUSTED`] when no
    ///   candidate has room for the VM.
    pub(crate) fn migration_target(
        &self,
        vm: &Vm,
        named: Option<&str>,
        allow_cold: bool,
        op: Operation,
    ) -> Result<String> {
        let provider = vm.binding.provider.as_str();
        let source = vm.binding.host.as_str();
        if !self.host_capabilities(provider, source).live_migration {
            if allow_cold {
                return Err(Error::new(
                    ErrorKind::FeatureNotSupported,
                    "cold migration is not available on this provider: HCP moves VMs only live, \
                     and this VM's host cannot migrate running VMs",
                )
                .with_detail(format!("provider `{provider}`, host `{source}`"))
                .with_operation(op)
                .with_context("provider", provider)
                .with_context("capability", "cold_migration"));
            }
            self.require(vm, op, Capability::LiveMigration)
                .map_err(|e| {
                    e.with_detail(
                        "no provider offers cold migration either, so `allow_cold` would not help",
                    )
                })?;
        }
        if let Some(h) = named {
            super::validate_reference("target_host", h)?;
        }
        let inv = read_inventory(&self.inner);
        let source_state = inv.hosts.get(&(provider.to_string(), source.to_string()));
        // Inside a cluster target the hypervisor places and moves VMs itself; HCP moves VMs
        // only between hosts it places on.
        if source_state.is_some_and(|h| h.info.is_cluster()) {
            return Err(Error::new(
                ErrorKind::FeatureNotSupported,
                format!(
                    "VM `{}` runs in a cluster whose hypervisor places its VMs; HCP does not move VMs within or out of a cluster",
                    vm.spec.name
                ),
            )
            .with_detail(format!("provider `{provider}`, cluster `{source}`"))
            .with_operation(op)
            .with_context("provider", provider));
        }
        let zone = source_state.map_or(vm.zone.as_str(), |h| h.info.zone.as_str());
        let has_image = |h: &HostState| h.serves_image(&vm.spec.image);
        let no_room = |where_: &str| {
            Error::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "{where_} {} vCPUs and {} MiB of memory free for VM `{}`",
                    vm.resources.vcpus, vm.resources.memory_mib, vm.spec.name
                ),
            )
            .with_field("target_host")
            .with_context("capacity", "exhausted")
            .with_code(crate::CODE_CAPACITY_EXHAUSTED)
        };
        if let Some(name) = named {
            let echo = crate::error::echo(name);
            if name == source {
                return Err(Error::invalid(
                    "target_host",
                    format!(
                        "VM `{}` already runs on host `{echo}`; name another host of zone `{zone}`, or none to let HCP pick one",
                        vm.spec.name
                    ),
                ));
            }
            let Some(h) = inv.hosts.get(&(provider.to_string(), name.to_string())) else {
                return Err(Error::invalid(
                    "target_host",
                    format!(
                        "host `{echo}` is not a host of provider `{provider}`; a VM moves only between hosts of its provider and zone"
                    ),
                ));
            };
            if h.info.is_cluster() {
                return Err(Error::invalid(
                    "target_host",
                    format!(
                        "`{echo}` is a cluster, not a host; a VM moves only to a host HCP places on"
                    ),
                ));
            }
            if h.info.zone != zone {
                return Err(Error::invalid(
                    "target_host",
                    format!(
                        "host `{echo}` is in zone `{}`, VM `{}` in zone `{zone}`; a VM moves only within its zone",
                        h.info.zone, vm.spec.name
                    ),
                ));
            }
            if !h.caps.live_migration {
                return Err(Error::unsupported(
                    provider,
                    op,
                    Capability::LiveMigration.as_str(),
                    "the target host cannot receive running VMs; name another host",
                )
                .with_field("target_host"));
            }
            if !has_image(h) {
                return Err(Error::invalid(
                    "target_host",
                    format!(
                        "host `{echo}` does not offer image `{}`, which VM `{}` runs",
                        vm.spec.image, vm.spec.name
                    ),
                ));
            }
            if !h.available {
                return Err(Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!("host `{echo}` is not reachable right now"),
                )
                .with_field("target_host")
                .temporary());
            }
            if !h.capacity.fits(&vm.resources) {
                return Err(no_room(&format!("host `{echo}` does not have")));
            }
            return Ok(name.to_string());
        }
        let others: Vec<(&String, &HostState)> = inv
            .hosts
            .iter()
            .filter(|((p, h), s)| {
                p == provider && h != source && s.info.zone == zone && !s.info.is_cluster()
            })
            .map(|((_, h), s)| (h, s))
            .collect();
        if others.is_empty() {
            return Err(Error::invalid(
                "target_host",
                format!(
                    "zone `{zone}` has no other host of provider `{provider}` to move VM `{}` to",
                    vm.spec.name
                ),
            ));
        }
        let candidates: Vec<_> = others
            .into_iter()
            .filter(|(_, s)| s.caps.live_migration && has_image(s) && s.available)
            .collect();
        if candidates.is_empty() {
            return Err(Error::invalid(
                "target_host",
                format!(
                    "no other host of zone `{zone}` is reachable, can receive running VMs and offers image `{}`",
                    vm.spec.image
                ),
            ));
        }
        candidates
            .into_iter()
            .filter(|(_, s)| s.capacity.fits(&vm.resources))
            .max_by(|(na, a), (nb, b)| {
                a.capacity
                    .free()
                    .1
                    .cmp(&b.capacity.free().1)
                    .then(nb.cmp(na))
            })
            .map(|(name, _)| name.clone())
            .ok_or_else(|| no_room(&format!("no other host of zone `{zone}` has")))
    }
}
