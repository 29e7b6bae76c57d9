//! The Provider trait: the contract every hypervisor adapter implements, with one argument struct
//! and one reply struct per operation.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    Capabilities, Console, ConsoleKind, Error, HcpMark, JobId, LogEntry, Operation, PowerState,
    ProjectId, Resources, Result, VmId,
};

/// Names a provider instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// The instance name from the hosts file (`hyperv-east`).
    pub name: String,
    /// The provider kind (`sim`, `libvirt`, `hyperv`, ...).
    pub kind: String,
    /// A free-form version of the provider or its remote endpoint.
    pub version: String,
}

/// A hypervisor adapter: reports capabilities and inventory and performs operations on VMs.
///
/// Used as `Arc<dyn Provider>`. The engine checks capabilities before calling, runs each job's
/// calls within the job's timeout and retry policy, caps concurrent jobs per host, adds error
/// context, and never runs two operations on one VM at once; [`crate::layer`] adds per-call
/// retry, timeout (with cancellation), concurrency limits and fault injection as wrappers around
/// any provider. Providers only do the work, stop when their [`OpContext`] is cancelled, and
/// classify their remote errors (in one `parse_error`) into [`crate::ErrorKind`]s, marking the
/// ones worth retrying temporary.
///
/// Every VM a provider creates carries HCP's [`HcpMark`] on the hypervisor itself (notes,
/// metadata, tags), and inventory reports it back, so an HCP started with an empty store rebuilds
/// its VMs from the hosts.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug + 'static {
    /// Returns the provider's name, kind and version.
    fn info(&self) -> ProviderInfo;

    /// Returns what the provider can do; hosts may narrow it in [`HostInfo::capabilities`].
    fn capabilities(&self) -> Capabilities;

    /// Checks the name a new snapshot would get against the hypervisor's own rules (length,
    /// characters), so the engine refuses a name the hypervisor would reject before any job
    /// exists.
    ///
    /// # Behavior
    /// The engine calls it when a snapshot is requested, after its own check (a DNS label) and
    /// before the request is accepted; the provider's `snapshot_vm` applies the same rule
    /// again. The default accepts every name.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming `name` and saying which names the hypervisor
    /// takes.
    fn check_snapshot_name(&self, _name: &str) -> Result<()> {
        Ok(())
    }

    /// Returns the most snapshots the hypervisor keeps for one VM, when it has such a limit
    /// (Hyper-V: 50 checkpoints), so the engine refuses one more before any job exists.
    ///
    /// # Behavior
    /// The engine allows the smaller of this and `engine.max_snapshots_per_vm`. The default
    /// declares no limit.
    fn max_snapshots_per_vm(&self) -> Option<u32> {
        None
    }

    /// Refines the engine's resize plan ([`crate::plan_resize`], one row per changed field)
    /// with what only this provider knows of its VMs in power state `power`, so a change it
    /// cannot make as planned is refused (or planned with a stop) before any job exists.
    ///
    /// # Behavior
    /// May raise a row's impact and say why (Hyper-V: a generation 1 VM's disk grows only while
    /// the VM is off); never lowers one. The default leaves the plan as it is.
    fn refine_resize_plan(&self, _power: crate::PowerState, _plan: &mut [crate::FieldPlan]) {}

    /// Lists the provider's placement targets: hosts, and clusters whose provider picks the host.
    ///
    /// # Behavior
    /// Lists every configured target, reachable or not; reachability shows in
    /// [`Provider::host_inventory`]. A host inside a cluster target is not listed on its own: the
    /// cluster's [`HostInfo::members`] names it, and the engine places on the cluster.
    async fn list_hosts(&self) -> Result<Vec<HostInfo>>;

    /// Reads one target's inventory: capacity, VMs with power state and HCP mark, images,
    /// networks.
    ///
    /// # Behavior
    /// Reports every VM on the host, HCP's and others; VMs without a mark have `mark: None`. For
    /// a cluster target it reports the VMs of every member host (each with [`NativeVm::host`]
    /// set), the aggregate capacity, and each member's own capacity in
    /// [`HostInventoryReply::members`].
    ///
    /// # Errors
    /// [`crate::ErrorKind::ProviderUnavailable`] (temporary) when the host cannot be reached;
    /// [`crate::ErrorKind::NotFound`] for an unknown host.
    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply>;

    /// Creates a VM on the target `args.host` and starts it when `args.start` is set.
    ///
    /// # Behavior
    /// Records `args.mark` on the VM. Creating a VM whose mark (vm id) already exists on the host
    /// returns that VM instead of a second one, so a retried create never duplicates. On a
    /// cluster target the provider (or the hypervisor's own scheduler) chooses a member host
    /// with room for the whole VM, and the reply names it in [`CreatedVm::host`].
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] when another VM on the host has the name;
    /// [`crate::ErrorKind::QuotaExceeded`] when the host lacks capacity;
    /// [`crate::ErrorKind::NotFound`] for an unknown image on the host.
    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm>;

    /// Deletes a VM and its disks.
    ///
    /// # Behavior
    /// Deleting a VM that is already gone succeeds (`existed: false`). A running VM is refused
    /// unless `args.force` is set, which powers it off first.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] when the VM runs and `force` is not set.
    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm>;

    /// Powers a VM on.
    ///
    /// # Behavior
    /// Starting a running VM succeeds (`was_running: true`).
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the VM does not exist.
    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm>;

    /// Powers a VM off: a graceful shutdown for up to `args.graceful_timeout`, then a hard
    /// power-off; immediately hard when `args.force` is set.
    ///
    /// # Behavior
    /// Stopping a stopped VM succeeds (`was_stopped: true`).
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the VM does not exist.
    async fn stop_vm(&self, ctx: &OpContext, args: StopVm) -> Result<StoppedVm>;

    /// Restarts a running VM (a guest reboot, or a reset when `args.hard`).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Conflict`] when the VM is not running;
    /// [`crate::ErrorKind::NotFound`] when it does not exist.
    async fn reboot_vm(&self, ctx: &OpContext, args: RebootVm) -> Result<RebootedVm>;

    /// Describes a console connection to a VM, valid until its `expires_at`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the VM does not exist;
    /// [`crate::ErrorKind::Conflict`] when it is not running.
    async fn console(&self, args: GetConsole) -> Result<Console>;

    /// Takes a snapshot. The engine calls it only when the host declares `snapshot`.
    ///
    /// # Errors
    /// The default refuses with [`crate::ErrorKind::FeatureNotSupported`].
    async fn snapshot_vm(&self, _ctx: &OpContext, _args: SnapshotVm) -> Result<SnapshottedVm> {
        Err(Error::unsupported(
            &self.info().name,
            Operation::SnapshotVm,
            "snapshot",
            "",
        ))
    }

    /// Lists a VM's snapshots, oldest first. The engine calls it only when the host declares
    /// `snapshot`.
    ///
    /// # Behavior
    /// Reports every snapshot of the VM, HCP's and others, with the name it was taken with.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the VM does not exist; the default refuses with
    /// [`crate::ErrorKind::FeatureNotSupported`].
    async fn list_snapshots(&self, _args: ListSnapshots) -> Result<Vec<NativeSnapshot>> {
        Err(Error::unsupported(
            &self.info().name,
            Operation::ListSnapshots,
            "snapshot",
            "HCP does not manage this provider's existing snapshots yet",
        ))
    }

    /// Returns a VM to the snapshot named `args.name`. The engine calls it only when the host
    /// declares `snapshot`.
    ///
    /// # Behavior
    /// A snapshot that holds memory state brings the VM back running where it was; a disk-only
    /// snapshot leaves it stopped. The reply says which.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the VM or the snapshot does not exist; the default
    /// refuses with [`crate::ErrorKind::FeatureNotSupported`].
    async fn revert_snapshot(
        &self,
        _ctx: &OpContext,
        _args: RevertSnapshot,
    ) -> Result<RevertedSnapshot> {
        Err(Error::unsupported(
            &self.info().name,
            Operation::RevertSnapshot,
            "snapshot",
            "HCP does not manage this provider's existing snapshots yet",
        ))
    }

    /// Deletes the snapshot named `args.name`, keeping the VM's current state.
    ///
    /// # Behavior
    /// Deleting a snapshot that is already gone succeeds (`existed: false`).
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the VM does not exist; the default refuses with
    /// [`crate::ErrorKind::FeatureNotSupported`].
    async fn delete_snapshot(
        &self,
        _ctx: &OpContext,
        _args: DeleteSnapshot,
    ) -> Result<DeletedSnapshot> {
        Err(Error::unsupported(
            &self.info().name,
            Operation::DeleteSnapshot,
            "snapshot",
            "HCP does not manage this provider's existing snapshots yet",
        ))
    }

    /// Changes a VM's size in place: each of `args.vcpus`, `args.memory_mib` and
    /// `args.disk_gib` that is set becomes the VM's new value. The engine calls it only when the
    /// host declares `resize`, and only with the changes its planner ([`crate::plan_resize`])
    /// found possible in the VM's power state and the caller allowed.
    ///
    /// # Behavior
    /// Applies what the hypervisor can do in the VM's current power state and no more: it never
    /// powers the VM off or restarts it (the engine's job does that when the plan needs it). A
    /// stopped VM takes every change at once. On a running VM a change the hypervisor makes
    /// live takes effect at once; one it can only write to the VM's definition is written there
    /// and the reply says `restart_needed`. A size equal to the current one is no change. A disk
    /// is never shrunk.
    ///
    /// # Errors
    /// [`crate::ErrorKind::InvalidSpec`] naming `disk_gib` for a disk smaller than the current
    /// one; [`crate::ErrorKind::Conflict`] for a change the hypervisor cannot make while the VM
    /// runs; [`crate::ErrorKind::NotFound`] when the VM does not exist; the default refuses with
    /// [`crate::ErrorKind::FeatureNotSupported`].
    async fn resize_vm(&self, _ctx: &OpContext, _args: ResizeVm) -> Result<ResizedVm> {
        Err(Error::unsupported(
            &self.info().name,
            Operation::ResizeVm,
            "resize",
            "this provider cannot change a VM's size in place yet",
        ))
    }

    /// Writes HCP's mark on an existing VM (`args.mark` set), or removes it (`None`). The
    /// engine calls it only when the host declares `adopt`, to adopt a VM created outside HCP
    /// or to release one.
    ///
    /// # Behavior
    /// Changes nothing else on the VM: power state, size, disks, name and tags stay as they
    /// are, and a running VM keeps running. Writing the mark the VM already carries, or
    /// removing a mark it does not carry, succeeds.
    ///
    /// # Errors
    /// [`crate::ErrorKind::NotFound`] when the VM does not exist; the default refuses with
    /// [`crate::ErrorKind::FeatureNotSupported`].
    async fn set_mark(&self, _ctx: &OpContext, _args: SetMark) -> Result<MarkedVm> {
        Err(Error::unsupported(
            &self.info().name,
            Operation::AdoptVm,
            "adopt",
            "this provider cannot write HCP's mark on an existing VM yet",
        ))
    }

    /// Moves a VM to another host: a running VM live (the engine calls it so only when the
    /// host declares `live_migration`), or, with [`MigrateVm::cold`], a stopped VM (only when
    /// the host declares `cold_migration`; the engine stops the VM first and starts it again
    /// on the target).
    ///
    /// # Errors
    /// The default refuses with [`crate::ErrorKind::FeatureNotSupported`].
    async fn migrate_vm(&self, _ctx: &OpContext, _args: MigrateVm) -> Result<MigratedVm> {
        Err(Error::unsupported(
            &self.info().name,
            Operation::MigrateVm,
            "live_migration",
            "",
        ))
    }
}

