//! The embedded engine's files: where the simulator keeps its hosts and VMs, the jobs file that
//! carries finished jobs and idempotency records from one command to the next, and the lock
//! that lets one mutating command at a time act on an environment.
//!
//! Each environment has its own directory, so switching hosts files never mixes their state:
//! `<state dir>/hcp/demo/` for the built-in demo and `<state dir>/hcp/<file stem>-<hash>/` for a
//! hosts file, where `<state dir>` is `$XDG_STATE_HOME` or `~/.local/state`. `HCP_SIM_STATE`
//! names the simulator state file instead; the jobs file and the lock then sit next to it.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use hcp_core::store::{IdempotencyRecord, StoreSnapshot};
use hcp_core::{Config, JobId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The most finished jobs the jobs file keeps; the oldest are dropped first.
pub const MAX_JOBS: usize = 1000;

/// The version of the jobs file format this build writes.
const JOBS_FILE_VERSION: u32 = 1;

/// Where one environment's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePaths {
    /// The directory of the environment.
    pub dir: PathBuf,
    /// The state file of the first simulator provider (`HCP_SIM_STATE` when set).
    first_sim: PathBuf,
    /// Other simulator providers use `<dir>/<sim_prefix><provider>.json`.
    sim_prefix: String,
    /// Finished jobs and idempotency records.
    pub jobs: PathBuf,
    /// Held by mutating commands for their whole run.
    pub engine_lock: PathBuf,
}

impl StatePaths {
    /// Chooses the paths for the hosts file `config` (the demo when `None`).
    ///
    /// # Errors
    /// When no state directory can be found (no `HCP_SIM_STATE`, `XDG_STATE_HOME` or home).
    pub fn resolve(
        config: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<StatePaths> {
        if let Some(sim) = env("HCP_SIM_STATE") {
            let sim = PathBuf::from(sim);
            let dir = sim
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            let stem = sim
                .file_stem()
                .map_or_else(|| "sim".to_string(), |s| s.to_string_lossy().into_owned());
            return Ok(StatePaths {
                jobs: dir.join(format!("{stem}.jobs.json")),
                engine_lock: dir.join(format!("{stem}.engine.lock")),
                sim_prefix: format!("{stem}-"),
                first_sim: sim,
                dir,
            });
        }
        let base = dirs::state_dir()
            .or_else(|| dirs::home_dir().map(|h| h.join(".local").join("state")))
            .context("cannot find a state directory for the simulator; set HCP_SIM_STATE or XDG_STATE_HOME")?;
        let name = match config {
            None => "demo".to_string(),
            Some(path) => environment_name(path),
        };
        let dir = base.join("hcp").join(name);
        Ok(StatePaths {
            jobs: dir.join("jobs.json"),
            engine_lock: dir.join("engine.lock"),
            sim_prefix: "sim-".into(),
            first_sim: PathBuf::new(),
            dir,
        })
    }

    /// Returns the state file of the `index`-th simulator provider, called `provider`.
    fn sim_file(&self, index: usize, provider: &str) -> PathBuf {
        if index == 0 && !self.first_sim.as_os_str().is_empty() {
            return self.first_sim.clone();
        }
        let safe: String = provider
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{}{safe}.json", self.sim_prefix))
    }

    /// Points every simulator provider without a `state_file` setting at its file here.
    ///
    /// # Errors
    /// When a path is not valid UTF-8.
    pub fn assign_sim_state(&self, config: &mut Config) -> anyhow::Result<()> {
        let sims = config
            .providers
            .iter_mut()
            .filter(|p| p.kind == hcp_provider_sim::KIND);
        for (index, provider) in sims.enumerate() {
            let path = self.sim_file(index, &provider.name);
            let value = serde_json::to_value(&path).with_context(|| {
                format!(
                    "the simulator state path {} is not valid UTF-8",
                    path.display()
                )
            })?;
            match &mut provider.settings {
                serde_json::Value::Null => {
                    provider.settings = serde_json::json!({ "state_file": value });
                }
                serde_json::Value::Object(settings) => {
                    settings.entry("state_file").or_insert(value);
                }
                // Any other shape is the simulator's to refuse, naming the key.
                _ => {}
            }
        }
        Ok(())
    }

    /// Creates the environment's directory.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn create_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create the state directory {}", self.dir.display()))
    }
}

