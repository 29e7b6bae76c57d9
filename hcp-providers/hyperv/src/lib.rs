//! # hcp-provider-hyperv
//!
//! Hyper-V over WinRM, running HCP's own versioned PowerShell scripts.
//!
//! - **Scripts are HCP's own, versioned, deployed by version.** The scripts in `scripts/` are
//!   embedded in the binary (or read from `SCRIPT_PATH`); their version is a hash of their
//!   content. Before a host's first call HCP reads the host's version marker and, only where it
//!   differs, uploads the scripts and the ISOs of `ISO_PATH` in checksummed chunks and publishes
//!   them with an atomic rename ([`deploy`]). Jobs then call the deployed scripts.
//! - **Parameters are data, never code.** Every call sends the same constant wrapper text as
//!   `-EncodedCommand` ([`scripts::WRAPPER`]); the parameters travel on stdin as one base64 JSON
//!   document that the wrapper splats into the script's typed, validated `param` block. No user
//!   input is ever formatted into PowerShell.
//! - **Errors are classified once** ([`error::parse_error`]): WinRM faults, HTTP 401, connection
//!   errors and the scripts' JSON error records.
//! - **Ownership survives restarts**: HCP's mark and the VM's tags are a JSON document in the
//!   VM's Notes (and KVP items `HcpVmId`, `HcpProject`); inventory parses them back.
//! - **Guest customization**: user-data goes into a cloud-init NoCloud seed ISO (volume label
//!   `cidata`) built on the host and attached to the VM, so the provider declares `cloud_init`.
//! - **Consoles** are VMConnect-style RDP descriptions: the owner host, port 2179 and the VM id.
//! - **Snapshots are checkpoints** of the type the VM is configured for (Hyper-V's default:
//!   Production, disks only); each listed checkpoint says whether it holds memory, read from the
//!   state it captured. HCP treats checkpoint names as unique per VM and refuses to guess
//!   between checkpoints Hyper-V let share a name (see the README's "Checkpoints").
//! - **Resize** (`Resize-HcpVm.ps1`): `Set-VMProcessor -Count` and `Set-VMMemory -StartupBytes`
//!   only while the VM is off (a running VM's change is refused with `Conflict` naming the field;
//!   the planner calls it `power_off`), `Resize-VHD` of the first VHDX live on the SCSI chain
//!   (generation 2) and only while off on the IDE chain; a disk never shrinks, nor grows under
//!   checkpoints. Every check comes before any change.
//! - **Guest setup completion**: Windows images signal it from their answer file's last
//!   first-logon command ([`unattend`]), Linux images from cloud-init's `runcmd` ([`linux`]);
//!   both write the KVP item `HcpSetupComplete`, and the create job waits for it.
//!
//! Transport: HTTPS (port 5986) with NTLM, Basic or (feature `kerberos`) Kerberos is the
//! default. NTLM over plain HTTP needs
//! WinRM message sealing, and winrm-rs 1.1 expects a CRLF before the closing MIME boundary of a
//! sealed reply that Windows (and HCP's test host, like pywinrm and pypsrp expect) does not send;
//! it is therefore refused unless `allow_http_ntlm` is set. Hosts whose certificates a private
//! CA signs are verified against `ca_file` by an in-process forwarder ([`forward`]), because
//! winrm-rs 1.1 trusts only the public roots.

