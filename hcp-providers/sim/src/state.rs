//! The simulator's state: hosts and their VMs, in memory or in a JSON file shared between
//! processes (guarded by an exclusive file lock, written atomically).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use hcp_core::{Error, ErrorKind, HcpMark, NativeVm, PowerState, Resources, Result, VmId};
// The index maps hash with foldhash: SipHash's resistance to chosen keys buys nothing in a
// simulator and cost a large part of each create and delete.
use foldhash::HashMap;
use serde::{Deserialize, Serialize};

/// Every simulated host and VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    /// Hosts by name.
    pub hosts: BTreeMap<String, SimHost>,
    /// The number part of the next native id.
    pub next_id: u64,
}

/// One simulated host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimHost {
    /// The host name.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// vCPUs it offers.
    pub vcpus: u32,
    /// Memory it offers, in MiB.
    pub memory_mib: u64,
    /// True while it does not answer.
    #[serde(default)]
    pub down: bool,
    /// Its VMs by native id, boxed: a VM added or removed moves pointers inside the map, not
    /// whole records. Looked up by hash; [`SimHost::vms_in_order`] lists them by native id, as
    /// the state file holds them.
    #[serde(default, serialize_with = "in_key_order")]
    pub vms: SimVms,
}

/// A host's VMs by native id (see [`SimHost::vms`]).
pub type SimVms = std::collections::HashMap<String, Box<SimVm>, foldhash::fast::RandomState>;

/// Writes a host's VMs sorted by native id, so that a state file does not reorder from one
/// write to the next.
fn in_key_order<S: serde::Serializer>(vms: &SimVms, s: S) -> Result<S::Ok, S::Error> {
    let sorted: BTreeMap<&String, &SimVm> = vms.iter().map(|(k, v)| (k, &**v)).collect();
    sorted.serialize(s)
}

/// One simulated VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimVm {
    /// The simulator's id (`sim-42`).
    pub native_id: String,
    /// The VM name.
    pub name: String,
    /// Its power state.
    pub power: PowerState,
    /// Its size.
    pub resources: Resources,
    /// The image it was created from.
    pub image: String,
    /// HCP's mark, when HCP created it.
    pub mark: Option<HcpMark>,
    /// Its tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Whether cloud-init user-data was attached.
    #[serde(default)]
    pub has_user_data: bool,
    /// Its snapshots, oldest first.
    #[serde(default)]
    pub snapshots: Vec<SimSnapshot>,
}

/// One simulated snapshot: the VM's power state and size when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SnapshotRepr")]
pub struct SimSnapshot {
    /// The name it was taken with.
    pub name: String,
    /// When it was taken.
    pub created_at: Option<DateTime<Utc>>,
    /// The VM's power state then; a running VM's snapshot holds its memory.
    pub power: PowerState,
    /// The VM's size then.
    pub resources: Option<Resources>,
}

impl SimSnapshot {
    /// Returns true when the snapshot holds memory state (the VM ran when it was taken).
    pub fn memory(&self) -> bool {
        self.power == PowerState::Running
    }
}

/// A snapshot as state files hold it: a bare name (older files) or the whole record.
#[derive(Deserialize)]
#[serde(untagged)]
enum SnapshotRepr {
    Name(String),
    Full {
        name: String,
        #[serde(default)]
        created_at: Option<DateTime<Utc>>,
        power: PowerState,
        #[serde(default)]
        resources: Option<Resources>,
    },
}

impl From<SnapshotRepr> for SimSnapshot {
    fn from(r: SnapshotRepr) -> Self {
        match r {
            SnapshotRepr::Name(name) => SimSnapshot {
                name,
                created_at: None,
                power: PowerState::Stopped,
                resources: None,
            },
            SnapshotRepr::Full {
                name,
                created_at,
                power,
                resources,
            } => SimSnapshot {
                name,
                created_at,
                power,
                resources,
            },
        }
    }
}

impl SimVm {
    /// Describes a VM to seed with [`crate::SimProvider::seed_vm`].
    pub fn new(
        name: impl Into<String>,
        power: PowerState,
        resources: Resources,
        mark: Option<HcpMark>,
    ) -> Self {
        SimVm {
            native_id: String::new(),
            name: name.into(),
            power,
            resources,
            image: "unknown".into(),
            mark,
            tags: BTreeMap::new(),
            has_user_data: false,
            snapshots: Vec::new(),
        }
    }

