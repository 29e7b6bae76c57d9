//! The typed result objects (`Vm`, `Job`, `Host`, ...): immutable Python classes with readable
//! `repr`s, equality and `to_dict()`, built from hcp-core's types.
//!
//! They show the tenant view: a `Vm` never carries its host or native id, a `Job` never its host
//! or provider.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hcp_core::job::TenantJob;
use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::job_failed;

/// Converts a field to the plain Python value `to_dict()` stores: records become dicts.
pub trait ToPlain {
    /// Returns the plain value.
    fn to_plain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>>;
}

macro_rules! plain_by_value {
    ($($t:ty),*) => {
        $(impl ToPlain for $t {
            fn to_plain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                self.clone().into_bound_py_any(py)
            }
        })*
    };
}

plain_by_value!(String, bool, u8, u16, u32, u64, usize, DateTime<Utc>);

impl<T: ToPlain> ToPlain for Option<T> {
    fn to_plain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Some(v) => v.to_plain(py),
            None => Ok(py.None().into_bound(py)),
        }
    }
}

impl<T: ToPlain> ToPlain for Vec<T> {
    fn to_plain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list = PyList::empty(py);
        for v in self {
            list.append(v.to_plain(py)?)?;
        }
        Ok(list.into_any())
    }
}

impl ToPlain for BTreeMap<String, String> {
    fn to_plain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let dict = PyDict::new(py);
        for (k, v) in self {
            dict.set_item(k, v)?;
        }
        Ok(dict.into_any())
    }
}

/// Formats `Name(field=repr, ...)` from the Python reprs of the given fields.
fn repr_of(py: Python<'_>, name: &str, fields: &[(&str, Bound<'_, PyAny>)]) -> PyResult<String> {
    let _ = py;
    let mut out = format!("{name}(");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(&v.repr()?.to_string());
    }
    out.push(')');
    Ok(out)
}

/// Declares one record class: the struct with its getters, `to_dict()`, `__repr__` over the
/// listed fields (or a custom function), equality, and any extra methods.
macro_rules! record {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
        repr = $repr:tt;
        $( methods { $($extra:tt)* } )?
    ) => {
        $(#[$meta])*
        #[pyclass(frozen, get_all, eq, module = "hcp")]
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl ToPlain for $name {
            fn to_plain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                Ok(self.to_dict(py)?.into_any())
            }
        }

        #[pymethods]
        impl $name {
            /// Returns the fields as a plain ``dict`` (nested objects become dicts too), ready
            /// for ``json.dumps`` or ``pandas.DataFrame([x.to_dict() for x in items])``.
            pub fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
                let dict = PyDict::new(py);
                $( dict.set_item(stringify!($field), self.$field.to_plain(py)?)?; )*
                Ok(dict)
            }

            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                record!(@repr self, py, $name, $repr)
            }

            $( $($extra)* )?
        }
    };
    (@repr $self:ident, $py:ident, $name:ident, [$($rfield:ident),*]) => {
        repr_of($py, stringify!($name), &[$( (stringify!($rfield), $self.$rfield.clone().into_bound_py_any($py)?) ),*])
    };
    (@repr $self:ident, $py:ident, $name:ident, $f:ident) => {
        $f($self, $py)
    };
}

record! {
    /// An error as HCP reports it on a failed job or VM.
    ErrorInfo {
        /// The error kind (``"not_found"``, ``"quota_exceeded"``, ...).
        kind: String,
        /// The stable code (``"NOT_FOUND"``, ``"IDEMPOTENCY_KEY_REUSED"``, ...).
        code: String,
        /// The message, in one line.
        message: String,
        /// The request field the error is about, if any.
        field: Option<String>,
    }
    repr = [code, message];
}

impl From<&hcp_core::ErrorInfo> for ErrorInfo {
    fn from(e: &hcp_core::ErrorInfo) -> Self {
        ErrorInfo {
            kind: e.kind.as_str().to_string(),
            code: e.code.clone(),
            message: e.message.clone(),
            field: e.field.clone(),
        }
    }
}