/// Receives a running operation's log lines and progress (the engine writes them to the job).
pub trait JobReporter: Send + Sync {
    /// Appends a log line.
    fn log(&self, entry: LogEntry);
    /// Sets progress, 0–100.
    fn progress(&self, percent: u8);
}

/// What a provider operation knows about its job, where it reports progress, and whether it
/// has been asked to stop.
///
/// A call whose context is cancelled (its job was cancelled or ran out of time, or a
/// [`crate::layer::TimeoutLayer`] gave up on it) should stop at its next safe point and return
/// [`crate::ErrorKind::Cancelled`]; a provider that cannot interrupt its hypervisor's call
/// returns when that call ends.
#[derive(Clone)]
pub struct OpContext {
    job_id: Option<JobId>,
    reporter: Option<Arc<dyn JobReporter>>,
    cancel: tokio_util::sync::CancellationToken,
}

impl fmt::Debug for OpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpContext")
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

impl OpContext {
    /// Creates a context that reports to `reporter` for job `job_id`.
    pub fn new(job_id: JobId, reporter: Arc<dyn JobReporter>) -> Self {
        Self::for_job(job_id, reporter, tokio_util::sync::CancellationToken::new())
    }

    /// Creates a context for job `job_id` that `cancel` cancels (the engine's worker: the job's
    /// own token, without a second one made and replaced).
    pub(crate) fn for_job(
        job_id: JobId,
        reporter: Arc<dyn JobReporter>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Self {
        OpContext {
            job_id: Some(job_id),
            reporter: Some(reporter),
            cancel,
        }
    }

    /// Creates a context that reports nowhere (tests, direct calls).
    pub fn detached() -> Self {
        OpContext {
            job_id: None,
            reporter: None,
            cancel: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Makes `token` this context's cancellation: cancelling it asks the call to stop.
    pub fn with_cancellation(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Returns a context for a nested call: the same job and reporter, cancelled when this
    /// one is and also on its own through [`OpContext::cancel`].
    pub fn child(&self) -> Self {
        OpContext {
            job_id: self.job_id.clone(),
            reporter: self.reporter.clone(),
            cancel: self.cancel.child_token(),
        }
    }

    /// Asks the call running with this context (and its children) to stop.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Returns whether the call has been asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the call is asked to stop; providers `select!` on it around waits.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Returns the job id, when the call runs as a job.
    pub fn job_id(&self) -> Option<&JobId> {
        self.job_id.as_ref()
    }

    /// Appends an info line to the job log; tenants read it, so it must not name hosts, native
    /// ids, paths or provider URLs (use [`OpContext::log`] with a detail for those).
    pub fn info(&self, message: impl Into<String>) {
        self.log(LogEntry::info(message));
    }

    /// Appends a warning line to the job log; tenants read it, as with [`OpContext::info`].
    pub fn warn(&self, message: impl Into<String>) {
        self.log(LogEntry::warn(message));
    }

    /// Appends a line to the job log, with its audience and operator detail as `entry` says.
    pub fn log(&self, entry: LogEntry) {
        if let Some(r) = &self.reporter {
            r.log(entry);
        }
    }

    /// Sets the job's progress, 0–100.
    pub fn progress(&self, percent: u8) {
        if let Some(r) = &self.reporter {
            r.progress(percent.min(100));
        }
    }
}

/// Whether a placement target is one host or a cluster of hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// One host: HCP chooses it, and the VM is created there.
    #[default]
    Host,
    /// A cluster: HCP chooses it, and the provider (or the hypervisor's own scheduler, such as
    /// vSphere DRS) chooses the member host.
    Cluster,
}

impl TargetKind {
    /// Returns the stable name (`host`, `cluster`).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Host => "host",
            TargetKind::Cluster => "cluster",
        }
    }
}

/// A placement target as its provider describes it: a host, or a cluster of hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostInfo {
    /// The target name, unique within the provider (a host's or a cluster's name).
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Total vCPUs it offers to VMs; a cluster's is the sum over its members.
    pub vcpus_total: u32,
    /// Total memory it offers to VMs, in MiB; a cluster's is the sum over its members.
    pub memory_mib_total: u64,
    /// What this target can do; the engine narrows the provider's capabilities with it.
    pub capabilities: Capabilities,
    /// A host or a cluster.
    #[serde(default)]
    pub kind: TargetKind,
    /// The hosts inside a cluster target (operators' views); empty for a host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The catalog images this target serves, each with what VMs made from it can do; `None`
    /// when the provider does not say, and then placement assumes any image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<ImageOffer>>,
    /// The catalog networks VMs on this target can attach to; `None` when the provider does
    /// not say, and then placement assumes any network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
}