    pub(crate) fn to_native(&self) -> NativeVm {
        NativeVm::new(
            &self.native_id,
            &self.name,
            self.power,
            self.resources,
            self.mark.clone(),
        )
        .with_tags(self.tags.clone())
    }
}

impl SimHost {
    /// Describes a host.
    pub fn new(name: &str, zone: &str, vcpus: u32, memory_mib: u64) -> Self {
        SimHost {
            name: name.into(),
            zone: zone.into(),
            vcpus,
            memory_mib,
            down: false,
            vms: SimVms::default(),
        }
    }

    pub(crate) fn ensure_up(&self) -> Result<()> {
        if self.down {
            return Err(Error::new(
                ErrorKind::ProviderUnavailable,
                "the VM's host does not answer",
            )
            .with_detail(format!("host `{}` is down", self.name))
            .temporary());
        }
        Ok(())
    }

    /// Returns its VMs sorted by native id.
    pub fn vms_in_order(&self) -> Vec<&SimVm> {
        let mut vms: Vec<&SimVm> = self.vms.values().map(|v| &**v).collect();
        vms.sort_unstable_by(|a, b| a.native_id.cmp(&b.native_id));
        vms
    }
}

impl SimState {
    fn host(&self, name: &str) -> Result<&SimHost> {
        self.hosts.get(name).ok_or_else(|| unknown_host(name))
    }

    fn host_mut(&mut self, name: &str) -> Result<&mut SimHost> {
        self.hosts.get_mut(name).ok_or_else(|| unknown_host(name))
    }

    /// Returns true when merging `hosts` would change the state (a host to add, or a size,
    /// zone or down flag to apply).
    fn needs_merge(&self, hosts: &[SimHost], down: &HashSet<&str>) -> bool {
        hosts.iter().any(|h| match self.hosts.get(&h.name) {
            None => true,
            Some(s) => {
                s.zone != h.zone
                    || s.vcpus != h.vcpus
                    || s.memory_mib != h.memory_mib
                    || s.down != down.contains(h.name.as_str())
            }
        })
    }

    /// Adds configured hosts the state lacks and applies their configured size and zone.
    fn merge_hosts(&mut self, hosts: Vec<SimHost>, down: &HashSet<&str>) {
        for h in hosts {
            let entry = self
                .hosts
                .entry(h.name.clone())
                .or_insert_with(|| h.clone());
            entry.zone = h.zone;
            entry.vcpus = h.vcpus;
            entry.memory_mib = h.memory_mib;
            entry.down = down.contains(entry.name.as_str());
        }
    }
}

/// What [`IndexedState`] knows of one host's VMs without scanning them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HostIndex {
    /// The host's name, shared by the entries of [`IndexedState::host_of`] that name it.
    name: Arc<str>,
    /// VM name → keys of the VMs with that name, in key order (names are unique per host, but a
    /// state file written by hand may repeat one).
    names: HashMap<String, Keys>,
    /// HCP's VM id (from the mark) → keys of the VMs carrying it, in key order.
    marks: HashMap<VmId, Keys>,
    /// vCPUs of its VMs, summed wide enough never to wrap.
    vcpus: u64,
    /// Memory (MiB) of its VMs, summed wide enough never to wrap.
    memory_mib: u128,
}

/// The keys (native ids, or host names in [`IndexedState::host_of`]) an index entry names, in
/// key order: nearly always one, held without a list of its own. Shared text: a VM's native id
/// is copied once for all its index entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Keys {
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Keys {
    /// Returns the first key in order.
    fn first(&self) -> Option<&str> {
        match self {
            Keys::One(k) => Some(k),
            Keys::Many(ks) => ks.first().map(|k| &**k),
        }
    }

    /// Adds `key`, keeping the order; a key held already stays once.
    fn add(&mut self, key: &Arc<str>) {
        match self {
            Keys::One(k) if **k == **key => {}
            Keys::One(k) => {
                let mut ks = vec![k.clone(), key.clone()];
                ks.sort();
                *self = Keys::Many(ks);
            }
            Keys::Many(ks) => {
                if let Err(i) = ks.binary_search_by(|k| (**k).cmp(&**key)) {
                    ks.insert(i, key.clone());
                }
            }
        }
    }

    /// Removes `key`; returns true when no key is left.
    fn remove(&mut self, key: &str) -> bool {
        match self {
            Keys::One(k) => **k == *key,
            Keys::Many(ks) => {
                ks.retain(|x| **x != *key);
                if ks.len() > 1 {
                    return false;
                }
                // One left is held as one, as indexing afresh would hold it.
                match ks.pop() {
                    Some(k) => {
                        *self = Keys::One(k);
                        false
                    }
                    None => true,
                }
            }
        }
    }
}

