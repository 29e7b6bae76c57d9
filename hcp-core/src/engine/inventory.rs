//! Inventory: hosts and their capacity, placement, capability negotiation, and the reconciler
//! that refreshes every host in parallel and acts on drift.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::join_all;
use serde::{Deserialize, Serialize};

use super::capacity::Capacity;
use super::{Action, Engine, Inner, RequestContext, lock};
use crate::reconcile::{ObservedHost, classify};
use crate::store::{PageRequest, Scope};
use crate::{
    Capabilities, Capability, DesiredState, Drift, DriftPolicy, Error, ErrorKind, EventKind,
    ExceededLimit, Host, HostInfo, HostInventory, HostInventoryReply, JobId, JobState, MemberHost,
    MissingRepair, MovedRepair, NativeVm, Operation, PowerState, Principal, ProjectId,
    ProviderBinding, ProviderInfo, RepairAction, Requirements, Resources, Result, UnmanagedRepair,
    Vm, VmId, VmSpec,
};

/// How long one host's inventory call may take during a refresh.
const HOST_INVENTORY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `(provider, target)` key of the host table, looked up without owning its text: it hashes
/// and compares as the table's owned pairs do.
#[derive(Hash)]
struct HostName<'a>(&'a str, &'a str);

impl indexmap::Equivalent<(String, String)> for HostName<'_> {
    fn equivalent(&self, key: &(String, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// The host table: every target of every provider by `(provider, target)`, in that order (a
/// refresh builds it sorted), looked up by hash.
pub(crate) type HostTable =
    indexmap::IndexMap<(String, String), HostState, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub(crate) struct InventoryState {
    pub(crate) hosts: HostTable,
}

impl InventoryState {
    /// Returns `provider`'s target `host`, looked up without an owned key.
    pub(crate) fn host(&self, provider: &str, host: &str) -> Option<&HostState> {
        self.hosts.get(&HostName(provider, host))
    }

    /// Returns `provider`'s target `host` to change, looked up without an owned key.
    pub(crate) fn host_mut(&mut self, provider: &str, host: &str) -> Option<&mut HostState> {
        self.hosts.get_mut(&HostName(provider, host))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HostState {
    pub(crate) info: HostInfo,
    pub(crate) caps: Capabilities,
    pub(crate) available: bool,
    pub(crate) reason: Option<String>,
    pub(crate) capacity: Capacity,
    pub(crate) inventory: Option<Arc<HostInventoryReply>>,
    pub(crate) observed_at: Option<DateTime<Utc>>,
    /// What HCP's VMs may hold here: the total less what the VMs without HCP's mark used when
    /// last observed; `None` before the first observation.
    pub(crate) room: Option<crate::store::HostRoom>,
    /// The provider, target and zone as shared text, which a placement here hands to the VM's
    /// record and its job without copying them.
    pub(crate) names: PlacedNames,
}

/// A host's provider, target and zone names as shared text (see [`HostState::names`]).
#[derive(Debug, Clone)]
pub(crate) struct PlacedNames {
    pub(crate) provider: Arc<str>,
    pub(crate) host: Arc<str>,
    pub(crate) zone: Arc<str>,
}

impl PlacedNames {
    /// The names of the host table's entry `key`, in `zone`.
    fn of(key: &(String, String), zone: &str) -> Self {
        PlacedNames {
            provider: key.0.as_str().into(),
            host: key.1.as_str().into(),
            zone: zone.into(),
        }
    }
}

/// Returns the room HCP's VMs have on a host observed with `reply` (see [`HostState::room`]).
fn room_of(info: &HostInfo, reply: &HostInventoryReply) -> crate::store::HostRoom {
    let (vcpus, memory) =
        reply
            .vms
            .iter()
            .filter(|v| v.mark.is_none())
            .fold((0u128, 0u128), |(c, m), v| {
                (
                    c.saturating_add(u128::from(v.resources.vcpus)),
                    m.saturating_add(u128::from(v.resources.memory_mib)),
                )
            });
    crate::store::HostRoom {
        vcpus: u128::from(info.vcpus_total).saturating_sub(vcpus),
        memory_mib: u128::from(info.memory_mib_total).saturating_sub(memory),
    }
}

/// Returns the room of `host` for the store's check in a submission that grows a VM bound to it
/// ([`crate::store::HostRoom`]); `None` for a host never observed (the store then checks
/// nothing).
pub(crate) fn host_room(
    inner: &Inner,
    provider: &str,
    host: &str,
) -> Option<crate::store::HostRoom> {
    read_inventory(inner)
        .hosts
        .get(&HostName(provider, host))?
        .room
}

impl HostState {
    fn vms(&self) -> &[NativeVm] {
        self.inventory.as_ref().map_or(&[], |i| i.vms.as_slice())
    }

    /// A cluster's member hosts as last observed; empty for a host.
    fn members(&self) -> &[MemberHost] {
        self.inventory
            .as_ref()
            .map_or(&[], |i| i.members.as_slice())
    }

    /// Returns the largest VM size one host here offers at all: a host's totals; a cluster's
    /// largest member's (a VM runs on one host, so a cluster's sum is no bound for one VM). A
    /// cluster whose members are not known yet offers its totals.
    pub(crate) fn largest_host(&self) -> (u32, u64) {
        let members = self.members();
        if members.is_empty() {
            return (self.capacity.vcpus_total, self.capacity.memory_total);
        }
        (
            members.iter().map(|m| m.vcpus_total).max().unwrap_or(0),
            members
                .iter()
                .map(|m| m.memory_mib_total)
                .max()
                .unwrap_or(0),
        )
    }

    /// Returns whether the target serves `image`: the images its [`HostInfo`] reports, else
    /// the images of its last inventory when it listed any. A target that reports neither (or
    /// has not answered yet) is not ruled out.
    pub(crate) fn serves_image(&self, image: &str) -> bool {
        self.info.serves_image(image).unwrap_or_else(|| {
            self.inventory
                .as_ref()
                .is_none_or(|i| i.images.is_empty() || i.images.iter().any(|n| n == image))
        })
    }

    /// Returns the catalog images the target reports it serves, or `None` when it does not say.
    fn offered_images(&self) -> Option<Vec<&str>> {
        match &self.info.images {
            Some(images) => Some(images.iter().map(|i| i.name.as_str()).collect()),
            None => self
                .inventory
                .as_ref()
                .filter(|i| !i.images.is_empty())
                .map(|i| i.images.iter().map(String::as_str).collect()),
        }
    }

    /// Returns true when `r` fits in the target's free capacity and, on a cluster whose members
    /// are known, in what one available member has free (the rule: a VM must fit one host).
    pub(crate) fn has_room(&self, r: &Resources) -> bool {
        self.capacity.fits(r)
            && (!self.info.is_cluster()
                || self.members().is_empty()
                || self.members().iter().any(|m| {
                    let (vcpus, memory) = m.free();
                    m.available && r.vcpus <= vcpus && r.memory_mib <= memory
                }))
    }
}

/// Capacity held on a host for a create that has been accepted but not yet observed.
pub(crate) struct Reservation<'a> {
    inner: &'a Inner,
    provider: Arc<str>,
    host: Arc<str>,
    resources: Resources,
    kept: bool,
}

impl<'a> Reservation<'a> {
    /// Holds `resources` on the host, checking again under the write lock that they fit (another
    /// create may have taken the room since placement read the table).
    ///
    /// # Errors
    /// [`ErrorKind::QuotaExceeded`] when they no longer fit or a counter would overflow.
    pub(crate) fn try_new(
        inner: &'a Inner,
        provider: &Arc<str>,
        host: &Arc<str>,
        resources: Resources,
    ) -> Result<Self> {
        {
            let mut inv = write_inventory(inner);
            if let Some(h) = inv.host_mut(provider, host) {
                h.capacity.reserve(&resources)?;
            }
        }
        Ok(Reservation {
            inner,
            provider: provider.clone(),
            host: host.clone(),
            resources,
            kept: false,
        })
    }

    /// Keeps the capacity reserved (the job releases it when it ends).
    pub(crate) fn keep(&mut self) {
        self.kept = true;
    }

    /// Keeps the capacity reserved for `job`, which another process runs: the reservation
    /// sweeper releases it when the job ends.
    pub(crate) fn hand_over(mut self, job_id: &JobId, create: bool) {
        self.kept = true;
        let held = HeldForWorker {
            create,
            provider: self.provider.to_string(),
            host: self.host.to_string(),
            resources: self.resources,
        };
        lock(&self.inner.held_for_workers).insert(job_id.clone(), held);
    }
}

/// Capacity an engine without workers holds for a job another process runs.
pub(crate) struct HeldForWorker {
    create: bool,
    provider: String,
    host: String,
    resources: Resources,
}

/// How often an engine without workers looks whether the jobs it holds capacity for ended.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Releases, every [`SWEEP_PERIOD`], the capacity held for jobs that ended (or are gone); a
/// succeeded create's VM counts as used until the next refresh observes it.
pub(crate) fn spawn_reservation_sweeper(inner: Weak<Inner>) {
    let Some(shutdown) = inner.upgrade().map(|i| i.shutdown.clone()) else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_PERIOD) => {}
            }
            let Some(inner) = inner.upgrade() else { return };
            let ids: Vec<JobId> = lock(&inner.held_for_workers).keys().cloned().collect();
            for id in ids {
                let ended = match inner.store.get_job(&Scope::All, &id).await {
                    Ok(Some(j)) if j.state.is_terminal() => Some(j.state == JobState::Succeeded),
                    Ok(Some(_)) | Err(_) => None,
                    Ok(None) => Some(false),
                };
                let Some(succeeded) = ended else { continue };
                let held = lock(&inner.held_for_workers).remove(&id);
                if let Some(h) = held {
                    settle_capacity(
                        &inner,
                        &h.provider,
                        &h.host,
                        h.resources,
                        Some(h.create && succeeded),
                        false,
                    );
                }
            }
        }
    });
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept
            && let Some(h) = write_inventory(self.inner).host_mut(&self.provider, &self.host)
        {
            h.capacity.release(&self.resources);
        }
    }
}

