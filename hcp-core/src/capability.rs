//! Capabilities: what a provider, zone or host can do, and the negotiation that refuses the rest.

use serde::{Deserialize, Serialize};

use crate::{Error, Operation, Result};

/// A flat set of capability flags and limits.
///
/// Providers declare theirs once (`Capabilities { snapshot: true, ..Default::default() }`);
/// zones and hosts narrow them with [`Capabilities::narrow`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    /// Passes cloud-init user-data to new VMs.
    pub cloud_init: bool,
    /// Takes VM snapshots or checkpoints.
    pub snapshot: bool,
    /// Moves running VMs between hosts.
    pub live_migration: bool,
    /// Moves stopped VMs between hosts (a cold move: HCP stops a running VM first and starts
    /// it again on the target).
    pub cold_migration: bool,
    /// Offers a VNC console.
    pub console_vnc: bool,
    /// Offers a SPICE console.
    pub console_spice: bool,
    /// Offers an RDP (VMConnect) console.
    pub console_rdp: bool,
    /// Offers a VMware WebMKS console.
    pub console_webmks: bool,
    /// Offers a browser console URL.
    pub console_web: bool,
    /// Passes GPUs through to VMs.
    pub gpu_passthrough: bool,
    /// Stores tags on VMs.
    pub tags: bool,
    /// Changes an existing VM's vCPUs, memory and disk size in place (see
    /// [`crate::Provider::resize_vm`]).
    pub resize: bool,
    /// Writes and removes HCP's mark on a VM created outside HCP (see
    /// [`crate::Provider::set_mark`]), so operators can adopt and release it.
    pub adopt: bool,
    /// Most vCPUs one VM may have, if limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
    /// Most memory (MiB) one VM may have, if limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_mib: Option<u64>,
    /// Largest disk (GiB) one VM may have, if limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_disk_gib: Option<u64>,
    /// Most networks one VM may attach to, if limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_networks: Option<u32>,
}

/// One named capability flag, used to say which one is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// See [`Capabilities::cloud_init`].
    CloudInit,
    /// See [`Capabilities::snapshot`].
    Snapshot,
    /// See [`Capabilities::live_migration`].
    LiveMigration,
    /// See [`Capabilities::cold_migration`].
    ColdMigration,
    /// Any console type.
    Console,
    /// See [`Capabilities::gpu_passthrough`].
    GpuPassthrough,
    /// See [`Capabilities::tags`].
    Tags,
    /// See [`Capabilities::resize`].
    Resize,
    /// See [`Capabilities::adopt`].
    Adopt,
}

impl Capability {
    /// Returns the stable name (`"cloud_init"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::CloudInit => "cloud_init",
            Capability::Snapshot => "snapshot",
            Capability::LiveMigration => "live_migration",
            Capability::ColdMigration => "cold_migration",
            Capability::Console => "console",
            Capability::GpuPassthrough => "gpu_passthrough",
            Capability::Tags => "tags",
            Capability::Resize => "resize",
            Capability::Adopt => "adopt",
        }
    }
}

impl Capabilities {
    /// Returns every flag set and no limits.
    pub fn all() -> Self {
        Capabilities {
            cloud_init: true,
            snapshot: true,
            live_migration: true,
            cold_migration: true,
            console_vnc: true,
            console_spice: true,
            console_rdp: true,
            console_webmks: true,
            console_web: true,
            gpu_passthrough: true,
            tags: true,
            resize: true,
            adopt: true,
            max_vcpus: None,
            max_memory_mib: None,
            max_disk_gib: None,
            max_networks: None,
        }
    }

    /// Returns what both sides allow: flags ANDed, limits at their minimum.
    pub fn narrow(self, other: Capabilities) -> Capabilities {
        Capabilities {
            cloud_init: self.cloud_init && other.cloud_init,
            snapshot: self.snapshot && other.snapshot,
            live_migration: self.live_migration && other.live_migration,
            cold_migration: self.cold_migration && other.cold_migration,
            console_vnc: self.console_vnc && other.console_vnc,
            console_spice: self.console_spice && other.console_spice,
            console_rdp: self.console_rdp && other.console_rdp,
            console_webmks: self.console_webmks && other.console_webmks,
            console_web: self.console_web && other.console_web,
            gpu_passthrough: self.gpu_passthrough && other.gpu_passthrough,
            tags: self.tags && other.tags,
            resize: self.resize && other.resize,
            adopt: self.adopt && other.adopt,
            max_vcpus: min_opt(self.max_vcpus, other.max_vcpus),
            max_memory_mib: min_opt(self.max_memory_mib, other.max_memory_mib),
            max_disk_gib: min_opt(self.max_disk_gib, other.max_disk_gib),
            max_networks: min_opt(self.max_networks, other.max_networks),
        }
    }

