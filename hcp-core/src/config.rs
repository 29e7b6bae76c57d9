//! Configuration: one typed config from a hosts file (YAML, the Kubernetes ConfigMap form),
//! environment variables, and secrets read from files or the environment.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    Capabilities, Catalog, Error, ErrorKind, Flavor, Image, Network, Result, RetryPolicy, Zone,
};

/// The whole configuration of one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Hypervisor endpoints and their hosts.
    pub providers: Vec<ProviderConfig>,
    /// Placement zones.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Images, flavors and networks tenants choose from.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// Engine limits and intervals.
    #[serde(default)]
    pub engine: EngineSettings,
    /// The projects (tenants) HCP serves, with their quotas. When empty, any valid project id is
    /// accepted and unlimited.
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// Where secrets are read from.
    #[serde(skip)]
    pub secrets: Secrets,
    /// The file this config was read from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// One provider instance (a hypervisor endpoint or cluster) and its hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A unique name (`hyperv-east`).
    pub name: String,
    /// The provider kind (`sim`, `libvirt`, `hyperv`).
    pub kind: String,
    /// Capabilities switched off for the whole provider.
    #[serde(default)]
    pub limits: CapabilityLimits,
    /// Provider-specific settings, read by the provider itself.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Its hosts.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// Its cluster placement targets: HCP places a VM on the cluster and the provider (or the
    /// hypervisor's own scheduler) picks the member host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterConfig>,
}

/// One cluster of a provider: a placement target whose provider chooses the host.
///
/// Its member hosts are the provider's hosts whose [`HostConfig::cluster`] names it, or, for a
/// provider that discovers them (vSphere), the hosts the hypervisor reports in the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster name, unique among the provider's hosts and clusters.
    pub name: String,
    /// Its zone; member hosts listed in the hosts file must be in it too.
    pub zone: String,
    /// Most jobs running at once on the cluster; `engine.max_jobs_per_host` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<usize>,
    /// Capabilities switched off on this cluster.
    #[serde(default)]
    pub limits: CapabilityLimits,
    /// Cluster-specific settings, read by the provider (the hypervisor's cluster name).
    #[serde(default)]
    pub settings: serde_json::Value,
}

/// One host of a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The host name, unique within its provider.
    pub name: String,
    /// Its zone.
    pub zone: String,
    /// vCPUs it offers (providers that can ask the host ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Memory it offers in MiB (providers that can ask the host ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Capabilities switched off on this host.
    #[serde(default)]
    pub limits: CapabilityLimits,
    /// Host-specific settings, read by the provider (an address, a URI).
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Makes the host a member of this cluster of the provider: HCP then places on the cluster,
    /// never on the host alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Most jobs running at once on the host; `engine.max_jobs_per_host` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_jobs: Option<usize>,
}

/// A zone and the capabilities switched off in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone name.
    pub name: String,
    /// A short description.
    #[serde(default)]
    pub description: String,
    /// Capabilities switched off in this zone.
    #[serde(default)]
    pub limits: CapabilityLimits,
}

/// Narrows capabilities: flags to switch off and size limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityLimits {
    /// Capability names to switch off (`cloud_init`, `snapshot`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<String>,
    /// Most vCPUs per VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
    /// Most memory per VM, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    /// Largest disk per VM, in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disk_gib: Option<u64>,
    /// Most networks per VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_networks: Option<u32>,
}

/// The names [`CapabilityLimits::disable`] accepts.
pub const CAPABILITY_NAMES: [&str; 13] = [
    "cloud_init",
    "snapshot",
    "live_migration",
    "cold_migration",
    "console_vnc",
    "console_spice",
    "console_rdp",
    "console_webmks",
    "console_web",
    "gpu_passthrough",
    "tags",
    "resize",
    "adopt",
];

impl CapabilityLimits {
    /// Returns the mask these limits leave: every capability except the disabled ones.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] for an unknown capability name.
    pub fn mask(&self) -> Result<Capabilities> {
        let mut c = Capabilities::all();
        for name in &self.disable {
            let flag = match name.as_str() {
                "cloud_init" => &mut c.cloud_init,
                "snapshot" => &mut c.snapshot,
                "live_migration" => &mut c.live_migration,
                "cold_migration" => &mut c.cold_migration,
                "console_vnc" => &mut c.console_vnc,
                "console_spice" => &mut c.console_spice,
                "console_rdp" => &mut c.console_rdp,
                "console_webmks" => &mut c.console_webmks,
                "console_web" => &mut c.console_web,
                "gpu_passthrough" => &mut c.gpu_passthrough,
                "tags" => &mut c.tags,
                "resize" => &mut c.resize,
                "adopt" => &mut c.adopt,
                other => {
                    return Err(Error::invalid(
                        "limits.disable",
                        format!(
                            "unknown capability `{other}`; known: {}",
                            CAPABILITY_NAMES.join(", ")
                        ),
                    ));
                }
            };
            *flag = false;
        }
        c.max_vcpus = self.max_vcpus;
        c.max_memory_mib = self.max_memory_mib;
        c.max_disk_gib = self.max_disk_gib;
        c.max_networks = self.max_networks;
        Ok(c)
    }
}

