//! # hcp-provider-vsphere
//!
//! HCP's VMware vSphere provider: VMs on the ESXi hosts of one vCenter, through vCenter's SOAP
//! API (vim25, `/sdk`) over HTTPS, with a session logged in with the password from a secret file
//! and the certificate checked against the system roots, a CA file or a pinned SHA-256
//! thumbprint. The SOAP layer is the crate's own ([`soap`]): request bodies for exactly the
//! calls HCP makes and typed readers of their replies, with XML namespaces resolved.
//!
//! - **Session**: one per provider; a `NotAuthenticated` fault (an expired or terminated
//!   session) logs in again and repeats the call, so the job does not fail; the session is
//!   logged out when the provider is dropped. Neither the password nor the session cookie
//!   appears in `Debug` output, logs, errors or job logs.
//! - **Inventory**: one `RetrievePropertiesEx` over a container view of the whole inventory,
//!   with only the properties HCP needs (VMs, templates, hosts with their cluster, port groups,
//!   datastores), paged with `ContinueRetrievePropertiesEx`: a constant number of round trips
//!   however many VMs exist. Templates are images; port groups are networks.
//! - **Create**: `CloneVM_Task` of the image's template into the host's cluster (its root
//!   resource pool), the configured or the host's first datastore and the template's folder,
//!   pinned to the host HCP placed the VM on (and relocated there if vCenter put it elsewhere);
//!   on a cluster target, DRS is asked first (`PlaceVm`, placement type `clone`, sized by the
//!   request) and the clone goes to the host, pool and datastore of its first recommendation,
//!   like a pinned host; when vCenter declines (no `PlaceVm`, DRS off: `InvalidState`, no
//!   recommendation) the job log says why and the clone goes into the cluster's root pool on a
//!   datastore every member sees with no host named, so vCenter places it, and the host is
//!   read back from `runtime.host`; either way the host is reported in the reply;
//!   then the clone is read back and `ReconfigVM_Task` sets what differs: vCPUs, memory, a
//!   grown first disk, one VMXNET3 NIC per requested network (standard or distributed port
//!   group; the template's NICs are replaced). HCP's mark (vm id, project, tags) is the
//!   `extraConfig` entry `hcp.mark`, so an HCP restarted with an empty store rebuilds
//!   ownership. Names are checked by HCP: vCenter allows two VMs of one name in different
//!   folders, and HCP does not.
//! - **Resize**: `ReconfigVM_Task` with `numCPUs`, `memoryMB` and the first disk grown (never
//!   shrunk). HCP's VMs have no CPU or memory hot-add, so vCPUs and memory change only while the
//!   VM is off (a running VM's change is refused with `Conflict`; the planner calls it
//!   `power_off` and HCP's job stops and starts the VM when the caller allows it); the disk
//!   grows live.
//! - **Tasks**: followed to their end with a property collector no concurrent watch shares
//!   (idle ones are reused; `WaitForUpdatesEx` on `info`), never by polling; progress goes into the job's progress and
//!   the task's messages into the operators' job log; a task past `task_timeout` is cancelled
//!   (`CancelTask`).
//! - **Power**: start; stop = `ShutdownGuest`, then `PowerOffVM_Task` when the guest has not
//!   powered off within the graceful timeout (watched through the property collector); stop
//!   with `force` = `PowerOffVM_Task`; reboot = `RebootGuest` (a reset, logged, where vCenter
//!   cannot ask the guest), or `ResetVM_Task` with `hard`; delete = `Destroy_Task`.
//! - **Snapshots**: take = `CreateSnapshot_Task` (disks only); list = the VM's `snapshot` tree
//!   flattened, oldest first, with `layoutEx.snapshot` read alongside (a snapshot holds memory
//!   when the VM ran when it was taken and it has a memory file); revert =
//!   `RevertToSnapshot_Task`, then the VM's power state is read back; delete =
//!   `RemoveSnapshot_Task` without its children (they stay, re-parented). Snapshots are found
//!   by name; a name vCenter holds twice is a `Conflict`, not a guess.
//! - **Migration** between hosts (`RelocateVM_Task`) is declared and implemented.
//! - **Cloud-init**: for images whose template runs cloud-init (`cloud_init: true` in
//!   `images`), the user-data and a meta-data (instance id, host name) go into the clone's
//!   `extraConfig` as `guestinfo.userdata` / `guestinfo.metadata` (base64). `cloud_init` is
//!   declared when any image has it, and each target's inventory reports it per image
//!   ([`hcp_core::ImageOffer`]), so the engine refuses user-data on another image before a job
//!   exists (the create refuses it too).
//! - **Images and networks**: each target reports the catalog images whose templates vCenter
//!   has and the catalog networks over the port groups it reaches, so the engine refuses an
//!   image or a network no target of the zone has before a job exists.
//! - **Consoles**: [`Provider::console`] asks vCenter for a WebMKS ticket
//!   (`AcquireTicket("webmks")`) and answers a `webmks` console that HCP relays
//!   ([`console`]). `console_webmks` is declared only when the operator opts in with
//!   `console: webmks` in the settings: not every vCenter issues WebMKS tickets (the simulator
//!   answers `MethodNotFound`, which becomes `FeatureNotSupported`), and without the opt-in
//!   the engine refuses console requests before asking vCenter.
//! - **Errors**: SOAP faults are classified in one place, [`error::parse_error`]; host,
//!   datastore and cluster names and managed object ids stay out of tenants' messages.
//!
//! Placement targets are ESXi hosts (HCP picks one) and clusters (`clusters:` in the hosts
//! file; DRS picks the member host).
//!
//! ```no_run
//! # async fn demo() -> hcp_core::Result<()> {
//! let config = hcp_core::Config::from_file("examples/config/vsphere.yaml".as_ref())?;
//! let engine = hcp_provider_vsphere::register(hcp_core::Engine::builder(config))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```

mod client;
pub mod config;
pub mod console;
pub mod error;
pub mod mark;
pub mod soap;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use hcp_core::{
    Capabilities, Console, ConsoleKind, CreateVm, CreatedVm, DeleteSnapshot, DeleteVm,
    DeletedSnapshot, DeletedVm, Error, ErrorKind, GetConsole, HcpMark, HostInfo, HostInventory,
    HostInventoryReply, ImageOffer, ListSnapshots, LogEntry, MemberHost, MigrateVm, MigratedVm,
    NativeSnapshot, NativeVm, OpContext, Operation, PowerState, Provider, ProviderConfig,
    ProviderInfo, RebootVm, RebootedVm, ResizeVm, ResizedVm, Resources, Result, RevertSnapshot,
    RevertedSnapshot, Secrets, SnapshotVm, SnapshottedVm, StartVm, StartedVm, StopVm, StoppedVm,
    TlsTrust, VmTarget,
};
use tokio::sync::Mutex;

use crate::client::Client;
pub use crate::config::{
    ClusterSettings, ConsoleOptIn, HostSettings, ImageSettings, VsphereSettings,
};
use crate::error::is_method_not_found;
use crate::soap::{ConfigSpec, MoRef, NicBacking, Node, ObjectContent, Placement};

/// The provider kind name used in hosts files.
pub const KIND: &str = "vsphere";

/// Most NICs vSphere gives one VM.
pub const MAX_NETWORKS: u32 = 10;

/// Registers the vSphere provider kind on an engine builder.
pub fn register(builder: hcp_core::EngineBuilder) -> hcp_core::EngineBuilder {
    builder.provider_kind(KIND, |c: &ProviderConfig, s: &Secrets| {
        let p: Arc<dyn Provider> = Arc::new(VsphereProvider::from_config(c, s)?);
        Ok(p)
    })
}

/// One ESXi host of a provider, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsphereHost {
    /// The host name HCP uses.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// The ESXi host's inventory name in vCenter.
    pub host: String,
    /// vCPUs to report while vCenter cannot be reached.
    pub vcpus: Option<u32>,
    /// Memory (MiB) to report while vCenter cannot be reached.
    pub memory_mib: Option<u64>,
}

impl VsphereHost {
    /// Describes host `name` in `zone`, the ESXi host `host` in vCenter.
    pub fn new(name: impl Into<String>, zone: impl Into<String>, host: impl Into<String>) -> Self {
        VsphereHost {
            name: name.into(),
            zone: zone.into(),
            host: host.into(),
            vcpus: None,
            memory_mib: None,
        }
    }
}

/// One cluster of a provider, as configured: a placement target whose VMs vCenter places (DRS,
/// or the cluster's own choice without DRS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsphereCluster {
    /// The name HCP uses (the placement target's name).
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// The cluster's (`ClusterComputeResource`) inventory name in vCenter.
    pub cluster: String,
}

