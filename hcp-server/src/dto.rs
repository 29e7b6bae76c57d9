//! Request and response DTOs, kept apart from the core types.
//!
//! Request DTOs never bind client input into internal objects: each is parsed with
//! `deny_unknown_fields`, and fields the server owns (`id`, `project`, `host`, `state`, ...) are
//! refused with a 400 naming the field (see [`crate::limits::StrictJson`]). Response DTOs are built
//! from core types and serialize exactly like them (same field names and values), so a client may
//! decode them straight into `hcp_core` types. The routes answer with serde (see `JsonBody`),
//! which writes the same JSON as poem-openapi's `ToJSON`; the `*Ref` views write a DTO's JSON
//! straight from the core type they borrow.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hcp_core::{
    Capabilities, Catalog, ConsoleKind, DesiredState, ErrorInfo, Flavor, Host, Image, InventoryVm,
    Job, JobAction, JobLogLine, JobState, LogLevel, Network, PendingReason, PowerState,
    ProviderCapabilities, ProviderStatus, RefreshReport, Resources, TenantVm, Vm, VmSpec, Zone,
};
use poem_openapi::{Enum, Object, Union};
use serde::{Deserialize, Serialize};

/// A request body the server parses strictly: unknown fields are refused, and so are the fields
/// listed in [`StrictDto::SERVER_OWNED`], each with a message naming it.
pub trait StrictDto {
    /// Fields the server sets itself; a request that carries one is refused with a 400.
    const SERVER_OWNED: &'static [&'static str];
}

/// Fields the server owns on every VM request.
const VM_SERVER_OWNED: &[&str] = &[
    "id",
    "vm_id",
    "project",
    "host",
    "provider",
    "native_id",
    "binding",
    "state",
    "desired",
    "power",
    "desired_power",
    "present",
    "resources",
    "last_error",
    "has_user_data",
    "created_at",
    "updated_at",
    "generation",
    "job_id",
];

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStateDto {
    /// Accepted and queued.
    Pending,
    /// A worker runs it.
    Running,
    /// It finished successfully.
    Succeeded,
    /// It failed.
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl From<JobState> for JobStateDto {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Pending => JobStateDto::Pending,
            JobState::Running => JobStateDto::Running,
            JobState::Succeeded => JobStateDto::Succeeded,
            JobState::Failed => JobStateDto::Failed,
            JobState::Cancelled => JobStateDto::Cancelled,
        }
    }
}

impl From<JobStateDto> for JobState {
    fn from(s: JobStateDto) -> Self {
        match s {
            JobStateDto::Pending => JobState::Pending,
            JobStateDto::Running => JobState::Running,
            JobStateDto::Succeeded => JobState::Succeeded,
            JobStateDto::Failed => JobState::Failed,
            JobStateDto::Cancelled => JobState::Cancelled,
        }
    }
}

/// The lifecycle state HCP wants a VM in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VmStateDto {
    /// Accepted; its create job has not finished.
    Pending,
    /// Created and expected to exist.
    Active,
    /// Its last job failed.
    Error,
    /// Deleted; kept until its delete job ends.
    Deleted,
}

impl From<DesiredState> for VmStateDto {
    fn from(s: DesiredState) -> Self {
        match s {
            DesiredState::Pending => VmStateDto::Pending,
            DesiredState::Active => VmStateDto::Active,
            DesiredState::Error => VmStateDto::Error,
            DesiredState::Deleted => VmStateDto::Deleted,
        }
    }
}

/// A VM's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PowerStateDto {
    /// Powered on.
    Running,
    /// Powered off.
    Stopped,
    /// Paused or suspended.
    Paused,
    /// Not known.
    Unknown,
}

impl From<PowerState> for PowerStateDto {
    fn from(s: PowerState) -> Self {
        match s {
            PowerState::Running => PowerStateDto::Running,
            PowerState::Stopped => PowerStateDto::Stopped,
            PowerState::Paused => PowerStateDto::Paused,
            PowerState::Unknown => PowerStateDto::Unknown,
        }
    }
}

/// A console protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKindDto {
    /// VNC.
    Vnc,
    /// SPICE.
    Spice,
    /// A browser URL.
    Web,
    /// RDP / VMConnect.
    Rdp,
    /// VMware WebMKS.
    Webmks,
}

impl From<ConsoleKind> for ConsoleKindDto {
    fn from(k: ConsoleKind) -> Self {
        match k {
            ConsoleKind::Vnc => ConsoleKindDto::Vnc,
            ConsoleKind::Spice => ConsoleKindDto::Spice,
            ConsoleKind::Web => ConsoleKindDto::Web,
            ConsoleKind::Rdp => ConsoleKindDto::Rdp,
            ConsoleKind::Webmks => ConsoleKindDto::Webmks,
        }
    }
}

impl From<ConsoleKindDto> for ConsoleKind {
    fn from(k: ConsoleKindDto) -> Self {
        match k {
            ConsoleKindDto::Vnc => ConsoleKind::Vnc,
            ConsoleKindDto::Spice => ConsoleKind::Spice,
            ConsoleKindDto::Web => ConsoleKind::Web,
            ConsoleKindDto::Rdp => ConsoleKind::Rdp,
            ConsoleKindDto::Webmks => ConsoleKind::Webmks,
        }
    }
}

/// The severity of a job log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum LogLevelDto {
    /// Normal progress.
    Info,
    /// Something worth a look.
    Warn,
    /// A failure.
    Error,
}

impl From<LogLevel> for LogLevelDto {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Info => LogLevelDto::Info,
            LogLevel::Warn => LogLevelDto::Warn,
            LogLevel::Error => LogLevelDto::Error,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// One network a new VM attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttachmentDto {
    /// The catalog network name.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub network: String,
}

/// Asks for a new VM (the body of `POST /projects/{projectId}/vms`).
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// The VM name, unique within its project: 1–63 characters of `[a-z0-9-]`, starting with a letter.
    #[oai(validator(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z]([a-z0-9-]*[a-z0-9])?$"
    ))]
    pub name: String,
    /// The catalog image to boot from.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub image: String,
    /// The catalog flavor; when absent, `vcpus`, `memory_mib` and `disk_gib` are all required.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 255))]
    pub flavor: Option<String>,
    /// Explicit vCPUs (overrides the flavor's), 1–4096; the zone's providers may allow fewer
    /// (their `max_vcpus` capability).
    #[serde(default)]
    #[oai(validator(minimum(value = "1"), maximum(value = "4096")))]
    pub vcpus: Option<u32>,
    /// Explicit memory in MiB (overrides the flavor's), 16 MiB–64 TiB; the zone's providers may
    /// allow less (`max_memory_mib`).
    #[serde(default)]
    #[oai(validator(minimum(value = "16"), maximum(value = "67108864")))]
    pub memory_mib: Option<u64>,
    /// Explicit disk size in GiB (overrides the flavor's), 1 GiB–1 PiB; the zone's providers may
    /// allow less (`max_disk_gib`).
    #[serde(default)]
    #[oai(validator(minimum(value = "1"), maximum(value = "1048576")))]
    pub disk_gib: Option<u64>,
    /// Networks to attach, in order (at most 16; the zone's providers may allow fewer).
    #[serde(default)]
    #[oai(default, validator(max_items = 16))]
    pub networks: Vec<NetworkAttachmentDto>,
    /// The placement zone; any zone that fits when absent.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 255))]
    pub zone: Option<String>,
    /// Free-form tags (at most 50).
    #[serde(default)]
    #[oai(default, validator(max_properties = 50))]
    pub tags: BTreeMap<String, String>,
    /// Cloud-init user-data, at most 64 KiB (needs the `cloud_init` capability).
    #[serde(default)]
    #[oai(validator(max_length = 65536))]
    pub user_data: Option<String>,
    /// The id of a server group of the project (`sg-…`) the VM joins: placement keeps the
    /// group's policy, and a hard policy that cannot be met is refused with `409
    /// SERVER_GROUP_POLICY` before any job exists.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9-]+$"))]
    pub server_group: Option<String>,
}

impl StrictDto for CreateVmRequest {
    const SERVER_OWNED: &'static [&'static str] = VM_SERVER_OWNED;
}

impl From<CreateVmRequest> for VmSpec {
    fn from(r: CreateVmRequest) -> Self {
        VmSpec {
            name: r.name,
            image: r.image,
            flavor: r.flavor,
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
            networks: r
                .networks
                .into_iter()
                .map(|n| hcp_core::NetworkAttachment { network: n.network })
                .collect(),
            zone: r.zone,
            tags: r.tags,
            user_data: r.user_data,
            server_group: r.server_group.map(hcp_core::ServerGroupId::new),
        }
    }
}

/// Changes a VM's tags: the body of `PATCH /projects/{projectId}/vms/{vmId}`, a JSON Merge
/// Patch (RFC 7396) restricted to `tags`.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct PatchVmRequest {
    /// Tags to set (`"team": "web"`) or remove (`"old": null`); tags not named stay as they are.
    #[serde(default)]
    #[oai(default)]
    pub tags: BTreeMap<String, Option<String>>,
}