/// One image a placement target serves, with the capabilities of the VMs made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageOffer {
    /// The catalog image name.
    pub name: String,
    /// What VMs of this image can do, narrowing the target's own capabilities (a template
    /// without cloud-init: `cloud_init: false`); `None` leaves the target's as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

impl ImageOffer {
    /// Offers the image `name` with the target's capabilities.
    pub fn new(name: impl Into<String>) -> Self {
        ImageOffer {
            name: name.into(),
            capabilities: None,
        }
    }

    /// Narrows what VMs of this image can do to `capabilities`.
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }
}

impl HostInfo {
    /// Describes a host.
    pub fn new(
        name: impl Into<String>,
        zone: impl Into<String>,
        vcpus_total: u32,
        memory_mib_total: u64,
        capabilities: Capabilities,
    ) -> Self {
        HostInfo {
            name: name.into(),
            zone: zone.into(),
            vcpus_total,
            memory_mib_total,
            capabilities,
            kind: TargetKind::Host,
            members: Vec::new(),
            images: None,
            networks: None,
        }
    }

    /// Reports the images this target serves (placement then skips it for any other image).
    pub fn with_images(mut self, images: Vec<ImageOffer>) -> Self {
        self.images = Some(images);
        self
    }

    /// Reports the networks this target's VMs can attach to (placement then skips it for a VM
    /// asking for another network).
    pub fn with_networks(mut self, networks: Vec<String>) -> Self {
        self.networks = Some(networks);
        self
    }