fn add_key<K: Eq + std::hash::Hash>(map: &mut HashMap<K, Keys>, k: K, key: &Arc<str>) {
    match map.entry(k) {
        std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().add(key),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Keys::One(key.clone()));
        }
    }
}

fn remove_key<K, Q>(map: &mut HashMap<K, Keys>, k: &Q, key: &str)
where
    K: Eq + std::hash::Hash + std::borrow::Borrow<Q>,
    Q: Eq + std::hash::Hash + ?Sized,
{
    if let Some(keys) = map.get_mut(k)
        && keys.remove(key)
    {
        map.remove(k);
    }
}

impl HostIndex {
    fn add(&mut self, key: &Arc<str>, vm: &SimVm) {
        add_key(&mut self.names, vm.name.clone(), key);
        if let Some(m) = &vm.mark {
            add_key(&mut self.marks, m.vm_id.clone(), key);
        }
        self.vcpus += u64::from(vm.resources.vcpus);
        self.memory_mib += u128::from(vm.resources.memory_mib);
    }

    fn remove(&mut self, key: &str, vm: &SimVm) {
        remove_key(&mut self.names, vm.name.as_str(), key);
        if let Some(m) = &vm.mark {
            remove_key(&mut self.marks, &m.vm_id, key);
        }
        self.vcpus -= u64::from(vm.resources.vcpus);
        self.memory_mib -= u128::from(vm.resources.memory_mib);
    }
}

/// The simulator's state with its VMs indexed by native id, by name and by HCP's VM id, so
/// that creates and lookups do not scan a host's VMs.
///
/// Reads see the plain [`SimState`]; changes that touch an indexed field (a VM added, removed
/// or resized) go through its methods, which keep the index in step.
#[derive(Debug, Clone, Default)]
pub(crate) struct IndexedState {
    state: SimState,
    /// Host name → its index; every host of `state` has one.
    hosts: HashMap<String, HostIndex>,
    /// Native id → the hosts holding a VM under that key, in name order (one, unless a state
    /// file written by hand repeats an id on several hosts).
    host_of: HashMap<Arc<str>, Keys>,
}

impl IndexedState {
    /// Indexes `state`.
    pub(crate) fn new(state: SimState) -> Self {
        let mut s = IndexedState {
            state,
            ..Default::default()
        };
        s.reindex();
        s
    }

    fn reindex(&mut self) {
        self.hosts.clear();
        self.host_of.clear();
        for (name, h) in &self.state.hosts {
            let mut index = HostIndex {
                name: name.as_str().into(),
                ..HostIndex::default()
            };
            for (key, vm) in &h.vms {
                let key: Arc<str> = key.as_str().into();
                index.add(&key, vm);
                add_key(&mut self.host_of, key, &index.name);
            }
            self.hosts.insert(name.clone(), index);
        }
    }

    /// The plain state.
    pub(crate) fn state(&self) -> &SimState {
        &self.state
    }

    pub(crate) fn host(&self, name: &str) -> Result<&SimHost> {
        self.state.host(name)
    }

    /// Takes a host down or brings it back.
    pub(crate) fn set_down(&mut self, host: &str, down: bool) -> Result<()> {
        self.state.host_mut(host)?.down = down;
        Ok(())
    }

    /// Returns the host holding the VM `native_id`.
    pub(crate) fn host_of(&self, native_id: &str) -> Option<&str> {
        self.host_of.get(native_id).and_then(Keys::first)
    }

