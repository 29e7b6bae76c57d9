//! The wire side: one libvirt connection per host, re-opened after libvirtd restarts, and the
//! blocking libvirt call sequences of every operation. The `virt` crate is blocking C FFI, so
//! the provider runs these functions on tokio's blocking pool.

use std::sync::{Arc, Mutex};

use hcp_core::{
    CreateVm, CreatedVm, DeleteVm, DeletedVm, Error, ErrorKind, HcpMark, HostInfo,
    HostInventoryReply, LogEntry, NativeVm, OpContext, PowerState, Resources, Result, VmTarget,
};
use virt::connect::Connect;
use virt::domain::{Domain, DomainState};
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;

use crate::config::{LibvirtSettings, NetworkBinding};
use crate::error::parse_error;
use crate::seed;
use crate::xml::{self, DomainDesc, DomainPlan, Nic};

const GIB: u64 = 1 << 30;

/// What HCP learnt about a host the last time it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostFacts {
    /// The domain type new domains get (`kvm`, `qemu`, `test`).
    pub domain_type: String,
    /// The libvirt driver (`QEMU`, `Test`).
    pub driver: String,
    /// Host CPUs.
    pub cpus: u32,
    /// Host memory in MiB.
    pub memory_mib: u64,
}

/// One libvirt host: its URI and a shared connection (libvirt connections are thread-safe).
pub(crate) struct HostClient {
    pub name: String,
    pub zone: String,
    pub uri: String,
    pub vcpus_hint: Option<u32>,
    pub memory_hint: Option<u64>,
    conn: Mutex<Option<Arc<Connect>>>,
    facts: Mutex<Option<HostFacts>>,
    /// How many calls on this host were given up (timed out, or their caller went away)
    /// while their blocking libvirt call still runs.
    abandoned: Arc<tokio::sync::watch::Sender<usize>>,
}

impl std::fmt::Debug for HostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostClient")
            .field("name", &self.name)
            .field("zone", &self.zone)
            .field("uri", &crate::error::redact(&self.uri))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// True for libvirt errors that mean "no such object".
pub(crate) fn is_missing(e: &virt::error::Error) -> bool {
    parse_error(e).kind() == ErrorKind::NotFound
}

/// True for HCP errors that mean the connection is gone.
fn is_connection_error(e: &Error) -> bool {
    e.kind() == ErrorKind::ProviderUnavailable && e.is_temporary()
}

fn lv<T>(r: std::result::Result<T, virt::error::Error>) -> Result<T> {
    r.map_err(|e| parse_error(&e))
}