impl StrictDto for PatchVmRequest {
    const SERVER_OWNED: &'static [&'static str] = VM_SERVER_OWNED;
}

/// Asks for a new VM through the Hyper-V service's route `POST /api/v1/vms/create`.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct LegacyCreateVmRequest {
    /// The VM name.
    #[oai(validator(min_length = 1, max_length = 63))]
    pub name: String,
    /// The template (catalog image) to clone.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub template: String,
    /// Pins the VM to this host; give a host or a zone (or neither, for any zone).
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 255))]
    pub host: Option<String>,
    /// The placement zone.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 255))]
    pub zone: Option<String>,
    /// A catalog flavor; when absent, `vcpus` and `memory_mb` are required.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 255))]
    pub flavor: Option<String>,
    /// vCPUs, 1–4096 (the host's provider may allow fewer).
    #[serde(default)]
    #[oai(validator(minimum(value = "1"), maximum(value = "4096")))]
    pub vcpus: Option<u32>,
    /// Memory in MiB, 16 MiB–64 TiB (the host's provider may allow less).
    #[serde(default)]
    #[oai(validator(minimum(value = "16"), maximum(value = "67108864")))]
    pub memory_mb: Option<u64>,
    /// Disk size in GiB, 1 GiB–1 PiB; the template's minimum when absent.
    #[serde(default)]
    #[oai(validator(minimum(value = "1"), maximum(value = "1048576")))]
    pub disk_gb: Option<u64>,
    /// The VLAN to attach to: the catalog network with this VLAN id.
    #[serde(default)]
    #[oai(validator(minimum(value = "1"), maximum(value = "4094")))]
    pub vlan: Option<u16>,
}

impl StrictDto for LegacyCreateVmRequest {
    // The Hyper-V routes let operators pin a host, so `host` is theirs to give here.
    const SERVER_OWNED: &'static [&'static str] = &[
        "id",
        "vm_id",
        "project",
        "provider",
        "native_id",
        "binding",
        "state",
        "power",
        "resources",
        "created_at",
        "updated_at",
        "generation",
        "job_id",
    ];
}

/// Asks to delete a VM through the Hyper-V service's route `POST /api/v1/vms/delete`.
#[derive(Debug, Clone, PartialEq, Eq, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(deny_unknown_fields)]
pub struct LegacyDeleteVmRequest {
    /// The VM name (in the default project); give `name` or `vm_id`.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 63))]
    pub name: Option<String>,
    /// HCP's VM id; give `name` or `vm_id`.
    #[serde(default)]
    #[oai(validator(min_length = 1, max_length = 255))]
    pub vm_id: Option<String>,
    /// Powers a running VM off first.
    #[serde(default)]
    #[oai(default)]
    pub force: bool,
}

impl StrictDto for LegacyDeleteVmRequest {
    const SERVER_OWNED: &'static [&'static str] =
        &["id", "project", "host", "provider", "state", "job_id"];
}

// ---------------------------------------------------------------------------------------------
// Responses: jobs and VMs
// ---------------------------------------------------------------------------------------------

/// The answer to an accepted change: a job does the work.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct AcceptedDto {
    /// The resource the job acts on (`projects/{project}/vms/{vmId}`).
    pub resource_id: String,
    /// The VM.
    pub vm_id: String,
    /// The job; follow it at `/api/hcp/tenant/v1/jobs/{job_id}`.
    pub job_id: String,
}

/// A console connection.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct ConsoleDto {
    /// The protocol.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: ConsoleKindDto,
    /// Where a client connects.
    pub url: String,
    /// When the URL stops working.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub expires_at: DateTime<Utc>,
}

impl From<hcp_core::Console> for ConsoleDto {
    fn from(c: hcp_core::Console) -> Self {
        ConsoleDto {
            kind: c.kind.into(),
            url: c.url,
            expires_at: c.expires_at,
        }
    }
}

/// An error kept on a failed job or VM.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct ErrorInfoDto {
    /// The error kind (`not_found`, `provider_unavailable`, ...).
    pub kind: String,
    /// The stable code (`NOT_FOUND`, ...).
    pub code: String,
    /// A one-line message.
    pub message: String,
    /// Operator-only detail (host names, native ids, the hypervisor's own words); only in
    /// operator views.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The offending field, if any.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorInfoDto {
    /// Builds the operator view: the message and its detail.
    pub fn operator(e: &ErrorInfo) -> Self {
        ErrorInfoDto {
            kind: e.kind.as_str().to_string(),
            code: e.code.clone(),
            message: e.message.clone(),
            detail: e.detail.clone(),
            field: e.field.clone(),
        }
    }

    /// Builds the tenant view: the tenant-safe message, without the detail.
    pub fn tenant(e: &ErrorInfo) -> Self {
        ErrorInfoDto::operator(&e.tenant())
    }
}

/// The resolved size of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Object, Serialize)]
pub struct ResourcesDto {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

impl From<Resources> for ResourcesDto {
    fn from(r: Resources) -> Self {
        ResourcesDto {
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_gib: r.disk_gib,
        }
    }
}

/// A VM's spec as given, without its user-data.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct VmSpecDto {
    /// The VM name.
    pub name: String,
    /// The image.
    pub image: String,
    /// The flavor.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// Explicit vCPUs.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Explicit memory in MiB.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Explicit disk in GiB.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<u64>,
    /// Networks.
    pub networks: Vec<NetworkAttachmentDto>,
    /// The requested zone.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The server group the VM was created into.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_group: Option<String>,
}

impl From<&VmSpec> for VmSpecDto {
    fn from(s: &VmSpec) -> Self {
        VmSpecDto {
            name: s.name.clone(),
            image: s.image.clone(),
            flavor: s.flavor.clone(),
            vcpus: s.vcpus,
            memory_mib: s.memory_mib,
            disk_gib: s.disk_gib,
            networks: s
                .networks
                .iter()
                .map(|n| NetworkAttachmentDto {
                    network: n.network.clone(),
                })
                .collect(),
            zone: s.zone.clone(),
            tags: s.tags.clone(),
            server_group: s.server_group.as_ref().map(ToString::to_string),
        }
    }
}

/// A VM as a tenant sees it: no hosts, native ids or datastores.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct TenantVmDto {
    /// HCP's VM id.
    pub id: String,
    /// The owning project.
    pub project: String,
    /// The VM name.
    pub name: String,
    /// The spec, without user-data.
    pub spec: VmSpecDto,
    /// Whether user-data was given.
    pub has_user_data: bool,
    /// The resolved size.
    pub resources: ResourcesDto,
    /// The zone.
    pub zone: String,
    /// The lifecycle state.
    pub state: VmStateDto,
    /// The observed power state.
    pub power: PowerStateDto,
    /// The wanted power state.
    pub desired_power: PowerStateDto,
    /// The error of the last failed job.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorInfoDto>,
    /// When HCP accepted it.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When HCP last changed it.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<TenantVm> for TenantVmDto {
    fn from(v: TenantVm) -> Self {
        TenantVmDto {
            id: v.id.to_string(),
            project: v.project.to_string(),
            name: v.name,
            spec: (&v.spec).into(),
            has_user_data: v.has_user_data,
            resources: v.resources.into(),
            zone: v.zone,
            state: v.state.into(),
            power: v.power.into(),
            desired_power: v.desired_power.into(),
            last_error: v.last_error.as_ref().map(ErrorInfoDto::tenant),
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

/// A VM's tenant view borrowed from the VM: serialises exactly as [`TenantVmDto`] built from
/// [`Vm::tenant_view`], without copying the VM twice first.
#[derive(Debug, Serialize)]
pub(crate) struct TenantVmRef<'a> {
    id: &'a str,
    project: &'a str,
    name: &'a str,
    spec: VmSpecRef<'a>,
    has_user_data: bool,
    resources: ResourcesDto,
    zone: &'a str,
    state: VmStateDto,
    power: PowerStateDto,
    desired_power: PowerStateDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<ErrorInfoRef<'a>>,
    #[serde(serialize_with = "crate::json::rfc3339")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::json::rfc3339")]
    updated_at: DateTime<Utc>,
}

impl<'a> TenantVmRef<'a> {
    /// Borrows the tenant view of `vm`: no host, native id, provider, user-data or error detail.
    pub(crate) fn new(vm: &'a Vm) -> Self {
        TenantVmRef {
            id: vm.id.as_str(),
            project: vm.project.as_str(),
            name: &vm.spec.name,
            spec: VmSpecRef::new(&vm.spec),
            has_user_data: vm.spec.user_data.is_some(),
            resources: vm.resources.into(),
            zone: &vm.zone,
            state: vm.desired.into(),
            power: vm.power.into(),
            desired_power: vm.desired_power.into(),
            last_error: vm.last_error.as_deref().map(ErrorInfoRef::tenant),
            created_at: vm.created_at,
            updated_at: vm.updated_at,
        }
    }
}

impl crate::json::SerializesAs<TenantVmDto> for TenantVmRef<'_> {}

/// A VM's spec borrowed from the VM: serialises as [`VmSpecDto`] (no user-data).
#[derive(Debug, Serialize)]
struct VmSpecRef<'a> {
    name: &'a str,
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    flavor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vcpus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_gib: Option<u64>,
    networks: &'a [hcp_core::NetworkAttachment],
    #[serde(skip_serializing_if = "Option::is_none")]
    zone: Option<&'a str>,
    tags: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_group: Option<&'a str>,
}