    /// Returns whether the target serves `image`: `None` when it does not report its images.
    pub fn serves_image(&self, image: &str) -> Option<bool> {
        self.images
            .as_ref()
            .map(|images| images.iter().any(|i| i.name == image))
    }

    /// Returns whether VMs here can attach to `network`: `None` when it does not report its
    /// networks.
    pub fn serves_network(&self, network: &str) -> Option<bool> {
        self.networks
            .as_ref()
            .map(|networks| networks.iter().any(|n| n == network))
    }

    /// Returns what VMs of `image` can do here: `capabilities` narrowed by the image's own,
    /// when the target reports that image with capabilities.
    pub fn image_capabilities(&self, capabilities: Capabilities, image: &str) -> Capabilities {
        self.images
            .iter()
            .flatten()
            .find(|i| i.name == image)
            .and_then(|i| i.capabilities)
            .map_or(capabilities, |c| capabilities.narrow(c))
    }

    /// Makes this target a cluster of the hosts `members`; its totals should be their sums.
    pub fn with_members(mut self, members: Vec<String>) -> Self {
        self.kind = TargetKind::Cluster;
        self.members = members;
        self
    }

    /// Returns true for a cluster target.
    pub fn is_cluster(&self) -> bool {
        self.kind == TargetKind::Cluster
    }
}