/// Names the environment of a hosts file: its stem and a digest of its canonical path.
fn environment_name(path: &Path) -> String {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        format!("config-{hash}")
    } else {
        format!("{stem}-{hash}")
    }
}

/// An exclusive lock on an environment, held by a mutating command from before the engine
/// reads the hosts until its jobs are saved, so commands on one environment act one at a time.
#[derive(Debug)]
pub struct EngineLock {
    // Closing the file releases the lock.
    _file: File,
}

impl EngineLock {
    /// Takes the lock, calling `waiting` first when another command holds it.
    ///
    /// # Errors
    /// When the lock file cannot be opened or locked.
    pub fn acquire(path: &Path, waiting: impl FnOnce()) -> anyhow::Result<EngineLock> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                waiting();
                file.lock()
                    .with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        Ok(EngineLock { _file: file })
    }
}

fn open_lock_file(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))
}

fn lock_path(jobs: &Path) -> PathBuf {
    let mut p = jobs.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// The jobs file on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct JobsFile {
    version: u32,
    #[serde(flatten)]
    snapshot: StoreSnapshot,
}

/// How long the jobs file remembers things, from the engine settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most finished jobs kept.
    pub max_jobs: usize,
    /// Finished jobs older than this are dropped.
    pub jobs: Duration,
    /// Idempotency records older than this are dropped.
    pub keys: Duration,
}

/// Reads the jobs file; a missing file is empty.
///
/// # Errors
/// When the file cannot be read or parsed.
pub fn read_jobs(path: &Path) -> anyhow::Result<StoreSnapshot> {
    let lock = open_lock_file(&lock_path(path))?;
    lock.lock_shared()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    load(path)
}

/// Merges `ours` into the jobs file by job id and idempotency scope, drops what `retention`
/// no longer keeps, and writes the file atomically (a temporary file renamed over it), all
/// under an exclusive lock so concurrent commands never lose each other's jobs.
///
/// # Errors
/// When the file cannot be read, parsed or written.
pub fn save_jobs(path: &Path, ours: StoreSnapshot, retention: Retention) -> anyhow::Result<()> {
    let lock = open_lock_file(&lock_path(path))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    let theirs = load(path)?;
    let merged = merge(theirs, ours, retention, Utc::now());
    let text = serde_json::to_vec(&JobsFile {
        version: JOBS_FILE_VERSION,
        snapshot: merged,
    })
    .context("cannot serialize the jobs file")?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write the jobs file {}", path.display()))
}

fn load(path: &Path) -> anyhow::Result<StoreSnapshot> {
    let mut text = String::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_string(&mut text)
                .with_context(|| format!("cannot read the jobs file {}", path.display()))?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(StoreSnapshot::default()),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open the jobs file {}", path.display()));
        }
    }
    let file: JobsFile = serde_json::from_str(&text).with_context(|| {
        format!(
            "the jobs file {} is not valid; delete it to start afresh (only job history is lost)",
            path.display()
        )
    })?;
    if file.version > JOBS_FILE_VERSION {
        bail!(
            "the jobs file {} has format version {}, newer than this hcp understands ({JOBS_FILE_VERSION}); upgrade hcp",
            path.display(),
            file.version
        );
    }
    Ok(file.snapshot)
}