/// Reads the host table. A panic elsewhere cannot poison it for good: every writer checks
/// before it changes anything (see [`Capacity`]), so the table stays consistent and is used on.
pub(crate) fn read_inventory(inner: &Inner) -> RwLockReadGuard<'_, InventoryState> {
    inner
        .inventory
        .read()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Writes the host table (see [`read_inventory`] on poisoning).
pub(crate) fn write_inventory(inner: &Inner) -> RwLockWriteGuard<'_, InventoryState> {
    inner
        .inventory
        .write()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Moves capacity after a job: releases a create's reservation, and counts what now exists.
pub(crate) fn settle_capacity(
    inner: &Inner,
    provider: &str,
    host: &str,
    r: Resources,
    created: Option<bool>,
    deleted: bool,
) {
    let mut inv = write_inventory(inner);
    if let Some(h) = inv.host_mut(provider, host) {
        if let Some(ok) = created {
            h.capacity.release(&r);
            if ok {
                h.capacity.add_used(&r);
            }
        }
        if deleted {
            h.capacity.remove_used(&r);
        }
    }
}

/// Returns what a resize from `from` to `to` adds on its host (zero where it shrinks).
pub(crate) fn growth(from: Resources, to: Resources) -> Resources {
    Resources {
        vcpus: to.vcpus.saturating_sub(from.vcpus),
        memory_mib: to.memory_mib.saturating_sub(from.memory_mib),
        disk_gib: 0,
    }
}

/// Moves capacity after a resize: releases the growth it held and, when the provider applied
/// the change, counts the VM at its new size.
pub(crate) fn settle_resize(
    inner: &Inner,
    provider: &str,
    host: &str,
    from: Resources,
    to: Resources,
    applied: bool,
) {
    let mut inv = write_inventory(inner);
    if let Some(h) = inv.host_mut(provider, host) {
        let c = &mut h.capacity;
        c.release(&growth(from, to));
        if applied {
            c.vcpus_used = c
                .vcpus_used
                .saturating_sub(from.vcpus)
                .saturating_add(to.vcpus);
            c.memory_used = c
                .memory_used
                .saturating_sub(from.memory_mib)
                .saturating_add(to.memory_mib);
        }
    }
}

#[derive(Debug, PartialEq)]
pub(crate) struct Placement {
    /// Shared text: the VM's record and its job take copies.
    pub(crate) provider: Arc<str>,
    pub(crate) host: Arc<str>,
    pub(crate) zone: Arc<str>,
    /// The member host of a cluster target the VM must run on, so that its server group's
    /// policy holds per host inside the cluster; `None` lets the cluster pick.
    pub(crate) member_host: Option<String>,
    /// The target's room for HCP's VMs, which the store checks (see [`HostState::room`]).
    pub(crate) room: Option<crate::store::HostRoom>,
}

/// The server group a new VM joins, with the `(provider, target)` each member is bound to.
pub(crate) struct GroupPlacement {
    pub(crate) group: crate::ServerGroup,
    pub(crate) members: Vec<(String, String)>,
    /// `(provider, cluster, member host)` of each member known to run (or to be pinned) on one
    /// host of a cluster target.
    pub(crate) member_hosts: Vec<(String, String, String)>,
}

impl GroupPlacement {
    /// Chooses the member host of cluster target `key` for a new member of size `r`, so that
    /// the group's policy holds per host: `Err(())` when a hard policy leaves no member host
    /// with room, `Ok(None)` for a host target or a cluster whose members are not known yet.
    fn member_pin(
        &self,
        key: &(String, String),
        h: &HostState,
        r: &Resources,
    ) -> std::result::Result<Option<String>, ()> {
        if !h.info.is_cluster() || h.members().is_empty() {
            return Ok(None);
        }
        let on: Vec<&str> = self
            .member_hosts
            .iter()
            .filter(|(p, c, _)| *p == key.0 && *c == key.1)
            .map(|(_, _, m)| m.as_str())
            .collect();
        let candidates = h.members().iter().filter(|m| {
            let (vcpus, memory) = m.free();
            m.available && r.vcpus <= vcpus && r.memory_mib <= memory
        });
        let hard = self.group.is_hard();
        let count = |name: &str| on.iter().filter(|m| **m == name).count();
        let best = candidates
            .filter(|m| {
                !hard
                    || match self.group.policy {
                        crate::GroupPolicy::AntiAffinity => count(&m.name) == 0,
                        crate::GroupPolicy::Affinity => on.is_empty() || count(&m.name) == on.len(),
                    }
            })
            .max_by(|a, b| {
                let rank = |m: &MemberHost| {
                    let n = i64::try_from(count(&m.name)).unwrap_or(i64::MAX);
                    match self.group.policy {
                        crate::GroupPolicy::Affinity => n,
                        crate::GroupPolicy::AntiAffinity => -n,
                    }
                };
                rank(a)
                    .cmp(&rank(b))
                    .then(a.free().1.cmp(&b.free().1))
                    .then(b.name.cmp(&a.name))
            });
        match best {
            Some(m) => Ok(Some(m.name.clone())),
            None => Err(()),
        }
    }

