//! # hcp-provider-sim
//!
//! An in-memory hypervisor simulator that implements HCP's whole [`Provider`] trait and behaves
//! like a real hypervisor: hosts with CPU and memory capacity, templates, power states, VM names
//! unique per host, a running VM that cannot be deleted unless stopped or forced, capacity
//! errors, console links that expire. Latency per operation and faults (a failure rate, a host
//! down, a slow host) are configurable and deterministic for a given seed.
//!
//! It is HCP's embedded default: with no configuration, [`demo_config`] serves the demo catalog
//! (project `demo`; zones `zone-a` and `zone-b`; images `ubuntu-24.04` and `windows-2022`;
//! flavors `small` and `medium`).
//!
//! Hosts may be grouped into clusters (`clusters:` of the provider in the hosts file, and
//! `cluster:` on each member host): a cluster is one placement target with the members' summed
//! capacity, and the simulator places each VM created on it on the member host with the most
//! free memory that fits the whole VM, as a cluster scheduler would.
//!
//! With [`SimSettings::state_file`] set, hosts and VMs live in a JSON file that several
//! processes share safely (the `hcp` CLI keeps the simulator there between commands). Each
//! simulator parses the file once and again only when it changed, so a refresh of many hosts
//! reads it once; another process's writes are seen on the next call.

mod config;
mod state;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use hcp_core::{
    Capabilities, Config, Console, ConsoleKind, CreateVm, CreatedVm, DeleteSnapshot, DeleteVm,
    DeletedSnapshot, DeletedVm, Error, ErrorKind, GetConsole, HostInfo, HostInventory,
    HostInventoryReply, ImageOffer, ListSnapshots, MarkedVm, MemberHost, MigrateVm, MigratedVm,
    NativeSnapshot, OpContext, Operation, PowerState, Provider, ProviderConfig, ProviderInfo,
    RebootVm, RebootedVm, ResizeVm, ResizedVm, Result, RevertSnapshot, RevertedSnapshot, Secrets,
    SetMark, SnapshotVm, SnapshottedVm, StartVm, StartedVm, StopVm, StoppedVm, VmTarget,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use config::SimSettings;
pub use state::{SimHost, SimSnapshot, SimState, SimVm};

use state::{Backend, IndexedState};

/// The provider kind name used in hosts files.
pub const KIND: &str = "sim";

/// The hosts file of the embedded demo, as YAML.
pub const DEMO_HOSTS_FILE: &str = include_str!("demo.yaml");

/// Returns the demo configuration: project `demo`; zone `zone-a` (2 hosts, every capability)
/// and `zone-b` (1 host, no cloud_init, no snapshot, no gpu); images `ubuntu-24.04` and
/// `windows-2022`; flavors `small` (1 vCPU, 1 GiB, 10 GiB) and `medium` (2 vCPU, 4 GiB, 40 GiB).
pub fn demo_config() -> Config {
    Config::from_yaml(DEMO_HOSTS_FILE, "demo hosts file")
        .expect("the embedded demo hosts file is valid")
}

/// Registers the simulator's provider kind on an engine builder.
pub fn register(builder: hcp_core::EngineBuilder) -> hcp_core::EngineBuilder {
    builder.provider_kind(KIND, |c: &ProviderConfig, s: &Secrets| {
        let p: Arc<dyn Provider> = Arc::new(SimProvider::from_config(c, s)?);
        Ok(p)
    })
}

/// A simulated cluster: one placement target over some of the simulator's hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCluster {
    /// The cluster name (the placement target's name).
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Its member hosts.
    pub members: Vec<String>,
}

impl SimCluster {
    /// Describes a cluster of `members`.
    pub fn new(name: &str, zone: &str, members: Vec<String>) -> Self {
        SimCluster {
            name: name.into(),
            zone: zone.into(),
            members,
        }
    }
}

/// A simulated hypervisor provider.
#[derive(Debug)]
pub struct SimProvider {
    name: String,
    settings: SimSettings,
    declared: Capabilities,
    backend: Backend,
    rng: Mutex<StdRng>,
    /// Clusters by name.
    clusters: BTreeMap<String, SimCluster>,
    /// What VMs of particular images can do (`settings.image_disable`).
    image_caps: BTreeMap<String, Capabilities>,
}