impl VsphereCluster {
    /// Describes cluster `name` in `zone`, the cluster `cluster` in vCenter.
    pub fn new(
        name: impl Into<String>,
        zone: impl Into<String>,
        cluster: impl Into<String>,
    ) -> Self {
        VsphereCluster {
            name: name.into(),
            zone: zone.into(),
            cluster: cluster.into(),
        }
    }
}

/// The vSphere provider: the ESXi hosts and clusters of one vCenter.
pub struct VsphereProvider {
    name: String,
    settings: Arc<VsphereSettings>,
    client: Arc<Client>,
    /// vCenter's host name (without port), where a console ticket naming no host is served.
    vcenter_host: String,
    /// How vCenter's certificate is checked (a console on vCenter's host is checked alike).
    trust: TlsTrust,
    hosts: BTreeMap<String, VsphereHost>,
    /// Cluster targets by HCP name.
    clusters: BTreeMap<String, VsphereCluster>,
    declared: Capabilities,
    /// The inventory's container view and the session it belongs to.
    view: Mutex<Option<(u64, MoRef)>>,
    /// The last names-and-templates read and when it started, shared by concurrent creates.
    names: Mutex<Option<(Instant, Arc<World>)>>,
}

impl std::fmt::Debug for VsphereProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cached inventory is large and the client holds the session: neither is shown.
        f.debug_struct("VsphereProvider")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("client", &self.client)
            .field("hosts", &self.hosts)
            .field("clusters", &self.clusters)
            .finish_non_exhaustive()
    }
}

/// The types and properties one inventory read asks for.
const VM_PROPS: [&str; 8] = [
    "name",
    "parent",
    "runtime.powerState",
    "runtime.host",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.extraConfig",
];
/// What a create needs of every VM: names (HCP checks them), and templates with their folders.
const VM_NAME_PROPS: [&str; 3] = ["name", "parent", "config.template"];
const HOST_PROPS: [&str; 6] = [
    "name",
    "parent",
    "summary.hardware.numCpuThreads",
    "summary.hardware.memorySize",
    "network",
    "datastore",
];
const COMPUTE_PROPS: [&str; 4] = [
    "name",
    "resourcePool",
    "summary.numCpuThreads",
    "summary.totalMemory",
];
const NAME_ONLY: [&str; 1] = ["name"];

/// A VM or template as the inventory read reports it.
#[derive(Debug, Clone)]
struct VmRow {
    moref: MoRef,
    name: String,
    parent: Option<MoRef>,
    power: PowerState,
    host: Option<MoRef>,
    template: bool,
    vcpus: u32,
    memory_mib: u64,
    mark: Option<(HcpMark, BTreeMap<String, String>)>,
}

impl VmRow {
    fn from_object(o: &ObjectContent) -> VmRow {
        let extra = o
            .get("config.extraConfig")
            .map(soap::extra_config)
            .unwrap_or_default();
        VmRow {
            moref: o.obj.clone(),
            name: o.text("name").unwrap_or("").to_string(),
            parent: o.moref("parent"),
            power: power_of(o.text("runtime.powerState")),
            host: o.moref("runtime.host"),
            template: o.text("config.template") == Some("true"),
            vcpus: o
                .text("config.hardware.numCPU")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            memory_mib: o
                .text("config.hardware.memoryMB")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            mark: mark::parse(&extra),
        }
    }

    fn is_ours(&self, mark: &HcpMark) -> bool {
        self.mark
            .as_ref()
            .is_some_and(|(m, _)| m.vm_id == mark.vm_id)
    }
}

/// An ESXi host as the inventory read reports it.
#[derive(Debug, Clone)]
struct HostRow {
    moref: MoRef,
    name: String,
    parent: Option<MoRef>,
    vcpus: u32,
    memory_mib: u64,
    networks: Vec<MoRef>,
    datastores: Vec<MoRef>,
}

/// Where DRS put a new VM: a host of the cluster, and the pool and datastore it named.
#[derive(Debug)]
struct DrsChoice<'w> {
    host: &'w HostRow,
    pool: Option<MoRef>,
    datastore: Option<MoRef>,
}

/// One read of vCenter's inventory.
#[derive(Debug, Default)]
struct World {
    vms: Vec<VmRow>,
    hosts: Vec<HostRow>,
    /// Compute resource (cluster or standalone host) → its name and root resource pool.
    computes: HashMap<MoRef, (String, Option<MoRef>)>,
    /// Compute resource → the CPU threads and memory (MiB) its summary reports.
    compute_sizes: HashMap<MoRef, (u32, u64)>,
    networks: Vec<(MoRef, String)>,
    datastores: Vec<(MoRef, String)>,
}

impl World {
    fn host(&self, name: &str) -> Option<&HostRow> {
        self.hosts.iter().find(|h| h.name == name)
    }

    fn host_by_ref(&self, r: &MoRef) -> Option<&HostRow> {
        self.hosts.iter().find(|h| &h.moref == r)
    }

    fn pool_of(&self, host: &HostRow) -> Option<MoRef> {
        host.parent
            .as_ref()
            .and_then(|c| self.computes.get(c))
            .and_then(|(_, p)| p.clone())
    }

    /// Finds a cluster (`ClusterComputeResource`) by its inventory name.
    fn cluster(&self, name: &str) -> Option<&MoRef> {
        self.computes
            .iter()
            .find(|(r, (n, _))| r.kind == "ClusterComputeResource" && n == name)
            .map(|(r, _)| r)
    }

    /// The ESXi hosts inside the compute resource `c`.
    fn members(&self, c: &MoRef) -> Vec<&HostRow> {
        self.hosts
            .iter()
            .filter(|h| h.parent.as_ref() == Some(c))
            .collect()
    }

    fn network_name(&self, r: &MoRef) -> Option<&str> {
        self.networks
            .iter()
            .find(|(n, _)| n == r)
            .map(|(_, s)| s.as_str())
    }

    /// Names tenants must not read: hosts, clusters, datastores.
    fn secret_names(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| h.name.clone())
            .chain(self.computes.values().map(|(n, _)| n.clone()))
            .chain(self.datastores.iter().map(|(_, n)| n.clone()))
            .collect()
    }
}

/// A VM row as HCP's inventory reports it.
fn native_vm(v: &VmRow) -> NativeVm {
    let (mark, tags) = match &v.mark {
        Some((m, t)) => (Some(m.clone()), t.clone()),
        None => (None, BTreeMap::new()),
    };
    NativeVm::new(
        &v.moref.value,
        &v.name,
        v.power,
        Resources {
            vcpus: v.vcpus,
            memory_mib: v.memory_mib,
            disk_gib: 0,
        },
        mark,
    )
    .with_tags(tags)
}

fn power_of(state: Option<&str>) -> PowerState {
    match state {
        Some("poweredOn") => PowerState::Running,
        Some("poweredOff") => PowerState::Stopped,
        Some("suspended") => PowerState::Paused,
        _ => PowerState::Unknown,
    }
}

/// Returns the host of an `https://host[:port]/path` URL, without the port (an IPv6 address
/// keeps its brackets).
fn url_host(url: &str) -> String {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(end) = authority.find(']') {
        return authority[..=end].to_string();
    }
    authority.split(':').next().unwrap_or("").to_string()
}

/// Checks the name a new snapshot is given.
fn snapshot_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.len() > 80 || name.contains(char::is_control) {
        return Err(Error::invalid(
            "name",
            "a vSphere snapshot name is 1-80 printable characters",
        ));
    }
    Ok(name)
}

/// Longest snapshot name a revert or delete looks up.
const MAX_SNAPSHOT_NAME: usize = 1024;

/// Checks the name a revert or delete looks up: matched exactly as listed (a snapshot taken
/// outside HCP may have any name vCenter allows).
fn listed_snapshot_name(name: &str) -> Result<&str> {
    if name.is_empty() || name.len() > MAX_SNAPSHOT_NAME {
        return Err(Error::invalid(
            "name",
            format!("a snapshot name is 1-{MAX_SNAPSHOT_NAME} bytes"),
        ));
    }
    Ok(name)
}

/// The ethernet card types vim25 knows (the template's NICs HCP replaces).
fn is_nic(device: &Node) -> bool {
    matches!(
        device.kind(),
        "VirtualE1000"
            | "VirtualE1000e"
            | "VirtualPCNet32"
            | "VirtualVmxnet"
            | "VirtualVmxnet2"
            | "VirtualVmxnet3"
            | "VirtualVmxnet3Vrdma"
            | "VirtualSriovEthernetCard"
    )
}