    /// Counts the members on `target`.
    fn on(&self, target: &(String, String)) -> usize {
        self.members.iter().filter(|m| *m == target).count()
    }

    /// Ranks a target by the group's preference: higher is better (more members for affinity,
    /// fewer for anti-affinity).
    pub(crate) fn preference(&self, target: &(String, String)) -> i64 {
        let n = i64::try_from(self.on(target)).unwrap_or(i64::MAX);
        match self.group.policy {
            crate::GroupPolicy::Affinity => n,
            crate::GroupPolicy::AntiAffinity => -n,
        }
    }
}

/// A provider with its health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderStatus {
    /// Name, kind and version.
    pub info: ProviderInfo,
    /// True when at least one of its hosts answered the last inventory.
    pub healthy: bool,
    /// Its hosts.
    pub hosts_total: usize,
    /// Its hosts that answered.
    pub hosts_available: usize,
}

/// Capabilities of a provider and of each of its hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderCapabilities {
    /// The provider name.
    pub provider: String,
    /// The provider kind.
    pub kind: String,
    /// What the provider declares.
    pub declared: Capabilities,
    /// What each host offers after narrowing by provider, zone and host limits.
    pub hosts: BTreeMap<String, Capabilities>,
}

/// A VM as found on a host: HCP's or not (operator view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryVm {
    /// The provider.
    pub provider: String,
    /// The host it runs on.
    pub host: String,
    /// The cluster target it belongs to, when it is on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The hypervisor's id.
    pub native_id: String,
    /// The hypervisor's name.
    pub name: String,
    /// The power state.
    pub power: PowerState,
    /// HCP's id, when HCP manages it.
    pub vm_id: Option<VmId>,
    /// The owning project, when HCP manages it.
    pub project: Option<ProjectId>,
    /// True for a VM without HCP's mark that an operator can adopt (`POST
    /// /api/hcp/ops/v1/vms:adopt`): its host declares `adopt` and `engine.drift_repairs.unmanaged`
    /// is `offer_adoption`.
    #[serde(default)]
    pub adoptable: bool,
}

/// What one inventory refresh saw and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefreshReport {
    /// Hosts that answered.
    pub hosts_ok: usize,
    /// Hosts that did not answer, with the reason.
    pub hosts_failed: Vec<(String, String)>,
    /// VMs seen on all hosts.
    pub vms_seen: usize,
    /// VMs rebuilt from their marks.
    pub adopted: usize,
    /// Every drift found (new and old).
    pub drift: Vec<Drift>,
    /// Jobs submitted to repair drift.
    pub repairs: usize,
    /// Drift repaired in the store per `engine.drift_repairs` (moves followed, missing VMs
    /// marked `ERROR`).
    pub repaired: usize,
    /// How long the refresh took.
    pub elapsed_ms: u64,
}

impl Engine {
    /// Returns a host's effective capabilities (provider ∧ zone ∧ host); none for an unknown host.
    pub fn host_capabilities(&self, provider: &str, host: &str) -> Capabilities {
        let inv = read_inventory(&self.inner);
        inv.hosts
            .get(&HostName(provider, host))
            .map(|h| h.caps)
            .unwrap_or_default()
    }

    /// Returns what can be asked for in `zone` (any of its hosts), or anywhere when `None`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `zone` when it is unknown.
    pub fn capabilities(&self, zone: Option<&str>) -> Result<Capabilities> {
        if let Some(z) = zone
            && self.inner.catalog.zone(z).is_none()
        {
            return Err(Error::invalid(
                "zone",
                format!("unknown zone `{}`", crate::error::echo(z)),
            ));
        }
        let inv = read_inventory(&self.inner);
        Ok(inv
            .hosts
            .values()
            .filter(|h| zone.is_none_or(|z| h.info.zone == z))
            .fold(None, |acc: Option<Capabilities>, h| {
                Some(acc.map_or(h.caps, |a| a.union(h.caps)))
            })
            .unwrap_or_default())
    }

    /// Returns each provider's declared capabilities and each host's effective ones.
    pub fn provider_capabilities(&self) -> Vec<ProviderCapabilities> {
        let inv = read_inventory(&self.inner);
        self.inner
            .providers
            .iter()
            .map(|(name, entry)| ProviderCapabilities {
                provider: name.clone(),
                kind: entry.provider.info().kind,
                declared: entry.provider.capabilities(),
                hosts: inv
                    .hosts
                    .iter()
                    .filter(|((p, _), _)| p == name)
                    .map(|((_, h), s)| (h.clone(), s.caps))
                    .collect(),
            })
            .collect()
    }

    /// Returns every host with its capacity and health.
    pub fn hosts(&self) -> Vec<Host> {
        let inv = read_inventory(&self.inner);
        inv.hosts
            .iter()
            .map(|((provider, name), h)| {
                let (vcpus_used, memory_mib_used) = h.capacity.taken();
                Host {
                    name: name.clone(),
                    kind: h.info.kind,
                    members: h.members().to_vec(),
                    provider: provider.clone(),
                    zone: h.info.zone.clone(),
                    available: h.available,
                    unavailable_reason: h.reason.clone(),
                    vcpus_total: h.info.vcpus_total,
                    vcpus_used,
                    memory_mib_total: h.info.memory_mib_total,
                    memory_mib_used,
                    vm_count: h.capacity.vm_count,
                    capabilities: h.caps,
                    observed_at: h.observed_at,
                }
            })
            .collect()
    }

    /// Returns every provider with its health.
    pub fn providers(&self) -> Vec<ProviderStatus> {
        let inv = read_inventory(&self.inner);
        self.inner
            .providers
            .iter()
            .map(|(name, entry)| {
                let hosts: Vec<&HostState> = inv
                    .hosts
                    .iter()
                    .filter(|((p, _), _)| p == name)
                    .map(|(_, h)| h)
                    .collect();
                let available = hosts.iter().filter(|h| h.available).count();
                ProviderStatus {
                    info: entry.provider.info(),
                    healthy: available > 0,
                    hosts_total: hosts.len(),
                    hosts_available: available,
                }
            })
            .collect()
    }