impl<'a> VmSpecRef<'a> {
    fn new(s: &'a VmSpec) -> Self {
        VmSpecRef {
            name: &s.name,
            image: &s.image,
            flavor: s.flavor.as_deref(),
            vcpus: s.vcpus,
            memory_mib: s.memory_mib,
            disk_gib: s.disk_gib,
            networks: &s.networks,
            zone: s.zone.as_deref(),
            tags: &s.tags,
            server_group: s.server_group.as_ref().map(hcp_core::ServerGroupId::as_str),
        }
    }
}

/// A VM's error borrowed from the VM: serialises as [`ErrorInfoDto::tenant`] (no detail).
#[derive(Debug, Serialize)]
struct ErrorInfoRef<'a> {
    kind: &'a str,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl<'a> ErrorInfoRef<'a> {
    /// The tenant view: without the operator-only detail.
    fn tenant(e: &'a ErrorInfo) -> Self {
        ErrorInfoRef {
            kind: e.kind.as_str(),
            code: &e.code,
            message: &e.message,
            field: e.field.as_deref(),
        }
    }
}

/// One page of tenant VMs borrowed from the store's page: serialises as [`VmPage`].
#[derive(Debug, Serialize)]
pub(crate) struct VmPageRef<'a> {
    #[serde(serialize_with = "tenant_vms")]
    items: &'a [Vm],
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<&'a str>,
}

impl<'a> VmPageRef<'a> {
    /// Borrows the tenant view of a page of VMs.
    pub(crate) fn new(page: &'a hcp_core::store::Page<Vm>) -> Self {
        VmPageRef {
            items: &page.items,
            next: page.next.as_deref(),
        }
    }
}

impl crate::json::SerializesAs<VmPage> for VmPageRef<'_> {}

/// Writes each VM's tenant view.
fn tenant_vms<S: serde::Serializer>(vms: &&[Vm], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(vms.iter().map(TenantVmRef::new))
}

/// Where a VM lives (operators only).
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct BindingDto {
    /// The provider name.
    pub provider: String,
    /// The host name.
    pub host: String,
    /// The hypervisor's own id, once created.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native_id: Option<String>,
}

/// A VM as operators see it: with its provider binding.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct OpsVmDto {
    /// HCP's VM id.
    pub id: String,
    /// The owning project.
    pub project: String,
    /// The spec, without user-data.
    pub spec: VmSpecDto,
    /// Whether user-data was given.
    pub has_user_data: bool,
    /// The resolved size.
    pub resources: ResourcesDto,
    /// The zone.
    pub zone: String,
    /// The lifecycle state HCP wants.
    pub desired: VmStateDto,
    /// The power state HCP wants.
    pub desired_power: PowerStateDto,
    /// The power state last observed.
    pub power: PowerStateDto,
    /// Whether the last inventory saw it on its host.
    pub present: bool,
    /// Where it lives.
    pub binding: BindingDto,
    /// The error of the last failed job.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ErrorInfoDto>,
    /// When HCP accepted it.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When HCP last changed it.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// The compare-and-swap generation.
    pub generation: u64,
}

impl From<Vm> for OpsVmDto {
    fn from(v: Vm) -> Self {
        OpsVmDto {
            id: v.id.to_string(),
            project: v.project.to_string(),
            spec: (&*v.spec).into(),
            has_user_data: v.spec.user_data.is_some(),
            resources: v.resources.into(),
            zone: v.zone.to_string(),
            desired: v.desired.into(),
            desired_power: v.desired_power.into(),
            power: v.power.into(),
            present: v.present,
            binding: BindingDto {
                provider: v.binding.provider.to_string(),
                host: v.binding.host.to_string(),
                native_id: v.binding.native_id,
            },
            last_error: v.last_error.as_deref().map(ErrorInfoDto::operator),
            created_at: v.created_at,
            updated_at: v.updated_at,
            generation: v.generation,
        }
    }
}

/// One page of tenant VMs.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct VmPage {
    /// The VMs, ordered by id (oldest first).
    pub items: Vec<TenantVmDto>,
    /// The cursor of the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One page of VMs with their provider binding.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct OpsVmPage {
    /// The VMs, ordered by id.
    pub items: Vec<OpsVmDto>,
    /// The cursor of the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Who submitted a job.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct PrincipalDto {
    /// The subject.
    pub subject: String,
}

/// Why a job is still pending.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct PendingReasonDto {
    /// `queued`, `waiting_for_vm`, `waiting_for_host_slot`, `waiting_for_worker` or `retry_backoff`.
    pub reason: String,
    /// The job that holds the VM (`waiting_for_vm`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocking_job: Option<String>,
    /// The busy host (`waiting_for_host_slot`; operators only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The limit reached.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The attempt that failed (`retry_backoff`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// When the next attempt may start (`retry_backoff`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::rfc3339_opt"
    )]
    pub retry_at: Option<DateTime<Utc>>,
    /// The temporary error (`retry_backoff`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The temporary error's operator-only detail (`retry_backoff`; operator views only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl PendingReasonDto {
    fn new(r: &PendingReason, tenant: bool) -> Self {
        let mut dto = PendingReasonDto {
            reason: String::new(),
            blocking_job: None,
            host: None,
            limit: None,
            attempt: None,
            retry_at: None,
            error: None,
            detail: None,
        };
        let tenant_view;
        let r = if tenant {
            tenant_view = r.clone().tenant_view();
            &tenant_view
        } else {
            r
        };
        match r {
            PendingReason::Queued => dto.reason = "queued".into(),
            PendingReason::WaitingForVm { blocking_job } => {
                dto.reason = "waiting_for_vm".into();
                dto.blocking_job = Some(blocking_job.to_string());
            }
            PendingReason::WaitingForHostSlot { host, limit } => {
                dto.reason = "waiting_for_host_slot".into();
                // Tenants learn that a host is busy, not which one; the core type needs a name.
                dto.host = Some(if tenant { String::new() } else { host.clone() });
                dto.limit = Some(*limit as u64);
            }
            PendingReason::WaitingForWorker { limit } => {
                dto.reason = "waiting_for_worker".into();
                dto.limit = Some(*limit as u64);
            }
            PendingReason::RetryBackoff {
                attempt,
                retry_at,
                error,
                detail,
            } => {
                dto.reason = "retry_backoff".into();
                dto.attempt = Some(*attempt);
                dto.retry_at = Some(*retry_at);
                dto.error = Some(error.clone());
                dto.detail = detail.clone();
            }
        }
        dto
    }
}

/// What a job does, beyond its operation.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct JobActionDto {
    /// `create`, `delete`, `start`, `stop`, `reboot`, `snapshot`, `revert_snapshot`,
    /// `delete_snapshot`, `migrate`, `resize`, `adopt` or `release`.
    pub action: String,
    /// Power off first / skip the graceful shutdown (`delete`, `stop`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// How long a graceful shutdown may take, in seconds (`stop`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful_timeout_secs: Option<u64>,
    /// Reset instead of a guest reboot (`reboot`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard: Option<bool>,
    /// The snapshot name (`snapshot`, `revert_snapshot`, `delete_snapshot`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// HCP's id of the snapshot (`revert_snapshot`, `delete_snapshot`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The target host (`migrate`; operators only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_host: Option<String>,
    /// A cold move: the job stops the VM, moves it and starts it again, so the VM is
    /// unavailable meanwhile (`migrate`; tenants see it too).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold: Option<bool>,
    /// The size before (`resize`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<ResourcesDto>,
    /// The size after (`resize`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<ResourcesDto>,
    /// The flavor the VM names after the change (`resize`, when it names one).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    /// The job restarts the running VM after the change (`resize`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reboot: Option<bool>,
    /// The job stops the running VM before the change and starts it after (`resize`).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_cycle: Option<bool>,
}