/// One member host of a cluster target, with its own capacity (a VM must fit one host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemberHost {
    /// The host name.
    pub name: String,
    /// False when the host cannot take VMs now (down, disconnected, in maintenance).
    pub available: bool,
    /// Total vCPUs it offers to VMs.
    pub vcpus_total: u32,
    /// Total memory it offers to VMs, in MiB.
    pub memory_mib_total: u64,
    /// vCPUs allocated to VMs on it.
    pub vcpus_used: u32,
    /// Memory allocated to VMs on it, in MiB.
    pub memory_mib_used: u64,
}

impl MemberHost {
    /// Describes an available member host with nothing used yet.
    pub fn new(name: impl Into<String>, vcpus_total: u32, memory_mib_total: u64) -> Self {
        MemberHost {
            name: name.into(),
            available: true,
            vcpus_total,
            memory_mib_total,
            vcpus_used: 0,
            memory_mib_used: 0,
        }
    }

    /// Sets what its VMs use.
    pub fn with_used(mut self, vcpus_used: u32, memory_mib_used: u64) -> Self {
        self.vcpus_used = vcpus_used;
        self.memory_mib_used = memory_mib_used;
        self
    }

    /// Sets whether it can take VMs now.
    pub fn with_available(mut self, available: bool) -> Self {
        self.available = available;
        self
    }

    /// Returns the vCPUs and memory free on it; zero on an overcommitted host.
    pub fn free(&self) -> (u32, u64) {
        (
            self.vcpus_total.saturating_sub(self.vcpus_used),
            self.memory_mib_total.saturating_sub(self.memory_mib_used),
        )
    }
}

/// Arguments of [`Provider::host_inventory`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostInventory {
    /// The host to read.
    pub host: String,
}

impl HostInventory {
    /// Reads `host`.
    pub fn new(host: impl Into<String>) -> Self {
        HostInventory { host: host.into() }
    }
}

/// A VM as the hypervisor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NativeVm {
    /// The hypervisor's id.
    pub native_id: String,
    /// The hypervisor's name for it.
    pub name: String,
    /// Its power state.
    pub power: PowerState,
    /// Its size.
    pub resources: Resources,
    /// HCP's mark, when HCP created it.
    pub mark: Option<HcpMark>,
    /// Its tags, where the provider stores them.
    pub tags: BTreeMap<String, String>,
    /// The member host it runs on, when it is in a cluster target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl NativeVm {
    /// Describes a VM.
    pub fn new(
        native_id: impl Into<String>,
        name: impl Into<String>,
        power: PowerState,
        resources: Resources,
        mark: Option<HcpMark>,
    ) -> Self {
        NativeVm {
            native_id: native_id.into(),
            name: name.into(),
            power,
            resources,
            mark,
            tags: BTreeMap::new(),
            host: None,
        }
    }

    /// Sets the tags.
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }

    /// Sets the member host it runs on (VMs of a cluster target).
    pub fn with_host(mut self, host: Option<String>) -> Self {
        self.host = host;
        self
    }
}

/// Reply of [`Provider::host_inventory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostInventoryReply {
    /// The host.
    pub host: HostInfo,
    /// vCPUs allocated to VMs on it.
    pub vcpus_used: u32,
    /// Memory allocated to VMs on it, in MiB.
    pub memory_mib_used: u64,
    /// Every VM on the host.
    pub vms: Vec<NativeVm>,
    /// Images (templates, base volumes) available on it, for operators' views. Placement reads
    /// [`HostInfo::images`], and this list only when that is `None` and this is not empty.
    pub images: Vec<String>,
    /// Networks (switches, bridges) available on it, for operators' views; placement reads
    /// [`HostInfo::networks`].
    pub networks: Vec<String>,
    /// A cluster target's member hosts with their own capacity; empty for a host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberHost>,
}