/// Returns the first disk grown to `gib`, when it is smaller.
fn grown_disk(devices: &Node, gib: u64) -> Option<Node> {
    let disk = devices
        .children
        .iter()
        .find(|d| d.kind() == "VirtualDisk")?;
    let want_kb = gib.checked_mul(1024 * 1024)?;
    let have_kb: u64 = disk.text_of("capacityInKB")?.parse().ok()?;
    if have_kb >= want_kb {
        return None;
    }
    let mut d = disk.clone();
    for c in &mut d.children {
        match c.name.as_str() {
            "capacityInKB" => c.text = want_kb.to_string(),
            "capacityInBytes" => c.text = (want_kb.saturating_mul(1024)).to_string(),
            _ => {}
        }
    }
    Some(d)
}

/// The `extraConfig` entries of cloud-init's VMware guestinfo datasource: the user-data and a
/// meta-data naming the instance (HCP's vm id) and its host name, both base64.
fn guestinfo(args: &CreateVm, user_data: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let metadata = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        args.vm_id, args.name
    );
    vec![
        ("guestinfo.userdata".into(), b64(user_data)),
        ("guestinfo.userdata.encoding".into(), "base64".into()),
        ("guestinfo.metadata".into(), b64(&metadata)),
        ("guestinfo.metadata.encoding".into(), "base64".into()),
    ]
}

impl VsphereProvider {
    /// Builds the provider from its section of the hosts file, reading the password file.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the bad setting or the file that cannot be read.
    pub fn from_config(config: &ProviderConfig, _secrets: &Secrets) -> Result<Self> {
        let settings = VsphereSettings::from_value(&config.name, &config.settings)?;
        let mut hosts = Vec::new();
        for h in &config.hosts {
            let s = HostSettings::from_value(&config.name, &h.name, &h.settings)?;
            let mut host = VsphereHost::new(&h.name, &h.zone, s.host.unwrap_or(h.name.clone()));
            host.vcpus = h.vcpus;
            host.memory_mib = h.memory_mib;
            hosts.push(host);
        }
        let mut clusters = Vec::new();
        for c in &config.clusters {
            let s = ClusterSettings::from_value(&config.name, &c.name, &c.settings)?;
            clusters.push(VsphereCluster::new(
                &c.name,
                &c.zone,
                s.cluster.unwrap_or(c.name.clone()),
            ));
        }
        Ok(VsphereProvider::new(&config.name, settings, hosts)?.with_clusters(clusters))
    }

    /// Adds cluster placement targets: HCP places a VM on the cluster, and vCenter picks its
    /// host (DRS, when the cluster runs it).
    pub fn with_clusters(mut self, clusters: Vec<VsphereCluster>) -> Self {
        let mut names: Vec<String> = clusters
            .iter()
            .flat_map(|c| [c.name.clone(), c.cluster.clone()])
            .collect();
        names.extend(
            self.hosts
                .values()
                .flat_map(|h| [h.host.clone(), h.name.clone()]),
        );
        names.extend(self.settings.datastore.clone());
        self.client.set_names(names);
        self.clusters = clusters.into_iter().map(|c| (c.name.clone(), c)).collect();
        self
    }

    /// Builds a provider named `name` over `hosts`. vCenter is not contacted until it is used.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] when the password or CA file cannot be read.
    pub fn new(name: &str, settings: VsphereSettings, hosts: Vec<VsphereHost>) -> Result<Self> {
        let conn = settings.connection(name)?;
        let client = Arc::new(Client::new(
            &conn,
            settings.request_timeout,
            settings.page_size,
        )?);
        client.set_names(
            hosts
                .iter()
                .flat_map(|h| [h.host.clone(), h.name.clone()])
                .chain(settings.datastore.clone())
                .collect(),
        );
        let declared = Capabilities {
            snapshot: true,
            live_migration: true,
            // RelocateVM_Task moves a powered-off VM as well (a cold migration).
            cold_migration: true,
            tags: true,
            resize: true,
            // Declared when an image's template takes user-data; create refuses the others.
            cloud_init: settings.images.values().any(|i| i.cloud_init),
            // Only an operator knows whether this vCenter issues WebMKS tickets.
            console_webmks: settings.console == Some(ConsoleOptIn::Webmks),
            max_networks: Some(MAX_NETWORKS),
            ..Default::default()
        };
        Ok(VsphereProvider {
            name: name.to_string(),
            settings: Arc::new(settings),
            client,
            vcenter_host: url_host(&conn.url),
            trust: conn.trust.clone(),
            hosts: hosts.into_iter().map(|h| (h.name.clone(), h)).collect(),
            clusters: BTreeMap::new(),
            declared,
            view: Mutex::new(None),
            names: Mutex::new(None),
        })
    }

    /// Returns the settings.
    pub fn settings(&self) -> &VsphereSettings {
        &self.settings
    }

    /// Returns how many times the provider has logged in to vCenter.
    pub fn logins(&self) -> u64 {
        self.client.logins()
    }

    /// Logs out of vCenter now (dropping the provider also does, in the background).
    ///
    /// # Errors
    /// Request errors.
    pub async fn shutdown(&self) -> Result<()> {
        self.client.logout().await
    }

    fn host(&self, name: &str) -> Result<&VsphereHost> {
        self.hosts
            .get(name)
            .ok_or_else(|| Error::not_found("host", name).with_context("provider", &self.name))
    }

    /// Reads the whole inventory in one property read over a container view kept for the
    /// session.
    async fn world(&self) -> Result<World> {
        self.read_world(&VM_PROPS).await
    }

    /// Reads the names and templates of every VM (and the hosts, clusters, port groups and
    /// datastores). Concurrent callers share reads: a caller takes a read that started after it
    /// asked, or makes one, so a burst of creates costs one or two reads, not one each.
    async fn names_and_templates(&self) -> Result<Arc<World>> {
        let asked = Instant::now();
        let mut slot = self.names.lock().await;
        if let Some((started, world)) = slot.as_ref()
            && *started >= asked
        {
            return Ok(world.clone());
        }
        let started = Instant::now();
        let world = Arc::new(self.read_world(&VM_NAME_PROPS).await?);
        *slot = Some((started, world.clone()));
        Ok(world)
    }

