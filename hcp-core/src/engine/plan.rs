//! The safe-change planner: what applying a new size to a VM takes, per field, on its provider
//! and in its power state — before anyone presses the button.

use serde::{Deserialize, Serialize};

use crate::{PowerState, Resources};

/// What applying one field of a change takes, from least to most disruptive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeImpact {
    /// Applied without any power change: live on a running VM, or at once on a stopped one.
    Hot,
    /// Written to the VM's definition; the running guest sees it after a restart.
    Reboot,
    /// The hypervisor changes it only while the VM is off.
    PowerOff,
    /// Needs a new VM.
    Recreate,
    /// Loses data (shrinking a disk).
    DataDestructive,
}

impl ChangeImpact {
    /// Returns the stable name (`"power_off"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeImpact::Hot => "hot",
            ChangeImpact::Reboot => "reboot",
            ChangeImpact::PowerOff => "power_off",
            ChangeImpact::Recreate => "recreate",
            ChangeImpact::DataDestructive => "data_destructive",
        }
    }
}

/// The plan for one field of a resize.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldPlan {
    /// The field (`vcpus`, `memory_mib`, `disk_gib`).
    pub field: String,
    /// Its value now.
    pub from: u64,
    /// The value asked for.
    pub to: u64,
    /// What applying it takes.
    pub impact: ChangeImpact,
    /// Why, in one sentence.
    pub reason: String,
}