    /// Returns the VM `native_id` of `host`.
    pub(crate) fn vm(&self, host: &str, native_id: &str) -> Option<&SimVm> {
        self.state.hosts.get(host)?.vms.get(native_id).map(|v| &**v)
    }

    /// Returns the VM `native_id` of `host` to change. Its name, mark and size are indexed: change
    /// its size with [`IndexedState::set_resources`], and never its name or mark.
    pub(crate) fn vm_mut(&mut self, host: &str, native_id: &str) -> Option<&mut SimVm> {
        self.state
            .hosts
            .get_mut(host)?
            .vms
            .get_mut(native_id)
            .map(|v| &mut **v)
    }

    /// Returns the VM of `host` carrying HCP's id `vm_id` (the first by native id when a state
    /// file repeats one).
    pub(crate) fn by_mark(&self, host: &str, vm_id: &VmId) -> Option<&SimVm> {
        let key = self.hosts.get(host)?.marks.get(vm_id)?.first()?;
        self.vm(host, key)
    }

    /// Returns true when `host` holds a VM named `name`.
    pub(crate) fn name_taken(&self, host: &str, name: &str) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.names.contains_key(name))
    }

    /// Returns the vCPUs and memory the VMs of `host` use. Saturating: a VM seeded or loaded with
    /// any size makes the host read as full, never as having room.
    pub(crate) fn used(&self, host: &str) -> (u32, u64) {
        self.hosts.get(host).map_or((0, 0), |h| {
            (
                u32::try_from(h.vcpus).unwrap_or(u32::MAX),
                u64::try_from(h.memory_mib).unwrap_or(u64::MAX),
            )
        })
    }

    /// Puts `vm` on `host` under its native id, replacing a VM with that id there.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown host.
    pub(crate) fn insert_vm(&mut self, host: &str, vm: SimVm) -> Result<()> {
        let key: Arc<str> = vm.native_id.as_str().into();
        let h = self.state.host_mut(host)?;
        // The host's index nearly always exists: no owned key for the entry API then.
        let index = match self.hosts.get_mut(host) {
            Some(index) => index,
            None => self
                .hosts
                .entry(host.to_string())
                .or_insert_with(|| HostIndex {
                    name: host.into(),
                    ..HostIndex::default()
                }),
        };
        // One search of the host's VMs: a new VM (the usual case) goes in, one with the same
        // id replaces the old one (which leaves the index first).
        match h.vms.entry(vm.native_id.clone()) {
            std::collections::hash_map::Entry::Vacant(e) => {
                index.add(&key, &vm);
                e.insert(Box::new(vm));
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                index.remove(&key, e.get());
                index.add(&key, &vm);
                **e.get_mut() = vm;
            }
        }
        let host_name = index.name.clone();
        add_key(&mut self.host_of, key, &host_name);
        Ok(())
    }

    /// Removes the VM `native_id` from `host` and returns it.
    pub(crate) fn remove_vm(&mut self, host: &str, native_id: &str) -> Option<Box<SimVm>> {
        let vm = self.state.hosts.get_mut(host)?.vms.remove(native_id)?;
        if let Some(index) = self.hosts.get_mut(host) {
            index.remove(native_id, &vm);
        }
        remove_key(&mut self.host_of, native_id, host);
        Some(vm)
    }

    /// Changes the size of the VM `native_id` on `host`; returns false when it does not exist.
    pub(crate) fn set_resources(&mut self, host: &str, native_id: &str, r: Resources) -> bool {
        let Some(vm) = self
            .state
            .hosts
            .get_mut(host)
            .and_then(|h| h.vms.get_mut(native_id))
        else {
            return false;
        };
        if let Some(index) = self.hosts.get_mut(host) {
            index.vcpus = index.vcpus - u64::from(vm.resources.vcpus) + u64::from(r.vcpus);
            index.memory_mib =
                index.memory_mib - u128::from(vm.resources.memory_mib) + u128::from(r.memory_mib);
        }
        vm.resources = r;
        true
    }

    /// Replaces the mark of the VM `native_id` on `host` (`None` removes it), keeping the mark
    /// index in step; returns the mark it had, or `None` inside `Some` when it had none, and
    /// `None` when the VM does not exist.
    pub(crate) fn set_mark(
        &mut self,
        host: &str,
        native_id: &str,
        mark: Option<HcpMark>,
    ) -> Option<Option<HcpMark>> {
        let vm = self
            .state
            .hosts
            .get_mut(host)
            .and_then(|h| h.vms.get_mut(native_id))?;
        let index = self.hosts.get_mut(host);
        let old = std::mem::replace(&mut vm.mark, mark);
        if let Some(index) = index {
            if let Some(m) = &old {
                remove_key(&mut index.marks, &m.vm_id, native_id);
            }
            if let Some(m) = &vm.mark {
                add_key(&mut index.marks, m.vm_id.clone(), &Arc::from(native_id));
            }
        }
        Some(old)
    }

    pub(crate) fn next_native_id(&mut self) -> Result<String> {
        self.state.next_id = self.state.next_id.checked_add(1).ok_or_else(|| {
            Error::new(
                ErrorKind::ProviderError,
                "the simulator ran out of native ids (next_id in its state file is at its maximum)",
            )
        })?;
        // Joined by hand: every create makes one, and a formatter costs several times as much.
        let mut n = itoa::Buffer::new();
        Ok(["sim-", n.format(self.state.next_id)].concat())
    }

    fn merge_hosts(&mut self, hosts: Vec<SimHost>, down: &HashSet<&str>) {
        self.state.merge_hosts(hosts, down);
        self.reindex();
    }
}