    /// Returns every VM found on the hosts at the last refresh, HCP's and others (operator view).
    /// A VM of a cluster target names the member host it runs on and the cluster.
    pub fn inventory_vms(&self) -> Vec<InventoryVm> {
        let offer = self.inner.settings.drift_repairs.unmanaged == UnmanagedRepair::OfferAdoption;
        let inv = read_inventory(&self.inner);
        inv.hosts
            .iter()
            .flat_map(|((provider, host), h)| {
                let cluster = h.info.is_cluster().then(|| host.clone());
                let can_adopt = offer && h.caps.adopt;
                h.vms().iter().map(move |v| InventoryVm {
                    adoptable: can_adopt && v.mark.is_none(),
                    provider: provider.clone(),
                    host: v.host.clone().unwrap_or_else(|| host.clone()),
                    cluster: cluster.clone(),
                    native_id: v.native_id.clone(),
                    name: v.name.clone(),
                    power: v.power,
                    vm_id: v.mark.as_ref().map(|m| m.vm_id.clone()),
                    project: v.mark.as_ref().map(|m| m.project.clone()),
                })
            })
            .collect()
    }

    /// Chooses a placement target for a new VM: the zone's reachable targets (hosts and
    /// clusters) that offer the needed capabilities and have room, preferring the one with the
    /// most free memory. A cluster has room when its aggregate does and one member host alone
    /// does: the provider then picks the host inside it.
    ///
    /// With a server `group`, a hard policy keeps only the targets it admits (never a second
    /// member on one target for anti-affinity, only the members' target for affinity) and a
    /// soft one ranks the targets it prefers first.
    ///
    /// # Errors
    /// Besides the refusals of the spec and of capacity, [`ErrorKind::Conflict`] with code
    /// [`crate::CODE_SERVER_GROUP_POLICY`] when targets have room but none keeps the group's
    /// hard policy.
    pub(crate) fn place(
        &self,
        spec: &VmSpec,
        r: Resources,
        pinned: Option<&str>,
        op: Operation,
        group: Option<&GroupPlacement>,
    ) -> Result<Placement> {
        let mut flags = Vec::new();
        if spec.user_data.is_some() {
            flags.push(Capability::CloudInit);
        }
        if !spec.tags.is_empty() {
            flags.push(Capability::Tags);
        }
        let need = Requirements {
            flags,
            vcpus: Some(r.vcpus),
            memory_mib: Some(r.memory_mib),
            disk_gib: Some(r.disk_gib),
            networks: Some(u32::try_from(spec.networks.len()).unwrap_or(u32::MAX)),
        };
        let inv = read_inventory(&self.inner);
        if group.is_none()
            && let Some(placement) = best_target(&inv, spec, r, pinned, op, &need, &self.inner)
        {
            // Every debug build (every test that creates a VM) checks the one pass against
            // the filters it stands for.
            debug_assert_eq!(
                Some(&placement),
                self.place_by_filters(spec, r, pinned, op, None, &need, &inv)
                    .ok()
                    .as_ref(),
                "the one-pass placement chose what the filters choose"
            );
            return Ok(placement);
        }
        self.place_by_filters(spec, r, pinned, op, group, &need, &inv)
    }