record! {
    /// A VM as its project sees it: never its host or the hypervisor's id for it.
    Vm {
        /// HCP's VM id (``vm-…``).
        id: String,
        /// The owning project.
        project: String,
        /// The VM name, unique within its project.
        name: String,
        /// The catalog image it was created from.
        image: String,
        /// The catalog flavor, if one was given.
        flavor: Option<String>,
        /// vCPUs.
        vcpus: u32,
        /// Memory in MiB.
        memory_mib: u64,
        /// Disk in GiB.
        disk_gib: u64,
        /// The placement zone.
        zone: String,
        /// The lifecycle state: ``PENDING``, ``ACTIVE``, ``ERROR`` or ``DELETED``.
        state: String,
        /// The observed power state: ``RUNNING``, ``STOPPED``, ``PAUSED`` or ``UNKNOWN``.
        power: String,
        /// The power state HCP wants.
        desired_power: String,
        /// Networks, in attachment order.
        networks: Vec<String>,
        /// Free-form tags.
        tags: BTreeMap<String, String>,
        /// Whether cloud-init user-data was given (its text is never shown).
        has_user_data: bool,
        /// The error of the last failed job, while the state is ``ERROR``.
        last_error: Option<ErrorInfo>,
        /// When HCP accepted it (UTC).
        created_at: DateTime<Utc>,
        /// When HCP last changed it (UTC).
        updated_at: DateTime<Utc>,
        /// The server group it was created into (``sg-…``), if any.
        server_group: Option<String>,
    }
    repr = [id, name, state, power, zone];
}

impl From<&hcp_core::TenantVm> for Vm {
    fn from(v: &hcp_core::TenantVm) -> Self {
        Vm {
            id: v.id.to_string(),
            project: v.project.to_string(),
            name: v.name.clone(),
            image: v.spec.image.clone(),
            flavor: v.spec.flavor.clone(),
            vcpus: v.resources.vcpus,
            memory_mib: v.resources.memory_mib,
            disk_gib: v.resources.disk_gib,
            zone: v.zone.clone(),
            state: v.state.to_string(),
            power: v.power.to_string(),
            desired_power: v.desired_power.to_string(),
            networks: v.spec.networks.iter().map(|n| n.network.clone()).collect(),
            tags: v.spec.tags.clone(),
            has_user_data: v.has_user_data,
            last_error: v.last_error.as_ref().map(ErrorInfo::from),
            created_at: v.created_at,
            updated_at: v.updated_at,
            server_group: v.spec.server_group.as_ref().map(ToString::to_string),
        }
    }
}

record! {
    /// A server group: a project's VMs that placement keeps apart (``anti-affinity``) or
    /// together (``affinity``), as a rule (``hard``) or a preference (``soft``).
    ServerGroup {
        /// HCP's id (``sg-…``); pass it as ``server_group`` to ``create_vm``.
        id: String,
        /// The owning project.
        project: String,
        /// The name, unique in the project.
        name: String,
        /// ``"anti-affinity"`` or ``"affinity"``.
        policy: String,
        /// ``"hard"`` or ``"soft"``.
        strength: String,
        /// The member VMs' ids, ordered by id (never their hosts).
        members: Vec<String>,
        /// When HCP created it (UTC).
        created_at: DateTime<Utc>,
    }
    repr = [id, name, policy, strength];
}

impl From<&hcp_core::ServerGroup> for ServerGroup {
    fn from(g: &hcp_core::ServerGroup) -> Self {
        ServerGroup {
            id: g.id.to_string(),
            project: g.project.to_string(),
            name: g.name.clone(),
            policy: g.policy.as_str().to_string(),
            strength: g.strength.as_str().to_string(),
            members: g.members.iter().map(ToString::to_string).collect(),
            created_at: g.created_at,
        }
    }
}