/// Where the state lives.
#[derive(Debug)]
pub(crate) enum Backend {
    Memory(Mutex<IndexedState>),
    File(FileBackend),
}

/// A state file shared between processes, and the last state this process parsed from it.
#[derive(Debug)]
pub(crate) struct FileBackend {
    path: PathBuf,
    lock: PathBuf,
    cache: Mutex<Option<Cached>>,
}

/// A parsed state file and what proves the file still holds it.
///
/// Writers never change the file in place: they write a temporary file and rename it over the
/// state file, so every write makes a new inode. The cache holds the file it parsed open, so its
/// inode number cannot be given to another file; a file at the path with the same device, inode,
/// length, modification and change time is therefore the file parsed. A file changed in place
/// (by hand, or by a tool that ignores the lock) changes its times too, unless the change falls in
/// the same tick of the file system's clock: while the file's modification time is that recent
/// ([`racy`]), the cache also keeps its bytes and compares them on every read, as git does with
/// "racily clean" index entries.
#[derive(Debug)]
struct Cached {
    state: Arc<IndexedState>,
    stamp: Stamp,
    /// Held open so that the inode of `stamp` stays this file's.
    _file: File,
    /// The file's bytes, kept while its modification time is too recent to trust.
    bytes: Option<Vec<u8>>,
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Device, inode, change time (seconds, nanoseconds); zeros where the platform has none.
    identity: (u64, u64, i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
        };
        #[cfg(not(unix))]
        let identity = (0, 0, 0, 0);
        Stamp {
            len: m.len(),
            modified: m.modified().ok(),
            identity,
        }
    }
}

/// How far apart two changes of a file must be for its modification time to tell them apart: a
/// tick of the kernel's coarse clock on file systems with sub-second times (with a wide margin),
/// two seconds on those that keep whole seconds (or two, like FAT).
fn granularity(modified: SystemTime) -> Duration {
    let fine = modified
        .duration_since(UNIX_EPOCH)
        .is_ok_and(|d| d.subsec_nanos() != 0);
    if fine {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(2)
    }
}

/// Returns true when a change after `checked` might leave the modification time of a file
/// stamped `stamp` unchanged, so only its bytes can prove it unchanged.
fn racy(stamp: &Stamp, checked: SystemTime) -> bool {
    match stamp.modified {
        Some(m) => m
            .checked_add(granularity(m))
            .is_none_or(|trusted_from| trusted_from >= checked),
        None => true,
    }
}

fn unknown_host(name: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        "the simulator does not know the VM's host",
    )
    .with_detail(format!("host `{name}` not found"))
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::ProviderError,
        format!("the simulator cannot {what} its state file"),
    )
    .with_detail(format!("{}: {e}", path.display()))
}