impl JobActionDto {
    fn new(a: &JobAction, tenant: bool) -> Self {
        let mut dto = JobActionDto {
            action: String::new(),
            force: None,
            graceful_timeout_secs: None,
            hard: None,
            name: None,
            snapshot_id: None,
            target_host: None,
            from: None,
            to: None,
            flavor: None,
            reboot: None,
            power_cycle: None,
            cold: None,
        };
        match a {
            JobAction::Create => dto.action = "create".into(),
            JobAction::Delete { force } => {
                dto.action = "delete".into();
                dto.force = Some(*force);
            }
            JobAction::Start => dto.action = "start".into(),
            JobAction::Stop {
                force,
                graceful_timeout_secs,
            } => {
                dto.action = "stop".into();
                dto.force = Some(*force);
                dto.graceful_timeout_secs = Some(*graceful_timeout_secs);
            }
            JobAction::Reboot { hard } => {
                dto.action = "reboot".into();
                dto.hard = Some(*hard);
            }
            JobAction::Snapshot { name } => {
                dto.action = "snapshot".into();
                dto.name = Some(name.clone());
            }
            JobAction::RevertSnapshot {
                snapshot_id, name, ..
            } => {
                dto.action = "revert_snapshot".into();
                dto.snapshot_id = Some(snapshot_id.clone());
                dto.name = Some(name.clone());
            }
            JobAction::DeleteSnapshot { snapshot_id, name } => {
                dto.action = "delete_snapshot".into();
                dto.snapshot_id = Some(snapshot_id.clone());
                dto.name = Some(name.clone());
            }
            JobAction::Resize {
                from,
                to,
                flavor,
                reboot,
                power_cycle,
            } => {
                dto.action = "resize".into();
                dto.from = Some((*from).into());
                dto.to = Some((*to).into());
                dto.flavor = flavor.clone();
                dto.reboot = Some(*reboot);
                dto.power_cycle = Some(*power_cycle);
            }
            JobAction::Adopt => dto.action = "adopt".into(),
            JobAction::Release => dto.action = "release".into(),
            JobAction::Migrate { target_host, cold } => {
                dto.action = "migrate".into();
                dto.cold = Some(*cold);
                // The target host is an operator detail: tenants do not even see the key.
                dto.target_host = (!tenant).then(|| target_host.clone());
            }
        }
        dto
    }
}

/// A job: one infrastructure change on one VM.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct JobDto {
    /// The job id.
    pub id: String,
    /// The project the VM belongs to.
    pub project: String,
    /// The VM it acts on.
    pub vm_id: String,
    /// The operation (`create_vm`, `delete_vm`, `start_vm`, `stop_vm`, `reboot_vm`, ...).
    pub operation: String,
    /// Details of the operation.
    pub action: JobActionDto,
    /// The state.
    pub state: JobStateDto,
    /// Why it is pending, while it is.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<PendingReasonDto>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Most attempts allowed.
    pub max_attempts: u32,
    /// Progress, 0–100.
    pub progress: u8,
    /// Who submitted it.
    pub principal: PrincipalDto,
    /// The idempotency key it was submitted with.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The host it runs on (operators only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The provider it runs on (operators only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The error, when it failed or was cancelled.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfoDto>,
    /// The per-job timeout in milliseconds.
    pub timeout_ms: u64,
    /// When it was accepted.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When its first attempt started.
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::rfc3339_opt"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::rfc3339_opt"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    /// The compare-and-swap generation.
    pub generation: u64,
}

impl JobDto {
    /// Builds the operator view: the job with its host and provider.
    pub fn operator(j: &Job) -> Self {
        let tenant = false;
        JobDto {
            id: j.id.to_string(),
            project: j.project.to_string(),
            vm_id: j.vm_id.to_string(),
            operation: j.operation.as_str().to_string(),
            action: JobActionDto::new(&j.action, tenant),
            state: j.state.into(),
            pending_reason: j
                .pending_reason
                .as_ref()
                .map(|r| PendingReasonDto::new(r, tenant)),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            progress: j.progress,
            principal: PrincipalDto {
                subject: j.principal.subject.to_string(),
            },
            idempotency_key: j.idempotency_key.clone(),
            host: (!tenant).then(|| j.host.to_string()),
            provider: (!tenant).then(|| j.provider.to_string()),
            error: j.error.as_ref().map(|e| {
                if tenant {
                    ErrorInfoDto::tenant(e)
                } else {
                    ErrorInfoDto::operator(e)
                }
            }),
            timeout_ms: j.timeout_ms,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            generation: j.generation,
        }
    }
}

/// A job as a tenant sees it (the fields of `hcp_core::TenantJob`, plus its action): no host,
/// no provider.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct TenantJobDto {
    /// The job id.
    pub id: String,
    /// The project the VM belongs to.
    pub project: String,
    /// The VM it acts on.
    pub vm_id: String,
    /// The operation (`create_vm`, `delete_vm`, `start_vm`, `stop_vm`, `reboot_vm`, ...).
    pub operation: String,
    /// Details of the operation.
    pub action: JobActionDto,
    /// The state.
    pub state: JobStateDto,
    /// Why it is pending, while it is.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<PendingReasonDto>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Most attempts allowed.
    pub max_attempts: u32,
    /// Progress, 0–100.
    pub progress: u8,
    /// Who submitted it (the subject).
    pub principal: String,
    /// The error, when it failed or was cancelled.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfoDto>,
    /// When it was accepted.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When its first attempt started.
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::rfc3339_opt"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[oai(skip_serializing_if_is_none)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::rfc3339_opt"
    )]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&Job> for TenantJobDto {
    fn from(j: &Job) -> Self {
        let t = j.tenant_view();
        TenantJobDto {
            id: t.id.to_string(),
            project: t.project.to_string(),
            vm_id: t.vm_id.to_string(),
            operation: t.operation.as_str().to_string(),
            action: JobActionDto::new(&j.action, true),
            state: t.state.into(),
            pending_reason: t
                .pending_reason
                .as_ref()
                .map(|r| PendingReasonDto::new(r, true)),
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            progress: t.progress,
            principal: t.principal,
            error: t.error.as_ref().map(ErrorInfoDto::tenant),
            created_at: t.created_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
        }
    }
}

/// One page of a project's jobs.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct TenantJobPage {
    /// The jobs, newest first.
    pub items: Vec<TenantJobDto>,
    /// The cursor of the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One page of jobs with their host and provider.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct JobPage {
    /// The jobs, newest first.
    pub items: Vec<JobDto>,
    /// The cursor of the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One line of a job's log as operators read it: with its audience and operator detail.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct OpsJobLogLineDto {
    /// Its position in the job's log, from 1.
    pub seq: u64,
    /// When it was written.
    #[serde(serialize_with = "crate::json::rfc3339")]
    pub at: DateTime<Utc>,
    /// Its severity.
    pub level: LogLevelDto,
    /// `everyone` (tenants read it too, without its detail) or `operators`.
    pub audience: String,
    /// The text.
    pub message: String,
    /// Operator-only detail (host names, native ids, paths).
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<JobLogLine> for OpsJobLogLineDto {
    fn from(l: JobLogLine) -> Self {
        OpsJobLogLineDto {
            seq: l.seq,
            at: l.at,
            level: l.level.into(),
            audience: match l.audience {
                hcp_core::LogAudience::Everyone => "everyone",
                hcp_core::LogAudience::Operators => "operators",
            }
            .to_string(),
            message: l.message,
            detail: l.detail,
        }
    }
}

/// One page of a job's log lines, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct OpsJobLogPage {
    /// The lines.
    pub items: Vec<OpsJobLogLineDto>,
    /// The `after` of the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct JobLogLineDto {
    /// Its position in the job's log, from 1.
    pub seq: u64,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// Its severity.
    pub level: LogLevelDto,
    /// The text.
    pub message: String,
}

impl From<JobLogLine> for JobLogLineDto {
    fn from(l: JobLogLine) -> Self {
        JobLogLineDto {
            seq: l.seq,
            at: l.at,
            level: l.level.into(),
            message: l.message,
        }
    }
}

/// A job's state or progress changed.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct JobStatusDto {
    /// The state.
    pub state: JobStateDto,
    /// Progress, 0–100.
    pub progress: u8,
    /// Why it is pending.
    #[oai(skip_serializing_if_is_none)]
    pub pending_reason: Option<PendingReasonDto>,
}

/// One server-sent event of `GET /jobs/{jobId}/logs`; the SSE event name equals `type`.
// One short-lived value per event: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Union)]
#[oai(discriminator_name = "type")]
pub enum JobEventDto {
    /// A log line (past lines first, then live ones).
    #[oai(mapping = "log")]
    Log(JobLogLineDto),
    /// The job's state or progress changed.
    #[oai(mapping = "status")]
    Status(JobStatusDto),
    /// The job ended: its final record. Nothing follows.
    #[oai(mapping = "end")]
    End(TenantJobDto),
}

impl JobEventDto {
    /// Builds the tenant view of one job update: `None` for a log line only operators may read;
    /// otherwise the update without operator details.
    pub fn tenant(u: hcp_core::JobUpdate) -> Option<Self> {
        Some(match u.tenant_view()? {
            hcp_core::JobUpdate::Log(l) => JobEventDto::Log(l.into()),
            hcp_core::JobUpdate::Status {
                state,
                progress,
                pending_reason,
            } => JobEventDto::Status(JobStatusDto {
                state: state.into(),
                progress,
                pending_reason: pending_reason
                    .as_ref()
                    .map(|r| PendingReasonDto::new(r, true)),
            }),
            hcp_core::JobUpdate::End(job) => JobEventDto::End(job.as_ref().into()),
        })
    }

