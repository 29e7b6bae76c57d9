//! Migration (operators only): moving a VM to another host of its provider and zone. The
//! target is chosen and checked here, before any job exists; the worker then calls the
//! provider's migration and rebinds the VM.
//!
//! # Behavior
//! - A named target must be another host of the VM's provider in the VM's zone; `None` means
//!   "any other host of the zone": the reachable one with the VM's image, the capability and
//!   room for the VM, preferring what the VM's server group prefers, then the most free memory
//!   (as placement does for a create).
//! - A running VM moves live where its host and the target can move running VMs. Otherwise,
//!   and for a stopped VM, only `allow_cold` allows a cold move, where both hosts declare
//!   `cold_migration`: the job stops a running VM (gracefully, hard after the stop timeout),
//!   moves it and starts it again on the target. Tenants see only that the job ran and that
//!   the VM was unavailable meanwhile.
//! - A VM in a server group with a hard policy never moves where the policy breaks: not onto a
//!   host where another member of an anti-affinity group runs (or is moving to), and not away
//!   from the other members of an affinity group. A soft policy only ranks the candidates.
//! - The VM's size is reserved on the target like a create's; the job settles it when it ends.

use serde::{Deserialize, Serialize};

use super::inventory::{GroupPlacement, HostState, read_inventory};
use super::{Action, Engine, RequestContext, Submitted};
use crate::store::Scope;
use crate::{Capability, Error, ErrorKind, Operation, PowerState, Principal, Result, Vm, VmId};