    /// [`Engine::place`] filter by filter: each filter that leaves no target names its reason.
    #[allow(clippy::too_many_arguments)]
    fn place_by_filters(
        &self,
        spec: &VmSpec,
        r: Resources,
        pinned: Option<&str>,
        op: Operation,
        group: Option<&GroupPlacement>,
        need: &Requirements,
        inv: &InventoryState,
    ) -> Result<Placement> {
        let in_scope: Vec<(&(String, String), &HostState)> = inv
            .hosts
            .iter()
            .filter(|(key, h)| in_scope(key, h, spec, pinned))
            .collect();
        let where_ = Where {
            zone: spec.zone.as_deref(),
            pinned,
        };
        if in_scope.is_empty() {
            return Err(match pinned {
                Some(h) => Error::invalid(
                    "host",
                    format!(
                        "unknown host `{}`{}",
                        crate::error::echo(h),
                        spec.zone
                            .as_ref()
                            .map(|z| format!(" in zone `{}`", crate::error::echo(z)))
                            .unwrap_or_default()
                    ),
                ),
                None => Error::invalid("zone", format!("{where_} has no hosts")),
            });
        }
        if let Some(e) = limit_refusal(&in_scope, need, &where_) {
            return Err(e);
        }
        let mut first_refusal = None;
        let capable: Vec<_> = in_scope
            .iter()
            .filter(|((provider, _), h)| {
                match check_target(provider, h, spec, op, need, &self.inner.catalog) {
                    Ok(()) => true,
                    Err(e) => {
                        first_refusal.get_or_insert(e);
                        false
                    }
                }
            })
            .collect();
        if capable.is_empty() {
            let e =
                first_refusal.unwrap_or_else(|| Error::internal("no capable host and no refusal"));
            return Err(e.with_context("where", where_));
        }
        let capable = serving_targets(capable, |(_, h)| h, spec, &self.inner.catalog, &where_)?;
        let reachable: Vec<_> = capable.iter().filter(|(_, h)| h.available).collect();
        if reachable.is_empty() {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!("no host in {where_} is reachable right now"),
            )
            .temporary());
        }
        // A size larger than every host offers can never fit: a bad request, not a full zone. On
        // a cluster the bound is its largest member, not the sum: a VM runs on one host.
        let most_vcpus = reachable
            .iter()
            .map(|(_, h)| h.largest_host().0)
            .max()
            .unwrap_or(0);
        let most_memory = reachable
            .iter()
            .map(|(_, h)| h.largest_host().1)
            .max()
            .unwrap_or(0);
        if most_vcpus > 0 && r.vcpus > most_vcpus {
            return Err(Error::invalid(
                "vcpus",
                format!(
                    "is {}; no host in {where_} has more than {most_vcpus} vCPUs (allowed: {}-{most_vcpus})",
                    r.vcpus,
                    crate::MIN_VCPUS
                ),
            ));
        }
        if most_memory > 0 && r.memory_mib > most_memory {
            return Err(Error::invalid(
                "memory_mib",
                format!(
                    "is {} MiB; no host in {where_} has more than {most_memory} MiB (allowed: {}-{most_memory} MiB)",
                    r.memory_mib,
                    crate::MIN_MEMORY_MIB
                ),
            ));
        }
        let with_room: Vec<_> = reachable.iter().filter(|(_, h)| h.has_room(&r)).collect();
        // Inside a cluster whose member hosts are known, a group's policy holds per member
        // host (anti-affinity needs a member host without a member, not a cluster without
        // one); elsewhere per target.
        let per_member = |k: &(String, String), h: &HostState| {
            group.is_some_and(|g| {
                g.group.policy == crate::GroupPolicy::AntiAffinity
                    && matches!(g.member_pin(k, h, &r), Ok(Some(m))
                        if !g.member_hosts.iter().any(|(p, c, x)| *p == k.0 && *c == k.1 && *x == m))
            })
        };
        let admitted: Vec<_> = match group {
            Some(g) if g.group.is_hard() => with_room
                .iter()
                .copied()
                .filter(|(k, h)| {
                    if h.info.is_cluster() && !h.members().is_empty() {
                        let target_ok = g.group.policy == crate::GroupPolicy::AntiAffinity
                            || g.group.admits(&g.members, (&k.0, &k.1)).is_ok();
                        target_ok && g.member_pin(k, h, &r).is_ok()
                    } else {
                        g.group.admits(&g.members, (&k.0, &k.1)).is_ok()
                    }
                })
                .collect(),
            _ => with_room.clone(),
        };
        if let Some(g) = group
            && admitted.is_empty()
            && !with_room.is_empty()
        {
            let why = match g.group.policy {
                crate::GroupPolicy::AntiAffinity => format!(
                    "every host in {where_} with room already runs one of its {} member(s)",
                    g.members.len()
                ),
                crate::GroupPolicy::Affinity => format!(
                    "the host its members run on is not in {where_}, not reachable or has no room for {} vCPUs and {} MiB",
                    r.vcpus, r.memory_mib
                ),
            };
            return Err(g.group.policy_refusal(&why));
        }
        let best = admitted.into_iter().max_by(|(ka, a), (kb, b)| {
            // A cluster with a free member host ranks like a target without a member.
            let pref = |k: &(String, String), h: &HostState| {
                if per_member(k, h) {
                    0
                } else {
                    group.map_or(0, |g| g.preference(k))
                }
            };
            pref(ka, a)
                .cmp(&pref(kb, b))
                .then(a.capacity.free().1.cmp(&b.capacity.free().1))
                .then(b.vms().len().cmp(&a.vms().len()))
                .then(kb.1.cmp(&ka.1))
        });
        match best {
            Some((key, h)) => Ok(Placement {
                provider: h.names.provider.clone(),
                host: h.names.host.clone(),
                zone: h.names.zone.clone(),
                member_host: group.and_then(|g| g.member_pin(key, h, &r).ok().flatten()),
                room: h.room,
            }),
            None => Err(Error::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "no host in {where_} has {} vCPUs and {} MiB of memory free",
                    r.vcpus, r.memory_mib
                ),
            )
            .with_context("capacity", "exhausted")
            .with_code(crate::CODE_CAPACITY_EXHAUSTED)),
        }
    }

    /// Runs [`Engine::refresh_inventory`] on behalf of `principal` and records who asked in the
    /// audit stream.
    ///
    /// # Errors
    /// As [`Engine::refresh_inventory`].
    pub async fn reconcile_now(&self, principal: &Principal) -> Result<RefreshReport> {
        let report = self.refresh_inventory().await?;
        self.inner
            .emit(
                None,
                None,
                Some(principal),
                EventKind::ReconcileRequested {
                    hosts_ok: report.hosts_ok,
                    hosts_failed: report.hosts_failed.len(),
                    drift: report.drift.len(),
                },
            )
            .await;
        Ok(report)
    }

    /// Refreshes every host of every provider in parallel, rebuilds VMs found with HCP's mark
    /// that the store does not know, records observed power states, and reports drift (acting on
    /// it per the drift policy).
    ///
    /// # Errors
    /// Store errors only; unreachable hosts are reported in [`RefreshReport::hosts_failed`].
    pub async fn refresh_inventory(&self) -> Result<RefreshReport> {
        self.refresh(true).await
    }

    /// Reads every host; with `reconcile`, also acts on what it found (rebuilds, observations,
    /// drift). Without, only the host table (capacity, availability, what each host offers) is
    /// brought up to date: what a follower of several replicas needs for placement.
    pub(crate) async fn refresh(&self, reconcile: bool) -> Result<RefreshReport> {
        let inner = &self.inner;
        let _one_at_a_time = inner.refresh_lock.lock().await;
        let started = Instant::now();
        let now = inner.now();
        // Taken before the hosts are read: a leader deposed while it observed writes none of
        // what it saw (the store refuses the fenced writes below).
        let fence = if reconcile {
            inner.leadership.fence()
        } else {
            None
        };
        // 1. Every provider lists its hosts, then every host is read, all in parallel.
        let listed = join_all(inner.providers.iter().map(|(name, entry)| async move {
            let hosts = inner
                .call(name, Operation::ListHosts, "*", entry.provider.list_hosts())
                .await;
            (name.clone(), hosts)
        }))
        .await;
        let mut targets = Vec::new();
        let mut failed = Vec::new();
        for (provider, hosts) in listed {
            match hosts {
                Ok(hosts) => targets.extend(hosts.into_iter().map(|h| (provider.clone(), h))),
                Err(e) => {
                    // Keep the hosts we knew, marked unreachable.
                    let inv = read_inventory(inner);
                    for ((p, _), h) in inv.hosts.iter().filter(|((p, _), _)| *p == provider) {
                        targets.push((p.clone(), h.info.clone()));
                    }
                    failed.push((provider.clone(), e.to_string()));
                }
            }
        }
        let results: Vec<(String, HostInfo, Result<Arc<HostInventoryReply>>)> =
            join_all(targets.into_iter().map(|(provider, info)| async move {
                let entry = inner.provider(&provider);
                let reply = match entry {
                    Ok(entry) => {
                        let call = entry
                            .provider
                            .host_inventory(HostInventory::new(info.name.clone()));
                        let call = async {
                            tokio::time::timeout(HOST_INVENTORY_TIMEOUT, call)
                                .await
                                .unwrap_or_else(|_| {
                                    Err(Error::new(ErrorKind::Timeout, "host inventory timed out")
                                        .temporary())
                                })
                        };
                        inner
                            .call(&provider, Operation::HostInventory, &info.name, call)
                            .await
                            .map(Arc::new)
                    }
                    Err(e) => Err(e),
                };
                (provider, info, reply)
            }))
            .await;

        // 2. Update the host table, keeping reservations of creates in flight.
        let mut report = RefreshReport::default();
        {
            let mut inv = write_inventory(inner);
            let mut fresh = BTreeMap::new();
            for (provider, info, reply) in &results {
                let key = (provider.clone(), info.name.clone());
                let old = inv.hosts.swap_remove(&key);
                let entry = inner.provider(provider)?;
                let host_info = reply
                    .as_ref()
                    .map(|r| r.host.clone())
                    .unwrap_or_else(|_| info.clone());
                let caps = entry
                    .provider
                    .capabilities()
                    .narrow(entry.mask)
                    .narrow(
                        inner
                            .zone_masks
                            .get(&host_info.zone)
                            .copied()
                            .unwrap_or_else(Capabilities::all),
                    )
                    .narrow(
                        entry
                            .host_masks
                            .get(&host_info.name)
                            .copied()
                            .unwrap_or_else(Capabilities::all),
                    )
                    .narrow(host_info.capabilities);
                let (vcpus_reserved, memory_reserved) = old.as_ref().map_or((0, 0), |o| {
                    (o.capacity.vcpus_reserved, o.capacity.memory_reserved)
                });
                let names = PlacedNames::of(&key, &host_info.zone);
                let state = match reply {
                    Ok(r) => {
                        report.hosts_ok += 1;
                        report.vms_seen += r.vms.len();
                        HostState {
                            names,
                            room: Some(room_of(&host_info, r)),
                            capacity: Capacity {
                                vcpus_total: host_info.vcpus_total,
                                memory_total: host_info.memory_mib_total,
                                vcpus_used: r.vcpus_used,
                                memory_used: r.memory_mib_used,
                                vcpus_reserved,
                                memory_reserved,
                                vm_count: r.vms.len(),
                            },
                            info: host_info,
                            caps,
                            available: true,
                            reason: None,
                            inventory: Some(r.clone()),
                            observed_at: Some(now),
                        }
                    }
                    Err(e) => {
                        report.hosts_failed.push((info.name.clone(), e.to_string()));
                        let mut s = old.unwrap_or_else(|| HostState {
                            info: host_info.clone(),
                            caps,
                            available: false,
                            reason: None,
                            capacity: Capacity {
                                vcpus_reserved,
                                memory_reserved,
                                ..Capacity::default()
                            },
                            inventory: None,
                            observed_at: None,
                            room: None,
                            names: names.clone(),
                        });
                        s.names = names;
                        s.capacity.vcpus_total = host_info.vcpus_total;
                        s.capacity.memory_total = host_info.memory_mib_total;
                        s.info = host_info;
                        s.caps = caps;
                        s.available = false;
                        s.reason = Some(e.message().to_string());
                        s
                    }
                };
                fresh.insert(key, state);
            }
            // Inserted in key order, so the table lists its hosts sorted.
            inv.hosts = fresh.into_iter().collect();
        }
        for (provider, error) in failed {
            report.hosts_failed.push((format!("{provider}/*"), error));
        }
        inner.ready.store(report.hosts_ok > 0, Ordering::Release);
        if !reconcile {
            report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Ok(report);
        }

        // 3. Compare with desired state.
        let mut known = Vec::new();
        let mut page = PageRequest::all();
        loop {
            let p = inner.store.list_vms(&Scope::All, &page).await?;
            known.extend(p.items);
            match p.next {
                Some(c) => page.cursor = Some(c),
                None => break,
            }
        }
        let busy: HashSet<VmId> = inner
            .store
            .unfinished_jobs()
            .await?
            .into_iter()
            .map(|j| j.vm_id)
            .collect();
        let observed: Vec<ObservedHost<'_>> = results
            .iter()
            .map(|(provider, info, reply)| ObservedHost {
                provider,
                host: &info.name,
                inventory: reply.as_ref().ok().map(|r| &**r),
            })
            .collect();
        let plan = classify(&known, &busy, &observed);

        // 4. Rebuild VMs from their marks.
        for a in plan.adopt {
            let zone = a.mark.zone.clone().unwrap_or_else(|| {
                observed_zone(&results, &a.provider, &a.host).unwrap_or_default()
            });
            let power = a.native.power;
            let r = a.native.resources;
            // Sizes the flavor already gives stay implicit, as they were in the original spec.
            let flavor = a
                .mark
                .flavor
                .as_deref()
                .and_then(|f| inner.catalog.flavor(f));
            fn differs<T: PartialEq>(from_flavor: Option<T>, actual: T) -> Option<T> {
                (from_flavor.as_ref() != Some(&actual)).then_some(actual)
            }
            let vm = Vm {
                id: a.mark.vm_id.clone(),
                project: a.mark.project.clone(),
                spec: Arc::new(VmSpec {
                    name: a.native.name.clone(),
                    image: a.mark.image.clone().unwrap_or_default(),
                    flavor: a.mark.flavor.clone(),
                    vcpus: differs(flavor.map(|f| f.vcpus), r.vcpus),
                    memory_mib: differs(flavor.map(|f| f.memory_mib), r.memory_mib),
                    // Providers that cannot report a disk size report 0: keep the flavor's.
                    disk_gib: if r.disk_gib == 0 {
                        None
                    } else {
                        differs(flavor.map(|f| f.disk_gib), r.disk_gib)
                    },
                    zone: Some(zone.clone()),
                    tags: a.native.tags.clone(),
                    server_group: a.mark.server_group.clone(),
                    ..Default::default()
                }),
                resources: a.native.resources,
                zone: zone.into(),
                desired: DesiredState::Active,
                desired_power: if power == PowerState::Stopped {
                    PowerState::Stopped
                } else {
                    PowerState::Running
                },
                power,
                present: true,
                binding: ProviderBinding {
                    provider: a.provider.as_str().into(),
                    host: a.host.as_str().into(),
                    native_id: Some(a.native.native_id.clone()),
                    member_host: a.native.host.clone(),
                },
                last_error: None,
                created_at: a.mark.created_at.unwrap_or(now),
                updated_at: now,
                generation: 0,
            };
            match inner.store.put_vm_fenced(vm, None, fence.as_ref()).await {
                Err(e) if e.code() == crate::CODE_LEADERSHIP_LOST => return Ok(deposed(report)),
                Ok(vm) => {
                    report.adopted += 1;
                    inner
                        .emit(
                            Some(vm.project.clone()),
                            Some(vm.id.clone()),
                            Some(&Principal::system()),
                            EventKind::VmAdopted {
                                provider: a.provider,
                                host: a.host,
                            },
                        )
                        .await;
                }
                Err(e) => {
                    tracing::warn!(vm_id = %a.mark.vm_id, error = %e, "cannot rebuild VM from its host mark")
                }
            }
        }

        // 5. Record observations that changed; follow moves per policy.
        let repairs = inner.settings.drift_repairs;
        let mut followed = Vec::new();
        for obs in plan.observations {
            let res = inner
                .update_vm_fenced(&obs.vm_id, fence.as_ref(), |vm| {
                    vm.power = obs.power;
                    vm.present = obs.present;
                    if let Some((provider, host)) = &obs.moved_to
                        && repairs.moved == MovedRepair::Follow
                    {
                        vm.binding.provider = provider.as_str().into();
                        vm.binding.host = host.as_str().into();
                    }
                    if let Some(member) = &obs.member_host {
                        vm.binding.member_host = member.clone();
                    }
                })
                .await;
            match res {
                Ok(Some(vm)) if obs.moved_to.is_some() && repairs.moved == MovedRepair::Follow => {
                    followed.push(vm.id);
                }
                Ok(_) => {}
                Err(e) if e.code() == crate::CODE_LEADERSHIP_LOST => return Ok(deposed(report)),
                Err(e) => {
                    tracing::warn!(vm_id = %obs.vm_id, error = %e, "cannot record observed state")
                }
            }
        }

        // 6. Report drift once, when it appears; act on it per policy.
        let current: crate::fastmap::HashSet<Drift> = plan.drift.iter().cloned().collect();
        let new: Vec<Drift> = {
            let mut last = lock(&inner.last_drift);
            let new = plan
                .drift
                .iter()
                .filter(|d| !last.contains(*d))
                .cloned()
                .collect();
            *last = current;
            new
        };
        let projects: BTreeMap<&VmId, &ProjectId> =
            known.iter().map(|v| (&v.id, &v.project)).collect();
        for d in &new {
            let vm_id = drift_vm(d);
            let project = vm_id.and_then(|v| projects.get(v)).map(|p| (*p).clone());
            inner
                .emit(
                    project,
                    vm_id.cloned(),
                    Some(&Principal::system()),
                    EventKind::Drift(d.clone()),
                )
                .await;
        }
        for d in &plan.drift {
            let repaired = match d {
                Drift::Moved { vm_id, .. } if followed.contains(vm_id) => {
                    Some((vm_id, RepairAction::FollowedMove))
                }
                Drift::Missing { vm_id, .. }
                    if repairs.missing == MissingRepair::MarkError
                        && known
                            .iter()
                            .any(|v| v.id == *vm_id && v.desired == DesiredState::Active) =>
                {
                    match mark_missing(inner, d, vm_id, fence.as_ref()).await {
                        Ok(true) => Some((vm_id, RepairAction::MarkedError)),
                        Ok(false) => None,
                        Err(e) if e.code() == crate::CODE_LEADERSHIP_LOST => {
                            return Ok(deposed(report));
                        }
                        Err(e) => {
                            tracing::warn!(%vm_id, error = %e, "cannot mark a missing VM ERROR");
                            None
                        }
                    }
                }
                _ => None,
            };
            if let Some((vm_id, action)) = repaired {
                report.repaired += 1;
                inner
                    .emit(
                        projects.get(vm_id).map(|p| (*p).clone()),
                        Some(vm_id.clone()),
                        Some(&Principal::system()),
                        EventKind::DriftRepaired {
                            drift: d.clone(),
                            action,
                        },
                    )
                    .await;
            }
        }
        if inner.settings.drift_policy == DriftPolicy::RestorePower {
            for d in &plan.drift {
                if let Drift::PowerMismatch { vm_id, desired, .. } = d
                    && let Some(project) = projects.get(vm_id)
                {
                    // Fenced: a leader deposed since this refresh began writes no repair.
                    let mut ctx = RequestContext::new(
                        (*project).clone(),
                        Principal::new("system:reconciler"),
                    );
                    ctx.fence = inner.leadership.fence();
                    let action = match desired {
                        PowerState::Running => Action::Start {
                            vm_id: vm_id.clone(),
                        },
                        _ => Action::Stop {
                            vm_id: vm_id.clone(),
                            force: false,
                        },
                    };
                    match self.submit(&ctx, action).await {
                        Ok(_) => report.repairs += 1,
                        Err(e) => tracing::warn!(%vm_id, error = %e, "cannot repair power drift"),
                    }
                }
            }
        }
        report.drift = plan.drift;
        report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok(report)
    }
}