impl SimProvider {
    /// Builds a simulator from its section of the hosts file.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] for bad settings; an I/O error for an unreadable state file.
    pub fn from_config(config: &ProviderConfig, _secrets: &Secrets) -> Result<Self> {
        let settings = SimSettings::from_value(&config.name, &config.settings)?;
        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                SimHost::new(
                    &h.name,
                    &h.zone,
                    h.vcpus.unwrap_or(settings.host_vcpus),
                    h.memory_mib.unwrap_or(settings.host_memory_mib),
                )
            })
            .collect();
        let clusters = config
            .clusters
            .iter()
            .map(|c| {
                let members = config
                    .hosts
                    .iter()
                    .filter(|h| h.cluster.as_deref() == Some(c.name.as_str()))
                    .map(|h| h.name.clone())
                    .collect();
                SimCluster::new(&c.name, &c.zone, members)
            })
            .collect();
        SimProvider::new(&config.name, settings, hosts)?.with_clusters(clusters)
    }

    /// Groups hosts into cluster targets.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the cluster for one without members, a member that is
    /// not a host of the simulator or is in another cluster, or a name a host already has.
    pub fn with_clusters(mut self, clusters: Vec<SimCluster>) -> Result<Self> {
        let field = |c: &SimCluster| format!("providers.{}.clusters.{}", self.name, c.name);
        for c in clusters {
            let (unknown, name_taken) = self.backend.read(|s| {
                Ok((
                    c.members.iter().find(|m| s.host(m).is_err()).cloned(),
                    s.host(&c.name).is_ok(),
                ))
            })?;
            if let Some(m) = unknown {
                return Err(Error::invalid(
                    field(&c),
                    format!("member `{m}` is not a host of the simulator"),
                ));
            }
            if name_taken || self.clusters.contains_key(&c.name) {
                return Err(Error::invalid(
                    field(&c),
                    "is a name already used; hosts and clusters share one namespace",
                ));
            }
            if c.members.is_empty() {
                return Err(Error::invalid(
                    field(&c),
                    "has no member hosts; give hosts `cluster: NAME`",
                ));
            }
            if let Some(m) = c
                .members
                .iter()
                .find(|m| self.clusters.values().any(|o| o.members.contains(m)))
            {
                return Err(Error::invalid(
                    field(&c),
                    format!("member `{m}` is already in another cluster"),
                ));
            }
            self.clusters.insert(c.name.clone(), c);
        }
        Ok(self)
    }

    /// Builds a simulator named `name` with `hosts`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] for an unknown capability in `settings.disable`, or a state
    /// file that cannot be read or written.
    pub fn new(name: &str, settings: SimSettings, hosts: Vec<SimHost>) -> Result<Self> {
        let mask = hcp_core::CapabilityLimits {
            disable: settings.disable.clone(),
            ..Default::default()
        }
        .mask()
        .map_err(|e| {
            Error::invalid(
                format!("providers.{name}.settings.disable"),
                e.message().to_string(),
            )
        })?;
        let mut image_caps = BTreeMap::new();
        for (image, disable) in &settings.image_disable {
            let mask = hcp_core::CapabilityLimits {
                disable: disable.clone(),
                ..Default::default()
            }
            .mask()
            .map_err(|e| {
                Error::invalid(
                    format!("providers.{name}.settings.image_disable.{image}"),
                    e.message().to_string(),
                )
            })?;
            image_caps.insert(image.clone(), mask);
        }
        let backend = Backend::open(settings.state_file.as_deref(), hosts, &settings.down_hosts)?;
        let limits = Capabilities {
            max_vcpus: Some(settings.max_vcpus),
            max_memory_mib: Some(settings.max_memory_mib),
            max_disk_gib: Some(settings.max_disk_gib),
            max_networks: Some(settings.max_networks),
            ..Capabilities::all()
        };
        Ok(SimProvider {
            name: name.to_string(),
            declared: Capabilities::all().narrow(mask).narrow(limits),
            rng: Mutex::new(StdRng::seed_from_u64(settings.seed)),
            settings,
            backend,
            clusters: BTreeMap::new(),
            image_caps,
        })
    }

    /// Returns a snapshot of the simulated hosts and VMs.
    ///
    /// # Errors
    /// A state file that cannot be read.
    pub fn state(&self) -> Result<SimState> {
        self.backend.read(|s| Ok(s.state().clone()))
    }

    /// Puts a VM on a host directly, as if created outside HCP (or by HCP when it carries a mark).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown host; [`ErrorKind::Conflict`] for a taken name.
    pub fn seed_vm(&self, host: &str, vm: SimVm) -> Result<String> {
        self.backend.write(|s| {
            s.host(host)?;
            if s.name_taken(host, &vm.name) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("a VM named `{}` already exists on its host", vm.name),
                )
                .with_detail(format!("host `{host}`")));
            }
            let id = s.next_native_id()?;
            let mut vm = vm;
            vm.native_id = id.clone();
            s.insert_vm(host, vm)?;
            Ok(id)
        })
    }

    /// Changes a VM's power state directly, as if the guest shut itself down.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the VM does not exist.
    pub fn set_power(&self, native_id: &str, power: PowerState) -> Result<()> {
        self.backend.write(|s| {
            let host = s
                .host_of(native_id)
                .ok_or_else(|| Error::not_found("vm", native_id))?
                .to_string();
            if let Some(vm) = s.vm_mut(&host, native_id) {
                vm.power = power;
            }
            Ok(())
        })
    }

    /// Removes a VM directly, as if deleted behind HCP's back.
    ///
    /// # Errors
    /// A state file that cannot be written.
    pub fn remove_vm(&self, native_id: &str) -> Result<bool> {
        self.backend.write(|s| {
            let Some(host) = s.host_of(native_id).map(str::to_string) else {
                return Ok(false);
            };
            Ok(s.remove_vm(&host, native_id).is_some())
        })
    }

    /// Takes a host down or brings it back.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown host.
    pub fn set_host_down(&self, host: &str, down: bool) -> Result<()> {
        self.backend.write(|s| s.set_down(host, down))
    }

    async fn simulate(&self, op: Operation, host: Option<&str>, faulty: bool) -> Result<()> {
        let latency = self.settings.latency_of(op.as_str(), host);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if faulty && self.settings.failure_rate > 0.0 {
            let roll: f64 = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
            if roll < self.settings.failure_rate {
                return Err(Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!("injected fault: {op} timed out"),
                )
                .with_detail(format!("host `{}`", host.unwrap_or("*")))
                .temporary());
            }
        }
        Ok(())
    }

    /// Refuses a snapshot operation when the provider does not declare `snapshot`.
    fn unless_declared(&self, op: Operation) -> Result<()> {
        if self.declared.snapshot {
            Ok(())
        } else {
            Err(Error::unsupported(&self.name, op, "snapshot", ""))
        }
    }

    /// The images on `host`; empty means any image is accepted.
    fn images_of(&self, host: &str) -> &[String] {
        self.settings
            .host_images
            .get(host)
            .unwrap_or(&self.settings.images)
    }

    /// The networks `host` reaches; empty means any network is accepted.
    fn networks_of(&self, host: &str) -> &[String] {
        self.settings
            .host_networks
            .get(host)
            .unwrap_or(&self.settings.networks)
    }

    /// Adds to `info` the images and networks its target reports, each image with what its
    /// VMs can do; none when the settings list none (any is accepted).
    fn with_offers(&self, info: HostInfo) -> HostInfo {
        let images = self.images_of(&info.name);
        let networks = self.networks_of(&info.name);
        let mut info = info;
        if !images.is_empty() {
            let offers = images
                .iter()
                .map(|i| match self.image_caps.get(i) {
                    Some(c) => ImageOffer::new(i).with_capabilities(*c),
                    None => ImageOffer::new(i),
                })
                .collect();
            info = info.with_images(offers);
        }
        if !networks.is_empty() {
            info = info.with_networks(networks.to_vec());
        }
        info
    }

    fn host_info(&self, h: &SimHost) -> HostInfo {
        self.with_offers(HostInfo::new(
            &h.name,
            &h.zone,
            h.vcpus,
            h.memory_mib,
            self.declared,
        ))
    }

    /// Describes a cluster target: its members' capacity summed. The sums saturate: a total
    /// past the integer range can only overstate the aggregate, and each VM is still checked
    /// against one member's own room.
    fn cluster_info(&self, s: &IndexedState, c: &SimCluster) -> Result<HostInfo> {
        let mut vcpus = 0u32;
        let mut memory = 0u64;
        for m in &c.members {
            let h = s.host(m)?;
            vcpus = vcpus.saturating_add(h.vcpus);
            memory = memory.saturating_add(h.memory_mib);
        }
        Ok(self.with_offers(
            HostInfo::new(&c.name, &c.zone, vcpus, memory, self.declared)
                .with_members(c.members.clone()),
        ))
    }

    /// Returns `t` with its host replaced by the member host its VM is on, when `t` names a
    /// cluster; the cluster's first member when the VM is on none of them (so the caller's
    /// lookup reports it missing).
    fn on_member<'t>(&self, s: &IndexedState, t: &'t VmTarget) -> Cow<'t, VmTarget> {
        let Some(c) = self.clusters.get(&t.host) else {
            // A host's VM is where the target says: no copy of it.
            return Cow::Borrowed(t);
        };
        let by_id = t
            .native_id
            .as_deref()
            .and_then(|id| s.host_of(id))
            .filter(|h| c.members.iter().any(|m| m == h))
            .map(str::to_string);
        let member = by_id
            .or_else(|| {
                c.members
                    .iter()
                    .find(|m| s.by_mark(m, &t.vm_id).is_some())
                    .cloned()
            })
            .or_else(|| c.members.first().cloned())
            .unwrap_or_else(|| t.host.clone());
        Cow::Owned(VmTarget {
            host: member,
            ..t.clone()
        })
    }

    /// Chooses the member of cluster `c` for a VM of size `r`: the up member with the most free
    /// memory that fits the whole VM (ties: fewer vCPUs used, then the name).
    ///
    /// # Errors
    /// [`ErrorKind::ProviderUnavailable`] when every member is down; [`ErrorKind::QuotaExceeded`]
    /// when no member alone has room, whatever the cluster's sum.
    fn pick_member(
        &self,
        s: &IndexedState,
        c: &SimCluster,
        r: &hcp_core::Resources,
    ) -> Result<String> {
        let mut up = 0usize;
        let mut best: Option<(&str, u64, u32)> = None;
        for m in &c.members {
            let h = s.host(m)?;
            if h.down {
                continue;
            }
            up += 1;
            let (cpu, mem) = s.used(m);
            if !fits(h, cpu, mem, r) {
                continue;
            }
            let free = h.memory_mib.saturating_sub(mem);
            let better = best.is_none_or(|(bn, bf, bc)| {
                (free, std::cmp::Reverse(cpu), std::cmp::Reverse(m.as_str()))
                    > (bf, std::cmp::Reverse(bc), std::cmp::Reverse(bn))
            });
            if better {
                best = Some((m, free, cpu));
            }
        }
        if up == 0 {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                "no host of the VM's cluster answers",
            )
            .with_detail(format!("cluster `{}`: every member is down", c.name))
            .temporary());
        }
        best.map(|(m, _, _)| m.to_string()).ok_or_else(|| {
            Error::new(
                ErrorKind::QuotaExceeded,
                format!(
                    "no host of the chosen cluster has {} vCPUs and {} MiB free; a VM must fit one host",
                    r.vcpus, r.memory_mib
                ),
            )
            .with_detail(format!("cluster `{}`", c.name))
        })
    }

    /// Reads a cluster target's inventory: every member's VMs (each naming its host), the
    /// summed capacity and each member's own.
    fn cluster_inventory(&self, s: &IndexedState, c: &SimCluster) -> Result<HostInventoryReply> {
        let mut vms = Vec::new();
        let mut members = Vec::new();
        for m in &c.members {
            let h = s.host(m)?;
            let (cpu, mem) = s.used(m);
            members.push(
                MemberHost::new(m, h.vcpus, h.memory_mib)
                    .with_used(cpu, mem)
                    .with_available(!h.down),
            );
            vms.extend(
                h.vms_in_order()
                    .into_iter()
                    .map(|v| v.to_native().with_host(Some(m.clone()))),
            );
        }
        if members.iter().all(|m| !m.available) {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                "no host of the cluster answers",
            )
            .with_detail(format!("cluster `{}`: every member is down", c.name))
            .temporary());
        }
        Ok(HostInventoryReply::new(self.cluster_info(s, c)?, vms)
            .with_members(members)
            .with_images(self.images_of(&c.name).to_vec())
            .with_networks(vec!["default".into()]))
    }
}