impl HostClient {
    /// Counts `task`, a blocking call whose caller gave up on it, until it ends; calls on this
    /// host wait for it first ([`HostClient::settled`]), so a retry never runs beside it.
    pub(crate) fn abandon<T: Send + 'static>(&self, task: tokio::task::JoinHandle<T>) {
        self.abandoned.send_modify(|n| *n = n.saturating_add(1));
        let count = self.abandoned.clone();
        let settle = async move {
            let _ = task.await;
            count.send_modify(|n| *n = n.saturating_sub(1));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(settle);
            }
            // Outside a runtime nobody can wait for it either: forget the count.
            Err(_) => self.abandoned.send_modify(|n| *n = n.saturating_sub(1)),
        }
    }

    /// Waits, at most `within`, until no given-up call on this host is still running; returns
    /// whether none is.
    pub(crate) async fn settled(&self, within: std::time::Duration) -> bool {
        let mut rx = self.abandoned.subscribe();
        matches!(
            tokio::time::timeout(within, rx.wait_for(|n| *n == 0)).await,
            Ok(Ok(_))
        )
    }

    pub(crate) fn new(
        name: &str,
        zone: &str,
        uri: &str,
        vcpus_hint: Option<u32>,
        memory_hint: Option<u64>,
    ) -> Self {
        HostClient {
            name: name.into(),
            zone: zone.into(),
            uri: uri.into(),
            vcpus_hint,
            memory_hint,
            conn: Mutex::new(None),
            facts: Mutex::new(None),
            abandoned: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Returns the facts of the last connection, if any.
    pub(crate) fn facts(&self) -> Option<HostFacts> {
        lock(&self.facts).clone()
    }

    /// Returns the open connection, opening one when there is none or it died; the flag says
    /// whether it is new.
    fn connection(&self, settings: &LibvirtSettings) -> Result<(Arc<Connect>, bool)> {
        let mut slot = lock(&self.conn);
        if let Some(c) = slot.as_ref()
            && c.is_alive().unwrap_or(false)
        {
            return Ok((c.clone(), false));
        }
        *slot = None;
        let c = Connect::open(Some(&self.uri)).map_err(|e| {
            parse_error(&e)
                .with_context("host", &self.name)
                .with_context("uri", crate::error::redact(&self.uri))
        })?;
        let facts = learn(&c, settings)?;
        *lock(&self.facts) = Some(facts);
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok((c, true))
    }

    /// Drops `c` when it is still the host's connection, so the next call opens a new one.
    fn forget(&self, c: &Arc<Connect>) {
        let mut slot = lock(&self.conn);
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, c)) {
            *slot = None;
        }
    }

    /// Runs `f` on the host's connection. When the connection turns out dead (libvirtd
    /// restarted), reconnects and runs `f` once more: a call that failed on a dead socket never
    /// reached libvirtd.
    ///
    /// # Errors
    /// [`ErrorKind::ProviderUnavailable`] (temporary) when the host cannot be reached, else
    /// `f`'s error.
    pub(crate) fn call<T>(
        &self,
        settings: &LibvirtSettings,
        f: impl Fn(&Connect, &HostFacts) -> Result<T>,
    ) -> Result<T> {
        let (c, fresh) = self.connection(settings)?;
        let facts = self.facts().unwrap_or_else(|| fallback_facts(settings));
        match f(&c, &facts) {
            Err(e) if is_connection_error(&e) => {
                self.forget(&c);
                if fresh {
                    return Err(e.with_context("host", &self.name));
                }
                tracing::info!(host = %self.name, "libvirt connection lost; reconnecting");
                let (c, _) = self.connection(settings)?;
                let facts = self.facts().unwrap_or_else(|| fallback_facts(settings));
                f(&c, &facts).inspect_err(|e| {
                    if is_connection_error(e) {
                        self.forget(&c);
                    }
                })
            }
            r => r,
        }
    }

    /// Returns the host as the provider lists it: what it offers per its live facts and the
    /// allocation ratios when known, else the hosts file's figures.
    pub(crate) fn info(
        &self,
        settings: &LibvirtSettings,
        caps: hcp_core::Capabilities,
    ) -> HostInfo {
        let facts = self.facts();
        HostInfo::new(
            &self.name,
            &self.zone,
            facts
                .as_ref()
                .map(|f| offered_vcpus(f.cpus, settings))
                .or(self.vcpus_hint)
                .unwrap_or(0),
            facts
                .as_ref()
                .map(|f| offered_memory(f.memory_mib, settings))
                .or(self.memory_hint)
                .unwrap_or(0),
            caps,
        )
    }
}

fn offered_vcpus(cpus: u32, settings: &LibvirtSettings) -> u32 {
    (f64::from(cpus) * settings.cpu_allocation_ratio).floor() as u32
}

fn offered_memory(memory_mib: u64, settings: &LibvirtSettings) -> u64 {
    (memory_mib as f64 * settings.memory_allocation_ratio).floor() as u64
}

fn fallback_facts(settings: &LibvirtSettings) -> HostFacts {
    HostFacts {
        domain_type: if settings.domain_type == "auto" {
            "kvm".into()
        } else {
            settings.domain_type.clone()
        },
        driver: String::new(),
        cpus: 0,
        memory_mib: 0,
    }
}

/// Reads the driver, capacity and usable domain type of a freshly opened connection.
fn learn(c: &Connect, settings: &LibvirtSettings) -> Result<HostFacts> {
    let driver = lv(c.driver_type())?;
    let node = lv(c.node_info())?;
    let domain_type = if settings.domain_type != "auto" {
        settings.domain_type.clone()
    } else if driver.eq_ignore_ascii_case("test") {
        "test".into()
    } else {
        let types = xml::guest_domain_types(&lv(c.capabilities())?);
        if types.iter().any(|t| t == "kvm") {
            "kvm".into()
        } else {
            "qemu".into()
        }
    };
    Ok(HostFacts {
        domain_type,
        driver,
        cpus: node.cpus,
        memory_mib: node.memory / 1024,
    })
}

/// A domain HCP found, with what its XML says.
pub(crate) struct Found {
    pub dom: Domain,
    pub desc: DomainDesc,
}

pub(crate) fn describe(dom: &Domain) -> Result<DomainDesc> {
    xml::parse_domain(&lv(dom.xml_desc(0))?)
}