    /// Reads the inventory with only `vm_props` of each VM.
    async fn read_world(&self, vm_props: &[&str]) -> Result<World> {
        let props: [(&str, &[&str]); 5] = [
            ("VirtualMachine", vm_props),
            ("HostSystem", &HOST_PROPS),
            ("ComputeResource", &COMPUTE_PROPS),
            ("Network", &NAME_ONLY),
            ("Datastore", &NAME_ONLY),
        ];
        let mut retried = false;
        let objects = loop {
            let view = self.view().await?;
            match self.client.retrieve_view(&view, &props).await {
                // The view died with its session: make a new one once.
                Err(e) if e.kind() == ErrorKind::NotFound && !retried => {
                    retried = true;
                    *self.view.lock().await = None;
                }
                other => break other?,
            }
        };
        let mut w = World::default();
        for o in &objects {
            match o.obj.kind.as_str() {
                "VirtualMachine" => w.vms.push(VmRow::from_object(o)),
                "HostSystem" => w.hosts.push(HostRow {
                    moref: o.obj.clone(),
                    name: o.text("name").unwrap_or("").to_string(),
                    parent: o.moref("parent"),
                    vcpus: o
                        .text("summary.hardware.numCpuThreads")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0),
                    memory_mib: o
                        .text("summary.hardware.memorySize")
                        .and_then(|n| n.parse::<u64>().ok())
                        .map(|b| b / (1024 * 1024))
                        .unwrap_or(0),
                    networks: o.morefs("network"),
                    datastores: o.morefs("datastore"),
                }),
                "ComputeResource" | "ClusterComputeResource" => {
                    w.compute_sizes.insert(
                        o.obj.clone(),
                        (
                            o.text("summary.numCpuThreads")
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0),
                            o.text("summary.totalMemory")
                                .and_then(|n| n.parse::<u64>().ok())
                                .map(|b| b / (1024 * 1024))
                                .unwrap_or(0),
                        ),
                    );
                    w.computes.insert(
                        o.obj.clone(),
                        (
                            o.text("name").unwrap_or("").to_string(),
                            o.moref("resourcePool"),
                        ),
                    );
                }
                "Network" | "DistributedVirtualPortgroup" | "OpaqueNetwork" => w
                    .networks
                    .push((o.obj.clone(), o.text("name").unwrap_or("").to_string())),
                "Datastore" => w
                    .datastores
                    .push((o.obj.clone(), o.text("name").unwrap_or("").to_string())),
                _ => {}
            }
        }
        let mut names = w.secret_names();
        names.extend(self.hosts.values().map(|h| h.host.clone()));
        names.extend(
            self.clusters
                .values()
                .flat_map(|c| [c.name.clone(), c.cluster.clone()]),
        );
        self.client.set_names(names);
        Ok(w)
    }

    async fn view(&self) -> Result<MoRef> {
        let generation = self.client.generation().await?;
        let mut view = self.view.lock().await;
        if let Some((g, v)) = view.as_ref()
            && *g == generation
        {
            return Ok(v.clone());
        }
        let v = self
            .client
            .container_view(&[
                "VirtualMachine",
                "HostSystem",
                "ComputeResource",
                "Network",
                "Datastore",
            ])
            .await?;
        *view = Some((generation, v.clone()));
        Ok(v)
    }

    fn host_info(&self, h: &VsphereHost, row: Option<&HostRow>) -> HostInfo {
        let vcpus = row
            .map(|r| r.vcpus)
            .filter(|n| *n > 0)
            .or(h.vcpus)
            .unwrap_or(0);
        let memory = row
            .map(|r| r.memory_mib)
            .filter(|n| *n > 0)
            .or(h.memory_mib)
            .unwrap_or(0);
        let mut caps = self.declared;
        if vcpus > 0 {
            caps.max_vcpus = Some(vcpus);
        }
        if memory > 0 {
            caps.max_memory_mib = Some(memory);
        }
        HostInfo::new(&h.name, &h.zone, vcpus, memory, caps)
    }

    /// Describes a cluster target: capacity from the cluster's summary (its members' sums when
    /// the summary says nothing), its ESXi hosts as members, and per-VM limits from its largest
    /// member (a VM runs on one host).
    fn cluster_info(&self, c: &VsphereCluster, world: &World) -> HostInfo {
        let Some(r) = world.cluster(&c.cluster) else {
            return HostInfo::new(&c.name, &c.zone, 0, 0, self.declared).with_members(Vec::new());
        };
        let members = world.members(r);
        let (summary_vcpus, summary_memory) =
            world.compute_sizes.get(r).copied().unwrap_or_default();
        let vcpus = if summary_vcpus > 0 {
            summary_vcpus
        } else {
            members
                .iter()
                .fold(0u32, |sum, h| sum.saturating_add(h.vcpus))
        };
        let memory = if summary_memory > 0 {
            summary_memory
        } else {
            members
                .iter()
                .fold(0u64, |sum, h| sum.saturating_add(h.memory_mib))
        };
        let mut caps = self.declared;
        if let Some(n) = members.iter().map(|h| h.vcpus).max().filter(|n| *n > 0) {
            caps.max_vcpus = Some(n);
        }
        if let Some(n) = members
            .iter()
            .map(|h| h.memory_mib)
            .max()
            .filter(|n| *n > 0)
        {
            caps.max_memory_mib = Some(n);
        }
        HostInfo::new(&c.name, &c.zone, vcpus, memory, caps)
            .with_members(members.iter().map(|h| h.name.clone()).collect())
    }

    /// The catalog images vCenter's templates offer (and the templates by their own names).
    fn images(&self, world: &World) -> Vec<String> {
        let templates: Vec<&str> = world
            .vms
            .iter()
            .filter(|v| v.template)
            .map(|v| v.name.as_str())
            .collect();
        let mut images: Vec<String> = self
            .settings
            .images
            .iter()
            .filter(|(_, i)| templates.contains(&i.template.as_str()))
            .map(|(n, _)| n.clone())
            .chain(templates.iter().map(|t| t.to_string()))
            .collect();
        images.sort();
        images.dedup();
        images
    }

    /// Adds to a target's description what placement needs: the images whose templates vCenter
    /// has, each taking user-data only when its settings say `cloud_init: true`, and the
    /// networks over the port groups `groups` the target reaches.
    fn with_offers(&self, info: HostInfo, world: &World, groups: &[&str]) -> HostInfo {
        let images = self
            .images(world)
            .into_iter()
            .map(|name| {
                let caps = Capabilities {
                    cloud_init: self.settings.cloud_init(&name),
                    ..Capabilities::all()
                };
                ImageOffer::new(name).with_capabilities(caps)
            })
            .collect();
        info.with_images(images)
            .with_networks(self.networks(groups))
    }

    /// The catalog networks over the port groups `groups` (and the port groups by their names).
    fn networks(&self, groups: &[&str]) -> Vec<String> {
        let mut networks: Vec<String> = self
            .settings
            .networks
            .iter()
            .filter(|(_, pg)| groups.contains(&pg.as_str()))
            .map(|(n, _)| n.clone())
            .chain(groups.iter().map(|g| g.to_string()))
            .collect();
        networks.sort();
        networks.dedup();
        networks
    }

    /// Reads a cluster target's inventory: the VMs on its hosts (each naming its host), the
    /// aggregate capacity, each member's own, and the port groups every member reaches.
    fn cluster_inventory(&self, c: &VsphereCluster, world: &World) -> Result<HostInventoryReply> {
        let Some(r) = world.cluster(&c.cluster) else {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!("cluster `{}` is not in vCenter's inventory", c.name),
            )
            .with_detail(format!("cluster `{}`", c.cluster)));
        };
        let members = world.members(r);
        let vms: Vec<NativeVm> = world
            .vms
            .iter()
            .filter(|v| !v.template)
            .filter_map(|v| {
                let host = members.iter().find(|h| v.host.as_ref() == Some(&h.moref))?;
                Some(native_vm(v).with_host(Some(host.name.clone())))
            })
            .collect();
        let member_hosts = members
            .iter()
            .map(|h| {
                let (cpu, mem) = vms
                    .iter()
                    .filter(|v| v.host.as_deref() == Some(h.name.as_str()))
                    .fold((0u32, 0u64), |(c, m), v| {
                        (
                            c.saturating_add(v.resources.vcpus),
                            m.saturating_add(v.resources.memory_mib),
                        )
                    });
                MemberHost::new(&h.name, h.vcpus, h.memory_mib).with_used(cpu, mem)
            })
            .collect();
        // A VM may land on any member: only the port groups every member reaches are offered.
        let groups: Vec<&str> = members
            .first()
            .map(|first| {
                first
                    .networks
                    .iter()
                    .filter(|n| members.iter().all(|h| h.networks.contains(n)))
                    .filter_map(|n| world.network_name(n))
                    .collect()
            })
            .unwrap_or_default();
        let info = self.with_offers(self.cluster_info(c, world), world, &groups);
        Ok(HostInventoryReply::new(info, vms)
            .with_members(member_hosts)
            .with_images(self.images(world))
            .with_networks(self.networks(&groups)))
    }

    /// Finds the VM a target names: by its native id when that VM still carries the target's
    /// mark, else by the mark across the inventory.
    async fn resolve(&self, t: &VmTarget) -> Result<(MoRef, PowerState)> {
        if let Some(id) = &t.native_id {
            let r = MoRef::new("VirtualMachine", id.clone());
            match self
                .client
                .retrieve_one(&r, &["runtime.powerState", "config.extraConfig"])
                .await
            {
                Ok(o) => {
                    let extra = o
                        .get("config.extraConfig")
                        .map(soap::extra_config)
                        .unwrap_or_default();
                    if mark::parse(&extra).is_some_and(|(m, _)| m.vm_id == t.vm_id) {
                        return Ok((r, power_of(o.text("runtime.powerState"))));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let world = self.world().await?;
        world
            .vms
            .iter()
            .find(|v| !v.template && v.mark.as_ref().is_some_and(|(m, _)| m.vm_id == t.vm_id))
            .map(|v| (v.moref.clone(), v.power))
            .ok_or_else(|| Error::not_found("VM", &t.name).with_context("vm_id", &t.vm_id))
    }

    /// Returns the ESXi host vCenter placed a new VM on (its `runtime.host`), which must be a
    /// host of `cluster`.
    ///
    /// # Errors
    /// [`ErrorKind::ProviderError`] when the VM names no host of the cluster. vCenter places a
    /// clone in the pool's cluster; govmomi's simulator keeps a clone on its template's host,
    /// so there a clone into a cluster without that host lands outside it.
    async fn placed_host<'w>(
        &self,
        world: &'w World,
        cluster: &MoRef,
        vm: &MoRef,
    ) -> Result<&'w HostRow> {
        let o = self.client.retrieve_one(vm, &["runtime.host"]).await?;
        let host = o.moref("runtime.host");
        host.as_ref()
            .and_then(|r| world.host_by_ref(r))
            .filter(|h| h.parent.as_ref() == Some(cluster))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ProviderError,
                    "vCenter placed the new VM outside its cluster",
                )
                .with_detail(format!(
                    "VM {} is on host {}, not in cluster {}",
                    vm.value,
                    host.map_or_else(|| "none".to_string(), |h| h.value),
                    cluster.value
                ))
            })
    }

    /// Asks DRS (`PlaceVm` on `cluster`) where a clone of `template` named `name` and sized by
    /// `sizing` goes, and returns the host, pool and datastore of its first recommendation.
    ///
    /// # Behavior
    /// Returns `None`, after saying why in the job log (operators only), when vCenter declines
    /// (a vCenter without `PlaceVm`, DRS off: see [`error::is_drs_declined`]), recommends
    /// nothing, or recommends a host outside the cluster; the caller then clones into the
    /// cluster's pool without a host and reads back where vCenter put the VM.
    ///
    /// # Errors
    /// Any other failure of the call (vCenter unreachable, the session refused).
    #[allow(clippy::too_many_arguments)]
    async fn drs_placement<'w>(
        &self,
        ctx: &OpContext,
        world: &'w World,
        cluster: &MoRef,
        template: &MoRef,
        pool: &MoRef,
        name: &str,
        sizing: &ConfigSpec,
    ) -> Result<Option<DrsChoice<'w>>> {
        let fallback = "vCenter places the clone in the cluster's resource pool";
        let vals = match self
            .client
            .call(&soap::place_vm(cluster, template, pool, name, sizing))
            .await
        {
            Ok(vals) => vals,
            Err(e) if error::is_drs_declined(&e) => {
                ctx.log(
                    LogEntry::info(format!(
                        "DRS gave no placement ({}); {fallback}",
                        e.message()
                    ))
                    .with_detail(e.operator_message())
                    .operators_only(),
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(p) = soap::DrsPlacement::from_returnvals(&vals) else {
            ctx.log(
                LogEntry::info(format!("DRS recommended no host; {fallback}")).operators_only(),
            );
            return Ok(None);
        };
        let Some(host) = world
            .host_by_ref(&p.host)
            .filter(|h| h.parent.as_ref() == Some(cluster))
        else {
            ctx.log(
                LogEntry::info(format!(
                    "DRS recommended a host outside the cluster; {fallback}"
                ))
                .with_detail(format!("host {}, cluster {}", p.host.value, cluster.value))
                .operators_only(),
            );
            return Ok(None);
        };
        let datastore = p.datastore.filter(|d| host.datastores.contains(d));
        Ok(Some(DrsChoice {
            host,
            pool: p.pool,
            datastore,
        }))
    }

    async fn power_state(&self, vm: &MoRef) -> Result<PowerState> {
        let o = self
            .client
            .retrieve_one(vm, &["runtime.powerState"])
            .await?;
        Ok(power_of(o.text("runtime.powerState")))
    }

    async fn task(&self, ctx: &OpContext, body: String) -> Result<soap::TaskInfo> {
        self.client
            .run_task(&body, self.settings.task_timeout, ctx)
            .await
    }

    async fn nic_backing(
        &self,
        world: &World,
        host: &HostRow,
        network: &str,
    ) -> Result<NicBacking> {
        let pg = self.settings.port_group(network);
        let found = host
            .networks
            .iter()
            .find(|n| world.network_name(n) == Some(pg))
            .cloned();
        let Some(net) = found else {
            return Err(Error::invalid(
                "networks",
                format!("network `{network}` is not available on the host"),
            )
            .with_detail(format!("port group `{pg}`")));
        };
        if net.kind != "DistributedVirtualPortgroup" {
            return Ok(NicBacking::Standard {
                name: pg.to_string(),
                network: net,
            });
        }
        let o = self
            .client
            .retrieve_one(&net, &["key", "config.distributedVirtualSwitch"])
            .await?;
        let dvs = o.moref("config.distributedVirtualSwitch").ok_or_else(|| {
            Error::new(
                ErrorKind::ProviderError,
                "a distributed port group has no switch",
            )
        })?;
        let s = self.client.retrieve_one(&dvs, &["uuid"]).await?;
        Ok(NicBacking::Distributed {
            switch_uuid: s.text("uuid").unwrap_or("").to_string(),
            portgroup_key: o.text("key").unwrap_or(&net.value).to_string(),
        })
    }

    /// Reads the clone back and sets what differs from the request; relocates it to the
    /// pinned host when vCenter placed it elsewhere.
    async fn configure(
        &self,
        ctx: &OpContext,
        world: &World,
        host: &HostRow,
        vm: &MoRef,
        args: &CreateVm,
    ) -> Result<()> {
        let o = self
            .client
            .retrieve_one(
                vm,
                &[
                    "runtime.host",
                    "config.hardware.numCPU",
                    "config.hardware.memoryMB",
                    "config.hardware.device",
                    "config.extraConfig",
                ],
            )
            .await?;
        let extra = o
            .get("config.extraConfig")
            .map(soap::extra_config)
            .unwrap_or_default();
        if mark::parse(&extra).is_none_or(|(m, _)| m.vm_id != args.mark.vm_id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the new VM does not carry the mark HCP gave it; it was left untouched",
            )
            .with_detail(format!("VM {}", vm.value)));
        }
        let mut o = o;
        if o.moref("runtime.host").as_ref() != Some(&host.moref) {
            let pool = world.pool_of(host);
            self.task(ctx, soap::relocate(vm, &host.moref, pool.as_ref()))
                .await?;
            ctx.info("moved the clone to its host");
            // A move may change the disks' backing files: edit the devices as they are now.
            o = self
                .client
                .retrieve_one(
                    vm,
                    &[
                        "config.hardware.numCPU",
                        "config.hardware.memoryMB",
                        "config.hardware.device",
                    ],
                )
                .await?;
        }
        let mut spec = ConfigSpec::default();
        let cpus: u32 = o
            .text("config.hardware.numCPU")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if cpus != args.resources.vcpus {
            spec.num_cpus = Some(args.resources.vcpus);
        }
        let mem: u64 = o
            .text("config.hardware.memoryMB")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if mem != args.resources.memory_mib {
            spec.memory_mb = Some(args.resources.memory_mib);
        }
        if let Some(devices) = o.get("config.hardware.device") {
            if !args.networks.is_empty() {
                spec.remove = devices
                    .children
                    .iter()
                    .filter(|d| is_nic(d))
                    .cloned()
                    .collect();
            }
            if let Some(d) = grown_disk(devices, args.resources.disk_gib) {
                spec.edit.push(d);
            }
        }
        for n in &args.networks {
            spec.add_nics
                .push(self.nic_backing(world, host, &n.network).await?);
        }
        if !spec.is_empty() {
            self.task(ctx, soap::reconfig(vm, &spec)).await?;
            ctx.info(format!(
                "configured the VM: {} vCPUs, {} MiB, {} NICs",
                args.resources.vcpus,
                args.resources.memory_mib,
                args.networks.len()
            ));
        }
        Ok(())
    }

    async fn power_on(&self, ctx: &OpContext, vm: &MoRef) -> Result<()> {
        self.task(ctx, soap::simple("PowerOnVM_Task", vm)).await?;
        ctx.info("powered the VM on");
        Ok(())
    }

    async fn power_off(&self, ctx: &OpContext, vm: &MoRef) -> Result<()> {
        self.task(ctx, soap::simple("PowerOffVM_Task", vm)).await?;
        ctx.info("powered the VM off");
        Ok(())
    }

    /// Reads a VM's snapshots, oldest first: its `snapshot` tree and the snapshot files of
    /// `layoutEx` (which say whether each holds memory), in one property read.
    async fn snapshots(&self, vm: &MoRef) -> Result<Vec<soap::Snapshot>> {
        let o = self
            .client
            .retrieve_one(vm, &["snapshot", "layoutEx.snapshot"])
            .await?;
        Ok(soap::snapshots(
            o.get("snapshot"),
            o.get("layoutEx.snapshot"),
        ))
    }

    /// Finds the snapshot named `name` among `snaps`.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when vCenter holds two snapshots of that name (vCenter allows it;
    /// HCP cannot tell which one is meant).
    fn snapshot_named(
        snaps: Vec<soap::Snapshot>,
        name: &str,
        vm: &VmTarget,
    ) -> Result<Option<soap::Snapshot>> {
        let mut found = snaps.into_iter().filter(|s| s.name == name);
        let first = found.next();
        if let Some(other) = found.next() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM `{}` has more than one snapshot named `{name}`; rename or remove one in vCenter first",
                    vm.name
                ),
            )
            .with_detail(format!(
                "snapshots {} and {}",
                first.map(|s| s.moref.value).unwrap_or_default(),
                other.moref.value
            )));
        }
        Ok(first)
    }
}