record! {
    /// An infrastructure change on one VM, run in the background (the tenant view: never its
    /// host or provider).
    Job {
        /// The job id (``job-…``).
        id: String,
        /// The project of its VM.
        project: String,
        /// The VM it acts on.
        vm_id: String,
        /// The operation: ``create_vm``, ``delete_vm``, ``start_vm``, ``stop_vm``, ``reboot_vm``, ...
        operation: String,
        /// ``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``.
        state: String,
        /// Progress, 0–100.
        progress: u8,
        /// Why it is still pending, while it is.
        pending_reason: Option<String>,
        /// Attempts started so far.
        attempts: u32,
        /// Most attempts allowed.
        max_attempts: u32,
        /// Who submitted it.
        principal: String,
        /// The error, when it failed or was cancelled.
        error: Option<ErrorInfo>,
        /// When it was accepted (UTC).
        created_at: DateTime<Utc>,
        /// When its first attempt started (UTC).
        started_at: Option<DateTime<Utc>>,
        /// When it ended (UTC).
        finished_at: Option<DateTime<Utc>>,
    }
    repr = [id, operation, state, progress, vm_id];
    methods {
        /// ``True`` once the job has ended (succeeded, failed or cancelled).
        #[getter]
        fn done(&self) -> bool {
            self.is_done()
        }

        /// ``True`` when the job ended successfully.
        #[getter]
        fn succeeded(&self) -> bool {
            self.state == hcp_core::JobState::Succeeded.as_str()
        }

        /// Raises :class:`hcp.JobFailed` when the job failed or was cancelled.
        ///
        /// Returns
        /// -------
        /// Job
        ///     This job, so calls chain: ``engine.wait_job(j).raise_for_state()``.
        ///
        /// Raises
        /// ------
        /// JobFailed
        ///     The job ended ``FAILED`` or ``CANCELLED``; carries the job id and the job's error code.
        fn raise_for_state(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
            let job = slf.get();
            if job.is_done() && !job.succeeded() {
                return Err(job_failed(slf.py(), job.clone()));
            }
            Ok(slf)
        }
    }
}

impl Job {
    /// Returns true once the job has ended.
    pub fn is_done(&self) -> bool {
        [
            hcp_core::JobState::Succeeded,
            hcp_core::JobState::Failed,
            hcp_core::JobState::Cancelled,
        ]
        .iter()
        .any(|s| s.as_str() == self.state)
    }
}

impl From<&TenantJob> for Job {
    fn from(j: &TenantJob) -> Self {
        Job {
            id: j.id.to_string(),
            project: j.project.to_string(),
            vm_id: j.vm_id.to_string(),
            operation: j.operation.as_str().to_string(),
            state: j.state.as_str().to_string(),
            progress: j.progress,
            pending_reason: j.pending_reason.as_ref().map(ToString::to_string),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            principal: j.principal.clone(),
            error: j.error.as_ref().map(ErrorInfo::from),
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
        }
    }
}

impl From<&hcp_core::Job> for Job {
    fn from(j: &hcp_core::Job) -> Self {
        Job::from(&j.tenant_view())
    }
}

record! {
    /// One line of a job's log.
    JobLogLine {
        /// The job it belongs to.
        job_id: String,
        /// Its position in the job's log, from 1.
        seq: u64,
        /// When it was written (UTC).
        at: DateTime<Utc>,
        /// ``info``, ``warn`` or ``error``.
        level: String,
        /// The text.
        message: String,
    }
    repr = [seq, level, message];
    methods {
        fn __str__(&self) -> String {
            format!("{} {:<5} {}", self.at.format("%H:%M:%S%.3f"), self.level, self.message)
        }
    }
}

impl JobLogLine {
    /// Converts a core log line of `job_id`.
    pub fn new(job_id: &str, l: &hcp_core::JobLogLine) -> Self {
        let level = match l.level {
            hcp_core::LogLevel::Info => "info",
            hcp_core::LogLevel::Warn => "warn",
            hcp_core::LogLevel::Error => "error",
        };
        JobLogLine {
            job_id: job_id.to_string(),
            seq: l.seq,
            at: l.at,
            level: level.to_string(),
            message: l.message.clone(),
        }
    }
}

record! {
    /// The answer to an accepted change: the VM and the job that acts on it.
    Submitted {
        /// The VM the job acts on.
        vm_id: String,
        /// The job.
        job_id: String,
        /// ``True`` when an idempotency key replayed an earlier submission. The embedded engine
        /// always knows; a service answers a replay with the first answer and no marker, so
        /// ``Client`` reports ``False`` (the ids are the first submission's either way).
        replayed: bool,
        /// The finished job, when the call waited for it (``wait=True``).
        job: Option<Job>,
        /// HCP's id of the snapshot a snapshot call acts on (``snap-…``); ``None`` otherwise.
        snapshot_id: Option<String>,
        /// A revert's answer: ``True`` when the snapshot holds memory state (the VM comes back
        /// running where it was), ``False`` when it holds disks only (the VM ends stopped).
        memory_state_kept: Option<bool>,
    }
    repr = [vm_id, job_id, replayed, job];
}

impl Submitted {
    /// Converts the engine's answer, with the finished job when the call waited.
    pub fn new(s: &hcp_core::Submitted, job: Option<Job>) -> Self {
        Submitted {
            vm_id: s.vm_id.to_string(),
            job_id: s.job_id.to_string(),
            replayed: s.replayed,
            job,
            snapshot_id: None,
            memory_state_kept: None,
        }
    }