/// Finds the domain of `t`: by native id (UUID), then by name, then by HCP's mark on every
/// domain; each candidate must carry `t`'s vm id.
pub(crate) fn find(c: &Connect, t: &VmTarget) -> Result<Option<Found>> {
    let ours = |d: &DomainDesc| d.mark.as_ref().is_some_and(|m| m.vm_id == t.vm_id);
    let candidates = [
        t.native_id
            .as_deref()
            .map(|id| c.lookup_domain_by_uuid_string(id)),
        Some(c.lookup_domain_by_name(&t.name)),
    ];
    for candidate in candidates.into_iter().flatten() {
        match candidate {
            Ok(dom) => match describe(&dom) {
                Ok(desc) if ours(&desc) => return Ok(Some(Found { dom, desc })),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            },
            Err(e) if is_missing(&e) || e.code().is_known_and(|c| c == ErrorNumber::InvalidArg) => {
            }
            Err(e) => return Err(parse_error(&e)),
        }
    }
    for dom in lv(c.list_all_domains(0))? {
        match describe(&dom) {
            Ok(desc) if ours(&desc) => return Ok(Some(Found { dom, desc })),
            Ok(_) => {}
            // Undefined between the listing and the lookup.
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Finds `t`'s domain or fails with NotFound.
pub(crate) fn require(c: &Connect, t: &VmTarget) -> Result<Found> {
    find(c, t)?.ok_or_else(|| missing(t))
}

pub(crate) fn missing(t: &VmTarget) -> Error {
    Error::not_found("vm", &t.name)
        .with_context("vm_id", &t.vm_id)
        .with_context("native_id", t.native_id.as_deref().unwrap_or("-"))
}

/// Returns a domain's power state.
pub(crate) fn power(dom: &Domain) -> Result<PowerState> {
    let (state, _) = lv(dom.state())?;
    Ok(match state.known() {
        Some(DomainState::Running | DomainState::Blocked | DomainState::Shutdown) => {
            PowerState::Running
        }
        Some(DomainState::Paused | DomainState::PMSuspended) => PowerState::Paused,
        Some(DomainState::Shutoff | DomainState::Crashed) => PowerState::Stopped,
        Some(DomainState::NoState) | None => PowerState::Unknown,
    })
}

fn native(dom: &Domain, desc: DomainDesc) -> Result<NativeVm> {
    let power = power(dom)?;
    Ok(NativeVm::new(
        desc.uuid,
        desc.name,
        power,
        Resources {
            vcpus: desc.vcpus,
            memory_mib: desc.memory_mib,
            disk_gib: desc.disk_gib,
        },
        desc.mark,
    )
    .with_tags(desc.tags))
}

/// Reads a host's inventory: capacity, every domain with its power state and mark, images
/// (base volumes) and attachable networks.
pub(crate) fn inventory(
    c: &Connect,
    facts: &HostFacts,
    settings: &LibvirtSettings,
    host: HostInfo,
) -> Result<HostInventoryReply> {
    let mut host = host;
    host.vcpus_total = offered_vcpus(facts.cpus, settings);
    host.memory_mib_total = offered_memory(facts.memory_mib, settings);
    let mut vms = Vec::new();
    for dom in lv(c.list_all_domains(0))? {
        let desc = match describe(&dom) {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match native(&dom, desc) {
            Ok(vm) => vms.push(vm),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let images = images(c, settings)?;
    let networks = networks(c, settings);
    // What placement reads: the images and networks this host has.
    let host = host
        .with_images(images.iter().map(hcp_core::ImageOffer::new).collect())
        .with_networks(networks.clone());
    Ok(HostInventoryReply::new(host, vms)
        .with_images(images)
        .with_networks(networks))
}

const IMAGE_SUFFIXES: [&str; 4] = ["", ".qcow2", ".img", ".raw"];

/// Lists the catalog images whose base volume exists on the host.
fn images(c: &Connect, settings: &LibvirtSettings) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (image, _) in settings.images.iter() {
        if base_volume(c, settings, image).is_ok() {
            out.push(image.clone());
        }
    }
    match c.lookup_storage_pool_by_name(&settings.pool) {
        Ok(pool) => {
            for vol in lv(pool.list_volumes())? {
                if vol.starts_with("hcp-") {
                    continue;
                }
                let image = IMAGE_SUFFIXES
                    .iter()
                    .rev()
                    .find_map(|s| (!s.is_empty()).then(|| vol.strip_suffix(s)).flatten())
                    .unwrap_or(&vol)
                    .to_string();
                if !settings.images.contains_key(&image) && !out.contains(&image) {
                    out.push(image);
                }
            }
        }
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(parse_error(&e)),
    }
    out.sort();
    Ok(out)
}

/// Lists the catalog networks a NIC can attach to on the host.
fn networks(c: &Connect, settings: &LibvirtSettings) -> Vec<String> {
    // A host without libvirt's network driver has no libvirt networks.
    let libvirt: Vec<String> = c
        .list_all_networks(0)
        .map(|ns| ns.iter().filter_map(|n| n.name().ok()).collect())
        .unwrap_or_default();
    let mut out: Vec<String> = settings
        .networks
        .iter()
        .filter(|(_, b)| match b {
            NetworkBinding::Network { source } => libvirt.contains(source),
            NetworkBinding::Bridge { .. } | NetworkBinding::User => true,
        })
        .map(|(n, _)| n.clone())
        .collect();
    out.extend(
        libvirt
            .into_iter()
            .filter(|n| !settings.networks.contains_key(n)),
    );
    out.sort();
    out.dedup();
    out
}

/// Storage pool facts for operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolInfo {
    /// The pool name.
    pub name: String,
    /// True when the pool is active.
    pub active: bool,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// Allocated bytes.
    pub allocation_bytes: u64,
    /// Free bytes.
    pub available_bytes: u64,
    /// Volumes in it.
    pub volumes: Vec<String>,
}

pub(crate) fn pools(c: &Connect) -> Result<Vec<PoolInfo>> {
    let mut out = Vec::new();
    for pool in lv(c.list_all_storage_pools(0))? {
        let info = lv(pool.info())?;
        let active = lv(pool.is_active())?;
        out.push(PoolInfo {
            name: lv(pool.name())?,
            active,
            capacity_bytes: info.capacity,
            allocation_bytes: info.allocation,
            available_bytes: info.available,
            volumes: if active {
                lv(pool.list_volumes())?
            } else {
                Vec::new()
            },
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Finds the base volume of `image`.
fn base_volume(c: &Connect, settings: &LibvirtSettings, image: &str) -> Result<StorageVol> {
    let (pool_name, names): (String, Vec<String>) = match settings.image_volume(image) {
        Some((p, v)) => (p, vec![v]),
        None => (
            settings.pool.clone(),
            IMAGE_SUFFIXES
                .iter()
                .map(|s| format!("{image}{s}"))
                .collect(),
        ),
    };
    let pool = c.lookup_storage_pool_by_name(&pool_name).map_err(|e| {
        if is_missing(&e) {
            Error::new(
                ErrorKind::NotFound,
                format!("the storage pool of image `{image}` does not exist on the VM's host"),
            )
            .with_detail(format!("storage pool `{pool_name}` not found"))
            .with_context("image", image)
        } else {
            parse_error(&e)
        }
    })?;
    for name in &names {
        match pool.lookup_storage_vol_by_name(name) {
            Ok(v) => return Ok(v),
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(parse_error(&e)),
        }
    }
    Err(Error::not_found("image", image)
        .with_detail(format!(
            "no volume {} in storage pool `{pool_name}`",
            names.join(" or ")
        ))
        .with_context("pool", &pool_name)
        .with_context("volume", names.join("|")))
}

fn pool(c: &Connect, settings: &LibvirtSettings) -> Result<StoragePool> {
    c.lookup_storage_pool_by_name(&settings.pool).map_err(|e| {
        if is_missing(&e) {
            Error::new(
                ErrorKind::ProviderError,
                "the VM's storage pool does not exist on its host",
            )
            .with_detail(format!(
                "storage pool `{}` does not exist; create it (see the crate README) or set settings.pool",
                settings.pool
            ))
        } else {
            parse_error(&e)
        }
    })
}

/// Checks that a vm id can name volumes: letters, digits, `-` and `_`.
fn volume_stem(vm_id: &str) -> Result<String> {
    if vm_id.is_empty()
        || vm_id.len() > 100
        || !vm_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid(
            "vm_id",
            "must be 1-100 letters, digits, '-' or '_' to name the VM's volumes",
        ));
    }
    Ok(format!("hcp-{vm_id}"))
}

fn disk_volume_name(stem: &str) -> String {
    format!("{stem}.qcow2")
}

fn seed_volume_name(stem: &str) -> String {
    format!("{stem}-seed.iso")
}

/// Deletes volume `name` in `pool` if it exists.
fn delete_volume(pool: &StoragePool, name: &str) -> Result<bool> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(v) => match v.delete(0) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(parse_error(&e)),
        },
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(parse_error(&e)),
    }
}

fn upload(c: &Connect, vol: &StorageVol, data: &[u8]) -> Result<()> {
    let stream = lv(Stream::new(c, 0))?;
    lv(vol.upload(&stream, 0, data.len() as u64, 0))?;
    let mut sent = 0;
    while sent < data.len() {
        match stream.send(&data[sent..]) {
            Ok(n) if n > 0 => sent += n as usize,
            Ok(_) => {
                let _ = stream.abort();
                return Err(Error::new(
                    ErrorKind::ProviderError,
                    "libvirt stopped accepting the seed ISO upload",
                ));
            }
            Err(e) => {
                let _ = stream.abort();
                return Err(parse_error(&e));
            }
        }
    }
    lv(stream.finish())
}

/// Creates (and starts) a VM; a VM with the same name and vm id is returned instead.
pub(crate) fn create(
    c: &Connect,
    facts: &HostFacts,
    settings: &LibvirtSettings,
    args: &CreateVm,
    ctx: &OpContext,
) -> Result<CreatedVm> {
    if args.name.is_empty() || args.name.contains('/') {
        return Err(Error::invalid(
            "name",
            "must be a non-empty domain name without '/'",
        ));
    }
    xml::check_text("name", &args.name)?;
    match c.lookup_domain_by_name(&args.name) {
        Ok(dom) => {
            let desc = describe(&dom)?;
            if desc.mark.as_ref().is_some_and(|m| m.vm_id == args.vm_id) {
                ctx.log(
                    LogEntry::info(format!(
                        "domain {} already exists with this vm id; reusing it",
                        args.name
                    ))
                    .with_detail(format!("domain uuid {}", desc.uuid)),
                );
                if args.start && !lv(dom.is_active())? {
                    lv(dom.create())?;
                }
                return Ok(CreatedVm::new(desc.uuid, power(&dom)?));
            }
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a domain named `{}` already exists on this host", args.name),
            )
            .with_field("name"));
        }
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(parse_error(&e)),
    }
    let stem = volume_stem(args.vm_id.as_str())?;
    let mut nics = Vec::new();
    for (i, n) in args.networks.iter().enumerate() {
        let binding = settings.network_binding(&n.network);
        if binding == NetworkBinding::User && n.vlan.is_some() {
            return Err(Error::invalid(
                format!("networks[{i}]"),
                format!(
                    "network `{}` has VLAN {} but maps to user-mode networking, which cannot tag; map it to a bridge or libvirt network",
                    n.network,
                    n.vlan.unwrap_or_default()
                ),
            ));
        }
        nics.push(Nic {
            binding,
            vlan: n.vlan,
        });
    }
    let base =
        base_volume(c, settings, &args.image).map_err(|e| e.with_context("image", &args.image))?;
    let base_path = lv(base.path())?;
    let base_info = lv(base.info())?;
    let base_format = xml::volume_format(&lv(base.xml_desc(0))?).unwrap_or_else(|| "raw".into());
    let capacity = args
        .resources
        .disk_gib
        .checked_mul(GIB)
        .ok_or_else(|| {
            Error::invalid(
                "disk_gib",
                format!(
                    "{} GiB is more than a volume can hold",
                    args.resources.disk_gib
                ),
            )
        })?
        .max(base_info.capacity);
    let pool = pool(c, settings)?;
    let disk_name = disk_volume_name(&stem);
    // A create that failed half-way may have left its volumes behind: they are ours by name.
    delete_volume(&pool, &disk_name)?;
    let disk = if settings.full_copy {
        let v = lv(StorageVol::create_xml_from(
            &pool,
            &xml::volume_xml(&disk_name, capacity, "qcow2", None),
            &base,
            0,
        ))?;
        if lv(v.info())?.capacity < capacity {
            lv(v.resize(capacity, 0))?;
        }
        ctx.log(
            LogEntry::info(format!("copied image {} to the VM's disk", args.image))
                .with_detail(format!("volume {disk_name}")),
        );
        v
    } else {
        let v = lv(StorageVol::create_xml(
            &pool,
            &xml::volume_xml(
                &disk_name,
                capacity,
                "qcow2",
                Some((&base_path, &base_format)),
            ),
            0,
        ))?;
        ctx.log(
            LogEntry::info(format!(
                "created the VM's disk as a qcow2 overlay on image {}",
                args.image
            ))
            .with_detail(format!("volume {disk_name}")),
        );
        v
    };
    ctx.progress(40);
    let cleanup = |pool: &StoragePool| {
        let _ = delete_volume(pool, &disk_name);
        let _ = delete_volume(pool, &seed_volume_name(&stem));
    };
    let result = (|| {
        let disk_path = lv(disk.path())?;
        let seed_path = match &args.user_data {
            Some(user_data) => {
                let iso = seed::build_iso(
                    &settings.iso_tool,
                    user_data,
                    &seed::meta_data(args.vm_id.as_str(), &args.name),
                )?;
                let seed_name = seed_volume_name(&stem);
                delete_volume(&pool, &seed_name)?;
                let vol = lv(StorageVol::create_xml(
                    &pool,
                    &xml::volume_xml(&seed_name, iso.len() as u64, "raw", None),
                    0,
                ))?;
                upload(c, &vol, &iso)?;
                ctx.log(
                    LogEntry::info("attached the cloud-init seed ISO")
                        .with_detail(format!("volume {seed_name}")),
                );
                Some(lv(vol.path())?)
            }
            None => None,
        };
        let domain_xml = xml::domain_xml(&DomainPlan {
            name: &args.name,
            domain_type: &facts.domain_type,
            machine: settings.machine.as_deref(),
            vcpus: args.resources.vcpus.max(1),
            memory_mib: args.resources.memory_mib,
            disk_gib: capacity / GIB,
            disk_path: &disk_path,
            seed_path: seed_path.as_deref(),
            nics: &nics,
            vnc_listen: &settings.vnc_listen,
            mark: &args.mark,
            tags: &args.tags,
        })?;
        lv(c.define_domain_xml(&domain_xml))
    })();
    let dom = match result {
        Ok(dom) => dom,
        Err(e) => {
            cleanup(&pool);
            return Err(e);
        }
    };
    let uuid = lv(dom.uuid_string())?;
    ctx.log(
        LogEntry::info(format!("defined domain {}", args.name))
            .with_detail(format!("domain uuid {uuid}")),
    );
    ctx.progress(70);
    if args.start {
        lv(dom.create())?;
        ctx.info(format!("started domain {}", args.name));
    }
    Ok(CreatedVm::new(uuid, power(&dom)?))
}

/// Deletes a VM's domain and the volumes HCP made for it (overlay, seed ISO) and its NVRAM.
pub(crate) fn delete(
    c: &Connect,
    settings: &LibvirtSettings,
    args: &DeleteVm,
) -> Result<DeletedVm> {
    let t = &args.target;
    let stem = volume_stem(t.vm_id.as_str()).ok();
    let Some(found) = find(c, t)? else {
        if let Some(stem) = &stem {
            remove_leftovers(c, settings, stem)?;
        }
        return Ok(DeletedVm::new(false));
    };
    let Found { dom, desc } = found;
    if lv(dom.is_active())? {
        if !args.force {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "VM `{}` is running; stop it first or delete it with force",
                    t.name
                ),
            ));
        }
        match dom.destroy() {
            Ok(()) => {}
            Err(e) if parse_error(&e).kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(parse_error(&e)),
        }
    }
    // Only volumes HCP made for this VM go: never the base image or a disk someone attached.
    let mut owned = Vec::new();
    if let Some(stem) = &stem {
        for d in &desc.disks {
            let vol = match (&d.volume, &d.path) {
                (Some((p, v)), _) => c
                    .lookup_storage_pool_by_name(p)
                    .and_then(|p| p.lookup_storage_vol_by_name(v)),
                (None, Some(path)) => c.lookup_storage_vol_by_path(path),
                (None, None) => continue,
            };
            match vol {
                Ok(v) => {
                    let name = lv(v.name())?;
                    if name == disk_volume_name(stem) || name == seed_volume_name(stem) {
                        owned.push(v);
                    }
                }
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(parse_error(&e)),
            }
        }
    }
    let flags = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | if desc.nvram.is_some() {
            virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM
        } else {
            0
        };
    match dom.undefine_flags(flags) {
        Ok(()) => {}
        Err(e) if is_missing(&e) => {}
        Err(e) => return Err(parse_error(&e)),
    }
    for v in owned {
        match v.delete(0) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(parse_error(&e)),
        }
    }
    if let Some(stem) = &stem {
        remove_leftovers(c, settings, stem)?;
    }
    Ok(DeletedVm::new(true))
}