/// Plans a resize from `current` to `target` for a VM of a provider of `kind` (`sim`,
/// `libvirt`, `hyperv`, `proxmox`, `vsphere`) in power state `power`.
///
/// # Behavior
/// One [`FieldPlan`] per field that changes, in the order vcpus, memory, disk; unchanged fields
/// are left out. A disk never shrinks in place (`data_destructive`). A stopped VM takes any
/// other change at once (`hot`). A running VM's vCPUs and memory follow what its hypervisor can
/// do with HCP's VMs: the simulator applies them live; libvirt and Proxmox write them to the
/// definition for the next restart (`reboot`); Hyper-V (a fixed processor count, and memory
/// whose runtime resize depends on the guest) and vSphere (HCP's VMs have no CPU or memory
/// hot-add) need the VM off (`power_off`), and so does any provider kind the planner does not
/// know. Disks grow live everywhere but on unknown kinds (on Hyper-V: generation 2 VMs, whose
/// disk is on the SCSI chain; the provider refuses a running generation 1 VM's IDE disk).
pub fn plan_resize(
    kind: &str,
    power: PowerState,
    current: Resources,
    target: Resources,
) -> Vec<FieldPlan> {
    let running = !matches!(power, PowerState::Stopped);
    let mut out = Vec::new();
    let mut push = |field: &str, from: u64, to: u64, impact: ChangeImpact, reason: String| {
        out.push(FieldPlan {
            field: field.to_string(),
            from,
            to,
            impact,
            reason,
        });
    };
    for (field, from, to, what) in [
        (
            "vcpus",
            u64::from(current.vcpus),
            u64::from(target.vcpus),
            "vCPU count",
        ),
        (
            "memory_mib",
            current.memory_mib,
            target.memory_mib,
            "memory",
        ),
    ] {
        if from == to {
            continue;
        }
        let (impact, reason) = if !running {
            (
                ChangeImpact::Hot,
                format!("the VM is stopped: the new {what} takes effect when it starts"),
            )
        } else {
            match kind {
                "sim" => (
                    ChangeImpact::Hot,
                    format!("the simulator changes a running VM's {what} live"),
                ),
                "libvirt" => (
                    ChangeImpact::Reboot,
                    format!(
                        "libvirt writes the new {what} to the domain's definition; the running guest keeps its {what} until it restarts"
                    ),
                ),
                "proxmox" => (
                    ChangeImpact::Reboot,
                    format!(
                        "Proxmox keeps the new {what} as a pending change applied at the VM's next restart"
                    ),
                ),
                "hyperv" if field == "vcpus" => (
                    ChangeImpact::PowerOff,
                    "Hyper-V changes a VM's processor count only while it is off".to_string(),
                ),
                "hyperv" => (
                    ChangeImpact::PowerOff,
                    format!(
                        "HCP changes a Hyper-V VM's {what} only while it is off: runtime memory resize depends on the guest, and a VM with dynamic memory never takes a new startup memory while it runs"
                    ),
                ),
                "vsphere" => (
                    ChangeImpact::PowerOff,
                    format!(
                        "HCP's vSphere VMs have no hot-add, so their {what} changes only while they are off"
                    ),
                ),
                other => (
                    ChangeImpact::PowerOff,
                    format!(
                        "HCP does not know how provider kind `{}` changes a running VM's {what}",
                        crate::error::echo(other)
                    ),
                ),
            }
        };
        push(field, from, to, impact, reason);
    }
    let (from, to) = (current.disk_gib, target.disk_gib);
    if to < from {
        push(
            "disk_gib",
            from,
            to,
            ChangeImpact::DataDestructive,
            format!(
                "shrinking the disk from {from} to {to} GiB discards what lies past the new end; HCP never shrinks a disk in place"
            ),
        );
    } else if to > from {
        let (impact, reason) = match (running, kind) {
            (false, _) => (
                ChangeImpact::Hot,
                "the VM is stopped: the disk grows at once".to_string(),
            ),
            (true, "hyperv") => (
                ChangeImpact::Hot,
                "the disk grows live (Resize-VHD on the SCSI chain of generation 2 VMs; a generation 1 VM's IDE disk is refused while it runs); the guest extends its partition and filesystem itself"
                    .to_string(),
            ),
            (true, "sim" | "libvirt" | "proxmox" | "vsphere") => (
                ChangeImpact::Hot,
                "the disk grows live; the guest extends its partition and filesystem itself"
                    .to_string(),
            ),
            (true, other) => (
                ChangeImpact::PowerOff,
                format!(
                    "HCP does not know how provider kind `{}` grows a running VM's disk",
                    crate::error::echo(other)
                ),
            ),
        };
        push("disk_gib", from, to, impact, reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChangeImpact::{DataDestructive, Hot, PowerOff, Reboot};

    fn size(vcpus: u32, memory_mib: u64, disk_gib: u64) -> Resources {
        Resources {
            vcpus,
            memory_mib,
            disk_gib,
        }
    }

    /// Provider kind, power state, target size, and the expected impact per changed field.
    type Case = (
        &'static str,
        PowerState,
        Resources,
        &'static [(&'static str, ChangeImpact)],
    );

    #[test]
    fn classifies_each_field_per_provider_and_power_state() {
        use PowerState::{Paused, Running, Stopped};
        let now = size(2, 2048, 20);
        // (kind, power, target, expected impacts per changed field in order)
        let table: &[Case] = &[
            (
                "sim",
                Running,
                size(4, 4096, 40),
                &[("vcpus", Hot), ("memory_mib", Hot), ("disk_gib", Hot)],
            ),
            (
                "sim",
                Running,
                size(2, 2048, 10),
                &[("disk_gib", DataDestructive)],
            ),
            ("libvirt", Running, size(4, 2048, 20), &[("vcpus", Reboot)]),
            (
                "libvirt",
                Running,
                size(2, 1024, 30),
                &[("memory_mib", Reboot), ("disk_gib", Hot)],
            ),
            (
                "libvirt",
                Stopped,
                size(4, 4096, 40),
                &[("vcpus", Hot), ("memory_mib", Hot), ("disk_gib", Hot)],
            ),
            (
                "libvirt",
                Stopped,
                size(2, 2048, 10),
                &[("disk_gib", DataDestructive)],
            ),
            (
                "hyperv",
                Running,
                size(4, 4096, 20),
                &[("vcpus", PowerOff), ("memory_mib", PowerOff)],
            ),
            (
                "hyperv",
                Stopped,
                size(4, 4096, 20),
                &[("vcpus", Hot), ("memory_mib", Hot)],
            ),
            ("hyperv", Running, size(2, 2048, 30), &[("disk_gib", Hot)]),
            (
                "hyperv",
                Running,
                size(1, 1024, 40),
                &[
                    ("vcpus", PowerOff),
                    ("memory_mib", PowerOff),
                    ("disk_gib", Hot),
                ],
            ),
            (
                "hyperv",
                Paused,
                size(2, 4096, 20),
                &[("memory_mib", PowerOff)],
            ),
            (
                "hyperv",
                Stopped,
                size(4, 4096, 40),
                &[("vcpus", Hot), ("memory_mib", Hot), ("disk_gib", Hot)],
            ),
            (
                "hyperv",
                Running,
                size(2, 2048, 10),
                &[("disk_gib", DataDestructive)],
            ),
            (
                "hyperv",
                Stopped,
                size(2, 2048, 19),
                &[("disk_gib", DataDestructive)],
            ),
            (
                "vsphere",
                Running,
                size(1, 2048, 25),
                &[("vcpus", PowerOff), ("disk_gib", Hot)],
            ),
            (
                "vsphere",
                Running,
                size(2, 4096, 20),
                &[("memory_mib", PowerOff)],
            ),
            (
                "vsphere",
                Stopped,
                size(4, 4096, 40),
                &[("vcpus", Hot), ("memory_mib", Hot), ("disk_gib", Hot)],
            ),
            (
                "vsphere",
                Running,
                size(2, 2048, 10),
                &[("disk_gib", DataDestructive)],
            ),
            (
                "proxmox",
                Running,
                size(2, 8192, 20),
                &[("memory_mib", Reboot)],
            ),
            (
                "proxmox",
                Running,
                size(2, 2048, 19),
                &[("disk_gib", DataDestructive)],
            ),
            (
                "proxmox",
                Running,
                size(4, 2048, 30),
                &[("vcpus", Reboot), ("disk_gib", Hot)],
            ),
            (
                "proxmox",
                Stopped,
                size(4, 8192, 30),
                &[("vcpus", Hot), ("memory_mib", Hot), ("disk_gib", Hot)],
            ),
            (
                "proxmox",
                Stopped,
                size(2, 2048, 10),
                &[("disk_gib", DataDestructive)],
            ),
            (
                "future",
                Running,
                size(3, 2048, 21),
                &[("vcpus", PowerOff), ("disk_gib", PowerOff)],
            ),
            ("sim", Running, size(2, 2048, 20), &[]),
        ];
        for (kind, power, target, want) in table {
            let plan = plan_resize(kind, *power, now, *target);
            let got: Vec<(&str, ChangeImpact)> =
                plan.iter().map(|p| (p.field.as_str(), p.impact)).collect();
            assert_eq!(&got, want, "{kind} {power:?} -> {target:?}: {plan:#?}");
            for p in &plan {
                assert!(!p.reason.is_empty());
                assert_ne!(p.from, p.to);
            }
        }
        // Paused counts as running: nothing applies to a paused VM's hardware at once.
        let plan = plan_resize("libvirt", PowerState::Paused, now, size(4, 2048, 20));
        assert_eq!(plan[0].impact, Reboot);
        assert!(Hot < Reboot && Reboot < PowerOff && PowerOff < DataDestructive);
        assert_eq!(PowerOff.as_str(), "power_off");
    }
}