    /// Converts the answer to a snapshot request.
    pub fn of_snapshot(s: &hcp_core::SnapshotSubmitted, job: Option<Job>) -> Self {
        Submitted {
            snapshot_id: Some(s.snapshot_id.clone()),
            memory_state_kept: s.memory_state_kept,
            ..Submitted::new(&s.submitted, job)
        }
    }
}

record! {
    /// What applying one field of a resize takes (an item of ``plan_resize``).
    FieldPlan {
        /// The field: ``vcpus``, ``memory_mib`` or ``disk_gib``.
        field: String,
        /// Its value now.
        from_value: u64,
        /// The value asked for.
        to_value: u64,
        /// ``hot``, ``reboot``, ``power_off``, ``recreate`` or ``data_destructive``.
        impact: String,
        /// Why.
        reason: String,
    }
    repr = [field, from_value, to_value, impact];
}

impl From<&hcp_core::FieldPlan> for FieldPlan {
    fn from(p: &hcp_core::FieldPlan) -> Self {
        FieldPlan {
            field: p.field.clone(),
            from_value: p.from,
            to_value: p.to,
            impact: p.impact.as_str().to_string(),
            reason: p.reason.clone(),
        }
    }
}

record! {
    /// One snapshot of a VM, with HCP's id (never the hypervisor's).
    Snapshot {
        /// HCP's id (``snap-…``).
        id: String,
        /// The VM.
        vm_id: String,
        /// The name it was taken with.
        name: String,
        /// When it was taken, when the hypervisor says.
        created_at: Option<DateTime<Utc>>,
        /// ``True`` when it holds the VM's memory state: a revert resumes the VM where it ran.
        memory: bool,
    }
    repr = [id, name, memory];
}

impl From<&hcp_core::Snapshot> for Snapshot {
    fn from(s: &hcp_core::Snapshot) -> Self {
        Snapshot {
            id: s.id.clone(),
            vm_id: s.vm_id.to_string(),
            name: s.name.clone(),
            created_at: s.created_at,
            memory: s.memory,
        }
    }
}

record! {
    /// A VM as the last inventory found it on a host, HCP's or not (the operator view).
    InventoryVm {
        /// The provider.
        provider: String,
        /// The host it runs on.
        host: String,
        /// The cluster target it belongs to, when it is on one.
        cluster: Option<String>,
        /// The hypervisor's id.
        native_id: String,
        /// The hypervisor's name.
        name: String,
        /// The observed power state: ``RUNNING``, ``STOPPED``, ``PAUSED`` or ``UNKNOWN``.
        power: String,
        /// HCP's id, when HCP manages it.
        vm_id: Option<String>,
        /// The owning project, when HCP manages it.
        project: Option<String>,
        /// ``True`` for a VM without HCP's mark that an operator can adopt (``adopt_vm``).
        adoptable: bool,
    }
    repr = [host, native_id, name, power, vm_id, adoptable];
}

impl From<&hcp_core::InventoryVm> for InventoryVm {
    fn from(v: &hcp_core::InventoryVm) -> Self {
        InventoryVm {
            provider: v.provider.clone(),
            host: v.host.clone(),
            cluster: v.cluster.clone(),
            native_id: v.native_id.clone(),
            name: v.name.clone(),
            power: v.power.to_string(),
            vm_id: v.vm_id.as_ref().map(ToString::to_string),
            project: v.project.as_ref().map(ToString::to_string),
            adoptable: v.adoptable,
        }
    }
}