/// The catalog section of the hosts file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// Images.
    #[serde(default)]
    pub images: Vec<Image>,
    /// Flavors.
    #[serde(default)]
    pub flavors: Vec<Flavor>,
    /// Networks.
    #[serde(default)]
    pub networks: Vec<Network>,
}

/// A project (tenant) and its quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project id: 1–63 characters of `[a-z0-9-]`, starting with a letter.
    pub name: String,
    /// A short description.
    #[serde(default)]
    pub description: String,
    /// Its quota; unlimited when absent.
    #[serde(default)]
    pub quota: Quota,
}

/// A per-project quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Most VMs.
    #[serde(default)]
    pub max_vms: Option<u64>,
    /// Most vCPUs over all VMs.
    #[serde(default)]
    pub max_vcpus: Option<u64>,
    /// Most memory over all VMs, in MiB.
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
}

/// What the reconciler does about drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// Emits drift events only.
    #[default]
    Report,
    /// Emits drift events and submits jobs that restore the desired power state.
    RestorePower,
}

/// The largest `max_jobs` a host or cluster of the hosts file may set.
pub const MAX_TARGET_JOBS: usize = 10_000;

/// What the reconciler does about each kind of drift other than power (`engine.drift_repairs`).
///
/// # Behavior
/// Every drift is reported once, as a `drift` event, whatever the choice; the choices say what
/// happens besides. Power drift keeps its own switch, [`DriftPolicy`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftRepairs {
    /// A VM found on another host than recorded.
    pub moved: MovedRepair,
    /// A VM missing from its host while that host answered.
    pub missing: MissingRepair,
    /// A VM on a host without HCP's mark.
    pub unmanaged: UnmanagedRepair,
}

/// What the reconciler does about a VM found on another host (`drift_repairs.moved`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovedRepair {
    /// Updates the VM's placement in the store to where it was found and records a
    /// `drift_repaired` event.
    #[default]
    Follow,
    /// Reports only: the store keeps the old host until an operator acts.
    Report,
}

/// What the reconciler does about a VM missing from its host (`drift_repairs.missing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingRepair {
    /// Marks the VM `ERROR` with the reason and records a `drift_repaired` event; it is never
    /// recreated.
    #[default]
    MarkError,
    /// Reports only: the VM keeps its state, shown as not present.
    Report,
}

/// What the reconciler does about a VM without HCP's mark (`drift_repairs.unmanaged`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmanagedRepair {
    /// Lists it as an adoption candidate in the operators' inventory, where the host can adopt
    /// (`POST /api/hcp/ops/v1/vms:adopt` takes it into a project).
    #[default]
    OfferAdoption,
    /// Reports only: adoption is refused.
    Report,
}

/// The longest `engine.event_retention` (`HCP_EVENT_RETENTION`): 100 years.
pub const MAX_EVENT_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Checks an event retention against [`MAX_EVENT_RETENTION`]; `field` names it in the error.
fn check_event_retention(field: &str, value: Duration) -> Result<()> {
    if value > MAX_EVENT_RETENTION {
        return Err(Error::invalid(
            field,
            format!(
                "is {}; at most {} (100 years); 0 keeps events",
                humantime::format_duration(value),
                humantime::format_duration(MAX_EVENT_RETENTION)
            ),
        ));
    }
    Ok(())
}

/// The allowed `engine.leader_lease` (`HCP_LEADER_LEASE`): 1 s to 1 h.
pub const LEADER_LEASE_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);

fn check_leader_lease(field: &str, value: Duration) -> Result<()> {
    if !LEADER_LEASE_RANGE.contains(&value) {
        return Err(Error::invalid(
            field,
            format!(
                "is {}; allowed: 1s to 1h",
                humantime::format_duration(value)
            ),
        ));
    }
    Ok(())
}

/// The largest `engine.max_snapshots_per_vm` a hosts file may set.
pub const MAX_SNAPSHOTS_PER_VM: u32 = 1000;