    /// Returns the SSE event name (`log`, `status`, `end`).
    pub fn name(&self) -> &'static str {
        match self {
            JobEventDto::Log(_) => "log",
            JobEventDto::Status(_) => "status",
            JobEventDto::End(_) => "end",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses: catalog, capabilities, hosts, providers
// ---------------------------------------------------------------------------------------------

/// A bootable image.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct ImageDto {
    /// The image name tenants use.
    pub name: String,
    /// The operating system family (`linux`, `windows`).
    pub os: String,
    /// A short description.
    pub description: String,
    /// The smallest disk it boots from, in GiB.
    pub min_disk_gib: u64,
}

impl From<&Image> for ImageDto {
    fn from(i: &Image) -> Self {
        ImageDto {
            name: i.name.clone(),
            os: i.os.clone(),
            description: i.description.clone(),
            min_disk_gib: i.min_disk_gib,
        }
    }
}

/// A named VM size.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct FlavorDto {
    /// The flavor name tenants use.
    pub name: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

impl From<&Flavor> for FlavorDto {
    fn from(f: &Flavor) -> Self {
        FlavorDto {
            name: f.name.clone(),
            vcpus: f.vcpus,
            memory_mib: f.memory_mib,
            disk_gib: f.disk_gib,
        }
    }
}

/// A network VMs can attach to.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct NetworkDto {
    /// The network name tenants use.
    pub name: String,
    /// The VLAN id, if tagged.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The zones where it exists (every zone when empty).
    pub zones: Vec<String>,
    /// A short description.
    pub description: String,
}

impl From<&Network> for NetworkDto {
    fn from(n: &Network) -> Self {
        NetworkDto {
            name: n.name.clone(),
            vlan: n.vlan,
            zones: n.zones.clone(),
            description: n.description.clone(),
        }
    }
}

/// A placement zone.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct ZoneDto {
    /// The zone name.
    pub name: String,
    /// A short description.
    pub description: String,
}

impl From<&Zone> for ZoneDto {
    fn from(z: &Zone) -> Self {
        ZoneDto {
            name: z.name.clone(),
            description: z.description.clone(),
        }
    }
}

/// Everything tenants can choose from.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct CatalogDto {
    /// Images.
    pub images: Vec<ImageDto>,
    /// Flavors.
    pub flavors: Vec<FlavorDto>,
    /// Networks.
    pub networks: Vec<NetworkDto>,
    /// Zones.
    pub zones: Vec<ZoneDto>,
}

impl From<&Catalog> for CatalogDto {
    fn from(c: &Catalog) -> Self {
        CatalogDto {
            images: c.images.iter().map(Into::into).collect(),
            flavors: c.flavors.iter().map(Into::into).collect(),
            networks: c.networks.iter().map(Into::into).collect(),
            zones: c.zones.iter().map(Into::into).collect(),
        }
    }
}

/// What can be asked for: capability flags and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Object, Serialize)]
pub struct CapabilitiesDto {
    /// Passes cloud-init user-data to new VMs.
    pub cloud_init: bool,
    /// Takes VM snapshots.
    pub snapshot: bool,
    /// Moves running VMs between hosts.
    pub live_migration: bool,
    /// Moves stopped VMs between hosts (a cold move, `allow_cold` on `:migrate`).
    pub cold_migration: bool,
    /// Offers a VNC console.
    pub console_vnc: bool,
    /// Offers a SPICE console.
    pub console_spice: bool,
    /// Offers an RDP console.
    pub console_rdp: bool,
    /// Offers a VMware WebMKS console.
    pub console_webmks: bool,
    /// Offers a browser console URL.
    pub console_web: bool,
    /// Passes GPUs through to VMs.
    pub gpu_passthrough: bool,
    /// Stores tags on VMs.
    pub tags: bool,
    /// Changes an existing VM's vCPUs, memory and disk size in place (`:resize`).
    pub resize: bool,
    /// Writes and removes HCP's mark on a VM created outside HCP (operators' `vms:adopt` and
    /// `:release`).
    pub adopt: bool,
    /// Most vCPUs one VM may have, if limited.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
    /// Most memory (MiB) one VM may have, if limited.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    /// Largest disk (GiB) one VM may have, if limited.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_disk_gib: Option<u64>,
    /// Most networks one VM may attach to, if limited.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_networks: Option<u32>,
}

impl From<Capabilities> for CapabilitiesDto {
    fn from(c: Capabilities) -> Self {
        CapabilitiesDto {
            cloud_init: c.cloud_init,
            snapshot: c.snapshot,
            live_migration: c.live_migration,
            cold_migration: c.cold_migration,
            console_vnc: c.console_vnc,
            console_spice: c.console_spice,
            console_rdp: c.console_rdp,
            console_webmks: c.console_webmks,
            console_web: c.console_web,
            gpu_passthrough: c.gpu_passthrough,
            tags: c.tags,
            resize: c.resize,
            adopt: c.adopt,
            max_vcpus: c.max_vcpus,
            max_memory_mib: c.max_memory_mib,
            max_disk_gib: c.max_disk_gib,
            max_networks: c.max_networks,
        }
    }
}

/// What one zone offers.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct ZoneCapabilitiesDto {
    /// The zone.
    pub zone: String,
    /// What any of its hosts offers.
    pub capabilities: CapabilitiesDto,
}

/// A hypervisor host with its capacity and health (operators only).
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct HostDto {
    /// The placement target's name: a host's, or a cluster's whose hypervisor picks the host.
    pub name: String,
    /// `host` or `cluster`.
    pub kind: String,
    /// A cluster's member hosts with their own capacity (a VM must fit one of them); empty for
    /// a host.
    #[oai(skip_serializing_if_is_empty, default)]
    pub members: Vec<MemberHostDto>,
    /// The provider it belongs to.
    pub provider: String,
    /// Its zone.
    pub zone: String,
    /// Whether it answered the last inventory.
    pub available: bool,
    /// Why it is unavailable, if it is.
    #[oai(skip_serializing_if_is_none)]
    pub unavailable_reason: Option<String>,
    /// Total vCPUs.
    pub vcpus_total: u32,
    /// vCPUs in use or reserved.
    pub vcpus_used: u32,
    /// Total memory in MiB.
    pub memory_mib_total: u64,
    /// Memory in use or reserved, in MiB.
    pub memory_mib_used: u64,
    /// VMs on it.
    pub vm_count: u64,
    /// Its effective capabilities.
    pub capabilities: CapabilitiesDto,
    /// When it was last inventoried.
    #[oai(skip_serializing_if_is_none)]
    pub observed_at: Option<DateTime<Utc>>,
}

/// One member host of a cluster (operators only).
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct MemberHostDto {
    /// The host name.
    pub name: String,
    /// False when it cannot take VMs now.
    pub available: bool,
    /// Total vCPUs.
    pub vcpus_total: u32,
    /// vCPUs its VMs use, as last observed.
    pub vcpus_used: u32,
    /// Total memory in MiB.
    pub memory_mib_total: u64,
    /// Memory its VMs use, in MiB, as last observed.
    pub memory_mib_used: u64,
}

impl From<Host> for HostDto {
    fn from(h: Host) -> Self {
        HostDto {
            name: h.name,
            kind: h.kind.as_str().to_string(),
            members: h
                .members
                .into_iter()
                .map(|m| MemberHostDto {
                    name: m.name,
                    available: m.available,
                    vcpus_total: m.vcpus_total,
                    vcpus_used: m.vcpus_used,
                    memory_mib_total: m.memory_mib_total,
                    memory_mib_used: m.memory_mib_used,
                })
                .collect(),
            provider: h.provider,
            zone: h.zone,
            available: h.available,
            unavailable_reason: h.unavailable_reason,
            vcpus_total: h.vcpus_total,
            vcpus_used: h.vcpus_used,
            memory_mib_total: h.memory_mib_total,
            memory_mib_used: h.memory_mib_used,
            vm_count: h.vm_count as u64,
            capabilities: h.capabilities.into(),
            observed_at: h.observed_at,
        }
    }
}

/// A provider's name, kind and version.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ProviderInfoDto {
    /// The instance name.
    pub name: String,
    /// The kind (`sim`, `libvirt`, `hyperv`, ...).
    pub kind: String,
    /// A free-form version.
    pub version: String,
}

/// A provider with its health.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ProviderStatusDto {
    /// Name, kind and version.
    pub info: ProviderInfoDto,
    /// True when at least one of its hosts answered the last inventory.
    pub healthy: bool,
    /// Its hosts.
    pub hosts_total: u64,
    /// Its hosts that answered.
    pub hosts_available: u64,
}

impl From<ProviderStatus> for ProviderStatusDto {
    fn from(p: ProviderStatus) -> Self {
        ProviderStatusDto {
            info: ProviderInfoDto {
                name: p.info.name,
                kind: p.info.kind,
                version: p.info.version,
            },
            healthy: p.healthy,
            hosts_total: p.hosts_total as u64,
            hosts_available: p.hosts_available as u64,
        }
    }
}

/// Capabilities of a provider and of each of its hosts.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ProviderCapabilitiesDto {
    /// The provider name.
    pub provider: String,
    /// The provider kind.
    pub kind: String,
    /// What the provider declares.
    pub declared: CapabilitiesDto,
    /// What each host offers after narrowing by provider, zone and host limits.
    pub hosts: BTreeMap<String, CapabilitiesDto>,
}