/// Checks a create against what one target allows for VMs of the spec's image: the target's
/// capabilities narrowed by those the target reports for the image. A missing flag is refused
/// naming the request field that needs it (`user_data`, `tags`); one that only the image lacks
/// also names the catalog images that have it there.
fn check_target(
    provider: &str,
    h: &HostState,
    spec: &VmSpec,
    op: Operation,
    need: &Requirements,
    catalog: &crate::Catalog,
) -> Result<()> {
    let field_of = |flag: Capability| match flag {
        Capability::CloudInit => "user_data",
        Capability::Tags => "tags",
        _ => flag.as_str(),
    };
    if let Err(e) = h.caps.check(provider, op, need) {
        return Err(match h.caps.missing(&need.flags) {
            Some(flag) => e.with_field(field_of(flag)),
            None => e,
        });
    }
    let caps = h.info.image_capabilities(h.caps, &spec.image);
    let Some(flag) = caps.missing(&need.flags) else {
        return caps.check(provider, op, need);
    };
    let field = field_of(flag);
    let with_flag: Vec<&str> = h
        .info
        .images
        .iter()
        .flatten()
        .filter(|i| {
            catalog.image(&i.name).is_some() && h.info.image_capabilities(h.caps, &i.name).has(flag)
        })
        .map(|i| i.name.as_str())
        .collect();
    let hint = format!(
        "image `{}` does not take `{field}` here; images that do: {}",
        crate::error::echo(&spec.image),
        if with_flag.is_empty() {
            "none".to_string()
        } else {
            with_flag.join(", ")
        }
    );
    Err(Error::unsupported(provider, op, flag.as_str(), &hint)
        .with_field(field)
        .with_context("image", crate::error::echo(&spec.image)))
}