/// Engine limits and intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Most jobs running at once, over all hosts.
    pub max_concurrent_jobs: usize,
    /// Most jobs running at once on one host.
    pub max_jobs_per_host: usize,
    /// The timeout of one job, from its first start to its end, retries included.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// How long idempotency keys are remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How often the reconciler refreshes inventory (`INVENTORY_REFRESH_INTERVAL`); zero switches it off.
    #[serde(with = "humantime_serde")]
    pub inventory_refresh_interval: Duration,
    /// What the reconciler does about drift.
    pub drift_policy: DriftPolicy,
    /// What the reconciler does about moved, missing and unmanaged VMs.
    pub drift_repairs: DriftRepairs,
    /// How long finished jobs are kept.
    #[serde(with = "humantime_serde")]
    pub job_retention: Duration,
    /// How long audit events are kept (`HCP_EVENT_RETENTION`), from when they happened; the
    /// retention purge (run after each inventory refresh) drops older ones. Zero keeps them
    /// (up to `max_events` in memory). At most [`MAX_EVENT_RETENTION`].
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
    /// The leader lease of the singleton duties when several replicas share a database
    /// (`HCP_LEADER_LEASE`, 1 s to 1 h): when the leader dies, another replica takes over the
    /// inventory refresh, drift repair and retention purges within this period.
    #[serde(with = "humantime_serde")]
    pub leader_lease: Duration,
    /// Most log lines kept per job (the oldest are dropped first).
    pub max_log_lines_per_job: usize,
    /// Most audit events kept in memory.
    pub max_events: usize,
    /// How long a graceful stop may take before a hard power-off.
    #[serde(with = "humantime_serde")]
    pub graceful_stop_timeout: Duration,
    /// Most snapshots one VM may have (1-1000); a snapshot beyond it is refused before a job.
    pub max_snapshots_per_vm: u32,
    /// The project the Hyper-V service's legacy routes act in.
    pub default_project: String,
    /// How long a worker's claim on a job lasts unless renewed (1 s to 1 h; `HCP_JOB_LEASE`).
    /// Workers renew every third of it; a job whose worker died is picked up again (by this or
    /// another replica sharing the store) once its lease lapsed.
    #[serde(with = "humantime_serde")]
    pub job_lease: Duration,
    /// What wraps each single hypervisor call (the [`crate::layer`] stack every provider gets).
    pub provider_calls: ProviderCallSettings,
}

/// The layers every provider's calls run through ([`crate::layer`]): a per-call timeout with
/// cancellation, retries of calls safe to repeat, and a cap on calls at once per host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderCallSettings {
    /// Longest one hypervisor call may take before it is cancelled (0 s, the default, leaves
    /// calls bounded only by their job's timeout); at most 24 h.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a cancelled call is given to stop before it is reported as possibly still
    /// taking effect; 1 s to 10 min.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// Attempts per call for calls safe to repeat (1-10; 1, the default, leaves retries to the
    /// job's `retry` policy).
    pub attempts: u32,
    /// Most calls at once per host or cluster (0, the default, sets no cap beyond
    /// `max_jobs_per_host`); at most 1,000.
    pub max_per_host: usize,
}

impl Default for ProviderCallSettings {
    fn default() -> Self {
        ProviderCallSettings {
            timeout: Duration::ZERO,
            grace: Duration::from_secs(30),
            attempts: 1,
            max_per_host: 0,
        }
    }
}

impl ProviderCallSettings {
    /// Checks the bounds; errors name the key under `engine.provider_calls`.
    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.timeout > Duration::from_secs(24 * 3600) {
            return Err((
                "engine.provider_calls.timeout",
                format!(
                    "is {}; allowed: 0s (off) to 24h",
                    humantime::format_duration(self.timeout)
                ),
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.grace) {
            return Err((
                "engine.provider_calls.grace",
                format!(
                    "is {}; allowed: 1s to 10m",
                    humantime::format_duration(self.grace)
                ),
            ));
        }
        if !(1..=10).contains(&self.attempts) {
            return Err((
                "engine.provider_calls.attempts",
                format!("is {}; allowed: 1-10", self.attempts),
            ));
        }
        if self.max_per_host > 1000 {
            return Err((
                "engine.provider_calls.max_per_host",
                format!("is {}; allowed: 0 (no cap) to 1000", self.max_per_host),
            ));
        }
        Ok(())
    }

    /// Returns the layers these settings ask for, innermost first (empty with the defaults).
    pub fn layers(&self) -> Vec<std::sync::Arc<dyn crate::layer::Layer>> {
        use crate::layer::{ConcurrencyLimitLayer, Layer, RetryLayer, TimeoutLayer};
        let mut layers: Vec<std::sync::Arc<dyn Layer>> = Vec::new();
        if self.max_per_host > 0 {
            layers.push(std::sync::Arc::new(ConcurrencyLimitLayer::new(
                self.max_per_host,
            )));
        }
        if !self.timeout.is_zero() {
            layers.push(std::sync::Arc::new(
                TimeoutLayer::new(self.timeout).with_grace(self.grace),
            ));
        }
        if self.attempts > 1 {
            layers.push(std::sync::Arc::new(
                RetryLayer::new().with_max_attempts(self.attempts),
            ));
        }
        layers
    }
}

/// The shortest `engine.job_lease`.
pub const MIN_JOB_LEASE: Duration = Duration::from_secs(1);
/// The longest `engine.job_lease`.
pub const MAX_JOB_LEASE: Duration = Duration::from_secs(3600);

/// Checks a job lease duration: 1 s to 1 h.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `field` when it is outside that range.
pub fn validate_job_lease(field: &str, lease: Duration) -> Result<()> {
    if (MIN_JOB_LEASE..=MAX_JOB_LEASE).contains(&lease) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!(
                "is {}; allowed: 1s to 1h",
                humantime::format_duration(lease)
            ),
        ))
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_concurrent_jobs: 64,
            max_jobs_per_host: 4,
            job_timeout: Duration::from_secs(30 * 60),
            retry: RetryPolicy::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            inventory_refresh_interval: Duration::from_secs(60),
            drift_policy: DriftPolicy::Report,
            drift_repairs: DriftRepairs::default(),
            job_retention: Duration::from_secs(24 * 3600),
            event_retention: Duration::from_secs(30 * 24 * 3600),
            leader_lease: Duration::from_secs(15),
            max_log_lines_per_job: 1000,
            max_events: 100_000,
            graceful_stop_timeout: Duration::from_secs(60),
            max_snapshots_per_vm: 32,
            default_project: "default".into(),
            job_lease: Duration::from_secs(30),
            provider_calls: ProviderCallSettings::default(),
        }
    }
}