impl From<ProviderCapabilities> for ProviderCapabilitiesDto {
    fn from(p: ProviderCapabilities) -> Self {
        ProviderCapabilitiesDto {
            provider: p.provider,
            kind: p.kind,
            declared: p.declared.into(),
            hosts: p.hosts.into_iter().map(|(h, c)| (h, c.into())).collect(),
        }
    }
}

/// A VM found on a host, HCP's or not (operators only).
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct InventoryVmDto {
    /// The provider.
    pub provider: String,
    /// The host it runs on.
    pub host: String,
    /// The cluster it belongs to, when its placement target is a cluster.
    #[oai(skip_serializing_if_is_none)]
    pub cluster: Option<String>,
    /// The hypervisor's id.
    pub native_id: String,
    /// The hypervisor's name.
    pub name: String,
    /// The power state.
    pub power: PowerStateDto,
    /// HCP's id, when HCP manages it.
    pub vm_id: Option<String>,
    /// The owning project, when HCP manages it.
    pub project: Option<String>,
    /// True for a VM without HCP's mark that `POST /api/hcp/ops/v1/vms:adopt` can take into a
    /// project: its host's provider can write the mark (capability `adopt`) and the reconciler
    /// offers unmanaged VMs for adoption (`engine.drift_repairs.unmanaged`).
    pub adoptable: bool,
}

impl From<InventoryVm> for InventoryVmDto {
    fn from(v: InventoryVm) -> Self {
        InventoryVmDto {
            provider: v.provider,
            host: v.host,
            cluster: v.cluster,
            native_id: v.native_id,
            name: v.name,
            power: v.power.into(),
            vm_id: v.vm_id.map(|i| i.to_string()),
            project: v.project.map(|p| p.to_string()),
            adoptable: v.adoptable,
        }
    }
}

/// A host that did not answer a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct FailedHostDto {
    /// The host (or provider) name.
    pub host: String,
    /// Why it failed.
    pub reason: String,
}

/// What one inventory refresh saw and did.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct RefreshReportDto {
    /// Hosts that answered.
    pub hosts_ok: u64,
    /// Hosts that did not answer, with the reason.
    pub hosts_failed: Vec<FailedHostDto>,
    /// VMs seen on all hosts.
    pub vms_seen: u64,
    /// VMs rebuilt from their marks.
    pub adopted: u64,
    /// Every drift found, as JSON objects tagged by `drift`.
    pub drift: Vec<serde_json::Value>,
    /// Jobs submitted to repair drift.
    pub repairs: u64,
    /// Drift repaired in the store per `engine.drift_repairs` (moves followed, missing VMs
    /// marked `ERROR`).
    pub repaired: u64,
    /// How long the refresh took, in milliseconds.
    pub elapsed_ms: u64,
}

impl From<RefreshReport> for RefreshReportDto {
    fn from(r: RefreshReport) -> Self {
        RefreshReportDto {
            hosts_ok: r.hosts_ok as u64,
            hosts_failed: r
                .hosts_failed
                .into_iter()
                .map(|(host, reason)| FailedHostDto { host, reason })
                .collect(),
            vms_seen: r.vms_seen as u64,
            adopted: r.adopted as u64,
            drift: r
                .drift
                .iter()
                .map(|d| serde_json::to_value(d).unwrap_or(serde_json::Value::Null))
                .collect(),
            repairs: r.repairs as u64,
            repaired: r.repaired as u64,
            elapsed_ms: r.elapsed_ms,
        }
    }
}

/// One audit event: its sequence number, time and kind, who acted, and the fields of its kind.
///
/// Its schema (`AuditEvent`) names the fields every event has; the fields of each kind
/// (`job_id`, `to`, `resources`, ...) come beside them.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEventDto(pub serde_json::Value);