/// Removes the volumes a VM's create may have left in the provider's pool.
fn remove_leftovers(c: &Connect, settings: &LibvirtSettings, stem: &str) -> Result<()> {
    let pool = match c.lookup_storage_pool_by_name(&settings.pool) {
        Ok(p) => p,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(parse_error(&e)),
    };
    delete_volume(&pool, &disk_volume_name(stem))?;
    delete_volume(&pool, &seed_volume_name(stem))?;
    Ok(())
}

/// What [`resize`] changed.
pub(crate) struct Resized {
    /// True when a vCPU or memory change waits in the definition for the next boot.
    pub restart_needed: bool,
    /// True when the disk grew but HCP's mark still names the old size.
    pub mark_stale: bool,
}

/// Changes a domain's size: vCPUs and memory in its persistent definition
/// (`virDomainSetVcpusFlags` / `virDomainSetMemoryFlags` with `CONFIG`; a running guest sees
/// them after its next boot), and grows its disk: `virDomainBlockResize` while it runs (the
/// guest sees the new size at once), `virStorageVolResize` while it is off. HCP's mark then
/// records the new disk size. Never shrinks a disk.
pub(crate) fn resize(
    c: &Connect,
    settings: &LibvirtSettings,
    t: &VmTarget,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    disk_gib: Option<u64>,
) -> Result<Resized> {
    use virt::sys;
    let found = require(c, t)?;
    let dom = &found.dom;
    let running = power(dom)? != PowerState::Stopped;
    // The persistent definition is what changes; compare with it, not with the live guest.
    let inactive = xml::parse_domain(&lv(dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE))?)?;
    let mut restart_needed = false;
    if let Some(n) = vcpus.filter(|n| *n != inactive.vcpus) {
        let (cfg, max) = (sys::VIR_DOMAIN_VCPU_CONFIG, sys::VIR_DOMAIN_VCPU_MAXIMUM);
        // The maximum bounds the count: raise it first, or lower it last.
        let order = if n > inactive.vcpus {
            [cfg | max, cfg]
        } else {
            [cfg, cfg | max]
        };
        for flags in order {
            lv(dom.set_vcpus_flags(n, flags))?;
        }
        restart_needed |= running;
    }
    if let Some(m) = memory_mib.filter(|m| *m != inactive.memory_mib) {
        let kib = m.checked_mul(1024).ok_or_else(|| {
            Error::invalid(
                "memory_mib",
                format!("{m} MiB is more than libvirt can hold"),
            )
        })?;
        let (cfg, max) = (sys::VIR_DOMAIN_MEM_CONFIG, sys::VIR_DOMAIN_MEM_MAXIMUM);
        let order = if m > inactive.memory_mib {
            [cfg | max, cfg]
        } else {
            [cfg, cfg | max]
        };
        for flags in order {
            lv(dom.set_memory_flags(kib, flags))?;
        }
        restart_needed |= running;
    }
    let mut mark_stale = false;
    if let Some(g) = disk_gib {
        let stem = volume_stem(t.vm_id.as_str())?;
        let vol = lv(pool(c, settings)?.lookup_storage_vol_by_name(&disk_volume_name(&stem)))?;
        let now = lv(vol.info())?.capacity;
        let bytes = g.checked_mul(GIB).ok_or_else(|| {
            Error::invalid(
                "disk_gib",
                format!("{g} GiB is more than a volume can hold"),
            )
        })?;
        if bytes < now {
            return Err(Error::invalid(
                "disk_gib",
                format!(
                    "is {g} GiB, below the disk's {} GiB; a disk never shrinks",
                    now.div_ceil(GIB)
                ),
            ));
        }
        if bytes > now {
            if running {
                lv(dom.block_resize("vda", bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES))?;
            } else {
                lv(vol.resize(bytes, 0))?;
            }
        }
        mark_stale = set_mark_disk_gib(dom, running, g).is_err();
    }
    Ok(Resized {
        restart_needed,
        mark_stale,
    })
}

