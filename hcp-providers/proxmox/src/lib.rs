//! # hcp-provider-proxmox
//!
//! HCP's Proxmox VE provider: VMs on the nodes of one PVE cluster, through the PVE REST API
//! (`/api2/json`) over HTTPS with an API token (`PVEAPIToken=user@realm!tokenid=secret`, the
//! secret read from a file) or a password login (a ticket from `/access/ticket`, renewed as it
//! ages and after a 401), the certificate checked against the system roots, a CA file or a
//! pinned SHA-256 fingerprint.
//!
//! - **Create**: a clone of a template VM (linked, or full per image), with a VMID taken from
//!   `/cluster/nextid`; a clone refused because the id is taken ("already exists") is retried
//!   with the next id, and HCP never writes to a VM whose description does not carry the mark it
//!   just wrote. Then cores, memory, `net0..n` (bridge and VLAN tag), the disk grown to the
//!   requested size, PVE tags, and a start. HCP's mark (vm id, project, image, tags) is a JSON line
//!   in the VM's description, so an HCP restarted with an empty store rebuilds ownership.
//! - **Tasks**: every write that returns a UPID is followed to its end
//!   (`/nodes/{node}/tasks/{upid}/status`); its log lines go into the job log as they appear; a
//!   task past `task_timeout` is stopped on the node.
//! - **Locks**: "can't lock file ... got timeout" and "VM is locked" are retried with a doubling
//!   back-off (`lock_retries`); at most `max_parallel_per_node` write tasks run at once per node.
//! - **Power**: start; stop = PVE `shutdown` with the graceful timeout, then `stop`; stop with
//!   `force` = `stop`; reboot = `reboot`, or `reset` with `hard`; delete = `destroy` with `purge`
//!   and `destroy-unreferenced-disks`.
//! - **Snapshots**: take (with the VM's memory, `vmstate`, when it runs), list (oldest first,
//!   without PVE's `current`), revert (`rollback`; the power state read back after it) and
//!   delete (a snapshot already gone is `existed: false`), on `/qemu/{vmid}/snapshot`.
//! - **Resize**: cores (one socket) and memory through `PUT /qemu/{vmid}/config`; on a running
//!   VM PVE keeps them as a pending change for its next restart (`restart_needed`, and kind
//!   `proxmox` plans them as `reboot`); the disk grows live through `PUT /qemu/{vmid}/resize`
//!   and never shrinks.
//! - **Console**: VNC through `vncproxy` (`websocket=1`): the answer is a
//!   [`ConsoleUpstream`] on the node's `vncwebsocket` with the API token (or the login
//!   ticket's cookie) and the provider's TLS
//!   trust, and the VNC ticket as the password HCP's relay answers for the client, so the ticket
//!   never reaches a tenant. PVE accepts the ticket for 40 seconds.
//! - **Cloud-init**: user-data written as a snippet into `snippets_dir` and named by `cicustom`,
//!   with `ipconfig0` (DHCP) and the `ciuser` and `sshkeys` of a `#cloud-config`; declared only
//!   when a snippets storage is configured.
//! - **Not offered** (declared false): live migration.
//! - **Errors**: classified in one place, [`error::parse_error`]; node names stay out of messages.
//!
//! ```no_run
//! # async fn demo() -> hcp_core::Result<()> {
//! let config = hcp_core::Config::from_file("examples/config/proxmox.yaml".as_ref())?;
//! let engine = hcp_provider_proxmox::register(hcp_core::Engine::builder(config))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```

mod client;
pub mod cloudinit;
pub mod config;
pub mod error;
pub mod mark;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hcp_core::{
    Capabilities, Console, ConsoleHandshake, ConsoleKind, ConsoleUpstream, CreateVm, CreatedVm,
    DeleteSnapshot, DeleteVm, DeletedSnapshot, DeletedVm, Error, ErrorKind, GetConsole, HcpMark,
    HostInfo, HostInventory, HostInventoryReply, ListSnapshots, NativeSnapshot, NativeVm,
    OpContext, Operation, PowerState, Provider, ProviderConfig, ProviderInfo, RebootVm, RebootedVm,
    ResizeVm, ResizedVm, Resources, Result, RevertSnapshot, RevertedSnapshot, Secrets, SnapshotVm,
    SnapshottedVm, StartVm, StartedVm, StopVm, StoppedVm, VmId, VmTarget,
};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::client::{Client, as_upid};
use crate::config::Connection;
pub use crate::config::{HostSettings, ImageSettings, ProxmoxSettings};
use crate::error::{is_lock, is_missing_snapshot, missing_snapshot};

/// The provider kind name used in hosts files.
pub const KIND: &str = "proxmox";

/// Most NICs PVE gives one VM (`net0` to `net31`).
pub const MAX_NETWORKS: u32 = 32;

/// How many VMIDs a create tries before giving up.
const VMID_ATTEMPTS: u32 = 16;
/// How long PVE accepts a VNC ticket's websocket after `vncproxy` answered (PVE: 40 s), less a
/// margin.
const VNC_TICKET_SECS: i64 = 35;

/// Registers the Proxmox provider kind on an engine builder.
pub fn register(builder: hcp_core::EngineBuilder) -> hcp_core::EngineBuilder {
    builder.provider_kind(KIND, |c: &ProviderConfig, s: &Secrets| {
        let p: Arc<dyn Provider> = Arc::new(ProxmoxProvider::from_config(c, s)?);
        Ok(p)
    })
}

/// One PVE node of a provider.
#[derive(Debug)]
struct Node {
    name: String,
    zone: String,
    node: String,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    gate: Semaphore,
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// The Proxmox VE provider: the nodes of one PVE cluster.
#[derive(Debug)]
pub struct ProxmoxProvider {
    name: String,
    settings: Arc<ProxmoxSettings>,
    client: Client,
    hosts: BTreeMap<String, Arc<Node>>,
    declared: Capabilities,
    conn: Connection,
}

/// A VM's facts read from its config and status.
#[derive(Debug, Clone)]
struct VmFacts {
    vmid: u32,
    name: String,
    power: PowerState,
    config: serde_json::Map<String, Value>,
}

impl VmFacts {
    fn mark(&self) -> Option<(HcpMark, BTreeMap<String, String>)> {
        self.config
            .get("description")
            .and_then(Value::as_str)
            .and_then(mark::parse)
    }