impl HostInventoryReply {
    /// Builds a reply; used resources are summed from `vms`. The sizes come from the host, so
    /// the sums saturate rather than wrap: a total past the integer range reads as a full host.
    pub fn new(host: HostInfo, vms: Vec<NativeVm>) -> Self {
        let vcpus_used = vms
            .iter()
            .fold(0u32, |sum, v| sum.saturating_add(v.resources.vcpus));
        let memory_mib_used = vms
            .iter()
            .fold(0u64, |sum, v| sum.saturating_add(v.resources.memory_mib));
        HostInventoryReply {
            host,
            vcpus_used,
            memory_mib_used,
            vms,
            images: Vec::new(),
            networks: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Sets a cluster target's member hosts.
    pub fn with_members(mut self, members: Vec<MemberHost>) -> Self {
        self.members = members;
        self
    }

    /// Sets the images.
    pub fn with_images(mut self, images: Vec<String>) -> Self {
        self.images = images;
        self
    }

    /// Sets the networks.
    pub fn with_networks(mut self, networks: Vec<String>) -> Self {
        self.networks = networks;
        self
    }
}

/// One network attachment, resolved from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPlan {
    /// The catalog network name.
    pub network: String,
    /// Its VLAN id, if tagged.
    pub vlan: Option<u16>,
}

/// Which VM an operation targets: HCP's id, its name and the host, plus the native id when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmTarget {
    /// HCP's id (found through the mark when `native_id` is absent).
    pub vm_id: VmId,
    /// The VM name.
    pub name: String,
    /// The host it lives on.
    pub host: String,
    /// The hypervisor's id, when known.
    pub native_id: Option<String>,
}

/// Arguments of [`Provider::create_vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateVm {
    /// HCP's id for the new VM.
    pub vm_id: VmId,
    /// The owning project.
    pub project: ProjectId,
    /// The placement target to create it on: a host, or a cluster whose provider picks the host.
    pub host: String,
    /// The VM name.
    pub name: String,
    /// The image.
    pub image: String,
    /// The size.
    pub resources: Resources,
    /// Networks to attach.
    pub networks: Vec<NetworkPlan>,
    /// Tags (only when the provider declares `tags`).
    pub tags: BTreeMap<String, String>,
    /// Cloud-init user-data (only when the host declares `cloud_init`).
    pub user_data: Option<String>,
    /// The mark to record on the VM.
    pub mark: HcpMark,
    /// Starts the VM once created.
    pub start: bool,
    /// On a cluster target, the member host the VM must run on (HCP chose it to keep the VM's
    /// server group's policy per host); `None` lets the cluster pick. A provider with cluster
    /// targets must honour it or fail the create.
    pub member_host: Option<String>,
}

impl CreateVm {
    /// Creates the arguments; `start` defaults to true.
    pub fn new(
        mark: HcpMark,
        host: impl Into<String>,
        name: impl Into<String>,
        image: impl Into<String>,
        resources: Resources,
    ) -> Self {
        CreateVm {
            vm_id: mark.vm_id.clone(),
            project: mark.project.clone(),
            host: host.into(),
            name: name.into(),
            image: image.into(),
            resources,
            networks: Vec::new(),
            tags: BTreeMap::new(),
            user_data: None,
            mark,
            start: true,
            member_host: None,
        }
    }

    /// Sets the networks.
    pub fn with_networks(mut self, networks: Vec<NetworkPlan>) -> Self {
        self.networks = networks;
        self
    }

    /// Sets the tags.
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }

    /// Sets the user-data.
    pub fn with_user_data(mut self, user_data: Option<String>) -> Self {
        self.user_data = user_data;
        self
    }

    /// Sets whether to start the VM once created.
    pub fn with_start(mut self, start: bool) -> Self {
        self.start = start;
        self
    }

    /// Pins the member host of a cluster target the VM must run on.
    pub fn with_member_host(mut self, member_host: Option<String>) -> Self {
        self.member_host = member_host;
        self
    }
}

/// Reply of [`Provider::create_vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreatedVm {
    /// The hypervisor's id for the new VM.
    pub native_id: String,
    /// Its power state after the call.
    pub power: PowerState,
    /// The member host it landed on, when created on a cluster target.
    pub host: Option<String>,
}

impl CreatedVm {
    /// Builds the reply.
    pub fn new(native_id: impl Into<String>, power: PowerState) -> Self {
        CreatedVm {
            native_id: native_id.into(),
            power,
            host: None,
        }
    }

    /// Names the member host the VM landed on (creates on a cluster target).
    pub fn with_host(mut self, host: Option<String>) -> Self {
        self.host = host;
        self
    }
}

macro_rules! target_args {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct $name {
            /// The VM.
            pub target: VmTarget,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $name {
            /// Targets `target` with default options.
            pub fn new(target: VmTarget) -> Self {
                $name { target, $($field: $default,)* }
            }
        }
    };
}