pub mod client;
pub mod config;
pub mod deploy;
pub mod error;
pub mod forward;
pub mod hooks;
pub mod linux;
pub mod scripts;
pub mod unattend;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use hcp_core::{
    Capabilities, Console, ConsoleHandshake, ConsoleKind, ConsoleUpstream, CreateVm, CreatedVm,
    DeleteSnapshot, DeleteVm, DeletedSnapshot, DeletedVm, Error, ErrorKind, GetConsole, HcpMark,
    HostInfo, HostInventory, HostInventoryReply, ListSnapshots, LogEntry, NativeSnapshot, NativeVm,
    OpContext, Operation, PowerState, Provider, ProviderConfig, ProviderInfo, RebootVm, RebootedVm,
    ResizeVm, ResizedVm, Resources, Result, RevertSnapshot, RevertedSnapshot, Secrets, SnapshotVm,
    SnapshottedVm, StartVm, StartedVm, StopVm, StoppedVm, VmTarget,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use client::CallOptions;
pub use client::{HostClient, HostStats};
pub use config::{
    AuthKind, Credentials, DiskMode, HookSettings, HostEntry, HostSettings, HypervSettings,
    ImageSettings, LinuxSettings, Scheme,
};
pub use deploy::DeployReport;
use hooks::{HOOK_DIR, Hook, HookSet};
use scripts::{Bundle, Script, wrapper_for_path};

/// The provider kind name used in hosts files.
pub const KIND: &str = "hyperv";

/// The longest VM name the scripts accept.
pub const MAX_NAME_LEN: usize = 100;
/// The most network adapters HCP gives a Hyper-V VM (Hyper-V's limit of synthetic adapters).
pub const MAX_NETWORKS: u32 = 8;

/// Registers the Hyper-V provider kind on an engine builder.
pub fn register(builder: hcp_core::EngineBuilder) -> hcp_core::EngineBuilder {
    builder.provider_kind(KIND, |c: &ProviderConfig, s: &Secrets| {
        let p: Arc<dyn Provider> = Arc::new(HypervProvider::from_config(c, s)?);
        Ok(p)
    })
}

/// One image's Windows setup, ready at start-up: the template and the secrets it needs.
struct WindowsImage {
    settings: config::WindowsSettings,
    template: String,
    admin_password: hcp_core::SecretString,
    join: Option<(hcp_core::SecretString, hcp_core::SecretString)>,
}

fn load_windows(
    provider: &str,
    settings: &HypervSettings,
    secrets: Option<&Secrets>,
) -> Result<BTreeMap<String, WindowsImage>> {
    let mut out = BTreeMap::new();
    for (image, s) in &settings.images {
        let Some(w) = &s.windows else { continue };
        let field = format!("providers.{provider}.settings.images.{image}.windows");
        let template = std::fs::read_to_string(&w.unattend_template).map_err(|e| {
            Error::invalid(
                format!("{field}.unattend_template"),
                format!(
                    "cannot read {}: {}",
                    w.unattend_template.display(),
                    e.kind()
                ),
            )
        })?;
        unattend::check_template(&format!("{field}.unattend_template"), &template)?;
        let secret = |key: &str, name: &str| -> Result<hcp_core::SecretString> {
            let value = match secrets {
                Some(s) => s.get(name)?,
                None => None,
            };
            value.ok_or_else(|| {
                Error::invalid(
                    format!("{field}.{key}"),
                    format!("secret `{name}` is missing"),
                )
            })
        };
        let admin_password = secret("admin_password_secret", &w.admin_password_secret)?;
        let join = match &w.domain_join {
            Some(d) => Some((
                secret("domain_join.username_secret", &d.username_secret)?,
                secret("domain_join.password_secret", &d.password_secret)?,
            )),
            None => None,
        };
        out.insert(
            image.clone(),
            WindowsImage {
                settings: w.clone(),
                template,
                admin_password,
                join,
            },
        );
    }
    Ok(out)
}

struct Host {
    entry: HostEntry,
    client: HostClient,
    deployed: tokio::sync::Mutex<Option<String>>,
    observed: Mutex<Option<(u32, u64)>>,
}

/// A Hyper-V provider: a set of hosts (and failover cluster nodes) reached over WinRM.
pub struct HypervProvider {
    name: String,
    settings: HypervSettings,
    bundle: Bundle,
    hooks: HookSet,
    windows: BTreeMap<String, WindowsImage>,
    hosts: HashMap<String, Arc<Host>>,
    order: Vec<String>,
}

impl std::fmt::Debug for HypervProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HypervProvider")
            .field("name", &self.name)
            .field("version", &self.bundle.version)
            .field("hosts", &self.order)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InventoryDoc {
    host: InventoryHost,
    #[serde(default)]
    vms: Vec<VmDoc>,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    switches: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InventoryHost {
    logical_processor_count: u32,
    #[serde(rename = "MemoryCapacityMiB")]
    memory_capacity_mib: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VmDoc {
    id: String,
    name: String,
    state: String,
    processor_count: u32,
    #[serde(rename = "MemoryStartupMiB")]
    memory_startup_mib: u64,
    #[serde(default)]
    notes: Option<String>,
    #[serde(rename = "DiskGiB", default)]
    disk_gib: u64,
}

/// The Notes document: `{"hcp": {"vm_id": ..., "project": ..., "tags": {...}}}`.
#[derive(Debug, Serialize, Deserialize)]
struct NotesDoc {
    hcp: NotesMark,
}

#[derive(Debug, Serialize, Deserialize)]
struct NotesMark {
    #[serde(flatten)]
    mark: HcpMark,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, String>,
}

fn power_of(state: &str) -> PowerState {
    match state {
        "Running" => PowerState::Running,
        "Off" => PowerState::Stopped,
        "Paused" | "Saved" => PowerState::Paused,
        _ => PowerState::Unknown,
    }
}

/// The most checkpoints Hyper-V keeps for one VM; a longer list breaks the scripts' contract.
const MAX_CHECKPOINTS: usize = 50;

/// One item of `Get-HcpCheckpoint.ps1`'s `Checkpoints`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckpointDoc {
    name: String,
    creation_time: String,
    memory: bool,
}

/// Names the snapshot in the NotFound error of `Restore-HcpCheckpoint.ps1` when it is the
/// checkpoint, not the VM, that is missing; the operator detail and context stay.
fn name_missing_checkpoint(e: Error, name: &str) -> Error {
    if e.kind() != ErrorKind::NotFound
        || !e
            .context_value("error_id")
            .is_some_and(|id| id.starts_with("CheckpointNotFound"))
    {
        return e;
    }
    let mut named = Error::not_found("snapshot", name);
    if let Some(detail) = e.detail() {
        named = named.with_detail(detail);
    }
    for (key, value) in e.context() {
        named = named.with_context(key, value);
    }
    named
}

fn field<T: for<'de> Deserialize<'de>>(host: &str, v: &Value, key: &str) -> Result<T> {
    serde_json::from_value(v.get(key).cloned().unwrap_or(Value::Null)).map_err(|e| {
        error::parse_error(
            host,
            error::Remote::Contract(format!("result field `{key}`: {e}")),
        )
    })
}

/// Checks a VM name: 1-100 characters of letters, digits, '.', '_' and '-', starting with a
/// letter or digit (it becomes part of the VHDX file name on the host).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `name`.
pub fn validate_vm_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "Hyper-V VM names are 1-{MAX_NAME_LEN} characters of letters, digits, '.', '_' \
                 and '-', starting with a letter or digit (got {} characters)",
                name.chars().count()
            ),
        ))
    }
}

/// Checks a checkpoint name: 1-100 characters of letters, digits, '.', '_' and '-', starting
/// with a letter or digit — the names the checkpoint scripts' `ValidatePattern` accepts (HCP's
/// rule, narrower than Hyper-V's: no spaces, quotes or wildcard characters such as `*`, `?` and
/// `[`, which `Get-VMSnapshot -Name` would read as a pattern).
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `name`.
pub fn check_checkpoint_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "Hyper-V checkpoint names are 1-{MAX_NAME_LEN} characters of letters, digits, \
                 '.', '_' and '-', starting with a letter or digit"
            ),
        ))
    }
}

/// Hyper-V's per-VM limits (Windows Server 2016 and later): generation 2 VMs have up to 240
/// vCPUs and 12 TiB of memory, generation 1 VMs up to 64 vCPUs and 1 TiB; a VHDX holds up to
/// 64 TiB. HCP attaches one network adapter.
fn limits(generation: u8) -> Capabilities {
    let (vcpus, memory_mib) = if generation == 1 {
        (64, 1024 * 1024)
    } else {
        (240, 12 * 1024 * 1024)
    };
    Capabilities {
        max_vcpus: Some(vcpus),
        max_memory_mib: Some(memory_mib),
        max_disk_gib: Some(64 * 1024),
        max_networks: Some(MAX_NETWORKS),
        ..Capabilities::default()
    }
}

/// Checks a resize against Hyper-V's per-VM limits for `generation` before any call: vCPUs
/// 1-240 (generation 1: 1-64), memory 32 MiB-12 TiB (generation 1: 1 TiB) in multiples of
/// 2 MiB, a disk of 1 GiB-64 TiB.
///
/// # Errors
/// [`ErrorKind::InvalidSpec`] naming `vcpus`, `memory_mib` or `disk_gib`.
fn validate_resize(args: &ResizeVm, generation: u8) -> Result<()> {
    let max = limits(generation);
    if let Some(v) = args.vcpus {
        let top = max.max_vcpus.unwrap_or(u32::MAX);
        if v == 0 || v > top {
            return Err(Error::invalid(
                "vcpus",
                format!("Hyper-V generation {generation} VMs have 1-{top} vCPUs"),
            ));
        }
    }
    if let Some(m) = args.memory_mib {
        let top = max.max_memory_mib.unwrap_or(u64::MAX);
        if !(32..=top).contains(&m) || m % 2 != 0 {
            return Err(Error::invalid(
                "memory_mib",
                format!(
                    "Hyper-V generation {generation} VMs have 32-{top} MiB of memory, in \
                     multiples of 2 MiB"
                ),
            ));
        }
    }
    if let Some(d) = args.disk_gib {
        let top = max.max_disk_gib.unwrap_or(u64::MAX);
        if d == 0 || d > top {
            return Err(Error::invalid(
                "disk_gib",
                format!("a Hyper-V VHDX holds 1-{top} GiB"),
            ));
        }
    }
    Ok(())
}