    fn resources(&self, disk: &str) -> Resources {
        let num = |k: &str, default: u64| -> u64 {
            match self.config.get(k) {
                Some(Value::Number(n)) => n.as_u64().unwrap_or(default),
                Some(Value::String(s)) => s.parse().unwrap_or(default),
                _ => default,
            }
        };
        let vcpus = num("cores", 1).saturating_mul(num("sockets", 1));
        Resources {
            vcpus: u32::try_from(vcpus).unwrap_or(u32::MAX),
            memory_mib: num("memory", 512),
            disk_gib: self
                .config
                .get(disk)
                .and_then(Value::as_str)
                .and_then(disk_size_gib)
                .unwrap_or(0),
        }
    }
}

/// Reads `size=` of a PVE drive string in GiB (rounded up).
fn disk_size_gib(drive: &str) -> Option<u64> {
    let size = drive
        .split(',')
        .find_map(|p| p.trim().strip_prefix("size="))?;
    let (num, unit) = match size.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&size[..i], &size[i..]),
        None => (size, "G"),
    };
    let n: f64 = num.parse().ok()?;
    let gib = match unit {
        "K" => n / (1024.0 * 1024.0),
        "M" => n / 1024.0,
        "G" => n,
        "T" => n * 1024.0,
        _ => return None,
    };
    if !(0.0..=1.0e9).contains(&gib) {
        return None;
    }
    // In range: the cast cannot wrap.
    Some(gib.ceil() as u64)
}

fn no_cloud_init_drive(image: &str) -> Error {
    Error::invalid(
        "image",
        format!(
            "image `{image}` has no cloud-init drive, so it cannot take user_data; create the VM \
             without user_data or add a cloud-init drive to the template"
        ),
    )
}

fn power_of(status: &Value) -> PowerState {
    match status.get("status").and_then(Value::as_str) {
        Some("running") => match status.get("qmpstatus").and_then(Value::as_str) {
            Some("paused" | "suspended" | "prelaunch") => PowerState::Paused,
            _ => PowerState::Running,
        },
        Some("stopped") => PowerState::Stopped,
        _ => PowerState::Unknown,
    }
}

fn vmid_of(v: &Value) -> Option<u32> {
    match v.get("vmid")? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn is_template(v: &Value) -> bool {
    matches!(v.get("template"), Some(Value::Number(n)) if n.as_u64() == Some(1))
        || v.get("template").and_then(Value::as_str) == Some("1")
}

/// Longest snapshot name PVE takes (`snapname`, a `pve-configid` of at most 40 characters).
const SNAPSHOT_NAME_MAX: usize = 40;

/// Checks a snapshot name against PVE's format (`pve-configid`): a letter, then at least one
/// letter, digit, `-` or `_`, at most 40 in all.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `name`.
fn check_snapshot_name(name: &str) -> Result<()> {
    let valid = (2..=SNAPSHOT_NAME_MAX).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "a Proxmox snapshot name is 2-40 letters, digits, '-' or '_', starting with a letter",
        ))
    }
}

/// Reads an integer PVE sends as a number or a string.
fn int_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// Reads PVE's snapshot list (`GET /nodes/{node}/qemu/{vmid}/snapshot`): every snapshot but
/// PVE's pseudo entry `current` ("You are here!"), oldest first, `memory` from `vmstate`.
///
/// `snaptime` has one-second resolution, so snapshots taken within a second tie; a snapshot is
/// always newer than its `parent`, so ties go by depth in the parent chain, then PVE's order.
fn snapshots_of(listed: &Value) -> Vec<NativeSnapshot> {
    let items: Vec<&serde_json::Map<String, Value>> = listed
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let items: Vec<_> = items
        .into_iter()
        .filter(|o| {
            o.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n != "current")
        })
        .collect();
    let name = |o: &serde_json::Map<String, Value>| {
        o.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let parents: BTreeMap<String, String> = items
        .iter()
        .filter_map(|o| Some((name(o), o.get("parent")?.as_str()?.to_string())))
        .collect();
    // Bounded by the list's length, so a parent loop in a reply cannot spin.
    let depth = |start: &str| {
        let mut d = 0usize;
        let mut at = start;
        while let Some(p) = parents.get(at) {
            if d >= parents.len() {
                break;
            }
            d += 1;
            at = p;
        }
        d
    };
    let mut keyed: Vec<(i64, usize, NativeSnapshot)> = items
        .iter()
        .map(|o| {
            let n = name(o);
            let snaptime = int_of(o.get("snaptime")).unwrap_or(0);
            let created_at = (snaptime > 0)
                .then(|| DateTime::<Utc>::from_timestamp(snaptime, 0))
                .flatten();
            let memory = int_of(o.get("vmstate")).is_some_and(|v| v != 0);
            (
                snaptime,
                depth(&n),
                NativeSnapshot::new(n, created_at, memory),
            )
        })
        .collect();
    keyed.sort_by_key(|(time, depth, _)| (*time, *depth));
    keyed.into_iter().map(|(_, _, s)| s).collect()
}