target_args!(
    /// Arguments of [`Provider::delete_vm`].
    DeleteVm {
        /// Powers a running VM off first instead of refusing.
        force: bool = false,
    }
);
target_args!(
    /// Arguments of [`Provider::start_vm`].
    StartVm {}
);
target_args!(
    /// Arguments of [`Provider::stop_vm`].
    StopVm {
        /// Skips the graceful shutdown.
        force: bool = false,
        /// How long the graceful shutdown may take before a hard power-off.
        graceful_timeout: Duration = Duration::from_secs(60),
    }
);
target_args!(
    /// Arguments of [`Provider::reboot_vm`].
    RebootVm {
        /// Resets instead of asking the guest to reboot.
        hard: bool = false,
    }
);
target_args!(
    /// Arguments of [`Provider::console`].
    GetConsole {
        /// The console type wanted; the provider's preferred one when absent.
        kind: Option<ConsoleKind> = None,
    }
);
target_args!(
    /// Arguments of [`Provider::snapshot_vm`].
    SnapshotVm {
        /// The snapshot name.
        name: String = String::new(),
    }
);
target_args!(
    /// Arguments of [`Provider::migrate_vm`].
    MigrateVm {
        /// The host to move to.
        target_host: String = String::new(),
        /// Moves the VM while it is stopped (a cold move) instead of live.
        cold: bool = false,
    }
);

target_args!(
    /// Arguments of [`Provider::resize_vm`]: the sizes to change; `None` keeps the current one.
    ResizeVm {
        /// The new vCPU count.
        vcpus: Option<u32> = None,
        /// The new memory size, in MiB.
        memory_mib: Option<u64> = None,
        /// The new disk size, in GiB; never below the current one.
        disk_gib: Option<u64> = None,
    }
);

target_args!(
    /// Arguments of [`Provider::set_mark`]: the mark to write, or `None` to remove it.
    SetMark {
        /// HCP's mark; `None` removes the one the VM carries.
        mark: Option<HcpMark> = None,
    }
);

impl SetMark {
    /// Sets the mark to write (`None` removes it).
    pub fn with_mark(mut self, mark: Option<HcpMark>) -> Self {
        self.mark = mark;
        self
    }
}

/// Reply of [`Provider::set_mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MarkedVm {
    /// True when the VM carried a mark before the call.
    pub was_marked: bool,
}

impl MarkedVm {
    /// Builds the reply.
    pub fn new(was_marked: bool) -> Self {
        MarkedVm { was_marked }
    }
}

impl ResizeVm {
    /// Sets the new vCPU count.
    pub fn with_vcpus(mut self, vcpus: Option<u32>) -> Self {
        self.vcpus = vcpus;
        self
    }

    /// Sets the new memory size, in MiB.
    pub fn with_memory_mib(mut self, memory_mib: Option<u64>) -> Self {
        self.memory_mib = memory_mib;
        self
    }

    /// Sets the new disk size, in GiB.
    pub fn with_disk_gib(mut self, disk_gib: Option<u64>) -> Self {
        self.disk_gib = disk_gib;
        self
    }
}

/// Reply of [`Provider::resize_vm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResizedVm {
    /// True when part of the change waits in the VM's definition for its next restart.
    pub restart_needed: bool,
}

impl ResizedVm {
    /// Builds the reply.
    pub fn new(restart_needed: bool) -> Self {
        ResizedVm { restart_needed }
    }
}

target_args!(
    /// Arguments of [`Provider::list_snapshots`].
    ListSnapshots {}
);
target_args!(
    /// Arguments of [`Provider::revert_snapshot`].
    RevertSnapshot {
        /// The snapshot's name.
        name: String = String::new(),
    }
);
target_args!(
    /// Arguments of [`Provider::delete_snapshot`].
    DeleteSnapshot {
        /// The snapshot's name.
        name: String = String::new(),
    }
);

impl RevertSnapshot {
    /// Sets the snapshot's name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl DeleteSnapshot {
    /// Sets the snapshot's name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// One snapshot as the hypervisor reports it (an item of [`Provider::list_snapshots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NativeSnapshot {
    /// The name it was taken with (unique per VM).
    pub name: String,
    /// When it was taken, when the hypervisor says.
    pub created_at: Option<DateTime<Utc>>,
    /// True when it holds the VM's memory state (a revert resumes the running VM).
    pub memory: bool,
}

impl NativeSnapshot {
    /// Describes a snapshot.
    pub fn new(name: impl Into<String>, created_at: Option<DateTime<Utc>>, memory: bool) -> Self {
        NativeSnapshot {
            name: name.into(),
            created_at,
            memory,
        }
    }
}

/// Reply of [`Provider::revert_snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RevertedSnapshot {
    /// True when the snapshot's memory state was restored (the VM runs on from that moment).
    pub memory_kept: bool,
    /// The VM's power state after the revert.
    pub power: PowerState,
}

impl RevertedSnapshot {
    /// Builds the reply.
    pub fn new(memory_kept: bool, power: PowerState) -> Self {
        RevertedSnapshot { memory_kept, power }
    }
}

/// Reply of [`Provider::delete_snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeletedSnapshot {
    /// False when the snapshot was already gone.
    pub existed: bool,
}

impl DeletedSnapshot {
    /// Builds the reply.
    pub fn new(existed: bool) -> Self {
        DeletedSnapshot { existed }
    }
}