/// Keeps the placement targets that serve the spec's image and every network it asks for (a
/// target that does not report its images or networks serves any).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `image` or `networks[i].network` when no target left does,
/// with the catalog images (or networks) the targets in `where_` offer; never a target's name.
fn serving_targets<T>(
    targets: Vec<T>,
    state: impl Fn(&T) -> &HostState,
    spec: &VmSpec,
    catalog: &crate::Catalog,
    where_: &Where<'_>,
) -> Result<Vec<T>> {
    // What the targets offer, as the catalog names tenants can ask for.
    let offered = |targets: &[T],
                   of: &dyn Fn(&HostState) -> Option<Vec<&str>>,
                   known: &dyn Fn(&str) -> bool| {
        let mut names: Vec<&str> = targets
            .iter()
            .filter_map(|t| of(state(t)))
            .flatten()
            .filter(|n| known(n))
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let (serving, others): (Vec<T>, Vec<T>) = targets
        .into_iter()
        .partition(|t| state(t).serves_image(&spec.image));
    if serving.is_empty() {
        return Err(Error::invalid(
            "image",
            format!(
                "no host in {where_} offers image `{}`; images offered there: {}",
                crate::error::echo(&spec.image),
                offered(&others, &HostState::offered_images, &|n| catalog
                    .image(n)
                    .is_some())
            ),
        ));
    }
    let mut serving = serving;
    for (i, att) in spec.networks.iter().enumerate() {
        let (keep, lack): (Vec<T>, Vec<T>) = serving
            .into_iter()
            .partition(|t| state(t).info.serves_network(&att.network) != Some(false));
        if keep.is_empty() {
            return Err(Error::invalid(
                format!("networks[{i}].network"),
                format!(
                    "no host in {where_} that offers image `{}` reaches network `{}`; networks \
                     offered there: {}",
                    crate::error::echo(&spec.image),
                    crate::error::echo(&att.network),
                    offered(
                        &lack,
                        &|h| h
                            .info
                            .networks
                            .as_ref()
                            .map(|n| n.iter().map(String::as_str).collect()),
                        &|n| catalog.network(n).is_some()
                    )
                ),
            ));
        }
        serving = keep;
    }
    Ok(serving)
}

/// Returns true when the target `key` is where a create of `spec` looks: in its zone, and the
/// host it pins, if any.
fn in_scope(key: &(String, String), h: &HostState, spec: &VmSpec, pinned: Option<&str>) -> bool {
    spec.zone.as_deref().is_none_or(|z| h.info.zone == z) && pinned.is_none_or(|p| p == key.1)
}

/// Chooses the host of a create outside any server group in one pass over the host table, as
/// [`Engine::place`]'s filters and ranking would, without a list per filter: a target in scope
/// (zone, pinned host), reachable, with room, serving the image and every network, ranked by
/// free memory, then fewest VMs, then name, the last of equals winning as in
/// [`Iterator::max_by`]. Its capabilities, the costliest test, are checked only on a target
/// that would rank first so far. Returns `None` when no target qualifies: `place` then runs
/// its filters one by one to name the reason (it formats nothing on the way here).
fn best_target(
    inv: &InventoryState,
    spec: &VmSpec,
    r: Resources,
    pinned: Option<&str>,
    op: Operation,
    need: &Requirements,
    inner: &Inner,
) -> Option<Placement> {
    fn rank<'a>(
        k: &'a (String, String),
        h: &HostState,
    ) -> (u64, std::cmp::Reverse<usize>, std::cmp::Reverse<&'a str>) {
        (
            h.capacity.free().1,
            std::cmp::Reverse(h.vms().len()),
            std::cmp::Reverse(k.1.as_str()),
        )
    }
    let mut best: Option<(&(String, String), &HostState)> = None;
    for (key, h) in &inv.hosts {
        let qualifies = in_scope(key, h, spec, pinned)
            && h.available
            && h.has_room(&r)
            && h.serves_image(&spec.image)
            && spec
                .networks
                .iter()
                .all(|att| h.info.serves_network(&att.network) != Some(false));
        if !qualifies || best.is_some_and(|(bk, bh)| rank(key, h) < rank(bk, bh)) {
            continue;
        }
        if check_target(&key.0, h, spec, op, need, &inner.catalog).is_ok() {
            best = Some((key, h));
        }
    }
    best.map(|(_, h)| Placement {
        provider: h.names.provider.clone(),
        host: h.names.host.clone(),
        zone: h.names.zone.clone(),
        member_host: None,
        room: h.room,
    })
}