/// Rewrites the disk size in HCP's mark (the domain's `<metadata>` under [`xml::HCP_NS`]), live
/// and in the definition.
fn set_mark_disk_gib(dom: &Domain, running: bool, disk_gib: u64) -> Result<()> {
    use virt::sys;
    let text = lv(dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE))?;
    let (Some(start), Some(end)) = (text.find("<hcp:vm"), text.find("</hcp:vm>")) else {
        return Err(Error::internal("the domain carries no HCP mark"));
    };
    let mark = &text[start..end + "</hcp:vm>".len()];
    let (Some(a), Some(b)) = (mark.find("<hcp:disk_gib>"), mark.find("</hcp:disk_gib>")) else {
        return Err(Error::internal("HCP's mark has no disk size"));
    };
    // libvirt puts the element under `key`'s namespace itself and refuses one that declares
    // it already: hand it the mark without prefixes.
    let updated = format!("{}<hcp:disk_gib>{disk_gib}{}", &mark[..a], &mark[b..])
        .replace(&format!(" xmlns:hcp=\"{}\"", xml::HCP_NS), "")
        .replace("<hcp:", "<")
        .replace("</hcp:", "</");
    let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
    if running {
        flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    lv(dom.set_metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(&updated),
        Some("hcp"),
        Some(xml::HCP_NS),
        flags,
    ))
}