    /// Returns what either side allows: flags ORed, limits at their maximum (`None` wins).
    pub fn union(self, other: Capabilities) -> Capabilities {
        Capabilities {
            cloud_init: self.cloud_init || other.cloud_init,
            snapshot: self.snapshot || other.snapshot,
            live_migration: self.live_migration || other.live_migration,
            cold_migration: self.cold_migration || other.cold_migration,
            console_vnc: self.console_vnc || other.console_vnc,
            console_spice: self.console_spice || other.console_spice,
            console_rdp: self.console_rdp || other.console_rdp,
            console_webmks: self.console_webmks || other.console_webmks,
            console_web: self.console_web || other.console_web,
            gpu_passthrough: self.gpu_passthrough || other.gpu_passthrough,
            tags: self.tags || other.tags,
            resize: self.resize || other.resize,
            adopt: self.adopt || other.adopt,
            max_vcpus: max_opt(self.max_vcpus, other.max_vcpus),
            max_memory_mib: max_opt(self.max_memory_mib, other.max_memory_mib),
            max_disk_gib: max_opt(self.max_disk_gib, other.max_disk_gib),
            max_networks: max_opt(self.max_networks, other.max_networks),
        }
    }

    /// Returns true when the flag is set.
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::CloudInit => self.cloud_init,
            Capability::Snapshot => self.snapshot,
            Capability::LiveMigration => self.live_migration,
            Capability::ColdMigration => self.cold_migration,
            Capability::Console => {
                self.console_vnc
                    || self.console_spice
                    || self.console_rdp
                    || self.console_webmks
                    || self.console_web
            }
            Capability::GpuPassthrough => self.gpu_passthrough,
            Capability::Tags => self.tags,
            Capability::Resize => self.resize,
            Capability::Adopt => self.adopt,
        }
    }

    /// Returns the first of `required` that is missing, if any.
    pub fn missing(&self, required: &[Capability]) -> Option<Capability> {
        required.iter().copied().find(|c| !self.has(*c))
    }

    /// Checks a request against these capabilities.
    ///
    /// # Errors
    /// [`crate::ErrorKind::FeatureNotSupported`] naming `provider`, `operation` and the missing
    /// capability; [`crate::ErrorKind::InvalidSpec`] naming the request field (`vcpus`,
    /// `memory_mib`, `disk_gib`, `networks`) and the limit it exceeds (`max_vcpus`, ...).
    pub fn check(&self, provider: &str, operation: Operation, need: &Requirements) -> Result<()> {
        if let Some(missing) = self.missing(&need.flags) {
            return Err(Error::unsupported(
                provider,
                operation,
                missing.as_str(),
                missing_hint(missing),
            ));
        }
        if let Some(limit) = self.exceeded(need).first() {
            return Err(Error::invalid(
                limit.field,
                format!(
                    "is {}; the hypervisor allows at most {} ({} = {})",
                    limit.wanted, limit.max, limit.name, limit.max
                ),
            )
            .with_detail(format!("provider `{provider}`"))
            .with_operation(operation)
            .with_context("provider", provider)
            .with_context("limit", limit.name));
        }
        Ok(())
    }

    /// Returns the size limits `need` exceeds, in the order `vcpus`, `memory_mib`, `disk_gib`,
    /// `networks`.
    pub fn exceeded(&self, need: &Requirements) -> Vec<ExceededLimit> {
        let mut out = Vec::new();
        let mut check = |field, name, max: Option<u64>, wanted: Option<u64>| {
            if let (Some(max), Some(wanted)) = (max, wanted)
                && wanted > max
            {
                out.push(ExceededLimit {
                    field,
                    name,
                    max,
                    wanted,
                });
            }
        };
        check(
            "vcpus",
            "max_vcpus",
            self.max_vcpus.map(u64::from),
            need.vcpus.map(u64::from),
        );
        check(
            "memory_mib",
            "max_memory_mib",
            self.max_memory_mib,
            need.memory_mib,
        );
        check("disk_gib", "max_disk_gib", self.max_disk_gib, need.disk_gib);
        check(
            "networks",
            "max_networks",
            self.max_networks.map(u64::from),
            need.networks.map(u64::from),
        );
        out
    }
}

/// A size limit a request exceeds (see [`Capabilities::exceeded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceededLimit {
    /// The request field (`vcpus`, `memory_mib`, `disk_gib`, `networks`).
    pub field: &'static str,
    /// The limit's name (`max_vcpus`, `max_memory_mib`, `max_disk_gib`, `max_networks`).
    pub name: &'static str,
    /// The limit.
    pub max: u64,
    /// What the request asks for.
    pub wanted: u64,
}