impl Backend {
    pub(crate) fn open(
        path: Option<&Path>,
        hosts: Vec<SimHost>,
        down: &[String],
    ) -> Result<Backend> {
        let down: HashSet<&str> = down.iter().map(String::as_str).collect();
        match path {
            None => {
                let mut s = IndexedState::default();
                s.merge_hosts(hosts, &down);
                Ok(Backend::Memory(Mutex::new(s)))
            }
            Some(path) => {
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| io_error(path, "create its directory", e))?;
                }
                let mut lock = path.as_os_str().to_owned();
                lock.push(".lock");
                let b = FileBackend {
                    path: path.to_path_buf(),
                    lock: PathBuf::from(lock),
                    cache: Mutex::new(None),
                };
                // Rewrite the file only when it is missing or the hosts file changes it: a
                // process starting up then parses it once and keeps it.
                let file = open_lock(&b.lock)?;
                let mut guard = fd_lock::RwLock::new(file);
                let held = guard.write().map_err(|e| io_error(&b.lock, "lock", e))?;
                let current = b.current()?;
                let missing = !b.path.exists();
                if missing || current.state.needs_merge(&hosts, &down) {
                    drop(current);
                    b.modify_locked(|s| {
                        s.merge_hosts(hosts, &down);
                        Ok(())
                    })?;
                }
                drop(held);
                Ok(Backend::File(b))
            }
        }
    }

    /// Runs `f` on the state without changing it.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&IndexedState) -> Result<R>) -> Result<R> {
        match self {
            Backend::Memory(m) => f(&m.lock().unwrap_or_else(|p| p.into_inner())),
            Backend::File(b) => {
                // Readers share the lock; writers replace the file atomically under an exclusive one.
                let state = {
                    let file = open_lock(&b.lock)?;
                    let guard = fd_lock::RwLock::new(file);
                    let _held = guard.read().map_err(|e| io_error(&b.lock, "lock", e))?;
                    b.current()?
                };
                f(&state)
            }
        }
    }

    /// Runs `f` on the state and keeps its changes when it succeeds.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut IndexedState) -> Result<R>) -> Result<R> {
        match self {
            // Every change checks before it mutates, so a refused change leaves nothing half-done.
            Backend::Memory(m) => f(&mut m.lock().unwrap_or_else(|p| p.into_inner())),
            Backend::File(b) => {
                let file = open_lock(&b.lock)?;
                let mut guard = fd_lock::RwLock::new(file);
                let _held = guard.write().map_err(|e| io_error(&b.lock, "lock", e))?;
                b.modify_locked(f)
            }
        }
    }
}

impl FileBackend {
    fn cache(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns the state the file holds now, parsing it only when it changed since the last
    /// parse. The caller holds the file lock (shared or exclusive).
    fn current(&self) -> Result<Arc<IndexedState>> {
        let path = &self.path;
        let mut cache = self.cache();
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *cache = None;
                return Ok(Arc::default());
            }
            Err(e) => return Err(io_error(path, "read", e)),
        };
        if let Some(c) = cache.as_ref()
            && c.bytes.is_none()
            && c.stamp == Stamp::of(&meta)
        {
            return Ok(c.state.clone());
        }
        // Taken before reading: a change after this instant makes a newer modification time
        // unless the file's time is within a tick of it.
        let checked = SystemTime::now();
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *cache = None;
                return Ok(Arc::default());
            }
            Err(e) => return Err(io_error(path, "open", e)),
        };
        let stamp = Stamp::of(&file.metadata().map_err(|e| io_error(path, "read", e))?);
        let mut bytes = Vec::with_capacity(usize::try_from(stamp.len).unwrap_or(0));
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(path, "read", e))?;
        let state = match cache.take() {
            Some(c) if c.bytes.as_ref() == Some(&bytes) => c.state,
            _ => Arc::new(IndexedState::new(parse(path, &bytes)?)),
        };
        let bytes = racy(&stamp, checked).then_some(bytes);
        *cache = Some(Cached {
            state: state.clone(),
            stamp,
            _file: file,
            bytes,
        });
        Ok(state)
    }

    /// Reads the state, runs `f` on it and writes it back when `f` succeeds. The caller holds the
    /// exclusive file lock.
    fn modify_locked<R>(&self, f: impl FnOnce(&mut IndexedState) -> Result<R>) -> Result<R> {
        let current = self.current()?;
        // Take the cache's reference too, so the state is changed in place unless a reader of
        // this process still holds it.
        *self.cache() = None;
        let mut s = Arc::try_unwrap(current).unwrap_or_else(|shared| (*shared).clone());
        // On an error the file is untouched and the next read parses it again.
        let r = f(&mut s)?;
        let (file, stamp, bytes) = save(&self.path, s.state())?;
        *self.cache() = Some(Cached {
            state: Arc::new(s),
            stamp,
            _file: file,
            // Just written, so its modification time is always too recent to trust alone.
            bytes: Some(bytes),
        });
        Ok(r)
    }
}