/// Writes HCP's mark on the domain `t` names by native id (UUID) or name (`mark` set), or
/// removes it (`None`), live and in the definition; the domain is otherwise untouched. Returns
/// whether it carried a mark before.
///
/// # Errors
/// NotFound when no such domain exists; Conflict when it carries another VM's mark.
pub(crate) fn set_mark(c: &Connect, t: &VmTarget, mark: Option<&HcpMark>) -> Result<bool> {
    use virt::sys;
    let dom = match t
        .native_id
        .as_deref()
        .map(|id| c.lookup_domain_by_uuid_string(id))
    {
        Some(Ok(dom)) => dom,
        Some(Err(e)) if !is_missing(&e) => return Err(parse_error(&e)),
        _ => match c.lookup_domain_by_name(&t.name) {
            Ok(dom) => dom,
            Err(e) if is_missing(&e) => return Err(missing(t)),
            Err(e) => return Err(parse_error(&e)),
        },
    };
    let desc = describe(&dom)?;
    if let Some(other) = desc.mark.as_ref().filter(|m| m.vm_id != t.vm_id) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "the domain carries the mark of another HCP VM, `{}`",
                other.vm_id
            ),
        )
        .with_context("native_id", &desc.uuid));
    }
    let metadata = mark
        .map(|m| {
            let disk = (desc.disk_gib > 0).then_some(desc.disk_gib);
            xml::mark_metadata(m, disk, &desc.tags)
        })
        .transpose()?;
    let mut flags = sys::VIR_DOMAIN_AFFECT_CONFIG;
    if lv(dom.is_active())? {
        flags |= sys::VIR_DOMAIN_AFFECT_LIVE;
    }
    lv(dom.set_metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        metadata.as_deref(),
        Some("hcp"),
        Some(xml::HCP_NS),
        flags,
    ))?;
    Ok(desc.mark.is_some())
}