/// Returns the VM `t` names on its host: the one under its native id when the host has it (one
/// search of the host's VMs), else the VM carrying HCP's id.
fn locate_ref<'a>(s: &'a IndexedState, t: &VmTarget) -> Result<Option<&'a SimVm>> {
    let host = s.host(&t.host)?;
    host.ensure_up()?;
    if let Some(vm) = t.native_id.as_ref().and_then(|id| host.vms.get(id)) {
        return Ok(Some(vm));
    }
    Ok(s.by_mark(&t.host, &t.vm_id))
}

/// Returns the native id of `vm`, found for `t`: borrowed from `t` in the usual case (the
/// target named it by its native id), so the key is not copied.
fn key_of<'t>(t: &'t VmTarget, vm: &SimVm) -> Cow<'t, str> {
    match &t.native_id {
        Some(id) if *id == vm.native_id => Cow::Borrowed(id.as_str()),
        _ => Cow::Owned(vm.native_id.clone()),
    }
}

/// Returns the native id of the VM `t` names on its host, as [`locate_ref`] finds it.
fn locate_key<'t>(s: &IndexedState, t: &'t VmTarget) -> Result<Option<Cow<'t, str>>> {
    Ok(locate_ref(s, t)?.map(|vm| key_of(t, vm)))
}