fn missing_hint(c: Capability) -> &'static str {
    match c {
        Capability::CloudInit => "remove user_data or choose a zone whose hosts support cloud_init",
        Capability::Tags => "remove tags or choose a zone whose provider stores tags",
        Capability::Snapshot => "this VM's host cannot take snapshots",
        Capability::LiveMigration => "this VM's host cannot migrate running VMs",
        Capability::ColdMigration => "this VM's host cannot move stopped VMs to another host",
        Capability::Console => "this VM's host offers no console",
        Capability::GpuPassthrough => "choose a zone with GPU hosts",
        Capability::Resize => {
            "this VM's hypervisor cannot change a VM's size in place; create a new VM of the size wanted"
        }
        Capability::Adopt => "this host's provider cannot write HCP's mark on an existing VM",
    }
}

/// What one request needs from a host: flags and sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// The capability flags the request needs.
    pub flags: Vec<Capability>,
    /// The vCPUs the request needs, checked against `max_vcpus`.
    pub vcpus: Option<u32>,
    /// The memory the request needs, checked against `max_memory_mib`.
    pub memory_mib: Option<u64>,
    /// The disk the request needs, checked against `max_disk_gib`.
    pub disk_gib: Option<u64>,
    /// The number of networks the request attaches, checked against `max_networks`.
    pub networks: Option<u32>,
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn max_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn narrow_ands_flags_and_takes_min_limits() {
        let p = Capabilities {
            cloud_init: true,
            snapshot: true,
            max_vcpus: Some(64),
            ..Default::default()
        };
        let h = Capabilities {
            cloud_init: true,
            max_vcpus: Some(16),
            ..Default::default()
        };
        let n = p.narrow(h);
        assert!(n.cloud_init);
        assert!(!n.snapshot);
        assert_eq!(n.max_vcpus, Some(16));
        assert_eq!(p.narrow(Capabilities::all()), p);
    }

    #[test]
    fn union_ors_flags_and_none_limit_wins() {
        let a = Capabilities {
            cloud_init: true,
            max_vcpus: Some(4),
            ..Default::default()
        };
        let b = Capabilities {
            snapshot: true,
            max_vcpus: None,
            ..Default::default()
        };
        let u = a.union(b);
        assert!(u.cloud_init && u.snapshot);
        assert_eq!(u.max_vcpus, None);
    }

    #[test]
    fn check_names_provider_operation_and_capability() {
        let caps = Capabilities::default();
        let need = Requirements {
            flags: vec![Capability::CloudInit],
            ..Default::default()
        };
        let err = caps.check("sim", Operation::CreateVm, &need).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FeatureNotSupported);
        assert_eq!(err.code(), "FEATURE_NOT_SUPPORTED");
        let text = err.to_string();
        assert!(text.contains("sim") && text.contains("cloud_init") && text.contains("create_vm"));
    }

    #[test]
    fn check_enforces_limits() {
        let caps = Capabilities {
            max_vcpus: Some(2),
            ..Capabilities::all()
        };
        let need = Requirements {
            vcpus: Some(4),
            ..Default::default()
        };
        let err = caps.check("sim", Operation::CreateVm, &need).unwrap_err();
        assert_eq!(err.field(), Some("vcpus"));
        assert_eq!(err.kind(), ErrorKind::InvalidSpec);
        assert!(err.message().contains("max_vcpus = 2"), "{err}");
        need_ok(&caps);
        let caps = Capabilities {
            max_disk_gib: Some(100),
            max_networks: Some(1),
            ..Capabilities::all()
        };
        let need = Requirements {
            disk_gib: Some(101),
            networks: Some(2),
            ..Default::default()
        };
        let exceeded = caps.exceeded(&need);
        assert_eq!(
            exceeded.iter().map(|l| l.field).collect::<Vec<_>>(),
            ["disk_gib", "networks"]
        );
        let err = caps.check("sim", Operation::CreateVm, &need).unwrap_err();
        assert_eq!(err.field(), Some("disk_gib"));
        assert!(err.message().contains("max_disk_gib = 100"), "{err}");
        let fits = Requirements {
            disk_gib: Some(100),
            networks: Some(1),
            ..Default::default()
        };
        caps.check("sim", Operation::CreateVm, &fits).unwrap();
        // Narrowing keeps the smaller limit, a union the larger one.
        let small = Capabilities {
            max_disk_gib: Some(10),
            ..Capabilities::all()
        };
        assert_eq!(caps.narrow(small).max_disk_gib, Some(10));
        assert_eq!(caps.union(small).max_disk_gib, Some(100));
    }

    fn need_ok(caps: &Capabilities) {
        let need = Requirements {
            vcpus: Some(2),
            flags: vec![Capability::Console],
            ..Default::default()
        };
        caps.check("sim", Operation::Console, &need).unwrap();
    }
}