/// Turns `Resize-HcpVm.ps1`'s refusals into errors naming the request field and saying what
/// the change needs; the operator detail and context stay. Other errors pass unchanged.
fn resize_error(e: Error) -> Error {
    let id = e
        .context_value("error_id")
        .map(|id| id.split(',').next().unwrap_or(id).to_string())
        .unwrap_or_default();
    let (kind, field, message) = match id.as_str() {
        "ProcessorCountNeedsOff" => (
            ErrorKind::Conflict,
            "vcpus",
            "Hyper-V changes a VM's vCPU count only while it is off; stop the VM first \
             (or allow `power_off`)",
        ),
        "MemoryNeedsOff" => (
            ErrorKind::Conflict,
            "memory_mib",
            "HCP changes a Hyper-V VM's memory only while it is off; stop the VM first \
             (or allow `power_off`)",
        ),
        "DiskOnIdeNeedsOff" => (
            ErrorKind::Conflict,
            "disk_gib",
            "the VM's disk is on the IDE chain (generation 1), which Hyper-V resizes only while \
             the VM is off; stop the VM first",
        ),
        "DiskHasCheckpoints" => (
            ErrorKind::Conflict,
            "disk_gib",
            "Hyper-V cannot resize the disk of a VM with checkpoints; delete its snapshots first",
        ),
        "DiskShrink" => (
            ErrorKind::InvalidSpec,
            "disk_gib",
            "is below the disk's current size; a disk only grows",
        ),
        "DiskNotFound" => (
            ErrorKind::InvalidSpec,
            "disk_gib",
            "the VM has no virtual hard disk to grow",
        ),
        "ProcessorCountOutOfRange" => (
            ErrorKind::InvalidSpec,
            "vcpus",
            "is beyond what this VM's generation allows",
        ),
        "MemoryNotAligned" | "MemoryOutOfRange" => (
            ErrorKind::InvalidSpec,
            "memory_mib",
            "must be 32 MiB or more, in multiples of 2 MiB, within this VM's generation's limit",
        ),
        _ => return e,
    };
    let mut out = Error::new(kind, message).with_field(field);
    if let Some(detail) = e.detail() {
        out = out.with_detail(detail);
    }
    for (key, value) in e.context() {
        out = out.with_context(key, value);
    }
    out
}

fn validate_create(args: &CreateVm, generation: u8) -> Result<()> {
    validate_vm_name(&args.name)?;
    let id_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !id_ok(args.vm_id.as_str()) {
        return Err(Error::invalid(
            "vm_id",
            "must be 1-128 letters, digits and '-'",
        ));
    }
    if !id_ok(args.project.as_str()) {
        return Err(Error::invalid(
            "project",
            "must be 1-128 letters, digits and '-'",
        ));
    }
    if args.image.is_empty()
        || args.image.len() > 128
        || !args
            .image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(Error::invalid(
            "image",
            "Hyper-V template names are 1-128 characters of letters, digits, '.', '_' and '-'",
        ));
    }
    hcp_core::validate_tags(&args.tags)?;
    if let Some(ud) = &args.user_data {
        hcp_core::validate_user_data(ud)?;
    }
    let max = limits(generation);
    let max_vcpus = max.max_vcpus.unwrap_or(u32::MAX);
    if args.resources.vcpus == 0 || args.resources.vcpus > max_vcpus {
        return Err(Error::invalid(
            "vcpus",
            format!("Hyper-V generation {generation} VMs have 1-{max_vcpus} vCPUs"),
        ));
    }
    let max_memory = max.max_memory_mib.unwrap_or(u64::MAX);
    if args.resources.memory_mib < 32 || args.resources.memory_mib > max_memory {
        return Err(Error::invalid(
            "memory_mib",
            format!("Hyper-V generation {generation} VMs have 32-{max_memory} MiB of memory"),
        ));
    }
    let max_disk = max.max_disk_gib.unwrap_or(u64::MAX);
    if args.resources.disk_gib > max_disk {
        return Err(Error::invalid(
            "disk_gib",
            format!("a Hyper-V VHDX holds at most {max_disk} GiB"),
        ));
    }
    Ok(())
}

impl HypervProvider {
    /// Builds the provider from its section of the hosts file and the WinRM secrets.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] for bad settings or missing credentials.
    pub fn from_config(config: &ProviderConfig, secrets: &Secrets) -> Result<Self> {
        let settings =
            HypervSettings::from_value(&config.name, &config.settings, &|k| std::env::var(k).ok())?;
        // Kerberos uses the process's Kerberos credentials; no password is read for it.
        let creds = if settings.auth == AuthKind::Kerberos {
            Credentials {
                username: String::new(),
                password: hcp_core::SecretString::new(""),
            }
        } else {
            Credentials::from_secrets(secrets)?
        };
        HypervProvider::new_with_secrets(
            &config.name,
            settings,
            config::hosts_of(config)?,
            creds,
            Some(secrets),
        )
    }

    /// Builds a provider named `name` over `hosts`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidSpec`] when `SCRIPT_PATH` or `ISO_PATH` cannot be read, or an
    /// `attach_isos` entry is not among the ISOs.
    pub fn new(
        name: &str,
        settings: HypervSettings,
        hosts: Vec<HostEntry>,
        creds: Credentials,
    ) -> Result<Self> {
        HypervProvider::new_with_secrets(name, settings, hosts, creds, None)
    }

    /// As [`HypervProvider::new`], reading the secrets that hooks map from `secrets`.
    ///
    /// # Errors
    /// As [`HypervProvider::new`], and [`hooks::HookSet::load`]'s errors: unreadable hook files,
    /// missing mapped secrets.
    pub fn new_with_secrets(
        name: &str,
        settings: HypervSettings,
        hosts: Vec<HostEntry>,
        creds: Credentials,
        secrets: Option<&Secrets>,
    ) -> Result<Self> {
        let (hooks, hook_files) = HookSet::load(name, &settings, secrets)?;
        let windows = load_windows(name, &settings, secrets)?;
        if !settings.tls_verify && settings.scheme == Scheme::Https {
            tracing::warn!(
                provider = name,
                "TLS certificate verification is off for this Hyper-V provider (tls_verify: \
                 false): anyone on the network path can impersonate its hosts"
            );
        }
        let bundle = Bundle::load_with(
            settings.script_path.as_deref(),
            settings.iso_path.as_deref(),
            hook_files,
        )?;
        for iso in &settings.attach_isos {
            if !bundle.files.contains_key(&format!("iso\\{iso}")) {
                return Err(Error::invalid(
                    format!("providers.{name}.settings.attach_isos"),
                    format!("`{iso}` is not in the ISO directory"),
                ));
            }
        }
        let ca_tls = match &settings.ca_file {
            Some(path) => Some(Arc::new(config::load_ca_file(
                &format!("providers.{name}.settings.ca_file"),
                path,
            )?)),
            None => None,
        };
        let mut map = HashMap::new();
        let mut order = Vec::new();
        for entry in hosts {
            order.push(entry.name.clone());
            let mut client = HostClient::new(&settings, &entry, &creds);
            if let Some(tls) = &ca_tls {
                let field = format!("providers.{name}.hosts.{}.settings.address", entry.name);
                client = client.through_forwarder(tls.clone(), &field)?;
            }
            map.insert(
                entry.name.clone(),
                Arc::new(Host {
                    entry,
                    client,
                    deployed: tokio::sync::Mutex::new(None),
                    observed: Mutex::new(None),
                }),
            );
        }
        Ok(HypervProvider {
            name: name.to_string(),
            settings,
            bundle,
            hooks,
            windows,
            hosts: map,
            order,
        })
    }