/// Merges two snapshots. Jobs merge by id (ours win: they are the newer copy); idempotency
/// records merge by scope (the first one recorded wins). Only finished jobs are kept, at most
/// `retention.max_jobs` of them, newest first, none older than `retention.jobs`; a record is
/// kept only while its job is and it is younger than `retention.keys`, so a replay always finds
/// the job it answers with. Server groups are ours: only a command holding the environment's
/// lock saves, and it read theirs when it started, so ours include every group it did not
/// delete.
fn merge(
    theirs: StoreSnapshot,
    mut ours: StoreSnapshot,
    retention: Retention,
    now: chrono::DateTime<Utc>,
) -> StoreSnapshot {
    let groups = std::mem::take(&mut ours.groups);
    let mut jobs = BTreeMap::new();
    for (job, logs) in theirs.jobs.into_iter().chain(ours.jobs) {
        if job.state.is_terminal() {
            jobs.insert(job.id.clone(), (job, logs));
        }
    }
    let cutoff = |keep: Duration| {
        chrono::Duration::from_std(keep)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC)
    };
    let (jobs_cutoff, keys_cutoff) = (cutoff(retention.jobs), cutoff(retention.keys));
    let mut kept: Vec<_> = jobs
        .into_values()
        .filter(|(job, _)| job.finished_at.unwrap_or(job.created_at) >= jobs_cutoff)
        .collect();
    kept.sort_by(|(a, _), (b, _)| {
        let (ta, tb) = (
            a.finished_at.unwrap_or(a.created_at),
            b.finished_at.unwrap_or(b.created_at),
        );
        tb.cmp(&ta).then_with(|| b.id.cmp(&a.id))
    });
    kept.truncate(retention.max_jobs);
    let kept_ids: std::collections::HashSet<&JobId> = kept.iter().map(|(j, _)| &j.id).collect();
    let mut records: HashMap<_, IdempotencyRecord> = HashMap::new();
    for rec in theirs.idempotency.into_iter().chain(ours.idempotency) {
        if kept_ids.contains(&rec.job_id) && rec.created_at >= keys_cutoff {
            records.entry(rec.scope.clone()).or_insert(rec);
        }
    }
    let mut idempotency: Vec<IdempotencyRecord> = records.into_values().collect();
    idempotency.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.job_id.cmp(&b.job_id))
    });
    kept.reverse();
    StoreSnapshot {
        jobs: kept,
        idempotency,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::store::IdempotencyScope;
    use hcp_core::{Job, JobAction, JobState, Operation, Principal, VmId};

    fn job(n: i64, state: JobState) -> Job {
        let at = chrono::DateTime::<Utc>::from_timestamp(1_700_000_000 + n, 0).unwrap();
        Job {
            id: JobId::new(format!("job-{n:04}")),
            project: "demo".into(),
            vm_id: VmId::new(format!("vm-{n:04}")),
            operation: Operation::CreateVm,
            action: JobAction::Create,
            state,
            pending_reason: None,
            attempts: 1,
            max_attempts: 4,
            progress: 100,
            principal: Principal::new("alice"),
            idempotency_key: None,
            host: "h".into(),
            provider: "sim".into(),
            error: None,
            timeout_ms: 1000,
            created_at: at,
            started_at: Some(at),
            finished_at: state.is_terminal().then_some(at),
            generation: 3,
            lease: None,
            cancel_requested: None,
        }
    }

    fn record(n: i64, key: &str) -> IdempotencyRecord {
        let j = job(n, JobState::Succeeded);
        IdempotencyRecord {
            scope: IdempotencyScope {
                project: "demo".into(),
                principal: "alice".into(),
                operation: Operation::CreateVm,
                key: key.into(),
            },
            fingerprint: format!("fp-{n}"),
            vm_id: j.vm_id,
            job_id: j.id,
            created_at: j.created_at,
        }
    }

    const KEEP_ALL: Retention = Retention {
        max_jobs: 10,
        jobs: Duration::from_secs(u32::MAX as u64),
        keys: Duration::from_secs(u32::MAX as u64),
    };

    #[test]
    fn merge_keeps_both_sides_and_first_record_per_key() {
        let now = Utc::now();
        let theirs = StoreSnapshot {
            jobs: vec![(job(1, JobState::Succeeded), vec![])],
            idempotency: vec![record(1, "k")],
            groups: vec![],
        };
        let ours = StoreSnapshot {
            jobs: vec![
                (job(2, JobState::Failed), vec![]),
                (job(3, JobState::Running), vec![]),
            ],
            idempotency: vec![record(2, "k"), record(2, "other")],
            groups: vec![],
        };
        let m = merge(theirs, ours, KEEP_ALL, now);
        let ids: Vec<&str> = m.jobs.iter().map(|(j, _)| j.id.as_str()).collect();
        assert_eq!(
            ids,
            ["job-0001", "job-0002"],
            "unfinished jobs are not kept"
        );
        let k = m.idempotency.iter().find(|r| r.scope.key == "k").unwrap();
        assert_eq!(
            k.job_id.as_str(),
            "job-0001",
            "the first record of a key wins"
        );
        assert_eq!(m.idempotency.len(), 2);
    }

    #[test]
    fn merge_bounds_jobs_and_drops_records_of_dropped_jobs() {
        let now = Utc::now();
        let ours = StoreSnapshot {
            jobs: (0..5)
                .map(|n| (job(n, JobState::Succeeded), vec![]))
                .collect(),
            idempotency: vec![record(0, "oldest"), record(4, "newest")],
            groups: vec![],
        };
        let m = merge(
            StoreSnapshot::default(),
            ours,
            Retention {
                max_jobs: 3,
                ..KEEP_ALL
            },
            now,
        );
        let ids: Vec<&str> = m.jobs.iter().map(|(j, _)| j.id.as_str()).collect();
        assert_eq!(ids, ["job-0002", "job-0003", "job-0004"]);
        let keys: Vec<&str> = m.idempotency.iter().map(|r| r.scope.key.as_str()).collect();
        assert_eq!(keys, ["newest"]);
    }

    #[test]
    fn merge_drops_expired_jobs_and_keys() {
        let ours = StoreSnapshot {
            jobs: vec![(job(0, JobState::Succeeded), vec![])],
            idempotency: vec![record(0, "k")],
            groups: vec![],
        };
        let later = chrono::DateTime::<Utc>::from_timestamp(1_700_000_000 + 100, 0).unwrap();
        let m = merge(
            StoreSnapshot::default(),
            ours.clone(),
            Retention {
                keys: Duration::from_secs(50),
                ..KEEP_ALL
            },
            later,
        );
        assert_eq!(m.jobs.len(), 1);
        assert!(m.idempotency.is_empty());
        let m = merge(
            StoreSnapshot::default(),
            ours,
            Retention {
                jobs: Duration::from_secs(50),
                ..KEEP_ALL
            },
            later,
        );
        assert!(m.jobs.is_empty() && m.idempotency.is_empty());
    }

    #[test]
    fn save_then_read_round_trips_and_merges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.json");
        assert_eq!(read_jobs(&path).unwrap(), StoreSnapshot::default());
        let first = StoreSnapshot {
            jobs: vec![(job(1, JobState::Succeeded), vec![])],
            idempotency: vec![record(1, "k")],
            groups: vec![],
        };
        save_jobs(&path, first, KEEP_ALL).unwrap();
        let second = StoreSnapshot {
            jobs: vec![(job(2, JobState::Succeeded), vec![])],
            idempotency: vec![],
            groups: vec![],
        };
        save_jobs(&path, second, KEEP_ALL).unwrap();
        let back = read_jobs(&path).unwrap();
        assert_eq!(back.jobs.len(), 2);
        assert_eq!(back.idempotency.len(), 1);
        std::fs::write(&path, "{not json").unwrap();
        let e = read_jobs(&path).unwrap_err();
        assert!(
            format!("{e:#}").contains("delete it to start afresh"),
            "{e:#}"
        );
    }

    #[test]
    fn sim_state_follows_hcp_sim_state_or_the_environment() {
        let env = |k: &str| (k == "HCP_SIM_STATE").then(|| "/tmp/x/sim.json".to_string());
        let p = StatePaths::resolve(None, &env).unwrap();
        assert_eq!(p.jobs, PathBuf::from("/tmp/x/sim.jobs.json"));
        assert_eq!(p.sim_file(0, "sim"), PathBuf::from("/tmp/x/sim.json"));
        assert_eq!(
            p.sim_file(1, "lab/b"),
            PathBuf::from("/tmp/x/sim-lab_b.json")
        );

        let mut config = hcp_provider_sim::demo_config();
        config.providers[0].settings = serde_json::json!({ "seed": 1 });
        p.assign_sim_state(&mut config).unwrap();
        assert_eq!(
            config.providers[0].settings["state_file"],
            "/tmp/x/sim.json"
        );
        assert_eq!(config.providers[0].settings["seed"], 1);
        config.providers[0].settings["state_file"] = "/elsewhere.json".into();
        p.assign_sim_state(&mut config).unwrap();
        assert_eq!(
            config.providers[0].settings["state_file"], "/elsewhere.json",
            "an explicit state_file wins"
        );

        let a = environment_name(Path::new("/etc/hcp/hosts.yaml"));
        let b = environment_name(Path::new("/srv/hosts.yaml"));
        assert!(
            a.starts_with("hosts-") && b.starts_with("hosts-") && a != b,
            "{a} {b}"
        );
    }
}
