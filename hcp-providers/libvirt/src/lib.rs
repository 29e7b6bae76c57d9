//! # hcp-provider-libvirt
//!
//! HCP's libvirt/KVM provider: real QEMU/KVM virtual machines on one or more libvirt hosts
//! (`qemu:///system`, `qemu+ssh://host/system`, `qemu+tls://host/system`), through the `virt`
//! crate (libvirt's Rust bindings; it links `libvirt.so`, so the CLI and server build it only with
//! their `libvirt` feature).
//!
//! - **Create**: a qcow2 overlay on the image's base volume in a storage pool (or a full qcow2
//!   copy with `full_copy`), a domain defined from generated XML (vCPUs, memory, disk, NICs on
//!   libvirt networks, bridges or user-mode NAT, VNC bound to loopback, a serial console), then
//!   started. HCP's vm id, project, image, flavor, zone and tags live in the domain's
//!   `<metadata>` under HCP's namespace ([`xml::HCP_NS`]), so an HCP restarted with an empty
//!   store rebuilds ownership from the hosts.
//! - **Cloud-init**: user-data and meta-data go into a NoCloud seed ISO built by `genisoimage`
//!   and attached as a CD-ROM.
//! - **Power**: start; stop = ACPI shutdown, then destroy once the graceful timeout passes (or
//!   at once with `force`); reboot = a guest reboot request (ACPI), or a reset with `hard`.
//!   A guest without an OS ignores ACPI: its graceful stop ends in a destroy, and its graceful
//!   reboot leaves it running without rebooting (use `hard` to reset it).
//! - **Delete**: the domain, the volumes HCP made for it (overlay, seed ISO), its NVRAM and
//!   snapshot metadata; never the base image.
//! - **Resize**: vCPUs and memory written to the domain's definition (`virDomainSetVcpusFlags`,
//!   `virDomainSetMemoryFlags` with `CONFIG`; a running guest sees them after a restart, which
//!   HCP's resize job does when the caller allows `reboot`); a disk grows with
//!   `virDomainBlockResize` while the domain runs, `virStorageVolResize` while it is off, and
//!   never shrinks.
//! - **Snapshots**: internal qcow2 snapshots (`virDomainSnapshotCreateXML`); every HCP disk is
//!   qcow2, and the read-only seed ISO is excluded.
//! - **Console**: [`Provider::console`] returns the domain's VNC socket as `upstream`
//!   (`127.0.0.1:5900`), for HCP's WebSocket proxy to connect to.
//! - **Errors**: classified in one place, [`error::parse_error`].
//! - **Connections**: one per host, re-opened after libvirtd restarts; an unreachable host is
//!   reported unavailable while the others keep working.
//!
//! ```no_run
//! # async fn demo() -> hcp_core::Result<()> {
//! let config = hcp_core::Config::from_file("examples/config/libvirt.yaml".as_ref())?;
//! let engine = hcp_provider_libvirt::register(hcp_core::Engine::builder(config))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```

mod client;
pub mod config;
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub mod error;
mod seed;
pub mod xml;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use hcp_core::{
    Capabilities, Console, ConsoleKind, ConsoleUpstream, CreateVm, CreatedVm, DeleteSnapshot,
    DeleteVm, DeletedSnapshot, DeletedVm, Error, ErrorKind, GetConsole, HostInfo, HostInventory,
    HostInventoryReply, ListSnapshots, LogEntry, MarkedVm, NativeSnapshot, OpContext, Operation,
    PowerState, Provider, ProviderConfig, ProviderInfo, RebootVm, RebootedVm, ResizeVm, ResizedVm,
    Result, RevertSnapshot, RevertedSnapshot, Secrets, SetMark, SnapshotVm, SnapshottedVm, StartVm,
    StartedVm, StopVm, StoppedVm,
};
use virt::connect::Connect;
use virt::domain::Domain;