record! {
    /// What a host, zone or provider can do: capability flags and optional limits.
    Capabilities {
        /// Passes cloud-init user-data to new VMs.
        cloud_init: bool,
        /// Takes VM snapshots.
        snapshot: bool,
        /// Moves running VMs between hosts.
        live_migration: bool,
        /// Moves stopped VMs between hosts (a cold move).
        cold_migration: bool,
        /// Offers a VNC console.
        console_vnc: bool,
        /// Offers a SPICE console.
        console_spice: bool,
        /// Offers an RDP console.
        console_rdp: bool,
        /// Offers a VMware WebMKS console.
        console_webmks: bool,
        /// Offers a browser console URL.
        console_web: bool,
        /// Passes GPUs through to VMs.
        gpu_passthrough: bool,
        /// Stores tags on VMs.
        tags: bool,
        /// Changes an existing VM's vCPUs, memory and disk size in place.
        resize: bool,
        /// Most vCPUs one VM may have, if limited.
        max_vcpus: Option<u32>,
        /// Most memory (MiB) one VM may have, if limited.
        max_memory_mib: Option<u64>,
        /// Largest disk (GiB) one VM may have, if limited.
        max_disk_gib: Option<u64>,
        /// Most networks one VM may attach to, if limited.
        max_networks: Option<u32>,
    }
    repr = capabilities_repr;
    methods {
        /// Returns the names of the capability flags that are set.
        fn enabled(&self) -> Vec<&'static str> {
            self.flags().into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect()
        }
    }
}

impl Capabilities {
    fn flags(&self) -> [(&'static str, bool); 12] {
        [
            ("cloud_init", self.cloud_init),
            ("snapshot", self.snapshot),
            ("live_migration", self.live_migration),
            ("cold_migration", self.cold_migration),
            ("console_vnc", self.console_vnc),
            ("console_spice", self.console_spice),
            ("console_rdp", self.console_rdp),
            ("console_webmks", self.console_webmks),
            ("console_web", self.console_web),
            ("gpu_passthrough", self.gpu_passthrough),
            ("tags", self.tags),
            ("resize", self.resize),
        ]
    }
}

fn capabilities_repr(c: &Capabilities, py: Python<'_>) -> PyResult<String> {
    let enabled: Vec<&str> = c
        .flags()
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n)
        .collect();
    let mut fields = vec![("enabled", enabled.into_bound_py_any(py)?)];
    if let Some(v) = c.max_vcpus {
        fields.push(("max_vcpus", v.into_bound_py_any(py)?));
    }
    if let Some(v) = c.max_memory_mib {
        fields.push(("max_memory_mib", v.into_bound_py_any(py)?));
    }
    if let Some(v) = c.max_disk_gib {
        fields.push(("max_disk_gib", v.into_bound_py_any(py)?));
    }
    if let Some(v) = c.max_networks {
        fields.push(("max_networks", v.into_bound_py_any(py)?));
    }
    repr_of(py, "Capabilities", &fields)
}

impl From<&hcp_core::Capabilities> for Capabilities {
    fn from(c: &hcp_core::Capabilities) -> Self {
        Capabilities {
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
            max_vcpus: c.max_vcpus,
            max_memory_mib: c.max_memory_mib,
            max_disk_gib: c.max_disk_gib,
            max_networks: c.max_networks,
        }
    }
}

record! {
    /// A hypervisor host with its capacity and health (the operator view).
    Host {
        /// The host name.
        name: String,
        /// The provider it belongs to.
        provider: String,
        /// Its zone.
        zone: String,
        /// Whether it answered the last inventory.
        available: bool,
        /// Why it is unavailable, if it is.
        unavailable_reason: Option<String>,
        /// Total vCPUs.
        vcpus_total: u32,
        /// vCPUs used by its VMs.
        vcpus_used: u32,
        /// Total memory in MiB.
        memory_mib_total: u64,
        /// Memory used by its VMs, in MiB.
        memory_mib_used: u64,
        /// VMs on it.
        vm_count: usize,
        /// Its effective capabilities (provider, zone and host combined).
        capabilities: Capabilities,
        /// When it was last inventoried (UTC).
        observed_at: Option<DateTime<Utc>>,
    }
    repr = [name, provider, zone, available, vm_count];
}

impl From<&hcp_core::Host> for Host {
    fn from(h: &hcp_core::Host) -> Self {
        Host {
            name: h.name.clone(),
            provider: h.provider.clone(),
            zone: h.zone.clone(),
            available: h.available,
            unavailable_reason: h.unavailable_reason.clone(),
            vcpus_total: h.vcpus_total,
            vcpus_used: h.vcpus_used,
            memory_mib_total: h.memory_mib_total,
            memory_mib_used: h.memory_mib_used,
            vm_count: h.vm_count,
            capabilities: (&h.capabilities).into(),
            observed_at: h.observed_at,
        }
    }
}

record! {
    /// A bootable image in the catalog.
    Image {
        /// The name VMs are created with.
        name: String,
        /// The operating system family (``linux``, ``windows``).
        os: String,
        /// A short description.
        description: String,
        /// The smallest disk it boots from, in GiB.
        min_disk_gib: u64,
    }
    repr = [name, os, min_disk_gib];
}