/// Destroys (hard powers off) a domain; an already stopped one is fine.
pub(crate) fn destroy(dom: &Domain) -> Result<()> {
    match dom.destroy() {
        Ok(()) => Ok(()),
        Err(e) if parse_error(&e).kind() == ErrorKind::Conflict && !lv(dom.is_active())? => Ok(()),
        Err(e) => Err(parse_error(&e)),
    }
}

/// The VNC endpoint of a running domain.
pub(crate) fn vnc_endpoint(dom: &Domain, uri: &str) -> Result<(String, u16)> {
    let desc = describe(dom)?;
    let Some((listen, port)) = desc.vnc else {
        return Err(Error::new(
            ErrorKind::FeatureNotSupported,
            "the domain has no VNC graphics",
        ));
    };
    let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
        Error::new(
            ErrorKind::ProviderError,
            "libvirt has not assigned the domain a VNC port",
        )
        .temporary()
    })?;
    let host = match listen.as_str() {
        "" | "0.0.0.0" | "::" | "[::]" => uri_host(uri).unwrap_or_else(|| "127.0.0.1".into()),
        l => l.to_string(),
    };
    Ok((host, port))
}

/// Returns the host part of a libvirt URI (`qemu+ssh://root@kvm1:22/system` → `kvm1`).
pub(crate) fn uri_host(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_hosts() {
        assert_eq!(uri_host("qemu:///system"), None);
        assert_eq!(
            uri_host("qemu+ssh://root@kvm1:2222/system?keyfile=/k").as_deref(),
            Some("kvm1")
        );
        assert_eq!(
            uri_host("qemu+tls://kvm2.example/system").as_deref(),
            Some("kvm2.example")
        );
        assert_eq!(
            uri_host("qemu+tcp://[::1]/system").as_deref(),
            Some("[::1]")
        );
    }

    #[test]
    fn volume_names_come_from_safe_vm_ids() {
        assert_eq!(volume_stem("vm-0199abc").unwrap(), "hcp-vm-0199abc");
        assert!(volume_stem("../etc").is_err());
        assert!(volume_stem("").is_err());
    }
}