pub use crate::client::PoolInfo;
use crate::client::{HostClient, HostFacts};
pub use crate::config::{HostSettings, LibvirtSettings, NetworkBinding};
use crate::error::parse_error;

/// The provider kind name used in hosts files.
pub const KIND: &str = "libvirt";

/// How often a graceful stop looks at the domain's state.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Registers the libvirt provider kind on an engine builder.
pub fn register(builder: hcp_core::EngineBuilder) -> hcp_core::EngineBuilder {
    builder.provider_kind(KIND, |c: &ProviderConfig, s: &Secrets| {
        let p: Arc<dyn Provider> = Arc::new(LibvirtProvider::from_config(c, s)?);
        Ok(p)
    })
}

/// One libvirt host of a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtHost {
    /// The host name HCP uses.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// Its libvirt URI.
    pub uri: String,
    /// vCPUs to report before HCP first reaches it.
    pub vcpus: Option<u32>,
    /// Memory (MiB) to report before HCP first reaches it.
    pub memory_mib: Option<u64>,
}

impl LibvirtHost {
    /// Describes host `name` in `zone` at `uri`.
    pub fn new(name: impl Into<String>, zone: impl Into<String>, uri: impl Into<String>) -> Self {
        LibvirtHost {
            name: name.into(),
            zone: zone.into(),
            uri: uri.into(),
            vcpus: None,
            memory_mib: None,
        }
    }
}

/// The libvirt provider: a set of libvirt hosts sharing one set of [`LibvirtSettings`].
#[derive(Debug)]
pub struct LibvirtProvider {
    name: String,
    settings: Arc<LibvirtSettings>,
    hosts: BTreeMap<String, Arc<HostClient>>,
    declared: Capabilities,
}