    /// Returns the version of the scripts this provider deploys.
    pub fn script_version(&self) -> &str {
        &self.bundle.version
    }

    /// Returns the call counters of `host`.
    pub fn host_stats(&self, host: &str) -> Option<Arc<HostStats>> {
        self.hosts.get(host).map(|h| h.client.stats())
    }

    fn host(&self, name: &str) -> Result<&Arc<Host>> {
        self.hosts.get(name).ok_or_else(|| {
            Error::new(ErrorKind::NotFound, "the VM's host is not configured")
                .with_detail(format!("host `{name}` is not a host of this provider"))
                .with_context("provider", &self.name)
        })
    }

    /// Deploys the scripts to `host` where its version marker differs (see [`deploy::ensure`]).
    ///
    /// # Errors
    /// The failed deploy step.
    pub async fn deploy_host(&self, host: &str) -> Result<DeployReport> {
        let h = self.host(host)?.clone();
        let mut deployed = h.deployed.lock().await;
        let report = deploy::ensure(
            &h.client,
            host,
            &self.settings.script_dir,
            &self.bundle,
            &OpContext::detached(),
        )
        .await?;
        *deployed = Some(report.version.clone());
        Ok(report)
    }

    /// Deploys the scripts to every host concurrently, as at start-up; one report per host.
    pub async fn deploy_all(&self) -> Vec<(String, Result<DeployReport>)> {
        let runs = self.order.iter().map(|h| async move {
            let r = self.deploy_host(h).await;
            (h.clone(), r)
        });
        futures::future::join_all(runs).await
    }

    async fn ensure_deployed(&self, h: &Host) -> Result<()> {
        let mut deployed = h.deployed.lock().await;
        if deployed.as_deref() == Some(self.bundle.version.as_str()) {
            return Ok(());
        }
        let report = deploy::ensure(
            &h.client,
            &h.entry.name,
            &self.settings.script_dir,
            &self.bundle,
            &OpContext::detached(),
        )
        .await?;
        *deployed = Some(report.version);
        Ok(())
    }

    async fn call(
        &self,
        host: &str,
        script: Script,
        params: Value,
        ctx: &OpContext,
    ) -> Result<Value> {
        let h = self.host(host)?;
        self.ensure_deployed(h).await?;
        let path = format!(
            "{}\\{}\\{}",
            self.settings.script_dir,
            self.bundle.version,
            script.file()
        );
        h.client
            .invoke(script.file(), &wrapper_for_path(&path), &params, ctx)
            .await
    }

    /// Runs `hook` at `point` on `host` with `fields` as its parameters; its stderr and
    /// `Write-HcpLog` lines stream into the job log (operators only).
    async fn run_hook(
        &self,
        host: &str,
        point: &str,
        hook: &Hook,
        fields: serde_json::Map<String, Value>,
        ctx: &OpContext,
    ) -> Result<Value> {
        let h = self.host(host)?;
        self.ensure_deployed(h).await?;
        let label = if point == "create" {
            format!("create script {}", hook.file)
        } else {
            format!("{point} hook {}", hook.file)
        };
        ctx.log(LogEntry::info(format!("running the {label}")).operators_only());
        let path = format!(
            "{}\\{}\\{HOOK_DIR}\\{}",
            self.settings.script_dir, self.bundle.version, hook.file
        );
        let opts = CallOptions {
            timeout: Some(hook.timeout),
            stream_stderr: true,
            redact: hook.secret_values(),
        };
        let doc = hook.document(point, fields);
        match h
            .client
            .invoke_with(&label, &wrapper_for_path(&path), &doc, ctx, &opts)
            .await?
        {
            Ok(v) => Ok(v),
            Err(record) => {
                let message = record.message.clone();
                let base = error::parse_error(host, error::Remote::Script(record));
                Err(hooks::hook_error(&label, &base, &message, &opts.redact))
            }
        }
    }

    /// Runs the hook at `point` (the image's, else the provider's) when one is configured.
    async fn maybe_hook(
        &self,
        host: &str,
        point: &str,
        image: Option<&str>,
        fields: impl FnOnce() -> serde_json::Map<String, Value>,
        ctx: &OpContext,
    ) -> Result<()> {
        if let Some(hook) = self.hooks.at(point, image) {
            self.run_hook(host, point, hook, fields(), ctx).await?;
        }
        Ok(())
    }