#[async_trait]
impl Provider for VsphereProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: self.name.clone(),
            kind: KIND.into(),
            version: format!("{} (vim25 SOAP)", env!("CARGO_PKG_VERSION")),
        }
    }

    fn check_snapshot_name(&self, name: &str) -> Result<()> {
        snapshot_name(name).map(|_| ())
    }

    fn max_snapshots_per_vm(&self) -> Option<u32> {
        // VMware supports at most 32 snapshots in one VM's chain.
        Some(32)
    }

    fn capabilities(&self) -> Capabilities {
        self.declared
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        // Configured hosts are listed even when vCenter cannot be reached.
        let world = self.world().await.unwrap_or_default();
        Ok(self
            .hosts
            .values()
            .map(|h| self.host_info(h, world.host(&h.host)))
            .chain(self.clusters.values().map(|c| self.cluster_info(c, &world)))
            .collect())
    }

    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        if let Some(c) = self.clusters.get(&args.host) {
            let world = self.world().await?;
            return self.cluster_inventory(c, &world);
        }
        let h = self.host(&args.host)?;
        let world = self.world().await?;
        let Some(row) = world.host(&h.host) else {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!("host `{}` is not in vCenter's inventory", h.name),
            )
            .with_detail(format!("ESXi host `{}`", h.host)));
        };
        let info = self.host_info(h, Some(row));
        let vms = world
            .vms
            .iter()
            .filter(|v| !v.template && v.host.as_ref() == Some(&row.moref))
            .map(native_vm)
            .collect();
        let groups: Vec<&str> = row
            .networks
            .iter()
            .filter_map(|n| world.network_name(n))
            .collect();
        let info = self.with_offers(info, &world, &groups);
        Ok(HostInventoryReply::new(info, vms)
            .with_images(self.images(&world))
            .with_networks(self.networks(&groups)))
    }

    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm> {
        if args.user_data.is_some() && !self.settings.cloud_init(&args.image) {
            return Err(Error::unsupported(
                &self.name,
                Operation::CreateVm,
                "cloud_init",
                &format!(
                    "image `{}` takes no user-data (its template does not run cloud-init)",
                    args.image
                ),
            ));
        }
        if args.networks.len() > MAX_NETWORKS as usize {
            return Err(Error::invalid(
                "networks",
                format!("vSphere gives a VM at most {MAX_NETWORKS} NICs"),
            ));
        }
        let cluster = self.clusters.get(&args.host);
        let pinned = match cluster {
            Some(_) => None,
            None => Some(self.host(&args.host)?),
        };
        // Names and templates of every VM; marks and power only of the VMs with this name.
        let world = self.names_and_templates().await?;
        // Where the clone goes: a host's cluster pool, pinned to the host; or a cluster's pool
        // with no host named, so vCenter (DRS) picks one, on a datastore every member sees.
        let (pool, datastores, pinned_row, cluster_ref) = match (cluster, pinned) {
            (Some(c), _) => {
                let Some(r) = world.cluster(&c.cluster) else {
                    return Err(Error::new(
                        ErrorKind::ProviderUnavailable,
                        format!("cluster `{}` is not in vCenter's inventory", c.name),
                    )
                    .with_detail(format!("cluster `{}`", c.cluster)));
                };
                let members = world.members(r);
                let Some(pool) = world.computes.get(r).and_then(|(_, p)| p.clone()) else {
                    return Err(Error::new(
                        ErrorKind::ProviderUnavailable,
                        "the cluster has no resource pool",
                    )
                    .with_detail(format!("cluster `{}`", c.cluster)));
                };
                let shared: Vec<MoRef> = members
                    .first()
                    .map(|first| {
                        first
                            .datastores
                            .iter()
                            .filter(|d| members.iter().all(|h| h.datastores.contains(d)))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (pool, shared, None, Some(r.clone()))
            }
            (None, Some(h)) => {
                let Some(host) = world.host(&h.host) else {
                    return Err(Error::new(
                        ErrorKind::ProviderUnavailable,
                        format!("host `{}` is not in vCenter's inventory", h.name),
                    )
                    .with_detail(format!("ESXi host `{}`", h.host)));
                };
                let Some(pool) = world.pool_of(host) else {
                    return Err(Error::new(
                        ErrorKind::ProviderUnavailable,
                        "the host's cluster has no resource pool",
                    )
                    .with_detail(format!("ESXi host `{}`", h.host)));
                };
                (pool, host.datastores.clone(), Some(host), None)
            }
            (None, None) => return Err(Error::not_found("host", &args.host)),
        };
        // vCenter allows two VMs of one name (in different folders); HCP does not. A retried
        // create finds the VM it made.
        let mut same_name: Vec<VmRow> = Vec::new();
        for v in world
            .vms
            .iter()
            .filter(|v| !v.template && v.name == args.name)
        {
            match self.client.retrieve_one(&v.moref, &VM_PROPS).await {
                Ok(o) => same_name.push(VmRow::from_object(&o)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(v) = same_name.iter().find(|v| v.is_ours(&args.mark)) {
            ctx.log(
                LogEntry::info("the VM already exists in vCenter (a retried create)")
                    .with_detail(format!("VM {}", v.moref.value)),
            );
            let mut power = v.power;
            if args.start && power != PowerState::Running {
                self.power_on(ctx, &v.moref).await?;
                power = PowerState::Running;
            }
            let member = cluster
                .and(v.host.as_ref())
                .and_then(|r| world.host_by_ref(r))
                .map(|h| h.name.clone());
            return Ok(CreatedVm::new(&v.moref.value, power).with_host(member));
        }
        if let Some(v) = same_name.first() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a VM named `{}` already exists", args.name),
            )
            .with_detail(format!("VM {}", v.moref.value)));
        }
        let template_name = self.settings.template(&args.image);
        let Some(template) = world
            .vms
            .iter()
            .find(|v| v.template && v.name == template_name)
        else {
            return Err(Error::not_found("image", &args.image)
                .with_detail(format!("no template named `{template_name}` in vCenter")));
        };
        let Some(folder) = template.parent.clone() else {
            return Err(Error::new(
                ErrorKind::ProviderError,
                "the image's template is in no folder",
            ));
        };
        let datastore = match &self.settings.datastore {
            Some(name) => Some(
                world
                    .datastores
                    .iter()
                    .find(|(r, n)| n == name && datastores.contains(r))
                    .map(|(r, _)| r.clone())
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::ProviderUnavailable,
                            "the configured datastore is not on the target host or cluster",
                        )
                        .with_detail(format!("datastore `{name}`, target `{}`", args.host))
                    })?,
            ),
            None => datastores.first().cloned(),
        };
        let mut at = Placement {
            pool,
            datastore,
            host: pinned_row.map(|h| h.moref.clone()),
        };
        // vCenter applies these; the simulator ignores them, and configure() sets what differs.
        let mut extra = vec![(mark::KEY.to_string(), mark::value(&args.mark, &args.tags))];
        if let Some(user_data) = &args.user_data {
            extra.extend(guestinfo(&args, user_data));
        }
        let config = ConfigSpec {
            num_cpus: Some(args.resources.vcpus),
            memory_mb: Some(args.resources.memory_mib),
            extra,
            ..ConfigSpec::default()
        };
        // A cluster target asks DRS where the clone goes; the host it picks is then pinned like
        // a host target's. When DRS declines, vCenter places the clone in the cluster's pool.
        let mut pinned_row = pinned_row;
        // HCP pinned a member host (a server group's policy per host): no DRS, that host.
        if let (Some(c), Some(m)) = (&cluster_ref, &args.member_host) {
            let Some(row) = world.members(c).into_iter().find(|h| h.name == *m) else {
                return Err(Error::invalid(
                    "host",
                    format!("`{m}` is not a member host of cluster `{}`", args.host),
                ));
            };
            ctx.log(
                LogEntry::info(format!(
                    "the VM goes to host `{}` of the cluster, as its server group needs",
                    row.name
                ))
                .operators_only(),
            );
            at.host = Some(row.moref.clone());
            pinned_row = Some(row);
        } else if let Some(c) = &cluster_ref {
            let sizing = ConfigSpec {
                num_cpus: config.num_cpus,
                memory_mb: config.memory_mb,
                ..ConfigSpec::default()
            };
            if let Some(drs) = self
                .drs_placement(
                    ctx,
                    &world,
                    c,
                    &template.moref,
                    &at.pool,
                    &args.name,
                    &sizing,
                )
                .await?
            {
                ctx.log(
                    LogEntry::info(format!("DRS placed the VM on host `{}`", drs.host.name))
                        .operators_only(),
                );
                at.host = Some(drs.host.moref.clone());
                if let Some(p) = drs.pool {
                    at.pool = p;
                }
                // The operator's configured datastore wins over DRS's choice.
                if self.settings.datastore.is_none() && drs.datastore.is_some() {
                    at.datastore = drs.datastore;
                }
                pinned_row = Some(drs.host);
            }
        }
        ctx.info(format!("cloning the image {}", args.image));
        let info = self
            .task(
                ctx,
                soap::clone_vm(&template.moref, &folder, &args.name, &at, &config),
            )
            .await?;
        let vm = info
            .result
            .as_ref()
            .and_then(MoRef::from_node)
            .ok_or_else(|| Error::new(ErrorKind::ProviderError, "the clone task returned no VM"))?;
        ctx.log(LogEntry::info("cloned the template").with_detail(format!("VM {}", vm.value)));
        let placed = match (pinned_row, &cluster_ref) {
            (Some(h), _) => self.configure(ctx, &world, h, &vm, &args).await.map(|()| h),
            (None, None) => Err(Error::internal(
                "a create with neither a host nor a cluster",
            )),
            (None, Some(c)) => match self.placed_host(&world, c, &vm).await {
                Ok(h) => {
                    ctx.log(
                        LogEntry::info(format!("vCenter placed the clone on host `{}`", h.name))
                            .operators_only(),
                    );
                    self.configure(ctx, &world, h, &vm, &args).await.map(|()| h)
                }
                Err(e) => Err(e),
            },
        };
        let placed = match placed {
            Ok(h) => h,
            Err(e) => {
                // A half-configured clone must not be found (and returned) by a retried create.
                ctx.log(
                    LogEntry::warn(format!(
                        "configuring the clone failed; deleting it: {}",
                        e.message()
                    ))
                    .with_detail(format!("VM {}", vm.value)),
                );
                if let Err(d) = self.task(ctx, soap::simple("Destroy_Task", &vm)).await {
                    ctx.warn(format!("could not delete the clone: {}", d.message()));
                }
                return Err(e);
            }
        };
        let mut power = PowerState::Stopped;
        if args.start {
            self.power_on(ctx, &vm).await?;
            power = PowerState::Running;
        }
        let member = cluster.map(|_| placed.name.clone());
        Ok(CreatedVm::new(&vm.value, power).with_host(member))
    }

    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        let (vm, power) = match self.resolve(&args.target).await {
            Ok(found) => found,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DeletedVm::new(false)),
            Err(e) => return Err(e),
        };
        if power != PowerState::Stopped {
            if !args.force {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "VM `{}` is running; stop it first or delete with force",
                        args.target.name
                    ),
                ));
            }
            self.power_off(ctx, &vm).await?;
        }
        match self.task(ctx, soap::simple("Destroy_Task", &vm)).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DeletedVm::new(false)),
            Err(e) => return Err(e),
        }
        ctx.info("deleted the VM and its disks");
        Ok(DeletedVm::new(true))
    }

    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        let (vm, power) = self.resolve(&args.target).await?;
        if power == PowerState::Running {
            return Ok(StartedVm::new(true));
        }
        self.power_on(ctx, &vm).await?;
        Ok(StartedVm::new(false))
    }

    async fn stop_vm(&self, ctx: &OpContext, args: StopVm) -> Result<StoppedVm> {
        let (vm, power) = self.resolve(&args.target).await?;
        if power == PowerState::Stopped {
            return Ok(StoppedVm::new(true, false));
        }
        let graceful = args.graceful_timeout;
        if !args.force && !graceful.is_zero() && power == PowerState::Running {
            ctx.info(format!(
                "asked the guest to shut down; waiting up to {}s",
                graceful.as_secs()
            ));
            match self.client.call(&soap::simple("ShutdownGuest", &vm)).await {
                Ok(_) => {
                    let off = self
                        .client
                        .watch(&vm, &["runtime.powerState"], graceful, |_, v| {
                            v.filter(|v| v.text == "poweredOff").map(|_| ())
                        })
                        .await?;
                    if off.is_some() {
                        ctx.info("the guest shut down");
                        return Ok(StoppedVm::new(false, false));
                    }
                    ctx.warn("the guest did not shut down in time; powering it off");
                }
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(e),
                Err(e) => ctx.log(
                    LogEntry::warn(format!(
                        "the guest cannot shut down itself ({}); powering it off",
                        e.message()
                    ))
                    .with_detail(e.operator_message()),
                ),
            }
        }
        // The guest may have finished shutting down between the watch and now.
        if self.power_state(&vm).await? == PowerState::Stopped {
            return Ok(StoppedVm::new(false, false));
        }
        self.power_off(ctx, &vm).await?;
        Ok(StoppedVm::new(false, true))
    }

    async fn reboot_vm(&self, ctx: &OpContext, args: RebootVm) -> Result<RebootedVm> {
        let (vm, power) = self.resolve(&args.target).await?;
        if power != PowerState::Running {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM `{}` is {power}; only a running VM can reboot",
                    args.target.name
                ),
            ));
        }
        if !args.hard {
            match self.client.call(&soap::simple("RebootGuest", &vm)).await {
                Ok(_) => {
                    ctx.info("asked the guest to reboot");
                    return Ok(RebootedVm::new());
                }
                Err(e)
                    if is_method_not_found(&e)
                        || matches!(
                            e.context_value("vim_fault"),
                            Some("ToolsUnavailable" | "NotSupported")
                        ) =>
                {
                    ctx.log(
                        LogEntry::warn("vCenter cannot ask this guest to reboot; resetting it")
                            .with_detail(e.operator_message()),
                    );
                }
                Err(e) => return Err(e),
            }
        }
        self.task(ctx, soap::simple("ResetVM_Task", &vm)).await?;
        ctx.info("reset the VM");
        Ok(RebootedVm::new())
    }

    async fn console(&self, args: GetConsole) -> Result<Console> {
        if let Some(kind) = args.kind
            && kind != ConsoleKind::Webmks
        {
            return Err(Error::unsupported(
                &self.name,
                Operation::Console,
                &format!("console_{}", kind.as_str()),
                "vSphere offers WebMKS consoles",
            ));
        }
        let (vm, power) = self.resolve(&args.target).await?;
        if power != PowerState::Running {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM `{}` is {power}; a console needs a running VM",
                    args.target.name
                ),
            ));
        }
        let vals = match self.client.call(&soap::acquire_ticket(&vm, "webmks")).await {
            Ok(vals) => vals,
            // The simulator, and any vCenter without WebMKS tickets.
            Err(e) if is_method_not_found(&e) => {
                return Err(Error::unsupported(
                    &self.name,
                    Operation::Console,
                    "console_webmks",
                    "this vCenter does not issue WebMKS console tickets (AcquireTicket is missing)",
                )
                .with_detail(e.operator_message()));
            }
            Err(e) => return Err(e),
        };
        let ticket = vals
            .first()
            .and_then(soap::VmTicket::from_node)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ProviderError,
                    "vCenter answered AcquireTicket without a ticket",
                )
                .with_context("vim_method", "AcquireTicket")
            })?;
        console::webmks(
            &self.name,
            &ticket,
            &self.vcenter_host,
            &self.trust,
            chrono::Utc::now(),
        )
    }

    async fn snapshot_vm(&self, ctx: &OpContext, args: SnapshotVm) -> Result<SnapshottedVm> {
        let name = snapshot_name(&args.name)?;
        let (vm, _) = self.resolve(&args.target).await?;
        let info = self
            .task(ctx, soap::create_snapshot(&vm, name, "taken by HCP"))
            .await?;
        let id = info
            .result
            .as_ref()
            .and_then(MoRef::from_node)
            .map(|r| r.value)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::ProviderError,
                    "the snapshot task returned no snapshot",
                )
            })?;
        ctx.info(format!("took snapshot {name}"));
        Ok(SnapshottedVm::new(id))
    }

    async fn resize_vm(&self, ctx: &OpContext, args: ResizeVm) -> Result<ResizedVm> {
        let (vm, power) = self.resolve(&args.target).await?;
        let o = self
            .client
            .retrieve_one(
                &vm,
                &[
                    "config.hardware.numCPU",
                    "config.hardware.memoryMB",
                    "config.hardware.device",
                ],
            )
            .await?;
        let mut spec = ConfigSpec::default();
        let cpus: Option<u32> = o
            .text("config.hardware.numCPU")
            .and_then(|n| n.parse().ok());
        if let Some(v) = args.vcpus
            && cpus != Some(v)
        {
            spec.num_cpus = Some(v);
        }
        let mem: Option<u64> = o
            .text("config.hardware.memoryMB")
            .and_then(|n| n.parse().ok());
        if let Some(m) = args.memory_mib
            && mem != Some(m)
        {
            spec.memory_mb = Some(m);
        }
        // HCP's VMs have no CPU or memory hot-add: vCenter refuses these while the VM runs
        // (govmomi's simulator would accept them), so HCP refuses first.
        if !matches!(power, PowerState::Stopped)
            && (spec.num_cpus.is_some() || spec.memory_mb.is_some())
        {
            let field = if spec.num_cpus.is_some() {
                "vcpus"
            } else {
                "memory_mib"
            };
            return Err(Error::new(
                ErrorKind::Conflict,
                "vSphere changes a VM's vCPUs and memory only while it is off (HCP's VMs have no hot-add)",
            )
            .with_field(field));
        }
        if let Some(want) = args.disk_gib {
            let devices = o.get("config.hardware.device");
            let have_kb: Option<u64> = devices
                .and_then(|d| d.children.iter().find(|c| c.kind() == "VirtualDisk"))
                .and_then(|d| d.text_of("capacityInKB"))
                .and_then(|t| t.parse().ok());
            let Some(have_kb) = have_kb else {
                return Err(Error::invalid(
                    "disk_gib",
                    format!("VM {} has no virtual disk to grow", vm.value),
                ));
            };
            let want_kb = want
                .checked_mul(1024 * 1024)
                .ok_or_else(|| Error::invalid("disk_gib", format!("{want} GiB is too large")))?;
            if want_kb < have_kb {
                return Err(Error::invalid(
                    "disk_gib",
                    format!(
                        "is {want} GiB, below the disk's {} GiB; a disk only grows",
                        have_kb.div_ceil(1024 * 1024)
                    ),
                ));
            }
            if let Some(d) = devices.and_then(|d| grown_disk(d, want)) {
                spec.edit.push(d);
            }
        }
        if !spec.is_empty() {
            self.task(ctx, soap::reconfig(&vm, &spec)).await?;
            let mut what = Vec::new();
            if let Some(v) = spec.num_cpus {
                what.push(format!("{v} vCPUs"));
            }
            if let Some(m) = spec.memory_mb {
                what.push(format!("{m} MiB of memory"));
            }
            if let Some(g) = args.disk_gib.filter(|_| !spec.edit.is_empty()) {
                what.push(format!("a {g} GiB disk"));
            }
            ctx.info(format!("reconfigured the VM: {}", what.join(", ")));
        }
        Ok(ResizedVm::new(false))
    }

    async fn list_snapshots(&self, args: ListSnapshots) -> Result<Vec<NativeSnapshot>> {
        let (vm, _) = self.resolve(&args.target).await?;
        Ok(self
            .snapshots(&vm)
            .await?
            .into_iter()
            .map(|s| NativeSnapshot::new(s.name, s.created_at, s.memory))
            .collect())
    }

    async fn revert_snapshot(
        &self,
        ctx: &OpContext,
        args: RevertSnapshot,
    ) -> Result<RevertedSnapshot> {
        let name = listed_snapshot_name(&args.name)?;
        let (vm, _) = self.resolve(&args.target).await?;
        let snaps = self.snapshots(&vm).await?;
        let Some(snap) = Self::snapshot_named(snaps, name, &args.target)? else {
            return Err(Error::not_found("snapshot", name).with_field("name"));
        };
        self.task(ctx, soap::revert_to_snapshot(&snap.moref))
            .await?;
        // vCenter powers the VM as the snapshot was (on with its memory, off without);
        // what it did is read back rather than assumed.
        let power = self.power_state(&vm).await?;
        ctx.log(
            LogEntry::info(format!("reverted to snapshot {name}; the VM is {power}"))
                .with_detail(format!("snapshot {}", snap.moref.value)),
        );
        Ok(RevertedSnapshot::new(snap.memory, power))
    }

    async fn delete_snapshot(
        &self,
        ctx: &OpContext,
        args: DeleteSnapshot,
    ) -> Result<DeletedSnapshot> {
        let name = listed_snapshot_name(&args.name)?;
        let (vm, _) = self.resolve(&args.target).await?;
        let snaps = self.snapshots(&vm).await?;
        let Some(snap) = Self::snapshot_named(snaps, name, &args.target)? else {
            return Ok(DeletedSnapshot::new(false));
        };
        match self
            .task(ctx, soap::remove_snapshot(&snap.moref, false))
            .await
        {
            Ok(_) => {}
            // Removed by someone else since it was listed.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DeletedSnapshot::new(false)),
            Err(e) => return Err(e),
        }
        ctx.log(
            LogEntry::info(format!("deleted snapshot {name}"))
                .with_detail(format!("snapshot {}", snap.moref.value)),
        );
        Ok(DeletedSnapshot::new(true))
    }

    async fn migrate_vm(&self, ctx: &OpContext, args: MigrateVm) -> Result<MigratedVm> {
        let target = self.host(&args.target_host)?;
        let (vm, _) = self.resolve(&args.target).await?;
        let world = self.world().await?;
        let Some(row) = world.host(&target.host) else {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!("host `{}` is not in vCenter's inventory", target.name),
            ));
        };
        let pool = world.pool_of(row);
        self.task(ctx, soap::relocate(&vm, &row.moref, pool.as_ref()))
            .await?;
        let now = self
            .client
            .retrieve_one(&vm, &["runtime.host"])
            .await?
            .moref("runtime.host");
        if now.as_ref() != Some(&row.moref) {
            return Err(Error::new(
                ErrorKind::ProviderError,
                "vCenter finished the move but the VM is not on the target host",
            )
            .with_detail(format!(
                "VM {} on {:?}",
                vm.value,
                now.as_ref()
                    .and_then(|n| world.host_by_ref(n))
                    .map(|h| &h.name)
            )));
        }
        ctx.info("moved the VM to another host");
        Ok(MigratedVm::new(&target.name, &vm.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_states_and_devices() {
        assert_eq!(power_of(Some("poweredOn")), PowerState::Running);
        assert_eq!(power_of(Some("poweredOff")), PowerState::Stopped);
        assert_eq!(power_of(Some("suspended")), PowerState::Paused);
        assert_eq!(power_of(None), PowerState::Unknown);
        let doc = r#"<val xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<VirtualDevice xsi:type="VirtualDisk"><key>2000</key><capacityInKB>1048576</capacityInKB><capacityInBytes>1073741824</capacityInBytes></VirtualDevice>
<VirtualDevice xsi:type="VirtualE1000"><key>4000</key></VirtualDevice></val>"#;
        let devices = soap::xml::parse(doc.as_bytes()).unwrap();
        assert!(grown_disk(&devices, 1).is_none());
        let d = grown_disk(&devices, 3).unwrap();
        assert_eq!(d.text_of("capacityInKB"), Some("3145728"));
        assert_eq!(d.text_of("capacityInBytes"), Some("3221225472"));
        assert_eq!(devices.children.iter().filter(|d| is_nic(d)).count(), 1);
    }

    #[test]
    fn urls_give_their_host_and_names_are_checked() {
        assert_eq!(url_host("https://vc.example/sdk"), "vc.example");
        assert_eq!(url_host("https://127.0.0.1:18700/sdk"), "127.0.0.1");
        assert_eq!(url_host("https://[fd00::1]:443/sdk"), "[fd00::1]");
        assert_eq!(snapshot_name(" s1 ").unwrap(), "s1");
        for bad in ["", "  ", "a\nb", &"x".repeat(81)] {
            let e = snapshot_name(bad).unwrap_err();
            assert_eq!(e.field(), Some("name"), "{bad:?}");
        }
        // A listed name is looked up exactly as vCenter holds it.
        assert_eq!(listed_snapshot_name(" s1 ").unwrap(), " s1 ");
        assert!(listed_snapshot_name("").is_err());
        assert!(listed_snapshot_name(&"x".repeat(2000)).is_err());
    }
}