record! {
    /// A named VM size in the catalog.
    Flavor {
        /// The name VMs are created with.
        name: String,
        /// vCPUs.
        vcpus: u32,
        /// Memory in MiB.
        memory_mib: u64,
        /// Disk in GiB.
        disk_gib: u64,
    }
    repr = [name, vcpus, memory_mib, disk_gib];
}

record! {
    /// A network VMs attach to.
    Network {
        /// The network name.
        name: String,
        /// The VLAN id, if tagged.
        vlan: Option<u16>,
        /// The zones where it exists (every zone when empty).
        zones: Vec<String>,
        /// A short description.
        description: String,
    }
    repr = [name, vlan, zones];
}

record! {
    /// A placement zone.
    Zone {
        /// The zone name.
        name: String,
        /// A short description.
        description: String,
    }
    repr = [name, description];
}

record! {
    /// What VMs are created from: images, flavors, networks and zones.
    Catalog {
        /// Images.
        images: Vec<Image>,
        /// Flavors.
        flavors: Vec<Flavor>,
        /// Networks.
        networks: Vec<Network>,
        /// Zones.
        zones: Vec<Zone>,
    }
    repr = catalog_repr;
}

fn catalog_repr(c: &Catalog, py: Python<'_>) -> PyResult<String> {
    let names = |v: Vec<&String>| v.into_bound_py_any(py);
    repr_of(
        py,
        "Catalog",
        &[
            ("images", names(c.images.iter().map(|i| &i.name).collect())?),
            (
                "flavors",
                names(c.flavors.iter().map(|f| &f.name).collect())?,
            ),
            (
                "networks",
                names(c.networks.iter().map(|n| &n.name).collect())?,
            ),
            ("zones", names(c.zones.iter().map(|z| &z.name).collect())?),
        ],
    )
}

impl From<&hcp_core::Catalog> for Catalog {
    fn from(c: &hcp_core::Catalog) -> Self {
        Catalog {
            images: c
                .images
                .iter()
                .map(|i| Image {
                    name: i.name.clone(),
                    os: i.os.clone(),
                    description: i.description.clone(),
                    min_disk_gib: i.min_disk_gib,
                })
                .collect(),
            flavors: c
                .flavors
                .iter()
                .map(|f| Flavor {
                    name: f.name.clone(),
                    vcpus: f.vcpus,
                    memory_mib: f.memory_mib,
                    disk_gib: f.disk_gib,
                })
                .collect(),
            networks: c
                .networks
                .iter()
                .map(|n| Network {
                    name: n.name.clone(),
                    vlan: n.vlan,
                    zones: n.zones.clone(),
                    description: n.description.clone(),
                })
                .collect(),
            zones: c
                .zones
                .iter()
                .map(|z| Zone {
                    name: z.name.clone(),
                    description: z.description.clone(),
                })
                .collect(),
        }
    }
}

record! {
    /// A console connection to a running VM, valid until ``expires_at``.
    ///
    /// Its ``repr`` leaves the URL out: the URL carries a one-time token.
    Console {
        /// The protocol: ``vnc``, ``spice``, ``web``, ``rdp`` or ``webmks``.
        kind: String,
        /// Where a console client connects (contains a one-time token).
        url: String,
        /// When the URL stops working (UTC).
        expires_at: DateTime<Utc>,
    }
    repr = [kind, expires_at];
}

impl From<&hcp_core::Console> for Console {
    fn from(c: &hcp_core::Console) -> Self {
        Console {
            kind: c.kind.as_str().to_string(),
            url: c.url.clone(),
            expires_at: c.expires_at,
        }
    }
}

/// Adds every record class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ErrorInfo>()?;
    m.add_class::<Vm>()?;
    m.add_class::<Job>()?;
    m.add_class::<JobLogLine>()?;
    m.add_class::<Submitted>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<ServerGroup>()?;
    m.add_class::<FieldPlan>()?;
    m.add_class::<Capabilities>()?;
    m.add_class::<Host>()?;
    m.add_class::<InventoryVm>()?;
    m.add_class::<Image>()?;
    m.add_class::<Flavor>()?;
    m.add_class::<Network>()?;
    m.add_class::<Zone>()?;
    m.add_class::<Catalog>()?;
    m.add_class::<Console>()?;
    Ok(())
}