    fn target_fields(&self, t: &VmTarget) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("VmId".into(), json!(t.vm_id.as_str()));
        m.insert("Name".into(), json!(t.name));
        m.insert("NativeId".into(), json!(t.native_id));
        m.insert("Host".into(), json!(t.host));
        m
    }

    /// Runs the image's replacement create script and checks its result record against the VM
    /// it reports: a Hyper-V id, a power state, and HCP's mark in the VM's Notes.
    async fn create_with_script(
        &self,
        ctx: &OpContext,
        args: &CreateVm,
        hook: &Hook,
        params: serde_json::Map<String, Value>,
    ) -> Result<Value> {
        let mut fields = params;
        fields.insert("Project".into(), json!(args.project.as_str()));
        fields.insert("Tags".into(), json!(args.tags));
        fields.insert("Host".into(), json!(args.host));
        let v = self
            .run_hook(&args.host, "create", hook, fields, ctx)
            .await?;
        let broken = |why: String| {
            Error::new(
                ErrorKind::ProviderError,
                format!(
                    "the create script {} of image {} broke HCP's result contract: {why}",
                    hook.file, args.image
                ),
            )
            .with_detail(format!("host {}", args.host))
            .with_context("host", &args.host)
        };
        let id = v
            .get("Id")
            .and_then(Value::as_str)
            .filter(|id| is_guid(id))
            .ok_or_else(|| broken("`Id` must be the new VM's Hyper-V id (a GUID)".into()))?;
        let state = v.get("State").and_then(Value::as_str).unwrap_or("");
        if power_of(state) == PowerState::Unknown {
            return Err(broken(format!(
                "`State` must be Running, Off, Paused or Saved, not `{}`",
                state.chars().take(40).collect::<String>()
            )));
        }
        if v.get("MarkWritten").and_then(Value::as_bool) != Some(true) {
            return Err(broken(
                "`MarkWritten` must be true: the script must write the `Notes` parameter into \
                 the VM's Notes, so HCP finds the VM after a restart"
                    .into(),
            ));
        }
        // Trust, but verify: the VM must exist on the host and carry this VM's mark.
        let inventory = self
            .call(
                &args.host,
                Script::Inventory,
                json!({
                    "TemplateDir": self.settings.template_dir,
                    "Cluster": self.cluster_of(&args.host),
                }),
                ctx,
            )
            .await?;
        let doc: InventoryDoc = serde_json::from_value(inventory).map_err(|e| {
            error::parse_error(
                &args.host,
                error::Remote::Contract(format!("inventory document: {e}")),
            )
        })?;
        let vm = doc
            .vms
            .iter()
            .find(|vm| vm.id.eq_ignore_ascii_case(id))
            .ok_or_else(|| broken("the host has no VM with the reported `Id`".into()))?;
        let marked = vm
            .notes
            .as_deref()
            .and_then(|n| serde_json::from_str::<NotesDoc>(n).ok())
            .is_some_and(|n| n.hcp.mark.vm_id == args.vm_id);
        if !marked {
            return Err(broken(
                "the reported VM's Notes do not carry HCP's mark for this VM".into(),
            ));
        }
        Ok(v)
    }

    /// Waits for the guest's setup completion signal (the KVP item [`unattend::SETUP_KEY`], from
    /// a Windows guest's first logon or a Linux guest's cloud-init); the host detaches and deletes
    /// a Windows answer-file ISO when it comes, or when the wait times out. `hint` ends the
    /// timeout's message.
    async fn wait_for_guest_setup(
        &self,
        ctx: &OpContext,
        args: &CreateVm,
        native_id: &str,
        (timeout, poll): (std::time::Duration, std::time::Duration),
        hint: &str,
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let mut last_log: Option<std::time::Instant> = None;
        let params = |finish: bool| {
            json!({
                "VmId": args.vm_id.as_str(),
                "NativeId": native_id,
                "Key": unattend::SETUP_KEY,
                "Finish": finish,
                "Cluster": self.cluster_of(&args.host),
            })
        };
        loop {
            if last_log.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                ctx.log(LogEntry::info("waiting for guest setup"));
                last_log = Some(std::time::Instant::now());
            }
            let v = self
                .call(&args.host, Script::GuestSetup, params(false), ctx)
                .await?;
            if v.get("Done").and_then(Value::as_bool) == Some(true) {
                ctx.log(LogEntry::info("guest setup finished"));
                return Ok(());
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                self.call(&args.host, Script::GuestSetup, params(true), ctx)
                    .await?;
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "guest setup did not signal completion within {}s; {hint}",
                        timeout.as_secs()
                    ),
                )
                .with_detail(format!("host {}", args.host))
                .with_context("host", &args.host));
            }
            tokio::time::sleep(poll.min(timeout - elapsed)).await;
        }
    }

    fn cluster_of(&self, host: &str) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.entry.settings.cluster.is_some())
    }

    fn target_params(&self, t: &VmTarget) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("VmId".into(), json!(t.vm_id.as_str()));
        if let Some(id) = t.native_id.as_deref().filter(|id| is_guid(id)) {
            m.insert("NativeId".into(), json!(id));
        }
        m.insert("Cluster".into(), json!(self.cluster_of(&t.host)));
        m
    }

    /// The parameters of the checkpoint scripts: the VM and the checkpoint's name, checked
    /// first (the scripts' `ValidatePattern` accepts exactly these names).
    fn checkpoint_params(
        &self,
        t: &VmTarget,
        name: &str,
    ) -> Result<serde_json::Map<String, Value>> {
        check_checkpoint_name(name)?;
        let mut p = self.target_params(t);
        p.insert("CheckpointName".into(), json!(name));
        Ok(p)
    }

    fn host_info(&self, h: &Host) -> HostInfo {
        let observed = *h.observed.lock().unwrap_or_else(|p| p.into_inner());
        let (vcpus, mem) =
            observed.unwrap_or((h.entry.vcpus.unwrap_or(0), h.entry.memory_mib.unwrap_or(0)));
        HostInfo::new(
            &h.entry.name,
            &h.entry.zone,
            h.entry.vcpus.unwrap_or(vcpus),
            h.entry.memory_mib.unwrap_or(mem),
            self.capabilities(),
        )
    }
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[async_trait]
impl Provider for HypervProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: self.name.clone(),
            kind: KIND.into(),
            version: format!(
                "{} scripts {}",
                env!("CARGO_PKG_VERSION"),
                self.bundle.version
            ),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cloud_init: true,
            snapshot: true,
            console_rdp: true,
            tags: true,
            resize: true,
            ..limits(self.settings.generation)
        }
    }

    fn check_snapshot_name(&self, name: &str) -> Result<()> {
        check_checkpoint_name(name)
    }

    fn refine_resize_plan(&self, power: PowerState, plan: &mut [hcp_core::FieldPlan]) {
        // A generation 1 VM boots from the IDE chain, whose disks Hyper-V resizes only while
        // the VM is off (generation 2's SCSI disks grow live).
        if self.settings.generation != 1 || power == PowerState::Stopped {
            return;
        }
        for row in plan.iter_mut() {
            if row.field == "disk_gib" && row.impact == hcp_core::ChangeImpact::Hot {
                row.impact = hcp_core::ChangeImpact::PowerOff;
                row.reason = "Hyper-V grows a generation 1 VM's disk (on the IDE chain) only while the VM is off".to_string();
            }
        }
    }

    fn max_snapshots_per_vm(&self) -> Option<u32> {
        // 50 fits a u32; declared so the engine refuses a 51st checkpoint before any job.
        u32::try_from(MAX_CHECKPOINTS).ok()
    }

    async fn list_hosts(&self) -> Result<Vec<HostInfo>> {
        Ok(self
            .order
            .iter()
            .filter_map(|n| self.hosts.get(n))
            .map(|h| self.host_info(h))
            .collect())
    }

    async fn host_inventory(&self, args: HostInventory) -> Result<HostInventoryReply> {
        let params = json!({
            "TemplateDir": self.settings.template_dir,
            "Cluster": self.cluster_of(&args.host),
        });
        let v = self
            .call(
                &args.host,
                Script::Inventory,
                params,
                &OpContext::detached(),
            )
            .await?;
        let doc: InventoryDoc = serde_json::from_value(v).map_err(|e| {
            error::parse_error(
                &args.host,
                error::Remote::Contract(format!("inventory document: {e}")),
            )
        })?;
        let h = self.host(&args.host)?;
        *h.observed.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            doc.host.logical_processor_count,
            doc.host.memory_capacity_mib,
        ));
        let vms = doc
            .vms
            .into_iter()
            .map(|vm| {
                let notes: Option<NotesDoc> = vm
                    .notes
                    .as_deref()
                    .and_then(|n| serde_json::from_str(n).ok());
                let (mark, tags) = match notes {
                    Some(n) => (Some(n.hcp.mark), n.hcp.tags),
                    None => (None, BTreeMap::new()),
                };
                NativeVm::new(
                    vm.id,
                    vm.name,
                    power_of(&vm.state),
                    Resources {
                        vcpus: vm.processor_count,
                        memory_mib: vm.memory_startup_mib,
                        disk_gib: vm.disk_gib,
                    },
                    mark,
                )
                .with_tags(tags)
            })
            .collect();
        // What placement reads: the templates found, and the images an operator's create
        // script makes (whether or not they use a template). Networks are not reported: a
        // catalog network without a switch of its own attaches to the default switch.
        let mut offered = doc.images.clone();
        offered.extend(
            self.settings
                .images
                .iter()
                .filter(|(_, s)| s.create_script.is_some())
                .map(|(name, _)| name.clone()),
        );
        offered.sort();
        offered.dedup();
        let info = self
            .host_info(h)
            .with_images(offered.into_iter().map(hcp_core::ImageOffer::new).collect());
        Ok(HostInventoryReply::new(info, vms)
            .with_images(doc.images)
            .with_networks(doc.switches))
    }

    async fn create_vm(&self, ctx: &OpContext, args: CreateVm) -> Result<CreatedVm> {
        validate_create(&args, self.settings.generation)?;
        let notes = serde_json::to_string(&NotesDoc {
            hcp: NotesMark {
                mark: args.mark.clone(),
                tags: args.tags.clone(),
            },
        })
        .map_err(|e| Error::internal(format!("cannot encode the VM notes: {e}")))?;
        // One adapter per requested network; without any, one on the default switch (none when
        // no default switch is configured).
        let networks: Vec<Value> = if args.networks.is_empty() {
            std::iter::once(&self.settings.switch)
                .filter(|s| !s.is_empty())
                .map(|s| json!({ "SwitchName": s, "VlanId": 0 }))
                .collect()
        } else {
            args.networks
                .iter()
                .map(|n| {
                    json!({
                        "SwitchName": self.settings.switch_of(&n.network),
                        "VlanId": n.vlan.unwrap_or(0),
                    })
                })
                .collect()
        };
        let memory = args.resources.memory_mib;
        let mut p = serde_json::Map::new();
        p.insert("VmId".into(), json!(args.vm_id.as_str()));
        p.insert("Name".into(), json!(args.name));
        p.insert("Image".into(), json!(args.image));
        p.insert(
            "TemplatePath".into(),
            json!(format!(
                "{}\\{}.vhdx",
                self.settings.template_dir, args.image
            )),
        );
        p.insert("VhdDir".into(), json!(self.settings.vhd_dir));
        p.insert("DiskMode".into(), json!(self.settings.disk_mode.as_str()));
        p.insert("DiskGiB".into(), json!(args.resources.disk_gib.max(1)));
        p.insert("Generation".into(), json!(self.settings.generation));
        p.insert("Vcpus".into(), json!(args.resources.vcpus));
        p.insert("MemoryMiB".into(), json!(memory));
        p.insert("DynamicMemory".into(), json!(self.settings.dynamic_memory));
        if self.settings.dynamic_memory {
            // Checked: the memory comes from the request (bounded above, but never trusted here).
            let too_large = || {
                Error::invalid(
                    "memory_mib",
                    format!("{memory} MiB is too large for dynamic memory"),
                )
            };
            let min = memory
                .checked_mul(u64::from(self.settings.dynamic_memory_min_percent))
                .ok_or_else(too_large)?
                / 100;
            let min = min.max(32);
            let max = memory
                .checked_mul(u64::from(self.settings.dynamic_memory_max_factor.max(1)))
                .ok_or_else(too_large)?;
            p.insert("MemoryMinimumMiB".into(), json!(min));
            p.insert("MemoryMaximumMiB".into(), json!(max));
        }
        p.insert("Networks".into(), Value::Array(networks));
        p.insert("Notes".into(), json!(notes));
        p.insert(
            "Kvp".into(),
            json!({ "HcpVmId": args.vm_id.as_str(), "HcpProject": args.project.as_str() }),
        );
        let signal = self
            .settings
            .images
            .get(&args.image)
            .and_then(|i| i.linux.as_ref())
            .filter(|l| l.completion_signal);
        if signal.is_some() {
            let ud = linux::with_completion_signal(args.user_data.as_deref(), args.vm_id.as_str())?;
            p.insert("UserData".into(), json!(ud));
        } else if let Some(ud) = &args.user_data {
            p.insert("UserData".into(), json!(ud));
        }
        let windows = self.windows.get(&args.image);
        if let Some(w) = windows {
            if !args.start {
                return Err(Error::invalid(
                    "start",
                    "a Windows image with unattended setup starts on create: its answer file \
                     holds secrets and is removed once setup has finished",
                ));
            }
            let inputs = unattend::Inputs {
                vm_name: &args.name,
                vm_id: args.vm_id.as_str(),
                time_zone: &w.settings.time_zone,
                locale: &w.settings.locale,
                admin_password: &w.admin_password,
                domain_join: match (&w.settings.domain_join, &w.join) {
                    (Some(d), Some((user, pw))) => Some((&d.domain, d.ou.as_deref(), user, pw)),
                    _ => None,
                },
                first_logon_commands: &w.settings.first_logon_commands,
            };
            p.insert(
                "Unattend".into(),
                json!(unattend::render(&w.template, &inputs)?),
            );
        }
        if !self.settings.attach_isos.is_empty() {
            let isos: Vec<String> = self
                .settings
                .attach_isos
                .iter()
                .map(|i| {
                    format!(
                        "{}\\{}\\iso\\{i}",
                        self.settings.script_dir, self.bundle.version
                    )
                })
                .collect();
            p.insert("IsoPaths".into(), json!(isos));
        }
        p.insert("Start".into(), json!(args.start));
        p.insert("Cluster".into(), json!(self.cluster_of(&args.host)));
        ctx.progress(5);
        let hook_fields = |native: Option<&str>| {
            let mut m = serde_json::Map::new();
            for key in [
                "VmId",
                "Name",
                "Image",
                "Vcpus",
                "MemoryMiB",
                "DiskGiB",
                "Networks",
            ] {
                if let Some(v) = p.get(key) {
                    m.insert(key.into(), v.clone());
                }
            }
            m.insert("Project".into(), json!(args.project.as_str()));
            m.insert("Tags".into(), json!(args.tags));
            m.insert("Host".into(), json!(args.host));
            m.insert("NativeId".into(), json!(native));
            m
        };
        self.maybe_hook(
            &args.host,
            "pre_create",
            Some(&args.image),
            || hook_fields(None),
            ctx,
        )
        .await?;
        let v = match self.hooks.create_script(&args.image) {
            Some(hook) => self.create_with_script(ctx, &args, hook, p.clone()).await?,
            None => {
                self.call(&args.host, Script::NewVm, Value::Object(p.clone()), ctx)
                    .await?
            }
        };
        let id: String = field(&args.host, &v, "Id")?;
        let state: String = field(&args.host, &v, "State")?;
        if v.get("Existing").and_then(Value::as_bool) == Some(true) {
            ctx.log(
                LogEntry::info("the VM already exists with this vm id; reusing it")
                    .with_detail(format!("Hyper-V VM id {id}")),
            );
        }
        if let Some(w) = windows {
            let wait = (w.settings.setup_timeout, w.settings.setup_poll);
            self.wait_for_guest_setup(ctx, &args, &id, wait, "its answer file was removed")
                .await?;
        }
        if let Some(l) = signal {
            if args.start {
                let hint = "cloud-init writes it into the guest's KVP pool, which needs \
                            hv_kvp_daemon (the Hyper-V integration services) in the guest";
                self.wait_for_guest_setup(ctx, &args, &id, (l.setup_timeout, l.setup_poll), hint)
                    .await?;
            } else {
                ctx.log(LogEntry::info(
                    "the VM was created stopped: its guest setup signal is not awaited",
                ));
            }
        }
        self.maybe_hook(
            &args.host,
            "post_create",
            Some(&args.image),
            || hook_fields(Some(&id)),
            ctx,
        )
        .await?;
        ctx.progress(95);
        Ok(CreatedVm::new(id, power_of(&state)))
    }

    async fn delete_vm(&self, ctx: &OpContext, args: DeleteVm) -> Result<DeletedVm> {
        let t = &args.target;
        let fields = || {
            let mut m = self.target_fields(t);
            m.insert("Force".into(), json!(args.force));
            m
        };
        self.maybe_hook(&t.host, "pre_delete", None, fields, ctx)
            .await?;
        let mut p = self.target_params(t);
        p.insert("Force".into(), json!(args.force));
        let v = self
            .call(&t.host, Script::RemoveVm, Value::Object(p), ctx)
            .await?;
        let existed = field(&t.host, &v, "Existed")?;
        self.maybe_hook(&t.host, "post_delete", None, fields, ctx)
            .await?;
        Ok(DeletedVm::new(existed))
    }

    async fn start_vm(&self, ctx: &OpContext, args: StartVm) -> Result<StartedVm> {
        let t = &args.target;
        let fields = || self.target_fields(t);
        self.maybe_hook(&t.host, "pre_start", None, fields, ctx)
            .await?;
        let p = self.target_params(t);
        let v = self
            .call(&t.host, Script::StartVm, Value::Object(p), ctx)
            .await?;
        let was_running = field(&t.host, &v, "WasRunning")?;
        self.maybe_hook(&t.host, "post_start", None, fields, ctx)
            .await?;
        Ok(StartedVm::new(was_running))
    }

    async fn stop_vm(&self, ctx: &OpContext, args: StopVm) -> Result<StoppedVm> {
        let t = &args.target;
        let fields = || {
            let mut m = self.target_fields(t);
            m.insert("Force".into(), json!(args.force));
            m
        };
        self.maybe_hook(&t.host, "pre_stop", None, fields, ctx)
            .await?;
        let mut p = self.target_params(t);
        p.insert("Force".into(), json!(args.force));
        p.insert(
            "GracefulTimeoutSec".into(),
            json!(args.graceful_timeout.as_secs().min(3600)),
        );
        let v = self
            .call(&t.host, Script::StopVm, Value::Object(p), ctx)
            .await?;
        let stopped = StoppedVm::new(
            field(&t.host, &v, "WasStopped")?,
            field(&t.host, &v, "Forced")?,
        );
        self.maybe_hook(&t.host, "post_stop", None, fields, ctx)
            .await?;
        Ok(stopped)
    }

    async fn reboot_vm(&self, ctx: &OpContext, args: RebootVm) -> Result<RebootedVm> {
        let t = &args.target;
        let fields = || {
            let mut m = self.target_fields(t);
            m.insert("Hard".into(), json!(args.hard));
            m
        };
        self.maybe_hook(&t.host, "pre_reboot", None, fields, ctx)
            .await?;
        let mut p = self.target_params(t);
        p.insert("Hard".into(), json!(args.hard));
        self.call(&t.host, Script::RestartVm, Value::Object(p), ctx)
            .await?;
        self.maybe_hook(&t.host, "post_reboot", None, fields, ctx)
            .await?;
        Ok(RebootedVm::new())
    }

    async fn console(&self, args: GetConsole) -> Result<Console> {
        if let Some(kind) = args.kind
            && kind != ConsoleKind::Rdp
        {
            return Err(Error::unsupported(
                &self.name,
                Operation::Console,
                &format!("console_{}", kind.as_str()),
                "Hyper-V offers RDP (VMConnect) consoles",
            ));
        }
        let p = self.target_params(&args.target);
        let v = self
            .call(
                &args.target.host,
                Script::Console,
                Value::Object(p),
                &OpContext::detached(),
            )
            .await?;
        let host: String = field(&args.target.host, &v, "HostName")?;
        let port: u16 = field(&args.target.host, &v, "Port")?;
        let vm: String = field(&args.target.host, &v, "VmId")?;
        let ttl = chrono::Duration::from_std(self.settings.console_ttl)
            .unwrap_or(chrono::Duration::minutes(5));
        // The RDP URI form of a VMConnect connection: the host's port 2179, with the VM id as
        // the pre-connection blob.
        let url = format!("rdp://full%20address=s:{host}:{port}&pcb=s:{vm}&server%20port=i:{port}");
        // HCP relays the VMConnect port and sends the pre-connection PDU naming the VM itself,
        // so a plain RDP client (through `hcp vm console --listen`) reaches this VM.
        let upstream = ConsoleUpstream::tcp(format!("{host}:{port}"))
            .with_handshake(ConsoleHandshake::RdpPreconnection(vm));
        Ok(Console::new(ConsoleKind::Rdp, url, Utc::now() + ttl).with_upstream(upstream))
    }

    async fn snapshot_vm(&self, ctx: &OpContext, args: SnapshotVm) -> Result<SnapshottedVm> {
        let p = self.checkpoint_params(&args.target, &args.name)?;
        let v = self
            .call(&args.target.host, Script::Checkpoint, Value::Object(p), ctx)
            .await?;
        Ok(SnapshottedVm::new(field::<String>(
            &args.target.host,
            &v,
            "Id",
        )?))
    }

    async fn resize_vm(&self, ctx: &OpContext, args: ResizeVm) -> Result<ResizedVm> {
        validate_resize(&args, self.settings.generation)?;
        let t = &args.target;
        let mut p = self.target_params(t);
        // 0 keeps a value: every value sent is checked above to be at least 1.
        p.insert("Vcpus".into(), json!(args.vcpus.unwrap_or(0)));
        p.insert("MemoryMiB".into(), json!(args.memory_mib.unwrap_or(0)));
        p.insert("DiskGiB".into(), json!(args.disk_gib.unwrap_or(0)));
        let v = self
            .call(&t.host, Script::ResizeVm, Value::Object(p), ctx)
            .await
            .map_err(resize_error)?;
        let changed: Vec<String> = field(&t.host, &v, "Changed")?;
        let mut what = Vec::new();
        for c in &changed {
            match c.as_str() {
                "Vcpus" => what.push(format!("{} vCPUs", args.vcpus.unwrap_or(0))),
                "MemoryMiB" => what.push(format!("{} MiB of memory", args.memory_mib.unwrap_or(0))),
                "DiskGiB" => what.push(format!("a {} GiB disk", args.disk_gib.unwrap_or(0))),
                _ => {}
            }
        }
        if what.is_empty() {
            ctx.info("the VM already has the asked-for size");
        } else {
            ctx.info(format!("resized the VM: {}", what.join(", ")));
        }
        // Every change applies at once: what needs the VM off is refused while it runs.
        Ok(ResizedVm::new(false))
    }

    async fn list_snapshots(&self, args: ListSnapshots) -> Result<Vec<NativeSnapshot>> {
        let host = &args.target.host;
        let p = self.target_params(&args.target);
        let v = self
            .call(
                host,
                Script::ListCheckpoints,
                Value::Object(p),
                &OpContext::detached(),
            )
            .await?;
        let items: Vec<CheckpointDoc> = field(host, &v, "Checkpoints")?;
        if items.len() > MAX_CHECKPOINTS {
            return Err(error::parse_error(
                host,
                error::Remote::Contract(format!(
                    "{} checkpoints listed; Hyper-V keeps at most {MAX_CHECKPOINTS} per VM",
                    items.len()
                )),
            ));
        }
        items
            .into_iter()
            .map(|c| {
                let created = chrono::DateTime::parse_from_rfc3339(&c.creation_time)
                    .map_err(|e| {
                        error::parse_error(
                            host,
                            error::Remote::Contract(format!(
                                "checkpoint creation time {:?}: {e}",
                                c.creation_time
                            )),
                        )
                    })?
                    .with_timezone(&Utc);
                Ok(NativeSnapshot::new(c.name, Some(created), c.memory))
            })
            .collect()
    }

    async fn revert_snapshot(
        &self,
        ctx: &OpContext,
        args: RevertSnapshot,
    ) -> Result<RevertedSnapshot> {
        let host = &args.target.host;
        let p = self.checkpoint_params(&args.target, &args.name)?;
        let v = self
            .call(host, Script::RestoreCheckpoint, Value::Object(p), ctx)
            .await
            .map_err(|e| name_missing_checkpoint(e, &args.name))?;
        let state: String = field(host, &v, "State")?;
        Ok(RevertedSnapshot::new(
            field(host, &v, "MemoryKept")?,
            power_of(&state),
        ))
    }

    async fn delete_snapshot(
        &self,
        ctx: &OpContext,
        args: DeleteSnapshot,
    ) -> Result<DeletedSnapshot> {
        let host = &args.target.host;
        let p = self.checkpoint_params(&args.target, &args.name)?;
        let v = self
            .call(host, Script::RemoveCheckpoint, Value::Object(p), ctx)
            .await?;
        Ok(DeletedSnapshot::new(field(host, &v, "Existed")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::{HcpMark, ProjectId, VmId};

    fn args(vcpus: u32, memory_mib: u64, disk_gib: u64) -> CreateVm {
        let mark = HcpMark::new(VmId::new("vm-1"), ProjectId::new("demo"));
        CreateVm::new(
            mark,
            "hv1",
            "web-1",
            "ubuntu-24.04",
            Resources {
                vcpus,
                memory_mib,
                disk_gib,
            },
        )
    }

    #[test]
    fn checkpoint_names_follow_the_scripts_pattern() {
        let longest = "c".repeat(100);
        for ok in ["a", "nightly-1", "v1.2_rc", "9lives", longest.as_str()] {
            check_checkpoint_name(ok).unwrap();
        }
        let too_long = "c".repeat(101);
        for bad in [
            "",
            "-x",
            ".x",
            "_x",
            "a b",
            "a/b",
            "a*",
            "a?",
            "a[1]",
            "x'; Remove-VM *",
            "caf\u{e9}",
            too_long.as_str(),
        ] {
            let e = check_checkpoint_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{bad:?}");
            assert_eq!(e.field(), Some("name"), "{bad:?}");
            assert!(e.message().contains("1-100"), "{e}");
        }
    }

    #[test]
    fn resize_bounds_follow_the_generation() {
        let t = VmTarget {
            vm_id: VmId::new("vm-1"),
            name: "web-1".into(),
            host: "hv1".into(),
            native_id: None,
        };
        let r = |v: Option<u32>, m: Option<u64>, d: Option<u64>| {
            ResizeVm::new(t.clone())
                .with_vcpus(v)
                .with_memory_mib(m)
                .with_disk_gib(d)
        };
        validate_resize(&r(Some(240), Some(12 * 1024 * 1024), Some(64 * 1024)), 2).unwrap();
        validate_resize(&r(None, None, None), 2).unwrap();
        validate_resize(&r(Some(64), Some(32), Some(1)), 1).unwrap();
        for (a, generation, field) in [
            (r(Some(0), None, None), 2, "vcpus"),
            (r(Some(241), None, None), 2, "vcpus"),
            (r(Some(65), None, None), 1, "vcpus"),
            (r(None, Some(30), None), 2, "memory_mib"),
            (r(None, Some(1025), None), 2, "memory_mib"),
            (r(None, Some(1024 * 1024 + 2), None), 1, "memory_mib"),
            (r(None, Some(u64::MAX), None), 2, "memory_mib"),
            (r(None, None, Some(0)), 2, "disk_gib"),
            (r(None, None, Some(u64::MAX)), 2, "disk_gib"),
        ] {
            let e = validate_resize(&a, generation).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
        }
    }

    #[test]
    fn declared_limits_follow_the_generation_and_are_enforced() {
        let g2 = limits(2);
        assert_eq!(g2.max_vcpus, Some(240));
        assert_eq!(g2.max_memory_mib, Some(12 * 1024 * 1024));
        assert_eq!(g2.max_disk_gib, Some(64 * 1024));
        assert_eq!(g2.max_networks, Some(8));
        assert_eq!(limits(1).max_vcpus, Some(64));
        validate_create(&args(240, 12 * 1024 * 1024, 64 * 1024), 2).unwrap();
        for (a, generation, field) in [
            (args(241, 1024, 10), 2, "vcpus"),
            (args(65, 1024, 10), 1, "vcpus"),
            (args(1, 12 * 1024 * 1024 + 1, 10), 2, "memory_mib"),
            (args(1, u64::MAX, 10), 2, "memory_mib"),
            (args(1, 1024 * 1024 + 1, 10), 1, "memory_mib"),
            (args(1, 1024, 64 * 1024 + 1), 2, "disk_gib"),
            (args(1, 1024, u64::MAX), 2, "disk_gib"),
        ] {
            let e = validate_create(&a, generation).unwrap_err();
            assert_eq!(e.field(), Some(field), "{e}");
        }
    }
}
