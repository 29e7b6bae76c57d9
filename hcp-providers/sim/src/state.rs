//! The simulator's state: hosts and their VMs, in memory or in a JSON file shared between
//! processes (guarded by an exclusive file lock, written atomically).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use hcp_core::{Error, ErrorKind, HcpMark, NativeVm, PowerState, Resources, Result};
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
    /// Its VMs by native id.
    #[serde(default)]
    pub vms: BTreeMap<String, SimVm>,
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
            vms: BTreeMap::new(),
        }
    }

    /// Returns the vCPUs and memory its VMs use. Saturating: a VM seeded or loaded with any size
    /// makes the host read as full, never as having room.
    pub(crate) fn used(&self) -> (u32, u64) {
        self.vms.values().fold((0u32, 0u64), |(c, m), v| {
            (
                c.saturating_add(v.resources.vcpus),
                m.saturating_add(v.resources.memory_mib),
            )
        })
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
}

impl SimState {
    pub(crate) fn host(&self, name: &str) -> Result<&SimHost> {
        self.hosts.get(name).ok_or_else(|| unknown_host(name))
    }

    pub(crate) fn host_mut(&mut self, name: &str) -> Result<&mut SimHost> {
        self.hosts.get_mut(name).ok_or_else(|| unknown_host(name))
    }

    pub(crate) fn find_mut(&mut self, native_id: &str) -> Option<&mut SimVm> {
        self.hosts
            .values_mut()
            .find_map(|h| h.vms.get_mut(native_id))
    }

    pub(crate) fn next_native_id(&mut self) -> Result<String> {
        self.next_id = self.next_id.checked_add(1).ok_or_else(|| {
            Error::new(
                ErrorKind::ProviderError,
                "the simulator ran out of native ids (next_id in its state file is at its maximum)",
            )
        })?;
        Ok(format!("sim-{}", self.next_id))
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

/// Where the state lives.
#[derive(Debug)]
pub(crate) enum Backend {
    Memory(Mutex<SimState>),
    File { path: PathBuf, lock: PathBuf },
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
                let mut s = SimState::default();
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
                let b = Backend::File {
                    path: path.to_path_buf(),
                    lock: PathBuf::from(lock),
                };
                b.write(|s| {
                    s.merge_hosts(hosts, &down);
                    Ok(())
                })?;
                Ok(b)
            }
        }
    }

    /// Runs `f` on the state without changing it.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&SimState) -> Result<R>) -> Result<R> {
        match self {
            Backend::Memory(m) => f(&m.lock().unwrap_or_else(|p| p.into_inner())),
            Backend::File { path, lock } => {
                // Readers share the lock; writers replace the file atomically under an exclusive one.
                let file = open_lock(lock)?;
                let guard = fd_lock::RwLock::new(file);
                let _held = guard.read().map_err(|e| io_error(lock, "lock", e))?;
                f(&load(path)?)
            }
        }
    }

    /// Runs `f` on the state and keeps its changes when it succeeds.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut SimState) -> Result<R>) -> Result<R> {
        match self {
            // Every change checks before it mutates, so a refused change leaves nothing half-done.
            Backend::Memory(m) => f(&mut m.lock().unwrap_or_else(|p| p.into_inner())),
            Backend::File { path, lock } => {
                let file = open_lock(lock)?;
                let mut guard = fd_lock::RwLock::new(file);
                let _held = guard.write().map_err(|e| io_error(lock, "lock", e))?;
                let mut s = load(path)?;
                let r = f(&mut s)?;
                save(path, &s)?;
                Ok(r)
            }
        }
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

fn load(path: &Path) -> Result<SimState> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .map_err(|e| io_error(path, "read", e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SimState::default()),
        Err(e) => return Err(io_error(path, "open", e)),
    }
    serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::ProviderError,
            "the simulator's state file is not valid; delete it to start afresh",
        )
        .with_detail(format!("{}: {e}", path.display()))
    })
}

fn save(path: &Path, s: &SimState) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let text = serde_json::to_vec_pretty(s).map_err(|e| Error::internal(e.to_string()))?;
    let mut f = File::create(&tmp).map_err(|e| io_error(&tmp, "create", e))?;
    f.write_all(&text).map_err(|e| io_error(&tmp, "write", e))?;
    f.sync_all().map_err(|e| io_error(&tmp, "sync", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, "replace", e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