impl DeleteVm {
    /// Sets `force`.
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

impl StopVm {
    /// Sets `force`.
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Sets the graceful shutdown timeout.
    pub fn with_graceful_timeout(mut self, timeout: Duration) -> Self {
        self.graceful_timeout = timeout;
        self
    }
}

impl RebootVm {
    /// Sets `hard`.
    pub fn with_hard(mut self, hard: bool) -> Self {
        self.hard = hard;
        self
    }
}

impl GetConsole {
    /// Sets the wanted console type.
    pub fn with_kind(mut self, kind: Option<ConsoleKind>) -> Self {
        self.kind = kind;
        self
    }
}

impl SnapshotVm {
    /// Sets the snapshot name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl MigrateVm {
    /// Sets the target host.
    pub fn with_target_host(mut self, host: impl Into<String>) -> Self {
        self.target_host = host.into();
        self
    }

    /// Asks for a cold move of a stopped VM (`true`) or a live one (`false`, the default).
    pub fn with_cold(mut self, cold: bool) -> Self {
        self.cold = cold;
        self
    }
}

/// Reply of [`Provider::delete_vm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeletedVm {
    /// False when the VM was already gone.
    pub existed: bool,
}

impl DeletedVm {
    /// Builds the reply.
    pub fn new(existed: bool) -> Self {
        DeletedVm { existed }
    }
}

/// Reply of [`Provider::start_vm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartedVm {
    /// True when the VM was already running.
    pub was_running: bool,
}

impl StartedVm {
    /// Builds the reply.
    pub fn new(was_running: bool) -> Self {
        StartedVm { was_running }
    }
}

/// Reply of [`Provider::stop_vm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoppedVm {
    /// True when the VM was already stopped.
    pub was_stopped: bool,
    /// True when a hard power-off was needed.
    pub forced: bool,
}

impl StoppedVm {
    /// Builds the reply.
    pub fn new(was_stopped: bool, forced: bool) -> Self {
        StoppedVm {
            was_stopped,
            forced,
        }
    }
}

/// Reply of [`Provider::reboot_vm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RebootedVm {}

impl RebootedVm {
    /// Builds the reply.
    pub fn new() -> Self {
        RebootedVm {}
    }
}

/// Reply of [`Provider::snapshot_vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshottedVm {
    /// The hypervisor's id for the snapshot.
    pub snapshot_id: String,
}

impl SnapshottedVm {
    /// Builds the reply.
    pub fn new(snapshot_id: impl Into<String>) -> Self {
        SnapshottedVm {
            snapshot_id: snapshot_id.into(),
        }
    }
}

/// Reply of [`Provider::migrate_vm`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigratedVm {
    /// The host the VM now lives on.
    pub host: String,
    /// Its native id there.
    pub native_id: String,
}

impl MigratedVm {
    /// Builds the reply.
    pub fn new(host: impl Into<String>, native_id: impl Into<String>) -> Self {
        MigratedVm {
            host: host.into(),
            native_id: native_id.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_offers_serves_anything_and_one_with_offers_narrows_per_image() {
        let caps = Capabilities {
            cloud_init: true,
            snapshot: true,
            ..Default::default()
        };
        let plain = HostInfo::new("h", "z", 4, 4096, caps);
        assert_eq!(plain.serves_image("any"), None);
        assert_eq!(plain.serves_network("any"), None);
        assert_eq!(plain.image_capabilities(caps, "any"), caps);

        let no_ci = Capabilities {
            cloud_init: false,
            ..Capabilities::all()
        };
        let h = plain
            .with_images(vec![
                ImageOffer::new("ci"),
                ImageOffer::new("plain").with_capabilities(no_ci),
            ])
            .with_networks(vec!["lan".into()]);
        assert_eq!(h.serves_image("ci"), Some(true));
        assert_eq!(h.serves_image("other"), Some(false));
        assert_eq!(h.serves_network("lan"), Some(true));
        assert_eq!(h.serves_network("dmz"), Some(false));
        assert!(h.image_capabilities(caps, "ci").cloud_init);
        let narrowed = h.image_capabilities(caps, "plain");
        assert!(!narrowed.cloud_init && narrowed.snapshot, "{narrowed:?}");

        // A description written before targets reported offers still reads, as "not reported".
        let old = serde_json::json!({
            "name": "h", "zone": "z", "vcpus_total": 4, "memory_mib_total": 4096,
            "capabilities": {}
        });
        let read: HostInfo = serde_json::from_value(old).unwrap();
        assert_eq!(read.images, None);
        assert_eq!(read.networks, None);
        let round: HostInfo = serde_json::from_value(serde_json::to_value(&h).unwrap()).unwrap();
        assert_eq!(round, h);
    }
}