impl LibvirtProvider {
    /// Builds the provider from its section of the hosts file.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the bad setting.
    pub fn from_config(config: &ProviderConfig, _secrets: &Secrets) -> Result<Self> {
        let settings = LibvirtSettings::from_value(&config.name, &config.settings)?;
        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                let s = HostSettings::from_value(&config.name, &h.name, &h.settings)?;
                Ok(LibvirtHost {
                    name: h.name.clone(),
                    zone: h.zone.clone(),
                    uri: s.uri,
                    vcpus: h.vcpus,
                    memory_mib: h.memory_mib,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LibvirtProvider::new(&config.name, settings, hosts))
    }

    /// Builds a provider named `name` over `hosts`. No host is contacted until it is used.
    pub fn new(name: &str, settings: LibvirtSettings, hosts: Vec<LibvirtHost>) -> Self {
        // libvirt prints every error to stderr by default; HCP reports them itself.
        virt::error::clear_error_callback();
        let declared = Capabilities {
            cloud_init: seed::find_tool(&settings.iso_tool).is_some(),
            snapshot: true,
            console_vnc: true,
            tags: true,
            resize: true,
            adopt: true,
            ..Default::default()
        };
        if !declared.cloud_init {
            tracing::warn!(
                provider = name,
                tool = %settings.iso_tool,
                "cloud-init is off: the seed ISO tool is not installed"
            );
        }
        LibvirtProvider {
            name: name.to_string(),
            hosts: hosts
                .into_iter()
                .map(|h| {
                    let client = HostClient::new(&h.name, &h.zone, &h.uri, h.vcpus, h.memory_mib);
                    (h.name, Arc::new(client))
                })
                .collect(),
            settings: Arc::new(settings),
            declared,
        }
    }

    /// Returns the settings.
    pub fn settings(&self) -> &LibvirtSettings {
        &self.settings
    }

    /// Lists a host's storage pools with their capacity and volumes.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown host; [`ErrorKind::ProviderUnavailable`] when it
    /// cannot be reached.
    pub async fn storage_pools(&self, host: &str) -> Result<Vec<PoolInfo>> {
        self.run(Operation::HostInventory, host, |c, _, _| client::pools(c))
            .await
    }

    fn host(&self, name: &str) -> Result<Arc<HostClient>> {
        self.hosts.get(name).cloned().ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "the VM's host is not configured")
                .with_detail(format!("host `{name}` is not a host of this provider"))
                .with_context("provider", &self.name)
        })
    }

    /// Runs `f` with host `host`'s connection on the blocking pool, within the call timeout.
    ///
    /// # Behavior
    /// A libvirt call cannot be interrupted once it runs. So a call that times out, or whose
    /// caller goes away (a cancelled or timed-out job drops it), is counted on its host until it
    /// ends, and every later call on that host first waits for it (up to the call timeout).
    /// A retry therefore never runs beside the attempt it replaces. The timeout error is
    /// temporary only for operations that are safe to repeat ([`hcp_core::Repeat`]).
    async fn run<T, F>(&self, op: Operation, host: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Connect, &HostFacts, &LibvirtSettings) -> Result<T> + Send + 'static,
    {
        let h = self.host(host)?;
        let settings = self.settings.clone();
        let timeout = settings.call_timeout;
        if !h.settled(timeout).await {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                format!(
                    "an earlier libvirt call that was given up has not ended after {}; calls wait for it",
                    humantime::format_duration(timeout)
                ),
            )
            .with_detail(format!("host `{host}`"))
            .with_operation(op)
            .temporary());
        }
        let task = tokio::task::spawn_blocking({
            let h = h.clone();
            move || h.call(&settings, |c, facts| f(c, facts, &settings))
        });
        let pending = Pending {
            task: Some(task),
            host: h,
        };
        match pending.wait(timeout).await {
            Some(Ok(r)) => r.map_err(|e| e.with_operation(op)),
            Some(Err(join)) => Err(Error::internal("a libvirt call panicked")
                .with_detail(format!("host `{host}`: {join}"))),
            None => {
                let e = Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "libvirt did not answer within {}; the host's next calls wait for this one to end",
                        humantime::format_duration(timeout)
                    ),
                )
                .with_detail(format!("host `{host}`"))
                .with_operation(op);
                Err(if op.repeat().may_repeat() {
                    e.temporary()
                } else {
                    e
                })
            }
        }
    }

    async fn state(&self, op: Operation, t: &hcp_core::VmTarget) -> Result<PowerState> {
        let target = t.clone();
        self.run(op, &t.host, move |c, _, _| {
            client::power(&client::require(c, &target)?.dom)
        })
        .await
    }
}

/// A blocking libvirt call in flight; dropped before it ends (a timeout, or a caller that went
/// away), it is handed to its host to be waited for.
struct Pending<T: Send + 'static> {
    task: Option<tokio::task::JoinHandle<T>>,
    host: Arc<HostClient>,
}

impl<T: Send + 'static> Pending<T> {
    /// Waits at most `timeout` for the call: its outcome, or `None` when it still runs (it is
    /// then handed to its host as this is dropped).
    async fn wait(
        mut self,
        timeout: Duration,
    ) -> Option<std::result::Result<T, tokio::task::JoinError>> {
        let r = tokio::time::timeout(timeout, self.task.as_mut()?)
            .await
            .ok()?;
        self.task = None;
        Some(r)
    }
}

impl<T: Send + 'static> Drop for Pending<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take()
            && !task.is_finished()
        {
            self.host.abandon(task);
        }
    }
}

fn conflict(msg: String) -> Error {
    Error::new(ErrorKind::Conflict, msg)
}

/// Checks a new snapshot's name: 1-64 letters, digits, '-', '_' or '.', not starting with '.'.
/// libvirt keeps each snapshot's definition in a file named after it (so never a '/'), and QEMU
/// stores an internal snapshot's name as its tag in the qcow2 image; HCP keeps to names that are
/// safe in both.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `name`.
fn check_snapshot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "a libvirt snapshot name is 1-64 letters, digits, '-', '_' or '.', not starting with '.'",
        ))
    }
}