impl From<&hcp_core::Event> for AuditEventDto {
    fn from(e: &hcp_core::Event) -> Self {
        AuditEventDto(serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
    }
}

impl poem_openapi::types::Type for AuditEventDto {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        "AuditEvent".into()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        poem_openapi::registry::MetaSchemaRef::Reference("AuditEvent".into())
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
        let string = |description: &'static str| {
            MetaSchemaRef::Inline(Box::new(MetaSchema {
                description: Some(description),
                ..MetaSchema::new("string")
            }))
        };
        registry.create_schema::<Self, _>("AuditEvent".into(), |_| MetaSchema {
            description: Some(
                "One audit event: `seq`, `at` and `event` always, `project`, `vm_id` and \
                 `principal` when they apply, and the fields of its kind beside them.",
            ),
            required: vec!["seq", "at", "event"],
            properties: vec![
                (
                    "seq",
                    MetaSchemaRef::Inline(Box::new(MetaSchema {
                        description: Some("Its position in the stream, from 1."),
                        minimum: Some(1.0),
                        ..MetaSchema::new_with_format("integer", "uint64")
                    })),
                ),
                (
                    "at",
                    MetaSchemaRef::Inline(Box::new(MetaSchema {
                        description: Some("When it happened."),
                        ..MetaSchema::new_with_format("string", "date-time")
                    })),
                ),
                (
                    "event",
                    MetaSchemaRef::Inline(Box::new(MetaSchema {
                        description: Some("What happened."),
                        enum_items: hcp_core::EventKind::NAMES
                            .iter()
                            .map(|k| serde_json::Value::from(*k))
                            .collect(),
                        ..MetaSchema::new("string")
                    })),
                ),
                ("project", string("The project it concerns.")),
                ("vm_id", string("The VM it concerns.")),
                ("principal", string("Who acted.")),
            ],
            additional_properties: Some(Box::new(MetaSchemaRef::Inline(Box::new(MetaSchema::ANY)))),
            ..MetaSchema::new("object")
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ToJSON for AuditEventDto {
    fn to_json(&self) -> Option<serde_json::Value> {
        Some(self.0.clone())
    }
}

impl poem_openapi::types::ParseFromJSON for AuditEventDto {
    fn parse_from_json(value: Option<serde_json::Value>) -> poem_openapi::types::ParseResult<Self> {
        match value {
            Some(v @ serde_json::Value::Object(_)) => Ok(AuditEventDto(v)),
            _ => Err(poem_openapi::types::ParseError::custom(
                "an audit event is a JSON object",
            )),
        }
    }
}

/// One event of the operators' audit stream: the engine's event itself, written to the stream
/// as its [`AuditEventDto`] would be (same schema, same JSON) without building a
/// `serde_json::Value` per event.
#[derive(Debug, Clone)]
pub(crate) struct AuditEventItem(pub(crate) std::sync::Arc<hcp_core::Event>);

impl poem_openapi::types::Type for AuditEventItem {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> std::borrow::Cow<'static, str> {
        AuditEventDto::name()
    }

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        AuditEventDto::schema_ref()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        AuditEventDto::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl poem_openapi::types::ToJSON for AuditEventItem {
    fn to_json(&self) -> Option<serde_json::Value> {
        AuditEventDto::from(self.0.as_ref()).to_json()
    }

    /// Writes the event straight to text, as `to_json` would render it.
    fn to_json_string(&self) -> String {
        serde_json::to_string(self.0.as_ref()).unwrap_or_else(|_| "null".to_string())
    }
}

/// One page of audit events.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct EventPage {
    /// The events in order.
    pub items: Vec<AuditEventDto>,
    /// The `after` value of the next page; absent when this page was not full.
    #[oai(skip_serializing_if_is_none)]
    pub next: Option<String>,
}

/// The JSON of an [`EventPage`] written straight from the store's events: each event serialises
/// as its [`AuditEventDto`] would, without building a `serde_json::Value` per event.
#[derive(Debug, Serialize)]
pub(crate) struct EventPageRef<'a> {
    #[serde(serialize_with = "audit_events")]
    items: &'a [std::sync::Arc<hcp_core::Event>],
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

impl<'a> EventPageRef<'a> {
    /// Views `items` as a page whose next page starts after `next`.
    pub(crate) fn new(items: &'a [std::sync::Arc<hcp_core::Event>], next: Option<String>) -> Self {
        EventPageRef { items, next }
    }
}

impl crate::json::SerializesAs<EventPage> for EventPageRef<'_> {}

fn audit_events<S: serde::Serializer>(
    events: &&[std::sync::Arc<hcp_core::Event>],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(events.iter().map(|e| e.as_ref()))
}

/// A plain status answer of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize)]
pub struct HealthDto {
    /// `ok`, or `unavailable` with a reason.
    pub status: String,
    /// Why the service is not ready.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hcp_core::{JobId, VmId};

    #[test]
    fn documented_size_bounds_are_the_cores() {
        // The validators above are literals (poem-openapi needs them so); they must say what
        // the engine enforces.
        let mut registry = poem_openapi::registry::Registry::new();
        <CreateVmRequest as poem_openapi::types::Type>::register(&mut registry);
        <LegacyCreateVmRequest as poem_openapi::types::Type>::register(&mut registry);
        let max_of = |schema: &str, field: &str| {
            let s = &registry.schemas[schema].properties;
            let (_, prop) = s.iter().find(|(name, _)| *name == field).unwrap();
            match prop {
                poem_openapi::registry::MetaSchemaRef::Inline(m) => m.maximum,
                poem_openapi::registry::MetaSchemaRef::Reference(_) => None,
            }
        };
        for (schema, vcpus, memory, disk) in [
            ("CreateVmRequest", "vcpus", "memory_mib", "disk_gib"),
            ("LegacyCreateVmRequest", "vcpus", "memory_mb", "disk_gb"),
        ] {
            assert_eq!(
                max_of(schema, vcpus),
                Some(f64::from(hcp_core::MAX_VCPUS)),
                "{schema}.{vcpus}"
            );
            for (field, max) in [
                (memory, hcp_core::MAX_MEMORY_MIB),
                (disk, hcp_core::MAX_DISK_GIB),
            ] {
                let max = u32::try_from(max).map(f64::from).unwrap();
                assert_eq!(max_of(schema, field), Some(max), "{schema}.{field}");
            }
        }
    }

    #[test]
    fn tenants_get_the_message_and_operators_the_detail() {
        let e = hcp_core::Error::new(hcp_core::ErrorKind::ProviderUnavailable, "host down")
            .with_detail("host `secret-host` does not answer")
            .with_context("provider", "sim")
            .with_context("host", "secret-host");
        let info = ErrorInfo::from(&e);
        let dto = ErrorInfoDto::tenant(&info);
        assert_eq!((dto.message.as_str(), dto.detail), ("host down", None));
        let dto = ErrorInfoDto::operator(&info);
        assert_eq!(dto.message, "host down");
        assert_eq!(
            dto.detail.as_deref(),
            Some("host `secret-host` does not answer")
        );
        let retry = PendingReason::RetryBackoff {
            attempt: 1,
            retry_at: chrono::Utc::now(),
            error: e.message().into(),
            detail: e.detail().map(str::to_string),
        };
        let t = PendingReasonDto::new(&retry, true);
        assert_eq!((t.error.as_deref(), t.detail), (Some("host down"), None));
        let o = PendingReasonDto::new(&retry, false);
        assert_eq!(o.detail.as_deref(), e.detail());
    }

    use crate::json::assert_same_json;

    /// A timestamp with nanoseconds, and one on a whole second (RFC 3339 prints no fraction).
    fn times() -> (DateTime<Utc>, DateTime<Utc>) {
        (
            "2026-12-02T19:27:18.123456789Z".parse().unwrap(),
            "2026-01-05T00:00:00Z".parse().unwrap(),
        )
    }

    fn error_info() -> ErrorInfo {
        ErrorInfo::from(
            &hcp_core::Error::new(hcp_core::ErrorKind::InvalidSpec, "bad \"name\" \u{e9}")
                .with_detail("host `secret-host`")
                .with_field("name"),
        )
    }

    /// A VM with every optional field set, and one with none.
    fn vms() -> Vec<Vm> {
        let (t1, t2) = times();
        let empty: Vm = serde_json::from_value(serde_json::json!({
            "id": "vm-0001",
            "project": "demo",
            "spec": {"name": "a", "image": "img"},
            "resources": {"vcpus": 1, "memory_mib": 512, "disk_gib": 1},
            "zone": "z",
            "desired": "PENDING",
            "desired_power": "STOPPED",
            "power": "UNKNOWN",
            "present": false,
            "binding": {"provider": "sim", "host": "h1"},
            "created_at": t2,
            "updated_at": t2,
            "generation": 0,
        }))
        .unwrap();
        let mut full = empty.clone();
        full.id = VmId::new("vm-0002");
        full.spec = std::sync::Arc::new(VmSpec {
            name: "web-1".into(),
            image: "ubuntu-24.04".into(),
            flavor: Some("small".into()),
            vcpus: Some(4),
            memory_mib: Some(8192),
            disk_gib: Some(u64::MAX),
            networks: vec![
                hcp_core::NetworkAttachment {
                    network: "lan".into(),
                },
                hcp_core::NetworkAttachment {
                    network: "dmz".into(),
                },
            ],
            zone: Some("zone-a".into()),
            tags: [("team", "web"), ("quote", "\"x\"\n")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            user_data: Some("#cloud-config\n".into()),
            server_group: None,
        });
        full.desired = DesiredState::Error;
        full.desired_power = PowerState::Running;
        full.power = PowerState::Paused;
        full.present = true;
        full.binding.native_id = Some("sim-7".into());
        full.last_error = Some(Box::new(error_info()));
        full.created_at = t1;
        full.updated_at = t1;
        full.generation = 42;
        vec![full, empty]
    }

    #[test]
    fn vm_responses_serialise_as_their_to_json() {
        let vms = vms();
        for vm in &vms {
            let dto = TenantVmDto::from(vm.tenant_view());
            assert_same_json(&format!("TenantVmDto {}", vm.id), &dto, &dto);
            assert_same_json(
                &format!("TenantVmRef {}", vm.id),
                &dto,
                &TenantVmRef::new(vm),
            );
            let ops = OpsVmDto::from(vm.clone());
            assert_same_json(&format!("OpsVmDto {}", vm.id), &ops, &ops);
        }
        for next in [Some("cursor-1".to_string()), None] {
            for items in [vms.clone(), Vec::new()] {
                let page = hcp_core::store::Page {
                    items,
                    next: next.clone(),
                };
                let dto = VmPage {
                    items: page.items.iter().map(|v| v.tenant_view().into()).collect(),
                    next: page.next.clone(),
                };
                assert_same_json("VmPage", &dto, &dto);
                assert_same_json("VmPageRef", &dto, &VmPageRef::new(&page));
                let ops = OpsVmPage {
                    items: page.items.iter().cloned().map(Into::into).collect(),
                    next: page.next.clone(),
                };
                assert_same_json("OpsVmPage", &ops, &ops);
            }
        }
        // The tenant view leaves out what tenants must not see.
        let body = serde_json::to_string(&TenantVmRef::new(&vms[0])).unwrap();
        for hidden in [
            "secret-host",
            "sim-7",
            "\"h1\"",
            "cloud-config",
            "\"user_data\"",
        ] {
            assert!(!body.contains(hidden), "{hidden} in {body}");
        }
    }

    /// Jobs of every action, pending reason and optional field.
    fn jobs() -> Vec<Job> {
        let (t1, t2) = times();
        let base: Job = serde_json::from_value(serde_json::json!({
            "id": "job-0001",
            "project": "demo",
            "vm_id": "vm-0001",
            "operation": "create_vm",
            "action": {"action": "create"},
            "state": "PENDING",
            "attempts": 0,
            "max_attempts": 3,
            "progress": 0,
            "principal": {"subject": "alice"},
            "host": "secret-host",
            "provider": "sim",
            "timeout_ms": 60000,
            "created_at": t2,
            "generation": 1,
        }))
        .unwrap();
        let size = |vcpus| Resources {
            vcpus,
            memory_mib: 1024,
            disk_gib: 10,
        };
        let actions = [
            JobAction::Create,
            JobAction::Delete { force: true },
            JobAction::Start,
            JobAction::Stop {
                force: false,
                graceful_timeout_secs: 30,
            },
            JobAction::Reboot { hard: true },
            JobAction::Snapshot {
                name: "before".into(),
            },
            JobAction::Migrate {
                target_host: "secret-target".into(),
                cold: true,
            },
            JobAction::RevertSnapshot {
                snapshot_id: "snap-1".into(),
                name: "before".into(),
                memory: true,
            },
            JobAction::DeleteSnapshot {
                snapshot_id: "snap-1".into(),
                name: "before".into(),
            },
            JobAction::Resize {
                from: size(1),
                to: size(2),
                flavor: Some("medium".into()),
                reboot: true,
                power_cycle: false,
            },
            JobAction::Resize {
                from: size(2),
                to: size(1),
                flavor: None,
                reboot: false,
                power_cycle: true,
            },
        ];
        let reasons = [
            None,
            Some(PendingReason::Queued),
            Some(PendingReason::WaitingForVm {
                blocking_job: JobId::new("job-0000"),
            }),
            Some(PendingReason::WaitingForHostSlot {
                host: "secret-host".into(),
                limit: 4,
            }),
            Some(PendingReason::WaitingForWorker { limit: 256 }),
            Some(PendingReason::RetryBackoff {
                attempt: 2,
                retry_at: t1,
                error: "host down".into(),
                detail: Some("secret-host refused".into()),
            }),
            Some(PendingReason::RetryBackoff {
                attempt: 1,
                retry_at: t2,
                error: "host down".into(),
                detail: None,
            }),
        ];
        let mut jobs = Vec::new();
        for (i, action) in actions.into_iter().enumerate() {
            let mut j = base.clone();
            j.operation = action.operation();
            j.action = action;
            j.pending_reason = reasons[i % reasons.len()].clone();
            if i % 2 == 1 {
                j.state = JobState::Failed;
                j.attempts = 3;
                j.progress = 100;
                j.idempotency_key = Some("key-1".into());
                j.error = Some(Box::new(error_info()));
                j.started_at = Some(t1);
                j.finished_at = Some(t2);
            }
            jobs.push(j);
        }
        for reason in reasons {
            let mut j = base.clone();
            j.pending_reason = reason;
            jobs.push(j);
        }
        jobs
    }

    #[test]
    fn job_responses_serialise_as_their_to_json() {
        let jobs = jobs();
        for j in &jobs {
            let what = format!("{:?} {:?}", j.action, j.pending_reason);
            let dto = JobDto::operator(j);
            assert_same_json(&format!("JobDto {what}"), &dto, &dto);
            let dto = TenantJobDto::from(j);
            assert_same_json(&format!("TenantJobDto {what}"), &dto, &dto);
        }
        for next in [Some("cursor-1".to_string()), None] {
            for items in [jobs.clone(), Vec::new()] {
                let page = TenantJobPage {
                    items: items.iter().map(Into::into).collect(),
                    next: next.clone(),
                };
                assert_same_json("TenantJobPage", &page, &page);
                let page = JobPage {
                    items: items.iter().map(JobDto::operator).collect(),
                    next: next.clone(),
                };
                assert_same_json("JobPage", &page, &page);
            }
        }
        let accepted = AcceptedDto {
            resource_id: "projects/demo/vms/vm-1".into(),
            vm_id: "vm-1".into(),
            job_id: "job-1".into(),
        };
        assert_same_json("AcceptedDto", &accepted, &accepted);
    }

    #[test]
    fn catalog_and_capability_responses_serialise_as_their_to_json() {
        let catalog = Catalog {
            images: vec![
                Image {
                    name: "ubuntu-24.04".into(),
                    os: "linux".into(),
                    description: "Ubuntu \"noble\" \u{e9}".into(),
                    min_disk_gib: 10,
                },
                Image {
                    name: "empty".into(),
                    os: String::new(),
                    description: String::new(),
                    min_disk_gib: u64::MAX,
                },
            ],
            flavors: vec![Flavor {
                name: "small".into(),
                vcpus: u32::MAX,
                memory_mib: 2048,
                disk_gib: 20,
            }],
            networks: vec![
                Network {
                    name: "lan".into(),
                    vlan: Some(42),
                    zones: vec!["zone-a".into(), "zone-b".into()],
                    description: "tagged".into(),
                },
                Network {
                    name: "any".into(),
                    vlan: None,
                    zones: Vec::new(),
                    description: String::new(),
                },
            ],
            zones: vec![Zone {
                name: "zone-a".into(),
                description: "the first".into(),
            }],
        };
        for c in [catalog.clone(), Catalog::default()] {
            let dto = CatalogDto::from(&c);
            assert_same_json("CatalogDto", &dto, &dto);
            let images: Vec<ImageDto> = c.images.iter().map(Into::into).collect();
            assert_same_json("images", &images, &images);
            let flavors: Vec<FlavorDto> = c.flavors.iter().map(Into::into).collect();
            assert_same_json("flavors", &flavors, &flavors);
            let networks: Vec<NetworkDto> = c.networks.iter().map(Into::into).collect();
            assert_same_json("networks", &networks, &networks);
            let zones: Vec<ZoneDto> = c.zones.iter().map(Into::into).collect();
            assert_same_json("zones", &zones, &zones);
        }
        let full = Capabilities {
            cloud_init: true,
            snapshot: true,
            console_webmks: true,
            max_vcpus: Some(64),
            max_memory_mib: Some(u64::MAX),
            max_disk_gib: Some(1),
            max_networks: Some(4),
            ..Default::default()
        };
        for c in [full, Capabilities::default()] {
            let dto = CapabilitiesDto::from(c);
            assert_same_json("CapabilitiesDto", &dto, &dto);
            let zone = vec![ZoneCapabilitiesDto {
                zone: "zone-a".into(),
                capabilities: dto,
            }];
            assert_same_json("ZoneCapabilitiesDto", &zone, &zone);
        }
    }

    #[test]
    fn console_health_log_and_event_responses_serialise_as_their_to_json() {
        let (t1, t2) = times();
        for (kind, at) in [
            (ConsoleKind::Vnc, t1),
            (ConsoleKind::Spice, t2),
            (ConsoleKind::Web, t1),
            (ConsoleKind::Rdp, t2),
            (ConsoleKind::Webmks, t1),
        ] {
            let dto = ConsoleDto {
                kind: kind.into(),
                url: "wss://hcp.example/api/hcp/tenant/v1/console/ws?token=a&b=\"c\"".into(),
                expires_at: at,
            };
            assert_same_json("ConsoleDto", &dto, &dto);
        }
        for reason in [None, Some("no provider answers yet".to_string())] {
            let dto = HealthDto {
                status: "unavailable".into(),
                reason,
            };
            assert_same_json("HealthDto", &dto, &dto);
        }
        let line = |seq, level, entry: hcp_core::LogEntry, at| {
            JobLogLine::from_entry(seq, at, hcp_core::LogEntry { level, ..entry })
        };
        let lines = [
            line(1, LogLevel::Info, hcp_core::LogEntry::info("accepted"), t1),
            line(
                2,
                LogLevel::Warn,
                hcp_core::LogEntry::warn("retrying").with_detail("host `h1` timed out"),
                t2,
            ),
            line(
                u64::MAX,
                LogLevel::Error,
                hcp_core::LogEntry::info("native id sim-7 \u{e9}").operators_only(),
                t1,
            ),
        ];
        for next in [None, Some("3".to_string())] {
            let page = OpsJobLogPage {
                items: lines.iter().cloned().map(Into::into).collect(),
                next,
            };
            assert_same_json("OpsJobLogPage", &page, &page);
        }
        let event = |seq, project: Option<&str>, kind| {
            std::sync::Arc::new(hcp_core::Event {
                seq,
                at: if seq % 2 == 0 { t1 } else { t2 },
                project: project.map(hcp_core::ProjectId::new),
                vm_id: project.map(|_| VmId::new("vm-1")),
                principal: project.map(|_| "alice".into()),
                kind,
            })
        };
        let events = [
            event(
                1,
                Some("demo"),
                hcp_core::EventKind::JobTransition {
                    job_id: JobId::new("job-1"),
                    operation: hcp_core::Operation::CreateVm,
                    from: None,
                    to: JobState::Pending,
                    attempt: 0,
                    error: None,
                },
            ),
            event(
                2,
                Some("demo"),
                hcp_core::EventKind::JobTransition {
                    job_id: JobId::new("job-1"),
                    operation: hcp_core::Operation::CreateVm,
                    from: Some(JobState::Running),
                    to: JobState::Failed,
                    attempt: 3,
                    error: Some(error_info()),
                },
            ),
            event(
                3,
                Some("demo"),
                hcp_core::EventKind::VmCreated {
                    resources: Resources {
                        vcpus: 2,
                        memory_mib: 4096,
                        disk_gib: u64::MAX,
                    },
                },
            ),
            event(
                4,
                None,
                hcp_core::EventKind::ReconcileRequested {
                    hosts_ok: 3,
                    hosts_failed: 1,
                    drift: 0,
                },
            ),
            event(
                5,
                Some("demo"),
                hcp_core::EventKind::ConsoleSession {
                    opened: false,
                    bytes: Some(12),
                },
            ),
            event(
                6,
                Some("demo"),
                hcp_core::EventKind::VmTagsUpdated {
                    tags: [("quote".to_string(), "\"x\"\n".to_string())].into(),
                },
            ),
        ];
        for next in [None, Some("6".to_string())] {
            for items in [&events[..], &[]] {
                let page = EventPage {
                    items: items.iter().map(|e| e.as_ref().into()).collect(),
                    next: next.clone(),
                };
                assert_same_json("EventPage", &page, &EventPageRef::new(items, next.clone()));
            }
        }
        // The audit stream writes each event without a Value tree: the same JSON.
        for e in &events {
            let streamed: serde_json::Value = serde_json::from_str(
                &poem_openapi::types::ToJSON::to_json_string(&AuditEventItem(e.clone())),
            )
            .expect("the stream writes JSON");
            assert_eq!(streamed, AuditEventDto::from(e.as_ref()).0, "{e:?}");
            assert_eq!(
                poem_openapi::types::ToJSON::to_json(&AuditEventItem(e.clone())),
                poem_openapi::types::ToJSON::to_json(&AuditEventDto::from(e.as_ref()))
            );
        }
    }

    #[tokio::test]
    async fn json_body_answers_as_poem_openapi_json_does() {
        use poem::IntoResponse;
        let dto = TenantVmDto::from(vms()[0].tenant_view());
        let old = poem_openapi::payload::Json(dto.clone()).into_response();
        let new = crate::json::JsonBody::<TenantVmDto>::new(&dto).into_response();
        assert_eq!(new.status(), old.status());
        assert_eq!(
            new.headers().get("content-type"),
            old.headers().get("content-type")
        );
        let old: serde_json::Value =
            serde_json::from_slice(&old.into_body().into_vec().await.unwrap()).unwrap();
        let new: serde_json::Value =
            serde_json::from_slice(&new.into_body().into_vec().await.unwrap()).unwrap();
        assert_eq!(new, old);
        assert_eq!(
            <crate::json::JsonBody<VmPage> as poem_openapi::ApiResponse>::meta(),
            <poem_openapi::payload::Json<VmPage> as poem_openapi::ApiResponse>::meta(),
        );
    }
}