/// An operator's request to move a VM to another host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateRequest {
    /// The host to move to; `None` lets the engine pick another host of the VM's zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    /// Accepts a cold move where no live one is possible (a stopped VM, or a host that cannot
    /// move running VMs): the VM is stopped, moved and started again, so it is unavailable
    /// meanwhile. Both hosts must declare `cold_migration`.
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
    /// Moves a VM to another host of its provider and zone, live, or cold with `allow_cold`;
    /// an operator's request (the VM may belong to any project, and the job is recorded in the
    /// VM's project).
    ///
    /// # Behavior
    /// The target and the kind of move are chosen and checked before the job exists (see the
    /// module docs) and the VM's size is reserved on the target. When the job succeeds, the VM
    /// is bound to the new host, the capacity moves from the old host to the new one, and a
    /// `vm_migrated` audit event records both hosts (operators' view; tenants see only the job,
    /// whose action says whether the move was cold). `idempotency_key` replays an earlier
    /// identical request, as for every submission.
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`] naming `vm_id` for an unknown or deleted VM;
    /// - [`ErrorKind::Conflict`] with code [`super::CODE_VM_STATE_CONFLICT`] for a stopped VM
    ///   without `allow_cold` (a live migration needs a running VM), or another job's
    ///   idempotency key;
    /// - [`ErrorKind::Conflict`] with code [`crate::CODE_SERVER_GROUP_POLICY`] naming
    ///   `target_host` when the VM's hard server group rules the move out;
    /// - the errors of the target's choice: `FeatureNotSupported` (no live migration on the
    ///   VM's host, saying whether `allow_cold` would help; no cold migration where a cold move
    ///   was allowed and needed), `InvalidSpec` naming `target_host`, `ProviderUnavailable`,
    ///   `QuotaExceeded` with code [`crate::CODE_CAPACITY_EXHAUSTED`].
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

    /// Chooses and checks the host `vm` moves to, and whether the move is cold.
    ///
    /// # Errors
    /// - [`ErrorKind::FeatureNotSupported`] when the VM's host cannot move it the way it must
    ///   move (live for a running VM without `allow_cold`; cold otherwise), or the named target
    ///   cannot receive it that way;
    /// - [`ErrorKind::Conflict`] with code [`crate::CODE_SERVER_GROUP_POLICY`] when `group`'s
    ///   hard policy rules out the named target, or every candidate;
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
        group: Option<&GroupPlacement>,
        op: Operation,
    ) -> Result<MigrationChoice> {
        let provider = vm.binding.provider.as_ref();
        let source = vm.binding.host.as_ref();
        let cold = self.move_kind(vm, allow_cold, op)?;
        let (need, can_receive) = if cold {
            (
                Capability::ColdMigration,
                "the target host cannot receive stopped VMs",
            )
        } else {
            (
                Capability::LiveMigration,
                "the target host cannot receive running VMs",
            )
        };
        if let Some(h) = named {
            super::validate_reference("target_host", h)?;
        }
        let inv = read_inventory(&self.inner);
        let source_state = inv.host(provider, source);
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
        let zone = source_state.map_or(&*vm.zone, |h| h.info.zone.as_str());
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
        let choice = |target: String| MigrationChoice { target, cold };
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
            let Some(h) = inv.host(provider, name) else {
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
            if !h.caps.has(need) {
                return Err(Error::unsupported(
                    provider,
                    op,
                    need.as_str(),
                    &format!("{can_receive}; name another host"),
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
            if let Some(g) = group {
                g.group
                    .admits(&g.members, (provider, name))
                    .map_err(|_| move_refusal(vm, g, &format!("host `{echo}`")))?;
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
            return Ok(choice(name.to_string()));
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
            .filter(|(_, s)| s.caps.has(need) && has_image(s) && s.available)
            .collect();
        if candidates.is_empty() {
            return Err(Error::invalid(
                "target_host",
                format!(
                    "no other host of zone `{zone}` is reachable, can receive {} VMs and offers image `{}`",
                    if cold { "stopped" } else { "running" },
                    vm.spec.image
                ),
            ));
        }
        let admitted: Vec<_> = match group {
            Some(g) => candidates
                .into_iter()
                .filter(|(name, _)| g.group.admits(&g.members, (provider, name)).is_ok())
                .collect(),
            None => candidates,
        };
        if admitted.is_empty()
            && let Some(g) = group
        {
            return Err(move_refusal(
                vm,
                g,
                &format!("any other host of zone `{zone}`"),
            ));
        }
        let rank = |name: &String| {
            group.map_or(0, |g| {
                g.preference(&(provider.to_string(), name.to_string()))
            })
        };
        admitted
            .into_iter()
            .filter(|(_, s)| s.capacity.fits(&vm.resources))
            .max_by(|(na, a), (nb, b)| {
                rank(na)
                    .cmp(&rank(nb))
                    .then(a.capacity.free().1.cmp(&b.capacity.free().1))
                    .then(nb.cmp(na))
            })
            .map(|(name, _)| choice(name.clone()))
            .ok_or_else(|| no_room(&format!("no other host of zone `{zone}` has")))
    }

    /// Decides how `vm` moves: live (`false`) or cold (`true`).
    fn move_kind(&self, vm: &Vm, allow_cold: bool, op: Operation) -> Result<bool> {
        let provider = vm.binding.provider.as_ref();
        let source = vm.binding.host.as_ref();
        let caps = self.host_capabilities(provider, source);
        let running = vm.desired_power == PowerState::Running;
        if running && caps.live_migration {
            return Ok(false);
        }
        if allow_cold {
            if caps.cold_migration {
                return Ok(true);
            }
            let why = if running {
                "this VM's host can move neither running VMs (live) nor stopped ones (cold)"
            } else {
                "this VM's host cannot move stopped VMs to another host"
            };
            return Err(Error::unsupported(
                provider,
                op,
                Capability::ColdMigration.as_str(),
                why,
            ));
        }
        // A stopped VM without `allow_cold` was refused in the state check.
        let hint = if caps.cold_migration {
            "set allow_cold to move it cold: HCP stops it, moves it and starts it again"
        } else {
            "cold migration is not available on this host either, so `allow_cold` would not help"
        };
        Err(Error::unsupported(
            provider,
            op,
            Capability::LiveMigration.as_str(),
            &format!("this VM's host cannot migrate running VMs; {hint}"),
        ))
    }
}

/// What [`Engine::migration_target`] chose.
pub(crate) struct MigrationChoice {
    /// The host the VM moves to.
    pub(crate) target: String,
    /// True for a cold move.
    pub(crate) cold: bool,
}

/// The refusal of a move that `g`'s hard policy rules out, naming where (`to`).
fn move_refusal(vm: &Vm, g: &GroupPlacement, to: &str) -> Error {
    let why = match g.group.policy {
        crate::GroupPolicy::AntiAffinity => "another member of the group runs or is moving there",
        crate::GroupPolicy::Affinity => "the group's other members run on the VM's current host",
    };
    Error::new(
        ErrorKind::Conflict,
        format!(
            "VM `{}` cannot move to {to}: server group `{}` ({}) rules it out, as {why}",
            vm.spec.name,
            g.group.name,
            g.group.describe()
        ),
    )
    .with_code(crate::CODE_SERVER_GROUP_POLICY)
    .with_field("target_host")
    .with_context("server_group", g.group.id.as_str())
    .with_context("policy", g.group.describe())
}