/// Holds one of a node's write slots; counts how many run at once.
struct Slot<'a> {
    node: &'a Node,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.node.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ProxmoxProvider {
    /// Builds the provider from its section of the hosts file, reading the token secret file.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the bad setting or the file that cannot be read.
    pub fn from_config(config: &ProviderConfig, _secrets: &Secrets) -> Result<Self> {
        let settings = ProxmoxSettings::from_value(&config.name, &config.settings)?;
        let mut hosts = Vec::new();
        for h in &config.hosts {
            let s = HostSettings::from_value(&config.name, &h.name, &h.settings)?;
            hosts.push(ProxmoxHost {
                name: h.name.clone(),
                zone: h.zone.clone(),
                node: s.node.unwrap_or_else(|| h.name.clone()),
                vcpus: h.vcpus,
                memory_mib: h.memory_mib,
            });
        }
        ProxmoxProvider::new(&config.name, settings, hosts)
    }

    /// Builds a provider named `name` over `hosts`. No node is contacted until it is used.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] when the token secret or CA file cannot be read.
    pub fn new(name: &str, settings: ProxmoxSettings, hosts: Vec<ProxmoxHost>) -> Result<Self> {
        let conn = settings.connection(name)?;
        let nodes: Vec<String> = hosts
            .iter()
            .flat_map(|h| [h.node.clone(), h.name.clone()])
            .collect();
        let client = Client::new(&conn, settings.request_timeout, nodes)?;
        let declared = Capabilities {
            // User-data travels as a snippet file HCP writes: only with a snippets storage.
            cloud_init: settings.snippets_storage.is_some() && settings.snippets_dir.is_some(),
            snapshot: true,
            console_vnc: true,
            tags: true,
            resize: true,
            max_networks: Some(MAX_NETWORKS),
            ..Default::default()
        };
        let parallel = settings.max_parallel_per_node;
        Ok(ProxmoxProvider {
            name: name.to_string(),
            client,
            hosts: hosts
                .into_iter()
                .map(|h| {
                    let node = Node {
                        name: h.name.clone(),
                        zone: h.zone,
                        node: h.node,
                        vcpus: h.vcpus,
                        memory_mib: h.memory_mib,
                        gate: Semaphore::new(parallel),
                        running: AtomicUsize::new(0),
                        peak: AtomicUsize::new(0),
                    };
                    (h.name, Arc::new(node))
                })
                .collect(),
            settings: Arc::new(settings),
            declared,
            conn,
        })
    }

    /// Returns the settings.
    pub fn settings(&self) -> &ProxmoxSettings {
        &self.settings
    }

    /// Returns how many password logins (`POST /access/ticket`) the provider made since it
    /// started; 0 with an API token.
    pub fn password_logins(&self) -> u64 {
        self.client.logins()
    }

    /// Returns the most write tasks that ran at once on `host` since the provider started (it
    /// never exceeds `max_parallel_per_node`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown host.
    pub fn peak_parallel(&self, host: &str) -> Result<usize> {
        Ok(self.host(host)?.peak.load(Ordering::SeqCst))
    }

    fn host(&self, name: &str) -> Result<Arc<Node>> {
        self.hosts
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found("host", name).with_context("provider", &self.name))
    }

    async fn slot<'a>(&self, node: &'a Node) -> Result<Slot<'a>> {
        let permit = node
            .gate
            .acquire()
            .await
            .map_err(|_| Error::internal("the node's write gate closed"))?;
        let now = node.running.fetch_add(1, Ordering::SeqCst) + 1;
        node.peak.fetch_max(now, Ordering::SeqCst);
        Ok(Slot {
            node,
            _permit: permit,
        })
    }

    /// Runs a write on `node` in one of its slots: the request, then its task to the end. VM
    /// lock conflicts are retried with a doubling back-off.
    async fn write<F, Fut>(
        &self,
        ctx: &OpContext,
        node: &Node,
        what: &str,
        request: F,
    ) -> Result<Value>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: std::future::Future<Output = Result<Value>> + Send,
    {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let result = async {
                let _slot = self.slot(node).await?;
                let data = request().await?;
                if let Some(upid) = as_upid(&data) {
                    self.client
                        .wait_task(
                            &node.node,
                            upid,
                            self.settings.task_timeout,
                            self.settings.task_poll,
                            ctx,
                        )
                        .await?;
                }
                Ok(data)
            }
            .await;
            match result {
                Err(e) if is_lock(&e) && attempt < self.settings.lock_retries => {
                    attempt += 1;
                    ctx.warn(format!(
                        "{what}: the VM is locked; retrying in {} ms ({attempt} of {})",
                        delay.as_millis(),
                        self.settings.lock_retries
                    ));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.with_context("node", &node.node)),
                Ok(v) => return Ok(v),
            }
        }
    }

    async fn nodes_status(&self) -> Result<Vec<Value>> {
        let v = self.client.get("/nodes", &[]).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    fn host_info(&self, h: &Node, status: Option<&Value>) -> HostInfo {
        let maxcpu = status
            .and_then(|s| s.get("maxcpu"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        let maxmem = status
            .and_then(|s| s.get("maxmem"))
            .and_then(Value::as_u64)
            .map(|b| b / (1024 * 1024));
        let vcpus = maxcpu.or(h.vcpus).unwrap_or(0);
        let memory = maxmem.or(h.memory_mib).unwrap_or(0);
        let mut caps = self.declared;
        // PVE refuses more vCPUs than the node has, and memory past the node's size cannot run.
        if vcpus > 0 {
            caps.max_vcpus = Some(vcpus);
        }
        if memory > 0 {
            caps.max_memory_mib = Some(memory);
        }
        HostInfo::new(&h.name, &h.zone, vcpus, memory, caps)
    }

    async fn list_node_vms(&self, node: &str) -> Result<Vec<Value>> {
        let v = self.client.get(&format!("/nodes/{node}/qemu"), &[]).await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    async fn config(&self, node: &str, vmid: u32) -> Result<serde_json::Map<String, Value>> {
        let v = self
            .client
            .get(&format!("/nodes/{node}/qemu/{vmid}/config"), &[])
            .await?;
        match v {
            Value::Object(m) => Ok(m),
            _ => Err(Error::new(
                ErrorKind::ProviderError,
                "Proxmox VE returned a VM config that is not an object",
            )),
        }
    }

    /// Reads the facts of every VM listed that is not a template, skipping VMs that vanish
    /// while being read.
    async fn facts(&self, node: &str, listed: Vec<Value>) -> Result<Vec<VmFacts>> {
        let reads = futures::stream::iter(listed.into_iter().filter_map(|v| {
            let vmid = vmid_of(&v)?;
            (!is_template(&v)).then_some((vmid, v))
        }))
        .map(|(vmid, v)| async move {
            match self.config(node, vmid).await {
                Ok(config) => Ok(Some(VmFacts {
                    vmid,
                    name: config
                        .get("name")
                        .and_then(Value::as_str)
                        .or_else(|| v.get("name").and_then(Value::as_str))
                        .unwrap_or("")
                        .to_string(),
                    power: power_of(&v),
                    config,
                })),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<Result<Option<VmFacts>>>>()
        .await;
        let mut out = Vec::new();
        for r in reads {
            if let Some(f) = r? {
                out.push(f);
            }
        }
        out.sort_by_key(|f| f.vmid);
        Ok(out)
    }

    /// Finds the VM carrying `vm_id`'s mark on `node`.
    async fn find_by_mark(&self, node: &str, vm_id: &VmId) -> Result<Option<VmFacts>> {
        let listed = self.list_node_vms(node).await?;
        Ok(self
            .facts(node, listed)
            .await?
            .into_iter()
            .find(|f| f.mark().is_some_and(|(m, _)| &m.vm_id == vm_id)))
    }

    async fn snapshots(&self, node: &str, vmid: u32) -> Result<Vec<NativeSnapshot>> {
        let listed = self
            .client
            .get(&format!("/nodes/{node}/qemu/{vmid}/snapshot"), &[])
            .await?;
        Ok(snapshots_of(&listed))
    }

    async fn status(&self, node: &str, vmid: u32) -> Result<PowerState> {
        let v = self
            .client
            .get(&format!("/nodes/{node}/qemu/{vmid}/status/current"), &[])
            .await?;
        Ok(power_of(&v))
    }

    /// Resolves a target to its VMID on its node: the native id when its config carries the
    /// target's mark, else the VM carrying the mark.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when no VM on the node carries the mark.
    async fn resolve(&self, t: &VmTarget) -> Result<(Arc<Node>, u32)> {
        let h = self.host(&t.host)?;
        if let Some(vmid) = t.native_id.as_deref().and_then(|n| n.parse::<u32>().ok()) {
            match self.config(&h.node, vmid).await {
                Ok(config) => {
                    let owned = config
                        .get("description")
                        .and_then(Value::as_str)
                        .and_then(mark::parse)
                        .is_some_and(|(m, _)| m.vm_id == t.vm_id);
                    if owned {
                        return Ok((h, vmid));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match self.find_by_mark(&h.node, &t.vm_id).await? {
            Some(f) => Ok((h, f.vmid)),
            None => Err(Error::not_found("VM", &t.name).with_context("vm", &t.vm_id)),
        }
    }

    /// Finds the template to clone for `image`: its VMID and node, and whether to copy in full.
    async fn template(&self, image: &str) -> Result<(u32, String, bool)> {
        let resources = self
            .client
            .get("/cluster/resources", &[("type", "vm".to_string())])
            .await?;
        let listed = resources.as_array().cloned().unwrap_or_default();
        let wanted = self.settings.image(image);
        let found = listed.iter().find(|v| {
            is_template(v)
                && match wanted {
                    Some(w) => vmid_of(v) == Some(w.template),
                    None => v.get("name").and_then(Value::as_str) == Some(image),
                }
        });
        let Some(found) = found else {
            return Err(Error::not_found("image", image).with_context(
                "hint",
                "no template VM with this VMID (settings.images) or name",
            ));
        };
        let vmid = vmid_of(found)
            .ok_or_else(|| Error::new(ErrorKind::ProviderError, "a template without a VMID"))?;
        let node = found
            .get("node")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok((vmid, node, wanted.is_some_and(|w| w.full)))
    }

    async fn next_vmid(&self, after: Option<u32>) -> Result<u32> {
        let v = self.client.get("/cluster/nextid", &[]).await?;
        let id = match &v {
            Value::String(s) => s.parse::<u32>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }
        .ok_or_else(|| {
            Error::new(
                ErrorKind::ProviderError,
                "Proxmox VE returned no usable VMID from /cluster/nextid",
            )
        })?;
        // A stale answer repeats an id that was just refused: move past it.
        Ok(match after {
            Some(prev) if id <= prev => prev.saturating_add(1),
            _ => id,
        })
    }

    /// Clones the template into a fresh VMID that carries `description`. The id is asked for
    /// and the clone requested while holding one of the node's write slots, so HCP's own
    /// creates do not race for ids; an id taken anyway (another client) is retried with the
    /// next one, and lock conflicts with a doubling back-off.
    async fn clone_template(
        &self,
        ctx: &OpContext,
        h: &Node,
        args: &CreateVm,
        description: &str,
    ) -> Result<u32> {
        let (template, src_node, full) = self.template(&args.image).await?;
        let src = self.host_by_node(&src_node);
        let gate = src.as_deref().unwrap_or(h);
        let path = format!("/nodes/{src_node}/qemu/{template}/clone");
        let mut last = None;
        let mut taken = 0;
        let mut locked = 0;
        let mut delay = Duration::from_millis(200);
        loop {
            let (newid, result) = {
                let _slot = self.slot(gate).await?;
                let newid = self.next_vmid(last).await?;
                let mut form = vec![
                    ("newid", newid.to_string()),
                    ("name", args.name.clone()),
                    ("description", description.to_string()),
                    ("full", if full { "1" } else { "0" }.to_string()),
                ];
                if full && let Some(storage) = &self.settings.storage {
                    form.push(("storage", storage.clone()));
                }
                if src_node != h.node {
                    form.push(("target", h.node.clone()));
                }
                ctx.log(
                    hcp_core::LogEntry::info(format!("cloning image {}", args.image))
                        .with_detail(format!("into VMID {newid} on node {}", h.node)),
                );
                let result = match self.client.post(&path, &form).await {
                    Ok(data) => match as_upid(&data) {
                        Some(upid) => self
                            .client
                            .wait_task(
                                &src_node,
                                upid,
                                self.settings.task_timeout,
                                self.settings.task_poll,
                                ctx,
                            )
                            .await
                            .map(|_| ()),
                        None => Ok(()),
                    },
                    Err(e) => Err(e),
                };
                (newid, result)
            };
            last = Some(newid);
            match result {
                Ok(()) => return Ok(newid),
                Err(e) if error::is_taken(&e) => {
                    taken += 1;
                    if taken >= VMID_ATTEMPTS {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!("no free VMID found after {VMID_ATTEMPTS} attempts"),
                        )
                        .temporary());
                    }
                    ctx.log(
                        hcp_core::LogEntry::warn(
                            "the VM id Proxmox VE offered is taken; trying another",
                        )
                        .with_detail(format!("VMID {newid}")),
                    );
                }
                Err(e) if is_lock(&e) && locked < self.settings.lock_retries => {
                    locked += 1;
                    ctx.warn(format!(
                        "clone: the template is locked; retrying in {} ms ({locked} of {})",
                        delay.as_millis(),
                        self.settings.lock_retries
                    ));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.with_context("node", &src_node)),
            }
        }
    }

    fn host_by_node(&self, node: &str) -> Option<Arc<Node>> {
        self.hosts.values().find(|h| h.node == node).cloned()
    }

    /// Sets cores, memory, NICs and tags of a VM HCP just cloned, and grows its disk.
    async fn configure(&self, ctx: &OpContext, h: &Node, vmid: u32, args: &CreateVm) -> Result<()> {
        let current = self.config(&h.node, vmid).await?;
        let mut form = vec![
            ("cores", args.resources.vcpus.to_string()),
            ("sockets", "1".to_string()),
            ("memory", args.resources.memory_mib.to_string()),
            ("tags", mark::pve_tags(&args.tags)),
        ];
        let mut nets: Vec<(String, String)> = Vec::new();
        for (i, n) in args.networks.iter().enumerate() {
            let bridge = self.settings.bridge(&n.network);
            let mut value = format!("virtio,bridge={bridge}");
            if let Some(vlan) = n.vlan {
                value.push_str(&format!(",tag={vlan}"));
            }
            nets.push((format!("net{i}"), value));
        }
        let mut delete: Vec<String> = Vec::new();
        if !args.networks.is_empty() {
            for key in current.keys() {
                if let Some(n) = key.strip_prefix("net")
                    && let Ok(i) = n.parse::<usize>()
                    && i >= args.networks.len()
                {
                    delete.push(key.clone());
                }
            }
        }
        let mut owned: Vec<(String, String)> = nets;
        if let Some(user_data) = &args.user_data {
            owned.extend(self.cloud_init(ctx, &args.image, &args.vm_id, &current, user_data)?);
        }
        if !delete.is_empty() {
            delete.sort();
            owned.push(("delete".into(), delete.join(",")));
        }
        let path = format!("/nodes/{}/qemu/{vmid}/config", h.node);
        let form_all: Vec<(&str, String)> = form
            .drain(..)
            .chain(owned.iter().map(|(k, v)| (k.as_str(), v.clone())))
            .collect();
        self.write(ctx, h, "configure", || self.client.put(&path, &form_all))
            .await?;
        ctx.info(format!(
            "set {} vCPUs, {} MiB, {} NICs",
            args.resources.vcpus,
            args.resources.memory_mib,
            args.networks.len()
        ));
        let disk = &self.settings.disk;
        match current.get(disk).and_then(Value::as_str) {
            Some(drive) => {
                let have = disk_size_gib(drive).unwrap_or(0);
                if args.resources.disk_gib > have {
                    let path = format!("/nodes/{}/qemu/{vmid}/resize", h.node);
                    let form = [
                        ("disk", disk.clone()),
                        ("size", format!("{}G", args.resources.disk_gib)),
                    ];
                    self.write(ctx, h, "resize", || self.client.put(&path, &form))
                        .await?;
                    ctx.info(format!(
                        "grew disk {disk} to {} GiB",
                        args.resources.disk_gib
                    ));
                }
            }
            None => ctx.warn(format!(
                "the image has no disk {disk}; the VM keeps the image's disks"
            )),
        }
        Ok(())
    }

    /// Writes the user-data snippet of VM `vm_id` and returns the config keys that hand it to
    /// cloud-init: `cicustom`, `ipconfig0` (DHCP unless the template sets it), and `ciuser` and
    /// `sshkeys` from a `#cloud-config`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming `image` when the template has no cloud-init drive;
    /// [`ErrorKind::ProviderError`] when the snippet cannot be written.
    fn cloud_init(
        &self,
        ctx: &OpContext,
        image: &str,
        vm_id: &VmId,
        current: &serde_json::Map<String, Value>,
        user_data: &str,
    ) -> Result<Vec<(String, String)>> {
        let (Some(storage), Some(dir)) = (
            self.settings.snippets_storage.as_deref(),
            self.settings.snippets_dir.as_deref(),
        ) else {
            return Err(Error::unsupported(
                &self.name,
                Operation::CreateVm,
                "cloud_init",
                "user-data needs snippets_storage and snippets_dir in the provider's settings",
            ));
        };
        if !cloudinit::has_drive(current) {
            return Err(no_cloud_init_drive(image));
        }
        let file = cloudinit::snippet_name(vm_id);
        cloudinit::write_snippet(&dir.join(&file), user_data).map_err(|e| {
            Error::new(
                ErrorKind::ProviderError,
                "HCP could not write the user-data snippet",
            )
            .with_context("snippets_dir", dir.display())
            .with_context("detail", e.kind())
        })?;
        ctx.log(
            hcp_core::LogEntry::info("handed the user-data to cloud-init")
                .with_detail(format!("snippet {storage}:snippets/{file}")),
        );
        let mut keys = vec![(
            "cicustom".to_string(),
            format!("user={storage}:snippets/{file}"),
        )];
        if !current.contains_key("ipconfig0") {
            keys.push(("ipconfig0".to_string(), "ip=dhcp".to_string()));
        }
        let native = cloudinit::native_keys(user_data);
        if let Some(user) = native.user {
            keys.push(("ciuser".to_string(), user));
        }
        if !native.ssh_keys.is_empty() {
            keys.push((
                "sshkeys".to_string(),
                cloudinit::encode_ssh_keys(&native.ssh_keys),
            ));
        }
        Ok(keys)
    }

    /// Removes the user-data snippet HCP wrote for `vm_id`, if any.
    fn remove_snippet(&self, ctx: &OpContext, vm_id: &VmId) {
        if let Some(dir) = &self.settings.snippets_dir {
            match std::fs::remove_file(dir.join(cloudinit::snippet_name(vm_id))) {
                Ok(()) => ctx.info("removed the VM's user-data snippet"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => ctx.warn(format!(
                    "could not remove the VM's user-data snippet: {}",
                    e.kind()
                )),
            }
        }
    }

    async fn power(
        &self,
        ctx: &OpContext,
        h: &Node,
        vmid: u32,
        action: &str,
        form: &[(&str, String)],
    ) -> Result<()> {
        let path = format!("/nodes/{}/qemu/{vmid}/status/{action}", h.node);
        self.write(ctx, h, action, || self.client.post(&path, form))
            .await
            .map(|_| ())
    }
}

/// One PVE node of a provider, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxmoxHost {
    /// The host name HCP uses.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// The PVE node name.
    pub node: String,
    /// vCPUs to report while the node cannot be reached.
    pub vcpus: Option<u32>,
    /// Memory (MiB) to report while the node cannot be reached.
    pub memory_mib: Option<u64>,
}

impl ProxmoxHost {
    /// Describes host `name` in `zone`, PVE node `node`.
    pub fn new(name: impl Into<String>, zone: impl Into<String>, node: impl Into<String>) -> Self {
        ProxmoxHost {
            name: name.into(),
            zone: zone.into(),
            node: node.into(),
            vcpus: None,
            memory_mib: None,
        }
    }
}

#[async_trait]
impl Provider for ProxmoxProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: self.name.clone(),
            kind: KIND.into(),
            version: format!("{} (PVE API)", env!("CARGO_PKG_VERSION")),
        }
    }

    fn check_snapshot_name(&self, name: &str) -> Result<()> {
        check_snapshot_name(name)
    }

    fn capabilities(&self) -> Capabilities {
        self.declared
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        // Configured hosts are listed even when the API cannot be reached.
        let nodes = self.nodes_status().await.unwrap_or_default();
        Ok(self
            .hosts
            .values()
            .map(|h| {
                let status = nodes
                    .iter()
                    .find(|n| n.get("node").and_then(Value::as_str) == Some(h.node.as_str()));
                self.host_info(h, status)
            })
            .collect())
    }

    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        let h = self.host(&args.host)?;
        let nodes = self.nodes_status().await?;
        let status = nodes
            .iter()
            .find(|n| n.get("node").and_then(Value::as_str) == Some(h.node.as_str()));
        let Some(status) = status else {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!("host `{}` is not a node of the cluster", h.name),
            )
            .with_context("node", &h.node));
        };
        if status.get("status").and_then(Value::as_str) != Some("online") {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!("host `{}` is offline", h.name),
            )
            .with_context("node", &h.node)
            .temporary());
        }
        let info = self.host_info(&h, Some(status));
        let listed = self.list_node_vms(&h.node).await?;
        let templates: Vec<(u32, String)> = listed
            .iter()
            .filter(|v| is_template(v))
            .filter_map(|v| {
                Some((
                    vmid_of(v)?,
                    v.get("name").and_then(Value::as_str)?.to_string(),
                ))
            })
            .collect();
        let facts = self.facts(&h.node, listed).await?;
        let vms = facts
            .iter()
            .map(|f| {
                let (mark, tags) = match f.mark() {
                    Some((m, t)) => (Some(m), t),
                    None => (None, BTreeMap::new()),
                };
                NativeVm::new(
                    f.vmid.to_string(),
                    &f.name,
                    f.power,
                    f.resources(&self.settings.disk),
                    mark,
                )
                .with_tags(tags)
            })
            .collect();
        let mut images: Vec<String> = self
            .settings
            .images
            .iter()
            .filter(|(_, i)| templates.iter().any(|(id, _)| *id == i.template))
            .map(|(name, _)| name.clone())
            .chain(templates.iter().map(|(_, name)| name.clone()))
            .collect();
        images.sort();
        images.dedup();
        let bridges = self
            .client
            .get(
                &format!("/nodes/{}/network", h.node),
                &[("type", "bridge".to_string())],
            )
            .await?;
        let bridges: Vec<String> = bridges
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b.get("iface").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let mut networks: Vec<String> = self
            .settings
            .networks
            .iter()
            .filter(|(_, b)| bridges.contains(b))
            .map(|(n, _)| n.clone())
            .chain(bridges.iter().cloned())
            .collect();
        networks.sort();
        networks.dedup();
        // What placement reads: the images whose templates exist and the networks over the
        // node's bridges.
        let info = info
            .with_images(images.iter().map(hcp_core::ImageOffer::new).collect())
            .with_networks(networks.clone());
        Ok(HostInventoryReply::new(info, vms)
            .with_images(images)
            .with_networks(networks))
    }

    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm> {
        if args.user_data.is_some() && !self.declared.cloud_init {
            return Err(Error::unsupported(
                &self.name,
                Operation::CreateVm,
                "cloud_init",
                "user-data needs snippets_storage and snippets_dir in the provider's settings",
            ));
        }
        if args.networks.len() > MAX_NETWORKS as usize {
            return Err(Error::invalid(
                "networks",
                format!("Proxmox VE gives a VM at most {MAX_NETWORKS} NICs"),
            ));
        }
        let h = self.host(&args.host)?;
        // A retried create finds the VM it made; another VM with the name is a conflict.
        let listed = self.list_node_vms(&h.node).await?;
        let same_name: Vec<Value> = listed
            .into_iter()
            .filter(|v| v.get("name").and_then(Value::as_str) == Some(args.name.as_str()))
            .collect();
        let same_name = self.facts(&h.node, same_name).await?;
        if let Some(f) = same_name
            .iter()
            .find(|f| f.mark().is_some_and(|(m, _)| m.vm_id == args.mark.vm_id))
        {
            ctx.log(
                hcp_core::LogEntry::info("the VM already exists on Proxmox VE (a retried create)")
                    .with_detail(format!("VMID {}", f.vmid)),
            );
            let mut power = f.power;
            if args.start && power != PowerState::Running {
                self.power(ctx, &h, f.vmid, "start", &[]).await?;
                power = PowerState::Running;
            }
            return Ok(CreatedVm::new(f.vmid.to_string(), power));
        }
        if let Some(f) = same_name.first() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a VM named `{}` already exists on the host", args.name),
            )
            .with_context("node", &h.node)
            .with_context("vmid", f.vmid));
        }
        if args.user_data.is_some() {
            // Refused before anything is cloned when the template cannot take user-data.
            let (template, node, _) = self.template(&args.image).await?;
            let config = self.config(&node, template).await?;
            if !cloudinit::has_drive(&config) {
                return Err(no_cloud_init_drive(&args.image));
            }
        }
        let description = mark::description(&args.mark, &args.tags);
        let vmid = self.clone_template(ctx, &h, &args, &description).await?;
        // Never write to a VM that is not the one this call made.
        let config = self.config(&h.node, vmid).await?;
        let ours = config
            .get("description")
            .and_then(Value::as_str)
            .and_then(mark::parse)
            .is_some_and(|(m, _)| m.vm_id == args.mark.vm_id);
        if !ours {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the new VMID holds a VM HCP did not create; it was left untouched",
            )
            .with_context("node", &h.node)
            .with_context("vmid", vmid)
            .temporary());
        }
        if let Err(e) = self.configure(ctx, &h, vmid, &args).await {
            // A half-configured clone must not be found (and returned) by a retried create.
            ctx.log(
                hcp_core::LogEntry::warn(format!(
                    "configuring the clone failed; deleting it: {}",
                    e.message()
                ))
                .with_detail(format!("VMID {vmid}")),
            );
            let path = format!("/nodes/{}/qemu/{vmid}", h.node);
            let query = [("purge", "1".to_string())];
            if let Err(d) = self
                .write(ctx, &h, "delete", || self.client.delete(&path, &query))
                .await
            {
                ctx.warn(format!("could not delete the clone: {}", d.message()));
            }
            self.remove_snippet(ctx, &args.vm_id);
            return Err(e);
        }
        let mut power = PowerState::Stopped;
        if args.start {
            self.power(ctx, &h, vmid, "start", &[]).await?;
            ctx.info("started the VM");
            power = PowerState::Running;
        }
        Ok(CreatedVm::new(vmid.to_string(), power))
    }

    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        let (h, vmid) = match self.resolve(&args.target).await {
            Ok(found) => found,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DeletedVm::new(false)),
            Err(e) => return Err(e),
        };
        if self.status(&h.node, vmid).await? != PowerState::Stopped {
            if !args.force {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "VM `{}` is running; stop it first or delete with force",
                        args.target.name
                    ),
                ));
            }
            self.power(ctx, &h, vmid, "stop", &[]).await?;
            ctx.info("powered the VM off");
        }
        let path = format!("/nodes/{}/qemu/{vmid}", h.node);
        let query = [
            ("purge", "1".to_string()),
            ("destroy-unreferenced-disks", "1".to_string()),
        ];
        match self
            .write(ctx, &h, "delete", || self.client.delete(&path, &query))
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(DeletedVm::new(false)),
            Err(e) => return Err(e),
        }
        ctx.info("deleted the VM and its disks");
        self.remove_snippet(ctx, &args.target.vm_id);
        Ok(DeletedVm::new(true))
    }

    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        let (h, vmid) = self.resolve(&args.target).await?;
        if self.status(&h.node, vmid).await? == PowerState::Running {
            return Ok(StartedVm::new(true));
        }
        self.power(ctx, &h, vmid, "start", &[]).await?;
        ctx.info("started the VM");
        Ok(StartedVm::new(false))
    }

    async fn stop_vm(&self, ctx: &OpContext, args: StopVm) -> Result<StoppedVm> {
        let (h, vmid) = self.resolve(&args.target).await?;
        if self.status(&h.node, vmid).await? == PowerState::Stopped {
            return Ok(StoppedVm::new(true, false));
        }
        let graceful = args.graceful_timeout.as_secs();
        if !args.force && graceful > 0 {
            ctx.info(format!(
                "asked the guest to shut down; waiting up to {graceful}s"
            ));
            let form = [("timeout", graceful.to_string()), ("forceStop", "0".into())];
            match self.power(ctx, &h, vmid, "shutdown", &form).await {
                Ok(()) if self.status(&h.node, vmid).await? == PowerState::Stopped => {
                    return Ok(StoppedVm::new(false, false));
                }
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(e),
                Err(e) => ctx.warn(format!("the graceful shutdown failed: {}", e.message())),
            }
            ctx.warn("the guest did not shut down in time; powering it off");
        }
        self.power(ctx, &h, vmid, "stop", &[]).await?;
        ctx.info("powered the VM off");
        Ok(StoppedVm::new(false, true))
    }

    async fn reboot_vm(&self, ctx: &OpContext, args: RebootVm) -> Result<RebootedVm> {
        let (h, vmid) = self.resolve(&args.target).await?;
        let power = self.status(&h.node, vmid).await?;
        if power != PowerState::Running {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM `{}` is {power}; only a running VM can reboot",
                    args.target.name
                ),
            ));
        }
        if args.hard {
            self.power(ctx, &h, vmid, "reset", &[]).await?;
            ctx.info("reset the VM");
        } else {
            self.power(ctx, &h, vmid, "reboot", &[]).await?;
            ctx.info("rebooted the guest");
        }
        Ok(RebootedVm::new())
    }

    async fn console(&self, args: GetConsole) -> Result<Console> {
        if let Some(kind) = args.kind
            && kind != ConsoleKind::Vnc
        {
            return Err(Error::unsupported(
                &self.name,
                Operation::Console,
                &format!("console_{}", kind.as_str()),
                "Proxmox VE offers VNC consoles",
            ));
        }
        let (h, vmid) = self.resolve(&args.target).await?;
        let path = format!("/nodes/{}/qemu/{vmid}/vncproxy", h.node);
        let reply = self
            .client
            .post(&path, &[("websocket", "1".to_string())])
            .await?;
        let text = |k: &str| -> Option<String> {
            match reply.get(k)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let (Some(port), Some(ticket)) = (text("port"), text("ticket")) else {
            return Err(Error::new(
                ErrorKind::ProviderError,
                "the Proxmox VE API answered vncproxy without a port and a ticket",
            ));
        };
        // A generated VNC password, when PVE sends one, is what the VNC server asks for;
        // otherwise the ticket is.
        let password = text("password").unwrap_or_else(|| ticket.clone());
        let ws = self
            .client
            .websocket_url(
                &format!("/nodes/{}/qemu/{vmid}/vncwebsocket", h.node),
                &[("port", port.as_str()), ("vncticket", ticket.as_str())],
            )
            .map_err(|m| Error::internal(format!("vncwebsocket URL: {m}")))?;
        // The API token, or the ticket of the login that asked for the VNC ticket (PVE ties the
        // two to one user).
        let (name, value) = self.client.upgrade_header().await?;
        let upstream = ConsoleUpstream::websocket(ws, self.conn.trust.clone())
            .with_header(name, value)
            .with_subprotocol("binary")
            .with_handshake(ConsoleHandshake::VncPassword(password));
        // PVE accepts a ticket's websocket for 40 s after vncproxy.
        let expires_at = Utc::now() + chrono::Duration::seconds(VNC_TICKET_SECS);
        // For operators (embedded mode): the PVE web UI's own console page for this VM; the
        // ticket stays in the upstream.
        let ui = format!(
            "{}/?console=kvm&novnc=1&vmid={vmid}&node={}",
            self.conn.api.trim_end_matches("/api2/json"),
            h.node
        );
        Ok(Console::new(ConsoleKind::Vnc, ui, expires_at).with_upstream(upstream))
    }

    async fn snapshot_vm(&self, ctx: &OpContext, args: SnapshotVm) -> Result<SnapshottedVm> {
        let name = args.name.clone();
        check_snapshot_name(&name)?;
        let (h, vmid) = self.resolve(&args.target).await?;
        // A running VM's snapshot holds its memory (`vmstate`), so a revert resumes it.
        let memory = matches!(
            self.status(&h.node, vmid).await?,
            PowerState::Running | PowerState::Paused
        );
        let path = format!("/nodes/{}/qemu/{vmid}/snapshot", h.node);
        let mut form = vec![("snapname", name.clone())];
        if memory {
            form.push(("vmstate", "1".to_string()));
        }
        self.write(ctx, &h, "snapshot", || self.client.post(&path, &form))
            .await?;
        if memory {
            ctx.info(format!("took snapshot {name} with the VM's memory"));
        } else {
            ctx.info(format!("took snapshot {name} of the disks"));
        }
        Ok(SnapshottedVm::new(format!("{vmid}@{name}")))
    }

    async fn list_snapshots(&self, args: ListSnapshots) -> Result<Vec<NativeSnapshot>> {
        let (h, vmid) = self.resolve(&args.target).await?;
        self.snapshots(&h.node, vmid).await
    }

    async fn revert_snapshot(
        &self,
        ctx: &OpContext,
        args: RevertSnapshot,
    ) -> Result<RevertedSnapshot> {
        check_snapshot_name(&args.name)?;
        let (h, vmid) = self.resolve(&args.target).await?;
        let Some(snap) = self
            .snapshots(&h.node, vmid)
            .await?
            .into_iter()
            .find(|s| s.name == args.name)
        else {
            return Err(missing_snapshot(&args.name));
        };
        let path = format!(
            "/nodes/{}/qemu/{vmid}/snapshot/{}/rollback",
            h.node, args.name
        );
        // PVE starts a VM whose snapshot holds memory by itself; `start=1` says so explicitly
        // (PVE documents it as implied then) and is left out for disk-only snapshots, which
        // leave the VM stopped.
        let form: Vec<(&str, String)> = if snap.memory {
            vec![("start", "1".to_string())]
        } else {
            Vec::new()
        };
        self.write(ctx, &h, "revert", || self.client.post(&path, &form))
            .await?;
        // The reply reports the power state PVE shows now, not the one expected.
        let power = self.status(&h.node, vmid).await?;
        let memory_kept = snap.memory && power == PowerState::Running;
        ctx.info(format!(
            "reverted to snapshot {}; the VM is {power}",
            args.name
        ));
        Ok(RevertedSnapshot::new(memory_kept, power))
    }

    async fn resize_vm(&self, ctx: &OpContext, args: ResizeVm) -> Result<ResizedVm> {
        let (h, vmid) = self.resolve(&args.target).await?;
        let facts = VmFacts {
            vmid,
            name: String::new(),
            power: self.status(&h.node, vmid).await?,
            config: self.config(&h.node, vmid).await?,
        };
        let disk = &self.settings.disk;
        let now = facts.resources(disk);
        if let Some(want) = args.disk_gib
            && want < now.disk_gib
        {
            return Err(Error::invalid(
                "disk_gib",
                format!(
                    "is {want} GiB, below the disk's {} GiB; a disk only grows",
                    now.disk_gib
                ),
            ));
        }
        let mut form: Vec<(&str, String)> = Vec::new();
        // vCPUs are cores × sockets; HCP's VMs have one socket.
        let sockets = facts
            .config
            .get("sockets")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(1);
        if let Some(v) = args.vcpus
            && (v != now.vcpus || sockets != 1)
        {
            form.push(("cores", v.to_string()));
            form.push(("sockets", "1".to_string()));
        }
        if let Some(m) = args.memory_mib
            && m != now.memory_mib
        {
            form.push(("memory", m.to_string()));
        }
        let running = !matches!(facts.power, PowerState::Stopped);
        let mut restart_needed = false;
        if !form.is_empty() {
            let path = format!("/nodes/{}/qemu/{vmid}/config", h.node);
            self.write(ctx, &h, "configure", || self.client.put(&path, &form))
                .await?;
            restart_needed = running;
            let what: Vec<String> = form
                .iter()
                .filter(|(k, _)| *k != "sockets")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if running {
                ctx.info(format!(
                    "set {} as a pending change for VM {vmid}'s next restart",
                    what.join(", ")
                ));
            } else {
                ctx.info(format!("set {} on VM {vmid}", what.join(", ")));
            }
        }
        if let Some(want) = args.disk_gib
            && want > now.disk_gib
        {
            if !facts.config.contains_key(disk.as_str()) {
                return Err(Error::invalid(
                    "disk_gib",
                    format!("VM {vmid} has no disk {disk} to grow"),
                ));
            }
            let path = format!("/nodes/{}/qemu/{vmid}/resize", h.node);
            let form = [("disk", disk.clone()), ("size", format!("{want}G"))];
            self.write(ctx, &h, "resize", || self.client.put(&path, &form))
                .await?;
            ctx.info(format!("grew disk {disk} to {want} GiB"));
        }
        Ok(ResizedVm::new(restart_needed))
    }

    async fn delete_snapshot(
        &self,
        ctx: &OpContext,
        args: DeleteSnapshot,
    ) -> Result<DeletedSnapshot> {
        check_snapshot_name(&args.name)?;
        let (h, vmid) = self.resolve(&args.target).await?;
        if !self
            .snapshots(&h.node, vmid)
            .await?
            .iter()
            .any(|s| s.name == args.name)
        {
            return Ok(DeletedSnapshot::new(false));
        }
        let path = format!("/nodes/{}/qemu/{vmid}/snapshot/{}", h.node, args.name);
        match self
            .write(ctx, &h, "delete snapshot", || {
                self.client.delete(&path, &[])
            })
            .await
        {
            Ok(_) => {}
            // Deleted by someone else between the list and the delete.
            Err(e) if is_missing_snapshot(&e) => return Ok(DeletedSnapshot::new(false)),
            Err(e) => return Err(e),
        }
        ctx.info(format!("deleted snapshot {}", args.name));
        Ok(DeletedSnapshot::new(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn disk_sizes_and_power() {
        assert_eq!(disk_size_gib("local-lvm:vm-1-disk-0,size=32G"), Some(32));
        assert_eq!(disk_size_gib("local:1/x.qcow2,size=512M"), Some(1));
        assert_eq!(disk_size_gib("x,size=2T"), Some(2048));
        assert_eq!(disk_size_gib("x,cache=none"), None);
        assert_eq!(disk_size_gib("x,size=abcG"), None);
        assert_eq!(
            power_of(&json!({"status": "running", "qmpstatus": "paused"})),
            PowerState::Paused
        );
        assert_eq!(power_of(&json!({"status": "stopped"})), PowerState::Stopped);
        assert_eq!(power_of(&json!({"status": "unknown"})), PowerState::Unknown);
        assert_eq!(vmid_of(&json!({"vmid": "101"})), Some(101));
        assert!(is_template(&json!({"template": 1})));
        assert!(!is_template(&json!({"template": 0})));
    }

    fn names(l: &[NativeSnapshot]) -> Vec<&str> {
        l.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn a_pve_snapshot_list_reads_oldest_first_without_current() {
        // PVE 8's answer in the order a Perl hash gave it: the first snapshot has no `parent`,
        // `current` ("You are here!") is the VM itself, `vmstate` marks a memory snapshot.
        let listed = json!([
            {"name": "after-upgrade", "parent": "before-upgrade", "snaptime": 1_700_000_500,
             "vmstate": 0, "description": "disks only"},
            {"name": "current", "parent": "after-upgrade", "running": 1,
             "digest": "4c1e0c0d", "description": "You are here!"},
            {"name": "before-upgrade", "snaptime": 1_700_000_000, "vmstate": 1,
             "description": ""},
        ]);
        let l = snapshots_of(&listed);
        assert_eq!(names(&l), ["before-upgrade", "after-upgrade"]);
        assert!(l[0].memory);
        assert!(!l[1].memory);
        assert_eq!(
            l[0].created_at,
            DateTime::<Utc>::from_timestamp(1_700_000_000, 0)
        );
    }

    #[test]
    fn snapshots_of_one_second_order_by_their_parent_chain() {
        // Three snapshots within a second (fakepve at time scale 0, or a script against PVE),
        // listed newest first; then a branch taken after a revert to `s1`.
        let listed = json!([
            {"name": "s3", "parent": "s2", "snaptime": "1700000000", "vmstate": "1"},
            {"name": "s2", "parent": "s1", "snaptime": 1_700_000_000, "vmstate": 0},
            {"name": "s1", "snaptime": 1_700_000_000, "vmstate": 0},
            {"name": "branch", "parent": "s1", "snaptime": 1_700_000_009},
            {"name": "current", "parent": "branch"},
        ]);
        let l = snapshots_of(&listed);
        assert_eq!(names(&l), ["s1", "s2", "s3", "branch"]);
        assert!(l[2].memory, "vmstate as a string");
        assert!(l[3].created_at.is_some());
        // A reply whose parents loop still lists each snapshot once.
        let looped = json!([
            {"name": "a", "parent": "b", "snaptime": 5},
            {"name": "b", "parent": "a", "snaptime": 5},
        ]);
        assert_eq!(snapshots_of(&looped).len(), 2);
        // No snaptime: no creation time, listed first.
        let bare = snapshots_of(&json!([{"name": "x"}, {"name": "current"}]));
        assert_eq!(names(&bare), ["x"]);
        assert_eq!(bare[0].created_at, None);
        assert!(snapshots_of(&json!({"unexpected": true})).is_empty());
    }

    #[test]
    fn snapshot_names_follow_pve() {
        for ok in ["s1", "before-upgrade", "a_b", &"a".repeat(40)] {
            check_snapshot_name(ok).unwrap();
        }
        for bad in [
            "",
            "a",
            "1st",
            "has space",
            "a/b",
            "../x",
            &"a".repeat(41),
            "é",
        ] {
            let e = check_snapshot_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{bad}");
            assert_eq!(e.field(), Some("name"));
        }
    }
}