/// Where a create looks for a host, as its refusals name it (`host `h``, `zone `z`` or `any
/// zone`). Written only into an error: a create that is placed formats nothing.
#[derive(Clone, Copy)]
struct Where<'a> {
    zone: Option<&'a str>,
    pinned: Option<&'a str>,
}

impl std::fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.zone, self.pinned) {
            (_, Some(h)) => write!(f, "host `{}`", crate::error::echo(h)),
            (Some(z), None) => write!(f, "zone `{}`", crate::error::echo(z)),
            (None, None) => f.write_str("any zone"),
        }
    }
}

/// Refuses a size that no host in scope allows, naming the field and the largest limit there.
/// Returns `None` when some host allows each size (it may still lack room or a capability).
fn limit_refusal(
    in_scope: &[(&(String, String), &HostState)],
    need: &Requirements,
    where_: &Where<'_>,
) -> Option<Error> {
    // A refusal needs every host to exceed a limit: when the first host allows each size
    // (the usual case), the others need not be asked.
    let (_, first_host) = in_scope.first()?;
    let first = first_host.caps.exceeded(need);
    if first.is_empty() {
        return None;
    }
    let others: Vec<Vec<ExceededLimit>> = in_scope[1..]
        .iter()
        .map(|(_, h)| h.caps.exceeded(need))
        .collect();
    for limit in &first {
        let mut largest = limit.max;
        let everywhere = others.iter().all(|limits| {
            limits.iter().any(|l| {
                if l.field == limit.field {
                    largest = largest.max(l.max);
                    true
                } else {
                    false
                }
            })
        });
        if everywhere {
            let min = match limit.field {
                "vcpus" => u64::from(crate::MIN_VCPUS),
                "memory_mib" => crate::MIN_MEMORY_MIB,
                "disk_gib" => crate::MIN_DISK_GIB,
                _ => 0,
            };
            return Some(
                Error::invalid(
                    limit.field,
                    format!(
                        "is {}; {where_} allows at most {largest} ({} = {largest}; allowed: {min}-{largest})",
                        limit.wanted, limit.name
                    ),
                )
                .with_context("limit", limit.name),
            );
        }
    }
    None
}

fn observed_zone(
    results: &[(String, HostInfo, Result<Arc<HostInventoryReply>>)],
    provider: &str,
    host: &str,
) -> Option<String> {
    results
        .iter()
        .find(|(p, h, _)| p == provider && h.name == host)
        .map(|(_, h, _)| h.zone.clone())
}

/// Ends a reconcile round whose leadership moved on while it ran: the rest is the new leader's.
fn deposed(report: RefreshReport) -> RefreshReport {
    tracing::warn!("leadership moved on during an inventory refresh; its writes stop here");
    report
}

/// Marks a VM that is missing from its host `ERROR` with the reason, once: returns false when
/// it is not `ACTIVE` any more (already marked, or a job took it over since the refresh began).
async fn mark_missing(
    inner: &Inner,
    d: &Drift,
    vm_id: &VmId,
    fence: Option<&crate::LeaderFence>,
) -> Result<bool> {
    let Drift::Missing { provider, host, .. } = d else {
        return Ok(false);
    };
    let error = Error::new(
        ErrorKind::NotFound,
        "the VM is missing from its host; HCP does not recreate it (delete it, or restore it on the host)",
    )
    .with_detail(format!(
        "provider `{provider}` host `{host}` answered its inventory without this VM"
    ));
    let mut marked = false;
    inner
        .update_vm_fenced(vm_id, fence, |vm| {
            marked = vm.desired == DesiredState::Active;
            if marked {
                vm.desired = DesiredState::Error;
                vm.last_error = Some(Box::new((&error).into()));
            }
        })
        .await?;
    Ok(marked)
}

fn drift_vm(d: &Drift) -> Option<&VmId> {
    match d {
        Drift::Missing { vm_id, .. }
        | Drift::PowerMismatch { vm_id, .. }
        | Drift::Moved { vm_id, .. } => Some(vm_id),
        Drift::Unmanaged { .. } => None,
    }
}

/// Runs the reconciler: refresh on an interval, purge expired jobs, keys and events; each round
/// only while this process is the leader ([`crate::Leadership`]).
pub(crate) fn spawn_reconciler(inner: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            let (interval, shutdown) = match inner.upgrade() {
                Some(i) => (i.settings.inventory_refresh_interval, i.shutdown.clone()),
                None => return,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let Some(inner) = inner.upgrade() else { return };
            let engine = Engine {
                inner: inner.clone(),
            };
            // Singleton duties: only the leader of several replicas acts on what the hosts show
            // (rebuilds, drift repair) and purges. A follower reads the hosts too, for the host
            // table its placement uses, and acts on nothing.
            let leader = inner.leadership.is_leader();
            // A panic in one refresh (a bug, or a provider's reply HCP did not expect) costs
            // that refresh; the reconciler goes on at the next interval.
            let refresh = std::panic::AssertUnwindSafe(engine.refresh(leader)).catch_unwind();
            let refreshed = refresh.await.unwrap_or_else(|panic| {
                Err(Error::internal(format!(
                    "the inventory refresh panicked: {}",
                    super::panic_message(panic.as_ref())
                )))
            });
            match refreshed {
                Ok(r) => tracing::debug!(
                    leader,
                    hosts_ok = r.hosts_ok,
                    failed = r.hosts_failed.len(),
                    drift = r.drift.len(),
                    elapsed_ms = r.elapsed_ms,
                    "inventory refreshed"
                ),
                Err(e) => tracing::warn!(error = %e, leader, "inventory refresh failed"),
            }
            if !leader {
                continue;
            }
            let before = |keep: Duration| {
                chrono::Duration::from_std(keep)
                    .ok()
                    .and_then(|d| inner.now().checked_sub_signed(d))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
            };
            let (jobs_before, keys_before) = (
                before(inner.settings.job_retention),
                before(inner.settings.idempotency_ttl),
            );
            let fence = inner.leadership.fence();
            if let Err(e) = inner
                .store
                .purge(jobs_before, keys_before, fence.as_ref())
                .await
            {
                tracing::warn!(error = %e, "purging expired jobs failed");
            }
            // Audit events: retention by time window (zero keeps them).
            if !inner.settings.event_retention.is_zero() {
                match inner
                    .store
                    .purge_events(before(inner.settings.event_retention), fence.as_ref())
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(events = n, "purged expired audit events"),
                    Err(e) => tracing::warn!(error = %e, "purging expired audit events failed"),
                }
            }
        }
    });
}