/// Returns the VM `t` names to change, as [`locate_key`] finds it.
fn locate<'a>(s: &'a mut IndexedState, t: &VmTarget) -> Result<Option<&'a mut SimVm>> {
    let key = locate_key(s, t)?;
    Ok(key.and_then(move |k| s.vm_mut(&t.host, &k)))
}

/// Returns true when `r` fits on `host` next to `cpu` vCPUs and `mem` MiB already used. Checked:
/// a sum past the integer range does not fit.
fn fits(host: &SimHost, cpu: u32, mem: u64, r: &hcp_core::Resources) -> bool {
    cpu.checked_add(r.vcpus).is_some_and(|c| c <= host.vcpus)
        && mem
            .checked_add(r.memory_mib)
            .is_some_and(|m| m <= host.memory_mib)
}

fn missing(t: &VmTarget) -> Error {
    Error::not_found("vm", &t.name).with_context("native_id", t.native_id.as_deref().unwrap_or("-"))
}

#[async_trait]
impl Provider for SimProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: self.name.clone(),
            kind: KIND.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.declared
    }

    fn max_snapshots_per_vm(&self) -> Option<u32> {
        self.settings.max_snapshots_per_vm
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        self.simulate(Operation::ListHosts, None, false).await?;
        self.backend.read(|s| {
            let in_cluster =
                |h: &SimHost| self.clusters.values().any(|c| c.members.contains(&h.name));
            let mut targets: Vec<HostInfo> = s
                .state()
                .hosts
                .values()
                .filter(|h| !in_cluster(h))
                .map(|h| self.host_info(h))
                .collect();
            for c in self.clusters.values() {
                targets.push(self.cluster_info(s, c)?);
            }
            Ok(targets)
        })
    }

    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        self.simulate(Operation::HostInventory, Some(&args.host), false)
            .await?;
        self.backend.read(|s| {
            if let Some(c) = self.clusters.get(&args.host) {
                return self.cluster_inventory(s, c);
            }
            let h = s.host(&args.host)?;
            h.ensure_up()?;
            let vms = h.vms_in_order().into_iter().map(SimVm::to_native).collect();
            let images = self.images_of(&h.name).to_vec();
            Ok(HostInventoryReply::new(self.host_info(h), vms)
                .with_images(images)
                .with_networks(vec!["default".into()]))
        })
    }

    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm> {
        self.simulate(Operation::CreateVm, Some(&args.host), true)
            .await?;
        let images = self.images_of(&args.host);
        if !images.is_empty() && !images.contains(&args.image) {
            return Err(Error::not_found("image", &args.image).with_context("host", &args.host));
        }
        let image_caps = self
            .image_caps
            .get(&args.image)
            .map_or(self.declared, |c| self.declared.narrow(*c));
        if args.user_data.is_some() && !image_caps.cloud_init {
            return Err(
                Error::unsupported(&self.name, Operation::CreateVm, "cloud_init", "")
                    .with_context("image", &args.image),
            );
        }
        let networks = self.networks_of(&args.host);
        if let Some(n) = args
            .networks
            .iter()
            .find(|n| !networks.is_empty() && !networks.contains(&n.network))
        {
            return Err(Error::not_found("network", &n.network).with_context("host", &args.host));
        }
        // A real hypervisor refuses a VM beyond its limits, whatever the caller checked.
        let need = hcp_core::Requirements {
            vcpus: Some(args.resources.vcpus),
            memory_mib: Some(args.resources.memory_mib),
            disk_gib: Some(args.resources.disk_gib),
            networks: Some(u32::try_from(args.networks.len()).unwrap_or(u32::MAX)),
            ..Default::default()
        };
        self.declared
            .check(&self.name, Operation::CreateVm, &need)?;
        ctx.progress(30);
        let created = self.backend.write(|s| {
            let cluster = self.clusters.get(&args.host);
            // On a cluster the simulator picks the member, as the cluster's scheduler would; a
            // retried create finds its VM on whichever member holds it, and names are unique
            // over the whole cluster.
            // The hosts to look on, borrowed: a cluster's members, or the one host.
            let scope: &[String] = match cluster {
                Some(c) => &c.members,
                None => std::slice::from_ref(&args.host),
            };
            if let Some(v) = scope.iter().find_map(|h| s.by_mark(h, &args.vm_id)) {
                let member = cluster.and_then(|_| s.host_of(&v.native_id).map(str::to_string));
                return Ok(CreatedVm::new(&v.native_id, v.power).with_host(member));
            }
            if cluster.is_some() && scope.iter().any(|h| s.name_taken(h, &args.name)) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("a VM named `{}` already exists in its cluster", args.name),
                )
                .with_detail(format!("cluster `{}`", args.host))
                .with_field("name"));
            }
            let target = match (cluster, &args.member_host) {
                // HCP pinned the member host (a server group's policy): honour it or fail.
                (Some(c), Some(m)) if c.members.contains(m) => m.clone(),
                (Some(c), Some(m)) => {
                    return Err(Error::invalid(
                        "host",
                        format!("`{m}` is not a member host of cluster `{}`", c.name),
                    ));
                }
                (Some(c), None) => self.pick_member(s, c, &args.resources)?,
                (None, _) => args.host.clone(),
            };
            let host = s.host(&target)?;
            host.ensure_up()?;
            // No scan of the host's VMs: a retried create, a taken name and the used capacity
            // come from the index.
            let (cpu, mem) = s.used(&target);
            if s.name_taken(&target, &args.name) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("a VM named `{}` already exists on its host", args.name),
                )
                .with_detail(format!("host `{target}`"))
                .with_field("name"));
            }
            if !fits(host, cpu, mem, &args.resources) {
                return Err(Error::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "the chosen host has {} vCPUs and {} MiB free; {} and {} needed",
                        host.vcpus.saturating_sub(cpu),
                        host.memory_mib.saturating_sub(mem),
                        args.resources.vcpus,
                        args.resources.memory_mib
                    ),
                )
                .with_detail(format!("host `{target}`")));
            }
            let id = s.next_native_id()?;
            let power = if args.start {
                PowerState::Running
            } else {
                PowerState::Stopped
            };
            // The request's text moves into the record: no copies.
            let vm = SimVm {
                native_id: id.clone(),
                name: args.name,
                power,
                resources: args.resources,
                image: args.image,
                mark: Some(args.mark),
                tags: args.tags,
                has_user_data: args.user_data.is_some(),
                snapshots: Vec::new(),
            };
            s.insert_vm(&target, vm)?;
            let member = cluster.map(|_| target.clone());
            Ok(CreatedVm::new(id, power).with_host(member))
        })?;
        ctx.progress(90);
        Ok(created)
    }

    async fn delete_vm(&self, _ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        self.simulate(Operation::DeleteVm, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let t = &*self.on_member(s, &args.target);
            let Some(vm) = locate_ref(s, t)? else {
                return Ok(DeletedVm::new(false));
            };
            if vm.power == PowerState::Running && !args.force {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "VM `{}` is running; stop it first or delete with force",
                        vm.name
                    ),
                ));
            }
            let key = key_of(t, vm);
            s.remove_vm(&t.host, &key);
            Ok(DeletedVm::new(true))
        })
    }

    async fn start_vm(&self, _ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        self.simulate(Operation::StartVm, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let t = &*self.on_member(s, &args.target);
            let vm = locate(s, t)?.ok_or_else(|| missing(t))?;
            let was_running = vm.power == PowerState::Running;
            vm.power = PowerState::Running;
            Ok(StartedVm::new(was_running))
        })
    }

    async fn stop_vm(&self, _ctx: &OpContext, args: StopVm) -> Result<StoppedVm> {
        self.simulate(Operation::StopVm, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let t = &*self.on_member(s, &args.target);
            let vm = locate(s, t)?.ok_or_else(|| missing(t))?;
            let was_stopped = vm.power == PowerState::Stopped;
            vm.power = PowerState::Stopped;
            Ok(StoppedVm::new(was_stopped, args.force && !was_stopped))
        })
    }

    async fn reboot_vm(&self, _ctx: &OpContext, args: RebootVm) -> Result<RebootedVm> {
        self.simulate(Operation::RebootVm, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let t = &*self.on_member(s, &args.target);
            let vm = locate(s, t)?.ok_or_else(|| missing(t))?;
            if vm.power != PowerState::Running {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("VM `{}` is not running; start it instead", vm.name),
                ));
            }
            Ok(RebootedVm::new())
        })
    }

    async fn console(&self, args: GetConsole) -> Result<Console> {
        self.simulate(Operation::Console, Some(&args.target.host), false)
            .await?;
        let kind = args.kind.unwrap_or(ConsoleKind::Vnc);
        self.backend.read(|s| {
            let t = &*self.on_member(s, &args.target);
            let vm = locate_ref(s, t)?.ok_or_else(|| missing(t))?;
            if vm.power != PowerState::Running {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "VM `{}` is not running; a console needs a running VM",
                        vm.name
                    ),
                ));
            }
            Ok(())
        })?;
        let token: u128 = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
        let ttl = chrono::Duration::from_std(self.settings.console_ttl)
            .unwrap_or(chrono::Duration::seconds(60));
        // The URL names the VM by HCP's id: tenants read it, and never see native ids.
        Ok(Console::new(
            kind,
            format!(
                "{}/{}/{}?token={token:032x}",
                self.settings.console_url,
                kind.as_str(),
                args.target.vm_id
            ),
            Utc::now() + ttl,
        ))
    }

    async fn snapshot_vm(&self, _ctx: &OpContext, args: SnapshotVm) -> Result<SnapshottedVm> {
        if !self.declared.snapshot {
            return Err(Error::unsupported(
                &self.name,
                Operation::SnapshotVm,
                "snapshot",
                "",
            ));
        }
        self.simulate(Operation::SnapshotVm, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let t = &*self.on_member(s, &args.target);
            let vm = locate(s, t)?.ok_or_else(|| missing(t))?;
            if vm.snapshots.iter().any(|s| s.name == args.name) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("snapshot `{}` already exists", args.name),
                ));
            }
            let snap = SimSnapshot {
                name: args.name.clone(),
                created_at: Some(Utc::now()),
                power: vm.power,
                resources: Some(vm.resources),
            };
            vm.snapshots.push(snap);
            Ok(SnapshottedVm::new(format!(
                "{}@{}",
                vm.native_id, args.name
            )))
        })
    }

    async fn list_snapshots(&self, args: ListSnapshots) -> Result<Vec<NativeSnapshot>> {
        self.unless_declared(Operation::ListSnapshots)?;
        self.simulate(Operation::ListSnapshots, Some(&args.target.host), false)
            .await?;
        self.backend.read(|s| {
            let t = &*self.on_member(s, &args.target);
            let vm = locate_ref(s, t)?.ok_or_else(|| missing(t))?;
            Ok(vm
                .snapshots
                .iter()
                .map(|s| NativeSnapshot::new(&s.name, s.created_at, s.memory()))
                .collect())
        })
    }

    async fn revert_snapshot(
        &self,
        _ctx: &OpContext,
        args: RevertSnapshot,
    ) -> Result<RevertedSnapshot> {
        self.unless_declared(Operation::RevertSnapshot)?;
        self.simulate(Operation::RevertSnapshot, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let t = &*self.on_member(s, &args.target);
            let vm = locate(s, t)?.ok_or_else(|| missing(t))?;
            let snap = vm
                .snapshots
                .iter()
                .find(|s| s.name == args.name)
                .cloned()
                .ok_or_else(|| Error::not_found("snapshot", &args.name))?;
            // Like a hypervisor: memory state resumes the VM; a disk-only snapshot leaves it off.
            vm.power = if snap.memory() {
                PowerState::Running
            } else {
                PowerState::Stopped
            };
            let (id, power) = (vm.native_id.clone(), vm.power);
            if let Some(r) = snap.resources {
                s.set_resources(&t.host, &id, r);
            }
            Ok(RevertedSnapshot::new(snap.memory(), power))
        })
    }

    async fn delete_snapshot(
        &self,
        _ctx: &OpContext,
        args: DeleteSnapshot,
    ) -> Result<DeletedSnapshot> {
        self.unless_declared(Operation::DeleteSnapshot)?;
        self.simulate(Operation::DeleteSnapshot, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let t = &*self.on_member(s, &args.target);
            let vm = locate(s, t)?.ok_or_else(|| missing(t))?;
            let before = vm.snapshots.len();
            vm.snapshots.retain(|s| s.name != args.name);
            Ok(DeletedSnapshot::new(vm.snapshots.len() != before))
        })
    }

    /// Changes a VM's size at once, running or not: the simulator applies every change live
    /// (as [`hcp_core::plan_resize`] says for kind `sim`), so no restart is ever needed.
    /// Refuses a disk shrink and a growth its host has no room for.
    async fn resize_vm(&self, _ctx: &OpContext, args: ResizeVm) -> Result<ResizedVm> {
        if !self.declared.resize {
            return Err(Error::unsupported(
                &self.name,
                Operation::ResizeVm,
                "resize",
                "",
            ));
        }
        self.simulate(Operation::ResizeVm, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let t = &*self.on_member(s, &args.target);
            let key = locate_key(s, t)?.ok_or_else(|| missing(t))?;
            let vm = s.vm(&t.host, &key).ok_or_else(|| missing(t))?.clone();
            let mut to = vm.resources;
            if let Some(d) = args.disk_gib {
                if d < to.disk_gib {
                    return Err(Error::invalid(
                        "disk_gib",
                        format!(
                            "is {d} GiB, below the disk's {} GiB; a disk never shrinks",
                            to.disk_gib
                        ),
                    ));
                }
                to.disk_gib = d;
            }
            to.vcpus = args.vcpus.unwrap_or(to.vcpus);
            to.memory_mib = args.memory_mib.unwrap_or(to.memory_mib);
            let host = s.host(&t.host)?;
            let (cpu, mem) = s.used(&t.host);
            let others = (
                cpu.saturating_sub(vm.resources.vcpus),
                mem.saturating_sub(vm.resources.memory_mib),
            );
            if !fits(host, others.0, others.1, &to) {
                return Err(Error::new(
                    ErrorKind::QuotaExceeded,
                    "the VM's host lacks room for its new size",
                )
                .with_detail(format!("host `{}`", t.host)));
            }
            s.set_resources(&t.host, &key, to);
            Ok(ResizedVm::new(false))
        })
    }

    /// Writes or removes HCP's mark and nothing else: power, size, name, tags and snapshots
    /// stay as they are.
    async fn set_mark(&self, _ctx: &OpContext, args: SetMark) -> Result<MarkedVm> {
        if !self.declared.adopt {
            return Err(Error::unsupported(
                &self.name,
                Operation::AdoptVm,
                "adopt",
                "",
            ));
        }
        self.simulate(Operation::AdoptVm, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            let key = locate_key(s, &args.target)?.ok_or_else(|| missing(&args.target))?;
            let old = s
                .set_mark(&args.target.host, &key, args.mark.clone())
                .ok_or_else(|| missing(&args.target))?;
            Ok(MarkedVm::new(old.is_some()))
        })
    }

    async fn migrate_vm(&self, _ctx: &OpContext, args: MigrateVm) -> Result<MigratedVm> {
        let (declared, capability) = if args.cold {
            (self.declared.cold_migration, "cold_migration")
        } else {
            (self.declared.live_migration, "live_migration")
        };
        if !declared {
            return Err(Error::unsupported(
                &self.name,
                Operation::MigrateVm,
                capability,
                "",
            ));
        }
        self.simulate(Operation::MigrateVm, Some(&args.target.host), true)
            .await?;
        self.backend.write(|s| {
            s.host(&args.target_host)?.ensure_up()?;
            let vm = locate(s, &args.target)?
                .ok_or_else(|| missing(&args.target))?
                .clone();
            // As a hypervisor does: a cold move takes a stopped VM only.
            if args.cold && vm.power != PowerState::Stopped {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "a cold move needs a stopped VM; this one is running",
                )
                .with_detail(format!("VM {}", vm.native_id)));
            }
            let dest = s.host(&args.target_host)?;
            let (cpu, mem) = s.used(&args.target_host);
            if !fits(dest, cpu, mem, &vm.resources) {
                return Err(Error::new(
                    ErrorKind::QuotaExceeded,
                    "the target host lacks room for the VM",
                )
                .with_detail(format!("host `{}`", args.target_host)));
            }
            s.remove_vm(&args.target.host, &vm.native_id);
            let id = vm.native_id.clone();
            s.insert_vm(&args.target_host, vm)?;
            Ok(MigratedVm::new(&args.target_host, id))
        })
    }
}