#[async_trait]
impl Provider for LibvirtProvider {
    fn info(&self) -> ProviderInfo {
        let version = virt::connect::Connect::version()
            .map(|v| format!("libvirt {}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000))
            .unwrap_or_else(|_| "libvirt".into());
        ProviderInfo {
            name: self.name.clone(),
            kind: KIND.into(),
            version: format!("{} ({version})", env!("CARGO_PKG_VERSION")),
        }
    }

    fn check_snapshot_name(&self, name: &str) -> Result<()> {
        check_snapshot_name(name)
    }

    fn capabilities(&self) -> Capabilities {
        self.declared
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        Ok(self
            .hosts
            .values()
            .map(|h| h.info(&self.settings, self.declared))
            .collect())
    }

    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        let h = self.host(&args.host)?;
        let declared = self.declared;
        self.run(Operation::HostInventory, &args.host, move |c, facts, s| {
            client::inventory(c, facts, s, h.info(s, declared))
        })
        .await
    }

    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm> {
        if args.user_data.is_some() && !self.declared.cloud_init {
            return Err(Error::unsupported(
                &self.name,
                Operation::CreateVm,
                "cloud_init",
                "install genisoimage on the HCP host",
            ));
        }
        let ctx = ctx.clone();
        let host = args.host.clone();
        self.run(Operation::CreateVm, &host, move |c, facts, s| {
            client::create(c, facts, s, &args, &ctx)
        })
        .await
    }

    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        let host = args.target.host.clone();
        let name = args.target.name.clone();
        let r = self
            .run(Operation::DeleteVm, &host, move |c, _, s| {
                client::delete(c, s, &args)
            })
            .await?;
        if r.existed {
            ctx.info(format!("deleted domain {name} and its volumes"));
        }
        Ok(r)
    }

    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        let t = args.target;
        let host = t.host.clone();
        let r = self
            .run(Operation::StartVm, &host, move |c, _, _| {
                let found = client::require(c, &t)?;
                match client::power(&found.dom)? {
                    PowerState::Running => Ok(StartedVm::new(true)),
                    PowerState::Paused => {
                        found.dom.resume().map_err(|e| parse_error(&e))?;
                        Ok(StartedVm::new(false))
                    }
                    PowerState::Stopped | PowerState::Unknown => {
                        found.dom.create().map_err(|e| parse_error(&e))?;
                        Ok(StartedVm::new(false))
                    }
                }
            })
            .await?;
        if !r.was_running {
            ctx.info("started the domain");
        }
        Ok(r)
    }

    async fn stop_vm(&self, ctx: &OpContext, args: StopVm) -> Result<StoppedVm> {
        let t = args.target.clone();
        let host = t.host.clone();
        let force = args.force;
        // Ask first: a hard stop, or an ACPI shutdown request.
        let was_stopped = self
            .run(Operation::StopVm, &host, move |c, _, _| {
                let found = client::require(c, &t)?;
                if !found.dom.is_active().map_err(|e| parse_error(&e))? {
                    return Ok(true);
                }
                if force {
                    client::destroy(&found.dom)?;
                } else {
                    match found.dom.shutdown() {
                        Ok(()) => {}
                        // Stopped between the check and the request.
                        Err(e) if parse_error(&e).kind() == ErrorKind::Conflict => {}
                        Err(e) => return Err(parse_error(&e)),
                    }
                }
                Ok(false)
            })
            .await?;
        if was_stopped {
            return Ok(StoppedVm::new(true, false));
        }
        if force {
            ctx.info("powered the domain off");
            return Ok(StoppedVm::new(false, true));
        }
        ctx.info(format!(
            "asked the guest to shut down (ACPI); waiting up to {}s",
            args.graceful_timeout.as_secs()
        ));
        let deadline = Instant::now() + args.graceful_timeout;
        loop {
            if self.state(Operation::StopVm, &args.target).await? == PowerState::Stopped {
                return Ok(StoppedVm::new(false, false));
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(STOP_POLL.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
        let t = args.target.clone();
        let host = t.host.clone();
        self.run(Operation::StopVm, &host, move |c, _, _| {
            client::destroy(&client::require(c, &t)?.dom)
        })
        .await?;
        ctx.warn("the guest did not shut down in time; powered it off");
        Ok(StoppedVm::new(false, true))
    }

    async fn reboot_vm(&self, ctx: &OpContext, args: RebootVm) -> Result<RebootedVm> {
        let t = args.target;
        let host = t.host.clone();
        let hard = args.hard;
        let name = t.name.clone();
        self.run(Operation::RebootVm, &host, move |c, _, _| {
            let found = client::require(c, &t)?;
            match client::power(&found.dom)? {
                PowerState::Running => {}
                p => {
                    return Err(conflict(format!(
                        "VM `{}` is {p}; only a running VM can reboot",
                        t.name
                    )));
                }
            }
            if hard {
                found.dom.reset().map_err(|e| parse_error(&e))?;
            } else {
                found.dom.reboot(0).map_err(|e| parse_error(&e))?;
            }
            // A guest may answer a reboot request by powering off: bring it back.
            if !found.dom.is_active().map_err(|e| parse_error(&e))? {
                found.dom.create().map_err(|e| parse_error(&e))?;
            }
            Ok(())
        })
        .await?;
        ctx.info(if hard {
            format!("reset domain {name}")
        } else {
            format!("asked the guest of {name} to reboot")
        });
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
                "libvirt hosts offer VNC consoles",
            ));
        }
        let t = args.target;
        let host = t.host.clone();
        let h = self.host(&t.host)?;
        let uri = h.uri.clone();
        let (host, port) = self
            .run(Operation::Console, &host, move |c, _, _| {
                let found = client::require(c, &t)?;
                if client::power(&found.dom)? != PowerState::Running {
                    return Err(conflict(format!(
                        "VM `{}` is not running; a console needs a running VM",
                        t.name
                    )));
                }
                client::vnc_endpoint(&found.dom, &uri)
            })
            .await?;
        let ttl = chrono::Duration::from_std(self.settings.console_ttl)
            .unwrap_or_else(|_| chrono::Duration::seconds(60));
        let upstream = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Console::new(
            ConsoleKind::Vnc,
            format!("vnc://{upstream}"),
            Utc::now() + ttl,
        )
        .with_upstream(ConsoleUpstream::tcp(upstream)))
    }

    async fn list_snapshots(&self, args: ListSnapshots) -> Result<Vec<NativeSnapshot>> {
        let t = args.target;
        let host = t.host.clone();
        self.run(Operation::ListSnapshots, &host, move |c, _, _| {
            let found = client::require(c, &t)?;
            // Parents before children: libvirt's creation times have one-second resolution,
            // so two snapshots taken within a second tie and keep this order in the stable sort
            // below (without the flag the order of a tie is libvirt's hash order).
            let snaps = found
                .dom
                .list_all_snapshots(virt::sys::VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
                .map_err(|e| parse_error(&e))?;
            let mut out = Vec::with_capacity(snaps.len());
            for s in snaps {
                let d = xml::parse_snapshot(&s.xml_desc(0).map_err(|e| parse_error(&e))?)?;
                out.push(d);
            }
            out.sort_by_key(|d| d.created);
            Ok(out
                .into_iter()
                .map(|d| {
                    let at = d
                        .created
                        .and_then(|s| chrono::DateTime::<Utc>::from_timestamp(s, 0));
                    NativeSnapshot::new(&d.name, at, d.memory())
                })
                .collect())
        })
        .await
    }

    async fn revert_snapshot(
        &self,
        ctx: &OpContext,
        args: RevertSnapshot,
    ) -> Result<RevertedSnapshot> {
        let t = args.target;
        let name = args.name;
        let host = t.host.clone();
        let r = self
            .run(Operation::RevertSnapshot, &host, move |c, _, _| {
                let found = client::require(c, &t)?;
                let snap = Domain::lookup_snapshot_by_name(&found.dom, &name, 0)
                    .map_err(|e| parse_error(&e))?;
                let d = xml::parse_snapshot(&snap.xml_desc(0).map_err(|e| parse_error(&e))?)?;
                snap.revert(0).map_err(|e| parse_error(&e))?;
                Ok(RevertedSnapshot::new(
                    d.memory(),
                    client::power(&found.dom)?,
                ))
            })
            .await?;
        ctx.info(format!("libvirt reverted the domain; it is {}", r.power));
        Ok(r)
    }

    async fn delete_snapshot(
        &self,
        _ctx: &OpContext,
        args: DeleteSnapshot,
    ) -> Result<DeletedSnapshot> {
        let t = args.target;
        let name = args.name;
        let host = t.host.clone();
        self.run(Operation::DeleteSnapshot, &host, move |c, _, _| {
            let found = client::require(c, &t)?;
            match Domain::lookup_snapshot_by_name(&found.dom, &name, 0) {
                Ok(snap) => {
                    snap.delete(0).map_err(|e| parse_error(&e))?;
                    Ok(DeletedSnapshot::new(true))
                }
                Err(e) if client::is_missing(&e) => Ok(DeletedSnapshot::new(false)),
                Err(e) => Err(parse_error(&e)),
            }
        })
        .await
    }

    /// Writes new vCPUs and memory to the domain's definition (a running guest sees them after
    /// its next boot: `restart_needed`, as [`hcp_core::plan_resize`] says for kind `libvirt`)
    /// and grows its disk, live on a running domain. Never shrinks a disk.
    /// Writes or removes HCP's mark in the domain's `<metadata>` (live and in its definition);
    /// nothing else about the domain changes.
    async fn set_mark(&self, _ctx: &OpContext, args: SetMark) -> Result<MarkedVm> {
        let t = args.target;
        let mark = args.mark;
        let host = t.host.clone();
        let was = self
            .run(Operation::AdoptVm, &host, move |c, _, _| {
                client::set_mark(c, &t, mark.as_ref())
            })
            .await?;
        Ok(MarkedVm::new(was))
    }

    async fn resize_vm(&self, ctx: &OpContext, args: ResizeVm) -> Result<ResizedVm> {
        let t = args.target;
        let host = t.host.clone();
        let (vcpus, memory_mib, disk_gib) = (args.vcpus, args.memory_mib, args.disk_gib);
        let r = self
            .run(Operation::ResizeVm, &host, move |c, _, settings| {
                client::resize(c, settings, &t, vcpus, memory_mib, disk_gib)
            })
            .await?;
        if r.mark_stale {
            ctx.warn("the disk grew, but its recorded size could not be updated on the host");
        }
        if r.restart_needed {
            ctx.info("libvirt wrote the new vCPUs and memory to the domain's definition");
        }
        Ok(ResizedVm::new(r.restart_needed))
    }

    async fn snapshot_vm(&self, ctx: &OpContext, args: SnapshotVm) -> Result<SnapshottedVm> {
        let name = args.name.clone();
        check_snapshot_name(&name)?;
        let t = args.target;
        let host = t.host.clone();
        let id = self
            .run(Operation::SnapshotVm, &host, move |c, _, _| {
                let found = client::require(c, &t)?;
                match Domain::lookup_snapshot_by_name(&found.dom, &name, 0) {
                    Ok(_) => {
                        return Err(conflict(format!(
                            "VM `{}` already has a snapshot named `{name}`",
                            t.name
                        )));
                    }
                    Err(e) if client::is_missing(&e) => {}
                    Err(e) => return Err(parse_error(&e)),
                }
                found
                    .dom
                    .create_snapshot_xml(&xml::snapshot_xml(&name, "taken by HCP"), 0)
                    .map_err(|e| parse_error(&e))?;
                Ok(format!("{}@{name}", found.desc.uuid))
            })
            .await?;
        ctx.log(
            LogEntry::info(format!("took snapshot {}", args.name))
                .with_detail(format!("snapshot id {id}")),
        );
        Ok(SnapshottedVm::new(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A provider on libvirt's own in-process test driver, with a short call timeout.
    fn on_test_driver(timeout: Duration) -> LibvirtProvider {
        let settings = LibvirtSettings {
            call_timeout: timeout,
            ..LibvirtSettings::default()
        };
        LibvirtProvider::new(
            "lv",
            settings,
            vec![LibvirtHost::new("h", "zone-a", "test:///default")],
        )
    }

    #[tokio::test]
    async fn a_call_given_up_is_waited_for_before_the_next_call_on_its_host() {
        let p = on_test_driver(Duration::from_millis(300));
        let first_done = Arc::new(AtomicBool::new(false));
        let done = first_done.clone();
        // A reboot whose libvirt call takes longer than the call timeout.
        let err = p
            .run(Operation::RebootVm, "h", move |_, _, _| {
                std::thread::sleep(Duration::from_millis(500));
                done.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(!err.is_temporary(), "a reboot is not safe to repeat: {err}");
        assert!(
            !first_done.load(Ordering::SeqCst),
            "answered before the call ended"
        );

        // The next call on the host runs only once the first has ended.
        let seen = first_done.clone();
        let ran_after = p
            .run(Operation::StartVm, "h", move |_, _, _| {
                Ok(seen.load(Ordering::SeqCst))
            })
            .await
            .unwrap();
        assert!(ran_after, "the next call ran beside the given-up one");

        // A safe call that times out is temporary: the job may run it again.
        let err = p
            .run(Operation::StartVm, "h", |_, _, _| {
                std::thread::sleep(Duration::from_millis(400));
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(err.is_temporary(), "{err}");
    }

    #[tokio::test]
    async fn a_host_whose_given_up_call_does_not_end_refuses_for_now() {
        let p = on_test_driver(Duration::from_millis(100));
        let _ = p
            .run(Operation::MigrateVm, "h", |_, _, _| {
                std::thread::sleep(Duration::from_millis(800));
                Ok(())
            })
            .await
            .unwrap_err();
        let err = p
            .run(Operation::StartVm, "h", |_, _, _| Ok(()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProviderUnavailable, "{err}");
        assert!(err.is_temporary(), "{err}");
        assert!(err.message().contains("has not ended"), "{err}");
    }

    #[tokio::test]
    async fn a_call_whose_caller_went_away_is_waited_for_too() {
        let p = on_test_driver(Duration::from_secs(5));
        let first_done = Arc::new(AtomicBool::new(false));
        let done = first_done.clone();
        // The caller (a cancelled job) drops the call after 100 ms.
        let dropped = tokio::time::timeout(
            Duration::from_millis(100),
            p.run(Operation::CreateVm, "h", move |_, _, _| {
                std::thread::sleep(Duration::from_millis(600));
                done.store(true, Ordering::SeqCst);
                Ok(())
            }),
        )
        .await;
        assert!(dropped.is_err());
        let seen = first_done.clone();
        let ran_after = p
            .run(Operation::DeleteVm, "h", move |_, _, _| {
                Ok(seen.load(Ordering::SeqCst))
            })
            .await
            .unwrap();
        assert!(
            ran_after,
            "a cleanup ran beside the create it cleans up after"
        );
    }

    #[test]
    fn snapshot_names_are_safe_as_file_names_and_qcow2_tags() {
        for ok in ["s1", "before-upgrade", "v1.2_rc", &"a".repeat(64)] {
            check_snapshot_name(ok).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "../x",
            "has space",
            "é",
            &"a".repeat(65),
        ] {
            let e = check_snapshot_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{bad}");
            assert_eq!(e.field(), Some("name"), "{bad}");
        }
    }
}