impl Config {
    /// Parses a hosts file's text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the key and line: YAML syntax, unknown or missing keys,
    /// wrong types, duplicate names, references to unknown zones, unknown capability names.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config> {
        let config: Config = serde_yaml_ng::from_str(text).map_err(|e| {
            let mut msg = format!("{origin}: {e}");
            if let Some(loc) = e.location()
                && !msg.contains("line")
            {
                msg.push_str(&format!(" (line {})", loc.line()));
            }
            Error::new(ErrorKind::InvalidSpec, msg).with_field("config")
        })?;
        config.check(text, origin)?;
        Ok(config)
    }

    /// Reads and parses a hosts file.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] when the file cannot be read or is invalid (see [`Config::from_yaml`]).
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                "config",
                format!("cannot read hosts file {}: {e}", path.display()),
            )
        })?;
        let mut config = Config::from_yaml(&text, &path.display().to_string())?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Applies the environment: `INVENTORY_REFRESH_INTERVAL`, `HCP_MAX_CONCURRENT_JOBS`,
    /// `HCP_MAX_JOBS_PER_HOST`, `HCP_JOB_TIMEOUT`, `HCP_JOB_LEASE`, `HCP_IDEMPOTENCY_TTL`,
    /// `HCP_EVENT_RETENTION`, `HCP_LEADER_LEASE`, `HCP_DEFAULT_PROJECT`, and `HCP_SECRETS_DIR`
    /// (default `/run/secrets`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] naming the variable when a value cannot be parsed.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = env("INVENTORY_REFRESH_INTERVAL") {
            self.engine.inventory_refresh_interval =
                parse_duration("INVENTORY_REFRESH_INTERVAL", &v)?;
        }
        if let Some(v) = env("HCP_JOB_TIMEOUT") {
            self.engine.job_timeout = parse_duration("HCP_JOB_TIMEOUT", &v)?;
        }
        if let Some(v) = env("HCP_JOB_LEASE") {
            let lease = parse_duration("HCP_JOB_LEASE", &v)?;
            validate_job_lease("HCP_JOB_LEASE", lease)?;
            self.engine.job_lease = lease;
        }
        if let Some(v) = env("HCP_IDEMPOTENCY_TTL") {
            self.engine.idempotency_ttl = parse_duration("HCP_IDEMPOTENCY_TTL", &v)?;
        }
        if let Some(v) = env("HCP_EVENT_RETENTION") {
            let keep = parse_duration("HCP_EVENT_RETENTION", &v)?;
            check_event_retention("HCP_EVENT_RETENTION", keep)?;
            self.engine.event_retention = keep;
        }
        if let Some(v) = env("HCP_LEADER_LEASE") {
            let lease = parse_duration("HCP_LEADER_LEASE", &v)?;
            check_leader_lease("HCP_LEADER_LEASE", lease)?;
            self.engine.leader_lease = lease;
        }
        if let Some(v) = env("HCP_MAX_CONCURRENT_JOBS") {
            self.engine.max_concurrent_jobs = parse_count("HCP_MAX_CONCURRENT_JOBS", &v)?;
        }
        if let Some(v) = env("HCP_MAX_JOBS_PER_HOST") {
            self.engine.max_jobs_per_host = parse_count("HCP_MAX_JOBS_PER_HOST", &v)?;
        }
        if let Some(v) = env("HCP_DEFAULT_PROJECT") {
            self.engine.default_project = v;
        }
        if let Some(v) = env("HCP_SECRETS_DIR") {
            self.secrets = Secrets::new(v);
        }
        Ok(())
    }

    /// Returns the catalog (images, flavors, networks and zones).
    pub fn catalog(&self) -> Catalog {
        Catalog {
            images: self.catalog.images.clone(),
            flavors: self.catalog.flavors.clone(),
            networks: self.catalog.networks.clone(),
            zones: self
                .zones
                .iter()
                .map(|z| Zone {
                    name: z.name.clone(),
                    description: z.description.clone(),
                })
                .collect(),
        }
    }

    fn check(&self, text: &str, origin: &str) -> Result<()> {
        let fail = |key: String, msg: String| -> Result<()> {
            let line = yaml_location(text, &key)
                .map(|(l, _)| format!(" (line {l})"))
                .unwrap_or_default();
            Err(Error::new(
                ErrorKind::InvalidSpec,
                format!("{origin}{line}: {key}: {msg}"),
            )
            .with_field(key))
        };
        if self.providers.is_empty() {
            return fail(
                "providers".into(),
                "at least one provider is required".into(),
            );
        }
        if !(1..=MAX_SNAPSHOTS_PER_VM).contains(&self.engine.max_snapshots_per_vm) {
            return fail(
                "engine.max_snapshots_per_vm".into(),
                format!(
                    "is {}; allowed: 1-{MAX_SNAPSHOTS_PER_VM}",
                    self.engine.max_snapshots_per_vm
                ),
            );
        }
        if let Err(e) = check_event_retention("engine.event_retention", self.engine.event_retention)
        {
            return fail("engine.event_retention".into(), e.message().to_string());
        }
        if let Err(e) = check_leader_lease("engine.leader_lease", self.engine.leader_lease) {
            return fail("engine.leader_lease".into(), e.message().to_string());
        }
        if let Err(e) = validate_job_lease("engine.job_lease", self.engine.job_lease) {
            return fail("engine.job_lease".into(), e.message().to_string());
        }
        if let Err((key, msg)) = self.engine.provider_calls.check() {
            return fail(key.into(), msg);
        }
        let mut zones = HashSet::new();
        for (i, z) in self.zones.iter().enumerate() {
            if let Err(e) = crate::validate_dns_label("name", &z.name) {
                return fail(format!("zones[{i}].name"), e.message().to_string());
            }
            if !zones.insert(z.name.as_str()) {
                return fail(
                    format!("zones[{i}].name"),
                    format!("duplicate zone `{}`", z.name),
                );
            }
            if let Err(e) = z.limits.mask() {
                return fail(
                    format!("zones[{i}].limits.disable"),
                    e.message().to_string(),
                );
            }
        }
        let mut projects = HashSet::new();
        for (i, p) in self.projects.iter().enumerate() {
            if let Err(e) = crate::validate_dns_label("name", &p.name) {
                return fail(format!("projects[{i}].name"), e.message().to_string());
            }
            if !projects.insert(p.name.as_str()) {
                return fail(
                    format!("projects[{i}].name"),
                    format!("duplicate project `{}`", p.name),
                );
            }
        }
        let mut providers = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            if p.name.is_empty() || !providers.insert(p.name.as_str()) {
                return fail(
                    format!("providers[{i}].name"),
                    format!("provider name `{}` is empty or used twice", p.name),
                );
            }
            if let Err(e) = p.limits.mask() {
                return fail(
                    format!("providers[{i}].limits.disable"),
                    e.message().to_string(),
                );
            }
            let mut hosts = HashSet::new();
            for (j, h) in p.hosts.iter().enumerate() {
                if h.name.is_empty() || !hosts.insert(h.name.as_str()) {
                    return fail(
                        format!("providers[{i}].hosts[{j}].name"),
                        format!("host name `{}` is empty or used twice", h.name),
                    );
                }
                if !zones.contains(h.zone.as_str()) {
                    let known: Vec<&str> = self.zones.iter().map(|z| z.name.as_str()).collect();
                    return fail(
                        format!("providers[{i}].hosts[{j}].zone"),
                        format!(
                            "unknown zone `{}`; zones: {}",
                            h.zone,
                            if known.is_empty() {
                                "none declared".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
                if let Err(e) = h.limits.mask() {
                    return fail(
                        format!("providers[{i}].hosts[{j}].limits.disable"),
                        e.message().to_string(),
                    );
                }
                if let Some(n) = h.max_jobs
                    && !(1..=MAX_TARGET_JOBS).contains(&n)
                {
                    return fail(
                        format!("providers[{i}].hosts[{j}].max_jobs"),
                        format!("is {n}; allowed: 1-{MAX_TARGET_JOBS}"),
                    );
                }
                if let Some(c) = &h.cluster {
                    let Some(cluster) = p.clusters.iter().find(|k| &k.name == c) else {
                        let known: Vec<&str> = p.clusters.iter().map(|k| k.name.as_str()).collect();
                        return fail(
                            format!("providers[{i}].hosts[{j}].cluster"),
                            format!(
                                "unknown cluster `{c}`; the provider's clusters: {}",
                                if known.is_empty() {
                                    "none declared".into()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                    };
                    if cluster.zone != h.zone {
                        return fail(
                            format!("providers[{i}].hosts[{j}].zone"),
                            format!(
                                "is `{}`, but its cluster `{c}` is in zone `{}`; a cluster's hosts share its zone",
                                h.zone, cluster.zone
                            ),
                        );
                    }
                }
            }
            for (j, c) in p.clusters.iter().enumerate() {
                if c.name.is_empty() || !hosts.insert(c.name.as_str()) {
                    return fail(
                        format!("providers[{i}].clusters[{j}].name"),
                        format!(
                            "cluster name `{}` is empty or used twice (hosts and clusters share one namespace)",
                            c.name
                        ),
                    );
                }
                if !zones.contains(c.zone.as_str()) {
                    return fail(
                        format!("providers[{i}].clusters[{j}].zone"),
                        format!("unknown zone `{}`", c.zone),
                    );
                }
                if let Err(e) = c.limits.mask() {
                    return fail(
                        format!("providers[{i}].clusters[{j}].limits.disable"),
                        e.message().to_string(),
                    );
                }
                if let Some(n) = c.max_jobs
                    && !(1..=MAX_TARGET_JOBS).contains(&n)
                {
                    return fail(
                        format!("providers[{i}].clusters[{j}].max_jobs"),
                        format!("is {n}; allowed: 1-{MAX_TARGET_JOBS}"),
                    );
                }
            }
        }
        let mut seen = HashSet::new();
        for (i, img) in self.catalog.images.iter().enumerate() {
            if img.name.is_empty() || !seen.insert(img.name.as_str()) {
                return fail(
                    format!("catalog.images[{i}].name"),
                    format!("image name `{}` is empty or used twice", img.name),
                );
            }
            if img.min_disk_gib > crate::model::MAX_DISK_GIB {
                return fail(
                    format!("catalog.images[{i}].min_disk_gib"),
                    format!(
                        "is {} GiB; allowed: 0-{} GiB",
                        img.min_disk_gib,
                        crate::model::MAX_DISK_GIB
                    ),
                );
            }
        }
        seen.clear();
        for (i, f) in self.catalog.flavors.iter().enumerate() {
            if f.name.is_empty() || !seen.insert(f.name.as_str()) {
                return fail(
                    format!("catalog.flavors[{i}].name"),
                    format!("flavor name `{}` is empty or used twice", f.name),
                );
            }
            let size = crate::Resources {
                vcpus: f.vcpus,
                memory_mib: f.memory_mib,
                disk_gib: f.disk_gib,
            };
            if let Err(e) = size.validate() {
                let field = e.field().unwrap_or("vcpus").to_string();
                let msg = e
                    .message()
                    .strip_prefix(&format!("{field}: "))
                    .unwrap_or(e.message())
                    .to_string();
                return fail(format!("catalog.flavors[{i}].{field}"), msg);
            }
        }
        seen.clear();
        for (i, n) in self.catalog.networks.iter().enumerate() {
            if n.name.is_empty() || !seen.insert(n.name.as_str()) {
                return fail(
                    format!("catalog.networks[{i}].name"),
                    format!("network name `{}` is empty or used twice", n.name),
                );
            }
            for (k, z) in n.zones.iter().enumerate() {
                if !zones.contains(z.as_str()) {
                    return fail(
                        format!("catalog.networks[{i}].zones[{k}]"),
                        format!("unknown zone `{z}`"),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Returns where the value at `path` (`providers[0].hosts[1].zone`) starts in `text`, as
/// serde_yaml_ng's parser reports it (line and column from 1): the text is read once more, and
/// a visitor that walks the path raises an error at the value, to which the parser attaches
/// that node's position. `None` when the path is not in the text (a default value).
fn yaml_location(text: &str, path: &str) -> Option<(usize, usize)> {
    let segments = path_segments(path)?;
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match serde::de::DeserializeSeed::deserialize(Locate(&segments), de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// The message the locating visitor raises at its target.
const FOUND: &str = "hcp: located";

/// One step of a key path.
#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[0][1].c` into keys and indexes.
fn path_segments(path: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while !rest.is_empty() {
            let (index, after) = rest.split_once(']')?;
            out.push(Segment::Index(index.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

/// Walks a YAML document along a key path and fails at its end (see [`yaml_location`]).
struct Locate<'p, 'a>(&'p [Segment<'a>]);

impl<'de> serde::de::DeserializeSeed<'de> for Locate<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Locate<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        let Some((Segment::Key(want), rest)) = self.0.split_first() else {
            return Err(serde::de::Error::custom(FOUND));
        };
        while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
            if key.as_str() == Some(*want) {
                return map.next_value_seed(Locate(rest));
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<(), A::Error> {
        let Some((Segment::Index(want), rest)) = self.0.split_first() else {
            return Err(serde::de::Error::custom(FOUND));
        };
        for _ in 0..*want {
            if seq.next_element::<serde::de::IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Locate(rest)).map(|_| ())
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<(), E> {
        self.scalar()
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<(), E> {
        self.scalar()
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<(), E> {
        self.scalar()
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<(), E> {
        self.scalar()
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> std::result::Result<(), E> {
        self.scalar()
    }

    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.scalar()
    }

    fn visit_none<E: serde::de::Error>(self) -> std::result::Result<(), E> {
        self.scalar()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> std::result::Result<(), A::Error> {
        self.scalar()
    }
}

impl Locate<'_, '_> {
    /// A scalar is the target when the path ends here, else the path is not in the text.
    fn scalar<E: serde::de::Error>(&self) -> std::result::Result<(), E> {
        if self.0.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

/// Parses a duration: `90`, `90s`, `5m`, `1h 30m`, `500ms`.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `field`.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).map_err(|e| {
        Error::invalid(
            field,
            format!("`{v}` is not a duration ({e}); use seconds or forms like 90s, 5m, 1h"),
        )
    })
}

fn parse_count(field: &str, value: &str) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::invalid(
            field,
            format!("`{value}` is not a positive whole number"),
        )),
    }
}

/// A secret value: its `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        SecretString(secret.into())
    }

    /// Returns the secret itself; keep it out of logs, errors and scripts.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads secrets from files in a directory (`/run/secrets/NAME`, the Kubernetes way) or,
/// failing that, from the environment variable `NAME` upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    dir: PathBuf,
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets::new("/run/secrets")
    }
}

impl Secrets {
    /// Reads secrets from `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Secrets { dir: dir.into() }
    }

    /// Returns the directory secrets are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the secret `name`: the file `dir/name` without its trailing newline, else the
    /// environment variable `NAME`, else `None`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] when the file exists but cannot be read; the secret itself is
    /// never part of the error.
    pub fn get(&self, name: &str) -> Result<Option<SecretString>> {
        if let Some(s) = self.file(name)? {
            return Ok(Some(s));
        }
        let var = name.to_ascii_uppercase().replace('-', "_");
        Ok(std::env::var(var).ok().map(SecretString::new))
    }

    /// Returns the secret `name` from its file `dir/name` only (without its trailing newline),
    /// or `None` when there is no such file.
    ///
    /// # Errors
    /// As [`Secrets::get`].
    pub fn file(&self, name: &str) -> Result<Option<SecretString>> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(SecretString::new(s.trim_end_matches(['\r', '\n'])))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::invalid(
                format!("secrets.{name}"),
                format!("cannot read {}: {}", path.display(), e.kind()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
providers:
  - name: sim
    kind: sim
    hosts:
      - name: h1
        zone: zone-a
        vcpus: 8
zones:
  - name: zone-a
    limits:
      disable: [gpu_passthrough]
catalog:
  images: [{name: ubuntu}]
  flavors: [{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10}]
engine:
  job_timeout: 5m
"#;

    #[test]
    fn parses_a_hosts_file() {
        let c = Config::from_yaml(GOOD, "hosts.yaml").unwrap();
        assert_eq!(c.providers[0].hosts[0].vcpus, Some(8));
        assert_eq!(c.engine.job_timeout, Duration::from_secs(300));
        assert!(!c.zones[0].limits.mask().unwrap().gpu_passthrough);
        assert_eq!(c.catalog().zones[0].name, "zone-a");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let bad = GOOD.replace("        vcpus: 8", "        vcpuz: 8");
        let e = Config::from_yaml(&bad, "hosts.yaml").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("vcpuz") && m.contains("line 8"), "{m}");
    }

    #[test]
    fn unknown_zone_names_key_and_line() {
        let bad = GOOD.replace("zone: zone-a", "zone: zone-x");
        let e = Config::from_yaml(&bad, "hosts.yaml").unwrap_err();
        assert_eq!(e.field(), Some("providers[0].hosts[0].zone"));
        assert!(e.to_string().contains("line 7"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_the_value_the_parser_read() {
        // The second provider's unknown capability: a text search for `disable` would name the
        // first zone's line.
        let two = GOOD.replace(
            "zones:",
            "  - name: p2\n    kind: sim\n    limits: {disable: [teleport]}\n    hosts: []\nzones:",
        );
        let e = Config::from_yaml(&two, "hosts.yaml").unwrap_err();
        assert_eq!(e.field(), Some("providers[1].limits.disable"));
        let line = two.lines().position(|l| l.contains("teleport")).unwrap() + 1;
        assert!(
            e.to_string().contains(&format!("(line {line})")),
            "{e}\n{two}"
        );
        // A duplicate name is found at its second use, not its first.
        let dup = GOOD.replace(
            "  flavors: [{name: small,",
            "  flavors: [{name: small, vcpus: 1, memory_mib: 1024, disk_gib: 10},\n            {name: small,",
        );
        let e = Config::from_yaml(&dup, "hosts.yaml").unwrap_err();
        assert_eq!(e.field(), Some("catalog.flavors[1].name"));
        let lines: Vec<&str> = dup.lines().collect();
        let second = lines
            .iter()
            .rposition(|l| l.contains("name: small"))
            .unwrap()
            + 1;
        assert!(
            e.to_string().contains(&format!("(line {second})")),
            "{e}\n{dup}"
        );
    }

    #[test]
    fn key_paths_locate_values_through_the_parser() {
        let text = "a:\n  b:\n    - x\n    - {c: 1, d: [p, q]}\nz: \"k\"\n";
        assert_eq!(yaml_location(text, "a.b[1].c"), Some((4, 11)));
        assert_eq!(yaml_location(text, "a.b[1].d[1]"), Some((4, 21)));
        assert_eq!(yaml_location(text, "a.b[0]"), Some((3, 7)));
        assert_eq!(yaml_location(text, "z"), Some((5, 4)));
        assert_eq!(yaml_location(text, "a.b[2]"), None);
        assert_eq!(yaml_location(text, "a.missing"), None);
        assert_eq!(yaml_location(text, "a.b[x]"), None);
        assert_eq!(
            path_segments("p[0].hosts[12].zone"),
            Some(vec![
                Segment::Key("p"),
                Segment::Index(0),
                Segment::Key("hosts"),
                Segment::Index(12),
                Segment::Key("zone"),
            ])
        );
    }

    #[test]
    fn syntax_error_names_line() {
        let e = Config::from_yaml("providers: [\n  - x: [", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("line"), "{e}");
        let e =
            Config::from_yaml(&GOOD.replace("[gpu_passthrough]", "[gpu]"), "f.yaml").unwrap_err();
        assert!(e.to_string().contains("unknown capability `gpu`"), "{e}");
    }

    #[test]
    fn env_overrides_and_bad_values_name_the_variable() {
        let mut c = Config::from_yaml(GOOD, "x").unwrap();
        c.apply_env(&|k| (k == "INVENTORY_REFRESH_INTERVAL").then(|| "15".to_string()))
            .unwrap();
        assert_eq!(c.engine.inventory_refresh_interval, Duration::from_secs(15));
        let e = c
            .apply_env(&|k| (k == "HCP_MAX_JOBS_PER_HOST").then(|| "zero".to_string()))
            .unwrap_err();
        assert_eq!(e.field(), Some("HCP_MAX_JOBS_PER_HOST"));
    }

    #[test]
    fn event_retention_comes_from_yaml_or_env_and_is_bounded() {
        let mut c = Config::from_yaml(GOOD, "x").unwrap();
        assert_eq!(
            c.engine.event_retention,
            Duration::from_secs(30 * 24 * 3600)
        );
        c.apply_env(&|k| (k == "HCP_EVENT_RETENTION").then(|| "7d".to_string()))
            .unwrap();
        assert_eq!(c.engine.event_retention, Duration::from_secs(7 * 24 * 3600));
        for bad in ["soon", "200years"] {
            let e = c
                .apply_env(&|k| (k == "HCP_EVENT_RETENTION").then(|| bad.to_string()))
                .unwrap_err();
            assert_eq!(e.field(), Some("HCP_EVENT_RETENTION"), "{bad}");
        }
        // GOOD ends inside its `engine:` block.
        let e =
            Config::from_yaml(&format!("{GOOD}  event_retention: 101years\n"), "x").unwrap_err();
        assert_eq!(e.field(), Some("engine.event_retention"), "{e}");
        let c = Config::from_yaml(&format!("{GOOD}  event_retention: 0s\n"), "x").unwrap();
        assert_eq!(c.engine.event_retention, Duration::ZERO);
    }

    #[test]
    fn leader_lease_defaults_to_15s_and_is_bounded() {
        let mut c = Config::from_yaml(GOOD, "x").unwrap();
        assert_eq!(c.engine.leader_lease, Duration::from_secs(15));
        c.apply_env(&|k| (k == "HCP_LEADER_LEASE").then(|| "5s".to_string()))
            .unwrap();
        assert_eq!(c.engine.leader_lease, Duration::from_secs(5));
        for bad in ["0", "2h", "x"] {
            let e = c
                .apply_env(&|k| (k == "HCP_LEADER_LEASE").then(|| bad.to_string()))
                .unwrap_err();
            assert_eq!(e.field(), Some("HCP_LEADER_LEASE"), "{bad}");
        }
        let e = Config::from_yaml(&format!("{GOOD}  leader_lease: 500ms\n"), "x").unwrap_err();
        assert_eq!(e.field(), Some("engine.leader_lease"), "{e}");
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("winrm_password"), "hunter2\n").unwrap();
        let s = Secrets::new(dir.path());
        let pw = s.get("winrm_password").unwrap().unwrap();
        assert_eq!(pw.expose(), "hunter2");
        assert!(!format!("{pw:?} {pw}").contains("hunter2"));
        assert!(s.get("hcp_test_absent_secret_name").unwrap().is_none());
    }

    #[test]
    fn the_job_lease_is_bounded_in_the_hosts_file_and_the_environment() {
        let base = "providers:\n  - name: s\n    kind: sim\n    hosts: [{name: h, zone: z}]\nzones: [{name: z}]\n";
        assert_eq!(
            Config::from_yaml(base, "t").unwrap().engine.job_lease,
            Duration::from_secs(30)
        );
        let c = Config::from_yaml(&format!("{base}engine: {{job_lease: 2s}}\n"), "t").unwrap();
        assert_eq!(c.engine.job_lease, Duration::from_secs(2));
        for bad in ["500ms", "2h"] {
            let e = Config::from_yaml(&format!("{base}engine: {{job_lease: {bad}}}\n"), "t")
                .unwrap_err();
            assert_eq!(e.field(), Some("engine.job_lease"), "{e}");
        }
        let mut c = Config::from_yaml(base, "t").unwrap();
        c.apply_env(&|k: &str| (k == "HCP_JOB_LEASE").then(|| "5s".to_string()))
            .unwrap();
        assert_eq!(c.engine.job_lease, Duration::from_secs(5));
        let e = c
            .apply_env(&|k: &str| (k == "HCP_JOB_LEASE").then(|| "0s".to_string()))
            .unwrap_err();
        assert_eq!(e.field(), Some("HCP_JOB_LEASE"), "{e}");
        assert_eq!(
            c.engine.job_lease,
            Duration::from_secs(5),
            "a refused value changes nothing"
        );
    }
}