fn open_lock(lock: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .map_err(|e| io_error(lock, "open its lock file", e))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<SimState> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::ProviderError,
            "the simulator's state file is not valid; delete it to start afresh",
        )
        .with_detail(format!("{}: {e}", path.display()))
    })
}

/// Writes `s` to a temporary file and renames it over `path`; returns the new file (open), its
/// stamp and its bytes.
fn save(path: &Path, s: &SimState) -> Result<(File, Stamp, Vec<u8>)> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_vec_pretty(s).map_err(|e| Error::internal(e.to_string()))?;
    let mut f = File::create(&tmp).map_err(|e| io_error(&tmp, "create", e))?;
    f.write_all(&text).map_err(|e| io_error(&tmp, "write", e))?;
    f.sync_all().map_err(|e| io_error(&tmp, "sync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, "replace", e))?;
    // After the rename: renaming changes the inode's change time.
    let stamp = Stamp::of(&f.metadata().map_err(|e| io_error(path, "read", e))?);
    Ok((f, stamp, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str, name: &str, vcpus: u32, mark: Option<&str>) -> SimVm {
        let r = Resources {
            vcpus,
            memory_mib: u64::from(vcpus) * 1024,
            disk_gib: 1,
        };
        let mark = mark.map(|m| HcpMark::new(VmId::new(m), "p".into()));
        let mut v = SimVm::new(name, PowerState::Running, r, mark);
        v.native_id = id.into();
        v
    }

    /// Asserts that the kept index is the one indexing the state afresh would build.
    fn assert_consistent(s: &IndexedState) {
        let fresh = IndexedState::new(s.state.clone());
        assert_eq!(s.hosts, fresh.hosts);
        assert_eq!(s.host_of, fresh.host_of);
    }

    #[test]
    fn the_index_matches_a_fresh_one_after_every_change() {
        let mut s = IndexedState::default();
        s.merge_hosts(
            vec![
                SimHost::new("a", "z", 8, 8192),
                SimHost::new("b", "z", 8, 8192),
            ],
            &HashSet::new(),
        );
        assert_consistent(&s);
        s.insert_vm("a", vm("sim-1", "one", 1, Some("vm-1")))
            .unwrap();
        s.insert_vm("a", vm("sim-2", "two", 2, None)).unwrap();
        // A hand-written file may repeat a name, a mark, or a native id on two hosts.
        s.insert_vm("a", vm("sim-3", "one", 1, Some("vm-1")))
            .unwrap();
        s.insert_vm("b", vm("sim-1", "elsewhere", 1, None)).unwrap();
        assert_consistent(&s);
        assert_eq!(
            s.by_mark("a", &VmId::new("vm-1")).unwrap().native_id,
            "sim-1"
        );
        assert!(s.name_taken("a", "two") && !s.name_taken("b", "two"));
        assert_eq!(s.used("a"), (4, 4096));
        assert_eq!(s.host_of("sim-1"), Some("a"));
        // Replacing a VM under its id, with the same name.
        s.insert_vm("a", vm("sim-2", "two", 3, None)).unwrap();
        assert!(s.name_taken("a", "two"));
        assert_eq!(s.used("a"), (5, 5120));
        assert_consistent(&s);
        assert!(s.set_resources(
            "a",
            "sim-3",
            Resources {
                vcpus: 4,
                memory_mib: 10,
                disk_gib: 1
            }
        ));
        assert_consistent(&s);
        assert_eq!(s.remove_vm("a", "sim-1").unwrap().name, "one");
        assert_eq!(
            s.host_of("sim-1"),
            Some("b"),
            "the other host's VM with that id"
        );
        assert_eq!(
            s.by_mark("a", &VmId::new("vm-1")).unwrap().native_id,
            "sim-3"
        );
        assert!(s.name_taken("a", "one"));
        assert_consistent(&s);
        s.remove_vm("a", "sim-3").unwrap();
        assert!(!s.name_taken("a", "one") && s.by_mark("a", &VmId::new("vm-1")).is_none());
        assert!(s.remove_vm("a", "sim-3").is_none());
        assert_consistent(&s);
        assert!(s.insert_vm("nowhere", vm("sim-9", "x", 1, None)).is_err());
        assert_consistent(&s);
    }

    #[test]
    fn a_state_file_lists_a_hosts_vms_by_native_id_and_reads_back_the_same() {
        let mut h = SimHost::new("h1", "z", 64, 1 << 20);
        for id in ["sim-9", "sim-10", "sim-2", "sim-1"] {
            h.vms
                .insert(id.into(), Box::new(vm(id, &format!("n{id}"), 1, None)));
        }
        let order: Vec<&str> = h
            .vms_in_order()
            .iter()
            .map(|v| v.native_id.as_str())
            .collect();
        assert_eq!(order, ["sim-1", "sim-10", "sim-2", "sim-9"]);
        let mut state = SimState::default();
        state.hosts.insert("h1".into(), h);
        let text = serde_json::to_string(&state).unwrap();
        let at = |id: &str| text.find(&format!("\"{id}\":")).unwrap();
        assert!(
            at("sim-1") < at("sim-10") && at("sim-10") < at("sim-2") && at("sim-2") < at("sim-9")
        );
        // Written twice, the same bytes: the file does not reorder from one write to the next.
        assert_eq!(serde_json::to_string(&state).unwrap(), text);
        let back: SimState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn sizes_sum_wide_and_read_saturated() {
        let mut s = IndexedState::default();
        s.merge_hosts(vec![SimHost::new("a", "z", 8, 8192)], &HashSet::new());
        let mut huge = vm("sim-1", "huge", u32::MAX, None);
        huge.resources.memory_mib = u64::MAX;
        s.insert_vm("a", huge.clone()).unwrap();
        huge.native_id = "sim-2".into();
        s.insert_vm("a", huge).unwrap();
        assert_eq!(s.used("a"), (u32::MAX, u64::MAX));
        s.remove_vm("a", "sim-2").unwrap();
        assert_eq!(s.used("a"), (u32::MAX, u64::MAX));
        s.remove_vm("a", "sim-1").unwrap();
        assert_eq!(s.used("a"), (0, 0));
    }

    #[test]
    fn a_file_time_is_trusted_only_once_older_than_a_tick() {
        let m = UNIX_EPOCH + Duration::new(1_000_000, 5);
        let stamp = Stamp {
            len: 1,
            modified: Some(m),
            identity: (0, 0, 0, 0),
        };
        assert!(racy(&stamp, m));
        assert!(racy(&stamp, m + Duration::from_millis(50)));
        assert!(!racy(&stamp, m + Duration::from_millis(51)));
        // Whole seconds: a file system that may keep nothing finer.
        let coarse = Stamp {
            modified: Some(UNIX_EPOCH + Duration::from_secs(1_000_000)),
            ..stamp
        };
        assert!(racy(
            &coarse,
            UNIX_EPOCH + Duration::from_millis(1_000_001_900)
        ));
        assert!(!racy(
            &coarse,
            UNIX_EPOCH + Duration::from_millis(1_000_002_001)
        ));
        assert!(racy(
            &Stamp {
                modified: None,
                ..stamp
            },
            m
        ));
    }

    #[test]
    fn snapshots_of_older_state_files_read_as_disk_only_and_new_ones_round_trip() {
        let old: SimSnapshot = serde_json::from_str("\"before\"").unwrap();
        assert_eq!(old.name, "before");
        assert!(
            !old.memory(),
            "an old record says nothing of memory: disk-only"
        );
        let new = SimSnapshot {
            name: "warm".into(),
            created_at: Some(Utc::now()),
            power: PowerState::Running,
            resources: None,
        };
        let text = serde_json::to_string(&new).unwrap();
        let back: SimSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, new);
        assert!(back.memory());
    }
}
